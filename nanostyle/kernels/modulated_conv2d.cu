// StyleGAN2 modulation and demodulation (nanostyle/ops/modulated_conv2d.py):
//   modulate:  y[n,c,:,:] = x[n,c,:,:] * styles[n,c]            and its styles gradient
//   demod:     d[n,o] = rsqrt(sum_i styles[n,i]^2 * wsq[o,i] + eps), wsq[o,i] = sum_k w[o,i,k]^2

template <typename T>
__global__ void modulate_forward(T* y, const T* x, const T* styles, long long n, long long hw) {
    GRID_STRIDE_LOOP(i, n) {
        y[i] = x[i] * styles[i / hw];
    }
}

// dstyles[nc] = sum over the plane of g * x; one block per (n, c) plane.
template <typename T>
__global__ void modulate_backward_styles(T* dstyles, const T* g, const T* x, long long planes, long long hw) {
    extern __shared__ unsigned char shared_bytes[];
    T* shared = reinterpret_cast<T*>(shared_bytes);
    for (long long plane = blockIdx.x; plane < planes; plane += gridDim.x) {
        const T* gp = g + plane * hw;
        const T* xp = x + plane * hw;
        T acc = T(0);
        for (long long j = threadIdx.x; j < hw; j += blockDim.x) acc += gp[j] * xp[j];
        T total = block_sum(acc, shared);
        if (threadIdx.x == 0) dstyles[plane] = total;
        __syncthreads();
    }
}

template <typename T>
__global__ void weight_square_sum(T* wsq, const T* w, long long rows, int taps) {
    GRID_STRIDE_LOOP(i, rows) {
        T acc = T(0);
        for (int k = 0; k < taps; ++k) { T v = w[i * taps + k]; acc += v * v; }
        wsq[i] = acc;
    }
}

template <typename T>
__global__ void demodulation_coefficients(T* d, const T* styles, const T* wsq, int N, int O, int I, T eps) {
    GRID_STRIDE_LOOP(i, (long long)N * O) {
        int o = (int)(i % O);
        int n = (int)(i / O);
        T acc = T(0);
        for (int c = 0; c < I; ++c) { T s = styles[(long long)n * I + c]; acc += s * s * wsq[(long long)o * I + c]; }
        d[i] = T(1) / sqrt(acc + eps);
    }
}
