//! Projection changes in MongoDB (docs/outputs.md#projection-changes): one document per `(type, identifier)` whose
//! `changes` array tells the single-view creator what to aggregate. [`change_update`]
//! builds the upsert of one change (pure), encoded straight into BSON (module `encode`: no
//! `Document` tree is built, cloned and dropped per change); [`upsert_each`]
//! sends a batch of them as one `update` command; [`record`] writes a batch
//! with the same outcome for a third of mongod's work (batched statements, inserts, and the
//! upserts as the fallback); [`ensure_indexes`] creates the indexes the
//! single-view creator relies on.
//!
//! Upsert rule: if the document has a `NEW` element, its message metadata is refreshed (every
//! `NEW` element, should there be several); otherwise one `NEW` element is appended, so a
//! change arriving while the single-view creator holds an `IN_PROGRESS` element schedules
//! another aggregation. `updatedAt` is set every time, `createdAt` only when the document is
//! created. The update is an aggregation pipeline (mongod 6.0 has no `$setOnInsert` there, and
//! the conditional needs one); every value that comes from data is wrapped in `$literal`, so a
//! string starting with `$` is stored as it is and never read as a field path.

use std::sync::LazyLock;

use mongodb::bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, doc};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};

use crate::engine::encode::{self, EncodeError};
use crate::engine::projection::Source;
use crate::engine::writer::reply;

/// The unique index on `{identifier: 1, type: 1}`.
pub const TYPE_IDENTIFIER_INDEX: &str = "type_identifier";
/// The index on `{"changes.state": 1, type: 1}`.
pub const TYPE_CHANGE_STATE_INDEX: &str = "type_change_state";

/// The upsert of one projection change: the statement `{q: filter, u: pipeline, upsert: true}`,
/// encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeUpsert {
    statement: RawDocumentBuf,
}

impl ChangeUpsert {
    /// The encoded statement `{q: {type, identifier}, u: [stage], upsert: true}`.
    pub fn statement(&self) -> &RawDocument {
        &self.statement
    }

    /// The statement's filter `{type, identifier}`, decoded (for error messages and tests).
    pub fn filter(&self) -> Option<Document> {
        let q = self.statement.get_document("q").ok()?;
        Document::try_from(q).ok()
    }
}

/// A failed projection-changes write (transient for the message: retry it).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionChangesError {
    /// Creating the indexes failed (or an index of that name exists with other keys).
    #[error("creating the indexes of {collection} failed: {source}")]
    EnsureIndexes {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// The `update` command could not be encoded.
    #[error("encoding the update on {collection} failed: {source}")]
    Encode {
        /// The collection.
        collection: String,
        /// The encoder's error.
        source: EncodeError,
    },
    /// The `update` command did not run or its reply was not understood.
    #[error("update on {collection} failed: {source}")]
    Update {
        /// The collection.
        collection: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
    /// MongoDB refused one statement (a duplicate key only after the retry).
    #[error(
        "update on {collection}: statement {index} ({statement}) failed: mongodb error {code}: {message}"
    )]
    Statement {
        /// The collection.
        collection: String,
        /// The statement's index in the batch.
        index: usize,
        /// The statement's filter, `{type, identifier}`.
        statement: String,
        /// MongoDB's error code.
        code: i32,
        /// MongoDB's message.
        message: String,
    },
    /// The write concern was not satisfied.
    #[error("update on {collection}: write concern failed: {message}")]
    WriteConcern {
        /// The collection.
        collection: String,
        /// MongoDB's `writeConcernError`.
        message: String,
    },
}

/// `changes` as an array (`[]` before the document exists): `$$old` of the update.
static OLD_CHANGES: LazyLock<Document> =
    LazyLock::new(|| doc! { "$cond": [{ "$isArray": "$changes" }, "$changes", []] });

