//! Validate (pure): a RealTimeUpdater and what it references become a [`Validated`] model (the
//! projections it owns, the rendered `EngineConfig`, the files and Secret keys its workers
//! mount, the content hash that rolls them), or an [`Invalid`] that names every field path at
//! fault and what would be valid. No I/O: the dereference step read everything beforehand.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use k8s_openapi::ByteString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::dereference::Dereferenced;
use super::render::Render;
use crate::api::{ProjectionStatus, RealTimeUpdater, SecretKeyRef, SystemOfRecord, Worker};
use crate::config::{EngineConfig, ProjectionConfig};
use crate::engine::script::ScriptError;

/// Where the engine ConfigMap is mounted in the worker container.
pub const CONFIG_DIR: &str = "/etc/rtu";
/// The engine config's key in the ConfigMap (and file name under [`CONFIG_DIR`]).
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the referenced Secret keys are mounted, as `<secret>/<key>`.
pub const SECRETS_DIR: &str = "/var/run/secrets/rtu";

/// The file a Secret key is mounted at in a worker pod.
pub fn secret_file(r: &crate::api::SecretKeyRef) -> String {
    format!("{SECRETS_DIR}/{}/{}", r.name, r.key)
}
/// The port of the workers' `/healthz`, `/readyz` and `/metrics`.
pub const METRICS_PORT: u16 = 9464;
/// Longest RealTimeUpdater name: its metrics Service `<name>-metrics` must be a DNS label (63
/// characters at most), and the name itself a label value.
const MAX_NAME: usize = 63 - "-metrics".len();

/// Why a RealTimeUpdater cannot be reconciled; the `Ready` condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The spec (or the SystemOfRecord it references) breaks a rule.
    InvalidSpec,
    /// An object the spec references does not exist (or lacks the key).
    MissingReference,
    /// A projection it claims is owned by an older RealTimeUpdater.
    ProjectionConflict,
}

impl Reason {
    /// The CamelCase word used in conditions, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::MissingReference => "MissingReference",
            Reason::ProjectionConflict => "ProjectionConflict",
        }
    }
}

/// One broken rule: where, and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The kind of problem.
    pub reason: Reason,
    /// The field path, prefixed by the resource it is in when that is not the
    /// RealTimeUpdater (`SystemOfRecord crm: spec.projections[1].topics`).
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every broken rule of one RealTimeUpdater.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    /// The reason of the condition: a conflict first, then a missing reference, else invalid.
    pub fn reason(&self) -> Reason {
        [Reason::ProjectionConflict, Reason::MissingReference]
            .into_iter()
            .find(|r| self.0.iter().any(|e| e.reason == *r))
            .unwrap_or(Reason::InvalidSpec)
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

/// Settings of the operator process that shape every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The worker image when the RealTimeUpdater names none (the operator's own image).
    pub worker_image: String,
}

/// A RealTimeUpdater ready to be built into its children.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The RealTimeUpdater's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid (owner references).
    pub uid: String,
    /// The SystemOfRecord's name.
    pub system_of_record: String,
    /// The engine config every worker reads.
    pub engine: EngineConfig,
    /// The engine ConfigMap's data: `config.yaml` and the schema and function files.
    pub files: BTreeMap<String, String>,
    /// The Secret keys mounted under [`SECRETS_DIR`].
    pub secrets: BTreeSet<SecretKeyRef>,
    /// sha256 of the files and the mounted Secret values; the pod template carries it.
    pub config_hash: String,
    /// Worker pods wanted (0 when stopped).
    pub replicas: i32,
    /// The worker settings.
    pub worker: Worker,
    /// The image of the workers.
    pub image: String,
    /// The owned projections.
    pub projections: Vec<ProjectionStatus>,
}

