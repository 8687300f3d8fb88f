//! The body of every fuzz target (docs/fuzzing.md): what one input is, which entry point of
//! the engine or the operator it reaches, and the properties checked beyond "no panic". One
//! file, compiled twice: by the `rtu-fuzz` crate for `cargo +nightly fuzz` (fuzz_targets/*.rs
//! call these functions), and on stable by tests/fuzz_regressions.rs, which replays the seeds
//! and every kept crash through [`TARGETS`].
//!
//! Inputs:
//! - the adapters: a Kafka record, the key before the first NUL byte and the value after it
//!   (no NUL: the whole input is the value, the key is null; an empty part is null), run
//!   through every option set and primary key of [`Fixture`], and each change mapped to its
//!   MongoDB statements;
//! - `kafka_key` and `casts`: the bytes themselves, as JSON when they parse and as text;
//! - `engine_config`: an engine config file (YAML);
//! - `render`: a YAML stream of Kubernetes objects (`---` between them): a SystemOfRecord, a
//!   RealTimeUpdater, ConfigMaps and Secrets, as `kubectl apply -f` would take them.
// A violated property is a panic: that is how libFuzzer and the regression test see it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::ByteString;
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use serde_json::{Value, json};

use rtu_operator::api::{RealTimeUpdater, SecretKeyRef, SystemOfRecord};
use rtu_operator::config::{AdapterConfig, AdapterKind, EngineConfig, ProjectionConfig};
use rtu_operator::engine::adapter::{
    Adapted, Adapter, AdapterError, AuditCounter, AuditMode, ChangeEvent, CustomMapping, Debezium,
    DebeziumCounter, DebeziumFormat, DebeziumOptions, Iidr, IidrOptions, KafkaRecord, MAX_POSITION,
    Op, Pairing, PrimaryKey, Skip,
};
use rtu_operator::engine::cast::{
    Cast, CastError, format_iso, format_js_number, json_to_bson, parse_js_number,
};
use rtu_operator::engine::code::ErrorCode;
use rtu_operator::engine::encode::{self, EncodeError};
use rtu_operator::engine::outputs::json;
use rtu_operator::engine::projection::{Projection, Source, Statement, parse_kafka_key};
use rtu_operator::engine::script::{FunctionKind, KafkaMessage, Limits, ScriptHost};
use rtu_operator::operator::build;
use rtu_operator::operator::dereference::{self, Dereferenced};
use rtu_operator::operator::validate::{CONFIG_FILE, Settings, validate};
use rtu_operator::yaml;

/// A fuzz target: one input, checked; a panic is a finding.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz_targets/<name>.rs` and its seed directories.
pub const TARGETS: [(&str, Target); 9] = [
    ("adapter_debezium", adapter_debezium),
    ("adapter_iidr", adapter_iidr),
    ("adapter_golden_gate", adapter_golden_gate),
    ("adapter_custom", adapter_custom),
    ("adapter_script", adapter_script),
    ("kafka_key", kafka_key),
    ("casts", casts),
    ("engine_config", engine_config),
    ("render", render),
];

// ---------------------------------------------------------------------------------------------
// The adapters.

/// The Debezium adapter (`debezium`): envelopes and unwrapped rows, every stale-guard counter,
/// a hex placeholder and another added-fields prefix.
pub fn adapter_debezium(data: &[u8]) {
    run_adapters(Kind::Debezium, &fixture().debezium, record(data));
}

/// The IBM IIDR adapter (`basic` / `db2`): KCOP JSON, Avro unions on and off, audit records
/// detected, required or ignored, each audit counter; before and after images paired.
pub fn adapter_iidr(data: &[u8]) {
    run_adapters(Kind::Iidr, &fixture().iidr, record(data));
}

/// The Oracle GoldenGate adapter, `pos` as the counter or not; it never reads the key.
pub fn adapter_golden_gate(data: &[u8]) {
    let record = record(data);
    run_adapters(Kind::GoldenGate, &fixture().golden_gate, record);
    let keyless = KafkaRecord { key: None, value: record.value };
    for (adapters, pk) in fixture().golden_gate.iter().zip(&fixture().pks) {
        for adapter in adapters {
            assert_eq!(
                adapter.adapt(record, pk),
                adapter.adapt(keyless, pk),
                "GoldenGate read the Kafka key"
            );
        }
    }
}

/// The declarative `custom` adapter under three mappings (docs/formats.md#custom-custom).
pub fn adapter_custom(data: &[u8]) {
    run_adapters(Kind::Custom, &fixture().custom, record(data));
}

