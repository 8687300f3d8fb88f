//! `EngineConfig`: the one typed file the operator renders into a ConfigMap and every worker's
//! engine reads back (`rtu engine --config FILE`, `rtu check --config FILE`). Structure errors
//! come from the parser with their field path; [`EngineConfig::validate`] then lists every
//! rule the structure alone cannot express, each with its field path and what would be valid.

mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::adapter::{CustomMapping, DebeziumOptions, IidrOptions};
use crate::yaml::{self, YamlError};

pub use validate::{ConfigError, ConfigWarning};

/// Everything one engine process needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// The System of Record's name (the `source` of pr-update events), e.g. `crm`.
    pub system_of_record: String,
    /// The Real-Time Updater this worker belongs to (logs, the `rtu-dlq-rtu` dead-letter header);
    /// the consumer group when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// How to reach Kafka and consume the ingestion topics.
    pub kafka: KafkaConfig,
    /// Where the projections live.
    pub mongodb: MongoConfig,
    /// The message format of the System of Record.
    pub adapter: AdapterConfig,
    /// The projections this worker writes.
    pub projections: Vec<ProjectionConfig>,
    /// How changes become writes.
    #[serde(default)]
    pub writes: WritesConfig,
    /// What happens to a message that cannot be processed.
    #[serde(default)]
    pub error_policy: ErrorPolicy,
    /// Batching and timing.
    #[serde(default)]
    pub tuning: Tuning,
    /// Health, metrics and logs.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What the worker announces after each applied write (docs/outputs.md); nothing when absent.
    #[serde(default)]
    pub outputs: Outputs,
    /// Users' JavaScript functions (custom casts, adapter, strategies), run sandboxed.
    #[serde(default)]
    pub functions: Functions,
}

/// The outputs of applied writes (docs/outputs.md). Each is off unless configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outputs {
    /// pr-update events on Kafka (docs/outputs.md#pr-update-events), for the projections listed.
    #[serde(default)]
    pub projection_updates: Option<ProjectionUpdates>,
    /// Projection-change documents in MongoDB (docs/outputs.md#projection-changes), from the strategies' results.
    #[serde(default)]
    pub projection_changes: Option<ProjectionChanges>,
    /// sv-trigger messages on Kafka (docs/outputs.md#sv-trigger-events), from the strategies' results.
    #[serde(default)]
    pub single_view_trigger: Option<SingleViewTrigger>,
    /// How a changed projection becomes the identifiers of the single views to rebuild
    /// (docs/outputs.md#strategies); used by projection changes and sv-trigger.
    #[serde(default)]
    pub strategies: Strategies,
}

/// pr-update events (docs/outputs.md#pr-update-events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectionUpdates {
    /// Projection name -> the topic its events go to; projections not listed emit none.
    pub topics: BTreeMap<String, String>,
    /// Compression of the produced events.
    #[serde(default)]
    pub compression: Compression,
    /// The event format: `v1` (the documented RTU's, v1.0.0) or `v2` (the Projection Storer's,
    /// v2.0.0, with the message's origin in a `context` header).
    #[serde(default, skip_serializing_if = "PrUpdateFormat::is_v1")]
    pub format: PrUpdateFormat,
}

/// The format of pr-update events (docs/outputs.md#pr-update-events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PrUpdateFormat {
    /// v1.0.0: `operationType`, `documentId`, `__internal__kafkaInfo`, ... in the value.
    #[default]
    V1,
    /// v2.0.0: `operation`, `storageNamespace`, ... in the value, origin in `context`.
    V2,
}

impl PrUpdateFormat {
    fn is_v1(&self) -> bool {
        *self == PrUpdateFormat::V1
    }
}

/// Compression of produced events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// librdkafka's `compression.type` value.
    pub fn librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Projection changes in MongoDB (docs/outputs.md#projection-changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectionChanges {
    /// The collection, by convention `fd-pc-<system of record>`.
    pub collection: String,
}

/// sv-trigger messages (docs/outputs.md#sv-trigger-events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SingleViewTrigger {
    /// The topic; `{singleView}` is replaced by the single view's name, e.g.
    /// `acme.dev.crm.{singleView}.sv-trigger`.
    pub topic: String,
}

