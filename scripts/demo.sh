#!/usr/bin/env bash
# scripts/demo.sh: the operator end to end on this machine. Starts the real servers (Kafka,
# MongoDB, kube-apiserver + etcd + kube-controller-manager, with helm and kubectl) on
# 127.0.0.1, installs the chart with helm, runs the operator Deployment it installed as a kubelet
# would (its args and env, with only its ServiceAccount's token) and the workers the operator's
# Deployment describes (`rtu local-workers`: there is no kubelet here), applies a Debezium SystemOfRecord
# and RealTimeUpdater, feeds change events and prints the projection documents, the pr-update
# events and the updater's status (examples/demo.rs). Everything keeps running afterwards; the
# last lines say how to look further and how to stop.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}/cargo-target}
t0=$(date +%s)

echo "==> build rtu and the demo (cached after the first run)"
cargo build --locked --quiet --bin rtu --example demo

echo "==> start the test servers (scripts/testenv up; first run downloads and builds them)"
scripts/testenv up
eval "$(scripts/testenv env)"

export RTU_BIN=$CARGO_TARGET_DIR/debug/rtu
export RTU_DEMO_DIR=${RTU_TESTENV_RUN:-$ROOT/.testinfra}/demo
"$CARGO_TARGET_DIR/debug/examples/demo"
echo "demo.sh: total $(( $(date +%s) - t0 ))s"
