//! The operator examples end to end (`examples/operator/<format>/`, one test per format): the
//! example's manifests applied as users apply them (moved onto the test servers only: Kafka
//! bootstrap and credentials, the MongoDB Secret, a database and a topic prefix of the test's
//! own), reconciled by the operator, its worker Deployment run as local processes against the
//! real Kafka and MongoDB, the generator's change events produced (`examples/generate_events`,
//! the same code), and once every event is committed the projections compared with the
//! example's `expected-projections.json`, document by document and field by field. The
//! operator runs as a process (`rtu operator`), so that at the end the secrets scan can read
//! its log and probes: no credential of the run (the Kafka SCRAM password, the MongoDB URI and
//! its password) is in a ConfigMap, an Event, a resource or its status, a child, a log line of
//! the operator or a worker, or any `/metrics` output.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use rtu_operator::api::RealTimeUpdater;
use serde_json::Value;

use crate::support::engine::{http_get, offsets_on};
use crate::support::events::{self, Format};
use crate::support::examples::{Example, dir};
use crate::support::kafka::{create_topic, plaintext_config};
use crate::support::operator::{
    OperatorProcess, Pods, deployment_with_status_hash, install_crds, run_pods, terminate,
};
use crate::support::secrets::Scan;
use crate::support::{env, eventually, kube as k, mongodb as m, unique_name};

const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 3;

/// Every directory of `examples/operator/` is a format the generator knows, and each
/// SystemOfRecord reads exactly the topics the generator writes to.
#[test]
fn operator_examples_read_the_topics_the_generator_writes() {
    let root = dir(Format::Debezium).parent().unwrap().to_path_buf();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["debezium", "golden-gate", "iidr"]);
    for name in names {
        let format = Format::parse(&name).unwrap_or_else(|| panic!("no generator for {name}"));
        let mut from_sor = Example::load(format).topics();
        let mut from_generator: Vec<String> =
            events::topics(format).into_iter().map(String::from).collect();
        from_sor.sort();
        from_generator.sort();
        assert_eq!(from_sor, from_generator, "{name}: the SystemOfRecord's topics");
    }
}

/// The topics the rendered engine config names (ingestion, pr-update, dead letter), as a
/// platform team creates them before the workers start (the test Kafka creates none itself).
async fn create_topics_of(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map = maps.get(&format!("{name}-engine")).await.unwrap();
    let config: Value = rtu_operator::yaml::from_str(&map.data.unwrap()["config.yaml"]).unwrap();
    let mut ingestion = Vec::new();
    for p in config["projections"].as_array().unwrap() {
        ingestion.extend(
            p["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()),
        );
    }
    let mut outputs: Vec<String> = config["outputs"]["projectionUpdates"]["topics"]
        .as_object()
        .map(|m| m.values().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    outputs.extend(config["errorPolicy"]["topic"].as_str().map(String::from));
    for topic in ingestion.iter().chain(&outputs) {
        create_topic(topic, PARTITIONS).await;
    }
    ingestion
}

async fn example_end_to_end(format: Format) {
    let started = Instant::now();
    let client = k::client().await;
    let ns = k::namespace(&client, &format!("op-ex-{}", format.name())).await;
    let prefix = format!("{}.", unique_name("ex"));
    let database = m::unique_database("op_ex");
    let mut example = Example::load(format);
    example.isolate(&prefix, &database);
    let name = example.name().to_string();
    install_crds(&client).await;
    let mut operator = OperatorProcess::start(&ns, &unique_name("rtu-leader"), "op");
    eventually("the operator leads", WAIT, || {
        let operator = &operator;
        async move { (operator.role().as_deref() == Some("leader")).then_some(()) }
    })
    .await;
    example.apply(&client, &ns).await;

    let d = deployment_with_status_hash(&client, &ns, &name, WAIT).await;
    let topics = create_topics_of(&client, &ns, &name).await;
    let work = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&work).unwrap();
    let pods = run_pods(&client, &ns, &d, &work).await;
    let records = events::records(format);
    let produced =
        events::produce(&plaintext_config(), &prefix, PARTITIONS, &records).await.unwrap();

    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    let group = rtus.get(&name).await.unwrap().status.unwrap().consumer_group.unwrap();
    let logs: Vec<String> = pods.0.iter().map(|p| p.log.display().to_string()).collect();
    let what = format!("every change event committed by the workers (logs {logs:?})");
    eventually(&what, WAIT, || {
        let (group, topics) = (group.clone(), topics.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let bootstrap = env().var("RTU_TEST_KAFKA_BOOTSTRAP");
                topics.iter().all(|t| {
                    offsets_on(bootstrap, &group, t, PARTITIONS)
                        .iter()
                        .all(|(c, end)| c.unwrap_or(0) == *end)
                })
            })
            .await
            .unwrap()
            .then_some(())
        }
    })
    .await;
    let db = m::admin_client().await.database(&database);
    let actual = example.projections(&db).await;
    let expected = example.expected_sorted();
    assert_eq!(
        actual,
        expected,
        "{}: the projections differ from examples/operator/{}/expected-projections.json\nactual:\n{}\nworker logs: {logs:?}",
        format.name(),
        format.name(),
        serde_json::to_string_pretty(&actual).unwrap()
    );
    let counts: Vec<String> = expected
        .as_object()
        .unwrap()
        .iter()
        .map(|(c, docs)| format!("{c}: {}", docs.as_array().unwrap().len()))
        .collect();
    println!(
        "{}: {produced} change events -> {} ({} worker(s)), equal to expected-projections.json, in {:.1?}",
        format.name(),
        counts.join(", "),
        pods.0.len(),
        started.elapsed()
    );
    scan_for_secrets(&client, &ns, &mut operator, &pods, format).await;
    terminate(pods);
    crate::support::engine::signal_pid(operator.child.id(), "TERM");
    let status = operator.child.wait().unwrap();
    assert!(status.success(), "operator exit {status}; log {}", operator.log.display());
    db.drop().await.unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn operator_example_debezium_end_to_end() {
    example_end_to_end(Format::Debezium).await;
}

