// splatview CUDA rasterizer kernels, compiled at run time by NVRTC (see compiler.py).
//
// Numerics follow rasterizer/reference.py, which is the specification; read its docstrings
// for the conventions. In short:
//   * camera: OpenCV axes, world-to-camera rotation R (row-major 3x3) and translation t;
//     pixel position of a point = (fx x/z + cx - 0.5, fy y/z + cy - 0.5), pixel (i, j) centred
//     at integer coordinates;
//   * conic (A, B, C) = inverse of the dilated 2D covariance, q(d) = A dx^2 + 2 B dx dy + C dy^2,
//     power = -q/2 with d = mean2d - pixel;
//   * raw parameters as stored: quaternions (w, x, y, z), unnormalised; log-scales; opacity
//     logits; the kernels apply normalise / exp / sigmoid and their derivatives;
//   * SH coefficients [N, K, 3], K stored per Gaussian, `degree` bands evaluated.
// Gradients are those of the reference backend: the derivatives of the forward pass, except
// at the 0.99 clamp of alpha, which passes its gradient straight through as the reference's
// backward does.
//
// Batches: V cameras of one image size are rendered by the same launches. Per-view arrays are
// [V, N, ...] (row v * N + g for Gaussian g seen by view v), images [V, C, H, W]; the pair keys
// are v * tiles_per_view + tile, so that one sort orders every view's tiles; the blending
// kernels take the view from their tile's index (blend_tile); project_forward from blockIdx.y;
// project_backward loops over the views and sums their gradients per Gaussian (no atomics:
// deterministic). V = 1 is the single-camera render.

#include "adam.cuh"

#define TILE 16
// A blending block covers BLEND_ROWS of its tile's TILE rows (TILE / BLEND_ROWS blocks a tile),
// one thread a pixel; the host passes the value it launches with (rasterizer.cuda.BLEND_ROWS).
#ifndef BLEND_ROWS
#define BLEND_ROWS 4
#endif
#define BLEND_THREADS (TILE * BLEND_ROWS)
#define BLEND_SLICES (TILE / BLEND_ROWS)
// Whole warps (the backward reduces over warps) of one tile's rows.
static_assert(BLEND_THREADS % 32 == 0 && TILE % BLEND_ROWS == 0, "BLEND_ROWS: an even divisor of TILE");
#define NEAR_PLANE 0.2f
#define DILATION 0.3f
#define ALPHA_MAX 0.99f
#define ALPHA_MIN (1.0f / 255.0f)
#define ALPHA_MIN_TILE (ALPHA_MIN * (1.0f - 1e-3f))
#define T_MIN 0.0001f
#define AA_DET_RATIO_MIN 2.5e-5f
#define FULL_MASK 0xffffffffu

// Camera block layout (float32[CAMERA_FLOATS]): R[9] row-major, t[3], campos[3], fx, fy, cx, cy,
// x/z lower and upper clamp, y/z lower and upper clamp, then the image's tile grid (tiles_x,
// tiles_y, whole numbers stored as floats). The grid is per camera so that one projection
// launch serves a batch of cameras of different image sizes.
#define CAMERA_FLOATS 25
struct CameraBlock {
    float R[9], t[3], campos[3], fx, fy, cx, cy, lim_x_lo, lim_x_hi, lim_y_lo, lim_y_hi;
    int tiles_x, tiles_y;
};

__device__ __forceinline__ CameraBlock load_camera(const float* c) {
    CameraBlock cam;
    for (int i = 0; i < 9; i++) cam.R[i] = c[i];
    for (int i = 0; i < 3; i++) { cam.t[i] = c[9 + i]; cam.campos[i] = c[12 + i]; }
    cam.fx = c[15]; cam.fy = c[16]; cam.cx = c[17]; cam.cy = c[18];
    cam.lim_x_lo = c[19]; cam.lim_x_hi = c[20]; cam.lim_y_lo = c[21]; cam.lim_y_hi = c[22];
    cam.tiles_x = (int)c[23]; cam.tiles_y = (int)c[24];
    return cam;
}

__constant__ float SH_C0 = 0.28209479177387814f;
__constant__ float SH_C1 = 0.4886025119029199f;
__constant__ float SH_C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f,
                               -1.0925484305920792f, 0.5462742152960396f};
__constant__ float SH_C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f,
                               0.3731763325901154f, -0.4570457994644658f, 1.445305721320277f,
                               -0.5900435899266435f};

// Real SH basis values at unit direction (x, y, z): out[0..(degree+1)^2).
__device__ void sh_basis(int degree, float x, float y, float z, float* out) {
    out[0] = SH_C0;
    if (degree < 1) return;
    out[1] = -SH_C1 * y; out[2] = SH_C1 * z; out[3] = -SH_C1 * x;
    if (degree < 2) return;
    float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    out[4] = SH_C2[0] * xy; out[5] = SH_C2[1] * yz; out[6] = SH_C2[2] * (2.f * zz - xx - yy);
    out[7] = SH_C2[3] * xz; out[8] = SH_C2[4] * (xx - yy);
    if (degree < 3) return;
    out[9] = SH_C3[0] * y * (3.f * xx - yy); out[10] = SH_C3[1] * xy * z;
    out[11] = SH_C3[2] * y * (4.f * zz - xx - yy); out[12] = SH_C3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy);
    out[13] = SH_C3[4] * x * (4.f * zz - xx - yy); out[14] = SH_C3[5] * z * (xx - yy);
    out[15] = SH_C3[6] * x * (xx - 3.f * yy);
}

// d basis_k / d(x, y, z) for k in [0, (degree+1)^2).
__device__ void sh_basis_grad(int degree, float x, float y, float z, float* dx, float* dy, float* dz) {
    dx[0] = dy[0] = dz[0] = 0.f;
    if (degree < 1) return;
    dx[1] = 0.f; dy[1] = -SH_C1; dz[1] = 0.f;
    dx[2] = 0.f; dy[2] = 0.f; dz[2] = SH_C1;
    dx[3] = -SH_C1; dy[3] = 0.f; dz[3] = 0.f;
    if (degree < 2) return;
    float xx = x * x, yy = y * y, zz = z * z;
    dx[4] = SH_C2[0] * y; dy[4] = SH_C2[0] * x; dz[4] = 0.f;
    dx[5] = 0.f; dy[5] = SH_C2[1] * z; dz[5] = SH_C2[1] * y;
    dx[6] = -2.f * SH_C2[2] * x; dy[6] = -2.f * SH_C2[2] * y; dz[6] = 4.f * SH_C2[2] * z;
    dx[7] = SH_C2[3] * z; dy[7] = 0.f; dz[7] = SH_C2[3] * x;
    dx[8] = 2.f * SH_C2[4] * x; dy[8] = -2.f * SH_C2[4] * y; dz[8] = 0.f;
    if (degree < 3) return;
    dx[9] = SH_C3[0] * 6.f * x * y; dy[9] = SH_C3[0] * (3.f * xx - 3.f * yy); dz[9] = 0.f;
    dx[10] = SH_C3[1] * y * z; dy[10] = SH_C3[1] * x * z; dz[10] = SH_C3[1] * x * y;
    dx[11] = -2.f * SH_C3[2] * x * y; dy[11] = SH_C3[2] * (4.f * zz - xx - 3.f * yy); dz[11] = 8.f * SH_C3[2] * y * z;
    dx[12] = -6.f * SH_C3[3] * x * z; dy[12] = -6.f * SH_C3[3] * y * z; dz[12] = SH_C3[3] * (6.f * zz - 3.f * xx - 3.f * yy);
    dx[13] = SH_C3[4] * (4.f * zz - 3.f * xx - yy); dy[13] = -2.f * SH_C3[4] * x * y; dz[13] = 8.f * SH_C3[4] * x * z;
    dx[14] = 2.f * SH_C3[5] * x * z; dy[14] = -2.f * SH_C3[5] * y * z; dz[14] = SH_C3[5] * (xx - yy);
    dx[15] = SH_C3[6] * (3.f * xx - 3.f * yy); dy[15] = -6.f * SH_C3[6] * x * y; dz[15] = 0.f;
}

