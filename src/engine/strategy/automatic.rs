//! The walk of the automatic strategy (docs/outputs.md#strategies steps 1-3) for a whole batch of messages.
//! Every start document becomes a cursor on each path that contains its projection; cursors
//! waiting for the same relation are served by one `find` for all their documents (`$in` for a
//! plain field equality, else an `$or` of per-document queries, plus `__STATE__: "PUBLIC"`),
//! whose results are attributed back to each source document in memory. A relation runs only
//! once no other pending relation can still feed it, so one call issues at most one `find` per
//! distinct relation (per 1000 source documents) unless the paths make those relations cycle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use futures::future::try_join_all;
use mongodb::Database;

use mongodb::bson::{Bson, Document, doc};

use super::condition::{compare, get_path, value_key};
use super::{AutomaticStrategy, NamedCondition, Step};
use crate::engine::encode;

/// Source documents per `find` at most.
const CHUNK: usize = 1000;

/// Where a walk starts: the documents of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The changed projection.
    pub projection: String,
    /// The stored document after the write (for a delete, before it), plus the one before the
    /// write when it differs in a field the strategy reads.
    pub documents: Vec<Arc<Document>>,
}

/// One single view to rebuild.
#[derive(Debug, Clone, PartialEq)]
pub struct SvIdentifier {
    /// The single view (its `type` in projection changes).
    pub single_view: String,
    /// Single-view field -> value, in the path's mapping order.
    pub identifier: Document,
}

/// A failed look-up (transient: retry the batch).
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// The `find` of one relation's related documents failed.
    #[error("find on {collection} (relation {from} -> {to}) failed: {source}")]
    Find {
        /// The collection of the related projection.
        collection: String,
        /// The projection walked from.
        from: String,
        /// The projection walked to.
        to: String,
        /// The driver's error.
        source: mongodb::error::Error,
    },
}

impl AutomaticStrategy {
    /// The identifiers of every start, one `Vec` per start (deduplicated per single view).
    pub async fn identifiers(
        &self,
        db: &Database,
        starts: &[Start],
    ) -> Result<Vec<Vec<SvIdentifier>>, StrategyError> {
        let mut walk = Walk::new(self, starts.len());
        for (i, start) in starts.iter().enumerate() {
            for document in &start.documents {
                walk.start(i, &start.projection, Arc::clone(document));
            }
        }
        while !walk.pending.is_empty() {
            let batches: Vec<(usize, Vec<Cursor>)> = walk
                .ready()
                .into_iter()
                .map(|s| (s, walk.pending.remove(&s).unwrap_or_default()))
                .collect();
            let sources: Vec<Vec<usize>> = batches.iter().map(|(_, c)| distinct_docs(c)).collect();
            let finds = batches.iter().zip(&sources).map(|((step, _), docs)| {
                let docs: Vec<&Document> = docs.iter().map(|&d| &*walk.docs[d]).collect();
                related(db, &self.steps[*step], docs)
            });
            let found = try_join_all(finds).await?;
            for (((step, cursors), docs), (fetched, matches)) in
                batches.into_iter().zip(sources).zip(found)
            {
                walk.follow(step, cursors, &docs, fetched, &matches);
            }
        }
        Ok(walk.found)
    }
}

/// One document at one position of one route, on behalf of one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cursor {
    start: usize,
    route: usize,
    pos: usize,
    /// Index into `Walk::docs`.
    doc: usize,
}

/// The state of one `identifiers` call.
struct Walk<'a> {
    strategy: &'a AutomaticStrategy,
    /// Start documents, then fetched ones (once each).
    docs: Vec<Arc<Document>>,
    /// `(projection, _id)` of fetched documents -> index in `docs`.
    fetched: HashMap<(String, String), usize>,
    seen: HashSet<Cursor>,
    /// Step -> cursors waiting for it.
    pending: BTreeMap<usize, Vec<Cursor>>,
    found: Vec<Vec<SvIdentifier>>,
    /// Per start: [`identifier_key`] of the identifiers found.
    found_keys: Vec<HashSet<Vec<u8>>>,
}

