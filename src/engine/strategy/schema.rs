//! Parsing and validation of `erSchema.json` and `projectionChangesSchema.json` (docs/outputs.md#strategies,
//! README.md) into an [`AutomaticStrategy`]. Every error is collected, each naming the file, the JSON
//! pointer of the bad value, what is wrong and what would be valid. The files are read as JSON,
//! then each entry of `config` is decoded on its own (serde, unknown keys refused), so that one
//! bad entry does not hide the errors of the others.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::condition::{CompareOp, Cond, LITERALS, Operand, parse_literal};
use super::{AutomaticStrategy, NamedCondition, ProjectionInfo, Route, Step};

/// The only schema version there is.
const VERSION: &str = "1.0.0";

/// Why an identifier may not be a custom function (docs/outputs.md#strategies step 3: LATER).
const IDENTIFIER_FUNCTIONS: &str = "custom identifier functions (__fromFile__) are not \
    supported; valid: {\"<single view field>\": \"<base projection field>\"}";

/// Fields every projection document has (docs/writes.md#metadata).
const METADATA: [&str; 10] = [
    "_id",
    "__STATE__",
    "createdAt",
    "updatedAt",
    "timestamp",
    "creatorId",
    "updaterId",
    "__internal__counter",
    "__internal__counterType",
    "__internal__kafkaInfo",
];

/// One thing wrong in a schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The file.
    pub file: PathBuf,
    /// JSON pointer of the bad value (`/config/sv_orders/paths/1/path/0`), empty for the file.
    pub pointer: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pointer.as_str() {
            "" => write!(f, "{}: {}", self.file.display(), self.message),
            p => write!(f, "{}: {p}: {}", self.file.display(), self.message),
        }
    }
}

/// Everything wrong in the two files, one error per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaErrors(pub Vec<SchemaError>);

impl fmt::Display for SchemaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Reads, validates and compiles both files against the `projections` the engine knows.
pub fn load(
    er: &Path,
    pc: &Path,
    projections: &[ProjectionInfo],
) -> Result<AutomaticStrategy, SchemaErrors> {
    let read = |file: &Path| {
        std::fs::read_to_string(file).map_err(|e| SchemaError {
            file: file.to_path_buf(),
            pointer: String::new(),
            message: format!("cannot be read: {e}"),
        })
    };
    match (read(er), read(pc)) {
        (Ok(er_text), Ok(pc_text)) => parse((er, &er_text), (pc, &pc_text), projections),
        (er, pc) => Err(SchemaErrors([er.err(), pc.err()].into_iter().flatten().collect())),
    }
}

/// [`load`] on texts already read, `(file, text)`.
pub(crate) fn parse(
    er: (&Path, &str),
    pc: (&Path, &str),
    projections: &[ProjectionInfo],
) -> Result<AutomaticStrategy, SchemaErrors> {
    let known: HashMap<&str, &ProjectionInfo> =
        projections.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut errors = Vec::new();
    let relations = Errors { file: er.0, list: &mut errors }.er(er.1, &known);
    let paths = Errors { file: pc.0, list: &mut errors }.pc(pc.1, &known, relations.as_ref());
    match relations {
        Some(relations) if errors.is_empty() => Ok(compile(relations, paths, &known)),
        _ => Err(SchemaErrors(errors)),
    }
}

/// `(from, to)` -> named conditions.
type Relations = BTreeMap<(String, String), Vec<NamedCondition>>;

