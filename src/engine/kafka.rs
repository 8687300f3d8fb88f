//! librdkafka client settings from the engine config: connection, security with secrets read
//! from their files or variables, and the user's pass-through properties.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::{
    KafkaConfig, KafkaProtocol, OffsetReset, SaslMechanism, SecretError, SecretSource,
};

/// Where the secret values of the settings come from.
#[derive(Debug, Clone, Copy)]
pub enum SecretValues<'a> {
    /// The files and variables the config names (a worker, where the Secrets are mounted).
    Read,
    /// Given by file path (the operator, which reads the Secrets from the API server and has
    /// no files); a CA is then passed as PEM text.
    Given(&'a BTreeMap<String, String>),
}

impl SecretValues<'_> {
    fn value(self, source: &SecretSource, field: &'static str) -> Result<String, SecretError> {
        match (self, &source.file) {
            (SecretValues::Read, _) => source.read(field),
            (SecretValues::Given(values), Some(path)) => values
                .get(path)
                .cloned()
                .ok_or_else(|| SecretError::NotGiven { field, path: path.clone() }),
            (SecretValues::Given(_), None) => Err(SecretError::Unset { field }),
        }
    }
}

/// The settings every client (consumer, producers) of this engine shares.
pub fn client_config(kafka: &KafkaConfig) -> Result<ClientConfig, SecretError> {
    client_config_with(kafka, SecretValues::Read)
}

/// [`client_config`], with the secret values from `secrets`.
pub fn client_config_with(
    kafka: &KafkaConfig,
    secrets: SecretValues<'_>,
) -> Result<ClientConfig, SecretError> {
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
            .set("sasl.username", secrets.value(&sasl.username, "kafka.security.sasl.username")?)
            .set("sasl.password", secrets.value(&sasl.password, "kafka.security.sasl.password")?);
    }
    if let Some(ca) = &security.ca_file {
        match secrets {
            SecretValues::Read => config.set("ssl.ca.location", ca),
            SecretValues::Given(values) => config.set(
                "ssl.ca.pem",
                values.get(ca).ok_or_else(|| SecretError::NotGiven {
                    field: "kafka.security.caFile",
                    path: ca.clone(),
                })?,
            ),
        };
    }
    Ok(config)
}

/// Prefetch limit of the consumer queue, in KiB (a default; `kafka.config` may override it).
const PREFETCH_KEY: &str = "queued.max.messages.kbytes";
/// Messages librdkafka tries to keep prefetched per partition (a default, as above).
const PREFETCH_MESSAGES_KEY: &str = "queued.min.messages";

/// The consumer's settings: at least once, offsets stored by the engine after the write of a
/// message is acknowledged and committed by librdkafka every `commit_interval_ms` (and on
/// revocation and close); statistics (lag, committed offsets) every `stats_interval_ms`.
pub fn consumer_config(
    kafka: &KafkaConfig,
    commit_interval_ms: u32,
    stats_interval_ms: u32,
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
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", stats_interval_ms.to_string());
    // librdkafka prefetches up to 64 MiB and 100,000 messages by default; two batches (the one
    // being written and the next) need a few MiB. Measured on the benchmark: peak RSS 158 MiB
    // with 8 MiB, 100 MiB with 2 MiB / 5,000 messages, at the same rate.
    for (key, value) in [(PREFETCH_KEY, "2048"), (PREFETCH_MESSAGES_KEY, "5000")] {
        if !kafka.config.contains_key(key) {
            config.set(key, value);
        }
    }
    Ok(config)
}

/// The dead-letter producer's settings: every record acknowledged by all in-sync replicas, no
/// duplicates from the producer's own retries.
pub fn producer_config(kafka: &KafkaConfig) -> Result<ClientConfig, SecretError> {
    let mut config = client_config(kafka)?;
    config.set("acks", "all").set("enable.idempotence", "true");
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaConfig;

    fn kafka(config: &[(&str, &str)]) -> KafkaConfig {
        serde_json::from_value(serde_json::json!({
            "bootstrapServers": "b:9092",
            "groupId": "g",
            "config": config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn consumer_settings_keep_offsets_under_engine_control() {
        let c = consumer_config(&kafka(&[("session.timeout.ms", "30000")]), 250, 5000).unwrap();
        for (key, value) in [
            ("bootstrap.servers", "b:9092"),
            ("group.id", "g"),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("auto.commit.interval.ms", "250"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("security.protocol", "plaintext"),
            ("session.timeout.ms", "30000"),
            ("statistics.interval.ms", "5000"),
            (PREFETCH_KEY, "2048"),
            (PREFETCH_MESSAGES_KEY, "5000"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
        let c = consumer_config(&kafka(&[(PREFETCH_KEY, "1024")]), 250, 5000).unwrap();
        assert_eq!(c.get(PREFETCH_KEY), Some("1024"), "the user's value wins for a default");
    }

    #[test]
    fn dead_letter_producer_waits_for_all_replicas() {
        let c = producer_config(&kafka(&[("linger.ms", "5")])).unwrap();
        for (key, value) in [("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5")] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
    }
}
