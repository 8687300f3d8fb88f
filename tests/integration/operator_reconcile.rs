//! The operator against the real kube-apiserver + kube-controller-manager: a SystemOfRecord and
//! RealTimeUpdaters in, ConfigMap / Deployment / Service / PodDisruptionBudget out, with their
//! content, owner references, status conditions, Events, rolls on config and Secret changes
//! (and none on metadata changes), projection conflicts, invalid specs, paused, stopped, the
//! scale subresource and garbage collection.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use rtu_operator::config::EngineConfig;
use serde_json::{Value, json};

use crate::support::events::Format;
use crate::support::examples::Example;
use crate::support::operator::{IMAGE, Operator, create};
use crate::support::{eventually, kube as k};

const WAIT: Duration = Duration::from_secs(60);

/// A SystemOfRecord `crm` with two projections, its Secrets and ER-schema ConfigMaps.
async fn system_of_record(client: &Client, ns: &str) {
    for (name, data) in [
        ("mongo", json!({ "uri": "mongodb://user:s3cret@mongo:27017/crm" })),
        ("kafka-user", json!({ "username": "rtu", "password": "hunter2" })),
    ] {
        create::<Secret>(client, ns, json!({ "metadata": { "name": name }, "stringData": data }))
            .await;
    }
    create::<ConfigMap>(client, ns, json!({
        "metadata": { "name": "crm-schemas" },
        "data": {
            "erSchema.json": r#"{"version":"1.0.0","config":{}}"#,
            "projectionChangesSchema.json": r#"{"version":"1.0.0","config":{"sv_customers":{"paths":[{"path":["pr_customers"],"identifier":{"customerId":"customer_id"}}]}}}"#
        }
    }))
    .await;
    create::<SystemOfRecord>(client, ns, json!({
        "metadata": { "name": "crm" },
        "spec": {
            "kafka": {
                "bootstrapServers": "kafka:9092",
                "authentication": {
                    "type": "scramSha512",
                    "usernameSecretRef": { "name": "kafka-user", "key": "username" },
                    "passwordSecretRef": { "name": "kafka-user", "key": "password" }
                }
            },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
            "adapter": { "type": "debezium" },
            "erSchemaRef": { "name": "crm-schemas", "key": "erSchema.json" },
            "projectionChangesSchemaRef": { "name": "crm-schemas", "key": "projectionChangesSchema.json" },
            "projections": [
                { "name": "pr_customers", "topics": ["crm.customers"], "fields": [
                    { "name": "customer_id", "type": "String", "primaryKey": true },
                    { "name": "name", "type": "String" } ] },
                { "name": "pr_orders", "topics": ["crm.orders"], "fields": [
                    { "name": "order_id", "type": "String", "primaryKey": true },
                    { "name": "customer_id", "type": "String" } ] }
            ]
        }
    }))
    .await;
}

async fn create_rtu(client: &Client, ns: &str, name: &str, spec: Value) {
    create::<RealTimeUpdater>(client, ns, json!({ "metadata": { "name": name }, "spec": spec }))
        .await;
}

async fn patch_rtu(client: &Client, ns: &str, name: &str, patch: Value) {
    Api::<RealTimeUpdater>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Waits until the RealTimeUpdater's `type` condition has `status` (and `reason`, if given) for
/// its current generation; returns the resource.
async fn condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> RealTimeUpdater {
    let api: Api<RealTimeUpdater> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{name}: {type_}={status} {reason:?}"), WAIT, || async {
        let rtu = api.get(name).await.ok()?;
        let c = rtu.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?.clone();
        let current = c.observed_generation == rtu.metadata.generation;
        (current && c.status == status && reason.is_none_or(|r| c.reason == r)).then_some(rtu)
    })
    .await
}

fn template_hash(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
        ["rtu.fastdata.dev/config-hash"]
        .clone()
}

