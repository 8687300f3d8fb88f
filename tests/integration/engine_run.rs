//! `rtu engine` as a process on the real Kafka and MongoDB: Debezium events become projection
//! documents; SIGTERM commits and exits 0; a SIGKILL mid-stream and a restart lose nothing and
//! let no stale event win; errorPolicy stop keeps the process alive and commits nothing at or
//! after the bad message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::kafka::{create_topic, plaintext_config};
use crate::support::mongodb::{admin_client, unique_database};
use crate::support::{env, eventually, unique_name};

/// One engine under test: its config, database, topic and group.
struct Setup {
    dir: PathBuf,
    config: PathBuf,
    topic: String,
    group: String,
    db: Database,
}

impl Setup {
    async fn new(name: &str, partitions: i32, max_batch: u32) -> Self {
        let topic = unique_name(&format!("{name}-in"));
        let group = unique_name(&format!("{name}-group"));
        let database = unique_database(name);
        create_topic(&topic, partitions).await;
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("engine.yaml");
        let yaml = format!(
            r#"systemOfRecord: crm
kafka:
  bootstrapServers: {bootstrap}
  groupId: {group}
mongodb:
  uri: {{ env: RTU_TEST_MONGODB_URI }}
  database: {database}
adapter:
  type: debezium
projections:
  - name: pr_customers
    topics: [{topic}]
    fields:
      - {{ name: customer_id, type: String, cast: castToString, required: true, primaryKey: true }}
      - {{ name: name, type: String, cast: castToString, nullable: true }}
      - {{ name: age, type: Number, cast: castToInteger, nullable: true }}
tuning:
  maxBatchMessages: {max_batch}
  maxBatchWaitMs: 50
  commitIntervalMs: 200
telemetry:
  logLevel: info
"#,
            bootstrap = env().var("RTU_TEST_KAFKA_BOOTSTRAP"),
        );
        std::fs::write(&config, yaml).unwrap();
        let db = admin_client().await.database(&database);
        Setup { dir, config, topic, group, db }
    }

