//! The RTU v7 result of a JavaScript adapter, `{keyObject, value, timestampDate, offset,
//! operation?, before?, after?, operationPosition?}`, translated into the engine's change
//! event (docs/formats.md#custom-custom): `value → after` (an explicit `after` wins, for primary-key changes),
//! no image → delete, `operation` absent → upsert, `operationPosition → position`. Each
//! broken rule is reported by name. `timestampDate` and `offset` are not read: the engine
//! takes both from the Kafka record.

use serde_json::{Map, Value as Json};

use crate::engine::adapter::{ChangeEvent, Image, Op, parse_position};

/// The change event an adapter result describes, or the contract rule it breaks.
pub(super) fn translate(result: Json, primary_keys: &[String]) -> Result<ChangeEvent, String> {
    let Json::Object(mut result) = result else {
        return Err(format!("the adapter must return an object, not {}", kind(&result)));
    };
    let key_object = image(&mut result, "keyObject")?
        .ok_or("keyObject must be an object, never null or absent")?;
    let value = image(&mut result, "value")?;
    let after = image(&mut result, "after")?.or(value);
    let before = image(&mut result, "before")?;
    let op = operation(result.get("operation"), after.is_some())?;
    if op != Op::Delete && after.is_none() {
        return Err("value (or after) must be an object for an operation other than \"D\"".into());
    }
    let position = position(result.get("operationPosition"))?;
    let key = primary_key(&key_object, primary_keys)?;
    let after = if op == Op::Delete { None } else { after };
    Ok(ChangeEvent { op, key, before, after, position })
}

/// An image field: an object, or `None` when absent or null.
fn image(result: &mut Map<String, Json>, field: &str) -> Result<Option<Image>, String> {
    match result.remove(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(map)) => Ok(Some(map)),
        Some(other) => Err(format!("{field} must be an object or null, not {}", kind(&other))),
    }
}

/// `"I"`, `"U"`, `"D"`; absent means upsert, or delete when there is no image.
fn operation(operation: Option<&Json>, has_image: bool) -> Result<Op, String> {
    match operation {
        None | Some(Json::Null) if has_image => Ok(Op::Upsert),
        None | Some(Json::Null) => Ok(Op::Delete),
        Some(Json::String(s)) if s == "I" => Ok(Op::Insert),
        Some(Json::String(s)) if s == "U" => Ok(Op::Update),
        Some(Json::String(s)) if s == "D" => Ok(Op::Delete),
        Some(other) => Err(format!(
            "operation must be \"I\", \"U\" or \"D\" (or absent for an upsert), not {other}"
        )),
    }
}

/// `operationPosition`: a positive integer (number or digit string) when present.
fn position(value: Option<&Json>) -> Result<Option<u128>, String> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(v) => parse_position(v)
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| format!("operationPosition must be a positive integer, not {v}")),
    }
}

/// Every primary-key field of `keyObject`, non-null, in primary-key order.
fn primary_key(key_object: &Image, primary_keys: &[String]) -> Result<Image, String> {
    if primary_keys.is_empty() {
        return Err("the projection has no primary key to fill keyObject with".into());
    }
    primary_keys
        .iter()
        .map(|field| match key_object.get(field) {
            Some(v) if !v.is_null() => Ok((field.clone(), v.clone())),
            _ => Err(format!("keyObject must hold primary-key field {field:?}, non-null")),
        })
        .collect()
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pk() -> Vec<String> {
        vec!["customer_id".to_string()]
    }

    fn ok(result: Json) -> ChangeEvent {
        translate(result, &pk()).unwrap()
    }

    fn rule(result: Json) -> String {
        translate(result, &pk()).unwrap_err()
    }

    fn obj(value: Json) -> Image {
        match value {
            Json::Object(map) => map,
            other => panic!("{other} is not an object"),
        }
    }

    #[test]
    fn value_becomes_after_and_an_absent_operation_is_an_upsert() {
        let c = ok(json!({
            "keyObject": { "customer_id": "C-1", "extra": 1 },
            "value": { "customer_id": "C-1", "name": "Ada" },
            "timestampDate": "2024-01-01T00:00:00.000Z", "offset": 4,
        }));
        assert_eq!(c.op, Op::Upsert);
        assert_eq!(c.key, obj(json!({ "customer_id": "C-1" })));
        assert_eq!(c.after, Some(obj(json!({ "customer_id": "C-1", "name": "Ada" }))));
        assert_eq!((c.before, c.position), (None, None));
    }

    #[test]
    fn a_null_value_without_operation_is_a_delete() {
        let c = ok(json!({ "keyObject": { "customer_id": "C-1" }, "value": null }));
        assert_eq!(
            (c.op, c.after, c.key),
            (Op::Delete, None, obj(json!({ "customer_id": "C-1" })))
        );
    }

    #[test]
    fn operations_i_u_d_map_to_insert_update_delete() {
        let with = |op: &str| {
            ok(
                json!({ "keyObject": { "customer_id": "C-1" }, "value": { "a": 1 }, "operation": op }),
            )
        };
        assert_eq!(with("I").op, Op::Insert);
        assert_eq!(with("U").op, Op::Update);
        let delete = with("D");
        assert_eq!((delete.op, delete.after), (Op::Delete, None));
    }

    #[test]
    fn a_primary_key_change_keeps_before_after_and_position() {
        let c = ok(json!({
            "keyObject": { "customer_id": "C-2" },
            "value": { "customer_id": "C-2", "name": "new" },
            "before": { "customer_id": "C-1" },
            "after": { "customer_id": "C-2", "name": "from after" },
            "operation": "U",
            "operationPosition": 42,
        }));
        assert_eq!(c.before, Some(obj(json!({ "customer_id": "C-1" }))));
        assert_eq!(c.after, Some(obj(json!({ "customer_id": "C-2", "name": "from after" }))));
        assert_eq!(c.position, Some(42));
        assert_eq!(ok(json!({ "keyObject": { "customer_id": "C" }, "value": {}, "operationPosition": "0088" })).position, Some(88));
    }

    #[test]
    fn each_contract_rule_is_named() {
        let cases = [
            (json!("nope"), "must return an object"),
            (json!({ "value": { "a": 1 } }), "keyObject must be an object"),
            (json!({ "keyObject": null, "value": { "a": 1 } }), "keyObject must be an object"),
            (json!({ "keyObject": "C-1", "value": {} }), "keyObject must be an object or null"),
            (json!({ "keyObject": {}, "value": { "a": 1 } }), "primary-key field \"customer_id\""),
            (
                json!({ "keyObject": { "customer_id": null }, "value": {} }),
                "primary-key field \"customer_id\"",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "operation": "X" }),
                "operation must be \"I\", \"U\" or \"D\"",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "operation": 1 }),
                "operation must be",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": null, "operation": "I" }),
                "must be an object for an operation other than \"D\"",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": [1] }),
                "value must be an object or null, not an array",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "before": 3 }),
                "before must be an object or null",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "operationPosition": 0 }),
                "operationPosition must be a positive integer",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "operationPosition": -3 }),
                "operationPosition must be a positive integer",
            ),
            (
                json!({ "keyObject": { "customer_id": 1 }, "value": {}, "operationPosition": 1.5 }),
                "operationPosition must be a positive integer",
            ),
        ];
        for (result, expected) in cases {
            let got = rule(result.clone());
            assert!(got.contains(expected), "{result}: expected {expected:?} in {got:?}");
        }
        let no_pk = translate(json!({ "keyObject": { "a": 1 }, "value": {} }), &[]).unwrap_err();
        assert!(no_pk.contains("no primary key"), "{no_pk}");
    }
}
