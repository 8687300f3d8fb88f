#!/usr/bin/env bash
# scripts/bench-engine.sh: engine throughput on the local test servers. Prints figures and
# ratios measured in one run (see benches/engine.rs); asserts nothing about time.
#   BENCH_EVENTS (200000), BENCH_KEYS (50000), BENCH_NAIVE_MESSAGES (5000) size the run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}
cargo build --locked --release --bin rtu
scripts/testenv up kafka mongodb
eval "$(scripts/testenv env)"
export RTU_BIN=$CARGO_TARGET_DIR/release/rtu
cargo bench --locked --bench engine
