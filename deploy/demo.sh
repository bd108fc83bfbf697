#!/usr/bin/env bash
# The main job, on the embedded default: build fulgur, create a small random-weight MiniMax
# model and generate from a prompt with it. (Random weights: the text is gibberish by design.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
model=build/models/demo
[ -f "$model/config.json" ] || build/bin/fulgur init-model --out "$model" --seed 1
build/bin/fulgur generate --model "$model" --chat --prompt "Tell me about lightning attention." \
  --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 7 --stats
