//! Local workers (`rtu local-workers`): runs a RealTimeUpdater's worker Deployment as local
//! processes, one per replica, as a kubelet would run its pods: the container's command, args
//! and env, the engine ConfigMap and the Secret keys it mounts written as files in a directory
//! per pod, a telemetry port per pod (as each pod has its own network). When the Deployment's
//! template changes, the old processes get SIGTERM and new ones start. For demos and
//! development on a machine with an API server but no nodes; a cluster does not need it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use tracing::{info, warn};

use super::build::HASH_ANNOTATION;
use crate::config::EngineConfig;

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
    /// The config hash of the template it runs.
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
        for var in container.env.clone().unwrap_or_default() {
            command.env(var.name, var.value.unwrap_or_default());
        }
        let child = command
            .spawn()
            .map_err(|source| LocalError::Spawn { binary: binary.display().to_string(), source })?;
        info!(deployment = %name, replica, pid = child.id(), dir = %root.display(), "local worker started");
        pods.push(LocalPod { child, dir: root, log, hash: hash.clone() });
    }
    Ok(pods)
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
