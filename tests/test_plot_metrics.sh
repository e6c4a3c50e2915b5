#!/usr/bin/env bash
# Test of tools/plot-metrics: a small metrics.jsonl (train lines, test_bpd events,
# a start event, a nan and a resumed duplicate) gives a PNG in the run directory
# and at an explicit path; a missing file, a file without bpd values and a bad
# argument count fail with a message and a non-zero status, writing nothing.
set -uo pipefail

src=${FT_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
tool=$src/tools/plot-metrics
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

is_png() {   # the 8-byte PNG signature 89 50 4E 47 0D 0A 1A 0A
    [[ -s $1 && $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]
}

run=$tmp/run_a
mkdir -p "$run"
cat >"$run/metrics.jsonl" <<'JSON'
{"event":"start","world_size":2,"params":836736}
{"step":10,"epoch":0,"images":640,"train_bpd":7.398546,"lr":5.76e-05,"grad_norm":4.33718,"skipped":0,"img_per_s":59.85,"eta_s":53.5,"wall_s":10.694,"world_size":2}
{"step":20,"epoch":0,"images":1280,"train_bpd":7.148205,"lr":0.0001216,"grad_norm":4.19439,"skipped":0,"img_per_s":60.24,"eta_s":42.6,"wall_s":21.317,"world_size":2}
{"step":30,"epoch":0,"images":1920,"train_bpd":nan,"lr":0.0001856,"grad_norm":5.7427,"skipped":1,"img_per_s":65.60,"eta_s":31.1,"wall_s":31.073,"world_size":2}
{"event":"test_bpd","step":30,"epoch":0,"images":1920,"test_bpd":6.512,"wall_s":35.1}
{"step":40,"epoch":0,"images":2560,"train_bpd":6.511094,"lr":0.0002496,"grad_norm":44.6045,"skipped":0,"img_per_s":54.49,"eta_s":21.4,"wall_s":42.819,"world_size":2}
{"step":30,"epoch":0,"images":1920,"train_bpd":6.834218,"lr":0.0001856,"grad_norm":5.7427,"skipped":0,"img_per_s":65.60,"eta_s":31.1,"wall_s":3.0,"world_size":2}
{"step":60,"epoch":0,"images":3840,"train_bpd":6.03,"lr":0.0003,"grad_norm":3.1,"skipped":0,"img_per_s":60,"eta_s":0,"wall_s":64.0,"world_size":2}
{"event":"test_bpd","step":60,"epoch":0,"images":3840,"test_bpd":5.942995,"wall_s":67.777}
JSON

out=$("$tool" "$run" 2>&1) || fail "plot-metrics $run exited non-zero: $out"
is_png "$run/metrics.png" || fail "$run/metrics.png missing or not a PNG"
[[ $out == *"5 train, 2 test points"* ]] || fail "expected 5 train (nan skipped, resumed 1920 kept once) and 2 test points, got: $out"
[[ ! -e $run/metrics.png.tmp ]] || fail "temporary file left behind"

"$tool" "$run/" "$tmp/explicit.png" >/dev/null 2>&1 || fail "plot-metrics with OUT.png exited non-zero"
is_png "$tmp/explicit.png" || fail "$tmp/explicit.png missing or not a PNG"

# missing file: non-zero status, a message naming the file, no PNG
mkdir -p "$tmp/empty_run"
if err=$("$tool" "$tmp/empty_run" 2>&1); then
    fail "missing metrics.jsonl did not fail"
fi
[[ $err == *"empty_run/metrics.jsonl"* ]] || fail "missing-file message does not name the file: $err"
[[ ! -e $tmp/empty_run/metrics.png ]] || fail "a PNG was written for a missing file"

# no bpd values: start event only
mkdir -p "$tmp/no_data"
echo '{"event":"start","world_size":1,"params":10}' >"$tmp/no_data/metrics.jsonl"
if err=$("$tool" "$tmp/no_data" 2>&1); then
    fail "metrics.jsonl without values did not fail"
fi
[[ $err == *"no train_bpd or test_bpd"* ]] || fail "no-data message unexpected: $err"
[[ ! -e $tmp/no_data/metrics.png ]] || fail "a PNG was written without data"

# usage
if "$tool" >/dev/null 2>&1; then fail "no arguments did not fail"; fi

if (( fails )); then
    echo "test_plot_metrics: $fails failure(s)" >&2
    exit 1
fi
echo "test_plot_metrics: ok"