/// A valid path: single view, projections, identifier.
type ValidPath = (String, Vec<String>, Vec<(String, String)>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: Value,
    config: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErEntry {
    outgoing: BTreeMap<String, RelationDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelationDoc {
    conditions: BTreeMap<String, ConditionDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionDoc {
    condition: Map<String, Value>,
    #[serde(rename = "oneToMany", default)]
    one_to_many: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SvEntry {
    paths: Vec<PathDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathDoc {
    path: Vec<String>,
    identifier: Value,
}

/// The errors of one file.
struct Errors<'a> {
    file: &'a Path,
    list: &'a mut Vec<SchemaError>,
}

/// `base` + `/segment`, escaped as RFC 6901 says.
fn at(base: &str, segment: impl fmt::Display) -> String {
    format!("{base}/{}", segment.to_string().replace('~', "~0").replace('/', "~1"))
}

/// Which fields a side of a relation may name (`None`: the projection is unknown, already
/// reported, so its fields are not checked).
#[derive(Clone, Copy)]
struct Fields<'a> {
    projection: Option<&'a ProjectionInfo>,
    role: &'a str,
}

impl Fields<'_> {
    /// `Err(what would be valid)` when `field` (its first segment) is not a field.
    fn check(&self, field: &str) -> Result<(), String> {
        let Some(p) = self.projection else { return Ok(()) };
        let top = field.split('.').next().unwrap_or(field);
        if METADATA.contains(&top) || p.fields.iter().any(|f| f == top) {
            return Ok(());
        }
        Err(format!(
            "unknown field {field:?} of {} ({}); valid: {} or a metadata field ({})",
            p.name,
            self.role,
            p.fields.join(", "),
            METADATA.join(", ")
        ))
    }
}

impl Errors<'_> {
    fn push(&mut self, pointer: &str, message: impl Into<String>) {
        self.list.push(SchemaError {
            file: self.file.to_path_buf(),
            pointer: pointer.to_string(),
            message: message.into(),
        });
    }

    /// The JSON of the file and its `config` entries, the version checked.
    fn file(&mut self, text: &str) -> Option<Map<String, Value>> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("invalid JSON at line {} column {}: {e}", e.line(), e.column());
                self.push("", msg);
                return None;
            }
        };
        let top: FileDoc = self.decode("", &value)?;
        if top.version != Value::String(VERSION.into()) {
            self.push(
                "/version",
                format!("unsupported version {}; valid: {VERSION:?}", top.version),
            );
        }
        Some(top.config)
    }

    /// Decodes `value` (at `pointer`) as `T`, reporting where it does not fit.
    fn decode<T: for<'de> Deserialize<'de>>(&mut self, pointer: &str, value: &Value) -> Option<T> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| {
                let mut p = pointer.to_string();
                for segment in e.path().iter() {
                    use serde_path_to_error::Segment;
                    match segment {
                        Segment::Seq { index } => p = at(&p, index),
                        Segment::Map { key } | Segment::Enum { variant: key } => p = at(&p, key),
                        Segment::Unknown => {}
                    }
                }
                self.push(&p, e.into_inner().to_string());
            })
            .ok()
    }

    fn projection<'p>(
        &mut self,
        pointer: &str,
        name: &str,
        known: &HashMap<&str, &'p ProjectionInfo>,
    ) -> Option<&'p ProjectionInfo> {
        let found = known.get(name).copied();
        if found.is_none() {
            let mut names: Vec<&str> = known.keys().copied().collect();
            names.sort_unstable();
            self.push(pointer, format!("unknown projection {name:?}; valid: {}", names.join(", ")));
        }
        found
    }

    /// `erSchema.json` -> its relations (`None` when the file is unusable). An entry that does
    /// not decode still declares the relations it names, so that paths are not reported twice.
    fn er(&mut self, text: &str, known: &HashMap<&str, &ProjectionInfo>) -> Option<Relations> {
        let mut relations = Relations::new();
        for (from, entry) in self.file(text)? {
            let here = at("/config", &from);
            let source = self.projection(&here, &from, known);
            let Some(entry) = self.decode::<ErEntry>(&here, &entry) else {
                let named = entry.get("outgoing").and_then(Value::as_object).into_iter().flatten();
                relations.extend(named.map(|(to, _)| ((from.clone(), to.clone()), Vec::new())));
                continue;
            };
            for (to, relation) in entry.outgoing {
                let here = at(&at(&here, "outgoing"), &to);
                let target = self.projection(&here, &to, known);
                let sides = (
                    Fields { projection: source, role: "source of the relation" },
                    Fields { projection: target, role: "target of the relation" },
                );
                let conditions = self.relation(&here, relation, sides);
                relations.insert((from.clone(), to), conditions);
            }
        }
        Some(relations)
    }

    fn relation(
        &mut self,
        pointer: &str,
        relation: RelationDoc,
        sides: (Fields, Fields),
    ) -> Vec<NamedCondition> {
        let pointer = at(pointer, "conditions");
        if relation.conditions.is_empty() {
            self.push(&pointer, "no condition; a relation needs at least one named condition");
        }
        let mut out = Vec::new();
        for (name, c) in relation.conditions {
            let here = at(&at(&pointer, &name), "condition");
            if let Some(cond) = self.condition(&here, &c.condition, sides) {
                out.push(NamedCondition { cond, one_to_many: c.one_to_many });
            }
        }
        out
    }

    /// An object of a condition: its entries all hold.
    fn condition(
        &mut self,
        pointer: &str,
        object: &Map<String, Value>,
        sides: (Fields, Fields),
    ) -> Option<Cond> {
        if object.is_empty() {
            let msg = "empty condition (it would match every document); \
                valid: {\"<target field>\": \"<source field>\"}";
            self.push(pointer, msg);
            return None;
        }
        let mut parts = Vec::new();
        let mut ok = true;
        for (key, value) in object {
            let here = at(pointer, key);
            match self.entry(&here, key, value, sides) {
                Some(c) => parts.push(c),
                None => ok = false,
            }
        }
        ok.then_some(Cond::And(parts))
    }

    fn entry(
        &mut self,
        pointer: &str,
        key: &str,
        value: &Value,
        sides: (Fields, Fields),
    ) -> Option<Cond> {
        if key == "$or" || key == "$and" {
            return self.logical(pointer, key, value, sides);
        }
        if key.starts_with('$') {
            let msg = format!(
                "unsupported operator {key:?} here; \
                valid: \"$or\", \"$and\" or a field of the target"
            );
            self.push(pointer, msg);
            return None;
        }
        if let Err(msg) = sides.1.check(key) {
            self.push(pointer, msg);
        }
        let Value::Object(ops) = value else {
            let operand = self.operand(pointer, value, sides.0)?;
            return Some(Cond::Cmp { target: key.to_string(), op: CompareOp::Eq, operand });
        };
        if ops.is_empty() {
            self.push(pointer, "empty operator object; valid: {\"$eq\": ...} and the like");
            return None;
        }
        let parts: Vec<Option<Cond>> = ops
            .iter()
            .map(|(op, v)| self.operator(&at(pointer, op), key, op, v, sides.0))
            .collect();
        parts.into_iter().collect::<Option<Vec<_>>>().map(Cond::And)
    }

    /// `{target: {op: value}}`.
    fn operator(
        &mut self,
        pointer: &str,
        target: &str,
        op: &str,
        value: &Value,
        source: Fields,
    ) -> Option<Cond> {
        let target = target.to_string();
        match (CompareOp::from_key(op), value) {
            (Some(op), _) => {
                let operand = self.operand(pointer, value, source)?;
                Some(Cond::Cmp { target, op, operand })
            }
            (None, Value::Array(items)) if op == "$in" || op == "$nin" => {
                let operands: Vec<Option<Operand>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.operand(&at(pointer, i), v, source))
                    .collect();
                let operands = operands.into_iter().collect::<Option<_>>()?;
                Some(Cond::In { target, negate: op == "$nin", operands })
            }
            _ => {
                let msg = format!(
                    "unsupported operator {op:?}; \
                    valid: $eq, $ne, $gt, $gte, $lt, $lte, or $in / $nin with an array"
                );
                self.push(pointer, msg);
                None
            }
        }
    }

    fn logical(
        &mut self,
        pointer: &str,
        key: &str,
        value: &Value,
        sides: (Fields, Fields),
    ) -> Option<Cond> {
        let items = match value {
            Value::Array(items) if !items.is_empty() => items,
            _ => {
                self.push(pointer, format!("{key} needs a non-empty array of conditions"));
                return None;
            }
        };
        let mut parts = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let here = at(pointer, i);
            match item {
                Value::Object(o) => parts.push(self.condition(&here, o, sides)),
                _ => {
                    self.push(&here, "expected a condition object");
                    parts.push(None);
                }
            }
        }
        let parts = parts.into_iter().collect::<Option<Vec<_>>>()?;
        Some(if key == "$or" { Cond::Or(parts) } else { Cond::And(parts) })
    }

    /// A source field or a literal.
    fn operand(&mut self, pointer: &str, value: &Value, source: Fields) -> Option<Operand> {
        let result = match value {
            Value::String(s) => match parse_literal(s) {
                Ok(Some(literal)) => Ok(Operand::Literal(literal)),
                Ok(None) => source.check(s).map(|()| Operand::Field(s.clone())),
                Err(msg) => Err(msg),
            },
            Value::Bool(b) => Ok(Operand::Literal((*b).into())),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Operand::Literal(i.into())),
                (None, Some(f)) => Ok(Operand::Literal(f.into())),
                _ => Err(format!("number {n} out of range")),
            },
            other => Err(format!(
                "expected a source field name or a literal ({LITERALS}), found {other}"
            )),
        };
        result.map_err(|msg| self.push(pointer, msg)).ok()
    }

    /// `projectionChangesSchema.json` -> its valid paths.
    fn pc(
        &mut self,
        text: &str,
        known: &HashMap<&str, &ProjectionInfo>,
        relations: Option<&Relations>,
    ) -> Vec<ValidPath> {
        let mut paths = Vec::new();
        for (sv, entry) in self.file(text).unwrap_or_default() {
            let here = at("/config", &sv);
            let Some(entry) = self.decode::<SvEntry>(&here, &entry) else { continue };
            for (k, doc) in entry.paths.into_iter().enumerate() {
                let here = at(&at(&here, "paths"), k);
                let before = self.list.len();
                let base = self.path(&here, &doc.path, known, relations);
                let identifier = self.identifier(&at(&here, "identifier"), &doc.identifier, base);
                if self.list.len() == before {
                    paths.push((sv.clone(), doc.path, identifier));
                }
            }
        }
        paths
    }

    /// Checks a path's projections and relations; returns its base projection.
    fn path<'p>(
        &mut self,
        pointer: &str,
        path: &[String],
        known: &HashMap<&str, &'p ProjectionInfo>,
        relations: Option<&Relations>,
    ) -> Option<&'p ProjectionInfo> {
        let pointer = at(pointer, "path");
        if path.is_empty() {
            let msg = "empty path; valid: the projections from a changed one to the base \
                projection, e.g. [\"pr_items\", \"pr_orders\"]";
            self.push(&pointer, msg);
            return None;
        }
        let mut base = None;
        for (j, name) in path.iter().enumerate() {
            let here = at(&pointer, j);
            base = self.projection(&here, name, known);
            if let Some(first) = path[..j].iter().position(|p| p == name) {
                self.push(
                    &here,
                    format!(
                        "{name:?} is visited twice (also at index {first}): a path must not cycle"
                    ),
                );
            }
            let previous = path[..j].last().filter(|p| known.contains_key(p.as_str()));
            if let (Some(from), Some(relations), Some(_)) = (previous, relations, base) {
                self.relation_exists(&here, from, name, relations);
            }
        }
        base
    }

    fn relation_exists(&mut self, pointer: &str, from: &str, to: &str, relations: &Relations) {
        if relations.contains_key(&(from.to_string(), to.to_string())) {
            return;
        }
        let declared: Vec<&str> =
            relations.keys().filter(|(f, _)| f == from).map(|(_, t)| t.as_str()).collect();
        self.push(
            pointer,
            format!(
                "no relation {from} -> {to} in the ER schema (config.{from}.outgoing.{to}); \
                relations must be declared in the direction the strategy walks, towards the \
                base projection; {from} has relations to: [{}]",
                declared.join(", ")
            ),
        );
    }

    /// `{svField: baseField}` in the file's order.
    fn identifier(
        &mut self,
        pointer: &str,
        value: &Value,
        base: Option<&ProjectionInfo>,
    ) -> Vec<(String, String)> {
        let object = match value {
            Value::Object(o) if !o.is_empty() => o,
            Value::String(s) if s.starts_with("__fromFile__") => {
                self.push(pointer, IDENTIFIER_FUNCTIONS);
                return Vec::new();
            }
            _ => {
                let msg = "expected a non-empty object \
                    {\"<single view field>\": \"<base projection field>\"}";
                self.push(pointer, msg);
                return Vec::new();
            }
        };
        let base = Fields { projection: base, role: "base projection of the path" };
        let mut out = Vec::new();
        for (key, v) in object {
            let here = at(pointer, key);
            match v.as_str() {
                Some(field) => match base.check(field) {
                    Ok(()) => out.push((key.clone(), field.to_string())),
                    Err(msg) => self.push(&here, msg),
                },
                None => self.push(
                    &here,
                    format!("expected a field name of the base projection, found {v}"),
                ),
            }
        }
        out
    }
}

