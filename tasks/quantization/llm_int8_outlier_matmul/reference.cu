// LLM.int8() mixed-precision decomposition (paper semantics: whole outlier columns leave the int8 path).
//
// Techniques (learned from Dettmers et al. 2022 and bitsandbytes csrc/kernels.cu; own code):
// 1. int8_col_absmax: one coalesced pass over X (16-byte loads, 8 halves per thread) computing the
//    column absmax and the outlier mask is_outlier[k] = (max_t |X[t,k]| >= tau).
// 2. int8_outlier_compact: one block turns the mask into an ordered index list (ballot-free
//    block scan of per-thread counts), so the fp16 sub-GEMM touches only |O| columns.
// 3. int8_quantize_rows: per row, absmax over the non-outlier columns, RNE quantization to int8
//    (outlier columns become 0) and a gather of the row's outlier values.
// 4. int8_gemm: IMMA GEMM (mma.sync m16n8k32 s8 x s8 -> s32) with a 4-stage cp.async pipeline,
//    ldmatrix from XOR-swizzled tiles, split-K for skinny T. The epilogue fuses the vector-wise
//    dequantization (acc * sx[t] * SCB[n] / 127^2), the fp32 outlier sub-GEMM on the gathered
//    columns (staged through shared memory, split 0 only) and the bias.
// 5. splitk_reduce: deterministic sum of the split-K partials, fp16 output.
#include <cuda_fp16.h>

typedef signed char i8;

__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma_s8(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------------------
// 1. Column absmax + outlier mask. Block: 256 threads = 8 column groups (8 halves each, 64 columns)
//    x 32 row groups. Grid: K/64.
extern "C" __global__ void __launch_bounds__(256)
int8_col_absmax(const __half* __restrict__ X, unsigned char* __restrict__ is_outlier, int T, int K, float tau)
{
    __shared__ float red[32][65];
    const int cg = threadIdx.x & 7, rg = threadIdx.x >> 3;
    const int col0 = blockIdx.x * 64 + cg * 8;
    float m[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) m[j] = 0.f;
    for (int t = rg; t < T; t += 32) {
        const uint4 v = *reinterpret_cast<const uint4*>(X + (long long)t * K + col0);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            m[2 * j] = fmaxf(m[2 * j], fabsf(f.x));
            m[2 * j + 1] = fmaxf(m[2 * j + 1], fabsf(f.y));
        }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) red[rg][cg * 8 + j] = m[j];
    __syncthreads();
    if (threadIdx.x < 64) {
        float r = 0.f;
#pragma unroll 8
        for (int i = 0; i < 32; ++i) r = fmaxf(r, red[i][threadIdx.x]);
        is_outlier[blockIdx.x * 64 + threadIdx.x] = (r >= tau) ? 1 : 0;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Ordered outlier index list. One block of 1024 threads; each handles 4 mask bytes per round.
extern "C" __global__ void __launch_bounds__(1024)
int8_outlier_compact(const unsigned char* __restrict__ is_outlier, int* __restrict__ oidx,
                     int* __restrict__ n_out, int K)
{
    __shared__ int warp_tot[32];
    __shared__ int running;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) running = 0;
    __syncthreads();
    for (int base = 0; base < K; base += 4096) {
        const int c = base + tid * 4;
        unsigned bits = 0;  // bit j set iff column c + j is an outlier
        if (c < K) {        // K % 4 == 0
            const unsigned w = *reinterpret_cast<const unsigned*>(is_outlier + c);
#pragma unroll
            for (int j = 0; j < 4; ++j) bits |= ((w >> (8 * j)) & 0xFFu) ? (1u << j) : 0u;
        }
        const int cnt = __popc(bits);
        int incl = cnt;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, d);
            if (lane >= d) incl += v;
        }
        if (lane == 31) warp_tot[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            const int v = warp_tot[lane];
            int s = v;
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                const int u = __shfl_up_sync(0xffffffffu, s, d);
                if (lane >= d) s += u;
            }
            warp_tot[lane] = s - v;  // exclusive prefix of warp totals
        }
        __syncthreads();
        int pos = running + warp_tot[warp] + incl - cnt;
        while (bits) {
            const int j = __ffs(bits) - 1;
            bits &= bits - 1;
            oidx[pos++] = c + j;
        }
        __syncthreads();  // everyone has read running / warp_tot
        if (tid == 1023) running += warp_tot[31] + incl;  // last thread: exclusive + own inclusive
        __syncthreads();
    }
    if (tid == 0) *n_out = running;
}

