// QLoRA NF4 weight GEMV with double-quantized block scales (bitsandbytes 4-bit inference path):
//   absmax[i] = code8[absmax_q[i]] * absmax2[i / 256] + offset        (one scale per 64 weights)
//   W[e]      = nf4[q[e]] * absmax[e / 64]                            (e = n*K + k, row-major W[N, K])
//   y[b, n]   = sum_k x[b, k] * W[n, k]   (fp32 accumulation, one rounding to bf16)
// qW packs two 4-bit codes per byte, the lower-indexed element in the high nibble.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - bitsandbytes kgemm_4bit_inference_naive: warps own output rows, the 16-entry code table
//    lives in shared memory (16 consecutive floats sit in 16 distinct banks, so a warp's random
//    lookups never conflict), the two-level absmax is dequantized on the fly per 64-block, the
//    dot products finish with a warp-shuffle tree. QLoRA (Dettmers et al., 2023) for the format.
//  - Each warp owns ROWS consecutive output rows and all B rows of x, so every x vector loaded
//    feeds ROWS*B dot products and every weight byte loaded feeds B of them.
//  - Element-to-lane map: in each 1024-element step of k, lane l owns the four 8-element groups
//    k = step + q*256 + l*8 (q = 0..3). Its codes for a group are one 32-bit word (warp-wide a
//    fully coalesced 128-byte load per row) and the matching x values one 16-byte load (a
//    contiguous 512 bytes per warp), which keeps L1 traffic for x at the minimum. All 4*ROWS
//    code words of a step are loaded before any is used (memory-level parallelism). An 8-element
//    group never straddles a 64-element scale block (K % 64 == 0), so the group's dot product is
//    accumulated unscaled and multiplied by its block scale once.
//  - Streaming loads (ld.global.cs) for the codes (read once); x, scales and tables go through
//    the read-only cache (re-read by every warp).
// Expected limit: one shared-memory lookup per weight plus the B FMAs keep this reference
// LSU/issue-bound below HBM roofline, like the bitsandbytes kernel it follows.
// Rows past N (last warp) recompute row N-1 and store nothing, so no loads need guarding.
// Buffers come from the harness allocator (at least 256-byte aligned); K % 64 == 0 makes every row
// of qW 32-byte aligned and every x row 128-byte aligned.
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

template <int MAXB, int ROWS>
__global__ void __launch_bounds__(128)
nf4_gemv(const __nv_bfloat16* __restrict__ x, const unsigned char* __restrict__ qW,
         const unsigned char* __restrict__ absmax_q, const float* __restrict__ code8,
         const float* __restrict__ absmax2, const float* __restrict__ offset,
         const float* __restrict__ nf4, __nv_bfloat16* __restrict__ y, int B, int K, int N) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = nf4[threadIdx.x];
    __syncthreads();

    const int lane = threadIdx.x & 31;
    const int n0 = (blockIdx.x * 4 + (threadIdx.x >> 5)) * ROWS;
    if (n0 >= N) return;  // after the only barrier
    const float off = __ldg(offset);

    const unsigned* wrow[ROWS];  // codes of row n as 32-bit words (8 codes each)
    size_t blk0[ROWS];           // index of the row's first 64-block
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const size_t n = (size_t)min(n0 + r, N - 1);
        wrow[r] = reinterpret_cast<const unsigned*>(qW + n * (size_t)(K / 2));
        blk0[r] = n * (size_t)(K / 64);
    }
    const uint4* x4 = reinterpret_cast<const uint4*>(x);

    float acc[ROWS][MAXB];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int b = 0; b < MAXB; ++b) acc[r][b] = 0.0f;

    for (int step = 0; step < K; step += 1024) {
        unsigned wq[4][ROWS];
        float sc[4][ROWS];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int k = step + q * 256 + lane * 8;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) wq[q][r] = k < K ? __ldcs(wrow[r] + (k >> 3)) : 0u;
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int k = step + q * 256 + lane * 8;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const size_t blk = blk0[r] + (size_t)(min(k, K - 8) >> 6);  // clamped: always in range
                sc[q][r] = __ldg(code8 + __ldg(absmax_q + blk)) * __ldg(absmax2 + (blk >> 8)) + off;
            }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int k = step + q * 256 + lane * 8;
            if (k < K) {
                // decode 8 codes per row: byte j of the word holds elements 2j (high) and 2j+1 (low)
                float wf[ROWS][8];
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const unsigned byte = (wq[q][r] >> (8 * j)) & 0xffu;
                        wf[r][2 * j] = lut[byte >> 4];
                        wf[r][2 * j + 1] = lut[byte & 15u];
                    }
                }
#pragma unroll
                for (int b = 0; b < MAXB; ++b) {
                    if (b < B) {
                        const uint4 xv = __ldg(x4 + (((size_t)b * (size_t)K + (size_t)k) >> 3));
                        const float xf[8] = {bf_lo(xv.x), bf_hi(xv.x), bf_lo(xv.y), bf_hi(xv.y),
                                             bf_lo(xv.z), bf_hi(xv.z), bf_lo(xv.w), bf_hi(xv.w)};
#pragma unroll
                        for (int r = 0; r < ROWS; ++r) {
                            float part = 0.0f;
#pragma unroll
                            for (int e = 0; e < 8; ++e) part = fmaf(wf[r][e], xf[e], part);
                            acc[r][b] = fmaf(part, sc[q][r], acc[r][b]);
                        }
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
        for (int b = 0; b < MAXB; ++b) {
            if (b < B) {
                float v = acc[r][b];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
                if (lane == 0 && n0 + r < N) y[(size_t)b * (size_t)N + (size_t)(n0 + r)] = __float2bfloat16_rn(v);
            }
        }
    }
}

#define INST(MB, R)                                                                                      \
    template __global__ void nf4_gemv<MB, R>(const __nv_bfloat16*, const unsigned char*,                \
                                             const unsigned char*, const float*, const float*,          \
                                             const float*, const float*, __nv_bfloat16*, int, int, int);
INST(1, 4)
INST(4, 4)
INST(8, 2)
INST(16, 2)
