//! The autoscaling step of a reconcile (docs/autoscaling.md): whether a lag read is due, the
//! read ([`super::lag`]), the decision ([`super::autoscale`]), and what the status, the Events
//! and the metrics say of it. What lives between reads (the recent wishes, the time of the
//! last read, the lag clients) is kept here per updater, in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

use super::autoscale::{self, Decision, History, Input, Policy, Reason};
use super::dereference::Dereferenced;
use super::lag::{LagReader, Query, Reading};
use super::metrics::OperatorMonitor;
use super::status::{AutoscalingOutcome, now};
use super::validate::{Validated, secret_file};
use crate::api::{AutoscalingSpec, AutoscalingStatus, RealTimeUpdaterStatus};

/// The condition type the autoscaler sets.
pub const CONDITION: &str = "AutoscalingActive";

/// Longest wait for each Kafka request of a lag read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The autoscaler of every updater of this operator.
#[derive(Default)]
pub struct Autoscaler {
    reader: LagReader,
    state: Mutex<HashMap<String, UpdaterState>>,
}

#[derive(Default)]
struct UpdaterState {
    history: History,
    last_read_ms: Option<i64>,
    /// What the last step said. The reconcile's copy of the status can be older than the
    /// last write (a reconcile triggered by the Deployment's change runs before the watch
    /// brings the status back), so this, not that copy, is what the next step starts from.
    said: Option<Said>,
}

/// What a step said of an updater: `status.autoscaling` and `AutoscalingActive`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Said {
    status: AutoscalingStatus,
    active: bool,
    message: String,
}

impl Said {
    /// From the updater's status, when the operator has not said anything yet (it started,
    /// or it just took the lead).
    fn from_status(previous: &RealTimeUpdaterStatus) -> Option<Said> {
        let status = previous.autoscaling.clone()?;
        let condition = previous.conditions.iter().find(|c| c.type_ == CONDITION);
        Some(Said {
            status,
            active: condition.is_none_or(|c| c.status == "True"),
            message: condition.map(|c| c.message.clone()).unwrap_or_default(),
        })
    }
}

/// An Event the step asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A warning (else normal).
    pub warning: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its text.
    pub message: String,
}

/// What the step decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// The workers to run.
    pub replicas: i32,
    /// `status.autoscaling` and the `AutoscalingActive` condition.
    pub outcome: AutoscalingOutcome,
    /// The Events to publish.
    pub notes: Vec<Note>,
    /// When the next read is due.
    pub requeue: Duration,
}

/// What one step is made from.
pub struct Step<'a> {
    /// `namespace/name`.
    pub key: String,
    /// `spec.autoscaling`.
    pub spec: &'a AutoscalingSpec,
    /// `spec.replicas` (not used; a change of it is reported).
    pub spec_replicas: i32,
    /// The validated updater (the Kafka connection, the topics, the mounted Secret keys).
    pub validated: &'a Validated,
    /// The Secrets' values.
    pub refs: &'a Dereferenced,
    /// The status before this reconcile.
    pub previous: &'a RealTimeUpdaterStatus,
    /// The workers' Deployment as it is, if it exists.
    pub running: Option<&'a Deployment>,
    /// Whether this reconcile changes the workers' config (a roll starts).
    pub config_changes: bool,
}

