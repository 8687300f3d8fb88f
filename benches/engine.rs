//! Engine throughput on the local test servers (run by `scripts/bench-engine.sh`; prints
//! figures, asserts nothing about time). In one run, on the same Debezium data:
//! (c) the ceiling: the engine's own statements sent straight to mongod, no Kafka;
//! (a) the `rtu engine` binary end to end, with its CPU time per message and peak RSS;
//! (b) a naive consumer: one `update_one` and one synchronous commit per message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Client, Database};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use rtu_operator::config::{EngineConfig, ProjectionConfig, WritesConfig};
use rtu_operator::engine::adapter::{Adapted, Adapter, KafkaRecord};
use rtu_operator::engine::projection::{Projection, Source, Statement, parse_kafka_key};
use rtu_operator::engine::writer::{ensure_primary_key_index, execute};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench-engine.sh"))
}

fn count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const FIELDS: [(&str, &str, &str); 12] = [
    ("customer_id", "String", "castToString"),
    ("name", "String", "castToString"),
    ("email", "String", "castToString"),
    ("phone", "String", "castToString"),
    ("street", "String", "castToString"),
    ("city", "String", "castToString"),
    ("country", "String", "castToString"),
    ("age", "Number", "castToInteger"),
    ("balance", "Number", "castToFloat"),
    ("signup_at", "Date", "castToDate"),
    ("vip", "Boolean", "castStringToBoolean"),
    ("notes", "String", "castToString"),
];

/// The `notes` text of step `step` (long enough to make events ~600 B).
fn notes(step: usize) -> String {
    format!(
        "step {step} of the benchmark workload; free text as CRM systems keep it, padded to a realistic row size"
    )
}

/// Event `i` of `keys` keys: key `i % keys`, step `i / keys` (0 = create, then updates).
fn event(i: usize, keys: usize) -> (String, String) {
    let (k, step) = (i % keys, i / keys);
    let id = format!("C-{k:06}");
    let row = format!(
        r#"{{"customer_id":"{id}","name":"Customer {k} v{step}","email":"customer{k}@example.com","phone":"+39 02 {k:07}","street":"Via Roma {step}","city":"Milano","country":"IT","age":"{}","balance":{}.{:02},"signup_at":"2023-01-15","vip":"{}","notes":"{}"}}"#,
        20 + (k + step) % 60,
        k * 3 + step,
        step % 100,
        step % 2 == 0,
        notes(step)
    );
    let op = if step == 0 { "c" } else { "u" };
    let value = format!(
        r#"{{"before":null,"after":{row},"source":{{"version":"2.5.0.Final","connector":"postgresql","name":"crm","db":"crm","schema":"public","table":"customers","lsn":{i}}},"op":"{op}","ts_ms":{}}}"#,
        1_700_000_000_000_u64 + i as u64
    );
    (format!(r#"{{"customer_id":"{id}"}}"#), value)
}

fn projection_config(topic: &str) -> ProjectionConfig {
    let fields: Vec<_> = FIELDS
        .iter()
        .map(|(n, t, c)| serde_json::json!({ "name": n, "type": t, "cast": c, "primaryKey": *n == "customer_id", "nullable": *n != "customer_id" }))
        .collect();
    serde_json::from_value(
        serde_json::json!({ "name": "pr_customers", "topics": [topic], "fields": fields }),
    )
    .unwrap()
}

fn kafka() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", var("RTU_TEST_KAFKA_BOOTSTRAP"));
    c
}

/// A 6-partition topic.
async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka().create().unwrap();
    let new = NewTopic::new(topic, 6, TopicReplication::Fixed(1));
    for r in admin.create_topics(&[new], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
}

async fn produce(topic: &str, events: usize, keys: usize) {
    create_topic(topic).await;
    let producer: FutureProducer = kafka()
        .set("linger.ms", "20")
        .set("batch.num.messages", "5000")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let mut pending = futures::stream::iter((0..events).map(|i| {
        let (k, v) = event(i, keys);
        let producer = &producer;
        async move {
            producer
                .send(FutureRecord::to(topic).key(&k).payload(&v), Duration::from_secs(60))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }))
    .buffer_unordered(10_000);
    while pending.next().await.is_some() {}
}

/// The statements the engine would send, computed outside the timing.
fn statements(projection: &Projection, topic: &str, events: usize, keys: usize) -> Vec<Statement> {
    let now = DateTime::now();
    (0..events)
        .flat_map(|i| {
            let (k, v) = event(i, keys);
            let Ok(Adapted::Change(change)) = Adapter::Debezium(Default::default()).adapt(
                KafkaRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()) },
                &projection.adapter_key(),
            ) else {
                panic!("event {i} does not adapt")
            };
            let source = Source {
                topic: topic.into(),
                partition: (i % 6) as i32,
                offset: (i / 6) as i64,
                timestamp_ms: 0,
                key: parse_kafka_key(Some(k.as_bytes())),
            };
            projection.map(&change, &source, now).unwrap().statements
        })
        .collect()
}

