//! Consumer lag, read by the operator from Kafka itself (docs/autoscaling.md#the-lag): the
//! partitions of an updater's topics (metadata), the consumer group's committed offsets
//! (OffsetFetch) and each partition's first and end offsets (ListOffsets), with the
//! SystemOfRecord's connection, credentials and TLS. One client per updater is kept between
//! reads. A read that misses any topic or partition is an error naming it: a lag the operator
//! did not see is never taken for zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::api::TopicLag;
use crate::config::{KafkaConfig, OffsetReset, SecretError};
use crate::engine::kafka::{SecretValues, client_config_with};

/// Why the lag could not be read (whole).
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// The client settings could not be made (a secret value is missing).
    #[error("client settings: {0}")]
    Settings(#[from] SecretError),
    /// librdkafka refused the settings.
    #[error("create the Kafka client: {0}")]
    CreateClient(KafkaError),
    /// The topic's metadata could not be read (brokers unreachable, authentication).
    #[error("read the metadata of topic {topic}: {source}")]
    Metadata {
        /// The topic.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// The broker answered that the topic cannot be used.
    #[error("topic {topic}: {error}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's error.
        error: String,
    },
    /// The consumer group's committed offsets could not be read.
    #[error("read the committed offsets of group {group}: {source}")]
    Committed {
        /// The consumer group.
        group: String,
        /// Why.
        source: KafkaError,
    },
    /// The first or end offsets could not be read.
    #[error("read the {which} offsets of {topics}: {source}")]
    Offsets {
        /// `end` or `first`.
        which: &'static str,
        /// The topics.
        topics: String,
        /// Why.
        source: KafkaError,
    },
    /// One partition's answer was an error (a partial read).
    #[error("{what} of {topic} partition {partition}: {error}")]
    Partition {
        /// What was read.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The broker's error.
        error: String,
    },
    /// A request failed, and librdkafka had said why beforehand (a refused login, a TLS
    /// handshake, an unknown host): both.
    #[error("{source}; the client reported: {reported}")]
    Reported {
        /// The failed request.
        source: Box<LagError>,
        /// The errors librdkafka queued during the read.
        reported: String,
    },
    /// The blocking read task ended abnormally.
    #[error("the lag read task: {0}")]
    Task(String),
}

/// The lag of an updater, read whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// The lag over every topic.
    pub total: i64,
    /// Each topic's lag and partitions, in the order asked.
    pub topics: Vec<TopicLag>,
    /// The partitions of every topic.
    pub partitions: i32,
}

/// What to read for one updater.
#[derive(Debug, Clone)]
pub struct Query {
    /// The Kafka connection and the consumer group, as the workers have them.
    pub kafka: KafkaConfig,
    /// Secret values by the file path the worker config names.
    pub secrets: BTreeMap<String, String>,
    /// The topics the updater consumes.
    pub topics: Vec<String>,
    /// Longest wait for each request.
    pub timeout: Duration,
}

/// Reads lag; keeps one client per updater while its settings stay the same.
#[derive(Default)]
pub struct LagReader {
    clients: Mutex<HashMap<String, (String, Arc<LagConsumer>)>>,
}

type LagConsumer = BaseConsumer;

/// Drains the client's queue (it is never subscribed, so only librdkafka's error events are
/// there; left alone they would pile up) and says what they were: a failed request only says
/// `BrokerTransportFailure`, these say it was the SASL login or the TLS handshake.
fn drain(client: &LagConsumer, wait: Duration) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut timeout = wait;
    // Bounded: a queue refilled as fast as it is read cannot hold the read forever.
    for _ in 0..1000 {
        match client.poll(timeout) {
            Some(Err(e)) => {
                // `MessageConsumption(code)`: the code alone says it (it was no message).
                let text = e.rdkafka_error_code().map_or_else(|| e.to_string(), |c| c.to_string());
                if !seen.contains(&text) {
                    seen.push(text);
                }
            }
            Some(Ok(_)) => {}
            None => break,
        }
        timeout = Duration::ZERO;
    }
    (!seen.is_empty()).then(|| seen.join("; "))
}

