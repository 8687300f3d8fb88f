//! The `basic` / `db2` adapter (docs/formats.md, "IBM IIDR"): the KCOP JSON records of IBM
//! InfoSphere Data Replication.
//!
//! - `KcopJsonFormatIntegrated`: the value is the whole row, a null value is the delete, no
//!   operation is carried (every write is an upsert), and nullable columns are Avro-JSON unions
//!   (`{"string":"aaaa"}`), unwrapped to their inner value in key and value.
//! - The audit KCOPs (`KcopMultiRowAvroLiveAuditIntegrated` rendered as JSON, and any record
//!   with an `A_ENTTYP` column): `PT`/`RR`/`UP` upsert the row, `DL`/`DR` delete it, `UB` is
//!   the before image of the `UP` that follows it ([`super::Pairing`] joins them, so an update
//!   that changes the key deletes the old row). The `A_*` audit columns are dropped unless the
//!   projection maps them; `A_CCID` or `A_TIMSTAMP` may be the stale-guard counter.
//!
//! The Kafka key is the primary key: a value that says otherwise is `KEY_MISMATCH`, except in a
//! `UB` before image, which IIDR sends under the new key of a key-changing update.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Adapted, AdapterError, BeforeImage, ChangeEvent, Image, KafkaRecord, PrimaryKey, key_object,
    parse_position, value_object,
};

/// How IIDR records are read (config `adapter.iidr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IidrOptions {
    /// Unwrap Avro-JSON unions, the way `KcopJsonFormatIntegrated` writes nullable columns
    /// (`{"string":"aaaa"}`, `{"int":5}`, `{"long":..}`, `{"float":..}`, `{"double":..}`,
    /// `{"boolean":..}`, `{"bytes":..}`), to the inner value, in key and value. Default true.
    #[serde(default = "yes")]
    pub avro_unions: bool,
    /// Audit KCOP records (with the `A_ENTTYP` entry-type column): `detect` (default) reads a
    /// record as audit when it has `A_ENTTYP`; `always` refuses a record without it; `never`
    /// reads every record as a plain row.
    #[serde(default)]
    pub audit: AuditMode,
    /// The stale-guard counter of audit records: `offset` (default, the Kafka offset), `ccid`
    /// (`A_CCID`, the commit cycle id; refresh rows, whose CCID is 0, fall back to the offset)
    /// or `timestamp` (`A_TIMSTAMP`, `YYYY-MM-DD HH:MM:SS.ffffffffffff`).
    #[serde(default)]
    pub audit_counter: AuditCounter,
}

impl Default for IidrOptions {
    fn default() -> Self {
        IidrOptions {
            avro_unions: true,
            audit: AuditMode::Detect,
            audit_counter: AuditCounter::Offset,
        }
    }
}

impl IidrOptions {
    /// True when every option has its default (the config leaves it out).
    pub fn is_default(&self) -> bool {
        *self == IidrOptions::default()
    }
}

fn yes() -> bool {
    true
}

/// When a record is read as an audit KCOP record.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AuditMode {
    /// When it has an `A_ENTTYP` column.
    #[default]
    Detect,
    /// Always: a record without `A_ENTTYP` is `MALFORMED_VALUE`.
    Always,
    /// Never: every record is a plain row.
    Never,
}

/// The counter of audit records.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AuditCounter {
    /// The Kafka offset.
    #[default]
    Offset,
    /// `A_CCID`, the commit cycle id.
    Ccid,
    /// `A_TIMSTAMP`, the journal entry's time.
    Timestamp,
}

/// The audit columns an audit KCOP can append (`audit.jcfs`), as IBM's KCOP sources name them.
const AUDIT_COLUMNS: [&str; 16] = [
    "A_ENTTYP",
    "A_CCID",
    "A_TIMSTAMP",
    "A_USER",
    "A_JOBUSER",
    "A_CNTRRN",
    "A_CODE",
    "A_JOBNO",
    "A_JOURNAL",
    "A_LIBRARY",
    "A_MEMBER",
    "A_OBJECT",
    "A_SEQNO",
    "A_SYSTEM",
    "A_UTC_TIMESTAMP",
    "_APROGRAM",
];