impl Autoscaler {
    /// Runs the step: reads the lag when a read is due, decides, says so.
    pub async fn step(&self, step: Step<'_>, monitor: &OperatorMonitor) -> Scaling {
        let policy = Policy::from(step.spec);
        let poll_ms = i64::from(step.spec.poll_interval_seconds.max(1)) * 1000;
        let said = self
            .with_state(&step.key, |s| s.said.clone())
            .or_else(|| Said::from_status(step.previous));
        let had_status = said.is_some();
        let said = said.unwrap_or(Said { active: true, ..Said::default() });
        let previous = said.status.clone();
        let running = step.running.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
        let current = autoscale::starting_point(
            &policy,
            had_status.then_some(previous.desired_replicas),
            running,
        );
        let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let last_read = self.with_state(&step.key, |s| s.last_read_ms);
        // A read is due a poll interval after the last; a reconcile in between (a watch event,
        // the status write of the last read) keeps the last decision.
        let due = last_read.is_none_or(|t| now_ms - t >= poll_ms - 250) || !had_status;
        if !due {
            let wait = poll_ms - (now_ms - last_read.unwrap_or(now_ms));
            let scaling =
                unchanged(&step, said, current, Duration::from_millis(wait.max(250) as u64));
            self.remember(&step.key, &scaling);
            return scaling;
        }
        let result = self.read(&step).await;
        let rolling = step.config_changes || rolling(step.running);
        let last_scale_ms = previous.last_scale_time.as_deref().and_then(millis);
        let decision = self.with_state(&step.key, |s| {
            s.last_read_ms = Some(now_ms);
            let reading = result.as_ref().map_err(String::as_str);
            autoscale::decide(
                Input { policy, current, reading, rolling, now_ms, last_scale_ms },
                &mut s.history,
            )
        });
        // A change of the bounds applies without a read.
        let decision = match (decision.changed_from, current != previous.desired_replicas) {
            (None, true) if had_status => {
                Decision { changed_from: Some(previous.desired_replicas), ..decision }
            }
            _ => decision,
        };
        let (namespace, name) = step.key.split_once('/').unwrap_or(("", &step.key));
        match &result {
            Ok(reading) => {
                let topics: Vec<_> =
                    reading.topics.iter().map(|t| (t.topic.clone(), t.lag)).collect();
                monitor.lag_read(namespace, name, &topics, decision.replicas);
            }
            Err(_) => {
                monitor.lag_read_failed(namespace, name);
                monitor.desired(namespace, name, decision.replicas);
            }
        }
        if let Some(from) = decision.changed_from {
            monitor.scaled(namespace, name, decision.replicas > from);
        }
        let scaling =
            scaling(&step, said, &result, &decision, Duration::from_millis(poll_ms as u64));
        self.remember(&step.key, &scaling);
        scaling
    }

    fn remember(&self, key: &str, scaling: &Scaling) {
        let o = &scaling.outcome;
        let said = Said { status: o.status.clone(), active: o.active, message: o.message.clone() };
        self.with_state(key, |s| s.said = Some(said));
    }

    /// Forgets an updater that is gone or no longer autoscaled.
    pub fn forget(&self, key: &str, monitor: &OperatorMonitor, previous: &RealTimeUpdaterStatus) {
        self.reader.forget(key);
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = state.remove(key).is_some();
        drop(state);
        if known || previous.autoscaling.is_some() {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            let topics: Vec<String> = previous
                .autoscaling
                .iter()
                .flat_map(|a| a.topics.iter().map(|t| t.topic.clone()))
                .collect();
            monitor.forget_updater(namespace, name, &topics);
        }
    }

