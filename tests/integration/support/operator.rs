//! The operator for tests: the CRDs installed from `rtu crd`'s types, the controllers run
//! in-process against the real API server, scoped to one test namespace, or `rtu operator`
//! as a process (its log and probes for the test to read), and the kubelet's part: the
//! worker Deployment they render run as local processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rtu_operator::api::RealTimeUpdater;
use rtu_operator::local_workers::{LocalPod, start_pods};
use rtu_operator::operator::reconcile::Context;
use rtu_operator::operator::validate::Settings;
use rtu_operator::operator::{self, Scope};
use tokio::sync::OnceCell;

use super::engine::http_get;
use super::{env, eventually};

/// The image tests expect in the worker Deployments.
pub const IMAGE: &str = "rtu-operator:test";

/// Installs (server-side apply) both CRDs once per test binary and waits until they are
/// Established.
pub async fn install_crds(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, crd) in rtu_operator::api::crds() {
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply("rtu-operator-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            eventually(&format!("CRD {name} Established"), Duration::from_secs(30), || async {
                let crd = crds.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            })
            .await;
        }
    })
    .await;
}

/// A running operator; stops when dropped or [`Operator::stop`]ped.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Starts the controllers for `namespace`.
    pub async fn start(client: &Client, namespace: &str) -> Operator {
        install_crds(client).await;
        let ctx = Arc::new(Context {
            client: client.clone(),
            settings: Settings { worker_image: IMAGE.into() },
            reporter: operator::reporter("tests"),
            monitor: rtu_operator::operator::metrics::OperatorMonitor::new(),
            autoscaler: Arc::default(),
            updaters: None,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(operator::run_controllers(
            client.clone(),
            Scope::Namespaces(vec![namespace.to_string()]),
            ctx,
            async move {
                let _ = stopped.await;
            },
        ));
        Operator { stop: Some(stop), task: Some(task) }
    }

    /// Stops the controllers and waits for in-flight reconciles.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates a namespaced object of kind `K` from its JSON (apiVersion and kind are filled in).
pub async fn create<K>(client: &Client, ns: &str, object: serde_json::Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    try_create(client, ns, object)
        .await
        .unwrap_or_else(|e| panic!("creating a {} in {ns}: {e}", K::kind(&())))
}

/// [`create`], with the API server's refusal (or why the JSON is no `K`) as the error.
pub async fn try_create<K>(
    client: &Client,
    ns: &str,
    object: serde_json::Value,
) -> Result<K, String>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let mut object = object;
    object["apiVersion"] = K::api_version(&()).into();
    object["kind"] = K::kind(&()).into();
    let value: K =
        serde_json::from_value(object).map_err(|e| format!("a {}: {e}", K::kind(&())))?;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &value)
        .await
        .map_err(|e| e.to_string())
}

/// The Deployment of RealTimeUpdater `name` once it is built from the updater's current
/// generation (its template carries the config hash the status reports).
pub async fn deployment_with_status_hash(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Deployment {
    eventually("the Deployment built from the current config", timeout, || async {
        let rtu = Api::<RealTimeUpdater>::namespaced(client.clone(), ns).get(name).await.ok()?;
        let status = rtu.status?;
        (status.observed_generation == rtu.metadata.generation).then_some(())?;
        let hash = status.config_hash?;
        let d = Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
        let template = d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?;
        (template.get("rtu.fastdata.dev/config-hash") == Some(&hash)).then_some(d)
    })
    .await
}

/// Local pods of a test; those still running when it is dropped (a failed test) are killed.
pub struct Pods(pub Vec<LocalPod>);

impl Drop for Pods {
    fn drop(&mut self) {
        for pod in &mut self.0 {
            let _ = pod.child.kill();
            let _ = pod.child.wait();
        }
    }
}

/// Runs the Deployment's pod template as local processes of this build's `rtu` (`rtu
/// local-workers` does the same), one per replica, with their files under `dir`.
pub async fn run_pods(client: &Client, ns: &str, d: &Deployment, dir: &Path) -> Pods {
    let command =
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].command.clone();
    assert_eq!(command.unwrap(), ["rtu"], "the image's binary");
    Pods(start_pods(client, ns, d, dir, Path::new(env!("CARGO_BIN_EXE_rtu"))).await.unwrap())
}

/// SIGTERM, as the kubelet does on a roll, and wait for each process to exit 0.
pub fn terminate(mut pods: Pods) {
    for pod in std::mem::take(&mut pods.0) {
        let log = pod.log.clone();
        assert!(pod.terminate(Duration::from_secs(60)), "worker exit; log {}", log.display());
    }
}

/// `rtu operator` as a process, watching one namespace, leading on a Lease there.
pub struct OperatorProcess {
    pub child: Child,
    /// Its probe server, `127.0.0.1:port`.
    pub addr: String,
    /// Its stdout and stderr (JSON logs).
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts a replica `identity` of the operator for namespace `ns` on Lease `lease`.
    pub fn start(ns: &str, lease: &str, identity: &str) -> OperatorProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("{lease}-{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rtu"))
            .args(["operator", "--namespace", ns, "--lease-namespace", ns, "--lease-name", lease])
            .args(["--identity", identity, "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("KUBECONFIG", env().var("RTU_TEST_KUBECONFIG"))
            .env("RTU_WORKER_IMAGE", IMAGE)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        OperatorProcess { child, addr: format!("127.0.0.1:{port}"), log }
    }

    /// `leader` or `standby` once ready; `None` before (or when the process is gone).
    pub fn role(&self) -> Option<String> {
        drop(std::net::TcpStream::connect(&self.addr).ok()?);
        let (status, body) = http_get(&self.addr, "/readyz");
        (status == 200).then(|| body.trim().trim_start_matches("ready: ").to_string())
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
