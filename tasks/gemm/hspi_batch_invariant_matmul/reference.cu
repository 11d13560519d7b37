// Batch-invariant bf16 GEMM: Y[M,N] = X[M,K] @ W[N,K]^T, fp32 accumulation, bf16 out.
//
// Techniques (the batch-invariance rule from HSPI, Zhang et al. 2024, and thinking-machines-lab's
// batch_invariant_ops; the GEMM structure is the standard Ampere/Hopper mma.sync design; own code):
// - Batch invariance by construction: every output element is one fp32 accumulator fed by the same chain of
//   mma.sync m16n8k16 instructions over k = 0, 16, 32, ... in order, starting from zero, in every launch
//   configuration. No split-K, no atomics, no M-dependent reduction: the tile shape chosen from M (more
//   blocks for small M, bigger tiles for large M) changes only which thread computes an element, not how.
// - cp.async multi-stage pipeline (X and W tiles, zero-fill for rows >= M), XOR-swizzled 128-byte shared
//   rows, ldmatrix.x4 for both operands (W rows are the "col" B operand directly, no transpose).
#include <cuda_bf16.h>

#define BK 64

__device__ __forceinline__ unsigned smem_u32(const void* p)
{
    return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Block tile BM x BN, WM x WN warps (warp tile (BM/WM) x (BN/WN)), STAGES-deep pipeline of BK = 64.
// Grid: x = N / BN, y = ceil(M / BM). Dynamic smem: STAGES * (BM + BN) * 128 bytes.
template <int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM * WN * 32)
bi_gemm(const __nv_bfloat16* __restrict__ X, const __nv_bfloat16* __restrict__ W, __nv_bfloat16* __restrict__ Y,
        int M, int K, int N)
{
    constexpr int THREADS = WM * WN * 32;
    constexpr int TM = BM / WM, TN = BN / WN;  // warp tile
    constexpr int MT = TM / 16, NT = TN / 8;   // m16 and n8 tiles per warp
    static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
    constexpr int X_U4 = BM * 8, W_U4 = BN * 8;  // 128-byte rows of 64 bf16
    constexpr int STAGE_U4 = X_U4 + W_U4;
    extern __shared__ uint4 smem[];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KT = K / BK;

    auto load_stage = [&](int stage, int kt) {
        uint4* sX = smem + stage * STAGE_U4;
        uint4* sW = sX + X_U4;
#pragma unroll
        for (int i = tid; i < X_U4; i += THREADS) {
            const int r = i >> 3, c = i & 7;
            const int m = m0 + r;
            const __nv_bfloat16* src = X + (long long)(m < M ? m : M - 1) * K + kt * BK + c * 8;
            cp_async16(&sX[r * 8 + (c ^ (r & 7))], src, m < M ? 16 : 0);
        }
#pragma unroll
        for (int i = tid; i < W_U4; i += THREADS) {
            const int r = i >> 3, c = i & 7;
            cp_async16(&sW[r * 8 + (c ^ (r & 7))], W + (long long)(n0 + r) * K + kt * BK + c * 8, 16);
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage kt%STAGES is visible; stage (kt-1)%STAGES is no longer read
        {
            const int nx = kt + STAGES - 1;
            if (nx < KT) load_stage(nx % STAGES, nx);
            cp_async_commit();
        }
        const uint4* sX = smem + (kt % STAGES) * STAGE_U4;
        const uint4* sW = sX + X_U4;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = wm * TM + i * 16 + (lane & 15);
                const int c = kk * 2 + (lane >> 4);
                ldmatrix_x4(a[i], &sX[r * 8 + (c ^ (r & 7))]);
            }
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                // matrices: (n-tile j, k 0-7), (n-tile j, k 8-15), (n-tile j+1, k 0-7), (n-tile j+1, k 8-15)
                const int r = wn * TN + j * 8 + (lane & 7) + ((lane >> 4) << 3);
                const int c = kk * 2 + ((lane >> 3) & 1);
                unsigned q[4];
                ldmatrix_x4(q, &sW[r * 8 + (c ^ (r & 7))]);
                b[j][0] = q[0];
                b[j][1] = q[1];
                b[j + 1][0] = q[2];
                b[j + 1][1] = q[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_bf16(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int col = n0 + wn * TN + j * 8 + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm * TM + i * 16 + g + 8 * h;
                if (row < M)
                    *reinterpret_cast<__nv_bfloat162*>(&Y[(long long)row * N + col]) =
                        __floats2bfloat162_rn(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
            }
        }
    }
}

template __global__ void bi_gemm<16, 64, 1, 4, 4>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void bi_gemm<64, 64, 2, 2, 4>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void bi_gemm<128, 128, 2, 4, 3>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
