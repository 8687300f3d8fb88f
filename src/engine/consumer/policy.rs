//! The error policy (docs/failures.md#error-policies): log every failed message, then stop
//! the worker, pause the topic, or produce the record to the dead-letter topic; and the halts
//! that keep a stopped or paused partition's messages unprocessed and unstored.

use super::*;

impl Engine {
    /// The error policy of the previous batch may have halted partitions (or stopped the
    /// worker) after this batch was prepared and written: its messages there are not
    /// announced, not judged again and not stored; a replay writes them again.
    pub(super) fn halt_late(&self, prepared: &mut Prepared) {
        let stopped = self.halts.is_stopped();
        let halted = self.halts.halted();
        if !stopped && halted.is_empty() {
            return;
        }
        for m in &mut prepared.messages {
            let (topic, partition) = (m.message.topic(), m.message.partition());
            if stopped || halted.contains(&(topic.to_string(), partition)) {
                m.fate = Fate::Halted;
            }
        }
        let messages = &prepared.messages;
        prepared.failures.retain(|f| messages[f.index].fate != Fate::Halted);
    }

    /// Logs every failure and applies the error policy (docs/failures.md); false when shutdown
    /// interrupted a dead-letter retry.
    pub(super) async fn apply_policy(&self, prepared: &mut Prepared) -> bool {
        let failures = std::mem::take(&mut prepared.failures);
        for failure in &failures {
            let InFlight { message: msg, target, .. } = &prepared.messages[failure.index];
            error!(
                code = failure.code.as_str(),
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                reason = %failure.reason,
                "message failed"
            );
            match &self.config.error_policy {
                ErrorPolicy::Stop => self.stop(failure.code),
                ErrorPolicy::PauseTopic => self.pause_topic(msg.topic(), failure.code),
                ErrorPolicy::DeadLetter { .. } => {
                    match self.dead_letter(msg, *target, failure).await {
                        Some(Ok(())) => prepared.messages[failure.index].fate = Fate::DeadLettered,
                        Some(Err(e)) => {
                            error!(error = %e, code = failure.code.as_str(), topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), "dead-letter topic refused the record; falling back to errorPolicy stop");
                            prepared.ledger.block(msg.topic(), msg.partition(), msg.offset());
                            self.stop(failure.code);
                        }
                        None => return false,
                    }
                }
            }
        }
        true
    }

    /// Produces a failed message to the dead-letter topic; `None` when shutdown came first.
    pub(super) async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        target: Option<usize>,
        failure: &MessageFailure,
    ) -> Option<Result<(), DeadLetterError>> {
        let dlq = self.dead_letter.as_ref()?;
        let projection = target.map(|t| self.targets[t].name.as_str()).unwrap_or_default();
        let record = dead_letter::DeadLetterReason {
            code: failure.code,
            reason: &failure.reason,
            projection,
        };
        let health = &self.monitor.health;
        let retries = self
            .monitor
            .metrics
            .transient_retries
            .get_or_create_owned(&RetryLabel { kind: "dead_letter" });
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
                code = failure.code.as_str(),
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
    pub(super) fn stop(&self, code: ErrorCode) {
        if self.halts.stop() {
            error!(
                code = code.as_str(),
                "consumer stopped by errorPolicy stop; nothing at or after this offset is committed"
            );
            self.monitor.health.set_stopped(code.as_str());
            self.monitor
                .metrics
                .stopped
                .get_or_create(&ReasonLabel { reason: code.to_string() })
                .set(1);
        }
        self.pause_all();
    }

    /// `errorPolicy: pauseTopic`: the topic's partitions owned here stop; others go on.
    pub(super) fn pause_topic(&self, topic: &str, code: ErrorCode) {
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
        let paused = self.monitor.health.set_paused(topic);
        self.monitor.metrics.paused_topics.set(paused as i64);
        error!(
            topic,
            code = code.as_str(),
            "topic paused by errorPolicy pauseTopic; its other partitions' owners and other topics go on"
        );
    }

    pub(super) fn pause_all(&self) {
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
