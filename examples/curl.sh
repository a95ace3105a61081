#!/usr/bin/env bash
# Calls a local warden (`cargo run --release`) with curl: chat, a stream, Anthropic messages,
# and a simulated upstream 429 from the mock provider.
set -eu
W=${WARDEN_URL:-http://127.0.0.1:8787}
KEY=${WARDEN_KEY:-sk-warden-demo}

echo "--- OpenAI chat"
curl -sS "$W/v1/chat/completions" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"mock-1","messages":[{"role":"user","content":"Hello"}]}'
echo; echo "--- OpenAI chat, streamed (first events)"
# Read the whole stream, then show its start: `curl | head` would cut curl off (exit 23).
stream=$(curl -sSN "$W/v1/chat/completions" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"Hello"}]}')
printf '%s\n' "$stream" | sed -n '1,8p'
echo "--- Anthropic messages"
curl -sS "$W/v1/messages" -H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
  -d '{"model":"mock-1","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
echo; echo "--- a simulated upstream rate limit (passed through unchanged)"
curl -sS -i "$W/v1/chat/completions" -H "authorization: Bearer $KEY" -H 'x-mock: status=429,retry-after=2' \
  -d '{"model":"mock-1","messages":[{"role":"user","content":"Hello"}]}'
echo
