// DFloat11 lossless bf16 decode: Huffman-coded exponents + raw sign/mantissa bytes -> bf16 bit patterns.
//
// Techniques (learned from the DFloat11 paper, Zhang et al. 2025, and LeanModels/DFloat11 decode.cu;
// own code):
// - One thread per 8-byte chunk, starting at the chunk's gap (first code that begins in the chunk) and
//   decoding every code that *starts* inside the chunk; 4 lookahead bytes cover codes that straddle.
//   The 96-bit window is assembled once in registers (big-endian), so each step is a shift + LUT hit.
// - The 64Ki-entry LUT is compacted once per call to 16-bit entries (symbol | (len-1) << 8) and kept
//   in shared memory (128 KiB) by a persistent grid, so every lookup is an LDS, not an L2 access.
// - Two-phase decode per 512-chunk block: (1) count symbols per thread, block exclusive scan (warp
//   shuffles) gives each thread's write position, so the format stores one output offset per block;
//   (2) re-decode and write exponents into a shared-memory buffer (<= 512*64 symbols, any input).
// - Coalesced merge: 8 outputs per thread, sign/mantissa read as one 8-byte load and bf16 bits written
//   as one 16-byte store; unaligned block edges fall back to scalar stores.
#include <cuda_fp16.h>

#define CPB 512                 // chunks (threads) per format block
#define EXP_CAP (CPB * 64)      // a chunk yields at most 64 symbols (every code is >= 1 bit)
#define LUT_BYTES (65536 * 2)

extern "C" __global__ void __launch_bounds__(256)
df11_compact_lut(const int* __restrict__ lut, unsigned short* __restrict__ lut16)
{
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= 65536) return;
    const int e = lut[i];
    lut16[i] = (unsigned short)((e & 0xFF) | ((((e >> 8) - 1) & 15) << 8));
}

__device__ __forceinline__ unsigned bswap32(unsigned x) { return __byte_perm(x, 0, 0x0123); }

// 16 bits starting at bit o (0..63) of the 96-bit window hi:la (MSB first).
__device__ __forceinline__ unsigned peek16(unsigned long long hi, unsigned la, int o)
{
    const unsigned long long x = (hi << o) | ((((unsigned long long)la << 32) >> 1) >> (63 - o));
    return (unsigned)(x >> 48);
}

// Persistent: grid = min(nblk, #SMs); dynamic smem = LUT_BYTES + EXP_CAP.
extern "C" __global__ void __launch_bounds__(CPB, 1)
df11_decode(const unsigned char* __restrict__ bits, const unsigned char* __restrict__ gaps,
            const int* __restrict__ block_off, const unsigned char* __restrict__ sign_mant,
            const unsigned short* __restrict__ lut16, unsigned short* __restrict__ out, int n, int nch,
            int nblk)
{
    extern __shared__ uint4 smem[];
    const unsigned short* slut = reinterpret_cast<const unsigned short*>(smem);
    unsigned char* sexp = reinterpret_cast<unsigned char*>(smem) + LUT_BYTES;
    __shared__ int wsum[CPB / 32];
    __shared__ int block_total;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int i = tid; i < LUT_BYTES / 16; i += CPB) smem[i] = reinterpret_cast<const uint4*>(lut16)[i];
    __syncthreads();

    for (int b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int c = b * CPB + tid;
        unsigned long long hi = 0;
        unsigned la = 0;
        int off = 64;  // threads past the last chunk decode nothing
        if (c < nch) {
            const unsigned* p = reinterpret_cast<const unsigned*>(bits + 8LL * c);
            hi = ((unsigned long long)bswap32(p[0]) << 32) | bswap32(p[1]);
            la = bswap32(p[2]);
            off = gaps[c] & 31;
        }

        // Phase 1: count.
        int cnt = 0;
        for (int o = off; o < 64; ++cnt) o += ((slut[peek16(hi, la, o)] >> 8) & 15) + 1;

        // Block exclusive scan of counts.
        int incl = cnt;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, d);
            if (lane >= d) incl += v;
        }
        if (lane == 31) wsum[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            const int v = lane < CPB / 32 ? wsum[lane] : 0;
            int s = v;
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                const int u = __shfl_up_sync(0xffffffffu, s, d);
                if (lane >= d) s += u;
            }
            if (lane < CPB / 32) wsum[lane] = s - v;
            if (lane == CPB / 32 - 1) block_total = s;
        }
        __syncthreads();

        // Phase 2: re-decode into the block's exponent buffer.
        int k = wsum[warp] + incl - cnt;
        for (int o = off; o < 64;) {
            const unsigned e = slut[peek16(hi, la, o)];
            sexp[k++] = (unsigned char)(e & 0xFF);
            o += ((e >> 8) & 15) + 1;
        }
        __syncthreads();

        // Merge: out[i] for i in [lo, hi_) takes the (i-lo)-th symbol, or exponent 0 past the end.
        const int total = block_total;
        int lo = block_off[b], hi_ = block_off[b + 1];
        lo = max(0, min(lo, n));
        hi_ = max(lo, min(hi_, n));
        for (long long base = (long long)(lo & ~7) + tid * 8; base < hi_; base += CPB * 8) {
            const int i0 = (int)base;
            if (i0 >= lo && i0 + 8 <= hi_) {
                const unsigned long long sm = *reinterpret_cast<const unsigned long long*>(sign_mant + i0);
                unsigned w[4];
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    unsigned h2 = 0;
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const int j = i0 + 2 * q + r - lo;
                        const unsigned e = j < total ? sexp[j] : 0u;
                        const unsigned s = (unsigned)(sm >> (8 * (2 * q + r))) & 0xFF;
                        h2 |= (((s >> 7) << 15) | (e << 7) | (s & 0x7F)) << (16 * r);
                    }
                    w[q] = h2;
                }
                *reinterpret_cast<uint4*>(out + i0) = make_uint4(w[0], w[1], w[2], w[3]);
            } else {
                for (int r = 0; r < 8; ++r) {
                    const int i = i0 + r;
                    if (i < lo || i >= hi_) continue;
                    const int j = i - lo;
                    const unsigned e = j < total ? sexp[j] : 0u;
                    const unsigned s = sign_mant[i];
                    out[i] = (unsigned short)(((s >> 7) << 15) | (e << 7) | (s & 0x7F));
                }
            }
        }
        __syncthreads();  // sexp, wsum and block_total are reused by the next block
    }
}
