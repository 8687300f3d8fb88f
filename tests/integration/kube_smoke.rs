//! Smoke tests of the real kube-apiserver + kube-controller-manager: a CRD generated from a
//! Rust type, server-side apply with a field manager, the `/status` subresource, a watch, the
//! garbage collector deleting an owned ConfigMap, and the Deployment / ReplicaSet controllers.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{eventually, kube as k};

const MANAGER: &str = "rtu-smoke-test";

/// A resource that exists only for these tests.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "smoke.rtu-operator.test",
    version = "v1",
    kind = "SmokeWidget",
    namespaced,
    status = "SmokeWidgetStatus"
)]
pub struct SmokeWidgetSpec {
    /// How big.
    pub size: i32,
}

/// What the "controller" saw.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmokeWidgetStatus {
    /// The size last observed.
    pub observed_size: i32,
}

/// Applies the SmokeWidget CRD (idempotent) and waits until it is Established.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SmokeWidget::crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await.unwrap();
    eventually("the SmokeWidget CRD to be Established", Duration::from_secs(30), || async {
        let crd = crds.get(&name).await.ok()?;
        let conditions = crd.status?.conditions?;
        conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn kube_crd_apply_status_watch_and_garbage_collection() {
    let client = k::client().await;
    install_crd(&client).await;
    let ns = k::namespace(&client, "smoke-crd").await;
    let widgets: Api<SmokeWidget> = Api::namespaced(client.clone(), &ns);
    let ssa = PatchParams::apply(MANAGER);

    let manifest = |size: i32| {
        json!({
            "apiVersion": SmokeWidget::api_version(&()),
            "kind": SmokeWidget::kind(&()),
            "metadata": { "name": "w1" },
            "spec": { "size": size },
        })
    };
    let created = widgets.patch("w1", &ssa, &Patch::Apply(manifest(1))).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managers = created.managed_fields();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(MANAGER)
                && m.operation.as_deref() == Some("Apply")),
        "field manager {MANAGER} not recorded: {managers:?}"
    );

    // Watch from now on, then write the status subresource and see the event.
    let mut events =
        watcher(widgets.clone(), watcher::Config::default().fields("metadata.name=w1"))
            .applied_objects()
            .boxed();
    let status = json!({
        "apiVersion": SmokeWidget::api_version(&()),
        "kind": SmokeWidget::kind(&()),
        "status": { "observedSize": 1 },
    });
    widgets.patch_status("w1", &ssa, &Patch::Apply(status)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(w) = events.try_next().await.unwrap() {
            if w.status.as_ref().map(|s| s.observed_size) == Some(1) {
                return w;
            }
        }
        panic!("watch stream ended");
    })
    .await
    .expect("no watch event carrying the new status within 30s");
    assert_eq!(seen.metadata.generation, Some(1), "a status write must not bump generation");

    let updated = widgets.patch("w1", &ssa, &Patch::Apply(manifest(2))).await.unwrap();
    assert_eq!((updated.spec.size, updated.metadata.generation), (2, Some(2)));
    assert_eq!(updated.status.map(|s| s.observed_size), Some(1), "spec apply kept status");

    // A ConfigMap owned by the widget goes when the widget goes.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = updated.metadata.clone();
    let owner_ref = SmokeWidget { metadata: owner, spec: updated.spec, status: None }
        .controller_owner_ref(&())
        .unwrap();
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "w1-child", "ownerReferences": [owner_ref] },
        "data": { "k": "v" },
    }))
    .unwrap();
    configmaps.create(&PostParams::default(), &child).await.unwrap();
    widgets.delete("w1", &DeleteParams::background()).await.unwrap();
    // The garbage collector refreshes its view of new CRD kinds every 30 s.
    eventually(
        "the garbage collector to delete the owned ConfigMap",
        Duration::from_secs(120),
        || {
            let configmaps = configmaps.clone();
            async move { configmaps.get_opt("w1-child").await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn kube_deployment_controller_creates_replicaset_and_pods() {
    let client = k::client().await;
    let ns = k::namespace(&client, "smoke-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }))
    .unwrap();
    deployments
        .patch("web", &PatchParams::apply(MANAGER), &Patch::Apply(&deployment))
        .await
        .unwrap();

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let labels = ListParams::default().labels("app=web");
    eventually("a ReplicaSet and 2 Pods for the Deployment", Duration::from_secs(60), || async {
        let rs = replicasets.list(&labels).await.ok()?;
        let pods = pods.list(&labels).await.ok()?;
        (rs.items.len() == 1 && pods.items.len() == 2).then_some(())
    })
    .await;
    let status = eventually("Deployment status replicas = 2", Duration::from_secs(60), || async {
        let status = deployments.get("web").await.ok()?.status?;
        (status.replicas == Some(2)).then_some(status)
    })
    .await;
    // No scheduler or kubelet: pods stay Pending, so none is available.
    assert_eq!(status.available_replicas.unwrap_or(0), 0);
    for pod in pods.list(&labels).await.unwrap() {
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }
    k::delete_namespace(&client, &ns).await;
}
