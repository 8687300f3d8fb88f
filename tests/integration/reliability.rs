//! Faults real clusters have, on real servers, with every output on (docs/failures.md#faults):
//! the primary of a three-member MongoDB replica set killed (SIGKILL) and then stepped down
//! mid-stream; the Kafka broker killed and restarted mid-stream; two workers of one group killed
//! every few seconds. Each ends with the same checks: every projection equals the last event of
//! its key (0 lost, 0 stale), every offset committed, every pr-update event present at least
//! once (duplicates counted and printed), no pr-update that goes back in time, a projection
//! change for every key. The kill test's size comes from the environment, so
//! `scripts/chaos-kill.sh` runs it at 200k events and 50+ kills.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::support::engine::{Documents, Engine, Options, Setup, metric, signal_and_wait};
use crate::support::kafka::{create_topic_on, plaintext_config};
use crate::support::servers::PrivateServers;
use crate::support::{env, eventually, unique_name};

/// Keys updated a quarter of the time, so a batch holds several versions of one key.
const HOT_KEYS: usize = 16;

/// A generated change stream and what it must leave behind.
struct Stream {
    events: Vec<(String, String)>,
    /// customer_id -> (name, age, __STATE__) after the last event of each key.
    expected: Documents,
    /// One tag per event: `C-7@3` (the update that made age 3), `C-7@delete`.
    tags: Vec<String>,
}

/// `events` Debezium events over `keys` keys: creates and updates (a quarter on the hot keys),
/// then a delete of every tenth key. Counter: `source.lsn`, the event's index.
fn stream(events: usize, keys: usize) -> Stream {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let deletes: Vec<usize> = (9..keys).step_by(10).collect();
    let mut seq = vec![-1_i64; keys];
    let mut out = Stream { events: Vec::new(), expected: BTreeMap::new(), tags: Vec::new() };
    let row = |k: usize, s: i64| json!({ "customer_id": format!("C-{k}"), "name": format!("C-{k}-{s}"), "age": s });
    for _ in 0..events.saturating_sub(deletes.len()) {
        let r = random();
        let k = (r >> 8) as usize % if r % 4 == 0 { HOT_KEYS.min(keys) } else { keys };
        seq[k] += 1;
        let op = if seq[k] == 0 { "c" } else { "u" };
        let lsn = out.events.len() + 1;
        let value =
            json!({ "before": null, "after": row(k, seq[k]), "op": op, "source": { "lsn": lsn } });
        out.events
            .push((json!({ "customer_id": format!("C-{k}") }).to_string(), value.to_string()));
        out.tags.push(format!("C-{k}@{}", seq[k]));
        out.expected
            .insert(format!("C-{k}"), (format!("C-{k}-{}", seq[k]), seq[k], "PUBLIC".into()));
    }
    for k in deletes.into_iter().filter(|&k| seq[k] >= 0) {
        let lsn = out.events.len() + 1;
        let value =
            json!({ "before": row(k, seq[k]), "after": null, "op": "d", "source": { "lsn": lsn } });
        out.events
            .push((json!({ "customer_id": format!("C-{k}") }).to_string(), value.to_string()));
        out.tags.push(format!("C-{k}@delete"));
        if let Some(doc) = out.expected.get_mut(&format!("C-{k}")) {
            doc.2 = "DELETED".into();
        }
    }
    out
}

