// splatview's fused training loss, compiled at run time by NVRTC (rasterizer/cuda/compiler.py).
//
//     loss = sum over images b of  (1 - lambda) * L1_b + lambda * (1 - SSIM_b)
//
// computed exactly as trainer/metrics.py (the specification, graphdeco's loss_utils):
//   * the render is clamped to [0, 1] first (its gradient is zero where it was clamped);
//   * the ground truth is read as stored, uint8 [B, H, W, C] (C = 3 RGB, or C = 4 premultiplied
//     RGB + alpha composited over `background`: rgb + background * (1 - alpha));
//   * SSIM uses the 11-tap Gaussian window (sigma 1.5, passed in as `window`), applied separably
//     with zero padding 5 to each channel, C1 = 0.01^2, C2 = 0.03^2, and the mean of the map;
//   * L1 and SSIM are means over the 3 * H * W values of each image.
// Images are planar: render [B, 3, H, W] float32, plane z = 3 b + channel.
//
// A batch of images of different sizes is drawn on one canvas (H, W the largest): image b is the
// top-left w_b x h_b corner of its canvas plane, and `views` (nullable) holds, per image, its
// ground truth's address (uint8 [h_b, w_b, C], its own tensor) and w_b, h_b as int64
// [B, 3]. The rest of the canvas is not part of the image: it reads as the zero padding, takes
// no part in the means (over 3 w_b h_b values) and gets a zero gradient. Without `views` every
// image fills the canvas and `gt` is one [B, H, W, C] tensor.
//
// Gradient. With m1 = G*x, m2 = G*y, e11 = G*x^2, e12 = G*(x y) (G the window, * correlation)
// and S(m1, m2, e11, e22, e12) the SSIM map, d mean(S) / d x(q) is
//     (G * dS/dm1)(q) + 2 x(q) (G * dS/de11)(q) + y(q) (G * dS/de12)(q),  divided by 3 H W,
// because the window is symmetric. The forward kernel stores the three per-pixel partials; the
// backward kernel blurs them (zero outside the image, as the padding) and combines them.

#define TILE_X 16
#define TILE_Y 16
#define THREADS (TILE_X * TILE_Y)
#define RADIUS 5
#define TAPS 11
#define HALO_X (TILE_X + 2 * RADIUS)
#define HALO_Y (TILE_Y + 2 * RADIUS)
#define SSIM_C1 (0.01f * 0.01f)
#define SSIM_C2 (0.03f * 0.03f)
#define FULL_MASK 0xffffffffu

// Image b's ground truth and size (see the header).
struct View {
    const unsigned char* gt;
    int width, height;
};

__device__ __forceinline__ View view_of(int b, const long long* __restrict__ views,
                                        const unsigned char* __restrict__ gt, int channels, int width,
                                        int height) {
    View view;
    if (views != nullptr) {
        view.gt = (const unsigned char*)views[3 * b];
        view.width = (int)views[3 * b + 1];
        view.height = (int)views[3 * b + 2];
    } else {
        view.gt = gt + (long long)b * height * width * channels;
        view.width = width;
        view.height = height;
    }
    return view;
}

// Ground-truth value of channel ch at (x, y), in [0, 1], as trainer/scene/images.view_image_float.
__device__ __forceinline__ float ground_truth(const View& view, int channels, const float* __restrict__ background,
                                              int ch, int x, int y) {
    const unsigned char* pixel = view.gt + ((long long)y * view.width + x) * channels;
    float value = (float)pixel[ch] / 255.f;
    if (channels == 4) value = value + background[ch] * (1.f - (float)pixel[3] / 255.f);
    return value;
}

__device__ __forceinline__ float clamp01(float v) { return fminf(fmaxf(v, 0.f), 1.f); }

// Block-wide sum of `value` (THREADS threads); the result is valid in thread 0.
__device__ float block_sum(float value, float* scratch) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(FULL_MASK, value, offset);
    int tid = threadIdx.x + TILE_X * threadIdx.y;
    __syncthreads();  // scratch may still be read by a previous call
    if ((tid & 31) == 0) scratch[tid >> 5] = value;
    __syncthreads();
    float total = 0.f;
    if (tid == 0)
        for (int w = 0; w < THREADS / 32; w++) total += scratch[w];
    return total;
}

