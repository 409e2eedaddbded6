/* runtime/model.c — weights, the forward pass over a packed ragged batch, and the scoring and
 * generation loops on top of it. Model code talks to the device only through backend_ops, with
 * one code path for every backend: element types come from the backend's caps, index data goes
 * over once per pass (set_batch), results come back once per pass (fetch). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/rope.h"
#include "core/util.h"
#include "loader/arch.h"
#include "loader/gguf.h"
#include "loader/modeldir.h"
#include "loader/safetensors.h"
#include "runtime/backend.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"

#define WEIGHT_ALIGN                                                                               \
    64 /* bytes: every tensor starts on a cache line (and a GPU's 16-byte rule)                    \
        */

typedef struct layer_weights {
    float *attn_norm_w, *attn_norm_b; /* (dim) f32 */
    void  *wqkv;                      /* (q_dim + 2 kv_dim, dim), rows q | k | v; weight layout */
    float *bqkv;                      /* f32 */
    void  *wo;                        /* (dim, q_dim) */
    float *bo;
    float *ffn_norm_w, *ffn_norm_b; /* (dim) */
    void  *w_up;                    /* SwiGLU: (2 ffn, dim) rows gate | up; GELU: (ffn, dim) */
    float *b_up;
    void  *w_down; /* (dim, ffn) */
    float *b_down;
} layer_weights;

struct model {
    model_config   cfg;
    char           dir[1024];
    backend       *be;
    char           device[32]; /* "cpu", "cuda:0" */
    char          *arena;      /* all weights, backend memory */
    size_t         arena_bytes, arena_used;
    void          *tok_emb, *head; /* weight layout */
    float         *pos_emb, *final_w, *final_b, *inv_freq;
    layer_weights *layers;
    int            q_dim, kv_dim, qkv_dim, up_dim, max_T;
    size_t         act_bytes; /* bytes per activation element (caps.act_dtype) */
    /* workspace, backend memory, max_T rows each: x and hsel f32 (the residual stream), the rest
     * in the activation dtype */
    float *x, *hsel;
    void  *xn, *qkv, *att, *up, *act, *proj, *h;
    /* host workspace: the batch's index data */
    int32_t *ids, *pos, *q_off, *start, *sel, *sel_tgt, *sel_id, *sel_am, *bt;
    size_t   bt_cap;
    float   *sel_lp;
    uint8_t *sel_gr;
    kv_cache kv;
    size_t   mem_bytes;
    /* while loading from a GGUF file (model_load of a .gguf path): names are llama.cpp's, q and
     * k rows are in its RoPE order, and Q8_0 blocks reach a Q8_0 backend as they are */
    gguf_file *gg;
};

/* ---- memory plan ------------------------------------------------------------------------- */

#define MIB(b) ((double)(b) / (1024.0 * 1024.0))

static size_t align_up(size_t n) { return (n + WEIGHT_ALIGN - 1) / WEIGHT_ALIGN * WEIGHT_ALIGN; }

/* Bytes of a linear weight (rows, cols) in the backend's layout (the CPU packs panels). */
static size_t linear_bytes(backend *be, size_t rows, size_t cols) {
    return align_up(be->ops->weight_bytes(be, (int)rows, (int)cols));
}
static size_t f32_bytes(size_t n) { return align_up(n * sizeof(float)); }

static size_t weights_bytes(const model_config *c, backend *be) {
    size_t D = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t QKV = Q + 2 * KV, norms = (c->norm == NORM_LAYER ? 2 : 1) * f32_bytes(D);
    size_t per = 2 * norms + linear_bytes(be, QKV, D) + (c->qkv_bias ? f32_bytes(QKV) : 0) +
                 linear_bytes(be, D, Q) + (c->mlp_bias ? f32_bytes(D) : 0) + linear_bytes(be, D, F);
    if (c->act == ACT_SILU)
        per += linear_bytes(be, 2 * F, D);
    else
        per += linear_bytes(be, F, D) + (c->mlp_bias ? f32_bytes(F) + f32_bytes(D) : 0);
    size_t emb = linear_bytes(be, V, D);
    return emb + (c->learned_pos ? f32_bytes((size_t)c->max_pos * D) : 0) + norms +
           (c->tie_embeddings ? 0 : emb) + (size_t)c->n_layers * per +
           f32_bytes((size_t)c->head_dim / 2 + 1);
}

/* Workspace bytes per batch token: x and hsel f32; xn, qkv, att, up, act, proj, h in the
 * activation dtype. */
static size_t workspace_bytes_per_token(const model_config *c, size_t act_bytes) {
    size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t up = c->act == ACT_SILU ? 2 * F : F;
    return 2 * D * sizeof(float) + (D + (Q + 2 * KV) + Q + up + F + D + D) * act_bytes;
}

int model_plan_memory(model_mem_plan *plan, const model_mem_need *n, const char *what,
                      assay_error *err) {
    memset(plan, 0, sizeof *plan);
    size_t budget = n->mem_budget;
    if (!budget && n->mem_free) {
        double f = n->fraction > 0 && n->fraction <= 1 ? n->fraction : 1.0;
        budget   = (size_t)((double)n->mem_free * f);
    }
    size_t fixed  = n->weights + n->workspace + n->scratch;
    int    kv_min = n->batch_tokens + n->block_tokens;
    int    want   = 4 * n->batch_tokens > 8192 ? 4 * n->batch_tokens : 8192;
    size_t per    = n->kv_per_token;
    plan->budget  = budget;
    plan->fixed   = fixed;
    if (budget && fixed + (size_t)kv_min * per > budget) {
        /* what would fit: the batch budget that leaves room for its own KV minimum */
        long fit =
            budget > fixed ? (long)((budget - fixed) / (per ? per : 1)) - n->block_tokens : -1;
        return assay_fail(err, ASSAY_ENOMEM,
                          "%s: needs %.1f MiB (weights %.1f + workspace %.1f + scratch %.1f + KV "
                          "cache %.1f for %d tokens) but the memory budget is %.1f MiB%s",
                          what, MIB(fixed + (size_t)kv_min * per), MIB(n->weights),
                          MIB(n->workspace), MIB(n->scratch), MIB((size_t)kv_min * per), kv_min,
                          MIB(budget),
                          budget > fixed && fit > 0 ? " (the weights and workspace fit; a smaller "
                                                      "batch or KV cache might)"
                          : budget > n->weights     ? " (the weights alone fit)"
                                                    : " (the weights alone do not fit)");
    }
    if (budget && n->kv_tokens > 0 && fixed + (size_t)n->kv_tokens * per > budget) {
        long fit = (long)((budget - fixed) / (per ? per : 1));
        return assay_fail(err, ASSAY_ENOMEM,
                          "%s: needs %.1f MiB (weights %.1f + workspace %.1f + scratch %.1f + KV "
                          "cache %.1f for the requested %d tokens) but the memory budget is %.1f "
                          "MiB: a KV cache of %ld tokens would fit",
                          what, MIB(fixed + (size_t)n->kv_tokens * per), MIB(n->weights),
                          MIB(n->workspace), MIB(n->scratch), MIB((size_t)n->kv_tokens * per),
                          n->kv_tokens, MIB(budget), fit);
    }
    long kv_tokens = n->kv_tokens > 0 ? n->kv_tokens : want;
    if (n->kv_tokens <= 0 && budget && fixed + (size_t)want * per > budget)
        kv_tokens = (long)((budget - fixed) / (per ? per : 1));
    if (kv_tokens < kv_min)
        kv_tokens = kv_min;
    if (kv_tokens > INT32_MAX / 2)
        kv_tokens = INT32_MAX / 2;
    plan->kv_tokens = (int)kv_tokens;
    return 0;
}

/* ---- weights ----------------------------------------------------------------------------- */

static void *take(model *m, size_t bytes) {
    size_t at = m->arena_used;
    m->arena_used += align_up(bytes);
    if (m->arena_used > m->arena_bytes)
        return NULL;
    return m->arena + at;
}

/* Drops the whole pages of a converted tensor from the checkpoint mapping. Without it the load
 * holds the mapped file and the converted (packed) copy at once: peak RSS twice the weights.
 * st_model_open maps every shard PROT_READ, MAP_PRIVATE and nothing writes it, so the pages are
 * clean file pages: the kernel only unmaps them, and a later read of the same tensor (a tied
 * head read again) faults them back in from the page cache with the same bytes. Partial pages
 * at the tensor's ends stay (a neighbour may still need them). Advisory: failure is harmless. */
