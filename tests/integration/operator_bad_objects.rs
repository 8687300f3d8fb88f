//! Hostile input for the operator (docs/failures.md): a batch of custom resources the API
//! server accepts but the operator cannot run (a missing SystemOfRecord, Secret, key or
//! ConfigMap, an unknown cast, a broken strategy schema, a JavaScript function that does not
//! parse, a projection nobody defines, two updaters claiming one projection, names too long
//! for the children), all created at once against `rtu operator` as a process. The process
//! never exits (0 restarts), stays ready, says on each object what is wrong (`Degraded=True`
//! and a reason), and still reconciles a good updater created after them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use serde_json::{Value, json};

use crate::support::engine::{http_get, metric};
use crate::support::operator::{OperatorProcess, create, install_crds, try_create};
use crate::support::{eventually, kube as k, unique_name};

const WAIT: Duration = Duration::from_secs(60);

fn system_of_record(name: &str, patch: Value) -> Value {
    let mut sor = json!({
        "metadata": { "name": name },
        "spec": {
            "kafka": { "bootstrapServers": "kafka:9092" },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
            "adapter": { "type": "debezium" },
            "projections": [ { "name": "pr_customers", "topics": [format!("{name}.customers")],
                "fields": [ { "name": "customer_id", "type": "String", "primaryKey": true },
                            { "name": "name", "type": "String" } ] } ]
        }
    });
    merge(&mut sor, patch);
    sor
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn updater(name: &str, sor: &str, patch: Value) -> Value {
    let mut rtu =
        json!({ "metadata": { "name": name }, "spec": { "systemOfRecordRef": { "name": sor } } });
    merge(&mut rtu, patch);
    rtu
}

/// `(status, reason, message)` of condition `kind` of updater `name`.
async fn condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    kind: &str,
) -> Option<(String, String, String)> {
    let rtu = Api::<RealTimeUpdater>::namespaced(client.clone(), ns).get(name).await.ok()?;
    let c = rtu.status?.conditions.into_iter().find(|c| c.type_ == kind)?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test]
