//! Operator reaction time on the local kube-apiserver (run by `scripts/bench-operator.sh`;
//! prints figures, asserts nothing about time). "Reaction" is the time from sending a
//! RealTimeUpdater write (create or spec patch) to the moment a watch on Deployments shows the
//! worker Deployment's pod template carrying the config hash the operator then writes to that
//! RealTimeUpdater's `status.configHash` for the new generation. The controllers run in-process
//! (`operator::run_controllers`, scoped to a fresh namespace, their own client). In one run:
//! (0) the baseline: the benchmark's own server-side apply of a ConfigMap + a Deployment, timed
//!     the same way (send → seen on the Deployment watch);
//! (1) one RealTimeUpdater, created, then edited `BENCH_EDITS` times, one edit at a time;
//! (2) `BENCH_RTUS` RealTimeUpdaters created in a burst, then (3) each edited once in a burst.
//!
//! Timeouts only guard against a hang (an edit the operator never acts on fails the run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

use rtu_operator::api::{RealTimeUpdater, SystemOfRecord};
use rtu_operator::operator::build::HASH_ANNOTATION;
use rtu_operator::operator::metrics::OperatorMonitor;
use rtu_operator::operator::reconcile::Context;
use rtu_operator::operator::validate::Settings;
use rtu_operator::operator::{self, Scope};

const MANAGER: &str = "rtu-operator-bench";

fn count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the two watches have seen: when each Deployment template hash first appeared, and the
/// config hash each RealTimeUpdater's status reports for each generation.
#[derive(Default)]
struct Seen {
    /// Deployment name → template config hash → first seen.
    templates: HashMap<String, HashMap<String, Instant>>,
    /// RealTimeUpdater name → observed generation → `status.configHash`.
    hashes: HashMap<String, HashMap<i64, String>>,
}

struct Watches {
    seen: Mutex<Seen>,
    changed: Notify,
    limit: Duration,
}

impl Watches {
    /// Starts both watches on `ns` and returns once each has listed the namespace.
    async fn start(client: &Client, ns: &str, limit: Duration) -> Arc<Watches> {
        let w = Arc::new(Watches { seen: Mutex::default(), changed: Notify::new(), limit });
        let (ready_d, deployments_listed) = tokio::sync::oneshot::channel();
        let (ready_r, rtus_listed) = tokio::sync::oneshot::channel();
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        tokio::spawn(follow(Arc::clone(&w), api, ready_d, |seen, d: Deployment| {
            let hash = d
                .spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .and_then(|mut a| a.remove(HASH_ANNOTATION));
            if let (Some(name), Some(hash)) = (d.metadata.name, hash) {
                seen.templates.entry(name).or_default().entry(hash).or_insert_with(Instant::now);
            }
        }));
        let api: Api<RealTimeUpdater> = Api::namespaced(client.clone(), ns);
        tokio::spawn(follow(Arc::clone(&w), api, ready_r, |seen, r: RealTimeUpdater| {
            let name = r.name_any();
            if let Some(s) = r.status
                && let (Some(generation), Some(hash)) = (s.observed_generation, s.config_hash)
            {
                seen.hashes.entry(name).or_default().entry(generation).or_insert(hash);
            }
        }));
        deployments_listed.await.unwrap();
        rtus_listed.await.unwrap();
        w
    }

    /// When each `(RealTimeUpdater, generation)` got its Deployment: the first time the
    /// Deployment watch showed the hash the status reports for that generation.
    async fn reacted(&self, targets: &[(String, i64)]) -> Vec<Instant> {
        let deadline = tokio::time::Instant::now() + self.limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let missing = {
                let seen = self.seen.lock().unwrap();
                let found: Vec<Option<Instant>> = targets
                    .iter()
                    .map(|(name, generation)| {
                        let hash = seen.hashes.get(name)?.get(generation)?;
                        seen.templates.get(name)?.get(hash).copied()
                    })
                    .collect();
                if found.iter().all(Option::is_some) {
                    return found.into_iter().flatten().collect();
                }
                found.iter().filter(|f| f.is_none()).count()
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{missing} of {} changes not applied after {:?}", targets.len(), self.limit);
            }
        }
    }

    /// When the Deployment `name` was first seen with template hash `hash`.
    async fn template(&self, name: &str, hash: &str) -> Instant {
        let deadline = tokio::time::Instant::now() + self.limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let seen = self.seen.lock().unwrap();
                if let Some(t) = seen.templates.get(name).and_then(|h| h.get(hash)) {
                    return *t;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("Deployment {name} never showed hash {hash}");
            }
        }
    }
}

