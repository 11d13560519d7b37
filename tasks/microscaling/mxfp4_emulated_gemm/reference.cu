// MXFP4 x MXFP4 GEMM on Hopper without FP4 tensor cores: C = alpha * dq(A) @ dq(B)^T, bf16 out.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - qutlass (IST-DASLab) SM80-class MX path, mx_mma_multistage / mma_mx_tensor_op: keep FP4 in
//    shared memory (a quarter of the bf16 footprint), multistage cp.async, convert to a
//    tensor-core-native type in registers right after ldmatrix.
//  - DeepSeek-V3-style blockwise FP8 GEMM: E2M1 values are exact in FP8 E4M3, so each 32-wide scale
//    group is one mma.sync.m16n8k32.e4m3 from zero, whose fp32 result is added to the accumulator
//    times 2^(sa-127) * 2^(sb-127) (power-of-two scales: exact). Group sums of E2M1 products stay
//    small integers times 1/4, so the FP8 MMA's own accumulation is exact as well.
//  - K permutation inside a group: the dot product of a group does not depend on the order of its
//    32 elements as long as A and B use the same order. ldmatrix hands each thread the 4 bytes
//    (8 codes, elements 8q..8q+7) at byte 4q of a row's 16-byte group; the thread's MMA k-slots
//    4q..4q+3 take elements 8q..8q+3 and k-slots 16+4q..16+4q+3 take 8q+4..8q+7, for A and B alike.
//    So one ldmatrix.x4 gives the raw fragments of two groups with no shuffles.
//  - E2M1 -> E4M3 with two byte permutes (prmt): magnitudes from an 8-entry byte table, sign bytes
//    0x00 / 0x80 selected by the code's sign bit.
//  - 16-byte XOR-swizzled smem rows (chunk ^= row & 7): conflict-free cp.async and ldmatrix.
//  - Two tiles: 128x128 (8 warps, 64x32 each) and 32x128 (4 warps) for decode-like M.
// Requires K % 256 == 0 (a stage holds 256 k = 8 groups; scale rows are 8-byte aligned).
#include <cuda_bf16.h>

