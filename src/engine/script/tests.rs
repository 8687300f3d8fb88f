//! Unit tests of the script host: the three call kinds, limits, sandbox and load errors. The
//! look-ups against a real mongod are in `tests/integration/script_strategy.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, doc};
use serde_json::json;

use super::*;
use crate::engine::adapter::Op;

const MIB: usize = 1024 * 1024;

fn limits() -> Limits {
    Limits { time: Duration::from_millis(100), memory_bytes: 16 * MIB }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/js").join(name)
}

/// A host of one function `f` from `text`, in file `f.js`.
fn host(kind: FunctionKind, text: &str) -> ScriptHost {
    try_host(kind, text).unwrap()
}

fn try_host(kind: FunctionKind, text: &str) -> Result<ScriptHost, ScriptError> {
    ScriptHost::from_sources(vec![("f".into(), "f.js".into(), text.into())], kind, limits())
}

fn cast_host(text: &str) -> ScriptHost {
    host(FunctionKind::Cast, text)
}

fn cast(host: &ScriptHost, value: Value) -> Result<Value, CallError> {
    host.cast("f", &value, "field")
}

/// The cast host still answers after a failure.
fn assert_usable(host: &ScriptHost) {
    assert_eq!(cast(host, json!("ok")).unwrap(), json!("ok"), "the host is not usable any more");
}

const ECHO_OR_MISBEHAVE: &str = r#"
module.exports = function (value, field, logger) {
  if (value === 'throw') throw new TypeError('bad value ' + field)
  if (value === 'loop') { while (true) {} }
  if (value === 'catch-loop') { for (;;) { try { for (;;) {} } catch (e) {} } }
  if (value === 'bomb') { const a = []; for (let i = 0; ; i++) a.push('x'.repeat(1024) + i) }
  if (value === 'recurse') { const f = (n) => f(n + 1) + 1; return f(0) }
  if (value === 'pending') return new Promise(() => {})
  if (value === 'await-loop') return (async () => { for (;;) await null })()
  if (value === 'wait') return Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
  if (value === 'undefined') return undefined
  return value
}
"#;

#[test]
fn cast_returns_the_value_of_the_function_file() {
    let host = ScriptHost::load(
        &[("toUpper".into(), fixture("cast_to_upper.js"))],
        FunctionKind::Cast,
        limits(),
    )
    .unwrap();
    assert_eq!(host.cast("toUpper", &json!("ada"), "name").unwrap(), json!("ADA"));
    assert_eq!(host.cast("toUpper", &json!(12.5), "name").unwrap(), json!("12.5"));
    assert_eq!(host.cast("toUpper", &Value::Null, "name").unwrap(), Value::Null);
}

#[test]
fn cast_passes_value_field_and_logger_and_converts_results() {
    let host = cast_host(
        r#"module.exports = function (value, fieldName, logger) {
             logger.info('casting', fieldName, { value }); logger.child({}).warn('child'); console.log('console')
             return { field: fieldName, value, type: typeof value, n: 7 / 2, i: 6 / 2, d: new Date(0), nan: NaN }
           }"#,
    );
    let got = host.cast("f", &json!({ "a": [1, "b", null] }), "age").unwrap();
    assert_eq!(
        got,
        json!({ "field": "age", "value": { "a": [1, "b", null] }, "type": "object", "n": 3.5, "i": 3,
                "d": "1970-01-01T00:00:00.000Z", "nan": null })
    );
}

#[test]
fn async_functions_exports_default_and_es_default_exports_are_accepted() {
    let cases = [
        "module.exports = async function (v) { await null; return v + '!' }",
        "exports.default = function (v) { return v + '!' }",
        "module.exports = { default: (v) => v + '!' }",
        "const bang = (v) => v + '!'\nexport default bang\n",
    ];
    for text in cases {
        assert_eq!(cast(&cast_host(text), json!("hi")).unwrap(), json!("hi!"), "{text}");
    }
}

