//! The demo `scripts/demo.sh` runs on the local test servers: installs the chart with Helm,
//! runs the operator Deployment it installed as the kubelet would (its command, args and env,
//! with only its ServiceAccount's token: the chart's RBAC is all it has) and the workers the
//! operator's Deployment describes (`rtu local-workers`; there is no kubelet here), applies a
//! Debezium SystemOfRecord and a RealTimeUpdater, feeds change
//! events and prints what happened: projection documents, pr-update events, the updater's
//! status. The operator and the workers keep running afterwards; the last lines say how to
//! look further and how to stop. With `RTU_DEMO_STOP=1` (as `scripts/test.sh` runs it) they
//! get SIGTERM at the end instead, and the demo fails unless both exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use rtu_operator::local_workers::start_as_service_account;
use serde_json::json;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/demo.sh"))
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Polls `probe` every 250 ms until it answers or `what` times out.
async fn wait<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "demo: timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts `rtu ARGS` in the background; it outlives the demo on purpose (stopped by `kill`).
#[allow(clippy::zombie_processes)]
fn spawn(rtu: &str, args: &[&str], log: &PathBuf) -> u32 {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(rtu)
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {rtu}: {e}"));
    child.id()
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let rtu = var("RTU_BIN");
    let bootstrap = var("RTU_TEST_KAFKA_BOOTSTRAP");
    let mongodb_uri = var("RTU_TEST_MONGODB_URI");
    let run_dir = PathBuf::from(var("RTU_DEMO_DIR"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let ns = format!("demo-{}", std::process::id());
    let topic = format!("{ns}.crm.customers");
    let pr_topic = format!("{topic}.pr-update");
    let database = format!("demo_{}", std::process::id());

    step("helm install rtu-operator (CRDs, operator Deployment, RBAC, metrics Service)");
    let helm = Command::new(var("RTU_TEST_HELM"))
        .args([
            "upgrade",
            "--install",
            "rtu-operator",
            "charts/rtu-operator",
            "--namespace",
            "rtu-system",
        ])
        .arg("--create-namespace")
        .output()
        .unwrap();
    assert!(helm.status.success(), "helm: {}", String::from_utf8_lossy(&helm.stderr));
    println!(
        "    {}",
        String::from_utf8_lossy(&helm.stdout).lines().take(4).collect::<Vec<_>>().join("\n    ")
    );
    println!(
        "    (this API server has no nodes: the operator and its workers run as local processes below)"
    );

    let client = Client::try_default().await.unwrap();
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();

    step(&format!("Kafka topics {topic} (3 partitions) and {pr_topic}"));
    let admin: AdminClient<_> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let topics = [
        NewTopic::new(&topic, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&pr_topic, 3, TopicReplication::Fixed(1)),
    ];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }

    step(
        "Deployment rtu-system/rtu-operator as a local process: its command, args and env, as ServiceAccount rtu-operator (a TokenRequest token, the chart's ClusterRole)",
    );
    let admin = Kubeconfig::read().unwrap();
    let pod = start_as_service_account(
        &client,
        &admin,
        "rtu-system",
        "rtu-operator",
        &run_dir,
        std::path::Path::new(&rtu),
    )
    .await
    .unwrap();
    let operator = pod.child.id();
    let operator_log = pod.log.clone();
    println!(
        "    rtu {} (pid {operator}, KUBECONFIG {}: the token only)",
        std::fs::read_to_string(format!("/proc/{operator}/cmdline"))
            .unwrap_or_default()
            .split('\0')
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
            .trim(),
        pod.dir.join("kubeconfig").display()
    );

    step(
        "kubectl apply: Secret crm-mongodb, SystemOfRecord crm (Debezium), RealTimeUpdater crm (2 replicas, pr-update on)",
    );
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "crm-mongodb" }, "stringData": { "uri": mongodb_uri }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let sor: SystemOfRecord = serde_json::from_value(json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1", "kind": "SystemOfRecord", "metadata": { "name": "crm" },
        "spec": {
            "kafka": { "bootstrapServers": bootstrap },
            "mongodb": { "uriSecretRef": { "name": "crm-mongodb", "key": "uri" }, "database": database },
            "adapter": { "type": "debezium" },
            "projections": [ { "name": "pr_customers", "topics": [topic], "fields": [
                { "name": "customer_id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String", "cast": "castToString" },
                { "name": "city", "type": "String" } ] } ]
        }
    }))
    .unwrap();
    Api::<SystemOfRecord>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sor)
        .await
        .unwrap();
    let updater: RealTimeUpdater = serde_json::from_value(json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1", "kind": "RealTimeUpdater", "metadata": { "name": "crm" },
        "spec": {
            "systemOfRecordRef": { "name": "crm" }, "replicas": 2,
            "outputs": { "projectionUpdates": { "enabled": true, "topics": { "pr_customers": pr_topic } } },
            "worker": { "tuning": { "maxBatchWaitMs": 100 } }
        }
    }))
    .unwrap();
    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    rtus.create(&PostParams::default(), &updater).await.unwrap();
    let hash = wait("the operator to build the workers", || async {
        rtus.get("crm").await.ok()?.status?.config_hash
    })
    .await;
    println!(
        "    the operator built ConfigMap crm-engine, Deployment crm, Service crm-metrics, PodDisruptionBudget crm (config {hash})"
    );

    step(&format!(
        "rtu local-workers --namespace {ns} --name crm   (runs Deployment crm's pod template, 2 replicas)"
    ));
    let workers_dir = run_dir.join("workers");
    let workers_log = run_dir.join("local-workers.log");
    let workers = spawn(
        &rtu,
        &[
            "local-workers",
            "--namespace",
            &ns,
            "--name",
            "crm",
            "--dir",
            workers_dir.to_str().unwrap(),
        ],
        &workers_log,
    );

    step(
        "feed 45 Debezium change events: 20 customers created, 20 moved to another city, 5 deleted",
    );
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let cities = ["Milano", "Torino", "Roma", "Napoli"];
    let mut events = Vec::new();
    for i in 0..20 {
        let row = json!({ "customer_id": format!("C-{i:02}"), "name": format!("Customer {i}"), "city": cities[i % 4] });
        events.push((i, json!({ "before": null, "after": row, "op": "c" })));
    }
    for i in 0..20 {
        let row = json!({ "customer_id": format!("C-{i:02}"), "name": format!("Customer {i}"), "city": cities[(i + 1) % 4] });
        events.push((i, json!({ "before": null, "after": row, "op": "u" })));
    }
    for i in 15..20 {
        let row = json!({ "customer_id": format!("C-{i:02}") });
        events.push((i, json!({ "before": row, "after": null, "op": "d" })));
    }
    for (i, value) in &events {
        let key = json!({ "customer_id": format!("C-{i:02}") }).to_string();
        let value = value.to_string();
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(10))
            .await
            .unwrap();
    }

    let db = mongodb::Client::with_uri_str(&mongodb_uri).await.unwrap().database(&database);
    let projection = db.collection::<Document>("pr_customers");
    wait("the projection to hold every change", || async {
        let moved = projection.count_documents(doc! { "__STATE__": "PUBLIC" }).await.ok()?;
        let deleted = projection.count_documents(doc! { "__STATE__": "DELETED" }).await.ok()?;
        let c00 = projection.find_one(doc! { "customer_id": "C-00" }).await.ok()??;
        (moved == 15 && deleted == 5 && c00.get_str("city").ok()? == "Torino").then_some(())
    })
    .await;

    step(&format!(
        "MongoDB {database}.pr_customers: 15 PUBLIC, 5 soft-deleted (DELETED); three of them:"
    ));
    let mut cursor = projection.find(doc! {}).sort(doc! { "customer_id": 1 }).await.unwrap();
    let mut shown = 0;
    while let Some(d) = cursor.next().await {
        let d = d.unwrap();
        let id = d.get_str("customer_id").unwrap_or_default().to_string();
        if ["C-00", "C-01", "C-19"].contains(&id.as_str()) {
            println!(
                "    {{ customer_id: {id}, name: {:?}, city: {:?}, __STATE__: {} }}",
                d.get_str("name").unwrap_or_default(),
                d.get_str("city").unwrap_or_default(),
                d.get_str("__STATE__").unwrap_or_default()
            );
            shown += 1;
        }
    }
    assert_eq!(shown, 3);

    step(&format!("pr-update events on {pr_topic}"));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{ns}-demo-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&pr_topic]).unwrap();
    let mut by_operation = std::collections::BTreeMap::<String, usize>::new();
    let mut example = String::new();
    let mut stream = consumer.stream();
    while by_operation.values().sum::<usize>() < events.len() {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await
        else {
            break;
        };
        let value: serde_json::Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        let op = value["operationType"].as_str().unwrap_or("?").to_string();
        if op == "DELETE" && example.is_empty() {
            example = value.to_string();
        }
        *by_operation.entry(op).or_default() += 1;
    }
    println!("    {} events: {by_operation:?}", by_operation.values().sum::<usize>());
    println!("    one of them: {}", example.chars().take(220).collect::<String>());

    step(&format!("kubectl -n {ns} get rtu crm -o yaml   (status)"));
    let rtu_now = rtus.get("crm").await.unwrap();
    let status = rtu_now.status.clone().unwrap_or_default();
    for c in &status.conditions {
        println!("    {:<21} {:<5} {:<16} {}", c.type_, c.status, c.reason, c.message);
    }
    println!(
        "    consumerGroup {}, configHash {}, projections {:?}",
        status.consumer_group.unwrap_or_default(),
        status.config_hash.unwrap_or_default(),
        status.projections.iter().map(|p| format!("{}={}", p.name, p.state)).collect::<Vec<_>>()
    );
    println!(
        "    (Ready stays False here: no kubelet reports the pods ready; the local workers are the pods' stand-ins)"
    );

    if std::env::var("RTU_DEMO_STOP").is_ok_and(|v| v == "1") {
        let mut operator_process = pod.child;
        for (what, pid) in [("rtu local-workers", workers), ("rtu operator", operator)] {
            Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
            println!("    SIGTERM to {what} (pid {pid})");
        }
        let status = operator_process.wait().unwrap();
        assert!(
            status.success(),
            "rtu operator exited with {status}; log: {}",
            operator_log.display()
        );
        wait(&format!("rtu local-workers (pid {workers}) to exit"), || async {
            let stat = std::fs::read_to_string(format!("/proc/{workers}/stat")).unwrap_or_default();
            // Gone, or a zombie (exited; its parent is this process).
            (stat.is_empty()
                || stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')))
            .then_some(())
        })
        .await;
        println!("\nDone in {:.0?}; the operator and the workers stopped.", started.elapsed());
        return;
    }
    println!(
        "\nDone in {:.0?}. Still running: rtu operator (pid {operator}) and rtu local-workers (pid {workers}).
Look further:
  eval \"$(scripts/testenv env)\"
  kubectl -n {ns} get sor,rtu,configmap,deployment,service,pdb
  kubectl -n {ns} get rtu {} -o yaml; kubectl -n {ns} describe rtu crm      # status, Events
  kubectl -n {ns} edit rtu crm        # e.g. spec.replicas: 3 -> the local workers roll
  less {}   {}   {}/*/engine.log
Stop:
  kill {operator} {workers}; scripts/testenv down",
        started.elapsed(),
        rtu_now.name_any(),
        operator_log.display(),
        workers_log.display(),
        workers_dir.display()
    );
}
