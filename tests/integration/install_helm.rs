//! The install artefacts: the Helm chart `charts/rtu-operator` and the plain manifests in
//! `deploy/` generated from it. Uses the pinned `helm` and `kubectl` that `scripts/testenv`
//! builds (`RTU_TEST_HELM`, `RTU_TEST_KUBECTL`) and the test kube-apiserver: the chart lints
//! strictly, its schema refuses wrong values with a clear message, every rendering passes the
//! API server's own validation (server-side dry run), `helm install` / `upgrade` / `uninstall`
//! do what they say, `deploy/` applies unchanged, and the chart's CRDs and `deploy/` never drift
//! from their sources.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::env;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn chart() -> PathBuf {
    repo().join("charts/rtu-operator")
}

/// helm and kubectl keep their state here, not in the user's home.
fn client_home() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtu-install-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running {what}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

pub(crate) fn helm(args: &[&str]) -> Output {
    let home = client_home();
    let mut cmd = Command::new(env().var("RTU_TEST_HELM"));
    cmd.args(args)
        .current_dir(repo())
        .env("KUBECONFIG", env().var("RTU_TEST_KUBECONFIG"))
        .env("HELM_CONFIG_HOME", home.join("helm/config"))
        .env("HELM_CACHE_HOME", home.join("helm/cache"))
        .env("HELM_DATA_HOME", home.join("helm/data"));
    run(cmd, None)
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env().var("RTU_TEST_KUBECTL"));
    cmd.args(args)
        .current_dir(repo())
        .env("KUBECONFIG", env().var("RTU_TEST_KUBECONFIG"))
        .env("KUBECACHEDIR", client_home().join("kube-cache"));
    run(cmd, stdin)
}

/// stdout of a command that must succeed; otherwise fail with what it printed.
pub(crate) fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{stderr}\n{stdout}", out.status);
    stdout
}

/// stderr of a command that must fail.
fn fails(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} succeeded; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    ok(helm(&args), &format!("helm template {extra:?}"))
}

/// The YAML documents of a multi-document stream, as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line == "---" || line.starts_with("--- ") {
            let doc: Value = rtu_operator::yaml::from_str(&current)
                .unwrap_or_else(|e| panic!("a document does not parse: {e}\n{current}"));
            if !doc.is_null() {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn kind_name(doc: &Value) -> String {
    format!("{}/{}", doc["kind"].as_str().unwrap(), doc["metadata"]["name"].as_str().unwrap())
}

/// A fresh namespace named after `prefix`.
async fn create_namespace(prefix: &str) -> String {
    let client = crate::support::kube::client().await;
    crate::support::kube::namespace(&client, prefix).await
}

// ---------------------------------------------------------------------------------------------
// value sets

/// Every optional part on, several replicas, a list of namespaces.
const EVERYTHING: &[&str] = &[
    "--set",
    "replicaCount=2",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "workerImage=registry.example/rtu:1",
    "--set",
    "image.tag=0.1.0-test",
    "--set",
    "nodeSelector.kubernetes\\.io/os=linux",
    "--set-json",
    r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"rtu","effect":"NoSchedule"}]"#,
];

