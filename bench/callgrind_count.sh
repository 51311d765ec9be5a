#!/usr/bin/env bash
# Instructions per request of the sidecar at concurrency 1 (valgrind callgrind), and, with
# STRACE=1, syscalls per request (strace -c -f): the noise-free numbers of bench/README.md.
#
# The rig is profile.sh's: the nginx mock (CPU 0), the sidecar (`--threads 1`, CPU 1) with the
# bench policy, a fresh --state-dir (the ledger journal is written), in a private network
# namespace, driven by oha (CPU 0) over one keep-alive connection (`oha -c 1`; CONC below).
# Counting: the sidecar runs under callgrind; WARMUP requests fill its pools and caches, then
# the counters are zeroed (callgrind_control -z), COUNT requests are sent, and the counters
# are dumped (callgrind_control --dump). Ir of that dump / COUNT = instructions per request, with
# start-up and shutdown left out (the same as "3000 minus 1000 requests"). Then the same
# zero/dump over IDLE_S seconds with no load gives what the sidecar does on its own meanwhile
# (timers, polls), to show that it does not move the per-request number.
# STRACE=1: the sidecar runs natively instead; after WARMUP requests, `strace -c -f -p` counts
# the syscalls of all its threads over COUNT requests.
# CPUTIME=1: natively too, the sidecar's CPU time (utime+stime from /proc/<pid>/stat) over COUNT
# requests after WARMUP, per request: a timed number, so compare two builds only in
# interleaved rounds of the same session (the machine's load moves it).
#
# Knobs (env): SIDECAR_BIN (required)  POLICY=bench/policy.yaml.in (policy-tiers.yaml.in: the
#   request is routed to a cheap tier with a stronger one above, so every non-streaming answer
#   is held and judged by the escalation rules before it is sent)  OTLP=1 (traces on: the sidecar
#   exports every request's spans over OTLP/HTTP to bench/otlp_sink.py, a receiver in the same
#   network namespace; its export count lands in summary.txt)  OTLP_SIGNALS=traces (with OTLP=1:
#   which signals are exported, `traces`, `metrics` or `traces,metrics`; metrics are collected
#   every OTEL_METRIC_EXPORT_INTERVAL=1000 ms, so a run makes real exports)  KIND=json|sse (1 KB non-streaming body | streaming
#   request, `x-bench-mock: sse`: the mock's 9-event SSE body with a usage chunk)
#   WARMUP=1000 COUNT=2000 IDLE_S=10 STRACE=0 PORT_BASE=18380 OUT=bench/out/count-<ts>
#   REDIS=0 (1: start a `redis-server` on 127.0.0.1:PORT_BASE+7, CPU 0, in the same network
#   namespace, and put its port for @REDIS_PORT@ in POLICY: a policy whose cache uses the Redis
#   backend; callgrind counts the sidecar only, never redis-server)
#   CONC=1 (oha connections; the README's numbers are at 1. With STRACE=1 and CONC=32 it shows
#   how many syscalls a request makes when requests overlap: the ledger's group commit
#   shares a write(2) between the requests that settle in one turn, so that count depends on
#   timing)
# Output in OUT: summary.txt (Ir, requests, Ir per request), callgrind.top.txt (the top
#   functions by own Ir per request, from callgrind_diff.py --top), callgrind.annotate.txt
#   (callgrind_annotate --inclusive=yes of the counted dump), callgrind.out.* (the raw dumps;
#   not for git; compare two with callgrind_diff.py), strace.txt with STRACE=1, oha-*.json,
#   sidecar.log.gz.
# Needs nginx and oha (bench/.tools/bin/oha, installed by run.sh), valgrind or strace.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KIND=${KIND:-json}
WARMUP=${WARMUP:-1000}
COUNT=${COUNT:-2000}
IDLE_S=${IDLE_S:-10}
STRACE=${STRACE:-0}
POLICY=${POLICY:-$BENCH_DIR/policy.yaml.in}
OTLP=${OTLP:-0}
OTLP_SIGNALS=${OTLP_SIGNALS:-traces}
CONC=${CONC:-1}
CPUTIME=${CPUTIME:-0}
SIDECAR_BIN=${SIDECAR_BIN:?set SIDECAR_BIN to the sidecar binary}
PORT_BASE=${PORT_BASE:-18380}
PORT_MOCK=$((PORT_BASE + 1)); PORT_PACED=$((PORT_BASE + 2))
PORT_SIDECAR=$((PORT_BASE + 4)); PORT_ADMIN=$((PORT_BASE + 5)); PORT_OTLP=$((PORT_BASE + 6))
PORT_REDIS=$((PORT_BASE + 7)); REDIS=${REDIS:-0}
OHA=${OHA:-$BENCH_DIR/.tools/bin/oha}

