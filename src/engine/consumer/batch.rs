//! One batch through the engine: adapt and map every message into statements per write group
//! (IIDR before images paired with their after images), write them (retried until MongoDB
//! acknowledges), sort the outcomes, announce the applied writes, then hand the batch to the
//! error policy and the ledger.

use super::*;

/// Why a message cannot be written: its code and the reason, for logs and the error policy.
pub(super) type Refusal = (ErrorCode, String);

/// What one write group's statements did, and the stored images they left (when an output
/// needs them).
pub(super) type GroupWritten = (Vec<WriteOutcome>, Vec<Option<Images>>);

/// What one message becomes.
pub(super) enum Plan {
    /// Statements to write, and where the message came from.
    Write {
        /// The statements, in the order they must run.
        statements: Vec<Statement>,
        /// The message's topic, partition, offset, timestamp and key.
        source: Source,
    },
    /// Nothing to write.
    Skip(Skip),
}

/// A message that failed permanently, for logs and the error policy.
pub(super) struct MessageFailure {
    /// The batch index of the message.
    pub(super) index: usize,
    pub(super) code: ErrorCode,
    pub(super) reason: String,
}

/// One message of a batch in flight: the record, its projection, what became of it and where
/// it came from.
pub(super) struct InFlight {
    pub(super) message: OwnedMessage,
    /// Its projection (`None` when its topic has none).
    pub(super) target: Option<usize>,
    pub(super) fate: Fate,
    /// Where it came from, kept for the outputs (only when some are on and it is written).
    pub(super) source: Option<Source>,
}

/// The statements of one target whose primary keys hash to one value, written in message
/// order by one command per kind.
pub(super) struct WriteGroup {
    pub(super) target: usize,
    pub(super) statements: Vec<Statement>,
    /// Per statement: the batch index of the message it comes from.
    pub(super) origins: Vec<usize>,
    /// Per statement, once written: the images it left (when an output needs them).
    pub(super) images: Vec<Option<Images>>,
}

/// A batch adapted and mapped, ready to write as `targets x writesInFlight` groups: group
/// `target * writesInFlight + k` holds the statements of target `target` whose primary key
/// hashes to `k`, in message order.
pub(super) struct Prepared {
    /// The batch's messages, in poll order.
    pub(super) messages: Vec<InFlight>,
    pub(super) groups: Vec<WriteGroup>,
    /// Per topic-partition: the first offset that must not be stored (a failure under
    /// `stop` / `pauseTopic`).
    pub(super) ledger: Ledger,
    /// Messages that failed, in batch order once sorted.
    pub(super) failures: Vec<MessageFailure>,
    pub(super) counts: BatchCounts,
    /// When the batch was prepared, right after its poll (v2 pr-update `pollTimestamp`).
    pub(super) polled_at_ms: i64,
    /// (target, primary-key hash) of every write announced one by one (pr-update): no later
    /// write of these keys may run before this batch's events are acknowledged.
    pub(super) announced_keys: HashSet<(usize, u64)>,
}

impl Prepared {
    /// An empty batch (or segment of one) polled at `polled_at_ms`, blocked where `ledger` is.
    fn empty(groups: Vec<WriteGroup>, ledger: Ledger, polled_at_ms: i64) -> Self {
        Prepared {
            messages: Vec::new(),
            groups,
            ledger,
            failures: Vec::new(),
            counts: BatchCounts::default(),
            polled_at_ms,
            announced_keys: HashSet::new(),
        }
    }

    /// Whether a write of `other` touches a key announced one by one here.
    pub(super) fn shares_announced_keys(&self, other: &Prepared) -> bool {
        let (small, large) = if self.announced_keys.len() <= other.announced_keys.len() {
            (&self.announced_keys, &other.announced_keys)
        } else {
            (&other.announced_keys, &self.announced_keys)
        };
        !small.is_disjoint(large)
    }

    /// Marks message `index` failed (once: a message's second failed statement adds nothing)
    /// and, unless failures are dead-lettered, blocks its partition from its offset on.
    pub(super) fn fail(&mut self, index: usize, code: ErrorCode, reason: String, block: bool) {
        let m = &mut self.messages[index];
        if m.fate == Fate::Failed {
            return;
        }
        m.fate = Fate::Failed;
        if block {
            self.ledger.block(m.message.topic(), m.message.partition(), m.message.offset());
        }
        self.failures.push(MessageFailure { index, code, reason });
    }
}

