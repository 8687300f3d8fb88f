//! Manual strategies in the JavaScript sandbox against the real mongod (docs/outputs.md#strategies): the
//! read-only `mongoClient` (`find().toArray()`, `findOne`, `countDocuments`), a strategy that
//! throws, one that never finishes (timeout, then the next call works), look-ups that cannot
//! write.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};

use rtu_operator::engine::script::{CallError, FunctionKind, Limits, ScriptHost};

use crate::support::mongodb::{admin_client, unique_database};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/js").join(name)
}

fn strategies(time: Duration) -> ScriptHost {
    let files = [
        ("customerOrders", "strategy_customer_orders.js"),
        ("throws", "strategy_throws.js"),
        ("loops", "strategy_loops.js"),
    ]
    .map(|(name, file)| (name.to_string(), fixture(file)));
    let limits = Limits { time, memory_bytes: 32 * 1024 * 1024 };
    ScriptHost::load(&files, FunctionKind::Strategy, limits).unwrap()
}

/// Customers C-7 and C-9; orders O-1, O-4 of C-7 (O-1 placed first), O-5 of C-9 soft-deleted.
async fn seeded() -> Database {
    let db = admin_client().await.database(&unique_database("script_strategy"));
    let at = |ms| DateTime::from_millis(ms);
    db.collection::<Document>("pr_customers")
        .insert_many([
            doc! { "customer_id": "C-7", "__STATE__": "PUBLIC" },
            doc! { "customer_id": "C-9", "__STATE__": "PUBLIC" },
        ])
        .await
        .unwrap();
    db.collection::<Document>("pr_orders")
        .insert_many([
            doc! { "order_id": "O-4", "customer_id": "C-7", "__STATE__": "PUBLIC", "placed_at": at(2_000) },
            doc! { "order_id": "O-1", "customer_id": "C-7", "__STATE__": "PUBLIC", "placed_at": at(1_000) },
            doc! { "order_id": "O-5", "customer_id": "C-9", "__STATE__": "DELETED", "placed_at": at(3_000) },
        ])
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_strategy_finds_the_orders_of_a_customer() {
    let db = seeded().await;
    let host = strategies(Duration::from_secs(5));
    let name = db.name().to_string();
    let customer = doc! { "customer_id": "C-7", "name": "Ada" };

    let ids = host.strategy("customerOrders", &name, &customer, db.clone()).await.unwrap();
    assert_eq!(
        ids,
        [
            doc! { "orderId": "O-1", "placedAt": DateTime::from_millis(1_000) },
            doc! { "orderId": "O-4", "placedAt": DateTime::from_millis(2_000) },
        ]
    );
    let deleted_only = doc! { "customer_id": "C-9" };
    assert_eq!(
        host.strategy("customerOrders", &name, &deleted_only, db.clone()).await.unwrap(),
        []
    );
    let order = doc! { "order_id": "O-1", "customer_id": "C-7" };
    assert_eq!(
        host.strategy("customerOrders", &name, &order, db.clone()).await.unwrap(),
        [doc! { "customerId": "C-7" }]
    );
    db.drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_strategy_that_throws_is_strategy_failed_with_its_message() {
    let db = seeded().await;
    let host = strategies(Duration::from_secs(5));
    let name = db.name().to_string();

    let err = host.strategy("throws", &name, &doc! { "customer_id": "C-9" }, db.clone()).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message == "no single view for C-9"),
        "{err:?}"
    );
    assert_eq!((err.code().as_str(), err.is_transient()), ("STRATEGY_FAILED", false));
    db.drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_strategy_that_never_finishes_times_out_and_the_next_call_works() {
    let db = seeded().await;
    let limit = Duration::from_millis(300);
    let host = strategies(limit);
    let name = db.name().to_string();

    for _ in 0..2 {
        let started = Instant::now();
        let err = host.strategy("loops", &name, &doc! { "customer_id": "LOOP" }, db.clone()).await;
        let took = started.elapsed();
        let err = err.unwrap_err();
        assert!(matches!(err, CallError::Timeout { limit: l, .. } if l == limit), "{err:?}");
        assert_eq!((err.code().as_str(), err.is_transient()), ("STRATEGY_TIMEOUT", true));
        assert!(took >= limit && took < Duration::from_secs(3), "took {took:?}");

        let ids = host.strategy("loops", &name, &doc! { "customer_id": "C-7" }, db.clone()).await;
        assert_eq!(ids.unwrap(), [doc! { "customerId": "C-7" }]);
        let customer = doc! { "customer_id": "C-7" };
        let ids = host.strategy("customerOrders", &name, &customer, db.clone()).await;
        assert_eq!(ids.unwrap().len(), 2);
    }
    db.drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_strategy_client_is_read_only_and_reads_other_databases() {
    let db = seeded().await;
    let other = admin_client().await.database(&unique_database("script_other"));
    other.collection::<Document>("c").insert_one(doc! { "x": 1 }).await.unwrap();
    let source = format!(
        r#"module.exports = (logger, databaseName) => async (doc, client) => {{
             const orders = client.db().collection('pr_orders')
             const writes = ['insertOne', 'updateOne', 'deleteMany', 'drop', 'aggregate']
               .filter((m) => typeof orders[m] !== 'undefined')
             const other = await client.db('{other}').collection('c').findOne({{}}, {{ projection: {{ _id: 0 }} }})
             const limited = await orders.find({{}}, {{ sort: {{ order_id: -1 }}, limit: 1, projection: {{ order_id: 1, _id: 0 }} }}).toArray()
             let bad
             try {{ await orders.find({{ $bogus: 1 }}).toArray() }} catch (e) {{ bad = e.message }}
             return [{{ writes: writes.length, other, limited, bad: bad.includes('$bogus') }}]
           }}"#,
        other = other.name()
    );
    let host = ScriptHost::from_sources(
        vec![("inspect".into(), "inspect.js".into(), source)],
        FunctionKind::Strategy,
        Limits { time: Duration::from_secs(5), memory_bytes: 32 * 1024 * 1024 },
    )
    .unwrap();
    let ids = host.strategy("inspect", db.name(), &doc! {}, db.clone()).await.unwrap();
    assert_eq!(
        ids,
        [
            doc! { "writes": 0_i64, "other": { "x": 1_i64 }, "limited": [{ "order_id": "O-5" }], "bad": true }
        ]
    );
    db.drop().await.unwrap();
    other.drop().await.unwrap();
}
