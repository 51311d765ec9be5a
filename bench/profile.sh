#!/usr/bin/env bash
# Profile the sidecar under the benchmark's load: where its CPU time per request goes.
#
# Starts the nginx mock (CPU 0) and the sidecar (`--threads 1`, CPU 1) like run.sh, in a
# private network namespace, drives it with oha (CPU 0), and samples the sidecar with
# `perf record` (cpu-clock, DWARF call graphs) for the length of the load. Without perf, falls
# back to valgrind --tool=callgrind on a short, much slower run.
# Output: bench/out/profile-<timestamp>/{perf.data,top-self.txt,top-children.txt,oha.json}
# and the top self-time symbols printed.
#
# Knobs (env): MODE=sat|c1 (closed loop 32 connections | one connection back to back)
#   BODY=small|large (1 KB | 200 KB)  SECONDS_=10 (load length)  FREQ=1999 (samples/s)
#   SIDECAR_BIN=target/release/tokenwarden-sidecar  TOP=30  PORT_BASE=18280  NICE=-20
#   SKIP_INSTALL=0 (apt-get linux-perf when neither perf nor valgrind is there)
# Needs what run.sh installs (nginx, oha in bench/.tools); run run.sh once first.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
MODE=${MODE:-sat}
BODY=${BODY:-small}
SECONDS_=${SECONDS_:-10}
FREQ=${FREQ:-1999}
TOP=${TOP:-30}
NICE=${NICE:--20}
SIDECAR_BIN=${SIDECAR_BIN:-$REPO/target/release/tokenwarden-sidecar}
PORT_BASE=${PORT_BASE:-18280}
PORT_MOCK=$((PORT_BASE + 1)); PORT_PACED=$((PORT_BASE + 2))
PORT_SIDECAR=$((PORT_BASE + 4)); PORT_ADMIN=$((PORT_BASE + 5))
OHA=${OHA:-$BENCH_DIR/.tools/bin/oha}

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ "${PROFILE_INNER:-0}" != 1 ]]; then
    if ! command -v perf >/dev/null && ! command -v valgrind >/dev/null && [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
        log "apt-get install linux-perf"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null \
            || log "could not install linux-perf"
    fi
    [[ -x "$OHA" ]] || { log "oha missing: run bench/run.sh once (it installs oha)"; exit 1; }
    [[ -x "$SIDECAR_BIN" ]] || { log "no sidecar binary at $SIDECAR_BIN"; exit 1; }
    export OUT=${OUT:-$BENCH_DIR/out/profile-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    if [[ "${NO_NETNS:-0}" != 1 ]] && unshare -n true 2>/dev/null; then
        exec env PROFILE_INNER=1 unshare -n bash "$0" "$@"
    fi
fi
ip link set lo up 2>/dev/null || true

PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT/work/state"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ "$NICE" == 0 ]] || renice -n "$NICE" -p $$ >/dev/null 2>&1 || true

W="$OUT/work"
mkdir -p "$W"/{tmp,secrets/bench-keys,state} "$OUT/bodies"
python3 "$BENCH_DIR/make_bodies.py" "$OUT/bodies" >/dev/null
sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@PACED_PORT@/$PORT_PACED/g" "$BENCH_DIR/nginx/mock.conf.in" >"$W/mock.conf"
sed "s/@MOCK_PORT@/$PORT_MOCK/g" "$BENCH_DIR/policy.yaml.in" >"$W/policy.yaml"
printf 'sk-bench-provider-key' >"$W/secrets/bench-keys/openai"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

taskset -c 0 "$NGINX" -p "$W" -c "$W/mock.conf" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
SIDECAR=("$SIDECAR_BIN" --policy-file "$W/policy.yaml" --secrets-dir "$W/secrets" --state-dir "$W/state"
         --namespace bench --labels app=bench --threads 1
         --listen "127.0.0.1:$PORT_SIDECAR" --admin-listen "127.0.0.1:$PORT_ADMIN")

body="$OUT/bodies/$([[ $BODY == large ]] && echo large || echo small).json"
oha_args=(--no-tui --output-format json -m POST -H "Content-Type: application/json"
          -H "Authorization: Bearer sk-app-placeholder" -D "$body" -t 10s)
ready() {
    local i
    for i in $(seq 1 300); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT_ADMIN/readyz" && return 0
        sleep 0.05
    done
    return 1
}

if command -v perf >/dev/null; then
    taskset -c 1 "${SIDECAR[@]}" >"$OUT/sidecar.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    ready || { log "sidecar not ready"; exit 1; }
    log "warm-up"
    timeout 60 taskset -c 0 "$OHA" "${oha_args[@]}" -n 3000 -c 16 "http://127.0.0.1:$PORT_SIDECAR/v1/chat/completions" >/dev/null 2>&1 || true
    case $MODE in c1) load=(-z "${SECONDS_}s" -c 1) ;; *) load=(-z "${SECONDS_}s" -c 32) ;; esac
    log "perf record -F $FREQ on the sidecar (pid $SPID) during ${SECONDS_}s of $MODE load, $BODY body"
    taskset -c 0 perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,32768 -p "$SPID" -o "$OUT/perf.data" \
        -- sleep "$((SECONDS_ + 1))" >"$OUT/perf-record.log" 2>&1 &
    PPID_=$!; PIDS+=("$PPID_")
    sleep 0.5
    timeout $((SECONDS_ + 60)) taskset -c 0 "$OHA" "${oha_args[@]}" "${load[@]}" \
        "http://127.0.0.1:$PORT_SIDECAR/v1/chat/completions" >"$OUT/oha.json" 2>/dev/null || true
    wait "$PPID_" || true
    log "perf report"
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none \
        2>/dev/null >"$OUT/by-dso.txt" || true
    perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.3 -g none \
        2>/dev/null >"$OUT/top-self.txt" || true
    perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 1 -g none \
        2>/dev/null >"$OUT/top-children.txt" || true
    python3 - "$OUT" "$TOP" <<'EOF' || true
