//! Render (pure): the engine config a RealTimeUpdater's workers read (`EngineConfig`, the one
//! contract between operator and engine), the files and Secret keys they mount, from the
//! updater, its SystemOfRecord and what the dereference step read. Validation
//! ([`super::validate`]) collects the field errors rendering meets.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::dereference::Dereferenced;
use crate::api::{ErrorPolicyType, KafkaAuthType, RealTimeUpdater, SecretKeyRef, SystemOfRecord};
use crate::config::{
    AutomaticStrategies, EngineConfig, ErrorPolicy, Functions, KafkaConfig, KafkaProtocol,
    KafkaSecurity, MongoConfig, Outputs, ProjectionChanges, ProjectionConfig, ProjectionUpdates,
    ReadProjection, SaslConfig, SaslMechanism, SecretSource, SingleViewTrigger, Strategies,
    TelemetryConfig,
};

use super::validate::*;

/// The engine config of one RealTimeUpdater and what its workers mount.
pub(super) struct Render<'a> {
    pub(super) rtu: &'a RealTimeUpdater,
    pub(super) sor: &'a SystemOfRecord,
    pub(super) refs: &'a Dereferenced,
    pub(super) errors: Vec<FieldError>,
    pub(super) secrets: BTreeSet<SecretKeyRef>,
    pub(super) files: BTreeMap<String, String>,
    /// The names of the projections this updater writes.
    pub(super) owned: BTreeSet<String>,
}

