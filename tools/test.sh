#!/usr/bin/env bash
# The README's second command: installs what is missing, builds with warnings as
# errors, and runs every test through ctest (MPI tests under mpiexec).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
bash tools/build.sh -DFT_WERROR=ON
cd build
ctest --output-on-failure --timeout 1200 "$@"
