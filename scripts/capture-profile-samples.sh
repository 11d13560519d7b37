#!/usr/bin/env bash
# Captures real Nsight Compute and compute-sanitizer output on a GPU machine, for the parsers in
# bench-suite/src/profile/ (whose checked-in samples are hand-written from NVIDIA's docs), and
# runs the PyTorch runner's tests against the real torch.
#
#   OUT=/some/dir scripts/capture-profile-samples.sh        (from anywhere in the repo)
#
# Needs: ncu, compute-sanitizer, python3 and NVRTC (tools/cuda from setup, $KSMITH_NVRTC, or the
# nvidia-cuda-nvrtc wheel next to torch). Optional: KSMITH=path/to/ksmith with `ksmith eval`, to
# also profile a task's reference kernel through the harness; TORCH_TEST_BIN=the compiled
# bench-suite `torch_runner` test binary, to run the embedded runner on a real task.
# Afterwards: copy $OUT/ncu_*.csv, $OUT/ncu_err_*.txt and $OUT/sanitizer_*.txt to
# bench-suite/tests/samples/captured/ and run
#   cargo test -p bench-suite --test profile captured_samples_parse -- --nocapture
set -uo pipefail # not -e: every capture is independent, and a failing one is itself a sample

OUT=${OUT:?set OUT to the directory that receives the captures}
NCU=${NCU:-ncu}
SAN=${SANITIZER:-compute-sanitizer}
PY=${PYTHON:-python3}
KSMITH=${KSMITH:-}
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
LOG="$OUT/capture.log"
: >"$LOG"
export LC_ALL=C # ncu's number format follows the locale; the parser expects C's

# The metric list the harness requests, read from the source so the two cannot drift.
METRICS=$(sed -n '/^pub const METRICS/,/^];/p' bench-suite/src/profile/ncu.rs | grep -o '"[^"]*"' | tr -d '"' | paste -sd, -)
KERNELS=("$PY" bench-suite/python/capture_kernels.py)

capture() { # capture FILE CMD... : stdout+stderr to $OUT/FILE, exit code to the log
    local file=$1
    shift
    echo "== $file: $*" >>"$LOG"
    # A capture that hangs (a deadlocked barrier) must not eat the device call's 10 minutes.
    timeout "${CAPTURE_TIMEOUT:-120}" "$@" >"$OUT/$file" 2>&1
    echo "   exit $?" >>"$LOG"
}

ncu_args() { # ncu_args REGEX SKIP [METRICS]: as bench_suite::profile::ncu::NcuTarget::args
    echo --clock-control none --target-processes all --print-units base -k "regex:$1" -s "$2" -c 1 --csv --page raw --metrics "${3:-$METRICS}"
}

san_args() { # san_args TOOL: as bench_suite::profile::sanitizer::Tool::args
    echo --tool "$1" --print-limit 100 --show-backtrace device
    [ "$1" = racecheck ] && echo --racecheck-report all
}

{
    echo "date: $(date -u)"
    nvidia-smi 2>&1 | head -20
    "$NCU" --version 2>&1
    "$SAN" --version 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1
    "${KERNELS[@]}" scale --compile-only 2>&1
} >"$OUT/versions.txt"

# Nsight Compute: two kernels (the third launch of each), then the error cases.
# shellcheck disable=SC2046
capture ncu_raw_transpose.csv "$NCU" $(ncu_args transpose_smem 2) "${KERNELS[@]}" transpose
# shellcheck disable=SC2046
capture ncu_raw_scale.csv "$NCU" $(ncu_args '^scale$' 2) "${KERNELS[@]}" scale
# shellcheck disable=SC2046
capture ncu_err_unknown_metric.txt "$NCU" $(ncu_args scale 0 gpu__time_duration.sum,ksmith__no_such_metric.sum) "${KERNELS[@]}" scale
# shellcheck disable=SC2046
capture ncu_err_no_kernels.txt "$NCU" $(ncu_args no_such_kernel 0) "${KERNELS[@]}" scale

# compute-sanitizer: one finding per tool, and clean runs.
for spec in memcheck:oob racecheck:race initcheck:uninit synccheck:barrier \
    memcheck:scale:clean racecheck:transpose:clean initcheck:scale:clean synccheck:transpose:clean; do
    IFS=: read -r tool case clean <<<"$spec"
    # shellcheck disable=SC2046
    capture "sanitizer_${tool}_${case}${clean:+_clean}.txt" "$SAN" $(san_args "$tool") "${KERNELS[@]}" "$case"
done

# Through the harness, once `ksmith eval` exists.
TASK=tasks/normalization/rmsnorm_residual
if [ -n "$KSMITH" ] && "$KSMITH" eval --help >/dev/null 2>&1; then
    # The small public shape only (>= 12 launches: reference and candidate twice, 3 seeds and
    # stress): every shape and 2 held-out ones (up to 16384 x 8192) under memcheck risk the
    # capture's timeout for no new output format.
    EVAL=("$KSMITH" eval --task rmsnorm_residual "$TASK/reference.cu" --plan "$TASK/reference.toml"
        --shapes small --heldout 0)
    # shellcheck disable=SC2046
    capture ncu_raw_ksmith_rmsnorm_residual.csv "$NCU" $(ncu_args rmsnorm_residual 5) "${EVAL[@]}"
    # shellcheck disable=SC2046
    capture sanitizer_memcheck_ksmith_rmsnorm_residual_clean.txt "$SAN" $(san_args memcheck) "${EVAL[@]}"
else
    echo "== ksmith eval not available (KSMITH='$KSMITH'): harness captures skipped" >>"$LOG"
fi

# The PyTorch runner against the real torch (its GPU tests skip without one).
# (A cold torch.compile takes 20-60 s of this: a longer limit than a capture's.)
CAPTURE_TIMEOUT=${CAPTURE_TIMEOUT:-300} capture torch_runner_python_tests.txt "$PY" -m unittest discover -v -s bench-suite/python/tests -t bench-suite/python
if [ -n "${TORCH_TEST_BIN:-}" ]; then
    capture torch_runner_rust_tests.txt env KSMITH_REQUIRE_TORCH=1 "$TORCH_TEST_BIN" --nocapture
fi

cat "$LOG"
