//! librdkafka client settings from the engine config: connection, security with secrets read
//! from their files or variables, and the user's pass-through properties.

use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, KafkaProtocol, OffsetReset, SaslMechanism, SecretError};

/// The settings every client (consumer, producers) of this engine shares.
pub fn client_config(kafka: &KafkaConfig) -> Result<ClientConfig, SecretError> {
    let mut config = ClientConfig::new();
    for (key, value) in &kafka.config {
        config.set(key, value);
    }
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    let security = &kafka.security;
    let protocol = match security.protocol {
        KafkaProtocol::Plaintext => "plaintext",
        KafkaProtocol::Ssl => "ssl",
        KafkaProtocol::SaslPlaintext => "sasl_plaintext",
        KafkaProtocol::SaslSsl => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(sasl) = &security.sasl {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        config
            .set("sasl.mechanisms", mechanism)
            .set("sasl.username", sasl.username.read("kafka.security.sasl.username")?)
            .set("sasl.password", sasl.password.read("kafka.security.sasl.password")?);
    }
    if let Some(ca) = &security.ca_file {
        config.set("ssl.ca.location", ca);
    }
    Ok(config)
}

/// The consumer's settings: at least once, offsets stored by the engine after the write of a
/// message is acknowledged and committed by librdkafka every `commit_interval_ms` (and on
/// revocation and close).
pub fn consumer_config(
    kafka: &KafkaConfig,
    commit_interval_ms: u32,
) -> Result<ClientConfig, SecretError> {
    let mut config = client_config(kafka)?;
    let reset = match kafka.auto_offset_reset {
        OffsetReset::Earliest => "earliest",
        OffsetReset::Latest => "latest",
    };
    config
        .set("group.id", &kafka.group_id)
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", commit_interval_ms.to_string())
        .set("partition.assignment.strategy", "cooperative-sticky");
    Ok(config)
}
