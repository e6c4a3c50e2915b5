#!/usr/bin/env bash
# Exact resume and preemption (distributed.md §2.10–2.12; issue 6 and 7):
#  - 40 steps uninterrupted vs every rank SIGKILLed at a random step after a
#    checkpoint, then resumed to step 40: final parameters bitwise equal, and the
#    metrics lines after the resume point equal apart from timing fields;
#  - checkpointed on 4 ranks, resumed on 2 and on 1: parameters within 1e-6;
#  - SIGUSR1 / SIGTERM to one rank: exit 99 / 98 with a committed checkpoint,
#    then a bitwise-equal finish; two signals, and a signal during a write;
#  - a truncated newest checkpoint: the resume falls back to the previous one.
# usage: resume.sh PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]; FT_FLOWTRAIN names flowtrain.
set -uo pipefail
prog=$1 mpiexec=$2; shift 2
mpi=("$@")
ft=${FT_FLOWTRAIN:?FT_FLOWTRAIN must name the flowtrain binary}
dir=$(mktemp -d /tmp/ft-resume.XXXXXX)
trap '[ "$fails" -eq 0 ] && rm -rf "$dir" || echo "kept $dir for inspection"' EXIT
"$prog" data "$dir" || exit 1
fails=0
check() { if [ "$2" -eq 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi; }
base=(--set data.train="$dir/train.h5" --set data.test="$dir/test.h5" --set data.height=8
      --set data.width=8 --set model.levels=2 --set model.depth=2 --set model.width=8
      --set train.batch=16 --set train.reduce_group=4 --set train.ddi_images=16
      --set train.epochs=0 --set train.max_steps=40 --set train.eval_every=0
      --set train.log_every=1 --set run.checkpoint_every=10 --set run.sample_every=0
      --set run.keep_last=2)
ftrun() {  # np run-dir [args...]: prints the exit status
  local np=$1 run=$2; shift 2
  timeout 300 "$mpiexec" -n "$np" "${mpi[@]}" "$ft" "${base[@]}" --set run.dir="$run" "$@" \
    >>"$run.log" 2>&1
  echo $?
}
# metrics lines of steps > $2 written after the last (re)start, without timing fields
lines_after() {
  awk '/"event":"(start|resume)"/ { n = 0; next } { buf[n++] = $0 } END { for (i = 0; i < n; i++) print buf[i] }' \
    "$1/metrics.jsonl" | grep '"train_bpd"' | sed -E 's/,"(img_per_s|eta_s|wall_s)":[^,}]*//g' |
    awk -v s="$2" -F'[:,]' '$2 > s'
}
final() { echo "$1/ckpt-000000040.h5"; }

for np in 2 4; do
  rc=$(ftrun $np "$dir/full$np"); check "full-np$np" "$rc" "40 steps on $np ranks: exit $rc"
done

# 1. SIGKILL of every rank at random steps after a checkpoint, resume to 40
for k in $(shuf -i 11-39 -n 3); do
  run="$dir/kill$k"
  rc=$(FT_TEST_KILL_AT_STEP=$k ftrun 2 "$run")
  last=$(ls "$run" | grep -c '^ckpt-')
  rc2=$(ftrun 2 "$run")
  resumed=$(grep -o 'resume: [^ ]* at step [0-9]*' "$run.log" | tail -1)
  from=$(echo "$resumed" | grep -o '[0-9]*$')
  "$prog" cmpckpt "$(final "$run")" "$(final "$dir/full2")" 0 >"$run.cmp" 2>&1; same=$?
  diff <(lines_after "$run" "$from") <(lines_after "$dir/full2" "$from") >/dev/null; mdiff=$?
  check "kill-at-$k" $(( rc != 0 && rc2 == 0 && same == 0 && mdiff == 0 ? 0 : 1 )) \
    "killed (exit $rc, $last checkpoint(s)), $resumed, $(grep -o "\(bitwise equal\|differ\), .*" "$run.cmp"), metrics after step $from $( [ $mdiff -eq 0 ] && echo identical || echo DIFFER)"
done

# 2. checkpointed on 4 ranks, resumed on 2 and on 1
for np in 2 1; do
  run="$dir/ws$np"
  rc=$(FT_TEST_KILL_AT_STEP=23 ftrun 4 "$run")
  rc2=$(ftrun $np "$run")
  "$prog" cmpckpt "$(final "$run")" "$(final "$dir/full4")" 1e-6 >"$run.cmp" 2>&1; ok=$?
  resumed=$(grep -o 'resume: [^ ]* at step .*' "$run.log" | tail -1)
  check "resume-4-to-$np" $(( rc != 0 && rc2 == 0 && ok == 0 && ${#resumed} > 0 ? 0 : 1 )) \
    "killed at step 23 (exit $rc), $resumed; $(grep -o "\(bitwise equal\|differ\), .*" "$run.cmp")"
done

# 3. preemption signals to one rank: USR1 → 99, TERM → 98, then finish bitwise equal
for case in "usr1:10:1:1:99" "term:15:0:1:98" "twice:10:1:2:99" "during-write:10:0:1:99"; do
  IFS=: read -r name sig rank count want <<<"$case"
  step=17; [ "$name" = during-write ] && step=20   # step 20 queues a checkpoint write
  run="$dir/sig-$name"
  t0=$(date +%s.%N)
  rc=$(FT_TEST_SIGNAL_AT_STEP=$step:$sig:$rank:$count ftrun 2 "$run")
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  stop=$(grep -o '"event":"stop","reason":"[A-Z0-9]*","step":[0-9]*,"checkpoint":[a-z]*' "$run/metrics.jsonl")
  newest=$(ls "$run" | grep '^ckpt-' | tail -1)
  "$prog" cmpckpt "$run/$newest" "$run/$newest" 0 >/dev/null 2>&1; valid=$?
  rc2=$(ftrun 2 "$run")
  "$prog" cmpckpt "$(final "$run")" "$(final "$dir/full2")" 0 >"$run.cmp" 2>&1; same=$?
  check "signal-$name" $(( rc == want && valid == 0 && rc2 == 0 && same == 0 ? 0 : 1 )) \
    "exit $rc (want $want) in ${secs}s, $stop, newest $newest valid, resumed: $(grep -o "\(bitwise equal\|differ\), .*" "$run.cmp")"
done

# 4. truncated newest checkpoint: fall back to the previous one
run="$dir/trunc"
rc=$(FT_TEST_KILL_AT_STEP=35 ftrun 2 "$run")
newest=$(ls "$run" | grep '^ckpt-' | tail -1)
truncate -s 5000 "$run/$newest"
rc2=$(ftrun 2 "$run")
msg=$(grep -m1 -o "checkpoint $run/$newest: .*" "$run.log")
"$prog" cmpckpt "$(final "$run")" "$(final "$dir/full2")" 0 >"$run.cmp" 2>&1; same=$?
check "truncated-newest" $(( rc2 == 0 && same == 0 && ${#msg} > 0 ? 0 : 1 )) "$msg; $(grep -o "\(bitwise equal\|differ\), .*" "$run.cmp")"

echo "$fails failed"
[ "$fails" -eq 0 ]
