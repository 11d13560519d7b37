// Arbitrary-bit-width weight GEMM (Tilus-style): C[M,N] = A[M,K] @ (q[K,N] * s[k/128, n]), q signed BITS-bit.
//
// Techniques (learned from the Tilus paper, Ding et al. 2025, and NVIDIA/tilus matmul_a16wx.py, plus the
// MARLIN design; own code):
// - Offline re-layout ([[prepare]], untimed) from the row-major bitstream into per-lane bit strings: for every
//   128-row k-tile and 16-column warp strip, the 64 weights one lane feeds into mma.sync (8 k16 steps x the
//   b0/b1 fragments of two n8 subtiles) become one contiguous 64*BITS-bit string = BITS 8-byte words, stored
//   [word][lane] so that each 8-byte shared load of a warp is conflict-free. Codes are stored offset
//   (q + 2^(BITS-1)), so the fields are unsigned.
// - In registers, BITS is a template constant: after unrolling, every field's word index and shift are
//   compile-time constants (a funnel shift where a field straddles two 32-bit words), two fields are ORed
//   into the mantissas of an fp16 pair of 1024.0 and one HSUB2 removes 1024 + 2^(BITS-1); the k-tile's group
//   scale is applied with one HMUL2 per fragment register.
// - 3-stage cp.async pipeline (A tile, weight strings, 128 scales), XOR-swizzled A tile read with
//   ldmatrix.x4, mma.sync m16n8k16 fp16 -> fp32, split-K over grid.z for skinny M with a deterministic
//   fixed-order reduction kernel.
#include <cuda_fp16.h>

#define BN 128
#define BK 128
#define STAGES 3
#define THREADS 256

// ---------------------------------------------------------------------------------------------
// Lane string of (k-tile kt, strip ns, lane): weight p = 8*kq + 2*f + h (kq = k16 step 0..7, f = fragment
// register 0..3 = 2*sub + bi, h = half) is W[k][n] with g = lane/4, t = lane%4,
//   k = kt*128 + kq*16 + 2t + 8*bi + h,  n = ns*16 + 8*sub + g,
// at bits p*BITS .. p*BITS+BITS-1 of the string. String word j (0 .. 2*BITS-1) is stored at uint2 index
// ((kt*(N/16) + ns)*BITS + j/2)*32 + lane, half j%2.
template <int BITS>
__global__ void __launch_bounds__(256)
tilus_repack(const unsigned char* __restrict__ Wq, unsigned* __restrict__ wp, int K, int N)
{
    constexpr unsigned MASK = (1u << BITS) - 1u;
    const long long total = (long long)(K / BK) * (N / 16) * 32;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int lane = (int)(idx & 31);
    const long long tile = idx >> 5;  // kt * (N/16) + ns
    const int ns = (int)(tile % (N / 16));
    const int kt = (int)(tile / (N / 16));
    const int g = lane >> 2, t = lane & 3;
    unsigned w[2 * BITS];
#pragma unroll
    for (int j = 0; j < 2 * BITS; ++j) w[j] = 0u;
#pragma unroll
    for (int p = 0; p < 64; ++p) {
        const int kq = p >> 3, f = (p >> 1) & 3, h = p & 1;
        const int sub = f >> 1, bi = f & 1;
        const long long k = (long long)kt * BK + kq * 16 + 2 * t + 8 * bi + h;
        const long long n = (long long)ns * 16 + 8 * sub + g;
        const long long bit = (k * N + n) * BITS;
        const long long byte = bit >> 3;
        const int off = (int)(bit & 7);
        unsigned raw = Wq[byte];
        if (off + BITS > 8) raw |= (unsigned)Wq[byte + 1] << 8;  // field straddles two bytes
        const unsigned code = ((raw >> off) & MASK) ^ (1u << (BITS - 1));  // two's complement -> offset
        const int pos = p * BITS;  // compile-time after unrolling
        w[pos >> 5] |= code << (pos & 31);
        if ((pos & 31) + BITS > 32) w[(pos >> 5) + 1] |= code >> (32 - (pos & 31));
    }
    uint2* out = reinterpret_cast<uint2*>(wp);
#pragma unroll
    for (int q = 0; q < BITS; ++q) out[(tile * BITS + q) * 32 + lane] = make_uint2(w[2 * q], w[2 * q + 1]);
}

template __global__ void tilus_repack<3>(const unsigned char*, unsigned*, int, int);
template __global__ void tilus_repack<5>(const unsigned char*, unsigned*, int, int);
template __global__ void tilus_repack<6>(const unsigned char*, unsigned*, int, int);
template __global__ void tilus_repack<7>(const unsigned char*, unsigned*, int, int);

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

