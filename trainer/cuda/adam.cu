// Adam for one parameter tensor, compiled at run time by NVRTC: torch.optim.Adam's update
// (no weight decay, no amsgrad; the specification) in one pass over p, grad, m and v:
//     m = m + (1 - beta1) (g - m)            (torch's lerp_(g, 1 - beta1))
//     v = beta2 v + (1 - beta2) g^2
//     p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
// with step_size = lr / (1 - beta1^step) and bias_correction2_sqrt = sqrt(1 - beta2^step),
// computed on the host in double precision as torch does.

extern "C" __global__ void adam_step(long long n, float beta1, float beta2, float eps, float step_size,
                                     float bias_correction2_sqrt, float* __restrict__ param,
                                     const float* __restrict__ grad, float* __restrict__ exp_avg,
                                     float* __restrict__ exp_avg_sq) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = grad[i];
        float m = exp_avg[i];
        m = m + (1.f - beta1) * (g - m);
        float v = exp_avg_sq[i] * beta2 + (1.f - beta2) * (g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        float denominator = sqrtf(v) / bias_correction2_sqrt + eps;
        param[i] = param[i] + (-step_size) * (m / denominator);
    }
}
