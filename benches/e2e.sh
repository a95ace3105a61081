#!/usr/bin/env bash
# End-to-end benchmark on loopback: the mock provider called directly (the floor), nginx as a
# plain reverse proxy in front of it (the floor for "a proxy that does nothing"), and warden in
# front of the same mock. For each target: non-streamed chat (~300-byte request, 50-token
# reply) and streamed chat (20 chunks): maximum throughput at 32 connections, proxy CPU time
# per request at that throughput, p50/p99 at a fixed 200 req/s, time to first streamed byte,
# and RSS idle and under load. ROUNDS rounds, targets interleaved; medians with min-max.
#
# Usage: benches/e2e.sh            (ROUNDS=5 SECONDS_MAX=5 SECONDS_RATE=10 by default;
#        BENCH_POLICIES="default.yaml rollout-monitor.yaml" to run warden with shipped policies)
# Needs root for `apt-get install nginx` if nginx is missing. Writes bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECONDS_MAX=${SECONDS_MAX:-5}
SECONDS_RATE=${SECONDS_RATE:-10}
OUT=bench-results
MOCK_PORT=18101 NGINX_PORT=18102 WARDEN_PORT=18103 ADMIN_PORT=18104
mkdir -p "$OUT"
rm -f "$OUT"/samples.jsonl

# shellcheck source=benches/nginx.sh
. benches/nginx.sh
nginx_install

cargo build --release --quiet --bin warden --example loadgen
W=target/release/warden
LG=target/release/examples/loadgen

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; nginx_stop "$PWD/$OUT/nginx"; }
trap cleanup EXIT

# --- the upstream mock -------------------------------------------------------------------
"$W" mock --listen 127.0.0.1:$MOCK_PORT >"$OUT/mock.log" 2>&1 &
pids+=($!); MOCK_PID=$!

# --- nginx: plain keep-alive reverse proxy, no buffering (so streams flow) ----------------
nginx_start "$PWD/$OUT/nginx" $MOCK_PORT $NGINX_PORT

# --- warden: full pipeline, logging on (to a file) ------------------------------------------
# No policies by default; BENCH_POLICIES="default.yaml rollout-monitor.yaml" copies those
# shipped policies in, to measure the cost of the `limits` stage.
rm -rf "$OUT/policies"; mkdir -p "$OUT/policies"
for p in ${BENCH_POLICIES:-}; do cp "policies/$p" "$OUT/policies/"; done
cat >"$OUT/warden.yaml" <<EOF
server: { listen: "127.0.0.1:$WARDEN_PORT" }
admin: { listen: "127.0.0.1:$ADMIN_PORT" }
providers:
  - name: upstream
    kind: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_key: \${BENCH_UPSTREAM_KEY}
  - name: upstream-h2
    kind: openai
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_key: \${BENCH_UPSTREAM_KEY}
    http2: true
routes:
  - { model: "mock-2", provider: upstream-h2 }
  - { model: "mock-*", provider: upstream }
keys:
  - { name: bench, sha256: 8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e, team: bench }
# The mock has no price: with the shipped policies, the daily budget reserves and settles
# at cost 0, so a long run never exhausts it.
unpriced_models: meter
EOF
BENCH_UPSTREAM_KEY=sk-bench TOKIO_WORKER_THREADS=${WARDEN_THREADS:-2} "$W" serve --config "$OUT/warden.yaml" >"$OUT/warden.log" 2>&1 &
pids+=($!); WARDEN_PID=$!
sleep 1

# ~300-byte chat request; the mock directive header asks for a 50-token reply in 20 chunks.
cat >"$OUT/chat.json" <<'EOF'
{"model":"mock-1","messages":[{"role":"system","content":"You are a concise assistant for a travel booking site."},{"role":"user","content":"Suggest three things to do in Lisbon on a rainy afternoon, with one sentence on each, and keep it short please."}],"max_tokens":120,"temperature":0.2}
EOF
sed 's/"temperature":0.2}/"temperature":0.2,"stream":true}/' "$OUT/chat.json" >"$OUT/chat_stream.json"
# The same requests naming `mock-2`, which warden routes to the mock over h2c.
for f in chat chat_stream; do sed 's/"mock-1"/"mock-2"/' "$OUT/$f.json" >"$OUT/${f}_h2.json"; done

cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
nginx_pids() { pgrep -f "nginx: worker process" | tr '\n' ' '; }
HZ=$(getconf CLK_TCK)

url_for() { case $1 in direct) echo "http://127.0.0.1:$MOCK_PORT";; nginx) echo "http://127.0.0.1:$NGINX_PORT";; warden|warden-h2) echo "http://127.0.0.1:$WARDEN_PORT";; esac; }
pids_for() { case $1 in direct) echo $MOCK_PID;; nginx) nginx_pids;; warden|warden-h2) echo $WARDEN_PID;; esac; }
TARGETS="direct nginx warden warden-h2"

echo "{\"kind\":\"idle_rss_start\",\"target\":\"warden\",\"kb\":$(rss_kb $WARDEN_PID)}" >>"$OUT/samples.jsonl"
# warm up connections and pools
for t in $TARGETS; do
  body="$OUT/chat.json"; [ $t = warden-h2 ] && body="$OUT/chat_h2.json"
  "$LG" --url "$(url_for $t)/v1/chat/completions" --body-file "$body" --header 'authorization: Bearer sk-warden-demo' \
    --header 'x-mock: tokens=50,chunks=20' --connections 8 --seconds 1 >/dev/null