/// Feeds every object `api`'s watch shows into `record`; says when the first list is done.
async fn follow<K>(
    w: Arc<Watches>,
    api: Api<K>,
    listed: tokio::sync::oneshot::Sender<()>,
    record: impl Fn(&mut Seen, K),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let mut listed = Some(listed);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.try_next().await.unwrap() {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                record(&mut w.seen.lock().unwrap(), o);
                w.changed.notify_waiters();
            }
            watcher::Event::InitDone => {
                if let Some(tx) = listed.take() {
                    let _ = tx.send(());
                }
            }
            watcher::Event::Init | watcher::Event::Delete(_) => {}
        }
    }
}

/// Sends `write` for every `(name, SystemOfRecord, projection)`, `in_flight` at a time, and
/// waits for each reaction: the time to send them all, the time from the first write to the
/// last reaction, and each write's reaction time.
async fn burst<'a, F, Fut>(
    w: &Watches,
    names: &'a [(String, String, String)],
    in_flight: usize,
    write: F,
) -> (Duration, Duration, Stats)
where
    F: Fn(&'a (String, String, String)) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let start = Instant::now();
    let sent: Vec<(Instant, String, i64)> = futures::stream::iter(names.iter())
        .map(|target| {
            let sent = Instant::now();
            let written = write(target);
            async move { (sent, target.0.clone(), written.await) }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let writes = start.elapsed();
    let targets: Vec<(String, i64)> = sent.iter().map(|(_, n, g)| (n.clone(), *g)).collect();
    let at = w.reacted(&targets).await;
    let all = at.iter().max().unwrap().duration_since(start);
    let each = at.iter().zip(&sent).map(|(a, (s, _, _))| a.saturating_duration_since(*s)).collect();
    (writes, all, Stats::of(each))
}

/// p50 / p99 / max of durations, nearest rank.
struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
}

impl Stats {
    fn of(mut d: Vec<Duration>) -> Stats {
        assert!(!d.is_empty());
        d.sort();
        let rank = |q: f64| d[((q * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1];
        Stats { p50: rank(0.50), p99: rank(0.99), max: d[d.len() - 1], n: d.len() }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

/// Reconciles finished so far (ok, error), from the operator's own metrics.
fn reconciles(monitor: &OperatorMonitor) -> (u64, u64) {
    let (mut ok, mut error) = (0, 0);
    for line in monitor.encode().lines().filter(|l| l.starts_with("rtu_operator_reconciles_")) {
        let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if line.contains("result=\"ok\"") {
            ok += n;
        } else {
            error += n;
        }
    }
    (ok, error)
}

/// Failed reconciles by the step that failed, e.g. `ApplyFailed=3`.
fn failures(monitor: &OperatorMonitor) -> String {
    let reasons: Vec<String> = monitor
        .encode()
        .lines()
        .filter(|l| l.starts_with("rtu_operator_reconcile_errors_"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            Some(format!("{reason}={}", l.rsplit(' ').next()?))
        })
        .collect();
    if reasons.is_empty() { "none".into() } else { reasons.join(", ") }
}

/// Waits until the operator has finished no reconcile for `quiet`; returns the reconciles
/// counted meanwhile.
async fn settle(monitor: &OperatorMonitor, quiet: Duration) -> u64 {
    let start = reconciles(monitor).0;
    let mut last = start;
    loop {
        tokio::time::sleep(quiet).await;
        let now = reconciles(monitor).0;
        if now == last {
            return now - start;
        }
        last = now;
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in rtu_operator::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        };
        while !established(&crds.get(&name).await.unwrap()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Secrets every SystemOfRecord references, and SystemOfRecord `name` with `projections`
/// projections `pr_0`, `pr_1`, ….
async fn system_of_record(client: &Client, ns: &str, name: &str, projections: usize) {
    let projections: Vec<Value> = (0..projections)
        .map(|i| {
            json!({ "name": format!("pr_{i}"), "topics": [format!("{name}.table{i}")], "fields": [
                { "name": "id", "type": "String", "primaryKey": true },
                { "name": "name", "type": "String" },
                { "name": "amount", "type": "Number", "cast": "castToFloat" } ] })
        })
        .collect();
    let sor: SystemOfRecord = serde_json::from_value(json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1",
        "kind": "SystemOfRecord",
        "metadata": { "name": name },
        "spec": {
            "kafka": {
                "bootstrapServers": "kafka:9092",
                "authentication": {
                    "type": "scramSha512",
                    "usernameSecretRef": { "name": "kafka-user", "key": "username" },
                    "passwordSecretRef": { "name": "kafka-user", "key": "password" }
                }
            },
            "mongodb": { "uriSecretRef": { "name": "mongo", "key": "uri" }, "database": "crm" },
            "adapter": { "type": "debezium" },
            "projections": projections
        }
    }))
    .unwrap();
    Api::<SystemOfRecord>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sor)
        .await
        .unwrap();
}

async fn secrets(client: &Client, ns: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, data) in [
        ("mongo", json!({ "uri": "mongodb://user:pass@mongo:27017/crm" })),
        ("kafka-user", json!({ "username": "rtu", "password": "bench" })),
    ] {
        let s: Secret =
            serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data }))
                .unwrap();
        api.create(&PostParams::default(), &s).await.unwrap();
    }
}

