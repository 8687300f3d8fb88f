//! Stored BSON as the JSON of the engine's events (SPEC §4.1, §4.3), the way the reference's
//! `JSON.stringify` prints a document read from MongoDB, with field order kept:
//!
//! | BSON | JSON |
//! |---|---|
//! | int32, int64 | integer |
//! | double | integer when whole and within ±2^53 (as JavaScript prints it), else a number; NaN and ±Infinity are `null` (as `JSON.stringify`) |
//! | date | ISO-8601 UTC string with milliseconds, `2023-11-14T22:13:20.042Z` (`±YYYYYY` years outside 0..=9999) |
//! | ObjectId | its 24-digit hex string |
//! | Decimal128 | its decimal string |
//! | binary (any subtype) | standard base64 string, padded |
//! | symbol | string; undefined: `null` |
//! | regex, timestamp, code, min/max key, DBPointer | relaxed Extended JSON v2 (`{"$timestamp": ...}`) |

use mongodb::bson::{Bson, Document};
use serde_json::{Map, Number, Value};

use crate::engine::cast::format_iso;

/// The largest integer a double holds exactly, 2^53.
const MAX_SAFE_WHOLE: f64 = 9_007_199_254_740_992.0;

/// `value` as event JSON (table above).
pub fn to_json(value: &Bson) -> Value {
    match value {
        Bson::Double(d) => double(*d),
        Bson::String(s) | Bson::Symbol(s) => Value::from(s.as_str()),
        Bson::Document(d) => document(d),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::DateTime(t) => Value::from(iso_date(t.timestamp_millis())),
        Bson::ObjectId(id) => Value::from(id.to_hex()),
        Bson::Decimal128(d) => Value::from(d.to_string()),
        Bson::Binary(b) => Value::from(base64(&b.bytes)),
        other => other.clone().into_relaxed_extjson(),
    }
}

/// A document as a JSON object, in its field order.
pub fn document(doc: &Document) -> Value {
    Value::Object(doc.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

/// A stored document without its `_id`, as events show it.
pub fn document_without_id(doc: &Document) -> Value {
    let fields: Map<String, Value> =
        doc.iter().filter(|(k, _)| *k != "_id").map(|(k, v)| (k.clone(), to_json(v))).collect();
    Value::Object(fields)
}

/// Epoch milliseconds as an ISO-8601 UTC string with milliseconds.
pub fn iso_date(epoch_ms: i64) -> String {
    format_iso(epoch_ms)
}

fn double(d: f64) -> Value {
    if !d.is_finite() {
        return Value::Null;
    }
    if d.fract() == 0.0 && d.abs() <= MAX_SAFE_WHOLE {
        // Whole and exact: JavaScript prints no fraction (and `-0` as `0`).
        return Value::from(d as i64);
    }
    Number::from_f64(d).map_or(Value::Null, Value::Number)
}

/// Standard base64 (RFC 4648 §4) with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::spec::BinarySubtype;
    use mongodb::bson::{Binary, DateTime, Decimal128, Regex, Timestamp, doc};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_conversion_table() {
        let oid = ObjectId::parse_str("655400000000000000000001").unwrap();
        let cases: Vec<(Bson, Value)> = vec![
            (Bson::Int32(-7), json!(-7)),
            (Bson::Int64(9_007_199_254_740_993), json!(9_007_199_254_740_993_i64)),
            (Bson::Double(36.0), json!(36)),
            (Bson::Double(-0.0), json!(0)),
            (Bson::Double(2.5), json!(2.5)),
            (Bson::Double(1e300), json!(1e300)),
            (Bson::Double(f64::NAN), Value::Null),
            (Bson::Double(f64::INFINITY), Value::Null),
            (Bson::Double(f64::NEG_INFINITY), Value::Null),
            (Bson::String("$x".into()), json!("$x")),
            (Bson::Boolean(false), json!(false)),
            (Bson::Null, Value::Null),
            (Bson::Undefined, Value::Null),
            (Bson::Symbol("s".into()), json!("s")),
            (
                Bson::DateTime(DateTime::from_millis(1_700_000_000_042)),
                json!("2023-11-14T22:13:20.042Z"),
            ),
            (Bson::DateTime(DateTime::from_millis(-1)), json!("1969-12-31T23:59:59.999Z")),
            (Bson::ObjectId(oid), json!("655400000000000000000001")),
            (Bson::Decimal128("12.50".parse::<Decimal128>().unwrap()), json!("12.50")),
            (
                Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: b"hello".to_vec() }),
                json!("aGVsbG8="),
            ),
            (
                Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xff; 3] }),
                json!("////"),
            ),
            (
                Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }),
                json!("AQ=="),
            ),
            (Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![] }), json!("")),
            (
                Bson::Timestamp(Timestamp { time: 5, increment: 6 }),
                json!({"$timestamp": {"t": 5, "i": 6}}),
            ),
            (
                Bson::RegularExpression(Regex { pattern: "^a".into(), options: "i".into() }),
                json!({"$regularExpression": {"pattern": "^a", "options": "i"}}),
            ),
            (Bson::MaxKey, json!({"$maxKey": 1})),
            (
                Bson::Array(vec![
                    Bson::Int32(1),
                    Bson::Document(doc! { "d": DateTime::from_millis(0) }),
                ]),
                json!([1, {"d": "1970-01-01T00:00:00.000Z"}]),
            ),
        ];
        for (bson, expected) in cases {
            assert_eq!(to_json(&bson), expected, "{bson:?}");
        }
    }

    #[test]
    fn documents_keep_their_field_order_and_drop_only_the_top_level_id() {
        let stored = doc! { "z": 1_i32, "_id": ObjectId::new(), "a": { "_id": 2_i32, "b": 3_i32 }, "m": 4_i32 };
        let out = serde_json::to_string(&document_without_id(&stored)).unwrap();
        assert_eq!(out, r#"{"z":1,"a":{"_id":2,"b":3},"m":4}"#);
        let with_id = document(&doc! { "b": 1_i32, "a": 2_i32 });
        assert_eq!(serde_json::to_string(&with_id).unwrap(), r#"{"b":1,"a":2}"#);
    }
}
