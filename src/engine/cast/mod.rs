//! The built-in cast functions of docs/writes.md#cast-functions: pure `(value) -> BSON value` conversions applied
//! to each projection field, under both their RTU ids (`defaultCastToString`) and their
//! Projection Storer ids (`castToString`). `null` casts to `null` everywhere; an input the
//! table lists as invalid is a [`CastError`], which the writer turns into `null` or a message
//! error depending on the validation mode (docs/writes.md#validation-modes).

mod date;
pub(crate) mod debezium;
mod number;

use std::fmt;
use std::str::FromStr;

use mongodb::bson::{Bson, DateTime, Decimal128, Document};
use serde_json::Value;

pub use date::{format_iso, write_iso};
pub use debezium::TimeUnit;
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
    /// A Decimal128, exactly, from a number or a decimal string (up to 34 digits).
    ToDecimal128,
    /// A BSON Date from Debezium's `Date` (days since the epoch) or a decoded ISO date.
    DebeziumDate,
    /// A `HH:MM:SS.fff` string from Debezium's `Time` / `MicroTime` / `NanoTime` (since
    /// midnight, in the unit) or a decoded time string.
    DebeziumTime(TimeUnit),
    /// A BSON Date from Debezium's `Timestamp` / `MicroTimestamp` / `NanoTimestamp` (a local
    /// date-time since the epoch, in the unit, read as UTC) or a decoded ISO date-time.
    DebeziumTimestamp(TimeUnit),
    /// A BSON Date from Debezium's `ZonedTimestamp` (ISO-8601 with a zone, any fraction).
    DebeziumZonedTimestamp,
    /// The ISO time string of Debezium's `ZonedTime`, checked.
    DebeziumZonedTime,
    /// A Decimal128 from Kafka Connect's `Decimal` (base64 of the unscaled big-endian two's
    /// complement integer) with this scale, or from a decoded decimal.
    DebeziumDecimal(i32),
    /// A Decimal128 from Debezium's `VariableScaleDecimal` (`{scale, value}`), or from a
    /// decoded decimal.
    DebeziumVariableScaleDecimal,
    /// The JSON value Debezium's `Json` text holds.
    DebeziumJson,
    /// The integer Debezium's `Bits` spell (base64 of little-endian bytes, up to 64 bits).
    DebeziumBits,
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

/// The casts of our own (no RTU id): Decimal128 and Debezium's logical types when a record
/// carries no schema (docs/formats.md). `castDebeziumDecimal` takes its scale in parentheses:
/// `castDebeziumDecimal(2)`.
const OWN_IDS: [(Cast, &str); 14] = [
    (Cast::ToDecimal128, "castToDecimal128"),
    (Cast::DebeziumDate, "castDebeziumDate"),
    (Cast::DebeziumTime(TimeUnit::Milli), "castDebeziumTime"),
    (Cast::DebeziumTime(TimeUnit::Micro), "castDebeziumMicroTime"),
    (Cast::DebeziumTime(TimeUnit::Nano), "castDebeziumNanoTime"),
    (Cast::DebeziumTimestamp(TimeUnit::Milli), "castDebeziumTimestamp"),
    (Cast::DebeziumTimestamp(TimeUnit::Micro), "castDebeziumMicroTimestamp"),
    (Cast::DebeziumTimestamp(TimeUnit::Nano), "castDebeziumNanoTimestamp"),
    (Cast::DebeziumZonedTimestamp, "castDebeziumZonedTimestamp"),
    (Cast::DebeziumZonedTime, "castDebeziumZonedTime"),
    (Cast::DebeziumDecimal(0), "castDebeziumDecimal(SCALE)"),
    (Cast::DebeziumVariableScaleDecimal, "castDebeziumVariableScaleDecimal"),
    (Cast::DebeziumJson, "castDebeziumJson"),
    (Cast::DebeziumBits, "castDebeziumBits"),
];