/// Produces `events` in order (idempotent producer: no reordering on retries, so the topic
/// order is the generated order), spread over `over` in slices four times a second.
fn produce_over(
    bootstrap: &str,
    topic: &str,
    events: Vec<(String, String)>,
    over: Duration,
) -> tokio::task::JoinHandle<()> {
    let producer: FutureProducer = plaintext_config()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "180000")
        .create()
        .unwrap();
    let topic = topic.to_string();
    tokio::spawn(async move {
        let slices = (over.as_millis() / 250).max(1) as usize;
        let size = events.len().div_ceil(slices).max(1);
        for slice in events.chunks(size) {
            let sends = slice.iter().map(|(k, v)| {
                producer.send(FutureRecord::to(&topic).key(k).payload(v), Duration::from_secs(180))
            });
            for result in futures::future::join_all(sends).await {
                result.map_err(|(e, _)| e).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// The engine config's outputs: pr-update events on `pu_topic`, projection changes from the
/// automatic strategy (`sv_customers`, one per customer), schemas written into `dir`.
fn outputs(dir: &std::path::Path, pu_topic: &str) -> String {
    let er = dir.join("erSchema.json");
    let pc = dir.join("projectionChangesSchema.json");
    std::fs::create_dir_all(dir).unwrap();
    let er_schema = json!({ "version": "1.0.0", "config": { "pr_customers": { "outgoing": {} } } });
    let pc_schema = json!({ "version": "1.0.0", "config": { "sv_customers": { "paths": [
        { "path": ["pr_customers"], "identifier": { "customerId": "customer_id" } }
    ] } } });
    std::fs::write(&er, er_schema.to_string()).unwrap();
    std::fs::write(&pc, pc_schema.to_string()).unwrap();
    format!(
        r#"outputs:
  projectionUpdates:
    topics: {{ pr_customers: {pu_topic} }}
  projectionChanges: {{ collection: fd-pc-crm }}
  strategies:
    automatic:
      erSchema: {er}
      projectionChangesSchema: {pc}
"#,
        er = er.display(),
        pc = pc.display()
    )
}

/// A setup for the fault tests: `partitions` partitions, the stream's counter, every output.
async fn setup(name: &str, partitions: i32, mut options: Options) -> (Setup, String) {
    let bootstrap =
        options.bootstrap.clone().unwrap_or_else(|| env().var("RTU_TEST_KAFKA_BOOTSTRAP").into());
    let pu_topic = unique_name(&format!("{name}-pr-update"));
    create_topic_on(&bootstrap, &pu_topic, 2).await;
    let dir = std::env::temp_dir().join(unique_name(&format!("{name}-schemas")));
    options.partitions = partitions;
    options.adapter = "{ type: debezium, debezium: { counter: lsn } }".into();
    options.extra = outputs(&dir, &pu_topic);
    (Setup::with(name, options).await, pu_topic)
}

/// Sum of (committed, end) over the partitions.
fn progress(setup: &Setup, partitions: i32) -> (i64, i64) {
    setup
        .offsets(partitions)
        .into_iter()
        .fold((0, 0), |(c, e), (committed, end)| (c + committed.unwrap_or(0), e + end))
}

/// Waits until at least `n` offsets are committed.
async fn committed_at_least(setup: &Setup, partitions: i32, n: i64, timeout: Duration) {
    eventually(&format!("{n} offsets committed"), timeout, || async move {
        (progress(setup, partitions).0 >= n).then_some(())
    })
    .await;
}

/// Every record of `topic` on `bootstrap`, up to the end offsets read when called.
fn read_all(bootstrap: &str, topic: &str) -> Vec<(Value, Value)> {
    let consumer: BaseConsumer = plaintext_config()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
            ends.insert(p, high);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} records read, partitions left {ends:?}",
            out.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let json = |b: Option<&[u8]>| b.map_or(Value::Null, |b| serde_json::from_slice(b).unwrap());
        out.push((json(m.key()), json(m.payload())));
        if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
            ends.remove(&m.partition());
        }
    }
    out
}

/// What a run left behind, against what its stream must leave.
#[derive(Debug, Default)]
struct Verdict {
    events: usize,
    keys: usize,
    /// Keys whose projection is missing or holds other data than their last event.
    lost: usize,
    /// Keys whose projection holds an older version than their last event.
    stale: usize,
    pr_updates: usize,
    /// Events with no pr-update, by tag.
    missing: Vec<String>,
    /// pr-update events beyond the first of each tag (replays).
    duplicates: usize,
    /// pr-update UPDATEs whose `after` is older than their `before`.
    backwards: usize,
    /// Keys without a projection-change document.
    no_projection_change: usize,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events over {} keys: lost {}, stale {}; pr-update: {} events, {} missing, {} duplicates, {} going back; keys without a projection change {}",
            self.events,
            self.keys,
            self.lost,
            self.stale,
            self.pr_updates,
            self.missing.len(),
            self.duplicates,
            self.backwards,
            self.no_projection_change
        )
    }
}

impl Verdict {
    fn assert_clean(&self) {
        let first: Vec<_> = self.missing.iter().take(20).collect();
        assert!(
            self.lost == 0
                && self.stale == 0
                && self.missing.is_empty()
                && self.backwards == 0
                && self.no_projection_change == 0,
            "{self}; first missing pr-updates: {first:?}"
        );
    }
}

