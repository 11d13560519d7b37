// Step-3 multi-matrix factorization attention (MFA), decode step: 64 query heads of dimension 256
// share one key/value head (MQA-like), q [B, 64, 256], K, V [B, S, 256], scale 1/16, bf16 in/out,
// fp32 softmax statistics.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - The 64 heads are the MMA M dimension (Step-3's "hardware-aligned attention arithmetic
//    intensity"; FlashMLA / FlashInfer MQA decode do the same): one block = all 64 heads of one
//    sequence, 4 warps x 16 heads, so every K/V byte feeds 64 rows (arithmetic intensity 64).
//  - FlashAttention-2 inner loop (Dao 2023) on mma.sync.m16n8k16 bf16 -> fp32: S = Q K^T over
//    64-key tiles, online softmax in the exp2 domain with quad shuffles, P re-packed from the S
//    accumulators as the A operand of O += P V (no smem round trip). The Q tile stays in shared
//    memory and its fragments are re-read per key tile: the 16 x 256 fp32 output accumulators of a
//    warp already take 128 registers per thread.
//  - Split-KV (flash-decoding, Dao et al. 2023): the S keys are cut into nsplit contiguous ranges
//    when B alone cannot fill ~2 waves of 132 SMs; each split writes (max, sum, unnormalized O) and
//    mfa_combine merges them (one warp per head, 16-byte loads).
//  - cp.async 16-byte loads with zero-fill past S, K(t+1) prefetched during P V(t) and V(t) during
//    Q K(t)^T; XOR-swizzled smem rows (16-byte chunk ^= row & 7) keep cp.async and ldmatrix (.trans
//    for V) bank-conflict free; the output is staged through the Q tile for 16-byte coalesced stores.
#include <cuda_bf16.h>

#define THREADS 128
#define HEADS 64
#define HD 256
#define KT 64                         // keys per tile
#define TILE_BYTES (64 * HD * 2)      // 32 KiB: a 64-row bf16 tile of Q, K or V
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

// Byte offset of 16-byte chunk `chunk` (0..31) of row `row` in a [64][256] bf16 tile.
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * HD * 2 + ((chunk ^ (row & 7)) << 4));
}

// Rows row0 .. row0+63 of a [n, 256] matrix into a tile; rows >= n are zero-filled.
static __device__ __forceinline__ void load_rows(unsigned char* tile, const bf16* base, int row0, int n, int tid) {
    constexpr int RC = HD / 8;
#pragma unroll 4
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const bool ok = row0 + r < n;
        const bf16* src = ok ? base + (size_t)(row0 + r) * HD + c * 8 : base;
        cp_async16(smem_addr(tile + tile_off(r, c)), src, ok ? 16 : 0);
    }
}

// grid = (nsplit, B): split s of sequence b takes key tiles [s*per, min(nkt, (s+1)*per)).
extern "C" __global__ void __launch_bounds__(THREADS)
mfa_decode(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
           bf16* __restrict__ o, float* __restrict__ part_ml, float* __restrict__ part_o, int S, int nsplit) {
    constexpr int DK = HD / 16, DN = HD / 8, RC = HD / 8;
    extern __shared__ uint4 smem_u4[];
    unsigned char* sQ = reinterpret_cast<unsigned char*>(smem_u4);
    unsigned char* sK = sQ + TILE_BYTES;
    unsigned char* sV = sK + TILE_BYTES;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, b = blockIdx.y;
    const int nkt = (S + KT - 1) / KT;
    const int per = (nkt + nsplit - 1) / nsplit;
    const int kt0 = split * per, kt1 = min(nkt, kt0 + per);
    if (kt0 >= kt1) return;  // empty split (block-uniform); mfa_combine skips it too
    const float scale_log2 = 0.0625f * 1.4426950408889634f;

    const bf16* Kb = k + (size_t)b * S * HD;
    const bf16* Vb = v + (size_t)b * S * HD;
    load_rows(sQ, q + (size_t)b * HEADS * HD, 0, HEADS, tid);
    load_rows(sK, Kb, kt0 * KT, S, tid);
    cp_async_commit();

    float acc[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};
    float l[2] = {0.0f, 0.0f};

    for (int kt = kt0; kt < kt1; ++kt) {
        cp_async_wait_all();
        __syncthreads();  // K(kt) (and Q) landed; every warp is done with V(kt-1)
        load_rows(sV, Vb, kt * KT, S, tid);
        cp_async_commit();

        float s[KT / 8][4];
#pragma unroll
        for (int j = 0; j < KT / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK; ++kk) {
            unsigned qf[4];
            ldmatrix_x4(qf, smem_addr(sQ + tile_off(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
#pragma unroll
            for (int np = 0; np < KT / 16; ++np) {
                unsigned kf[4];
                const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(kf, smem_addr(sK + tile_off(key, kk * 2 + ((lane >> 3) & 1))));
                mma_bf16(s[2 * np], qf, kf[0], kf[1]);
                mma_bf16(s[2 * np + 1], qf, kf[2], kf[3]);
            }
        }
        if (kt * KT + KT > S) {  // tail tile: keys >= S
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (kt * KT + j * 8 + (lane & 3) * 2 + (e & 1) >= S) s[j][e] = NEG_INF;
        }

#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < KT / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[h], mx * scale_log2);  // finite: every tile has a key < S
            const float alpha = exp2f(m[h] - m_new);
            m[h] = m_new;
            float rs = 0.0f;
#pragma unroll
            for (int j = 0; j < KT / 8; ++j) {
                const float p0 = exp2f(s[j][2 * h] * scale_log2 - m_new);
                const float p1 = exp2f(s[j][2 * h + 1] * scale_log2 - m_new);
                s[j][2 * h] = p0;
                s[j][2 * h + 1] = p1;
                rs += p0 + p1;
            }
            l[h] = l[h] * alpha + rs;
#pragma unroll
            for (int d = 0; d < DN; ++d) {
                acc[d][2 * h] *= alpha;
                acc[d][2 * h + 1] *= alpha;
            }
        }

        cp_async_wait_all();
        __syncthreads();  // V(kt) landed; every warp is done with K(kt)
        if (kt + 1 < kt1) {
            load_rows(sK, Kb, (kt + 1) * KT, S, tid);
            cp_async_commit();
        }

#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
            unsigned pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DK; ++dp) {
                unsigned vf[4];
                ldmatrix_x4_trans(vf, smem_addr(sV + tile_off(kk * 16 + (lane & 15), dp * 2 + (lane >> 4))));
                mma_bf16(acc[2 * dp], pa, vf[0], vf[1]);
                mma_bf16(acc[2 * dp + 1], pa, vf[2], vf[3]);
            }
        }
    }

#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }

    if (nsplit > 1) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int head = warp * 16 + (lane >> 2) + h * 8;
            const size_t idx = ((size_t)b * nsplit + split) * HEADS + head;
            if ((lane & 3) == 0) {
                part_ml[2 * idx] = m[h];
                part_ml[2 * idx + 1] = l[h];
            }
            float* dst = part_o + idx * HD + (lane & 3) * 2;
#pragma unroll
            for (int d = 0; d < DN; ++d)
                *reinterpret_cast<float2*>(dst + d * 8) = make_float2(acc[d][2 * h], acc[d][2 * h + 1]);
        }
        return;
    }

    // One split: normalize, stage this warp's 16 rows in its own rows of the Q tile, store.
    __syncwarp();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float inv = 1.0f / l[h];
        const int row = warp * 16 + (lane >> 2) + h * 8;
