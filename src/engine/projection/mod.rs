//! A projection as the engine maps it (docs/writes.md): its fields, their casts and renames,
//! its primary key; and the mapping of a change event's images into field values (unknown
//! fields dropped, lenient or strict validation). [`statements`] turns a mapped change into
//! the MongoDB write statements.

use crate::engine::code::ErrorCode;
use std::collections::HashMap;

use mongodb::bson::{Bson, Document};
use serde_json::Value;

use crate::config::function_name;
use crate::config::{ProjectionConfig, Validation, WritesConfig};
use crate::engine::adapter::{Image, PrimaryKey};
use crate::engine::cast::{Cast, json_to_bson};
use crate::engine::script::ScriptHost;

mod statements;

pub use statements::{Check, Checked, Statement};
pub(crate) use statements::{Effect, Expect};

/// One projection field, ready to map.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    source: String,
    target: String,
    cast: FieldCast,
    nullable: bool,
    required: bool,
}

/// A field's cast: built in (docs/writes.md#cast-functions) or a user's JavaScript function (docs/writes.md#cast-functions).
#[derive(Debug, Clone)]
enum FieldCast {
    BuiltIn(Cast),
    Script { host: ScriptHost, name: String },
}

impl PartialEq for FieldCast {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FieldCast::BuiltIn(a), FieldCast::BuiltIn(b)) => a == b,
            (FieldCast::Script { name: a, .. }, FieldCast::Script { name: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl FieldCast {
    /// The cast value of `field`, or why the cast failed. A JavaScript cast that throws,
    /// returns nothing or breaks a limit fails (docs/writes.md#cast-functions).
    fn apply(&self, value: &Value, field: &str) -> Result<Bson, String> {
        match self {
            FieldCast::BuiltIn(cast) => cast.apply(value).map_err(|e| e.to_string()),
            FieldCast::Script { host, name } => {
                host.cast(name, value, field).map(|v| json_to_bson(&v)).map_err(|e| e.to_string())
            }
        }
    }

    /// The built-in cast adapters compare keys with (a JavaScript cast: identity).
    fn built_in(&self) -> Cast {
        match self {
            FieldCast::BuiltIn(cast) => *cast,
            FieldCast::Script { .. } => Cast::Identity,
        }
    }
}

/// A projection as the writer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The projection's name.
    pub name: String,
    /// Its collection.
    pub collection: String,
    fields: Vec<Field>,
    /// Source name -> index into `fields`.
    by_source: HashMap<String, usize>,
    /// Indexes into `fields` of the primary key, in order.
    primary_key: Vec<usize>,
    /// Indexes into `fields` of the required fields outside the primary key.
    required: Vec<usize>,
    writes: WritesConfig,
    /// Statements carry a [`Check`]: upsert is off, or strict validation has required fields.
    checked: bool,
}

/// Where the message came from: what the metadata of the write records.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka record timestamp, ms.
    pub timestamp_ms: i64,
    /// The parsed Kafka key (JSON if it parses, else the UTF-8 string, else null).
    pub key: Bson,
}

/// What a change becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The statements, in the order they must run (a PK change deletes first).
    pub statements: Vec<Statement>,
    /// Message fields that are not projection fields (dropped).
    pub unknown_fields: Vec<String>,
    /// Fields whose cast failed and were stored as null (lenient validation).
    pub uncastable_fields: Vec<String>,
}

/// A change that cannot be written: a message error of docs/failures.md.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// A primary-key value (or, in strict validation, any value) could not be cast.
    #[error("CAST_FAILED: field {field:?}: {reason}")]
    CastFailed {
        /// The source field.
        field: String,
        /// The cast's refusal.
        reason: String,
    },
    /// A primary-key value is null after casting.
    #[error("MISSING_PRIMARY_KEY: field {field:?} is null after casting")]
    MissingPrimaryKey {
        /// The source field.
        field: String,
    },
    /// The write cannot be encoded as BSON (a NUL byte in an object key of a value).
    #[error("MALFORMED_VALUE: the write cannot be encoded: {reason}")]
    Unencodable {
        /// The encoder's refusal.
        reason: String,
    },
    /// Strict validation: null for a field that is not nullable.
    #[error("VALIDATION_FAILED: field {field:?} is null but not nullable")]
    ValidationFailed {
        /// The source field.
        field: String,
    },
}

impl WriteError {
    /// The docs/failures.md error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            WriteError::CastFailed { .. } => ErrorCode::CastFailed,
            WriteError::MissingPrimaryKey { .. } => ErrorCode::MissingPrimaryKey,
            WriteError::ValidationFailed { .. } => ErrorCode::ValidationFailed,
            WriteError::Unencodable { .. } => ErrorCode::MalformedValue,
        }
    }
}

/// The write group (of `groups`) of a statement whose primary key hashes to `hash`.
pub fn group_of_hash(hash: u64, groups: usize) -> usize {
    (hash % groups.max(1) as u64) as usize
}

impl Projection {
    /// The projection of a validated config (cast ids already checked by `validate`).
    ///
    /// The rules of docs/writes.md#insert-update-upsert that override settings are enforced here, not refused: with
    /// `writes.upsert` false every delete is hard ([`WritesConfig::delete`]), even with an
    /// explicit `deleteMechanism: soft`; and only insert and update operations are checked,
    /// so the upserts of `basic`/`db2` (and a custom `upsert`) still create missing documents
    /// (upsert forced on). `EngineConfig::warnings` names such overridden settings for
    /// `rtu check`.
    pub fn new(config: &ProjectionConfig, writes: &WritesConfig) -> Result<Self, String> {
        Self::with_casts(config, writes, None)
    }

