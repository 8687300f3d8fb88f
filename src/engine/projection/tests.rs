//! The mapping of change events into fields and statements, on one projection: casts,
//! renames, validation, the stale guard, checks, write groups and Kafka keys.

use serde_json::json;

use super::*;
use crate::config::DeleteMechanism;
use crate::engine::adapter::Image;
use crate::engine::adapter::{ChangeEvent, Op};
use mongodb::bson::{DateTime, doc};

fn projection(writes: WritesConfig, rename_name: bool) -> Projection {
    let mut name =
        json!({ "name": "name", "type": "String", "cast": "castToString", "nullable": true });
    if rename_name {
        name["target"] = json!("fullName");
    }
    let config: ProjectionConfig = serde_json::from_value(json!({
        "name": "pr_customers",
        "topics": ["t"],
        "fields": [
            { "name": "customer_id", "type": "String", "cast": "castToString", "primaryKey": true },
            name,
            { "name": "age", "type": "Number", "cast": "castToInteger", "nullable": true },
            { "name": "signup_at", "type": "Date", "cast": "castToDate", "nullable": true },
            { "name": "vip", "type": "Boolean", "cast": "castStringToBoolean" },
        ],
    }))
    .unwrap();
    Projection::new(&config, &writes).unwrap()
}

fn image(v: Value) -> Image {
    v.as_object().unwrap().clone()
}

fn upsert(after: Value) -> ChangeEvent {
    let after = image(after);
    let key =
        image(json!({ "customer_id": after.get("customer_id").cloned().unwrap_or(json!("C-1")) }));
    ChangeEvent { op: Op::Upsert, key, before: None, after: Some(after), position: None }
}

fn source() -> Source {
    Source { topic: "t".into(), partition: 0, offset: 100, timestamp_ms: 0, key: Bson::Null }
}

fn set_of(mapped: &Mapped) -> Document {
    match &mapped.statements[..] {
        [Statement::Upsert { update, .. }] => {
            Document::try_from(update.get_document("$set").unwrap()).unwrap()
        }
        other => panic!("expected one upsert, got {other:?}"),
    }
}

fn strict() -> WritesConfig {
    WritesConfig { validation: Validation::Strict, ..WritesConfig::default() }
}

#[test]
fn lenient_casts_store_null_and_count_uncastable_fields() {
    // docs/vectors.md #15 and #17.
    let p = projection(WritesConfig::default(), false);
    let change = upsert(
        json!({ "customer_id": "C-1", "age": "42.9", "signup_at": "2024-02-30", "vip": "TRUE", "name": 12.5 }),
    );
    let mapped = p.map(&change, &source(), DateTime::now()).unwrap();
    let set = set_of(&mapped);
    assert_eq!(set.get_i64("age").unwrap(), 42);
    assert_eq!(set.get("signup_at"), Some(&Bson::Null));
    assert_eq!(set.get("vip"), Some(&Bson::Null));
    assert_eq!(set.get_str("name").unwrap(), "12.5");
    assert_eq!(mapped.uncastable_fields, ["signup_at", "vip"]);
}

#[test]
fn strict_validation_makes_message_errors() {
    // docs/vectors.md #16.
    let p = projection(strict(), false);
    let err = p
        .map(&upsert(json!({ "customer_id": "C-1", "age": "abc" })), &source(), DateTime::now())
        .unwrap_err();
    assert_eq!(err.code(), "CAST_FAILED");
    assert!(err.to_string().contains("\"age\""), "{err}");
    let err = p
        .map(&upsert(json!({ "customer_id": "C-1", "vip": null })), &source(), DateTime::now())
        .unwrap_err();
    assert_eq!(err, WriteError::ValidationFailed { field: "vip".into() });
    assert!(
        p.map(&upsert(json!({ "customer_id": "C-1", "age": null })), &source(), DateTime::now())
            .is_ok()
    );
}

#[test]
fn metadata_named_message_fields_are_dropped_as_unknown() {
    // docs/vectors.md #18.
    let p = projection(WritesConfig::default(), false);
    let change = upsert(
        json!({ "customer_id": "C-1", "__STATE__": "DELETED", "_id": "x", "createdAt": "1999" }),
    );
    let mapped = p.map(&change, &source(), DateTime::now()).unwrap();
    assert_eq!(mapped.unknown_fields, ["__STATE__", "_id", "createdAt"]);
    let set = set_of(&mapped);
    assert_eq!(set.get_str("__STATE__").unwrap(), "PUBLIC");
    assert!(!set.contains_key("_id") && !set.contains_key("createdAt"));
}