impl Cast {
    /// Every accepted id: RTU ids first, then Projection Storer ids, then our own.
    pub fn all_ids() -> Vec<&'static str> {
        IDS.iter()
            .map(|(_, rtu, _)| *rtu)
            .chain(IDS.iter().map(|(_, _, ps)| *ps))
            .chain(OWN_IDS.iter().map(|(_, id)| *id))
            .collect()
    }

    /// The Projection Storer id (`castToString`) or our own (`castDebeziumDate`), used in
    /// messages; [`Cast`]'s `Display` adds a decimal's scale.
    pub fn id(self) -> &'static str {
        if let Cast::DebeziumDecimal(_) = self {
            return "castDebeziumDecimal";
        }
        IDS.iter()
            .find(|(c, _, _)| *c == self)
            .map(|(_, _, ps)| *ps)
            .or_else(|| OWN_IDS.iter().find(|(c, _)| *c == self).map(|(_, id)| *id))
            .unwrap_or("identity")
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
            Cast::ToDecimal128 => to_decimal128(value).map(Bson::Decimal128).or_else(refuse),
            _ => self.apply_debezium(value).or_else(refuse),
        }
    }

    /// The Debezium casts: the raw encoding (no schema), or the value the adapter decoded
    /// from the record's schema.
    fn apply_debezium(self, value: &Value) -> Result<Bson, &'static str> {
        use debezium::*;
        let date = |ms: i64| Bson::DateTime(DateTime::from_millis(ms));
        match (self, value) {
            (Cast::DebeziumDate, Value::Number(n)) => {
                n.as_i64().and_then(days_to_millis).map(date).ok_or("not a day count in range")
            }
            (Cast::DebeziumTime(unit), Value::Number(n)) => n
                .as_i64()
                .and_then(|t| iso_time(t, unit))
                .map(Bson::String)
                .ok_or("not a time since midnight"),
            (Cast::DebeziumTime(_), Value::String(s)) if is_time_text(s, false) => {
                Ok(Bson::String(s.clone()))
            }
            (Cast::DebeziumTimestamp(unit), Value::Number(n)) => n
                .as_i64()
                .map(|t| unit.to_millis(t))
                .filter(|ms| ms.abs() <= date::MAX_EPOCH_MS)
                .map(date)
                .ok_or("not a timestamp in range"),
            (
                Cast::DebeziumDate | Cast::DebeziumTimestamp(_) | Cast::DebeziumZonedTimestamp,
                Value::String(s),
            ) => date::parse_iso(s).map(date).ok_or("not an ISO-8601 date"),
            (Cast::DebeziumZonedTime, Value::String(s)) if is_time_text(s, true) => {
                Ok(Bson::String(s.clone()))
            }
            (Cast::DebeziumDecimal(scale), Value::String(s)) if !is_decimal_text(s) => {
                let bytes = base64_bytes(s).ok_or("neither base64 nor a decimal")?;
                decimal_bson(&bytes, scale)
            }
            (Cast::DebeziumVariableScaleDecimal, Value::Object(o)) => {
                let scale =
                    o.get("scale").and_then(Value::as_i64).and_then(|s| i32::try_from(s).ok());
                let bytes = o.get("value").and_then(Value::as_str).and_then(base64_bytes);
                match (scale, bytes) {
                    (Some(scale), Some(bytes)) => decimal_bson(&bytes, scale),
                    _ => Err("not {scale, value (base64)}"),
                }
            }
            (Cast::DebeziumDecimal(_) | Cast::DebeziumVariableScaleDecimal, v) => {
                to_decimal128(v).map(Bson::Decimal128)
            }
            (Cast::DebeziumJson, Value::String(s)) => serde_json::from_str::<Value>(s)
                .map(|v| json_to_bson(&v))
                .map_err(|_| "not JSON text"),
            (Cast::DebeziumJson, v) => Ok(json_to_bson(v)),
            (Cast::DebeziumBits, Value::String(s)) => base64_bytes(s)
                .as_deref()
                .and_then(bits_value)
                .map(unsigned)
                .ok_or("not base64 of up to 8 bytes"),
            (Cast::DebeziumBits, Value::Number(n)) => {
                n.as_u64().map(unsigned).ok_or("not a bit string")
            }
            _ => Err("not this Debezium type's encoding"),
        }
    }
}

/// A decoded decimal as the adapter writes it: a sign, a point or an exponent, which base64
/// never has (`-`, `.`), so it cannot be mistaken for the raw encoding.
fn is_decimal_text(s: &str) -> bool {
    s.contains('.') || s.starts_with('-')
}

fn decimal_bson(unscaled: &[u8], scale: i32) -> Result<Bson, &'static str> {
    let text = debezium::decimal_text(unscaled, scale).ok_or("more than 34 digits")?;
    text.parse::<Decimal128>().map(Bson::Decimal128).map_err(|_| "more than 34 digits")
}

