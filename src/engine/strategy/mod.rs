//! The automatic strategy (docs/outputs.md#strategies): from a changed projection document to the identifiers
//! of the single views to rebuild, by walking the relations of `erSchema.json` along the paths
//! of `projectionChangesSchema.json`. [`load`] parses and validates both files against the
//! projections the engine knows; [`AutomaticStrategy::identifiers`] runs the walk for a whole
//! batch of messages with one `find` per path step.

mod automatic;
mod condition;
mod run;
mod schema;

pub use automatic::{Start, StrategyError, SvIdentifier};
pub use run::{RunError, StrategyRunner, StrategySet};
pub(crate) use schema::parse;
pub use schema::{SchemaError, SchemaErrors, load};

use condition::Cond;

use crate::config::{EngineConfig, ReadProjection};

/// A projection as the strategy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionInfo {
    /// The projection's name (as written in both schema files).
    pub name: String,
    /// Its MongoDB collection.
    pub collection: String,
    /// Its target field names (metadata fields are always allowed besides).
    pub fields: Vec<String>,
}

/// The automatic strategy `config` names (`outputs.strategies.automatic`), loaded and checked
/// against its projections; `None` when it names none.
pub fn load_automatic(config: &EngineConfig) -> Result<Option<AutomaticStrategy>, SchemaErrors> {
    let Some(files) = &config.outputs.strategies.automatic else { return Ok(None) };
    let er = std::path::Path::new(&files.er_schema);
    let pc = std::path::Path::new(&files.projection_changes_schema);
    load(er, pc, &projection_infos(config)).map(Some)
}

/// The projections the automatic strategy knows: the ones written, then the ones only read.
pub fn projection_infos(config: &EngineConfig) -> Vec<ProjectionInfo> {
    let read =
        config.outputs.strategies.automatic.iter().flat_map(|a| a.read_projections.iter().cloned());
    config
        .projections
        .iter()
        .map(ReadProjection::of)
        .chain(read)
        .map(|p| ProjectionInfo { name: p.name, collection: p.collection, fields: p.fields })
        .collect()
}

/// Both schema files, validated and compiled into the steps the walk takes.
#[derive(Debug, Clone)]
pub struct AutomaticStrategy {
    /// The distinct relations the paths walk, `(from, to)`.
    steps: Vec<Step>,
    /// One per path of every single view.
    routes: Vec<Route>,
    /// `reach[a][b]`: some path walks step `b` (transitively) after step `a`.
    reach: Vec<Vec<bool>>,
}

/// One relation `from -> to` of the ER schema, as walked.
#[derive(Debug, Clone)]
struct Step {
    from: String,
    to: String,
    /// The collection of `to`.
    collection: String,
    /// Alternatives: their matches are united.
    conditions: Vec<NamedCondition>,
    /// The top-level fields of `to` documents the walk needs (a `find` projection).
    fields: Vec<String>,
}

/// One named condition of a relation (the name only serves the file's readers).
#[derive(Debug, Clone)]
struct NamedCondition {
    cond: Cond,
    one_to_many: bool,
}

/// One path of a single view: projections from a changed one to the base.
#[derive(Debug, Clone)]
struct Route {
    single_view: String,
    projections: Vec<String>,
    /// `steps[k]` walks `projections[k] -> projections[k + 1]`.
    steps: Vec<usize>,
    /// `(single-view field, base projection field)`, in the file's order.
    identifier: Vec<(String, String)>,
}

impl AutomaticStrategy {
    /// Whether a change of `projection` can yield identifiers: some path contains it.
    pub fn covers(&self, projection: &str) -> bool {
        self.routes.iter().any(|r| r.projections.iter().any(|p| p == projection))
    }

    /// The fields of a `projection` document the walk reads when it starts from one (sorted):
    /// a change that leaves them all equal cannot change the result.
    pub fn fields_read(&self, projection: &str) -> Vec<String> {
        let mut fields = Vec::new();
        for route in &self.routes {
            let Some(i) = route.projections.iter().position(|p| p == projection) else {
                continue;
            };
            match route.steps.get(i) {
                Some(&step) => {
                    for c in &self.steps[step].conditions {
                        c.cond.source_fields(&mut fields);
                    }
                }
                None => fields.extend(route.identifier.iter().map(|(_, base)| base.clone())),
            }
        }
        fields.sort();
        fields.dedup();
        fields
    }
}
