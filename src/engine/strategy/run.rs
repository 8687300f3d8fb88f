//! Running the strategies of a batch's applied writes (docs/outputs.md#strategies): the
//! automatic strategy for the whole batch, each projection's JavaScript strategies write by
//! write, every run bounded by `outputs.strategies.maxExecTimeMs`. Timeouts follow
//! docs/failures.md: a batch whose automatic run times out three times runs message by
//! message and fails only the messages that time out alone; a JavaScript strategy that times
//! out three times for one message fails that message; until then a timeout is transient.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mongodb::Database;
use mongodb::bson::Document;
use tokio::time::Instant;
use tracing::warn;

use super::{AutomaticStrategy, Start, StrategyError, SvIdentifier};
use crate::engine::code::ErrorCode;
use crate::engine::metrics::{EngineMonitor, SingleViewLabel};
use crate::engine::outputs::{Applied, FailedMessage};
use crate::engine::projection::Source;
use crate::engine::script::{CallError, ScriptHost};

/// Why a batch's strategies must run again (transient).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The automatic strategy's look-ups failed.
    #[error("automatic strategy: {0}")]
    Automatic(Box<StrategyError>),
    /// A strategy ran past `outputs.strategies.maxExecTimeMs`.
    #[error("{what} ran past {limit:?}")]
    Timeout {
        /// Which strategy.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// A JavaScript strategy's look-up failed.
    #[error("{0}")]
    Lookup(CallError),
}

/// Attempts a strategy may time out for one message before it fails it (docs/failures.md).
const TIMEOUT_ATTEMPTS: u32 = 3;

/// Automatic-strategy runs in flight while it runs message by message.
const ALONE_IN_FLIGHT: usize = 4;

/// Runs message by message that all time out before the strategy gives up on finding a
/// message at fault (MongoDB is slow: transient).
const ALL_SLOW_AFTER: usize = 2 * ALONE_IN_FLIGHT;

/// Whether message-by-message runs say MongoDB is slow rather than a message at fault: none
/// of the `done` runs (of `total`) answered, and either enough of them timed out
/// ([`ALL_SLOW_AFTER`]) or all of several did. A lone message that times out is at fault.
fn looks_slow(answered: usize, done: usize, total: usize) -> bool {
    answered == 0 && (done >= ALL_SLOW_AFTER || (done == total && total > 1))
}

/// The strategies of one engine: the automatic one and the JavaScript ones per projection,
/// with the timeouts they have run into.
pub struct StrategyRunner {
    automatic: Option<AutomaticStrategy>,
    /// Projection -> (single view, function name).
    custom: HashMap<String, Vec<(String, String)>>,
    scripts: Option<ScriptHost>,
    /// The database a JavaScript strategy is given.
    database: String,
    db: Database,
    max_exec: Duration,
    /// JavaScript strategy timeouts per message (topic, partition, offset).
    timeouts: Mutex<HashMap<(String, i32, i64), u32>>,
    /// Consecutive timeouts of the automatic strategy on a whole batch.
    automatic_timeouts: AtomicU32,
    monitor: Arc<EngineMonitor>,
}

/// What [`StrategyRunner::new`] is given: the loaded strategies and where they run.
pub struct StrategySet {
    /// The automatic strategy, loaded and checked.
    pub automatic: Option<AutomaticStrategy>,
    /// Projection -> (single view, function name) of the JavaScript strategies.
    pub custom: HashMap<String, Vec<(String, String)>>,
    /// The host of the JavaScript strategy functions.
    pub scripts: Option<ScriptHost>,
    /// `outputs.strategies.maxExecTimeMs`.
    pub max_exec: Duration,
}

impl StrategyRunner {
    /// Runs `set` against `db` (its name: `database`), timing every run into `monitor`.
    pub fn new(
        set: StrategySet,
        db: Database,
        database: String,
        monitor: Arc<EngineMonitor>,
    ) -> Self {
        let StrategySet { automatic, custom, scripts, max_exec } = set;
        StrategyRunner {
            automatic,
            custom,
            scripts,
            database,
            db,
            max_exec,
            timeouts: Mutex::new(HashMap::new()),
            automatic_timeouts: AtomicU32::new(0),
            monitor,
        }
    }

    /// Whether some strategy starts from writes of `projection`.
    pub fn covers(&self, projection: &str) -> bool {
        self.custom.contains_key(projection)
            || self.automatic.as_ref().is_some_and(|a| a.covers(projection))
    }