// Coefficient k (0 = DC) of channel ch; DC is [N, 1, 3], the rest [N, K_rest, 3].
__device__ __forceinline__ float sh_coefficient(const float* sh_dc, const float* sh_rest, int k_rest,
                                                int idx, int k, int ch) {
    return k == 0 ? sh_dc[3 * idx + ch] : sh_rest[(idx * k_rest + k - 1) * 3 + ch];
}

// Rotation matrix (row-major) of a unit quaternion (w, x, y, z).
__device__ void quat_to_rot(const float* q, float* R) {
    float w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = 1.f - 2.f * (y * y + z * z); R[1] = 2.f * (x * y - w * z); R[2] = 2.f * (x * z + w * y);
    R[3] = 2.f * (x * y + w * z); R[4] = 1.f - 2.f * (x * x + z * z); R[5] = 2.f * (y * z - w * x);
    R[6] = 2.f * (x * z - w * y); R[7] = 2.f * (y * z + w * x); R[8] = 1.f - 2.f * (x * x + y * y);
}

// Activated parameters of Gaussian idx from the raw ones: scales = exp(log_scales),
// unit quaternion = q / max(|q|, 1e-12) (as torch's normalize), opacity = sigmoid(logit).
struct Activated {
    float scale[3], rotation[4], opacity, quat_norm;
};

__device__ __forceinline__ Activated activate(int idx, const float* __restrict__ log_scales,
                                              const float* __restrict__ quaternions,
                                              const float* __restrict__ opacity_logits) {
    Activated a;
    for (int i = 0; i < 3; i++) a.scale[i] = expf(log_scales[3 * idx + i]);
    float q[4], sum = 0.f;
    for (int i = 0; i < 4; i++) { q[i] = quaternions[4 * idx + i]; sum += q[i] * q[i]; }
    a.quat_norm = fmaxf(sqrtf(sum), 1e-12f);
    for (int i = 0; i < 4; i++) a.rotation[i] = q[i] / a.quat_norm;
    a.opacity = 1.f / (1.f + expf(-opacity_logits[idx]));
    return a;
}

// Everything the projection computes for one Gaussian, shared by forward and backward.
struct Projected {
    float view[3];        // camera-space position
    float z;              // view depth used for division (valid when in front)
    float ratio_x, ratio_y; // clamped x/z, y/z used in the Jacobian
    bool clamped_x, clamped_y;
    float T[6];           // J * R_view, 2x3 row-major
    float M[9];           // R_q * diag(scale * modifier), row-major
    float Rq[9];
    float a, b, c;        // dilated 2D covariance
    float det;
};

__device__ void project_one(const CameraBlock& cam, const float* p, const float* s, const float* q,
                            float scale_mod, Projected& out) {
    for (int r = 0; r < 3; r++)
        out.view[r] = cam.R[3 * r] * p[0] + cam.R[3 * r + 1] * p[1] + cam.R[3 * r + 2] * p[2] + cam.t[r];
    float z = out.view[2];
    out.z = z;
    float rx = out.view[0] / z, ry = out.view[1] / z;
    out.ratio_x = fminf(fmaxf(rx, cam.lim_x_lo), cam.lim_x_hi);
    out.ratio_y = fminf(fmaxf(ry, cam.lim_y_lo), cam.lim_y_hi);
    out.clamped_x = rx < cam.lim_x_lo || rx > cam.lim_x_hi;
    out.clamped_y = ry < cam.lim_y_lo || ry > cam.lim_y_hi;
    float tx = out.ratio_x * z, ty = out.ratio_y * z;
    float J[6] = {cam.fx / z, 0.f, -cam.fx * tx / (z * z), 0.f, cam.fy / z, -cam.fy * ty / (z * z)};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            out.T[3 * i + j] = J[3 * i] * cam.R[j] + J[3 * i + 1] * cam.R[3 + j] + J[3 * i + 2] * cam.R[6 + j];
    quat_to_rot(q, out.Rq);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 3; i++) out.M[3 * r + i] = out.Rq[3 * r + i] * s[i] * scale_mod;
    // cov2D = T (M M^T) T^T = (T M)(T M)^T
    float TM[6];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            TM[3 * i + j] = out.T[3 * i] * out.M[j] + out.T[3 * i + 1] * out.M[3 + j] + out.T[3 * i + 2] * out.M[6 + j];
    out.a = TM[0] * TM[0] + TM[1] * TM[1] + TM[2] * TM[2] + DILATION;
    out.b = TM[0] * TM[3] + TM[1] * TM[4] + TM[2] * TM[5];
    out.c = TM[3] * TM[3] + TM[4] * TM[4] + TM[5] * TM[5] + DILATION;
    out.det = out.a * out.c - out.b * out.b;
}

// Float to int for tile indices; far-off Gaussians would overflow a plain cast.
__device__ __forceinline__ int tile_floor(float v) { return (int)floorf(fminf(fmaxf(v, -1e8f), 1e8f)); }
__device__ __forceinline__ int tile_ceil(float v) { return (int)ceilf(fminf(fmaxf(v, -1e8f), 1e8f)); }

// A x^2 + 2 B x y + C y^2, rounded the same way wherever it is inlined: __fmul_rn/__fadd_rn are
// never contracted into FMAs, so the projection's tile count and the pair writer's tiles agree
// (and so do a warp's shared walk and a thread's own).
__device__ __forceinline__ float quadratic(float A, float B, float C, float x, float y) {
    float xx = __fmul_rn(__fmul_rn(A, x), x);
    float xy = __fmul_rn(__fmul_rn(__fmul_rn(2.f, B), x), y);
    float yy = __fmul_rn(__fmul_rn(C, y), y);
    return __fadd_rn(__fadd_rn(xx, xy), yy);
}

// The largest q = d^T conic d at which a Gaussian of opacity o still reaches alpha >= 1/255 (with
// the tile culling's margin): o exp(-q / 2) >= ALPHA_MIN_TILE. The projection, the pair listing
// and the blending's slice culling must agree on it, so all three call this.
__device__ __forceinline__ float alpha_threshold_q(float opacity) {
    return 2.f * logf(opacity / ALPHA_MIN_TILE);
}

// Does a Gaussian (centre px, py; conic A, B, C; opacity o) reach alpha >= 1/255 anywhere in the
// box of pixel centres [x0, x0 + width] x [y0, y0 + height]? Minimum of the convex q over the
// box, against threshold_q = alpha_threshold_q(o).
__device__ __forceinline__ bool box_reached(float px, float py, float A, float B, float C, float threshold_q,
                                            float x0, float y0, float width, float height) {
    float lo_x = x0 - px, hi_x = lo_x + width, lo_y = y0 - py, hi_y = lo_y + height;
    if (lo_x <= 0.f && hi_x >= 0.f && lo_y <= 0.f && hi_y >= 0.f) return true;
    float best = 3.4e38f;
    // Edges with x fixed: q = A x^2 + 2 B x y + C y^2, minimised over y in [lo_y, hi_y].
    float xs[2] = {lo_x, hi_x}, ys[2] = {lo_y, hi_y};
    for (int e = 0; e < 2; e++) {
        float x = xs[e];
        float y = fminf(fmaxf(-B * x / C, lo_y), hi_y);
        best = fminf(best, quadratic(A, B, C, x, y));
        float y2 = ys[e];
        float x2 = fminf(fmaxf(-B * y2 / A, lo_x), hi_x);
        best = fminf(best, quadratic(A, B, C, x2, y2));
    }
    return best <= threshold_q;
}

// The same for the 16x16 tile whose first pixel is (x0, y0).
__device__ bool tile_reached(float px, float py, float A, float B, float C, float threshold_q,
                             float x0, float y0) {
    return box_reached(px, py, A, B, C, threshold_q, x0, y0, (float)(TILE - 1), (float)(TILE - 1));
}

// The tiles a Gaussian's pairs go to: its rectangle [x0, x1) x [y0, y1), each tile tested with
// tile_reached. Walking a large rectangle in one thread left the whole launch waiting for the
// few Gaussians that cover much of the image (a background Gaussian can cover thousands of
// tiles), so a rectangle of more than `cooperative_from` tiles is walked by its whole warp,
// 32 tiles a turn in the same row-major order (the pairs land exactly where one thread puts
// them).
struct TileTest {
    float px, py, A, B, C, threshold_q;
    int x0, y0, x1, y1;
};

__device__ __forceinline__ int tile_area(const TileTest& t) { return (t.x1 - t.x0) * (t.y1 - t.y0); }

