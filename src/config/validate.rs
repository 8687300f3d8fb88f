//! The rules of an [`EngineConfig`] that its structure cannot express. Pure: every broken
//! rule is reported (not only the first), each with its field path and what would be valid.

use std::collections::BTreeMap;

use super::{
    AdapterConfig, AdapterKind, DeleteMechanism, EngineConfig, ErrorPolicy, FieldConfig, Functions,
    KafkaProtocol, KafkaSecurity, ProjectionConfig, SecretSource, Tuning, WriteConcern,
    function_name,
};
use crate::engine::cast::Cast;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The field path, e.g. `projections[0].fields[2].cast`.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// A setting the engine overrides because another one forces it (docs/writes.md#insert-update-upsert): the config is
/// usable, `rtu check` and `rtu engine` say what is in force instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The field path, e.g. `writes.deleteMechanism`.
    pub path: String,
    /// What the engine does instead.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// librdkafka properties the engine sets itself; a pass-through value would break it.
const ENGINE_OWNED_KAFKA_KEYS: [&str; 15] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "security.protocol",
    "sasl.mechanisms",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "partition.assignment.strategy",
    "statistics.interval.ms",
    "acks",
    "enable.idempotence",
];

/// librdkafka properties whose value is a credential (or embeds one).
fn carries_credentials(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(key, "sasl.jaas.config" | "sasl.oauthbearer.config" | "ssl.key.pem")
}

/// The broken rules found so far, each with its full field path.
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
    }
}

/// `w` is `majority`, a member count of at least 1, or a custom name; the wait is bounded.
fn write_concern(errors: &mut Errors, path: &str, concern: &WriteConcern) {
    let w = concern.w.trim();
    match w.parse::<i64>() {
        Ok(0) => errors.add(
            format!("{path}.w"),
            "0 asks for no acknowledgement, so a lost write could have its offset committed; use majority or a member count",
        ),
        Ok(n) if !(1..=50).contains(&n) => errors.add(
            format!("{path}.w"),
            format!("{n} is not a member count (1 to 50), majority or a custom write concern name"),
        ),
        Ok(_) => {}
        Err(_) if w.is_empty() || w != concern.w || w.contains(char::is_whitespace) => errors.add(
            format!("{path}.w"),
            format!("{:?} is not majority, a member count or a custom write concern name", concern.w),
        ),
        Err(_) => {}
    }
    if concern.wtimeout_ms == 0 {
        errors.add(
            format!("{path}.wtimeoutMs"),
            "0 would wait without bound for the acknowledgements; give a limit in milliseconds (default 10000)",
        );
    }
}

