//! The engine's metrics and health (docs/consumption.md#health-and-metrics): the Prometheus
//! families the consumer updates, and the readiness state (`/readyz`: the group has assigned
//! this worker its partitions, MongoDB answers, nothing is stopped or paused by the error
//! policy) the probe server ([`crate::probes`]) answers on `telemetry.host:port`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::probes::{self, Probes, ServeError};

/// Labels of `rtu_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The ingestion topic.
    pub topic: String,
    /// The projection it feeds.
    pub projection: String,
    /// `applied`, `stale`, `skipped`, `dead_lettered` or `failed`.
    pub outcome: &'static str,
}

/// Labels of a per-projection, per-operation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The projection.
    pub projection: String,
    /// `insert`, `update` or `delete`.
    pub op: &'static str,
}

/// Labels of the per-field counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    /// The projection.
    pub projection: String,
    /// The source field.
    pub field: String,
}

/// Labels of the per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A single label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// The label of `rtu_transient_retries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabel {
    /// What was retried.
    pub kind: &'static str,
}

/// A single label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The topic.
    pub topic: String,
}

/// A single label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SingleViewLabel {
    /// The single view (or, for the automatic strategy as a whole, `__automatic__`).
    pub single_view: String,
}

/// A single label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric the engine exports (names as docs/consumption.md#health-and-metrics).
pub struct Metrics {
    registry: Registry,
    /// Messages by topic, projection and outcome.
    pub messages: Family<MessageLabels, Counter>,
    /// Format-defined skips (tombstone, truncate, null value) by reason.
    pub skipped: Family<ReasonLabel, Counter>,
    /// Documents written, by projection and operation.
    pub writes: Family<WriteLabels, Counter>,
    /// Duration of one MongoDB write command group.
    pub write_duration: Histogram,
    /// Messages per batch.
    pub batch_messages: Histogram,
    /// Message fields that are not projection fields.
    pub unknown_fields: Family<FieldLabels, Counter>,
    /// Fields whose cast failed (stored as null in lenient validation).
    pub uncastable_fields: Family<FieldLabels, Counter>,
    /// Consumer-group lag per partition (high watermark minus committed offset).
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Committed offset per partition.
    pub committed_offset: Family<PartitionLabels, Gauge>,
    /// Partitions assigned to this worker.
    pub assigned_partitions: Gauge,
    /// Topics paused by `errorPolicy: pauseTopic`.
    pub paused_topics: Gauge,
    /// 1 while consumption is stopped by `errorPolicy: stop`, by reason (the error code).
    pub stopped: Family<ReasonLabel, Gauge>,
    /// Transient failures retried, by kind.
    pub transient_retries: Family<RetryLabel, Counter>,
    /// Offset commits, by result.
    pub commits: Family<ResultLabel, Counter>,
    /// pr-update events produced (acknowledged), by topic.
    pub pr_updates: Family<TopicLabel, Counter>,
    /// sv-trigger messages produced (acknowledged), by topic.
    pub sv_triggers: Family<TopicLabel, Counter>,
    /// Projection-change upserts, by single view.
    pub projection_changes: Family<SingleViewLabel, Counter>,
    /// Duration of one strategy run for a batch, by single view.
    pub strategy_duration: Family<SingleViewLabel, Histogram>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            messages: Family::default(),
            skipped: Family::default(),
            writes: Family::default(),
            write_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            unknown_fields: Family::default(),
            uncastable_fields: Family::default(),
            consumer_lag: Family::default(),
            committed_offset: Family::default(),
            assigned_partitions: Gauge::default(),
            paused_topics: Gauge::default(),
            stopped: Family::default(),
            transient_retries: Family::default(),
            commits: Family::default(),
            pr_updates: Family::default(),
            sv_triggers: Family::default(),
            projection_changes: Family::default(),
            strategy_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("rtu_messages", "Messages by outcome", metrics.messages.clone());
        r.register("rtu_skipped", "Format-defined skips by reason", metrics.skipped.clone());
        r.register("rtu_writes", "Projection writes by operation", metrics.writes.clone());
        r.register(
            "rtu_write_duration_seconds",
            "Duration of one MongoDB write command group",
            metrics.write_duration.clone(),
        );
        r.register("rtu_batch_messages", "Messages per batch", metrics.batch_messages.clone());
        r.register(
            "rtu_unknown_fields",
            "Message fields that are not projection fields",
            metrics.unknown_fields.clone(),
        );
        r.register(
            "rtu_uncastable_fields",
            "Fields whose cast failed",
            metrics.uncastable_fields.clone(),
        );
        r.register(
            "rtu_consumer_lag",
            "Messages between the committed offset and the end of the partition",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "rtu_committed_offset",
            "Committed offset per partition",
            metrics.committed_offset.clone(),
        );
        r.register(
            "rtu_assigned_partitions",
            "Partitions assigned to this worker",
            metrics.assigned_partitions.clone(),
        );
        r.register(
            "rtu_paused_topics",
            "Topics paused by errorPolicy pauseTopic",
            metrics.paused_topics.clone(),
        );
        r.register("rtu_stopped", "1 while stopped by errorPolicy stop", metrics.stopped.clone());
        r.register(
            "rtu_transient_retries",
            "Transient failures retried",
            metrics.transient_retries.clone(),
        );
        r.register("rtu_commits", "Offset commits by result", metrics.commits.clone());
        r.register("rtu_pr_updates", "pr-update events produced", metrics.pr_updates.clone());
        r.register("rtu_sv_triggers", "sv-trigger messages produced", metrics.sv_triggers.clone());
        r.register(
            "rtu_projection_changes",
            "Projection-change upserts by single view",
            metrics.projection_changes.clone(),
        );
        r.register(
            "rtu_strategy_duration_seconds",
            "Duration of one strategy run for a batch",
            metrics.strategy_duration.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// What `/readyz` depends on.
pub struct Health {
    /// The group has assigned this worker its partitions at least once (possibly none).
    joined: AtomicBool,
    /// Partitions currently assigned.
    assigned: AtomicU64,
    /// The error code that stopped consumption (errorPolicy stop).
    stopped: Mutex<Option<String>>,
    /// Topics paused by errorPolicy pauseTopic.
    paused: Mutex<BTreeSet<String>>,
    /// A configuration problem that keeps the worker from consuming (docs/failures.md class
    /// "configuration"), reported at once.
    problem: Mutex<Option<String>>,
    /// Dependencies failing right now (e.g. `mongodb`), since when.
    failing: Mutex<BTreeMap<&'static str, Instant>>,
    unhealthy_after: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Health {
    fn new(unhealthy_after: Duration) -> Self {
        Health {
            joined: AtomicBool::new(false),
            assigned: AtomicU64::new(0),
            stopped: Mutex::new(None),
            paused: Mutex::new(BTreeSet::new()),
            problem: Mutex::new(None),
            failing: Mutex::new(BTreeMap::new()),
            unhealthy_after,
        }
    }

    /// The group assigned (`delta` > 0) or revoked (`delta` < 0) partitions.
    pub fn partitions_changed(&self, delta: i64) {
        self.joined.store(true, Ordering::Relaxed);
        let _ = self.assigned.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_add_signed(delta))
        });
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Consumption stopped by the error policy, because of `code`.
    pub fn set_stopped(&self, code: &str) {
        lock(&self.stopped).get_or_insert_with(|| code.to_string());
    }

    /// Whether consumption is stopped.
    pub fn is_stopped(&self) -> bool {
        lock(&self.stopped).is_some()
    }

    /// A topic paused by the error policy; returns how many are paused.
    pub fn set_paused(&self, topic: &str) -> usize {
        let mut paused = lock(&self.paused);
        paused.insert(topic.to_string());
        paused.len()
    }

    /// A configuration problem keeps the worker from consuming (`None`: solved).
    pub fn set_problem(&self, problem: Option<String>) {
        *lock(&self.problem) = problem;
    }

    /// A dependency failed (first failure time kept).
    pub fn failing(&self, dependency: &'static str) {
        lock(&self.failing).entry(dependency).or_insert_with(Instant::now);
    }

    /// A dependency answered.
    pub fn recovered(&self, dependency: &'static str) {
        lock(&self.failing).remove(dependency);
    }

    /// `Ok(summary)` when ready, else every reason why not.
    pub fn readiness(&self) -> Result<String, Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(problem) = lock(&self.problem).as_ref() {
            reasons.push(problem.clone());
        }
        if !self.joined.load(Ordering::Relaxed) {
            reasons.push("waiting for the consumer group to assign partitions".to_string());
        }
        if let Some(code) = lock(&self.stopped).as_ref() {
            reasons.push(format!("stopped by errorPolicy stop after a {code} message error"));
        }
        for topic in lock(&self.paused).iter() {
            reasons.push(format!("topic {topic} paused by errorPolicy pauseTopic"));
        }
        for (dependency, since) in lock(&self.failing).iter() {
            let failing_for = since.elapsed();
            if failing_for >= self.unhealthy_after {
                reasons.push(format!("{dependency} failing for {}s", failing_for.as_secs()));
            }
        }
        if reasons.is_empty() {
            Ok(format!("ready: {} partition(s) assigned", self.assigned()))
        } else {
            Err(reasons)
        }
    }
}

