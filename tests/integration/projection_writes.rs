//! Projection writes on the real mongod (docs/writes.md, docs/vectors.md): record bytes -> adapter -> guarded
//! statements -> raw `update`/`delete` commands, then the stored documents are read back. The
//! stale guard is decided by the server inside each statement's filter.

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Collection, Database};
use serde_json::json;

use rtu_operator::config::{DeleteMechanism, ProjectionConfig, Validation, WritesConfig};
use rtu_operator::engine::adapter::{Adapted, Adapter, KafkaRecord};
use rtu_operator::engine::code::ErrorCode;
use rtu_operator::engine::projection::{Mapped, Projection, Source, Statement, parse_kafka_key};
use rtu_operator::engine::writer::{WriteOutcome, ensure_primary_key_index, execute};

use crate::support::mongodb::{admin_client, unique_database};

const TOPIC: &str = "acme.dev.crm.pr_customers.ingestion";
const T0: i64 = 1_700_000_000_000;
const B1: &str = r#"{"customer_id":"C-1","name":"Ada","age":"36","signup_at":"2023-01-15","vip":"true","shoe_size":44}"#;

/// The docs/formats.md fixture projection.
fn fixture(writes: WritesConfig) -> Projection {
    fixture_with(writes, false)
}

/// The fixture projection; `name_required`: `name` is required too.
fn fixture_with(writes: WritesConfig, name_required: bool) -> Projection {
    let config: ProjectionConfig = serde_json::from_value(json!({
        "name": "pr_customers",
        "topics": [TOPIC],
        "fields": [
            { "name": "customer_id", "type": "String", "cast": "castToString", "required": true, "primaryKey": true },
            { "name": "name", "type": "String", "cast": "castToString", "nullable": true, "required": name_required },
            { "name": "age", "type": "Number", "cast": "castToInteger", "nullable": true },
            { "name": "signup_at", "type": "Date", "cast": "castToDate", "nullable": true },
            { "name": "vip", "type": "Boolean", "cast": "castStringToBoolean", "nullable": true },
        ],
    }))
    .unwrap();
    Projection::new(&config, &writes).unwrap()
}

struct Harness {
    db: Database,
    projection: Projection,
    adapter: Adapter,
    /// The engine's default write concern, which every write carries.
    concern: Document,
}

impl Harness {
    async fn new(adapter: Adapter, writes: WritesConfig) -> Self {
        Self::with(adapter, fixture(writes)).await
    }

    async fn with(adapter: Adapter, projection: Projection) -> Self {
        let db = admin_client().await.database(&unique_database("writes"));
        ensure_primary_key_index(&db, &projection).await.unwrap();
        let concern = rtu_operator::config::WriteConcern::default().command_document();
        Harness { db, projection, adapter, concern }
    }

    fn collection(&self) -> Collection<Document> {
        self.db.collection(&self.projection.collection)
    }

    /// Adapts, maps and writes one record at `partition`/`offset`, timestamp `T0 + offset s`.
    async fn write(
        &self,
        partition: i32,
        offset: i64,
        key: Option<&str>,
        value: Option<&str>,
    ) -> (Mapped, Vec<WriteOutcome>) {
        let mapped = self.map(partition, offset, key, value);
        let outcomes =
            execute(&self.db, &self.projection, &mapped.statements, &self.concern).await.unwrap();
        (mapped, outcomes)
    }

    /// Writes the key-less records `(offset, value)` of partition 0 as one batch (one
    /// `execute`), as the engine writes a batch's statements of one write group.
    async fn batch(&self, records: &[(i64, &str)]) -> Vec<WriteOutcome> {
        let statements: Vec<Statement> = records
            .iter()
            .flat_map(|(offset, value)| self.map(0, *offset, None, Some(value)).statements)
            .collect();
        execute(&self.db, &self.projection, &statements, &self.concern).await.unwrap()
    }

    /// Adapts and maps one record at `partition`/`offset`, timestamp `T0 + offset s`.
    fn map(&self, partition: i32, offset: i64, key: Option<&str>, value: Option<&str>) -> Mapped {
        let record = KafkaRecord { key: key.map(str::as_bytes), value: value.map(str::as_bytes) };
        let change = match self.adapter.adapt(record, &self.projection.adapter_key()).unwrap() {
            Adapted::Change(c) => c,
            other => panic!("expected a change, got {other:?}"),
        };
        let source = Source {
            topic: TOPIC.to_string(),
            partition,
            offset,
            timestamp_ms: T0 + offset * 1000,
            key: parse_kafka_key(record.key),
        };
        self.projection.map(&change, &source, DateTime::now()).unwrap()
    }

