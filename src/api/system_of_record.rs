//! `SystemOfRecord`: what the source is. Its Kafka and MongoDB connections (credentials as Secret
//! references only), its message format, its projections and the files its strategies and
//! custom functions live in. Owned by the data team; RealTimeUpdaters reference it.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, ConfigMapKeyRef, ConfigMapRef, SecretKeyRef};
use crate::config::{AdapterConfig, OffsetReset, ProjectionConfig, WriteConcern, WritesConfig};

/// A System of Record: a source database whose change events arrive on Kafka and are kept as
/// MongoDB projections by the RealTimeUpdaters that reference it.
// kube's printcolumn(...) repeats `type_ = ...` by design, which clippy takes for a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rtu.fastdata.dev",
    version = "v1alpha1",
    kind = "SystemOfRecord",
    plural = "systemsofrecord",
    shortname = "sor",
    category = "fastdata",
    namespaced,
    status = "SystemOfRecordStatus",
    doc = "A System of Record: a source database whose change events arrive on Kafka and are kept as MongoDB projections by the RealTimeUpdaters that reference it.",
    printcolumn(name = "Projections", type_ = "integer", json_path = ".status.projectionCount"),
    printcolumn(name = "Adapter", type_ = "string", json_path = ".spec.adapter.type"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemOfRecordSpec {
    /// The Kafka cluster the change events are read from.
    pub kafka: KafkaConnection,
    /// The MongoDB database the projections are written to.
    pub mongodb: MongoConnection,
    /// The message format of the change events, shared by every projection unless one sets its
    /// own (`basic`/`db2` for IBM IIDR, `goldenGate`, `debezium`, `custom`).
    pub adapter: AdapterConfig,
    /// The projections: one MongoDB collection each, fed by its ingestion topics. Names are
    /// unique; a topic belongs to one projection only.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub projections: Vec<ProjectionConfig>,
    /// How change events become projection writes: upsert, delete mechanism, stale guard,
    /// validation of casts, indexes.
    #[serde(default)]
    pub writes: WritesConfig,
    /// The ER schema (`erSchema.json`) of the automatic strategy: a ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub er_schema_ref: Option<ConfigMapKeyRef>,
    /// The projection changes schema (`projectionChangesSchema.json`) of the automatic
    /// strategy: a ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_changes_schema_ref: Option<ConfigMapKeyRef>,
    /// Users' JavaScript functions (custom casts, a custom adapter, custom strategies): a
    /// ConfigMap whose every key `<name>.js` holds one CommonJS function named `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_functions_ref: Option<ConfigMapRef>,
}

/// How to reach Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaConnection {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// How the workers authenticate; `none` by default.
    #[serde(default)]
    pub authentication: KafkaAuthentication,
    /// Transport encryption.
    #[serde(default)]
    pub tls: KafkaTls,
    /// Where a new consumer group starts reading: `earliest` (the whole table replays) or
    /// `latest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// librdkafka properties passed through to the consumer (`session.timeout.ms`, ...).
    /// Properties the engine owns (`group.id`, `bootstrap.servers`, `enable.auto.commit`,
    /// security and SASL settings, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// SASL authentication to Kafka; username and password come from Secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'none' || (has(self.usernameSecretRef) && has(self.passwordSecretRef))",
     "message": "usernameSecretRef and passwordSecretRef are required when type is not none"},
    {"rule": "self.type != 'none' || (!has(self.usernameSecretRef) && !has(self.passwordSecretRef))",
     "message": "usernameSecretRef and passwordSecretRef are only used when type is not none"}
]))]
pub struct KafkaAuthentication {
    /// The SASL mechanism: `none`, `plain`, `scramSha256` or `scramSha512`.
    #[serde(rename = "type", default)]
    pub kind: KafkaAuthType,
    /// The Secret key holding the username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret_ref: Option<SecretKeyRef>,
    /// The Secret key holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A SASL mechanism, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KafkaAuthType {
    /// No authentication.
    #[default]
    None,
    /// SASL PLAIN.
    Plain,
    /// SASL SCRAM-SHA-256.
    ScramSha256,
    /// SASL SCRAM-SHA-512.
    ScramSha512,
}

/// TLS to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.enabled || !has(self.caSecretRef)",
     "message": "caSecretRef needs enabled: true"}
]))]
pub struct KafkaTls {
    /// Connect with TLS.
    #[serde(default)]
    pub enabled: bool,
    /// The Secret key holding the PEM CA certificates that sign the brokers' certificates;
    /// the system's CAs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// How to reach MongoDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoConnection {
    /// The Secret key holding the connection string (`mongodb://user:pass@host/...`).
    pub uri_secret_ref: SecretKeyRef,
    /// The database of the projections and projection changes.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// How the workers' writes are acknowledged (default `w: majority`, `wtimeoutMs: 10000`):
    /// an offset is committed only after its write is acknowledged this way.
    #[serde(default, skip_serializing_if = "WriteConcern::is_default")]
    pub write_concern: WriteConcern,
}

/// What the operator knows of a SystemOfRecord.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemOfRecordStatus {
    /// The `metadata.generation` last looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many projections the spec lists.
    #[serde(default)]
    pub projection_count: i32,
    /// Each projection and the RealTimeUpdater that owns it, if any.
    #[serde(default)]
    pub projections: Vec<ProjectionOwner>,
    /// `Ready`: every projection is owned by exactly one RealTimeUpdater that is Ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A projection and its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionOwner {
    /// The projection's name.
    pub name: String,
    /// The RealTimeUpdater that writes it; absent when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}
