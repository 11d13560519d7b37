// BROKEN (overfitting the public shapes): the kernel is specialised at compile time for the
// task's three public (M, N) pairs and dispatches on them; any other shape falls through the
// dispatch and nothing is written. Every public shape is correct, so a harness that checks only
// the published shapes passes it; the held-out shape drawn inside the declared ranges (never a
// public (M, N) pair: held-out draws that repeat a public shape are redrawn) leaves all of y
// holding the poison.
#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

template <int M, int N>
__device__ __forceinline__ void swiglu_fixed(const __nv_bfloat16* __restrict__ a,
                                             const __nv_bfloat16* __restrict__ b,
                                             __nv_bfloat16* __restrict__ y) {
    constexpr long long total = (long long)M * N;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
    }
}

extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* __restrict__ a,
                                       const __nv_bfloat16* __restrict__ b,
                                       __nv_bfloat16* __restrict__ y, int M, int N) {
    if (M == 4096 && N == 4096) {
        swiglu_fixed<4096, 4096>(a, b, y);
    } else if (M == 777 && N == 13823) {
        swiglu_fixed<777, 13823>(a, b, y);
    } else if (M == 16384 && N == 28672) {
        swiglu_fixed<16384, 28672>(a, b, y);
    }
    // Any other shape: no case, no store.
}
