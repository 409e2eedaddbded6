// kernels/cuda/norm.cu — residual add fused with RMSNorm / LayerNorm. One block per row with a
// width-only thread count (launch.h) and fixed double-precision reduction trees (reduce.cuh), so
// a row's result depends on that row alone. The arithmetic is the CPU reference's
// (rmsnorm_forward, layernorm_forward): sums in double, the scale in f32, and every f32 step
// written with _rn intrinsics so nvcc cannot contract it into an fma the CPU does not do. Only
// the order of the double sums differs from the CPU's (sequential), far below f32 rounding.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"
#include "kernels/cuda/reduce.cuh"

static __global__ void add_norm_kernel(float *x, bf16 *xn, const bf16 *delta, const float *w,
                                       const float *b, int kind, int dim, float eps) {
    __shared__ reduce_shared sh;
    size_t                   r  = blockIdx.x;
    float                   *xr = x + r * dim;
    bf16                    *o  = xn + r * dim;
    const bf16              *dr = delta ? delta + r * dim : NULL;

    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (dr) {
            v     = __fadd_rn(v, __bfloat162float(dr[i]));
            xr[i] = v; // each thread rereads only the elements it wrote
        }
        s = kind == 0 ? __dadd_rn(s, __dmul_rn((double)v, (double)v)) : __dadd_rn(s, (double)v);
    }
    s = block_sum_double(s, &sh);

    if (kind == 0) {
        // HF LlamaRMSNorm: variance in fp32, hidden * rsqrt(variance + eps), then weight * hidden
        float var = __double2float_rn(__ddiv_rn(s, (double)dim));
        float rs  = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            o[i] = __float2bfloat16_rn(__fmul_rn(w[i], __fmul_rn(xr[i], rs)));
        return;
    }
    double mean = __ddiv_rn(s, (double)dim), v = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        double d = __dsub_rn((double)xr[i], mean);
        v        = __dadd_rn(v, __dmul_rn(d, d));
    }
    v       = block_sum_double(v, &sh);
    float m = __double2float_rn(mean);
    float rs =
        __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__double2float_rn(__ddiv_rn(v, (double)dim)), eps)));
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = __float2bfloat16_rn(
            __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[i], m), rs), w[i]), b[i]));
}

extern "C" cudaError_t cuda_add_norm(float *x, bf16 *xn, const bf16 *delta, const float *w,
                                     const float *b, int kind, int rows, int dim, float eps,
                                     cudaStream_t s) {
    if (rows < 0 || dim <= 0 || (kind != 0 && kind != 1))
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    if (!x || !xn || !w || (kind == 1 && !b))
        return cudaErrorInvalidValue;
    // xn is written while x (and delta) are still being read by other blocks
    size_t n = (size_t)rows * dim;
    if (ops_ranges_overlap(xn, n * sizeof(bf16), x, n * sizeof(float)) ||
        (delta && ops_ranges_overlap(xn, n * sizeof(bf16), delta, n * sizeof(bf16))))
        return cudaErrorInvalidValue;
    add_norm_kernel<<<rows, ops_row_threads(dim), 0, s>>>(x, xn, delta, w, b, kind, dim, eps);
    return cudaGetLastError();
}
