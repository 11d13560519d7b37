// C[M, N] = A[M, K] * B[K, N], bf16 in and out, fp32 accumulation, all row-major.
//
// Techniques (the Ampere-style tensor-core GEMM recipe described in NVIDIA's CUTLASS documentation
// ("Efficient GEMM in CUDA"), the PTX ISA manual (mma.sync m16n8k16, ldmatrix, cp.async) and the
// FlashAttention-2 / HipKittens tile discussions; code written from scratch):
//  - block tile BM x BN x 32, warp tile WM x WN, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32;
//  - STAGES-deep cp.async.cg (16-byte, L2-only) multi-stage pipeline with zero-fill for out-of-range
//    chunks (src-size 0), one commit group per k-tile and cp.async.wait_group STAGES-2;
//  - ldmatrix.x4 for A fragments and ldmatrix.x4.trans for B fragments straight from the row-major
//    [k][n] B tile (no transpose pass);
//  - XOR-swizzled shared memory: A rows are 64 bytes (4 chunks), chunk ^= (row >> 1) & 3; B is stored
//    as BN/64 column blocks of 32 k-rows x 64 n (128-byte rows), chunk ^= k & 7. Both make every
//    ldmatrix phase and every cp.async store bank-conflict free, and both are wgmma's canonical
//    layouts (A: K-major 64-byte swizzle; B: N-major 128-byte swizzle, Swizzle<3,4,3> on the byte
//    address), so one pipeline feeds either main loop;
//  - on Hopper (sm_90a, which the harness compiles for on an H100) the 128x128 tile is two
//    warpgroups, each issuing wgmma.m64n128k16 (B transposed: N-major) from smem descriptors
//    (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"; the Hopper recipe of
//    CUTLASS 3 / "Dissecting the NVIDIA Hopper Architecture"), with one group of wgmmas kept in
//    flight across the barrier (wait_group 1; the prefetch distance is one tile shorter so the
//    stage being refilled is always retired). cp.async writes through the generic proxy, wgmma
//    reads through the async one: fence.proxy.async before the barrier that publishes a stage;
//  - grouped block rasterization (GROUP_M tiles of M share an N sweep) for L2 reuse of B;
//  - tails: rows >= M, columns >= N and k >= K are zero-filled in shared memory and never stored.
//    16-byte copies need K % 8 == 0 and N % 8 == 0 (row starts 16-byte aligned); otherwise the
//    ALIGNED=false instantiation loads element by element (same pipeline, synchronous fills).
//  - Launch plan: a 128x128 tile (8 warps of 64x32) for M > 32; a 32x128 tile (4 warps of 32x32,
//    deeper pipeline) for skinny M, where the kernel streams B and is memory-bound.
#include <cuda_bf16.h>

#define GEMM_BK 32
#define GROUP_M 8

// The wgmma main loop wherever the target has it (the 128x128 tile). Defining
// GEMM_BF16_FORCE_MMA_SYNC keeps mma.sync, for the side-by-side timing of the two
// (scripts/gpu-check.sh, step mainloops).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) && !defined(GEMM_BF16_FORCE_MMA_SYNC)
#define GEMM_BF16_WGMMA 1
#else
#define GEMM_BF16_WGMMA 0
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

static __device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3,
                                                         unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
static __device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Byte offset of the 16-byte chunk (row, chunk) inside an A stage (rows of 32 bf16 = 4 chunks).
static __device__ __forceinline__ unsigned a_off(int row, int chunk) {
    return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}
// Byte offset of the 16-byte chunk (k, chunk) inside a B stage: column block chunk / 8 (64 n) of
// GEMM_BK rows of 128 bytes, chunk % 8 swizzled with k % 8.
template <int BN>
static __device__ __forceinline__ unsigned b_off(int k, int chunk) {
    return (unsigned)((chunk >> 3) * (GEMM_BK * 128) + k * 128 + (((chunk & 7) ^ (k & 7)) << 4));
}

