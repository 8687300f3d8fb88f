//! The operator examples end to end (`examples/operator/<format>/`, one test per format): the
//! example's manifests applied as users apply them (moved onto the test servers only: Kafka
//! bootstrap and credentials, the MongoDB Secret, a database and a topic prefix of the test's
//! own), reconciled by the operator, its worker Deployment run as local processes against the
//! real Kafka and MongoDB, the generator's change events produced (`examples/generate_events`,
//! the same code), and once every event is committed the projections compared with the
//! example's `expected-projections.json`, document by document and field by field.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use rtu_operator::api::RealTimeUpdater;
use serde_json::Value;

use crate::support::engine::offsets_on;
use crate::support::events::{self, Format};
use crate::support::examples::{Example, dir};
use crate::support::kafka::{create_topic, plaintext_config};
use crate::support::operator::{Operator, deployment_with_status_hash, run_pods, terminate};
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
    let operator = Operator::start(&client, &ns).await;
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
    terminate(pods);
    operator.stop().await;
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