#pragma unroll
        for (int d = 0; d < DN; ++d) {
            unsigned* dst = reinterpret_cast<unsigned*>(sQ + tile_off(row, d) + (lane & 3) * 4);
            *dst = pack_bf16(acc[d][2 * h] * inv, acc[d][2 * h + 1] * inv);
        }
    }
    __syncwarp();
    bf16* ob = o + ((size_t)b * HEADS + warp * 16) * HD;
#pragma unroll
    for (int it = 0; it < 16 * RC / 32; ++it) {
        const int i = it * 32 + lane;
        const int r = i / RC, c = i % RC;
        *reinterpret_cast<uint4*>(ob + (size_t)r * HD + c * 8) =
            *reinterpret_cast<const uint4*>(sQ + tile_off(warp * 16 + r, c));
    }
}

// One warp per (sequence, head): merges the non-empty splits' (max, sum, O) states.
extern "C" __global__ void __launch_bounds__(THREADS)
mfa_combine(const float* __restrict__ part_ml, const float* __restrict__ part_o, bf16* __restrict__ o, int B,
            int S, int nsplit) {
    const int lane = threadIdx.x & 31;
    const int w = blockIdx.x * (THREADS / 32) + (threadIdx.x >> 5);
    if (w >= B * HEADS) return;
    const int b = w / HEADS, head = w % HEADS;
    const int nkt = (S + KT - 1) / KT;
    const int per = (nkt + nsplit - 1) / nsplit;
    const int nvalid = (nkt + per - 1) / per;

    float M = NEG_INF;
    for (int s = 0; s < nvalid; ++s) M = fmaxf(M, part_ml[2 * (((size_t)b * nsplit + s) * HEADS + head)]);
    float den = 0.0f, acc[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] = 0.0f;
    for (int s = 0; s < nvalid; ++s) {
        const size_t idx = ((size_t)b * nsplit + s) * HEADS + head;
        const float wgt = exp2f(part_ml[2 * idx] - M);
        den += wgt * part_ml[2 * idx + 1];
        const float4* src = reinterpret_cast<const float4*>(part_o + idx * HD + lane * 8);
        const float4 a = src[0], c = src[1];
        acc[0] += wgt * a.x; acc[1] += wgt * a.y; acc[2] += wgt * a.z; acc[3] += wgt * a.w;
        acc[4] += wgt * c.x; acc[5] += wgt * c.y; acc[6] += wgt * c.z; acc[7] += wgt * c.w;
    }
    const float inv = 1.0f / den;
    uint4 out;
    out.x = pack_bf16(acc[0] * inv, acc[1] * inv);
    out.y = pack_bf16(acc[2] * inv, acc[3] * inv);
    out.z = pack_bf16(acc[4] * inv, acc[5] * inv);
    out.w = pack_bf16(acc[6] * inv, acc[7] * inv);
    *reinterpret_cast<uint4*>(o + ((size_t)b * HEADS + head) * HD + lane * 8) = out;
}
