#!/usr/bin/env python3
"""Wall time of one full candidate evaluation: ksmith vs a KernelBench-style load_inline flow.

The same device code (the task's reference.cu, swiglu by default) is evaluated both ways, each
`--runs` times, and the medians are compared:

  load_inline  KernelBench's flow: torch.utils.cpp_extension.load_inline compiles the kernel
               plus a host wrapper with nvcc through ninja (fresh build directory and module
               name each run, so nothing is cached), loads it, checks it against spec.py's Model
               on 5 random inputs (torch.allclose, atol = rtol = 1e-2), and times 100 calls with
               CUDA events after 3 warm-up calls (no L2 flush, no input refresh). One shape.
  ksmith       `ksmith --no-cache bench --tasks T --candidate DIR --shapes S --check-shapes S
               --baseline none --no-db --json`: a fresh process that compiles the candidate and
               the reference with NVRTC, runs the strict check (2 fixed seeds + a fresh one,
               2 held-out shapes, stress inputs, poison, guard zones, determinism), then times
               candidate and reference interleaved with L2 flush and input refresh and
               re-validates the last timed output. `ksmith eval` (the strict check alone) is
               timed as well, for the breakdown.

Prints a table (median wall seconds per flow and phase, and the ratio) and writes
compare-load-inline.json into --out. Exit 0 when both flows ran and agreed the kernel is
correct; 1 when a flow found it wrong or failed; 3 when a prerequisite is missing (torch with
CUDA, nvcc, a host C++ compiler, ninja, the ksmith binary), named in the message.

    python3 scripts/compare-load-inline.py [--runs 3] [--task swiglu] [--shape small]
        [--ksmith BIN] [--tasks-dir DIR] [--out DIR] [--print-source]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

EXIT_OK, EXIT_FAILED, EXIT_MISSING = 0, 1, 3

# The host side of each supported task: a wrapper that launches the reference kernel exactly as
# its reference.toml does. The device code is read from reference.cu unchanged.
WRAPPERS = {
    "swiglu": {
        "decl": "torch::Tensor swiglu_forward(torch::Tensor a, torch::Tensor b);",
        "function": "swiglu_forward",
        # reference.toml: grid = ["min(ceil_div(M*N, 2048), 4096)"], block = [256],
        # args = ["a", "b", "y", "i64:M*N"]
        "plan_grid": 'grid = ["min(ceil_div(M*N, 2048), 4096)"]',
        "host": r"""
