//! The reconcile pipeline of one RealTimeUpdater: decode behind an error boundary →
//! dereference → validate → build → server-side apply (ConfigMap before Deployment, orphans
//! deleted) → status, with Events for what users must see. Invalid input ends as a condition
//! and an Event and waits for a change; only API failures are retried with back-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use super::autoscaler::{Autoscaler, Scaling, Step};
use super::build::{self, Children, OWNER_LABEL};
use super::dereference::{self, DereferenceError};
use super::metrics::OperatorMonitor;
use super::status::{self, ReconcileOutcome, Workers, now};
use super::validate::{self, Settings, default_group};
use crate::api::{RealTimeUpdater, RealTimeUpdaterStatus};

/// The field manager of every server-side apply.
pub const MANAGER: &str = "rtu-operator";

/// How often a reconciled resource is looked at again without any change (drift repair).
const RESYNC: Duration = Duration::from_secs(300);

/// What the reconciler needs.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator-wide settings.
    pub settings: Settings,
    /// Who the Events say reported them.
    pub reporter: Reporter,
    /// Reconcile counts and durations.
    pub monitor: Arc<OperatorMonitor>,
    /// The lag autoscaler of every updater.
    pub autoscaler: Arc<Autoscaler>,
    /// The controller's cache of RealTimeUpdaters (ownership is decided from it, not from a
    /// list request per reconcile); `None`: list them from the API server.
    pub updaters: Option<kube::runtime::reflector::Store<DeserializeGuard<RealTimeUpdater>>>,
}

/// Why a reconcile must be retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading a referenced object failed.
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    /// The API server refused or did not answer an apply.
    #[error("apply {what}: {}", brief(source))]
    Apply {
        /// The child.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// Deleting a child that is no longer built failed.
    #[error("delete {what}: {source}")]
    DeleteOrphan {
        /// The child.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("write status: {0}")]
    Status(kube::Error),
}

impl ReconcileError {
    /// A short CamelCase word for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Dereference(_) => "DereferenceFailed",
            ReconcileError::Apply { .. } => "ApplyFailed",
            ReconcileError::DeleteOrphan { .. } => "DeleteOrphanFailed",
            ReconcileError::Status(_) => "StatusFailed",
        }
    }
}

/// An API server error as a condition message can show it: the server's own message for a
/// refusal (not the whole `Status` object), the error otherwise.
fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
        other => other.to_string(),
    }
}

/// Reconciles one RealTimeUpdater (or reports one that does not decode).
pub async fn reconcile(
    guard: Arc<DeserializeGuard<RealTimeUpdater>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(rtu) => pipeline(rtu, &ctx).await,
        Err(invalid) => undecodable(invalid, &ctx).await,
    };
    match &result {
        Ok(_) => ctx.monitor.reconcile_succeeded("RealTimeUpdater", started.elapsed()),
        Err(e) => ctx.monitor.reconcile_failed("RealTimeUpdater", e.reason(), started.elapsed()),
    }
    result
}

