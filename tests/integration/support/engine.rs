//! `rtu engine` as a child process for tests: its config (Debezium, one or two projections,
//! an error policy, telemetry on a free port), its log, its HTTP endpoints, the committed
//! offsets of its group, and the documents it wrote.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::{create_topic_on, plaintext_config};
use super::mongodb::unique_database;
use super::{env, eventually, unique_name};

/// What to run.
pub struct Options {
    /// Partitions of each ingestion topic.
    pub partitions: i32,
    /// `tuning.maxBatchMessages`.
    pub max_batch: u32,
    /// The `errorPolicy` value as YAML flow, e.g. `{ type: pauseTopic }`.
    pub error_policy: String,
    /// A second projection `pr_customers_b` on a second topic.
    pub second_topic: bool,
    /// Extra `kafka.config` entries.
    pub kafka_config: Vec<(String, String)>,
    /// `tuning.unhealthyAfterMs`.
    pub unhealthy_after_ms: u32,
    /// The MongoDB URI the engine uses (default: the shared test server).
    pub mongodb_uri: Option<String>,
    /// Top-level YAML appended to the config, e.g. `writes: { ensureIndexes: false }`.
    pub extra: String,
    /// The Kafka the engine uses (default: the shared test server's PLAINTEXT listener).
    pub bootstrap: Option<String>,
    /// The `adapter` value as YAML flow (default `{ type: debezium }`).
    pub adapter: String,
    /// The projections' `fields` list as YAML lines (default: customer_id, name, age).
    pub fields: Option<String>,
    /// `mongodb.writeConcern` as YAML flow (default: none, the engine's `majority`).
    pub write_concern: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partitions: 1,
            max_batch: 500,
            error_policy: "{ type: stop }".into(),
            second_topic: false,
            kafka_config: Vec::new(),
            unhealthy_after_ms: 60_000,
            mongodb_uri: None,
            extra: String::new(),
            bootstrap: None,
            adapter: "{ type: debezium }".into(),
            fields: None,
            write_concern: None,
        }
    }
}

/// One engine under test: its config, database, topics and group.
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub topic: String,
    /// The second projection's topic (`Options::second_topic`).
    pub topic_b: String,
    pub group: String,
    pub db: Database,
    pub bootstrap: String,
    mongodb_uri: String,
}

impl Setup {
    pub async fn new(name: &str, partitions: i32, max_batch: u32) -> Self {
        Setup::with(name, Options { partitions, max_batch, ..Options::default() }).await
    }

    pub async fn with(name: &str, options: Options) -> Self {
        let topic = unique_name(&format!("{name}-in"));
        let topic_b = unique_name(&format!("{name}-in-b"));
        let group = unique_name(&format!("{name}-group"));
        let database = unique_database(name);
        let bootstrap = options
            .bootstrap
            .clone()
            .unwrap_or_else(|| env().var("RTU_TEST_KAFKA_BOOTSTRAP").to_string());
        create_topic_on(&bootstrap, &topic, options.partitions).await;
        if options.second_topic {
            create_topic_on(&bootstrap, &topic_b, options.partitions).await;
        }
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("engine.yaml");
        let fields = options.fields.as_deref().unwrap_or(
            r#"
      - { name: customer_id, type: String, cast: castToString, required: true, primaryKey: true }
      - { name: name, type: String, cast: castToString, nullable: true }
      - { name: age, type: Number, cast: castToInteger, nullable: true }"#,
        );
        let second = if options.second_topic {
            format!("  - name: pr_customers_b\n    topics: [{topic_b}]\n    fields:{fields}\n")
        } else {
            String::new()
        };
        let mut kafka_config: String =
            options.kafka_config.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
        if !kafka_config.is_empty() {
            kafka_config.insert_str(0, "  config:\n");
        }
        let write_concern = match &options.write_concern {
            Some(flow) => format!("  writeConcern: {flow}\n"),
            None => String::new(),
        };
        let yaml = format!(
            r#"systemOfRecord: crm
name: {name}
kafka:
  bootstrapServers: {bootstrap}
  groupId: {group}
{kafka_config}mongodb:
  uri: {{ env: RTU_TEST_MONGODB_URI }}
  database: {database}
{write_concern}adapter: {adapter}
projections:
  - name: pr_customers
    topics: [{topic}]
    fields:{fields}
{second}errorPolicy: {policy}
tuning:
  maxBatchMessages: {max_batch}
  maxBatchWaitMs: 50
  commitIntervalMs: 200
  unhealthyAfterMs: {unhealthy}
telemetry:
  host: 127.0.0.1
  port: 0
  lagIntervalMs: 200
  logLevel: info
{extra}
"#,
            policy = options.error_policy,
            adapter = options.adapter,
            max_batch = options.max_batch,
            unhealthy = options.unhealthy_after_ms,
            extra = options.extra,
        );
        std::fs::write(&config, yaml).unwrap();
        let mongodb_uri =
            options.mongodb_uri.unwrap_or_else(|| env().var("RTU_TEST_MONGODB_URI").to_string());
        let db = mongodb::Client::with_uri_str(&mongodb_uri).await.unwrap().database(&database);
        Setup { dir, config, topic, topic_b, group, db, bootstrap, mongodb_uri }
    }

