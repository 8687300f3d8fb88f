#!/usr/bin/env bash
# scripts/bench-operator.sh: operator reaction time (RealTimeUpdater change -> worker Deployment
# applied) on the local kube-apiserver. Prints p50 / p99 / max and ratios against the API
# server's own round trip measured in the same run (see benches/operator.rs); asserts nothing
# about time. Leaves the servers running (scripts/testenv down stops them).
#   BENCH_RTUS (200), BENCH_EDITS (50), BENCH_BASELINE (50), BENCH_RTUS_PER_SOR (10),
#   BENCH_IN_FLIGHT (20) size the run; BENCH_TIMEOUT_S (180) only guards against a hang.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}
cargo bench --locked --bench operator --no-run
scripts/testenv up kube
eval "$(scripts/testenv env)"
cargo bench --locked --bench operator
