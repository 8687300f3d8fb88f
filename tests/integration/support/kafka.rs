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
