//! One QuickJS runtime and context with the prelude and every user module loaded: loading
//! (CommonJS wrapper or ES module), the per-call watchdog, promise settling and the
//! classification of what went wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::Document;
use rquickjs::context::EvalOptions;
use rquickjs::promise::PromiseState;
use rquickjs::{Context, Ctx, Exception, Function, Module, Object, Runtime, Value};
use serde_json::Value as Json;

use super::lookup::{LookupSlot, Lookups};
use super::{CallError, Callee, KafkaMessage, Limits, ScriptError, Source, convert};

const PRELUDE: &str = include_str!("prelude.js");

/// The JavaScript stack QuickJS may use; well below the 2 MiB of tokio and test threads.
const MAX_STACK_BYTES: usize = 512 * 1024;

/// What went wrong in a call, before the caller names the function.
#[derive(Debug)]
pub(super) enum Failure {
    /// A thrown error or rejected promise.
    Threw { message: String, stack: Option<String> },
    /// The deadline passed, or a promise can never settle.
    Timeout,
    /// The runtime ran out of its memory.
    MemoryLimit,
    /// The result breaks the function's contract.
    BadResult(String),
    /// A MongoDB look-up failed.
    Lookup(String),
    /// The host failed (conversion, missing registration).
    Internal(String),
}

impl Failure {
    pub(super) fn into_error(self, callee: Callee, limits: Limits) -> CallError {
        match self {
            Failure::Threw { message, stack } => CallError::Threw { callee, message, stack },
            Failure::Timeout => CallError::Timeout { callee, limit: limits.time },
            Failure::MemoryLimit => CallError::MemoryLimit { callee, limit: limits.memory_bytes },
            Failure::BadResult(what) => CallError::BadResult { callee, what },
            Failure::Lookup(message) => CallError::Lookup { callee, message },
            Failure::Internal(message) => CallError::Engine { callee, message },
        }
    }
}

