// Fully fused tiny MLP (tiny-cuda-nn kernel_mlp_fused style): 64 -> WD -> (NH x WD -> WD) -> 16,
// ReLU, no biases, fp16 weights/activations, fp32 accumulation on tensor cores.
//
// Techniques (tiny-cuda-nn's fully fused MLP, NVlabs/tiny-cuda-nn src/fully_fused_mlp.cu, and the
// register-resident chaining of FlashAttention-2; code written from scratch with mma.sync PTX):
//  - all weights staged once per block in shared memory with a skewed row stride (row + 8 halves:
//    the 32-bit B-fragment loads of a warp hit 32 distinct banks), reused by every row tile the block
//    processes (grid-stride over 32-row warp tiles);
//  - each warp owns 32 rows (two m16 tiles) through the whole network: the fp32 m16n8k16 accumulator
//    fragments of one layer, after ReLU and fp16 rounding, are exactly the A fragments of the next
//    layer's mma (two adjacent n8 tiles = one k16 tile), so the activations never leave registers;
//  - inputs and outputs go through a warp-private skewed shared-memory tile so global traffic is
//    16-byte coalesced vectors (x rows are 128 B, y rows 32 B).
#include <cuda_fp16.h>

namespace {

constexpr int kWarps = 4;
constexpr int LDI = 64 + 8;  // smem row stride (halves) of 64-wide rows: x tile and W_in
constexpr int LDY = 16 + 8;  // smem row stride of the staged 16-wide output rows

__device__ __forceinline__ unsigned ld32(const __half* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

__device__ __forceinline__ unsigned pack_relu(float lo, float hi) {
    const __half2 h = __floats2half2_rn(fmaxf(lo, 0.f), fmaxf(hi, 0.f));
    return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ unsigned pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// acc[mt][nt] = A[mt] (16 x 16*KT) . W^T, W row-major [8*NT rows][>= 16*KT] in smem with stride LD
template <int NT, int KT, int LD>
__device__ __forceinline__ void layer(float (&acc)[2][8][4], const unsigned (&a)[2][4][4],
                                      const __half* __restrict__ w, int g, int q) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const __half* wr = w + (nt * 8 + g) * LD + kk * 16 + 2 * q;
            const unsigned b0 = ld32(wr), b1 = ld32(wr + 8);
            mma16816(acc[0][nt], a[0][kk], b0, b1);
            mma16816(acc[1][nt], a[1][kk], b0, b1);
        }
    }
}

// accumulators of n tiles 2kk, 2kk+1 -> A fragment of k tile kk (ReLU, fp16)
template <int KT>
__device__ __forceinline__ void chain(const float (&acc)[2][8][4], unsigned (&a)[2][4][4]) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) {
            a[mt][kk][0] = pack_relu(acc[mt][2 * kk][0], acc[mt][2 * kk][1]);
            a[mt][kk][1] = pack_relu(acc[mt][2 * kk][2], acc[mt][2 * kk][3]);
            a[mt][kk][2] = pack_relu(acc[mt][2 * kk + 1][0], acc[mt][2 * kk + 1][1]);
            a[mt][kk][3] = pack_relu(acc[mt][2 * kk + 1][2], acc[mt][2 * kk + 1][3]);
        }
}

// copy a [rows][cols] row-major global matrix into smem rows of stride ld (16-byte vectors)
__device__ __forceinline__ void stage(__half* __restrict__ dst, const __half* __restrict__ src,
                                      int rows, int cols, int ld) {
    const int v = cols / 8;
    for (int i = threadIdx.x; i < rows * v; i += blockDim.x) {
        const int r = i / v, c = i - r * v;
        *reinterpret_cast<uint4*>(dst + r * ld + c * 8) =
            __ldg(reinterpret_cast<const uint4*>(src + (size_t)r * cols + c * 8));
    }
}

}  // namespace

