//! Smoke tests of the real Kafka broker: keyed messages with headers across partitions, a
//! consumer group that commits and resumes at the committed offset, and the SCRAM-SHA-512
//! listener with the right and with a wrong password.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset};

use crate::support::kafka::{create_topic, plaintext_config, scram_config, scram_password};
use crate::support::unique_name;

const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

/// One message as read back: where it landed and what it carried.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Received {
    key: String,
    seq: u32,
    partition: i32,
    offset: i64,
    headers: BTreeMap<String, String>,
}

/// Produces messages `seqs` round-robin over `KEYS`, each with headers `seq` and `batch`;
/// returns key -> partition of every delivery.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    batch: &str,
    seqs: std::ops::Range<u32>,
) -> Vec<(String, i32)> {
    let mut deliveries = Vec::new();
    for seq in seqs {
        let key = KEYS[seq as usize % KEYS.len()];
        let payload = format!("{{\"seq\":{seq}}}");
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "seq", value: Some(seq_text.as_str()) })
            .insert(Header { key: "batch", value: Some(batch) });
        let record = FutureRecord::to(topic).key(key).payload(&payload).headers(headers);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("delivery of {key}#{seq} to {topic} failed: {e}"));
        deliveries.push((key.to_string(), delivery.partition));
    }
    deliveries
}

fn consumer_config(mut config: ClientConfig, group: &str) -> ClientConfig {
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000");
    config
}

/// Reads exactly `n` messages (failing after 60 s), decoding key, seq header and position.
async fn consume<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    n: usize,
) -> Vec<Received> {
    let mut stream = consumer.stream();
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => panic!("consumer error after {} of {n} messages: {e}", got.len()),
            Ok(None) => panic!("consumer stream ended after {} of {n} messages", got.len()),
            Err(_) => panic!("no message within 60s after {} of {n} messages", got.len()),
        };
        let headers: BTreeMap<String, String> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = String::from_utf8_lossy(msg.key().expect("message key")).into_owned();
        let seq: u32 = headers["seq"].parse().expect("seq header");
        let payload = String::from_utf8_lossy(msg.payload().expect("payload")).into_owned();
        assert_eq!(payload, format!("{{\"seq\":{seq}}}"), "payload of {key}#{seq}");
        got.push(Received { key, seq, partition: msg.partition(), offset: msg.offset(), headers });
    }
    got
}

/// Keys keep their partition and their order; offsets grow within a partition.
fn assert_order(got: &[Received]) {
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    let mut last_seq: BTreeMap<&str, u32> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for m in got {
        let p = *partition_of.entry(&m.key).or_insert(m.partition);
        assert_eq!(p, m.partition, "key {} moved partition", m.key);
        if let Some(prev) = last_seq.insert(&m.key, m.seq) {
            assert!(prev < m.seq, "key {} out of order: {prev} then {}", m.key, m.seq);
        }
        if let Some(prev) = last_offset.insert(m.partition, m.offset) {
            assert!(prev < m.offset, "partition {} offsets {prev} then {}", m.partition, m.offset);
        }
    }
}

#[tokio::test]
async fn kafka_group_commits_and_resumes_at_committed_offset() {
    let topic = unique_name("smoke-kafka");
    let group = unique_name("smoke-group");
    create_topic(&topic, 3).await;
    let producer: FutureProducer =
        plaintext_config().set("acks", "all").set("enable.idempotence", "true").create().unwrap();

    let deliveries = produce(&producer, &topic, "a", 0..30).await;
    let partitions: BTreeSet<i32> = deliveries.iter().map(|(_, p)| *p).collect();
    assert!(partitions.len() > 1, "6 keys all landed on one partition: {deliveries:?}");

    let consumer: StreamConsumer = consumer_config(plaintext_config(), &group).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let first = consume(&consumer, 30).await;
    assert_eq!(first.iter().map(|m| m.seq).collect::<BTreeSet<_>>(), (0..30).collect());
    assert!(first.iter().all(|m| m.headers["batch"] == "a"), "headers lost: {first:?}");
    assert_order(&first);
    for m in &first {
        let expected = deliveries[m.seq as usize].1;
        assert_eq!(m.partition, expected, "{}#{} read from another partition", m.key, m.seq);
    }

    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    // Read the committed offsets into plain values: a TopicPartitionList from librdkafka holds
    // partition references, and one still alive makes closing the consumer block forever.
    let committed: BTreeMap<i32, Offset> = {
        let list = consumer.committed(Duration::from_secs(10)).unwrap();
        list.elements_for_topic(&topic).iter().map(|e| (e.partition(), e.offset())).collect()
    };
    let mut next_offsets = BTreeMap::new();
    for m in &first {
        next_offsets.insert(m.partition, m.offset + 1);
    }
    let expected: BTreeMap<i32, Offset> =
        next_offsets.iter().map(|(p, next)| (*p, Offset::Offset(*next))).collect();
    assert_eq!(committed, expected, "committed offsets");
    drop(consumer);

    produce(&producer, &topic, "b", 30..45).await;
    let resumed: StreamConsumer = consumer_config(plaintext_config(), &group).create().unwrap();
    resumed.subscribe(&[&topic]).unwrap();
    let second = consume(&resumed, 15).await;
    // Within a partition batch a precedes batch b, so a replay of anything already committed
    // would be among these 15.
    assert_eq!(second.iter().map(|m| m.seq).collect::<BTreeSet<_>>(), (30..45).collect());
    for m in &second {
        assert!(m.offset >= next_offsets[&m.partition], "re-read committed message {m:?}");
    }
    assert_order(&second);
}

#[tokio::test]
async fn kafka_scram_listener_accepts_right_password() {
    let topic = unique_name("smoke-scram");
    create_topic(&topic, 1).await;
    let producer: FutureProducer = scram_config(scram_password()).create().unwrap();
    produce(&producer, &topic, "scram", 0..5).await;

    let group = unique_name("smoke-scram-group");
    let consumer: StreamConsumer =
        consumer_config(scram_config(scram_password()), &group).create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let got = consume(&consumer, 5).await;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(got.iter().all(|m| m.headers["batch"] == "scram"));
}

/// Keeps the errors librdkafka reports for the whole client.
#[derive(Clone, Default)]
struct ErrorLog(Arc<Mutex<Vec<(KafkaError, String)>>>);

impl ClientContext for ErrorLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push((error, reason.to_string()));
    }
}

#[tokio::test]
async fn kafka_scram_listener_refuses_wrong_password() {
    let topic = unique_name("smoke-scram-bad");
    create_topic(&topic, 1).await;
    let errors = ErrorLog::default();
    let producer: FutureProducer<ErrorLog> = scram_config("not-the-password")
        .set("message.timeout.ms", "8000")
        .create_with_context(errors.clone())
        .unwrap();
    let record = FutureRecord::to(&topic).key("k").payload("v");
    let result = producer.send(record, Duration::from_secs(20)).await;
    assert!(result.is_err(), "a wrong SCRAM password delivered a message: {result:?}");
    let seen = errors.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(e, _)| e.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication)),
        "no authentication error reported, got: {seen:?}"
    );
}
