#!/usr/bin/env bash
# What the resilience machinery and the audit log cost on the success path: the same warden
# binary three times against the mock server, driven by oha at full speed over 32
# connections, in interleaved rounds (the order reversed every other round): `plain`
# without retries or audit; `retries` with retries and a circuit breaker configured (every
# request succeeds at once, so this is the machinery's own cost); `audit` with the audit
# log on. Reports CPU per request (time on CPU of all threads, from schedstat) and
# throughput, as medians over the rounds, and each variant's difference from `plain`.
#
# Usage: benches/resilience.sh [WARDEN_BIN]     ROUNDS=5 SECONDS_RUN=5
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${ROUNDS:-5} SECONDS_RUN=${SECONDS_RUN:-5}
OUT=bench-results/resilience
MOCK_PORT=18801
bench_begin "$@"
mkdir -p "$OUT"
"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)
declare -A PID PORT
port=18810
for variant in plain retries audit; do
  mkdir -p "$OUT/$variant/policies"
  upstream="" extra=""
  [ $variant = retries ] && upstream="retries: { max_attempts: 3, deadline: 30s }, breaker: { failures: 5, cool_down: 10s }"
  [ $variant = audit ] && extra="audit: { path: audit.jsonl, max_bytes: 104857600, keep: 1 }"
  { bench_yaml $port $MOCK_PORT "$upstream"; echo "$extra"; } >"$OUT/$variant/proxy.yaml"
  (cd "$OUT/$variant" && BENCH_UPSTREAM_KEY=sk-bench exec "$W" serve --config proxy.yaml >warden.log 2>&1) &
  PID[$variant]=$!; PORT[$variant]=$port; pids+=($!)
  port=$((port + 2))
done
sleep 1
: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  order="plain retries audit"; [ $((round % 2)) = 0 ] && order="audit retries plain"
  for variant in $order; do
    before=$(cpu_ns "${PID[$variant]}")
    json=$(oha -c 32 -z "${SECONDS_RUN}s" --no-tui --output-format json -m POST \
      -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' -H 'x-mock: tokens=50' \
      -d "$BODY" "http://127.0.0.1:${PORT[$variant]}/v1/chat/completions")
    after=$(cpu_ns "${PID[$variant]}")
    python3 - "$variant" "$((after - before))" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
variant, ns, raw = sys.argv[1:]
d = json.loads(raw)
ok = int(d.get("statusCodeDistribution", {}).get("200", 0))
print(f"{variant}\t{int(ns) / 1e3 / max(ok, 1):.1f}\t{d['summary']['requestsPerSec']:.0f}\t{ok}")
PY
  done
done
python3 - "$OUT/samples.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
col = lambda v, i: [float(r[i]) for r in rows if r[0] == v]
med = lambda v, i: statistics.median(col(v, i))
print("| warden | CPU µs/req | req/s | against plain |")
print("|---|---|---|---|")
for v in ("plain", "retries", "audit"):
    print(f"| {v} | {med(v, 1):.1f} | {med(v, 2):.0f} | {med(v, 1) - med('plain', 1):+.1f} µs |")
PY
