/* tests/test_kernels.c — every CPU op against a naive double-precision reference on random
 * inputs, plus the properties the engine relies on: GEMM rows and attention rows do not depend
 * on the batch or the thread count, and the paged path equals the ragged one bit for bit. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vmath.h"
#include "runtime/backend.h"
#include "tests/helpers.h"

/* fp32 rounding: a sum of K products is within K * 2^-24 * sum|terms| of the exact value
 * (the classical gamma_K bound), so tests of reductions use that, times 2 for slack. */
#define U32 (1.0 / 16777216.0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float    frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}
static float *frandv(size_t n) {
    float *v = malloc(n * sizeof(float));
    cr_assert(v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand();
    return v;
}
static void set_threads(int n) { omp_set_num_threads(n); }

/* w (n, k) row-major packed into the GEMM's panel layout (malloc'd) */
static float *packed(const float *w, int n, int k) {
    float *p = malloc(gemm_packed_floats(n, k) * sizeof(float));
    cr_assert(p);
    gemm_pack(p, w, n, k);
    return p;
}

/* The reduction-order contract of ops.h, spelled out: one fmaf chain per element, k ascending,
 * bias last. The GEMM must match it bit for bit on every ISA, row count and thread count. */
static float contract_dot(const float *x, const float *w, int k, const float *bias, int j) {
    float s = 0.0f;
    for (int kk = 0; kk < k; kk++)
        s = fmaf(x[kk], w[(size_t)j * k + kk], s);
    return bias ? s + bias[j] : s;
}

Test(kernels, matmul_matches_double_reference_within_fp32_bound) {
    set_threads(2);
    int shapes[][3] = {{1, 8, 5}, {63, 64, 96}, {64, 100, 33}, {130, 288, 768}, {7, 1000, 3}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int    rows = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x = frandv((size_t)rows * in), *w = frandv((size_t)out * in), *b = frandv(out);
        float *o       = malloc((size_t)rows * out * sizeof(float));
        float *scratch = malloc(cpu_matmul_scratch_floats(rows, in) * sizeof(float));
        float *wp      = packed(w, out, in);
        matmul_forward(o, scratch, x, wp, b, rows, in, out);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < out; j++) {
                double ref = b[j], mag = fabs(b[j]);
                for (int k = 0; k < in; k++) {
                    ref += (double)x[r * in + k] * w[j * in + k];
                    mag += fabs((double)x[r * in + k] * w[j * in + k]);
                }
                cr_assert(fabs(o[r * out + j] - ref) <= 2.0 * (in + 1) * U32 * mag,
                          "shape %d: [%d,%d] = %g, want %g", (int)si, r, j, o[r * out + j], ref);
            }
        free(x), free(w), free(b), free(o), free(scratch), free(wp);
    }
}

Test(kernels, matmul_follows_the_reduction_order_contract_on_every_isa) {
    set_threads(2);
    int top         = cpu_gemm_isa();
    int shapes[][3] = {{1, 8, 5}, {13, 300, 70}, {25, 513, 64}, {40, 64, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int    rows = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x = frandv((size_t)rows * in), *w = frandv((size_t)out * in), *b = frandv(out);
        float *o       = malloc((size_t)rows * out * sizeof(float));
        float *scratch = malloc(cpu_matmul_scratch_floats(rows, in) * sizeof(float));
        float *wp      = packed(w, out, in);
        for (int isa = top; isa >= 0; isa--) {
            cpu_gemm_set_isa(isa);
            cr_assert_eq(cpu_gemm_isa(), isa);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                matmul_forward(o, scratch, x, wp, with_bias ? b : NULL, rows, in, out);
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < out; j++) {
                        float want =
                            contract_dot(x + (size_t)r * in, w, in, with_bias ? b : NULL, j);
                        cr_assert(memcmp(&o[r * out + j], &want, sizeof want) == 0,
                                  "isa %d shape %d bias %d: [%d,%d] = %a, contract says %a", isa,
                                  (int)si, with_bias, r, j, o[r * out + j], want);
                    }
            }
        }
        cpu_gemm_set_isa(-1);
        free(x), free(w), free(b), free(o), free(scratch), free(wp);
    }
}