__device__ __forceinline__ bool tile_hit(const TileTest& t, int k) {  // k: row-major index in the rectangle
    int w = t.x1 - t.x0;
    int tx = t.x0 + k % w, ty = t.y0 + k / w;
    return tile_reached(t.px, t.py, t.A, t.B, t.C, t.threshold_q, (float)(tx * TILE), (float)(ty * TILE));
}

__device__ __forceinline__ int tile_key(const TileTest& t, int k, int tiles_x) {
    int w = t.x1 - t.x0;
    return (t.y0 + k / w) * tiles_x + t.x0 + k % w;
}

// Lane `leader`'s test, in every lane of the warp.
__device__ TileTest broadcast(const TileTest& t, int leader) {
    TileTest out;
    out.px = __shfl_sync(FULL_MASK, t.px, leader);
    out.py = __shfl_sync(FULL_MASK, t.py, leader);
    out.A = __shfl_sync(FULL_MASK, t.A, leader);
    out.B = __shfl_sync(FULL_MASK, t.B, leader);
    out.C = __shfl_sync(FULL_MASK, t.C, leader);
    out.threshold_q = __shfl_sync(FULL_MASK, t.threshold_q, leader);
    out.x0 = __shfl_sync(FULL_MASK, t.x0, leader);
    out.y0 = __shfl_sync(FULL_MASK, t.y0, leader);
    out.x1 = __shfl_sync(FULL_MASK, t.x1, leader);
    out.y1 = __shfl_sync(FULL_MASK, t.y1, leader);
    return out;
}

__device__ __forceinline__ int warp_sum_int(int value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(FULL_MASK, value, offset);
    return value;
}

// How many tiles of its rectangle each lane's Gaussian reaches (0 where `active` is false).
// Every lane of the warp must call it.
__device__ int count_tiles(bool active, const TileTest& t, int cooperative_from) {
    int lane = threadIdx.x & 31;
    bool shared = active && tile_area(t) > cooperative_from;
    int count = 0;
    if (active && !shared)
        for (int k = 0; k < tile_area(t); k++) count += tile_hit(t, k);
    for (unsigned pending = __ballot_sync(FULL_MASK, shared); pending; pending &= pending - 1) {
        int leader = __ffs(pending) - 1;
        TileTest big = broadcast(t, leader);
        int part = 0;
        for (int k = lane; k < tile_area(big); k += 32) part += tile_hit(big, k);
        part = warp_sum_int(part);
        if (lane == leader) count = part;
    }
    return count;
}

// Projects Gaussian idx into `view` and writes its outputs there (zeros where it is culled).
// Returns whether it may touch tiles; then `test` holds its tile rectangle and conic, and the
// caller counts the tiles and writes rects and tiles_touched.
__device__ bool project_gaussian(
    int idx, int N, int view, int k_rest, int degree, float scale_mod, int antialiasing,
    const float* __restrict__ camera, const float* __restrict__ means, const float* __restrict__ log_scales,
    const float* __restrict__ quaternions, const float* __restrict__ opacity_logits,
    const float* __restrict__ sh_dc, const float* __restrict__ sh_rest, float* __restrict__ means2d,
    float* __restrict__ conic_opacity, float* __restrict__ colors, float* __restrict__ inv_depths,
    float* __restrict__ depths, int* __restrict__ radii, TileTest& test) {
    long long o = (long long)view * N + idx;            // its row in the view's outputs
    radii[o] = 0;
    means2d[2 * o] = 0.f; means2d[2 * o + 1] = 0.f;
    for (int i = 0; i < 4; i++) conic_opacity[4 * o + i] = 0.f;
    for (int i = 0; i < 3; i++) colors[3 * o + i] = 0.f;
    inv_depths[o] = 0.f;
    depths[o] = 0.f;

    CameraBlock cam = load_camera(camera + CAMERA_FLOATS * view);
    Projected pr;
    Activated act = activate(idx, log_scales, quaternions, opacity_logits);
    project_one(cam, means + 3 * idx, act.scale, act.rotation, scale_mod, pr);
    if (pr.z <= NEAR_PLANE || pr.det == 0.f) return false;

    float opacity = act.opacity;
    if (antialiasing) {
        float det_undilated = (pr.a - DILATION) * (pr.c - DILATION) - pr.b * pr.b;
        opacity *= sqrtf(fmaxf(det_undilated / pr.det, AA_DET_RATIO_MIN));
    }
    float A = pr.c / pr.det, B = -pr.b / pr.det, C = pr.a / pr.det;
    float px = cam.fx * pr.view[0] / pr.z + cam.cx - 0.5f;
    float py = cam.fy * pr.view[1] / pr.z + cam.cy - 0.5f;

    float mid = 0.5f * (pr.a + pr.c);
    float lambda = mid + sqrtf(fmaxf(0.1f, mid * mid - pr.det));
    float radius = ceilf(3.f * sqrtf(lambda));
    // The reference's 3-sigma tile rectangle [x0, x1) x [y0, y1).
    int x0 = min(cam.tiles_x, max(0, tile_floor((px - radius) / TILE)));
    int y0 = min(cam.tiles_y, max(0, tile_floor((py - radius) / TILE)));
    int x1 = min(cam.tiles_x, max(0, tile_floor((px + radius + TILE - 1) / TILE)));
    int y1 = min(cam.tiles_y, max(0, tile_floor((py + radius + TILE - 1) / TILE)));
    if ((x1 - x0) * (y1 - y0) == 0) return false;

    radii[o] = (int)fminf(radius, 1073741824.f);  // saturate as the reference backend does
    means2d[2 * o] = px; means2d[2 * o + 1] = py;
    conic_opacity[4 * o] = A; conic_opacity[4 * o + 1] = B; conic_opacity[4 * o + 2] = C;
    conic_opacity[4 * o + 3] = opacity;
    depths[o] = pr.z;
    inv_depths[o] = 1.f / pr.z;

    float dir[3] = {means[3 * idx] - cam.campos[0], means[3 * idx + 1] - cam.campos[1], means[3 * idx + 2] - cam.campos[2]};
    float inv_len = rsqrtf(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
    float basis[16] = {};
    sh_basis(degree, dir[0] * inv_len, dir[1] * inv_len, dir[2] * inv_len, basis);
    int count = (degree + 1) * (degree + 1);
    for (int ch = 0; ch < 3; ch++) {
        float value = 0.5f;
#pragma unroll
        for (int k = 0; k < 16; k++)  // fixed trip count keeps basis[] in registers
            if (k < count) value += basis[k] * sh_coefficient(sh_dc, sh_rest, k_rest, idx, k, ch);
        colors[3 * o + ch] = fmaxf(value, 0.f);
    }

    // Opacity-aware tiles: alpha >= 1/255 needs q <= 2 ln(o / (1/255)). Its bounding box
    // (half-widths sqrt(t * cov_xx), sqrt(t * cov_yy)) narrows the rectangle; each remaining
    // tile is then tested exactly against its pixel-centre box.
    if (opacity < ALPHA_MIN_TILE) return false;
    float threshold_q = alpha_threshold_q(opacity);
    float ex = sqrtf(threshold_q * pr.a), ey = sqrtf(threshold_q * pr.c);
    x0 = max(x0, tile_ceil((px - ex - (TILE - 1)) / TILE));
    y0 = max(y0, tile_ceil((py - ey - (TILE - 1)) / TILE));
    x1 = max(x0, min(x1, tile_floor((px + ex) / TILE) + 1));
    y1 = max(y0, min(y1, tile_floor((py + ey) / TILE) + 1));
    test = {px, py, A, B, C, threshold_q, x0, y0, x1, y1};
    return true;
}

extern "C" __global__ void project_forward(
    int N, int k_rest, int degree, float scale_mod, int antialiasing,
    const float* __restrict__ camera, const float* __restrict__ means, const float* __restrict__ log_scales,
    const float* __restrict__ quaternions, const float* __restrict__ opacity_logits,
    const float* __restrict__ sh_dc, const float* __restrict__ sh_rest, float* __restrict__ means2d, float* __restrict__ conic_opacity, float* __restrict__ colors,
    float* __restrict__ inv_depths, float* __restrict__ depths, int* __restrict__ radii,
    int* __restrict__ rects, int* __restrict__ tiles_touched, int cooperative_from) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // the Gaussian
    int view = blockIdx.y;
    // Every lane takes part in the warp's tile count at the end, so none returns early.
    TileTest test = {};
    bool counting = idx < N && project_gaussian(idx, N, view, k_rest, degree, scale_mod, antialiasing, camera, means,
                                                log_scales, quaternions, opacity_logits, sh_dc, sh_rest, means2d,
                                                conic_opacity, colors, inv_depths, depths, radii, test);
    int touched = count_tiles(counting, test, cooperative_from);
    if (idx < N) {  // a culled Gaussian has an empty rectangle and no tiles
        long long o = (long long)view * N + idx;
        rects[4 * o] = test.x0; rects[4 * o + 1] = test.y0; rects[4 * o + 2] = test.x1; rects[4 * o + 3] = test.y1;
        tiles_touched[o] = touched;
    }
}

