// MoE top-K router with expert-sorted routing metadata (SonicMoE forward_topk semantics):
//   logits = x Wr^T / 64 (fp32) -> top-K per token (ties: lower expert first) -> softmax over the
//   chosen K -> expert counts, offsets and the stable expert-sorted permutation of pair ids.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - router_gemm: the Ampere-style tensor-core GEMM recipe (CUTLASS "Efficient GEMM in CUDA", the
//    PTX ISA for mma.sync m16n8k16 / ldmatrix / cp.async): 64x64x64 block tiles, 4 warps of 32x32,
//    3-stage cp.async.cg pipeline, XOR-swizzled 128-byte smem rows (chunk ^= row & 7, conflict-free
//    ldmatrix and cp.async), both operands K-contiguous (x rows and Wr rows, ldmatrix without
//    .trans). blockIdx.x walks the expert tiles so the E/64 blocks sharing one x tile run together
//    and x is read from HBM about once. Products of small integers are exact in bf16 MMA with fp32
//    accumulation, so the logits match the oracle bit for bit.
//  - router_topk: SonicMoE topk_softmax / FlashMoE gate: one warp per token, the E logits spread over
//    the lanes in registers (EPT per lane), K rounds of a lane-local scan plus a warp-shuffle
//    arg-max with the (value desc, index asc) order, softmax over the chosen across K lanes.
//    Per-64-token chunk expert histograms in shared memory (integer atomics: deterministic).
//  - route_scan / route_perm: the counting-sort form of SonicMoE's count_cumsum + stable permute:
//    per-expert exclusive scan over chunk histograms, then each chunk scatters its pairs in pair
//    order with __match_any_sync ranks among lanes routed to the same expert. No global sort.
// Requires H % 64 == 0, K <= E <= 512, K <= 16 (task constraints).
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#define CHUNK 64  // tokens per router_topk block = tokens per histogram chunk

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
static __device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
static __device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------------------
// logits[T, E] = x[T, H] . Wr[E, H]^T / 64
#define G_BM 64
#define G_BN 64
#define G_BK 64
#define G_STAGES 3
#define G_TILE_BYTES (64 * G_BK * 2)  // one 64-row operand tile of a stage

// byte offset of 16-byte chunk c (0..7) of row r in a 64x64 bf16 tile
static __device__ __forceinline__ unsigned sw(int r, int c) { return (unsigned)(r * 128 + ((c ^ (r & 7)) << 4)); }

static __device__ __forceinline__ void g_load_stage(unsigned char* s, const bf16* x, const bf16* Wr, int T, int E,
                                                    int H, int bm, int bn, int k0, int tid) {
#pragma unroll
    for (int it = 0; it < 4; ++it) {  // 64 rows x 8 chunks = 512 chunks per operand, 128 threads
        const int i = it * 128 + tid;
        const int r = i >> 3, c = i & 7;
        const int gm = bm + r, gn = bn + r, gk = k0 + c * 8;
        const bool oka = gm < T, okb = gn < E;
        cp_async16(smem_addr(s + sw(r, c)), oka ? x + (size_t)gm * H + gk : x, oka ? 16 : 0);
        cp_async16(smem_addr(s + G_TILE_BYTES + sw(r, c)), okb ? Wr + (size_t)gn * H + gk : Wr, okb ? 16 : 0);
    }
}

