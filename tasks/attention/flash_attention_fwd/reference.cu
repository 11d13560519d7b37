// Causal scaled-dot-product attention forward, bf16 Q, K, V, O of shape [B, H, S, D], D in {64, 128},
// scale = 1/sqrt(D), query i attends keys j <= i.
//
// Techniques (FlashAttention-2: Dao, "FlashAttention-2: Faster Attention with Better Parallelism and
// Work Partitioning", 2023; online softmax from Milakov & Gimelshein 2018; tensor-core fragment
// layouts from the PTX ISA manual; code written from scratch):
//  - one block = 64 query rows of one (batch, head), 4 warps of 16 rows each; Q fragments stay in
//    registers for the whole block; K and V tiles of 64 keys go through shared memory;
//  - S = Q K^T and O += P V on mma.sync.m16n8k16 bf16 with fp32 accumulation; the P tile is re-packed
//    from the S accumulators into A-operand registers without touching shared memory (the FA2 trick);
//  - online softmax in the exp2 domain (scale * log2 e folded in), row max / sum reduced over the
//    4 threads of a quad with shuffles, O rescaled by exp2(m_old - m_new), divided by l at the end;
//  - causal tile skipping: a block visits only key tiles 0..its own diagonal tile, diagonal first
//    (the only one that needs masking); blocks are issued heaviest (last query tile) first;
//  - cp.async loads with zero-fill for rows >= S; K(t-1) is prefetched while P V(t) is computed and
//    V(t) while Q K(t)^T is computed; ldmatrix (x4, .trans for V) from an XOR-swizzled layout
//    (16-byte chunk ^= row & 7) that makes ldmatrix and cp.async bank-conflict free;
//  - output staged through the (no longer needed) Q tile so global stores are 16-byte and coalesced;
//  - on Hopper (sm_90a, which the harness compiles for on an H100) the block's one warpgroup runs
//    both products as wgmma (FlashAttention-3: Shah et al., 2024; PTX ISA "Asynchronous Warpgroup
//    Level Matrix Multiply-Accumulate"): S = Q K^T as m64n64k16 with Q and K read from shared
//    memory through descriptors, O += P V as m64nDk16 with P straight from the S accumulators in
//    registers (wgmma's register A layout is mma.sync's, per warp) and V N-major. The tiles are
//    stored as 64-column blocks of 128-byte rows with chunk ^= row & 7, the canonical 128-byte
//    swizzle for both K-major (Q, K) and N-major (V) operands, and the same layout serves the
//    mma.sync loop's ldmatrix; fence.proxy.async publishes cp.async data to wgmma.
#include <cuda_bf16.h>

// The wgmma main loop wherever the target has it. Defining FA_FORCE_MMA_SYNC keeps mma.sync, for
// the side-by-side timing of the two (scripts/gpu-check.sh, step mainloops).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) && !defined(FA_FORCE_MMA_SYNC)
#define FA_WGMMA 1
#else
#define FA_WGMMA 0
#endif

