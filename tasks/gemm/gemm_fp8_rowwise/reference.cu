// C[M, N] = bf16( (A[M, K] . B[N, K]^T) * sa[m] * sb[n] ): e4m3 operands (both K-major, the
// layout FP8 tensor cores and torch._scaled_mm want), fp32 accumulation, per-row scales of A and
// per-column scales of B applied in the epilogue, bf16 output.
//
// Techniques (code written from scratch; the ideas come from):
//  - Ampere/Hopper mma.sync tensor-core GEMM (NVIDIA CUTLASS "Efficient GEMM in CUDA", PTX ISA
//    manual): mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 (sm_89+), whose 8-bit A/B
//    fragments are exactly what ldmatrix.m8n8.x4.b16 (non-transposed) yields from K-major rows:
//    a 16-byte ldmatrix row is 16 fp8 values of one m (or n) row, lane l gets bytes 4*(l%4)..+3 of
//    row l/4 - the "threadID_in_group*4 + i" k-index of the fp8 fragment tables;
//  - block tile BM x BN x 64 (64 fp8 = 64-byte smem rows, 4 x 16-byte chunks), warp tile 64 x 32,
//    STAGES-deep cp.async.cg pipeline (16-byte, L2-only) with zero-fill (src-size 0) for rows >= M,
//    >= N and k >= K (K % 16 == 0, so a chunk is all in or all out), one commit group per k-tile;
//  - XOR swizzle chunk ^= (row >> 1) & 3 on the 64-byte rows: each ldmatrix phase (8 rows, one
//    logical chunk) hits 8 distinct 16-byte bank groups (conflict free), as does each cp.async row;
//  - grouped rasterization (GROUP_M M-tiles sweep N together) for L2 reuse;
//  - two-level accumulation (promotion): each 64-wide k-tile is summed by two MMAs from a zeroed
//    temporary and added to the fp32 accumulator in CUDA cores, since the FP8 mma accumulator keeps
//    only ~13 mantissa bits (truncating) on Ada/Hopper (SageAttention2, DeepSeek-V3 report);
//  - rowwise scaling fused into the epilogue (per-token x per-channel scaled FP8 GEMM as in
//    FBGEMM f8f8bf16_rowwise / torch._scaled_mm rowwise), scales loaded once per fragment row/col.
//    The "Dissecting the NVIDIA Hopper Architecture" paper motivates FP8 tensor cores here; the
//    expert Hopper path is WGMMA + TMA, this reference stays on portable mma.sync.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#define FP8_BK 64
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
static __device__ __forceinline__ void mma_e4m3(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offset of 16-byte chunk `chunk` (0..3) of tile row `row` (64-byte rows).
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// One k-tile (64 fp8 of every row) of A and B into a pipeline stage.
template <int BM, int BN, int THREADS>
static __device__ __forceinline__ void load_tile(unsigned sA, unsigned sB, const unsigned char* A,
                                                 const unsigned char* B, int M, int N, int K, int bm, int bn,
                                                 int k0, int tid) {
    static_assert((BM * 4) % THREADS == 0 && (BN * 4) % THREADS == 0, "tile chunks must split evenly");
#pragma unroll
    for (int it = 0; it < BM * 4 / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 2, c = i & 3;
        const int gm = bm + r, gk = k0 + c * 16;
        const bool ok = gm < M && gk < K;
        cp_async16(sA + tile_off(r, c), ok ? A + (size_t)gm * K + gk : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int it = 0; it < BN * 4 / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 2, c = i & 3;
        const int gn = bn + r, gk = k0 + c * 16;
        const bool ok = gn < N && gk < K;
        cp_async16(sB + tile_off(r, c), ok ? B + (size_t)gn * K + gk : B, ok ? 16 : 0);
    }
}

static __device__ __forceinline__ void store2(__nv_bfloat16* C, int M, int N, int r, int c, float x, float y) {
    if (r >= M) return;
    __nv_bfloat16* p = C + (size_t)r * N + c;
    if ((N & 1) == 0 && c + 1 < N) {
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);  // N, c even: 4-byte aligned
    } else {
        if (c < N) p[0] = __float2bfloat16_rn(x);
        if (c + 1 < N) p[1] = __float2bfloat16_rn(y);
    }
}

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
gemm_fp8_rowwise(const __nv_fp8_e4m3* __restrict__ Ap, const __nv_fp8_e4m3* __restrict__ Bp,
                 const float* __restrict__ sa, const float* __restrict__ sb, __nv_bfloat16* __restrict__ C,
                 int M, int N, int K) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NI = WN / 8;
    constexpr int A_STAGE = BM * FP8_BK;
    constexpr int B_STAGE = BN * FP8_BK;
    static_assert(WM % 16 == 0 && WN % 16 == 0 && STAGES >= 2, "tile shape");

    extern __shared__ uint4 smem_u4[];
    const unsigned smem = smem_addr(smem_u4);
    const unsigned char* A = reinterpret_cast<const unsigned char*>(Ap);
    const unsigned char* B = reinterpret_cast<const unsigned char*>(Bp);

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

    const int KT = (K + FP8_BK - 1) / FP8_BK;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT)
            load_tile<BM, BN, THREADS>(smem + s * A_STAGE, smem + STAGES * A_STAGE + s * B_STAGE, A, B, M, N, K,
                                       bm, bn, s * FP8_BK, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; everyone is done with the stage refilled below

        const int pf = kt + STAGES - 1;
        if (pf < KT) {
            const int ps = pf % STAGES;
            load_tile<BM, BN, THREADS>(smem + ps * A_STAGE, smem + STAGES * A_STAGE + ps * B_STAGE, A, B, M, N, K,
                                       bm, bn, pf * FP8_BK, tid);
        }
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem + cs * A_STAGE;
        const unsigned sB = smem + STAGES * A_STAGE + cs * B_STAGE;
        // Both k32 steps' fragments first, so each k-tile's two MMAs can run into a zeroed temporary.
        unsigned af[FP8_BK / 32][MI][4];
        unsigned bf[FP8_BK / 32][NI / 2][4];
#pragma unroll
        for (int ks = 0; ks < FP8_BK / 32; ++ks) {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                // matrices: rows 0-7 / 8-15 of k bytes 0-15, then the same rows of k bytes 16-31
                const int row = wm * WM + mi * 16 + (lane & 15);
                ldmatrix_x4(af[ks][mi], sA + tile_off(row, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                // matrices: n 0-7 k 0-15, n 0-7 k 16-31, n 8-15 k 0-15, n 8-15 k 16-31
                const int row = wn * WN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf[ks][nj], sB + tile_off(row, ks * 2 + ((lane >> 3) & 1)));
            }
        }
        // Promotion: the FP8 mma accumulator of Ada/Hopper keeps only ~13 mantissa bits and truncates
        // (SageAttention2; DeepSeek-V3 report, 3.5.2), so chaining all K/32 MMAs into one accumulator
        // loses ~K/32 * 2^-14 of the result (about 5% at K = 65536). Each k-tile's 64-term partial is
        // instead summed from zero by the tensor core and added to the fp32 accumulator here.
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
                float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int ks = 0; ks < FP8_BK / 32; ++ks)
                    mma_e4m3(part, af[ks][mi], bf[ks][ni >> 1][(ni & 1) * 2], bf[ks][ni >> 1][(ni & 1) * 2 + 1]);
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mi][ni][e] += part[e];
            }
    }
    cp_async_wait<0>();

    // Epilogue: acc * sa[row] * sb[col] (in that order), rounded once to bf16.
    float sbv[NI][2];
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
        const int c = bn + wn * WN + ni * 8 + (lane & 3) * 2;
        sbv[ni][0] = c < N ? __ldg(sb + c) : 0.0f;
        sbv[ni][1] = c + 1 < N ? __ldg(sb + c + 1) : 0.0f;
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int r = bm + wm * WM + mi * 16 + (lane >> 2);
        const float sa0 = r < M ? __ldg(sa + r) : 0.0f;
        const float sa1 = r + 8 < M ? __ldg(sa + r + 8) : 0.0f;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int c = bn + wn * WN + ni * 8 + (lane & 3) * 2;
            store2(C, M, N, r, c, acc[mi][ni][0] * sa0 * sbv[ni][0], acc[mi][ni][1] * sa0 * sbv[ni][1]);
            store2(C, M, N, r + 8, c, acc[mi][ni][2] * sa1 * sbv[ni][0], acc[mi][ni][3] * sa1 * sbv[ni][1]);
        }
    }
}

template __global__ void gemm_fp8_rowwise<128, 128, 64, 32, 4>(const __nv_fp8_e4m3*, const __nv_fp8_e4m3*,
                                                               const float*, const float*, __nv_bfloat16*, int,
                                                               int, int);