/// A JavaScript adapter (a fixed script, [`SCRIPT_ADAPTER`]) that parses key and value and
/// hands their parts back: the record crosses into QuickJS and its values come back; each
/// after-image value also goes through a JavaScript identity cast and must come back equal.
pub fn adapter_script(data: &[u8]) {
    let record = record(data);
    let scripts = scripts();
    let message = KafkaMessage {
        key: record.key,
        value: record.value,
        timestamp_ms: 1_700_000_000_000,
        offset: 100,
    };
    let f = fixture();
    for (i, pk) in f.pks.iter().enumerate() {
        let names: Vec<String> = pk.0.iter().map(|(field, _)| field.clone()).collect();
        match scripts.adapter.adapt("fuzzAdapter", &message, &names) {
            Ok(change) => {
                check_change(Kind::Script, &change, pk);
                check_mapping(&f.lenient[i], &change, record);
                check_mapping(&f.strict[i], &change, record);
                for (field, value) in change.after.iter().flatten() {
                    let back = scripts
                        .cast
                        .cast("fuzzIdentity", value, field)
                        .unwrap_or_else(|e| panic!("identity cast of {value} failed: {e}"));
                    assert!(
                        same_js_value(value, &back),
                        "a JavaScript identity cast changed {field:?}: {value} came back as {back}"
                    );
                }
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::CustomAdapterFailed, "{e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// The JavaScript adapter of [`adapter_script`]: the RTU v7 contract, fed from the message's
/// own fields (`row`, `before`, `op`, `seq`; a key object from the Kafka key or the row).
pub const SCRIPT_ADAPTER: &str = r#"'use strict'
module.exports = function fuzzAdapter(kafkaMessage, primaryKeys, logger) {
  const parse = (bytes) => (bytes === null ? null : JSON.parse(bytes.toString()))
  const key = parse(kafkaMessage.key)
  const message = parse(kafkaMessage.value)
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    return { keyObject: key, value: message }
  }
  const row = message.row === undefined ? message : message.row
  const keyObject = {}
  for (const field of primaryKeys) {
    const fromKey = key !== null && typeof key === 'object' ? key[field] : undefined
    keyObject[field] = fromKey !== undefined ? fromKey : (row || {})[field]
  }
  logger.debug({ keyObject }, 'adapting')
  return {
    keyObject,
    value: row,
    before: message.before,
    operation: message.op,
    operationPosition: message.seq,
    timestampDate: new Date(parseInt(kafkaMessage.timestamp, 10)),
    offset: parseInt(kafkaMessage.offset, 10),
  }
}
"#;

/// The JavaScript cast of [`adapter_script`]: the value itself.
pub const SCRIPT_CAST: &str =
    "module.exports = function fuzzIdentity(value, fieldName, logger) { return value }";

/// Which adapter produced a result: what it may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Debezium,
    Iidr,
    GoldenGate,
    Custom,
    Script,
}

impl Kind {
    fn of(config: &AdapterConfig) -> Kind {
        match config.kind {
            AdapterKind::Basic | AdapterKind::Db2 => Kind::Iidr,
            AdapterKind::GoldenGate => Kind::GoldenGate,
            AdapterKind::Debezium => Kind::Debezium,
            AdapterKind::Custom => Kind::Custom,
        }
    }

    /// The skips the format defines.
    fn skips(self) -> &'static [Skip] {
        match self {
            Kind::Debezium => &[
                Skip::Tombstone,
                Skip::Truncate,
                Skip::TransactionMarker,
                Skip::SchemaChange,
                Skip::Heartbeat,
            ],
            Kind::GoldenGate => &[Skip::Tombstone],
            Kind::Custom => &[Skip::NullValue],
            Kind::Iidr | Kind::Script => &[],
        }
    }
}

/// The key before the first NUL, the value after it; no NUL: all value (see the module doc).
pub fn record(data: &[u8]) -> KafkaRecord<'_> {
    fn some(part: &[u8]) -> Option<&[u8]> {
        (!part.is_empty()).then_some(part)
    }
    match data.iter().position(|b| *b == 0) {
        Some(nul) => KafkaRecord { key: some(&data[..nul]), value: some(&data[nul + 1..]) },
        None => KafkaRecord { key: None, value: some(data) },
    }
}

/// Every adapter of `adapters[pk]` on `record`, each result checked, each change mapped.
fn run_adapters(kind: Kind, adapters: &[Vec<Adapter>], record: KafkaRecord<'_>) {
    let f = fixture();
    for (i, per_pk) in adapters.iter().enumerate() {
        let pk = &f.pks[i];
        for adapter in per_pk {
            let result = adapter.adapt(record, pk);
            check_adapted(kind, &result, pk, record);
            match &result {
                Ok(Adapted::Change(change)) | Ok(Adapted::AfterImage { change, .. }) => {
                    check_mapping(&f.lenient[i], change, record);
                    check_mapping(&f.strict[i], change, record);
                }
                _ => {}
            }
            if kind == Kind::Iidr {
                check_pairing(result);
            }
        }
    }
}

/// What an adapter may return for `record` (docs/formats.md, docs/failures.md).
fn check_adapted(
    kind: Kind,
    result: &Result<Adapted, AdapterError>,
    pk: &PrimaryKey,
    record: KafkaRecord<'_>,
) {
    match result {
        Ok(Adapted::Change(change)) => check_change(kind, change, pk),
        Ok(Adapted::Skip(skip)) => {
            assert!(kind.skips().contains(skip), "{kind:?} returned the skip {skip:?}")
        }
        Ok(Adapted::BeforeImage(before)) => {
            assert_eq!(kind, Kind::Iidr, "only IIDR has before images");
            for (field, _) in &pk.0 {
                assert!(
                    before.image.get(field).is_some_and(|v| !v.is_null()),
                    "a before image without its primary-key field {field:?}"
                );
            }
        }
        Ok(Adapted::AfterImage { change, .. }) => {
            assert_eq!(kind, Kind::Iidr, "only IIDR has after images");
            assert_eq!(change.op, Op::Upsert, "an after image is an upsert");
            check_change(kind, change, pk);
        }
        Err(e) => check_adapter_error(kind, e, pk, record),
    }
}