log() { printf '[count %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ "${COUNT_INNER:-0}" != 1 ]]; then
    [[ -x "$OHA" ]] || { log "oha missing: run bench/run.sh once (it installs oha)"; exit 1; }
    [[ -x "$SIDECAR_BIN" ]] || { log "no sidecar binary at $SIDECAR_BIN"; exit 1; }
    export OUT=${OUT:-$BENCH_DIR/out/count-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    if [[ "${NO_NETNS:-0}" != 1 ]] && unshare -n true 2>/dev/null; then
        exec env COUNT_INNER=1 unshare -n bash "$0" "$@"
    fi
fi
ip link set lo up 2>/dev/null || true

PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT/work/state" "$OUT/work/redis"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

W="$OUT/work"
mkdir -p "$W"/{tmp,secrets/bench-keys,state} "$OUT/bodies"
python3 "$BENCH_DIR/make_bodies.py" "$OUT/bodies" >/dev/null
python3 - "$OUT/bodies/stream.json" <<EOF
import sys
sys.path.insert(0, "$BENCH_DIR")
from httpmini import stream_body
open(sys.argv[1], "wb").write(stream_body())
EOF
sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@PACED_PORT@/$PORT_PACED/g" "$BENCH_DIR/nginx/mock.conf.in" >"$W/mock.conf"
sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@REDIS_PORT@/$PORT_REDIS/g" "$POLICY" >"$W/policy.yaml"
printf 'sk-bench-provider-key' >"$W/secrets/bench-keys/openai"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

taskset -c 0 "$NGINX" -p "$W" -c "$W/mock.conf" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
if [[ "$REDIS" == 1 ]]; then
    mkdir -p "$W/redis"
    taskset -c 0 redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$W/redis" --logfile "$OUT/redis.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        redis-cli -p "$PORT_REDIS" PING 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
fi
if [[ "$OTLP" == 1 ]]; then
    taskset -c 0 python3 "$BENCH_DIR/otlp_sink.py" "$PORT_OTLP" "$OUT/otlp.txt" &
    OTLP_PID=$!; PIDS+=("$OTLP_PID")
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$PORT_OTLP"
    export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
    export OTEL_SERVICE_NAME=tokenwarden-sidecar-bench
    export OTEL_METRIC_EXPORT_INTERVAL=${OTEL_METRIC_EXPORT_INTERVAL:-1000}
    [[ ",$OTLP_SIGNALS," == *,traces,* ]] || export OTEL_TRACES_EXPORTER=none
    [[ ",$OTLP_SIGNALS," == *,metrics,* ]] || export OTEL_METRICS_EXPORTER=none
else
    unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
fi
SIDECAR=("$SIDECAR_BIN" --policy-file "$W/policy.yaml" --secrets-dir "$W/secrets" --state-dir "$W/state"
         --namespace bench --labels app=bench --threads 1
         --listen "127.0.0.1:$PORT_SIDECAR" --admin-listen "127.0.0.1:$PORT_ADMIN")
URL="http://127.0.0.1:$PORT_SIDECAR/v1/chat/completions"
oha_args=(--no-tui --output-format json -m POST -H "Content-Type: application/json"
          -H "Authorization: Bearer sk-app-placeholder" -t 60s -c "$CONC")
if [[ $KIND == sse ]]; then
    oha_args+=(-H "x-bench-mock: sse" -D "$OUT/bodies/stream.json")
else
    oha_args+=(-D "$OUT/bodies/small.json")
fi
ready() {
    local i
    for i in $(seq 1 600); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT_ADMIN/readyz" && return 0
        sleep 0.1
    done
    return 1
}
load() {  # N OUTFILE: N requests over CONC connections; prints the number of 200s
    timeout 1800 taskset -c 0 "$OHA" "${oha_args[@]}" -n "$1" "$URL" >"$2" 2>/dev/null || true
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("statusCodeDistribution", {}).get("200", 0))' "$2"
}
# one request by hand: it must be a 200 with usage (or an SSE stream ending in [DONE])
smoke() {
    local body=small.json extra=()
    [[ $KIND == sse ]] && { body=stream.json; extra=(-H "x-bench-mock: sse"); }
    curl -s -D "$OUT/smoke.headers" -o "$OUT/smoke.body" --max-time 60 -H "Content-Type: application/json" \
        -H "Authorization: Bearer sk-app-placeholder" "${extra[@]}" --data-binary @"$OUT/bodies/$body" "$URL"
    grep -q '^HTTP/1.1 200' "$OUT/smoke.headers" && grep -q 'usage' "$OUT/smoke.body" \
        || { log "smoke request failed:"; cat "$OUT/smoke.headers" "$OUT/smoke.body" >&2; exit 1; }
}

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
    echo "sidecar_bin=$SIDECAR_BIN"
    echo "sidecar_built=$(date -u -r "$SIDECAR_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    echo "kind=$KIND warmup=$WARMUP count=$COUNT conc=$CONC idle_s=$IDLE_S strace=$STRACE cputime=$CPUTIME"
    echo "oha=$("$OHA" --version 2>/dev/null | head -1)"
    echo "valgrind=$(valgrind --version 2>/dev/null || echo -)"
} >"$OUT/summary.txt"

cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }  # utime stime
if [[ "$CPUTIME" == 1 ]]; then
    taskset -c 1 "${SIDECAR[@]}" >"$OUT/sidecar.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    ready || { log "sidecar not ready"; exit 1; }
    smoke
    log "warm-up: $WARMUP requests"
    echo "warmup_ok=$(load "$WARMUP" "$OUT/oha-warmup.json")" >>"$OUT/summary.txt"
    read -r u0 s0 < <(cpu_ticks "$SPID")
    ok=$(load "$COUNT" "$OUT/oha-count.json")
    read -r u1 s1 < <(cpu_ticks "$SPID")
    per() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$ok" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }
    {
        echo "count_ok=$ok"
        echo "cpu_ticks=$((u1 - u0 + s1 - s0)) user=$((u1 - u0)) sys=$((s1 - s0)) (CLK_TCK $(getconf CLK_TCK))"
        echo "cpu_us_per_request=$(per $((u1 - u0 + s1 - s0))) user=$(per $((u1 - u0))) sys=$(per $((s1 - s0)))"
        echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
    } >>"$OUT/summary.txt"
elif [[ "$STRACE" == 1 ]]; then
    taskset -c 1 "${SIDECAR[@]}" >"$OUT/sidecar.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    ready || { log "sidecar not ready"; exit 1; }
    smoke
    log "warm-up: $WARMUP requests"
    echo "warmup_ok=$(load "$WARMUP" "$OUT/oha-warmup.json")" >>"$OUT/summary.txt"
    log "strace -c -f on the sidecar (pid $SPID) over $COUNT requests"
    taskset -c 0 strace -c -f -p "$SPID" -o "$OUT/strace.txt" &
    TPID=$!; PIDS+=("$TPID")
    sleep 2
    ok=$(load "$COUNT" "$OUT/oha-count.json")
    sleep 0.5
    kill -INT "$TPID"; wait "$TPID" || true
    echo "count_ok=$ok" >>"$OUT/summary.txt"
    python3 - "$OUT/strace.txt" "$ok" >>"$OUT/summary.txt" <<'EOF'
