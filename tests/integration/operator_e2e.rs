//! End to end: the operator (in-process, on the real API server) builds a RealTimeUpdater's
//! Deployment; this test plays the kubelet: it reads the pod template and runs what it says
//! (the container's command, args and env, the engine ConfigMap and the Secret keys "mounted"
//! as files in a directory per pod, a telemetry port per pod as each pod has its own network)
//! as local `rtu engine` processes, one per replica, against the real Kafka and MongoDB. Change
//! events become projection documents; an edit of the RealTimeUpdater is re-rendered, and the
//! restarted workers run the new config.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use mongodb::bson::{Document, doc};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use serde_json::json;

use crate::support::engine::{event, produce};
use crate::support::kafka::{create_topic, read_topic};
use crate::support::operator::{
    Operator, create, deployment_with_status_hash, run_pods, terminate,
};
use crate::support::{env, eventually, kube as k, mongodb as m, unique_name};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn operator_e2e_workers_run_the_rendered_deployment_and_pick_up_an_edit() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-e2e").await;
    let topic = unique_name("op-e2e-customers");
    create_topic(&topic, 2).await;
    let pr_topic = format!("{topic}.pr-update");
    create_topic(&pr_topic, 2).await;
    let database = m::unique_database("op_e2e");
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let operator = Operator::start(&client, &ns).await;

    create::<Secret>(&client, &ns, json!({
        "metadata": { "name": "mongo" }, "stringData": { "uri": env().var("RTU_TEST_MONGODB_URI") }
    }))
    .await;
    create::<SystemOfRecord>(&client, &ns, json!({
        "metadata": { "name": "crm" },
        "spec": {
            "kafka": { "bootstrapServers": env().var("RTU_TEST_KAFKA_BOOTSTRAP") },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": database },
            "adapter": { "type": "debezium" },
            "projections": [ { "name": "pr_customers", "topics": [topic], "fields": [
                { "name": "customer_id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String" },
                { "name": "age", "type": "Number" } ] } ]
        }
    }))
    .await;
    create::<RealTimeUpdater>(
        &client,
        &ns,
        json!({
            "metadata": { "name": "customers" },
            "spec": { "systemOfRecordRef": { "name": "crm" }, "replicas": 2,
                      "worker": { "tuning": { "maxBatchWaitMs": 100, "commitIntervalMs": 200 },
                                  "env": [ { "name": "FROM_SECRET", "valueFrom": {
                                      "secretKeyRef": { "name": "mongo", "key": "uri" } } } ] } }
        }),
    )
    .await;
    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);

    let d = deployment_with_status_hash(&client, &ns, "customers", WAIT).await;
    let pods = run_pods(&client, &ns, &d, &dir).await;
    assert_eq!(pods.0.len(), 2);
    // The env as the kubelet sets it: a Secret key too.
    let environ = std::fs::read(format!("/proc/{}/environ", pods.0[0].child.id())).unwrap();
    let wanted = format!("FROM_SECRET={}", env().var("RTU_TEST_MONGODB_URI"));
    assert!(environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()), "FROM_SECRET not set");
    let events: Vec<(String, String)> =
        (0..3).flat_map(|seq| (0..20).map(move |i| event(&format!("C-{i}"), seq, false))).collect();
    produce(&topic, &events).await;
    let db = m::admin_client().await.database(&database);
    let projection = db.collection::<Document>("pr_customers");
    eventually("20 customers at their last version", WAIT, || async {
        let n = projection.count_documents(doc! { "age": 2 }).await.ok()?;
        (n == 20).then_some(())
    })
    .await;
    let c7 = projection.find_one(doc! { "customer_id": "C-7" }).await.unwrap().unwrap();
    assert_eq!(c7.get_str("name").unwrap(), "C-7-2");

    // Edit: pr-update events on. The operator re-renders; the restarted workers emit them.
    rtus.patch(
        "customers",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "outputs": { "projectionUpdates": {
            "enabled": true, "topicTemplate": format!("{topic}.pr-update"),
            "topics": { "pr_customers": pr_topic } } } } })),
    )
    .await
    .unwrap();
    let rolled = eventually("a new template", WAIT, || async {
        let d2 = deployment_with_status_hash(&client, &ns, "customers", WAIT).await;
        let hash = |d: &Deployment| {
            d.spec
                .clone()?
                .template
                .metadata?
                .annotations?
                .get("rtu.fastdata.dev/config-hash")
                .cloned()
        };
        (hash(&d2) != hash(&d)).then_some(d2)
    })
    .await;
    terminate(pods);
    let pods = run_pods(&client, &ns, &rolled, &dir).await;
    let more: Vec<(String, String)> = (0..5).map(|i| event(&format!("C-{i}"), 3, false)).collect();
    produce(&topic, &more).await;
    let reads = read_topic(&pr_topic, 5, Duration::from_secs(2));
    assert_eq!(reads.len(), 5, "pr-update events after the edit");
    for read in &reads {
        let value = String::from_utf8(read.value.clone().unwrap()).unwrap();
        assert!(value.contains("\"age\":3"), "{value}");
    }
    terminate(pods);
    operator.stop().await;
    db.drop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    k::delete_namespace(&client, &ns).await;
}