static void row_invariance(int in, int out) {
    int    R = 600;
    float *x = frandv((size_t)R * in), *w = frandv((size_t)out * in), *wp = packed(w, out, in);
    float *ref = malloc((size_t)R * out * sizeof(float)), *o = malloc((size_t)R * out * 4);
    float *scratch = malloc(cpu_matmul_scratch_floats(R, in) * sizeof(float));
    set_threads(1);
    for (int r = 0; r < R; r++) /* every row alone */
        matmul_forward(ref + (size_t)r * out, scratch, x + (size_t)r * in, wp, NULL, 1, in, out);
    int counts[] = {2, 5, 17, 21, 64, 65, 150, 300, 600};
    for (int t = 1; t <= 2; t++) {
        set_threads(t);
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
            for (int r0 = 0; r0 + counts[ci] <= R; r0 += counts[ci]) {
                matmul_forward(o, scratch, x + (size_t)r0 * in, wp, NULL, counts[ci], in, out);
                cr_assert(memcmp(o, ref + (size_t)r0 * out, (size_t)counts[ci] * out * 4) == 0,
                          "rows %d..%d differ (threads %d)", r0, r0 + counts[ci], t);
            }
    }
    set_threads(2);
    free(x), free(w), free(wp), free(ref), free(o), free(scratch);
}

Test(kernels, matmul_row_bits_do_not_depend_on_batch_or_threads) {
    set_threads(2);
    int shapes[][2] = {{96, 200}, {64, 256}, {288, 2100}, {64, 400}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        row_invariance(shapes[i][0], shapes[i][1]);
}

Test(kernels, packed_weights_unpack_to_their_rows) {
    int    n = 70, k = 9; /* a partial last panel */
    float *w = frandv((size_t)n * k), *wp = packed(w, n, k), row[9];
    cr_assert_eq(gemm_packed_floats(n, k), (size_t)96 * k);
    for (int r = 0; r < n; r++) {
        gemm_unpack_row(row, wp, r, k);
        cr_assert(memcmp(row, w + (size_t)r * k, sizeof row) == 0, "row %d", r);
    }
    for (int r = n; r < 96; r++) { /* padding rows are zero */
        gemm_unpack_row(row, wp, r, k);
        for (int kk = 0; kk < k; kk++)
            cr_assert(row[kk] == 0.0f);
    }
    free(w), free(wp);
}

Test(kernels, norms_match_double_reference) {
    int    rows = 5, dim = 300;
    float *x = frandv((size_t)rows * dim), *w = frandv(dim), *b = frandv(dim);
    float *o = malloc((size_t)rows * dim * 4), *o2 = malloc((size_t)rows * dim * 4);
    rmsnorm_forward(o, x, w, rows, dim, 1e-5f);
    layernorm_forward(o2, x, w, b, rows, dim, 1e-5f);
    for (int r = 0; r < rows; r++) {
        double ss = 0, s = 0, v = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i], s += x[r * dim + i];
        double mean = s / dim;
        for (int i = 0; i < dim; i++)
            v += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
        double rs = 1 / sqrt(ss / dim + 1e-5), rl = 1 / sqrt(v / dim + 1e-5);
        for (int i = 0; i < dim; i++) {
            /* a handful of fp32 roundings on O(1) values: 1e-5 relative is generous */
            double want = w[i] * x[r * dim + i] * rs;
            cr_assert(fabs(o[r * dim + i] - want) <= 1e-5 * (1 + fabs(want)));
            double want2 = (x[r * dim + i] - mean) * rl * w[i] + b[i];
            cr_assert(fabs(o2[r * dim + i] - want2) <= 1e-5 * (1 + fabs(want2)));
        }
    }
    free(x), free(w), free(b), free(o), free(o2);
}

