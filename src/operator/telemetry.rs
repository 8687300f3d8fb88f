//! The operator's metrics (placeholder until the telemetry module lands).

use std::time::Duration;

/// Reconcile counts and durations.
#[derive(Default)]
pub struct Metrics;

impl Metrics {
    /// Records one reconcile.
    pub fn record_reconcile(&self, _kind: &str, _took: Duration, _error: Option<&str>) {}
}
