#!/usr/bin/env bash
# Runs flowtrain on N MPI ranks of this machine, or of the hosts in a host file,
# with one BLAS thread per rank unless OPENBLAS_NUM_THREADS is set.
# usage: launch/mpirun.sh [-n N] [--hostfile FILE] [flowtrain arguments...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
np=$(getconf _NPROCESSORS_ONLN); hostfile=()   # not nproc: it obeys OMP_NUM_THREADS
while [ $# -gt 0 ]; do
  case "$1" in
    -n|-np) np=$2; shift 2 ;;
    --hostfile) hostfile=(--hostfile "$2"); shift 2 ;;
    *) break ;;
  esac
done
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
exec mpirun "${root[@]}" "${hostfile[@]}" -np "$np" \
  -x OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  "${FLOWTRAIN:-$here/build/flowtrain}" "$@"