/// Metrics and health, shared by the consumer, the librdkafka callbacks and the probe server.
pub struct EngineMonitor {
    /// The metric families.
    pub metrics: Metrics,
    /// The readiness state.
    pub health: Health,
}

impl EngineMonitor {
    /// Fresh metrics; readiness turns false after a dependency fails for `unhealthy_after`.
    pub fn new(unhealthy_after: Duration) -> Arc<Self> {
        Arc::new(EngineMonitor { metrics: Metrics::new(), health: Health::new(unhealthy_after) })
    }

    /// Listens on `host:port` and serves the probes until the process ends; returns the bound
    /// address.
    pub async fn serve(self: &Arc<Self>, host: &str, port: u16) -> Result<SocketAddr, ServeError> {
        probes::serve(host, port, Arc::clone(self)).await
    }
}

impl Probes for EngineMonitor {
    fn readiness(&self) -> Result<String, String> {
        self.health.readiness().map_err(|reasons| reasons.join("; "))
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

/// Counts of one batch, added to the metric families once per batch (not per message).
#[derive(Default)]
pub struct BatchCounts {
    /// (topic, projection, outcome) -> messages.
    pub messages: BTreeMap<(String, String, &'static str), u64>,
    /// reason -> skips.
    pub skipped: BTreeMap<&'static str, u64>,
    /// (projection, op) -> writes.
    pub writes: BTreeMap<(String, &'static str), u64>,
    /// (projection, field) -> unknown fields.
    pub unknown_fields: BTreeMap<(String, String), u64>,
    /// (projection, field) -> uncastable fields.
    pub uncastable_fields: BTreeMap<(String, String), u64>,
}

impl BatchCounts {
    /// Adds these counts to the families.
    pub fn publish(self, m: &Metrics) {
        for ((topic, projection, outcome), n) in self.messages {
            m.messages.get_or_create(&MessageLabels { topic, projection, outcome }).inc_by(n);
        }
        for (reason, n) in self.skipped {
            m.skipped.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc_by(n);
        }
        for ((projection, op), n) in self.writes {
            m.writes.get_or_create(&WriteLabels { projection, op }).inc_by(n);
        }
        for ((projection, field), n) in self.unknown_fields {
            m.unknown_fields.get_or_create(&FieldLabels { projection, field }).inc_by(n);
        }
        for ((projection, field), n) in self.uncastable_fields {
            m.uncastable_fields.get_or_create(&FieldLabels { projection, field }).inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_every_reason() {
        let t = EngineMonitor::new(Duration::from_millis(0));
        assert_eq!(
            t.health.readiness().unwrap_err(),
            vec!["waiting for the consumer group to assign partitions"]
        );
        t.health.partitions_changed(3);
        t.health.partitions_changed(-1);
        assert_eq!(t.health.readiness().unwrap(), "ready: 2 partition(s) assigned");
        t.health.set_problem(Some("index missing".into()));
        assert_eq!(t.health.readiness().unwrap_err(), vec!["index missing"]);
        t.health.set_problem(None);
        t.health.failing("mongodb");
        t.health.set_paused("crm.orders");
        t.health.set_stopped("MALFORMED_VALUE");
        let reasons = t.health.readiness().unwrap_err();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("MALFORMED_VALUE"), "{reasons:?}");
        assert!(reasons[1].contains("crm.orders"), "{reasons:?}");
        assert!(reasons[2].starts_with("mongodb failing for"), "{reasons:?}");
    }

    #[test]
    fn a_dependency_failure_counts_only_after_unhealthy_after() {
        let t = EngineMonitor::new(Duration::from_secs(60));
        t.health.partitions_changed(1);
        t.health.failing("mongodb");
        assert!(t.health.readiness().is_ok(), "a short outage keeps the worker ready");
        t.health.recovered("mongodb");
        assert!(t.health.readiness().is_ok());
    }

    #[test]
    fn the_probes_say_why_not_ready_and_serve_the_metrics() {
        let t = EngineMonitor::new(Duration::from_secs(60));
        t.health.set_paused("crm.orders");
        let (status, _, body) = probes::route(&*t, "/readyz");
        assert_eq!(status, hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with("not ready: waiting for the consumer group to assign partitions; "),
            "{body}"
        );
        assert!(body.contains("crm.orders"), "{body}");
        let mut counts = BatchCounts::default();
        counts.messages.insert(("t".into(), "customers".into(), "applied"), 7);
        counts.publish(&t.metrics);
        let (status, _, body) = probes::route(&*t, "/-/metrics");
        assert_eq!(status, hyper::StatusCode::OK);
        assert!(
            body.contains(
                r#"rtu_messages_total{topic="t",projection="customers",outcome="applied"} 7"#
            ),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
