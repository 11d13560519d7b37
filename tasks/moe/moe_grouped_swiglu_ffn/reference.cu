// MoE expert FFN: grouped up-projection GEMM with fused SwiGLU, grouped down-projection GEMM with the
// routing score fused, deterministic per-token combine.
//
// Techniques (learned from SonicMoE, Dao-AILab/sonic-moe functional/forward.py, grouped_gemm.py and
// tile_scheduler.py, and from the CUTLASS/Triton grouped-GEMM literature; own code):
// - moe_route (one block): M-tile prefix per expert (varlen tile scheduler) and the token of every
//   expert-sorted slot. Every value below is computed per pair and combined in pair order, so the
//   result is deterministic.
// - moe_gemm<GATED>: 128x128x64 bf16 tiles, mma.sync m16n8k16 (fp32 accumulate), ldmatrix from
//   XOR-swizzled shared tiles, 4-stage cp.async pipeline (one 256-thread block per SM at ~150
//   registers). A rows are gathered by token inside the load stage (no permuted copy of x is
//   materialized). Tiles are rastered in groups of 8 M-tiles so the expert weights and the gathered rows of a group stay in L2. Tiles past the last expert exit.
// - Up-projection epilogue: gate and up rows of W1 are interleaved, so each thread's accumulator pair
//   (columns 2i, 2i+1) is (gate_i, up_i): h_i = SiLU(gate_i) * up_i is written as bf16.
// - Down-projection epilogue multiplies by the pair's routing score and writes the pair's row;
//   moe_combine then sums each token's rows in pair order (fp32) instead of racing with atomics.
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

// ---------------------------------------------------------------------------------------------
// Routing metadata. One block of 1024 threads (E <= 1024): per-expert M-tile prefix (varlen tile
// scheduler) and the token of every expert-sorted slot.
extern "C" __global__ void __launch_bounds__(1024)
moe_route(const int* __restrict__ tok_off, const int* __restrict__ expert_off, const int* __restrict__ perm,
          int* __restrict__ tokp, int* __restrict__ tile_off, int* __restrict__ rowtok, int T, int P, int E,
          int BM)
{
    __shared__ int wsum[32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int t = tid; t < T; t += 1024)
        for (int p = tok_off[t]; p < tok_off[t + 1]; ++p) tokp[p] = t;

    const int tl = tid < E ? (expert_off[tid + 1] - expert_off[tid] + BM - 1) / BM : 0;
    int it = tl;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, it, d);
        if (lane >= d) it += v;
    }
    if (lane == 31) wsum[warp] = it;
    __syncthreads();  // also makes tokp visible to the whole block
    if (warp == 0) {
        const int v0 = wsum[lane];
        int v = v0;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int u = __shfl_up_sync(0xffffffffu, v, d);
            if (lane >= d) v += u;
        }
        wsum[lane] = v - v0;
    }
    __syncthreads();
    if (tid < E) {
        const int excl = wsum[warp] + it - tl;
        tile_off[tid] = excl;
        if (tid == E - 1) tile_off[E] = excl + tl;
    }
    for (int s = tid; s < P; s += 1024) rowtok[s] = tokp[perm[s]];
}

// ---------------------------------------------------------------------------------------------
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
__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#define BM 128
#define BN 128
#define BK 64
#define STAGES 4
#define GROUP_M 8

