//! The declarative `custom` adapter (docs/formats.md#custom-custom): JSON pointers say where the operation, the
//! images and the position live, and which operation values mean insert/update/upsert/delete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Adapted, AdapterError, ChangeEvent, Image, KafkaRecord, Op, PrimaryKey, Skip, key_object,
    parse_position, value_object,
};

/// Where a custom message keeps each part of the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomMapping {
    /// Where the operation is, and what its values mean.
    pub operation: OperationMapping,
    /// JSON pointer to the row after the change (used by insert, update and upsert), e.g.
    /// `/row`; `""` is the whole value (a flat record).
    pub after: String,
    /// JSON pointer to the row before the change, when the format carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Where the primary-key fields are read.
    pub key: KeySource,
    /// JSON pointer to a CDC position (a positive integer), the stale-guard counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// What a null record value means.
    #[serde(default)]
    pub null_value: NullValue,
}

/// The operation of a custom message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationMapping {
    /// JSON pointer to the operation value, e.g. `/event`.
    pub pointer: String,
    /// Operation value -> `insert` | `update` | `upsert` | `delete`.
    pub values: BTreeMap<String, MappedOp>,
}

/// What an operation value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MappedOp {
    /// The row was created.
    Insert,
    /// The row changed.
    Update,
    /// The row was written.
    Upsert,
    /// The row was removed.
    Delete,
}

/// Where the primary-key fields of a custom message are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeySource {
    /// The `after` image.
    After,
    /// The `before` image.
    Before,
    /// The Kafka key, a JSON object.
    KafkaKey,
}

/// The meaning of a null record value.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NullValue {
    /// A delete, keyed by the primary key source (only `kafkaKey` can have one).
    #[default]
    Delete,
    /// Nothing to do.
    Skip,
    /// A message error.
    Error,
}

impl From<MappedOp> for Op {
    fn from(op: MappedOp) -> Self {
        match op {
            MappedOp::Insert => Op::Insert,
            MappedOp::Update => Op::Update,
            MappedOp::Upsert => Op::Upsert,
            MappedOp::Delete => Op::Delete,
        }
    }
}

pub(super) fn adapt(
    record: KafkaRecord<'_>,
    pk: &PrimaryKey,
    mapping: &CustomMapping,
) -> Result<Adapted, AdapterError> {
    let Some(value) = value_object(record)? else {
        return match mapping.null_value {
            NullValue::Skip => Ok(Adapted::Skip(Skip::NullValue)),
            NullValue::Error => Err(AdapterError::MalformedValue("the value is null".to_string())),
            NullValue::Delete => {
                let key = key_from(record, pk, mapping.key, None, None)?;
                Ok(Adapted::Change(ChangeEvent {
                    op: Op::Delete,
                    key,
                    before: None,
                    after: None,
                    position: None,
                }))
            }
        };
    };
    let root = Value::Object(value);
    let op = operation(&root, &mapping.operation)?;
    let image_at = |pointer: &str| match root.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(other) => Err(contract(format!("{pointer} is {other}, not an object"))),
    };
    let after = image_at(&mapping.after)?;
    let before = mapping.before.as_deref().map(image_at).transpose()?.flatten();
    if op != Op::Delete && after.is_none() {
        return Err(contract(format!(
            "after ({}) must be an object for a non-delete",
            mapping.after
        )));
    }
    let position = match mapping.position.as_deref().and_then(|p| root.pointer(p)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_position(v)
                .filter(|p| *p > 0)
                .ok_or_else(|| contract(format!("position {v} is not a positive integer")))?,
        ),
    };
    let key = key_from(record, pk, mapping.key, before.as_ref(), after.as_ref())?;
    let after = if op == Op::Delete { None } else { after };
    Ok(Adapted::Change(ChangeEvent { op, key, before, after, position }))
}