/// The branch names of an Avro union of primitive types in Avro's JSON encoding.
const AVRO_BRANCHES: [&str; 7] = ["boolean", "int", "long", "float", "double", "bytes", "string"];

/// The adapter of one projection: its options and the source fields it maps (audit columns
/// it maps are kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Iidr {
    options: IidrOptions,
    /// The audit columns the projection does not map: dropped from audit records.
    unmapped_audit: Vec<&'static str>,
}

impl Default for Iidr {
    fn default() -> Self {
        Iidr::new(IidrOptions::default(), &[])
    }
}

impl Iidr {
    /// The adapter for a projection mapping these source fields.
    pub fn new(options: IidrOptions, mapped: &[String]) -> Self {
        let unmapped_audit =
            AUDIT_COLUMNS.into_iter().filter(|c| !mapped.iter().any(|m| m == c)).collect();
        Iidr { options, unmapped_audit }
    }

    pub(super) fn adapt(
        &self,
        record: KafkaRecord<'_>,
        pk: &PrimaryKey,
    ) -> Result<Adapted, AdapterError> {
        let mut key = key_object(record)?;
        let mut row = value_object(record)?;
        if self.options.avro_unions {
            key.iter_mut().chain(row.iter_mut()).for_each(unwrap_unions);
        }
        let Some(row) = row else {
            let key =
                pk.extract(key.as_ref().unwrap_or(&Image::new()), "the key (value is null)")?;
            return Ok(Adapted::Change(ChangeEvent::delete(key)));
        };
        let audit = match self.options.audit {
            AuditMode::Never => false,
            AuditMode::Detect => row.contains_key("A_ENTTYP"),
            AuditMode::Always if row.contains_key("A_ENTTYP") => true,
            AuditMode::Always => {
                return Err(AdapterError::MalformedValue(
                    "no A_ENTTYP column (adapter.iidr.audit is always)".to_string(),
                ));
            }
        };
        if audit {
            return self.audit(key, row, pk);
        }
        let key = keyed(pk, key.as_ref(), &row)?;
        Ok(Adapted::Change(ChangeEvent::upsert(key, row, None)))
    }

    /// An audit KCOP record: its entry type says what it is.
    fn audit(
        &self,
        key: Option<Image>,
        mut row: Image,
        pk: &PrimaryKey,
    ) -> Result<Adapted, AdapterError> {
        let entry = text(&row, "A_ENTTYP").unwrap_or_default().trim().to_string();
        let commit = text(&row, "A_CCID").map(|c| c.trim().to_string());
        let position = self.counter(&row)?;
        for column in &self.unmapped_audit {
            row.remove(*column);
        }
        match entry.as_str() {
            "PT" | "RR" | "UP" => {
                let key = keyed(pk, key.as_ref(), &row)?;
                let change = ChangeEvent::upsert(key, row, position);
                Ok(if entry == "UP" {
                    Adapted::AfterImage { change, commit }
                } else {
                    Adapted::Change(change)
                })
            }
            "DL" | "DR" => {
                let key = keyed(pk, key.as_ref(), &row)?;
                let mut change = ChangeEvent::delete(key);
                change.before = Some(row);
                change.position = position;
                Ok(Adapted::Change(change))
            }
            // IIDR sends a key-changing update's before image under the new key: the row's
            // own primary key is the old one.
            "UB" => {
                pk.extract(&row, "the before image (UB)")?;
                Ok(Adapted::BeforeImage(BeforeImage { image: row, commit }))
            }
            other => Err(AdapterError::UnknownOperation(format!(
                "A_ENTTYP {other:?}; audit records are PT, RR, UP, UB, DL or DR"
            ))),
        }
    }

