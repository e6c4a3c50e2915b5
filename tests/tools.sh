#!/usr/bin/env bash
# floweval and flowsample against a tiny trained model (glow-model.md §3, §10):
#  - floweval on 1 and 2 ranks agrees to 1e-9 and equals training's final test_bpd
#    (metrics.jsonl, 6 decimals), with EMA weights (auto beta) and without;
#  - flowsample grid with the checkpoint's defaults is byte-identical to the grid
#    training wrote; grid / interp / attribute PNGs have the expected size; interp's
#    end points reconstruct its inputs exactly;
#  - a missing or truncated checkpoint, a data set of another shape, an unlabelled
#    set or an absent label: exit 1 and one line; bad usage: exit 2.
# usage: tools.sh DATA_PROGRAM MPIEXEC [MPIEXEC_PREFLAGS...]; FT_FLOWTRAIN names
# flowtrain, and the tools are built next to it.
set -uo pipefail
prog=$1 mpiexec=$2; shift 2
mpi=("$@")
ft=${FT_FLOWTRAIN:?FT_FLOWTRAIN must name the flowtrain binary}
bin=$(dirname "$ft")
fe=$bin/floweval fs=$bin/flowsample fd=$bin/flowdata
dir=$(mktemp -d /tmp/ft-tools.XXXXXX)
fails=0
trap '[ "$fails" -eq 0 ] && rm -rf "$dir" || echo "kept $dir for inspection"' EXIT
check() { if [ "$2" -eq 0 ]; then echo "PASS $1: $3"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi; }
for t in "$fe" "$fs" "$fd"; do [ -x "$t" ] || { echo "FAIL: $t is not built"; exit 1; }; done

# ---- data: unlabelled 8x8 train/test (96/21 images), a labelled 8x8 IDX set, a 16x16 set
"$prog" data "$dir" || exit 1
byte() { printf "\\$(printf %03o "$1")"; }
be32() { byte $(($1 >> 24 & 255)); byte $(($1 >> 16 & 255)); byte $(($1 >> 8 & 255)); byte $(($1 & 255)); }
n=24   # labels i % 3; label-dependent brightness in the right half
{ printf '\000\000\010\003'; be32 $n; be32 8; be32 8
  for ((i = 0; i < n; i++)); do for ((p = 0; p < 64; p++)); do
    byte $(( (p * 13 + i * 29 + (i % 3) * 60 * (p % 8 > 3)) % 256 )); done; done; } >"$dir/lab-images.idx"
{ printf '\000\000\010\001'; be32 $n; for ((i = 0; i < n; i++)); do byte $((i % 3)); done; } >"$dir/lab-labels.idx"
{ printf '\000\000\010\003'; be32 4; be32 16; be32 16; head -c 1024 /dev/zero; } >"$dir/big.idx"
"$fd" idx --images "$dir/lab-images.idx" --labels "$dir/lab-labels.idx" -o "$dir/lab.h5" -q &&
  "$fd" idx --images "$dir/big.idx" -o "$dir/big.h5" -q || { echo "FAIL: flowdata"; exit 1; }

# ---- two tiny runs of 20 steps: A on 2 ranks with EMA (auto beta), B on 1 rank without
base=(--set data.train="$dir/train.h5" --set data.test="$dir/test.h5" --set data.height=8
      --set data.width=8 --set model.levels=2 --set model.depth=2 --set model.width=8
      --set train.batch=16 --set train.reduce_group=4 --set train.ddi_images=16
      --set train.epochs=0 --set train.max_steps=20 --set train.eval_every=10
      --set train.warmup_images=0 --set train.log_every=5 --set run.checkpoint_every=10
      --set run.sample_every=20)
