#!/usr/bin/env bash
# tokenwarden sidecar benchmark: what the sidecar adds to an LLM call, next to a plain nginx
# proxy_pass hop (the floor any per-pod HTTP proxy pays), in one run, on loopback only.
#
#   load (oha / python probes, CPU 0) ──> [ direct | nginx hop | hyper floor | sidecar ] ──> fake provider
#                                          (proxy under test alone on CPU 1)                (nginx + paced
#                                                                                             SSE, CPU 0)
# hyper floor = sidecar/examples/hyper_floor.rs: the sidecar's own stack (tokio runtime, hyper-util
# server, pooled upstream client) forwarding with none of the sidecar's work, to tell the cost
# of the stack from the cost of routing, budgets and metering.
# Scenarios (every one runs for every path, interleaved, so rows of a table share conditions):
#   non-streaming POST /v1/chat/completions, 1 KB and 200 KB bodies:
#     c1     one connection, back to back (C1_REQUESTS / C1_LARGE_REQUESTS requests)
#     rN     open loop at N req/s for DURATION s (oha -q N --latency-correction: queueing
#            counts as latency)   RATES for 1 KB, RATES_LARGE for 200 KB
#     sat    closed loop, SAT_CONC connections for SAT_DURATION s (throughput, CPU/request)
#   streams: time to first event, sequential, instant upstream (whole SSE body at once),
#            the same after IDLE_GAP_MS of idle before each request (a diagnostic: what waking
#            up cold costs), and paced upstream (PACED_CHUNKS chunks PACED_INTERVAL_MS apart)
#   open streams: OPEN_STREAMS concurrent paced streams, each must end cleanly
#   footprint: proxy CPU time per request (/proc/<pid>/stat utime+stime), RSS idle, under
#            load, with the open streams; sidecar time to ready (spawn -> /readyz 200)
# Output: OUT/report.md (printed at the end) and OUT/raw/ (oha JSON, samples, logs).
#
# Knobs (env):
#   QUICK=1                 smoke test: 3 s per timed scenario, fewer requests and streams
#   DURATION=20 RATES="1000 5000" RATES_LARGE="1000" CONC=64   open-loop runs
#   SAT_DURATION=10 SAT_CONC=32        closed-loop saturation
#   C1_REQUESTS=5000 C1_LARGE_REQUESTS=2000 WARMUP_REQUESTS=2000
#   STREAM_N=300 IDLE_N=150 IDLE_GAP_MS=20 PACED_N=60 PACED_CHUNKS=50 PACED_INTERVAL_MS=20
#   OPEN_STREAMS=1000 OPEN_CHUNKS=20 OPEN_INTERVAL_MS=500 (each stream lasts 10 s)
#   READY_TRIALS=10 READY_POLL_MS=1
#   TARGETS="direct nginx-hop hyper-floor sidecar"   SCENARIOS (default: all, e.g. "s1k-c1 s200k-c1")
#   SKIP_STREAMS=0 SKIP_OPEN=0 SKIP_READY=0
#   PROXY_CPU=1 LOAD_CPU=0
#   NICE=-20 (niceness of everything the run starts: on a shared machine, background work such
#            as compilers then gets little of the two CPUs while the bench runs; 0 to disable)
#   RT=0     (1: run everything the bench starts under SCHED_RR priority 10, so background work
#            cannot delay a wake-up by a scheduler tick; the kernel's RT throttling still leaves
#            others 5% of each CPU. For a machine that others keep busy; see README)
#   WAIT_QUIET=0 (up to this many seconds, wait until the CPUs are idle before measuring)
#   SKIP_INSTALL=0 (apt-get nginx-light etc., cargo install oha)  OHA_VERSION=1.16.0
#   SKIP_BUILD=0 (cargo build --release -p tokenwarden-sidecar, and its hyper_floor example)
#   SIDECAR_BIN=target/release/tokenwarden-sidecar  FLOOR_BIN=target/release/examples/hyper_floor
#   SIDECAR_STATE=1 (0: no --state-dir, the ledger stays in memory: a diagnostic, to see what
#            the ledger file costs)
#   NO_NETNS=0 (1: run on the host's loopback instead of a private network namespace)
#   OUT=bench/out/<timestamp>   KEEP_STATE=0 (1: keep the sidecar's ledger under OUT/work)
#   PORT_BASE=18180 (mock, paced, hop, sidecar, admin, ready-check, floor ports count up from it)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then q() { echo "$1"; }; else q() { echo "$2"; }; fi
DURATION=${DURATION:-$(q 3 20)}
SAT_DURATION=${SAT_DURATION:-$(q 3 10)}
RATES=${RATES:-"1000 5000"}
RATES_LARGE=${RATES_LARGE:-"1000"}
CONC=${CONC:-64}
SAT_CONC=${SAT_CONC:-32}
C1_REQUESTS=${C1_REQUESTS:-$(q 1000 5000)}
C1_LARGE_REQUESTS=${C1_LARGE_REQUESTS:-$(q 300 2000)}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-$(q 500 2000)}
STREAM_N=${STREAM_N:-$(q 50 300)}
PACED_N=${PACED_N:-$(q 3 60)}
IDLE_N=${IDLE_N:-$(q 20 150)}
IDLE_GAP_MS=${IDLE_GAP_MS:-20}
PACED_CHUNKS=${PACED_CHUNKS:-50}
PACED_INTERVAL_MS=${PACED_INTERVAL_MS:-20}
OPEN_STREAMS=${OPEN_STREAMS:-1000}
OPEN_CHUNKS=${OPEN_CHUNKS:-$(q 10 20)}
OPEN_INTERVAL_MS=${OPEN_INTERVAL_MS:-$(q 400 500)}
READY_TRIALS=${READY_TRIALS:-$(q 3 10)}
READY_POLL_MS=${READY_POLL_MS:-1}
TARGETS=${TARGETS:-"direct nginx-hop hyper-floor sidecar"}
SCENARIOS=${SCENARIOS:-}
SKIP_STREAMS=${SKIP_STREAMS:-0}
SKIP_OPEN=${SKIP_OPEN:-0}
SKIP_READY=${SKIP_READY:-0}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NICE=${NICE:--20}
RT=${RT:-0}
WAIT_QUIET=${WAIT_QUIET:-0}
SKIP_INSTALL=${SKIP_INSTALL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
OHA_VERSION=${OHA_VERSION:-1.16.0}
TOOLS=${TOOLS:-$BENCH_DIR/.tools}
SIDECAR_BIN=${SIDECAR_BIN:-$REPO/target/release/tokenwarden-sidecar}
FLOOR_BIN=${FLOOR_BIN:-$REPO/target/release/examples/hyper_floor}
KEEP_STATE=${KEEP_STATE:-0}
SIDECAR_STATE=${SIDECAR_STATE:-1}
PORT_BASE=${PORT_BASE:-18180}
PORT_MOCK=$((PORT_BASE + 1)); PORT_PACED=$((PORT_BASE + 2)); PORT_HOP=$((PORT_BASE + 3))
PORT_SIDECAR=$((PORT_BASE + 4)); PORT_ADMIN=$((PORT_BASE + 5))
PORT_READY=$((PORT_BASE + 6)); PORT_READY_ADMIN=$((PORT_BASE + 7)); PORT_FLOOR=$((PORT_BASE + 8))
APP_KEY=sk-app-placeholder   # the app's own key; the sidecar drops it and sends its own

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ setup (outside the netns)
sidecar_usable() { [[ -x "$SIDECAR_BIN" ]] && "$SIDECAR_BIN" --help 2>/dev/null | grep -q -- '--listen'; }

setup() {
    if [[ "$SKIP_INSTALL" != 1 ]]; then
        local need=()
        command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
        command -v python3 >/dev/null || need+=(python3)
        command -v ip >/dev/null || need+=(iproute2)
        command -v taskset >/dev/null && command -v unshare >/dev/null || need+=(util-linux)
        command -v curl >/dev/null || need+=(curl)
        if ((${#need[@]})); then
            log "apt-get install ${need[*]}"
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        fi
        if ! [[ -x "$TOOLS/bin/oha" ]] || [[ "$("$TOOLS/bin/oha" --version 2>/dev/null)" != *"$OHA_VERSION"* ]]; then
            command -v cargo >/dev/null || die "cargo is needed to install oha"
            log "cargo install oha $OHA_VERSION into $TOOLS (compiles for several minutes)"
            cargo install oha --locked --quiet --version "$OHA_VERSION" --root "$TOOLS"
        fi
    fi
    if [[ " $TARGETS " == *" sidecar "* && "$SKIP_BUILD" != 1 ]]; then
        log "cargo build --release -p tokenwarden-sidecar"
        (cd "$REPO" && cargo build --release --quiet -p tokenwarden-sidecar) \
            || log "WARNING: the sidecar did not build; using the existing binary if there is one"
    fi
    if [[ " $TARGETS " == *" hyper-floor "* && "$SKIP_BUILD" != 1 ]]; then
        log "cargo build --release -p tokenwarden-sidecar --example hyper_floor"
        (cd "$REPO" && cargo build --release --quiet -p tokenwarden-sidecar --example hyper_floor) \
            || log "WARNING: hyper_floor did not build; using the existing binary if there is one"
    fi
}

# ------------------------------------------------------------------ process bookkeeping
PIDS=()
track() { PIDS+=("$1"); }
cleanup() {
    local rc=$? p alive
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 40); do
        alive=0
        for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "${WORK:-}" && "$KEEP_STATE" != 1 ]]; then rm -rf "$WORK/state" "$WORK/state-ready"; fi
    exit "$rc"
}

# start NAME CPU CMD...: background, pinned, logged; records the PID (and nginx's workers)
start() {
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >"$RAW/logs/$name.log" 2>&1 &
    local pid=$!
    track "$pid"
    eval "PID_${name//-/_}=$pid"
}

track_children() {  # nginx masters: their workers too, so a KILL of the master leaves none
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do track "$c"; done
}

wait_http() {  # URL SECONDS
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$1" 2>/dev/null | grep -q '^200$' && return 0
        sleep 0.05
    done
    return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

proc_once() { taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/procwatch.py" once "$1"; }

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$PORT_MOCK/v1/chat/completions" ;;
        nginx-hop) echo "http://127.0.0.1:$PORT_HOP/v1/chat/completions" ;;
        sidecar) echo "http://127.0.0.1:$PORT_SIDECAR/v1/chat/completions" ;;
        hyper-floor) echo "http://127.0.0.1:$PORT_FLOOR/v1/chat/completions" ;;
    esac
}
pid_of() {
    case $1 in
        direct) echo - ;;
        nginx-hop) echo "$PID_hop" ;;
        sidecar) echo "$PID_sidecar" ;;
        hyper-floor) echo "$PID_hyper_floor" ;;
    esac
}

