#!/usr/bin/env python3
"""Small CUDA programs with known behaviour, for capturing real Nsight Compute and
compute-sanitizer output (scripts/capture-profile-samples.sh) without depending on `ksmith eval`.

    python3 capture_kernels.py CASE [--compile-only]

CASE is one of:
    transpose   an unpadded shared-memory transpose (bank conflicts), 3 launches
    scale       a clean memory-bound kernel, 3 launches
    oob         writes past the end of its buffer         (memcheck finding)
    race        shared memory read without __syncthreads   (racecheck finding)
    uninit      reads a buffer nothing ever wrote          (initcheck finding)
    barrier     __syncthreads reached by half a warp       (synccheck finding)

Kernels are compiled with NVRTC (-lineinfo, the device's own sm_XY) to CUBIN and launched with
the driver API through ctypes: no toolkit, no torch, no Rust needed. `--compile-only` compiles
for sm_90 without a GPU (a check that runs anywhere NVRTC is found).
NVRTC is looked up in $KSMITH_NVRTC, tools/cuda (the repo's setup), the nvidia-cuda-nvrtc wheels
next to this Python, then the system.
"""

import ctypes
import glob
import os
import sys

SOURCE = r"""
extern "C" __global__ void transpose_smem(const float* in, float* out, int n) {
    __shared__ float tile[32][32];  // no padding column: the column reads below conflict
    int x = blockIdx.x * 32 + threadIdx.x, y = blockIdx.y * 32 + threadIdx.y;
    for (int j = 0; j < 32; j += 8) tile[threadIdx.y + j][threadIdx.x] = in[(y + j) * n + x];
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x;
    y = blockIdx.x * 32 + threadIdx.y;
    for (int j = 0; j < 32; j += 8) out[(y + j) * n + x] = tile[threadIdx.x][threadIdx.y + j];
}

extern "C" __global__ void scale(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * in[i];
}

extern "C" __global__ void oob_write(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = (float)n;  // no bound check: the grid covers more than n elements
}

extern "C" __global__ void smem_race(const float* in, float* out) {
    __shared__ float s[256];
    s[threadIdx.x] = in[threadIdx.x];
    // Missing __syncthreads(): thread t reads what thread t+32 (another warp) writes.
    out[threadIdx.x] = s[(threadIdx.x + 32) % 256];
}

extern "C" __global__ void uninit_read(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] + 1.0f;
}

extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}
"""


class CudaError(Exception):
    pass