/// Strategies (docs/outputs.md#strategies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategies {
    /// The automatic (low-code) strategy: the ER schema walked from the changed projection.
    #[serde(default)]
    pub automatic: Option<AutomaticStrategies>,
    /// Custom strategies: projection name -> single view -> the name of a JavaScript function
    /// in `functions.files` (`__fromFile__[name]` accepted too).
    #[serde(default)]
    pub custom: BTreeMap<String, BTreeMap<String, String>>,
    /// Longest run of one strategy for one batch, in ms; beyond it the batch is retried, and
    /// after 3 attempts the strategy runs message by message: a message that still runs past
    /// it alone is a `STRATEGY_TIMEOUT` message error (handled by `errorPolicy`).
    #[serde(default = "Strategies::default_max_exec_time_ms")]
    pub max_exec_time_ms: u32,
}

impl Strategies {
    fn default_max_exec_time_ms() -> u32 {
        5000
    }

    /// Whether any strategy is configured.
    pub fn any(&self) -> bool {
        self.automatic.is_some() || !self.custom.is_empty()
    }
}

impl Default for Strategies {
    fn default() -> Self {
        Strategies {
            automatic: None,
            custom: BTreeMap::new(),
            max_exec_time_ms: Self::default_max_exec_time_ms(),
        }
    }
}

/// The files of the automatic strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutomaticStrategies {
    /// Path of `erSchema.json`.
    pub er_schema: String,
    /// Path of `projectionChangesSchema.json`.
    pub projection_changes_schema: String,
    /// Projections of the System of Record this worker does not write but the walk may read
    /// (another updater keeps them in the same database); the operator fills it in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_projections: Vec<ReadProjection>,
}

impl ReadProjection {
    /// What the strategy needs to know of a projection: its name, collection and field names.
    pub fn of(p: &ProjectionConfig) -> Self {
        ReadProjection {
            name: p.name.clone(),
            collection: p.collection.clone().unwrap_or_else(|| p.name.clone()),
            fields: p
                .fields
                .iter()
                .map(|f| f.target.clone().unwrap_or_else(|| f.name.clone()))
                .collect(),
        }
    }
}

/// A projection the automatic strategy reads without writing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadProjection {
    /// The projection's name, as the schema files write it.
    pub name: String,
    /// Its collection.
    pub collection: String,
    /// Its field names in the projection.
    pub fields: Vec<String>,
}

/// Users' JavaScript functions, run in an embedded sandbox (no file, network or process
/// access) with a time and memory limit per call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Functions {
    /// Function name -> path of its CommonJS file (`module.exports = function ...`).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Longest run of one cast or adapter call, in ms (strategies use
    /// `outputs.strategies.maxExecTimeMs`).
    #[serde(default = "Functions::default_time_limit_ms")]
    pub time_limit_ms: u32,
    /// Most memory the functions' JavaScript heap may use, in MiB.
    #[serde(default = "Functions::default_memory_limit_mib")]
    pub memory_limit_mib: u32,
}

impl Functions {
    fn default_time_limit_ms() -> u32 {
        1000
    }
    fn default_memory_limit_mib() -> u32 {
        64
    }
}

impl Default for Functions {
    fn default() -> Self {
        Functions {
            files: BTreeMap::new(),
            time_limit_ms: Self::default_time_limit_ms(),
            memory_limit_mib: Self::default_memory_limit_mib(),
        }
    }
}

/// `name` from `__fromFile__[name]`, or `name` itself.
pub fn function_name(reference: &str) -> &str {
    reference.strip_prefix("__fromFile__[").and_then(|r| r.strip_suffix(']')).unwrap_or(reference)
}

/// Kafka connection and consumer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// The consumer group all workers of one RealTimeUpdater share.
    pub group_id: String,
    /// Where a new group starts.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Transport security and authentication.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka properties passed through (`session.timeout.ms`, ...); properties the engine
    /// owns are refused.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OffsetReset {
    /// From the oldest retained message (the whole table replays).
    #[default]
    Earliest,
    /// From new messages only.
    Latest,
}

