// 3x3 convolution, stride 1, zero padding 1, NHWC fp16 activations, KRSC fp16 filters, fp32
// accumulation, NHWC fp16 output:
//   y[n, p, q, k] = sum_{r, s < 3, c < C} x[n, p + r - 1, q + s - 1, c] * w[k, r, s, c].
//
// Techniques (code written from scratch; the ideas come from the implicit-GEMM formulation of
// convolution in cuDNN / CUTLASS ("Implicit GEMM Convolution" in the CUTLASS docs; Chetlur et al.,
// "cuDNN: Efficient Primitives for Deep Learning", 2014) and the usual Ampere mma.sync recipe):
//  - implicit GEMM without im2col: GEMM rows = output pixels (N*H*W), GEMM columns = output
//    channels K, reduction = (r, s, c). With NHWC input and KRSC filters both operands are
//    reduction-major, so the A tile (pixels x 32 channels at one filter tap) and the B tile
//    (filters x 32 channels at that tap) are rows of 64 contiguous bytes, and plain ldmatrix.x4
//    yields both mma.sync.m16n8k16.row.col.f32.f16.f16.f32 fragments;
//  - k-loop over (tap r*3+s, 32-channel block): each thread precomputes, once, the pixel (n, p, q)
//    and base offset of its A rows; per tap only the halo test and a constant offset change;
//    out-of-image taps and channels >= C are zero-filled (cp.async src-size 0);
//  - STAGES-deep cp.async.cg pipeline, XOR-swizzled 64-byte smem rows (chunk ^= (row >> 1) & 3),
//    block tile 128 x BN x 32 with 64 x 32 warp tiles;
//  - C % 8 == 0 uses 16-byte cp.async; otherwise (awkward C = 61) the same pipeline fills chunks
//    element by element (synchronous, bounds-checked), as real layers with odd C need.
#include <cuda_fp16.h>

#define CV_BK 32

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
static __device__ __forceinline__ void mma_f16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// Up to 8 halves from p (valid of them, the rest zero) packed into one 16-byte chunk.
static __device__ __forceinline__ uint4 load8_checked(const unsigned short* p, int valid) {
    unsigned short e[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = i < valid ? p[i] : (unsigned short)0;
    return make_uint4(e[0] | ((unsigned)e[1] << 16), e[2] | ((unsigned)e[3] << 16), e[4] | ((unsigned)e[5] << 16),
                      e[6] | ((unsigned)e[7] << 16));
}

static __device__ __forceinline__ void store2(__half* y, int Mg, int K, int m, int k, float a, float b) {
    if (m >= Mg) return;
    __half* p = y + (size_t)m * K + k;
    if ((K & 1) == 0 && k + 1 < K) {
        *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);  // K and k even: 4-byte aligned
    } else {
        if (k < K) p[0] = __float2half_rn(a);
        if (k + 1 < K) p[1] = __float2half_rn(b);
    }
}

template <int BM, int BN, int WM, int WN, int STAGES, bool ALIGNED>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
conv3x3_nhwc(const __half* __restrict__ x, const __half* __restrict__ w, __half* __restrict__ y, int N, int H, int W,
             int C, int K) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NI = WN / 8;
    constexpr int A_STAGE = BM * CV_BK * 2;
    constexpr int B_STAGE = BN * CV_BK * 2;
    constexpr int A_IT = BM * 4 / THREADS;  // A chunks per thread per stage
    constexpr int B_IT = BN * 4 / THREADS;
    static_assert(WM % 16 == 0 && WN % 16 == 0 && STAGES >= 2, "tile shape");
    static_assert((BM * 4) % THREADS == 0 && (BN * 4) % THREADS == 0 && THREADS % 4 == 0, "load split");

    extern __shared__ uint4 smem_u4[];
    const unsigned smem = smem_addr(smem_u4);

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WARPS_N;
    const int wn = warp % WARPS_N;
    const int Mg = N * H * W;
    const int bm = blockIdx.x * BM;
    const int bn = blockIdx.y * BN;
    const int chunk = tid & 3;  // the 16-byte chunk (8 channels) this thread loads in every row

    // This thread's A rows (output pixels): image coordinates and input offset of the centre tap.
    int a_p[A_IT], a_q[A_IT];
    long long a_base[A_IT];