async fn operator_bad_objects_never_restart_the_operator_and_each_says_why() {
    let client = k::client().await;
    install_crds(&client).await;
    let ns = k::namespace(&client, "op-bad").await;
    let mut operator = OperatorProcess::start(&ns, &unique_name("rtu-leader"), "op");
    eventually("the operator leads", WAIT, || {
        let operator = &operator;
        async move { (operator.role().as_deref() == Some("leader")).then_some(()) }
    })
    .await;
    create::<Secret>(&client, &ns, json!({ "metadata": { "name": "mongo" }, "stringData": { "uri": "mongodb://mongo:27017" } })).await;
    create::<Secret>(
        &client,
        &ns,
        json!({ "metadata": { "name": "no-uri" }, "stringData": { "other": "x" } }),
    )
    .await;
    create::<ConfigMap>(
        &client,
        &ns,
        json!({ "metadata": { "name": "broken-schemas" },
        "data": { "erSchema.json": "{ not json", "projectionChangesSchema.json": "[]" } }),
    )
    .await;
    create::<ConfigMap>(
        &client,
        &ns,
        json!({ "metadata": { "name": "broken-js" },
        "data": { "castName.js": "module.exports = function (value {" } }),
    )
    .await;
    create::<SystemOfRecord>(&client, &ns, system_of_record("crm", json!({}))).await;

    // 63 characters: a valid object name, but `<name>-metrics` is not a valid Service name.
    let long = format!("u{}", "x".repeat(62));
    // (what, the SystemOfRecord it needs, the updater)
    let cases: Vec<(&str, Option<Value>, Value)> = vec![
        ("a SystemOfRecord that does not exist", None, updater("no-sor", "missing", json!({}))),
        (
            "a Secret that does not exist",
            Some(system_of_record(
                "no-secret",
                json!({ "spec": { "mongodb": { "uriSecretRef": { "name": "absent", "key": "uri" } } } }),
            )),
            updater("no-secret", "no-secret", json!({})),
        ),
        (
            "a Secret without the key",
            Some(system_of_record(
                "no-key",
                json!({ "spec": { "mongodb": { "uriSecretRef": { "name": "no-uri", "key": "uri" } } } }),
            )),
            updater("no-key", "no-key", json!({})),
        ),
        (
            "an unknown cast",
            Some(system_of_record(
                "bad-cast",
                json!({ "spec": { "projections": [ { "name": "pr_customers", "topics": ["bad-cast.customers"],
            "fields": [ { "name": "customer_id", "type": "String", "primaryKey": true, "cast": "castToNothing" } ] } ] } }),
            )),
            updater("bad-cast", "bad-cast", json!({})),
        ),
        (
            "a strategy schema that is not JSON",
            Some(system_of_record(
                "bad-schema",
                json!({ "spec": {
            "erSchemaRef": { "name": "broken-schemas", "key": "erSchema.json" },
            "projectionChangesSchemaRef": { "name": "broken-schemas", "key": "projectionChangesSchema.json" } } }),
            )),
            updater(
                "bad-schema",
                "bad-schema",
                json!({ "spec": { "outputs": {
                    "projectionChanges": { "enabled": true },
                    "strategies": { "automatic": true } } } }),
            ),
        ),
        (
            "a JavaScript cast that does not parse",
            Some(system_of_record(
                "bad-js",
                json!({ "spec": {
            "customFunctionsRef": { "name": "broken-js" },
            "projections": [ { "name": "pr_customers", "topics": ["bad-js.customers"],
                "fields": [ { "name": "customer_id", "type": "String", "primaryKey": true, "cast": "__fromFile__[castName]" } ] } ] } }),
            )),
            updater("bad-js", "bad-js", json!({})),
        ),
        (
            "a projection the SystemOfRecord does not define",
            None,
            updater("no-projection", "crm", json!({ "spec": { "projections": ["pr_nope"] } })),
        ),
        (
            "a ConfigMap that does not exist",
            Some(system_of_record(
                "no-map",
                json!({ "spec": { "customFunctionsRef": { "name": "absent-map" } } }),
            )),
            updater("no-map", "no-map", json!({})),
        ),
        (
            "a name too long for its children",
            Some(system_of_record("long", json!({}))),
            updater(&long, "long", json!({})),
        ),
    ];
    let mut created = Vec::new();
    for (what, sor, rtu) in &cases {
        if let Some(sor) = sor {
            let name = sor["metadata"]["name"].as_str().unwrap();
            try_create::<SystemOfRecord>(&client, &ns, sor.clone())
                .await
                .unwrap_or_else(|e| panic!("SystemOfRecord {name} ({what}): {e}"));
        }
        let name = rtu["metadata"]["name"].as_str().unwrap().to_string();
        match try_create::<RealTimeUpdater>(&client, &ns, rtu.clone()).await {
            Ok(_) => created.push((*what, name)),
            Err(e) => println!("{what}: refused by the API server ({e})"),
        }
    }
    // Two updaters claiming one projection: the younger one is refused.
    try_create::<RealTimeUpdater>(&client, &ns, updater("first", "crm", json!({}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    try_create::<RealTimeUpdater>(&client, &ns, updater("second", "crm", json!({}))).await.unwrap();
    created.push(("a projection another updater owns", "second".into()));

    for (what, name) in &created {
        let (status, reason, message) =
            eventually(&format!("{name} ({what}) to say why"), WAIT, || {
                let client = &client;
                let ns = &ns;
                async move {
                    let degraded = condition(client, ns, name, "Degraded").await?;
                    (degraded.0 == "True").then_some(degraded)
                }
            })
            .await;
        println!("{what}: {name}: Degraded={status} {reason}: {message}");
        let ready = condition(&client, &ns, name, "Ready").await.unwrap();
        assert_eq!(ready.0, "False", "{name}: Ready");
        assert!(!message.is_empty(), "{name}: no message");
    }
    // A while of retries and requeues: the process never exited.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(operator.alive(), "the operator exited; log {}", operator.log.display());
    assert_eq!(operator.role().as_deref(), Some("leader"), "no longer ready");
    assert_eq!(http_get(&operator.addr, "/healthz").0, 200);
    let (_, text) = http_get(&operator.addr, "/metrics");
    let reconciles: f64 = text
        .lines()
        .filter(|l| l.starts_with(r#"rtu_operator_reconciles_total{kind="RealTimeUpdater""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        reconciles >= created.len() as f64,
        "{reconciles} reconciles for {} updaters:\n{text}",
        created.len()
    );
    let panics = operator.log_text().lines().filter(|l| l.contains("panicked")).count();
    assert_eq!(panics, 0, "panics in {}", operator.log.display());

    // And a good updater after all of them is built.
    create::<SystemOfRecord>(&client, &ns, system_of_record("good", json!({}))).await;
    try_create::<RealTimeUpdater>(&client, &ns, updater("good", "good", json!({}))).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("the good updater's Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("good").await.ok()?.map(|_| ()) }
    })
    .await;
    assert!(operator.alive(), "the operator exited; log {}", operator.log.display());
    let ok = r#"rtu_operator_reconciles_total{kind="RealTimeUpdater",result="ok"}"#;
    println!(
        "{} bad updaters: operator restarts 0, {reconciles} reconciles, no panic, then the good one reconciled ({ok} {:?})",
        created.len(),
        metric(&http_get(&operator.addr, "/metrics").1, ok)
    );
    crate::support::engine::signal_pid(operator.child.id(), "TERM");
    assert!(operator.child.wait().unwrap().success(), "log {}", operator.log.display());
    k::delete_namespace(&client, &ns).await;
}
