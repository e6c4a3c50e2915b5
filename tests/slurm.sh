#!/usr/bin/env bash
# launch/flowtrain.sbatch on a real one-node Slurm (distributed.md §2.12, §2.16, §3),
# started with ../shared/slurm/slurm-local.sh in a private folder and stopped at exit:
#  a. baseline: an uninterrupted 2-rank job, COMPLETED without restarts;
#  b. `scancel --signal=USR1 --batch` mid-run: checkpoint, exit 99, the script requeues,
#     the job restarts with SLURM_RESTART_COUNT=1 and ends COMPLETED with final
#     parameters bitwise equal to (a);
#  c. preemption by a whole-node job in partition `urgent`: the same;
#  d. SIGKILL of one rank: the job fails within 60 s, leaving no process; a new
#     submission with the same run directory resumes from the newest checkpoint and
#     ends bitwise equal to (a);
#  e. (b) again with FT_LAUNCHER=mpirun;
#  f. `scancel --signal=TERM --batch`: checkpoint, exit 98, no requeue.
# Exits 77 (ctest: skipped) with "SKIP: Slurm cannot start here: <reason>" when Slurm
# cannot start; every other problem is a failure.
# usage: slurm.sh PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]; FT_FLOWTRAIN names flowtrain.
set -uo pipefail
prog=$1
ft=${FT_FLOWTRAIN:?FT_FLOWTRAIN must name the flowtrain binary}
src=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
sbatch_script=$src/launch/flowtrain.sbatch
SL=$src/../shared/slurm/slurm-local.sh
skip() { echo "SKIP: Slurm cannot start here: $*"; exit 77; }

[ -f "$SL" ] || skip "$SL not found (shared/ must sit next to the repository)"
[ "$(id -u)" = 0 ] || skip "slurm-local.sh runs the daemons as root, and this test runs as $(id -un)"
SL=$(cd "$(dirname "$SL")" && pwd)/slurm-local.sh

dir=$(mktemp -d /tmp/ft-slurm.XXXXXX)
export SLURM_LOCAL_DIR
SLURM_LOCAL_DIR=$(mktemp -d /tmp/ftsl.XXXXXX)   # short: it holds unix sockets
export SLURM_LOCAL_LINK_ETC=0        # leave /etc/slurm alone; every client gets SLURM_CONF
export SLURM_LOCAL_CRED_EXPIRE=5     # a requeued job restarts ~6 s after it stopped
fails=0
cleanup() {
  [ "$fails" -eq 0 ] || export SLURM_LOCAL_KEEP=1
  bash "$SL" down >/dev/null 2>&1
  if [ "$fails" -eq 0 ]; then rm -rf "$dir"; rmdir "$SLURM_LOCAL_DIR" 2>/dev/null
  else echo "kept $dir and the Slurm logs in $SLURM_LOCAL_DIR/log for inspection"; fi
}
trap cleanup EXIT

# Free ports, so that a cluster someone else runs on 6817/6818 does not stop this one.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq 6817 2 6917); do
  if ! port_in_use "$p" && ! port_in_use $((p + 1)); then break; fi
done
export SLURM_LOCAL_CTLD_PORT=$p SLURM_LOCAL_SLURMD_PORT=$((p + 1))

t0=$(date +%s.%N)
# (env -u: GNU nproc, which sizes the node, obeys OMP_NUM_THREADS, and ctest sets it to 1)
if ! env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT bash "$SL" up >"$dir/up.log" 2>&1; then
  reason=$(grep -m1 'error:' "$dir/up.log" || tail -n 1 "$dir/up.log")
  cat "$dir/up.log"
  skip "${reason#slurm-local: }"
fi
eval "$(bash "$SL" env)"
cpus=$(sinfo -h -p debug -o %c 2>/dev/null | head -n1)
[ "${cpus:-0}" -ge 2 ] 2>/dev/null || skip "the node has ${cpus:-no} CPU(s); a 2-rank job needs 2"
echo "Slurm up in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s (ports $p/$((p + 1)), $SLURM_LOCAL_DIR): $(grep -o 'up: .*' "$dir/up.log")"

die() { echo "FAIL $*"; fails=$((fails + 1)); exit 1; }
"$prog" data "$dir" >/dev/null || die "data: $prog data $dir failed"
steps=800
args=(--set data.train="$dir/train.h5" --set data.test="$dir/test.h5" --set data.height=8
      --set data.width=8 --set model.levels=2 --set model.depth=4 --set model.width=256
      --set train.batch=16 --set train.reduce_group=4 --set train.ddi_images=16
      --set train.epochs=0 --set "train.max_steps=$steps" --set train.eval_every=0
      --set train.log_every=10 --set run.checkpoint_every=20 --set run.sample_every=0
      --set run.keep_last=2)
