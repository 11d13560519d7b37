#!/usr/bin/env bash
# The GPU check of kernelsmith: the one script a GPU session runs.
#
#   scripts/gpu-check.sh prepare
#       On the CPU machine (Rust toolchain; NVRTC wheels via scripts/setup.sh): builds the release
#       ksmith binary and the GPU test binaries, and packs them with tasks/, the broken-kernel
#       corpus, NVRTC + CUDA headers, scripts/compare-load-inline.py and a ninja binary (from
#       PyPI's `ninja` wheel; torch's load_inline needs it) into gpu-carry/kit.tar.xz
#       (git-ignored, ~40-60 MB).
#
#   scripts/gpu-check.sh run [STEP...]
#       On the GPU machine (no Rust toolchain there, no network): unpacks the kit (once per
#       machine: kept in $KSMITH_STATE, default /tmp/ksmith-gpu-state, while the machine stays
#       warm) and runs the steps. Full logs go under $OUT/logs (or gpu-carry/out/logs), results
#       (calibration, SQLite store) under $OUT/results; a short table is printed last. Exit 0
#       when every step passed. Steps:
#         runtime     verifier's gpu_runtime test + the corpus CPU test            ~1 min
#         broken      the broken-kernel corpus through workers (gpu_broken)         ~3-5 min
#         eval        `ksmith eval --json` on every corpus entry, then the median wall
#                     time of a whole uncached `ksmith eval` of swiglu's reference   ~2-4 min
#         references  every task's reference through its strict check, then the
#                     batch-invariant task's reference on shapes with M > 1           ~5-10 min (split)
#         spec        every task's reference vs spec.py through PyTorch (first
#                     public shape; KSMITH_GPU_FULL=1 all of them: ~12-15 min, split)
#                     + tests/eval_oracle.rs (the worker's PyTorch oracle)            ~3-5 min
#         agent       tests/gpu_run.rs: scripted `ksmith run` over 3 seed tasks on the
#                     GPU (correct kernels, speedups recorded, replay cached)          ~1-3 min
#         profile     tests/gpu_profile.rs: `ksmith profile` (ncu on exactly one call's
#                     launches), `ksmith audit` (compute-sanitizer: the reference
#                     clean, the corpus's smem_race / uninit_read found) and
#                     `ksmith eval --profile --sanitize` (both after a strict check)  ~2.5-4 min
#         info        `ksmith gpu info` (text and JSON), and `ksmith tasks launches
#                     --device gpu --json` (the launch analysis on this GPU)       ~15-30 s
#         calibrate   `ksmith gpu calibrate` (copy bandwidth, FMA, mma.sync and
#                     sm_90a wgmma peaks, launch overhead)                                         ~20-40 s
#         bench       `ksmith bench` on each task's realistic shape (calibrates first
#                     if needed): time, vs eager, vs compile, SOL%, throttled, and
#                     how many memory-bound references reach 50% SOL (#7/#8's bar);
#                     ~6-10 s per task with eager, +20-40 s per task with compile   see below
#         repeat      gpu_bench repeat_*: medians of 4 reference kernels (swiglu,
#                     layernorm_fwd, softmax_row, gemm_bf16) from two processes
#                     agree within 2 %; a kernel against itself is even; a short
#                     call's amortized time comes from a CUDA graph                 ~1.5-2 min
#         ncu         gpu_bench ncu_*: ksmith's median vs ncu gpu__time_duration
#                     median of the same kernel (5 %)                               ~2.5-3.5 min
#         loadinline  scripts/compare-load-inline.py: wall time of one candidate
#                     evaluation, ksmith vs KernelBench-style load_inline           ~2.5-4 min
#         mainloops   gemm_fp8_rowwise's, gemm_bf16's, mxfp4_emulated_gemm's and
#                     flash_attention_fwd's references (wgmma main loops on sm_90a) timed interleaved with
#                     the same sources built with their mma.sync main loops
#                     (*_FORCE_MMA_SYNC), all strict-checked, on every public shape:
#                     what wgmma buys on this GPU                                   ~4-6 min
#         capture     scripts/capture-profile-samples.sh: real ncu / compute-sanitizer
#                     output for the parsers' samples, under logs/captures          ~1-2 min
#
# Knobs: KSMITH_GPU_TASKS=id,id (references and bench: only these tasks); KSMITH_GPU_FULL=1
# (references: every public shape); KSMITH_BENCH_CHUNK=I/N (bench: the I-th of N slices of the
# suite); KSMITH_BENCH_BASELINE=eager|torch|none (default eager: torch.compile costs 20-40 s per
# task); KSMITH_BENCH_SHAPES=realistic|all|small|NAMES (default realistic); KSMITH_TIMING_TASKS
# (repeat, ncu); KSMITH_LOADINLINE_RUNS (default 2); KSMITH_GPU_BUDGET_S (default 570): the
# seconds this call may take in all (set it to the device call's limit_s minus ~30 when less
# device time than 10 minutes is left).
#
# The budget: a device call killed at its limit prints no table and copies no results, so every
# step's timeout is cut to what is left of the budget (less 15 s for the table), a step is not
# started with less than 30 s left (its row says so: run it in the next call), and the table is
# written to $OUT/summary.txt row by row.
#
# Device time: one command may run at most 10 minutes (keep each call under 9), a session has
# 30 minutes in all, a fresh machine takes ~2-3 minutes to start and is released after ~30 s
# idle: issue the calls back to back (the unpacked kit, the compile cache and the calibration
# then stay in $KSMITH_STATE between calls). All estimates below come from the CPU machine
# (NVRTC compiles the 63 references in 43 s on one thread; ~81 GB of inputs + outputs at the
# realistic shapes), none is measured on a GPU yet: every step prints its wall time in the
# table, and bench*.json holds per-task seconds, so re-plan after the first call.
# The whole plan needs more than one session's 30 minutes; in priority order:
#   1  run(command="bash scripts/gpu-check.sh run runtime info calibrate agent broken", carry=["gpu-carry"])
#        runtime + calibration + a scripted agent run + the broken corpus: ~7-9 min (+ start)
#   2  run(command="bash scripts/gpu-check.sh run eval references", carry=["gpu-carry"])
#        ~7-14 min: split with KSMITH_GPU_TASKS (two halves of `ls tasks/*/`) if the first
#        call's timings say so
#   3  run(command="bash scripts/gpu-check.sh run spec mainloops", carry=["gpu-carry"])  ~7-11 min
#        (if the first call's timings say spec is slow, run mainloops on its own)
#   4  run(command="KSMITH_BENCH_CHUNK=1/2 bash scripts/gpu-check.sh run bench", carry=["gpu-carry"])
#        ~32 tasks x 6-10 s (kernels + PyTorch eager, realistic shape) = ~4-5 min
#   5  run(command="KSMITH_BENCH_CHUNK=2/2 bash scripts/gpu-check.sh run bench", carry=["gpu-carry"])
#   6  run(command="bash scripts/gpu-check.sh run repeat ncu profile", carry=["gpu-carry"])  ~6-9 min
#   7  run(command="KSMITH_GPU_TASKS=swiglu,rmsnorm_residual,softmax_row,gemm_bf16 KSMITH_BENCH_BASELINE=torch bash scripts/gpu-check.sh run loadinline capture bench", carry=["gpu-carry"])
#        ~2.5-3 + 1-2 + 2-3 min (torch.compile on 4 realistic shapes) = ~6-8 min
# Short of time: bench with KSMITH_BENCH_BASELINE=none (kernels only, ~3-5 s per task). If a
# bench call is cut off, the tasks it finished are in logs/bench*.json (rewritten after every
# task). Task ids for KSMITH_GPU_TASKS: ls tasks/*/.
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

