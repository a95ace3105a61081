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
. benches/common.sh
ROUNDS=${ROUNDS:-3} SECONDS_RUN=${SECONDS_RUN:-5} RATE=${RATE:-200}
OUT=bench-results/cache
MOCK_PORT=18901 PORT=18910
bench_begin "$@"
mkdir -p "$OUT/policies"
"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)
bench_yaml $PORT $MOCK_PORT >"$OUT/proxy.yaml"
cp policies/cache.yaml "$OUT/policies/"
(cd "$OUT" && BENCH_UPSTREAM_KEY=sk-bench exec "$W" serve --config proxy.yaml >warden.log 2>&1) &
pids+=($!)
sleep 1
# The shared chat body, deterministic (temperature 0) so that the cache policy applies.
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
warden_ns, mock_ns = int(sys.argv[2]), int(sys.argv[3])
per = lambda ns: ns / 1e3 / max(ok, 1)
print(f"{sys.argv[1]}\t{rps:.0f}\t{p['p50'] * 1e6:.0f}\t{p['p99'] * 1e6:.0f}\t{total - ok}\t{per(warden_ns):.1f}\t{per(mock_ns):.1f}")
PY
WPID=${pids[1]} MPID=${pids[0]}
run() { # name, x-mock directives, oha arguments...
  local name=$1 mock=$2; shift 2
  local w0 m0 json
  w0=$(cpu_ns "$WPID") m0=$(cpu_ns "$MPID")
  json=$(oha --no-tui --output-format json -H 'content-type: application/json' -H "x-mock: $mock" "$@")
  echo "$json" | python3 "$OUT/parse.py" "$name" $(($(cpu_ns "$WPID") - w0)) $(($(cpu_ns "$MPID") - m0))
}
fixed() { run "$1" tokens=50 -q "$RATE" -c 4 -z "${SECONDS_RUN}s" "${@:2}"; }
full() { run "$1" "$2" -c 32 -z "${SECONDS_RUN}s" "${@:3}"; }

: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  {
    fixed mock -m POST -d "$BODY" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    fixed plain -m POST -H "$PLAIN" -d "$BODY" "$API/v1/chat/completions"
    fixed hit -m POST -H "$DEMO" -d "$BODY" "$API/v1/chat/completions"
    fixed models -H "$DEMO" "$API/v1/models"
    full max-hit tokens=50 -m POST -H "$DEMO" -d "$BODY" "$API/v1/chat/completions"
    full max-miss tokens=50 -m POST -H "$DEMO" -H 'cache-control: no-cache' -d "$BODY" "$API/v1/chat/completions"
    full max-plain tokens=50 -m POST -H "$PLAIN" -d "$BODY" "$API/v1/chat/completions"
    full max-miss-20ms "tokens=50,delay=20ms" -m POST -H "$DEMO" -H 'cache-control: no-cache' -d "$BODY" "$API/v1/chat/completions"
  } >>"$OUT/samples.tsv"
done
python3 - "$OUT/samples.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = lambda name, i: statistics.median(float(r[i]) for r in rows if r[0] == name)
bad = sum(int(r[4]) for r in rows)
print("| at a fixed rate | p50 µs | p99 µs | warden CPU µs/req |")
print("|---|---|---|---|")
for n, label in (("mock", "the mock alone"), ("plain", "warden, no cache policy"), ("hit", "warden, cache hit"),
                 ("models", "warden answering itself (GET /v1/models)")):
    cpu = f"{med(n, 5):.1f}" if n != "mock" else "-"
    print(f"| {label} | {med(n, 2):.0f} | {med(n, 3):.0f} | {cpu} |")
fixed = med("plain", 2) - med("mock", 2)
print(f"\nwarden's fixed cost (plain − mock, p50): {fixed:.0f} µs; a hit: {med('hit', 2):.0f} µs "
      f"({med('hit', 2) - fixed:+.0f} µs against the fixed cost, {med('hit', 2) - med('models', 2):+.0f} µs against GET /v1/models)")
print("\n| at full speed (32 connections) | req/s | warden CPU µs/req | mock CPU µs/req |")
print("|---|---|---|---|")
for n, label in (("max-hit", "cache hits"), ("max-miss", "cache misses (no-cache: upstream + store)"),
                 ("max-plain", "no cache policy"), ("max-miss-20ms", "cache misses, the mock answering in 20 ms")):
    print(f"| {label} | {med(n, 1):.0f} | {med(n, 5):.1f} | {med(n, 6):.1f} |")
print(f"\nhits serve {med('max-hit', 1) / med('max-miss', 1):.1f}× the throughput of misses against the instant mock "
      f"(all on 2 cores with oha), {med('max-hit', 1) / med('max-miss-20ms', 1):.1f}× against a 20 ms mock; "
      f"a miss costs warden and the mock {(med('max-miss', 5) + med('max-miss', 6)) / med('max-hit', 5):.1f}× the CPU of a hit; "
      f"non-200 answers: {bad}")
PY
