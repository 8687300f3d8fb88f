//! The sv-trigger event (docs/outputs.md#sv-trigger-events) of one single view a projection write affects: key = the
//! single-view identifier, value = `{type: "aggregation", singleViewName,
//! singleViewIdentifier, change {projectionName, projectionIdentifier, data},
//! __internal__kafkaInfo}`, header [`MESSAGE_SCHEMA_HEADER`](super::MESSAGE_SCHEMA_HEADER) =
//! [`SV_TRIGGER_SCHEMA`].

use mongodb::bson::Document;

use super::{AppliedWrite, OutputError, json, write_kafka_info, write_primary_key};

/// The `messageSchema` header of a v1.0.0 sv-trigger (UTF-8 JSON).
pub const SV_TRIGGER_SCHEMA: &str = r#"{"type":"sv-trigger","version":"v1.0.0"}"#;

/// A Kafka record to produce: key and value bytes (UTF-8 JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// The sv-trigger of `single_view` / `identifier` for `change`: `change.data` is the stored
/// document without `_id` (after the write, before it for a delete), `projectionIdentifier`
/// its primary key, `__internal__kafkaInfo.offset` an integer.
pub fn sv_trigger(
    single_view: &str,
    identifier: &Document,
    change: &AppliedWrite,
) -> Result<TriggerRecord, OutputError> {
    let fields = change.primary_key()?;
    let data = change.document()?;
    let key = change.json(64, |out| json::write_document(identifier, false, out))?;
    let value = change.json(1024, |out| {
        let mut value = json::Object::open(out);
        json::write_str("aggregation", value.key("type")?)?;
        json::write_str(single_view, value.key("singleViewName")?)?;
        value.key("singleViewIdentifier")?.extend_from_slice(&key);
        let mut about = json::Object::open(value.key("change")?);
        json::write_str(change.projection, about.key("projectionName")?)?;
        write_primary_key(&fields, about.key("projectionIdentifier")?)?;
        json::write_document(data, true, about.key("data")?)?;
        about.close();
        write_kafka_info(change.kafka, value.key("__internal__kafkaInfo")?)?;
        value.close();
        Ok(())
    })?;
    Ok(TriggerRecord { key, value })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{Bson, DateTime, doc};
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::outputs::ChangeOp;
    use crate::engine::outputs::fixtures::{W, source};

    /// The docs/outputs.md#sv-trigger-events example, verbatim.
    const EXAMPLE: &str = r#"
{ "type": "aggregation", "singleViewName": "sv_customers", "singleViewIdentifier": { "customerId": "C-7" },
  "change": { "projectionName": "pr_order_items", "projectionIdentifier": { "order_id": "O-1", "line_no": 2 },
              "data": { "order_id": "O-1", "line_no": 2, "qty": 3, "__STATE__": "PUBLIC" } },
  "__internal__kafkaInfo": { "topic": "acme.dev.crm.pr_order_items.ingestion", "partition": 1, "offset": 55,
                             "key": { "order_id": "O-1", "line_no": 2 }, "timestamp": "2023-11-14T22:13:20.000Z" } }
"#;

    fn item_source() -> crate::engine::projection::Source {
        let key = Bson::Document(doc! { "order_id": "O-1", "line_no": 2_i64 });
        source("acme.dev.crm.pr_order_items.ingestion", 1, 55, key)
    }

    #[test]
    fn the_spec_example() {
        let kafka = item_source();
        // The example's stored document, shortened as docs/outputs.md shows it.
        let stored = doc! {
            "_id": ObjectId::new(), "order_id": "O-1", "line_no": 2_i64, "qty": 3_i64,
            "__STATE__": "PUBLIC",
        };
        let pk = vec!["order_id".to_string(), "line_no".to_string()];
        let change = AppliedWrite {
            projection: "pr_order_items",
            source: "crm",
            primary_keys: &pk,
            op: ChangeOp::Update,
            written_at: DateTime::from_millis(W),
            before: None,
            after: Some(&stored),
            kafka: &kafka,
        };
        let record = sv_trigger("sv_customers", &doc! { "customerId": "C-7" }, &change).unwrap();
        assert_eq!(String::from_utf8(record.key).unwrap(), r#"{"customerId":"C-7"}"#);
        let expected: Value = serde_json::from_str(EXAMPLE).unwrap();
        let value = String::from_utf8(record.value).unwrap();
        assert_eq!(value, serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn a_delete_carries_the_document_before_it() {
        let kafka = item_source();
        let before = doc! { "_id": ObjectId::new(), "order_id": "O-1", "line_no": 2_i64, "__STATE__": "PUBLIC" };
        let after = doc! { "_id": before.get("_id").cloned(), "order_id": "O-1", "line_no": 2_i64, "__STATE__": "DELETED" };
        let pk = vec!["order_id".to_string(), "line_no".to_string()];
        let change = AppliedWrite {
            projection: "pr_order_items",
            source: "crm",
            primary_keys: &pk,
            op: ChangeOp::Delete,
            written_at: DateTime::from_millis(W),
            before: Some(&before),
            after: Some(&after),
            kafka: &kafka,
        };
        let record = sv_trigger("sv_orders", &doc! { "orderId": "O-1" }, &change).unwrap();
        let value: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(
            value["change"]["data"],
            json!({"order_id": "O-1", "line_no": 2, "__STATE__": "PUBLIC"})
        );
        assert_eq!(value["singleViewName"], "sv_orders");
        assert_eq!(String::from_utf8(record.key).unwrap(), r#"{"orderId":"O-1"}"#);
    }

    #[test]
    fn the_schema_header_is_the_documented_json() {
        let header: Value = serde_json::from_str(SV_TRIGGER_SCHEMA).unwrap();
        assert_eq!(header, json!({"type": "sv-trigger", "version": "v1.0.0"}));
    }
}