NINJA_WHEEL=ninja==1.13.2

fetch_ninja() {
  # The ninja binary from PyPI's manylinux wheel (~0.4 MB), for torch's load_inline on a GPU
  # machine without it. Missing network: a warning; the loadinline step then names what is
  # missing.
  local dest=$1 cache=target/ninja-wheel
  mkdir -p "$cache" "$dest"
  if ! ls "$cache"/ninja-*.whl >/dev/null 2>&1; then
    PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download --quiet --no-deps \
      --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.10 \
      -d "$cache" "$NINJA_WHEEL" || { say "warning: could not download $NINJA_WHEEL"; return 0; }
  fi
  python3 - "$cache" "$dest" <<'PY'
import glob, os, sys, zipfile
whl = sorted(glob.glob(os.path.join(sys.argv[1], "ninja-*.whl")))[-1]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/ninja"))
    out = os.path.join(sys.argv[2], "ninja")
    with open(out, "wb") as f:
        f.write(z.read(name))
    os.chmod(out, 0o755)
PY
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
    cargo test $flag --no-run --message-format=json -p ksmith --test gpu_broken --test gpu_references \
      --test gpu_bench --test gpu_run --test gpu_spec_agreement --test eval_oracle --test gpu_profile
    cargo test $flag --no-run --message-format=json -p verifier --test gpu_runtime --test broken_corpus
  } | test_exes | while read -r name exe; do
    cp "$exe" "$stage/bin/$name"
  done
  cp "target/$profile/ksmith" "$stage/bin/ksmith"
  for b in "$stage"/bin/*; do strip --strip-debug "$b" 2>/dev/null || true; done
  for t in gpu_broken gpu_references gpu_bench gpu_run gpu_spec_agreement eval_oracle gpu_profile gpu_runtime broken_corpus; do
    [[ -x "$stage/bin/$t" ]] || { say "test binary $t was not built"; exit 1; }
  done
  cp -r tasks "$stage/tasks"
  cp -r verifier/tests/broken "$stage/verifier/tests/broken"
  mkdir -p "$stage/scripts" && cp scripts/compare-load-inline.py "$stage/scripts/"
  fetch_ninja "$stage/tools/ninja"
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
# The table, appended row by row (run_steps writes its header): a call cut off still leaves it.
row() { printf '%-10s %-26s %-8s %s\n' "$1" "$2" "$3" "$4" >>"$OUTDIR/summary.txt"; }

budget_left() { echo $((DEADLINE - SECONDS - 15)); }

cut_limit() {
  # cut_limit SECONDS: that timeout, or less when the call's budget ends sooner (at least 1).
  local left
  left=$(budget_left)
  (( left < $1 )) || { echo "$1"; return; }
  (( left > 1 )) && echo "$left" || echo 1
}

run_logged() {
  # run_logged LOG TIMEOUT CMD... : output to LOG, returns the command's status.
  local log=$1 limit=$2 cut; shift 2
  cut=$(cut_limit "$limit")
  set +e
  timeout --signal=KILL "$cut" "$@" >"$log" 2>&1
  local rc=$?
  set -e
  if (( cut < limit )); then
    printf 'gpu-check: timeout cut from %d s to %d s by the call budget (KSMITH_GPU_BUDGET_S)\n' "$limit" "$cut" >>"$log"
  fi
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
  local total=0 bad=0 cut=
  for d in "$KIT"/verifier/tests/broken/*/; do
    local name expect want timeout_s json rc=0 kind want_exit task shapes heldout
    name=$(basename "$d")
    expect="$d/expect.toml"
    # One-line keys of expect.toml (verifier/tests/broken/README.md); defaults as in corpus.rs.
    want=$(sed -n 's/^verdict = \[\(.*\)\]/\1/p' "$expect" | tr -d '" ' )
    task=$(sed -n 's/^task = "\([A-Za-z0-9_-]*\)".*/\1/p' "$expect")
    task=${task:-swiglu}
    timeout_s=$(sed -n 's/^timeout_s = \([0-9]*\).*/\1/p' "$expect")
    timeout_s=${timeout_s:-300}
    shapes=$(sed -n 's/^shapes = \[\(.*\)\].*/\1/p' "$expect" | tr -d '" ')
    shapes=${shapes:-small,awkward}
    heldout=$(sed -n 's/^heldout = \([0-9]*\).*/\1/p' "$expect")
    heldout=${heldout:-1}
    if (( $(budget_left) < 20 )); then
      row eval "$name ..." SKIP "not run: the call's budget is spent (KSMITH_GPU_BUDGET_S)"
      cut=1; FAILED=1; break
    fi
    set +e
    json=$(cd "$KIT" && timeout --signal=KILL "$(cut_limit $((timeout_s + 60)))" "$KIT/bin/ksmith" eval --json \
      --tasks-dir "$KIT/tasks" --task "$task" "$d" --shapes "$shapes" --heldout "$heldout" \
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
  row eval "(all)" "$([[ $bad == 0 && -z $cut ]] && echo ok || echo FAIL)" "$((total - bad))/$total as expected${cut:+ (the rest not run)}"
  step_eval_wall
}