#define FA_BQ 64
#define FA_BKV 64
#define FA_THREADS 128
#define NEG_INF __int_as_float(0xff800000)

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Only one main loop is compiled per target; the other's helpers would be unused.
#if !FA_WGMMA
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
#endif
static __device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [64][D] bf16 tile: 64-column blocks
// (8 KiB each) of 64 rows x 128 bytes, chunk % 8 swizzled with row % 8.
template <int D>
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)((chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

#if FA_WGMMA
// D[64 x 64] (+)= A[64 x 16] . B[64 x 16]^T, both K-major from smem descriptors; scale_d = 0
// overwrites D. d[j][e] is the mma.sync-style fragment of n8 tile j.
static __device__ __forceinline__ void wgmma_qk(float (&d)[8][4], unsigned long long da, unsigned long long db,
                                             int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "l"(da), "l"(db), "r"(scale_d));
}
// D[64 x 64] += A[64 x 16] . B[16 x 64]: A from registers (the mma.sync A layout, warp w holding
// rows 16w..16w+15), B N-major (imm-trans-b 1) from a smem descriptor.
static __device__ __forceinline__ void wgmma_pv(float (&d)[8][4], const unsigned (&a)[4], unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
// D[64 x 128] += A[64 x 16] . B[16 x 128]: A from registers (the mma.sync A layout, warp w holding
// rows 16w..16w+15), B N-major (imm-trans-b 1) from a smem descriptor.
static __device__ __forceinline__ void wgmma_pv(float (&d)[16][4], const unsigned (&a)[4], unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
static __device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// 128-byte-swizzle descriptor (PTX ISA 9.7.15.5.1.2.2): start, leading and stride byte offsets.
static __device__ __forceinline__ unsigned long long sw128_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

// S = Q K^T for the block's 64 queries and 64 keys. Both K-major: the k16 slice kk sits in column
// block kk / 4, 32 bytes per step into each row; 8-row groups are 1024 bytes apart.
template <int D>
static __device__ __forceinline__ void qk_wgmma(float (&s)[FA_BKV / 8][4], unsigned sQ, unsigned sK) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const unsigned off = (kk >> 2) * (64 * 128) + (kk & 3) * 32;
        wgmma_qk(s, sw128_desc(sQ + off, 16, 1024), sw128_desc(sK + off, 16, 1024), kk > 0);
    }
    wgmma_commit();
    wgmma_wait_all();
}

// O += P V: P's k16 slice kk is packed from the S accumulators exactly as for mma.sync; V is
// N-major: the slice is 16 rows (2048 bytes) down, column blocks 8 KiB apart (leading), 8-row
// groups 1024 bytes apart (stride).
template <int D>
static __device__ __forceinline__ void pv_wgmma(float (&o)[D / 8][4], const float (&s)[FA_BKV / 8][4], unsigned sV) {
    unsigned pa[FA_BKV / 16][4];
#pragma unroll
    for (int kk = 0; kk < FA_BKV / 16; ++kk) {
        pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < FA_BKV / 16; ++kk) wgmma_pv(o, pa[kk], sw128_desc(sV + kk * 16 * 128, 64 * 128, 1024));
    wgmma_commit();
    wgmma_wait_all();
}
#endif
// cp.async data (generic proxy) becomes visible to wgmma (async proxy) once a barrier follows.
static __device__ __forceinline__ void publish_to_wgmma() {
#if FA_WGMMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Copies rows [row0, row0 + 64) of a [S, D] head into a tile; rows >= S are zero-filled.
template <int D>
static __device__ __forceinline__ void load_tile(unsigned char* tile, const __nv_bfloat16* head, int row0, int S,
                                                 int tid) {
    constexpr int ROW_CHUNKS = D / 8;
    constexpr int CHUNKS = 64 * ROW_CHUNKS;
    static_assert(CHUNKS % FA_THREADS == 0, "chunks split evenly");
#pragma unroll
    for (int it = 0; it < CHUNKS / FA_THREADS; ++it) {
        const int i = it * FA_THREADS + tid;
        const int r = i / ROW_CHUNKS, c = i % ROW_CHUNKS;
        const bool ok = row0 + r < S;
        const __nv_bfloat16* src = ok ? head + (size_t)(row0 + r) * D + c * 8 : head;
        cp_async16(smem_addr(tile + tile_off<D>(r, c)), src, ok ? 16 : 0);
    }
}

template <int D>
__global__ void __launch_bounds__(FA_THREADS, FA_WGMMA ? 3 : 1)
flash_attn_fwd(const __nv_bfloat16* __restrict__ Q, const __nv_bfloat16* __restrict__ K,
               const __nv_bfloat16* __restrict__ V, __nv_bfloat16* __restrict__ O, int S) {
    static_assert(D == 64 || D == 128, "head dim");
    constexpr int TILE_BYTES = 64 * D * 2;
    [[maybe_unused]] constexpr int DK = D / 16;  // k16 steps over the head dim (mma.sync loop)
    constexpr int DN = D / 8;   // n8 tiles over the head dim
    constexpr int KN = FA_BKV / 8;  // n8 tiles over a key tile

    // wgmma's swizzle acts on absolute address bits: tiles start on 1024-byte boundaries.
    extern __shared__ __align__(1024) uint4 smem_u4[];
    unsigned char* sQ = reinterpret_cast<unsigned char*>(smem_u4);
    unsigned char* sK = sQ + TILE_BYTES;
    unsigned char* sV = sK + TILE_BYTES;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int qt = gridDim.x - 1 - blockIdx.x;  // heaviest (longest causal prefix) tiles first
    const int q0 = qt * FA_BQ;
    const size_t head = ((size_t)blockIdx.z * gridDim.y + blockIdx.y) * (size_t)S * D;
    const __nv_bfloat16* Qh = Q + head;
    const __nv_bfloat16* Kh = K + head;
    const __nv_bfloat16* Vh = V + head;
    const float scale_log2 = rsqrtf((float)D) * 1.4426950408889634f;

    load_tile<D>(sQ, Qh, q0, S, tid);
    load_tile<D>(sK, Kh, q0, S, tid);
    cp_async_commit();

#if !FA_WGMMA
    unsigned qf[DK][4];
#endif
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF};  // running max (log2 domain) of rows g and g + 8
    float l[2] = {0.0f, 0.0f};            // this thread's share of the running denominators

    for (int kt = qt; kt >= 0; --kt) {
        cp_async_wait_all();
        publish_to_wgmma();
        __syncthreads();  // K(kt) (and Q) landed; every warp is done with V(kt+1)
#if !FA_WGMMA
        if (kt == qt) {
#pragma unroll
            for (int kk = 0; kk < DK; ++kk)
                ldmatrix_x4(qf[kk], smem_addr(sQ + tile_off<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
        }
#endif
        load_tile<D>(sV, Vh, kt * FA_BKV, S, tid);
        cp_async_commit();

        // S = Q K^T for this warp's 16 rows and the 64 keys of the tile.
        float s[KN][4];
#if FA_WGMMA
        qk_wgmma<D>(s, smem_addr(sQ), smem_addr(sK));
#else
#pragma unroll
        for (int j = 0; j < KN; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK; ++kk) {
#pragma unroll
            for (int np = 0; np < KN / 2; ++np) {
                unsigned kf[4];
                const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(kf, smem_addr(sK + tile_off<D>(key, kk * 2 + ((lane >> 3) & 1))));
                mma_bf16(s[2 * np], qf[kk], kf[0], kf[1]);
                mma_bf16(s[2 * np + 1], qf[kk], kf[2], kf[3]);
            }
        }
#endif

        // Diagonal tile (key tile == query tile): mask key > query with local indices.
        if (kt == qt) {
#pragma unroll
            for (int j = 0; j < KN; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = warp * 16 + (lane >> 2) + ((e >> 1) << 3);
                    const int col = j * 8 + (lane & 3) * 2 + (e & 1);
                    if (col > row) s[j][e] = NEG_INF;
                }
        }

        // Online softmax; h = 0 is row g (elements 0, 1), h = 1 is row g + 8 (elements 2, 3).
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < KN; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[h], mx * scale_log2);
            // A row with nothing unmasked yet keeps m = -inf; subtract 0 then so exp2 gives 0, not NaN.
            const float m_base = m_new == NEG_INF ? 0.0f : m_new;
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

        cp_async_wait_all();
        publish_to_wgmma();
        __syncthreads();  // V(kt) landed; every warp is done with K(kt)
        if (kt > 0) {
            load_tile<D>(sK, Kh, (kt - 1) * FA_BKV, S, tid);
            cp_async_commit();
        }

        // O += P V: P's accumulator layout of two n8 tiles is the A layout of one k16 step.
#if FA_WGMMA
        pv_wgmma<D>(o, s, smem_addr(sV));
#else
#pragma unroll
        for (int kk = 0; kk < FA_BKV / 16; ++kk) {
            unsigned pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DK; ++dp) {
                unsigned vf[4];
                ldmatrix_x4_trans(vf, smem_addr(sV + tile_off<D>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4))));
                mma_bf16(o[2 * dp], pa, vf[0], vf[1]);
                mma_bf16(o[2 * dp + 1], pa, vf[2], vf[3]);
            }
        }
#endif
    }

    // Normalize, stage this warp's 16 rows in its own (already consumed) rows of the Q tile, store.
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float t = l[h];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        inv[h] = 1.0f / t;
    }
#pragma unroll
    for (int d = 0; d < DN; ++d)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = warp * 16 + (lane >> 2) + h * 8;
            unsigned* dst = reinterpret_cast<unsigned*>(sQ + tile_off<D>(row, d) + (lane & 3) * 4);
            *dst = pack_bf16(o[d][2 * h] * inv[h], o[d][2 * h + 1] * inv[h]);
        }
    __syncwarp();
    __nv_bfloat16* Oh = O + head;
#pragma unroll
    for (int it = 0; it < 16 * DN / 32; ++it) {
        const int i = it * 32 + lane;
        const int r = i / DN, c = i % DN;
        const int row = q0 + warp * 16 + r;
        if (row < S)
            *reinterpret_cast<uint4*>(Oh + (size_t)row * D + c * 8) =
                *reinterpret_cast<const uint4*>(sQ + tile_off<D>(warp * 16 + r, c));
    }
}

template __global__ void flash_attn_fwd<64>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                            __nv_bfloat16*, int);
template __global__ void flash_attn_fwd<128>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                             __nv_bfloat16*, int);
