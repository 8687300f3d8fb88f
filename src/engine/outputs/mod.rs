//! What the engine announces after each applied projection write (docs/outputs.md): the pr-update
//! event (docs/outputs.md#pr-update-events), the sv-trigger event (docs/outputs.md#sv-trigger-events) and the projection-changes upsert (docs/outputs.md#projection-changes). The
//! builders are pure: they turn one [`AppliedWrite`] into Kafka keys and values or MongoDB
//! statements; only [`projection_changes`] talks to MongoDB, to send a batch of upserts.

pub mod json;
pub mod pr_update;
pub mod projection_changes;
pub mod sv_trigger;

use mongodb::bson::{Bson, DateTime, Document};

use crate::engine::code::ErrorCode;
use crate::engine::projection::Source;
use crate::engine::writer::Images;

pub use pr_update::{CONTEXT_HEADER, PR_UPDATE_V1_SCHEMA, PR_UPDATE_V2_SCHEMA};
pub use projection_changes::{ChangeUpsert, PendingChange, ProjectionChangesError, Recorded};
pub use sv_trigger::{SV_TRIGGER_SCHEMA, TriggerRecord, sv_trigger};

/// The Kafka header that names the schema of an event's value.
pub const MESSAGE_SCHEMA_HEADER: &str = "messageSchema";

/// One applied write of a batch.
pub struct Applied<'a> {
    /// The batch index of its message.
    pub message: usize,
    /// The projection.
    pub projection: &'a str,
    /// The projection's primary-key targets, in order.
    pub primary_keys: &'a [String],
    /// The stored document before and after.
    pub images: &'a Images,
    /// Where its message came from.
    pub source: &'a Source,
    /// When its batch was polled, ms since the epoch.
    pub polled_at_ms: i64,
}

/// A message whose outputs failed (a message error of docs/failures.md): a strategy threw or
/// timed out for it, or one of its events could not be built.
pub struct FailedMessage {
    /// The batch index of the message.
    pub message: usize,
    /// `STRATEGY_FAILED`, `STRATEGY_TIMEOUT` or `OUTPUT_FAILED`.
    pub code: ErrorCode,
    /// Why.
    pub reason: String,
}

/// One applied projection write, as the event builders see it.
#[derive(Debug, Clone, Copy)]
pub struct AppliedWrite<'a> {
    /// The projection's name.
    pub projection: &'a str,
    /// The system of record.
    pub source: &'a str,
    /// The primary-key target fields, in key order.
    pub primary_keys: &'a [String],
    /// What the write did.
    pub op: ChangeOp,
    /// The write time.
    pub written_at: DateTime,
    /// The stored document before the write (with `_id`), if there was one.
    pub before: Option<&'a Document>,
    /// The stored document after the write (with `_id`); `None` after a hard delete. After a
    /// soft delete it may be the `DELETED` document: events never show it, but it names the
    /// document when there was none before (the marker of a delete of a missing document).
    pub after: Option<&'a Document>,
    /// The message that caused the write.
    pub kafka: &'a Source,
}

/// What a write did to the projection, as `operationType` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// No live document existed: created, resurrected from `DELETED`, or a PK-change target.
    Insert,
    /// A live document existed and was updated.
    Update,
    /// The document was deleted (soft or hard).
    Delete,
}

impl ChangeOp {
    /// The `operationType` of a pr-update.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "INSERT",
            ChangeOp::Update => "UPDATE",
            ChangeOp::Delete => "DELETE",
        }
    }
}

impl<'a> AppliedWrite<'a> {
    /// The document the event is about: `after`, or for a delete `before` (either one when
    /// the other is missing).
    pub fn document(&self) -> Result<&Document, OutputError> {
        let (first, second) = match self.op {
            ChangeOp::Delete => (self.before, self.after),
            ChangeOp::Insert | ChangeOp::Update => (self.after, self.before),
        };
        first.or(second).ok_or(OutputError::NoDocument { projection: self.projection.to_string() })
    }