/// The new `changes`: every `NEW` element of `$$old` merged with `$$fresh`, or `$$fresh`
/// appended when there is none. The same in every upsert, so built once.
static REFRESH_OR_APPEND: LazyLock<Document> = LazyLock::new(|| {
    doc! { "$cond": [
        { "$in": ["NEW", "$$old.state"] },
        { "$map": { "input": "$$old", "as": "c", "in": { "$cond": [
            { "$eq": ["$$c.state", "NEW"] },
            { "$mergeObjects": ["$$c", "$$fresh"] },
            "$$c",
        ] } } },
        { "$concatArrays": ["$$old", ["$$fresh"]] },
    ] }
});

/// The upsert recording that `kafka`'s message changed the single view `single_view_type`
/// (its configured type) at `identifier`, written at `now`: the statement
///
/// ```text
/// { q: { type, identifier },
///   u: [{ $set: {
///     changes: { $let: { vars: { old: OLD_CHANGES, fresh: { $literal: {
///       state: "NEW", topic, partition, offset (string), key, timestamp, updatedAt: now } } },
///       in: REFRESH_OR_APPEND } },
///     createdAt: { $ifNull: ["$createdAt", { $literal: now }] },
///     updatedAt: { $literal: now } } }],
///   upsert: true }
/// ```
///
/// encoded straight into BSON. Fails only when a key holds a NUL byte.
pub fn change_update(
    single_view_type: &str,
    identifier: &Document,
    kafka: &Source,
    now: DateTime,
) -> Result<ChangeUpsert, EncodeError> {
    use encode::{close, cstring, document, element, open, string_element};
    let date = |key: &str, millis: i64, out: &mut Vec<u8>| -> Result<(), EncodeError> {
        out.push(0x09);
        cstring(key, out)?;
        out.extend_from_slice(&millis.to_le_bytes());
        Ok(())
    };
    // `{key: {$literal: now}}`.
    let literal_now = |key: &str, out: &mut Vec<u8>| -> Result<(), EncodeError> {
        out.push(0x03);
        cstring(key, out)?;
        let literal = open(out);
        date("$literal", now.timestamp_millis(), out)?;
        close(literal, out)
    };
    let embedded = |key: &str, out: &mut Vec<u8>| -> Result<usize, EncodeError> {
        out.push(0x03);
        cstring(key, out)?;
        Ok(open(out))
    };
    let mut out = Vec::with_capacity(640);
    let statement = open(&mut out);
    let q = embedded("q", &mut out)?;
    string_element("type", single_view_type, &mut out)?;
    out.push(0x03);
    cstring("identifier", &mut out)?;
    document(identifier, &mut out)?;
    close(q, &mut out)?;

    out.push(0x04);
    cstring("u", &mut out)?;
    let u = open(&mut out);
    let stage = embedded("0", &mut out)?;
    let set = embedded("$set", &mut out)?;
    let changes = embedded("changes", &mut out)?;
    let let_ = embedded("$let", &mut out)?;
    let vars = embedded("vars", &mut out)?;
    out.push(0x03);
    cstring("old", &mut out)?;
    document(&OLD_CHANGES, &mut out)?;
    let fresh = embedded("fresh", &mut out)?;
    let literal = embedded("$literal", &mut out)?;
    string_element("state", "NEW", &mut out)?;
    string_element("topic", &kafka.topic, &mut out)?;
    out.push(0x10);
    cstring("partition", &mut out)?;
    out.extend_from_slice(&kafka.partition.to_le_bytes());
    string_element("offset", &kafka.offset.to_string(), &mut out)?;
    element("key", &kafka.key, &mut out)?;
    date("timestamp", kafka.timestamp_ms, &mut out)?;
    date("updatedAt", now.timestamp_millis(), &mut out)?;
    close(literal, &mut out)?;
    close(fresh, &mut out)?;
    close(vars, &mut out)?;
    out.push(0x03);
    cstring("in", &mut out)?;
    document(&REFRESH_OR_APPEND, &mut out)?;
    close(let_, &mut out)?;
    close(changes, &mut out)?;
    let created = embedded("createdAt", &mut out)?;
    out.push(0x04);
    cstring("$ifNull", &mut out)?;
    let if_null = open(&mut out);
    string_element("0", "$createdAt", &mut out)?;
    literal_now("1", &mut out)?;
    close(if_null, &mut out)?;
    close(created, &mut out)?;
    literal_now("updatedAt", &mut out)?;
    close(set, &mut out)?;
    close(stage, &mut out)?;
    close(u, &mut out)?;
    out.extend_from_slice(&[0x08, b'u', b'p', b's', b'e', b'r', b't', 0, 1]);
    close(statement, &mut out)?;
    let statement =
        RawDocumentBuf::from_bytes(out).map_err(|e| EncodeError::Malformed(Box::new(e)))?;
    Ok(ChangeUpsert { statement })
}