impl<'a> Walk<'a> {
    fn new(strategy: &'a AutomaticStrategy, starts: usize) -> Self {
        Walk {
            strategy,
            docs: Vec::new(),
            fetched: HashMap::new(),
            seen: HashSet::new(),
            pending: BTreeMap::new(),
            found: vec![Vec::new(); starts],
            found_keys: vec![HashSet::new(); starts],
        }
    }

    /// Puts `document` on every route containing `projection`.
    fn start(&mut self, start: usize, projection: &str, document: Arc<Document>) {
        self.docs.push(document);
        let doc = self.docs.len() - 1;
        for (route, r) in self.strategy.routes.iter().enumerate() {
            if let Some(pos) = r.projections.iter().position(|p| p == projection) {
                self.advance(Cursor { start, route, pos, doc });
            }
        }
    }

    /// A cursor at the base yields its identifier; any other waits for its next step.
    fn advance(&mut self, cursor: Cursor) {
        if !self.seen.insert(cursor) {
            return;
        }
        let route = &self.strategy.routes[cursor.route];
        match route.steps.get(cursor.pos) {
            Some(&step) => self.pending.entry(step).or_default().push(cursor),
            None => self.emit(cursor),
        }
    }

    fn emit(&mut self, cursor: Cursor) {
        let route = &self.strategy.routes[cursor.route];
        let base = &self.docs[cursor.doc];
        let mut identifier = Document::new();
        for (key, field) in &route.identifier {
            match get_path(base, field) {
                Some(v) if *v != Bson::Null => identifier.insert(key.clone(), v.clone()),
                _ => {
                    let sv = &route.single_view;
                    tracing::warn!(single_view = %sv, %field, "identifier dropped: no value");
                    return;
                }
            };
        }
        if self.found_keys[cursor.start].insert(identifier_key(&route.single_view, &identifier)) {
            let single_view = route.single_view.clone();
            self.found[cursor.start].push(SvIdentifier { single_view, identifier });
        }
    }

    /// Pending steps no other pending step can still feed; the first pending one if they all
    /// can (the paths cycle).
    fn ready(&self) -> Vec<usize> {
        let reach = &self.strategy.reach;
        let pending: Vec<usize> = self.pending.keys().copied().collect();
        let ready: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|&s| !pending.iter().any(|&t| t != s && reach[t][s]))
            .collect();
        if ready.is_empty() { pending.into_iter().take(1).collect() } else { ready }
    }

    /// Moves the cursors of `step` to the documents their sources matched.
    fn follow(
        &mut self,
        step: usize,
        cursors: Vec<Cursor>,
        sources: &[usize],
        fetched: Vec<Document>,
        matches: &[Vec<usize>],
    ) {
        let to = &self.strategy.steps[step].to;
        let ids: Vec<usize> = fetched.into_iter().map(|d| self.intern(to, d)).collect();
        let position: HashMap<usize, usize> =
            sources.iter().enumerate().map(|(i, &d)| (d, i)).collect();
        for cursor in cursors {
            let Some(&source) = position.get(&cursor.doc) else { continue };
            for &m in &matches[source] {
                self.advance(Cursor { pos: cursor.pos + 1, doc: ids[m], ..cursor });
            }
        }
    }

    fn intern(&mut self, projection: &str, document: Document) -> usize {
        let key = document.get("_id").map(|id| (projection.to_string(), value_key(id)));
        if let Some(&i) = key.as_ref().and_then(|k| self.fetched.get(k)) {
            return i;
        }
        self.docs.push(Arc::new(document));
        let index = self.docs.len() - 1;
        if let Some(key) = key {
            self.fetched.insert(key, index);
        }
        index
    }
}

