//! Judges checked statements against the stored documents before they are sent (docs/writes.md#validation-modes
//! strict `required`, docs/writes.md#insert-update-upsert upsert off): pure, from one read of the batch's keys, each statement
//! of a key in batch order seeing what the earlier ones left. The stale guard comes first and
//! stays the server's: a statement the guard would refuse is sent as is and comes back stale.
//!
//! This is sound because one writer owns a collection and a key's statements of a batch run in
//! one write group, in order (docs/consumption.md): nothing else changes a key between the read and the
//! write.

use crate::engine::code::ErrorCode;
use std::cmp::Ordering;
use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

use crate::engine::projection::{Check, Effect, Expect, Statement};

/// What a key's stored document is, as far as the checks care.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    /// `__STATE__`, when set.
    state: Option<String>,
    /// `__internal__counter`, when set.
    counter: Option<Bson>,
    /// `__internal__counterType`, when set.
    kind: Option<String>,
    /// `__internal__kafkaInfo.topic` / `.partition`, when set.
    topic: Option<String>,
    partition: Option<i64>,
    /// The required fields (targets) the document lacks.
    lacks: Vec<String>,
}

impl Stored {
    /// Reads what the checks need from a stored document.
    pub(super) fn of(doc: &Document, required: &[&str]) -> Self {
        let info = doc.get_document("__internal__kafkaInfo").ok();
        Stored {
            state: doc.get_str("__STATE__").ok().map(str::to_string),
            counter: doc.get("__internal__counter").cloned(),
            kind: doc.get_str("__internal__counterType").ok().map(str::to_string),
            topic: info.and_then(|i| i.get_str("topic").ok()).map(str::to_string),
            partition: info.and_then(|i| i.get("partition")).and_then(as_i64),
            lacks: required
                .iter()
                .filter(|f| !doc.contains_key(**f))
                .map(|f| f.to_string())
                .collect(),
        }
    }

    /// Anything but `DELETED` is a live document (`DRAFT`/`TRASH` included, docs/writes.md#metadata).
    fn is_live(&self) -> bool {
        self.state.as_deref() != Some("DELETED")
    }
}

/// What to do with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send it (its outcome comes from MongoDB).
    Send,
    /// Do not send it: the message fails with this docs/failures.md code.
    Fail {
        /// The code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
}