/// Kafka transport security.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSecurity {
    /// The protocol of the listener.
    #[serde(default)]
    pub protocol: KafkaProtocol,
    /// SASL authentication; required with `saslPlaintext` and `saslSsl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
    /// PEM file with the CA certificates that sign the brokers' certificates (`ssl`, `saslSsl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The Kafka listener protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KafkaProtocol {
    /// No encryption, no authentication.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// SASL credentials, read from files or environment variables (never written inline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslConfig {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// Where the username is.
    pub username: SecretSource,
    /// Where the password is.
    pub password: SecretSource,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SaslMechanism {
    /// PLAIN.
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

/// Where a secret value is read at start: a file (a mounted Secret key) or an environment
/// variable. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// Path of a file holding the value (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of an environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// MongoDB connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoConfig {
    /// Where the connection string (with its credentials) is.
    pub uri: SecretSource,
    /// The database of the projections.
    pub database: String,
    /// How every write the engine makes (projections, projection changes) is acknowledged.
    #[serde(default, skip_serializing_if = "WriteConcern::is_default")]
    pub write_concern: WriteConcern,
}

/// The write concern of the engine's MongoDB writes (docs/failures.md#write-concern). A write
/// is done, and its offset may be stored, only once MongoDB acknowledges it this way; a reply
/// that says the concern was not met (`writeConcernError`) is retried and stores nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteConcern {
    /// Who must acknowledge each write: `majority` (default: a write the replica set cannot
    /// roll back), a number of members as a string (`"1"`, `"2"`, ...), or the name of a custom
    /// write concern of the replica set's settings. `"0"` (unacknowledged) is refused.
    #[serde(default = "WriteConcern::default_w")]
    #[schemars(length(min = 1, max = 64))]
    pub w: String,
    /// How long MongoDB may wait for those acknowledgements before it answers with a
    /// `writeConcernError` (the batch is then retried), in milliseconds; default 10000, at
    /// least 1 (no wait without bound).
    #[serde(default = "WriteConcern::default_wtimeout_ms")]
    #[schemars(range(min = 1))]
    pub wtimeout_ms: u32,
    /// Whether each write must also be in the on-disk journal of the members that acknowledge
    /// it (`j`); absent: MongoDB's default for the replica set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<bool>,
}

impl WriteConcern {
    fn default_w() -> String {
        "majority".into()
    }

    fn default_wtimeout_ms() -> u32 {
        10_000
    }

    /// Whether this is the default (`majority`, 10 s, MongoDB's journal default).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The `writeConcern` document of a write command: `w` as a number when it is one, else
    /// as a string (`majority`, a custom name).
    pub fn command_document(&self) -> mongodb::bson::Document {
        let w = match self.w.parse::<i32>() {
            Ok(n) => mongodb::bson::Bson::Int32(n),
            Err(_) => mongodb::bson::Bson::String(self.w.clone()),
        };
        let mut concern = mongodb::bson::doc! { "w": w, "wtimeout": i64::from(self.wtimeout_ms) };
        if let Some(j) = self.journal {
            concern.insert("j", j);
        }
        concern
    }
}

impl Default for WriteConcern {
    fn default() -> Self {
        WriteConcern {
            w: Self::default_w(),
            wtimeout_ms: Self::default_wtimeout_ms(),
            journal: None,
        }
    }
}

/// The message format, shared by the projections unless one overrides it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdapterConfig {
    /// The format.
    #[serde(rename = "type")]
    pub kind: AdapterKind,
    /// GoldenGate only: use `pos` as the stale-guard counter (default true).
    #[serde(default = "yes")]
    pub use_pos_as_counter: bool,
    /// basic / db2 only: how IBM IIDR KCOP records are read (Avro-JSON unions, audit KCOPs).
    #[serde(default, skip_serializing_if = "IidrOptions::is_default")]
    pub iidr: IidrOptions,
    /// Debezium only: envelope or `ExtractNewRecordState` rows, the unavailable-value
    /// placeholder, the stale-guard counter.
    #[serde(default, skip_serializing_if = "DebeziumOptions::is_default")]
    pub debezium: DebeziumOptions,
    /// Custom only: where each part of the change is in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomMapping>,
    /// Custom only, instead of `custom`: the name of a JavaScript adapter in `functions.files`
    /// (the RTU v7 `kafkaMessageAdapter(kafkaMessage, primaryKeys, logger)` contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

