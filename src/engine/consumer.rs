//! The engine's consumption loop (docs/consumption.md, §6): poll a batch, adapt and map every message,
//! write the batch per collection, apply the error policy to the messages that failed, and
//! only then store the offsets librdkafka commits (periodically, on revocation and on close).
//! A failed MongoDB command is retried with back-off (idempotent thanks to the stale guard);
//! readiness and metrics are kept in [`Telemetry`]. SIGTERM: finish the batch in hand (or give
//! up a retry), commit, leave the group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::engine::adapter::{Adapted, Adapter, Debezium, Iidr, Pairing, PrimaryKey, Record, Skip};
use crate::engine::announce::{self, AnnounceError, Announcer, Applied};
use crate::engine::context::{EngineContext, Halts};
use crate::engine::dead_letter::{self, DeadLetter, DeadLetterError};
use crate::engine::functions;
use crate::engine::kafka::consumer_config;
use crate::engine::projection::{Projection, Source, Statement, parse_kafka_key};
use crate::engine::script::{KafkaMessage, ScriptHost};
use crate::engine::telemetry::{BatchCounts, KindLabel, ReasonLabel, Telemetry, TelemetryError};
use crate::engine::writer::{self, Images, Outcome};

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
    ServeTelemetry(#[from] TelemetryError),
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

/// A message that failed permanently, for logs and the error policy.
struct MessageFailure {
    /// The batch index of the message.
    index: usize,
    /// Its projection (`None` when its topic has none).
    target: Option<usize>,
    code: &'static str,
    reason: String,
}

/// What became of one message of a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Its partition is halted by the error policy: not processed, not stored.
    Halted,
    /// A format-defined skip (tombstone, truncate).
    Skipped,
    /// Written; `applied` once a statement changed (or removed) a document, else stale.
    Written { applied: bool },
    /// Failed, then handled by the error policy.
    Failed,
    /// Failed, then produced to the dead-letter topic.
    DeadLettered,
}

impl Fate {
    fn label(self) -> Option<&'static str> {
        match self {
            Fate::Halted => None,
            Fate::Skipped => Some("skipped"),
            Fate::Written { applied: true } => Some("applied"),
            Fate::Written { applied: false } => Some("stale"),
            Fate::Failed => Some("failed"),
            Fate::DeadLettered => Some("dead_lettered"),
        }
    }
}

/// A batch adapted and mapped, ready to write as `targets x writesInFlight` groups: group
/// `target * writesInFlight + k` holds the statements of target `target` whose primary key
/// hashes to `k`, in message order.
struct Prepared {
    /// Per group: the statements.
    statements: Vec<Vec<Statement>>,
    /// Per group: the batch index of the message each statement comes from.
    origins: Vec<Vec<usize>>,
    /// Per topic-partition: the first offset that must not be stored (a failure under
    /// `stop` / `pauseTopic`).
    blocked: BTreeMap<(String, i32), i64>,
    /// Per message: its target (if any) and fate.
    targets: Vec<Option<usize>>,
    fates: Vec<Fate>,
    /// Messages that failed, in batch order.
    failures: Vec<MessageFailure>,
    counts: BatchCounts,
    /// Per message: where it came from, kept for the outputs (only when some are on).
    sources: Vec<Option<Source>>,
    /// When the batch was prepared, right after its poll (v2 pr-update `pollTimestamp`).
    polled_at_ms: i64,
}

/// What a retried step reports: the `/readyz` dependency, the `rtu_transient_retries_total`
/// kind and the log line.
struct Retry {
    dependency: &'static str,
    kind: &'static str,
    what: &'static str,
}

/// A batch written to MongoDB, waiting for its outputs and offsets.
struct Written {
    batch: Vec<OwnedMessage>,
    prepared: Prepared,
    /// Per write group: the images of each statement (when an output needs them).
    images: Vec<Vec<Option<Images>>>,
}

