/* runtime/backend_cpu.c — the backend interface over kernels/cpu. Memory is host memory; the state
 * is a growing GEMM scratch buffer, the current batch's index arrays (copied: the caller's are
 * read during set_batch only) and the last LM head's request. Linear weights are stored packed
 * (kernels/cpu/ops.h). Every op composes the kernels the model called before the backend
 * interface had fused ops, in the same order, so results keep their bits. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"

/* ASSAY_CPU_PROFILE=1: wall time per op kind, printed to stderr when the backend is destroyed
 * (clock_gettime around each op: the ops are synchronous on the CPU). */
enum {
    PROF_EMBED,
    PROF_NORM,
    PROF_MATMUL,
    PROF_SWIGLU,
    PROF_ROPE_KV,
    PROF_ATTN,
    PROF_HEAD,
    PROF_N
};
static const char *const prof_names[PROF_N] = {"embed",   "add_norm",  "matmul", "swiglu",
                                               "rope_kv", "attention", "lm_head"};

typedef struct cpu_impl {
    int      profile;
    double   prof_s[PROF_N];
    long     prof_calls[PROF_N];
    cpu_wfmt wfmt; /* linear weights and embedding tables */
    float   *scratch;
    size_t   scratch_floats;
    /* the current batch (be_batch's arrays, copied) */
    int32_t *idx;     /* one allocation for the arrays below */
    size_t   idx_cap; /* int32 elements */
    int32_t *ids, *pos, *q_off, *start, *bt, *sel, *tgt;
    int      n_tokens, n_seqs, max_blocks, block_tokens, n_sel, has_bt, has_tgt;
    /* the last lm_head: computed at fetch (the results then go straight to the caller) */
    const float *head_h, *head_w;
    int          head_dim, head_vocab, head_set;
    be_head_mode head_mode;
} cpu_impl;

static double prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#define PROF_BEGIN(c) double prof_t0_ = (c)->profile ? prof_now() : 0.0
#define PROF_END(c, kind)                                                                          \
    do {                                                                                           \
        if ((c)->profile) {                                                                        \
            (c)->prof_s[kind] += prof_now() - prof_t0_;                                            \
            (c)->prof_calls[kind]++;                                                               \
        }                                                                                          \
    } while (0)

static int cpu_scratch(backend *be, size_t need, float **s) {
    cpu_impl *c = be->impl;
    if (need > c->scratch_floats) {
        float *n = NULL;
        if (posix_memalign((void **)&n, 64, need * sizeof(float)) != 0)
            return assay_fail(&be->last_error, ASSAY_ENOMEM,
                              "cpu backend: cannot allocate %zu bytes of GEMM scratch",
                              need * sizeof(float));
        free(c->scratch);
        c->scratch        = n;
        c->scratch_floats = need;
    }
    *s = c->scratch;
    return 0;
}

/* ---- lifecycle and queries ---------------------------------------------------------------- */

static void cpu_destroy(backend *be) {
    if (!be)
        return;
    cpu_impl *c = be->impl;
    if (c && c->profile) {
        double total = 0;
        for (int i = 0; i < PROF_N; i++)
            total += c->prof_s[i];
        for (int i = 0; i < PROF_N; i++)
            fprintf(stderr, "cpu profile: %-9s %8.3f s %5.1f%% %8ld calls %8.1f us/call\n",
                    prof_names[i], c->prof_s[i], total > 0 ? 100 * c->prof_s[i] / total : 0.0,
                    c->prof_calls[i],
                    c->prof_calls[i] ? 1e6 * c->prof_s[i] / (double)c->prof_calls[i] : 0.0);
    }
    if (c) {
        free(c->scratch);
        free(c->idx);
        free(c);
    }
    free(be);
}

/* MemAvailable / MemTotal from /proc/meminfo: what the kernel says a new allocation can get
 * without swapping. 0 when unknown (the caller then has no budget to check against). */
static int cpu_mem_info(backend *be, size_t *free_bytes, size_t *total_bytes) {
    (void)be;
    unsigned long long avail = 0, total = 0, kb;
    FILE              *f = fopen("/proc/meminfo", "r");
    char               line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            avail = kb;
        else if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            total = kb;
    }
    if (f)
        fclose(f);
    if (free_bytes)
        *free_bytes = (size_t)avail * 1024;
    if (total_bytes)
        *total_bytes = (size_t)total * 1024;
    return 0;
}

