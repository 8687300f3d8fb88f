#!/usr/bin/env bash
# scripts/demo.sh: the project's main job, as far as it goes today. Starts the real servers
# (Kafka, MongoDB, kube-apiserver + etcd + kube-controller-manager) on 127.0.0.1, runs the
# end-to-end smoke path against them, and leaves them running for you to look around.
# Later issues turn this into the full operator demo.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/testenv up
echo
scripts/testenv status
eval "$(scripts/testenv env)"
echo
echo "==> smoke path: Kafka (PLAINTEXT + SCRAM), MongoDB (rs0, auth), API server (CRD, SSA, status, watch, GC, Deployments)"
cargo test --locked --quiet --test integration 2>&1 | grep -E '^test |^test result' || {
  echo "demo: the smoke path failed; server logs are in ${RTU_TESTENV_RUN:-$ROOT/.testinfra}/*/" >&2
  exit 1
}
cat <<MSG

The servers are still running. Look further:
  eval "\$(scripts/testenv env)"          # endpoints and credentials (RTU_TEST_*, KUBECONFIG)
  scripts/testenv status                  # pid, port, time to ready, RSS of each process
  curl -s --cacert .testinfra/kube-pki/ca.crt --cert .testinfra/kube-pki/admin.crt \\
       --key .testinfra/kube-pki/admin.key "\$(sed -n 's/ *server: //p' .testinfra/kubeconfig)/version"
Stop them:
  scripts/testenv down
MSG