impl EngineConfig {
    /// Every broken rule, in document order; empty when the config is usable.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Errors(Vec::new());
        if self.system_of_record.trim().is_empty() {
            errors.add("systemOfRecord", "must not be empty");
        }
        self.validate_kafka(&mut errors);
        secret_source(&mut errors, "mongodb.uri", &self.mongodb.uri);
        if let Err(why) = database_name(&self.mongodb.database) {
            errors.add("mongodb.database", why);
        }
        write_concern(&mut errors, "mongodb.writeConcern", &self.mongodb.write_concern);
        adapter(&mut errors, "adapter", &self.adapter);
        self.validate_projections(&mut errors);
        if let ErrorPolicy::DeadLetter { topic } = &self.error_policy {
            if topic.trim().is_empty() {
                errors.add("errorPolicy.topic", "the dead-letter topic must not be empty");
            } else if self.projections.iter().any(|p| p.topics.contains(topic)) {
                errors.add(
                    "errorPolicy.topic",
                    format!("{topic:?} is an ingestion topic; use a topic of its own"),
                );
            }
        }
        tuning(&mut errors, &self.tuning);
        self.validate_telemetry(&mut errors);
        self.validate_outputs(&mut errors);
        self.validate_functions(&mut errors);
        let adapters = std::iter::once(("adapter".to_string(), &self.adapter)).chain(
            self.projections.iter().enumerate().filter_map(|(i, p)| {
                p.adapter.as_ref().map(|a| (format!("projections[{i}].adapter"), a))
            }),
        );
        for (path, a) in adapters {
            if let (AdapterKind::Custom, Some(function)) = (a.kind, &a.function) {
                self.function_ref(&mut errors, &format!("{path}.function"), function);
            }
        }
        errors.0
    }

    /// Whether `topic` is already used for something else (ingestion or dead letters).
    fn topic_in_use(&self, topic: &str) -> Option<&'static str> {
        if self.projections.iter().any(|p| p.topics.iter().any(|t| t == topic)) {
            return Some("an ingestion topic");
        }
        match &self.error_policy {
            ErrorPolicy::DeadLetter { topic: dlq } if dlq == topic => Some("the dead-letter topic"),
            _ => None,
        }
    }

    fn validate_outputs(&self, errors: &mut Errors) {
        let o = &self.outputs;
        let known = |name: &str| self.projections.iter().any(|p| p.name == name);
        let names =
            || self.projections.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
        if let Some(pu) = &o.projection_updates {
            if pu.topics.is_empty() {
                errors
                    .add("outputs.projectionUpdates.topics", "list at least one projection: topic");
            }
            for (projection, topic) in &pu.topics {
                let path = format!("outputs.projectionUpdates.topics.{projection}");
                if !known(projection) {
                    errors.add(
                        &path,
                        format!("no projection {projection:?}; projections are: {}", names()),
                    );
                }
                self.output_topic(errors, &path, topic);
            }
        }
        if let Some(pc) = &o.projection_changes {
            let path = "outputs.projectionChanges.collection";
            if let Err(why) = collection_name(&pc.collection) {
                errors.add(path, why);
            } else if self
                .projections
                .iter()
                .any(|p| p.collection.as_deref().unwrap_or(&p.name) == pc.collection)
            {
                errors.add(
                    path,
                    format!(
                        "{:?} is a projection's collection; use one of its own (e.g. fd-pc-{})",
                        pc.collection, self.system_of_record
                    ),
                );
            }
        }
        if let Some(sv) = &o.single_view_trigger {
            self.output_topic(errors, "outputs.singleViewTrigger.topic", &sv.topic);
        }
        let st = &o.strategies;
        let consumers = o.projection_changes.is_some() || o.single_view_trigger.is_some();
        if st.any() && !consumers {
            errors.add("outputs.strategies", "strategies run only for outputs.projectionChanges or outputs.singleViewTrigger; configure one of them");
        }
        if consumers && !st.any() {
            errors.add("outputs.strategies", "projection changes and sv-trigger need a strategy: set automatic (erSchema + projectionChangesSchema) or custom");
        }
        if let Some(a) = &st.automatic {
            for (field, path) in [
                ("erSchema", &a.er_schema),
                ("projectionChangesSchema", &a.projection_changes_schema),
            ] {
                if path.trim().is_empty() {
                    errors.add(
                        format!("outputs.strategies.automatic.{field}"),
                        "the file path must not be empty",
                    );
                }
            }
        }
        for (projection, views) in &st.custom {
            let path = format!("outputs.strategies.custom.{projection}");
            if !known(projection) {
                errors.add(
                    &path,
                    format!("no projection {projection:?}; projections are: {}", names()),
                );
            }
            for (view, function) in views {
                self.function_ref(errors, &format!("{path}.{view}"), function);
            }
        }
        if !(10..=600_000).contains(&st.max_exec_time_ms) {
            errors.add(
                "outputs.strategies.maxExecTimeMs",
                format!("{} is outside 10..=600000", st.max_exec_time_ms),
            );
        }
    }

    fn output_topic(&self, errors: &mut Errors, path: &str, topic: &str) {
        if topic.trim().is_empty() {
            errors.add(path, "the topic must not be empty");
        } else if let Some(what) = self.topic_in_use(topic) {
            errors.add(path, format!("{topic:?} is {what}; outputs need a topic of their own"));
        }
    }

    /// A reference to a function of `functions.files` (`name` or `__fromFile__[name]`).
    fn function_ref(&self, errors: &mut Errors, path: &str, reference: &str) {
        let name = function_name(reference);
        if !self.functions.files.contains_key(name) {
            let known: Vec<&str> = self.functions.files.keys().map(String::as_str).collect();
            errors.add(
                path,
                format!(
                    "no function {name:?} in functions.files (known: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            );
        }
    }

    fn validate_functions(&self, errors: &mut Errors) {
        let f = &self.functions;
        for (name, file) in &f.files {
            if name.trim().is_empty() || file.trim().is_empty() {
                errors.add(format!("functions.files.{name}"), "needs a name and a file path");
            }
        }
        if !(1..=60_000).contains(&f.time_limit_ms) {
            errors
                .add("functions.timeLimitMs", format!("{} is outside 1..=60000", f.time_limit_ms));
        }
        if !(1..=4096).contains(&f.memory_limit_mib) {
            errors.add(
                "functions.memoryLimitMib",
                format!("{} is outside 1..=4096", f.memory_limit_mib),
            );
        }
    }

    fn validate_telemetry(&self, errors: &mut Errors) {
        let t = &self.telemetry;
        if t.host.parse::<std::net::IpAddr>().is_err() {
            errors
                .add("telemetry.host", format!("{:?} is not an IP address (e.g. 0.0.0.0)", t.host));
        }
        if !(100..=600_000).contains(&t.lag_interval_ms) {
            errors.add(
                "telemetry.lagIntervalMs",
                format!("{} is outside 100..=600000", t.lag_interval_ms),
            );
        }
    }

    /// The settings the engine overrides, in document order: an explicit `deleteMechanism:
    /// soft` with `upsert: false` (deletes are hard), and `upsert: false` for projections in a
    /// format without operations (`basic`/`db2`: every change is an upsert, so upsert stays
    /// on for inserts and updates; their deletes are still hard).
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        if self.writes.upsert {
            return warnings;
        }
        let mut warn = |path: String, message: &str| {
            warnings.push(ConfigWarning { path, message: message.to_string() })
        };
        let no_operations =
            |a: &AdapterConfig| matches!(a.kind, AdapterKind::Basic | AdapterKind::Db2);
        if self.writes.delete_mechanism == Some(DeleteMechanism::Soft) {
            warn(
                "writes.deleteMechanism".into(),
                "soft is overridden: with writes.upsert false every delete is hard (a re-insert after a soft delete would collide)",
            );
        }
        let forced = "writes.upsert false does not apply here: basic/db2 messages carry no operation, every change is an upsert (upsert forced on); deletes are hard";
        if no_operations(&self.adapter) && self.projections.iter().any(|p| p.adapter.is_none()) {
            warn("adapter.type".into(), forced);
        }
        for (i, p) in self.projections.iter().enumerate() {
            if p.adapter.as_ref().is_some_and(no_operations) {
                warn(format!("projections[{i}].adapter.type"), forced);
            }
        }
        warnings
    }

    fn validate_kafka(&self, errors: &mut Errors) {
        let kafka = &self.kafka;
        if kafka.bootstrap_servers.split(',').any(|s| s.trim().is_empty()) {
            errors.add(
                "kafka.bootstrapServers",
                "must be a comma-separated list of host:port, none empty",
            );
        }
        if kafka.group_id.trim().is_empty() {
            errors.add("kafka.groupId", "must not be empty");
        }
        security(errors, &kafka.security);
        for key in kafka.config.keys() {
            if ENGINE_OWNED_KAFKA_KEYS.contains(&key.as_str()) {
                errors.add(
                    format!("kafka.config.{key}"),
                    "set by the engine; use kafka.bootstrapServers, kafka.groupId, kafka.autoOffsetReset or kafka.security instead",
                );
            } else if carries_credentials(key) {
                errors.add(
                    format!("kafka.config.{key}"),
                    "would hold a credential in plain text; credentials come from kafka.security (files or environment variables; Secret references in a SystemOfRecord)",
                );
            }
        }
    }

    fn validate_projections(&self, errors: &mut Errors) {
        if self.projections.is_empty() {
            errors.add("projections", "at least one projection is needed");
        }
        let mut names = BTreeMap::new();
        let mut collections = BTreeMap::new();
        let mut topics = BTreeMap::new();
        for (i, p) in self.projections.iter().enumerate() {
            let path = format!("projections[{i}]");
            if let Some(first) = names.insert(p.name.as_str(), i) {
                errors.add(
                    format!("{path}.name"),
                    format!("{:?} is also projections[{first}]", p.name),
                );
            }
            let collection = p.collection.as_deref().unwrap_or(&p.name);
            if let Err(why) = collection_name(collection) {
                errors.add(format!("{path}.collection"), why);
            }
            if let Some(first) = collections.insert(collection, i) {
                errors.add(
                    format!("{path}.collection"),
                    format!("{collection:?} is also written by projections[{first}]; one writer per collection"),
                );
            }
            if p.topics.is_empty() {
                errors.add(format!("{path}.topics"), "at least one ingestion topic is needed");
            }
            for (t, topic) in p.topics.iter().enumerate() {
                if let Some(first) = topics.insert(topic.as_str(), i) {
                    errors.add(
                        format!("{path}.topics[{t}]"),
                        format!("{topic:?} already feeds projections[{first}]; a topic feeds one projection"),
                    );
                }
            }
            if let Some(a) = &p.adapter {
                adapter(errors, &format!("{path}.adapter"), a);
            }
            fields(errors, &path, p, &self.functions);
        }
    }
}