// One (tile key, Gaussian row) pair per touched tile, written in depth order: thread i handles
// row depth_order[i] (row = view * rows_per_view + Gaussian; each view's rows are depth-sorted
// on their own), and offsets is the inclusive prefix sum of tiles_touched in that order. The
// key is view * tiles_per_view + tile; a stable sort by key afterwards keeps each tile's list
// front to back.
// Pairs at or past `capacity` are dropped: a render sized by a PairBudget (host code does not
// wait for the count) reports the true count, and the caller renders again. Slots past the
// last pair get `sentinel`, a key that sorts after every tile and that find_ranges skips.
template <typename Key>
__device__ void write_pairs(int count, int tiles_x, int rows_per_view, int tiles_per_view, long long capacity,
                            Key sentinel, const int* __restrict__ depth_order,
                            const float* __restrict__ means2d, const float* __restrict__ conic_opacity,
                            const int* __restrict__ rects, const long long* __restrict__ offsets,
                            const int* __restrict__ tiles_touched, Key* __restrict__ keys,
                            int* __restrict__ values, int cooperative_from) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    // Every lane takes part in its warp's shared walks below, so none returns early.
    bool active = i < count;
    if (active)
        for (long long slot = offsets[count - 1] + i; slot < capacity; slot += count) keys[slot] = sentinel;
    int idx = active ? depth_order[i] : 0;
    active = active && tiles_touched[idx] != 0;
    // This Gaussian's slots are [offset, limit). The tile test is the projection's, but the
    // compiler may contract its arithmetic differently in the two kernels: never write past
    // the slots, and never leave one unwritten (a stale slot would hold a garbage Gaussian id).
    long long offset = 0, limit = 0;
    TileTest t = {};
    if (active) {
        offset = i == 0 ? 0 : offsets[i - 1];
        limit = min(offsets[i], capacity);
        t = {means2d[2 * idx], means2d[2 * idx + 1], conic_opacity[4 * idx], conic_opacity[4 * idx + 1],
             conic_opacity[4 * idx + 2], alpha_threshold_q(conic_opacity[4 * idx + 3]),
             rects[4 * idx], rects[4 * idx + 1], rects[4 * idx + 2], rects[4 * idx + 3]};
    }
    int first_key = (idx / rows_per_view) * tiles_per_view;
    bool shared = active && tile_area(t) > cooperative_from;
    if (active && !shared) {
        for (int k = 0; k < tile_area(t) && offset < limit; k++)
            if (tile_hit(t, k)) {
                keys[offset] = (Key)(first_key + tile_key(t, k, tiles_x));
                values[offset] = idx;
                offset++;
            }
        for (; offset < limit; offset++) keys[offset] = sentinel;
    }
    // A large rectangle: the warp tests 32 tiles a turn; the hits of a turn are written in
    // lane order after those of earlier turns, which is the order of the single-thread walk.
    for (unsigned pending = __ballot_sync(FULL_MASK, shared); pending; pending &= pending - 1) {
        int leader = __ffs(pending) - 1;
        TileTest big = broadcast(t, leader);
        long long slot = __shfl_sync(FULL_MASK, offset, leader);
        long long end = __shfl_sync(FULL_MASK, limit, leader);
        int key_base = __shfl_sync(FULL_MASK, first_key, leader);
        int id = __shfl_sync(FULL_MASK, idx, leader);
        for (int turn = 0; turn < tile_area(big) && slot < end; turn += 32) {
            int k = turn + lane;
            bool hit = k < tile_area(big) && tile_hit(big, k);
            unsigned hits = __ballot_sync(FULL_MASK, hit);
            long long mine = slot + __popc(hits & ((1u << lane) - 1u));
            if (hit && mine < end) {
                keys[mine] = (Key)(key_base + tile_key(big, k, tiles_x));
                values[mine] = id;
            }
            slot += __popc(hits);
        }
        for (long long rest = slot + lane; rest < end; rest += 32) keys[rest] = sentinel;
    }
}

// 16-bit keys (up to 32767 tiles over the batch: a 4K image) halve the radix passes of the
// sort; 32-bit otherwise.
extern "C" __global__ void duplicate_with_keys16(
    int count, int tiles_x, int rows_per_view, int tiles_per_view, long long capacity, const int* depth_order,
    const float* means2d, const float* conic_opacity, const int* rects, const long long* offsets,
    const int* tiles_touched, short* keys, int* values, int cooperative_from) {
    write_pairs<short>(count, tiles_x, rows_per_view, tiles_per_view, capacity, (short)32767, depth_order, means2d,
                       conic_opacity, rects, offsets, tiles_touched, keys, values, cooperative_from);
}

extern "C" __global__ void duplicate_with_keys32(
    int count, int tiles_x, int rows_per_view, int tiles_per_view, long long capacity, const int* depth_order,
    const float* means2d, const float* conic_opacity, const int* rects, const long long* offsets,
    const int* tiles_touched, int* keys, int* values, int cooperative_from) {
    write_pairs<int>(count, tiles_x, rows_per_view, tiles_per_view, capacity, 2147483647, depth_order, means2d,
                     conic_opacity, rects, offsets, tiles_touched, keys, values, cooperative_from);
}

// ranges[2 * tile] = first, ranges[2 * tile + 1] = one past the last sorted pair of the tile.
// Unused slots at the end of a budgeted sort hold the key type's largest value (no tile has it).
template <typename Key>
__device__ void find_ranges(long long P, const Key* __restrict__ tiles, int* __restrict__ ranges, int sentinel) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P) return;
    int tile = (int)tiles[i];
    if (tile == sentinel) return;
    if (i == 0 || (int)tiles[i - 1] != tile) ranges[2 * tile] = (int)i;
    if (i == P - 1 || (int)tiles[i + 1] != tile) ranges[2 * tile + 1] = (int)(i + 1);
}

extern "C" __global__ void tile_ranges16(long long P, const short* tiles, int* ranges) { find_ranges<short>(P, tiles, ranges, 32767); }
extern "C" __global__ void tile_ranges32(long long P, const int* tiles, int* ranges) { find_ranges<int>(P, tiles, ranges, 2147483647); }

// exp(power) for power <= 0 in the blending loops, forward and backward alike (the backward
// recomputes each alpha and must get the forward's): the hardware's ex2.approx, as gsplat's
// __expf, within 2 + 1.16 |power| ulp (CUDA's bound: a relative 4e-6 at power -30), where
// expf's range reduction costs several instructions more in the loops' hottest line. The tile
// culling's ALPHA_MIN_TILE keeps a 1e-3 margin, far above that.
__device__ __forceinline__ float blend_exp(float power) { return __expf(power); }

// The tile rows a blending block works on. The blocks of a launch (a 1-D grid, BLEND_SLICES
// blocks for each tile of every view, each BLEND_ROWS rows of it) take the tiles in
// ``tile_order``, the longest pair lists first (longest processing time first), so that the last
// blocks to start are short ones and no heavy tile runs on alone on an otherwise idle GPU. On
// beer (720x1280, an H200) that took the blending backward from 1.11 to 0.94 ms a step and the
// forward from 0.41 to 0.33; shapes (400x400) did not move.
// Tile t is (view, ty, tx) with t = (view * tiles_y + ty) * tiles_x + tx.
struct BlendTile {
    int tile, view;
    int x0, y0;    // the block's first pixel in the view: it covers [x0, x0 + 16) x [y0, y0 + BLEND_ROWS)
    int px, py;    // this thread's pixel in the view
};
__device__ __forceinline__ BlendTile blend_tile(const int* __restrict__ tile_order, int tiles_x, int tiles_y) {
    BlendTile t;
    int slice = blockIdx.x % BLEND_SLICES;
    t.tile = tile_order[blockIdx.x / BLEND_SLICES];
    int per_view = tiles_x * tiles_y;
    t.view = t.tile / per_view;
    int rest = t.tile - t.view * per_view, ty = rest / tiles_x, tx = rest - ty * tiles_x;
    t.x0 = tx * TILE;
    t.y0 = ty * TILE + slice * BLEND_ROWS;
    t.px = t.x0 + threadIdx.x;
    t.py = t.y0 + threadIdx.y;
    return t;
}