    fn with_state<T>(&self, key: &str, f: impl FnOnce(&mut UpdaterState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(state.entry(key.to_string()).or_default())
    }

    async fn read(&self, step: &Step<'_>) -> Result<Reading, String> {
        let v = step.validated;
        let mut topics: Vec<String> =
            v.engine.projections.iter().flat_map(|p| p.topics.iter().cloned()).collect();
        topics.sort();
        topics.dedup();
        let query = Query {
            kafka: v.engine.kafka.clone(),
            secrets: secret_values(v, step.refs),
            topics,
            timeout: REQUEST_TIMEOUT,
        };
        self.reader.read(&step.key, query).await.map_err(|e| e.to_string())
    }
}

/// No read now: the last decision stands (within the bounds).
fn unchanged(step: &Step<'_>, said: Said, current: i32, requeue: Duration) -> Scaling {
    let Said { mut status, active, message } = said;
    let reason = if active { "LagRead" } else { Reason::LagReadFailed.as_str() };
    let mut notes = Vec::new();
    if current != status.desired_replicas {
        notes.push(change_note(status.desired_replicas, current, "the bounds changed"));
        status.desired_replicas = current;
        status.last_scale_time = Some(now());
    }
    overridden(step, &mut status, &mut notes);
    Scaling {
        replicas: current,
        outcome: AutoscalingOutcome { status, active, reason, message },
        notes,
        requeue,
    }
}

/// Whether the workers are rolling: the Deployment controller has seen the current spec and
/// some pods are still of an older template.
fn rolling(running: Option<&Deployment>) -> bool {
    let Some(d) = running else { return false };
    let s = d.status.clone().unwrap_or_default();
    let seen = s.observed_generation.is_some() && s.observed_generation >= d.metadata.generation;
    seen && s.updated_replicas.unwrap_or(0) < s.replicas.unwrap_or(0)
}

/// The value of each Secret key the workers mount, by the file they read it from (as they read
/// it: without a trailing newline).
fn secret_values(v: &Validated, refs: &Dereferenced) -> BTreeMap<String, String> {
    v.secrets
        .iter()
        .filter_map(|r| {
            let bytes = refs.secrets.get(&r.name)?.get(&r.key)?;
            let text = String::from_utf8_lossy(&bytes.0).trim_end_matches(['\n', '\r']).to_string();
            Some((secret_file(r), text))
        })
        .collect()
}

/// An RFC 3339 time in ms since the epoch.
fn millis(time: &str) -> Option<i64> {
    time.parse::<k8s_openapi::jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

fn change_note(from: i32, to: i32, why: &str) -> Note {
    Note {
        warning: false,
        reason: if to > from { "ScaledUp" } else { "ScaledDown" },
        message: format!("{from} -> {to} workers: {why}"),
    }
}

/// A change of `spec.replicas` while autoscaling is reported once: it is not used.
fn overridden(step: &Step<'_>, status: &mut AutoscalingStatus, notes: &mut Vec<Note>) {
    if status.spec_replicas.is_some_and(|seen| seen != step.spec_replicas) {
        notes.push(Note {
            warning: true,
            reason: "ReplicasOverridden",
            message: format!(
                "spec.replicas {} is not used while spec.autoscaling is enabled: the autoscaler runs {} workers (set autoscaling.enabled: false to scale by hand)",
                step.spec_replicas, status.desired_replicas
            ),
        });
    }
    status.spec_replicas = Some(step.spec_replicas);
}

/// The status, condition and Events of a decision made on a read.
fn scaling(
    step: &Step<'_>,
    said: Said,
    result: &Result<Reading, String>,
    decision: &Decision,
    requeue: Duration,
) -> Scaling {
    let time = now();
    let was_failing = !said.active;
    let mut notes = Vec::new();
    let mut status = said.status;
    status.desired_replicas = decision.replicas;
    status.reason = decision.reason.as_str().to_string();
    status.message = decision.message.clone();
    if let Some(from) = decision.changed_from {
        status.last_scale_time = Some(time.clone());
        notes.push(Note {
            warning: false,
            reason: if decision.replicas > from { "ScaledUp" } else { "ScaledDown" },
            message: decision.message.clone(),
        });
    }
    let (active, active_reason, active_message) = match result {
        Ok(reading) => {
            status.lag = reading.total;
            status.topics = reading.topics.clone();
            status.partitions = reading.partitions;
            status.last_read_time = Some(time);
            if was_failing {
                notes.push(Note {
                    warning: false,
                    reason: "LagReadRecovered",
                    message: format!("the lag is read again: {}", decision.message),
                });
            }
            (true, "LagRead", format!("lag {} read from Kafka", reading.total))
        }
        Err(why) => {
            let message = format!("the lag cannot be read, no change is made: {why}");
            // One Event when the reads start failing, not one per read.
            if !was_failing {
                notes.push(Note {
                    warning: true,
                    reason: Reason::LagReadFailed.as_str(),
                    message: message.clone(),
                });
            }
            (false, Reason::LagReadFailed.as_str(), message)
        }
    };
    overridden(step, &mut status, &mut notes);
    Scaling {
        replicas: decision.replicas,
        outcome: AutoscalingOutcome {
            status,
            active,
            reason: active_reason,
            message: active_message,
        },
        notes,
        requeue,
    }
}
