//! Sends projection statements to MongoDB as raw multi-statement `update` / `delete` commands
//! (mongod 6.0 has no `bulkWrite` command) and reads each statement's outcome back: inserted,
//! updated, stale (a duplicate key on the primary-key index from a guarded upsert) or a
//! per-statement error. Checked statements (upsert off, strict `required`) are first judged
//! against one read of their keys' stored documents (submodule `precheck`); the ones that fail
//! are not sent. Also creates / verifies the primary-key unique index.

mod images;
mod precheck;
pub mod reply;

use crate::engine::code::ErrorCode;
use std::borrow::Borrow;
use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};

use crate::engine::encode;
use crate::engine::projection::{Projection, Statement};
pub use images::{AppliedOp, Images};
use precheck::{Stored, Verdict};

/// The name of the unique primary-key index (the Fast Data console's name).
pub const PRIMARY_KEY_INDEX: &str = "mia_primary_key_index";

/// What one statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// An upsert created the document.
    Inserted,
    /// An upsert matched and updated the document.
    Updated,
    /// The stored document is newer: nothing written.
    Stale,
    /// A delete ran; `deleted` is false when nothing matched (missing or newer).
    Deleted {
        /// Whether a document was removed.
        deleted: bool,
    },
    /// The statement failed on its own, a message error: MongoDB refused it (a secondary
    /// unique index, ...) or its check did (not sent).
    Failed {
        /// The docs/failures.md code: `UNIQUE_VIOLATION`, `DOCUMENT_TOO_LARGE`, `DUPLICATE_INSERT`,
        /// `MISSING_DOCUMENT`, `VALIDATION_FAILED`, or `WRITE_FAILED` for another MongoDB
        /// refusal.
        code: ErrorCode,
        /// Why (MongoDB's code and message when it refused).
        message: String,
    },
}

