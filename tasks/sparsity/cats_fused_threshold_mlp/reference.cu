// CATS thresholded gated MLP, decode (B <= 4 tokens), fp16 weights, fp32 accumulation.
//
// Techniques (after the CATS paper's fused GEMV kernels, ScalingIntelligence/CATS
// flash_gemv/csrc/cuda/fuse_gemv_cmp_cuda.cu, and the Flash-LLM/CATS "skip inactive rows" idea;
// code written from scratch):
//  * kernel 1 (cats_gate_up): one warp per MLP unit streams the gate row with 16-byte read-only
//    loads (x staged once per block in shared memory), reduces with warp shuffles, applies SiLU and
//    the threshold in the same pass, and only if some token keeps the unit streams the up row too:
//    the gate GEMV, the compare and the up GEMV are fused and inactive Wu rows are never read.
//  * kernel 2 (cats_down): Wd is stored [I, H] so an active unit is one contiguous row. A block
//    owns 256 output columns x one chunk of units; each warp ballots 32 unit flags at a time and
//    streams only active rows (4 independent 16-byte loads in flight per lane). Warps combine in
//    shared memory, blocks write per-chunk partials, and the last block of each column slice
//    (threadfence + arrival counter zeroed by kernel 1) sums the chunks in a fixed order, so the
//    result is deterministic without a third launch.
#include <cuda_fp16.h>

namespace {

constexpr int kWarps = 8;         // warps per block in both kernels
constexpr int kUnitsPerWarp = 4;  // kernel 1: units handled by one warp
constexpr int kCols = 256;        // kernel 2: output columns per block (32 lanes x 8 halves)

__device__ __forceinline__ uint4 ldg_stream(const uint4* p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float dot8(const uint4 a, const uint4 b, float acc) {
    const __half2* a2 = reinterpret_cast<const __half2*>(&a);
    const __half2* b2 = reinterpret_cast<const __half2*>(&b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 fa = __half22float2(a2[j]);
        const float2 fb = __half22float2(b2[j]);
        acc = fmaf(fa.x, fb.x, acc);
        acc = fmaf(fa.y, fb.y, acc);
    }
    return acc;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// acc[b] += dot(row, x_b) over the whole row; row is H/8 uint4, x_s holds NB rows of H/8 uint4.
template <int NB>
__device__ __forceinline__ void row_dots(const uint4* __restrict__ row, const uint4* x_s, int H8,
                                         int lane, float (&acc)[NB]) {
    int c = lane;
    // Four independent 16-byte loads in flight per lane, then the tail (H/256 need not be % 4).
    for (; c + 96 < H8; c += 128) {
        uint4 w[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) w[q] = ldg_stream(row + c + 32 * q);
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int b = 0; b < NB; ++b) acc[b] = dot8(w[q], x_s[b * H8 + c + 32 * q], acc[b]);
    }
    for (; c < H8; c += 32) {
        const uint4 w = ldg_stream(row + c);
#pragma unroll
        for (int b = 0; b < NB; ++b) acc[b] = dot8(w, x_s[b * H8 + c], acc[b]);
    }
}

}  // namespace

// grid = ceil_div(I, kWarps * kUnitsPerWarp), block = 256, dynamic smem = NB * H * 2 bytes.
// Writes h4[i] = (h[0,i], h[1,i], h[2,i], h[3,i]) (zeros past NB) and zeroes the kernel-2 counters.
template <int NB>
__global__ void cats_gate_up(const __half* __restrict__ x,
                                                    const __half* __restrict__ Wg,
                                                    const __half* __restrict__ Wu,
                                                    const float* __restrict__ tau_p,
                                                    float4* __restrict__ h4,
                                                    unsigned* __restrict__ counters, int I, int H,
                                                    int n_counters) {
    extern __shared__ uint4 x_s[];  // NB * H / 8
    const int tid = threadIdx.x;
    const int H8 = H >> 3;
    const uint4* xg = reinterpret_cast<const uint4*>(x);
    for (int k = tid; k < NB * H8; k += blockDim.x) x_s[k] = xg[k];
    if (blockIdx.x == 0)
        for (int k = tid; k < n_counters; k += blockDim.x) counters[k] = 0u;
    __syncthreads();

    const float tau = __ldg(tau_p);
    const int warp = tid >> 5, lane = tid & 31;
    const uint4* Wg4 = reinterpret_cast<const uint4*>(Wg);
    const uint4* Wu4 = reinterpret_cast<const uint4*>(Wu);

    for (int k = 0; k < kUnitsPerWarp; ++k) {
        const int i = (blockIdx.x * kWarps + warp) * kUnitsPerWarp + k;  // warp-uniform
        if (i >= I) break;
        float v[NB];
#pragma unroll
        for (int b = 0; b < NB; ++b) v[b] = 0.f;
        row_dots<NB>(Wg4 + (size_t)i * H8, x_s, H8, lane, v);
        float g[NB];
        bool any = false;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            const float vb = warp_sum(v[b]);
            const float gb = __fdividef(vb, 1.f + __expf(-vb));  // SiLU; x / inf = 0 for very negative v
            const bool keep = fabsf(gb) > tau;
            g[b] = keep ? gb : 0.f;
            any |= keep;
        }
        float u[NB];
#pragma unroll
        for (int b = 0; b < NB; ++b) u[b] = 0.f;
        if (any) {  // warp-uniform: every lane holds the reduced sums
            row_dots<NB>(Wu4 + (size_t)i * H8, x_s, H8, lane, u);
#pragma unroll
            for (int b = 0; b < NB; ++b) u[b] = warp_sum(u[b]) * g[b];
        }
        if (lane == 0)
            h4[i] = make_float4(u[0], NB > 1 ? u[NB > 1 ? 1 : 0] : 0.f, NB > 2 ? u[NB > 2 ? 2 : 0] : 0.f,
                                NB > 3 ? u[NB > 3 ? 3 : 0] : 0.f);
    }
}