/// Creates the unique index `type_identifier` on `{identifier: 1, type: 1}` and
/// `type_change_state` on `{"changes.state": 1, type: 1}` (a no-op when they exist).
pub async fn ensure_indexes(db: &Database, collection: &str) -> Result<(), ProjectionChangesError> {
    let unique = IndexOptions::builder().unique(true).name(TYPE_IDENTIFIER_INDEX.to_string());
    let indexes = [
        IndexModel::builder()
            .keys(doc! { "identifier": 1, "type": 1 })
            .options(unique.build())
            .build(),
        IndexModel::builder()
            .keys(doc! { "changes.state": 1, "type": 1 })
            .options(IndexOptions::builder().name(TYPE_CHANGE_STATE_INDEX.to_string()).build())
            .build(),
    ];
    db.collection::<Document>(collection).create_indexes(indexes).await.map(drop).map_err(
        |source| ProjectionChangesError::EnsureIndexes {
            collection: collection.to_string(),
            source,
        },
    )
}

/// Sends `upserts` as one ordered `update` command. A duplicate key on `type_identifier` (two
/// writers creating the same document at once) is retried once, from that statement on; any
/// other refusal is an error naming the collection and the statement. The command carries
/// `write_concern`.
pub async fn upsert_each(
    db: &Database,
    collection: &str,
    upserts: &[ChangeUpsert],
    write_concern: &Document,
) -> Result<(), ProjectionChangesError> {
    let Some(at) = send(db, collection, upserts, write_concern).await? else {
        return Ok(());
    };
    let rest = upserts.get(at..).unwrap_or_default();
    match send(db, collection, rest, write_concern).await? {
        None => Ok(()),
        Some(again) => Err(duplicate_error(collection, at + again, upserts)),
    }
}

/// Runs one command; `Some(i)` when statement `i` hit a duplicate key on `type_identifier`
/// (the ordered command stopped there).
async fn send(
    db: &Database,
    collection: &str,
    upserts: &[ChangeUpsert],
    write_concern: &Document,
) -> Result<Option<usize>, ProjectionChangesError> {
    if upserts.is_empty() {
        return Ok(None);
    }
    let statements = upserts.iter().map(ChangeUpsert::statement);
    let command = encode::ordered_update_command(collection, statements, write_concern).map_err(
        |source| ProjectionChangesError::Encode { collection: collection.to_string(), source },
    )?;
    let reply = db.run_raw_command(command).await.map_err(|source| {
        ProjectionChangesError::Update { collection: collection.to_string(), source }
    })?;
    judge_reply(&reply, collection, upserts)
}

/// Reads an `update` reply: `Ok(None)` all applied, `Ok(Some(i))` a duplicate key on
/// `type_identifier` at statement `i`, else the first refusal.
fn judge_reply(
    reply: &Document,
    collection: &str,
    upserts: &[ChangeUpsert],
) -> Result<Option<usize>, ProjectionChangesError> {
    check_write_concern(reply, collection)?;
    let Some(error) = reply::statement_errors(reply).next() else {
        return Ok(None);
    };
    if error.is_duplicate_key_on(TYPE_IDENTIFIER_FIELDS) {
        return Ok(Some(error.index));
    }
    Err(ProjectionChangesError::Statement {
        collection: collection.to_string(),
        index: error.index,
        statement: statement_of(upserts, error.index),
        code: error.code,
        message: error.message.to_string(),
    })
}

