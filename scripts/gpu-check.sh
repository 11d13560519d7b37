#!/usr/bin/env bash
# The GPU check of kernelsmith's runtime and strict verifier: the one script a GPU session runs.
#
#   scripts/gpu-check.sh prepare
#       On the CPU machine (Rust toolchain; NVRTC wheels via scripts/setup.sh): builds the release
#       ksmith binary and the GPU test binaries, and packs them with tasks/, the broken-kernel
#       corpus and NVRTC + CUDA headers into gpu-carry/kit.tar.xz (git-ignored, ~40-60 MB).
#
#   scripts/gpu-check.sh run [STEP...]
#       On the GPU machine (no Rust toolchain there, no network): unpacks the kit and runs the
#       steps, default all of them: runtime (verifier's gpu_runtime test), broken (the corpus
#       through workers: tests/gpu_broken.rs), eval (`ksmith eval --json` on every corpus
#       entry, checking verdict and exit code), references (every task's reference kernel
#       through its own strict check: tests/gpu_references.rs). Full logs go under $OUT/logs
#       (or gpu-carry/out/logs); a short table is printed last. Exit 0 when every step passed.
#
# With the device tool, one command may run at most 10 minutes: run the steps in separate calls,
#   run(command="bash scripts/gpu-check.sh run runtime broken", carry=["gpu-carry"])
#   run(command="bash scripts/gpu-check.sh run eval", carry=["gpu-carry"])
#   run(command="bash scripts/gpu-check.sh run references", carry=["gpu-carry"])
# If the references step does not fit in 10 minutes, split it by task id:
#   run(command="KSMITH_GPU_TASKS=swiglu,gemm_bf16 bash scripts/gpu-check.sh run references", ...)
# (ids: ls tasks/*/). KSMITH_GPU_FULL=1 checks every public shape instead of the first.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=gpu-carry
KIT_TAR=$CARRY/kit.tar.xz
say() { printf 'gpu-check: %s\n' "$*" >&2; }

test_exes() {
  # Paths of the test executables cargo built, from its JSON messages.
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
'
}

prepare() {
  # PROFILE=debug packs debug builds instead (for checking this script on a CPU machine).
  local profile=${PROFILE:-release} flag=--release
  [[ $profile == debug ]] && flag=
  scripts/setup.sh --tools-only
  say "building $profile binaries (this takes a while)"
  cargo build $flag --bin ksmith
  local stage=$CARRY/kit
  rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/verifier/tests" "$stage/tools/cuda/nvidia/cu13"
  {
    cargo test $flag --no-run --message-format=json -p ksmith --test gpu_broken --test gpu_references
    cargo test $flag --no-run --message-format=json -p verifier --test gpu_runtime --test broken_corpus
  } | test_exes | while read -r name exe; do
    cp "$exe" "$stage/bin/$name"
  done
  cp "target/$profile/ksmith" "$stage/bin/ksmith"
  for b in "$stage"/bin/*; do strip --strip-debug "$b" 2>/dev/null || true; done
  for t in gpu_broken gpu_references gpu_runtime broken_corpus; do
    [[ -x "$stage/bin/$t" ]] || { say "test binary $t was not built"; exit 1; }
  done
  cp -r tasks "$stage/tasks"
  cp -r verifier/tests/broken "$stage/verifier/tests/broken"
  local cu=tools/cuda/nvidia/cu13
  mkdir -p "$stage/$cu/lib"
  cp "$cu"/lib/libnvrtc.so.13 "$cu"/lib/libnvrtc-builtins.so.13.* "$stage/$cu/lib/"
  cp -r "$cu/include" "$stage/$cu/include"
  git rev-parse HEAD > "$stage/REVISION" 2>/dev/null || true
  say "packing $KIT_TAR"
  tar -C "$stage" -cf - . | xz -T0 -6 > "$KIT_TAR"
  rm -rf "$stage"
  local mib=$(( $(stat -c %s "$KIT_TAR") / 1048576 ))
  say "$KIT_TAR: ${mib} MiB"
  if (( mib > 60 )); then say "warning: over 60 MiB; the device tool carries at most 64 MiB"; fi
}

# --- run ----------------------------------------------------------------------------------
ROWS=()
row() { ROWS+=("$(printf '%-10s %-26s %-8s %s' "$1" "$2" "$3" "$4")"); }

run_logged() {
  # run_logged LOG TIMEOUT CMD... : output to LOG, returns the command's status.
  local log=$1 limit=$2; shift 2
  set +e
  timeout --signal=KILL "$limit" "$@" >"$log" 2>&1
  local rc=$?
  set -e
  return $rc
}

step_test() {
  # step_test STEP BINARY LIMIT: a prebuilt test binary, single-threaded, output kept.
  local step=$1 bin=$2 limit=$3 log="$LOGS/$1.log" rc=0
  run_logged "$log" "$limit" "$KIT/bin/$bin" --nocapture --test-threads=1 || rc=$?
  local summary
  summary=$(grep -E '^test result:' "$log" | tail -1 || true)
  if (( rc == 0 )); then row "$step" "$bin" ok "${summary:-no summary}"
  else row "$step" "$bin" FAIL "exit $rc; see logs/$step.log"; FAILED=1; fi
}

step_eval() {
  local total=0 bad=0
  for d in "$KIT"/verifier/tests/broken/*/; do
    local name expect want timeout_s json rc=0 kind want_exit
    name=$(basename "$d")
    expect="$d/expect.toml"
    want=$(sed -n 's/^verdict = \[\(.*\)\]/\1/p' "$expect" | tr -d '" ' )
    timeout_s=$(sed -n 's/^timeout_s = \([0-9]*\)/\1/p' "$expect")
    timeout_s=${timeout_s:-300}
    local shapes="small,awkward" heldout=1
    if grep -q '^shapes = \["small"\]' "$expect"; then shapes=small; heldout=0; fi
    set +e
    json=$(cd "$KIT" && timeout --signal=KILL $((timeout_s + 60)) "$KIT/bin/ksmith" eval --json \
      --tasks-dir "$KIT/tasks" --task swiglu "$d" --shapes "$shapes" --heldout "$heldout" \
      --seeds 0 --fresh-seed 20261124 --timeout "$timeout_s" 2>>"$LOGS/eval.stderr.log")
    rc=$?
    set -e
    printf '%s\n' "$json" > "$LOGS/eval-$name.json"
    # The top-level "kind" is the first: keys are sorted, and nested "kind"s (mutated buffers)
    # sit inside "verdict", after it.
    kind=$(printf '%s' "$json" | grep -o '"kind":"[a-z_]*"' | head -1 | cut -d'"' -f4 || true)
    want_exit=1; [[ "$want" == correct ]] && want_exit=0
    total=$((total + 1))
    if [[ ",$want," == *",$kind,"* && $rc -eq $want_exit ]]; then
      row eval "$name" ok "$kind (exit $rc)"
    else
      row eval "$name" FAIL "got ${kind:-nothing} exit $rc, want $want exit $want_exit"
      bad=$((bad + 1)); FAILED=1
    fi
  done
  row eval "(all)" "$([[ $bad == 0 ]] && echo ok || echo FAIL)" "$((total - bad))/$total as expected"
}

