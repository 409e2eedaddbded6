/* runtime/cuda/cuda_plan.c — host-side arithmetic of the CUDA backend (see cuda_plan.h). */
#include "runtime/cuda/cuda_plan.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

int cuda_batch_plan(cuda_batch_layout *L, const size_t count[CB_COUNT], assay_error *err) {
    size_t off = 0;
    for (int i = 0; i < CB_COUNT; i++) {
        /* keep every offset well inside size_t, so the rounding below cannot wrap */
        if (count[i] > (SIZE_MAX / 4 - off - CUDA_BATCH_ALIGN) / 4)
            return assay_fail(err, ASSAY_EINVAL,
                              "CUDA batch: index array %d of %zu entries is too large", i,
                              count[i]);
        L->count[i] = count[i];
        L->off[i]   = off;
        off         = round_up(off + count[i] * sizeof(int32_t), CUDA_BATCH_ALIGN);
    }
    L->total = off;
    return 0;
}

void cuda_batch_pack(void *dst, const cuda_batch_layout *L, const int32_t *const src[CB_COUNT]) {
    unsigned char *d = dst;
    for (int i = 0; i < CB_COUNT; i++) {
        size_t bytes = L->count[i] * sizeof(int32_t);
        size_t end   = i + 1 < CB_COUNT ? L->off[i + 1] : L->total;
        if (bytes)
            memcpy(d + L->off[i], src[i], bytes);
        memset(d + L->off[i] + bytes, 0, end - L->off[i] - bytes);
    }
}

int cuda_batch_check(int *max_len, int *max_ctx, int n_tokens, int n_seqs, const int32_t *q_off,
                     const int32_t *start_pos, const int32_t *block_table, int max_blocks,
                     int block_tokens, int n_sel, const int32_t *sel, assay_error *err) {
    if (n_tokens < 0 || n_seqs < 0 || n_sel < 0)
        return assay_fail(err, ASSAY_EINVAL,
                          "CUDA batch: negative size (%d tokens, %d sequences, "
                          "%d selected rows)",
                          n_tokens, n_seqs, n_sel);
    if (n_seqs > 0 && (!q_off || !start_pos))
        return assay_fail(err, ASSAY_EINVAL, "CUDA batch: q_off or start_pos missing");
    if (block_table && (max_blocks <= 0 || block_tokens <= 0))
        return assay_fail(err, ASSAY_EINVAL,
                          "CUDA batch: block table of %d blocks of %d tokens per sequence",
                          max_blocks, block_tokens);
    int64_t capacity = block_table ? (int64_t)max_blocks * block_tokens : 0;
    int     mlen = 0, mctx = 0;
    if (n_seqs > 0 && q_off[0] != 0)
        return assay_fail(err, ASSAY_EINVAL, "CUDA batch: q_off[0] is %d, not 0", q_off[0]);
    for (int s = 0; s < n_seqs; s++) {
        int64_t len = (int64_t)q_off[s + 1] - q_off[s];
        if (len < 0 || q_off[s + 1] > n_tokens)
            return assay_fail(err, ASSAY_EINVAL,
                              "CUDA batch: sequence %d has rows %d..%d of %d tokens", s, q_off[s],
                              q_off[s + 1], n_tokens);
        if (start_pos[s] < 0 || (!block_table && start_pos[s] != 0))
            return assay_fail(err, ASSAY_EINVAL, "CUDA batch: sequence %d starts at position %d%s",
                              s, start_pos[s], block_table ? "" : " without a KV cache");
        int64_t ctx = (int64_t)start_pos[s] + len;
        if (block_table) {
            if (ctx > capacity)
                return assay_fail(err, ASSAY_EINVAL,
                                  "CUDA batch: sequence %d needs %lld cached tokens, its block "
                                  "table holds %lld",
                                  s, (long long)ctx, (long long)capacity);
            for (int64_t b = 0; b * block_tokens < ctx; b++)
                if (block_table[(size_t)s * max_blocks + b] < 0)
                    return assay_fail(err, ASSAY_EINVAL,
                                      "CUDA batch: sequence %d uses block slot %lld, which is "
                                      "unassigned (%d)",
                                      s, (long long)b, block_table[(size_t)s * max_blocks + b]);
        }
        if (ctx > INT32_MAX)
            return assay_fail(err, ASSAY_EINVAL, "CUDA batch: sequence %d is too long", s);
        if (len > mlen)
            mlen = (int)len;
        if (ctx > mctx)
            mctx = (int)ctx;
    }
    if (n_seqs > 0 ? q_off[n_seqs] != n_tokens : n_tokens != 0)
        return assay_fail(err, ASSAY_EINVAL, "CUDA batch: sequences cover %d rows of %d tokens",
                          n_seqs > 0 ? q_off[n_seqs] : 0, n_tokens);
    for (int i = 0; i < n_sel; i++)
        if (sel[i] < 0 || sel[i] >= n_tokens)
            return assay_fail(err, ASSAY_EINVAL, "CUDA batch: selected row %d is %d, outside 0..%d",
                              i, sel[i], n_tokens - 1);
    *max_len = mlen;
    *max_ctx = mctx;
    return 0;
}