/// Waits for every offset to be committed, then compares projections, pr-updates and projection
/// changes with the stream.
async fn verify(setup: &Setup, partitions: i32, pu_topic: &str, stream: &Stream) -> Verdict {
    let total = stream.events.len() as i64;
    let timeout = Duration::from_secs(300.max(total as u64 / 200));
    eventually("every offset committed", timeout, || async move {
        (progress(setup, partitions) == (total, total)).then_some(())
    })
    .await;
    let docs = setup.documents().await;
    let mut verdict =
        Verdict { events: stream.events.len(), keys: stream.expected.len(), ..Verdict::default() };
    for (id, want) in &stream.expected {
        match docs.get(id) {
            Some(got) if got == want => {}
            Some(got) if got.1 < want.1 => verdict.stale += 1,
            _ => verdict.lost += 1,
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let records = read_all(&setup.bootstrap, pu_topic);
    verdict.pr_updates = records.len();
    for (key, value) in &records {
        let id = key["customer_id"].as_str().unwrap_or_default();
        let tag = match value["operationType"].as_str() {
            Some("DELETE") => format!("{id}@delete"),
            _ => format!("{id}@{}", value["after"]["age"]),
        };
        *seen.entry(tag).or_default() += 1;
        let before = &value["before"];
        if value["operationType"] == "UPDATE"
            && before["__STATE__"] == "PUBLIC"
            && before["age"].as_i64() > value["after"]["age"].as_i64()
        {
            verdict.backwards += 1;
        }
    }
    for tag in &stream.tags {
        match seen.get(tag) {
            Some(n) => verdict.duplicates += n - 1,
            None => verdict.missing.push(tag.clone()),
        }
    }
    let changes = setup.db.collection::<Document>("fd-pc-crm");
    let mut cursor = changes.find(doc! { "type": "sv_customers" }).await.unwrap();
    let mut changed = std::collections::HashSet::new();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        if let Ok(id) = d.get_document("identifier").and_then(|i| i.get_str("customerId")) {
            changed.insert(id.to_string());
        }
    }
    verdict.no_projection_change =
        stream.expected.keys().filter(|id| !changed.contains(*id)).count();
    verdict
}

/// A number from the environment, or `default`.
fn sized(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The member of `servers` (mongodb-rs) that is primary now, by `hello` through the set.
async fn primary(client: &mongodb::Client, servers: &PrivateServers) -> Option<String> {
    let hello = client.database("admin").run_command(doc! { "hello": 1 }).await.ok()?;
    let host = hello.get_str("primary").ok()?;
    servers.members().into_iter().find(|(_, h)| h == host).map(|(p, _)| p)
}

/// Waits for a primary other than `old`; returns it and how long the election took.
async fn new_primary(
    client: &mongodb::Client,
    servers: &PrivateServers,
    old: &str,
) -> (String, Duration) {
    let start = Instant::now();
    let what = format!("a primary other than {old}");
    let member = eventually(&what, Duration::from_secs(60), || async {
        primary(client, servers).await.filter(|p| p != old)
    })
    .await;
    (member, start.elapsed())
}

/// The counter of transient retries of `kind` in a worker's metrics (0 when never retried).
async fn retries(engine: &Engine, kind: &str) -> f64 {
    let (_, text) = engine.get("/metrics").await;
    metric(&text, &format!(r#"rtu_transient_retries_total{{kind="{kind}"}}"#)).unwrap_or(0.0)
}

#[tokio::test]
async fn a_primary_killed_then_stepped_down_mid_stream_loses_nothing() {
    let mongo = PrivateServers::up("mongodb-rs");
    let uri = mongo.var("RTU_TEST_MONGODB_RS_URI");
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let partitions = 2;
    let options = Options { mongodb_uri: Some(uri.clone()), max_batch: 200, ..Options::default() };
    let (setup, pu_topic) = setup("failover-mongodb", partitions, options).await;
    let stream = stream(6000, 600);
    let producer = produce_over(
        &setup.bootstrap,
        &setup.topic,
        stream.events.clone(),
        Duration::from_secs(24),
    );
    let mut engine = setup.start("run");

    // The primary left alone for 2 s (both secondaries killed): it applies the writes it is
    // sent but cannot replicate them; then it is killed too and the secondaries, restarted,
    // elect one of them. Restarted, the old primary rolls back what only it had: writes the
    // engine never saw acknowledged (w: majority), so it stored no offset for them and wrote
    // them again on the new primary.
    committed_at_least(&setup, partitions, 1500, Duration::from_secs(120)).await;
    let first = primary(&client, &mongo).await.expect("a primary before the kill");
    let secondaries: Vec<String> =
        mongo.members().into_iter().map(|(p, _)| p).filter(|p| *p != first).collect();
    for s in &secondaries {
        mongo.kill(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    mongo.kill(&first);
    for s in &secondaries {
        mongo.restart(s);
    }
    let (second, election) = new_primary(&client, &mongo, &first).await;
    println!(
        "kill -9 of primary {first} alone for 2 s: {second} elected {:.1}s after its restart",
        election.as_secs_f64()
    );
    mongo.restart(&first);

    committed_at_least(&setup, partitions, 3500, Duration::from_secs(180)).await;
    let member = mongo.members().into_iter().find(|(p, _)| *p == second).unwrap().1;
    let credentials = uri.split_once('@').unwrap().0;
    let admin_uri = format!("{credentials}@{member}/?directConnection=true&authSource=admin");
    let direct = mongodb::Client::with_uri_str(&admin_uri).await.unwrap();
    let command = doc! { "replSetStepDown": 20, "secondaryCatchUpPeriodSecs": 5 };
    let stepdown = direct.database("admin").run_command(command).await;
    let (third, election) = new_primary(&client, &mongo, &second).await;
    println!(
        "replSetStepDown of {second} ({}): {third} primary {:.1}s later",
        stepdown.map_or_else(|e| format!("reply: {e}"), |_| "ok".into()),
        election.as_secs_f64()
    );

    producer.await.unwrap();
    let verdict = verify(&setup, partitions, &pu_topic, &stream).await;
    let rolled_back =
        eventually("the old primary's rollback files", Duration::from_secs(60), || async {
            let files = mongo.data_files(&first, "rollback");
            (!files.is_empty()).then_some(files)
        })
        .await;
    println!(
        "mongodb failover: {verdict}; retries: mongodb_write {}, outputs {}; rolled back on {first}: {} file(s) {:?}",
        retries(&engine, "mongodb_write").await,
        retries(&engine, "outputs").await,
        rolled_back.len(),
        rolled_back.iter().filter_map(|f| f.parent()?.file_name()).collect::<Vec<_>>()
    );
    verdict.assert_clean();
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn the_kafka_broker_killed_and_restarted_mid_stream_loses_nothing() {
    let kafka = PrivateServers::up("kafka");
    let bootstrap = kafka.var("RTU_TEST_KAFKA_BOOTSTRAP");
    let partitions = 2;
    let options =
        Options { bootstrap: Some(bootstrap.clone()), max_batch: 200, ..Options::default() };
    let (setup, pu_topic) = setup("failover-kafka", partitions, options).await;
    let stream = stream(6000, 600);
    let producer =
        produce_over(&bootstrap, &setup.topic, stream.events.clone(), Duration::from_secs(20));
    let mut engine = setup.start("run");

    committed_at_least(&setup, partitions, 1500, Duration::from_secs(120)).await;
    kafka.kill("kafka");
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.restart("kafka");
    println!(
        "kafka broker killed (SIGKILL), restarted and ready after {:.1}s",
        down.elapsed().as_secs_f64()
    );

    producer.await.unwrap();
    let verdict = verify(&setup, partitions, &pu_topic, &stream).await;
    println!(
        "kafka broker restart: {verdict}; retries: kafka_poll {}, outputs {}",
        retries(&engine, "kafka_poll").await,
        retries(&engine, "outputs").await
    );
    verdict.assert_clean();
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn two_workers_killed_every_few_seconds_lose_nothing() {
    let events = sized("RTU_KILLS_EVENTS", 20_000) as usize;
    let kills = sized("RTU_KILLS_KILLS", 12);
    let every = Duration::from_millis(sized("RTU_KILLS_EVERY_MS", 2500));
    let partitions = 4;
    let options = Options {
        kafka_config: vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("heartbeat.interval.ms".into(), "1000".into()),
        ],
        ..Options::default()
    };
    let (setup, pu_topic) = setup("kills", partitions, options).await;
    let stream = stream(events, (events / 4).max(100));
    let producer =
        produce_over(&setup.bootstrap, &setup.topic, stream.events.clone(), every * kills as u32);
    let mut workers = [setup.start("w0-0"), setup.start("w1-0")];
    let started = Instant::now();
    for n in 1..=kills {
        tokio::time::sleep(every).await;
        let w = (n % 2) as usize;
        assert!(!signal_and_wait(&mut workers[w], "KILL").success());
        workers[w] = setup.start(&format!("w{w}-{n}"));
    }
    let during = progress(&setup, partitions);
    println!(
        "{kills} kills in {:.0}s; committed {} of {} produced when the last kill came",
        started.elapsed().as_secs_f64(),
        during.0,
        during.1
    );
    producer.await.unwrap();
    let verdict = verify(&setup, partitions, &pu_topic, &stream).await;
    println!(
        "{kills} SIGKILLs of two workers: {verdict}; drained {:.0}s after the start",
        started.elapsed().as_secs_f64()
    );
    verdict.assert_clean();
    for worker in &mut workers {
        assert!(signal_and_wait(worker, "TERM").success());
    }
    setup.finish().await;
}
