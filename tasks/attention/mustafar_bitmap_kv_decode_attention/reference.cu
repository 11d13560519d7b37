// Mustafar decode attention over a bitmap-compressed KV cache (fp16 values, fp32 softmax).
//
// Techniques (after Mustafar, dhjoo98/mustafar kernel/csrc/SpMM_Kernel.cuh, which applies
// Flash-LLM's "load as sparse, compute as dense" to the KV cache, and after flash-decoding's
// split-KV + log-sum-exp merge; code written from scratch):
//  * mustafar_block_totals: one warp per 64-token block sums the padded popcounts of its D K-tiles
//    and D V-tiles (the only pass over the bitmaps besides the main kernel; offsets are not given).
//  * mustafar_split<D, G>: one 128-thread block per (KV head, run of 8 token blocks) serving all G
//    query heads of the group (the KV stream is read once per group). Per 64-token block:
//    block-wide exclusive scan of the padded popcounts (bitmaps prefetched one block ahead) gives
//    every tile's offset; the block's value segments (contiguous and 16-byte aligned by
//    construction) are streamed into shared memory with coalesced 16-byte loads (load as
//    sparse); warps expand tiles to dense K^T / V tiles in
//    shared memory with popcount ranks (compute as dense); scores, an online softmax in the exp2
//    domain (q pre-scaled by log2(e)/sqrt(D)) and P.V follow from shared memory. The last split of
//    every head handles the dense recent window. Partial (o, m, l) per split go to scratch.
//  * mustafar_combine<D>: log-sum-exp merge of the splits, in a fixed order (deterministic).
#include <cuda_fp16.h>

namespace {

constexpr int kThreads = 128;
constexpr int kBlocksPerSplit = 8;  // 64-token blocks per split (plan: grid.x = ceil_div(NC, 8) + 1)
constexpr int kKsStride = 66;       // halves per row of the K^T tile (conflict-free both ways)

__device__ __forceinline__ unsigned pad8(unsigned n) { return (n + 7u) & ~7u; }

// Shared-memory carve-up; the plan's shared_bytes is 540*D + 4*G*D + 256*G + 256.
template <int D, int G>
struct Smem {
    static constexpr int stage_k = 0;                       // 64*D halves
    static constexpr int stage_v = stage_k + 64 * D * 2;    // 64*D halves
    static constexpr int vs = stage_v + 64 * D * 2;         // [64][D] halves
    static constexpr int ks = vs + 64 * D * 2;              // [D][66] halves
    static constexpr int kbm = ks + D * kKsStride * 2;      // D u64
    static constexpr int vbm = kbm + D * 8;                 // D u64
    static constexpr int koff = vbm + D * 8;                // D u32
    static constexpr int voff = koff + D * 4;               // D u32
    static constexpr int q = voff + D * 4;                  // [G][D] f32
    static constexpr int p = q + G * D * 4;                 // [G][64] f32
    static constexpr int misc = p + G * 64 * 4;             // alpha, m, l [8] each + scan words
    static constexpr int total = misc + 256;
    static_assert(total == 540 * D + 4 * G * D + 256 * G + 256, "plan shared_bytes formula");
    static_assert(kbm % 8 == 0, "u64 alignment");
};

// Sum of two values over the block (all threads get the totals).
__device__ __forceinline__ void block_sum2(unsigned& a, unsigned& b, unsigned* scratch8) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) {
        scratch8[warp] = a;
        scratch8[4 + warp] = b;
    }
    __syncthreads();
    a = scratch8[0] + scratch8[1] + scratch8[2] + scratch8[3];
    b = scratch8[4] + scratch8[5] + scratch8[6] + scratch8[7];
}

// Exclusive scan of two values over the block; also returns the totals.
__device__ __forceinline__ void block_exscan2(unsigned& a, unsigned& b, unsigned& ta, unsigned& tb,
                                              unsigned* scratch8) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned ia = a, ib = b;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned ya = __shfl_up_sync(0xffffffffu, ia, o);
        const unsigned yb = __shfl_up_sync(0xffffffffu, ib, o);
        if (lane >= o) {
            ia += ya;
            ib += yb;
        }
    }
    __syncthreads();
    if (lane == 31) {
        scratch8[warp] = ia;
        scratch8[4 + warp] = ib;
    }
    __syncthreads();
    unsigned pa = 0, pb = 0;
    ta = 0;
    tb = 0;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
        const unsigned wa = scratch8[w], wb = scratch8[4 + w];
        if (w < warp) {
            pa += wa;
            pb += wb;
        }
        ta += wa;
        tb += wb;
    }
    a = pa + ia - a;
    b = pb + ib - b;
}