#[tokio::test]
async fn operator_example_iidr_end_to_end() {
    example_end_to_end(Format::Iidr).await;
}

#[tokio::test]
async fn operator_example_golden_gate_end_to_end() {
    example_end_to_end(Format::GoldenGate).await;
}

/// The probe address a worker logged at start.
fn probe_address(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        let fields = &entry["fields"];
        (fields["message"].as_str()? == "telemetry listening (/healthz, /readyz, /metrics)")
            .then(|| fields["addr"].as_str().map(str::to_string))?
    })
}

/// No credential of the run in anything but its Secret. The scan is shown to work first: it
/// finds every credential in the Secrets themselves.
async fn scan_for_secrets(
    client: &Client,
    ns: &str,
    operator: &mut OperatorProcess,
    pods: &Pods,
    format: Format,
) {
    let credentials = Scan::credentials(client, ns).await;
    let mut control = Scan::default();
    for secret in Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        for (key, value) in secret.data.unwrap_or_default() {
            control.add(format!("Secret key {key}"), String::from_utf8(value.0).unwrap());
        }
    }
    for c in &credentials {
        assert!(!control.hits(&c.value).is_empty(), "the scan misses {} in its own Secret", c.what);
    }
    let mut scan = Scan::default();
    scan.namespace(client, ns).await;
    assert!(operator.alive(), "the operator exited; log {}", operator.log.display());
    scan.add("operator log", operator.log_text());
    scan.add("operator /metrics", http_get(&operator.addr, "/metrics").1);
    scan.add("operator /readyz", http_get(&operator.addr, "/readyz").1);
    for (i, pod) in pods.0.iter().enumerate() {
        let log = std::fs::read_to_string(&pod.log).unwrap();
        let addr = probe_address(&log)
            .unwrap_or_else(|| panic!("no probe address in {}", pod.log.display()));
        for path in ["/metrics", "/readyz", "/healthz"] {
            scan.add(format!("worker {i} {path}"), http_get(&addr, path).1);
        }
        scan.add(format!("worker {i} log"), log);
    }
    let kafka = credentials.iter().any(|c| c.value == env().var("RTU_TEST_KAFKA_SASL_PASSWORD"));
    let mongo = credentials.iter().any(|c| c.value == env().var("RTU_TEST_MONGODB_URI"));
    assert!(mongo, "the MongoDB URI is not among the run's credentials");
    let mut found = Vec::new();
    for c in &credentials {
        let hits = scan.hits(&c.value);
        if !hits.is_empty() {
            found.push(format!("{} in {hits:?}", c.what));
        }
    }
    let (sources, bytes) = scan.size();
    assert!(found.is_empty(), "credentials outside their Secret: {found:#?}");
    println!(
        "{}: secrets scan: {} credential(s) (Kafka SCRAM password: {kafka}, MongoDB URI and its password), {sources} sources, {bytes} bytes: 0 found",
        format.name(),
        credentials.len(),
    );
}