// Packs 8 bf16 loaded element-wise (bounds-checked) into one 16-byte chunk.
static __device__ __forceinline__ uint4 load8_checked(const unsigned short* p, int valid) {
    unsigned short e[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = i < valid ? p[i] : (unsigned short)0;
    uint4 r;
    r.x = e[0] | ((unsigned)e[1] << 16);
    r.y = e[2] | ((unsigned)e[3] << 16);
    r.z = e[4] | ((unsigned)e[5] << 16);
    r.w = e[6] | ((unsigned)e[7] << 16);
    return r;
}

// Loads k-tile kt into pipeline stage kt % STAGES of the shared memory at smem: STAGES A tiles
// (BM x GEMM_BK bf16), then STAGES B tiles (GEMM_BK x BN bf16).
template <int BM, int BN, int THREADS, int STAGES, bool ALIGNED>
static __device__ __forceinline__ void load_tile(unsigned char* smem, const __nv_bfloat16* A,
                                                 const __nv_bfloat16* B, int M, int N, int K, int bm, int bn,
                                                 int kt, int tid) {
    unsigned char* sA = smem + (kt % STAGES) * (BM * GEMM_BK * 2);
    unsigned char* sB = smem + STAGES * (BM * GEMM_BK * 2) + (kt % STAGES) * (GEMM_BK * BN * 2);
    const int k0 = kt * GEMM_BK;
    constexpr int A_CHUNKS = BM * GEMM_BK / 8;
    constexpr int B_ROW_CHUNKS = BN / 8;
    constexpr int B_CHUNKS = GEMM_BK * B_ROW_CHUNKS;
    static_assert(A_CHUNKS % THREADS == 0 && B_CHUNKS % THREADS == 0, "tile chunks must split evenly");
#pragma unroll
    for (int it = 0; it < A_CHUNKS / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 2, c = i & 3;
        const int gm = bm + r, gk = k0 + c * 8;
        if (ALIGNED) {
            const bool ok = gm < M && gk < K;
            const __nv_bfloat16* src = ok ? A + (size_t)gm * K + gk : A;
            cp_async16(smem_addr(sA + a_off(r, c)), src, ok ? 16 : 0);
        } else {
            const int valid = gm < M ? min(8, K - gk) : 0;
            const unsigned short* src = reinterpret_cast<const unsigned short*>(A) + (valid > 0 ? (size_t)gm * K + gk : 0);
            *reinterpret_cast<uint4*>(sA + a_off(r, c)) = load8_checked(src, valid);
        }
    }
#pragma unroll
    for (int it = 0; it < B_CHUNKS / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int k = i / B_ROW_CHUNKS, c = i % B_ROW_CHUNKS;
        const int gk = k0 + k, gn = bn + c * 8;
        if (ALIGNED) {
            const bool ok = gk < K && gn < N;
            const __nv_bfloat16* src = ok ? B + (size_t)gk * N + gn : B;
            cp_async16(smem_addr(sB + b_off<BN>(k, c)), src, ok ? 16 : 0);
        } else {
            const int valid = gk < K ? min(8, N - gn) : 0;
            const unsigned short* src = reinterpret_cast<const unsigned short*>(B) + (valid > 0 ? (size_t)gk * N + gn : 0);
            *reinterpret_cast<uint4*>(sB + b_off<BN>(k, c)) = load8_checked(src, valid);
        }
    }
}

static __device__ __forceinline__ void store2(__nv_bfloat16* C, int M, int N, int r, int c, float x, float y) {
    if (r >= M) return;
    __nv_bfloat16* p = C + (size_t)r * N + c;
    if ((N & 1) == 0 && c + 1 < N) {
        // N even and c even: the pair is 4-byte aligned.
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
    } else {
        if (c < N) p[0] = __float2bfloat16_rn(x);
        if (c + 1 < N) p[1] = __float2bfloat16_rn(y);
    }
}

#if GEMM_BF16_WGMMA
// D[64 x 128] += A[64 x 16] . B[16 x 128] for the warpgroup: A K-major, B N-major (imm-trans-b 1),
// both from shared memory through descriptors.
static __device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], unsigned long long da,
                                                             unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, 1, 1, 1, 0, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db));
}
static __device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// This thread's generic-proxy smem writes (cp.async, st.shared) become visible to async-proxy
// reads (wgmma) once a barrier follows.
static __device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory matrix descriptor (PTX ISA 9.7.15.5.1.2.2): start address, leading and stride
// byte offsets, swizzle mode (1: 128B, 2: 64B), each offset encoded >> 4.
static __device__ __forceinline__ unsigned long long smem_desc(unsigned addr, unsigned lbo, unsigned sbo,
                                                               unsigned mode) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | ((unsigned long long)mode << 62);
}

