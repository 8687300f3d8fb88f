//! Real connector output through `rtu engine` on the real Kafka and MongoDB (issue 14): records
//! shaped as IBM IIDR's KCOPs and Debezium's connectors write them (see the adapters' unit
//! tests for where each shape is documented), and the documents they leave. Each test prints
//! the resulting documents (`cargo test connector_output -- --nocapture`).

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

use crate::support::engine::{Options, Setup, metric, produce_nullable, signal_and_wait};
use crate::support::kafka::{create_topic, read_topic};
use crate::support::{eventually, unique_name};

type Records = Vec<(Option<String>, Option<String>)>;

fn rec(key: Option<Value>, value: Option<Value>) -> (Option<String>, Option<String>) {
    (key.map(|k| k.to_string()), value.map(|v| v.to_string()))
}

/// Every document of `collection` by its primary key `pk`, without the fields that change per
/// run (`_id`, `createdAt`, `updatedAt`, `timestamp`, `__internal__kafkaInfo`).
async fn documents(setup: &Setup, collection: &str, pk: &str) -> BTreeMap<String, Document> {
    let mut cursor = setup.db.collection::<Document>(collection).find(doc! {}).await.unwrap();
    let mut out = BTreeMap::new();
    while cursor.advance().await.unwrap() {
        let mut d = cursor.deserialize_current().unwrap();
        for volatile in ["_id", "createdAt", "updatedAt", "timestamp", "__internal__kafkaInfo"] {
            d.remove(volatile);
        }
        let key = match d.get(pk) {
            Some(Bson::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => panic!("document without {pk}: {d}"),
        };
        out.insert(key, d);
    }
    out
}

/// Waits until the group has committed `end` on partition 0 (every record done).
async fn committed(setup: &Setup, end: i64) {
    eventually(&format!("offset {end} committed"), Duration::from_secs(60), || async {
        (setup.offsets(1)[0].0 == Some(end)).then_some(())
    })
    .await;
}

fn print(title: &str, docs: &BTreeMap<String, Document>) {
    println!("{title}:");
    for (key, d) in docs {
        println!("  {key}: {d}");
    }
}

fn date(iso: &str) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::parse_rfc3339_str(iso).unwrap())
}

fn decimal(text: &str) -> Bson {
    Bson::Decimal128(text.parse().unwrap())
}

