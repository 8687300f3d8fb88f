//! The outputs of a batch's applied writes, in docs/outputs.md#coupling's order: strategies (automatic and
//! JavaScript) → projection-change upserts → pr-update and sv-trigger events, every one
//! acknowledged (MongoDB write concern; Kafka `acks=all`, idempotent producer) before the
//! batch's offsets may be stored. A failure of a dependency is transient (the consumer retries
//! the announcement; a replay produces the same documents and event keys); a strategy that
//! throws, or times out three times for one message, fails that message (error policy).

use crate::engine::code::ErrorCode;
use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mongodb::Database;
use mongodb::bson::{DateTime, Document};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{EngineConfig, PrUpdateFormat, SecretError, function_name};
use crate::engine::encode;
use crate::engine::functions;
use crate::engine::kafka::producer_config;
use crate::engine::metrics::{EngineMonitor, SingleViewLabel, TopicLabel};
use crate::engine::outputs::{
    self, AppliedWrite, CONTEXT_HEADER, ChangeOp, MESSAGE_SCHEMA_HEADER, OutputError,
    PR_UPDATE_V1_SCHEMA, PR_UPDATE_V2_SCHEMA, PendingChange, ProjectionChangesError,
    SV_TRIGGER_SCHEMA,
};
use crate::engine::projection::Source;
use crate::engine::script::{CallError, ScriptError, ScriptHost};
use crate::engine::strategy::{
    self, AutomaticStrategy, SchemaErrors, Start, StrategyError, SvIdentifier,
};
use crate::engine::writer::{AppliedOp, Images};

/// Why the outputs could not start, or a batch's announcement failed (transient).
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The ER schema or projection changes schema is invalid.
    #[error("strategy schemas:\n{0}")]
    LoadSchemas(SchemaErrors),
    /// A strategy function could not be loaded.
    #[error("strategy functions: {0}")]
    LoadFunctions(ScriptError),
    /// A Kafka credential could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The output producer could not be created.
    #[error("creating the output producer failed: {0}")]
    CreateProducer(KafkaError),
    /// The automatic strategy's look-ups failed.
    #[error("automatic strategy: {0}")]
    Automatic(Box<StrategyError>),
    /// A strategy ran past `outputs.strategies.maxExecTimeMs`.
    #[error("{what} ran past {limit:?}")]
    StrategyTimeout {
        /// Which strategy.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// A JavaScript strategy's look-up failed.
    #[error("{0}")]
    StrategyLookup(CallError),
    /// Upserting the projection changes failed.
    #[error("{0}")]
    ProjectionChanges(ProjectionChangesError),
    /// Kafka did not acknowledge an event.
    #[error("producing to {topic} failed: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// One applied write of a batch.
pub struct Applied<'a> {
    /// The batch index of its message.
    pub message: usize,
    /// The projection.
    pub projection: &'a str,
    /// The projection's primary-key targets, in order.
    pub primary_keys: &'a [String],
    /// The stored document before and after.
    pub images: &'a Images,
    /// Where its message came from.
    pub source: &'a Source,
    /// When its batch was polled, ms since the epoch.
    pub polled_at_ms: i64,
}