Test(kernels, activations_match_their_formulas) {
    size_t n = 1000;
    float *x = frandv(2 * n), *o = malloc(n * 4), *g = malloc(2 * n * 4);
    for (size_t i = 0; i < 2 * n; i++)
        x[i] *= 8; /* cover the saturated tails */
    swiglu_forward(o, x, 1, (int)n);
    for (size_t i = 0; i < n; i++) {
        double gt = x[i], up = x[n + i], want = gt / (1 + exp(-gt)) * up;
        cr_assert(fabs(o[i] - want) <= 1e-6 * (1 + fabs(want)), "silu %zu", i);
    }
    gelu_new_forward(g, x, n);
    for (size_t i = 0; i < n; i++) {
        double v = x[i], want = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        cr_assert(fabs(g[i] - want) <= 1e-6 * (1 + fabs(want)), "gelu %zu: %g vs %g", i, g[i],
                  want);
    }
    float a[3] = {1, 2, 3}, b[3] = {0.5f, -2, 1};
    add_forward(a, a, b, 3);
    cr_assert(a[0] == 1.5f && a[1] == 0 && a[2] == 4);
    free(x), free(o), free(g);
}

Test(kernels, rope_inv_freq_matches_transformers_float32) {
    /* values printed by torch for head_dim 16: default theta 500000 and llama3 scaling
     * (factor 8, low 1, high 4, original 64 positions — the llama3 fixture's settings) */
    const float def[8] = {0x1p+0f,         0x1.8d276p-3f,  0x1.34119p-5f,   0x1.ddee9ep-8f,
                          0x1.72ba42p-10f, 0x1.1f91fp-12f, 0x1.be2188p-15f, 0x1.5a0f4ep-17f};
    const float l3[8]  = {0x1p+0f,         0x1.453c18p-4f, 0x1.34119p-8f,   0x1.ddee9ep-11f,
                          0x1.72ba42p-13f, 0x1.1f91fp-15f, 0x1.be2188p-18f, 0x1.5a0f4ep-20f};
    float       got[8];
    rope_inv_freq(got, 16, 500000.0f, 1, 0, 0, 0, 0);
    for (int i = 0; i < 8; i++) /* powf vs torch's pow may differ in the last bit */
        cr_assert(fabsf(got[i] - def[i]) <= 2 * FLT_EPSILON * def[i], "default %d: %a vs %a", i,
                  got[i], def[i]);
    rope_inv_freq(got, 16, 500000.0f, 3, 8.0f, 1.0f, 4.0f, 64);
    for (int i = 0; i < 8; i++)
        cr_assert(fabsf(got[i] - l3[i]) <= 2 * FLT_EPSILON * l3[i], "llama3 %d: %a vs %a", i,
                  got[i], l3[i]);
    rope_inv_freq(got, 16, 10000.0f, 2, 4.0f, 0, 0, 0);
    float d2[8];
    rope_inv_freq(d2, 16, 10000.0f, 1, 0, 0, 0, 0);
    for (int i = 0; i < 8; i++)
        cr_assert(got[i] == d2[i] / 4.0f, "linear divides by the factor");
}

Test(kernels, rope_rotates_half_pairs_by_position_angle) {
    int     rows = 3, heads = 2, hd = 8, stride = 20;
    float  *x = frandv((size_t)rows * stride), *orig = malloc((size_t)rows * stride * 4);
    float   inv[4];
    int32_t pos[3] = {0, 5, 1000};
    memcpy(orig, x, (size_t)rows * stride * 4);
    rope_inv_freq(inv, hd, 10000.0f, 1, 0, 0, 0, 0);
    rope_forward(x, pos, inv, rows, heads, hd, stride);
    for (int r = 0; r < rows; r++) {
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++) {
                double ang = (double)(float)((float)pos[r] * inv[i]);
                double x1 = orig[r * stride + h * hd + i], x2 = orig[r * stride + h * hd + i + 4];
                cr_assert(fabs(x[r * stride + h * hd + i] - (x1 * cos(ang) - x2 * sin(ang))) <
                          1e-5);
                cr_assert(fabs(x[r * stride + h * hd + i + 4] - (x2 * cos(ang) + x1 * sin(ang))) <
                          1e-5);
            }
        for (int i = heads * hd; i < stride; i++) /* beyond the heads: untouched */
            cr_assert(x[r * stride + i] == orig[r * stride + i]);
    }
    free(x), free(orig);
}

