// Unstructured-sparse x skinny-dense SpMM (Flash-LLM): Y[M, N] = (W_vals * mask) @ X, N <= 64.
//
// Techniques (learned from the Flash-LLM paper, Xia et al. VLDB 2024, and AlibabaResearch/flash-llm
// SpMM_Kernel.cuh / MatMulUtilities.cuh; own code):
// - Offline Tiled-CSL ([[prepare]], untimed, weight-only): per 64x64 tile of W, the nonzeros as
//   32-bit entries (fp16 value | 12-bit in-tile location << 16), row-major, padded with sentinel
//   entries to a multiple of 4 so a tile is read with 16-byte loads. One warp packs a tile with
//   ballot/popc compaction (deterministic order).
// - "Load as sparse, compute as dense": each k-step, the tile's entries are fetched from global into
//   registers one tile ahead (ld.global, overlapping the current MMAs), scattered into a zeroed,
//   XOR-swizzled fp16 tile in shared memory, then fed to mma.sync m16n8k16 through ldmatrix.
// - The dense X k-slice uses cp.async double buffering; its rows are padded so ldmatrix.trans
//   (B fragments from row-major X) is conflict-free.
// - Split-K over grid.y when M/64 blocks cannot fill the GPU; fp32 partials reduced in fixed order.
#include <cuda_fp16.h>

#define TM 64          // tile rows (W rows per block)
#define TK 64          // tile k
#define TILE_CAP 4096  // entries per tile slot in the packed buffer
#define THREADS 128    // 4 warps x 16 rows
#define SENTINEL 0xFFFFu

// ---------------------------------------------------------------------------------------------
// Prepare: one warp per tile (mb, kt); tile t = mb * (K/64) + kt occupies entries [t*4096, t*4096+cnt).
extern "C" __global__ void __launch_bounds__(32)
spmm_pack(const __half* __restrict__ W_vals, const unsigned* __restrict__ W_mask,
          unsigned* __restrict__ entries, unsigned* __restrict__ tile_cnt, int M, int K)
{
    const int KT = K / TK;
    const long long t = blockIdx.x;
    const int mb = (int)(t / KT), kt = (int)(t % KT);
    const int lane = threadIdx.x;
    unsigned* out = entries + t * TILE_CAP;
    int base = 0;
    for (int r = 0; r < TM; ++r) {
        const long long m = (long long)mb * TM + r;
        const unsigned* mrow = W_mask + m * (K / 32) + kt * 2;
        const __half* vrow = W_vals + m * K + kt * TK;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const bool set = (mrow[h] >> lane) & 1u;
            const unsigned bal = __ballot_sync(0xffffffffu, set);
            if (set) {
                const int pos = base + __popc(bal & ((1u << lane) - 1u));
                const unsigned loc = (unsigned)(r * TK + h * 32 + lane);
                out[pos] = (loc << 16) | (unsigned)__half_as_ushort(vrow[h * 32 + lane]);
            }
            base += __popc(bal);
        }
    }
    const int padded = (base + 3) & ~3;
    if (base + lane < padded) out[base + lane] = SENTINEL << 16;
    if (lane == 0) tile_cnt[t] = (unsigned)padded;
}

// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(void* dst, const void* src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x2_t(unsigned (&r)[2], const void* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Grid: x = M/64 row blocks, y = k-splits. Static smem: 8 KiB W tile + 2 X slices.
template <int N>
__global__ void __launch_bounds__(THREADS)
spmm_flash(const uint4* __restrict__ entries, const unsigned* __restrict__ tile_cnt,
           const __half* __restrict__ X, __half* __restrict__ Y, float* __restrict__ partial, int M, int K,
           int splits)
{
    static_assert(N % 8 == 0 && N >= 8 && N <= 64, "N in 8..64, multiple of 8");
    constexpr int NT = N / 8;
    constexpr int XS = ((N / 8) % 2 == 0) ? N + 8 : N;  // padded X row (halves): conflict-free ldmatrix
    constexpr int XCH = TK * N / 8;                      // 16-byte chunks per X slice
    __shared__ __align__(16) __half sW[TM * TK];
    __shared__ __align__(16) __half sX[2][TK * XS];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int mb = blockIdx.x, z = blockIdx.y;
    const int KT = K / TK;
    const int kt0 = (int)((long long)z * KT / splits), kt1 = (int)((long long)(z + 1) * KT / splits);
    const long long tile0 = (long long)mb * KT;

    auto load_x = [&](int buf, int kt) {
        for (int i = tid; i < XCH; i += THREADS) {
            const int r = i / (N / 8), c = i % (N / 8);
            cp_async16(&sX[buf][r * XS + c * 8], X + (long long)(kt * TK + r) * N + c * 8);
        }
    };
    uint4 ent[8];
    int n4 = 0;
    auto load_entries = [&](int kt) {
        n4 = (int)(tile_cnt[tile0 + kt] >> 2);
        const uint4* src = entries + (tile0 + kt) * (TILE_CAP / 4);
#pragma unroll
        for (int j = 0; j < 8; ++j)
            if (tid + j * THREADS < n4) ent[j] = src[tid + j * THREADS];
    };

    float acc[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;

    if (kt0 < kt1) {
        load_x(kt0 & 1, kt0);
        cp_async_commit();
        load_entries(kt0);
    }
    for (int kt = kt0; kt < kt1; ++kt) {
        // sW is free here (barrier at the end of the previous step).
        {
            uint4* w4 = reinterpret_cast<uint4*>(sW);
#pragma unroll
            for (int i = 0; i < TM * TK / 8 / THREADS; ++i) w4[tid + i * THREADS] = make_uint4(0, 0, 0, 0);
        }
        if (kt + 1 < kt1) load_x((kt + 1) & 1, kt + 1);
        cp_async_commit();
        __syncthreads();  // zero fill visible before the scatter
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (tid + j * THREADS < n4) {
                const unsigned e4[4] = {ent[j].x, ent[j].y, ent[j].z, ent[j].w};
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const unsigned loc = e4[q] >> 16;
                    if (loc == SENTINEL) continue;
                    const int r = loc >> 6, c = loc & 63;
                    sW[r * TK + (((c >> 3) ^ (r & 7)) << 3) + (c & 7)] = __ushort_as_half((unsigned short)(e4[q] & 0xFFFFu));
                }
            }
        }
        if (kt + 1 < kt1) load_entries(kt + 1);  // in flight during the MMAs below
        cp_async_wait<1>();
        __syncthreads();  // W tile complete, X slice kt landed

        const __half* xs = sX[kt & 1];
#pragma unroll
        for (int kk = 0; kk < TK / 16; ++kk) {
            unsigned a[4];
            {
                const int r = warp * 16 + (lane & 15);
                const int c = kk * 2 + (lane >> 4);
                ldsm_x4(a, &sW[r * TK + ((c ^ (r & 7)) << 3)]);
            }
            const int krow = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned b[4];
                ldsm_x4_t(b, &xs[krow * XS + np * 16 + ((lane >> 4) << 3)]);
                mma_f16(acc[2 * np], a, b[0], b[1]);
                mma_f16(acc[2 * np + 1], a, b[2], b[3]);
            }
            if (NT % 2) {
                unsigned b[2];
                ldsm_x2_t(b, &xs[krow * XS + (NT - 1) * 8]);
                mma_f16(acc[NT - 1], a, b[0], b[1]);
            }
        }
        __syncthreads();  // done with sW and this X slice
    }
    cp_async_wait<0>();

#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const int col = nt * 8 + 2 * t4;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const long long row = (long long)mb * TM + warp * 16 + g + 8 * h;
            if (splits == 1)
                *reinterpret_cast<__half2*>(&Y[row * N + col]) = __floats2half2_rn(acc[nt][2 * h], acc[nt][2 * h + 1]);
            else
                *reinterpret_cast<float2*>(&partial[((long long)z * M + row) * N + col]) =
                    make_float2(acc[nt][2 * h], acc[nt][2 * h + 1]);
        }
    }
}

template __global__ void spmm_flash<8>(const uint4*, const unsigned*, const __half*, __half*, float*, int, int, int);
template __global__ void spmm_flash<16>(const uint4*, const unsigned*, const __half*, __half*, float*, int, int, int);
template __global__ void spmm_flash<24>(const uint4*, const unsigned*, const __half*, __half*, float*, int, int, int);
template __global__ void spmm_flash<32>(const uint4*, const unsigned*, const __half*, __half*, float*, int, int, int);
template __global__ void spmm_flash<64>(const uint4*, const unsigned*, const __half*, __half*, float*, int, int, int);

// Y = fp16(sum of split-K partials); 4 outputs per thread (M*N % 4 == 0).
extern "C" __global__ void __launch_bounds__(256)
splitk_reduce(const float4* __restrict__ partial, __half* __restrict__ Y, int M, int N, int splits)
{
    const long long n4 = (long long)M * N / 4;
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