/// Creates RealTimeUpdater `name` claiming projection `projection` of `sor`; returns the
/// generation it has.
async fn create_rtu(api: &Api<RealTimeUpdater>, name: &str, sor: &str, projection: &str) -> i64 {
    let rtu: RealTimeUpdater = serde_json::from_value(json!({
        "apiVersion": "rtu.fastdata.dev/v1alpha1",
        "kind": "RealTimeUpdater",
        "metadata": { "name": name },
        "spec": {
            "systemOfRecordRef": { "name": sor },
            "projections": [projection],
            "outputs": { "projectionUpdates": { "enabled": true } }
        }
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &rtu).await.unwrap();
    created.metadata.generation.unwrap()
}

/// Sets `spec.worker.tuning.maxBatchMessages` of `name`; returns the new generation.
async fn edit_rtu(api: &Api<RealTimeUpdater>, name: &str, max_batch: usize) -> i64 {
    let patch = json!({ "spec": { "worker": { "tuning": { "maxBatchMessages": max_batch } } } });
    let patched = api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    patched.metadata.generation.unwrap()
}

/// A ConfigMap + Deployment of the size and shape the operator applies, the Deployment's
/// template annotated with `hash`.
fn baseline_objects(hash: &str) -> (Value, Value) {
    let name = "baseline";
    let labels = json!({ "app.kubernetes.io/name": "bench-baseline", "bench/name": name });
    let config = format!(
        "systemOfRecord: solo\nkafka: {{ bootstrapServers: kafka:9092, groupId: bench.{name} }}\nmongodb: {{ uri: {{ file: /var/run/secrets/rtu/mongo/uri }}, database: crm }}\nadapter: {{ type: debezium }}\n# {hash}\n"
    );
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": format!("{name}-engine"), "labels": labels },
        "data": { "config.yaml": config }
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels, "annotations": { HASH_ANNOTATION: hash } },
                "spec": {
                    "containers": [{
                        "name": "engine", "image": "rtu-operator:bench",
                        "args": ["engine", "--config", "/etc/rtu/config.yaml"],
                        "ports": [{ "name": "metrics", "containerPort": 9464 }],
                        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "metrics" } },
                        "securityContext": { "readOnlyRootFilesystem": true, "runAsNonRoot": true },
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/rtu", "readOnly": true },
                            { "name": "secrets", "mountPath": "/var/run/secrets/rtu", "readOnly": true }
                        ]
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": format!("{name}-engine") } },
                        { "name": "secrets", "projected": { "sources": [
                            { "secret": { "name": "mongo", "items": [{ "key": "uri", "path": "mongo/uri" }] } }
                        ] } }
                    ]
                }
            }
        }
    });
    (cm, deployment)
}

/// (0): `n` sequential applies of the baseline ConfigMap + Deployment; returns (send → seen on
/// the watch, send → both applies answered).
async fn baseline(client: &Client, ns: &str, w: &Watches, n: usize) -> (Stats, Stats) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    let (mut seen, mut answered) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let hash = format!("baseline-{i}");
        let (cm, deployment) = baseline_objects(&hash);
        let sent = Instant::now();
        cms.patch("baseline-engine", &pp, &Patch::Apply(&cm)).await.unwrap();
        deployments.patch("baseline", &pp, &Patch::Apply(&deployment)).await.unwrap();
        let done = sent.elapsed();
        let at = w.template("baseline", &hash).await;
        // The first apply creates the objects: not a change, left out like the operator's.
        if i > 0 {
            answered.push(done);
            seen.push(at - sent);
        }
    }
    (Stats::of(seen), Stats::of(answered))
}