import sys
rows, n = [], int(sys.argv[2])
for ln in open(sys.argv[1]):
    f = ln.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3]); name = f[-1]
        rows.append((calls, name))
total = sum(c for c, _ in rows)
print("syscalls_total=%d" % total)
print("syscalls_per_request=%.2f" % (total / n))
for c, name in sorted(rows, reverse=True):
    print("  %-16s %8d  %.3f/req" % (name, c, c / n))
EOF
else
    command -v valgrind >/dev/null || { log "valgrind not found"; exit 1; }
    taskset -c 1 valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/callgrind.out" \
        "${SIDECAR[@]}" >"$OUT/sidecar.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    ready || { log "sidecar not ready under valgrind"; exit 1; }
    smoke
    log "warm-up: $WARMUP requests (under callgrind)"
    echo "warmup_ok=$(load "$WARMUP" "$OUT/oha-warmup.json")" >>"$OUT/summary.txt"
    callgrind_control -z "$SPID" >/dev/null
    log "counting: $COUNT requests"
    ok=$(load "$COUNT" "$OUT/oha-count.json")
    callgrind_control --dump=count "$SPID" >/dev/null
    echo "count_ok=$ok" >>"$OUT/summary.txt"
    log "idle: ${IDLE_S}s with no load"
    callgrind_control -z "$SPID" >/dev/null
    sleep "$IDLE_S"
    callgrind_control --dump=idle "$SPID" >/dev/null
    kill -TERM "$SPID"; wait "$SPID" || true
    dumps=("$OUT"/callgrind.out.*)
    count_dump=$(grep -l '^desc: Trigger: dump count$' "${dumps[@]}" | head -1)
    idle_dump=$(grep -l '^desc: Trigger: dump idle$' "${dumps[@]}" | head -1)
    ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
    {
        echo "count_dump=$(basename "$count_dump")"
        echo "count_ir=$(ir "$count_dump")"
        echo "ir_per_request=$(awk -v a="$(ir "$count_dump")" -v n="$ok" 'BEGIN { printf "%.0f", a / n }')"
        echo "idle_dump=$(basename "$idle_dump")"
        echo "idle_ir=$(ir "$idle_dump") (over ${IDLE_S}s)"
    } >>"$OUT/summary.txt"
    # callgrind_annotate's inclusive list (its self list is useless here: the frames that were
    # on the worker's stack when the counters were zeroed show the whole dump as their own)
    callgrind_annotate --auto=no --inclusive=yes --threshold=90 "$count_dump" 2>/dev/null \
        >"$OUT/callgrind.annotate.txt" || true
    python3 "$BENCH_DIR/callgrind_diff.py" --top "$count_dump" "$ok" 40 >"$OUT/callgrind.top.txt" || true
fi
if [[ "$OTLP" == 1 ]]; then
    # the sidecar has stopped (its shutdown flushes the queued spans): what the sink received
    kill -TERM "$OTLP_PID" 2>/dev/null; wait "$OTLP_PID" 2>/dev/null || true
    cat "$OUT/otlp.txt" >>"$OUT/summary.txt" 2>/dev/null || echo "otlp_exports=? (no stats)" >>"$OUT/summary.txt"
    grep -h -o 'tokenwarden_otel_dropped_spans_total [0-9]*' "$OUT/metrics.txt" >>"$OUT/summary.txt" 2>/dev/null || true
fi
gzip -f "$OUT/sidecar.log" 2>/dev/null || true
cat "$OUT/summary.txt"
log "output in $OUT"
