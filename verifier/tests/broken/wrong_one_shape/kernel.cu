#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: the scalar tail (only taken when M*N is not a multiple of 8) swaps a and b.
extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long nvec = total / 8;
    for (long long v = tid; v < nvec; v += stride) {
        for (int k = 0; k < 8; ++k) {
            long long i = v * 8 + k;
            y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
        }
    }
    for (long long i = nvec * 8 + tid; i < total; i += stride) {
        y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(b[i]), __bfloat162float(a[i])));
    }
}
