//! `RealTimeUpdater`: how a set of projections of one SystemOfRecord is kept up to date: which
//! projections, which outputs and strategies, the error policy, and the worker pods that run
//! `rtu engine` (replicas, lag autoscaling, paused, stopped, image, resources, scheduling,
//! disruption budget).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, LocalRef};
use crate::config::{Compression, PrUpdateFormat, Tuning};

/// A Real-Time Updater: worker pods that consume the change events of some projections of a
/// SystemOfRecord, write the projections to MongoDB and announce what changed.
// kube's printcolumn(...) repeats `type_ = ...` by design, which clippy takes for a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rtu.fastdata.dev",
    version = "v1alpha1",
    kind = "RealTimeUpdater",
    shortname = "rtu",
    category = "fastdata",
    namespaced,
    status = "RealTimeUpdaterStatus",
    doc = "A Real-Time Updater: worker pods that consume the change events of some projections of a SystemOfRecord, write the projections to MongoDB and announce what changed.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "SoR", type_ = "string", json_path = ".spec.systemOfRecordRef.name"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.autoscaling.lag"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.systemOfRecordRef == oldSelf.systemOfRecordRef",
     "message": "systemOfRecordRef is immutable: create another RealTimeUpdater instead"},
    {"rule": "has(self.consumerGroup) == has(oldSelf.consumerGroup) && (!has(self.consumerGroup) || self.consumerGroup == oldSelf.consumerGroup)",
     "message": "consumerGroup is immutable: a new group would re-read every topic from autoOffsetReset"}
]))]
pub struct RealTimeUpdaterSpec {
    /// The SystemOfRecord (same namespace) whose projections this updater keeps. Immutable.
    pub system_of_record_ref: LocalRef,
    /// The names of the projections this updater owns; empty: every projection of the
    /// SystemOfRecord that no other RealTimeUpdater owns. Two updaters may not own one
    /// projection: the second is refused with a condition naming the first.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub projections: Vec<String>,
    /// The Kafka consumer group all workers share; default `<namespace>.<name>`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub consumer_group: Option<String>,
    /// What the workers announce after each applied write; everything off by default.
    #[serde(default)]
    pub outputs: UpdaterOutputs,
    /// What happens to a message that cannot be processed: `stop` (stay alive, not ready),
    /// `pauseTopic`, or `deadLetter` with a `topic`.
    #[serde(default)]
    pub error_policy: ErrorPolicySpec,
    /// How many worker pods; at most the number of partitions do work. Set by `kubectl scale`
    /// (or a HorizontalPodAutoscaler) through the scale subresource too. Not used while
    /// `autoscaling.enabled`: a change is then reported as overridden (a `ReplicasOverridden`
    /// Event) and the operator's lag autoscaler keeps deciding.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Lag autoscaling (docs/autoscaling.md): the operator reads the consumer group's lag from
    /// Kafka and sets the number of workers from it, within bounds and windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Stop reconciling: nothing is applied or deleted, the status is still refreshed.
    #[serde(default)]
    pub paused: bool,
    /// Scale the workers to zero and keep everything else (the consumer group's offsets too).
    #[serde(default)]
    pub stopped: bool,
    /// The worker pods.
    #[serde(default)]
    pub worker: Worker,
}

fn one() -> i32 {
    1
}

/// Lag autoscaling: the number of workers follows the consumer group's lag (the messages of
/// the updater's topics not yet committed), `ceil(lag / lagPerReplica)` within
/// `[minReplicas, maxReplicas]` and never above the partitions the updater consumes. A failed
/// or partial lag read never changes the number of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas",
     "message": "minReplicas must not be above maxReplicas"}
]))]
pub struct AutoscalingSpec {
    /// Scale on lag; `false` keeps `spec.replicas` (and `kubectl scale` / an HPA) in charge.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The fewest workers; `0` stops every worker while there is no lag (the operator still
    /// reads the lag and starts workers when messages arrive).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// The most workers (the partition count caps it further).
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// The lag one worker is sized for, in messages: the workers wanted are
    /// `ceil(lag / lagPerReplica)`.
    #[schemars(range(min = 1))]
    pub lag_per_replica: i64,
    /// How long the lag must ask for more workers before they are added, in seconds (the
    /// smallest wish over the window is taken); 0 (default): at the first read.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: i32,
    /// How long the lag must ask for fewer workers before some are removed (the largest wish
    /// over the window is taken), and the least time between a change and a removal, in
    /// seconds; default 300.
    #[serde(default = "AutoscalingSpec::default_down_window")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,
    /// How often the lag is read, in seconds; default 15.
    #[serde(default = "AutoscalingSpec::default_poll")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_interval_seconds: i32,
}

