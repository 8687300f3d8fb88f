//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles: who may take the Lease (a pure decision), waiting until this replica
//! holds it, renewing it in the background, noticing when it is lost, and handing it over on a
//! graceful shutdown.
//!
//! The Lease is written with optimistic concurrency only (a replace carries the
//! `resourceVersion` that was read), so when two replicas race the API server lets one win and
//! the other sees a conflict and tries again later. Expiry is judged as the Lease API describes
//! it: `renewTime + leaseDurationSeconds` against this replica's clock.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Default time a holder keeps the Lease without renewing it.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default time between two renewals (and between two attempts while waiting).
pub const DEFAULT_RENEW_PERIOD: Duration = Duration::from_secs(5);

/// Clearing the holder on release is tried this many times when other writers race it.
const RELEASE_ATTEMPTS: usize = 3;

/// Why leader election failed (transient API errors are retried, never returned).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The election settings cannot work.
    #[error("leader election: {0}")]
    Configure(String),
    /// Reading the Lease failed with an error retrying does not cure.
    #[error("leader election: cannot read Lease {lease}: {source}")]
    ReadLease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// Creating the missing Lease failed with an error retrying does not cure.
    #[error("leader election: cannot create Lease {lease}: {source}")]
    CreateLease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// Writing the Lease (take, renew or release) failed with an error retrying does not cure.
    #[error("leader election: cannot write Lease {lease}: {source}")]
    ReplaceLease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What the API server said.
        source: kube::Error,
    },
}

/// What a candidate may do with a Lease, given its spec, the time and the candidate's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The Lease names this candidate: renew it.
    Renew,
    /// Nobody holds the Lease or the holder's term has run out: take it over.
    Take,
    /// Someone else holds the Lease for `remaining` more unless they renew it.
    Wait {
        /// The current holder.
        holder: String,
        /// Time left before the Lease expires.
        remaining: Duration,
    },
}

/// Who may take the Lease: its holder renews; anyone takes it when no holder is named or when
/// `renewTime + leaseDurationSeconds` is not after `now`; otherwise the candidate waits. A
/// Lease naming a holder but lacking `renewTime` or a positive `leaseDurationSeconds` cannot be
/// shown to be current, so it may be taken.
pub fn claim(spec: Option<&LeaseSpec>, now: Timestamp, identity: &str) -> Claim {
    let holder = spec.and_then(|s| s.holder_identity.as_deref()).unwrap_or_default();
    if holder.is_empty() {
        return Claim::Take;
    }
    if holder == identity {
        return Claim::Renew;
    }
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    let (Some(renewed), true) = (renewed, seconds > 0) else {
        return Claim::Take;
    };
    let elapsed = now.duration_since(renewed);
    let left = SignedDuration::from_secs(i64::from(seconds)).checked_sub(elapsed);
    match left.filter(|left| left.is_positive()).map(Duration::try_from) {
        Some(Ok(remaining)) => Claim::Wait { holder: holder.to_string(), remaining },
        _ => Claim::Take,
    }
}

/// The spec that makes `identity` the holder at `now`: a renewal keeps the acquire time and the
/// transition count; a take-over (or a first claim of an empty Lease) starts a new term and
/// counts one more transition; other fields are kept.
fn claimed_spec(
    current: &LeaseSpec,
    claim: &Claim,
    identity: &str,
    now: Timestamp,
    seconds: i32,
) -> LeaseSpec {
    let mut spec = current.clone();
    if *claim != Claim::Renew {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(current.lease_transitions.unwrap_or(0).saturating_add(1));
    } else if spec.acquire_time.is_none() {
        spec.acquire_time = Some(MicroTime(now));
    }
    spec.holder_identity = Some(identity.to_string());
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    spec
}

/// The spec of a Lease created by its first holder.
fn created_spec(identity: &str, now: Timestamp, seconds: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(seconds),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    }
}

/// Whether retrying may cure an API error: lost races (409), a Lease deleted under us (404),
/// throttling (429), server errors and connection failures. Anything else (Forbidden, Invalid,
/// a request that cannot be built or a response that cannot be read) will fail again.
fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 404 | 409 | 429 | 500..),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// What one attempt at the Lease found.
enum Attempt {
    /// This candidate holds the Lease now.
    Held,
    /// Another candidate holds it.
    HeldBy {
        /// The holder.
        holder: String,
        /// Time left before it expires.
        remaining: Duration,
    },
}

