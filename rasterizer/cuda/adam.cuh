// Adam's update of one float: torch.optim.Adam without weight decay, amsgrad or maximize (the
// specification), in torch's order of operations:
//     m = m + (1 - beta1) (g - m)            (torch's lerp_(g, 1 - beta1))
//     v = beta2 v + (1 - beta2) g^2
//     p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
// with step_size = lr / (1 - beta1^step) and bias_correction2_sqrt = sqrt(1 - beta2^step),
// computed on the host in double precision as torch does.
//
// Shared by trainer/cuda/adam.cu (a whole parameter tensor) and splat.cu's project_backward
// (which updates the higher SH coefficients where it computes their gradient, so that the
// gradient is never stored). Both include it through the compiler's header search
// (rasterizer/cuda/compiler.py), so the two updates are the same code.
#pragma once

struct AdamSettings {
    float beta1, beta2, eps, step_size, bias_correction2_sqrt;
};

__device__ __forceinline__ void adam_update(const AdamSettings& s, float g, float* param, float* exp_avg,
                                            float* exp_avg_sq) {
    float m = *exp_avg;
    m = m + (1.f - s.beta1) * (g - m);
    float v = *exp_avg_sq * s.beta2 + (1.f - s.beta2) * (g * g);
    *exp_avg = m;
    *exp_avg_sq = v;
    float denominator = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
    *param = *param + (-s.step_size) * (m / denominator);
}