impl AutoscalingSpec {
    fn default_down_window() -> i32 {
        300
    }
    fn default_poll() -> i32 {
        15
    }
}

/// What happens to a message that cannot be processed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(self.type == 'deadLetter') == has(self.topic)",
     "message": "topic is required with type deadLetter, and only used there"}
]))]
pub struct ErrorPolicySpec {
    /// `stop`: stop consuming, stay alive and not ready; `pauseTopic`: pause the failing
    /// topic's partitions, the others go on; `deadLetter`: produce the message to `topic` with
    /// the reason in its headers, then go on.
    #[serde(rename = "type", default)]
    pub kind: ErrorPolicyType,
    /// The dead-letter topic (`deadLetter` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub topic: Option<String>,
}

/// An error policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ErrorPolicyType {
    /// Stop consuming, stay alive and not ready.
    #[default]
    Stop,
    /// Pause the failing topic's partitions; others continue.
    PauseTopic,
    /// Produce the message to a dead-letter topic, then go on.
    DeadLetter,
}

/// The outputs of applied writes (docs/outputs.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdaterOutputs {
    /// pr-update events on Kafka, one topic per projection.
    #[serde(default)]
    pub projection_updates: ProjectionUpdatesOutput,
    /// Projection-change documents in MongoDB for the Single View Creators.
    #[serde(default)]
    pub projection_changes: ProjectionChangesOutput,
    /// sv-trigger messages on Kafka, one topic per single view.
    #[serde(default)]
    pub single_view_trigger: SingleViewTriggerOutput,
    /// How a changed projection becomes the identifiers of the single views to rebuild; used
    /// by projection changes and sv-trigger.
    #[serde(default)]
    pub strategies: StrategiesSpec,
}

/// pr-update events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.enabled || self.topicTemplate.contains('{projection}') || size(self.topics) > 0",
     "message": "topicTemplate needs {projection} (or list every projection in topics)"}
]))]
pub struct ProjectionUpdatesOutput {
    /// Produce pr-update events.
    #[serde(default)]
    pub enabled: bool,
    /// The topic of each projection; `{projection}` is replaced by the projection's name.
    #[serde(default = "ProjectionUpdatesOutput::default_template")]
    #[schemars(length(min = 1, max = 249))]
    pub topic_template: String,
    /// Topics of single projections, overriding the template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, String>,
    /// Compression of the produced events.
    #[serde(default)]
    pub compression: Compression,
    /// The event format: `v1` (v1.0.0, the documented Real-Time Updater's, for existing
    /// consumers) or `v2` (v2.0.0, the Projection Storer's: `operation`, `storageNamespace`,
    /// and the ingestion message in a `context` header).
    #[serde(default)]
    pub format: PrUpdateFormat,
}

impl ProjectionUpdatesOutput {
    fn default_template() -> String {
        "{projection}.pr-update".to_string()
    }
}

impl Default for ProjectionUpdatesOutput {
    fn default() -> Self {
        ProjectionUpdatesOutput {
            enabled: false,
            topic_template: Self::default_template(),
            topics: BTreeMap::new(),
            compression: Compression::None,
            format: PrUpdateFormat::V1,
        }
    }
}

/// Projection changes in MongoDB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectionChangesOutput {
    /// Upsert projection-change documents.
    #[serde(default)]
    pub enabled: bool,
    /// The collection; default `fd-pc-<SystemOfRecord name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120))]
    pub collection: Option<String>,
}

/// sv-trigger messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.enabled || has(self.topic)", "message": "topic is required when enabled"}
]))]
pub struct SingleViewTriggerOutput {
    /// Produce sv-trigger messages.
    #[serde(default)]
    pub enabled: bool,
    /// The topic; `{singleView}` is replaced by the single view's name, e.g.
    /// `acme.dev.crm.{singleView}.sv-trigger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub topic: Option<String>,
}

