#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, converts Debian's
# Fashion-MNIST to HDF5 (padded to 32x32) and trains the default config on every
# core of this machine, one MPI rank per core. Re-running resumes in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
bash tools/build.sh
[ -f data/fashion-mnist/test.h5 ] || build/flowdata fashion-mnist data/fashion-mnist
np=${NP:-$(getconf _NPROCESSORS_ONLN)}   # not nproc: it obeys OMP_NUM_THREADS
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
exec env OPENBLAS_NUM_THREADS=1 mpirun "${root[@]}" --bind-to core -np "$np" \
  build/flowtrain --config configs/fashion-mnist.yaml "$@"
