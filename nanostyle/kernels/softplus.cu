// softplus(x) = max(x, 0) + log1p(exp(-|x|)) and sigmoid(x), both exact for any |x|.

template <typename T>
__global__ void softplus_forward(T* y, const T* x, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        T v = x[i];
        y[i] = (v > T(0) ? v : T(0)) + log1p(exp(-fabs(v)));
    }
}

template <typename T>
__global__ void sigmoid_forward(T* y, const T* x, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        T v = x[i];
        T e = exp(-fabs(v));
        y[i] = v >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
}