/// Strategies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategiesSpec {
    /// Walk the SystemOfRecord's ER schema (`erSchemaRef`) and projection changes schema
    /// (`projectionChangesSchemaRef`) from the changed projection to the single views.
    #[serde(default)]
    pub automatic: bool,
    /// Custom strategies: projection name -> single view -> the name of a JavaScript function
    /// of the SystemOfRecord's `customFunctionsRef`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, BTreeMap<String, String>>,
    /// Longest run of one strategy for one batch, in ms. Beyond it the batch is retried; after
    /// 3 attempts the strategy runs message by message, and a message that still runs past it
    /// alone is a `STRATEGY_TIMEOUT` message error, handled by `errorPolicy`.
    #[serde(default = "StrategiesSpec::default_max_exec_time_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub max_exec_time_ms: u32,
}

impl StrategiesSpec {
    fn default_max_exec_time_ms() -> u32 {
        5000
    }
}

impl Default for StrategiesSpec {
    fn default() -> Self {
        StrategiesSpec {
            automatic: false,
            custom: BTreeMap::new(),
            max_exec_time_ms: Self::default_max_exec_time_ms(),
        }
    }
}

/// The worker pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Worker {
    /// The image; default: the operator's own image (it holds the same `rtu` binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node labels the worker pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the worker pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity and anti-affinity of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The service account of the worker pods; the namespace's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How long a worker may take on SIGTERM to finish its batch, commit and leave the group,
    /// in seconds.
    #[serde(default = "Worker::default_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub graceful_shutdown_seconds: i64,
    /// The PodDisruptionBudget of the workers.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Batching and timing of the engine.
    #[serde(default)]
    pub tuning: Tuning,
    /// The engine's log filter, e.g. `info` or `info,rtu_operator=debug`.
    #[serde(default = "Worker::default_log_level")]
    pub log_level: String,
}

impl Worker {
    fn default_grace() -> i64 {
        30
    }
    fn default_log_level() -> String {
        "info".to_string()
    }
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            image: None,
            image_pull_policy: None,
            resources: None,
            env: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            service_account_name: None,
            graceful_shutdown_seconds: Self::default_grace(),
            pod_disruption_budget: PodDisruptionBudgetSpec::default(),
            tuning: Tuning::default(),
            log_level: Self::default_log_level(),
        }
    }
}

/// A PodDisruptionBudget for the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How many workers a voluntary disruption (a node drain) may take down at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

fn yes() -> bool {
    true
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec { enabled: true, max_unavailable: 1 }
    }
}

/// What the operator last saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealTimeUpdaterStatus {
    /// The `metadata.generation` the children were last built from (kept while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `ReconciliationPaused`, `Stopped`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Worker pods that exist (the scale subresource reads it).
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the worker pods (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The hash of the rendered engine config and the referenced Secrets and ConfigMaps; the
    /// workers roll when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The consumer group of the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// The projections this updater owns.
    #[serde(default)]
    pub projections: Vec<ProjectionStatus>,
    /// What the lag autoscaler last read and decided (absent when autoscaling is off).
    #[serde(default)]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// What the lag autoscaler last read and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The consumer group's lag over every topic at the last good read, in messages.
    #[serde(default)]
    pub lag: i64,
    /// The lag of each topic at the last good read.
    #[serde(default)]
    pub topics: Vec<TopicLag>,
    /// The partitions the updater consumes: no more workers than this get work.
    #[serde(default)]
    pub partitions: i32,
    /// The workers the autoscaler wants now (the Deployment's replicas).
    #[serde(default)]
    pub desired_replicas: i32,
    /// When the autoscaler last changed the number of workers (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// When the lag was last read successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read_time: Option<String>,
    /// Why `desiredReplicas` is what it is, e.g. `ScaledUp`, `PartitionCap`,
    /// `DownStabilization`, `RollInProgress`, `LagReadFailed`.
    #[serde(default)]
    pub reason: String,
    /// The same, in words with the figures.
    #[serde(default)]
    pub message: String,
    /// `spec.replicas` as last seen while autoscaling: a change of it is reported as
    /// overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_replicas: Option<i32>,
}

/// The lag of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicLag {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
    /// Messages of it not yet committed by the consumer group.
    pub lag: i64,
}

/// One owned projection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Its ingestion topics.
    #[serde(default)]
    pub topics: Vec<String>,
    /// `Active`, `Stopped` or `Refused`.
    pub state: String,
    /// Why, when not `Active`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