#[test]
fn install_chart_lints_strictly_with_every_value_set() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let ha: Vec<&str> =
        EVERYTHING.iter().copied().chain(["--set-json", r#"watchNamespaces=["a","b"]"#]).collect();
    for extra in [&[][..], &["--set-json", r#"watchNamespaces=["team-a","team-b"]"#][..], &ha] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let out = ok(helm(&args), &format!("helm lint --strict {extra:?}"));
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
    }
}

#[test]
fn install_chart_crds_are_the_repo_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let (repo_crds, chart_crds) = (repo().join("crds"), chart().join("crds"));
    assert_eq!(
        names(&chart_crds),
        names(&repo_crds),
        "charts/rtu-operator/crds/ must hold exactly the files of crds/: run scripts/gen-deploy.sh (it copies crds/ into the chart)"
    );
    for name in names(&repo_crds) {
        assert!(
            std::fs::read(chart_crds.join(&name)).unwrap()
                == std::fs::read(repo_crds.join(&name)).unwrap(),
            "charts/rtu-operator/crds/{name} differs from crds/{name}: run scripts/gen-deploy.sh (it copies crds/ into the chart)"
        );
    }
}

#[test]
fn install_deploy_is_generated_from_the_chart() {
    let mut cmd = Command::new(repo().join("scripts/gen-deploy.sh"));
    cmd.arg("--check").env("RTU_TEST_HELM", env().var("RTU_TEST_HELM"));
    let out = run(cmd, None);
    ok(out, "scripts/gen-deploy.sh --check (deploy/ is out of date: run scripts/gen-deploy.sh)");
}

#[test]
fn install_values_schema_rejects_wrong_values_with_their_path() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "replicaCount=-1"], &["replicaCount", "minimum"]),
        (&["--set", "image.pullPolicy=Sometimes"], &["image/pullPolicy", "Always", "IfNotPresent"]),
        (&["--set", "watchNamespaces=x"], &["watchNamespaces", "array"]),
        (&["--set", "resources=big"], &["resources", "object"]),
        (&["--set", "resources.limits.memory=lots"], &["resources/limits/memory"]),
        (&["--set", "unknownKey=1"], &["unknownKey", "additional"]),
        (&["--set-json", r#"watchNamespaces=["Team_A"]"#], &["watchNamespaces/0", "pattern"]),
        (&["--set", "leaderElection.enabled=yes"], &["leaderElection/enabled", "boolean"]),
        (&["--set", "metrics.service.port=70000"], &["metrics/service/port", "maximum"]),
    ];
    let chart = chart();
    for (extra, expected) in cases {
        let mut args = vec!["template", "rtu", chart.to_str().unwrap()];
        args.extend_from_slice(extra);
        let stderr = fails(helm(&args), &format!("helm template {extra:?}"));
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{extra:?}: not a schema error:\n{stderr}"
        );
        for e in *expected {
            assert!(stderr.contains(e), "{extra:?}: the message lacks {e:?}:\n{stderr}");
        }
    }
    // What the schema cannot say, the templates refuse with a sentence.
    let stderr = fails(
        helm(&[
            "template",
            "rtu",
            chart.to_str().unwrap(),
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ]),
        "two replicas without leader election",
    );
    assert!(stderr.contains("replicaCount > 1 needs leaderElection.enabled"), "{stderr}");
}

/// Every rendering of the chart is accepted by the API server's own validation (server-side
/// dry run, strict field validation): unknown fields, wrong types and invalid names fail here.
/// The ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs, which the test
/// server does not have: they are left out of the dry run.
#[tokio::test]
async fn install_rendered_manifests_pass_server_side_dry_run() {
    let ns = create_namespace("install-dry").await;
    let team_a = create_namespace("install-dry-a").await;
    let team_b = create_namespace("install-dry-b").await;
    let watch = format!(r#"watchNamespaces=["{team_a}","{team_b}"]"#);
    let everything: Vec<&str> =
        EVERYTHING.iter().copied().chain(["--set-json", watch.as_str()]).collect();
    for extra in [&[][..], &["--set-json", watch.as_str()][..], &everything] {
        let rendered = template("dry", &ns, extra);
        let docs = documents(&rendered);
        let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        for kind in [
            "CustomResourceDefinition",
            "Deployment",
            "ServiceAccount",
            "Service",
            "Role",
            "RoleBinding",
        ] {
            assert!(kinds.contains(kind), "{extra:?}: no {kind} rendered: {kinds:?}");
        }
        let mut checked = String::new();
        for doc in &docs {
            if doc["apiVersion"].as_str().unwrap().starts_with("monitoring.coreos.com/") {
                continue;
            }
            checked.push_str("---\n");
            checked.push_str(&serde_json::to_string(doc).unwrap());
            checked.push('\n');
        }
        let out = ok(
            kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--dry-run=server",
                    "--validate=strict",
                    "-f",
                    "-",
                ],
                Some(&checked),
            ),
            &format!("kubectl apply --dry-run=server of helm template {extra:?}"),
        );
        assert!(out.contains("deployment.apps/dry-rtu-operator"), "{out}");
    }
    for n in [&ns, &team_a, &team_b] {
        ok(kubectl(&["delete", "namespace", n, "--wait=false"], None), "delete namespace");
    }
}

fn deployment(ns: &str, name: &str) -> Value {
    let out = ok(
        kubectl(&["get", "deployment", name, "-n", ns, "-o", "json"], None),
        &format!("kubectl get deployment {ns}/{name}"),
    );
    serde_json::from_str(&out).unwrap()
}