/// A change carries every primary-key field, non-null and in order, an after image unless it
/// is a delete, and a position a Decimal128 counter holds.
fn check_change(kind: Kind, change: &ChangeEvent, pk: &PrimaryKey) {
    let fields: Vec<&str> = change.key.keys().map(String::as_str).collect();
    let expected: Vec<&str> = pk.0.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, expected, "the change's key is not the primary key: {change:?}");
    assert!(change.key.values().all(|v| !v.is_null()), "a null primary-key value: {change:?}");
    assert_eq!(
        change.op == Op::Delete,
        change.after.is_none(),
        "a delete has no after image and nothing else lacks one: {change:?}"
    );
    if let Some(position) = change.position {
        assert!(position <= MAX_POSITION, "position {position} beyond 34 digits");
        if matches!(kind, Kind::Custom | Kind::Script) {
            assert!(position > 0, "a custom position must be positive");
        }
    }
    match kind {
        Kind::Iidr => assert!(matches!(change.op, Op::Upsert | Op::Delete), "{change:?}"),
        Kind::GoldenGate => assert_ne!(change.op, Op::Upsert, "{change:?}"),
        _ => {}
    }
}

/// An adapter error starts with its code, names a primary-key field when it is about one,
/// and says where a value is not JSON.
fn check_adapter_error(kind: Kind, e: &AdapterError, pk: &PrimaryKey, record: KafkaRecord<'_>) {
    let text = e.to_string();
    let code = e.code().as_str();
    assert!(text.starts_with(&format!("{code}: ")), "{text:?} does not start with {code}");
    let is_pk = |field: &str| pk.0.iter().any(|(f, _)| f == field);
    match e {
        AdapterError::MissingPrimaryKey { field, .. } | AdapterError::CastFailed { field, .. } => {
            assert!(is_pk(field), "{text}: {field:?} is not a primary-key field")
        }
        AdapterError::KeyMismatch { field, in_key, in_value } => {
            assert!(is_pk(field), "{text}: {field:?} is not a primary-key field");
            assert_ne!(in_key, in_value, "{text}: a mismatch of equal values");
        }
        AdapterError::MalformedKey(reason) | AdapterError::MalformedValue(reason) => {
            assert!(!reason.is_empty(), "{text}: no reason");
            if reason.starts_with("not JSON") {
                assert!(
                    reason.contains("line ") && reason.contains("column "),
                    "{text}: a JSON error without its position"
                );
            }
            if matches!(e, AdapterError::MalformedKey(_)) {
                assert!(record.key.is_some(), "{text}: a null key cannot be malformed");
            }
        }
        AdapterError::UnknownOperation(what) => assert!(!what.is_empty(), "{text}"),
        AdapterError::CustomAdapterFailed(rule) => {
            assert_eq!(kind, Kind::Custom, "{text}");
            assert!(!rule.is_empty(), "{text}");
        }
    }
}

/// What the engine does with IIDR results: before and after images never leave the pairing.
fn check_pairing(result: Result<Adapted, AdapterError>) {
    let Ok(adapted) = result else { return };
    let before = matches!(adapted, Adapted::BeforeImage(_));
    let mut pairing = Pairing::default();
    for offset in [1, 2] {
        let paired = pairing.pair("fuzz.topic", 0, offset, adapted.clone());
        assert!(
            matches!(paired.adapted, Adapted::Change(_) | Adapted::Skip(_)),
            "pairing left {:?}",
            paired.adapted
        );
        let orphan = (before && offset == 2).then_some(1);
        assert_eq!(paired.orphan, orphan, "a before image followed by a before image");
    }
    assert_eq!(pairing.waiting().count(), usize::from(before));
}

/// A change becomes statements or a message error; every statement filters on the primary
/// key and encodes as the driver's own encoder would.
fn check_mapping(projection: &Projection, change: &ChangeEvent, record: KafkaRecord<'_>) {
    let source = Source {
        topic: "fuzz.topic".to_string(),
        partition: 0,
        offset: 100,
        timestamp_ms: 1_700_000_000_000,
        key: parse_kafka_key(record.key),
    };
    let mapped = match projection.map(change, &source, DateTime::from_millis(1_700_000_000_042)) {
        Ok(mapped) => mapped,
        Err(e) => {
            let code = e.code();
            assert!(
                matches!(
                    code,
                    ErrorCode::CastFailed
                        | ErrorCode::MissingPrimaryKey
                        | ErrorCode::ValidationFailed
                        | ErrorCode::MalformedValue
                ),
                "mapping failed with {code:?}: {e}"
            );
            assert!(e.to_string().starts_with(code.as_str()), "{e}");
            return;
        }
    };
    let count = mapped.statements.len();
    assert!((1..=2).contains(&count), "{count} statements for one change");
    if change.op == Op::Delete {
        assert_eq!(count, 1, "a delete is one statement");
    }
    let targets = projection.primary_key_targets();
    for statement in &mapped.statements {
        let filter = match statement.plain() {
            Statement::Upsert { filter, update } => {
                let update = update.to_document().expect("an encoded update that does not decode");
                assert_eq!(
                    bson::to_vec(&update).expect("the driver cannot encode the update"),
                    encode::to_raw(&update).expect("re-encoding the update").as_bytes(),
                );
                filter
            }
            Statement::Delete { filter } => filter,
            Statement::Checked(_) => panic!("plain() returned a checked statement"),
        };
        for target in &targets {
            assert!(filter.contains_key(target), "filter {filter} lacks {target:?}");
        }
        same_encoding(filter);
    }
}

