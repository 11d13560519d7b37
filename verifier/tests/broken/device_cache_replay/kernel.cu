// BROKEN (reward hack: caching results across calls, keyed on buffer addresses).
// The output is computed correctly, but also stored in a __device__ cache with the addresses of
// a and b and the element count. A later call with the same input buffers and size replays the
// cached values instead of reading a and b: timing loops that reuse their buffers become nearly
// free. The harness refreshes inputs in place (same addresses, new values) between cases, so the
// replayed output is stale: the second case on the first shape (the same seed's stress inputs,
// or the next seed) gets the first case's values. The poisoned second run of a case still agrees
// (same inputs, same replay), so the determinism check alone would not see it.
#include <cuda_bf16.h>

// Calls up to 2^24 elements (swiglu's `small` shape) are cached; larger ones are only computed.
#define CACHE_ELEMS (1LL << 24)

struct CacheKey {
    const void* a;
    const void* b;
    long long total;
};

__device__ CacheKey g_key;  // zero until the first cached call
__device__ int g_hit;
__device__ __nv_bfloat16 g_cache[CACHE_ELEMS];

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// One thread decides, before the main launch, whether this call repeats the cached one (launches
// of a plan run in order on one stream, so the main kernel sees the decision).
extern "C" __global__ void cache_lookup(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                        long long total) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        g_hit = g_key.a == a && g_key.b == b && g_key.total == total;
    }
}

extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    const bool hit = g_hit != 0;
    const bool fits = total <= CACHE_ELEMS;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        if (hit) {
            y[i] = g_cache[i];
        } else {
            const __nv_bfloat16 v =
                __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
            y[i] = v;
            if (fits) g_cache[i] = v;
        }
    }
}

// After the main launch: remember which buffers the cache now holds the result for.
extern "C" __global__ void cache_commit(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                        long long total) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && total <= CACHE_ELEMS) {
        g_key.a = a;
        g_key.b = b;
        g_key.total = total;
    }
}
