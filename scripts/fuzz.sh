#!/usr/bin/env bash
# scripts/fuzz.sh: coverage-guided fuzzing of rtu's parsers (docs/fuzzing.md), with cargo-fuzz
# (libFuzzer) on the nightly toolchain. The fuzz crate (fuzz/) is a package of its own, so the
# stable build never sees it.
#
#   scripts/fuzz.sh TARGET SECONDS   fuzz one target (scripts/fuzz.sh list names them)
#   scripts/fuzz.sh all SECONDS      every target, one after the other
#   scripts/fuzz.sh --smoke          every target for RTU_FUZZ_SMOKE_SECONDS (20) each: CI's run
#   scripts/fuzz.sh seeds            regenerate fuzz/corpus-seed/ and fuzz/dict/ from the
#                                    repository's test vectors
#   scripts/fuzz.sh build | list
#
# Prints, per target: seconds, inputs executed (libFuzzer's stat::number_of_executed_units),
# the corpus libFuzzer keeps (its final `corp:`), crashes. A crash (or timeout, out-of-memory)
# fails the script and names the crashing input; copy it to fuzz/regressions/TARGET/, and
# tests/fuzz_regressions.rs replays it on stable from then on.
#
# Kept in RTU_TESTENV_CACHE (~/.cache/rtu-testenv), never in the repository: cargo-fuzz
# (cargo-fuzz/), the build (fuzz-target/), the working corpora (fuzz-corpus/TARGET/), crash
# inputs (fuzz-artifacts/TARGET/) and libFuzzer's logs (fuzz-logs/).
# RTU_FUZZ_SANITIZER (none): `address` builds with AddressSanitizer, at about half the speed;
# the crate forbids unsafe code, so it only watches the dependencies.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${RTU_TESTENV_CACHE:-$HOME/.cache/rtu-testenv}
CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${RTU_FUZZ_SANITIZER:-none}
SMOKE_SECONDS=${RTU_FUZZ_SMOKE_SECONDS:-20}

die() { echo "fuzz.sh: $*" >&2; exit 2; }
usage() { sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

targets() { ls fuzz/fuzz_targets | sed -n 's/\.rs$//p' | sort; }

# --- seeds: the repository's test vectors as libFuzzer inputs -------------------------------

SEEDS=fuzz/corpus-seed
DICTS=fuzz/dict

# Writes stdin as a seed of target $1 named $2-<sha of the content>.
seed() {
  local target=$1 origin=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -s $tmp ]]; then
    mv "$tmp" "$SEEDS/$target/$origin-$(sha1sum <"$tmp" | cut -c1-12)"
  else
    rm -f "$tmp"
  fi
}

# The one-line JSON objects of a Rust file's raw strings (r#"{...}"#), format strings left out.
json_literals() {
  grep -ho 'r#"{[^#]*}"#' "$@" | sed 's/^r#"//; s/"#$//' | grep -v '{{' | sort -u || true
}

# The JSON objects in a Markdown file's code spans (`{"a": 1}`), those that parse only.
json_spans() {
  grep -ho '`{"[^`]*}`' "$@" | sed 's/^`//; s/`$//' | sort -u |
    while IFS= read -r span; do
      python3 -c 'import json,sys; json.loads(sys.argv[1])' "$span" 2>/dev/null && printf '%s\n' "$span"
    done || true
}

# Each record value alone, and after a key (key NUL value), as the adapter targets read them.
record_seeds() {
  local target=$1 origin=$2 key=$3 value
  while IFS= read -r value; do
    printf '%s' "$value" | seed "$target" "$origin"
    printf '%s\0%s' "$key" "$value" | seed "$target" "$origin-keyed"
  done
}

# A dictionary entry per line of stdin (libFuzzer's -dict format: "..." with \" and \\).
dict() {
  sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/' | sort -u
}

