// Sub-1-bit dictionary-coded ternary matvec (QMoE): y[b, r] = sum_j w[r, j] * x[b, j].
//
// Techniques (learned from QMoE, Frantar & Alistarh 2023, and IST-DASLab/qmoe sub1_cuda_kernel.cu; own code):
// - One warp per weight row; the row's codewords are processed 32 at a time, one per lane (coalesced
//   16-bit loads), each lane fetching its codeword's two dictionary words with one 8-byte __ldg (the
//   512 KiB table stays L2-resident).
// - A warp-level inclusive scan (shfl_up) of the per-codeword digit counts gives each lane the column of
//   its first digit; a row stops decoding once it has W digits (later codewords cannot contribute).
// - x for all batch rows lives in shared memory, transposed to [column][BT] so that one digit's BT
//   activations are one contiguous (vector) load, padded with 28 zero columns so a codeword that straddles
//   column W needs no per-digit bounds check (QMoE pads x the same way).
// - Ternary weights take only two non-zero values per row, so each lane accumulates the x it selects into
//   two sums (digit 1, digit 2) and the row's two values are applied once after the butterfly (xor-shuffle)
//   reduction: no multiply per weight.
// - Grid-stride over rows with a bounded grid, so x is staged into shared memory once per block.
#include <cuda_bf16.h>

#define WARPS 8
#define PAD_COLS 28

template <int BT>
__device__ __forceinline__ void load_x(const __nv_bfloat16* p, float (&v)[BT])
{
    if constexpr (BT == 1) {
        v[0] = __bfloat162float(*p);
    } else if constexpr (BT == 2) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
        v[0] = f.x;
        v[1] = f.y;
    } else {
        // BT is 4, 8 or 16: 8-byte or 16-byte vector loads of bf16 pairs.
        constexpr int WORDS = BT / 2;
        unsigned w[WORDS];
        if constexpr (BT == 4) {
            const uint2 u = *reinterpret_cast<const uint2*>(p);
            w[0] = u.x;
            w[1] = u.y;
        } else {
#pragma unroll
            for (int q = 0; q < BT / 8; ++q) {
                const uint4 u = reinterpret_cast<const uint4*>(p)[q];
                w[4 * q + 0] = u.x;
                w[4 * q + 1] = u.y;
                w[4 * q + 2] = u.z;
                w[4 * q + 3] = u.w;
            }
        }
#pragma unroll
        for (int i = 0; i < WORDS; ++i) {
            // bf16 -> fp32 is a 16-bit shift into the high half.
            v[2 * i] = __uint_as_float(w[i] << 16);
            v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
        }
    }
}

// Grid: any number of blocks (rows are grid-strided), WARPS warps each.
// Dynamic smem: (W + 28) * BT bf16, x transposed to [column][BT], zero beyond W and beyond B.
template <int BT>
__global__ void __launch_bounds__(WARPS * 32)
qmoe_sub1_matvec(const int2* __restrict__ dec, const unsigned short* __restrict__ w_comp,
                 const int* __restrict__ row_off, const __nv_bfloat16* __restrict__ minmax,
                 const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ y, int B, int H, int W)
{
    extern __shared__ __align__(16) __nv_bfloat16 xs[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    // Stage x: reads run along columns (coalesced); zero-fill the pad columns and the pad batch rows.
    const int cols = W + PAD_COLS;
    for (int i = tid; i < cols * BT; i += WARPS * 32) {
        const int b = i / cols, c = i - b * cols;
        xs[c * BT + b] = (b < B && c < W) ? x[(long long)b * W + c] : __float2bfloat16(0.f);
    }
    __syncthreads();

    for (int r = blockIdx.x * WARPS + warp; r < H; r += gridDim.x * WARPS) {
        const int beg = row_off[r], end = row_off[r + 1];
        float s1[BT], s2[BT];
#pragma unroll
        for (int b = 0; b < BT; ++b) s1[b] = s2[b] = 0.f;

        int base = 0;  // digits of this row before the current 32-codeword chunk
        for (int c0 = beg; c0 < end && base < W; c0 += 32) {
            const int c = c0 + lane;
            unsigned h0 = 0, h1 = 0;
            int n = 0;
            if (c < end) {
                const int2 e = __ldg(&dec[w_comp[c]]);
                h0 = (unsigned)e.x;
                h1 = (unsigned)e.y;
                n = min(2 * (int)(h0 & 15u), 28);
            }
            int incl = n;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int t = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += t;
            }
            const int start = base + incl - n;
            base += __shfl_sync(0xffffffffu, incl, 31);
            if (start >= W) n = 0;  // starts past the row end; straddlers read the zero pad
            const __nv_bfloat16* xp = xs + start * BT;
#pragma unroll
            for (int d = 0; d < 28; ++d) {
                if (d >= n) break;
                const unsigned dig = ((d < 14 ? h0 : h1) >> (4 + 2 * (d % 14))) & 3u;
                if (dig == 1u || dig == 2u) {
                    float v[BT];
                    load_x<BT>(xp + d * BT, v);
                    if (dig == 1u) {
#pragma unroll
                        for (int b = 0; b < BT; ++b) s1[b] += v[b];
                    } else {
#pragma unroll
                        for (int b = 0; b < BT; ++b) s2[b] += v[b];
                    }
                }
            }
        }

        // Butterfly: every lane ends with the row totals; lane b writes batch row b.
#pragma unroll
        for (int b = 0; b < BT; ++b) {
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                s1[b] += __shfl_xor_sync(0xffffffffu, s1[b], o);
                s2[b] += __shfl_xor_sync(0xffffffffu, s2[b], o);
            }
        }
        const float lo = __bfloat162float(minmax[2 * r]), hi = __bfloat162float(minmax[2 * r + 1]);
#pragma unroll
        for (int b = 0; b < BT; ++b)
            if (lane == b && b < B) y[(long long)b * H + r] = __float2bfloat16(lo * s1[b] + hi * s2[b]);
    }
}

template __global__ void qmoe_sub1_matvec<1>(const int2*, const unsigned short*, const int*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void qmoe_sub1_matvec<2>(const int2*, const unsigned short*, const int*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void qmoe_sub1_matvec<4>(const int2*, const unsigned short*, const int*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void qmoe_sub1_matvec<8>(const int2*, const unsigned short*, const int*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
template __global__ void qmoe_sub1_matvec<16>(const int2*, const unsigned short*, const int*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int);
