// MILLION decode attention over a product-quantized KV cache (D = 128, 256 centroids per subspace).
//
// Techniques (after MILLION, ZongwuWang/MILLION scripts/modeldb/bindings/Kernel.cuh
// flash_decoding_split_kernel / flash_decoding_residual_kernel, and flash-decoding's split-KV with
// a log-sum-exp merge; code written from scratch):
//  * asymmetric-distance lookup table: every block builds LUT[g][m][c] = q_g,m . Ck[m, c] for the
//    G query heads of its KV head in shared memory (fp16, pre-scaled by log2(e)/sqrt(D) so softmax
//    runs in the exp2 domain); a score is then M table lookups instead of a 128-wide dot product;
//  * the codes of a token are read with 16-byte loads (one thread per token for scores), the V
//    codes of a 256-token tile are staged in shared memory with coalesced 16-byte loads;
//  * V is decoded on the fly, parallel over the head dim (thread = channel, two token halves), from
//    the V codebook held in shared memory, so no atomics are needed;
//  * flash-decoding split over tokens (split count chosen by the plan to fill the GPU) with an
//    online softmax, one extra split per KV head for the dense recent window, and a deterministic
//    log-sum-exp merge kernel.
#include <cuda_fp16.h>

namespace {

constexpr int kD = 128;
constexpr int kThreads = 256;
constexpr int kTile = 256;  // tokens per tile (one per thread in the score phase)

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// Dynamic shared memory, bytes; the plan's shared_bytes is 65792 + 512*G*M + 256*M + 1536*G.
template <int G, int M>
struct Smem {
    static constexpr int cv = 0;                         // [M][256][D/M] halves = 256*D halves
    static constexpr int lut = cv + 256 * kD * 2;        // [G][M][256] halves
    static constexpr int vc = lut + G * M * 256 * 2;     // [kTile][M] u8
    static constexpr int q = vc + kTile * M;             // [G][D] f32
    static constexpr int sc = q + G * kD * 4;            // [G][kTile] f32
    static constexpr int red = sc + G * kTile * 4;       // [8][8] f32
    static constexpr int total = red + 256;
    static_assert(total == 65792 + 512 * G * M + 256 * M + 1536 * G, "plan shared_bytes formula");
};

}  // namespace