make_seeds() {
  rm -rf "$SEEDS" "$DICTS"
  local t
  for t in $(targets); do mkdir -p "$SEEDS/$t"; done
  mkdir -p "$DICTS"
  local adapter=src/engine/adapter key='{"customer_id":"C-1"}'

  json_literals $adapter/debezium.rs $adapter/debezium/tests.rs |
    record_seeds adapter_debezium tests "$key"
  json_literals $adapter/basic.rs $adapter/pairing.rs | record_seeds adapter_iidr tests "$key"
  json_literals $adapter/golden_gate.rs | record_seeds adapter_golden_gate tests "$key"
  json_literals $adapter/custom.rs | record_seeds adapter_custom tests "$key"
  json_literals $adapter/custom.rs src/engine/script/adapter.rs |
    record_seeds adapter_script tests "$key"
  for t in adapter_debezium adapter_iidr adapter_golden_gate adapter_custom adapter_script; do
    json_spans docs/vectors.md docs/formats.md | record_seeds "$t" vectors "$key"
    printf '%s\0' "$key" | seed "$t" tombstone
  done

  # Keys: the adapters' keys, a text key, a number, a composite key, bytes that are not UTF-8.
  { json_literals $adapter/*.rs $adapter/debezium/tests.rs | awk 'length($0) <= 60'
    printf '%s\n' 'C-1' '"C-1"' '12345678901234567890' '-0.0' '1e300' '[1,"a",null]' \
      '{"order_id":"O-1","line":2}' '{"id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}' '{"a\u0000b":1}'
  } | while IFS= read -r k; do printf '%s' "$k" | seed kafka_key key; done
  printf '\xff\xfe{"id":1}' | seed kafka_key bytes

  # Casts: the string and number inputs of the cast tests, and docs/writes.md's examples.
  { grep -ho 'json!("[^"]*")' src/engine/cast/*.rs | sed 's/^json!(//; s/)$//'
    grep -ho 'json!(-\{0,1\}[0-9][0-9_.eE+-]*)' src/engine/cast/*.rs | sed 's/^json!(//; s/)$//; s/_//g'
    printf '%s\n' '{"scale":2,"value":"AQ=="}' '{"a":1}' '[{"a":1},{"b":2}]' '"[{\"a\":1}]"' \
      'true' '"true"' '"2023-11-14T22:13:20.042Z"' '"+275760-09-13T00:00:00.000Z"' \
      '"2023-11-14T22:13:20.123456789+02:00"' '"23:59:59.999"' '"AQID"' '"-12.50"' \
      '"9999999999999999999999999999999999"' '"castDebeziumDecimal(2)"' 'castToInteger'
  } | sort -u | while IFS= read -r v; do printf '%s' "$v" | seed casts tests; done

  # Engine configs: the examples.
  for f in examples/engine/*.yaml; do seed engine_config "$(basename "$f" .yaml)" <"$f"; done

  # Operator inputs: each example's objects as one stream, and the unit tests' fixture.
  local dir
  for dir in examples/operator/*/; do
    { local first=1 f
      for f in "$dir"system-of-record.yaml "$dir"realtime-updater.yaml "$dir"schemas.yaml; do
        [[ -f $f ]] || continue
        [[ $first == 1 ]] || echo ---
        first=0
        cat "$f"
      done
    } | seed render "$(basename "$dir")"
  done
  render_fixture | seed render fixture

  # Dictionaries: the formats' field names and logical types, the config's keys.
  { printf '%s\n' op before after source schema payload ts_ms ts_sec lsn scn status id \
      ddl databaseName tableChanges __deleted __op __source_ts_ms __lsn __scn fields field \
      name parameters scale value type struct array items __debezium_unavailable_value \
      A_ENTTYP A_CCID A_TIMSTAMP A_USER PT RR UP UB DL DR string int long float double \
      boolean bytes op_type pos I U D customer_id ID id row old_row event seq \
      ROW_INSERT ROW_UPDATE ROW_UPSERT ROW_DELETE meta data __proto__
    grep -ho '"io\.debezium\.[A-Za-z.]*"\|"org\.apache\.kafka\.connect\.data\.[A-Za-z]*"' \
      $adapter/debezium.rs | tr -d '"'
  } | dict >"$DICTS/adapters.dict"
  { grep -ho '^ *[a-zA-Z][a-zA-Z0-9_.-]*:' examples/engine/*.yaml examples/operator/*/*.yaml |
      sed 's/^ *//; s/:$//'
    cast_ids
  } | dict >"$DICTS/config.dict"
  for t in $(targets); do
    [[ $(du -sk "$SEEDS/$t" | cut -f1) -gt 0 ]] || die "no seeds for $t"
  done
  du -sh "$SEEDS" "$DICTS"
}

# The built-in cast ids (docs/writes.md#cast-functions), for the config dictionary.
cast_ids() {
  grep -ho '"\(default\)\{0,1\}[cC]ast[A-Za-z]*\|"identity"\|"defaultIdentity"' src/engine/cast/mod.rs |
    tr -d '"' | sort -u
}

# src/operator/fixtures.rs's SystemOfRecord and RealTimeUpdater, with custom functions.
render_fixture() {
  cat <<'EOF'
apiVersion: rtu.fastdata.dev/v1alpha1
kind: SystemOfRecord
metadata: { name: crm, namespace: acme }
spec:
  kafka:
    bootstrapServers: kafka-0.acme:9093,kafka-1.acme:9093
    authentication:
      type: scramSha512
      usernameSecretRef: { name: kafka-user, key: username }
      passwordSecretRef: { name: kafka-user, key: password }
    tls: { enabled: true, caSecretRef: { name: kafka-ca, key: ca.crt } }
    config: { session.timeout.ms: "30000" }
  mongodb: { uriSecretRef: { name: mongo, key: uri }, database: crm }
  adapter: { type: debezium }
  erSchemaRef: { name: crm-schemas, key: erSchema.json }
  projectionChangesSchemaRef: { name: crm-schemas, key: projectionChangesSchema.json }
  customFunctionsRef: { name: crm-functions }
  projections:
    - name: pr_customers
      topics: [crm.customers]
      fields:
        - { name: customer_id, type: String, primaryKey: true }
        - { name: name, type: String, cast: castToUpper }
    - name: pr_orders
      topics: [crm.orders]
      fields:
        - { name: order_id, type: String, primaryKey: true }
        - { name: customer_id, type: String }
---
apiVersion: rtu.fastdata.dev/v1alpha1
kind: RealTimeUpdater
metadata: { name: customers, namespace: acme }
spec:
  systemOfRecordRef: { name: crm }
  projections: [pr_customers, pr_orders]
  outputs:
    projectionUpdates:
      enabled: true
      topicTemplate: "acme.crm.{projection}.pr-update"
      topics: { pr_orders: acme.orders.updates }
    projectionChanges: { enabled: true }
    singleViewTrigger: { enabled: true, topic: "acme.{singleView}.sv-trigger" }
    strategies: { automatic: true, custom: { pr_orders: { sv_orders: svOrders } } }
  errorPolicy: { type: deadLetter, topic: acme.crm.dlq }
  replicas: 3
  worker:
    gracefulShutdownSeconds: 45
    podDisruptionBudget: { enabled: true, maxUnavailable: 1 }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: crm-schemas }
data:
  erSchema.json: '{"version":"1.0.0","config":{"pr_customers":{"outgoing":{}}}}'
  projectionChangesSchema.json: '{"version":"1.0.0","config":{"sv_customers":{"paths":[{"path":["pr_customers"],"identifier":{"customerId":"customer_id"}}]}}}'
---
apiVersion: v1
kind: ConfigMap
metadata: { name: crm-functions }
data:
  castToUpper.js: "module.exports = function castToUpper(value) { return value === null ? null : String(value).toUpperCase() }"
  svOrders.js: "module.exports = async function svOrders(logger, db, { after }) { return [{ orderId: after.order_id }] }"
---
apiVersion: v1
kind: Secret
metadata: { name: kafka-user }
stringData: { username: rtu-kafka-principal }
EOF
}

