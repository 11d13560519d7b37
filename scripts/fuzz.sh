#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser of input from outside the
# program: task directories (task.toml + plan.toml + kernel source, and what a valid task leads
# to), expressions, LLM replies and HTTP bodies, Nsight Compute / compute-sanitizer / ptxas / PTX
# text, PTX run by the emulator, worker protocol lines, the LLM profiles file, run exports (`ksmith db import`), output
# comparison on arbitrary bits, and the include allowlist against the real NVRTC preprocessor
# (include_escape: a planted header or /etc/passwd must never reach the compile log).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     default: 120 s, every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); CI does not run it
# (stable only, and a campaign takes minutes). Seeds come from the repository on every run.
# A crash leaves its input under fuzz/artifacts/TARGET/; turn it into a unit test next to the
# parser, which CI then runs. Overflow checks and debug assertions are on (-a); leak detection is
# off (threads' thread-local destructors read as leaks, and a leak is not a Rust safety bug).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-120}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(task_plan expr llm_reply tool_output worker_line llm_config compare run_export include_escape ptx_emulate)
fi
jobs="${KSMITH_FUZZ_JOBS:-1}"
# libFuzzer runs -jobs in child processes that log to fuzz/fuzz-N.log; one job runs inline.
parallel=()
[[ "$jobs" -gt 1 ]] && parallel=(-jobs="$jobs" -workers="$jobs")