/// Waits until the Deployment's template carries `hash`.
async fn deployment_with_hash(client: &Client, ns: &str, name: &str, hash: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(&format!("Deployment {name} with config hash {hash}"), WAIT, || async {
        let d = api.get_opt(name).await.ok()??;
        (template_hash(&d) == hash).then_some(d)
    })
    .await
}

#[tokio::test]
async fn operator_builds_children_with_content_and_rolls_on_config_and_secret_changes() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-build").await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns).await;
    create_rtu(&client, &ns, "customers", json!({
        "systemOfRecordRef": { "name": "crm" },
        "projections": ["pr_customers"],
        "replicas": 2,
        "outputs": {
            "projectionUpdates": { "enabled": true, "topicTemplate": "acme.dev.crm.{projection}.pr-update" },
            "projectionChanges": { "enabled": true },
            "strategies": { "automatic": true }
        },
        "errorPolicy": { "type": "deadLetter", "topic": "crm.dlq" }
    }))
    .await;

    let rtu = condition(&client, &ns, "customers", "Degraded", "False", Some("Reconciled")).await;
    let status = rtu.status.clone().unwrap();
    assert_eq!(status.observed_generation, rtu.metadata.generation);
    assert_eq!(status.consumer_group.as_deref(), Some(format!("{ns}.customers").as_str()));
    let hash = status.config_hash.clone().unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    // No kubelet runs here: the pods never become ready, and the condition says so.
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "WorkersNotReady"));
    assert_eq!(ready.observed_generation, rtu.metadata.generation);
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/name=rtu-worker,rtu.fastdata.dev/realtimeupdater=customers")
    );
    assert_eq!(
        status.projections.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["pr_customers"]
    );

    // The ConfigMap holds the engine config the workers read, which the engine accepts.
    let cm =
        Api::<ConfigMap>::namespaced(client.clone(), &ns).get("customers-engine").await.unwrap();
    let data = cm.data.clone().unwrap();
    let file = std::env::temp_dir().join(format!("{ns}-config.yaml"));
    std::fs::write(&file, &data["config.yaml"]).unwrap();
    let engine = EngineConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.kafka.group_id, format!("{ns}.customers"));
    assert_eq!(
        engine.projections.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["pr_customers"]
    );
    assert_eq!(
        engine.outputs.projection_updates.as_ref().unwrap().topics["pr_customers"],
        "acme.dev.crm.pr_customers.pr-update"
    );
    assert_eq!(engine.outputs.projection_changes.as_ref().unwrap().collection, "fd-pc-crm");
    assert_eq!(
        engine.outputs.strategies.automatic.as_ref().unwrap().er_schema,
        "/etc/rtu/erSchema.json"
    );
    assert!(data["erSchema.json"].contains("\"version\""));
    assert_eq!(engine.mongodb.uri.file.as_deref(), Some("/var/run/secrets/rtu/mongo/uri"));
    // Credentials are never in the ConfigMap.
    let all: String = data.values().cloned().collect();
    for secret in ["s3cret", "hunter2", "mongodb://"] {
        assert!(!all.contains(secret), "the ConfigMap holds {secret:?}");
    }

    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("customers").await.unwrap();
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("RealTimeUpdater", "customers", Some(true))
    );
    assert_eq!(owner.uid, rtu.uid().unwrap());
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(template_hash(&d), hash);
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(c.args.clone().unwrap(), ["engine", "--config", "/etc/rtu/config.yaml"]);
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    let secrets = serde_json::to_string(&pod.volumes).unwrap();
    assert!(
        secrets.contains("\"path\":\"mongo/uri\"")
            && secrets.contains("\"path\":\"kafka-user/password\""),
        "{secrets}"
    );
    let svc =
        Api::<Service>::namespaced(client.clone(), &ns).get("customers-metrics").await.unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 9464);
    let pdb =
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get("customers").await.unwrap();
    assert_eq!(pdb.owner_references()[0].name, "customers");
    let events = events_for(&client, &ns, "customers").await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("ConfigApplied")), "{events:?}");
    // Nor in the status or an Event.
    let seen = serde_json::to_string(&(&rtu.status, &events)).unwrap();
    for secret in ["s3cret", "hunter2"] {
        assert!(!seen.contains(secret), "status or Events hold {secret:?}");
    }

    // A label-only change does not roll the workers.
    let generation = d.metadata.generation;
    patch_rtu(&client, &ns, "customers", json!({ "metadata": { "labels": { "team": "data" } } }))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_label =
        Api::<Deployment>::namespaced(client.clone(), &ns).get("customers").await.unwrap();
    assert_eq!(template_hash(&after_label), hash);
    assert_eq!(after_label.metadata.generation, generation);

    // A spec change rolls them.
    patch_rtu(
        &client,
        &ns,
        "customers",
        json!({ "spec": { "worker": { "tuning": { "maxBatchMessages": 500 } } } }),
    )
    .await;
    let rtu = condition(&client, &ns, "customers", "Degraded", "False", None).await;
    let hash2 = rtu.status.unwrap().config_hash.unwrap();
    assert_ne!(hash2, hash);
    deployment_with_hash(&client, &ns, "customers", &hash2).await;

    // A change of a referenced Secret's value rolls them too.
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "kafka-user",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "password": "changed" } })),
        )
        .await
        .unwrap();
    let hash3 = eventually("a new config hash after the Secret changed", WAIT, || async {
        let rtu =
            Api::<RealTimeUpdater>::namespaced(client.clone(), &ns).get("customers").await.ok()?;
        rtu.status?.config_hash.filter(|h| *h != hash2)
    })
    .await;
    deployment_with_hash(&client, &ns, "customers", &hash3).await;

    // The PodDisruptionBudget goes when disabled.
    patch_rtu(
        &client,
        &ns,
        "customers",
        json!({ "spec": { "worker": { "podDisruptionBudget": { "enabled": false } } } }),
    )
    .await;
    eventually("the PodDisruptionBudget deleted", WAIT, || async {
        let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
            .get_opt("customers")
            .await
            .ok()?;
        pdb.is_none().then_some(())
    })
    .await;

    // Deleting the RealTimeUpdater garbage-collects its children (kube-controller-manager).
    Api::<RealTimeUpdater>::namespaced(client.clone(), &ns)
        .delete("customers", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("children garbage-collected", WAIT, || async {
        let d =
            Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("customers").await.ok()?;
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("customers-engine")
            .await
            .ok()?;
        let svc = Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt("customers-metrics")
            .await
            .ok()?;
        (d.is_none() && cm.is_none() && svc.is_none()).then_some(())
    })
    .await;
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

#[tokio::test]
async fn operator_refuses_overlaps_and_invalid_specs_with_conditions_and_events() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-refuse").await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns).await;
    create_rtu(
        &client,
        &ns,
        "first",
        json!({ "systemOfRecordRef": { "name": "crm" }, "projections": ["pr_customers"] }),
    )
    .await;
    condition(&client, &ns, "first", "Degraded", "False", None).await;
    create_rtu(&client, &ns, "second", json!({ "systemOfRecordRef": { "name": "crm" }, "projections": ["pr_customers", "pr_orders"] })).await;
    let second =
        condition(&client, &ns, "second", "Ready", "False", Some("ProjectionConflict")).await;
    let ready = second.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        ready.message,
        "spec.projections: projection pr_customers is owned by RealTimeUpdater first"
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("second")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("second-engine")
            .await
            .unwrap()
            .is_none()
    );
    eventually("a ProjectionConflict Event", WAIT, || async {
        let events = events_for(&client, &ns, "second").await;
        events.iter().any(|e| e.reason.as_deref() == Some("ProjectionConflict")).then_some(())
    })
    .await;
    // An RTU with no list takes what is left. (Age is compared at the creation timestamp's
    // one-second resolution, then by name: wait so "rest" is younger than "second".)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_rtu(&client, &ns, "rest", json!({ "systemOfRecordRef": { "name": "crm" } })).await;
    let rest = condition(&client, &ns, "rest", "Degraded", "False", None).await;
    assert_eq!(
        rest.status.unwrap().projections.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["pr_orders"]
    );

    // When the owner goes, the refused one is reconciled again; pr_orders is held by "rest"
    // (a running updater keeps what it holds), so it is still refused, now naming "rest".
    Api::<RealTimeUpdater>::namespaced(client.clone(), &ns)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    // "rest" (an empty list) also takes the freed pr_customers, whichever of the two is
    // reconciled first ("second" is refused as a whole while pr_orders is held), so "second"
    // ends refused on both, naming "rest" only.
    eventually("second refused because of rest only", WAIT, || async {
        let rtu =
            Api::<RealTimeUpdater>::namespaced(client.clone(), &ns).get("second").await.ok()?;
        let ready = rtu.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        let only_rest = "spec.projections: projection pr_customers is owned by RealTimeUpdater rest; spec.projections: projection pr_orders is owned by RealTimeUpdater rest";
        (ready.message == only_rest && ready.reason == "ProjectionConflict").then_some(())
    })
    .await;

    // Invalid specs: an unknown projection and a missing Secret name their field paths.
    create_rtu(
        &client,
        &ns,
        "typo",
        json!({ "systemOfRecordRef": { "name": "crm" }, "projections": ["pr_custmers"] }),
    )
    .await;
    let typo = condition(&client, &ns, "typo", "Ready", "False", Some("InvalidSpec")).await;
    let message =
        typo.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(
        message.starts_with(
            "spec.projections[0]: SystemOfRecord crm has no projection \"pr_custmers\""
        ),
        "{message}"
    );
    create_rtu(&client, &ns, "nosor", json!({ "systemOfRecordRef": { "name": "erp" } })).await;
    let nosor = condition(&client, &ns, "nosor", "Ready", "False", Some("MissingReference")).await;
    let message =
        nosor.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(
        message.contains("spec.systemOfRecordRef.name: no SystemOfRecord \"erp\""),
        "{message}"
    );

    // The API server itself refuses what the schema and CEL rules say is wrong.
    let api: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    let bad: RealTimeUpdater = serde_json::from_value(json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1", "kind": "RealTimeUpdater",
        "metadata": { "name": "bad" },
        "spec": { "systemOfRecordRef": { "name": "crm" }, "errorPolicy": { "type": "deadLetter" } }
    }))
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err().to_string();
    assert!(err.contains("topic is required with type deadLetter"), "{err}");
    let err = api
        .patch(
            "rest",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "systemOfRecordRef": { "name": "erp" } } })),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("systemOfRecordRef is immutable"), "{err}");

    // The operator is still alive and reconciling: the fixed name is now checked for
    // ownership (the freed pr_customers went to "rest", which takes every free projection).
    patch_rtu(&client, &ns, "typo", json!({ "spec": { "projections": ["pr_customers"] } })).await;
    let typo = condition(&client, &ns, "typo", "Ready", "False", Some("ProjectionConflict")).await;
    let message =
        typo.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert_eq!(
        message,
        "spec.projections: projection pr_customers is owned by RealTimeUpdater rest"
    );
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn operator_paused_stopped_and_scale_subresource() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale").await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns).await;
    create_rtu(&client, &ns, "rtu", json!({ "systemOfRecordRef": { "name": "crm" } })).await;
    let rtu = condition(&client, &ns, "rtu", "Degraded", "False", None).await;
    let hash = rtu.status.clone().unwrap().config_hash.unwrap();
    let applied_generation = rtu.metadata.generation;

    // kubectl scale: the scale subresource sets spec.replicas; the Deployment follows.
    let api: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    let scale = api.get_scale("rtu").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(
        scale.status.unwrap().selector.as_deref(),
        Some("app.kubernetes.io/name=rtu-worker,rtu.fastdata.dev/realtimeupdater=rtu")
    );
    api.patch_scale(
        "rtu",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
    )
    .await
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("Deployment scaled to 3", WAIT, || async {
        let d = deployments.get("rtu").await.ok()?;
        (d.spec?.replicas == Some(3)).then_some(())
    })
    .await;

    // Paused: a spec change is not applied; the old observedGeneration stays.
    let rtu = condition(&client, &ns, "rtu", "Degraded", "False", None).await;
    let before_pause = rtu.status.unwrap().observed_generation;
    patch_rtu(&client, &ns, "rtu", json!({ "spec": { "paused": true } })).await;
    condition(&client, &ns, "rtu", "ReconciliationPaused", "True", Some("SpecPaused")).await;
    patch_rtu(&client, &ns, "rtu", json!({ "spec": { "worker": { "logLevel": "debug" } } })).await;
    let paused = condition(&client, &ns, "rtu", "ReconciliationPaused", "True", None).await;
    assert_eq!(paused.status.clone().unwrap().observed_generation, before_pause);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(template_hash(&deployments.get("rtu").await.unwrap()), hash);
    assert!(applied_generation < paused.metadata.generation);

    // Unpaused: the change lands.
    patch_rtu(&client, &ns, "rtu", json!({ "spec": { "paused": false } })).await;
    let resumed = condition(&client, &ns, "rtu", "ReconciliationPaused", "False", None).await;
    let new_hash = resumed.status.unwrap().config_hash.unwrap();
    assert_ne!(new_hash, hash);
    deployment_with_hash(&client, &ns, "rtu", &new_hash).await;

    // Stopped: zero workers, everything else kept.
    patch_rtu(&client, &ns, "rtu", json!({ "spec": { "stopped": true } })).await;
    let stopped = condition(&client, &ns, "rtu", "Stopped", "True", None).await;
    assert_eq!(stopped.spec.replicas, 3);
    eventually("Deployment at 0 replicas", WAIT, || async {
        let d = deployments.get("rtu").await.ok()?;
        (d.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("rtu-engine")
            .await
            .unwrap()
            .is_some()
    );
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

/// What `kubectl explain --recursive` shows comes from the API server's OpenAPI v3 document:
/// every field of both kinds, down to the embedded Kubernetes types, has a description there.
#[tokio::test]
async fn operator_crds_openapi_describes_every_field() {
    let client = k::client().await;
    crate::support::operator::install_crds(&client).await;
    let request =
        http::Request::get("/openapi/v3/apis/rtu.fastdata.dev/v1alpha1").body(Vec::new()).unwrap();
    let doc: Value = client.request(request).await.unwrap();
    fn walk(path: &str, schema: &Value, fields: &mut usize, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let field = format!("{path}.{name}");
                *fields += 1;
                let described = prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described && !["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
                    missing.push(field.clone());
                }
                walk(&field, prop, fields, missing);
            }
        }
        for nested in ["items", "additionalProperties"] {
            if let Some(inner) = schema.get(nested).filter(|v| v.is_object()) {
                walk(&format!("{path}[]"), inner, fields, missing);
            }
        }
    }
    for kind in ["RealTimeUpdater", "SystemOfRecord"] {
        let schema = &doc["components"]["schemas"][format!("dev.fastdata.rtu.v1alpha1.{kind}")];
        let (mut fields, mut missing) = (0, Vec::new());
        walk(kind, schema, &mut fields, &mut missing);
        assert!(missing.is_empty(), "{kind}: fields without a description: {missing:?}");
        assert!(fields > 40, "{kind}: only {fields} fields found; is the schema published?");
        println!("{kind}: {fields} fields, each with a description");
    }
}