# watch_start FILE PID|- MAXSECS INTERVAL: procwatch in the background (CPU 0), sampling the
# proxy's CPU ticks and RSS plus the busy ticks of both CPUs; sets WATCH_PID
watch_start() {
    WATCH_PID=""
    taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/procwatch.py" watch "$2" "$4" "$3" "$PROXY_CPU,$LOAD_CPU" >"$1" &
    WATCH_PID=$!
    track "$WATCH_PID"
    local i
    for i in $(seq 1 100); do [[ -s "$1" ]] && break; sleep 0.01; done
}
watch_stop() {
    [[ -z "$WATCH_PID" ]] && return 0
    kill -TERM "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
}

# oha_run OUTJSON URL BODY MODE ARG   (MODE: c1 N | rate R | sat - | warm N)
oha_run() {
    local out=$1 url=$2 body=$3 mode=$4 arg=$5 secs
    local args=(--no-tui --output-format json -m POST -H "Content-Type: application/json"
                -H "Authorization: Bearer $APP_KEY" -D "$body" -t 10s)
    case $mode in
        c1)   args+=(-n "$arg" -c 1); secs=$((arg / 50 + 60)) ;;
        warm) args+=(-n "$arg" -c 16); secs=$((arg / 50 + 60)) ;;
        rate) args+=(-z "${DURATION}s" -q "$arg" --latency-correction -c "$CONC"); secs=$((DURATION + 60)) ;;
        sat)  args+=(-z "${SAT_DURATION}s" -c "$SAT_CONC"); secs=$((SAT_DURATION + 60)) ;;
    esac
    timeout -k 5 "$secs" taskset -c "$LOAD_CPU" "$OHA" "${args[@]}" "$url" >"$out" 2>"${out%.json}.err" || true
}

