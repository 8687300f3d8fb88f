//! Status (pure): the conditions and counters a reconcile outcome gives a RealTimeUpdater.
//! Conditions have the `metav1.Condition` shape; each carries the generation it was computed
//! from, and its transition time moves only when its status changes.

use crate::api::{AutoscalingStatus, Condition, ProjectionStatus, RealTimeUpdaterStatus};

/// The condition types, in the order they are listed (`AutoscalingActive` only while
/// `spec.autoscaling` is enabled).
pub const TYPES: [&str; 6] =
    ["Ready", "Progressing", "Degraded", "ReconciliationPaused", "Stopped", "AutoscalingActive"];

/// What the lag autoscaler says of an applied reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalingOutcome {
    /// `status.autoscaling`.
    pub status: AutoscalingStatus,
    /// `AutoscalingActive`: true while the lag is read whole.
    pub active: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

/// What the workers' Deployment reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workers {
    /// Pods wanted.
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods of the current template.
    pub updated: i32,
}

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReconcileOutcome {
    /// The children were applied.
    Applied {
        /// The workers, as the Deployment reports them.
        workers: Workers,
        /// The config hash of the pod template.
        config_hash: String,
        /// The consumer group.
        consumer_group: String,
        /// The owned projections.
        projections: Vec<ProjectionStatus>,
        /// `spec.stopped`.
        stopped: bool,
        /// The lag autoscaler's status, when it is enabled.
        autoscaling: Option<Box<AutoscalingOutcome>>,
    },
    /// The spec cannot be built; nothing was applied.
    Invalid {
        /// The condition reason.
        reason: &'static str,
        /// Every error, joined.
        message: String,
    },
    /// `spec.paused`: nothing was applied; the workers as they are.
    Paused {
        /// The workers, as the Deployment reports them (if it exists).
        workers: Workers,
    },
    /// Applying failed (the API server refused or did not answer); retried.
    Failed {
        /// What failed.
        message: String,
    },
}

/// The next status, from the previous one and an outcome; `now` is an RFC 3339 timestamp.
pub fn next(
    previous: &RealTimeUpdaterStatus,
    generation: Option<i64>,
    outcome: &ReconcileOutcome,
    selector: String,
    now: &str,
) -> RealTimeUpdaterStatus {
    let mut status = previous.clone();
    status.selector = Some(selector);
    let mut set = |type_: &str, on: bool, reason: &str, message: String| {
        let condition = Condition {
            type_: type_.to_string(),
            status: if on { "True" } else { "False" }.to_string(),
            observed_generation: generation,
            last_transition_time: now.to_string(),
            reason: reason.to_string(),
            message,
        };
        put(&mut status.conditions, condition);
    };
    match outcome {
        ReconcileOutcome::Applied {
            workers,
            config_hash,
            consumer_group,
            projections,
            stopped,
            autoscaling,
        } => {
            let w = workers;
            let rolled = w.updated >= w.desired && w.replicas == w.desired;
            let ready = w.ready >= w.desired && rolled;
            let counts =
                format!("{}/{} workers ready, {} up to date", w.ready, w.desired, w.updated);
            if *stopped {
                set("Ready", true, "Stopped", "stopped: no workers run; offsets are kept".into());
            } else if ready {
                set("Ready", true, "WorkersReady", counts.clone());
            } else {
                set("Ready", false, "WorkersNotReady", counts.clone());
            }
            set(
                "Progressing",
                !ready,
                if ready { "RolloutComplete" } else { "RollingOut" },
                counts,
            );
            set("Degraded", false, "Reconciled", "every child is applied".into());
            set("ReconciliationPaused", false, "Reconciling", String::new());
            set(
                "Stopped",
                *stopped,
                if *stopped { "SpecStopped" } else { "Running" },
                String::new(),
            );
            status.observed_generation = generation;
            status.replicas = w.replicas;
            status.ready_replicas = w.ready;
            status.config_hash = Some(config_hash.clone());
            status.consumer_group = Some(consumer_group.clone());
            status.projections = projections.clone();
            match autoscaling {
                Some(a) => {
                    set("AutoscalingActive", a.active, a.reason, a.message.clone());
                    status.autoscaling = Some(a.status.clone());
                }
                None => {
                    status.conditions.retain(|c| c.type_ != "AutoscalingActive");
                    status.autoscaling = None;
                }
            }
        }
        ReconcileOutcome::Invalid { reason, message } => {
            set("Ready", false, reason, message.clone());
            set("Degraded", true, reason, message.clone());
            set("Progressing", false, reason, "nothing is applied until the spec is fixed".into());
            set("ReconciliationPaused", false, "Reconciling", String::new());
            status.observed_generation = generation;
        }
        ReconcileOutcome::Paused { workers } => {
            set(
                "ReconciliationPaused",
                true,
                "SpecPaused",
                "spec.paused: nothing is applied".into(),
            );
            status.replicas = workers.replicas;
            status.ready_replicas = workers.ready;
        }
        ReconcileOutcome::Failed { message } => {
            set("Degraded", true, "ApplyFailed", message.clone());
        }
    }
    status
        .conditions
        .sort_by_key(|c| TYPES.iter().position(|t| *t == c.type_).unwrap_or(TYPES.len()));
    status
}