/// The commented examples in `examples/operator/<format>/` are accepted by the API server
/// (schema and CEL rules) as written, and reconciled by the operator once their Secrets exist
/// (all three side by side in one namespace).
#[tokio::test]
async fn operator_examples_are_accepted_and_reconciled() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-examples").await;
    let operator = Operator::start(&client, &ns).await;
    for format in Format::ALL {
        let example = Example::load(format);
        example.apply(&client, &ns).await;
        let rtu =
            condition(&client, &ns, example.name(), "Degraded", "False", Some("Reconciled")).await;
        let projections = example.sor["spec"]["projections"].as_array().unwrap().len();
        assert_eq!(rtu.status.unwrap().projections.len(), projections, "{format:?}");
    }
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

/// The automatic strategy's files are checked as the engine will check them, against every
/// projection of the SystemOfRecord (those another updater writes are read-only for this one):
/// a valid edit of the ConfigMap rolls the workers, a broken one is refused with its path.
#[tokio::test]
async fn operator_checks_strategy_schemas_and_rolls_on_configmap_changes() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-schemas").await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let er = r#"{"version":"1.0.0","config":{
        "pr_orders":{"outgoing":{"pr_customers":{"conditions":{"o_c":{"condition":{"customer_id":"customer_id"}}}}}},
        "pr_customers":{"outgoing":{"pr_orders":{"conditions":{"c_o":{"condition":{"customer_id":"customer_id"},"oneToMany":true}}}}}}}"#;
    let pc = |first: &str| {
        format!(
            r#"{{"version":"1.0.0","config":{{"sv_customers":{{"paths":[{{"path":["{first}","pr_customers"],"identifier":{{"customerId":"customer_id"}}}}]}}}}}}"#
        )
    };
    let set = |er: String, pc: String| {
        let maps = maps.clone();
        async move {
            let patch =
                json!({ "data": { "erSchema.json": er, "projectionChangesSchema.json": pc } });
            maps.patch("crm-schemas", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        }
    };
    set(er.to_string(), pc("pr_orders")).await;
    create_rtu(
        &client,
        &ns,
        "orders",
        json!({ "systemOfRecordRef": { "name": "crm" }, "projections": ["pr_orders"] }),
    )
    .await;
    create_rtu(&client, &ns, "customers", json!({
        "systemOfRecordRef": { "name": "crm" }, "projections": ["pr_customers"],
        "outputs": { "projectionChanges": { "enabled": true }, "strategies": { "automatic": true } }
    }))
    .await;
    let rtu = condition(&client, &ns, "customers", "Degraded", "False", Some("Reconciled")).await;
    let hash = rtu.status.unwrap().config_hash.unwrap();
    let cm = maps.get("customers-engine").await.unwrap().data.unwrap();
    assert!(cm["config.yaml"].contains("readProjections"), "{}", cm["config.yaml"]);

    // A valid change of the schema ConfigMap rolls the workers.
    set(er.replace("\"oneToMany\":true", "\"oneToMany\":false"), pc("pr_orders")).await;
    let new_hash = eventually("a new hash after the ConfigMap changed", WAIT, || async {
        let rtu =
            Api::<RealTimeUpdater>::namespaced(client.clone(), &ns).get("customers").await.ok()?;
        rtu.status?.config_hash.filter(|h| *h != hash)
    })
    .await;
    deployment_with_hash(&client, &ns, "customers", &new_hash).await;

    // A broken one is refused before any worker sees it.
    set(er.to_string(), pc("pr_nope")).await;
    let refused = eventually("the broken schema refused", WAIT, || async {
        let rtu =
            Api::<RealTimeUpdater>::namespaced(client.clone(), &ns).get("customers").await.ok()?;
        let ready = rtu.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "InvalidSpec").then_some(ready.message)
    })
    .await;
    assert!(
        refused.starts_with("SystemOfRecord crm: spec.projectionChangesSchemaRef (ConfigMap crm-schemas, key projectionChangesSchema.json): /config/sv_customers/paths/0/path/0: unknown projection \"pr_nope\""),
        "{refused}"
    );
    deployment_with_hash(&client, &ns, "customers", &new_hash).await;
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}