#pragma unroll
    for (int it = 0; it < A_IT; ++it) {
        const int m = bm + it * (THREADS / 4) + (tid >> 2);
        if (m < Mg) {
            const int q = m % W, t = m / W;
            a_p[it] = t % H;
            a_q[it] = q;
            a_base[it] = (long long)m * C;  // (n*H + p)*W + q == m
        } else {
            a_p[it] = -1000000;  // fails every halo test
            a_q[it] = 0;
            a_base[it] = 0;
        }
    }

    const int CB = (C + CV_BK - 1) / CV_BK;
    const int KT = 9 * CB;
    const unsigned short* xs = reinterpret_cast<const unsigned short*>(x);
    const unsigned short* ws = reinterpret_cast<const unsigned short*>(w);

    auto load_stage = [&](int stage, int kt) {
        const int tap = kt / CB;
        const int c0 = (kt - tap * CB) * CV_BK + chunk * 8;  // first channel of this thread's chunk
        const int dr = tap / 3 - 1, ds = tap % 3 - 1;
        const long long shift = ((long long)dr * W + ds) * C + c0;
        const unsigned sA = smem + stage * A_STAGE;
        const unsigned sB = smem + STAGES * A_STAGE + stage * B_STAGE;
        const int cvalid = min(8, C - c0);  // <= 0: chunk past the channels
#pragma unroll
        for (int it = 0; it < A_IT; ++it) {
            const int r = it * (THREADS / 4) + (tid >> 2);
            const int ih = a_p[it] + dr, iw = a_q[it] + ds;
            const bool ok = cvalid > 0 && ih >= 0 && ih < H && iw >= 0 && iw < W;
            const unsigned short* src = ok ? xs + (a_base[it] + shift) : xs;
            if (ALIGNED) {
                cp_async16(sA + tile_off(r, chunk), src, ok ? 16 : 0);
            } else {
                *reinterpret_cast<uint4*>(smem_u4 + (stage * A_STAGE + tile_off(r, chunk)) / 16) =
                    load8_checked(src, ok ? cvalid : 0);
            }
        }
#pragma unroll
        for (int it = 0; it < B_IT; ++it) {
            const int r = it * (THREADS / 4) + (tid >> 2);
            const int k = bn + r;
            const bool ok = cvalid > 0 && k < K;
            const unsigned short* src = ok ? ws + ((long long)k * 9 + tap) * C + c0 : ws;
            if (ALIGNED) {
                cp_async16(sB + tile_off(r, chunk), src, ok ? 16 : 0);
            } else {
                *reinterpret_cast<uint4*>(smem_u4 + (STAGES * A_STAGE + stage * B_STAGE + tile_off(r, chunk)) / 16) =
                    load8_checked(src, ok ? cvalid : 0);
            }
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all (cp.async or plain stores); its refill target is free

        const int pf = kt + STAGES - 1;
        if (pf < KT) load_stage(pf % STAGES, pf);
        cp_async_commit();

        const int cs = kt % STAGES;
        const unsigned sA = smem + cs * A_STAGE;
        const unsigned sB = smem + STAGES * A_STAGE + cs * B_STAGE;
#pragma unroll
        for (int ks = 0; ks < CV_BK / 16; ++ks) {
            unsigned af[MI][4];
            unsigned bf[NI / 2][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int row = wm * WM + mi * 16 + (lane & 15);
                ldmatrix_x4(af[mi], sA + tile_off(row, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                const int row = wn * WN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf[nj], sB + tile_off(row, ks * 2 + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
                    mma_f16(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int m = bm + wm * WM + mi * 16 + (lane >> 2);
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int k = bn + wn * WN + ni * 8 + (lane & 3) * 2;
            store2(y, Mg, K, m, k, acc[mi][ni][0], acc[mi][ni][1]);
            store2(y, Mg, K, m + 8, k, acc[mi][ni][2], acc[mi][ni][3]);
        }
    }
}

#define INST(BN, STAGES, AL)                                                                                     \
    template __global__ void conv3x3_nhwc<128, BN, 64, 32, STAGES, AL>(const __half*, const __half*, __half*, int, \
                                                                       int, int, int, int);
INST(64, 4, true)
INST(64, 4, false)
INST(128, 4, true)
INST(128, 4, false)