fn operation(root: &Value, mapping: &OperationMapping) -> Result<Op, AdapterError> {
    let found = root.pointer(&mapping.pointer);
    let mapped = found.and_then(Value::as_str).and_then(|v| mapping.values.get(v));
    match (mapped, found) {
        (Some(op), _) => Ok((*op).into()),
        (None, Some(v)) => Err(AdapterError::UnknownOperation(format!(
            "{} is {v}; mapped values: {}",
            mapping.pointer,
            mapping.values.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        (None, None) => {
            Err(AdapterError::UnknownOperation(format!("{} is missing", mapping.pointer)))
        }
    }
}

fn key_from(
    record: KafkaRecord<'_>,
    pk: &PrimaryKey,
    source: KeySource,
    before: Option<&Image>,
    after: Option<&Image>,
) -> Result<Image, AdapterError> {
    let empty = Image::new();
    match source {
        KeySource::After => pk.extract(after.unwrap_or(&empty), "after"),
        KeySource::Before => pk.extract(before.unwrap_or(&empty), "before"),
        KeySource::KafkaKey => {
            pk.extract(&key_object(record)?.unwrap_or_default(), "the Kafka key")
        }
    }
}

fn contract(rule: String) -> AdapterError {
    AdapterError::CustomAdapterFailed(rule)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixture::{change, code, obj, pk, record};
    use super::*;

    /// The mapping of docs/formats.md#custom-custom.
    fn mapping() -> CustomMapping {
        serde_json::from_value(json!({
            "operation": { "pointer": "/event", "values": {
                "ROW_INSERT": "insert", "ROW_UPSERT": "upsert", "ROW_UPDATE": "update", "ROW_DELETE": "delete" } },
            "after": "/row",
            "before": "/old_row",
            "key": "after",
            "position": "/seq",
            "nullValue": "delete",
        }))
        .unwrap()
    }

    fn custom(
        key: Option<&str>,
        value: Option<&str>,
        mapping: &CustomMapping,
    ) -> Result<Adapted, AdapterError> {
        adapt(record(key, value), &pk(), mapping)
    }

    #[test]
    fn c1_upsert_with_position() {
        let c = change(custom(
            None,
            Some(r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1","name":"Ada"},"seq":88123}"#),
            &mapping(),
        ));
        assert_eq!((c.op, c.position), (Op::Upsert, Some(88123)));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
        assert_eq!(c.after, Some(obj(json!({"customer_id": "C-1", "name": "Ada"}))));
    }

    #[test]
    fn c2_delete_keyed_by_after() {
        let c = change(custom(
            None,
            Some(r#"{"event":"ROW_DELETE","row":{"customer_id":"C-1"},"seq":88124}"#),
            &mapping(),
        ));
        assert_eq!((c.op, c.after, c.position), (Op::Delete, None, Some(88124)));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
    }

    #[test]
    fn c3_unmapped_operation_and_c4_null_value_without_a_key_source() {
        let merge =
            custom(None, Some(r#"{"event":"ROW_MERGE","row":{"customer_id":"C-1"}}"#), &mapping());
        let err = merge.clone().unwrap_err().to_string();
        assert_eq!(code(merge), "UNKNOWN_OPERATION");
        assert!(err.contains("ROW_INSERT, ROW_UPDATE, ROW_UPSERT"), "{err}");
        assert_eq!(code(custom(None, Some(r#"{"row":{}}"#), &mapping())), "UNKNOWN_OPERATION");
        // C4: the PK source is `after`, which a null value does not have.
        assert_eq!(
            code(custom(Some(r#"{"customer_id":"C-1"}"#), None, &mapping())),
            "MISSING_PRIMARY_KEY"
        );
    }

    #[test]
    fn null_value_meanings() {
        let with =
            |key: KeySource, null_value: NullValue| CustomMapping { key, null_value, ..mapping() };
        let key = Some(r#"{"customer_id":"C-1"}"#);
        let c = change(custom(key, None, &with(KeySource::KafkaKey, NullValue::Delete)));
        assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"customer_id": "C-1"}))));
        assert_eq!(
            custom(key, None, &with(KeySource::After, NullValue::Skip)),
            Ok(Adapted::Skip(Skip::NullValue))
        );
        assert_eq!(
            code(custom(key, None, &with(KeySource::After, NullValue::Error))),
            "MALFORMED_VALUE"
        );
    }

    #[test]
    fn contract_violations() {
        let cases = [
            (r#"{"event":"ROW_UPSERT","seq":1}"#, "CUSTOM_ADAPTER_FAILED"),
            (r#"{"event":"ROW_UPSERT","row":[1],"seq":1}"#, "CUSTOM_ADAPTER_FAILED"),
            (
                r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1"},"seq":0}"#,
                "CUSTOM_ADAPTER_FAILED",
            ),
            (
                r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1"},"seq":-3}"#,
                "CUSTOM_ADAPTER_FAILED",
            ),
            (
                r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1"},"seq":"x"}"#,
                "CUSTOM_ADAPTER_FAILED",
            ),
            (r#"{"event":"ROW_UPSERT","row":{"name":"x"},"seq":1}"#, "MISSING_PRIMARY_KEY"),
            (r#"{"event":"ROW_UPSERT","row":{"customer_id":null},"seq":1}"#, "MISSING_PRIMARY_KEY"),
        ];
        for (value, expected) in cases {
            assert_eq!(code(custom(None, Some(value), &mapping())), expected, "{value}");
        }
    }

    #[test]
    fn before_image_and_key_from_before() {
        let m = CustomMapping { key: KeySource::Before, ..mapping() };
        let c = change(custom(
            None,
            Some(
                r#"{"event":"ROW_UPDATE","row":{"customer_id":"C-9"},"old_row":{"customer_id":"C-1"},"seq":"17"}"#,
            ),
            &m,
        ));
        assert_eq!((c.op, c.position), (Op::Update, Some(17)));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
        assert_eq!(c.before, Some(obj(json!({"customer_id": "C-1"}))));
    }

    #[test]
    fn mapping_refuses_unknown_fields() {
        let err = serde_json::from_value::<CustomMapping>(json!({
            "operation": { "pointer": "/op", "values": {} }, "after": "/a", "key": "after", "kee": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `kee`"), "{err}");
    }
}