static void release_mapped(const void *data, size_t nbytes) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || nbytes == 0)
        return;
    uintptr_t lo = ((uintptr_t)data + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
    uintptr_t hi = ((uintptr_t)data + nbytes) / (uintptr_t)pg * (uintptr_t)pg;
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* host (rows, cols) = tensor `name` as f32. transpose: the checkpoint holds (cols, rows) — GPT-2
 * Conv1D. */
/* Inverse of llama.cpp's HF -> GGUF RoPE permutation of q (n_head = heads) or k (kv heads) rows:
 * GGUF row h*hd + 2*j + a holds HF row h*hd + a*hd/2 + j. `row_bytes` per row. */
static void gguf_unpermute(void *dst, const void *src, size_t rows, size_t row_bytes, int n_head) {
    size_t hd = rows / (size_t)n_head, half = hd / 2;
    for (size_t h = 0; h < (size_t)n_head; h++)
        for (size_t j = 0; j < half; j++)
            for (size_t a = 0; a < 2; a++)
                memcpy((char *)dst + (h * hd + a * half + j) * row_bytes,
                       (const char *)src + (h * hd + 2 * j + a) * row_bytes, row_bytes);
}

/* host (rows, cols) = GGUF tensor `name` dequantized, rows back in HF order (permute: 1 q, 2 k). */
static int read_gguf_tensor(model *m, const char *name, int permute, float *host, size_t rows,
                            size_t cols, assay_error *err) {
    const gguf_tensor *t = gguf_find_tensor(m->gg, name);
    if (!t)
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is missing", m->dir, name);
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->ne[d];
    if ((size_t)n != rows * cols || (cols > 1 && (size_t)t->ne[0] != cols))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' has %lld elements (rows of %lld), expected (%zu, %zu)",
                          m->dir, name, (long long)n, (long long)t->ne[0], rows, cols);
    float *tmp = permute ? malloc(rows * cols * sizeof(float)) : host;
    if (!tmp)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to convert '%s'", m->dir, name);
    if (gguf_dequantize(tmp, t->data, t->type, n) != 0) {
        if (tmp != host)
            free(tmp);
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: tensor '%s' has type %s, expected one of "
                          "F32, F16, BF16, Q8_0, Q4_0, Q4_1",
                          m->dir, name, ggml_type_name(t->type));
    }
    release_mapped(t->data, t->nbytes);
    if (permute) {
        gguf_unpermute(host, tmp, rows, cols * sizeof(float),
                       permute == 1 ? m->cfg.n_heads : m->cfg.n_kv_heads);
        free(tmp);
    }
    return 0;
}

static int read_tensor(model *m, const st_model *sm, const char *name, float *host, size_t rows,
                       size_t cols, int transpose, assay_error *err) {
    if (m->gg)
        return read_gguf_tensor(m, name, 0, host, rows, cols, err);
    const st_tensor *t = st_model_find(sm, name);
    if (!t)
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is missing", m->dir, name);
    if (t->n_elements != rows * cols)
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' has %zu elements, expected %zu",
                          m->dir, name, t->n_elements, rows * cols);
    if (!dtype_is_weight(t->dtype))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: tensor '%s' has dtype %s, expected one of "
                          "F32, F16, BF16",
                          m->dir, name, dtype_name(t->dtype));
    if (!transpose) {
        dtype_to_f32(host, t->data, t->dtype, t->n_elements);
        release_mapped(t->data, t->nbytes);
        return 0;
    }
    float *tmp = malloc(t->n_elements * sizeof(float));
    if (!tmp)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to convert '%s'", m->dir, name);
    dtype_to_f32(tmp, t->data, t->dtype, t->n_elements);
    release_mapped(t->data, t->nbytes);
    /* 32 x 32 tiles: a plain loop strides a whole row of tmp per element (slow for big weights) */
    for (size_t r0 = 0; r0 < rows; r0 += 32)
        for (size_t c0 = 0; c0 < cols; c0 += 32) {
            size_t r1 = r0 + 32 < rows ? r0 + 32 : rows, c1 = c0 + 32 < cols ? c0 + 32 : cols;
            for (size_t r = r0; r < r1; r++)
                for (size_t c = c0; c < c1; c++)
                    host[r * cols + c] = tmp[c * rows + r];
        }
    free(tmp);
    return 0;
}

/* A plain f32 array (norm weight, bias, position table) into backend memory dst, through one
 * host buffer (a backend's memory may not be host memory). */
static int load_tensor(model *m, const st_model *sm, const char *name, float *dst, size_t rows,
                       size_t cols, assay_error *err) {
    float *host = malloc(rows * cols * sizeof(float) + 1);
    if (!host)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to convert '%s'", m->dir, name);
    int rc = read_tensor(m, sm, name, host, rows, cols, 0, err);
    if (!rc && (rc = m->be->ops->upload(m->be, dst, host, rows * cols * sizeof(float))) != 0)
        assay_fail(err, rc, "%s: uploading '%s': %s", m->dir, name, m->be->last_error.msg);
    free(host);
    return rc;
}

/* A linear weight (sum of rows, cols) stacked from n tensors (rows[i], cols) — q|k|v or
 * gate|up — stored in the backend's weight layout at dst. */
/* GGUF Q8_0 tensors stacked into one weight for a Q8_0 backend, blocks copied as they are (no
 * round trip through f32). 1 when done, 0 when a tensor is not Q8_0 (the caller converts), or an
 * error. */
static int load_gguf_q8_0(model *m, void *dst, const char *const *names, const int *permute,
                          const size_t *rows, int n, size_t total, size_t cols, assay_error *err) {
    const gguf_tensor *t[3];
    size_t             row_bytes = cols / 32 * 34;
    if (m->be->caps.weight_format != BE_WEIGHTS_Q8_0 || !m->be->ops->upload_weight_q8_0 ||
        cols % 32 != 0 || n > 3)
        return 0;
    for (int i = 0; i < n; i++)
        if (!(t[i] = gguf_find_tensor(m->gg, names[i])) || t[i]->type != GGML_TYPE_Q8_0 ||
            t[i]->ndim != 2 || (size_t)t[i]->ne[0] != cols || (size_t)t[i]->ne[1] != rows[i])
            return 0; /* read_gguf_tensor reports what is wrong */
    char *blocks = malloc(total * row_bytes + 1);
    if (!blocks)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to load '%s'", m->dir, names[0]);
    for (int i = 0, r0 = 0; i < n; r0 += (int)rows[i], i++) {
        char *at = blocks + (size_t)r0 * row_bytes;
        if (permute[i])
            gguf_unpermute(at, t[i]->data, rows[i], row_bytes,
                           permute[i] == 1 ? m->cfg.n_heads : m->cfg.n_kv_heads);
        else
            memcpy(at, t[i]->data, rows[i] * row_bytes);
        /* the file's pages are not kept resident beside the copy */
        release_mapped(t[i]->data, t[i]->nbytes);
    }
    int rc = m->be->ops->upload_weight_q8_0(m->be, dst, blocks, (int)total, (int)cols);
    free(blocks);
    if (rc)
        return assay_fail(err, rc, "%s: uploading '%s': %s", m->dir, names[0],
                          m->be->last_error.msg);
    return 1;
}

static int load_linear(model *m, const st_model *sm, void *dst, const char *const *names,
                       const int *permute, const size_t *rows, int n, size_t cols, int transpose,
                       assay_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += rows[i];
    if (m->gg) {
        int q8 = load_gguf_q8_0(m, dst, names, permute, rows, n, total, cols, err);
        if (q8 != 0)
            return q8 == 1 ? 0 : q8;
    }
    float *host = malloc(total * cols * sizeof(float) + 1);
    if (!host)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to convert '%s'", m->dir, names[0]);
    int rc = 0;
    for (int i = 0, r0 = 0; i < n && !rc; r0 += (int)rows[i], i++)
        rc = m->gg ? read_gguf_tensor(m, names[i], permute[i], host + (size_t)r0 * cols, rows[i],
                                      cols, err)
                   : read_tensor(m, sm, names[i], host + (size_t)r0 * cols, rows[i], cols,
                                 transpose, err);
    if (!rc && (rc = m->be->ops->upload_weight(m->be, dst, host, (int)total, (int)cols)) != 0)
        assay_fail(err, rc, "%s: uploading '%s': %s", m->dir, names[0], m->be->last_error.msg);
    free(host);
    return rc;
}
/* The arena slice for a tensor of `bytes`, or an internal error (the arena is sized by
 * weights_bytes from the same config). */
static int take_checked(model *m, void **dst, size_t bytes, assay_error *err) {
    *dst = take(m, bytes);
    if (!*dst)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: weight arena too small", m->dir);
    return 0;
}

/* A tensor's name in the checkpoint: Hugging Face's, or llama.cpp's in a GGUF file. */
static const char *tensor_name(const model *m, char *buf, size_t cap, const arch_tensor *t,
                               int layer, const char *pfx) {
    if (!m->gg)
        return arch_name(buf, cap, t, layer, pfx);
    if (t->section == 1)
        snprintf(buf, cap, "blk.%d.%s", layer, t->gguf ? t->gguf : "?");
    else
        snprintf(buf, cap, "%s", t->gguf ? t->gguf : "?");
    return buf;
}