/* naive causal GQA attention in double for one packed batch */
static void attention_ref(double *out, const float *q, const float *k, const float *v,
                          const int *cu, int n_seqs, int nh, int nkv, int hd, int qs, int ks,
                          int window) {
    for (int s = 0; s < n_seqs; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++)
            for (int h = 0; h < nh; h++) {
                int    g = h / (nh / nkv), n = i - cu[s] + 1;
                double sc[512], mx = -1e300, sum = 0;
                for (int j = 0; j < n; j++) {
                    int kr = cu[s] + j;
                    if (window > 0 && (i - cu[s]) - j >= window) {
                        sc[j] = -INFINITY;
                        continue;
                    }
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)q[(size_t)i * qs + h * hd + e] *
                             k[(size_t)kr * ks + g * hd + e];
                    sc[j] = d / sqrt(hd);
                    if (sc[j] > mx)
                        mx = sc[j];
                }
                for (int j = 0; j < n; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j < n; j++)
                        acc += sc[j] * v[(size_t)(cu[s] + j) * ks + g * hd + e];
                    out[(size_t)i * nh * hd + h * hd + e] = acc / sum;
                }
            }
}

Test(kernels, attention_varlen_matches_reference_and_paged_matches_bitwise) {
    int nh = 4, nkv = 2, hd = 16, qkv = (nh + 2 * nkv) * hd, kvd = nkv * hd;
    int cu[] = {0, 1, 40, 57, 120};
    int ns = 4, T = cu[ns];
    for (int window = 0; window <= 16; window += 16) {
        float  *qkvb = frandv((size_t)T * qkv);
        float  *q = qkvb, *k = qkvb + nh * hd, *v = k + kvd;
        float  *out = malloc((size_t)T * nh * hd * 4), *out2 = malloc((size_t)T * nh * hd * 4);
        double *ref = malloc((size_t)T * nh * hd * 8);
        cr_assert(attention_varlen_forward(out, q, k, v, cu, ns, nh, nkv, hd, qkv, qkv, window) ==
                  0);
        attention_ref(ref, q, k, v, cu, ns, nh, nkv, hd, qkv, qkv, window);
        for (int i = 0; i < T * nh * hd; i++) /* O(1) values, sums of <= 120 terms */
            cr_assert(fabs(out[i] - ref[i]) < 1e-5, "window %d elem %d: %g vs %g", window, i,
                      out[i], ref[i]);
        /* paged: blocks of 4 tokens scattered in a pool, each sequence's tokens written in two
         * steps (a prefix, then the rest against the cached prefix) */
        int      bt_tokens = 4, max_blocks = 16, n_blocks = 64;
        int32_t *bt = malloc((size_t)ns * max_blocks * 4);
        float   *kp = calloc((size_t)n_blocks * bt_tokens * kvd, 4);
        float   *vp = calloc((size_t)n_blocks * bt_tokens * kvd, 4);
        int      perm[64];
        for (int i = 0; i < n_blocks; i++)
            perm[i] = (i * 37 + 11) % n_blocks;
        for (int i = 0; i < ns * max_blocks; i++)
            bt[i] = perm[i];
        int    split[4], qo1[5], st1[4], qo2[5], st2[4];
        float *q1 = malloc((size_t)T * qkv * 4), *q2 = malloc((size_t)T * qkv * 4);
        int    r1 = 0, r2 = 0;
        for (int s = 0; s < ns; s++) {
            int len  = cu[s + 1] - cu[s];
            split[s] = len / 3;
            qo1[s] = r1, st1[s] = 0;
            memcpy(q1 + (size_t)r1 * qkv, qkvb + (size_t)cu[s] * qkv, (size_t)split[s] * qkv * 4);
            r1 += split[s];
            qo2[s] = r2, st2[s] = split[s];
            memcpy(q2 + (size_t)r2 * qkv, qkvb + (size_t)(cu[s] + split[s]) * qkv,
                   (size_t)(len - split[s]) * qkv * 4);
            r2 += len - split[s];
        }
        qo1[ns] = r1, qo2[ns] = r2;
        float *o1 = malloc((size_t)T * nh * hd * 4 + 4), *o2 = malloc((size_t)T * nh * hd * 4);
        kv_store_forward(kp, vp, q1 + nh * hd, q1 + nh * hd + kvd, qkv, kvd, bt, max_blocks,
                         bt_tokens, qo1, st1, ns);
        cr_assert(attention_paged_forward(o1, q1, kp, vp, bt, max_blocks, bt_tokens, qo1, st1, ns,
                                          nh, nkv, hd, qkv, window) == 0);
        kv_store_forward(kp, vp, q2 + nh * hd, q2 + nh * hd + kvd, qkv, kvd, bt, max_blocks,
                         bt_tokens, qo2, st2, ns);
        cr_assert(attention_paged_forward(o2, q2, kp, vp, bt, max_blocks, bt_tokens, qo2, st2, ns,
                                          nh, nkv, hd, qkv, window) == 0);
        for (int s = 0; s < ns; s++) {
            int len = cu[s + 1] - cu[s];
            cr_assert(memcmp(o1 + (size_t)qo1[s] * nh * hd, out + (size_t)cu[s] * nh * hd,
                             (size_t)split[s] * nh * hd * 4) == 0,
                      "paged prefix seq %d", s);
            cr_assert(memcmp(o2 + (size_t)qo2[s] * nh * hd,
                             out + (size_t)(cu[s] + split[s]) * nh * hd,
                             (size_t)(len - split[s]) * nh * hd * 4) == 0,
                      "paged rest seq %d", s);
        }
        /* the same batch with 1 thread: same bits */
        set_threads(1);
        cr_assert(attention_varlen_forward(out2, q, k, v, cu, ns, nh, nkv, hd, qkv, qkv, window) ==
                  0);
        set_threads(2);
        cr_assert(memcmp(out, out2, (size_t)T * nh * hd * 4) == 0);
        /* the portable path: same bits as the SIMD one (vmath.h's canonical order) */
        cpu_gemm_set_isa(0);
        cr_assert(attention_varlen_forward(out2, q, k, v, cu, ns, nh, nkv, hd, qkv, qkv, window) ==
                  0);
        cpu_gemm_set_isa(-1);
        cr_assert(memcmp(out, out2, (size_t)T * nh * hd * 4) == 0, "portable attention differs");
        free(qkvb), free(out), free(out2), free(ref), free(bt), free(kp), free(vp), free(q1),
            free(q2), free(o1), free(o2);
    }
}