    /// Per applied write: the single-view identifiers of every strategy, deduplicated per
    /// single view per message.
    pub async fn identifiers(
        &self,
        applied: &[Applied<'_>],
    ) -> Result<(Vec<Vec<SvIdentifier>>, Vec<FailedMessage>), RunError> {
        let mut found: Vec<Vec<SvIdentifier>> = applied.iter().map(|_| Vec::new()).collect();
        if !applied.iter().any(|a| self.covers(a.projection)) {
            return Ok((found, Vec::new()));
        }
        let mut failures = self.automatic_identifiers(applied, &mut found).await?;
        failures.extend(self.custom_identifiers(applied, &mut found).await?);
        dedupe_per_message(applied, &mut found);
        Ok((found, failures))
    }

    async fn automatic_identifiers(
        &self,
        applied: &[Applied<'_>],
        found: &mut [Vec<SvIdentifier>],
    ) -> Result<Vec<FailedMessage>, RunError> {
        let Some(automatic) = &self.automatic else { return Ok(Vec::new()) };
        let mut starts = Vec::new();
        let mut owners = Vec::new();
        for (i, a) in applied.iter().enumerate() {
            if !automatic.covers(a.projection) {
                continue;
            }
            let documents = start_documents(automatic, a);
            if !documents.is_empty() {
                starts.push(Start { projection: a.projection.to_string(), documents });
                owners.push(i);
            }
        }
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let limit = self.max_exec;
        let result = match tokio::time::timeout(limit, automatic.identifiers(&self.db, &starts))
            .await
        {
            Ok(result) => result.map_err(|e| RunError::Automatic(Box::new(e)))?,
            Err(_) => {
                let attempts = self.automatic_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if attempts < TIMEOUT_ATTEMPTS {
                    return Err(RunError::Timeout {
                        what: format!("the automatic strategy (attempt {attempts})"),
                        limit,
                    });
                }
                self.automatic_timeouts.store(0, Ordering::Relaxed);
                warn!(
                    attempts,
                    messages = starts.len(),
                    "the automatic strategy timed out for the whole batch {attempts} times: running it \
                     message by message to find the ones that time out alone"
                );
                return self.automatic_alone(automatic, applied, &owners, starts, found).await;
            }
        };
        self.automatic_timeouts.store(0, Ordering::Relaxed);
        self.observe("__automatic__", started);
        for (owner, ids) in owners.into_iter().zip(result) {
            found[owner].extend(ids);
        }
        Ok(Vec::new())
    }

    /// The automatic strategy message by message (a few at a time), each run bounded by
    /// `maxExecTimeMs`: a message whose own run times out is a `STRATEGY_TIMEOUT` failure
    /// (its batch already timed out [`TIMEOUT_ATTEMPTS`] times); the others get their
    /// identifiers. A look-up error is still transient for the batch, and so is a run where
    /// no message answered alone ([`looks_slow`]: MongoDB is slow, no message is at fault).
    async fn automatic_alone(
        &self,
        automatic: &AutomaticStrategy,
        applied: &[Applied<'_>],
        owners: &[usize],
        starts: Vec<Start>,
        found: &mut [Vec<SvIdentifier>],
    ) -> Result<Vec<FailedMessage>, RunError> {
        let starts_len = starts.len();
        let runs = starts.into_iter().zip(owners).map(|(start, &owner)| async move {
            let alone = std::slice::from_ref(&start);
            let run = tokio::time::timeout(self.max_exec, automatic.identifiers(&self.db, alone));
            (owner, run.await)
        });
        let mut stream = futures::stream::iter(runs).buffered(ALONE_IN_FLIGHT);
        let mut results = Vec::new();
        let mut answered = 0;
        while let Some((owner, result)) = stream.next().await {
            answered += usize::from(result.is_ok());
            results.push((owner, result));
            if looks_slow(answered, results.len(), starts_len) {
                return Err(RunError::Timeout {
                    what: format!(
                        "the automatic strategy: {} message(s) each timed out alone and none \
                         answered, so MongoDB looks slow rather than one message at fault",
                        results.len()
                    ),
                    limit: self.max_exec,
                });
            }
        }
        let mut failures = Vec::new();
        for (owner, result) in results {
            match result {
                Ok(ids) => {
                    let ids = ids.map_err(|e| RunError::Automatic(Box::new(e)))?;
                    found[owner].extend(ids.into_iter().flatten());
                }
                Err(_) => failures.push(FailedMessage {
                    message: applied[owner].message,
                    code: ErrorCode::StrategyTimeout,
                    reason: format!(
                        "the automatic strategy ran past {:?} for this message alone, after its \
                         batch timed out {TIMEOUT_ATTEMPTS} times",
                        self.max_exec
                    ),
                }),
            }
        }
        Ok(failures)
    }

    async fn custom_identifiers(
        &self,
        applied: &[Applied<'_>],
        found: &mut [Vec<SvIdentifier>],
    ) -> Result<Vec<FailedMessage>, RunError> {
        let mut failures = Vec::new();
        let Some(scripts) = &self.scripts else { return Ok(failures) };
        for (i, a) in applied.iter().enumerate() {
            let Some(functions) = self.custom.get(a.projection) else { continue };
            let Some(document) = a.images.after.as_deref().or(a.images.before.as_deref()) else {
                continue;
            };
            for (view, function) in functions {
                let started = Instant::now();
                let call = scripts.strategy(function, &self.database, document, self.db.clone());
                match call.await {
                    Ok(ids) => {
                        self.observe(view, started);
                        self.forget_timeouts(a.source);
                        let ids = ids.into_iter().map(|identifier| SvIdentifier {
                            single_view: view.clone(),
                            identifier,
                        });
                        found[i].extend(ids);
                    }
                    Err(e) => {
                        if let Some(failure) = self.strategy_failed(a, e)? {
                            failures.push(failure);
                            break;
                        }
                    }
                }
            }
        }
        Ok(failures)
    }

    /// A JavaScript strategy's error: transient (`Err`, retry the batch) while a look-up
    /// fails or until its message timed out three times, else the message's failure.
    fn strategy_failed(
        &self,
        a: &Applied<'_>,
        e: CallError,
    ) -> Result<Option<FailedMessage>, RunError> {
        if matches!(e, CallError::Lookup { .. }) {
            return Err(RunError::Lookup(e));
        }
        if matches!(e, CallError::Timeout { .. }) {
            let key = (a.source.topic.clone(), a.source.partition, a.source.offset);
            let attempts = {
                let mut timeouts = self.timeouts.lock().unwrap_or_else(|p| p.into_inner());
                let n = timeouts.entry(key.clone()).or_default();
                *n += 1;
                let attempts = *n;
                if attempts >= TIMEOUT_ATTEMPTS {
                    timeouts.remove(&key);
                }
                attempts
            };
            if attempts < TIMEOUT_ATTEMPTS {
                return Err(RunError::Timeout { what: e.to_string(), limit: self.max_exec });
            }
        }
        Ok(Some(FailedMessage { message: a.message, code: e.code(), reason: e.to_string() }))
    }

    /// A message whose strategy answered no longer counts its earlier timeouts.
    fn forget_timeouts(&self, source: &Source) {
        let mut timeouts = self.timeouts.lock().unwrap_or_else(|p| p.into_inner());
        if !timeouts.is_empty() {
            timeouts.remove(&(source.topic.clone(), source.partition, source.offset));
        }
    }

    fn observe(&self, view: &str, started: Instant) {
        let label = SingleViewLabel { single_view: view.to_string() };
        let histogram = self.monitor.metrics.strategy_duration.get_or_create(&label);
        histogram.observe(started.elapsed().as_secs_f64());
    }
}

/// Start documents of the automatic strategy: the stored document after the write (before
/// it for a hard delete), plus the one before when a field the walk reads changed (so the
/// single view that lost the record is rebuilt too, docs/outputs.md#strategies).
fn start_documents(automatic: &AutomaticStrategy, a: &Applied<'_>) -> Vec<Arc<Document>> {
    let images = a.images;
    let mut documents = Vec::with_capacity(2);
    if let Some(doc) = images.after.as_ref().or(images.before.as_ref()) {
        documents.push(Arc::clone(doc));
    }
    if let (Some(before), Some(after)) = (&images.before, &images.after) {
        let changed =
            automatic.fields_read(a.projection).iter().any(|f| before.get(f) != after.get(f));
        if changed {
            documents.push(Arc::clone(before));
        }
    }
    documents
}

/// Identifiers are deduplicated per single view per message (a PK change is two writes).
fn dedupe_per_message(applied: &[Applied<'_>], found: &mut [Vec<SvIdentifier>]) {
    let mut seen: HashMap<usize, Vec<(String, Document)>> = HashMap::new();
    for (a, ids) in applied.iter().zip(found.iter_mut()) {
        let seen = seen.entry(a.message).or_default();
        ids.retain(|id| {
            let key = (id.single_view.clone(), id.identifier.clone());
            if seen.contains(&key) {
                false
            } else {
                seen.push(key);
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_by_message_runs_blame_a_message_only_when_another_one_answered() {
        // (answered, done, total) -> MongoDB looks slow (transient), else failures are the
        // messages' own.
        let cases = [
            ((0, 1, 1), false, "a lone message that times out is at fault"),
            ((1, 3, 4), false, "one answered: the others that time out are at fault"),
            ((0, 3, 4), false, "not all done and fewer than ALL_SLOW_AFTER: keep going"),
            ((0, 4, 4), true, "every one of several timed out"),
            ((0, ALL_SLOW_AFTER, 2000), true, "enough timed out and none answered: stop early"),
            ((1, ALL_SLOW_AFTER, 2000), false, "one answered: keep going"),
        ];
        for ((answered, done, total), slow, why) in cases {
            assert_eq!(looks_slow(answered, done, total), slow, "{why}");
        }
    }
}
