// MoE gather + weighted combine (SonicMoE token_gather_sum semantics):
//   out[t, :] = sum_{j = off[t]}^{off[t+1]-1} w[j] * Y[perm[j], :]      bf16 Y, fp32 math and output
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - SonicMoE reduction_over_k_gather.py (token_gather_sum_kernel): one program per token (and
//    H-slice), the token's pairs walked in order, no atomics -> deterministic, 64-bit row offsets.
//  - Each thread owns VPT 8-column vectors of the token's row: 16-byte loads of Y (8 bf16, streaming
//    hint: each row is read once), fp32 accumulators in registers, two 16-byte stores per vector.
//  - Pairs are consumed two at a time with both rows' loads issued before any FMA (memory-level
//    parallelism); the accumulation order is still pair order.
//  - Template VPT picked by the plan so a block of 128 threads covers 1024*VPT columns;
//    grid.y splits wider rows.
// Requires H % 8 == 0 (task constraint): every Y and out row is 16-byte aligned.
#include <cuda_bf16.h>

static __device__ __forceinline__ void fma8(float (&a)[8], float w, const uint4& v) {
    a[0] = fmaf(w, __uint_as_float(v.x << 16), a[0]);
    a[1] = fmaf(w, __uint_as_float(v.x & 0xffff0000u), a[1]);
    a[2] = fmaf(w, __uint_as_float(v.y << 16), a[2]);
    a[3] = fmaf(w, __uint_as_float(v.y & 0xffff0000u), a[3]);
    a[4] = fmaf(w, __uint_as_float(v.z << 16), a[4]);
    a[5] = fmaf(w, __uint_as_float(v.z & 0xffff0000u), a[5]);
    a[6] = fmaf(w, __uint_as_float(v.w << 16), a[6]);
    a[7] = fmaf(w, __uint_as_float(v.w & 0xffff0000u), a[7]);
}

template <int VPT>
__global__ void __launch_bounds__(128)
gather_combine(const __nv_bfloat16* __restrict__ Y, const int* __restrict__ perm, const int* __restrict__ off,
               const float* __restrict__ w, float* __restrict__ out, int H) {
    const int t = blockIdx.x;
    const int nv = H >> 3;
    const int v0 = blockIdx.y * (128 * VPT) + threadIdx.x;  // this thread's vectors: v0 + i*128
    const int j0 = __ldg(off + t), j1 = __ldg(off + t + 1);

    float acc[VPT][8];
#pragma unroll
    for (int i = 0; i < VPT; ++i)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[i][e] = 0.0f;

    int j = j0;
    for (; j + 1 < j1; j += 2) {
        const int r0 = __ldg(perm + j), r1 = __ldg(perm + j + 1);
        const float w0 = __ldg(w + j), w1 = __ldg(w + j + 1);
        const uint4* y0 = reinterpret_cast<const uint4*>(Y + (size_t)r0 * H);
        const uint4* y1 = reinterpret_cast<const uint4*>(Y + (size_t)r1 * H);
        uint4 a[VPT], b[VPT];
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
            const int v = v0 + i * 128;
            if (v < nv) {
                a[i] = __ldcs(y0 + v);
                b[i] = __ldcs(y1 + v);
            } else {
                a[i] = make_uint4(0u, 0u, 0u, 0u);
                b[i] = a[i];
            }
        }
#pragma unroll
        for (int i = 0; i < VPT; ++i) fma8(acc[i], w0, a[i]);
#pragma unroll
        for (int i = 0; i < VPT; ++i) fma8(acc[i], w1, b[i]);
    }
    if (j < j1) {
        const int r0 = __ldg(perm + j);
        const float w0 = __ldg(w + j);
        const uint4* y0 = reinterpret_cast<const uint4*>(Y + (size_t)r0 * H);
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
            const int v = v0 + i * 128;
            if (v < nv) fma8(acc[i], w0, __ldcs(y0 + v));
        }
    }

    float4* o = reinterpret_cast<float4*>(out + (size_t)t * H);
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
        const int v = v0 + i * 128;
        if (v < nv) {
            __stcs(o + 2 * v, make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
            __stcs(o + 2 * v + 1, make_float4(acc[i][4], acc[i][5], acc[i][6], acc[i][7]));
        }
    }
}

template __global__ void gather_combine<1>(const __nv_bfloat16*, const int*, const int*, const float*, float*, int);
template __global__ void gather_combine<2>(const __nv_bfloat16*, const int*, const int*, const float*, float*, int);
template __global__ void gather_combine<4>(const __nv_bfloat16*, const int*, const int*, const float*, float*, int);
