//! What the engine announces after each applied projection write (SPEC §4): the pr-update
//! event (§4.1), the sv-trigger event (§4.3) and the projection-changes upsert (§4.2). The
//! builders are pure: they turn one [`Change`] into Kafka keys and values or MongoDB
//! statements; only [`projection_changes`] talks to MongoDB, to send a batch of upserts.

pub mod json;
pub mod pr_update;
pub mod projection_changes;
pub mod sv_trigger;

use mongodb::bson::{DateTime, Document};
use serde_json::{Map, Value};

use crate::engine::projection::Source;

pub use pr_update::{PR_UPDATE_V1_SCHEMA, pr_update_key, pr_update_value_v1};
pub use projection_changes::{
    ChangeUpsert, ProjectionChangesError, ensure_projection_change_indexes,
    projection_change_update, upsert_projection_changes,
};
pub use sv_trigger::{Record, SV_TRIGGER_SCHEMA, sv_trigger};

/// The Kafka header that names the schema of an event's value.
pub const MESSAGE_SCHEMA_HEADER: &str = "messageSchema";

/// One applied projection write, as the outputs see it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
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

impl Change<'_> {
    /// The document the event is about: `after`, or for a delete `before` (either one when
    /// the other is missing).
    pub fn document(&self) -> Result<&Document, OutputError> {
        let (first, second) = match self.op {
            ChangeOp::Delete => (self.before, self.after),
            ChangeOp::Insert | ChangeOp::Update => (self.after, self.before),
        };
        first.or(second).ok_or(OutputError::NoDocument { projection: self.projection.to_string() })
    }

    /// The primary key of [`Change::document`] as a JSON object, in key order.
    pub fn primary_key_json(&self) -> Result<Value, OutputError> {
        let document = self.document()?;
        let mut key = Map::new();
        for field in self.primary_keys {
            let value = document.get(field).ok_or_else(|| OutputError::MissingPrimaryKey {
                projection: self.projection.to_string(),
                field: field.clone(),
            })?;
            key.insert(field.clone(), json::to_json(value));
        }
        Ok(Value::Object(key))
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

/// `__internal__kafkaInfo` of an event: the offset as an integer, the timestamp as ISO.
fn kafka_info_json(kafka: &Source) -> Value {
    let mut info = Map::new();
    info.insert("topic".into(), Value::from(kafka.topic.as_str()));
    info.insert("partition".into(), Value::from(kafka.partition));
    info.insert("offset".into(), Value::from(kafka.offset));
    info.insert("key".into(), json::to_json(&kafka.key));
    info.insert("timestamp".into(), Value::from(json::iso_date(kafka.timestamp_ms)));
    Value::Object(info)
}

/// `value` as UTF-8 JSON bytes.
fn to_bytes(change: &Change, value: &Value) -> Result<Vec<u8>, OutputError> {
    serde_json::to_vec(value).map_err(|source| OutputError::Serialize {
        projection: change.projection.to_string(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Stored documents as the engine writes them (SPEC §3.7), for the builders' tests.

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