/// Valid relations and paths -> steps, routes and the order the steps may run in.
fn compile(
    relations: Relations,
    paths: Vec<ValidPath>,
    known: &HashMap<&str, &ProjectionInfo>,
) -> AutomaticStrategy {
    let mut steps: Vec<Step> = Vec::new();
    let mut routes = Vec::new();
    for (single_view, projections, identifier) in paths {
        let mut route_steps = Vec::new();
        for pair in projections.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            let index = match steps.iter().position(|s| &s.from == from && &s.to == to) {
                Some(i) => i,
                None => {
                    let key = (from.clone(), to.clone());
                    steps.push(Step {
                        from: from.clone(),
                        to: to.clone(),
                        collection: known
                            .get(to.as_str())
                            .map(|p| p.collection.clone())
                            .unwrap_or_default(),
                        conditions: relations.get(&key).cloned().unwrap_or_default(),
                        fields: Vec::new(),
                    });
                    steps.len() - 1
                }
            };
            route_steps.push(index);
        }
        routes.push(Route { single_view, projections, steps: route_steps, identifier });
    }
    let reach = reach(steps.len(), &routes);
    for (i, step) in steps.iter_mut().enumerate() {
        step.fields = fields_of_target(i, step, &routes, &relations);
    }
    AutomaticStrategy { steps, routes, reach }
}