// grid = (H / 256, n_chunk), block = 256. partial: [n_chunk, NB, H] f32; counters: [H / 256].
template <int NB>
__global__ void __launch_bounds__(256) cats_down(const float4* __restrict__ h4,
                                                 const __half* __restrict__ Wd,
                                                 float* __restrict__ partial,
                                                 unsigned* __restrict__ counters,
                                                 __half* __restrict__ y, int I, int H) {
    __shared__ float4 red[kWarps][NB][kCols / 4];
    __shared__ bool is_last;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_chunk = gridDim.y;
    const int chunk = blockIdx.y;
    const int col0 = blockIdx.x * kCols;
    const int rows = ((I + n_chunk - 1) / n_chunk + 31) & ~31;
    const int start = chunk * rows;
    const int end = min(I, start + rows);
    const int H8 = H >> 3;
    const uint4* Wd4 = reinterpret_cast<const uint4*>(Wd) + (col0 >> 3) + lane;

    float acc[NB][8];
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[b][j] = 0.f;

    for (int g0 = start + warp * 32; g0 < end; g0 += kWarps * 32) {
        const int r = g0 + lane;
        const float4 hv = r < end ? h4[r] : make_float4(0.f, 0.f, 0.f, 0.f);
        unsigned act = __ballot_sync(0xffffffffu,
                                     hv.x != 0.f || hv.y != 0.f || hv.z != 0.f || hv.w != 0.f);
        while (act) {  // act is warp-uniform
            int sel[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                if (act) {
                    sel[q] = __ffs(act) - 1;
                    act &= act - 1;
                } else {
                    sel[q] = -1;
                }
            }
            uint4 w[4];
#pragma unroll
            for (int q = 0; q < 4; ++q)
                w[q] = sel[q] >= 0 ? ldg_stream(Wd4 + (size_t)(g0 + sel[q]) * H8)
                                   : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                if (sel[q] < 0) break;  // uniform
                float hb[4];
                hb[0] = __shfl_sync(0xffffffffu, hv.x, sel[q]);
                hb[1] = __shfl_sync(0xffffffffu, hv.y, sel[q]);
                hb[2] = __shfl_sync(0xffffffffu, hv.z, sel[q]);
                hb[3] = __shfl_sync(0xffffffffu, hv.w, sel[q]);
                const __half2* w2 = reinterpret_cast<const __half2*>(&w[q]);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float2 f = __half22float2(w2[j]);
#pragma unroll
                    for (int b = 0; b < NB; ++b) {
                        acc[b][2 * j] = fmaf(hb[b], f.x, acc[b][2 * j]);
                        acc[b][2 * j + 1] = fmaf(hb[b], f.y, acc[b][2 * j + 1]);
                    }
                }
            }
        }
    }

    // Combine the 8 warps: lane owns columns lane*8 .. lane*8+7.
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        red[warp][b][2 * lane] = make_float4(acc[b][0], acc[b][1], acc[b][2], acc[b][3]);
        red[warp][b][2 * lane + 1] = make_float4(acc[b][4], acc[b][5], acc[b][6], acc[b][7]);
    }
    __syncthreads();
    const float* red_f = reinterpret_cast<const float*>(red);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) s += red_f[(w * NB + b) * kCols + tid];
        partial[((size_t)chunk * NB + b) * H + col0 + tid] = s;
    }

    // Last-arriving block of this column slice reduces the chunks in a fixed order.
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&counters[blockIdx.x], 1u) == (unsigned)(n_chunk - 1);
    __syncthreads();
    if (!is_last) return;
    __threadfence();
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        float s = 0.f;
        for (int c = 0; c < n_chunk; ++c) s += __ldcg(&partial[((size_t)c * NB + b) * H + col0 + tid]);
        y[(size_t)b * H + col0 + tid] = __float2half_rn(s);
    }
}

template __global__ void cats_gate_up<1>(const __half*, const __half*, const __half*, const float*, float4*, unsigned*, int, int, int);
template __global__ void cats_gate_up<2>(const __half*, const __half*, const __half*, const float*, float4*, unsigned*, int, int, int);
template __global__ void cats_gate_up<3>(const __half*, const __half*, const __half*, const float*, float4*, unsigned*, int, int, int);
template __global__ void cats_gate_up<4>(const __half*, const __half*, const __half*, const float*, float4*, unsigned*, int, int, int);
template __global__ void cats_down<1>(const float4*, const __half*, float*, unsigned*, __half*, int, int);
template __global__ void cats_down<2>(const float4*, const __half*, float*, unsigned*, __half*, int, int);
template __global__ void cats_down<3>(const float4*, const __half*, float*, unsigned*, __half*, int, int);
template __global__ void cats_down<4>(const float4*, const __half*, float*, unsigned*, __half*, int, int);