run_steps() {
  [[ -f "$KIT_TAR" ]] || { say "$KIT_TAR not found: run 'scripts/gpu-check.sh prepare' on the CPU machine and carry gpu-carry/"; exit 3; }
  OUTDIR=${OUT:-$PWD/gpu-carry/out}
  LOGS=$OUTDIR/logs
  mkdir -p "$LOGS"
  KIT=$(mktemp -d /tmp/ksmith-kit.XXXXXX)
  tar -C "$KIT" -xJf "$KIT_TAR"
  export KSMITH_HOME=$KIT KSMITH_ROOT=$KIT KSMITH_BIN=$KIT/bin/ksmith KSMITH_REQUIRE_GPU=1
  export KSMITH_TASKS_DIR=$KIT/tasks KSMITH_CACHE_DIR=$KIT/cache
  export LD_LIBRARY_PATH=$KIT/tools/cuda/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export RUST_BACKTRACE=1 KSMITH_KERNEL_TIMEOUT=10
  (nvidia-smi; nvidia-smi -q -d CLOCK,PERFORMANCE) > "$LOGS/nvidia-smi.txt" 2>&1 || true
  say "kit $(cat "$KIT/REVISION" 2>/dev/null || echo '?') unpacked in $KIT; logs in $LOGS"
  FAILED=0
  local steps=("$@")
  (( ${#steps[@]} )) || steps=(runtime broken eval references)
  for s in "${steps[@]}"; do
    say "step $s"
    case $s in
      runtime) step_test runtime gpu_runtime 300; step_test corpus-cpu broken_corpus 120 ;;
      broken) step_test broken gpu_broken 580 ;;
      eval) step_eval ;;
      references) step_test references gpu_references 580 ;;
      *) say "unknown step $s (runtime, broken, eval, references)"; exit 2 ;;
    esac
  done
  rm -rf "$KIT"
  {
    echo
    printf '%-10s %-26s %-8s %s\n' step what result detail
    printf '%s\n' "${ROWS[@]}"
  } | tee "$OUTDIR/summary.txt"
  return $FAILED
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run_steps "$@" ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