train() {  # np run-dir [args...]: prints the exit status
  local np=$1 run=$2; shift 2
  timeout 300 "$mpiexec" -n "$np" "${mpi[@]}" "$ft" "${base[@]}" --set run.dir="$run" "$@" \
    >"$run.log" 2>&1
  echo $?
}
rc=$(train 2 "$dir/runA" --set train.ema=true); check "train-A" "$rc" "2 ranks, EMA on: exit $rc"
rc=$(train 1 "$dir/runB"); check "train-B" "$rc" "1 rank, EMA off: exit $rc"
[ "$fails" -eq 0 ] || { cat "$dir"/run?.log; exit 1; }

# floweval prints "test bits/dim: X (N images, R ranks)"
bpd_of() { sed -n 's/^test bits\/dim: \([-0-9.naif]*\) .*/\1/p' <<<"$1"; }
for run in runA runB; do
  ck="$dir/$run/ckpt-000000020.h5"
  want=$(grep '"event":"test_bpd","step":20,' "$dir/$run/metrics.jsonl" | tail -1 |
         sed 's/.*"test_bpd":\([-0-9.]*\).*/\1/')
  o1=$(timeout 120 "$mpiexec" -n 1 "${mpi[@]}" "$fe" "$ck" "$dir/test.h5" 2>&1); r1=$?
  o2=$(timeout 120 "$mpiexec" -n 2 "${mpi[@]}" "$fe" "$ck" "$dir/test.h5" 2>&1); r2=$?
  o3=$("$fe" "$ck" "$dir/test.h5" --batch 5 2>&1); r3=$?
  b1=$(bpd_of "$o1") b2=$(bpd_of "$o2") b3=$(bpd_of "$o3")
  ok=$(awk -v a="$b1" -v b="$b2" -v c="$b3" -v w="$want" 'BEGIN {
         d = a - b; if (d < 0) d = -d; e = a - c; if (e < 0) e = -e;
         print (a != "" && b != "" && w != "" && d <= 1e-9 && e <= 1e-9 && sprintf("%.6f", a) == w) ? 0 : 1 }')
  check "floweval-$run" $(( r1 == 0 && r2 == 0 && r3 == 0 ? ok : 1 )) \
    "1 rank $b1, 2 ranks $b2, batch 5 $b3; training's final test_bpd $want"
  grep -q '(21 images, 2 ranks)' <<<"$o2"; check "floweval-$run-line" $? "$o2"
done
ckA="$dir/runA/ckpt-000000020.h5" ckB="$dir/runB/ckpt-000000020.h5"
raw=$(bpd_of "$("$fe" "$ckA" "$dir/test.h5" --no-ema)") ema=$(bpd_of "$("$fe" "$ckA" "$dir/test.h5")")
[ -n "$raw" ] && [ "$raw" != "$ema" ]; check "floweval-no-ema" $? "raw parameters $raw, EMA $ema"

# ---- flowsample; a PNG's width and height are big-endian at bytes 16..23
png_size() { od -An -tu1 -j16 -N8 "$1" 2>/dev/null | awk '{ printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'; }
is_png() { [ "$(od -An -tx1 -N8 "$1" 2>/dev/null | tr -d ' \n')" = 89504e470d0a1a0a ]; }
sample() {  # name expected-WxH command...: runs flowsample, checks exit 0, one line, PNG size
  local name=$1 want=$2; shift 2
  local out="$dir/$name.png"
  local o; o=$("$fs" "$@" -o "$out" 2>&1); local r=$?
  local got; got=$(png_size "$out")
  is_png "$out"; local p=$?
  check "flowsample-$name" $(( r == 0 && p == 0 && $(wc -l <<<"$o") == 1 ? 0 : 1 )) "exit $r, $got: $o"
  [ "$got" = "$want" ]; check "flowsample-$name-size" $? "want $want, got $got"
}
# 8x8 cells, 1-pixel separators: W = k*8 + k+1 for k columns, H likewise for rows
sample grid-default 73x55 "$ckA" grid   # 6 run.sample_temperatures x run.sample_grid 8
cmp -s "$dir/grid-default.png" "$dir/runA/samples/step-000000020.png"
check "flowsample-grid-as-training" $? "default grid vs training's samples/step-000000020.png"
sample grid 73x37 "$ckA" grid --temps 0,0.5,0.7,1 --n 8 --seed 7
sample grid-raw 28x19 "$ckB" grid --temps 0,1 --n 3
sample interp 73x10 "$ckA" interp --data "$dir/test.h5" --a 2 --b 17 --steps 6
grep -q 'reconstruct the inputs to 0 grey levels' <<<"$("$fs" "$ckA" interp --data "$dir/test.h5" --a 2 --b 17 -o "$dir/i2.png")"
check "flowsample-interp-exact" $? "t = 0 and t = 1 decode to the inputs"
sample attribute 46x10 "$ckA" attribute --data "$dir/lab.h5" --label 1 --image 4
sample attribute-3 28x10 "$ckB" attribute --data "$dir/lab.h5" --label 2 --strengths -1,0,1 --scale 1.6