static size_t cpu_scratch_bytes(backend *be, int max_rows, int max_in, int dim, int vocab) {
    (void)be;
    size_t mm   = cpu_matmul_scratch_floats(max_rows, max_in),
           head = cpu_head_scratch_floats(dim, vocab);
    /* the batch's index arrays: ids, pos, sel, targets per row, offsets and starts per sequence
     * (a sequence has at least one row); block tables are extra and small */
    return (mm > head ? mm : head) * sizeof(float) + (size_t)max_rows * 7 * sizeof(int32_t);
}

static void cpu_set_threads(backend *be, int n_threads) {
    if (n_threads > 0)
        omp_set_num_threads(n_threads);
    else
        n_threads = omp_get_max_threads(); /* OMP_NUM_THREADS, or all cores */
    if (be)
        be->n_threads = n_threads;
}

/* ---- memory ------------------------------------------------------------------------------- */

static int cpu_alloc(backend *be, void **ptr, size_t bytes) {
    *ptr = NULL;
    if (posix_memalign(ptr, 64, bytes ? bytes : 1) != 0) {
        *ptr = NULL;
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: cannot allocate %zu bytes",
                          bytes);
    }
    return 0;
}
static void cpu_release(backend *be, void *ptr) {
    (void)be;
    free(ptr);
}
static int cpu_memcpy(backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}
static int cpu_sync(backend *be) {
    (void)be;
    return 0;
}
static size_t cpu_weight_bytes(backend *be, int rows, int cols) {
    return gemm_packed_bytes(((cpu_impl *)be->impl)->wfmt, rows, cols);
}
static int cpu_upload_weight(backend *be, void *dst, const float *w, int rows, int cols) {
    gemm_pack_fmt(dst, ((cpu_impl *)be->impl)->wfmt, w, rows, cols);
    return 0;
}
static int cpu_upload_weight_q8_0(backend *be, void *dst, const void *blocks, int rows, int cols) {
    if (((cpu_impl *)be->impl)->wfmt != CPU_W_Q8_0 || cols % 32 != 0)
        return assay_fail(&be->last_error, ASSAY_EINTERNAL,
                          "cpu backend: Q8_0 blocks for a (%d, %d) weight, but the weights are "
                          "not Q8_0 or %d is not a multiple of 32",
                          rows, cols, cols);
    gemm_pack_q8_0(dst, blocks, rows, cols);
    return 0;
}

/* ---- the pass ----------------------------------------------------------------------------- */

static int cpu_set_batch(backend *be, const be_batch *b) {
    cpu_impl *c = be->impl;
    if (b->n_tokens < 0 || b->n_seqs < 0 || b->n_sel < 0 || (b->block_table && b->max_blocks < 0))
        return assay_fail(&be->last_error, ASSAY_EINTERNAL,
                          "cpu backend: set_batch: bad sizes (%d tokens, %d sequences, %d "
                          "selected)",
                          b->n_tokens, b->n_seqs, b->n_sel);
    size_t T = (size_t)b->n_tokens, S = (size_t)b->n_seqs, N = (size_t)b->n_sel;
    size_t bt   = b->block_table ? S * (size_t)b->max_blocks : 0;
    size_t need = 2 * T + (S + 1) + S + bt + 2 * N + 1;
    if (need > c->idx_cap) {
        int32_t *n = realloc(c->idx, need * sizeof(int32_t));
        if (!n)
            return assay_fail(&be->last_error, ASSAY_ENOMEM,
                              "cpu backend: no memory for the batch tables (%zu bytes)",
                              need * sizeof(int32_t));
        c->idx     = n;
        c->idx_cap = need;
    }
    int32_t *p = c->idx;
#define TAKE(dst, src, n)                                                                          \
    do {                                                                                           \
        (dst) = p;                                                                                 \
        if ((n) && (src))                                                                          \
            memcpy(p, (src), (n) * sizeof(int32_t));                                               \
        p += (n);                                                                                  \
    } while (0)
    TAKE(c->ids, b->ids, T);
    TAKE(c->pos, b->pos, T);
    TAKE(c->q_off, b->q_off, S + 1);
    TAKE(c->start, b->start_pos, S);
    TAKE(c->bt, b->block_table, bt);
    TAKE(c->sel, b->sel, N);
    TAKE(c->tgt, b->targets, N);
#undef TAKE
    c->n_tokens     = b->n_tokens;
    c->n_seqs       = b->n_seqs;
    c->max_blocks   = b->max_blocks;
    c->block_tokens = b->block_tokens;
    c->n_sel        = b->n_sel;
    c->has_bt       = b->block_table != NULL;
    c->has_tgt      = b->targets != NULL;
    c->head_set     = 0;
    return 0;
}

