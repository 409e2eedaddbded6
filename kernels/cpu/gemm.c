/* kernels/cpu/gemm.c — linear layers and the fused LM head on row tiles whose shapes never
 * depend on the batch (see ops.h). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"

/* LM-head chunks are CPU_GEMM_BIG rows when that tile is enabled: each chunk repacks the whole
 * head matrix, which at 64 rows took ~30% of scoring time. */
#define CPU_GEMM_BIG 256

size_t cpu_gemm_scratch_floats(int in, int out) {
    /* padded input tile | padded output tile | logits of one head chunk */
    return (size_t)CPU_GEMM_TILE * ((size_t)in + out) + (size_t)CPU_GEMM_BIG * out;
}

/* out (m, n; leading dimension ldo) = x (m, in) @ w (n, in)^T, one single-threaded OpenBLAS call
 * (threads come from the OpenMP loop over tiles: OpenBLAS's own pthreads fight OpenMP's for the
 * cores and made small GEMMs 10-40x slower). */
static void gemm_call(float *out, int ldo, const float *x, int m, const float *w, int in, int n) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, in, 1.0f, x, in, w, in, 0.0f, out,
                ldo);
}

/* Row tile sizes: CPU_GEMM_TILE always; the others when their tile_mask bit is set (bit 0: 16,
 * bit 1: 4, bit 2: 1, bit 3: CPU_GEMM_BIG). */
static const int small_sizes[3] = {16, 4, 1};

/* A row tile: rows [r0, r0+n) computed as an m-row GEMM (m > n: zero-padded in scratch). */
typedef struct row_tile {
    int r0, n, m;
} row_tile;

/* Splits rows (< CPU_GEMM_TILE) into the largest enabled small sizes that fit, then one padded
 * tile of the smallest enabled size that holds what is left. At most 3 + 3 + 3 + 1 tiles. */
static int split_rest(row_tile *t, int r0, int rows, int mask) {
    int k = 0;
    while (rows > 0) {
        int m = 0;
        for (int i = 0; i < 3 && !m; i++)
            if ((mask >> i & 1) && small_sizes[i] <= rows)
                m = small_sizes[i];
        if (!m) {
            m = CPU_GEMM_TILE;
            for (int i = 0; i < 3; i++)
                if ((mask >> i & 1) && small_sizes[i] >= rows && small_sizes[i] < m)
                    m = small_sizes[i];
            t[k++] = (row_tile){r0, rows, m};
            break;
        }
        t[k++] = (row_tile){r0, m, m};
        r0 += m;
        rows -= m;
    }
    return k;
}

/* out (rows, out_dim; leading dimension out_dim) = x @ w^T over (row tile, column tile) tasks.
 * Row tiles: CPU_GEMM_BIG rows while they fit (when enabled: OpenBLAS repacks the weights for
 * every call, so bigger tiles amortize that), then CPU_GEMM_TILE, then split_rest. Column tiles
 * are CPU_GEMM_COLS wide whatever the thread count. A padded last row tile runs from scratch. */
static void gemm_rows(float *out, float *scratch, const float *x, const float *w, int rows, int in,
                      int out_dim, int mask) {
    row_tile rest[16];
    int      big = (mask & 8) ? rows / CPU_GEMM_BIG : 0, r0 = big * CPU_GEMM_BIG;
    int      mid = (rows - r0) / CPU_GEMM_TILE, r1 = r0 + mid * CPU_GEMM_TILE;
    int      n_rest = split_rest(rest, r1, rows - r1, mask);
    int      n_rt = big + mid + n_rest, n_ct = (out_dim + CPU_GEMM_COLS - 1) / CPU_GEMM_COLS;
    row_tile last = n_rest ? rest[n_rest - 1] : (row_tile){0, 0, 0};
    float   *xpad = scratch, *opad = scratch + (size_t)CPU_GEMM_TILE * in;
    if (last.m > last.n) {
        memcpy(xpad, x + (size_t)last.r0 * in, (size_t)last.n * in * sizeof(float));
        memset(xpad + (size_t)last.n * in, 0, (size_t)(last.m - last.n) * in * sizeof(float));
    }
    size_t work = (size_t)rows * in * out_dim;
#pragma omp parallel for schedule(dynamic, 1) if (n_rt * n_ct > 1 && work >= 8 * CPU_PAR_MIN_WORK)
    for (int task = 0; task < n_rt * n_ct; task++) {
        int      rt = task / n_ct, c0 = (task % n_ct) * CPU_GEMM_COLS;
        int      nc = out_dim - c0 < CPU_GEMM_COLS ? out_dim - c0 : CPU_GEMM_COLS;
        row_tile t;
        if (rt < big)
            t = (row_tile){rt * CPU_GEMM_BIG, CPU_GEMM_BIG, CPU_GEMM_BIG};
        else if (rt < big + mid)
            t = (row_tile){r0 + (rt - big) * CPU_GEMM_TILE, CPU_GEMM_TILE, CPU_GEMM_TILE};
        else
            t = rest[rt - big - mid];
        if (t.m > t.n)
            gemm_call(opad + c0, out_dim, xpad, t.m, w + (size_t)c0 * in, in, nc);
        else
            gemm_call(out + (size_t)t.r0 * out_dim + c0, out_dim, x + (size_t)t.r0 * in, t.m,
                      w + (size_t)c0 * in, in, nc);
    }
    if (last.m > last.n)
        memcpy(out + (size_t)last.r0 * out_dim, opad, (size_t)last.n * out_dim * sizeof(float));
}