fn security(errors: &mut Errors, s: &KafkaSecurity) {
    let sasl_protocol = matches!(s.protocol, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl);
    match (&s.sasl, sasl_protocol) {
        (None, true) => {
            errors.add("kafka.security.sasl", "required with protocol saslPlaintext or saslSsl")
        }
        (Some(_), false) => {
            errors.add("kafka.security.sasl", "only used with protocol saslPlaintext or saslSsl")
        }
        (Some(sasl), true) => {
            secret_source(errors, "kafka.security.sasl.username", &sasl.username);
            secret_source(errors, "kafka.security.sasl.password", &sasl.password);
        }
        (None, false) => {}
    }
    let tls = matches!(s.protocol, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl);
    if s.ca_file.is_some() && !tls {
        errors.add("kafka.security.caFile", "only used with protocol ssl or saslSsl");
    }
}

fn secret_source(errors: &mut Errors, path: &str, s: &SecretSource) {
    match (&s.file, &s.env) {
        (Some(f), None) if !f.trim().is_empty() => {}
        (None, Some(e)) if !e.trim().is_empty() => {}
        (Some(_), Some(_)) => errors.add(path, "give either file or env, not both"),
        _ => {
            errors.add(path, "give file (a mounted Secret key) or env (a variable name), not empty")
        }
    }
}

