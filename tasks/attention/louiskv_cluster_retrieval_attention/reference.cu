// LouisKV-style cluster retrieval attention for one decode step: per (sequence, kv head), score the
// C key clusters by their centroids (max over the GQA group's query heads), keep the NK best
// clusters, and attend exactly over the tokens of those clusters only. head_dim 128, bf16 in/out.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - Fused centroid scoring + top-K (LouisKV / ClusterKV retrieval; Quest-style page selection): one
//    1024-thread block per (sequence, kv head) computes all C scores with the group's queries held
//    in shared memory (one centroid per thread, 16-byte loads), then a shared-memory bitonic sort by
//    (score desc, cluster asc) yields the exact top-NK in order.
//  - Varlen gather feeding a split-KV flash-decoding kernel (Dao et al. 2023): the selected
//    clusters' token ranges are laid end to end as "positions"; a block owns a contiguous position
//    range, each warp a 32-position tile at a time; a position maps to its token by binary search over
//    the clusters' prefix sums in shared memory, so clusters of any size stream without padding.
//  - Per tile: lanes own tokens for Q K^T (16-byte K-row loads, all G <= 16 group heads at once from
//    smem-broadcast queries), a warp-level online softmax in the exp2 domain, then lanes own head
//    dimensions for P V (coalesced 256-byte V rows, probabilities broadcast from smem). The block's
//    four warp states merge in smem; with several splits, ret_combine merges the blocks.
// Requires D = 128, Hq / Hkv <= 16, NK <= 128, C <= 4096.
#include <cuda_bf16.h>

#define D 128
#define GMAX 16
#define NKMAX 128
#define CMAX 4096
#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ float dot8(const uint4& k, const float* q) {
    const float4 a = *reinterpret_cast<const float4*>(q), b = *reinterpret_cast<const float4*>(q + 4);
    return bf_lo(k.x) * a.x + bf_hi(k.x) * a.y + bf_lo(k.y) * a.z + bf_hi(k.y) * a.w + bf_lo(k.z) * b.x +
           bf_hi(k.z) * b.y + bf_lo(k.w) * b.z + bf_hi(k.w) * b.w;
}

// (s, i) ranks before (t, j): higher score, then lower cluster index
static __device__ __forceinline__ bool better(float s, int i, float t, int j) { return s > t || (s == t && i < j); }

// 1. grid (Hkv, B), 1024 threads: sel[b, hkv, 0..NK) = clusters by (max_g q_g . cent_c desc, c asc).
extern "C" __global__ void __launch_bounds__(1024)
cluster_select(const bf16* __restrict__ q, const bf16* __restrict__ cent, int* __restrict__ sel, int Hq, int Hkv,
               int C, int NK) {
    __shared__ __align__(16) float qs[GMAX * D];
    __shared__ float key[CMAX];
    __shared__ int idx[CMAX];
    const int tid = threadIdx.x;
    const int hkv = blockIdx.x, b = blockIdx.y, G = Hq / Hkv;
    const size_t bh = (size_t)b * Hkv + hkv;
    for (int i = tid; i < G * D; i += 1024) qs[i] = __bfloat162float(q[((size_t)b * Hq + hkv * G) * D + i]);
    int n2 = 1;
    while (n2 < C) n2 <<= 1;
    __syncthreads();
    for (int c = tid; c < n2; c += 1024) {
        float best = NEG_INF;
        if (c < C) {
            const uint4* row = reinterpret_cast<const uint4*>(cent + (bh * C + c) * D);
            float s[GMAX];
#pragma unroll
            for (int g = 0; g < GMAX; ++g) s[g] = 0.0f;
#pragma unroll 4
            for (int ch = 0; ch < D / 8; ++ch) {
                const uint4 k = __ldg(row + ch);
#pragma unroll
                for (int g = 0; g < GMAX; ++g)
                    if (g < G) s[g] += dot8(k, qs + g * D + ch * 8);
            }
#pragma unroll
            for (int g = 0; g < GMAX; ++g)
                if (g < G) best = fmaxf(best, s[g]);
        }
        key[c] = best;
        idx[c] = c;  // padding entries (c >= C) rank last: -inf, largest indices
    }
    __syncthreads();
    // bitonic sort of n2 entries into "better first" order
    for (int size = 2; size <= n2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < n2 / 2; i += 1024) {
                const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const bool up = (lo & size) == 0;  // this run wants the better entry at lo
                const float kl = key[lo], kh = key[hi];
                const int il = idx[lo], ih = idx[hi];
                if (better(kh, ih, kl, il) == up) {
                    key[lo] = kh; key[hi] = kl;
                    idx[lo] = ih; idx[hi] = il;
                }
            }
            __syncthreads();
        }
    }
    for (int i = tid; i < NK; i += 1024) sel[bh * NK + i] = idx[i];
}