    /// The record's counter under `auditCounter` (`None`: the Kafka offset).
    fn counter(&self, row: &Image) -> Result<Option<u128>, AdapterError> {
        match self.options.audit_counter {
            AuditCounter::Offset => Ok(None),
            AuditCounter::Ccid => {
                let ccid = row.get("A_CCID").map(unwrapped).ok_or_else(|| {
                    malformed("auditCounter is ccid but the record has no A_CCID column")
                })?;
                let trimmed = match ccid {
                    Value::String(s) => Value::String(s.trim().to_string()),
                    other => other.clone(),
                };
                match parse_position(&trimmed) {
                    // Refresh rows carry CCID 0: they are written whatever the stored counter.
                    Some(0) => Ok(None),
                    Some(p) => Ok(Some(p)),
                    None => Err(malformed(&format!("A_CCID {ccid} is not an unsigned integer"))),
                }
            }
            AuditCounter::Timestamp => {
                let stamp = text(row, "A_TIMSTAMP").ok_or_else(|| {
                    malformed("auditCounter is timestamp but the record has no A_TIMSTAMP column")
                })?;
                journal_time(stamp).map(Some).ok_or_else(|| {
                    malformed(&format!(
                        "A_TIMSTAMP {stamp:?} is not YYYY-MM-DD HH:MM:SS.ffffffffffff"
                    ))
                })
            }
        }
    }
}

/// A string column (unwrapped from a union).
fn text<'a>(row: &'a Image, column: &str) -> Option<&'a str> {
    row.get(column).map(unwrapped).and_then(Value::as_str)
}

/// The inner value of an Avro-JSON union of a primitive type, or the value itself.
fn unwrapped(value: &Value) -> &Value {
    match value {
        Value::Object(map) if map.len() == 1 => match map.iter().next() {
            Some((branch, inner)) if AVRO_BRANCHES.contains(&branch.as_str()) => inner,
            _ => value,
        },
        _ => value,
    }
}

/// Replaces every union-encoded field of an image by its inner value.
fn unwrap_unions(image: &mut Image) {
    for value in image.values_mut() {
        if let Value::Object(map) = value
            && map.len() == 1
            && map.keys().all(|branch| AVRO_BRANCHES.contains(&branch.as_str()))
            && let Some((_, inner)) = std::mem::take(map).into_iter().next()
        {
            *value = inner;
        }
    }
}

/// An IIDR journal time `YYYY-MM-DD HH:MM:SS[.fraction]` (up to 12 fraction digits) as the
/// integer its digits spell with the fraction padded to 12 digits: 26 digits that order as
/// the times do.
fn journal_time(stamp: &str) -> Option<u128> {
    let b = stamp.trim().as_bytes();
    let layout = b"dddd-dd-dd dd:dd:dd";
    if b.len() < layout.len() {
        return None;
    }
    let (head, fraction) = b.split_at(layout.len());
    let fits = head.iter().zip(layout).all(|(c, l)| {
        if *l == b'd' { c.is_ascii_digit() } else { c == l || (*l == b' ' && *c == b'-') }
    });
    let fraction = match fraction {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 12 && digits.iter().all(u8::is_ascii_digit) => {
            digits
        }
        _ => return None,
    };
    if !fits {
        return None;
    }
    let digits: String = head
        .iter()
        .filter(|c| c.is_ascii_digit())
        .chain(fraction)
        .map(|c| char::from(*c))
        .chain(std::iter::repeat_n('0', 12 - fraction.len()))
        .collect();
    digits.parse().ok()
}

/// The primary key from the Kafka key when there is one (the value must agree), else from the
/// value.
fn keyed(pk: &PrimaryKey, key: Option<&Image>, row: &Image) -> Result<Image, AdapterError> {
    match key {
        Some(key) => {
            let from_key = pk.extract(key, "the key")?;
            check_agreement(pk, &from_key, row)?;
            Ok(from_key)
        }
        None => pk.extract(row, "the value (key is empty)"),
    }
}

