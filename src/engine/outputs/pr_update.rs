//! The pr-update event of a projection write (docs/outputs.md#pr-update-events): key = the primary key as a JSON
//! object in key order (both formats); value = the operation with the stored documents before
//! and after the write. Format v1.0.0 (the documented RTU's) carries the message's origin in
//! the value (`__internal__kafkaInfo`); format v2.0.0 (the Projection Storer's) moves it to a
//! `context` header. Header [`MESSAGE_SCHEMA_HEADER`](super::MESSAGE_SCHEMA_HEADER) =
//! [`PR_UPDATE_V1_SCHEMA`] or [`PR_UPDATE_V2_SCHEMA`].

use mongodb::bson::Bson;

use super::{AppliedWrite, ChangeOp, OutputError, json, write_kafka_info, write_primary_key};

/// The `messageSchema` header of a v1.0.0 pr-update (UTF-8 JSON).
pub const PR_UPDATE_V1_SCHEMA: &str = r#"{"type":"pr-update","version":"v1.0.0"}"#;

/// The `messageSchema` header of a v2.0.0 pr-update (UTF-8 JSON).
pub const PR_UPDATE_V2_SCHEMA: &str = r#"{"type":"pr-update","version":"v2.0.0"}"#;

/// The header of a v2.0.0 pr-update that carries the message's origin.
pub const CONTEXT_HEADER: &str = "context";

/// The key: `{"<pk field>": value, ...}` in primary-key order, from the document after the
/// write (before it for a delete).
pub fn key(change: &AppliedWrite) -> Result<Vec<u8>, OutputError> {
    let fields = change.primary_key()?;
    change.json(64, |out| write_primary_key(&fields, out))
}

/// The v1.0.0 value: `operationType`, `operationTimestamp`, `documentId`, `projectionName`,
/// `source`, `primaryKeys`, `before` (or `null`), `after` (absent for `DELETE`),
/// `__internal__kafkaInfo` (offset as an integer). Documents are shown without `_id`.
pub fn value_v1(change: &AppliedWrite) -> Result<Vec<u8>, OutputError> {
    let id = change
        .document()?
        .get("_id")
        .ok_or_else(|| OutputError::MissingId { projection: change.projection.to_string() })?;
    change.json(2048, |out| write_value_v1(change, id, out))
}

fn write_value_v1(change: &AppliedWrite, id: &Bson, out: &mut Vec<u8>) -> json::Written {
    let mut value = json::Object::open(out);
    json::write_str(change.op.as_str(), value.key("operationType")?)?;
    json::write_date(change.written_at.timestamp_millis(), value.key("operationTimestamp")?);
    json::write_value(id, value.key("documentId")?)?;
    json::write_str(change.projection, value.key("projectionName")?)?;
    json::write_str(change.source, value.key("source")?)?;
    serde_json::to_writer(value.key("primaryKeys")?, change.primary_keys)?;
    json::write_stored(change.before, value.key("before")?)?;
    if change.op != ChangeOp::Delete {
        json::write_stored(change.after, value.key("after")?)?;
    }
    write_kafka_info(change.kafka, value.key("__internal__kafkaInfo")?)?;
    value.close();
    Ok(())
}

/// The v2.0.0 value: `operation` `{type, timestamp}`, `source`, `storageNamespace` (the
/// collection), `primaryKeys`, `before` and `after` (each the stored document without `_id`,
/// or `null`: `before` of an insert, `after` of a delete).
pub fn value_v2(change: &AppliedWrite, collection: &str) -> Result<Vec<u8>, OutputError> {
    change.document()?;
    change.json(2048, |out| {
        let mut value = json::Object::open(out);
        let mut operation = json::Object::open(value.key("operation")?);
        json::write_str(change.op.as_str(), operation.key("type")?)?;
        json::write_date(change.written_at.timestamp_millis(), operation.key("timestamp")?);
        operation.close();
        json::write_str(change.source, value.key("source")?)?;
        json::write_str(collection, value.key("storageNamespace")?)?;
        serde_json::to_writer(value.key("primaryKeys")?, change.primary_keys)?;
        json::write_stored(change.before, value.key("before")?)?;
        let after = if change.op == ChangeOp::Delete { None } else { change.after };
        json::write_stored(after, value.key("after")?)?;
        value.close();
        Ok(())
    })
}