    async fn db2(&self, offset: i64, key: &str, value: Option<&str>) -> Vec<WriteOutcome> {
        self.write(0, offset, Some(key), value).await.1
    }

    async fn get(&self, id: &str) -> Option<Document> {
        self.collection().find_one(doc! { "customer_id": id }).await.unwrap()
    }

    async fn drop(self) {
        self.db.drop().await.unwrap();
    }
}

fn key(id: &str) -> String {
    format!(r#"{{"customer_id":"{id}"}}"#)
}

fn counter(d: &Document) -> (i64, &str) {
    (d.get_i64("__internal__counter").unwrap(), d.get_str("__internal__counterType").unwrap())
}

#[tokio::test]
async fn db2_insert_update_stale_replay_and_soft_delete() {
    let h = Harness::new(Adapter::Basic(Default::default()), WritesConfig::default()).await;

    // #1: B1 at offset 100.
    let (mapped, outcomes) = h.write(0, 100, Some(&key("C-1")), Some(B1)).await;
    assert_eq!(outcomes, [WriteOutcome::Inserted]);
    assert_eq!(mapped.unknown_fields, ["shoe_size"]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!(d.get_str("name").unwrap(), "Ada");
    assert_eq!(d.get_i64("age").unwrap(), 36);
    assert_eq!(d.get_datetime("signup_at").unwrap().timestamp_millis(), 1_673_740_800_000);
    assert!(d.get_bool("vip").unwrap());
    assert!(!d.contains_key("shoe_size"));
    assert_eq!(d.get_str("__STATE__").unwrap(), "PUBLIC");
    assert_eq!(counter(&d), (100, "offset"));
    assert_eq!(d.get_datetime("timestamp").unwrap().timestamp_millis(), T0 + 100_000);
    assert_eq!(d.get_datetime("createdAt").unwrap(), d.get_datetime("updatedAt").unwrap());
    assert!(d.get_object_id("_id").is_ok());
    let info = d.get_document("__internal__kafkaInfo").unwrap();
    assert_eq!(info.get_str("topic").unwrap(), TOPIC);
    assert_eq!((info.get_i32("partition").unwrap(), info.get_str("offset").unwrap()), (0, "100"));
    assert_eq!(info.get_document("key").unwrap(), &doc! { "customer_id": "C-1" });
    let (created, id) = (*d.get_datetime("createdAt").unwrap(), d.get_object_id("_id").unwrap());

    // #2: B2 + shoe_size at 101: merged, createdAt and _id kept.
    let b2 = r#"{"customer_id":"C-1","name":"Ada L.","age":37,"signup_at":"2023-01-15","vip":"false","shoe_size":44}"#;
    assert_eq!(h.db2(101, &key("C-1"), Some(b2)).await, [WriteOutcome::Updated]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!(
        (d.get_str("name").unwrap(), d.get_i64("age").unwrap(), d.get_bool("vip").unwrap()),
        ("Ada L.", 37, false)
    );
    assert_eq!(
        (*d.get_datetime("createdAt").unwrap(), d.get_object_id("_id").unwrap()),
        (created, id)
    );
    assert_eq!(counter(&d), (101, "offset"));

    // Jump to 105, then #3: offset 103 is stale, nothing changes.
    assert_eq!(
        h.db2(105, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"At 105"}"#)).await,
        [WriteOutcome::Updated]
    );
    assert_eq!(
        h.db2(103, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"Old"}"#)).await,
        [WriteOutcome::Stale]
    );
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), counter(&d)), ("At 105", (105, "offset")));

    // #4: the same counter re-applies (a replay).
    assert_eq!(
        h.db2(105, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"Same"}"#)).await,
        [WriteOutcome::Updated]
    );
    assert_eq!(h.get("C-1").await.unwrap().get_str("name").unwrap(), "Same");

    // #5: soft delete at 106 keeps the data.
    assert_eq!(h.db2(106, &key("C-1"), None).await, [WriteOutcome::Updated]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("__STATE__").unwrap(), d.get_str("name").unwrap()), ("DELETED", "Same"));
    assert_eq!(counter(&d), (106, "offset"));

    // #7: deleting a missing document leaves a DELETED marker with the key and counter.
    assert_eq!(h.db2(107, &key("C-2"), None).await, [WriteOutcome::Inserted]);
    let marker = h.get("C-2").await.unwrap();
    assert_eq!(
        (marker.get_str("__STATE__").unwrap(), counter(&marker)),
        ("DELETED", (107, "offset"))
    );
    assert!(marker.get_datetime("createdAt").is_ok());

    // #10: an older insert over the DELETED document is stale; #9: a newer one resurrects it.
    assert_eq!(h.db2(104, &key("C-1"), Some(B1)).await, [WriteOutcome::Stale]);
    assert_eq!(h.get("C-1").await.unwrap().get_str("__STATE__").unwrap(), "DELETED");
    assert_eq!(h.db2(120, &key("C-1"), Some(B1)).await, [WriteOutcome::Updated]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("__STATE__").unwrap(), d.get_str("name").unwrap()), ("PUBLIC", "Ada"));
    assert_eq!(
        (*d.get_datetime("createdAt").unwrap(), d.get_object_id("_id").unwrap()),
        (created, id)
    );

    // Another partition's offset is incomparable: applied.
    assert_eq!(
        h.write(1, 3, Some(&key("C-1")), Some(r#"{"customer_id":"C-1","name":"P1"}"#)).await.1,
        [WriteOutcome::Updated]
    );
    assert_eq!(h.get("C-1").await.unwrap().get_str("name").unwrap(), "P1");
    assert_eq!(h.collection().count_documents(doc! {}).await.unwrap(), 2);
    h.drop().await;
}

#[tokio::test]
async fn hard_delete_removes_and_missing_delete_does_nothing() {
    let writes =
        WritesConfig { delete_mechanism: Some(DeleteMechanism::Hard), ..WritesConfig::default() };
    let h = Harness::new(Adapter::Basic(Default::default()), writes).await;
    assert_eq!(h.db2(100, &key("C-1"), Some(B1)).await, [WriteOutcome::Inserted]);
    // #6 and #8.
    assert_eq!(
        h.db2(99, &key("C-1"), None).await,
        [WriteOutcome::Deleted { deleted: false }],
        "stale delete"
    );
    assert!(h.get("C-1").await.is_some());
    assert_eq!(h.db2(106, &key("C-1"), None).await, [WriteOutcome::Deleted { deleted: true }]);
    assert!(h.get("C-1").await.is_none());
    assert_eq!(h.db2(107, &key("C-2"), None).await, [WriteOutcome::Deleted { deleted: false }]);
    assert_eq!(h.collection().count_documents(doc! {}).await.unwrap(), 0);
    h.drop().await;
}

#[tokio::test]
async fn golden_gate_positions_partial_update_and_primary_key_change() {
    let h = Harness::new(Adapter::GoldenGate { use_pos_as_counter: true }, WritesConfig::default())
        .await;
    let hr = &h;
    let gg = |offset, value: &'static str| async move {
        hr.write(0, offset, Some("C-1"), Some(value)).await.1
    };
    // #19 (G1).
    let g1 = r#"{"op_type":"I","pos":"00000000020000001000","after":{"customer_id":"C-1","name":"Ada","age":36,"signup_at":"2023-01-15","vip":"true"}}"#;
    assert_eq!(gg(200, g1).await, [WriteOutcome::Inserted]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!(counter(&d), (20_000_001_000, "position"));
    assert_eq!(d.get_document("__internal__kafkaInfo").unwrap().get_str("key").unwrap(), "C-1");
    // #20 (G2): only name changes.
    let g2 = r#"{"op_type":"U","pos":"00000000020000002000","before":{"customer_id":"C-1","name":"Ada"},"after":{"customer_id":"C-1","name":"Ada L."}}"#;
    assert_eq!(gg(201, g2).await, [WriteOutcome::Updated]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), d.get_i64("age").unwrap()), ("Ada L.", 36));
    // #22: a lower position is stale even at a higher offset.
    let g_old = r#"{"op_type":"U","pos":"00000000020000001500","after":{"customer_id":"C-1","name":"Older"}}"#;
    assert_eq!(gg(250, g_old).await, [WriteOutcome::Stale]);
    // #21 (G3): PK change C-1 -> C-9: soft delete of C-1 first, then C-9 created.
    let g3 = r#"{"op_type":"U","pos":"00000000020000003000","before":{"customer_id":"C-1","name":"Ada L."},"after":{"customer_id":"C-9","name":"Ada L.","age":36,"signup_at":"2023-01-15","vip":"true"}}"#;
    assert_eq!(gg(202, g3).await, [WriteOutcome::Updated, WriteOutcome::Inserted]);
    let (old, new) = (h.get("C-1").await.unwrap(), h.get("C-9").await.unwrap());
    assert_eq!(
        (old.get_str("__STATE__").unwrap(), counter(&old)),
        ("DELETED", (20_000_003_000, "position"))
    );
    assert_eq!(
        (new.get_str("__STATE__").unwrap(), counter(&new)),
        ("PUBLIC", (20_000_003_000, "position"))
    );
    h.drop().await;
}

