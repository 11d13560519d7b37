"""The timing protocol and the request format of the PyTorch runner, without torch.

The statistics mirror `verifier::timing` (Summary, Protocol::warm_enough / stop) so that a
PyTorch baseline is sampled by the same rules as a kernel; the Rust side recomputes the summary
from the raw samples this runner reports, so the two cannot drift apart in what is ranked.
"""

import math
import time

from ksmith_tensors import DTYPES

REQUEST_VERSION = 1
MODES = ("oracle", "eager", "compile")


class RequestError(Exception):
    """A request the harness should never have sent; names the offending field."""


def quantile_sorted(s, q):
    """Linear-interpolation ("type 7", NumPy's default) quantile of sorted data."""
    if not s or not 0.0 <= q <= 1.0:
        return None
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(samples_ms):
    """Same fields and definitions as `verifier::timing::Summary`; None for an empty sample or one
    holding a non-finite or negative time."""
    if not samples_ms or any(not math.isfinite(v) or v < 0 for v in samples_ms):
        return None
    s = sorted(samples_ms)
    n = len(s)
    mean = sum(s) / n
    var = sum((v - mean) ** 2 for v in s) / (n - 1) if n > 1 else 0.0
    sd = math.sqrt(var)
    rse = sd / math.sqrt(n) / mean if n > 1 and mean > 0 else math.inf
    return {
        "n": n,
        "median_ms": quantile_sorted(s, 0.5),
        "p20_ms": quantile_sorted(s, 0.2),
        "p80_ms": quantile_sorted(s, 0.8),
        "min_ms": s[0],
        "max_ms": s[-1],
        "mean_ms": mean,
        "stddev_ms": sd,
        "rse": rse,
    }


class Protocol:
    """`verifier::timing::Protocol`, with durations in milliseconds."""

    FIELDS = {
        "warmup_calls": int,
        "warmup_ms": float,
        "min_samples": int,
        "max_samples": int,
        "target_rse": float,
        "time_cap_ms": float,
        "graph_below_ms": float,
    }

    def __init__(self, warmup_calls=10, warmup_ms=25.0, min_samples=10, max_samples=100,
                 target_rse=0.005, time_cap_ms=10_000.0, graph_below_ms=0.02):
        self.warmup_calls = warmup_calls
        self.warmup_ms = warmup_ms
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.target_rse = target_rse
        self.time_cap_ms = time_cap_ms
        self.graph_below_ms = graph_below_ms

    @classmethod
    def from_json(cls, obj):
        if not isinstance(obj, dict):
            raise RequestError("`protocol` must be an object")
        kw = {}
        for key, ty in cls.FIELDS.items():
            if key not in obj:
                raise RequestError(f"`protocol.{key}` is missing")
            v = obj[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise RequestError(f"`protocol.{key}` must be a non-negative number, got {v!r}")
            if ty is int and v != int(v):
                raise RequestError(f"`protocol.{key}` must be an integer, got {v!r}")
            kw[key] = ty(v)
        if kw["max_samples"] < 1:
            raise RequestError("`protocol.max_samples` must be at least 1")
        return cls(**kw)

    def warm_enough(self, calls, elapsed_ms):
        return calls >= self.warmup_calls and elapsed_ms >= self.warmup_ms

    def stop(self, samples_ms, elapsed_ms):
        """Why sampling should stop ("max_samples", "time_cap", "converged"), or None."""
        if len(samples_ms) >= self.max_samples:
            return "max_samples"
        if elapsed_ms >= self.time_cap_ms and samples_ms:
            return "time_cap"
        if len(samples_ms) >= self.min_samples:
            s = summary(samples_ms)
            if s is not None and s["rse"] < self.target_rse:
                return "converged"
        return None


def measure(sample_once, protocol, clock=time.perf_counter):
    """Warms up, then samples until the protocol says stop. `sample_once()` does one whole
    sample (untimed refresh and flush, timed call) and returns the timed part in ms.

    Warm-up also ends at the sampling time cap: a call that takes seconds must not spend ten
    times the cap warming up (the Rust side bounds the whole runner with a timeout as well).
    """
    t0 = clock()
    calls = 0
    while True:
        elapsed = (clock() - t0) * 1e3
        if protocol.warm_enough(calls, elapsed) or elapsed >= protocol.time_cap_ms:
            break
        sample_once()
        calls += 1
    warmup_ms = (clock() - t0) * 1e3
    samples = []
    t1 = clock()
    while True:
        reason = protocol.stop(samples, (clock() - t1) * 1e3)
        if reason is not None:
            break
        ms = float(sample_once())
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"the timer returned {ms!r} ms for sample {len(samples)}")
        samples.append(ms)
    return {
        "samples_ms": samples,
        "warmup_calls": calls,
        "warmup_elapsed_ms": warmup_ms,
        "stop_reason": reason,
        "summary": summary(samples),
    }


