// 3DGS per-tile front-to-back alpha blending (the rasterizer's renderCUDA forward), fp32.
//
// Techniques (after graphdeco-inria/diff-gaussian-rasterization cuda_rasterizer/forward.cu
// renderCUDA; code written from scratch):
//  * one 16x16 block per tile, one thread per pixel;
//  * the block cooperatively fetches the tile's list in batches of 256 entries into shared memory
//    (coalesced structure-of-arrays loads: position, conic + opacity packed as float4, features),
//    then every pixel walks the batch front to back from shared memory (broadcast reads);
//  * early exit: a pixel stops at its saturation point (T < 1e-4), and the whole block leaves the
//    list as soon as __syncthreads_count says every pixel is done;
//  * the running colour stays in registers (Cf is a template parameter).

namespace {
constexpr int kTile = 16;
constexpr int kBlock = kTile * kTile;
}  // namespace

// grid = (ceil_div(W, 16), ceil_div(H, 16)), block = 256.
template <int CF>
__global__ void __launch_bounds__(kBlock) gs_blend_fwd(
    const int* __restrict__ tile_offsets, const float2* __restrict__ xy,
    const float* __restrict__ conic_a, const float* __restrict__ conic_b,
    const float* __restrict__ conic_c, const float* __restrict__ opacity,
    const float* __restrict__ feat, const float* __restrict__ bg, float* __restrict__ image,
    float* __restrict__ final_T, int H, int W) {
    __shared__ float2 s_xy[kBlock];
    __shared__ float4 s_co[kBlock];  // a, b, c, opacity
    __shared__ float s_feat[kBlock * CF];

    const int tid = threadIdx.x;
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    const int lx = tid % kTile, ly = tid / kTile;
    const int px = blockIdx.x * kTile + lx, py = blockIdx.y * kTile + ly;
    const bool inside = px < W && py < H;
    // Means are tile-relative, so d = mean - p uses the pixel's position inside the tile.
    const float fx = (float)lx, fy = (float)ly;

    const int begin = tile_offsets[tile];
    const int end = tile_offsets[tile + 1];

    bool done = !inside;
    float T = 1.f;
    float C[CF];
#pragma unroll
    for (int k = 0; k < CF; ++k) C[k] = 0.f;

    for (int base = begin; base < end; base += kBlock) {
        // Whole block leaves once every pixel is saturated (or outside the image).
        if (__syncthreads_count(done) == kBlock) break;
        const int n = min(kBlock, end - base);
        if (tid < n) {
            const int e = base + tid;
            s_xy[tid] = xy[e];
            s_co[tid] = make_float4(conic_a[e], conic_b[e], conic_c[e], opacity[e]);
        }
        for (int i = tid; i < n * CF; i += kBlock) s_feat[i] = feat[(size_t)base * CF + i];
        __syncthreads();
        for (int j = 0; !done && j < n; ++j) {
            const float2 m = s_xy[j];
            const float4 co = s_co[j];
            const float dx = m.x - fx, dy = m.y - fy;
            const float power = -0.5f * (co.x * dx * dx + co.z * dy * dy) - co.y * dx * dy;
            if (power > 0.f) continue;
            const float alpha = fminf(0.99f, co.w * expf(power));
            if (alpha < 1.f / 255.f) continue;
            const float test_T = T * (1.f - alpha);
            if (test_T < 0.0001f) {
                done = true;
                break;
            }
            const float w = alpha * T;
#pragma unroll
            for (int k = 0; k < CF; ++k) C[k] = fmaf(s_feat[j * CF + k], w, C[k]);
            T = test_T;
        }
        // The next batch overwrites shared memory: its __syncthreads_count doubles as the barrier.
    }

    if (inside) {
        const size_t pix = (size_t)py * W + px;
        const size_t plane = (size_t)H * W;
#pragma unroll
        for (int k = 0; k < CF; ++k) image[k * plane + pix] = C[k] + T * bg[k * plane + pix];
        final_T[pix] = T;
    }
}

template __global__ void gs_blend_fwd<3>(const int*, const float2*, const float*, const float*, const float*, const float*, const float*, const float*, float*, float*, int, int);
template __global__ void gs_blend_fwd<16>(const int*, const float2*, const float*, const float*, const float*, const float*, const float*, const float*, float*, float*, int, int);