/// The deadline of the running call, read by QuickJS's interrupt handler.
struct Watchdog {
    epoch: Instant,
    /// Nanoseconds after `epoch`; 0 = no call running.
    deadline: AtomicU64,
    fired: AtomicBool,
}

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            epoch: Instant::now(),
            deadline: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        }
    }

    fn arm(&self, limit: Duration) {
        let deadline = self.epoch.elapsed().saturating_add(limit).as_nanos();
        self.deadline.store(u64::try_from(deadline).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
        self.fired.store(false, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Whether the running call is past its deadline (and remembers that it was).
    fn expired(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if deadline != 0 && now >= deadline {
            self.fired.store(true, Ordering::Relaxed);
        }
        self.fired.load(Ordering::Relaxed)
    }

    /// The time left to the running call.
    pub(super) fn remaining(&self) -> Duration {
        let deadline = Duration::from_nanos(self.deadline.load(Ordering::Relaxed));
        deadline.saturating_sub(self.epoch.elapsed())
    }
}

/// A runtime with every module loaded. Field order is drop order: the context goes first.
pub(super) struct JsContext {
    context: Context,
    _runtime: Runtime,
    watchdog: Arc<Watchdog>,
    lookups: Arc<LookupSlot>,
    limits: Limits,
}

impl JsContext {
    /// A fresh runtime with the prelude and every module of `sources` evaluated.
    pub(super) fn new(sources: &[Source], limits: Limits) -> Result<Self, ScriptError> {
        let engine_error = |e: rquickjs::Error| ScriptError::Engine(e.to_string());
        let runtime = Runtime::new().map_err(engine_error)?;
        let watchdog = Arc::new(Watchdog::new());
        let handler_watchdog = Arc::clone(&watchdog);
        runtime.set_interrupt_handler(Some(Box::new(move || handler_watchdog.expired())));
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        let context = Context::full(&runtime).map_err(engine_error)?;
        runtime.set_memory_limit(limits.memory_bytes);
        let lookups = Arc::new(LookupSlot::default());
        let engine = JsContext { context, _runtime: runtime, watchdog, lookups, limits };
        engine.install_prelude()?;
        for source in sources {
            engine.watchdog.arm(limits.time);
            let loaded = engine.context.with(|ctx| load_module(&ctx, source));
            let expired = engine.watchdog.expired();
            engine.watchdog.disarm();
            if expired {
                let message = format!("the time limit of {:?} was reached", limits.time);
                return Err(ScriptError::Evaluate { file: source.file.clone(), message });
            }
            loaded?;
        }
        Ok(engine)
    }

    fn install_prelude(&self) -> Result<(), ScriptError> {
        let slot = Arc::clone(&self.lookups);
        let watchdog = Arc::clone(&self.watchdog);
        self.context.with(|ctx| {
            let install = || -> rquickjs::Result<()> {
                let prelude: Function = ctx.eval_with_options(PRELUDE, options("rtu:prelude"))?;
                let log = Function::new(ctx.clone(), log)?;
                let lookup = super::lookup::native(&ctx, slot, move || watchdog.remaining())?;
                prelude.call((log, lookup))
            };
            install().map_err(|e| ScriptError::Engine(describe(&ctx, e)))
        })
    }

    /// Calls the cast `name` with `(value, field, logger)`.
    pub(super) fn cast(&mut self, name: &str, value: &Json, field: &str) -> Result<Json, Failure> {
        self.call(|ctx| {
            let (function, logger) = registered(ctx, name)?;
            let value = convert::json_to_js(ctx, value).map_err(|e| fail(ctx, e))?;
            let result = function.call((value, field, logger));
            json_result(ctx, result, "cast")
        })
    }

    /// Calls the adapter `name` with `(kafkaMessage, primaryKeys, logger)`; its raw result.
    pub(super) fn adapt(
        &mut self,
        name: &str,
        message: &KafkaMessage<'_>,
        primary_keys: &[String],
    ) -> Result<Json, Failure> {
        self.call(|ctx| {
            let (function, logger) = registered(ctx, name)?;
            let args = convert::kafka_message(ctx, message).map_err(|e| fail(ctx, e))?;
            let keys = primary_keys.to_vec();
            json_result(ctx, function.call((args, keys, logger)), "adapter")
        })
    }

    /// Calls the strategy `name` of database `database` on `document`, with look-ups served
    /// by `lookups`; the identifiers it resolves to.
    pub(super) fn strategy(
        &mut self,
        name: &str,
        database: &str,
        document: &Document,
        lookups: &Lookups,
    ) -> Result<Vec<Document>, Failure> {
        self.lookups.begin(lookups);
        let result = self.call(|ctx| {
            let function = strategy_function(ctx, name, database)?;
            let host = host(ctx).map_err(|e| fail(ctx, e))?;
            let client: Object = host
                .get::<_, Function>("client")
                .and_then(|make| make.call((database,)))
                .map_err(|e| fail(ctx, e))?;
            let document = convert::document_to_js(ctx, document).map_err(|e| fail(ctx, e))?;
            let result = function.call((document, client)).map_err(|e| fail(ctx, e))?;
            let result = settle(ctx, result)?;
            convert::identifiers(ctx, result).map_err(Failure::BadResult)
        });
        // A failed look-up voids the result even if the script caught it: retried, it may
        // find what it missed.
        match (self.lookups.end(), result) {
            (Some(failed), _) if failed.timed_out => Err(Failure::Timeout),
            (_, Err(Failure::Timeout)) => Err(Failure::Timeout),
            (Some(failed), _) => Err(Failure::Lookup(failed.message)),
            (None, result) => result,
        }
    }

    /// Runs `f` under the time limit; a call that reached its deadline is a timeout whatever
    /// it returned.
    fn call<T>(
        &mut self,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.watchdog.arm(self.limits.time);
        let watchdog = &self.watchdog;
        let result = self.context.with(|ctx| {
            let result = f(&ctx);
            if result.is_err() {
                // Jobs a failed call left behind must not run in the next one.
                while ctx.execute_pending_job() {}
            }
            result
        });
        let expired = watchdog.expired();
        watchdog.disarm();
        match expired {
            true => Err(Failure::Timeout),
            false => result,
        }
    }
}

/// The settled result of a call as JSON; `undefined` breaks the contract of casts and
/// adapters alike.
fn json_result<'js>(
    ctx: &Ctx<'js>,
    result: rquickjs::Result<Value<'js>>,
    kind: &str,
) -> Result<Json, Failure> {
    let result = settle(ctx, result.map_err(|e| fail(ctx, e))?)?;
    convert::js_to_json(ctx, result)
        .map_err(|e| fail(ctx, e))?
        .ok_or_else(|| Failure::BadResult(format!("the {kind} returned undefined")))
}

/// Evaluation options for a user file (sloppy mode, as Node runs CommonJS).
fn options(file: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    options.strict = false;
    options.backtrace_barrier = true;
    options.filename = Some(file.to_string());
    options
}

/// The global `__rtu` object the prelude defines.
fn host<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    ctx.globals().get("__rtu")
}