// out[row] = A[row] @ W[e]^T for the rows of expert e's segment.
// GATED (up-projection): A row = x[rowtok[slot]], N = 2I, Kd = H, out = Hbuf[slot, N/2] (SwiGLU).
// !GATED (down-projection): A row = Hbuf[slot], N = H, Kd = I, out = Y[perm[slot], N] * score.
// 1-D grid of num_m * nb blocks (num_m: bound on the M-tiles, ceil(P/BM) + E).
// Dynamic smem: STAGES * (BM + BN) * BK * 2 bytes.
template <bool GATED>
__global__ void __launch_bounds__(256, 1)
moe_gemm(const bf16* __restrict__ A, const int* __restrict__ rowtok, const bf16* __restrict__ W,
         const int* __restrict__ seg_off, const int* __restrict__ tile_off, const int* __restrict__ perm,
         const float* __restrict__ scores, bf16* __restrict__ out, int N, int Kd, int E, int num_m, int nb)
{
    extern __shared__ uint4 smem[];
    constexpr int A_U4 = BM * BK / 8, B_U4 = BN * BK / 8, STAGE_U4 = A_U4 + B_U4;

    // Grouped raster: GROUP_M consecutive M-tiles sweep all N-blocks together.
    const int pid = blockIdx.x;
    const int in_group = GROUP_M * nb;
    const int first_m = (pid / in_group) * GROUP_M;
    const int gsz = min(num_m - first_m, GROUP_M);
    const int mt = first_m + (pid % in_group) % gsz;
    const int nblk = (pid % in_group) / gsz;
    if (mt >= tile_off[E]) return;
    int lo = 0, hi = E;  // tile_off[lo] <= mt < tile_off[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (tile_off[mid] <= mt) lo = mid; else hi = mid;
    }
    const int e = lo;
    const int m0 = (mt - tile_off[e]) * BM;
    const int seg0 = seg_off[e] + m0;
    const int rows = min(BM, seg_off[e + 1] - seg0);
    const int n0 = nblk * BN;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps, warp tile 64 x 32
    const int g = lane >> 2, t4 = lane & 3;

    const bf16* Wb = W + (long long)e * N * Kd;
    const int lr = tid >> 3, lc = tid & 7;  // this thread copies rows lr + 32 i, 16-byte chunk lc
    int arow[4];  // source row of A for rows lr + 32 i, or -1 (zero-filled)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = lr + 32 * i;
        arow[i] = r < rows ? (GATED ? rowtok[seg0 + r] : seg0 + r) : -1;
    }
    auto load_stage = [&](int stage, int kt) {
        uint4* sA = smem + stage * STAGE_U4;
        uint4* sB = sA + A_U4;
        const int koff = kt * BK + lc * 8;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = lr + 32 * i;
            const bool av = arow[i] >= 0, bv = n0 + r < N;
            cp_async16(&sA[r * 8 + (lc ^ (r & 7))], av ? A + (long long)arow[i] * Kd + koff : A, av ? 16 : 0);
            cp_async16(&sB[r * 8 + (lc ^ (r & 7))], bv ? Wb + (long long)(n0 + r) * Kd + koff : W, bv ? 16 : 0);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;

    const int ntiles = Kd / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) load_stage(s, s);
        cp_async_commit();
    }
    for (int it = 0; it < ntiles; ++it) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {
            const int nx = it + STAGES - 1;
            if (nx < ntiles) load_stage(nx % STAGES, nx);
            cp_async_commit();
        }
        const uint4* sA = smem + (it % STAGES) * STAGE_U4;
        const uint4* sB = sA + A_U4;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned a[4][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                const int r = wm * 64 + mi * 16 + (lane & 15);
                const int c = kk * 2 + (lane >> 4);
                ldmatrix_x4(a[mi], &sA[r * 8 + (c ^ (r & 7))]);
            }
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                const int r = wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int c = kk * 2 + ((lane >> 3) & 1);
                unsigned q[4];
                ldmatrix_x4(q, &sB[r * 8 + (c ^ (r & 7))]);
                b[2 * np][0] = q[0];
                b[2 * np][1] = q[1];
                b[2 * np + 1][0] = q[2];
                b[2 * np + 1][1] = q[3];
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = wm * 64 + mi * 16 + g + 8 * h;
            if (r >= rows) continue;
            const int slot = seg0 + r;
            if (GATED) {
                bf16* orow = out + (long long)slot * (N / 2);
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) {
                    const int col = n0 + wn * 32 + ni * 8 + 2 * t4;
                    if (col >= N) continue;
                    const float gate = acc[mi][ni][2 * h], up = acc[mi][ni][2 * h + 1];
                    orow[col >> 1] = __float2bfloat16_rn(gate / (1.f + expf(-gate)) * up);
                }
            } else {
                const int p = perm[slot];
                const float s = scores[p];
                bf16* orow = out + (long long)p * N;
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) {
                    const int col = n0 + wn * 32 + ni * 8 + 2 * t4;
                    if (col >= N) continue;
                    *reinterpret_cast<__nv_bfloat162*>(orow + col) =
                        __floats2bfloat162_rn(s * acc[mi][ni][2 * h], s * acc[mi][ni][2 * h + 1]);
                }
            }
        }
    }
}

template __global__ void moe_gemm<true>(const bf16*, const int*, const bf16*, const int*, const int*, const int*, const float*, bf16*, int, int, int, int, int);
template __global__ void moe_gemm<false>(const bf16*, const int*, const bf16*, const int*, const int*, const int*, const float*, bf16*, int, int, int, int, int);

// ---------------------------------------------------------------------------------------------
// o[t] = sum over the token's pairs (in pair order) of Y[p]; fp32 accumulation, 8 columns per thread.
extern "C" __global__ void __launch_bounds__(128)
moe_combine(const bf16* __restrict__ Y, const int* __restrict__ tok_off, bf16* __restrict__ o, int H)
{
    const int t = blockIdx.x;
    const int p0 = tok_off[t], p1 = tok_off[t + 1];
    for (int c = threadIdx.x * 8; c < H; c += 128 * 8) {
        float acc[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j] = 0.f;
        for (int p = p0; p < p1; ++p) {
            const uint4 v = *reinterpret_cast<const uint4*>(Y + (long long)p * H + c);
            const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float2 f = __bfloat1622float2(h2[j]);
                acc[2 * j] += f.x;
                acc[2 * j + 1] += f.y;
            }
        }
        uint4 r;
        unsigned* rw = reinterpret_cast<unsigned*>(&r);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            __nv_bfloat162 b = __floats2bfloat162_rn(acc[2 * j], acc[2 * j + 1]);
            rw[j] = *reinterpret_cast<unsigned*>(&b);
        }
        *reinterpret_cast<uint4*>(o + (long long)t * H + c) = r;
    }
}