/// Leader election for one identity on one Lease. Cheap to clone.
#[derive(Clone)]
pub struct LeaderElection {
    leases: Api<Lease>,
    lease: String,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    renew_period: Duration,
}

impl LeaderElection {
    /// Election of `identity` (e.g. the pod name) on the Lease `namespace/lease`, with the
    /// default lease duration (15 s) and renew period (5 s).
    pub fn new(client: Client, namespace: &str, lease: &str, identity: &str) -> Self {
        LeaderElection {
            leases: Api::namespaced(client, namespace),
            lease: lease.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_period: DEFAULT_RENEW_PERIOD,
        }
    }

    /// How long a holder keeps the Lease without renewing it (whole seconds, rounded up, on
    /// the Lease); a standby takes over at most this long after the leader stopped renewing.
    pub fn with_lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self
    }

    /// Time between two renewals, and between two attempts while waiting; shorter than the
    /// lease duration.
    pub fn with_renew_period(mut self, renew_period: Duration) -> Self {
        self.renew_period = renew_period;
        self
    }

    /// The identity this election claims the Lease for.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this identity holds the Lease (creating it when missing, taking it when free
    /// or expired, renewing it when already ours), trying once per renew period, then keeps
    /// renewing it in the background. Lost races and transient API errors are retried; an error
    /// retrying cannot cure (e.g. Forbidden) is returned.
    pub async fn acquire(&self) -> Result<Leadership, LeaderError> {
        self.check()?;
        let mut last_holder = String::new();
        loop {
            let started = Instant::now();
            match self.try_acquire().await {
                Ok(Attempt::Held) => {
                    info!(lease = %self.name(), identity = %self.identity, "became leader");
                    return Ok(Leadership::start(self.clone(), started));
                }
                Ok(Attempt::HeldBy { holder, remaining }) => {
                    if holder != last_holder {
                        info!(lease = %self.name(), %holder, expires_in = ?remaining,
                            "waiting for the leader lease");
                    } else {
                        debug!(lease = %self.name(), %holder, expires_in = ?remaining,
                            "leader lease still held");
                    }
                    last_holder = holder;
                }
                Err(e) if e.retryable() => {
                    debug!(lease = %self.name(), error = %e, "leader lease attempt failed; retrying");
                }
                Err(e) => return Err(e.into_error(self.name())),
            }
            tokio::time::sleep(self.renew_period).await;
        }
    }

    /// `namespace/name` of the Lease, for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.lease)
    }

    fn check(&self) -> Result<(), LeaderError> {
        if self.identity.is_empty() {
            return Err(LeaderError::Configure("the identity is empty".into()));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaderError::Configure(format!(
                "lease duration {:?} is shorter than one second",
                self.lease_duration
            )));
        }
        if self.renew_period.is_zero() || self.renew_period >= self.lease_duration {
            return Err(LeaderError::Configure(format!(
                "renew period {:?} must be positive and shorter than the lease duration {:?}",
                self.renew_period, self.lease_duration
            )));
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: the lease duration in whole seconds, rounded up.
    fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let seconds = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        i32::try_from(seconds).unwrap_or(i32::MAX)
    }

    /// One attempt: create, take or renew the Lease, or report who holds it.
    async fn try_acquire(&self) -> Result<Attempt, StepError> {
        let Some(lease) = self.leases.get_opt(&self.lease).await.map_err(StepError::Read)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.lease.clone()), ..ObjectMeta::default() },
                spec: Some(created_spec(&self.identity, Timestamp::now(), self.lease_seconds())),
            };
            self.leases.create(&PostParams::default(), &lease).await.map_err(StepError::Create)?;
            return Ok(Attempt::Held);
        };
        let now = Timestamp::now();
        match claim(lease.spec.as_ref(), now, &self.identity) {
            Claim::Wait { holder, remaining } => Ok(Attempt::HeldBy { holder, remaining }),
            c => {
                let current = lease.spec.clone().unwrap_or_default();
                let spec = claimed_spec(&current, &c, &self.identity, now, self.lease_seconds());
                self.write(lease, Some(spec)).await?;
                Ok(Attempt::Held)
            }
        }
    }

    /// One renewal by the holder: `Ok(None)` when renewed, `Ok(Some(holder))` when the Lease no
    /// longer names this identity (`holder` is empty when it names nobody or is gone).
    async fn renew(&self) -> Result<Option<String>, StepError> {
        let Some(lease) = self.leases.get_opt(&self.lease).await.map_err(StepError::Read)? else {
            return Ok(Some(String::new()));
        };
        let holder =
            lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
        if holder != self.identity {
            return Ok(Some(holder));
        }
        let current = lease.spec.clone().unwrap_or_default();
        let spec = claimed_spec(
            &current,
            &Claim::Renew,
            &self.identity,
            Timestamp::now(),
            self.lease_seconds(),
        );
        self.write(lease, Some(spec)).await?;
        Ok(None)
    }

    /// Clears the holder if it is still this identity, so a standby may take over at once.
    async fn clear(&self) -> Result<(), StepError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(lease) = self.leases.get_opt(&self.lease).await.map_err(StepError::Read)?
            else {
                return Ok(());
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            match self.write(lease, Some(spec)).await {
                Err(StepError::Replace(e)) if is_conflict(&e) && attempt < RELEASE_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    /// Replaces the Lease as read (its `resourceVersion` makes the write conditional).
    async fn write(&self, mut lease: Lease, spec: Option<LeaseSpec>) -> Result<(), StepError> {
        lease.spec = spec;
        let name = lease.name_any();
        self.leases
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map_err(StepError::Replace)?;
        Ok(())
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

/// A failed API call and the step it belonged to.
enum StepError {
    Read(kube::Error),
    Create(kube::Error),
    Replace(kube::Error),
}

impl StepError {
    fn source(&self) -> &kube::Error {
        match self {
            StepError::Read(e) | StepError::Create(e) | StepError::Replace(e) => e,
        }
    }

    fn retryable(&self) -> bool {
        retryable(self.source())
    }

    fn into_error(self, lease: String) -> LeaderError {
        match self {
            StepError::Read(source) => LeaderError::ReadLease { lease, source },
            StepError::Create(source) => LeaderError::CreateLease { lease, source },
            StepError::Replace(source) => LeaderError::ReplaceLease { lease, source },
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source().fmt(f)
    }
}

/// This replica holds the Lease: a background task renews it every renew period.
///
/// Dropping a `Leadership` stops renewing without releasing (as a crash would): the Lease then
/// passes to a standby only once it expires. Call [`Leadership::release`] on a graceful
/// shutdown instead.
pub struct Leadership {
    election: LeaderElection,
    lost: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Starts renewing; `renewed` is when the attempt that won the Lease began.
    fn start(election: LeaderElection, renewed: Instant) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep_renewing(election.clone(), renewed, lost_tx, stop_rx));
        Leadership { election, lost, stop: Some(stop), task }
    }

    /// Completes when the Lease is lost: another holder was seen, or renewals kept failing for
    /// longer than the lease duration (measured from the start of the last successful one, so
    /// this replica gives up no later than a standby may take over).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the renew task is gone without a verdict: treat it as lost too.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Stops renewing and clears the holder (when the Lease still names this identity), so a
    /// standby takes over at once. Failures are logged: the Lease then expires as usual.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        let election = &self.election;
        if *self.lost.borrow() {
            info!(lease = %election.name(), "leader lease already lost; nothing to release");
            return;
        }
        match tokio::time::timeout(election.lease_duration, election.clear()).await {
            Ok(Ok(())) => info!(lease = %election.name(), identity = %election.identity,
                "released the leader lease"),
            Ok(Err(e)) => warn!(lease = %election.name(), error = %e,
                "releasing the leader lease failed; it expires on its own"),
            Err(_) => warn!(lease = %election.name(),
                "releasing the leader lease timed out; it expires on its own"),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renew loop: renews every renew period until stopped or until the Lease is lost, then
/// reports the loss through `lost`.
async fn keep_renewing(
    election: LeaderElection,
    mut renewed: Instant,
    lost: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let name = election.name();
    loop {
        let deadline = tokio::time::Instant::from_std(renewed) + election.lease_duration;
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(lease = %name, "leader lease renewals failed for longer than the lease duration");
                break;
            }
            _ = tokio::time::sleep(election.renew_period) => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(lease = %name, "leader lease renewals failed for longer than the lease duration");
                break;
            }
            outcome = election.renew() => outcome,
        };
        match outcome {
            Ok(None) => renewed = started,
            Ok(Some(holder)) => {
                warn!(lease = %name, %holder, "leader lease lost to another holder");
                break;
            }
            Err(e) => warn!(lease = %name, error = %e, "renewing the leader lease failed"),
        }
    }
    lost.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn spec(holder: Option<&str>, renewed: Option<i64>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    fn wait(holder: &str, seconds: u64) -> Claim {
        Claim::Wait { holder: holder.into(), remaining: Duration::from_secs(seconds) }
    }

    #[test]
    fn who_may_take_the_lease() {
        let cases: &[(&str, Option<LeaseSpec>, i64, Claim)] = &[
            ("no spec at all", None, 0, Claim::Take),
            ("no holder named", Some(spec(None, Some(0), Some(15))), 1, Claim::Take),
            ("holder released (empty)", Some(spec(Some(""), Some(0), Some(15))), 1, Claim::Take),
            ("ours, fresh", Some(spec(Some("me"), Some(0), Some(15))), 1, Claim::Renew),
            ("ours, expired", Some(spec(Some("me"), Some(0), Some(15))), 99, Claim::Renew),
            ("theirs, fresh", Some(spec(Some("other"), Some(0), Some(15))), 5, wait("other", 10)),
            (
                "theirs, just renewed",
                Some(spec(Some("other"), Some(0), Some(15))),
                0,
                wait("other", 15),
            ),
            ("theirs, expires now", Some(spec(Some("other"), Some(0), Some(15))), 15, Claim::Take),
            ("theirs, expired", Some(spec(Some("other"), Some(0), Some(15))), 16, Claim::Take),
            ("theirs, no renewTime", Some(spec(Some("other"), None, Some(15))), 0, Claim::Take),
            ("theirs, no duration", Some(spec(Some("other"), Some(0), None)), 0, Claim::Take),
            ("theirs, zero duration", Some(spec(Some("other"), Some(0), Some(0))), 0, Claim::Take),
            (
                "theirs, renewTime ahead of our clock",
                Some(spec(Some("other"), Some(10), Some(15))),
                5,
                wait("other", 20),
            ),
        ];
        for (case, spec, now, expected) in cases {
            assert_eq!(claim(spec.as_ref(), at(*now), "me"), *expected, "{case}");
        }
    }

    #[test]
    fn taking_over_starts_a_new_term_and_renewing_keeps_it() {
        let mut current = spec(Some("other"), Some(0), Some(15));
        current.acquire_time = Some(MicroTime(at(-100)));
        current.lease_transitions = Some(4);

        let taken = claimed_spec(&current, &Claim::Take, "me", at(20), 3);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(taken.renew_time, Some(MicroTime(at(20))));
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.lease_duration_seconds, Some(3));

        let renewed = claimed_spec(&taken, &Claim::Renew, "me", at(21), 3);
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(21))));
        assert_eq!(renewed.lease_transitions, Some(5));

        let first = claimed_spec(&LeaseSpec::default(), &Claim::Take, "me", at(0), 3);
        assert_eq!(first.lease_transitions, Some(1));
        let ours_without_acquire_time = spec(Some("me"), Some(0), Some(3));
        let renewed = claimed_spec(&ours_without_acquire_time, &Claim::Renew, "me", at(1), 3);
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(1))));
        assert_eq!(renewed.lease_transitions, None);
        let created = created_spec("me", at(0), 3);
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(claim(Some(&created), at(1), "me"), Claim::Renew);
        assert_eq!(claim(Some(&created), at(1), "you"), wait("me", 2));
    }

    #[test]
    fn only_races_throttling_and_server_errors_are_retried() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status { code, ..kube::core::Status::default() }))
        };
        for (code, expected) in
            [(409, true), (404, true), (429, true), (503, true), (403, false), (422, false)]
        {
            assert_eq!(retryable(&api(code)), expected, "{code}");
        }
    }
}