// grid = (NS + 1, B*Hkv), block = 256. Split x < NS covers tokens [x*TS, min(S, (x+1)*TS)) of
// the PQ cache (possibly empty); split NS is the dense window. Writes unnormalized partial outputs
// o_part[split][b*Hq + h][D] and (max, sum) in ml_part, both in the log2 domain.
template <int G, int M>
__global__ void million_split(const __half* __restrict__ q, const __half* __restrict__ Ck,
                              const __half* __restrict__ Cv, const unsigned char* __restrict__ kcode,
                              const unsigned char* __restrict__ vcode,
                              const __half* __restrict__ k_res, const __half* __restrict__ v_res,
                              float* __restrict__ o_part, float* __restrict__ ml_part, int Hkv,
                              int S, int R, int TS) {
    constexpr int DSUB = kD / M;
    static_assert(DSUB == 2 || DSUB == 4 || DSUB == 8, "M");
    static_assert(G * M <= 128, "LUT size");
    using L = Smem<G, M>;
    extern __shared__ __align__(16) unsigned char smem[];
    __half* cv_s = reinterpret_cast<__half*>(smem + L::cv);
    __half* lut = reinterpret_cast<__half*>(smem + L::lut);
    unsigned char* vc_s = smem + L::vc;
    float* q_s = reinterpret_cast<float*>(smem + L::q);
    float* sc_s = reinterpret_cast<float*>(smem + L::sc);
    float* red_s = reinterpret_cast<float*>(smem + L::red);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x;
    const int NS = gridDim.x - 1;
    const int bh = blockIdx.y;
    const int b = bh / Hkv, hk = bh % Hkv;
    const int Hq = Hkv * G;
    const size_t head0 = (size_t)b * Hq + (size_t)hk * G;

    const float qscale = 1.4426950408889634f * 0.08838834764831845f;  // log2(e) / sqrt(128)
    for (int i = tid; i < G * kD; i += kThreads) q_s[i] = __half2float(q[head0 * kD + i]) * qscale;

    // Thread roles in the P.V phase: channel d, token parity.
    const int d = tid & (kD - 1), half_id = tid >> 7;
    float acc[G], l_part[G], m_run[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        acc[g] = 0.f;
        l_part[g] = 0.f;
        m_run[g] = neg_inf();
    }

    // Online-softmax step shared by both paths: sc_s holds log2-domain scores for n tokens
    // (-inf beyond); turns them into probabilities and rescales the running state.
    auto softmax_step = [&](int n_tok, float (&s_own)[G], bool own_valid) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mx = own_valid ? s_own[g] : neg_inf();
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            if (lane == 0) red_s[g * 8 + warp] = mx;
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mx = red_s[g * 8];
#pragma unroll
            for (int w = 1; w < 8; ++w) mx = fmaxf(mx, red_s[g * 8 + w]);
            const float m_new = fmaxf(m_run[g], mx);  // finite: n_tok >= 1
            const float alpha = exp2f(m_run[g] - m_new);
            m_run[g] = m_new;
            const float p = own_valid ? exp2f(s_own[g] - m_new) : 0.f;
            if (tid < kTile) sc_s[g * kTile + tid] = p;
            l_part[g] = l_part[g] * alpha + p;
            acc[g] *= alpha;
        }
        (void)n_tok;
        __syncthreads();
    };

    if (split < NS) {
        const int s_begin = split * TS;
        const int s_end = min(S, s_begin + TS);
        if (s_begin < s_end) {
            // V codebook -> shared memory (coalesced 16-byte copy).
            {
                const uint4* src = reinterpret_cast<const uint4*>(Cv);
                uint4* dst = reinterpret_cast<uint4*>(cv_s);
#pragma unroll 4
                for (int i = tid; i < 256 * kD / 8; i += kThreads) dst[i] = __ldg(src + i);
            }
            __syncthreads();  // q_s visible
            // LUT build: thread per (m, c) centroid row, all G heads.
            for (int i = tid; i < M * 256; i += kThreads) {
                const int m = i >> 8;
                float c[DSUB];
#pragma unroll
                for (int j = 0; j < DSUB; j += 2) {
                    const float2 f = __half22float2(
                        __ldg(reinterpret_cast<const __half2*>(Ck + (size_t)i * DSUB + j)));
                    c[j] = f.x;
                    c[j + 1] = f.y;
                }
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    float s = 0.f;
#pragma unroll
                    for (int j = 0; j < DSUB; ++j) s = fmaf(q_s[g * kD + m * DSUB + j], c[j], s);
                    lut[g * M * 256 + i] = __float2half_rn(s);
                }
            }
            __syncthreads();

            const unsigned char* kc = kcode + ((size_t)bh * S) * M;
            const unsigned char* vcg = vcode + ((size_t)bh * S) * M;
            for (int t0 = s_begin; t0 < s_end; t0 += kTile) {
                const int n = min(kTile, s_end - t0);
                // Stage this tile's V codes (n*M bytes, 16-byte aligned since M % 16 == 0).
                {
                    const uint4* src = reinterpret_cast<const uint4*>(vcg + (size_t)t0 * M);
                    uint4* dst = reinterpret_cast<uint4*>(vc_s);
                    const int n16 = n * M / 16;
#pragma unroll 4
                    for (int i = tid; i < n16; i += kThreads) dst[i] = __ldg(src + i);
                }
                // Scores: thread per token, M table lookups per head.
                float s_own[G];
#pragma unroll
                for (int g = 0; g < G; ++g) s_own[g] = 0.f;
                const bool valid = tid < n;
                if (valid) {
                    const uint4* codes = reinterpret_cast<const uint4*>(kc + (size_t)(t0 + tid) * M);
                    uint4 cw[M / 16];
#pragma unroll
                    for (int k = 0; k < M / 16; ++k) cw[k] = __ldg(codes + k);
#pragma unroll
                    for (int k = 0; k < M / 16; ++k) {
                        const unsigned w4[4] = {cw[k].x, cw[k].y, cw[k].z, cw[k].w};
#pragma unroll
                        for (int e = 0; e < 16; ++e) {
                            const int m = k * 16 + e;
                            const unsigned c = (w4[e >> 2] >> (8 * (e & 3))) & 0xffu;
#pragma unroll
                            for (int g = 0; g < G; ++g)
                                s_own[g] += __half2float(lut[(g * M + m) * 256 + c]);
                        }
                    }
                }
                softmax_step(n, s_own, valid);
                // P.V: decode V channel d of every token of this parity from the codebook.
                {
                    const int m = d / DSUB, j = d % DSUB;
                    const __half* cv_m = cv_s + m * 256 * DSUB + j;
#pragma unroll 4
                    for (int s = half_id; s < n; s += 2) {
                        const int c = vc_s[s * M + m];
                        const float v = __half2float(cv_m[c * DSUB]);
#pragma unroll
                        for (int g = 0; g < G; ++g) acc[g] = fmaf(sc_s[g * kTile + s], v, acc[g]);
                    }
                }
                __syncthreads();  // vc_s, sc_s, red_s are rewritten by the next tile
            }
        }
    } else {
        // Dense recent window (R <= 128 tokens): warp per token for scores.
        __syncthreads();  // q_s visible
        for (int r = warp; r < R; r += 8) {
            const __half2* kr = reinterpret_cast<const __half2*>(k_res + ((size_t)bh * R + r) * kD);
            const float2 k0 = __half22float2(kr[lane]);        // channels 2*lane, 2*lane + 1
            const float2 k1 = __half22float2(kr[lane + 32]);   // channels 64 + 2*lane, +1
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float* qg = q_s + g * kD;
                float s = qg[2 * lane] * k0.x + qg[2 * lane + 1] * k0.y + qg[64 + 2 * lane] * k1.x +
                          qg[65 + 2 * lane] * k1.y;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                if (lane == 0) sc_s[g * kTile + r] = s;
            }
        }
        __syncthreads();
        float s_own[G];
        const bool valid = tid < R;