#[tokio::main]
async fn main() {
    let rtus = count("BENCH_RTUS", 200);
    let edits = count("BENCH_EDITS", 50);
    let baseline_runs = count("BENCH_BASELINE", 50);
    let per_sor = count("BENCH_RTUS_PER_SOR", 10).max(1);
    let in_flight = count("BENCH_IN_FLIGHT", 20).max(1);
    let limit = Duration::from_secs(count("BENCH_TIMEOUT_S", 180) as u64);

    // The operator's own logs, when wanted: RUST_LOG=warn (none by default).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let client = Client::try_default().await.expect("KUBECONFIG: run scripts/bench-operator.sh");
    let version = client.apiserver_version().await.unwrap();
    install_crds(&client).await;
    let ns = format!(
        "bench-op-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    );
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    secrets(&client, &ns).await;
    system_of_record(&client, &ns, "solo", 1).await;
    let sors = rtus.div_ceil(per_sor);
    for s in 0..sors {
        system_of_record(&client, &ns, &format!("crm-{s}"), per_sor).await;
    }
    println!(
        "workload: kube-apiserver {}, namespace {ns}; operator in-process (run_controllers, its own client); \
         {rtus} RealTimeUpdaters over {sors} SystemOfRecords ({per_sor} each, one projection each), {in_flight} writes in flight",
        version.git_version
    );

    // The operator, as `rtu operator` runs it minus the Lease and the HTTP server.
    let op_client = Client::try_default().await.unwrap();
    let monitor = OperatorMonitor::new();
    let ctx = Arc::new(Context {
        client: op_client.clone(),
        settings: Settings { worker_image: "rtu-operator:bench".into() },
        reporter: operator::reporter("bench"),
        monitor: Arc::clone(&monitor),
        autoscaler: Arc::default(),
        updaters: None,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(operator::run_controllers(
        op_client,
        Scope::Namespaces(vec![ns.clone()]),
        ctx,
        async move {
            let _ = stopped.await;
        },
    ));
    let w = Watches::start(&client, &ns, limit).await;
    let api: Api<RealTimeUpdater> = Api::namespaced(client.clone(), &ns);

    // (0) The API server's own round trip for the same writes.
    let (base, answered) = baseline(&client, &ns, &w, baseline_runs).await;
    println!("(0) baseline, SSA ConfigMap + Deployment -> seen on watch: {base}");
    println!("    of which the two applies answered:                  {answered}");

    // (1) One RealTimeUpdater alone on its SystemOfRecord.
    let sent = Instant::now();
    let generation = create_rtu(&api, "single", "solo", "pr_0").await;
    let created = w.reacted(&[("single".into(), generation)]).await[0] - sent;
    settle(&monitor, Duration::from_millis(500)).await;
    let before = reconciles(&monitor).0;
    let mut one = Vec::new();
    for i in 0..edits {
        let sent = Instant::now();
        let generation = edit_rtu(&api, "single", 1001 + i).await;
        one.push(w.reacted(&[("single".into(), generation)]).await[0] - sent);
    }
    let one_reconciles = reconciles(&monitor).0 - before;
    let one = Stats::of(one);
    println!(
        "(1) 1 RTU: created -> Deployment {:.1} ms; {edits} sequential edits: {one}  [{one_reconciles} reconciles]",
        created.as_secs_f64() * 1e3
    );

    // (2) Many at once: created in a burst.
    let names: Vec<(String, String, String)> = (0..rtus)
        .map(|i| {
            (format!("rtu-{i:04}"), format!("crm-{}", i / per_sor), format!("pr_{}", i % per_sor))
        })
        .collect();
    let before = reconciles(&monitor).0;
    let (writes, all, created) = burst(&w, &names, in_flight, |(name, sor, projection)| {
        create_rtu(&api, name, sor, projection)
    })
    .await;
    let first_reconciles = reconciles(&monitor).0 - before;
    let settled = settle(&monitor, Duration::from_secs(1)).await;
    println!(
        "(2) {rtus} RTUs created in a burst ({:.2} s to send): all reconciled {:.2} s after the first create  [{first_reconciles} reconciles, {settled} more until quiet]",
        writes.as_secs_f64(),
        all.as_secs_f64()
    );
    println!("    each, create -> Deployment:                         {created}");

    // (3) ... and each edited once, in a burst.
    let before = reconciles(&monitor).0;
    let (writes, all, many) =
        burst(&w, &names, in_flight, |(name, _, _)| edit_rtu(&api, name, 5000)).await;
    let edit_reconciles = reconciles(&monitor).0 - before;
    println!(
        "(3) {rtus} RTUs edited in a burst ({:.2} s to send): all applied {:.2} s after the first edit  [{edit_reconciles} reconciles]",
        writes.as_secs_f64(),
        all.as_secs_f64()
    );
    println!("    each, edit -> Deployment:                           {many}");

    let (_, errors) = reconciles(&monitor);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratios (p50): (1)/(0) = {:.1}; (3)/(0) = {:.1}; (3)/(1) = {:.1} ({rtus} RTUs vs 1); failed reconciles: {errors} ({})",
        ratio(one.p50, base.p50),
        ratio(many.p50, base.p50),
        ratio(many.p50, one.p50),
        failures(&monitor)
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), controllers).await;
    // Wait for the namespace to go (bounded), so a next run starts on an idle API server.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deleting = Instant::now();
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    while !gone && deleting.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        gone = namespaces.get_opt(&ns).await.unwrap().is_none();
    }
    let state = if gone { "deleted" } else { "still terminating" };
    println!("cleanup: namespace {ns} {state} after {:.1} s", deleting.elapsed().as_secs_f64());
}