// Per block of 16x16 pixels of one plane: the SSIM partials for the backward, and the block's
// sums of the SSIM map, |x - y| and (x - y)^2 in partials[(plane * blocks + block) * 3 + k].
extern "C" __global__ void __launch_bounds__(THREADS) loss_forward(
    int width, int height, int channels, const float* __restrict__ image,
    const unsigned char* __restrict__ gt, const long long* __restrict__ views, const float* __restrict__ background,
    const float* __restrict__ window, float* __restrict__ ssim_partials, float* __restrict__ partials) {
    __shared__ float s_x[HALO_Y][HALO_X + 1], s_y[HALO_Y][HALO_X + 1];
    __shared__ float s_h[5][HALO_Y][TILE_X];
    __shared__ float s_w[TAPS];
    __shared__ float scratch[THREADS / 32];
    int plane = blockIdx.z, b = plane / 3, ch = plane % 3;
    int x0 = blockIdx.x * TILE_X - RADIUS, y0 = blockIdx.y * TILE_Y - RADIUS;
    int tid = threadIdx.y * TILE_X + threadIdx.x;
    long long plane_offset = (long long)plane * width * height;
    const View view = view_of(b, views, gt, channels, width, height);
    if (tid < TAPS) s_w[tid] = window[tid];
    for (int i = tid; i < HALO_X * HALO_Y; i += THREADS) {
        int r = i / HALO_X, c = i % HALO_X, gx = x0 + c, gy = y0 + r;
        bool inside = gx >= 0 && gx < view.width && gy >= 0 && gy < view.height;  // zero padding outside
        s_x[r][c] = inside ? clamp01(image[plane_offset + (long long)gy * width + gx]) : 0.f;
        s_y[r][c] = inside ? ground_truth(view, channels, background, ch, gx, gy) : 0.f;
    }
    __syncthreads();
    // Horizontal pass over every halo row: the five moments x, y, x^2, y^2, x y.
    for (int i = tid; i < HALO_Y * TILE_X; i += THREADS) {
        int r = i / TILE_X, c = i % TILE_X;
        float m[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int k = 0; k < TAPS; k++) {
            float w = s_w[k], xv = s_x[r][c + k], yv = s_y[r][c + k];
            m[0] += w * xv; m[1] += w * yv; m[2] += w * xv * xv; m[3] += w * yv * yv; m[4] += w * xv * yv;
        }
        for (int q = 0; q < 5; q++) s_h[q][r][c] = m[q];
    }
    __syncthreads();
    int tx = threadIdx.x, ty = threadIdx.y, px = x0 + RADIUS + tx, py = y0 + RADIUS + ty;
    float sums[3] = {0.f, 0.f, 0.f};
    if (px < view.width && py < view.height) {
        float m[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int k = 0; k < TAPS; k++)
            for (int q = 0; q < 5; q++) m[q] += s_w[k] * s_h[q][ty + k][tx];
        float mu1 = m[0], mu2 = m[1];
        float mu1_sq = mu1 * mu1, mu2_sq = mu2 * mu2, mu1_mu2 = mu1 * mu2;
        float sigma1_sq = m[2] - mu1_sq, sigma2_sq = m[3] - mu2_sq, sigma12 = m[4] - mu1_mu2;
        float a1 = 2.f * mu1_mu2 + SSIM_C1, a2 = 2.f * sigma12 + SSIM_C2;
        float b1 = mu1_sq + mu2_sq + SSIM_C1, b2 = sigma1_sq + sigma2_sq + SSIM_C2;
        float denominator = b1 * b2;
        float s = (a1 * a2) / denominator;
        float d_sigma1_sq = -s / b2;                  // = dS/de11
        float d_sigma12 = 2.f * a1 / denominator;      // = dS/de12
        float d_mu1 = 2.f * mu2 * a2 / denominator - 2.f * mu1 * s / b1;
        float d_m1 = d_mu1 - 2.f * mu1 * d_sigma1_sq - mu2 * d_sigma12;  // through the sigmas too
        long long pix = (long long)py * width + px, hw = (long long)width * height;
        ssim_partials[3 * plane_offset + pix] = d_m1;
        ssim_partials[3 * plane_offset + hw + pix] = d_sigma1_sq;
        ssim_partials[3 * plane_offset + 2 * hw + pix] = d_sigma12;
        float diff = s_x[ty + RADIUS][tx + RADIUS] - s_y[ty + RADIUS][tx + RADIUS];
        sums[0] = s; sums[1] = fabsf(diff); sums[2] = diff * diff;
    }
    int blocks = gridDim.x * gridDim.y, block = blockIdx.y * gridDim.x + blockIdx.x;
    for (int k = 0; k < 3; k++) {
        float total = block_sum(sums[k], scratch);
        if (tid == 0) partials[((long long)plane * blocks + block) * 3 + k] = total;
    }
}

