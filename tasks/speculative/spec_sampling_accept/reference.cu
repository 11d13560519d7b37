// Batched speculative sampling (accept/reject a draft chain, resample the first rejected position)
// with exact integer arithmetic: see task.toml for the semantics.
//
// Techniques (written from scratch; sources are where the ideas come from):
//  - One CTA per sequence (FlashInfer chain_speculative_sampling, vLLM's rejection sampler): warp 0
//    gathers the 2G scalars P[i, x_i], Q[i, x_i], tests them in parallel and finds the first
//    rejection with one __ballot_sync + __ffs, so only the row that is sampled from is ever read
//    (early exit: P[n], Q[n], or P[G]; never the other 2G-1 rows).
//  - Residual, its sum and the inverse-CDF search fused over that one row: pass 1 streams the row
//    with 16-byte loads (four tiles = eight loads in flight per lane), each warp reduces 128-element
//    tiles with shuffles and records the tile sums in shared memory; a block-wide scan over the tile
//    sums (warp-shuffle scans) locates the one tile holding the threshold, and a single warp re-reads
//    that tile (an L2 hit) and finishes with a warp inclusive scan. The row is read once from DRAM.
//  - All arithmetic is on integers (weights < 16 fit int32 sums; threshold products in int64), so
//    there are no CDF boundary ties.
// Requires V % 4 == 0 (16-byte aligned rows), V <= 262144, G <= 32.
#define FULL_MASK 0xffffffffu
#define THREADS 512
#define WARPS (THREADS / 32)
#define TILE 128                      // elements per warp tile: 32 lanes x one float4
#define MAX_TILES (262144 / TILE)     // 2048 tile sums (8 KiB)
#define TILES_PER_THREAD (MAX_TILES / THREADS)

static __device__ __forceinline__ int w4(const float4& p, const float4& q, bool use_q) {
    const int a = __float2int_rz(p.x), b = __float2int_rz(p.y), c = __float2int_rz(p.z), d = __float2int_rz(p.w);
    if (!use_q) return (a + b) + (c + d);
    return (max(a - __float2int_rz(q.x), 0) + max(b - __float2int_rz(q.y), 0)) +
           (max(c - __float2int_rz(q.z), 0) + max(d - __float2int_rz(q.w), 0));
}