/// A failure of a whole command (transient: retry the batch).
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The command did not run or its reply was not understood.
    #[error("{command} on {collection} failed: {source}")]
    Command {
        /// `update` or `delete`.
        command: &'static str,
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// A statement could not be encoded as BSON (e.g. a NUL byte in a key).
    #[error("encoding an update of {collection} failed: {source}")]
    Encode {
        /// The collection.
        collection: String,
        /// The encoder's error.
        source: encode::EncodeError,
    },
    /// Reading the stored documents of checked statements failed.
    #[error("reading stored documents of {collection} failed: {source}")]
    ReadStored {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// Replaying a statement on its stored document (for the outputs' images) failed.
    #[error("replaying an update of {collection} for its images failed: {reason}")]
    Replay {
        /// The collection.
        collection: String,
        /// Why.
        reason: String,
    },
    /// MongoDB wrote, but not with the write concern asked for (`writeConcernError`): transient,
    /// the batch is written again.
    #[error("{command} on {collection}: {message}")]
    WriteConcern {
        /// `update` or `delete`.
        command: &'static str,
        /// The collection.
        collection: String,
        /// MongoDB's `writeConcernError`.
        message: String,
    },
    /// Listing the indexes of a collection failed.
    #[error("listing the indexes of {collection} failed: {source}")]
    ListIndexes {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// Creating the primary-key index failed.
    #[error("creating index {PRIMARY_KEY_INDEX} on {collection} failed: {source}")]
    EnsureIndex {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
}

/// Creates the unique primary-key index of a projection (a no-op when it exists).
pub async fn ensure_primary_key_index(
    db: &Database,
    projection: &Projection,
) -> Result<(), WriterError> {
    let keys: Document = projection
        .primary_key_targets()
        .into_iter()
        .map(|k| (k.to_string(), Bson::Int32(1)))
        .collect();
    let index = IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().unique(true).name(PRIMARY_KEY_INDEX.to_string()).build())
        .build();
    db.collection::<Document>(&projection.collection).create_index(index).await.map(drop).map_err(
        |source| WriterError::EnsureIndex { collection: projection.collection.clone(), source },
    )
}

/// Whether the collection has a unique index on exactly the primary-key fields, in order
/// (whatever its name); a collection that does not exist has none.
pub async fn has_primary_key_index(
    db: &Database,
    projection: &Projection,
) -> Result<bool, WriterError> {
    let failed =
        |source| WriterError::ListIndexes { collection: projection.collection.clone(), source };
    let mut cursor = match db.collection::<Document>(&projection.collection).list_indexes().await {
        Ok(cursor) => cursor,
        Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND) => {
            return Ok(false);
        }
        Err(e) => return Err(failed(e)),
    };
    let pk = projection.primary_key_targets();
    while let Some(index) = cursor.try_next().await.map_err(failed)? {
        let unique = index.options.as_ref().and_then(|o| o.unique).unwrap_or(false);
        if unique && index.keys.keys().map(String::as_str).eq(pk.iter().copied()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// MongoDB's error code for a collection that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;

/// Runs `statements` on the projection's collection, in order, and returns one outcome each.
/// Consecutive statements of one kind go out as one command. When some are checked, the
/// stored documents of their keys are read first (one `find`) and the failing ones are not
/// sent; without checked statements nothing is read. Every command carries `write_concern`
/// (`mongodb.writeConcern`, [`crate::config::WriteConcern::command_document`]).
pub async fn execute(
    db: &Database,
    projection: &Projection,
    statements: &[Statement],
    write_concern: &Document,
) -> Result<Vec<WriteOutcome>, WriterError> {
    let sent = execute_sent(db, projection, statements, write_concern).await?;
    Ok(sent.into_iter().map(|s| s.outcome).collect())
}

/// [`execute`], plus the before and after images of every applied statement (for the
/// outputs): the stored documents of the statements' keys are read first (one `find`), and
/// each statement's effect is replayed on them in memory from its outcome (module `images`).
pub async fn execute_with_images(
    db: &Database,
    projection: &Projection,
    statements: &[Statement],
    write_concern: &Document,
) -> Result<(Vec<WriteOutcome>, Vec<Option<Images>>), WriterError> {
    let stored = images::read_before(db, projection, statements).await?;
    let sent = execute_sent(db, projection, statements, write_concern).await?;
    let images = images::replay(projection, statements, &sent, stored)?;
    Ok((sent.into_iter().map(|s| s.outcome).collect(), images))
}

/// A statement's outcome and, for an upsert that created its document, the new `_id`.
pub(crate) struct Sent {
    pub(crate) outcome: WriteOutcome,
    pub(crate) upserted_id: Option<Bson>,
}

impl Sent {
    fn of(outcome: WriteOutcome) -> Self {
        Sent { outcome, upserted_id: None }
    }
}

async fn execute_sent(
    db: &Database,
    projection: &Projection,
    statements: &[Statement],
    write_concern: &Document,
) -> Result<Vec<Sent>, WriterError> {
    if !statements.iter().any(|s| matches!(s, Statement::Checked(_))) {
        return send(db, projection, statements, write_concern).await;
    }
    let required = projection.required_targets();
    let mut stored = read_stored(db, projection, &required, statements).await?;
    let verdicts = precheck::judge(statements, &mut stored, &required);
    let to_send: Vec<&Statement> = statements
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Verdict::Send)
        .map(|(s, _)| s.plain())
        .collect();
    let mut sent = send(db, projection, &to_send, write_concern).await?.into_iter();
    let mut outcomes = Vec::with_capacity(statements.len());
    for verdict in verdicts {
        outcomes.push(match verdict {
            // `send` gives one outcome per statement; a missing one is never taken as done.
            Verdict::Send => sent.next().unwrap_or_else(|| {
                Sent::of(WriteOutcome::Failed {
                    code: ErrorCode::WriteFailed,
                    message: "no outcome in MongoDB's reply".into(),
                })
            }),
            Verdict::Fail { code, message } => Sent::of(WriteOutcome::Failed { code, message }),
        });
    }
    Ok(outcomes)
}

/// The stored documents of the keys the checks need: one `find` of their primary keys,
/// projected on what the checks read. Every key is in the map; `None` when missing.
async fn read_stored(
    db: &Database,
    projection: &Projection,
    required: &[&str],
    statements: &[Statement],
) -> Result<HashMap<String, Option<Stored>>, WriterError> {
    let keys = precheck::keys_to_read(statements);
    let mut stored: HashMap<String, Option<Stored>> =
        keys.iter().map(|k| (precheck::key_id(k.values().map(Some)), None)).collect();
    if keys.is_empty() {
        return Ok(stored);
    }
    let pk = projection.primary_key_targets();
    let filter = match &pk[..] {
        [single] => {
            let values: Vec<Bson> = keys.iter().filter_map(|k| k.get(*single).cloned()).collect();
            doc! { *single: { "$in": values } }
        }
        _ => {
            let keys: Vec<Bson> = keys.iter().map(|k| Bson::Document((*k).clone())).collect();
            doc! { "$or": keys }
        }
    };
    let mut fields = doc! {
        "_id": 0,
        "__STATE__": 1,
        "__internal__counter": 1,
        "__internal__counterType": 1,
        "__internal__kafkaInfo.topic": 1,
        "__internal__kafkaInfo.partition": 1,
    };
    for f in pk.iter().chain(required) {
        fields.insert(*f, 1);
    }
    let error =
        |source| WriterError::ReadStored { collection: projection.collection.clone(), source };
    let mut cursor = db
        .collection::<Document>(&projection.collection)
        .find(filter)
        .projection(fields)
        .await
        .map_err(error)?;
    while let Some(doc) = cursor.try_next().await.map_err(error)? {
        let id = precheck::key_id(pk.iter().map(|f| doc.get(*f)));
        if let Some(slot) = stored.get_mut(&id) {
            *slot = Some(Stored::of(&doc, required));
        }
    }
    Ok(stored)
}

/// Sends plain statements in order: consecutive ones of one kind as one command.
async fn send<S: Borrow<Statement>>(
    db: &Database,
    projection: &Projection,
    statements: &[S],
    write_concern: &Document,
) -> Result<Vec<Sent>, WriterError> {
    let mut outcomes = Vec::with_capacity(statements.len());
    let mut start = 0;
    while start < statements.len() {
        let is_upsert = matches!(statements[start].borrow(), Statement::Upsert { .. });
        let len = statements[start..]
            .iter()
            .take_while(|s| matches!((*s).borrow(), Statement::Upsert { .. }) == is_upsert)
            .count();
        let run = &statements[start..start + len];
        if is_upsert {
            outcomes.extend(run_updates(db, projection, run, write_concern).await?);
        } else {
            outcomes.extend(run_deletes(db, projection, run, write_concern).await?);
        }
        start += len;
    }
    Ok(outcomes)
}

async fn run_updates<S: Borrow<Statement>>(
    db: &Database,
    projection: &Projection,
    run: &[S],
    write_concern: &Document,
) -> Result<Vec<Sent>, WriterError> {
    let command = update_command(&projection.collection, run, write_concern)?;
    let reply = db.run_raw_command(command).await.map_err(|source| WriterError::Command {
        command: "update",
        collection: projection.collection.clone(),
        source,
    })?;
    if let Some(message) = reply::write_concern_error(&reply) {
        let collection = projection.collection.clone();
        return Err(WriterError::WriteConcern { command: "update", collection, message });
    }
    let mut outcomes: Vec<Sent> = (0..run.len()).map(|_| Sent::of(WriteOutcome::Updated)).collect();
    for upserted in reply.get_array("upserted").map(|a| a.as_slice()).unwrap_or_default() {
        let Some(entry) = upserted.as_document() else { continue };
        if let Some(sent) = index_of(entry).and_then(|i| outcomes.get_mut(i)) {
            *sent =
                Sent { outcome: WriteOutcome::Inserted, upserted_id: entry.get("_id").cloned() };
        }
    }
    let pk = projection.primary_key_targets();
    for error in reply::statement_errors(&reply) {
        let Some(sent) = outcomes.get_mut(error.index) else { continue };
        // A guarded upsert that meets the primary key's unique index: the document is newer.
        *sent = Sent::of(if error.is_duplicate_key_on(pk.iter().copied()) {
            WriteOutcome::Stale
        } else {
            refused(&error)
        });
    }
    Ok(outcomes)
}

/// A statement MongoDB refused, as the message error it is.
fn refused(error: &reply::StatementError<'_>) -> WriteOutcome {
    WriteOutcome::Failed {
        code: refusal_code(error.code),
        message: format!("mongodb error {}: {}", error.code, error.message),
    }
}

async fn run_deletes<S: Borrow<Statement>>(
    db: &Database,
    projection: &Projection,
    run: &[S],
    write_concern: &Document,
) -> Result<Vec<Sent>, WriterError> {
    let mut outcomes = Vec::with_capacity(run.len());
    // One command per delete: the reply only counts deletions, and each outcome matters.
    for statement in run {
        let Statement::Delete { filter } = statement.borrow() else { continue };
        let mut command = doc! {
            "delete": &projection.collection,
            "deletes": [{ "q": filter, "limit": 1 }],
            "ordered": true,
        };
        if !write_concern.is_empty() {
            command.insert("writeConcern", write_concern.clone());
        }
        let reply = db.run_command(command).await.map_err(|source| WriterError::Command {
            command: "delete",
            collection: projection.collection.clone(),
            source,
        })?;
        if let Some(message) = reply::write_concern_error(&reply) {
            let collection = projection.collection.clone();
            return Err(WriterError::WriteConcern { command: "delete", collection, message });
        }
        let outcome = match reply::statement_errors(&reply).next() {
            Some(error) => refused(&error),
            None => WriteOutcome::Deleted { deleted: reply.get_i32("n").unwrap_or(0) > 0 },
        };
        outcomes.push(Sent::of(outcome));
    }
    Ok(outcomes)
}

/// The docs/failures.md code of a statement MongoDB refused (a duplicate key on the primary key is
/// stale and never gets here).
fn refusal_code(code: i32) -> ErrorCode {
    match code {
        11000 | 11001 => ErrorCode::UniqueViolation,
        // BSONObjectTooLarge; "Resulting document after update is larger than ...".
        10334 | 17419 => ErrorCode::DocumentTooLarge,
        _ => ErrorCode::WriteFailed,
    }
}

/// The raw `update` command of a run of upserts, encoded straight into the command's bytes
/// (module `encode`). Unordered so one stale statement does not stop the others; mongod
/// applies a replica set's statements in array order, and the stale guard keeps any
/// reordering harmless.
fn update_command<S: Borrow<Statement>>(
    collection: &str,
    run: &[S],
    write_concern: &Document,
) -> Result<RawDocumentBuf, WriterError> {
    let upserts = run.iter().filter_map(|s| match s.borrow() {
        Statement::Upsert { filter, update } => Some((filter, update)),
        _ => None,
    });
    encode::update_command(collection, upserts, write_concern)
        .map_err(|source| WriterError::Encode { collection: collection.to_string(), source })
}

fn index_of(entry: &Document) -> Option<usize> {
    entry.get_i32("index").ok().and_then(|i| usize::try_from(i).ok())
}
