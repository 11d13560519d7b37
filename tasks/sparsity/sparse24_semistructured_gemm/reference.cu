// 2:4 sparse linear layer: Y[M,N] = GELU(X[M,K] @ W[N,K]^T + bias), W 2:4-sparse along K.
//
// Techniques (learned from GPUSQ-ViT, NVIDIA's 2:4 sparse tensor cores as documented in the PTX ISA
// (mma.sp, sparse matrix storage and metadata layout), CUTLASS's ampere sparse GEMM example and the
// PyTorch semi-structured sparsity kernels; own code):
// - The sparse weight is the A operand of mma.sp.m16n8k32 (computing Y^T tiles): the compressed values
//   [N, K/2] are already the hardware's compressed A layout and are loaded as-is with ldmatrix.x4;
//   X is the dense "col" B operand, loaded from row-major X with ldmatrix.x4 (no transpose).
// - Offline ([[prepare]], untimed): the per-group pattern indices are turned into 4-bit metadata nibbles
//   (p0 | p1 << 2) and packed into the per-thread metadata register layout of sparsity selector 0
//   (thread 4g + t, t < 2: rows g and g + 8 of the n16 tile, k16 half t of the k32 step).
// - Block tile 128 (n) x BM (m) x 64 (k), 8 warps as 2 (n) x 4 (m), 3-stage cp.async pipeline with
//   zero-fill for rows >= M; XOR-swizzled shared tiles make every ldmatrix conflict-free.
// - mma.sp::ordered_metadata (the PTX ISA advises it over plain mma.sp, which may be much slower on some
//   targets): it requires p0 < p1 in every group, which the pattern index guarantees.
// - Fused epilogue: bias + exact GELU in fp32, staged through shared memory for coalesced 16-byte stores.
#include <cuda_fp16.h>

#define BN 128      // weight rows (output columns) per block
#define BK 64       // logical k per stage (32 compressed values per row)
#define STAGES 3
#define THREADS 256
#define YS_STRIDE 136  // halves per staged output row (128 + 8 pad)

// ---------------------------------------------------------------------------------------------
// Metadata repack: word idx = (nt * (K/32) + ks) * 16 + 2g + t (g = 0..7, t = 0..1) holds, for the n16 tile
// nt and k32 step ks, the nibbles of row nt*16 + g (bits 0..15) and row nt*16 + g + 8 (bits 16..31) for the
// four groups ks*8 + 4t + j (nibble j), nibble = p0 | (p1 << 2).
extern "C" __global__ void __launch_bounds__(256)
sparse24_repack_meta(const unsigned char* __restrict__ meta, unsigned* __restrict__ emeta, int K, int N)
{
    const long long total = (long long)(N / 16) * (K / 32) * 16;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int q = (int)(idx & 15), g = q >> 1, t = q & 1;
    const long long rest = idx >> 4;
    const int ksteps = K / 32;
    const int ks = (int)(rest % ksteps);
    const int nt = (int)(rest / ksteps);
    // pattern index -> nibble p0 | p1 << 2 for (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    const unsigned nib_of[6] = {0x4u, 0x8u, 0xCu, 0x9u, 0xDu, 0xEu};
    unsigned w = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const long long row = (long long)nt * 16 + g + 8 * h;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned p = meta[row * (K / 4) + ks * 8 + t * 4 + j];
            w |= nib_of[p] << (16 * h + 4 * j);
        }
    }
    emeta[idx] = w;
}

// ---------------------------------------------------------------------------------------------
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

// D(16x8) += A(16x32, 2:4 sparse, compressed 16x16) * B(32x8); metadata from threads t = 0, 1 of each quad.
__device__ __forceinline__ void mma_sp(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[4], unsigned e)
{
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
                   "r"(e));
}

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