final() { printf '%s/ckpt-%09d.h5' "$1" "$steps"; }

check() {  # name, 0 = pass, detail
  if [ "$2" -eq 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi
}
now() { date +%s.%N; }
secs() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# submit NAME [env assignments...]: submits the batch script for run folder $dir/NAME,
# prints the job id
submit() {
  local name=$1; shift
  env FLOWTRAIN="$ft" RUN_DIR="$dir/$name" "$@" \
    sbatch --parsable -J "ft-$name" -N 1 -n 2 -o "$dir/$name.out" "$sbatch_script" "${args[@]}"
}
# until_step NAME JOB STEP: waits until the run has logged STEP (fails if the job ends first)
until_step() {
  local i
  until_running "$2" || return 1
  for i in $(seq 1 1200); do
    grep -q "\"step\":$3," "$dir/$1/metrics.jsonl" 2>/dev/null && return 0
    if [ $((i % 10)) = 0 ] && [ -z "$(squeue -h -j "$2" -o %T 2>/dev/null)" ]; then break; fi
    sleep 0.25
  done
  echo "run $1 (job $2) never reached step $3"; tail -n 20 "$dir/$1.out"; return 1
}
# until_running JOB: waits (at most 180 s) until the job runs; says why not
until_running() {
  local i st
  for i in $(seq 1 720); do
    st=$(squeue -h -j "$1" -o '%T %r' 2>/dev/null)
    [ "${st%% *}" != PENDING ] && return 0
    sleep 0.25
  done
  echo "job $1 still $st after 180 s"; return 1
}
# until_left_running JOB: seconds until the job is no longer RUNNING (its first run ended)
until_left_running() {
  local t; t=$(now)
  while [ "$(squeue -h -j "$1" -o %T 2>/dev/null)" = RUNNING ]; do sleep 0.1; done
  secs "$t"
}
slwait() { bash "$SL" wait "$1" "$2" 2>&1; }
same_as_base() {  # run dir: 0 if its final parameters are bitwise those of the baseline
  "$prog" cmpckpt "$(final "$1")" "$(final "$dir/base")" 0 >"$1.cmp" 2>&1
}
cmp_text() {  # run dir: the comparison's verdict
  local v; v=$(grep '^cmpckpt:' "$1.cmp" | grep -o ': \(bitwise equal\|differ\),.*' | head -n1)
  echo "final parameters vs baseline${v:-: $(tail -n1 "$1.cmp")}"
}
# event lines of a run's metrics, e.g. event RUN resume
event() { grep "\"event\":\"$2\"" "$dir/$1/metrics.jsonl" 2>/dev/null; }

# a. baseline
t=$(now)
j=$(submit base) || die "baseline: sbatch failed"
until_running "$j" || die "baseline: job $j did not start"
st=$(slwait "$j" 600); rc=$?
check baseline $(( rc == 0 && ${#st} > 0 && $(grep -c 'Restarts=0' <<<"$st") == 1 ? 0 : 1 )) \
  "job $j: $st in $(secs "$t") s; $(event base start)"
[ -f "$(final "$dir/base")" ] || { tail -n 30 "$dir/base.out"; die "baseline: no final checkpoint"; }

# requeue_case NAME HOW [env...]: HOW = usr1 | urgent; a stop mid-run, requeue, finish
requeue_case() {
  local name=$1 how=$2 run=$dir/$1 t j u="" left st rc stop resume ust="" ok
  shift 2
  t=$(now)
  j=$(submit "$name" "$@") || { check "$name" 1 "sbatch failed"; return; }
  until_step "$name" "$j" 200 || { check "$name" 1 "did not start"; scancel "$j"; return; }
  if [ "$how" = usr1 ]; then
    scancel --signal=USR1 --batch "$j"
  else
    u=$(sbatch --parsable -J ft-urgent -p urgent -N 1 --exclusive -o "$dir/$name-urgent.out" \
        --wrap 'echo "urgent job started $(date +%T.%N)"; sleep 5')
  fi
  left=$(until_left_running "$j")
  [ -z "$u" ] || ust=$(slwait "$u" 300)
  st=$(slwait "$j" 600); rc=$?
  stop=$(event "$name" stop | head -n1)
  resume=$(event "$name" resume | head -n1)
  same_as_base "$run"; ok=$?
  check "$name" $(( rc == 0 && $(grep -c 'Restarts=1' <<<"$st") == 1 && ok == 0 ? 0 : 1 )) \
    "job $j: $st after $(secs "$t") s; $(cmp_text "$run")"
  # the first run stopped on a signal, mid-run, with a checkpoint, and asked for a requeue
  grep -q "\"reason\":\"SIG[A-Z0-9]*\",.*\"checkpoint\":true" <<<"$stop"
  check "$name-stop" $? "first run left RUNNING ${left} s after the $how signal/submission; $stop; batch script: $(grep -m1 -o 'flowtrain stopped on .*' "$run.out")"
  grep -q "\"slurm_job_id\":$j,\"slurm_restart_count\":1}" <<<"$resume"
  check "$name-resume" $? "${resume:-no resume line}; $(grep -o '^resume: .*' "$dir/$name.out" | tail -n1)"
  if [ -n "$u" ]; then
    grep -q COMPLETED <<<"$ust"
    check "$name-urgent-job" $? "urgent job $u: $ust; $(cat "$dir/$name-urgent.out"); flowtrain $(grep -m1 -o 'restart 1 on [^;]*' "$run.out")"
  fi
}

# b. USR1 to the batch shell mid-run
requeue_case usr1 usr1
# c. preemption by a job in the higher-priority partition that needs the whole node
requeue_case preempt urgent

# d. SIGKILL of one rank: failure within 60 s, then a new submission resumes
kill_case() {
  local run=$dir/kill t j j2 tk st rc el left resume ok rs newest ckpts=()
  t=$(now)
  j=$(submit kill) || { check kill-fails 1 "sbatch failed"; return; }
  until_step kill "$j" 200 || { check kill-fails 1 "did not start"; scancel "$j"; return; }
  tk=$(now); kill -KILL "$(cat "$run/rank-1.pid")"
  st=$(slwait "$j" 120); rc=$?
  el=$(secs "$tk")
  sleep 1; left=$(pgrep -f "run.dir=$run" >/dev/null && echo yes || echo no)
  check kill-fails $(( rc == 1 && $(echo "$el <= 60" | bc) == 1 ? 0 : 1 )) \
    "job $j: $st ${el} s after SIGKILL of rank 1; batch script: $(grep -m1 -o 'flowtrain ended with status .*' "$run.out")"
  [ "$left" = no ]; check kill-cleanup $? "leftover processes: $left"
  ckpts=("$run"/ckpt-*.h5); newest=${ckpts[-1]##*/ckpt-}; newest=$((10#${newest%.h5}))
  j2=$(submit kill) || { check kill-resubmit 1 "sbatch failed"; return; }
  st=$(slwait "$j2" 600); rc=$?
  resume=$(event kill resume | tail -n1)
  same_as_base "$run"; ok=$?
  grep -q "\"event\":\"resume\",\"step\":$newest,.*\"slurm_job_id\":$j2," <<<"$resume"; rs=$?
  check kill-resubmit $(( rc == 0 && ok == 0 && rs == 0 ? 0 : 1 )) \
    "job $j2: $st; newest checkpoint at the kill: step $newest; $resume; $(cmp_text "$run"); $(secs "$t") s in all"
}
kill_case

# e. (b) with mpirun as the launcher
requeue_case usr1-mpirun usr1 FT_LAUNCHER=mpirun

# f. TERM to the batch shell: forwarded to srun's tasks, checkpoint, exit 98, no requeue
term_case() {
  local run=$dir/term t j st stop
  t=$(now)
  j=$(submit term) || { check term 1 "sbatch failed"; return; }
  until_step term "$j" 200 || { check term 1 "did not start"; scancel "$j"; return; }
  scancel --signal=TERM --batch "$j"
  st=$(slwait "$j" 120)
  stop=$(event term stop | head -n1)
  grep -q '"reason":"SIGTERM",.*"checkpoint":true' <<<"$stop"
  check term $(( $? == 0 && $(grep -c 'ExitCode=98:0 Restarts=0' <<<"$st") == 1 ? 0 : 1 )) \
    "job $j: $st $(secs "$t") s after submission; $stop; batch script: $(grep -m1 -o 'flowtrain stopped on .*' "$run.out")"
}
term_case

echo "$fails failed; $(secs "$t0") s in all"
[ "$fails" -eq 0 ]
