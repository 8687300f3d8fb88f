//! `errorPolicy: deadLetter` (docs/failures.md): a message the engine cannot process is produced to the
//! dead-letter topic with its key, value and headers unchanged plus `rtu-dlq-*` headers saying
//! why and where it came from; only once that record is acknowledged (acks=all, idempotent
//! producer) is the message done. Transient produce failures are retried with back-off;
//! permanent ones (topic missing, not authorised, record too large) are returned so the caller
//! falls back to `stop`.

use crate::engine::code::ErrorCode;
use std::time::Duration;

use mongodb::bson::DateTime;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::config::{KafkaConfig, SecretError};
use crate::engine::backoff::Backoff;
use crate::engine::kafka::producer_config;

/// Longest `rtu-dlq-message` header, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// Why a record could not be dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The producer could not be created.
    #[error("dead-letter producer: {0}")]
    CreateProducer(KafkaError),
    /// A secret of the Kafka connection could not be read.
    #[error(transparent)]
    ReadSecret(#[from] SecretError),
    /// The broker refused the record for good (retrying would not help).
    #[error("dead-letter topic {topic}: {source}")]
    Produce {
        /// The dead-letter topic.
        topic: String,
        /// The broker's answer.
        source: KafkaError,
    },
}

/// Why a message is dead-lettered, and who says so.
pub struct DeadLetterReason<'a> {
    /// The docs/failures.md code, e.g. `MALFORMED_VALUE`.
    pub code: ErrorCode,
    /// The explanation (truncated to 1 KiB in the header).
    pub reason: &'a str,
    /// The projection the message was for (empty when unknown).
    pub projection: &'a str,
}

/// The dead-letter producer of one engine.
pub struct DeadLetter {
    producer: FutureProducer,
    topic: String,
    rtu: String,
    group: String,
}

impl DeadLetter {
    /// A producer for `topic`; `rtu` and the consumer group go into every record's headers.
    pub fn new(kafka: &KafkaConfig, topic: &str, rtu: &str) -> Result<Self, DeadLetterError> {
        let producer = producer_config(kafka)?.create().map_err(DeadLetterError::CreateProducer)?;
        Ok(DeadLetter {
            producer,
            topic: topic.to_string(),
            rtu: rtu.to_string(),
            group: kafka.group_id.clone(),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `msg` to the dead-letter topic and waits for the acknowledgement, retrying
    /// transient failures (back-off 200 ms doubling to 30 s; `on_retry` is told each time).
    pub async fn send(
        &self,
        msg: &OwnedMessage,
        failure: &DeadLetterReason<'_>,
        mut on_retry: impl FnMut(&KafkaError),
    ) -> Result<(), DeadLetterError> {
        let headers = self.headers(msg, failure);
        let mut backoff = Backoff::default();
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers.clone());
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            if let Some(value) = msg.payload() {
                record = record.payload(value);
            }
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) if is_permanent(&e) => {
                    return Err(DeadLetterError::Produce { topic: self.topic.clone(), source: e });
                }
                Err((e, _)) => {
                    let delay = backoff.next_delay();
                    warn!(topic = %self.topic, error = %e, retry_in_ms = delay.as_millis() as u64, "dead-letter produce failed; retrying");
                    on_retry(&e);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The source record's headers, then the `rtu-dlq-*` ones.
    fn headers(&self, msg: &OwnedMessage, failure: &DeadLetterReason<'_>) -> OwnedHeaders {
        let source: Vec<(String, Option<Vec<u8>>)> = msg
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        let mut headers = OwnedHeaders::new_with_capacity(source.len() + 10);
        for (key, value) in &source {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let failed_at = DateTime::now().try_to_rfc3339_string().unwrap_or_default();
        let added = [
            ("rtu-dlq-reason", failure.code.to_string()),
            ("rtu-dlq-message", truncate(failure.reason, MAX_REASON_BYTES).to_string()),
            ("rtu-dlq-source-topic", msg.topic().to_string()),
            ("rtu-dlq-source-partition", msg.partition().to_string()),
            ("rtu-dlq-source-offset", msg.offset().to_string()),
            ("rtu-dlq-source-timestamp", msg.timestamp().to_millis().unwrap_or(-1).to_string()),
            ("rtu-dlq-projection", failure.projection.to_string()),
            ("rtu-dlq-rtu", self.rtu.clone()),
            ("rtu-dlq-consumer-group", self.group.clone()),
            ("rtu-dlq-failed-at", failed_at),
        ];
        for (key, value) in &added {
            headers = headers.insert(Header { key, value: Some(value.as_str()) });
        }
        headers
    }
}

/// Broker answers that retrying cannot fix.
fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::UnknownTopic
                | C::UnknownTopicOrPartition
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::InvalidTopic
        )
    )
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc", 1024), "abc");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate(&long, 1024);
        assert_eq!(cut.len(), 1024);
        assert_eq!(truncate("aé", 2), "a", "a 2-byte character is not split");
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let permanent = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        let transient = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(is_permanent(&permanent));
        assert!(!is_permanent(&transient));
        assert!(is_permanent(&KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic)));
    }
}