/* An f32 vector (norm weight, bias) or table (positions) of `role` into a fresh arena slice. */
static int load_role_f32(model *m, const st_model *sm, const char *pfx, arch_role role, int layer,
                         float **dst, assay_error *err) {
    const arch_tensor *t = arch_find(m->cfg.arch, role);
    char               name[128];
    if (!t)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: architecture table has no tensor role %d",
                          m->dir, (int)role);
    size_t rows = (size_t)arch_dim_size(&m->cfg, t->rows);
    size_t cols = t->cols == DIM_NONE ? 1 : (size_t)arch_dim_size(&m->cfg, t->cols);
    int    rc   = take_checked(m, (void **)dst, rows * cols * sizeof(float), err);
    return rc ? rc
              : load_tensor(m, sm, tensor_name(m, name, sizeof name, t, layer, pfx), *dst, rows,
                            cols, err);
}

/* A linear weight stacked from the tensors of `roles` (q|k|v, gate|up, or one), as (out, in),
 * into a fresh arena slice in the backend's weight layout. */
static int load_role_linear(model *m, const st_model *sm, const char *pfx, const arch_role *roles,
                            int n, int layer, void **dst, assay_error *err) {
    char        names[3][128];
    const char *np[3];
    size_t      rows[3], total = 0, in = 0;
    int         transposed = 0, permute[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        const arch_tensor *t = arch_find(m->cfg.arch, roles[i]);
        if (!t)
            return assay_fail(err, ASSAY_EINTERNAL, "%s: architecture table has no tensor role %d",
                              m->dir, (int)roles[i]);
        /* stored (out, in), or (in, out) when transposed */
        size_t r   = (size_t)arch_dim_size(&m->cfg, t->rows),
               c   = (size_t)arch_dim_size(&m->cfg, t->cols);
        rows[i]    = t->transposed ? c : r;
        in         = t->transposed ? r : c;
        transposed = t->transposed;
        np[i]      = tensor_name(m, names[i], sizeof names[i], t, layer, pfx);
        permute[i] = m->gg ? t->gguf_permute : 0;
        total += rows[i];
    }
    int rc = take_checked(m, dst, linear_bytes(m->be, total, in), err);
    return rc ? rc : load_linear(m, sm, *dst, np, permute, rows, n, in, transposed, err);
}

static int load_weights(model *m, const st_model *sm, assay_error *err) {
    const model_config    *c     = &m->cfg;
    int                    gpt2  = c->arch == ARCH_GPT2;
    const char            *pfx   = gpt2 && sm ? config_gpt2_prefix(sm) : "";
    static const arch_role emb[] = {ROLE_TOK_EMB}, head[] = {ROLE_HEAD},
                           qkv3[] = {ROLE_Q, ROLE_K, ROLE_V}, qkv1[] = {ROLE_QKV}, o[] = {ROLE_O},
                           gate_up[] = {ROLE_GATE, ROLE_UP}, up[] = {ROLE_UP}, down[] = {ROLE_DOWN};
    int rc;
#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((rc = (call)) != 0)                                                                    \
            return rc;                                                                             \
    } while (0)
    TRY(load_role_linear(m, sm, pfx, emb, 1, 0, &m->tok_emb, err));
    if (c->learned_pos)
        TRY(load_role_f32(m, sm, pfx, ROLE_POS_EMB, 0, &m->pos_emb, err));
    for (int i = 0; i < c->n_layers; i++) {
        layer_weights *L = &m->layers[i];
        TRY(load_role_f32(m, sm, pfx, ROLE_ATTN_NORM_W, i, &L->attn_norm_w, err));
        if (c->norm == NORM_LAYER)
            TRY(load_role_f32(m, sm, pfx, ROLE_ATTN_NORM_B, i, &L->attn_norm_b, err));
        if (gpt2) {
            TRY(load_role_linear(m, sm, pfx, qkv1, 1, i, &L->wqkv, err));
            TRY(load_role_f32(m, sm, pfx, ROLE_QKV_BIAS, i, &L->bqkv, err));
        } else {
            TRY(load_role_linear(m, sm, pfx, qkv3, 3, i, &L->wqkv, err));
            if (c->qkv_bias) {
                /* q | k | v biases in one slice, as the fused weight */
                static const arch_role qkv_b[] = {ROLE_Q_BIAS, ROLE_K_BIAS, ROLE_V_BIAS};
                TRY(take_checked(m, (void **)&L->bqkv, (size_t)m->qkv_dim * sizeof(float), err));
                for (int k = 0, at = 0; k < 3; k++) {
                    const arch_tensor *t = arch_find(c->arch, qkv_b[k]);
                    char               name[128];
                    size_t             n = (size_t)arch_dim_size(c, t->rows);
                    TRY(load_tensor(m, sm, arch_name(name, sizeof name, t, i, pfx), L->bqkv + at, 1,
                                    n, err));
                    at += (int)n;
                }
            }
        }
        TRY(load_role_linear(m, sm, pfx, o, 1, i, &L->wo, err));
        if (c->mlp_bias)
            TRY(load_role_f32(m, sm, pfx, ROLE_O_BIAS, i, &L->bo, err));
        TRY(load_role_f32(m, sm, pfx, ROLE_FFN_NORM_W, i, &L->ffn_norm_w, err));
        if (c->norm == NORM_LAYER)
            TRY(load_role_f32(m, sm, pfx, ROLE_FFN_NORM_B, i, &L->ffn_norm_b, err));
        if (c->act == ACT_SILU)
            TRY(load_role_linear(m, sm, pfx, gate_up, 2, i, &L->w_up, err));
        else
            TRY(load_role_linear(m, sm, pfx, up, 1, i, &L->w_up, err));
        if (c->mlp_bias)
            TRY(load_role_f32(m, sm, pfx, ROLE_UP_BIAS, i, &L->b_up, err));
        TRY(load_role_linear(m, sm, pfx, down, 1, i, &L->w_down, err));
        if (c->mlp_bias)
            TRY(load_role_f32(m, sm, pfx, ROLE_DOWN_BIAS, i, &L->b_down, err));
    }
    TRY(load_role_f32(m, sm, pfx, ROLE_FINAL_NORM_W, 0, &m->final_w, err));
    if (c->norm == NORM_LAYER)
        TRY(load_role_f32(m, sm, pfx, ROLE_FINAL_NORM_B, 0, &m->final_b, err));
    if (c->tie_embeddings)
        m->head = m->tok_emb;
    else
        TRY(load_role_linear(m, sm, pfx, head, 1, 0, &m->head, err));
#undef TRY
    if (c->rope != ROPE_NONE) {
        float *inv  = malloc((size_t)c->head_dim / 2 * sizeof(float) + sizeof(float));
        m->inv_freq = take(m, ((size_t)c->head_dim / 2 + 1) * sizeof(float));
        if (!inv || !m->inv_freq) {
            free(inv);
            return assay_fail(err, ASSAY_ENOMEM, "%s: no memory for RoPE tables", m->dir);
        }
        rope_inv_freq(inv, c->head_dim, c->rope_theta, (int)c->rope, c->rope_factor,
                      c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_max_pos);
        rc = m->be->ops->upload(m->be, m->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof(float));
        free(inv);
        if (rc)
            return assay_fail(err, rc, "%s: uploading RoPE tables: %s", m->dir,
                              m->be->last_error.msg);
    }
    return 0;
}

/* ---- load / free ------------------------------------------------------------------------- */

static int alloc_be(model *m, void **p, size_t bytes, assay_error *err) {
    void *ptr = NULL;
    if (m->be->ops->alloc(m->be, &ptr, bytes) != 0)
        return assay_fail(err, ASSAY_ENOMEM, "%s: cannot allocate %.1f MiB of workspace on %s: %s",
                          m->dir, MIB(bytes), m->device, m->be->last_error.msg);
    *p = ptr;
    m->mem_bytes += bytes;
    return 0;
}

/* The format a backend stores weights in: its --weights format, else its weight dtype. */
static int backend_weights(const backend *be) {
    if (be->caps.weight_format != BE_WEIGHTS_NATIVE)
        return be->caps.weight_format;
    return be->caps.weight_dtype == DTYPE_BF16 ? BE_WEIGHTS_BF16 : BE_WEIGHTS_F32;
}

static const char *weights_name(int w) {
    return w == BE_WEIGHTS_BF16 ? "bf16" : w == BE_WEIGHTS_Q8_0 ? "q8_0" : "f32";
}

const char *model_weights_name(const model *m) { return weights_name(backend_weights(m->be)); }
size_t      model_weight_bytes(const model *m) { return m->arena_bytes; }