def _field(obj, key, types, where="request"):
    if key not in obj:
        raise RequestError(f"`{where}.{key}` is missing")
    v = obj[key]
    if not isinstance(v, types):
        raise RequestError(f"`{where}.{key}` has the wrong type: {v!r}")
    return v


class Request:
    """A validated runner request (see torch_runner.py for the format)."""

    def __init__(self, obj):
        if not isinstance(obj, dict):
            raise RequestError("the request is not a JSON object")
        version = obj.get("version")
        if version != REQUEST_VERSION:
            raise RequestError(f"`request.version` is {version!r}; this runner speaks {REQUEST_VERSION}")
        self.spec = _field(obj, "spec", str)
        self.inputs_file = _field(obj, "inputs_file", str)
        self.outputs_file = _field(obj, "outputs_file", str)
        self.params = _field(obj, "params", dict)
        for k, v in self.params.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise RequestError(f"`request.params.{k}` must be an integer, got {v!r}")
        self.inputs = []
        for i, d in enumerate(_field(obj, "inputs", list)):
            where = f"request.inputs[{i}]"
            if not isinstance(d, dict):
                raise RequestError(f"`{where}` is not an object")
            name = _field(d, "name", str, where)
            dtype = _field(d, "dtype", str, where)
            if dtype not in DTYPES:
                raise RequestError(f"`{where}.dtype` {dtype!r} is unknown")
            role = d.get("role", "activation")
            if role not in ("activation", "weight"):
                raise RequestError(f"`{where}.role` {role!r} is neither activation nor weight")
            self.inputs.append({"name": name, "dtype": dtype, "role": role})
        names = [d["name"] for d in self.inputs]
        self.sets = []
        for i, s in enumerate(_field(obj, "sets", list)):
            if not isinstance(s, dict) or not all(isinstance(v, str) for v in s.values()):
                raise RequestError(f"`request.sets[{i}]` must map input names to tensor keys")
            missing = [n for n in names if n not in s]
            if missing:
                raise RequestError(f"`request.sets[{i}]` has no tensor for input(s) {', '.join(missing)}")
            self.sets.append({n: s[n] for n in names})
        if not self.sets:
            raise RequestError("`request.sets` is empty")
        self.outputs = []
        for i, d in enumerate(_field(obj, "outputs", list)):
            where = f"request.outputs[{i}]"
            if not isinstance(d, dict):
                raise RequestError(f"`{where}` is not an object")
            name = _field(d, "name", str, where)
            dtype = _field(d, "dtype", str, where)
            if dtype not in DTYPES:
                raise RequestError(f"`{where}.dtype` {dtype!r} is unknown")
            dims = _field(d, "dims", list, where)
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in dims):
                raise RequestError(f"`{where}.dims` must be non-negative integers, got {dims!r}")
            self.outputs.append({"name": name, "dtype": dtype, "dims": dims})
        if not self.outputs:
            raise RequestError("`request.outputs` is empty")
        self.modes = _field(obj, "modes", list)
        for m in self.modes:
            if m not in MODES:
                raise RequestError(f"`request.modes` holds {m!r}; known: {', '.join(MODES)}")
        self.oracle_sets = obj.get("oracle_sets", list(range(len(self.sets))))
        if not isinstance(self.oracle_sets, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(self.sets)
            for k in self.oracle_sets
        ):
            raise RequestError(f"`request.oracle_sets` must be indices into `sets`, got {self.oracle_sets!r}")
        self.protocol = Protocol.from_json(obj.get("protocol")) if (
            "eager" in self.modes or "compile" in self.modes
        ) else Protocol()
        self.l2_bytes = obj.get("l2_bytes")
        if self.l2_bytes is not None and (not isinstance(self.l2_bytes, int) or self.l2_bytes < 0):
            raise RequestError(f"`request.l2_bytes` must be a byte count, got {self.l2_bytes!r}")
        self.compile_mode = obj.get("compile_mode") or "default"
        if not isinstance(self.compile_mode, str):
            raise RequestError("`request.compile_mode` must be a string")
        self.device = obj.get("device", 0)
        if self.device == "cpu":
            timed = [m for m in self.modes if m != "oracle"]
            if timed:
                raise RequestError(f"`request.modes` holds {', '.join(timed)}: timing needs a CUDA "
                                   "device; on the CPU only `oracle` runs")
        elif isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise RequestError(f"`request.device` must be a device ordinal or \"cpu\", "
                               f"got {self.device!r}")


def output_key(set_index, name):
    return f"{set_index}/{name}"


def constructor_kwargs(parameters, params):
    """The keyword arguments of `Model(...)`: every constructor parameter named like a task
    parameter gets its value for this shape (the convention of tasks/*/spec.py, e.g. `Model(K)`).
    `parameters` is a list of (name, has_default). A required parameter the task does not define
    is an error naming it."""
    kw = {}
    for name, has_default in parameters:
        if name in params:
            kw[name] = params[name]
        elif not has_default:
            raise RequestError(
                f"Model.__init__ takes `{name}`, which is not a task parameter "
                f"(known: {', '.join(sorted(params)) or 'none'})"
            )
    return kw
