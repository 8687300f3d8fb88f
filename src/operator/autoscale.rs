//! The lag autoscaler's decision (pure; docs/autoscaling.md#the-decision): from a lag reading,
//! the bounds and windows of `spec.autoscaling`, the workers now and the wishes of the recent
//! reads, how many workers to run and why. Scale-ups take the smallest wish of the up window
//! and happen at once; scale-downs take the largest wish of the down window, and need a whole
//! window of reads and a window since the last change. A failed read, or a roll in progress,
//! keeps the workers as they are.

use std::collections::VecDeque;

use crate::api::AutoscalingSpec;

use super::lag::Reading;

/// The bounds and windows of `spec.autoscaling`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The fewest workers.
    pub min: i32,
    /// The most workers.
    pub max: i32,
    /// The lag one worker is sized for.
    pub lag_per_replica: i64,
    /// The up window.
    pub up_window_ms: i64,
    /// The down window.
    pub down_window_ms: i64,
}

impl From<&AutoscalingSpec> for Policy {
    fn from(spec: &AutoscalingSpec) -> Self {
        Policy {
            min: spec.min_replicas.max(0),
            max: spec.max_replicas.max(spec.min_replicas).max(1),
            lag_per_replica: spec.lag_per_replica.max(1),
            up_window_ms: i64::from(spec.scale_up_stabilization_seconds.max(0)) * 1000,
            down_window_ms: i64::from(spec.scale_down_stabilization_seconds.max(0)) * 1000,
        }
    }
}

/// The wishes of the recent good reads of one updater (kept by the operator in memory; a new
/// leader starts with none, so it waits a whole down window before removing workers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// When the reads kept started (the first good read after a failure or a start).
    since_ms: Option<i64>,
    /// (time, workers wished), oldest first.
    wishes: VecDeque<(i64, i32)>,
}

impl History {
    /// A failed read: the evidence starts again after it.
    pub fn interrupt(&mut self) {
        self.since_ms = None;
        self.wishes.clear();
    }

    fn record(&mut self, now_ms: i64, wish: i32, keep_ms: i64) {
        self.since_ms.get_or_insert(now_ms);
        self.wishes.push_back((now_ms, wish));
        while self.wishes.front().is_some_and(|(t, _)| *t < now_ms - keep_ms) {
            self.wishes.pop_front();
        }
    }

    /// Whether the kept reads cover the last `window_ms`.
    fn covers(&self, now_ms: i64, window_ms: i64) -> bool {
        self.since_ms.is_some_and(|since| now_ms - since >= window_ms)
    }

    fn within(&self, now_ms: i64, window_ms: i64) -> impl Iterator<Item = i32> + '_ {
        self.wishes.iter().filter(move |(t, _)| *t >= now_ms - window_ms).map(|(_, w)| *w)
    }
}

/// Why the workers are what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Added workers at this read.
    ScaledUp,
    /// Removed workers at this read.
    ScaledDown,
    /// The lag asks for what runs.
    Stable,
    /// The lag asks for more workers than partitions; at the cap.
    PartitionCap,
    /// The lag asks for more than `maxReplicas`.
    MaxReplicas,
    /// More workers are wished, not yet for the whole up window.
    UpStabilization,
    /// Fewer workers are wished, not yet for the whole down window (or the last change is
    /// more recent than it).
    DownStabilization,
    /// The workers are rolling to a new config; no change until it ends.
    RollInProgress,
    /// The lag could not be read whole; no change.
    LagReadFailed,
}

impl Reason {
    /// The word of the status and the Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScaledUp => "ScaledUp",
            Reason::ScaledDown => "ScaledDown",
            Reason::Stable => "Stable",
            Reason::PartitionCap => "PartitionCap",
            Reason::MaxReplicas => "MaxReplicas",
            Reason::UpStabilization => "UpStabilization",
            Reason::DownStabilization => "DownStabilization",
            Reason::RollInProgress => "RollInProgress",
            Reason::LagReadFailed => "LagReadFailed",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The workers to run.
    pub replicas: i32,
    /// The workers before, when this decision changes them.
    pub changed_from: Option<i32>,
    /// Why.
    pub reason: Reason,
    /// Why, with the figures.
    pub message: String,
}

