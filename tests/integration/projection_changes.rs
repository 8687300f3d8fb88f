//! Projection changes (docs/outputs.md#projection-changes) on the real mongod: the document one change creates (vector
//! #39), a burst refreshing the pending `NEW` element (#43), a change arriving while the
//! single-view creator works appending one, `$` strings stored literally, the indexes, one
//! `update` command per batch, concurrent creation and a refused statement; the batched
//! recording ending as the upserts do, and its fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use rtu_operator::engine::outputs::projection_changes::{
    self, change_update, ensure_indexes, upsert_each,
};
use rtu_operator::engine::outputs::{
    ChangeUpsert, PendingChange, ProjectionChangesError, Recorded,
};
use rtu_operator::engine::projection::Source;

use crate::support::env;
use crate::support::mongodb::{admin_client, unique_database};

/// The engine's default write concern, as its commands carry it.
fn majority() -> mongodb::bson::Document {
    rtu_operator::config::WriteConcern::default().command_document()
}

const COLLECTION: &str = "fd-pc-crm";
/// 2023-11-14T22:13:20.000Z, the Kafka timestamp of every message here.
const T0: i64 = 1_700_000_000_000;
const W1: i64 = T0 + 1_000;
const W2: i64 = T0 + 2_000;

/// The item `(O-1, 2)` message at `offset` (vector #39: topic `…pr_order_items.ingestion`, p1).
fn item(offset: i64) -> Source {
    Source {
        topic: "acme.dev.crm.pr_order_items.ingestion".into(),
        partition: 1,
        offset,
        timestamp_ms: T0,
        key: Bson::Document(doc! { "order_id": "O-1", "line_no": 2_i64 }),
    }
}

fn c7() -> Document {
    doc! { "customerId": "C-7" }
}

fn change(identifier: &Document, kafka: &Source, now: i64) -> ChangeUpsert {
    change_update("sv_customers", identifier, kafka, DateTime::from_millis(now)).unwrap()
}

async fn fresh_db(prefix: &str) -> (Database, Collection<Document>) {
    let db = admin_client().await.database(&unique_database(prefix));
    ensure_indexes(&db, COLLECTION).await.unwrap();
    let coll = db.collection::<Document>(COLLECTION);
    (db, coll)
}

/// The only document of `identifier` (fails when there are several or none).
async fn stored(coll: &Collection<Document>, identifier: &Document) -> Document {
    let filter = doc! { "type": "sv_customers", "identifier": identifier.clone() };
    assert_eq!(coll.count_documents(filter.clone()).await.unwrap(), 1, "{filter}");
    coll.find_one(filter).await.unwrap().unwrap()
}

/// The `NEW` element docs/outputs.md describes for `kafka` written at `now`.
fn new_element(kafka: &Source, now: i64) -> Bson {
    Bson::Document(doc! {
        "state": "NEW",
        "topic": &kafka.topic,
        "partition": kafka.partition,
        "offset": kafka.offset.to_string(),
        "key": kafka.key.clone(),
        "timestamp": DateTime::from_millis(kafka.timestamp_ms),
        "updatedAt": DateTime::from_millis(now),
    })
}