#define BLEND_WARPS (BLEND_THREADS / 32)

// A blending block's shared batch: up to BLEND_THREADS Gaussians of its tile's pair list, with
// their position in the list (relative to the tile's start), that the block's threads walk in
// turn.
struct BlendBatch {
    int id[BLEND_THREADS], position[BLEND_THREADS];
    float2 xy[BLEND_THREADS];
    float4 conic_opacity[BLEND_THREADS];
    float4 feature[BLEND_THREADS];  // colour, inverse depth
    int warp_count[BLEND_WARPS];
};

// Each thread brings one pair (``has``: whether it has one; ``position`` in the tile's list,
// Gaussian ``id``); those whose Gaussian reaches alpha >= 1/255 somewhere in the block's pixels
// (box_reached, the pair writer's tile test on the block's rows) are copied into the batch, in
// the threads' order. Returns how many. A Gaussian left out has alpha below 1/255 at every pixel
// of the block, which the blending skips anyway: no pixel or gradient changes, but a block of
// 4 rows walks only the Gaussians of its rows (on trained scenes most reach one or two of a
// tile's four slices). With whole tiles (BLEND_SLICES == 1) every pair reaches its tile.
// The caller synchronises the block before (no thread may still read the previous batch); this
// ends with a __syncthreads, the batch ready.
__device__ __forceinline__ int stage_batch(BlendBatch& batch, const BlendTile& place, bool has, int position,
                                           int id, const float* __restrict__ means2d,
                                           const float* __restrict__ conic_opacity,
                                           const float* __restrict__ colors,
                                           const float* __restrict__ inv_depths) {
    int rank = threadIdx.y * TILE + threadIdx.x, lane = rank & 31, warp = rank >> 5;
    float2 xy = make_float2(0.f, 0.f);
    float4 co = make_float4(0.f, 0.f, 0.f, 0.f);
    bool reaches = false;
    if (has) {
        xy = make_float2(means2d[2 * id], means2d[2 * id + 1]);
        co = make_float4(conic_opacity[4 * id], conic_opacity[4 * id + 1], conic_opacity[4 * id + 2],
                         conic_opacity[4 * id + 3]);
        reaches = BLEND_SLICES == 1 ||
                  box_reached(xy.x, xy.y, co.x, co.y, co.z, alpha_threshold_q(co.w), (float)place.x0,
                              (float)place.y0, (float)(TILE - 1), (float)(BLEND_ROWS - 1));
    }
    unsigned ballot = __ballot_sync(FULL_MASK, reaches);
    if (lane == 0) batch.warp_count[warp] = __popc(ballot);
    __syncthreads();
    int slot = __popc(ballot & ((1u << lane) - 1u)), total = 0;
#pragma unroll
    for (int w = 0; w < BLEND_WARPS; w++) {
        int count = batch.warp_count[w];
        slot += w < warp ? count : 0;
        total += count;
    }
    if (reaches) {
        batch.id[slot] = id;
        batch.position[slot] = position;
        batch.xy[slot] = xy;
        batch.conic_opacity[slot] = co;
        batch.feature[slot] = make_float4(colors[3 * id], colors[3 * id + 1], colors[3 * id + 2], inv_depths[id]);
    }
    __syncthreads();
    return total;
}

// Front-to-back blending, one block per BLEND_ROWS rows of a 16x16 tile (``blend_tile``), one
// thread per pixel.
// Channels 0-2 are RGB, channel 3 is inverse depth (no background).
extern "C" __global__ void __launch_bounds__(BLEND_THREADS) render_forward(
    int width, int height, int tiles_x, int tiles_y, const int* __restrict__ tile_order,
    const int* __restrict__ ranges, const int* __restrict__ point_list,
    const float* __restrict__ means2d, const float* __restrict__ conic_opacity,
    const float* __restrict__ colors, const float* __restrict__ inv_depths,
    const float* __restrict__ background, float* __restrict__ out_color,
    float* __restrict__ out_transmittance, float* __restrict__ out_alpha, float* __restrict__ out_inv_depth,
    int* __restrict__ out_last_contributor) {
    BlendTile place = blend_tile(tile_order, tiles_x, tiles_y);
    int view = place.view, tile = place.tile, px = place.px, py = place.py;
    int rank = threadIdx.y * TILE + threadIdx.x;
    bool inside = px < width && py < height;
    bool done = !inside;
    int start = ranges[2 * tile], count = ranges[2 * tile + 1] - start;
    int rounds = (count + BLEND_THREADS - 1) / BLEND_THREADS;

    __shared__ BlendBatch batch;

    float T = 1.f, accum[4] = {0.f, 0.f, 0.f, 0.f};
    int last_contributor = 0;  // 1 + the list position of this pixel's last contributor (0: none)
    for (int round = 0; round < rounds; round++) {
        if (__syncthreads_count(done) == BLEND_THREADS) break;
        int position = round * BLEND_THREADS + rank;
        bool has = position < count;
        int staged = stage_batch(batch, place, has, position, has ? point_list[start + position] : 0, means2d,
                                 conic_opacity, colors, inv_depths);
        for (int j = 0; !done && j < staged; j++) {
            float dx = batch.xy[j].x - (float)px, dy = batch.xy[j].y - (float)py;
            float4 co = batch.conic_opacity[j];
            float power = -0.5f * (co.x * dx * dx + co.z * dy * dy) - co.y * dx * dy;
            if (power > 0.f) continue;
            float alpha = fminf(ALPHA_MAX, co.w * blend_exp(power));
            if (alpha < ALPHA_MIN) continue;
            float test_T = T * (1.f - alpha);
            if (test_T < T_MIN) { done = true; continue; }
            float weight = alpha * T;
            float4 feature = batch.feature[j];
            accum[0] += feature.x * weight; accum[1] += feature.y * weight;
            accum[2] += feature.z * weight; accum[3] += feature.w * weight;
            T = test_T;
            last_contributor = batch.position[j] + 1;
        }
    }
    if (inside) {
        long long plane = (long long)width * height, pix = view * plane + py * width + px;
        for (int ch = 0; ch < 3; ch++) out_color[2 * view * plane + ch * plane + pix] = accum[ch] + T * background[ch];
        out_transmittance[pix] = T;
        out_alpha[pix] = 1.f - T;
        out_inv_depth[pix] = accum[3];
        out_last_contributor[pix] = last_contributor;
    }
}

__device__ __forceinline__ float warp_sum(float value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(FULL_MASK, value, offset);
    return value;
}

// The warp's sums of eight per-lane values g[0..8) in 9 shuffles, where a butterfly per value
// takes 40: each stage swaps half of the values a lane still carries with its partner's and
// keeps the sums of the other half (a transposed reduce-scatter). Lane l returns the total of
// value (l >> 2) & 7, so that lanes 0, 4, ..., 28 can add the eight totals to memory in one
// instruction.
__device__ __forceinline__ float warp_sum8_scattered(const float* g, int lane) {
    float half[4], quarter[2];
    bool upper = lane & 16;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float send = upper ? g[i] : g[i + 4], keep = upper ? g[i + 4] : g[i];
        half[i] = keep + __shfl_xor_sync(FULL_MASK, send, 16);
    }
    upper = lane & 8;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float send = upper ? half[i] : half[i + 2], keep = upper ? half[i + 2] : half[i];
        quarter[i] = keep + __shfl_xor_sync(FULL_MASK, send, 8);
    }
    upper = lane & 4;
    float send = upper ? quarter[0] : quarter[1], keep = upper ? quarter[1] : quarter[0];
    float total = keep + __shfl_xor_sync(FULL_MASK, send, 4);
    total += __shfl_xor_sync(FULL_MASK, total, 2);
    return total + __shfl_xor_sync(FULL_MASK, total, 1);
}

