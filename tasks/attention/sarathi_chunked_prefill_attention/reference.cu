// SARATHI mixed batch attention on a paged KV cache (16-token pages, FlashInfer indptr/indices/
// last_page_len layout): one prefill chunk (C queries at positions PRE..PRE+C-1) plus NDEC one-token
// decodes, causal bottom-right, GQA, bf16 in/out, fp32 softmax statistics.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - One launch for the whole batch (SARATHI's point: decodes ride along with the prefill chunk;
//    FlashInfer's batch prefill over paged KV does the same with per-request tiles): blocks
//    0 .. ceil(C/64)*Hq-1 are prefill tiles (issued first: the longest work), the rest are decode
//    (sequence, kv head) items.
//  - Prefill tile: FlashAttention-2 (Dao 2023): 64 query rows of one head, 4 warps of 16 rows, Q
//    fragments in registers, S = Q K^T and O += P V on mma.sync.m16n8k16 bf16 (fp32 accumulate),
//    P re-packed from the S accumulators as the A operand (no smem round trip), online softmax in the
//    exp2 domain, key tiles visited from the diagonal down so only the first one or two need masks.
//  - Decode item: the GQA group's G <= 16 query heads form the MMA M dimension (FlashInfer /
//    FlashDecoding++ "heads as rows" for decode), so each K/V byte feeds G rows. Split-KV
//    (flash-decoding, Dao et al. 2023): a decode's key tiles are cut into nsplit contiguous ranges,
//    one block each, when there are too few (decode, kv head) items to fill the GPU; inside a block
//    the 64-key tile is split over the 4 warps (16 keys each). Partial (max, sum, O) states are
//    merged through shared memory, then across blocks by decode_combine.
//  - Paged gather inside the load stage: each 16-byte cp.async looks up its key's page in
//    kv_indices (vLLM/FlashInfer block-table gather); rows past the sequence are zero-filled.
//  - K(t+1) is prefetched while P V(t) runs and V(t) while Q K(t)^T runs; XOR-swizzled smem tiles
//    (16-byte chunk ^= row & 7) make cp.async and ldmatrix (.trans for V) bank-conflict free.
#include <cuda_bf16.h>

#define THREADS 128
#define PAGE 16
#define NEG_INF __int_as_float(0xff800000)

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
static __device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [64][D] bf16 tile.
template <int D>
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * D * 2 + ((chunk ^ (row & 7)) << 4));
}

// Keys j0 .. j0+63 of one sequence (kv head hk) from the paged cache; keys >= len are zero-filled.
template <int D>
static __device__ __forceinline__ void load_kv(unsigned char* tile, const bf16* cache, const int* pages, int j0,
                                               int len, int hk, int Hkv, int tid) {
    constexpr int RC = D / 8;
#pragma unroll
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const int j = j0 + r;
        const bool ok = j < len;
        const bf16* src = cache;
        if (ok) src = cache + (((size_t)__ldg(pages + (j >> 4)) * PAGE + (j & 15)) * Hkv + hk) * D + c * 8;
        cp_async16(smem_addr(tile + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
}

// Online-softmax update of rows g (h = 0) and g + 8 (h = 1) for KN n8 tiles of scores.
template <int KN, int DN>
static __device__ __forceinline__ void softmax_update(float (&s)[KN][4], float (&m)[2], float (&l)[2],
                                                      float (&o)[DN][4], float scale_log2) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = NEG_INF;
#pragma unroll
        for (int j = 0; j < KN; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[h], mx * scale_log2);
        const float m_base = m_new == NEG_INF ? 0.0f : m_new;  // nothing unmasked yet: exp2 gives 0, not NaN
        const float alpha = exp2f(m[h] - m_base);
        m[h] = m_new;
        float rs = 0.0f;
#pragma unroll
        for (int j = 0; j < KN; ++j) {
            const float p0 = exp2f(s[j][2 * h] * scale_log2 - m_base);
            const float p1 = exp2f(s[j][2 * h + 1] * scale_log2 - m_base);
            s[j][2 * h] = p0;
            s[j][2 * h + 1] = p1;
            rs += p0 + p1;
        }
        l[h] = l[h] * alpha + rs;
#pragma unroll
        for (int d = 0; d < DN; ++d) {
            o[d][2 * h] *= alpha;
            o[d][2 * h + 1] *= alpha;
        }
    }
}