/// What a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The bounds and windows.
    pub policy: Policy,
    /// The workers the autoscaler runs now.
    pub current: i32,
    /// The lag read now, or why it failed.
    pub reading: Result<&'a Reading, &'a str>,
    /// Whether the workers are rolling to a new config.
    pub rolling: bool,
    /// Now, in ms since the epoch.
    pub now_ms: i64,
    /// The last change, in ms since the epoch.
    pub last_scale_ms: Option<i64>,
}

/// The workers wished for `lag`: `ceil(lag / lagPerReplica)` within the bounds and the
/// partition count, and which limit applied.
pub fn wish(policy: &Policy, lag: i64, partitions: i32) -> (i32, Option<Reason>) {
    let raw = i32::try_from(workers_for(lag, policy.lag_per_replica)).unwrap_or(i32::MAX);
    let mut wished = raw.max(policy.min);
    let mut limit = None;
    if wished > policy.max {
        wished = policy.max;
        limit = Some(Reason::MaxReplicas);
    }
    if wished > partitions {
        wished = partitions.max(0);
        limit = Some(Reason::PartitionCap);
    }
    (wished, limit)
}

/// `ceil(lag / lag_per_replica)`, a negative lag being none.
fn workers_for(lag: i64, lag_per_replica: i64) -> u64 {
    let lag = u64::try_from(lag).unwrap_or(0);
    lag.div_ceil(u64::try_from(lag_per_replica).unwrap_or(1).max(1))
}

/// Decides, and records the wish of a good read in `history`.
pub fn decide(input: Input<'_>, history: &mut History) -> Decision {
    let Input { policy, current, reading, rolling, now_ms, last_scale_ms } = input;
    let hold = |reason: Reason, message: String| Decision {
        replicas: current,
        changed_from: None,
        reason,
        message,
    };
    let reading = match reading {
        Ok(reading) => reading,
        Err(why) => {
            history.interrupt();
            return hold(
                Reason::LagReadFailed,
                format!("the lag could not be read, {current} workers kept: {why}"),
            );
        }
    };
    let (wished, limit) = wish(&policy, reading.total, reading.partitions);
    history.record(now_ms, wished, policy.up_window_ms.max(policy.down_window_ms));
    let asks = format!(
        "lag {} over {} partitions asks for {} workers (lagPerReplica {}, {}..{})",
        reading.total,
        reading.partitions,
        workers_for(reading.total, policy.lag_per_replica),
        policy.lag_per_replica,
        policy.min,
        policy.max
    );
    if rolling {
        return hold(
            Reason::RollInProgress,
            format!("{asks}; a roll is in progress: {current} kept"),
        );
    }
    let since_change = last_scale_ms.map_or(i64::MAX, |t| now_ms - t);
    let change = |to: i32, reason: Reason, message: String| Decision {
        replicas: to,
        changed_from: Some(current),
        reason: limit.unwrap_or(reason),
        message,
    };
    // Up: the smallest wish of the up window; down: the largest of the down window. Either
    // needs reads covering its window, that long since the last change, and a target on the
    // same side of `current` as the wish.
    let (window_ms, target, waiting, moved, side) = match wished.cmp(&current) {
        std::cmp::Ordering::Greater => {
            let target = history.within(now_ms, policy.up_window_ms).min();
            (policy.up_window_ms, target, Reason::UpStabilization, Reason::ScaledUp, "up")
        }
        std::cmp::Ordering::Less => {
            let target = history.within(now_ms, policy.down_window_ms).max();
            (policy.down_window_ms, target, Reason::DownStabilization, Reason::ScaledDown, "down")
        }
        std::cmp::Ordering::Equal => {
            return hold(limit.unwrap_or(Reason::Stable), format!("{asks}: {current} run"));
        }
    };
    let target = target.unwrap_or(current);
    let ready = history.covers(now_ms, window_ms)
        && since_change >= window_ms
        && (target - current).signum() == (wished - current).signum();
    if !ready {
        return hold(
            waiting,
            format!(
                "{asks}; {current} kept until the {side} window ({} s) agrees",
                window_ms / 1000
            ),
        );
    }
    change(target, moved, format!("{asks}: {current} -> {target}"))
}