static int cpu_embed(backend *be, float *x, const void *table, const float *pos_table, int dim) {
    cpu_impl *c = be->impl;
    PROF_BEGIN(c);
    embed_forward_fmt(x, table, c->wfmt, c->ids, c->n_tokens, dim);
    if (pos_table)
        pos_embed_add(x, pos_table, c->pos, c->n_tokens, dim);
    PROF_END(c, PROF_EMBED);
    return 0;
}

static int cpu_add_norm(backend *be, float *x, void *xn, const void *delta, const float *w,
                        const float *b, be_norm kind, int rows, int dim, float eps) {
    cpu_impl *c = be->impl;
    PROF_BEGIN(c);
    if (delta)
        add_forward(x, x, delta, (size_t)rows * dim);
    if (kind == BE_NORM_RMS)
        rmsnorm_forward(xn, x, w, rows, dim, eps);
    else
        layernorm_forward(xn, x, w, b, rows, dim, eps);
    PROF_END(c, PROF_NORM);
    return 0;
}

static int cpu_matmul(backend *be, void *out, const void *x, const void *w, const float *bias,
                      int rows, int in, int out_dim, be_epilogue epi) {
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_matmul_scratch_floats(rows, in), &s);
    if (rc)
        return rc;
    cpu_impl *c = be->impl;
    PROF_BEGIN(c);
    matmul_forward_fmt(out, s, x, w, c->wfmt, bias, rows, in, out_dim, epi == BE_EPI_GELU_NEW);
    PROF_END(c, PROF_MATMUL);
    return 0;
}

static int cpu_swiglu(backend *be, void *out, const void *gate_up, int rows, int ffn) {
    cpu_impl *c = be->impl;
    PROF_BEGIN(c);
    swiglu_forward(out, gate_up, rows, ffn);
    PROF_END(c, PROF_SWIGLU);
    return 0;
}

static int cpu_rope_kv(backend *be, void *qkv, void *k_pool, void *v_pool, const float *inv_freq,
                       int n_heads, int n_kv_heads, int head_dim) {
    cpu_impl *c     = be->impl;
    int       q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
    int       stride = q_dim + 2 * kv_dim;
    float    *q = qkv, *k = q + q_dim, *v = k + kv_dim;
    PROF_BEGIN(c);
    if (inv_freq) {
        /* k's heads follow q's in each row: one pass, each position's cos/sin computed once */
        rope_forward(q, c->pos, inv_freq, c->n_tokens, n_heads + n_kv_heads, head_dim, stride);
    }
    if (c->has_bt)
        kv_store_forward(k_pool, v_pool, k, v, stride, kv_dim, c->bt, c->max_blocks,
                         c->block_tokens, c->q_off, c->start, c->n_seqs);
    PROF_END(c, PROF_ROPE_KV);
    return 0;
}

static int cpu_attention(backend *be, void *out, const void *qkv, const void *k_pool,
                         const void *v_pool, int n_heads, int n_kv_heads, int head_dim,
                         int window) {
    cpu_impl    *c     = be->impl;
    int          q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
    int          stride = q_dim + 2 * kv_dim, rc;
    const float *q = qkv, *k = q + q_dim, *v = k + kv_dim;
    PROF_BEGIN(c);
    if (c->has_bt)
        rc = attention_paged_forward(out, q, k_pool, v_pool, c->bt, c->max_blocks, c->block_tokens,
                                     c->q_off, c->start, c->n_seqs, n_heads, n_kv_heads, head_dim,
                                     stride, window);
    else
        rc = attention_varlen_forward(out, q, k, v, c->q_off, c->n_seqs, n_heads, n_kv_heads,
                                      head_dim, stride, stride, window);
    PROF_END(c, PROF_ATTN);
    if (rc != 0)
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: attention scratch");
    return 0;
}