// One block: per image b, the means over its 3 planes (float64 sums, fixed order, so the result
// is deterministic), then stats[b] = (loss_b, MSE_b, L1_b, SSIM_b) and loss[0] = sum_b loss_b.
extern "C" __global__ void __launch_bounds__(256) loss_finalize(
    int images, int blocks, int width, int height, const long long* __restrict__ views, float lambda_dssim,
    const float* __restrict__ partials, float* __restrict__ stats, float* __restrict__ loss) {
    __shared__ double s_sum[256];
    float total_loss = 0.f;
    for (int b = 0; b < images; b++) {
        double n = views != nullptr ? 3.0 * (double)views[3 * b + 1] * (double)views[3 * b + 2] : 3.0 * width * height;
        double means[3];
        for (int k = 0; k < 3; k++) {
            double sum = 0.0;
            for (int i = threadIdx.x; i < 3 * blocks; i += blockDim.x)
                sum += (double)partials[((long long)3 * b * blocks + i) * 3 + k];
            s_sum[threadIdx.x] = sum;
            __syncthreads();
            for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
                if (threadIdx.x < stride) s_sum[threadIdx.x] += s_sum[threadIdx.x + stride];
                __syncthreads();
            }
            means[k] = s_sum[0] / n;
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            float ssim = (float)means[0], l1 = (float)means[1];
            float value = (1.f - lambda_dssim) * l1 + lambda_dssim * (1.f - ssim);
            stats[4 * b] = value; stats[4 * b + 1] = (float)means[2]; stats[4 * b + 2] = l1; stats[4 * b + 3] = ssim;
            total_loss += value;
        }
    }
    if (threadIdx.x == 0) loss[0] = total_loss;
}

// d loss / d render, with grad_loss[0] = d(outer) / d loss read on the device (no host wait).
extern "C" __global__ void __launch_bounds__(THREADS) loss_backward(
    int width, int height, int channels, float lambda_dssim, const float* __restrict__ image,
    const unsigned char* __restrict__ gt, const long long* __restrict__ views, const float* __restrict__ background,
    const float* __restrict__ window, const float* __restrict__ ssim_partials,
    const float* __restrict__ grad_loss, float* __restrict__ grad_image) {
    __shared__ float s_g[3][HALO_Y][HALO_X + 1];
    __shared__ float s_h[3][HALO_Y][TILE_X];
    __shared__ float s_w[TAPS];
    int plane = blockIdx.z, b = plane / 3, ch = plane % 3;
    int x0 = blockIdx.x * TILE_X - RADIUS, y0 = blockIdx.y * TILE_Y - RADIUS;
    int tid = threadIdx.y * TILE_X + threadIdx.x;
    long long hw = (long long)width * height, plane_offset = plane * hw;
    const View view = view_of(b, views, gt, channels, width, height);
    if (tid < TAPS) s_w[tid] = window[tid];
    for (int i = tid; i < HALO_X * HALO_Y; i += THREADS) {
        int r = i / HALO_X, c = i % HALO_X, gx = x0 + c, gy = y0 + r;
        bool inside = gx >= 0 && gx < view.width && gy >= 0 && gy < view.height;
        long long pix = (long long)gy * width + gx;
        for (int q = 0; q < 3; q++) s_g[q][r][c] = inside ? ssim_partials[3 * plane_offset + q * hw + pix] : 0.f;
    }
    __syncthreads();
    for (int i = tid; i < HALO_Y * TILE_X; i += THREADS) {
        int r = i / TILE_X, c = i % TILE_X;
        float m[3] = {0.f, 0.f, 0.f};
#pragma unroll
        for (int k = 0; k < TAPS; k++)
            for (int q = 0; q < 3; q++) m[q] += s_w[k] * s_g[q][r][c + k];
        for (int q = 0; q < 3; q++) s_h[q][r][c] = m[q];
    }
    __syncthreads();
    int px = x0 + RADIUS + threadIdx.x, py = y0 + RADIUS + threadIdx.y;
    if (px >= width || py >= height) return;
    long long pix = (long long)py * width + px;
    if (px >= view.width || py >= view.height) {  // canvas outside the image: not in the loss
        grad_image[plane_offset + pix] = 0.f;
        return;
    }
    float m[3] = {0.f, 0.f, 0.f};
#pragma unroll
    for (int k = 0; k < TAPS; k++)
        for (int q = 0; q < 3; q++) m[q] += s_w[k] * s_h[q][threadIdx.y + k][threadIdx.x];
    float raw = image[plane_offset + pix];
    float x = clamp01(raw);
    float y = ground_truth(view, channels, background, ch, px, py);
    float inv_n = 1.f / (3.f * (float)((long long)view.width * view.height));
    float d_ssim = (m[0] + 2.f * x * m[1] + y * m[2]) * inv_n;
    float diff = x - y;
    float sign = (float)((diff > 0.f) - (diff < 0.f));  // torch's abs backward: sign(0) = 0
    float g = grad_loss[0] * ((1.f - lambda_dssim) * sign * inv_n - lambda_dssim * d_ssim);
    // clamp(0, 1) passes the gradient where 0 <= raw <= 1 (false for NaN), as torch's clamp.
    grad_image[plane_offset + pix] = (raw >= 0.f && raw <= 1.f) ? g : 0.f;
}