/// An unsigned value as int64, or as Decimal128 beyond it.
fn unsigned(n: u64) -> Bson {
    match i64::try_from(n) {
        Ok(i) => Bson::Int64(i),
        Err(_) => {
            n.to_string().parse::<Decimal128>().map_or(Bson::Double(n as f64), Bson::Decimal128)
        }
    }
}

/// An exact Decimal128 of a number or a decimal string; refused when it would round.
fn to_decimal128(value: &Value) -> Result<Decimal128, &'static str> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("not a number nor a decimal string"),
    };
    let numeric = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if !numeric {
        return Err("not a decimal number");
    }
    text.parse::<Decimal128>().map_err(|_| "not a decimal Decimal128 holds exactly (34 digits)")
}

impl FromStr for Cast {
    type Err = CastError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        if let Some(scale) =
            id.strip_prefix("castDebeziumDecimal(").and_then(|s| s.strip_suffix(')'))
        {
            return scale
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|s| (-6111..=6176).contains(s))
                .map(Cast::DebeziumDecimal)
                .ok_or_else(|| CastError::UnknownId { id: id.to_string() });
        }
        IDS.iter()
            .find(|(_, rtu, ps)| *rtu == id || *ps == id)
            .map(|(cast, _, _)| *cast)
            .or_else(|| {
                OWN_IDS
                    .iter()
                    .find(|(c, own)| *own == id && !matches!(c, Cast::DebeziumDecimal(_)))
                    .map(|(c, _)| *c)
            })
            .ok_or_else(|| CastError::UnknownId { id: id.to_string() })
    }
}