/// Back-off after a failed reconcile.
pub fn error_policy(
    _guard: Arc<DeserializeGuard<RealTimeUpdater>>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    warn!(error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn pipeline(rtu: &RealTimeUpdater, ctx: &Context) -> Result<Action, ReconcileError> {
    let namespace = rtu.namespace().unwrap_or_default();
    let name = rtu.name_any();
    let key = format!("{namespace}/{name}");
    let previous = rtu.status.clone().unwrap_or_default();
    if rtu.meta().deletion_timestamp.is_some() {
        ctx.autoscaler.forget(&key, &ctx.monitor, &previous);
        return Ok(Action::await_change());
    }
    if rtu.spec.paused {
        let workers = workers(ctx, &namespace, &name, rtu.spec.replicas).await;
        write_status(ctx, rtu, &previous, &ReconcileOutcome::Paused { workers }).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let refs = dereference::dereference(&ctx.client, rtu, ctx.updaters.as_ref()).await?;
    let validated = match validate::validate(rtu, &refs, &ctx.settings) {
        Ok(v) => v,
        Err(invalid) => {
            let reason = invalid.reason().as_str();
            let message = invalid.to_string();
            let ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
            if ready.is_none_or(|c| c.reason != reason || c.message != message) {
                warn!(rtu = %format!("{namespace}/{name}"), %reason, %message, "refused");
                publish(
                    ctx,
                    &rtu.object_ref(&()),
                    EventType::Warning,
                    reason,
                    "Validate",
                    message.clone(),
                )
                .await;
            }
            write_status(ctx, rtu, &previous, &ReconcileOutcome::Invalid { reason, message })
                .await?;
            return Ok(Action::await_change());
        }
    };
    let mut validated = validated;
    let scaling = autoscale(ctx, rtu, &key, &validated, &refs, &previous).await;
    if let Some(scaling) = &scaling {
        validated.replicas = scaling.replicas;
        for note in &scaling.notes {
            let kind = if note.warning { EventType::Warning } else { EventType::Normal };
            info!(rtu = %key, reason = note.reason, message = %note.message, "autoscaling");
            publish(
                ctx,
                &rtu.object_ref(&()),
                kind,
                note.reason,
                "Autoscale",
                note.message.clone(),
            )
            .await;
        }
    }
    let children = build::build(&validated);
    let deployment = match apply_children(ctx, &namespace, &name, &children).await {
        Ok(d) => d,
        Err(e) => {
            publish(
                ctx,
                &rtu.object_ref(&()),
                EventType::Warning,
                e.reason(),
                "Apply",
                e.to_string(),
            )
            .await;
            write_status(ctx, rtu, &previous, &ReconcileOutcome::Failed { message: e.to_string() })
                .await?;
            return Err(e);
        }
    };
    if previous.config_hash.as_deref() != Some(validated.config_hash.as_str()) {
        let message = match &previous.config_hash {
            Some(old) => format!("config {old} -> {}: the workers roll", validated.config_hash),
            None => format!("config {}: workers created", validated.config_hash),
        };
        info!(rtu = %format!("{namespace}/{name}"), %message, "applied");
        publish(ctx, &rtu.object_ref(&()), EventType::Normal, "ConfigApplied", "Apply", message)
            .await;
    }
    let outcome = ReconcileOutcome::Applied {
        workers: deployment_workers(&deployment, validated.replicas),
        config_hash: validated.config_hash,
        consumer_group: validated.engine.kafka.group_id,
        projections: validated.projections,
        stopped: rtu.spec.stopped,
        autoscaling: scaling.as_ref().map(|s| Box::new(s.outcome.clone())),
    };
    write_status(ctx, rtu, &previous, &outcome).await?;
    Ok(Action::requeue(scaling.map_or(RESYNC, |s| s.requeue.min(RESYNC))))
}

/// The lag autoscaler's step, when `spec.autoscaling` is enabled and the workers are not
/// stopped; otherwise its state of this updater is dropped.
async fn autoscale(
    ctx: &Context,
    rtu: &RealTimeUpdater,
    key: &str,
    validated: &validate::Validated,
    refs: &dereference::Dereferenced,
    previous: &RealTimeUpdaterStatus,
) -> Option<Scaling> {
    let spec = rtu.spec.autoscaling.as_ref().filter(|a| a.enabled && !rtu.spec.stopped);
    let Some(spec) = spec else {
        ctx.autoscaler.forget(key, &ctx.monitor, previous);
        return None;
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    let running = match api.get_opt(&validated.name).await {
        Ok(d) => d,
        Err(e) => {
            warn!(rtu = %key, error = %e, "cannot read the workers' Deployment");
            None
        }
    };
    let step = Step {
        key: key.to_string(),
        spec,
        spec_replicas: rtu.spec.replicas,
        validated,
        refs,
        previous,
        running: running.as_ref(),
        config_changes: previous.config_hash.as_deref().is_some_and(|h| h != validated.config_hash),
    };
    Some(ctx.autoscaler.step(step, &ctx.monitor).await)
}

/// A RealTimeUpdater that does not decode: an Event and a `Ready=False` condition, then wait
/// for the next change of it.
async fn undecodable(invalid: &InvalidObject, ctx: &Context) -> Result<Action, ReconcileError> {
    let meta = &invalid.metadata;
    let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
        return Ok(Action::await_change());
    };
    let message = format!("the resource does not decode: {}", invalid.error);
    warn!(rtu = %format!("{namespace}/{name}"), %message, "refused");
    let reference = ObjectReference {
        api_version: Some(format!("{}/v1alpha1", crate::api::GROUP)),
        kind: Some("RealTimeUpdater".into()),
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    publish(ctx, &reference, EventType::Warning, "InvalidSpec", "Decode", message.clone()).await;
    let status = status::next(
        &RealTimeUpdaterStatus::default(),
        meta.generation,
        &ReconcileOutcome::Invalid { reason: "InvalidSpec", message },
        build::selector_string(name),
        &now(),
    );
    let api: Api<RealTimeUpdater> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(ReconcileError::Status)?;
    Ok(Action::await_change())
}

/// Applies the children in order and deletes the ones no longer built; returns the Deployment
/// as the API server has it.
async fn apply_children(
    ctx: &Context,
    namespace: &str,
    name: &str,
    children: &Children,
) -> Result<Deployment, ReconcileError> {
    // Destructured, so a child added to `Children` cannot be left unapplied.
    let Children { config_map, deployment, service, pdb } = children;
    apply(ctx, namespace, config_map).await?;
    let deployment = apply(ctx, namespace, deployment).await?;
    apply(ctx, namespace, service).await?;
    let mut pdbs = Vec::new();
    if let Some(pdb) = pdb {
        apply(ctx, namespace, pdb).await?;
        pdbs.push(pdb.name_any());
    }
    // The ConfigMap, Deployment and Service are always built, under names derived from the
    // (immutable) updater name, so only a PodDisruptionBudget can be left over (disabled).
    delete_orphans::<PodDisruptionBudget>(ctx, namespace, name, &pdbs).await?;
    Ok(deployment)
}

async fn apply<K>(ctx: &Context, namespace: &str, child: &K) -> Result<K, ReconcileError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = child.name_any();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(child)).await.map_err(
        |source| ReconcileError::Apply {
            what: format!("{} {namespace}/{name}", K::kind(&())),
            source,
        },
    )
}

async fn delete_orphans<K>(
    ctx: &Context,
    namespace: &str,
    owner: &str,
    keep: &[String],
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let what = |n: &str| format!("{} {namespace}/{n}", K::kind(&()));
    let list = api
        .list_metadata(&ListParams::default().labels(&format!("{OWNER_LABEL}={owner}")))
        .await
        .map_err(|source| ReconcileError::DeleteOrphan { what: what("*"), source })?;
    for orphan in list.items.iter().map(|o| o.name_any()).filter(|n| !keep.contains(n)) {
        info!(child = %what(&orphan), "deleting a child that is no longer built");
        match api.delete(&orphan, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::DeleteOrphan { what: what(&orphan), source });
            }
        }
    }
    Ok(())
}

