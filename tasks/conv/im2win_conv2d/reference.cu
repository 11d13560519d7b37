// Dense conv2d, fp32 NCHW, square K x K kernel, stride S, zero padding PD, strict fp32 (no TF32).
//
// Techniques (the Im2win paper's GPU kernel ingredients — window-ordered input reads, a register-
// tiled outer-product micro-kernel, shared-memory tiling, double buffering with register prefetch —
// in implicit-GEMM form; code written from scratch):
//  - GEMM view: out[co][pixel] = sum_k w[co][k] * window[k][pixel], k = (ci, r, s), pixel =
//    (n, oy, ox); the window matrix is never materialized: each B-tile element is gathered from x
//    on the fly (a warp's 32 consecutive pixels of one output row read one input-row segment of the
//    same (ci, r, s) tap with stride S — the contiguous window order im2win builds explicitly);
//  - block tile 64 output channels x 128 pixels x 8 taps, 256 threads, 4 x 8 outputs per thread
//    in registers (outer products of a float4 of weights and two float4 of window values);
//  - two shared-memory stages: the next tile is loaded into registers before the current one is
//    consumed and stored to the other stage afterwards (one barrier per k-tile); the weight stage is
//    k-major with a +4 float row skew so its transposing stores are bank-conflict-free.
#define BM 64
#define BN 128
#define BK 8
#define LDA (BM + 4)

extern "C" __global__ void __launch_bounds__(256)
conv2d_igemm_f32(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                 int N, int Ci, int H, int W, int Co, int K, int S, int PD, int Ho, int Wo) {
    __shared__ __align__(16) float As[2][BK][LDA];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int tid = threadIdx.x;
    const int KK = K * K, Ktot = Ci * KK;
    const int HoWo = Ho * Wo;
    const int Npix = N * HoWo;  // <= 2^28 (task constraint)
    const int co0 = blockIdx.y * BM, p0 = blockIdx.x * BN;

    // B loader: pixel column bpp, tap rows bk0 + 2u (u = 0..3)
    const int bpp = tid & (BN - 1), bk0 = tid >> 7;
    const int pix = p0 + bpp;
    const bool pvalid = pix < Npix;
    int iy0 = 0, ix0 = 0;
    const float* xn = x;
    if (pvalid) {
        const int n = pix / HoWo, rem = pix - n * HoWo;
        const int oy = rem / Wo, ox = rem - oy * Wo;
        iy0 = oy * S - PD;
        ix0 = ox * S - PD;
        xn = x + (size_t)n * Ci * H * W;
    }

    float ra[2], rb[4];
    auto load = [&](int k0) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {  // A: 64 x 8 weights, element e -> (row e / 8, tap e % 8)
            const int e = tid + 256 * u;
            const int co = co0 + (e >> 3), k = k0 + (e & 7);
            ra[u] = (co < Co && k < Ktot) ? __ldg(w + (size_t)co * Ktot + k) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int k = k0 + bk0 + 2 * u;
            float v = 0.f;
            if (pvalid && k < Ktot) {
                const int ci = k / KK, rs = k - ci * KK;
                const int r = rs / K, s = rs - r * K;
                const int iy = iy0 + r, ix = ix0 + s;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = __ldg(xn + ((size_t)ci * H + iy) * W + ix);
            }
            rb[u] = v;
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const int e = tid + 256 * u;
            As[buf][e & 7][e >> 3] = ra[u];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) Bs[buf][bk0 + 2 * u][bpp] = rb[u];
    };

    const int ty = tid >> 4, tx = tid & 15;  // outputs: co0 + 4 ty + i, p0 + 4 tx + j (+64)
    float acc[4][8];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    const int nk = (Ktot + BK - 1) / BK;
    load(0);
    store(0);
    __syncthreads();
    for (int kt = 0; kt < nk; ++kt) {
        const int buf = kt & 1;
        if (kt + 1 < nk) load((kt + 1) * BK);  // prefetch into registers
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][64 + tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (kt + 1 < nk) store(buf ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int p = p0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
        if (p >= Npix) continue;
        const int n = p / HoWo, rem = p - n * HoWo;
        float* o = out + (size_t)n * Co * HoWo + rem;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int co = co0 + ty * 4 + i;
            if (co < Co) o[(size_t)co * HoWo] = acc[i][j];
        }
    }
}
