#!/usr/bin/env bash
# What budgets, rate limits and the durable ledger cost: the same warden binary three times,
# `plain` without policies, `checks` with a per-key budget, a team budget and a per-key rate
# limit (all three limits) kept in memory, and `ledger` with the same and a redb ledger
# (every request is priced, so every one is a committed settlement), driven by oha at a fixed 1,000 requests per second over 32 connections, in
# interleaved rounds. Reports CPU per request (utime+stime over the responses) and p50/p99
# to the end of the response, as medians over the rounds.
#
# Usage: benches/budget.sh [WARDEN_BIN]     ROUNDS=3 SECONDS_RUN=10 RATE=1000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} SECONDS_RUN=${SECONDS_RUN:-10} RATE=${RATE:-1000}
OUT=bench-results/budget
MOCK_PORT=18601
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
[ $# -gt 0 ] || cargo build --release --quiet --bin warden
W=${1:-target/release/warden}
rm -rf "$OUT"; mkdir -p "$OUT/plain/policies" "$OUT/checks/policies" "$OUT/ledger/policies"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)
port=18610
for variant in plain checks ledger; do
  extra=""
  [ $variant != plain ] && extra='prices: { mock: { input: 0.15, output: 0.60 } }'
  [ $variant = ledger ] && extra="$extra
ledger: { path: spend.redb }"
  cat >"$OUT/$variant/proxy.yaml" <<YAML
server: { listen: "127.0.0.1:$port" }
admin: { listen: "127.0.0.1:$((port + 1))" }
providers:
  - { name: up, kind: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: "\${BENCH_UPSTREAM_KEY}" }
routes:
  - { model: "mock-*", provider: up }
keys:
  - { name: demo, sha256: 8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e, team: demo }
policies: { dir: policies, watch: false }
$extra
YAML
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
  (cd "$OUT/$variant" && BENCH_UPSTREAM_KEY=sk-bench exec "$OLDPWD/$W" serve --config proxy.yaml >warden.log 2>&1) &
  PID[$variant]=$!; PORT[$variant]=$port; pids+=($!)
  port=$((port + 2))
done
sleep 1
BODY='{"model":"mock-1","max_tokens":100,"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Summarise the benefits of a reverse proxy for LLM APIs in one paragraph, please."}]}'
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for variant in plain checks ledger; do
    before=$(ticks "${PID[$variant]}")
    json=$(oha -c 32 -q "$RATE" -z "${SECONDS_RUN}s" --no-tui --output-format json -m POST \
      -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' -H 'x-mock: tokens=50' \
      -d "$BODY" "http://127.0.0.1:${PORT[$variant]}/v1/chat/completions")
    after=$(ticks "${PID[$variant]}")
    python3 - "$variant" "$((after - before))" "$HZ" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
variant, ticks, hz, raw = sys.argv[1:]
d = json.loads(raw)
ok = int(d.get("statusCodeDistribution", {}).get("200", 0))
p = d["latencyPercentiles"]
print(f"{variant}\t{int(ticks) / int(hz) * 1e6 / max(ok, 1):.1f}\t{p['p50'] * 1000:.3f}\t{p['p99'] * 1000:.3f}\t{ok}")
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
print(f"\nbudget and rate checks with reservation: {med('checks', 1) - med('plain', 1):+.1f} µs CPU, "
      f"{med('checks', 3) - med('plain', 3):+.3f} ms p99 per request")
print(f"the ledger's group commit on top: {med('ledger', 1) - med('checks', 1):+.1f} µs CPU, "
      f"{med('ledger', 3) - med('checks', 3):+.3f} ms p99 per request")
PY
