// Shared by every kernel file (inlined by nanostyle/cuda.py before compilation, so NVRTC needs
// no include path): grid-stride loop helper and a block-wide sum.
#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Sum of `value` over the block (blockDim.x a power of two <= 1024); the result is valid in
// thread 0. `shared` holds blockDim.x elements.
template <typename T>
__device__ T block_sum(T value, T* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    return shared[0];
}
