//! The operator's metrics and readiness: the reconcile counters and duration histogram, the
//! leader gauge, the lag autoscaler's lag, desired workers, changes and failed reads, and the
//! readiness state (`/readyz`: started, and whether this replica leads
//! or stands by) the probe server ([`crate::probes`]) answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::probes::{self, Probes, ServeError};

/// Labels of `rtu_operator_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The kind reconciled (`RealTimeUpdater`, `SystemOfRecord`).
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `rtu_operator_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The kind reconciled.
    pub kind: &'static str,
    /// Why it failed: the name of the step that failed.
    pub reason: String,
}

/// Labels of `rtu_operator_reconcile_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceKindLabel {
    /// The kind reconciled.
    pub kind: &'static str,
}

/// Labels of the autoscaler's per-updater families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdaterLabels {
    /// The RealTimeUpdater's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Labels of `rtu_operator_autoscaling_lag`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLagLabels {
    /// The RealTimeUpdater's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The topic.
    pub topic: String,
}

/// Labels of `rtu_operator_autoscaling_changes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The RealTimeUpdater's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `up` or `down`.
    pub direction: &'static str,
}

/// The lag autoscaler's families.
#[derive(Default)]
struct AutoscalingFamilies {
    lag: Family<TopicLagLabels, Gauge>,
    desired: Family<UpdaterLabels, Gauge>,
    changes: Family<ChangeLabels, Counter>,
    failed_reads: Family<UpdaterLabels, Counter>,
}

/// Metrics and health of one operator replica, shared by the controllers, the leader election
/// and the HTTP server.
pub struct OperatorMonitor {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ResourceKindLabel, Histogram>,
    leader: Gauge,
    autoscaling: AutoscalingFamilies,
    started: AtomicBool,
}

impl OperatorMonitor {
    /// Fresh metrics; not started, not leading.
    pub fn new() -> Arc<Self> {
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ResourceKindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let leader = Gauge::default();
        let mut registry = Registry::default();
        registry.register(
            "rtu_operator_reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "rtu_operator_reconcile_errors",
            "Failed reconciles by kind and reason",
            errors.clone(),
        );
        registry.register(
            "rtu_operator_reconcile_duration_seconds",
            "Duration of one reconcile",
            durations.clone(),
        );
        registry.register("rtu_operator_leader", "1 while this replica leads", leader.clone());
        let autoscaling = AutoscalingFamilies::default();
        registry.register(
            "rtu_operator_autoscaling_lag",
            "Consumer lag of an autoscaled RealTimeUpdater's topic at the last good read, in messages",
            autoscaling.lag.clone(),
        );
        registry.register(
            "rtu_operator_autoscaling_desired_replicas",
            "Workers the lag autoscaler wants for a RealTimeUpdater",
            autoscaling.desired.clone(),
        );
        registry.register(
            "rtu_operator_autoscaling_changes",
            "Changes of the number of workers by the lag autoscaler",
            autoscaling.changes.clone(),
        );
        registry.register(
            "rtu_operator_autoscaling_failed_reads",
            "Lag reads that failed or missed a partition (no change was made)",
            autoscaling.failed_reads.clone(),
        );
        Arc::new(OperatorMonitor {
            registry,
            reconciles,
            errors,
            durations,
            leader,
            autoscaling,
            started: AtomicBool::new(false),
        })
    }

    /// A good lag read of `namespace/name`: each topic's lag and the workers wanted.
    pub fn lag_read(&self, namespace: &str, name: &str, topics: &[(String, i64)], desired: i32) {
        let a = &self.autoscaling;
        for (topic, lag) in topics {
            let labels = TopicLagLabels {
                namespace: namespace.into(),
                name: name.into(),
                topic: topic.clone(),
            };
            a.lag.get_or_create(&labels).set(*lag);
        }
        self.desired(namespace, name, desired);
    }

    /// The workers the autoscaler wants for `namespace/name`.
    pub fn desired(&self, namespace: &str, name: &str, desired: i32) {
        let labels = UpdaterLabels { namespace: namespace.into(), name: name.into() };
        self.autoscaling.desired.get_or_create(&labels).set(i64::from(desired));
    }

    /// A lag read of `namespace/name` failed or was partial.
    pub fn lag_read_failed(&self, namespace: &str, name: &str) {
        let labels = UpdaterLabels { namespace: namespace.into(), name: name.into() };
        self.autoscaling.failed_reads.get_or_create(&labels).inc();
    }

    /// The autoscaler changed the workers of `namespace/name`.
    pub fn scaled(&self, namespace: &str, name: &str, up: bool) {
        let direction = if up { "up" } else { "down" };
        let labels = ChangeLabels { namespace: namespace.into(), name: name.into(), direction };
        self.autoscaling.changes.get_or_create(&labels).inc();
    }

