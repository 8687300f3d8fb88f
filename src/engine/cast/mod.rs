//! The built-in cast functions of SPEC §3.4: pure `(value) -> BSON value` conversions applied
//! to each projection field, under both their RTU ids (`defaultCastToString`) and their
//! Projection Storer ids (`castToString`). `null` casts to `null` everywhere; an input the
//! table lists as invalid is a [`CastError`], which the writer turns into `null` or a message
//! error depending on the validation mode (§3.6).

mod date;
mod number;

use std::fmt;
use std::str::FromStr;

use mongodb::bson::{Bson, DateTime, Document};
use serde_json::Value;

pub use date::{format_iso, write_iso};
pub use number::{format_js_number, parse_js_number};

/// A built-in cast function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cast {
    /// Any value, unchanged.
    Identity,
    /// A string; numbers as JavaScript prints them, objects and arrays as compact JSON.
    ToString,
    /// A 64-bit integer, truncated toward zero.
    ToInteger,
    /// A double.
    ToFloat,
    /// An ISO-8601 UTC string with milliseconds, from epoch ms or a date string.
    UnixTimestampToIsoString,
    /// A boolean from exactly `"true"` / `"false"` (or a boolean).
    StringToBoolean,
    /// A BSON Date from epoch ms or an ISO-8601 string.
    ToDate,
    /// A document, from an object or a string holding a JSON object.
    ToObject,
    /// An array of documents, from such an array or a string holding one.
    ToArrayOfObject,
}

/// Every cast with its RTU id and its Projection Storer id.
const IDS: [(Cast, &str, &str); 9] = [
    (Cast::Identity, "defaultIdentity", "identity"),
    (Cast::ToString, "defaultCastToString", "castToString"),
    (Cast::ToInteger, "defaultCastToInteger", "castToInteger"),
    (Cast::ToFloat, "defaultCastToFloat", "castToFloat"),
    (
        Cast::UnixTimestampToIsoString,
        "defaultCastUnitTimestampToISOString",
        "castUnixTimestampToISOString",
    ),
    (Cast::StringToBoolean, "defaultCastStringToBoolean", "castStringToBoolean"),
    (Cast::ToDate, "defaultCastToDate", "castToDate"),
    (Cast::ToObject, "defaultCastToObject", "castToObject"),
    (Cast::ToArrayOfObject, "defaultCastToArrayOfObject", "castToArrayOfObject"),
];

/// Why a cast could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CastError {
    /// The id names no built-in cast.
    #[error("unknown cast function {id:?}; built-in casts are: {}", Cast::all_ids().join(", "))]
    UnknownId {
        /// The id that was given.
        id: String,
    },
    /// The input is one the cast refuses.
    #[error("{cast} cannot cast {input}: {reason}")]
    Refused {
        /// The cast that refused.
        cast: Cast,
        /// The input, shortened for messages.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Cast {
    /// Every accepted id: RTU ids first, then Projection Storer ids.
    pub fn all_ids() -> Vec<&'static str> {
        IDS.iter().map(|(_, rtu, _)| *rtu).chain(IDS.iter().map(|(_, _, ps)| *ps)).collect()
    }

    /// The Projection Storer id (`castToString`), used in messages.
    pub fn id(self) -> &'static str {
        IDS.iter().find(|(c, _, _)| *c == self).map_or("identity", |(_, _, ps)| ps)
    }

    /// Applies the cast to one field value.
    pub fn apply(self, value: &Value) -> Result<Bson, CastError> {
        if value.is_null() {
            return Ok(Bson::Null);
        }
        let refuse = |reason| Err(CastError::Refused { cast: self, input: preview(value), reason });
        match self {
            Cast::Identity => Ok(json_to_bson(value)),
            Cast::ToString => Ok(Bson::String(to_js_string(value))),
            Cast::ToInteger => to_integer(value).map(Bson::Int64).or_else(refuse),
            Cast::ToFloat => to_float(value).map(Bson::Double).or_else(refuse),
            Cast::UnixTimestampToIsoString => to_epoch_ms(value, true)
                .map(|ms| Bson::String(date::format_iso(ms)))
                .or_else(refuse),
            Cast::StringToBoolean => match value {
                Value::Bool(b) => Ok(Bson::Boolean(*b)),
                Value::String(s) if s == "true" => Ok(Bson::Boolean(true)),
                Value::String(s) if s == "false" => Ok(Bson::Boolean(false)),
                _ => refuse("only \"true\" and \"false\" are booleans"),
            },
            Cast::ToDate => to_epoch_ms(value, false)
                .map(|ms| Bson::DateTime(DateTime::from_millis(ms)))
                .or_else(refuse),
            Cast::ToObject => match parsed(value) {
                Some(object @ Value::Object(_)) => Ok(json_to_bson(&object)),
                _ => refuse("not an object, nor a string holding a JSON object"),
            },
            Cast::ToArrayOfObject => match parsed(value) {
                Some(Value::Array(items)) if items.iter().all(Value::is_object) => {
                    Ok(json_to_bson(&Value::Array(items)))
                }
                _ => refuse("not an array of objects, nor a string holding one"),
            },
        }
    }
}