// O += P V for one k16 step: P from two n8 score tiles, V rows v0 .. v0+15 of the tile.
template <int D>
static __device__ __forceinline__ void pv_step(float (&o)[D / 8][4], const float (&s0)[4], const float (&s1)[4],
                                               const unsigned char* sV, int v0, int lane) {
    unsigned pa[4];
    pa[0] = pack_bf16(s0[0], s0[1]);
    pa[1] = pack_bf16(s0[2], s0[3]);
    pa[2] = pack_bf16(s1[0], s1[1]);
    pa[3] = pack_bf16(s1[2], s1[3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
        unsigned vf[4];
        ldmatrix_x4_trans(vf, smem_addr(sV + tile_off<D>(v0 + (lane & 15), dp * 2 + (lane >> 4))));
        mma_bf16(o[2 * dp], pa, vf[0], vf[1]);
        mma_bf16(o[2 * dp + 1], pa, vf[2], vf[3]);
    }
}

// S (16 rows x 16 keys k0 .. k0+15 of the tile) = Q K^T, accumulated into two n8 tiles.
template <int D>
static __device__ __forceinline__ void qk_16keys(float (&s0)[4], float (&s1)[4], const unsigned (&qf)[D / 16][4],
                                                 const unsigned char* sK, int k0, int lane) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        unsigned kf[4];
        const int key = k0 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(kf, smem_addr(sK + tile_off<D>(key, kk * 2 + ((lane >> 3) & 1))));
        mma_bf16(s0, qf[kk], kf[0], kf[1]);
        mma_bf16(s1, qf[kk], kf[2], kf[3]);
    }
}

// ---------------------------------------------------------------------------------------------
template <int D>
static __device__ __forceinline__ void prefill_tile(unsigned char* smem, const bf16* __restrict__ q,
                                                    const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                                    const int* __restrict__ pages, bf16* __restrict__ out, int C,
                                                    int PRE, int Hq, int Hkv, int qt, int hq) {
    constexpr int TILE = 64 * D * 2, DK = D / 16, DN = D / 8, RC = D / 8;
    unsigned char* sQ = smem;
    unsigned char* sK = sQ + TILE;
    unsigned char* sV = sK + TILE;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int q0 = qt * 64;
    const int hk = hq / (Hq / Hkv);
    const int len = PRE + C;
    const float scale_log2 = rsqrtf((float)D) * 1.4426950408889634f;

#pragma unroll
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const bool ok = q0 + r < C;
        const bf16* src = ok ? q + ((size_t)(q0 + r) * Hq + hq) * D + c * 8 : q;
        cp_async16(smem_addr(sQ + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
    const int last_pos = PRE + min(q0 + 63, C - 1);
    const int kt_last = last_pos >> 6;
    load_kv<D>(sK, kc, pages, kt_last * 64, len, hk, Hkv, tid);
    cp_async_commit();

    unsigned qf[DK][4];
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};
    float l[2] = {0.0f, 0.0f};

    for (int kt = kt_last; kt >= 0; --kt) {
        cp_async_wait_all();
        __syncthreads();  // K(kt) (and Q) landed; every warp is done with V(kt+1)
        if (kt == kt_last) {
#pragma unroll
            for (int kk = 0; kk < DK; ++kk)
                ldmatrix_x4(qf[kk], smem_addr(sQ + tile_off<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
        }
        load_kv<D>(sV, vc, pages, kt * 64, len, hk, Hkv, tid);
        cp_async_commit();

        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int np = 0; np < 4; ++np) qk_16keys<D>(s[2 * np], s[2 * np + 1], qf, sK, np * 16, lane);

        if (kt * 64 + 63 > PRE + q0) {  // some key of this tile lies past some row's position
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = warp * 16 + (lane >> 2) + ((e >> 1) << 3);
                    const int key = kt * 64 + j * 8 + (lane & 3) * 2 + (e & 1);
                    if (key > PRE + q0 + row) s[j][e] = NEG_INF;
                }
        }
        softmax_update<8, DN>(s, m, l, o, scale_log2);

        cp_async_wait_all();
        __syncthreads();  // V(kt) landed; every warp is done with K(kt)
        if (kt > 0) {
            load_kv<D>(sK, kc, pages, (kt - 1) * 64, len, hk, Hkv, tid);
            cp_async_commit();
        }
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) pv_step<D>(o, s[2 * kk], s[2 * kk + 1], sV, kk * 16, lane);
    }

    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float t = l[h];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        inv[h] = 1.0f / t;
    }
    // stage this warp's 16 rows in its own (consumed) rows of the Q tile, then 16-byte stores
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = warp * 16 + (lane >> 2) + h * 8;
            unsigned* dst = reinterpret_cast<unsigned*>(sQ + tile_off<D>(row, d) + (lane & 3) * 4);
            *dst = pack_bf16(o[d][2 * h] * inv[h], o[d][2 * h + 1] * inv[h]);
        }
    __syncwarp();