/* out (m, out_dim) = x (m, in) @ w^T as one m-row tile per column tile */
static void gemm_one_tile(float *out, const float *x, int m, const float *w, int in, int out_dim) {
    for (int c0 = 0; c0 < out_dim; c0 += CPU_GEMM_COLS) {
        int nc = out_dim - c0 < CPU_GEMM_COLS ? out_dim - c0 : CPU_GEMM_COLS;
        gemm_call(out + c0, out_dim, x, m, w + (size_t)c0 * in, in, nc);
    }
}

int gemm_tile_mask(const float *w, int in, int out_dim) {
    /* OpenBLAS picks its kernel from the call shape, never from the data, so one random input
     * decides for all inputs: a size is enabled when every row it computes has the same bits as
     * in the 64-row tiles (small sizes: at two offsets within a 64-row tile). */
    size_t nx = (size_t)CPU_GEMM_BIG * in, no = (size_t)CPU_GEMM_BIG * out_dim;
    float *x = malloc(nx * sizeof(float)), *ref = malloc(no * sizeof(float));
    float *o    = malloc(no * sizeof(float));
    int    mask = 0;
    if (!x || !ref || !o)
        goto done;
    uint32_t st = 12345u;
    for (size_t i = 0; i < nx; i++) {
        st   = st * 1664525u + 1013904223u;
        x[i] = (float)((st >> 8) / 8388608.0 - 1.0);
    }
    for (int r = 0; r < CPU_GEMM_BIG; r += CPU_GEMM_TILE)
        gemm_one_tile(ref + (size_t)r * out_dim, x + (size_t)r * in, CPU_GEMM_TILE, w, in, out_dim);
    for (int i = 0; i < 3; i++) {
        int m = small_sizes[i], ok = 1;
        for (int off = 0; off <= CPU_GEMM_TILE - m && ok; off += CPU_GEMM_TILE - m) {
            gemm_one_tile(o, x + (size_t)off * in, m, w, in, out_dim);
            ok = memcmp(o, ref + (size_t)off * out_dim, (size_t)m * out_dim * sizeof(float)) == 0;
        }
        if (ok)
            mask |= 1 << i;
    }
    gemm_one_tile(o, x, CPU_GEMM_BIG, w, in, out_dim);
    if (memcmp(o, ref, no * sizeof(float)) == 0)
        mask |= 8;
done:
    free(x), free(ref), free(o);
    return mask;
}

void matmul_forward(float *out, float *scratch, const float *x, const float *w, const float *bias,
                    int rows, int in, int out_dim, int tile_mask) {
    gemm_rows(out, scratch, x, w, rows, in, out_dim, tile_mask);
    if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)rows * out_dim >= 4 * CPU_PAR_MIN_WORK)
        for (int r = 0; r < rows; r++) {
            float *o = out + (size_t)r * out_dim;
            for (int j = 0; j < out_dim; j++)
                o[j] += bias[j];
        }
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

void target_logprob_forward(float *out_logprob, uint8_t *out_is_max, float *scratch, const float *h,
                            const float *w, const int32_t *target, int rows, int dim, int vocab,
                            int tile_mask) {
    float *logits = scratch + (size_t)CPU_GEMM_TILE * ((size_t)dim + vocab);
    int    chunk  = (tile_mask & 8) ? CPU_GEMM_BIG : CPU_GEMM_TILE;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        gemm_rows(logits, scratch, h + (size_t)r0 * dim, w, n, dim, vocab, tile_mask);
#pragma omp parallel for schedule(static) if ((size_t)n * vocab * 8 >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * vocab;
            float        mx;
            int          am = row_argmax(l, vocab, &mx);
            /* expf of max-subtracted logits (<= 0, no overflow), summed in double */
            double sum = 0.0;
            for (int j = 0; j < vocab; j++)
                sum += (double)expf(l[j] - mx);
            int32_t t           = target[r0 + i];
            out_logprob[r0 + i] = (float)(((double)l[t] - (double)mx) - log(sum));
            out_is_max[r0 + i]  = (uint8_t)(am == t);
        }
    }
}

void argmax_forward(int32_t *out_id, float *scratch, const float *h, const float *w, int rows,
                    int dim, int vocab, int tile_mask) {
    float *logits = scratch + (size_t)CPU_GEMM_TILE * ((size_t)dim + vocab);
    int    chunk  = (tile_mask & 8) ? CPU_GEMM_BIG : CPU_GEMM_TILE;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        gemm_rows(logits, scratch, h + (size_t)r0 * dim, w, n, dim, vocab, tile_mask);
#pragma omp parallel for schedule(static) if ((size_t)n * vocab >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            float mx;
            out_id[r0 + i] = row_argmax(logits + (size_t)i * vocab, vocab, &mx);
        }
    }
}
