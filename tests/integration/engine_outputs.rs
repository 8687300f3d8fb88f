//! The outputs of docs/outputs.md from the engine process on real Kafka and MongoDB: the worked
//! example of docs/outputs.md#strategies (customers / orders / order items) with the automatic strategy, pr-update
//! events read back from their topics (key, value, header, order), projection-change
//! documents upserted as docs/outputs.md#projection-changes says, sv-trigger messages; and a worker killed (SIGKILL) after
//! its writes but before its outputs were acknowledged: after a restart they are all there.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::support::engine::{Options, Setup, metric, offsets_on, produce, signal_and_wait};
use crate::support::kafka::{self, create_topic};
use crate::support::{eventually, unique_name};

/// A Debezium event: key = the primary key, value = `op` with `after` (or `before` for d).
fn dbz(key: Value, op: &str, row: Value) -> (String, String) {
    let value = match op {
        "d" => json!({ "before": row, "after": null, "op": "d" }),
        _ => json!({ "before": null, "after": row, "op": op }),
    };
    (key.to_string(), value.to_string())
}

/// One event read back from an output topic: JSON key and value, `messageSchema` header.
#[derive(Debug)]
struct Record {
    key: Value,
    value: Value,
    schema: String,
}

/// Every event of `topic`: at least `n`, then whatever comes within a second.
async fn read_topic(topic: &str, n: usize) -> Vec<Record> {
    let records = kafka::read_topic(topic, n, Duration::from_secs(1));
    assert!(records.len() >= n, "{topic}: {} of {n} records: {records:?}", records.len());
    let json = |bytes: &Option<Vec<u8>>| serde_json::from_slice(bytes.as_deref().unwrap()).unwrap();
    records
        .iter()
        .map(|r| Record {
            key: json(&r.key),
            value: json(&r.value),
            schema: r.header("messageSchema").to_string(),
        })
        .collect()
}

/// The topics and config of the worked example.
struct Example {
    setup: Setup,
    customers: String,
    orders: String,
    items: String,
    pu_items: String,
    pu_orders: String,
    sv_prefix: String,
}

