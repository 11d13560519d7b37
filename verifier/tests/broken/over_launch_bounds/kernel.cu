#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: compiled for at most 128 threads per block, launched with 256.
extern "C" __global__ void __launch_bounds__(128)
swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* y, long long total) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
    }
}
