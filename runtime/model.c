/* runtime/model.c — weights, the forward pass over a packed ragged batch, and the scoring and
 * generation loops on top of it. Model code talks to the device only through backend_ops. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/util.h"
#include "kernels/cpu/ops.h"
#include "loader/safetensors.h"
#include "runtime/backend.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"

#define WEIGHT_ALIGN 16 /* floats: every tensor starts on a 64-byte boundary */

typedef struct layer_weights {
    float *attn_norm_w, *attn_norm_b; /* (dim) */
    float *wqkv, *bqkv;               /* (q_dim + 2 kv_dim, dim), rows q | k | v */
    float *wo, *bo;                   /* (dim, q_dim) */
    float *ffn_norm_w, *ffn_norm_b;   /* (dim) */
    float *w_up, *b_up;               /* SwiGLU: (2 ffn, dim) rows gate | up; GELU: (ffn, dim) */
    float *w_down, *b_down;           /* (dim, ffn) */
} layer_weights;

struct model {
    model_config   cfg;
    char           dir[1024];
    backend       *be;
    float         *arena; /* all weights, backend memory */
    size_t         arena_floats, arena_used;
    float         *tok_emb, *pos_emb, *final_w, *final_b, *head, *inv_freq;
    layer_weights *layers;
    int            q_dim, kv_dim, qkv_dim, up_dim, max_T;
    /* workspace, backend memory, max_T rows each */
    float *x, *xn, *qkv, *att, *up, *act, *hsel, *saved_h;
    /* host workspace */
    int32_t *ids, *pos, *sel_tgt, *sel_id;
    int     *q_off, *start, *sel;
    float   *sel_lp;
    uint8_t *sel_gr;
    kv_cache kv;
    size_t   mem_bytes;
    int      last_nonfinite; /* the head or embedding loaded last held NaN or Inf */
    int      head_nonfinite; /* the LM head holds NaN or Inf: every logit row is suspect */
};

/* ---- memory plan ------------------------------------------------------------------------- */

typedef struct mem_plan {
    size_t weights, workspace, scratch, kv_min, kv_want;
    int    kv_tokens_want;
} mem_plan;

/* Floats a linear weight (rows, cols) takes in the backend's layout (the CPU packs panels). */
static size_t linear_floats(backend *be, size_t rows, size_t cols) {
    return (be->ops->weight_bytes(be, (int)rows, (int)cols) + sizeof(float) - 1) / sizeof(float);
}

static size_t weights_floats(const model_config *c, backend *be) {
    size_t D = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t QKV = Q + 2 * KV, norm = c->norm == NORM_LAYER ? 2 * D : D;
    size_t per = 2 * norm + linear_floats(be, QKV, D) + (c->qkv_bias ? QKV : 0) +
                 linear_floats(be, D, Q) + (c->mlp_bias ? D : 0) + linear_floats(be, D, F);
    if (c->act == ACT_SILU)
        per += linear_floats(be, 2 * F, D);
    else
        per += linear_floats(be, F, D) + (c->mlp_bias ? F + D : 0);
    size_t emb   = linear_floats(be, V, D);
    size_t total = emb + (c->learned_pos ? (size_t)c->max_pos * D : 0) + norm +
                   (c->tie_embeddings ? 0 : emb) + (size_t)c->n_layers * per + (size_t)c->head_dim;
    return total + WEIGHT_ALIGN * (size_t)(16 * c->n_layers + 16);
}

static size_t workspace_floats_per_token(const model_config *c) {
    size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t up = c->act == ACT_SILU ? 2 * F : F;
    return 2 * D + (Q + 2 * KV) + Q + up + F + 2 * D;
}

static size_t kv_bytes_per_token(const model_config *c) {
    return (size_t)c->n_layers * 2 * (size_t)c->n_kv_heads * c->head_dim * sizeof(float);
}

static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char               line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (size_t)kb * 1024;
}

static void plan_memory(const model_config *c, backend *be, int T, int block, mem_plan *p) {
    int max_in        = c->ffn_dim > c->dim ? c->ffn_dim : c->dim;
    int q_dim         = c->n_heads * c->head_dim;
    max_in            = q_dim > max_in ? q_dim : max_in;
    p->weights        = weights_floats(c, be) * sizeof(float);
    p->workspace      = (size_t)T * workspace_floats_per_token(c) * sizeof(float);
    p->scratch        = backend_cpu_scratch_bytes(T, max_in, c->dim, c->vocab_size);
    int kv_min_tok    = T + block;
    int want          = 4 * T > 8192 ? 4 * T : 8192;
    p->kv_min         = (size_t)kv_min_tok * kv_bytes_per_token(c);
    p->kv_want        = (size_t)want * kv_bytes_per_token(c);
    p->kv_tokens_want = want;
}