static int cpu_gather(backend *be, float *out, const float *x, int dim) {
    cpu_impl *c = be->impl;
    for (int i = 0; i < c->n_sel; i++)
        memcpy(out + (size_t)i * dim, x + (size_t)c->sel[i] * dim, (size_t)dim * sizeof(float));
    return 0;
}

static int cpu_lm_head(backend *be, const void *h, const void *w_head, int dim, int vocab,
                       be_head_mode mode) {
    cpu_impl *c = be->impl;
    if (mode == BE_HEAD_LOGPROB && !c->has_tgt && c->n_sel > 0)
        return assay_fail(&be->last_error, ASSAY_EINTERNAL,
                          "cpu backend: lm_head: log-probs asked for a batch without targets");
    c->head_h     = h;
    c->head_w     = w_head;
    c->head_dim   = dim;
    c->head_vocab = vocab;
    c->head_mode  = mode;
    c->head_set   = 1;
    return 0;
}

#define CPU_HEAD_ROWS 96 /* rows of logits at a time, as the kernels' LM head */

/* Log-probs and the argmax in one pass: logits through matmul_forward (the GEMM contract gives
 * the head kernels' bits), then one row_stats per row. Used when a caller wants both (greedy
 * decoding checks its logits are finite through the log-prob). */
static int cpu_head_both(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax) {
    cpu_impl *c   = be->impl;
    int       dim = c->head_dim, vocab = c->head_vocab, rows = c->n_sel;
    size_t    mm = cpu_matmul_scratch_floats(CPU_HEAD_ROWS, dim);
    float    *s  = NULL;
    int       rc = cpu_scratch(be, mm + (size_t)CPU_HEAD_ROWS * vocab, &s);
    if (rc)
        return rc;
    float *logits = s + mm;
    for (int r0 = 0; r0 < rows; r0 += CPU_HEAD_ROWS) {
        int n = rows - r0 < CPU_HEAD_ROWS ? rows - r0 : CPU_HEAD_ROWS;
        matmul_forward_fmt(logits, s, c->head_h + (size_t)r0 * dim, c->head_w, c->wfmt, NULL, n,
                           dim, vocab, 0);
#pragma omp parallel for schedule(static) if (n > 1 && (size_t)n * vocab * 8 >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * vocab;
            float        mx;
            int          am;
            double       sum;
            logits_row_stats(l, vocab, &am, &mx, &sum);
            if (argmax)
                argmax[r0 + i] = am;
            if (c->has_tgt) {
                int32_t t = c->tgt[r0 + i];
                if (logprob)
                    logprob[r0 + i] = (float)(((double)l[t] - (double)mx) - log(sum));
                if (is_max)
                    is_max[r0 + i] = (uint8_t)(am == t);
            }
        }
    }
    return 0;
}

static int cpu_fetch_head(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax);

static int cpu_fetch(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax) {
    cpu_impl *c = be->impl;
    PROF_BEGIN(c);
    int rc = cpu_fetch_head(be, logprob, is_max, argmax);
    PROF_END(c, PROF_HEAD);
    return rc;
}