/// The function registered as `name` and its logger.
fn registered<'js>(ctx: &Ctx<'js>, name: &str) -> Result<(Function<'js>, Object<'js>), Failure> {
    let lookup = || -> rquickjs::Result<(Function<'js>, Object<'js>)> {
        let host = host(ctx)?;
        let function = host.get::<_, Object>("functions")?.get(name)?;
        let logger = host.get::<_, Object>("loggers")?.get(name)?;
        Ok((function, logger))
    };
    lookup().map_err(|e| Failure::Internal(format!("{name:?} is not registered: {e}")))
}

/// The function a strategy factory returned for `(name, database)`: made on first use with
/// `factory(logger, database)`, then cached in the context.
fn strategy_function<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    database: &str,
) -> Result<Function<'js>, Failure> {
    let cache: Object = host(ctx).and_then(|h| h.get("strategies")).map_err(|e| fail(ctx, e))?;
    let key = format!("{name}\u{0}{database}");
    if let Ok(function) = cache.get::<_, Function>(key.as_str()) {
        return Ok(function);
    }
    let (factory, logger) = registered(ctx, name)?;
    let made = factory.call((logger, database)).map_err(|e| fail(ctx, e))?;
    let made = settle(ctx, made)?;
    let Some(function) = made.as_function().cloned() else {
        let found = convert::describe(&made);
        return Err(Failure::BadResult(format!(
            "the strategy factory must return a function (document, mongoClient), it returned {found}"
        )));
    };
    cache.set(key, function.clone()).map_err(|e| fail(ctx, e))?;
    Ok(function)
}

/// The value of a promise once settled (other values as they are). QuickJS has no timers
/// and look-ups resolve at once, so a promise still pending when no job is left never
/// settles: a timeout.
fn settle<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> Result<Value<'js>, Failure> {
    let Some(promise) = value.as_promise() else { return Ok(value) };
    while promise.state() == PromiseState::Pending {
        if !ctx.execute_pending_job() {
            return Err(Failure::Timeout);
        }
    }
    match promise.result::<Value>() {
        Some(result) => result.map_err(|e| fail(ctx, e)),
        None => Err(Failure::Timeout),
    }
}

/// What a failed QuickJS operation means: the pending exception read and classified.
fn fail(ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
    match error {
        rquickjs::Error::Exception => {
            let thrown = ctx.catch();
            // QuickJS throws an "out of memory" InternalError, or `null` when it cannot even
            // allocate that error; a script throwing `null` itself is taken for the same.
            if thrown.is_null() || thrown.type_of() == rquickjs::Type::Uninitialized {
                return Failure::MemoryLimit;
            }
            match thrown.as_exception() {
                Some(e) if is_out_of_memory(e) => Failure::MemoryLimit,
                Some(e) => {
                    Failure::Threw { message: e.message().unwrap_or_default(), stack: e.stack() }
                }
                None => Failure::Threw { message: convert::to_display(&thrown), stack: None },
            }
        }
        rquickjs::Error::Allocation => Failure::MemoryLimit,
        other => Failure::Internal(other.to_string()),
    }
}

fn is_out_of_memory(exception: &Exception<'_>) -> bool {
    exception.message().is_some_and(|m| m == "out of memory")
        && exception.get::<_, String>("name").is_ok_and(|name| name == "InternalError")
}

/// The message of a failed QuickJS operation, for load errors.
fn describe(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    match fail(ctx, error) {
        Failure::Threw { message, .. } => message,
        Failure::Timeout => "the time limit was reached".into(),
        Failure::MemoryLimit => "the memory limit was reached".into(),
        Failure::BadResult(m) | Failure::Lookup(m) | Failure::Internal(m) => m,
    }
}

/// The native `log(level, function, text)` behind every logger.
fn log(level: String, function: String, text: String) {
    match level.as_str() {
        "trace" => tracing::trace!(target: "rtu::script", function, "{text}"),
        "debug" => tracing::debug!(target: "rtu::script", function, "{text}"),
        "warn" => tracing::warn!(target: "rtu::script", function, "{text}"),
        "error" => tracing::error!(target: "rtu::script", function, "{text}"),
        _ => tracing::info!(target: "rtu::script", function, "{text}"),
    }
}