torch::Tensor swiglu_forward(torch::Tensor a, torch::Tensor b) {
    TORCH_CHECK(a.is_cuda() && b.is_cuda(), "a and b must be CUDA tensors");
    TORCH_CHECK(a.scalar_type() == torch::kBFloat16 && b.scalar_type() == torch::kBFloat16,
                "a and b must be bf16");
    TORCH_CHECK(a.sizes() == b.sizes(), "a and b must have the same shape");
    auto ac = a.contiguous();
    auto bc = b.contiguous();
    auto y = torch::empty_like(ac);
    const long long total = ac.numel();
    long long blocks = (total + 2047) / 2048;
    if (blocks > 4096) blocks = 4096;
    if (blocks < 1) blocks = 1;
    swiglu_bf16<<<(unsigned)blocks, 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const __nv_bfloat16*>(ac.data_ptr<at::BFloat16>()),
        reinterpret_cast<const __nv_bfloat16*>(bc.data_ptr<at::BFloat16>()),
        reinterpret_cast<__nv_bfloat16*>(y.data_ptr<at::BFloat16>()),
        total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
""",
        "inputs": lambda torch, shape, gen: [
            torch.randn(shape["M"], shape["N"], generator=gen, device="cuda").to(torch.bfloat16),
            torch.randn(shape["M"], shape["N"], generator=gen, device="cuda").to(torch.bfloat16),
        ],
    },
}

CUDA_PRELUDE = """#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
"""


def say(*a):
    print("compare-load-inline:", *a, file=sys.stderr, flush=True)


def task_dir(tasks_dir, task):
    for cat in sorted(os.listdir(tasks_dir)):
        d = os.path.join(tasks_dir, cat, task)
        if os.path.isfile(os.path.join(d, "task.toml")):
            return d
    raise SystemExit(f"compare-load-inline: no task {task} under {tasks_dir}")


def read_shape(toml_text, name):
    """The integer parameters of public shape `name` ([[shapes]] blocks of task.toml)."""
    for block in toml_text.split("[[shapes]]")[1:]:
        block = block.split("\n[", 1)[0]
        fields = dict(re.findall(r'^\s*(\w+)\s*=\s*"?([^"\n#]+?)"?\s*(?:#.*)?$', block, re.M))
        if fields.get("name") == name:
            return {k: int(v) for k, v in fields.items() if k != "name"}
    raise SystemExit(f"compare-load-inline: task.toml has no shape {name}")


def cuda_source(tdir, task):
    with open(os.path.join(tdir, "reference.cu"), encoding="utf-8") as f:
        kernel = f.read()
    return CUDA_PRELUDE + kernel + "\n" + WRAPPERS[task]["host"]


def check_plan_matches(tdir, task):
    """The wrapper hard-codes the launch geometry: refuse to run if reference.toml changed."""
    with open(os.path.join(tdir, "reference.toml"), encoding="utf-8") as f:
        plan = f.read()
    want = WRAPPERS[task]["plan_grid"]
    if want not in plan:
        raise SystemExit(
            f"compare-load-inline: {tdir}/reference.toml no longer says `{want}`: "
            "update the wrapper in this script")


def prerequisites(ksmith):
    """Missing prerequisites, each named; torch module or None."""
    missing = []
    torch = None
    try:
        import torch as t  # noqa: F401
        torch = t
        if not torch.cuda.is_available():
            missing.append(f"torch {torch.__version__} sees no CUDA device")
    except Exception as e:  # ImportError or a broken install
        missing.append(f"torch does not import with {sys.executable}: {type(e).__name__}: {e}")
    nvcc = shutil.which("nvcc")
    if nvcc is None and torch is not None:
        from torch.utils import cpp_extension
        home = cpp_extension.CUDA_HOME
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            nvcc = os.path.join(home, "bin", "nvcc")
    if nvcc is None:
        missing.append("nvcc not found (PATH, CUDA_HOME): load_inline compiles with it")
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        missing.append(f"host C++ compiler `{cxx}` not found (CXX or c++ on PATH): "
                       "load_inline builds the host wrapper with it")
    if shutil.which("ninja") is None:
        missing.append("ninja not found on PATH: torch.utils.cpp_extension.load_inline needs it "
                       "(pip install ninja, or the kit's tools/ninja)")
    if shutil.which(ksmith) is None and not os.access(ksmith, os.X_OK):
        missing.append(f"ksmith binary {ksmith} not found")
    return missing, torch


def load_inline_run(torch, tdir, task, shape, run):
    """One KernelBench-style evaluation; phase wall times in seconds, and correctness."""
    from torch.utils.cpp_extension import load_inline

    sys.path.insert(0, tdir)
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"spec_{task}", os.path.join(tdir, "spec.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Model().cuda()
    w = WRAPPERS[task]
    build = tempfile.mkdtemp(prefix="ksmith-load-inline-")
    phases = {}
    t0 = time.perf_counter()
    ext = load_inline(
        name=f"ksmith_cmp_{task}_{os.getpid()}_{run}",
        cpp_sources=[w["decl"]],
        cuda_sources=[cuda_source(tdir, task)],
        functions=[w["function"]],
        build_directory=build,
        extra_cuda_cflags=["-O3"],
        verbose=False,
    )
    fn = getattr(ext, w["function"])
    torch.cuda.synchronize()
    phases["compile_load_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    correct = True
    max_err = 0.0
    for trial in range(5):
        gen = torch.Generator(device="cuda").manual_seed(1000 + trial)
        inputs = w["inputs"](torch, shape, gen)
        with torch.no_grad():
            want = model(*inputs)
            got = fn(*inputs)
        torch.cuda.synchronize()
        if got.shape != want.shape or not torch.allclose(got.float(), want.float(),
                                                         atol=1e-2, rtol=1e-2):
            correct = False
        max_err = max(max_err, (got.float() - want.float()).abs().max().item())
    phases["check_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    gen = torch.Generator(device="cuda").manual_seed(42)
    inputs = w["inputs"](torch, shape, gen)
    for _ in range(3):
        fn(*inputs)
    torch.cuda.synchronize()
    times_ms = []
    for _ in range(100):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*inputs)
        end.record()
        torch.cuda.synchronize()
        times_ms.append(start.elapsed_time(end))
    phases["time_s"] = time.perf_counter() - t2
    phases["total_s"] = time.perf_counter() - t0
    shutil.rmtree(build, ignore_errors=True)
    return {
        "phases": phases,
        "correct": correct,
        "max_abs_err": max_err,
        "kernel_median_ms": statistics.median(times_ms),
    }


def ksmith_run(ksmith, tasks_dir, cand_dir, task, shape_name, command):
    """One ksmith process; (wall seconds, exit code, parsed JSON or None)."""
    if command == "bench":
        args = [ksmith, "--no-cache", "--tasks-dir", tasks_dir, "bench", "--tasks", task,
                "--candidate", cand_dir, "--shapes", shape_name, "--check-shapes", shape_name,
                "--baseline", "none", "--no-db", "--json"]
    else:
        args = [ksmith, "--no-cache", "--tasks-dir", tasks_dir, "eval", "--task", task, cand_dir,
                "--shapes", shape_name, "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        reply = json.loads(p.stdout)
    except ValueError:
        reply = None
        say(f"ksmith {command} printed no JSON (exit {p.returncode}); stderr ends:\n"
            + p.stderr[-2000:])
    return wall, p.returncode, reply


def bench_times(reply):
    """(candidate median ms, reference median ms) from `ksmith bench --json`."""
    cand = ref = None
    for r in (reply or {}).get("rows", []):
        if r.get("kernel") == "reference":
            ref = r.get("median_ms")
        elif r.get("kernel") == "candidate":
            cand = r.get("median_ms")
    return cand, ref


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--task", default="swiglu", choices=sorted(WRAPPERS))
    ap.add_argument("--shape", default="small")
    ap.add_argument("--ksmith", default=os.environ.get("KSMITH_BIN", "ksmith"))
    ap.add_argument("--tasks-dir", default=os.environ.get("KSMITH_TASKS_DIR", "tasks"))
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--print-source", action="store_true",
                    help="print the load_inline CUDA source and exit (no GPU needed)")
    a = ap.parse_args()

    tdir = task_dir(a.tasks_dir, a.task)
    check_plan_matches(tdir, a.task)
    with open(os.path.join(tdir, "task.toml"), encoding="utf-8") as f:
        shape = read_shape(f.read(), a.shape)
    if a.print_source:
        print(f"// shape {a.shape}: {shape}")
        print(cuda_source(tdir, a.task))
        return EXIT_OK

    missing, torch = prerequisites(a.ksmith)
    if missing:
        for m in missing:
            say("missing:", m)
        return EXIT_MISSING
    say(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, task {a.task} "
        f"at {a.shape} {shape}, {a.runs} runs each")

    cand = tempfile.mkdtemp(prefix="ksmith-cand-")
    cand_dir = os.path.join(cand, "candidate")
    os.makedirs(cand_dir)
    shutil.copy(os.path.join(tdir, "reference.cu"), os.path.join(cand_dir, "kernel.cu"))
    shutil.copy(os.path.join(tdir, "reference.toml"), os.path.join(cand_dir, "launch.toml"))

    li, kb, ke = [], [], []
    for run in range(a.runs):
        try:
            r = load_inline_run(torch, tdir, a.task, shape, run)
            say(f"load_inline run {run}: {r['phases']['total_s']:.1f} s "
                f"(compile+load {r['phases']['compile_load_s']:.1f} s), correct={r['correct']}, "
                f"kernel {r['kernel_median_ms'] * 1e3:.1f} us")
        except Exception as e:  # a build error must not hide the ksmith side's numbers
            import traceback
            say(f"load_inline run {run} failed: {type(e).__name__}: {e}")
            traceback.print_exc()
            r = {"phases": {}, "correct": False, "error": f"{type(e).__name__}: {e}",
                 "kernel_median_ms": None}
        li.append(r)
        wall, code, reply = ksmith_run(a.ksmith, a.tasks_dir, cand_dir, a.task, a.shape, "bench")
        c_ms, r_ms = bench_times(reply)
        say(f"ksmith bench run {run}: {wall:.1f} s, exit {code}, candidate "
            f"{'-' if c_ms is None else f'{c_ms * 1e3:.1f} us'}")
        kb.append({"wall_s": wall, "exit": code, "candidate_ms": c_ms, "reference_ms": r_ms,
                   "elapsed": (reply or {}).get("elapsed")})
        wall, code, reply = ksmith_run(a.ksmith, a.tasks_dir, cand_dir, a.task, a.shape, "eval")
        ke.append({"wall_s": wall, "exit": code,
                   "verdict": (reply or {}).get("kind") or (reply or {}).get("verdict")})
        say(f"ksmith eval run {run}: {wall:.1f} s, exit {code}")
    shutil.rmtree(cand, ignore_errors=True)

    li_total = med([r["phases"].get("total_s") for r in li])
    kb_total = med([r["wall_s"] for r in kb])
    summary = {
        "task": a.task, "shape": a.shape, "params": shape, "runs": a.runs,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
        "load_inline": {
            "median_total_s": li_total,
            "median_compile_load_s": med([r["phases"].get("compile_load_s") for r in li]),
            "median_check_s": med([r["phases"].get("check_s") for r in li]),
            "median_time_s": med([r["phases"].get("time_s") for r in li]),
            "kernel_median_ms": med([r["kernel_median_ms"] for r in li]),
            "runs": li,
        },
        "ksmith_bench": {
            "median_wall_s": kb_total,
            "kernel_median_ms": med([r["candidate_ms"] for r in kb]),
            "runs": kb,
        },
        "ksmith_eval": {"median_wall_s": med([r["wall_s"] for r in ke]), "runs": ke},
        "ratio_load_inline_over_ksmith": (li_total / kb_total) if li_total and kb_total else None,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "compare-load-inline.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)

    def s(x):
        return "-" if x is None else f"{x:8.2f} s"

    print(f"\none candidate evaluation of {a.task} at {a.shape}, median of {a.runs} runs")
    print(f"{'flow':<48} {'wall':>10}")
    print(f"{'load_inline (nvcc + ninja, 5 checks, 100 timed)':<48} {s(li_total):>10}")
    print(f"{'  compile + load':<48} {s(summary['load_inline']['median_compile_load_s']):>10}")
    print(f"{'  check':<48} {s(summary['load_inline']['median_check_s']):>10}")
    print(f"{'  time':<48} {s(summary['load_inline']['median_time_s']):>10}")
    print(f"{'ksmith bench --candidate (NVRTC, strict, timed)':<48} {s(kb_total):>10}")
    print(f"{'ksmith eval (strict check only)':<48} {s(summary['ksmith_eval']['median_wall_s']):>10}")
    ratio = summary["ratio_load_inline_over_ksmith"]
    print(f"ratio load_inline / ksmith bench: {'-' if ratio is None else f'{ratio:.2f}x'}")
    k1, k2 = summary["load_inline"]["kernel_median_ms"], summary["ksmith_bench"]["kernel_median_ms"]
    if k1 and k2:
        print(f"kernel median: load_inline {k1 * 1e3:.1f} us (no flush), ksmith {k2 * 1e3:.1f} us "
              "(L2 flushed, inputs refreshed)")
    ok = all(r["correct"] for r in li) and all(r["exit"] == 0 for r in kb + ke)
    if not ok:
        say("a flow failed or found the kernel wrong: see compare-load-inline.json")
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
