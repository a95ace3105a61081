# Shared by the bench scripts (sourced, not run).

# The non-streamed chat request the fixed-config benches send.
BODY='{"model":"mock-1","max_tokens":100,"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Summarise the benefits of a reverse proxy for LLM APIs in one paragraph, please."}]}'

# Nanoseconds on CPU, summed over the process's threads (schedstat is exact; utime/stime
# ticks are sampled at the timer tick, which aliases with a load paced at 1 ms).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }
