//! One ER-schema join condition (docs/outputs.md#strategies step 2): its parsed form, the literals
//! (`__string__[x]`, `__integer__[n]`, `__boolean__[b]`, deprecated `__constant__[x]`), the
//! MongoDB query it becomes for one source document, and the same test evaluated in memory on a
//! fetched document, which is how a batched `find` is attributed back to its sources.

use std::cmp::Ordering;

use mongodb::bson::{Bson, Document, doc};

/// A comparison operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CompareOp {
    /// The operator of a MongoDB query key (`$eq`, ...).
    pub(crate) fn from_key(key: &str) -> Option<CompareOp> {
        Some(match key {
            "$eq" => CompareOp::Eq,
            "$ne" => CompareOp::Ne,
            "$gt" => CompareOp::Gt,
            "$gte" => CompareOp::Gte,
            "$lt" => CompareOp::Lt,
            "$lte" => CompareOp::Lte,
            _ => return None,
        })
    }

    fn key(self) -> &'static str {
        match self {
            CompareOp::Eq => "$eq",
            CompareOp::Ne => "$ne",
            CompareOp::Gt => "$gt",
            CompareOp::Gte => "$gte",
            CompareOp::Lt => "$lt",
            CompareOp::Lte => "$lte",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CompareOp::Eq => ord == Ordering::Equal,
            CompareOp::Ne => ord != Ordering::Equal,
            CompareOp::Gt => ord == Ordering::Greater,
            CompareOp::Gte => ord != Ordering::Less,
            CompareOp::Lt => ord == Ordering::Less,
            CompareOp::Lte => ord != Ordering::Greater,
        }
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// A field of the source (current) document, possibly dotted.
    Field(String),
    /// A literal value.
    Literal(Bson),
}

impl Operand {
    /// Its value for `source`; `None` when the field is absent or null (no match).
    fn resolve(&self, source: &Document) -> Option<Bson> {
        match self {
            Operand::Literal(v) => Some(v.clone()),
            Operand::Field(f) => get_path(source, f).filter(|v| !matches!(v, Bson::Null)).cloned(),
        }
    }
}

/// A parsed condition: target fields (of the related projection) against operands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    /// Every one holds (an object's entries, `$and`).
    And(Vec<Cond>),
    /// At least one holds (`$or`).
    Or(Vec<Cond>),
    /// `target <op> operand`.
    Cmp { target: String, op: CompareOp, operand: Operand },
    /// `target` is (`negate`: is not) one of the operands (`$in`, `$nin`).
    In { target: String, negate: bool, operands: Vec<Operand> },
}

/// The literal kinds, for messages.
pub(crate) const LITERALS: &str =
    "__string__[text], __integer__[123], __boolean__[true|false], __constant__[text] (deprecated)";

/// Parses a condition string: `Ok(None)` for a field name, `Ok(Some(value))` for a literal,
/// `Err(why)` for a malformed literal.
pub(crate) fn parse_literal(s: &str) -> Result<Option<Bson>, String> {
    const KINDS: [&str; 4] = ["string", "integer", "boolean", "constant"];
    let Some((kind, rest)) = s.strip_prefix("__").and_then(|r| r.split_once("__")) else {
        return Ok(None);
    };
    let lowercase = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase());
    if !lowercase || !(KINDS.contains(&kind) || rest.starts_with('[')) {
        return Ok(None);
    }
    let Some(arg) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return Err(format!("malformed literal {s:?}: expected __{kind}__[value]"));
    };
    match kind {
        "string" | "constant" => Ok(Some(Bson::String(arg.to_string()))),
        "integer" => arg
            .parse::<i64>()
            .map(|n| Some(Bson::Int64(n)))
            .map_err(|_| format!("malformed literal {s:?}: {arg:?} is not an integer")),
        "boolean" => match arg {
            "true" => Ok(Some(Bson::Boolean(true))),
            "false" => Ok(Some(Bson::Boolean(false))),
            _ => Err(format!("malformed literal {s:?}: expected __boolean__[true] or [false]")),
        },
        _ => Err(format!("malformed literal {s:?}: unknown literal type; valid: {LITERALS}")),
    }
}

impl Cond {
    /// The single plain-field equality `{target: "sourceField"}`, if that is all it is: such
    /// conditions are batched as one `$in`.
    pub(crate) fn as_field_equality(&self) -> Option<(&str, &str)> {
        match self {
            Cond::Cmp { target, op: CompareOp::Eq, operand: Operand::Field(f) } => {
                Some((target, f))
            }
            Cond::And(v) if v.len() == 1 => v[0].as_field_equality(),
            _ => None,
        }
    }

