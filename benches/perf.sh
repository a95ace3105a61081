#!/usr/bin/env bash
# The bench the README's performance table comes from. On loopback against `warden mock`, in
# interleaved rounds (the order reversed every other round), side by side:
#   nginx     a plain keep-alive reverse proxy (the floor);
#   bare      warden without policies, audit, ledger or cache;
#   full      warden with every policy section on: limits, budgets (priced, with the redb
#             ledger), rate limits, sessions, the injection scan (system, user and tool
#             text), request schema rules, the cache, retries and a breaker configured, the
#             audit log capturing text; requests sent with `cache-control: no-cache` (a miss:
#             the answer is fetched and stored again);
#   full-hit  the same warden and request without that header: answered from the cache.
# For each, non-streamed chat (50-token reply) and a 20-event stream:
#   - max: oha, 32 connections, SECONDS_RUN s: throughput, and CPU per request (time on
#     CPU of every thread of the proxy, from schedstat, over its 200 responses);
#   - rate: loadgen (open loop) at RATE req/s for SECONDS_RATE s, also straight to the mock
#     (`direct`): p50, p99 and time to first byte, and what each proxy adds to direct's;
#   - RSS idle and after each max run.
# SOAK_SECONDS=600 then holds `full` at SOAK_RATE req/s (half chat misses, half streams)
# and samples its RSS every 10 s.
#
# Usage: benches/perf.sh [WARDEN_BIN]
#   ROUNDS=3 SECONDS_RUN=5 SECONDS_RATE=10 RATE=200 SOAK_SECONDS=0 SOAK_RATE=500
# Needs oha (`cargo install oha --locked`) and nginx (installed with apt if missing).
# Writes bench-results/perf/ (samples.tsv, summary.md, soak.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
. benches/nginx.sh
ROUNDS=${ROUNDS:-3} SECONDS_RUN=${SECONDS_RUN:-5} SECONDS_RATE=${SECONDS_RATE:-10} RATE=${RATE:-200}
SOAK_SECONDS=${SOAK_SECONDS:-0} SOAK_RATE=${SOAK_RATE:-500}
OUT=bench-results/perf
MOCK_PORT=18901 NGINX_PORT=18902 BARE_PORT=18910 FULL_PORT=18912
bench_begin "$@"
nginx_install
cargo build --release --quiet --example loadgen
LG=$(realpath target/release/examples/loadgen)
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; nginx_stop "$PWD/$OUT/nginx"' EXIT

"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!); MOCK_PID=$!
nginx_start "$PWD/$OUT/nginx" $MOCK_PORT $NGINX_PORT

mkdir -p "$OUT/bare/policies" "$OUT/full/policies"
bench_yaml $BARE_PORT $MOCK_PORT >"$OUT/bare/proxy.yaml"
{
  bench_yaml $FULL_PORT $MOCK_PORT "retries: { max_attempts: 3, deadline: 30s }, breaker: { failures: 5, cool_down: 10s }"
  cat <<'YAML'
prices: { mock: { input: 0.15, output: 0.60 } }
ledger: { path: spend.redb }
audit: { path: audit.jsonl, max_bytes: 104857600, keep: 1 }
cache: { max_bytes: 67108864 }
YAML
} >"$OUT/full/proxy.yaml"
cat >"$OUT/full/policies/request.schema.json" <<'JSON'
{ "type": "object", "required": ["model", "messages"],
  "properties": { "temperature": { "type": "number", "maximum": 1 }, "n": { "const": 1 } } }
JSON
cat >"$OUT/full/policies/everything.yaml" <<'YAML'
policies:
  - name: everything
    description: Every policy section on, at limits the bench never reaches.
    match: {}
    limits:
      max_tokens: { max: 4096, default: 1024, on_exceed: clamp }
      max_n: { max: 4 }
      temperature: { min: 0, max: 2 }
      max_tool_iterations: { max: 10 }
    budgets:
      - { name: per-key-daily, per: key, window: day, usd: 1000000 }
      - { name: team-monthly, per: team, window: month, usd: 10000000, tokens: 100000000000 }
    rate_limits:
      - { per: key, requests_per_minute: 100000000, tokens_per_minute: 100000000000, max_concurrent: 1000 }
    sessions: { max_requests: 100000000, max_tokens: 100000000000, max_duration: 24h }
    injection: { action: flag, threshold: 0.5, scan: [system, user, tool] }
    schema:
      request:
        forbid: [/logit_bias]
        json_schema: request.schema.json
    cache: { ttl: 1h, when: always }
    audit: { capture: 200 }
