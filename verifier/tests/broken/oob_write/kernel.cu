#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: `i <= total` writes one element past the end of y (and reads past a and b).
extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i <= total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
    }
}
