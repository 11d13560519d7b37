// Block-sparse (BSR) linear layer: Y[M,N] = X[M,K] @ W[N,K]^T + bias, W stored as BS x BS blocks.
//
// Techniques (learned from LPViT's block-pruned ViTs and PyTorch's Triton bsr_dense_mm, as described in the
// PyTorch blog "Speeding up ViTs using Block Sparsity"; own code):
// - One block per (block row of W, BM-row tile of X): it walks only that block row's stored blocks, so work
//   is proportional to the non-zeros; duplicates need no special case (they simply accumulate).
// - Each stored block is a dense BS x BS tensor-core tile: the X slice [BM, BS] it multiplies and the block
//   itself (rows = output features, k contiguous: directly the "col" B operand) are streamed through a
//   4-stage cp.async pipeline (zero-fill for rows >= M), read with conflict-free ldmatrix.x4 from
//   XOR-swizzled BS*2-byte rows, and fed to mma.sync m16n8k16 (fp16 -> fp32).
// - The bias is fused into the epilogue; empty block rows write the bias alone.
// Load balance: block rows hold uneven block counts; many small CTAs (N/BS x ceil(M/BM)) let the hardware
// scheduler even it out.
#include <cuda_fp16.h>

#define STAGES 4

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

__device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Shared rows are BS halves = CPR 16-byte chunks; chunk c of row r is stored at c ^ swz(r), which spreads
// the 8 rows an ldmatrix phase reads over all 32 banks.
template <int BS>
__device__ __forceinline__ int swz(int r, int c)
{
    constexpr int CPR = BS / 8;
    return c ^ ((r / (8 / CPR)) & (CPR - 1));
}

// Grid: x = N / BS (block rows), y = ceil(M / BM). BM/32 warps, each 32 rows x BS columns.
// Dynamic smem: STAGES * (BM + BS) * BS * 2 bytes.
template <int BS, int BM>
__global__ void __launch_bounds__(BM)
bsr_linear(const __half* __restrict__ X, const int* __restrict__ crow, const int* __restrict__ col,
           const __half* __restrict__ blocks, const __half* __restrict__ bias, __half* __restrict__ Y, int M, int K,
           int N)
{
    constexpr int THREADS = BM;
    constexpr int CPR = BS / 8;        // 16-byte chunks per shared row
    constexpr int X_U4 = BM * CPR, W_U4 = BS * CPR;
    constexpr int STAGE_U4 = X_U4 + W_U4;
    constexpr int MT = 2, NT = BS / 8;  // per warp: 32 rows (2 m16) x BS columns
    extern __shared__ uint4 smem[];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int br = blockIdx.x, m0 = blockIdx.y * BM;
    const int j0 = crow[br], nblk = crow[br + 1] - j0;

    auto load_stage = [&](int stage, int jj) {
        uint4* sX = smem + stage * STAGE_U4;
        uint4* sW = sX + X_U4;
        const int j = j0 + jj;
        const int k0 = __ldg(&col[j]) * BS;
#pragma unroll
        for (int i = tid; i < X_U4; i += THREADS) {
            const int r = i / CPR, c = i % CPR;
            const int m = m0 + r;
            const __half* src = X + (long long)(m < M ? m : M - 1) * K + k0 + c * 8;
            cp_async16(&sX[r * CPR + swz<BS>(r, c)], src, m < M ? 16 : 0);
        }
#pragma unroll
        for (int i = tid; i < W_U4; i += THREADS) {
            const int r = i / CPR, c = i % CPR;
            cp_async16(&sW[r * CPR + swz<BS>(r, c)], blocks + ((long long)j * BS + r) * BS + c * 8, 16);
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][n][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < nblk) load_stage(s, s);
        cp_async_commit();
    }

    for (int jj = 0; jj < nblk; ++jj) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage jj%STAGES is visible; stage (jj-1)%STAGES is no longer read
        {
            const int nx = jj + STAGES - 1;
            if (nx < nblk) load_stage(nx % STAGES, nx);
            cp_async_commit();
        }
        const uint4* sX = smem + (jj % STAGES) * STAGE_U4;
        const uint4* sW = sX + X_U4;
#pragma unroll
        for (int kk = 0; kk < BS / 16; ++kk) {
            unsigned a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = warp * 32 + i * 16 + (lane & 15);
                const int c = kk * 2 + (lane >> 4);
                ldmatrix_x4(a[i], &sX[r * CPR + swz<BS>(r, c)]);
            }
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                const int r = n * 8 + (lane & 7) + ((lane >> 4) << 3);
                const int c = kk * 2 + ((lane >> 3) & 1);
                unsigned q[4];
                ldmatrix_x4(q, &sW[r * CPR + swz<BS>(r, c)]);
                b[n][0] = q[0];
                b[n][1] = q[1];
                b[n + 1][0] = q[2];
                b[n + 1][1] = q[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int n = 0; n < NT; ++n) mma_f16(acc[i][n], a[i], b[n][0], b[n][1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const int colo = br * BS + n * 8 + 2 * t;
        const float2 bv = __half22float2(*reinterpret_cast<const __half2*>(&bias[colo]));
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + warp * 32 + i * 16 + g + 8 * h;
                if (row < M)
                    *reinterpret_cast<__half2*>(&Y[(long long)row * N + colo]) =
                        __floats2half2_rn(acc[i][n][2 * h] + bv.x, acc[i][n][2 * h + 1] + bv.y);
            }
        }
    }
}

template __global__ void bsr_linear<16, 64>(const __half*, const int*, const int*, const __half*, const __half*, __half*, int, int, int);
template __global__ void bsr_linear<16, 128>(const __half*, const int*, const int*, const __half*, const __half*, __half*, int, int, int);
template __global__ void bsr_linear<32, 64>(const __half*, const int*, const int*, const __half*, const __half*, __half*, int, int, int);
template __global__ void bsr_linear<32, 128>(const __half*, const int*, const int*, const __half*, const __half*, __half*, int, int, int);
