//! Validate: the engine config rendered from a RealTimeUpdater and its SystemOfRecord, every
//! refusal with its field path and reason, projection ownership, and the content hash.

use serde_json::{Value, json};

use super::*;
use crate::config::{
    AdapterKind, AutomaticStrategies, Compression, ErrorPolicy, KafkaProtocol, ReadProjection,
    SaslMechanism, SecretSource,
};
use crate::operator::fixtures::{
    ER_SCHEMA, NS, PC_SCHEMA, SV_ORDERS_JS, WORKER_IMAGE, at, claimant, dereferenced, refs, rtu,
    rtu_with, secret_values, settings, sor, sor_with, validated, validated_of,
};

fn names(projections: &[ProjectionConfig]) -> Vec<&str> {
    projections.iter().map(|p| p.name.as_str()).collect()
}

fn file(path: &str) -> SecretSource {
    SecretSource { file: Some(path.to_string()), env: None }
}

/// The errors of an invalid RealTimeUpdater as `(reason, path)`.
fn refused(rtu: &RealTimeUpdater, refs: &Dereferenced) -> Vec<FieldError> {
    match validate(rtu, refs, &settings()) {
        Ok(v) => panic!("{} was accepted: {:#?}", rtu.name_any(), v.engine),
        Err(Invalid(errors)) => errors,
    }
}

#[test]
fn a_valid_updater_renders_an_engine_config_the_engine_accepts() {
    let v = validated();
    let e = &v.engine;
    assert_eq!(e.validate(), vec![], "the engine refuses what the operator rendered");
    assert_eq!(
        (v.name.as_str(), v.namespace.as_str(), v.uid.as_str()),
        ("customers", NS, "uid-customers")
    );
    assert_eq!(v.system_of_record, "crm");
    assert_eq!(e.system_of_record, "crm");
    assert_eq!(e.name.as_deref(), Some("customers"));
    assert_eq!(e.kafka.group_id, "acme.customers");
    assert_eq!(e.kafka.bootstrap_servers, "kafka-0.acme:9093,kafka-1.acme:9093");
    assert_eq!(e.kafka.config["session.timeout.ms"], "30000");
    assert_eq!(e.mongodb.uri, file("/var/run/secrets/rtu/mongo/uri"));
    assert_eq!(e.mongodb.database, "crm");
    assert_eq!(e.adapter.kind, AdapterKind::Debezium);
    assert_eq!(names(&e.projections), ["pr_customers", "pr_orders"]);
    assert_eq!(e.projections, sor().spec.projections[..2].to_vec(), "copied from the SoR as is");
    assert_eq!(e.error_policy, ErrorPolicy::DeadLetter { topic: "acme.crm.dlq".into() });
    assert_eq!((e.telemetry.host.as_str(), e.telemetry.port), ("0.0.0.0", METRICS_PORT));
    assert_eq!(e.telemetry.log_level, "info");
    assert_eq!(e.tuning, crate::config::Tuning::default());
    assert_eq!(v.replicas, 3);
    assert_eq!(v.image, WORKER_IMAGE);
    assert_eq!(v.worker.graceful_shutdown_seconds, 45);
    let states: Vec<(&str, &str, Vec<String>)> = v
        .projections
        .iter()
        .map(|p| (p.name.as_str(), p.state.as_str(), p.topics.clone()))
        .collect();
    assert_eq!(
        states,
        [
            ("pr_customers", "Active", vec!["crm.customers".to_string()]),
            ("pr_orders", "Active", vec!["crm.orders".to_string()])
        ]
    );
    // The ConfigMap's config.yaml is the engine config, as the engine will load it.
    let parsed: EngineConfig = crate::yaml::from_str(&v.files[CONFIG_FILE]).unwrap();
    assert_eq!(&parsed, e);
    let keys: Vec<&str> = v.files.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["config.yaml", "erSchema.json", "function-svOrders.js", "projectionChangesSchema.json"]
    );
}

#[test]
fn adapter_options_reach_the_engine_as_written() {
    let sor = sor_with(json!({ "spec": { "adapter": { "type": "debezium", "debezium": {
        "format": "unwrapped", "counter": "lsn", "unavailableValuePlaceholder": "hex:00ff" } } } }));
    let adapter = sor.spec.adapter.clone();
    let v = validated_of(&rtu(), &dereferenced(sor));
    assert_eq!(v.engine.adapter, adapter);
    let parsed: EngineConfig = crate::yaml::from_str(&v.files[CONFIG_FILE]).unwrap();
    assert_eq!(parsed.adapter.debezium.format, crate::engine::adapter::DebeziumFormat::Unwrapped);
    assert_eq!(parsed.adapter.debezium.unavailable_value_placeholder, "hex:00ff");
}