#[test]
fn targets_rename_fields_and_absent_fields_are_not_written() {
    let p = projection(WritesConfig::default(), true);
    let mapped = p
        .map(&upsert(json!({ "customer_id": "C-1", "name": "Ada" })), &source(), DateTime::now())
        .unwrap();
    let set = set_of(&mapped);
    assert_eq!(set.get_str("fullName").unwrap(), "Ada");
    assert!(!set.contains_key("name") && !set.contains_key("age"));
}

#[test]
fn primary_key_errors() {
    let p = projection(WritesConfig::default(), false);
    let mut change = upsert(json!({ "customer_id": "C-1" }));
    change.key = image(json!({ "customer_id": null }));
    let err = p.map(&change, &source(), DateTime::now()).unwrap_err();
    assert_eq!(err.code(), "MISSING_PRIMARY_KEY");
    let pk_int: ProjectionConfig = serde_json::from_value(json!({
        "name": "p", "topics": ["t"],
        "fields": [{ "name": "id", "type": "Number", "cast": "castToInteger", "primaryKey": true }],
    }))
    .unwrap();
    let p = Projection::new(&pk_int, &WritesConfig::default()).unwrap();
    let change = ChangeEvent {
        op: Op::Delete,
        key: image(json!({ "id": "x" })),
        before: None,
        after: None,
        position: None,
    };
    assert_eq!(p.map(&change, &source(), DateTime::now()).unwrap_err().code(), "CAST_FAILED");
}

#[test]
fn the_guard_is_in_the_filter_unless_turned_off() {
    let on = projection(WritesConfig::default(), false);
    let off = projection(WritesConfig { stale_guard: false, ..WritesConfig::default() }, false);
    let change = upsert(json!({ "customer_id": "C-1" }));
    let filter = |p: &Projection| match &p
        .map(&change, &source(), DateTime::now())
        .unwrap()
        .statements[..]
    {
        [Statement::Upsert { filter, .. }] => filter.clone(),
        other => panic!("{other:?}"),
    };
    let guarded = filter(&on);
    assert_eq!(guarded.get_str("customer_id").unwrap(), "C-1");
    assert_eq!(guarded.get_array("$or").unwrap().len(), 5, "{guarded}");
    assert_eq!(filter(&off), doc! { "customer_id": "C-1" });
}

#[test]
fn a_keys_statements_share_a_write_group_and_keys_spread() {
    let p = projection(WritesConfig::default(), false);
    let group = |id: &str, offset: i64, delete: bool| {
        let mut change = upsert(json!({ "customer_id": id, "name": "x" }));
        if delete {
            change.op = Op::Delete;
            change.after = None;
        }
        let source = Source { offset, ..source() };
        let mapped = p.map(&change, &source, DateTime::now()).unwrap();
        p.group_of(&mapped.statements[0], 4)
    };
    for id in ["C-1", "C-2", "C-3"] {
        let g = group(id, 1, false);
        assert_eq!((group(id, 99, false), group(id, 100, true)), (g, g), "{id}");
    }
    let used: std::collections::BTreeSet<usize> =
        (0..100).map(|k| group(&format!("C-{k}"), 1, false)).collect();
    assert_eq!(used.len(), 4, "100 keys should use all 4 groups: {used:?}");
}

/// The checks of a change's statements, in order (`None` for an unchecked statement).
fn checks(p: &Projection, change: &ChangeEvent) -> Vec<Option<Check>> {
    let mapped = p.map(change, &source(), DateTime::now()).unwrap();
    mapped
        .statements
        .into_iter()
        .map(|s| match s {
            Statement::Checked(c) => Some(c.check),
            _ => None,
        })
        .collect()
}

fn with_op(op: Op, mut change: ChangeEvent) -> ChangeEvent {
    change.op = op;
    if op == Op::Delete {
        change.after = None;
    }
    change
}