/// `kubectl get -o name` of the objects a release labels, in `ns` and cluster-wide.
fn release_objects(release: &str, ns: &str) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut names = Vec::new();
    for (kinds, scope) in [
        (
            "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,configmaps,networkpolicies",
            Some(ns),
        ),
        ("clusterroles,clusterrolebindings", None),
    ] {
        let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
        if let Some(ns) = scope {
            args.extend(["-n", ns]);
        }
        names.extend(ok(kubectl(&args, None), "kubectl get").lines().map(str::to_string));
    }
    // Helm's own release records.
    let out = ok(
        kubectl(&["get", "secrets", "-n", ns, "-l", "owner=helm", "-o", "name"], None),
        "kubectl get helm release secrets",
    );
    names.extend(out.lines().map(str::to_string));
    names
}

#[tokio::test]
async fn install_helm_install_upgrade_and_uninstall() {
    let ns = create_namespace("install-helm").await;
    let watched = create_namespace("install-helm-w").await;
    let release = "rel";
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let name = "rel-rtu-operator";

    let out = ok(helm(&["install", release, chart, "-n", &ns]), "helm install");
    assert!(out.contains("STATUS: deployed"), "{out}");
    let first = deployment(&ns, name);
    assert_eq!(first["spec"]["replicas"], 1);
    let container = &first["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "rtu-operator:0.1.0");
    let env_names: Vec<&str> =
        container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(env_names, ["POD_NAME", "POD_NAMESPACE", "RTU_LEADER_ELECTION", "RTU_WORKER_IMAGE"]);
    let objects = release_objects(release, &ns);
    for expected in [
        "deployment.apps/rel-rtu-operator",
        "service/rel-rtu-operator-metrics",
        "serviceaccount/rel-rtu-operator",
        "role.rbac.authorization.k8s.io/rel-rtu-operator-leader-election",
        "clusterrole.rbac.authorization.k8s.io/rel-rtu-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/rel-rtu-operator",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "{expected} missing after install: {objects:?}"
        );
    }
    for crd in ["realtimeupdaters.rtu.fastdata.dev", "systemsofrecord.rtu.fastdata.dev"] {
        ok(kubectl(&["get", "crd", crd], None), &format!("CRD {crd} after helm install"));
    }
    let sa = format!("system:serviceaccount:{ns}:{name}");
    let can = |verb: &str, resource: &str, in_ns: &str| -> bool {
        let out = kubectl(&["auth", "can-i", verb, resource, "-n", in_ns, "--as", &sa], None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("patch", "deployments.apps", &watched));
    assert!(can("watch", "secrets", &watched));
    assert!(!can("update", "secrets", &watched), "Secrets must be read-only");
    assert!(!can("delete", "secrets", &watched), "Secrets must be read-only");
    assert!(can("create", "leases.coordination.k8s.io", &ns));

    // Upgrade: two replicas, one watched namespace, another log level.
    let watch = format!(r#"watchNamespaces=["{watched}"]"#);
    let out = ok(
        helm(&[
            "upgrade",
            release,
            chart,
            "-n",
            &ns,
            "--set",
            "replicaCount=2",
            "--set",
            "logLevel=debug",
            "--set-json",
            &watch,
        ]),
        "helm upgrade",
    );
    assert!(out.contains("REVISION: 2"), "{out}");
    let second = deployment(&ns, name);
    assert_eq!(second["spec"]["replicas"], 2);
    assert!(
        second["metadata"]["generation"].as_i64() > first["metadata"]["generation"].as_i64(),
        "the Deployment did not change"
    );
    let container = &second["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--log-level=debug"));
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RTU_WATCH_NAMESPACES" && e["value"] == watched.as_str())
    );
    let objects = release_objects(release, &ns);
    assert!(
        !objects.iter().any(|o| o.starts_with("clusterrole")),
        "the ClusterRole(Binding) outlived watchNamespaces: {objects:?}"
    );
    let role = ok(
        kubectl(&["get", "role,rolebinding", name, "-n", &watched, "-o", "name"], None),
        "the Role in the watched namespace",
    );
    assert_eq!(role.lines().count(), 2, "{role}");
    assert!(can("patch", "deployments.apps", &watched));
    assert!(!can("patch", "deployments.apps", &ns), "rights outside the watched namespace");

    // Uninstall: everything goes (the garbage collector takes the ReplicaSets and pods), the
    // CRDs stay, so no custom resource is lost.
    ok(helm(&["uninstall", release, "-n", &ns, "--wait"]), "helm uninstall");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = release_objects(release, &ns);
        left.extend(
            ok(
                kubectl(
                    &[
                        "get",
                        "role,rolebinding",
                        "-n",
                        &watched,
                        "-l",
                        "app.kubernetes.io/instance=rel",
                        "-o",
                        "name",
                    ],
                    None,
                ),
                "kubectl get",
            )
            .lines()
            .map(str::to_string),
        );
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after helm uninstall: {left:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for crd in ["realtimeupdaters.rtu.fastdata.dev", "systemsofrecord.rtu.fastdata.dev"] {
        ok(kubectl(&["get", "crd", crd], None), &format!("CRD {crd} after helm uninstall"));
    }
    for n in [&ns, &watched] {
        ok(kubectl(&["delete", "namespace", n, "--wait=false"], None), "delete namespace");
    }
}

/// Every field of `want` has the same value in `live` (lists element by element, same length;
/// numbers by value).
fn differences(path: &str, want: &Value, live: &Value, out: &mut Vec<String>) {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (k, v) in w {
                match l.get(k) {
                    Some(lv) => differences(&format!("{path}.{k}"), v, lv, out),
                    None => out.push(format!("{path}.{k}: {v} is not on the live object")),
                }
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (v, lv)) in w.iter().zip(l).enumerate() {
                differences(&format!("{path}[{i}]"), v, lv, out);
            }
        }
        _ if want == live => {}
        // 600000.0 in YAML is 600000 in the API server's JSON: the same number, no diff.
        (Value::Number(w), Value::Number(l)) if w.as_f64() == l.as_f64() => {}
        _ => out.push(format!("{path}: {want} became {live}")),
    }
}

