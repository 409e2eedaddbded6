// kernels/cuda/logits.cu — the per-row reduction of an LM-head chunk: log-prob of the target,
// is-argmax, argmax. One block per row, width-only thread count (launch.h), fixed trees
// (reduce.cuh): a row's results depend on that row alone.
//
// Two reads of the row rather than a one-pass online max/sum: the max (and argmax) first, then
// sum of expf(l - max) accumulated in DOUBLE with the final max, the CPU reference's arithmetic
// (target_logprob_forward: exp(l - mx) summed in double, logprob = (l[t] - mx) - log(sum) in
// double), with no rescaling of partial sums to round differently. The row (vocab f32) was just
// written by the GEMM and is read from L2; the GEMM dominates the cost by a factor of ~dim.
//
// NaN: a NaN logit ranks above every number (torch.argmax): the argmax is the row's first NaN,
// the sum is NaN, so the log-prob is NaN and is-argmax is (target == that index). The CPU
// reference lets NaN lose instead, but its log-prob is NaN too: a NaN row is a broken model on
// either backend, and the NaN log-prob says so. An infinite max makes the log-prob NaN (inf -
// inf), as on the CPU.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"
#include "kernels/cuda/reduce.cuh"

static __global__ void logits_reduce_kernel(float *out_logprob, uint8_t *out_is_max,
                                            int32_t *out_argmax, const float *logits,
                                            const int32_t *target, int vocab) {
    __shared__ reduce_shared sh;
    size_t                   r = blockIdx.x;
    const float             *l = logits + r * vocab;

    float m  = -INFINITY;
    int   am = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        ops_argmax_merge(&m, &am, l[j], j);
    block_argmax(&m, &am, &sh);

    if (target && (out_logprob || out_is_max)) {
        double sum = 0.0;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            sum = __dadd_rn(sum, (double)expf(__fsub_rn(l[j], m)));
        sum = block_sum_double(sum, &sh);
        if (threadIdx.x == 0) {
            int32_t t = target[r];
            if (out_logprob)
                out_logprob[r] =
                    __double2float_rn(__dsub_rn(__dsub_rn((double)l[t], (double)m), log(sum)));
            if (out_is_max)
                out_is_max[r] = (uint8_t)(am == t);
        }
    }
    if (threadIdx.x == 0 && out_argmax)
        out_argmax[r] = am;
}

extern "C" cudaError_t cuda_logits_reduce(float *out_logprob, uint8_t *out_is_max,
                                          int32_t *out_argmax, const float *logits,
                                          const int32_t *target, int rows, int vocab,
                                          cudaStream_t s) {
    if (rows < 0 || vocab <= 0)
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    // target NULL: argmax only, out_logprob and out_is_max are left alone (a caller may pass
    // the same output set in both modes)
    if (!logits || (!out_argmax && (!target || (!out_logprob && !out_is_max))))
        return cudaErrorInvalidValue;
    logits_reduce_kernel<<<rows, ops_row_threads(vocab), 0, s>>>(out_logprob, out_is_max,
                                                                 out_argmax, logits, target, vocab);
    return cudaGetLastError();
}