#define MIB(b) ((double)(b) / (1024.0 * 1024.0))

/* ---- weights ----------------------------------------------------------------------------- */

static float *take(model *m, size_t n) {
    size_t at = m->arena_used;
    m->arena_used += (n + WEIGHT_ALIGN - 1) / WEIGHT_ALIGN * WEIGHT_ALIGN;
    if (m->arena_used > m->arena_floats)
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
static int read_tensor(model *m, const st_model *sm, const char *name, float *host, size_t rows,
                       size_t cols, int transpose, assay_error *err) {
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

/* A plain array (norm weight, bias, position table) into backend memory dst. */
static int load_tensor(model *m, const st_model *sm, const char *name, float *dst, size_t rows,
                       size_t cols, assay_error *err) {
    if (m->be->host_memory) /* CPU: convert straight into the arena */
        return read_tensor(m, sm, name, dst, rows, cols, 0, err);
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
static int load_linear(model *m, const st_model *sm, float *dst, const char *const *names,
                       const size_t *rows, int n, size_t cols, int transpose, assay_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += rows[i];
    float *host = malloc(total * cols * sizeof(float) + 1);
    if (!host)
        return assay_fail(err, ASSAY_ENOMEM, "%s: no memory to convert '%s'", m->dir, names[0]);
    int rc = 0;
    for (int i = 0, r0 = 0; i < n && !rc; r0 += (int)rows[i], i++)
        rc = read_tensor(m, sm, names[i], host + (size_t)r0 * cols, rows[i], cols, transpose, err);
    /* generation only sees argmax ids, so a non-finite LM head must be known beforehand (the
     * head is the embedding when tied; other weights show in the hidden states) */
    m->last_nonfinite = 0;
    if (dst == m->head || dst == m->tok_emb)
        for (size_t i = 0; !rc && i < total * cols && !m->last_nonfinite; i++)
            m->last_nonfinite = !isfinite(host[i]);
    if (!rc && (rc = m->be->ops->upload_weight(m->be, dst, host, (int)total, (int)cols)) != 0)
        assay_fail(err, rc, "%s: uploading '%s': %s", m->dir, names[0], m->be->last_error.msg);
    free(host);
    return rc;
}

static int load_weights(model *m, const st_model *sm, assay_error *err) {
    const model_config *c = &m->cfg;
    size_t              D = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    size_t              Q = (size_t)m->q_dim, KV = (size_t)m->kv_dim, QKV = (size_t)m->qkv_dim;
    int                 gpt2 = c->arch == ARCH_GPT2;
    char                name[256];
    const char         *pfx = "";
    if (gpt2 && st_model_find(sm, "transformer.wte.weight"))
        pfx = "transformer.";
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
#define CHECK(dst, call)                                                                           \
    do {                                                                                           \
        if (!(dst))                                                                                \
            return assay_fail(err, ASSAY_EINTERNAL, "%s: weight arena too small", m->dir);         \
        int rc_ = (call);                                                                          \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)
#define LOAD(dst, rows, cols, ...)                                                                 \
    CHECK(dst, load_tensor(m, sm, NAME(__VA_ARGS__), (dst), (rows), (cols), err))
        /* a linear weight from one tensor */
#define LINEAR(dst, rows, cols, tr, ...)                                                           \
    do {                                                                                           \
        const char *n_[1] = {NAME(__VA_ARGS__)};                                                   \
        size_t      r_[1] = {(rows)};                                                              \
        CHECK(dst, load_linear(m, sm, (dst), n_, r_, 1, (cols), (tr), err));                       \
    } while (0)
    char n1[256], n2[256], n3[256];

    m->tok_emb = take(m, linear_floats(m->be, V, D));
    LINEAR(m->tok_emb, V, D, 0, gpt2 ? "%swte.weight" : "model.embed_tokens.weight", pfx);
    m->head_nonfinite = m->last_nonfinite;
    if (c->learned_pos) {
        m->pos_emb = take(m, (size_t)c->max_pos * D);
        LOAD(m->pos_emb, (size_t)c->max_pos, D, "%swpe.weight", pfx);
    }
    for (int i = 0; i < c->n_layers; i++) {
        layer_weights *L = &m->layers[i];
        L->attn_norm_w   = take(m, D);
        L->ffn_norm_w    = take(m, D);
        L->wqkv          = take(m, linear_floats(m->be, QKV, D));
        L->wo            = take(m, linear_floats(m->be, D, Q));
        if (gpt2) {
            L->attn_norm_b = take(m, D);
            L->ffn_norm_b  = take(m, D);
            L->bqkv        = take(m, QKV);
            L->bo          = take(m, D);
            L->w_up        = take(m, linear_floats(m->be, F, D));
            L->b_up        = take(m, F);
            L->w_down      = take(m, linear_floats(m->be, D, F));
            L->b_down      = take(m, D);
            LOAD(L->attn_norm_w, 1, D, "%sh.%d.ln_1.weight", pfx, i);
            LOAD(L->attn_norm_b, 1, D, "%sh.%d.ln_1.bias", pfx, i);
            LOAD(L->ffn_norm_w, 1, D, "%sh.%d.ln_2.weight", pfx, i);
            LOAD(L->ffn_norm_b, 1, D, "%sh.%d.ln_2.bias", pfx, i);
            LINEAR(L->wqkv, QKV, D, 1, "%sh.%d.attn.c_attn.weight", pfx, i);
            LOAD(L->bqkv, 1, QKV, "%sh.%d.attn.c_attn.bias", pfx, i);
            LINEAR(L->wo, D, Q, 1, "%sh.%d.attn.c_proj.weight", pfx, i);
            LOAD(L->bo, 1, D, "%sh.%d.attn.c_proj.bias", pfx, i);
            LINEAR(L->w_up, F, D, 1, "%sh.%d.mlp.c_fc.weight", pfx, i);
            LOAD(L->b_up, 1, F, "%sh.%d.mlp.c_fc.bias", pfx, i);
            LINEAR(L->w_down, D, F, 1, "%sh.%d.mlp.c_proj.weight", pfx, i);
            LOAD(L->b_down, 1, D, "%sh.%d.mlp.c_proj.bias", pfx, i);
            continue;
        }
        L->w_up   = take(m, linear_floats(m->be, 2 * F, D));
        L->w_down = take(m, linear_floats(m->be, D, F));
        LOAD(L->attn_norm_w, 1, D, "model.layers.%d.input_layernorm.weight", i);
        LOAD(L->ffn_norm_w, 1, D, "model.layers.%d.post_attention_layernorm.weight", i);
        {
            snprintf(n1, sizeof n1, "model.layers.%d.self_attn.q_proj.weight", i);
            snprintf(n2, sizeof n2, "model.layers.%d.self_attn.k_proj.weight", i);
            snprintf(n3, sizeof n3, "model.layers.%d.self_attn.v_proj.weight", i);
            const char *names[3] = {n1, n2, n3};
            size_t      rows[3]  = {Q, KV, KV};
            CHECK(L->wqkv, load_linear(m, sm, L->wqkv, names, rows, 3, D, 0, err));
        }
        if (c->qkv_bias) {
            L->bqkv = take(m, QKV);
            LOAD(L->bqkv, 1, Q, "model.layers.%d.self_attn.q_proj.bias", i);
            LOAD(L->bqkv + Q, 1, KV, "model.layers.%d.self_attn.k_proj.bias", i);
            LOAD(L->bqkv + Q + KV, 1, KV, "model.layers.%d.self_attn.v_proj.bias", i);
        }
        LINEAR(L->wo, D, Q, 0, "model.layers.%d.self_attn.o_proj.weight", i);
        {
            snprintf(n1, sizeof n1, "model.layers.%d.mlp.gate_proj.weight", i);
            snprintf(n2, sizeof n2, "model.layers.%d.mlp.up_proj.weight", i);
            const char *names[2] = {n1, n2};
            size_t      rows[2]  = {F, F};
            CHECK(L->w_up, load_linear(m, sm, L->w_up, names, rows, 2, D, 0, err));
        }
        LINEAR(L->w_down, D, F, 0, "model.layers.%d.mlp.down_proj.weight", i);
    }
    m->final_w = take(m, D);
    LOAD(m->final_w, 1, D, gpt2 ? "%sln_f.weight" : "model.norm.weight", pfx);
    if (gpt2) {
        m->final_b = take(m, D);
        LOAD(m->final_b, 1, D, "%sln_f.bias", pfx);
    }
    if (c->tie_embeddings) {
        m->head = m->tok_emb;
    } else {
        m->head = take(m, linear_floats(m->be, V, D));
        LINEAR(m->head, V, D, 0, "lm_head.weight");
        m->head_nonfinite = m->last_nonfinite;
    }
#undef LINEAR
#undef CHECK
#undef LOAD
#undef NAME
    if (c->rope != ROPE_NONE) {
        float *inv  = malloc((size_t)c->head_dim / 2 * sizeof(float) + sizeof(float));
        m->inv_freq = take(m, (size_t)c->head_dim / 2 + 1);
        if (!inv || !m->inv_freq) {
            free(inv);
            return assay_fail(err, ASSAY_ENOMEM, "%s: no memory for RoPE tables", m->dir);
        }
        rope_inv_freq(inv, c->head_dim, c->rope_theta, (int)c->rope, c->rope_factor,
                      c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_max_pos);
        int rc =
            m->be->ops->upload(m->be, m->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof(float));
        free(inv);
        if (rc)
            return assay_fail(err, rc, "%s: uploading RoPE tables", m->dir);
    }
    return 0;
}

/* ---- load / free ------------------------------------------------------------------------- */

static int alloc_be(model *m, float **p, size_t floats, assay_error *err) {
    void *ptr = NULL;
    if (m->be->ops->alloc(m->be, &ptr, floats * sizeof(float)) != 0)
        return assay_fail(err, ASSAY_ENOMEM, "%s: cannot allocate %.1f MiB of workspace", m->dir,
                          MIB(floats * sizeof(float)));
    *p = ptr;
    m->mem_bytes += floats * sizeof(float);
    return 0;
}

model *model_load(const char *dir, const model_opts *opts, assay_error *err) {
    model_opts o = {0};
    if (opts)
        o = *opts;
    if (o.max_batch_tokens <= 0)
        o.max_batch_tokens = 2048;
    if (o.kv_block_tokens <= 0)
        o.kv_block_tokens = 16;
    model    *m  = calloc(1, sizeof *m);
    st_model *sm = NULL;
    if (!m) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", dir);
        return NULL;
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    if (config_load_dir(&m->cfg, dir, err) != 0)
        goto fail;
    model_config *c = &m->cfg;
    if (c->n_layers <= 0 || c->dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->ffn_dim <= 0 || c->vocab_size <= 0 ||
        c->n_heads % c->n_kv_heads != 0 || (c->rope != ROPE_NONE && c->head_dim % 2 != 0) ||
        (c->learned_pos && c->max_pos <= 0)) {
        assay_fail(err, ASSAY_EFORMAT,
                   "%s/config.json: inconsistent model sizes (layers %d, dim %d, heads "
                   "%d/%d, head_dim %d, ffn %d, vocab %d)",
                   dir, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
                   c->vocab_size);
        goto fail;
    }
    m->q_dim   = c->n_heads * c->head_dim;
    m->kv_dim  = c->n_kv_heads * c->head_dim;
    m->qkv_dim = m->q_dim + 2 * m->kv_dim;
    m->up_dim  = c->act == ACT_SILU ? 2 * c->ffn_dim : c->ffn_dim;
    m->max_T   = o.max_batch_tokens;

    /* the budget check needs only config.json (and the backend's weight layout): nothing big is
     * read or allocated before it */
    m->be = backend_cpu_create(o.n_threads, err);
    if (!m->be)
        goto fail;
    mem_plan p;
    plan_memory(c, m->be, m->max_T, o.kv_block_tokens, &p);
    size_t budget = o.mem_budget ? o.mem_budget : mem_available() / 10 * 8;
    size_t fixed  = p.weights + p.workspace + p.scratch;
    if (budget && fixed + p.kv_min > budget) {
        assay_fail(err, ASSAY_ENOMEM,
                   "%s: needs %.1f MiB (weights %.1f + workspace %.1f + "
                   "scratch %.1f + KV cache %.1f for %d tokens) but the memory budget is %.1f MiB",
                   dir, MIB(fixed + p.kv_min), MIB(p.weights), MIB(p.workspace), MIB(p.scratch),
                   MIB(p.kv_min), m->max_T + o.kv_block_tokens, MIB(budget));
        goto fail;
    }
    if (budget && o.kv_tokens > 0 && fixed + (size_t)o.kv_tokens * kv_bytes_per_token(c) > budget) {
        assay_fail(err, ASSAY_ENOMEM,
                   "%s: needs %.1f MiB (weights %.1f + workspace %.1f + "
                   "scratch %.1f + KV cache %.1f for the requested %d tokens) but the memory "
                   "budget is %.1f MiB",
                   dir, MIB(fixed + (size_t)o.kv_tokens * kv_bytes_per_token(c)), MIB(p.weights),
                   MIB(p.workspace), MIB(p.scratch),
                   MIB((size_t)o.kv_tokens * kv_bytes_per_token(c)), o.kv_tokens, MIB(budget));
        goto fail;
    }
    int kv_tokens = o.kv_tokens > 0 ? o.kv_tokens : p.kv_tokens_want;
    if (o.kv_tokens <= 0 && budget && fixed + p.kv_want > budget)
        kv_tokens = (int)((budget - fixed) / kv_bytes_per_token(c));
    if (kv_tokens < m->max_T + o.kv_block_tokens)
        kv_tokens = m->max_T + o.kv_block_tokens;

    sm = st_model_open(dir, err);
    if (!sm)
        goto fail;
    const char **ignored   = NULL;
    int          n_ignored = 0;
    if (config_check_tensors(c, sm, &ignored, &n_ignored, err) != 0)
        goto fail;
    free(ignored);

    m->layers       = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->arena_floats = weights_floats(c, m->be);
    if (!m->layers || alloc_be(m, &m->arena, m->arena_floats, err) != 0)
        goto fail;
    if (load_weights(m, sm, err) != 0)
        goto fail;
    st_model_close(sm);
    sm = NULL;

    size_t T = (size_t)m->max_T;
    if (alloc_be(m, &m->x, T * c->dim, err) || alloc_be(m, &m->xn, T * c->dim, err) ||
        alloc_be(m, &m->qkv, T * m->qkv_dim, err) || alloc_be(m, &m->att, T * m->q_dim, err) ||
        alloc_be(m, &m->up, T * m->up_dim, err) || alloc_be(m, &m->act, T * c->ffn_dim, err) ||
        alloc_be(m, &m->hsel, T * c->dim, err) || alloc_be(m, &m->saved_h, (size_t)c->dim, err))
        goto fail;
    m->ids     = malloc(T * sizeof(int32_t));
    m->pos     = malloc(T * sizeof(int32_t));
    m->sel_tgt = malloc(T * sizeof(int32_t));
    m->sel_id  = malloc(T * sizeof(int32_t));
    m->q_off   = malloc((T + 1) * sizeof(int));
    m->start   = malloc(T * sizeof(int));
    m->sel     = malloc(T * sizeof(int));
    m->sel_lp  = malloc(T * sizeof(float));
    m->sel_gr  = malloc(T);
    if (!m->ids || !m->pos || !m->sel_tgt || !m->sel_id || !m->q_off || !m->start || !m->sel ||
        !m->sel_lp || !m->sel_gr) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for batch tables", dir);
        goto fail;
    }
    int n_blocks = (kv_tokens + o.kv_block_tokens - 1) / o.kv_block_tokens;
    if (kv_create(&m->kv, m->be, c->n_layers, m->kv_dim, o.kv_block_tokens, n_blocks, err) != 0)
        goto fail;
    m->mem_bytes += kv_pool_bytes(c->n_layers, m->kv_dim, o.kv_block_tokens, n_blocks) + p.scratch;
    return m;
fail:
    st_model_close(sm);
    model_free(m);
    return NULL;
}

void model_free(model *m) {
    if (!m)
        return;
    kv_destroy(&m->kv);
    if (m->be) {
        float *bufs[] = {m->arena, m->x, m->xn, m->qkv, m->att, m->up, m->act, m->hsel, m->saved_h};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            m->be->ops->release(m->be, bufs[i]);
    }
    backend_free(m->be);
    free(m->layers);
    free(m->ids);
    free(m->pos);
    free(m->sel_tgt);
    free(m->sel_id);
    free(m->q_off);
    free(m->start);
    free(m->sel);
    free(m->sel_lp);
    free(m->sel_gr);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->cfg; }
size_t              model_mem_bytes(const model *m) { return m->mem_bytes; }
void model_set_threads(model *m, int n_threads) { backend_cpu_set_threads(m->be, n_threads); }
int  model_max_batch_tokens(const model *m) { return m->max_T; }
int  model_kv_tokens(const model *m) { return m->kv.n_blocks * m->kv.block_tokens; }

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
            return assay_fail(err, rc_, "%s: %s", m->dir, m->be->last_error.msg);                  \
    } while (0)

/* Runs every layer over the packed new tokens of seqs (total <= max_T). use_cache: K/V go into
 * each sequence's KV blocks (reserved by the caller for start_pos + n_new tokens) and attention
 * reads them from there; else attention runs over the batch alone. Then the rows listed in
 * m->sel[0..n_sel) (packed indices) are gathered into m->hsel and final-normed. */
static int forward(model *m, const fwd_seq *seqs, int n_seqs, int use_cache, int n_sel,
                   assay_error *err) {
    const model_config *c  = &m->cfg;
    backend            *be = m->be;
    const backend_ops  *op = be->ops;
    int                 T = 0, max_blocks = 0;
    int32_t            *bt = NULL;
    for (int s = 0; s < n_seqs; s++) {
        m->q_off[s] = T;
        m->start[s] = seqs[s].start_pos;
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
    if (T == 0 || T > m->max_T)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: batch of %d tokens (budget %d)", m->dir, T,
                          m->max_T);
    if (use_cache) {
        bt = calloc((size_t)n_seqs * (max_blocks ? max_blocks : 1), sizeof(int32_t));
        if (!bt)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for block tables", m->dir);
        for (int s = 0; s < n_seqs; s++)
            memcpy(bt + (size_t)s * max_blocks, seqs[s].kv->blocks,
                   (size_t)seqs[s].kv->n_blocks * sizeof(int32_t));
    }
    int rc = 0;
#undef BE_CALL
#define BE_CALL(call)                                                                              \
    do {                                                                                           \
        rc = (call);                                                                               \
        if (rc) {                                                                                  \
            assay_fail(err, rc, "%s: %s", m->dir, be->last_error.msg);                             \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    int D = c->dim, F = c->ffn_dim, hd = c->head_dim;
    BE_CALL(op->embed(be, m->x, m->tok_emb, m->ids, T, D));
    if (c->learned_pos)
        BE_CALL(op->pos_embed_add(be, m->x, m->pos_emb, m->pos, T, D));
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        if (c->norm == NORM_RMS)
            BE_CALL(op->rmsnorm(be, m->xn, m->x, L->attn_norm_w, T, D, c->norm_eps));
        else
            BE_CALL(
                op->layernorm(be, m->xn, m->x, L->attn_norm_w, L->attn_norm_b, T, D, c->norm_eps));
        BE_CALL(op->matmul(be, m->qkv, m->xn, L->wqkv, L->bqkv, T, D, m->qkv_dim));
        float *q = m->qkv, *k = m->qkv + m->q_dim, *v = k + m->kv_dim;
        if (c->rope != ROPE_NONE) {
            BE_CALL(op->rope(be, q, m->pos, m->inv_freq, T, c->n_heads, hd, m->qkv_dim));
            BE_CALL(op->rope(be, k, m->pos, m->inv_freq, T, c->n_kv_heads, hd, m->qkv_dim));
        }
        if (use_cache) {
            BE_CALL(op->kv_store(be, kv_layer_k(&m->kv, l), kv_layer_v(&m->kv, l), k, v, m->qkv_dim,
                                 m->kv_dim, bt, max_blocks, m->kv.block_tokens, m->q_off, m->start,
                                 n_seqs));
            BE_CALL(op->attention_paged(be, m->att, q, kv_layer_k(&m->kv, l), kv_layer_v(&m->kv, l),
                                        bt, max_blocks, m->kv.block_tokens, m->q_off, m->start,
                                        n_seqs, c->n_heads, c->n_kv_heads, hd, m->qkv_dim,
                                        c->sliding_window));
        } else {
            BE_CALL(op->attention_varlen(be, m->att, q, k, v, m->q_off, n_seqs, c->n_heads,
                                         c->n_kv_heads, hd, m->qkv_dim, m->qkv_dim,
                                         c->sliding_window));
        }
        BE_CALL(op->matmul(be, m->xn, m->att, L->wo, L->bo, T, m->q_dim, D));
        BE_CALL(op->add(be, m->x, m->x, m->xn, (size_t)T * D));
        if (c->norm == NORM_RMS)
            BE_CALL(op->rmsnorm(be, m->xn, m->x, L->ffn_norm_w, T, D, c->norm_eps));
        else
            BE_CALL(
                op->layernorm(be, m->xn, m->x, L->ffn_norm_w, L->ffn_norm_b, T, D, c->norm_eps));
        if (c->act == ACT_SILU) {
            BE_CALL(op->matmul(be, m->up, m->xn, L->w_up, NULL, T, D, 2 * F));
            BE_CALL(op->swiglu(be, m->act, m->up, T, F));
        } else if (op->matmul_gelu) {
            BE_CALL(op->matmul_gelu(be, m->act, m->xn, L->w_up, L->b_up, T, D, F));
        } else {
            BE_CALL(op->matmul(be, m->up, m->xn, L->w_up, L->b_up, T, D, F));
            BE_CALL(op->gelu_new(be, m->act, m->up, (size_t)T * F));
        }
        BE_CALL(op->matmul(be, m->xn, m->act, L->w_down, L->b_down, T, F, D));
        BE_CALL(op->add(be, m->x, m->x, m->xn, (size_t)T * D));
    }
    if (use_cache)
        for (int s = 0; s < n_seqs; s++)
            seqs[s].kv->n_tokens = seqs[s].start_pos + seqs[s].n_new;
    for (int i = 0; i < n_sel; i++)
        BE_CALL(op->copy(be, m->hsel + (size_t)i * D, m->x + (size_t)m->sel[i] * D,
                         (size_t)D * sizeof(float)));
    if (n_sel > 0) {
        if (c->norm == NORM_RMS)
            BE_CALL(op->rmsnorm(be, m->hsel, m->hsel, m->final_w, n_sel, D, c->norm_eps));
        else
            BE_CALL(
                op->layernorm(be, m->hsel, m->hsel, m->final_w, m->final_b, n_sel, D, c->norm_eps));
    }
done:
    free(bt);
    return rc;
}

/* LM head over m->hsel[0..n) with targets m->sel_tgt into m->sel_lp / m->sel_gr. */
static int head_logprob(model *m, int n, assay_error *err) {
    if (n == 0)
        return 0;
    int rc = m->be->ops->target_logprob(m->be, m->sel_lp, m->sel_gr, m->hsel, m->head, m->sel_tgt,
                                        n, m->cfg.dim, m->cfg.vocab_size);
    if (rc)
        return assay_fail(err, rc, "%s: %s", m->dir, m->be->last_error.msg);
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
                if (r != 0) {
                    if (nb == 0) {
                        rc = assay_fail(err, ASSAY_ENOMEM,
                                        "%s: a sequence of %d tokens does not "
                                        "fit the KV cache (%d tokens); raise kv_tokens",
                                        m->dir, jb->start_pos + jb->n, model_kv_tokens(m));
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
        if ((rc = forward(m, seqs, nb, 1, n_sel, err)) != 0 || (rc = head_logprob(m, n_sel, err)))
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
            if (jb->done == jb->n)
                kv_seq_release(&m->kv, &jb->kv);
        }
    }
done:
    for (int j = 0; j < n_jobs; j++)
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
        jobs[n_long++]         = (cjob){.tokens    = r->tokens,
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
        if ((rc = forward(m, seqs, nb, 0, n_sel, err)) != 0 || (rc = head_logprob(m, n_sel, err)))
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
    int    rc   = 0;
    cjob  *jobs = NULL;
    kv_seq base = {0};
    if (n < 0 || n_ctx < 0 || (n_ctx > 0 && !ctx) || (n > 0 && (!conts || !out)))
        return assay_fail(err, ASSAY_EINVAL, "model_score_shared: bad arguments");
    memset(out, 0, (size_t)n * sizeof *out);
    int need_last = 0;
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
        need_last |= r->score_from == 0;
        if (result_alloc(&out[i], r->n_tokens - r->score_from) != 0) {
            rc = assay_fail(err, ASSAY_ENOMEM, "model_score_shared: out of memory");
            goto fail;
        }
    }
    jobs = calloc((size_t)(n ? n : 1), sizeof *jobs);
    if (!jobs) {
        rc = assay_fail(err, ASSAY_ENOMEM, "model_score_shared: out of memory");
        goto fail;
    }
    /* the context, once, in chunks; keep its last row's final hidden state */
    if (n_ctx > 0 && kv_seq_reserve(&m->kv, &base, n_ctx) != 0) {
        rc = assay_fail(err, ASSAY_ENOMEM,
                        "%s: a context of %d tokens does not fit the KV cache "
                        "(%d tokens)",
                        m->dir, n_ctx, model_kv_tokens(m));
        goto fail;
    }
    for (int done = 0; done < n_ctx;) {
        int     take = n_ctx - done < m->max_T ? n_ctx - done : m->max_T;
        fwd_seq s    = {ctx + done, take, done, &base};
        int     last = done + take == n_ctx && need_last;
        m->sel[0]    = take - 1;
        if ((rc = forward(m, &s, 1, 1, last, err)) != 0)
            goto fail;
        if (last)
            m->be->ops->copy(m->be, m->saved_h, m->hsel, (size_t)m->cfg.dim * sizeof(float));
        done += take;
    }
    /* first continuation tokens, predicted from the context's last row: one LM-head row per
     * continuation (the head is row-invariant, so these bits equal model_score's) */
    if (need_last) {
        int pending = 0, first = 0;
        for (int i = 0; i < n; i++) {
            if (conts[i].score_from == 0) {
                m->be->ops->copy(m->be, m->hsel + (size_t)pending * m->cfg.dim, m->saved_h,
                                 (size_t)m->cfg.dim * sizeof(float));
                m->sel_tgt[pending++] = conts[i].tokens[0];
            }
            if (pending > 0 && (pending == m->max_T || i == n - 1)) {
                if ((rc = head_logprob(m, pending, err)) != 0)
                    goto fail;
                for (int j = first, k = 0; j <= i; j++)
                    if (conts[j].score_from == 0) {
                        out[j].logprob[0]   = m->sel_lp[k];
                        out[j].is_greedy[0] = m->sel_gr[k];
                        k++;
                    }
                pending = 0;
                first   = i + 1;
            }
        }
    }
    /* the continuations on forks of the context's blocks */
    for (int i = 0; i < n; i++) {
        const score_request *r     = &conts[i];
        int                  first = (r->score_from > 1 ? r->score_from : 1) - 1;
        jobs[i]                    = (cjob){.tokens    = r->tokens,
                                            .n         = r->n_tokens - 1, /* the last: target only */
                                            .start_pos = n_ctx,
                                            .base      = &base,
                                            .first_row = first,
                                            .lp        = out[i].logprob + (first + 1 - r->score_from),
                                            .gr        = out[i].is_greedy + (first + 1 - r->score_from)};
    }
    if ((rc = run_cached_jobs(m, jobs, n, err)) != 0)
        goto fail;
    kv_seq_release(&m->kv, &base);
    for (int j = 0; j < n; j++)
        result_finish(&out[j]);
    free(jobs);
    return 0;
fail:
    kv_seq_release(&m->kv, &base);
    free(jobs);
    score_results_free(out, n);
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

/* Row k of m->hsel (final-normed hidden state) or the LM head holds NaN or Inf, so its logits
 * do. Only host-memory backends are checked here. */
static int row_nonfinite(const model *m, int k) {
    if (m->head_nonfinite)
        return 1;
    if (!m->be->host_memory)
        return 0;
    const float *h = m->hsel + (size_t)k * m->cfg.dim;
    for (int i = 0; i < m->cfg.dim; i++)
        if (!isfinite(h[i]))
            return 1;
    return 0;
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
        if ((rc = forward(m, seqs, nb, 1, n_sel, err)) != 0)
            goto done;
        if (n_sel > 0 && (rc = m->be->ops->argmax(m->be, m->sel_tgt, m->hsel, m->head, n_sel,
                                                  m->cfg.dim, m->cfg.vocab_size)) != 0) {
            rc = assay_fail(err, rc, "%s: %s", m->dir, m->be->last_error.msg);
            goto done;
        }
        for (int k = 0; k < n_sel; k++) {
            int     j   = m->sel_id[k];
            gjob   *g   = &jobs[j];
            int32_t t   = m->sel_tgt[k];
            int     eos = 0, stop = 0;
            if (row_nonfinite(m, k)) { /* its argmax means nothing: the request ends here */
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
