//! `rtu check --config FILE` as users run it: the shipped examples are valid, and a broken file
//! gets every error with its field path and exit code 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

fn rtu_check(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtu")).arg("check").arg("--config").arg(file).output().unwrap()
}

/// `rtu check` on `text` written to a scratch file: its standard error, after asserting that
/// it refused the file (exit code 1) and listed every one of `lines`.
fn refused(name: &str, text: &str, lines: &[&str]) -> String {
    let file = std::env::temp_dir().join(format!("rtu-check-{name}-{}.yaml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let out = rtu_check(&file);
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in lines {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    stderr
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/engine/debezium-crm.yaml")
}

#[test]
fn every_shipped_engine_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/engine");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue; // the files the configs refer to
        }
        let out = rtu_check(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid engine config"), "{stdout}");
        checked += 1;
    }
    assert!(checked >= 2, "{checked} example(s) found");
}

#[test]
fn a_broken_config_lists_every_error_with_its_path() {
    let text = std::fs::read_to_string(example()).unwrap();
    let broken = text
        .replace("castToInteger", "castToInt")
        .replace("database: crm_db", "database: crm.db")
        .replace("groupId: crm.rtu-customers", "groupId: \"\"");
    refused(
        "broken",
        &broken,
        &[
            "3 error(s):",
            "  kafka.groupId: must not be empty",
            "  mongodb.database: \"crm.db\" contains '.'",
            "  projections[0].fields[2].cast: unknown cast function \"castToInt\"; built-in casts are:",
        ],
    );
}

#[test]
fn a_structure_error_names_line_and_path() {
    let text =
        std::fs::read_to_string(example()).unwrap().replace("type: debezium", "type: oracle");
    let file =
        std::env::temp_dir().join(format!("rtu-check-structure-{}.yaml", std::process::id()));
    let line = text.lines().position(|l| l.contains("type: oracle")).unwrap() + 1;
    std::fs::write(&file, text).unwrap();
    let out = rtu_check(&file);
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line {line}: adapter.type: unknown variant `oracle`, expected one of"
        )),
        "{stderr}"
    );
}

#[test]
fn an_overridden_setting_is_valid_and_warned_about() {
    let text = std::fs::read_to_string(example()).unwrap();
    assert_eq!(text.matches("upsert: true").count(), 1);
    assert!(text.contains("deleteMechanism: soft"));
    let file = std::env::temp_dir().join(format!("rtu-check-upsert-{}.yaml", std::process::id()));
    std::fs::write(&file, text.replace("upsert: true", "upsert: false")).unwrap();
    let out = rtu_check(&file);
    std::fs::remove_file(&file).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("valid engine config")
            && stdout.contains("warning: writes.deleteMechanism: soft is overridden"),
        "{stdout}"
    );
    assert!(!rtu_check(&example()).stdout.windows(8).any(|w| w == b"warning:"));
}

#[test]
fn broken_strategy_schemas_and_function_files_are_reported_with_file_and_path() {
    let dir = std::env::temp_dir().join(format!("rtu-check-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let er = dir.join("erSchema.json");
    let pc = dir.join("projectionChangesSchema.json");
    let js = dir.join("broken.js");
    std::fs::write(&er, r#"{"version":"1.0.0","config":{}}"#).unwrap();
    let views = r#"{"version":"1.0.0","config":{"sv":{"paths":[{"path":["pr_nope"],"identifier":{"id":"customer_id"}}]}}}"#;
    std::fs::write(&pc, views).unwrap();
    std::fs::write(&js, "module.exports = function (value) {\n  return value +\n}\n").unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let text = text.replace("castToInteger", "brokenCast");
    let extra = format!(
        "outputs:\n  projectionChanges: {{ collection: fd-pc-crm }}\n  strategies:\n    automatic: {{ erSchema: {}, projectionChangesSchema: {} }}\nfunctions:\n  files: {{ brokenCast: {} }}\n",
        er.display(),
        pc.display(),
        js.display()
    );
    let file = dir.join("engine.yaml");
    std::fs::write(&file, format!("{text}\n{extra}")).unwrap();
    let out = rtu_check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let schema_error = format!("{}: /config/sv/paths/0/path/0", pc.display());
    assert!(stderr.contains(&schema_error) && stderr.contains("pr_nope"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:", js.display())) && stderr.contains("syntax"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_adapter_is_described_and_its_options_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/engine");
    for (file, line) in [
        (
            "debezium-unwrapped.yaml",
            "  adapter debezium: unwrapped ExtractNewRecordState rows (__deleted, __op read; other __* fields dropped unless mapped; tombstones delete); logical types decoded from schemas when present; placeholder \"__debezium_unavailable_value\" left unwritten; counter source timestamp",
        ),
        (
            "iidr-audit.yaml",
            "  adapter basic: IBM IIDR KCOP JSON; Avro-JSON unions unwrapped; audit records (A_ENTTYP) detected, audit counter A_CCID",
        ),
        (
            "debezium-crm.yaml",
            "  adapter debezium: change event envelope; logical types decoded from schemas when present; placeholder \"__debezium_unavailable_value\" left unwritten; counter Kafka offset",
        ),
    ] {
        let out = rtu_check(&dir.join(file));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.lines().any(|l| l == line), "{file}: missing {line:?} in:\n{stdout}");
    }
    let text = std::fs::read_to_string(dir.join("debezium-unwrapped.yaml")).unwrap();
    let broken = text
        .replace(
            "counter: sourceTimestamp",
            "counter: sourceTimestamp\n    addedFieldsPrefix: \"\"",
        )
        .replace("  type: debezium\n", "  type: debezium\n  iidr: { auditCounter: ccid }\n")
        .replace("castDebeziumDate", "castDebeziumDay")
        .replace("\"castDebeziumDecimal(2)\"", "\"castDebeziumDecimal(x)\"");
    let stderr = refused(
        "adapter",
        &broken,
        &[
            "4 error(s):",
            "  adapter.iidr: only used with type basic (or db2)",
            "  adapter.debezium.addedFieldsPrefix: must not be empty",
            "  projections[0].fields[2].cast: unknown cast function \"castDebeziumDay\"; built-in casts are:",
            "  projections[0].fields[3].cast: unknown cast function \"castDebeziumDecimal(x)\"",
        ],
    );
    for cast in [
        "castToDecimal128",
        "castDebeziumDate",
        "castDebeziumMicroTimestamp",
        "castDebeziumDecimal(SCALE)",
        "castDebeziumJson",
        "castDebeziumBits",
    ] {
        assert!(stderr.contains(cast), "the cast list names {cast}:\n{stderr}");
    }
}
