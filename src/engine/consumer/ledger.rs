//! What became of each message of a batch ([`Fate`]), the partitions blocked from an offset on
//! (a failure under `stop` / `pauseTopic`, an IIDR before image waiting for its after image),
//! and the offsets to store: per partition, the highest one below everything unstored.

use super::*;

/// What became of one message of a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
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
    pub(super) fn label(self) -> Option<&'static str> {
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

/// Per topic-partition, the first offset that must not be stored: a failure under `stop` /
/// `pauseTopic`, an IIDR before image waiting for its after image. Nothing of that partition
/// from there on is processed further in the batch or stored.
#[derive(Debug, Default, Clone)]
pub(super) struct Ledger {
    blocked: BTreeMap<(String, i32), i64>,
}

impl Ledger {
    /// Blocks `topic`/`partition` from `offset` on (an earlier block stays).
    pub(super) fn block(&mut self, topic: &str, partition: i32, offset: i64) {
        let first = self.blocked.entry((topic.to_string(), partition)).or_insert(offset);
        *first = (*first).min(offset);
    }

    /// The first offset of `topic`/`partition` that must not be stored, if any.
    fn first_blocked(&self, topic: &str, partition: i32) -> Option<i64> {
        if self.blocked.is_empty() {
            return None;
        }
        self.blocked.get(&(topic.to_string(), partition)).copied()
    }

    /// Whether the message's partition is halted (by the error policy) or blocked.
    pub(super) fn holds(&self, halted: &BTreeSet<(String, i32)>, msg: &OwnedMessage) -> bool {
        if halted.is_empty() && self.blocked.is_empty() {
            return false;
        }
        let tp = (msg.topic().to_string(), msg.partition());
        halted.contains(&tp) || self.blocked.contains_key(&tp)
    }
}

/// Per partition, the offset to store: the highest offset of a message that is done, below the
/// first one that is not (halted, or at or after the partition's first blocked offset), in
/// batch order. librdkafka commits it + 1.
pub(super) fn offsets_to_store<'a>(
    messages: impl IntoIterator<Item = (&'a str, i32, i64, Fate)>,
    ledger: &Ledger,
) -> BTreeMap<(&'a str, i32), i64> {
    let mut done: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    let mut stopped: BTreeSet<(&str, i32)> = BTreeSet::new();
    for (topic, partition, offset, fate) in messages {
        let tp = (topic, partition);
        let blocked = ledger.first_blocked(topic, partition).is_some_and(|first| offset >= first);
        if blocked || fate == Fate::Halted || stopped.contains(&tp) {
            // Nothing of this partition after an unstored message may be stored.
            stopped.insert(tp);
            continue;
        }
        let entry = done.entry(tp).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    done
}

impl Engine {
    /// Stores the offsets of a finished batch ([`offsets_to_store`]).
    pub(super) fn store_offsets(&self, prepared: &Prepared) {
        let messages = prepared.messages.iter().map(|m| {
            let msg = &m.message;
            (msg.topic(), msg.partition(), msg.offset(), m.fate)
        });
        for ((topic, partition), offset) in offsets_to_store(messages, &prepared.ledger) {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile: its next owner replays from the commit.
                warn!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Fate = Fate::Written { applied: true };

    fn store(
        messages: &[(&'static str, i32, i64, Fate)],
        ledger: &Ledger,
    ) -> Vec<((&'static str, i32), i64)> {
        offsets_to_store(messages.iter().copied(), ledger).into_iter().collect()
    }

    #[test]
    fn every_done_message_moves_its_partition_on() {
        let messages = [
            ("a", 0, 10, W),
            ("a", 1, 5, Fate::Skipped),
            ("a", 0, 11, Fate::Written { applied: false }),
            ("b", 0, 3, Fate::DeadLettered),
            ("a", 1, 6, Fate::Failed),
        ];
        assert_eq!(
            store(&messages, &Ledger::default()),
            [(("a", 0), 11), (("a", 1), 6), (("b", 0), 3)]
        );
    }

    #[test]
    fn a_block_or_a_halt_stops_its_partition_only() {
        let mut ledger = Ledger::default();
        ledger.block("a", 0, 12);
        ledger.block("a", 0, 15);
        let messages = [
            ("a", 0, 10, W),
            ("a", 0, 11, W),
            ("a", 0, 12, Fate::Failed),
            ("a", 0, 13, W),
            ("a", 1, 7, W),
            ("b", 0, 1, Fate::Halted),
            ("b", 0, 2, W),
            ("c", 0, 4, W),
        ];
        assert_eq!(store(&messages, &ledger), [(("a", 0), 11), (("a", 1), 7), (("c", 0), 4)]);
        // The lowest block wins, whatever the order they come in.
        let mut ledger = Ledger::default();
        ledger.block("a", 0, 15);
        ledger.block("a", 0, 11);
        assert_eq!(store(&messages, &ledger), [(("a", 0), 10), (("a", 1), 7), (("c", 0), 4)]);
        // A partition blocked before its first message of the batch stores nothing.
        let mut ledger = Ledger::default();
        ledger.block("c", 0, 2);
        assert_eq!(store(&[("c", 0, 4, W)], &ledger), []);
    }
}