    /// `namespace/name` is no longer autoscaled (or is gone): its gauges go.
    pub fn forget_updater(&self, namespace: &str, name: &str, topics: &[String]) {
        let a = &self.autoscaling;
        for topic in topics {
            a.lag.remove(&TopicLagLabels {
                namespace: namespace.into(),
                name: name.into(),
                topic: topic.clone(),
            });
        }
        a.desired.remove(&UpdaterLabels { namespace: namespace.into(), name: name.into() });
    }

    /// A reconcile of `kind` succeeded after `duration`.
    pub fn reconcile_succeeded(&self, kind: &'static str, duration: Duration) {
        self.reconciled(kind, "ok", duration);
    }

    /// A reconcile of `kind` failed after `duration`; `reason` names the step that failed.
    pub fn reconcile_failed(&self, kind: &'static str, reason: &str, duration: Duration) {
        self.reconciled(kind, "error", duration);
        self.errors.get_or_create(&ErrorLabels { kind, reason: reason.to_string() }).inc();
    }

    fn reconciled(&self, kind: &'static str, result: &'static str, duration: Duration) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, result }).inc();
        self.durations.get_or_create(&ResourceKindLabel { kind }).observe(duration.as_secs_f64());
    }

    /// The operator has started (its controllers run, as leader or standby): `/readyz` answers
    /// 200 from now on.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// This replica became leader (`true`) or stands by (`false`).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Listens on `host:port` (port 0: any free port) and serves the probes until the process
    /// ends; returns the bound address.
    pub async fn serve(self: &Arc<Self>, host: &str, port: u16) -> Result<SocketAddr, ServeError> {
        probes::serve(host, port, Arc::clone(self)).await
    }
}

impl Probes for OperatorMonitor {
    fn readiness(&self) -> Result<String, String> {
        if !self.started.load(Ordering::Relaxed) {
            return Err("starting".into());
        }
        Ok(format!("ready: {}", if self.is_leader() { "leader" } else { "standby" }))
    }

    fn metrics(&self) -> String {
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{OPENMETRICS, TEXT_PLAIN};
    use hyper::StatusCode;

    #[test]
    fn readiness_says_starting_then_leader_or_standby() {
        let t = OperatorMonitor::new();
        assert_eq!(probes::route(&*t, "/healthz").0, StatusCode::OK);
        assert_eq!(
            probes::route(&*t, "/readyz"),
            (StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready: starting\n".to_string())
        );
        t.set_started();
        assert_eq!(probes::route(&*t, "/readyz").2, "ready: standby\n");
        t.set_leader(true);
        assert_eq!(probes::route(&*t, "/readyz").2, "ready: leader\n");
        t.set_leader(false);
        assert_eq!(probes::route(&*t, "/readyz").2, "ready: standby\n");
        assert_eq!(probes::route(&*t, "/nope").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn metrics_count_reconciles_by_kind_result_and_reason() {
        let t = OperatorMonitor::new();
        t.set_leader(true);
        t.reconcile_succeeded("RealTimeUpdater", Duration::from_millis(20));
        t.reconcile_succeeded("RealTimeUpdater", Duration::from_millis(30));
        t.reconcile_failed("RealTimeUpdater", "Dereference", Duration::from_millis(10));
        let (status, content_type, body) = probes::route(&*t, "/metrics");
        assert_eq!((status, content_type), (StatusCode::OK, OPENMETRICS));
        for line in [
            r#"rtu_operator_reconciles_total{kind="RealTimeUpdater",result="ok"} 2"#,
            r#"rtu_operator_reconciles_total{kind="RealTimeUpdater",result="error"} 1"#,
            r#"rtu_operator_reconcile_errors_total{kind="RealTimeUpdater",reason="Dereference"} 1"#,
            r#"rtu_operator_reconcile_duration_seconds_count{kind="RealTimeUpdater"} 3"#,
            "rtu_operator_leader 1",
        ] {
            assert!(body.contains(line), "{line} missing from:\n{body}");
        }
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn autoscaling_families_follow_reads_and_go_with_the_updater() {
        let t = OperatorMonitor::new();
        t.lag_read("ns", "crm", &[("a".into(), 120), ("b".into(), 3)], 2);
        t.lag_read_failed("ns", "crm");
        t.scaled("ns", "crm", true);
        let body = t.encode();
        for line in [
            r#"rtu_operator_autoscaling_lag{namespace="ns",name="crm",topic="a"} 120"#,
            r#"rtu_operator_autoscaling_lag{namespace="ns",name="crm",topic="b"} 3"#,
            r#"rtu_operator_autoscaling_desired_replicas{namespace="ns",name="crm"} 2"#,
            r#"rtu_operator_autoscaling_failed_reads_total{namespace="ns",name="crm"} 1"#,
            r#"rtu_operator_autoscaling_changes_total{namespace="ns",name="crm",direction="up"} 1"#,
        ] {
            assert!(body.contains(line), "{line} missing from:\n{body}");
        }
        t.forget_updater("ns", "crm", &["a".into(), "b".into()]);
        let body = t.encode();
        assert!(!body.contains("rtu_operator_autoscaling_lag{"), "{body}");
        assert!(!body.contains("rtu_operator_autoscaling_desired_replicas{"), "{body}");
    }
}