model *model_load(const char *dir, const model_opts *opts, assay_error *err) {
    model_opts o = {0};
    if (opts)
        o = *opts;
    if (o.max_batch_tokens <= 0)
        o.max_batch_tokens = 2048;
    if (o.kv_block_tokens <= 0)
        o.kv_block_tokens = 16;
    if (o.gpu_mem_fraction <= 0)
        o.gpu_mem_fraction = 0.9;
    model    *m  = calloc(1, sizeof *m);
    st_model *sm = NULL;
    if (!m) {
        backend_free(o.backend);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", dir);
        return NULL;
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    /* the model owns a given backend from here: model_free frees it on every failure */
    m->be = o.backend;
    if (o.gpu_mem_fraction > 1) {
        assay_fail(err, ASSAY_EINVAL, "gpu_mem_fraction %g: expected a share in (0, 1]",
                   o.gpu_mem_fraction);
        goto fail;
    }
    if (model_path_is_gguf(dir)) {
        if (!(m->gg = gguf_open(dir, err)) || gguf_to_config(m->gg, &m->cfg, err) != 0)
            goto fail;
    } else if (config_load_dir(&m->cfg, dir, err) != 0) {
        goto fail;
    }
    model_config *c = &m->cfg;
    if (c->n_layers <= 0 || c->dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->ffn_dim <= 0 || c->vocab_size <= 0 ||
        c->n_heads % c->n_kv_heads != 0 || (c->rope != ROPE_NONE && c->head_dim % 2 != 0) ||
        (c->learned_pos && c->max_pos <= 0)) {
        assay_fail(err, ASSAY_EFORMAT,
                   "%s%s: inconsistent model sizes (layers %d, dim %d, heads "
                   "%d/%d, head_dim %d, ffn %d, vocab %d)",
                   dir, m->gg ? "" : "/config.json", c->n_layers, c->dim, c->n_heads, c->n_kv_heads,
                   c->head_dim, c->ffn_dim, c->vocab_size);
        goto fail;
    }
    /* an unsupported quantization is named with its tensor before anything is allocated */
    if (m->gg && gguf_check_tensors(m->gg, c, dir, err) != 0)
        goto fail;
    m->q_dim   = c->n_heads * c->head_dim;
    m->kv_dim  = c->n_kv_heads * c->head_dim;
    m->qkv_dim = m->q_dim + 2 * m->kv_dim;
    m->up_dim  = c->act == ACT_SILU ? 2 * c->ffn_dim : c->ffn_dim;
    m->max_T   = o.max_batch_tokens;

    /* the budget check needs only config.json and the backend's sizes: nothing big is read or
     * allocated before it */
    backend_opts bo   = {.n_threads        = o.n_threads,
                         .gpu_mem_fraction = o.gpu_mem_fraction,
                         .fast             = o.fast,
                         .weights          = (be_weights)o.weights};
    const char  *spec = o.device && *o.device ? o.device : "cpu";
    m->be             = m->be ? m->be : backend_create(spec, &bo, err);
    if (!m->be)
        goto fail;
    if (o.weights != BE_WEIGHTS_NATIVE && o.weights != backend_weights(m->be)) {
        assay_fail(err, ASSAY_EUNSUPPORTED,
                   "%s: weights as %s are not supported on the %s backend (it stores %s); use "
                   "--device cpu",
                   dir, weights_name(o.weights), m->be->ops->name,
                   weights_name(backend_weights(m->be)));
        goto fail;
    }
    /* "cuda:N" as asked (auto and cuda mean device 0); the CPU has no number */
    const char *name = m->be->ops->name, *colon = strchr(spec, ':');
    if (!strcmp(name, "cpu") || strchr(name, ':'))
        snprintf(m->device, sizeof m->device, "%s", name);
    else
        snprintf(m->device, sizeof m->device, "%s:%s", name, colon ? colon + 1 : "0");
    m->act_bytes = backend_dtype_bytes(m->be->caps.act_dtype);
    size_t kv_el = backend_dtype_bytes(m->be->caps.kv_dtype);
    if (!m->act_bytes || !kv_el) {
        assay_fail(err, ASSAY_EINTERNAL, "%s: backend %s has no activation or KV element type", dir,
                   m->device);
        goto fail;
    }
    int max_in      = c->ffn_dim > c->dim ? c->ffn_dim : c->dim;
    max_in          = m->q_dim > max_in ? m->q_dim : max_in;
    size_t mem_free = 0, mem_total = 0;
    if (m->be->ops->mem_info(m->be, &mem_free, &mem_total) != 0)
        mem_free = 0; /* unknown: only an explicit budget is checked */
    model_mem_need need = {
        .weights      = weights_bytes(c, m->be),
        .workspace    = (size_t)m->max_T * workspace_bytes_per_token(c, m->act_bytes),
        .scratch      = m->be->ops->scratch_bytes(m->be, m->max_T, max_in, c->dim, c->vocab_size),
        .kv_per_token = kv_pool_bytes(c->n_layers, m->kv_dim, 1, 1, kv_el),
        .batch_tokens = m->max_T,
        .block_tokens = o.kv_block_tokens,
        .mem_budget   = o.mem_budget,
        .mem_free     = mem_free,
        /* host memory is shared with everything else on the machine: leave a fifth of it */
        .fraction  = m->be->caps.host_memory ? 0.8 : o.gpu_mem_fraction,
        .kv_tokens = o.kv_tokens};
    model_mem_plan plan;
    char           what[1100];
    snprintf(what, sizeof what, "%s on %s", dir, m->device);
    if (model_plan_memory(&plan, &need, what, err) != 0)
        goto fail;

    if (!m->gg) {
        sm = st_model_open(dir, err);
        if (!sm)
            goto fail;
        const char **ignored   = NULL;
        int          n_ignored = 0;
        if (config_check_tensors(c, sm, &ignored, &n_ignored, err) != 0)
            goto fail;
        free(ignored);
    }

    m->layers      = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->arena_bytes = need.weights;
    if (!m->layers || alloc_be(m, (void **)&m->arena, m->arena_bytes, err) != 0)
        goto fail;
    if (load_weights(m, sm, err) != 0)
        goto fail;
    st_model_close(sm);
    sm = NULL;
    gguf_close(m->gg);
    m->gg = NULL;

    size_t T = (size_t)m->max_T, A = m->act_bytes, D = (size_t)c->dim;
    if (alloc_be(m, (void **)&m->x, T * D * sizeof(float), err) ||
        alloc_be(m, (void **)&m->hsel, T * D * sizeof(float), err) ||
        alloc_be(m, &m->xn, T * D * A, err) || alloc_be(m, &m->qkv, T * m->qkv_dim * A, err) ||
        alloc_be(m, &m->att, T * m->q_dim * A, err) ||
        alloc_be(m, &m->up, T * m->up_dim * A, err) ||
        alloc_be(m, &m->act, T * c->ffn_dim * A, err) || alloc_be(m, &m->proj, T * D * A, err) ||
        alloc_be(m, &m->h, T * D * A, err))
        goto fail;
    m->ids     = malloc(T * sizeof(int32_t));
    m->pos     = malloc(T * sizeof(int32_t));
    m->q_off   = malloc((T + 1) * sizeof(int32_t));
    m->start   = malloc(T * sizeof(int32_t));
    m->sel     = malloc(T * sizeof(int32_t));
    m->sel_tgt = malloc(T * sizeof(int32_t));
    m->sel_id  = malloc(T * sizeof(int32_t));
    m->sel_am  = malloc(T * sizeof(int32_t));
    m->sel_lp  = malloc(T * sizeof(float));
    m->sel_gr  = malloc(T);
    if (!m->ids || !m->pos || !m->q_off || !m->start || !m->sel || !m->sel_tgt || !m->sel_id ||
        !m->sel_am || !m->sel_lp || !m->sel_gr) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for batch tables", dir);
        goto fail;
    }
    int n_blocks = (plan.kv_tokens + o.kv_block_tokens - 1) / o.kv_block_tokens;
    if (kv_create(&m->kv, m->be, c->n_layers, m->kv_dim, o.kv_block_tokens, n_blocks, err) != 0)
        goto fail;
    m->mem_bytes +=
        kv_pool_bytes(c->n_layers, m->kv_dim, o.kv_block_tokens, n_blocks, kv_el) + need.scratch;
    return m;
fail:
    st_model_close(sm);
    model_free(m);
    return NULL;
}

void model_free(model *m) {
    if (!m)
        return;
    gguf_close(m->gg);
    kv_destroy(&m->kv);
    if (m->be) {
        void *bufs[] = {m->arena, m->x,  m->hsel, m->xn,   m->qkv,
                        m->att,   m->up, m->act,  m->proj, m->h};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            m->be->ops->release(m->be, bufs[i]);
    }
    backend_free(m->be);
    free(m->layers);
    free(m->ids);
    free(m->pos);
    free(m->q_off);
    free(m->start);
    free(m->sel);
    free(m->sel_tgt);
    free(m->sel_id);
    free(m->sel_am);
    free(m->sel_lp);
    free(m->sel_gr);
    free(m->bt);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->cfg; }
size_t              model_mem_bytes(const model *m) { return m->mem_bytes; }
const char         *model_device_name(const model *m) { return m->device; }
int                 model_batch_invariant(const model *m) { return m->be->caps.batch_invariant; }
int                 model_max_batch_tokens(const model *m) { return m->max_T; }
int                 model_kv_tokens(const model *m) { return m->kv.n_blocks * m->kv.block_tokens; }

void model_set_threads(model *m, int n_threads) {
    if (m->be->ops->set_threads) /* optional: a GPU has no thread count */
        m->be->ops->set_threads(m->be, n_threads);
}

/* ---- forward ----------------------------------------------------------------------------- */

