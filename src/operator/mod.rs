//! The controller (`rtu operator`): watches RealTimeUpdaters, the SystemOfRecords, Secrets and
//! ConfigMaps they reference, and their children, in one namespace, a list of namespaces or
//! all; reconciles each RealTimeUpdater through the pipeline of [`reconcile`]; runs only while
//! it holds the leader Lease.

pub mod autoscale;
pub mod autoscaler;
pub mod build;
pub mod dereference;
#[cfg(test)]
mod fixtures;
pub mod lag;
pub mod leader;
pub mod metrics;
pub mod reconcile;
mod render;
pub mod status;
pub mod system_of_record;
pub mod validate;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{RealTimeUpdater, SystemOfRecord};
use reconcile::Context;

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// These namespaces only.
    Namespaces(Vec<String>),
}

type Guarded = DeserializeGuard<RealTimeUpdater>;

/// Runs the controllers of `scope` until `shutdown` completes; in-flight reconciles finish.
pub async fn run_controllers(
    client: Client,
    scope: Scope,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces: Vec<Option<String>> = match scope {
        Scope::All => vec![None],
        Scope::Namespaces(list) => list.into_iter().map(Some).collect(),
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let streams: Vec<BoxStream<'static, ()>> = namespaces
        .into_iter()
        .map(|ns| controller(client.clone(), ns, Arc::clone(&ctx), shutdown.clone()))
        .collect();
    futures::stream::select_all(streams).for_each(|()| async {}).await;
    info!("controllers stopped");
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = ()>,
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One controller over one namespace (or all): RealTimeUpdaters, their children, and what they
/// reference, mapped back to the RealTimeUpdaters that use it.
fn controller<F>(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    shutdown: F,
) -> BoxStream<'static, ()>
where
    F: std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let statuses = sor_statuses(&client, namespace.as_deref(), Arc::clone(&ctx), shutdown.clone());
    let ns = namespace.as_deref();
    let config = watcher::Config::default().any_semantic();
    let labelled = watcher::Config::default().labels(build::OWNER_LABEL).any_semantic();
    let (sor_store, sor_writer) = reflector::store::<SystemOfRecord>();
    let sor_stream =
        reflector(sor_writer, watcher(api::<SystemOfRecord>(&client, ns), config.clone()))
            .default_backoff()
            .touched_objects();
    let controller = Controller::new(api::<Guarded>(&client, ns), config.clone());
    let rtus = controller.store();
    let by_sor = {
        let rtus = rtus.clone();
        move |sor: SystemOfRecord| users_of_sor(&rtus, &sor)
    };
    let by_secret = {
        let (rtus, sors) = (rtus.clone(), sor_store.clone());
        move |s: PartialObjectMeta<Secret>| {
            users_of(&rtus, &sors, &s.namespace().unwrap_or_default(), |sor| {
                dereference::secret_names(sor).contains(&s.name_any())
            })
        }
    };
    let by_config_map = {
        let (rtus, sors) = (rtus.clone(), sor_store.clone());
        move |c: PartialObjectMeta<ConfigMap>| {
            users_of(&rtus, &sors, &c.namespace().unwrap_or_default(), |sor| {
                dereference::config_map_names(sor).contains(&c.name_any())
            })
        }
    };
    let siblings = {
        let rtus = rtus.clone();
        move |changed: Guarded| siblings_of(&rtus, &changed)
    };
    let ctx = Arc::new(Context { updaters: Some(rtus.clone()), ..(*ctx).clone() });
    let controller = controller
        .owns(api::<Deployment>(&client, ns), labelled.clone())
        .owns(api::<Service>(&client, ns), labelled.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), labelled)
        .watches_stream(sor_stream, by_sor)
        .watches_stream(
            watcher(api::<PartialObjectMeta<Secret>>(&client, ns), config.clone())
                .touched_objects(),
            by_secret,
        )
        .watches_stream(
            watcher(api::<PartialObjectMeta<ConfigMap>>(&client, ns), config.clone())
                .touched_objects(),
            by_config_map,
        )
        .watches_stream(ownership_changes(&client, ns), siblings)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .filter_map(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "controller");
            }
            None::<()>
        })
        .boxed();
    futures::stream::select(controller, statuses).boxed()
}