async fn example(name: &str, create_pu_items: bool) -> Example {
    let setup = Setup::with(name, Options::default()).await;
    let customers = setup.topic.clone();
    let orders = unique_name(&format!("{name}-orders"));
    let items = unique_name(&format!("{name}-items"));
    let pu_items = unique_name(&format!("{name}-items-pr-update"));
    let pu_orders = unique_name(&format!("{name}-orders-pr-update"));
    let sv_prefix = unique_name(name);
    for topic in [&orders, &items, &pu_orders] {
        create_topic(topic, 1).await;
    }
    if create_pu_items {
        create_topic(&pu_items, 1).await;
    }
    for view in ["sv_customers", "sv_orders"] {
        create_topic(&format!("{sv_prefix}.{view}.sv-trigger"), 1).await;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/strategy");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let head = text.split("projections:").next().unwrap();
    let tail = text.split_once("errorPolicy:").unwrap().1;
    let yaml = format!(
        r#"{head}projections:
  - name: pr_customers
    topics: [{customers}]
    fields:
      - {{ name: customer_id, type: String, primaryKey: true }}
      - {{ name: name, type: String, nullable: true }}
  - name: pr_orders
    topics: [{orders}]
    fields:
      - {{ name: order_id, type: String, primaryKey: true }}
      - {{ name: customer_id, type: String, nullable: true }}
      - {{ name: status, type: String, nullable: true }}
  - name: pr_order_items
    topics: [{items}]
    fields:
      - {{ name: order_id, type: String, primaryKey: true }}
      - {{ name: line_no, type: Number, cast: castToInteger, primaryKey: true }}
      - {{ name: qty, type: Number, cast: castToInteger, nullable: true }}
outputs:
  projectionUpdates:
    topics: {{ pr_order_items: {pu_items}, pr_orders: {pu_orders} }}
  projectionChanges: {{ collection: fd-pc-crm }}
  singleViewTrigger: {{ topic: "{sv_prefix}.{{singleView}}.sv-trigger" }}
  strategies:
    automatic:
      erSchema: {fixtures}/erSchema.json
      projectionChangesSchema: {fixtures}/projectionChangesSchema.json
errorPolicy:{tail}"#
    );
    std::fs::write(&setup.config, yaml).unwrap();
    Example { setup, customers, orders, items, pu_items, pu_orders, sv_prefix }
}

/// The Debezium create of customer `id` (`name of <id>`, age 1).
fn customer_created(id: &str) -> (String, String) {
    let row = json!({ "customer_id": id, "name": format!("name of {id}"), "age": 1 });
    dbz(json!({ "customer_id": id }), "c", row)
}

fn item(order: &str, line: i64, qty: i64, op: &str) -> (String, String) {
    let key = json!({ "order_id": order, "line_no": line });
    dbz(key, op, json!({ "order_id": order, "line_no": line, "qty": qty }))
}

fn order(id: &str, customer: &str, op: &str) -> (String, String) {
    let row = json!({ "order_id": id, "customer_id": customer, "status": "open" });
    dbz(json!({ "order_id": id }), op, row)
}

/// Projection changes: (type, identifier JSON) -> its `changes` elements.
async fn projection_changes(setup: &Setup) -> Vec<(String, String, Vec<Document>)> {
    let mut cursor = setup.db.collection::<Document>("fd-pc-crm").find(doc! {}).await.unwrap();
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        let changes = d.get_array("changes").unwrap();
        out.push((
            d.get_str("type").unwrap().to_string(),
            d.get_document("identifier").unwrap().to_string(),
            changes.iter().map(|c| c.as_document().unwrap().clone()).collect(),
        ));
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

async fn committed(setup: &Setup, topic: &str, end: i64) {
    eventually(&format!("{topic} committed to {end}"), Duration::from_secs(60), || async move {
        (offsets_on(&setup.bootstrap, &setup.group, topic, 1)[0].0 == Some(end)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn worked_example_pr_updates_projection_changes_and_sv_triggers() {
    let ex = example("outputs", true).await;
    let setup = &ex.setup;
    let customer =
        |id: &str| dbz(json!({ "customer_id": id }), "c", json!({ "customer_id": id, "name": id }));
    produce(&ex.customers, &[customer("C-7"), customer("C-9")]).await;
    produce(&ex.orders, &[order("O-1", "C-7", "c"), order("O-4", "C-7", "c")]).await;
    let mut engine = setup.start("run");
    committed(setup, &ex.orders, 2).await;
    produce(&ex.items, &[item("O-1", 1, 1, "c"), item("O-1", 2, 2, "c"), item("O-4", 1, 1, "c")])
        .await;
    committed(setup, &ex.items, 3).await;
    // Vector #39: item (O-1,2) qty 2 -> 3 at offset 3; then #40: order O-1 moves C-7 -> C-9.
    produce(&ex.items, &[item("O-1", 2, 3, "u")]).await;
    committed(setup, &ex.items, 4).await;
    produce(&ex.orders, &[order("O-1", "C-9", "u")]).await;
    committed(setup, &ex.orders, 3).await;

    // pr-update: one event per write, keyed by the PK in PK order, in offset order.
    let events = read_topic(&ex.pu_items, 4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let keys: Vec<String> = events.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            r#"{"order_id":"O-1","line_no":1}"#,
            r#"{"order_id":"O-1","line_no":2}"#,
            r#"{"order_id":"O-4","line_no":1}"#,
            r#"{"order_id":"O-1","line_no":2}"#,
        ]
    );
    assert!(events.iter().all(|e| e.schema == r#"{"type":"pr-update","version":"v1.0.0"}"#));
    let update = &events[3].value;
    assert_eq!(update["operationType"], "UPDATE", "{update}");
    assert_eq!(update["projectionName"], "pr_order_items");
    assert_eq!(update["source"], "crm");
    assert_eq!(update["primaryKeys"], json!(["order_id", "line_no"]));
    assert_eq!(
        (update["before"]["qty"].clone(), update["after"]["qty"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(update["__internal__kafkaInfo"]["offset"], json!(3));
    assert_eq!(update["__internal__kafkaInfo"]["topic"], json!(ex.items));
    assert_eq!(update["after"]["__internal__kafkaInfo"]["offset"], json!("3"));
    assert!(update["documentId"].as_str().is_some_and(|id| id.len() == 24), "{update}");
    assert!(update["before"].get("_id").is_none() && update["after"].get("_id").is_none());
    assert_eq!(events[0].value["operationType"], "INSERT");
    assert_eq!(events[0].value["before"], Value::Null);
    let moved = read_topic(&ex.pu_orders, 3).await;
    assert_eq!(moved[2].value["before"]["customer_id"], "C-7");
    assert_eq!(moved[2].value["after"]["customer_id"], "C-9");

    // Projection changes: one document per (single view, identifier), one pending NEW element
    // whatever the burst; the move reaches both the old and the new customer (#40).
    let pcs = projection_changes(setup).await;
    let ids: Vec<(&str, &str)> = pcs.iter().map(|(t, i, _)| (t.as_str(), i.as_str())).collect();
    assert_eq!(
        ids,
        [
            ("sv_customers", r#"{ "customerId": "C-7" }"#),
            ("sv_customers", r#"{ "customerId": "C-9" }"#),
            ("sv_orders", r#"{ "orderId": "O-1" }"#),
            ("sv_orders", r#"{ "orderId": "O-4" }"#),
        ]
    );
    for (view, id, changes) in &pcs {
        assert_eq!(changes.len(), 1, "{view} {id}: {changes:?}");
        assert_eq!(changes[0].get_str("state"), Ok("NEW"));
    }
    let c9 = &pcs[1].2[0];
    assert_eq!(c9.get_str("topic"), Ok(ex.orders.as_str()), "C-9 was reached by the move");
    assert_eq!(c9.get_str("offset"), Ok("2"));

    // sv-trigger: the move triggers sv_customers C-9 from pr_orders.
    let triggers = read_topic(&format!("{}.sv_customers.sv-trigger", ex.sv_prefix), 1).await;
    let c9 = triggers
        .iter()
        .find(|t| {
            t.key == json!({ "customerId": "C-9" })
                && t.value["change"]["projectionName"] == "pr_orders"
        })
        .unwrap_or_else(|| panic!("no sv-trigger for C-9: {triggers:?}"));
    assert_eq!(c9.schema, r#"{"type":"sv-trigger","version":"v1.0.0"}"#);
    assert_eq!(c9.value["type"], "aggregation");
    assert_eq!(c9.value["singleViewName"], "sv_customers");
    assert_eq!(c9.value["change"]["projectionIdentifier"], json!({ "order_id": "O-1" }));
    assert_eq!(c9.value["change"]["data"]["customer_id"], "C-9");

    let (_, text) = engine.get("/metrics").await;
    let pu = format!(r#"rtu_pr_updates_total{{topic="{}"}}"#, ex.pu_items);
    assert_eq!(metric(&text, &pu), Some(4.0), "{text}");
    let runs = metric(&text, r#"rtu_strategy_duration_seconds_count{single_view="__automatic__"}"#);
    assert!(runs.is_some_and(|n| n >= 1.0), "the automatic strategy ran: {text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    ex.setup.finish().await;
}

#[tokio::test]
async fn a_worker_killed_between_its_writes_and_their_outputs_announces_them_after_restart() {
    // The items' pr-update topic is missing: the writes land, their events cannot be
    // acknowledged, so no offset is committed; the worker is killed there.
    let ex = example("outputs-kill", false).await;
    let setup = &ex.setup;
    let items: Vec<_> = (1..=5).map(|line| item("O-1", line, line, "c")).collect();
    produce(&ex.items, &items).await;
    let mut engine = setup.start("before-kill");
    eventually("the five items written", Duration::from_secs(60), || async move {
        let n = setup.db.collection::<Document>("pr_order_items").count_documents(doc! {}).await;
        (n.unwrap() == 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(offsets_on(&setup.bootstrap, &setup.group, &ex.items, 1)[0].0, None);
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 200, "outputs retrying for under unhealthyAfter is still ready: {body}");
    assert!(!signal_and_wait(&mut engine, "KILL").success());

    create_topic(&ex.pu_items, 1).await;
    let mut engine = setup.start("after-kill");
    committed(setup, &ex.items, 5).await;
    let events = read_topic(&ex.pu_items, 5).await;
    let mut lines: Vec<i64> = events.iter().map(|e| e.key["line_no"].as_i64().unwrap()).collect();
    lines.dedup();
    assert_eq!(lines, [1, 2, 3, 4, 5], "{events:?}");
    // Replayed writes re-apply (equal counters) and re-announce: an UPDATE of what the first
    // run wrote, with the same key and data.
    for e in &events {
        assert_eq!(e.value["after"]["qty"], e.key["line_no"]);
    }
    let pcs = projection_changes(setup).await;
    assert_eq!(pcs, [], "no order O-1 is stored: the items reach no single view (#41)");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    ex.setup.finish().await;
}

#[tokio::test]
async fn javascript_casts_and_strategies_and_their_failures_under_the_error_policy() {
    // pr_customers: strategy that loops forever for LOOP; pr_customers_b: one that throws for
    // BAD; `name` goes through a JavaScript cast. deadLetter: both failures leave, the rest
    // flows on both projections.
    let dlq = unique_name("functions-dlq");
    create_topic(&dlq, 1).await;
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/js");
    let extra = format!(
        r#"outputs:
  projectionChanges: {{ collection: fd-pc-crm }}
  strategies:
    maxExecTimeMs: 300
    custom:
      pr_customers: {{ sv_a: "__fromFile__[loops]" }}
      pr_customers_b: {{ sv_b: fails }}
functions:
  files: {{ loops: {js}/strategy_loops.js, fails: {js}/strategy_fails_for_bad.js, castToUpper: {js}/cast_to_upper.js }}
"#
    );
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {dlq} }}"),
        second_topic: true,
        extra,
        ..Options::default()
    };
    let setup = Setup::with("functions", options).await;
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replace(
        "{ name: name, type: String, cast: castToString",
        "{ name: name, type: String, cast: castToUpper",
    );
    std::fs::write(&setup.config, text).unwrap();
    let a: Vec<_> = ["A-0", "A-1", "LOOP", "A-2"].iter().map(|id| customer_created(id)).collect();
    let b: Vec<_> = ["B-0", "BAD", "B-1"].iter().map(|id| customer_created(id)).collect();
    produce(&setup.topic, &a).await;
    produce(&setup.topic_b, &b).await;
    let mut engine = setup.start("run");
    committed(&setup, &setup.topic, 4).await;
    committed(&setup, &setup.topic_b, 3).await;

    let dead = read_dead_letters(&dlq, 2).await;
    assert_eq!(
        dead,
        [
            ("STRATEGY_FAILED".to_string(), setup.topic_b.clone(), "1".to_string()),
            ("STRATEGY_TIMEOUT".to_string(), setup.topic.clone(), "2".to_string()),
        ]
    );
    let pcs = projection_changes(&setup).await;
    let ids: Vec<(&str, &str)> = pcs.iter().map(|(t, i, _)| (t.as_str(), i.as_str())).collect();
    assert_eq!(
        ids,
        [
            ("sv_a", r#"{ "customerId": "A-0" }"#),
            ("sv_a", r#"{ "customerId": "A-1" }"#),
            ("sv_a", r#"{ "customerId": "A-2" }"#),
            ("sv_b", r#"{ "customerId": "B-0" }"#),
            ("sv_b", r#"{ "customerId": "B-1" }"#),
        ]
    );
    let docs = setup.documents().await;
    assert_eq!(docs["A-0"].0, "NAME OF A-0", "the JavaScript cast wrote `name`");
    assert_eq!(setup.documents_of("pr_customers_b").await["B-1"].0, "NAME OF B-1");
    assert!(engine.alive());
    let (_, text) = engine.get("/metrics").await;
    let retried = metric(&text, r#"rtu_transient_retries_total{kind="outputs"}"#);
    assert_eq!(retried, Some(2.0), "two timeouts retried before the third failed: {text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn an_automatic_strategy_that_times_out_for_one_message_fails_only_that_message() {
    // docs/failures.md: STRATEGY_TIMEOUT is transient the first 3 times, then a message error. The
    // automatic strategy runs per batch, so after three timeouts of the batch it runs message
    // by message: BIG (a customer with 300,000 orders, one identifier each) times out alone
    // and is dead-lettered; the other customers' single views are still announced.
    let dlq = unique_name("automatic-dlq");
    create_topic(&dlq, 1).await;
    let dir = std::env::temp_dir().join(unique_name("automatic-timeout"));
    std::fs::create_dir_all(&dir).unwrap();
    let er = r#"{"version":"1.0.0","config":{"pr_customers":{"outgoing":{"pr_orders":{"conditions":{"c2o":{"condition":{"customer_id":"customer_id"},"oneToMany":true}}}}}}}"#;
    let pc = r#"{"version":"1.0.0","config":{"sv_orders":{"paths":[{"path":["pr_customers","pr_orders"],"identifier":{"orderId":"order_id"}}]}}}"#;
    std::fs::write(dir.join("er.json"), er).unwrap();
    std::fs::write(dir.join("pc.json"), pc).unwrap();
    let extra = format!(
        r#"outputs:
  projectionChanges: {{ collection: fd-pc-crm }}
  strategies:
    maxExecTimeMs: 1000
    automatic:
      erSchema: {dir}/er.json
      projectionChangesSchema: {dir}/pc.json
      readProjections: [{{ name: pr_orders, collection: pr_orders, fields: [order_id, customer_id] }}]
"#,
        dir = dir.display()
    );
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {dlq} }}"),
        extra,
        ..Options::default()
    };
    let setup = Setup::with("automatic-timeout", options).await;
    let orders = setup.db.collection::<Document>("pr_orders");
    let big = (0..300_000).map(
        |i| doc! { "order_id": format!("B-{i}"), "customer_id": "BIG", "__STATE__": "PUBLIC" },
    );
    let big: Vec<Document> = big.collect();
    for chunk in big.chunks(50_000) {
        orders.insert_many(chunk.to_vec()).await.unwrap();
    }
    let small = ["A-0", "A-1", "A-2"]
        .map(|c| doc! { "order_id": format!("O-{c}"), "customer_id": c, "__STATE__": "PUBLIC" });
    orders.insert_many(small).await.unwrap();
    let index = mongodb::IndexModel::builder().keys(doc! { "customer_id": 1 }).build();
    orders.create_index(index).await.unwrap();
    let events: Vec<_> =
        ["A-0", "A-1", "BIG", "A-2"].iter().map(|id| customer_created(id)).collect();
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("run");
    committed(&setup, &setup.topic, 4).await;

    let dead = read_dead_letters(&dlq, 1).await;
    assert_eq!(dead, [("STRATEGY_TIMEOUT".to_string(), setup.topic.clone(), "2".to_string())]);
    let pcs = projection_changes(&setup).await;
    let ids: Vec<(&str, &str)> = pcs.iter().map(|(t, i, _)| (t.as_str(), i.as_str())).collect();
    assert_eq!(
        ids,
        [
            ("sv_orders", r#"{ "orderId": "O-A-0" }"#),
            ("sv_orders", r#"{ "orderId": "O-A-1" }"#),
            ("sv_orders", r#"{ "orderId": "O-A-2" }"#),
        ]
    );
    assert_eq!(setup.documents().await.len(), 4, "every customer is written, BIG too");
    let (_, text) = engine.get("/metrics").await;
    let retried = metric(&text, r#"rtu_transient_retries_total{kind="outputs"}"#);
    assert_eq!(retried, Some(2.0), "two batch timeouts retried before the third isolated: {text}");
    assert!(engine.alive());
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn pr_update_v2_events_carry_operation_storage_namespace_and_a_context_header() {
    let topic = unique_name("pr-update-v2");
    create_topic(&topic, 1).await;
    let extra = format!(
        "outputs:\n  projectionUpdates: {{ topics: {{ pr_customers: {topic} }}, format: v2 }}\n"
    );
    let setup = Setup::with("pr-update-v2", Options { extra, ..Options::default() }).await;
    let row = |age: i64| json!({ "customer_id": "C-1", "name": "Ada", "age": age });
    let events = [
        dbz(json!({ "customer_id": "C-1" }), "c", row(36)),
        dbz(json!({ "customer_id": "C-1" }), "u", row(37)),
        dbz(json!({ "customer_id": "C-1" }), "d", row(37)),
    ];
    produce(&setup.topic, &events).await;
    let started = mongodb::bson::DateTime::now().timestamp_millis();
    let mut engine = setup.start("run");
    let records = kafka::read_topic(&topic, 3, Duration::from_secs(1));
    assert_eq!(records.len(), 3, "{records:?}");
    let mut before = Value::Null;
    for (offset, (r, op)) in records.iter().zip(["INSERT", "UPDATE", "DELETE"]).enumerate() {
        assert_eq!(r.header("messageSchema"), r#"{"type":"pr-update","version":"v2.0.0"}"#);
        let key: Value = serde_json::from_slice(r.key.as_deref().unwrap()).unwrap();
        assert_eq!(key, json!({ "customer_id": "C-1" }));
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["operation"]["type"], op, "{v}");
        assert_eq!((&v["source"], &v["storageNamespace"]), (&json!("crm"), &json!("pr_customers")));
        assert_eq!(v["primaryKeys"], json!(["customer_id"]));
        assert_eq!(v["before"], before, "before = the previous event's after");
        match op {
            "DELETE" => assert_eq!(v["after"], Value::Null),
            _ => assert_eq!(v["after"]["age"], 36 + offset as i64, "{v}"),
        }
        before = v["after"].clone();
        let context: Value = serde_json::from_str(r.header("context")).unwrap();
        let ingestion = &context["ingestion"];
        assert_eq!(ingestion["topic"], json!(setup.topic));
        assert_eq!((&ingestion["partitionID"], &ingestion["offset"]), (&json!(0), &json!(offset)));
        let polled = ingestion["pollTimestamp"].as_str().unwrap();
        let polled = mongodb::bson::DateTime::parse_rfc3339_str(polled).unwrap().timestamp_millis();
        assert!(polled >= started - 1000, "polled at {polled}, engine started at {started}");
        assert!(ingestion["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{context}");
    }
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// (reason, source topic, source offset) of the dead-letter records, sorted.
async fn read_dead_letters(topic: &str, n: usize) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = kafka::read_topic(topic, n, Duration::ZERO)
        .iter()
        .map(|r| {
            let header = |name| r.header(name).to_string();
            (
                header("rtu-dlq-reason"),
                header("rtu-dlq-source-topic"),
                header("rtu-dlq-source-offset"),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_javascript_adapter_turns_its_format_into_writes() {
    // The RTU v7 adapter contract (docs/formats.md#custom-custom): {"event", "row", "seq"} messages, a delete,
    // and a message the function rejects (no primary key) dead-lettered as
    // CUSTOM_ADAPTER_FAILED while the others go on.
    let dlq = unique_name("adapter-dlq");
    create_topic(&dlq, 1).await;
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/js");
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {dlq} }}"),
        extra: format!("functions:\n  files: {{ adapter: {js}/kafka_message_adapter.js }}\n"),
        adapter: "{ type: custom, function: adapter }".into(),
        ..Options::default()
    };
    let setup = Setup::with("js-adapter", options).await;
    let row = |id: &str, name: &str, seq: i64, event: &str| {
        let value = json!({ "event": event, "row": { "customer_id": id, "name": name, "age": seq }, "seq": seq });
        (json!({ "customer_id": id }).to_string(), value.to_string())
    };
    let events = [
        row("C-1", "Ada", 10, "ROW_INSERT"),
        row("C-2", "Bo", 11, "ROW_INSERT"),
        row("C-1", "Ada L.", 12, "ROW_UPDATE"),
        (
            json!({ "customer_id": "C-3" }).to_string(),
            json!({ "event": "ROW_INSERT", "row": { "name": "no key" }, "seq": 13 }).to_string(),
        ),
        row("C-2", "Bo", 14, "ROW_DELETE"),
    ];
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("run");
    committed(&setup, &setup.topic, 5).await;
    let docs = setup.documents().await;
    assert_eq!(docs["C-1"], ("Ada L.".to_string(), 12, "PUBLIC".to_string()));
    assert_eq!(docs["C-2"].2, "DELETED");
    assert_eq!(docs.len(), 2, "{docs:?}");
    let stored = setup
        .db
        .collection::<Document>("pr_customers")
        .find_one(doc! { "customer_id": "C-1" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_i64("__internal__counter"), Ok(12), "operationPosition is the counter");
    assert_eq!(stored.get_str("__internal__counterType"), Ok("position"));
    let dead = read_dead_letters(&dlq, 1).await;
    assert_eq!(dead, [("CUSTOM_ADAPTER_FAILED".to_string(), setup.topic.clone(), "3".to_string())]);
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}