static int cpu_fetch_head(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax) {
    cpu_impl *c = be->impl;
    if (!c->head_set)
        return assay_fail(&be->last_error, ASSAY_EINTERNAL, "cpu backend: fetch before lm_head");
    if (c->n_sel == 0)
        return 0;
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_head_scratch_floats(c->head_dim, c->head_vocab), &s);
    if (rc)
        return rc;
    int want_lp = (logprob || is_max) && c->head_mode == BE_HEAD_LOGPROB;
    if (want_lp && argmax)
        return cpu_head_both(be, logprob, is_max, argmax);
    if (want_lp) {
        /* the scoring path: the kernel's fused head, and only the outputs asked for */
        float   *lp     = logprob;
        uint8_t *im     = is_max;
        float   *lp_tmp = NULL;
        uint8_t *im_tmp = NULL;
        if (!lp)
            lp = lp_tmp = malloc((size_t)c->n_sel * sizeof(float));
        if (!im)
            im = im_tmp = malloc((size_t)c->n_sel);
        if (!lp || !im) {
            free(lp_tmp);
            free(im_tmp);
            return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: fetch: out of memory");
        }
        target_logprob_forward_fmt(lp, im, s, c->head_h, c->head_w, c->wfmt, c->tgt, c->n_sel,
                                   c->head_dim, c->head_vocab);
        free(lp_tmp);
        free(im_tmp);
        return 0;
    }
    if (argmax)
        argmax_forward_fmt(argmax, s, c->head_h, c->head_w, c->wfmt, c->n_sel, c->head_dim,
                           c->head_vocab);
    return 0;
}

static int cpu_kv_block_copy(backend *be, void *k_pool, void *v_pool, int n_layers,
                             size_t layer_bytes, size_t block_bytes, int dst, int src) {
    (void)be;
    for (int l = 0; l < n_layers; l++) {
        char *k = (char *)k_pool + (size_t)l * layer_bytes, *v = (char *)v_pool + l * layer_bytes;
        memmove(k + (size_t)dst * block_bytes, k + (size_t)src * block_bytes, block_bytes);
        memmove(v + (size_t)dst * block_bytes, v + (size_t)src * block_bytes, block_bytes);
    }
    return 0;
}

static const backend_ops cpu_ops = {
    .name               = "cpu",
    .destroy            = cpu_destroy,
    .mem_info           = cpu_mem_info,
    .scratch_bytes      = cpu_scratch_bytes,
    .set_threads        = cpu_set_threads,
    .alloc              = cpu_alloc,
    .release            = cpu_release,
    .upload             = cpu_memcpy,
    .download           = cpu_memcpy,
    .copy               = cpu_memcpy,
    .sync               = cpu_sync,
    .weight_bytes       = cpu_weight_bytes,
    .upload_weight      = cpu_upload_weight,
    .upload_weight_q8_0 = cpu_upload_weight_q8_0,
    .set_batch          = cpu_set_batch,
    .embed              = cpu_embed,
    .add_norm           = cpu_add_norm,
    .matmul             = cpu_matmul,
    .swiglu             = cpu_swiglu,
    .rope_kv            = cpu_rope_kv,
    .attention          = cpu_attention,
    .gather             = cpu_gather,
    .lm_head            = cpu_lm_head,
    .fetch              = cpu_fetch,
    .kv_block_copy      = cpu_kv_block_copy,
};

backend *backend_cpu_create(const backend_opts *opts, assay_error *err) {
    backend  *be = calloc(1, sizeof *be);
    cpu_impl *c  = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        assay_fail(err, ASSAY_ENOMEM, "cpu backend: out of memory");
        return NULL;
    }
    const char *prof = getenv("ASSAY_CPU_PROFILE");
    c->profile       = prof && *prof && strcmp(prof, "0") != 0;
    be->ops          = &cpu_ops;
    be->impl         = c;
    be_weights wf    = opts ? opts->weights : BE_WEIGHTS_NATIVE;
    c->wfmt = wf == BE_WEIGHTS_BF16 ? CPU_W_BF16 : wf == BE_WEIGHTS_Q8_0 ? CPU_W_Q8_0 : CPU_W_F32;
    /* fp32 activations and fixed reduction orders over weights that decode to exact f32 values
     * (kernels/cpu/ops.h): batch invariant, with or without opts->fast */
    be->caps = (backend_caps){.batch_invariant = 1,
                              .host_memory     = 1,
                              .weight_dtype    = c->wfmt == CPU_W_BF16   ? DTYPE_BF16
                                                 : c->wfmt == CPU_W_Q8_0 ? DTYPE_I8
                                                                         : DTYPE_F32,
                              .act_dtype       = DTYPE_F32,
                              .kv_dtype        = DTYPE_F32,
                              .weight_format   = wf == BE_WEIGHTS_NATIVE ? BE_WEIGHTS_F32 : wf};
    cpu_set_threads(be, opts ? opts->n_threads : 0);
    return be;
}
