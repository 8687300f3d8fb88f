//! The engine's consumption loop (docs/consumption.md, docs/failures.md): poll a batch, adapt and map every message,
//! write the batch per collection, apply the error policy to the messages that failed, and
//! only then store the offsets librdkafka commits (periodically, on revocation and on close).
//! A failed MongoDB command is retried with back-off (idempotent thanks to the stale guard);
//! readiness and metrics are kept in [`EngineMonitor`]. SIGTERM: finish the batch in hand (or give
//! up a retry), commit, leave the group.

use crate::engine::code::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use mongodb::bson::{DateTime, doc};
use mongodb::{Client, Database};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{
    AdapterConfig, AdapterKind, EngineConfig, ErrorPolicy, SecretError, function_name,
};
use crate::engine::adapter::{
    Adapted, Adapter, Debezium, Iidr, KafkaRecord, Pairing, PrimaryKey, Skip,
};
use crate::engine::announce::{AnnounceError, Announcer};
use crate::engine::backoff::Backoff;
use crate::engine::context::{EngineContext, Halts};
use crate::engine::dead_letter::{self, DeadLetter, DeadLetterError};
use crate::engine::functions;
use crate::engine::kafka::consumer_config;
use crate::engine::metrics::{BatchCounts, EngineMonitor, ReasonLabel, RetryLabel};
use crate::engine::outputs::{Applied, FailedMessage};
use crate::engine::projection::{Projection, Source, Statement, group_of_hash, parse_kafka_key};
use crate::engine::script::{KafkaMessage, ScriptHost};
use crate::engine::writer::{self, Images, WriteOutcome};
use crate::probes::ServeError;

mod batch;
mod ledger;
mod policy;
mod startup;

use batch::{InFlight, MessageFailure, Prepared, WrittenBatch};
use ledger::{Fate, Ledger};
use startup::ping_mongodb;