    pub fn start(&self, run: &str) -> Engine {
        let log = std::fs::File::create(self.log(run)).unwrap();
        // RTU_TEST_ENGINE_BIN: another build of `rtu` (scripts/chaos-kill.sh runs the release one).
        let bin = std::env::var("RTU_TEST_ENGINE_BIN").unwrap_or(env!("CARGO_BIN_EXE_rtu").into());
        let child = Command::new(bin)
            .args(["engine", "--config"])
            .arg(&self.config)
            .env("RTU_TEST_MONGODB_URI", &self.mongodb_uri)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Engine { child, log: self.log(run) }
    }

    pub fn log(&self, run: &str) -> PathBuf {
        self.dir.join(format!("{run}.log"))
    }

    /// Drops the test database and the config/log directory (kept when a test fails).
    pub async fn finish(self) {
        self.db.drop().await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }

    /// customer_id -> (name, age, __STATE__) of every document of `collection`.
    pub async fn documents_of(&self, collection: &str) -> Documents {
        let mut cursor = self.db.collection::<Document>(collection).find(doc! {}).await.unwrap();
        let mut out = BTreeMap::new();
        while cursor.advance().await.unwrap() {
            let d = cursor.deserialize_current().unwrap();
            out.insert(
                d.get_str("customer_id").unwrap().to_string(),
                (
                    d.get_str("name").unwrap_or_default().to_string(),
                    d.get_i64("age").unwrap_or(-1),
                    d.get_str("__STATE__").unwrap().to_string(),
                ),
            );
        }
        out
    }

    /// The documents of `pr_customers`.
    pub async fn documents(&self) -> Documents {
        self.documents_of("pr_customers").await
    }

    /// (committed, end) offset of each partition of the first topic for the engine's group.
    pub fn offsets(&self, partitions: i32) -> Vec<(Option<i64>, i64)> {
        offsets_on(&self.bootstrap, &self.group, &self.topic, partitions)
    }

    /// (committed, end) offset of each partition of the second topic.
    pub fn offsets_b(&self, partitions: i32) -> Vec<(Option<i64>, i64)> {
        offsets_on(&self.bootstrap, &self.group, &self.topic_b, partitions)
    }

    /// Produces keyed events to the engine's Kafka.
    pub async fn produce(&self, topic: &str, events: &[(String, String)]) {
        produce_on(&self.bootstrap, topic, events, None).await;
    }
}

/// (committed, end) offset of each partition of `topic` for `group` on `bootstrap`.
pub fn offsets_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<i64>, i64)> {
    let consumer: BaseConsumer = plaintext_config()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed: Vec<Option<i64>> = {
        // Right after a broker starts, the group coordinator may not be ready yet
        // (NotCoordinator, CoordinatorLoadInProgress): ask again for up to 30 s.
        let mut attempts = 0;
        let list = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(list) => break list,
                Err(e) if attempts < 30 => {
                    attempts += 1;
                    eprintln!("committed offsets of {group} not readable yet ({e}); retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => panic!("committed offsets of {group} on {bootstrap}: {e}"),
            }
        };
        list.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .collect()
    };
    let ends = (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1);
    committed.into_iter().zip(ends).collect()
}

/// An engine process, killed if a test ends (or fails) without stopping it.
pub struct Engine {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Engine {
    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of `/healthz`, `/readyz`, `/metrics` (from the engine's start-up log line).
    pub async fn telemetry_addr(&self) -> String {
        let what = format!("the 'telemetry listening' log line in {}", self.log.display());
        eventually(&what, Duration::from_secs(30), || async {
            self.log_text().lines().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &entry["fields"];
                (fields["message"].as_str()? == "telemetry listening (/healthz, /readyz, /metrics)")
                    .then(|| fields["addr"].as_str().map(str::to_string))?
            })
        })
        .await
    }

    /// GET `path` on the telemetry port: (status code, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.telemetry_addr().await, path)
    }
}

