//! The Grafana dashboard (`docs/grafana/rtu-dashboard.json`) queries only metrics the code
//! exports: the names come from the real registries of the engine and the operator, encoded
//! after one sample of every family.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::engine::metrics as engine;
use crate::operator::metrics as operator;

/// The text of both registries, with one sample in every family (a labelled family shows no
/// sample before its first label set).
fn exposition() -> String {
    let t = engine::EngineMonitor::new(Duration::ZERO);
    let m = &t.metrics;
    let topic = || "t".to_string();
    let single_view = || engine::SingleViewLabel { single_view: "sv".into() };
    let field = || engine::FieldLabels { projection: "p".into(), field: "f".into() };
    let partition = || engine::PartitionLabels { topic: topic(), partition: 0 };
    m.messages
        .get_or_create(&engine::MessageLabels {
            topic: topic(),
            projection: "p".into(),
            outcome: "applied",
        })
        .inc();
    m.skipped.get_or_create(&engine::ReasonLabel { reason: "tombstone".into() }).inc();
    m.writes.get_or_create(&engine::WriteLabels { projection: "p".into(), op: "insert" }).inc();
    m.write_duration.observe(0.01);
    m.batch_messages.observe(10.0);
    m.unknown_fields.get_or_create(&field()).inc();
    m.uncastable_fields.get_or_create(&field()).inc();
    m.consumer_lag.get_or_create(&partition()).set(1);
    m.committed_offset.get_or_create(&partition()).set(1);
    m.assigned_partitions.set(1);
    m.paused_topics.set(0);
    m.stopped.get_or_create(&engine::ReasonLabel { reason: "X".into() }).set(1);
    m.transient_retries.get_or_create(&engine::RetryLabel { kind: "outputs" }).inc();
    m.commits.get_or_create(&engine::ResultLabel { result: "ok" }).inc();
    m.pr_updates.get_or_create(&engine::TopicLabel { topic: topic() }).inc();
    m.sv_triggers.get_or_create(&engine::TopicLabel { topic: topic() }).inc();
    m.projection_changes.get_or_create(&single_view()).inc();
    m.strategy_duration.get_or_create(&single_view()).observe(0.01);
    let o = operator::OperatorMonitor::new();
    o.reconcile_failed("RealTimeUpdater", "Build", Duration::from_millis(5));
    o.set_leader(true);
    format!("{}{}", m.encode(), o.encode())
}

/// Family name -> type (`# TYPE` lines), and every sample name (what Prometheus stores,
/// e.g. `rtu_messages_total`, `rtu_write_duration_seconds_bucket`).
fn exported() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let text = exposition();
    let mut families = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    for family in families.keys() {
        assert!(
            samples.iter().any(|s| s == family || s.starts_with(&format!("{family}_"))),
            "family {family} has no sample: record one in exposition()"
        );
    }
    (families, samples)
}

/// Why `name` is not a stored series, with the family it belongs to when it is a suffix
/// away from one (`rtu_messages` is a counter: Prometheus stores `rtu_messages_total`).
fn check(
    name: &str,
    families: &BTreeMap<String, String>,
    samples: &BTreeSet<String>,
) -> Result<(), String> {
    if samples.contains(name) {
        return Ok(());
    }
    let base = ["_bucket", "_sum", "_count", "_total", "_created"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    let hint = match families.get(base).or_else(|| families.get(name)) {
        Some(kind) => {
            let family = if families.contains_key(name) { name } else { base };
            let series: Vec<&String> = samples.iter().filter(|s| s.starts_with(family)).collect();
            format!("family {family} is a {kind}; its series are {series:?}")
        }
        None => "no such family".to_string(),
    };
    Err(format!("{name}: not exported ({hint})"))
}

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers, ranges and Grafana variables that are neither functions, aggregations,
/// keywords nor `by (...)`-style label lists.
fn metric_names(expr: &str) -> Vec<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quote = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        i
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' {
            i = skip_to(i, '{', '}');
        } else if c == '[' {
            i = skip_to(i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_to(i, '{', '}');
            }
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_to(next, '(', ')');
                }
            } else if call
                || AGGREGATIONS.contains(&word.as_str())
                || KEYWORDS.contains(&word.to_lowercase().as_str())
            {
            } else {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets (rows included) and the query
/// variables (`label_values(metric, label)` selects `metric`).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str());
        let query = query.unwrap_or_default().trim();
        let name = format!("variable {}", variable["name"]);
        match query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            Some(args) => {
                if let Some((selector, _label)) = args.rsplit_once(',') {
                    out.push((name, selector.to_string()));
                }
            }
            None => out.push((name, query.to_string())),
        }
    }
    out
}

fn dashboard() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/rtu-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A panel that queries a metric the engine or the operator does not export fails here.
#[test]
fn dashboard_queries_only_exported_metrics() {
    let (families, samples) = exported();
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 20, "{queries:?}");
    let mut wrong = Vec::new();
    let mut used = BTreeSet::new();
    for (panel, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{panel}: no metric found in {expr}");
        for name in names {
            match check(&name, &families, &samples) {
                Ok(()) => {
                    used.insert(name);
                }
                Err(e) => wrong.push(format!("{panel}: {e}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the dashboard queries metrics nobody exports:\n{}",
        wrong.join("\n")
    );
    for must in [
        "rtu_messages_total",
        "rtu_consumer_lag",
        "rtu_write_duration_seconds_bucket",
        "rtu_operator_reconciles_total",
        "rtu_operator_leader",
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
}

/// Grafana 10 schema, a Prometheus data-source variable that every query uses.
#[test]
fn dashboard_is_grafana_10_with_a_datasource_variable() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    let variables = d["templating"]["list"].as_array().unwrap();
    let ds = variables.iter().find(|v| v["type"] == "datasource").expect("datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let uid = format!("${{{}}}", ds["name"].as_str().unwrap());
    for panel in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "{}", panel["title"]);
        }
    }
}

/// The checker itself: counters need `_total`, histograms their suffixes, unknown names
/// fail; the lexer skips functions, aggregations, label lists, matchers and variables.
#[test]
fn the_metric_check_refuses_what_prometheus_would_not_have() {
    let (families, samples) = exported();
    for ok in ["rtu_messages_total", "rtu_write_duration_seconds_bucket", "rtu_operator_leader"] {
        check(ok, &families, &samples).unwrap();
    }
    let e = check("rtu_messages", &families, &samples).unwrap_err();
    assert!(e.contains("counter") && e.contains("rtu_messages_total"), "{e}");
    assert!(check("rtu_write_duration_seconds", &families, &samples).is_err());
    assert!(check("rtu_nope_total", &families, &samples).unwrap_err().contains("no such family"));
    assert_eq!(
        metric_names(
            r#"label_replace(x_total, "a", "$1", "b", "(.*)") + histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{x=~"$ns", y="b}c"}[$__rate_interval]))) / on (pod) group_left (le) max without (z) (b_total offset 5m) or vector(0) > bool 1e3"#
        ),
        ["x_total", "a_bucket", "b_total"]
    );
    assert_eq!(metric_names("sum(rate(rtu_nope[5m])) by (topic)"), ["rtu_nope"]);
}