/// The identity of a primary-key value list (numeric types compare by value, as in MongoDB).
pub(super) fn key_id<'a>(values: impl Iterator<Item = Option<&'a Bson>>) -> String {
    values
        .map(|v| v.map_or_else(|| "null".to_string(), ToString::to_string))
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The keys whose stored documents the checks of `statements` need (deduplicated).
pub(super) fn keys_to_read(statements: &[Statement]) -> Vec<&Document> {
    let mut seen = std::collections::HashSet::new();
    statements
        .iter()
        .filter_map(|s| match s {
            Statement::Checked(c) if needs_read(&c.check) => Some(&c.check.key),
            _ => None,
        })
        .filter(|key| seen.insert(key_id(key.values().map(Some))))
        .collect()
}

fn needs_read(check: &Check) -> bool {
    check.expect != Expect::Any || !check.required_absent.is_empty()
}

/// One verdict per statement, in order. `stored` holds every key of [`keys_to_read`]: its
/// document, or `None` when missing; it is updated as the statements would change it.
/// `required` lists the projection's required fields (targets).
pub(super) fn judge(
    statements: &[Statement],
    stored: &mut HashMap<String, Option<Stored>>,
    required: &[&str],
) -> Vec<Verdict> {
    statements
        .iter()
        .map(|s| match s {
            Statement::Checked(c) => {
                match stored.get_mut(&key_id(c.check.key.values().map(Some))) {
                    Some(slot) => judge_one(&c.check, slot, required),
                    None => Verdict::Send,
                }
            }
            _ => Verdict::Send,
        })
        .collect()
}

fn judge_one(check: &Check, slot: &mut Option<Stored>, required: &[&str]) -> Verdict {
    let stored = slot.as_ref();
    if !applies(check, stored) {
        return Verdict::Send; // stale: the guard in the filter refuses it
    }
    let live = stored.is_some_and(Stored::is_live);
    match check.expect {
        Expect::Live if !live => {
            return fail(
                ErrorCode::MissingDocument,
                "update of a missing or DELETED document with writes.upsert false".into(),
            );
        }
        Expect::NotLive if live && !stored.is_some_and(|s| written_by(check, s)) => {
            return fail(
                ErrorCode::DuplicateInsert,
                "insert of a document that exists with writes.upsert false".into(),
            );
        }
        _ => {}
    }
    let lacks: Vec<String> = match stored {
        Some(s) => s.lacks.clone(),
        None => required.iter().map(|f| f.to_string()).collect(),
    };
    if check.effect == Effect::Live && !live {
        let missing: Vec<&String> =
            check.required_absent.iter().filter(|f| lacks.contains(f)).collect();
        if !missing.is_empty() {
            return fail(
                ErrorCode::ValidationFailed,
                format!("required field(s) {missing:?} absent when the write creates the document"),
            );
        }
    }
    *slot = after(check, lacks);
    Verdict::Send
}

fn fail(code: ErrorCode, message: String) -> Verdict {
    Verdict::Fail { code, message }
}

/// The stored document once `check`'s statement applied.
fn after(check: &Check, lacks: Vec<String>) -> Option<Stored> {
    let state = match check.effect {
        Effect::Removed => return None,
        Effect::Live => "PUBLIC",
        Effect::Deleted => "DELETED",
    };
    let lacks = match check.effect {
        Effect::Live => lacks.into_iter().filter(|f| check.required_absent.contains(f)).collect(),
        _ => lacks,
    };
    Some(Stored {
        state: Some(state.to_string()),
        counter: Some(check.counter.clone()),
        kind: Some(check.kind.to_string()),
        topic: Some(check.topic.clone()),
        partition: Some(i64::from(check.partition)),
        lacks,
    })
}

/// The stale guard of `Projection::guarded`, client side: apply when nothing comparable is
/// stored or the incoming counter is at least the stored one.
fn applies(check: &Check, stored: Option<&Stored>) -> bool {
    let Some(stored) = stored.filter(|_| check.guard) else { return true };
    let Some(counter) = &stored.counter else { return true };
    if stored.kind.as_deref() != Some(check.kind) || !same_source(check, stored) {
        return true;
    }
    matches!(compare(counter, &check.counter), Some(Ordering::Less | Ordering::Equal))
}

/// Offsets compare within one topic-partition only.
fn same_source(check: &Check, stored: &Stored) -> bool {
    check.kind != "offset"
        || (stored.topic.as_deref() == Some(check.topic.as_str())
            && stored.partition == Some(i64::from(check.partition)))
}

/// The stored document was written by this very message: a replay, which re-applies.
fn written_by(check: &Check, stored: &Stored) -> bool {
    stored.kind.as_deref() == Some(check.kind)
        && same_source(check, stored)
        && stored.counter.as_ref().and_then(|c| compare(c, &check.counter)) == Some(Ordering::Equal)
}

/// Numeric order of two counters (int32/int64/double/Decimal128), as MongoDB compares them.
fn compare(a: &Bson, b: &Bson) -> Option<Ordering> {
    match (exact(a), exact(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => approximate(a)?.partial_cmp(&approximate(b)?),
    }
}

fn as_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}

/// An integral counter, exactly.
fn exact(b: &Bson) -> Option<i128> {
    match b {
        Bson::Int32(v) => Some(i128::from(*v)),
        Bson::Int64(v) => Some(i128::from(*v)),
        Bson::Double(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e36 => Some(*v as i128),
        Bson::Decimal128(d) => decimal_integer(&d.to_string()),
        _ => None,
    }
}

fn approximate(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(v) => Some(f64::from(*v)),
        Bson::Int64(v) => Some(*v as f64),
        Bson::Double(v) => Some(*v),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

/// A decimal string (`123`, `-1.5E+3`, `1.20E+1`) as an integer, when it is one and fits.
fn decimal_integer(s: &str) -> Option<i128> {
    let (mantissa, exponent) = match s.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.bytes().chain(frac.bytes())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int}{frac}");
    let scale = exponent.checked_sub(i32::try_from(frac.len()).ok()?)?;
    let value = if scale >= 0 {
        let factor = 10_i128.checked_pow(u32::try_from(scale).ok()?)?;
        digits.parse::<i128>().ok()?.checked_mul(factor)?
    } else {
        let cut = usize::try_from(-scale).ok()?;
        let keep = digits.len().saturating_sub(cut);
        if !digits[keep..].bytes().all(|c| c == b'0') {
            return None;
        }
        if keep == 0 { 0 } else { digits[..keep].parse::<i128>().ok()? }
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Decimal128, doc};

    use super::*;
    use crate::engine::projection::Checked;

    fn check(expect: Expect, effect: Effect, counter: i64) -> Check {
        Check {
            key: doc! { "id": "C-1" },
            expect,
            required_absent: Vec::new(),
            counter: Bson::Int64(counter),
            kind: "offset",
            topic: "t".into(),
            partition: 0,
            guard: true,
            effect,
        }
    }

    fn statement(check: Check) -> Statement {
        let statement = Statement::Delete { filter: doc! {} };
        Statement::Checked(Box::new(Checked { statement, check }))
    }

    fn stored(state: &str, counter: i64) -> Stored {
        Stored {
            state: Some(state.into()),
            counter: Some(Bson::Int64(counter)),
            kind: Some("offset".into()),
            topic: Some("t".into()),
            partition: Some(0),
            lacks: Vec::new(),
        }
    }

    /// The verdicts of `checks` in order, from `initial` stored under key `C-1`.
    fn run(checks: Vec<Check>, initial: Option<Stored>, required: &[&str]) -> Vec<Verdict> {
        let statements: Vec<Statement> = checks.into_iter().map(statement).collect();
        let mut map: HashMap<String, Option<Stored>> = keys_to_read(&statements)
            .into_iter()
            .map(|k| (key_id(k.values().map(Some)), initial.clone()))
            .collect();
        judge(&statements, &mut map, required)
    }

    fn codes(verdicts: &[Verdict]) -> Vec<&'static str> {
        verdicts
            .iter()
            .map(|v| match v {
                Verdict::Send => "send",
                Verdict::Fail { code, .. } => code.as_str(),
            })
            .collect()
    }

    #[test]
    fn upsert_off_conflicts_with_deleted_counting_as_missing() {
        use Effect::Live;
        use Expect::{Live as Exists, NotLive};
        let insert = |c| check(NotLive, Live, c);
        let update = |c| check(Exists, Live, c);
        // docs/vectors.md #35 and #36.
        assert_eq!(
            codes(&run(vec![insert(110)], Some(stored("PUBLIC", 100)), &[])),
            ["DUPLICATE_INSERT"]
        );
        assert_eq!(codes(&run(vec![update(110)], None, &[])), ["MISSING_DOCUMENT"]);
        // DELETED is missing: an insert resurrects it, an update fails.
        assert_eq!(codes(&run(vec![insert(110)], Some(stored("DELETED", 100)), &[])), ["send"]);
        assert_eq!(
            codes(&run(vec![update(110)], Some(stored("DELETED", 100)), &[])),
            ["MISSING_DOCUMENT"]
        );
        // DRAFT is live.
        assert_eq!(codes(&run(vec![update(110)], Some(stored("DRAFT", 100)), &[])), ["send"]);
    }

    #[test]
    fn stale_comes_first_and_a_replay_reapplies() {
        let insert = |c| check(Expect::NotLive, Effect::Live, c);
        let update = |c| check(Expect::Live, Effect::Live, c);
        // Older than the stored counter: sent, the guard makes it stale (not an error).
        assert_eq!(codes(&run(vec![insert(90)], Some(stored("PUBLIC", 100)), &[])), ["send"]);
        assert_eq!(codes(&run(vec![update(90)], Some(stored("DELETED", 100)), &[])), ["send"]);
        // The insert that wrote the document, replayed.
        assert_eq!(codes(&run(vec![insert(100)], Some(stored("PUBLIC", 100)), &[])), ["send"]);
        // Same counter from another partition is not a replay.
        let other = Stored { partition: Some(1), ..stored("PUBLIC", 100) };
        assert_eq!(codes(&run(vec![insert(100)], Some(other), &[])), ["DUPLICATE_INSERT"]);
        // Guard off: nothing is stale, a replay is still recognised.
        let unguarded = |c| Check { guard: false, ..insert(c) };
        assert_eq!(
            codes(&run(vec![unguarded(90)], Some(stored("PUBLIC", 100)), &[])),
            ["DUPLICATE_INSERT"]
        );
        assert_eq!(codes(&run(vec![unguarded(100)], Some(stored("PUBLIC", 100)), &[])), ["send"]);
    }

    #[test]
    fn a_keys_statements_see_what_the_earlier_ones_left() {
        let insert = |c| check(Expect::NotLive, Effect::Live, c);
        let update = |c| check(Expect::Live, Effect::Live, c);
        let remove = |c| check(Expect::Any, Effect::Removed, c);
        // remove(50) comes after insert(105): stale, so it leaves the document live.
        let checks = vec![
            update(101),
            insert(102),
            remove(103),
            update(104),
            insert(105),
            remove(50),
            insert(106),
            update(107),
        ];
        assert_eq!(
            codes(&run(checks, None, &[])),
            [
                "MISSING_DOCUMENT",
                "send",
                "send",
                "MISSING_DOCUMENT",
                "send",
                "send",
                "DUPLICATE_INSERT",
                "send"
            ]
        );
    }

    #[test]
    fn strict_required_fails_only_when_the_write_creates() {
        let upsert = |absent: &[&str], c| Check {
            required_absent: absent.iter().map(|f| f.to_string()).collect(),
            ..check(Expect::Any, Effect::Live, c)
        };
        let required = ["name", "age"];
        // Creation without "name".
        let v = run(vec![upsert(&["name"], 100)], None, &required);
        assert!(
            matches!(&v[..], [Verdict::Fail { code: ErrorCode::ValidationFailed, message }] if message.contains("\"name\"")),
            "{v:?}"
        );
        // The same partial write on a live document.
        assert_eq!(
            codes(&run(vec![upsert(&["name"], 100)], Some(stored("PUBLIC", 90)), &required)),
            ["send"]
        );
        // A full write creates it, then a partial one updates it.
        assert_eq!(
            codes(&run(vec![upsert(&[], 100), upsert(&["name"], 101)], None, &required)),
            ["send", "send"]
        );
        // Resurrecting a DELETED document: only fields it lacks count.
        let marker = Stored { lacks: vec!["name".into(), "age".into()], ..stored("DELETED", 90) };
        assert_eq!(
            codes(&run(vec![upsert(&["age"], 100)], Some(marker), &required)),
            ["VALIDATION_FAILED"]
        );
        let kept = Stored { lacks: vec![], ..stored("DELETED", 90) };
        assert_eq!(codes(&run(vec![upsert(&["age"], 100)], Some(kept), &required)), ["send"]);
        // Stale: the guard decides, no validation.
        assert_eq!(
            codes(&run(vec![upsert(&["name"], 10)], Some(stored("DELETED", 90)), &required)),
            ["send"]
        );
    }

    #[test]
    fn counters_compare_numerically_across_types() {
        let dec = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().unwrap());
        assert_eq!(compare(&Bson::Int32(5), &Bson::Int64(5)), Some(Ordering::Equal));
        assert_eq!(compare(&Bson::Int64(5), &dec("99999999999999999999")), Some(Ordering::Less));
        assert_eq!(
            compare(&dec("100000000000000000000"), &dec("99999999999999999999")),
            Some(Ordering::Greater)
        );
        assert_eq!(compare(&dec("1.5E+3"), &Bson::Int64(1500)), Some(Ordering::Equal));
        assert_eq!(compare(&Bson::Double(2.5), &Bson::Int64(3)), Some(Ordering::Less));
        assert_eq!(compare(&Bson::String("5".into()), &Bson::Int64(5)), None);
        assert_eq!(decimal_integer("-12.00"), Some(-12));
        assert_eq!(decimal_integer("1.25E+1"), None);
        assert_eq!(decimal_integer("12E-1"), None);
        assert_eq!(decimal_integer("abc"), None);
    }

    #[test]
    fn stored_documents_are_read_for_what_the_checks_need() {
        let doc = doc! {
            "id": "C-1", "__STATE__": "PUBLIC", "__internal__counter": 7_i64,
            "__internal__counterType": "offset", "age": 3_i64,
            "__internal__kafkaInfo": { "topic": "t", "partition": 0 },
        };
        assert_eq!(
            Stored::of(&doc, &["name", "age"]),
            Stored { lacks: vec!["name".into()], ..stored("PUBLIC", 7) }
        );
        assert_eq!(
            key_id([Some(&Bson::Int32(5))].into_iter()),
            key_id([Some(&Bson::Int64(5))].into_iter())
        );
    }
}
