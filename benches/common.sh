# Shared by the bench scripts (sourced, not run).

# The non-streamed chat request the fixed-config benches send.
BODY='{"model":"mock-1","max_tokens":100,"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Summarise the benefits of a reverse proxy for LLM APIs in one paragraph, please."}]}'

# Nanoseconds on CPU, summed over the process's threads (schedstat is exact; utime/stime
# ticks are sampled at the timer tick, which aliases with a load paced at 1 ms).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

# The proxy.yaml every fixed-config bench starts from: warden on PORT (admin PORT+1), one
# OpenAI-kind provider `up` at the mock on MOCK_PORT (UPSTREAM_EXTRA: more of its fields,
# `retries: {...}`), the demo key (team demo) and public-web (team public), policies/.
# Usage: bench_yaml PORT MOCK_PORT [UPSTREAM_EXTRA] >proxy.yaml
bench_yaml() {
  local extra=${3:+, $3}
  cat <<YAML
server: { listen: "127.0.0.1:$1" }
admin: { listen: "127.0.0.1:$(($1 + 1))" }
providers:
  - { name: up, kind: openai, base_url: "http://127.0.0.1:$2/v1", api_key: "\${BENCH_UPSTREAM_KEY}"$extra }
routes:
  - { model: "mock-*", provider: up }
keys:
  - { name: demo, sha256: 8e9ef33f78df530b97d2fb5a4ca04caebd524e45dd3ebc210f8c6e81122d173e, team: demo }
  - { name: public-web, sha256: 76dfd30f65102d5924e08d70fca43cfc1ef108ba1ef51527fe477336a06d0f40, team: public }
policies: { dir: policies, watch: false }
YAML
}

# The start every warden-only bench shares: oha present, warden built (unless a binary is
# given: W is its absolute path), a fresh $OUT, and every process in `pids` killed on exit.
# Usage: bench_begin "$@"     (after setting OUT)
bench_begin() {
  command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
  [ $# -gt 0 ] || cargo build --release --quiet --bin warden
  W=$(realpath "${1:-target/release/warden}")
  rm -rf "$OUT"; mkdir -p "$OUT"
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
}