void cuda_head_plan(cuda_head_layout *h, int n_sel) {
    size_t n       = n_sel > 0 ? (size_t)n_sel : 0;
    h->off_logprob = 0;
    h->off_argmax  = round_up(n * sizeof(float), 16);
    h->off_is_max  = round_up(h->off_argmax + n * sizeof(int32_t), 16);
    h->total       = round_up(h->off_is_max + n, 16);
}

int cuda_head_chunk_rows(int vocab, size_t cap_bytes, int max_rows) {
    if (vocab <= 0 || max_rows <= 1)
        return 1;
    size_t rows = cap_bytes / ((size_t)vocab * sizeof(float));
    if (rows > (size_t)max_rows)
        rows = (size_t)max_rows;
    return rows < 1 ? 1 : (int)rows;
}

int cuda_acc_chunk_rows(int rows, int out_dim, size_t cap_bytes) {
    if (rows <= 0 || out_dim <= 0)
        return 0;
    size_t fit = cap_bytes / ((size_t)out_dim * sizeof(float));
    if (fit > (size_t)rows)
        fit = (size_t)rows;
    return (int)fit;
}

size_t cuda_attn_groups_cap(int n_seqs, int n_tokens) {
    return (size_t)(n_seqs > 0 ? n_seqs : 0) + (size_t)(n_tokens > 0 ? n_tokens : 0);
}

size_t cuda_attn_idx_cap(int n_seqs, int n_tokens) {
    return 3 * cuda_attn_groups_cap(n_seqs, n_tokens) + 1;
}

static size_t attn_cost(size_t rows, int64_t max_ctx, int split_keys, size_t unit) {
    int64_t chunks = (max_ctx + split_keys - 1) / split_keys;
    return rows * (size_t)(chunks > 0 ? chunks : 0) * unit;
}

/* Closes the open run of whole sequences [s0, s1) as one group. */
static void attn_close_run(cuda_attn_group *g, int *n_g, int32_t *idx, size_t *used,
                           const int32_t *q_off, const int32_t *start_pos, int s0, int s1,
                           int max_ctx) {
    if (s1 <= s0)
        return;
    cuda_attn_group *G = &g[(*n_g)++];
    G->row0            = q_off[s0];
    G->rows            = q_off[s1] - q_off[s0];
    G->seq0            = s0;
    G->n_seqs          = s1 - s0;
    G->max_ctx         = max_ctx;
    G->idx_off         = *used;
    for (int s = s0; s <= s1; s++)
        idx[(*used)++] = q_off[s] - q_off[s0];
    for (int s = s0; s < s1; s++)
        idx[(*used)++] = start_pos[s];
}

int cuda_attn_groups(cuda_attn_group *g, int32_t *idx, size_t *idx_used, const int32_t *q_off,
                     const int32_t *start_pos, int n_seqs, int split_keys, size_t unit_bytes,
                     size_t cap_bytes) {
    int    n_g = 0, s0 = 0, run_ctx = 0;
    size_t used = 0;
    if (split_keys < 1)
        split_keys = 1;
    for (int s = 0; s < n_seqs; s++) {
        /* a sequence without new rows adds no keys to read: its context does not count */
        int len = q_off[s + 1] - q_off[s], ctx = len > 0 ? start_pos[s] + len : 0;
        int mc = ctx > run_ctx ? ctx : run_ctx;
        if (attn_cost((size_t)(q_off[s + 1] - q_off[s0]), mc, split_keys, unit_bytes) <=
            cap_bytes) {
            run_ctx = mc;
            continue;
        }
        attn_close_run(g, &n_g, idx, &used, q_off, start_pos, s0, s, run_ctx);
        s0      = s;
        run_ctx = ctx;
        if (attn_cost((size_t)len, ctx, split_keys, unit_bytes) <= cap_bytes)
            continue;
        /* alone it is too large: pieces of rows, each a sequence starting at its first row */
        size_t per = attn_cost(1, ctx, split_keys, unit_bytes);
        int    piece =
            per ? (int)(cap_bytes / per < (size_t)len ? cap_bytes / per : (size_t)len) : len;
        if (piece < 1)
            piece = 1;
        for (int i0 = 0; i0 < len; i0 += piece) {
            int              n = len - i0 < piece ? len - i0 : piece;
            cuda_attn_group *G = &g[n_g++];
            G->row0            = q_off[s] + i0;
            G->rows            = n;
            G->seq0            = s;
            G->n_seqs          = 1;
            G->max_ctx         = start_pos[s] + i0 + n;
            G->idx_off         = used;
            idx[used++]        = 0;
            idx[used++]        = n;
            idx[used++]        = start_pos[s] + i0;
        }
        s0      = s + 1;
        run_ctx = 0;
    }
    attn_close_run(g, &n_g, idx, &used, q_off, start_pos, s0, n_seqs, run_ctx);
    *idx_used = used;
    return n_g;
}

