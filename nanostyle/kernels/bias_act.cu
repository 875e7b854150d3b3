// bias_act: y = clamp(act(x + b) * gain); its gradient dz = dy * act'(z) * gain * mask and the
// second derivative act''(z) * gain * mask used by the gradient's own gradient.
// Activation codes (nanostyle/ops/bias_act.py ACTIVATION_CODES): 0 linear, 1 relu, 2 lrelu,
// 3 tanh, 4 sigmoid, 5 elu, 6 selu, 7 softplus, 8 swish. clamp < 0 means no clamp.

#define SELU_ALPHA 1.6732632423543772
#define SELU_SCALE 1.0507009873554805

template <typename T>
__device__ T sigmoid_of(T z) {
    T e = exp(-fabs(z));
    return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
__device__ T activation(int act, T z, T alpha) {
    switch (act) {
        case 0: return z;
        case 1: return z > T(0) ? z : T(0);
        case 2: return z > T(0) ? z : z * alpha;
        case 3: return tanh(z);
        case 4: return sigmoid_of(z);
        case 5: return z > T(0) ? z : expm1(z);
        case 6: return T(SELU_SCALE) * (z > T(0) ? z : T(SELU_ALPHA) * expm1(z));
        case 7: return (z > T(0) ? z : T(0)) + log1p(exp(-fabs(z)));
        case 8: return z * sigmoid_of(z);
    }
    return z;
}

template <typename T>
__device__ T activation_derivative(int act, T z, T alpha) {
    switch (act) {
        case 0: return T(1);
        case 1: return z > T(0) ? T(1) : T(0);
        case 2: return z > T(0) ? T(1) : alpha;
        case 3: { T t = tanh(z); return T(1) - t * t; }
        case 4: { T s = sigmoid_of(z); return s * (T(1) - s); }
        case 5: return z > T(0) ? T(1) : exp(z);
        case 6: return T(SELU_SCALE) * (z > T(0) ? T(1) : T(SELU_ALPHA) * exp(z));
        case 7: return sigmoid_of(z);
        case 8: { T s = sigmoid_of(z); return s * (T(1) + z * (T(1) - s)); }
    }
    return T(1);
}

template <typename T>
__device__ T activation_second_derivative(int act, T z, T alpha) {
    switch (act) {
        case 3: { T t = tanh(z); return T(-2) * t * (T(1) - t * t); }
        case 4: { T s = sigmoid_of(z); return s * (T(1) - s) * (T(1) - T(2) * s); }
        case 5: return z > T(0) ? T(0) : exp(z);
        case 6: return z > T(0) ? T(0) : T(SELU_SCALE) * T(SELU_ALPHA) * exp(z);
        case 7: { T s = sigmoid_of(z); return s * (T(1) - s); }
        case 8: { T s = sigmoid_of(z); T ds = s * (T(1) - s); return T(2) * ds + z * ds * (T(1) - T(2) * s); }
    }
    return T(0);  // linear, relu, lrelu
}

template <typename T>
__device__ T clamp_mask(int act, T z, T alpha, T gain, T clamp) {
    if (clamp < T(0)) return T(1);
    return fabs(activation(act, z, alpha) * gain) <= clamp ? T(1) : T(0);
}

// x, y, z: n elements; b: bias_len elements broadcast along the axis whose stride (product of
// the later dimensions) is `inner`.
template <typename T>
__global__ void bias_act_forward(T* y, T* z_out, const T* x, const T* b, long long n, long long inner,
                                 int bias_len, int has_bias, int act, T alpha, T gain, T clamp) {
    GRID_STRIDE_LOOP(i, n) {
        T z = x[i];
        if (has_bias) z += b[(i / inner) % bias_len];
        z_out[i] = z;
        T v = activation(act, z, alpha) * gain;
        if (clamp >= T(0)) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
        y[i] = v;
    }
}

// dz = dy * act'(z) * gain * mask; has_z = 0 (linear without clamp) ignores z.
template <typename T>
__global__ void bias_act_grad(T* dz, const T* dy, const T* z, long long n, int has_z, int act, T alpha, T gain,
                              T clamp) {
    GRID_STRIDE_LOOP(i, n) {
        if (!has_z) { dz[i] = dy[i] * gain; continue; }
        T zi = z[i];
        dz[i] = dy[i] * activation_derivative(act, zi, alpha) * gain * clamp_mask(act, zi, alpha, gain, clamp);
    }
}

// out = act''(z) * gain * mask (the gradient's derivative with respect to z, per unit dy).
template <typename T>
__global__ void bias_act_grad2(T* out, const T* z, long long n, int act, T alpha, T gain, T clamp) {
    GRID_STRIDE_LOOP(i, n) {
        T zi = z[i];
        out[i] = activation_second_derivative(act, zi, alpha) * gain * clamp_mask(act, zi, alpha, gain, clamp);
    }
}