/* New tokens of one sequence in a batch. */
typedef struct fwd_seq {
    const int32_t *tokens;
    int            n_new;
    int            start_pos; /* position of tokens[0]; with a cache, the tokens already stored */
    kv_seq        *kv;        /* NULL: no cache (start_pos must be 0) */
} fwd_seq;

#define BE_CALL(call)                                                                              \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_)                                                                                   \
            return assay_fail(err, rc_, "%s: %s", m->dir, be->last_error.msg);                     \
    } while (0)

/* Packs seqs into b (the model's host tables): ids, positions, row offsets, start positions and,
 * with the cache, a block table of max_blocks columns per sequence (unused entries 0). Rows
 * m->sel[0..n_sel) reach the LM head with targets m->sel_tgt (NULL: argmax only). */
static int pack_batch(model *m, be_batch *b, const fwd_seq *seqs, int n_seqs, int use_cache,
                      int n_sel, const int32_t *targets, assay_error *err) {
    const model_config *c = &m->cfg;
    int                 T = 0, max_blocks = 0;
    for (int s = 0; s < n_seqs; s++) {
        m->q_off[s] = T;
        m->start[s] = seqs[s].start_pos;
        if (seqs[s].n_new > m->max_T - T)
            return assay_fail(err, ASSAY_EINTERNAL, "%s: batch over %d tokens", m->dir, m->max_T);
        for (int i = 0; i < seqs[s].n_new; i++) {
            int32_t id = seqs[s].tokens[i], p = seqs[s].start_pos + i;
            if (id < 0 || id >= c->vocab_size)
                return assay_fail(err, ASSAY_EINVAL, "%s: token id %d out of range (vocab %d)",
                                  m->dir, id, c->vocab_size);
            if (c->learned_pos && p >= c->max_pos)
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s: position %d beyond the model's %d "
                                  "learned positions",
                                  m->dir, p, c->max_pos);
            m->ids[T] = id;
            m->pos[T] = p;
            T++;
        }
        if (use_cache && seqs[s].kv->n_blocks > max_blocks)
            max_blocks = seqs[s].kv->n_blocks;
    }
    m->q_off[n_seqs] = T;
    if (T == 0)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: empty batch", m->dir);
    for (int i = 0; i < n_sel; i++)
        if (m->sel[i] < 0 || m->sel[i] >= T)
            return assay_fail(err, ASSAY_EINTERNAL, "%s: selected row %d of a %d-row batch", m->dir,
                              m->sel[i], T);
    if (use_cache) {
        size_t need = (size_t)n_seqs * (size_t)(max_blocks ? max_blocks : 1);
        if (need > m->bt_cap) {
            int32_t *bt = realloc(m->bt, need * sizeof(int32_t));
            if (!bt)
                return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for block tables", m->dir);
            m->bt     = bt;
            m->bt_cap = need;
        }
        memset(m->bt, 0, need * sizeof(int32_t));
        for (int s = 0; s < n_seqs; s++) {
            if (seqs[s].kv->n_blocks * m->kv.block_tokens < seqs[s].start_pos + seqs[s].n_new)
                return assay_fail(err, ASSAY_EINTERNAL,
                                  "%s: sequence %d has no KV blocks for "
                                  "%d tokens",
                                  m->dir, s, seqs[s].start_pos + seqs[s].n_new);
            memcpy(m->bt + (size_t)s * max_blocks, seqs[s].kv->blocks,
                   (size_t)seqs[s].kv->n_blocks * sizeof(int32_t));
        }
    }
    *b = (be_batch){.n_tokens     = T,
                    .n_seqs       = n_seqs,
                    .ids          = m->ids,
                    .pos          = m->pos,
                    .q_off        = m->q_off,
                    .start_pos    = m->start,
                    .block_table  = use_cache ? m->bt : NULL,
                    .max_blocks   = use_cache ? max_blocks : 0,
                    .block_tokens = m->kv.block_tokens,
                    .n_sel        = n_sel,
                    .sel          = m->sel,
                    .targets      = targets};
    return 0;
}

/* One pass: runs every layer over the packed new tokens of seqs (total <= max_T). use_cache: K/V
 * go into each sequence's KV blocks (reserved by the caller for start_pos + n_new tokens) and
 * attention reads them from there; else attention runs over the batch alone. Then the rows
 * m->sel[0..n_sel) go through the final norm and the LM head, whose results come back in one
 * fetch: the log-probs of targets m->sel_tgt into m->sel_lp and the greedy flags into m->sel_gr;
 * greedy: the argmax into m->sel_am, and into m->sel_lp the log-prob of the (dummy) targets in
 * m->sel_tgt, which is NaN or Inf exactly when the row's logits are not all finite (a NaN logit
 * makes the log-sum-exp NaN, +Inf makes it Inf). */
static int forward(model *m, const fwd_seq *seqs, int n_seqs, int use_cache, int n_sel, int greedy,
                   assay_error *err) {
    const model_config *c  = &m->cfg;
    backend            *be = m->be;
    const backend_ops  *op = be->ops;
    be_batch            b;
    int                 rc = pack_batch(m, &b, seqs, n_seqs, use_cache, n_sel, m->sel_tgt, err);
    if (rc)
        return rc;
    int T = b.n_tokens, D = c->dim, F = c->ffn_dim, hd = c->head_dim;
    BE_CALL(op->set_batch(be, &b));
    BE_CALL(op->embed(be, m->x, m->tok_emb, c->learned_pos ? m->pos_emb : NULL, D));
    be_norm nk = c->norm == NORM_RMS ? BE_NORM_RMS : BE_NORM_LAYER;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L  = &m->layers[l];
        void                *kp = use_cache ? kv_layer_k(&m->kv, l) : NULL,
             *vp                = use_cache ? kv_layer_v(&m->kv, l) : NULL;
        /* the previous layer's MLP output joins the residual stream here */
        BE_CALL(op->add_norm(be, m->x, m->xn, l ? m->proj : NULL, L->attn_norm_w, L->attn_norm_b,
                             nk, T, D, c->norm_eps));
        BE_CALL(op->matmul(be, m->qkv, m->xn, L->wqkv, L->bqkv, T, D, m->qkv_dim, BE_EPI_NONE));
        BE_CALL(op->rope_kv(be, m->qkv, kp, vp, c->rope != ROPE_NONE ? m->inv_freq : NULL,
                            c->n_heads, c->n_kv_heads, hd));
        BE_CALL(op->attention(be, m->att, m->qkv, kp, vp, c->n_heads, c->n_kv_heads, hd,
                              c->sliding_window));
        BE_CALL(op->matmul(be, m->proj, m->att, L->wo, L->bo, T, m->q_dim, D, BE_EPI_NONE));
        BE_CALL(op->add_norm(be, m->x, m->xn, m->proj, L->ffn_norm_w, L->ffn_norm_b, nk, T, D,
                             c->norm_eps));
        if (c->act == ACT_SILU) {
            BE_CALL(op->matmul(be, m->up, m->xn, L->w_up, NULL, T, D, 2 * F, BE_EPI_NONE));
            BE_CALL(op->swiglu(be, m->act, m->up, T, F));
        } else {
            BE_CALL(op->matmul(be, m->act, m->xn, L->w_up, L->b_up, T, D, F, BE_EPI_GELU_NEW));
        }
        BE_CALL(op->matmul(be, m->proj, m->act, L->w_down, L->b_down, T, F, D, BE_EPI_NONE));
    }
    if (use_cache)
        for (int s = 0; s < n_seqs; s++)
            seqs[s].kv->n_tokens = seqs[s].start_pos + seqs[s].n_new;
    if (n_sel == 0) {
        /* a pass that only fills the cache: the last layer's output goes nowhere */
        return 0;
    }
    /* the last residual add runs on every row (the norm computed with it is discarded: one
     * norm over the batch is cheap next to its GEMMs), then the selected rows are gathered and
     * final-normed on their own */
    BE_CALL(op->add_norm(be, m->x, m->xn, m->proj, m->final_w, m->final_b, nk, T, D, c->norm_eps));
    BE_CALL(op->gather(be, m->hsel, m->x, D));
    BE_CALL(
        op->add_norm(be, m->hsel, m->h, NULL, m->final_w, m->final_b, nk, n_sel, D, c->norm_eps));
    BE_CALL(op->lm_head(be, m->h, m->head, D, c->vocab_size, BE_HEAD_LOGPROB));
    if (greedy)
        BE_CALL(op->fetch(be, m->sel_lp, NULL, m->sel_am));
    else
        BE_CALL(op->fetch(be, m->sel_lp, m->sel_gr, NULL));
    return 0;
}

/* ---- scoring ----------------------------------------------------------------------------- */

void score_results_free(score_result *out, int n) {
    if (!out)
        return;
    for (int i = 0; i < n; i++) {
        free(out[i].logprob);
        free(out[i].is_greedy);
        memset(&out[i], 0, sizeof out[i]);
    }
}

static int result_alloc(score_result *r, int n_targets) {
    memset(r, 0, sizeof *r);
    r->n_targets = n_targets;
    r->logprob   = malloc((size_t)(n_targets ? n_targets : 1) * sizeof(float));
    r->is_greedy = malloc((size_t)(n_targets ? n_targets : 1));
    return r->logprob && r->is_greedy ? 0 : -1;
}