cuda_gemm_key cuda_gemm_key_make(int n, int k, int out_f32, int rows, int fast) {
    cuda_gemm_key key = {n, k, out_f32 ? 1 : 0, fast ? rows : 0};
    return key;
}

int cuda_gemm_cache_find(const cuda_gemm_cache *c, cuda_gemm_key key) {
    for (int i = 0; i < c->n; i++) {
        const cuda_gemm_key *e = &c->e[i].key;
        if (e->n == key.n && e->k == key.k && e->out_f32 == key.out_f32 && e->rows == key.rows)
            return i;
    }
    return -1;
}

int cuda_gemm_cache_add(cuda_gemm_cache *c, const cuda_gemm_entry *entry) {
    if (c->n == c->cap) {
        int              cap = c->cap ? 2 * c->cap : 32;
        cuda_gemm_entry *e   = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e)
            return -1;
        c->e   = e;
        c->cap = cap;
    }
    c->e[c->n] = *entry;
    return c->n++;
}

void cuda_gemm_cache_clear(cuda_gemm_cache *c) { c->n = 0; }

void cuda_gemm_cache_free(cuda_gemm_cache *c) {
    free(c->e);
    c->e   = NULL;
    c->n   = 0;
    c->cap = 0;
}

static int pow2_divisor(size_t x, int cap) {
    int a = 1;
    while (a < cap && x % (size_t)(2 * a) == 0)
        a *= 2;
    return a;
}

int cuda_gemm_align(int n, int k, int out_bytes) {
    int a = pow2_divisor((size_t)k * 2, 16);
    int d = pow2_divisor((size_t)n * (size_t)out_bytes, 16);
    return a < d ? a : d;
}

void cuda_scratch_plan_make(cuda_scratch_plan *p, int max_rows, int max_in, int dim, int vocab) {
    size_t rows     = max_rows > 0 ? (size_t)max_rows : 1;
    size_t in       = (size_t)(max_in > dim ? max_in : dim);
    size_t acc_rows = rows < CUDA_ACC_CHUNK_ROWS ? rows : CUDA_ACC_CHUNK_ROWS;
    p->workspace    = CUDA_LT_WORKSPACE;
    p->acc          = acc_rows * 2 * in * sizeof(float);
    p->logits       = (size_t)cuda_head_chunk_rows(vocab, CUDA_HEAD_CAP, CUDA_HEAD_CHUNK_ROWS) *
                (size_t)(vocab > 0 ? vocab : 0) * sizeof(float);
    cuda_head_layout h;
    cuda_head_plan(&h, (int)rows);
    p->head = h.total;
    /* ids, pos, sel, targets: rows each; q_off, start_pos: one sequence per row at most */
    p->batch = 6 * rows * sizeof(int32_t) + CB_COUNT * CUDA_BATCH_ALIGN + sizeof(int32_t);
    p->total = p->workspace + p->acc + p->logits + p->head + p->batch;
}

