// BlockFFN chunk-sparse FFN for a chunk of Tc <= 8 tokens (speculative-decoding verification):
// ReLU + RMSNorm router over E experts, then only the experts active for at least one token of the
// chunk are computed (the chunk-level union), each expert a SiLU MLP block of Bk neurons.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - BlockFFN (Song et al. 2025, thunlp/BlockFFN block_ffn_kernel.cuh): the union of the chunk's
//    expert masks is OR-reduced and compacted into an index list with ballot + popc prefix sums, so
//    the up and down passes touch only active experts' weights (bytes ~ union density).
//  - Up and down are skinny GEMMs (N = Tc <= 8 tokens, about 4 FLOP per weight byte, below the fp32
//    SIMT ridge), so they run as GEMVs over compacted rows/columns: 16-byte weight loads, each warp
//    owns 4 weight rows so every activation vector read from shared memory feeds 4 rows, fp32
//    accumulation, butterfly warp reductions.
//  - Down pass gathers the active column blocks of Wdown through the compacted index (Bk % 8 == 0
//    keeps every 16-byte run inside one expert) and stages the up activations (already scaled by the
//    router weight) chunk by chunk in shared memory.
//  - Up-pass blocks past the active row count exit before loading anything (grid sized for all
//    experts, the active count is only known on the device).
// Requires H % 8 == 0, Bk % 8 == 0, E <= 256, Tc <= 8.
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu
#define ROWS 4              // weight rows per warp
#define GEMV_WARPS 4        // 16 rows per block
#define KC 1024             // up activations staged per chunk in the down pass

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
    return bf_lo(a.x) * bf_lo(b.x) + bf_hi(a.x) * bf_hi(b.x) + bf_lo(a.y) * bf_lo(b.y) + bf_hi(a.y) * bf_hi(b.y) +
           bf_lo(a.z) * bf_lo(b.z) + bf_hi(a.z) * bf_hi(b.z) + bf_lo(a.w) * bf_lo(b.w) + bf_hi(a.w) * bf_hi(b.w);
}
static __device__ __forceinline__ float dot8f(const uint4& w, const float4& h0, const float4& h1) {
    return bf_lo(w.x) * h0.x + bf_hi(w.x) * h0.y + bf_lo(w.y) * h0.z + bf_hi(w.y) * h0.w +
           bf_lo(w.z) * h1.x + bf_hi(w.z) * h1.y + bf_lo(w.w) * h1.z + bf_hi(w.w) * h1.w;
}

// 1. logits[t, e] = x[t] . Wr[e]: one block per expert, one warp per token.
extern "C" __global__ void __launch_bounds__(256)
router_logits(const bf16* __restrict__ X, const bf16* __restrict__ Wr, float* __restrict__ logits, int Tc, int H,
              int E) {
    const int e = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint4* w = reinterpret_cast<const uint4*>(Wr + (size_t)e * H);
    for (int t = warp; t < Tc; t += 8) {
        const uint4* x = reinterpret_cast<const uint4*>(X + (size_t)t * H);
        float s = 0.0f;
        for (int i = lane; i < H / 8; i += 32) s += dot8(__ldg(w + i), __ldg(x + i));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
        if (lane == 0) logits[t * E + e] = s;
    }
}

// 2. r[t, e] = relu(logit) * rsqrt(mean_e relu^2 + 1e-6) * g[e]; active list of the chunk union
//    (experts with relu(logit) > 0 for some token), increasing e; count = list length. One block of 256.
extern "C" __global__ void __launch_bounds__(256)
router_norm(const float* __restrict__ logits, const bf16* __restrict__ g, float* __restrict__ r,
            int* __restrict__ list, int* __restrict__ count, int Tc, int E) {
    __shared__ float red[8][8];   // [token][warp]
    __shared__ int wcnt[8];
    const int e = threadIdx.x, lane = e & 31, warp = e >> 5;
    float z[8];
    bool active = false;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        z[t] = (t < Tc && e < E) ? fmaxf(logits[t * E + e], 0.0f) : 0.0f;
        active |= z[t] > 0.0f;
        float sq = z[t] * z[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(FULL_MASK, sq, o);
        if (lane == 0) red[t][warp] = sq;
    }
    const unsigned ball = __ballot_sync(FULL_MASK, active);
    if (lane == 0) wcnt[warp] = __popc(ball);
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
        before += w < warp ? wcnt[w] : 0;
        total += wcnt[w];
    }
    if (active) list[before + __popc(ball & ((1u << lane) - 1u))] = e;
    if (e == 0) *count = total;
    if (e < E) {
        const float ge = __bfloat162float(g[e]);
        for (int t = 0; t < Tc; ++t) {
            float ss = 0.0f;
#pragma unroll
            for (int w = 0; w < 8; ++w) ss += red[t][w];
            r[t * E + e] = z[t] * rsqrtf(ss / (float)E + 1e-6f) * ge;
        }
    }
}

// Sum of acc over the 32 lanes of a warp, for every entry (butterfly: all lanes get all sums).
template <int TC>
static __device__ __forceinline__ void warp_sum(float (&acc)[ROWS][TC]) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int q = 0; q < ROWS; ++q)
#pragma unroll
            for (int t = 0; t < TC; ++t) acc[q][t] += __shfl_xor_sync(FULL_MASK, acc[q][t], o);
}

