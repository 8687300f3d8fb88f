//! Leader election against the real kube-apiserver: one of two candidates leads while the other
//! waits, a release hands the Lease over at once, a crashed leader's Lease passes on only once it
//! has expired, and a leader notices when another holder takes the Lease. Also the operator's
//! `/healthz`, `/readyz` and `/metrics` answering over HTTP.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use rtu_operator::operator::leader::{LeaderElection, Leadership};
use rtu_operator::operator::metrics::OperatorMonitor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::{eventually, kube as k};

const LEASE: &str = "rtu-operator-leader";
const LEASE_DURATION: Duration = Duration::from_secs(3);
/// Generous bound for anything that should happen within a few renew periods.
const PROMPTLY: Duration = Duration::from_secs(30);

fn election(client: &Client, ns: &str, identity: &str) -> LeaderElection {
    LeaderElection::new(client.clone(), ns, LEASE, identity)
        .with_lease_duration(LEASE_DURATION)
        .with_renew_period(Duration::from_secs(1))
}

fn candidate(election: LeaderElection) -> JoinHandle<Leadership> {
    tokio::spawn(async move { election.acquire().await.expect("acquire") })
}

async fn lease_spec(leases: &Api<Lease>) -> LeaseSpec {
    leases.get(LEASE).await.expect("reading the Lease").spec.expect("Lease spec")
}

#[tokio::test]
async fn operator_leader_one_leads_release_hands_over_and_a_crashed_lease_expires_first() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-leader").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    // Two candidates race for a Lease that does not exist yet: exactly one wins.
    let mut a = candidate(election(&client, &ns, "replica-a"));
    let mut b = candidate(election(&client, &ns, "replica-b"));
    let (leader_id, leader, mut standby) = tokio::time::timeout(PROMPTLY, async {
        tokio::select! {
            l = &mut a => ("replica-a", l.unwrap(), b),
            l = &mut b => ("replica-b", l.unwrap(), a),
        }
    })
    .await
    .expect("neither candidate became leader");
    let standby_id = if leader_id == "replica-a" { "replica-b" } else { "replica-a" };
    let spec = lease_spec(&leases).await;
    assert_eq!(spec.holder_identity.as_deref(), Some(leader_id));
    assert_eq!(spec.lease_duration_seconds, Some(3));

    // The leader keeps renewing: the standby is still waiting after more than a lease duration.
    assert!(
        tokio::time::timeout(LEASE_DURATION * 2, &mut standby).await.is_err(),
        "{standby_id} became leader while {leader_id} was renewing"
    );
    let renewed = lease_spec(&leases).await;
    assert_eq!(renewed.holder_identity.as_deref(), Some(leader_id));
    assert!(renewed.renew_time > spec.renew_time, "the leader did not renew: {renewed:?}");

    // A graceful release hands the Lease over without waiting for it to expire.
    let transitions = renewed.lease_transitions.unwrap_or(0);
    leader.release().await;
    let released = lease_spec(&leases).await;
    assert!(
        ["", standby_id].contains(&released.holder_identity.as_deref().unwrap_or_default()),
        "release left the holder {:?}",
        released.holder_identity
    );
    let second = tokio::time::timeout(PROMPTLY, &mut standby)
        .await
        .expect("the standby did not take the released Lease")
        .unwrap();
    let spec = lease_spec(&leases).await;
    assert_eq!(spec.holder_identity.as_deref(), Some(standby_id));
    assert_eq!(spec.lease_transitions, Some(transitions + 1));

    // The new leader crashes (renewing stops, nothing released): a third candidate waits for
    // the Lease to expire, judged against the last renewal it could have seen.
    drop(second);
    let mut third = candidate(election(&client, &ns, "replica-c"));
    let mut last_renewal = None;
    let third_leadership = tokio::time::timeout(PROMPTLY, async {
        loop {
            let spec = lease_spec(&leases).await;
            if spec.holder_identity.as_deref() != Some(standby_id) {
                break;
            }
            last_renewal = spec.renew_time.map(|t| t.0);
            if let Ok(l) = tokio::time::timeout(Duration::from_millis(100), &mut third).await {
                return l.unwrap();
            }
        }
        (&mut third).await.unwrap()
    })
    .await
    .expect("the third candidate did not take the expired Lease");
    let spec = lease_spec(&leases).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-c"));
    assert_eq!(spec.lease_transitions, Some(transitions + 2));
    let last_renewal = last_renewal.expect("the crashed leader's Lease was never seen");
    let acquired = spec.acquire_time.expect("acquireTime").0;
    let lease_secs = i64::try_from(LEASE_DURATION.as_secs()).unwrap();
    assert!(
        acquired.duration_since(last_renewal) >= SignedDuration::from_secs(lease_secs),
        "taken at {acquired}, before the Lease renewed at {last_renewal} expired"
    );

    third_leadership.release().await;
    k::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn operator_leader_notices_another_holder_taking_the_lease() {
    let client = k::client().await;
    let ns = k::namespace(&client, "op-leader-lost").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let leadership = tokio::time::timeout(PROMPTLY, election(&client, &ns, "replica-a").acquire())
        .await
        .expect("acquiring a free Lease")
        .unwrap();

    // Someone overwrites the holder (as a replica with a badly skewed clock might); a renewal
    // landing between read and write makes the write conflict, so read again then.
    eventually("the holder to be overwritten", PROMPTLY, || {
        let leases = leases.clone();
        async move {
            let mut lease = leases.get(LEASE).await.ok()?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some("intruder".into());
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            leases.replace(LEASE, &PostParams::default(), &lease).await.ok().map(|_| ())
        }
    })
    .await;
    tokio::time::timeout(PROMPTLY, leadership.lost())
        .await
        .expect("the leader did not notice the other holder");
    leadership.release().await;
    assert_eq!(lease_spec(&leases).await.holder_identity.as_deref(), Some("intruder"));
    k::delete_namespace(&client, &ns).await;
}

/// `GET path` over a fresh connection: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[tokio::test]
async fn operator_leader_telemetry_endpoints_answer() {
    let monitor = OperatorMonitor::new();
    let addr = monitor.serve("127.0.0.1", 0).await.unwrap();
    assert_ne!(addr.port(), 0);

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(addr, "/readyz").await.0, 503, "ready before the operator started");
    monitor.set_started();
    assert_eq!(get(addr, "/readyz").await, (200, "ready: standby\n".into()));
    monitor.set_leader(true);
    assert_eq!(get(addr, "/readyz").await, (200, "ready: leader\n".into()));

    monitor.reconcile_failed("RealTimeUpdater", "Validate", Duration::from_millis(40));
    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "# TYPE rtu_operator_reconciles counter",
        "# TYPE rtu_operator_reconcile_errors counter",
        "# TYPE rtu_operator_reconcile_duration_seconds histogram",
        "# TYPE rtu_operator_leader gauge",
        r#"rtu_operator_reconciles_total{kind="RealTimeUpdater",result="error"} 1"#,
        r#"rtu_operator_reconcile_errors_total{kind="RealTimeUpdater",reason="Validate"} 1"#,
        r#"rtu_operator_reconcile_duration_seconds_count{kind="RealTimeUpdater"} 1"#,
        "rtu_operator_leader 1",
    ] {
        assert!(metrics.contains(family), "{family} missing from:\n{metrics}");
    }
    assert_eq!(get(addr, "/nope").await.0, 404);
}