impl AdapterConfig {
    /// What the adapter reads, in a line (`rtu check`).
    pub fn describe(&self) -> String {
        use crate::engine::adapter::{AuditCounter, AuditMode, DebeziumCounter, DebeziumFormat};
        match self.kind {
            AdapterKind::Basic | AdapterKind::Db2 => {
                let i = &self.iidr;
                let audit = match i.audit {
                    AuditMode::Detect => "audit records (A_ENTTYP) detected",
                    AuditMode::Always => "audit records only",
                    AuditMode::Never => "no audit records",
                };
                let counter = match i.audit_counter {
                    AuditCounter::Offset => "Kafka offset",
                    AuditCounter::Ccid => "A_CCID",
                    AuditCounter::Timestamp => "A_TIMSTAMP",
                };
                let unions = if i.avro_unions { "unwrapped" } else { "kept" };
                format!(
                    "basic: IBM IIDR KCOP JSON; Avro-JSON unions {unions}; {audit}, audit counter {counter}"
                )
            }
            AdapterKind::GoldenGate => format!(
                "goldenGate: Oracle GoldenGate JSON; counter {}",
                if self.use_pos_as_counter { "pos" } else { "Kafka offset" }
            ),
            AdapterKind::Debezium => {
                let d = &self.debezium;
                let format = match d.format {
                    DebeziumFormat::Envelope => "change event envelope".to_string(),
                    DebeziumFormat::Unwrapped => format!(
                        "unwrapped ExtractNewRecordState rows ({p}deleted, {p}op read; other {p}* fields dropped unless mapped; tombstones delete)",
                        p = d.added_fields_prefix
                    ),
                };
                let counter = match d.counter {
                    DebeziumCounter::Offset => "Kafka offset",
                    DebeziumCounter::SourceTimestamp => "source timestamp",
                    DebeziumCounter::Lsn => "lsn",
                    DebeziumCounter::Scn => "scn",
                };
                format!(
                    "debezium: {format}; logical types decoded from schemas when present; placeholder {:?} left unwritten; counter {counter}",
                    d.unavailable_value_placeholder
                )
            }
            AdapterKind::Custom => match &self.function {
                Some(f) => format!("custom: JavaScript function {f}"),
                None => "custom: declarative mapping".to_string(),
            },
        }
    }
}

/// A message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AdapterKind {
    /// IBM IIDR / DB2 KCOP JSON.
    Basic,
    /// Alias of `basic`.
    Db2,
    /// Oracle GoldenGate JSON.
    #[serde(alias = "golden-gate")]
    GoldenGate,
    /// Debezium.
    Debezium,
    /// A declarative mapping (`custom`).
    Custom,
}

/// One projection: a MongoDB collection fed by ingestion topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectionConfig {
    /// The projection's name, e.g. `pr_customers`.
    pub name: String,
    /// The collection; defaults to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The ingestion topics; each belongs to this projection only.
    pub topics: Vec<String>,
    /// A format for this projection only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterConfig>,
    /// The fields written; everything else in a message is dropped and counted.
    pub fields: Vec<FieldConfig>,
}

/// One projection field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldConfig {
    /// The field's name in the messages.
    pub name: String,
    /// The field's name in the projection; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The projection type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// The cast function id (`castToString`, `defaultCastToString`, ...); default `identity`.
    #[serde(default = "identity")]
    pub cast: String,
    /// The field must be present when a write creates the document (or resurrects a `DELETED`
    /// one that lacks it); checked at write time in `strict` validation (docs/writes.md#validation-modes).
    #[serde(default)]
    pub required: bool,
    /// The field may be null (checked in `strict` validation).
    #[serde(default)]
    pub nullable: bool,
    /// The field is part of the primary key (in the order listed).
    #[serde(default)]
    pub primary_key: bool,
}