    /// [`Projection::new`], with the users' JavaScript casts a field's `cast` may name.
    pub fn with_casts(
        config: &ProjectionConfig,
        writes: &WritesConfig,
        casts: Option<&ScriptHost>,
    ) -> Result<Self, String> {
        let fields = config
            .fields
            .iter()
            .map(|f| {
                let name = function_name(&f.cast);
                let cast = match (f.cast.parse::<Cast>(), casts) {
                    (Ok(cast), _) => FieldCast::BuiltIn(cast),
                    (Err(_), Some(host)) if host.contains(name) => {
                        FieldCast::Script { host: host.clone(), name: name.to_string() }
                    }
                    (Err(e), _) => return Err(format!("field {:?}: {e}", f.name)),
                };
                let target = f.target.clone().unwrap_or_else(|| f.name.clone());
                Ok(Field {
                    source: f.name.clone(),
                    target,
                    cast,
                    nullable: f.nullable,
                    required: f.required,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let primary_key: Vec<usize> = config
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.primary_key)
            .map(|(i, _)| i)
            .collect();
        if primary_key.is_empty() {
            return Err(format!("projection {:?} has no primary-key field", config.name));
        }
        let by_source = fields.iter().enumerate().map(|(i, f)| (f.source.clone(), i)).collect();
        let required: Vec<usize> =
            (0..fields.len()).filter(|i| fields[*i].required && !primary_key.contains(i)).collect();
        let strict_required = writes.validation == Validation::Strict && !required.is_empty();
        Ok(Projection {
            name: config.name.clone(),
            collection: config.collection.clone().unwrap_or_else(|| config.name.clone()),
            fields,
            by_source,
            primary_key,
            required,
            writes: writes.clone(),
            checked: !writes.upsert || strict_required,
        })
    }

    /// The required fields outside the primary key (targets), checked on creation in strict
    /// validation.
    pub(crate) fn required_targets(&self) -> Vec<&str> {
        self.required.iter().map(|&i| self.fields[i].target.as_str()).collect()
    }

    /// The primary key as adapters read it: source names and casts, in order.
    pub fn adapter_key(&self) -> PrimaryKey {
        PrimaryKey(
            self.primary_key
                .iter()
                .map(|&i| (self.fields[i].source.clone(), self.fields[i].cast.built_in()))
                .collect(),
        )
    }

    /// Which of `groups` write groups a statement belongs to: a hash of its primary-key values,
    /// so every statement of one key lands in the same group, in order.
    pub fn group_of(&self, statement: &Statement, groups: usize) -> usize {
        group_of_hash(self.key_hash(statement), groups)
    }

    /// A hash of the primary key a statement writes (equal keys, equal hashes).
    pub fn key_hash(&self, statement: &Statement) -> u64 {
        use std::hash::{Hash, Hasher};
        let filter = match statement.plain() {
            Statement::Upsert { filter, .. } | Statement::Delete { filter } => filter,
            Statement::Checked(_) => return 0,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for &i in &self.primary_key {
            filter.get(&self.fields[i].target).map(ToString::to_string).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The primary-key target names, in order (the unique index the engine relies on).
    pub fn primary_key_targets(&self) -> Vec<&str> {
        self.primary_key.iter().map(|&i| self.fields[i].target.as_str()).collect()
    }

    /// Strict validation: the required fields (targets) the image lacks.
    fn required_absent(&self, image: &Image) -> Vec<String> {
        if self.writes.validation != Validation::Strict {
            return Vec::new();
        }
        self.required
            .iter()
            .map(|&i| &self.fields[i])
            .filter(|f| !image.contains_key(&f.source))
            .map(|f| f.target.clone())
            .collect()
    }

    fn key_filter(&self, key: &Image) -> Result<Document, WriteError> {
        let mut filter = Document::new();
        for &i in &self.primary_key {
            let field = &self.fields[i];
            let raw = key.get(&field.source).unwrap_or(&Value::Null);
            let cast = field
                .cast
                .apply(raw, &field.source)
                .map_err(|reason| WriteError::CastFailed { field: field.source.clone(), reason })?;
            if cast == Bson::Null {
                return Err(WriteError::MissingPrimaryKey { field: field.source.clone() });
            }
            filter.insert(field.target.clone(), cast);
        }
        Ok(filter)
    }

    /// `$set` of the projection fields present in the image, cast and renamed.
    fn mapped_fields(&self, image: &Image, mapped: &mut Mapped) -> Result<Document, WriteError> {
        let mut set = Document::new();
        for (name, value) in image {
            let Some(field) = self.by_source.get(name).map(|&i| &self.fields[i]) else {
                mapped.unknown_fields.push(name.clone());
                continue;
            };
            let strict = self.writes.validation == Validation::Strict;
            let cast = match field.cast.apply(value, name) {
                Ok(v) => v,
                Err(reason) if strict => {
                    return Err(WriteError::CastFailed { field: name.clone(), reason });
                }
                Err(reason) => {
                    tracing::debug!(field = %name, %reason, "cast failed; stored as null");
                    mapped.uncastable_fields.push(name.clone());
                    Bson::Null
                }
            };
            if strict && cast == Bson::Null && !field.nullable {
                return Err(WriteError::ValidationFailed { field: name.clone() });
            }
            set.insert(field.target.clone(), cast);
        }
        Ok(set)
    }
}

/// The Kafka key as recorded in `__internal__kafkaInfo.key`: JSON if it parses, else the
/// UTF-8 string, else null.
pub fn parse_kafka_key(key: Option<&[u8]>) -> Bson {
    let Some(bytes) = key else { return Bson::Null };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => json_to_bson(&v),
        Err(_) => std::str::from_utf8(bytes).map_or(Bson::Null, |s| Bson::String(s.to_string())),
    }
}

#[cfg(test)]
mod tests;