/// The workers as the existing Deployment reports them (none when it does not exist).
async fn workers(ctx: &Context, namespace: &str, name: &str, desired: i32) -> Workers {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(d)) => {
            deployment_workers(&d, d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(desired))
        }
        Ok(None) => Workers { desired, ..Workers::default() },
        Err(e) => {
            warn!(error = %e, "cannot read the workers' Deployment");
            Workers { desired, ..Workers::default() }
        }
    }
}

fn deployment_workers(d: &Deployment, desired: i32) -> Workers {
    let s = d.status.clone().unwrap_or_default();
    // A Deployment the controller has not looked at yet reports the previous template's pods.
    let seen = s.observed_generation.is_some() && s.observed_generation >= d.metadata.generation;
    Workers {
        desired,
        replicas: s.replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        updated: if seen { s.updated_replicas.unwrap_or(0) } else { 0 },
    }
}

/// Writes the next status when it differs from the previous one.
async fn write_status(
    ctx: &Context,
    rtu: &RealTimeUpdater,
    previous: &RealTimeUpdaterStatus,
    outcome: &ReconcileOutcome,
) -> Result<(), ReconcileError> {
    let name = rtu.name_any();
    let mut next = status::next(
        previous,
        rtu.meta().generation,
        outcome,
        build::selector_string(&name),
        &now(),
    );
    if next.consumer_group.is_none() {
        next.consumer_group =
            Some(rtu.spec.consumer_group.clone().unwrap_or_else(|| default_group(rtu)));
    }
    if &next == previous {
        return Ok(());
    }
    let api: Api<RealTimeUpdater> =
        Api::namespaced(ctx.client.clone(), &rtu.namespace().unwrap_or_default());
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": next })))
        .await
        .map_err(ReconcileError::Status)?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note)),
        action: action.to_string(),
        secondary: None,
    };
    // A recorder of its own per Event: kube's recorder folds Events of the same reason into one
    // series that keeps the first note, and each of these says something new (the operator
    // emits them on changes only, never once per reconcile).
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, regarding).await {
        warn!(error = %e, "cannot publish an Event");
    }
}

/// Event notes are at most 1 kB.
fn truncate(text: &str) -> String {
    if text.len() <= 1000 {
        return text.to_string();
    }
    let mut end = 990;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
