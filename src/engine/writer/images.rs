//! Before and after images of each applied statement, which the outputs need (docs/outputs.md#pr-update-events
//! `before`/`after`, docs/outputs.md#strategies strategy start documents): one read of the stored documents of a
//! batch's keys before the write, then each statement's effect replayed on them in memory, in
//! order, from its outcome, so several messages of one key in a batch each get their own
//! images without a read per message.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::Database;
use mongodb::bson::raw::Error as RawError;
use mongodb::bson::{Bson, Document, RawDocument, RawDocumentBuf, doc};

use super::precheck::key_id;
use super::{Sent, WriteOutcome, WriterError};
use crate::engine::projection::{Projection, Statement};

/// What an applied statement did, as pr-update reports it (docs/outputs.md#pr-update-events `operationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedOp {
    /// No live document existed: created, resurrected from `DELETED`, or a PK-change target.
    Insert,
    /// A live document was updated.
    Update,
    /// A delete (soft or hard).
    Delete,
}

/// The stored document before and after one applied statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    /// What the statement did.
    pub change: AppliedOp,
    /// The stored document before it (with `_id`), `None` when there was none (shared with
    /// the previous statement of the key in the batch, whose `after` it is).
    pub before: Option<Arc<Document>>,
    /// The stored document after it (with `_id`), `None` after a hard delete.
    pub after: Option<Arc<Document>>,
}

/// The stored documents of the statements' keys, by key id (missing keys are absent).
pub(super) async fn read_before(
    db: &Database,
    projection: &Projection,
    statements: &[Statement],
) -> Result<HashMap<String, Arc<Document>>, WriterError> {
    let pk = projection.primary_key_targets();
    let mut keys: Vec<Document> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for statement in statements {
        let key = key_of(&pk, statement);
        if seen.insert(key_id(pk.iter().map(|f| key.get(*f)))) {
            keys.push(key);
        }
    }
    let mut stored = HashMap::new();
    if keys.is_empty() {
        return Ok(stored);
    }
    // One reply for all of them (a key has one document at most): the default first batch of
    // 101 documents would take a getMore per further 101.
    let batch_size = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    let filter = match &pk[..] {
        [single] => {
            let values: Vec<Bson> = keys.iter().filter_map(|k| k.get(*single).cloned()).collect();
            doc! { *single: { "$in": values } }
        }
        _ => doc! { "$or": keys.into_iter().map(Bson::Document).collect::<Vec<_>>() },
    };
    let error =
        |source| WriterError::ReadStored { collection: projection.collection.clone(), source };
    // Read as raw documents and converted element by element (cheaper than the driver's serde
    // path into `Document`).
    let mut cursor = db
        .collection::<RawDocumentBuf>(&projection.collection)
        .find(filter)
        .batch_size(batch_size)
        .await
        .map_err(error)?;
    while let Some(raw) = cursor.try_next().await.map_err(error)? {
        let doc = Document::try_from(raw.as_ref()).map_err(|e| WriterError::Replay {
            collection: projection.collection.clone(),
            reason: e.to_string(),
        })?;
        stored.insert(key_id(pk.iter().map(|f| doc.get(*f))), Arc::new(doc));
    }
    Ok(stored)
}

