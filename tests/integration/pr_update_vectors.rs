//! The pr-update column of docs/vectors.md on the real mongod: records go through the adapter, the
//! guarded statements and `writer::execute_with_images`; each applied write's images become a
//! pr-update value, and the `after` image the engine replays in memory is checked against the
//! document MongoDB actually stored.

use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};

use rtu_operator::config::{DeleteMechanism, ProjectionConfig, WritesConfig};
use rtu_operator::engine::adapter::{Adapted, Adapter, KafkaRecord};
use rtu_operator::engine::outputs::{AppliedWrite, ChangeOp, pr_update};
use rtu_operator::engine::projection::{Projection, Source, parse_kafka_key};
use rtu_operator::engine::writer::{self, AppliedOp, ensure_primary_key_index};

use crate::support::mongodb::{admin_client, unique_database};

const TOPIC: &str = "acme.dev.crm.pr_customers.ingestion";
const B1: &str =
    r#"{"customer_id":"C-1","name":"Ada","age":"36","signup_at":"2023-01-15","vip":"true"}"#;

struct Harness {
    db: Database,
    projection: Projection,
    adapter: Adapter,
}

/// One pr-update: (key, value).
type Event = (Value, Value);

impl Harness {
    async fn new(adapter: Adapter, writes: WritesConfig) -> Self {
        let config: ProjectionConfig = serde_json::from_value(json!({
            "name": "pr_customers",
            "topics": [TOPIC],
            "fields": [
                { "name": "customer_id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String", "nullable": true },
                { "name": "age", "type": "Number", "cast": "castToInteger", "nullable": true },
                { "name": "signup_at", "type": "Date", "cast": "castToDate", "nullable": true },
                { "name": "vip", "type": "Boolean", "cast": "castStringToBoolean", "nullable": true },
            ],
        }))
        .unwrap();
        let projection = Projection::new(&config, &writes).unwrap();
        let db = admin_client().await.database(&unique_database("pr-update"));
        ensure_primary_key_index(&db, &projection).await.unwrap();
        Harness { db, projection, adapter }
    }

    /// Writes one record and returns the pr-update events of its applied writes, after
    /// checking each `after` image against what MongoDB stored.
    async fn write(&self, offset: i64, key: &str, value: Option<&str>) -> Vec<Event> {
        let record = KafkaRecord { key: Some(key.as_bytes()), value: value.map(str::as_bytes) };
        let Adapted::Change(change) =
            self.adapter.adapt(record, &self.projection.adapter_key()).unwrap()
        else {
            panic!("skipped")
        };
        let source = Source {
            topic: TOPIC.into(),
            partition: 0,
            offset,
            timestamp_ms: 1_700_000_000_000,
            key: parse_kafka_key(record.key),
        };
        let mapped = self.projection.map(&change, &source, DateTime::now()).unwrap();
        let (_, images) = writer::execute_with_images(
            &self.db,
            &self.projection,
            &mapped.statements,
            &rtu_operator::config::WriteConcern::default().command_document(),
        )
        .await
        .unwrap();
        let keys = vec!["customer_id".to_string()];
        let mut events = Vec::new();
        for images in images.into_iter().flatten() {
            let id = images
                .after
                .as_deref()
                .or(images.before.as_deref())
                .and_then(|d| d.get_str("customer_id").ok())
                .unwrap()
                .to_string();
            let stored = self
                .db
                .collection::<Document>("pr_customers")
                .find_one(doc! { "customer_id": &id })
                .await
                .unwrap();
            assert_eq!(images.after.as_deref(), stored.as_ref(), "replayed after = stored");
            let op = match images.change {
                AppliedOp::Insert => ChangeOp::Insert,
                AppliedOp::Update => ChangeOp::Update,
                AppliedOp::Delete => ChangeOp::Delete,
            };
            let change = AppliedWrite {
                projection: "pr_customers",
                source: "crm",
                primary_keys: &keys,
                op,
                written_at: DateTime::now(),
                before: images.before.as_deref(),
                after: images.after.as_deref(),
                kafka: &source,
            };
            let key = serde_json::from_slice(&pr_update::key(&change).unwrap()).unwrap();
            let value = serde_json::from_slice(&pr_update::value_v1(&change).unwrap()).unwrap();
            events.push((key, value));
        }
        events
    }
}

