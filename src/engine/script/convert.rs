//! Values across the JavaScript boundary: JSON (casts, adapters) both ways, BSON both ways
//! (strategies), the adapter's Kafka message, and short descriptions of values for messages.
//! The choices are listed in the module doc of `script`.

use mongodb::bson::{Bson, DateTime, Document, Regex};
use rquickjs::{Array, Ctx, Function, Object, Type, Value};
use serde_json::{Number, Value as Json};

use super::KafkaMessage;

/// How deep a returned value may nest (cycles end here).
const MAX_DEPTH: usize = 100;

/// 2^53: integers below it are exact in a JS number.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A JSON value as JavaScript: scalars directly, objects and arrays through `JSON.parse`.
pub(super) fn json_to_js<'js>(ctx: &Ctx<'js>, value: &Json) -> rquickjs::Result<Value<'js>> {
    Ok(match value {
        Json::Null => Value::new_null(ctx.clone()),
        Json::Bool(b) => Value::new_bool(ctx.clone(), *b),
        Json::Number(n) => Value::new_number(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Json::Array(_) | Json::Object(_) => {
            let text = serde_json::to_string(value).map_err(|e| {
                rquickjs::Error::new_from_js_message("value", "JSON", e.to_string())
            })?;
            ctx.json_parse(text)?
        }
    })
}

/// A JavaScript value as JSON, with `JSON.stringify`'s rules (`Date`s are ISO strings,
/// non-finite numbers `null`); `None` for what JSON cannot hold (`undefined`, functions).
pub(super) fn js_to_json<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Option<Json>> {
    Ok(Some(match value.type_of() {
        Type::Undefined
        | Type::Uninitialized
        | Type::Function
        | Type::Constructor
        | Type::Symbol => {
            return Ok(None);
        }
        Type::Null => Json::Null,
        Type::Bool => Json::Bool(value.as_bool().unwrap_or_default()),
        Type::Int | Type::Float => number_to_json(value.as_number().unwrap_or(f64::NAN)),
        Type::String => Json::String(value.get::<String>()?),
        _ => match ctx.json_stringify(value)? {
            None => return Ok(None),
            Some(text) => serde_json::from_str(&text.to_string()?).map_err(|e| {
                rquickjs::Error::new_from_js_message("JSON", "value", e.to_string())
            })?,
        },
    }))
}

/// A JS number as JSON: integral values as integers, non-finite ones `null`.
fn number_to_json(n: f64) -> Json {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
        return Json::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Json::Null, Json::Number)
}

/// The RTU v7 `kafkaMessage`: `key` and `value` Buffer-like (`Uint8Array` whose `toString()`
/// is the UTF-8 text) or `null`, `timestamp` and `offset` decimal strings.
pub(super) fn kafka_message<'js>(
    ctx: &Ctx<'js>,
    message: &KafkaMessage<'_>,
) -> rquickjs::Result<Object<'js>> {
    let buffer: Function = ctx.globals().get::<_, Object>("__rtu")?.get("buffer")?;
    let bytes = |bytes: Option<&[u8]>| -> rquickjs::Result<Value<'js>> {
        let Some(bytes) = bytes else { return Ok(Value::new_null(ctx.clone())) };
        let array = rquickjs::TypedArray::<u8>::new_copy(ctx.clone(), bytes)?;
        buffer.call((array, String::from_utf8_lossy(bytes).as_ref()))
    };
    let object = Object::new(ctx.clone())?;
    object.set("key", bytes(message.key)?)?;
    object.set("value", bytes(message.value)?)?;
    object.set("timestamp", message.timestamp_ms.to_string())?;
    object.set("offset", message.offset.to_string())?;
    Ok(object)
}

/// A BSON document as a JavaScript object.
pub(super) fn document_to_js<'js>(ctx: &Ctx<'js>, doc: &Document) -> rquickjs::Result<Value<'js>> {
    let object = Object::new(ctx.clone())?;
    for (key, value) in doc {
        object.set(key.as_str(), bson_to_js(ctx, value)?)?;
    }
    Ok(object.into_value())
}

/// A BSON value as JavaScript: numbers as numbers, dates as `Date`, ObjectIds as hex strings,
/// Decimal128 as strings, the other rare types as their relaxed Extended JSON.
pub(super) fn bson_to_js<'js>(ctx: &Ctx<'js>, value: &Bson) -> rquickjs::Result<Value<'js>> {
    let number = |n: f64| Ok(Value::new_number(ctx.clone(), n));
    match value {
        Bson::Document(doc) => document_to_js(ctx, doc),
        Bson::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, bson_to_js(ctx, item)?)?;
            }
            Ok(array.into_value())
        }
        Bson::Null | Bson::Undefined => Ok(Value::new_null(ctx.clone())),
        Bson::Boolean(b) => Ok(Value::new_bool(ctx.clone(), *b)),
        Bson::Int32(i) => Ok(Value::new_int(ctx.clone(), *i)),
        Bson::Int64(i) => number(*i as f64),
        Bson::Double(f) => number(*f),
        Bson::String(s) => rquickjs::String::from_str(ctx.clone(), s).map(|s| s.into_value()),
        Bson::ObjectId(id) => {
            rquickjs::String::from_str(ctx.clone(), &id.to_hex()).map(|s| s.into_value())
        }
        Bson::Decimal128(d) => {
            rquickjs::String::from_str(ctx.clone(), &d.to_string()).map(|s| s.into_value())
        }
        Bson::DateTime(date) => {
            let constructor: rquickjs::Constructor = ctx.globals().get("Date")?;
            constructor.construct((date.timestamp_millis() as f64,))
        }
        other => json_to_js(ctx, &other.clone().into_relaxed_extjson()),
    }
}

