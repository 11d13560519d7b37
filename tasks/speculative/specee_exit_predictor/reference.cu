// SpecEE early-exit predictor, fused into one launch: gathered LM-head dot products for the k
// speculative tokens, feature construction (softmax of the logits and their change since the previous
// layer) and the 2k -> 512 -> 1 MLP with a sigmoid.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - SpecEE (Xu et al., ISCA 2025): the predictor runs after every decoder layer, so everything is
//    one kernel (one block per sequence) and only the k LM-head rows of the speculative tokens are
//    read, never the whole vocabulary projection.
//  - Gathered GEMV with all 256 threads: every thread streams 16-byte chunks of all k rows at once
//    (k independent loads in flight per chunk index, h read once per chunk), warp-shuffle then
//    shared-memory reduction of the k partial sums.
//  - Tiny MLP held on chip: features in shared memory (broadcast reads), two hidden neurons per
//    thread with the first-layer weights read as float4 where the row width allows, a block reduction
//    of w2 . ReLU(.), then the sigmoid.
// Requires H % 8 == 0, K <= 8.
#include <cuda_bf16.h>

#define THREADS 256
#define KMAX 8
#define HID 512
#define FULL_MASK 0xffffffffu

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
    return bf_lo(a.x) * bf_lo(b.x) + bf_hi(a.x) * bf_hi(b.x) + bf_lo(a.y) * bf_lo(b.y) + bf_hi(a.y) * bf_hi(b.y) +
           bf_lo(a.z) * bf_lo(b.z) + bf_hi(a.z) * bf_hi(b.z) + bf_lo(a.w) * bf_lo(b.w) + bf_hi(a.w) * bf_hi(b.w);
}

extern "C" __global__ void __launch_bounds__(THREADS)
specee_exit_predictor(const bf16* __restrict__ h, const bf16* __restrict__ lm_head, const int* __restrict__ ids,
                      const float* __restrict__ z_prev, const float* __restrict__ W1, const float* __restrict__ b1,
                      const float* __restrict__ w2, const float* __restrict__ b2, float* __restrict__ score,
                      float* __restrict__ z, int H, int K) {
    __shared__ float red[THREADS / 32][KMAX];
    __shared__ float feat[2 * KMAX];
    __shared__ float hred[THREADS / 32];
    const int b = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    // z[j] = h . lm_head[ids[j]]
    const uint4* hv = reinterpret_cast<const uint4*>(h + (size_t)b * H);
    const uint4* rows[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; ++j)
        rows[j] = reinterpret_cast<const uint4*>(lm_head + (size_t)(j < K ? __ldg(ids + b * K + j) : 0) * H);
    float acc[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; ++j) acc[j] = 0.0f;
    for (int i = tid; i < H / 8; i += THREADS) {
        const uint4 x = __ldg(hv + i);
#pragma unroll
        for (int j = 0; j < KMAX; ++j)
            if (j < K) acc[j] += dot8(x, __ldg(rows[j] + i));
    }
#pragma unroll
    for (int j = 0; j < KMAX; ++j) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[j] += __shfl_xor_sync(FULL_MASK, acc[j], o);
        if (lane == 0) red[warp][j] = acc[j];
    }
    __syncthreads();

    // features: softmax(z) and z - z_prev (one warp, lane j < K)
    if (warp == 0) {
        float zj = 0.0f;
        if (lane < K) {
#pragma unroll
            for (int w = 0; w < THREADS / 32; ++w) zj += red[w][lane];
        }
        float mx = lane < K ? zj : __int_as_float(0xff800000);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
        const float e = lane < K ? expf(zj - mx) : 0.0f;
        float den = e;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(FULL_MASK, den, o);
        if (lane < K) {
            feat[lane] = e / den;
            feat[K + lane] = zj - z_prev[b * K + lane];
            z[b * K + lane] = zj;
        }
    }
    __syncthreads();

    // hidden neurons tid and tid + 256: ReLU(W1[n] . f + b1[n]) * w2[n]
    const int F = 2 * K;
    float part = 0.0f;
#pragma unroll
    for (int r = 0; r < HID / THREADS; ++r) {
        const int n = r * THREADS + tid;
        const float* wr = W1 + (size_t)n * F;
        float a = __ldg(b1 + n);
        if ((F & 3) == 0) {  // rows 16-byte aligned: F floats = F/4 float4
            for (int i = 0; i < F; i += 4) {
                const float4 w = __ldg(reinterpret_cast<const float4*>(wr + i));
                a += w.x * feat[i] + w.y * feat[i + 1] + w.z * feat[i + 2] + w.w * feat[i + 3];
            }
        } else {
            for (int i = 0; i < F; ++i) a += __ldg(wr + i) * feat[i];
        }
        part += fmaxf(a, 0.0f) * __ldg(w2 + n);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(FULL_MASK, part, o);
    if (lane == 0) hred[warp] = part;
    __syncthreads();
    if (tid == 0) {
        float s = __ldg(b2);
#pragma unroll
        for (int w = 0; w < THREADS / 32; ++w) s += hred[w];
        score[b] = 1.0f / (1.0f + expf(-s));
    }
}