/// The SystemOfRecord status controller: refreshed when the SystemOfRecord or one of its
/// RealTimeUpdaters changes.
fn sor_statuses<F>(
    client: &Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    shutdown: F,
) -> BoxStream<'static, ()>
where
    F: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let config = watcher::Config::default().any_semantic();
    Controller::new(api::<SystemOfRecord>(client, ns), config.clone())
        .watches_stream(ownership_changes(client, ns), |g: Guarded| {
            g.0.ok().map(|r| {
                ObjectRef::new(&r.spec.system_of_record_ref.name)
                    .within(&r.namespace().unwrap_or_default())
            })
        })
        .graceful_shutdown_on(shutdown)
        .run(system_of_record::reconcile, system_of_record::error_policy, ctx)
        .filter_map(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "SystemOfRecord status controller");
            }
            None::<()>
        })
        .boxed()
}

/// What of a RealTimeUpdater decides who owns which projection: its SystemOfRecord, the
/// projections it claims and those its status holds.
type OwnershipKey = Option<(String, Vec<String>, Vec<(String, String)>)>;

/// RealTimeUpdaters whose ownership-relevant fields changed, or that went: a change of one
/// updater's tuning or a status write that moves nothing does not wake its siblings (with
/// hundreds of updaters per SystemOfRecord that fan-out would dominate).
fn ownership_changes(
    client: &Client,
    ns: Option<&str>,
) -> BoxStream<'static, Result<Guarded, watcher::Error>> {
    let seen: std::sync::Mutex<std::collections::HashMap<String, OwnershipKey>> =
        Default::default();
    let key = |g: &Guarded| -> OwnershipKey {
        let r = g.0.as_ref().ok()?;
        let held =
            r.status.iter().flat_map(|s| &s.projections).map(|p| (p.name.clone(), p.state.clone()));
        Some((r.spec.system_of_record_ref.name.clone(), r.spec.projections.clone(), held.collect()))
    };
    let uid = |g: &Guarded| match &g.0 {
        Ok(r) => r.uid().unwrap_or_default(),
        Err(invalid) => invalid.metadata.uid.clone().unwrap_or_default(),
    };
    watcher(api::<Guarded>(client, ns), watcher::Config::default().any_semantic())
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Apply(g) | watcher::Event::InitApply(g)) => {
                    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let changed = seen.insert(uid(&g), key(&g)).is_none_or(|old| old != key(&g));
                    changed.then_some(Ok(g))
                }
                Ok(watcher::Event::Delete(g)) => {
                    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid(&g));
                    Some(Ok(g))
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// The RealTimeUpdaters that reference `sor`.
fn users_of_sor(rtus: &Store<Guarded>, sor: &SystemOfRecord) -> Vec<ObjectRef<Guarded>> {
    let ns = sor.namespace().unwrap_or_default();
    rtus.state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| {
            r.namespace().as_deref() == Some(&ns)
                && r.spec.system_of_record_ref.name == sor.name_any()
        })
        .map(|r| ObjectRef::new(&r.name_any()).within(&ns))
        .collect()
}

/// The RealTimeUpdaters of `namespace` whose SystemOfRecord matches `uses`.
fn users_of(
    rtus: &Store<Guarded>,
    sors: &Store<SystemOfRecord>,
    namespace: &str,
    uses: impl Fn(&SystemOfRecord) -> bool,
) -> Vec<ObjectRef<Guarded>> {
    let names: BTreeSet<String> = sors
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace) && uses(s))
        .map(|s| s.name_any())
        .collect();
    rtus.state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace)
                && names.contains(&r.spec.system_of_record_ref.name)
        })
        .map(|r| ObjectRef::new(&r.name_any()).within(namespace))
        .collect()
}