// Field p of a lane string held in registers (p, BITS compile-time constants after unrolling).
template <int BITS>
__device__ __forceinline__ unsigned field(const unsigned (&w)[2 * BITS], int p)
{
    const int pos = p * BITS, j = pos >> 5, sh = pos & 31;
    if (sh + BITS <= 32) return (w[j] >> sh) & ((1u << BITS) - 1u);
    return __funnelshift_r(w[j], w[j + 1], sh) & ((1u << BITS) - 1u);
}

// Grid: x = m-block (MT*16 rows), y = n-block (128 columns), z = k-split.
// Dynamic smem: STAGES * (MT*256 + 128*BITS + 16) * 16 bytes.
template <int MT, int BITS>
__global__ void __launch_bounds__(THREADS)
tilus_gemm(const __half* __restrict__ A, const uint4* __restrict__ wp, const __half* __restrict__ scales,
           __half* __restrict__ C, float* __restrict__ partial, int M, int K, int N, int splits)
{
    extern __shared__ uint4 smem[];
    constexpr int A_U4 = MT * 16 * 16;      // MT*16 rows x 256 bytes
    constexpr int W_U4 = THREADS * BITS / 2;  // 256 lanes x BITS 8-byte words
    constexpr int S_U4 = 16;                // 128 fp16 scales
    constexpr int STAGE_U4 = A_U4 + W_U4 + S_U4;
    const __half2 magic = u32_as_h2(0x64006400u + 0x00010001u * (1u << (BITS - 1)));  // 1024 + 2^(BITS-1)

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
        for (int i = tid; i < A_U4; i += THREADS) {
            const int r = i >> 4, c = i & 15;
            const int m = row_base + r;
            const __half* src = A + (long long)(m < M ? m : M - 1) * K + kt * BK + c * 8;
            cp_async16(&sA[r * 16 + (c ^ (r & 7))], src, m < M ? 16 : 0);
        }
        // The block's 8 strips of this k-tile are contiguous: 8 * BITS * 32 uint2.
        const uint4* srcW = wp + ((long long)kt * (N / 16) + nb * 8) * BITS * 16;
#pragma unroll
        for (int i = tid; i < W_U4; i += THREADS) cp_async16(&sW[i], srcW + i, 16);
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
        const uint2* sW = reinterpret_cast<const uint2*>(sA + A_U4);
        const __half* sS = reinterpret_cast<const __half*>(sA + A_U4 + W_U4);
        const __half2 s0 = __half2half2(sS[warp * 16 + g]);
        const __half2 s1 = __half2half2(sS[warp * 16 + 8 + g]);
        unsigned w[2 * BITS];
#pragma unroll
        for (int q = 0; q < BITS; ++q) {
            const uint2 u = sW[(warp * BITS + q) * 32 + lane];
            w[2 * q] = u.x;
            w[2 * q + 1] = u.y;
        }
#pragma unroll
        for (int kq = 0; kq < 8; ++kq) {
            unsigned b[4];
#pragma unroll
            for (int f = 0; f < 4; ++f) {
                const int p = kq * 8 + 2 * f;
                const unsigned pair = field<BITS>(w, p) | (field<BITS>(w, p + 1) << 16) | 0x64006400u;
                b[f] = h2_as_u32(__hmul2(__hsub2(u32_as_h2(pair), magic), f < 2 ? s0 : s1));
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r = mt * 16 + (lane & 15);
                const int c = kq * 2 + (lane >> 4);
                unsigned a[4];
                ldmatrix_x4(a, &sA[r * 16 + (c ^ (r & 7))]);
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

#define INST(MT, BITS)                                                                                  \
    template __global__ void tilus_gemm<MT, BITS>(const __half*, const uint4*, const __half*, __half*, float*, \
                                                  int, int, int, int);
INST(1, 3)
INST(2, 3)
INST(3, 3)
INST(4, 3)
INST(1, 5)
INST(2, 5)
INST(3, 5)
INST(4, 5)
INST(1, 6)
INST(2, 6)
INST(3, 6)
INST(4, 6)
INST(1, 7)
INST(2, 7)
INST(3, 7)
INST(4, 7)

// C = fp16(sum over splits of partial[s]); 4 outputs per thread, float4 loads (N % 128 == 0).
extern "C" __global__ void __launch_bounds__(256)
tilus_splitk_reduce(const float4* __restrict__ partial, __half* __restrict__ C, int M, int N, int splits)
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
