//! Stored BSON as the JSON of the engine's events (docs/outputs.md#pr-update-events, docs/outputs.md#sv-trigger-events), the way the reference's
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
//!
//! [`to_json`] builds a `serde_json::Value`; the `write_*` functions append the same JSON text
//! straight to a byte buffer (no tree, no per-field allocation), which is what the events use.

use mongodb::bson::{Bson, Document};
use serde_json::{Map, Number, Value};

use crate::engine::cast::{format_iso, write_iso};

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
    if let Some(whole) = as_whole(d) {
        return Value::from(whole);
    }
    Number::from_f64(d).map_or(Value::Null, Value::Number)
}

/// A whole and exact double as JavaScript prints it: an integer, `-0` as `0`.
fn as_whole(d: f64) -> Option<i64> {
    (d.fract() == 0.0 && d.abs() <= MAX_SAFE_WHOLE).then_some(d as i64)
}

/// What appending JSON returns: serde_json's errors (appending to a buffer itself cannot fail).
pub type Written = Result<(), serde_json::Error>;

/// Appends `value` as event JSON: the bytes `serde_json::to_vec(&to_json(value))` gives.
pub fn write_value(value: &Bson, out: &mut Vec<u8>) -> Written {
    match value {
        Bson::Double(d) => write_double(*d, out),
        Bson::String(s) | Bson::Symbol(s) => write_str(s, out),
        Bson::Document(d) => write_document(d, false, out),
        Bson::Array(items) => write_array(items, out),
        Bson::Boolean(b) => serde_json::to_writer(out, b),
        Bson::Null | Bson::Undefined => serde_json::to_writer(out, &()),
        Bson::Int32(i) => serde_json::to_writer(out, i),
        Bson::Int64(i) => serde_json::to_writer(out, i),
        Bson::DateTime(t) => {
            write_date(t.timestamp_millis(), out);
            Ok(())
        }
        Bson::ObjectId(id) => {
            quoted(out, |out| hex(&id.bytes(), out));
            Ok(())
        }
        Bson::Decimal128(d) => write_str(&d.to_string(), out),
        Bson::Binary(b) => {
            quoted(out, |out| base64_into(&b.bytes, out));
            Ok(())
        }
        other => serde_json::to_writer(out, &other.clone().into_relaxed_extjson()),
    }
}

/// Appends `doc` as a JSON object in its field order, without its top-level `_id` when
/// `skip_id` (as events show stored documents).
pub fn write_document(doc: &Document, skip_id: bool, out: &mut Vec<u8>) -> Written {
    let mut object = Object::open(out);
    for (key, value) in doc {
        if !(skip_id && key == "_id") {
            write_value(value, object.key(key)?)?;
        }
    }
    object.close();
    Ok(())
}

/// Appends a stored document without `_id`, or `null` when there is none.
pub fn write_stored(doc: Option<&Document>, out: &mut Vec<u8>) -> Written {
    match doc {
        Some(doc) => write_document(doc, true, out),
        None => serde_json::to_writer(out, &()),
    }
}

/// Appends `s` as a JSON string.
pub fn write_str(s: &str, out: &mut Vec<u8>) -> Written {
    serde_json::to_writer(out, s)
}

/// Appends epoch milliseconds as the ISO-8601 string of [`iso_date`].
pub fn write_date(epoch_ms: i64, out: &mut Vec<u8>) {
    quoted(out, |out| write_iso(epoch_ms, out));
}

fn write_array(items: &[Bson], out: &mut Vec<u8>) -> Written {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(item, out)?;
    }
    out.push(b']');
    Ok(())
}

fn write_double(d: f64, out: &mut Vec<u8>) -> Written {
    match as_whole(d) {
        Some(whole) => serde_json::to_writer(out, &whole),
        // serde_json prints NaN and ±Infinity as `null`.
        None => serde_json::to_writer(out, &d),
    }
}

/// Text that needs no escaping, between quotes.
fn quoted(out: &mut Vec<u8>, text: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    text(out);
    out.push(b'"');
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
}

/// A JSON object written field by field: [`Object::key`] writes a key and hands back the
/// buffer for its value.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Starts an object.
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes `"key":` (after a comma unless first); the caller then appends the value.
    pub fn key(&mut self, key: &str) -> Result<&mut Vec<u8>, serde_json::Error> {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        write_str(key, self.out)?;
        self.out.push(b':');
        Ok(self.out)
    }

    /// Ends the object.
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// Standard base64 (RFC 4648 §4) with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    base64_into(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

fn base64_into(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
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

    #[test]
    fn the_direct_writer_prints_what_to_json_serialises() {
        let mut every_type = doc! {
            "_id": ObjectId::parse_str("655400000000000000000001").unwrap(),
            "string": "quote \" backslash \\ nl \n tab \t ctl \u{1} \u{1f} del \u{7f} é ☃ 𝄞 </",
            "empty": "", "int32": i32::MIN, "int64": i64::MAX, "neg": -9_007_199_254_740_993_i64,
            "whole": 36.0, "neg_zero": -0.0, "frac": 2.5, "tiny": 5e-324, "big": 1e300,
            "edge": 9_007_199_254_740_992.0, "past": 9_007_199_254_740_994.0,
            "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY,
            "bool": true, "false": false, "null": Bson::Null, "undefined": Bson::Undefined,
        };
        every_type.extend(doc! {
            "date": DateTime::from_millis(1_700_000_000_042),
            "before_1970": DateTime::from_millis(-1),
            "far": DateTime::from_millis(8_640_000_000_000_000),
            "farther": DateTime::from_millis(-62_198_755_200_000),
            "decimal": "-12.50E+3".parse::<Decimal128>().unwrap(),
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: b"hello".to_vec() },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xfb; 16] },
            "regex": Regex { pattern: "^a\"".into(), options: "i".into() },
            "timestamp": Timestamp { time: 5, increment: 6 },
            "code": Bson::JavaScriptCode("f()".into()),
            "scoped": Bson::JavaScriptCodeWithScope(mongodb::bson::JavaScriptCodeWithScope {
                code: "g()".into(), scope: doc! { "x": 1_i32 },
            }),
            "symbol": Bson::Symbol("s".into()), "max": Bson::MaxKey, "min": Bson::MinKey,
            "nested": {
                "_id": 2_i32, "list": [1_i32, "two", { "three": [] }, Bson::Null, [[2.5]]],
                "empty": {}, "deeper": { "d": DateTime::from_millis(0), "k\"ey": 1.5 },
            },
            "array": [],
        });
        let cases = [Document::new(), doc! { "_id": 1_i32 }, every_type];
        for doc in &cases {
            let mut ours = Vec::new();
            write_document(doc, false, &mut ours).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&document(doc)).unwrap()
            );
            let mut without_id = Vec::new();
            write_stored(Some(doc), &mut without_id).unwrap();
            assert_eq!(without_id, serde_json::to_vec(&document_without_id(doc)).unwrap());
            for value in doc.values() {
                let mut one = Vec::new();
                write_value(value, &mut one).unwrap();
                assert_eq!(one, serde_json::to_vec(&to_json(value)).unwrap(), "{value:?}");
            }
        }
        let mut null = Vec::new();
        write_stored(None, &mut null).unwrap();
        assert_eq!(null, b"null");
    }
}