impl FromStr for Cast {
    type Err = CastError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        IDS.iter()
            .find(|(_, rtu, ps)| *rtu == id || *ps == id)
            .map(|(cast, _, _)| *cast)
            .ok_or_else(|| CastError::UnknownId { id: id.to_string() })
    }
}

impl fmt::Display for Cast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The value itself, or the JSON a string holds.
fn parsed(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) => serde_json::from_str(s).ok(),
        other => Some(other.clone()),
    }
}

/// A short rendering of an input for error messages (at most 64 characters).
fn preview(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn to_js_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format_js_number(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// 2^63: the first magnitude an i64 cannot hold.
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

fn to_integer(value: &Value) -> Result<i64, &'static str> {
    match value {
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) if n.is_f64() => truncate(f),
            _ => Err("out of the 64-bit integer range"),
        },
        // Plain integer literals are read exactly, beyond f64's 53 bits.
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(i),
            Err(_) => truncate(parse_js_number(s).ok_or("not a number")?),
        },
        _ => Err("objects and arrays are not numbers"),
    }
}

fn truncate(f: f64) -> Result<i64, &'static str> {
    let t = f.trunc();
    if !t.is_finite() || t.abs() >= I64_LIMIT {
        return Err("out of the 64-bit integer range");
    }
    Ok(t as i64)
}

fn to_float(value: &Value) -> Result<f64, &'static str> {
    let f = match value {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().ok_or("not a number")?,
        Value::String(s) => parse_js_number(s).ok_or("not a number")?,
        _ => return Err("objects and arrays are not numbers"),
    };
    if f.is_finite() { Ok(f) } else { Err("infinite") }
}

/// Epoch ms from a number or an ISO string; digit strings count as epoch ms only when
/// `digits_are_ms` (castUnixTimestampToISOString), never for castToDate.
fn to_epoch_ms(value: &Value, digits_are_ms: bool) -> Result<i64, &'static str> {
    let ms = match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.is_finite() && f.abs() <= date::MAX_EPOCH_MS as f64 => {
                f.trunc() as i64
            }
            _ => return Err("outside the date range"),
        },
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            if !digits_are_ms {
                return Err("a digit string is not a date (give a number for epoch ms)");
            }
            s.parse::<i64>().map_err(|_| "outside the date range")?
        }
        Value::String(s) => date::parse_iso(s).ok_or("not an ISO-8601 date")?,
        _ => return Err("only numbers (epoch ms) and ISO-8601 strings are dates"),
    };
    if ms.abs() > date::MAX_EPOCH_MS {
        return Err("outside the date range");
    }
    Ok(ms)
}