#[test]
fn a_cast_that_throws_is_threw_with_its_message_and_stack() {
    let host = cast_host(ECHO_OR_MISBEHAVE);
    let err = cast(&host, json!("throw")).unwrap_err();
    let CallError::Threw { callee, message, stack } = &err else { panic!("{err:?}") };
    assert_eq!(callee, &Callee { kind: FunctionKind::Cast, name: "f".into() });
    assert_eq!(message, "bad value field");
    assert!(stack.as_deref().is_some_and(|s| s.contains("f.js:3")), "{stack:?}");
    assert_eq!(err.code(), "CAST_FAILED");
    assert!(!err.is_transient());
    assert_usable(&host);

    let thrown_string = cast_host("module.exports = () => { throw 'plain' }");
    let err = cast(&thrown_string, json!(1)).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, stack: None, .. } if message == "plain"),
        "{err:?}"
    );
}

#[test]
fn a_cast_returning_undefined_is_a_bad_result() {
    let host = cast_host(ECHO_OR_MISBEHAVE);
    let err = cast(&host, json!("undefined")).unwrap_err();
    assert!(
        matches!(&err, CallError::BadResult { what, .. } if what.contains("undefined")),
        "{err:?}"
    );
    assert_usable(&host);
}

#[test]
fn an_infinite_loop_times_out_within_about_the_limit_and_the_host_recovers() {
    let host = cast_host(ECHO_OR_MISBEHAVE);
    for input in ["loop", "catch-loop", "await-loop"] {
        let started = Instant::now();
        let err = cast(&host, json!(input)).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, CallError::Timeout { limit, .. } if limit == limits().time),
            "{err:?}"
        );
        assert!(took >= limits().time && took < Duration::from_secs(2), "{input}: {took:?}");
        assert_usable(&host);
    }
}

#[test]
fn a_promise_that_never_settles_is_a_timeout() {
    let host = cast_host(ECHO_OR_MISBEHAVE);
    let err = cast(&host, json!("pending")).unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    assert_usable(&host);
}

#[test]
fn a_memory_bomb_is_a_memory_limit_and_the_host_recovers() {
    // A time limit the bomb cannot reach first, even unoptimised.
    let limits = Limits { time: Duration::from_secs(10), ..limits() };
    let source = ("f".to_string(), "f.js".to_string(), ECHO_OR_MISBEHAVE.to_string());
    let host = ScriptHost::from_sources(vec![source], FunctionKind::Cast, limits).unwrap();
    let err = cast(&host, json!("bomb")).unwrap_err();
    assert!(matches!(err, CallError::MemoryLimit { limit, .. } if limit == 16 * MIB), "{err:?}");
    assert_eq!(err.code(), "CAST_FAILED");
    assert_usable(&host);
    let err = cast(&host, json!("bomb")).unwrap_err();
    assert!(matches!(err, CallError::MemoryLimit { .. }), "second bomb: {err:?}");
    assert_usable(&host);
}

#[test]
fn runaway_recursion_is_an_error_not_a_crash() {
    let host = cast_host(ECHO_OR_MISBEHAVE);
    let err = cast(&host, json!("recurse")).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message.contains("stack")),
        "{err:?}"
    );
    assert_usable(&host);
}

#[test]
fn the_sandbox_has_no_require_process_filesystem_network_or_timers() {
    let host = cast_host(
        r#"module.exports = function (what) {
             if (what === 'require') return require('fs').readFileSync('/etc/passwd')
             if (what === 'process') return process.exit(1)
             if (what === 'import') return import('fs')
             if (what === 'ok') return what
             return [typeof process, typeof std, typeof os, typeof setTimeout, typeof fetch,
                     typeof XMLHttpRequest, typeof Buffer].join()
           }"#,
    );
    let err = cast(&host, json!("require")).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message.contains("require('fs') is not available")),
        "{err:?}"
    );
    let err = cast(&host, json!("process")).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message.contains("process")),
        "{err:?}"
    );
    let err = cast(&cast_host(ECHO_OR_MISBEHAVE), json!("wait")).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message.contains("cannot block")),
        "{err:?}"
    );
    let err = cast(&host, json!("import")).unwrap_err();
    assert!(matches!(&err, CallError::Threw { message, .. } if message.contains("fs")), "{err:?}");
    let globals = cast(&host, json!("globals")).unwrap();
    assert_eq!(globals, json!(["undefined"; 7].join(",")));
    assert_usable(&host);

    let err =
        try_host(FunctionKind::Cast, "import fs from 'fs'\nexport default () => fs\n").unwrap_err();
    assert!(
        matches!(&err, ScriptError::Evaluate { file, message } if file == "f.js" && message.contains("fs")),
        "{err}"
    );
}

