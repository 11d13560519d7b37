#include <cuda_bf16.h>

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// Bug: a staged through shared memory and read back by another thread (mirrored index)
// without __syncthreads(). The low warps are delayed before their stores, so the high warps
// read stale shared memory left by an earlier block.
extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    for (long long base = (long long)blockIdx.x * 256; base < total;
         base += (long long)gridDim.x * 256) {
        long long i = base + t;
        float v = i < total ? __bfloat162float(a[i]) : 0.0f;
        if (t < 128) {
            long long t0 = clock64();
            while (clock64() - t0 < 4000) { }
        }
        s[t] = v;
        // missing: __syncthreads();
        long long j = base + (255 - t);
        if (j < total) {
            y[j] = __float2bfloat16_rn(silu_mul(s[255 - t], __bfloat162float(b[j])));
        }
        __syncthreads();
    }
}
