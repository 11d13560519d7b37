// Speculative tree attention (tree verification for Medusa / PPD / Clover token trees): T tree-node
// queries per sequence attend the whole cached prefix plus their own ancestors (and themselves) among
// the T tree nodes' keys. bf16 in/out, fp32 softmax statistics, GQA.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - Queries of a GQA group packed into the MMA M dimension (FlashInfer's decode/append kernels,
//    "heads as rows"): packed row r = t * G + g is tree node t of query head hkv * G + g, so every
//    K/V byte of the prefix feeds T * G rows; 64 packed rows per block, 4 warps of 16 rows.
//  - FlashAttention-2 inner loop (Dao 2023): Q tile resident in smem (fragments re-read per key tile
//    to leave registers for the D = 128 accumulators), S = Q K^T and O += P V on
//    mma.sync.m16n8k16 bf16 with fp32 accumulation, P re-packed from the S accumulators as the A
//    operand (no smem round trip), online softmax in the exp2 domain with quad shuffles.
//  - The tree mask as one 64-bit ancestor bitmask per node (SGLang / FlashInfer custom-mask tree
//    verify): computed once per block from the parent array in shared memory, applied only on the
//    single tree key tile (T <= 64); prefix tiles need no mask except the tail of the last one.
//  - Split-KV over the prefix (flash-decoding, Dao et al. 2023) when (sequence, kv head, row tile)
//    items alone cannot fill ~2 waves of 132 SMs: each split writes (max, sum, unnormalized O) and
//    tree_combine merges them; with one split the block normalizes and stores directly.
//  - cp.async 16-byte loads with zero-fill past the end, K(t+1) prefetched during P V(t) and V(t)
//    during Q K(t)^T; XOR-swizzled smem tiles (16-byte chunk ^= row & 7) keep cp.async and ldmatrix
//    (.trans for V) bank-conflict free.
#include <cuda_bf16.h>

#define THREADS 128
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

