//! Dereference: the only step of the reconcile pipeline that reads other objects. It fetches the
//! SystemOfRecord a RealTimeUpdater references, the Secrets and ConfigMaps that SystemOfRecord
//! names, and the other RealTimeUpdaters of the namespace (projection ownership). What does not
//! exist is left out; validate turns that into an error with its field path.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ListParams;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use crate::api::{RealTimeUpdater, SecretKeyRef, SystemOfRecord};

/// A read that failed for another reason than "not found".
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    /// The API server did not answer a read.
    #[error("cannot read {what}: {source}")]
    Read {
        /// What was read, e.g. `Secret acme/kafka-user`.
        what: String,
        /// Why.
        source: kube::Error,
    },
}

/// Everything a RealTimeUpdater references, as read now.
#[derive(Debug, Clone, Default)]
pub struct Dereferenced {
    /// The SystemOfRecord, when it exists.
    pub sor: Option<SystemOfRecord>,
    /// Secret name -> its data, for the Secrets the SystemOfRecord references that exist.
    pub secrets: BTreeMap<String, BTreeMap<String, ByteString>>,
    /// ConfigMap name -> its data, for the ConfigMaps the SystemOfRecord references that exist.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Every RealTimeUpdater of the namespace (the one reconciled included).
    pub siblings: Vec<RealTimeUpdater>,
}

/// Every Secret key a SystemOfRecord references.
pub fn secret_refs(sor: &SystemOfRecord) -> Vec<&SecretKeyRef> {
    let k = &sor.spec.kafka;
    [
        Some(&sor.spec.mongodb.uri_secret_ref),
        k.authentication.username_secret_ref.as_ref(),
        k.authentication.password_secret_ref.as_ref(),
        k.tls.ca_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The names of the Secrets a SystemOfRecord references.
pub fn secret_names(sor: &SystemOfRecord) -> BTreeSet<String> {
    secret_refs(sor).into_iter().map(|r| r.name.clone()).collect()
}

/// The names of the ConfigMaps a SystemOfRecord references.
pub fn config_map_names(sor: &SystemOfRecord) -> BTreeSet<String> {
    let s = &sor.spec;
    [
        s.er_schema_ref.as_ref().map(|r| &r.name),
        s.projection_changes_schema_ref.as_ref().map(|r| &r.name),
    ]
    .into_iter()
    .flatten()
    .chain(s.custom_functions_ref.as_ref().map(|r| &r.name))
    .cloned()
    .collect()
}

/// Reads what `rtu` references; the other RealTimeUpdaters come from `updaters` (the
/// controller's cache) when given.
pub async fn dereference(
    client: &Client,
    rtu: &RealTimeUpdater,
    updaters: Option<&Store<DeserializeGuard<RealTimeUpdater>>>,
) -> Result<Dereferenced, DereferenceError> {
    let namespace = rtu.namespace().unwrap_or_default();
    let sors: Api<SystemOfRecord> = Api::namespaced(client.clone(), &namespace);
    let sor_name = &rtu.spec.system_of_record_ref.name;
    let sor = sors.get_opt(sor_name).await.map_err(|source| DereferenceError::Read {
        what: format!("SystemOfRecord {namespace}/{sor_name}"),
        source,
    })?;
    let siblings = match updaters {
        Some(store) if store.wait_until_ready().await.is_ok() => store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
            .cloned()
            .collect(),
        _ => {
            let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &namespace);
            rtus.list(&ListParams::default())
                .await
                .map_err(|source| DereferenceError::Read {
                    what: format!("RealTimeUpdaters in {namespace}"),
                    source,
                })?
                .items
        }
    };
    let mut refs = Dereferenced { sor: None, siblings, ..Dereferenced::default() };
    let Some(sor) = sor else { return Ok(refs) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for name in secret_names(&sor) {
        let secret = secrets.get_opt(&name).await.map_err(|source| DereferenceError::Read {
            what: format!("Secret {namespace}/{name}"),
            source,
        })?;
        if let Some(secret) = secret {
            let mut data = secret.data.unwrap_or_default();
            for (key, value) in secret.string_data.unwrap_or_default() {
                data.insert(key, ByteString(value.into_bytes()));
            }
            refs.secrets.insert(name, data);
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for name in config_map_names(&sor) {
        let map = config_maps.get_opt(&name).await.map_err(|source| DereferenceError::Read {
            what: format!("ConfigMap {namespace}/{name}"),
            source,
        })?;
        if let Some(map) = map {
            refs.config_maps.insert(name, map.data.unwrap_or_default());
        }
    }
    refs.sor = Some(sor);
    Ok(refs)
}

#[cfg(test)]
#[path = "dereference_tests.rs"]
mod tests;
