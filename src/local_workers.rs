//! Local workers (`rtu local-workers`): runs a RealTimeUpdater's worker Deployment as local
//! processes, one per replica, as a kubelet would run its pods: the container's command, args
//! and env, the engine ConfigMap and the Secret keys it mounts written as files in a directory
//! per pod, a telemetry port per pod (as each pod has its own network). When the Deployment's
//! template changes, the old processes get SIGTERM and new ones start. The same for the
//! operator's own Deployment ([`start_as_service_account`]): its container runs with the
//! pod's ServiceAccount identity (a TokenRequest token in a kubeconfig of its own) and nothing
//! else from this process's environment, so it has exactly the rights its RBAC grants. For
//! demos, tests and development on a machine with an API server but no nodes; a cluster does
//! not need it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::config::{AuthInfo, Context, Kubeconfig, NamedAuthInfo, NamedContext};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::config::EngineConfig;
use crate::operator::build::HASH_ANNOTATION;

/// Why local workers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Reading the Deployment, a ConfigMap or a Secret failed.
    #[error("read {what}: {source}")]
    Read {
        /// What.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// The pod template lacks what the operator always renders.
    #[error("Deployment {0}: {1}")]
    Template(String, &'static str),
    /// Writing a pod's files failed.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The rendered engine config could not be read back.
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    /// The TokenRequest for the pod's ServiceAccount failed.
    #[error("token for ServiceAccount {namespace}/{name}: {source}")]
    Token {
        /// The ServiceAccount's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// An env var names a Secret or ConfigMap key that does not exist (and is not optional).
    #[error("Deployment {deployment}: env {var}: the key it references does not exist")]
    EnvKey {
        /// The Deployment.
        deployment: String,
        /// The variable.
        var: String,
    },
    /// The kubeconfig to derive the ServiceAccount's from has no current cluster.
    #[error("kubeconfig: {0}")]
    Kubeconfig(&'static str),
    /// A process could not be started.
    #[error("start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One local "pod": its process, directory and log.
pub struct LocalPod {
    /// The engine process.
    pub child: Child,
    /// Its files (mounts, config, log).
    pub dir: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// The config hash of the template it runs (empty for a Deployment the operator did not
    /// render, e.g. its own).
    pub hash: String,
}

impl LocalPod {
    /// SIGTERM, then wait for the exit (SIGKILL after `grace`); true when it exited 0.
    pub fn terminate(mut self, grace: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// The config hash on a Deployment's pod template.
pub fn template_hash(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(HASH_ANNOTATION).cloned()
}

/// Starts the Deployment's replicas as processes of `binary` (the image's `rtu`), each in a
/// directory under `dir`.
pub async fn start_pods(
    client: &Client,
    namespace: &str,
    d: &Deployment,
    dir: &Path,
    binary: &Path,
) -> Result<Vec<LocalPod>, LocalError> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let template = |why| LocalError::Template(name.clone(), why);
    let spec = d.spec.clone().ok_or_else(|| template("no spec"))?;
    let pod = spec.template.spec.clone().ok_or_else(|| template("no pod spec"))?;
    let container = pod.containers.first().ok_or_else(|| template("no container"))?;
    let hash = template_hash(d).ok_or_else(|| template("no config hash"))?;
    let mut pods = Vec::new();
    for replica in 0..spec.replicas.unwrap_or(1) {
        let root = dir.join(format!("{name}-{hash}-{replica}"));
        let mounts = mount(client, namespace, &pod, container, &root).await?;
        let local = |path: &str| {
            mounts
                .iter()
                .find_map(|(at, dir)| {
                    path.strip_prefix(at.as_str()).map(|rest| format!("{}{rest}", dir.display()))
                })
                .unwrap_or_else(|| path.to_string())
        };
        let mut args: Vec<String> =
            container.args.clone().unwrap_or_default().iter().map(|a| local(a)).collect();
        if let Some(at) =
            args.iter().position(|a| a == "--config").map(|i| i + 1).filter(|i| *i < args.len())
        {
            let config = pod_config(Path::new(&args[at]), &local)?;
            let file = root.join("pod-config.yaml");
            // JSON is YAML: the engine reads it as it is.
            let text = serde_json::to_string_pretty(&config).unwrap_or_default();
            std::fs::write(&file, text).map_err(|source| write_error(&file, source))?;
            args[at] = file.display().to_string();
        }
        let log = root.join("engine.log");
        let out = std::fs::File::create(&log).map_err(|source| write_error(&log, source))?;
        let err = out.try_clone().map_err(|source| write_error(&log, source))?;
        let mut command = Command::new(binary);
        command.args(&args).stdout(out).stderr(err).stdin(Stdio::null());
        let pod_name = format!("{name}-{hash}-{replica}");
        command.envs(container_env(client, namespace, &name, &pod, container, &pod_name).await?);
        let child = command
            .spawn()
            .map_err(|source| LocalError::Spawn { binary: binary.display().to_string(), source })?;
        info!(deployment = %name, replica, pid = child.id(), dir = %root.display(), "local worker started");
        pods.push(LocalPod { child, dir: root, log, hash: hash.clone() });
    }
    Ok(pods)
}

/// The container's environment as the kubelet sets it for pod `pod_name` of `namespace`:
/// literal values, Secret and ConfigMap keys (`secretKeyRef`, `configMapKeyRef`; a missing
/// `optional` one is left out), and the downward-API fields a pod has without a node
/// ([`field_value`]); any other source is refused rather than left empty.
async fn container_env(
    client: &Client,
    namespace: &str,
    deployment: &str,
    pod: &PodSpec,
    container: &Container,
    pod_name: &str,
) -> Result<Vec<(String, String)>, LocalError> {
    let mut env = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        let Some(from) = var.value_from else {
            env.push((var.name, var.value.unwrap_or_default()));
            continue;
        };
        let value = if let Some(field) = from.field_ref {
            Some(field_value(&field.field_path, pod, pod_name, namespace).ok_or_else(|| {
                LocalError::Template(deployment.to_string(), "an env fieldRef other than metadata.name, metadata.namespace or spec.serviceAccountName")
            })?)
        } else if let Some(key) = from.secret_key_ref {
            let secret = read_opt::<Secret>(client, namespace, &key.name).await?;
            let bytes = secret.and_then(|s| s.data?.remove(&key.key)).map(|b| b.0);
            missing_optional(
                bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
                key.optional,
                &var.name,
                deployment,
            )?
        } else if let Some(key) = from.config_map_key_ref {
            let map = read_opt::<ConfigMap>(client, namespace, &key.name).await?;
            missing_optional(
                map.and_then(|m| m.data?.remove(&key.key)),
                key.optional,
                &var.name,
                deployment,
            )?
        } else {
            return Err(LocalError::Template(
                deployment.to_string(),
                "an env valueFrom a local process cannot have (resourceFieldRef, fileKeyRef)",
            ));
        };
        env.extend(value.map(|v| (var.name, v)));
    }
    Ok(env)
}

/// The downward-API field `path` of pod `pod_name` in `namespace`, when a pod without a node
/// has it.
fn field_value(path: &str, pod: &PodSpec, pod_name: &str, namespace: &str) -> Option<String> {
    match path {
        "metadata.name" => Some(pod_name.to_string()),
        "metadata.namespace" => Some(namespace.to_string()),
        "spec.serviceAccountName" => {
            Some(pod.service_account_name.clone().unwrap_or_else(|| "default".into()))
        }
        _ => None,
    }
}

/// A key's value; a missing key is an error unless the reference is `optional`.
fn missing_optional(
    value: Option<String>,
    optional: Option<bool>,
    var: &str,
    deployment: &str,
) -> Result<Option<String>, LocalError> {
    match (value, optional.unwrap_or(false)) {
        (Some(v), _) => Ok(Some(v)),
        (None, true) => Ok(None),
        (None, false) => {
            Err(LocalError::EnvKey { deployment: deployment.to_string(), var: var.to_string() })
        }
    }
}

async fn read_opt<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, LocalError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace).get_opt(name).await.map_err(|source| {
        LocalError::Read { what: format!("{} {namespace}/{name}", K::kind(&())), source }
    })
}

/// A token of ServiceAccount `namespace/name` from the TokenRequest API (what the kubelet
/// projects into a pod), valid for `seconds`.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
    seconds: i64,
) -> Result<String, LocalError> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(seconds), ..Default::default() }),
        ..Default::default()
    };
    let error =
        |source| LocalError::Token { namespace: namespace.into(), name: name.into(), source };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(error)?;
    Ok(answer.status.and_then(|s| s.token).unwrap_or_default())
}