// ---------------------------------------------------------------------------------------------
// 3. Row quantization. Grid: T blocks of 256 threads; 8 columns per thread per step (K % 64 == 0).
extern "C" __global__ void __launch_bounds__(256)
int8_quantize_rows(const __half* __restrict__ X, const unsigned char* __restrict__ is_outlier,
                   const int* __restrict__ oidx, const int* __restrict__ n_out_p, i8* __restrict__ Xq,
                   float* __restrict__ sx, __half* __restrict__ Xo, int K)
{
    __shared__ float red[8];
    const int t = blockIdx.x, tid = threadIdx.x;
    const __half* xr = X + (long long)t * K;
    float m = 0.f;
    for (int c = tid * 8; c < K; c += 2048) {
        const uint4 v = *reinterpret_cast<const uint4*>(xr + c);
        const unsigned long long mk = *reinterpret_cast<const unsigned long long*>(is_outlier + c);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            if (!((mk >> (16 * j)) & 0xFF)) m = fmaxf(m, fabsf(f.x));
            if (!((mk >> (16 * j + 8)) & 0xFF)) m = fmaxf(m, fabsf(f.y));
        }
    }
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, d));
    if ((tid & 31) == 0) red[tid >> 5] = m;
    __syncthreads();
    float s = red[0];
#pragma unroll
    for (int i = 1; i < 8; ++i) s = fmaxf(s, red[i]);
    if (tid == 0) sx[t] = s;
    const float scale = s > 0.f ? 127.f / s : 0.f;
    for (int c = tid * 8; c < K; c += 2048) {
        const uint4 v = *reinterpret_cast<const uint4*>(xr + c);
        const unsigned long long mk = *reinterpret_cast<const unsigned long long*>(is_outlier + c);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
        unsigned long long packed = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            int q0 = ((mk >> (16 * j)) & 0xFF) ? 0 : __float2int_rn(f.x * scale);
            int q1 = ((mk >> (16 * j + 8)) & 0xFF) ? 0 : __float2int_rn(f.y * scale);
            q0 = max(-127, min(127, q0));
            q1 = max(-127, min(127, q1));
            packed |= (unsigned long long)(q0 & 0xFF) << (16 * j);
            packed |= (unsigned long long)(q1 & 0xFF) << (16 * j + 8);
        }
        *reinterpret_cast<unsigned long long*>(Xq + (long long)t * K + c) = packed;
    }
    const int n_out = *n_out_p;
    for (int i = tid; i < n_out; i += 256) Xo[(long long)t * n_out + i] = xr[oidx[i]];
}

// ---------------------------------------------------------------------------------------------
// 4. int8 GEMM + fused epilogue. Block tile BM x 128 x 64 (k bytes), 8 warps as WM x (8/WM).
//    Grid: x = m-block, y = N/128, z = k-split. Dynamic smem: 4 * (BM + 128) * 64 bytes.
#define G_BN 128
#define G_BK 64
#define G_STAGES 4

