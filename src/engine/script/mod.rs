//! Users' JavaScript functions (docs/formats.md#custom-custom custom adapter, docs/writes.md#cast-functions custom casts, docs/outputs.md#strategies manual
//! strategies) run in an embedded, sandboxed QuickJS engine: no filesystem, network, process,
//! timers or `require`; a time limit per call (interrupt handler against a deadline) and a
//! memory limit per runtime. A [`ScriptHost`] holds one kind of function, loaded from
//! CommonJS files (`module.exports = function ...`, also `exports.default` and ES
//! `export default`), and a small pool of engines that callers on any thread share.
//!
//! Values cross the boundary as JSON (casts, adapters) or BSON (strategies): BSON dates are JS
//! `Date`s, ObjectIds their 24-digit hex string, Decimal128 its decimal string, every number a
//! JS number (an int64 beyond 2^53 loses precision); back to BSON, integral numbers become
//! int64, others doubles, `Date`s dates, `RegExp`s regular expressions.

mod adapter;
mod convert;
mod engine;
mod lookup;

use crate::engine::code::ErrorCode;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mongodb::bson::Document;
use serde_json::Value;

use crate::engine::adapter::ChangeEvent;

use engine::{Failure, JsContext};

/// What one call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time of one call, MongoDB look-ups included.
    pub time: Duration,
    /// Memory of one engine (its loaded modules included); exceeding it fails the call.
    pub memory_bytes: usize,
}

/// The role of the functions a host holds; it decides their signature and error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// `(value, fieldName, logger) -> value` (docs/writes.md#cast-functions).
    Cast,
    /// `(kafkaMessage, primaryKeys, logger) -> RTU v7 adapter result` (docs/formats.md#custom-custom).
    Adapter,
    /// `(logger, databaseName) -> async (document, mongoClient) -> identifiers` (docs/outputs.md#strategies).
    Strategy,
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionKind::Cast => "custom cast",
            FunctionKind::Adapter => "custom adapter",
            FunctionKind::Strategy => "strategy",
        })
    }
}

/// A function being called: its kind and the name it was registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    /// The kind of function.
    pub kind: FunctionKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Callee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// The Kafka record given to a JavaScript adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaMessage<'a> {
    /// The key bytes (`None` = null).
    pub key: Option<&'a [u8]>,
    /// The value bytes (`None` = null).
    pub value: Option<&'a [u8]>,
    /// The Kafka timestamp, epoch milliseconds.
    pub timestamp_ms: i64,
    /// The record offset.
    pub offset: i64,
}

/// Why the functions could not be loaded: a configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Two functions share a name.
    #[error("{kind} {name:?} is defined twice")]
    Duplicate {
        /// The kind of function.
        kind: FunctionKind,
        /// The name.
        name: String,
    },
    /// The file is not valid JavaScript.
    #[error("{file}:{line}: syntax error: {message}", line = line.map_or("?".into(), |l| l.to_string()))]
    Syntax {
        /// The file.
        file: String,
        /// The line of the error, when QuickJS tells it.
        line: Option<u32>,
        /// QuickJS's message.
        message: String,
    },
    /// The module's top-level code failed (threw, or broke a limit).
    #[error("{file}: the module failed while loading: {message}")]
    Evaluate {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// The module does not export a function.
    #[error(
        "{file}: the module exports {found}, not a function (expected `module.exports = function (...) {{ ... }}`)"
    )]
    NotAFunction {
        /// The file.
        file: String,
        /// What it exports instead.
        found: String,
    },
    /// QuickJS could not set up a runtime.
    #[error("cannot start the JavaScript engine: {0}")]
    Engine(String),
}