#[test]
fn upsert_off_checks_inserts_and_updates_and_deletes_hard() {
    let writes = WritesConfig {
        upsert: false,
        delete_mechanism: Some(DeleteMechanism::Soft),
        ..WritesConfig::default()
    };
    let p = projection(writes, false);
    let change = upsert(json!({ "customer_id": "C-1", "name": "Ada" }));
    let expect = |op| {
        let c = checks(&p, &with_op(op, change.clone()));
        c.iter().map(|c| c.as_ref().map(|c| (c.expect, c.effect))).collect::<Vec<_>>()
    };
    assert_eq!(expect(Op::Insert), [Some((Expect::NotLive, Effect::Live))]);
    assert_eq!(expect(Op::Update), [Some((Expect::Live, Effect::Live))]);
    // basic/db2 and custom upserts carry no operation: upsert stays on.
    assert_eq!(expect(Op::Upsert), [Some((Expect::Any, Effect::Live))]);
    assert_eq!(expect(Op::Delete), [Some((Expect::Any, Effect::Removed))]);
    let delete = p.map(&with_op(Op::Delete, change.clone()), &source(), DateTime::now());
    assert!(
        matches!(delete.unwrap().statements[0].plain(), Statement::Delete { .. }),
        "upsert off forces hard deletes"
    );
    let check = checks(&p, &with_op(Op::Insert, change.clone())).remove(0).unwrap();
    assert_eq!(check.key, doc! { "customer_id": "C-1" });
    assert_eq!((check.counter, check.kind, check.partition), (Bson::Int64(100), "offset", 0));
    // A PK change: hard delete of the old key, then the new document is created.
    let mut pk_change = with_op(Op::Update, change);
    pk_change.before = Some(image(json!({ "customer_id": "C-0" })));
    let c = checks(&p, &pk_change);
    assert_eq!(
        c.iter().map(|c| c.as_ref().map(|c| (c.expect, c.effect))).collect::<Vec<_>>(),
        [Some((Expect::Any, Effect::Removed)), Some((Expect::Any, Effect::Live))]
    );
    assert_eq!(c[0].as_ref().unwrap().key, doc! { "customer_id": "C-0" });
}

#[test]
fn only_upsert_off_or_strict_required_fields_check_statements() {
    let change = upsert(json!({ "customer_id": "C-1", "name": "Ada" }));
    // Upsert on and lenient, or strict without required fields: plain statements.
    assert_eq!(checks(&projection(WritesConfig::default(), false), &change), [None]);
    assert_eq!(checks(&projection(strict(), false), &change), [None]);
    let required: ProjectionConfig = serde_json::from_value(json!({
        "name": "p", "topics": ["t"],
        "fields": [
            { "name": "customer_id", "type": "String", "cast": "castToString", "required": true, "primaryKey": true },
            { "name": "name", "type": "String", "cast": "castToString", "required": true, "target": "fullName" },
            { "name": "age", "type": "Number", "cast": "castToInteger", "required": true, "nullable": true },
        ],
    }))
    .unwrap();
    let lenient = Projection::new(&required, &WritesConfig::default()).unwrap();
    assert_eq!(checks(&lenient, &change), [None]);
    let strict = Projection::new(&required, &strict()).unwrap();
    assert_eq!(strict.required_targets(), ["fullName", "age"]);
    let check = checks(&strict, &change).remove(0).unwrap();
    assert_eq!((check.expect, check.required_absent), (Expect::Any, vec!["age".to_string()]));
    let full = upsert(json!({ "customer_id": "C-1", "name": "Ada", "age": null }));
    assert!(checks(&strict, &full)[0].as_ref().unwrap().required_absent.is_empty());
    // A soft delete needs no required field.
    let delete = checks(&strict, &with_op(Op::Delete, change)).remove(0).unwrap();
    assert_eq!((delete.effect, delete.required_absent), (Effect::Deleted, vec![]));
}

#[test]
fn kafka_keys_are_recorded_as_json_or_text() {
    assert_eq!(parse_kafka_key(Some(br#"{"a":1}"#)), Bson::Document(doc! { "a": 1_i64 }));
    assert_eq!(parse_kafka_key(Some(b"C-1")), Bson::String("C-1".into()));
    assert_eq!(parse_kafka_key(Some(&[0xff, 0xfe])), Bson::Null);
    assert_eq!(parse_kafka_key(None), Bson::Null);
}
