// Inclusive scan along the last dimension of an [R, L] fp32 tensor.
//
// Techniques:
//  - Single-pass scan with decoupled look-back (Merrill & Garland, "Single-pass Parallel Prefix Scan
//    with Decoupled Look-back", NVIDIA TR NVR-2016-002; the scheme behind CUB's DeviceScan). Each
//    4096-element tile publishes its aggregate as soon as it is known, then a whole warp inspects the
//    32 preceding tiles' status words at once, stopping at the closest one that holds an inclusive prefix.
//  - Tile ids come from an atomic ticket counter, not blockIdx, so a tile only ever waits on tiles whose
//    blocks started earlier: forward progress does not depend on the block scheduler's order.
//  - Status = one 64-bit word per tile, (flag << 32) | float bits, so flag and value are read and written
//    atomically together and relaxed ordering suffices. Scratch is poisoned before every call, hence the
//    first launch (scan_init) clears the status words and the ticket counter.
//  - Coalesced striped loads into shared memory, transposed to a blocked arrangement (16 consecutive
//    items per thread) through a padded layout (one float every 32, conflict-free both ways), serial
//    scan per thread, warp-shuffle scan across threads (Kogge-Stone with __shfl_up_sync), and a scan of
//    the 8 warp totals.
// Written from scratch from the paper's description.

#define SCAN_THREADS 256
#define SCAN_ITEMS 16
#define SCAN_TILE (SCAN_THREADS * SCAN_ITEMS)
#define SCAN_WARPS (SCAN_THREADS / 32)

// Status word flags (high 32 bits). 0 = nothing published yet.
#define FLAG_AGGREGATE 1ull
#define FLAG_PREFIX 2ull

static __device__ __forceinline__ unsigned long long ld_status(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

static __device__ __forceinline__ void st_status(unsigned long long* p, unsigned long long flag, float value) {
    unsigned long long v = (flag << 32) | (unsigned long long)__float_as_uint(value);
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// Pads one float every 32 so that both the striped and the blocked access patterns are conflict-free.
static __device__ __forceinline__ int pad(int j) { return j + (j >> 5); }

extern "C" __global__ void scan_init(unsigned long long* __restrict__ status, unsigned int* __restrict__ counter,
                                     int num_tiles) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < num_tiles) status[i] = 0ull;
    if (i == 0) *counter = 0u;
}

extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
scan_rows(const float* __restrict__ x, float* __restrict__ y, unsigned long long* __restrict__ status,
          unsigned int* __restrict__ counter, int L, int tiles_per_row) {
    __shared__ float s_data[SCAN_TILE + SCAN_TILE / 32];
    __shared__ float s_warp[SCAN_WARPS];
    __shared__ unsigned int s_ticket;
    __shared__ float s_prefix;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;

    if (tid == 0) s_ticket = atomicAdd(counter, 1u);
    __syncthreads();
    const unsigned int ticket = s_ticket;
    const int row = (int)(ticket / (unsigned int)tiles_per_row);
    const int t = (int)(ticket - (unsigned int)row * (unsigned int)tiles_per_row);
    const long long base = (long long)row * L + (long long)t * SCAN_TILE;
    const int n = min(SCAN_TILE, L - t * SCAN_TILE);
    unsigned long long* row_status = status + (long long)row * tiles_per_row;

    // Striped, coalesced load; out-of-range items are 0 (they are never stored).
    const float* xr = x + base;
#pragma unroll
    for (int k = 0; k < SCAN_ITEMS; ++k) {
        const int j = k * SCAN_THREADS + tid;
        s_data[pad(j)] = j < n ? __ldcs(xr + j) : 0.0f;
    }
    __syncthreads();

    // Blocked: thread tid owns items [16*tid, 16*tid + 16); pad(16*tid + i) = 16*tid + i + tid/2.
    float v[SCAN_ITEMS];
    const int first = tid * SCAN_ITEMS + (tid >> 1);
#pragma unroll
    for (int i = 0; i < SCAN_ITEMS; ++i) v[i] = s_data[first + i];
#pragma unroll
    for (int i = 1; i < SCAN_ITEMS; ++i) v[i] += v[i - 1];
    const float thread_total = v[SCAN_ITEMS - 1];

    // Inclusive warp scan of the thread totals.
    float inc = thread_total;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float up = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += up;
    }
    float thread_excl = __shfl_up_sync(0xffffffffu, inc, 1);
    if (lane == 0) thread_excl = 0.0f;
    if (lane == 31) s_warp[warp] = inc;
    __syncthreads();

    float warp_excl = 0.0f, block_total = 0.0f;
#pragma unroll
    for (int w = 0; w < SCAN_WARPS; ++w) {
        const float sw = s_warp[w];
        if (w < warp) warp_excl += sw;
        block_total += sw;
    }

    // Decoupled look-back by warp 0.
    if (warp == 0) {
        if (t == 0) {
            if (lane == 0) {
                st_status(row_status, FLAG_PREFIX, block_total);
                s_prefix = 0.0f;
            }
        } else {
            if (lane == 0) st_status(row_status + t, FLAG_AGGREGATE, block_total);
            float excl = 0.0f;
            int pred = t - 1;  // closest predecessor this window starts from
            while (true) {
                const int p = pred - lane;
                unsigned long long st;
                int spins = 0;
                while (true) {
                    // Tile 0 always publishes a prefix, so a window never needs tiles before it;
                    // lanes past tile 0 read as "prefix 0" and are never summed.
                    st = p >= 0 ? ld_status(row_status + p) : (FLAG_PREFIX << 32);
                    if (!__any_sync(0xffffffffu, (st >> 32) == 0ull)) break;
                    if (++spins > 8) __nanosleep(32);
                }
                const unsigned long long flag = st >> 32;
                const float val = __uint_as_float((unsigned int)(st & 0xffffffffull));
                const unsigned int prefix_lanes = __ballot_sync(0xffffffffu, flag == FLAG_PREFIX);
                // Lanes up to and including the closest prefix contribute; without one, all 32 do.
                const int stop = prefix_lanes ? __ffs(prefix_lanes) - 1 : 31;
                float part = lane <= stop ? val : 0.0f;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
                excl += part;
                if (prefix_lanes) break;
                pred -= 32;
            }
            if (lane == 0) {
                st_status(row_status + t, FLAG_PREFIX, excl + block_total);
                s_prefix = excl;
            }
        }
    }
    __syncthreads();

    const float add = s_prefix + warp_excl + thread_excl;
#pragma unroll
    for (int i = 0; i < SCAN_ITEMS; ++i) s_data[first + i] = v[i] + add;
    __syncthreads();

    float* yr = y + base;
#pragma unroll
    for (int k = 0; k < SCAN_ITEMS; ++k) {
        const int j = k * SCAN_THREADS + tid;
        if (j < n) __stcs(yr + j, s_data[pad(j)]);
    }
}
