#!/usr/bin/env bash
# Stored-activation vs reversible backward on a trained model (model.memory):
#  - converts Debian's Fashion-MNIST (flowdata fashion-mnist), trains a small Glow
#    derived from configs/fashion-mnist.yaml (L=2, K=4, width 64, logit
#    preprocessing) for 300 steps on 2 ranks and checks that train bits/dim fell
#    by more than 1;
#  - floweval64 --check-memory-modes on the final checkpoint and the first 32 test
#    images, the trained float32 parameters evaluated in float64: both forwards
#    give identical bits/dim, every parameter tensor's gradient and the input
#    gradient agree within 1e-4 relative L2;
#  - floweval --check-memory-modes, the same in float32 as training runs: it prints
#    the error of the stage inputs the reverse pass rebuilt and the gradients'
#    differences; they must stay within 1e-2. In float32 one image's gradient can
#    move by ~2e-3 between the modes, so 1e-4 holds on some trained checkpoints
#    and not on others (README, model.memory);
#  - the same for a variant with additive coupling and LU invconv (150 steps);
#  - the check refuses more than one rank (exit 2).
# Exits 77 (ctest: skipped) when the Fashion-MNIST files are not installed.
# usage: reversible.sh FLOWTRAIN MPIEXEC [MPIEXEC_PREFLAGS...]
set -uo pipefail
ft=$1 mpiexec=$2; shift 2
mpi=("$@")
bin=$(dirname "$ft")
fe=$bin/floweval fe64=$bin/floweval64 fd=$bin/flowdata
src=${FT_FASHION_SRC:-/usr/share/datasets/fashion-mnist}
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
         t10k-labels-idx1-ubyte.gz; do
  [ -r "$src/$f" ] || { echo "SKIP: $src/$f is missing (apt-get install dataset-fashion-mnist)"; exit 77; }
done
for t in "$fe" "$fe64" "$fd"; do [ -x "$t" ] || { echo "FAIL: $t is not built"; exit 1; }; done
dir=$(mktemp -d /tmp/ft-reversible.XXXXXX)
fails=0
trap '[ "$fails" -eq 0 ] && rm -rf "$dir" || echo "kept $dir for inspection"' EXIT
check() { if [ "$2" -eq 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi; }
start=$SECONDS

"$fd" fashion-mnist "$dir/data" --src "$src" -q || { echo "FAIL: flowdata fashion-mnist"; exit 1; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
base=(--config "${FT_SOURCE_DIR:-$(dirname "$0")/..}/configs/fashion-mnist.yaml"
      --set data.train="$dir/data/train.h5" --set data.test="$dir/data/test.h5"
      --set model.levels=2 --set model.depth=4 --set model.width=64
      --set train.batch=32 --set train.warmup_images=2000 --set train.epochs=0
      --set train.max_minutes=0 --set train.eval_every=0 --set train.log_every=25
      --set run.sample_every=0 --set run.checkpoint_every=0 --set run.checkpoint_minutes=0)
# name steps [--set ...]: trains on 2 ranks, checks the loss fell, runs the check
run() {
  local name=$1 steps=$2; shift 2
  local run=$dir/$name ck
  printf -v ck '%s/ckpt-%09d.h5' "$run" "$steps"
  local t0=$SECONDS
  timeout 240 "$mpiexec" -n 2 "${mpi[@]}" "$ft" "${base[@]}" --set train.max_steps="$steps" \
    --set run.dir="$run" "$@" >"$run.log" 2>&1
  local rc=$?
  check "$name-train" "$rc" "$steps steps on 2 ranks in $((SECONDS - t0)) s: exit $rc"
  [ "$rc" -eq 0 ] && [ -f "$ck" ] || { cat "$run.log"; return; }
  local bpd first last
  bpd=$(sed -n 's/.*"train_bpd":\([-0-9.e]*\).*/\1/p' "$run/metrics.jsonl")
  first=$(head -1 <<<"$bpd") last=$(tail -1 <<<"$bpd")
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(a != "" && b != "" && b < a - 1) }'
  check "$name-trained" $? "train bits/dim $first at step 25, $last at step $steps"
  "$fe" --check-memory-modes --tol 1e-2 "$ck" "$dir/data/test.h5" 2>&1 | sed 's/^/  /'
  rc=${PIPESTATUS[0]}
  check "$name-memory-modes-float32" "$rc" "floweval --check-memory-modes --tol 1e-2: exit $rc"
  "$fe64" --check-memory-modes "$ck" "$dir/data/test.h5" 2>&1 | sed 's/^/  /'
  rc=${PIPESTATUS[0]}
  check "$name-memory-modes" "$rc" "floweval64 --check-memory-modes: exit $rc"
}
run affine 300
run additive-lu 150 --set model.coupling=additive --set model.permutation=invconv_lu

ck=$dir/affine/ckpt-000000300.h5
out=$(timeout 60 "$mpiexec" -n 2 "${mpi[@]}" "$fe" --check-memory-modes "$ck" "$dir/data/test.h5" 2>&1)
rc=$?
[ "$rc" -eq 2 ] && grep -q 'runs on one rank' <<<"$out"
check "two-ranks" $? "exit $rc: $(head -1 <<<"$out")"

echo "reversible.sh: $fails failure(s) in $((SECONDS - start)) s"
[ "$fails" -eq 0 ]