/// A projection field type (the Fast Data console's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FieldType {
    /// A string.
    String,
    /// A number.
    Number,
    /// A boolean.
    Boolean,
    /// A date.
    Date,
    /// An object.
    Object,
    /// An array of objects.
    #[serde(rename = "Array of object", alias = "ArrayOfObject")]
    ArrayOfObject,
    /// An array of numbers.
    #[serde(rename = "Array of number", alias = "ArrayOfNumber")]
    ArrayOfNumber,
    /// An array of strings.
    #[serde(rename = "Array of string", alias = "ArrayOfString")]
    ArrayOfString,
    /// An ObjectId.
    ObjectId,
    /// A GeoJSON point.
    GeoPoint,
}

/// How changes become projection writes (docs/writes.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WritesConfig {
    /// Inserts and updates create missing documents and update existing ones (docs/writes.md#insert-update-upsert).
    /// With `false`, an insert on a live document is the message error `DUPLICATE_INSERT` and
    /// an update of a missing (or `DELETED`) document `MISSING_DOCUMENT`; deletes are then
    /// always hard (see `deleteMechanism`). Formats without an operation (`basic`/`db2`, and a
    /// custom `upsert` operation) only carry upserts, so for them upsert stays on whatever this
    /// says (forced, as in the reference); `rtu check` warns when it is set to `false` there.
    #[serde(default = "yes")]
    pub upsert: bool,
    /// What a delete does; unset: `soft`, or `hard` when `upsert` is `false`. With `upsert:
    /// false` a delete is always hard (docs/writes.md#insert-update-upsert: a re-insert after a soft delete would
    /// collide): an explicit `soft` is overridden, not refused, and `rtu check` warns about it.
    /// Use [`WritesConfig::delete`] for the mechanism in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_mechanism: Option<DeleteMechanism>,
    /// Never let an older message overwrite newer data.
    #[serde(default = "yes")]
    pub stale_guard: bool,
    /// What a failed cast or a null in a non-nullable field does.
    #[serde(default)]
    pub validation: Validation,
    /// Create the indexes the engine relies on when they are missing.
    #[serde(default = "yes")]
    pub ensure_indexes: bool,
}

impl Default for WritesConfig {
    fn default() -> Self {
        WritesConfig {
            upsert: true,
            delete_mechanism: None,
            stale_guard: true,
            validation: Validation::Lenient,
            ensure_indexes: true,
        }
    }
}

impl WritesConfig {
    /// The delete mechanism in force: hard whenever upsert is off (docs/writes.md#insert-update-upsert, docs/writes.md#delete-soft-or-hard), else the
    /// configured one, soft by default.
    pub fn delete(&self) -> DeleteMechanism {
        if self.upsert { self.delete_mechanism.unwrap_or_default() } else { DeleteMechanism::Hard }
    }
}

/// What a delete does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeleteMechanism {
    /// Mark the document `__STATE__: DELETED` and keep it.
    #[default]
    Soft,
    /// Remove the document.
    Hard,
}

/// Validation of cast results (docs/writes.md#validation-modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Validation {
    /// A failed cast stores null and is counted (the reference behaviour).
    #[default]
    Lenient,
    /// A failed cast, a null in a non-nullable field or a missing required field is a message error.
    Strict,
}

/// What happens to a message that cannot be processed (docs/failures.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ErrorPolicy {
    /// Stop consuming, stay alive and not ready.
    #[default]
    Stop,
    /// Pause the failing topic's partitions; others continue.
    PauseTopic,
    /// Produce the message to a dead-letter topic with the reason in headers, then go on.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
}

/// Batching and timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tuning {
    /// Most messages in one batch.
    #[serde(default = "Tuning::default_max_batch_messages")]
    pub max_batch_messages: u32,
    /// Longest wait to fill a batch, in ms.
    #[serde(default = "Tuning::default_max_batch_wait_ms")]
    pub max_batch_wait_ms: u32,
    /// Batches written to MongoDB at the same time.
    #[serde(default = "Tuning::default_writes_in_flight")]
    pub writes_in_flight: u32,
    /// Longest time between offset commits, in ms.
    #[serde(default = "Tuning::default_commit_interval_ms")]
    pub commit_interval_ms: u32,
    /// How long MongoDB (or the dead-letter topic) may fail before `/readyz` reports not ready,
    /// in ms; the engine keeps retrying meanwhile.
    #[serde(default = "Tuning::default_unhealthy_after_ms")]
    pub unhealthy_after_ms: u32,
}