// Dynamic smem (halves): WD*LDI + NH*WD*(WD+8) + 16*(WD+8) + kWarps*32*LDI.
template <int WD>
__global__ void __launch_bounds__(kWarps * 32)
tiny_mlp_fused(const __half* __restrict__ x, const __half* __restrict__ w_in,
               const __half* __restrict__ w_hid, const __half* __restrict__ w_out,
               __half* __restrict__ y, int N, int NH) {
    constexpr int LDH = WD + 8;
    constexpr int NT = WD / 8, KT = WD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half* s_in = reinterpret_cast<__half*>(smem_raw);
    __half* s_hid = s_in + WD * LDI;
    __half* s_out = s_hid + NH * WD * LDH;
    __half* s_x = s_out + 16 * LDH;

    stage(s_in, w_in, WD, 64, LDI);
    for (int l = 0; l < NH; ++l) stage(s_hid + l * WD * LDH, w_hid + (size_t)l * WD * WD, WD, WD, LDH);
    stage(s_out, w_out, 16, WD, LDH);
    __syncthreads();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, q = lane & 3;
    __half* xw = s_x + warp * 32 * LDI;  // this warp's 32 x 64 tile (then its 32 x 16 outputs)
    const int tiles = (N + 31) / 32;

    for (int tile = blockIdx.x * kWarps + warp; tile < tiles; tile += gridDim.x * kWarps) {
        const int row0 = tile * 32;
        // x rows -> smem (8 x 16 B per row), zeros past N
#pragma unroll
        for (int i = lane; i < 32 * 8; i += 32) {
            const int r = i >> 3, c = i & 7;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (row0 + r < N) v = __ldcs(reinterpret_cast<const uint4*>(x + (size_t)(row0 + r) * 64 + c * 8));
            *reinterpret_cast<uint4*>(xw + r * LDI + c * 8) = v;
        }
        __syncwarp();
        unsigned a[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                const __half* p = xw + (mt * 16 + g) * LDI + kk * 16 + 2 * q;
                a[mt][kk][0] = ld32(p);
                a[mt][kk][1] = ld32(p + 8 * LDI);
                a[mt][kk][2] = ld32(p + 8);
                a[mt][kk][3] = ld32(p + 8 * LDI + 8);
            }
        __syncwarp();  // the tile is reused for the outputs below

        float acc[2][8][4];
        layer<NT, 4, LDI>(acc, a, s_in, g, q);
        for (int l = 0; l < NH; ++l) {
            chain<KT>(acc, a);
            layer<NT, KT, LDH>(acc, a, s_hid + l * WD * LDH, g, q);
        }
        chain<KT>(acc, a);
        layer<2, KT, LDH>(acc, a, s_out, g, q);

        // outputs: (row g / g+8, cols 8 nt + 2q) of each m tile -> smem -> 2 x 16 B per row
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                __half* p = xw + (mt * 16 + g) * LDY + nt * 8 + 2 * q;
                *reinterpret_cast<unsigned*>(p) = pack(acc[mt][nt][0], acc[mt][nt][1]);
                *reinterpret_cast<unsigned*>(p + 8 * LDY) = pack(acc[mt][nt][2], acc[mt][nt][3]);
            }
        __syncwarp();
#pragma unroll
        for (int i = lane; i < 64; i += 32) {
            const int r = i >> 1, c = i & 1;
            if (row0 + r < N)
                __stcs(reinterpret_cast<uint4*>(y + (size_t)(row0 + r) * 16 + c * 8),
                       *reinterpret_cast<const uint4*>(xw + r * LDY + c * 8));
        }
        __syncwarp();  // before the next tile overwrites xw
    }
}

template __global__ void tiny_mlp_fused<32>(const __half*, const __half*, const __half*,
                                            const __half*, __half*, int, int);
template __global__ void tiny_mlp_fused<64>(const __half*, const __half*, const __half*,
                                            const __half*, __half*, int, int);
