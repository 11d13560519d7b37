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
//  - on Hopper (sm_90a, which the harness compiles for on an H100) the main loop is warpgroup
//    MMA instead: FP8 mma.sync is emulated there (an f16 conversion plus two f16 MMAs, no faster
//    than bf16), FP8 tensor cores answer only to wgmma ("Dissecting the NVIDIA Hopper
//    Architecture through Microbenchmarking"; PTX ISA, "Asynchronous Warpgroup Level Matrix
//    Multiply-Accumulate"). Each of the two warpgroups owns 64 rows of the 128 x 128 tile and
//    issues wgmma.m64n128k32 with both operands read from shared memory through matrix
//    descriptors. The smem tiles above are already in wgmma's canonical K-major 64-byte-swizzle
//    layout (8-row x 64-byte atoms, 16-byte chunk ^= row bits 1-2, i.e. Swizzle<2,4,3> on the
//    byte address), so the same cp.async pipeline feeds both paths; the second k32 half of a
//    64-byte row is addressed by moving the descriptor's start 32 bytes, as CUTLASS's
//    descriptor iterators do. cp.async writes through the generic proxy and wgmma reads
//    through the async proxy: fence.proxy.async before the barrier that publishes a stage.
//    Promotion is the same: each k-tile's two wgmmas run into a temporary (scale-d = 0 on the
//    first) that is added to the fp32 accumulator (DeepGEMM's FP8 GEMM does this every 128 K).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#define FP8_BK 64
#define GROUP_M 8

// The wgmma main loop wherever the target has it. Defining GEMM_FP8_FORCE_MMA_SYNC keeps the
// mma.sync one, for the side-by-side timing of the two (scripts/gpu-check.sh, step mainloops).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) && !defined(GEMM_FP8_FORCE_MMA_SYNC)
#define GEMM_FP8_WGMMA 1
#else
#define GEMM_FP8_WGMMA 0
#endif

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Only one main loop is compiled per target; the other's helpers would be unused.
#if !GEMM_FP8_WGMMA
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
#endif

// Byte offset of 16-byte chunk `chunk` (0..3) of tile row `row` (64-byte rows).
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// k-tile kt (64 fp8 of every row) of A and B into pipeline stage kt % STAGES of the shared
// memory at smem: STAGES A tiles (BM x 64 bytes), then STAGES B tiles (BN x 64 bytes).
template <int BM, int BN, int THREADS, int STAGES>
static __device__ __forceinline__ void load_tile(unsigned smem, const unsigned char* A, const unsigned char* B,
                                                 int M, int N, int K, int bm, int bn, int kt, int tid) {
    const unsigned sA = smem + (kt % STAGES) * (BM * FP8_BK);
    const unsigned sB = smem + STAGES * (BM * FP8_BK) + (kt % STAGES) * (BN * FP8_BK);
    const int k0 = kt * FP8_BK;
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

#if GEMM_FP8_WGMMA
// D[64 x 128] (+)= A[64 x 32] . B[128 x 32]^T for the warpgroup, both operands read from shared
// memory through descriptors; scale_d = 0 overwrites D (a zeroed start without zeroing it).
static __device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], unsigned long long da,
                                                             unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(scale_d));
}

static __device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// This thread's generic-proxy writes (cp.async) become visible to async-proxy reads (wgmma)
// once a barrier follows.
static __device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory matrix descriptor of a K-major tile in 64-byte-swizzle layout: start address,
// leading byte offset unused (the 32-byte k-slice lies inside one swizzle atom; 1 by
// convention), stride byte offset 512 (from one 8-row atom to the next), layout type 2 (64B).
static __device__ __forceinline__ unsigned long long sw64_desc(unsigned addr) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | (1ull << 16) | ((512ull >> 4) << 32) | (2ull << 62);
}

