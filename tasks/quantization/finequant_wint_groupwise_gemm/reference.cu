// Weight-only INT8 / INT4 GEMM with group-wise scales (FineQuant): C[M,N] = A[M,K] @ (q[K,N] * s[k/G, n]).
//
// Techniques (learned from FineQuant, Kim et al. 2023, the fpA_intB GEMM kernels of NVIDIA/TensorRT-LLM and
// the MARLIN paper; own code):
// - Offline repack ([[prepare]], untimed) of the weights into per-lane mma.sync fragment order: for every
//   64-row k-tile and 16-column warp strip, a lane's weights for the four k16 steps are BITS consecutive
//   32-bit words (one 16-byte LDS for int4, two conflict-free 16-byte LDS for int8), stored as offset
//   (unsigned) codes.
// - Integer -> fp16 without conversion instructions ("magic number" bias trick): the code is placed into the
//   mantissa of 1024.0 (0x6400) with a byte permute (int8) or a mask (int4) and the bias is subtracted
//   with one HSUB2 / HFMA2; the group scale is applied in fp16 before the MMA (fine-grained scales are
//   applied per 64-row k-tile inside the main loop, never after the accumulation).
// - 4-stage cp.async pipeline (A tile, weight tile, the k-tile's 128 group scales) with zero-fill for rows
//   >= M; ldmatrix.x4 A fragments from an XOR-swizzled tile (no bank conflicts); mma.sync m16n8k16
//   fp16 x fp16 -> fp32.
// - Split-K over grid.z so that skinny GEMMs (decode) fill all SMs; fp32 partials are reduced by a second
//   kernel in a fixed order (deterministic, no atomics).
#include <cuda_fp16.h>

#define BN 128          // output columns per block (8 warps x 16)
#define BK 64           // k per pipeline stage (G is a multiple of 64, so one scale row per stage)
#define STAGES 4
#define THREADS 256

// ---------------------------------------------------------------------------------------------
// Packed layout (both widths): uint4 index ((kt * (N/16) + ns) * (BITS/4) + q) * 32 + lane, 32-bit word jj
// of it is lane word j = 4q + jj, for k-tile kt (64 rows), 16-column strip ns, g = lane/4, t = lane%4,
// k0(kq) = kt*64 + kq*16 + 2t, n0 = ns*16 + g.
//   BITS = 4: word j = kq holds the offset codes (q + 8) of
//     nib0 W[k0][n0]   nib4 W[k0+1][n0]   nib1 W[k0+8][n0]   nib5 W[k0+9][n0]
//     nib2 W[k0][n0+8] nib6 W[k0+1][n0+8] nib3 W[k0+8][n0+8] nib7 W[k0+9][n0+8]
//   BITS = 8: word j = 2*kq + sub holds the offset codes (q + 128) of
//     byte0 W[k0][n]   byte1 W[k0+1][n]   byte2 W[k0+8][n]   byte3 W[k0+9][n],   n = n0 + 8*sub.
extern "C" __global__ void __launch_bounds__(256)
finequant_repack_int4(const unsigned char* __restrict__ Wq, unsigned* __restrict__ wp, int K, int N)
{
    const long long total = (long long)K * N / 8;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int kq = (int)(idx & 3);
    const int lane = (int)((idx >> 2) & 31);
    const long long rest = idx >> 7;
    const int nstrips = N / 16;
    const int ns = (int)(rest % nstrips);
    const int kt = (int)(rest / nstrips);
    const int g = lane >> 2, t = lane & 3;
    const int k0 = kt * BK + kq * 16 + 2 * t;
    const int n0 = ns * 16 + g;
    unsigned w = 0;
#pragma unroll
    for (int p = 0; p < 8; ++p) {
        const int k = k0 + ((p >> 2) & 1) + ((p & 1) ? 8 : 0);
        const int n = n0 + ((p & 2) ? 8 : 0);
        const unsigned byte = Wq[(long long)k * (N / 2) + (n >> 1)];
        const unsigned code = ((byte >> (4 * (n & 1))) & 0xFu) ^ 0x8u;  // signed nibble -> q + 8
        w |= code << (4 * p);
    }
    wp[idx] = w;
}

extern "C" __global__ void __launch_bounds__(256)
finequant_repack_int8(const unsigned char* __restrict__ Wq, unsigned* __restrict__ wp, int K, int N)
{
    const long long total = (long long)K * N / 4;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int jj = (int)(idx & 3);
    const int lane = (int)((idx >> 2) & 31);
    const int q = (int)((idx >> 7) & 1);
    const long long rest = idx >> 8;
    const int nstrips = N / 16;
    const int ns = (int)(rest % nstrips);
    const int kt = (int)(rest / nstrips);
    const int j = 4 * q + jj, kq = j >> 1, sub = j & 1;
    const int g = lane >> 2, t = lane & 3;
    const int k0 = kt * BK + kq * 16 + 2 * t;
    const int n = ns * 16 + g + 8 * sub;
    unsigned w = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int k = k0 + (i & 1) + ((i & 2) ? 8 : 0);
        const unsigned code = (unsigned)Wq[(long long)k * N + n] ^ 0x80u;  // int8 -> q + 128
        w |= code << (8 * i);
    }
    wp[idx] = w;
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