fn adapter(errors: &mut Errors, path: &str, a: &AdapterConfig) {
    let basic = matches!(a.kind, AdapterKind::Basic | AdapterKind::Db2);
    if !basic && !a.iidr.is_default() {
        errors.add(format!("{path}.iidr"), "only used with type basic (or db2)");
    }
    if a.kind != AdapterKind::Debezium && !a.debezium.is_default() {
        errors.add(format!("{path}.debezium"), "only used with type debezium");
    }
    if a.debezium.unavailable_value_placeholder.is_empty() {
        errors.add(
            format!("{path}.debezium.unavailableValuePlaceholder"),
            "must not be empty (Debezium's default is __debezium_unavailable_value)",
        );
    }
    if a.debezium.added_fields_prefix.is_empty() {
        errors.add(
            format!("{path}.debezium.addedFieldsPrefix"),
            "must not be empty: every field would count as added by the SMT (its default is __)",
        );
    }
    match (a.kind, &a.function) {
        (AdapterKind::Custom, Some(_)) if a.custom.is_some() => errors.add(
            format!("{path}.function"),
            "either the declarative mapping (custom) or a JavaScript function, not both",
        ),
        (AdapterKind::Custom, Some(_)) => return,
        (_, Some(_)) => errors.add(format!("{path}.function"), "only used with type custom"),
        (_, None) => {}
    }
    match (a.kind, &a.custom) {
        (AdapterKind::Custom, None) => errors.add(
            format!("{path}.custom"),
            "required with type custom (the declarative mapping), or set function",
        ),
        (AdapterKind::Custom, Some(m)) => {
            let pointers =
                [("operation.pointer", Some(&m.operation.pointer)), ("after", Some(&m.after))]
                    .into_iter()
                    .chain([("before", m.before.as_ref()), ("position", m.position.as_ref())]);
            for (field, pointer) in pointers {
                if let Some(p) = pointer.filter(|p| !p.is_empty() && !p.starts_with('/')) {
                    errors.add(
                        format!("{path}.custom.{field}"),
                        format!(
                            "{p:?} is not a JSON pointer (e.g. /row, or \"\" for the whole value)"
                        ),
                    );
                }
            }
            if m.operation.values.is_empty() {
                errors.add(
                    format!("{path}.custom.operation.values"),
                    "map at least one operation value",
                );
            }
        }
        (_, Some(_)) => errors.add(format!("{path}.custom"), "only used with type custom"),
        (_, None) => {}
    }
}