# --- running --------------------------------------------------------------------------------

setup() {
  cargo +nightly --version >/dev/null 2>&1 ||
    die "the nightly toolchain is missing (rustup toolchain install nightly): cargo-fuzz needs it; the stable build and tests/fuzz_regressions.rs do not"
  local bin=$CACHE/cargo-fuzz/bin
  if [[ ! -x $bin/cargo-fuzz ]] || [[ $("$bin/cargo-fuzz" --version) != *"$CARGO_FUZZ_VERSION"* ]]; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE/cargo-fuzz"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$CACHE/cargo-fuzz" --force
  fi
  export PATH=$bin:$PATH
  export CARGO_TARGET_DIR=$CACHE/fuzz-target
}

fuzz() { (cd fuzz && cargo +nightly fuzz "$@"); }

build() {
  # 16 codegen units: the build of the whole dependency tree stays in minutes.
  fuzz build --sanitizer "$SANITIZER" --codegen-units 16
}

RESULTS=()
CRASHED=()

# Fuzzes target $1 for $2 seconds; records its line of the summary.
run_target() {
  local target=$1 seconds=$2
  local corpus=$CACHE/fuzz-corpus/$target artifacts=$CACHE/fuzz-artifacts/$target
  local log=$CACHE/fuzz-logs/$target.log dict=fuzz/dict/adapters.dict max_len=4096
  mkdir -p "$corpus" "$artifacts" "$CACHE/fuzz-logs"
  case $target in
    engine_config | render) dict=fuzz/dict/config.dict max_len=16384 ;;
    kafka_key | casts) dict=fuzz/dict/adapters.dict max_len=1024 ;;
  esac
  local args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096
    -max_len="$max_len" -artifact_prefix="$artifacts/")
  [[ -f $dict ]] && args+=(-dict="$ROOT/$dict")
  echo "==> $target: ${seconds}s (log $log)"
  local start rc=0
  start=$(date +%s)
  fuzz run --sanitizer "$SANITIZER" --codegen-units 16 "$target" "$corpus" "$ROOT/$SEEDS/$target" \
    -- "${args[@]}" >"$log" 2>&1 || rc=$?
  local took=$(( $(date +%s) - start ))
  local executed size crash
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # The corpus libFuzzer kept (units that add coverage), else the files of the working corpus.
  size=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' "$log" | tail -1)
  size=${size:-$(find "$corpus" -type f | wc -l)}
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [[ $rc != 0 ]]; then
    { grep -m1 -A1 "panicked at" "$log" || true; grep -m2 -E "ERROR: libFuzzer|==ERROR" "$log"; } >&2 ||
      tail -20 "$log" >&2
    CRASHED+=("$target: ${crash:-no input written, see $log}")
  fi
  RESULTS+=("$(printf '%-20s %7s %12s %8s %7s' "$target" "$took" "${executed:-?}" "$size" \
    "$([[ $rc == 0 ]] && echo 0 || echo 1)")")
}

