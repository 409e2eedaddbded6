// kernels/cuda/act.cu — SwiGLU and the bias + activation epilogue of a GEMM that writes f32.
// The float operations and their order are the CPU reference's (swiglu_forward,
// gelu_new_forward), written with _rn intrinsics so nvcc cannot contract them into fmas; expf
// and tanhf are CUDA's IEEE-accurate forms (<= 2 ulp), never __expf or a fast tanh.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"

#define GELU_C 0.7978845608028654f // sqrt(2/pi), python's constant rounded to f32
#define GELU_A 0.044715f

static __global__ void swiglu_kernel(bf16 *out, const bf16 *gate_up, size_t n, int ffn) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / (size_t)ffn, c = k % (size_t)ffn;
        float  g = __bfloat162float(gate_up[r * 2 * ffn + c]);
        float  u = __bfloat162float(gate_up[r * 2 * ffn + ffn + c]);
        // torch's silu: g / (1 + exp(-g)), then * up
        out[k] = __float2bfloat16_rn(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u));
    }
}

static __global__ void bias_act_kernel(bf16 *y, const float *acc, const float *bias, size_t n,
                                       int cols, int epi) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x) {
        float v = acc[k];
        if (bias)
            v = __fadd_rn(v, bias[k % (size_t)cols]);
        if (epi == 1) { // HF NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            float u = __fmul_rn(__fmul_rn(v, v), v);
            u       = __fadd_rn(v, __fmul_rn(GELU_A, u));
            float t = tanhf(__fmul_rn(GELU_C, u));
            v       = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, t));
        }
        y[k] = __float2bfloat16_rn(v);
    }
}

extern "C" cudaError_t cuda_swiglu(bf16 *out, const bf16 *gate_up, int rows, int ffn,
                                   cudaStream_t s) {
    if (rows < 0 || ffn <= 0)
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    size_t n = (size_t)rows * ffn;
    // out row r would overwrite gate_up rows another block may not have read yet
    if (!out || !gate_up ||
        ops_ranges_overlap(out, n * sizeof(bf16), gate_up, 2 * n * sizeof(bf16)))
        return cudaErrorInvalidValue;
    swiglu_kernel<<<ops_grid_1d(n, OPS_THREADS), OPS_THREADS, 0, s>>>(out, gate_up, n, ffn);
    return cudaGetLastError();
}

// "In place" means the epilogue replaces a separate activation pass; y may not overlap acc:
// a bf16 element k lies inside the f32 element k / 2, which another thread, possibly of a block
// that has not run yet, still has to read, so an aliased call would race.
extern "C" cudaError_t cuda_bias_act(bf16 *y, const float *acc, const float *bias, int rows, int n,
                                     int epi, cudaStream_t s) {
    if (rows < 0 || n <= 0 || (epi != 0 && epi != 1))
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    size_t total = (size_t)rows * n;
    if (!y || !acc || ops_ranges_overlap(y, total * sizeof(bf16), acc, total * sizeof(float)))
        return cudaErrorInvalidValue;
    bias_act_kernel<<<ops_grid_1d(total, OPS_THREADS), OPS_THREADS, 0, s>>>(y, acc, bias, total, n,
                                                                            epi);
    return cudaGetLastError();
}
