// kernels/cuda/convert.cu — f32 <-> bf16. f32 -> bf16 rounds to nearest even
// (__float2bfloat16_rn; NaN stays NaN, as core/dtype.h f32_to_bf16), bf16 -> f32 is exact.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"

static __global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

static __global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

extern "C" cudaError_t cuda_f32_to_bf16(bf16 *dst, const float *src, size_t n, cudaStream_t s) {
    if (n == 0)
        return cudaSuccess;
    // an element written may not be one another thread has yet to read
    if (!dst || !src || ops_ranges_overlap(dst, n * sizeof(bf16), src, n * sizeof(float)))
        return cudaErrorInvalidValue;
    f32_to_bf16_kernel<<<ops_grid_1d(n, OPS_THREADS), OPS_THREADS, 0, s>>>(dst, src, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t s) {
    if (n == 0)
        return cudaSuccess;
    if (!dst || !src || ops_ranges_overlap(dst, n * sizeof(float), src, n * sizeof(bf16)))
        return cudaErrorInvalidValue;
    bf16_to_f32_kernel<<<ops_grid_1d(n, OPS_THREADS), OPS_THREADS, 0, s>>>(dst, src, n);
    return cudaGetLastError();
}
