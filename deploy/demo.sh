#!/usr/bin/env bash
# The main job, on the embedded default: build fulgur, create a small random-weight MiniMax
# model, generate from a prompt with it, then serve it over HTTP and send it one streaming chat
# request. (Random weights: the text is gibberish by design.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
model=build/models/demo
[ -f "$model/config.json" ] || build/bin/fulgur init-model --out "$model" --seed 1
build/bin/fulgur generate --model "$model" --chat --prompt "Tell me about lightning attention." \
  --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 7 --stats

port="${FULGUR_DEMO_PORT:-18000}"
build/bin/fulgur serve --model "$model" --listen "127.0.0.1:$port" &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
curl -sS -N "http://127.0.0.1:$port/v1/chat/completions" \
  -d '{"messages": [{"role": "user", "content": "Tell me about lightning attention."}],
       "max_tokens": 24, "temperature": 0.8, "seed": 7, "stream": true}'