// B fragments (b0, b1 of n-subtile 0, then of n-subtile 1) of one k16 step, dequantized and scaled.
// int4: one word holds all eight codes.
__device__ __forceinline__ void dequant_int4(unsigned w, __half2 s0, __half2 s1, unsigned (&out)[4])
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

// int8: word w0 (n-subtile 0) and w1 (n-subtile 1), each four codes (k0, k0+1, k0+8, k0+9).
__device__ __forceinline__ void dequant_int8(unsigned w0, unsigned w1, __half2 s0, __half2 s1, unsigned (&out)[4])
{
    const __half2 magic = u32_as_h2(0x64806480u);  // 1152 = 1024 + 128 (zero point)
    // __byte_perm picks [code, 0x64, code, 0x64]: the fp16 pair (1024 + code_a, 1024 + code_b).
    out[0] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(__byte_perm(w0, 0x64646464u, 0x4140)), magic), s0));
    out[1] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(__byte_perm(w0, 0x64646464u, 0x4342)), magic), s0));
    out[2] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(__byte_perm(w1, 0x64646464u, 0x4140)), magic), s1));
    out[3] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(__byte_perm(w1, 0x64646464u, 0x4342)), magic), s1));
}

// Grid: x = m-block (MT*16 rows), y = n-block (128 columns), z = k-split. Dynamic smem:
// STAGES * (MT*128 + 64*BITS + 16) * 16 bytes.
template <int MT, int BITS>
__global__ void __launch_bounds__(THREADS)
finequant_gemm(const __half* __restrict__ A, const uint4* __restrict__ wp, const __half* __restrict__ scales,
               __half* __restrict__ C, float* __restrict__ partial, int M, int K, int N, int G, int splits)
{
    extern __shared__ uint4 smem[];
    constexpr int A_U4 = MT * 16 * 8;      // MT*16 rows x 128 bytes
    constexpr int W_U4 = THREADS * BITS / 4;  // 64 x 128 weights of BITS bits
    constexpr int S_U4 = 16;               // 128 fp16 scales
    constexpr int STAGE_U4 = A_U4 + W_U4 + S_U4;
    constexpr int Q = BITS / 4;            // uint4 per lane per k-tile

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2;
    const int t = lane & 3;
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
        for (int i = tid; i < A_U4; i += THREADS) {
            const int r = i >> 3, c = i & 7;
            const int m = row_base + r;
            const __half* src = A + (long long)(m < M ? m : M - 1) * K + kt * BK + c * 8;
            cp_async16(&sA[r * 8 + (c ^ (r & 7))], src, m < M ? 16 : 0);
        }
        const uint4* srcW = wp + ((long long)kt * (N / 16) + nb * 8) * Q * 32;
#pragma unroll
        for (int i = tid; i < W_U4; i += THREADS) cp_async16(&sW[i], srcW + i, 16);
        if (tid < S_U4)
            cp_async16(&sS[tid], scales + (long long)(kt * BK / G) * N + nb * BN + tid * 8, 16);
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
        unsigned wv[BITS];
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            const uint4 u = sW[(warp * Q + q) * 32 + lane];
            wv[4 * q + 0] = u.x;
            wv[4 * q + 1] = u.y;
            wv[4 * q + 2] = u.z;
            wv[4 * q + 3] = u.w;
        }
#pragma unroll
        for (int kq = 0; kq < 4; ++kq) {
            unsigned b[4];
            if constexpr (BITS == 4)
                dequant_int4(wv[kq], s0, s1, b);
            else
                dequant_int8(wv[2 * kq], wv[2 * kq + 1], s0, s1, b);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r = mt * 16 + (lane & 15);
                const int c = kq * 2 + (lane >> 4);
                unsigned a[4];
                ldmatrix_x4(a, &sA[r * 8 + (c ^ (r & 7))]);
                mma_f16(acc[mt][0], a, b[0], b[1]);
                mma_f16(acc[mt][1], a, b[2], b[3]);
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

#define INST(MT, BITS)                                                                                 \
    template __global__ void finequant_gemm<MT, BITS>(const __half*, const uint4*, const __half*, __half*, \
                                                      float*, int, int, int, int, int);
INST(1, 4)
INST(2, 4)
INST(3, 4)
INST(4, 4)
INST(1, 8)
INST(2, 8)
INST(3, 8)
INST(4, 8)

// C = fp16(sum over splits of partial[s]); 4 outputs per thread, float4 loads (N % 128 == 0).
extern "C" __global__ void __launch_bounds__(256)
finequant_splitk_reduce(const float4* __restrict__ partial, __half* __restrict__ C, int M, int N, int splits)
{
    const long long n4 = (long long)M * N / 4;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 s = partial[i];
    for (int z = 1; z < splits; ++z) {
        const float4 p = partial[(long long)z * n4 + i];
        s.x += p.x;
        s.y += p.y;
        s.z += p.z;
        s.w += p.w;
    }
    uint2 o;
    o.x = h2_as_u32(__floats2half2_rn(s.x, s.y));
    o.y = h2_as_u32(__floats2half2_rn(s.z, s.w));
    reinterpret_cast<uint2*>(C)[i] = o;
}