#[test]
fn outputs_follow_the_spec() {
    let v = validated();
    let o = &v.engine.outputs;
    let pu = o.projection_updates.as_ref().unwrap();
    assert_eq!(
        pu.topics,
        BTreeMap::from([
            ("pr_customers".to_string(), "acme.crm.pr_customers.pr-update".to_string()),
            ("pr_orders".to_string(), "acme.orders.updates".to_string()),
        ]),
        "the template for pr_customers, the override for pr_orders"
    );
    assert_eq!(pu.compression, Compression::None);
    assert_eq!(o.projection_changes.as_ref().unwrap().collection, "fd-pc-crm");
    assert_eq!(o.single_view_trigger.as_ref().unwrap().topic, "acme.{singleView}.sv-trigger");
    assert_eq!(
        o.strategies.automatic,
        Some(AutomaticStrategies {
            er_schema: "/etc/rtu/erSchema.json".into(),
            projection_changes_schema: "/etc/rtu/projectionChangesSchema.json".into(),
            read_projections: vec![ReadProjection {
                name: "pr_products".into(),
                collection: "products".into(),
                fields: vec!["sku".into()],
            }],
        }),
        "pr_products is written by no one here but the walk may read it"
    );
    assert_eq!(v.files["erSchema.json"], ER_SCHEMA);
    assert_eq!(v.files["projectionChangesSchema.json"], PC_SCHEMA);
    assert_eq!(o.strategies.custom["pr_orders"]["sv_orders"], "svOrders");
    assert_eq!(o.strategies.max_exec_time_ms, 5000);
    // Every `<name>.js` key of the functions ConfigMap, and nothing else.
    assert_eq!(
        v.engine.functions.files,
        BTreeMap::from([("svOrders".to_string(), "/etc/rtu/function-svOrders.js".to_string())])
    );
    assert_eq!(v.files["function-svOrders.js"], SV_ORDERS_JS);
    assert!(!v.files.values().any(|f| f == "not a function"), "README.md was copied");
}

#[test]
fn output_defaults_and_overrides() {
    let off = json!({
        "projectionUpdates": null, "projectionChanges": null, "singleViewTrigger": null,
        "strategies": null
    });
    struct Case {
        name: &'static str,
        spec: Value,
        pr_update: Option<Vec<(&'static str, &'static str)>>,
        collection: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "everything off",
            spec: json!({ "outputs": off.clone() }),
            pr_update: None,
            collection: None,
        },
        Case {
            name: "default template",
            spec: json!({ "outputs": {
                "projectionUpdates": { "enabled": true, "topicTemplate": null, "topics": null },
                "projectionChanges": null, "singleViewTrigger": null, "strategies": null } }),
            pr_update: Some(vec![
                ("pr_customers", "pr_customers.pr-update"),
                ("pr_orders", "pr_orders.pr-update"),
            ]),
            collection: None,
        },
        Case {
            name: "overrides for every projection",
            spec: json!({ "projections": ["pr_orders", "pr_products"],
                "outputs": { "projectionUpdates": {
                    "enabled": true, "topicTemplate": "x.{projection}",
                    "topics": { "pr_orders": "o", "pr_products": "p" } },
                "projectionChanges": null, "singleViewTrigger": null, "strategies": null } }),
            pr_update: Some(vec![("pr_orders", "o"), ("pr_products", "p")]),
            collection: None,
        },
        Case {
            name: "projection changes in a collection of its own",
            spec: json!({ "outputs": { "projectionUpdates": null, "singleViewTrigger": null,
                "projectionChanges": { "enabled": true, "collection": "crm-changes" } } }),
            pr_update: None,
            collection: Some("crm-changes"),
        },
        Case {
            name: "projection changes in fd-pc-<sor> by default",
            spec: json!({ "outputs": { "projectionUpdates": null, "singleViewTrigger": null,
                "projectionChanges": { "enabled": true } } }),
            pr_update: None,
            collection: Some("fd-pc-crm"),
        },
    ];
    for case in cases {
        let v = validated_of(&rtu_with("customers", json!({ "spec": case.spec })), &refs());
        let o = &v.engine.outputs;
        let want = case.pr_update.map(|t| {
            t.into_iter().map(|(p, t)| (p.to_string(), t.to_string())).collect::<BTreeMap<_, _>>()
        });
        assert_eq!(o.projection_updates.as_ref().map(|p| p.topics.clone()), want, "{}", case.name);
        assert_eq!(
            o.projection_changes.as_ref().map(|p| p.collection.as_str()),
            case.collection,
            "{}",
            case.name
        );
        let automatic = o.strategies.automatic.is_some();
        assert_eq!(automatic, v.files.contains_key("erSchema.json"), "{}", case.name);
    }
}

#[test]
fn consumer_group_is_namespace_dot_name_unless_the_spec_names_one() {
    let cases = [
        ("customers", json!({}), "acme.customers"),
        ("orders-rtu", json!({}), "acme.orders-rtu"),
        ("customers", json!({ "spec": { "consumerGroup": "legacy.crm.rtu" } }), "legacy.crm.rtu"),
    ];
    for (name, patch, group) in cases {
        let v = validated_of(&rtu_with(name, patch), &refs());
        assert_eq!(v.engine.kafka.group_id, group, "{name}");
        assert_eq!(default_group(&rtu_with(name, json!({}))), format!("acme.{name}"));
    }
}