// ---------------------------------------------------------------------------------------------
// The key parser and the casts.

/// The parser of `__internal__kafkaInfo.key`: JSON when the key parses, else its UTF-8 text,
/// else null; stored and announced without loss (event JSON, BSON encoding).
pub fn kafka_key(data: &[u8]) {
    let key = parse_kafka_key(Some(data));
    match serde_json::from_slice::<Value>(data) {
        Ok(v) => {
            assert_eq!(key, json_to_bson(&v));
            let back = json::to_json(&key);
            assert!(same_js_value(&v, &back), "key {v} is announced as {back}");
        }
        Err(_) => match std::str::from_utf8(data) {
            Ok(text) => assert_eq!(key, Bson::String(text.to_string())),
            Err(_) => assert_eq!(key, Bson::Null),
        },
    }
    check_bson_out(&key);
}

/// Every built-in cast on the input as JSON (when it parses) and as a string; the input also
/// as a cast id and as a JavaScript number.
pub fn casts(data: &[u8]) {
    let text = std::str::from_utf8(data).ok();
    if let Some(id) = text {
        check_cast_id(id);
        check_js_number(id);
    }
    if let Ok(bytes) = <[u8; 8]>::try_from(data) {
        let f = f64::from_le_bytes(bytes);
        if f.is_finite() {
            assert_eq!(parse_js_number(&format_js_number(f)), Some(f), "{f:e} printed");
        }
    }
    let mut inputs = Vec::new();
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        inputs.push(value);
    }
    inputs.push(Value::String(String::from_utf8_lossy(data).into_owned()));
    for value in &inputs {
        for cast in &fixture().casts {
            check_cast(*cast, value);
        }
    }
}

fn check_cast_id(id: &str) {
    match id.parse::<Cast>() {
        Ok(cast) => assert_eq!(cast.to_string().parse::<Cast>(), Ok(cast), "{id:?}"),
        Err(CastError::UnknownId { id: named }) => assert_eq!(named, id),
        Err(e) => panic!("parsing {id:?} gave {e}"),
    }
}

fn check_js_number(text: &str) {
    if let Some(f) = parse_js_number(text).filter(|f| f.is_finite()) {
        let printed = format_js_number(f);
        assert_eq!(parse_js_number(&printed), Some(f), "{text:?} is {f:e}, printed {printed:?}");
    }
}

/// 8.64e15 ms: the ECMAScript date range, which the date casts keep to.
const MAX_EPOCH_MS: i64 = 8_640_000_000_000_000;

/// One cast: a refusal names the cast and a short input; a result has the cast's type, casts
/// again to itself where the cast is idempotent, and encodes.
fn check_cast(cast: Cast, value: &Value) {
    let out = match cast.apply(value) {
        Ok(out) => out,
        Err(CastError::Refused { cast: refused, input, reason }) => {
            assert_eq!(refused, cast);
            assert!(input.chars().count() <= 65, "preview of {} chars", input.chars().count());
            assert!(!reason.is_empty());
            assert!(!value.is_null(), "null refused by {cast}");
            return;
        }
        Err(e) => panic!("{cast}({value}) gave {e}"),
    };
    let again = |input: Value| cast.apply(&input);
    let date_in_range = |d: &DateTime| d.timestamp_millis().abs() <= MAX_EPOCH_MS;
    match (cast, &out) {
        (_, Bson::Null) => {}
        (Cast::Identity, out) => assert_eq!(out, &json_to_bson(value)),
        (Cast::ToString, Bson::String(s)) => {
            assert_eq!(again(Value::String(s.clone())), Ok(out.clone()))
        }
        (Cast::ToInteger, Bson::Int64(i)) => assert_eq!(again(json!(i)), Ok(out.clone())),
        (Cast::ToFloat, Bson::Double(f)) => {
            assert!(f.is_finite(), "{cast}({value}) is {f}");
            assert_eq!(again(json!(f)), Ok(out.clone()));
        }
        // The date parser reads four-digit years (docs/writes.md#cast-functions): the
        // expanded years printed outside 0..=9999 (`-026550-02-19T08:00:00.000Z`) do not read
        // back.
        (Cast::UnixTimestampToIsoString, Bson::String(s)) if !s.starts_with(['+', '-']) => {
            let date = Cast::ToDate.apply(&Value::String(s.clone()));
            let Ok(Bson::DateTime(d)) = date else { panic!("{s:?} is not a date: {date:?}") };
            assert_eq!(&format_iso(d.timestamp_millis()), s);
        }
        (Cast::UnixTimestampToIsoString, Bson::String(_)) => {}
        (Cast::StringToBoolean, Bson::Boolean(_)) => {}
        (Cast::ToDate, Bson::DateTime(d)) => {
            assert!(date_in_range(d), "{cast}({value}) is {d}");
            let printed = format_iso(d.timestamp_millis());
            if !printed.starts_with(['+', '-']) {
                assert_eq!(again(Value::String(printed.clone())), Ok(out.clone()), "{printed}");
            }
        }
        (Cast::ToObject, Bson::Document(_)) => {}
        (Cast::ToArrayOfObject, Bson::Array(items)) => {
            assert!(items.iter().all(|i| matches!(i, Bson::Document(_))), "{out}")
        }
        (Cast::ToDecimal128 | Cast::DebeziumDecimal(_), Bson::Decimal128(_)) => {}
        (Cast::DebeziumVariableScaleDecimal, Bson::Decimal128(_)) => {}
        (
            Cast::DebeziumDate | Cast::DebeziumTimestamp(_) | Cast::DebeziumZonedTimestamp,
            Bson::DateTime(d),
        ) => assert!(date_in_range(d), "{cast}({value}) is {d}"),
        (Cast::DebeziumTime(_) | Cast::DebeziumZonedTime, Bson::String(_)) => {}
        (Cast::DebeziumBits, Bson::Int64(i)) => assert!(*i >= 0, "{cast}({value}) is {i}"),
        (Cast::DebeziumBits, Bson::Decimal128(_)) => {}
        (Cast::DebeziumJson, _) => {}
        (cast, out) => panic!("{cast}({value}) gave {out:?}, not its type"),
    }
    check_bson_out(&out);
}