sep=$'\n#~~~~ksmith-fuzz~~~~\n'
seed() { # seed TARGET NAME < content
  mkdir -p "fuzz/seeds/$1"
  cat > "fuzz/seeds/$1/$2"
}
# A task directory as task_plan reads it: task.toml, plan and source, whichever it has.
task_dir() {
  cat "$1/task.toml"; printf '%s' "$sep"; cat "$1/reference.toml" 2>/dev/null || true
  printf '%s' "$sep"; cat "$1/reference.cu" 2>/dev/null || true
}
rm -rf fuzz/seeds
for dir in tasks/*/*/ verifier/tests/fixtures/malformed/*/; do
  [[ -f "$dir/task.toml" ]] || continue
  id="$(basename "$dir")"
  if [[ "$dir" != tasks/* ]]; then
    task_dir "$dir" | seed task_plan "malformed-$id"
    continue
  fi
  task_dir "$dir" | seed task_plan "$id"
  plan="$dir/reference.toml"
  # Expressions as task and plan files write them: every quoted string with an operator.
  grep -ohE '"[^"]*[-+*/%()<>=&|][^"]*"' "$dir/task.toml" "$plan" 2>/dev/null | tr -d '"' \
    | head -40 | nl -ba | while read -r n e; do printf '%s' "$e" | seed expr "$id-$n"; done
  # A reply as a model writes it: prose, a fenced kernel and its plan.
  { printf 'Here is the kernel.\n\n```cuda\n'; cat "$dir/reference.cu" 2>/dev/null || true
    printf '```\n\n```toml\n'; cat "$plan" 2>/dev/null || true; printf '```\n'; } | seed llm_reply "$id"
done
for f in bench-suite/tests/samples/*.txt bench-suite/tests/samples/*.csv; do
  seed tool_output "$(basename "$f")" < "$f"
done
seed llm_config example < agent/llm.example.toml
# ptxas's real report for every reference kernel (NVRTC runs here, no GPU needed).
if [[ -x target/release/ksmith ]]; then
  target/release/ksmith tasks check --json 2>/dev/null | python3 -c '
import json, sys, os
for row in json.load(sys.stdin)["tasks"]:
    if row.get("log"):
        with open(os.path.join("fuzz/seeds/tool_output", "ptxas-" + row["id"]), "w") as f:
            f.write(row["log"])
' || echo "(no ptxas seeds: ksmith tasks check failed)"
fi
seed run_export v1 < bench-suite/tests/samples/run_export_v1.json
# The PTX of every reference kernel, compiled for the emulator's target (sm_90), for ptx_emulate.
if [[ -x target/release/ksmith ]]; then
  ptx_cache="$(mktemp -d)"
  target/release/ksmith --arch sm_90 --cache-dir "$ptx_cache" tasks check > /dev/null 2>&1 || true
  n=0
  while IFS= read -r f; do
    n=$((n + 1)); seed ptx_emulate "ref-$n" < "$f"
  done < <(find "$ptx_cache" -name kernel.ptx | sort)
  rm -rf "$ptx_cache"
fi
# A stored calibration (results/calibration/*.json) and PTX with an emulated FP8 mma.sync.
seed tool_output calibration <<'EOF'
{"version":5,"gpu_key":"NVIDIA H100 80GB HBM3|sm_90|driver 13.0","device":"H100","arch":"sm_90a","measured_at":0,"bandwidth":{"per_s":3.0e12,"method":"copy","repetitions":10,"best_ms":0.7},"copy_kernel":null,"memcpy_dtod":null,"peaks":{"bf16_tensor":{"per_s":9.0e14,"method":"wgmma","repetitions":10,"best_ms":20.0}},"skipped":{"fp64":"x"},"launch":{"median_ms":0.002,"p20_ms":0.0019,"p80_ms":0.0021,"samples":200,"method":"empty kernel"},"telemetry":{"unavailable":null,"before":null,"after":null,"throttled_samples":0,"checked_samples":0}}
EOF
seed tool_output ptx-fp8 <<'EOF'
.visible .entry k(.param .u64 k_param_0)
{
	mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};
}
EOF
seed llm_reply completion <<'EOF'
{"id":"c1","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"```cuda\n__global__ void k(float* y) { y[threadIdx.x] = 1.0f; }\n```","reasoning_content":"think"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}
EOF
seed llm_reply error <<'EOF'
{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}
EOF
seed llm_reply retry_after <<'EOF'
Wed, 21 Oct 2026 07:28:00 GMT
EOF
seed worker_line ping <<'EOF'
{"id":1,"kind":"ping"}
EOF
seed worker_line evaluate <<'EOF'
{"id":5,"kind":"evaluate","task_dir":"t","source":"s","plan":"p","options":{"seeds":[1,2],"fresh_seed":3,"shapes":["small"],"heldout_shapes":2,"heldout_seed":4,"heldout_max_bytes":1048576,"stress":true,"determinism":true,"oracle":"pytorch"}}
EOF
seed worker_line evaluated <<'EOF'
{"id":1,"kind":"evaluated","verdict":{"verdict":"correct","cases":1,"nondeterministic_within_tolerance":[]},"elapsed_ms":1}
EOF
seed worker_line harness_error <<'EOF'
{"id":0,"kind":"harness_error","message":"unserializable message"}
EOF
head -c 4096 /dev/urandom | seed compare random

# include_escape: the ways to spell an include that a checker reading text might miss, which
# the nvrtc test compiles in CI too, and a dictionary of their pieces.
mkdir -p fuzz/seeds/include_escape
cp verifier/tests/fixtures/include_tricks/*.cu fuzz/seeds/include_escape/
cp fuzz/include_escape.dict fuzz/seeds/

# A dictionary for task_plan: every key, string value and bare word the bundled task and plan
# files use, and numbers at the edges of the integer and float types.
{
  cat tasks/*/*/task.toml tasks/*/*/reference.toml 2>/dev/null \
    | grep -oE '[A-Za-z_][A-Za-z0-9_]* *=|"[A-Za-z0-9_]{1,24}"' | sed -E 's/ *=$//; s/"//g' | sort -u
  printf '%s\n' 9223372036854775807 -9223372036854775808 4294967296 2147483648 -1 0 1e308 nan inf \
    -inf 1e-320 '[[shape]]' '[[input]]' '[[output]]' '[[launch]]' '[[scratch]]' '[[prepare]]' '[params]'
} | awk '{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "\"%s\"\n", $0 }' > fuzz/seeds/task_plan.dict

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "== fuzz $t for ${secs}s"
  # Absolute paths: a target may change its working directory (include_escape does).
  f="$PWD/fuzz"
  dict=()
  [[ -f "$f/seeds/$t.dict" ]] && dict=(-dict="$f/seeds/$t.dict")
  if ! (cd fuzz && cargo +nightly fuzz run -O -a "$t" "$f/corpus/$t" "$f/seeds/$t" -- "${dict[@]}" \
      -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096 -timeout=20 -detect_leaks=0 \
      "${parallel[@]}" -print_final_stats=1 2>&1 | tail -n 25); then
    status=1
  fi
  if compgen -G "fuzz/artifacts/$t/*" > /dev/null; then
    echo "!! $t left inputs in fuzz/artifacts/$t:"; ls -1 "fuzz/artifacts/$t"
    status=1
  fi
done
exit "$status"