// The sm_90a main loop: warpgroup g computes rows 64g..64g+63 of the BM x 128 tile.
template <int BM, int BN, int STAGES>
static __device__ __forceinline__ void tile_wgmma(const unsigned char* A, const unsigned char* B,
                                                  const float* __restrict__ sa, const float* __restrict__ sb,
                                                  __nv_bfloat16* __restrict__ C, int M, int N, int K, unsigned smem,
                                                  int bm, int bn, int tid) {
    constexpr int THREADS = BM / 64 * 128;
    constexpr int A_STAGE = BM * FP8_BK;
    constexpr int B_STAGE = BN * FP8_BK;
    static_assert(BM % 64 == 0 && BN == 128 && STAGES >= 2, "one m64n128 wgmma per warpgroup and k32 step");
    const int wg = tid >> 7;
    const int lane = tid & 31;
    const int row0 = wg * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2);  // and row0 + 8
    const int KT = (K + FP8_BK - 1) / FP8_BK;

    float acc[64];
    float part[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = part[i] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT)
            load_tile<BM, BN, THREADS, STAGES>(smem, A, B, M, N, K, bm, bn, s, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        fence_proxy_async();
        // Tile kt visible to every warpgroup; all wgmmas of kt - 1 were waited for, so the stage
        // refilled below is free.
        __syncthreads();

        const int pf = kt + STAGES - 1;
        if (pf < KT) load_tile<BM, BN, THREADS, STAGES>(smem, A, B, M, N, K, bm, bn, pf, tid);
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem + cs * A_STAGE + wg * 64 * FP8_BK;
        const unsigned sB = smem + STAGES * A_STAGE + cs * B_STAGE;
        wgmma_fence();
        wgmma_m64n128k32_e4m3(part, sw64_desc(sA), sw64_desc(sB), 0);
        wgmma_m64n128k32_e4m3(part, sw64_desc(sA + 32), sw64_desc(sB + 32), 1);
        wgmma_commit();
        wgmma_wait_all();
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[i] += part[i];
    }
    cp_async_wait<0>();

    // Accumulator fragment (PTX ISA, wgmma D for m64nN, f32): acc[4j + e] is row row0 (e < 2)
    // or row0 + 8, column 8j + 2 * (lane % 4) + (e & 1).
    const int r = bm + row0;
    const float sa0 = r < M ? __ldg(sa + r) : 0.0f;
    const float sa1 = r + 8 < M ? __ldg(sa + r + 8) : 0.0f;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        const int c = bn + j * 8 + (lane & 3) * 2;
        const float sb0 = c < N ? __ldg(sb + c) : 0.0f;
        const float sb1 = c + 1 < N ? __ldg(sb + c + 1) : 0.0f;
        store2(C, M, N, r, c, acc[4 * j] * sa0 * sb0, acc[4 * j + 1] * sa0 * sb1);
        store2(C, M, N, r + 8, c, acc[4 * j + 2] * sa1 * sb0, acc[4 * j + 3] * sa1 * sb1);
    }
}
#else

// The mma.sync main loop (sm_89, and any target without wgmma): warp tiles of WM x WN.
template <int BM, int BN, int WM, int WN, int STAGES>
static __device__ __forceinline__ void tile_mma_sync(const unsigned char* A, const unsigned char* B,
                                                     const float* __restrict__ sa, const float* __restrict__ sb,
                                                     __nv_bfloat16* __restrict__ C, int M, int N, int K,
                                                     unsigned smem, int bm, int bn, int tid) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NI = WN / 8;
    constexpr int A_STAGE = BM * FP8_BK;
    constexpr int B_STAGE = BN * FP8_BK;
    static_assert(WM % 16 == 0 && WN % 16 == 0 && STAGES >= 2, "tile shape");
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WARPS_N;
    const int wn = warp % WARPS_N;

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
            load_tile<BM, BN, THREADS, STAGES>(smem, A, B, M, N, K, bm, bn, s, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; everyone is done with the stage refilled below

        const int pf = kt + STAGES - 1;
        if (pf < KT) load_tile<BM, BN, THREADS, STAGES>(smem, A, B, M, N, K, bm, bn, pf, tid);
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
#endif

template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
gemm_fp8_rowwise(const __nv_fp8_e4m3* __restrict__ Ap, const __nv_fp8_e4m3* __restrict__ Bp,
                 const float* __restrict__ sa, const float* __restrict__ sb, __nv_bfloat16* __restrict__ C,
                 int M, int N, int K) {
    // The swizzle is applied to absolute shared-memory address bits: tiles start on 512-byte
    // (8-row atom) boundaries, which every stage offset (8 KiB) keeps.
    extern __shared__ __align__(1024) uint4 smem_u4[];
    const unsigned smem = smem_addr(smem_u4);
    const unsigned char* A = reinterpret_cast<const unsigned char*>(Ap);
    const unsigned char* B = reinterpret_cast<const unsigned char*>(Bp);

    const int tiles_m = (M + BM - 1) / BM;
    const int tiles_n = (N + BN - 1) / BN;
    const int per_group = GROUP_M * tiles_n;
    const int group = blockIdx.x / per_group;
    const int first_m = group * GROUP_M;
    const int group_rows = min(tiles_m - first_m, GROUP_M);
    const int in_group = blockIdx.x - group * per_group;
    const int bm = (first_m + in_group % group_rows) * BM;
    const int bn = (in_group / group_rows) * BN;

#if GEMM_FP8_WGMMA
    static_assert((BM / WM) * (BN / WN) * 32 == BM / 64 * 128, "the block is BM / 64 warpgroups");
    tile_wgmma<BM, BN, STAGES>(A, B, sa, sb, C, M, N, K, smem, bm, bn, threadIdx.x);
#else
    tile_mma_sync<BM, BN, WM, WN, STAGES>(A, B, sa, sb, C, M, N, K, smem, bm, bn, threadIdx.x);
#endif
}

template __global__ void gemm_fp8_rowwise<128, 128, 64, 32, 4>(const __nv_fp8_e4m3*, const __nv_fp8_e4m3*,
                                                               const float*, const float*, __nv_bfloat16*, int,
                                                               int, int);