impl Render<'_> {
    pub(super) fn engine(&mut self, owned: &[ProjectionConfig]) -> EngineConfig {
        let sor = self.sor;
        let rtu = self.rtu;
        let uri = self.secret("spec.mongodb.uriSecretRef", &sor.spec.mongodb.uri_secret_ref);
        let functions = self.functions();
        EngineConfig {
            system_of_record: sor.name_any(),
            name: Some(rtu.name_any()),
            kafka: self.kafka(),
            mongodb: MongoConfig {
                uri,
                database: sor.spec.mongodb.database.clone(),
                write_concern: sor.spec.mongodb.write_concern.clone(),
            },
            adapter: sor.spec.adapter.clone(),
            projections: owned.to_vec(),
            writes: sor.spec.writes.clone(),
            error_policy: match rtu.spec.error_policy.kind {
                ErrorPolicyType::Stop => ErrorPolicy::Stop,
                ErrorPolicyType::PauseTopic => ErrorPolicy::PauseTopic,
                ErrorPolicyType::DeadLetter => ErrorPolicy::DeadLetter {
                    topic: rtu.spec.error_policy.topic.clone().unwrap_or_default(),
                },
            },
            tuning: rtu.spec.worker.tuning.clone(),
            telemetry: TelemetryConfig {
                host: "0.0.0.0".into(),
                port: METRICS_PORT,
                log_level: rtu.spec.worker.log_level.clone(),
                ..TelemetryConfig::default()
            },
            outputs: self.outputs(owned),
            functions,
        }
    }

    pub(super) fn kafka(&mut self) -> KafkaConfig {
        let k = &self.sor.spec.kafka;
        let auth = &k.authentication;
        let sasl = match auth.kind {
            KafkaAuthType::None => None,
            kind => {
                let username = self.optional_secret(
                    "spec.kafka.authentication.usernameSecretRef",
                    auth.username_secret_ref.as_ref(),
                );
                let password = self.optional_secret(
                    "spec.kafka.authentication.passwordSecretRef",
                    auth.password_secret_ref.as_ref(),
                );
                Some(SaslConfig {
                    mechanism: match kind {
                        KafkaAuthType::Plain | KafkaAuthType::None => SaslMechanism::Plain,
                        KafkaAuthType::ScramSha256 => SaslMechanism::ScramSha256,
                        KafkaAuthType::ScramSha512 => SaslMechanism::ScramSha512,
                    },
                    username,
                    password,
                })
            }
        };
        let ca_file = k
            .tls
            .ca_secret_ref
            .as_ref()
            .map(|r| self.secret("spec.kafka.tls.caSecretRef", r).file.unwrap_or_default());
        let protocol = match (k.tls.enabled, sasl.is_some()) {
            (false, false) => KafkaProtocol::Plaintext,
            (true, false) => KafkaProtocol::Ssl,
            (false, true) => KafkaProtocol::SaslPlaintext,
            (true, true) => KafkaProtocol::SaslSsl,
        };
        KafkaConfig {
            bootstrap_servers: k.bootstrap_servers.clone(),
            group_id: self
                .rtu
                .spec
                .consumer_group
                .clone()
                .unwrap_or_else(|| default_group(self.rtu)),
            auto_offset_reset: k.auto_offset_reset,
            security: KafkaSecurity { protocol, sasl, ca_file },
            config: k.config.clone(),
        }
    }

    pub(super) fn outputs(&mut self, owned: &[ProjectionConfig]) -> Outputs {
        let o = &self.rtu.spec.outputs;
        let projection_updates = o.projection_updates.enabled.then(|| ProjectionUpdates {
            topics: owned
                .iter()
                .map(|p| {
                    let topic =
                        o.projection_updates.topics.get(&p.name).cloned().unwrap_or_else(|| {
                            o.projection_updates.topic_template.replace("{projection}", &p.name)
                        });
                    (p.name.clone(), topic)
                })
                .collect(),
            compression: o.projection_updates.compression,
            format: o.projection_updates.format,
        });
        for (i, p) in o.projection_updates.topics.keys().enumerate() {
            if !owned.iter().any(|q| &q.name == p) {
                self.errors.push(invalid(
                    &format!("spec.outputs.projectionUpdates.topics.{p}"),
                    format!("{p} is not a projection this RealTimeUpdater owns (entry {i})"),
                ));
            }
        }
        let projection_changes = o.projection_changes.enabled.then(|| ProjectionChanges {
            collection: o
                .projection_changes
                .collection
                .clone()
                .unwrap_or_else(|| format!("fd-pc-{}", self.sor.name_any())),
        });
        let single_view_trigger = o.single_view_trigger.enabled.then(|| SingleViewTrigger {
            topic: o.single_view_trigger.topic.clone().unwrap_or_default(),
        });
        let automatic = o.strategies.automatic.then(|| self.automatic()).flatten();
        Outputs {
            projection_updates,
            projection_changes,
            single_view_trigger,
            strategies: Strategies {
                automatic,
                custom: o.strategies.custom.clone(),
                max_exec_time_ms: o.strategies.max_exec_time_ms,
            },
        }
    }

    /// The two schema files, copied into the engine ConfigMap.
    pub(super) fn automatic(&mut self) -> Option<AutomaticStrategies> {
        let spec = &self.sor.spec;
        let mut file =
            |field: &str, reference: Option<&crate::api::ConfigMapKeyRef>, name: &str| {
                let Some(r) = reference else {
                    self.errors.push(invalid(
                        "spec.outputs.strategies.automatic",
                        format!("needs {field} in SystemOfRecord {}", self.sor.name_any()),
                    ));
                    return None;
                };
                let text = self.refs.config_maps.get(&r.name).and_then(|data| data.get(&r.key));
                match text {
                    Some(text) => {
                        self.files.insert(name.to_string(), text.clone());
                        Some(format!("{CONFIG_DIR}/{name}"))
                    }
                    None => {
                        self.errors.push(missing(
                            &format!("SystemOfRecord {}: spec.{field}", self.sor.name_any()),
                            format!("ConfigMap {:?} with key {:?}", r.name, r.key),
                            self.refs.config_maps.contains_key(&r.name),
                        ));
                        None
                    }
                }
            };
        let er = file("erSchemaRef", spec.er_schema_ref.as_ref(), "erSchema.json");
        let pc = file(
            "projectionChangesSchemaRef",
            spec.projection_changes_schema_ref.as_ref(),
            "projectionChangesSchema.json",
        );
        let read_projections = spec
            .projections
            .iter()
            .filter(|p| !self.owned.contains(&p.name))
            .map(ReadProjection::of)
            .collect();
        Some(AutomaticStrategies {
            er_schema: er?,
            projection_changes_schema: pc?,
            read_projections,
        })
    }

    /// Every `<name>.js` key of the functions ConfigMap, copied into the engine ConfigMap.
    pub(super) fn functions(&mut self) -> Functions {
        let mut functions = Functions::default();
        let Some(r) = &self.sor.spec.custom_functions_ref else { return functions };
        let Some(data) = self.refs.config_maps.get(&r.name) else {
            self.errors.push(missing(
                &format!("SystemOfRecord {}: spec.customFunctionsRef", self.sor.name_any()),
                format!("ConfigMap {:?}", r.name),
                false,
            ));
            return functions;
        };
        for (key, text) in data {
            let Some(name) = key.strip_suffix(".js") else { continue };
            let file = format!("function-{key}");
            functions.files.insert(name.to_string(), format!("{CONFIG_DIR}/{file}"));
            self.files.insert(file, text.clone());
        }
        functions
    }

    pub(super) fn optional_secret(
        &mut self,
        field: &str,
        reference: Option<&SecretKeyRef>,
    ) -> SecretSource {
        match reference {
            Some(r) => self.secret(field, r),
            None => SecretSource { file: None, env: None },
        }
    }

    /// The file a Secret key is mounted at; an error when the Secret or key does not exist.
    pub(super) fn secret(&mut self, field: &str, r: &SecretKeyRef) -> SecretSource {
        let exists = self.refs.secrets.get(&r.name);
        if exists.is_none_or(|data| !data.contains_key(&r.key)) {
            self.errors.push(missing(
                &format!("SystemOfRecord {}: {field}", self.sor.name_any()),
                format!("Secret {:?} with key {:?}", r.name, r.key),
                exists.is_some(),
            ));
        }
        self.secrets.insert(r.clone());
        SecretSource { file: Some(secret_file(r)), env: None }
    }
}