/// A message that failed in a strategy (a message error of docs/failures.md).
pub struct AnnounceFailure {
    /// The batch index of the message.
    pub message: usize,
    /// `STRATEGY_FAILED`, `STRATEGY_TIMEOUT` or `OUTPUT_FAILED`.
    pub code: ErrorCode,
    /// Why.
    pub reason: String,
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

/// The outputs of one engine.
pub struct Announcer {
    source: String,
    database: String,
    db: Database,
    producer: Option<FutureProducer>,
    pr_topics: HashMap<String, String>,
    pr_format: PrUpdateFormat,
    /// Projection -> its collection (the v2 events' `storageNamespace`).
    collections: HashMap<String, String>,
    pc_collection: Option<String>,
    sv_topic: Option<String>,
    automatic: Option<AutomaticStrategy>,
    /// Projection -> (single view, function name).
    custom: HashMap<String, Vec<(String, String)>>,
    scripts: Option<ScriptHost>,
    max_exec: Duration,
    /// Concurrent projection-change commands (`tuning.writesInFlight`).
    writes_in_flight: usize,
    /// JavaScript strategy timeouts per message (topic, partition, offset).
    timeouts: Mutex<HashMap<(String, i32, i64), u32>>,
    /// Consecutive timeouts of the automatic strategy on a whole batch.
    automatic_timeouts: AtomicU32,
    monitor: Arc<EngineMonitor>,
}

impl Announcer {
    /// The outputs `config` asks for, `None` when there are none. Loads and validates the
    /// strategy schemas and functions and creates the producer; creates nothing in MongoDB.
    pub fn new(
        config: &EngineConfig,
        db: Database,
        monitor: Arc<EngineMonitor>,
    ) -> Result<Option<Self>, AnnounceError> {
        let o = &config.outputs;
        if o.projection_updates.is_none()
            && o.projection_changes.is_none()
            && o.single_view_trigger.is_none()
        {
            return Ok(None);
        }
        let max_exec = Duration::from_millis(u64::from(o.strategies.max_exec_time_ms));
        let producer = match o.projection_updates.is_some() || o.single_view_trigger.is_some() {
            true => {
                let mut c = producer_config(&config.kafka)?;
                if let Some(pu) = &o.projection_updates {
                    c.set("compression.type", pu.compression.librdkafka());
                }
                Some(c.create().map_err(AnnounceError::CreateProducer)?)
            }
            false => None,
        };
        let custom: HashMap<String, Vec<(String, String)>> = o
            .strategies
            .custom
            .iter()
            .map(|(p, views)| {
                let fns = views.iter().map(|(sv, f)| (sv.clone(), function_name(f).to_string()));
                (p.clone(), fns.collect())
            })
            .collect();
        Ok(Some(Announcer {
            source: config.system_of_record.clone(),
            database: config.mongodb.database.clone(),
            db,
            producer,
            pr_topics: o.projection_updates.iter().flat_map(|p| p.topics.clone()).collect(),
            pr_format: o.projection_updates.as_ref().map(|p| p.format).unwrap_or_default(),
            collections: config
                .projections
                .iter()
                .map(|p| (p.name.clone(), p.collection.clone().unwrap_or_else(|| p.name.clone())))
                .collect(),
            pc_collection: o.projection_changes.as_ref().map(|p| p.collection.clone()),
            sv_topic: o.single_view_trigger.as_ref().map(|s| s.topic.clone()),
            automatic: strategy::load_automatic(config).map_err(AnnounceError::LoadSchemas)?,
            scripts: functions::load_strategies(config).map_err(AnnounceError::LoadFunctions)?,
            custom,
            max_exec,
            writes_in_flight: config.tuning.writes_in_flight as usize,
            timeouts: Mutex::new(HashMap::new()),
            automatic_timeouts: AtomicU32::new(0),
            monitor,
        }))
    }

    /// Creates the projection-changes indexes (docs/outputs.md#projection-changes), when that output is on.
    pub async fn ensure_indexes(&self) -> Result<(), AnnounceError> {
        match &self.pc_collection {
            Some(c) => outputs::projection_changes::ensure_indexes(&self.db, c)
                .await
                .map_err(AnnounceError::ProjectionChanges),
            None => Ok(()),
        }
    }

    /// Whether writes of `projection` need their images (some output concerns it).
    pub fn wants_images(&self, projection: &str) -> bool {
        self.pr_topics.contains_key(projection) || self.runs_strategies_for(projection)
    }

    fn runs_strategies_for(&self, projection: &str) -> bool {
        (self.pc_collection.is_some() || self.sv_topic.is_some())
            && (self.custom.contains_key(projection)
                || self.automatic.as_ref().is_some_and(|a| a.covers(projection)))
    }

    /// Announces a batch's applied writes; the messages a strategy failed are returned (their
    /// outputs are not produced). `Err` is transient: announce the batch again.
    pub async fn announce(
        &self,
        applied: &[Applied<'_>],
    ) -> Result<Vec<AnnounceFailure>, AnnounceError> {
        let (identifiers, failures) = self.identifiers(applied).await?;
        let failed: std::collections::HashSet<usize> = failures.iter().map(|f| f.message).collect();
        let mut changes = Vec::with_capacity(applied.len());
        let mut build_failures = Vec::new();
        for (i, a) in applied.iter().enumerate() {
            match self.change(a) {
                Ok(c) if !failed.contains(&a.message) => changes.push((a, c, &identifiers[i][..])),
                Ok(_) => {}
                Err(e) => build_failures.push(output_failure(a.message, e)),
            }
        }
        // Independent outputs, acknowledged together before any offset is stored.
        let ((), failed_builds) =
            tokio::try_join!(self.write_projection_changes(&changes), self.produce(&changes))?;
        let mut all = failures;
        all.extend(build_failures);
        all.extend(failed_builds);
        Ok(all)
    }

    fn change<'a>(&'a self, a: &'a Applied<'a>) -> Result<AppliedWrite<'a>, OutputError> {
        let op = match a.images.change {
            AppliedOp::Insert => ChangeOp::Insert,
            AppliedOp::Update => ChangeOp::Update,
            AppliedOp::Delete => ChangeOp::Delete,
        };
        let written_at = a
            .images
            .after
            .as_ref()
            .and_then(|d| d.get_datetime("updatedAt").ok().copied())
            .unwrap_or_else(DateTime::now);
        Ok(AppliedWrite {
            projection: a.projection,
            source: &self.source,
            primary_keys: a.primary_keys,
            op,
            written_at,
            before: a.images.before.as_deref(),
            after: a.images.after.as_deref(),
            kafka: a.source,
        })
    }

