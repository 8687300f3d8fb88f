//! The `debezium` adapter (docs/formats.md, "Debezium"): change events of Debezium's
//! connectors through Kafka Connect's JsonConverter.
//!
//! - `format: envelope` (default): `{before, after, op, source, ts_ms}`; tombstones and
//!   truncates are skips.
//! - `format: unwrapped`: the flat rows of the `ExtractNewRecordState` transform; `__deleted`
//!   `"true"` (rewrite) and tombstones are deletes, `__op` the operation, the added `__*`
//!   fields dropped unless the projection maps them.
//!
//! With `schemas.enable=true` the `{schema, payload}` wrapper of key and value is unwrapped and
//! the logical types its schema names are decoded (dates never read as milliseconds, decimals
//! to exact decimal text). `__debezium_unavailable_value` (an unchanged TOAST or LOB column)
//! removes its field from the image, so the stored value stays. Transaction markers, schema
//! changes and heartbeats on a projection's topic are skips with their reason.
//!
//! The Kafka key is the primary key (Debezium's contract): where the key carries a primary-key
//! field and the row image says otherwise, the record is `KEY_MISMATCH`. Fields the key lacks
//! (a `message.key.columns` key) come from the image.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::basic::check_agreement;
use super::{
    Adapted, AdapterError, ChangeEvent, Image, KafkaRecord, Op, PrimaryKey, Skip, json_object,
    kind, parse_position, take_image,
};
use crate::engine::cast::debezium::{
    TimeUnit, base64_bytes, bits_value, decimal_text, iso_date, iso_local_date_time, iso_time,
};
use crate::engine::cast::preview;

/// How Debezium records are read (config `adapter.debezium`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DebeziumOptions {
    /// `envelope` (default): Debezium's change event `{before, after, op, source}`;
    /// `unwrapped`: rows flattened by the `io.debezium.transforms.ExtractNewRecordState` SMT.
    #[serde(default)]
    pub format: DebeziumFormat,
    /// The connectors' `unavailable.value.placeholder` (default `__debezium_unavailable_value`;
    /// a `hex:` prefix gives its bytes in hex, as the connectors accept): a field holding it
    /// is left as stored, never written.
    #[serde(default = "placeholder")]
    pub unavailable_value_placeholder: String,
    /// The stale-guard counter: `offset` (default, the Kafka offset), `sourceTimestamp`
    /// (`source.ts_ms`, or `source.ts_sec` of legacy MySQL records; unwrapped:
    /// `__source_ts_ms`), `lsn` (PostgreSQL `source.lsn`; unwrapped: `__lsn`) or `scn` (Oracle
    /// `source.scn`; unwrapped: `__scn`). A record without it is `MALFORMED_VALUE`.
    #[serde(default)]
    pub counter: DebeziumCounter,
    /// `unwrapped` only: the SMT's `add.fields.prefix` (default `__`).
    #[serde(default = "prefix")]
    pub added_fields_prefix: String,
}

impl Default for DebeziumOptions {
    fn default() -> Self {
        DebeziumOptions {
            format: DebeziumFormat::Envelope,
            unavailable_value_placeholder: placeholder(),
            counter: DebeziumCounter::Offset,
            added_fields_prefix: prefix(),
        }
    }
}

impl DebeziumOptions {
    /// True when every option has its default (the config leaves it out).
    pub fn is_default(&self) -> bool {
        *self == DebeziumOptions::default()
    }
}

fn placeholder() -> String {
    "__debezium_unavailable_value".to_string()
}

fn prefix() -> String {
    "__".to_string()
}

/// The shape of Debezium records.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum DebeziumFormat {
    /// The change event envelope.
    #[default]
    Envelope,
    /// `ExtractNewRecordState` rows.
    Unwrapped,
}

/// Where a Debezium record's stale-guard counter is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum DebeziumCounter {
    /// The Kafka offset.
    #[default]
    Offset,
    /// The source database's commit time in ms.
    SourceTimestamp,
    /// PostgreSQL's log sequence number.
    Lsn,
    /// Oracle's system change number.
    Scn,
}

/// The adapter of one projection: its options, the placeholder's forms, and the source fields
/// it maps (added fields it maps are kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Debezium {
    options: DebeziumOptions,
    mapped: Vec<String>,
    /// The placeholder as text, and as JsonConverter writes its bytes (base64).
    placeholder_text: String,
    placeholder_base64: String,
    placeholder_bytes: Vec<u8>,
    /// `unwrapped`: the SMT's `<prefix>deleted`, `<prefix>op` and counter field names.
    deleted_field: String,
    op_field: String,
    counter_field: String,
}

