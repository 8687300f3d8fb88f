//! The users' JavaScript functions an engine config names, loaded by role (SPEC §3.5 custom
//! casts, §4.4 custom strategies) into sandboxed hosts, and the file checks `rtu check` runs:
//! every function file loads (syntax, export) and the automatic strategy's schemas are valid.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{EngineConfig, function_name};
use crate::engine::announce;
use crate::engine::cast::Cast;
use crate::engine::script::{FunctionKind, Limits, ScriptError, ScriptHost};

/// The JavaScript casts the fields name (those that are not built in), `None` when none.
pub fn load_casts(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    let names = config
        .projections
        .iter()
        .flat_map(|p| &p.fields)
        .filter(|f| f.cast.parse::<Cast>().is_err())
        .map(|f| f.cast.as_str());
    load(config, names, FunctionKind::Cast, config.functions.time_limit_ms)
}

/// The JavaScript adapters the config names (`adapter.function`), `None` when none.
pub fn load_adapters(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    let adapters = std::iter::once(&config.adapter)
        .chain(config.projections.iter().filter_map(|p| p.adapter.as_ref()));
    let names = adapters.filter_map(|a| a.function.as_deref());
    load(config, names, FunctionKind::Adapter, config.functions.time_limit_ms)
}

/// The JavaScript strategies of `outputs.strategies.custom` (limited to `maxExecTimeMs` a
/// call), `None` when none.
pub fn load_strategies(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    let strategies = &config.outputs.strategies;
    let names = strategies.custom.values().flat_map(|v| v.values()).map(String::as_str);
    load(config, names, FunctionKind::Strategy, strategies.max_exec_time_ms)
}

/// Loads the functions `references` name (`name` or `__fromFile__[name]`, each once) from
/// `functions.files` as functions of `kind`; `None` when there are none.
fn load<'a>(
    config: &EngineConfig,
    references: impl Iterator<Item = &'a str>,
    kind: FunctionKind,
    time_limit_ms: u32,
) -> Result<Option<ScriptHost>, ScriptError> {
    let mut names: Vec<&str> = references.map(function_name).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let files: Vec<(String, PathBuf)> = names
        .iter()
        .filter_map(|n| config.functions.files.get(*n).map(|p| (n.to_string(), PathBuf::from(p))))
        .collect();
    let limits = Limits {
        time: Duration::from_millis(u64::from(time_limit_ms)),
        memory_bytes: config.functions.memory_limit_mib as usize * 1024 * 1024,
    };
    ScriptHost::load(&files, kind, limits).map(Some)
}

/// What `rtu check` reports about the files a valid config names: function files that do not
/// load and invalid strategy schemas, one message each.
pub fn check_files(config: &EngineConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = load_casts(config) {
        problems.push(format!("functions (casts): {e}"));
    }
    if let Err(e) = load_adapters(config) {
        problems.push(format!("functions (adapter): {e}"));
    }
    if let Err(e) = announce::load_automatic(config) {
        problems.push(e.to_string());
    }
    if let Err(e) = load_strategies(config) {
        problems.push(format!("functions (strategies): {e}"));
    }
    problems
}
