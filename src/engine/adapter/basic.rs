//! The `basic` / `db2` adapter (SPEC §2.1, IBM IIDR KCOP JSON): the value is the whole row, a
//! null value is the delete, and no operation is carried, so every write is an upsert.

use super::{
    Adapted, AdapterError, ChangeEvent, Image, Op, PrimaryKey, Record, key_object, value_object,
};

pub(super) fn adapt(record: Record<'_>, pk: &PrimaryKey) -> Result<Adapted, AdapterError> {
    let key = key_object(record)?;
    let Some(row) = value_object(record)? else {
        let key = pk.extract(key.as_ref().unwrap_or(&Image::new()), "the key (value is null)")?;
        return Ok(Adapted::Change(ChangeEvent {
            op: Op::Delete,
            key,
            before: None,
            after: None,
            position: None,
        }));
    };
    let key = match key {
        Some(key) => {
            let from_key = pk.extract(&key, "the key")?;
            check_agreement(pk, &from_key, &row)?;
            from_key
        }
        None => pk.extract(&row, "the value (key is empty)")?,
    };
    Ok(Adapted::Change(ChangeEvent {
        op: Op::Upsert,
        key,
        before: None,
        after: Some(row),
        position: None,
    }))
}

/// Where the value also carries a primary-key field, its cast value must equal the key's.
fn check_agreement(pk: &PrimaryKey, key: &Image, row: &Image) -> Result<(), AdapterError> {
    for (field, cast) in &pk.0 {
        let (Some(in_key), Some(in_value)) = (key.get(field), row.get(field)) else { continue };
        let cast_of = |v| {
            cast.apply(v)
                .map_err(|source| AdapterError::CastFailed { field: field.clone(), source })
        };
        if cast_of(in_key)? != cast_of(in_value)? {
            return Err(AdapterError::KeyMismatch {
                field: field.clone(),
                in_key: in_key.to_string(),
                in_value: in_value.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixture::{change, code, obj, pk, record};
    use super::*;
    use crate::engine::cast::Cast;

    const B1: &str = r#"{"customer_id":"C-1","name":"Ada","age":"36","signup_at":"2023-01-15","vip":"true","shoe_size":44}"#;

    #[test]
    fn b1_insert_is_an_upsert_of_the_whole_row() {
        let c = change(adapt(record(Some(r#"{"customer_id":"C-1"}"#), Some(B1)), &pk()));
        assert_eq!(c.op, Op::Upsert);
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
        assert_eq!(c.after, Some(obj(serde_json::from_str(B1).unwrap())));
        assert_eq!((c.before, c.position), (None, None));
    }

    #[test]
    fn b3_null_value_is_a_delete_by_key() {
        for value in [None, Some("")] {
            let c = change(adapt(record(Some(r#"{"customer_id":"C-1"}"#), value), &pk()));
            assert_eq!(c.op, Op::Delete);
            assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
            assert_eq!((c.before, c.after), (None, None));
        }
    }

    #[test]
    fn empty_key_takes_the_primary_key_from_the_value() {
        // SPEC §10 #11.
        let value = r#"{"customer_id":"C-3","name":"Bo"}"#;
        for key in [None, Some("")] {
            let c = change(adapt(record(key, Some(value)), &pk()));
            assert_eq!((c.op, c.key), (Op::Upsert, obj(json!({"customer_id": "C-3"}))));
        }
    }

    #[test]
    fn edge_cases_are_message_errors() {
        let cases = [
            // SPEC §10 #12: no key, null value.
            (Some(""), None, "MISSING_PRIMARY_KEY"),
            (None, None, "MISSING_PRIMARY_KEY"),
            (Some("C-1"), Some(B1), "MALFORMED_KEY"),
            (Some("[1]"), Some(B1), "MALFORMED_KEY"),
            (Some("\"C-1\""), Some(B1), "MALFORMED_KEY"),
            // SPEC §10 #13: truncated JSON.
            (Some(r#"{"customer_id":"C-1"}"#), Some(r#"{"customer_id":"#), "MALFORMED_VALUE"),
            (Some(r#"{"customer_id":"C-1"}"#), Some("[1]"), "MALFORMED_VALUE"),
            (Some(r#"{"customer_id":"C-1"}"#), Some("\"x\""), "MALFORMED_VALUE"),
            // SPEC §10 #14.
            (Some(r#"{"customer_id":"C-1"}"#), Some(r#"{"customer_id":"C-2"}"#), "KEY_MISMATCH"),
            (
                Some(r#"{"customer_id":null}"#),
                Some(r#"{"customer_id":"C-2"}"#),
                "MISSING_PRIMARY_KEY",
            ),
            (Some(r#"{"other":1}"#), None, "MISSING_PRIMARY_KEY"),
            (None, Some(r#"{"name":"no pk"}"#), "MISSING_PRIMARY_KEY"),
        ];
        for (key, value, expected) in cases {
            assert_eq!(
                code(adapt(record(key, value), &pk())),
                expected,
                "key {key:?} value {value:?}"
            );
        }
    }

    #[test]
    fn key_and_value_agree_after_casting() {
        let pk = PrimaryKey(vec![("id".to_string(), Cast::ToInteger)]);
        let c = change(adapt(record(Some(r#"{"id":"7"}"#), Some(r#"{"id":7,"n":1}"#)), &pk));
        assert_eq!(c.key, obj(json!({"id": "7"})));
        let err = adapt(record(Some(r#"{"id":"x"}"#), Some(r#"{"id":7}"#)), &pk).unwrap_err();
        assert_eq!(err.code(), "CAST_FAILED", "{err}");
        let err = adapt(record(Some(r#"{"id":"8"}"#), Some(r#"{"id":7}"#)), &pk).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"KEY_MISMATCH: field "id" is "8" in the key but 7 in the value"#
        );
    }

    #[test]
    fn a_partial_row_is_accepted() {
        let c =
            change(adapt(record(Some(r#"{"customer_id":"C-1"}"#), Some(r#"{"name":"x"}"#)), &pk()));
        assert_eq!(c.after, Some(obj(json!({"name": "x"}))));
    }
}