// Scores, online-softmax update and P.V for one 64-token tile held densely in shared memory.
template <int D, int G>
__device__ __forceinline__ void attend_tile(const __half* Ks, const __half* Vs, const float* q_s,
                                            float* p_s, float* alpha_s, float* m_s, float* l_s,
                                            int n_valid, float (&acc)[G]) {
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    {   // scores (log2 domain): thread = (token p, head parity hh)
        constexpr int GH = (G + 1) / 2;
        const int p = tid & 63, hh = tid >> 6;
        float s[GH];
#pragma unroll
        for (int j = 0; j < GH; ++j) s[j] = 0.f;
#pragma unroll 8
        for (int d = 0; d < D; ++d) {
            const float k = __half2float(Ks[d * kKsStride + p]);
#pragma unroll
            for (int j = 0; j < GH; ++j) {
                const int g = hh + 2 * j;
                if (g < G) s[j] = fmaf(q_s[g * D + d], k, s[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < GH; ++j) {
            const int g = hh + 2 * j;
            if (g < G) p_s[g * 64 + p] = p < n_valid ? s[j] : -__int_as_float(0x7f800000);
        }
    }
    __syncthreads();
    for (int g = warp; g < G; g += 4) {  // one warp per head: max, exp2, sum, rescale factor
        const float a = p_s[g * 64 + lane], b = p_s[g * 64 + 32 + lane];
        float mx = fmaxf(a, b);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float m_old = m_s[g];
        const float m_new = fmaxf(m_old, mx);  // finite: every tile has a valid token
        const float ea = exp2f(a - m_new), eb = exp2f(b - m_new);
        p_s[g * 64 + lane] = ea;
        p_s[g * 64 + 32 + lane] = eb;
        float sum = ea + eb;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0) {
            const float al = exp2f(m_old - m_new);  // 0 on the first tile (m_old = -inf)
            alpha_s[g] = al;
            m_s[g] = m_new;
            l_s[g] = l_s[g] * al + sum;
        }
    }
    __syncthreads();
    if (tid < D) {
#pragma unroll
        for (int g = 0; g < G; ++g) acc[g] *= alpha_s[g];
#pragma unroll 4
        for (int s = 0; s < 64; ++s) {
            const float v = __half2float(Vs[s * D + tid]);
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g] = fmaf(p_s[g * 64 + s], v, acc[g]);
        }
    }
    __syncthreads();  // Ks, Vs and p_s are rewritten by the next tile
}

}  // namespace

// grid = (ceil_div(NC, 8), B*Hkv), block = 256: per 64-token block, padded value counts of K and V.
template <int D>
__global__ void __launch_bounds__(256) mustafar_block_totals(const unsigned long long* __restrict__ k_bitmap,
                                                             const unsigned long long* __restrict__ v_bitmap,
                                                             unsigned* __restrict__ ktot,
                                                             unsigned* __restrict__ vtot, int NC) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int c = blockIdx.x * 8 + warp;
    if (c >= NC) return;
    const size_t blk = (size_t)blockIdx.y * NC + c;
    const unsigned long long* kb = k_bitmap + blk * D;
    const unsigned long long* vb = v_bitmap + blk * D;
    unsigned sk = 0, sv = 0;
#pragma unroll
    for (int t = lane; t < D; t += 32) {
        sk += pad8(__popcll(__ldg(kb + t)));
        sv += pad8(__popcll(__ldg(vb + t)));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        sk += __shfl_xor_sync(0xffffffffu, sk, o);
        sv += __shfl_xor_sync(0xffffffffu, sv, o);
    }
    if (lane == 0) {
        ktot[blk] = sk;
        vtot[blk] = sv;
    }
}