/// A batch written to MongoDB (its groups' images filled in), waiting for its outputs and
/// offsets.
pub(super) struct WrittenBatch(pub(super) Prepared);

/// Logs a format-defined skip: a truncate as a warning (projections keep their documents),
/// what a change stream carries besides rows at debug level.
pub(super) fn log_skip(msg: &OwnedMessage, skip: Skip) {
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

/// Where a message comes from, as the write's metadata and the outputs record it.
pub(super) fn source_of(msg: &OwnedMessage) -> Source {
    Source {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
        key: parse_kafka_key(msg.key()),
    }
}

impl Engine {
    /// Adapts and maps a batch: statements per target. Under `stop` / `pauseTopic` a failing
    /// message blocks its partition from that offset on.
    ///
    /// A key written twice in a batch whose writes are announced one by one (pr-update) starts
    /// a new segment at its second write: segments are written and announced one after the
    /// other, so no write is overwritten before its event is acknowledged. Otherwise a crash
    /// in between would replay the first write as stale and its event would never come
    /// (docs/outputs.md#coupling).
    pub(super) fn prepare_batch(&self, batch: Vec<OwnedMessage>) -> Vec<Prepared> {
        let now = DateTime::now();
        let per_target = self.groups_per_target();
        let halted = self.halts.halted();
        let block = self.dead_letter.is_none();
        let keep_sources = self.announcer.is_some();
        let one_by_one: Vec<bool> = self
            .targets
            .iter()
            .map(|t| self.announcer.as_ref().is_some_and(|a| a.announces_each_write(&t.name)))
            .collect();
        let groups = || {
            (0..self.targets.len() * per_target)
                .map(|group| WriteGroup {
                    target: group / per_target,
                    statements: Vec::new(),
                    origins: Vec::new(),
                    images: Vec::new(),
                })
                .collect()
        };
        let polled_at_ms = now.timestamp_millis();
        let mut segments = Vec::new();
        let mut prepared = Prepared::empty(groups(), Ledger::default(), polled_at_ms);
        for message in batch {
            if prepared.ledger.holds(&halted, &message) {
                prepared.messages.push(InFlight {
                    message,
                    target: None,
                    fate: Fate::Halted,
                    source: None,
                });
                continue;
            }
            let target = self.by_topic.get(message.topic()).copied();
            let plan = self.prepare(&message, target, now, &mut prepared.counts);
            // The key hashes of a one-by-one target's statements, computed once: for the
            // segment check here and for the write groups below.
            let mut hashes = Vec::new();
            if let (Ok(Plan::Write { statements, .. }), Some(t)) = (&plan, target)
                && one_by_one[t]
            {
                let projection = &self.targets[t].projection;
                hashes.extend(statements.iter().map(|s| projection.key_hash(s)));
                if hashes.iter().any(|&h| prepared.announced_keys.contains(&(t, h))) {
                    let ledger = prepared.ledger.clone();
                    let next = Prepared::empty(groups(), ledger, polled_at_ms);
                    segments.push(std::mem::replace(&mut prepared, next));
                }
                prepared.announced_keys.extend(hashes.iter().map(|&h| (t, h)));
            }
            let i = prepared.messages.len();
            prepared.messages.push(InFlight { message, target, fate: Fate::Halted, source: None });
            let in_flight = &mut prepared.messages[i];
            in_flight.target = target;
            match plan {
                Ok(Plan::Write { statements, source }) => {
                    in_flight.fate = Fate::Written { applied: false };
                    if keep_sources {
                        in_flight.source = Some(source);
                    }
                    let Some(target) = target else { continue };
                    let projection = &self.targets[target].projection;
                    for (n, statement) in statements.into_iter().enumerate() {
                        let hash = match hashes.get(n) {
                            Some(&hash) => hash,
                            None => projection.key_hash(&statement),
                        };
                        let group = target * per_target + group_of_hash(hash, per_target);
                        let group = &mut prepared.groups[group];
                        group.origins.push(i);
                        group.statements.push(statement);
                    }
                }
                Ok(Plan::Skip(skip)) => {
                    in_flight.fate = Fate::Skipped;
                    *prepared.counts.skipped.entry(skip.reason()).or_default() += 1;
                }
                Err((code, reason)) => prepared.fail(i, code, reason, block),
            }
        }
        segments.push(prepared);
        // A before image waiting for its after image must not be committed: after a restart
        // the pair is read again from it.
        let pairing = self.pairing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (topic, partition, offset) in pairing.waiting() {
            for segment in &mut segments {
                segment.ledger.block(topic, partition, offset);
            }
        }
        segments
    }

    /// Pairs an IIDR record with the before image waiting on its partition; a failed record
    /// ends the wait too.
    pub(super) fn pair(
        &self,
        msg: &OwnedMessage,
        adapted: Result<Adapted, Refusal>,
    ) -> Result<Adapted, Refusal> {
        let mut pairing = self.pairing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (topic, partition) = (msg.topic(), msg.partition());
        let (result, orphan) = match adapted {
            Ok(adapted) => {
                let paired = pairing.pair(topic, partition, msg.offset(), adapted);
                (Ok(paired.adapted), paired.orphan)
            }
            Err(refusal) => (Err(refusal), pairing.interrupt(topic, partition)),
        };
        if let Some(orphan) = orphan {
            warn!(
                topic,
                partition,
                offset = orphan,
                "IIDR before image (UB) not followed by its after image (UP): nothing written for it"
            );
        }
        result
    }

    /// Adapts and maps one message: its statements, a skip, or a refusal.
    pub(super) fn prepare(
        &self,
        msg: &OwnedMessage,
        target: Option<usize>,
        now: DateTime,
        counts: &mut BatchCounts,
    ) -> Result<Plan, Refusal> {
        let Some(target) = target else {
            return Err((ErrorCode::UnknownTopic, "no projection for this topic".into()));
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
                let record = KafkaRecord { key: msg.key(), value: msg.payload() };
                let adapted = adapter.adapt(record, &t.key).map_err(|e| (e.code(), e.to_string()));
                let adapted = match adapter {
                    Adapter::Basic(_) => self.pair(msg, adapted)?,
                    _ => adapted?,
                };
                match adapted {
                    Adapted::Change(c) | Adapted::AfterImage { change: c, .. } => c,
                    Adapted::Skip(skip) => {
                        log_skip(msg, skip);
                        return Ok(Plan::Skip(skip));
                    }
                    Adapted::BeforeImage(_) => return Ok(Plan::Skip(Skip::BeforeImage)),
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
        Ok(Plan::Write { statements: mapped.statements, source })
    }

    /// Writes a batch (retried until MongoDB acknowledges it) and sorts its outcomes; `None`
    /// when shutdown interrupted a retry.
    pub(super) async fn write(&self, mut prepared: Prepared) -> Option<WrittenBatch> {
        let written = self.write_with_retry(&prepared.groups).await?;
        let mut outcomes = Vec::with_capacity(written.len());
        for (group, (group_outcomes, images)) in prepared.groups.iter_mut().zip(written) {
            group.images = images;
            outcomes.push(group_outcomes);
        }
        self.collect_outcomes(&mut prepared, outcomes);
        Some(WrittenBatch(prepared))
    }

    /// Finishes a written batch: its outputs, the error policy for what failed, its offsets and
    /// metrics; false when shutdown interrupted a retry.
    pub(super) async fn finish(&self, written: WrittenBatch) -> bool {
        let WrittenBatch(mut prepared) = written;
        self.halt_late(&mut prepared);
        if !self.announce(&mut prepared).await {
            return false;
        }
        if !self.apply_policy(&mut prepared).await {
            return false;
        }
        self.store_offsets(&prepared);
        let Prepared { messages, mut counts, .. } = prepared;
        // Counted with borrowed keys, then once per distinct key into the owned ones.
        let mut per_outcome: BTreeMap<(&str, Option<usize>, &'static str), u64> = BTreeMap::new();
        for m in &messages {
            if let Some(outcome) = m.fate.label() {
                *per_outcome.entry((m.message.topic(), m.target, outcome)).or_default() += 1;
            }
        }
        for ((topic, target, outcome), n) in per_outcome {
            let projection = target.map(|t| self.targets[t].name.clone()).unwrap_or_default();
            counts.messages.insert((topic.to_string(), projection, outcome), n);
        }
        counts.publish(&self.monitor.metrics);
        true
    }

    /// Per statement: the message's fate, the write counters, and the failures (which, under
    /// `stop` / `pauseTopic`, block their partition).
    pub(super) fn collect_outcomes(
        &self,
        prepared: &mut Prepared,
        outcomes: Vec<Vec<WriteOutcome>>,
    ) {
        let block = self.dead_letter.is_none();
        for (group, results) in outcomes.into_iter().enumerate() {
            let target = prepared.groups[group].target;
            for (k, outcome) in results.into_iter().enumerate() {
                let i = prepared.groups[group].origins[k];
                let op = match outcome {
                    WriteOutcome::Inserted => "insert",
                    WriteOutcome::Updated => "update",
                    WriteOutcome::Deleted { deleted: true } => "delete",
                    WriteOutcome::Deleted { deleted: false } | WriteOutcome::Stale => continue,
                    WriteOutcome::Failed { code, message } => {
                        prepared.fail(i, code, message, block);
                        continue;
                    }
                };
                if let Fate::Written { applied } = &mut prepared.messages[i].fate {
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
    pub(super) async fn announce(&self, prepared: &mut Prepared) -> bool {
        let Some(announcer) = &self.announcer else { return true };
        let mut writes: Vec<(usize, usize, &Images)> = Vec::new();
        for group in &prepared.groups {
            for (&i, image) in group.origins.iter().zip(&group.images) {
                let applied = prepared.messages[i].fate == Fate::Written { applied: true };
                if let (Some(image), true) = (image, applied) {
                    writes.push((i, group.target, image));
                }
            }
        }
        if writes.is_empty() {
            return true;
        }
        // Message order; a PK change's delete before its insert.
        writes.sort_by_key(|(i, _, image)| (*i, image.change != writer::AppliedOp::Delete));
        let applied: Vec<Applied<'_>> = writes
            .iter()
            .filter_map(|(i, target, images)| {
                Some(Applied {
                    message: *i,
                    projection: &self.targets[*target].name,
                    primary_keys: &self.targets[*target].key_targets,
                    images,
                    source: prepared.messages[*i].source.as_ref()?,
                    polled_at_ms: prepared.polled_at_ms,
                })
            })
            .collect();
        let Some(failures) = self.announce_with_retry(announcer, &applied).await else {
            return false;
        };
        let block = self.dead_letter.is_none();
        for f in failures {
            prepared.fail(f.message, f.code, f.reason, block);
        }
        prepared.failures.sort_by_key(|f| f.index);
        true
    }

    pub(super) async fn announce_with_retry(
        &self,
        announcer: &Announcer,
        applied: &[Applied<'_>],
    ) -> Option<Vec<FailedMessage>> {
        let retry = Retry {
            dependency: "outputs",
            kind: "outputs",
            what: "outputs failed; announcing the batch again",
        };
        self.retry(retry, || announcer.announce(applied)).await
    }

    /// Write groups per target: `tuning.writesInFlight`.
    pub(super) fn groups_per_target(&self) -> usize {
        self.config.tuning.writes_in_flight.max(1) as usize
    }

    /// Writes every group concurrently (statements of one key are in one group, in order); a
    /// failed command is retried with back-off (200 ms doubling to 30 s) until it succeeds or
    /// shutdown is asked for (`None`).
    pub(super) async fn write_with_retry(
        &self,
        groups: &[WriteGroup],
    ) -> Option<Vec<GroupWritten>> {
        let metrics = &self.monitor.metrics;
        let concern = &self.write_concern;
        let attempt = || {
            let writes = groups.iter().map(|group| {
                let target = &self.targets[group.target];
                let stmts = &group.statements;
                let images = self.announcer.as_ref().is_some_and(|a| a.wants_images(&target.name));
                let projection = &target.projection;
                async move {
                    if stmts.is_empty() {
                        return Ok((Vec::new(), Vec::new()));
                    }
                    let started = Instant::now();
                    let outcomes = match images {
                        true => {
                            writer::execute_with_images(&self.db, projection, stmts, concern).await
                        }
                        false => writer::execute(&self.db, projection, stmts, concern)
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
}