# ---- rejected inputs: exit 1 and exactly one line
cp "$ckA" "$dir/trunc.h5" && truncate -s 3000 "$dir/trunc.h5"
fails_with() {  # name want-status command...: status and one line on stderr, nothing on stdout
  local name=$1 want=$2; shift 2
  "$@" >"$dir/out.txt" 2>"$dir/err.txt"; local r=$?
  local lines out; lines=$(wc -l <"$dir/err.txt") out=$(wc -c <"$dir/out.txt")
  check "$name" $(( r == want && lines == 1 && out == 0 ? 0 : 1 )) \
    "exit $r (want $want), $lines line(s): $(head -c 300 "$dir/err.txt")"
}
fails_with floweval-missing-ckpt 1 "$fe" "$dir/nope.h5" "$dir/test.h5"
fails_with floweval-truncated-ckpt 1 "$fe" "$dir/trunc.h5" "$dir/test.h5"
fails_with floweval-other-shape 1 "$fe" "$ckA" "$dir/big.h5"
fails_with floweval-missing-data 1 "$fe" "$ckA" "$dir/nope.h5"
fails_with floweval-not-ckpt 1 "$fe" "$dir/test.h5" "$dir/test.h5"
fails_with floweval-no-ema 1 "$fe" "$ckB" "$dir/test.h5" --ema
fails_with floweval-usage 2 "$fe" "$ckA"
fails_with flowsample-missing-ckpt 1 "$fs" "$dir/nope.h5" grid -o "$dir/x.png"
fails_with flowsample-truncated-ckpt 1 "$fs" "$dir/trunc.h5" grid -o "$dir/x.png"
fails_with flowsample-other-shape 1 "$fs" "$ckA" interp --data "$dir/big.h5" --a 0 --b 1 -o "$dir/x.png"
fails_with flowsample-no-labels 1 "$fs" "$ckA" attribute --data "$dir/test.h5" --label 1 -o "$dir/x.png"
fails_with flowsample-absent-label 1 "$fs" "$ckA" attribute --data "$dir/lab.h5" --label 5 -o "$dir/x.png"
fails_with flowsample-index 1 "$fs" "$ckA" interp --data "$dir/lab.h5" --a 0 --b 24 -o "$dir/x.png"
fails_with flowsample-usage 2 "$fs" "$ckA" grid --temps 0,-1 -o "$dir/x.png"
[ ! -e "$dir/x.png" ]; check "flowsample-no-output" $? "no PNG written by a failed command"
# under mpiexec: every rank exits non-zero and the tool prints one line of its own
o=$(timeout 120 "$mpiexec" -n 2 "${mpi[@]}" "$fe" "$ckA" "$dir/big.h5" 2>&1); r=$?
c=$(grep -c '^floweval: ' <<<"$o")
check "floweval-other-shape-np2" $(( r != 0 && c == 1 ? 0 : 1 )) "exit $r, $c floweval line(s): $(grep '^floweval: ' <<<"$o")"

echo "$fails failed"
[ "$fails" -eq 0 ]