    /// Source fields it reads.
    pub(crate) fn source_fields(&self, out: &mut Vec<String>) {
        self.visit(&mut |_, operand| {
            if let Operand::Field(f) = operand {
                out.push(f.clone());
            }
        });
    }

    /// Target fields it compares.
    pub(crate) fn target_fields(&self, out: &mut Vec<String>) {
        self.visit(&mut |target, _| out.push(target.to_string()));
    }

    fn visit(&self, f: &mut impl FnMut(&str, &Operand)) {
        match self {
            Cond::And(v) | Cond::Or(v) => v.iter().for_each(|c| c.visit(f)),
            Cond::Cmp { target, operand, .. } => f(target, operand),
            Cond::In { target, operands, .. } => operands.iter().for_each(|o| f(target, o)),
        }
    }

    /// The query matching the related documents of `source`; `None` when it can match
    /// nothing (a referenced source field is absent or null).
    pub(crate) fn query(&self, source: &Document) -> Option<Document> {
        match self {
            Cond::And(v) => {
                let parts = v.iter().map(|c| c.query(source)).collect::<Option<Vec<_>>>()?;
                Some(if parts.len() == 1 {
                    parts.into_iter().next()?
                } else {
                    doc! {"$and": parts}
                })
            }
            Cond::Or(v) => {
                let parts: Vec<Document> = v.iter().filter_map(|c| c.query(source)).collect();
                (!parts.is_empty()).then(|| doc! {"$or": parts})
            }
            Cond::Cmp { target, op, operand } => {
                let value = operand.resolve(source)?;
                Some(doc! { target.as_str(): { op.key(): value } })
            }
            Cond::In { target, negate, operands } => {
                let values =
                    operands.iter().map(|o| o.resolve(source)).collect::<Option<Vec<_>>>()?;
                let key = if *negate { "$nin" } else { "$in" };
                Some(doc! { target.as_str(): { key: values } })
            }
        }
    }

    /// Whether `candidate` matches [`Cond::query`] of `source`, judged in memory.
    pub(crate) fn matches(&self, source: &Document, candidate: &Document) -> bool {
        match self {
            Cond::And(v) => v.iter().all(|c| c.matches(source, candidate)),
            Cond::Or(v) => v.iter().any(|c| c.matches(source, candidate)),
            Cond::Cmp { target, op, operand } => operand
                .resolve(source)
                .is_some_and(|value| field_matches(candidate, target, *op, &value)),
            Cond::In { target, negate, operands } => {
                let Some(values) =
                    operands.iter().map(|o| o.resolve(source)).collect::<Option<Vec<_>>>()
                else {
                    return false;
                };
                let any = values.iter().any(|v| field_matches(candidate, target, CompareOp::Eq, v));
                any != *negate
            }
        }
    }
}

/// `candidate.target <op> value` with MongoDB's reading: an array field matches when one of its
/// elements (or the whole array) does; `$ne` matches an absent field and means "no element
/// equals".
fn field_matches(candidate: &Document, target: &str, op: CompareOp, value: &Bson) -> bool {
    let Some(field) = get_path(candidate, target) else {
        return op == CompareOp::Ne;
    };
    if op == CompareOp::Ne {
        return !field_matches(candidate, target, CompareOp::Eq, value);
    }
    let one = |v: &Bson| compare(v, value).is_some_and(|ord| op.holds(ord));
    match field {
        Bson::Array(items) => items.iter().any(one) || one(field),
        _ => one(field),
    }
}

/// The value at a dotted path of `doc`.
pub(crate) fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        value = value.as_document()?.get(part)?;
    }
    Some(value)
}

