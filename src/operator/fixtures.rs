//! Test fixtures of the operator's pure steps: a SystemOfRecord `crm` (three projections, SCRAM
//! over TLS, schema and function ConfigMaps), RealTimeUpdaters built from JSON as the API server
//! would hand them over, and a [`Dereferenced`] filled by hand with the Secrets and ConfigMaps
//! they reference.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::dereference::Dereferenced;
use super::validate::{Settings, Validated, validate};
use crate::api::{RealTimeUpdater, SystemOfRecord};

/// The namespace of every fixture.
pub const NS: &str = "acme";
/// The operator's own image, the worker image by default.
pub const WORKER_IMAGE: &str = "registry.example/fastdata/rtu:1.2.3";
/// The Secret values: none of them may appear in a ConfigMap or a manifest.
pub const MONGO_URI: &str = "mongodb://rtu:m0ngo-S3cret@mongo-0.acme:27017/crm";
pub const KAFKA_USERNAME: &str = "rtu-kafka-principal";
pub const KAFKA_PASSWORD: &str = "hunter2-kafka-P4ss";
pub const KAFKA_CA: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBkafkaCAfixture\n-----END CERTIFICATE-----\n";
/// A key of a referenced Secret that nothing references.
pub const UNUSED_SECRET: &str = "not-referenced-value";
/// The files of the automatic strategy and a custom function.
pub const ER_SCHEMA: &str = r#"{"version":"1.0.0","config":{"pr_customers":{"outgoing":{}}}}"#;
pub const PC_SCHEMA: &str = r#"{"version":"1.0.0","config":{"sv_customers":{"paths":[{"path":["pr_customers"],"identifier":{"customerId":"customer_id"}}]}}}"#;
pub const SV_ORDERS_JS: &str = "module.exports = async function svOrders(logger, db, { after }) { return [{ orderId: after.order_id }] }";

/// Every Secret value of [`dereferenced`].
pub fn secret_values() -> [&'static str; 5] {
    [MONGO_URI, KAFKA_USERNAME, KAFKA_PASSWORD, KAFKA_CA, UNUSED_SECRET]
}

/// An RFC 3339 creation time `n` seconds after a fixed instant.
pub fn at(n: u32) -> String {
    format!("2025-01-01T00:{:02}:{:02}Z", n / 60, n % 60)
}

/// JSON merge patch (RFC 7386): objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            let Value::Object(fields) = target else { unreachable!() };
            for (key, value) in patch {
                if value.is_null() {
                    fields.remove(&key);
                } else {
                    merge(fields.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

/// The SystemOfRecord `crm`.
pub fn sor_json() -> Value {
    json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1",
        "kind": "SystemOfRecord",
        "metadata": { "name": "crm", "namespace": NS, "uid": "uid-sor-crm" },
        "spec": {
            "kafka": {
                "bootstrapServers": "kafka-0.acme:9093,kafka-1.acme:9093",
                "authentication": {
                    "type": "scramSha512",
                    "usernameSecretRef": { "name": "kafka-user", "key": "username" },
                    "passwordSecretRef": { "name": "kafka-user", "key": "password" }
                },
                "tls": { "enabled": true, "caSecretRef": { "name": "kafka-ca", "key": "ca.crt" } },
                "config": { "session.timeout.ms": "30000" }
            },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
            "adapter": { "type": "debezium" },
            "erSchemaRef": { "name": "crm-schemas", "key": "erSchema.json" },
            "projectionChangesSchemaRef": {
                "name": "crm-schemas", "key": "projectionChangesSchema.json"
            },
            "customFunctionsRef": { "name": "crm-functions" },
            "projections": [
                { "name": "pr_customers", "topics": ["crm.customers"], "fields": [
                    { "name": "customer_id", "type": "String", "primaryKey": true },
                    { "name": "name", "type": "String", "cast": "defaultCastToString" } ] },
                { "name": "pr_orders", "topics": ["crm.orders"], "fields": [
                    { "name": "order_id", "type": "String", "primaryKey": true },
                    { "name": "customer_id", "type": "String" } ] },
                { "name": "pr_products", "collection": "products", "topics": ["crm.products"],
                  "fields": [ { "name": "sku", "type": "String", "primaryKey": true } ] }
            ]
        }
    })
}

/// `crm` with a merge patch applied to the whole object.
pub fn sor_with(patch: Value) -> SystemOfRecord {
    let mut value = sor_json();
    merge(&mut value, patch);
    serde_json::from_value(value).expect("a SystemOfRecord")
}

/// `crm` as it is.
pub fn sor() -> SystemOfRecord {
    sor_with(json!({}))
}

/// A representative RealTimeUpdater spec: two of the three projections, every output, both
/// strategy kinds, a dead-letter policy, three replicas.
pub fn rtu_spec() -> Value {
    json!({
        "systemOfRecordRef": { "name": "crm" },
        "projections": ["pr_customers", "pr_orders"],
        "outputs": {
            "projectionUpdates": {
                "enabled": true,
                "topicTemplate": "acme.crm.{projection}.pr-update",
                "topics": { "pr_orders": "acme.orders.updates" }
            },
            "projectionChanges": { "enabled": true },
            "singleViewTrigger": { "enabled": true, "topic": "acme.{singleView}.sv-trigger" },
            "strategies": { "automatic": true, "custom": { "pr_orders": { "sv_orders": "svOrders" } } }
        },
        "errorPolicy": { "type": "deadLetter", "topic": "acme.crm.dlq" },
        "replicas": 3,
        "worker": {
            "gracefulShutdownSeconds": 45,
            "resources": { "requests": { "cpu": "250m", "memory": "256Mi" },
                           "limits": { "memory": "512Mi" } }
        }
    })
}

/// A RealTimeUpdater `name` of [`rtu_spec`], created at [`at(0)`](at), with a merge patch
/// applied to the whole object.
pub fn rtu_with(name: &str, patch: Value) -> RealTimeUpdater {
    let mut value = json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1",
        "kind": "RealTimeUpdater",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "creationTimestamp": at(0), "generation": 1, "resourceVersion": "100"
        },
        "spec": rtu_spec()
    });
    merge(&mut value, patch);
    serde_json::from_value(value).expect("a RealTimeUpdater")
}

