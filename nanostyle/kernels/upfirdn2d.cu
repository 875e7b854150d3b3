// upfirdn2d: upsample (zero insertion), pad, correlate with a 2-D kernel, downsample.
// The kernel `f` arrives already oriented for correlation with the gain folded in (the host
// flips it unless flip_filter). One thread per output pixel; the zero-inserted, padded input
// is never materialised: output (oy, ox) reads upsampled position
// (oy * down + ky - pad_y0, ox * down + kx - pad_x0), which is a real sample only when it is
// inside [0, H * up) and divisible by up. Negative padding (cropping) falls out of the same rule.

template <typename T>
__global__ void upfirdn2d_kernel(T* y, const T* x, const T* f, long long planes, int H, int W,
                                 int fh, int fw, int up, int down, int pad_x0, int pad_y0, int out_h, int out_w) {
    long long n = planes * out_h * out_w;
    GRID_STRIDE_LOOP(i, n) {
        int ox = (int)(i % out_w);
        int oy = (int)((i / out_w) % out_h);
        long long plane = i / ((long long)out_w * out_h);
        const T* xp = x + plane * H * W;
        T acc = T(0);
        for (int ky = 0; ky < fh; ++ky) {
            int uy = oy * down + ky - pad_y0;
            if (uy < 0 || uy >= H * up || uy % up) continue;
            int iy = uy / up;
            for (int kx = 0; kx < fw; ++kx) {
                int ux = ox * down + kx - pad_x0;
                if (ux < 0 || ux >= W * up || ux % up) continue;
                acc += xp[(long long)iy * W + ux / up] * f[ky * fw + kx];
            }
        }
        y[i] = acc;
    }
}