/// Replays the statements on the stored documents: the images of each applied one.
pub(super) fn replay(
    projection: &Projection,
    statements: &[Statement],
    sent: &[Sent],
    mut stored: HashMap<String, Arc<Document>>,
) -> Result<Vec<Option<Images>>, WriterError> {
    let pk = projection.primary_key_targets();
    let mut images = Vec::with_capacity(statements.len());
    for (statement, sent) in statements.iter().zip(sent) {
        let key = key_of(&pk, statement);
        let id = key_id(pk.iter().map(|f| key.get(*f)));
        let before = stored.get(&id).cloned();
        let image = match (statement.plain(), &sent.outcome) {
            (Statement::Delete { .. }, WriteOutcome::Deleted { deleted: true }) => {
                stored.remove(&id);
                Some(Images { change: AppliedOp::Delete, before, after: None })
            }
            (Statement::Upsert { update, .. }, WriteOutcome::Inserted | WriteOutcome::Updated) => {
                let after = apply(&key, before.as_deref(), update, sent).map_err(|e| {
                    WriterError::Replay {
                        collection: projection.collection.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let after = Arc::new(after);
                let change = change_of(before.as_deref(), &after);
                stored.insert(id, Arc::clone(&after));
                Some(Images { change, before, after: Some(after) })
            }
            _ => None,
        };
        images.push(image);
    }
    Ok(images)
}

/// The primary-key fields of a statement's filter.
fn key_of(pk: &[&str], statement: &Statement) -> Document {
    let filter = match statement.plain() {
        Statement::Upsert { filter, .. } | Statement::Delete { filter } => Some(filter),
        Statement::Checked(_) => None,
    };
    pk.iter()
        .filter_map(|f| filter.and_then(|d| d.get(*f)).map(|v| (f.to_string(), v.clone())))
        .collect()
}

/// The document an upsert leaves: the stored one with `$set` applied, or (created) the new
/// `_id`, the key, `$set` and `$setOnInsert`, as MongoDB builds an upserted document. The
/// encoded update is read in place: each value is decoded once, straight into the document.
fn apply(
    key: &Document,
    before: Option<&Document>,
    update: &RawDocument,
    sent: &Sent,
) -> Result<Document, RawError> {
    let created = sent.outcome == WriteOutcome::Inserted || before.is_none();
    let mut after = match before {
        Some(doc) if !created => doc.clone(),
        _ => {
            let mut doc = Document::new();
            if let Some(id) = &sent.upserted_id {
                doc.insert("_id", id.clone());
            }
            doc.extend(key.clone());
            doc
        }
    };
    let mut operators = vec!["$set"];
    if created {
        operators.push("$setOnInsert");
    }
    for operator in operators {
        let Ok(fields) = update.get_document(operator) else { continue };
        for field in fields {
            let (path, value) = field?;
            set_path(&mut after, path, Bson::try_from(value)?);
        }
    }
    Ok(after)
}

/// `$set` of one (possibly dotted) path.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// Insert when no live document existed, delete when the write marks it `DELETED`.
fn change_of(before: Option<&Document>, after: &Document) -> AppliedOp {
    let deleted = |d: &Document| d.get_str("__STATE__") == Ok("DELETED");
    if deleted(after) {
        AppliedOp::Delete
    } else if before.is_none_or(deleted) {
        AppliedOp::Insert
    } else {
        AppliedOp::Update
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::encode::to_raw;

    fn upsert(key: &str, set: Document) -> Statement {
        let update = doc! { "$set": set, "$setOnInsert": { "createdAt": 1_i32 } };
        Statement::Upsert {
            filter: doc! { "id": key, "$or": [{ "c": { "$lte": 1_i32 } }] },
            update: to_raw(&update).unwrap(),
        }
    }

    fn projection() -> Projection {
        let config: crate::config::ProjectionConfig = crate::yaml::from_str(
            "{name: p, topics: [t], fields: [{name: id, type: String, primaryKey: true}, {name: n, type: String}]}",
        )
        .unwrap();
        Projection::new(&config, &Default::default()).unwrap()
    }

    fn sent(outcome: WriteOutcome, id: Option<i32>) -> Sent {
        Sent { outcome, upserted_id: id.map(Bson::Int32) }
    }

    #[test]
    fn each_statement_of_a_key_sees_what_the_previous_left() {
        let stmts = vec![
            upsert("a", doc! { "n": "one", "__STATE__": "PUBLIC" }),
            upsert("a", doc! { "n": "two", "__STATE__": "PUBLIC" }),
            upsert("a", doc! { "n": "old", "__STATE__": "PUBLIC" }),
            upsert("a", doc! { "__STATE__": "DELETED", "k.x": 1_i32 }),
        ];
        let sent = [
            sent(WriteOutcome::Inserted, Some(7)),
            sent(WriteOutcome::Updated, None),
            sent(WriteOutcome::Stale, None),
            sent(WriteOutcome::Updated, None),
        ];
        let images = replay(&projection(), &stmts, &sent, HashMap::new()).unwrap();
        let first = images[0].as_ref().unwrap();
        assert_eq!(first.change, AppliedOp::Insert);
        assert_eq!(first.before, None);
        let expected =
            doc! { "_id": 7_i32, "id": "a", "n": "one", "__STATE__": "PUBLIC", "createdAt": 1_i32 };
        assert_eq!(first.after.as_deref(), Some(&expected));
        let second = images[1].as_ref().unwrap();
        assert_eq!((second.change, &second.before), (AppliedOp::Update, &first.after));
        assert_eq!(second.after.as_ref().unwrap().get_str("n"), Ok("two"));
        assert_eq!(images[2], None, "stale: no images");
        let third = images[3].as_ref().unwrap();
        assert_eq!(third.change, AppliedOp::Delete);
        let after = third.after.as_ref().unwrap();
        assert_eq!(after.get_str("n"), Ok("two"), "a soft delete keeps the data");
        assert_eq!(after.get_document("k").unwrap(), &doc! { "x": 1_i32 });
        assert_eq!(after.get_i32("_id"), Ok(7));
    }

    #[test]
    fn resurrection_is_an_insert_and_a_hard_delete_leaves_nothing() {
        let stored = doc! { "_id": 1_i32, "id": "a", "__STATE__": "DELETED", "createdAt": 0_i32 };
        let mut map = HashMap::new();
        map.insert(key_id([Some(&Bson::from("a"))].into_iter()), Arc::new(stored.clone()));
        let stmts = vec![
            upsert("a", doc! { "n": "back", "__STATE__": "PUBLIC" }),
            Statement::Delete { filter: doc! { "id": "a" } },
            Statement::Delete { filter: doc! { "id": "a" } },
        ];
        let sent = [
            sent(WriteOutcome::Updated, None),
            sent(WriteOutcome::Deleted { deleted: true }, None),
            sent(WriteOutcome::Deleted { deleted: false }, None),
        ];
        let images = replay(&projection(), &stmts, &sent, map).unwrap();
        let back = images[0].as_ref().unwrap();
        assert_eq!((back.change, back.before.as_deref()), (AppliedOp::Insert, Some(&stored)));
        assert_eq!(back.after.as_ref().unwrap().get_i32("createdAt"), Ok(0), "kept");
        let gone = images[1].as_ref().unwrap();
        assert_eq!((gone.change, gone.after.as_deref()), (AppliedOp::Delete, None));
        assert_eq!(gone.before, back.after);
        assert_eq!(images[2], None, "nothing deleted: no images");
    }
}