/// A kubeconfig with `admin`'s current cluster (address and CA) and `token` as its only
/// user: no other credential of `admin` is in it.
pub fn token_kubeconfig(
    admin: &Kubeconfig,
    user: &str,
    token: &str,
) -> Result<Kubeconfig, LocalError> {
    let current =
        admin.current_context.as_deref().ok_or(LocalError::Kubeconfig("no current-context"))?;
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or(LocalError::Kubeconfig("the current context names no cluster"))?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .cloned()
        .ok_or(LocalError::Kubeconfig("the current context's cluster is not in it"))?;
    Ok(Kubeconfig {
        clusters: vec![cluster],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_string(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_string().into()),
                ..Default::default()
            }),
            other: BTreeMap::new(),
        }],
        contexts: vec![NamedContext {
            name: user.to_string(),
            context: Some(Context {
                cluster: cluster_name,
                user: Some(user.to_string()),
                ..Default::default()
            }),
            other: BTreeMap::new(),
        }],
        current_context: Some(user.to_string()),
        ..Default::default()
    })
}

/// Starts the first container of Deployment `namespace/name` as a process of `binary` (for its
/// `command[0]`) as the kubelet would start one of its pods: its args, its env
/// ([`container_env`], pod name `<name>-local`), and as credentials only a token of the pod's
/// ServiceAccount, in a kubeconfig under `dir` (cluster address and CA from `admin`) that
/// `KUBECONFIG` names; nothing else of this process's environment is passed on. The pod's own
/// network is the one thing a process cannot have: an arg `--port=P` for a declared
/// `containerPort` P becomes `--port=0` (a free port).
pub async fn start_as_service_account(
    client: &Client,
    admin: &Kubeconfig,
    namespace: &str,
    name: &str,
    dir: &Path,
    binary: &Path,
) -> Result<LocalPod, LocalError> {
    let template = |why| LocalError::Template(name.to_string(), why);
    let d = Api::<Deployment>::namespaced(client.clone(), namespace).get(name).await.map_err(
        |source| LocalError::Read { what: format!("Deployment {namespace}/{name}"), source },
    )?;
    let hash = template_hash(&d).unwrap_or_default();
    let pod = d.spec.and_then(|s| s.template.spec).ok_or_else(|| template("no pod spec"))?;
    let container = pod.containers.first().ok_or_else(|| template("no container"))?;
    let account = pod.service_account_name.clone().unwrap_or_else(|| "default".into());
    let token = service_account_token(client, namespace, &account, 24 * 3600).await?;
    let kubeconfig = token_kubeconfig(admin, &account, &token)?;
    let root = dir.join(format!("{name}-local"));
    std::fs::create_dir_all(&root).map_err(|source| write_error(&root, source))?;
    let config_file = root.join("kubeconfig");
    let text = serde_json::to_string_pretty(&kubeconfig).unwrap_or_default();
    std::fs::write(&config_file, text).map_err(|source| write_error(&config_file, source))?;
    let ports: Vec<String> =
        container.ports.iter().flatten().map(|p| format!("--port={}", p.container_port)).collect();
    let args: Vec<String> = (container.command.clone().unwrap_or_default().into_iter().skip(1))
        .chain(container.args.clone().unwrap_or_default())
        .map(|a| if ports.contains(&a) { "--port=0".to_string() } else { a })
        .collect();
    let log = root.join("process.log");
    let out = std::fs::File::create(&log).map_err(|source| write_error(&log, source))?;
    let err = out.try_clone().map_err(|source| write_error(&log, source))?;
    let child = Command::new(binary)
        .args(&args)
        .env_clear()
        .envs(
            container_env(client, namespace, name, &pod, container, &format!("{name}-local"))
                .await?,
        )
        .env("KUBECONFIG", &config_file)
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| LocalError::Spawn { binary: binary.display().to_string(), source })?;
    info!(deployment = %name, service_account = %account, pid = child.id(), dir = %root.display(), "local pod started");
    Ok(LocalPod { child, dir: root, log, hash })
}

