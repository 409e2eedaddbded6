// kernels/cuda/embed.cu — token embedding (+ learned positions) and row gather. Pure copies
// and one f32 add, so the results are bitwise those of the CPU reference (embed_forward +
// pos_embed_add) on the same bf16 table values.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"

// One block per row, threads striding along it.
static __global__ void embed_kernel(float *x, const bf16 *tok, const float *pos_table,
                                    const int32_t *ids, const int32_t *pos, int dim) {
    size_t       r = blockIdx.x;
    const bf16  *t = tok + (size_t)ids[r] * dim;
    const float *p = pos_table ? pos_table + (size_t)pos[r] * dim : NULL;
    float       *o = x + r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(t[i]);
        if (p)
            v = __fadd_rn(v, p[i]);
        o[i] = v;
    }
}

static __global__ void gather_rows_kernel(float *out, const float *x, const int32_t *sel, int dim) {
    size_t       r   = blockIdx.x;
    const float *src = x + (size_t)sel[r] * dim;
    float       *o   = out + r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = src[i];
}

extern "C" cudaError_t cuda_embed(float *x, const bf16 *tok, const float *pos_table,
                                  const int32_t *ids, const int32_t *pos, int rows, int dim,
                                  cudaStream_t s) {
    if (rows < 0 || dim <= 0 || (rows > 0 && (!x || !tok || !ids)) || (pos_table && !pos))
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    embed_kernel<<<rows, ops_rowwise_threads(dim), 0, s>>>(x, tok, pos_table, ids, pos, dim);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_gather_rows(float *out, const float *x, const int32_t *sel, int n_sel,
                                        int dim, cudaStream_t s) {
    if (n_sel < 0 || dim <= 0 || (n_sel > 0 && (!out || !x || !sel)))
        return cudaErrorInvalidValue;
    if (n_sel == 0)
        return cudaSuccess;
    gather_rows_kernel<<<n_sel, ops_rowwise_threads(dim), 0, s>>>(out, x, sel, dim);
    return cudaGetLastError();
}