// 3. h[t, a] = r[t, e] * silu(Wup[e*Bk + j] . x[t]) for compacted active rows a = slot*Bk + j,
//    e = list[slot]; a < count*Bk. 16 rows per block; the chunk's x (TC rows, zero past Tc) in smem.
template <int TC>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
sparse_up(const bf16* __restrict__ X, const bf16* __restrict__ Wup, const float* __restrict__ r,
          const int* __restrict__ list, const int* __restrict__ count, float* __restrict__ h, int Tc, int H, int E,
          int Bk) {
    extern __shared__ uint4 xs[];  // [TC][H/8]
    const int KA = *count * Bk;
    const int a0 = blockIdx.x * (GEMV_WARPS * ROWS);
    if (a0 >= KA) return;  // block-uniform
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int hv = H / 8;
    for (int i = tid; i < TC * hv; i += GEMV_WARPS * 32) {
        const int t = i / hv;
        xs[i] = t < Tc ? __ldg(reinterpret_cast<const uint4*>(X) + i) : make_uint4(0u, 0u, 0u, 0u);
    }
    __syncthreads();

    const uint4* wrow[ROWS];
    int aq[ROWS];
#pragma unroll
    for (int q = 0; q < ROWS; ++q) {
        aq[q] = a0 + warp * ROWS + q;
        const int a = min(aq[q], KA - 1);  // rows past KA compute a duplicate, never stored
        wrow[q] = reinterpret_cast<const uint4*>(Wup + ((size_t)__ldg(list + a / Bk) * Bk + a % Bk) * H);
    }
    float acc[ROWS][TC];
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
        for (int t = 0; t < TC; ++t) acc[q][t] = 0.0f;
    for (int i = lane; i < hv; i += 32) {
        uint4 w[ROWS];
#pragma unroll
        for (int q = 0; q < ROWS; ++q) w[q] = __ldcs(wrow[q] + i);  // weights streamed once
#pragma unroll
        for (int t = 0; t < TC; ++t) {
            const uint4 x = xs[t * hv + i];
#pragma unroll
            for (int q = 0; q < ROWS; ++q) acc[q][t] += dot8(w[q], x);
        }
    }
    warp_sum<TC>(acc);
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
        for (int t = 0; t < TC; ++t)
            if (lane == q * TC + t && t < Tc && aq[q] < KA) {
                const int a = aq[q];
                const float v = acc[q][t];
                h[(size_t)t * E * Bk + a] = r[t * E + __ldg(list + a / Bk)] * (v / (1.0f + expf(-v)));
            }
}

// 4. y[t, n] = sum_{a < count*Bk} Wdown[n, list[a/Bk]*Bk + a%Bk] * h[t, a]; 16 output rows per block,
//    h staged KC columns at a time (rows t >= Tc zero).
template <int TC>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
sparse_down(const float* __restrict__ h, const bf16* __restrict__ Wdown, const int* __restrict__ list,
            const int* __restrict__ count, bf16* __restrict__ y, int Tc, int H, int E, int Bk) {
    __shared__ float4 hs[TC * KC / 4];
    __shared__ int ls[256];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nact = *count;
    const int KA = nact * Bk;
    const int EB = E * Bk;
    for (int i = tid; i < nact; i += GEMV_WARPS * 32) ls[i] = list[i];

    int nq[ROWS];
    const bf16* wrow[ROWS];
#pragma unroll
    for (int q = 0; q < ROWS; ++q) {
        nq[q] = blockIdx.x * (GEMV_WARPS * ROWS) + warp * ROWS + q;
        wrow[q] = Wdown + (size_t)min(nq[q], H - 1) * EB;  // rows past H compute a duplicate
    }
    float acc[ROWS][TC];
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
        for (int t = 0; t < TC; ++t) acc[q][t] = 0.0f;

    for (int c0 = 0; c0 < KA; c0 += KC) {
        const int kc = min(KC, KA - c0);  // multiple of 8
        __syncthreads();                  // previous chunk consumed (and ls written)
        for (int i = tid; i < TC * (KC / 4); i += GEMV_WARPS * 32) {
            const int t = i / (KC / 4), c = (i % (KC / 4)) * 4;
            hs[i] = (t < Tc && c < kc) ? *reinterpret_cast<const float4*>(h + (size_t)t * EB + c0 + c)
                                      : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        __syncthreads();
        for (int i = lane * 8; i < kc; i += 256) {
            const int a = c0 + i;
            const int col = ls[a / Bk] * Bk + a % Bk;  // 8 consecutive columns of one expert
            uint4 w[ROWS];
#pragma unroll
            for (int q = 0; q < ROWS; ++q) w[q] = __ldcs(reinterpret_cast<const uint4*>(wrow[q] + col));
#pragma unroll
            for (int t = 0; t < TC; ++t) {
                const float4 h0 = hs[(t * KC + i) / 4], h1 = hs[(t * KC + i) / 4 + 1];
#pragma unroll
                for (int q = 0; q < ROWS; ++q) acc[q][t] += dot8f(w[q], h0, h1);
            }
        }
    }
    warp_sum<TC>(acc);
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
        for (int t = 0; t < TC; ++t)
            if (lane == q * TC + t && t < Tc && nq[q] < H) y[(size_t)t * H + nq[q]] = __float2bfloat16_rn(acc[q][t]);
}

#define INST(TC)                                                                                               \
    template __global__ void sparse_up<TC>(const bf16*, const bf16*, const float*, const int*, const int*,      \
                                           float*, int, int, int, int);                                        \
    template __global__ void sparse_down<TC>(const float*, const bf16*, const int*, const int*, bf16*, int, int, \
                                             int, int);
INST(1)
INST(2)
INST(4)
INST(8)