// ---------------------------------------------------------------------------------------------
// The engine config loader.

/// The fields of an engine config: every error and warning path starts with one of them.
const CONFIG_FIELDS: [&str; 12] = [
    "systemOfRecord",
    "name",
    "kafka",
    "mongodb",
    "adapter",
    "projections",
    "writes",
    "errorPolicy",
    "tuning",
    "telemetry",
    "outputs",
    "functions",
];

/// `rtu engine --config` / `rtu check` on a file: the parse (errors with a field path and a
/// line) and the rules (each error with a field path); a usable config survives the round
/// trip the operator makes it take (YAML out, YAML in), and its projections and adapters
/// build and take the fixed records of [`FIXED_RECORDS`].
pub fn engine_config(data: &[u8]) {
    // `EngineConfig::load` reads the file as UTF-8 (anything else is a read error), then
    // parses and validates the text as below.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = match yaml::from_str::<EngineConfig>(text) {
        Ok(config) => config,
        Err(e) => {
            // An unknown field named `` is the one path that prints empty.
            let empty_key = e.message.starts_with("unknown field ``");
            assert!(!e.path.is_empty() || empty_key, "a parse error without a path: {e}");
            assert!(!e.message.is_empty(), "a parse error without a message: {e}");
            assert!(e.line.is_none_or(|l| l >= 1), "line {:?}", e.line);
            return;
        }
    };
    let errors = config.validate();
    for e in &errors {
        check_config_path(&e.path);
        assert!(!e.message.is_empty(), "{e}");
    }
    for w in config.warnings() {
        check_config_path(&w.path);
    }
    assert!(!config.adapter.describe().is_empty());
    if errors.is_empty() {
        check_usable(&config);
    }
}

fn check_config_path(path: &str) {
    let head = path.split(['.', '[']).next().unwrap_or_default();
    assert!(CONFIG_FIELDS.contains(&head), "error path {path:?} is not a config field path");
}

/// A validated config: the YAML round trip, then what the engine builds at start.
fn check_usable(config: &EngineConfig) {
    let text = yaml::to_string(config).expect("a valid config does not serialize");
    let again: EngineConfig = yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("the config's own YAML does not load: {e}\n{text}"));
    assert_eq!(&again, config, "the YAML round trip changed the config:\n{text}");
    let writes = &config.writes;
    for p in &config.projections {
        let projection = match Projection::new(p, writes) {
            Ok(projection) => projection,
            Err(e) => {
                // Only a JavaScript cast needs the functions loaded.
                assert!(!config.functions.files.is_empty(), "projection {:?}: {e}", p.name);
                continue;
            }
        };
        let adapter_config = p.adapter.as_ref().unwrap_or(&config.adapter);
        let Some(adapter) = built_adapter(adapter_config, p) else { continue };
        let pk = projection.adapter_key();
        for (key, value) in FIXED_RECORDS {
            let record =
                KafkaRecord { key: key.map(str::as_bytes), value: value.map(str::as_bytes) };
            let result = adapter.adapt(record, &pk);
            check_adapted(Kind::of(adapter_config), &result, &pk, record);
            if let Ok(Adapted::Change(change) | Adapted::AfterImage { change, .. }) = &result {
                check_mapping(&projection, change, record);
            }
        }
    }
}

/// The built-in adapter the engine's start-up builds for a projection (`None`: a JavaScript
/// adapter).
fn built_adapter(config: &AdapterConfig, p: &ProjectionConfig) -> Option<Adapter> {
    let mapped: Vec<String> = p.fields.iter().map(|f| f.name.clone()).collect();
    Some(match config.kind {
        AdapterKind::Basic | AdapterKind::Db2 => {
            Adapter::Basic(Iidr::new(config.iidr.clone(), &mapped))
        }
        AdapterKind::GoldenGate => {
            Adapter::GoldenGate { use_pos_as_counter: config.use_pos_as_counter }
        }
        AdapterKind::Debezium => Adapter::Debezium(Debezium::new(config.debezium.clone(), mapped)),
        AdapterKind::Custom if config.function.is_some() => return None,
        AdapterKind::Custom => Adapter::Custom(
            config.custom.clone().expect("validate lets a custom adapter without mapping through"),
        ),
    })
}