/// The engine's state between batches.
pub struct Engine {
    config: EngineConfig,
    db: Database,
    consumer: StreamConsumer<EngineContext>,
    targets: Vec<Target>,
    by_topic: HashMap<String, usize>,
    telemetry: Arc<Telemetry>,
    halts: Arc<Halts>,
    dead_letter: Option<DeadLetter>,
    /// The outputs (docs/outputs.md), when configured.
    announcer: Option<Announcer>,
    /// IIDR audit before images waiting for their after image.
    pairing: Mutex<Pairing>,
    /// Turns true once shutdown is asked for.
    shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

/// The built-in adapter of a projection mapping these source fields.
fn adapter_of(config: &AdapterConfig, mapped: Vec<String>) -> Result<Adapter, EngineError> {
    Ok(match config.kind {
        AdapterKind::Basic | AdapterKind::Db2 => {
            Adapter::Basic(Iidr { options: config.iidr.clone(), mapped })
        }
        AdapterKind::GoldenGate => {
            Adapter::GoldenGate { use_pos_as_counter: config.use_pos_as_counter }
        }
        AdapterKind::Debezium => Adapter::Debezium(Debezium::new(config.debezium.clone(), mapped)),
        AdapterKind::Custom => Adapter::Custom(
            config
                .custom
                .clone()
                .ok_or_else(|| EngineError::BuildProjection("adapter.custom is missing".into()))?,
        ),
    })
}

/// Logs a format-defined skip: a truncate as a warning (projections keep their documents),
/// what a change stream carries besides rows at debug level.
fn log_skip(msg: &OwnedMessage, skip: Skip) {
    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
    match skip {
        Skip::Truncate => warn!(
            topic,
            partition,
            offset,
            reason = skip.reason(),
            "truncate skipped: the projection keeps its documents"
        ),
        Skip::SchemaChange => info!(topic, partition, offset, reason = skip.reason(), "skipped"),
        _ => debug!(topic, partition, offset, reason = skip.reason(), "skipped"),
    }
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
        let telemetry =
            Telemetry::new(Duration::from_millis(u64::from(config.tuning.unhealthy_after_ms)));
        telemetry.serve(&config.telemetry.host, config.telemetry.port).await?;
        match Self::assemble(config, Arc::clone(&telemetry)).await {
            Ok(engine) => engine.run(shutdown).await,
            Err(e) if e.is_configuration() => {
                error!(error = %e, "configuration error: not consuming until the config is fixed");
                telemetry.health.set_problem(Some(format!("configuration error: {e}")));
                shutdown.await;
                info!("shutting down (nothing was consumed)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Builds the projections, loads the functions and creates the clients, reporting to
    /// `telemetry` (already serving).
    async fn assemble(
        config: EngineConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, EngineError> {
        let mut targets = Vec::new();
        let mut by_topic = HashMap::new();
        let casts = functions::load_casts(&config).map_err(EngineError::LoadFunctions)?;
        let adapters = functions::load_adapters(&config).map_err(EngineError::LoadFunctions)?;
        for p in &config.projections {
            let projection = Projection::with_casts(p, &config.writes, casts.as_ref())
                .map_err(EngineError::BuildProjection)?;
            let adapter_config = p.adapter.as_ref().unwrap_or(&config.adapter);
            let adapter = match (&adapter_config.function, &adapters) {
                (Some(f), Some(host)) => Adapting::Script(host.clone(), function_name(f).into()),
                _ => Adapting::BuiltIn(adapter_of(
                    adapter_config,
                    p.fields.iter().map(|f| f.name.clone()).collect(),
                )?),
            };
            for topic in &p.topics {
                by_topic.insert(topic.clone(), targets.len());
            }
            let key = projection.adapter_key();
            let key_fields = key.0.iter().map(|(f, _)| f.clone()).collect();
            let key_targets =
                projection.primary_key_targets().into_iter().map(String::from).collect();
            let name = p.name.clone();
            targets.push(Target { name, projection, adapter, key, key_fields, key_targets });
        }
        let uri = config.mongodb.uri.read("mongodb.uri")?;
        let db = Client::with_uri_str(&uri)
            .await
            .map_err(EngineError::ConnectMongo)?
            .database(&config.mongodb.database);
        let halts = Arc::new(Halts::default());
        let context =
            EngineContext { telemetry: Arc::clone(&telemetry), halts: Arc::clone(&halts) };
        let consumer: StreamConsumer<EngineContext> = consumer_config(
            &config.kafka,
            config.tuning.commit_interval_ms,
            config.telemetry.lag_interval_ms,
        )?
        .create_with_context(context)
        .map_err(EngineError::CreateConsumer)?;
        let dead_letter = match &config.error_policy {
            ErrorPolicy::DeadLetter { topic } => {
                let rtu = config.name.as_deref().unwrap_or(&config.kafka.group_id);
                Some(
                    DeadLetter::new(&config.kafka, topic, rtu)
                        .map_err(EngineError::CreateDeadLetter)?,
                )
            }
            _ => None,
        };
        let announcer = Announcer::new(&config, db.clone(), Arc::clone(&telemetry))
            .map_err(|e| EngineError::Outputs(Box::new(e)))?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Engine {
            config,
            db,
            consumer,
            targets,
            by_topic,
            telemetry,
            halts,
            dead_letter,
            announcer,
            pairing: Mutex::default(),
            shutdown,
            shutdown_tx,
        })
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
        tokio::spawn(ping_mongodb(self.db.clone(), Arc::clone(&self.telemetry), self.ping_every()));
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

    fn ping_every(&self) -> Duration {
        let half = u64::from(self.config.tuning.unhealthy_after_ms / 2).max(50);
        Duration::from_millis(half.min(5000))
    }

    /// Creates (or finds) every primary-key unique index, retrying with back-off while
    /// MongoDB refuses; false when shutdown came first.
    async fn ensure_indexes(&self) -> bool {
        if !self.config.writes.ensure_indexes {
            return self.verify_indexes().await;
        }
        for t in &self.targets {
            let mut backoff = Duration::from_millis(200);
            loop {
                match writer::ensure_primary_key_index(&self.db, &t.projection).await {
                    Ok(()) => {
                        self.telemetry.health.recovered("mongodb indexes");
                        break;
                    }
                    Err(e) => {
                        self.telemetry.health.failing("mongodb indexes");
                        error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot ensure the primary-key index; not consuming until it exists");
                        if !self.sleep_unless_shutdown(backoff).await {
                            return false;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        self.ensure_output_indexes().await
    }

    /// Creates the projection-changes indexes (when that output is on), retrying with
    /// back-off; false when shutdown came first.
    async fn ensure_output_indexes(&self) -> bool {
        let Some(announcer) = &self.announcer else { return true };
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = announcer.ensure_indexes().await {
            self.telemetry.health.failing("mongodb indexes");
            error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot ensure the projection-changes indexes; not consuming until they exist");
            if !self.sleep_unless_shutdown(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        self.telemetry.health.recovered("mongodb indexes");
        true
    }

    /// With `ensureIndexes: false`: waits until every projection has its unique primary-key
    /// index, not ready meanwhile with the missing one named (docs/writes.md#indexes); false when shutdown
    /// came first.
    async fn verify_indexes(&self) -> bool {
        let health = &self.telemetry.health;
        for t in &self.targets {
            loop {
                let problem = match writer::has_primary_key_index(&self.db, &t.projection).await {
                    Ok(true) => break,
                    Ok(false) => format!(
                        "no unique index on {} ({}) and writes.ensureIndexes is false: create it \
                         (the console names it {})",
                        t.projection.collection,
                        t.projection.primary_key_targets().join(", "),
                        writer::PRIMARY_KEY_INDEX,
                    ),
                    Err(e) => e.to_string(),
                };
                error!(problem = %problem, "not consuming until the primary-key index exists; checking again in 5s");
                health.set_problem(Some(problem));
                if !self.sleep_unless_shutdown(Duration::from_secs(5)).await {
                    return false;
                }
            }
        }
        health.set_problem(None);
        true
    }

    fn subscribe(&self) -> Result<(), EngineError> {
        let topics: Vec<&str> = self.by_topic.keys().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(EngineError::CreateConsumer)?;
        info!(group = %self.config.kafka.group_id, ?topics, policy = ?self.config.error_policy, "engine subscribed");
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
        let mut pending: Option<Written> = None;
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
            self.telemetry.metrics.batch_messages.observe(batch.len() as f64);
            let prepared = self.prepare_batch(&batch);
            let previous = pending.take();
            let poll = self.next_or_shutdown();
            tokio::pin!(poll);
            let work = async {
                let finish_previous = async {
                    match previous {
                        Some(written) => self.finish(written).await,
                        None => true,
                    }
                };
                tokio::join!(finish_previous, self.write(batch, prepared))
            };
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
        self.telemetry
            .metrics
            .transient_retries
            .get_or_create(&KindLabel { kind: "kafka_poll" })
            .inc();
    }

    /// Adapts and maps a batch: statements per target. Under `stop` / `pauseTopic` a failing
    /// message blocks its partition from that offset on.
    fn prepare_batch(&self, batch: &[OwnedMessage]) -> Prepared {
        let now = DateTime::now();
        let groups = self.groups_per_target();
        let halted = self.halts.halted();
        let dead_letter = self.dead_letter.is_some();
        let mut prepared = Prepared {
            statements: vec![Vec::new(); self.targets.len() * groups],
            origins: vec![Vec::new(); self.targets.len() * groups],
            blocked: BTreeMap::new(),
            targets: vec![None; batch.len()],
            fates: vec![Fate::Halted; batch.len()],
            failures: Vec::new(),
            counts: BatchCounts::default(),
            sources: Vec::new(),
            polled_at_ms: now.timestamp_millis(),
        };
        for (i, msg) in batch.iter().enumerate() {
            if (!halted.is_empty() || !prepared.blocked.is_empty())
                && is_in(&halted, &prepared.blocked, msg)
            {
                continue;
            }
            let target = self.by_topic.get(msg.topic()).copied();
            prepared.targets[i] = target;
            match self.prepare(msg, target, now, &mut prepared.counts) {
                Ok(Ok((stmts, source))) => {
                    prepared.fates[i] = Fate::Written { applied: false };
                    if self.announcer.is_some() {
                        prepared.sources.resize(batch.len(), None);
                        prepared.sources[i] = Some(source);
                    }
                    let Some(target) = target else { continue };
                    for statement in stmts {
                        let projection = &self.targets[target].projection;
                        let group = target * groups + projection.group_of(&statement, groups);
                        prepared.origins[group].push(i);
                        prepared.statements[group].push(statement);
                    }
                }
                Ok(Err(skip)) => {
                    prepared.fates[i] = Fate::Skipped;
                    *prepared.counts.skipped.entry(skip.reason()).or_default() += 1;
                }
                Err((code, reason)) => {
                    prepared.fates[i] = Fate::Failed;
                    prepared.failures.push(MessageFailure { index: i, target, code, reason });
                    if !dead_letter {
                        let tp = (msg.topic().to_string(), msg.partition());
                        prepared.blocked.insert(tp, msg.offset());
                    }
                }
            }
        }
        // A before image waiting for its after image must not be committed: after a restart
        // the pair is read again from it.
        let pairing = self.pairing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (topic, partition, offset) in pairing.waiting() {
            let first = prepared.blocked.entry((topic.to_string(), partition)).or_insert(offset);
            *first = (*first).min(offset);
        }
        prepared
    }

    /// Pairs an IIDR record with the before image waiting on its partition; a failed record
    /// ends the wait too.
    fn pair(
        &self,
        msg: &OwnedMessage,
        adapted: Result<Adapted, (&'static str, String)>,
    ) -> Result<Adapted, (&'static str, String)> {
        let mut pairing = self.pairing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (record, failure) = match adapted {
            Ok(adapted) => (adapted, None),
            Err(failure) => (Adapted::Skip(Skip::NullValue), Some(failure)),
        };
        let paired = pairing.pair(msg.topic(), msg.partition(), msg.offset(), record);
        if let Some(orphan) = paired.orphan {
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = orphan,
                "IIDR before image (UB) not followed by its after image (UP): nothing written for it"
            );
        }
        match failure {
            Some(failure) => Err(failure),
            None => Ok(paired.adapted),
        }
    }

    /// Adapts and maps one message: its statements, a skip, or a failure (code, reason).
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        msg: &OwnedMessage,
        target: Option<usize>,
        now: DateTime,
        counts: &mut BatchCounts,
    ) -> Result<Result<(Vec<Statement>, Source), Skip>, (&'static str, String)> {
        let Some(target) = target else {
            return Err(("UNKNOWN_TOPIC", "no projection for this topic".into()));
        };
        let t = &self.targets[target];
        let change = match &t.adapter {
            Adapting::Script(host, name) => {
                let message = KafkaMessage {
                    key: msg.key(),
                    value: msg.payload(),
                    timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
                    offset: msg.offset(),
                };
                host.adapt(name, &message, &t.key_fields).map_err(|e| (e.code(), e.to_string()))?
            }
            Adapting::BuiltIn(adapter) => {
                let record = Record { key: msg.key(), value: msg.payload() };
                let adapted = adapter.adapt(record, &t.key).map_err(|e| (e.code(), e.to_string()));
                let adapted = match adapter {
                    Adapter::Basic(_) => self.pair(msg, adapted)?,
                    _ => adapted?,
                };
                match adapted {
                    Adapted::Change(c) | Adapted::AfterImage { change: c, .. } => c,
                    Adapted::Skip(skip) => {
                        log_skip(msg, skip);
                        return Ok(Err(skip));
                    }
                    Adapted::BeforeImage(_) => return Ok(Err(Skip::BeforeImage)),
                }
            }
        };
        let source = source_of(msg);
        let mapped =
            t.projection.map(&change, &source, now).map_err(|e| (e.code(), e.to_string()))?;
        for field in mapped.unknown_fields {
            *counts.unknown_fields.entry((t.name.clone(), field)).or_default() += 1;
        }
        for field in mapped.uncastable_fields {
            *counts.uncastable_fields.entry((t.name.clone(), field)).or_default() += 1;
        }
        Ok(Ok((mapped.statements, source)))
    }

    /// Writes a batch (retried until MongoDB acknowledges it) and sorts its outcomes; `None`
    /// when shutdown interrupted a retry.
    async fn write(&self, batch: Vec<OwnedMessage>, mut prepared: Prepared) -> Option<Written> {
        let written = self.write_with_retry(&prepared.statements).await?;
        let (outcomes, images): (Vec<_>, Vec<_>) = written.into_iter().unzip();
        self.collect_outcomes(&batch, &mut prepared, outcomes);
        Some(Written { batch, prepared, images })
    }

    /// Finishes a written batch: its outputs, the error policy for what failed, its offsets and
    /// metrics; false when shutdown interrupted a retry.
    async fn finish(&self, written: Written) -> bool {
        let Written { batch, mut prepared, images } = written;
        self.halt_late(&batch, &mut prepared);
        if !self.announce(&batch, &mut prepared, &images).await {
            return false;
        }
        if !self.apply_policy(&batch, &mut prepared).await {
            return false;
        }
        self.store_offsets(&batch, &prepared);
        let Prepared { targets, fates, mut counts, .. } = prepared;
        // Counted with borrowed keys, then once per distinct key into the owned ones.
        let mut messages: BTreeMap<(&str, Option<usize>, &'static str), u64> = BTreeMap::new();
        for ((msg, target), fate) in batch.iter().zip(targets).zip(fates) {
            if let Some(outcome) = fate.label() {
                *messages.entry((msg.topic(), target, outcome)).or_default() += 1;
            }
        }
        for ((topic, target, outcome), n) in messages {
            let projection = target.map(|t| self.targets[t].name.clone()).unwrap_or_default();
            counts.messages.insert((topic.to_string(), projection, outcome), n);
        }
        counts.publish(&self.telemetry.metrics);
        true
    }

    /// The error policy of the previous batch may have halted partitions (or stopped the
    /// worker) after this batch was prepared and written: its messages there are not
    /// announced, not judged again and not stored; a replay writes them again.
    fn halt_late(&self, batch: &[OwnedMessage], prepared: &mut Prepared) {
        let stopped = self.halts.is_stopped();
        let halted = self.halts.halted();
        if !stopped && halted.is_empty() {
            return;
        }
        for (msg, fate) in batch.iter().zip(prepared.fates.iter_mut()) {
            if stopped || halted.contains(&(msg.topic().to_string(), msg.partition())) {
                *fate = Fate::Halted;
            }
        }
        let fates = &prepared.fates;
        prepared.failures.retain(|f| fates[f.index] != Fate::Halted);
    }

    /// Per statement: the message's fate, the write counters, and the failures (which, under
    /// `stop` / `pauseTopic`, block their partition).
    fn collect_outcomes(
        &self,
        batch: &[OwnedMessage],
        prepared: &mut Prepared,
        outcomes: Vec<Vec<Outcome>>,
    ) {
        let groups = self.groups_per_target();
        let dead_letter = self.dead_letter.is_some();
        for (group, results) in outcomes.into_iter().enumerate() {
            let target = group / groups;
            for (&i, outcome) in prepared.origins[group].iter().zip(results) {
                let op = match outcome {
                    Outcome::Inserted => "insert",
                    Outcome::Updated => "update",
                    Outcome::Deleted { deleted: true } => "delete",
                    Outcome::Deleted { deleted: false } | Outcome::Stale => continue,
                    Outcome::Failed { code, message } => {
                        let msg = &batch[i];
                        if prepared.fates[i] == Fate::Failed {
                            continue; // a message's second statement: one failure is enough
                        }
                        prepared.fates[i] = Fate::Failed;
                        prepared.failures.push(MessageFailure {
                            index: i,
                            target: Some(target),
                            code,
                            reason: message,
                        });
                        if !dead_letter {
                            let tp = (msg.topic().to_string(), msg.partition());
                            let first = prepared.blocked.entry(tp).or_insert(msg.offset());
                            *first = (*first).min(msg.offset());
                        }
                        continue;
                    }
                };
                if let Fate::Written { applied } = &mut prepared.fates[i] {
                    *applied = true;
                }
                let name = self.targets[target].name.clone();
                *prepared.counts.writes.entry((name, op)).or_default() += 1;
            }
        }
        prepared.failures.sort_by_key(|f| f.index);
    }

    /// Announces the batch's applied writes (docs/outputs.md), retried with back-off until every
    /// output is acknowledged; a message a strategy failed becomes a failure for the error
    /// policy. False when shutdown interrupted a retry.
    async fn announce(
        &self,
        batch: &[OwnedMessage],
        prepared: &mut Prepared,
        images: &[Vec<Option<Images>>],
    ) -> bool {
        let Some(announcer) = &self.announcer else { return true };
        let groups = self.groups_per_target();
        let mut writes: Vec<(usize, usize, &Images)> = Vec::new();
        for (group, group_images) in images.iter().enumerate() {
            for (&i, image) in prepared.origins[group].iter().zip(group_images) {
                if let (Some(image), Fate::Written { applied: true }) = (image, prepared.fates[i]) {
                    writes.push((i, group / groups, image));
                }
            }
        }
        if writes.is_empty() {
            return true;
        }
        // Message order; a PK change's delete before its insert.
        writes.sort_by_key(|(i, _, image)| (*i, image.change != writer::Change::Delete));
        let applied: Vec<Applied<'_>> = writes
            .iter()
            .filter_map(|(i, target, images)| {
                Some(Applied {
                    message: *i,
                    projection: &self.targets[*target].name,
                    primary_keys: &self.targets[*target].key_targets,
                    images,
                    source: prepared.sources.get(*i)?.as_ref()?,
                    polled_at_ms: prepared.polled_at_ms,
                })
            })
            .collect();
        let Some(failures) = self.announce_with_retry(announcer, &applied).await else {
            return false;
        };
        let dead_letter = self.dead_letter.is_some();
        for f in failures {
            let target = applied
                .iter()
                .find(|a| a.message == f.message)
                .and_then(|a| self.targets.iter().position(|t| t.name == a.projection));
            prepared.fates[f.message] = Fate::Failed;
            let msg = &batch[f.message];
            if !dead_letter {
                let tp = (msg.topic().to_string(), msg.partition());
                let first = prepared.blocked.entry(tp).or_insert(msg.offset());
                *first = (*first).min(msg.offset());
            }
            prepared.failures.push(MessageFailure {
                index: f.message,
                target,
                code: f.code,
                reason: f.reason,
            });
        }
        prepared.failures.sort_by_key(|f| f.index);
        true
    }

    async fn announce_with_retry(
        &self,
        announcer: &Announcer,
        applied: &[Applied<'_>],
    ) -> Option<Vec<announce::Failure>> {
        let retry = Retry {
            dependency: "outputs",
            kind: "outputs",
            what: "outputs failed; announcing the batch again",
        };
        self.retry(retry, || announcer.announce(applied)).await
    }

    /// Runs `attempt` until it succeeds, with back-off (200 ms doubling to 30 s), `/readyz`
    /// failing for the dependency meanwhile and each retry counted; `None` when shutdown was
    /// asked for.
    async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        retry: Retry,
        mut attempt: impl FnMut() -> F,
    ) -> Option<T> {
        let mut backoff = Duration::from_millis(200);
        let health = &self.telemetry.health;
        loop {
            match attempt().await {
                Ok(done) => {
                    health.recovered(retry.dependency);
                    return Some(done);
                }
                Err(e) => {
                    health.failing(retry.dependency);
                    let label = KindLabel { kind: retry.kind };
                    self.telemetry.metrics.transient_retries.get_or_create(&label).inc();
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{}", retry.what);
                    if !self.sleep_unless_shutdown(backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Logs every failure and applies the error policy (docs/failures.md); false when shutdown
    /// interrupted a dead-letter retry.
    async fn apply_policy(&self, batch: &[OwnedMessage], prepared: &mut Prepared) -> bool {
        let failures = std::mem::take(&mut prepared.failures);
        for failure in &failures {
            let msg = &batch[failure.index];
            error!(
                code = failure.code,
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                reason = %failure.reason,
                "message failed"
            );
            match &self.config.error_policy {
                ErrorPolicy::Stop => self.stop(failure.code),
                ErrorPolicy::PauseTopic => self.pause_topic(msg.topic(), failure.code),
                ErrorPolicy::DeadLetter { .. } => match self.dead_letter(msg, failure).await {
                    Some(Ok(())) => prepared.fates[failure.index] = Fate::DeadLettered,
                    Some(Err(e)) => {
                        error!(error = %e, code = failure.code, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), "dead-letter topic refused the record; falling back to errorPolicy stop");
                        let tp = (msg.topic().to_string(), msg.partition());
                        let first = prepared.blocked.entry(tp).or_insert(msg.offset());
                        *first = (*first).min(msg.offset());
                        self.stop(failure.code);
                    }
                    None => return false,
                },
            }
        }
        true
    }

    /// Produces a failed message to the dead-letter topic; `None` when shutdown came first.
    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        failure: &MessageFailure,
    ) -> Option<Result<(), DeadLetterError>> {
        let dlq = self.dead_letter.as_ref()?;
        let projection = failure.target.map(|t| self.targets[t].name.as_str()).unwrap_or_default();
        let record =
            dead_letter::Failure { code: failure.code, reason: &failure.reason, projection };
        let health = &self.telemetry.health;
        let retries = self
            .telemetry
            .metrics
            .transient_retries
            .get_or_create_owned(&KindLabel { kind: "dead_letter" });
        let send = dlq.send(msg, &record, |_| {
            health.failing("dead-letter topic");
            retries.inc();
        });
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return None,
            result = send => result,
        };
        health.recovered("dead-letter topic");
        if result.is_ok() {
            info!(
                code = failure.code,
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                dead_letter_topic = dlq.topic(),
                "message dead-lettered"
            );
        }
        Some(result)
    }

    /// `errorPolicy: stop`: nothing more is processed; the process stays alive, not ready.
    fn stop(&self, code: &'static str) {
        if self.halts.stop() {
            error!(
                code,
                "consumer stopped by errorPolicy stop; nothing at or after this offset is committed"
            );
            self.telemetry.health.set_stopped(code);
            self.telemetry
                .metrics
                .stopped
                .get_or_create(&ReasonLabel { reason: code.to_string() })
                .set(1);
        }
        self.pause_all();
    }

    /// `errorPolicy: pauseTopic`: the topic's partitions owned here stop; others go on.
    fn pause_topic(&self, topic: &str, code: &'static str) {
        let owned: Vec<(String, i32)> = match self.consumer.assignment() {
            Ok(assignment) => assignment
                .elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            Err(e) => {
                warn!(error = %e, "reading the assignment failed");
                Vec::new()
            }
        };
        let mut list = TopicPartitionList::new();
        for (t, p) in &owned {
            list.add_partition(t, *p);
        }
        if let Err(e) = self.consumer.pause(&list) {
            warn!(topic, error = %e, "pausing the topic failed; its messages are dropped unstored");
        }
        drop(list);
        self.halts.halt(owned);
        let paused = self.telemetry.health.set_paused(topic);
        self.telemetry.metrics.paused_topics.set(paused as i64);
        error!(
            topic,
            code,
            "topic paused by errorPolicy pauseTopic; its other partitions' owners and other topics go on"
        );
    }

    /// Write groups per target: `tuning.writesInFlight`.
    fn groups_per_target(&self) -> usize {
        self.config.tuning.writes_in_flight.max(1) as usize
    }

    /// Writes every group concurrently (statements of one key are in one group, in order); a
    /// failed command is retried with back-off (200 ms doubling to 30 s) until it succeeds or
    /// shutdown is asked for (`None`).
    #[allow(clippy::type_complexity)]
    async fn write_with_retry(
        &self,
        statements: &[Vec<Statement>],
    ) -> Option<Vec<(Vec<Outcome>, Vec<Option<Images>>)>> {
        let metrics = &self.telemetry.metrics;
        let attempt = || {
            let groups = self.groups_per_target();
            let writes = statements.iter().enumerate().map(|(group, stmts)| {
                let target = &self.targets[group / groups];
                let images = self.announcer.as_ref().is_some_and(|a| a.wants_images(&target.name));
                let projection = &target.projection;
                async move {
                    if stmts.is_empty() {
                        return Ok((Vec::new(), Vec::new()));
                    }
                    let started = Instant::now();
                    let outcomes = match images {
                        true => writer::execute_with_images(&self.db, projection, stmts).await,
                        false => writer::execute(&self.db, projection, stmts)
                            .await
                            .map(|o| (o, Vec::new())),
                    };
                    metrics.write_duration.observe(started.elapsed().as_secs_f64());
                    outcomes
                }
            });
            try_join_all(writes)
        };
        let retry = Retry {
            dependency: "mongodb writes",
            kind: "mongodb_write",
            what: "mongodb write failed; retrying the batch",
        };
        self.retry(retry, attempt).await
    }

    /// Per partition, stores the highest processed offset below its first blocked one
    /// (librdkafka commits offset + 1). Halted messages are never stored.
    fn store_offsets(&self, batch: &[OwnedMessage], prepared: &Prepared) {
        let mut done: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        let mut skipped: BTreeSet<(&str, i32)> = BTreeSet::new();
        for (msg, fate) in batch.iter().zip(&prepared.fates) {
            let tp = (msg.topic(), msg.partition());
            let blocked = !prepared.blocked.is_empty()
                && prepared
                    .blocked
                    .get(&(msg.topic().to_string(), msg.partition()))
                    .is_some_and(|first| msg.offset() >= *first);
            if blocked || *fate == Fate::Halted || skipped.contains(&tp) {
                // Nothing of this partition after an unstored message may be stored.
                skipped.insert(tp);
                continue;
            }
            let entry = done.entry(tp).or_insert(msg.offset());
            *entry = (*entry).max(msg.offset());
        }
        for ((topic, partition), offset) in done {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile: its next owner replays from the commit.
                warn!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }

    fn pause_all(&self) {
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(e) = self.consumer.pause(&assignment) {
                    warn!(error = %e, "pausing partitions failed");
                }
            }
            Err(e) => warn!(error = %e, "reading the assignment failed"),
        }
    }
}

/// Where a message comes from, as the write's metadata and the outputs record it.
fn source_of(msg: &OwnedMessage) -> Source {
    Source {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
        key: parse_kafka_key(msg.key()),
    }
}

/// Whether the message's partition is halted or blocked (from this batch's failures).
fn is_in(
    halted: &BTreeSet<(String, i32)>,
    blocked: &BTreeMap<(String, i32), i64>,
    msg: &OwnedMessage,
) -> bool {
    let tp = (msg.topic().to_string(), msg.partition());
    halted.contains(&tp) || blocked.contains_key(&tp)
}

/// Pings MongoDB every `every` (each ping bounded by `every` too) so `/readyz` reflects an
/// outage even while no message arrives.
async fn ping_mongodb(db: Database, telemetry: Arc<Telemetry>, every: Duration) {
    let health = &telemetry.health;
    loop {
        match tokio::time::timeout(every, db.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => health.recovered("mongodb"),
            Ok(Err(e)) => {
                warn!(error = %e, "mongodb ping failed");
                health.failing("mongodb");
            }
            Err(_) => health.failing("mongodb"),
        }
        tokio::time::sleep(every).await;
    }
}