impl LagReader {
    /// The lag of the updater `key` (`namespace/name`).
    pub async fn read(&self, key: &str, query: Query) -> Result<Reading, LagError> {
        let client = self.client(key, &query)?;
        let Query { kafka, topics, timeout, .. } = query;
        tokio::task::spawn_blocking(move || {
            drain(&client, Duration::ZERO);
            match read_lag(&client, &kafka.group_id, kafka.auto_offset_reset, &topics, timeout) {
                Ok(reading) => Ok(reading),
                Err(source) => match drain(&client, Duration::from_millis(200)) {
                    Some(reported) => {
                        Err(LagError::Reported { source: Box::new(source), reported })
                    }
                    None => Err(source),
                },
            }
        })
        .await
        .map_err(|e| LagError::Task(e.to_string()))?
    }

    /// Drops the client of an updater that is gone or no longer autoscaled.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<LagConsumer>)>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn client(&self, key: &str, query: &Query) -> Result<Arc<LagConsumer>, LagError> {
        let config = settings(&query.kafka, &query.secrets)?;
        let fingerprint = fingerprint(&config);
        let mut clients = self.lock();
        if let Some((known, client)) = clients.get(key)
            && *known == fingerprint
        {
            return Ok(client.clone());
        }
        let client: Arc<LagConsumer> = Arc::new(config.create().map_err(LagError::CreateClient)?);
        clients.insert(key.to_string(), (fingerprint, client.clone()));
        Ok(client)
    }
}

/// A digest of every setting, the secret ones included (`config_map` masks those, and a
/// rotated password must give a new client), so no credential is kept in clear beside the
/// client.
fn fingerprint(config: &ClientConfig) -> String {
    let mut digest = Sha256::new();
    for key in config.config_map().keys() {
        let value = config.get(key).unwrap_or_default();
        for part in [key.as_bytes(), value.as_bytes()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The lag client's settings: the workers' connection and group, never joining the group nor
/// committing (it only reads offsets).
fn settings(
    kafka: &KafkaConfig,
    secrets: &BTreeMap<String, String>,
) -> Result<ClientConfig, LagError> {
    let mut config = client_config_with(kafka, SecretValues::Given(secrets))?;
    config
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("client.id", "rtu-operator-lag");
    Ok(config)
}

fn read_lag(
    client: &LagConsumer,
    group: &str,
    reset: OffsetReset,
    topics: &[String],
    timeout: Duration,
) -> Result<Reading, LagError> {
    let mut partitions = TopicPartitionList::new();
    let mut counts = Vec::with_capacity(topics.len());
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|source| LagError::Metadata { topic: topic.clone(), source })?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let Some(found) = found else {
            return Err(LagError::Topic {
                topic: topic.clone(),
                error: "absent from the metadata".into(),
            });
        };
        if let Some(error) = found.error() {
            return Err(LagError::Topic { topic: topic.clone(), error: format!("{error:?}") });
        }
        if found.partitions().is_empty() {
            return Err(LagError::Topic { topic: topic.clone(), error: "no partitions".into() });
        }
        for p in found.partitions() {
            partitions.add_partition(topic, p.id());
        }
        counts.push(found.partitions().len());
    }
    let committed = committed_offsets(client, group, &partitions, timeout)?;
    let ends = offsets(client, &partitions, Offset::End, "end", timeout)?;
    let uncommitted = committed.elements().iter().any(|e| e.offset() == Offset::Invalid);
    let firsts = if uncommitted && reset == OffsetReset::Earliest {
        Some(offsets(client, &partitions, Offset::Beginning, "first", timeout)?)
    } else {
        None
    };
    let mut reading = Reading::default();
    for (topic, count) in topics.iter().zip(counts) {
        let mut lag = 0i64;
        for e in committed.elements_for_topic(topic) {
            let partition = e.partition();
            check(e.error(), "the committed offset", topic, partition)?;
            let end = offset_of(&ends, topic, partition, "the end offset")?;
            let from = match e.offset() {
                Offset::Offset(n) => n,
                // Nothing committed: the workers will start where autoOffsetReset says.
                _ => match &firsts {
                    Some(firsts) => offset_of(firsts, topic, partition, "the first offset")?,
                    None => end,
                },
            };
            lag = lag.saturating_add((end - from).max(0));
        }
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        reading.total = reading.total.saturating_add(lag);
        reading.partitions = reading.partitions.saturating_add(count);
        reading.topics.push(TopicLag { topic: topic.clone(), partitions: count, lag });
    }
    Ok(reading)
}

/// The group's committed offsets; asked again (3 times at most, 300 ms apart) while the
/// group's coordinator is moving or loading, which a broker that just started or a new group
/// answers for a moment.
fn committed_offsets(
    client: &LagConsumer,
    group: &str,
    partitions: &TopicPartitionList,
    timeout: Duration,
) -> Result<TopicPartitionList, LagError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.committed_offsets(partitions.clone(), timeout) {
            Ok(list) => return Ok(list),
            // librdkafka's `rd_kafka_committed` error comes back as `MetadataFetch`.
            Err(KafkaError::MetadataFetch(code) | KafkaError::OffsetFetch(code))
                if attempt < 3 && coordinator_moving(code) =>
            {
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(source) => return Err(LagError::Committed { group: group.to_string(), source }),
        }
    }
}