/// A minimal HTTP/1.0 GET (the engine's server speaks HTTP/1.1, which answers 1.0 requests).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` in a metrics text, if present (labels as printed).
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

/// customer_id -> (name, age, __STATE__).
pub type Documents = BTreeMap<String, (String, i64, String)>;

/// Sends SIGTERM (or SIGKILL) and waits for the exit status (at most 60 s).
pub fn signal_and_wait(engine: &mut Engine, signal: &str) -> std::process::ExitStatus {
    let child = &mut engine.child;
    signal_pid(child.id(), signal);
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("engine did not exit within 60s after SIG{signal}");
}

/// `kill -SIGNAL pid`.
pub fn signal_pid(pid: u32, signal: &str) {
    let status =
        Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A Debezium event for `id` at step `seq`: create at 0, then updates; `delete` ends it.
pub fn event(id: &str, seq: i64, delete: bool) -> (String, String) {
    let key = format!(r#"{{"customer_id":"{id}"}}"#);
    let row = format!(r#"{{"customer_id":"{id}","name":"{id}-{seq}","age":{seq}}}"#);
    let value = match (seq, delete) {
        (_, true) => format!(r#"{{"before":{row},"after":null,"op":"d"}}"#),
        (0, false) => format!(r#"{{"before":null,"after":{row},"op":"c"}}"#),
        _ => format!(r#"{{"before":null,"after":{row},"op":"u"}}"#),
    };
    (key, value)
}

/// Produces keyed events to partition 0.. as the default partitioner places them.
pub async fn produce(topic: &str, events: &[(String, String)]) {
    produce_with_headers(topic, events, None).await;
}

/// Produces keyed events, each with `headers` when given.
pub async fn produce_with_headers(
    topic: &str,
    events: &[(String, String)],
    headers: Option<OwnedHeaders>,
) {
    produce_on(env().var("RTU_TEST_KAFKA_BOOTSTRAP"), topic, events, headers).await;
}

/// Produces records whose key or value may be null (tombstones), in order, to partition 0.
pub async fn produce_nullable(topic: &str, records: &[(Option<String>, Option<String>)]) {
    let producer: FutureProducer = plaintext_config()
        .set("bootstrap.servers", env().var("RTU_TEST_KAFKA_BOOTSTRAP"))
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = FutureRecord::<String, String>::to(topic).partition(0);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
}

/// Produces keyed events to the Kafka at `bootstrap`, each with `headers` when given.
pub async fn produce_on(
    bootstrap: &str,
    topic: &str,
    events: &[(String, String)],
    headers: Option<OwnedHeaders>,
) {
    let producer: FutureProducer = plaintext_config()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = events.iter().map(|(k, v)| {
        let mut record = FutureRecord::to(topic).key(k).payload(v);
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        producer.send(record, Duration::from_secs(30))
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e).unwrap();
    }
}

/// `keys` keys, `steps` events each (interleaved), the last key of every 10 deleted at the end;
/// returns the expected final documents.
pub fn workload(keys: usize, steps: i64) -> (Vec<(String, String)>, Documents) {
    let mut events = Vec::new();
    let mut expected = BTreeMap::new();
    for seq in 0..steps {
        for k in 0..keys {
            let id = format!("C-{k}");
            events.push(event(&id, seq, false));
            expected.insert(id.clone(), (format!("{id}-{seq}"), seq, "PUBLIC".to_string()));
        }
    }
    for k in (9..keys).step_by(10) {
        let id = format!("C-{k}");
        events.push(event(&id, steps - 1, true));
        expected.get_mut(&id).unwrap().2 = "DELETED".to_string();
    }
    (events, expected)
}

/// Waits until `pr_customers` holds exactly `expected`.
pub async fn wait_for(setup: &Setup, expected: &Documents, run: &str) {
    let what = format!(
        "projections to match the last event of each key (log: {})",
        setup.log(run).display()
    );
    eventually(&what, Duration::from_secs(90), || async {
        (setup.documents().await == *expected).then_some(())
    })
    .await;
}

/// The partitions a worker owns at the end of its log (assignments minus revocations).
pub fn owned_partitions(log: &Path) -> std::collections::BTreeSet<String> {
    let mut owned = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let fields = &entry["fields"];
        let partitions =
            fields["partitions"].as_str().unwrap_or_default().split(',').filter(|p| !p.is_empty());
        match fields["message"].as_str() {
            Some("partitions assigned") => owned.extend(partitions.map(str::to_string)),
            Some("partitions revoked") => partitions.for_each(|p| {
                owned.remove(p);
            }),
            _ => {}
        }
    }
    owned
}
