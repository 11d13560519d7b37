// Scale-DiT window + global attention: high-resolution token i (already Hilbert-ordered, so window
// w = i / W of W consecutive tokens is a spatial patch) attends, under one softmax, the keys of its
// own window plus all Nlo low-resolution global tokens. bf16 in/out, fp32 softmax statistics.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - FlashAttention-2 (Dao 2023): one block = 64 query rows of one (batch, head), 4 warps x 16 rows;
//    the Q tile stays in smem and its fragments are re-read per key tile (one ldmatrix per eight for
//    K; registers go to the D = 128 accumulators); S = Q K^T and O += P V on mma.sync.m16n8k16 bf16
//    with fp32 accumulation, P re-packed from the S accumulators as the A operand, online softmax in
//    the exp2 domain.
//  - Block-sparse tile iteration instead of a masked dense pass (Scale-DiT's point; FlexAttention
//    block masks / sliding-tile attention do the same): a block visits only the key range of the
//    windows its 64 rows belong to (two at most when W >= 64, W need not divide 64) and then the global
//    keys; per-element masks are evaluated only on tiles that cross a window edge or the key tail.
//  - cp.async 16-byte loads with zero-fill, K(t+1) prefetched during P V(t) and V(t) during Q K(t)^T;
//    XOR-swizzled smem tiles (16-byte chunk ^= row & 7) keep cp.async and ldmatrix (.trans for V)
//    bank-conflict free; the output is staged through the Q tile for 16-byte coalesced stores.
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

// Rows row0 .. row0+63 of a [*, D] matrix into a tile; rows >= end are zero-filled.
template <int D>
static __device__ __forceinline__ void load_rows(unsigned char* tile, const bf16* base, int row0, int end, int tid) {
    constexpr int RC = D / 8;
#pragma unroll
    for (int it = 0; it < 64 * RC / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i / RC, c = i % RC;
        const bool ok = row0 + r < end;
        const bf16* src = ok ? base + (size_t)(row0 + r) * D + c * 8 : base;
        cp_async16(smem_addr(tile + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
}

// grid = (ceil(Nhi / 64), H, B). Key tiles: n_loc tiles of 64 starting at the first window's start
// (covering the windows of the block's rows), then n_glob tiles of the global keys.
template <int D>
__global__ void __launch_bounds__(THREADS)
window_global_attn(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                   const bf16* __restrict__ kg, const bf16* __restrict__ vg, bf16* __restrict__ o, int Nhi,
                   int Nlo, int W) {
    constexpr int TILE = 64 * D * 2, DK = D / 16, DN = D / 8, RC = D / 8;
    extern __shared__ uint4 smem_u4[];
    unsigned char* sQ = reinterpret_cast<unsigned char*>(smem_u4);
    unsigned char* sK = sQ + TILE;
    unsigned char* sV = sK + TILE;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int q0 = blockIdx.x * 64;
    const size_t bh = (size_t)blockIdx.z * gridDim.y + blockIdx.y;
    // head bases recomputed where used (kernel parameters live in the constant bank, registers do not
    // have room for five more pointers next to the D = 128 accumulators)
#define HI_BASE(p) ((p) + bh * Nhi * D)
#define LO_BASE(p) ((p) + bh * (size_t)Nlo * D)
    const float scale_log2 = rsqrtf((float)D) * 1.4426950408889634f;

    const int w_first = q0 / W, w_last = min(q0 + 63, Nhi - 1) / W;
    const int k_start = w_first * W, k_end = (w_last + 1) * W;  // k_end <= Nhi (Nhi % W == 0)
    const int n_loc = (k_end - k_start + 63) / 64;
    const int n_all = n_loc + (Nlo + 63) / 64;
    // this thread's two rows: window start of each (padding rows past Nhi use the last row's window)
    int wlo[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) wlo[h] = (min(q0 + warp * 16 + (lane >> 2) + h * 8, Nhi - 1) / W) * W;

    load_rows<D>(sQ, HI_BASE(q), q0, Nhi, tid);
    load_rows<D>(sK, HI_BASE(k), k_start, k_end, tid);
    cp_async_commit();

    float acc[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};
    float l[2] = {0.0f, 0.0f};

    for (int it = 0; it < n_all; ++it) {
        const bool local = it < n_loc;
        const int row0 = local ? k_start + it * 64 : (it - n_loc) * 64;
        cp_async_wait_all();
        __syncthreads();  // K(it) (and Q) landed; every warp is done with V(it-1)
        if (local) load_rows<D>(sV, HI_BASE(v), row0, k_end, tid);
        else load_rows<D>(sV, LO_BASE(vg), row0, Nlo, tid);
        cp_async_commit();

        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK; ++kk) {
            unsigned qf[4];  // re-read per key tile: registers are the D = 128 limit
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

        // local tile: key row0 + col must lie in the row's window (a tile needs this only when the
        // block spans two windows or the tile runs past the window end); global: key < Nlo
        if (local ? (w_first != w_last || row0 + 64 > k_end) : (row0 + 64 > Nlo)) {
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = row0 + j * 8 + (lane & 3) * 2 + (e & 1);
                    const int lo = wlo[e >> 1];
                    const bool ok = local ? (key >= lo && key < lo + W) : (key < Nlo);
                    if (!ok) s[j][e] = NEG_INF;
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
            // a row whose keys so far were all masked (the other window's tile) keeps m = -inf
            const float m_base = m_new == NEG_INF ? 0.0f : m_new;
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
        __syncthreads();  // V(it) landed; every warp is done with K(it)
        if (it + 1 < n_all) {
            if (it + 1 < n_loc) load_rows<D>(sK, HI_BASE(k), k_start + (it + 1) * 64, k_end, tid);
            else load_rows<D>(sK, LO_BASE(kg), (it + 1 - n_loc) * 64, Nlo, tid);
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

    // Normalize, stage this warp's 16 rows in its own (consumed) rows of the Q tile, store.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float t = l[h];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        const float inv = 1.0f / t;
        const int row = warp * 16 + (lane >> 2) + h * 8;
#pragma unroll
        for (int d = 0; d < DN; ++d) {
            unsigned* dst = reinterpret_cast<unsigned*>(sQ + tile_off<D>(row, d) + (lane & 3) * 4);
            *dst = pack_bf16(acc[d][2 * h] * inv, acc[d][2 * h + 1] * inv);
        }
    }
    __syncwarp();
    bf16* Oh = HI_BASE(o);
#undef HI_BASE
#undef LO_BASE
#pragma unroll
    for (int it = 0; it < 16 * RC / 32; ++it) {
        const int i = it * 32 + lane;
        const int r = i / RC, c = i % RC;
        const int row = q0 + warp * 16 + r;
        if (row < Nhi)
            *reinterpret_cast<uint4*>(Oh + (size_t)row * D + c * 8) =
                *reinterpret_cast<const uint4*>(sQ + tile_off<D>(warp * 16 + r, c));
    }
}

template __global__ void window_global_attn<64>(const bf16*, const bf16*, const bf16*, const bf16*, const bf16*,
                                                bf16*, int, int, int);
template __global__ void window_global_attn<128>(const bf16*, const bf16*, const bf16*, const bf16*, const bf16*,
                                                 bf16*, int, int, int);