/// Where the value also carries a primary-key field, its cast value must equal the key's.
pub(super) fn check_agreement(
    pk: &PrimaryKey,
    key: &Image,
    row: &Image,
) -> Result<(), AdapterError> {
    for (field, cast) in &pk.0 {
        let (Some(in_key), Some(in_value)) = (key.get(field), row.get(field)) else { continue };
        if in_key == in_value {
            continue; // the common case, without casting
        }
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

fn malformed(reason: &str) -> AdapterError {
    AdapterError::MalformedValue(reason.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Op;
    use super::super::fixture::{change, code, obj, pk, record};
    use super::*;
    use crate::engine::cast::Cast;

    const B1: &str = r#"{"customer_id":"C-1","name":"Ada","age":"36","signup_at":"2023-01-15","vip":"true","shoe_size":44}"#;

    fn adapt(record: KafkaRecord<'_>, pk: &PrimaryKey) -> Result<Adapted, AdapterError> {
        Iidr::default().adapt(record, pk)
    }

    fn with(
        options: IidrOptions,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Result<Adapted, AdapterError> {
        Iidr::new(options, &[]).adapt(record(key, value), &pk())
    }

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
        // docs/vectors.md #11.
        let value = r#"{"customer_id":"C-3","name":"Bo"}"#;
        for key in [None, Some("")] {
            let c = change(adapt(record(key, Some(value)), &pk()));
            assert_eq!((c.op, c.key), (Op::Upsert, obj(json!({"customer_id": "C-3"}))));
        }
    }

    #[test]
    fn edge_cases_are_message_errors() {
        let cases = [
            // docs/vectors.md #12: no key, null value.
            (Some(""), None, "MISSING_PRIMARY_KEY"),
            (None, None, "MISSING_PRIMARY_KEY"),
            (Some("C-1"), Some(B1), "MALFORMED_KEY"),
            (Some("[1]"), Some(B1), "MALFORMED_KEY"),
            (Some("\"C-1\""), Some(B1), "MALFORMED_KEY"),
            // docs/vectors.md #13: truncated JSON.
            (Some(r#"{"customer_id":"C-1"}"#), Some(r#"{"customer_id":"#), "MALFORMED_VALUE"),
            (Some(r#"{"customer_id":"C-1"}"#), Some("[1]"), "MALFORMED_VALUE"),
            (Some(r#"{"customer_id":"C-1"}"#), Some("\"x\""), "MALFORMED_VALUE"),
            // docs/vectors.md #14.
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

    /// Records printed by a console consumer from `KcopJsonFormatIntegrated` in IBM's
    /// developerWorks article "InfoSphere Data Replication CDC for Kafka" (DB2 table with `ID`
    /// and a nullable CHAR(10) `C2`): nullable columns are Avro-JSON unions, non-nullable ones
    /// plain; a delete is the key with a null value; an update of ID 1 to 9 is a tombstone of
    /// the old key followed by the new row.
    #[test]
    fn kcop_json_format_integrated_unions_are_unwrapped_in_key_and_value() {
        let pk = PrimaryKey(vec![("ID".to_string(), Cast::ToString)]);
        let c = change(adapt(
            record(Some(r#"{"ID":"1"}"#), Some(r#"{"ID":"1","C2":{"string":"aaaa      "}}"#)),
            &pk,
        ));
        assert_eq!(c.after, Some(obj(json!({"ID": "1", "C2": "aaaa      "}))));
        let c = change(
            adapt(record(Some(r#"{"ID":"1"}"#), Some("null")), &pk)
                .or_else(|_| adapt(record(Some(r#"{"ID":"1"}"#), None), &pk)),
        );
        assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"ID": "1"}))));
        // Every primitive branch, a null union and a key that is itself a union.
        let c = change(adapt(
            record(
                Some(r#"{"ID":{"string":"9"}}"#),
                Some(
                    r#"{"ID":"9","I":{"int":5},"L":{"long":12345678901},"F":{"float":1.5},"D":{"double":2.25},"B":{"boolean":true},"Y":{"bytes":"\u00ff"},"N":null,"O":{"a":1},"T":{"string":"x","int":1}}"#,
                ),
            ),
            &pk,
        ));
        assert_eq!(c.key, obj(json!({"ID": "9"})));
        assert_eq!(
            c.after,
            Some(obj(
                json!({"ID": "9", "I": 5, "L": 12345678901_i64, "F": 1.5, "D": 2.25, "B": true, "Y": "\u{ff}", "N": null, "O": {"a": 1}, "T": {"string": "x", "int": 1}})
            ))
        );
        // Turned off, a union stays what it is (and the key then disagrees with the value).
        let off = IidrOptions { avro_unions: false, ..IidrOptions::default() };
        let c = change(with(
            off.clone(),
            None,
            Some(r#"{"customer_id":"C-1","name":{"string":"Ada"}}"#),
        ));
        assert_eq!(c.after.unwrap()["name"], json!({"string": "Ada"}));
        assert_eq!(
            code(with(
                off,
                Some(r#"{"customer_id":{"string":"C-1"}}"#),
                Some(r#"{"customer_id":"C-1"}"#)
            )),
            "KEY_MISMATCH"
        );
    }

    /// Records of `KcopMultiRowAvroLiveAuditIntegrated` as the same article prints them
    /// (`audit.jcfs=ENTTYP,CCID,TIMSTAMP`): an insert (PT), an update of ID 3 to 9 as a UB
    /// before image and a UP after image of one commit, and a delete (DL) with the before image.
    #[test]
    fn audit_records_follow_their_entry_type() {
        let pk = PrimaryKey(vec![("ID".to_string(), Cast::ToString)]);
        let audit =
            |key: Option<&str>, value: &str| Iidr::default().adapt(record(key, Some(value)), &pk);
        let pt = r#"{"ID":"3","C2":{"string":"dddd      "},"A_ENTTYP":"PT","A_CCID":"116489715","A_TIMSTAMP":"2018-01-01 22:32:07.000000000000"}"#;
        let c = change(audit(None, pt));
        assert_eq!((c.op, c.position), (Op::Upsert, None));
        assert_eq!(
            c.after,
            Some(obj(json!({"ID": "3", "C2": "dddd      "}))),
            "audit columns dropped"
        );
        let ub = r#"{"ID":"3","C2":{"string":"dddd      "},"A_ENTTYP":"UB","A_CCID":"116489854","A_TIMSTAMP":"2018-01-01 22:34:49.000000000000"}"#;
        // The before image comes under the new key (ID 9): no mismatch for a UB.
        match audit(Some(r#"{"ID":"9"}"#), ub) {
            Ok(Adapted::BeforeImage(b)) => {
                assert_eq!(b.image, obj(json!({"ID": "3", "C2": "dddd      "})));
                assert_eq!(b.commit.as_deref(), Some("116489854"));
            }
            other => panic!("expected a before image, got {other:?}"),
        }
        let up = r#"{"ID":"9","C2":{"string":"dddd      "},"A_ENTTYP":"UP","A_CCID":"116489854","A_TIMSTAMP":"2018-01-01 22:34:49.000000000000"}"#;
        match audit(Some(r#"{"ID":"9"}"#), up) {
            Ok(Adapted::AfterImage { change, commit }) => {
                assert_eq!((change.op, change.key), (Op::Upsert, obj(json!({"ID": "9"}))));
                assert_eq!(commit.as_deref(), Some("116489854"));
            }
            other => panic!("expected an after image, got {other:?}"),
        }
        let dl = r#"{"ID":"1","C2":{"string":"a         "},"A_ENTTYP":"DL","A_CCID":"116498161","A_TIMSTAMP":"2018-01-02 01:11:17.000000000000"}"#;
        let c = change(audit(None, dl));
        assert_eq!((c.op, c.key.clone(), c.after), (Op::Delete, obj(json!({"ID": "1"})), None));
        assert_eq!(c.before, Some(obj(json!({"ID": "1", "C2": "a         "}))));
        for (entry, op) in [("RR", Op::Upsert), ("DR", Op::Delete)] {
            let value = format!(r#"{{"ID":"5","A_ENTTYP":"{entry}"}}"#);
            assert_eq!(change(audit(None, &value)).op, op, "{entry}");
        }
        assert_eq!(code(audit(None, r#"{"ID":"5","A_ENTTYP":"UR"}"#)), "UNKNOWN_OPERATION");
        assert_eq!(code(audit(None, r#"{"C2":"x","A_ENTTYP":"UB"}"#)), "MISSING_PRIMARY_KEY");
        assert_eq!(
            code(audit(Some(r#"{"ID":"4"}"#), r#"{"ID":"5","A_ENTTYP":"PT"}"#)),
            "KEY_MISMATCH"
        );
    }

    #[test]
    fn mapped_audit_columns_are_kept() {
        let iidr = Iidr::new(IidrOptions::default(), &["A_USER".to_string()]);
        let c = change(iidr.adapt(
            record(
                None,
                Some(
                    r#"{"customer_id":"C-1","A_ENTTYP":"PT","A_USER":"SOME_USER","A_JOBUSER":"="}"#,
                ),
            ),
            &pk(),
        ));
        assert_eq!(c.after, Some(obj(json!({"customer_id": "C-1", "A_USER": "SOME_USER"}))));
    }

    #[test]
    fn audit_mode_and_counters() {
        let row = r#"{"customer_id":"C-1","A_ENTTYP":"PT","A_CCID":"116489715","A_TIMSTAMP":"2018-01-01 22:32:07.123456789012"}"#;
        let never = IidrOptions { audit: AuditMode::Never, ..IidrOptions::default() };
        let c = change(with(never, None, Some(row)));
        assert!(c.after.unwrap().contains_key("A_ENTTYP"), "never: a plain row");
        let always = IidrOptions { audit: AuditMode::Always, ..IidrOptions::default() };
        assert_eq!(code(with(always, None, Some(r#"{"customer_id":"C-1"}"#))), "MALFORMED_VALUE");
        let ccid = IidrOptions { audit_counter: AuditCounter::Ccid, ..IidrOptions::default() };
        assert_eq!(change(with(ccid.clone(), None, Some(row))).position, Some(116_489_715));
        // A refresh row (CCID 0) is written whatever the stored counter: the offset.
        let refresh = r#"{"customer_id":"C-1","A_ENTTYP":"RR","A_CCID":"0"}"#;
        assert_eq!(change(with(ccid.clone(), None, Some(refresh))).position, None);
        assert_eq!(
            code(with(ccid.clone(), None, Some(r#"{"customer_id":"C-1","A_ENTTYP":"PT"}"#))),
            "MALFORMED_VALUE"
        );
        assert_eq!(
            code(with(ccid, None, Some(r#"{"customer_id":"C-1","A_ENTTYP":"PT","A_CCID":"x1"}"#))),
            "MALFORMED_VALUE"
        );
        let stamp =
            IidrOptions { audit_counter: AuditCounter::Timestamp, ..IidrOptions::default() };
        assert_eq!(
            change(with(stamp.clone(), None, Some(row))).position,
            Some(20180101223207123456789012)
        );
        assert_eq!(
            code(with(
                stamp,
                None,
                Some(r#"{"customer_id":"C-1","A_ENTTYP":"PT","A_TIMSTAMP":"yesterday"}"#)
            )),
            "MALFORMED_VALUE"
        );
    }

    #[test]
    fn journal_times_order_as_their_digits() {
        assert_eq!(
            journal_time("2018-01-01 22:32:07.000000000000"),
            Some(20180101223207000000000000)
        );
        assert_eq!(journal_time("2018-01-01 22:32:07.5"), Some(20180101223207500000000000));
        assert_eq!(journal_time("2018-01-01 22:32:07"), Some(20180101223207000000000000));
        assert_eq!(journal_time("2018-01-01-22.32.07.000000"), None);
        assert_eq!(journal_time("2018-01-01 22:32:07.0000000000001"), None);
        assert_eq!(journal_time("2018-01-01"), None);
        assert!(
            journal_time("2018-01-01 22:32:07.1")
                < journal_time("2018-01-01 22:32:07.000000000002").map(|t| t + 100_000_000_000)
        );
        assert!(
            journal_time("2017-12-31 23:59:59.999999999999") < journal_time("2018-01-01 00:00:00")
        );
    }
}