/// `kubectl apply --server-side -f deploy/` works, and the API server keeps every field as
/// written: no field is rewritten or dropped (no `status`, no `creationTimestamp: null`, no
/// quantity it normalises), so a GitOps tool syncing `deploy/` shows no diff.
#[tokio::test]
async fn install_deploy_manifests_apply_and_stay_as_written() {
    // What an earlier, failed run left would hide what this one does.
    remove_deploy_except_crds();
    let out = ok(
        kubectl(
            &["apply", "--server-side", "--field-manager=rtu-install-test", "-f", "deploy/"],
            None,
        ),
        "kubectl apply --server-side -f deploy/",
    );
    assert!(out.contains("deployment.apps/rtu-operator serverside-applied"), "{out}");
    let text = std::fs::read_to_string(repo().join("deploy/rtu-operator.yaml")).unwrap();
    let mut diffs = Vec::new();
    for doc in documents(&text) {
        let mut args = vec![
            "get",
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap(),
            "-o",
            "json",
        ];
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let live: Value =
            serde_json::from_str(&ok(kubectl(&args, None), &format!("get {}", kind_name(&doc))))
                .unwrap();
        differences(&kind_name(&doc), &doc, &live, &mut diffs);
    }
    assert!(diffs.is_empty(), "the API server rewrote deploy/ fields:\n{}", diffs.join("\n"));
    // The namespace enforces Pod Security "restricted": the ReplicaSet's pod is admitted only if
    // the pod template complies (it then stays Pending: the test cluster has no kubelet).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = ok(
            kubectl(
                &[
                    "get",
                    "pods",
                    "-n",
                    "rtu-system",
                    "-l",
                    "app.kubernetes.io/name=rtu-operator",
                    "-o",
                    "name",
                ],
                None,
            ),
            "kubectl get pods",
        );
        if !pods.trim().is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let events = kubectl(&["get", "events", "-n", "rtu-system"], None);
            panic!(
                "no operator pod admitted in rtu-system (Pod Security restricted?):\n{}",
                String::from_utf8_lossy(&events.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A second apply changes nothing.
    let out = ok(
        kubectl(
            &["diff", "--server-side", "--field-manager=rtu-install-test", "-f", "deploy/"],
            None,
        ),
        "kubectl diff --server-side -f deploy/ (exit 1 = differences)",
    );
    assert!(out.is_empty(), "{out}");
    remove_deploy_except_crds();
}

/// Removes what `deploy/` creates except the CRDs (other tests use them), and waits for it.
fn remove_deploy_except_crds() {
    ok(
        kubectl(
            &["delete", "clusterrole,clusterrolebinding", "rtu-operator", "--ignore-not-found"],
            None,
        ),
        "delete the cluster RBAC of deploy/",
    );
    ok(
        kubectl(
            &["delete", "namespace", "rtu-system", "--ignore-not-found", "--timeout=120s"],
            None,
        ),
        "delete namespace rtu-system",
    );
}