fn write_error(path: &Path, source: std::io::Error) -> LocalError {
    LocalError::Write { path: path.display().to_string(), source }
}

/// Writes the pod's ConfigMap and Secret volumes under `root`; mount path -> local directory.
async fn mount(
    client: &Client,
    namespace: &str,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &k8s_openapi::api::core::v1::Container,
    root: &Path,
) -> Result<BTreeMap<String, PathBuf>, LocalError> {
    let read = |what: String| move |source| LocalError::Read { what: what.clone(), source };
    let mut mounts = BTreeMap::new();
    for m in container.volume_mounts.clone().unwrap_or_default() {
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == m.name) else {
            continue;
        };
        let target = root.join(&m.name);
        std::fs::create_dir_all(&target).map_err(|source| write_error(&target, source))?;
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        if let Some(cm) = &volume.config_map {
            let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get(&cm.name)
                .await
                .map_err(read(format!("ConfigMap {namespace}/{}", cm.name)))?;
            files.extend(
                map.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (target.join(k), v.into_bytes())),
            );
        }
        for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            let Some(s) = &source.secret else { continue };
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get(&s.name)
                .await
                .map_err(read(format!("Secret {namespace}/{}", s.name)))?;
            let data = secret.data.unwrap_or_default();
            for item in s.items.iter().flatten() {
                if let Some(value) = data.get(&item.key) {
                    files.push((target.join(&item.path), value.0.clone()));
                }
            }
        }
        for (file, bytes) in files {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|source| write_error(parent, source))?;
            }
            std::fs::write(&file, bytes).map_err(|source| write_error(&file, source))?;
        }
        mounts.insert(m.mount_path.clone(), target);
    }
    Ok(mounts)
}