impl Default for Debezium {
    fn default() -> Self {
        Debezium::new(DebeziumOptions::default(), Vec::new())
    }
}

impl Debezium {
    /// The adapter for a projection mapping these source fields.
    pub fn new(options: DebeziumOptions, mapped: Vec<String>) -> Self {
        use base64::Engine as _;
        let bytes = match options.unavailable_value_placeholder.strip_prefix("hex:") {
            Some(hex) => hex_bytes(hex).unwrap_or_else(|| hex.as_bytes().to_vec()),
            None => options.unavailable_value_placeholder.as_bytes().to_vec(),
        };
        let prefix = &options.added_fields_prefix;
        let counter = match options.counter {
            DebeziumCounter::Offset | DebeziumCounter::SourceTimestamp => "source_ts_ms",
            DebeziumCounter::Lsn => "lsn",
            DebeziumCounter::Scn => "scn",
        };
        Debezium {
            deleted_field: format!("{prefix}deleted"),
            op_field: format!("{prefix}op"),
            counter_field: format!("{prefix}{counter}"),
            placeholder_text: String::from_utf8_lossy(&bytes).into_owned(),
            placeholder_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            placeholder_bytes: bytes,
            options,
            mapped,
        }
    }

    pub(super) fn adapt(
        &self,
        record: KafkaRecord<'_>,
        pk: &PrimaryKey,
    ) -> Result<Adapted, AdapterError> {
        let value = unwrap_schema(record.value, AdapterError::MalformedValue)?;
        let unwrapped = self.options.format == DebeziumFormat::Unwrapped;
        let Some((value, schema)) = value else {
            // Envelope: the compaction marker after a delete. Unwrapped: the delete itself
            // (the SMT's default turns a delete into a tombstone).
            return if unwrapped {
                let key = self.key(record)?.unwrap_or_default();
                Ok(Adapted::Change(ChangeEvent::delete(pk.extract(&key, "the key (tombstone)")?)))
            } else {
                Ok(Adapted::Skip(Skip::Tombstone))
            };
        };
        if let Some(skip) = control_record(&value) {
            return Ok(Adapted::Skip(skip));
        }
        let truncate = value.get("op").and_then(Value::as_str) == Some("t");
        if unwrapped && !(truncate && value.contains_key("source")) {
            self.unwrapped(record, pk, value, schema)
        } else {
            self.envelope(record, pk, value, schema)
        }
    }

    fn envelope(
        &self,
        record: KafkaRecord<'_>,
        pk: &PrimaryKey,
        mut envelope: Image,
        schema: Option<Value>,
    ) -> Result<Adapted, AdapterError> {
        let mut before = take_image(&mut envelope, "before")?;
        let mut after = take_image(&mut envelope, "after")?;
        let op = match envelope.get("op") {
            Some(Value::String(op)) => match op.as_str() {
                "c" | "r" => Op::Insert,
                "u" => Op::Update,
                "d" => Op::Delete,
                "t" => return Ok(Adapted::Skip(Skip::Truncate)),
                other => return Err(AdapterError::UnknownOperation(format!("op {other:?}"))),
            },
            None | Some(Value::Null) => match (before.is_some(), after.is_some()) {
                (false, true) => Op::Insert,
                (true, true) => Op::Update,
                (true, false) => Op::Delete,
                (false, false) => {
                    return Err(malformed("no op and neither before nor after".to_string()));
                }
            },
            Some(other) => return Err(AdapterError::UnknownOperation(format!("op {other}"))),
        };
        if op != Op::Delete && after.is_none() {
            return Err(malformed("after is null for a create/read/update".to_string()));
        }
        for (name, image) in [("before", &mut before), ("after", &mut after)] {
            if let Some(image) = image {
                self.drop_placeholders(image);
                if let Some(fields) = schema.as_ref().and_then(|s| struct_fields(s, Some(name))) {
                    decode_image(image, fields, name)?;
                }
            }
        }
        let position = self.position(&envelope, false)?;
        let data = if op == Op::Delete { before.as_ref() } else { after.as_ref() };
        let key = self.primary_key(record, pk, data)?;
        let after = if op == Op::Delete { None } else { after };
        Ok(Adapted::Change(ChangeEvent { op, key, before, after, position }))
    }