/// Why a call failed. [`CallError::code`] is the docs/failures.md code the caller reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No function of that name (or of that kind) was loaded.
    #[error("{callee} is not loaded")]
    Unknown {
        /// The function asked for.
        callee: Callee,
    },
    /// The function threw (or its promise rejected).
    #[error("{callee} threw: {message}")]
    Threw {
        /// The function.
        callee: Callee,
        /// The error's message (or the thrown value as a string).
        message: String,
        /// The JavaScript stack, when there is one.
        stack: Option<String>,
    },
    /// The call ran past its time limit, or returned a promise that can never settle.
    #[error("{callee} did not finish within {limit:?}")]
    Timeout {
        /// The function.
        callee: Callee,
        /// The limit.
        limit: Duration,
    },
    /// The call needed more memory than the limit.
    #[error("{callee} exceeded the memory limit of {limit} bytes")]
    MemoryLimit {
        /// The function.
        callee: Callee,
        /// The limit.
        limit: usize,
    },
    /// The function returned something its contract does not allow; `what` names the rule.
    #[error("{callee} returned a bad result: {what}")]
    BadResult {
        /// The function.
        callee: Callee,
        /// The violated rule.
        what: String,
    },
    /// A MongoDB look-up of a strategy failed: transient, the message is retried.
    #[error("{callee}: MongoDB look-up failed: {message}")]
    Lookup {
        /// The function.
        callee: Callee,
        /// The driver's error.
        message: String,
    },
    /// The engine itself failed (could not be rebuilt, or an internal conversion failed).
    #[error("{callee}: JavaScript engine failure: {message}")]
    Engine {
        /// The function.
        callee: Callee,
        /// What failed.
        message: String,
    },
}

impl CallError {
    /// The function the error is about.
    pub fn callee(&self) -> &Callee {
        match self {
            CallError::Unknown { callee }
            | CallError::Threw { callee, .. }
            | CallError::Timeout { callee, .. }
            | CallError::MemoryLimit { callee, .. }
            | CallError::BadResult { callee, .. }
            | CallError::Lookup { callee, .. }
            | CallError::Engine { callee, .. } => callee,
        }
    }

    /// The docs/failures.md code: `CAST_FAILED`, `CUSTOM_ADAPTER_FAILED`, `STRATEGY_FAILED`, or
    /// `STRATEGY_TIMEOUT` for a strategy past its time limit.
    pub fn code(&self) -> ErrorCode {
        match (self.callee().kind, self) {
            (FunctionKind::Cast, _) => ErrorCode::CastFailed,
            (FunctionKind::Adapter, _) => ErrorCode::CustomAdapterFailed,
            (FunctionKind::Strategy, CallError::Timeout { .. }) => ErrorCode::StrategyTimeout,
            (FunctionKind::Strategy, _) => ErrorCode::StrategyFailed,
        }
    }

    /// Whether docs/failures.md calls it transient (retry the message): a strategy timeout (the caller
    /// counts its repetitions) or a failed MongoDB look-up.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Lookup { .. })
            || matches!(self, CallError::Timeout { callee, .. } if callee.kind == FunctionKind::Strategy)
    }
}

/// Loaded user functions of one kind and the engines that run them. Cheap to clone; callers
/// on any thread share the pool.
#[derive(Clone)]
pub struct ScriptHost {
    inner: Arc<Inner>,
}

struct Inner {
    kind: FunctionKind,
    limits: Limits,
    sources: Arc<[Source]>,
    /// Engines, built on first use; `None` after a call broke a limit, until rebuilt.
    pool: Vec<Mutex<Option<JsContext>>>,
    next: AtomicUsize,
}

/// One user module: its function name, file name (for messages and stacks) and text.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    file: String,
    text: String,
}

impl fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.inner.sources.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("ScriptHost")
            .field("kind", &self.inner.kind)
            .field("limits", &self.inner.limits)
            .field("functions", &names)
            .finish()
    }
}

/// The text of a function file; a failure names the file.
pub fn read_source(path: &Path) -> Result<String, ScriptError> {
    std::fs::read_to_string(path)
        .map_err(|source| ScriptError::Read { file: path.to_path_buf(), source })
}

impl ScriptHost {
    /// Reads and loads `files` (function name, path) as functions of `kind`. Every module is
    /// evaluated once here, so syntax errors and missing exports are reported at start.
    pub fn load(
        files: &[(String, PathBuf)],
        kind: FunctionKind,
        limits: Limits,
    ) -> Result<Self, ScriptError> {
        let sources = files
            .iter()
            .map(|(name, path)| Ok((name.clone(), path.display().to_string(), read_source(path)?)))
            .collect::<Result<Vec<_>, ScriptError>>()?;
        Self::from_sources(sources, kind, limits)
    }