/// docs/vectors.md's worked examples B1, G1, D1, C1 and a delete, in every format.
const FIXED_RECORDS: [(Option<&str>, Option<&str>); 5] = [
    (
        Some(r#"{"customer_id":"C-1"}"#),
        Some(
            r#"{"customer_id":"C-1","name":"Ada","age":"36","signup_at":"2023-01-15","vip":"true","shoe_size":44}"#,
        ),
    ),
    (
        None,
        Some(
            r#"{"table":"CRM.CUSTOMERS","op_type":"I","op_ts":"2023-11-14 22:13:19.000000","pos":"00000000020000001000","after":{"customer_id":"C-1","name":"Ada","age":36}}"#,
        ),
    ),
    (
        Some(r#"{"customer_id":"C-1"}"#),
        Some(
            r#"{"before":null,"after":{"customer_id":"C-1","name":"Ada","age":36},"source":{"ts_ms":1700000000000,"lsn":33,"scn":"77"},"op":"c","ts_ms":1700000000000}"#,
        ),
    ),
    (None, Some(r#"{"event":"ROW_UPSERT","row":{"customer_id":"C-1","name":"Ada"},"seq":88123}"#)),
    (Some(r#"{"customer_id":"C-1"}"#), None),
];

// ---------------------------------------------------------------------------------------------
// The operator's rendering.

/// The operator's validate → render → build on a RealTimeUpdater and what it references.
/// Referenced Secret keys missing from the input are filled with values that must never show
/// in a ConfigMap or a manifest; a rendered config re-loads through the engine's loader as
/// itself and passes its rules; a refusal names a field path.
pub fn render(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(objects) = Objects::parse(text) else { return };
    let Some(rtu) = objects.rtu else { return };
    let sor = objects.sor.filter(|s| {
        s.metadata.name.as_deref() == Some(rtu.spec.system_of_record_ref.name.as_str())
    });
    let mut secrets = objects.secrets;
    let mut filled = Vec::new();
    let refs: Vec<SecretKeyRef> =
        sor.iter().flat_map(|s| dereference::secret_refs(s).into_iter().cloned()).collect();
    for r in refs {
        let data = secrets.entry(r.name.clone()).or_default();
        if !data.contains_key(&r.key) {
            let value = format!("Zq7x-{}-{}-9KwS", r.name, r.key);
            data.insert(r.key.clone(), ByteString(value.clone().into_bytes()));
            filled.push(value);
        }
    }
    let refs = Dereferenced {
        sor,
        secrets,
        config_maps: objects.config_maps,
        siblings: vec![rtu.clone()],
    };
    let settings = Settings { worker_image: "registry.example/rtu:fuzz".to_string() };
    let validated = match validate(&rtu, &refs, &settings) {
        Ok(validated) => validated,
        Err(invalid) => {
            assert!(!invalid.0.is_empty(), "refused without a reason");
            for e in &invalid.0 {
                assert!(!e.path.is_empty() && !e.message.is_empty(), "{e}");
            }
            return;
        }
    };
    let rendered = validated.files.get(CONFIG_FILE).expect("no config.yaml rendered");
    let loaded: EngineConfig = yaml::from_str(rendered)
        .unwrap_or_else(|e| panic!("the rendered config does not load: {e}\n{rendered}"));
    assert_eq!(loaded, validated.engine, "the rendered config loads as another:\n{rendered}");
    let errors = loaded.validate();
    assert!(errors.is_empty(), "the rendered config breaks rules: {errors:?}\n{rendered}");
    let hash = &validated.config_hash;
    assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "hash {hash:?}");
    let children = build::build(&validated);
    assert_eq!(children.config_map.data.as_ref(), Some(&validated.files));
    let manifests = [
        serde_json::to_string(&children.config_map),
        serde_json::to_string(&children.deployment),
        serde_json::to_string(&children.service),
        serde_json::to_string(&children.pdb),
    ]
    .map(|m| m.expect("a child does not serialize"));
    for value in filled.iter().filter(|v| !text.contains(v.as_str())) {
        for shown in validated.files.values().chain(&manifests) {
            assert!(!shown.contains(value.as_str()), "Secret value {value:?} rendered: {shown}");
        }
    }
    if loaded.functions.files.is_empty() {
        for p in &loaded.projections {
            Projection::new(p, &loaded.writes)
                .unwrap_or_else(|e| panic!("rendered projection {:?}: {e}", p.name));
        }
    }
}

/// The Kubernetes objects of one `render` input.
#[derive(Default)]
struct Objects {
    sor: Option<SystemOfRecord>,
    rtu: Option<RealTimeUpdater>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, ByteString>>,
}

impl Objects {
    /// The documents of a YAML stream; `None` when one is not an object the API server
    /// would hand over (the CRD types refuse it, as kube's deserializer would).
    fn parse(text: &str) -> Option<Objects> {
        let mut objects = Objects::default();
        let mut document = String::new();
        let mut documents = Vec::new();
        for line in text.lines() {
            if line.trim_end() == "---" {
                documents.push(std::mem::take(&mut document));
            } else {
                document.push_str(line);
                document.push('\n');
            }
        }
        documents.push(document);
        for document in documents.iter().filter(|d| !d.trim().is_empty()) {
            let Value::Object(mut object) = yaml::from_str::<Value>(document).ok()? else {
                return None;
            };
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            let metadata = object.entry("metadata").or_insert_with(|| json!({}));
            let metadata = metadata.as_object_mut()?;
            let name = match kind.as_str() {
                "SystemOfRecord" => "crm",
                "RealTimeUpdater" => "customers",
                _ => "fuzz",
            };
            metadata.entry("name").or_insert_with(|| json!(name));
            metadata.entry("namespace").or_insert_with(|| json!("acme"));
            metadata.entry("uid").or_insert_with(|| json!(format!("uid-{kind}")));
            metadata.entry("creationTimestamp").or_insert_with(|| json!("2025-01-01T00:00:00Z"));
            let name = metadata.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let value = Value::Object(object);
            match kind.as_str() {
                "SystemOfRecord" => objects.sor = Some(serde_json::from_value(value).ok()?),
                "RealTimeUpdater" => objects.rtu = Some(serde_json::from_value(value).ok()?),
                "ConfigMap" => {
                    let data = value.get("data").cloned().unwrap_or_else(|| json!({}));
                    objects.config_maps.insert(name, serde_json::from_value(data).ok()?);
                }
                "Secret" => {
                    let data = value.get("stringData").cloned().unwrap_or_else(|| json!({}));
                    let data: BTreeMap<String, String> = serde_json::from_value(data).ok()?;
                    let data = data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes())));
                    objects.secrets.insert(name, data.collect());
                }
                _ => {}
            }
        }
        Some(objects)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks.

/// `doc` encodes (unless a key holds a NUL byte, which the encoder refuses) to exactly the
/// bytes of the driver's own encoder.
fn same_encoding(doc: &Document) {
    match encode::to_raw(doc) {
        Ok(raw) => {
            let driver = bson::to_vec(doc)
                .unwrap_or_else(|e| panic!("the driver cannot encode what we encoded: {e}"));
            assert_eq!(raw.as_bytes(), driver.as_slice(), "encodings of {doc} differ");
        }
        Err(EncodeError::NulInKey(key)) => assert!(key.contains('\0'), "{key:?}"),
        Err(e) => panic!("cannot encode {doc}: {e}"),
    }
}

/// A value the engine stores or announces: BSON as the driver writes it, and event JSON
/// written straight to bytes as the tree would print.
fn check_bson_out(value: &Bson) {
    same_encoding(&doc! { "v": value.clone() });
    let mut written = Vec::new();
    json::write_value(value, &mut written).expect("event JSON cannot be written");
    let tree = serde_json::to_vec(&json::to_json(value)).expect("event JSON tree");
    assert_eq!(written, tree, "event JSON of {value} differs from its tree");
}

/// Equal as JavaScript sees JSON: numbers by their double value, objects by their entries
/// in any order (JavaScript puts integer-like keys first).
fn same_js_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_js_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_js_value(v, w)))
        }
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures, built once per process.

/// The primary keys every adapter input is read with: docs/vectors.md's, and those of the
/// adapters' own tests (IIDR's `ID`, an integer `id`).
const PRIMARY_KEYS: [(&str, &str); 3] =
    [("customer_id", "castToString"), ("ID", "castToString"), ("id", "castToInteger")];

/// The other fields of the fuzz projection: one per built-in cast family (name, type, cast).
const FIELDS: [(&str, &str, &str); 14] = [
    ("customer_id", "String", "castToString"),
    ("name", "String", "defaultCastToString"),
    ("age", "Number", "castToInteger"),
    ("signup_at", "Date", "castToDate"),
    ("vip", "Boolean", "castStringToBoolean"),
    ("total", "Number", "castToFloat"),
    ("amount", "Number", "castToDecimal128"),
    ("payload", "Object", "castToObject"),
    ("items", "Array of object", "castToArrayOfObject"),
    ("updated_at", "String", "castUnixTimestampToISOString"),
    ("day", "Date", "castDebeziumDate"),
    ("price", "Number", "castDebeziumDecimal(2)"),
    ("C2", "String", "identity"),
    ("A_USER", "String", "identity"),
];

/// What the targets share: primary keys, projections, adapters and casts.
struct Fixture {
    pks: Vec<PrimaryKey>,
    /// Per primary key: the default writes (upsert, soft delete, lenient).
    lenient: Vec<Projection>,
    /// Per primary key: upsert off (so hard deletes and checks), strict, `name` required.
    strict: Vec<Projection>,
    /// Per primary key: the adapters of each format.
    debezium: Vec<Vec<Adapter>>,
    iidr: Vec<Vec<Adapter>>,
    golden_gate: Vec<Vec<Adapter>>,
    custom: Vec<Vec<Adapter>>,
    /// Every built-in cast (a few decimal scales).
    casts: Vec<Cast>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let configs: Vec<[ProjectionConfig; 2]> = PRIMARY_KEYS
            .iter()
            .map(|pk| [projection_config(pk, false), projection_config(pk, true)])
            .collect();
        let build = |config: &ProjectionConfig, strict: bool| {
            let writes = match strict {
                false => json!({}),
                true => json!({"upsert": false, "validation": "strict"}),
            };
            Projection::new(config, &serde_json::from_value(writes).unwrap()).unwrap()
        };
        let lenient: Vec<Projection> = configs.iter().map(|[c, _]| build(c, false)).collect();
        let strict: Vec<Projection> = configs.iter().map(|[_, c]| build(c, true)).collect();
        let mapped = |i: usize| -> Vec<String> {
            configs[i][0].fields.iter().map(|f| f.name.clone()).collect()
        };
        let per_pk = |make: &dyn Fn(Vec<String>) -> Vec<Adapter>| -> Vec<Vec<Adapter>> {
            (0..PRIMARY_KEYS.len()).map(|i| make(mapped(i))).collect()
        };
        Fixture {
            pks: lenient.iter().map(Projection::adapter_key).collect(),
            debezium: per_pk(&debezium_adapters),
            iidr: per_pk(&iidr_adapters),
            golden_gate: per_pk(&|_| {
                [true, false]
                    .map(|use_pos_as_counter| Adapter::GoldenGate { use_pos_as_counter })
                    .into()
            }),
            custom: per_pk(&|_| custom_adapters()),
            casts: all_casts(),
            lenient,
            strict,
        }
    })
}

