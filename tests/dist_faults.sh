#!/usr/bin/env bash
# Failures under mpiexec (distributed.md §2.2, §2.5, §2.13, §4): a rank killed
# with SIGKILL, a stopped rank caught by the watchdog, diverged replicas, and user
# errors agreed across ranks. Each must end the whole job with a non-zero status
# and a message, within 60 s, leaving no process behind.
# usage: dist_faults.sh DATA_PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]; FT_FLOWTRAIN names flowtrain.
set -uo pipefail
prog=$1 mpiexec=$2; shift 2
ft=${FT_FLOWTRAIN:?FT_FLOWTRAIN must name the flowtrain binary}
dir=$(mktemp -d /tmp/ft-dist-faults.XXXXXX)
cleanup() { pkill -KILL -f "run.dir=$dir" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$prog" data "$dir" || exit 1
fails=0
base=(--set data.train="$dir/train.h5" --set data.test="$dir/test.h5" --set data.height=8
      --set data.width=8 --set model.levels=2 --set model.depth=2 --set model.width=8
      --set train.batch=16 --set train.reduce_group=4 --set train.ddi_images=16
      --set train.max_steps=0 --set train.epochs=0 --set train.max_minutes=10 --set train.eval_every=0
      --set train.log_every=1)

check() {  # name, condition result (0 = ok), detail
  if [ "$2" -eq 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi
}

# Starts a 2-rank run in the background; sets pid, out, run.
start_run() {
  run="$dir/$1"; out="$dir/$1.log"; shift
  "$mpiexec" -n 2 "$@" "$ft" "${base[@]}" --set run.dir="$run" "${extra[@]}" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do   # until both ranks are past their first steps
    [ -f "$run/rank-1.pid" ] && grep -q '"step":3,' "$run/metrics.jsonl" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Waits for the launcher; sets rc and secs.
finish() {
  local t0=$1
  wait "$pid"; rc=$?
  secs=$(( $(date +%s) - t0 ))
}

leftovers() { pgrep -f "run.dir=$run" >/dev/null && echo yes || echo no; }

# 1. SIGKILL of one rank ends the job
extra=(); start_run kill "$@" || { echo "FAIL kill: run did not start"; cat "$out"; exit 1; }
t0=$(date +%s); kill -KILL "$(cat "$run/rank-1.pid")"; finish "$t0"
check "sigkill" $(( rc != 0 && secs <= 60 ? 0 : 1 )) "exit $rc after ${secs}s, leftover processes: $(leftovers)"
[ "$(leftovers)" = no ]; check "sigkill-cleanup" $? "no process left"

# 2. a stopped rank: the watchdog of the waiting rank aborts the job
extra=(--set run.watchdog_min_s=5); start_run stop "$@" || { echo "FAIL stop: run did not start"; exit 1; }
t0=$(date +%s); kill -STOP "$(cat "$run/rank-1.pid")"; finish "$t0"
grep -q "watchdog: step" "$out"; wd=$?
check "watchdog" $(( rc != 0 && secs <= 60 && wd == 0 ? 0 : 1 )) "exit $rc after ${secs}s; $(grep -m1 -o 'rank [0-9]*: watchdog.*' "$out")"
pkill -KILL -f "run.dir=$run" 2>/dev/null; sleep 0.5
[ "$(leftovers)" = no ]; check "watchdog-cleanup" $? "no process left"

# 3. diverged replicas: rank 1 perturbs a weight after step 2; the hash check aborts
run="$dir/hash"
FT_TEST_PERTURB_RANK=1 timeout 120 "$mpiexec" -n 2 "$@" "$ft" "${base[@]}" --set run.dir="$run" \
  --set run.hash_every=1 --set train.max_steps=6 >"$dir/hash.log" 2>&1; rc=$?
grep -q "replica divergence at step 2: parameters of rank(s) 1 differ" "$dir/hash.log"
check "replica-hash" $(( rc != 0 && $? == 0 ? 0 : 1 )) "exit $rc; $(grep -m1 -o 'replica divergence.*' "$dir/hash.log")"
# and a clean 4-rank run reports no mismatch
timeout 120 "$mpiexec" -n 4 "$@" "$ft" "${base[@]}" --set run.dir="$dir/clean" --set run.hash_every=1 \
  --set train.max_steps=4 >"$dir/clean.log" 2>&1; rc=$?
check "replica-clean" $(( rc != 0 )) "4 ranks, hash every step: exit $rc"

# 4. user errors: one message from rank 0, exit 1 on every rank
user_error() {  # name, expected message, env, args...
  local name=$1 msg=$2 envs=$3; shift 3
  env $envs timeout 120 "$mpiexec" -n 2 "${mpi[@]}" "$ft" "${base[@]}" --set run.dir="$dir/$name" "$@" \
    >"$dir/$name.log" 2>&1; local rc=$?
  local n; n=$(grep -c "^flowtrain: .*$msg" "$dir/$name.log")
  check "$name" $(( rc == 1 && n == 1 ? 0 : 1 )) "exit $rc, $n message(s): $(grep -m1 "$msg" "$dir/$name.log")"
}
mpi=("$@")
user_error batch-indivisible "not divisible by the 2 ranks" "" --set train.batch=15 --set train.reduce_group=1
user_error data-too-small "fewer than one global batch" "" --set train.batch=128
user_error missing-on-one-rank "rank 1: .*cannot open" "FT_TEST_MISSING_DATA_RANK=1"

echo "$fails failed"
[ "$fails" -eq 0 ]