async fn ceiling(db: &Database, projection: &Projection, stmts: &[Statement]) -> f64 {
    ensure_primary_key_index(db, projection).await.unwrap();
    let start = Instant::now();
    let chunks: Vec<_> = stmts.chunks(2000).collect();
    // The engine's default write concern, as its writes carry it.
    let concern = rtu_operator::config::WriteConcern::default().command_document();
    // As many in flight as the engine allows by default (writesInFlight 4).
    let runs = chunks.into_iter().map(|c| execute(db, projection, c, &concern));
    let mut runs = futures::stream::iter(runs).buffered(4);
    while let Some(r) = runs.next().await {
        r.unwrap();
    }
    stmts.len() as f64 / start.elapsed().as_secs_f64()
}

/// CPU ticks (1/100 s) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

/// The test mongod's pid (from `scripts/testenv`'s run directory), to report its CPU.
fn mongod_pid() -> Option<u32> {
    let run = std::env::var("RTU_TESTENV_RUN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.testinfra").to_string());
    std::fs::read_to_string(Path::new(&run).join("mongodb/pid")).ok()?.trim().parse().ok()
}

/// What one engine run measured.
struct Run {
    /// Messages per second.
    rate: f64,
    /// Engine CPU µs per message.
    cpu_us: f64,
    /// mongod CPU µs per message during the run (when its pid is known).
    mongod_us: Option<f64>,
    /// Peak RSS, MiB.
    rss_mib: f64,
}

impl Run {
    /// `(NN.N us/message engine, NN.N mongod)`.
    fn cpu(&self) -> String {
        let mongod = self.mongod_us.map(|m| format!(", mongod {m:.1}")).unwrap_or_default();
        format!("(CPU per message: engine {:.1} us{mongod})", self.cpu_us)
    }
}