#[test]
fn error_policy_maps_to_the_engine() {
    let cases = [
        (json!({ "type": "stop", "topic": null }), ErrorPolicy::Stop),
        (json!({ "type": "pauseTopic", "topic": null }), ErrorPolicy::PauseTopic),
        (
            json!({ "type": "deadLetter", "topic": "dlq" }),
            ErrorPolicy::DeadLetter { topic: "dlq".into() },
        ),
        (json!(null), ErrorPolicy::Stop),
    ];
    for (policy, want) in cases {
        let rtu = rtu_with("customers", json!({ "spec": { "errorPolicy": policy.clone() } }));
        assert_eq!(validated_of(&rtu, &refs()).engine.error_policy, want, "{policy}");
    }
}

#[test]
fn kafka_security_from_authentication_and_tls() {
    use KafkaProtocol::{Plaintext, SaslPlaintext, SaslSsl, Ssl};
    const USER: &str = "/var/run/secrets/rtu/kafka-user/username";
    const PASSWORD: &str = "/var/run/secrets/rtu/kafka-user/password";
    const CA: &str = "/var/run/secrets/rtu/kafka-ca/ca.crt";
    let no_tls = json!({ "enabled": false, "caSecretRef": null });
    let tls_system_cas = json!({ "enabled": true, "caSecretRef": null });
    let tls_ca = json!({ "enabled": true, "caSecretRef": { "name": "kafka-ca", "key": "ca.crt" } });
    let cases = [
        ("none", &no_tls, Plaintext, None, None),
        ("none", &tls_system_cas, Ssl, None, None),
        ("none", &tls_ca, Ssl, None, Some(CA)),
        ("plain", &no_tls, SaslPlaintext, Some(SaslMechanism::Plain), None),
        ("plain", &tls_ca, SaslSsl, Some(SaslMechanism::Plain), Some(CA)),
        ("scramSha256", &no_tls, SaslPlaintext, Some(SaslMechanism::ScramSha256), None),
        ("scramSha256", &tls_system_cas, SaslSsl, Some(SaslMechanism::ScramSha256), None),
        ("scramSha512", &no_tls, SaslPlaintext, Some(SaslMechanism::ScramSha512), None),
        ("scramSha512", &tls_ca, SaslSsl, Some(SaslMechanism::ScramSha512), Some(CA)),
    ];
    for (auth, tls, protocol, mechanism, ca) in cases {
        let authentication = if auth == "none" {
            json!({ "type": "none", "usernameSecretRef": null, "passwordSecretRef": null })
        } else {
            json!({ "type": auth })
        };
        let sor = sor_with(
            json!({ "spec": { "kafka": { "authentication": authentication, "tls": tls } } }),
        );
        let label = format!("{auth} tls={tls}");
        let v = validated_of(&rtu(), &dereferenced(sor));
        let s = &v.engine.kafka.security;
        assert_eq!(v.engine.validate(), vec![], "{label}");
        assert_eq!(s.protocol, protocol, "{label}");
        assert_eq!(s.sasl.as_ref().map(|s| s.mechanism), mechanism, "{label}");
        if let Some(sasl) = &s.sasl {
            assert_eq!((&sasl.username, &sasl.password), (&file(USER), &file(PASSWORD)), "{label}");
        }
        assert_eq!(s.ca_file.as_deref(), ca, "{label}");
        let mut mounted: Vec<String> = v.secrets.iter().map(secret_file).collect();
        mounted.sort();
        let mut want = vec!["/var/run/secrets/rtu/mongo/uri".to_string()];
        want.extend(
            mechanism.map(|_| [PASSWORD.to_string(), USER.to_string()]).into_iter().flatten(),
        );
        want.extend(ca.map(String::from));
        want.sort();
        assert_eq!(mounted, want, "{label}: the mounted Secret keys");
    }
}

#[test]
fn stopped_scales_to_zero_and_keeps_everything_else() {
    let running = validated();
    let stopped =
        validated_of(&rtu_with("customers", json!({ "spec": { "stopped": true } })), &refs());
    assert_eq!((running.replicas, stopped.replicas), (3, 0));
    assert_eq!(stopped.engine, running.engine);
    assert_eq!(stopped.config_hash, running.config_hash, "stopping must not roll a config");
    assert!(stopped.projections.iter().all(|p| p.state == "Stopped"), "{:?}", stopped.projections);
    let zero = validated_of(&rtu_with("customers", json!({ "spec": { "replicas": 0 } })), &refs());
    assert_eq!(zero.replicas, 0);
    assert!(zero.projections.iter().all(|p| p.state == "Active"));
}

#[test]
fn the_worker_image_is_the_operators_unless_the_spec_names_one() {
    assert_eq!(validated().image, WORKER_IMAGE);
    let own = rtu_with("customers", json!({ "spec": { "worker": { "image": "mine/rtu:dev" } } }));
    assert_eq!(validated_of(&own, &refs()).image, "mine/rtu:dev");
}

