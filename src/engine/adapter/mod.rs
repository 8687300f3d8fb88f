//! Adapters (docs/formats.md): each turns one Kafka record of its format into the normalised
//! [`ChangeEvent`], a [`Skip`] the format defines, or a message error ([`AdapterError`]). The
//! change event is the only contract between adapters and the projection writer.

mod basic;
mod custom;
mod debezium;
mod golden_gate;
mod pairing;

use crate::engine::code::ErrorCode;
use serde_json::{Map, Value};

use crate::engine::cast::{Cast, CastError};

pub use basic::{AuditCounter, AuditMode, Iidr, IidrOptions};
pub use custom::{CustomMapping, KeySource, NullValue, OperationMapping};
pub use debezium::{Debezium, DebeziumCounter, DebeziumFormat, DebeziumOptions};
pub use pairing::Pairing;

/// A row image: source field name -> raw (uncast) value.
pub type Image = Map<String, Value>;

/// The key and value bytes of one Kafka record (`None` = null; empty counts as null).
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaRecord<'a> {
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub value: Option<&'a [u8]>,
}

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The row was created.
    Insert,
    /// The row changed.
    Update,
    /// The row was written; the source does not say whether it existed.
    Upsert,
    /// The row was removed.
    Delete,
}

/// One normalised change (docs/formats.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// Every primary-key field (source name) with its raw, non-null value.
    pub key: Image,
    /// The row before the change, when the format carries it (may be partial).
    pub before: Option<Image>,
    /// The row after the change; always set unless `op` is `Delete` (may be partial).
    pub after: Option<Image>,
    /// The CDC position (GoldenGate `pos`, custom `position`), the counter of kind `position`.
    pub position: Option<u128>,
}

impl ChangeEvent {
    /// A delete of the row with this primary key.
    pub fn delete(key: Image) -> Self {
        ChangeEvent { op: Op::Delete, key, before: None, after: None, position: None }
    }

    /// An upsert of `after` (the source does not say whether the row existed).
    pub fn upsert(key: Image, after: Image, position: Option<u128>) -> Self {
        ChangeEvent { op: Op::Upsert, key, before: None, after: Some(after), position }
    }
}

/// The before image of an IIDR audit update (`A_ENTTYP` `UB`): written by the after image
/// (`UP`) that follows it, never on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct BeforeImage {
    /// The row before the update, audit columns dropped.
    pub image: Image,
    /// Its commit cycle id (`A_CCID`), when the KCOP writes it.
    pub commit: Option<String>,
}

/// A record the format defines as "nothing to do"; counted by reason, offset committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A null value the format uses as a compaction marker (Debezium, GoldenGate).
    Tombstone,
    /// A Debezium truncate (`op: "t"`), which projections do not support.
    Truncate,
    /// A null value a custom mapping says to skip.
    NullValue,
    /// An IIDR audit before image (`UB`); its update is written by the `UP` that follows.
    BeforeImage,
    /// A Debezium transaction metadata record (`status` `BEGIN` / `END`).
    TransactionMarker,
    /// A Debezium schema change record (`ddl`, `tableChanges`).
    SchemaChange,
    /// A Debezium heartbeat (`{"ts_ms": ..}` only).
    Heartbeat,
}

impl Skip {
    /// The `rtu_skipped_total` reason label.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Tombstone => "tombstone",
            Skip::Truncate => "truncate",
            Skip::NullValue => "null_value",
            Skip::BeforeImage => "before_image",
            Skip::TransactionMarker => "transaction_marker",
            Skip::SchemaChange => "schema_change",
            Skip::Heartbeat => "heartbeat",
        }
    }
}

/// What an adapter makes of one record.
// Nearly every record is a Change; boxing it would allocate once more per message to shrink
// the rare Skip.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Adapted {
    /// A change to write.
    Change(ChangeEvent),
    /// Nothing to write.
    Skip(Skip),
    /// An IIDR audit before image, kept for the after image that follows ([`Pairing`]).
    BeforeImage(BeforeImage),
    /// An IIDR audit after image (`UP`): a change that takes the before image just before it
    /// on its partition, when that one is of the same commit.
    AfterImage {
        /// The change, without a before image.
        change: ChangeEvent,
        /// Its commit cycle id (`A_CCID`), when the KCOP writes it.
        commit: Option<String>,
    },
}

/// A record the adapter cannot turn into a change: a message error of docs/failures.md.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    /// The key is not what the format requires.
    #[error("MALFORMED_KEY: {0}")]
    MalformedKey(String),
    /// The value is not what the format requires.
    #[error("MALFORMED_VALUE: {0}")]
    MalformedValue(String),
    /// A primary-key field is absent or null where the format says to find it.
    #[error("MISSING_PRIMARY_KEY: field {field:?} is absent or null in {place}")]
    MissingPrimaryKey {
        /// The primary-key field (source name).
        field: String,
        /// Where it was looked for.
        place: &'static str,
    },
    /// Key and value disagree on a primary-key field.
    #[error("KEY_MISMATCH: field {field:?} is {in_key} in the key but {in_value} in the value")]
    KeyMismatch {
        /// The primary-key field.
        field: String,
        /// Its value in the Kafka key, as JSON.
        in_key: String,
        /// Its value in the record value, as JSON.
        in_value: String,
    },
    /// The operation is not one the format knows.
    #[error("UNKNOWN_OPERATION: {0}")]
    UnknownOperation(String),
    /// A primary-key value could not be cast to compare key and value.
    #[error("CAST_FAILED: primary-key field {field:?}: {source}")]
    CastFailed {
        /// The primary-key field.
        field: String,
        /// The cast failure.
        source: CastError,
    },
    /// A custom adapter broke its contract.
    #[error("CUSTOM_ADAPTER_FAILED: {0}")]
    CustomAdapterFailed(String),
}