/// The reply's `writeConcernError`, as an error.
fn check_write_concern(reply: &Document, collection: &str) -> Result<(), ProjectionChangesError> {
    match reply::write_concern_error(reply) {
        Some(message) => Err(ProjectionChangesError::WriteConcern {
            collection: collection.to_string(),
            message,
        }),
        None => Ok(()),
    }
}

/// The fields of the `type_identifier` unique index, in its order.
const TYPE_IDENTIFIER_FIELDS: [&str; 2] = ["identifier", "type"];

fn duplicate_error(
    collection: &str,
    index: usize,
    upserts: &[ChangeUpsert],
) -> ProjectionChangesError {
    ProjectionChangesError::Statement {
        collection: collection.to_string(),
        index,
        statement: statement_of(upserts, index),
        code: reply::DUPLICATE_KEY,
        message: format!("duplicate key on {TYPE_IDENTIFIER_INDEX}, also after a retry"),
    }
}

fn statement_of(upserts: &[ChangeUpsert], index: usize) -> String {
    upserts
        .get(index)
        .and_then(ChangeUpsert::filter)
        .map_or_else(|| "unknown".to_string(), |filter| filter.to_string())
}

/// One projection change to record: single view `single_view_type` at `identifier` changed
/// because of the message `kafka`.
#[derive(Debug, Clone, Copy)]
pub struct PendingChange<'a> {
    /// The single view's configured type.
    pub single_view_type: &'a str,
    /// Its identifier.
    pub identifier: &'a Document,
    /// The message that caused the change.
    pub kafka: &'a Source,
}

/// How [`record`] wrote a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Existing documents updated by the batched statements.
    pub refreshed: u64,
    /// New documents inserted.
    pub inserted: u64,
    /// Whether the batch was written again one upsert per change (a document appeared or
    /// disappeared between the look-up and the writes).
    pub fell_back: bool,
}

/// Identifiers per batched update statement (`$indexOfArray` scans them for every document).
const IDENTIFIERS_PER_STATEMENT: usize = 100;

