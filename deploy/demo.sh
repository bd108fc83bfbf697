#!/usr/bin/env bash
# The main job, on the embedded default: build fulgur, create a small random-weight MiniMax
# model, generate from a prompt with it, then serve it from a local 3-process cluster (this
# machine's loopback: the serving process runs embed, attention, routers and head; two
# `fulgur node` processes host experts 0-3 and 4-7; hidden states move between them over UCX)
# and send it one streaming chat request. (Random weights: the text is gibberish by design.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
model=build/models/demo
[ -f "$model/config.json" ] || build/bin/fulgur init-model --out "$model" --seed 1
build/bin/fulgur generate --model "$model" --chat --prompt "Tell me about lightning attention." \
  --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 7 --stats

export UCX_TLS="${UCX_TLS:-tcp}"  # UCX over TCP works on loopback and between hosts without RDMA
run=build/demo-cluster
mkdir -p "$run"
rm -f "$run"/*.port
pids=()
cleanup() {  # the serving process first (pids[0] once it runs), then the nodes
  for p in "${pids[@]}"; do
    kill -INT "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
for n in a b; do
  build/bin/fulgur node --listen 127.0.0.1:0 --port-file "$run/$n.port" --name "$n" 2>"$run/$n.log" &
  pids+=($!)
done
for n in a b; do
  for _ in $(seq 1 100); do [ -s "$run/$n.port" ] && break; sleep 0.1; done
  [ -s "$run/$n.port" ] || { echo "node $n did not start:"; cat "$run/$n.log"; exit 1; }
done
cat > "$run/placement.json" <<JSON
{"nodes": ["local",
           {"name": "a", "address": "127.0.0.1:$(cat "$run/a.port")"},
           {"name": "b", "address": "127.0.0.1:$(cat "$run/b.port")"}],
 "expert_actors": [{"node": "a", "experts": [0, 1, 2, 3]}, {"node": "b", "experts": [4, 5, 6, 7]}]}
JSON
echo "placement: $run/placement.json"

port="${FULGUR_DEMO_PORT:-18000}"
build/bin/fulgur serve --model "$model" --listen "127.0.0.1:$port" --placement "$run/placement.json" &
pids=($! "${pids[@]}")  # the serving process stops first
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
curl -sS -N "http://127.0.0.1:$port/v1/chat/completions" \
  -d '{"messages": [{"role": "user", "content": "Tell me about lightning attention."}],
       "max_tokens": 24, "temperature": 0.8, "seed": 7, "stream": true}'
echo
# Who runs where (GET /v1/admin/topology), and what the data plane moved.
curl -sS "http://127.0.0.1:$port/v1/admin/topology" | jq -r '
  . as $t | $t.nodes[] | . as $n
  | "node \($n.name) pid \($n.pid) \($n.state): \([$t.actors[] | select(.node == $n.name) | .kind] | group_by(.) | map("\(length) \(.[0])") | join(", "))"'
curl -sS "http://127.0.0.1:$port/v1/admin/topology" | jq -r '.data_plane | "data plane (\(.transport)): \(.sends) sends, \(.receives) receives, \(.bytes_sent) bytes sent"'
