//! Tests of `scripts/testenv` itself: a server that fails to start is reported with its name,
//! its log file and the last lines of that log, within the ready timeout, and leaves no process
//! behind. Runs the real script against its own run directory with a stand-in `mongod`
//! (`RTU_TESTENV_MONGOD`); the MongoDB install it needs comes from the shared cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testenv")
}

fn fake_mongod(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-mongod");
    std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn testenv(run: &Path, mongod: &Path, args: &[&str]) -> Output {
    Command::new(script())
        .args(args)
        .env("RTU_TESTENV_RUN", run)
        .env("RTU_TESTENV_MONGOD", mongod)
        .env("RTU_TESTENV_READY_TIMEOUT", "3")
        .output()
        .unwrap()
}

fn processes_under(dir: &Path) -> String {
    let out = Command::new("pgrep").arg("-af").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_server_that_exits_is_named_with_its_log_and_last_lines() {
    let scratch = Scratch::new("testenv-exit");
    let run = scratch.0.join("run");
    let mongod = fake_mongod(&scratch.0, "echo 'fake mongod: cannot open data directory'; exit 3");
    let out = testenv(&run, &mongod, &["up", "mongodb"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up succeeded with a failing mongod: {stderr}");
    let log = run.join("mongodb/mongod.log");
    for expected in [
        "mongodb failed to start",
        "exited (status 3) before it was ready",
        &format!("log file: {}", log.display()),
        "fake mongod: cannot open data directory",
    ] {
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    assert_eq!(processes_under(&run), "", "processes left behind");
}

#[test]
fn a_server_that_never_gets_ready_times_out_and_is_stopped() {
    let scratch = Scratch::new("testenv-hang");
    let run = scratch.0.join("run");
    let mongod =
        fake_mongod(&scratch.0, "echo 'fake mongod: waiting forever'; while :; do sleep 0.2; done");
    let out = testenv(&run, &mongod, &["up", "mongodb"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up succeeded with a hanging mongod: {stderr}");
    for expected in ["mongodb failed to start: not ready after 3s", "fake mongod: waiting forever"]
    {
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    assert_eq!(processes_under(&run), "", "processes left behind");
    let status = testenv(&run, &mongod, &["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.lines().any(|l| l.starts_with("mongodb") && l.contains("stopped")), "{table}");
}