impl fmt::Display for Cast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cast::DebeziumDecimal(scale) => write!(f, "castDebeziumDecimal({scale})"),
            _ => f.write_str(self.id()),
        }
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
pub(crate) fn preview(value: &Value) -> String {
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
        // docs/vectors.md #17: age "42.9" -> 42, signup_at "2024-02-30" refused, vip "TRUE" refused,
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

    fn decimal(text: &str) -> Option<Bson> {
        Some(Bson::Decimal128(text.parse().unwrap()))
    }

    #[test]
    fn to_decimal128_is_exact_or_refused() {
        let c = Cast::ToDecimal128;
        run(vec![
            (c, json!("200000.0000"), decimal("200000.0000")),
            (c, json!(" -12.50 "), decimal("-12.50")),
            (c, json!(42), decimal("42")),
            (c, json!(0.1), decimal("0.1")),
            (c, json!("1e3"), decimal("1E+3")),
            (c, json!("9".repeat(34)), decimal(&"9".repeat(34))),
            // 35 significant digits would round: refused, never stored inexact.
            (c, json!("1".repeat(35)), None),
            (c, json!("NaN"), None),
            (c, json!("Infinity"), None),
            (c, json!("12abc"), None),
            (c, json!(""), None),
            (c, json!(true), None),
            (c, json!({"a": 1}), None),
        ]);
    }

    /// The schema-less Debezium casts: the raw encodings of Debezium's connector documentation
    /// ("Temporal types", "Decimal types", "Bit types"), and the values the adapter decodes
    /// when a record carries its schema, so a field's cast need not change with
    /// `schemas.enable`.
    #[test]
    fn debezium_casts_read_raw_encodings_and_decoded_values() {
        let (d, dt) = (Cast::DebeziumDate, |ms| Some(Bson::DateTime(DateTime::from_millis(ms))));
        run(vec![
            (d, json!(19372), dt(1_673_740_800_000)),
            (d, json!("2023-01-15"), dt(1_673_740_800_000)),
            (d, json!(-1), dt(-86_400_000)),
            (d, json!("19372"), None),
            (d, json!(1.5), None),
            (d, json!(200_000_000), None),
        ]);
        let ts = |unit| Cast::DebeziumTimestamp(unit);
        run(vec![
            (ts(TimeUnit::Milli), json!(1_700_000_000_123_i64), dt(1_700_000_000_123)),
            (ts(TimeUnit::Micro), json!(1_700_000_000_123_456_i64), dt(1_700_000_000_123)),
            (ts(TimeUnit::Nano), json!(1_700_000_000_123_456_789_i64), dt(1_700_000_000_123)),
            (ts(TimeUnit::Micro), json!(-1), dt(-1)),
            (ts(TimeUnit::Micro), json!("2023-11-14T22:13:20.123456"), dt(1_700_000_000_123)),
            (ts(TimeUnit::Milli), json!(true), None),
            (
                Cast::DebeziumZonedTimestamp,
                json!("2023-11-15T00:13:20.123456789+02:00"),
                dt(1_700_000_000_123),
            ),
            (Cast::DebeziumZonedTimestamp, json!(1_700_000_000_123_i64), None),
        ]);
        let time = |unit| Cast::DebeziumTime(unit);
        run(vec![
            (time(TimeUnit::Milli), json!(37_230_123), Some(bson!("10:20:30.123"))),
            (time(TimeUnit::Micro), json!(86_131_989_360_i64), Some(bson!("23:55:31.989360"))),
            (time(TimeUnit::Nano), json!(1), Some(bson!("00:00:00.000000001"))),
            (time(TimeUnit::Micro), json!("23:55:31.989360"), Some(bson!("23:55:31.989360"))),
            (time(TimeUnit::Milli), json!(-5), None),
            (time(TimeUnit::Milli), json!("noon"), None),
            (Cast::DebeziumZonedTime, json!("13:37:03.123Z"), Some(bson!("13:37:03.123Z"))),
            (Cast::DebeziumZonedTime, json!("13:37:03"), None),
        ]);
        let dec = Cast::DebeziumDecimal(4);
        run(vec![
            // Debezium Server's documented SQL Server record: sal "dzWUAA==" with scale 4.
            (dec, json!("dzWUAA=="), decimal("200000.0000")),
            (Cast::DebeziumDecimal(2), json!("AN3h"), decimal("568.01")),
            (Cast::DebeziumDecimal(2), json!("z8c="), decimal("-123.45")),
            (dec, json!("200000.0000"), decimal("200000.0000")),
            (dec, json!(12345), decimal("12345")),
            (dec, json!("not base64!"), None),
            (
                Cast::DebeziumVariableScaleDecimal,
                json!({"scale": 3, "value": "B1vNFQ=="}),
                decimal("123456.789"),
            ),
            (Cast::DebeziumVariableScaleDecimal, json!("123456.789"), decimal("123456.789")),
            (Cast::DebeziumVariableScaleDecimal, json!({"scale": "x", "value": "B1vNFQ=="}), None),
        ]);
        run(vec![
            (Cast::DebeziumJson, json!("{\"a\":[1,2]}"), Some(bson!({"a": [1_i64, 2_i64]}))),
            (Cast::DebeziumJson, json!("[1]"), Some(bson!([1_i64]))),
            (Cast::DebeziumJson, json!({"a": 1}), Some(bson!({"a": 1_i64}))),
            (Cast::DebeziumJson, json!("{broken"), None),
            (Cast::DebeziumBits, json!("AgE="), Some(Bson::Int64(258))),
            (Cast::DebeziumBits, json!(258), Some(Bson::Int64(258))),
            (Cast::DebeziumBits, json!("//////////8="), decimal("18446744073709551615")),
            (Cast::DebeziumBits, json!("AAAAAAAAAAAA"), None),
        ]);
    }

    #[test]
    fn our_own_ids_parse_and_print() {
        for (cast, id) in OWN_IDS.iter().filter(|(c, _)| !matches!(c, Cast::DebeziumDecimal(_))) {
            assert_eq!(id.parse::<Cast>(), Ok(*cast), "{id}");
            assert_eq!(cast.to_string(), *id);
            assert!(Cast::all_ids().contains(id));
        }
        assert_eq!("castDebeziumDecimal(2)".parse::<Cast>(), Ok(Cast::DebeziumDecimal(2)));
        assert_eq!("castDebeziumDecimal(-3)".parse::<Cast>(), Ok(Cast::DebeziumDecimal(-3)));
        assert_eq!(Cast::DebeziumDecimal(2).to_string(), "castDebeziumDecimal(2)");
        for bad in [
            "castDebeziumDecimal",
            "castDebeziumDecimal(x)",
            "castDebeziumDecimal(SCALE)",
            "castDebeziumDecimal(9999)",
        ] {
            assert!(bad.parse::<Cast>().is_err(), "{bad}");
        }
        assert!(Cast::all_ids().contains(&"castDebeziumDecimal(SCALE)"));
    }
}