fn projection_config(pk: &(&str, &str), strict: bool) -> ProjectionConfig {
    let mut fields =
        vec![json!({"name": pk.0, "type": "String", "cast": pk.1, "primaryKey": true})];
    for (name, kind, cast) in FIELDS.iter().filter(|(name, ..)| *name != pk.0) {
        let mut field = json!({"name": name, "type": kind, "cast": cast, "nullable": true});
        if *name == "name" {
            field["target"] = json!("fullName");
            field["required"] = json!(strict);
        }
        fields.push(field);
    }
    serde_json::from_value(json!({
        "name": "pr_fuzz", "topics": ["fuzz.topic"], "fields": fields
    }))
    .unwrap()
}

fn debezium_adapters(mapped: Vec<String>) -> Vec<Adapter> {
    let counters = [
        DebeziumCounter::Offset,
        DebeziumCounter::SourceTimestamp,
        DebeziumCounter::Lsn,
        DebeziumCounter::Scn,
    ];
    let mut options: Vec<DebeziumOptions> = [DebeziumFormat::Envelope, DebeziumFormat::Unwrapped]
        .into_iter()
        .flat_map(|format| {
            counters.map(|counter| DebeziumOptions {
                format,
                counter,
                ..DebeziumOptions::default()
            })
        })
        .collect();
    options.push(DebeziumOptions {
        unavailable_value_placeholder: "hex:5f5f756e617661696c61626c65".to_string(),
        ..DebeziumOptions::default()
    });
    options.push(DebeziumOptions {
        format: DebeziumFormat::Unwrapped,
        added_fields_prefix: "_".to_string(),
        ..DebeziumOptions::default()
    });
    options.into_iter().map(|o| Adapter::Debezium(Debezium::new(o, mapped.clone()))).collect()
}

