//! The `golden-gate` adapter (docs/formats.md#oracle-goldengate-goldengate, Oracle GoldenGate JSON formatter): `op_type` I/U/D,
//! `before` / `after` images, and `pos` as the CDC position. The Kafka key is not used.

use super::{
    Adapted, AdapterError, ChangeEvent, KafkaRecord, Op, PrimaryKey, Skip, parse_position,
    take_image, value_object,
};

pub(super) fn adapt(
    record: KafkaRecord<'_>,
    pk: &PrimaryKey,
    use_pos_as_counter: bool,
) -> Result<Adapted, AdapterError> {
    let Some(mut value) = value_object(record)? else { return Ok(Adapted::Skip(Skip::Tombstone)) };
    let op = match value.get("op_type").and_then(|v| v.as_str()) {
        Some("I") => Op::Insert,
        Some("U") => Op::Update,
        Some("D") => Op::Delete,
        Some(other) => return Err(AdapterError::UnknownOperation(format!("op_type {other:?}"))),
        None => return Err(AdapterError::UnknownOperation("op_type is missing".to_string())),
    };
    let position = if use_pos_as_counter {
        let pos = value.get("pos").ok_or_else(|| malformed("pos is missing"))?;
        Some(
            parse_position(pos)
                .ok_or_else(|| malformed(&format!("pos {pos} is not an unsigned integer")))?,
        )
    } else {
        None
    };
    let before = take_image(&mut value, "before")?;
    let after = take_image(&mut value, "after")?;
    let key = match op {
        Op::Delete => {
            let before = before.as_ref().ok_or_else(|| AdapterError::MissingPrimaryKey {
                field: pk.0.first().map(|(f, _)| f.clone()).unwrap_or_default(),
                place: "before (a D record without a before image)",
            })?;
            pk.extract(before, "before")?
        }
        _ => pk.extract(
            after.as_ref().ok_or_else(|| malformed("after is null for an I/U record"))?,
            "after",
        )?,
    };
    let after = if op == Op::Delete { None } else { after };
    Ok(Adapted::Change(ChangeEvent { op, key, before, after, position }))
}

