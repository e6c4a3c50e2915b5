#!/usr/bin/env bash
# World-size invariance: 5 updates at global batch 16 on 1, 2 and 4 ranks, in
# deterministic and fast reduction modes, then the comparison.
# usage: dist_equiv.sh PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]
set -euo pipefail
prog=$1 mpiexec=$2; shift 2
dir=$(mktemp -d /tmp/ft-dist-equiv.XXXXXX)
trap 'rm -rf "$dir"' EXIT
for mode in deterministic fast; do
  for np in 1 2 4; do
    "$mpiexec" -n "$np" "$@" "$prog" run "$dir" "$mode"
  done
done
"$prog" compare "$dir"