#[test]
fn a_syntax_error_names_the_file_and_the_line() {
    let err = try_host(
        FunctionKind::Cast,
        "'use strict'\nmodule.exports = function (v) {\n  return v +;\n}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, ScriptError::Syntax { file, line: Some(3), .. } if file == "f.js"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("f.js:3: syntax error: "), "{err}");

    let err = try_host(
        FunctionKind::Cast,
        "const x = 1\n\nexport default function (v) { return v +; }\n",
    )
    .unwrap_err();
    assert!(matches!(&err, ScriptError::Syntax { line: Some(3), .. }), "ES module: {err:?}");
}

#[test]
fn a_module_not_exporting_a_function_is_an_error_naming_the_file() {
    for (text, found) in [
        ("function f(v) { return v }", "an object without a function `default`"),
        ("module.exports = 42", "a number"),
        ("module.exports = { cast: (v) => v }", "an object without a function `default`"),
        ("export default 'x'\n", "a string"),
    ] {
        let err = try_host(FunctionKind::Cast, text).unwrap_err();
        assert!(
            matches!(&err, ScriptError::NotAFunction { file, found: f } if file == "f.js" && f == found),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains("f.js"), "{err}");
    }
}

#[test]
fn other_load_errors_name_what_failed() {
    let missing = PathBuf::from("/nonexistent/cast.js");
    let err = ScriptHost::load(&[("c".into(), missing.clone())], FunctionKind::Cast, limits())
        .unwrap_err();
    assert!(matches!(&err, ScriptError::Read { file, .. } if *file == missing), "{err:?}");

    let err = try_host(FunctionKind::Cast, "throw new Error('top level')").unwrap_err();
    assert!(
        matches!(&err, ScriptError::Evaluate { message, .. } if message.contains("top level")),
        "{err:?}"
    );

    let err = try_host(FunctionKind::Cast, "while (true) {}").unwrap_err();
    assert!(
        matches!(&err, ScriptError::Evaluate { message, .. } if message.contains("time limit")),
        "{err:?}"
    );

    let same = || ("f".to_string(), "f.js".to_string(), "module.exports = (v) => v".to_string());
    let err =
        ScriptHost::from_sources(vec![same(), same()], FunctionKind::Cast, limits()).unwrap_err();
    assert!(matches!(&err, ScriptError::Duplicate { name, .. } if name == "f"), "{err:?}");
}

#[test]
fn calling_an_unknown_function_or_another_kind_is_unknown() {
    let host = cast_host("module.exports = (v) => v");
    let err = host.cast("nope", &json!(1), "x").unwrap_err();
    assert!(matches!(&err, CallError::Unknown { callee } if callee.name == "nope"), "{err:?}");
    let err = host.adapt("f", &KafkaMessage::default(), &[]).unwrap_err();
    assert!(
        matches!(&err, CallError::Unknown { callee } if callee.kind == FunctionKind::Adapter),
        "{err:?}"
    );
    assert_eq!(err.code(), "CUSTOM_ADAPTER_FAILED");
}

fn adapter_host() -> ScriptHost {
    ScriptHost::load(
        &[("kafkaMessageAdapter".into(), fixture("kafka_message_adapter.js"))],
        FunctionKind::Adapter,
        limits(),
    )
    .unwrap()
}

fn message<'a>(key: &'a str, value: Option<&'a str>) -> KafkaMessage<'a> {
    KafkaMessage {
        key: Some(key.as_bytes()),
        value: value.map(str::as_bytes),
        timestamp_ms: 1_700_000_000_000,
        offset: 41,
    }
}

#[test]
fn the_rtu_v7_adapter_result_becomes_a_change_event() {
    let host = adapter_host();
    let pk = vec!["customer_id".to_string()];
    let adapt =
        |value| host.adapt("kafkaMessageAdapter", &message(r#"{"customer_id":"C-1"}"#, value), &pk);

    let c = adapt(Some(
        r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1","name":"Ada"},"seq":88123}"#,
    ))
    .unwrap();
    assert_eq!((c.op, c.position), (Op::Upsert, Some(88123)));
    assert_eq!(Value::Object(c.after.unwrap()), json!({ "customer_id": "C-1", "name": "Ada" }));
    assert_eq!(Value::Object(c.key), json!({ "customer_id": "C-1" }));

    let c =
        adapt(Some(r#"{"event":"ROW_DELETE","old":{"customer_id":"C-1"},"seq":88124}"#)).unwrap();
    assert_eq!((c.op, c.after, c.position), (Op::Delete, None, Some(88124)));
    assert_eq!(c.before.map(Value::Object), Some(json!({ "customer_id": "C-1" })));

    let c = adapt(None).unwrap();
    assert_eq!((c.op, Value::Object(c.key)), (Op::Delete, json!({ "customer_id": "C-1" })));

    let c = adapt(Some(
        r#"{"event":"ROW_UPDATE","old":{"customer_id":"C-0"},"row":{"customer_id":"C-1"},"seq":9}"#,
    ))
    .unwrap();
    assert_eq!((c.op, c.position), (Op::Update, Some(9)));
    assert_eq!(c.before.map(Value::Object), Some(json!({ "customer_id": "C-0" })));
}

#[test]
fn the_adapter_sees_buffers_timestamp_and_offset_as_rtu_v7_does() {
    let host = host(
        FunctionKind::Adapter,
        r#"module.exports = function (m, primaryKeys, logger) {
             const seen = [m.key instanceof Uint8Array, m.key.length, m.key.toString(), String(m.value),
                           m.timestamp, m.offset, typeof m.timestamp, primaryKeys]
             return { keyObject: { id: 1 }, value: { seen }, timestampDate: new Date(), offset: 1 }
           }"#,
    );
    let c = host.adapt("f", &message("k\u{e9}", Some("v")), &["id".to_string()]).unwrap();
    assert_eq!(
        c.after.unwrap()["seen"],
        json!([true, 3, "k\u{e9}", "v", "1700000000000", "41", "string", ["id"]])
    );
}

#[test]
fn an_adapter_breaking_the_contract_is_custom_adapter_failed_naming_the_rule() {
    let host = adapter_host();
    let pk = vec!["customer_id".to_string()];
    let err = host
        .adapt(
            "kafkaMessageAdapter",
            &message("{}", Some(r#"{"event":"ROW_INSERT","row":{"name":"x"},"seq":-1}"#)),
            &pk,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::BadResult { what, .. } if what.contains("operationPosition must be a positive integer")),
        "{err:?}"
    );
    assert_eq!(err.code(), "CUSTOM_ADAPTER_FAILED");
    let err = host.adapt("kafkaMessageAdapter", &message("{}", Some("not json")), &pk).unwrap_err();
    assert!(
        matches!(&err, CallError::Threw { message, .. } if message.contains("unexpected token")),
        "{err:?}"
    );
    assert_eq!(err.code(), "CUSTOM_ADAPTER_FAILED");
    let err = host
        .adapt(
            "kafkaMessageAdapter",
            &message("{}", Some(r#"{"event":"ROW_INSERT","row":{"name":"x"},"seq":1}"#)),
            &pk,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::BadResult { what, .. } if what.contains("customer_id")),
        "{err:?}"
    );
}

/// A client that never connects: strategies that do no look-up do not need a server.
async fn offline_db() -> mongodb::Database {
    let uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=10&connectTimeoutMS=10";
    mongodb::Client::with_uri_str(uri).await.unwrap().database("crm_db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_factory_is_called_once_and_its_function_gets_bson_as_js() {
    let host = host(
        FunctionKind::Strategy,
        r#"let made = 0
           module.exports = function (logger, databaseName) {
             made++
             return async (doc, mongoClient) => [{
               made, databaseName, db: mongoClient.db().databaseName, id: doc._id, at: doc.at instanceof Date,
               ms: doc.at.getTime(), n: doc.n, big: doc.big, nested: doc.nested, when: doc.at,
             }]
           }"#,
    );
    let id = mongodb::bson::oid::ObjectId::parse_str("65a0c0ffee00000000000001").unwrap();
    let document = doc! {
        "_id": id, "at": DateTime::from_millis(1_700_000_000_123), "n": 3_i32, "big": 1_i64 << 40,
        "nested": { "list": [1.5, "x", null] },
    };
    let db = offline_db().await;
    let first = host.strategy("f", "crm_db", &document, db.clone()).await.unwrap();
    let second = host.strategy("f", "crm_db", &document, db).await.unwrap();
    let expected = doc! {
        "made": 1_i64, "databaseName": "crm_db", "db": "crm_db", "id": "65a0c0ffee00000000000001",
        "at": true, "ms": 1_700_000_000_123_i64, "n": 3_i64, "big": 1_i64 << 40,
        "nested": { "list": [1.5, "x", null] }, "when": DateTime::from_millis(1_700_000_000_123),
    };
    assert_eq!(first, vec![expected.clone()]);
    assert_eq!(second, vec![expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_failures_have_strategy_codes() {
    let host = host(
        FunctionKind::Strategy,
        r#"module.exports = (logger, db) => async (doc, client) => {
             if (doc.k === 'loop') for (;;) {}
             if (doc.k === 'string') return 'C-1'
             if (doc.k === 'scalars') return [{ a: 1 }, 'C-1']
             if (doc.k === 'throw') throw new Error('nope')
             if (doc.k === 'lookup') return client.db().collection('c').findOne({})
             return [{ k: doc.k }]
           }"#,
    );
    let db = offline_db().await;
    let run = async |k: &str| host.strategy("f", "crm_db", &doc! { "k": k }, db.clone()).await;
    let err = run("loop").await.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    assert_eq!((err.code().as_str(), err.is_transient()), ("STRATEGY_TIMEOUT", true));
    assert_eq!(run("ok").await.unwrap(), vec![doc! { "k": "ok" }]);
    let err = run("string").await.unwrap_err();
    assert!(
        matches!(&err, CallError::BadResult { what, .. } if what.contains("array of identifiers")),
        "{err:?}"
    );
    let err = run("scalars").await.unwrap_err();
    assert!(
        matches!(&err, CallError::BadResult { what, .. } if what.contains("identifier 1 is a string")),
        "{err:?}"
    );
    let err = run("throw").await.unwrap_err();
    assert_eq!((err.code().as_str(), err.is_transient()), ("STRATEGY_FAILED", false));
    // No server answers: the look-up fails as a transient error even though the strategy's
    // own result would have been a bad one.
    let err = run("lookup").await.unwrap_err();
    assert!(matches!(&err, CallError::Lookup { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[test]
fn concurrent_casts_share_the_pool_and_per_call_overhead_is_small() {
    let host = cast_host("module.exports = (v, field) => typeof v === 'string' ? v.trim() : v");
    let calls = 5_000;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let host = host.clone();
            s.spawn(move || {
                for i in 0..calls {
                    let input = json!(format!("  {t}-{i} "));
                    assert_eq!(cast(&host, input).unwrap(), json!(format!("{t}-{i}")));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let single = Instant::now();
    for i in 0..calls {
        cast(&host, json!(i)).unwrap();
    }
    let single = single.elapsed();
    println!(
        "script cast overhead: {:.1} µs/call on one thread, {:.1} µs/call wall over 4 threads",
        single.as_secs_f64() * 1e6 / calls as f64,
        elapsed.as_secs_f64() * 1e6 / (4 * calls) as f64
    );
}

/// What a tracing subscriber printed.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn the_logger_and_console_forward_to_tracing_with_the_function_name() {
    let host = ScriptHost::from_sources(
        vec![(
            "toAge".into(),
            "age.js".into(),
            r#"module.exports = function (value, fieldName, logger) {
                 logger.info('casting', fieldName, { value })
                 logger.child({ x: 1 }).warn(new Error('careful'))
                 logger.trace('fine detail')
                 console.error('from console')
                 return value
               }"#
            .into(),
        )],
        FunctionKind::Cast,
        limits(),
    )
    .unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        host.cast("toAge", &json!(42), "age").unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.split_inclusive("function=").collect();
    assert_eq!(lines.len(), 4 + 1, "{text}");
    let expected = [
        ("INFO", "toAge", r#"casting age {"value":42}"#),
        ("WARN", "toAge", "Error: careful\n    at <anonymous> (age.js:3:"),
        ("TRACE", "toAge", "fine detail"),
        ("ERROR", "console", "from console"),
    ];
    // Each event ends with its function field; the next one starts after it.
    for (i, (level, function, message)) in expected.into_iter().enumerate() {
        assert!(lines[i].contains(level) && lines[i].contains(message), "{}", lines[i]);
        assert!(lines[i + 1].starts_with(&format!("\"{function}\"")), "{}", lines[i + 1]);
    }
}
