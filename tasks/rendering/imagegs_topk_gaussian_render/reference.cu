// Image-GS top-K normalized 2-D Gaussian rendering, fp32.
//
// Techniques (Image-GS's renderer, NYU-ICL/image-gs gsplat rasterize_sum with TOP_K, on the 3DGS tile
// rasterizer pattern; code written from scratch):
//  * one 16x16 block per tile, one thread per pixel; the tile's list is fetched cooperatively in
//    batches of 256 entries into shared memory (mean as float2, conic as float4: broadcast reads);
//  * each pixel keeps its K best (weight, entry) pairs sorted in registers: a new weight enters only
//    if it beats the K-th (strict: the earlier of equal weights wins), and one unrolled
//    compare-and-shift pass inserts it, so the arrays are never dynamically indexed (no local memory);
//  * features are fetched only for the K winners at the end (K*C reads per pixel instead of
//    C per (pixel, entry)), then normalized: sum g f / (sum g + 1e-7), written planar and coalesced.

namespace {
constexpr int kTile = 16;
constexpr int kBlock = kTile * kTile;
}  // namespace

template <int K, int CMAX>
__global__ void __launch_bounds__(kBlock, 1)
imagegs_topk_render(const int* __restrict__ tile_offsets, const float2* __restrict__ xy,
                    const float* __restrict__ conic_a, const float* __restrict__ conic_b,
                    const float* __restrict__ conic_c, const float* __restrict__ feat,
                    float* __restrict__ image, int H, int W, int C) {
    __shared__ float2 s_xy[kBlock];
    __shared__ float4 s_co[kBlock];  // a, b, c, (entry index as bits)

    const int tid = threadIdx.x;
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    const int lx = tid % kTile, ly = tid / kTile;
    const int px = blockIdx.x * kTile + lx, py = blockIdx.y * kTile + ly;
    const float fx = (float)lx, fy = (float)ly;

    float tg[K];
    int te[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        tg[k] = -1.f;  // empty (every weight is >= 0)
        te[k] = -1;
    }

    const int begin = tile_offsets[tile];
    const int end = tile_offsets[tile + 1];
    for (int base = begin; base < end; base += kBlock) {
        const int n = min(kBlock, end - base);
        __syncthreads();  // the previous batch is consumed
        if (tid < n) {
            const int e = base + tid;
            s_xy[tid] = xy[e];
            s_co[tid] = make_float4(conic_a[e], conic_b[e], conic_c[e], __int_as_float(e));
        }
        __syncthreads();
        for (int j = 0; j < n; ++j) {
            const float2 m = s_xy[j];
            const float4 co = s_co[j];
            const float dx = m.x - fx, dy = m.y - fy;
            const float g = expf(-0.5f * (co.x * dx * dx + co.z * dy * dy) - co.y * dx * dy);
            if (!(g > tg[K - 1])) continue;
            // insert after every slot with a weight >= g; the smaller ones shift down in order
            const int e = __float_as_int(co.w);
#pragma unroll
            for (int k = K - 1; k > 0; --k) {
                if (g > tg[k - 1]) {
                    tg[k] = tg[k - 1];
                    te[k] = te[k - 1];
                } else if (g > tg[k]) {
                    tg[k] = g;
                    te[k] = e;
                }
            }
            if (g > tg[0]) {
                tg[0] = g;
                te[0] = e;
            }
        }
    }

    if (px < W && py < H) {
        float acc[CMAX];
#pragma unroll
        for (int c = 0; c < CMAX; ++c) acc[c] = 0.f;
        float wsum = 0.f;
#pragma unroll
        for (int k = 0; k < K; ++k) {
            if (te[k] < 0) continue;
            const float g = tg[k];
            wsum += g;
            const float* f = feat + (size_t)te[k] * C;
#pragma unroll
            for (int c = 0; c < CMAX; ++c)
                if (c < C) acc[c] = fmaf(g, __ldg(f + c), acc[c]);
        }
        const float inv = 1.f / (wsum + 1e-7f);
        const size_t plane = (size_t)H * W, pix = (size_t)py * W + px;
#pragma unroll
        for (int c = 0; c < CMAX; ++c)
            if (c < C) image[c * plane + pix] = acc[c] * inv;
    }
}

#define INST(K, CM)                                                                               \
    template __global__ void imagegs_topk_render<K, CM>(const int*, const float2*, const float*,   \
                                                        const float*, const float*, const float*,  \
                                                        float*, int, int, int);
INST(4, 4)
INST(4, 16)
INST(10, 4)
INST(10, 16)