// Rows row0 .. row0+63 of a [n, D] matrix into a tile; rows >= n are zero-filled.
template <int D>
static __device__ __forceinline__ void load_rows(unsigned char* tile, const bf16* base, int row0, int n, int tid) {
    constexpr int RC = D / 8;
#pragma unroll
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const bool ok = row0 + r < n;
        const bf16* src = ok ? base + (size_t)(row0 + r) * D + c * 8 : base;
        cp_async16(smem_addr(tile + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
}

// grid = (row_tiles * nsplit, Hkv, B). Key tiles 0 .. nkt-2 are the prefix (64 keys each, the last
// one partial), tile nkt-1 is the tree; split s takes tiles [s*per, min(nkt, (s+1)*per)).
template <int D>
__global__ void __launch_bounds__(THREADS)
tree_attn(const bf16* __restrict__ q, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
          const bf16* __restrict__ k_tree, const bf16* __restrict__ v_tree, const int* __restrict__ parent_code,
          bf16* __restrict__ o, float* __restrict__ part_ml, float* __restrict__ part_o, int T, int L, int Hq,
          int Hkv, int nsplit) {
    constexpr int TILE = 64 * D * 2, DK = D / 16, DN = D / 8, RC = D / 8;
    extern __shared__ uint4 smem_u4[];
    unsigned char* sQ = reinterpret_cast<unsigned char*>(smem_u4);
    unsigned char* sK = sQ + TILE;
    unsigned char* sV = sK + TILE;
    unsigned long long* s_anc = reinterpret_cast<unsigned long long*>(sV + TILE);  // [64]
    int* s_par = reinterpret_cast<int*>(s_anc + 64);                                // [64]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int G = Hq / Hkv;
    const int rows = T * G;
    const int split = blockIdx.x % nsplit, mt = blockIdx.x / nsplit;
    const int hkv = blockIdx.y, b = blockIdx.z;
    const int nkt = (L + 63) / 64 + 1;
    const int per = (nkt + nsplit - 1) / nsplit;
    const int kt0 = split * per, kt1 = min(nkt, kt0 + per);
    if (kt0 >= kt1) return;  // empty split (block-uniform); tree_combine skips it too
    const bool has_tree = kt1 == nkt;
    const float scale_log2 = rsqrtf((float)D) * 1.4426950408889634f;

    const size_t kvh = (size_t)b * Hkv + hkv;
    const bf16* Kp = k_cache + kvh * (size_t)L * D;
    const bf16* Vp = v_cache + kvh * (size_t)L * D;
    const bf16* Kt = k_tree + kvh * (size_t)T * D;
    const bf16* Vt = v_tree + kvh * (size_t)T * D;

    // Q rows: packed row pr = mt*64 + r -> node pr / G, head hkv*G + pr % G; rows >= T*G zero
#pragma unroll
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const int pr = mt * 64 + r;
        const bool ok = pr < rows;
        const bf16* src = q;
        if (ok) src = q + (((size_t)b * T + pr / G) * Hq + hkv * G + pr % G) * D + c * 8;
        cp_async16(smem_addr(sQ + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
    if (kt0 < nkt - 1) load_rows<D>(sK, Kp, kt0 * 64, L, tid);
    else load_rows<D>(sK, Kt, 0, T, tid);
    cp_async_commit();

    // ancestor bitmasks of this thread's two rows: anc[i] = {i} + anc[parent(i)] (parents precede
    // children); only the block holding the tree tile needs them
    // (kept in smem and read on the tree tile only: registers are the D = 128 limit)
    if (has_tree) {
        if (tid < T) s_par[tid] = tid == 0 ? 0 : parent_code[tid] % tid;
        __syncthreads();
        if (tid == 0) {
            for (int i = 0; i < T; ++i) s_anc[i] = (1ull << i) | (i ? s_anc[s_par[i]] : 0ull);
        }
    }

    float acc[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};
    float l[2] = {0.0f, 0.0f};

    for (int kt = kt0; kt < kt1; ++kt) {
        const bool tree_tile = kt == nkt - 1;
        cp_async_wait_all();
        __syncthreads();  // K(kt) (and Q, ancestors) ready; every warp is done with V(kt-1)
        if (tree_tile) load_rows<D>(sV, Vt, 0, T, tid);
        else load_rows<D>(sV, Vp, kt * 64, L, tid);
        cp_async_commit();

        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK; ++kk) {
            unsigned qf[4];  // Q fragments re-read from smem each tile: registers are the D = 128 limit
            ldmatrix_x4(qf, smem_addr(sQ + tile_off<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned kf[4];
                const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(kf, smem_addr(sK + tile_off<D>(key, kk * 2 + ((lane >> 3) & 1))));
                mma_bf16(s[2 * np], qf, kf[0], kf[1]);
                mma_bf16(s[2 * np + 1], qf, kf[2], kf[3]);
            }
        }

        if (tree_tile) {  // node t sees tree key j iff bit j of anc[t] (bits >= T are never set)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int pr = mt * 64 + warp * 16 + (lane >> 2) + h * 8;
                const unsigned long long a = pr < rows ? s_anc[pr / G] : 0ull;  // padding rows: none
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int col = j * 8 + (lane & 3) * 2 + e;
                        if (!((a >> col) & 1ull)) s[j][2 * h + e] = NEG_INF;
                    }
            }
        } else if (kt * 64 + 64 > L) {  // tail of the prefix
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = j * 8 + (lane & 3) * 2 + (e & 1);
                    if (kt * 64 + col >= L) s[j][e] = NEG_INF;
                }
        }

#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[h], mx * scale_log2);
            const float m_base = m_new == NEG_INF ? 0.0f : m_new;  // padding rows: all masked
            const float alpha = exp2f(m[h] - m_base);
            m[h] = m_new;
            float rs = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float p0 = exp2f(s[j][2 * h] * scale_log2 - m_base);
                const float p1 = exp2f(s[j][2 * h + 1] * scale_log2 - m_base);
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
            if (kt + 1 < nkt - 1) load_rows<D>(sK, Kp, (kt + 1) * 64, L, tid);
            else load_rows<D>(sK, Kt, 0, T, tid);
            cp_async_commit();
        }

#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            unsigned pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DK; ++dp) {
                unsigned vf[4];
                ldmatrix_x4_trans(vf, smem_addr(sV + tile_off<D>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4))));
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

    if (nsplit > 1) {  // partial state of this split, rows < T*G only
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int pr = mt * 64 + warp * 16 + (lane >> 2) + h * 8;
            if (pr >= rows) continue;
            const size_t idx = (kvh * nsplit + split) * (size_t)rows + pr;
            if ((lane & 3) == 0) {
                part_ml[2 * idx] = m[h];
                part_ml[2 * idx + 1] = l[h];
            }
            float* dst = part_o + idx * D + (lane & 3) * 2;
#pragma unroll
            for (int d = 0; d < DN; ++d)
                *reinterpret_cast<float2*>(dst + d * 8) = make_float2(acc[d][2 * h], acc[d][2 * h + 1]);
        }
        return;
    }

    // One split: normalize, stage this warp's rows in its own (consumed) rows of the Q tile, store.
    __syncwarp();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float inv = 1.0f / l[h];
        const int row = warp * 16 + (lane >> 2) + h * 8;
