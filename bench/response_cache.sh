#!/usr/bin/env bash
# The exact response cache's speed (issue 19 §5 "Speed"): what a memory hit, a miss and the
# cache switched off add to a request, measured in the same run, and instructions per request of
# each (callgrind).
#
# Paths (the same 1 KB non-streaming chat completion from make_bodies.py, over one keep-alive
# connection, `oha -c 1`):
#   direct  client -> the nginx mock (bench/nginx/mock.conf.in): the reference
#   off     client -> sidecar, bench/policy.yaml.in (no `cache`): a normal proxied request
#   miss    client -> sidecar, the same policy with `cache.exact {ttl: 1h, maxEntryBytes: 1}`:
#           every request is keyed (canonical JSON + SHA-256), looked up, not found, forwarded,
#           and its answer, over the 1-byte bound, not stored — so the next one misses again
#   hit     client -> sidecar, `cache.exact {ttl: 1h}`: the first request fills, every later one
#           is answered from memory (keyed, found, replayed; no provider call, a $0 ledger line)
#   redis-hit  client -> sidecar, `cache {backend: redis, redis: {url: redis://127.0.0.1:P},
#           exact: {ttl: 1h}}`: as `hit`, the entry read from a redis-server this script starts
#           (127.0.0.1 in the same network namespace, CPU 0, no persistence): one GET per
#           request over the sidecar's multiplexed connection, for "a Redis hit within ~1 ms
#           more". REDIS=0 leaves it out; REDIS_POLICY=FILE replaces its policy template
#           (@MOCK_PORT@ and @REDIS_PORT@ are filled in)
# Each sidecar runs `--threads 1` on CPU 1 (one at a time is driven; the others idle), with a
# TokenBudget (the bench policy's) and a --state-dir: a miss and `off` reserve, meter, settle and
# write a ledger line; a hit writes its ledger line. The load generator and the mock share CPU 0.
# ROUNDS rounds, each measuring every path once in turn (interleaved, so the paths of a round are
# seconds apart); per round the added p50 (path minus direct) and the ratios hit/off and miss/off
# of the added p50; then the median over the rounds; the same for the p99.
# With CALLGRIND=1 (default), then instructions per request of off, miss and hit with
# bench/callgrind_count.sh (the same rig; counters zeroed after its warm-up), and of redis-hit
# (its own redis-server in callgrind_count.sh's namespace; callgrind counts the sidecar's
# instructions only: redis-server's work and the kernel's loopback TCP are not in the number).
#
# Knobs (env): SIDECAR_BIN=target/release/tokenwarden-sidecar (built by run.sh; not built here)
#   ROUNDS=5 N=2000 (requests per path per round) WARMUP=300 CALLGRIND=1 CG_WARMUP=1000
#   CG_COUNT=2000 REDIS=1 (0 when redis-server is not installed) REDIS_POLICY= PORT_BASE=18480 OUT=bench/out/response-cache-<ts>
#   OHA=bench/.tools/bin/oha (installed by run.sh)
# Output in OUT: summary.txt (the table), rounds.tsv, oha-*.json, count-*/ (callgrind).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=${ROUNDS:-5}
N=${N:-2000}
WARMUP=${WARMUP:-300}
CALLGRIND=${CALLGRIND:-1}
CG_WARMUP=${CG_WARMUP:-1000}
CG_COUNT=${CG_COUNT:-2000}
REDIS_POLICY=${REDIS_POLICY:-}
REDIS=${REDIS:-$(command -v redis-server >/dev/null && echo 1 || echo 0)}
SIDECAR_BIN=${SIDECAR_BIN:-$ROOT/target/release/tokenwarden-sidecar}
PORT_BASE=${PORT_BASE:-18480}
OHA=${OHA:-$BENCH_DIR/.tools/bin/oha}
PORT_MOCK=$((PORT_BASE + 1)); PORT_PACED=$((PORT_BASE + 2)); PORT_REDIS=$((PORT_BASE + 3))