done
echo "{\"kind\":\"idle_rss\",\"target\":\"warden\",\"kb\":$(rss_kb $WARDEN_PID)}" >>"$OUT/samples.jsonl"
echo "{\"kind\":\"idle_rss\",\"target\":\"nginx\",\"kb\":$(rss_kb $(nginx_pids))}" >>"$OUT/samples.jsonl"

for round in $(seq 1 "$ROUNDS"); do
  for mode in chat stream; do
    for t in $TARGETS; do
      body="$OUT/chat.json"; [ $mode = stream ] && body="$OUT/chat_stream.json"
      [ $t = warden-h2 ] && body="${body%.json}_h2.json"
      url="$(url_for $t)/v1/chat/completions"
      ps=$(pids_for $t)
      c0=$(cpu_ticks $ps)
      r=$("$LG" --url "$url" --body-file "$body" --header 'authorization: Bearer sk-warden-demo' \
            --header 'x-mock: tokens=50,chunks=20' --connections 32 --seconds "$SECONDS_MAX")
      c1=$(cpu_ticks $ps)
      rss=$(rss_kb $ps)
      echo "{\"kind\":\"max\",\"round\":$round,\"mode\":\"$mode\",\"target\":\"$t\",\"cpu_ticks\":$((c1 - c0)),\"hz\":$HZ,\"rss_kb\":$rss,\"r\":$r}" >>"$OUT/samples.jsonl"
      r=$("$LG" --url "$url" --body-file "$body" --header 'authorization: Bearer sk-warden-demo' \
            --header 'x-mock: tokens=50,chunks=20' --connections 16 --rate 200 --seconds "$SECONDS_RATE")
      echo "{\"kind\":\"rate\",\"round\":$round,\"mode\":\"$mode\",\"target\":\"$t\",\"r\":$r}" >>"$OUT/samples.jsonl"
    done
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$OUT/samples.jsonl" <<'EOF' | tee "$OUT/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    xs = [x for x in xs if x == x]
    return (statistics.median(xs), min(xs), max(xs)) if xs else (float("nan"),) * 3
def fmt(t, d=1):
    return f"{t[0]:.{d}f} ({t[1]:.{d}f}–{t[2]:.{d}f})"
print("| mode | target | max req/s @32 conns | CPU µs/req | p50 ms @200/s | p99 ms @200/s | TTFB p50 ms @200/s | RSS under load MiB |")
print("|---|---|---|---|---|---|---|---|")
for mode in ("chat", "stream"):
    for t in ("direct", "nginx", "warden", "warden-h2"):
        mx = [r for r in rows if r["kind"] == "max" and r["mode"] == mode and r["target"] == t]
        rt = [r for r in rows if r["kind"] == "rate" and r["mode"] == mode and r["target"] == t]
        rps = med([r["r"]["rps"] for r in mx])
        cpu = med([r["cpu_ticks"] / r["hz"] / max(r["r"]["requests"], 1) * 1e6 for r in mx])
        p50 = med([r["r"]["p50_ms"] for r in rt]); p99 = med([r["r"]["p99_ms"] for r in rt])
        tt = med([r["r"]["ttfb_p50_ms"] for r in rt])
        rss = med([r["rss_kb"] / 1024 for r in mx])
        cpu_s = "—" if t == "direct" else fmt(cpu)
        print(f"| {mode} | {t} | {fmt(rps, 0)} | {cpu_s} | {fmt(p50, 3)} | {fmt(p99, 3)} | {fmt(tt, 3)} | {fmt(rss)} |")
print()
def paired(mode, key, t):
    # per-round difference against direct in the same round: the added latency.
    out = []
    for rnd in sorted({r["round"] for r in rows if r["kind"] == "rate"}):
        d = [r for r in rows if r["kind"] == "rate" and r["mode"] == mode and r["round"] == rnd]
        base = [r["r"][key] for r in d if r["target"] == "direct"]
        val = [r["r"][key] for r in d if r["target"] == t]
        if base and val:
            out.append(val[0] - base[0])
    return med(out)
print("| mode | target | added p50 ms | added p99 ms | added TTFB p50 ms | throughput vs nginx |")
print("|---|---|---|---|---|---|")
for mode in ("chat", "stream"):
    for t in ("nginx", "warden", "warden-h2"):
        ratio = []
        for rnd in sorted({r["round"] for r in rows if r["kind"] == "max"}):
            d = {r["target"]: r["r"]["rps"] for r in rows if r["kind"] == "max" and r["mode"] == mode and r["round"] == rnd}
            if "nginx" in d and t in d:
                ratio.append(d[t] / d["nginx"] * 100)
        print(f"| {mode} | {t} | {fmt(paired(mode, 'p50_ms', t), 3)} | {fmt(paired(mode, 'p99_ms', t), 3)} | {fmt(paired(mode, 'ttfb_p50_ms', t), 3)} | {fmt(med(ratio), 0)} % |")
idle = {r["target"]: r["kb"] / 1024 for r in rows if r["kind"] == "idle_rss"}
start = [r["kb"] / 1024 for r in rows if r["kind"] == "idle_rss_start"]
print()
print(f"Idle RSS: warden {start[0] if start else float('nan'):.1f} MiB at start, {idle.get('warden', float('nan')):.1f} MiB after warm-up; nginx workers {idle.get('nginx', float('nan')):.1f} MiB.")
errs = sum(r["r"]["errors"] for r in rows if "r" in r)
print(f"Errors across all runs: {errs}.")
EOF
