/* kernels/cuda/attn_plan.c — launch plans of the CUDA attention kernels (see attn_plan.h). */
#include "kernels/cuda/attn_plan.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* CUDA's grid limits: x up to 2^31 - 1, y and z up to 65535. */
#define GRID_X_MAX 2147483647u
#define GRID_YZ_MAX 65535u

size_t attn_smem_bytes(int hd) {
    if (hd < 1 || hd > ATTN_MAX_HD)
        return 0;
    size_t floats =
        (size_t)ATTN_SLOTS * hd + (size_t)hd * ATTN_KEY_STRIDE + (size_t)ATTN_KEY_TILE * hd;
    return floats * sizeof(float);
}

static int ceil_div(int a, int b) { return a / b + (a % b != 0); }

size_t attn_partial_bytes(int rows, int n_heads, int hd, int max_ctx, int split_keys) {
    if (rows < 0 || n_heads < 1 || hd < 1 || hd > ATTN_MAX_HD || max_ctx < 1 || split_keys < 1)
        return SIZE_MAX;
    int n_chunks = ceil_div(max_ctx, split_keys);
    if (n_chunks <= 1 || rows == 0)
        return 0;
    size_t per = (size_t)n_heads * (size_t)n_chunks * (size_t)(hd + 2) * sizeof(float);
    if ((size_t)rows > SIZE_MAX / per)
        return SIZE_MAX;
    return (size_t)rows * per;
}

/* The common part: head grouping, slot shape, kernel choice. */
static int plan_heads(attn_plan *p, int n_heads, int n_kv_heads, int hd, int window,
                      assay_error *err) {
    memset(p, 0, sizeof *p);
    if (n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads)
        return assay_fail(err, ASSAY_EINVAL,
                          "attention: n_heads %d is not a positive multiple of n_kv_heads %d",
                          n_heads, n_kv_heads);
    if (hd < 1 || hd > ATTN_MAX_HD)
        return assay_fail(err, ASSAY_EINVAL, "attention: head dim %d outside 1..%d", hd,
                          ATTN_MAX_HD);
    if (window < 0)
        return assay_fail(err, ASSAY_EINVAL, "attention: window %d is negative", window);
    attn_geom *g       = &p->geom;
    g->n_heads         = n_heads;
    g->n_kv_heads      = n_kv_heads;
    g->hd              = hd;
    g->window          = window;
    g->group           = n_heads / n_kv_heads;
    g->heads_per_block = g->group < ATTN_SLOTS ? g->group : ATTN_SLOTS;
    g->head_tiles      = ceil_div(g->group, g->heads_per_block);
    g->rows_per_block  = ATTN_SLOTS / g->heads_per_block;
    g->n_chunks        = 1;
    p->hd_template     = hd == 64 || hd == 80 || hd == 128 ? hd : 0;
    p->threads         = ATTN_THREADS;
    p->smem_bytes      = attn_smem_bytes(hd);
    if ((unsigned)n_kv_heads * (unsigned)g->head_tiles > GRID_YZ_MAX)
        return assay_fail(err, ASSAY_EINVAL,
                          "attention: %d KV heads x %d head tiles exceed the grid's y limit",
                          n_kv_heads, g->head_tiles);
    p->grid[1] = (unsigned)(n_kv_heads * g->head_tiles);
    return 0;
}

int attn_plan_prefill(attn_plan *p, int n_seqs, int max_len, int n_heads, int n_kv_heads, int hd,
                      int window, assay_error *err) {
    int rc = plan_heads(p, n_heads, n_kv_heads, hd, window, err);
    if (rc)
        return rc;
    if (n_seqs < 0 || max_len < 0)
        return assay_fail(err, ASSAY_EINVAL, "attention prefill: n_seqs %d, max_len %d", n_seqs,
                          max_len);
    attn_geom *g = &p->geom;
    g->n_seqs    = n_seqs;
    g->row_tiles = ceil_div(max_len, g->rows_per_block);
    if ((uint64_t)n_seqs * (uint64_t)g->row_tiles > GRID_X_MAX)
        return assay_fail(err, ASSAY_EINVAL,
                          "attention prefill: %d sequences x %d row tiles exceed the grid's x "
                          "limit",
                          n_seqs, g->row_tiles);
    p->grid[0] = (unsigned)n_seqs * (unsigned)g->row_tiles;
    p->grid[2] = 1;
    return 0;
}

int attn_plan_paged(attn_plan *p, int rows, int n_seqs, int max_ctx, int n_heads, int n_kv_heads,
                    int hd, int window, int split_keys, int max_blocks, int block_tokens,
                    assay_error *err) {
    int rc = plan_heads(p, n_heads, n_kv_heads, hd, window, err);
    if (rc)
        return rc;
    if (rows < 0 || n_seqs < 0 || (rows > 0 && n_seqs < 1))
        return assay_fail(err, ASSAY_EINVAL, "attention paged: rows %d, n_seqs %d", rows, n_seqs);
    if (max_ctx < 1 || split_keys < 1)
        return assay_fail(err, ASSAY_EINVAL, "attention paged: max_ctx %d, split_keys %d", max_ctx,
                          split_keys);
    if (max_blocks < 1 || block_tokens < 1 ||
        (int64_t)max_ctx > (int64_t)max_blocks * (int64_t)block_tokens)
        return assay_fail(err, ASSAY_EINVAL,
                          "attention paged: max_ctx %d does not fit the block table (%d blocks "
                          "of %d tokens)",
                          max_ctx, max_blocks, block_tokens);
    /* chunk starts c * split_keys are computed in int on the device */
    if ((int64_t)max_ctx + split_keys > INT_MAX)
        return assay_fail(err, ASSAY_EINVAL, "attention paged: max_ctx %d + split_keys %d overflow",
                          max_ctx, split_keys);
    attn_geom *g  = &p->geom;
    g->paged      = 1;
    g->rows       = rows;
    g->n_seqs     = n_seqs;
    g->max_ctx    = max_ctx;
    g->split_keys = split_keys;
    g->n_chunks   = ceil_div(max_ctx, split_keys);
    if ((unsigned)g->n_chunks > GRID_YZ_MAX)
        return assay_fail(err, ASSAY_EINVAL,
                          "attention paged: %d chunks of %d keys exceed the grid's z limit",
                          g->n_chunks, split_keys);
    if ((uint64_t)rows * (uint64_t)n_heads > INT_MAX)
        return assay_fail(err, ASSAY_EINVAL, "attention paged: %d rows x %d heads overflow", rows,
                          n_heads);
    p->grid[0]       = (unsigned)rows;
    p->grid[2]       = (unsigned)g->n_chunks;
    p->partial_bytes = attn_partial_bytes(rows, n_heads, hd, max_ctx, split_keys);
    if (p->partial_bytes == SIZE_MAX)
        return assay_fail(err, ASSAY_EINVAL, "attention paged: partial buffer size overflows");
    if (g->n_chunks > 1 && rows > 0)
        p->merge_grid = (unsigned)ceil_div(rows * n_heads, ATTN_WARPS);
    return 0;
}
