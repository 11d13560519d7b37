// LangSplatV2 sparse-coefficient splatting + codebook decode, fp32, one fused launch.
//
// Techniques (LangSplatV2's "sparse coefficient field" rendering on top of the 3DGS rasterizer's
// renderCUDA, graphdeco-inria/diff-gaussian-rasterization forward.cu; code written from scratch):
//  * one 16x16 block per tile, one thread per pixel, the tile's list fetched in batches of 256 entries
//    into shared memory (coalesced structure-of-arrays loads; codes copied as flat arrays), early
//    exit of the whole block through __syncthreads_count, as in 3DGS;
//  * the blend touches only the Ks codes of each Gaussian: the pixel's L-dim coefficient vector lives
//    in shared memory as column tid of an [L][256] array (dynamic indices, no register spills, and
//    every thread updates its own column: conflict-free);
//  * the decode feat = A . CB runs in the same block once the tile is blended, so A never goes to
//    HBM: each warp owns 32 pixels, lanes own 4 consecutive feature columns of a 128-column chunk,
//    16 pixels x 4 columns of fp32 accumulators per pass (float4 broadcast reads of A, float4
//    codebook reads from L1/L2), and every store is a 512-byte coalesced float4 row segment.
// Dynamic shared memory: 4*L*256 (A) + 256*(16 + 8) (conic+opacity, mean) + 256*Ks*8 (codes).

namespace {
constexpr int kTile = 16;
constexpr int kBlock = kTile * kTile;
}  // namespace

extern "C" __global__ void __launch_bounds__(kBlock)
lsv2_splat_decode(const int* __restrict__ tile_offsets, const float2* __restrict__ xy,
                  const float* __restrict__ conic_a, const float* __restrict__ conic_b,
                  const float* __restrict__ conic_c, const float* __restrict__ opacity,
                  const int* __restrict__ code_idx, const float* __restrict__ code_w,
                  const float* __restrict__ CB, float* __restrict__ feat, int H, int W, int L,
                  int Ks, int Df) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float* A_s = reinterpret_cast<float*>(smem_raw);                 // [L][256]
    float4* s_co = reinterpret_cast<float4*>(A_s + L * kBlock);      // a, b, c, opacity
    float2* s_xy = reinterpret_cast<float2*>(s_co + kBlock);
    int* s_idx = reinterpret_cast<int*>(s_xy + kBlock);              // [256][Ks]
    float* s_w = reinterpret_cast<float*>(s_idx + kBlock * Ks);      // [256][Ks]

    const int tid = threadIdx.x;
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    const int lx = tid % kTile, ly = tid / kTile;
    const int px = blockIdx.x * kTile + lx, py = blockIdx.y * kTile + ly;
    const bool inside = px < W && py < H;
    const float fx = (float)lx, fy = (float)ly;  // means are tile-relative

    for (int l = 0; l < L; ++l) A_s[l * kBlock + tid] = 0.f;

    const int begin = tile_offsets[tile];
    const int end = tile_offsets[tile + 1];
    bool done = !inside;
    float T = 1.f;
    for (int base = begin; base < end; base += kBlock) {
        // barrier (the previous batch is consumed) + whole-block early exit
        if (__syncthreads_count(done) == kBlock) break;
        const int n = min(kBlock, end - base);
        if (tid < n) {
            const int e = base + tid;
            s_xy[tid] = xy[e];
            s_co[tid] = make_float4(conic_a[e], conic_b[e], conic_c[e], opacity[e]);
        }
        for (int i = tid; i < n * Ks; i += kBlock) {
            s_idx[i] = code_idx[(size_t)base * Ks + i];
            s_w[i] = code_w[(size_t)base * Ks + i];
        }
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
            const float wgt = alpha * T;
            for (int k = 0; k < Ks; ++k) {
                float* a = A_s + s_idx[j * Ks + k] * kBlock + tid;
                *a = fmaf(wgt, s_w[j * Ks + k], *a);
            }
            T = test_T;
        }
    }
    __syncthreads();  // every pixel's A column is final

    // decode: warp w owns tile pixels 32w .. 32w+31, in two passes of 16
    const int warp = tid >> 5, lane = tid & 31;
    for (int c0 = 0; c0 < Df; c0 += 128) {
        const int d = c0 + lane * 4;
        const bool dvalid = d < Df;  // Df % 4 == 0: a float4 is all in or all out
#pragma unroll 1
        for (int half = 0; half < 2; ++half) {
            const int p0 = warp * 32 + half * 16;
            float4 acc[16];
#pragma unroll
            for (int i = 0; i < 16; ++i) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (dvalid) {
                for (int l = 0; l < L; ++l) {
                    const float4 cb = __ldg(reinterpret_cast<const float4*>(CB + (size_t)l * Df + d));
                    const float4* ar = reinterpret_cast<const float4*>(A_s + l * kBlock + p0);
#pragma unroll
                    for (int i4 = 0; i4 < 4; ++i4) {
                        const float4 a4 = ar[i4];  // same address across the warp: broadcast
                        const float av[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
                        for (int u = 0; u < 4; ++u) {
                            float4& o = acc[i4 * 4 + u];
                            o.x = fmaf(av[u], cb.x, o.x);
                            o.y = fmaf(av[u], cb.y, o.y);
                            o.z = fmaf(av[u], cb.z, o.z);
                            o.w = fmaf(av[u], cb.w, o.w);
                        }
                    }
                }
#pragma unroll
                for (int i = 0; i < 16; ++i) {
                    const int p = p0 + i;
                    const int qx = blockIdx.x * kTile + p % kTile, qy = blockIdx.y * kTile + p / kTile;
                    if (qx < W && qy < H)
                        __stcs(reinterpret_cast<float4*>(feat + ((size_t)qy * W + qx) * Df + d), acc[i]);
                }
            }
        }
    }
}