// grid = (ceil_div(NC, 8) + 1, B*Hkv), block = 128, dynamic smem = Smem<D, G>::total.
template <int D, int G>
__global__ void mustafar_split(
    const __half* __restrict__ q, const unsigned long long* __restrict__ k_bitmap,
    const __half* __restrict__ k_values, const unsigned long long* __restrict__ v_bitmap,
    const __half* __restrict__ v_values, const __half* __restrict__ k_res,
    const __half* __restrict__ v_res, const unsigned* __restrict__ ktot,
    const unsigned* __restrict__ vtot, float* __restrict__ o_part, float* __restrict__ ml_part,
    int Hkv, int NC, int R) {
    static_assert(D == 64 || D == 128, "D");
    static_assert(G >= 1 && G <= 8, "G");
    using L = Smem<D, G>;
    extern __shared__ __align__(16) unsigned char smem[];
    __half* stage_k = reinterpret_cast<__half*>(smem + L::stage_k);
    __half* stage_v = reinterpret_cast<__half*>(smem + L::stage_v);
    __half* Vs = reinterpret_cast<__half*>(smem + L::vs);
    __half* Ks = reinterpret_cast<__half*>(smem + L::ks);
    unsigned long long* kbm_s = reinterpret_cast<unsigned long long*>(smem + L::kbm);
    unsigned long long* vbm_s = reinterpret_cast<unsigned long long*>(smem + L::vbm);
    unsigned* koff_s = reinterpret_cast<unsigned*>(smem + L::koff);
    unsigned* voff_s = reinterpret_cast<unsigned*>(smem + L::voff);
    float* q_s = reinterpret_cast<float*>(smem + L::q);
    float* p_s = reinterpret_cast<float*>(smem + L::p);
    float* alpha_s = reinterpret_cast<float*>(smem + L::misc);
    float* m_s = alpha_s + 8;
    float* l_s = alpha_s + 16;
    unsigned* scan_s = reinterpret_cast<unsigned*>(alpha_s + 24);  // 8 words

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x;
    const int n_csplit = gridDim.x - 1;  // the last split is the dense window
    const int bh = blockIdx.y;
    const int b = bh / Hkv, hk = bh % Hkv;
    const int Hq = Hkv * G;
    const size_t head0 = (size_t)b * Hq + (size_t)hk * G;  // first query head of the group

    const float qscale = 1.4426950408889634f * rsqrtf((float)D);
    for (int i = tid; i < G * D; i += kThreads)
        q_s[i] = __half2float(q[head0 * D + i]) * qscale;
    if (tid < G) {
        m_s[tid] = -__int_as_float(0x7f800000);
        l_s[tid] = 0.f;
    }
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0.f;
    __syncthreads();

    if (split < n_csplit) {
        const int c0 = split * kBlocksPerSplit;
        const int c1 = min(NC, c0 + kBlocksPerSplit);
        // Stream positions of this split's first block: sum of the padded totals before it.
        unsigned kbase = 0, vbase = 0;
        for (int i = tid; i < c0; i += kThreads) {
            kbase += ktot[(size_t)bh * NC + i];
            vbase += vtot[(size_t)bh * NC + i];
        }
        block_sum2(kbase, vbase, scan_s);
        const size_t region = (size_t)bh * NC * 64 * D;  // halves; multiple of 8
        const uint4* kv4 = reinterpret_cast<const uint4*>(k_values + region);
        const uint4* vv4 = reinterpret_cast<const uint4*>(v_values + region);

        // Bitmap words of the next 64-token block are fetched one iteration ahead (software
        // pipelining), so each iteration waits on one global round trip (the value segments).
        unsigned long long kw_next = 0, vw_next = 0;
        if (tid < D) {
            kw_next = __ldg(k_bitmap + ((size_t)bh * NC + c0) * D + tid);
            vw_next = __ldg(v_bitmap + ((size_t)bh * NC + c0) * D + tid);
        }
        for (int c = c0; c < c1; ++c) {
            // 1. tile offsets inside this block's segments
            const unsigned long long kw = kw_next, vw = vw_next;
            unsigned ko = 0, vo = 0;
            if (tid < D) {
                ko = pad8(__popcll(kw));
                vo = pad8(__popcll(vw));
            }
            unsigned ktotal, vtotal;
            block_exscan2(ko, vo, ktotal, vtotal, scan_s);
            if (tid < D) {
                kbm_s[tid] = kw;
                vbm_s[tid] = vw;
                koff_s[tid] = ko;
                voff_s[tid] = vo;
            }
            // 2. load as sparse: both segments, coalesced 16-byte loads (starts are 16-byte aligned)
            {
                const int nk = (int)(ktotal >> 3), nv = (int)(vtotal >> 3);
                const uint4* ksrc = kv4 + (kbase >> 3);
                const uint4* vsrc = vv4 + (vbase >> 3);
                uint4* kdst = reinterpret_cast<uint4*>(stage_k);
                uint4* vdst = reinterpret_cast<uint4*>(stage_v);
#pragma unroll 4
                for (int i = tid; i < nk; i += kThreads) kdst[i] = __ldg(ksrc + i);
#pragma unroll 4
                for (int i = tid; i < nv; i += kThreads) vdst[i] = __ldg(vsrc + i);
            }
            if (tid < D && c + 1 < c1) {
                kw_next = __ldg(k_bitmap + ((size_t)bh * NC + c + 1) * D + tid);
                vw_next = __ldg(v_bitmap + ((size_t)bh * NC + c + 1) * D + tid);
            }
            kbase += ktotal;
            vbase += vtotal;
            __syncthreads();
            // 3. compute as dense: expand tiles (warp per tile, lane = positions lane, lane + 32)
            const unsigned long long below = (1ull << lane) - 1ull;
            for (int t = warp; t < D; t += 4) {
                const unsigned long long km = kbm_s[t];
                const unsigned long long vm = vbm_s[t];
                const __half* ksrc = stage_k + koff_s[t];
                const __half* vsrc = stage_v + voff_s[t];
                const int s_tok = t / (D / 64), j = t % (D / 64);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int p = lane + 32 * h;
                    const unsigned long long lo = h ? (below << 32) | 0xffffffffull : below;
                    const __half zero = __float2half(0.f);
                    Ks[t * kKsStride + p] = ((km >> p) & 1ull) ? ksrc[__popcll(km & lo)] : zero;
                    Vs[s_tok * D + 64 * j + p] = ((vm >> p) & 1ull) ? vsrc[__popcll(vm & lo)] : zero;
                }
            }
            __syncthreads();
            attend_tile<D, G>(Ks, Vs, q_s, p_s, alpha_s, m_s, l_s, 64, acc);
        }
    } else {
        for (int r0 = 0; r0 < R; r0 += 64) {
            const int n = min(64, R - r0);
            const __half zero = __float2half(0.f);
            for (int i = tid; i < 64 * D; i += kThreads) {
                const int p = i / D, d = i % D;
                const size_t src = ((size_t)bh * R + r0 + p) * D + d;
                Ks[d * kKsStride + p] = p < n ? k_res[src] : zero;
                Vs[p * D + d] = p < n ? v_res[src] : zero;
            }
            __syncthreads();
            attend_tile<D, G>(Ks, Vs, q_s, p_s, alpha_s, m_s, l_s, n, acc);
        }
    }

    const size_t BHq = (size_t)gridDim.y * G;
    if (tid < D) {
#pragma unroll
        for (int g = 0; g < G; ++g) o_part[((size_t)split * BHq + head0 + g) * D + tid] = acc[g];
    }
    if (tid < G) {
        ml_part[((size_t)split * BHq + head0 + tid) * 2] = m_s[tid];
        ml_part[((size_t)split * BHq + head0 + tid) * 2 + 1] = l_s[tid];
    }
}

