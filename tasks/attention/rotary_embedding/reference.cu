// Rotary position embedding (GPT-NeoX / "rotate_half" layout) applied to q and k, bf16 in/out:
//   for i < D/2:  o[i] = x[i]*cos[s,i] - x[i+D/2]*sin[s,i],  o[i+D/2] = x[i+D/2]*cos[s,i] + x[i]*sin[s,i]
// where s is the token's sequence position. The harness has no in-place outputs, so the rotated
// q and k are written to separate buffers (vLLM / HipKittens rotate in place).
//
// Techniques (written from scratch; the ideas come from vLLM's rotary_embedding kernel and the
// HipKittens rotary kernel): one block per token handles all of its q and k heads, so the token's
// cos/sin row (D/2 floats each) is fetched from HBM once and re-read from L1 by every head; each
// thread rotates 8 pairs: two 16-byte bf16 loads (x[i..i+7] and x[i+D/2..]), two float4 each of
// cos and sin, two 16-byte stores. q/k are touched once (streaming loads/stores); fp32 math,
// one bf16 rounding. Requires D % 16 == 0 (task constraint), so every access is 16-byte aligned.
#include <cuda_bf16.h>

static __device__ __forceinline__ float bf_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ unsigned pack_bf2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
}

extern "C" __global__ void __launch_bounds__(128)
rope_neox(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k, const float* __restrict__ cos_t,
          const float* __restrict__ sin_t, __nv_bfloat16* __restrict__ q_out, __nv_bfloat16* __restrict__ k_out,
          int S, int HQ, int HK, int D) {
    const int tok = blockIdx.x;  // b * S + s
    const int s = tok % S;
    const int half = D >> 1;
    const int cpr = half >> 3;  // 8-pair chunks per head
    const int units = (HQ + HK) * cpr;
    const float4* c4 = reinterpret_cast<const float4*>(cos_t + (size_t)s * half);
    const float4* s4 = reinterpret_cast<const float4*>(sin_t + (size_t)s * half);

    for (int u = threadIdx.x; u < units; u += blockDim.x) {
        const int head = u / cpr;
        const int j = u - head * cpr;
        const __nv_bfloat16* src;
        __nv_bfloat16* dst;
        if (head < HQ) {
            const size_t o = ((size_t)tok * HQ + head) * D;
            src = q + o;
            dst = q_out + o;
        } else {
            const size_t o = ((size_t)tok * HK + (head - HQ)) * D;
            src = k + o;
            dst = k_out + o;
        }
        const uint4 a = __ldcs(reinterpret_cast<const uint4*>(src) + j);         // x[8j .. 8j+7]
        const uint4 b = __ldcs(reinterpret_cast<const uint4*>(src + half) + j);  // x[half + 8j ..]
        const float4 ca = __ldg(c4 + 2 * j), cb = __ldg(c4 + 2 * j + 1);
        const float4 sa = __ldg(s4 + 2 * j), sb = __ldg(s4 + 2 * j + 1);
        const float c[8] = {ca.x, ca.y, ca.z, ca.w, cb.x, cb.y, cb.z, cb.w};
        const float sn[8] = {sa.x, sa.y, sa.z, sa.w, sb.x, sb.y, sb.z, sb.w};
        const unsigned aw[4] = {a.x, a.y, a.z, a.w};
        const unsigned bw[4] = {b.x, b.y, b.z, b.w};
        unsigned o1[4], o2[4];
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            const float x1l = bf_lo(aw[p]), x1h = bf_hi(aw[p]);
            const float x2l = bf_lo(bw[p]), x2h = bf_hi(bw[p]);
            const float cl = c[2 * p], ch = c[2 * p + 1], sl = sn[2 * p], sh = sn[2 * p + 1];
            o1[p] = pack_bf2(x1l * cl - x2l * sl, x1h * ch - x2h * sh);
            o2[p] = pack_bf2(x2l * cl + x1l * sl, x2h * ch + x1h * sh);
        }
        __stcs(reinterpret_cast<uint4*>(dst) + j, make_uint4(o1[0], o1[1], o1[2], o1[3]));
        __stcs(reinterpret_cast<uint4*>(dst + half) + j, make_uint4(o2[0], o2[1], o2[2], o2[3]));
    }
}