    fn unwrapped(
        &self,
        record: KafkaRecord<'_>,
        pk: &PrimaryKey,
        mut row: Image,
        schema: Option<Value>,
    ) -> Result<Adapted, AdapterError> {
        let deleted = match row.get(&self.deleted_field) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => s == "true",
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(malformed(format!("{} is {other}", self.deleted_field))),
        };
        let op = match row.get(&self.op_field).and_then(Value::as_str) {
            _ if deleted => Op::Delete,
            Some("c" | "r") => Op::Insert,
            Some("u") => Op::Update,
            Some("d") => Op::Delete,
            Some("t") => return Ok(Adapted::Skip(Skip::Truncate)),
            Some(other) => {
                let field = &self.op_field;
                return Err(AdapterError::UnknownOperation(format!("{field} {other:?}")));
            }
            None => Op::Upsert,
        };
        let prefix = &self.options.added_fields_prefix;
        let position = self.position(&row, true)?;
        let mapped = &self.mapped;
        row.retain(|field, _| !field.starts_with(prefix.as_str()) || mapped.contains(field));
        self.drop_placeholders(&mut row);
        if let Some(fields) = schema.as_ref().and_then(|s| struct_fields(s, None)) {
            decode_image(&mut row, fields, "value")?;
        }
        let key = self.primary_key(record, pk, Some(&row))?;
        let mut change = match op {
            Op::Delete => ChangeEvent { before: Some(row), ..ChangeEvent::delete(key) },
            op => ChangeEvent { op, key, before: None, after: Some(row), position: None },
        };
        change.position = position;
        Ok(Adapted::Change(change))
    }

    /// The counter under `counter` (`None`: the Kafka offset).
    fn position(&self, value: &Image, unwrapped: bool) -> Result<Option<u128>, AdapterError> {
        let field = match self.options.counter {
            DebeziumCounter::Offset => return Ok(None),
            DebeziumCounter::SourceTimestamp => "ts_ms",
            DebeziumCounter::Lsn => "lsn",
            DebeziumCounter::Scn => "scn",
        };
        let source = value.get("source");
        let found = match (unwrapped, self.options.counter) {
            (true, _) => value.get(&self.counter_field).cloned(),
            // Legacy MySQL records (Debezium before 0.10) carry seconds in `ts_sec`.
            (false, DebeziumCounter::SourceTimestamp) => {
                match (source.and_then(|s| s.get("ts_ms")), source.and_then(|s| s.get("ts_sec"))) {
                    (Some(ms), _) if !ms.is_null() => Some(ms.clone()),
                    (_, Some(Value::Number(s))) => {
                        s.as_u64().map(|s| Value::from(s.saturating_mul(1000)))
                    }
                    _ => None,
                }
            }
            (false, _) => source.and_then(|s| s.get(field)).cloned(),
        };
        let shown = || match unwrapped {
            true => self.counter_field.clone(),
            false => format!("source.{field}"),
        };
        match found {
            Some(v) => parse_position(&v).map(Some).ok_or_else(|| {
                malformed(format!(
                    "{} is {v}, not an unsigned integer (adapter.debezium.counter)",
                    shown()
                ))
            }),
            None => Err(malformed(format!(
                "{} is missing; adapter.debezium.counter needs it in every record",
                shown()
            ))),
        }
    }

    /// The key object, unwrapped from its schema wrapper and decoded; `None` when null, and an
    /// error only when it is not a JSON object.
    fn key(&self, record: KafkaRecord<'_>) -> Result<Option<Image>, AdapterError> {
        let Some((mut key, schema)) = unwrap_schema(record.key, AdapterError::MalformedKey)? else {
            return Ok(None);
        };
        if let Some(fields) = schema.as_ref().and_then(|s| struct_fields(s, None)) {
            decode_image(&mut key, fields, "key")?;
        }
        Ok(Some(key))
    }

    /// Each primary-key field from the Kafka key, which must agree with the image where both
    /// have it; a field the key lacks from the image.
    fn primary_key(
        &self,
        record: KafkaRecord<'_>,
        pk: &PrimaryKey,
        data: Option<&Image>,
    ) -> Result<Image, AdapterError> {
        let empty = Image::new();
        let data = data.unwrap_or(&empty);
        let key = match self.key(record) {
            Ok(key) => key.unwrap_or_default(),
            // A key that is not JSON does not matter when the image has the primary key.
            Err(e) => return pk.extract(data, "the row image").map_err(|_| e),
        };
        let present =
            |image: &Image, field: &str| image.get(field).filter(|v| !v.is_null()).cloned();
        let merged = pk
            .0
            .iter()
            .map(|(field, _)| {
                let value = present(&key, field).or_else(|| present(data, field));
                value.map(|v| (field.clone(), v)).ok_or_else(|| AdapterError::MissingPrimaryKey {
                    field: field.clone(),
                    place: "the key nor the row image",
                })
            })
            .collect::<Result<Image, _>>()?;
        check_agreement(pk, &merged, data)?;
        Ok(merged)
    }

    /// Removes the fields that hold the unavailable-value placeholder: as text, as the base64
    /// of its bytes (a binary column), as a one-element text array, or as an array of its
    /// bytes (PostgreSQL integer arrays).
    fn drop_placeholders(&self, image: &mut Image) {
        image.retain(|_, value| !self.is_placeholder(value));
    }

    fn is_placeholder(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => *s == self.placeholder_text || *s == self.placeholder_base64,
            Value::Array(items) if items.len() == 1 => {
                items[0].as_str().is_some_and(|s| s == self.placeholder_text)
            }
            Value::Array(items) if items.len() == self.placeholder_bytes.len() => items
                .iter()
                .zip(&self.placeholder_bytes)
                .all(|(item, byte)| item.as_u64() == Some(u64::from(*byte))),
            _ => false,
        }
    }
}

