// im2col / col2im for conv2d (cross-correlation, stride, zero padding, dilation 1).
// Patch matrix layout (as nanostyle/ops/conv2d.py `_im2col`): cols[C*kh*kw, N*Ho*Wo], row
// (c, ky, kx), column (n, oy, ox). The GEMM itself runs through cuBLAS (CuPy's matmul).

template <typename T>
__global__ void im2col_kernel(T* cols, const T* x, int N, int C, int H, int W, int kh, int kw,
                              int sy, int sx, int py, int px, int Ho, int Wo) {
    long long n_total = (long long)C * kh * kw * N * Ho * Wo;
    GRID_STRIDE_LOOP(i, n_total) {
        long long t = i;
        int ox = (int)(t % Wo); t /= Wo;
        int oy = (int)(t % Ho); t /= Ho;
        int n = (int)(t % N); t /= N;
        int kx = (int)(t % kw); t /= kw;
        int ky = (int)(t % kh);
        int c = (int)(t / kh);
        int iy = oy * sy - py + ky;
        int ix = ox * sx - px + kx;
        cols[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(((long long)n * C + c) * H + iy) * W + ix] : T(0);
    }
}

// The adjoint, as a gather: each input pixel sums the patch entries that read it (no atomics).
template <typename T>
__global__ void col2im_kernel(T* x, const T* cols, int N, int C, int H, int W, int kh, int kw,
                              int sy, int sx, int py, int px, int Ho, int Wo) {
    long long n_total = (long long)N * C * H * W;
    long long columns = (long long)N * Ho * Wo;
    GRID_STRIDE_LOOP(i, n_total) {
        int ix = (int)(i % W);
        int iy = (int)((i / W) % H);
        int c = (int)((i / ((long long)W * H)) % C);
        int n = (int)(i / ((long long)W * H * C));
        T acc = T(0);
        for (int ky = 0; ky < kh; ++ky) {
            int ty = iy + py - ky;
            if (ty < 0 || ty % sy) continue;
            int oy = ty / sy;
            if (oy >= Ho) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int tx = ix + px - kx;
                if (tx < 0 || tx % sx) continue;
                int ox = tx / sx;
                if (ox >= Wo) continue;
                long long row = ((long long)c * kh + ky) * kw + kx;
                acc += cols[row * columns + ((long long)n * Ho + oy) * Wo + ox];
            }
        }
        x[i] = acc;
    }
}