log() { printf '[cache-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# policy templates: the bench policy with a `cache` section (or none) in its RoutingPolicy spec
with_cache() {  # TEMPLATE_OUT CACHE_YAML_OR_EMPTY
    awk -v cache="$2" '
        /^---$/ && !done { if (cache != "") print cache; done = 1 }
        { print }' "$BENCH_DIR/policy.yaml.in" >"$1"
}

if [[ "${CACHE_INNER:-0}" != 1 ]]; then
    [[ -x "$OHA" ]] || { log "oha missing: run bench/run.sh once (it installs oha)"; exit 1; }
    [[ -x "$SIDECAR_BIN" ]] || { log "no sidecar binary at $SIDECAR_BIN (cargo build --release -p tokenwarden-sidecar)"; exit 1; }
    export OUT=${OUT:-$BENCH_DIR/out/response-cache-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    with_cache "$OUT/policy-off.yaml.in" ""
    with_cache "$OUT/policy-miss.yaml.in" $'  cache:\n    exact: {ttl: 1h, maxEntryBytes: 1}'
    with_cache "$OUT/policy-hit.yaml.in" $'  cache:\n    exact: {ttl: 1h}'
    if [[ -n "$REDIS_POLICY" ]]; then
        cp "$REDIS_POLICY" "$OUT/policy-redis-hit.yaml.in"; REDIS=1
    elif [[ "$REDIS" == 1 ]]; then
        # timeout 1s rather than the default 100 ms: under callgrind the sidecar runs ~50x
        # slower; the bound is one timer either way, so the hit's work is the same
        with_cache "$OUT/policy-redis-hit.yaml.in" $'  cache:\n    backend: redis\n    redis: {url: "redis://127.0.0.1:@REDIS_PORT@", timeout: 1s}\n    exact: {ttl: 1h}'
    fi
    CACHE_INNER=1
    export CACHE_INNER SIDECAR_BIN OHA REDIS
    if [[ "${NO_NETNS:-0}" != 1 ]] && unshare -n true 2>/dev/null; then
        unshare -n bash "$0" "$@"
    else
        bash "$0" "$@"
    fi
    if [[ "$CALLGRIND" == 1 ]]; then
        cg_paths=(off miss hit); [[ "$REDIS" == 1 ]] && cg_paths+=(redis-hit)
        for path in "${cg_paths[@]}"; do
            log "callgrind: $path"
            policy="$OUT/policy-$path.yaml.in"
            redis=0; [[ $path == redis-hit ]] && redis=1
            OUT="$OUT/count-$path" POLICY="$policy" WARMUP=$CG_WARMUP REDIS=$redis \
                COUNT=$CG_COUNT IDLE_S=2 PORT_BASE=$((PORT_BASE + 40)) \
                bash "$BENCH_DIR/callgrind_count.sh" >/dev/null
            ir=$(sed -n 's/^ir_per_request=//p' "$OUT/count-$path/summary.txt")
            echo "ir_per_request_$path=$ir" >>"$OUT/summary.txt"
        done
        python3 - "$OUT/summary.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
ir = {k: int(v) for k, v in re.findall(r"^ir_per_request_([\w-]+)=(\d+)$", text, re.M)}
with open(sys.argv[1], "a") as f:
    f.write("\ninstructions per request (callgrind, c=1, after warm-up; the sidecar only):\n")
    for k in ("off", "miss", "hit", "redis-hit"):
        if k in ir:
            d = "" if k == "off" else "  (%+d vs off)" % (ir[k] - ir["off"])
            if k == "redis-hit" and "hit" in ir:
                d += "  (%+d vs hit)" % (ir[k] - ir["hit"])
            f.write("  %-9s %8d%s\n" % (k, ir[k], d))
EOF
    fi
    cat "$OUT/summary.txt"
    log "output in $OUT"
    exit 0
fi

# --- inside the network namespace: the timed paths ---
ip link set lo up 2>/dev/null || true
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT/work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

W="$OUT/work"
mkdir -p "$W"/{tmp,secrets/bench-keys} "$OUT/bodies"
python3 "$BENCH_DIR/make_bodies.py" "$OUT/bodies" >/dev/null
sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@PACED_PORT@/$PORT_PACED/g" "$BENCH_DIR/nginx/mock.conf.in" >"$W/mock.conf"
printf 'sk-bench-provider-key' >"$W/secrets/bench-keys/openai"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
taskset -c 0 "$NGINX" -p "$W" -c "$W/mock.conf" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)

PATHS=(off miss hit)
if [[ "$REDIS" == 1 ]]; then
    PATHS+=(redis-hit)
    mkdir -p "$W/redis"
    taskset -c 0 redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$W/redis" --logfile "$OUT/redis.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        redis-cli -p "$PORT_REDIS" PING 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
fi
declare -A URL
URL[direct]="http://127.0.0.1:$PORT_MOCK/v1/chat/completions"
i=0
for path in "${PATHS[@]}"; do
    port=$((PORT_BASE + 10 + 2 * i)); admin=$((port + 1)); i=$((i + 1))
    mkdir -p "$W/state-$path"
    sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@REDIS_PORT@/$PORT_REDIS/g" "$OUT/policy-$path.yaml.in" \
        >"$W/policy-$path.yaml"
    taskset -c 1 "$SIDECAR_BIN" --policy-file "$W/policy-$path.yaml" --secrets-dir "$W/secrets" \
        --state-dir "$W/state-$path" --namespace bench --labels app=bench --threads 1 \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$OUT/sidecar-$path.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$admin/readyz" && break
        sleep 0.1
    done
    URL[$path]="http://127.0.0.1:$port/v1/chat/completions"
done
oha_args=(--no-tui --output-format json -m POST -H "Content-Type: application/json"
          -H "Authorization: Bearer sk-app-placeholder" -t 60s -c 1 -D "$OUT/bodies/small.json")
load() {  # URL N OUTFILE
    timeout 600 taskset -c 0 "$OHA" "${oha_args[@]}" -n "$2" "$1" >"$3" 2>/dev/null || true
}
# each sidecar answers as its path says (a wrong policy would measure the wrong thing)
for path in "${PATHS[@]}"; do
    load "${URL[$path]}" "$WARMUP" "$OUT/oha-warmup-$path.json"
    want=$path; [[ $path == off ]] && want=none; [[ $path == redis-hit ]] && want=hit
    head=$(curl -s -D - -o /dev/null -H "Content-Type: application/json" \
        -H "Authorization: Bearer sk-app-placeholder" --data-binary @"$OUT/bodies/small.json" \
        "${URL[$path]}" | tr -d '\r')
    got=$(sed -n 's/^x-tokenwarden-cache: //Ip' <<<"$head")
    [[ "$head" == "HTTP/1.1 200"* && "${got:-none}" == "$want" ]] \
        || { log "$path: want a 200 with x-tokenwarden-cache $want, got:"; echo "$head" >&2; exit 1; }
done
load "${URL[direct]}" "$WARMUP" "$OUT/oha-warmup-direct.json"
printf 'round\tpath\tok\tp50_us\tp99_us\n' >"$OUT/rounds.tsv"
for r in $(seq 1 "$ROUNDS"); do
    for path in direct "${PATHS[@]}"; do
        f="$OUT/oha-r$r-$path.json"
        load "${URL[$path]}" "$N" "$f"
        python3 - "$f" "$r" "$path" >>"$OUT/rounds.tsv" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
lp = d.get("latencyPercentilesSuccessful") or d.get("latencyPercentiles") or {}
ok = d.get("statusCodeDistribution", {}).get("200", 0)
print("%s\t%s\t%d\t%.1f\t%.1f" % (sys.argv[2], sys.argv[3], ok, lp["p50"] * 1e6, lp["p99"] * 1e6))
EOF
    done
    log "round $r done"
done
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
    echo "sidecar_bin=$SIDECAR_BIN built $(date -u -r "$SIDECAR_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    echo "rounds=$ROUNDS n=$N c=1 loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/summary.txt"
if [[ "$REDIS" == 1 ]]; then
    keys=$(redis-cli -p "$PORT_REDIS" DBSIZE)
    # the bare GET round trip for comparison: redis-benchmark (C client) on the sidecar's CPU,
    # one connection, SET then GET of one key holding a value the size of the stored entry
    timeout 120 taskset -c 1 redis-benchmark -p "$PORT_REDIS" -c 1 -n 20000 -t set,get -d 1400 --csv \
        >"$OUT/redis-benchmark.csv" 2>/dev/null || true
    {
        echo "redis=$(redis-server --version | cut -d' ' -f1-3) keys=$keys (the sidecar's entry)"
        python3 - "$OUT/redis-benchmark.csv" <<'EOF'
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    if r.get("test") == "GET":
        print("bare GET round trip (redis-benchmark -c 1 -d 1400): p50 %.0f µs, p99 %.0f µs"
              % (float(r["p50_latency_ms"]) * 1e3, float(r["p99_latency_ms"]) * 1e3))
EOF
    } >>"$OUT/summary.txt"
fi
python3 - "$OUT/rounds.tsv" >>"$OUT/summary.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
paths = [p for p in ("off", "miss", "hit", "redis-hit") if any(r["path"] == p for r in rows)]
by = {}
for r in rows:
    by.setdefault(r["round"], {})[r["path"]] = r
ratios = [("hit/off", "hit", "off"), ("miss/off", "miss", "off")]
if "redis-hit" in paths:
    ratios += [("rhit/off", "redis-hit", "off"), ("rhit/hit", "redis-hit", "hit")]
for q in ("p50", "p99"):
    print("\nadded %s over direct (µs) per round, and same-round ratios of the added %s:" % (q, q))
    head = ["round", "direct " + q] + ["+" + p for p in paths] + [n for n, _, _ in ratios]
    if "redis-hit" in paths:
        head.append("rhit-hit")
    print("  " + "  ".join("%10s" % h for h in head))
    cols = {h: [] for h in head[1:]}
    for rnd in sorted(by, key=int):
        b = by[rnd]
        d = float(b["direct"][q + "_us"])
        add = {p: float(b[p][q + "_us"]) - d for p in paths}
        vals = [d] + [add[p] for p in paths] + [add[a] / add[o] for _, a, o in ratios]
        if "redis-hit" in paths:
            vals.append(add["redis-hit"] - add["hit"])
        for h, v in zip(head[1:], vals):
            cols[h].append(v)
        print("  " + "  ".join("%10s" % x for x in [rnd] + ["%.2f" % v if "/" in h else "%.1f" % v
                                                           for h, v in zip(head[1:], vals)]))
    print("  " + "  ".join("%10s" % x for x in ["median"] + ["%.2f" % statistics.median(cols[h]) if "/" in h
                                                            else "%.1f" % statistics.median(cols[h])
                                                            for h in head[1:]]))
print("200s per timed run: min %d, max %d" % (min(int(r["ok"]) for r in rows), max(int(r["ok"]) for r in rows)))
EOF
