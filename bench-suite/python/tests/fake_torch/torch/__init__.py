"""A CPU stand-in for the few torch APIs torch_runner.py uses, so the runner's own logic (input
sets, refresh between samples, oracle outputs, timing loop, reply) is tested where no torch or
GPU exists. Tensors are bytearrays; "CUDA" events read the host clock. It computes nothing: test
specs only copy their inputs. Not a model of torch's semantics beyond what the runner calls."""

import contextlib
import ctypes
import time
import os
import types

__version__ = "0.0-standin"
version = types.SimpleNamespace(cuda="13.0-standin")


class dtype:
    def __init__(self, name, size):
        self.name, self.itemsize = name, size

    def __repr__(self):
        return f"torch.{self.name}"


_SIZES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
    "float8_e5m2": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1,
    "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1,
}
for _n, _s in _SIZES.items():
    globals()[_n] = dtype(_n, _s)


class device:
    def __init__(self, kind, index=None):
        self.kind, self.index = kind, index


class Tensor:
    def __init__(self, buf, dt, shape, dev="cpu"):
        self.buf, self.dtype, self.shape, self.device = buf, dt, tuple(shape), dev

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def element_size(self):
        return self.dtype.itemsize

    def view(self, dt):
        return Tensor(self.buf, dt, (len(self.buf) // dt.itemsize,), self.device)

    def reshape(self, shape):
        return Tensor(self.buf, self.dtype, shape, self.device)

    def to(self, dev):
        if isinstance(dev, device) and dev.kind == "cuda":
            _cuda_state["work"] = dev.index
        return Tensor(bytearray(self.buf), self.dtype, self.shape, dev)

    def clone(self):
        return Tensor(bytearray(self.buf), self.dtype, self.shape, self.device)

    def copy_(self, src):
        self.buf[:] = src.buf
        return self

    def amax(self):
        # Reads every byte, as the runner's L2 flush relies on.
        return Tensor(bytearray([max(self.buf, default=0)]), self.dtype, (), self.device)

    def fill_(self, v):
        self.buf[:] = bytes([v & 0xFF]) * len(self.buf)
        return self

    def detach(self):
        return self

    def contiguous(self):
        return self

    def cpu(self):
        return Tensor(bytearray(self.buf), self.dtype, self.shape, "cpu")

    def data_ptr(self):
        self._c = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        return ctypes.addressof(self._c)


def frombuffer(buf, dtype):
    return Tensor(buf, dtype, (len(buf) // dtype.itemsize,))


def empty(shape, dtype, device=None):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = 1
    for d in shape:
        n *= d
    return Tensor(bytearray(n * dtype.itemsize), dtype, shape, device)


def no_grad():
    return contextlib.nullcontext()


def compile(model, mode=None):
    """The model itself; with KSMITH_STANDIN_COMPILE_S its first call takes that long, as the
    call that compiles does."""
    compile.calls.append(mode)
    delay = float(os.environ.get("KSMITH_STANDIN_COMPILE_S", "0"))
    state = {"first": True}

    def compiled(*args):
        if state["first"]:
            state["first"] = False
            time.sleep(delay)
        return model(*args)

    return compiled


compile.calls = []


class _Module:
    def to(self, dev):
        return self

    def eval(self):
        return self

    def __call__(self, *args):
        return self.forward(*args)


nn = types.SimpleNamespace(Module=_Module)
backends = types.SimpleNamespace(
    cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False)),
    cudnn=types.SimpleNamespace(allow_tf32=True),
)


# The current CUDA device (set_device) and the one inputs were last moved to: an event recorded
# while they differ would time another device's stream, which real torch does silently.
_cuda_state = {"current": 0, "work": None}


def _set_device(d):
    _cuda_state["current"] = d.index if isinstance(d, device) else int(d)


class _Event:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        work, current = _cuda_state["work"], _cuda_state["current"]
        if work is not None and work != current:
            raise RuntimeError(f"stand-in: event recorded on device {current}, the work is on "
                               f"device {work}")
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def _synchronize():
    # A spec sets _cuda_state["broken"] to stand for a sticky error (a device-side assert).
    if _cuda_state.get("broken"):
        raise RuntimeError(_cuda_state["broken"])


class _Stream:
    def wait_stream(self, other):
        pass


class _Graph:
    def replay(self):
        pass


cuda = types.SimpleNamespace(
    is_available=lambda: os.environ.get("KSMITH_STANDIN_NO_CUDA") != "1",
    device_count=lambda: int(os.environ.get("KSMITH_STANDIN_DEVICES", "1")),
    set_device=_set_device,
    get_device_properties=lambda dev: types.SimpleNamespace(name="Stand-in GPU", L2_cache_size=1 << 20),
    synchronize=_synchronize,
    is_initialized=lambda: True,
    empty_cache=lambda: None,
    Event=_Event,
    Stream=_Stream,
    CUDAGraph=_Graph,
    current_stream=lambda: _Stream(),
    stream=lambda s: contextlib.nullcontext(),
    graph=lambda g: contextlib.nullcontext(),
    OutOfMemoryError=RuntimeError,
)
