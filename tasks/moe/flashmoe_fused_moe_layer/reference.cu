// Whole MoE layer (FlashMoE's single-GPU semantics): softmax gate over E experts, top-K without token
// dropping, combine weights = the selected softmax probabilities (not renormalized), expert FFN
// y = W2 GELU(W1 x + b1) + b2, out[t] = sum_k p_k y_{e_k}(x[t]). bf16 in/out, fp32 accumulation.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - Payload-efficient dispatch (FlashMoE, Aimuyo et al. 2025; also MegaBlocks' dropless MoE): only
//    routed (token, expert) pairs are computed, no capacity padding. A single-block route kernel
//    counts pairs per expert in shared memory, scans offsets and M-tile offsets, and assigns slots;
//    the grouped GEMMs map their linear M-tile index to (expert, tile) with a binary search over the
//    tile offsets (varlen tile scheduling), and surplus blocks of the bound-sized grid exit at once.
//  - One tensor-core GEMM core for the gate, up and down projections: 64 x 128 x 64 block tiles,
//    4 warps of 32 x 64, mma.sync.m16n8k16 bf16 -> fp32, ldmatrix from XOR-swizzled tiles (16-byte
//    chunk ^= row & 7), 3-stage cp.async pipeline with zero-fill for rows past the group / columns
//    past N. The up GEMM gathers x rows by token inside its load stage (no permuted copy of x); bias +
//    exact GELU are fused into its epilogue (bf16 intermediate), bias + routing-weight scaling into the
//    down GEMM's epilogue.
//  - Gate logits come from the same GEMM; top-K by K rounds of warp arg-max ordered (logit desc,
//    expert asc) with the softmax denominator from a warp reduction.
//  - Deterministic combine: each token sums its K weighted expert outputs in k order (no atomics).
// Requires H % 64 == 0, I % 64 == 0, K <= E <= 256, K <= 8.
#include <cuda_bf16.h>

#define THREADS 128
#define BM 64
#define BN 128
#define BK 64
#define STAGES 3
#define A_TILE (BM * BK * 2)          // 8 KiB
#define B_TILE (BN * BK * 2)          // 16 KiB
#define STAGE_BYTES (A_TILE + B_TILE)
#define NEG_INF __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

#define EPI_GATE 0
#define EPI_UP 1
#define EPI_DOWN 2

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
static __device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}
// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a [rows][64] bf16 tile.
static __device__ __forceinline__ unsigned tile_off(int row, int chunk) {
    return (unsigned)(row * BK * 2 + ((chunk ^ (row & 7)) << 4));
}

