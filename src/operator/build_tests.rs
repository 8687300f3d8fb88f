//! Build: the children of a validated RealTimeUpdater, as one reviewed snapshot and as focused
//! checks of what matters (ownership, selection, mounts, security, rolling).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use serde_json::json;

use super::*;
use crate::operator::fixtures::{
    WORKER_IMAGE, dereferenced, refs, rtu, rtu_with, secret_values, sor_with, validated,
    validated_of,
};

/// Compares `actual` with the committed `src/operator/snapshots/<name>`; with
/// `UPDATE_SNAPSHOTS=1` rewrites it instead.
fn assert_snapshot(name: &str, actual: &str) {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "src", "operator", "snapshots", name].iter().collect();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let hint = format!(
        "review the change, then `UPDATE_SNAPSHOTS=1 cargo test --lib operator::build` and commit {}",
        path.display()
    );
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; {hint}", path.display()));
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(e, a)| e != a);
        let at = line.unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        let show = |text: &str| text.lines().nth(at).unwrap_or("<end of file>").to_string();
        panic!(
            "{name} differs from the snapshot at line {}:\n  snapshot: {}\n  actual:   {}\n{hint}",
            at + 1,
            show(&expected),
            show(actual)
        );
    }
}

/// Every child as YAML documents, in the order they are applied.
fn render(children: &Children) -> String {
    let mut docs = vec![
        crate::yaml::to_string(&children.config_map).unwrap(),
        crate::yaml::to_string(&children.deployment).unwrap(),
        crate::yaml::to_string(&children.service).unwrap(),
    ];
    docs.extend(children.pdb.iter().map(|p| crate::yaml::to_string(p).unwrap()));
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

fn pod(children: &Children) -> &PodSpec {
    children.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container(children: &Children) -> &Container {
    &pod(children).containers[0]
}

fn volume<'a>(children: &'a Children, name: &str) -> &'a Volume {
    pod(children).volumes.as_ref().unwrap().iter().find(|v| v.name == name).unwrap()
}

#[test]
fn children_match_the_snapshot() {
    let children = build(&validated());
    let yaml = render(&children);
    for value in secret_values() {
        assert!(!yaml.contains(value), "a rendered child holds a Secret value");
    }
    assert_snapshot("children.yaml", &yaml);
}

#[test]
fn every_child_is_owned_by_the_updater_and_labelled() {
    let v = validated();
    let c = build(&v);
    let pdb = c.pdb.as_ref().unwrap();
    let metas = [
        ("ConfigMap", &c.config_map.metadata, "customers-engine"),
        ("Deployment", &c.deployment.metadata, "customers"),
        ("Service", &c.service.metadata, "customers-metrics"),
        ("PodDisruptionBudget", &pdb.metadata, "customers"),
    ];
    for (kind, meta, name) in metas {
        assert_eq!(meta.name.as_deref(), Some(name), "{kind}");
        assert_eq!(meta.namespace.as_deref(), Some("acme"), "{kind}");
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{kind}");
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("rtu.fastdata.dev/v1alpha1", "RealTimeUpdater", "customers", "uid-customers"),
            "{kind}"
        );
        assert_eq!((o.controller, o.block_owner_deletion), (Some(true), Some(true)), "{kind}");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_LABEL], "customers", "{kind}: orphans are found by this label");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "rtu-operator", "{kind}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "crm", "{kind}");
        assert_eq!(labels["app.kubernetes.io/instance"], "customers", "{kind}");
    }
}

#[test]
fn the_deployment_service_and_pdb_select_the_same_pods() {
    let c = build(&validated());
    let spec = c.deployment.spec.as_ref().unwrap();
    let selector_labels = spec.selector.match_labels.clone().unwrap();
    assert_eq!(selector_labels, selector("customers"));
    assert!(spec.selector.match_expressions.is_none());
    let template_labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (k, v) in &selector_labels {
        assert_eq!(template_labels.get(k), Some(v), "the pods carry the selector label {k}");
    }
    assert_eq!(c.service.spec.as_ref().unwrap().selector.as_ref(), Some(&selector_labels));
    let pdb = c.pdb.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(pdb.selector.as_ref().unwrap().match_labels.as_ref(), Some(&selector_labels));
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        selector_string("customers"),
        "app.kubernetes.io/name=rtu-worker,rtu.fastdata.dev/realtimeupdater=customers"
    );
    // Another updater's pods are not selected.
    assert_ne!(selector("orders"), selector_labels);
}

