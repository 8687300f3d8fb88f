//! Smoke tests of the real mongod (6.0, replica set rs0, --auth): unique index, upserts, a
//! duplicate-key error surfaced as such, a raw multi-statement `update` command (what the
//! engine sends: mongod 6.0 has no `bulkWrite` command), and authentication.

use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};

use crate::support::mongodb::{admin_client, unique_database, uri_for};
use crate::support::{env, unique_name};

fn server_code(err: &mongodb::error::Error) -> Option<i32> {
    match &*err.kind {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test]
async fn mongodb_unique_index_upsert_duplicate_key_and_raw_update() {
    let client = admin_client().await;
    let db = client.database(&unique_database("smoke_mongo"));
    let coll = db.collection::<Document>("projection");

    let index = IndexModel::builder()
        .keys(doc! { "pk": 1 })
        .options(IndexOptions::builder().unique(true).name("pk_unique".to_string()).build())
        .build();
    coll.create_index(index).await.unwrap();

    let inserted =
        coll.update_one(doc! { "pk": 1 }, doc! { "$set": { "v": "a" } }).upsert(true).await;
    let inserted = inserted.unwrap();
    assert_eq!((inserted.matched_count, inserted.upserted_id.is_some()), (0, true));
    let updated = coll
        .update_one(doc! { "pk": 1 }, doc! { "$set": { "v": "b" } })
        .upsert(true)
        .await
        .unwrap();
    assert_eq!((updated.matched_count, updated.modified_count), (1, 1));
    assert!(updated.upserted_id.is_none());

    let dup = coll.insert_one(doc! { "pk": 1, "v": "dup" }).await.unwrap_err();
    assert!(
        matches!(&*dup.kind, ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000),
        "expected a duplicate-key write error, got {dup:?}"
    );

    // One round trip, four statements, unordered: the third collides with pk 1 and fails
    // alone; the others apply.
    let reply = db
        .run_command(doc! {
            "update": "projection",
            "ordered": false,
            "updates": [
                { "q": { "pk": 2 }, "u": { "$set": { "v": "x" } }, "upsert": true },
                { "q": { "pk": 1 }, "u": { "$set": { "v": "c" } }, "upsert": true },
                { "q": { "pk": 2 }, "u": { "$set": { "pk": 1 } } },
                { "q": { "pk": 3 }, "u": { "$set": { "v": "d" } }, "upsert": true },
            ],
        })
        .await
        .unwrap();
    assert_eq!(reply.get_i32("n").unwrap(), 3, "{reply}");
    assert_eq!(reply.get_i32("nModified").unwrap(), 1, "{reply}");
    let upserted: Vec<i32> = reply
        .get_array("upserted")
        .unwrap()
        .iter()
        .map(|u| u.as_document().unwrap().get_i32("index").unwrap())
        .collect();
    assert_eq!(upserted, [0, 3], "{reply}");
    let errors = reply.get_array("writeErrors").unwrap();
    assert_eq!(errors.len(), 1, "{reply}");
    let error = errors[0].as_document().unwrap();
    assert_eq!((error.get_i32("index").unwrap(), error.get_i32("code").unwrap()), (2, 11000));

    let mut docs = Vec::new();
    let mut cursor = coll.find(doc! {}).sort(doc! { "pk": 1 }).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        docs.push((d.get_i32("pk").unwrap(), d.get_str("v").unwrap().to_string()));
    }
    assert_eq!(docs, [(1, "c".into()), (2, "x".into()), (3, "d".into())]);

    let no_bulk_write = client.database("admin").run_command(doc! { "bulkWrite": 1 }).await;
    assert_eq!(
        no_bulk_write.as_ref().err().and_then(server_code),
        Some(59),
        "mongod is expected to be 6.0 (no bulkWrite command): {no_bulk_write:?}"
    );
    db.drop().await.unwrap();
}

#[tokio::test]
async fn mongodb_authentication_is_enforced() {
    let app_db = env().var("RTU_TEST_MONGODB_APP_DATABASE");
    let user = env().var("RTU_TEST_MONGODB_APP_USER");
    let password = env().var("RTU_TEST_MONGODB_APP_PASSWORD");
    let collection = unique_name("smoke-auth");

    let app = Client::with_uri_str(uri_for(user, password, app_db)).await.unwrap();
    let own = app.database(app_db).collection::<Document>(&collection);
    own.insert_one(doc! { "pk": 1 }).await.unwrap();
    assert_eq!(own.count_documents(doc! {}).await.unwrap(), 1);

    let elsewhere = app.database(&unique_database("smoke_denied")).collection::<Document>("c");
    let denied = elsewhere.insert_one(doc! { "pk": 1 }).await.unwrap_err();
    assert_eq!(server_code(&denied), Some(13), "expected Unauthorized, got {denied:?}");

    let wrong = Client::with_uri_str(uri_for(user, "wrong-password", app_db)).await.unwrap();
    let refused = wrong.database(app_db).run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(
        matches!(&*refused.kind, ErrorKind::Authentication { .. }),
        "expected an authentication error, got {refused:?}"
    );

    let anonymous = Client::with_uri_str(uri_for("", "", app_db)).await.unwrap();
    let unauth = anonymous.database(app_db).collection::<Document>(&collection);
    let read = unauth.find_one(doc! {}).await.unwrap_err();
    assert_eq!(server_code(&read), Some(13), "expected Unauthorized, got {read:?}");

    own.drop().await.unwrap();
}