fn fields(errors: &mut Errors, path: &str, p: &ProjectionConfig, functions: &Functions) {
    if !p.fields.iter().any(|f| f.primary_key) {
        errors.add(format!("{path}.fields"), "at least one field needs primaryKey: true");
    }
    let mut sources = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for (j, f) in p.fields.iter().enumerate() {
        let fpath = format!("{path}.fields[{j}]");
        let target = f.target.as_deref().unwrap_or(&f.name);
        if let Some(first) = sources.insert(f.name.as_str(), j) {
            errors.add(format!("{fpath}.name"), format!("{:?} is also fields[{first}]", f.name));
        } else if let Some(first) = targets.insert(target, j) {
            let message = format!("{target:?} is also the target of fields[{first}]");
            errors.add(format!("{fpath}.target"), message);
        }
        if let Err(why) = field_name(target) {
            let field = if f.target.is_some() { "target" } else { "name" };
            errors.add(format!("{fpath}.{field}"), why);
        }
        if let Err(e) = f.cast.parse::<Cast>()
            && !functions.files.contains_key(function_name(&f.cast))
        {
            let message = format!("{e}; or a JavaScript cast named in functions.files");
            errors.add(format!("{fpath}.cast"), message);
        }
        primary_key_rules(errors, &fpath, f);
    }
}

fn primary_key_rules(errors: &mut Errors, fpath: &str, f: &FieldConfig) {
    if f.primary_key && f.nullable {
        errors.add(format!("{fpath}.nullable"), "a primary-key field cannot be nullable");
    }
}

/// Field names the engine writes itself.
const METADATA_FIELDS: [&str; 10] = [
    "_id",
    "__STATE__",
    "createdAt",
    "updatedAt",
    "creatorId",
    "updaterId",
    "timestamp",
    "__internal__kafkaInfo",
    "__internal__counter",
    "__internal__counterType",
];

fn field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('$') || name.contains('.') || name.contains('\0') {
        return Err(format!(
            "{name:?} is not a usable MongoDB field name (non-empty, no '.', not starting with '$')"
        ));
    }
    if METADATA_FIELDS.contains(&name) {
        return Err(format!(
            "{name:?} is a metadata field the engine writes; choose another target"
        ));
    }
    Ok(())
}

fn database_name(name: &str) -> Result<(), String> {
    let bad = name.chars().find(|c| "/\\. \"$*<>:|?\0".contains(*c));
    match (name.is_empty(), name.len() > 63, bad) {
        (true, _, _) => Err("must not be empty".to_string()),
        (_, true, _) => Err(format!("{name:?} is longer than 63 bytes")),
        (_, _, Some(c)) => Err(format!("{name:?} contains {c:?}; MongoDB database names cannot")),
        _ => Ok(()),
    }
}

fn collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('$') || name.contains('\0') || name.starts_with("system.") {
        return Err(format!(
            "{name:?} is not a usable collection name (non-empty, no '$', not system.*)"
        ));
    }
    Ok(())
}