#[test]
fn the_pdb_follows_the_spec() {
    let cases = [
        (json!({ "enabled": false }), None),
        (json!({ "maxUnavailable": 2 }), Some(2)),
        (json!(null), Some(1)),
    ];
    for (spec, want) in cases {
        let rtu = rtu_with(
            "customers",
            json!({ "spec": { "worker": { "podDisruptionBudget": spec.clone() } } }),
        );
        let c = build(&validated_of(&rtu, &refs()));
        let max = c.pdb.map(|p| p.spec.unwrap().max_unavailable.unwrap());
        assert_eq!(max, want.map(IntOrString::Int), "{spec}");
    }
}

#[test]
fn config_and_secrets_are_mounted_where_the_engine_config_points() {
    let v = validated();
    let c = build(&v);
    assert_eq!(c.config_map.data.as_ref(), Some(&v.files));
    let config = volume(&c, "config").config_map.as_ref().unwrap();
    assert_eq!(config.name, "customers-engine");
    let secrets = volume(&c, "secrets").projected.as_ref().unwrap();
    let mode = secrets.default_mode.unwrap();
    assert_eq!(mode & 0o007, 0, "no access for others: {mode:o}");
    assert_eq!(mode & 0o222, 0, "read-only: {mode:o}");
    let mut items: Vec<(String, String, String)> = Vec::new();
    for source in secrets.sources.as_ref().unwrap() {
        let s = source.secret.as_ref().unwrap();
        assert_eq!(s.optional, Some(false), "a missing Secret must not start a worker");
        for item in s.items.as_ref().unwrap() {
            assert_eq!(item.mode, None, "{}: the default mode applies", item.path);
            items.push((s.name.clone(), item.key.clone(), item.path.clone()));
        }
    }
    assert_eq!(
        items,
        [
            ("kafka-ca", "ca.crt", "kafka-ca/ca.crt"),
            ("kafka-user", "password", "kafka-user/password"),
            ("kafka-user", "username", "kafka-user/username"),
            ("mongo", "uri", "mongo/uri"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    let mounts: Vec<(&str, &str, Option<bool>)> = container(&c)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [("config", "/etc/rtu", Some(true)), ("secrets", "/var/run/secrets/rtu", Some(true))]
    );
    // Every path the engine config names is a mounted file.
    let config_yaml = &v.files[CONFIG_FILE];
    let mounted_files: Vec<String> = v
        .files
        .keys()
        .map(|k| format!("/etc/rtu/{k}"))
        .chain(items.iter().map(|(_, _, p)| format!("/var/run/secrets/rtu/{p}")))
        .collect();
    for word in config_yaml.split_whitespace() {
        if word.starts_with("/etc/rtu/") || word.starts_with("/var/run/secrets/") {
            assert!(mounted_files.contains(&word.to_string()), "{word} is not mounted");
        }
    }
    let args = container(&c).args.clone().unwrap();
    assert_eq!(args, ["engine", "--config", "/etc/rtu/config.yaml"]);
    assert_eq!(container(&c).command.as_deref(), Some(&["rtu".to_string()][..]));
}

#[test]
fn secret_files_are_readable_by_the_non_root_worker() {
    // Mounted Secret files are owned by root; a non-root worker reads them only through the
    // pod's fsGroup, which the kubelet gives the files to.
    let c = build(&validated());
    let group = pod(&c).security_context.as_ref().unwrap().fs_group;
    assert!(group.is_some_and(|g| g > 0), "no fsGroup: the worker cannot open its Secret files");
    let mode = volume(&c, "secrets").projected.as_ref().unwrap().default_mode.unwrap();
    assert_eq!(mode, 0o440, "owner and group read, nothing else");
}

#[test]
fn workers_run_locked_down() {
    let c = build(&validated());
    let p = pod(&c);
    let pod_security = p.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(p.automount_service_account_token, Some(false));
    let s = container(&c).security_context.as_ref().unwrap();
    assert_eq!(s.read_only_root_filesystem, Some(true));
    assert_eq!(s.run_as_non_root, Some(true));
    assert_eq!(s.allow_privilege_escalation, Some(false));
    assert_eq!(s.privileged, None);
    let caps = s.capabilities.as_ref().unwrap();
    assert_eq!((caps.drop.as_deref(), caps.add.as_ref()), (Some(&["ALL".to_string()][..]), None));
}

#[test]
fn a_roll_never_surges_and_the_hash_is_on_the_pod_template() {
    let v = validated();
    let c = build(&v);
    let spec = c.deployment.spec.as_ref().unwrap();
    let strategy = spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    let annotations = spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(annotations[HASH_ANNOTATION], v.config_hash);
    assert!(c.deployment.metadata.annotations.is_none(), "the hash rolls pods, not the Deployment");
    assert_eq!(spec.replicas, Some(3));
    let stopped = rtu_with("customers", json!({ "spec": { "stopped": true } }));
    let c = build(&validated_of(&stopped, &refs()));
    assert_eq!(c.deployment.spec.as_ref().unwrap().replicas, Some(0));
    // A Secret change rolls the workers: only the hash annotation of the template moves.
    let mut rotated = refs();
    rotated
        .secrets
        .get_mut("kafka-user")
        .unwrap()
        .insert("password".into(), k8s_openapi::ByteString(b"rotated".to_vec()));
    let before = build(&validated());
    let after = build(&validated_of(&rtu(), &rotated));
    let template = |c: &Children| {
        let mut t = c.deployment.spec.as_ref().unwrap().template.clone();
        t.metadata.as_mut().unwrap().annotations.as_mut().unwrap().remove(HASH_ANNOTATION);
        t
    };
    assert_eq!(template(&before), template(&after));
    assert_ne!(before.deployment, after.deployment);
    assert_eq!(before.config_map, after.config_map, "the password is not in the ConfigMap");
}

#[test]
fn termination_grace_image_and_probes_follow_the_spec() {
    let c = build(&validated());
    assert_eq!(pod(&c).termination_grace_period_seconds, Some(45));
    assert_eq!(container(&c).image.as_deref(), Some(WORKER_IMAGE));
    assert_eq!(container(&c).name, CONTAINER);
    let defaults = rtu_with(
        "customers",
        json!({ "spec": { "worker": { "gracefulShutdownSeconds": null, "resources": null,
            "image": "mine/rtu:dev", "imagePullPolicy": "Always" } } }),
    );
    let c2 = build(&validated_of(&defaults, &refs()));
    assert_eq!(pod(&c2).termination_grace_period_seconds, Some(30));
    assert_eq!(container(&c2).image.as_deref(), Some("mine/rtu:dev"));
    assert_eq!(container(&c2).image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(container(&c2).resources, None);
    let ports = container(&c).ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port, ports[0].protocol.as_deref()),
        (Some("metrics"), 9464, Some("TCP"))
    );
    let probes = [
        ("liveness", container(&c).liveness_probe.as_ref(), "/healthz"),
        ("readiness", container(&c).readiness_probe.as_ref(), "/readyz"),
    ];
    for (kind, probe, path) in probes {
        let get = probe.unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path), "{kind}");
        assert_eq!(get.port, IntOrString::String("metrics".into()), "{kind}: the metrics port");
    }
    let service_port = &c.service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(service_port.port, 9464);
    assert_eq!(service_port.target_port, Some(IntOrString::String("metrics".into())));
    let annotations =
        c.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone();
    assert_eq!(annotations.unwrap()["prometheus.io/port"], "9464");
}