/// A key or value as a JSON object (`None` when null), with the JsonConverter's
/// `{schema, payload}` wrapper (schemas enabled) unwrapped: the payload and its schema.
fn unwrap_schema(
    bytes: Option<&[u8]>,
    error: fn(String) -> AdapterError,
) -> Result<Option<(Image, Option<Value>)>, AdapterError> {
    let Some(mut object) = json_object(bytes, error)? else { return Ok(None) };
    if !is_wrapped(&object) {
        return Ok(Some((object, None)));
    }
    let schema = object.remove("schema");
    match object.remove("payload") {
        Some(Value::Object(payload)) => Ok(Some((payload, schema))),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(error(format!("payload is {}, not an object", kind(&other)))),
    }
}

/// `{schema, payload}` and nothing else: the JsonConverter's wrapper with schemas enabled.
fn is_wrapped(object: &Image) -> bool {
    object.len() == 2 && object.contains_key("schema") && object.contains_key("payload")
}

/// Records Debezium writes that are not row changes, told by their exact field sets.
fn control_record(value: &Image) -> Option<Skip> {
    let has_only = |allowed: &[&str]| value.keys().all(|k| allowed.contains(&k.as_str()));
    let marker = ["status", "id", "ts_ms", "event_count", "data_collections"];
    if value.contains_key("status")
        && value.contains_key("id")
        && has_only(&marker)
        && matches!(value.get("status").and_then(Value::as_str), Some("BEGIN" | "END"))
    {
        return Some(Skip::TransactionMarker);
    }
    let schema_change = ["source", "ts_ms", "databaseName", "schemaName", "ddl", "tableChanges"];
    if value.contains_key("ddl") && value.contains_key("databaseName") && has_only(&schema_change) {
        return Some(Skip::SchemaChange);
    }
    if value.len() == 1 && value.get("ts_ms").is_some_and(Value::is_number) {
        return Some(Skip::Heartbeat);
    }
    None
}

/// The `fields` of a struct schema: the schema itself, or its field named `field`.
fn struct_fields<'a>(schema: &'a Value, field: Option<&str>) -> Option<&'a Vec<Value>> {
    let schema = match field {
        None => schema,
        Some(name) => schema
            .get("fields")?
            .as_array()?
            .iter()
            .find(|f| f.get("field").and_then(Value::as_str) == Some(name))?,
    };
    schema.get("fields")?.as_array()
}

/// Decodes every field of `image` whose schema names a logical type.
fn decode_image(image: &mut Image, fields: &[Value], place: &str) -> Result<(), AdapterError> {
    for field_schema in fields {
        let Some(name) = field_schema.get("field").and_then(Value::as_str) else { continue };
        if let Some(value) = image.get_mut(name) {
            decode(value, field_schema)
                .map_err(|reason| malformed(format!("{place}.{name}: {reason}")))?;
        }
    }
    Ok(())
}