Test(kernels, target_logprob_matches_double_log_softmax) {
    set_threads(2);
    int      rows = 100, dim = 48, vocab = 1000; /* a full 96-row head chunk and a partial one */
    float   *h = frandv((size_t)rows * dim), *w = frandv((size_t)vocab * dim);
    float   *lp = malloc(rows * 4), *scratch = malloc(cpu_head_scratch_floats(dim, vocab) * 4);
    uint8_t *mx  = malloc(rows);
    int32_t *tgt = malloc(rows * 4), *am = malloc(rows * 4);
    double  *lg = malloc((size_t)vocab * 8);
    for (int r = 0; r < rows; r++)
        tgt[r] = (r * 7919) % vocab;
    float *wp = packed(w, vocab, dim);
    target_logprob_forward(lp, mx, scratch, h, wp, tgt, rows, dim, vocab);
    argmax_forward(am, scratch, h, wp, rows, dim, vocab);
    /* the portable path gives the same bits */
    float   *lp0 = malloc(rows * 4);
    uint8_t *mx0 = malloc(rows);
    cpu_gemm_set_isa(0);
    target_logprob_forward(lp0, mx0, scratch, h, wp, tgt, rows, dim, vocab);
    cpu_gemm_set_isa(-1);
    cr_assert(memcmp(lp0, lp, rows * 4) == 0 && memcmp(mx0, mx, rows) == 0);
    free(lp0), free(mx0);
    for (int r = 0; r < rows; r++) {
        double m = -1e300, s = 0;
        int    best = 0;
        for (int j = 0; j < vocab; j++) {
            lg[j] = 0;
            for (int e = 0; e < dim; e++)
                lg[j] += (double)h[r * dim + e] * w[j * dim + e];
            if (lg[j] > m)
                m = lg[j], best = j;
        }
        for (int j = 0; j < vocab; j++)
            s += exp(lg[j] - m);
        double want = lg[tgt[r]] - m - log(s);
        /* logits carry fp32 GEMM error (~dim * 2^-24 * |terms| ~ 1e-5 here) */
        cr_assert(fabs(lp[r] - want) < 2e-5, "row %d: %g vs %g", r, lp[r], want);
        cr_assert_eq(am[r], best, "argmax row %d", r);
        cr_assert_eq(mx[r], tgt[r] == best);
    }
    /* ties: identical head rows 3 and 9 give identical logits; the lowest index wins */
    float *w2 = calloc((size_t)16 * dim, 4);
    for (int e = 0; e < dim; e++)
        w2[3 * dim + e] = w2[9 * dim + e] = 1.0f;
    for (int e = 0; e < dim; e++)
        h[e] = 1.0f;
    int32_t t2[1] = {9};
    float  *w2p   = packed(w2, 16, dim);
    target_logprob_forward(lp, mx, scratch, h, w2p, t2, 1, dim, 16);
    argmax_forward(am, scratch, h, w2p, 1, dim, 16);
    cr_assert_eq(am[0], 3);
    cr_assert_eq(mx[0], 0, "a tied target that is not the first maximum is not the argmax");
    cr_assert(fabsf(lp[0] - logf(0.5f)) < 1e-6f);
    free(h), free(w), free(lp), free(scratch), free(mx), free(tgt), free(am), free(lg), free(w2);
    free(wp), free(w2p);
}