// Dynamic smem layout of ret_attn (bytes)
#define SM_QS 0                                  // float [GMAX][D]
#define SM_PS (SM_QS + GMAX * D * 4)             // float [4 warps][GMAX][32]
#define SM_TK (SM_PS + 4 * GMAX * 32 * 4)        // int [4][32]
#define SM_PRE (SM_TK + 4 * 32 * 4)              // int [NKMAX + 1]
#define SM_CST (SM_PRE + (NKMAX + 4) * 4)        // int [NKMAX]
#define SM_WM (SM_CST + NKMAX * 4)               // float [4][GMAX]
#define SM_WL (SM_WM + 4 * GMAX * 4)             // float [4][GMAX]
#define SM_WACC (SM_WL + 4 * GMAX * 4)           // float [4][GMAX][D]
#define SM_TOTAL (SM_WACC + 4 * GMAX * D * 4)

// 2. grid (nsplit, Hkv, B), 128 threads: attention of the group's G heads over positions
//    [split * per, min(NP, (split + 1) * per)) of the selected clusters' tokens, per = ceil(NP / nsplit).
extern "C" __global__ void __launch_bounds__(128)
ret_attn(const bf16* __restrict__ q, const bf16* __restrict__ k_store, const bf16* __restrict__ v_store,
         const int* __restrict__ cl_off, const int* __restrict__ sel, float* __restrict__ part_ml,
         float* __restrict__ part_o, bf16* __restrict__ o, int Hq, int Hkv, int C, int NK, int nsplit) {
    extern __shared__ uint4 smem_u4[];
    unsigned char* sm = reinterpret_cast<unsigned char*>(smem_u4);
    float* qs = reinterpret_cast<float*>(sm + SM_QS);
    float* ps = reinterpret_cast<float*>(sm + SM_PS);
    int* tk = reinterpret_cast<int*>(sm + SM_TK);
    int* pre = reinterpret_cast<int*>(sm + SM_PRE);
    int* cst = reinterpret_cast<int*>(sm + SM_CST);
    float* wm = reinterpret_cast<float*>(sm + SM_WM);
    float* wl = reinterpret_cast<float*>(sm + SM_WL);
    float* wacc = reinterpret_cast<float*>(sm + SM_WACC);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z, G = Hq / Hkv;
    const size_t bh = (size_t)b * Hkv + hkv;
    const float scale_log2 = 0.08838834764831845f * 1.4426950408889634f;  // 1/sqrt(128) * log2(e)

    // queries of the group pre-scaled into the exp2 domain (rows >= G zero)
    for (int i = tid; i < GMAX * D; i += 128)
        qs[i] = i < G * D ? __bfloat162float(q[((size_t)b * Hq + hkv * G) * D + i]) * scale_log2 : 0.0f;
    if (tid < NK) {
        const int c = sel[bh * NK + tid];
        const int s0 = cl_off[bh * C + c];
        cst[tid] = s0;
        pre[tid + 1] = cl_off[bh * C + c + 1] - s0;  // length, scanned below
    }
    __syncthreads();
    if (tid == 0) {
        pre[0] = 0;
        for (int i = 1; i <= NK; ++i) pre[i] += pre[i - 1];
    }
    __syncthreads();
    const int NP = pre[NK];
    const int per = (NP + nsplit - 1) / nsplit;
    const int p0 = split * per, p1 = min(NP, p0 + per);

    float m[GMAX], l[GMAX], acc[GMAX][4];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
        m[g] = NEG_INF;
        l[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[g][j] = 0.0f;
    }
    float* myps = ps + warp * GMAX * 32;
    int* mytk = tk + warp * 32;

    for (int t0 = p0 + warp * 32; t0 < p1; t0 += 128) {
        const int p = t0 + lane;
        const bool valid = p < p1;
        int tok = 0;
        if (valid) {  // largest i < NK with pre[i] <= p
            int lo = 0, hi = NK - 1;
            while (lo < hi) {
                const int mid = (lo + hi + 1) >> 1;
                if (pre[mid] <= p) lo = mid;
                else hi = mid - 1;
            }
            tok = cst[lo] + (p - pre[lo]);
        }
        float s[GMAX];
#pragma unroll
        for (int g = 0; g < GMAX; ++g) s[g] = 0.0f;
        if (valid) {
            const uint4* krow = reinterpret_cast<const uint4*>(k_store + (size_t)tok * D);
#pragma unroll 4
            for (int ch = 0; ch < D / 8; ++ch) {
                const uint4 kv = __ldg(krow + ch);
#pragma unroll
                for (int g = 0; g < GMAX; ++g)
                    if (g < G) s[g] += dot8(kv, qs + g * D + ch * 8);
            }
        }
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
            if (g >= G) break;  // uniform
            const float sv = valid ? s[g] : NEG_INF;
            float mx = sv;
#pragma unroll
            for (int o2 = 16; o2 > 0; o2 >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o2));
            const float m_new = fmaxf(m[g], mx);  // finite: lane 0 of a tile is always valid
            const float alpha = exp2f(m[g] - m_new);
            const float pj = exp2f(sv - m_new);
            m[g] = m_new;
            l[g] = l[g] * alpha + pj;  // this lane's share of the denominator
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[g][j] *= alpha;
            myps[g * 32 + lane] = pj;
        }
        mytk[lane] = tok;
        __syncwarp();
        const int nj = min(32, p1 - t0);