#[test]
fn scheduling_settings_are_passed_through() {
    let rtu = rtu_with(
        "customers",
        json!({ "spec": { "worker": {
            "nodeSelector": { "pool": "fastdata" },
            "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "fastdata",
                              "effect": "NoSchedule" }],
            "serviceAccountName": "rtu-worker",
            "env": [{ "name": "RUST_BACKTRACE", "value": "1" }]
        } } }),
    );
    let c = build(&validated_of(&rtu, &refs()));
    let p = pod(&c);
    assert_eq!(p.node_selector.as_ref().unwrap()["pool"], "fastdata");
    assert_eq!(p.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    assert_eq!(p.service_account_name.as_deref(), Some("rtu-worker"));
    assert_eq!(container(&c).env.as_ref().unwrap()[0].name, "RUST_BACKTRACE");
    // Unset: absent, not empty.
    let plain = build(&validated());
    let p = pod(&plain);
    assert!(p.node_selector.is_none() && p.tolerations.is_none() && p.affinity.is_none());
    assert!(container(&plain).env.is_none());
}

#[test]
fn no_secret_volume_without_secrets() {
    // Not reachable through the API (the MongoDB URI is a Secret), but build must not mount an
    // empty projected volume.
    let mut v = validated_of(&rtu(), &dereferenced(sor_with(json!({}))));
    v.secrets.clear();
    let c = build(&v);
    let names: Vec<&str> =
        pod(&c).volumes.as_ref().unwrap().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["config"]);
    assert_eq!(container(&c).volume_mounts.as_ref().unwrap().len(), 1);
}
