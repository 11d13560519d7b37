// W4A16 GEMM (MARLIN-style): C[M,N] = A[M,K] @ W[K,N], W[k,n] = (q[k,n] - 8) * scales[k/128, n].
//
// Techniques (learned from the MARLIN paper, Frantar et al. 2024, and IST-DASLab/marlin; own code):
// - Offline repack ([[prepare]], untimed): the GPTQ int32 words are rewritten so that one 32-bit word
//   holds exactly the eight 4-bit weights one lane needs for the two m16n8k16 B fragments of a 16x16
//   (k x n) weight tile; one 16-byte LDS then feeds four k16 steps of a warp's 16 output columns.
// - INT4 -> FP16 without conversions: mask a nibble into the mantissa of the fp16 constant 0x6400
//   (= 1024) and subtract 1032 (low nibble) or fma by 1/16 and add -72 (nibble shifted by 4).
// - 4-stage cp.async pipeline (A tile, weight tile, group scales) with zero-fill for rows >= M.
// - ldmatrix.x4 for A fragments from an XOR-swizzled tile (no bank conflicts), mma.sync m16n8k16
//   fp16 x fp16 -> fp32.
// - Split-K over grid.z so that skinny GEMMs (M = 1..16) fill all SMs; partial fp32 sums are reduced
//   by a second kernel (deterministic, no atomics) which converts to fp16.
#include <cuda_fp16.h>

#define BN 128          // output columns per block (8 warps x 16)
#define BK 128          // k per pipeline stage (= quantization group)
#define STAGES 4
#define THREADS 256

// ---------------------------------------------------------------------------------------------
// Repack (prepare): packed word index
//   idx = ((kt * (N/16) + ns) * 2 + kh) * 128 + lane * 4 + kq,   kk = kh*4 + kq (k16 step in tile kt)
// holds, for g = lane/4, t = lane%4, k0 = kt*128 + kk*16 + 2t, n0 = ns*16 + g:
//   nib0 W[k0][n0]   nib4 W[k0+1][n0]   nib1 W[k0+8][n0]   nib5 W[k0+9][n0]
//   nib2 W[k0][n0+8] nib6 W[k0+1][n0+8] nib3 W[k0+8][n0+8] nib7 W[k0+9][n0+8]
// so that lo(w), hi(w), lo(w>>8), hi(w>>8) are the B fragments b0/b1 of n-subtiles 0 and 1.
extern "C" __global__ void __launch_bounds__(256)
marlin_repack(const int* __restrict__ qweight, unsigned* __restrict__ qpacked, int K, int N)
{
    const long long total = (long long)K * N / 8;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int kq = (int)(idx & 3);
    const int lane = (int)((idx >> 2) & 31);
    const int kh = (int)((idx >> 7) & 1);
    const long long rest = idx >> 8;
    const int nstrips = N / 16;
    const int ns = (int)(rest % nstrips);
    const int kt = (int)(rest / nstrips);
    const int g = lane >> 2, t = lane & 3;
    const int k0 = kt * BK + (kh * 4 + kq) * 16 + 2 * t;
    const int n0 = ns * 16 + g;
    unsigned w = 0;
#pragma unroll
    for (int p = 0; p < 8; ++p) {
        const int k = k0 + ((p >> 2) & 1) + ((p & 1) ? 8 : 0);
        const int n = n0 + ((p & 2) ? 8 : 0);
        const unsigned word = (unsigned)qweight[(long long)(k >> 3) * N + n];
        w |= ((word >> (4 * (k & 7))) & 0xFu) << (4 * p);
    }
    qpacked[idx] = w;
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

__device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned h2_as_u32(__half2 h) { return *reinterpret_cast<unsigned*>(&h); }
__device__ __forceinline__ __half2 u32_as_h2(unsigned u) { return *reinterpret_cast<__half2*>(&u); }

// Four dequantized, scaled B-fragment registers from one packed word.
// out[0], out[1]: n-subtile 0 (b0, b1); out[2], out[3]: n-subtile 1.
__device__ __forceinline__ void dequant8(unsigned w, __half2 s0, __half2 s1, unsigned (&out)[4])
{
    const __half2 magic_lo = u32_as_h2(0x64086408u);  // 1032 = 1024 + 8 (zero point)
    const __half2 inv16 = u32_as_h2(0x2C002C00u);     // 1/16
    const __half2 bias_hi = u32_as_h2(0xD480D480u);   // -72 = -(1024/16 + 8)
    const unsigned lo0 = (w & 0x000F000Fu) | 0x64006400u;
    const unsigned hi0 = (w & 0x00F000F0u) | 0x64006400u;
    const unsigned w8 = w >> 8;
    const unsigned lo1 = (w8 & 0x000F000Fu) | 0x64006400u;
    const unsigned hi1 = (w8 & 0x00F000F0u) | 0x64006400u;
    out[0] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(lo0), magic_lo), s0));
    out[1] = h2_as_u32(__hmul2(__hfma2(u32_as_h2(hi0), inv16, bias_hi), s0));
    out[2] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(lo1), magic_lo), s1));
    out[3] = h2_as_u32(__hmul2(__hfma2(u32_as_h2(hi1), inv16, bias_hi), s1));
}

