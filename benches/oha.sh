#!/usr/bin/env bash
# CPU per request and maximum throughput, warden against nginx, measured side by side with
# oha (32 connections) on loopback, so that the proxies and not the load generator are the
# bottleneck. The upstream is `warden mock`. For each round and workload (non-streamed chat,
# and a 20-event stream) every target runs in turn; the table gives medians over the rounds
# and each target's CPU per request as a ratio of nginx's measured in the same round.
#
# Usage: benches/oha.sh [WARDEN_BIN ...]      (default: target/release/warden)
#   ROUNDS=3 SECONDS_RUN=5 POLICIES="default.yaml rollout-monitor.yaml" benches/oha.sh
# Several binaries (say, a build of an older commit) are measured in the same run.
# Needs oha (`cargo install oha --locked`) and nginx (installed with apt if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

ROUNDS=${ROUNDS:-3}
SECONDS_RUN=${SECONDS_RUN:-5}
POLICIES=${POLICIES:-}
OUT=bench-results/oha
MOCK_PORT=18201 NGINX_PORT=18202 BASE_PORT=18210
mkdir -p "$OUT"

command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
# shellcheck source=benches/nginx.sh
. benches/nginx.sh
nginx_install

cargo build --release --quiet --bin warden
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/warden)
W=target/release/warden

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; nginx_stop "$PWD/$OUT/nginx"; }
trap cleanup EXIT

"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!)

nginx_start "$PWD/$OUT/nginx" $MOCK_PORT $NGINX_PORT

# One warden per binary, each with the same config and policies.
mkdir -p "$OUT/policies"
rm -f "$OUT"/policies/*.yaml
for p in $POLICIES; do cp "policies/$p" "$OUT/policies/"; done
names=(nginx) ports=($NGINX_PORT)
for i in "${!BINS[@]}"; do
  port=$((BASE_PORT + 2 * i))
  # The mock has no price: the shipped daily budget still reserves and settles every
  # request, at cost 0, so a long run never exhausts it.
  { bench_yaml $port $MOCK_PORT; echo "unpriced_models: meter"; } >"$OUT/proxy-$i.yaml"
  BENCH_UPSTREAM_KEY=sk-bench "${BINS[$i]}" serve --config "$OUT/proxy-$i.yaml" >"$OUT/warden-$i.log" 2>&1 &
  pids+=($!)
  names+=("warden[$i]=${BINS[$i]}") ports+=($port)
done
sleep 1

# CPU ticks (utime + stime) of a process and its children threads/workers.
ticks() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
proxy_pids() {
  if [ "$1" = 0 ]; then
    local master; master=$(cat "$OUT/nginx/logs/nginx.pid")
    echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
  else
    echo "${pids[$1]}"
  fi
}
HZ=$(getconf CLK_TCK)
CHAT='{"model":"mock-1","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Summarise the benefits of a reverse proxy for LLM APIs in one paragraph, please."}],"temperature":0.2}'
STREAM=${CHAT%\}}',"stream":true}'

: >"$OUT/samples.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for workload in chat stream; do
    body=$CHAT; mockh="tokens=50"
    [ "$workload" = stream ] && body=$STREAM && mockh="tokens=50,chunks=20"
    for t in "${!names[@]}"; do
      before=$(ticks $(proxy_pids "$t"))
      json=$(oha -c 32 -z "${SECONDS_RUN}s" --no-tui --output-format json -m POST \
        -H 'authorization: Bearer sk-warden-demo' -H 'content-type: application/json' -H "x-mock: $mockh" \
        -d "$body" "http://127.0.0.1:${ports[$t]}/v1/chat/completions")
      after=$(ticks $(proxy_pids "$t"))
      python3 - "$round" "$workload" "$t" "$((after - before))" "$HZ" "$json" >>"$OUT/samples.tsv" <<'PY'
import json, sys
rnd, workload, target, ticks, hz, raw = sys.argv[1:]
d = json.loads(raw)
codes = d.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
total = sum(int(v) for v in codes.values())
rps = d["summary"]["requestsPerSec"] * (ok / total if total else 0)
cpu_us = int(ticks) / int(hz) * 1e6 / ok if ok else float("nan")
print(f"{rnd}\t{workload}\t{target}\t{rps:.0f}\t{cpu_us:.1f}\t{total - ok}")
PY
    done
  done
done

python3 - "$OUT/samples.tsv" "${names[@]}" <<'PY'
import statistics, sys
path, names = sys.argv[1], sys.argv[2:]
rows = [l.split("\t") for l in open(path).read().splitlines()]
print(f"| workload | target | max req/s | share of nginx | CPU µs/req | × nginx CPU | non-200 |")
print("|---|---|---|---|---|---|---|")
for workload in ("chat", "stream"):
    for t, name in enumerate(names):
        mine = [r for r in rows if r[1] == workload and r[2] == str(t)]
        base = {r[0]: r for r in rows if r[1] == workload and r[2] == "0"}
        rps = statistics.median(float(r[3]) for r in mine)
        cpu = statistics.median(float(r[4]) for r in mine)
        share = statistics.median(float(r[3]) / float(base[r[0]][3]) for r in mine)
        ratio = statistics.median(float(r[4]) / float(base[r[0]][4]) for r in mine)
        bad = sum(int(r[5]) for r in mine)
        print(f"| {workload} | {name} | {rps:.0f} | {share:.0%} | {cpu:.1f} | {ratio:.2f}× | {bad} |")
PY
