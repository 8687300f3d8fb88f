//! How a change becomes MongoDB write statements (docs/writes.md): an insert or update is one
//! upsert; a delete is a soft delete (an upsert that sets `__STATE__: DELETED`) or a hard
//! `delete` statement, after `writes.deleteMechanism` and `writes.upsert`; a primary-key change
//! deletes the old key first. Every statement sets the write's metadata and carries the stale
//! guard in its filter, so two writers cannot race; with upsert off or strict `required`
//! fields it also carries the [`Check`] of the stored document the writer makes before
//! sending it. The writer (`engine/writer.rs`) sends them.

use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawDocumentBuf, doc};

use super::{Mapped, Projection, Source, WriteError};
use crate::config::DeleteMechanism;
use crate::engine::adapter::{ChangeEvent, Image, Op};
use crate::engine::encode;

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