#pragma unroll
    for (int it = 0; it < 16 * RC / 32; ++it) {
        const int i = it * 32 + lane;
        const int r = i / RC, c = i % RC;
        const int t = q0 + warp * 16 + r;
        if (t < C)
            *reinterpret_cast<uint4*>(out + ((size_t)t * Hq + hq) * D + c * 8) =
                *reinterpret_cast<const uint4*>(sQ + tile_off<D>(warp * 16 + r, c));
    }
}

// ---------------------------------------------------------------------------------------------
// Key tiles [t0, t1) of one decode (kv head hk). With part_o == nullptr the result is final and
// stored to out; otherwise the block's merged partial state (max m in the exp2 domain, sum l,
// unnormalized o) goes to part_ml / part_o for decode_combine.
template <int D>
static __device__ __forceinline__ void decode_item(unsigned char* smem, const bf16* __restrict__ q,
                                                   const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                                   const int* __restrict__ pages, int len, int t0, int t1,
                                                   bf16* __restrict__ out, float* __restrict__ part_ml,
                                                   float* __restrict__ part_o, int tok, int Hq, int Hkv, int hk) {
    constexpr int TILE = 64 * D * 2, DK = D / 16, DN = D / 8, RC = D / 8;
    unsigned char* sQ = smem;
    unsigned char* sK = sQ + TILE;
    unsigned char* sV = sK + TILE;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int G = Hq / Hkv;
    const float scale_log2 = rsqrtf((float)D) * 1.4426950408889634f;

    // Q rows 0..15: the group's query heads hk*G + r (rows >= G zero)
    for (int i = tid; i < 16 * RC; i += THREADS) {
        const int r = i / RC, c = i % RC;
        const bool ok = r < G;
        const bf16* src = ok ? q + ((size_t)tok * Hq + hk * G + r) * D + c * 8 : q;
        cp_async16(smem_addr(sQ + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
    if (t0 < t1) load_kv<D>(sK, kc, pages, t0 * 64, len, hk, Hkv, tid);
    cp_async_commit();

    unsigned qf[DK][4];
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};
    float l[2] = {0.0f, 0.0f};

    for (int kt = t0; kt < t1; ++kt) {
        cp_async_wait_all();
        __syncthreads();
        if (kt == t0) {
#pragma unroll
            for (int kk = 0; kk < DK; ++kk)
                ldmatrix_x4(qf[kk], smem_addr(sQ + tile_off<D>(lane & 15, kk * 2 + (lane >> 4))));
        }
        load_kv<D>(sV, vc, pages, kt * 64, len, hk, Hkv, tid);
        cp_async_commit();

        float s[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
        qk_16keys<D>(s[0], s[1], qf, sK, warp * 16, lane);  // this warp's 16 keys of the tile
        if (kt * 64 + 64 > len) {
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = kt * 64 + warp * 16 + j * 8 + (lane & 3) * 2 + (e & 1);
                    if (key >= len) s[j][e] = NEG_INF;
                }
        }
        softmax_update<2, DN>(s, m, l, o, scale_log2);

        cp_async_wait_all();
        __syncthreads();
        if (kt + 1 < t1) {
            load_kv<D>(sK, kc, pages, (kt + 1) * 64, len, hk, Hkv, tid);
            cp_async_commit();
        }
        pv_step<D>(o, s[0], s[1], sV, warp * 16, lane);
    }
    cp_async_wait_all();  // the Q copy when the range is empty

    // merge the 4 warps' partial softmax states through shared memory (K and V tiles are free)
    __syncthreads();
    float* sO = reinterpret_cast<float*>(sK);        // [4][16][D]
    float* sM = reinterpret_cast<float*>(sQ);        // [4][16]
    float* sL = sM + 64;                             // [4][16]
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float t = l[h];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        const int row = (lane >> 2) + h * 8;
        if ((lane & 3) == 0) {
            sM[warp * 16 + row] = m[h];
            sL[warp * 16 + row] = t;
        }
#pragma unroll
        for (int d = 0; d < DN; ++d) {
            float* dst = sO + ((size_t)(warp * 16 + row) * D + d * 8 + (lane & 3) * 2);
            dst[0] = o[d][2 * h];
            dst[1] = o[d][2 * h + 1];
        }
    }
    __syncthreads();
    for (int i = tid; i < G * D; i += THREADS) {
        const int row = i / D, d = i - row * D;
        float M = NEG_INF;
#pragma unroll
        for (int w = 0; w < 4; ++w) M = fmaxf(M, sM[w * 16 + row]);
        float num = 0.0f, den = 0.0f;
        if (M != NEG_INF) {  // -inf only for an empty split (no key seen by any warp)
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const float f = exp2f(sM[w * 16 + row] - M);
                num += f * sO[(size_t)(w * 16 + row) * D + d];
                den += f * sL[w * 16 + row];
            }
        }
        if (part_o == nullptr) {
            out[((size_t)tok * Hq + hk * G + row) * D + d] = __float2bfloat16_rn(num / den);
        } else {
            part_o[(size_t)row * D + d] = num;
            if (d == 0) {
                part_ml[2 * row] = M;
                part_ml[2 * row + 1] = den;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(THREADS, 1)
sarathi_attn(const bf16* __restrict__ q, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
             const int* __restrict__ kv_indices, const int* __restrict__ dec_indptr,
             const int* __restrict__ dec_last_len, bf16* __restrict__ o, float* __restrict__ part_ml,
             float* __restrict__ part_o, int C, int PRE, int Hq, int Hkv, int nsplit) {
    static_assert(D == 64 || D == 128, "head dim");
    extern __shared__ uint4 smem_u4[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(smem_u4);
    const int nqt = (C + 63) >> 6;
    const int n_pre = nqt * Hq;
    const int b = blockIdx.x;
    if (b < n_pre) {
        const int qt = nqt - 1 - b / Hq;  // last (heaviest) query tiles first
        prefill_tile<D>(smem, q, k_cache, v_cache, kv_indices, o, C, PRE, Hq, Hkv, qt, b % Hq);
    } else {
        const int d = b - n_pre;
        const int item = d / nsplit, split = d % nsplit;  // item = (decode, kv head)
        const int i = item / Hkv, hk = item % Hkv;
        const int np0 = (PRE + C + 15) >> 4;
        const int p0 = __ldg(dec_indptr + i), p1 = __ldg(dec_indptr + i + 1);
        const int len = (p1 - p0 - 1) * PAGE + __ldg(dec_last_len + i);
        const int nt = (len + 63) >> 6;
        const int per = (nt + nsplit - 1) / nsplit;
        const int t0 = min(nt, split * per), t1 = min(nt, t0 + per);
        float* pml = nsplit > 1 ? part_ml + (size_t)d * 32 : nullptr;
        float* po = nsplit > 1 ? part_o + (size_t)d * 16 * D : nullptr;
        decode_item<D>(smem, q, k_cache, v_cache, kv_indices + np0 + p0, len, t0, t1, o, pml, po, C + i, Hq, Hkv,
                       hk);
    }
}

// Split-KV combine: one block per (decode, kv head) merges its nsplit partial states.
template <int D>
__global__ void __launch_bounds__(THREADS)
decode_combine(const float* __restrict__ part_ml, const float* __restrict__ part_o, bf16* __restrict__ o, int C,
               int Hq, int Hkv, int nsplit) {
    const int item = blockIdx.x;
    const int i = item / Hkv, hk = item % Hkv;
    const int G = Hq / Hkv;
    const float* ml = part_ml + (size_t)item * nsplit * 32;
    const float* po = part_o + (size_t)item * nsplit * 16 * D;
    for (int e = threadIdx.x; e < G * D; e += THREADS) {
        const int row = e / D, d = e - row * D;
        float M = NEG_INF;
        for (int s = 0; s < nsplit; ++s) M = fmaxf(M, ml[s * 32 + 2 * row]);  // finite: split 0 sees key 0
        float num = 0.0f, den = 0.0f;
        for (int s = 0; s < nsplit; ++s) {
            const float f = exp2f(ml[s * 32 + 2 * row] - M);
            num += f * po[(size_t)s * 16 * D + (size_t)row * D + d];
            den += f * ml[s * 32 + 2 * row + 1];
        }
        o[((size_t)(C + i) * Hq + hk * G + row) * D + d] = __float2bfloat16_rn(num / den);
    }
}

template __global__ void sarathi_attn<64>(const bf16*, const bf16*, const bf16*, const int*, const int*, const int*,
                                          bf16*, float*, float*, int, int, int, int, int);
template __global__ void sarathi_attn<128>(const bf16*, const bf16*, const bf16*, const int*, const int*, const int*,
                                           bf16*, float*, float*, int, int, int, int, int);
template __global__ void decode_combine<64>(const float*, const float*, bf16*, int, int, int, int);
template __global__ void decode_combine<128>(const float*, const float*, bf16*, int, int, int, int);