// Grid: x = m-block (MT*16 rows), y = n-block (128 columns), z = k-split. Dynamic smem:
// STAGES * (MT*4096 + 8192 + 256) bytes.
template <int MT>
__global__ void __launch_bounds__(THREADS)
marlin_gemm(const __half* __restrict__ A, const uint4* __restrict__ qpacked,
            const __half* __restrict__ scales, __half* __restrict__ C, float* __restrict__ partial,
            int M, int K, int N, int splits)
{
    extern __shared__ uint4 smem[];
    constexpr int A_U4 = MT * 16 * 16;  // MT*16 rows x 256 bytes
    constexpr int W_U4 = 512;           // 128 x 128 nibbles
    constexpr int S_U4 = 16;            // 128 fp16 scales
    constexpr int STAGE_U4 = A_U4 + W_U4 + S_U4;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int mb = blockIdx.x, nb = blockIdx.y, z = blockIdx.z;
    const int KT = K / BK;
    const int kt0 = (int)((long long)z * KT / splits);
    const int kt1 = (int)((long long)(z + 1) * KT / splits);
    const int ntiles = kt1 - kt0;
    const int row_base = mb * MT * 16;

    auto load_stage = [&](int stage, int kt) {
        uint4* sA = smem + stage * STAGE_U4;
        uint4* sW = sA + A_U4;
        uint4* sS = sW + W_U4;
#pragma unroll
        for (int i = tid; i < MT * 256; i += THREADS) {
            const int r = i >> 4, c = i & 15;
            const int m = row_base + r;
            const __half* src = A + (long long)(m < M ? m : M - 1) * K + kt * BK + c * 8;
            cp_async16(&sA[r * 16 + (c ^ (r & 7))], src, m < M ? 16 : 0);
        }
        const uint4* srcW = qpacked + ((long long)kt * (N / 16) + nb * 8) * 64;
        cp_async16(&sW[tid], srcW + tid, 16);
        cp_async16(&sW[tid + THREADS], srcW + tid + THREADS, 16);
        if (tid < S_U4) cp_async16(&sS[tid], scales + (long long)kt * N + nb * BN + tid * 8, 16);
    };

    float acc[MT][2][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) load_stage(s, kt0 + s);
        cp_async_commit();
    }

    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage it%STAGES is visible; stage (it-1)%STAGES is no longer read
        {
            const int nx = it + STAGES - 1;
            if (nx < ntiles) load_stage(nx % STAGES, kt0 + nx);
            cp_async_commit();
        }
        const uint4* sA = smem + (it % STAGES) * STAGE_U4;
        const uint4* sW = sA + A_U4;
        const __half* sS = reinterpret_cast<const __half*>(sW + W_U4);
        const __half2 s0 = __half2half2(sS[warp * 16 + g]);
        const __half2 s1 = __half2half2(sS[warp * 16 + 8 + g]);
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
            const uint4 wq = sW[warp * 64 + kh * 32 + lane];
            const unsigned wv[4] = {wq.x, wq.y, wq.z, wq.w};
#pragma unroll
            for (int kq = 0; kq < 4; ++kq) {
                const int kk = kh * 4 + kq;
                unsigned b[4];
                dequant8(wv[kq], s0, s1, b);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const int r = mt * 16 + (lane & 15);
                    const int c = kk * 2 + (lane >> 4);
                    unsigned a[4];
                    ldmatrix_x4(a, &sA[r * 16 + (c ^ (r & 7))]);
                    mma_f16(acc[mt][0], a, b[0], b[1]);
                    mma_f16(acc[mt][1], a, b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int col = nb * BN + warp * 16 + j * 8 + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = row_base + mt * 16 + g + h * 8;
                if (row >= M) continue;
                const float v0 = acc[mt][j][2 * h], v1 = acc[mt][j][2 * h + 1];
                if (splits == 1) {
                    *reinterpret_cast<__half2*>(&C[(long long)row * N + col]) = __floats2half2_rn(v0, v1);
                } else {
                    *reinterpret_cast<float2*>(&partial[((long long)z * M + row) * N + col]) =
                        make_float2(v0, v1);
                }
            }
        }
    }
}

template __global__ void marlin_gemm<1>(const __half*, const uint4*, const __half*, __half*, float*, int, int, int, int);
template __global__ void marlin_gemm<2>(const __half*, const uint4*, const __half*, __half*, float*, int, int, int, int);
template __global__ void marlin_gemm<3>(const __half*, const uint4*, const __half*, __half*, float*, int, int, int, int);
template __global__ void marlin_gemm<4>(const __half*, const uint4*, const __half*, __half*, float*, int, int, int, int);

// C = fp16(sum over splits of partial[s]); 4 outputs per thread, float4 loads (N % 128 == 0).
extern "C" __global__ void __launch_bounds__(256)
splitk_reduce(const float4* __restrict__ partial, __half* __restrict__ C, int M, int N, int splits)
{
    const long long n4 = (long long)M * N / 4;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 s = partial[i];
    for (int z = 1; z < splits; ++z) {
        const float4 p = partial[(long long)z * n4 + i];
        s.x += p.x; s.y += p.y; s.z += p.z; s.w += p.w;
    }
    const __half2 lo = __floats2half2_rn(s.x, s.y), hi = __floats2half2_rn(s.z, s.w);
    uint2 o;
    o.x = h2_as_u32(lo);
    o.y = h2_as_u32(hi);
    reinterpret_cast<uint2*>(C)[i] = o;
}