#[tokio::test]
async fn huge_positions_compare_numerically_as_decimal128() {
    let h = Harness::new(Adapter::GoldenGate { use_pos_as_counter: true }, WritesConfig::default())
        .await;
    let at = |pos: &str| {
        format!(r#"{{"op_type":"U","pos":"{pos}","after":{{"customer_id":"C-1","name":"{pos}"}}}}"#)
    };
    let big = "99999999999999999999"; // > i64::MAX
    let bigger = "100000000000000000000";
    assert_eq!(h.write(0, 1, None, Some(&at(big))).await.1, [WriteOutcome::Inserted]);
    assert!(matches!(
        h.get("C-1").await.unwrap().get("__internal__counter"),
        Some(Bson::Decimal128(_))
    ));
    assert_eq!(
        h.write(0, 2, None, Some(&at("5"))).await.1,
        [WriteOutcome::Stale],
        "int64 below a Decimal128"
    );
    assert_eq!(h.write(0, 3, None, Some(&at(bigger))).await.1, [WriteOutcome::Updated]);
    assert_eq!(h.get("C-1").await.unwrap().get_str("name").unwrap(), bigger);
    h.drop().await;
}

#[tokio::test]
async fn a_secondary_unique_index_violation_is_a_failure_not_stale() {
    let h = Harness::new(Adapter::Basic(Default::default()), WritesConfig::default()).await;
    h.collection()
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1 })
                .options(mongodb::options::IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.db2(1, &key("C-1"), Some(r#"{"customer_id":"C-1","name":"Same"}"#)).await,
        [WriteOutcome::Inserted]
    );
    let outcomes = h.db2(2, &key("C-2"), Some(r#"{"customer_id":"C-2","name":"Same"}"#)).await;
    assert!(
        matches!(&outcomes[..], [WriteOutcome::Failed { code: ErrorCode::UniqueViolation, message }] if message.contains("11000")),
        "{outcomes:?}"
    );
    h.drop().await;
}

#[tokio::test]
async fn custom_mapping_upserts_with_position_and_deletes() {
    let mapping = serde_json::from_value(json!({
        "operation": { "pointer": "/event", "values": {
            "ROW_INSERT": "insert", "ROW_UPSERT": "upsert", "ROW_UPDATE": "update", "ROW_DELETE": "delete" } },
        "after": "/row",
        "key": "after",
        "position": "/seq",
    }))
    .unwrap();
    let h = Harness::new(Adapter::Custom(mapping), WritesConfig::default()).await;
    // docs/vectors.md #33 (C1): upsert with position 88123, only the given field.
    let c1 = r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1","name":"Ada"},"seq":88123}"#;
    assert_eq!(h.write(0, 10, None, Some(c1)).await.1, [WriteOutcome::Inserted]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), counter(&d)), ("Ada", (88123, "position")));
    assert!(!d.contains_key("age"));
    // An older position is stale; C2 deletes (soft) at a newer one.
    let old = r#"{"event":"ROW_UPDATE","row":{"customer_id":"C-1","name":"Old"},"seq":88000}"#;
    assert_eq!(h.write(0, 11, None, Some(old)).await.1, [WriteOutcome::Stale]);
    let c2 = r#"{"event":"ROW_DELETE","row":{"customer_id":"C-1"},"seq":88124}"#;
    assert_eq!(h.write(0, 12, None, Some(c2)).await.1, [WriteOutcome::Updated]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("__STATE__").unwrap(), d.get_str("name").unwrap()), ("DELETED", "Ada"));
    assert_eq!(counter(&d), (88124, "position"));
    h.drop().await;
}

