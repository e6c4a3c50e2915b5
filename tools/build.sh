#!/usr/bin/env bash
# Configures and builds flowtrain in ./build (Release, -O3 -g). Extra arguments go
# to cmake, e.g. tools/build.sh -DFT_SANITIZE=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