// Back-to-front gradient of the blending. Every thread of the block walks the same Gaussians,
// so a warp reduces its 32 pixels' contributions in registers and issues one atomic per value
// (instead of one per pixel): atomics no longer serialise on popular Gaussians. Eight of the
// values share one scattered reduction (warp_sum8_scattered), which takes a fifth of the
// shuffles of one butterfly per value.
// One pixel a thread: two (half the reductions and atomics a pixel) measured slower on an H200,
// 0.98 against 0.84 ms a training step on beer, with 80 registers a thread instead of 52 and so
// fewer warps to hide the shared-memory and shuffle latency. A warp skipping, all lanes
// together, the Gaussians that reach none of its 2x16 pixels (and those behind all its pixels'
// last contributors) also measured slower there: 0.97 against 0.84 ms (bench/RESULTS.md).
// DEPTH: whether the inverse-depth output has a gradient. Training uses the image alone, and
// leaving the depth channel out saves a reduction and an atomic per Gaussian and warp.
#define BLEND_BACKWARD_ARGS \
    int width, int height, int tiles_x, int tiles_y, const int* __restrict__ tile_order, \
    const int* __restrict__ ranges, const int* __restrict__ point_list, \
    const float* __restrict__ means2d, const float* __restrict__ conic_opacity, \
    const float* __restrict__ colors, const float* __restrict__ inv_depths, \
    const float* __restrict__ background, const float* __restrict__ final_transmittance, \
    const int* __restrict__ last_contributors, const float* __restrict__ grad_color, \
    const float* __restrict__ grad_inv_depth, const float* __restrict__ grad_alpha, \
    float* __restrict__ grad_means2d, float* __restrict__ grad_conic_opacity, \
    float* __restrict__ grad_colors, float* __restrict__ grad_inv_depths
#define BLEND_BACKWARD_NAMES \
    width, height, tiles_x, tiles_y, tile_order, ranges, point_list, means2d, conic_opacity, colors, inv_depths, background, \
    final_transmittance, last_contributors, grad_color, grad_inv_depth, grad_alpha, grad_means2d, \
    grad_conic_opacity, grad_colors, grad_inv_depths

template <bool DEPTH>
__device__ void blend_backward(BLEND_BACKWARD_ARGS) {
    BlendTile place = blend_tile(tile_order, tiles_x, tiles_y);
    int view = place.view, tile = place.tile, px = place.px, py = place.py;
    int rank = threadIdx.y * TILE + threadIdx.x;
    bool inside = px < width && py < height;
    // pix: the pixel in this view's single-channel planes; colour channel ch of the view's
    // [3, H, W] image is at 2 * view * plane + ch * plane + pix.
    long long plane = (long long)width * height, pix = view * plane + py * width + px;
    int start = ranges[2 * tile];

    __shared__ BlendBatch batch;
    __shared__ int s_block_last;

    float T_final = inside ? final_transmittance[pix] : 0.f;
    float T = T_final;
    int last_contributor = inside ? last_contributors[pix] : 0;
    // Pairs after every pixel's last contributor were never blended (the forward stopped
    // there): start the backward walk at the block's furthest last contributor.
    if (rank == 0) s_block_last = 0;
    __syncthreads();
    atomicMax(&s_block_last, last_contributor);
    __syncthreads();
    int count = s_block_last;  // the list positions [0, count) are walked, last first
    int rounds = (count + BLEND_THREADS - 1) / BLEND_THREADS;
    float dpix[4] = {0.f, 0.f, 0.f, 0.f};
    float bg_dot = 0.f;
    if (inside) {
        for (int ch = 0; ch < 3; ch++) dpix[ch] = grad_color[2 * view * plane + ch * plane + pix];
        dpix[3] = DEPTH ? grad_inv_depth[pix] : 0.f;
        // alpha = 1 - T_final: its gradient acts like a background of -1 on every channel-free
        // term, i.e. d alpha / d T_final = -1.
        for (int ch = 0; ch < 3; ch++) bg_dot += background[ch] * dpix[ch];
        if (grad_alpha) bg_dot -= grad_alpha[pix];
    }
    float accum[4] = {0.f, 0.f, 0.f, 0.f}, last_feature[4] = {0.f, 0.f, 0.f, 0.f};
    float last_alpha = 0.f;
    for (int round = 0; round < rounds; round++) {
        __syncthreads();
        int progress = round * BLEND_THREADS + rank, position = count - 1 - progress;
        bool has = progress < count;
        int staged = stage_batch(batch, place, has, position, has ? point_list[start + position] : 0, means2d,
                                 conic_opacity, colors, inv_depths);
        for (int j = 0; j < staged; j++) {
            float g[10] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            bool contributes = false;
            if (inside && batch.position[j] < last_contributor) {
                float dx = batch.xy[j].x - (float)px, dy = batch.xy[j].y - (float)py;
                float4 co = batch.conic_opacity[j];
                float power = -0.5f * (co.x * dx * dx + co.z * dy * dy) - co.y * dx * dy;
                float G = blend_exp(power);
                float alpha = fminf(ALPHA_MAX, co.w * G);
                if (power <= 0.f && alpha >= ALPHA_MIN) {
                    contributes = true;
                    float inv_keep = __frcp_rn(1.f - alpha);   // 1 / (1 - alpha), used twice
                    T = T * inv_keep;
                    float weight = alpha * T;
                    float4 staged_feature = batch.feature[j];
                    float feature[4] = {staged_feature.x, staged_feature.y, staged_feature.z, staged_feature.w};
                    float grad_alpha_j = 0.f;
                    for (int ch = 0; ch < 4; ch++) {
                        accum[ch] = last_alpha * last_feature[ch] + (1.f - last_alpha) * accum[ch];
                        last_feature[ch] = feature[ch];
                        grad_alpha_j += (feature[ch] - accum[ch]) * dpix[ch];
                        g[6 + ch] = weight * dpix[ch];
                    }
                    grad_alpha_j *= T;
                    last_alpha = alpha;
                    // The background and the alpha output see T_final, which holds (1 - alpha).
                    grad_alpha_j += -T_final * inv_keep * bg_dot;
                    // Straight through the clamp at 0.99, as the reference: alpha's gradient
                    // reaches G and the opacity even where o G > 0.99.
                    float grad_G = co.w * grad_alpha_j;
                    float gdx = G * dx, gdy = G * dy;
                    g[0] = grad_G * (-gdx * co.x - gdy * co.y);          // d/d mean2d.x
                    g[1] = grad_G * (-gdy * co.z - gdx * co.y);          // d/d mean2d.y
                    g[2] = grad_G * (-0.5f * gdx * dx);                  // d/dA
                    g[3] = grad_G * (-gdx * dy);                         // d/dB
                    g[4] = grad_G * (-0.5f * gdy * dy);                  // d/dC
                    g[5] = G * grad_alpha_j;                             // d/d opacity
                }
            }
            if (__any_sync(FULL_MASK, contributes)) {
                // g[0..8): mean2d x, y, conic A, B, C, opacity, red, green; then blue, depth.
                int lane = rank & 31, id = batch.id[j];
                float total = warp_sum8_scattered(g, lane);
                float blue = warp_sum(g[8]);
                float depth = DEPTH ? warp_sum(g[9]) : 0.f;
                if ((lane & 3) == 0) {
                    int v = lane >> 2;
                    float* target = v < 2 ? &grad_means2d[2 * id + v]
                                  : v < 6 ? &grad_conic_opacity[4 * id + v - 2] : &grad_colors[3 * id + v - 6];
                    atomicAdd(target, total);
                }
                if (lane == 0) {
                    atomicAdd(&grad_colors[3 * id + 2], blue);
                    if (DEPTH) atomicAdd(&grad_inv_depths[id], depth);
                }
            }
        }
    }
}

// grad_inv_depth and grad_alpha may be null (that output has no gradient). With
// render_backward_no_depth, grad_inv_depth is not read and grad_inv_depths stays as it was.
extern "C" __global__ void __launch_bounds__(BLEND_THREADS) render_backward(BLEND_BACKWARD_ARGS) {
    blend_backward<true>(BLEND_BACKWARD_NAMES);
}
extern "C" __global__ void __launch_bounds__(BLEND_THREADS) render_backward_no_depth(BLEND_BACKWARD_ARGS) {
    blend_backward<false>(BLEND_BACKWARD_NAMES);
}

