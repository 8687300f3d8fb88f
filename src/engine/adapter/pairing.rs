//! Joins the two records of an IIDR audit update (docs/formats.md, "IBM IIDR"): the `UB`
//! before image and the `UP` after image that follows it on the same partition, of the same
//! commit (`A_CCID`, when written). The pair becomes one change with both images, so an update
//! that changes the primary key deletes the old row and writes the new one.
//!
//! A before image is held until the next record of its partition. Its offset must not be
//! committed while it waits ([`Pairing::waiting`]): after a restart the pair is read again
//! from the before image, never from the after image alone.

use super::{Adapted, BeforeImage, Skip};

/// Before images waiting for their after image, one per partition at most.
#[derive(Debug, Default)]
pub struct Pairing {
    waiting: Vec<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    topic: String,
    partition: i32,
    offset: i64,
    before: BeforeImage,
}

/// What one record became once paired.
#[derive(Debug, PartialEq)]
pub struct Paired {
    /// A change or a skip (never a before or after image).
    pub adapted: Adapted,
    /// The offset of a before image that found no after image (the next record of its
    /// partition was not its `UP`): written by nothing, worth a warning.
    pub orphan: Option<i64>,
}

impl Pairing {
    /// Pairs the record at `offset` of `topic`/`partition` with the before image waiting there.
    pub fn pair(&mut self, topic: &str, partition: i32, offset: i64, adapted: Adapted) -> Paired {
        let waiting = self.take(topic, partition);
        match adapted {
            Adapted::BeforeImage(before) => {
                let topic = topic.to_string();
                self.waiting.push(Waiting { topic, partition, offset, before });
                Paired {
                    adapted: Adapted::Skip(Skip::BeforeImage),
                    orphan: waiting.map(|w| w.offset),
                }
            }
            Adapted::AfterImage { mut change, commit } => {
                let mut orphan = None;
                if let Some(w) = waiting {
                    let same_commit = match (&w.before.commit, &commit) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    };
                    if w.offset + 1 == offset && same_commit {
                        change.before = Some(w.before.image);
                    } else {
                        orphan = Some(w.offset);
                    }
                }
                Paired { adapted: Adapted::Change(change), orphan }
            }
            other => Paired { adapted: other, orphan: waiting.map(|w| w.offset) },
        }
    }

    /// Ends the wait on `topic`/`partition` for a record that is not an after image at all (it
    /// failed to adapt): the offset of the before image left an orphan, if one waited.
    pub fn interrupt(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.take(topic, partition).map(|w| w.offset)
    }

    fn take(&mut self, topic: &str, partition: i32) -> Option<Waiting> {
        let i = self.waiting.iter().position(|w| w.partition == partition && w.topic == topic)?;
        Some(self.waiting.swap_remove(i))
    }

    /// Each waiting before image as (topic, partition, offset): the first offset of its
    /// partition that must not be committed yet.
    pub fn waiting(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.waiting.iter().map(|w| (w.topic.as_str(), w.partition, w.offset))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixture::obj;
    use super::super::{ChangeEvent, Op};
    use super::*;

    fn before(id: &str, commit: Option<&str>) -> Adapted {
        Adapted::BeforeImage(BeforeImage {
            image: obj(json!({"ID": id, "C2": "old"})),
            commit: commit.map(str::to_string),
        })
    }

    fn after(id: &str, commit: Option<&str>) -> Adapted {
        Adapted::AfterImage {
            change: ChangeEvent::upsert(
                obj(json!({"ID": id})),
                obj(json!({"ID": id, "C2": "new"})),
                None,
            ),
            commit: commit.map(str::to_string),
        }
    }

    fn before_of(paired: &Paired) -> Option<&serde_json::Value> {
        match &paired.adapted {
            Adapted::Change(c) => c.before.as_ref().and_then(|b| b.get("ID")),
            _ => None,
        }
    }

    #[test]
    fn a_before_image_joins_the_next_after_image_of_its_commit() {
        let mut p = Pairing::default();
        let ub = p.pair("t", 0, 10, before("3", Some("116489854")));
        assert_eq!(ub, Paired { adapted: Adapted::Skip(Skip::BeforeImage), orphan: None });
        assert_eq!(p.waiting().collect::<Vec<_>>(), [("t", 0, 10)]);
        let up = p.pair("t", 0, 11, after("9", Some("116489854")));
        assert_eq!(before_of(&up), Some(&json!("3")), "the key change is visible");
        assert_eq!(up.orphan, None);
        assert_eq!(p.waiting().count(), 0);
    }

    #[test]
    fn partitions_wait_apart_and_anything_else_ends_the_wait() {
        let mut p = Pairing::default();
        p.pair("t", 0, 10, before("3", None));
        p.pair("t", 1, 20, before("4", None));
        // Another topic's record does not disturb partition 0 of "t".
        let other = p.pair("u", 0, 11, Adapted::Skip(Skip::Tombstone));
        assert_eq!(other.orphan, None);
        let up = p.pair("t", 1, 21, after("4", None));
        assert_eq!(before_of(&up), Some(&json!("4")), "no commit id: adjacency is enough");
        // A plain change after a before image leaves it an orphan.
        let delete = Adapted::Change(ChangeEvent::delete(obj(json!({"ID": "3"}))));
        let next = p.pair("t", 0, 11, delete);
        assert_eq!(next.orphan, Some(10));
        assert!(matches!(next.adapted, Adapted::Change(ChangeEvent { op: Op::Delete, .. })));
        assert_eq!(p.waiting().count(), 0);
    }

    #[test]
    fn another_commit_or_a_gap_does_not_pair() {
        let mut p = Pairing::default();
        p.pair("t", 0, 10, before("3", Some("1")));
        let up = p.pair("t", 0, 11, after("3", Some("2")));
        assert_eq!((before_of(&up), up.orphan), (None, Some(10)));
        p.pair("t", 0, 12, before("3", Some("5")));
        let up = p.pair("t", 0, 14, after("3", Some("5")));
        assert_eq!((before_of(&up), up.orphan), (None, Some(12)));
        // A second before image replaces the first, which is reported.
        p.pair("t", 0, 20, before("3", None));
        assert_eq!(p.pair("t", 0, 21, before("3", None)).orphan, Some(20));
        assert_eq!((p.interrupt("t", 1), p.interrupt("t", 0)), (None, Some(21)));
        p.pair("t", 0, 30, before("3", None));
        assert_eq!(p.waiting().collect::<Vec<_>>(), [("t", 0, 30)]);
    }
}