summary() {
  printf '\n%-20s %7s %12s %8s %7s\n' target seconds executed corpus crashes
  printf '%s\n' "${RESULTS[@]}"
  if [[ ${#CRASHED[@]} -gt 0 ]]; then
    printf '\nfuzz.sh: FAILED, crashing inputs:\n' >&2
    printf '  %s\n' "${CRASHED[@]}" >&2
    exit 1
  fi
}

[[ $# -ge 1 ]] || usage
t0=$(date +%s)
case $1 in
  seeds) make_seeds ;;
  list) targets ;;
  build) setup; build ;;
  --smoke)
    setup; build
    for t in $(targets); do run_target "$t" "$SMOKE_SECONDS"; done
    summary
    echo "fuzz.sh: smoke run of $(targets | wc -l) targets in $(( $(date +%s) - t0 ))s"
    ;;
  all)
    [[ $# == 2 && $2 =~ ^[0-9]+$ ]] || usage
    setup; build
    for t in $(targets); do run_target "$t" "$2"; done
    summary
    ;;
  *)
    [[ $# == 2 && $2 =~ ^[0-9]+$ ]] || usage
    targets | grep -qx "$1" || die "no target $1; targets: $(targets | tr '\n' ' ')"
    setup; build
    run_target "$1" "$2"
    summary
    ;;
esac