# ------------------------------------------------------------------ scenarios
scenario_list() {
    local s r
    for s in s1k s200k; do
        echo "$s-c1"
        if [[ $s == s1k ]]; then for r in $RATES; do echo "$s-r$r"; done
        else for r in $RATES_LARGE; do echo "$s-r$r"; done; fi
        echo "$s-sat"
    done
}

run_scenario() {  # SCEN TARGET
    local scen=$1 tgt=$2 body mode arg
    case $scen in s1k-*) body=$RAW/bodies/small.json ;; *) body=$RAW/bodies/large.json ;; esac
    case ${scen#*-} in
        c1) mode=c1; [[ $scen == s1k-* ]] && arg=$C1_REQUESTS || arg=$C1_LARGE_REQUESTS ;;
        sat) mode=sat; arg=- ;;
        r*) mode=rate; arg=${scen#*-r} ;;
    esac
    local base="$RAW/load/$scen--$tgt" maxs=$((DURATION + SAT_DURATION + 120)) t0 t1
    log "$scen $tgt"
    watch_start "$base.proc" "$(pid_of "$tgt")" "$maxs" 0.25
    t0=$(date +%s.%N)
    oha_run "$base.json" "$(url_of "$tgt")" "$body" "$mode" "$arg"
    t1=$(date +%s.%N)
    watch_stop
    printf '%s\t%s\t%s\t%s\n' "$scen" "$tgt" "$t0" "$t1" >>"$RAW/load/index.tsv"
}