/// A single view and identifier as bytes, equal only for the same single view and the same
/// identifier (fields, order and BSON types): the name, a NUL, the identifier's BSON (its
/// extended JSON should it not encode, which needs a NUL in a key).
fn identifier_key(single_view: &str, identifier: &Document) -> Vec<u8> {
    let mut key = Vec::with_capacity(single_view.len() + 64);
    key.extend_from_slice(single_view.as_bytes());
    key.push(0);
    let at = key.len();
    if encode::document(identifier, &mut key).is_err() {
        key.truncate(at);
        key.extend_from_slice(identifier.to_string().as_bytes());
    }
    key
}

/// The distinct documents of `cursors`, in order.
fn distinct_docs(cursors: &[Cursor]) -> Vec<usize> {
    let mut seen = HashSet::new();
    cursors.iter().map(|c| c.doc).filter(|d| seen.insert(*d)).collect()
}

/// The documents related to `sources` through `step`, and for each source the indexes of its
/// matches among them.
async fn related(
    db: &Database,
    step: &Step,
    sources: Vec<&Document>,
) -> Result<(Vec<Document>, Vec<Vec<usize>>), StrategyError> {
    let mut fetched = Vec::new();
    let mut matches = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(CHUNK) {
        let mut docs = match filter(step, chunk) {
            Some(filter) => find(db, step, filter).await?,
            None => Vec::new(),
        };
        docs.sort_by(|a, b| {
            let (a, b) = (a.get("_id").unwrap_or(&Bson::Null), b.get("_id").unwrap_or(&Bson::Null));
            compare(a, b).unwrap_or_else(|| value_key(a).cmp(&value_key(b)))
        });
        let offset = fetched.len();
        for list in attribute(step, chunk, &docs) {
            matches.push(list.into_iter().map(|i| i + offset).collect());
        }
        fetched.extend(docs);
    }
    Ok((fetched, matches))
}

async fn find(
    db: &Database,
    step: &Step,
    filter: Document,
) -> Result<Vec<Document>, StrategyError> {
    let error = |source| StrategyError::Find {
        collection: step.collection.clone(),
        from: step.from.clone(),
        to: step.to.clone(),
        source,
    };
    let projection: Document = step.fields.iter().map(|f| (f.clone(), Bson::Int32(1))).collect();
    let collection = db.collection::<Document>(&step.collection);
    let cursor = collection.find(filter).projection(projection).await.map_err(error)?;
    cursor.try_collect().await.map_err(error)
}

/// One query for the related documents of all `sources`; `None` when none can have any.
fn filter(step: &Step, sources: &[&Document]) -> Option<Document> {
    let mut alternatives = Vec::new();
    for c in &step.conditions {
        let mut keys = HashSet::new();
        if let Some((target, field)) = c.cond.as_field_equality() {
            let values: Vec<Bson> = sources
                .iter()
                .filter_map(|s| get_path(s, field).filter(|v| **v != Bson::Null))
                .filter(|v| keys.insert(value_key(v)))
                .cloned()
                .collect();
            if !values.is_empty() {
                alternatives.push(doc! { target: { "$in": values } });
            }
        } else {
            let queries = sources.iter().filter_map(|s| c.cond.query(s));
            alternatives.extend(queries.filter(|q| keys.insert(q.to_string())));
        }
    }
    let matching = match alternatives.len() {
        0 => return None,
        1 => alternatives.pop()?,
        _ => doc! { "$or": alternatives },
    };
    Some(doc! { "$and": [ { "__STATE__": "PUBLIC" }, matching ] })
}

/// For each source, the indexes of `results` its conditions match (ascending; only the first
/// one for a condition that is not `oneToMany`), their union over the conditions.
fn attribute(step: &Step, sources: &[&Document], results: &[Document]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); sources.len()];
    for c in &step.conditions {
        for (source, list) in condition_matches(c, sources, results).into_iter().enumerate() {
            let take = if c.one_to_many { list.len() } else { 1 };
            for r in list.into_iter().take(take) {
                if !out[source].contains(&r) {
                    out[source].push(r);
                }
            }
        }
    }
    for list in &mut out {
        list.sort_unstable();
    }
    out
}