YAML
(cd "$OUT/bare" && BENCH_UPSTREAM_KEY=sk-bench exec "$W" serve --config proxy.yaml >warden.log 2>&1) &
pids+=($!); BARE_PID=$!
(cd "$OUT/full" && BENCH_UPSTREAM_KEY=sk-bench exec "$W" serve --config proxy.yaml >warden.log 2>&1) &
pids+=($!); FULL_PID=$!
sleep 1
# A port still held by an earlier run would leave one of them dead and the bench measuring
# someone else's process.
for p in $MOCK_PID $BARE_PID $FULL_PID; do kill -0 "$p" || { cat "$OUT"/mock.log "$OUT"/*/warden.log; exit 1; }; done

CHAT=${BODY%\}}',"temperature":0}'
STREAM=${CHAT%\}}',"stream":true}'
url_for() { case $1 in direct) echo $MOCK_PORT;; nginx) echo $NGINX_PORT;; bare) echo $BARE_PORT;; full*) echo $FULL_PORT;; esac; }
pids_for() {
  case $1 in
    direct) echo $MOCK_PID;;
    nginx) local m; m=$(cat "$OUT/nginx/logs/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')";;
    bare) echo $BARE_PID;;
    full*) echo $FULL_PID;;
  esac
}
cpu_all() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ns "$p"))); done; echo $t; }
rss_kb() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/"$p"/status))); done; echo $t; }
cache_header() { [ "$1" = full ] && echo 'cache-control: no-cache' || echo 'x-bench: 1'; }
echo -e "idle\tbare\t$(rss_kb $BARE_PID)\nidle\tfull\t$(rss_kb $FULL_PID)\nidle\tnginx\t$(rss_kb $(pids_for nginx))" >"$OUT/rss.tsv"

# Warm-up: pools, the cache's entries, the lazy parts of the scanner's regexes.
for t in nginx bare full full-hit; do
  for body in "$CHAT" "$STREAM"; do
    oha -c 8 -n 400 --no-tui -m POST -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' \
      -H 'x-mock: tokens=50,chunks=20' -H "$(cache_header $t)" -d "$body" "http://127.0.0.1:$(url_for $t)/v1/chat/completions" >/dev/null
  done
done
echo -e "warm\tbare\t$(rss_kb $BARE_PID)\nwarm\tfull\t$(rss_kb $FULL_PID)" >>"$OUT/rss.tsv"

: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  order="nginx bare full full-hit"; [ $((round % 2)) = 0 ] && order="full-hit full bare nginx"
  for workload in chat stream; do
    body=$CHAT; [ $workload = stream ] && body=$STREAM
    printf '%s' "$body" >"$OUT/body.json"
    for t in $order; do
      ps=$(pids_for $t)
      before=$(cpu_all $ps)
      json=$(oha -c 32 -z "${SECONDS_RUN}s" --no-tui --output-format json -m POST \
        -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' \
        -H 'x-mock: tokens=50,chunks=20' -H "$(cache_header $t)" -d "$body" \
        "http://127.0.0.1:$(url_for $t)/v1/chat/completions")
      after=$(cpu_all $ps)
      python3 - "$round" "$workload" "$t" "$((after - before))" "$(rss_kb $ps)" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
rnd, workload, target, ns, rss, raw = sys.argv[1:]
d = json.loads(raw)
codes = d.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
# oha cancels what is in flight when its time is up ("aborted due to deadline"): not a failure.
bad = sum(int(v) for v in codes.values()) - ok + sum(
    int(v) for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
rps = ok / d["summary"]["total"] if d["summary"]["total"] else 0
print(f"max\t{rnd}\t{workload}\t{target}\t{rps:.0f}\t{int(ns) / 1e3 / max(ok, 1):.1f}\t{rss}\t{bad}")
PY
    done
    for t in direct $order; do
      json=$("$LG" --url "http://127.0.0.1:$(url_for $t)/v1/chat/completions" --body-file "$OUT/body.json" \
        --header 'authorization: Bearer sk-warden-demo' --header 'x-mock: tokens=50,chunks=20' \
        --header "$(cache_header $t)" --connections 16 --rate "$RATE" --seconds "$SECONDS_RATE")
      python3 - "$round" "$workload" "$t" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
rnd, workload, target, raw = sys.argv[1:]
d = json.loads(raw)
print(f"rate\t{rnd}\t{workload}\t{target}\t{d['p50_ms']:.3f}\t{d['p99_ms']:.3f}\t{d['ttfb_p50_ms']:.3f}\t{d['errors']}")
PY
    done
  done
  echo "round $round/$ROUNDS done" >&2
done

if [ "$SOAK_SECONDS" -gt 0 ]; then
  echo "soak: full at $SOAK_RATE req/s for $SOAK_SECONDS s" >&2
  : >"$OUT/soak.tsv"
  soakers=()
  for workload in chat stream; do
    body=$CHAT; [ $workload = stream ] && body=$STREAM
    oha -c 16 -q $((SOAK_RATE / 2)) -z "${SOAK_SECONDS}s" --no-tui --output-format json -m POST \
      -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' \
      -H 'x-mock: tokens=50,chunks=20' -H 'cache-control: no-cache' -d "$body" \
      "http://127.0.0.1:$FULL_PORT/v1/chat/completions" >"$OUT/soak-$workload.json" &
    soakers+=($!)
  done
  started=$(date +%s)
  while [ $(($(date +%s) - started)) -lt "$SOAK_SECONDS" ]; do
    echo -e "$(($(date +%s) - started))\t$(rss_kb $FULL_PID)" >>"$OUT/soak.tsv"
    sleep 10
  done
  wait "${soakers[@]}" || true
  echo -e "$(($(date +%s) - started))\t$(rss_kb $FULL_PID)" >>"$OUT/soak.tsv"
fi

python3 - "$OUT" "$RATE" <<'PY' | tee "$OUT/summary.md"
import os, statistics, sys
out, rate = sys.argv[1], sys.argv[2]
rows = [l.split("\t") for l in open(f"{out}/samples.tsv").read().splitlines()]
mx = [r for r in rows if r[0] == "max"]
rt = [r for r in rows if r[0] == "rate"]
med = statistics.median
def by_round(kind, workload, target, col):
    return {r[1]: float(r[col]) for r in kind if r[2] == workload and r[3] == target}
targets = ("nginx", "bare", "full", "full-hit")
print("| workload | target | CPU µs/req | × nginx's CPU | max req/s | share of nginx's | "
      f"added p50 ms @{rate}/s | added p99 ms | added TTFB ms | RSS MiB under load | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in ("chat", "stream"):
    for t in targets:
        cpu, base_cpu = by_round(mx, w, t, 5), by_round(mx, w, "nginx", 5)
        rps, base_rps = by_round(mx, w, t, 4), by_round(mx, w, "nginx", 4)
        added = lambda col: med(by_round(rt, w, t, col)[k] - by_round(rt, w, "direct", col)[k]
                               for k in by_round(rt, w, t, col))
        rss = med(float(r[6]) / 1024 for r in mx if r[2] == w and r[3] == t)
        bad = sum(int(r[7]) for r in mx + rt if r[2] == w and r[3] == t)
        print(f"| {w} | {t} | {med(cpu.values()):.1f} | {med(cpu[k] / base_cpu[k] for k in cpu):.2f}× | "
              f"{med(rps.values()):.0f} | {med(rps[k] / base_rps[k] for k in rps):.0%} | "
              f"{added(4):+.3f} | {added(5):+.3f} | {added(6):+.3f} | {rss:.1f} | {bad} |")
print()
hit = by_round(mx, "chat", "full-hit", 4); miss = by_round(mx, "chat", "full", 4)
print(f"A cache hit serves {med(hit[k] / miss[k] for k in hit):.1f}× the throughput of a miss (chat, same round).")
rss = {(r[0], r[1]): int(r[2]) / 1024 for r in (l.split("\t") for l in open(f"{out}/rss.tsv").read().splitlines())}
print(f"Idle RSS: bare {rss[('idle', 'bare')]:.1f} MiB, full {rss[('idle', 'full')]:.1f} MiB at start, "
      f"{rss[('warm', 'full')]:.1f} MiB after warm-up; nginx (master and workers) {rss[('idle', 'nginx')]:.1f} MiB.")
if os.path.exists(f"{out}/soak.tsv"):
    soak = [l.split("\t") for l in open(f"{out}/soak.tsv").read().splitlines()]
    kb = [int(s[1]) / 1024 for s in soak]
    print(f"Soak: {soak[-1][0]} s, RSS {kb[0]:.1f} MiB at the start, {max(kb):.1f} MiB at most, {kb[-1]:.1f} MiB at the end "
          f"({len(kb)} samples).")
PY