/// MongoDB's comparison of two values of comparable types (numbers across their types,
/// strings bytewise, ...); `None` for values of different kinds.
pub(crate) fn compare(a: &Bson, b: &Bson) -> Option<Ordering> {
    match (a, b) {
        (Bson::String(x), Bson::String(y)) => Some(x.cmp(y)),
        (Bson::Boolean(x), Bson::Boolean(y)) => Some(x.cmp(y)),
        (Bson::DateTime(x), Bson::DateTime(y)) => Some(x.cmp(y)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => Some(x.bytes().cmp(&y.bytes())),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => Some(x.cmp(y)),
        _ => match (integer(a), integer(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => match (number(a), number(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => (a == b).then_some(Ordering::Equal),
            },
        },
    }
}

fn integer(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

#[allow(clippy::cast_precision_loss)]
fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Double(x) => Some(*x),
        other => integer(other).map(|n| n as f64),
    }
}

/// A hash key under which equal values (MongoDB equality: `1`, `1L` and `1.0` alike) meet.
pub(crate) fn value_key(v: &Bson) -> String {
    match v {
        Bson::String(s) => format!("s:{s}"),
        Bson::Double(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => format!("n:{x:.0}"),
        Bson::Double(x) => format!("n:{x}"),
        other => match integer(other) {
            Some(n) => format!("n:{n}"),
            None => format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(f: &str) -> Operand {
        Operand::Field(f.into())
    }

    #[test]
    fn literals_parse_and_field_names_stay_fields() {
        let cases: [(&str, Result<Option<Bson>, &str>); 12] = [
            ("customer_id", Ok(None)),
            ("__STATE__", Ok(None)),
            ("__internal__counter", Ok(None)),
            ("__string__[testID]", Ok(Some(Bson::String("testID".into())))),
            ("__string__[]", Ok(Some(Bson::String(String::new())))),
            ("__constant__[x]", Ok(Some(Bson::String("x".into())))),
            ("__integer__[-42]", Ok(Some(Bson::Int64(-42)))),
            ("__boolean__[false]", Ok(Some(Bson::Boolean(false)))),
            ("__integer__[4.2]", Err("\"4.2\" is not an integer")),
            ("__boolean__[yes]", Err("expected __boolean__[true] or [false]")),
            ("__string__testID", Err("expected __string__[value]")),
            ("__date__[2024]", Err("unknown literal type")),
        ];
        for (input, expected) in cases {
            match (parse_literal(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn query_per_source_and_absent_fields_match_nothing() {
        let cond = Cond::Or(vec![
            Cond::Cmp { target: "ID".into(), op: CompareOp::Eq, operand: field("id") },
            Cond::And(vec![
                Cond::Cmp { target: "kind".into(), op: CompareOp::Gte, operand: field("min") },
                Cond::In {
                    target: "tag".into(),
                    negate: false,
                    operands: vec![Operand::Literal("a".into()), field("tag")],
                },
            ]),
        ]);
        let q = cond.query(&doc! {"id": 7, "min": 2, "tag": "b"}).unwrap();
        let want = doc! {"$or": [
            {"ID": {"$eq": 7}},
            {"$and": [{"kind": {"$gte": 2}}, {"tag": {"$in": ["a", "b"]}}]},
        ]};
        assert_eq!(q, want);
        // `min` absent: the `$and` branch is dropped; `id` null too: nothing.
        assert_eq!(cond.query(&doc! {"id": 7}).unwrap(), doc! {"$or": [{"ID": {"$eq": 7}}]});
        assert_eq!(cond.query(&doc! {"id": Bson::Null}), None);
    }

    #[test]
    fn in_memory_match_follows_mongodb_equality_and_comparisons() {
        let eq = Cond::Cmp { target: "a.b".into(), op: CompareOp::Eq, operand: field("x") };
        let src = doc! {"x": 5_i64};
        assert!(eq.matches(&src, &doc! {"a": {"b": 5}}));
        assert!(eq.matches(&src, &doc! {"a": {"b": 5.0}}));
        assert!(!eq.matches(&src, &doc! {"a": {"b": "5"}}));
        assert!(!eq.matches(&doc! {}, &doc! {"a": {"b": 5}}));
        let tags = Cond::Cmp { target: "t".into(), op: CompareOp::Eq, operand: field("x") };
        assert!(tags.matches(&src, &doc! {"t": [1, 5]}));
        let ne = Cond::Cmp { target: "t".into(), op: CompareOp::Ne, operand: field("x") };
        assert!(ne.matches(&src, &doc! {}));
        assert!(!ne.matches(&src, &doc! {"t": [1, 5]}));
        let lt = Cond::Cmp { target: "t".into(), op: CompareOp::Lt, operand: field("x") };
        assert!(lt.matches(&src, &doc! {"t": 4.5}));
        assert!(!lt.matches(&src, &doc! {"t": "4"}));
        let nin = Cond::In { target: "t".into(), negate: true, operands: vec![field("x")] };
        assert!(nin.matches(&src, &doc! {"t": 4}) && !nin.matches(&src, &doc! {"t": 5}));
        assert_eq!(value_key(&Bson::Int32(5)), value_key(&Bson::Double(5.0)));
        assert_ne!(value_key(&Bson::Int32(5)), value_key(&Bson::String("5".into())));
    }
}
