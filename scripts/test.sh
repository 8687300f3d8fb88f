#!/usr/bin/env bash
# scripts/test.sh: every check the project has, on real servers, from a fresh clone.
#
#   1. cargo fmt --check and cargo clippy --all-targets -D warnings
#   2. scripts/testenv up   (installs Kafka, MongoDB, kube-apiserver/etcd/KCM into
#                           ~/.cache/rtu-testenv on first use, then starts them on 127.0.0.1)
#   3. cargo test           (unit + integration tests against those servers), then a short
#                           libFuzzer run of every fuzz target (scripts/fuzz.sh --smoke)
#   4. scripts/demo.sh      (the README's first command, on the same servers; its operator and
#                           workers stopped at the end: RTU_DEMO_STOP=1)
#   5. scripts/testenv down (always; logs stay in .testinfra/ for a failed run)
#
# Needs the toolchains only: cargo (stable, and nightly for the fuzz smoke run), go, java 17 +
# mvn, python3, openssl, curl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Build output is cached beside the servers, so a fresh clone (CI) does not rebuild every
# dependency; cargo's fingerprints keep it correct across clones.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}

step() { printf '\n==> %s\n' "$*"; }
t0=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "start the test servers (scripts/testenv up)"
finish() {
  local rc=$?
  step "stop the test servers (scripts/testenv down)"
  scripts/testenv down || rc=1
  if [[ $rc != 0 ]]; then
    echo "test.sh: FAILED (exit $rc); server logs: ${RTU_TESTENV_RUN:-$ROOT/.testinfra}/*/*.log" >&2
  fi
  echo "test.sh: total $(( $(date +%s) - t0 ))s"
  exit $rc
}
trap finish EXIT
scripts/testenv up
scripts/testenv status
eval "$(scripts/testenv env)"

step "cargo test"
# Benchmarks (benches/) are not tests: scripts/bench-engine.sh runs them.
cargo test --locked --lib --bins --tests

step "fuzz smoke: every target under libFuzzer for a few seconds (scripts/fuzz.sh --smoke, nightly)"
RTU_FUZZ_SMOKE_SECONDS=${RTU_FUZZ_SMOKE_SECONDS:-10} scripts/fuzz.sh --smoke

step "scripts/demo.sh (the helm-installed operator under its ServiceAccount and ClusterRole)"
RTU_DEMO_STOP=1 scripts/demo.sh