/// When one RealTimeUpdater changes (or goes), the others of its SystemOfRecord may gain or
/// lose projections.
fn siblings_of(rtus: &Store<Guarded>, changed: &Guarded) -> Vec<ObjectRef<Guarded>> {
    let Ok(changed) = &changed.0 else { return Vec::new() };
    let ns = changed.namespace().unwrap_or_default();
    rtus.state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| {
            r.namespace().as_deref() == Some(&ns)
                && r.spec.system_of_record_ref == changed.spec.system_of_record_ref
                && r.uid() != changed.uid()
        })
        .map(|r| ObjectRef::new(&r.name_any()).within(&ns))
        .collect()
}

/// Who this operator replica's Events say reported them.
pub fn reporter(instance: &str) -> Reporter {
    Reporter { controller: "rtu-operator".into(), instance: Some(instance.into()) }
}

/// How `rtu operator` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which namespaces to watch.
    pub scope: Scope,
    /// The worker image when a RealTimeUpdater names none.
    pub worker_image: String,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub host: String,
    /// Port of `/healthz`, `/readyz`, `/metrics`.
    pub port: u16,
    /// Run only while holding the Lease `lease_namespace/lease_name`.
    pub leader_election: bool,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's name in the Lease and in Events (the pod name).
    pub identity: String,
}

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No Kubernetes client could be configured (kubeconfig or in-cluster).
    #[error("cannot configure the Kubernetes client: {0}")]
    Connect(#[source] kube::Error),
    /// The HTTP endpoints could not be served.
    #[error(transparent)]
    Serve(#[from] crate::probes::ServeError),
    /// The leader Lease could not be used.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// Another replica took the Lease while this one was leading.
    #[error("lost the leader Lease {0}; exiting so the replica restarts as a standby")]
    LostLeadership(String),
}

/// Runs the operator until SIGTERM (then in-flight reconciles finish and the Lease is
/// released) or until leadership is lost.
pub async fn run(options: Options) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Connect)?;
    let monitor = metrics::OperatorMonitor::new();
    monitor.serve(&options.host, options.port).await?;
    monitor.set_started();
    let shutdown = futures::future::FutureExt::shared(Box::pin(crate::process::shutdown_signal()));
    let leadership = if options.leader_election {
        let election = leader::LeaderElection::new(
            client.clone(),
            &options.lease_namespace,
            &options.lease_name,
            &options.identity,
        );
        info!(lease = %format!("{}/{}", options.lease_namespace, options.lease_name), identity = %options.identity, "waiting for the leader Lease");
        tokio::select! {
            acquired = election.acquire() => Some(acquired?),
            () = shutdown.clone() => return Ok(()),
        }
    } else {
        None
    };
    monitor.set_leader(true);
    info!(scope = ?options.scope, "leading: reconciling");
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: validate::Settings { worker_image: options.worker_image.clone() },
        reporter: reporter(&options.identity),
        monitor: Arc::clone(&monitor),
        autoscaler: Arc::default(),
        updaters: None,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controllers =
        tokio::spawn(run_controllers(client, options.scope.clone(), ctx, async move {
            let _ = stopped.await;
        }));
    let lost = async {
        match &leadership {
            Some(l) => l.lost().await,
            None => futures::future::pending().await,
        }
    };
    let lost = tokio::select! {
        () = shutdown => false,
        () = lost => true,
    };
    let _ = stop.send(());
    if let Err(e) = controllers.await {
        warn!(error = %e, "controllers ended abnormally");
    }
    monitor.set_leader(false);
    if lost {
        return Err(OperatorError::LostLeadership(format!(
            "{}/{}",
            options.lease_namespace, options.lease_name
        )));
    }
    if let Some(l) = leadership {
        l.release().await;
    }
    Ok(())
}
