#!/usr/bin/env python3
"""kernelsmith's PyTorch runner: the oracle and the eager / torch.compile baselines of a task.

Run by the harness as `python3 torch_runner.py REQUEST.json`, or as `python3 torch_runner.py --serve`
(a session: one request path per line on stdin, one reply line per request on stdout, until stdin
closes; torch is imported once per session, which is what makes the oracle cheap case after case).
The request (JSON) names the task's
spec.py, the task parameters of the shape, a safetensors file of input sets, the declared outputs,
the modes (oracle | eager | compile) and the timing protocol numbers of `verifier::timing`:

    {"version": 1, "spec": ".../spec.py", "params": {"M": 4096, "N": 4096},
     "inputs_file": "in.safetensors", "outputs_file": "out.safetensors",
     "inputs": [{"name": "x", "dtype": "bf16", "role": "activation"}, ...],   # declared order
     "sets": [{"x": "0/x", "g": "0/g"}, {"x": "1/x", "g": "0/g"}],           # tensor keys per set
     "outputs": [{"name": "y", "dtype": "bf16", "dims": [4096, 4096]}],
     "modes": ["oracle", "eager", "compile"], "oracle_sets": [0, 1],
     "protocol": {"warmup_calls": 10, "warmup_ms": 25, "min_samples": 10, "max_samples": 100,
                  "target_rse": 0.005, "time_cap_ms": 10000, "graph_below_ms": 0.02},
     "l2_bytes": 52428800, "compile_mode": "default", "device": 0}

`device` is a CUDA ordinal, or "cpu" to run the oracle alone on the CPU (what `ksmith tasks spec`
does to check a spec.py on a machine without a GPU; timing modes need CUDA and are refused).

It prints one JSON object on stdout (everything else, the spec's prints included, goes to
stderr) and exits with:
    0  status "ok": per-mode results, each {"ok": true, ...} or {"ok": false, "error": ...}
    2  status "bad_request": the request or the input file is unusable (a harness bug)
    3  status "unavailable": torch does not import or sees no CUDA device (baselines skipped)
    4  status "spec_error": spec.py does not load or Model cannot be built
Oracle outputs go to `outputs_file` as safetensors, keyed "SET/NAME". In a session the exit code
is carried by the reply instead ("exit"), the session itself exits 0 when stdin closes, and
torch's global numerics flags (TF32, deterministic algorithms, default dtype) are reset to what
they were at import before every request, so one spec cannot change the next one's numerics.

Timing follows DESIGN §5: per sample, untimed, the activation inputs are refreshed from the next
input set of the pool and L2 is flushed by reading a buffer of 2 x L2 on the same stream (a read, as
in the harness's own timing: a write would leave L2 full of dirty lines whose write-back the timed
call would pay for); then a
CUDA event pair brackets one call of the model. Weights stay those of set 0.
"""

import inspect
import importlib.util
import json
import math
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ksmith_tensors as kt  # noqa: E402
from ksmith_protocol import (  # noqa: E402
    Request,
    RequestError,
    constructor_kwargs,
    measure,
    output_key,
    summary,
)

EXIT_OK, EXIT_BAD_REQUEST, EXIT_UNAVAILABLE, EXIT_SPEC = 0, 2, 3, 4
# Without a known L2 size, flush this much (what KernelBench does: 256 MB).
FALLBACK_FLUSH_BYTES = 256 << 20