Test(kernels, embedding_gathers_rows_and_adds_positions) {
    float   table[4 * 3] = {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32};
    float   pos[2 * 3]   = {100, 200, 300, 400, 500, 600};
    int32_t ids[3] = {3, 0, 3}, p[3] = {0, 1, 1};
    float   out[9], *tp              = packed(table, 4, 3);
    embed_forward(out, tp, ids, 3, 3);
    free(tp);
    pos_embed_add(out, pos, p, 3, 3);
    float want[9] = {130, 231, 332, 400, 501, 602, 430, 531, 632};
    cr_assert(memcmp(out, want, sizeof want) == 0);
}

Test(backend, cpu_backend_fills_every_slot) {
    assay_error  err;
    backend_opts o  = {.n_threads = 2};
    backend     *be = backend_cpu_create(&o, &err);
    cr_assert(be, "%s", err.msg);
    const void *const *slots = (const void *const *)&be->ops->destroy;
    size_t             n = (sizeof(backend_ops) - offsetof(backend_ops, destroy)) / sizeof(void *);
    for (size_t i = 0; i < n; i++)
        cr_assert(slots[i] != NULL, "slot %zu is NULL", i);
    cr_assert_str_eq(be->ops->name, "cpu");
    cr_assert_eq(be->n_threads, 2);
    /* the CPU's types are f32 and its results batch invariant (kernels/cpu/ops.h contract) */
    cr_assert(be->caps.batch_invariant && be->caps.host_memory);
    cr_assert(be->caps.act_dtype == DTYPE_F32 && be->caps.kv_dtype == DTYPE_F32 &&
              be->caps.weight_dtype == DTYPE_F32);
    size_t free_b = 0, total_b = 0;
    cr_assert_eq(be->ops->mem_info(be, &free_b, &total_b), 0);
    cr_assert(free_b > 0 && total_b >= free_b, "MemAvailable %zu, MemTotal %zu", free_b, total_b);
    backend_free(be);
}

