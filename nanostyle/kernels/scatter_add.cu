// scatter_add: the transpose of a gather whose indices repeat (ops/scatter_add.py), without
// atomics. The launcher sorts the source elements by destination (ties in source order) and
// finds where each destination's run starts; each thread then sums one destination's run in
// that order. Atomic adds would sum in whatever order the threads arrive, so the gradient, and
// every weight after it, would change from run to run.
//   out[d] = sum_{k = starts[d]}^{starts[d + 1] - 1} values[order[k]],   d < n_out
template <typename T>
__global__ void segment_sum(T* out, const T* values, const long long* order, const long long* starts,
                            long long n_out) {
    GRID_STRIDE_LOOP(d, n_out) {
        T acc = T(0);
        for (long long k = starts[d]; k < starts[d + 1]; ++k) acc += values[order[k]];
        out[d] = acc;
    }
}