// grid = B*Hq, block = D: merge the splits of one query head (fixed order, deterministic).
template <int D>
__global__ void __launch_bounds__(D) mustafar_combine(const float* __restrict__ o_part,
                                                      const float* __restrict__ ml_part,
                                                      __half* __restrict__ out, int n_split) {
    const size_t BHq = gridDim.x;
    const size_t i = blockIdx.x;
    const int t = threadIdx.x;
    float M = -__int_as_float(0x7f800000);
    for (int s = 0; s < n_split; ++s) M = fmaxf(M, ml_part[(s * BHq + i) * 2]);
    float L = 0.f, acc = 0.f;
    for (int s = 0; s < n_split; ++s) {
        const float w = exp2f(ml_part[(s * BHq + i) * 2] - M);
        L = fmaf(ml_part[(s * BHq + i) * 2 + 1], w, L);
        acc = fmaf(o_part[(s * BHq + i) * D + t], w, acc);
    }
    out[i * D + t] = __float2half_rn(acc / L);
}

#define MUSTAFAR_SPLIT(D, G)                                                                       \
    template __global__ void mustafar_split<D, G>(                                                 \
        const __half*, const unsigned long long*, const __half*, const unsigned long long*,        \
        const __half*, const __half*, const __half*, const unsigned*, const unsigned*, float*,     \
        float*, int, int, int);
MUSTAFAR_SPLIT(64, 1) MUSTAFAR_SPLIT(64, 2) MUSTAFAR_SPLIT(64, 3) MUSTAFAR_SPLIT(64, 4)
MUSTAFAR_SPLIT(64, 5) MUSTAFAR_SPLIT(64, 6) MUSTAFAR_SPLIT(64, 7) MUSTAFAR_SPLIT(64, 8)
MUSTAFAR_SPLIT(128, 1) MUSTAFAR_SPLIT(128, 2) MUSTAFAR_SPLIT(128, 3) MUSTAFAR_SPLIT(128, 4)
MUSTAFAR_SPLIT(128, 5) MUSTAFAR_SPLIT(128, 6) MUSTAFAR_SPLIT(128, 7) MUSTAFAR_SPLIT(128, 8)
template __global__ void mustafar_block_totals<64>(const unsigned long long*, const unsigned long long*, unsigned*, unsigned*, int);
template __global__ void mustafar_block_totals<128>(const unsigned long long*, const unsigned long long*, unsigned*, unsigned*, int);
template __global__ void mustafar_combine<64>(const float*, const float*, __half*, int);
template __global__ void mustafar_combine<128>(const float*, const float*, __half*, int);