fn coordinator_moving(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
    )
}

/// The offsets at `at` (`End`: the next offset to be written; `Beginning`: the first kept) of
/// every partition, in one ListOffsets round.
fn offsets(
    client: &LagConsumer,
    partitions: &TopicPartitionList,
    at: Offset,
    which: &'static str,
    timeout: Duration,
) -> Result<TopicPartitionList, LagError> {
    let mut query = partitions.clone();
    query.set_all_offsets(at).map_err(|source| offsets_error(partitions, which, source))?;
    client
        .offsets_for_times(query, timeout)
        .map_err(|source| offsets_error(partitions, which, source))
}

fn offsets_error(
    partitions: &TopicPartitionList,
    which: &'static str,
    source: KafkaError,
) -> LagError {
    let mut topics: Vec<String> =
        partitions.elements().iter().map(|e| e.topic().to_string()).collect();
    topics.dedup();
    LagError::Offsets { which, topics: topics.join(", "), source }
}

fn offset_of(
    list: &TopicPartitionList,
    topic: &str,
    partition: i32,
    what: &'static str,
) -> Result<i64, LagError> {
    let partition_error =
        |error: String| LagError::Partition { what, topic: topic.to_string(), partition, error };
    let e = list
        .find_partition(topic, partition)
        .ok_or_else(|| partition_error("not answered".into()))?;
    check(e.error(), what, topic, partition)?;
    match e.offset() {
        Offset::Offset(n) => Ok(n),
        other => Err(partition_error(format!("answered {other:?}"))),
    }
}

fn check(
    result: rdkafka::error::KafkaResult<()>,
    what: &'static str,
    topic: &str,
    partition: i32,
) -> Result<(), LagError> {
    result.map_err(|e| LagError::Partition {
        what,
        topic: topic.to_string(),
        partition,
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_a_secret_value() {
        let mut a = ClientConfig::new();
        a.set("bootstrap.servers", "b:9092").set("sasl.password", "one");
        let mut b = a.clone();
        b.set("sasl.password", "two");
        assert_ne!(fingerprint(&a), fingerprint(&b), "config_map masks the password");
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert!(!fingerprint(&a).contains("one"));
    }
}
