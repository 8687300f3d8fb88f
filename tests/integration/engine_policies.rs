//! The error policies of docs/failures.md on the engine process, real Kafka and MongoDB: `pauseTopic`
//! pauses the failing topic only (and again after a restart); `deadLetter` produces the failed
//! record with its bytes, its headers and the `rtu-dlq-*` headers, commits past it and goes on;
//! a dead-letter topic that does not exist falls back to `stop`.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};

use crate::support::engine::{
    Options, Setup, event, metric, produce, produce_with_headers, signal_and_wait,
};
use crate::support::kafka::{create_topic, read_topic};
use crate::support::{eventually, unique_name};

fn ids(docs: &crate::support::engine::Documents) -> Vec<String> {
    docs.keys().cloned().collect()
}

/// `A-0..A-4`, a malformed value at offset 5, then `Z-0..Z-4`.
async fn produce_with_bad_sixth(topic: &str) {
    let good: Vec<_> = (0..5).map(|i| event(&format!("A-{i}"), 0, false)).collect();
    produce(topic, &good).await;
    produce(topic, &[(r#"{"customer_id":"BAD"}"#.to_string(), "{not json".to_string())]).await;
    let later: Vec<_> = (0..5).map(|i| event(&format!("Z-{i}"), 0, false)).collect();
    produce(topic, &later).await;
}

#[tokio::test]
async fn pause_topic_pauses_the_failing_topic_and_the_others_go_on() {
    let options = Options {
        error_policy: "{ type: pauseTopic }".into(),
        second_topic: true,
        ..Options::default()
    };
    let setup = Setup::with("engine-pause", options).await;
    produce_with_bad_sixth(&setup.topic).await;
    let b: Vec<_> = (0..10).map(|i| event(&format!("B-{i}"), 0, false)).collect();
    produce(&setup.topic_b, &b).await;
    let mut engine = setup.start("paused");
    eventually(
        "the failing topic committed up to the bad message",
        Duration::from_secs(60),
        || {
            let setup = &setup;
            async move { (setup.offsets(1)[0].0 == Some(5)).then_some(()) }
        },
    )
    .await;
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("topic {} paused by errorPolicy pauseTopic", setup.topic)),
        "{body}"
    );
    // The other topic keeps flowing, also for messages produced after the pause.
    let more: Vec<_> = (10..15).map(|i| event(&format!("B-{i}"), 0, false)).collect();
    produce(&setup.topic_b, &more).await;
    eventually("the other topic written and committed to its end", Duration::from_secs(60), || {
        let setup = &setup;
        async move {
            let docs = setup.documents_of("pr_customers_b").await;
            (docs.len() == 15 && setup.offsets_b(1)[0].0 == Some(15)).then_some(())
        }
    })
    .await;
    assert_eq!(ids(&setup.documents().await), ["A-0", "A-1", "A-2", "A-3", "A-4"]);
    assert!(engine.alive(), "the engine exited on a message error");
    let (_, text) = engine.get("/metrics").await;
    assert_eq!(metric(&text, "rtu_paused_topics"), Some(1.0), "{text}");
    let failed = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers",outcome="failed"}}"#,
        setup.topic
    );
    assert_eq!(metric(&text, &failed), Some(1.0), "{text}");
    let applied_b = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers_b",outcome="applied"}}"#,
        setup.topic_b
    );
    assert_eq!(metric(&text, &applied_b), Some(15.0), "{text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(5), "nothing at or after the bad message committed");

    // In memory only: a restart meets the same record and pauses the topic again.
    let mut engine = setup.start("restarted");
    eventually("the topic paused again after the restart", Duration::from_secs(60), || {
        let log = engine.log_text();
        async move { log.contains("topic paused by errorPolicy pauseTopic").then_some(()) }
    })
    .await;
    assert_eq!(ids(&setup.documents().await), ["A-0", "A-1", "A-2", "A-3", "A-4"]);
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(5));
    setup.finish().await;
}

