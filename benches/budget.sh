#!/usr/bin/env bash
# What budgets, rate limits and the durable ledger cost: the same warden binary three times,
# `plain` without policies, `checks` with a per-key budget, a team budget and a per-key rate
# limit (all three limits) kept in memory, and `ledger` with the same and a redb ledger
# (every request is priced, so every one is a committed settlement), driven by oha at a fixed 1,000 requests per second over 32 connections, in
# interleaved rounds (the order reversed every other round). Reports CPU per request (time on CPU of all threads, from schedstat, over the responses) and p50/p99
# to the end of the response, as medians over the rounds.
#
# Usage: benches/budget.sh [WARDEN_BIN]     ROUNDS=3 SECONDS_RUN=10 RATE=1000
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${ROUNDS:-3} SECONDS_RUN=${SECONDS_RUN:-10} RATE=${RATE:-1000}
OUT=bench-results/budget
MOCK_PORT=18601
# The proxy on one core, the load and the mock on the other: the variants then differ by
# their own work, not by where the scheduler happened to put them (PIN=1; off by default:
# pinned runs here were not steadier).
PROXY_CPU="" LOAD_CPU=""
if [ "${PIN:-0}" = 1 ] && [ "$(nproc)" -ge 2 ]; then PROXY_CPU="taskset -c 1" LOAD_CPU="taskset -c 0"; fi
bench_begin "$@"
mkdir -p "$OUT/plain/policies" "$OUT/checks/policies" "$OUT/ledger/policies"
$LOAD_CPU "$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)
port=18610
for variant in plain checks ledger; do
  extra=""
  [ $variant != plain ] && extra='prices: { mock: { input: 0.15, output: 0.60 } }'
  [ $variant = ledger ] && extra="$extra
ledger: { path: spend.redb }"
  { bench_yaml $port $MOCK_PORT; echo "$extra"; } >"$OUT/$variant/proxy.yaml"
  port=$((port + 2))
done
cat >"$OUT/checks/policies/caps.yaml" <<'YAML'
policies:
  - name: caps
    budgets:
      - { name: per-key-daily, per: key, window: day, usd: 1000000 }
      - { name: team-monthly, per: team, window: month, usd: 10000000, tokens: 100000000000 }
    rate_limits:
      - { per: key, requests_per_minute: 10000000, tokens_per_minute: 100000000000, max_concurrent: 1000 }
YAML
cp "$OUT/checks/policies/caps.yaml" "$OUT/ledger/policies/"
declare -A PID PORT
port=18610
for variant in plain checks ledger; do
  (cd "$OUT/$variant" && BENCH_UPSTREAM_KEY=sk-bench exec $PROXY_CPU "$W" serve --config proxy.yaml >warden.log 2>&1) &
  PID[$variant]=$!; PORT[$variant]=$port; pids+=($!)
  port=$((port + 2))
done
sleep 1
: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order: whatever runs after the ledger's fsyncs (or first) is not always the same.
  order="plain checks ledger"; [ $((round % 2)) = 0 ] && order="ledger checks plain"
  for variant in $order; do
    before=$(cpu_ns "${PID[$variant]}")
    json=$($LOAD_CPU oha -c 32 -q "$RATE" -z "${SECONDS_RUN}s" --no-tui --output-format json -m POST \
      -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' -H 'x-mock: tokens=50' \
      -d "$BODY" "http://127.0.0.1:${PORT[$variant]}/v1/chat/completions")
    after=$(cpu_ns "${PID[$variant]}")
    python3 - "$variant" "$((after - before))" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
variant, ns, raw = sys.argv[1:]
d = json.loads(raw)
ok = int(d.get("statusCodeDistribution", {}).get("200", 0))
p = d["latencyPercentiles"]
print(f"{variant}\t{int(ns) / 1e3 / max(ok, 1):.1f}\t{p['p50'] * 1000:.3f}\t{p['p99'] * 1000:.3f}\t{ok}")
PY
  done
done
python3 - "$OUT/samples.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = lambda v, i: statistics.median(float(r[i]) for r in rows if r[0] == v)
print("| warden | CPU µs/req | p50 ms | p99 ms | 200s per run |")
print("|---|---|---|---|---|")
for v in ("plain", "checks", "ledger"):
    print(f"| {v} | {med(v, 1):.1f} | {med(v, 2):.3f} | {med(v, 3):.3f} | {med(v, 4):.0f} |")
# The machine drifts between rounds more than the variants differ: the deltas are the
# median of each round's own difference (variants of one round run back to back).
col = lambda v, i: [float(r[i]) for r in rows if r[0] == v]
delta = lambda a, b, i: statistics.median(x - y for x, y in zip(col(a, i), col(b, i)))
print(f"\nbudget and rate checks with reservation: {delta('checks', 'plain', 1):+.1f} µs CPU, "
      f"{delta('checks', 'plain', 3):+.3f} ms p99 per request")
print(f"the ledger's group commit on top: {delta('ledger', 'checks', 1):+.1f} µs CPU, "
      f"{delta('ledger', 'checks', 3):+.3f} ms p99 per request")
PY