/// Decodes one value by its field schema (logical types, nested structs and arrays).
fn decode(value: &mut Value, schema: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let Some(logical) = schema.get("name").and_then(Value::as_str) else {
        return match (schema.get("type").and_then(Value::as_str), value) {
            (Some("struct"), Value::Object(object)) => {
                let fields = schema.get("fields").and_then(Value::as_array);
                for f in fields.into_iter().flatten() {
                    let Some(name) = f.get("field").and_then(Value::as_str) else { continue };
                    if let Some(v) = object.get_mut(name) {
                        decode(v, f).map_err(|e| format!("{name}: {e}"))?;
                    }
                }
                Ok(())
            }
            (Some("array"), Value::Array(items)) => match schema.get("items") {
                Some(item_schema) => items.iter_mut().try_for_each(|v| decode(v, item_schema)),
                None => Ok(()),
            },
            _ => Ok(()),
        };
    };
    let decoded = match logical {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => integer(value, logical)
            .and_then(|d| iso_date(d).ok_or(out_of_range(logical, value)))?
            .into(),
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            time(value, logical, TimeUnit::Milli)?
        }
        "io.debezium.time.MicroTime" => time(value, logical, TimeUnit::Micro)?,
        "io.debezium.time.NanoTime" => time(value, logical, TimeUnit::Nano)?,
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            timestamp(value, logical, TimeUnit::Milli)?
        }
        "io.debezium.time.MicroTimestamp" => timestamp(value, logical, TimeUnit::Micro)?,
        "io.debezium.time.NanoTimestamp" => timestamp(value, logical, TimeUnit::Nano)?,
        "org.apache.kafka.connect.data.Decimal" => {
            let scale = schema
                .get("parameters")
                .and_then(|p| p.get("scale"))
                .and_then(|s| {
                    s.as_str().map(str::to_string).or_else(|| s.as_i64().map(|n| n.to_string()))
                })
                .and_then(|s| s.parse::<i32>().ok())
                .ok_or_else(|| format!("{logical} without a scale parameter"))?;
            decimal(value, scale, logical)?
        }
        "io.debezium.data.VariableScaleDecimal" => {
            let scale = value
                .get("scale")
                .and_then(Value::as_i64)
                .and_then(|s| i32::try_from(s).ok())
                .ok_or_else(|| format!("{logical} {value} has no integer scale"))?;
            let unscaled = value.get("value").cloned().unwrap_or(Value::Null);
            decimal(&unscaled, scale, logical)?
        }
        "io.debezium.data.Json" => match value.as_str().map(serde_json::from_str::<Value>) {
            Some(Ok(parsed)) => parsed,
            _ => return Err(format!("{logical} {} is not JSON text", preview(value))),
        },
        "io.debezium.data.Bits" => {
            let bytes = value.as_str().and_then(base64_bytes);
            match bytes.as_deref().and_then(bits_value) {
                Some(bits) => Value::from(bits),
                None => {
                    return Err(format!(
                        "{logical} {} is not base64 of up to 8 bytes",
                        preview(value)
                    ));
                }
            }
        }
        // Uuid, ZonedTimestamp, ZonedTime, Enum, Year ...: already plain values.
        _ => return Ok(()),
    };
    *value = decoded;
    Ok(())
}

fn integer(value: &Value, logical: &str) -> Result<i64, String> {
    value.as_i64().ok_or_else(|| format!("{logical} {} is not an integer", preview(value)))
}

fn out_of_range(logical: &str, value: &Value) -> String {
    format!("{logical} {} is out of range", preview(value))
}

fn time(value: &Value, logical: &str, unit: TimeUnit) -> Result<Value, String> {
    let amount = integer(value, logical)?;
    iso_time(amount, unit).map(Value::from).ok_or_else(|| out_of_range(logical, value))
}

fn timestamp(value: &Value, logical: &str, unit: TimeUnit) -> Result<Value, String> {
    let amount = integer(value, logical)?;
    iso_local_date_time(amount, unit).map(Value::from).ok_or_else(|| out_of_range(logical, value))
}

/// A decimal as exact text (`"123.45"`), or as a JSON integer when its scale leaves none and
/// it fits 64 bits (`NUMBER(10)` keys stay numbers).
fn decimal(unscaled: &Value, scale: i32, logical: &str) -> Result<Value, String> {
    let bytes = unscaled
        .as_str()
        .and_then(base64_bytes)
        .ok_or_else(|| format!("{logical} {} is not base64", preview(unscaled)))?;
    let text = decimal_text(&bytes, scale)
        .ok_or_else(|| format!("{logical} {} exceeds 34 digits", preview(unscaled)))?;
    if scale <= 0
        && let Ok(n) = text.parse::<i64>()
    {
        return Ok(Value::from(n));
    }
    Ok(Value::String(text))
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn malformed(reason: String) -> AdapterError {
    AdapterError::MalformedValue(reason)
}

#[cfg(test)]
mod tests;
