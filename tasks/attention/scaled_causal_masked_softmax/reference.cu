// y[b, h, i, :] = softmax(scale * S[b, h, i, :] with columns j > i masked to -inf), bf16 in/out,
// fp32 math; masked outputs are exactly 0.
//
// Techniques (code written from scratch; the ideas come from Megatron-LM's
// scaled_upper_triang_masked_softmax CUDA kernel and the usual warp-softmax recipe):
//  - one warp per row, the whole row held in registers (VPL 16-byte chunks of 8 bf16 per lane),
//    so the row is read once; max and sum by __shfl_xor_sync butterflies, no shared memory;
//  - causality skips work: a lane loads only chunks that hold a column j <= i, and chunks wholly
//    beyond the diagonal are just written as zeros (reads ~ half of the matrix);
//  - 16-byte loads/stores; consecutive lanes own consecutive chunks (coalesced 512 B per warp op).
//    Rows start at r*L elements, so for L % 8 != 0 a row's first/last chunk is only partly inside
//    the row: chunks are aligned to the global 8-element grid and the partial ones use scalar
//    accesses restricted to the row's own columns (no reads or writes outside the row);
//  - __expf on arguments <= 0 (scaled logit minus row max), fp32 sums; bf16 rounding once.
// Launch: 4 warps (rows) per 128-thread block; VPL is chosen by the plan so that 32 * VPL chunks
// cover the row's chunks.
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ unsigned pack_bf2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
}
static __device__ __forceinline__ float word_elem(const uint4& q, int p) {
    const unsigned w = p < 2 ? q.x : p < 4 ? q.y : p < 6 ? q.z : q.w;
    return (p & 1) ? bf_hi(w) : bf_lo(w);
}

template <int VPL>
__global__ void __launch_bounds__(128)
scaled_causal_masked_softmax(const __nv_bfloat16* __restrict__ S, __nv_bfloat16* __restrict__ Y, int rows, int L,
                             float scale) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= rows) return;  // whole warp leaves together: no later shuffle sees it
    const int i = row % L;      // query index: columns 0..i are kept
    const size_t e0 = (size_t)row * (size_t)L;
    const int off = (int)(e0 & 7);             // row start inside its 8-element chunk
    const int nch = (off + L + 7) >> 3;        // chunks touching the row
    const int last_live = (off + i) >> 3;      // last chunk holding a kept column
    const unsigned short* src = reinterpret_cast<const unsigned short*>(S) + (e0 - off);
    unsigned short* dst = reinterpret_cast<unsigned short*>(Y) + (e0 - off);

    // Load the live chunks (masked lanes of a chunk read as 0 and are ignored below).
    uint4 q[VPL];
    float mx = __int_as_float(0xff800000);  // -inf
#pragma unroll
    for (int v = 0; v < VPL; ++v) {
        const int c = lane + 32 * v;
        q[v] = make_uint4(0u, 0u, 0u, 0u);
        if (c <= last_live) {
            const int j0 = c * 8 - off;  // column of the chunk's first element
            if (j0 >= 0 && j0 + 8 <= L) {
                q[v] = __ldg(reinterpret_cast<const uint4*>(src) + c);
            } else {
                unsigned short e[8];
#pragma unroll
                for (int p = 0; p < 8; ++p) e[p] = (j0 + p >= 0 && j0 + p <= i) ? src[c * 8 + p] : (unsigned short)0;
                q[v].x = e[0] | ((unsigned)e[1] << 16);
                q[v].y = e[2] | ((unsigned)e[3] << 16);
                q[v].z = e[4] | ((unsigned)e[5] << 16);
                q[v].w = e[6] | ((unsigned)e[7] << 16);
            }
#pragma unroll
            for (int p = 0; p < 8; ++p) {
                const int j = j0 + p;
                if (j >= 0 && j <= i) mx = fmaxf(mx, word_elem(q[v], p) * scale);
            }
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));

    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < VPL; ++v) {
        const int c = lane + 32 * v;
        if (c <= last_live) {
            const int j0 = c * 8 - off;
#pragma unroll
            for (int p = 0; p < 8; ++p) {
                const int j = j0 + p;
                if (j >= 0 && j <= i) sum += __expf(word_elem(q[v], p) * scale - mx);
            }
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    const float inv = 1.0f / sum;  // sum >= 1: the max element contributes exp(0)

    // Write every chunk of the row: probabilities for j <= i, zeros beyond the diagonal.
#pragma unroll
    for (int v = 0; v < VPL; ++v) {
        const int c = lane + 32 * v;
        if (c < nch) {
            const int j0 = c * 8 - off;
            float o[8];
#pragma unroll
            for (int p = 0; p < 8; ++p) {
                const int j = j0 + p;
                o[p] = (c <= last_live && j >= 0 && j <= i) ? __expf(word_elem(q[v], p) * scale - mx) * inv : 0.0f;
            }
            if (j0 >= 0 && j0 + 8 <= L) {
                uint4 w;
                w.x = pack_bf2(o[0], o[1]);
                w.y = pack_bf2(o[2], o[3]);
                w.z = pack_bf2(o[4], o[5]);
                w.w = pack_bf2(o[6], o[7]);
                *(reinterpret_cast<uint4*>(dst) + c) = w;
            } else {
#pragma unroll
                for (int p = 0; p < 8; ++p) {
                    const int j = j0 + p;
                    if (j >= 0 && j < L) {
                        const __nv_bfloat16 h = __float2bfloat16_rn(o[p]);
                        dst[c * 8 + p] = *reinterpret_cast<const unsigned short*>(&h);
                    }
                }
            }
        }
    }
}

template __global__ void scaled_causal_masked_softmax<1>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
template __global__ void scaled_causal_masked_softmax<2>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
template __global__ void scaled_causal_masked_softmax<4>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
template __global__ void scaled_causal_masked_softmax<8>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
template __global__ void scaled_causal_masked_softmax<16>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
template __global__ void scaled_causal_masked_softmax<32>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
// L in 8186..8191 (L % 8 != 0) can touch 1025 chunks: one more than 32 lanes x 32.
template __global__ void scaled_causal_masked_softmax<33>(const __nv_bfloat16*, __nv_bfloat16*, int, int, float);