impl Tuning {
    fn default_max_batch_messages() -> u32 {
        2000
    }
    fn default_max_batch_wait_ms() -> u32 {
        500
    }
    fn default_writes_in_flight() -> u32 {
        4
    }
    fn default_commit_interval_ms() -> u32 {
        1000
    }
    fn default_unhealthy_after_ms() -> u32 {
        60_000
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_batch_messages: Self::default_max_batch_messages(),
            max_batch_wait_ms: Self::default_max_batch_wait_ms(),
            writes_in_flight: Self::default_writes_in_flight(),
            commit_interval_ms: Self::default_commit_interval_ms(),
            unhealthy_after_ms: Self::default_unhealthy_after_ms(),
        }
    }
}

/// Health, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address `/healthz`, `/readyz` and `/metrics` listen on.
    #[serde(default = "TelemetryConfig::default_host")]
    pub host: String,
    /// Port of `/healthz`, `/readyz` and `/metrics` (0: any free port, logged at start).
    #[serde(default = "TelemetryConfig::default_port")]
    pub port: u16,
    /// How often consumer lag and committed offsets are refreshed from librdkafka, in ms.
    #[serde(default = "TelemetryConfig::default_lag_interval_ms")]
    pub lag_interval_ms: u32,
    /// Log filter, e.g. `info` or `info,rtu_operator=debug`.
    #[serde(default = "TelemetryConfig::default_log_level")]
    pub log_level: String,
}

impl TelemetryConfig {
    fn default_host() -> String {
        "0.0.0.0".to_string()
    }
    fn default_port() -> u16 {
        9464
    }
    fn default_lag_interval_ms() -> u32 {
        5000
    }
    fn default_log_level() -> String {
        "info".to_string()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            host: Self::default_host(),
            port: Self::default_port(),
            lag_interval_ms: Self::default_lag_interval_ms(),
            log_level: Self::default_log_level(),
        }
    }
}

fn yes() -> bool {
    true
}

fn identity() -> String {
    "identity".to_string()
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not have the config's structure.
    #[error("{file}: {source}")]
    Parse {
        /// The file.
        file: String,
        /// Where and why.
        source: YamlError,
    },
    /// The structure is fine but rules are broken.
    #[error("{file}: {} error(s):\n{}", errors.len(), errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// Every broken rule.
        errors: Vec<ConfigError>,
    },
}

impl EngineConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { file: file.clone(), source })?;
        let config: EngineConfig = yaml::from_str(&text)
            .map_err(|source| LoadError::Parse { file: file.clone(), source })?;
        let errors = config.validate();
        if errors.is_empty() { Ok(config) } else { Err(LoadError::Invalid { file, errors }) }
    }
}

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{field}: cannot read file {path}: {source}")]
    ReadFile {
        /// The config field.
        field: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The variable is not set (or not UTF-8).
    #[error("{field}: environment variable {name} is not set")]
    MissingEnv {
        /// The config field.
        field: &'static str,
        /// The variable.
        name: String,
    },
    /// Neither file nor env was given (refused by `validate`).
    #[error("{field}: no file or env given")]
    Unset {
        /// The config field.
        field: &'static str,
    },
    /// The value of a file was to be given by the caller and was not.
    #[error("{field}: no value given for {path}")]
    NotGiven {
        /// The config field.
        field: &'static str,
        /// The file the value stands for.
        path: String,
    },
}

impl SecretSource {
    /// Reads the value; a trailing newline of a file is dropped. `field` names the config field
    /// in errors (the value itself is never part of an error).
    pub fn read(&self, field: &'static str) -> Result<String, SecretError> {
        match (&self.file, &self.env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|source| SecretError::ReadFile { field, path: path.clone(), source }),
            (None, Some(name)) => std::env::var(name)
                .map_err(|_| SecretError::MissingEnv { field, name: name.clone() }),
            (None, None) => Err(SecretError::Unset { field }),
        }
    }
}