/// A Debezium value: `op` on customer `id`, with `fields` as the rest of the `after` image.
fn dbz(op: &str, id: &str, fields: &str) -> String {
    let after =
        if op == "d" { "null".to_string() } else { format!(r#"{{"customer_id":"{id}"{fields}}}"#) };
    let before = if op == "d" { format!(r#"{{"customer_id":"{id}"}}"#) } else { "null".into() };
    format!(r#"{{"op":"{op}","before":{before},"after":{after}}}"#)
}

fn upsert_off() -> WritesConfig {
    WritesConfig { upsert: false, ..WritesConfig::default() }
}

fn failed_code(outcomes: &[WriteOutcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            WriteOutcome::Failed { code, .. } => code.as_str(),
            _ => "ok",
        })
        .collect()
}

#[tokio::test]
async fn upsert_off_duplicate_insert_and_missing_document() {
    let h = Harness::new(Adapter::Debezium(Default::default()), upsert_off()).await;
    let write = |offset, value: String| {
        let h = &h;
        async move { h.write(0, offset, None, Some(&value)).await.1 }
    };
    assert_eq!(write(10, dbz("c", "C-1", r#","name":"Ada""#)).await, [WriteOutcome::Inserted]);
    // docs/vectors.md #35: the stored document is unchanged.
    let outcomes = write(11, dbz("c", "C-1", r#","name":"Bob""#)).await;
    assert_eq!(failed_code(&outcomes), ["DUPLICATE_INSERT"], "{outcomes:?}");
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), counter(&d)), ("Ada", (10, "offset")));
    // docs/vectors.md #36: nothing is created.
    let outcomes = write(12, dbz("u", "C-5", r#","name":"Eve""#)).await;
    assert_eq!(failed_code(&outcomes), ["MISSING_DOCUMENT"], "{outcomes:?}");
    assert!(h.get("C-5").await.is_none());
    // An update of the live document works.
    assert_eq!(write(13, dbz("u", "C-1", r#","name":"Ada L.""#)).await, [WriteOutcome::Updated]);
    assert_eq!(h.get("C-1").await.unwrap().get_str("name").unwrap(), "Ada L.");
    // In one batch each statement sees the earlier ones: insert, duplicate, update.
    let (c7, c7_again) = (dbz("c", "C-7", ""), dbz("c", "C-7", ""));
    let c7_update = dbz("u", "C-7", r#","name":"Seven""#);
    let outcomes = h.batch(&[(20, &c7), (21, &c7_again), (22, &c7_update)]).await;
    assert_eq!(outcomes[0], WriteOutcome::Inserted);
    assert_eq!(failed_code(&outcomes), ["ok", "DUPLICATE_INSERT", "ok"], "{outcomes:?}");
    assert_eq!(outcomes[2], WriteOutcome::Updated);
    let d = h.get("C-7").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), counter(&d)), ("Seven", (22, "offset")));
    h.drop().await;
}

#[tokio::test]
async fn upsert_off_deletes_hard_and_a_deleted_document_counts_as_missing() {
    // An explicit soft delete is overridden: with upsert off deletes are hard.
    let writes = WritesConfig { delete_mechanism: Some(DeleteMechanism::Soft), ..upsert_off() };
    let h = Harness::new(Adapter::Debezium(Default::default()), writes).await;
    assert_eq!(h.write(0, 1, None, Some(&dbz("c", "C-1", ""))).await.1, [WriteOutcome::Inserted]);
    assert_eq!(
        h.write(0, 2, None, Some(&dbz("d", "C-1", ""))).await.1,
        [WriteOutcome::Deleted { deleted: true }]
    );
    assert!(h.get("C-1").await.is_none());
    // A DELETED document (left by an earlier soft-delete configuration).
    h.collection()
        .insert_one(doc! {
            "customer_id": "C-2", "name": "Old", "__STATE__": "DELETED",
            "__internal__counter": 110_i64, "__internal__counterType": "offset",
            "__internal__kafkaInfo": { "topic": TOPIC, "partition": 0, "offset": "110" },
        })
        .await
        .unwrap();
    let outcomes = h.write(0, 120, None, Some(&dbz("u", "C-2", r#","name":"New""#))).await.1;
    assert_eq!(failed_code(&outcomes), ["MISSING_DOCUMENT"], "{outcomes:?}");
    assert_eq!(h.get("C-2").await.unwrap().get_str("__STATE__").unwrap(), "DELETED");
    // docs/vectors.md #9 with upsert off: an insert resurrects it.
    let outcomes = h.write(0, 121, None, Some(&dbz("c", "C-2", r#","name":"Back""#))).await.1;
    assert_eq!(outcomes, [WriteOutcome::Updated]);
    let d = h.get("C-2").await.unwrap();
    assert_eq!((d.get_str("__STATE__").unwrap(), d.get_str("name").unwrap()), ("PUBLIC", "Back"));
    assert_eq!(counter(&d), (121, "offset"));
    h.drop().await;
}

#[tokio::test]
async fn upsert_off_replayed_insert_reapplies_and_stale_is_not_an_error() {
    let h = Harness::new(Adapter::Debezium(Default::default()), upsert_off()).await;
    let write = |offset, value: String| {
        let h = &h;
        async move { h.write(0, offset, None, Some(&value)).await.1 }
    };
    assert_eq!(write(100, dbz("c", "C-1", r#","name":"Ada""#)).await, [WriteOutcome::Inserted]);
    // A crash between write and commit replays the insert: same offset, re-applied.
    assert_eq!(write(100, dbz("c", "C-1", r#","name":"Ada""#)).await, [WriteOutcome::Updated]);
    assert_eq!(write(105, dbz("u", "C-1", r#","name":"At 105""#)).await, [WriteOutcome::Updated]);
    // Older than the stored counter: stale, whatever the operation.
    assert_eq!(write(103, dbz("c", "C-1", r#","name":"Old""#)).await, [WriteOutcome::Stale]);
    assert_eq!(write(104, dbz("u", "C-1", r#","name":"Old""#)).await, [WriteOutcome::Stale]);
    let d = h.get("C-1").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), counter(&d)), ("At 105", (105, "offset")));
    // The same offset on another partition is no replay.
    let outcomes = h.write(1, 105, None, Some(&dbz("c", "C-1", ""))).await.1;
    assert_eq!(failed_code(&outcomes), ["DUPLICATE_INSERT"], "{outcomes:?}");
    h.drop().await;
}

#[tokio::test]
async fn strict_required_fields_are_checked_when_the_write_creates_the_document() {
    let strict = WritesConfig { validation: Validation::Strict, ..WritesConfig::default() };
    let h = Harness::with(Adapter::Debezium(Default::default()), fixture_with(strict, true)).await;
    let write = |offset, value: String| {
        let h = &h;
        async move { h.write(0, offset, None, Some(&value)).await.1 }
    };
    // `name` is required: creating C-1 without it fails, nothing is written.
    let outcomes = write(1, dbz("c", "C-1", r#","age":"36""#)).await;
    assert!(
        matches!(&outcomes[..], [WriteOutcome::Failed { code: ErrorCode::ValidationFailed, message }] if message.contains("\"name\"")),
        "{outcomes:?}"
    );
    assert!(h.get("C-1").await.is_none());
    // With it, created; then an update without it is fine (the document exists).
    assert_eq!(write(2, dbz("c", "C-2", r#","name":"Bo""#)).await, [WriteOutcome::Inserted]);
    assert_eq!(write(3, dbz("u", "C-2", r#","age":"40""#)).await, [WriteOutcome::Updated]);
    let d = h.get("C-2").await.unwrap();
    assert_eq!((d.get_str("name").unwrap(), d.get_i64("age").unwrap()), ("Bo", 40));
    // Lenient validation creates it without the required field.
    let lenient = Harness::with(
        Adapter::Debezium(Default::default()),
        fixture_with(WritesConfig::default(), true),
    )
    .await;
    let outcomes = lenient.write(0, 1, None, Some(&dbz("c", "C-1", r#","age":"36""#))).await.1;
    assert_eq!(outcomes, [WriteOutcome::Inserted]);
    assert!(!lenient.get("C-1").await.unwrap().contains_key("name"));
    lenient.drop().await;
    // In one batch: the first write creates C-3 with the name, the second updates it.
    let (full, partial) = (dbz("c", "C-3", r#","name":"Cy""#), dbz("u", "C-3", r#","age":1"#));
    assert_eq!(
        h.batch(&[(4, &full), (5, &partial)]).await,
        [WriteOutcome::Inserted, WriteOutcome::Updated]
    );
    h.drop().await;
}
