#!/usr/bin/env bash
# The control-plane benchmark: one operator (local mode, 127.0.0.1) and
# SIDECARS simulated sidecar streams pushing usage at RATE records/s for
# DURATION seconds; a config edit half-way. See bench/control/README.md.
#
# Knobs (environment):
#   SIDECARS=500 CONNECTIONS=10 RATE=20000 DURATION=30 NAMESPACES=5
#   STATUS_INTERVAL_MS=   operator --status-interval-ms (empty: its default, 1000)
#   PERF=0                1: `perf record` the operator during the load and add
#                         its hottest functions to the result
#   BUILD=1               0: use the binaries already built
#   CARGO_TARGET_DIR      where the binaries are (default: target)
#   OUT=                  result file (default: bench/control/results/<date>.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

SIDECARS=${SIDECARS:-500}
CONNECTIONS=${CONNECTIONS:-10}
RATE=${RATE:-20000}
DURATION=${DURATION:-30}
NAMESPACES=${NAMESPACES:-5}
STATUS_INTERVAL_MS=${STATUS_INTERVAL_MS:-}
BUILD=${BUILD:-1}
PERF=${PERF:-0}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release

if [ "$BUILD" = 1 ]; then
  echo "==> cargo build --release (operator, load tool)" >&2
  cargo build --release -p tokenwarden-operator -p tokenwarden-demo \
    --bin tokenwarden-operator --bin tokenwarden-control-load >&2
fi
for b in tokenwarden-operator tokenwarden-control-load; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (BUILD=1 builds it)" >&2; exit 1; }
done