    /// Per applied write: the single-view identifiers of every strategy, deduplicated per
    /// single view per message.
    async fn identifiers(
        &self,
        applied: &[Applied<'_>],
    ) -> Result<(Vec<Vec<SvIdentifier>>, Vec<AnnounceFailure>), AnnounceError> {
        let mut found: Vec<Vec<SvIdentifier>> = applied.iter().map(|_| Vec::new()).collect();
        if !applied.iter().any(|a| self.runs_strategies_for(a.projection)) {
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
    ) -> Result<Vec<AnnounceFailure>, AnnounceError> {
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
            Ok(result) => result.map_err(|e| AnnounceError::Automatic(Box::new(e)))?,
            Err(_) => {
                let attempts = self.automatic_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if attempts < TIMEOUT_ATTEMPTS {
                    return Err(AnnounceError::StrategyTimeout {
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
    ) -> Result<Vec<AnnounceFailure>, AnnounceError> {
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
                return Err(AnnounceError::StrategyTimeout {
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
                    let ids = ids.map_err(|e| AnnounceError::Automatic(Box::new(e)))?;
                    found[owner].extend(ids.into_iter().flatten());
                }
                Err(_) => failures.push(AnnounceFailure {
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
    ) -> Result<Vec<AnnounceFailure>, AnnounceError> {
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
    ) -> Result<Option<AnnounceFailure>, AnnounceError> {
        if matches!(e, CallError::Lookup { .. }) {
            return Err(AnnounceError::StrategyLookup(e));
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
                return Err(AnnounceError::StrategyTimeout {
                    what: e.to_string(),
                    limit: self.max_exec,
                });
            }
        }
        Ok(Some(AnnounceFailure { message: a.message, code: e.code(), reason: e.to_string() }))
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

    /// One command for the batch; several changes of one single view's identifier in a batch
    /// are one upsert carrying the last one (the document ends the same).
    async fn write_projection_changes(
        &self,
        changes: &[Announced<'_>],
    ) -> Result<(), AnnounceError> {
        let Some(collection) = &self.pc_collection else { return Ok(()) };
        // One upsert per identifier, built from its last change in the batch (the document
        // ends the same); keyed by the identifier's BSON bytes (Document is not hashable).
        let mut slots: HashMap<(&str, Vec<u8>), usize> = HashMap::new();
        let mut latest: Vec<(&SvIdentifier, &Source)> = Vec::new();
        let mut key = Vec::new();
        for (_, change, ids) in changes {
            for id in *ids {
                key.clear();
                encode::document(&id.identifier, &mut key).map_err(|source| {
                    AnnounceError::ProjectionChanges(ProjectionChangesError::Encode {
                        collection: collection.clone(),
                        source,
                    })
                })?;
                match slots.entry((id.single_view.as_str(), key.clone())) {
                    Entry::Occupied(slot) => latest[*slot.get()] = (id, change.kafka),
                    Entry::Vacant(slot) => {
                        slot.insert(latest.len());
                        latest.push((id, change.kafka));
                    }
                }
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let pending: Vec<PendingChange<'_>> = latest
            .iter()
            .map(|(id, kafka)| PendingChange {
                single_view_type: &id.single_view,
                identifier: &id.identifier,
                kafka,
            })
            .collect();
        let recorded = outputs::projection_changes::record(
            &self.db,
            collection,
            &pending,
            DateTime::now(),
            self.writes_in_flight,
        )
        .await
        .map_err(AnnounceError::ProjectionChanges)?;
        if recorded.fell_back {
            info!(
                collection = %collection,
                changes = pending.len(),
                "projection changes: a document appeared or went between the look-up and the writes; the batch was written again one upsert per change"
            );
        }
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (id, _) in latest {
            *counts.entry(id.single_view.as_str()).or_default() += 1;
        }
        for (single_view, n) in counts {
            let label = SingleViewLabel { single_view: single_view.to_string() };
            self.monitor.metrics.projection_changes.get_or_create(&label).inc_by(n);
        }
        Ok(())
    }

    /// Produces every event of the batch in order (per key order holds: one idempotent
    /// producer), then awaits every acknowledgement.
    async fn produce(
        &self,
        changes: &[Announced<'_>],
    ) -> Result<Vec<AnnounceFailure>, AnnounceError> {
        let Some(producer) = &self.producer else { return Ok(Vec::new()) };
        let mut pending: Vec<(Cow<'_, str>, bool, DeliveryFuture)> = Vec::new();
        let mut failures = Vec::new();
        for (a, change, ids) in changes {
            let events = match self.events_of(a, change, ids) {
                Ok(events) => events,
                Err(e) => {
                    failures.push(output_failure(a.message, e));
                    continue;
                }
            };
            for event in events {
                let delivery = send(producer, &event).await?;
                pending.push((event.topic, event.pr_update, delivery));
            }
        }
        // Acknowledged events per (family, topic), counted once per batch.
        let mut acknowledged: Vec<(bool, Cow<'_, str>, u64)> = Vec::new();
        for (topic, pr_update, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => match acknowledged
                    .iter_mut()
                    .find(|(family, t, _)| *family == pr_update && *t == topic)
                {
                    Some((_, _, n)) => *n += 1,
                    None => acknowledged.push((pr_update, topic, 1)),
                },
                Ok(Err((source, _))) => {
                    let topic = topic.into_owned();
                    return Err(AnnounceError::Produce { topic, source });
                }
                Err(_) => {
                    let (topic, source) = (topic.into_owned(), KafkaError::Canceled);
                    return Err(AnnounceError::Produce { topic, source });
                }
            }
        }
        for (pr_update, topic, n) in acknowledged {
            let family = match pr_update {
                true => &self.monitor.metrics.pr_updates,
                false => &self.monitor.metrics.sv_triggers,
            };
            family.get_or_create(&TopicLabel { topic: topic.into_owned() }).inc_by(n);
        }
        Ok(failures)
    }

    /// The pr-update (if its projection has a topic) and sv-trigger events of one change.
    fn events_of(
        &self,
        a: &Applied<'_>,
        change: &AppliedWrite<'_>,
        identifiers: &[SvIdentifier],
    ) -> Result<Vec<Event<'_>>, OutputError> {
        let mut events = Vec::new();
        if let Some(topic) = self.pr_topics.get(a.projection) {
            let key = outputs::pr_update::key(change)?;
            events.push(match self.pr_format {
                PrUpdateFormat::V1 => Event {
                    topic: Cow::Borrowed(topic),
                    key,
                    value: outputs::pr_update::value_v1(change)?,
                    schema: PR_UPDATE_V1_SCHEMA,
                    context: None,
                    pr_update: true,
                },
                PrUpdateFormat::V2 => {
                    let collection = self.collections.get(a.projection).map(String::as_str);
                    Event {
                        topic: Cow::Borrowed(topic),
                        key,
                        value: outputs::pr_update::value_v2(
                            change,
                            collection.unwrap_or(a.projection),
                        )?,
                        schema: PR_UPDATE_V2_SCHEMA,
                        context: Some(outputs::pr_update::context_v2(change, a.polled_at_ms)?),
                        pr_update: true,
                    }
                }
            });
        }
        if let Some(template) = &self.sv_topic {
            for id in identifiers {
                let outputs::TriggerRecord { key, value } =
                    outputs::sv_trigger(&id.single_view, &id.identifier, change)?;
                let topic = Cow::Owned(template.replace("{singleView}", &id.single_view));
                events.push(Event {
                    topic,
                    key,
                    value,
                    schema: SV_TRIGGER_SCHEMA,
                    context: None,
                    pr_update: false,
                });
            }
        }
        Ok(events)
    }
}

/// One Kafka event to produce.
struct Event<'a> {
    topic: Cow<'a, str>,
    key: Vec<u8>,
    value: Vec<u8>,
    schema: &'static str,
    /// The v2 pr-update's `context` header.
    context: Option<Vec<u8>>,
    pr_update: bool,
}

/// Enqueues one event, waiting while librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    event: &Event<'_>,
) -> Result<DeliveryFuture, AnnounceError> {
    loop {
        let mut headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: MESSAGE_SCHEMA_HEADER, value: Some(event.schema.as_bytes()) });
        if let Some(context) = &event.context {
            headers = headers.insert(Header { key: CONTEXT_HEADER, value: Some(&context[..]) });
        }
        let record = FutureRecord::to(&event.topic)
            .key(&event.key[..])
            .payload(&event.value[..])
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((source, _)) => {
                return Err(AnnounceError::Produce { topic: event.topic.to_string(), source });
            }
        }
    }
}

/// An applied write to announce: the write, its change and its single-view identifiers.
type Announced<'a> = (&'a Applied<'a>, AppliedWrite<'a>, &'a [SvIdentifier]);

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

fn output_failure(message: usize, e: OutputError) -> AnnounceFailure {
    AnnounceFailure { message, code: ErrorCode::OutputFailed, reason: e.to_string() }
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