fn key(id: &str) -> String {
    format!(r#"{{"customer_id":"{id}"}}"#)
}

fn op(events: &[Event]) -> Vec<String> {
    events.iter().map(|(_, v)| v["operationType"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn pr_update_vectors_db2() {
    let h = Harness::new(Adapter::Basic(Default::default()), WritesConfig::default()).await;
    // #1: INSERT, before null, after the stored document without _id.
    let e = h.write(100, &key("C-1"), Some(B1)).await;
    assert_eq!(op(&e), ["INSERT"]);
    let (k, v) = &e[0];
    assert_eq!(k, &json!({ "customer_id": "C-1" }));
    assert_eq!(v["before"], Value::Null);
    assert_eq!((v["after"]["age"].clone(), v["after"]["vip"].clone()), (json!(36), json!(true)));
    assert_eq!(v["after"]["signup_at"], "2023-01-15T00:00:00.000Z");
    assert!(v["after"].get("_id").is_none() && v["documentId"].as_str().unwrap().len() == 24);
    assert_eq!(v["__internal__kafkaInfo"]["offset"], json!(100));
    let first_after = v["after"].clone();
    // #2: UPDATE with before = what #1 stored.
    let b2 = r#"{"customer_id":"C-1","name":"Ada L.","age":37,"vip":"false"}"#;
    let e = h.write(101, &key("C-1"), Some(b2)).await;
    assert_eq!(op(&e), ["UPDATE"]);
    assert_eq!(e[0].1["before"], first_after);
    assert_eq!(e[0].1["after"]["name"], "Ada L.");
    // #3: stale (older offset once 105 is stored): no event.
    h.write(105, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"At 105"}"#)).await;
    assert_eq!(h.write(103, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"Old"}"#)).await, []);
    // #4: a replay of the stored counter re-applies: UPDATE.
    let e = h.write(105, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"Same"}"#)).await;
    assert_eq!(op(&e), ["UPDATE"]);
    // #5: soft delete: DELETE, before = stored, no after key.
    let e = h.write(106, &key("C-1"), None).await;
    assert_eq!(op(&e), ["DELETE"]);
    assert_eq!(e[0].1["before"]["name"], "Same");
    assert!(e[0].1.get("after").is_none(), "{}", e[0].1);
    // #7: delete of a missing document (soft): the marker is written, DELETE with before null.
    let e = h.write(107, &key("C-2"), None).await;
    assert_eq!(op(&e), ["DELETE"]);
    assert_eq!(
        (e[0].0.clone(), e[0].1["before"].clone()),
        (json!({ "customer_id": "C-2" }), Value::Null)
    );
    // #10: older insert over DELETED: stale, nothing; #9: newer one resurrects: INSERT.
    assert_eq!(h.write(104, &key("C-1"), Some(B1)).await, []);
    let e = h.write(120, &key("C-1"), Some(B1)).await;
    assert_eq!(op(&e), ["INSERT"]);
    assert_eq!(e[0].1["before"]["__STATE__"], "DELETED");
    h.db.drop().await.unwrap();
}

#[tokio::test]
async fn pr_update_vectors_hard_delete_and_pk_change() {
    let writes =
        WritesConfig { delete_mechanism: Some(DeleteMechanism::Hard), ..WritesConfig::default() };
    let h = Harness::new(Adapter::Debezium(Default::default()), writes).await;
    let dbz = |op: &str, before: Option<&str>, after: Option<&str>| {
        json!({
            "op": op,
            "before": before.map(|id| json!({ "customer_id": id, "name": "x" })),
            "after": after.map(|id| json!({ "customer_id": id, "name": "y" })),
        })
        .to_string()
    };
    // #26 INSERT, then #30: `u` with before C-1 and after C-9: DELETE C-1 then INSERT C-9.
    assert_eq!(
        op(&h.write(300, &key("C-1"), Some(&dbz("c", None, Some("C-1")))).await),
        ["INSERT"]
    );
    let e = h.write(301, &key("C-9"), Some(&dbz("u", Some("C-1"), Some("C-9")))).await;
    assert_eq!(op(&e), ["DELETE", "INSERT"]);
    assert_eq!(
        (e[0].0.clone(), e[1].0.clone()),
        (json!({ "customer_id": "C-1" }), json!({ "customer_id": "C-9" }))
    );
    // #6: hard delete of a stored document: DELETE; #8: of a missing one: nothing.
    let e = h.write(302, &key("C-9"), Some(&dbz("d", Some("C-9"), None))).await;
    assert_eq!(op(&e), ["DELETE"]);
    assert_eq!(e[0].1["before"]["customer_id"], "C-9");
    assert_eq!(h.write(303, &key("C-5"), Some(&dbz("d", Some("C-5"), None))).await, []);
    h.db.drop().await.unwrap();
}