/// The v2.0.0 `context` header: `{"ingestion": {topic, partitionID, offset, timestamp,
/// pollTimestamp}}`, the message that caused the write (offset as an integer, timestamps as
/// ISO strings like every date of the events) and when its batch was polled.
pub fn context_v2(change: &AppliedWrite, polled_at_ms: i64) -> Result<Vec<u8>, OutputError> {
    let kafka = change.kafka;
    change.json(192, |out| {
        let mut context = json::Object::open(out);
        let mut ingestion = json::Object::open(context.key("ingestion")?);
        json::write_str(&kafka.topic, ingestion.key("topic")?)?;
        serde_json::to_writer(ingestion.key("partitionID")?, &kafka.partition)?;
        serde_json::to_writer(ingestion.key("offset")?, &kafka.offset)?;
        json::write_date(kafka.timestamp_ms, ingestion.key("timestamp")?);
        json::write_date(polled_at_ms, ingestion.key("pollTimestamp")?);
        ingestion.close();
        context.close();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{Bson, DateTime, Document, doc};
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::outputs::fixtures::{W, b1, customers_source, metadata, source};
    use crate::engine::projection::Source;

    /// The docs/outputs.md#pr-update-events example, verbatim.
    const B1_VALUE: &str = r#"
{ "operationType": "INSERT", "operationTimestamp": "2023-11-14T22:13:20.042Z",
  "documentId": "655400000000000000000001", "projectionName": "pr_customers", "source": "crm",
  "primaryKeys": ["customer_id"], "before": null,
  "after": { "customer_id": "C-1", "name": "Ada", "age": 36, "signup_at": "2023-01-15T00:00:00.000Z", "vip": true,
    "__STATE__": "PUBLIC", "createdAt": "2023-11-14T22:13:20.042Z", "updatedAt": "2023-11-14T22:13:20.042Z",
    "timestamp": "2023-11-14T22:13:20.000Z", "__internal__counter": 100, "__internal__counterType": "offset",
    "__internal__kafkaInfo": { "topic": "acme.dev.crm.pr_customers.ingestion", "partition": 0, "offset": "100",
      "key": { "customer_id": "C-1" }, "timestamp": "2023-11-14T22:13:20.000Z" } },
  "__internal__kafkaInfo": { "topic": "acme.dev.crm.pr_customers.ingestion", "partition": 0, "offset": 100,
    "key": { "customer_id": "C-1" }, "timestamp": "2023-11-14T22:13:20.000Z" } }
"#;

    fn pk() -> Vec<String> {
        vec!["customer_id".to_string()]
    }

    fn change<'a>(
        op: ChangeOp,
        primary_keys: &'a [String],
        before: Option<&'a Document>,
        after: Option<&'a Document>,
        kafka: &'a Source,
    ) -> AppliedWrite<'a> {
        AppliedWrite {
            projection: "pr_customers",
            source: "crm",
            primary_keys,
            op,
            written_at: DateTime::from_millis(W),
            before,
            after,
            kafka,
        }
    }

    fn value(change: &AppliedWrite) -> Value {
        serde_json::from_slice(&value_v1(change).unwrap()).unwrap()
    }

    fn key_text(change: &AppliedWrite) -> String {
        String::from_utf8(key(change).unwrap()).unwrap()
    }

    /// `stored` as written by a later message: fields changed, metadata of `by`.
    fn rewritten(stored: &Document, state: &str, by: &Source, fields: Document) -> Document {
        let mut doc = stored.clone();
        doc.extend(fields);
        doc.extend(metadata(state, by, W, W + 1000));
        doc
    }

    #[test]
    fn the_b1_insert_is_the_spec_example() {
        let kafka = customers_source(100, "C-1");
        let stored = b1(&kafka);
        let pk = pk();
        let insert = change(ChangeOp::Insert, &pk, None, Some(&stored), &kafka);
        let expected: Value = serde_json::from_str(B1_VALUE).unwrap();
        assert_eq!(value(&insert), expected);
        assert_eq!(key_text(&insert), r#"{"customer_id":"C-1"}"#);
        // Field order is the example's too (serde_json keeps insertion order).
        let text = String::from_utf8(value_v1(&insert).unwrap()).unwrap();
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn an_update_carries_the_stored_document_before_the_write() {
        let (first, second) = (customers_source(100, "C-1"), customers_source(101, "C-1"));
        let before = b1(&first);
        let after = rewritten(&before, "PUBLIC", &second, doc! { "name": "Ada L.", "age": 37_i64 });
        let pk = pk();
        let update = change(ChangeOp::Update, &pk, Some(&before), Some(&after), &second);
        let v = value(&update);
        assert_eq!(v["operationType"], "UPDATE");
        assert_eq!(v["before"], json::document_without_id(&before));
        assert_eq!(v["after"]["name"], "Ada L.");
        assert_eq!(v["after"]["createdAt"], "2023-11-14T22:13:20.042Z");
        assert_eq!(v["after"]["__internal__kafkaInfo"]["offset"], "101");
        assert_eq!(v["__internal__kafkaInfo"]["offset"], 101);
        assert!(v["before"].get("_id").is_none() && v["after"].get("_id").is_none());
    }

    #[test]
    fn a_delete_has_no_after_key_and_before_is_the_stored_document() {
        let (first, delete) = (customers_source(100, "C-1"), customers_source(106, "C-1"));
        let before = b1(&first);
        let deleted = rewritten(&before, "DELETED", &delete, Document::new());
        let pk = pk();
        for after in [Some(&deleted), None] {
            let change = change(ChangeOp::Delete, &pk, Some(&before), after, &delete);
            let v = value(&change);
            assert_eq!(v["operationType"], "DELETE");
            assert!(v.get("after").is_none(), "{v}");
            assert_eq!(v["before"], json::document_without_id(&before));
            assert_eq!(v["before"]["__STATE__"], "PUBLIC");
            assert_eq!(v["documentId"], "655400000000000000000001");
            assert_eq!(key_text(&change), r#"{"customer_id":"C-1"}"#);
        }
    }

    #[test]
    fn a_delete_of_a_missing_document_names_the_marker() {
        let kafka = customers_source(107, "C-2");
        let mut marker = doc! { "_id": ObjectId::parse_str("6554000000000000000000ff").unwrap(), "customer_id": "C-2" };
        marker.extend(metadata("DELETED", &kafka, W, W));
        let pk = pk();
        let change = change(ChangeOp::Delete, &pk, None, Some(&marker), &kafka);
        let v = value(&change);
        assert_eq!((&v["before"], v.get("after")), (&Value::Null, None));
        assert_eq!(v["documentId"], "6554000000000000000000ff");
        assert_eq!(key_text(&change), r#"{"customer_id":"C-2"}"#);
    }

    #[test]
    fn a_primary_key_change_is_a_delete_of_the_old_key_then_an_insert_of_the_new() {
        let (first, moved) = (customers_source(100, "C-1"), customers_source(200, "C-9"));
        let old = b1(&first);
        let old_deleted = rewritten(&old, "DELETED", &moved, Document::new());
        let mut new = rewritten(&old, "PUBLIC", &moved, doc! { "customer_id": "C-9" });
        new.insert("_id", ObjectId::parse_str("655400000000000000000009").unwrap());
        let pk = pk();
        let delete = change(ChangeOp::Delete, &pk, Some(&old), Some(&old_deleted), &moved);
        let insert = change(ChangeOp::Insert, &pk, None, Some(&new), &moved);
        assert_eq!(key_text(&delete), r#"{"customer_id":"C-1"}"#);
        assert_eq!(key_text(&insert), r#"{"customer_id":"C-9"}"#);
        let (d, i) = (value(&delete), value(&insert));
        assert_eq!(
            (&d["operationType"], &i["operationType"]),
            (&json!("DELETE"), &json!("INSERT"))
        );
        assert_eq!(d["documentId"], "655400000000000000000001");
        assert_eq!(i["documentId"], "655400000000000000000009");
        assert_eq!((&i["before"], &i["after"]["customer_id"]), (&Value::Null, &json!("C-9")));
    }

    #[test]
    fn a_composite_key_follows_the_primary_key_order_not_the_document_order() {
        let kafka =
            source("t", 1, 55, Bson::Document(doc! { "order_id": "O-1", "line_no": 2_i64 }));
        let stored =
            doc! { "_id": ObjectId::new(), "order_id": "O-1", "qty": 3_i64, "line_no": 2_i64 };
        let pk = vec!["line_no".to_string(), "order_id".to_string()];
        let change = change(ChangeOp::Insert, &pk, None, Some(&stored), &kafka);
        assert_eq!(key_text(&change), r#"{"line_no":2,"order_id":"O-1"}"#);
        assert_eq!(value(&change)["primaryKeys"], json!(["line_no", "order_id"]));
    }

    #[test]
    fn a_change_that_cannot_be_described_is_an_error() {
        let kafka = customers_source(1, "C-1");
        let pk = pk();
        let no_pk = doc! { "_id": ObjectId::new(), "name": "Ada" };
        let no_id = doc! { "customer_id": "C-1" };
        let missing_pk = change(ChangeOp::Insert, &pk, None, Some(&no_pk), &kafka);
        assert!(matches!(
            key(&missing_pk),
            Err(OutputError::MissingPrimaryKey { field, .. }) if field == "customer_id"
        ));
        let missing_id = change(ChangeOp::Update, &pk, None, Some(&no_id), &kafka);
        assert!(matches!(value_v1(&missing_id), Err(OutputError::MissingId { .. })));
        let nothing = change(ChangeOp::Delete, &pk, None, None, &kafka);
        assert!(matches!(key(&nothing), Err(OutputError::NoDocument { .. })));
    }

    #[test]
    fn a_string_key_and_a_position_counter_pass_through() {
        // Vector #19 (GoldenGate): key "C-1" (not JSON), counter 20000001000 / position.
        let kafka = source("acme.dev.crm.pr_customers.ingestion", 0, 7, Bson::String("C-1".into()));
        let mut stored = b1(&kafka);
        stored.insert("__internal__counter", 20_000_001_000_i64);
        stored.insert("__internal__counterType", "position");
        let pk = pk();
        let v = value(&change(ChangeOp::Insert, &pk, None, Some(&stored), &kafka));
        assert_eq!(v["after"]["__internal__counter"], 20_000_001_000_i64);
        assert_eq!(v["after"]["__internal__counterType"], "position");
        assert_eq!(v["after"]["__internal__kafkaInfo"]["key"], "C-1");
        assert_eq!(
            v["__internal__kafkaInfo"],
            json!({
                "topic": "acme.dev.crm.pr_customers.ingestion", "partition": 0, "offset": 7,
                "key": "C-1", "timestamp": "2023-11-14T22:13:20.000Z",
            })
        );
    }

    #[test]
    fn the_schema_header_is_the_documented_json() {
        let header: Value = serde_json::from_str(PR_UPDATE_V1_SCHEMA).unwrap();
        assert_eq!(header, json!({"type": "pr-update", "version": "v1.0.0"}));
    }

    /// B1 as a v2.0.0 event: the same documents, the origin in the `context` header.
    const B1_VALUE_V2: &str = r#"
{ "operation": { "type": "INSERT", "timestamp": "2023-11-14T22:13:20.042Z" }, "source": "crm",
  "storageNamespace": "customers", "primaryKeys": ["customer_id"], "before": null,
  "after": { "customer_id": "C-1", "name": "Ada", "age": 36, "signup_at": "2023-01-15T00:00:00.000Z", "vip": true,
    "__STATE__": "PUBLIC", "createdAt": "2023-11-14T22:13:20.042Z", "updatedAt": "2023-11-14T22:13:20.042Z",
    "timestamp": "2023-11-14T22:13:20.000Z", "__internal__counter": 100, "__internal__counterType": "offset",
    "__internal__kafkaInfo": { "topic": "acme.dev.crm.pr_customers.ingestion", "partition": 0, "offset": "100",
      "key": { "customer_id": "C-1" }, "timestamp": "2023-11-14T22:13:20.000Z" } } }
"#;

    #[test]
    fn the_b1_insert_as_v2_moves_the_origin_to_the_context_header() {
        let kafka = customers_source(100, "C-1");
        let stored = b1(&kafka);
        let pk = pk();
        let insert = change(ChangeOp::Insert, &pk, None, Some(&stored), &kafka);
        let text = String::from_utf8(value_v2(&insert, "customers").unwrap()).unwrap();
        let expected: Value = serde_json::from_str(B1_VALUE_V2).unwrap();
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
        let polled = W + 5;
        let context = context_v2(&insert, polled).unwrap();
        assert_eq!(
            String::from_utf8(context).unwrap(),
            r#"{"ingestion":{"topic":"acme.dev.crm.pr_customers.ingestion","partitionID":0,"offset":100,"timestamp":"2023-11-14T22:13:20.000Z","pollTimestamp":"2023-11-14T22:13:20.047Z"}}"#
        );
        assert_eq!(PR_UPDATE_V2_SCHEMA, r#"{"type":"pr-update","version":"v2.0.0"}"#);
        // The key is the same in both formats.
        assert_eq!(key_text(&insert), r#"{"customer_id":"C-1"}"#);
    }

    #[test]
    fn a_v2_update_and_delete_carry_before_and_a_null_after_for_the_delete() {
        let (first, second) = (customers_source(100, "C-1"), customers_source(101, "C-1"));
        let before = b1(&first);
        let after = rewritten(&before, "PUBLIC", &second, doc! { "name": "Ada L." });
        let pk = pk();
        let v2 = |c: &AppliedWrite| -> Value {
            serde_json::from_slice(&value_v2(c, "pr_customers").unwrap()).unwrap()
        };
        let update = v2(&change(ChangeOp::Update, &pk, Some(&before), Some(&after), &second));
        assert_eq!(update["operation"]["type"], "UPDATE");
        assert_eq!(update["before"], json::document_without_id(&before));
        assert_eq!(update["after"], json::document_without_id(&after));
        let deleted = rewritten(&after, "DELETED", &second, doc! {});
        let delete = v2(&change(ChangeOp::Delete, &pk, Some(&after), Some(&deleted), &second));
        assert_eq!(delete["operation"]["type"], "DELETE");
        assert_eq!(delete["before"], json::document_without_id(&after));
        assert_eq!(delete["after"], Value::Null, "a delete shows no document after it");
        assert!(
            delete.get("__internal__kafkaInfo").is_none() && delete.get("documentId").is_none()
        );
    }
}
