/* kernels/cpu/gemm.c — linear layers and the fused LM head on fixed row tiles (see ops.h for
 * why the tile size never depends on the batch). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

size_t cpu_gemm_scratch_floats(int in, int out) {
    return (size_t)CPU_GEMM_TILE * ((size_t)in + (size_t)out);
}

/* out (CPU_GEMM_TILE, n; leading dimension ldo) = x (CPU_GEMM_TILE, in) @ w (n, in)^T, one
 * single-threaded OpenBLAS call (threads come from the OpenMP loop over tiles: OpenBLAS's own
 * pthreads fight OpenMP's for the cores and made small GEMMs 10-40x slower). */
static void gemm_tile(float *out, int ldo, const float *x, const float *w, int in, int n) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, CPU_GEMM_TILE, n, in, 1.0f, x, in, w, in,
                0.0f, out, ldo);
}

/* The CPU_GEMM_TILE-row input tile holding rows [r0, r0+n) of x (rows, in): x itself when the
 * tile is full, else a zero-padded copy in scratch. */
static const float *tile_input(float *scratch, const float *x, int r0, int n, int in) {
    if (n == CPU_GEMM_TILE)
        return x + (size_t)r0 * in;
    memcpy(scratch, x + (size_t)r0 * in, (size_t)n * in * sizeof(float));
    memset(scratch + (size_t)n * in, 0, (size_t)(CPU_GEMM_TILE - n) * in * sizeof(float));
    return scratch;
}

/* out (rows, out_dim) = x @ w^T over (row tile, column tile) tasks. Column tiles are
 * CPU_GEMM_COLS wide whatever the thread count, so each output element always comes from the
 * same call shape. A partial last row tile is padded in scratch and its result copied out. */
static void gemm_rows(float *out, float *scratch, const float *x, const float *w, int rows,
                      int in, int out_dim) {
    int n_rt = (rows + CPU_GEMM_TILE - 1) / CPU_GEMM_TILE;
    int n_ct = (out_dim + CPU_GEMM_COLS - 1) / CPU_GEMM_COLS;
    int tail = rows % CPU_GEMM_TILE;
    const float *xt_tail = tail ? tile_input(scratch, x, rows - tail, tail, in) : NULL;
    float       *ot_tail = scratch + (size_t)CPU_GEMM_TILE * in;
    size_t work = (size_t)rows * in * out_dim;
#pragma omp parallel for schedule(dynamic, 1) if (n_rt * n_ct > 1 && work >= 8 * CPU_PAR_MIN_WORK)
    for (int task = 0; task < n_rt * n_ct; task++) {
        int rt = task / n_ct, c0 = (task % n_ct) * CPU_GEMM_COLS;
        int nc = out_dim - c0 < CPU_GEMM_COLS ? out_dim - c0 : CPU_GEMM_COLS;
        if (tail && rt == n_rt - 1)
            gemm_tile(ot_tail + c0, out_dim, xt_tail, w + (size_t)c0 * in, in, nc);
        else
            gemm_tile(out + (size_t)rt * CPU_GEMM_TILE * out_dim + c0, out_dim,
                      x + (size_t)rt * CPU_GEMM_TILE * in, w + (size_t)c0 * in, in, nc);
    }
    if (tail)
        memcpy(out + (size_t)(rows - tail) * out_dim, ot_tail, (size_t)tail * out_dim * sizeof(float));
}

void matmul_forward(float *out, float *scratch, const float *x, const float *w, const float *bias,
                    int rows, int in, int out_dim) {
    gemm_rows(out, scratch, x, w, rows, in, out_dim);
    if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)rows * out_dim >= 4 * CPU_PAR_MIN_WORK)
        for (int r = 0; r < rows; r++) {
            float *o = out + (size_t)r * out_dim;
            for (int j = 0; j < out_dim; j++)
                o[j] += bias[j];
        }
    }
}

/* logits (CPU_GEMM_TILE, vocab) for rows [r0, r0+n) of h, column tiles in parallel */
static void head_tile(float *logits, float *scratch, const float *h, const float *w, int r0, int n,
                      int dim, int vocab) {
    const float *xt   = tile_input(scratch, h, r0, n, dim);
    int          n_ct = (vocab + CPU_GEMM_COLS - 1) / CPU_GEMM_COLS;
#pragma omp parallel for schedule(dynamic, 1) if (n_ct > 1)
    for (int ct = 0; ct < n_ct; ct++) {
        int c0 = ct * CPU_GEMM_COLS, nc = vocab - c0 < CPU_GEMM_COLS ? vocab - c0 : CPU_GEMM_COLS;
        gemm_tile(logits + c0, vocab, xt, w + (size_t)c0 * dim, dim, nc);
    }
}

/* First index of the largest logit (NaN never wins: comparisons with NaN are false). */
static int row_argmax(const float *l, int vocab, float *max_out) {
    int   best = 0;
    float mx   = l[0];
    for (int j = 1; j < vocab; j++)
        if (l[j] > mx) {
            mx   = l[j];
            best = j;
        }
    *max_out = mx;
    return best;
}

void target_logprob_forward(float *out_logprob, uint8_t *out_is_max, float *scratch,
                            const float *h, const float *w, const int32_t *target, int rows,
                            int dim, int vocab) {
    /* the logits live after the padded input tile in scratch: CPU_GEMM_TILE x vocab */
    float *logits = scratch + (size_t)CPU_GEMM_TILE * dim;
    for (int r0 = 0; r0 < rows; r0 += CPU_GEMM_TILE) {
        int n = rows - r0 < CPU_GEMM_TILE ? rows - r0 : CPU_GEMM_TILE;
        head_tile(logits, scratch, h, w, r0, n, dim, vocab);
#pragma omp parallel for schedule(static) if ((size_t)n * vocab * 8 >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * vocab;
            float        mx;
            int          am  = row_argmax(l, vocab, &mx);
            /* expf of max-subtracted logits (<= 0, no overflow), summed in double */
            double sum = 0.0;
            for (int j = 0; j < vocab; j++)
                sum += (double)expf(l[j] - mx);
            int32_t t             = target[r0 + i];
            out_logprob[r0 + i]   = (float)(((double)l[t] - (double)mx) - log(sum));
            out_is_max[r0 + i]    = (uint8_t)(am == t);
        }
    }
}

void argmax_forward(int32_t *out_id, float *scratch, const float *h, const float *w, int rows,
                    int dim, int vocab) {
    float *logits = scratch + (size_t)CPU_GEMM_TILE * dim;
    for (int r0 = 0; r0 < rows; r0 += CPU_GEMM_TILE) {
        int n = rows - r0 < CPU_GEMM_TILE ? rows - r0 : CPU_GEMM_TILE;
        head_tile(logits, scratch, h, w, r0, n, dim, vocab);
#pragma omp parallel for schedule(static) if ((size_t)n * vocab >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            float mx;
            out_id[r0 + i] = row_argmax(logits + (size_t)i * vocab, vocab, &mx);
        }
    }
}