step_eval_wall() {
  # Issue 3's number: the wall time of one whole `ksmith eval` (NVRTC compile without the cache,
  # worker start, strict protocol over every public shape, held-out shapes, 3 seeds) of a small
  # task's kernel (swiglu's reference); median of KSMITH_EVAL_RUNS (default 5) runs.
  local runs=${KSMITH_EVAL_RUNS:-5} i rc ms=() bad=0
  for ((i = 0; i < runs; i++)); do
    local t0 t1
    if (( $(budget_left) < 20 )); then runs=$i; break; fi
    t0=$(date +%s%N)
    set +e
    (cd "$KIT" && timeout --signal=KILL "$(cut_limit 120)" "$KIT/bin/ksmith" --no-cache eval --json --tasks-dir "$KIT/tasks" --task swiglu \
      --reference >"$LOGS/eval-wall-$i.json" 2>>"$LOGS/eval.stderr.log")
    rc=$?
    set -e
    t1=$(date +%s%N)
    (( rc == 0 )) || bad=$((bad + 1))
    ms+=($(( (t1 - t0) / 1000000 )))
  done
  local med
  if (( runs == 0 )); then row eval "wall: swiglu reference" SKIP "the call's budget is spent"; FAILED=1; return; fi
  med=$(printf '%s\n' "${ms[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  if (( bad == 0 )); then row eval "wall: swiglu reference" ok "median ${med} ms over $runs runs (${ms[*]} ms)"
  else row eval "wall: swiglu reference" FAIL "$bad of $runs runs did not exit 0; see logs/eval-wall-*.json"; FAILED=1; fi
}

step_batch_reference() {
  # The reference of the batch-invariant task through its own strict check on public shapes with
  # M > 1, so the [checks.batch_invariant] single-row probes run on the device (gpu_references
  # checks its first shape, m1, where there is nothing to probe).
  local t0=$SECONDS rc=0 log=$LOGS/batch-reference.json
  set +e
  (cd "$KIT" && timeout --signal=KILL "$(cut_limit 400)" "$KIT/bin/ksmith" eval --json --tasks-dir "$KIT/tasks" \
    --task hspi_batch_invariant_matmul --reference --shapes m7,m64,m333 --heldout 1 --seeds 0 \
    >"$log" 2>"$LOGS/batch-reference.stderr.log")
  rc=$?
  set -e
  local kind
  kind=$(grep -o '"kind":"[a-z_]*"' "$log" | head -1 | cut -d'"' -f4 || true)
  if (( rc == 0 )); then row references "hspi batch invariance" ok "${kind:-?} on m7,m64,m333 + 1 held-out ($(step_secs $t0))"
  else row references "hspi batch invariance" FAIL "exit $rc ${kind:-}; see logs/batch-reference.json"; FAILED=1; fi
}

step_secs() { printf '%d s' $((SECONDS - $1)); }

# One-line summaries of the steps' output files for the table (python3 is on the GPU machine).
read -r -d '' SUMMARY_PY <<'PY' || true
import json, re, sys

def load(path):
    """The first JSON object in a log that may hold progress lines around it."""
    t = open(path).read()
    return json.JSONDecoder().raw_decode(t, t.index("{"))[0]

def info(path):
    v = load(path)
    d = v["device"]
    nvml = v["nvml"]["unavailable"] or "ok"
    return (f"{d['name']}, {d['sm_count']} SMs, driver {v.get('driver') or v['cuda_driver_api']}, "
            f"NVRTC {v.get('nvrtc')}, NVML {nvml}")

def calibrate(path):
    v = load(path)
    peaks = ", ".join(f"{k} {r['per_s'] / 1e12:.0f}T{'(wgmma)' if r['method'].startswith('wgmma') else ''}"
                      for k, r in v["peaks"].items())
    skipped = f"; skipped {','.join(v['skipped'])}" if v["skipped"] else ""
    launch = f"; launch {v['launch']['median_ms'] * 1e3:.1f} us" if v.get("launch") else ""
    return f"copy {v['bandwidth']['per_s'] / 1e9:.0f} GB/s; {peaks}{launch}{skipped}"

def bench(path):
    v = json.load(open(path))
    rows = v.get("rows", [])
    timed = {r["task"] for r in rows
             if r.get("kernel") == "reference" and r.get("median_ms") is not None}
    bad = [f"{r['task']}: {r['problem'][:60]}" for r in rows if r.get("problem")]
    t = v.get("totals") or {}
    def g(k, unit):
        return "n/a" if t.get(k) is None else f"{t[k]:.2f}{unit}"
    head = "PARTIAL " if v.get("partial") else ""
    tail = f" ({bad[0]} ...)" if bad else ""
    mem = ""
    if t.get("memory_bound"):
        short = t.get("memory_bound_short") or []
        launch = sum(1 for s in short if s.get("launch_bound"))
        mem = (f"memory-bound >=50% SOL {t.get('memory_bound_on_target', 0)}/{t['memory_bound']}"
               f"{f' ({launch} launch-bound)' if launch else ''}; ")
    return (f"{head}{len(timed)} tasks timed in {v.get('wall_s', 0):.0f} s; geomean vs eager "
            f"{g('geomean_vs_eager', 'x')}, vs compile {g('geomean_vs_compile', 'x')}, "
            f"SOL {g('geomean_sol_pct', '%')}; {mem}throttled {t.get('throttled', '?')}; "
            f"{len(bad)} problems{tail}")

def mainloops(path):
    v = json.load(open(path))
    rows = v.get("rows", [])
    ref = {r["shape"]: r for r in rows if r.get("kernel") == "reference"}
    out = []
    for r in rows:
        k = r.get("kernel")
        if k in ("reference", "-") or r.get("shape") not in ref:
            continue
        a, b = ref[r["shape"]].get("median_ms"), r.get("median_ms")
        if a is None or b is None:
            out.append(f"{r['shape']}: {(r.get('problem') or ref[r['shape']].get('problem') or 'not timed')[:50]}")
        else:
            # vs_reference (reference / candidate) comes from the interleaved samples.
            x = 1 / r["vs_reference"] if r.get("vs_reference") else b / a
            sol = ref[r["shape"]].get("sol_pct")
            sol = "" if sol is None else f", SOL {sol:.0f}%"
            out.append(f"{r['shape']}: wgmma {a * 1e3:.0f} us vs mma.sync {b * 1e3:.0f} us = {x:.2f}x{sol}")
    return "; ".join(out) or "no rows"

def table(path):
    rows = re.findall(r"^(.+?)\s+([\d.]+) us\s+([\d.]+) us\s+([\d.]+)%\s+(ok|FAIL|not judged.*)$",
                      open(path).read(), re.M)
    judged = [float(r[3]) for r in rows if r[4] in ("ok", "FAIL")]
    worst = f"{max(judged):.2f}%" if judged else "n/a"
    n = lambda pred: sum(1 for r in rows if pred(r[4]))
    return (f"{n(lambda x: x == 'ok')} ok, {n(lambda x: x == 'FAIL')} FAIL, "
            f"{n(lambda x: x.startswith('not'))} not judged; worst diff {worst}")

try:
    print({"info": info, "calibrate": calibrate, "bench": bench, "table": table,
           "mainloops": mainloops}[sys.argv[1]](sys.argv[2]))
except Exception as e:
    print(f"(no summary: {type(e).__name__}: {e})")
PY

summary() { python3 -c "$SUMMARY_PY" "$@" 2>&1 | tail -1; }

first_error() {
  # The first line of LOG that says what went wrong (for a failed step's table row).
  # (A panic's message is on the line after "panicked at".)
  grep -m1 -A1 -E 'error:|"error"|panicked|missing:|Error|FAIL' "$1" 2>/dev/null | tr '\n' ' ' \
    | cut -c1-200 || true
}

step_info() {
  local t0=$SECONDS rc=0
  run_logged "$LOGS/info.log" 120 "$KIT/bin/ksmith" gpu info --results "$RESULTS" || rc=$?
  run_logged "$LOGS/info.json" 120 "$KIT/bin/ksmith" gpu info --json --results "$RESULTS" || rc=$?
  # The launch analysis on this GPU's own limits, to set beside the H100 model's (CPU) numbers.
  (cd "$KIT" && run_logged "$LOGS/launches-gpu.json" 300 "$KIT/bin/ksmith" --tasks-dir "$KIT/tasks" \
    tasks launches --device gpu --json) || rc=$?
  local d
  d=$(summary info "$LOGS/info.json")
  if (( rc == 0 )); then row info "ksmith gpu info" ok "$d ($(step_secs $t0))"
  else row info "ksmith gpu info" FAIL "exit $rc: $(first_error "$LOGS/info.log")"; FAILED=1; fi
}

step_calibrate() {
  local t0=$SECONDS rc=0
  run_logged "$LOGS/calibration.json" 300 "$KIT/bin/ksmith" gpu calibrate --json --results "$RESULTS" || rc=$?
  local d
  d=$(summary calibrate "$LOGS/calibration.json")
  if (( rc == 0 )); then row calibrate "ksmith gpu calibrate" ok "$d ($(step_secs $t0))"
  else row calibrate "ksmith gpu calibrate" FAIL "exit $rc: $(first_error "$LOGS/calibration.json")"; FAILED=1; fi
}

have_calibration() {
  "$KIT/bin/ksmith" gpu info --json --results "$RESULTS" 2>/dev/null \
    | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("calibration") else 1)'
}

