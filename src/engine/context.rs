//! What librdkafka's callbacks tell the engine: partition assignments and revocations (logged,
//! counted for `/readyz`, and forgetting the error-policy halts of revoked partitions so their
//! next owner, or this worker after a rebalance, meets the failing record again), broker
//! reachability, consumer lag and committed offsets from the statistics, and the result of
//! every offset commit. Also the
//! halts themselves: the partitions whose messages the error policy says not to process.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::engine::metrics::{EngineMonitor, PartitionLabels, ResultLabel};

/// Partitions the error policy has halted (docs/failures.md): `stop` halts the whole worker,
/// `pauseTopic` the failing topic's partitions. In memory only.
#[derive(Default)]
pub struct Halts {
    stopped: AtomicBool,
    partitions: Mutex<BTreeSet<(String, i32)>>,
}

impl Halts {
    fn partitions(&self) -> MutexGuard<'_, BTreeSet<(String, i32)>> {
        self.partitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `errorPolicy: stop` has stopped consumption; true the first time.
    pub fn stop(&self) -> bool {
        !self.stopped.swap(true, Ordering::Relaxed)
    }

    /// Whether consumption is stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Halts these partitions.
    pub fn halt(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.partitions().extend(partitions);
    }

    /// The halted partitions now (empty almost always, so cheap to copy).
    pub fn halted(&self) -> BTreeSet<(String, i32)> {
        let partitions = self.partitions();
        if partitions.is_empty() { BTreeSet::new() } else { partitions.clone() }
    }

    fn forget(&self, list: &TopicPartitionList) {
        let mut partitions = self.partitions();
        if partitions.is_empty() {
            return;
        }
        for e in list.elements() {
            partitions.remove(&(e.topic().to_string(), e.partition()));
        }
    }
}

/// The consumer's librdkafka context.
pub struct EngineContext {
    /// Metrics and readiness.
    pub monitor: Arc<EngineMonitor>,
    /// The error policy's halts.
    pub halts: Arc<Halts>,
}

impl ClientContext for EngineContext {
    fn stats(&self, statistics: Statistics) {
        // Kafka is reachable while at least one broker connection is up.
        let health = &self.monitor.health;
        if statistics.brokers.values().any(|b| b.state == "UP") {
            health.recovered("kafka");
        } else {
            health.failing("kafka");
        }
        let metrics = &self.monitor.metrics;
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; "none" means not fetched.
                if partition < 0 || p.fetch_state == "none" {
                    continue;
                }
                let labels = PartitionLabels { topic: topic.clone(), partition };
                if p.consumer_lag >= 0 {
                    metrics.consumer_lag.get_or_create(&labels).set(p.consumer_lag);
                }
                if p.committed_offset >= 0 {
                    metrics.committed_offset.get_or_create(&labels).set(p.committed_offset);
                }
            }
        }
    }
}

fn names(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

impl ConsumerContext for EngineContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let health = &self.monitor.health;
        let metrics = &self.monitor.metrics;
        match rebalance {
            Rebalance::Assign(list) => {
                info!(partitions = %names(list), "partitions assigned");
                health.partitions_changed(list.count() as i64);
            }
            Rebalance::Revoke(list) => {
                info!(partitions = %names(list), "partitions revoked");
                health.partitions_changed(-(list.count() as i64));
                self.halts.forget(list);
                for e in list.elements() {
                    let labels =
                        PartitionLabels { topic: e.topic().to_string(), partition: e.partition() };
                    metrics.consumer_lag.remove(&labels);
                    metrics.committed_offset.remove(&labels);
                }
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        metrics.assigned_partitions.set(health.assigned() as i64);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let result = match result {
            Ok(()) => "ok",
            // Nothing new to commit: not a commit at all.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => return,
            Err(e) => {
                warn!(error = %e, "offset commit failed; the next one retries");
                "error"
            }
        };
        self.monitor.metrics.commits.get_or_create(&ResultLabel { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_forgets_the_halts_of_revoked_partitions_only() {
        let halts = Halts::default();
        halts.halt([("a".to_string(), 0), ("a".to_string(), 1)]);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("a", 1);
        halts.forget(&revoked);
        assert_eq!(halts.halted(), BTreeSet::from([("a".to_string(), 0)]));
        assert!(halts.stop(), "first stop");
        assert!(!halts.stop(), "already stopped");
        assert!(halts.is_stopped());
    }
}
