// Greedy verification of a speculative token tree (PPD / Medusa-style tree decoding):
// argmax of every node's logits, then the deepest accepted root path per sequence.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - Fused vectorized argmax (SGLang / vLLM greedy samplers): one block per (sequence, node) row,
//    16-byte loads (8 bf16) with four loads in flight per thread and a streaming hint (each logit is
//    read once), per-thread (value, index) with strict > so the first maximum wins, then a warp-
//    shuffle and shared-memory reduction ordered by (value desc, index asc).
//  - Tree walk in one block per sequence (the card's "walk in one warp over smem arrays", widened to
//    one thread per node): pointer jumping (Wyllie list ranking) gives every node its depth and the
//    AND of the correctness of all edges up to the root in ceil(log2 T) rounds; a block arg-max by
//    (depth desc, node asc) picks the leaf; one thread writes the path by walking parents.
//  - No softmax is materialized (greedy acceptance needs the argmax only).
// Requires V % 8 == 0 (task constraint: 16-byte aligned rows) and T <= 1024.
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu
#define AM_THREADS 256

// (v, i) beats (ov, oi): larger value, then smaller index
static __device__ __forceinline__ bool better(float v, int i, float ov, int oi) { return v > ov || (v == ov && i < oi); }

static __device__ __forceinline__ void scan8(const uint4& x, int base, float& bv, int& bi) {
    const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float lo = __uint_as_float(w[e] << 16), hi = __uint_as_float(w[e] & 0xffff0000u);
        if (lo > bv) { bv = lo; bi = base + 2 * e; }
        if (hi > bv) { bv = hi; bi = base + 2 * e + 1; }
    }
}

extern "C" __global__ void __launch_bounds__(AM_THREADS)
row_argmax(const __nv_bfloat16* __restrict__ logits, int* __restrict__ am, int V) {
    __shared__ float sv[AM_THREADS / 32];
    __shared__ int si[AM_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint4* row = reinterpret_cast<const uint4*>(logits + (size_t)blockIdx.x * V);
    const int nv = V >> 3;
    float bv = __int_as_float(0xff800000);
    int bi = 0x7fffffff;
    int v = tid;
    // a thread's vectors are visited in increasing order, so strict > keeps its first maximum
    for (; v + 3 * AM_THREADS < nv; v += 4 * AM_THREADS) {
        const uint4 a = __ldcs(row + v), b = __ldcs(row + v + AM_THREADS);
        const uint4 c = __ldcs(row + v + 2 * AM_THREADS), d = __ldcs(row + v + 3 * AM_THREADS);
        scan8(a, 8 * v, bv, bi);
        scan8(b, 8 * (v + AM_THREADS), bv, bi);
        scan8(c, 8 * (v + 2 * AM_THREADS), bv, bi);
        scan8(d, 8 * (v + 3 * AM_THREADS), bv, bi);
    }
    for (; v < nv; v += AM_THREADS) scan8(__ldcs(row + v), 8 * v, bv, bi);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < AM_THREADS / 32; ++w)
            if (better(sv[w], si[w], bv, bi)) { bv = sv[w]; bi = si[w]; }
        am[blockIdx.x] = bi;
    }
}

// One block per sequence, one thread per node (blockDim.x >= T, a multiple of 32).
extern "C" __global__ void __launch_bounds__(1024)
tree_verify(const int* __restrict__ am, const int* __restrict__ tokens, const int* __restrict__ parent_code,
            int* __restrict__ accept_len, int* __restrict__ last_node, int* __restrict__ next_token,
            int* __restrict__ accepted, int T) {
    __shared__ int par[1024], anc[1024], okf[1024], dep[1024], amv[1024];
    __shared__ int red_s[32], red_i[32];
    const int b = blockIdx.x, i = threadIdx.x, lane = i & 31, warp = i >> 5;
    const bool node = i < T;
    if (node) {
        par[i] = i == 0 ? 0 : __ldg(parent_code + i) % i;  // parent_code >= 0
        amv[i] = __ldg(am + (size_t)b * T + i);
    }
    __syncthreads();
    if (node) {
        anc[i] = par[i];
        okf[i] = i == 0 || __ldg(tokens + (size_t)b * T + i) == amv[par[i]];  // edge i -> parent correct
        dep[i] = i != 0;
    }
    __syncthreads();
    // pointer jumping: okf[i] = AND of edge flags and dep[i] = edge count from i up to anc[i];
    // the root points to itself with (1, 0), so nodes that reached it stay fixed
    for (int step = 1; step < T; step <<= 1) {
        int a = 0, o = 0, d = 0;
        if (node) {
            a = anc[i];
            o = okf[i] & okf[a];
            d = dep[i] + dep[a];
            a = anc[a];
        }
        __syncthreads();
        if (node) { anc[i] = a; okf[i] = o; dep[i] = d; }
        __syncthreads();
    }
    // leaf: max depth among accepted nodes, smallest index on ties
    int bs = node && okf[i] ? dep[i] : -1;
    int bi = i;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const int os = __shfl_xor_sync(FULL_MASK, bs, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (os > bs || (os == bs && oi < bi)) { bs = os; bi = oi; }
    }
    if (lane == 0) { red_s[warp] = bs; red_i[warp] = bi; }
    for (int j = i; j < T - 1; j += blockDim.x) accepted[(size_t)b * (T - 1) + j] = -1;
    __syncthreads();  // also orders the -1 fill before the path writes below
    if (i == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w)
            if (red_s[w] > bs || (red_s[w] == bs && red_i[w] < bi)) { bs = red_s[w]; bi = red_i[w]; }
        accept_len[b] = bs;
        last_node[b] = bi;
        next_token[b] = amv[bi];
        for (int n = bi; n != 0; n = par[n]) accepted[(size_t)b * (T - 1) + dep[n] - 1] = __ldg(tokens + (size_t)b * T + n);
    }
}