def finite(v):
    """JSON has no Infinity or NaN (serde refuses them): non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def tail(text, limit=4000):
    return text if len(text) <= limit else "..." + text[-limit:]


class Finish(Exception):
    def __init__(self, code, status, **fields):
        super().__init__(status)
        self.code, self.status, self.fields = code, status, fields


# ---------------------------------------------------------------------------- torch parts

def import_torch(device):
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install raising anything
        raise Finish(EXIT_UNAVAILABLE, "unavailable",
                     reason=f"torch does not import with {sys.executable}: {type(e).__name__}: {e}")
    FLAGS.capture(torch)
    if device == "cpu":
        return torch
    if not torch.cuda.is_available():
        raise Finish(EXIT_UNAVAILABLE, "unavailable",
                     reason=f"torch {torch.__version__} sees no CUDA device "
                            f"(torch.version.cuda = {torch.version.cuda})")
    if device >= torch.cuda.device_count():
        raise Finish(EXIT_UNAVAILABLE, "unavailable",
                     reason=f"CUDA device {device} requested, torch sees {torch.cuda.device_count()}")
    # Events, streams and graphs are created on, and record into, the *current* device's current
    # stream: it must be the device the inputs, the model and the flush buffer live on.
    torch.cuda.set_device(device)
    return torch


def to_torch(torch, raw, dev):
    tdtype, _ = kt.torch_dtype(torch, raw.dtype)
    if not raw.data:
        return torch.empty(raw.shape, dtype=tdtype, device=dev)
    t = torch.frombuffer(raw.data, dtype=torch.uint8).view(tdtype).reshape(raw.shape)
    return t.to(dev)


def tensor_bytes(t):
    import ctypes

    t = t.detach().contiguous().cpu()
    n = t.numel() * t.element_size()
    return ctypes.string_at(t.data_ptr(), n) if n else b""


def load_model(torch, spec_path, params, dev):
    try:
        spec_dir = os.path.dirname(os.path.abspath(spec_path))
        if spec_dir not in sys.path:
            sys.path.insert(0, spec_dir)
        spec = importlib.util.spec_from_file_location("ksmith_task_spec", spec_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {spec_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        cls = getattr(module, "Model", None)
        if cls is None:
            raise AttributeError(f"{spec_path} defines no `Model`")
        sig = inspect.signature(cls.__init__)
        parameters = [
            (p.name, p.default is not inspect.Parameter.empty)
            for p in list(sig.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        model = cls(**constructor_kwargs(parameters, params))
        return model.to(dev).eval()
    except Exception as e:
        raise Finish(EXIT_SPEC, "spec_error", message=f"{type(e).__name__}: {e}",
                     traceback=tail(traceback.format_exc()))


def check_outputs(torch, req, result):
    """The model's return value as a tuple of tensors in declared order, or ValueError naming
    the output that does not match its declaration."""
    outs = result if isinstance(result, (tuple, list)) else (result,)
    if len(outs) != len(req.outputs):
        raise ValueError(f"Model returned {len(outs)} value(s), the task declares "
                         f"{len(req.outputs)} output(s)")
    for o, decl in zip(outs, req.outputs):
        if not isinstance(o, torch.Tensor):
            raise ValueError(f"output `{decl['name']}` is a {type(o).__name__}, not a tensor")
        want, _ = kt.torch_dtype(torch, decl["dtype"])
        if o.dtype != want:
            raise ValueError(f"output `{decl['name']}` is {o.dtype}, the task declares "
                             f"{decl['dtype']} ({want})")
        if list(o.shape) != decl["dims"]:
            raise ValueError(f"output `{decl['name']}` has shape {list(o.shape)}, the task "
                             f"declares {decl['dims']}")
    return outs


def run_oracle(torch, req, model, sets):
    written = {}
    with torch.no_grad():
        for k in req.oracle_sets:
            args = [sets[k][d["name"]] for d in req.inputs]
            outs = check_outputs(torch, req, model(*args))
            for o, decl in zip(outs, req.outputs):
                written[output_key(k, decl["name"])] = kt.RawTensor(
                    decl["dtype"], decl["dims"], tensor_bytes(o))
    kt.write_file(req.outputs_file, written, {"producer": "ksmith torch_runner"})
    return {"ok": True, "sets": req.oracle_sets, "outputs_file": req.outputs_file}


def flush_l2(flush):
    """Evict L2 by reading 2 x L2 bytes (the reduction's scalar result keeps the loads)."""
    return flush.amax()


def run_timed(torch, req, fn, sets, flush, graph):
    static = {d["name"]: sets[0][d["name"]].clone() for d in req.inputs}
    args = [static[d["name"]] for d in req.inputs]
    activations = [d["name"] for d in req.inputs if d["role"] == "activation"]
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    state = {"k": 0}

    def sample_once():
        k = state["k"] % len(sets)
        state["k"] += 1
        for n in activations:
            static[n].copy_(sets[k][n])
        flush_l2(flush)
        start.record()
        out = fn(*args)
        end.record()
        end.synchronize()
        del out
        return start.elapsed_time(end)

    with torch.no_grad():
        res = measure(sample_once, req.protocol)
        med = res["summary"]["median_ms"] if res["summary"] else None
        if graph and med is not None and med < req.protocol.graph_below_ms:
            try:
                res["graph_ms"] = graph_amortized(torch, fn, args, flush, start, end)
            except Exception as e:
                res["graph_error"] = f"{type(e).__name__}: {e}"
    res["ok"] = True
    return res


def graph_amortized(torch, fn, args, flush, start, end, replays=100, repeats=5):
    """Median per-call time of `replays` back-to-back replays of a captured CUDA graph: the
    launch-overhead-free time of a tiny call (L2 is flushed once per repeat, not per replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(*args)
    times = []
    for _ in range(repeats):
        flush_l2(flush)
        start.record()
        for _ in range(replays):
            g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / replays)
    return summary(times)["median_ms"]


def run(req):
    torch = import_torch(req.device)
    on_cpu = req.device == "cpu"
    dev = torch.device("cpu") if on_cpu else torch.device("cuda", req.device)
    keys = sorted({key for s in req.sets for key in s.values()})
    try:
        raw, _ = kt.read_file(req.inputs_file, keys)
        for i, s in enumerate(req.sets):
            for d in req.inputs:
                got = raw[s[d["name"]]].dtype
                if got != d["dtype"]:
                    raise kt.TensorFileError(
                        f"{req.inputs_file}: tensor `{s[d['name']]}` (set {i}, input "
                        f"`{d['name']}`) is {got}, the task declares {d['dtype']}")
        host = {k: to_torch(torch, t, dev) for k, t in raw.items()}
    except kt.TensorFileError as e:
        raise Finish(EXIT_BAD_REQUEST, "bad_request", message=str(e))
    del raw
    sets = [{n: host[key] for n, key in s.items()} for s in req.sets]
    model = load_model(torch, req.spec, req.params, dev)

    if on_cpu:  # the request allows only the oracle here: no flush, no timing
        report = {"torch_version": torch.__version__, "torch_cuda": torch.version.cuda,
                  "device_name": "cpu"}
        try:
            report["oracle"] = run_oracle(torch, req, model, sets)
        except Exception as e:
            report["oracle"] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                "traceback": tail(traceback.format_exc())}
        return report
    props = torch.cuda.get_device_properties(dev)
    l2 = req.l2_bytes or getattr(props, "L2_cache_size", 0) or 0
    flush_bytes = 2 * l2 if l2 else FALLBACK_FLUSH_BYTES
    report = {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device_name": props.name,
        "l2_bytes": l2 or None,
        "flush_bytes": flush_bytes,
        "tf32_matmul": tf32_enabled(torch, lambda: torch.backends.cuda.matmul.allow_tf32,
                                    "cuda.matmul"),
        "tf32_cudnn": tf32_enabled(torch, lambda: torch.backends.cudnn.allow_tf32, "cudnn.conv"),
        "compile_mode": req.compile_mode,
    }
    flush = None
    for mode in req.modes:
        try:
            if mode == "oracle":
                report[mode] = run_oracle(torch, req, model, sets)
                continue
            if flush is None:
                flush = torch.empty(flush_bytes, dtype=torch.uint8, device=dev)
            # The first call, untimed and checked: for `compile` it is the one that compiles
            # (tens of seconds), which must not count as warm-up (`measure` ends warm-up at the
            # time cap, so a compile longer than the cap left one warm-up call and the
            # CUDA-graph recording / autotuning calls of the compiled model among the samples).
            fn = model if mode == "eager" else torch.compile(model, mode=req.compile_mode)
            with torch.no_grad():
                check_outputs(torch, req, fn(*[sets[0][d["name"]] for d in req.inputs]))
            report[mode] = run_timed(torch, req, fn, sets, flush, graph=mode == "eager")
        except Exception as e:
            report[mode] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                            "traceback": tail(traceback.format_exc())}
            try:  # an out-of-memory error leaves the caches full; a sticky error cannot be helped
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except Exception:
                pass
    return report


# ---------------------------------------------------------------------------- entry point

def answer(path):
    """(exit code, reply fields) for the request in the file `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            req = Request(json.load(f))
    except (OSError, ValueError, RequestError) as e:
        return EXIT_BAD_REQUEST, {"status": "bad_request", "message": f"{path}: {e}"}
    try:
        report = run(req)
    except Finish as f:
        return f.code, {"status": f.status, **f.fields}
    return EXIT_OK, {"status": "ok", **report}


# torch >= 2.9 has two TF32 APIs, `allow_tf32` and a per-backend `fp32_precision` (which
# torch.set_float32_matmul_precision also sets). Once a program has used both, getters raise
# ("you have used mix of the legacy and new APIs"): a spec that sets `fp32_precision` makes
# `allow_tf32` unreadable, and restoring `allow_tf32` after a spec's set_float32_matmul_precision
# makes torch.get_float32_matmul_precision() (which Inductor's autotuning calls) raise.
# Backends with an `fp32_precision`, parents first ("" is torch.backends itself).
PRECISION_BACKENDS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn",
                      "mkldnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _backend(torch, path):
    obj = torch.backends
    for part in path.split(".") if path else ():
        obj = getattr(obj, part)
    return obj


def tf32_enabled(torch, legacy, new):
    """Whether TF32 is on by the legacy flag `legacy()`, or, when that getter raises (the new API
    was used), by the `fp32_precision` of backend `new` or of the nearest parent that sets it."""
    try:
        return bool(legacy())
    except Exception:
        pass
    try:
        path = new
        while True:
            v = getattr(_backend(torch, path), "fp32_precision", "none")
            if v != "none" or not path:
                return v == "tf32"
            path = path.rpartition(".")[0]
    except Exception:  # neither API: unknown
        return None


class GlobalFlags:
    """torch's process-wide numerics switches, as they were when torch was imported (before any
    spec ran), restored before each request of a session."""

    UNREADABLE = ("unreadable",)

    def __init__(self):
        self.saved = None

    @classmethod
    def read(cls, torch):
        """{flag: value}; a flag this torch lacks is left out, one whose getter raises (mixed TF32
        APIs) reads as UNREADABLE."""
        getters = {
            "matmul_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": lambda: torch.backends.cudnn.allow_tf32,
            "matmul_precision": lambda: torch.get_float32_matmul_precision(),
        }
        for path in PRECISION_BACKENDS:
            getters["fp32_precision:" + path] = (
                lambda path=path: _backend(torch, path).fp32_precision)
        getters.update({
            "cudnn_deterministic": lambda: torch.backends.cudnn.deterministic,
            "cudnn_benchmark": lambda: torch.backends.cudnn.benchmark,
            "deterministic": lambda: torch.are_deterministic_algorithms_enabled(),
            "default_dtype": lambda: torch.get_default_dtype(),
        })
        out = {}
        for key, get in getters.items():
            try:
                out[key] = get()
            except AttributeError:
                continue
            except Exception:
                out[key] = cls.UNREADABLE
        return out

    def capture(self, torch):
        if self.saved is not None:
            return
        self.saved = {k: v for k, v in self.read(torch).items() if v != self.UNREADABLE}

    def reset(self):
        torch = sys.modules.get("torch")
        if torch is None or not self.saved:
            return
        s = self.saved
        if self.read(torch) == s:
            return
        # This order (legacy flags, then the matmul precision, then every backend's precision,
        # parents first) leaves torch 2.11 exactly as imported whichever API a spec used; any
        # other order leaves a getter raising or a precision changed for some spec.
        if "matmul_tf32" in s:
            torch.backends.cuda.matmul.allow_tf32 = s["matmul_tf32"]
        if "cudnn_tf32" in s:
            torch.backends.cudnn.allow_tf32 = s["cudnn_tf32"]
        if "matmul_precision" in s:
            torch.set_float32_matmul_precision(s["matmul_precision"])
        for path in PRECISION_BACKENDS:
            if "fp32_precision:" + path in s:
                _backend(torch, path).fp32_precision = s["fp32_precision:" + path]
        if "cudnn_deterministic" in s:
            torch.backends.cudnn.deterministic = s["cudnn_deterministic"]
        if "cudnn_benchmark" in s:
            torch.backends.cudnn.benchmark = s["cudnn_benchmark"]
        if "deterministic" in s:
            torch.use_deterministic_algorithms(s["deterministic"])
        if "default_dtype" in s:
            torch.set_default_dtype(s["default_dtype"])


FLAGS = GlobalFlags()


def release_memory():
    """Hands cached GPU memory back between requests: the harness's own kernels share the GPU."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        import gc

        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:
        pass


def cuda_unusable():
    """Why CUDA cannot be used in this process any more, or None. A sticky error (an illegal
    address, a device-side assert in a spec's indexing, a faulting compiled kernel) poisons the
    context until the process exits: every later request of the session would fail with it."""
    torch = sys.modules.get("torch")
    is_initialized = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    try:
        if is_initialized is None or not is_initialized():
            return None
        torch.cuda.synchronize()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def serve(reply):
    flags = FLAGS
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            flags.reset()
            code, fields = answer(path)
        except Exception as e:  # a runner bug: say so and keep the session alive
            code, fields = EXIT_BAD_REQUEST, {
                "status": "bad_request",
                "message": f"the runner failed on {path}: {type(e).__name__}: {e}",
                "traceback": tail(traceback.format_exc())}
        broken = cuda_unusable()
        if broken:
            # Answer, then end the session: the harness starts a fresh runner (a fresh CUDA
            # context) for its next request instead of getting this error for every one.
            fields["session_ends"] = (f"the CUDA context is unusable ({broken}): the runner "
                                      "exits after this reply")
        reply.write(json.dumps(finite({"version": 1, **fields, "exit": code})) + "\n")
        reply.flush()
        if broken:
            sys.stderr.write(f"torch_runner: {fields['session_ends']}\n")
            return EXIT_UNAVAILABLE
        release_memory()
    return EXIT_OK


def main(argv):
    # The JSON reply owns the real stdout; anything the spec, torch or the compiler prints
    # (Python or C level) goes to stderr instead of corrupting it.
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def finish(code, fields):
        reply.write(json.dumps(finite({"version": 1, **fields})) + "\n")
        reply.flush()
        return code

    if len(argv) == 2 and argv[1] == "--serve":
        return serve(reply)
    if len(argv) != 2:
        return finish(EXIT_BAD_REQUEST, {"status": "bad_request",
                                         "message": "usage: torch_runner.py REQUEST.json | --serve"})
    return finish(*answer(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
