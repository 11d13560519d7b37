// S[b] = Q[b] . K[b]^T: Q [B, M, D], K [B, N, D], S [B, M, N], bf16 in and out, fp32 accumulation
// (the attention-score GEMM of unfused attention; both operands are D-major, "NT").
//
// Techniques (code written from scratch; the ideas come from NVIDIA's CUTLASS "Efficient GEMM in
// CUDA" notes, the PTX ISA manual and the FlashAttention-2 paper's Q.K^T tiling):
//  - mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32; since both Q and K rows are D-major,
//    plain (non-transposed) ldmatrix.x4 gives both the A fragments (Q) and the B fragments (K);
//  - block tile 128 x 128 x 32 (64-byte smem rows = 4 x 16-byte chunks), 8 warps of 64 x 32,
//    3-stage cp.async.cg pipeline (D is only 64..256, i.e. 2..8 k-tiles, so 3 stages suffice);
//  - XOR swizzle chunk ^= (row >> 1) & 3: conflict-free ldmatrix phases and cp.async stores;
//  - zero-fill (cp.async src-size 0) for rows >= M / >= N and d >= D (D % 8 == 0, so a 16-byte
//    chunk is all in or all out); batch index from blockIdx.y, tiles of one batch rasterized in
//    groups of 8 M tiles for L2 reuse of K;
//  - N may be odd (awkward N = 517): bf16x2 stores only where 4-byte aligned, else scalar.
#include <cuda_bf16.h>

#define BMM_BK 32
#define GROUP_M 8

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

static __device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offset of 16-byte chunk `chunk` (0..3) of tile row `row` (rows of 32 bf16 = 64 bytes).
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// Rows [r0, r0 + ROWS) x d [d0, d0 + 32) of a [rows, D] matrix into one stage.
template <int ROWS, int THREADS>
static __device__ __forceinline__ void load_rows(unsigned s, const __nv_bfloat16* X, int rows, int D, int r0, int d0,
                                                 int tid) {
    static_assert((ROWS * 4) % THREADS == 0, "tile chunks must split evenly");
#pragma unroll
    for (int it = 0; it < ROWS * 4 / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 2, c = i & 3;
        const int gr = r0 + r, gd = d0 + c * 8;
        const bool ok = gr < rows && gd < D;
        cp_async16(s + tile_off(r, c), ok ? X + (size_t)gr * D + gd : X, ok ? 16 : 0);
    }
}

static __device__ __forceinline__ void store2(__nv_bfloat16* S, int M, int N, int r, int c, float x, float y) {
    if (r >= M) return;
    __nv_bfloat16* p = S + (size_t)r * N + c;
    if ((N & 1) == 0 && c + 1 < N) {
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);  // N, c even: 4-byte aligned
    } else {
        if (c < N) p[0] = __float2bfloat16_rn(x);
        if (c + 1 < N) p[1] = __float2bfloat16_rn(y);
    }
}

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
bmm_qkt(const __nv_bfloat16* __restrict__ Q, const __nv_bfloat16* __restrict__ Kmat, __nv_bfloat16* __restrict__ S,
        int M, int N, int D) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NI = WN / 8;
    constexpr int A_STAGE = BM * BMM_BK * 2;
    constexpr int B_STAGE = BN * BMM_BK * 2;
    static_assert(WM % 16 == 0 && WN % 16 == 0 && STAGES >= 2, "tile shape");

    extern __shared__ uint4 smem_u4[];
    const unsigned smem = smem_addr(smem_u4);

    const int b = blockIdx.y;
    Q += (size_t)b * M * D;
    Kmat += (size_t)b * N * D;
    S += (size_t)b * M * N;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WARPS_N;
    const int wn = warp % WARPS_N;

    const int tiles_m = (M + BM - 1) / BM;
    const int tiles_n = (N + BN - 1) / BN;
    const int per_group = GROUP_M * tiles_n;
    const int group = blockIdx.x / per_group;
    const int first_m = group * GROUP_M;
    const int group_rows = min(tiles_m - first_m, GROUP_M);
    const int in_group = blockIdx.x - group * per_group;
    const int bm = (first_m + in_group % group_rows) * BM;
    const int bn = (in_group / group_rows) * BN;

    const int KT = (D + BMM_BK - 1) / BMM_BK;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) {
            load_rows<BM, THREADS>(smem + s * A_STAGE, Q, M, D, bm, s * BMM_BK, tid);
            load_rows<BN, THREADS>(smem + STAGES * A_STAGE + s * B_STAGE, Kmat, N, D, bn, s * BMM_BK, tid);
        }
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; everyone is done with the stage refilled below

        const int pf = kt + STAGES - 1;
        if (pf < KT) {
            const int ps = pf % STAGES;
            load_rows<BM, THREADS>(smem + ps * A_STAGE, Q, M, D, bm, pf * BMM_BK, tid);
            load_rows<BN, THREADS>(smem + STAGES * A_STAGE + ps * B_STAGE, Kmat, N, D, bn, pf * BMM_BK, tid);
        }
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem + cs * A_STAGE;
        const unsigned sB = smem + STAGES * A_STAGE + cs * B_STAGE;
#pragma unroll
        for (int ks = 0; ks < BMM_BK / 16; ++ks) {
            unsigned af[MI][4];
            unsigned bf[NI / 2][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                // matrices: rows 0-7 / 8-15 of k 0-7, then the same rows of k 8-15
                const int row = wm * WM + mi * 16 + (lane & 15);
                ldmatrix_x4(af[mi], sA + tile_off(row, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                // matrices: n 0-7 k 0-7, n 0-7 k 8-15, n 8-15 k 0-7, n 8-15 k 8-15
                const int row = wn * WN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf[nj], sB + tile_off(row, ks * 2 + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
                    mma_bf16(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int r = bm + wm * WM + mi * 16 + (lane >> 2);
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int c = bn + wn * WN + ni * 8 + (lane & 3) * 2;
            store2(S, M, N, r, c, acc[mi][ni][0], acc[mi][ni][1]);
            store2(S, M, N, r + 8, c, acc[mi][ni][2], acc[mi][ni][3]);
        }
    }
}

template __global__ void bmm_qkt<128, 128, 64, 32, 3>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*,
                                                      int, int, int);