/// One way to be refused: an edit of the RealTimeUpdater, of the SystemOfRecord, of what was
/// dereferenced, and the `(reason, path, part of the message)` of every error expected.
struct Refusal {
    name: &'static str,
    rtu: Value,
    sor: Value,
    refs: fn(&mut Dereferenced),
    errors: &'static [(Reason, &'static str, &'static str)],
}

fn nothing(_: &mut Dereferenced) {}

#[test]
fn every_refusal_names_its_field_path_and_reason() {
    use Reason::{InvalidSpec, MissingReference, ProjectionConflict};
    let long = "r".repeat(56);
    let cases = [
        Refusal {
            name: "no SystemOfRecord",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| r.sor = None,
            errors: &[(
                MissingReference,
                "spec.systemOfRecordRef.name",
                "no SystemOfRecord \"crm\" in namespace \"acme\"",
            )],
        },
        Refusal {
            name: "name too long for the metrics Service",
            rtu: json!({ "metadata": { "name": long } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(InvalidSpec, "metadata.name", "56 characters; at most 55")],
        },
        Refusal {
            name: "no Secret",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.secrets.remove("mongo");
            },
            errors: &[(
                MissingReference,
                "SystemOfRecord crm: spec.mongodb.uriSecretRef",
                "Secret \"mongo\" with key \"uri\": not found in the namespace",
            )],
        },
        Refusal {
            name: "a Secret without the key",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.secrets.get_mut("kafka-user").unwrap().remove("password");
            },
            errors: &[(
                MissingReference,
                "SystemOfRecord crm: spec.kafka.authentication.passwordSecretRef",
                "Secret \"kafka-user\" with key \"password\": the key is missing",
            )],
        },
        Refusal {
            name: "no CA Secret",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.secrets.remove("kafka-ca");
            },
            errors: &[(
                MissingReference,
                "SystemOfRecord crm: spec.kafka.tls.caSecretRef",
                "not found",
            )],
        },
        Refusal {
            name: "a ConfigMap without the schema key",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.config_maps.get_mut("crm-schemas").unwrap().remove("erSchema.json");
            },
            errors: &[(
                MissingReference,
                "SystemOfRecord crm: spec.erSchemaRef",
                "ConfigMap \"crm-schemas\" with key \"erSchema.json\": the key is missing",
            )],
        },
        Refusal {
            name: "no schemas ConfigMap: both references named",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.config_maps.remove("crm-schemas");
            },
            errors: &[
                (
                    MissingReference,
                    "SystemOfRecord crm: spec.erSchemaRef",
                    "not found in the namespace",
                ),
                (
                    MissingReference,
                    "SystemOfRecord crm: spec.projectionChangesSchemaRef",
                    "not found in the namespace",
                ),
            ],
        },
        Refusal {
            name: "no functions ConfigMap",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.config_maps.remove("crm-functions");
            },
            errors: &[(
                MissingReference,
                "SystemOfRecord crm: spec.customFunctionsRef",
                "ConfigMap \"crm-functions\": not found",
            )],
        },
        Refusal {
            name: "a custom function that does not load",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                let js = "module.exports = function svOrders(a b) { return [] }\n";
                r.config_maps
                    .get_mut("crm-functions")
                    .unwrap()
                    .insert("svOrders.js".into(), js.into());
            },
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.customFunctionsRef (ConfigMap crm-functions)",
                "functions (strategies): crm-functions/svOrders.js:1: syntax error",
            )],
        },
        Refusal {
            name: "every missing reference, not only the first",
            rtu: json!({}),
            sor: json!({}),
            refs: |r| {
                r.secrets.remove("mongo");
                r.config_maps
                    .get_mut("crm-schemas")
                    .unwrap()
                    .remove("projectionChangesSchema.json");
            },
            errors: &[
                (MissingReference, "SystemOfRecord crm: spec.mongodb.uriSecretRef", "not found"),
                (
                    MissingReference,
                    "SystemOfRecord crm: spec.projectionChangesSchemaRef",
                    "key is missing",
                ),
            ],
        },
        Refusal {
            name: "unknown projection",
            rtu: json!({ "spec": { "projections": ["pr_customers", "pr_nope"] } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "spec.projections[1]",
                "SystemOfRecord crm has no projection \"pr_nope\" (known: pr_customers, pr_orders, pr_products)",
            )],
        },
        Refusal {
            name: "a topic override for a projection it does not own",
            rtu: json!({ "spec": { "outputs": { "projectionUpdates": {
                "topics": { "pr_products": "acme.products.updates" } } } } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "spec.outputs.projectionUpdates.topics.pr_products",
                "pr_products is not a projection this RealTimeUpdater owns",
            )],
        },
        Refusal {
            name: "automatic strategies without erSchemaRef",
            rtu: json!({}),
            sor: json!({ "spec": { "erSchemaRef": null } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "spec.outputs.strategies.automatic",
                "needs erSchemaRef in SystemOfRecord crm",
            )],
        },
        Refusal {
            name: "a kafka.config key the engine owns",
            rtu: json!({}),
            sor: json!({ "spec": { "kafka": { "config": { "group.id": "other" } } } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.kafka.config.group.id",
                "set by the engine",
            )],
        },
        Refusal {
            name: "adapter options of another format",
            rtu: json!({}),
            sor: json!({ "spec": { "adapter": { "iidr": { "auditCounter": "ccid" } } } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.adapter.iidr",
                "only used with type basic",
            )],
        },
        Refusal {
            name: "a MongoDB database name MongoDB refuses",
            rtu: json!({}),
            sor: json!({ "spec": { "mongodb": { "database": "crm.db" } } }),
            refs: nothing,
            errors: &[(InvalidSpec, "SystemOfRecord crm: spec.mongodb.database", "contains '.'")],
        },
        Refusal {
            name: "a projection rule, at the projection's index in the SystemOfRecord",
            rtu: json!({ "spec": { "projections": ["pr_products"],
                "outputs": { "projectionUpdates": { "topics": null },
                             "strategies": { "custom": null } } } }),
            sor: json!({ "spec": { "projections": [
                { "name": "pr_customers", "topics": ["crm.customers"],
                  "fields": [{ "name": "id", "type": "String", "primaryKey": true }] },
                { "name": "pr_orders", "topics": ["crm.orders"],
                  "fields": [{ "name": "id", "type": "String", "primaryKey": true }] },
                { "name": "pr_products", "topics": ["crm.products"],
                  "fields": [{ "name": "sku", "type": "String", "cast": "castToSku",
                               "primaryKey": true }] }
            ] } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.projections[2].fields[0].cast",
                "castToSku",
            )],
        },
        Refusal {
            name: "a dead-letter topic that is an ingestion topic",
            rtu: json!({ "spec": { "errorPolicy": { "topic": "crm.orders" } } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(InvalidSpec, "spec.errorPolicy.topic", "is an ingestion topic")],
        },
        Refusal {
            name: "a pr-update topic that is an ingestion topic",
            rtu: json!({ "spec": { "outputs": { "projectionUpdates": {
                "topics": { "pr_orders": "crm.customers" } } } } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "spec.outputs.projectionUpdates.topics.pr_orders",
                "is an ingestion topic",
            )],
        },
        Refusal {
            name: "a tuning value out of range",
            rtu: json!({ "spec": { "worker": { "tuning": { "writesInFlight": 0 } } } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(InvalidSpec, "spec.worker.tuning.writesInFlight", "outside 1..=64")],
        },
        Refusal {
            name: "a blank consumer group",
            rtu: json!({ "spec": { "consumerGroup": " " } }),
            sor: json!({}),
            refs: nothing,
            errors: &[(InvalidSpec, "spec.consumerGroup", "must not be empty")],
        },
        Refusal {
            name: "SASL without a username reference (what the CEL rule refuses)",
            rtu: json!({}),
            sor: json!({ "spec": { "kafka": {
                "authentication": { "usernameSecretRef": null } } } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.kafka.authentication.usernameSecretRef",
                "give file",
            )],
        },
        Refusal {
            name: "a CA without TLS (what the CEL rule refuses)",
            rtu: json!({}),
            sor: json!({ "spec": { "kafka": { "tls": { "enabled": false } } } }),
            refs: nothing,
            errors: &[(
                InvalidSpec,
                "SystemOfRecord crm: spec.kafka.tls.caSecretRef",
                "only used with",
            )],
        },
        Refusal {
            name: "a projection owned by an older updater",
            rtu: json!({ "metadata": { "creationTimestamp": at(10) } }),
            sor: json!({}),
            refs: |r| r.siblings.push(claimant("orders", 5, &["pr_orders"], &[])),
            errors: &[(
                ProjectionConflict,
                "spec.projections",
                "projection pr_orders is owned by RealTimeUpdater orders",
            )],
        },
    ];
    for case in cases {
        let rtu = rtu_with("customers", case.rtu);
        let mut refs = dereferenced(sor_with(case.sor));
        (case.refs)(&mut refs);
        refs.siblings.push(rtu.clone());
        let got: Vec<(Reason, String, String)> =
            refused(&rtu, &refs).into_iter().map(|e| (e.reason, e.path, e.message)).collect();
        let paths: Vec<(Reason, &str)> = got.iter().map(|(r, p, _)| (*r, p.as_str())).collect();
        let want: Vec<(Reason, &str)> = case.errors.iter().map(|(r, p, _)| (*r, *p)).collect();
        assert_eq!(paths, want, "{}: {got:#?}", case.name);
        for ((_, _, message), (_, _, part)) in got.iter().zip(case.errors) {
            assert!(message.contains(part), "{}: {message:?} lacks {part:?}", case.name);
        }
    }
}