#pragma unroll
        for (int d = 0; d < DN; ++d) {
            unsigned* dst = reinterpret_cast<unsigned*>(sQ + tile_off<D>(row, d) + (lane & 3) * 4);
            *dst = pack_bf16(acc[d][2 * h] * inv, acc[d][2 * h + 1] * inv);
        }
    }
    __syncwarp();
#pragma unroll
    for (int it = 0; it < 16 * RC / 32; ++it) {
        const int i = it * 32 + lane;
        const int r = i / RC, c = i % RC;
        const int pr = mt * 64 + warp * 16 + r;
        if (pr < rows)
            *reinterpret_cast<uint4*>(o + (((size_t)b * T + pr / G) * Hq + hkv * G + pr % G) * D + c * 8) =
                *reinterpret_cast<const uint4*>(sQ + tile_off<D>(warp * 16 + r, c));
    }
}

// One warp per packed row (b, hkv, pr): merges the non-empty splits' (max, sum, O) states.
template <int D>
__global__ void __launch_bounds__(THREADS)
tree_combine(const float* __restrict__ part_ml, const float* __restrict__ part_o, bf16* __restrict__ o, int B,
             int T, int L, int Hq, int Hkv, int nsplit) {
    constexpr int PL = D / 32;  // elements per lane
    const int lane = threadIdx.x & 31;
    const int G = Hq / Hkv, rows = T * G;
    const long long w = (long long)blockIdx.x * (THREADS / 32) + (threadIdx.x >> 5);
    if (w >= (long long)B * Hkv * rows) return;
    const int pr = (int)(w % rows);
    const long long kvh = w / rows;
    const int nkt = (L + 63) / 64 + 1;
    const int per = (nkt + nsplit - 1) / nsplit;
    const int nvalid = (nkt + per - 1) / per;

    float M = NEG_INF;
    for (int s = 0; s < nvalid; ++s) M = fmaxf(M, part_ml[2 * ((kvh * nsplit + s) * rows + pr)]);
    float den = 0.0f, acc[PL];
#pragma unroll
    for (int j = 0; j < PL; ++j) acc[j] = 0.0f;
    for (int s = 0; s < nvalid; ++s) {
        const size_t idx = (kvh * nsplit + s) * (size_t)rows + pr;
        const float wgt = exp2f(part_ml[2 * idx] - M);
        den += wgt * part_ml[2 * idx + 1];
        const float* src = part_o + idx * D + lane * PL;
        if constexpr (PL == 4) {
            const float4 v = *reinterpret_cast<const float4*>(src);
            acc[0] += wgt * v.x; acc[1] += wgt * v.y; acc[2] += wgt * v.z; acc[3] += wgt * v.w;
        } else {
            const float2 v = *reinterpret_cast<const float2*>(src);
            acc[0] += wgt * v.x; acc[1] += wgt * v.y;
        }
    }
    const float inv = 1.0f / den;
    const int b = (int)(kvh / Hkv), hkv = (int)(kvh % Hkv);
    bf16* dst = o + (((size_t)b * T + pr / G) * Hq + hkv * G + pr % G) * D + lane * PL;
    if constexpr (PL == 4) {
        uint2 v;
        v.x = pack_bf16(acc[0] * inv, acc[1] * inv);
        v.y = pack_bf16(acc[2] * inv, acc[3] * inv);
        *reinterpret_cast<uint2*>(dst) = v;
    } else {
        *reinterpret_cast<unsigned*>(dst) = pack_bf16(acc[0] * inv, acc[1] * inv);
    }
}

#define INST(D)                                                                                                   \
    template __global__ void tree_attn<D>(const bf16*, const bf16*, const bf16*, const bf16*, const bf16*,         \
                                          const int*, bf16*, float*, float*, int, int, int, int, int);             \
    template __global__ void tree_combine<D>(const float*, const float*, bf16*, int, int, int, int, int, int);
INST(64)
INST(128)