impl AdapterError {
    /// The docs/failures.md error code (dead-letter header `rtu-dlq-reason`, metrics label).
    pub fn code(&self) -> ErrorCode {
        match self {
            AdapterError::MalformedKey(_) => ErrorCode::MalformedKey,
            AdapterError::MalformedValue(_) => ErrorCode::MalformedValue,
            AdapterError::MissingPrimaryKey { .. } => ErrorCode::MissingPrimaryKey,
            AdapterError::KeyMismatch { .. } => ErrorCode::KeyMismatch,
            AdapterError::UnknownOperation(_) => ErrorCode::UnknownOperation,
            AdapterError::CastFailed { .. } => ErrorCode::CastFailed,
            AdapterError::CustomAdapterFailed(_) => ErrorCode::CustomAdapterFailed,
        }
    }
}

/// The primary key of a projection: its fields (source names) in order, with their casts.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryKey(pub Vec<(String, Cast)>);

impl PrimaryKey {
    /// The primary-key fields of `image`, or the first one that is absent or null.
    fn extract(&self, image: &Image, place: &'static str) -> Result<Image, AdapterError> {
        self.0
            .iter()
            .map(|(field, _)| match image.get(field) {
                Some(v) if !v.is_null() => Ok((field.clone(), v.clone())),
                _ => Err(AdapterError::MissingPrimaryKey { field: field.clone(), place }),
            })
            .collect()
    }
}

/// The message format of a System of Record.
#[derive(Debug, Clone, PartialEq)]
pub enum Adapter {
    /// IBM IIDR / DB2 KCOP JSON (`basic`, alias `db2`), plain or audit records.
    Basic(Iidr),
    /// Oracle GoldenGate JSON; `use_pos_as_counter` makes `pos` the counter (default true).
    GoldenGate {
        /// Read `pos` as the CDC position.
        use_pos_as_counter: bool,
    },
    /// Debezium: the envelope or `ExtractNewRecordState` rows, with or without schemas.
    Debezium(Debezium),
    /// A declarative mapping.
    Custom(CustomMapping),
}

impl Adapter {
    /// Turns one record into a change, a skip, or a message error.
    pub fn adapt(&self, record: KafkaRecord<'_>, pk: &PrimaryKey) -> Result<Adapted, AdapterError> {
        match self {
            Adapter::Basic(iidr) => iidr.adapt(record, pk),
            Adapter::GoldenGate { use_pos_as_counter } => {
                golden_gate::adapt(record, pk, *use_pos_as_counter)
            }
            Adapter::Debezium(debezium) => debezium.adapt(record, pk),
            Adapter::Custom(mapping) => custom::adapt(record, pk, mapping),
        }
    }
}

/// Bytes that are absent or empty count as null; others must be a JSON object, else `error`
/// says why.
fn json_object(
    bytes: Option<&[u8]>,
    error: fn(String) -> AdapterError,
) -> Result<Option<Image>, AdapterError> {
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else { return Ok(None) };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(error(format!("not a JSON object: {}", kind(&other)))),
        Err(e) => Err(error(format!("not JSON: {e}"))),
    }
}

/// The record value as a JSON object, `None` when null or empty.
fn value_object(record: KafkaRecord<'_>) -> Result<Option<Image>, AdapterError> {
    json_object(record.value, AdapterError::MalformedValue)
}

/// The record key as a JSON object, `None` when null or empty.
fn key_object(record: KafkaRecord<'_>) -> Result<Option<Image>, AdapterError> {
    json_object(record.key, AdapterError::MalformedKey)
}

/// Takes an image field out of its container: an object, or `None` when absent or null.
fn take_image(container: &mut Image, field: &str) -> Result<Option<Image>, AdapterError> {
    match container.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(AdapterError::MalformedValue(format!(
            "{field:?} is {}, not an object",
            kind(&other)
        ))),
    }
}

/// The largest CDC position: 34 digits, what a BSON Decimal128 counter holds exactly.
pub const MAX_POSITION: u128 = 10_u128.pow(34) - 1;

/// A CDC position: an unsigned decimal integer up to [`MAX_POSITION`], as a number or a digit
/// string (leading zeros ignored).
pub(crate) fn parse_position(value: &Value) -> Option<u128> {
    let position = match value {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    position.filter(|p| *p <= MAX_POSITION)
}

/// A JSON type name for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! The docs/formats.md fixture: projection `pr_customers`, PK `customer_id` (castToString).

    use super::*;

    pub fn pk() -> PrimaryKey {
        PrimaryKey(vec![("customer_id".to_string(), Cast::ToString)])
    }

    pub fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> KafkaRecord<'a> {
        KafkaRecord { key: key.map(str::as_bytes), value: value.map(str::as_bytes) }
    }

    pub fn obj(value: Value) -> Image {
        match value {
            Value::Object(map) => map,
            other => panic!("fixture {other} is not an object"),
        }
    }

    pub fn change(result: Result<Adapted, AdapterError>) -> ChangeEvent {
        match result {
            Ok(Adapted::Change(c)) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    pub fn code(result: Result<Adapted, AdapterError>) -> ErrorCode {
        match result {
            Err(e) => e.code(),
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }
}
