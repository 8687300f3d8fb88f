//! The engine's consumption loop (SPEC §5, §6): poll a batch, adapt and map every message,
//! write the batch per collection, and only then store the offsets librdkafka commits
//! (periodically, on revocation and on close). Message errors follow the error policy; a
//! failed MongoDB command is retried with back-off (idempotent thanks to the stale guard).
//! SIGTERM: finish the batch in hand, commit, leave the group.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::try_join_all;
use mongodb::bson::DateTime;
use mongodb::{Client, Database};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{AdapterConfig, AdapterKind, EngineConfig, ErrorPolicy, SecretError};
use crate::engine::adapter::{Adapted, Adapter, PrimaryKey, Record};
use crate::engine::kafka::consumer_config;
use crate::engine::projection::{Projection, Source, Statement, parse_kafka_key};
use crate::engine::writer::{self, Outcome, WriterError};

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
    /// The primary-key index could not be created.
    #[error(transparent)]
    EnsureIndex(WriterError),
    /// The Kafka consumer could not be created or subscribed.
    #[error("kafka consumer: {0}")]
    CreateConsumer(KafkaError),
    /// The configured error policy is not available in this version.
    #[error("errorPolicy {0} is not implemented yet; use type: stop")]
    UnsupportedPolicy(&'static str),
    /// The final commit at shutdown failed.
    #[error("final commit: {0}")]
    CommitOnShutdown(KafkaError),
}

/// A projection with its adapter.
struct Target {
    projection: Projection,
    adapter: Adapter,
    /// The primary key as the adapter reads it (built once, not per message).
    key: PrimaryKey,
}

/// A message that failed permanently, for logs and the error policy.
struct MessageFailure {
    code: &'static str,
    reason: String,
}

