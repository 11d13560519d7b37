// Binary MatAdd (ShiftAddViT): out[bh, m, d] = sum_s [Kb[bh, s, m] > 0] * V[bh, s, d], fp32.
//
// Techniques (the operator from ShiftAddViT; the schedule is the split-reduction structure used for
// memory-bound "long K, tiny output" products; own code):
// - Split S: grid = (ceil(S / 128), B*H); each block streams its 128-row chunk of V and Kb (contiguous in
//   memory) into shared memory with 16-byte cp.async copies, so every input byte is read once, coalesced.
// - Each thread owns OPT of the head's Dm*D outputs (consecutive threads, consecutive d: conflict-free value
//   reads, broadcast mask reads) and adds the value when the key bit is set (a select, no multiply).
// - Partials of the S chunks are summed by a second kernel in chunk order (deterministic, no atomics); with
//   a single chunk the block writes the output directly.
#include <vector_types.h>

#define CHUNK 128
#define THREADS 256

__device__ __forceinline__ unsigned smem_u32(const void* p)
{
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}

// Grid: x = chunk (ceil(S/128)), y = head (B*H). Dynamic smem: 128 * (D + Dm) * 4 bytes.
template <int OPT>
__global__ void __launch_bounds__(THREADS)
binary_matadd(const float* __restrict__ V, const float* __restrict__ Kb, float* __restrict__ out,
              float* __restrict__ partial, int S, int D, int Dm, int splits)
{
    extern __shared__ __align__(16) float smem[];
    float* sV = smem;                 // [rows][D]
    float* sK = smem + CHUNK * D;     // [rows][Dm]
    const int tid = threadIdx.x, z = blockIdx.x, bh = blockIdx.y;
    const int s0 = z * CHUNK, rows = min(CHUNK, S - s0);

    const float* gV = V + ((long long)bh * S + s0) * D;
    const float* gK = Kb + ((long long)bh * S + s0) * Dm;
    for (int i = tid; i < rows * D / 4; i += THREADS) cp_async16(sV + 4 * i, gV + 4 * i);
    for (int i = tid; i < rows * Dm / 4; i += THREADS) cp_async16(sK + 4 * i, gK + 4 * i);
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
    __syncthreads();

    const int O = Dm * D;
    int om[OPT], od[OPT];
    float acc[OPT];
#pragma unroll
    for (int p = 0; p < OPT; ++p) {
        const int o = min(tid + p * THREADS, O - 1);  // threads past O compute a duplicate, never written
        om[p] = o / D;
        od[p] = o - om[p] * D;
        acc[p] = 0.f;
    }
#pragma unroll 4
    for (int s = 0; s < rows; ++s) {
#pragma unroll
        for (int p = 0; p < OPT; ++p) {
            const float v = sV[s * D + od[p]];
            acc[p] += (sK[s * Dm + om[p]] > 0.f) ? v : 0.f;
        }
    }

    float* dst = splits == 1 ? out + (long long)bh * O : partial + ((long long)bh * splits + z) * O;
#pragma unroll
    for (int p = 0; p < OPT; ++p) {
        const int o = tid + p * THREADS;
        if (o < O) dst[o] = acc[p];
    }
}

template __global__ void binary_matadd<1>(const float*, const float*, float*, float*, int, int, int, int);
template __global__ void binary_matadd<2>(const float*, const float*, float*, float*, int, int, int, int);
template __global__ void binary_matadd<4>(const float*, const float*, float*, float*, int, int, int, int);
template __global__ void binary_matadd<8>(const float*, const float*, float*, float*, int, int, int, int);
template __global__ void binary_matadd<16>(const float*, const float*, float*, float*, int, int, int, int);

// out[bh, o] = sum over chunks z (in order) of partial[bh, z, o].
extern "C" __global__ void __launch_bounds__(256)
binary_matadd_reduce(const float* __restrict__ partial, float* __restrict__ out, int BH, int O, int splits)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)BH * O) return;
    const long long bh = i / O, o = i % O;
    const float* p = partial + bh * splits * O + o;
    float s = p[0];
    for (int z = 1; z < splits; ++z) s += p[(long long)z * O];
    out[i] = s;
}