extern "C" __global__ void __launch_bounds__(128)
router_gemm(const bf16* __restrict__ x, const bf16* __restrict__ Wr, float* __restrict__ logits, int T, int E,
            int H) {
    __shared__ __align__(128) unsigned char smem[G_STAGES * 2 * G_TILE_BYTES];  // 48 KiB
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int bn = blockIdx.x * G_BN, bm = blockIdx.y * G_BM;
    const int KT = H / G_BK;

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < G_STAGES - 1; ++s) {
        if (s < KT) g_load_stage(smem + s * 2 * G_TILE_BYTES, x, Wr, T, E, H, bm, bn, s * G_BK, tid);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<G_STAGES - 2>();
        __syncthreads();  // tile kt landed for everyone; the stage refilled below was last read at kt-1
        const int pf = kt + G_STAGES - 1;
        if (pf < KT) g_load_stage(smem + (pf % G_STAGES) * 2 * G_TILE_BYTES, x, Wr, T, E, H, bm, bn, pf * G_BK, tid);
        cp_async_commit();

        const unsigned sA = smem_addr(smem + (kt % G_STAGES) * 2 * G_TILE_BYTES);
        const unsigned sB = sA + G_TILE_BYTES;
#pragma unroll
        for (int ks = 0; ks < G_BK / 16; ++ks) {
            unsigned af[2][4], bfr[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
                ldmatrix_x4(af[mi], sA + sw(wm * 32 + mi * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
            for (int nj = 0; nj < 2; ++nj)  // matrices: (n 0-7, k lo), (n 0-7, k hi), (n 8-15, k lo), (n 8-15, k hi)
                ldmatrix_x4(bfr[nj], sB + sw(wn * 32 + nj * 16 + ((lane >> 4) << 3) + (lane & 7), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
                    mma_bf16(acc[mi][ni], af[mi], bfr[ni >> 1][(ni & 1) * 2], bfr[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = bm + wm * 32 + mi * 16 + h * 8 + (lane >> 2);
            if (r >= T) continue;
            float* out = logits + (size_t)r * E;
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                const int c = bn + wn * 32 + ni * 8 + (lane & 3) * 2;
                if (c < E) out[c] = acc[mi][ni][2 * h] * 0.015625f;  // / 64, exact
                if (c + 1 < E) out[c + 1] = acc[mi][ni][2 * h + 1] * 0.015625f;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One warp per token: top-K (value desc, expert asc), softmax over the chosen, chunk histograms.
template <int EPT>
__global__ void __launch_bounds__(256)
router_topk(const float* __restrict__ logits, float* __restrict__ scores, int* __restrict__ expert_idx,
            int* __restrict__ token_idx, int* __restrict__ chunk_hist, int T, int E, int K) {
    __shared__ int hist[EPT * 32];
    for (int i = threadIdx.x; i < E; i += 256) hist[i] = 0;
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    for (int j = 0; j < CHUNK / 8; ++j) {
        const int t = blockIdx.x * CHUNK + warp * (CHUNK / 8) + j;
        if (t >= T) break;
        const float* row = logits + (size_t)t * E;
        float v[EPT];
#pragma unroll
        for (int q = 0; q < EPT; ++q) {
            const int e = q * 32 + lane;
            v[q] = e < E ? __ldcs(row + e) : NEG_INF;
        }
        float myv = 0.0f;
        int mye = 0;
        for (int k = 0; k < K; ++k) {
            float bv = NEG_INF;
            int bi = 0x7fffffff;
#pragma unroll
            for (int q = 0; q < EPT; ++q)  // strict >: the lower expert of this lane wins ties
                if (v[q] > bv) { bv = v[q]; bi = q * 32 + lane; }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
                const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
                if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
            }
#pragma unroll
            for (int q = 0; q < EPT; ++q)
                if (q * 32 + lane == bi) v[q] = NEG_INF;
            if (lane == k) { myv = bv; mye = bi; }
        }
        const float mx = __shfl_sync(FULL_MASK, myv, 0);  // pick 0 is the largest
        const float ex = lane < K ? expf(myv - mx) : 0.0f;
        float sum = ex;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
        if (lane < K) {
            const size_t p = (size_t)t * K + lane;
            scores[p] = ex / sum;
            expert_idx[p] = mye;
            token_idx[p] = t;
            atomicAdd(&hist[mye], 1);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < E; i += 256) chunk_hist[(size_t)blockIdx.x * E + i] = hist[i];
}

#define INST_TOPK(EPT)                                                                              \
    template __global__ void router_topk<EPT>(const float*, float*, int*, int*, int*, int, int, int);
INST_TOPK(2)
INST_TOPK(4)
INST_TOPK(8)
INST_TOPK(16)

// ---------------------------------------------------------------------------------------------
// One block of 512 threads, thread e = expert e: exclusive scan of e's chunk histogram column,
// expert count, then the exclusive scan over experts (expert_off).
extern "C" __global__ void __launch_bounds__(512)
route_scan(const int* __restrict__ chunk_hist, int* __restrict__ chunk_base, int* __restrict__ counts,
           int* __restrict__ off, int E, int nchunks) {
    __shared__ int wsum[16];
    const int e = threadIdx.x, lane = e & 31, warp = e >> 5;
    int run = 0;
    if (e < E) {
#pragma unroll 8
        for (int c = 0; c < nchunks; ++c) {
            const size_t i = (size_t)c * E + e;
            const int h = chunk_hist[i];
            chunk_base[i] = run;
            run += h;
        }
        counts[e] = run;
    }
    int incl = run;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int n = __shfl_up_sync(FULL_MASK, incl, d);
        if (lane >= d) incl += n;
    }
    if (lane == 31) wsum[warp] = incl;
    __syncthreads();
    int base = 0;
    for (int w = 0; w < warp; ++w) base += wsum[w];
    const int excl = base + incl - run;
    if (e < E) off[e] = excl;
    if (e == E - 1) off[E] = excl + run;
}

// ---------------------------------------------------------------------------------------------
// One warp per chunk: scatter the chunk's pair ids to their expert-sorted slots in pair order.
extern "C" __global__ void __launch_bounds__(32)
route_perm(const int* __restrict__ expert_idx, const int* __restrict__ chunk_base, const int* __restrict__ off,
           int* __restrict__ perm, int T, int E, int K) {
    __shared__ int cnt[512];
    const int lane = threadIdx.x;
    const int c = blockIdx.x;
    const int* base = chunk_base + (size_t)c * E;
    for (int i = lane; i < E; i += 32) cnt[i] = off[i] + base[i];  // next free slot of each expert
    __syncwarp();
    const int p0 = c * CHUNK * K;
    const int p1 = min(c * CHUNK + CHUNK, T) * K;
    for (int q = p0; q < p1; q += 32) {
        const int p = q + lane;
        const bool ok = p < p1;
        const int e = ok ? expert_idx[p] : -1;
        const unsigned peers = __match_any_sync(FULL_MASK, e);
        const int rank = __popc(peers & ((1u << lane) - 1u));
        if (ok) perm[cnt[e] + rank] = p;
        __syncwarp();
        if (ok && rank == 0) cnt[e] += __popc(peers);
        __syncwarp();
    }
}
