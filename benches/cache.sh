#!/usr/bin/env bash
# What a cache hit costs and what it buys, against `warden mock` on loopback:
#   - p50 and p99 latency at a fixed rate (200 req/s, 4 connections) of: the mock directly;
#     warden with no cache policy (the plain proxy); a cache hit; and `GET /v1/models`,
#     which warden answers itself (its floor: accept, parse, authenticate, answer). The
#     proxy's fixed cost is plain − mock; a hit should cost at most that plus 30 µs.
#   - maximum throughput (oha, 32 connections) of hits, of misses (`cache-control: no-cache`:
#     every request goes upstream and its answer is stored again) and of the plain proxy.
# One warden serves all cases: key `demo` is in the cached team, key `public-web` is not.
# Rounds are interleaved; the table gives medians.
#
# Usage: benches/cache.sh [WARDEN_BIN]      ROUNDS=3 SECONDS_RUN=5 RATE=200
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} SECONDS_RUN=${SECONDS_RUN:-5} RATE=${RATE:-200}
OUT=bench-results/cache
MOCK_PORT=18901 PORT=18910
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
[ $# -gt 0 ] || cargo build --release --quiet --bin warden
W=$(realpath "${1:-target/release/warden}")
rm -rf "$OUT"; mkdir -p "$OUT/policies"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)
cat >"$OUT/proxy.yaml" <<YAML
server: { listen: "127.0.0.1:$PORT" }
admin: { listen: "127.0.0.1:$((PORT + 1))" }
providers:
  - { name: up, kind: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: "\${BENCH_UPSTREAM_KEY}" }
routes:
  - { model: "mock-*", provider: up }
keys:
  - { name: demo, sha256: 8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e, team: demo }
  - { name: public-web, sha256: 76dfd30f65102d5924e08d70fca43cfc1ef108ba1ef51527fe477336a06d0f40, team: public }
policies: { dir: policies, watch: false }
YAML
cp policies/cache.yaml "$OUT/policies/"
(cd "$OUT" && BENCH_UPSTREAM_KEY=sk-bench exec "$W" serve --config proxy.yaml >warden.log 2>&1) &
pids+=($!)
sleep 1
BODY='{"model":"mock-1","temperature":0,"max_tokens":100,"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Summarise the benefits of a reverse proxy for LLM APIs in one paragraph, please."}]}'
DEMO='authorization: Bearer sk-warden-demo' PLAIN='authorization: Bearer sk-warden-public-demo'
API=http://127.0.0.1:$PORT
# Warm the entry the hits read.
curl -s -o /dev/null -H "$DEMO" -H 'x-mock: tokens=50' -d "$BODY" "$API/v1/chat/completions"

cat >"$OUT/parse.py" <<'PY'
import json, sys
d = json.load(sys.stdin)
codes = d.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
total = sum(int(v) for v in codes.values())
p = d["latencyPercentiles"]
rps = d["summary"]["requestsPerSec"]
print(f"{sys.argv[1]}\t{rps:.0f}\t{p['p50'] * 1e6:.0f}\t{p['p99'] * 1e6:.0f}\t{total - ok}")
PY
run() { # name, oha arguments...
  local name=$1; shift
  oha --no-tui --output-format json -H 'content-type: application/json' -H 'x-mock: tokens=50' "$@" \
    | python3 "$OUT/parse.py" "$name"
}
fixed() { run "$1" -q "$RATE" -c 4 -z "${SECONDS_RUN}s" "${@:2}"; }
full() { run "$1" -c 32 -z "${SECONDS_RUN}s" "${@:2}"; }

: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  {
    fixed mock -m POST -d "$BODY" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    fixed plain -m POST -H "$PLAIN" -d "$BODY" "$API/v1/chat/completions"
    fixed hit -m POST -H "$DEMO" -d "$BODY" "$API/v1/chat/completions"
    fixed models -H "$DEMO" "$API/v1/models"
    full max-hit -m POST -H "$DEMO" -d "$BODY" "$API/v1/chat/completions"
    full max-miss -m POST -H "$DEMO" -H 'cache-control: no-cache' -d "$BODY" "$API/v1/chat/completions"
    full max-plain -m POST -H "$PLAIN" -d "$BODY" "$API/v1/chat/completions"
  } >>"$OUT/samples.tsv"
done
python3 - "$OUT/samples.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = lambda name, i: statistics.median(float(r[i]) for r in rows if r[0] == name)
bad = sum(int(r[4]) for r in rows)
print("| at a fixed rate | p50 µs | p99 µs |")
print("|---|---|---|")
for n, label in (("mock", "the mock alone"), ("plain", "warden, no cache policy"), ("hit", "warden, cache hit"),
                 ("models", "warden answering itself (GET /v1/models)")):
    print(f"| {label} | {med(n, 2):.0f} | {med(n, 3):.0f} |")
fixed = med("plain", 2) - med("mock", 2)
print(f"\nwarden's fixed cost (plain − mock, p50): {fixed:.0f} µs; a hit: {med('hit', 2):.0f} µs "
      f"({med('hit', 2) - fixed:+.0f} µs against the fixed cost, {med('hit', 2) - med('models', 2):+.0f} µs against GET /v1/models)")
print("\n| at full speed (32 connections) | req/s |")
print("|---|---|")
for n, label in (("max-hit", "cache hits"), ("max-miss", "cache misses (no-cache: upstream + store)"), ("max-plain", "no cache policy")):
    print(f"| {label} | {med(n, 1):.0f} |")
print(f"\nhits serve {med('max-hit', 1) / med('max-miss', 1):.1f}× the throughput of misses; non-200 answers: {bad}")
PY