void cuda_bf16_from_f32(uint16_t *dst, const float *src, size_t n) {
    /* one tensor at load time; large ones are worth the cores */
#pragma omp parallel for schedule(static) if (n > (1u << 20))
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

/* ---- CUDA graphs --------------------------------------------------------------------------- */

int cuda_op_list_push(cuda_op_list *l, const cuda_op *op) {
    if (l->n == l->cap) {
        int      cap = l->cap ? 2 * l->cap : 64;
        cuda_op *o   = realloc(l->op, (size_t)cap * sizeof *o);
        if (!o)
            return -1;
        l->op  = o;
        l->cap = cap;
    }
    l->op[l->n++] = *op;
    return 0;
}

static int cuda_op_equal(const cuda_op *x, const cuda_op *y) {
    if (x->kind != y->kind || memcmp(&x->f, &y->f, sizeof x->f) != 0)
        return 0;
    for (int i = 0; i < 4; i++)
        if (x->a[i] != y->a[i])
            return 0;
    for (int i = 0; i < 5; i++)
        if (x->p[i] != y->p[i])
            return 0;
    return 1;
}

int cuda_op_list_equal(const cuda_op_list *x, const cuda_op_list *y) {
    if (x->n != y->n)
        return 0;
    for (int i = 0; i < x->n; i++)
        if (!cuda_op_equal(&x->op[i], &y->op[i]))
            return 0;
    return 1;
}

int cuda_op_list_copy(cuda_op_list *dst, const cuda_op_list *src) {
    dst->n = 0;
    for (int i = 0; i < src->n; i++)
        if (cuda_op_list_push(dst, &src->op[i]))
            return -1;
    return 0;
}

void cuda_op_list_free(cuda_op_list *l) {
    free(l->op);
    l->op = NULL;
    l->n = l->cap = 0;
}

int cuda_graph_decode_key(cuda_graph_key *key, int n_tokens, int n_seqs, const int32_t *q_off,
                          int has_table, int max_blocks, int block_tokens, int n_sel,
                          int has_targets) {
    if (!has_table || n_seqs < 1 || n_tokens != n_seqs || n_sel != n_seqs || !q_off)
        return 0;
    for (int s = 0; s <= n_seqs; s++)
        if (q_off[s] != s)
            return 0;
    key->n_seqs       = n_seqs;
    key->max_blocks   = max_blocks;
    key->block_tokens = block_tokens;
    key->has_targets  = has_targets ? 1 : 0;
    return 1;
}

int cuda_graph_attn_ctx(const cuda_graph_key *key) {
    long long ctx = (long long)key->max_blocks * key->block_tokens;
    return ctx > INT32_MAX ? INT32_MAX : (int)ctx;
}

static int cuda_graph_key_equal(const cuda_graph_key *x, const cuda_graph_key *y) {
    return x->n_seqs == y->n_seqs && x->max_blocks == y->max_blocks &&
           x->block_tokens == y->block_tokens && x->has_targets == y->has_targets;
}

cuda_graph_action cuda_graph_decide(cuda_graph_cache *c, const cuda_graph_key *key,
                                    const cuda_op_list *ops, unsigned gen, int *slot, void **drop) {
    int found = -1, victim = 0;
    *drop = NULL;
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++) {
        const cuda_graph_slot *s = &c->slot[i];
        if (s->used && cuda_graph_key_equal(&s->key, key)) {
            found = i;
            break;
        }
        /* an empty slot first, else the least recently used */
        const cuda_graph_slot *v = &c->slot[victim];
        if (v->used && (!s->used || s->last_use < v->last_use))
            victim = i;
    }
    cuda_graph_slot *s = &c->slot[found >= 0 ? found : victim];
    *slot              = found >= 0 ? found : victim;
    s->last_use        = ++c->tick;
    if (found >= 0 && s->gen == gen && cuda_op_list_equal(&s->ops, ops)) {
        if (s->exec)
            return CUDA_GRAPH_REPLAY;
        if (s->seen < INT32_MAX)
            s->seen++;
        return s->seen > CUDA_GRAPH_WARMUP ? CUDA_GRAPH_CAPTURE : CUDA_GRAPH_EAGER;
    }
    /* a new key, or this key with other ops or moved scratch: start counting again */
    *drop   = s->exec;
    s->exec = NULL;
    s->used = 1;
    s->key  = *key;
    s->gen  = gen;
    s->seen = cuda_op_list_copy(&s->ops, ops) ? 0 : 1;
    if (!s->seen)
        s->used = 0; /* out of memory for the copy: forget the slot, run eagerly */
    return CUDA_GRAPH_EAGER;
}

void cuda_graph_cache_clear(cuda_graph_cache *c, void *drop[CUDA_GRAPH_SLOTS]) {
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++) {
        drop[i]             = c->slot[i].exec;
        c->slot[i].exec     = NULL;
        c->slot[i].used     = 0;
        c->slot[i].seen     = 0;
        c->slot[i].ops.n    = 0;
        c->slot[i].last_use = 0;
    }
}

void cuda_graph_cache_free(cuda_graph_cache *c) {
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
        cuda_op_list_free(&c->slot[i].ops);
}
