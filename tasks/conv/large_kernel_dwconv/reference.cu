// Large-kernel depthwise conv2d (K = 13 / 31, stride 1, same padding), fp16 in/out, fp32 accumulate,
// on tensor cores.
//
// Techniques (the idea of RepLKNet/UniRepLKNet's DepthWiseConv2dImplicitGEMM, a CUTLASS-based
// implicit GEMM for large depthwise kernels, here as a Toeplitz formulation; code written from
// scratch with mma.sync/ldmatrix inline PTX):
//  * per channel and kernel row i, 16 adjacent outputs of a row are a 16 x KT Toeplitz matrix
//    A_i[m][t] = w[i][t - m] times a KT-wide strip of input row y + i (KT = round_up(K + 15, 16)),
//    so out[rows y0..y0+7][cols x0..x0+15] = sum_i A_i . In_i is a sum of m16n8k16 MMAs with
//    M = 16 output columns, N = 8 output rows and K = input columns;
//  * [[prepare]] (untimed, weights only) expands w into those Toeplitz A fragments already in the
//    mma register order (one 16-byte load per lane per fragment, L1/L2 resident);
//  * the zero-padded input halo tile of one (image, channel) lives in shared memory with a row
//    stride that is an odd number of 16-byte units, so ldmatrix.x2 B-fragment loads are
//    conflict-free; each warp keeps YPW output 16x8 tiles in registers and reuses every A fragment
//    YPW times.
#include <cuda_fp16.h>

namespace {

__host__ __device__ constexpr int kt_of(int K) { return (K + 15 + 15) / 16 * 16; }

__device__ __forceinline__ unsigned pack2(__half lo, __half hi) {
    return (unsigned)__half_as_ushort(lo) | ((unsigned)__half_as_ushort(hi) << 16);
}

__device__ __forceinline__ void ldmatrix_x2(unsigned& r0, unsigned& r1, const void* smem_ptr) {
    const unsigned addr = (unsigned)__cvta_generic_to_shared(smem_ptr);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r0), "=r"(r1)
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint4& a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

}  // namespace

// [[prepare]]: grid = C*K*(KT/16), block = 32. wt[((c*K + i)*(KT/16) + kk)*32 + lane] holds the
// lane's m16n8k16 A fragment {a0, a1, a2, a3} of the Toeplitz block A_i[:, 16kk .. 16kk+15].
template <int K>
__global__ void __launch_bounds__(32) dw_toeplitz_fragments(const __half* __restrict__ w,
                                                            uint4* __restrict__ wt) {
    constexpr int KT16 = kt_of(K) / 16;
    const int f = blockIdx.x;  // (c*K + i)*KT16 + kk
    const int kk = f % KT16;
    const int ci = f / KT16;   // c*K + i: row i of channel c's kernel
    const __half* wrow = w + (size_t)ci * K;
    const int lane = threadIdx.x, g = lane >> 2, q = lane & 3;
    auto A = [&](int m, int t) -> __half {
        const int j = t - m;
        return (j >= 0 && j < K) ? wrow[j] : __float2half(0.f);
    };
    const int t0 = kk * 16 + 2 * q;
    uint4 r;
    r.x = pack2(A(g, t0), A(g, t0 + 1));
    r.y = pack2(A(g + 8, t0), A(g + 8, t0 + 1));
    r.z = pack2(A(g, t0 + 8), A(g, t0 + 9));
    r.w = pack2(A(g + 8, t0 + 8), A(g + 8, t0 + 9));
    wt[(size_t)f * 32 + lane] = r;
}