static void result_finish(score_result *r) {
    r->sum      = 0.0;
    r->n_greedy = 0;
    for (int i = 0; i < r->n_targets; i++) {
        r->sum += r->logprob[i];
        r->n_greedy += r->is_greedy[i];
    }
}

/* A sequence fed through the KV cache chunk by chunk: n tokens are fed (tokens[n] exists when
 * the last row is scored); rows r in [first_row, n) predict tokens[r+1] and land in
 * lp/gr[r - first_row]. */
typedef struct cjob {
    const int32_t *tokens;
    int            n;
    int            start_pos; /* tokens already in the cache of `base` */
    const kv_seq  *base;      /* context to fork, or NULL */
    int            first_row;
    float         *lp;
    uint8_t       *gr;
    kv_seq         kv;
    int            done, started;
    int            index; /* the request's (or continuation's) index, for messages */
    int            keep;  /* the caller keeps (and releases) kv: a context for other jobs */
} cjob;

/* Runs jobs through the cache, packing chunks of several jobs into each pass under the token
 * budget; a job gets its blocks (fork of base + its own tokens) when it starts and frees them
 * when it ends, so the pool only needs to hold the jobs in flight. */
static int run_cached_jobs(model *m, cjob *jobs, int n_jobs, assay_error *err) {
    fwd_seq *seqs = malloc((size_t)(n_jobs ? n_jobs : 1) * sizeof *seqs);
    int     *who  = malloc((size_t)(n_jobs ? n_jobs : 1) * sizeof(int));
    int      rc = 0, next = 0;
    if (!seqs || !who) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", m->dir);
        goto done;
    }
    for (;;) {
        while (next < n_jobs && jobs[next].done == jobs[next].n)
            next++;
        if (next == n_jobs)
            break;
        int used = 0, nb = 0, n_sel = 0;
        for (int j = next; j < n_jobs && used < m->max_T; j++) {
            cjob *jb = &jobs[j];
            if (jb->done == jb->n)
                continue;
            if (!jb->started) {
                int r = jb->base ? kv_seq_fork(&m->kv, &jb->kv, jb->base) : 0;
                if (r == 0 && kv_seq_reserve(&m->kv, &jb->kv, jb->start_pos + jb->n) != 0) {
                    kv_seq_release(&m->kv, &jb->kv);
                    r = ASSAY_ENOMEM;
                }
                if (r != 0 && r != ASSAY_ENOMEM) { /* the backend failed to copy a block */
                    rc = assay_fail(err, r, "%s: %s", m->dir, m->be->last_error.msg);
                    goto done;
                }
                if (r != 0) {
                    if (nb == 0) {
                        rc = assay_fail(err, ASSAY_ENOMEM,
                                        "%s: %s %d needs %d tokens of KV cache, the cache holds "
                                        "%d (a bigger --mem-budget or --gpu-mem-fraction gives "
                                        "a bigger cache)",
                                        m->dir, jb->base ? "continuation" : "request", jb->index,
                                        jb->start_pos + jb->n, model_kv_tokens(m));
                        goto done;
                    }
                    break; /* wait for running jobs to free blocks */
                }
                jb->started = 1;
            }
            int take = jb->n - jb->done < m->max_T - used ? jb->n - jb->done : m->max_T - used;
            seqs[nb] = (fwd_seq){jb->tokens + jb->done, take, jb->start_pos + jb->done, &jb->kv};
            who[nb]  = j;
            int lo   = jb->done > jb->first_row ? jb->done : jb->first_row;
            int hi   = jb->done + take;
            for (int r = lo; r < hi; r++) {
                m->sel[n_sel]     = used + (r - jb->done);
                m->sel_tgt[n_sel] = jb->tokens[r + 1];
                n_sel++;
            }
            used += take;
            nb++;
        }
        if ((rc = forward(m, seqs, nb, 1, n_sel, 0, err)) != 0)
            goto done;
        int k = 0;
        for (int b = 0; b < nb; b++) {
            cjob *jb = &jobs[who[b]];
            int   lo = jb->done > jb->first_row ? jb->done : jb->first_row;
            int   hi = jb->done + seqs[b].n_new;
            for (int r = lo; r < hi; r++, k++) {
                jb->lp[r - jb->first_row] = m->sel_lp[k];
                jb->gr[r - jb->first_row] = m->sel_gr[k];
            }
            jb->done += seqs[b].n_new;
            if (jb->done == jb->n && !jb->keep)
                kv_seq_release(&m->kv, &jb->kv);
        }
    }
done:
    for (int j = 0; j < n_jobs; j++)
        if (!jobs[j].keep || rc)
            kv_seq_release(&m->kv, &jobs[j].kv);
    free(seqs);
    free(who);
    return rc;
}

/* Every id in range, the last (a target only, never fed to forward) included. */
static int check_ids(const model *m, const int32_t *ids, int n, assay_error *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return assay_fail(err, ASSAY_EINVAL, "%s: token id %d out of range (vocab %d)", m->dir,
                              ids[i], m->cfg.vocab_size);
    return ASSAY_OK;
}

static int cmp_len_desc(const void *a, const void *b, void *ctx) {
    const score_request *r = ctx;
    int                  x = *(const int *)a, y = *(const int *)b;
    if (r[x].n_tokens != r[y].n_tokens)
        return r[x].n_tokens > r[y].n_tokens ? -1 : 1;
    return x < y ? -1 : x > y;
}