// The sm_90a main loop of the BM x 128 tile: warpgroup g computes rows 64g..64g+63.
template <int BM, int BN, int STAGES, bool ALIGNED>
static __device__ __forceinline__ void tile_wgmma(const __nv_bfloat16* __restrict__ A,
                                                  const __nv_bfloat16* __restrict__ B, __nv_bfloat16* __restrict__ C,
                                                  int M, int N, int K, unsigned char* smem, int bm, int bn, int tid) {
    constexpr int THREADS = BM / 64 * 128;
    constexpr int A_STAGE = BM * GEMM_BK * 2;
    constexpr int B_STAGE = GEMM_BK * BN * 2;
    static_assert(BM % 64 == 0 && BN == 128 && STAGES >= 3, "one m64n128 wgmma per warpgroup and k16 step");
    const int wg = tid >> 7;
    const int lane = tid & 31;
    const int row0 = wg * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2);  // and row0 + 8
    const int KT = (K + GEMM_BK - 1) / GEMM_BK;

    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

    // Prefetch distance STAGES - 2: the stage refilled at step kt last held tile kt - 2, whose
    // wgmmas every warpgroup retired (wait_group 1 at step kt - 1) before this step's barrier.
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < KT)
            load_tile<BM, BN, THREADS, STAGES, ALIGNED>(smem, A, B, M, N, K, bm, bn, s, tid);
        cp_async_commit();
    }

    // A do-while: K >= 1 (task constraint), and a loop the compiler thinks may run zero times
    // gives it a path that zeroes acc with plain moves and joins the open wgmma group below,
    // so ptxas serializes every wgmma (C7515).
    int kt = 0;
    do {
        cp_async_wait<STAGES - 3>();
        fence_proxy_async();
        __syncthreads();

        const int pf = kt + STAGES - 2;
        if (pf < KT) load_tile<BM, BN, THREADS, STAGES, ALIGNED>(smem, A, B, M, N, K, bm, bn, pf, tid);
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem_addr(smem + cs * A_STAGE) + wg * 64 * (GEMM_BK * 2);
        const unsigned sB = smem_addr(smem + STAGES * A_STAGE + cs * B_STAGE);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < GEMM_BK / 16; ++ks) {
            // A: K-major, 64-byte swizzle, 8-row groups 512 bytes apart; the k16 slice is 32 bytes
            // into each row. B: N-major, 128-byte swizzle, 64-column blocks GEMM_BK * 128 bytes
            // apart (leading), 8-row k groups 1024 bytes apart (stride); the k16 slice is 16 rows.
            wgmma_m64n128k16_bf16(acc, smem_desc(sA + ks * 32, 16, 512, 2),
                                  smem_desc(sB + ks * 16 * 128, GEMM_BK * 128, 1024, 1));
        }
        wgmma_commit();
        wgmma_wait<1>();
    } while (++kt < KT);
    wgmma_wait<0>();
    cp_async_wait<0>();

    // Accumulator fragment (PTX ISA, wgmma D for m64nN, f32): acc[4j + e] is row row0 (e < 2)
    // or row0 + 8, column 8j + 2 * (lane % 4) + (e & 1).
    const int r = bm + row0;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        const int c = bn + j * 8 + (lane & 3) * 2;
        store2(C, M, N, r, c, acc[4 * j], acc[4 * j + 1]);
        store2(C, M, N, r + 8, c, acc[4 * j + 2], acc[4 * j + 3]);
    }
}
#endif

