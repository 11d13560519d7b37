// MatShift (ShiftAddViT): out[r, n] = sum_k SIGN[n,k] * (X[r,k] >> SHIFT[n,k]), r = a*M + m, int32 exact.
//
// Techniques (the operator from ShiftAddViT / DeepShift; the tiling is the classic register-blocked SIMT
// GEMM structure that Ansor's schedules for this operator converge to; own code):
// - Offline ([[prepare]], untimed): SHIFT and SIGN are transposed to [K, N] int32 so a k-row of a weight tile
//   is one contiguous, 16-byte-aligned line (cp.async straight into shared memory, 16-byte LDS in the loop).
// - Register blocking: each thread owns TM x 4 outputs; per k it reads TM activations (one 16-byte LDS
//   from the transposed X tile) and 4 shift/sign pairs (two 16-byte LDS) and does TM*4 (SHF + IMAD):
//   the sign is applied with one integer multiply-add, the cheapest exact form on the GPU.
// - Double-buffered k-tiles: the next weight tile streams in with cp.async and the next X tile is held in
//   registers while the current tile is computed, then transposed into shared memory.
#include <vector_types.h>

#define BN 64
#define BKT 32
#define THREADS 256

extern "C" __global__ void __launch_bounds__(256)
matshift_transpose(const signed char* __restrict__ SHIFT, const signed char* __restrict__ SIGN,
                   int* __restrict__ shT, int* __restrict__ sgT, int K, int N)
{
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)K * N) return;
    const int n = (int)(idx % N), k = (int)(idx / N);
    shT[idx] = SHIFT[(long long)n * K + k];
    sgT[idx] = SIGN[(long long)n * K + k];
}

__device__ __forceinline__ unsigned smem_u32(const void* p)
{
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

// Block tile: BM rows x 64 columns; thread (ty = tid/16, tx = tid%16) owns rows ty*TM .. +TM-1 and columns
// tx*4 .. +3. Grid: x = N/64, y = ceil(R/BM), R = A*M. Static shared memory.
template <int BM>
__global__ void __launch_bounds__(THREADS)
matshift(const int* __restrict__ X, const int* __restrict__ shT, const int* __restrict__ sgT, int* __restrict__ out,
         int R, int K, int N)
{
    constexpr int TM = BM / 16;
    constexpr int XV = BM * BKT / 4;                     // int4 loads per X tile
    constexpr int XPT = (XV + THREADS - 1) / THREADS;    // per thread
    __shared__ __align__(16) int xs[2][BKT][BM];          // X tile, transposed: [k][row]
    __shared__ __align__(16) int shs[2][BKT][BN];
    __shared__ __align__(16) int sgs[2][BKT][BN];

    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int r0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KT = K / BKT;

    auto load_w = [&](int buf, int kt) {
        // 32 k-rows x 64 columns x 2 arrays = 1024 16-byte chunks, 4 per thread.
#pragma unroll
        for (int i = tid; i < 2 * BKT * BN / 4; i += THREADS) {
            const int arr = i / (BKT * BN / 4), rem = i % (BKT * BN / 4);
            const int k = rem / (BN / 4), c = rem % (BN / 4);
            const long long gi = (long long)(kt * BKT + k) * N + n0 + c * 4;
            if (arr == 0)
                cp_async16(&shs[buf][k][c * 4], shT + gi);
            else
                cp_async16(&sgs[buf][k][c * 4], sgT + gi);
        }
        cp_async_commit();
    };
    // X chunk i: row i % BM, k-quad i / BM (consecutive threads take consecutive rows: conflict-free stores).
    auto load_x = [&](int kt, int4 (&v)[XPT]) {
#pragma unroll
        for (int p = 0; p < XPT; ++p) {
            const int i = tid + p * THREADS;
            v[p] = make_int4(0, 0, 0, 0);
            if (i < XV) {
                const int row = i % BM, kq = i / BM;
                const int r = r0 + row;
                if (r < R) v[p] = __ldg(reinterpret_cast<const int4*>(X + (long long)r * K + kt * BKT + kq * 4));
            }
        }
    };
    auto store_x = [&](int buf, const int4 (&v)[XPT]) {
#pragma unroll
        for (int p = 0; p < XPT; ++p) {
            const int i = tid + p * THREADS;
            if (i < XV) {
                const int row = i % BM, kq = i / BM;
                xs[buf][kq * 4 + 0][row] = v[p].x;
                xs[buf][kq * 4 + 1][row] = v[p].y;
                xs[buf][kq * 4 + 2][row] = v[p].z;
                xs[buf][kq * 4 + 3][row] = v[p].w;
            }
        }
    };

    int acc[TM][4];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;

    int4 xv[XPT];
    load_w(0, 0);
    load_x(0, xv);
    store_x(0, xv);
    cp_async_wait_all();
    __syncthreads();

    for (int kt = 0; kt < KT; ++kt) {
        const int buf = kt & 1;
        const bool more = kt + 1 < KT;
        if (more) {
            load_w(buf ^ 1, kt + 1);  // buffer buf^1 was last read in iteration kt-1 (barrier since)
            load_x(kt + 1, xv);
        }
#pragma unroll 8
        for (int k = 0; k < BKT; ++k) {
            int xr[TM];
            if constexpr (TM == 4) {
                const int4 q = *reinterpret_cast<const int4*>(&xs[buf][k][ty * 4]);
                xr[0] = q.x;
                xr[1] = q.y;
                xr[2] = q.z;
                xr[3] = q.w;
            } else {
#pragma unroll
                for (int i = 0; i < TM; ++i) xr[i] = xs[buf][k][ty * TM + i];
            }
            const int4 s4 = *reinterpret_cast<const int4*>(&shs[buf][k][tx * 4]);
            const int4 g4 = *reinterpret_cast<const int4*>(&sgs[buf][k][tx * 4]);
            const int sh[4] = {s4.x, s4.y, s4.z, s4.w};
            const int sg[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += sg[j] * (xr[i] >> sh[j]);
        }
        if (more) {
            store_x(buf ^ 1, xv);
            cp_async_wait_all();
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int r = r0 + ty * TM + i;
        if (r < R)
            *reinterpret_cast<int4*>(&out[(long long)r * N + n0 + tx * 4]) =
                make_int4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    }
}

template __global__ void matshift<64>(const int*, const int*, const int*, int*, int, int, int);
template __global__ void matshift<16>(const int*, const int*, const int*, int*, int, int, int);
