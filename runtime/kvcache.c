/* runtime/kvcache.c — block pool bookkeeping for the paged KV cache. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "runtime/kvcache.h"

size_t kv_pool_bytes(int n_layers, int kv_dim, int block_tokens, int n_blocks, size_t elem_bytes) {
    size_t b = elem_bytes;
    if (n_layers < 0 || kv_dim < 0 || block_tokens < 0 || n_blocks < 0)
        return SIZE_MAX;
    if (size_mul(b, (size_t)n_layers, &b) || size_mul(b, (size_t)kv_dim, &b) ||
        size_mul(b, (size_t)block_tokens, &b) || size_mul(b, (size_t)n_blocks, &b) ||
        size_mul(b, 2, &b))
        return SIZE_MAX;
    return b;
}

int kv_create(kv_cache *kv, backend *be, int n_layers, int kv_dim, int block_tokens, int n_blocks,
              assay_error *err) {
    memset(kv, 0, sizeof *kv);
    size_t elem  = backend_dtype_bytes(be->caps.kv_dtype);
    size_t bytes = kv_pool_bytes(n_layers, kv_dim, block_tokens, n_blocks, elem);
    if (n_layers <= 0 || kv_dim <= 0 || block_tokens <= 0 || n_blocks <= 0 || elem == 0 ||
        bytes == SIZE_MAX)
        return assay_fail(err, ASSAY_EINVAL,
                          "kv cache: bad geometry (%d layers, kv_dim %d, %d tokens/block, %d "
                          "blocks)",
                          n_layers, kv_dim, block_tokens, n_blocks);
    kv->be           = be;
    kv->n_layers     = n_layers;
    kv->kv_dim       = kv_dim;
    kv->block_tokens = block_tokens;
    kv->n_blocks     = n_blocks;
    kv->elem_bytes   = elem;
    kv->free_ids     = malloc((size_t)n_blocks * sizeof(int32_t));
    kv->refs         = calloc((size_t)n_blocks, sizeof(int32_t));
    if (!kv->free_ids || !kv->refs)
        goto fail;
    void *k = NULL, *v = NULL;
    if (be->ops->alloc(be, &k, bytes / 2) != 0)
        goto fail;
    kv->k = k;
    if (be->ops->alloc(be, &v, bytes / 2) != 0)
        goto fail;
    kv->v = v;
    /* hand out low ids first */
    for (int i = 0; i < n_blocks; i++)
        kv->free_ids[i] = n_blocks - 1 - i;
    kv->n_free = n_blocks;
    return 0;
fail:
    kv_destroy(kv);
    return assay_fail(err, ASSAY_ENOMEM,
                      "kv cache: cannot allocate %zu bytes for %d blocks of %d "
                      "tokens",
                      bytes, n_blocks, block_tokens);
}

void kv_destroy(kv_cache *kv) {
    if (!kv)
        return;
    if (kv->be) {
        kv->be->ops->release(kv->be, kv->k);
        kv->be->ops->release(kv->be, kv->v);
    }
    free(kv->free_ids);
    free(kv->refs);
    memset(kv, 0, sizeof *kv);
}

static size_t layer_bytes(const kv_cache *kv) {
    return (size_t)kv->n_blocks * kv->block_tokens * kv->kv_dim * kv->elem_bytes;
}
void *kv_layer_k(const kv_cache *kv, int layer) {
    return (char *)kv->k + (size_t)layer * layer_bytes(kv);
}
void *kv_layer_v(const kv_cache *kv, int layer) {
    return (char *)kv->v + (size_t)layer * layer_bytes(kv);
}

int kv_blocks_for(const kv_cache *kv, int n_tokens) {
    return (int)(((int64_t)n_tokens + kv->block_tokens - 1) / kv->block_tokens);
}

static int seq_grow(kv_seq *s, int n) {
    if (n <= s->cap)
        return 0;
    int cap = s->cap ? s->cap : 8;
    while (cap < n)
        cap *= 2;
    int32_t *b = realloc(s->blocks, (size_t)cap * sizeof(int32_t));
    if (!b)
        return ASSAY_ENOMEM;
    s->blocks = b;
    s->cap    = cap;
    return 0;
}

int kv_seq_reserve(kv_cache *kv, kv_seq *s, int n_tokens) {
    int need = kv_blocks_for(kv, n_tokens);
    if (need <= s->n_blocks)
        return 0;
    if (need - s->n_blocks > kv->n_free || seq_grow(s, need))
        return ASSAY_ENOMEM;
    while (s->n_blocks < need) {
        int32_t id               = kv->free_ids[--kv->n_free];
        kv->refs[id]             = 1;
        s->blocks[s->n_blocks++] = id;
    }
    return 0;
}

int kv_seq_fork(kv_cache *kv, kv_seq *dst, const kv_seq *src) {
    int full = src->n_tokens / kv->block_tokens, partial = src->n_tokens % kv->block_tokens;
    int need = full + (partial ? 1 : 0);
    if ((partial && kv->n_free < 1) || seq_grow(dst, need))
        return ASSAY_ENOMEM;
    for (int i = 0; i < full; i++) {
        dst->blocks[i] = src->blocks[i];
        kv->refs[src->blocks[i]]++;
    }
    dst->n_blocks = full;
    if (partial) {
        int32_t id          = kv->free_ids[kv->n_free - 1];
        int32_t sid         = src->blocks[full];
        size_t  block_bytes = (size_t)kv->block_tokens * kv->kv_dim * kv->elem_bytes;
        int     rc = kv->be->ops->kv_block_copy(kv->be, kv->k, kv->v, kv->n_layers, layer_bytes(kv),
                                                block_bytes, id, sid);
        if (rc) {
            for (int i = 0; i < full; i++)
                kv->refs[src->blocks[i]]--;
            dst->n_blocks = 0;
            return rc;
        }
        kv->n_free--;
        kv->refs[id]                 = 1;
        dst->blocks[dst->n_blocks++] = id;
    }
    dst->n_tokens = src->n_tokens;
    return 0;
}

void kv_seq_release(kv_cache *kv, kv_seq *s) {
    if (!s)
        return;
    for (int i = 0; i < s->n_blocks; i++) {
        int32_t id = s->blocks[i];
        if (--kv->refs[id] == 0)
            kv->free_ids[kv->n_free++] = id;
    }
    free(s->blocks);
    memset(s, 0, sizeof *s);
}