/// For each source, the ascending indexes of the `results` one condition matches.
fn condition_matches(
    c: &NamedCondition,
    sources: &[&Document],
    results: &[Document],
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); sources.len()];
    let Some((target, field)) = c.cond.as_field_equality() else {
        for (r, result) in results.iter().enumerate() {
            for (s, source) in sources.iter().enumerate() {
                if c.cond.matches(source, result) {
                    out[s].push(r);
                }
            }
        }
        return out;
    };
    let mut by_value: HashMap<String, Vec<usize>> = HashMap::new();
    for (s, source) in sources.iter().enumerate() {
        if let Some(v) = get_path(source, field).filter(|v| **v != Bson::Null) {
            by_value.entry(value_key(v)).or_default().push(s);
        }
    }
    for (r, result) in results.iter().enumerate() {
        let keys: Vec<String> = match get_path(result, target) {
            Some(Bson::Array(items)) => items
                .iter()
                .map(value_key)
                .chain([value_key(&Bson::Array(items.clone()))])
                .collect(),
            Some(v) => vec![value_key(v)],
            None => Vec::new(),
        };
        for s in keys.iter().filter_map(|k| by_value.get(k)).flatten() {
            if out[*s].last() != Some(&r) {
                out[*s].push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::strategy::ProjectionInfo;
    use crate::engine::strategy::schema::parse;

    const ER: &str = include_str!("../../../tests/fixtures/strategy/erSchema.json");
    const PC: &str = include_str!("../../../tests/fixtures/strategy/projectionChangesSchema.json");

    fn strategy(er: &str, pc: &str) -> AutomaticStrategy {
        let p = |name: &str, fields: &[&str]| ProjectionInfo {
            name: name.into(),
            collection: name.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        };
        let projections = [
            p("pr_customers", &["customer_id", "name"]),
            p("pr_orders", &["order_id", "customer_id", "customer_name"]),
            p("pr_order_items", &["order_id", "line_no"]),
        ];
        parse((Path::new("er"), er), (Path::new("pc"), pc), &projections).unwrap()
    }

    #[test]
    fn plain_equalities_become_one_in_without_absent_values() {
        let s = strategy(ER, PC);
        let items = &s.steps[0];
        let sources = [
            doc! {"order_id": "O-1", "line_no": 1},
            doc! {"order_id": "O-1", "line_no": 2},
            doc! {"order_id": "O-4"},
            doc! {"line_no": 3},
            doc! {"order_id": Bson::Null},
        ];
        let refs: Vec<&Document> = sources.iter().collect();
        let want = doc! {"$and": [{"__STATE__": "PUBLIC"}, {"order_id": {"$in": ["O-1", "O-4"]}}]};
        assert_eq!(filter(items, &refs), Some(want));
        assert_eq!(filter(items, &refs[3..]), None);

        let results = [doc! {"_id": 1, "order_id": "O-4"}, doc! {"_id": 2, "order_id": "O-1"}];
        assert_eq!(attribute(items, &refs, &results), [vec![1], vec![1], vec![0], vec![], vec![]]);
    }

    #[test]
    fn several_conditions_are_united_and_one_to_one_keeps_the_first_match() {
        let er = r#"{"version": "1.0.0", "config": {"pr_orders": {"outgoing": {"pr_customers": {"conditions": {
            "by_id": {"condition": {"customer_id": "customer_id"}},
            "by_name": {"condition": {"$or": [{"name": "customer_name"}, {"name": "__string__[house]"}]}, "oneToMany": true}
        }}}}}}"#;
        let pc = r#"{"version": "1.0.0", "config": {"sv": {"paths": [
            {"path": ["pr_orders", "pr_customers"], "identifier": {"id": "customer_id"}}]}}}"#;
        let s = strategy(er, pc);
        let step = &s.steps[0];
        let sources = [
            doc! {"customer_id": "C-1", "customer_name": "Ada"},
            doc! {"customer_id": "C-2"},
            doc! {},
        ];
        let refs: Vec<&Document> = sources.iter().collect();
        let house = doc! {"$or": [{"name": {"$eq": "house"}}]};
        let want = doc! {"$and": [{"__STATE__": "PUBLIC"}, {"$or": [
            {"customer_id": {"$in": ["C-1", "C-2"]}},
            {"$or": [{"name": {"$eq": "Ada"}}, {"name": {"$eq": "house"}}]},
            house,
        ]}]};
        assert_eq!(filter(step, &refs), Some(want));

        let results = [
            doc! {"_id": 1, "customer_id": "C-1", "name": "Ada"},
            doc! {"_id": 2, "customer_id": "C-1", "name": "Bob"},
            doc! {"_id": 3, "customer_id": "C-3", "name": "house"},
            doc! {"_id": 4, "customer_id": "C-2", "name": "Ada"},
        ];
        assert_eq!(attribute(step, &refs, &results), [vec![0, 2, 3], vec![2, 3], vec![2]]);
        assert_eq!(step.fields, ["_id", "customer_id", "name"]);
    }

    #[test]
    fn a_relation_waits_while_another_pending_one_can_feed_it() {
        let s = strategy(ER, PC);
        let mut walk = Walk::new(&s, 1);
        let cursor = Cursor { start: 0, route: 0, pos: 0, doc: 0 };
        walk.pending.extend([(0, vec![cursor]), (1, vec![cursor]), (2, vec![cursor])]);
        assert_eq!(walk.ready(), [0, 2]);
        walk.pending.remove(&0);
        assert_eq!(walk.ready(), [1, 2]);
    }

    #[test]
    fn identifier_keys_tell_single_views_fields_order_and_types_apart() {
        let key = |sv: &str, id: Document| identifier_key(sv, &id);
        let c7 = doc! {"customerId": "C-7"};
        assert_eq!(key("sv", c7.clone()), key("sv", c7.clone()));
        assert_ne!(key("sv", c7.clone()), key("sv_other", c7.clone()));
        assert_ne!(
            key("sv", doc! {"a": 1_i32, "b": 2_i32}),
            key("sv", doc! {"b": 2_i32, "a": 1_i32})
        );
        assert_ne!(key("sv", doc! {"a": 1_i32}), key("sv", doc! {"a": 1_i64}));
        assert_ne!(key("sv", doc! {"a": 1_i32}), key("sv", doc! {"a": "1"}));
        // A NUL in a key does not encode: the extended JSON tells it apart all the same.
        let nul = doc! {"a\u{0}b": 1_i32};
        assert_eq!(key("sv", nul.clone()), key("sv", nul.clone()));
        assert_ne!(key("sv", nul), key("sv", doc! {"a\u{0}c": 1_i32}));
    }

    #[test]
    fn identifiers_follow_the_mapping_order_and_drop_missing_values() {
        let pc = r#"{"version": "1.0.0", "config": {"sv": {"paths": [
            {"path": ["pr_orders"], "identifier": {"b": "order_id", "a": "customer_id"}}]}}}"#;
        let s = strategy(ER, pc);
        let mut walk = Walk::new(&s, 2);
        walk.start(0, "pr_orders", Arc::new(doc! {"customer_id": "C-1", "order_id": "O-1"}));
        walk.start(
            0,
            "pr_orders",
            Arc::new(doc! {"order_id": "O-1", "customer_id": "C-1", "x": 1}),
        );
        walk.start(1, "pr_orders", Arc::new(doc! {"order_id": "O-2", "customer_id": Bson::Null}));
        let ids: Vec<Vec<String>> = walk
            .found
            .iter()
            .map(|v| v.iter().map(|i| format!("{} {}", i.single_view, i.identifier)).collect())
            .collect();
        assert_eq!(ids, [vec![r#"sv { "b": "O-1", "a": "C-1" }"#.to_string()], vec![]]);
        assert!(walk.pending.is_empty());
    }
}