#define BK 256            // k elements per stage (128 bytes of codes per row, 8 scale groups)
#define ROW_BYTES 128

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async8(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
static __device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void mma_e4m3(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                                unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four E2M1 codes (the low 16 bits of h, code i in bits 4i..4i+3) -> four E4M3 bytes (byte i).
static __device__ __forceinline__ unsigned e2m1x4_to_e4m3x4(unsigned h) {
    // |e2m1| = 0, .5, 1, 1.5, 2, 3, 4, 6  ->  E4M3 0x00 0x30 0x38 0x3C 0x40 0x44 0x48 0x4C
    const unsigned mag = __byte_perm(0x3C383000u, 0x4C484440u, h & 0x7777u);
    const unsigned sgn = __byte_perm(0u, 0x80808080u, (h >> 1) & 0x4444u);  // selector 4 -> 0x80
    return mag | sgn;
}

static __device__ __forceinline__ unsigned sw(int r, int c) { return (unsigned)(r * ROW_BYTES + ((c ^ (r & 7)) << 4)); }
static __device__ __forceinline__ float e8m0(unsigned b) { return __uint_as_float(b << 23); }  // 2^(b-127), b >= 1

template <int BM, int BN, int THREADS>
static __device__ __forceinline__ void load_stage(unsigned char* st, const unsigned char* A, const unsigned char* Asf,
                                                  const unsigned char* B, const unsigned char* Bsf, int M, int N,
                                                  int K, int bm, int bn, int kt, int tid) {
    unsigned char* sA = st;
    unsigned char* sB = st + BM * ROW_BYTES;
    unsigned char* sSA = sB + BN * ROW_BYTES;
    unsigned char* sSB = sSA + BM * 8;
    const size_t rowb = (size_t)(K / 2), rows = (size_t)(K / 32);
    const int kb = kt * ROW_BYTES;  // byte offset of this stage in a code row
#pragma unroll
    for (int it = 0; it < BM * 8 / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 3, c = i & 7;
        const bool ok = bm + r < M;
        cp_async16(smem_addr(sA + sw(r, c)), ok ? A + (size_t)(bm + r) * rowb + kb + c * 16 : A, ok ? 16 : 0);
    }
#pragma unroll
    for (int it = 0; it < BN * 8 / THREADS; ++it) {
        const int i = it * THREADS + tid;
        const int r = i >> 3, c = i & 7;
        const bool ok = bn + r < N;
        cp_async16(smem_addr(sB + sw(r, c)), ok ? B + (size_t)(bn + r) * rowb + kb + c * 16 : B, ok ? 16 : 0);
    }
    for (int i = tid; i < BM + BN; i += THREADS) {  // 8 scale bytes (one stage) per row
        if (i < BM) {
            const bool ok = bm + i < M;
            cp_async8(smem_addr(sSA + i * 8), ok ? Asf + (size_t)(bm + i) * rows + kt * 8 : Asf, ok ? 8 : 0);
        } else {
            const int r = i - BM;
            const bool ok = bn + r < N;
            cp_async8(smem_addr(sSB + r * 8), ok ? Bsf + (size_t)(bn + r) * rows + kt * 8 : Bsf, ok ? 8 : 0);
        }
    }
}

template <int BM, int BN, int WM, int WN, int STAGES, int MINB>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB)
mxfp4_gemm(const unsigned char* __restrict__ A, const unsigned char* __restrict__ Asf,
           const unsigned char* __restrict__ B, const unsigned char* __restrict__ Bsf, const float* __restrict__ alpha,
           __nv_bfloat16* __restrict__ C, int M, int N, int K) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16, NI = WN / 8;
    constexpr int STAGE = (BM + BN) * (ROW_BYTES + 8);
    static_assert(MI >= 1 && NI % 2 == 0, "warp tile");
    static_assert((BM * 8) % THREADS == 0 && (BN * 8) % THREADS == 0, "chunks split evenly");

    extern __shared__ uint4 smem_u4[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(smem_u4);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int bn = blockIdx.x * BN, bm = blockIdx.y * BM;
    const int KT = K / BK;
    const int g = lane >> 2, q = lane & 3;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage<BM, BN, THREADS>(smem + s * STAGE, A, Asf, B, Bsf, M, N, K, bm, bn, s, tid);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        const int pf = kt + STAGES - 1;
        if (pf < KT) load_stage<BM, BN, THREADS>(smem + (pf % STAGES) * STAGE, A, Asf, B, Bsf, M, N, K, bm, bn, pf, tid);
        cp_async_commit();

        const unsigned char* st = smem + (kt % STAGES) * STAGE;
        const unsigned sA = smem_addr(st);
        const unsigned sB = sA + BM * ROW_BYTES;
        const unsigned char* sSA = st + (BM + BN) * ROW_BYTES;
        const unsigned char* sSB = sSA + BM * 8;

#pragma unroll 1
        for (int gp = 0; gp < 8; gp += 2) {  // two scale groups per ldmatrix
            unsigned ra[MI][4], rb[NI / 2][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)  // matrices: (rows 0-7, gp), (rows 8-15, gp), (0-7, gp+1), (8-15, gp+1)
                ldmatrix_x4(ra[mi], sA + sw(wm * WM + mi * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), gp + (lane >> 4)));
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj)  // matrices: (n 0-7, gp), (n 8-15, gp), (n 0-7, gp+1), (n 8-15, gp+1)
                ldmatrix_x4(rb[nj], sB + sw(wn * WN + nj * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), gp + (lane >> 4)));
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int grp = gp + h;
                float sa[MI][2], sb[NI][2];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    const int r = wm * WM + mi * 16 + g;
                    sa[mi][0] = e8m0(sSA[r * 8 + grp]);
                    sa[mi][1] = e8m0(sSA[(r + 8) * 8 + grp]);
                }
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) {
                    const int c = wn * WN + ni * 8 + 2 * q;
                    sb[ni][0] = e8m0(sSB[c * 8 + grp]);
                    sb[ni][1] = e8m0(sSB[(c + 1) * 8 + grp]);
                }
                unsigned bf[NI][2];
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) {
                    const unsigned w = rb[ni >> 1][(ni & 1) + 2 * h];
                    bf[ni][0] = e2m1x4_to_e4m3x4(w);
                    bf[ni][1] = e2m1x4_to_e4m3x4(w >> 16);
                }
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    const unsigned w0 = ra[mi][2 * h], w1 = ra[mi][2 * h + 1];  // rows g, g+8
                    const unsigned a0 = e2m1x4_to_e4m3x4(w0), a1 = e2m1x4_to_e4m3x4(w1);
                    const unsigned a2 = e2m1x4_to_e4m3x4(w0 >> 16), a3 = e2m1x4_to_e4m3x4(w1 >> 16);
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) {
                        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma_e4m3(t, a0, a1, a2, a3, bf[ni][0], bf[ni][1]);
                        acc[mi][ni][0] = fmaf(t[0], sa[mi][0] * sb[ni][0], acc[mi][ni][0]);
                        acc[mi][ni][1] = fmaf(t[1], sa[mi][0] * sb[ni][1], acc[mi][ni][1]);
                        acc[mi][ni][2] = fmaf(t[2], sa[mi][1] * sb[ni][0], acc[mi][ni][2]);
                        acc[mi][ni][3] = fmaf(t[3], sa[mi][1] * sb[ni][1], acc[mi][ni][3]);
                    }
                }
            }
        }
    }
    cp_async_wait<0>();

    const float al = __ldg(alpha);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int r = bm + wm * WM + mi * 16 + hh * 8 + g;
            if (r >= M) continue;
            __nv_bfloat16* out = C + (size_t)r * N;
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
                const int c = bn + wn * WN + ni * 8 + 2 * q;
                const float x0 = acc[mi][ni][2 * hh] * al, x1 = acc[mi][ni][2 * hh + 1] * al;
                if ((N & 1) == 0 && c + 1 < N) {
                    *reinterpret_cast<__nv_bfloat162*>(out + c) = __floats2bfloat162_rn(x0, x1);
                } else {
                    if (c < N) out[c] = __float2bfloat16_rn(x0);
                    if (c + 1 < N) out[c + 1] = __float2bfloat16_rn(x1);
                }
            }
        }
    }
}

template __global__ void mxfp4_gemm<128, 128, 64, 32, 3, 1>(const unsigned char*, const unsigned char*,
                                                         const unsigned char*, const unsigned char*, const float*,
                                                         __nv_bfloat16*, int, int, int);
template __global__ void mxfp4_gemm<32, 128, 32, 32, 4, 3>(const unsigned char*, const unsigned char*,
                                                        const unsigned char*, const unsigned char*, const float*,
                                                        __nv_bfloat16*, int, int, int);