int model_score(model *m, const score_request *reqs, int n, score_result *out, assay_error *err) {
    int     *order = NULL, rc = 0, n_long = 0;
    cjob    *jobs = NULL;
    fwd_seq *seqs = NULL;
    if (n < 0 || (n > 0 && (!reqs || !out)))
        return assay_fail(err, ASSAY_EINVAL, "model_score: bad arguments");
    memset(out, 0, (size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        const score_request *r = &reqs[i];
        if (r->n_tokens < 1 || !r->tokens || r->score_from < 1 || r->score_from > r->n_tokens) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "request %d: %d tokens with score_from %d (need "
                            "1 <= score_from <= n_tokens)",
                            i, r->n_tokens, r->score_from);
            goto fail;
        }
        if ((rc = check_ids(m, r->tokens, r->n_tokens, err)))
            goto fail;
        if (result_alloc(&out[i], r->n_tokens - r->score_from) != 0) {
            rc = assay_fail(err, ASSAY_ENOMEM, "model_score: out of memory");
            goto fail;
        }
    }
    order = malloc((size_t)(n ? n : 1) * sizeof(int));
    seqs  = malloc((size_t)(n ? n : 1) * sizeof *seqs);
    jobs  = calloc((size_t)(n ? n : 1), sizeof *jobs);
    if (!order || !seqs || !jobs) {
        rc = assay_fail(err, ASSAY_ENOMEM, "model_score: out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof(int), cmp_len_desc, (void *)reqs);

    /* The last token is only a target: it is never fed, so a request of max_pos + 1 tokens
     * fits a model with max_pos (learned) positions, as lm-eval's input[:-1]. Requests of one
     * token feed nothing (and score nothing); they sort last. */
    int n_work = n;
    while (n_work > 0 && reqs[order[n_work - 1]].n_tokens == 1)
        n_work--;
    /* long requests go through the cache in chunks */
    int i = 0;
    for (; i < n_work && reqs[order[i]].n_tokens - 1 > m->max_T; i++) {
        const score_request *r = &reqs[order[i]];
        jobs[n_long++]         = (cjob){.index     = order[i],
                                        .tokens    = r->tokens,
                                        .n         = r->n_tokens - 1,
                                        .first_row = r->score_from - 1,
                                        .lp        = out[order[i]].logprob,
                                        .gr        = out[order[i]].is_greedy};
    }
    if (n_long && (rc = run_cached_jobs(m, jobs, n_long, err)) != 0)
        goto fail;
    /* the rest packed whole, longest first, under the token budget */
    while (i < n_work) {
        int used = 0, nb = 0, n_sel = 0, first = i;
        for (; i < n_work && used + reqs[order[i]].n_tokens - 1 <= m->max_T; i++) {
            const score_request *r = &reqs[order[i]];
            seqs[nb++]             = (fwd_seq){r->tokens, r->n_tokens - 1, 0, NULL};
            for (int row = r->score_from - 1; row < r->n_tokens - 1; row++) {
                m->sel[n_sel]     = used + row;
                m->sel_tgt[n_sel] = r->tokens[row + 1];
                n_sel++;
            }
            used += r->n_tokens - 1;
        }
        if ((rc = forward(m, seqs, nb, 0, n_sel, 0, err)) != 0)
            goto fail;
        int k = 0;
        for (int b = first; b < i; b++) {
            score_result *o = &out[order[b]];
            memcpy(o->logprob, m->sel_lp + k, (size_t)o->n_targets * sizeof(float));
            memcpy(o->is_greedy, m->sel_gr + k, (size_t)o->n_targets);
            k += o->n_targets;
        }
    }
    for (int j = 0; j < n; j++)
        result_finish(&out[j]);
    free(order);
    free(seqs);
    free(jobs);
    return 0;
fail:
    free(order);
    free(seqs);
    free(jobs);
    score_results_free(out, n);
    return rc;
}

int model_score_shared(model *m, const int32_t *ctx, int n_ctx, const score_request *conts, int n,
                       score_result *out, assay_error *err) {
    int      rc   = 0;
    cjob    *jobs = NULL;
    int32_t *toks = NULL;
    kv_seq   base = {0};
    if (n < 0 || n_ctx < 0 || (n_ctx > 0 && !ctx) || (n > 0 && (!conts || !out)))
        return assay_fail(err, ASSAY_EINVAL, "model_score_shared: bad arguments");
    memset(out, 0, (size_t)n * sizeof *out);
    size_t n_toks = 1;
    for (int i = 0; i < n; i++) {
        const score_request *r = &conts[i];
        if (r->n_tokens < 1 || !r->tokens || r->score_from < 0 || r->score_from > r->n_tokens ||
            (r->score_from == 0 && n_ctx == 0)) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "continuation %d: %d tokens with score_from %d "
                            "after a context of %d tokens",
                            i, r->n_tokens, r->score_from, n_ctx);
            goto fail;
        }
        if ((rc = check_ids(m, r->tokens, r->n_tokens, err)))
            goto fail;
        if (result_alloc(&out[i], r->n_tokens - r->score_from) != 0) {
            rc = assay_fail(err, ASSAY_ENOMEM, "model_score_shared: out of memory");
            goto fail;
        }
        n_toks += (size_t)r->n_tokens + 1;
    }
    if (n_ctx > 0 && (rc = check_ids(m, ctx, n_ctx, err)))
        goto fail;
    jobs = calloc((size_t)(n ? n : 1), sizeof *jobs);
    toks = malloc(n_toks * sizeof(int32_t));
    if (!jobs || !toks) {
        rc = assay_fail(err, ASSAY_ENOMEM, "model_score_shared: out of memory");
        goto fail;
    }
    /* The context but its last token, once, in chunks, into the cache. Each continuation then
     * feeds the context's last token itself (one extra row per continuation), so the row that
     * predicts the first continuation token comes from an ordinary pass with its targets: no
     * hidden state is kept between passes, and the bits equal model_score's (every op is
     * row-invariant and the paged attention path equals the packed one). */
    int n_base = n_ctx > 0 ? n_ctx - 1 : 0;
    if (n_base > 0 && kv_seq_reserve(&m->kv, &base, n_base) != 0) {
        rc = assay_fail(err, ASSAY_ENOMEM,
                        "%s: a context of %d tokens does not fit the KV cache "
                        "(%d tokens)",
                        m->dir, n_ctx, model_kv_tokens(m));
        goto fail;
    }
    for (int done = 0; done < n_base;) {
        int     take = n_base - done < m->max_T ? n_base - done : m->max_T;
        fwd_seq s    = {ctx + done, take, done, &base};
        if ((rc = forward(m, &s, 1, 1, 0, 0, err)) != 0)
            goto fail;
        done += take;
    }
    /* the continuations on forks of the context's blocks */
    int32_t *t = toks;
    for (int i = 0; i < n; i++) {
        const score_request *r = &conts[i];
        if (n_ctx > 0) {
            /* fed: the context's last token, then the continuation but its last token; row k
             * predicts continuation token k */
            t[0] = ctx[n_ctx - 1];
            memcpy(t + 1, r->tokens, (size_t)r->n_tokens * sizeof(int32_t));
            jobs[i] = (cjob){.index     = i,
                             .tokens    = t,
                             .n         = r->n_tokens,
                             .start_pos = n_base,
                             .base      = &base,
                             .first_row = r->score_from,
                             .lp        = out[i].logprob,
                             .gr        = out[i].is_greedy};
            t += r->n_tokens + 1;
        } else {
            /* no context: scoring starts at continuation token score_from >= 1 */
            jobs[i] = (cjob){.index     = i,
                             .tokens    = r->tokens,
                             .n         = r->n_tokens - 1, /* the last: target only */
                             .start_pos = 0,
                             .base      = NULL,
                             .first_row = r->score_from - 1,
                             .lp        = out[i].logprob,
                             .gr        = out[i].is_greedy};
        }
    }
    if ((rc = run_cached_jobs(m, jobs, n, err)) != 0)
        goto fail;
    kv_seq_release(&m->kv, &base);
    for (int j = 0; j < n; j++)
        result_finish(&out[j]);
    free(jobs);
    free(toks);
    return 0;
fail:
    kv_seq_release(&m->kv, &base);
    free(jobs);
    free(toks);
    score_results_free(out, n);
    return rc;
}

/* Validates continuations and allocates their results (out[0..n) zeroed first). */
static int conts_check(model *m, const score_request *conts, int n, int have_ctx, score_result *out,
                       size_t *n_toks, assay_error *err) {
    for (int i = 0; i < n; i++) {
        const score_request *r = &conts[i];
        if (r->n_tokens < 1 || !r->tokens || r->score_from < 0 || r->score_from > r->n_tokens ||
            (r->score_from == 0 && !have_ctx))
            return assay_fail(err, ASSAY_EINVAL, "continuation %d: %d tokens with score_from %d", i,
                              r->n_tokens, r->score_from);
        int rc = check_ids(m, r->tokens, r->n_tokens, err);
        if (rc)
            return rc;
        if (result_alloc(&out[i], r->n_tokens - r->score_from) != 0)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", m->dir);
        *n_toks += (size_t)r->n_tokens + 1;
    }
    return ASSAY_OK;
}

int model_score_groups(model *m, const int32_t *prefix, int n_prefix, const score_group *groups,
                       int n_groups, score_result *out, assay_error *err) {
    int      rc = 0, n_out = 0;
    cjob    *mids = NULL, *jobs = NULL;
    int32_t *toks   = NULL;
    kv_seq   base   = {0};
    size_t   n_toks = 1;
    if (n_groups < 0 || n_prefix < 0 || (n_prefix > 0 && !prefix) || (n_groups > 0 && !groups))
        return assay_fail(err, ASSAY_EINVAL, "model_score_groups: bad arguments");
    for (int g = 0; g < n_groups; g++) {
        if (groups[g].n_ctx < 1 || !groups[g].ctx || groups[g].n < 0 ||
            (groups[g].n > 0 && (!groups[g].conts || !out)))
            return assay_fail(err, ASSAY_EINVAL, "model_score_groups: group %d: bad arguments", g);
        n_out += groups[g].n;
    }
    memset(out, 0, (size_t)n_out * sizeof *out);
    if (n_prefix > 0 && (rc = check_ids(m, prefix, n_prefix, err)))
        goto done;
    for (int g = 0, o = 0; g < n_groups; o += groups[g].n, g++)
        if ((rc = check_ids(m, groups[g].ctx, groups[g].n_ctx, err)) ||
            (rc = conts_check(m, groups[g].conts, groups[g].n, 1, out + o, &n_toks, err)))
            goto done;
    size_t n_mid_alloc = n_groups > 0 ? (size_t)n_groups : 1;
    size_t n_job_alloc = n_out > 0 ? (size_t)n_out : 1;
    mids               = calloc(n_mid_alloc, sizeof *mids);
    jobs               = calloc(n_job_alloc, sizeof *jobs);
    toks               = malloc(n_toks * sizeof(int32_t));
    if (!mids || !jobs || !toks) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", m->dir);
        goto done;
    }
    /* The whole prefix once into the cache (every group's context goes on after it). */
    if (n_prefix > 0 && kv_seq_reserve(&m->kv, &base, n_prefix) != 0) {
        rc = assay_fail(err, ASSAY_ENOMEM,
                        "%s: a prefix of %d tokens does not fit the KV cache (%d tokens)", m->dir,
                        n_prefix, model_kv_tokens(m));
        goto done;
    }
    for (int d = 0; d < n_prefix;) {
        int     take = n_prefix - d < m->max_T ? n_prefix - d : m->max_T;
        fwd_seq s    = {prefix + d, take, d, &base};
        if ((rc = forward(m, &s, 1, 1, 0, 0, err)) != 0)
            goto done;
        d += take;
    }
    /* Groups in runs whose contexts take at most half of what the prefix leaves of the cache:
     * each group's context but its last token is computed on a fork of the prefix and kept;
     * then its continuations run on forks of that, feeding the context's last token first
     * (model_score_shared's rule), so every row is computed as model_score computes it. */
    /* in blocks: a group holds its context's blocks beyond the prefix's full ones (the prefix's
     * partly filled last block is copied per fork); half the free blocks stay for continuations */
    int      shared = n_prefix / m->kv.block_tokens, budget = m->kv.n_free / 2;
    int32_t *t = toks;
    for (int g0 = 0, o0 = 0; g0 < n_groups;) {
        int g1 = g0, used = 0, nj = 0;
        while (g1 < n_groups) {
            int need = kv_blocks_for(&m->kv, n_prefix + groups[g1].n_ctx - 1) - shared;
            if (g1 > g0 && used + need > budget)
                break;
            used += need;
            g1++;
        }
        for (int g = g0; g < g1; g++) {
            cjob *mj = &mids[g];
            *mj      = (cjob){.index     = g,
                              .tokens    = groups[g].ctx,
                              .n         = groups[g].n_ctx - 1,
                              .start_pos = n_prefix,
                              .base      = &base,
                              .first_row = groups[g].n_ctx - 1,
                              .keep      = 1};
            if (mj->n == 0) { /* nothing to compute: the fork is the prefix itself */
                int r = kv_seq_fork(&m->kv, &mj->kv, &base);
                if (r) {
                    rc = assay_fail(err, r, "%s: KV cache: no room to fork a %d-token prefix",
                                    m->dir, n_prefix);
                    goto done;
                }
                mj->started = 1;
            }
        }
        if ((rc = run_cached_jobs(m, mids + g0, g1 - g0, err)) != 0)
            goto done;
        for (int g = g0, o = o0; g < g1; o += groups[g].n, g++) {
            const score_group *G = &groups[g];
            for (int i = 0; i < G->n; i++) {
                const score_request *r = &G->conts[i];
                t[0]                   = G->ctx[G->n_ctx - 1];
                memcpy(t + 1, r->tokens, (size_t)r->n_tokens * sizeof(int32_t));
                jobs[nj++] = (cjob){.index     = o + i,
                                    .tokens    = t,
                                    .n         = r->n_tokens,
                                    .start_pos = n_prefix + G->n_ctx - 1,
                                    .base      = &mids[g].kv,
                                    .first_row = r->score_from,
                                    .lp        = out[o + i].logprob,
                                    .gr        = out[o + i].is_greedy};
                t += r->n_tokens + 1;
            }
        }
        rc = run_cached_jobs(m, jobs, nj, err);
        for (int g = g0; g < g1; o0 += groups[g].n, g++)
            kv_seq_release(&m->kv, &mids[g].kv);
        if (rc)
            goto done;
        g0 = g1;
    }
    for (int j = 0; j < n_out; j++)
        result_finish(&out[j]);
