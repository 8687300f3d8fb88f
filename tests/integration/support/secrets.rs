//! The secrets scan (docs/testing.md): every text an operator and its workers leave where
//! people and tools read them (ConfigMaps, Events, the resources and their status, the
//! children, logs, `/metrics`), searched for every credential of the run.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, ListParams};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use serde::Serialize;

/// Texts to search, each with where it comes from.
#[derive(Default)]
pub struct Scan {
    sources: Vec<(String, String)>,
}

/// A credential of the run: what it is, and its value.
pub struct Credential {
    pub what: String,
    pub value: String,
}

async fn list<K>(client: &Client, ns: &str) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

impl Scan {
    /// Adds `text`, found at `what`.
    pub fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.sources.push((what.into(), text.into()));
    }

    fn add_all<K: Serialize + kube::ResourceExt>(&mut self, kind: &str, objects: &[K]) {
        for o in objects {
            self.add(format!("{kind} {}", o.name_any()), serde_json::to_string(o).unwrap());
        }
    }

    /// Everything the operator wrote in `ns` that is not a Secret: ConfigMaps, Events, the
    /// custom resources with their status, Deployments, Services, PodDisruptionBudgets.
    pub async fn namespace(&mut self, client: &Client, ns: &str) {
        self.add_all("ConfigMap", &list::<ConfigMap>(client, ns).await);
        self.add_all("Event", &list::<Event>(client, ns).await);
        self.add_all("SystemOfRecord", &list::<SystemOfRecord>(client, ns).await);
        self.add_all("RealTimeUpdater", &list::<RealTimeUpdater>(client, ns).await);
        self.add_all("Deployment", &list::<Deployment>(client, ns).await);
        self.add_all("Service", &list::<Service>(client, ns).await);
        self.add_all("PodDisruptionBudget", &list::<PodDisruptionBudget>(client, ns).await);
    }

    /// The credentials in the Secrets of `ns`: every value but user names and certificates
    /// (public by nature), and the password of a `scheme://user:password@host` URI on its own.
    pub async fn credentials(client: &Client, ns: &str) -> Vec<Credential> {
        let mut out = Vec::new();
        for secret in list::<Secret>(client, ns).await {
            let name = kube::ResourceExt::name_any(&secret);
            for (key, value) in secret.data.unwrap_or_default() {
                if key.contains("user") || key.ends_with(".crt") {
                    continue;
                }
                let value = String::from_utf8(value.0).unwrap();
                let what = format!("Secret {name} key {key}");
                if let Some(password) = uri_password(&value) {
                    out.push(Credential {
                        what: format!("{what} (its password)"),
                        value: password,
                    });
                }
                out.push(Credential { what, value });
            }
        }
        out
    }

    /// The sources that contain `value`.
    pub fn hits(&self, value: &str) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, text)| text.contains(value))
            .map(|(w, _)| w.as_str())
            .collect()
    }

    /// How many sources and bytes were read.
    pub fn size(&self) -> (usize, usize) {
        (self.sources.len(), self.sources.iter().map(|(_, t)| t.len()).sum())
    }
}

/// The password of `scheme://user:password@host...`.
pub fn uri_password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string()).filter(|p| !p.is_empty())
}

#[test]
fn the_password_of_a_uri_is_found() {
    assert_eq!(uri_password("mongodb://a:s3cr%2Ft@h:1/?x=1").as_deref(), Some("s3cr%2Ft"));
    assert_eq!(uri_password("mongodb://h:1/"), None);
    assert_eq!(uri_password("mongodb://a@h:1/"), None);
    let mut scan = Scan::default();
    scan.add("a log", "connected to mongodb://a:pw@h");
    scan.add("metrics", "rtu_up 1");
    assert_eq!(scan.hits("pw@"), ["a log"]);
    assert_eq!(scan.size(), (2, 37));
}