/// JSON to BSON as data (no extended-JSON interpretation): integers as int64, other numbers as
/// double, objects as documents in their order.
pub fn json_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            (None, Some(f)) => Bson::Double(f),
            (None, None) => Bson::String(n.to_string()),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(
            map.iter().map(|(k, v)| (k.clone(), json_to_bson(v))).collect::<Document>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{bson, doc};
    use serde_json::json;

    use super::*;

    /// (cast, input, expected output; None = refused)
    type Case = (Cast, Value, Option<Bson>);

    fn run(cases: Vec<Case>) {
        for (cast, input, expected) in cases {
            let got = cast.apply(&input);
            match expected {
                Some(want) => assert_eq!(got, Ok(want), "{cast}({input})"),
                None => assert!(
                    matches!(got, Err(CastError::Refused { cast: c, .. }) if c == cast),
                    "{cast}({input}) should be refused, got {got:?}"
                ),
            }
        }
    }

    fn date(ms: i64) -> Option<Bson> {
        Some(Bson::DateTime(DateTime::from_millis(ms)))
    }

    #[test]
    fn null_is_null_for_every_cast() {
        for (cast, _, _) in IDS {
            assert_eq!(cast.apply(&Value::Null), Ok(Bson::Null), "{cast}");
        }
    }

    #[test]
    fn both_id_families_are_accepted_and_unknown_ids_list_the_valid_ones() {
        for (cast, rtu, ps) in IDS {
            assert_eq!(rtu.parse::<Cast>(), Ok(cast));
            assert_eq!(ps.parse::<Cast>(), Ok(cast));
            assert_eq!(cast.to_string(), ps);
        }
        let err = "castToInt".parse::<Cast>().unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"castToInt\"") && message.contains("castToInteger"),
            "{message}"
        );
        assert!(message.contains("defaultCastUnitTimestampToISOString"), "{message}");
    }

    #[test]
    fn identity_keeps_values_as_data() {
        run(vec![
            (Cast::Identity, json!("x"), Some(bson!("x"))),
            (Cast::Identity, json!(12), Some(Bson::Int64(12))),
            (Cast::Identity, json!(1.5), Some(Bson::Double(1.5))),
            (
                Cast::Identity,
                json!({"$date": 1, "b": [true]}),
                Some(bson!({"$date": 1_i64, "b": [true]})),
            ),
        ]);
    }

    #[test]
    fn to_string() {
        run(vec![
            (Cast::ToString, json!("Ada"), Some(bson!("Ada"))),
            (Cast::ToString, json!(12), Some(bson!("12"))),
            (Cast::ToString, json!(12.5), Some(bson!("12.5"))),
            (Cast::ToString, json!(1e21), Some(bson!("1e+21"))),
            (Cast::ToString, json!(-0.0), Some(bson!("0"))),
            (Cast::ToString, json!(true), Some(bson!("true"))),
            (Cast::ToString, json!(false), Some(bson!("false"))),
            (Cast::ToString, json!({"a": 1}), Some(bson!("{\"a\":1}"))),
            (
                Cast::ToString,
                json!({"b": 1, "a": [1, "x"]}),
                Some(bson!("{\"b\":1,\"a\":[1,\"x\"]}")),
            ),
            (Cast::ToString, json!(9_007_199_254_740_993_u64), Some(bson!("9007199254740993"))),
        ]);
    }

    #[test]
    fn to_integer() {
        let c = Cast::ToInteger;
        let int = |i: i64| Some(Bson::Int64(i));
        run(vec![
            (c, json!(42), int(42)),
            (c, json!(42.9), int(42)),
            (c, json!(-42.9), int(-42)),
            (c, json!("42"), int(42)),
            (c, json!(" 42.9 "), int(42)),
            (c, json!("36"), int(36)),
            (c, json!("1e3"), int(1000)),
            (c, json!("0x1A"), int(26)),
            (c, json!("0b11"), int(3)),
            (c, json!(""), int(0)),
            (c, json!("   "), int(0)),
            (c, json!(true), int(1)),
            (c, json!(false), int(0)),
            (c, json!("9223372036854775807"), int(i64::MAX)),
            (c, json!(-9_223_372_036_854_775_807_i64), int(-i64::MAX)),
            (c, json!("abc"), None),
            (c, json!("12abc"), None),
            (c, json!("1,5"), None),
            (c, json!("-0x1A"), None),
            (c, json!("Infinity"), None),
            (c, json!("NaN"), None),
            (c, json!({}), None),
            (c, json!([5]), None),
            (c, json!([]), None),
            (c, json!(9.3e18), None),
            (c, json!(1e21), None),
            (c, json!(9_223_372_036_854_775_808_u64), None),
            (c, json!("1e400"), None),
        ]);
    }

    #[test]
    fn to_float() {
        let c = Cast::ToFloat;
        let f = |v: f64| Some(Bson::Double(v));
        run(vec![
            (c, json!("3.25"), f(3.25)),
            (c, json!(" 2.5 "), f(2.5)),
            (c, json!(""), f(0.0)),
            (c, json!(42), f(42.0)),
            (c, json!(-0.5), f(-0.5)),
            (c, json!("0x10"), f(16.0)),
            (c, json!(true), f(1.0)),
            (c, json!("1e400"), None),
            (c, json!("-Infinity"), None),
            (c, json!("abc"), None),
            (c, json!([1.5]), None),
            (c, json!({"v": 1}), None),
        ]);
    }

    #[test]
    fn unix_timestamp_to_iso_string() {
        let c = Cast::UnixTimestampToIsoString;
        let s = |v: &str| Some(Bson::String(v.to_string()));
        run(vec![
            (c, json!(1_695_141_357_284_i64), s("2023-09-19T16:35:57.284Z")),
            (c, json!("2023-09-19"), s("2023-09-19T00:00:00.000Z")),
            (c, json!("2023-09-19T18:35:57.284+02:00"), s("2023-09-19T16:35:57.284Z")),
            (c, json!("1695141357284"), s("2023-09-19T16:35:57.284Z")),
            (c, json!(0), s("1970-01-01T00:00:00.000Z")),
            (c, json!(1_695_141_357_284.9), s("2023-09-19T16:35:57.284Z")),
            (c, json!("not a date"), None),
            (c, json!(true), None),
            (c, json!({"ms": 1}), None),
            (c, json!(8_640_000_000_000_001_i64), None),
            (c, json!(-9e15), None),
            (c, json!("2023-02-30"), None),
        ]);
    }

    #[test]
    fn string_to_boolean() {
        let c = Cast::StringToBoolean;
        run(vec![
            (c, json!("true"), Some(Bson::Boolean(true))),
            (c, json!("false"), Some(Bson::Boolean(false))),
            (c, json!(true), Some(Bson::Boolean(true))),
            (c, json!(false), Some(Bson::Boolean(false))),
            (c, json!("TRUE"), None),
            (c, json!("1"), None),
            (c, json!("yes"), None),
            (c, json!(" true"), None),
            (c, json!(1), None),
            (c, json!(0), None),
        ]);
    }

    #[test]
    fn to_date() {
        let c = Cast::ToDate;
        run(vec![
            (c, json!("2023-01-15"), date(1_673_740_800_000)),
            (c, json!("2023-11-14T22:13:20.000Z"), date(1_700_000_000_000)),
            (c, json!("2023-11-14T22:13:20"), date(1_700_000_000_000)),
            (c, json!(1_700_000_000_000_i64), date(1_700_000_000_000)),
            (c, json!(-86_400_000), date(-86_400_000)),
            (c, json!("1700000000000"), None),
            (c, json!("2024-02-30"), None),
            (c, json!("15/01/2023"), None),
            (c, json!(""), None),
            (c, json!(true), None),
            (c, json!({"$date": 1}), None),
            (c, json!(9e15), None),
        ]);
    }

    #[test]
    fn to_object() {
        let c = Cast::ToObject;
        run(vec![
            (c, json!({"a": 1}), Some(Bson::Document(doc! {"a": 1_i64}))),
            (c, json!("{\"a\":{\"b\":\"x\"}}"), Some(Bson::Document(doc! {"a": {"b": "x"}}))),
            (c, json!({}), Some(Bson::Document(doc! {}))),
            (c, json!("null"), None),
            (c, json!("[1]"), None),
            (c, json!([{"a": 1}]), None),
            (c, json!("{not json"), None),
            (c, json!(5), None),
            (c, json!(true), None),
        ]);
    }

    #[test]
    fn to_array_of_object() {
        let c = Cast::ToArrayOfObject;
        run(vec![
            (c, json!([{"a": 1}, {}]), Some(bson!([{"a": 1_i64}, {}]))),
            (c, json!("[{\"a\":1}]"), Some(bson!([{"a": 1_i64}]))),
            (c, json!([]), Some(bson!([]))),
            (c, json!([1]), None),
            (c, json!([{}, 2]), None),
            (c, json!({"a": 1}), None),
            (c, json!("[1]"), None),
            (c, json!("x"), None),
        ]);
    }

    #[test]
    fn spec_test_vector_17_lenient_casts() {
        // SPEC §10 #17: age "42.9" -> 42, signup_at "2024-02-30" refused, vip "TRUE" refused,
        // name 12.5 -> "12.5".
        assert_eq!(Cast::ToInteger.apply(&json!("42.9")), Ok(Bson::Int64(42)));
        assert!(Cast::ToDate.apply(&json!("2024-02-30")).is_err());
        assert!(Cast::StringToBoolean.apply(&json!("TRUE")).is_err());
        assert_eq!(Cast::ToString.apply(&json!(12.5)), Ok(bson!("12.5")));
    }

    #[test]
    fn refusals_name_the_cast_and_the_input() {
        let err = Cast::ToInteger.apply(&json!("abc")).unwrap_err();
        assert_eq!(err.to_string(), "castToInteger cannot cast \"abc\": not a number");
        let long = json!("x".repeat(200));
        let message = Cast::ToDate.apply(&long).unwrap_err().to_string();
        assert!(message.len() < 140 && message.contains('…'), "{message}");
    }
}
