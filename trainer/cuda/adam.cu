// Adam for one parameter tensor, compiled at run time by NVRTC: adam_update (adam.cuh, shared
// with the rasterizer's fused SH update) over every element of p, grad, m and v.
#include "adam.cuh"

extern "C" __global__ void adam_step(long long n, float beta1, float beta2, float eps, float step_size,
                                     float bias_correction2_sqrt, float* __restrict__ param,
                                     const float* __restrict__ grad, float* __restrict__ exp_avg,
                                     float* __restrict__ exp_avg_sq) {
    AdamSettings settings = {beta1, beta2, eps, step_size, bias_correction2_sqrt};
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        adam_update(settings, grad[i], param + i, exp_avg + i, exp_avg_sq + i);
}
