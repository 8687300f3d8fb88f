//! Kubernetes clients for tests: the admin kubeconfig `scripts/testenv` writes, a namespace
//! per test.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{env, unique_name};

/// A client authenticated with the admin client certificate of the test kubeconfig.
pub async fn client() -> Client {
    let path = env().var("RTU_TEST_KUBECONFIG");
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {path}: {e}"));
    Client::try_from(config).expect("kube client")
}

/// A fresh namespace for one test, labelled so leftovers can be found.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "rtu-operator.test/smoke": "true" } }
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Deletes a test namespace (the namespace controller then removes what is left in it).
pub async fn delete_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting namespace {name}: {e}"));
}