Test(kernels, vm_expf_is_within_two_ulp_and_simd_gives_the_same_bits) {
    float xs[4096];
    for (int i = 0; i < 4096; i++) /* the softmax domain: -90 .. 0, plus edges */
        xs[i] = -90.0f * (float)i / 4095.0f;
    xs[1] = -0.0f, xs[2] = -87.0f, xs[3] = -1e-30f;
    for (int i = 0; i < 4096; i++) {
        float  got  = vm_expf(xs[i]);
        double want = exp((double)xs[i]);
        if (xs[i] < VM_EXP_LO) {
            cr_assert(got == 0.0f, "flushes below the normal range");
            continue;
        }
        /* ulp of the result: 2^(exponent - 23) */
        double ulp = ldexp(1.0, ilogb(want) - 23);
        cr_assert(fabs(got - want) <= 2 * ulp, "exp(%a) = %a, want %a", xs[i], got, want);
    }
    cr_assert(vm_expf(NAN) != vm_expf(NAN) && vm_expf(-INFINITY) == 0.0f);
    if (cpu_gemm_isa() == 2)
        for (int i = 0; i < 4096; i += 16) {
            float got[16];
            vm_store_exp512(got, xs + i);
            for (int l = 0; l < 16; l++) {
                float want = vm_expf(xs[i + l]);
                cr_assert(memcmp(&got[l], &want, 4) == 0, "simd exp(%a)", xs[i + l]);
            }
        }
}

Test(kernels, vm_tanhf_is_within_two_ulp_and_every_form_gives_the_same_bits) {
    /* dense over [-12, 12] (past 9.01 tanh rounds to +-1) plus the branch edge and specials; an
     * exhaustive sweep of every 7th float in [0, 12] measured at most 1.31 ulp */
    enum { N = 1 << 18 };
    float *xs = malloc(N * sizeof *xs), *got = malloc(N * sizeof *got);
    for (int i = 0; i < N; i++)
        xs[i] = -12.0f + 24.0f * (float)i / (float)(N - 1);
    float edge[] = {0.0f,        -0.0f,         VM_TANH_SMALL, -VM_TANH_SMALL,
                    0.62499994f, 1e-30f,        -1e-40f,       INFINITY,
                    -INFINITY,   VM_TANH_CLAMP, 9.010913f,     1e-4f,
                    0.3f,        -2.5f,         88.0f,         NAN};
    memcpy(xs, edge, sizeof edge);
    for (int i = 0; i < N; i++) {
        float x = xs[i];
        got[i]  = vm_tanhf(x);
        if (x != x) {
            cr_assert(got[i] != got[i], "NaN stays NaN");
            continue;
        }
        double want = tanh((double)x);
        if (want == 0.0) {
            cr_assert(memcmp(&got[i], &x, 4) == 0, "tanh(%a) keeps the zero's sign", x);
            continue;
        }
        int    e   = ilogb(want) < -126 ? -126 : ilogb(want);
        double ulp = ldexp(1.0, e - 23);
        cr_assert(fabs(got[i] - want) <= 2 * ulp, "tanh(%a) = %a, want %a", x, got[i], want);
    }
    if (cpu_gemm_isa() >= 1)
        for (int i = 0; i < N; i += 16) {
            float v[16];
            if (cpu_gemm_isa() == 2) {
                vm_store_tanh512(v, xs + i);
                for (int l = 0; l < 16; l++)
                    cr_assert(memcmp(&v[l], &got[i + l], 4) == 0, "avx512 tanh(%a)", xs[i + l]);
            }
            vm_store_tanh256(v, xs + i);
            vm_store_tanh256(v + 8, xs + i + 8);
            for (int l = 0; l < 16; l++)
                cr_assert(memcmp(&v[l], &got[i + l], 4) == 0, "avx2 tanh(%a)", xs[i + l]);
        }
    free(xs), free(got);
}

Test(kernels, swiglu_gives_the_same_bits_on_every_isa) {
    int    rows = 3, ffn = 1000 + 13; /* a ragged tail on both vector widths */
    float *x = frandv((size_t)rows * 2 * ffn), *ref = malloc((size_t)rows * ffn * 4);
    float *o = malloc((size_t)rows * ffn * 4);
    for (size_t i = 0; i < (size_t)rows * 2 * ffn; i++)
        x[i] *= 100; /* past exp's range both ways */
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 88.5f, x[3] = -88.5f;
    int top = cpu_gemm_isa();
    cpu_gemm_set_isa(0);
    swiglu_forward(ref, x, rows, ffn);
    for (int isa = top; isa >= 1; isa--) {
        cpu_gemm_set_isa(isa);
        memset(o, 0, (size_t)rows * ffn * 4);
        swiglu_forward(o, x, rows, ffn);
        cr_assert(memcmp(o, ref, (size_t)rows * ffn * 4) == 0, "isa %d differs from portable", isa);
    }
    cpu_gemm_set_isa(-1);
    free(x), free(ref), free(o);
}