def load_nvrtc():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.normpath(os.path.join(here, "..", ".."))
    candidates = []
    env = os.environ.get("KSMITH_NVRTC")
    if env:
        candidates += [env] if os.path.isfile(env) else glob.glob(os.path.join(env, "libnvrtc.so*"))
    candidates += sorted(glob.glob(os.path.join(repo, "tools/cuda/nvidia/cu*/lib/libnvrtc.so.*")))
    for p in sys.path:
        candidates += sorted(glob.glob(os.path.join(p, "nvidia/cu*/lib/libnvrtc.so.*")))
        candidates += sorted(glob.glob(os.path.join(p, "nvidia/cuda_nvrtc/lib/libnvrtc.so.*")))
    candidates += ["/usr/local/cuda/lib64/libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    errors = []
    for c in candidates:
        if "builtins" in c or ".alt." in c:
            continue
        try:
            # NVRTC dlopens its builtins library by name: load the sibling first so it is found
            # without LD_LIBRARY_PATH.
            for b in sorted(glob.glob(os.path.join(os.path.dirname(c), "libnvrtc-builtins.so.*"))):
                if ".alt." not in b:
                    ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(c), c
        except OSError as e:
            errors.append(f"{c}: {e}")
    raise CudaError("NVRTC not found; tried:\n  " + "\n  ".join(errors or candidates))


def compile_cubin(arch):
    nvrtc, path = load_nvrtc()
    prog = ctypes.c_void_p()
    check_nvrtc(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), SOURCE.encode(), b"capture.cu", 0, None, None), "create")
    opts = [f"--gpu-architecture={arch}".encode(), b"-lineinfo", b"-std=c++17"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        raise CudaError(f"NVRTC ({path}) failed:\n{log.value.decode(errors='replace')}")
    check_nvrtc(nvrtc, nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
    cubin = ctypes.create_string_buffer(size.value)
    check_nvrtc(nvrtc, nvrtc.nvrtcGetCUBIN(prog, cubin), "cubin")
    return cubin, path


def check_nvrtc(nvrtc, rc, what):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CudaError(f"NVRTC {what}: {nvrtc.nvrtcGetErrorString(rc).decode()}")


class Driver:
    def __init__(self):
        try:
            self.cu = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise CudaError(f"no CUDA driver (libcuda.so.1): {e}")
        self.call("cuInit", 0)
        self.dev = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(self.dev), 0)
        self.ctx = ctypes.c_void_p()
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(self.ctx), self.dev)
        self.call("cuCtxSetCurrent", self.ctx)

    def call(self, name, *args):
        rc = getattr(self.cu, name)(*args)
        if rc != 0:
            msg = ctypes.c_char_p()
            self.cu.cuGetErrorString(rc, ctypes.byref(msg))
            raise CudaError(f"{name}: error {rc} ({(msg.value or b'?').decode()})")

    def arch(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(major), 75, self.dev)
        self.call("cuDeviceGetAttribute", ctypes.byref(minor), 76, self.dev)
        return f"sm_{major.value}{minor.value}"

    def module(self, cubin):
        mod = ctypes.c_void_p()
        self.call("cuModuleLoadData", ctypes.byref(mod), cubin)
        return mod

    def function(self, mod, name):
        f = ctypes.c_void_p()
        self.call("cuModuleGetFunction", ctypes.byref(f), mod, name.encode())
        return f

    def alloc(self, nbytes, fill=None):
        p = ctypes.c_uint64()
        self.call("cuMemAlloc_v2", ctypes.byref(p), ctypes.c_size_t(nbytes))
        if fill is not None:
            self.call("cuMemsetD32_v2", p, ctypes.c_uint(fill), ctypes.c_size_t(nbytes // 4))
        return p

    def launch(self, f, grid, block, *args):
        holders = [ctypes.c_uint64(a.value) if isinstance(a, ctypes.c_uint64) else ctypes.c_int(a) for a in args]
        params = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.byref(h), ctypes.c_void_p) for h in holders])
        g = tuple(grid) + (1,) * (3 - len(grid))
        b = tuple(block) + (1,) * (3 - len(block))
        self.call("cuLaunchKernel", f, *[ctypes.c_uint(x) for x in g], *[ctypes.c_uint(x) for x in b],
                  ctypes.c_uint(0), None, params, None)
        self.call("cuCtxSynchronize")


ONE = 0x3F800000  # 1.0f


def run(case, d, mod):
    if case == "transpose":
        n = 2048
        a, b = d.alloc(4 * n * n, ONE), d.alloc(4 * n * n, 0)
        f = d.function(mod, "transpose_smem")
        for _ in range(3):
            d.launch(f, (n // 32, n // 32), (32, 8), a, b, n)
    elif case == "scale":
        n = 1 << 24
        a, b = d.alloc(4 * n, ONE), d.alloc(4 * n, 0)
        f = d.function(mod, "scale")
        for _ in range(3):
            d.launch(f, ((n + 255) // 256,), (256,), a, b, n)
    elif case == "oob":
        n = 1000
        a = d.alloc(4 * n, 0)
        # 2048 threads for 1000 elements: writes run 4 KiB past the allocation's end.
        d.launch(d.function(mod, "oob_write"), (8,), (256,), a, n)
    elif case == "race":
        a, b = d.alloc(4 * 256, ONE), d.alloc(4 * 256, 0)
        d.launch(d.function(mod, "smem_race"), (1,), (256,), a, b)
    elif case == "uninit":
        n = 4096
        a, b = d.alloc(4 * n), d.alloc(4 * n, 0)
        d.launch(d.function(mod, "uninit_read"), (n // 256,), (256,), a, b, n)
    elif case == "barrier":
        a = d.alloc(4 * 32, 0)
        d.launch(d.function(mod, "divergent_barrier"), (1,), (32,), a)
    else:
        raise CudaError(f"unknown case {case!r}")


def main(argv):
    cases = ("transpose", "scale", "oob", "race", "uninit", "barrier")
    if len(argv) < 2 or argv[1] not in cases:
        print(f"usage: {argv[0]} {{{'|'.join(cases)}}} [--compile-only]", file=sys.stderr)
        return 2
    try:
        if "--compile-only" in argv:
            cubin, path = compile_cubin("sm_90")
            print(f"compiled {len(cubin.raw)} bytes of sm_90 CUBIN with {path}")
            return 0
        d = Driver()
        cubin, _ = compile_cubin(d.arch())
        run(argv[1], d, d.module(cubin))
        print(f"{argv[1]}: done")
        return 0
    except CudaError as e:
        # Under the sanitizers a faulting kernel is expected: report and exit non-zero.
        print(f"{argv[1]}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