extern "C" __global__ void __launch_bounds__(THREADS)
spec_sampling_accept(const float* __restrict__ Q, const float* __restrict__ P, const int* __restrict__ tokens,
                     const int* __restrict__ U, const int* __restrict__ U2, int* __restrict__ n_accepted,
                     int* __restrict__ emitted, int G, int V) {
    __shared__ int tile_sum[MAX_TILES];
    __shared__ int red[WARPS];
    __shared__ int s_n, s_tile, s_base, s_token;

    const int b = blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    // ---- acceptance: lane i tests draft position i
    if (warp == 0) {
        bool rej = false;
        if (lane < G) {
            const int x = tokens[b * G + lane];
            const long long p = (long long)__float2int_rz(P[((size_t)b * (G + 1) + lane) * V + x]);
            const long long q = (long long)__float2int_rz(Q[((size_t)b * G + lane) * V + x]);
            rej = !((long long)U[b * G + lane] * q < (p << 24));
        }
        const unsigned m = __ballot_sync(FULL_MASK, rej);
        if (lane == 0) s_n = m ? __ffs(m) - 1 : G;
    }
    __syncthreads();
    const int n = s_n;
    const float4* prow = reinterpret_cast<const float4*>(P + ((size_t)b * (G + 1) + n) * V);
    const float4* qrow = reinterpret_cast<const float4*>(Q + ((size_t)b * G + min(n, G - 1)) * V);
    const int nv = V >> 2;                       // float4 per row
    const int ntiles = (V + TILE - 1) / TILE;    // the last tile may be partial (whole float4s)
    bool use_q = n < G;

    // ---- pass 1: per-tile residual sums; at most twice (second time without Q if the residual is 0)
    int R = 0;
    for (;;) {
        for (int k0 = warp; k0 < ntiles; k0 += 4 * WARPS) {
            float4 pv[4], qv[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int i = (k0 + u * WARPS) * 32 + lane;
                const bool ok = i < nv;
                pv[u] = ok ? prow[i] : make_float4(0.f, 0.f, 0.f, 0.f);
                qv[u] = (ok && use_q) ? qrow[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                int s = w4(pv[u], qv[u], use_q);
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
                const int k = k0 + u * WARPS;
                if (lane == 0 && k < ntiles) tile_sum[k] = s;
            }
        }
        __syncthreads();
        // block scan over tile sums: thread tid owns tiles [tid*TPT, tid*TPT + TPT)
        int own[TILES_PER_THREAD];
        int s = 0;
#pragma unroll
        for (int j = 0; j < TILES_PER_THREAD; ++j) {
            const int k = tid * TILES_PER_THREAD + j;
            own[j] = k < ntiles ? tile_sum[k] : 0;
            s += own[j];
        }
        int incl = s;  // warp inclusive scan
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, incl, o);
            if (lane >= o) incl += y;
        }
        if (lane == 31) red[warp] = incl;
        __syncthreads();
        int before = 0;
        R = 0;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            const int ws = red[w];
            before += (w < warp) ? ws : 0;
            R += ws;
        }
        if (R == 0 && use_q) {               // block-uniform: retry on P[n] alone
            use_q = false;
            __syncthreads();                 // everyone has read red[] and tile_sum[]
            continue;
        }
        // R > 0 here (P[G] or the fallback row all zero would need weights outside the task's range;
        // t = 0 then still selects within the row bounds below).
        const long long t = ((long long)U2[b] * (long long)R) >> 24;
        long long lo = (long long)before + (incl - s);   // exclusive prefix of this thread's tiles
        if (lo <= t && t < lo + s) {                     // exactly one thread when R > 0
#pragma unroll
            for (int j = 0; j < TILES_PER_THREAD; ++j) {
                if (t < lo + own[j]) {
                    s_tile = tid * TILES_PER_THREAD + j;
                    s_base = (int)lo;
                    break;
                }
                lo += own[j];
            }
        }
        if (R == 0 && tid == 0) { s_tile = 0; s_base = 0; }
        __syncthreads();
        // ---- the tile holding the threshold: one warp, inclusive scan over lanes
        if (warp == 0) {
            const int tile = s_tile;
            const int i = tile * 32 + lane;
            const bool ok = i < nv;
            const float4 pv = ok ? prow[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 qv = (ok && use_q) ? qrow[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            int e[4];
            e[0] = __float2int_rz(pv.x); e[1] = __float2int_rz(pv.y);
            e[2] = __float2int_rz(pv.z); e[3] = __float2int_rz(pv.w);
            if (use_q) {
                e[0] = max(e[0] - __float2int_rz(qv.x), 0); e[1] = max(e[1] - __float2int_rz(qv.y), 0);
                e[2] = max(e[2] - __float2int_rz(qv.z), 0); e[3] = max(e[3] - __float2int_rz(qv.w), 0);
            }
            const int ls = (e[0] + e[1]) + (e[2] + e[3]);
            int li = ls;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(FULL_MASK, li, o);
                if (lane >= o) li += y;
            }
            long long c = (long long)s_base + (li - ls);  // cumsum before this lane's first element
            int found = 0x7fffffff;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                c += e[j];
                if (c > t && found == 0x7fffffff) found = 4 * i + j;
            }
            // smallest element index over the warp
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) found = min(found, __shfl_xor_sync(FULL_MASK, found, o));
            if (lane == 0) s_token = found == 0x7fffffff ? V - 1 : found;
        }
        break;
    }
    __syncthreads();
    if (tid <= G) {
        const int tok = s_token;
        int out;
        if (tid < n) out = tokens[b * G + tid];
        else if (tid == n) out = tok;
        else out = -1;
        emitted[b * (G + 1) + tid] = out;
    }
    if (tid == 0) n_accepted[b] = n;
}