#pragma unroll 4
        for (int j = 0; j < nj; ++j) {
            const uint2 vv = __ldg(reinterpret_cast<const uint2*>(v_store + (size_t)mytk[j] * D) + lane);
            const float v0 = bf_lo(vv.x), v1 = bf_hi(vv.x), v2 = bf_lo(vv.y), v3 = bf_hi(vv.y);
#pragma unroll
            for (int g = 0; g < GMAX; ++g) {
                if (g < G) {
                    const float pg = myps[g * 32 + j];
                    acc[g][0] += pg * v0; acc[g][1] += pg * v1; acc[g][2] += pg * v2; acc[g][3] += pg * v3;
                }
            }
        }
        __syncwarp();  // ps / tk are rewritten by the next tile
    }

    // warp states -> smem (m is warp-uniform; l summed over lanes)
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
        if (g >= G) break;
        float lt = l[g];
#pragma unroll
        for (int o2 = 16; o2 > 0; o2 >>= 1) lt += __shfl_xor_sync(FULL_MASK, lt, o2);
        if (lane == 0) {
            wm[warp * GMAX + g] = m[g];
            wl[warp * GMAX + g] = lt;
        }
        *reinterpret_cast<float4*>(wacc + (warp * GMAX + g) * D + lane * 4) =
            make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    }
    __syncthreads();
    // merge the 4 warps: thread = head dimension
    for (int g = 0; g < G; ++g) {
        float M = NEG_INF;
#pragma unroll
        for (int w = 0; w < 4; ++w) M = fmaxf(M, wm[w * GMAX + g]);
        float L = 0.0f, O = 0.0f;
        if (M != NEG_INF) {  // an empty split has no keys at all
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const float f = exp2f(wm[w * GMAX + g] - M);
                L += f * wl[w * GMAX + g];
                O += f * wacc[(w * GMAX + g) * D + tid];
            }
        }
        if (nsplit == 1) {
            o[((size_t)b * Hq + hkv * G + g) * D + tid] = __float2bfloat16_rn(O / L);
        } else {
            const size_t pi = (bh * nsplit + split) * GMAX + g;
            if (tid == 0) {
                part_ml[2 * pi] = M;
                part_ml[2 * pi + 1] = L;
            }
            part_o[pi * D + tid] = O;
        }
    }
}

// 3. (nsplit > 1) one warp per query head: merge the splits' (max, sum, O) states.
extern "C" __global__ void __launch_bounds__(128)
ret_combine(const float* __restrict__ part_ml, const float* __restrict__ part_o, bf16* __restrict__ o, int B, int Hq,
            int Hkv, int nsplit) {
    const int lane = threadIdx.x & 31;
    const int w = blockIdx.x * 4 + (threadIdx.x >> 5);
    if (w >= B * Hq) return;
    const int b = w / Hq, h = w % Hq, G = Hq / Hkv;
    const size_t bh = (size_t)b * Hkv + h / G;
    const int g = h % G;
    float M = NEG_INF;
    for (int s = 0; s < nsplit; ++s) M = fmaxf(M, part_ml[2 * ((bh * nsplit + s) * GMAX + g)]);  // split 0 is never empty
    float L = 0.0f;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < nsplit; ++s) {
        const size_t pi = (bh * nsplit + s) * GMAX + g;
        const float f = exp2f(part_ml[2 * pi] - M);  // empty split: exp2(-inf) = 0
        L += f * part_ml[2 * pi + 1];
        const float4 v = *reinterpret_cast<const float4*>(part_o + pi * D + lane * 4);
        a.x += f * v.x; a.y += f * v.y; a.z += f * v.z; a.w += f * v.w;
    }
    const float inv = 1.0f / L;
    __nv_bfloat162 lo = __floats2bfloat162_rn(a.x * inv, a.y * inv), hi = __floats2bfloat162_rn(a.z * inv, a.w * inv);
    uint2 out;
    out.x = *reinterpret_cast<unsigned*>(&lo);
    out.y = *reinterpret_cast<unsigned*>(&hi);
    *reinterpret_cast<uint2*>(o + (size_t)w * D + lane * 4) = out;
}
