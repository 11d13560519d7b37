// BROKEN (batch invariance): Y = X @ W^T is correct to tolerance and bitwise deterministic from
// run to run, but each element's K-reduction order depends on M. Decode-size batches (M <= 16)
// give few blocks, so the plan splits K for them (the usual way to fill the GPU): two fp32 FMA
// chains over the halves of K, written to fp32 scratch and summed by a second launch. For M > 16
// an element is one chain over k = 0 .. K-1. Row i computed alone (M = 1: split) therefore
// rounds differently from row i of a batch with M > 16 (not split), and some of its bf16
// elements differ in the last bit. Shapes with M <= 16 are batch-invariant (the batch and the
// single row both split); the check fails on the first shape with M > 16.
#include <cuda_bf16.h>

// Block tile BM x BN outputs, BK-deep k slices; 256 threads as 16 x 16, each 4 x 4 outputs
// (rows ty + 16 i, columns tx + 16 j).
#define BM 64
#define BN 64
#define BK 16
#define THREADS 256

// Y (split = false) or partial[blockIdx.z] (split = true) for one block tile. Grid: x = N / BN,
// y = ceil(M / BM), z = 1 or 2 (the K half). K % (2 * BK) == 0 and N % BN == 0 (the task's
// multiple_of rules: K % 64, N % 128).
template <bool SPLIT>
__device__ __forceinline__ void gemm_tile(const __nv_bfloat16* __restrict__ X,
                                          const __nv_bfloat16* __restrict__ W,
                                          __nv_bfloat16* __restrict__ Y, float* __restrict__ partial,
                                          int M, int K, int N) {
    // k-major tiles (padded) so the inner loop reads along m and n.
    __shared__ float sX[BK][BM + 1];
    __shared__ float sW[BK][BN + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int kspan = SPLIT ? K / 2 : K;
    const int kbeg = SPLIT ? (int)blockIdx.z * kspan : 0;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

    for (int k0 = kbeg; k0 < kbeg + kspan; k0 += BK) {
        for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
            const int r = e / BK, c = e % BK, m = m0 + r;
            sX[c][r] = m < M ? __bfloat162float(X[(long long)m * K + k0 + c]) : 0.f;
        }
        for (int e = threadIdx.x; e < BN * BK; e += THREADS) {
            const int r = e / BK, c = e % BK;
            sW[c][r] = __bfloat162float(W[(long long)(n0 + r) * K + k0 + c]);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float xa[4], wb[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) xa[i] = sX[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) wb[j] = sW[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xa[i], wb[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (SPLIT) {
                partial[((long long)blockIdx.z * M + m) * N + n] = acc[i][j];
            } else {
                Y[(long long)m * N + n] = __float2bfloat16_rn(acc[i][j]);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_full_k(const __nv_bfloat16* __restrict__ X, const __nv_bfloat16* __restrict__ W,
            __nv_bfloat16* __restrict__ Y, int M, int K, int N) {
    gemm_tile<false>(X, W, Y, nullptr, M, K, N);
}

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_split_k(const __nv_bfloat16* __restrict__ X, const __nv_bfloat16* __restrict__ W,
             float* __restrict__ partial, int M, int K, int N) {
    gemm_tile<true>(X, W, nullptr, partial, M, K, N);
}

// Y = bf16(partial[0] + partial[1]), in a fixed order: deterministic, but not the full-K chain.
extern "C" __global__ void split_k_sum(const float* __restrict__ partial,
                                       __nv_bfloat16* __restrict__ Y, int M, int N) {
    const long long total = (long long)M * N;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        Y[i] = __float2bfloat16_rn(partial[i] + partial[total + i]);
    }
}
