// Batched crop + bilinear resize (OpenCV INTER_LINEAR: half-pixel centers, border replicate) +
// BGR->RGB + (v/255 - mean)/std + planar split, uint8 interleaved in, fp32 planar out, one launch.
//
// Techniques (the Fused Kernel Library's, morousg/FusedKernelLibrary / cvGPUSpeedup; code written
// from scratch):
//  - horizontal fusion: every crop in the same launch, blockIdx.z = crop;
//  - backwards vertical fusion: the resize reads its four source taps from the uint8 image on the fly
//    (no cropped or resized intermediate image), and the colour swap, scaling and normalization stay in
//    registers; the normalization is folded into one FMA per channel: v * (1/(255 std)) - mean/std;
//  - planar split on write: a warp writes 32 consecutive pixels of one output row in each of the three
//    planes (128-byte coalesced streaming stores);
//  - the tap columns of a thread's pixel are the same for all the rows it covers (ROWS per thread),
//    so the x-weights and clamped column offsets are computed once.

// floor(n / d) for d > 0
__device__ __forceinline__ int floor_div(int n, int d) { return n >= 0 ? n / d : -((d - 1 - n) / d); }

template <int ROWS>
__global__ void __launch_bounds__(256)
crop_resize_normalize(const unsigned char* __restrict__ src, const int* __restrict__ crop_x,
                      const int* __restrict__ crop_y, const int* __restrict__ crop_w,
                      const int* __restrict__ crop_h, const float* __restrict__ mean,
                      const float* __restrict__ stdv, float* __restrict__ out, int Ws, int HO, int WO) {
    const int b = blockIdx.z;
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy_base = (blockIdx.y * blockDim.y + threadIdx.y) * ROWS;
    if (ox >= WO || oy_base >= HO) return;

    const int cx = __ldg(crop_x + b), cy = __ldg(crop_y + b);
    const int cw = __ldg(crop_w + b), ch = __ldg(crop_h + b);
    // out = v * sc[c] + sh[c], c in RGB order
    float sc[3], sh[3];
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const float s = __ldg(stdv + c);
        sc[c] = 1.0f / (255.0f * s);
        sh[c] = -__ldg(mean + c) / s;
    }

    // columns: fx = (ox + 0.5) * cw / WO - 0.5 = n / (2 WO), n = (2 ox + 1) cw - WO, in integers
    // (exact: the task fixes the tap positions bit for bit), taps clamped to the crop
    const int dx = 2 * WO;
    const int nx = (2 * ox + 1) * cw - WO;
    const int ix0 = floor_div(nx, dx);
    const float ax = (float)(nx - ix0 * dx) / (float)dx;
    const int xa = cx + min(max(ix0, 0), cw - 1);
    const int xb = cx + min(max(ix0 + 1, 0), cw - 1);

    const int dy = 2 * HO;
    const size_t plane = (size_t)HO * WO;
    float* ob = out + (size_t)b * 3 * plane;

#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int oy = oy_base + r;
        if (oy >= HO) break;
        const int ny = (2 * oy + 1) * ch - HO;
        const int iy0 = floor_div(ny, dy);
        const float ay = (float)(ny - iy0 * dy) / (float)dy;
        const int ya = cy + min(max(iy0, 0), ch - 1);
        const int yb = cy + min(max(iy0 + 1, 0), ch - 1);
        const unsigned char* ra = src + ((size_t)ya * Ws) * 3;
        const unsigned char* rb = src + ((size_t)yb * Ws) * 3;
        const size_t o = (size_t)oy * WO + ox;
#pragma unroll
        for (int c = 0; c < 3; ++c) {  // c: RGB output plane, reads BGR channel 2 - c
            const int k = 2 - c;
            const float p00 = (float)__ldg(ra + xa * 3 + k), p01 = (float)__ldg(ra + xb * 3 + k);
            const float p10 = (float)__ldg(rb + xa * 3 + k), p11 = (float)__ldg(rb + xb * 3 + k);
            const float top = (1.0f - ax) * p00 + ax * p01;
            const float bot = (1.0f - ax) * p10 + ax * p11;
            const float v = (1.0f - ay) * top + ay * bot;
            __stcs(ob + c * plane + o, fmaf(v, sc[c], sh[c]));
        }
    }
}

template __global__ void crop_resize_normalize<4>(const unsigned char*, const int*, const int*,
                                                  const int*, const int*, const float*,
                                                  const float*, float*, int, int, int);
