//! `rtu operator` as processes, two replicas on one Lease against the real API server: one
//! leads and reconciles, the other stands by; SIGTERM to the leader exits 0 and releases the
//! Lease, the standby takes over and reconciles the next change.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use serde_json::json;

use crate::support::engine::{http_get, metric, signal_pid};
use crate::support::operator::{OperatorProcess, create, install_crds};
use crate::support::{eventually, kube as k, unique_name};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn operator_process_two_replicas_one_leader_and_hand_over_on_sigterm() {
    let client = k::client().await;
    install_crds(&client).await;
    let ns = k::namespace(&client, "op-proc").await;
    let lease = unique_name("rtu-leader");
    let mut a = OperatorProcess::start(&ns, &lease, "replica-a");
    let mut b = OperatorProcess::start(&ns, &lease, "replica-b");
    let (leader, standby) = eventually("one leader and one standby", WAIT, || async {
        match (a.role().as_deref(), b.role().as_deref()) {
            (Some("leader"), Some("standby")) => Some(("a", "b")),
            (Some("standby"), Some("leader")) => Some(("b", "a")),
            _ => None,
        }
    })
    .await;
    // Still exactly one after a few renew periods.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let roles = [a.role(), b.role()];
    assert_eq!(roles.iter().filter(|r| r.as_deref() == Some("leader")).count(), 1, "{roles:?}");

    create::<Secret>(
        &client,
        &ns,
        json!({
            "metadata": { "name": "mongo" }, "stringData": { "uri": "mongodb://mongo:27017" }
        }),
    )
    .await;
    create::<SystemOfRecord>(
        &client,
        &ns,
        json!({ "metadata": { "name": "crm" },
            "spec": {
                "kafka": { "bootstrapServers": "kafka:9092" },
                "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
                "adapter": { "type": "debezium" },
                "projections": [ { "name": "pr_customers", "topics": ["crm.customers"], "fields": [
                    { "name": "customer_id", "type": "String", "primaryKey": true } ] } ]
            }
        }),
    )
    .await;
    create::<RealTimeUpdater>(
        &client,
        &ns,
        json!({ "metadata": { "name": "rtu" },
            "spec": { "systemOfRecordRef": { "name": "crm" } }
        }),
    )
    .await;
    let rtus: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicas_of = |n: i32| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get_opt("rtu").await.ok()??;
            (d.spec?.replicas == Some(n)).then_some(())
        }
    };
    eventually("the leader builds the Deployment", WAIT, || replicas_of(1)).await;
    let (leader_replica, standby_replica) = if leader == "a" { (&mut a, &b) } else { (&mut b, &a) };
    let addr = leader_replica.addr.clone();
    let ok = r#"rtu_operator_reconciles_total{kind="RealTimeUpdater",result="ok"}"#;
    let text = eventually("a successful reconcile in the leader's metrics", WAIT, || async {
        let (_, text) = http_get(&addr, "/metrics");
        (metric(&text, ok).unwrap_or(0.0) >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(metric(&text, "rtu_operator_leader"), Some(1.0), "{text}");

    // SIGTERM: the leader finishes, releases the Lease and exits 0; the standby takes over.
    signal_pid(leader_replica.child.id(), "TERM");
    let status = leader_replica.child.wait().unwrap();
    assert!(
        status.success(),
        "leader {leader} exit {status}; log {}",
        leader_replica.log.display()
    );
    eventually(&format!("{standby} leads"), Duration::from_secs(30), || async {
        (standby_replica.role().as_deref() == Some("leader")).then_some(())
    })
    .await;
    rtus.patch("rtu", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 2 } })))
        .await
        .unwrap();
    eventually("the new leader reconciles the change", WAIT, || replicas_of(2)).await;
    for r in [&mut a, &mut b] {
        if r.child.try_wait().unwrap().is_none() {
            signal_pid(r.child.id(), "TERM");
            assert!(r.child.wait().unwrap().success(), "log {}", r.log.display());
        }
    }
    // The operator's logs never carry a credential.
    for r in [&a, &b] {
        let log = std::fs::read_to_string(&r.log).unwrap();
        assert!(!log.contains("mongodb://"), "a credential in {}", r.log.display());
        assert!(log.contains("\"level\":\"INFO\""), "JSON logs in {}", r.log.display());
    }
    k::delete_namespace(&client, &ns).await;
}
