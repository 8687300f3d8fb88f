//! From a change event to MongoDB write statements (docs/writes.md): field mapping and casts, the
//! metadata of every write, upsert or soft/hard delete, the primary-key change, and the stale
//! guard, which lives inside each statement's filter so that two writers cannot race. With
//! upsert off or strict `required` fields, statements also carry the [`Check`] of the stored
//! document the writer makes before sending them.

use crate::engine::code::ErrorCode;
use std::collections::HashMap;

use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawDocumentBuf, doc};
use serde_json::Value;

use crate::config::function_name;
use crate::config::{DeleteMechanism, ProjectionConfig, Validation, WritesConfig};
use crate::engine::adapter::{ChangeEvent, Image, Op, PrimaryKey};
use crate::engine::cast::{Cast, json_to_bson};
use crate::engine::encode;
use crate::engine::script::ScriptHost;

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

/// One write, as a statement of a raw `update` or `delete` command.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `{q: filter, u: update, upsert: true}`; a duplicate key on the primary-key index means
    /// the stored document is newer (stale message).
    Upsert {
        /// Primary key plus the stale guard.
        filter: Document,
        /// `$set` / `$setOnInsert`, already encoded (see [`crate::engine::encode`]).
        update: RawDocumentBuf,
    },
    /// `{q: filter, limit: 1}`.
    Delete {
        /// Primary key plus the stale guard.
        filter: Document,
    },
    /// An `Upsert` or `Delete` the writer sends only when the stored document passes its
    /// check; otherwise the message fails with the check's code.
    Checked(Box<Checked>),
}

impl Statement {
    /// The statement sent to MongoDB (the inner one of a `Checked`).
    pub fn plain(&self) -> &Statement {
        match self {
            Statement::Checked(c) => c.statement.plain(),
            other => other,
        }
    }
}

/// A statement with its check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The `Upsert` or `Delete`.
    pub statement: Statement,
    /// What the stored document must be, and what the statement makes of it.
    pub check: Check,
}

/// What a statement needs from the stored document, known only at write time (docs/writes.md#validation-modes
/// `required` on creation, docs/writes.md#insert-update-upsert upsert off), and what it does to it, so that the writer can
/// judge a batch's statements of one key in order from a single read.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The primary key (target names, in order).
    pub(crate) key: Document,
    /// What the stored document must be.
    pub(crate) expect: Expect,
    /// Strict validation: required fields (targets) absent from the image.
    pub(crate) required_absent: Vec<String>,
    /// The incoming counter, its type and where the message comes from (the stale guard).
    pub(crate) counter: Bson,
    pub(crate) kind: &'static str,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The stale guard is on.
    pub(crate) guard: bool,
    /// What the statement leaves when it applies.
    pub(crate) effect: Effect,
}

/// What a statement requires of the stored document (`DELETED` counts as missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Anything (upserts, deletes).
    Any,
    /// A live document (an update with upsert off), else `MISSING_DOCUMENT`.
    Live,
    /// No live document (an insert with upsert off), else `DUPLICATE_INSERT`, unless the
    /// stored document was written by this very message (a replay).
    NotLive,
}

/// What a statement leaves when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A `PUBLIC` document.
    Live,
    /// A `DELETED` document (soft delete).
    Deleted,
    /// No document (hard delete).
    Removed,
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

/// The counter a message carries (docs/writes.md#stale-guard).
struct Counter {
    value: Bson,
    kind: &'static str,
}

impl Counter {
    fn of(change: &ChangeEvent, source: &Source) -> Self {
        match change.position {
            Some(p) => Counter { value: position_counter(p), kind: "position" },
            None => Counter { value: Bson::Int64(source.offset), kind: "offset" },
        }
    }
}

