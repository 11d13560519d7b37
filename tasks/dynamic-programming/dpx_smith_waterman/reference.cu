// Batched Smith-Waterman (Gotoh affine gaps) best local score per pair, int32 cells, Hopper DPX.
//
// Techniques (written from scratch; the ideas are the CUDASW++ / DPX ones named by the task card):
//  - one warp per pair, intra-sequence wavefront: lane l owns query rows [l*R, l*R + R) and at step s
//    processes target column j = s - l, so the 32 lanes sweep an anti-diagonal band; the bottom
//    row's H and F of each lane go to the lane below with one __shfl_up_sync per step (the diagonal
//    H is the value received the step before), so no shared or global traffic in the inner loop;
//  - DPX instructions for the recurrences: E and F with __viaddmax_s32 (max(a + b, c)), H with
//    __vimax3_s32_relu (max(a, b, c, 0)), the running best with __vimax_s32;
//  - substitution scores from a shared-memory copy of S stored target-major, plus one extra column of
//    -2^20 for the padding rows past Lq (they can never raise the best score, so no branches);
//  - R (rows per lane) is a template parameter: the smallest of 1, 2, 4, 8, 16 with 32 R >= Lq.
namespace {
constexpr int kNeg = -(1 << 29);   // -infinity for E and F (no overflow after subtracting GE once)
constexpr int kPadScore = -(1 << 20);
constexpr int kWarps = 4;
}  // namespace

template <int R>
__global__ void __launch_bounds__(kWarps * 32, 1)
sw_affine_warp(const signed char* __restrict__ q, const signed char* __restrict__ t,
               const short* __restrict__ S, int* __restrict__ score, int P, int Lq, int Lt, int A,
               int GO, int GE) {
    __shared__ int st[32 * 33];  // st[tb * (A + 1) + qa] = S[qa, tb]; column A = padding rows
    const int AP = A + 1;
    for (int k = threadIdx.x; k < A * AP; k += blockDim.x) {
        const int tb = k / AP, qa = k - tb * AP;
        st[k] = qa < A ? (int)S[qa * A + tb] : kPadScore;
    }
    __syncthreads();

    const int lane = threadIdx.x & 31;
    const int p = blockIdx.x * kWarps + (threadIdx.x >> 5);
    if (p >= P) return;  // whole warp

    const int goe = GO + GE, nge = -GE, ngoe = -goe;
    const signed char* qp = q + (size_t)p * Lq;
    const signed char* tp = t + (size_t)p * Lt;

    int qa[R], hl[R], e[R];  // query code, H[r][j-1], E[r][j-1] for the lane's rows
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = lane * R + r;
        qa[r] = row < Lq ? (int)qp[row] : A;
        hl[r] = 0;
        e[r] = kNeg;
    }
    int pub_h = 0, pub_f = kNeg;  // bottom row H, F of the last column this lane processed
    int diag = 0;                 // H[first row - 1][j - 1]
    int best = 0;
    const int steps = Lt + 31;
#pragma unroll 1
    for (int s = 0; s < steps; ++s) {
        // H and F of row (first row - 1) at column j, from the lane above (its previous step)
        int rh = __shfl_up_sync(0xffffffffu, pub_h, 1);
        int rf = __shfl_up_sync(0xffffffffu, pub_f, 1);
        if (lane == 0) {
            rh = 0;
            rf = kNeg;
        }
        const int j = s - lane;
        if (j >= 0 && j < Lt) {
            const int* srow = st + (int)tp[j] * AP;
            int d = diag, up = rh, fu = rf;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                e[r] = __viaddmax_s32(e[r], nge, hl[r] + ngoe);
                const int f = __viaddmax_s32(fu, nge, up + ngoe);
                const int h = __vimax3_s32_relu(d + srow[qa[r]], e[r], f);
                d = hl[r];
                hl[r] = h;
                up = h;
                fu = f;
                best = __vimax_s32_relu(best, h);
            }
            pub_h = up;
            pub_f = fu;
        }
        diag = rh;  // H[first row - 1][j] is the diagonal of column j + 1
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if (lane == 0) score[p] = best;
}

#define INST(R)                                                                              \
    template __global__ void sw_affine_warp<R>(const signed char*, const signed char*,        \
                                               const short*, int*, int, int, int, int, int, int);
INST(1)
INST(2)
INST(4)
INST(8)
INST(16)