/// `KcopJsonFormatIntegrated`: nullable columns as Avro-JSON unions in key and value, a delete
/// as a tombstone, an update of the key as the old key's tombstone then the new row.
#[tokio::test]
async fn iidr_kcop_json_unions_deletes_and_key_changes() {
    let options = Options {
        adapter: "{ type: basic }".into(),
        fields: Some(
            r#"
      - { name: ID, type: String, cast: castToString, required: true, primaryKey: true }
      - { name: C2, type: String, cast: castToString, nullable: true }
      - { name: N, type: Number, cast: castToInteger, nullable: true }
      - { name: AMOUNT, type: Number, cast: castToDecimal128, nullable: true }"#
                .into(),
        ),
        ..Options::default()
    };
    let setup = Setup::with("conn-iidr-json", options).await;
    let records: Records = vec![
        rec(
            Some(json!({"ID": "1"})),
            Some(
                json!({"ID": "1", "C2": {"string": "aaaa      "}, "N": {"int": 5}, "AMOUNT": {"string": "10.50"}}),
            ),
        ),
        rec(
            Some(json!({"ID": "2"})),
            Some(json!({"ID": "2", "C2": {"string": "bbb       "}, "N": null, "AMOUNT": null})),
        ),
        // ID 1 becomes 9: the old key's tombstone, then the new row.
        rec(Some(json!({"ID": "1"})), None),
        rec(
            Some(json!({"ID": "9"})),
            Some(
                json!({"ID": "9", "C2": {"string": "aaaa      "}, "N": {"int": 5}, "AMOUNT": {"string": "10.50"}}),
            ),
        ),
        rec(
            Some(json!({"ID": "2"})),
            Some(
                json!({"ID": "2", "C2": {"string": "update    "}, "N": {"long": 12345678901_i64}, "AMOUNT": {"string": "0.01"}}),
            ),
        ),
        // A key written as a union too.
        rec(
            Some(json!({"ID": {"string": "3"}})),
            Some(json!({"ID": "3", "C2": null, "N": {"int": -1}})),
        ),
    ];
    produce_nullable(&setup.topic, &records).await;
    let mut engine = setup.start("run");
    committed(&setup, records.len() as i64).await;
    let docs = documents(&setup, "pr_customers", "ID").await;
    print("iidr KcopJsonFormatIntegrated", &docs);
    let fields = |id: &str| {
        let d = &docs[id];
        (
            d.get_str("__STATE__").unwrap().to_string(),
            d.get("C2").cloned(),
            d.get("N").cloned(),
            d.get("AMOUNT").cloned(),
        )
    };
    assert_eq!(fields("1").0, "DELETED");
    assert_eq!(
        fields("9"),
        (
            "PUBLIC".into(),
            Some(Bson::String("aaaa      ".into())),
            Some(Bson::Int64(5)),
            Some(decimal("10.50"))
        )
    );
    assert_eq!(
        fields("2"),
        (
            "PUBLIC".into(),
            Some(Bson::String("update    ".into())),
            Some(Bson::Int64(12345678901)),
            Some(decimal("0.01"))
        )
    );
    assert_eq!(fields("3"), ("PUBLIC".into(), Some(Bson::Null), Some(Bson::Int64(-1)), None));
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// `KcopMultiRowAvroLiveAuditIntegrated` rows (as JSON): PT inserts, a UB + UP pair of one
/// commit that changes the key, DL deletes, A_CCID as the stale-guard counter. The UB is the
/// last record when the first worker stops: its offset must stay uncommitted, so the restarted
/// worker reads the pair again and deletes the old key.
#[tokio::test]
async fn iidr_audit_records_pair_before_and_after_images_across_a_restart() {
    let options = Options {
        adapter: "{ type: basic, iidr: { auditCounter: ccid } }".into(),
        fields: Some(
            r#"
      - { name: ID, type: String, cast: castToString, required: true, primaryKey: true }
      - { name: C2, type: String, cast: castToString, nullable: true }
      - { name: A_USER, type: String, cast: castToString, nullable: true }"#
                .into(),
        ),
        ..Options::default()
    };
    let setup = Setup::with("conn-iidr-audit", options).await;
    let row = |id: &str, c2: &str, entry: &str, ccid: &str| {
        json!({"ID": id, "C2": {"string": c2}, "A_ENTTYP": entry, "A_CCID": ccid,
               "A_TIMSTAMP": "2018-01-01 22:34:49.000000000000", "A_USER": "DB2INST1", "A_JOBUSER": "="})
    };
    let first: Records = vec![
        rec(Some(json!({"ID": "3"})), Some(row("3", "dddd      ", "PT", "116489715"))),
        rec(Some(json!({"ID": "4"})), Some(row("4", "ccc       ", "PT", "116489716"))),
        // The before image of ID 3 -> 9, under the new key as IIDR sends it.
        rec(Some(json!({"ID": "9"})), Some(row("3", "dddd      ", "UB", "116489854"))),
    ];
    produce_nullable(&setup.topic, &first).await;
    let mut engine = setup.start("first");
    eventually("ID 3 and 4 written", Duration::from_secs(60), || async {
        (documents(&setup, "pr_customers", "ID").await.len() == 2).then_some(())
    })
    .await;
    committed(&setup, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(2), "the waiting UB (offset 2) must not be committed");

    let second: Records = vec![
        rec(Some(json!({"ID": "9"})), Some(row("9", "dddd      ", "UP", "116489854"))),
        rec(Some(json!({"ID": "4"})), Some(row("4", "ccc       ", "UB", "116497617"))),
        rec(Some(json!({"ID": "4"})), Some(row("4", "update    ", "UP", "116497617"))),
        rec(Some(json!({"ID": "5"})), Some(row("5", "e", "PT", "116497700"))),
        rec(Some(json!({"ID": "5"})), Some(row("5", "e", "DL", "116498161"))),
        // An older commit of ID 9 replayed: stale, never written over the newer one.
        rec(Some(json!({"ID": "9"})), Some(row("9", "old       ", "PT", "116489000"))),
    ];
    produce_nullable(&setup.topic, &second).await;
    let mut engine = setup.start("second");
    committed(&setup, 9).await;
    let docs = documents(&setup, "pr_customers", "ID").await;
    print("iidr audit KCOP", &docs);
    let state = |id: &str| docs[id].get_str("__STATE__").unwrap().to_string();
    let c2 = |id: &str| docs[id].get_str("C2").unwrap().to_string();
    assert_eq!(state("3"), "DELETED", "the key change deleted the old key");
    assert_eq!((state("9"), c2("9")), ("PUBLIC".into(), "dddd      ".into()), "not the stale PT");
    assert_eq!(docs["9"].get_i64("__internal__counter"), Ok(116489854), "A_CCID counter");
    assert_eq!(docs["9"].get_str("__internal__counterType"), Ok("position"));
    assert_eq!((state("4"), c2("4")), ("PUBLIC".into(), "update    ".into()));
    assert_eq!(state("5"), "DELETED");
    assert_eq!(docs["4"].get_str("A_USER"), Ok("DB2INST1"), "a mapped audit column is kept");
    for d in docs.values() {
        assert!(!d.contains_key("A_ENTTYP") && !d.contains_key("A_CCID"), "audit columns: {d}");
    }
    let (_, text) = engine.get("/metrics").await;
    assert_eq!(metric(&text, r#"rtu_skipped_total{reason="before_image"}"#), Some(2.0), "{text}");
    let stale = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers",outcome="stale"}}"#,
        setup.topic
    );
    assert_eq!(metric(&text, &stale), Some(1.0), "{text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

fn dbz_fields() -> String {
    r#"
      - { name: customer_id, type: String, cast: castToString, required: true, primaryKey: true }
      - { name: name, type: String, cast: castToString, nullable: true }
      - { name: bio, type: String, cast: castToString, nullable: true }
      - { name: signup_at, type: Date, cast: castDebeziumDate, nullable: true }
      - { name: last_seen, type: Date, cast: castDebeziumMicroTimestamp, nullable: true }
      - { name: opens_at, type: String, cast: castDebeziumMicroTime, nullable: true }
      - { name: balance, type: Number, cast: "castDebeziumDecimal(2)", nullable: true }
      - { name: ratio, type: Number, cast: castDebeziumVariableScaleDecimal, nullable: true }
      - { name: prefs, type: Object, cast: castDebeziumJson, nullable: true }
      - { name: updated, type: Date, cast: castDebeziumZonedTimestamp, nullable: true }"#
        .to_string()
}

/// The after schema of the projection's columns, as Debezium's PostgreSQL connector writes it.
fn after_schema() -> Value {
    json!({"type": "struct", "optional": true, "name": "dbserver1.public.customers.Value", "field": "after", "fields": [
        {"type": "string", "optional": false, "field": "customer_id"},
        {"type": "string", "optional": true, "field": "name"},
        {"type": "string", "optional": true, "field": "bio"},
        {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1, "field": "signup_at"},
        {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "last_seen"},
        {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTime", "version": 1, "field": "opens_at"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
         "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "balance"},
        {"type": "struct", "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1, "field": "ratio",
         "fields": [{"type": "int32", "optional": false, "field": "scale"}, {"type": "bytes", "optional": false, "field": "value"}]},
        {"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": "prefs"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "updated"},
    ]})
}

fn with_schema(payload: Value) -> Value {
    let before = {
        let mut s = after_schema();
        s["field"] = json!("before");
        s
    };
    json!({"schema": {"type": "struct", "name": "dbserver1.public.customers.Envelope", "fields": [
        before, after_schema(), {"type": "string", "optional": false, "field": "op"}]}, "payload": payload})
}

/// Debezium with `schemas.enable=true` (logical types decoded from the record's schema) and
/// without (the same columns through the `castDebezium*` casts) give the same documents; an
/// unchanged TOAST column (`__debezium_unavailable_value`) keeps its stored value.
#[tokio::test]
async fn debezium_logical_types_with_and_without_schemas_and_placeholders() {
    let options = Options { fields: Some(dbz_fields()), ..Options::default() };
    let setup = Setup::with("conn-dbz-types", options).await;
    // 2023-01-15 = day 19372; 2023-11-14T22:13:20.123456 in µs; 10:20:30.5 in µs;
    // 1234.56 = 123456 (0x01E240, "AeJA") at scale 2; 0.125 = 125 ("fQ==") at scale 3.
    let row = |id: &str| {
        json!({"customer_id": id, "name": "Ada", "bio": "long text", "signup_at": 19372,
               "last_seen": 1_700_000_000_123_456_i64, "opens_at": 37_230_500_000_i64, "balance": "AeJA",
               "ratio": {"scale": 3, "value": "fQ=="}, "prefs": "{\"lang\":\"en\",\"tags\":[1,2]}",
               "updated": "2023-11-15T00:13:20.123456+02:00"})
    };
    let key = |id: &str| Some(json!({"customer_id": id}));
    let records: Records = vec![
        rec(key("C-1"), Some(with_schema(json!({"before": null, "after": row("C-1"), "op": "c"})))),
        rec(
            key("C-2"),
            Some(
                json!({"before": null, "after": row("C-2"), "op": "c", "source": {"connector": "postgresql"}}),
            ),
        ),
        // Updates where the TOASTed bio did not change: the connectors send the placeholder.
        rec(
            key("C-1"),
            Some(with_schema(json!({"before": null, "op": "u",
            "after": {"customer_id": "C-1", "name": "Ada L.", "bio": "__debezium_unavailable_value"}}))),
        ),
        rec(
            key("C-2"),
            Some(json!({"before": null, "op": "u",
            "after": {"customer_id": "C-2", "name": "Ada L.", "bio": "__debezium_unavailable_value"}})),
        ),
    ];
    produce_nullable(&setup.topic, &records).await;
    let mut engine = setup.start("run");
    committed(&setup, records.len() as i64).await;
    let docs = documents(&setup, "pr_customers", "customer_id").await;
    print("debezium logical types", &docs);
    let expected = doc! {
        "name": "Ada L.", "bio": "long text",
        "signup_at": date("2023-01-15T00:00:00Z"), "last_seen": date("2023-11-14T22:13:20.123Z"),
        "opens_at": "10:20:30.500000", "balance": decimal("1234.56"), "ratio": decimal("0.125"),
        "prefs": {"lang": "en", "tags": [1_i64, 2_i64]}, "updated": date("2023-11-14T22:13:20.123Z"),
    };
    for id in ["C-1", "C-2"] {
        for (field, value) in &expected {
            assert_eq!(docs[id].get(field), Some(value), "{id}.{field} in {}", docs[id]);
        }
    }
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// `ExtractNewRecordState` rows (`add.fields=op,source.ts_ms`, `delete.handling.mode=rewrite`
/// and the default tombstone mode) with the source timestamp as the stale-guard counter.
#[tokio::test]
async fn debezium_unwrapped_rows_with_the_source_timestamp_as_counter() {
    let options = Options {
        adapter: "{ type: debezium, debezium: { format: unwrapped, counter: sourceTimestamp } }"
            .into(),
        ..Options::default()
    };
    let setup = Setup::with("conn-dbz-flat", options).await;
    let key = |id: &str| Some(json!({"customer_id": id}));
    let row = |id: &str, name: &str, op: &str, ts: i64| json!({"customer_id": id, "name": name, "age": 30, "__op": op, "__source_ts_ms": ts, "__deleted": "false"});
    let records: Records = vec![
        rec(key("C-1"), Some(row("C-1", "first", "c", 1_000))),
        rec(key("C-2"), Some(row("C-2", "two", "r", 1_100))),
        rec(key("C-1"), Some(row("C-1", "newest", "u", 3_000))),
        // Older in the source than what is stored: stale.
        rec(key("C-1"), Some(row("C-1", "older", "u", 2_000))),
        // rewrite mode: the before row with __deleted "true".
        rec(
            key("C-2"),
            Some(
                json!({"customer_id": "C-2", "name": "two", "age": 30, "__op": "d", "__source_ts_ms": 4_000, "__deleted": "true"}),
            ),
        ),
        rec(key("C-3"), Some(row("C-3", "three", "c", 5_000))),
    ];
    produce_nullable(&setup.topic, &records).await;
    let mut engine = setup.start("run");
    committed(&setup, records.len() as i64).await;
    // The default mode's delete: a tombstone (no counter: the offset decides).
    let tomb: Records = vec![rec(key("C-3"), None)];
    produce_nullable(&setup.topic, &tomb).await;
    committed(&setup, records.len() as i64 + 1).await;
    let docs = documents(&setup, "pr_customers", "customer_id").await;
    print("debezium unwrapped", &docs);
    let view = |id: &str| {
        (
            docs[id].get_str("name").unwrap().to_string(),
            docs[id].get_str("__STATE__").unwrap().to_string(),
        )
    };
    assert_eq!(view("C-1"), ("newest".into(), "PUBLIC".into()));
    assert_eq!(docs["C-1"].get_i64("__internal__counter"), Ok(3_000));
    assert_eq!(view("C-2"), ("two".into(), "DELETED".into()));
    assert_eq!(view("C-3"), ("three".into(), "DELETED".into()));
    for d in docs.values() {
        assert!(
            !d.keys()
                .any(|k| k.starts_with("__op") || k.starts_with("__source") || k == "__deleted"),
            "{d}"
        );
    }
    let (_, text) = engine.get("/metrics").await;
    let stale = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers",outcome="stale"}}"#,
        setup.topic
    );
    assert_eq!(metric(&text, &stale), Some(1.0), "{text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// Transaction markers, a schema change, a heartbeat and a truncate on a projection's topic are
/// skipped with their reason (the truncate with a warning naming topic, partition and offset),
/// never dead-lettered; a record whose key and row image disagree is (KEY_MISMATCH).
#[tokio::test]
async fn control_records_are_skipped_and_a_key_mismatch_is_dead_lettered() {
    let dlq = unique_name("conn-dlq");
    create_topic(&dlq, 1).await;
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {dlq} }}"),
        ..Options::default()
    };
    let setup = Setup::with("conn-control", options).await;
    let key = |id: &str| Some(json!({"customer_id": id}));
    let create = |id: &str| {
        Some(json!({"before": null, "after": {"customer_id": id, "name": id, "age": 1}, "op": "c"}))
    };
    let records: Records = vec![
        rec(
            Some(json!({"id": "571:53195829"})),
            Some(
                json!({"status": "BEGIN", "id": "571:53195829", "ts_ms": 1486500577125_i64, "event_count": null, "data_collections": null}),
            ),
        ),
        rec(key("C-1"), create("C-1")),
        rec(
            Some(json!({"id": "571:53195829"})),
            Some(
                json!({"status": "END", "id": "571:53195829", "ts_ms": 1486500577691_i64, "event_count": 1, "data_collections": [{"data_collection": "public.customers", "event_count": 1}]}),
            ),
        ),
        rec(
            Some(json!({"databaseName": "inventory"})),
            Some(
                json!({"source": {"connector": "mysql", "db": "inventory"}, "databaseName": "inventory", "schemaName": null, "ddl": "ALTER TABLE customers ADD middle_name varchar(255)", "tableChanges": []}),
            ),
        ),
        rec(Some(json!({"serverName": "dbserver1"})), Some(json!({"ts_ms": 1588252618953_i64}))),
        rec(
            None,
            Some(
                json!({"source": {"connector": "postgresql", "table": "customers", "lsn": 46523128}, "op": "t", "ts_ms": 1559033904961_i64}),
            ),
        ),
        rec(key("C-2"), create("C-2")),
        // The key says C-7, the row C-8: written under neither.
        rec(key("C-7"), create("C-8")),
    ];
    produce_nullable(&setup.topic, &records).await;
    let mut engine = setup.start("run");
    committed(&setup, records.len() as i64).await;
    let docs = documents(&setup, "pr_customers", "customer_id").await;
    print("debezium control records", &docs);
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["C-1", "C-2"]);
    let dead = read_topic(&dlq, 1, Duration::from_secs(1));
    assert_eq!(dead.len(), 1, "only the mismatch is dead-lettered: {dead:?}");
    assert_eq!(
        (dead[0].header("rtu-dlq-reason"), dead[0].header("rtu-dlq-source-offset")),
        ("KEY_MISMATCH", "7")
    );
    let (_, text) = engine.get("/metrics").await;
    for (reason, n) in
        [("transaction_marker", 2.0), ("schema_change", 1.0), ("heartbeat", 1.0), ("truncate", 1.0)]
    {
        assert_eq!(
            metric(&text, &format!(r#"rtu_skipped_total{{reason="{reason}"}}"#)),
            Some(n),
            "{reason}: {text}"
        );
    }
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let log = engine.log_text();
    let warning = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["fields"]["reason"] == "truncate")
        .unwrap_or_else(|| panic!("no truncate warning in {log}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(
        (
            warning["fields"]["topic"].as_str(),
            warning["fields"]["partition"].as_i64(),
            warning["fields"]["offset"].as_i64()
        ),
        (Some(setup.topic.as_str()), Some(0), Some(5))
    );
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// A flat record described by the declarative custom adapter: `after: ""` is the whole value.
#[tokio::test]
async fn a_custom_mapping_reads_a_flat_record_with_the_empty_pointer() {
    let options = Options {
        adapter: r#"{ type: custom, custom: { operation: { pointer: /op, values: { I: insert, U: update, D: delete } }, after: "", before: "", key: after } }"#.into(),
        ..Options::default()
    };
    let setup = Setup::with("conn-custom-flat", options).await;
    let records: Records = vec![
        rec(None, Some(json!({"customer_id": "C-1", "name": "Ada", "age": 36, "op": "I"}))),
        rec(None, Some(json!({"customer_id": "C-1", "name": "Ada L.", "op": "U"}))),
        rec(None, Some(json!({"customer_id": "C-2", "name": "Bo", "op": "I"}))),
        rec(None, Some(json!({"customer_id": "C-2", "op": "D"}))),
    ];
    produce_nullable(&setup.topic, &records).await;
    let mut engine = setup.start("run");
    committed(&setup, records.len() as i64).await;
    let docs = documents(&setup, "pr_customers", "customer_id").await;
    print("custom flat", &docs);
    assert_eq!((docs["C-1"].get_str("name"), docs["C-1"].get_i64("age")), (Ok("Ada L."), Ok(36)));
    assert_eq!(docs["C-2"].get_str("__STATE__"), Ok("DELETED"));
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}