    /// Loads functions from texts: (function name, file name for messages, source).
    pub fn from_sources(
        sources: Vec<(String, String, String)>,
        kind: FunctionKind,
        limits: Limits,
    ) -> Result<Self, ScriptError> {
        let mut seen = std::collections::HashSet::new();
        let sources: Arc<[Source]> = sources
            .into_iter()
            .map(|(name, file, text)| match seen.insert(name.clone()) {
                true => Ok(Source { name, file, text }),
                false => Err(ScriptError::Duplicate { kind, name }),
            })
            .collect::<Result<_, _>>()?;
        let first = JsContext::new(&sources, limits)?;
        let size = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let pool = std::iter::once(Some(first))
            .chain(std::iter::repeat_with(|| None).take(size - 1))
            .map(Mutex::new)
            .collect();
        Ok(ScriptHost {
            inner: Arc::new(Inner { kind, limits, sources, pool, next: AtomicUsize::new(0) }),
        })
    }

    /// The kind of the functions this host holds.
    pub fn kind(&self) -> FunctionKind {
        self.inner.kind
    }

    /// Whether a function of this name is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.sources.iter().any(|s| s.name == name)
    }

    /// Calls the custom cast `name` on one field value (blocking, at most the time limit).
    pub fn cast(&self, name: &str, value: &Value, field: &str) -> Result<Value, CallError> {
        let callee = self.callee(FunctionKind::Cast, name)?;
        self.run(&callee, |engine| engine.cast(name, value, field))
    }

    /// Calls the JavaScript adapter `name` on one record and translates its RTU v7 result into
    /// a change event (docs/formats.md#custom-custom); a broken contract is a `BadResult` naming the rule.
    pub fn adapt(
        &self,
        name: &str,
        message: &KafkaMessage<'_>,
        primary_keys: &[String],
    ) -> Result<ChangeEvent, CallError> {
        let callee = self.callee(FunctionKind::Adapter, name)?;
        let result = self.run(&callee, |engine| engine.adapt(name, message, primary_keys))?;
        adapter::translate(result, primary_keys)
            .map_err(|what| CallError::BadResult { callee, what })
    }

    /// Runs the strategy `name` on a stored document. The call runs on a blocking thread of
    /// the current tokio runtime, whose handle also serves the look-ups of `db` (read-only).
    pub async fn strategy(
        &self,
        name: &str,
        database: &str,
        document: &Document,
        db: mongodb::Database,
    ) -> Result<Vec<Document>, CallError> {
        let callee = self.callee(FunctionKind::Strategy, name)?;
        let host = self.clone();
        let (name, database, document) = (name.to_string(), database.to_string(), document.clone());
        let handle = tokio::runtime::Handle::current();
        let task_callee = callee.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let lookups = lookup::Lookups::new(db, handle);
            host.run(&task_callee, |engine| engine.strategy(&name, &database, &document, &lookups))
        })
        .await;
        joined.unwrap_or_else(|e| Err(CallError::Engine { callee, message: e.to_string() }))
    }

    fn callee(&self, kind: FunctionKind, name: &str) -> Result<Callee, CallError> {
        let callee = Callee { kind, name: name.to_string() };
        match self.inner.kind == kind && self.contains(name) {
            true => Ok(callee),
            false => Err(CallError::Unknown { callee }),
        }
    }

    /// Runs `call` on a free engine (building it if needed); an engine whose call broke a
    /// limit is dropped, to be rebuilt by the next call.
    fn run<T>(
        &self,
        callee: &Callee,
        call: impl FnOnce(&mut JsContext) -> Result<T, Failure>,
    ) -> Result<T, CallError> {
        let mut slot = self.slot();
        let engine = match slot.as_mut() {
            Some(engine) => engine,
            None => match JsContext::new(&self.inner.sources, self.inner.limits) {
                Ok(engine) => slot.insert(engine),
                Err(e) => {
                    return Err(CallError::Engine {
                        callee: callee.clone(),
                        message: e.to_string(),
                    });
                }
            },
        };
        let result = call(engine);
        if let Err(Failure::Timeout | Failure::MemoryLimit) = &result {
            *slot = None;
        }
        result.map_err(|failure| failure.into_error(callee.clone(), self.inner.limits))
    }

    /// A free engine slot if there is one, else waits for the next one in turn.
    fn slot(&self) -> MutexGuard<'_, Option<JsContext>> {
        let pool = &self.inner.pool;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..pool.len() {
            if let Ok(guard) = pool[(start + i) % pool.len()].try_lock() {
                return guard;
            }
        }
        pool[start % pool.len()].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