/// The rendered engine config with every file path moved to this pod's mounts and a free
/// telemetry port.
fn pod_config(path: &Path, local: &impl Fn(&str) -> String) -> Result<EngineConfig, LocalError> {
    let mut config = EngineConfig::load(path)?;
    let move_file = |source: &mut crate::config::SecretSource| {
        source.file = source.file.as_deref().map(local);
    };
    move_file(&mut config.mongodb.uri);
    if let Some(sasl) = config.kafka.security.sasl.as_mut() {
        move_file(&mut sasl.username);
        move_file(&mut sasl.password);
    }
    config.kafka.security.ca_file = config.kafka.security.ca_file.as_deref().map(local);
    for file in config.functions.files.values_mut() {
        *file = local(file);
    }
    if let Some(a) = config.outputs.strategies.automatic.as_mut() {
        a.er_schema = local(&a.er_schema);
        a.projection_changes_schema = local(&a.projection_changes_schema);
    }
    config.telemetry.port = 0;
    Ok(config)
}

/// Follows the Deployment `namespace/name`: runs its replicas, and on a new template (or a new
/// replica count) replaces them, until `shutdown` completes; then stops them all.
pub async fn follow(
    client: Client,
    namespace: &str,
    name: &str,
    dir: &Path,
    binary: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), LocalError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let mut running: Vec<LocalPod> = Vec::new();
    let mut current: Option<(String, i32)> = None;
    tokio::pin!(shutdown);
    loop {
        match api.get_opt(name).await {
            Ok(Some(d)) => {
                let wanted = template_hash(&d).zip(d.spec.as_ref().and_then(|s| s.replicas));
                if wanted.is_some() && wanted != current {
                    info!(deployment = %name, template = ?wanted, "template changed: rolling the local workers");
                    stop(std::mem::take(&mut running));
                    running = start_pods(&client, namespace, &d, dir, binary).await?;
                    current = wanted;
                }
            }
            Ok(None) => {
                if !running.is_empty() {
                    info!(deployment = %name, "Deployment gone: stopping the local workers");
                    stop(std::mem::take(&mut running));
                    current = None;
                }
            }
            Err(e) => warn!(error = %e, "cannot read the Deployment; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    stop(running);
    Ok(())
}

fn stop(pods: Vec<LocalPod>) {
    for pod in pods {
        let log = pod.log.clone();
        if !pod.terminate(Duration::from_secs(30)) {
            warn!(log = %log.display(), "a local worker did not exit cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::config::Kubeconfig;

    use super::{LocalError, field_value, missing_optional, token_kubeconfig};

    #[test]
    fn the_pods_own_fields_are_resolved_and_node_fields_are_not() {
        let pod: PodSpec = serde_json::from_value(
            serde_json::json!({ "serviceAccountName": "rtu-operator", "containers": [] }),
        )
        .unwrap();
        let value = |path| field_value(path, &pod, "op-local", "rtu-system");
        assert_eq!(value("metadata.name").as_deref(), Some("op-local"));
        assert_eq!(value("metadata.namespace").as_deref(), Some("rtu-system"));
        assert_eq!(value("spec.serviceAccountName").as_deref(), Some("rtu-operator"));
        assert_eq!(value("status.podIP"), None);
        assert_eq!(value("spec.nodeName"), None);
        let default = PodSpec::default();
        assert_eq!(
            field_value("spec.serviceAccountName", &default, "p", "n").as_deref(),
            Some("default")
        );
    }

    #[test]
    fn a_missing_key_is_an_error_unless_optional() {
        assert_eq!(
            missing_optional(Some("v".into()), None, "A", "d").unwrap().as_deref(),
            Some("v")
        );
        assert_eq!(missing_optional(None, Some(true), "A", "d").unwrap(), None);
        let err = missing_optional(None, Some(false), "A", "d").unwrap_err();
        assert!(matches!(err, LocalError::EnvKey { ref var, .. } if var == "A"), "{err}");
    }

    #[test]
    fn token_kubeconfig_keeps_the_cluster_and_drops_every_other_credential() {
        let admin: Kubeconfig = crate::yaml::from_str(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority-data: Q0E=}\n\
             - name: other\n  cluster: {server: 'https://10.0.0.1'}\n\
             users:\n- name: admin\n  user: {client-certificate-data: Y2VydA==, client-key-data: a2V5}\n\
             contexts:\n- name: ctx\n  context: {cluster: c, user: admin}\ncurrent-context: ctx\n",
        )
        .unwrap();
        let config = token_kubeconfig(&admin, "rtu-operator", "t0ken").unwrap();
        let text = serde_json::to_string(&config).unwrap();
        assert!(!text.contains("Y2VydA==") && !text.contains("a2V5") && !text.contains("10.0.0.1"));
        assert_eq!(config.clusters.len(), 1);
        let cluster = config.clusters[0].cluster.clone().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert!(text.contains("\"token\":\"t0ken\""), "{text}");
        assert_eq!(config.current_context.as_deref(), Some("rtu-operator"));
    }
}
