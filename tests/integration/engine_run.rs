//! `rtu engine` as a process on the real Kafka and MongoDB: Debezium events become projection
//! documents; SIGTERM commits and exits 0; a SIGKILL mid-stream and a restart lose nothing and
//! let no stale event win; errorPolicy stop keeps the process alive and commits nothing at or
//! after the bad message.

use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;

use crate::support::engine::{
    Options, Setup, event, metric, owned_partitions, produce, signal_and_wait, wait_for, workload,
};
use crate::support::eventually;

#[tokio::test]
async fn engine_writes_projections_and_commits_on_sigterm_then_resumes() {
    let setup = Setup::new("engine-e2e", 3, 500).await;
    let (events, expected) = workload(30, 5);
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("first");
    wait_for(&setup, &expected, "first").await;
    // Committed while running and idle (every commitIntervalMs), not only at shutdown.
    eventually(
        "every partition committed to its end while running",
        Duration::from_secs(30),
        || async {
            setup.offsets(3).iter().all(|(committed, end)| *committed == Some(*end)).then_some(())
        },
    )
    .await;
    // Health, readiness and metrics on the telemetry port.
    assert_eq!(engine.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(engine.get("/readyz").await, (200, "ready: 3 partition(s) assigned\n".to_string()));
    assert_eq!(engine.get("/-/ready").await.0, 200);
    let messages = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers",outcome="applied"}}"#,
        setup.topic
    );
    let lag = |p: i32| format!(r#"rtu_consumer_lag{{topic="{}",partition="{p}"}}"#, setup.topic);
    let text =
        eventually("lag 0 on every partition in /metrics", Duration::from_secs(30), || async {
            let (status, text) = engine.get("/metrics").await;
            assert_eq!(status, 200);
            (0..3).all(|p| metric(&text, &lag(p)) == Some(0.0)).then_some(text)
        })
        .await;
    assert_eq!(metric(&text, &messages), Some(events.len() as f64), "{text}");
    let writes = |op: &str| format!(r#"rtu_writes_total{{projection="pr_customers",op="{op}"}}"#);
    assert_eq!(metric(&text, &writes("insert")), Some(30.0), "{text}");
    assert_eq!(metric(&text, &writes("update")), Some(events.len() as f64 - 30.0), "{text}");
    assert!(metric(&text, r#"rtu_commits_total{result="ok"}"#).unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(metric(&text, "rtu_assigned_partitions"), Some(3.0), "{text}");
    assert!(text.contains("rtu_write_duration_seconds_count"), "{text}");
    assert!(text.contains("rtu_batch_messages_count"), "{text}");
    let status = signal_and_wait(&mut engine, "TERM");
    assert!(status.success(), "exit after SIGTERM: {status}; log {}", setup.log("first").display());
    for (partition, (committed, end)) in setup.offsets(3).into_iter().enumerate() {
        assert_eq!(committed, Some(end), "partition {partition}: committed offset after SIGTERM");
    }
    let log = std::fs::read_to_string(setup.log("first")).unwrap();
    assert!(log.contains("\"engine stopped\""), "{log}");

    // More events while it is down; the restart resumes at the committed offsets.
    let (more, expected_more) = workload(30, 8);
    produce(&setup.topic, &more[150..]).await;
    let mut engine = setup.start("second");
    wait_for(&setup, &expected_more, "second").await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    for (committed, end) in setup.offsets(3) {
        assert_eq!(committed, Some(end));
    }
    setup.finish().await;
}

#[tokio::test]
async fn engine_killed_mid_stream_loses_nothing_after_restart() {
    let setup = Setup::new("engine-kill", 3, 20).await;
    let (events, expected) = workload(200, 60);
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("killed");
    // Kill it once it has written part of the stream.
    eventually("the engine to write some documents", Duration::from_secs(60), || async {
        (setup.documents().await.len() >= 50).then_some(())
    })
    .await;
    let status = signal_and_wait(&mut engine, "KILL");
    assert!(!status.success());
    let partial = setup.documents().await;
    assert_ne!(
        partial, expected,
        "the engine finished before it was killed; the test proves nothing"
    );
    let mut engine = setup.start("restarted");
    wait_for(&setup, &expected, "restarted").await;
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn error_policy_stop_keeps_the_process_and_commits_before_the_bad_message() {
    let setup = Setup::new("engine-stop", 1, 500).await;
    let mut events: Vec<(String, String)> =
        (0..5).map(|i| event(&format!("A-{i}"), 0, false)).collect();
    events.push((r#"{"customer_id":"BAD"}"#.to_string(), "{not json".to_string()));
    events.extend((0..5).map(|i| event(&format!("Z-{i}"), 0, false)));
    produce(&setup.topic, &events).await;
    let mut engine = setup.start("stop");
    eventually(
        "the offset before the bad message to be committed",
        Duration::from_secs(60),
        || async { (setup.offsets(1)[0].0 == Some(5)).then_some(()) },
    )
    .await;
    let docs = setup.documents().await;
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), ["A-0", "A-1", "A-2", "A-3", "A-4"]);
    assert!(engine.alive(), "the engine exited on a message error");
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("stopped by errorPolicy stop after a MALFORMED_VALUE message error"),
        "{body}"
    );
    let (_, text) = engine.get("/metrics").await;
    assert_eq!(metric(&text, r#"rtu_stopped{reason="MALFORMED_VALUE"}"#), Some(1.0), "{text}");
    let log = std::fs::read_to_string(setup.log("stop")).unwrap();
    let failure =
        log.lines().find(|l| l.contains("message failed")).expect("a 'message failed' log line");
    for field in [
        "\"code\":\"MALFORMED_VALUE\"",
        &format!("\"topic\":\"{}\"", setup.topic),
        "\"partition\":0",
        "\"offset\":5",
    ] {
        assert!(failure.contains(field), "{field} missing in {failure}");
    }
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(5), "nothing at or after the bad message is committed");
    setup.finish().await;
}

#[tokio::test]
async fn two_workers_in_one_group_split_the_partitions() {
    let setup = Setup::new("engine-two", 6, 100).await;
    let mut a = setup.start("worker-a");
    let mut b = setup.start("worker-b");
    let all: std::collections::BTreeSet<String> =
        (0..6).map(|p| format!("{}[{p}]", setup.topic)).collect();
    eventually("the two workers to split the 6 partitions", Duration::from_secs(60), || async {
        let (owned_a, owned_b) =
            (owned_partitions(&setup.log("worker-a")), owned_partitions(&setup.log("worker-b")));
        let split = !owned_a.is_empty() && !owned_b.is_empty() && owned_a.is_disjoint(&owned_b);
        (split
            && owned_a.union(&owned_b).cloned().collect::<std::collections::BTreeSet<_>>() == all)
            .then_some(())
    })
    .await;
    let (events, expected) = workload(60, 10);
    produce(&setup.topic, &events).await;
    wait_for(&setup, &expected, "worker-a").await;
    eventually("every partition committed to its end", Duration::from_secs(30), || async {
        setup.offsets(6).iter().all(|(committed, end)| *committed == Some(*end)).then_some(())
    })
    .await;
    assert!(signal_and_wait(&mut a, "TERM").success());
    assert!(signal_and_wait(&mut b, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn without_ensure_indexes_the_engine_waits_for_the_primary_key_index() {
    let options =
        Options { extra: "writes: { ensureIndexes: false }".into(), ..Options::default() };
    let setup = Setup::with("engine-noindex", options).await;
    produce(&setup.topic, &[event("C-1", 0, false)]).await;
    let mut engine = setup.start("noindex");
    let body = eventually("/readyz to name the missing index", Duration::from_secs(30), || {
        let engine = &engine;
        async move {
            let (status, body) = engine.get("/readyz").await;
            (status == 503 && body.contains("no unique index")).then_some(body)
        }
    })
    .await;
    assert!(body.contains("pr_customers (customer_id)"), "{body}");
    assert!(body.contains("writes.ensureIndexes is false"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(setup.documents().await.is_empty(), "consumed without the primary-key index");
    assert_eq!(setup.offsets(1)[0].0, None, "committed without the primary-key index");
    // An index of any name, unique on exactly the primary key, lets it start.
    let index = IndexModel::builder()
        .keys(doc! { "customer_id": 1 })
        .options(IndexOptions::builder().unique(true).name("by_customer".to_string()).build())
        .build();
    setup.db.collection::<Document>("pr_customers").create_index(index).await.unwrap();
    eventually("the event written once the index exists", Duration::from_secs(60), || {
        let setup = &setup;
        async move { (setup.documents().await.len() == 1).then_some(()) }
    })
    .await;
    eventually("ready", Duration::from_secs(30), || {
        let engine = &engine;
        async move { (engine.get("/readyz").await.0 == 200).then_some(()) }
    })
    .await;
    assert!(engine.alive());
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn a_function_file_that_does_not_load_keeps_the_engine_alive_not_ready_and_idle() {
    // docs/failures.md, configuration class: no consumption, alive, not ready with the reason, and no
    // exit (which would crash-loop the pod).
    let dir = std::env::temp_dir().join(crate::support::unique_name("engine-badfn"));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.js");
    std::fs::write(&broken, "module.exports = function (logger) { return async (doc => [] }\n")
        .unwrap();
    let extra = format!(
        "outputs:\n  singleViewTrigger: {{ topic: \"badfn-{{singleView}}\" }}\n  strategies:\n    custom:\n      pr_customers: {{ sv_customers: broken }}\nfunctions:\n  files: {{ broken: {} }}\n",
        broken.display()
    );
    let setup = Setup::with("engine-badfn", Options { extra, ..Options::default() }).await;
    produce(&setup.topic, &[event("C-1", 0, false)]).await;
    let mut engine = setup.start("badfn");
    let body = eventually("/readyz to name the broken file", Duration::from_secs(30), || {
        let engine = &engine;
        async move {
            let (status, body) = engine.get("/readyz").await;
            (status == 503 && body.contains("configuration error")).then_some(body)
        }
    })
    .await;
    assert!(body.contains("broken.js"), "{body}");
    assert_eq!(engine.get("/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(engine.alive(), "exited on a configuration error:\n{}", engine.log_text());
    assert!(setup.documents().await.is_empty(), "consumed with a broken function file");
    assert_eq!(setup.offsets(1)[0].0, None, "committed with a broken function file");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}