    fn start(&self, run: &str) -> Engine {
        let log = std::fs::File::create(self.log(run)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rtu"))
            .args(["engine", "--config"])
            .arg(&self.config)
            .env("RTU_TEST_MONGODB_URI", env().var("RTU_TEST_MONGODB_URI"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map(Engine)
            .unwrap()
    }

    fn log(&self, run: &str) -> PathBuf {
        self.dir.join(format!("{run}.log"))
    }

    /// Drops the test database and the config/log directory (kept when a test fails).
    async fn finish(self) {
        self.db.drop().await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }

    /// customer_id -> (name, age, __STATE__) of every stored document.
    async fn documents(&self) -> Documents {
        let mut cursor =
            self.db.collection::<Document>("pr_customers").find(doc! {}).await.unwrap();
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

    /// (committed, end) offset of each partition of the topic for the engine's group.
    fn offsets(&self, partitions: i32) -> Vec<(Option<i64>, i64)> {
        let consumer: BaseConsumer =
            plaintext_config().set("group.id", &self.group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed: Vec<Option<i64>> = {
            let list = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
            list.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .collect()
        };
        let ends = (0..partitions)
            .map(|p| consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(10)).unwrap().1);
        committed.into_iter().zip(ends).collect()
    }
}

/// An engine process, killed if a test ends (or fails) without stopping it.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// customer_id -> (name, age, __STATE__).
type Documents = BTreeMap<String, (String, i64, String)>;

/// Sends SIGTERM (or SIGKILL) and waits for the exit status (at most 60 s).
fn signal_and_wait(engine: &mut Engine, signal: &str) -> std::process::ExitStatus {
    let child = &mut engine.0;
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("engine did not exit within 60s after SIG{signal}");
}

/// A Debezium event for `id` at step `seq`: create at 0, then updates; `delete` ends it.
fn event(id: &str, seq: i64, delete: bool) -> (String, String) {
    let key = format!(r#"{{"customer_id":"{id}"}}"#);
    let row = format!(r#"{{"customer_id":"{id}","name":"{id}-{seq}","age":{seq}}}"#);
    let value = match (seq, delete) {
        (_, true) => format!(r#"{{"before":{row},"after":null,"op":"d"}}"#),
        (0, false) => format!(r#"{{"before":null,"after":{row},"op":"c"}}"#),
        _ => format!(r#"{{"before":null,"after":{row},"op":"u"}}"#),
    };
    (key, value)
}

async fn produce(topic: &str, events: &[(String, String)]) {
    let producer: FutureProducer = plaintext_config().set("linger.ms", "5").create().unwrap();
    let sends = events.iter().map(|(k, v)| {
        producer.send(FutureRecord::to(topic).key(k).payload(v), Duration::from_secs(30))
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e).unwrap();
    }
}

/// `keys` keys, `steps` events each (interleaved), the last key of every 10 deleted at the end;
/// returns the expected final documents.
fn workload(keys: usize, steps: i64) -> (Vec<(String, String)>, Documents) {
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

async fn wait_for(setup: &Setup, expected: &Documents, run: &str) {
    let what = format!(
        "projections to match the last event of each key (log: {})",
        setup.log(run).display()
    );
    eventually(&what, Duration::from_secs(90), || async {
        (setup.documents().await == *expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn engine_writes_projections_and_commits_on_sigterm_then_resumes() {
    let setup = Setup::new("engine-e2e", 3, 500).await;
    let (events, expected) = workload(30, 5);
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("first");
    wait_for(&setup, &expected, "first").await;
    // Committed while running and idle (every commitIntervalMs), not only at shutdown.
    eventually(
        "every partition committed to its end while running",
        Duration::from_secs(30),
        || async {
            setup.offsets(3).iter().all(|(committed, end)| *committed == Some(*end)).then_some(())
        },
    )
    .await;
    let status = signal_and_wait(&mut engine, "TERM");
    assert!(status.success(), "exit after SIGTERM: {status}; log {}", setup.log("first").display());
    for (partition, (committed, end)) in setup.offsets(3).into_iter().enumerate() {
        assert_eq!(committed, Some(end), "partition {partition}: committed offset after SIGTERM");
    }
    let log = std::fs::read_to_string(setup.log("first")).unwrap();
    assert!(log.contains("\"engine stopped\""), "{log}");

    // More events while it is down; the restart resumes at the committed offsets.
    let (more, expected_more) = workload(30, 8);
    produce(&setup.topic, &more[150..]).await;
    let mut engine = setup.start("second");
    wait_for(&setup, &expected_more, "second").await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    for (committed, end) in setup.offsets(3) {
        assert_eq!(committed, Some(end));
    }
    setup.finish().await;
}

#[tokio::test]
async fn engine_killed_mid_stream_loses_nothing_after_restart() {
    let setup = Setup::new("engine-kill", 3, 20).await;
    let (events, expected) = workload(200, 60);
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("killed");
    // Kill it once it has written part of the stream.
    eventually("the engine to write some documents", Duration::from_secs(60), || async {
        (setup.documents().await.len() >= 50).then_some(())
    })
    .await;
    let status = signal_and_wait(&mut engine, "KILL");
    assert!(!status.success());
    let partial = setup.documents().await;
    assert_ne!(
        partial, expected,
        "the engine finished before it was killed; the test proves nothing"
    );
    let mut engine = setup.start("restarted");
    wait_for(&setup, &expected, "restarted").await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn error_policy_stop_keeps_the_process_and_commits_before_the_bad_message() {
    let setup = Setup::new("engine-stop", 1, 500).await;
    let mut events: Vec<(String, String)> =
        (0..5).map(|i| event(&format!("A-{i}"), 0, false)).collect();
    events.push((r#"{"customer_id":"BAD"}"#.to_string(), "{not json".to_string()));
    events.extend((0..5).map(|i| event(&format!("Z-{i}"), 0, false)));
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("stop");
    eventually(
        "the offset before the bad message to be committed",
        Duration::from_secs(60),
        || async { (setup.offsets(1)[0].0 == Some(5)).then_some(()) },
    )
    .await;
    let docs = setup.documents().await;
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), ["A-0", "A-1", "A-2", "A-3", "A-4"]);
    assert!(engine.0.try_wait().unwrap().is_none(), "the engine exited on a message error");
    let log = std::fs::read_to_string(setup.log("stop")).unwrap();
    let failure =
        log.lines().find(|l| l.contains("message failed")).expect("a 'message failed' log line");
    for field in [
        "\"code\":\"MALFORMED_VALUE\"",
        &format!("\"topic\":\"{}\"", setup.topic),
        "\"partition\":0",
        "\"offset\":5",
    ] {
        assert!(failure.contains(field), "{field} missing in {failure}");
    }
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(5), "nothing at or after the bad message is committed");
    setup.finish().await;
}

/// The partitions a worker owns at the end of its log (assignments minus revocations).
fn owned_partitions(log: &std::path::Path) -> std::collections::BTreeSet<String> {
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

#[tokio::test]
async fn two_workers_in_one_group_split_the_partitions() {
    let setup = Setup::new("engine-two", 6, 100).await;
    let mut a = setup.start("worker-a");
    let mut b = setup.start("worker-b");
    let all: std::collections::BTreeSet<String> =
        (0..6).map(|p| format!("{}[{p}]", setup.topic)).collect();
    eventually("the two workers to split the 6 partitions", Duration::from_secs(60), || async {
        let (owned_a, owned_b) =
            (owned_partitions(&setup.log("worker-a")), owned_partitions(&setup.log("worker-b")));
        let split = !owned_a.is_empty() && !owned_b.is_empty() && owned_a.is_disjoint(&owned_b);
        (split
            && owned_a.union(&owned_b).cloned().collect::<std::collections::BTreeSet<_>>() == all)
            .then_some(())
    })
    .await;
    let (events, expected) = workload(60, 10);
    produce(&setup.topic, &events).await;
    wait_for(&setup, &expected, "worker-a").await;
    eventually("every partition committed to its end", Duration::from_secs(30), || async {
        setup.offsets(6).iter().all(|(committed, end)| *committed == Some(*end)).then_some(())
    })
    .await;
    assert!(signal_and_wait(&mut a, "TERM").success());
    assert!(signal_and_wait(&mut b, "TERM").success());
    setup.finish().await;
}
