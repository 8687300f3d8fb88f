//! The chart's RBAC in use: `helm install` (the `watchNamespaces` variant: a Role per watched
//! namespace), then the operator Deployment the chart installed run as a local process exactly
//! as a kubelet would run its pod (its command, args and env; the pod's ServiceAccount token,
//! from the TokenRequest API, as its only credential; no admin credential in its environment).
//! It takes the leader Lease and reconciles a RealTimeUpdater in the watched namespace into
//! every child, writes status and records an Event, which proves the rules suffice; what they
//! leave out (Secrets of another namespace, writing Secrets) is refused for that token.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use rtu_operator::local_workers::start_as_service_account;
use serde_json::json;

use crate::install_helm::{chart, helm, ok};
use crate::support::operator::{Pods, create};
use crate::support::{env, eventually, kube as k};

const WAIT: Duration = Duration::from_secs(60);

/// A client with the kubeconfig the local operator process was given.
async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// The API server's answer to a request the token must not be allowed.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            println!("  refused as it must be: {what}: {}", status.message);
        }
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn install_operator_runs_under_the_chart_service_account_and_role() {
    let started = Instant::now();
    let client = k::client().await;
    let ns = k::namespace(&client, "install-sa").await;
    let watched = k::namespace(&client, "install-sa-w").await;
    let other = k::namespace(&client, "install-sa-o").await;
    let (release, name) = ("sa", "sa-rtu-operator");
    let chart = chart();
    let watch = format!(r#"watchNamespaces=["{watched}"]"#);
    ok(
        helm(&["install", release, chart.to_str().unwrap(), "-n", &ns, "--set-json", &watch]),
        "helm install --set-json watchNamespaces",
    );

    // The kubelet's part: the chart's operator Deployment as a local process.
    let admin = Kubeconfig::read_from(env().var("RTU_TEST_KUBECONFIG")).unwrap();
    let work = std::env::temp_dir().join(&ns);
    let binary = Path::new(env!("CARGO_BIN_EXE_rtu"));
    let operator = start_as_service_account(&client, &admin, &ns, name, &work, binary)
        .await
        .unwrap_or_else(|e| panic!("running Deployment {ns}/{name}: {e}"));
    let pid = operator.child.id();
    let log = operator.log.display().to_string();
    let kubeconfig_path = operator.dir.join("kubeconfig");
    let mut running = Pods(vec![operator]);
    let given = Kubeconfig::read_from(&kubeconfig_path).unwrap();
    assert_eq!(given.auth_infos.len(), 1, "one user only");
    let user = given.auth_infos[0].auth_info.clone().unwrap();
    assert!(user.token.is_some() && user.client_certificate_data.is_none());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ: Vec<String> =
        environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    let mut names: Vec<&str> =
        environ.iter().filter_map(|v| v.split_once('=').map(|(n, _)| n)).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "KUBECONFIG",
            "POD_NAME",
            "POD_NAMESPACE",
            "RTU_LEADER_ELECTION",
            "RTU_WATCH_NAMESPACES",
            "RTU_WORKER_IMAGE"
        ],
        "the process's whole environment"
    );
    println!("operator process {pid} runs as system:serviceaccount:{ns}:{name}");

    // Leader election with the leader-election Role.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = eventually(&format!("the Lease {name}-leader held; log {log}"), WAIT, || async {
        leases.get_opt(&format!("{name}-leader")).await.ok()??.spec?.holder_identity
    })
    .await;
    assert_eq!(holder, format!("{name}-local"), "the pod name (POD_NAME) holds the Lease");

    // A RealTimeUpdater in the watched namespace, applied with admin rights as a user would.
    create::<Secret>(&client, &watched, json!({
        "metadata": { "name": "mongo" }, "stringData": { "uri": env().var("RTU_TEST_MONGODB_URI") }
    }))
    .await;
    create::<SystemOfRecord>(&client, &watched, json!({
        "metadata": { "name": "crm" },
        "spec": {
            "kafka": { "bootstrapServers": env().var("RTU_TEST_KAFKA_BOOTSTRAP") },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
            "adapter": { "type": "debezium" },
            "projections": [ { "name": "pr_customers", "topics": ["install-sa.customers"], "fields": [
                { "name": "customer_id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String" } ] } ]
        }
    }))
    .await;
    create::<RealTimeUpdater>(
        &client,
        &watched,
        json!({ "metadata": { "name": "customers" },
                "spec": { "systemOfRecordRef": { "name": "crm" }, "replicas": 2 } }),
    )
    .await;

    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &watched);
    let status =
        eventually(&format!("status written by the operator; log {log}"), WAIT, || async {
            let rtu = rtus.get("customers").await.ok()?;
            let status = rtu.status?;
            (status.observed_generation == rtu.metadata.generation && status.config_hash.is_some())
                .then_some(status)
        })
        .await;
    for kind in ["Ready", "Progressing", "Degraded"] {
        let c = status.conditions.iter().find(|c| c.type_ == kind);
        assert!(c.is_some(), "no {kind} condition: {:?}", status.conditions);
    }
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &watched);
    assert!(cm.get("customers-engine").await.unwrap().data.unwrap().contains_key("config.yaml"));
    let d = Api::<Deployment>::namespaced(client.clone(), &watched).get("customers").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    Api::<Service>::namespaced(client.clone(), &watched).get("customers-metrics").await.unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &watched)
        .get("customers")
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &watched);
    let event = eventually("an Event from the operator process", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("customers")
                && e.reporting_instance.as_deref() == Some(holder.as_str())
        })
    })
    .await;
    println!(
        "reconciled {watched}/customers: ConfigMap, Deployment, Service, PodDisruptionBudget, conditions {:?}, Event {} {:?}",
        status.conditions.iter().map(|c| format!("{}={}", c.type_, c.status)).collect::<Vec<_>>(),
        event.reason.unwrap_or_default(),
        event.note.unwrap_or_default()
    );

    let sor = Api::<SystemOfRecord>::namespaced(client.clone(), &watched);
    let owners = eventually("the SystemOfRecord's status (projection owners)", WAIT, || async {
        let projections = sor.get("crm").await.ok()?.status?.projections;
        (projections.iter().any(|p| p.owner.as_deref() == Some("customers"))).then_some(projections)
    })
    .await;
    assert_eq!(owners.len(), 1);

    // What the Role does not grant, the same token cannot do.
    let token = client_from(&kubeconfig_path).await;
    Api::<Secret>::namespaced(token.clone(), &watched)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("the token reads Secrets of the watched namespace: {e}"));
    forbidden(
        Api::<Secret>::namespaced(token.clone(), &other).list(&ListParams::default()).await,
        &format!("list Secrets in the unwatched namespace {other}"),
    );
    forbidden(
        Api::<Secret>::namespaced(token.clone(), &ns)
            .get(&format!("sh.helm.release.v1.{release}.v1"))
            .await,
        "read the helm release Secret in the operator's own namespace",
    );
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "x" } })).unwrap();
    forbidden(
        Api::<Secret>::namespaced(token.clone(), &watched)
            .create(&PostParams::default(), &secret)
            .await,
        "create a Secret in the watched namespace",
    );
    forbidden(
        Api::<Deployment>::namespaced(token, &other).list(&ListParams::default()).await,
        &format!("list Deployments in {other}"),
    );

    // SIGTERM: exit 0, the Lease released; nothing it tried was refused on the way.
    let operator = running.0.pop().unwrap();
    assert!(operator.terminate(Duration::from_secs(30)), "operator exit 0; log {log}");
    let text = std::fs::read_to_string(&log).unwrap();
    for line in ["became leader", "leading: reconciling", "applied", "controllers stopped"] {
        assert!(text.contains(line), "the operator's log lacks {line:?}:\n{text}");
    }
    assert!(
        !text.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{text}"
    );
    let lease = leases.get(&format!("{name}-leader")).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "the Lease released");
    println!("operator exited 0 and released the Lease; {:.1?} in all", started.elapsed());

    ok(helm(&["uninstall", release, "-n", &ns, "--wait"]), "helm uninstall");
    std::fs::remove_dir_all(&work).unwrap();
    for n in [&ns, &watched, &other] {
        k::delete_namespace(&client, n).await;
    }
}