#[tokio::test]
async fn dead_letter_keeps_the_record_adds_why_and_goes_on() {
    let dlq = unique_name("engine-dlq-dead");
    create_topic(&dlq, 1).await;
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {dlq} }}"),
        ..Options::default()
    };
    let setup = Setup::with("engine-dlq", options).await;
    // offsets: 0 A-0, 1 A-1, 2 malformed (with a header), 3 A-2, 4 unknown op, 5 A-3
    produce(&setup.topic, &[event("A-0", 0, false), event("A-1", 0, false)]).await;
    let trace = OwnedHeaders::new().insert(Header { key: "trace-id", value: Some("t-1") });
    let malformed = (r#"{"customer_id":"BAD"}"#.to_string(), "{not json".to_string());
    produce_with_headers(&setup.topic, std::slice::from_ref(&malformed), Some(trace)).await;
    produce(&setup.topic, &[event("A-2", 0, false)]).await;
    let unknown_op = (
        r#"{"customer_id":"A-1"}"#.to_string(),
        r#"{"before":null,"after":{"customer_id":"A-1","name":"x","age":1},"op":"x"}"#.to_string(),
    );
    produce(&setup.topic, std::slice::from_ref(&unknown_op)).await;
    produce(&setup.topic, &[event("A-3", 0, false)]).await;

    let mut engine = setup.start("dlq");
    eventually("every offset committed", Duration::from_secs(60), || {
        let setup = &setup;
        async move { (setup.offsets(1)[0].0 == Some(6)).then_some(()) }
    })
    .await;
    assert_eq!(ids(&setup.documents().await), ["A-0", "A-1", "A-2", "A-3"]);
    let records: Vec<_> = read_topic(&dlq, 2, Duration::ZERO)
        .into_iter()
        .map(|r| (r.key, r.value, r.headers))
        .collect();
    assert_eq!(records.len(), 2, "dead-letter records: {records:?}");
    for ((key, value, headers), (source, offset, code)) in records
        .iter()
        .zip([(&malformed, "2", "MALFORMED_VALUE"), (&unknown_op, "4", "UNKNOWN_OPERATION")])
    {
        assert_eq!(key.as_deref(), Some(source.0.as_bytes()), "key bytes kept");
        assert_eq!(value.as_deref(), Some(source.1.as_bytes()), "value bytes kept");
        let expected = [
            ("rtu-dlq-reason", code.to_string()),
            ("rtu-dlq-source-topic", setup.topic.clone()),
            ("rtu-dlq-source-partition", "0".to_string()),
            ("rtu-dlq-source-offset", offset.to_string()),
            ("rtu-dlq-projection", "pr_customers".to_string()),
            ("rtu-dlq-rtu", "engine-dlq".to_string()),
            ("rtu-dlq-consumer-group", setup.group.clone()),
        ];
        for (name, value) in expected {
            assert_eq!(headers.get(name), Some(&value), "{name} in {headers:?}");
        }
        assert!(!headers["rtu-dlq-message"].is_empty(), "{headers:?}");
        assert!(headers["rtu-dlq-source-timestamp"].parse::<i64>().unwrap() > 0, "{headers:?}");
        assert!(headers["rtu-dlq-failed-at"].starts_with("20"), "ISO date: {headers:?}");
    }
    assert_eq!(
        records[0].2.get("trace-id").map(String::as_str),
        Some("t-1"),
        "source headers kept"
    );
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 200, "dead-lettering keeps the worker ready: {body}");
    let (_, text) = engine.get("/metrics").await;
    let dead = format!(
        r#"rtu_messages_total{{topic="{}",projection="pr_customers",outcome="dead_lettered"}}"#,
        setup.topic
    );
    assert_eq!(metric(&text, &dead), Some(2.0), "{text}");
    assert!(signal_and_wait(&mut engine, "TERM").success());
    setup.finish().await;
}

#[tokio::test]
async fn a_missing_dead_letter_topic_falls_back_to_stop() {
    let options = Options {
        error_policy: format!("{{ type: deadLetter, topic: {} }}", unique_name("no-such-topic")),
        kafka_config: vec![("topic.metadata.propagation.max.ms".into(), "1000".into())],
        ..Options::default()
    };
    let setup = Setup::with("engine-dlq-missing", options).await;
    produce_with_bad_sixth(&setup.topic).await;
    let mut engine = setup.start("fallback");
    eventually("the fallback to stop", Duration::from_secs(90), || {
        let log = engine.log_text();
        async move {
            log.contains("dead-letter topic refused the record; falling back to errorPolicy stop")
                .then_some(())
        }
    })
    .await;
    eventually("the offset before the bad message committed", Duration::from_secs(30), || {
        let setup = &setup;
        async move { (setup.offsets(1)[0].0 == Some(5)).then_some(()) }
    })
    .await;
    assert!(engine.alive());
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopped by errorPolicy stop"), "{body}");
    // Under deadLetter the later messages of the batch were written before the dead-letter
    // produce failed; they stay uncommitted and replay idempotently once the topic exists.
    assert!(signal_and_wait(&mut engine, "TERM").success());
    assert_eq!(setup.offsets(1)[0].0, Some(5), "nothing at or after the bad message committed");
    setup.finish().await;
}