step_bench() {
  have_calibration || step_calibrate
  local t0=$SECONDS rc=0 label=bench baseline=${KSMITH_BENCH_BASELINE:-eager}
  local args=(--shapes "${KSMITH_BENCH_SHAPES:-realistic}" --baseline "$baseline"
              --compile-shapes realistic --results "$RESULTS" --timeout 300)
  if [[ -n ${KSMITH_BENCH_CHUNK:-} ]]; then args+=(--chunk "$KSMITH_BENCH_CHUNK"); label+="-${KSMITH_BENCH_CHUNK/\//of}"; fi
  if [[ -n ${KSMITH_GPU_TASKS:-} ]]; then args+=(--tasks "$KSMITH_GPU_TASKS"); label+="-tasks"; fi
  label+="-$baseline"
  run_logged "$LOGS/$label.log" 560 "$KIT/bin/ksmith" bench "${args[@]}" --json-out "$LOGS/$label.json" || rc=$?
  local d
  d=$(summary bench "$LOGS/$label.json")
  if (( rc == 0 )); then row bench "$label" ok "$d ($(step_secs $t0))"
  else
    [[ -f $LOGS/$label.json ]] || d=$(first_error "$LOGS/$label.log")
    row bench "$label" FAIL "exit $rc: $d; see logs/$label.log ($(step_secs $t0))"; FAILED=1
  fi
}