warm_up() {  # BODY: fills every path's connection pools and caches; not recorded
    local tgt
    for tgt in $TARGETS; do
        oha_run "$RAW/load/warmup.json" "$(url_of "$tgt")" "$1" warm "$WARMUP_REQUESTS"
    done
}

smoke() {  # TARGET: one request of each kind must work before anything is measured
    local tgt=$1 url code ok=1
    url=$(url_of "$tgt")
    code=$(curl -s -o "$RAW/smoke-$tgt.json" -w '%{http_code}' --max-time 10 -H "Content-Type: application/json" \
        -H "Authorization: Bearer $APP_KEY" --data-binary @"$RAW/bodies/small.json" "$url" || true)
    if [[ "$code" != 200 ]] || ! grep -q '"usage"' "$RAW/smoke-$tgt.json"; then
        log "smoke $tgt: non-streaming got HTTP $code: $(head -c 300 "$RAW/smoke-$tgt.json")"; ok=0
    fi
    local m
    for m in sse paced; do
        taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/stream_probe.py" "$url" 1 0 "x-bench-mock:$m" \
            "x-bench-chunks:3" "x-bench-interval-ms:5" >"$RAW/smoke-$tgt-$m.json" 2>&1 || true
        if ! grep -q '"n": 1,' "$RAW/smoke-$tgt-$m.json"; then
            log "smoke $tgt: $m stream failed: $(head -c 300 "$RAW/smoke-$tgt-$m.json")"; ok=0
        fi
    done
    printf '%s\t%s\n' "$tgt" "$([[ $ok == 1 ]] && echo ok || echo FAIL)" >>"$RAW/smoke.tsv"
}