# 500 streams over 10 connections need few descriptors; raise the soft
# limit anyway in case CONNECTIONS is set to one per sidecar.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d -t tw-control-bench.XXXXXX)
OP_PID=
PERF_PID=
cleanup() {
  if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then kill -INT "$PERF_PID" 2>/dev/null || true; fi
  if [ -n "$OP_PID" ] && kill -0 "$OP_PID" 2>/dev/null; then
    kill -TERM "$OP_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$OP_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

mkdir -p "$WORK/objects" "$WORK/state"
"$BIN/tokenwarden-control-load" objects --namespaces "$NAMESPACES" >"$WORK/objects/bench.yaml"
"$BIN/tokenwarden-operator" --check-config --local-dir "$WORK/objects" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/secret"

# Port 0: the kernel picks free ports; read them back from the log.
extra=()
[ -n "$STATUS_INTERVAL_MS" ] && extra+=(--status-interval-ms "$STATUS_INTERVAL_MS")
RUST_LOG=info "$BIN/tokenwarden-operator" \
  --local-dir "$WORK/objects" --state-dir "$WORK/state" \
  --shared-secret-file "$WORK/secret" \
  --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
  "${extra[@]}" >"$WORK/operator.log" 2>&1 &
OP_PID=$!

GRPC= ADMIN=
for _ in $(seq 200); do
  if grep -q 'leading' "$WORK/operator.log"; then
    line=$(grep -m1 'operator listening' "$WORK/operator.log")
    GRPC=$(grep -oE '"grpc":"[0-9.]+:[0-9]+"' <<<"$line" | cut -d'"' -f4)
    ADMIN=$(grep -oE '"admin":"[0-9.]+:[0-9]+"' <<<"$line" | cut -d'"' -f4)
    break
  fi
  kill -0 "$OP_PID" 2>/dev/null || { cat "$WORK/operator.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$GRPC" ] || { echo "operator did not start leading within 20 s" >&2; cat "$WORK/operator.log" >&2; exit 1; }
echo "==> operator pid $OP_PID, gRPC $GRPC, admin $ADMIN" >&2

rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$OP_PID/status"; }
RSS_IDLE=$(rss)

echo "==> load: $SIDECARS sidecars, $RATE records/s, ${DURATION}s" >&2
if [ "$PERF" = 1 ]; then
  # Starts with the load tool (its connect phase is well under a second);
  # bounded by the load's duration.
  perf record -q -F 499 -g -p "$OP_PID" -o "$WORK/perf.data" -- sleep "$((DURATION + 1))" \
    >/dev/null 2>&1 &
  PERF_PID=$!
fi
set +e
"$BIN/tokenwarden-control-load" run \
  --url "http://$GRPC" --secret-file "$WORK/secret" \
  --sidecars "$SIDECARS" --connections "$CONNECTIONS" --namespaces "$NAMESPACES" \
  --rate "$RATE" --duration-secs "$DURATION" \
  --objects-file "$WORK/objects/bench.yaml" \
  --state-dir "$WORK/state" --operator-pid "$OP_PID" --clk-tck "$(getconf CLK_TCK)" \
  --out-json "$WORK/result.json" >"$WORK/load.md"
LOAD_RC=$?
set -e
RSS_END=$(rss)
PERF_TOP=
if [ -n "$PERF_PID" ]; then
  wait "$PERF_PID" || true
  PERF_PID=
  PERF_TOP=$(perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -25 || true)
  PERF_THREADS=$(perf report -i "$WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -8 || true)
  # Kept for `perf report -i` (bench/out is not committed).
  mkdir -p "$ROOT/bench/out"
  PERF_KEPT=$ROOT/bench/out/control-perf-$(date -u +%Y%m%dT%H%M%SZ).data
  cp "$WORK/perf.data" "$PERF_KEPT"
  echo "==> perf data kept in $PERF_KEPT" >&2
fi
METRICS=$(curl -fsS --max-time 5 "http://$ADMIN/metrics" \
  | grep -E '^tokenwarden_operator_(usage_records_[a-z]+_total|config_snapshots_sent_total|config_acks_total|streams_refused_total|status_write_errors_total)' || true)
WARNINGS=$(grep -E '"level":"(WARN|ERROR)"' "$WORK/operator.log" | grep -vc 'speaks plaintext' || true)

DATE=$(date -u +%Y-%m-%d)
OUT_GIVEN=${OUT:+1}
OUT=${OUT:-$ROOT/bench/control/results/$DATE.md}
if [ -z "$OUT_GIVEN" ] && [ -e "$OUT" ]; then
  i=2; while [ -e "${OUT%.md}-$i.md" ]; do i=$((i + 1)); done; OUT="${OUT%.md}-$i.md"
fi
mkdir -p "$(dirname "$OUT")"
{
  echo "# Control plane: $SIDECARS sidecar streams, $RATE records/s — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Commit \`$(git rev-parse --short HEAD 2>/dev/null || echo '?')\`$(git diff --quiet HEAD -- operator core proto 2>/dev/null || echo ' (operator/core/proto modified)'),"
  echo "\`bench/control/run.sh\` with SIDECARS=$SIDECARS CONNECTIONS=$CONNECTIONS RATE=$RATE DURATION=$DURATION NAMESPACES=$NAMESPACES STATUS_INTERVAL_MS=${STATUS_INTERVAL_MS:-default(1000)}."
  echo
  echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r); operator and load tool share the cores (no pinning); loopback only."
  echo
  echo "Operator: local mode, plaintext gRPC on 127.0.0.1, $((NAMESPACES)) RoutingPolicies and $((NAMESPACES * 3)) TokenBudgets in one file"
  echo "(every pod is selected by its namespace's \`team-daily\` budget and its app's budget, so each record lands in 2 books and the cluster ledger);"
  echo "it polls the objects directory every 200 ms, writes each book's status at most once per status interval, and acks a batch only once every book it touched is durably written (fsync + rename)."
  echo
  cat "$WORK/load.md"
  echo
  echo "RSS with no stream connected (after start): $RSS_IDLE MiB; at the end (streams connected): $RSS_END MiB."
  echo "Operator log: $WARNINGS WARN/ERROR lines (besides the plaintext-gRPC warning)."
  echo
  echo "Operator metrics at the end:"
  echo
  echo '```'
  echo "$METRICS"
  echo '```'
  if [ -n "$PERF_TOP" ]; then
    echo
    echo "Operator profile during the load (\`perf record -F 499 -g\`, self time; by thread, then by function):"
    echo
    echo '```'
    echo "$PERF_THREADS"
    echo
    echo "$PERF_TOP"
    echo '```'
  fi
} >"$OUT"
cat "$OUT"
echo >&2
echo "==> written $OUT" >&2
if [ "$LOAD_RC" != 0 ]; then
  echo "==> the load tool failed (exit $LOAD_RC); operator log tail:" >&2
  tail -20 "$WORK/operator.log" >&2
  exit "$LOAD_RC"
fi
grep -q 'LEDGER CHECK: PASS' "$WORK/load.md" || { echo "ledger check did not pass" >&2; exit 1; }