// C[rows x N] of one group = A[rows x K] B^T, B = [N, K] row-major (nn.Linear layout).
//  EPI_GATE: A = x (row = m), out f32 logits [T, E].
//  EPI_UP:   A row = x[tok_of_slot[slot]], out bf16 H1[slot, n] = GELU(acc + b1[e, n]).
//  EPI_DOWN: A row = H1[slot],           out f32 Y[slot, n] = p_of_slot[slot] * (acc + b2[e, n]).
template <int EPI>
static __device__ __forceinline__ void gemm_tile(const bf16* __restrict__ A, const int* __restrict__ tok_of_slot,
                                                 const bf16* __restrict__ Bm, const bf16* __restrict__ bias,
                                                 const float* __restrict__ p_of_slot, void* __restrict__ out,
                                                 int slot0, int rows, int m0, int n0, int N, int K) {
    extern __shared__ uint4 smem_u4[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(smem_u4);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;

    // this thread's 4 A rows and 8 B rows (chunk c = tid % 8 of rows tid/8 + 16*it)
    const int c = tid & 7;
    const bf16* arow[4];
    bool aok[4];
#pragma unroll
    for (int it = 0; it < 4; ++it) {
        const int r = it * 16 + (tid >> 3);
        aok[it] = m0 + r < rows;
        const int slot = slot0 + min(m0 + r, rows - 1);
        const int src = EPI == EPI_UP ? __ldg(tok_of_slot + slot) : slot;
        arow[it] = A + (size_t)src * K + c * 8;
    }
    const int ktiles = K / BK;
    auto load_stage = [&](int kt, int stage) {
        unsigned char* sA = smem + stage * STAGE_BYTES;
        unsigned char* sB = sA + A_TILE;
#pragma unroll
        for (int it = 0; it < 4; ++it) {
            const int r = it * 16 + (tid >> 3);
            cp_async16(smem_addr(sA + tile_off(r, c)), arow[it] + kt * BK, aok[it] ? 16 : 0);
        }
#pragma unroll
        for (int it = 0; it < 8; ++it) {
            const int r = it * 16 + (tid >> 3);
            const bool ok = n0 + r < N;
            const bf16* src = Bm + (size_t)(ok ? n0 + r : 0) * K + kt * BK + c * 8;
            cp_async16(smem_addr(sB + tile_off(r, c)), src, ok ? 16 : 0);
        }
    };

    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles) load_stage(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage kt landed for everyone; stage (kt-1) % STAGES is free again
        if (kt + STAGES - 1 < ktiles) load_stage(kt + STAGES - 1, (kt + STAGES - 1) % STAGES);
        cp_async_commit();
        const unsigned char* sA = smem + (kt % STAGES) * STAGE_BYTES;
        const unsigned char* sB = sA + A_TILE;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned af[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
                ldmatrix_x4(af[mi], smem_addr(sA + tile_off(wm * 32 + mi * 16 + (lane & 15), kk * 2 + (lane >> 4))));
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned bf[4];
                const int n = wn * 64 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf, smem_addr(sB + tile_off(n, kk * 2 + ((lane >> 3) & 1))));
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    mma_bf16(acc[mi][2 * np], af[mi], bf[0], bf[1]);
                    mma_bf16(acc[mi][2 * np + 1], af[mi], bf[2], bf[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // epilogue: element (mi, nj, e) is row wm*32 + mi*16 + lane/4 + 8*(e/2), column wn*64 + nj*8 + 2*(lane%4) + e%2
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = m0 + wm * 32 + mi * 16 + (lane >> 2) + h * 8;
            if (r >= rows) continue;
            const int slot = slot0 + r;
            float scale = 1.0f;
            if (EPI == EPI_DOWN) scale = p_of_slot[slot];
#pragma unroll
            for (int nj = 0; nj < 8; ++nj) {
                const int col = n0 + wn * 64 + nj * 8 + (lane & 3) * 2;
                if (col >= N) continue;
                float v0 = acc[mi][nj][2 * h], v1 = acc[mi][nj][2 * h + 1];
                if (EPI == EPI_GATE) {  // N = E may be odd: scalar stores
                    float* dst = reinterpret_cast<float*>(out) + (size_t)slot * N + col;
                    dst[0] = v0;
                    if (col + 1 < N) dst[1] = v1;
                } else if (EPI == EPI_UP) {  // N = I, a multiple of 64: col + 1 < N
                    const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(bias + col);
                    v0 += __low2float(b);
                    v1 += __high2float(b);
                    v0 = 0.5f * v0 * (1.0f + erff(v0 * 0.70710678118654752f));
                    v1 = 0.5f * v1 * (1.0f + erff(v1 * 0.70710678118654752f));
                    *reinterpret_cast<unsigned*>(reinterpret_cast<bf16*>(out) + (size_t)slot * N + col) = pack_bf16(v0, v1);
                } else {
                    const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(bias + col);
                    v0 = scale * (v0 + __low2float(b));
                    v1 = scale * (v1 + __high2float(b));
                    *reinterpret_cast<float2*>(reinterpret_cast<float*>(out) + (size_t)slot * N + col) = make_float2(v0, v1);
                }
            }
        }
}

// 1. gate logits [T, E] = x Wg^T. grid (ceil(T/64), ceil(E/128)).
extern "C" __global__ void __launch_bounds__(THREADS)
gate_gemm(const bf16* __restrict__ x, const bf16* __restrict__ Wg, float* __restrict__ logits, int T, int E, int H) {
    gemm_tile<EPI_GATE>(x, nullptr, Wg, nullptr, nullptr, logits, 0, T, blockIdx.x * BM, blockIdx.y * BN, E, H);
}

// 2. top-K per token (one warp per token): K rounds of arg-max by (logit desc, expert asc);
//    p = softmax over all E of logits / 32, for the chosen experts.
extern "C" __global__ void __launch_bounds__(256)
gate_topk(const float* __restrict__ logits, int* __restrict__ sel_e, float* __restrict__ sel_p, int T, int E, int K) {
    const int lane = threadIdx.x & 31;
    const int t = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (t >= T) return;
    float v[8];
    float mx = NEG_INF;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int e = j * 32 + lane;
        v[j] = e < E ? logits[(size_t)t * E + e] : NEG_INF;
        mx = fmaxf(mx, v[j]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    float den = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) den += (j * 32 + lane < E) ? expf((v[j] - mx) * 0.03125f) : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(FULL_MASK, den, o);
    for (int k = 0; k < K; ++k) {
        float bv = NEG_INF;
        int be = 0x7fffffff;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int e = j * 32 + lane;
            if (e < E && v[j] > bv) { bv = v[j]; be = e; }  // strict >: lower expert wins ties
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            const int oe = __shfl_xor_sync(FULL_MASK, be, o);
            if (ov > bv || (ov == bv && oe < be)) { bv = ov; be = oe; }
        }
#pragma unroll
        for (int j = 0; j < 8; ++j)
            if (j * 32 + lane == be) v[j] = NEG_INF;  // taken (chosen logits are finite)
        if (lane == 0) {
            sel_e[t * K + k] = be;
            sel_p[t * K + k] = expf((bv - mx) * 0.03125f) / den;
        }
    }
}

// 3. routing metadata, one block: pairs per expert, seg_off / tile_off (E+1 each, tile = 64 rows),
//    slot of every pair (expert-sorted; order inside an expert is irrelevant to the result).
extern "C" __global__ void __launch_bounds__(1024)
moe_route(const int* __restrict__ sel_e, const float* __restrict__ sel_p, int* __restrict__ seg_off,
          int* __restrict__ tile_off, int* __restrict__ tok_of_slot, float* __restrict__ p_of_slot,
          int* __restrict__ pair_slot, int T, int E, int K) {
    __shared__ int cnt[256], off[256];
    const int tid = threadIdx.x, P = T * K;
    for (int e = tid; e < E; e += 1024) cnt[e] = 0;
    __syncthreads();
    for (int i = tid; i < P; i += 1024) atomicAdd(&cnt[sel_e[i]], 1);
    __syncthreads();
    if (tid == 0) {
        int s = 0, ts = 0;
        for (int e = 0; e < E; ++e) {
            seg_off[e] = s;
            tile_off[e] = ts;
            off[e] = s;
            s += cnt[e];
            ts += (cnt[e] + BM - 1) / BM;
        }
        seg_off[E] = s;
        tile_off[E] = ts;
    }
    __syncthreads();
    for (int i = tid; i < P; i += 1024) {
        const int slot = atomicAdd(&off[sel_e[i]], 1);
        tok_of_slot[slot] = i / K;
        p_of_slot[slot] = sel_p[i];
        pair_slot[i] = slot;
    }
}

// Linear M-tile index -> (expert, tile within the expert); false past the last tile.
static __device__ __forceinline__ bool find_tile(const int* __restrict__ tile_off, int E, int mt, int& e, int& tile) {
    if (mt >= __ldg(tile_off + E)) return false;
    int lo = 0, hi = E - 1;  // largest e with tile_off[e] <= mt (empty experts share offsets)
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (__ldg(tile_off + mid) <= mt) lo = mid;
        else hi = mid - 1;
    }
    e = lo;
    tile = mt - __ldg(tile_off + lo);
    return true;
}

