//! Projection changes in MongoDB (SPEC §4.2): one document per `(type, identifier)` whose
//! `changes` array tells the single-view creator what to aggregate. [`projection_change_update`]
//! builds the upsert of one change (pure), encoded straight into BSON (module `encode`: no
//! `Document` tree is built, cloned and dropped per change); [`upsert_projection_changes`]
//! sends a batch of them as one `update` command; [`ensure_projection_change_indexes`] creates
//! the indexes the single-view creator relies on.
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

/// The unique index on `{identifier: 1, type: 1}`.
pub const TYPE_IDENTIFIER_INDEX: &str = "type_identifier";
/// The index on `{"changes.state": 1, type: 1}`.
pub const TYPE_CHANGE_STATE_INDEX: &str = "type_change_state";

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

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
pub fn projection_change_update(
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
pub async fn ensure_projection_change_indexes(
    db: &Database,
    collection: &str,
) -> Result<(), ProjectionChangesError> {
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
/// other refusal is an error naming the collection and the statement.
pub async fn upsert_projection_changes(
    db: &Database,
    collection: &str,
    upserts: &[ChangeUpsert],
) -> Result<(), ProjectionChangesError> {
    let Some(at) = send(db, collection, upserts).await? else {
        return Ok(());
    };
    let rest = upserts.get(at..).unwrap_or_default();
    match send(db, collection, rest).await? {
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
) -> Result<Option<usize>, ProjectionChangesError> {
    if upserts.is_empty() {
        return Ok(None);
    }
    let statements = upserts.iter().map(ChangeUpsert::statement);
    let command = encode::ordered_update_command(collection, statements).map_err(|source| {
        ProjectionChangesError::Encode { collection: collection.to_string(), source }
    })?;
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
    if let Ok(concern) = reply.get_document("writeConcernError") {
        return Err(ProjectionChangesError::WriteConcern {
            collection: collection.to_string(),
            message: concern.to_string(),
        });
    }
    let errors = reply.get_array("writeErrors").map(Vec::as_slice).unwrap_or_default();
    let Some(error) = errors.iter().find_map(Bson::as_document) else {
        return Ok(None);
    };
    let index = error.get_i32("index").ok().and_then(|i| usize::try_from(i).ok()).unwrap_or(0);
    let code = error.get_i32("code").unwrap_or(0);
    if code == DUPLICATE_KEY && on_type_identifier(error) {
        return Ok(Some(index));
    }
    Err(ProjectionChangesError::Statement {
        collection: collection.to_string(),
        index,
        statement: statement_of(upserts, index),
        code,
        message: error.get_str("errmsg").unwrap_or_default().to_string(),
    })
}

/// Whether a duplicate-key error is on `{identifier, type}`.
fn on_type_identifier(error: &Document) -> bool {
    error
        .get_document("keyPattern")
        .is_ok_and(|pattern| pattern.keys().map(String::as_str).eq(["identifier", "type"]))
}

fn duplicate_error(
    collection: &str,
    index: usize,
    upserts: &[ChangeUpsert],
) -> ProjectionChangesError {
    ProjectionChangesError::Statement {
        collection: collection.to_string(),
        index,
        statement: statement_of(upserts, index),
        code: DUPLICATE_KEY,
        message: format!("duplicate key on {TYPE_IDENTIFIER_INDEX}, also after a retry"),
    }
}

fn statement_of(upserts: &[ChangeUpsert], index: usize) -> String {
    upserts
        .get(index)
        .and_then(ChangeUpsert::filter)
        .map_or_else(|| "unknown".to_string(), |filter| filter.to_string())
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, doc};

    use super::*;
    use crate::engine::outputs::fixtures::{T0, source};

    fn upsert(customer: &str) -> ChangeUpsert {
        let kafka = source("t", 1, 55, Bson::Document(doc! { "order_id": "$O-1" }));
        let identifier = doc! { "customerId": customer };
        projection_change_update("sv_customers", &identifier, &kafka, DateTime::from_millis(T0))
            .unwrap()
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
        let built = projection_change_update("sv_orders", &identifier, &kafka, now).unwrap();
        assert_eq!(built.statement().as_bytes(), mongodb::bson::to_vec(&expected).unwrap());
        let nul = doc! { "a\u{0}b": 1_i32 };
        assert!(projection_change_update("sv", &nul, &kafka, now).is_err());
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