fn tuning(errors: &mut Errors, t: &Tuning) {
    let ranges = [
        ("maxBatchMessages", t.max_batch_messages, 1, 100_000),
        ("maxBatchWaitMs", t.max_batch_wait_ms, 1, 60_000),
        ("writesInFlight", t.writes_in_flight, 1, 64),
        ("commitIntervalMs", t.commit_interval_ms, 100, 600_000),
        ("unhealthyAfterMs", t.unhealthy_after_ms, 100, 3_600_000),
    ];
    for (field, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            errors.add(format!("tuning.{field}"), format!("{value} is outside {min}..={max}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::EngineConfig;
    use crate::yaml;

    const GOOD: &str = r#"
systemOfRecord: crm
kafka:
  bootstrapServers: 127.0.0.1:9092
  groupId: crm.rtu
  security:
    protocol: saslPlaintext
    sasl:
      mechanism: scramSha512
      username: { file: /etc/rtu/kafka/username }
      password: { env: KAFKA_PASSWORD }
  config:
    session.timeout.ms: "30000"
mongodb:
  uri: { file: /etc/rtu/mongodb/uri }
  database: crm_db
adapter:
  type: debezium
projections:
  - name: pr_customers
    topics: [acme.dev.crm.pr_customers.ingestion]
    fields:
      - { name: customer_id, type: String, cast: castToString, required: true, primaryKey: true }
      - { name: name, type: String, cast: defaultCastToString, nullable: true }
      - { name: age, type: Number, cast: castToInteger, nullable: true }
      - { name: signup_at, type: Date, cast: castToDate, nullable: true }
      - { name: vip, type: Boolean, cast: castStringToBoolean, nullable: true }
errorPolicy:
  type: deadLetter
  topic: crm.rtu.dlq
"#;

    fn parse(text: &str) -> EngineConfig {
        yaml::from_str(text).unwrap()
    }

    /// The good config with `from` replaced by `to` (which must occur once).
    fn edited(from: &str, to: &str) -> EngineConfig {
        assert_eq!(GOOD.matches(from).count(), 1, "{from:?} must occur once");
        parse(&GOOD.replace(from, to))
    }

    fn paths(config: &EngineConfig) -> Vec<String> {
        config.validate().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn the_good_config_is_valid_and_fills_defaults() {
        let c = parse(GOOD);
        assert_eq!(c.validate(), vec![]);
        assert_eq!((c.tuning.max_batch_messages, c.tuning.max_batch_wait_ms), (2000, 500));
        assert!(c.writes.upsert && c.writes.stale_guard && c.writes.ensure_indexes);
        assert_eq!(c.projections[0].fields[2].cast, "castToInteger");
        assert_eq!(c.telemetry.port, 9464);
    }

    /// The good config plus `extra` top-level YAML.
    fn with(extra: &str) -> EngineConfig {
        parse(&format!("{GOOD}{extra}"))
    }

    #[test]
    fn outputs_and_functions_name_their_field_paths() {
        let good = with(
            r#"
outputs:
  projectionUpdates: { topics: { pr_customers: crm.pr-update } }
  projectionChanges: { collection: fd-pc-crm }
  singleViewTrigger: { topic: "acme.{singleView}.sv-trigger" }
  strategies:
    automatic: { erSchema: /s/er.json, projectionChangesSchema: /s/pc.json }
    custom: { pr_customers: { sv_x: "__fromFile__[svX]" } }
functions:
  files: { svX: /f/svX.js, myCast: /f/myCast.js }
"#,
        );
        assert_eq!(good.validate(), vec![]);
        let bad = with(
            r#"
outputs:
  projectionUpdates: { topics: { pr_nope: acme.dev.crm.pr_customers.ingestion } }
  projectionChanges: { collection: pr_customers }
  strategies:
    custom: { pr_customers: { sv_x: missing } }
    maxExecTimeMs: 1
functions:
  files: { f: /f.js }
  memoryLimitMib: 0
"#,
        );
        let errors = bad.validate();
        let at = |path: &str| {
            errors.iter().filter(|e| e.path == path).map(|e| e.message.clone()).collect::<Vec<_>>()
        };
        let pu = at("outputs.projectionUpdates.topics.pr_nope");
        assert!(pu[0].contains("no projection \"pr_nope\"") && pu[0].contains("pr_customers"));
        assert!(pu[1].contains("an ingestion topic"), "{pu:?}");
        assert!(at("outputs.projectionChanges.collection")[0].contains("fd-pc-crm"));
        let custom = at("outputs.strategies.custom.pr_customers.sv_x");
        assert!(custom[0].contains("no function \"missing\"") && custom[0].contains("known: f"));
        assert_eq!(at("outputs.strategies.maxExecTimeMs").len(), 1);
        assert_eq!(at("functions.memoryLimitMib").len(), 1);
        let no_consumer = with(
            "outputs: { strategies: { custom: { pr_customers: { v: f } } } }\nfunctions: { files: { f: /f.js } }",
        );
        assert_eq!(paths(&no_consumer), ["outputs.strategies"]);
        let no_strategy = with("outputs: { projectionChanges: { collection: fd-pc-crm } }");
        assert_eq!(paths(&no_strategy), ["outputs.strategies"]);
        let js_cast = GOOD.replace("cast: castToInteger", "cast: myCast")
            + "functions: { files: { myCast: /f/c.js } }";
        assert_eq!(parse(&js_cast).validate(), vec![]);
        let js_adapter = |extra: &str| {
            let text = GOOD.replace("type: debezium", &format!("type: custom{extra}"));
            parse(&format!("{text}functions: {{ files: {{ adapt: /f/a.js }} }}"))
        };
        assert_eq!(js_adapter("\n  function: adapt").validate(), vec![]);
        assert_eq!(paths(&js_adapter("\n  function: nope")), ["adapter.function"]);
        assert_eq!(paths(&js_adapter("")), ["adapter.custom"]);
        let both = "\n  function: adapt\n  custom: { operation: { pointer: /op, values: { I: insert } }, after: /row, key: after }";
        assert_eq!(paths(&js_adapter(both)), ["adapter.function"]);
        let unknown_cast = GOOD.replace("cast: castToInteger", "cast: myCast");
        let errors = parse(&unknown_cast).validate();
        assert_eq!(errors[0].path, "projections[0].fields[2].cast");
        assert!(errors[0].message.contains("or a JavaScript cast named in functions.files"));
    }

    #[test]
    fn each_rule_names_its_field_path() {
        let cases: &[(&str, &str, &str)] = &[
            ("cast: castToInteger", "cast: castToInt", "projections[0].fields[2].cast"),
            ("groupId: crm.rtu", "groupId: ' '", "kafka.groupId"),
            (
                "bootstrapServers: 127.0.0.1:9092",
                "bootstrapServers: 'a:1,'",
                "kafka.bootstrapServers",
            ),
            ("session.timeout.ms: \"30000\"", "group.id: other", "kafka.config.group.id"),
            (
                "session.timeout.ms: \"30000\"",
                "sasl.jaas.config: x",
                "kafka.config.sasl.jaas.config",
            ),
            (
                "session.timeout.ms: \"30000\"",
                "ssl.key.password: x",
                "kafka.config.ssl.key.password",
            ),
            ("protocol: saslPlaintext", "protocol: plaintext", "kafka.security.sasl"),
            (
                "password: { env: KAFKA_PASSWORD }",
                "password: { env: K, file: /x }",
                "kafka.security.sasl.password",
            ),
            ("password: { env: KAFKA_PASSWORD }", "password: {}", "kafka.security.sasl.password"),
            ("database: crm_db", "database: crm.db", "mongodb.database"),
            ("type: debezium", "type: custom", "adapter.custom"),
            (
                "topic: crm.rtu.dlq",
                "topic: acme.dev.crm.pr_customers.ingestion",
                "errorPolicy.topic",
            ),
            (
                "primaryKey: true }",
                "primaryKey: true, nullable: true }",
                "projections[0].fields[0].nullable",
            ),
            ("primaryKey: true }", "primaryKey: false }", "projections[0].fields"),
            (
                "{ name: name, type: String",
                "{ name: age, type: String",
                "projections[0].fields[2].name",
            ),
            ("{ name: name,", "{ name: name, target: age,", "projections[0].fields[2].target"),
            ("{ name: vip,", "{ name: vip, target: __STATE__,", "projections[0].fields[4].target"),
            (
                "topics: [acme.dev.crm.pr_customers.ingestion]",
                "topics: []",
                "projections[0].topics",
            ),
            (
                "errorPolicy:",
                "tuning: { writesInFlight: 0 }\nerrorPolicy:",
                "tuning.writesInFlight",
            ),
        ];
        for (from, to, path) in cases {
            assert_eq!(paths(&edited(from, to)), vec![path.to_string()], "{from} -> {to}");
        }
    }

    /// docs/failures.md#write-concern: majority by default, a member count, a custom name; never
    /// unacknowledged, never an unbounded wait; the command document MongoDB reads.
    #[test]
    fn the_write_concern_is_acknowledged_and_bounded() {
        use mongodb::bson::doc;
        let c = parse(GOOD);
        assert_eq!(
            c.mongodb.write_concern.command_document(),
            doc! { "w": "majority", "wtimeout": 10_000_i64 }
        );
        let concern = |flow: &str| {
            edited("database: crm_db", &format!("database: crm_db\n  writeConcern: {flow}"))
        };
        let two = concern(r#"{ w: "2", wtimeoutMs: 500, journal: true }"#);
        assert_eq!(two.validate(), vec![]);
        assert_eq!(
            two.mongodb.write_concern.command_document(),
            doc! { "w": 2, "wtimeout": 500_i64, "j": true }
        );
        let named = concern("{ w: twoDataCenters }");
        assert_eq!(named.validate(), vec![]);
        assert_eq!(
            named.mongodb.write_concern.command_document(),
            doc! { "w": "twoDataCenters", "wtimeout": 10_000_i64 }
        );
        for (flow, path, says) in [
            (r#"{ w: "0" }"#, "mongodb.writeConcern.w", "no acknowledgement"),
            (r#"{ w: "-1" }"#, "mongodb.writeConcern.w", "not a member count"),
            (r#"{ w: "51" }"#, "mongodb.writeConcern.w", "not a member count"),
            (r#"{ w: " majority" }"#, "mongodb.writeConcern.w", "is not majority"),
            (r#"{ w: "" }"#, "mongodb.writeConcern.w", "is not majority"),
            ("{ wtimeoutMs: 0 }", "mongodb.writeConcern.wtimeoutMs", "without bound"),
        ] {
            let errors = concern(flow).validate();
            assert_eq!(errors.len(), 1, "{flow}: {errors:?}");
            assert_eq!(errors[0].path, path, "{flow}");
            assert!(errors[0].message.contains(says), "{flow}: {}", errors[0].message);
        }
        let err = yaml::from_str::<EngineConfig>(&GOOD.replace(
            "database: crm_db",
            "database: crm_db\n  writeConcern: { w: majority, wtimeout: 5 }",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wtimeout"), "{err}");
    }

    #[test]
    fn every_error_is_reported_not_only_the_first() {
        let c = parse(
            &GOOD
                .replace("castToInteger", "castToInt")
                .replace("castToDate", "toDate")
                .replace("crm_db", ""),
        );
        assert_eq!(
            paths(&c),
            ["mongodb.database", "projections[0].fields[2].cast", "projections[0].fields[3].cast"]
        );
        let message = c.validate()[1].message.clone();
        assert!(
            message.contains("unknown cast function \"castToInt\"")
                && message.contains("castToInteger"),
            "{message}"
        );
    }

    #[test]
    fn topics_and_collections_have_one_owner() {
        let two = GOOD.replace(
            "errorPolicy:",
            "  - name: pr_copy\n    collection: pr_customers\n    topics: [acme.dev.crm.pr_customers.ingestion]\n    fields: [{ name: id, type: String, primaryKey: true }]\nerrorPolicy:",
        );
        assert_eq!(paths(&parse(&two)), ["projections[1].collection", "projections[1].topics[0]"]);
    }

    #[test]
    fn upsert_off_forces_hard_deletes_and_warns_about_overridden_settings() {
        use super::super::DeleteMechanism::{Hard, Soft};
        let with = |writes: &str, adapter: &str| {
            parse(&format!("{}writes: {writes}\n", GOOD.replace("type: debezium", adapter)))
        };
        let warned = |c: &EngineConfig| -> Vec<String> {
            c.warnings().into_iter().map(|w| w.path).collect()
        };
        let c = with("{ upsert: false, deleteMechanism: soft }", "type: debezium");
        assert_eq!((c.validate(), c.writes.delete()), (vec![], Hard));
        assert_eq!(warned(&c), ["writes.deleteMechanism"]);
        assert!(c.warnings()[0].to_string().contains("every delete is hard"), "{:?}", c.warnings());
        let c = with("{ upsert: false }", "type: debezium");
        assert_eq!((c.writes.delete(), warned(&c)), (Hard, vec![]));
        let c = with("{ upsert: false }", "type: db2");
        assert_eq!((c.validate(), warned(&c)), (vec![], vec!["adapter.type".to_string()]));
        let c = with("{ upsert: true }", "type: db2");
        assert_eq!((c.writes.delete(), warned(&c)), (Soft, vec![]));
        let c = with("{ deleteMechanism: hard }", "type: debezium");
        assert_eq!((c.writes.delete(), warned(&c)), (Hard, vec![]));
    }

    #[test]
    fn structure_errors_name_the_path_and_what_is_valid() {
        let err = yaml::from_str::<EngineConfig>(&GOOD.replace("type: debezium", "type: oracle"))
            .unwrap_err();
        assert_eq!(err.path, "adapter.type");
        assert!(err.message.contains("unknown variant `oracle`, expected one of"), "{err}");
        assert!(err.message.contains("`goldenGate`"), "{err}");
        let err =
            yaml::from_str::<EngineConfig>(&GOOD.replace("groupId:", "groupID:")).unwrap_err();
        assert_eq!(err.path, "kafka.groupID");
        assert!(err.message.contains("unknown field `groupID`, expected one of"), "{err}");
        let err = yaml::from_str::<EngineConfig>(
            &GOOD.replace("primaryKey: true", "primaryKey: yes please"),
        )
        .unwrap_err();
        assert_eq!(err.path, "projections[0].fields[0].primaryKey");
    }
}