/// Runs the engine binary over the workload with `outputs`.
async fn engine(
    dir: &Path,
    topic: &str,
    db: &Database,
    events: usize,
    keys: usize,
    final_step: usize,
    outputs: &str,
) -> Run {
    let config = format!(
        "systemOfRecord: crm\nkafka: {{ bootstrapServers: '{}', groupId: {}-engine }}\nmongodb: {{ uri: {{ env: RTU_TEST_MONGODB_URI }}, database: {} }}\nadapter: {{ type: debezium }}\nprojections: [{}]\ntelemetry: {{ logLevel: warn, host: 127.0.0.1, port: 0 }}\n{outputs}",
        var("RTU_TEST_KAFKA_BOOTSTRAP"),
        db.name(),
        db.name(),
        serde_json::to_string(&projection_config(topic)).unwrap(),
    );
    let path = dir.join(format!("bench-engine-{}.yaml", db.name()));
    std::fs::write(&path, config).unwrap();
    EngineConfig::load(&path).unwrap();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/rtu");
    let bin = std::env::var("RTU_BIN").map(Into::into).unwrap_or(bin);
    let mut child = Command::new(bin)
        .args(["engine", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let coll = db.collection::<Document>("pr_customers");
    let done = doc! { "notes": notes(final_step) };
    while coll.estimated_document_count().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let mongod = mongod_pid();
    let mongod_start = mongod.and_then(cpu_ticks);
    // Each count scans the collection (no index on `notes`): probing every 20 ms took mongod
    // CPU from the engine it measures; 250 ms costs at most 1-2 % of precision on a ~20 s run.
    while coll.count_documents(done.clone()).await.unwrap() < keys as u64 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    let per_message = |ticks: f64| ticks / 100.0 * 1e6 / events as f64;
    let mongod_us = match (mongod.and_then(cpu_ticks), mongod_start) {
        (Some(end), Some(start)) => Some(per_message(end - start)),
        _ => None,
    };
    let ticks = cpu_ticks(child.id()).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    Run { rate, cpu_us: per_message(ticks), mongod_us, rss_mib: hwm_kb / 1024.0 }
}

/// The outputs of run (e): pr-update events to a 6-partition topic of their own and
/// projection changes from an automatic strategy (single view `sv_customers`, identified by
/// `customer_id` of the changed customer).
async fn outputs_config(dir: &Path, run: &str) -> String {
    let topic = format!("{run}-pr-update");
    create_topic(&topic).await;
    let er = dir.join(format!("{run}-erSchema.json"));
    let pc = dir.join(format!("{run}-projectionChangesSchema.json"));
    std::fs::write(&er, r#"{"version":"1.0.0","config":{}}"#).unwrap();
    let views = r#"{"version":"1.0.0","config":{"sv_customers":{"paths":[{"path":["pr_customers"],"identifier":{"customerId":"customer_id"}}]}}}"#;
    std::fs::write(&pc, views).unwrap();
    format!(
        "outputs:\n  projectionUpdates: {{ topics: {{ pr_customers: {topic} }} }}\n  projectionChanges: {{ collection: fd-pc-crm }}\n  strategies: {{ automatic: {{ erSchema: {}, projectionChangesSchema: {} }} }}\n",
        er.display(),
        pc.display()
    )
}

async fn naive(topic: &str, db: &Database, projection: &Projection, messages: usize) -> f64 {
    let consumer: StreamConsumer = kafka()
        .set("group.id", format!("{topic}-naive"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let coll = db.collection::<Document>(&projection.collection);
    let mut stream = consumer.stream();
    let mut start = None;
    for _ in 0..messages {
        let m = stream.next().await.unwrap().unwrap();
        start.get_or_insert_with(Instant::now);
        let record = KafkaRecord { key: m.key(), value: m.payload() };
        let Ok(Adapted::Change(change)) =
            Adapter::Debezium(Default::default()).adapt(record, &projection.adapter_key())
        else {
            panic!("adapt")
        };
        let source = Source {
            topic: topic.into(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: 0,
            key: parse_kafka_key(m.key()),
        };
        for s in projection.map(&change, &source, DateTime::now()).unwrap().statements {
            if let Statement::Upsert { filter, update } = s {
                // A stale duplicate key is fine here; only the cost matters.
                let update = Document::try_from(update).expect("update decodes");
                let _ = coll.update_one(filter, update).upsert(true).await;
            }
        }
        consumer.commit_message(&m, CommitMode::Sync).unwrap();
    }
    messages as f64 / start.map_or(1.0, |s| s.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let events = count("BENCH_EVENTS", 200_000);
    let keys = count("BENCH_KEYS", 50_000);
    let naive_messages = count("BENCH_NAIVE_MESSAGES", 5_000);
    assert!(events.is_multiple_of(keys), "BENCH_EVENTS must be a multiple of BENCH_KEYS");
    let run = format!("bench-{}-{}", std::process::id(), DateTime::now().timestamp_millis());
    let topic = format!("{run}-in");
    let client = Client::with_uri_str(var("RTU_TEST_MONGODB_URI")).await.unwrap();
    let projection = Projection::new(&projection_config(&topic), &WritesConfig::default()).unwrap();
    let bytes: usize = (0..100).map(|i| event(i * 997 % events, keys).1.len()).sum::<usize>() / 100;
    println!(
        "workload: {events} Debezium events (~{bytes} B, {} fields), {keys} keys, 6 partitions",
        FIELDS.len()
    );

    let t = Instant::now();
    produce(&topic, events, keys).await;
    println!("produced in {:.1}s", t.elapsed().as_secs_f64());

    let stmts = statements(&projection, &topic, events, keys);
    let ceiling_db = client.database(&format!("{run}_ceiling").replace('-', "_"));
    let c = ceiling(&ceiling_db, &projection, &stmts).await;
    println!("(c) ceiling, statements straight to mongod:   {c:>9.0} msg/s");

    let engine_db = client.database(&format!("{run}_engine").replace('-', "_"));
    let dir = std::env::temp_dir();
    let final_step = events / keys - 1;
    let run_a = engine(&dir, &topic, &engine_db, events, keys, final_step, "").await;
    let a = run_a.rate;
    println!("(a) rtu engine, end to end:                   {a:>9.0} msg/s  {}", run_a.cpu());

    let outputs_db = client.database(&format!("{run}_outputs").replace('-', "_"));
    let outputs = outputs_config(&dir, &run).await;
    let run_e = engine(&dir, &topic, &outputs_db, events, keys, final_step, &outputs).await;
    let e = run_e.rate;
    println!(
        "(e) rtu engine, pr-update + automatic strategy -> projection changes (MongoDB): {e:>7.0} msg/s  {}, peak RSS {:.0} MiB",
        run_e.cpu(),
        run_e.rss_mib
    );
    let sv_db = client.database(&format!("{run}_sv_trigger").replace('-', "_"));
    let sv_topic = format!("{run}-sv_customers-sv-trigger");
    create_topic(&sv_topic).await;
    let sv_outputs = outputs.replace(
        "  projectionChanges: { collection: fd-pc-crm }",
        &format!("  singleViewTrigger: {{ topic: \"{run}-{{singleView}}-sv-trigger\" }}"),
    );
    assert_ne!(sv_outputs, outputs, "run (g) must not write projection changes");
    let run_g = engine(&dir, &topic, &sv_db, events, keys, final_step, &sv_outputs).await;
    let g = run_g.rate;
    println!(
        "(g) rtu engine, pr-update + automatic strategy -> sv-trigger (Kafka):          {g:>7.0} msg/s  {}",
        run_g.cpu()
    );
    let pr_only_db = client.database(&format!("{run}_pr_only").replace('-', "_"));
    let pr_only = outputs.split("  projectionChanges").next().unwrap_or_default().to_string();
    let run_f = engine(&dir, &topic, &pr_only_db, events, keys, final_step, &pr_only).await;
    let f = run_f.rate;
    println!("(f) rtu engine, pr-update only:                {f:>9.0} msg/s  {}", run_f.cpu());

    let naive_db = client.database(&format!("{run}_naive").replace('-', "_"));
    ensure_primary_key_index(&naive_db, &projection).await.unwrap();
    let b = naive(&topic, &naive_db, &projection, naive_messages).await;
    println!(
        "(b) naive consumer (update_one + sync commit): {b:>9.0} msg/s  (first {naive_messages} messages)"
    );

    println!("(d) engine CPU: {:.1} us/message; peak RSS {:.0} MiB", run_a.cpu_us, run_a.rss_mib);
    println!(
        "ratios: (a)/(c) = {:.2} (target >= 0.7); (a)/(b) = {:.1} (target >= 10); (e)/(a) = {:.2} (target >= 0.6); (g)/(a) = {:.2}; (f)/(a) = {:.2}",
        a / c,
        a / b,
        e / a,
        g / a,
        f / a
    );
    for db in [ceiling_db, engine_db, naive_db, outputs_db, sv_db, pr_only_db] {
        db.drop().await.unwrap();
    }
}
