//! The users' JavaScript functions an engine config names, loaded by role (docs/writes.md#cast-functions custom
//! casts, docs/outputs.md#strategies custom strategies) into sandboxed hosts, and the file checks `rtu check` runs:
//! every function file loads (syntax, export) and the automatic strategy's schemas are valid.

use std::path::Path;
use std::time::Duration;

use crate::config::{EngineConfig, function_name};
use crate::engine::cast::Cast;
use crate::engine::script::{FunctionKind, Limits, ScriptError, ScriptHost, read_source};
use crate::engine::strategy;

/// Where function sources come from: a function's name and configured path to (a name for
/// messages, its text).
type Read<'r> = &'r dyn Fn(&str, &str) -> Result<(String, String), ScriptError>;

/// Reads a function file from disk; messages name its path.
fn from_disk(_name: &str, path: &str) -> Result<(String, String), ScriptError> {
    Ok((path.to_string(), read_source(Path::new(path))?))
}

/// The JavaScript casts the fields name (those that are not built in), `None` when none.
pub fn load_casts(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    casts(config, &from_disk)
}

/// The JavaScript adapters the config names (`adapter.function`), `None` when none.
pub fn load_adapters(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    adapters(config, &from_disk)
}

/// The JavaScript strategies of `outputs.strategies.custom` (limited to `maxExecTimeMs` a
/// call), `None` when none.
pub fn load_strategies(config: &EngineConfig) -> Result<Option<ScriptHost>, ScriptError> {
    strategies(config, &from_disk)
}

fn casts(config: &EngineConfig, read: Read) -> Result<Option<ScriptHost>, ScriptError> {
    let names = config
        .projections
        .iter()
        .flat_map(|p| &p.fields)
        .filter(|f| f.cast.parse::<Cast>().is_err())
        .map(|f| f.cast.as_str());
    load(config, names, FunctionKind::Cast, config.functions.time_limit_ms, read)
}

fn adapters(config: &EngineConfig, read: Read) -> Result<Option<ScriptHost>, ScriptError> {
    let adapters = std::iter::once(&config.adapter)
        .chain(config.projections.iter().filter_map(|p| p.adapter.as_ref()));
    let names = adapters.filter_map(|a| a.function.as_deref());
    load(config, names, FunctionKind::Adapter, config.functions.time_limit_ms, read)
}

fn strategies(config: &EngineConfig, read: Read) -> Result<Option<ScriptHost>, ScriptError> {
    let strategies = &config.outputs.strategies;
    let names = strategies.custom.values().flat_map(|v| v.values()).map(String::as_str);
    load(config, names, FunctionKind::Strategy, strategies.max_exec_time_ms, read)
}

/// Loads the functions `references` name (`name` or `__fromFile__[name]`, each once) from
/// `functions.files` as functions of `kind`; `None` when there are none.
fn load<'a>(
    config: &EngineConfig,
    references: impl Iterator<Item = &'a str>,
    kind: FunctionKind,
    time_limit_ms: u32,
    read: Read,
) -> Result<Option<ScriptHost>, ScriptError> {
    let mut names: Vec<&str> = references.map(function_name).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let sources = names
        .iter()
        .filter_map(|n| config.functions.files.get(*n).map(|path| (n, path)))
        .map(|(n, path)| read(n, path).map(|(file, text)| (n.to_string(), file, text)))
        .collect::<Result<Vec<_>, ScriptError>>()?;
    let limits = Limits {
        time: Duration::from_millis(u64::from(time_limit_ms)),
        memory_bytes: config.functions.memory_limit_mib as usize * 1024 * 1024,
    };
    ScriptHost::from_sources(sources, kind, limits).map(Some)
}

/// Loads every function the config names, by role, from texts instead of files: `read` gives
/// a function's (name for messages, text) from its name and configured path. The operator
/// runs this on the files it is about to render, so a function that does not load is refused
/// before any worker starts with it. One message per role that fails.
pub fn check_texts(config: &EngineConfig, read: Read) -> Vec<String> {
    [
        ("casts", casts(config, read).err()),
        ("adapter", adapters(config, read).err()),
        ("strategies", strategies(config, read).err()),
    ]
    .into_iter()
    .filter_map(|(role, e)| e.map(|e| format!("functions ({role}): {e}")))
    .collect()
}

/// What `rtu check` reports about the files a valid config names: function files that do not
/// load and invalid strategy schemas, one message each.
pub fn check_files(config: &EngineConfig) -> Vec<String> {
    let mut problems = check_texts(config, &from_disk);
    if let Err(e) = strategy::load_automatic(config) {
        problems.push(format!("strategy schemas:\n{e}"));
    }
    problems
}
