//! Build (pure): a [`Validated`] RealTimeUpdater becomes its children: the engine ConfigMap, the
//! worker Deployment, the metrics Service and the PodDisruptionBudget. Each child carries the
//! common labels and a controller owner reference to the RealTimeUpdater; the pod template
//! carries the config hash, so a change of configuration or of a referenced Secret rolls the
//! workers and a change of metadata does not.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    SeccompProfile, SecretProjection, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::{CONFIG_DIR, CONFIG_FILE, METRICS_PORT, SECRETS_DIR, Validated};

/// The label every child carries with the RealTimeUpdater's name (orphans are found by it).
pub const OWNER_LABEL: &str = "rtu.fastdata.dev/realtimeupdater";
/// The pod template annotation holding the config hash.
pub const HASH_ANNOTATION: &str = "rtu.fastdata.dev/config-hash";
/// The worker container's name.
pub const CONTAINER: &str = "engine";
/// The pods' fsGroup: mounted Secret files are owned by root, so the non-root worker reads
/// them through this group, which the kubelet gives them to.
const WORKER_GROUP: i64 = 65532;

/// The children of one RealTimeUpdater, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The engine config and the schema and function files.
    pub config_map: ConfigMap,
    /// The workers.
    pub deployment: Deployment,
    /// The workers' `/metrics` port, for Prometheus.
    pub service: Service,
    /// Voluntary disruptions of the workers, when enabled.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Builds every child.
pub fn build(v: &Validated) -> Children {
    Children {
        config_map: config_map(v),
        deployment: deployment(v),
        service: service(v),
        pdb: v.worker.pod_disruption_budget.enabled.then(|| pdb(v)),
    }
}

/// The engine ConfigMap's name.
pub fn config_map_name(rtu: &str) -> String {
    format!("{rtu}-engine")
}

/// The metrics Service's name.
pub fn service_name(rtu: &str) -> String {
    format!("{rtu}-metrics")
}

/// The labels selecting the workers of `rtu` (stable: a Deployment's selector is immutable).
pub fn selector(rtu: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "rtu-worker".to_string()),
        (OWNER_LABEL.to_string(), rtu.to_string()),
    ])
}

/// `key=value,...` of [`selector`], as the scale subresource and `kubectl -l` take it.
pub fn selector_string(rtu: &str) -> String {
    selector(rtu).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn labels(v: &Validated) -> BTreeMap<String, String> {
    let mut labels = selector(&v.name);
    labels.extend([
        ("app.kubernetes.io/instance".to_string(), v.name.clone()),
        ("app.kubernetes.io/component".to_string(), "worker".to_string()),
        ("app.kubernetes.io/part-of".to_string(), v.system_of_record.clone()),
        ("app.kubernetes.io/managed-by".to_string(), "rtu-operator".to_string()),
    ]);
    labels
}

fn metadata(v: &Validated, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(v)),
        owner_references: Some(vec![OwnerReference {
            api_version: format!("{}/v1alpha1", crate::api::GROUP),
            kind: "RealTimeUpdater".into(),
            name: v.name.clone(),
            uid: v.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    }
}

fn config_map(v: &Validated) -> ConfigMap {
    ConfigMap {
        metadata: metadata(v, config_map_name(&v.name)),
        data: Some(v.files.clone()),
        ..ConfigMap::default()
    }
}

fn deployment(v: &Validated) -> Deployment {
    let mut template_meta = ObjectMeta { labels: Some(labels(v)), ..ObjectMeta::default() };
    template_meta.annotations = Some(BTreeMap::from([
        (HASH_ANNOTATION.to_string(), v.config_hash.clone()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
    ]));
    Deployment {
        metadata: metadata(v, v.name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(v.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&v.name)),
                ..LabelSelector::default()
            },
            // One consumer leaves before its replacement joins: no surge, so a roll never has
            // more group members than wanted.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec { metadata: Some(template_meta), spec: Some(pod(v)) },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod(v: &Validated) -> PodSpec {
    let w = &v.worker;
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&v.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if !v.secrets.is_empty() {
        volumes.push(secrets_volume(v));
        mounts.push(VolumeMount {
            name: "secrets".into(),
            mount_path: SECRETS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    PodSpec {
        containers: vec![container(v, mounts)],
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(w.graceful_shutdown_seconds),
        service_account_name: w.service_account_name.clone(),
        automount_service_account_token: Some(false),
        node_selector: (!w.node_selector.is_empty()).then(|| w.node_selector.clone()),
        tolerations: (!w.tolerations.is_empty()).then(|| w.tolerations.clone()),
        affinity: w.affinity.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(WORKER_GROUP),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

/// One projected volume with every referenced Secret key at `<secret>/<key>`, readable by the
/// worker only (owner root, group [`WORKER_GROUP`], nothing for others).
fn secrets_volume(v: &Validated) -> Volume {
    let mut by_secret: BTreeMap<&str, Vec<KeyToPath>> = BTreeMap::new();
    for r in &v.secrets {
        by_secret.entry(&r.name).or_default().push(KeyToPath {
            key: r.key.clone(),
            path: format!("{}/{}", r.name, r.key),
            mode: None,
        });
    }
    Volume {
        name: "secrets".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(
                by_secret
                    .into_iter()
                    .map(|(name, items)| VolumeProjection {
                        secret: Some(SecretProjection {
                            name: name.to_string(),
                            items: Some(items),
                            optional: Some(false),
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
        }),
        ..Volume::default()
    }
}

fn container(v: &Validated, mounts: Vec<VolumeMount>) -> Container {
    let w = &v.worker;
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: CONTAINER.into(),
        image: Some(v.image.clone()),
        image_pull_policy: w.image_pull_policy.clone(),
        command: Some(vec!["rtu".into()]),
        args: Some(vec!["engine".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        env: (!w.env.is_empty()).then(|| w.env.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: w.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn service(v: &Validated) -> Service {
    Service {
        metadata: metadata(v, service_name(&v.name)),
        spec: Some(ServiceSpec {
            selector: Some(selector(&v.name)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: i32::from(METRICS_PORT),
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(v: &Validated) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(v, v.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(v.worker.pod_disruption_budget.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&v.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
