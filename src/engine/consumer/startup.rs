//! Start-up: the projections and their adapters, the MongoDB and Kafka clients, the outputs,
//! the indexes the writes rely on (created, or waited for), the subscription, and the MongoDB
//! ping that keeps `/readyz` honest while no message arrives.

use super::*;

/// The built-in adapter of a projection mapping these source fields.
pub(super) fn adapter_of(
    config: &AdapterConfig,
    mapped: Vec<String>,
) -> Result<Adapter, EngineError> {
    Ok(match config.kind {
        AdapterKind::Basic | AdapterKind::Db2 => {
            Adapter::Basic(Iidr::new(config.iidr.clone(), &mapped))
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

/// Pings MongoDB every `every` (each ping bounded by `every` too) so `/readyz` reflects an
/// outage even while no message arrives.
pub(super) async fn ping_mongodb(db: Database, monitor: Arc<EngineMonitor>, every: Duration) {
    let health = &monitor.health;
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

impl Engine {
    /// Builds the projections, loads the functions and creates the clients, reporting to
    /// `monitor` (already serving).
    pub(super) async fn assemble(
        config: EngineConfig,
        monitor: Arc<EngineMonitor>,
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
        let context = EngineContext { monitor: Arc::clone(&monitor), halts: Arc::clone(&halts) };
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
        let announcer = Announcer::new(&config, db.clone(), Arc::clone(&monitor))
            .map_err(|e| EngineError::Outputs(Box::new(e)))?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Engine {
            write_concern: config.mongodb.write_concern.command_document(),
            config,
            db,
            consumer,
            targets,
            by_topic,
            monitor,
            halts,
            dead_letter,
            announcer,
            pairing: Mutex::default(),
            shutdown,
            shutdown_tx,
        })
    }

    pub(super) fn ping_every(&self) -> Duration {
        let half = u64::from(self.config.tuning.unhealthy_after_ms / 2).max(50);
        Duration::from_millis(half.min(5000))
    }

    /// Creates (or finds) every primary-key unique index, retrying with back-off while
    /// MongoDB refuses; false when shutdown came first.
    pub(super) async fn ensure_indexes(&self) -> bool {
        if !self.config.writes.ensure_indexes {
            return self.verify_indexes().await;
        }
        for t in &self.targets {
            let what = "cannot ensure the primary-key index; not consuming until it exists";
            let ensured =
                self.until_done(what, || writer::ensure_primary_key_index(&self.db, &t.projection));
            if !ensured.await {
                return false;
            }
        }
        match &self.announcer {
            Some(announcer) => {
                let what =
                    "cannot ensure the projection-changes indexes; not consuming until they exist";
                self.until_done(what, || announcer.ensure_indexes()).await
            }
            None => true,
        }
    }

    /// Runs an index step until it succeeds, with back-off, `/readyz` failing for "mongodb
    /// indexes" meanwhile; false when shutdown came first.
    pub(super) async fn until_done<E: std::fmt::Display, F: Future<Output = Result<(), E>>>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> F,
    ) -> bool {
        let mut backoff = Backoff::default();
        while let Err(e) = attempt().await {
            self.monitor.health.failing("mongodb indexes");
            let delay = backoff.next_delay();
            error!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what}");
            if !self.sleep_unless_shutdown(delay).await {
                return false;
            }
        }
        self.monitor.health.recovered("mongodb indexes");
        true
    }

    /// With `ensureIndexes: false`: waits until every projection has its unique primary-key
    /// index, not ready meanwhile with the missing one named (docs/writes.md#indexes); false when shutdown
    /// came first.
    pub(super) async fn verify_indexes(&self) -> bool {
        let health = &self.monitor.health;
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

    pub(super) fn subscribe(&self) -> Result<(), EngineError> {
        let topics: Vec<&str> = self.by_topic.keys().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(EngineError::CreateConsumer)?;
        info!(group = %self.config.kafka.group_id, ?topics, policy = ?self.config.error_policy, "engine subscribed");
        Ok(())
    }
}