/// Evaluates one user module and registers its function and a logger under its name.
fn load_module(ctx: &Ctx<'_>, source: &Source) -> Result<(), ScriptError> {
    let file = &source.file;
    let exported = match is_es_module(&source.text) {
        true => es_default(ctx, source),
        false => commonjs_exports(ctx, source),
    };
    let exported = exported.map_err(|e| load_error(ctx, source, e))?;
    let function = exported_function(&exported).ok_or_else(|| ScriptError::NotAFunction {
        file: file.clone(),
        found: exported_kind(&exported),
    })?;
    let register = || -> rquickjs::Result<()> {
        let host = host(ctx)?;
        let logger: Object = host.get::<_, Function>("logger")?.call((source.name.as_str(),))?;
        host.get::<_, Object>("functions")?.set(source.name.as_str(), function)?;
        host.get::<_, Object>("loggers")?.set(source.name.as_str(), logger)
    };
    register().map_err(|e| ScriptError::Evaluate { file: file.clone(), message: describe(ctx, e) })
}

/// An ES module is recognised by its `export default`; anything else is CommonJS.
fn is_es_module(text: &str) -> bool {
    text.lines().any(|line| line.trim_start().starts_with("export default"))
}

/// `module.exports` after running the file in a CommonJS wrapper (on the file's first line,
/// so line numbers stay those of the file).
fn commonjs_exports<'js>(ctx: &Ctx<'js>, source: &Source) -> rquickjs::Result<Value<'js>> {
    let wrapped = format!(
        "(function (exports, require, module, __filename, __dirname) {{{}\n}})",
        source.text
    );
    let wrapper: Function = ctx.eval_with_options(wrapped, options(&source.file))?;
    let module = Object::new(ctx.clone())?;
    let exports = Object::new(ctx.clone())?;
    module.set("exports", exports.clone())?;
    let require: Function = host(ctx)?.get("require")?;
    let dir = std::path::Path::new(&source.file).parent().map(|d| d.display().to_string());
    wrapper.call::<_, ()>((exports, require, module.clone(), source.file.as_str(), dir))?;
    module.get("exports")
}

/// The default export of an ES module (imports cannot resolve: there is no loader).
fn es_default<'js>(ctx: &Ctx<'js>, source: &Source) -> rquickjs::Result<Value<'js>> {
    let declared = Module::declare(ctx.clone(), source.file.as_str(), source.text.as_str())?;
    let (module, promise) = declared.eval()?;
    promise.finish::<()>()?;
    module.get("default")
}

/// The exported function: `module.exports` itself, or its `default`.
fn exported_function<'js>(exported: &Value<'js>) -> Option<Function<'js>> {
    if let Some(function) = exported.as_function() {
        return Some(function.clone());
    }
    exported.as_object()?.get::<_, Function>("default").ok()
}

fn exported_kind(exported: &Value<'_>) -> String {
    match exported.as_object() {
        Some(_) if !exported.is_array() => "an object without a function `default`".into(),
        _ => convert::describe(exported),
    }
}

/// A syntax error (with its line) or another failure of the module's evaluation.
fn load_error(ctx: &Ctx<'_>, source: &Source, error: rquickjs::Error) -> ScriptError {
    let file = source.file.clone();
    let thrown = match error {
        rquickjs::Error::Exception => ctx.catch(),
        other => return ScriptError::Evaluate { file, message: other.to_string() },
    };
    let Some(exception) = thrown.as_exception() else {
        return ScriptError::Evaluate { file, message: convert::to_display(&thrown) };
    };
    let message = exception.message().unwrap_or_default();
    if !is_syntax_error(exception) {
        let message = match exception.stack() {
            Some(stack) if !stack.is_empty() => format!("{message}\n{stack}"),
            _ => message,
        };
        return ScriptError::Evaluate { file, message };
    }
    let line = exception.stack().and_then(|stack| line_in(&stack, &source.file));
    ScriptError::Syntax { file, line, message }
}

fn is_syntax_error(exception: &Exception<'_>) -> bool {
    exception.get::<_, String>("name").is_ok_and(|name| name == "SyntaxError")
}

/// The line of the first `file:line` in a QuickJS stack.
fn line_in(stack: &str, file: &str) -> Option<u32> {
    let pattern = format!("{file}:");
    let at = stack.find(&pattern)? + pattern.len();
    let digits: String = stack[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_in_reads_the_line_after_the_file_name() {
        assert_eq!(line_in("SyntaxError: x\n    at /f/a.js:12:3\n", "/f/a.js"), Some(12));
        assert_eq!(line_in("    at other.js:3:1", "/f/a.js"), None);
    }

    #[test]
    fn es_modules_are_told_by_their_export_default() {
        assert!(is_es_module("const x = 1;\nexport default function f() {}\n"));
        assert!(!is_es_module("module.exports = function () { return 'export default'; }"));
    }
}
