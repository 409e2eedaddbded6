/* tests/gpu/ops_ref.h — host-side pieces of the GPU op check (tests/gpu/ops_check.cu) that the
 * CPU test suite verifies too (tests/test_cuda_ops_host.c): the CPU reference of
 * cuda_logits_reduce built from the CPU LM-head ops, and the tolerance rule. C and C++. */
#ifndef ASSAY_TESTS_GPU_OPS_REF_H
#define ASSAY_TESTS_GPU_OPS_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "kernels/cpu/ops.h"
#ifdef __cplusplus
}
#endif

/* The CPU reference has no op that reduces given logits: its LM head computes them
 * (target_logprob_forward, argmax_forward). Fed h = the identity (rows, rows) and a weight whose
 * row j is column j of the logits, its GEMM reproduces every logit exactly (each output is one
 * fma(1, l, +0) = l among fma(0, w, s) = s steps; ops.h states the reduction order), so its
 * reduction runs on exactly our values. Needs finite logits (0 * inf is NaN). target NULL:
 * argmax only (lp, is_max unused). Returns 0, or -1 when out of memory. */
static inline int ref_logits_reduce(float *lp, uint8_t *is_max, int32_t *am, const float *logits,
                                    const int32_t *target, int rows, int vocab) {
    size_t n_w   = (size_t)vocab * rows;
    float *h     = (float *)calloc((size_t)rows * rows, sizeof(float));
    float *w     = (float *)malloc(n_w * sizeof(float));
    float *wp    = (float *)malloc(gemm_packed_floats(vocab, rows) * sizeof(float));
    float *extra = (float *)malloc(cpu_head_scratch_floats(rows, vocab) * sizeof(float));
    int    rc    = -1;
    if (!h || !w || !wp || !extra)
        goto done;
    for (int r = 0; r < rows; r++) {
        h[(size_t)r * rows + r] = 1.0f;
        for (int j = 0; j < vocab; j++)
            w[(size_t)j * rows + r] = logits[(size_t)r * vocab + j];
    }
    gemm_pack(wp, w, vocab, rows);
    if (target)
        target_logprob_forward(lp, is_max, extra, h, wp, target, rows, rows, vocab);
    argmax_forward(am, extra, h, wp, rows, rows, vocab);
    rc = 0;
done:
    free(h);
    free(w);
    free(wp);
    free(extra);
    return rc;
}

/* got is within tolerance of ref: |got - ref| <= tol_abs + tol_rel * |ref|. NaN on either side
 * fails (an unwritten, poisoned output reads as NaN); equal infinities pass. */
static inline int ref_close(double got, double ref, double tol_abs, double tol_rel) {
    if (got != got || ref != ref)
        return 0;
    if (isinf(got) || isinf(ref))
        return got == ref;
    return fabs(got - ref) <= tol_abs + tol_rel * fabs(ref);
}

#endif