/// A JavaScript value as BSON (`None`: `undefined`, functions and symbols, left out of
/// objects). Errors name what cannot be converted.
pub(super) fn js_to_bson<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Result<Option<Bson>, String> {
    let classes = Classes::of(ctx).map_err(|e| e.to_string())?;
    classes.to_bson(value, 0)
}

/// The constructors whose instances convert to BSON types of their own.
struct Classes<'js> {
    date: Object<'js>,
    regexp: Object<'js>,
}

impl<'js> Classes<'js> {
    fn of(ctx: &Ctx<'js>) -> rquickjs::Result<Self> {
        let globals = ctx.globals();
        Ok(Classes { date: globals.get("Date")?, regexp: globals.get("RegExp")? })
    }

    fn to_bson(&self, value: &Value<'js>, depth: usize) -> Result<Option<Bson>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} levels (a cycle?)"));
        }
        Ok(Some(match value.type_of() {
            Type::Undefined
            | Type::Uninitialized
            | Type::Function
            | Type::Constructor
            | Type::Symbol => {
                return Ok(None);
            }
            Type::Null => Bson::Null,
            Type::Bool => Bson::Boolean(value.as_bool().unwrap_or_default()),
            Type::Int | Type::Float => number_to_bson(value.as_number().unwrap_or(f64::NAN)),
            Type::String => Bson::String(value.get::<String>().map_err(|e| e.to_string())?),
            Type::BigInt => {
                let big = value.get::<i64>().map_err(|e| format!("a BigInt beyond int64: {e}"))?;
                Bson::Int64(big)
            }
            Type::Array => self.array_to_bson(value, depth)?,
            Type::Object | Type::Exception | Type::Proxy => self.object_to_bson(value, depth)?,
            other => return Err(format!("a {other} cannot be converted")),
        }))
    }

    fn array_to_bson(&self, value: &Value<'js>, depth: usize) -> Result<Bson, String> {
        let array = value.as_array().ok_or("not an array")?;
        let items = array.iter::<Value>().map(|item| {
            let item = item.map_err(|e| e.to_string())?;
            Ok(self.to_bson(&item, depth + 1)?.unwrap_or(Bson::Null))
        });
        items.collect::<Result<Vec<_>, String>>().map(Bson::Array)
    }

    fn object_to_bson(&self, value: &Value<'js>, depth: usize) -> Result<Bson, String> {
        let object = value.as_object().ok_or("not an object")?;
        let text = |e: rquickjs::Error| e.to_string();
        if object.is_instance_of(&self.date) {
            let get_time: Function = object.get("getTime").map_err(text)?;
            let ms: f64 =
                get_time.call((rquickjs::function::This(object.clone()),)).map_err(text)?;
            return match ms.is_finite() {
                true => Ok(Bson::DateTime(DateTime::from_millis(ms as i64))),
                false => Err("an invalid Date".into()),
            };
        }
        if object.is_instance_of(&self.regexp) {
            let source: String = object.get("source").map_err(text)?;
            let flags: String = object.get("flags").map_err(text)?;
            // MongoDB knows i, m, s, u (and x, l); JS-only flags (g, y, d, v) mean nothing there.
            let mut options: Vec<char> = flags.chars().filter(|c| "imsu".contains(*c)).collect();
            options.sort_unstable();
            let options = options.into_iter().collect();
            return Ok(Bson::RegularExpression(Regex { pattern: source, options }));
        }
        let mut doc = Document::new();
        for prop in object.props::<String, Value>() {
            let (key, item) = prop.map_err(text)?;
            if let Some(item) = self.to_bson(&item, depth + 1)? {
                doc.insert(key, item);
            }
        }
        Ok(Bson::Document(doc))
    }
}

/// A JS number as BSON: integral values in the int64 range as int64, others as double.
fn number_to_bson(n: f64) -> Bson {
    match n.is_finite() && n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
        true => Bson::Int64(n as i64),
        false => Bson::Double(n),
    }
}

/// The identifiers a strategy resolved to: an array of objects.
pub(super) fn identifiers<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Result<Vec<Document>, String> {
    let Some(array) = value.as_array() else {
        return Err(format!(
            "a strategy must resolve to an array of identifiers, not {}",
            describe(&value)
        ));
    };
    let classes = Classes::of(ctx).map_err(|e| e.to_string())?;
    let mut identifiers = Vec::with_capacity(array.len());
    for (i, item) in array.iter::<Value>().enumerate() {
        let item = item.map_err(|e| e.to_string())?;
        match classes.to_bson(&item, 0) {
            Ok(Some(Bson::Document(doc))) => identifiers.push(doc),
            Ok(_) => return Err(format!("identifier {i} is {}, not an object", describe(&item))),
            Err(e) => return Err(format!("identifier {i}: {e}")),
        }
    }
    Ok(identifiers)
}

/// A short description of a value's type for messages ("a string", "undefined").
pub(super) fn describe(value: &Value<'_>) -> String {
    match value.type_of() {
        Type::Undefined | Type::Uninitialized => "undefined".into(),
        Type::Null => "null".into(),
        Type::Bool => "a boolean".into(),
        Type::Int | Type::Float => "a number".into(),
        Type::String => "a string".into(),
        Type::Array => "an array".into(),
        Type::Object => "an object".into(),
        Type::Function | Type::Constructor => "a function".into(),
        Type::Promise => "a promise".into(),
        other => format!("a value of type {other}"),
    }
}

/// `String(value)`, for thrown values that are not errors.
pub(super) fn to_display(value: &Value<'_>) -> String {
    value.get::<rquickjs::convert::Coerced<String>>().map_or_else(|_| describe(value), |s| s.0)
}
