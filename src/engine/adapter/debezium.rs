//! The `debezium` adapter (SPEC §2.3): the `{before, after, op, source, ts_ms}` envelope, with
//! or without the `{schema, payload}` wrapper of the JSON converter; tombstones and truncates
//! are skips. Primary-key fields missing from the image are taken from the key object.

use super::{
    Adapted, AdapterError, ChangeEvent, Image, Op, PrimaryKey, Record, Skip, key_object,
    take_image, value_object,
};
use serde_json::Value;

pub(super) fn adapt(record: Record<'_>, pk: &PrimaryKey) -> Result<Adapted, AdapterError> {
    let Some(mut envelope) = value_object(record)? else {
        return Ok(Adapted::Skip(Skip::Tombstone));
    };
    if envelope.contains_key("schema") && envelope.contains_key("payload") {
        envelope = match envelope.remove("payload") {
            Some(Value::Object(payload)) => payload,
            Some(Value::Null) | None => return Ok(Adapted::Skip(Skip::Tombstone)),
            Some(_) => return Err(malformed("payload is not an object")),
        };
    }
    let before = take_image(&mut envelope, "before")?;
    let after = take_image(&mut envelope, "after")?;
    let op = match envelope.get("op") {
        Some(Value::String(op)) => match op.as_str() {
            "c" | "r" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => return Ok(Adapted::Skip(Skip::Truncate)),
            other => return Err(AdapterError::UnknownOperation(format!("op {other:?}"))),
        },
        None | Some(Value::Null) => match (before.is_some(), after.is_some()) {
            (false, true) => Op::Insert,
            (true, true) => Op::Update,
            (true, false) => Op::Delete,
            (false, false) => return Err(malformed("no op and neither before nor after")),
        },
        Some(other) => return Err(AdapterError::UnknownOperation(format!("op {other}"))),
    };
    if op != Op::Delete && after.is_none() {
        return Err(malformed("after is null for a create/read/update"));
    }
    let data = if op == Op::Delete { before.as_ref() } else { after.as_ref() };
    let key = primary_key(record, pk, data)?;
    let after = if op == Op::Delete { None } else { after };
    Ok(Adapted::Change(ChangeEvent { op, key, before, after, position: None }))
}

/// Each primary-key field from the image, else from the Kafka key object.
fn primary_key(
    record: Record<'_>,
    pk: &PrimaryKey,
    data: Option<&Image>,
) -> Result<Image, AdapterError> {
    let empty = Image::new();
    let data = data.unwrap_or(&empty);
    if let Ok(key) = pk.extract(data, "the row image") {
        return Ok(key);
    }
    let kafka_key = key_object(record)?.unwrap_or_default();
    let mut merged = kafka_key;
    for (field, value) in data {
        if !value.is_null() {
            merged.insert(field.clone(), value.clone());
        }
    }
    pk.extract(&merged, "the row image nor the key")
}

