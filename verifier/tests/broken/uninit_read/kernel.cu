#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: accumulates into a scratch buffer assuming it starts at zero; the harness fills scratch
// with NaN poison before every call.
extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, float* acc, long long total) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        acc[i] += silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i]));
        y[i] = __float2bfloat16_rn(acc[i]);
    }
}