#pragma unroll
        for (int g = 0; g < G; ++g) s_own[g] = valid ? sc_s[g * kTile + tid] : 0.f;
        __syncthreads();  // everyone has read its score before softmax_step overwrites sc_s
        softmax_step(R, s_own, valid);
        for (int r = half_id; r < R; r += 2) {
            const float v = __half2float(v_res[((size_t)bh * R + r) * kD + d]);
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g] = fmaf(sc_s[g * kTile + r], v, acc[g]);
        }
        __syncthreads();
    }

    // Block totals: l over all threads, acc over the two token parities.
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float l = l_part[g];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
        if (lane == 0) red_s[g * 8 + warp] = l;
        if (half_id == 1) sc_s[g * kD + d] = acc[g];
    }
    __syncthreads();
    const size_t BHq = (size_t)gridDim.y * G;
    if (half_id == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g)
            o_part[((size_t)split * BHq + head0 + g) * kD + d] = acc[g] + sc_s[g * kD + d];
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (tid == g) {  // static index into m_run (no local-memory array)
            float l = 0.f;
#pragma unroll
            for (int w = 0; w < 8; ++w) l += red_s[g * 8 + w];
            ml_part[((size_t)split * BHq + head0 + g) * 2] = m_run[g];
            ml_part[((size_t)split * BHq + head0 + g) * 2 + 1] = l;
        }
    }
}

// grid = B*Hq, block = 128: merge the splits of one query head (fixed order, deterministic).
__global__ void __launch_bounds__(128) million_combine(const float* __restrict__ o_part,
                                                       const float* __restrict__ ml_part,
                                                       __half* __restrict__ out, int n_split) {
    const size_t BHq = gridDim.x;
    const size_t i = blockIdx.x;
    const int t = threadIdx.x;
    float Mx = neg_inf();
    for (int s = 0; s < n_split; ++s) Mx = fmaxf(Mx, ml_part[(s * BHq + i) * 2]);
    float L = 0.f, acc = 0.f;
    for (int s = 0; s < n_split; ++s) {
        const float w = exp2f(ml_part[(s * BHq + i) * 2] - Mx);  // 0 for empty splits (-inf)
        L = fmaf(ml_part[(s * BHq + i) * 2 + 1], w, L);
        acc = fmaf(o_part[(s * BHq + i) * kD + t], w, acc);
    }
    out[i * kD + t] = __float2half_rn(acc / L);
}

#define MILLION_SPLIT(G, M)                                                                        \
    template __global__ void million_split<G, M>(const __half*, const __half*, const __half*,      \
                                                 const unsigned char*, const unsigned char*,       \
                                                 const __half*, const __half*, float*, float*,     \
                                                 int, int, int, int);
MILLION_SPLIT(1, 16) MILLION_SPLIT(2, 16) MILLION_SPLIT(3, 16) MILLION_SPLIT(4, 16)
MILLION_SPLIT(5, 16) MILLION_SPLIT(6, 16) MILLION_SPLIT(7, 16) MILLION_SPLIT(8, 16)
MILLION_SPLIT(1, 32) MILLION_SPLIT(2, 32) MILLION_SPLIT(3, 32) MILLION_SPLIT(4, 32)
MILLION_SPLIT(1, 64) MILLION_SPLIT(2, 64)