/// The current time as conditions carry it (RFC 3339, whole seconds).
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// Replaces the condition of the same type; keeps its transition time when the status is the
/// same.
fn put(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(old) => {
            if old.status == condition.status {
                condition.last_transition_time = old.last_transition_time.clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(ready: i32, stopped: bool) -> ReconcileOutcome {
        ReconcileOutcome::Applied {
            workers: Workers { desired: 2, replicas: 2, ready, updated: 2 },
            config_hash: "abc".into(),
            consumer_group: "ns.rtu".into(),
            projections: vec![],
            stopped,
            autoscaling: None,
        }
    }

    fn condition<'a>(s: &'a RealTimeUpdaterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first =
            next(&RealTimeUpdaterStatus::default(), Some(1), &applied(0, false), "s".into(), "T1");
        assert_eq!(condition(&first, "Ready").status, "False");
        assert_eq!(condition(&first, "Ready").last_transition_time, "T1");
        let same = next(&first, Some(2), &applied(1, false), "s".into(), "T2");
        assert_eq!(condition(&same, "Ready").last_transition_time, "T1");
        assert_eq!(condition(&same, "Ready").observed_generation, Some(2));
        assert_eq!(condition(&same, "Ready").message, "1/2 workers ready, 2 up to date");
        let ready = next(&same, Some(2), &applied(2, false), "s".into(), "T3");
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert_eq!(condition(&ready, "Ready").last_transition_time, "T3");
        assert_eq!(condition(&ready, "Progressing").status, "False");
        let types: Vec<&str> = ready.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, TYPES[..5]);
        assert_eq!(next(&ready, Some(2), &applied(2, false), "s".into(), "T4"), ready);
    }

    #[test]
    fn paused_keeps_the_observed_generation_and_refreshes_counts() {
        let ready =
            next(&RealTimeUpdaterStatus::default(), Some(3), &applied(2, false), "s".into(), "T1");
        let paused = next(
            &ready,
            Some(4),
            &ReconcileOutcome::Paused {
                workers: Workers { desired: 2, replicas: 2, ready: 1, updated: 2 },
            },
            "s".into(),
            "T2",
        );
        assert_eq!(paused.observed_generation, Some(3));
        assert_eq!(paused.ready_replicas, 1);
        assert_eq!(condition(&paused, "ReconciliationPaused").status, "True");
        assert_eq!(condition(&paused, "ReconciliationPaused").observed_generation, Some(4));
        assert_eq!(condition(&paused, "Ready").observed_generation, Some(3));
    }

    #[test]
    fn invalid_and_stopped() {
        let invalid = next(
            &RealTimeUpdaterStatus::default(),
            Some(1),
            &ReconcileOutcome::Invalid {
                reason: "ProjectionConflict",
                message: "owned by a".into(),
            },
            "s".into(),
            "T1",
        );
        assert_eq!(condition(&invalid, "Ready").reason, "ProjectionConflict");
        assert_eq!(condition(&invalid, "Degraded").status, "True");
        let stopped = next(&invalid, Some(2), &applied(0, true), "s".into(), "T2");
        assert_eq!(condition(&stopped, "Stopped").status, "True");
        assert_eq!(condition(&stopped, "Ready").reason, "Stopped");
        assert_eq!(condition(&stopped, "Degraded").status, "False");
        assert_eq!(condition(&stopped, "Degraded").last_transition_time, "T2");
    }
}
