//! Test harness: where the real test servers are (from the environment, or from the env file
//! `scripts/testenv up` writes), unique names so tests run in parallel, and polling helpers.

pub mod engine;
// The generator's events (examples/generate_events), checked by operator_examples.rs.
#[path = "../../../examples/generate_events/events.rs"]
pub mod events;
pub mod examples;
pub mod kafka;
pub mod kube;
pub mod mongodb;
pub mod operator;
pub mod secrets;
pub mod servers;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const HOW_TO_START: &str = "the integration tests talk to real servers started by the project's own script:\n  \
     scripts/testenv up && eval \"$(scripts/testenv env)\"   # then cargo test\n  \
     or run everything (servers, fmt, clippy, tests, teardown): scripts/test.sh";

/// Endpoints and credentials of the test servers: `RTU_TEST_*` variables.
pub struct TestEnv {
    vars: BTreeMap<String, String>,
}

/// The test environment, loaded once per test binary.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(TestEnv::load)
}

impl TestEnv {
    /// `RTU_TEST_*` from the process environment; what is missing there is read from the env
    /// file of `scripts/testenv` (`$RTU_TESTENV_RUN/env`, default `.testinfra/env`).
    fn load() -> Self {
        let mut vars: BTreeMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("RTU_TEST_")).collect();
        if let Ok(text) = std::fs::read_to_string(env_file()) {
            for (k, v) in parse_env_file(&text) {
                vars.entry(k).or_insert(v);
            }
        }
        TestEnv { vars }
    }

    /// The value of `name`, or a failure that says how to start the servers.
    pub fn var(&self, name: &str) -> &str {
        match self.vars.get(name) {
            Some(v) => v,
            None => panic!(
                "{name} is not set and {} has no value for it: {HOW_TO_START}",
                env_file().display()
            ),
        }
    }
}

fn env_file() -> PathBuf {
    std::env::var_os("RTU_TESTENV_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testinfra"))
        .join("env")
}

/// Parses the `export NAME=value` / `export NAME='value'` lines `scripts/testenv env` prints.
fn parse_env_file(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines().filter_map(|line| {
        let (k, v) = line.strip_prefix("export ")?.split_once('=')?;
        let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
        Some((k.to_string(), v.to_string()))
    })
}

/// A name no other test (in this or a parallel run) uses: lowercase, `[a-z0-9-]`, at most 50
/// characters, so it is valid as a Kafka topic, a consumer group and a Kubernetes namespace.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = format!("{prefix}-{:x}-{n}-{:x}", std::process::id(), nanos);
    name.truncate(50);
    name
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn env_file_lines_are_parsed_with_and_without_quotes() {
    let parsed: Vec<_> =
        parse_env_file("export A=1\nexport B='x=y&z'\n# comment\nexport C=\n").collect();
    assert_eq!(
        parsed,
        [("A".into(), "1".into()), ("B".into(), "x=y&z".into()), ("C".into(), String::new())]
    );
}

#[test]
fn unique_names_differ_and_are_dns_labels() {
    let (a, b) = (unique_name("some-test"), unique_name("some-test"));
    assert_ne!(a, b);
    for n in [a, b] {
        assert!(
            n.len() <= 50
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
    }
}