Test(kernels, gelu_new_gives_the_same_bits_on_every_isa) {
    size_t n = 3 * 4096 + 13; /* several tasks and a ragged tail */
    float *x = frandv(n), *ref = malloc(n * 4), *o = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        x[i] *= 8;
    int top = cpu_gemm_isa();
    cpu_gemm_set_isa(0);
    gelu_new_forward(ref, x, n);
    for (int isa = top; isa >= 1; isa--) {
        cpu_gemm_set_isa(isa);
        memset(o, 0, n * 4);
        gelu_new_forward(o, x, n);
        cr_assert(memcmp(o, ref, n * 4) == 0, "isa %d differs from portable", isa);
    }
    cpu_gemm_set_isa(-1);
    free(x), free(ref), free(o);
}

Test(kernels, matmul_gelu_is_bitwise_matmul_then_gelu) {
    /* rows across several row blocks and a ragged panel; k over two k passes */
    int    rows = 37, in = 300, out_dim = 70;
    float *x = frandv((size_t)rows * in), *w = frandv((size_t)out_dim * in), *b = frandv(out_dim);
    float *wp = malloc(gemm_packed_floats(out_dim, in) * 4);
    float *s  = malloc(cpu_matmul_scratch_floats(rows, in) * 4);
    float *r1 = malloc((size_t)rows * out_dim * 4), *r2 = malloc((size_t)rows * out_dim * 4);
    gemm_pack(wp, w, out_dim, in);
    int top = cpu_gemm_isa();
    for (int isa = top; isa >= 0; isa--) {
        cpu_gemm_set_isa(isa);
        matmul_forward(r1, s, x, wp, b, rows, in, out_dim);
        gelu_new_forward(r1, r1, (size_t)rows * out_dim);
        matmul_gelu_forward(r2, s, x, wp, b, rows, in, out_dim);
        cr_assert(memcmp(r1, r2, (size_t)rows * out_dim * 4) == 0, "isa %d", isa);
    }
    cpu_gemm_set_isa(-1);
    free(x), free(w), free(b), free(wp), free(s), free(r1), free(r2);
}

Test(kernels, attention_simd_and_portable_agree_bitwise_for_wide_and_ragged_heads) {
    /* head_dim 24 (a masked tail chunk) and 64 (GPT-2, Llama), keys in blocks of 16 plus a
     * ragged rest, with and without a window that moves the first key off a block edge */
    int hds[] = {24, 64};
    for (int h = 0; h < 2; h++)
        for (int window = 0; window <= 21; window += 21) {
            int    nh = 2, nkv = 1, hd = hds[h], qkv = (nh + 2 * nkv) * hd;
            int    cu[] = {0, 70, 75};
            int    T    = cu[2];
            float *qkvb = frandv((size_t)T * qkv);
            for (size_t i = 0; i < (size_t)T * qkv; i++)
                qkvb[i] *= 3; /* peaked softmaxes too */
            float *a = malloc((size_t)T * nh * hd * 4), *b = malloc((size_t)T * nh * hd * 4);
            float *k = qkvb + nh * hd, *v = k + nkv * hd;
            cr_assert(
                attention_varlen_forward(a, qkvb, k, v, cu, 2, nh, nkv, hd, qkv, qkv, window) == 0);
            cpu_gemm_set_isa(0);
            cr_assert(
                attention_varlen_forward(b, qkvb, k, v, cu, 2, nh, nkv, hd, qkv, qkv, window) == 0);
            cpu_gemm_set_isa(-1);
            cr_assert(memcmp(a, b, (size_t)T * nh * hd * 4) == 0, "head_dim %d window %d", hd,
                      window);
            free(qkvb), free(a), free(b);
        }
}