/// The workers the autoscaler starts from: what it decided last, else what runs, within the
/// bounds (a change of the bounds applies at once).
pub fn starting_point(policy: &Policy, decided: Option<i32>, running: Option<i32>) -> i32 {
    decided.or(running).unwrap_or(policy.min).clamp(policy.min, policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn policy() -> Policy {
        Policy { min: 1, max: 5, lag_per_replica: 100, up_window_ms: 0, down_window_ms: 60 * S }
    }

    fn reading(total: i64, partitions: i32) -> Reading {
        Reading { total, topics: vec![], partitions }
    }

    /// Runs reads `(second, lag)` from `start` workers; returns the changes `(second, from,
    /// to)` and the last decision.
    fn run(policy: Policy, start: i32, reads: &[(i64, i64)]) -> (Vec<(i64, i32, i32)>, Decision) {
        let mut history = History::default();
        let mut current = start;
        let mut last_scale = None;
        let mut changes = Vec::new();
        let mut last = None;
        for (second, lag) in reads {
            let r = reading(*lag, 4);
            let d = decide(
                Input {
                    policy,
                    current,
                    reading: Ok(&r),
                    rolling: false,
                    now_ms: second * S,
                    last_scale_ms: last_scale,
                },
                &mut history,
            );
            if let Some(from) = d.changed_from {
                changes.push((*second, from, d.replicas));
                last_scale = Some(second * S);
            }
            current = d.replicas;
            last = Some(d);
        }
        (changes, last.unwrap())
    }

    #[test]
    fn the_wish_is_the_ceiling_within_bounds_and_partitions() {
        let p = policy();
        assert_eq!(wish(&p, 0, 4), (1, None));
        assert_eq!(wish(&p, 1, 4), (1, None));
        assert_eq!(wish(&p, 101, 4), (2, None));
        assert_eq!(wish(&p, 400, 4), (4, None));
        assert_eq!(wish(&p, 401, 4), (4, Some(Reason::PartitionCap)));
        assert_eq!(wish(&p, 10_000, 8), (5, Some(Reason::MaxReplicas)));
        assert_eq!(wish(&p, i64::MAX, 8), (5, Some(Reason::MaxReplicas)));
        assert_eq!(wish(&p, -5, 4), (1, None), "a negative lag is no lag");
        let zero = Policy { min: 0, ..p };
        assert_eq!(wish(&zero, 0, 4), (0, None));
        let high_min = Policy { min: 6, max: 8, ..p };
        assert_eq!(wish(&high_min, 0, 4), (4, Some(Reason::PartitionCap)), "partitions win");
    }

    #[test]
    fn a_backlog_scales_up_at_once_to_the_partition_cap() {
        let (changes, last) = run(policy(), 1, &[(0, 0), (15, 3000)]);
        assert_eq!(changes, [(15, 1, 4)]);
        assert_eq!(last.reason, Reason::PartitionCap);
        assert!(
            last.message.contains("lag 3000 over 4 partitions asks for 30 workers"),
            "{}",
            last.message
        );
        assert!(last.message.ends_with("1 -> 4"), "{}", last.message);
    }

    #[test]
    fn draining_scales_down_only_after_a_whole_down_window_in_one_step() {
        let mut reads = vec![(0, 400)];
        reads.extend((1..=8).map(|i| (i * 15, 0)));
        let (changes, last) = run(policy(), 1, &reads);
        // Up at 0; lag 0 from 15 s; the down window (60 s) since the change and of low
        // wishes ends at 75 s: one step to the largest wish of the window.
        assert_eq!(changes, [(0, 1, 4), (75, 4, 1)]);
        assert_eq!(last.reason, Reason::Stable);
    }

    #[test]
    fn the_down_step_takes_the_largest_wish_of_the_window() {
        let mut reads = vec![(0, 400), (15, 300), (30, 200)];
        reads.extend((3..=9).map(|i| (i * 15, 100)));
        let (changes, _) = run(policy(), 1, &reads);
        // At 60 s the window [0, 60] still holds 4; at 75 s it holds 3, 2, 1, 1, 1: the
        // largest is 3; the next step waits a window since that change.
        assert_eq!(changes, [(0, 1, 4), (75, 4, 3), (135, 3, 1)]);
    }

    #[test]
    fn flapping_lag_changes_the_workers_once_per_window_at_most() {
        // Lag jumps between 0 and 400 at every read (5 s) for ten minutes, ending high.
        let reads: Vec<(i64, i64)> =
            (0..=120).map(|i| (i * 5, if i % 2 == 0 { 400 } else { 0 })).collect();
        let (changes, _) = run(policy(), 1, &reads);
        assert_eq!(changes, [(0, 1, 4)], "up once, never down while it flaps");
        // With an up window as long as the down window, the flapping never scales up.
        let both = Policy { up_window_ms: 60 * S, ..policy() };
        let (changes, last) = run(both, 1, &reads);
        assert_eq!(changes, []);
        assert_eq!(last.reason, Reason::UpStabilization);
    }

    #[test]
    fn any_sequence_changes_at_most_once_per_down_window_downwards() {
        // A pseudo-random lag; every removal is a down window after the previous change.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let reads: Vec<(i64, i64)> = (0..500)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (i * 5, (x % 600) as i64)
            })
            .collect();
        let (changes, _) = run(policy(), 1, &reads);
        let mut previous: Option<i64> = None;
        for (second, from, to) in &changes {
            if to < from
                && let Some(p) = previous
            {
                assert!(second - p >= 60, "a removal {} s after a change: {changes:?}", second - p);
            }
            previous = Some(*second);
        }
        assert!(!changes.is_empty());
    }

    #[test]
    fn an_up_window_takes_the_smallest_wish_over_it() {
        let p = Policy { up_window_ms: 30 * S, ..policy() };
        let (changes, _) = run(p, 1, &[(0, 0), (15, 400), (30, 200), (45, 400), (60, 400)]);
        // At 30 s the window [0, 30] holds 1: no change; at 45 s [15, 45] holds 4, 2, 4: 2;
        // then 30 s must pass since that change.
        assert_eq!(changes, [(45, 1, 2)]);
    }

    #[test]
    fn a_failed_read_keeps_the_workers_and_restarts_the_evidence() {
        let p = policy();
        let mut history = History::default();
        let r = reading(400, 4);
        let input = |current, reading, now| Input {
            policy: p,
            current,
            reading,
            rolling: false,
            now_ms: now * S,
            last_scale_ms: None,
        };
        let d = decide(input(4, Err("brokers down"), 0), &mut history);
        assert_eq!((d.replicas, d.changed_from, d.reason), (4, None, Reason::LagReadFailed));
        assert!(d.message.contains("brokers down") && d.message.contains("4 workers kept"));
        let zero = reading(0, 4);
        // Low reads for 60 s, a failure, then low again: the window counts from the failure.
        for s in [0, 30, 60] {
            decide(input(4, Ok(&zero), s), &mut history);
        }
        decide(input(4, Err("timeout"), 75), &mut history);
        let d = decide(input(4, Ok(&zero), 90), &mut history);
        assert_eq!(d.reason, Reason::DownStabilization);
        let d = decide(input(4, Ok(&zero), 150), &mut history);
        assert_eq!((d.replicas, d.changed_from), (1, Some(4)));
        let d = decide(input(1, Ok(&r), 151), &mut history);
        assert_eq!((d.replicas, d.reason), (4, Reason::ScaledUp));
    }

    #[test]
    fn a_roll_in_progress_holds() {
        let r = reading(400, 4);
        let d = decide(
            Input {
                policy: policy(),
                current: 1,
                reading: Ok(&r),
                rolling: true,
                now_ms: 0,
                last_scale_ms: None,
            },
            &mut History::default(),
        );
        assert_eq!((d.replicas, d.changed_from, d.reason), (1, None, Reason::RollInProgress));
    }

    #[test]
    fn the_starting_point_is_the_last_decision_within_the_bounds() {
        let p = policy();
        assert_eq!(starting_point(&p, Some(3), Some(2)), 3);
        assert_eq!(starting_point(&p, None, Some(2)), 2);
        assert_eq!(starting_point(&p, None, None), 1);
        assert_eq!(starting_point(&p, Some(9), None), 5, "maxReplicas lowered");
        assert_eq!(starting_point(&Policy { min: 3, ..p }, Some(1), None), 3);
    }
}