template <int BM, int WM>
__global__ void __launch_bounds__(256, BM >= 128 ? 1 : 2)
int8_gemm(const i8* __restrict__ Xq, const i8* __restrict__ Wq, const float* __restrict__ sx,
          const float* __restrict__ SCB, const __half* __restrict__ bias, const __half* __restrict__ Xo,
          const int* __restrict__ oidx, const int* __restrict__ n_out_p, __half* __restrict__ Y,
          float* __restrict__ partial, int T, int K, int N, int splits)
{
    constexpr int WN = 8 / WM;
    constexpr int WTM = BM / WM, MT = WTM / 16;
    constexpr int WTN = G_BN / WN, NT = WTN / 8;
    constexpr int A_U4 = BM * 4, B_U4 = G_BN * 4, STAGE_U4 = A_U4 + B_U4;
    static_assert(MT >= 1 && NT >= 2 && NT % 2 == 0, "tile config");
    extern __shared__ uint4 smem[];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int g = lane >> 2, t4 = lane & 3;
    const int mb = blockIdx.x, nb = blockIdx.y, z = blockIdx.z;
    const int KT = K / G_BK;
    const int kt0 = (int)((long long)z * KT / splits), kt1 = (int)((long long)(z + 1) * KT / splits);
    const int ntiles = kt1 - kt0;
    const int row_base = mb * BM;

    auto load_stage = [&](int stage, int kt) {
        uint4* sA = smem + stage * STAGE_U4;
        uint4* sB = sA + A_U4;
#pragma unroll
        for (int i = tid; i < BM * 4; i += 256) {
            const int r = i >> 2, c = i & 3, m = row_base + r;
            const i8* src = Xq + (long long)(m < T ? m : T - 1) * K + kt * G_BK + c * 16;
            cp_async16(&sA[r * 4 + (c ^ ((r >> 1) & 3))], src, m < T ? 16 : 0);
        }
#pragma unroll
        for (int i = tid; i < G_BN * 4; i += 256) {
            const int r = i >> 2, c = i & 3;
            const i8* src = Wq + (long long)(nb * G_BN + r) * K + kt * G_BK + c * 16;
            cp_async16(&sB[r * 4 + (c ^ ((r >> 1) & 3))], src, 16);
        }
    };

    int acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

#pragma unroll
    for (int s = 0; s < G_STAGES - 1; ++s) {
        if (s < ntiles) load_stage(s, kt0 + s);
        cp_async_commit();
    }
    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait<G_STAGES - 2>();
        __syncthreads();
        {
            const int nx = it + G_STAGES - 1;
            if (nx < ntiles) load_stage(nx % G_STAGES, kt0 + nx);
            cp_async_commit();
        }
        const uint4* sA = smem + (it % G_STAGES) * STAGE_U4;
        const uint4* sB = sA + A_U4;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            unsigned a[MT][4], b[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r = wm * WTM + mt * 16 + (lane & 15);
                const int c = ks * 2 + (lane >> 4);
                ldmatrix_x4(a[mt], &sA[r * 4 + (c ^ ((r >> 1) & 3))]);
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                const int r = wn * WTN + np * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int c = ks * 2 + ((lane >> 3) & 1);
                unsigned q[4];
                ldmatrix_x4(q, &sB[r * 4 + (c ^ ((r >> 1) & 3))]);
                b[2 * np][0] = q[0];
                b[2 * np][1] = q[1];
                b[2 * np + 1][0] = q[2];
                b[2 * np + 1][1] = q[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mma_s8(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
        }
    }
    cp_async_wait<0>();

    // Vector-wise dequantization.
    float out[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = row_base + wm * WTM + mt * 16 + g + 8 * h;
            const float srow = (row < T ? sx[row] : 0.f) * (1.f / 16129.f);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int col = nb * G_BN + wn * WTN + nt * 8 + 2 * t4;
                out[mt][nt][2 * h] = (float)acc[mt][nt][2 * h] * (srow * SCB[col]);
                out[mt][nt][2 * h + 1] = (float)acc[mt][nt][2 * h + 1] * (srow * SCB[col + 1]);
            }
        }
    }

    if (z == 0) {
        // Outlier columns in fp32: out += X[:, O] @ (Wq[:, O] * SCB / 127)^T, 32 outliers per round.
        const int n_out = *n_out_p;
        float* Xs = reinterpret_cast<float*>(smem);  // [BM][33]
        float* Ws = Xs + BM * 33;                    // [128][33]
        for (int c0 = 0; c0 < n_out; c0 += 32) {
            __syncthreads();  // pipeline buffers / previous round no longer read
            for (int i = tid; i < BM * 32; i += 256) {
                const int r = i >> 5, j = i & 31, m = row_base + r, o = c0 + j;
                Xs[r * 33 + j] = (o < n_out && m < T) ? __half2float(Xo[(long long)m * n_out + o]) : 0.f;
            }
            for (int i = tid; i < G_BN * 32; i += 256) {
                const int r = i >> 5, j = i & 31, o = c0 + j, n = nb * G_BN + r;
                Ws[r * 33 + j] = o < n_out ? (float)Wq[(long long)n * K + oidx[o]] * (SCB[n] * (1.f / 127.f)) : 0.f;
            }
            __syncthreads();
#pragma unroll 4
            for (int j = 0; j < 32; ++j) {
                float xv[MT][2], wv[NT][2];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int h = 0; h < 2; ++h) xv[mt][h] = Xs[(wm * WTM + mt * 16 + g + 8 * h) * 33 + j];
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e) wv[nt][e] = Ws[(wn * WTN + nt * 8 + 2 * t4 + e) * 33 + j];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) out[mt][nt][e] = fmaf(xv[mt][e >> 1], wv[nt][e & 1], out[mt][nt][e]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int col = nb * G_BN + wn * WTN + nt * 8 + 2 * t4;
            const float b0 = __half2float(bias[col]), b1 = __half2float(bias[col + 1]);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                out[mt][nt][0] += b0;
                out[mt][nt][1] += b1;
                out[mt][nt][2] += b0;
                out[mt][nt][3] += b1;
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int col = nb * G_BN + wn * WTN + nt * 8 + 2 * t4;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = row_base + wm * WTM + mt * 16 + g + 8 * h;
                if (row >= T) continue;
                if (splits == 1)
                    *reinterpret_cast<__half2*>(&Y[(long long)row * N + col]) =
                        __floats2half2_rn(out[mt][nt][2 * h], out[mt][nt][2 * h + 1]);
                else
                    *reinterpret_cast<float2*>(&partial[((long long)z * T + row) * N + col]) =
                        make_float2(out[mt][nt][2 * h], out[mt][nt][2 * h + 1]);
            }
        }
}