fn malformed(reason: &str) -> AdapterError {
    AdapterError::MalformedValue(reason.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixture::{change, code, obj, pk, record};
    use super::*;

    const KEY: &str = r#"{"customer_id":"C-1"}"#;
    const D1: &str = r#"{"before":null,"after":{"customer_id":"C-1","name":"Ada","age":36,"signup_at":"2023-01-15","vip":"true"},"source":{"connector":"postgresql","table":"customers"},"op":"c","ts_ms":1700000000000}"#;

    fn dbz(key: Option<&str>, value: &str) -> Result<Adapted, AdapterError> {
        adapt(record(key, Some(value)), &pk())
    }

    #[test]
    fn d1_create_and_snapshot_read_are_inserts() {
        for op in ["c", "r"] {
            let c = change(dbz(Some(KEY), &D1.replace(r#""op":"c""#, &format!(r#""op":"{op}""#))));
            assert_eq!((c.op, c.position), (Op::Insert, None), "op {op}");
            assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
            assert_eq!(c.after.unwrap()["age"], json!(36));
        }
    }

    #[test]
    fn d2_update_and_d3_delete() {
        let c = change(dbz(
            Some(KEY),
            r#"{"before":{"customer_id":"C-1","age":36},"after":{"customer_id":"C-1","name":"Ada","age":37},"op":"u"}"#,
        ));
        assert_eq!((c.op, c.before.unwrap()["age"].clone()), (Op::Update, json!(36)));
        let c = change(dbz(
            Some(KEY),
            r#"{"before":{"customer_id":"C-1","name":"Ada","age":37},"after":null,"op":"d"}"#,
        ));
        assert_eq!((c.op, c.after), (Op::Delete, None));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
    }

    #[test]
    fn schema_envelope_is_unwrapped() {
        let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{D1}}}"#);
        assert_eq!(dbz(Some(KEY), &wrapped), dbz(Some(KEY), D1));
        let null_payload = r#"{"schema":{"type":"struct"},"payload":null}"#;
        assert_eq!(dbz(Some(KEY), null_payload), Ok(Adapted::Skip(Skip::Tombstone)));
    }

    #[test]
    fn skips_tombstones_and_truncates() {
        // SPEC §10 #28 and #29.
        assert_eq!(adapt(record(Some(KEY), None), &pk()), Ok(Adapted::Skip(Skip::Tombstone)));
        assert_eq!(adapt(record(Some(KEY), Some("")), &pk()), Ok(Adapted::Skip(Skip::Tombstone)));
        let truncate = r#"{"before":null,"after":null,"op":"t"}"#;
        assert_eq!(dbz(None, truncate), Ok(Adapted::Skip(Skip::Truncate)));
    }

    #[test]
    fn pk_change_and_delete_by_key() {
        // SPEC §10 #30 and #31.
        let c = change(dbz(
            Some(KEY),
            r#"{"before":{"customer_id":"C-1"},"after":{"customer_id":"C-9","name":"x"},"op":"u"}"#,
        ));
        assert_eq!(c.key, obj(json!({"customer_id": "C-9"})));
        assert_eq!(c.before.unwrap()["customer_id"], json!("C-1"));
        let c = change(dbz(Some(KEY), r#"{"before":null,"after":null,"op":"d"}"#));
        assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"customer_id": "C-1"}))));
    }

    #[test]
    fn missing_op_is_inferred() {
        // SPEC §10 #32.
        let c = change(dbz(None, r#"{"before":null,"after":{"customer_id":"C-4"}}"#));
        assert_eq!(c.op, Op::Insert);
        let c =
            change(dbz(None, r#"{"before":{"customer_id":"C-4"},"after":{"customer_id":"C-4"}}"#));
        assert_eq!(c.op, Op::Update);
        let c = change(dbz(None, r#"{"before":{"customer_id":"C-4"}}"#));
        assert_eq!(c.op, Op::Delete);
        assert_eq!(code(dbz(Some(KEY), r#"{"before":null,"after":null}"#)), "MALFORMED_VALUE");
    }

    #[test]
    fn pk_fields_missing_from_the_image_come_from_the_key() {
        let c = change(dbz(Some(KEY), r#"{"after":{"name":"no pk here"},"op":"u"}"#));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
    }

    #[test]
    fn edge_cases() {
        let cases = [
            (Some(KEY), r#"{"after":{"customer_id":"C-1"},"op":"x"}"#, "UNKNOWN_OPERATION"),
            (Some(KEY), r#"{"after":{"customer_id":"C-1"},"op":7}"#, "UNKNOWN_OPERATION"),
            (Some(KEY), r#"{"before":null,"after":null,"op":"c"}"#, "MALFORMED_VALUE"),
            (Some(KEY), r#"{"after":"x","op":"c"}"#, "MALFORMED_VALUE"),
            (Some(KEY), r#"{"schema":{},"payload":5}"#, "MALFORMED_VALUE"),
            (None, r#"{"before":null,"after":null,"op":"d"}"#, "MISSING_PRIMARY_KEY"),
            (Some(r#"{"other":1}"#), r#"{"after":{"name":"x"},"op":"c"}"#, "MISSING_PRIMARY_KEY"),
            (Some("C-1"), r#"{"after":{"name":"x"},"op":"c"}"#, "MALFORMED_KEY"),
        ];
        for (key, value, expected) in cases {
            assert_eq!(code(dbz(key, value)), expected, "key {key:?} value {value}");
        }
        // A key that is not JSON does not matter when the image has the primary key.
        assert!(dbz(Some("C-1"), D1).is_ok());
    }
}