/// `reach[a][b]`: step `b` follows step `a` in some route, transitively.
fn reach(n: usize, routes: &[Route]) -> Vec<Vec<bool>> {
    let mut reach = vec![vec![false; n]; n];
    for route in routes {
        for pair in route.steps.windows(2) {
            reach[pair[0]][pair[1]] = true;
        }
    }
    for k in 0..n {
        for a in 0..n {
            if a != k && reach[a][k] {
                let via = reach[k].clone();
                reach[a].iter_mut().zip(via).for_each(|(ab, kb)| *ab |= kb);
            }
        }
    }
    reach
}

/// The top-level fields of `step.to` documents the walk needs after `step`: `_id`, the
/// step's own target fields (to attribute matches), the next step's source fields or the
/// identifier's base fields.
fn fields_of_target(
    index: usize,
    step: &Step,
    routes: &[Route],
    relations: &Relations,
) -> Vec<String> {
    let mut fields = vec!["_id".to_string()];
    for c in &step.conditions {
        c.cond.target_fields(&mut fields);
    }
    for route in routes {
        for (k, _) in route.steps.iter().enumerate().filter(|(_, s)| **s == index) {
            match route.projections.get(k + 2) {
                Some(next) => {
                    let key = (step.to.clone(), next.clone());
                    for c in relations.get(&key).into_iter().flatten() {
                        c.cond.source_fields(&mut fields);
                    }
                }
                None => fields.extend(route.identifier.iter().map(|(_, b)| b.clone())),
            }
        }
    }
    let mut top: Vec<String> =
        fields.iter().map(|f| f.split('.').next().unwrap_or(f).to_string()).collect();
    top.sort();
    top.dedup();
    top
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ER: &str = include_str!("../../../tests/fixtures/strategy/erSchema.json");
    const PC: &str = include_str!("../../../tests/fixtures/strategy/projectionChangesSchema.json");

    fn projections() -> Vec<ProjectionInfo> {
        let p = |name: &str, fields: &[&str]| ProjectionInfo {
            name: name.into(),
            collection: format!("c_{name}"),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        };
        vec![
            p("pr_customers", &["customer_id", "name"]),
            p("pr_orders", &["order_id", "customer_id", "status"]),
            p("pr_order_items", &["order_id", "line_no", "qty"]),
        ]
    }

    fn run(er: &str, pc: &str) -> Result<AutomaticStrategy, SchemaErrors> {
        parse((Path::new("er.json"), er), (Path::new("pc.json"), pc), &projections())
    }

    #[test]
    fn worked_example_compiles_to_shared_steps() {
        let s = run(ER, PC).unwrap();
        let steps: Vec<(&str, &str, &str)> = s
            .steps
            .iter()
            .map(|s| (s.from.as_str(), s.to.as_str(), s.collection.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("pr_order_items", "pr_orders", "c_pr_orders"),
                ("pr_orders", "pr_customers", "c_pr_customers"),
                ("pr_customers", "pr_orders", "c_pr_orders"),
            ]
        );
        let routes: Vec<(&str, &[usize])> =
            s.routes.iter().map(|r| (r.single_view.as_str(), r.steps.as_slice())).collect();
        assert_eq!(
            routes,
            [("sv_customers", &[0, 1][..]), ("sv_orders", &[0]), ("sv_orders", &[2])]
        );
        assert_eq!(s.reach[0], [false, true, false]);
        assert_eq!(s.reach[1], [false, false, false]);
        assert_eq!(s.steps[0].fields, ["_id", "customer_id", "order_id"]);
        assert_eq!(s.steps[1].fields, ["_id", "customer_id"]);
        assert_eq!(s.fields_read("pr_orders"), ["customer_id", "order_id"]);
        assert_eq!(s.fields_read("pr_order_items"), ["order_id"]);
        assert_eq!(s.fields_read("pr_customers"), ["customer_id"]);
        assert!(s.covers("pr_order_items") && !s.covers("pr_other"));
    }

    #[test]
    fn empty_configs_are_valid_and_cover_nothing() {
        let empty = r#"{"version":"1.0.0","config":{}}"#;
        let s = run(empty, empty).unwrap();
        assert!(s.routes.is_empty() && !s.covers("pr_orders"));
        assert!(s.fields_read("pr_orders").is_empty());
    }

    /// `(file, pointer to replace in the fixture, new value, pointer of the error, message part)`.
    type Case = (&'static str, &'static str, Value, &'static str, &'static str);

    fn cases() -> Vec<Case> {
        const REL: &str = "/config/pr_orders/outgoing/pr_customers/conditions/order_to_customer";
        const COND: &str =
            "/config/pr_orders/outgoing/pr_customers/conditions/order_to_customer/condition";
        vec![
            (
                "pc",
                "/version",
                json!("2.0.0"),
                "/version",
                r#"unsupported version "2.0.0"; valid: "1.0.0""#,
            ),
            (
                "er",
                "/config/pr_nope",
                json!({"outgoing": {}}),
                "/config/pr_nope",
                r#"unknown projection "pr_nope"; valid: pr_customers, pr_order_items, pr_orders"#,
            ),
            (
                "er",
                "/config/pr_orders/outgoing/pr_x",
                json!({"conditions": {"c": {"condition": {"a": "order_id"}}}}),
                "/config/pr_orders/outgoing/pr_x",
                r#"unknown projection "pr_x""#,
            ),
            (
                "er",
                COND,
                json!({"customer_id": "cust"}),
                "/customer_id",
                r#"unknown field "cust" of pr_orders (source of the relation); valid: order_id, customer_id, status or a metadata field"#,
            ),
            (
                "er",
                COND,
                json!({"cid": "customer_id"}),
                "/cid",
                r#"unknown field "cid" of pr_customers (target of the relation)"#,
            ),
            (
                "er",
                COND,
                json!({"customer_id": "__integer__[C-7]"}),
                "/customer_id",
                r#"malformed literal "__integer__[C-7]": "C-7" is not an integer"#,
            ),
            (
                "er",
                COND,
                json!({"$or": [{"customer_id": "customer_id"}, {"name": {"$in": ["__string__[a]", "nope"]}}]}),
                "/$or/1/name/$in/1",
                r#"unknown field "nope" of pr_orders"#,
            ),
            (
                "er",
                COND,
                json!({"customer_id": {"$regex": "customer_id"}}),
                "/customer_id/$regex",
                r#"unsupported operator "$regex"; valid: $eq"#,
            ),
            ("er", COND, json!({}), "", "empty condition"),
            (
                "er",
                REL,
                json!({"condition": {"customer_id": "customer_id"}, "oneTomany": true}),
                "/oneTomany",
                "unknown field `oneTomany`, expected `condition` or `oneToMany`",
            ),
            (
                "pc",
                "/config/sv_orders/paths/0/identifier/orderId",
                json!("order_no"),
                "/config/sv_orders/paths/0/identifier/orderId",
                r#"unknown field "order_no" of pr_orders (base projection of the path)"#,
            ),
            (
                "pc",
                "/config/sv_orders/paths/1/identifier",
                json!("__fromFile__[ids]"),
                "/config/sv_orders/paths/1/identifier",
                "(__fromFile__) are not supported",
            ),
            (
                "pc",
                "/config/sv_orders/paths/1/path/0",
                json!("pr_nope"),
                "/config/sv_orders/paths/1/path/0",
                r#"unknown projection "pr_nope""#,
            ),
            (
                "pc",
                "/config/sv_orders/paths/1/path",
                json!([]),
                "/config/sv_orders/paths/1/path",
                "empty path",
            ),
            (
                "pc",
                "/config/sv_orders/paths/1/path",
                json!(["pr_customers", "pr_order_items"]),
                "/config/sv_orders/paths/1/path/1",
                "no relation pr_customers -> pr_order_items in the ER schema (config.pr_customers.outgoing.pr_order_items); relations must be declared in the direction the strategy walks, towards the base projection; pr_customers has relations to: [pr_orders]",
            ),
            (
                "pc",
                "/config/sv_orders/paths/1/path",
                json!(["pr_orders", "pr_customers", "pr_orders"]),
                "/config/sv_orders/paths/1/path/2",
                r#""pr_orders" is visited twice (also at index 0): a path must not cycle"#,
            ),
        ]
    }

    #[test]
    fn each_error_names_file_pointer_and_what_is_valid() {
        for (file, target, value, pointer, message) in cases() {
            let mut docs =
                [serde_json::from_str::<Value>(ER).unwrap(), serde_json::from_str(PC).unwrap()];
            let doc = &mut docs[usize::from(file == "pc")];
            let (parent, key) = target.rsplit_once('/').unwrap();
            match doc.pointer_mut(parent).unwrap() {
                Value::Object(o) => drop(o.insert(key.into(), value)),
                other => *other.pointer_mut(&format!("/{key}")).unwrap() = value,
            }
            let errors = run(&docs[0].to_string(), &docs[1].to_string()).unwrap_err().0;
            let pointer = if pointer.starts_with("/config") || pointer == "/version" {
                pointer.to_string()
            } else {
                format!("{target}{pointer}")
            };
            assert_eq!(errors.len(), 1, "{target}: {errors:?}");
            let e = &errors[0];
            assert_eq!(
                (e.file.to_str().unwrap(), e.pointer.as_str()),
                (&*format!("{file}.json"), &*pointer)
            );
            assert!(e.message.contains(message), "{target}: {e}");
        }
    }

    #[test]
    fn bad_json_has_line_and_column_and_every_error_is_reported() {
        let errors = run("{\n  \"version\": \"1.0.0\",\n  \"config\": {", PC).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.to_string().starts_with("er.json: invalid JSON at line 3 column"),
            "{errors}"
        );

        let er = ER.replace(
            r#""condition": { "customer_id": "customer_id" } }"#,
            r#""condition": { "customer_id": "cust" } }"#,
        );
        let pc = PC
            .replace(r#""customerId": "customer_id""#, r#""customerId": "cid""#)
            .replace("1.0.0", "1");
        let errors = run(&er, &pc).unwrap_err().to_string();
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 3, "{errors}");
        assert!(lines[0].starts_with("er.json: /config/pr_orders/outgoing/pr_customers/conditions/order_to_customer/condition/customer_id: unknown field \"cust\""), "{errors}");
        assert!(lines[1].starts_with("pc.json: /version: unsupported version"), "{errors}");
        assert!(
            lines[2].starts_with(
                "pc.json: /config/sv_customers/paths/0/identifier/customerId: unknown field \"cid\""
            ),
            "{errors}"
        );
    }

    #[test]
    fn load_reads_files_and_names_the_unreadable_one() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/strategy");
        let (er, pc) = (dir.join("erSchema.json"), dir.join("projectionChangesSchema.json"));
        assert!(load(&er, &pc, &projections()).is_ok());
        let missing = dir.join("missing.json");
        let errors = load(&er, &missing, &projections()).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].file, missing);
        assert!(errors.0[0].message.starts_with("cannot be read:"), "{errors}");
    }
}
