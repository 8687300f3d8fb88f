//! Servers of `scripts/testenv` that belong to one test: started in a run directory of their
//! own (so the shared servers are untouched), frozen, killed and restarted by that test, and
//! stopped when it ends.

use std::path::PathBuf;
use std::process::Command;

use super::unique_name;

/// Servers in a private run directory, stopped on drop.
pub struct PrivateServers {
    pub run: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/testenv")
}

impl PrivateServers {
    /// `scripts/testenv up WHICH` (kafka, mongodb, mongodb-rs) in a new run directory.
    pub fn up(which: &str) -> Self {
        let servers =
            PrivateServers { run: std::env::temp_dir().join(unique_name("testenv-private")) };
        servers.testenv(&["up", which]);
        servers
    }

    fn testenv(&self, args: &[&str]) {
        let status = Command::new(script()).args(args).env("RTU_TESTENV_RUN", &self.run).status();
        let ok = status.as_ref().is_ok_and(|s| s.success());
        assert!(ok, "scripts/testenv {} in {}: {status:?}", args.join(" "), self.run.display());
    }

    /// A variable of the run's env file.
    pub fn var(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.run.join("env")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("{name} not in {}", self.run.display()))
    }

    /// The pid of a server process (`mongodb`, `kafka`, `mongodb-rs1`).
    pub fn pid(&self, process: &str) -> u32 {
        std::fs::read_to_string(self.run.join(process).join("pid")).unwrap().trim().parse().unwrap()
    }

    /// `scripts/testenv kill PROCESS`: SIGKILL, data kept.
    pub fn kill(&self, process: &str) {
        self.testenv(&["kill", process]);
    }

    /// `scripts/testenv restart PROCESS`: again on its data and port, once its ports answer.
    pub fn restart(&self, process: &str) {
        self.testenv(&["restart", process]);
    }

    /// The members of `mongodb-rs`: (process, host:port).
    pub fn members(&self) -> Vec<(String, String)> {
        self.var("RTU_TEST_MONGODB_RS_MEMBERS")
            .split_whitespace()
            .filter_map(|m| m.split_once('='))
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect()
    }

    /// The files of `process`'s data directory under `sub` (e.g. a mongod's `rollback`).
    pub fn data_files(&self, process: &str, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.run.join(process).join("data").join(sub)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() { dirs.push(path) } else { out.push(path) }
            }
        }
        out
    }
}

impl Drop for PrivateServers {
    fn drop(&mut self) {
        // A frozen server must run again before it can stop.
        for entry in std::fs::read_dir(&self.run).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            }
        }
        let _ = Command::new(script()).arg("down").env("RTU_TESTENV_RUN", &self.run).status();
        // The servers' logs stay for a failed test.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.run);
        }
    }
}