#[tokio::test]
async fn projection_changes_first_change_has_the_spec_shape() {
    let (db, coll) = fresh_db("pc_shape").await;
    upsert_each(&db, COLLECTION, &[change(&c7(), &item(55), W1)], &majority()).await.unwrap();

    let mut got = stored(&coll, &c7()).await;
    assert!(got.get_object_id("_id").is_ok(), "{got}");
    got.remove("_id");
    let expected = doc! {
        "type": "sv_customers",
        "identifier": { "customerId": "C-7" },
        "changes": [new_element(&item(55), W1)],
        "createdAt": DateTime::from_millis(W1),
        "updatedAt": DateTime::from_millis(W1),
    };
    // `Document` equality ignores field order: mongod builds an upserted document's fields from
    // the filter in its own order (`identifier` before `type`); the fields are exactly these.
    assert_eq!(got, expected);
    assert_eq!(got.len(), expected.len());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_burst_refreshes_the_pending_new_element() {
    let (db, coll) = fresh_db("pc_burst").await;
    upsert_each(&db, COLLECTION, &[change(&c7(), &item(55), W1)], &majority()).await.unwrap();
    upsert_each(&db, COLLECTION, &[change(&c7(), &item(56), W2)], &majority()).await.unwrap();

    let got = stored(&coll, &c7()).await;
    assert_eq!(got.get_array("changes").unwrap(), &vec![new_element(&item(56), W2)], "{got}");
    assert_eq!(got.get_datetime("createdAt").unwrap(), &DateTime::from_millis(W1));
    assert_eq!(got.get_datetime("updatedAt").unwrap(), &DateTime::from_millis(W2));
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_change_while_in_progress_appends_a_new_element() {
    let (db, coll) = fresh_db("pc_in_progress").await;
    upsert_each(&db, COLLECTION, &[change(&c7(), &item(55), W1)], &majority()).await.unwrap();
    // The single-view creator takes the element, as it does.
    let taken = coll
        .update_one(
            doc! { "type": "sv_customers", "identifier": c7(), "changes.state": "NEW" },
            doc! { "$set": { "changes.$.state": "IN_PROGRESS", "changes.$.inProgressAt": DateTime::from_millis(W1) } },
        )
        .await
        .unwrap();
    assert_eq!(taken.modified_count, 1);

    upsert_each(&db, COLLECTION, &[change(&c7(), &item(56), W2)], &majority()).await.unwrap();
    let mut in_progress = new_element(&item(55), W1).as_document().unwrap().clone();
    in_progress.insert("state", "IN_PROGRESS");
    in_progress.insert("inProgressAt", DateTime::from_millis(W1));
    let got = stored(&coll, &c7()).await;
    let expected = vec![Bson::Document(in_progress.clone()), new_element(&item(56), W2)];
    assert_eq!(got.get_array("changes").unwrap(), &expected, "{got}");

    // A further change refreshes the new pending element, the taken one stays as it is.
    upsert_each(&db, COLLECTION, &[change(&c7(), &item(57), W2 + 1)], &majority()).await.unwrap();
    let got = stored(&coll, &c7()).await;
    let expected = vec![Bson::Document(in_progress), new_element(&item(57), W2 + 1)];
    assert_eq!(got.get_array("changes").unwrap(), &expected, "{got}");
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_dollar_strings_are_stored_literally() {
    let (db, coll) = fresh_db("pc_dollar").await;
    let identifier = doc! { "customerId": "$C-7", "tenant": "$$ROOT" };
    let mut kafka = item(55);
    kafka.topic = "$topic".into();
    kafka.key = Bson::Document(doc! { "order_id": "$order_id", "nested": { "x": "$$NOW" } });
    let upsert = change(&identifier, &kafka, W1);
    upsert_each(&db, COLLECTION, &[upsert.clone(), upsert], &majority()).await.unwrap();

    let got = stored(&coll, &identifier).await;
    assert_eq!(got.get_document("identifier").unwrap(), &identifier);
    assert_eq!(got.get_array("changes").unwrap(), &vec![new_element(&kafka, W1)], "{got}");
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_indexes_have_the_documented_names_keys_and_uniqueness() {
    let (db, coll) = fresh_db("pc_indexes").await;
    // A second call is a no-op.
    ensure_indexes(&db, COLLECTION).await.unwrap();
    let mut found = Vec::new();
    let mut cursor = coll.list_indexes().await.unwrap();
    while cursor.advance().await.unwrap() {
        let index = cursor.deserialize_current().unwrap();
        let options = index.options.unwrap_or_default();
        let unique = options.unique.unwrap_or(false);
        found.push((options.name.unwrap_or_default(), index.keys, unique));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [
            ("_id_".to_string(), doc! { "_id": 1 }, false),
            ("type_change_state".to_string(), doc! { "changes.state": 1, "type": 1 }, false),
            ("type_identifier".to_string(), doc! { "identifier": 1, "type": 1 }, true),
        ]
    );
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_batch_is_one_update_command() {
    let updates = Arc::new(AtomicUsize::new(0));
    let mut options = ClientOptions::parse(env().var("RTU_TEST_MONGODB_URI")).await.unwrap();
    let db_name = unique_database("pc_batch");
    let (counter, watched) = (Arc::clone(&updates), db_name.clone());
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event
            && started.command_name == "update"
            && started.db == watched
        {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let db = Client::with_options(options).unwrap().database(&db_name);
    ensure_indexes(&db, COLLECTION).await.unwrap();

    // 20 identifiers, each changed twice in the batch, in order.
    let identifiers: Vec<Document> =
        (0..20).map(|i| doc! { "customerId": format!("C-{i}") }).collect();
    let batch: Vec<ChangeUpsert> = (0..2)
        .flat_map(|round| {
            identifiers.iter().map(move |id| change(id, &item(55 + round), W1 + round))
        })
        .collect();
    upsert_each(&db, COLLECTION, &batch, &majority()).await.unwrap();

    assert_eq!(updates.load(Ordering::SeqCst), 1);
    let coll = db.collection::<Document>(COLLECTION);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 20);
    for id in &identifiers {
        let got = stored(&coll, id).await;
        assert_eq!(got.get_array("changes").unwrap(), &vec![new_element(&item(56), W1 + 1)]);
    }
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_concurrent_creations_leave_one_document() {
    let (db, coll) = fresh_db("pc_concurrent").await;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let upsert = change(&c7(), &item(55 + i), W1 + i);
                upsert_each(&db, COLLECTION, &[upsert], &majority()).await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let got = stored(&coll, &c7()).await;
    let changes = got.get_array("changes").unwrap();
    assert_eq!(changes.len(), 1, "{got}");
    assert_eq!(changes[0].as_document().unwrap().get_str("state").unwrap(), "NEW");
    db.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_refused_statement_is_an_error_naming_it() {
    let db = admin_client().await.database(&unique_database("pc_refused"));
    let validator = doc! { "identifier.customerId": { "$ne": "BAD" } };
    db.create_collection(COLLECTION).validator(validator).await.unwrap();
    ensure_indexes(&db, COLLECTION).await.unwrap();
    let ids =
        [doc! { "customerId": "C-1" }, doc! { "customerId": "BAD" }, doc! { "customerId": "C-3" }];
    let batch: Vec<ChangeUpsert> = ids.iter().map(|id| change(id, &item(55), W1)).collect();

    let err = upsert_each(&db, COLLECTION, &batch, &majority()).await.unwrap_err();
    assert!(
        matches!(&err, ProjectionChangesError::Statement { index: 1, code: 121, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(COLLECTION) && message.contains("BAD"), "{message}");
    // Ordered: the statements after the refused one did not run.
    let coll = db.collection::<Document>(COLLECTION);
    let written: Vec<String> = coll
        .distinct("identifier.customerId", doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(written, ["C-1"]);
    db.drop().await.unwrap();
}

/// Every document of `coll`, without `_id`, sorted by type and identifier.
async fn all_documents(coll: &Collection<Document>) -> Vec<Document> {
    let mut cursor = coll.find(doc! {}).await.unwrap();
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        let mut d = cursor.deserialize_current().unwrap();
        d.remove("_id");
        out.push(d);
    }
    out.sort_by_key(|d| format!("{:?} {:?}", d.get("type"), d.get("identifier")));
    out
}

/// The single-view creator's moves, applied alike to both collections of the comparison.
async fn take(coll: &Collection<Document>, customer: &str, state: &str) {
    let filter = doc! { "type": "sv_customers", "identifier": { "customerId": customer }, "changes.state": "NEW" };
    let set = doc! { "$set": { "changes.$.state": state, "changes.$.inProgressAt": DateTime::from_millis(W1) } };
    assert_eq!(coll.update_one(filter, set).await.unwrap().modified_count, 1);
}

#[tokio::test]
async fn projection_changes_batched_recording_ends_as_the_upserts_do() {
    // The same batches, written one upsert per change into `upserts` and batched (look-up,
    // multi-document updates, inserts) into `batched`: the documents end equal, whatever the
    // state the single-view creator left them in, across two types and over 100 identifiers
    // per type (several update statements).
    let (db, upserts) = fresh_db("pc_batched_a").await;
    let (db_b, batched) = fresh_db("pc_batched_b").await;
    let customer = |n: usize| doc! { "customerId": format!("C-{n}") };
    let order = |n: usize| doc! { "orderId": format!("O-{n}"), "line": 1_i32 };
    let ids: Vec<(&str, Document)> = (0..250)
        .map(|n| ("sv_customers", customer(n)))
        .chain((0..20).map(|n| ("sv_orders", order(n))))
        .collect();
    let sources: Vec<Source> = (0..4).map(|b| item(100 + b)).collect();
    // (batch, write time, which identifiers)
    let batches: [(usize, i64, std::ops::Range<usize>); 4] =
        [(0, W1, 0..5), (1, W2, 0..270), (2, W2 + 1, 3..270), (3, W2 + 2, 0..270)];
    let mut outcomes = Vec::new();
    for (b, now, range) in batches {
        let kafka = &sources[b];
        let upsert_list: Vec<ChangeUpsert> = ids[range.clone()]
            .iter()
            .map(|(t, id)| change_update(t, id, kafka, DateTime::from_millis(now)).unwrap())
            .collect();
        upsert_each(&db, COLLECTION, &upsert_list, &majority()).await.unwrap();
        let pending: Vec<PendingChange<'_>> = ids[range]
            .iter()
            .map(|(t, id)| PendingChange { single_view_type: t, identifier: id, kafka })
            .collect();
        let recorded = projection_changes::record(
            &db_b,
            COLLECTION,
            &pending,
            DateTime::from_millis(now),
            2,
            &majority(),
        )
        .await
        .unwrap();
        outcomes.push(recorded);
        if b == 0 {
            for coll in [&upserts, &batched] {
                take(coll, "C-1", "IN_PROGRESS").await;
                take(coll, "C-2", "DONE").await;
            }
        }
    }
    let fast = |refreshed, inserted| Recorded { refreshed, inserted, fell_back: false };
    assert_eq!(outcomes, [fast(0, 5), fast(5, 265), fast(267, 0), fast(270, 0)]);
    let (a, b) = (all_documents(&upserts).await, all_documents(&batched).await);
    assert_eq!(a.len(), 270);
    assert_eq!(a, b, "batched recording differs from the upserts");
    let c1 = stored(&batched, &customer(1)).await;
    let states: Vec<&str> = c1
        .get_array("changes")
        .unwrap()
        .iter()
        .map(|c| c.as_document().unwrap().get_str("state").unwrap())
        .collect();
    assert_eq!(states, ["IN_PROGRESS", "NEW"], "{c1}");
    assert_eq!(c1.get_datetime("createdAt").unwrap(), &DateTime::from_millis(W1));
    db.drop().await.unwrap();
    db_b.drop().await.unwrap();
}

#[tokio::test]
async fn projection_changes_batched_recording_falls_back_when_its_look_up_misses_a_document() {
    // A document whose stored identifier has another numeric type ({customerId: 7 as int64}) is
    // the same identifier to the unique index and to queries, but not to the look-up by bytes:
    // the insert meets a duplicate key, and the batch is written again one upsert per change.
    let (db, coll) = fresh_db("pc_batched_fallback").await;
    let stored_id = doc! { "customerId": 7_i64 };
    let done = doc! { "state": "DONE", "topic": "t", "partition": 0_i32, "offset": "1" };
    let existing = doc! {
        "type": "sv_customers", "identifier": stored_id, "changes": [done.clone()],
        "createdAt": DateTime::from_millis(T0), "updatedAt": DateTime::from_millis(T0),
    };
    coll.insert_one(existing).await.unwrap();
    let (ours, other) = (doc! { "customerId": 7_i32 }, doc! { "customerId": 8_i32 });
    let kafka = item(55);
    let pending = [&ours, &other].map(|identifier| PendingChange {
        single_view_type: "sv_customers",
        identifier,
        kafka: &kafka,
    });
    let recorded = projection_changes::record(
        &db,
        COLLECTION,
        &pending,
        DateTime::from_millis(W1),
        1,
        &majority(),
    )
    .await
    .unwrap();
    assert_eq!(recorded, Recorded { refreshed: 0, inserted: 1, fell_back: true });
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    let got = stored(&coll, &ours).await;
    let expected = vec![Bson::Document(done), new_element(&item(55), W1)];
    assert_eq!(got.get_array("changes").unwrap(), &expected, "{got}");
    assert_eq!(got.get_datetime("createdAt").unwrap(), &DateTime::from_millis(T0));
    assert_eq!(stored(&coll, &other).await.get_array("changes").unwrap().len(), 1);
    db.drop().await.unwrap();
}