// grid = (N, ceil_div(W, 16*XT) * ceil_div(H, 8*YT), C), block = 32 * XT * (YT / YPW).
// Block: one image, one channel, an output tile of 16*XT columns x 8*YT rows.
// Warp: x-tile (warp % XT), y-tiles (warp / XT)*YPW .. +YPW-1.
template <int K, int XT, int YT, int YPW>
__global__ void __launch_bounds__(32 * XT * (YT / YPW)) dwconv_tc(
    const __half* __restrict__ x, const uint4* __restrict__ wt, const __half* __restrict__ bias,
    __half* __restrict__ out, int C, int H, int W) {
    constexpr int P = K / 2;
    constexpr int KT = kt_of(K), KT16 = KT / 16;
    constexpr int IW = 16 * (XT - 1) + KT;  // input tile width (multiple of 16)
    constexpr int IH = 8 * YT + K - 1;      // input tile height
    constexpr int SW = IW + 8;              // row stride: odd number of 16-byte units
    constexpr int NT = 32 * XT * (YT / YPW);
    static_assert(YT % YPW == 0, "YPW must divide YT");
    static_assert((SW / 8) % 2 == 1, "conflict-free ldmatrix stride");
    __shared__ __align__(16) __half in_s[IH * SW];

    const int n = blockIdx.x, c = blockIdx.z;
    const int tiles_x = (W + 16 * XT - 1) / (16 * XT);
    const int X0 = (blockIdx.y % tiles_x) * 16 * XT;
    const int Y0 = (blockIdx.y / tiles_x) * 8 * YT;
    const size_t plane = ((size_t)n * C + c) * H * W;
    const __half* xin = x + plane;

    // Zero-padded halo tile: input rows Y0-P .. Y0-P+IH-1, cols X0-P .. X0-P+IW-1.
    for (int idx = threadIdx.x; idx < IH * IW; idx += NT) {
        const int r = idx / IW, col = idx - r * IW;
        const int gy = Y0 - P + r, gx = X0 - P + col;
        __half v = __float2half(0.f);
        if (gy >= 0 && gy < H && gx >= 0 && gx < W) v = xin[gy * W + gx];
        in_s[r * SW + col] = v;
    }
    __syncthreads();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int xt = warp % XT;
    const int yt0 = (warp / XT) * YPW;
    float acc[YPW][4];
#pragma unroll
    for (int j = 0; j < YPW; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;

    // ldmatrix.x2 row addresses (lanes 0-15; the others mirror them): matrix lane>>3 (k half),
    // row lane&7 (output row within the 8-row tile).
    const int l16 = lane & 15;
    const __half* b_base = in_s + (yt0 * 8 + (l16 & 7)) * SW + xt * 16 + (l16 >> 3) * 8;
    const uint4* a_base = wt + (size_t)c * K * KT16 * 32 + lane;

#pragma unroll 1
    for (int i = 0; i < K; ++i) {
#pragma unroll
        for (int kk = 0; kk < KT16; ++kk) {
            const uint4 a = __ldg(a_base + (i * KT16 + kk) * 32);
#pragma unroll
            for (int j = 0; j < YPW; ++j) {
                unsigned b0, b1;
                ldmatrix_x2(b0, b1, b_base + (j * 8 + i) * SW + kk * 16);
                mma_16816(acc[j], a, b0, b1);
            }
        }
    }

    // Epilogue: acc[j] = {(m=g, n=2q), (m=g, n=2q+1), (m=g+8, n=2q), (m=g+8, n=2q+1)},
    // m = output column offset, n = output row offset.
    const float bv = __half2float(bias[c]);
    const int g = lane >> 2, q = lane & 3;
    __half* o = out + plane;
#pragma unroll
    for (int j = 0; j < YPW; ++j) {
        const int y = Y0 + (yt0 + j) * 8 + 2 * q;
        const int xa = X0 + xt * 16 + g;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int yy = y + (e & 1);
            const int xx = xa + (e >> 1) * 8;
            if (yy < H && xx < W) o[yy * W + xx] = __float2half_rn(acc[j][e] + bv);
        }
    }
}

template __global__ void dw_toeplitz_fragments<13>(const __half*, uint4*);
template __global__ void dw_toeplitz_fragments<31>(const __half*, uint4*);
#define DWCONV_TC(K, XT, YT, YPW)                                                                  \
    template __global__ void dwconv_tc<K, XT, YT, YPW>(const __half*, const uint4*, const __half*, \
                                                       __half*, int, int, int);
DWCONV_TC(13, 1, 2, 2) DWCONV_TC(13, 2, 4, 4) DWCONV_TC(13, 2, 7, 7)
DWCONV_TC(31, 1, 2, 2) DWCONV_TC(31, 2, 4, 4) DWCONV_TC(31, 2, 7, 7)
