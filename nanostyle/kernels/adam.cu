// One fused Adam step: parameter, gradient and both moments read once and written once.
// step_size = lr / (1 - beta1^t); bias2_sqrt = sqrt(1 - beta2^t).

template <typename T>
__global__ void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, long long n,
                          T step_size, T beta1, T beta2, T eps, T bias2_sqrt) {
    GRID_STRIDE_LOOP(i, n) {
        T g = grad[i];
        T m = beta1 * exp_avg[i] + (T(1) - beta1) * g;
        T v = beta2 * exp_avg_sq[i] + (T(1) - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] -= step_size * m / (sqrt(v) / bias2_sqrt + eps);
    }
}