/// Records a batch of projection changes (at most one per `(type, identifier)`) at `now`,
/// with the same outcome as one [`change_update`] per change but a fraction of
/// mongod's work: each upsert statement costs mongod more to parse and plan than the write
/// itself, so
///
/// 1. one `find` per type reads which documents exist (identifier only);
/// 2. existing ones are updated by statements of up to 100 identifiers each (`multi`, the same
///    pipeline as the upsert; each document picks its own `fresh` element by the position of
///    its identifier);
/// 3. missing ones are inserted as the upsert would create them.
///
/// If the world moved in between (a document deleted before step 2: fewer matched than
/// found; or created before step 3: a duplicate key), the whole batch is written again one
/// upsert per change, which is idempotent for what steps 2 and 3 already wrote. `in_flight`
/// commands run at once; every write command carries `write_concern`.
pub async fn record(
    db: &Database,
    collection: &str,
    changes: &[PendingChange<'_>],
    now: DateTime,
    in_flight: usize,
    write_concern: &Document,
) -> Result<Recorded, ProjectionChangesError> {
    let mut recorded = Recorded::default();
    if changes.is_empty() {
        return Ok(recorded);
    }
    let encode_error =
        |source| ProjectionChangesError::Encode { collection: collection.to_string(), source };
    let mut by_type: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        match by_type.iter_mut().find(|(t, _)| *t == c.single_view_type) {
            Some((_, members)) => members.push(i),
            None => by_type.push((c.single_view_type, vec![i])),
        }
    }
    let mut existing = vec![false; changes.len()];
    for (single_view_type, members) in &by_type {
        let stored = stored_identifiers(db, collection, single_view_type, changes, members).await?;
        let mut bytes = Vec::new();
        for &i in members {
            bytes.clear();
            encode::document(changes[i].identifier, &mut bytes).map_err(encode_error)?;
            existing[i] = stored.contains(&bytes);
        }
    }
    let mut statements = Vec::new();
    let mut expected = 0;
    for (single_view_type, members) in &by_type {
        let present: Vec<usize> = members.iter().copied().filter(|&i| existing[i]).collect();
        for chunk in present.chunks(IDENTIFIERS_PER_STATEMENT) {
            statements.push(refresh_statement(single_view_type, changes, chunk, now));
            expected += chunk.len() as u64;
        }
    }
    let inserts: Vec<Document> = (0..changes.len())
        .filter(|&i| !existing[i])
        .map(|i| new_document(&changes[i], now))
        .collect();
    let per_command = |n: usize| n.div_ceil(in_flight.max(1)).max(1);
    let updates = statements
        .chunks(per_command(statements.len()))
        .map(|chunk| run_batch(db, collection, "update", "updates", chunk, write_concern));
    let insert_sends = inserts
        .chunks(per_command(inserts.len()))
        .map(|chunk| run_batch(db, collection, "insert", "documents", chunk, write_concern));
    let (updated, created) = futures::future::try_join(
        futures::future::try_join_all(updates),
        futures::future::try_join_all(insert_sends),
    )
    .await?;
    recorded.refreshed = updated.iter().map(|r| r.matched).sum();
    recorded.inserted = created.iter().map(|r| r.matched).sum();
    let raced = created.iter().any(|r| r.duplicate);
    if recorded.refreshed != expected || raced {
        recorded.fell_back = true;
        let upserts = changes
            .iter()
            .map(|c| change_update(c.single_view_type, c.identifier, c.kafka, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(encode_error)?;
        upsert_each(db, collection, &upserts, write_concern).await?;
    }
    Ok(recorded)
}

/// The BSON bytes of the stored identifiers of `single_view_type` among `members`' ones.
async fn stored_identifiers(
    db: &Database,
    collection: &str,
    single_view_type: &str,
    changes: &[PendingChange<'_>],
    members: &[usize],
) -> Result<std::collections::HashSet<Vec<u8>>, ProjectionChangesError> {
    let ids: Vec<Bson> =
        members.iter().map(|&i| Bson::Document(changes[i].identifier.clone())).collect();
    let filter = doc! { "type": single_view_type, "identifier": { "$in": ids } };
    let error =
        |source| ProjectionChangesError::Update { collection: collection.to_string(), source };
    let mut cursor = db
        .collection::<RawDocumentBuf>(collection)
        .find(filter)
        .projection(doc! { "_id": 0, "identifier": 1 })
        .batch_size(u32::try_from(members.len()).unwrap_or(u32::MAX).max(1))
        .await
        .map_err(error)?;
    let mut stored = std::collections::HashSet::new();
    while cursor.advance().await.map_err(error)? {
        if let Ok(identifier) = cursor.current().get_document("identifier") {
            stored.insert(identifier.as_bytes().to_vec());
        }
    }
    Ok(stored)
}

/// The `fresh` element of a change: `{state: NEW, topic, partition, offset (string), key,
/// timestamp, updatedAt}`, as [`change_update`] writes it.
fn fresh_element(kafka: &Source, now: DateTime) -> Document {
    doc! {
        "state": "NEW",
        "topic": &kafka.topic,
        "partition": kafka.partition,
        "offset": kafka.offset.to_string(),
        "key": kafka.key.clone(),
        "timestamp": DateTime::from_millis(kafka.timestamp_ms),
        "updatedAt": now,
    }
}

/// The `multi` update of the existing documents of `chunk` (all of one type): the upsert's
/// pipeline, with `fresh` taken from `$literal` arrays by the position of the document's
/// identifier.
fn refresh_statement(
    single_view_type: &str,
    changes: &[PendingChange<'_>],
    chunk: &[usize],
    now: DateTime,
) -> Document {
    let ids: Vec<Bson> =
        chunk.iter().map(|&i| Bson::Document(changes[i].identifier.clone())).collect();
    let freshes: Vec<Bson> =
        chunk.iter().map(|&i| Bson::Document(fresh_element(changes[i].kafka, now))).collect();
    let fresh = doc! { "$arrayElemAt": [
        { "$literal": freshes },
        { "$indexOfArray": [{ "$literal": ids.clone() }, "$identifier"] },
    ] };
    doc! {
        "q": { "type": single_view_type, "identifier": { "$in": ids } },
        "u": [{ "$set": {
            "changes": { "$let": {
                "vars": { "old": OLD_CHANGES.clone(), "fresh": fresh },
                "in": REFRESH_OR_APPEND.clone(),
            } },
            "createdAt": { "$ifNull": ["$createdAt", { "$literal": now }] },
            "updatedAt": { "$literal": now },
        } }],
        "multi": true,
    }
}

/// The document a change's upsert creates: `{type, identifier, changes: [fresh], createdAt,
/// updatedAt}`.
fn new_document(change: &PendingChange<'_>, now: DateTime) -> Document {
    doc! {
        "type": change.single_view_type,
        "identifier": change.identifier.clone(),
        "changes": [fresh_element(change.kafka, now)],
        "createdAt": now,
        "updatedAt": now,
    }
}

/// What one batched command did.
struct BatchReply {
    /// Documents matched (`update`) or inserted (`insert`).
    matched: u64,
    /// Whether an insert hit a duplicate key on `type_identifier`.
    duplicate: bool,
}

/// Runs `{<command>: collection, <field>: items, ordered: false}`; a duplicate key on
/// `type_identifier` is reported, any other refusal is an error naming the item.
async fn run_batch(
    db: &Database,
    collection: &str,
    command: &str,
    field: &str,
    items: &[Document],
    write_concern: &Document,
) -> Result<BatchReply, ProjectionChangesError> {
    let mut run = doc! { command: collection, field: items.to_vec(), "ordered": false };
    if !write_concern.is_empty() {
        run.insert("writeConcern", write_concern.clone());
    }
    let reply = db.run_command(run).await.map_err(|source| ProjectionChangesError::Update {
        collection: collection.to_string(),
        source,
    })?;
    check_write_concern(&reply, collection)?;
    let matched = match reply.get("n") {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let mut duplicate = false;
    for error in reply::statement_errors(&reply) {
        if error.is_duplicate_key_on(TYPE_IDENTIFIER_FIELDS) {
            duplicate = true;
            continue;
        }
        let item = items.get(error.index);
        let statement = match item.and_then(|d| d.get_document("q").ok()) {
            Some(q) => q.to_string(),
            None => item.map_or_else(String::new, |d| {
                format!("{{ type: {:?}, identifier: {:?} }}", d.get("type"), d.get("identifier"))
            }),
        };
        return Err(ProjectionChangesError::Statement {
            collection: collection.to_string(),
            index: error.index,
            statement,
            code: error.code,
            message: error.message.to_string(),
        });
    }
    Ok(BatchReply { matched, duplicate })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, doc};

    use super::*;
    use crate::engine::outputs::fixtures::{T0, source};

    fn upsert(customer: &str) -> ChangeUpsert {
        let kafka = source("t", 1, 55, Bson::Document(doc! { "order_id": "$O-1" }));
        let identifier = doc! { "customerId": customer };
        change_update("sv_customers", &identifier, &kafka, DateTime::from_millis(T0)).unwrap()
    }

    fn pipeline(upsert: &ChangeUpsert) -> Vec<Document> {
        let statement = Document::try_from(upsert.statement()).unwrap();
        let stages = statement.get_array("u").unwrap();
        stages.iter().map(|s| s.as_document().unwrap().clone()).collect()
    }

    #[test]
    fn the_filter_is_type_and_identifier() {
        assert_eq!(
            upsert("C-7").filter(),
            Some(doc! { "type": "sv_customers", "identifier": { "customerId": "C-7" } })
        );
    }

    #[test]
    fn the_statement_is_the_documented_upsert_byte_for_byte() {
        let kafka = source("t", 3, 9_000_000_000, Bson::String("k".into()));
        let identifier = doc! { "b": 2_i64, "a": "x" };
        let now = DateTime::from_millis(T0 + 7);
        let fresh = doc! {
            "state": "NEW", "topic": "t", "partition": 3, "offset": "9000000000", "key": "k",
            "timestamp": DateTime::from_millis(T0), "updatedAt": now,
        };
        let expected = doc! {
            "q": { "type": "sv_orders", "identifier": identifier.clone() },
            "u": [{ "$set": {
                "changes": { "$let": {
                    "vars": { "old": OLD_CHANGES.clone(), "fresh": { "$literal": fresh } },
                    "in": REFRESH_OR_APPEND.clone(),
                } },
                "createdAt": { "$ifNull": ["$createdAt", { "$literal": now }] },
                "updatedAt": { "$literal": now },
            } }],
            "upsert": true,
        };
        let built = change_update("sv_orders", &identifier, &kafka, now).unwrap();
        assert_eq!(built.statement().as_bytes(), mongodb::bson::to_vec(&expected).unwrap());
        let nul = doc! { "a\u{0}b": 1_i32 };
        assert!(change_update("sv", &nul, &kafka, now).is_err());
    }

    #[test]
    fn data_values_in_the_pipeline_are_literals() {
        let pipeline = pipeline(&upsert("$C-7"));
        let set = pipeline[0].get_document("$set").unwrap();
        let vars = set
            .get_document("changes")
            .unwrap()
            .get_document("$let")
            .unwrap()
            .get_document("vars")
            .unwrap();
        let fresh = vars.get_document("fresh").unwrap().get_document("$literal").unwrap();
        assert_eq!(fresh.get_str("offset").unwrap(), "55");
        assert_eq!(fresh.get_document("key").unwrap(), &doc! { "order_id": "$O-1" });
        assert_eq!(fresh.get_datetime("timestamp").unwrap(), &DateTime::from_millis(T0));
        assert!(set.get_document("updatedAt").unwrap().contains_key("$literal"));
    }

    #[test]
    fn a_duplicate_key_on_type_identifier_is_retryable_and_other_errors_name_the_statement() {
        let upserts = [upsert("C-1"), upsert("C-2")];
        let duplicate = |pattern: Document| {
            doc! { "ok": 1, "n": 1, "writeErrors": [
                { "index": 1, "code": 11000, "keyPattern": pattern, "errmsg": "E11000" },
            ] }
        };
        let ok = doc! { "ok": 1, "n": 2 };
        assert_eq!(judge_reply(&ok, "pc", &upserts).unwrap(), None);
        let retry = duplicate(doc! { "identifier": 1, "type": 1 });
        assert_eq!(judge_reply(&retry, "pc", &upserts).unwrap(), Some(1));
        let other_index = duplicate(doc! { "other": 1 });
        let err = judge_reply(&other_index, "fd-pc-crm", &upserts).unwrap_err().to_string();
        assert!(
            err.contains("fd-pc-crm") && err.contains("statement 1") && err.contains("C-2"),
            "{err}"
        );
        let concern = doc! { "ok": 1, "writeConcernError": { "code": 64, "errmsg": "timeout" } };
        assert!(matches!(
            judge_reply(&concern, "pc", &upserts),
            Err(ProjectionChangesError::WriteConcern { .. })
        ));
    }
}