step_mainloops() {
  # Each GEMM reference (wgmma main loop on sm_90a) against its own source with one define in
  # front (the mma.sync main loop): no copy of either in the repo.
  have_calibration || step_calibrate
  local pair
  for pair in gemm_fp8_rowwise:GEMM_FP8_FORCE_MMA_SYNC gemm_bf16:GEMM_BF16_FORCE_MMA_SYNC \
              mxfp4_emulated_gemm:MXFP4_FORCE_MMA_SYNC flash_attention_fwd:FA_FORCE_MMA_SYNC; do
    local id=${pair%%:*} define=${pair#*:} t0=$SECONDS rc=0 task dir d
    task=$(dirname "$(ls "$KIT"/tasks/*/"$id"/task.toml)")
    dir=$KIT/candidates/$id/mma_sync
    mkdir -p "$dir"
    { echo "#define $define 1"; cat "$task/reference.cu"; } > "$dir/kernel.cu"
    cp "$task/reference.toml" "$dir/launch.toml"
    run_logged "$LOGS/mainloops-$id.log" 400 "$KIT/bin/ksmith" bench --tasks "$id" --candidate "$dir" \
      --shapes all --baseline eager --results "$RESULTS" --timeout 300 --json-out "$LOGS/mainloops-$id.json" || rc=$?
    d=$(summary mainloops "$LOGS/mainloops-$id.json")
    if (( rc == 0 )); then row mainloops "$id wgmma/mma.sync" ok "$d ($(step_secs $t0))"
    else
      [[ -f $LOGS/mainloops-$id.json ]] || d=$(first_error "$LOGS/mainloops-$id.log")
      row mainloops "$id wgmma/mma.sync" FAIL "exit $rc: $d; see logs/mainloops-$id.log ($(step_secs $t0))"; FAILED=1
    fi
  done
}

step_gpu_bench() {
  # step_gpu_bench STEP FILTER LIMIT: tests/gpu_bench.rs tests named FILTER*, tables under
  # logs/timing/.
  local step=$1 filter=$2 limit=$3 t0=$SECONDS rc=0
  export KSMITH_OUT_DIR=$LOGS/timing
  run_logged "$LOGS/$step.log" "$limit" "$KIT/bin/gpu_bench" "$filter" --nocapture --test-threads=1 || rc=$?
  local d
  d=$(summary table "$KSMITH_OUT_DIR/$step.txt")
  if grep -q '^skipped' "$LOGS/$step.log"; then row "$step" gpu_bench SKIP "$(grep -m1 '^skipped' "$LOGS/$step.log")"; FAILED=1
  elif (( rc == 0 )); then row "$step" gpu_bench ok "$d ($(step_secs $t0))"
  else
    [[ -f $KSMITH_OUT_DIR/$step.txt ]] || d=$(first_error "$LOGS/$step.log")
    row "$step" gpu_bench FAIL "exit $rc: $d; see logs/$step.log ($(step_secs $t0))"; FAILED=1
  fi
}

step_loadinline() {
  local t0=$SECONDS rc=0 old_path=$PATH
  export PATH=$PATH:/usr/local/cuda/bin
  command -v ninja >/dev/null || export PATH=$PATH:$KIT/tools/ninja
  run_logged "$LOGS/loadinline.log" 560 python3 "$KIT/scripts/compare-load-inline.py" \
    --ksmith "$KIT/bin/ksmith" --tasks-dir "$KIT/tasks" --out "$LOGS" \
    --runs "${KSMITH_LOADINLINE_RUNS:-2}" || rc=$?
  export PATH=$old_path
  local d
  d=$(grep -E '^ratio load_inline' "$LOGS/loadinline.log" || grep -m1 'missing:' "$LOGS/loadinline.log" || echo "no ratio")
  if (( rc == 0 )); then row loadinline compare-load-inline ok "$d ($(step_secs $t0))"
  else row loadinline compare-load-inline FAIL "exit $rc: $d; see logs/loadinline.log"; FAILED=1; fi
}

step_capture() {
  # Real ncu and compute-sanitizer output for the parsers' samples (scripts/capture-profile-
  # samples.sh, run from this repository copy), into logs/captures/.
  local t0=$SECONDS rc=0 dir=$LOGS/captures
  export OUT_SAVED=${OUT:-} OUT=$dir KSMITH=$KIT/bin/ksmith
  export KSMITH_NVRTC=$KIT/tools/cuda/nvidia/cu13/lib/libnvrtc.so.13
  run_logged "$LOGS/capture.log" 560 bash scripts/capture-profile-samples.sh || rc=$?
  export OUT=$OUT_SAVED
  unset KSMITH KSMITH_NVRTC OUT_SAVED
  local ok total
  total=$(grep -c '^   exit' "$dir/capture.log" 2>/dev/null || true)
  ok=$(grep -c '^   exit 0$' "$dir/capture.log" 2>/dev/null || true)
  local missing
  missing=$(grep -c '^   exit 127$' "$dir/capture.log" 2>/dev/null || true)
  local d="$total captures ($ok exit 0, ${missing:-0} tool not found; failing ones are samples too); copy logs/captures/{ncu_*,sanitizer_*} to bench-suite/tests/samples/captured/"
  if (( rc == 0 && ${total:-0} > 0 && ${missing:-0} == 0 )); then row capture capture-profile-samples ok "$d ($(step_secs $t0))"
  else row capture capture-profile-samples FAIL "exit $rc: $d"; FAILED=1; fi
}

unpack_kit() {
  # The kit, unpacked once per machine (and again when the carried tar changes); its compile
  # cache lives beside it.
  local state=${KSMITH_STATE:-/tmp/ksmith-gpu-state} sum
  sum=$(cksum < "$KIT_TAR")
  KIT=$state/kit
  if [[ ! -f $state/kit.sum || "$(cat "$state/kit.sum")" != "$sum" ]]; then
    rm -rf "$KIT" && mkdir -p "$KIT"
    tar -C "$KIT" -xJf "$KIT_TAR"
    printf '%s' "$sum" > "$state/kit.sum"
  fi
  RESULTS=$state/results
  mkdir -p "$RESULTS"
}

run_steps() {
  [[ -f "$KIT_TAR" ]] || { say "$KIT_TAR not found: run 'scripts/gpu-check.sh prepare' on the CPU machine and carry gpu-carry/"; exit 3; }
  OUTDIR=${OUT:-$PWD/gpu-carry/out}
  LOGS=$OUTDIR/logs
  mkdir -p "$LOGS"
  DEADLINE=$((SECONDS + ${KSMITH_GPU_BUDGET_S:-570}))
  { echo; printf '%-10s %-26s %-8s %s\n' step what result detail; } >"$OUTDIR/summary.txt"
  unpack_kit
  export KSMITH_HOME=$KIT KSMITH_ROOT=$KIT KSMITH_BIN=$KIT/bin/ksmith KSMITH_REQUIRE_GPU=1
  export KSMITH_TASKS_DIR=$KIT/tasks KSMITH_CACHE_DIR=$KIT/cache
  export KSMITH_DB=sqlite://$RESULTS/ksmith.db
  export LD_LIBRARY_PATH=$KIT/tools/cuda/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export RUST_BACKTRACE=1 KSMITH_KERNEL_TIMEOUT=10 KSMITH_REQUIRE_NCU=1
  export PATH=$PATH:/usr/local/cuda/bin
  (nvidia-smi; nvidia-smi -q -d CLOCK,PERFORMANCE) > "$LOGS/nvidia-smi.txt" 2>&1 || true
  say "kit $(cat "$KIT/REVISION" 2>/dev/null || echo '?') in $KIT; logs in $LOGS"
  FAILED=0
  local steps=("$@")
  (( ${#steps[@]} )) || steps=(runtime broken eval references)
  for s in "${steps[@]}"; do
    if (( $(budget_left) < 30 )); then
      row "$s" "(not started)" SKIP "the call's budget is spent (KSMITH_GPU_BUDGET_S): run it in the next call"
      FAILED=1; continue
    fi
    say "step $s"
    case $s in
      runtime) step_test runtime gpu_runtime 300; step_test corpus-cpu broken_corpus 120 ;;
      broken) step_test broken gpu_broken 580 ;;
      eval) step_eval ;;
      references) step_test references gpu_references 580; step_batch_reference ;;
      info) step_info ;;
      calibrate) step_calibrate ;;
      bench) step_bench ;;
      repeat) step_gpu_bench repeat repeat_ 560 ;;
      ncu) step_gpu_bench ncu ncu_ 560 ;;
      loadinline) step_loadinline ;;
      mainloops) step_mainloops ;;
      capture) step_capture ;;
      agent) step_test agent gpu_run 420 ;;
      profile)
        export KSMITH_REQUIRE_SANITIZER=1 KSMITH_GPU_OUT=$LOGS/profile
        step_test profile gpu_profile 420 ;;
      spec)
        export KSMITH_SPEC_AGREEMENT_OUT=$LOGS/spec-agreement.jsonl
        step_test oracle eval_oracle 300
        step_test spec gpu_spec_agreement 580 ;;
      *) say "unknown step $s (runtime, broken, eval, references, spec, agent, profile, info, calibrate, bench, repeat, ncu, loadinline, mainloops, capture)"; exit 2 ;;
    esac
  done
  mkdir -p "$OUTDIR/results" && cp -r "$RESULTS"/. "$OUTDIR/results/" 2>/dev/null || true
  cat "$OUTDIR/summary.txt"
  return $FAILED
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run_steps "$@" ;;
  # The table's one-line summary of a step's output file (CPU tests check it on real output).
  summary) shift; summary "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