/// A position as a counter MongoDB compares numerically: int64 when it fits, else Decimal128
/// (adapters bound positions to 34 digits, which Decimal128 holds exactly).
fn position_counter(p: u128) -> Bson {
    match i64::try_from(p) {
        Ok(v) => Bson::Int64(v),
        Err(_) => {
            p.to_string().parse::<Decimal128>().map_or(Bson::Double(p as f64), Bson::Decimal128)
        }
    }
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
        use std::hash::{Hash, Hasher};
        let filter = match statement.plain() {
            Statement::Upsert { filter, .. } | Statement::Delete { filter } => filter,
            Statement::Checked(_) => return 0,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for &i in &self.primary_key {
            filter.get(&self.fields[i].target).map(ToString::to_string).hash(&mut hasher);
        }
        (hasher.finish() % groups.max(1) as u64) as usize
    }

    /// The primary-key target names, in order (the unique index the engine relies on).
    pub fn primary_key_targets(&self) -> Vec<&str> {
        self.primary_key.iter().map(|&i| self.fields[i].target.as_str()).collect()
    }

    /// The statements for one change; `now` is the write time (`createdAt`, `updatedAt`).
    pub fn map(
        &self,
        change: &ChangeEvent,
        source: &Source,
        now: DateTime,
    ) -> Result<Mapped, WriteError> {
        let counter = Counter::of(change, source);
        let key_filter = self.key_filter(&change.key)?;
        let mut mapped = Mapped {
            statements: Vec::new(),
            unknown_fields: Vec::new(),
            uncastable_fields: Vec::new(),
        };
        if change.op == Op::Delete {
            mapped.statements.push(self.delete(key_filter, &counter, source, now)?);
            return Ok(mapped);
        }
        let mut expect = match change.op {
            Op::Insert if !self.writes.upsert => Expect::NotLive,
            Op::Update if !self.writes.upsert => Expect::Live,
            _ => Expect::Any,
        };
        // A before image with a different primary key is a PK change: delete the old first,
        // then upsert the new one (which creates it, whatever the operation).
        if let Some(old_filter) = change.before.as_ref().and_then(|b| self.key_filter(b).ok())
            && old_filter != key_filter
        {
            mapped.statements.push(self.delete(old_filter, &counter, source, now)?);
            expect = Expect::Any;
        }
        let empty = Image::new();
        let after = change.after.as_ref().unwrap_or(&empty);
        let set = self.mapped_fields(after, &mut mapped)?;
        let check = self.checked.then(|| {
            let required_absent = self.required_absent(after);
            self.check(&key_filter, expect, required_absent, Effect::Live, &counter, source)
        });
        let upsert = self.upsert(key_filter, set, &counter, source, now)?;
        mapped.statements.push(with_check(upsert, check));
        Ok(mapped)
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

    fn check(
        &self,
        key: &Document,
        expect: Expect,
        required_absent: Vec<String>,
        effect: Effect,
        counter: &Counter,
        source: &Source,
    ) -> Check {
        Check {
            key: key.clone(),
            expect,
            required_absent,
            counter: counter.value.clone(),
            kind: counter.kind,
            topic: source.topic.clone(),
            partition: source.partition,
            guard: self.writes.stale_guard,
            effect,
        }
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

    /// The metadata every write sets (docs/writes.md#metadata).
    fn metadata(&self, state: &str, counter: &Counter, source: &Source, now: DateTime) -> Document {
        let timestamp = DateTime::from_millis(source.timestamp_ms);
        doc! {
            "__STATE__": state,
            "updatedAt": now,
            "timestamp": timestamp,
            "__internal__kafkaInfo": {
                "topic": &source.topic,
                "partition": source.partition,
                "offset": source.offset.to_string(),
                "key": source.key.clone(),
                "timestamp": timestamp,
            },
            "__internal__counter": counter.value.clone(),
            "__internal__counterType": counter.kind,
        }
    }

    /// The primary key plus the stale guard: apply when nothing comparable is stored, or the
    /// incoming counter is at least the stored one.
    fn guarded(&self, mut filter: Document, counter: &Counter, source: &Source) -> Document {
        if !self.writes.stale_guard {
            return filter;
        }
        let mut apply = vec![
            doc! { "__internal__counter": { "$exists": false } },
            doc! { "__internal__counterType": { "$ne": counter.kind } },
            doc! { "__internal__counter": { "$lte": counter.value.clone() } },
        ];
        if counter.kind == "offset" {
            apply.push(doc! { "__internal__kafkaInfo.topic": { "$ne": &source.topic } });
            apply.push(doc! { "__internal__kafkaInfo.partition": { "$ne": source.partition } });
        }
        filter.insert("$or", apply);
        filter
    }

    fn upsert(
        &self,
        key: Document,
        set: Document,
        counter: &Counter,
        source: &Source,
        now: DateTime,
    ) -> Result<Statement, WriteError> {
        let mut fields = set;
        fields.extend(self.metadata("PUBLIC", counter, source, now));
        let update = doc! { "$set": fields, "$setOnInsert": { "createdAt": now } };
        Ok(Statement::Upsert {
            filter: self.guarded(key, counter, source),
            update: encoded(&update)?,
        })
    }

    fn delete(
        &self,
        key: Document,
        counter: &Counter,
        source: &Source,
        now: DateTime,
    ) -> Result<Statement, WriteError> {
        let mechanism = self.writes.delete();
        let effect = match mechanism {
            DeleteMechanism::Hard => Effect::Removed,
            DeleteMechanism::Soft => Effect::Deleted,
        };
        let check = self
            .checked
            .then(|| self.check(&key, Expect::Any, Vec::new(), effect, counter, source));
        let filter = self.guarded(key, counter, source);
        let statement = match mechanism {
            DeleteMechanism::Hard => Statement::Delete { filter },
            DeleteMechanism::Soft => Statement::Upsert {
                filter,
                update: encoded(&doc! {
                    "$set": self.metadata("DELETED", counter, source, now),
                    "$setOnInsert": { "createdAt": now },
                })?,
            },
        };
        Ok(with_check(statement, check))
    }
}

/// An update as the bytes the writer sends; a key MongoDB cannot store (a NUL byte, from a
/// message's object value) is a malformed value.
fn encoded(update: &Document) -> Result<RawDocumentBuf, WriteError> {
    encode::to_raw(update).map_err(|e| WriteError::Unencodable { reason: e.to_string() })
}

/// `statement`, wrapped with its check when there is one.
fn with_check(statement: Statement, check: Option<Check>) -> Statement {
    match check {
        Some(check) => Statement::Checked(Box::new(Checked { statement, check })),
        None => statement,
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::adapter::Image;

    fn projection(writes: WritesConfig, rename_name: bool) -> Projection {
        let mut name =
            json!({ "name": "name", "type": "String", "cast": "castToString", "nullable": true });
        if rename_name {
            name["target"] = json!("fullName");
        }
        let config: ProjectionConfig = serde_json::from_value(json!({
            "name": "pr_customers",
            "topics": ["t"],
            "fields": [
                { "name": "customer_id", "type": "String", "cast": "castToString", "primaryKey": true },
                name,
                { "name": "age", "type": "Number", "cast": "castToInteger", "nullable": true },
                { "name": "signup_at", "type": "Date", "cast": "castToDate", "nullable": true },
                { "name": "vip", "type": "Boolean", "cast": "castStringToBoolean" },
            ],
        }))
        .unwrap();
        Projection::new(&config, &writes).unwrap()
    }

    fn image(v: Value) -> Image {
        v.as_object().unwrap().clone()
    }

    fn upsert(after: Value) -> ChangeEvent {
        let after = image(after);
        let key = image(
            json!({ "customer_id": after.get("customer_id").cloned().unwrap_or(json!("C-1")) }),
        );
        ChangeEvent { op: Op::Upsert, key, before: None, after: Some(after), position: None }
    }

    fn source() -> Source {
        Source { topic: "t".into(), partition: 0, offset: 100, timestamp_ms: 0, key: Bson::Null }
    }

    fn set_of(mapped: &Mapped) -> Document {
        match &mapped.statements[..] {
            [Statement::Upsert { update, .. }] => {
                Document::try_from(update.get_document("$set").unwrap()).unwrap()
            }
            other => panic!("expected one upsert, got {other:?}"),
        }
    }

    fn strict() -> WritesConfig {
        WritesConfig { validation: Validation::Strict, ..WritesConfig::default() }
    }

    #[test]
    fn lenient_casts_store_null_and_count_uncastable_fields() {
        // docs/vectors.md #15 and #17.
        let p = projection(WritesConfig::default(), false);
        let change = upsert(
            json!({ "customer_id": "C-1", "age": "42.9", "signup_at": "2024-02-30", "vip": "TRUE", "name": 12.5 }),
        );
        let mapped = p.map(&change, &source(), DateTime::now()).unwrap();
        let set = set_of(&mapped);
        assert_eq!(set.get_i64("age").unwrap(), 42);
        assert_eq!(set.get("signup_at"), Some(&Bson::Null));
        assert_eq!(set.get("vip"), Some(&Bson::Null));
        assert_eq!(set.get_str("name").unwrap(), "12.5");
        assert_eq!(mapped.uncastable_fields, ["signup_at", "vip"]);
    }

    #[test]
    fn strict_validation_makes_message_errors() {
        // docs/vectors.md #16.
        let p = projection(strict(), false);
        let err = p
            .map(&upsert(json!({ "customer_id": "C-1", "age": "abc" })), &source(), DateTime::now())
            .unwrap_err();
        assert_eq!(err.code(), "CAST_FAILED");
        assert!(err.to_string().contains("\"age\""), "{err}");
        let err = p
            .map(&upsert(json!({ "customer_id": "C-1", "vip": null })), &source(), DateTime::now())
            .unwrap_err();
        assert_eq!(err, WriteError::ValidationFailed { field: "vip".into() });
        assert!(
            p.map(
                &upsert(json!({ "customer_id": "C-1", "age": null })),
                &source(),
                DateTime::now()
            )
            .is_ok()
        );
    }

    #[test]
    fn metadata_named_message_fields_are_dropped_as_unknown() {
        // docs/vectors.md #18.
        let p = projection(WritesConfig::default(), false);
        let change = upsert(
            json!({ "customer_id": "C-1", "__STATE__": "DELETED", "_id": "x", "createdAt": "1999" }),
        );
        let mapped = p.map(&change, &source(), DateTime::now()).unwrap();
        assert_eq!(mapped.unknown_fields, ["__STATE__", "_id", "createdAt"]);
        let set = set_of(&mapped);
        assert_eq!(set.get_str("__STATE__").unwrap(), "PUBLIC");
        assert!(!set.contains_key("_id") && !set.contains_key("createdAt"));
    }

    #[test]
    fn targets_rename_fields_and_absent_fields_are_not_written() {
        let p = projection(WritesConfig::default(), true);
        let mapped = p
            .map(
                &upsert(json!({ "customer_id": "C-1", "name": "Ada" })),
                &source(),
                DateTime::now(),
            )
            .unwrap();
        let set = set_of(&mapped);
        assert_eq!(set.get_str("fullName").unwrap(), "Ada");
        assert!(!set.contains_key("name") && !set.contains_key("age"));
    }

    #[test]
    fn primary_key_errors() {
        let p = projection(WritesConfig::default(), false);
        let mut change = upsert(json!({ "customer_id": "C-1" }));
        change.key = image(json!({ "customer_id": null }));
        let err = p.map(&change, &source(), DateTime::now()).unwrap_err();
        assert_eq!(err.code(), "MISSING_PRIMARY_KEY");
        let pk_int: ProjectionConfig = serde_json::from_value(json!({
            "name": "p", "topics": ["t"],
            "fields": [{ "name": "id", "type": "Number", "cast": "castToInteger", "primaryKey": true }],
        }))
        .unwrap();
        let p = Projection::new(&pk_int, &WritesConfig::default()).unwrap();
        let change = ChangeEvent {
            op: Op::Delete,
            key: image(json!({ "id": "x" })),
            before: None,
            after: None,
            position: None,
        };
        assert_eq!(p.map(&change, &source(), DateTime::now()).unwrap_err().code(), "CAST_FAILED");
    }

    #[test]
    fn the_guard_is_in_the_filter_unless_turned_off() {
        let on = projection(WritesConfig::default(), false);
        let off = projection(WritesConfig { stale_guard: false, ..WritesConfig::default() }, false);
        let change = upsert(json!({ "customer_id": "C-1" }));
        let filter = |p: &Projection| match &p
            .map(&change, &source(), DateTime::now())
            .unwrap()
            .statements[..]
        {
            [Statement::Upsert { filter, .. }] => filter.clone(),
            other => panic!("{other:?}"),
        };
        let guarded = filter(&on);
        assert_eq!(guarded.get_str("customer_id").unwrap(), "C-1");
        assert_eq!(guarded.get_array("$or").unwrap().len(), 5, "{guarded}");
        assert_eq!(filter(&off), doc! { "customer_id": "C-1" });
    }

    #[test]
    fn a_keys_statements_share_a_write_group_and_keys_spread() {
        let p = projection(WritesConfig::default(), false);
        let group = |id: &str, offset: i64, delete: bool| {
            let mut change = upsert(json!({ "customer_id": id, "name": "x" }));
            if delete {
                change.op = Op::Delete;
                change.after = None;
            }
            let source = Source { offset, ..source() };
            let mapped = p.map(&change, &source, DateTime::now()).unwrap();
            p.group_of(&mapped.statements[0], 4)
        };
        for id in ["C-1", "C-2", "C-3"] {
            let g = group(id, 1, false);
            assert_eq!((group(id, 99, false), group(id, 100, true)), (g, g), "{id}");
        }
        let used: std::collections::BTreeSet<usize> =
            (0..100).map(|k| group(&format!("C-{k}"), 1, false)).collect();
        assert_eq!(used.len(), 4, "100 keys should use all 4 groups: {used:?}");
    }

    /// The checks of a change's statements, in order (`None` for an unchecked statement).
    fn checks(p: &Projection, change: &ChangeEvent) -> Vec<Option<Check>> {
        let mapped = p.map(change, &source(), DateTime::now()).unwrap();
        mapped
            .statements
            .into_iter()
            .map(|s| match s {
                Statement::Checked(c) => Some(c.check),
                _ => None,
            })
            .collect()
    }

    fn with_op(op: Op, mut change: ChangeEvent) -> ChangeEvent {
        change.op = op;
        if op == Op::Delete {
            change.after = None;
        }
        change
    }

    #[test]
    fn upsert_off_checks_inserts_and_updates_and_deletes_hard() {
        let writes = WritesConfig {
            upsert: false,
            delete_mechanism: Some(DeleteMechanism::Soft),
            ..WritesConfig::default()
        };
        let p = projection(writes, false);
        let change = upsert(json!({ "customer_id": "C-1", "name": "Ada" }));
        let expect = |op| {
            let c = checks(&p, &with_op(op, change.clone()));
            c.iter().map(|c| c.as_ref().map(|c| (c.expect, c.effect))).collect::<Vec<_>>()
        };
        assert_eq!(expect(Op::Insert), [Some((Expect::NotLive, Effect::Live))]);
        assert_eq!(expect(Op::Update), [Some((Expect::Live, Effect::Live))]);
        // basic/db2 and custom upserts carry no operation: upsert stays on.
        assert_eq!(expect(Op::Upsert), [Some((Expect::Any, Effect::Live))]);
        assert_eq!(expect(Op::Delete), [Some((Expect::Any, Effect::Removed))]);
        let delete = p.map(&with_op(Op::Delete, change.clone()), &source(), DateTime::now());
        assert!(
            matches!(delete.unwrap().statements[0].plain(), Statement::Delete { .. }),
            "upsert off forces hard deletes"
        );
        let check = checks(&p, &with_op(Op::Insert, change.clone())).remove(0).unwrap();
        assert_eq!(check.key, doc! { "customer_id": "C-1" });
        assert_eq!((check.counter, check.kind, check.partition), (Bson::Int64(100), "offset", 0));
        // A PK change: hard delete of the old key, then the new document is created.
        let mut pk_change = with_op(Op::Update, change);
        pk_change.before = Some(image(json!({ "customer_id": "C-0" })));
        let c = checks(&p, &pk_change);
        assert_eq!(
            c.iter().map(|c| c.as_ref().map(|c| (c.expect, c.effect))).collect::<Vec<_>>(),
            [Some((Expect::Any, Effect::Removed)), Some((Expect::Any, Effect::Live))]
        );
        assert_eq!(c[0].as_ref().unwrap().key, doc! { "customer_id": "C-0" });
    }

    #[test]
    fn only_upsert_off_or_strict_required_fields_check_statements() {
        let change = upsert(json!({ "customer_id": "C-1", "name": "Ada" }));
        // Upsert on and lenient, or strict without required fields: plain statements.
        assert_eq!(checks(&projection(WritesConfig::default(), false), &change), [None]);
        assert_eq!(checks(&projection(strict(), false), &change), [None]);
        let required: ProjectionConfig = serde_json::from_value(json!({
            "name": "p", "topics": ["t"],
            "fields": [
                { "name": "customer_id", "type": "String", "cast": "castToString", "required": true, "primaryKey": true },
                { "name": "name", "type": "String", "cast": "castToString", "required": true, "target": "fullName" },
                { "name": "age", "type": "Number", "cast": "castToInteger", "required": true, "nullable": true },
            ],
        }))
        .unwrap();
        let lenient = Projection::new(&required, &WritesConfig::default()).unwrap();
        assert_eq!(checks(&lenient, &change), [None]);
        let strict = Projection::new(&required, &strict()).unwrap();
        assert_eq!(strict.required_targets(), ["fullName", "age"]);
        let check = checks(&strict, &change).remove(0).unwrap();
        assert_eq!((check.expect, check.required_absent), (Expect::Any, vec!["age".to_string()]));
        let full = upsert(json!({ "customer_id": "C-1", "name": "Ada", "age": null }));
        assert!(checks(&strict, &full)[0].as_ref().unwrap().required_absent.is_empty());
        // A soft delete needs no required field.
        let delete = checks(&strict, &with_op(Op::Delete, change)).remove(0).unwrap();
        assert_eq!((delete.effect, delete.required_absent), (Effect::Deleted, vec![]));
    }

    #[test]
    fn kafka_keys_are_recorded_as_json_or_text() {
        assert_eq!(parse_kafka_key(Some(br#"{"a":1}"#)), Bson::Document(doc! { "a": 1_i64 }));
        assert_eq!(parse_kafka_key(Some(b"C-1")), Bson::String("C-1".into()));
        assert_eq!(parse_kafka_key(Some(&[0xff, 0xfe])), Bson::Null);
        assert_eq!(parse_kafka_key(None), Bson::Null);
    }
}
