#!/usr/bin/env bash
# scripts/chaos-kill.sh: the long run of reliability::two_workers_killed_every_few_seconds_lose_nothing
# (issue 17 item 3): two workers of one group, pr-update events and projection changes on, one
# of them killed with SIGKILL every RTU_KILLS_EVERY_MS (2500) while RTU_KILLS_EVENTS (200000)
# events stream in, RTU_KILLS_KILLS (60) times; the release build of `rtu`. Prints the kills,
# events, lost, stale, pr-update events missing and duplicated. Fails when anything is lost.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}
export RTU_KILLS_EVENTS=${RTU_KILLS_EVENTS:-200000} RTU_KILLS_KILLS=${RTU_KILLS_KILLS:-60}
export RTU_KILLS_EVERY_MS=${RTU_KILLS_EVERY_MS:-2500}
cargo build --locked --release --bin rtu
scripts/testenv up kafka mongodb
eval "$(scripts/testenv env)"
export RTU_TEST_ENGINE_BIN=$CARGO_TARGET_DIR/release/rtu
cargo test --locked --test integration reliability::two_workers_killed_every_few_seconds_lose_nothing \
  -- --exact --nocapture