fn malformed(reason: &str) -> AdapterError {
    AdapterError::MalformedValue(reason.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixture::{change, code, obj, pk, record};
    use super::*;

    const G1: &str = r#"{"table":"CRM.CUSTOMERS","op_type":"I","op_ts":"2023-11-14 22:13:19.000000","pos":"00000000020000001000","after":{"customer_id":"C-1","name":"Ada","age":36,"signup_at":"2023-01-15","vip":"true"}}"#;

    fn gg(value: &str) -> Result<Adapted, AdapterError> {
        adapt(record(Some("C-1"), Some(value)), &pk(), true)
    }

    #[test]
    fn g1_insert_with_position() {
        let c = change(gg(G1));
        assert_eq!((c.op, c.position), (Op::Insert, Some(20_000_001_000)));
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
        assert_eq!(c.after.unwrap()["name"], json!("Ada"));
        assert_eq!(c.before, None);
    }

    #[test]
    fn g2_partial_update() {
        let c = change(gg(
            r#"{"op_type":"U","pos":"00000000020000002000","before":{"customer_id":"C-1","name":"Ada"},"after":{"customer_id":"C-1","name":"Ada L."}}"#,
        ));
        assert_eq!((c.op, c.position), (Op::Update, Some(20_000_002_000)));
        assert_eq!(c.after, Some(obj(json!({"customer_id": "C-1", "name": "Ada L."}))));
        assert_eq!(c.before, Some(obj(json!({"customer_id": "C-1", "name": "Ada"}))));
    }

    #[test]
    fn g3_pk_change_keeps_both_images() {
        let c = change(gg(
            r#"{"op_type":"U","pos":"00000000020000003000","before":{"customer_id":"C-1","name":"Ada L."},"after":{"customer_id":"C-9","name":"Ada L.","age":36,"signup_at":"2023-01-15","vip":"true"}}"#,
        ));
        assert_eq!(c.key, obj(json!({"customer_id": "C-9"})));
        assert_eq!(c.before.unwrap()["customer_id"], json!("C-1"));
    }

    #[test]
    fn g4_delete_is_keyed_by_before() {
        let c = change(gg(
            r#"{"op_type":"D","pos":"00000000020000004000","before":{"customer_id":"C-9","name":"Ada L."},"after":null}"#,
        ));
        assert_eq!((c.op, c.after), (Op::Delete, None));
        assert_eq!(c.key, obj(json!({"customer_id": "C-9"})));
    }

    #[test]
    fn position_forms() {
        let with_pos =
            |pos: &str| format!(r#"{{"op_type":"I","pos":{pos},"after":{{"customer_id":"C-1"}}}}"#);
        assert_eq!(change(gg(&with_pos("650028162190"))).position, Some(650_028_162_190));
        assert_eq!(
            change(gg(&with_pos("\"00000000650028162190\""))).position,
            Some(650_028_162_190)
        );
        assert_eq!(
            change(gg(&with_pos("\"99999999999999999999\""))).position,
            Some(99_999_999_999_999_999_999)
        );
        // 35 digits: more than a Decimal128 counter holds.
        let too_long = format!("\"{}\"", "9".repeat(35));
        for bad in ["\"12a\"", "\"\"", "-5", "1.5", "null", too_long.as_str()] {
            assert_eq!(code(gg(&with_pos(bad))), "MALFORMED_VALUE", "pos {bad}");
        }
        // Without USE_POS_AS_COUNTER the position is ignored, even when missing.
        let no_pos = r#"{"op_type":"I","after":{"customer_id":"C-1"}}"#;
        let c = change(adapt(record(None, Some(no_pos)), &pk(), false));
        assert_eq!(c.position, None);
    }

    #[test]
    fn edge_cases() {
        // docs/vectors.md #24: a null value is a tombstone skip.
        assert_eq!(
            adapt(record(Some("C-1"), None), &pk(), true),
            Ok(Adapted::Skip(Skip::Tombstone))
        );
        let cases = [
            // docs/vectors.md #23.
            (r#"{"op_type":"X","pos":"1","after":{"customer_id":"C-1"}}"#, "UNKNOWN_OPERATION"),
            (r#"{"op_type":"T","pos":"1","after":{"customer_id":"C-1"}}"#, "UNKNOWN_OPERATION"),
            (r#"{"pos":"1","after":{"customer_id":"C-1"}}"#, "UNKNOWN_OPERATION"),
            // docs/vectors.md #25.
            (r#"{"op_type":"I","after":{"customer_id":"C-1"}}"#, "MALFORMED_VALUE"),
            (r#"{"op_type":"I","pos":"1","after":null}"#, "MALFORMED_VALUE"),
            (r#"{"op_type":"U","pos":"1"}"#, "MALFORMED_VALUE"),
            (r#"{"op_type":"I","pos":"1","after":[1]}"#, "MALFORMED_VALUE"),
            (r#"{"op_type":"D","pos":"1","after":null}"#, "MISSING_PRIMARY_KEY"),
            (r#"{"op_type":"D","pos":"1","before":{"name":"x"}}"#, "MISSING_PRIMARY_KEY"),
            ("not json", "MALFORMED_VALUE"),
        ];
        for (value, expected) in cases {
            assert_eq!(code(gg(value)), expected, "{value}");
        }
    }

    /// GoldenGate's Kafka handler builds the key from a template (`gg.handler.*.keyMappingTemplate`,
    /// by default the primary-key values joined), so it is any text: the row image is the
    /// primary key, and the key is only recorded in `__internal__kafkaInfo.key`.
    #[test]
    fn the_row_image_is_the_primary_key_whatever_the_key() {
        for key in [Some("C-2"), Some(r#"{"customer_id":"C-2"}"#), Some("not json {"), None] {
            let c = change(adapt(record(key, Some(G1)), &pk(), true));
            assert_eq!(c.key, obj(json!({"customer_id": "C-1"})), "key {key:?}");
        }
    }

    #[test]
    fn update_without_before_is_a_plain_update() {
        let c = change(gg(r#"{"op_type":"U","pos":"7","after":{"customer_id":"C-1","age":40}}"#));
        assert_eq!((c.op, c.before, c.position), (Op::Update, None, Some(7)));
    }
}
