//! The operator examples of `examples/operator/<format>/` for tests: their manifests read as
//! users apply them, moved onto the test servers (Kafka bootstrap and credentials, the MongoDB
//! Secret, and for isolation a database and a topic prefix of the test's own), applied with
//! the Secrets they reference, and their `expected-projections.json` compared with what the
//! workers wrote.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use mongodb::Database;
use mongodb::bson::{Bson, Document};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use serde_json::{Map, Value, json};

use super::env;
use super::events::Format;
use super::operator::create;

/// The directory of `format`'s example.
pub fn dir(format: Format) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/operator").join(format.name())
}

/// One example's files, as JSON.
pub struct Example {
    /// `system-of-record.yaml`.
    pub sor: Value,
    /// `realtime-updater.yaml`.
    pub rtu: Value,
    /// `schemas.yaml`, when the example has one.
    pub config_map: Option<Value>,
    /// `expected-projections.json`: collection -> documents.
    pub expected: Value,
}

fn read(format: Format, file: &str) -> Option<Value> {
    let path = dir(format).join(file);
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        rtu_operator::yaml::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

impl Example {
    /// Reads `format`'s example.
    pub fn load(format: Format) -> Example {
        let must = |file: &str| {
            read(format, file).unwrap_or_else(|| panic!("examples/operator/{format:?}: no {file}"))
        };
        Example {
            sor: must("system-of-record.yaml"),
            rtu: must("realtime-updater.yaml"),
            config_map: read(format, "schemas.yaml"),
            expected: must("expected-projections.json"),
        }
    }

    /// The SystemOfRecord's name, which is also the RealTimeUpdater's.
    pub fn name(&self) -> &str {
        self.sor["metadata"]["name"].as_str().unwrap()
    }

    /// The ingestion topics of every projection, in order.
    pub fn topics(&self) -> Vec<String> {
        self.sor["spec"]["projections"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["topics"].as_array().unwrap().iter())
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    /// Moves the example onto the test servers: the Kafka bootstrap (the SASL listener when
    /// the example authenticates; the test Kafka has no TLS listener, so `tls` goes), the
    /// database `database`, and `prefix` before every topic name.
    pub fn isolate(&mut self, prefix: &str, database: &str) {
        let kafka = self.sor["spec"]["kafka"].as_object_mut().unwrap();
        let sasl = kafka.get("authentication").is_some_and(|a| a["type"] != "none");
        let bootstrap =
            if sasl { "RTU_TEST_KAFKA_SASL_BOOTSTRAP" } else { "RTU_TEST_KAFKA_BOOTSTRAP" };
        kafka.insert("bootstrapServers".into(), env().var(bootstrap).into());
        kafka.remove("tls");
        self.sor["spec"]["mongodb"]["database"] = database.into();
        let prefixed =
            |topic: &mut Value| *topic = format!("{prefix}{}", topic.as_str().unwrap()).into();
        for p in self.sor["spec"]["projections"].as_array_mut().unwrap() {
            p["topics"].as_array_mut().unwrap().iter_mut().for_each(prefixed);
        }
        let spec = &mut self.rtu["spec"];
        if let Some(updates) = spec.pointer_mut("/outputs/projectionUpdates") {
            if let Some(template) = updates.get_mut("topicTemplate") {
                prefixed(template);
            }
            if let Some(Value::Object(topics)) = updates.get_mut("topics") {
                topics.values_mut().for_each(prefixed);
            }
        }
        for pointer in ["/errorPolicy/topic", "/outputs/singleViewTrigger/topic"] {
            if let Some(topic) = spec.pointer_mut(pointer) {
                prefixed(topic);
            }
        }
    }

    /// The Secrets the SystemOfRecord references, with the test servers' credentials.
    fn secrets(&self) -> Map<String, Value> {
        let spec = &self.sor["spec"];
        let mut secrets = Map::new();
        let mut put = |reference: &Value, value: &str| {
            if let Some(name) = reference["name"].as_str() {
                let data = secrets.entry(name).or_insert_with(|| json!({}));
                data[reference["key"].as_str().unwrap()] = value.into();
            }
        };
        put(&spec["mongodb"]["uriSecretRef"], env().var("RTU_TEST_MONGODB_URI"));
        let auth = &spec["kafka"]["authentication"];
        put(&auth["usernameSecretRef"], env().var("RTU_TEST_KAFKA_SASL_USERNAME"));
        put(&auth["passwordSecretRef"], env().var("RTU_TEST_KAFKA_SASL_PASSWORD"));
        // Only before `isolate` (which drops `tls`): the test Kafka has no TLS listener.
        put(&spec["kafka"]["tls"]["caSecretRef"], "-----BEGIN CERTIFICATE-----\n");
        secrets
    }

    /// Creates the Secrets, then applies the ConfigMap, the SystemOfRecord and the
    /// RealTimeUpdater in `ns`, as `kubectl apply` would.
    pub async fn apply(&self, client: &Client, ns: &str) {
        for (name, data) in self.secrets() {
            create::<Secret>(
                client,
                ns,
                json!({ "metadata": { "name": name }, "stringData": data }),
            )
            .await;
        }
        let params = PatchParams::apply("rtu-operator-tests");
        if let Some(map) = &self.config_map {
            let name = map["metadata"]["name"].as_str().unwrap();
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(map))
                .await
                .unwrap_or_else(|e| panic!("applying ConfigMap {name}: {e}"));
        }
        let sor: SystemOfRecord = serde_json::from_value(self.sor.clone()).unwrap();
        Api::<SystemOfRecord>::namespaced(client.clone(), ns)
            .patch(self.name(), &params, &Patch::Apply(&sor))
            .await
            .unwrap_or_else(|e| panic!("applying SystemOfRecord {}: {e}", self.name()));
        let rtu: RealTimeUpdater = serde_json::from_value(self.rtu.clone()).unwrap();
        let name = rtu.metadata.name.clone().unwrap();
        Api::<RealTimeUpdater>::namespaced(client.clone(), ns)
            .patch(&name, &params, &Patch::Apply(&rtu))
            .await
            .unwrap_or_else(|e| panic!("applying RealTimeUpdater {name}: {e}"));
    }

    /// The projections as `expected-projections.json` states them: each collection the
    /// expected file names, its documents as relaxed extended JSON without the per-write
    /// metadata (`_id`, `createdAt`, `updatedAt`, `timestamp`, `__internal__*`), sorted.
    pub async fn projections(&self, db: &Database) -> Value {
        let mut out = Map::new();
        for collection in self.expected.as_object().unwrap().keys() {
            let mut docs = Vec::new();
            let mut cursor =
                db.collection::<Document>(collection).find(Document::new()).await.unwrap();
            while cursor.advance().await.unwrap() {
                let doc = cursor.deserialize_current().unwrap();
                docs.push(strip(doc));
            }
            out.insert(collection.clone(), Value::Array(sorted(docs)));
        }
        Value::Object(out)
    }

    /// The expected projections, each collection sorted as [`Example::projections`] sorts.
    pub fn expected_sorted(&self) -> Value {
        let mut out = Map::new();
        for (collection, docs) in self.expected.as_object().unwrap() {
            out.insert(collection.clone(), Value::Array(sorted(docs.as_array().unwrap().clone())));
        }
        Value::Object(out)
    }
}

fn strip(doc: Document) -> Value {
    let kept: Document = doc
        .into_iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "_id" | "createdAt" | "updatedAt" | "timestamp")
                && !k.starts_with("__internal__")
        })
        .collect();
    Bson::Document(kept).into_relaxed_extjson()
}

/// Sorted by their JSON text with keys in alphabetical order (field order does not matter).
fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_cached_key(|d| canonical(d).to_string());
    docs
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}