// Grid: x = N/128 (weight-row blocks), y = ceil(M/BM). Dynamic smem: STAGES * (512 + 64 + BM*8) * 16 bytes.
template <int BM>
__global__ void __launch_bounds__(THREADS)
sparse24_gemm(const __half* __restrict__ X, const __half* __restrict__ vals, const unsigned* __restrict__ emeta,
              const __half* __restrict__ bias, __half* __restrict__ Y, int M, int K, int N)
{
    extern __shared__ uint4 smem[];
    constexpr int W_U4 = BN * 4;     // 128 rows x 32 compressed halves
    constexpr int E_U4 = 64;         // 8 n16 tiles x 2 k32 steps x 16 words
    constexpr int X_U4 = BM * 8;     // BM rows x 64 halves
    constexpr int STAGE_U4 = W_U4 + E_U4 + X_U4;
    constexpr int WM = BM / 4;       // m extent of one warp
    constexpr int MJ = WM / 8;       // m8 tiles per warp
    static_assert(STAGES * STAGE_U4 * 16 >= BM * YS_STRIDE * 2, "output staging must fit");

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wn = warp >> 2, wm = warp & 3;
    const int nb = blockIdx.x, mb = blockIdx.y;
    const int KT = K / BK;
    const int ksteps = K / 32;

    auto load_stage = [&](int stage, int kt) {
        uint4* sW = smem + stage * STAGE_U4;
        uint4* sE = sW + W_U4;
        uint4* sX = sE + E_U4;
#pragma unroll
        for (int i = tid; i < W_U4; i += THREADS) {
            const int r = i >> 2, c = i & 3;
            const __half* src = vals + (long long)(nb * BN + r) * (K / 2) + kt * 32 + c * 8;
            cp_async16(&sW[r * 4 + (c ^ ((r >> 1) & 3))], src, 16);
        }
        if (tid < E_U4) {
            const int nt = tid >> 3, q = tid & 7;
            const unsigned* src = emeta + ((long long)(nb * 8 + nt) * ksteps + kt * 2) * 16 + q * 4;
            cp_async16(&sE[tid], src, 16);
        }
#pragma unroll
        for (int i = tid; i < X_U4; i += THREADS) {
            const int r = i >> 3, c = i & 7;
            const int m = mb * BM + r;
            const __half* src = X + (long long)(m < M ? m : M - 1) * K + kt * BK + c * 8;
            cp_async16(&sX[r * 8 + (c ^ (r & 7))], src, m < M ? 16 : 0);
        }
    };

    float acc[4][MJ][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < MJ; ++j)
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
        const uint4* sW = smem + (kt % STAGES) * STAGE_U4;
        const unsigned* sE = reinterpret_cast<const unsigned*>(sW + W_U4);
        const uint4* sX = sW + W_U4 + E_U4;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            unsigned a[4][4], e[4], b[MJ][4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = wn * 64 + i * 16 + (lane & 15);
                const int c = ks * 2 + (lane >> 4);
                ldmatrix_x4(a[i], &sW[r * 4 + (c ^ ((r >> 1) & 3))]);
                e[i] = sE[(wn * 4 + i) * 32 + ks * 16 + g * 2 + (t & 1)];
            }
#pragma unroll
            for (int j = 0; j < MJ; ++j) {
                const int r = wm * WM + j * 8 + (lane & 7);
                const int c = ks * 4 + (lane >> 3);
                ldmatrix_x4(b[j], &sX[r * 8 + (c ^ (r & 7))]);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < MJ; ++j) mma_sp(acc[i][j], a[i], b[j], e[i]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // all warps are done with the pipeline buffers: reuse them for the output tile

    __half* sY = reinterpret_cast<__half*>(smem);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int nl = wn * 64 + i * 16 + g + 8 * h;
            const float bv = __half2float(bias[nb * BN + nl]);
#pragma unroll
            for (int j = 0; j < MJ; ++j) {
                const int ml = wm * WM + j * 8 + 2 * t;
                sY[ml * YS_STRIDE + nl] = __float2half(gelu_erf(acc[i][j][2 * h] + bv));
                sY[(ml + 1) * YS_STRIDE + nl] = __float2half(gelu_erf(acc[i][j][2 * h + 1] + bv));
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = tid; i < BM * 16; i += THREADS) {
        const int r = i >> 4, c = i & 15;
        const int m = mb * BM + r;
        if (m < M)
            *reinterpret_cast<uint4*>(&Y[(long long)m * N + nb * BN + c * 8]) =
                *reinterpret_cast<const uint4*>(&sY[r * YS_STRIDE + c * 8]);
    }
}

template __global__ void sparse24_gemm<64>(const __half*, const __half*, const unsigned*, const __half*, __half*, int, int, int);
template __global__ void sparse24_gemm<128>(const __half*, const __half*, const unsigned*, const __half*, __half*, int, int, int);
