//! Lag autoscaling on the real servers (docs/autoscaling.md): the operator (in-process, on the
//! real API server) reads the consumer group's lag from the real Kafka and sets the workers'
//! Deployment from it. A backlog scales up to the partition cap, local workers (`rtu
//! local-workers`' code, a kubelet stand-in) drain it and the workers scale down after the down
//! window; Kafka unreachable and a missing topic hold the workers and say why, with one Event;
//! a lag that flaps at every read (the test commits the group's offsets itself) changes the
//! workers once; a manual `spec.replicas` edit is reported as overridden, and turning
//! autoscaling off hands the replicas back to `spec.replicas`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use mongodb::bson::doc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rtu_operator::api::{AutoscalingStatus, RealTimeUpdater, SystemOfRecord};
use serde_json::{Value, json};

use crate::support::engine::{event, produce_on};
use crate::support::kafka::{create_topic_on, plaintext_config};
use crate::support::operator::{Operator, create};
use crate::support::servers::PrivateServers;
use crate::support::{env, eventually, kube as k, mongodb as m, unique_name};

const WAIT: Duration = Duration::from_secs(90);

/// A SystemOfRecord `crm` on `bootstrap` with one projection per topic.
async fn system_of_record(client: &Client, ns: &str, bootstrap: &str, topics: &[&str]) -> String {
    system_of_record_with(client, ns, json!({ "bootstrapServers": bootstrap }), topics).await
}

/// [`system_of_record`] with `kafka` as its `spec.kafka`.
async fn system_of_record_with(client: &Client, ns: &str, kafka: Value, topics: &[&str]) -> String {
    let database = m::unique_database("autoscale");
    create::<Secret>(client, ns, json!({
        "metadata": { "name": "mongo" }, "stringData": { "uri": env().var("RTU_TEST_MONGODB_URI") }
    }))
    .await;
    let projections: Vec<Value> = topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            json!({ "name": format!("pr_{i}"), "topics": [topic], "fields": [
                { "name": "customer_id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String" },
                { "name": "age", "type": "Number" } ] })
        })
        .collect();
    create::<SystemOfRecord>(client, ns, json!({
        "metadata": { "name": "crm" },
        "spec": {
            "kafka": kafka,
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": database },
            "adapter": { "type": "debezium" },
            "projections": projections
        }
    }))
    .await;
    database
}

/// A RealTimeUpdater `name` of `crm` with `autoscaling`.
async fn updater(client: &Client, ns: &str, name: &str, autoscaling: Value) {
    create::<RealTimeUpdater>(
        client,
        ns,
        json!({
            "metadata": { "name": name },
            "spec": { "systemOfRecordRef": { "name": "crm" }, "autoscaling": autoscaling,
                      "worker": { "tuning": { "maxBatchWaitMs": 50, "commitIntervalMs": 200 } } }
        }),
    )
    .await;
}

async fn autoscaling(client: &Client, ns: &str, name: &str) -> Option<AutoscalingStatus> {
    let rtu = Api::<RealTimeUpdater>::namespaced(client.clone(), ns).get(name).await.ok()?;
    rtu.status?.autoscaling
}

async fn condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let rtu = Api::<RealTimeUpdater>::namespaced(client.clone(), ns).get(name).await.ok()?;
    let c = rtu.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

async fn deployment_replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
    d.spec?.replicas
}

/// The Events of `name` with `reason`.
async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.message.unwrap_or_default())
        .collect()
}

/// `kubectl get rtu NAME -o yaml`, as printed by the test.
async fn print_yaml(client: &Client, ns: &str, name: &str, what: &str) {
    let mut rtu = Api::<RealTimeUpdater>::namespaced(client.clone(), ns).get(name).await.unwrap();
    rtu.metadata.managed_fields = None;
    println!(
        "--- {what}: kubectl get rtu {name} -o yaml\n{}",
        rtu_operator::yaml::to_string(&rtu).unwrap()
    );
}

/// Kills every process whose command line names a path under the directory, when dropped.
struct KillUnder(std::path::PathBuf);

impl Drop for KillUnder {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &self.0.display().to_string()])
            .status();
    }
}

fn seconds(time: &str) -> i64 {
    time.parse::<k8s_openapi::jiff::Timestamp>().unwrap().as_second()
}