/// Validates `rtu` against what it references; every error is collected.
pub fn validate(
    rtu: &RealTimeUpdater,
    refs: &Dereferenced,
    settings: &Settings,
) -> Result<Validated, Invalid> {
    let mut errors = Vec::new();
    let name = rtu.name_any();
    if name.len() > MAX_NAME {
        errors.push(invalid(
            "metadata.name",
            format!(
                "{} characters; at most {MAX_NAME} (its metrics Service {name}-metrics must fit in 63)",
                name.len()
            ),
        ));
    }
    let Some(sor) = &refs.sor else {
        errors.push(FieldError {
            reason: Reason::MissingReference,
            path: "spec.systemOfRecordRef.name".into(),
            message: format!(
                "no SystemOfRecord {:?} in namespace {:?}",
                rtu.spec.system_of_record_ref.name,
                rtu.namespace().unwrap_or_default()
            ),
        });
        return Err(Invalid(errors));
    };
    let owned = ownership(rtu, sor, &refs.siblings);
    let owned = match owned {
        Ok(owned) => owned,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(Invalid(errors));
        }
    };
    let mut render = Render {
        rtu,
        sor,
        refs,
        errors,
        secrets: BTreeSet::new(),
        files: BTreeMap::new(),
        owned: owned.iter().map(|p| p.name.clone()).collect(),
    };
    let engine = render.engine(&owned);
    let Render { mut errors, secrets, mut files, .. } = render;
    let projection_paths: BTreeMap<usize, usize> = owned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            sor.spec.projections.iter().position(|q| q.name == p.name).map(|j| (i, j))
        })
        .collect();
    if errors.is_empty() {
        for e in engine.validate() {
            errors.push(invalid(&crd_path(&e.path, sor, &projection_paths), e.message));
        }
    }
    if errors.is_empty() {
        errors.extend(check_schemas(&engine, &files, sor));
        errors.extend(check_functions(&engine, &files, sor));
    }
    if !errors.is_empty() {
        return Err(Invalid(errors));
    }
    let yaml = crate::yaml::to_string(&engine).map_err(|e| {
        Invalid(vec![invalid("spec", format!("the engine config cannot be rendered: {e}"))])
    })?;
    files.insert(CONFIG_FILE.to_string(), yaml);
    let config_hash = hash(&files, &secrets, refs);
    let projections = owned
        .iter()
        .map(|p| ProjectionStatus {
            name: p.name.clone(),
            topics: p.topics.clone(),
            state: if rtu.spec.stopped { "Stopped" } else { "Active" }.to_string(),
            message: String::new(),
        })
        .collect();
    Ok(Validated {
        name,
        namespace: rtu.namespace().unwrap_or_default(),
        uid: rtu.uid().unwrap_or_default(),
        system_of_record: sor.name_any(),
        engine,
        files,
        secrets,
        config_hash,
        replicas: if rtu.spec.stopped { 0 } else { rtu.spec.replicas },
        worker: rtu.spec.worker.clone(),
        image: rtu.spec.worker.image.clone().unwrap_or_else(|| settings.worker_image.clone()),
        projections,
    })
}

pub(super) fn invalid(path: &str, message: impl Into<String>) -> FieldError {
    FieldError { reason: Reason::InvalidSpec, path: path.to_string(), message: message.into() }
}

