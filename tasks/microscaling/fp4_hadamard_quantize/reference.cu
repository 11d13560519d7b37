// Fused block-Hadamard rotation + MXFP4 (absmax, E8M0 scales, group 32) quantization.
//
// Techniques (learned from the Quartet and MR-GPTQ papers and IST-DASLab/qutlass fused_quantize_mx.cu
// and tests/mxfp4_test.py; own code):
// - One pass over X: each lane loads 8 consecutive bf16 (16 bytes); an R-block lives in R/8
//   consecutive lanes of a warp, so the rotation, the 32-element group statistics and the packing
//   need no shared memory.
// - Fast Walsh-Hadamard transform (R log R adds instead of a dense R x R product): strides 1, 2, 4 in
//   registers, larger strides with __shfl_xor_sync between the lanes of the R-block.
// - The task's semantics are the exact (fp64) rotation; bf16 inputs times bf16(1/sqrt(R)) are exact
//   in fp64 and so are their sums, so the FWHT runs in fp64 and every output is bit-exact whatever the
//   summation order. (qutlass uses a bf16 tensor-core GEMM with fp32 accumulation and tolerates
//   ~1e-4 code mismatches; a faster exact kernel can use fp32 and redo only near-tie groups in fp64.)
// - Epilogue fully in registers: group absmax with two xor-shuffles, E8M0 exponent read from the
//   fp64 exponent field, round-to-nearest-even onto E2M1 by threshold counting, nibble packing
//   (one 32-bit store per lane), one scale byte per 4 lanes. (With absmax scaling |y| < 6 always,
//   so the Quartet clip mask would be all ones; it belongs to the QuEST variant.)
#include <cuda_bf16.h>

template <int R>
__global__ void __launch_bounds__(256)
fp4_hadamard_quantize(const __nv_bfloat16* __restrict__ X, unsigned char* __restrict__ codes,
                      unsigned char* __restrict__ scales, int nchunks,
                      double c)
{
    static_assert(R >= 16 && R <= 256 && (R & (R - 1)) == 0, "R must be a power of two in [16, 256]");
    const int chunk = blockIdx.x * blockDim.x + threadIdx.x;  // 8 elements per chunk
    const int lane = threadIdx.x & 31;
    const bool live = chunk < nchunks;  // whole R-blocks are live or dead together (K % R == 0)

    double v[8];
    {
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (live) raw = reinterpret_cast<const uint4*>(X)[chunk];
        const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            // bf16 -> f32 is a shift; f32 -> f64 and the product with c (8-bit mantissa) are exact.
            v[2 * q] = (double)__uint_as_float(w[q] << 16) * c;
            v[2 * q + 1] = (double)__uint_as_float(w[q] & 0xFFFF0000u) * c;
        }
    }
    // In-register butterflies: strides 1, 2, 4.
#pragma unroll
    for (int s = 1; s < 8; s <<= 1) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            if (i & s) continue;
            const double a = v[i], b = v[i + s];
            v[i] = a + b;
            v[i + s] = a - b;
        }
    }
    // Cross-lane butterflies: strides 8 .. R/2 elements = 1 .. R/16 lanes.
#pragma unroll
    for (int l = 1; l < R / 8; l <<= 1) {
        const bool upper = lane & l;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const double o = __shfl_xor_sync(0xffffffffu, v[i], l);
            v[i] = upper ? o - v[i] : v[i] + o;
        }
    }

    // Group of 32 = 4 lanes: absmax -> E8M0 exponent.
    double amax = 0.0;
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmax(amax, fabs(v[i]));
    amax = fmax(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmax(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    const double s = amax + 1e-8;  // normal and positive
    int e = (int)((__double_as_longlong(s) >> 52) & 0x7FF) - 1023;  // floor(log2(s))
    e = max(-127, min(127, e));
    const double inv = __longlong_as_double((long long)(1023 - e) << 52);  // 2^-e, exact

    unsigned packed = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const double y = v[i] * inv * 3.0;  // same operation order as the specification
        const double a = fabs(y);
        unsigned q = (a > 0.25) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5) + (a > 5.0);
        q |= (y < 0.0) ? 8u : 0u;
        packed |= q << (4 * i);
    }
    if (live) {
        reinterpret_cast<unsigned*>(codes)[chunk] = packed;
        if ((lane & 3) == 0) scales[chunk >> 2] = (unsigned char)(e + 127);
    }
}

template __global__ void fp4_hadamard_quantize<16>(const __nv_bfloat16*, unsigned char*, unsigned char*, int, double);
template __global__ void fp4_hadamard_quantize<32>(const __nv_bfloat16*, unsigned char*, unsigned char*, int, double);
template __global__ void fp4_hadamard_quantize<64>(const __nv_bfloat16*, unsigned char*, unsigned char*, int, double);
template __global__ void fp4_hadamard_quantize<128>(const __nv_bfloat16*, unsigned char*, unsigned char*, int, double);