#define INST(BM, WM)                                                                                   \
    template __global__ void int8_gemm<BM, WM>(const i8*, const i8*, const float*, const float*,       \
                                               const __half*, const __half*, const int*, const int*, \
                                               __half*, float*, int, int, int, int);
INST(16, 1)
INST(32, 2)
INST(64, 2)
INST(128, 2)

// ---------------------------------------------------------------------------------------------
// 5. Y = fp16(sum of split-K partials), 4 outputs per thread (N % 128 == 0).
extern "C" __global__ void __launch_bounds__(256)
splitk_reduce(const float4* __restrict__ partial, __half* __restrict__ Y, int T, int N, int splits)
{
    const long long n4 = (long long)T * N / 4;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 s = partial[i];
    for (int z = 1; z < splits; ++z) {
        const float4 p = partial[(long long)z * n4 + i];
        s.x += p.x; s.y += p.y; s.z += p.z; s.w += p.w;
    }
    __half2 lo = __floats2half2_rn(s.x, s.y), hi = __floats2half2_rn(s.z, s.w);
    uint2 o;
    o.x = *reinterpret_cast<unsigned*>(&lo);
    o.y = *reinterpret_cast<unsigned*>(&hi);
    reinterpret_cast<uint2*>(Y)[i] = o;
}