/// The projections `rtu` owns. A projection an updater already holds (its status lists it as
/// `Active` or `Stopped` and its spec still claims it) stays with it, so a running updater never loses a
/// projection because another one appears or goes. The rest is claimed in age order (creation
/// time, then name): an explicit list takes exactly those projections and is refused when one
/// of them is taken; an empty list takes every projection still free.
pub fn ownership(
    rtu: &RealTimeUpdater,
    sor: &SystemOfRecord,
    siblings: &[RealTimeUpdater],
) -> Result<Vec<ProjectionConfig>, Vec<FieldError>> {
    let known: Vec<&str> = sor.spec.projections.iter().map(|p| p.name.as_str()).collect();
    let unknown: Vec<FieldError> = rtu
        .spec
        .projections
        .iter()
        .enumerate()
        .filter(|(_, p)| !known.contains(&p.as_str()))
        .map(|(i, p)| {
            invalid(
                &format!("spec.projections[{i}]"),
                format!(
                    "SystemOfRecord {} has no projection {p:?} (known: {})",
                    sor.name_any(),
                    known.join(", ")
                ),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut claimants: Vec<&RealTimeUpdater> = siblings
        .iter()
        .filter(|s| {
            s.spec.system_of_record_ref == rtu.spec.system_of_record_ref && s.uid() != rtu.uid()
        })
        .chain(std::iter::once(rtu))
        .collect();
    claimants.sort_by_key(|r| (r.creation_timestamp().map(|t| t.0), r.name_any()));
    let claims = |r: &RealTimeUpdater, p: &str| {
        r.spec.projections.is_empty() || r.spec.projections.iter().any(|q| q == p)
    };
    let mut taken: BTreeMap<&str, String> = BTreeMap::new();
    for claimant in &claimants {
        let held =
            // Stopped workers still own their projections (and their group's offsets).
            claimant.status.iter().flat_map(|s| &s.projections).filter(|p| p.state != "Refused");
        for p in held {
            if let Some(name) = known.iter().find(|k| **k == p.name)
                && claims(claimant, name)
            {
                taken.entry(name).or_insert_with(|| claimant.name_any());
            }
        }
    }
    for claimant in claimants {
        let me = claimant.name_any();
        let wanted: Vec<&str> = if claimant.spec.projections.is_empty() {
            known.iter().copied().filter(|p| taken.get(p).is_none_or(|o| *o == me)).collect()
        } else {
            claimant
                .spec
                .projections
                .iter()
                .map(String::as_str)
                .filter(|p| known.contains(p))
                .collect()
        };
        let conflicts: Vec<(&str, String)> = wanted
            .iter()
            .filter_map(|p| taken.get(p).filter(|o| **o != me).map(|owner| (*p, owner.clone())))
            .collect();
        if std::ptr::eq(claimant, rtu) {
            if !conflicts.is_empty() {
                return Err(conflicts
                    .into_iter()
                    .map(|(p, owner)| FieldError {
                        reason: Reason::ProjectionConflict,
                        path: "spec.projections".into(),
                        message: format!("projection {p} is owned by RealTimeUpdater {owner}"),
                    })
                    .collect());
            }
            if wanted.is_empty() {
                let owners: BTreeSet<&String> = taken.values().collect();
                return Err(vec![FieldError {
                    reason: Reason::ProjectionConflict,
                    path: "spec.projections".into(),
                    message: format!(
                        "every projection of SystemOfRecord {} is owned by another RealTimeUpdater ({})",
                        sor.name_any(),
                        owners.into_iter().map(String::as_str).collect::<Vec<_>>().join(", ")
                    ),
                }]);
            }
            return Ok(sor
                .spec
                .projections
                .iter()
                .filter(|p| wanted.contains(&p.name.as_str()))
                .cloned()
                .collect());
        }
        if conflicts.is_empty() {
            for p in wanted {
                taken.insert(p, me.clone());
            }
        }
    }
    Ok(Vec::new())
}

pub(super) fn missing(path: &str, what: String, object_exists: bool) -> FieldError {
    let message = if object_exists {
        format!("{what}: the key is missing")
    } else {
        format!("{what}: not found in the namespace")
    };
    FieldError { reason: Reason::MissingReference, path: path.to_string(), message }
}

/// The automatic strategy's two files, checked as the engine will check them at start, so a
/// bad schema is refused here instead of crash-looping the workers.
pub(super) fn check_schemas(
    engine: &EngineConfig,
    files: &BTreeMap<String, String>,
    sor: &SystemOfRecord,
) -> Vec<FieldError> {
    const ER: &str = "erSchema.json";
    const PC: &str = "projectionChangesSchema.json";
    if engine.outputs.strategies.automatic.is_none() {
        return Vec::new();
    }
    let (Some(er), Some(pc)) = (files.get(ER), files.get(PC)) else { return Vec::new() };
    let infos = crate::engine::strategy::projection_infos(engine);
    let Err(errors) =
        crate::engine::strategy::parse((Path::new(ER), er), (Path::new(PC), pc), &infos)
    else {
        return Vec::new();
    };
    errors
        .0
        .into_iter()
        .map(|e| {
            let (field, reference) = if e.file == Path::new(ER) {
                ("erSchemaRef", sor.spec.er_schema_ref.as_ref())
            } else {
                ("projectionChangesSchemaRef", sor.spec.projection_changes_schema_ref.as_ref())
            };
            let at = reference
                .map(|r| format!(" (ConfigMap {}, key {})", r.name, r.key))
                .unwrap_or_default();
            let pointer =
                if e.pointer.is_empty() { String::new() } else { format!("{}: ", e.pointer) };
            invalid(
                &format!("SystemOfRecord {}: spec.{field}{at}", sor.name_any()),
                format!("{pointer}{}", e.message),
            )
        })
        .collect()
}

/// The JavaScript functions the engine config names, loaded from the texts about to be
/// rendered as the engine will load them at start (syntax, export, top-level errors), so a
/// broken function is refused here instead of leaving the workers not ready.
pub(super) fn check_functions(
    engine: &EngineConfig,
    files: &BTreeMap<String, String>,
    sor: &SystemOfRecord,
) -> Vec<FieldError> {
    let Some(r) = &sor.spec.custom_functions_ref else { return Vec::new() };
    let read = |name: &str, path: &str| {
        let file = path.strip_prefix(CONFIG_DIR).unwrap_or(path).trim_start_matches('/');
        let label = format!("{}/{}", r.name, file.strip_prefix("function-").unwrap_or(file));
        match files.get(file) {
            Some(text) => Ok((label, text.clone())),
            None => Err(ScriptError::Read {
                file: label.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {name}")),
            }),
        }
    };
    crate::engine::functions::check_texts(engine, &read)
        .into_iter()
        .map(|message| {
            invalid(
                &format!(
                    "SystemOfRecord {}: spec.customFunctionsRef (ConfigMap {})",
                    sor.name_any(),
                    r.name
                ),
                message,
            )
        })
        .collect()
}

/// `<namespace>.<name>`.
pub fn default_group(rtu: &RealTimeUpdater) -> String {
    format!("{}.{}", rtu.namespace().unwrap_or_default(), rtu.name_any())
}

/// An engine config path as the field of the resource it came from.
pub(super) fn crd_path(
    engine: &str,
    sor: &SystemOfRecord,
    projections: &BTreeMap<usize, usize>,
) -> String {
    let in_sor = |rest: &str| format!("SystemOfRecord {}: spec.{rest}", sor.name_any());
    let (head, rest) = engine.split_once('.').unwrap_or((engine, ""));
    let head_name = head.split('[').next().unwrap_or(head);
    match head_name {
        "projections" => {
            let index =
                head.trim_start_matches("projections[").trim_end_matches(']').parse::<usize>().ok();
            let j = index.and_then(|i| projections.get(&i)).copied().unwrap_or(0);
            let rest = if rest.is_empty() { String::new() } else { format!(".{rest}") };
            in_sor(&format!("projections[{j}]{rest}"))
        }
        "adapter" | "writes" => in_sor(engine),
        "kafka" => match engine {
            // The group comes from the RealTimeUpdater, the security from the SoR's fields.
            "kafka.groupId" => "spec.consumerGroup".to_string(),
            "kafka.security.sasl" => in_sor("kafka.authentication"),
            "kafka.security.sasl.username" => in_sor("kafka.authentication.usernameSecretRef"),
            "kafka.security.sasl.password" => in_sor("kafka.authentication.passwordSecretRef"),
            "kafka.security.caFile" => in_sor("kafka.tls.caSecretRef"),
            _ => in_sor(engine),
        },
        "mongodb" => in_sor(engine),
        "functions" => in_sor("customFunctionsRef"),
        "errorPolicy" | "outputs" => format!("spec.{engine}"),
        "tuning" => format!("spec.worker.{engine}"),
        _ => format!("rendered engine config: {engine}"),
    }
}

/// sha256 over the ConfigMap files and the mounted Secret values, in a stable order.
fn hash(
    files: &BTreeMap<String, String>,
    secrets: &BTreeSet<SecretKeyRef>,
    refs: &Dereferenced,
) -> String {
    let mut digest = Sha256::new();
    for (name, text) in files {
        digest.update((name.len() as u64).to_le_bytes());
        digest.update(name.as_bytes());
        digest.update((text.len() as u64).to_le_bytes());
        digest.update(text.as_bytes());
    }
    for r in secrets {
        let value: &[u8] = refs
            .secrets
            .get(&r.name)
            .and_then(|d| d.get(&r.key))
            .map(|ByteString(b)| b.as_slice())
            .unwrap_or_default();
        digest.update(format!("secret {}/{} {}", r.name, r.key, value.len()).as_bytes());
        digest.update(value);
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()[..16].to_string()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
