//! The operator's metrics and health: the reconcile counters and duration histogram, the leader
//! gauge, the readiness state (`/readyz`: started, and whether this replica leads or stands by),
//! and what the shared HTTP server ([`crate::telemetry::serve_http`]) answers for `/healthz`,
//! `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::telemetry::{OPENMETRICS, Reply, ServeError, TEXT_PLAIN, serve_http};

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
pub struct KindLabel {
    /// The kind reconciled.
    pub kind: &'static str,
}

/// Metrics and health of one operator replica, shared by the controllers, the leader election
/// and the HTTP server.
pub struct Telemetry {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabel, Histogram>,
    leader: Gauge,
    started: AtomicBool,
}

impl Telemetry {
    /// Fresh metrics; not started, not leading.
    pub fn new() -> Arc<Self> {
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<KindLabel, Histogram>::new_with_constructor(|| {
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
        Arc::new(Telemetry {
            registry,
            reconciles,
            errors,
            durations,
            leader,
            started: AtomicBool::new(false),
        })
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
        self.durations.get_or_create(&KindLabel { kind }).observe(duration.as_secs_f64());
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

    fn respond(&self, path: &str) -> Reply {
        match path {
            "/healthz" => (StatusCode::OK, TEXT_PLAIN, "ok\n".into()),
            "/readyz" if !self.started.load(Ordering::Relaxed) => {
                (StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready: starting\n".into())
            }
            "/readyz" => {
                let role = if self.is_leader() { "leader" } else { "standby" };
                (StatusCode::OK, TEXT_PLAIN, format!("ready: {role}\n"))
            }
            "/metrics" => (StatusCode::OK, OPENMETRICS, self.encode()),
            _ => (
                StatusCode::NOT_FOUND,
                TEXT_PLAIN,
                "not found; try /healthz, /readyz or /metrics\n".into(),
            ),
        }
    }

    /// Listens on `host:port` (port 0: any free port) and serves `/healthz`, `/readyz` and
    /// `/metrics` until the process ends; returns the bound address.
    pub async fn serve(self: &Arc<Self>, host: &str, port: u16) -> Result<SocketAddr, ServeError> {
        let telemetry = Arc::clone(self);
        serve_http(host, port, move |path| telemetry.respond(path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_starting_then_leader_or_standby() {
        let t = Telemetry::new();
        assert_eq!(t.respond("/healthz").0, StatusCode::OK);
        assert_eq!(
            t.respond("/readyz"),
            (StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, "not ready: starting\n".to_string())
        );
        t.set_started();
        assert_eq!(t.respond("/readyz").2, "ready: standby\n");
        t.set_leader(true);
        assert_eq!(t.respond("/readyz").2, "ready: leader\n");
        t.set_leader(false);
        assert_eq!(t.respond("/readyz").2, "ready: standby\n");
        assert_eq!(t.respond("/nope").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn metrics_count_reconciles_by_kind_result_and_reason() {
        let t = Telemetry::new();
        t.set_leader(true);
        t.reconcile_succeeded("RealTimeUpdater", Duration::from_millis(20));
        t.reconcile_succeeded("RealTimeUpdater", Duration::from_millis(30));
        t.reconcile_failed("RealTimeUpdater", "Dereference", Duration::from_millis(10));
        let (status, content_type, body) = t.respond("/metrics");
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
}
