// GPTQ 3-bit weight GEMV: y = x @ (scales * q - zeros) + bias, fp32, q packed 32 rows per 3 words.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - IST-DASLab/gptq VecQuant3MatMulKernel: threads own output columns (consecutive columns are
//    consecutive words of a qweight row, so a warp's loads are coalesced), a K-slice of x staged in
//    shared memory and read as broadcasts, fixed shift sequences for the straddling codes, and the
//    dequant algebra sum_k (s q - z) x = s * sum_k q x - z * sum_k x (one scale/zero per column).
//  - Here each thread owns COLS adjacent columns and loads them as one 16-byte word vector (COLS 4);
//    a 32-row group's 96 bits are decoded with funnel shifts (constant shift counts after unrolling).
//  - Codes become floats with the exponent trick (2^23 | q reinterpreted, minus 2^23: exact for
//    q < 2^23), two ALU ops instead of a quarter-rate int->float conversion.
//  - Split-K over grid.y instead of the original's float atomics: per-split partials go to scratch
//    and a second kernel adds them in split order plus the bias, so the result is deterministic.
// Requires K % 32 == 0 (task constraint) and, for COLS 4, N % 4 == 0 (16-byte aligned qweight rows).
#define FULL_MASK 0xffffffffu
#define MAXB 4

static __device__ __forceinline__ float code_f(unsigned lo, unsigned hi, int sh) {
    // bits sh..sh+2 of the 64-bit word hi:lo, as an exact float
    return __uint_as_float((__funnelshift_r(lo, hi, sh) & 7u) | 0x4B000000u) - 8388608.0f;
}

template <int COLS, int KS>
__global__ void __launch_bounds__(128)
w3_gemv_split(const float* __restrict__ x, const unsigned* __restrict__ qweight, const float* __restrict__ scales,
              const float* __restrict__ zeros, float* __restrict__ part, int B, int K, int N) {
    static_assert(KS % 32 == 0, "slices hold whole 32-row groups");
    __shared__ __align__(16) float xs[MAXB][KS];
    __shared__ float sx[MAXB];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int k0 = blockIdx.y * KS;
    const int klen = min(KS, K - k0);  // a multiple of 32

    // stage x[:, k0 : k0+klen] (16-byte loads; K % 32 == 0 keeps every row 16-byte aligned)
    const int qv = klen >> 2;
    for (int i = tid; i < B * qv; i += 128) {
        const int b = i / qv, k = (i - b * qv) * 4;
        *reinterpret_cast<float4*>(&xs[b][k]) = __ldg(reinterpret_cast<const float4*>(x + (size_t)b * K + k0 + k));
    }
    __syncthreads();
    if (warp < B) {  // B <= 4 = warps per block
        float s = 0.0f;
        for (int k = lane; k < klen; k += 32) s += xs[warp][k];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
        if (lane == 0) sx[warp] = s;
    }
    __syncthreads();

    const int n0 = (blockIdx.x * 128 + tid) * COLS;
    if (n0 >= N) return;  // after the last barrier

    float acc[COLS][MAXB];
#pragma unroll
    for (int c = 0; c < COLS; ++c)
#pragma unroll
        for (int b = 0; b < MAXB; ++b) acc[c][b] = 0.0f;

    const unsigned* qp = qweight + (size_t)(k0 / 32 * 3) * N + n0;
    const int groups = klen >> 5;
#pragma unroll 2
    for (int g = 0; g < groups; ++g) {
        unsigned w[3][COLS];
#pragma unroll
        for (int r = 0; r < 3; ++r) {
            const unsigned* p = qp + (size_t)(3 * g + r) * N;
            if (COLS == 4) {
                const uint4 v = __ldcs(reinterpret_cast<const uint4*>(p));
                w[r][0] = v.x; w[r][1 % COLS] = v.y; w[r][2 % COLS] = v.z; w[r][3 % COLS] = v.w;
            } else {
#pragma unroll
                for (int c = 0; c < COLS; ++c) w[r][c] = __ldcs(p + c);
            }
        }
        const float* xg0 = &xs[0][g * 32];
#pragma unroll
        for (int j8 = 0; j8 < 32; j8 += 4) {
            float q[COLS][4];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                const int bit = 3 * (j8 + jj);  // compile-time after unrolling
                const int word = bit >> 5, sh = bit & 31;
#pragma unroll
                for (int c = 0; c < COLS; ++c) {
                    const unsigned lo = word == 0 ? w[0][c] : (word == 1 ? w[1][c] : w[2][c]);
                    const unsigned hi = word == 0 ? w[1][c] : w[2][c];
                    q[c][jj] = code_f(lo, hi, sh);
                }
            }
#pragma unroll
            for (int b = 0; b < MAXB; ++b) {
                if (b < B) {
                    const float4 xv = *reinterpret_cast<const float4*>(xg0 + b * KS + j8);
#pragma unroll
                    for (int c = 0; c < COLS; ++c) {
                        acc[c][b] = fmaf(q[c][0], xv.x, acc[c][b]);
                        acc[c][b] = fmaf(q[c][1], xv.y, acc[c][b]);
                        acc[c][b] = fmaf(q[c][2], xv.z, acc[c][b]);
                        acc[c][b] = fmaf(q[c][3], xv.w, acc[c][b]);
                    }
                }
            }
        }
    }

    float s[COLS], z[COLS];
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
        s[c] = __ldg(scales + n0 + c);
        z[c] = __ldg(zeros + n0 + c);
    }
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        if (b < B) {
            float* out = part + ((size_t)blockIdx.y * B + b) * N + n0;
            if (COLS == 4) {
                *reinterpret_cast<float4*>(out) =
                    make_float4(s[0] * acc[0][b] - z[0] * sx[b], s[1 % COLS] * acc[1 % COLS][b] - z[1 % COLS] * sx[b],
                                s[2 % COLS] * acc[2 % COLS][b] - z[2 % COLS] * sx[b],
                                s[3 % COLS] * acc[3 % COLS][b] - z[3 % COLS] * sx[b]);
            } else {
#pragma unroll
                for (int c = 0; c < COLS; ++c) out[c] = s[c] * acc[c][b] - z[c] * sx[b];
            }
        }
    }
}

template __global__ void w3_gemv_split<4, 512>(const float*, const unsigned*, const float*, const float*, float*, int,
                                               int, int);
template __global__ void w3_gemv_split<1, 256>(const float*, const unsigned*, const float*, const float*, float*, int,
                                               int, int);

// y[b, n] = bias[n] + sum over splits (in order) of part[split, b, n]
extern "C" __global__ void __launch_bounds__(256)
w3_gemv_finish(const float* __restrict__ part, const float* __restrict__ bias, float* __restrict__ y, int B, int N,
               int splits) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= B * N) return;
    const int n = i % N;
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += __ldcs(part + (size_t)s * B * N + i);
    y[i] = acc + __ldg(bias + n);
}
