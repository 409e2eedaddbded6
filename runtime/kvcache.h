/* runtime/kvcache.h — paged KV cache: fixed-size blocks of tokens from one pool (sized from the
 * memory budget), per-sequence block tables, reference-counted blocks so that continuations can
 * share a context's blocks (DESIGN.md decision 3). The pool's K and V memory lives in the
 * backend; the bookkeeping here is host-side. */
#ifndef ASSAY_KVCACHE_H
#define ASSAY_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "runtime/backend.h"

typedef struct kv_cache {
    backend *be;
    int      n_layers;
    int      kv_dim;       /* n_kv_heads * head_dim */
    int      block_tokens; /* tokens per block */
    int      n_blocks;
    size_t   elem_bytes; /* of the backend's KV dtype (caps.kv_dtype) */
    void    *k, *v;      /* backend memory: [n_layers][n_blocks * block_tokens][kv_dim] */
    int32_t *free_ids;   /* stack of free block ids */
    int      n_free;
    int32_t *refs; /* per block: number of sequences holding it */
} kv_cache;

/* A sequence's view: blocks[i] holds its tokens i*block_tokens .. (i+1)*block_tokens-1.
 * Zero-initialize before first use. */
typedef struct kv_seq {
    int32_t *blocks;
    int      n_blocks;
    int      cap;
    int      n_tokens; /* tokens whose K/V are stored */
} kv_seq;

/* Bytes of backend memory a pool of n_blocks blocks takes, K and V together, with elements of
 * elem_bytes (SIZE_MAX on overflow). */
size_t kv_pool_bytes(int n_layers, int kv_dim, int block_tokens, int n_blocks, size_t elem_bytes);
/* Creates a pool in the backend's KV dtype (be->caps.kv_dtype); ASSAY_ENOMEM when the backend
 * cannot allocate it. */
int  kv_create(kv_cache *kv, backend *be, int n_layers, int kv_dim, int block_tokens, int n_blocks,
               assay_error *err);
void kv_destroy(kv_cache *kv); /* NULL-safe, idempotent */

/* Layer l's pools (backend memory, kv dtype). */
void *kv_layer_k(const kv_cache *kv, int layer);
void *kv_layer_v(const kv_cache *kv, int layer);

/* Blocks needed to hold n tokens. */
int kv_blocks_for(const kv_cache *kv, int n_tokens);
/* Makes room for n_tokens tokens in total (allocating blocks). Returns 0, or ASSAY_ENOMEM when
 * the pool has too few free blocks — then nothing was allocated and no message is set (the
 * caller may wait for blocks to be freed). */
int kv_seq_reserve(kv_cache *kv, kv_seq *s, int n_tokens);
/* Starts dst (empty) as a copy of src's first src->n_tokens tokens: full blocks are shared
 * (reference counted), a partly filled last block is copied into a fresh block so that dst can
 * append without touching src (the backend's kv_block_copy). Returns 0, ASSAY_ENOMEM (nothing
 * allocated) or the backend's status when the copy failed (nothing allocated). */
int kv_seq_fork(kv_cache *kv, kv_seq *dst, const kv_seq *src);
/* Drops s's blocks (freeing those no other sequence holds) and empties s. NULL-safe. */
void kv_seq_release(kv_cache *kv, kv_seq *s);

#endif