#[test]
fn the_condition_reason_prefers_a_conflict_then_a_missing_reference() {
    let e = |reason| FieldError { reason, path: "p".into(), message: "m".into() };
    use Reason::{InvalidSpec, MissingReference, ProjectionConflict};
    let cases = [
        (vec![InvalidSpec], InvalidSpec),
        (vec![InvalidSpec, MissingReference], MissingReference),
        (vec![MissingReference, ProjectionConflict, InvalidSpec], ProjectionConflict),
        (vec![], InvalidSpec),
    ];
    for (reasons, want) in cases {
        let invalid = Invalid(reasons.iter().copied().map(e).collect());
        assert_eq!(invalid.reason(), want, "{reasons:?}");
    }
    let two = Invalid(vec![
        FieldError { reason: InvalidSpec, path: "a".into(), message: "x".into() },
        FieldError { reason: InvalidSpec, path: "b".into(), message: "y".into() },
    ]);
    assert_eq!(two.to_string(), "a: x; b: y");
    assert_eq!(ProjectionConflict.as_str(), "ProjectionConflict");
}

/// One RealTimeUpdater among others of `crm`: `(name, created, projections, held)`.
type Claimant = (&'static str, u32, &'static [&'static str], &'static [&'static str]);

enum Want {
    Owns(&'static [&'static str]),
    /// Each error's message.
    Refused(&'static [&'static str]),
}

#[test]
fn ownership_scenarios() {
    use Want::{Owns, Refused};
    const A_ALL: &str =
        "every projection of SystemOfRecord crm is owned by another RealTimeUpdater (a)";
    let cases: Vec<(&str, Vec<Claimant>, &str, Want)> = vec![
        (
            "alone, empty list: every projection",
            vec![("me", 1, &[], &[])],
            "me",
            Owns(&["pr_customers", "pr_orders", "pr_products"]),
        ),
        (
            "alone, explicit list: exactly those, in SoR order",
            vec![("me", 1, &["pr_products", "pr_customers"], &[])],
            "me",
            Owns(&["pr_customers", "pr_products"]),
        ),
        (
            "older explicit, newer empty list takes the rest",
            vec![("a", 1, &["pr_customers"], &[]), ("me", 2, &[], &[])],
            "me",
            Owns(&["pr_orders", "pr_products"]),
        ),
        (
            "disjoint explicit lists",
            vec![("a", 1, &["pr_customers"], &[]), ("me", 2, &["pr_orders"], &[])],
            "me",
            Owns(&["pr_orders"]),
        ),
        (
            "older empty list took all: an explicit list conflicts, naming the owner",
            vec![("a", 1, &[], &[]), ("me", 2, &["pr_orders", "pr_products"], &[])],
            "me",
            Refused(&[
                "projection pr_orders is owned by RealTimeUpdater a",
                "projection pr_products is owned by RealTimeUpdater a",
            ]),
        ),
        (
            "older empty list took all: an empty list has nothing left",
            vec![("a", 1, &[], &[]), ("me", 2, &[], &[])],
            "me",
            Refused(&[A_ALL]),
        ),
        (
            "overlapping explicit lists: the newer is refused for the overlap only",
            vec![
                ("a", 1, &["pr_customers", "pr_orders"], &[]),
                ("me", 2, &["pr_orders", "pr_products"], &[]),
            ],
            "me",
            Refused(&["projection pr_orders is owned by RealTimeUpdater a"]),
        ),
        (
            "age beats name",
            vec![("b", 1, &[], &[]), ("a", 2, &[], &[])],
            "a",
            Refused(&[
                "every projection of SystemOfRecord crm is owned by another RealTimeUpdater (b)",
            ]),
        ),
        (
            "same age: the name decides (winner)",
            vec![("b", 1, &[], &[]), ("a", 1, &[], &[])],
            "a",
            Owns(&["pr_customers", "pr_orders", "pr_products"]),
        ),
        (
            "same age: the name decides (loser)",
            vec![("b", 1, &[], &[]), ("a", 1, &[], &[])],
            "b",
            Refused(&[A_ALL]),
        ),
        (
            "a held projection stays with its newer holder",
            vec![("a", 1, &[], &[]), ("me", 2, &[], &["pr_orders"])],
            "me",
            Owns(&["pr_orders"]),
        ),
        (
            "the older one takes what the newer holder does not hold",
            vec![("a", 1, &[], &[]), ("b", 2, &[], &["pr_orders"])],
            "a",
            Owns(&["pr_customers", "pr_products"]),
        ),
        (
            "an older explicit list claiming a held projection is refused, naming the holder",
            vec![("me", 1, &["pr_customers", "pr_orders"], &[]), ("b", 2, &[], &["pr_orders"])],
            "me",
            Refused(&["projection pr_orders is owned by RealTimeUpdater b"]),
        ),
        (
            "a held projection the holder's spec dropped is released",
            vec![("a", 1, &["pr_customers"], &["pr_customers", "pr_orders"]), ("me", 2, &[], &[])],
            "me",
            Owns(&["pr_orders", "pr_products"]),
        ),
        (
            "two holders of one projection: the older keeps it",
            vec![("a", 1, &[], &["pr_orders"]), ("me", 2, &["pr_orders"], &["pr_orders"])],
            "me",
            Refused(&["projection pr_orders is owned by RealTimeUpdater a"]),
        ),
        (
            "a refused older updater takes nothing",
            vec![
                ("c", 0, &["pr_customers"], &[]),
                ("a", 1, &["pr_customers", "pr_orders"], &[]),
                ("me", 2, &["pr_orders"], &[]),
            ],
            "me",
            Owns(&["pr_orders"]),
        ),
        (
            "an older empty list skips what is taken; a newer one gets nothing",
            vec![("a", 1, &["pr_orders"], &[]), ("b", 2, &[], &[]), ("me", 3, &[], &[])],
            "me",
            Refused(&[
                "every projection of SystemOfRecord crm is owned by another RealTimeUpdater (a, b)",
            ]),
        ),
        (
            "a held projection of an unknown name is ignored",
            vec![("a", 1, &[], &["pr_gone"]), ("me", 2, &["pr_orders"], &[])],
            "me",
            Refused(&["projection pr_orders is owned by RealTimeUpdater a"]),
        ),
    ];
    let sor = sor();
    for (name, claimants, me, want) in cases {
        let siblings: Vec<RealTimeUpdater> =
            claimants.iter().map(|(n, t, p, h)| claimant(n, *t, p, h)).collect();
        let rtu = siblings.iter().find(|r| r.name_any() == me).unwrap();
        match (ownership(rtu, &sor, &siblings), want) {
            (Ok(owned), Owns(want)) => assert_eq!(names(&owned), want, "{name}"),
            (Err(errors), Refused(want)) => {
                let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
                assert_eq!(messages, want, "{name}");
                assert!(
                    errors
                        .iter()
                        .all(|e| e.reason == Reason::ProjectionConflict
                            && e.path == "spec.projections"),
                    "{name}: {errors:?}"
                );
            }
            (got, _) => panic!("{name}: got {got:?}"),
        }
    }
}

#[test]
fn ownership_ignores_updaters_of_other_systems_and_stale_copies_of_itself() {
    let sor = sor();
    let other: RealTimeUpdater = {
        let mut r = claimant("other", 0, &[], &["pr_orders"]);
        r.spec.system_of_record_ref.name = "erp".into();
        r
    };
    let me = claimant("me", 5, &[], &[]);
    // A stale copy of itself (older timestamp, other spec) shares its uid: not a rival.
    let mut stale = claimant("me", 0, &["pr_customers"], &["pr_customers"]);
    stale.metadata.uid = me.metadata.uid.clone();
    let owned = ownership(&me, &sor, &[other, stale, me.clone()]).unwrap();
    assert_eq!(names(&owned), ["pr_customers", "pr_orders", "pr_products"]);
    // The updater need not be among the siblings (a list read before it was created).
    assert_eq!(names(&ownership(&me, &sor, &[]).unwrap()).len(), 3);
}

/// The hash of `rtu` against `refs`.
fn hash_of(rtu: &RealTimeUpdater, refs: &Dereferenced) -> String {
    validated_of(rtu, refs).config_hash
}

#[test]
fn the_config_hash_moves_with_content_not_metadata() {
    let base = hash_of(&rtu(), &refs());
    assert_eq!(base, hash_of(&rtu(), &refs()), "same inputs, same hash");
    assert_eq!(base.len(), 16);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{base}");
    type Edit = fn(&mut RealTimeUpdater, &mut Dereferenced);
    fn secret(refs: &mut Dereferenced, name: &str, key: &str, value: &str) {
        refs.secrets.get_mut(name).unwrap().insert(key.into(), ByteString(value.into()));
    }
    const OTHER_JS: &str = "module.exports = function other() { return async () => [] }";
    fn config_map(refs: &mut Dereferenced, name: &str, key: &str, value: &str) {
        refs.config_maps.get_mut(name).unwrap().insert(key.into(), value.into());
    }
    fn sor_edit(refs: &mut Dereferenced) -> &mut SystemOfRecord {
        refs.sor.as_mut().unwrap()
    }
    let cases: [(&str, Edit, bool); 17] = [
        ("a Kafka password", |_, d| secret(d, "kafka-user", "password", "rotated"), true),
        ("the MongoDB URI", |_, d| secret(d, "mongo", "uri", "mongodb://new@mongo/crm"), true),
        ("the CA certificate", |_, d| secret(d, "kafka-ca", "ca.crt", "other PEM"), true),
        (
            "the ER schema",
            |_, d| {
                config_map(d, "crm-schemas", "erSchema.json", r#"{"version":"1.0.0","config":{}}"#)
            },
            true,
        ),
        ("a custom function", |_, d| config_map(d, "crm-functions", "svOrders.js", OTHER_JS), true),
        (
            "a new custom function",
            |_, d| config_map(d, "crm-functions", "svNew.js", OTHER_JS),
            true,
        ),
        ("a spec field (tuning)", |r, _| r.spec.worker.tuning.max_batch_messages = 500, true),
        (
            "a spec field (error policy)",
            |r, _| r.spec.error_policy.topic = Some("dlq2".into()),
            true,
        ),
        ("a spec field (log level)", |r, _| r.spec.worker.log_level = "debug".into(), true),
        (
            "the SystemOfRecord (a field)",
            |_, d| sor_edit(d).spec.projections[0].fields[1].nullable = true,
            true,
        ),
        ("a Secret key nothing references", |_, d| secret(d, "kafka-user", "unused", "x"), false),
        (
            "a non-function ConfigMap key",
            |_, d| config_map(d, "crm-functions", "README.md", "x"),
            false,
        ),
        (
            "labels and annotations",
            |r, _| {
                r.metadata.labels = Some([("team".to_string(), "data".to_string())].into());
                r.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
            },
            false,
        ),
        (
            "generation and resourceVersion",
            |r, _| {
                r.metadata.generation = Some(7);
                r.metadata.resource_version = Some("999".into());
            },
            false,
        ),
        ("replicas (scaling does not roll)", |r, _| r.spec.replicas = 5, false),
        (
            "worker resources (the Deployment rolls by itself)",
            |r, _| r.spec.worker.resources = None,
            false,
        ),
        (
            "a projection the updater does not own",
            |_, d| sor_edit(d).spec.projections[2].topics.push("crm.more".into()),
            false,
        ),
    ];
    for (name, edit, changes) in cases {
        let (mut r, mut d) = (rtu(), refs());
        edit(&mut r, &mut d);
        let hash = hash_of(&r, &d);
        assert_eq!(hash != base, changes, "{name}: {base} -> {hash}");
        for value in secret_values() {
            assert!(!hash.contains(value), "{name}: the hash contains a Secret value");
        }
    }
}

#[test]
fn credentials_never_reach_the_config_map() {
    let variants = [
        json!({}),
        json!({ "spec": { "kafka": {
            "authentication": { "type": "plain" },
            "tls": { "enabled": false, "caSecretRef": null } } } }),
        json!({ "spec": { "kafka": { "authentication": { "type": "scramSha256" } } } }),
    ];
    for patch in variants {
        let v = validated_of(&rtu(), &dereferenced(sor_with(patch.clone())));
        assert!(!v.files.is_empty());
        for (name, text) in &v.files {
            for value in secret_values() {
                assert!(
                    !text.contains(value),
                    "{patch}: ConfigMap key {name} holds a Secret value"
                );
            }
        }
        let debug = format!("{:?}", v.engine);
        for value in secret_values() {
            assert!(!debug.contains(value), "{patch}: the engine config holds a Secret value");
        }
    }
}

#[test]
fn a_stopped_updater_keeps_its_projections() {
    let sor = sor();
    // "a" is older, claims everything and is stopped; "me" (newer, empty list) gets nothing.
    let mut stopped = claimant("a", 1, &[], &[]);
    stopped.spec.stopped = true;
    stopped.status = Some(
        serde_json::from_value(json!({ "projections": [
        { "name": "pr_customers", "state": "Stopped" },
        { "name": "pr_orders", "state": "Stopped" },
        { "name": "pr_products", "state": "Stopped" } ] }))
        .unwrap(),
    );
    let me = claimant("me", 0, &["pr_orders"], &[]);
    let errors = ownership(&me, &sor, &[stopped.clone(), me.clone()]).unwrap_err();
    assert_eq!(errors[0].message, "projection pr_orders is owned by RealTimeUpdater a");
    // A refused projection is not held.
    let mut refused = stopped;
    refused.status = Some(
        serde_json::from_value(json!({ "projections": [
        { "name": "pr_orders", "state": "Refused" } ] }))
        .unwrap(),
    );
    refused.metadata.creation_timestamp = Some(serde_json::from_value(json!(at(5))).unwrap());
    let owned = ownership(&me, &sor, &[refused, me.clone()]).unwrap();
    assert_eq!(owned.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["pr_orders"]);
}

/// `spec.mongodb.writeConcern` of the SystemOfRecord reaches every worker's engine config; an
/// unacknowledged one is refused at its SystemOfRecord path.
#[test]
fn the_write_concern_is_rendered_and_an_unacknowledged_one_refused() {
    let default = validated();
    assert_eq!(default.engine.mongodb.write_concern, crate::config::WriteConcern::default());
    let patch =
        json!({ "spec": { "mongodb": { "writeConcern": { "w": "2", "wtimeoutMs": 2500 } } } });
    let v = validated_of(&rtu(), &dereferenced(sor_with(patch)));
    let concern = &v.engine.mongodb.write_concern;
    assert_eq!((concern.w.as_str(), concern.wtimeout_ms, concern.journal), ("2", 2500, None));
    assert!(v.files[CONFIG_FILE].contains("writeConcern"), "{}", v.files[CONFIG_FILE]);
    let patch = json!({ "spec": { "mongodb": { "writeConcern": { "w": "0" } } } });
    let errors = refused(&rtu(), &dereferenced(sor_with(patch)));
    let found: Vec<(&str, bool)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.contains("no acknowledgement")))
        .collect();
    assert_eq!(found, [("SystemOfRecord crm: spec.mongodb.writeConcern.w", true)], "{errors:?}");
}