done:
    for (int g = 0; mids && g < n_groups; g++)
        kv_seq_release(&m->kv, &mids[g].kv);
    kv_seq_release(&m->kv, &base);
    free(mids);
    free(jobs);
    free(toks);
    if (rc)
        score_results_free(out, n_out);
    return rc;
}

/* ---- generation -------------------------------------------------------------------------- */

void gen_results_free(gen_result *out, int n) {
    if (!out)
        return;
    for (int i = 0; i < n; i++) {
        free(out[i].tokens);
        memset(&out[i], 0, sizeof out[i]);
    }
}

typedef struct gjob {
    int32_t *toks;                  /* prompt then generated */
    int      n_known, n_gen, state; /* state: 0 waiting, 1 active, 2 finished */
    kv_seq   kv;
} gjob;

int model_generate_greedy(model *m, const gen_request *reqs, int n, const int32_t *eos_ids,
                          int n_eos, gen_token_fn cb, void *user, gen_result *out,
                          assay_error *err) {
    int      rc = 0, n_finished = 0;
    gjob    *jobs = NULL;
    fwd_seq *seqs = NULL;
    int     *who  = NULL;
    if (n < 0 || (n > 0 && !reqs) || n_eos < 0 || (n_eos > 0 && !eos_ids))
        return assay_fail(err, ASSAY_EINVAL, "model_generate_greedy: bad arguments");
    if (out)
        memset(out, 0, (size_t)n * sizeof *out);
    jobs = calloc((size_t)(n ? n : 1), sizeof *jobs);
    seqs = malloc((size_t)(n ? n : 1) * sizeof *seqs);
    who  = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!jobs || !seqs || !who) {
        rc = assay_fail(err, ASSAY_ENOMEM, "model_generate_greedy: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const gen_request *r = &reqs[i];
        if (r->n_prompt < 1 || !r->prompt || r->max_new_tokens < 0 ||
            r->n_prompt > INT32_MAX / 2 - r->max_new_tokens) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "generation request %d: prompt of %d tokens, "
                            "max_new_tokens %d",
                            i, r->n_prompt, r->max_new_tokens);
            goto done;
        }
        if (m->cfg.learned_pos && r->n_prompt + r->max_new_tokens - 1 > m->cfg.max_pos) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "generation request %d: prompt %d + %d new tokens "
                            "exceed the model's %d positions",
                            i, r->n_prompt, r->max_new_tokens, m->cfg.max_pos);
            goto done;
        }
        jobs[i].toks = malloc((size_t)(r->n_prompt + r->max_new_tokens) * sizeof(int32_t));
        if (!jobs[i].toks) {
            rc = assay_fail(err, ASSAY_ENOMEM, "model_generate_greedy: out of memory");
            goto done;
        }
        memcpy(jobs[i].toks, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
        jobs[i].n_known = r->n_prompt;
        if (out)
            out[i].finish = GEN_LENGTH;
        if (r->max_new_tokens == 0) {
            jobs[i].state = 2;
            n_finished++;
        }
    }
    int next_wait = 0;
    while (n_finished < n) {
        /* admit waiting requests, in order, while their blocks fit */
        for (; next_wait < n; next_wait++) {
            gjob *g = &jobs[next_wait];
            if (g->state != 0)
                continue;
            const gen_request *r = &reqs[next_wait];
            /* the last generated token is never fed back */
            if (kv_seq_reserve(&m->kv, &g->kv, r->n_prompt + r->max_new_tokens - 1) != 0) {
                int any_active = 0;
                for (int j = 0; j < n; j++)
                    any_active |= jobs[j].state == 1;
                if (!any_active) {
                    rc = assay_fail(err, ASSAY_ENOMEM,
                                    "%s: generation request %d needs %d "
                                    "tokens of KV cache, the cache holds %d",
                                    m->dir, next_wait, r->n_prompt + r->max_new_tokens - 1,
                                    model_kv_tokens(m));
                    goto done;
                }
                break;
            }
            g->state = 1;
        }
        /* one step: every active request's pending tokens (prompt chunk or last token) */
        int used = 0, nb = 0, n_sel = 0;
        for (int j = 0; j < n && used < m->max_T; j++) {
            gjob *g = &jobs[j];
            if (g->state != 1)
                continue;
            int pending = g->n_known - g->kv.n_tokens;
            int take    = pending < m->max_T - used ? pending : m->max_T - used;
            seqs[nb]    = (fwd_seq){g->toks + g->kv.n_tokens, take, g->kv.n_tokens, &g->kv};
            who[nb++]   = j;
            if (take == pending) {
                m->sel[n_sel]    = used + take - 1;
                m->sel_id[n_sel] = j;
                n_sel++;
            }
            used += take;
        }
        /* dummy targets: their log-probs only tell whether the logits are finite */
        memset(m->sel_tgt, 0, (size_t)n_sel * sizeof(int32_t));
        if ((rc = forward(m, seqs, nb, 1, n_sel, 1, err)) != 0)
            goto done;
        for (int k = 0; k < n_sel; k++) {
            int     j   = m->sel_id[k];
            gjob   *g   = &jobs[j];
            int32_t t   = m->sel_am[k];
            int     eos = 0, stop = 0;
            if (!isfinite(m->sel_lp[k])) { /* its argmax means nothing: the request ends here */
                if (out)
                    out[j].finish = GEN_NONFINITE;
                g->state = 2;
                n_finished++;
                kv_seq_release(&m->kv, &g->kv);
                continue;
            }
            for (int e = 0; e < n_eos; e++)
                eos |= eos_ids[e] == t;
            if (!eos) {
                g->toks[g->n_known++] = t;
                g->n_gen++;
                if (cb)
                    stop = cb(user, j, t, g->n_gen - 1) != 0;
            }
            if (eos || stop || g->n_gen == reqs[j].max_new_tokens) {
                if (out)
                    out[j].finish = eos ? GEN_EOS : stop ? GEN_STOPPED : GEN_LENGTH;
                g->state = 2;
                n_finished++;
                kv_seq_release(&m->kv, &g->kv);
            }
        }
    }
    if (out)
        for (int i = 0; i < n; i++) {
            out[i].n_tokens = jobs[i].n_gen;
            out[i].tokens   = malloc((size_t)(jobs[i].n_gen ? jobs[i].n_gen : 1) * sizeof(int32_t));
            if (!out[i].tokens) {
                rc = assay_fail(err, ASSAY_ENOMEM, "model_generate_greedy: out of memory");
                goto done;
            }
            memcpy(out[i].tokens, jobs[i].toks + reqs[i].n_prompt,
                   (size_t)jobs[i].n_gen * sizeof(int32_t));
        }
done:
    if (jobs)
        for (int i = 0; i < n; i++) {
            kv_seq_release(&m->kv, &jobs[i].kv);
            free(jobs[i].toks);
        }
    if (rc && out)
        gen_results_free(out, n);
    free(jobs);
    free(seqs);
    free(who);
    return rc;
}