/// Events of `n` keys, `seq` updates each, produced to `topic` on `bootstrap`.
async fn backlog(bootstrap: &str, topic: &str, keys: usize, seqs: i64) {
    let events: Vec<_> = (0..seqs)
        .flat_map(|seq| (0..keys).map(move |i| event(&format!("C-{i}"), seq, false)))
        .collect();
    produce_on(bootstrap, topic, &events, None).await;
}

#[tokio::test]
async fn autoscaling_a_backlog_scales_to_the_partition_cap_and_draining_scales_down_after_the_window()
 {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale").await;
    let bootstrap = env().var("RTU_TEST_KAFKA_BOOTSTRAP").to_string();
    let topic = unique_name("scale-customers");
    create_topic_on(&bootstrap, &topic, 3).await;
    backlog(&bootstrap, &topic, 200, 3).await;
    let operator = Operator::start(&client, &ns).await;
    let database = system_of_record(&client, &ns, &bootstrap, &[&topic]).await;
    let window = 12;
    updater(
        &client,
        &ns,
        "customers",
        json!({ "maxReplicas": 5, "lagPerReplica": 50,
        "scaleDownStabilizationSeconds": window, "pollIntervalSeconds": 2 }),
    )
    .await;

    // No worker runs yet: the lag is the whole backlog, 600 / 50 = 12 workers, capped at 3.
    let up = eventually("the backlog scaled to the partition cap", WAIT, || async {
        let a = autoscaling(&client, &ns, "customers").await?;
        let replicas = deployment_replicas(&client, &ns, "customers").await?;
        (a.desired_replicas == 3 && replicas == 3).then_some(a)
    })
    .await;
    println!("scaled up: {} ({})", up.message, up.reason);
    assert_eq!((up.lag, up.partitions, up.reason.as_str()), (600, 3, "PartitionCap"));
    assert!(
        up.message.contains("asks for 12 workers") && up.message.ends_with("1 -> 3"),
        "{}",
        up.message
    );
    print_yaml(&client, &ns, "customers", "scaled to the partition cap").await;
    let up_time = seconds(up.last_scale_time.as_deref().unwrap());

    // The workers run and drain the backlog; the Deployment never goes above the cap.
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    // A failed assertion drops the follow task without stopping its processes: kill them.
    let _leftovers = KillUnder(dir.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follow = {
        let (client, ns, dir) = (client.clone(), ns.clone(), dir.clone());
        tokio::spawn(async move {
            let binary = std::path::Path::new(env!("CARGO_BIN_EXE_rtu"));
            let shutdown = async move {
                let _ = stopped.await;
            };
            rtu_operator::local_workers::follow(client, &ns, "customers", &dir, binary, shutdown)
                .await
        })
    };
    let collection =
        m::admin_client().await.database(&database).collection::<mongodb::bson::Document>("pr_0");
    let most = std::cell::Cell::new(0);
    let drained = eventually("the backlog written and the lag read as 0", WAIT, || async {
        let replicas = deployment_replicas(&client, &ns, "customers").await?;
        most.set(most.get().max(replicas));
        let written = collection.count_documents(doc! { "age": 2 }).await.ok()?;
        let a = autoscaling(&client, &ns, "customers").await?;
        (written == 200 && a.lag == 0).then_some(a)
    })
    .await;
    println!("drained: {} ({})", drained.message, drained.reason);
    let down = eventually("the workers scaled down after the window", WAIT, || async {
        let replicas = deployment_replicas(&client, &ns, "customers").await?;
        most.set(most.get().max(replicas));
        let a = autoscaling(&client, &ns, "customers").await?;
        (a.desired_replicas == 1 && replicas == 1).then_some(a)
    })
    .await;
    println!("scaled down: {} ({})", down.message, down.reason);
    print_yaml(&client, &ns, "customers", "drained and scaled down").await;
    assert_eq!(most.get(), 3, "the Deployment went above the 3 partitions");
    let down_time = seconds(down.last_scale_time.as_deref().unwrap());
    // Whole seconds on both sides: at least the window minus the rounding.
    assert!(down_time - up_time >= window - 1, "down {} s after up", down_time - up_time);
    assert!(down.message.ends_with("3 -> 1"), "one step: {}", down.message);
    assert_eq!(events(&client, &ns, "customers", "ScaledUp").await.len(), 1);
    assert_eq!(events(&client, &ns, "customers", "ScaledDown").await.len(), 1);
    let (status, reason, _) =
        condition(&client, &ns, "customers", "AutoscalingActive").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "LagRead"));
    let _ = stop.send(());
    follow.await.unwrap().unwrap();
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn autoscaling_holds_the_workers_while_kafka_is_unreachable_and_says_why_once() {
    let kafka = PrivateServers::up("kafka");
    let bootstrap = kafka.var("RTU_TEST_KAFKA_BOOTSTRAP");
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale-down").await;
    let topic = unique_name("scale-outage");
    create_topic_on(&bootstrap, &topic, 2).await;
    backlog(&bootstrap, &topic, 50, 2).await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns, &bootstrap, &[&topic]).await;
    updater(
        &client,
        &ns,
        "customers",
        json!({ "maxReplicas": 4, "lagPerReplica": 10,
        "scaleDownStabilizationSeconds": 3, "pollIntervalSeconds": 1 }),
    )
    .await;
    eventually("scaled to the 2 partitions", WAIT, || async {
        let a = autoscaling(&client, &ns, "customers").await?;
        (a.desired_replicas == 2 && deployment_replicas(&client, &ns, "customers").await? == 2)
            .then_some(())
    })
    .await;

    kafka.kill("kafka");
    let (_, _, message) = eventually("AutoscalingActive=False", WAIT, || async {
        let c = condition(&client, &ns, "customers", "AutoscalingActive").await?;
        (c.0 == "False" && c.1 == "LagReadFailed").then_some(c)
    })
    .await;
    println!("Kafka killed: AutoscalingActive=False LagReadFailed: {message}");
    assert!(message.contains("no change is made") && message.contains(&topic), "{message}");
    // Reads keep failing for longer than the down window: the workers stay, one Event.
    let failing_since = Instant::now();
    while failing_since.elapsed() < Duration::from_secs(15) {
        let a = autoscaling(&client, &ns, "customers").await.unwrap();
        assert_eq!(a.desired_replicas, 2, "{a:?}");
        assert_eq!(deployment_replicas(&client, &ns, "customers").await, Some(2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warnings = events(&client, &ns, "customers", "LagReadFailed").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let held = autoscaling(&client, &ns, "customers").await.unwrap();
    assert_eq!((held.reason.as_str(), held.lag), ("LagReadFailed", 100), "{held:?}");
    print_yaml(&client, &ns, "customers", "Kafka unreachable").await;

    kafka.restart("kafka");
    eventually("AutoscalingActive=True again", WAIT, || async {
        let c = condition(&client, &ns, "customers", "AutoscalingActive").await?;
        (c.0 == "True").then_some(())
    })
    .await;
    let recovered = events(&client, &ns, "customers", "LagReadRecovered").await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    println!("recovered: {}", recovered[0]);
    assert_eq!(autoscaling(&client, &ns, "customers").await.unwrap().desired_replicas, 2);
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn autoscaling_a_missing_topic_is_a_partial_read_that_never_scales() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale-partial").await;
    let bootstrap = env().var("RTU_TEST_KAFKA_BOOTSTRAP").to_string();
    let topic = unique_name("scale-present");
    let missing = unique_name("scale-missing");
    create_topic_on(&bootstrap, &topic, 4).await;
    backlog(&bootstrap, &topic, 100, 1).await;
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns, &bootstrap, &[&topic, &missing]).await;
    updater(
        &client,
        &ns,
        "customers",
        json!({ "minReplicas": 1, "maxReplicas": 4,
        "lagPerReplica": 10, "pollIntervalSeconds": 1 }),
    )
    .await;
    let (_, _, message) =
        eventually("AutoscalingActive=False on the missing topic", WAIT, || async {
            let c = condition(&client, &ns, "customers", "AutoscalingActive").await?;
            (c.0 == "False").then_some(c)
        })
        .await;
    println!("partial read: {message}");
    assert!(message.contains(&missing), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a = autoscaling(&client, &ns, "customers").await.unwrap();
    assert_eq!((a.desired_replicas, a.reason.as_str()), (1, "LagReadFailed"), "{a:?}");
    assert_eq!(deployment_replicas(&client, &ns, "customers").await, Some(1));
    assert_eq!(events(&client, &ns, "customers", "LagReadFailed").await.len(), 1);
    assert!(events(&client, &ns, "customers", "ScaledUp").await.is_empty());
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

/// Commits `offsets` (partition -> offset) of `topic` for `group`, as a consumer outside the
/// group would (the group has no member: the operator only reads it).
fn commit(group: &str, topic: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = plaintext_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*offset)).unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = plaintext_config().create().unwrap();
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)
        .collect()
}