streams() {
    local tgt kind
    for kind in instant idle paced; do
        for tgt in $TARGETS; do
            log "stream TTFT, $kind upstream, $tgt"
            if [[ $kind == instant ]]; then
                PROBE_MAX_SECONDS=300 taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/stream_probe.py" \
                    "$(url_of "$tgt")" "$STREAM_N" 20 "x-bench-mock:sse" \
                    >"$RAW/streams/$kind--$tgt.json" 2>>"$RAW/logs/probe.log" || true
            elif [[ $kind == idle ]]; then
                PROBE_GAP_MS=$IDLE_GAP_MS PROBE_MAX_SECONDS=300 taskset -c "$LOAD_CPU" python3 \
                    "$BENCH_DIR/stream_probe.py" "$(url_of "$tgt")" "$IDLE_N" 2 "x-bench-mock:sse" \
                    >"$RAW/streams/$kind--$tgt.json" 2>>"$RAW/logs/probe.log" || true
            else
                PROBE_MAX_SECONDS=600 taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/stream_probe.py" \
                    "$(url_of "$tgt")" "$PACED_N" 2 "x-bench-mock:paced" "x-bench-chunks:$PACED_CHUNKS" \
                    "x-bench-interval-ms:$PACED_INTERVAL_MS" \
                    >"$RAW/streams/$kind--$tgt.json" 2>>"$RAW/logs/probe.log" || true
            fi
        done
    done
}

open_streams() {
    local tgt limit=$((OPEN_CHUNKS * OPEN_INTERVAL_MS / 1000 + 60))
    for tgt in $TARGETS; do
        log "$OPEN_STREAMS open streams, $tgt"
        watch_start "$RAW/open/$tgt.proc" "$(pid_of "$tgt")" $((limit + 30)) 0.1
        taskset -c "$LOAD_CPU" timeout -k 5 $((limit + 15)) python3 "$BENCH_DIR/open_streams.py" \
            "$(url_of "$tgt")" "$OPEN_STREAMS" "$OPEN_CHUNKS" "$OPEN_INTERVAL_MS" "$limit" \
            >"$RAW/open/$tgt.json" 2>>"$RAW/logs/open_streams.log" || true
        watch_stop
        sleep 1
    done
}

ready_checks() {
    if [[ " $TARGETS " == *" sidecar "* ]]; then
        log "sidecar time to ready, $READY_TRIALS trials"
        taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/ready_probe.py" "$READY_TRIALS" "$PROXY_CPU" \
            "http://127.0.0.1:$PORT_READY_ADMIN/readyz" "$READY_POLL_MS" "$RAW/logs/ready-sidecar.log" -- \
            "${SIDECAR_CMD[@]}" --listen "127.0.0.1:$PORT_READY" --admin-listen "127.0.0.1:$PORT_READY_ADMIN" \
            --state-dir "$WORK/state-ready" >"$RAW/ready-sidecar.json" || true
    fi
    log "nginx hop time to ready (reference), $READY_TRIALS trials"
    sed "s/@HOP_PORT@/$PORT_READY/g; s/@MOCK_PORT@/$PORT_MOCK/g; s/^pid hop.pid;/pid hop-ready.pid;/" \
        "$BENCH_DIR/nginx/hop.conf.in" >"$WORK/hop-ready.conf"
    taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/ready_probe.py" "$READY_TRIALS" "$PROXY_CPU" \
        "http://127.0.0.1:$PORT_READY/health" "$READY_POLL_MS" "$RAW/logs/ready-hop.log" -- \
        "$NGINX" -p "$WORK" -c "$WORK/hop-ready.conf" >"$RAW/ready-nginx-hop.json" || true
}

cpus_busy_pct() {  # busy % of the busiest CPU over 2 s, from /proc/stat
    local a b
    a=$(grep '^cpu[0-9]' /proc/stat); sleep 2; b=$(grep '^cpu[0-9]' /proc/stat)
    paste <(echo "$a") <(echo "$b") | awk -v hz="$(getconf CLK_TCK)" '{
        n = (NF) / 2; ba = 0; bb = 0
        for (i = 2; i <= 9; i++) if (i != 5 && i != 6) { ba += $i; bb += $(i + n) }
        p = 100 * (bb - ba) / hz / 2; if (p > m) m = p } END { printf "%d\n", m }'
}

