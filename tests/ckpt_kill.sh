#!/usr/bin/env bash
# A writer killed at any point leaves a loadable checkpoint (distributed.md §2.7):
# a tiny run checkpoints every step; it is SIGKILLed (every rank) at a random
# moment, the newest ckpt-*.h5 must verify, and the next start (--resume auto)
# must resume from a valid checkpoint. Repeated TRIALS times.
# usage: ckpt_kill.sh DATA_PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]; FT_FLOWTRAIN names flowtrain.
set -uo pipefail
prog=$1 mpiexec=$2; shift 2
ft=${FT_FLOWTRAIN:?FT_FLOWTRAIN must name the flowtrain binary}
inspect=$(dirname "$ft")/flowinspect
trials=${FT_CKPT_KILL_TRIALS:-100}
dir=$(mktemp -d /tmp/ft-ckpt-kill.XXXXXX)
trap 'pkill -KILL -f "run.dir=$dir" 2>/dev/null; rm -rf "$dir"' EXIT
"$prog" data "$dir" || exit 1
run="$dir/run"
bad=0 resumed=0 killed_writes=0
for i in $(seq 1 "$trials"); do
  "$mpiexec" -n 2 "$@" "$ft" --set data.train="$dir/train.h5" --set data.test="$dir/test.h5" \
    --set data.height=8 --set data.width=8 --set model.levels=2 --set model.depth=2 \
    --set model.width=16 --set train.batch=16 --set train.reduce_group=4 \
    --set train.ddi_images=16 --set train.epochs=0 --set train.max_steps=0 \
    --set train.max_minutes=10 --set train.eval_every=0 --set train.log_every=50 \
    --set run.checkpoint_every=1 --set run.keep_last=2 --set run.sample_every=0 \
    --set run.dir="$run" >"$dir/log" 2>&1 &
  pid=$!
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.6 + 1.4 * rand() }')"
  pkill -KILL -f "run.dir=$run" 2>/dev/null
  wait "$pid" 2>/dev/null
  ls "$run"/.ckpt-*.tmp >/dev/null 2>&1 && killed_writes=$((killed_writes + 1))
  newest=$(ls "$run" 2>/dev/null | grep '^ckpt-.*\.h5$' | tail -1)
  [ -z "$newest" ] && continue   # killed before the first checkpoint
  if ! "$inspect" "$run/$newest" >/dev/null 2>&1; then
    bad=$((bad + 1)); echo "trial $i: newest checkpoint $newest does not verify"
  fi
  grep -q "resume: .* at step" "$dir/log" && resumed=$((resumed + 1))
done
echo "$trials kills: $bad unloadable newest checkpoints, $killed_writes kills left a temp file (mid-write), $resumed starts resumed"
[ "$bad" -eq 0 ] && [ "$resumed" -gt 0 ]