/// The representative RealTimeUpdater `customers`.
pub fn rtu() -> RealTimeUpdater {
    rtu_with("customers", json!({}))
}

/// A minimal RealTimeUpdater of `crm` for ownership: created at `at(created)`, claiming
/// `projections` (empty: all), its status holding `held` as `Active`.
pub fn claimant(name: &str, created: u32, projections: &[&str], held: &[&str]) -> RealTimeUpdater {
    let held: Vec<Value> = held.iter().map(|p| json!({ "name": p, "state": "Active" })).collect();
    let mut value = json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1",
        "kind": "RealTimeUpdater",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "creationTimestamp": at(created)
        },
        "spec": { "systemOfRecordRef": { "name": "crm" }, "projections": projections }
    });
    if !held.is_empty() {
        merge(&mut value, json!({ "status": { "projections": held } }));
    }
    serde_json::from_value(value).expect("a RealTimeUpdater")
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

fn text(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What the dereference step reads for `sor` when every referenced object exists; no siblings.
pub fn dereferenced(sor: SystemOfRecord) -> Dereferenced {
    Dereferenced {
        sor: Some(sor),
        secrets: BTreeMap::from([
            ("mongo".to_string(), data(&[("uri", MONGO_URI)])),
            (
                "kafka-user".to_string(),
                data(&[
                    ("username", KAFKA_USERNAME),
                    ("password", KAFKA_PASSWORD),
                    ("unused", UNUSED_SECRET),
                ]),
            ),
            ("kafka-ca".to_string(), data(&[("ca.crt", KAFKA_CA)])),
        ]),
        config_maps: BTreeMap::from([
            (
                "crm-schemas".to_string(),
                text(&[("erSchema.json", ER_SCHEMA), ("projectionChangesSchema.json", PC_SCHEMA)]),
            ),
            (
                "crm-functions".to_string(),
                text(&[("svOrders.js", SV_ORDERS_JS), ("README.md", "not a function")]),
            ),
        ]),
        siblings: Vec::new(),
    }
}

/// [`dereferenced`] of [`sor`].
pub fn refs() -> Dereferenced {
    dereferenced(sor())
}

/// The operator's settings.
pub fn settings() -> Settings {
    Settings { worker_image: WORKER_IMAGE.to_string() }
}

/// [`rtu`] validated against [`refs`].
pub fn validated() -> Validated {
    validated_of(&rtu(), &refs())
}

/// `rtu` validated against `refs`; panics with the errors when invalid.
pub fn validated_of(rtu: &RealTimeUpdater, refs: &Dereferenced) -> Validated {
    validate(rtu, refs, &settings()).unwrap_or_else(|e| panic!("invalid: {e}"))
}