// out = value, or out += value when accumulating over the views of a batch (a template
// argument, so that the single-view kernel never reads what it writes).
template <bool ACCUMULATE>
__device__ __forceinline__ void put(float* out, float value) {
    if (ACCUMULATE) *out += value; else *out = value;
}

// Gradient of the projection for one visible Gaussian: from the gradients of means2d,
// conic/opacity, colours and inverse depth to those of means, scales, rotations, opacities
// and SH. ``rest`` is its higher-SH row in shared memory, overwritten with the row's gradient.
// With ACCUMULATE the other gradients are added to what the outputs hold (a later view of a
// batch); otherwise they are written.
template <bool ACCUMULATE>
__device__ void project_backward_one(
    int idx, int k_rest, int degree, float scale_mod, int antialiasing,
    const float* __restrict__ camera, const float* __restrict__ means, const float* __restrict__ log_scales,
    const float* __restrict__ quaternions, const float* __restrict__ opacity_logits,
    const float* __restrict__ sh_dc, float* rest, const float* __restrict__ grad_means2d,
    const float* __restrict__ grad_conic_opacity, const float* __restrict__ grad_colors,
    const float* __restrict__ grad_inv_depths, float* __restrict__ grad_means, float* __restrict__ grad_scales,
    float* __restrict__ grad_rotations, float* __restrict__ grad_opacities, float* __restrict__ grad_sh_dc) {
    CameraBlock cam = load_camera(camera);
    const float* p = means + 3 * idx;
    Activated act = activate(idx, log_scales, quaternions, opacity_logits);
    const float* s = act.scale;
    Projected pr;
    project_one(cam, p, s, act.rotation, scale_mod, pr);
    float z = pr.z, x = pr.view[0], y = pr.view[1];
    float g_view[3] = {0.f, 0.f, 0.f};

    // means2d = (fx x/z + cx - 0.5, fy y/z + cy - 0.5); inverse depth = 1/z.
    float gmx = grad_means2d[2 * idx], gmy = grad_means2d[2 * idx + 1];
    g_view[0] += gmx * cam.fx / z;
    g_view[1] += gmy * cam.fy / z;
    g_view[2] += -gmx * cam.fx * x / (z * z) - gmy * cam.fy * y / (z * z) - grad_inv_depths[idx] / (z * z);

    // Conic (A, B, C) = (c, -b, a) / det  ->  dilated covariance (a, b, c).
    float a = pr.a, b = pr.b, c = pr.c, det = pr.det, det2 = det * det;
    float gA = grad_conic_opacity[4 * idx], gB = grad_conic_opacity[4 * idx + 1];
    float gC = grad_conic_opacity[4 * idx + 2], g_opacity_eff = grad_conic_opacity[4 * idx + 3];
    float ga = (-gA * c * c + gB * b * c - gC * b * b) / det2;
    float gb = (2.f * gA * b * c - gB * (a * c + b * b) + 2.f * gC * a * b) / det2;
    float gc = (-gA * b * b + gB * a * b - gC * a * a) / det2;
    float opacity = act.opacity;
    float g_opacity;  // w.r.t. the activated opacity; chained to the logit below
    if (antialiasing) {
        float det0 = (a - DILATION) * (c - DILATION) - b * b;
        float ratio = det0 / det;
        if (ratio > AA_DET_RATIO_MIN) {
            float factor = sqrtf(ratio);
            g_opacity = g_opacity_eff * factor;
            float k = g_opacity_eff * opacity * 0.5f / factor / det2;
            ga += k * ((c - DILATION) * det - det0 * c);
            gb += k * (2.f * b * (det0 - det));
            gc += k * ((a - DILATION) * det - det0 * a);
        } else {
            g_opacity = g_opacity_eff * sqrtf(AA_DET_RATIO_MIN);
        }
    } else {
        g_opacity = g_opacity_eff;
    }
    put<ACCUMULATE>(&grad_opacities[idx], g_opacity * opacity * (1.f - opacity));  // d sigmoid

    // cov2D = T S T^T with S = M M^T; rows T0, T1 of T.
    float S[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            S[3 * i + j] = pr.M[3 * i] * pr.M[3 * j] + pr.M[3 * i + 1] * pr.M[3 * j + 1] + pr.M[3 * i + 2] * pr.M[3 * j + 2];
    const float* T0 = pr.T;
    const float* T1 = pr.T + 3;
    float ST0[3], ST1[3];
    for (int i = 0; i < 3; i++) {
        ST0[i] = S[3 * i] * T0[0] + S[3 * i + 1] * T0[1] + S[3 * i + 2] * T0[2];
        ST1[i] = S[3 * i] * T1[0] + S[3 * i + 1] * T1[1] + S[3 * i + 2] * T1[2];
    }
    float gT[6];
    for (int i = 0; i < 3; i++) {
        gT[i] = 2.f * ga * ST0[i] + gb * ST1[i];
        gT[3 + i] = gb * ST0[i] + 2.f * gc * ST1[i];
    }
    // dL/dS (as a full matrix G), then dL/dM = (G + G^T) M.
    float GS[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            GS[3 * i + j] = 2.f * ga * T0[i] * T0[j] + gb * (T0[i] * T1[j] + T1[i] * T0[j]) + 2.f * gc * T1[i] * T1[j];
    float gM[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            gM[3 * i + j] = GS[3 * i] * pr.M[j] + GS[3 * i + 1] * pr.M[3 + j] + GS[3 * i + 2] * pr.M[6 + j];
    // M = Rq diag(s * mod)
    float gRq[9];
    for (int i = 0; i < 3; i++) {
        float gs = 0.f;
        for (int r = 0; r < 3; r++) {
            gs += gM[3 * r + i] * pr.Rq[3 * r + i];
            gRq[3 * r + i] = gM[3 * r + i] * s[i] * scale_mod;
        }
        put<ACCUMULATE>(&grad_scales[3 * idx + i], gs * scale_mod * s[i]);  // d exp(log_scale)
    }
    const float* q = act.rotation;
    float w = q[0], qx = q[1], qy = q[2], qz = q[3];
    float gq[4];
    gq[0] = 2.f * (-qz * gRq[1] + qy * gRq[2] + qz * gRq[3] - qx * gRq[5] - qy * gRq[6] + qx * gRq[7]);
    gq[1] = 2.f * (qy * gRq[1] + qz * gRq[2] + qy * gRq[3] - 2.f * qx * gRq[4] - w * gRq[5]
                   + qz * gRq[6] + w * gRq[7] - 2.f * qx * gRq[8]);
    gq[2] = 2.f * (-2.f * qy * gRq[0] + qx * gRq[1] + w * gRq[2] + qx * gRq[3] + qz * gRq[5]
                   - w * gRq[6] + qz * gRq[7] - 2.f * qy * gRq[8]);
    gq[3] = 2.f * (-2.f * qz * gRq[0] - w * gRq[1] + qx * gRq[2] + w * gRq[3] - 2.f * qz * gRq[4]
                   + qy * gRq[5] + qx * gRq[6] + qy * gRq[7]);

    // Through the normalisation q / |q|: (g - u (u . g)) / |q|.
    float u_dot_g = q[0] * gq[0] + q[1] * gq[1] + q[2] * gq[2] + q[3] * gq[3];
    for (int i = 0; i < 4; i++) put<ACCUMULATE>(&grad_rotations[4 * idx + i], (gq[i] - q[i] * u_dot_g) / act.quat_norm);

    // T = J R_view: dL/dJ = dL/dT R_view^T; J depends on the view position (clamped ratios).
    float gJ[6];
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++)
            gJ[3 * i + k] = gT[3 * i] * cam.R[3 * k] + gT[3 * i + 1] * cam.R[3 * k + 1] + gT[3 * i + 2] * cam.R[3 * k + 2];
    float z2 = z * z, z3 = z2 * z;
    g_view[2] += -cam.fx / z2 * gJ[0] - cam.fy / z2 * gJ[4];
    // J02 = -fx tx / z^2 with tx = clamp(x/z) z.
    if (pr.clamped_x) {
        g_view[2] += cam.fx * pr.ratio_x / z2 * gJ[2];
    } else {
        g_view[0] += -cam.fx / z2 * gJ[2];
        g_view[2] += 2.f * cam.fx * x / z3 * gJ[2];
    }
    if (pr.clamped_y) {
        g_view[2] += cam.fy * pr.ratio_y / z2 * gJ[5];
    } else {
        g_view[1] += -cam.fy / z2 * gJ[5];
        g_view[2] += 2.f * cam.fy * y / z3 * gJ[5];
    }
    float gp[3];
    for (int j = 0; j < 3; j++) gp[j] = cam.R[j] * g_view[0] + cam.R[3 + j] * g_view[1] + cam.R[6 + j] * g_view[2];

    // Colour = max(0, sum_k basis_k(dir) sh_k + 0.5), dir = normalise(p - campos).
    float d[3] = {p[0] - cam.campos[0], p[1] - cam.campos[1], p[2] - cam.campos[2]};
    float inv_len = rsqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    float u[3] = {d[0] * inv_len, d[1] * inv_len, d[2] * inv_len};
    // Zeroed: entries past (degree+1)^2 are multiplied by zero coefficients, and must not be NaN.
    float basis[16] = {}, bx[16] = {}, by[16] = {}, bz[16] = {};
    sh_basis(degree, u[0], u[1], u[2], basis);
    sh_basis_grad(degree, u[0], u[1], u[2], bx, by, bz);
    int count = (degree + 1) * (degree + 1);
    float g_dir[3] = {0.f, 0.f, 0.f};
    for (int ch = 0; ch < 3; ch++) {
        float coefficient[16];
        float value = 0.5f;
#pragma unroll
        for (int k = 0; k < 16; k++) {  // fixed trip count keeps the arrays in registers
            coefficient[k] = k == 0 ? sh_dc[3 * idx + ch] : (k < count ? rest[3 * (k - 1) + ch] : 0.f);
            value += basis[k] * coefficient[k];
        }
        float g_colour = value > 0.f ? grad_colors[3 * idx + ch] : 0.f;
        put<ACCUMULATE>(&grad_sh_dc[3 * idx + ch], basis[0] * g_colour);
#pragma unroll
        for (int k = 0; k < 16; k++) {
            if (k >= count) break;
            if (k > 0) rest[3 * (k - 1) + ch] = basis[k] * g_colour;
            g_dir[0] += coefficient[k] * bx[k] * g_colour;
            g_dir[1] += coefficient[k] * by[k] * g_colour;
            g_dir[2] += coefficient[k] * bz[k] * g_colour;
        }
        for (int k = max(count, 1); k <= k_rest; k++) rest[3 * (k - 1) + ch] = 0.f;  // bands not evaluated
    }
    // Through the normalisation: (I - u u^T) / |d|.
    float u_dot = u[0] * g_dir[0] + u[1] * g_dir[1] + u[2] * g_dir[2];
    for (int j = 0; j < 3; j++) gp[j] += (g_dir[j] - u[j] * u_dot) * inv_len;
    for (int j = 0; j < 3; j++) put<ACCUMULATE>(&grad_means[3 * idx + j], gp[j]);
}

// Per-Gaussian gradient of the projection (the maths is in project_backward_one), summed over
// the ``views`` cameras of a batch in view order: camera v is camera[CAMERA_FLOATS v ...], and the radii
// and incoming gradients of view v are rows v * N ... of theirs.
//
// Fused SH update: with rest_exp_avg non-null, the higher SH coefficients (sh_rest) take their
// Adam step here (adam.cuh, with the scalars given) instead of having their gradient written:
// 180 of a Gaussian's 236 gradient bytes are never stored. adam_scalars, when non-null, holds
// (step_size, bias_correction2_sqrt) in device memory and overrides the two arguments: a CUDA
// graph's replays change the step without a new capture. grad_sh_rest is then read and written
// only for the views before the last of a batch (it may be null for one view). pair_count (a
// device count, or null) against pair_capacity says whether the render fitted its pair budget;
// when it did not, nothing is updated.
#define MAX_REST (15 * 3)

extern "C" __global__ void __launch_bounds__(256) project_backward(
    int N, int views, int k_rest, int degree, float scale_mod, int antialiasing,
    const float* __restrict__ camera, const float* __restrict__ means, const float* __restrict__ log_scales,
    const float* __restrict__ quaternions, const float* __restrict__ opacity_logits,
    const float* __restrict__ sh_dc, float* sh_rest, const int* __restrict__ radii, const float* __restrict__ grad_means2d,
    const float* __restrict__ grad_conic_opacity, const float* __restrict__ grad_colors,
    const float* __restrict__ grad_inv_depths,
    float* __restrict__ grad_means, float* __restrict__ grad_scales, float* __restrict__ grad_rotations,
    float* __restrict__ grad_opacities, float* __restrict__ grad_sh_dc, float* __restrict__ grad_sh_rest,
    float* __restrict__ rest_exp_avg, float* __restrict__ rest_exp_avg_sq, float beta1, float beta2, float eps,
    float step_size, float bias_correction2_sqrt, const float* __restrict__ adam_scalars,
    const long long* __restrict__ pair_count, long long pair_capacity) {
    // The block's SH rows are contiguous in memory: copy them in (and the gradients out)
    // cooperatively, so that global accesses are coalesced; each thread then works on its own
    // row in shared memory (an odd row stride of 45 floats avoids bank conflicts at degree 3).
    __shared__ float s_rest[256 * MAX_REST];
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int first = blockIdx.x * blockDim.x;
    int rows = min((int)blockDim.x, N - first);
    int row = 3 * k_rest;
    float* my_rest = s_rest + threadIdx.x * row;
    for (int view = 0; view < views; view++) {
        bool accumulate = view > 0;
        long long offset = (long long)view * N;
        __syncthreads();  // the previous view's gradients have been copied out
        for (int i = threadIdx.x; i < rows * row; i += blockDim.x) s_rest[i] = sh_rest[(long long)first * row + i];
        __syncthreads();
        if (idx < N && radii[offset + idx] != 0) {
#define PROJECT_BACKWARD_ONE_ARGS \
    idx, k_rest, degree, scale_mod, antialiasing, camera + CAMERA_FLOATS * view, means, log_scales, quaternions, opacity_logits, \
    sh_dc, my_rest, grad_means2d + 2 * offset, grad_conic_opacity + 4 * offset, grad_colors + 3 * offset, \
    grad_inv_depths + offset, grad_means, grad_scales, grad_rotations, grad_opacities, grad_sh_dc
            if (accumulate) project_backward_one<true>(PROJECT_BACKWARD_ONE_ARGS);
            else project_backward_one<false>(PROJECT_BACKWARD_ONE_ARGS);
#undef PROJECT_BACKWARD_ONE_ARGS
        } else if (idx < N) {  // culled in this view: its gradients are zero (outputs are not pre-zeroed)
            if (!accumulate) {
                for (int j = 0; j < 3; j++) { grad_means[3 * idx + j] = 0.f; grad_scales[3 * idx + j] = 0.f; grad_sh_dc[3 * idx + j] = 0.f; }
                for (int j = 0; j < 4; j++) grad_rotations[4 * idx + j] = 0.f;
                grad_opacities[idx] = 0.f;
            }
            for (int j = 0; j < row; j++) my_rest[j] = 0.f;
        }
        __syncthreads();
        bool update = rest_exp_avg != nullptr && view == views - 1;
        // A render that outgrew its pair budget has incomplete gradients and is done again by
        // the caller: the parameters must not move (uniform across the grid).
        if (update && pair_count != nullptr && *pair_count > pair_capacity) return;
        AdamSettings adam = {beta1, beta2, eps, adam_scalars ? adam_scalars[0] : step_size,
                             adam_scalars ? adam_scalars[1] : bias_correction2_sqrt};
        for (int i = threadIdx.x; i < rows * row; i += blockDim.x) {
            long long at = (long long)first * row + i;
            float g = accumulate ? grad_sh_rest[at] + s_rest[i] : s_rest[i];
            if (update) adam_update(adam, g, sh_rest + at, rest_exp_avg + at, rest_exp_avg_sq + at);
            else grad_sh_rest[at] = g;
        }
    }
}
