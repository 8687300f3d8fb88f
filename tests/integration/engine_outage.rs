//! Outages on real servers, each server the engine's own (started by `scripts/testenv` in a
//! private run directory and frozen with SIGSTOP, so the shared servers are untouched).
//! docs/vectors.md #38, MongoDB: nothing is committed during the outage, `/readyz` turns false after
//! `unhealthyAfterMs`, the process stays up, nothing is dead-lettered; after SIGCONT every
//! event is written, everything is committed and the worker is ready again. Kafka: not ready
//! while no broker answers, then consumption resumes by itself without loss. Write concern:
//! writes MongoDB did but did not acknowledge as asked are retried and commit nothing.

use std::time::Duration;

use crate::support::engine::{Options, Setup, event, metric, produce, signal_and_wait, signal_pid};
use crate::support::eventually;
use crate::support::servers::PrivateServers;

#[tokio::test]
async fn mongodb_outage_commits_nothing_turns_unready_and_resumes_without_loss() {
    let mongo = PrivateServers::up("mongodb");
    let options = Options {
        unhealthy_after_ms: 1500,
        mongodb_uri: Some(mongo.var("RTU_TEST_MONGODB_URI")),
        ..Options::default()
    };
    let setup = Setup::with("engine-outage", options).await;
    let first: Vec<_> = (0..20).map(|i| event(&format!("C-{i}"), 0, false)).collect();
    produce(&setup.topic, &first).await;
    let mut engine = setup.start("outage");
    eventually("the first 20 events committed", Duration::from_secs(60), || {
        let setup = &setup;
        async move { (setup.offsets(1)[0].0 == Some(20)).then_some(()) }
    })
    .await;
    assert_eq!(engine.get("/readyz").await.0, 200);

    signal_pid(mongo.pid("mongodb"), "STOP");
    let second: Vec<_> = (0..20).map(|i| event(&format!("C-{i}"), 1, false)).collect();
    produce(&setup.topic, &second).await;
    let body = eventually("/readyz to report the outage", Duration::from_secs(30), || {
        let engine = &engine;
        async move {
            let (status, body) = engine.get("/readyz").await;
            (status == 503).then_some(body)
        }
    })
    .await;
    assert!(body.contains("mongodb failing for"), "{body}");
    // A while into the outage: nothing new committed, the process is up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(setup.offsets(1)[0], (Some(20), 40), "nothing committed during the outage");
    assert!(engine.alive(), "the engine exited during the outage");
    assert_eq!(engine.get("/healthz").await.0, 200, "alive while MongoDB is away");

    signal_pid(mongo.pid("mongodb"), "CONT");
    eventually(
        "every event written and committed after recovery",
        Duration::from_secs(120),
        || {
            let setup = &setup;
            async move {
                let docs = setup.documents().await;
                let all_second = docs.len() == 20 && docs.values().all(|(_, age, _)| *age == 1);
                (all_second && setup.offsets(1)[0].0 == Some(40)).then_some(())
            }
        },
    )
    .await;
    eventually("ready again", Duration::from_secs(30), || {
        let engine = &engine;
        async move { (engine.get("/readyz").await.0 == 200).then_some(()) }
    })
    .await;
    let (_, text) = engine.get("/metrics").await;
    let topic = &setup.topic;
    for outcome in ["dead_lettered", "failed"] {
        let sample = format!(
            r#"rtu_messages_total{{topic="{topic}",projection="pr_customers",outcome="{outcome}"}}"#
        );
        assert_eq!(metric(&text, &sample), None, "{outcome}: {text}");
    }
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn kafka_outage_turns_unready_and_consumption_resumes_without_loss() {
    let kafka = PrivateServers::up("kafka");
    let options = Options {
        unhealthy_after_ms: 1500,
        bootstrap: Some(kafka.var("RTU_TEST_KAFKA_BOOTSTRAP")),
        // Requests to a frozen broker time out (and its connections drop) after 3 s.
        kafka_config: vec![("socket.timeout.ms".into(), "3000".into())],
        ..Options::default()
    };
    let setup = Setup::with("engine-kafka-outage", options).await;
    let first: Vec<_> = (0..20).map(|i| event(&format!("C-{i}"), 0, false)).collect();
    setup.produce(&setup.topic, &first).await;
    let mut engine = setup.start("kafka-outage");
    eventually("the first 20 events committed", Duration::from_secs(60), || {
        let setup = &setup;
        async move { (setup.offsets(1)[0].0 == Some(20)).then_some(()) }
    })
    .await;
    assert_eq!(engine.get("/readyz").await.0, 200);

    signal_pid(kafka.pid("kafka"), "STOP");
    let body = eventually("/readyz to report the Kafka outage", Duration::from_secs(60), || {
        let engine = &engine;
        async move {
            let (status, body) = engine.get("/readyz").await;
            (status == 503).then_some(body)
        }
    })
    .await;
    assert!(body.contains("kafka failing for"), "{body}");
    assert!(engine.alive(), "the engine exited during the Kafka outage");
    assert_eq!(engine.get("/healthz").await.0, 200);

    signal_pid(kafka.pid("kafka"), "CONT");
    let second: Vec<_> = (0..20).map(|i| event(&format!("C-{i}"), 1, false)).collect();
    setup.produce(&setup.topic, &second).await;
    eventually(
        "the events produced after the outage written and committed",
        Duration::from_secs(120),
        || {
            let setup = &setup;
            async move {
                let docs = setup.documents().await;
                let all_second = docs.len() == 20 && docs.values().all(|(_, age, _)| *age == 1);
                (all_second && setup.offsets(1)[0].0 == Some(40)).then_some(())
            }
        },
    )
    .await;
    eventually("ready again", Duration::from_secs(60), || {
        let engine = &engine;
        async move { (engine.get("/readyz").await.0 == 200).then_some(()) }
    })
    .await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

/// docs/failures.md#write-concern on the real test replica set (one member, `rs0`): with
/// `w: "2"` every write reply carries a `writeConcernError` (MongoDB applied the write but
/// cannot have a second member acknowledge it). The batch is retried, nothing is committed
/// and `/readyz` names the MongoDB writes. The same events, run again with the default
/// (`majority`), are written and committed, and that run retries nothing.
#[tokio::test]
async fn a_write_concern_the_replica_set_cannot_meet_is_retried_and_commits_nothing() {
    let options = Options {
        unhealthy_after_ms: 1000,
        write_concern: Some(r#"{ w: "2", wtimeoutMs: 300 }"#.into()),
        ..Options::default()
    };
    let setup = Setup::with("write-concern", options).await;
    let events: Vec<_> = (0..10).map(|i| event(&format!("C-{i}"), 1, false)).collect();
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("w2");
    let retries = r#"rtu_transient_retries_total{kind="mongodb_write"}"#;
    eventually("three retries of the unacknowledged batch", Duration::from_secs(60), || {
        let engine = &engine;
        async move {
            let (_, text) = engine.get("/metrics").await;
            metric(&text, retries).filter(|n| *n >= 3.0).map(|_| ())
        }
    })
    .await;
    let body = eventually("/readyz to name the MongoDB writes", Duration::from_secs(30), || {
        let engine = &engine;
        async move {
            let (status, body) = engine.get("/readyz").await;
            (status == 503 && body.contains("mongodb writes")).then_some(body)
        }
    })
    .await;
    println!("w: \"2\" on a one-member replica set: {body}");
    let log = engine.log_text();
    let line = log.lines().find(|l| l.contains("writeConcernError")).unwrap_or_else(|| {
        panic!("no writeConcernError in the log:\n{log}");
    });
    println!("logged: {line}");
    assert_eq!(setup.offsets(1)[0], (None, 10), "nothing committed while unacknowledged");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0], (None, 10), "nothing committed at shutdown either");

    // The default write concern: majority of one member.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let default = config.replace("  writeConcern: { w: \"2\", wtimeoutMs: 300 }\n", "");
    assert_ne!(config, default, "the writeConcern line was not in:\n{config}");
    std::fs::write(&setup.config, default).unwrap();
    let mut engine = setup.start("majority");
    eventually("every event written and committed", Duration::from_secs(60), || {
        let setup = &setup;
        async move {
            let docs = setup.documents().await;
            (docs.len() == 10 && setup.offsets(1)[0].0 == Some(10)).then_some(())
        }
    })
    .await;
    let (_, text) = engine.get("/metrics").await;
    assert_eq!(metric(&text, retries), None, "the majority run retried:\n{text}");
    println!("w: majority: 10 events written, offset 10 committed, no retry");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}
