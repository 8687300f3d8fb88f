//! Types both resources share: references to Secrets and ConfigMaps in the resource's own
//! namespace, and the `metav1.Condition`-shaped conditions of their status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One key of a Secret in the resource's namespace. The value is mounted into the worker pods
/// as a file; it never appears in a ConfigMap, a log line, an Event or a status.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// One key of a ConfigMap in the resource's namespace.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the ConfigMap's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole ConfigMap in the resource's namespace.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to an object of another kind in the resource's own namespace, by name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A condition of the `metav1.Condition` shape, as `kubectl wait --for=condition=Ready` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition: `Ready`, `Progressing`, `Degraded`, `ReconciliationPaused`, `Stopped` or
    /// `AutoscalingActive`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339); it does not move while the status stays the same.
    pub last_transition_time: String,
    /// A CamelCase word saying why, for machines.
    pub reason: String,
    /// What happened and what to do, for people.
    #[serde(default)]
    pub message: String,
}
