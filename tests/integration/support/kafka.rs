//! Kafka clients for tests: PLAINTEXT and SASL/SCRAM configurations, topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use super::env;

/// A client configuration for the PLAINTEXT listener.
pub fn plaintext_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", env().var("RTU_TEST_KAFKA_BOOTSTRAP"));
    config
}

/// A client configuration for the SASL_PLAINTEXT listener as the test user, with `password`.
pub fn scram_config(password: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", env().var("RTU_TEST_KAFKA_SASL_BOOTSTRAP"))
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", env().var("RTU_TEST_KAFKA_SASL_MECHANISM"))
        .set("sasl.username", env().var("RTU_TEST_KAFKA_SASL_USERNAME"))
        .set("sasl.password", password);
    config
}

/// The test user's real password.
pub fn scram_password() -> &'static str {
    env().var("RTU_TEST_KAFKA_SASL_PASSWORD")
}

/// Creates `topic` with `partitions` partitions and waits until the broker confirms it.
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_on(env().var("RTU_TEST_KAFKA_BOOTSTRAP"), topic, partitions).await;
}

/// [`create_topic`] on the PLAINTEXT listener at `bootstrap`.
pub async fn create_topic_on(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options)
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t} failed: {e}"));
    }
}

/// One record read back from a topic: key and value bytes (`None` = null) and headers.
#[derive(Debug)]
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Read {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// The records of `topic` from its beginning: at least `n` (fewer only after 60 s), then
/// whatever else arrives until nothing came for `linger`.
pub fn read_topic(topic: &str, n: usize, linger: Duration) -> Vec<Read> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = plaintext_config()
        .set("group.id", super::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline && (out.len() < n || quiet_since.elapsed() < linger)
    {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("poll");
        quiet_since = std::time::Instant::now();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Read {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}