// 4. H1[slot] = GELU(x[tok] W1[e]^T + b1[e]), grid (ceil(T*K/64) + E, ceil(I/128)).
extern "C" __global__ void __launch_bounds__(THREADS)
up_gemm(const bf16* __restrict__ x, const int* __restrict__ tok_of_slot, const bf16* __restrict__ W1,
        const bf16* __restrict__ b1, const int* __restrict__ seg_off, const int* __restrict__ tile_off,
        bf16* __restrict__ H1, int E, int I, int H) {
    int e, tile;
    if (!find_tile(tile_off, E, blockIdx.x, e, tile)) return;
    const int s0 = __ldg(seg_off + e), rows = __ldg(seg_off + e + 1) - s0;
    gemm_tile<EPI_UP>(x, tok_of_slot, W1 + (size_t)e * I * H, b1 + (size_t)e * I, nullptr, H1, s0, rows, tile * BM,
                      blockIdx.y * BN, I, H);
}

// 5. Y[slot] = p * (H1[slot] W2[e]^T + b2[e]), grid (ceil(T*K/64) + E, ceil(H/128)).
extern "C" __global__ void __launch_bounds__(THREADS)
down_gemm(const bf16* __restrict__ H1, const bf16* __restrict__ W2, const bf16* __restrict__ b2,
          const float* __restrict__ p_of_slot, const int* __restrict__ seg_off, const int* __restrict__ tile_off,
          float* __restrict__ Y, int E, int H, int I) {
    int e, tile;
    if (!find_tile(tile_off, E, blockIdx.x, e, tile)) return;
    const int s0 = __ldg(seg_off + e), rows = __ldg(seg_off + e + 1) - s0;
    gemm_tile<EPI_DOWN>(H1, nullptr, W2 + (size_t)e * H * I, b2 + (size_t)e * H, p_of_slot, Y, s0, rows, tile * BM,
                        blockIdx.y * BN, H, I);
}

// 6. out[t] = sum_k Y[pair_slot[t*K + k]] in k order, bf16. One block per token, float4 columns.
extern "C" __global__ void __launch_bounds__(256)
moe_combine(const float* __restrict__ Y, const int* __restrict__ pair_slot, bf16* __restrict__ out, int H, int K) {
    __shared__ int slots[8];
    const int t = blockIdx.x;
    if (threadIdx.x < K) slots[threadIdx.x] = pair_slot[t * K + threadIdx.x];
    __syncthreads();
    for (int i = threadIdx.x; i < H / 4; i += 256) {
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int k = 0; k < K; ++k) {
            const float4 y = *reinterpret_cast<const float4*>(Y + (size_t)slots[k] * H + 4 * i);
            a.x += y.x; a.y += y.y; a.z += y.z; a.w += y.w;
        }
        uint2 o;
        o.x = pack_bf16(a.x, a.y);
        o.y = pack_bf16(a.z, a.w);
        *reinterpret_cast<uint2*>(out + (size_t)t * H + 4 * i) = o;
    }
}
