//! The outputs of a batch's applied writes, in docs/outputs.md#coupling's order: the strategies
//! ([`StrategyRunner`], in `engine/strategy/run.rs`) → projection-change upserts → pr-update and
//! sv-trigger events, every one acknowledged (MongoDB write concern; Kafka `acks=all`,
//! idempotent producer) before the batch's offsets may be stored. A failure of a dependency is
//! transient (the consumer retries the announcement; a replay produces the same documents and
//! event keys); a message whose strategy failed, or whose event cannot be built, fails alone
//! (error policy).

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::DateTime;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tracing::info;

use crate::config::{EngineConfig, PrUpdateFormat, SecretError, function_name};
use crate::engine::code::ErrorCode;
use crate::engine::encode;
use crate::engine::functions;
use crate::engine::kafka::producer_config;
use crate::engine::metrics::{EngineMonitor, SingleViewLabel, TopicLabel};
use crate::engine::outputs::{
    self, Applied, AppliedWrite, CONTEXT_HEADER, ChangeOp, FailedMessage, MESSAGE_SCHEMA_HEADER,
    OutputError, PR_UPDATE_V1_SCHEMA, PR_UPDATE_V2_SCHEMA, PendingChange, ProjectionChangesError,
    SV_TRIGGER_SCHEMA,
};
use crate::engine::projection::Source;
use crate::engine::script::ScriptError;
use crate::engine::strategy::{
    self, RunError, SchemaErrors, StrategyRunner, StrategySet, SvIdentifier,
};
use crate::engine::writer::AppliedOp;

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
    /// A strategy must run again: a look-up failed, or it timed out.
    #[error(transparent)]
    Strategy(#[from] RunError),
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

/// The outputs of one engine.
pub struct Announcer {
    source: String,
    db: Database,
    producer: Option<FutureProducer>,
    pr_topics: HashMap<String, String>,
    pr_format: PrUpdateFormat,
    /// Projection -> its collection (the v2 events' `storageNamespace`).
    collections: HashMap<String, String>,
    pc_collection: Option<String>,
    sv_topic: Option<String>,
    strategies: StrategyRunner,
    /// Concurrent projection-change commands (`tuning.writesInFlight`).
    writes_in_flight: usize,
    /// The `writeConcern` of the projection-change commands (`mongodb.writeConcern`).
    write_concern: mongodb::bson::Document,
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
        let strategies = StrategySet {
            automatic: strategy::load_automatic(config).map_err(AnnounceError::LoadSchemas)?,
            custom,
            scripts: functions::load_strategies(config).map_err(AnnounceError::LoadFunctions)?,
            max_exec,
        };
        let database = config.mongodb.database.clone();
        Ok(Some(Announcer {
            source: config.system_of_record.clone(),
            strategies: StrategyRunner::new(strategies, db.clone(), database, Arc::clone(&monitor)),
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
            writes_in_flight: config.tuning.writes_in_flight as usize,
            write_concern: config.mongodb.write_concern.command_document(),
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

    /// Whether every write of `projection` is announced with its own images (pr-update
    /// events): then a write must not be overwritten before its event is acknowledged.
    pub fn announces_each_write(&self, projection: &str) -> bool {
        self.pr_topics.contains_key(projection)
    }

    /// Whether writes of `projection` need their images (some output concerns it).
    pub fn wants_images(&self, projection: &str) -> bool {
        self.pr_topics.contains_key(projection) || self.runs_strategies_for(projection)
    }

    fn runs_strategies_for(&self, projection: &str) -> bool {
        self.announces_single_views() && self.strategies.covers(projection)
    }

    /// Whether single views are announced at all (projection changes or sv-trigger events).
    fn announces_single_views(&self) -> bool {
        self.pc_collection.is_some() || self.sv_topic.is_some()
    }

    /// Announces a batch's applied writes; the messages a strategy failed are returned (their
    /// outputs are not produced). `Err` is transient: announce the batch again.
    pub async fn announce(
        &self,
        applied: &[Applied<'_>],
    ) -> Result<Vec<FailedMessage>, AnnounceError> {
        let (identifiers, failures) = match self.announces_single_views() {
            true => self.strategies.identifiers(applied).await?,
            false => (applied.iter().map(|_| Vec::new()).collect(), Vec::new()),
        };
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
            &self.write_concern,
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
    ) -> Result<Vec<FailedMessage>, AnnounceError> {
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

fn output_failure(message: usize, e: OutputError) -> FailedMessage {
    FailedMessage { message, code: ErrorCode::OutputFailed, reason: e.to_string() }
}