/// Why the engine could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A secret could not be read.
    #[error(transparent)]
    ReadSecret(#[from] SecretError),
    /// The projections could not be built from the config.
    #[error("projection config: {0}")]
    BuildProjection(String),
    /// The MongoDB client could not be created.
    #[error("mongodb client: {0}")]
    ConnectMongo(mongodb::error::Error),
    /// The Kafka consumer could not be created or subscribed.
    #[error("kafka consumer: {0}")]
    CreateConsumer(KafkaError),
    /// The dead-letter producer could not be created.
    #[error(transparent)]
    CreateDeadLetter(DeadLetterError),
    /// The health and metrics server could not start.
    #[error(transparent)]
    ServeProbes(#[from] ServeError),
    /// The final commit at shutdown failed.
    #[error("final commit: {0}")]
    CommitOnShutdown(KafkaError),
    /// The JavaScript casts could not be loaded.
    #[error("functions: {0}")]
    LoadFunctions(crate::engine::script::ScriptError),
    /// The outputs could not be set up (schemas, functions, producer).
    #[error("outputs: {0}")]
    Outputs(Box<AnnounceError>),
}

impl EngineError {
    /// A configuration error of docs/failures.md: the config names something that does not load
    /// (a function file, a strategy schema, an unknown cast), which no retry can fix.
    pub fn is_configuration(&self) -> bool {
        match self {
            EngineError::BuildProjection(_) | EngineError::LoadFunctions(_) => true,
            EngineError::Outputs(e) => {
                matches!(**e, AnnounceError::LoadSchemas(_) | AnnounceError::LoadFunctions(_))
            }
            _ => false,
        }
    }
}

/// A projection with its adapter.
struct Target {
    /// The projection's name (metrics, dead-letter headers).
    name: String,
    projection: Projection,
    adapter: Adapting,
    /// The primary key as the adapter reads it (built once, not per message).
    key: PrimaryKey,
    /// The primary-key source fields, in order (what a JavaScript adapter is given).
    key_fields: Vec<String>,
    /// The primary-key target fields, in order (the outputs' keys).
    key_targets: Vec<String>,
}

/// How a target's messages become change events.
enum Adapting {
    /// A built-in adapter (docs/formats.md).
    BuiltIn(Adapter),
    /// A JavaScript adapter (docs/formats.md#custom-custom): its host and function name.
    Script(ScriptHost, String),
}

/// What a retried step reports: the `/readyz` dependency, the `rtu_transient_retries_total`
/// kind and the log line.
struct Retry {
    dependency: &'static str,
    kind: &'static str,
    what: &'static str,
}

/// The engine's state between batches.
pub struct Engine {
    config: EngineConfig,
    db: Database,
    consumer: StreamConsumer<EngineContext>,
    targets: Vec<Target>,
    by_topic: HashMap<String, usize>,
    monitor: Arc<EngineMonitor>,
    halts: Arc<Halts>,
    dead_letter: Option<DeadLetter>,
    /// The outputs (docs/outputs.md), when configured.
    announcer: Option<Announcer>,
    /// The `writeConcern` of every projection write (`mongodb.writeConcern`).
    write_concern: mongodb::bson::Document,
    /// IIDR audit before images waiting for their after image.
    pairing: Mutex<Pairing>,
    /// Turns true once shutdown is asked for.
    shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

impl Engine {
    /// Starts the health and metrics server, builds the projections, creates the MongoDB and
    /// Kafka clients, then consumes until `shutdown` completes ([`Engine::run`]). A configuration error (docs/failures.md: a function file or schema that does not
    /// load, a projection that cannot be built) is not a reason to exit, which would only
    /// crash-loop the pod: the engine consumes nothing, stays alive with `/healthz` OK and
    /// `/readyz` naming the error, and returns `Ok` at shutdown.
    pub async fn serve(
        config: EngineConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EngineError> {
        let monitor =
            EngineMonitor::new(Duration::from_millis(u64::from(config.tuning.unhealthy_after_ms)));
        monitor.serve(&config.telemetry.host, config.telemetry.port).await?;
        match Self::assemble(config, Arc::clone(&monitor)).await {
            Ok(engine) => engine.run(shutdown).await,
            Err(e) if e.is_configuration() => {
                error!(error = %e, "configuration error: not consuming until the config is fixed");
                monitor.health.set_problem(Some(format!("configuration error: {e}")));
                shutdown.await;
                info!("shutting down (nothing was consumed)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Ensures the primary-key indexes, subscribes and consumes until `shutdown` completes,
    /// then commits what is done and leaves the group.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EngineError> {
        let tx = self.shutdown_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        tokio::spawn(ping_mongodb(self.db.clone(), Arc::clone(&self.monitor), self.ping_every()));
        if self.ensure_indexes().await {
            self.subscribe()?;
            self.consume().await;
        }
        info!("shutting down: committing stored offsets and leaving the group");
        let commit = self.consumer.commit_consumer_state(CommitMode::Sync);
        match commit {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => return Err(EngineError::CommitOnShutdown(e)),
        }
        drop(self.consumer);
        info!("engine stopped");
        Ok(())
    }

    /// Sleeps `d`; false when shutdown was asked for meanwhile.
    async fn sleep_unless_shutdown(&self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The poll / write loop, until shutdown. Two batches are in hand at once: while batch N
    /// is written, batch N-1's outputs go out and its offsets are stored, and batch N+1 is
    /// polled. Writes stay one batch at a time (per-key order holds even with the stale guard
    /// off) and so do outputs (their order per key holds). A batch is finished as soon as
    /// nothing follows it, so its offsets are stored while idle.
    async fn consume(&self) {
        let mut next = self.next_or_shutdown().await;
        let mut pending: Option<WrittenBatch> = None;
        while let Some(batch) = next.take() {
            if self.halts.is_stopped() {
                // Stop policy: nothing is processed or stored; keep polling to stay in the group.
                if let Some(written) = pending.take()
                    && !self.finish(written).await
                {
                    return;
                }
                self.pause_all();
                next = self.next_or_shutdown().await;
                continue;
            }
            self.monitor.metrics.batch_messages.observe(batch.len() as f64);
            let mut segments = self.prepare_batch(batch);
            let Some(prepared) = segments.pop() else { return };
            // A batch's segments but the last: one after the other (each repeats a key of the
            // one before).
            for segment in segments {
                let (true, Some(written)) = self.finish_and_write(pending.take(), segment).await
                else {
                    return;
                };
                pending = Some(written);
            }
            let previous = pending.take();
            let poll = self.next_or_shutdown();
            tokio::pin!(poll);
            let work = self.finish_and_write(previous, prepared);
            tokio::pin!(work);
            let mut polled = None;
            let (finished, written) = loop {
                tokio::select! {
                    done = &mut work => break done,
                    batch = &mut poll, if polled.is_none() => polled = Some(batch),
                }
            };
            // Shutdown during a retry: the batch stays uncommitted for the next owner.
            let (true, Some(written)) = (finished, written) else { return };
            match polled {
                Some(batch) => {
                    pending = Some(written);
                    next = batch;
                }
                None => {
                    let (finished, batch) = tokio::join!(self.finish(written), &mut poll);
                    if !finished {
                        return;
                    }
                    next = batch;
                }
            }
        }
        if let Some(written) = pending {
            self.finish(written).await;
        }
    }

    /// Finishes `previous` (outputs, policy, offsets) while `prepared` is written, or first
    /// when `prepared` writes a key whose event `previous` has yet to announce. (finished,
    /// written): false / `None` when shutdown interrupted a retry.
    async fn finish_and_write(
        &self,
        previous: Option<WrittenBatch>,
        prepared: Prepared,
    ) -> (bool, Option<WrittenBatch>) {
        match previous {
            None => (true, self.write(prepared).await),
            Some(previous) if previous.0.shares_announced_keys(&prepared) => {
                if !self.finish(previous).await {
                    return (false, None);
                }
                (true, self.write(prepared).await)
            }
            Some(previous) => tokio::join!(self.finish(previous), self.write(prepared)),
        }
    }

    /// The next batch, or `None` once shutdown is asked for.
    async fn next_or_shutdown(&self) -> Option<Vec<OwnedMessage>> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => None,
            batch = self.next_batch() => Some(batch),
        }
    }

    /// Up to `maxBatchMessages` messages, waiting at most `maxBatchWaitMs` after the first.
    async fn next_batch(&self) -> Vec<OwnedMessage> {
        let tuning = &self.config.tuning;
        let mut batch = Vec::new();
        let first = match self.consumer.recv().await {
            Ok(m) => m.detach(),
            Err(e) => {
                self.poll_error(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return batch;
            }
        };
        batch.push(first);
        let deadline = Instant::now() + Duration::from_millis(u64::from(tuning.max_batch_wait_ms));
        while batch.len() < tuning.max_batch_messages as usize {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    self.poll_error(&e);
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    fn poll_error(&self, e: &KafkaError) {
        warn!(error = %e, "kafka poll error");
        self.monitor
            .metrics
            .transient_retries
            .get_or_create(&RetryLabel { kind: "kafka_poll" })
            .inc();
    }

    /// Runs `attempt` until it succeeds, with back-off (200 ms doubling to 30 s), `/readyz`
    /// failing for the dependency meanwhile and each retry counted; `None` when shutdown was
    /// asked for.
    async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        retry: Retry,
        mut attempt: impl FnMut() -> F,
    ) -> Option<T> {
        let mut backoff = Backoff::default();
        let health = &self.monitor.health;
        loop {
            match attempt().await {
                Ok(done) => {
                    health.recovered(retry.dependency);
                    return Some(done);
                }
                Err(e) => {
                    health.failing(retry.dependency);
                    let label = RetryLabel { kind: retry.kind };
                    self.monitor.metrics.transient_retries.get_or_create(&label).inc();
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{}", retry.what);
                    if !self.sleep_unless_shutdown(delay).await {
                        return None;
                    }
                }
            }
        }
    }
}
