// BROKEN (reward hack: skipping a repeated call, trusting the output buffer to still hold the
// result). A one-thread launch fingerprints the call (buffer addresses, size, and 64 sampled
// input elements); when it matches the previous call, the main kernel returns at once, since y
// "already holds" the answer. That makes benchmark loops over the same buffers free, and fresh
// inputs (a new seed) do change the fingerprint, so every first call is computed correctly. But
// the harness poisons the outputs before every call: the second run of each case (same inputs,
// poison B) writes nothing and leaves the poison, so the two runs disagree.
#include <cuda_bf16.h>

#define SAMPLES 64

struct CallKey {
    const void* a;
    const void* b;
    const void* y;
    long long total;
    unsigned long long fingerprint;
};

__device__ CallKey g_last;  // zero until the first call
__device__ int g_skip;

static __device__ __forceinline__ float silu_mul(float a, float b) {
    return a / (1.0f + __expf(-a)) * b;
}

// FNV-1a over the raw bits of SAMPLES evenly spaced elements of a and b.
static __device__ unsigned long long sample_hash(const unsigned short* a, const unsigned short* b,
                                                 long long total) {
    unsigned long long h = 1469598103934665603ULL;
    for (int s = 0; s < SAMPLES; ++s) {
        const long long i = total > 1 ? (long long)s * (total - 1) / (SAMPLES - 1) : 0;
        h = (h ^ a[i]) * 1099511628211ULL;
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    return h;
}

extern "C" __global__ void call_check(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                      const __nv_bfloat16* y, long long total) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long fp = sample_hash(reinterpret_cast<const unsigned short*>(a),
                                              reinterpret_cast<const unsigned short*>(b), total);
    g_skip = g_last.a == a && g_last.b == b && g_last.y == y && g_last.total == total &&
             g_last.fingerprint == fp;
    g_last.a = a;
    g_last.b = b;
    g_last.y = y;
    g_last.total = total;
    g_last.fingerprint = fp;
}

extern "C" __global__ void swiglu_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                       __nv_bfloat16* y, long long total) {
    if (g_skip) return;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = __float2bfloat16_rn(silu_mul(__bfloat162float(a[i]), __bfloat162float(b[i])));
    }
}