    /// The primary key of [`AppliedWrite::document`]: its fields and values, in key order.
    pub fn primary_key(&self) -> Result<Vec<(&str, &Bson)>, OutputError> {
        let document = self.document()?;
        let field_of = |field: &'a String| {
            let value = document.get(field).ok_or_else(|| OutputError::MissingPrimaryKey {
                projection: self.projection.to_string(),
                field: field.clone(),
            })?;
            Ok((field.as_str(), value))
        };
        self.primary_keys.iter().map(field_of).collect()
    }

    /// Runs `write` into a fresh buffer of `capacity` bytes: the JSON bytes of an event.
    fn json(
        &self,
        capacity: usize,
        write: impl FnOnce(&mut Vec<u8>) -> json::Written,
    ) -> Result<Vec<u8>, OutputError> {
        let mut out = Vec::with_capacity(capacity);
        write(&mut out).map_err(|source| OutputError::Serialize {
            projection: self.projection.to_string(),
            source,
        })?;
        Ok(out)
    }
}

/// Why an event could not be built (a bug of the caller, not a transient failure).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The change carries neither a `before` nor an `after` document.
    #[error("a change of {projection} has no stored document to describe")]
    NoDocument {
        /// The projection.
        projection: String,
    },
    /// The stored document lacks a primary-key field.
    #[error("the stored document of {projection} has no primary-key field {field:?}")]
    MissingPrimaryKey {
        /// The projection.
        projection: String,
        /// The primary-key field.
        field: String,
    },
    /// The stored document has no `_id`.
    #[error("the stored document of {projection} has no _id")]
    MissingId {
        /// The projection.
        projection: String,
    },
    /// Serialising the JSON value failed.
    #[error("serialising an event of {projection} failed: {source}")]
    Serialize {
        /// The projection.
        projection: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

/// Appends a primary key (of [`AppliedWrite::primary_key`]) as a JSON object, in key order.
fn write_primary_key(fields: &[(&str, &Bson)], out: &mut Vec<u8>) -> json::Written {
    let mut key = json::Object::open(out);
    for (field, value) in fields {
        json::write_value(value, key.key(field)?)?;
    }
    key.close();
    Ok(())
}

/// Appends `__internal__kafkaInfo` of an event: the offset as an integer, the timestamp as ISO.
fn write_kafka_info(kafka: &Source, out: &mut Vec<u8>) -> json::Written {
    let mut info = json::Object::open(out);
    json::write_str(&kafka.topic, info.key("topic")?)?;
    serde_json::to_writer(info.key("partition")?, &kafka.partition)?;
    serde_json::to_writer(info.key("offset")?, &kafka.offset)?;
    json::write_value(&kafka.key, info.key("key")?)?;
    json::write_date(kafka.timestamp_ms, info.key("timestamp")?);
    info.close();
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Stored documents as the engine writes them (docs/writes.md#metadata), for the builders' tests.

    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{Bson, DateTime, Document, doc};

    use crate::engine::projection::Source;

    /// 2023-11-14T22:13:20.000Z.
    pub const T0: i64 = 1_700_000_000_000;
    /// The write time of B1: T0 + 42 ms.
    pub const W: i64 = T0 + 42;

    pub fn source(topic: &str, partition: i32, offset: i64, key: Bson) -> Source {
        Source { topic: topic.into(), partition, offset, timestamp_ms: T0, key }
    }

    pub fn customers_source(offset: i64, customer: &str) -> Source {
        source(
            "acme.dev.crm.pr_customers.ingestion",
            0,
            offset,
            Bson::Document(doc! { "customer_id": customer }),
        )
    }

    /// The metadata of a write by `source` at `written` (createdAt = `created`).
    pub fn metadata(state: &str, source: &Source, created: i64, written: i64) -> Document {
        let timestamp = DateTime::from_millis(source.timestamp_ms);
        doc! {
            "__STATE__": state,
            "createdAt": DateTime::from_millis(created),
            "updatedAt": DateTime::from_millis(written),
            "timestamp": timestamp,
            "__internal__counter": source.offset,
            "__internal__counterType": "offset",
            "__internal__kafkaInfo": {
                "topic": &source.topic,
                "partition": source.partition,
                "offset": source.offset.to_string(),
                "key": source.key.clone(),
                "timestamp": timestamp,
            },
        }
    }

    /// The stored document of B1 (vector #1).
    pub fn b1(source: &Source) -> Document {
        let mut stored = doc! {
            "_id": ObjectId::parse_str("655400000000000000000001").unwrap(),
            "customer_id": "C-1", "name": "Ada", "age": 36_i64,
            "signup_at": DateTime::from_millis(1_673_740_800_000), "vip": true,
        };
        stored.extend(metadata("PUBLIC", source, W, W));
        stored
    }
}