import json, os, re, sys
out, top = sys.argv[1], int(sys.argv[2])
try:
    d = json.load(open(os.path.join(out, "oha.json")))
    print("load: %.0f req/s, p50 %.0f us" % (d["summary"]["requestsPerSec"],
                                             d["latencyPercentiles"]["p50"] * 1e6))
except (OSError, ValueError, KeyError, TypeError):
    pass
def rows(name):
    for ln in open(os.path.join(out, name)):
        if ln.startswith("#") or not ln.strip():
            continue
        yield re.sub(r"\s+-\s+-\s*$", "", ln.rstrip())
print("== CPU by binary (self) ==")
for r in list(rows("by-dso.txt"))[:6]:
    print(r)
print("== self time, top %d (perf cpu-clock; [k] kernel, [.] user) ==" % top)
for r in list(rows("top-self.txt"))[:top]:
    print(r[:160])
print("== inclusive time of sidecar / hyper / serde / tokenwarden-core frames ==")
n = 0
for r in rows("top-children.txt"):
    if re.search(r"tokenwarden|hyper|serde|h1::|http_body", r):
        print(r[:200])
        n += 1
        if n >= top:
            break
EOF
else
    command -v valgrind >/dev/null || { log "neither perf nor valgrind found"; exit 1; }
    log "no perf: valgrind --tool=callgrind on 2000 requests (slow)"
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "${SIDECAR[@]}" \
        >"$OUT/sidecar.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    ready || { log "sidecar not ready under valgrind"; exit 1; }
    timeout 300 taskset -c 0 "$OHA" "${oha_args[@]}" -n 2000 -c 4 "http://127.0.0.1:$PORT_SIDECAR/v1/chat/completions" \
        >"$OUT/oha.json" 2>/dev/null || true
    kill -TERM "$SPID"; wait "$SPID" || true
    callgrind_annotate --inclusive=no "$OUT/callgrind.out" 2>/dev/null | head -n $((TOP + 20)) | tee "$OUT/top-self.txt"
fi
gzip -f "$OUT/sidecar.log" 2>/dev/null || true
log "output in $OUT"