/// Logs every partition assignment and revocation (cooperative rebalances move a few partitions
/// at a time, so each change is worth a line).
pub struct RebalanceLog;

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let names = |list: &rdkafka::TopicPartitionList| {
            list.elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(list) => info!(partitions = %names(list), "partitions assigned"),
            Rebalance::Revoke(list) => info!(partitions = %names(list), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
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
    /// Per topic-partition: the first offset that must not be committed (a failure).
    blocked: BTreeMap<(String, i32), i64>,
}

/// The engine's state between batches.
pub struct Engine {
    config: EngineConfig,
    db: Database,
    consumer: StreamConsumer<RebalanceLog>,
    targets: Vec<Target>,
    by_topic: HashMap<String, usize>,
    /// errorPolicy stop has stopped consumption.
    stopped: AtomicBool,
}

fn adapter_of(config: &AdapterConfig) -> Result<Adapter, EngineError> {
    Ok(match config.kind {
        AdapterKind::Basic | AdapterKind::Db2 => Adapter::Basic,
        AdapterKind::GoldenGate => {
            Adapter::GoldenGate { use_pos_as_counter: config.use_pos_as_counter }
        }
        AdapterKind::Debezium => Adapter::Debezium,
        AdapterKind::Custom => Adapter::Custom(
            config
                .custom
                .clone()
                .ok_or_else(|| EngineError::BuildProjection("adapter.custom is missing".into()))?,
        ),
    })
}

impl Engine {
    /// Connects to MongoDB (creating the primary-key indexes) and subscribes to the topics.
    pub async fn connect(config: EngineConfig) -> Result<Self, EngineError> {
        match config.error_policy {
            ErrorPolicy::Stop => {}
            ErrorPolicy::PauseTopic => return Err(EngineError::UnsupportedPolicy("pauseTopic")),
            ErrorPolicy::DeadLetter { .. } => {
                return Err(EngineError::UnsupportedPolicy("deadLetter"));
            }
        }
        let mut targets = Vec::new();
        let mut by_topic = HashMap::new();
        for p in &config.projections {
            let projection =
                Projection::new(p, &config.writes).map_err(EngineError::BuildProjection)?;
            let adapter = adapter_of(p.adapter.as_ref().unwrap_or(&config.adapter))?;
            for topic in &p.topics {
                by_topic.insert(topic.clone(), targets.len());
            }
            let key = projection.adapter_key();
            targets.push(Target { projection, adapter, key });
        }
        let uri = config.mongodb.uri.read("mongodb.uri")?;
        let db = Client::with_uri_str(&uri)
            .await
            .map_err(EngineError::ConnectMongo)?
            .database(&config.mongodb.database);
        if config.writes.ensure_indexes {
            for t in &targets {
                writer::ensure_primary_key_index(&db, &t.projection)
                    .await
                    .map_err(EngineError::EnsureIndex)?;
            }
        }
        let consumer: StreamConsumer<RebalanceLog> =
            consumer_config(&config.kafka, config.tuning.commit_interval_ms)?
                .create_with_context(RebalanceLog)
                .map_err(EngineError::CreateConsumer)?;
        let topics: Vec<&str> = by_topic.keys().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(EngineError::CreateConsumer)?;
        info!(group = %config.kafka.group_id, ?topics, "engine subscribed");
        Ok(Engine { config, db, consumer, targets, by_topic, stopped: AtomicBool::new(false) })
    }

    /// Consumes until `shutdown` completes, then commits what is done and leaves the group.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        tokio::pin!(shutdown);
        let mut next = self.next_or_shutdown(shutdown.as_mut()).await;
        while let Some(batch) = next.take() {
            if self.stopped.load(Ordering::Relaxed) {
                // Stop policy: nothing is processed or stored; keep polling to stay in the group.
                self.pause_all();
                next = self.next_or_shutdown(shutdown.as_mut()).await;
                continue;
            }
            let prepared = self.prepare_batch(&batch);
            // Poll the next batch while this one is written; writes stay one batch at a time,
            // so per-key order holds even with the stale guard off. The batch is finished
            // (offsets stored) as soon as its write is acknowledged, even when no new message
            // comes.
            let poll = self.next_or_shutdown(shutdown.as_mut());
            tokio::pin!(poll);
            let write = self.write_with_retry(&prepared.statements);
            tokio::pin!(write);
            let mut polled = None;
            let outcomes = loop {
                tokio::select! {
                    outcomes = &mut write => break outcomes,
                    batch = &mut poll, if polled.is_none() => polled = Some(batch),
                }
            };
            self.finish_batch(&batch, &prepared.origins, prepared.blocked, outcomes);
            next = match polled {
                Some(batch) => batch,
                None => poll.await,
            };
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

    /// The next batch, or `None` once `shutdown` completes.
    async fn next_or_shutdown(
        &self,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Vec<OwnedMessage>> {
        tokio::select! {
            _ = shutdown => None,
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
                warn!(error = %e, "kafka poll error");
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
                    warn!(error = %e, "kafka poll error");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Adapts and maps a batch: statements per target; a failing message blocks its partition
    /// from that offset on.
    fn prepare_batch(&self, batch: &[OwnedMessage]) -> Prepared {
        let now = DateTime::now();
        let groups = self.groups_per_target();
        let mut prepared = Prepared {
            statements: vec![Vec::new(); self.targets.len() * groups],
            origins: vec![Vec::new(); self.targets.len() * groups],
            blocked: BTreeMap::new(),
        };
        for (i, msg) in batch.iter().enumerate() {
            let tp = (msg.topic().to_string(), msg.partition());
            if prepared.blocked.contains_key(&tp) {
                continue;
            }
            match self.prepare(msg, now) {
                Ok(Some((target, stmts))) => {
                    for statement in stmts {
                        let projection = &self.targets[target].projection;
                        let group = target * groups + projection.group_of(&statement, groups);
                        prepared.origins[group].push(i);
                        prepared.statements[group].push(statement);
                    }
                }
                Ok(None) => {}
                Err(failure) => {
                    self.fail(msg, &failure);
                    prepared.blocked.insert(tp, msg.offset());
                }
            }
        }
        prepared
    }

    /// After the writes: per-statement failures follow the error policy, then offsets are
    /// stored up to each partition's first failure.
    fn finish_batch(
        &self,
        batch: &[OwnedMessage],
        origins: &[Vec<usize>],
        mut blocked: BTreeMap<(String, i32), i64>,
        outcomes: Vec<Vec<Outcome>>,
    ) {
        for (target, results) in origins.iter().zip(outcomes) {
            for (i, outcome) in target.iter().zip(results) {
                if let Outcome::Failed { code, message } = outcome {
                    let msg = &batch[*i];
                    let failure = MessageFailure { code, reason: message };
                    self.fail(msg, &failure);
                    let tp = (msg.topic().to_string(), msg.partition());
                    let first = blocked.entry(tp).or_insert(msg.offset());
                    *first = (*first).min(msg.offset());
                }
            }
        }
        self.store_offsets(batch, &blocked);
        if self.stopped.load(Ordering::Relaxed) {
            self.pause_all();
        }
    }

    /// Adapts and maps one message: its target and statements, or nothing (a skip).
    fn prepare(
        &self,
        msg: &OwnedMessage,
        now: DateTime,
    ) -> Result<Option<(usize, Vec<Statement>)>, MessageFailure> {
        let Some(&target) = self.by_topic.get(msg.topic()) else {
            return Err(MessageFailure {
                code: "UNKNOWN_TOPIC",
                reason: "no projection for this topic".into(),
            });
        };
        let t = &self.targets[target];
        let record = Record { key: msg.key(), value: msg.payload() };
        let change = match t.adapter.adapt(record, &t.key) {
            Ok(Adapted::Change(c)) => c,
            Ok(Adapted::Skip(_)) => return Ok(None),
            Err(e) => return Err(MessageFailure { code: e.code(), reason: e.to_string() }),
        };
        let source = Source {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
            key: parse_kafka_key(msg.key()),
        };
        let mapped = t
            .projection
            .map(&change, &source, now)
            .map_err(|e| MessageFailure { code: e.code(), reason: e.to_string() })?;
        Ok(Some((target, mapped.statements)))
    }

    /// Write groups per target: `tuning.writesInFlight`.
    fn groups_per_target(&self) -> usize {
        self.config.tuning.writes_in_flight.max(1) as usize
    }

    /// Writes every group concurrently (statements of one key are in one group, in order); a
    /// failed command is retried with back-off (200 ms doubling to 30 s) until it succeeds.
    async fn write_with_retry(&self, statements: &[Vec<Statement>]) -> Vec<Vec<Outcome>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let groups = self.groups_per_target();
            let writes = statements.iter().enumerate().map(|(group, stmts)| {
                let projection = &self.targets[group / groups].projection;
                async move { writer::execute(&self.db, projection, stmts).await }
            });
            match try_join_all(writes).await {
                Ok(outcomes) => return outcomes,
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "mongodb write failed; retrying the batch");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Applies the error policy to a failed message (logged with where it is).
    fn fail(&self, msg: &OwnedMessage, failure: &MessageFailure) {
        error!(
            code = failure.code,
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            reason = %failure.reason,
            "message failed"
        );
        // errorPolicy stop (the only one `connect` accepts for now).
        if !self.stopped.swap(true, Ordering::Relaxed) {
            error!(
                code = failure.code,
                "consumer stopped by errorPolicy stop; nothing at or after this offset is committed"
            );
        }
    }

    /// Per partition, stores the highest offset below its first failure (librdkafka commits
    /// offset + 1).
    fn store_offsets(&self, batch: &[OwnedMessage], blocked: &BTreeMap<(String, i32), i64>) {
        let mut done: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for msg in batch {
            let tp = (msg.topic().to_string(), msg.partition());
            if blocked.get(&tp).is_some_and(|first| msg.offset() >= *first) {
                continue;
            }
            let entry = done.entry((msg.topic(), msg.partition())).or_insert(msg.offset());
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
