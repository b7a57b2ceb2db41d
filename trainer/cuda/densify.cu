// Densification statistics of one render step, compiled at run time by NVRTC. The same update
// as trainer/model.py's GaussianModel.add_densification_stats (the specification), in one launch
// instead of a dozen small ones. For each view v of the step and each Gaussian i with
// radii[v, i] > 0:
//     max_radii[i]  = max(max_radii[i], radii[v, i])
//     grad_accum[i] += |(g_x W / 2, g_y H / 2)|     g = d loss / d means2d[v, i], in pixels
//     denom[i]      += 1
// (the gradient in the reference's NDC units, as graphdeco's viewspace_point_tensor.grad).

extern "C" __global__ void densify_stats(int views, int n, float half_width, float half_height,
                                         const float* __restrict__ grad_means2d,
                                         const int* __restrict__ radii, float* __restrict__ grad_accum,
                                         float* __restrict__ denom, float* __restrict__ max_radii) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float accum = grad_accum[i], count = denom[i], largest = max_radii[i];
    for (int v = 0; v < views; v++) {
        long long row = (long long)v * n + i;
        int radius = radii[row];
        if (radius <= 0) continue;
        float gx = grad_means2d[2 * row] * half_width, gy = grad_means2d[2 * row + 1] * half_height;
        largest = fmaxf(largest, (float)radius);
        accum += sqrtf(gx * gx + gy * gy);
        count += 1.f;
    }
    grad_accum[i] = accum;
    denom[i] = count;
    max_radii[i] = largest;
}