template <int BM, int BN, int WM, int WN, int STAGES, bool ALIGNED>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
gemm_bf16(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B, __nv_bfloat16* __restrict__ C,
          int M, int N, int K) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NI = WN / 8;
    constexpr int A_STAGE = BM * GEMM_BK * 2;
    constexpr int B_STAGE = GEMM_BK * BN * 2;
    static_assert(WM % 16 == 0 && WN % 16 == 0 && BN >= 64 && BN % 64 == 0, "tile shape");
    static_assert(STAGES >= 2, "pipeline depth");

    // wgmma's swizzle acts on absolute address bits: stages start on 1024-byte boundaries.
    extern __shared__ __align__(1024) uint4 smem_u4[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(smem_u4);

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WARPS_N;
    const int wn = warp % WARPS_N;

    // Grouped rasterization: GROUP_M consecutive M tiles sweep N together.
    const int tiles_m = (M + BM - 1) / BM;
    const int tiles_n = (N + BN - 1) / BN;
    const int pid = blockIdx.x;
    const int per_group = GROUP_M * tiles_n;
    const int group = pid / per_group;
    const int first_m = group * GROUP_M;
    const int group_rows = min(tiles_m - first_m, GROUP_M);
    const int in_group = pid - group * per_group;
    const int bm = (first_m + in_group % group_rows) * BM;
    const int bn = (in_group / group_rows) * BN;

#if GEMM_BF16_WGMMA
    if constexpr (BM % 64 == 0 && THREADS == BM / 64 * 128 && BN == 128) {
        tile_wgmma<BM, BN, STAGES, ALIGNED>(A, B, C, M, N, K, smem, bm, bn, tid);
        return;
    }
#endif

    const int KT = (K + GEMM_BK - 1) / GEMM_BK;

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
            load_tile<BM, BN, THREADS, STAGES, ALIGNED>(smem, A, B, M, N, K, bm, bn, s, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; everyone is done reading tile kt-1's stage

        const int pf = kt + STAGES - 1;
        if (pf < KT) load_tile<BM, BN, THREADS, STAGES, ALIGNED>(smem, A, B, M, N, K, bm, bn, pf, tid);
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem_addr(smem + cs * A_STAGE);
        const unsigned sB = smem_addr(smem + STAGES * A_STAGE + cs * B_STAGE);
#pragma unroll
        for (int ks = 0; ks < GEMM_BK / 16; ++ks) {
            unsigned af[MI][4];
            unsigned bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int row = wm * WM + mi * 16 + (lane & 15);
                ldmatrix_x4(af[mi], sA + a_off(row, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                const int k = ks * 16 + (lane & 15);
                const int chunk = (wn * WN + nj * 16) / 8 + (lane >> 4);
                ldmatrix_x4_trans(bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0], bf[2 * nj + 1][1],
                                  sB + b_off<BN>(k, chunk));
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) mma_bf16(acc[mi][ni], af[mi], bf[ni]);
        }
    }
    cp_async_wait<0>();  // drain the (empty) trailing groups before exit

#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int r = bm + wm * WM + mi * 16 + (lane >> 2);
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int c = bn + wn * WN + ni * 8 + (lane & 3) * 2;
            store2(C, M, N, r, c, acc[mi][ni][0], acc[mi][ni][1]);
            store2(C, M, N, r + 8, c, acc[mi][ni][2], acc[mi][ni][3]);
        }
    }
}

template __global__ void gemm_bf16<128, 128, 64, 32, 4, true>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                              __nv_bfloat16*, int, int, int);
template __global__ void gemm_bf16<128, 128, 64, 32, 4, false>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                               __nv_bfloat16*, int, int, int);
template __global__ void gemm_bf16<32, 128, 32, 32, 6, true>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                             __nv_bfloat16*, int, int, int);
template __global__ void gemm_bf16<32, 128, 32, 32, 6, false>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                              __nv_bfloat16*, int, int, int);