wait_quiet() {
    ((WAIT_QUIET > 0)) || return 0
    local end=$((SECONDS + WAIT_QUIET)) b
    while ((SECONDS < end)); do
        b=$(cpus_busy_pct)
        ((b < 15)) && { log "machine quiet (busiest CPU ${b}%)"; return 0; }
        log "waiting for a quiet machine: busiest CPU ${b}% busy"
        sleep 10
    done
    log "WARNING: the machine did not get quiet within ${WAIT_QUIET}s; measuring anyway"
}

# ------------------------------------------------------------------ measurement (inside the netns)
measure() {
    RAW="$OUT/raw"; WORK="$OUT/work"
    mkdir -p "$RAW"/{logs,load,streams,open,bodies} "$WORK"/{tmp,secrets/bench-keys,state,state-ready}
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # everything started from here on inherits the niceness
    [[ "$NICE" == 0 ]] || renice -n "$NICE" -p $$ >/dev/null 2>&1 || log "could not renice to $NICE"
    if [[ "$RT" == 1 ]]; then chrt -r -p 10 $$ >/dev/null 2>&1 || log "could not switch to SCHED_RR"; fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    OHA="$TOOLS/bin/oha"; [[ -x "$OHA" ]] || OHA=$(command -v oha) || die "oha not found (run without SKIP_INSTALL=1)"
    local p
    for p in $PORT_MOCK $PORT_PACED $PORT_HOP $PORT_SIDECAR $PORT_ADMIN $PORT_READY $PORT_READY_ADMIN $PORT_FLOOR; do
        port_free "$p" || die "port $p is in use on 127.0.0.1; set PORT_BASE"
    done

    wait_quiet
    SIDECAR_NOTE=""
    if [[ " $TARGETS " == *" sidecar "* ]] && ! sidecar_usable; then
        SIDECAR_NOTE="the sidecar binary ($SIDECAR_BIN) is missing or has no --listen: measured direct and nginx-hop only"
        log "WARNING: $SIDECAR_NOTE"
        TARGETS=$(echo " $TARGETS " | sed 's/ sidecar / /; s/^ *//; s/ *$//')
    fi
    if [[ " $TARGETS " == *" hyper-floor "* && ! -x "$FLOOR_BIN" ]]; then
        log "WARNING: $FLOOR_BIN is missing: not measuring hyper-floor"
        TARGETS=$(echo " $TARGETS " | sed 's/ hyper-floor / /; s/^ *//; s/ *$//')
    fi

    python3 "$BENCH_DIR/make_bodies.py" "$RAW/bodies" >/dev/null
    sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@PACED_PORT@/$PORT_PACED/g" "$BENCH_DIR/nginx/mock.conf.in" >"$WORK/mock.conf"
    sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@HOP_PORT@/$PORT_HOP/g" "$BENCH_DIR/nginx/hop.conf.in" >"$WORK/hop.conf"
    sed "s/@MOCK_PORT@/$PORT_MOCK/g" "$BENCH_DIR/policy.yaml.in" >"$WORK/policy.yaml"
    printf 'sk-bench-provider-key' >"$WORK/secrets/bench-keys/openai"
    SIDECAR_CMD=("$SIDECAR_BIN" --policy-file "$WORK/policy.yaml" --secrets-dir "$WORK/secrets"
                 --namespace bench --labels app=bench --threads 1)

    {
        echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
        echo "kernel=$(uname -r)"
        echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "busiest_cpu_before_pct=$(cpus_busy_pct)"
        echo "nice=$NICE"
        echo "scheduling=$(chrt -p $$ 2>/dev/null | sed -n 's/.*policy: //p' | head -1) (RT=$RT)"
        echo "clk_tck=$(getconf CLK_TCK)"
        echo "netns=${BENCH_NETNS:-host loopback}"
        echo "pinning=proxy under test on CPU $PROXY_CPU; load generator, mock and probes on CPU $LOAD_CPU"
        echo "oha=$("$OHA" --version 2>/dev/null | head -1)"
        echo "nginx=$("$NGINX" -v 2>&1 | sed 's/.*: //')"
        echo "python=$(python3 --version 2>&1)"
        echo "targets=$TARGETS"
        echo "sidecar_bin=$SIDECAR_BIN"
        echo "sidecar_version=$(sidecar_usable && "$SIDECAR_BIN" --version 2>/dev/null | head -1 || echo -)"
        echo "sidecar_built=$(sidecar_usable && date -u -r "$SIDECAR_BIN" +%Y-%m-%dT%H:%M:%SZ || echo -)"
        echo "git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (work tree modified)')"
        echo "sidecar_note=$SIDECAR_NOTE"
        echo "floor_bin=$FLOOR_BIN"
        echo "sidecar_state_dir=$([[ "$SIDECAR_STATE" == 1 ]] && echo yes || echo 'no (SIDECAR_STATE=0: ledger in memory only)')"
        echo "quick=$QUICK"
        echo "settings=DURATION=$DURATION RATES=\"$RATES\" RATES_LARGE=\"$RATES_LARGE\" CONC=$CONC SAT_DURATION=$SAT_DURATION SAT_CONC=$SAT_CONC C1_REQUESTS=$C1_REQUESTS C1_LARGE_REQUESTS=$C1_LARGE_REQUESTS STREAM_N=$STREAM_N IDLE_N=$IDLE_N IDLE_GAP_MS=$IDLE_GAP_MS PACED_N=$PACED_N PACED_CHUNKS=$PACED_CHUNKS PACED_INTERVAL_MS=$PACED_INTERVAL_MS OPEN_STREAMS=$OPEN_STREAMS OPEN_CHUNKS=$OPEN_CHUNKS OPEN_INTERVAL_MS=$OPEN_INTERVAL_MS READY_TRIALS=$READY_TRIALS"
        echo "body_small_bytes=$(stat -c %s "$RAW/bodies/small.json")"
        echo "body_large_bytes=$(stat -c %s "$RAW/bodies/large.json")"
    } >"$RAW/info.env"

    log "starting the fake provider: paced SSE server and nginx mock (CPU $LOAD_CPU)"
    start paced "$LOAD_CPU" python3 "$BENCH_DIR/paced_upstream.py" "$PORT_PACED" "$PACED_CHUNKS" "$PACED_INTERVAL_MS"
    start mock "$LOAD_CPU" "$NGINX" -p "$WORK" -c "$WORK/mock.conf"
    log "starting the nginx hop (1 worker, CPU $PROXY_CPU)"
    start hop "$PROXY_CPU" "$NGINX" -p "$WORK" -c "$WORK/hop.conf"
    wait_http "http://127.0.0.1:$PORT_PACED/health" 20 || die "paced upstream did not start (see $RAW/logs/paced.log)"
    wait_http "http://127.0.0.1:$PORT_MOCK/health" 20 || die "nginx mock did not start (see $RAW/logs/mock.log)"
    wait_http "http://127.0.0.1:$PORT_HOP/health" 20 || die "nginx hop did not start (see $RAW/logs/hop.log)"
    track_children "$PID_mock"; track_children "$PID_hop"
    if [[ " $TARGETS " == *" hyper-floor "* ]]; then
        log "starting hyper-floor (1 worker thread, CPU $PROXY_CPU)"
        start hyper-floor "$PROXY_CPU" "$FLOOR_BIN" "127.0.0.1:$PORT_FLOOR" "http://127.0.0.1:$PORT_MOCK" 1
        wait_http "http://127.0.0.1:$PORT_FLOOR/health" 20 || die "hyper-floor did not start (see $RAW/logs/hyper-floor.log)"
    fi

    [[ "$SKIP_READY" == 1 ]] || ready_checks

    if [[ " $TARGETS " == *" sidecar "* ]]; then
        log "starting the sidecar (--threads 1, CPU $PROXY_CPU)"
        local state=(--state-dir "$WORK/state")
        [[ "$SIDECAR_STATE" == 1 ]] || state=()
        start sidecar "$PROXY_CPU" "${SIDECAR_CMD[@]}" "${state[@]}" \
            --listen "127.0.0.1:$PORT_SIDECAR" --admin-listen "127.0.0.1:$PORT_ADMIN"
        wait_http "http://127.0.0.1:$PORT_ADMIN/readyz" 30 \
            || { tail -20 "$RAW/logs/sidecar.log" >&2; die "sidecar not ready"; }
    fi
    sleep 1
    local tgt
    : >"$RAW/rss.tsv"
    for tgt in $TARGETS; do
        [[ $tgt == direct ]] && continue
        printf '%s\tidle_start\t%s\n' "$tgt" "$(proc_once "$(pid_of "$tgt")")" >>"$RAW/rss.tsv"
    done
    : >"$RAW/smoke.tsv"
    for tgt in $TARGETS; do smoke "$tgt"; done

    : >"$RAW/load/index.tsv"
    local scen all
    all=$(scenario_list)
    [[ -n "$SCENARIOS" ]] && all=$SCENARIOS
    local warmed=""
    for scen in $all; do
        local size=${scen%%-*}
        if [[ " $warmed " != *" $size "* ]]; then
            log "warm-up ($size body)"
            warm_up "$([[ $size == s1k ]] && echo "$RAW/bodies/small.json" || echo "$RAW/bodies/large.json")"
            warmed="$warmed $size"
        fi
        for tgt in $TARGETS; do run_scenario "$scen" "$tgt"; done
    done
    rm -f "$RAW/load/warmup.json" "$RAW/load/warmup.err"

    [[ "$SKIP_STREAMS" == 1 ]] || streams
    [[ "$SKIP_OPEN" == 1 ]] || open_streams

    sleep 2
    for tgt in $TARGETS; do
        [[ $tgt == direct ]] && continue
        printf '%s\tidle_end\t%s\n' "$tgt" "$(proc_once "$(pid_of "$tgt")")" >>"$RAW/rss.tsv"
    done
    if [[ " $TARGETS " == *" sidecar "* ]]; then
        curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/ledger" >"$RAW/sidecar-ledger.json" || true
        curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" >"$RAW/sidecar-metrics.txt" || true
        echo "ledger_dir_bytes=$(du -sb "$WORK/state" 2>/dev/null | cut -f1)" >>"$RAW/info.env"
        # what the sidecar logged while measured: an error path taken per request costs CPU
        # and latency, and the numbers then describe that path, not the normal one
        local plain="$RAW/logs/sidecar.plain.log"
        sed 's/\x1b\[[0-9;]*m//g' "$RAW/logs/sidecar.log" >"$plain" 2>/dev/null || true
        {
            echo "sidecar_log_errors=$(grep -c ' ERROR ' "$plain" || true)"
            echo "sidecar_log_warnings=$(grep -c ' WARN ' "$plain" || true)"
            echo "sidecar_log_first_error=$(grep -m1 ' ERROR ' "$plain" | cut -c1-240 | sed 's/ record=.*//')"
        } >>"$RAW/info.env"
        rm -f "$plain"
        gzip -f "$RAW/logs/sidecar.log" 2>/dev/null || true
    fi
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/info.env"
    log "measurements done; writing the report"
    python3 "$BENCH_DIR/report.py" "$OUT" >"$OUT/report.md"
    cat "$OUT/report.md"
    log "report: $OUT/report.md"
}

# ------------------------------------------------------------------ main
if [[ "${BENCH_INNER:-0}" == 1 ]]; then
    ip link set lo up 2>/dev/null || true
    measure
    exit 0
fi

export OUT=${OUT:-$BENCH_DIR/out/$(date +%Y%m%d-%H%M%S)}
setup
mkdir -p "$OUT"
if [[ "${NO_NETNS:-0}" != 1 ]] && command -v unshare >/dev/null && command -v ip >/dev/null \
   && unshare -n true 2>/dev/null; then
    log "measuring in a private network namespace (loopback only); output in $OUT"
    # The inner run stops every process it started (by PID) before it exits; the namespace
    # goes away with its last process.
    exec env BENCH_INNER=1 BENCH_NETNS="private (unshare -n), loopback only" TARGETS="$TARGETS" \
        unshare -n bash "$0" "$@"
else
    log "no private network namespace: measuring on the host's loopback; output in $OUT"
    measure
fi