fn iidr_adapters(mapped: Vec<String>) -> Vec<Adapter> {
    let with =
        |avro_unions, audit, audit_counter| IidrOptions { avro_unions, audit, audit_counter };
    [
        IidrOptions::default(),
        with(false, AuditMode::Detect, AuditCounter::Offset),
        with(true, AuditMode::Detect, AuditCounter::Ccid),
        with(true, AuditMode::Detect, AuditCounter::Timestamp),
        with(true, AuditMode::Always, AuditCounter::Ccid),
        with(true, AuditMode::Never, AuditCounter::Offset),
    ]
    .into_iter()
    .map(|o| Adapter::Basic(Iidr::new(o, &mapped)))
    .collect()
}

/// docs/formats.md#custom-custom's mapping, a flat one keyed by the Kafka key, and one with
/// nested pointers keyed by the before image.
fn custom_adapters() -> Vec<Adapter> {
    let mappings = [
        json!({
            "operation": { "pointer": "/event", "values": {
                "ROW_INSERT": "insert", "ROW_UPSERT": "upsert", "ROW_UPDATE": "update",
                "ROW_DELETE": "delete" } },
            "after": "/row", "before": "/old_row", "key": "after", "position": "/seq",
            "nullValue": "delete",
        }),
        json!({
            "operation": { "pointer": "/op", "values": {
                "I": "insert", "U": "update", "D": "delete", "R": "upsert" } },
            "after": "", "key": "kafkaKey", "nullValue": "skip",
        }),
        json!({
            "operation": { "pointer": "/meta/op", "values": { "c": "insert", "d": "delete" } },
            "after": "/data/after", "before": "/data/before", "key": "before",
            "position": "/meta/pos", "nullValue": "error",
        }),
    ];
    mappings
        .into_iter()
        .map(|m| Adapter::Custom(serde_json::from_value::<CustomMapping>(m).unwrap()))
        .collect()
}

fn all_casts() -> Vec<Cast> {
    let mut casts: Vec<Cast> = Vec::new();
    let ids = Cast::all_ids().into_iter().filter(|id| !id.contains("SCALE")).map(String::from);
    let scales = [0, 2, -2, 10, 6176, -6111].map(|s| format!("castDebeziumDecimal({s})"));
    for id in ids.chain(scales) {
        let cast = id.parse::<Cast>().unwrap();
        if !casts.contains(&cast) {
            casts.push(cast);
        }
    }
    casts
}

/// The JavaScript functions of [`adapter_script`], loaded once.
struct Scripts {
    adapter: ScriptHost,
    cast: ScriptHost,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let limits = Limits { time: Duration::from_secs(5), memory_bytes: 64 << 20 };
        let load = |name: &str, text: &str, kind| {
            let source = (name.to_string(), format!("{name}.js"), text.to_string());
            ScriptHost::from_sources(vec![source], kind, limits).unwrap()
        };
        Scripts {
            adapter: load("fuzzAdapter", SCRIPT_ADAPTER, FunctionKind::Adapter),
            cast: load("fuzzIdentity", SCRIPT_CAST, FunctionKind::Cast),
        }
    })
}
