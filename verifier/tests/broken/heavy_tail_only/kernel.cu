#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: clamps the gate to [-8, 8] "to avoid overflow in exp": invisible on N(0, 1) inputs,
// wrong as soon as |a| > 8.
extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float x = fminf(fmaxf(__bfloat162float(a[i]), -8.0f), 8.0f);
        y[i] = __float2bfloat16_rn(silu_mul(x, __bfloat162float(b[i])));
    }
}