#[tokio::test]
async fn autoscaling_flapping_lag_changes_the_workers_once_and_a_manual_edit_is_overridden() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale-flap").await;
    let bootstrap = env().var("RTU_TEST_KAFKA_BOOTSTRAP").to_string();
    let topic = unique_name("scale-flap");
    create_topic_on(&bootstrap, &topic, 4).await;
    backlog(&bootstrap, &topic, 400, 1).await;
    let ends = end_offsets(&topic, 4);
    assert_eq!(ends.iter().sum::<i64>(), 400);
    let group = format!("{ns}.customers");
    // Every partition 100 behind its end, or caught up.
    let behind: Vec<i64> = ends.iter().map(|e| (e - 100).max(0)).collect();
    let lag_behind: i64 = ends.iter().zip(&behind).map(|(e, b)| e - b).sum();
    commit(&group, &topic, &ends);
    let operator = Operator::start(&client, &ns).await;
    system_of_record(&client, &ns, &bootstrap, &[&topic]).await;
    let window = 10;
    updater(
        &client,
        &ns,
        "customers",
        json!({ "minReplicas": 1, "maxReplicas": 4,
        "lagPerReplica": 100, "scaleDownStabilizationSeconds": window, "pollIntervalSeconds": 1 }),
    )
    .await;
    eventually("lag 0 read, 1 worker", WAIT, || async {
        let a = autoscaling(&client, &ns, "customers").await?;
        (a.last_read_time.is_some() && a.lag == 0 && a.desired_replicas == 1).then_some(())
    })
    .await;

    // The lag flaps between lag_behind and 0 every second, for twice the down window.
    let mut seen = vec![1];
    let flapping = Instant::now();
    let mut high = true;
    while flapping.elapsed() < Duration::from_secs(2 * window as u64) {
        commit(&group, &topic, if high { &behind } else { &ends });
        high = !high;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let replicas = deployment_replicas(&client, &ns, "customers").await.unwrap();
            if seen.last() != Some(&replicas) {
                seen.push(replicas);
            }
        }
    }
    println!(
        "flapping lag ({lag_behind} / 0 every second for {} s): Deployment replicas {seen:?}",
        2 * window
    );
    let wanted = i32::try_from((lag_behind + 99) / 100).unwrap();
    assert_eq!(seen, [1, wanted], "one change while the lag flaps");
    assert_eq!(events(&client, &ns, "customers", "ScaledUp").await.len(), 1);
    assert!(events(&client, &ns, "customers", "ScaledDown").await.is_empty());

    // A manual edit is reported and not used.
    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    rtus.patch(
        "customers",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
    )
    .await
    .unwrap();
    let notes = eventually("a ReplicasOverridden Event", WAIT, || async {
        let notes = events(&client, &ns, "customers", "ReplicasOverridden").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    println!("spec.replicas edited to 3: {}", notes[0]);
    assert!(notes[0].contains("spec.replicas 3 is not used"), "{}", notes[0]);
    assert_eq!(deployment_replicas(&client, &ns, "customers").await, Some(wanted));

    // Caught up for good: one step down after the window.
    commit(&group, &topic, &ends);
    let down = eventually("scaled down once the lag stays 0", WAIT, || async {
        let a = autoscaling(&client, &ns, "customers").await?;
        (deployment_replicas(&client, &ns, "customers").await? == 1).then_some(a)
    })
    .await;
    println!("caught up: {}", down.message);
    assert_eq!(events(&client, &ns, "customers", "ScaledDown").await.len(), 1);
    assert_eq!(events(&client, &ns, "customers", "ReplicasOverridden").await.len(), 1);

    // Autoscaling off: spec.replicas (kubectl scale, an HPA) is in charge again.
    rtus.patch(
        "customers",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "autoscaling": { "enabled": false } } })),
    )
    .await
    .unwrap();
    eventually("spec.replicas applied, the autoscaling status gone", WAIT, || async {
        let rtu = rtus.get("customers").await.ok()?;
        let status = rtu.status?;
        let gone = status.autoscaling.is_none()
            && status.conditions.iter().all(|c| c.type_ != "AutoscalingActive");
        (gone && deployment_replicas(&client, &ns, "customers").await? == 3).then_some(())
    })
    .await;
    println!("autoscaling off: the Deployment runs spec.replicas = 3");
    let rtu = rtus.get("customers").await.unwrap();
    assert_eq!(rtu.name_any(), "customers");
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn autoscaling_reads_the_lag_with_the_system_of_records_credentials_and_refuses_bad_bounds() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-scale-sasl").await;
    let topic = unique_name("scale-sasl");
    create_topic_on(env().var("RTU_TEST_KAFKA_BOOTSTRAP"), &topic, 2).await;
    backlog(env().var("RTU_TEST_KAFKA_BOOTSTRAP"), &topic, 30, 1).await;
    let operator = Operator::start(&client, &ns).await;
    create::<Secret>(
        &client,
        &ns,
        json!({ "metadata": { "name": "kafka-user" }, "stringData": {
        "username": env().var("RTU_TEST_KAFKA_SASL_USERNAME"),
        "password": env().var("RTU_TEST_KAFKA_SASL_PASSWORD") } }),
    )
    .await;
    let kafka = json!({
        "bootstrapServers": env().var("RTU_TEST_KAFKA_SASL_BOOTSTRAP"),
        "authentication": { "type": "scramSha512",
            "usernameSecretRef": { "name": "kafka-user", "key": "username" },
            "passwordSecretRef": { "name": "kafka-user", "key": "password" } }
    });
    system_of_record_with(&client, &ns, kafka, &[&topic]).await;

    // The API server refuses bounds that cannot hold.
    let refused = crate::support::operator::try_create::<RealTimeUpdater>(
        &client,
        &ns,
        json!({
            "metadata": { "name": "inverted" },
            "spec": { "systemOfRecordRef": { "name": "crm" },
                      "autoscaling": { "minReplicas": 3, "maxReplicas": 2, "lagPerReplica": 10 } }
        }),
    )
    .await
    .unwrap_err();
    println!("minReplicas 3, maxReplicas 2: {refused}");
    assert!(refused.contains("minReplicas must not be above maxReplicas"), "{refused}");

    updater(
        &client,
        &ns,
        "customers",
        json!({ "maxReplicas": 4, "lagPerReplica": 10,
        "pollIntervalSeconds": 1 }),
    )
    .await;
    let a = eventually("the lag read over SASL/SCRAM", WAIT, || async {
        let a = autoscaling(&client, &ns, "customers").await?;
        (a.last_read_time.is_some()).then_some(a)
    })
    .await;
    println!("over SASL_PLAINTEXT with SCRAM-SHA-512: {}", a.message);
    assert_eq!((a.lag, a.partitions, a.desired_replicas), (30, 2, 2));

    // A wrong password in the Secret: the read fails and says so; the workers stay.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let wrong = json!({ "stringData": { "password": "not-the-password" } });
    secrets.patch("kafka-user", &PatchParams::default(), &Patch::Merge(wrong)).await.unwrap();
    let (_, _, message) =
        eventually("AutoscalingActive=False on the refused login", WAIT, || async {
            let c = condition(&client, &ns, "customers", "AutoscalingActive").await?;
            (c.0 == "False").then_some(c)
        })
        .await;
    println!("wrong password: {message}");
    assert!(
        message.contains("reported: Authentication (Local: Authentication failure)"),
        "{message}"
    );
    assert!(!message.contains(env().var("RTU_TEST_KAFKA_SASL_PASSWORD")), "{message}");
    assert_eq!(autoscaling(&client, &ns, "customers").await.unwrap().desired_replicas, 2);
    assert_eq!(deployment_replicas(&client, &ns, "customers").await, Some(2));
    operator.stop().await;
    k::delete_namespace(&client, &ns).await;
}
