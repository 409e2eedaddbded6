/* kernels/cuda/attn_plan.h — host-side launch planning for the CUDA attention kernels
 * (kernels/cuda/attention.cu), in plain C so that every grid size, shared-memory size and scratch
 * size is unit-tested without a GPU (tests/test_attn_plan.c).
 *
 * The work unit of both kernels is a block of ATTN_SLOTS "query slots": (new row, query head)
 * pairs that share one KV head, so one tile of keys in shared memory serves all of them. A block
 * takes rows_per_block consecutive rows of one sequence times heads_per_block query heads of
 * one GQA group (rows_per_block * heads_per_block <= ATTN_SLOTS). Keys are visited in tiles of
 * ATTN_KEY_TILE at absolute positions (multiples of ATTN_KEY_TILE from the chunk start), which is
 * what makes a query's arithmetic independent of the other queries in its block.
 *
 * The paged kernel also splits each query's key range into chunks of split_keys keys at absolute
 * positions (chunk c = positions c*split_keys .. (c+1)*split_keys - 1): one block per (row tile,
 * head tile, chunk). A query whose visible keys lie in one chunk is written directly; otherwise
 * each chunk leaves (max, sum, acc[hd]) in fp32 in the partial buffer and a merge kernel combines
 * them in chunk order. */
#ifndef ASSAY_ATTN_PLAN_H
#define ASSAY_ATTN_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    ATTN_WARPS          = 4,                                /* warps per block */
    ATTN_THREADS        = 32 * ATTN_WARPS,                  /* threads per block */
    ATTN_SLOTS_PER_WARP = 4,                                /* queries a warp carries at once */
    ATTN_SLOTS          = ATTN_WARPS * ATTN_SLOTS_PER_WARP, /* query slots per block */
    ATTN_KEY_TILE       = 32,        /* keys per shared-memory tile: a lane each */
    ATTN_KEY_STRIDE     = 33,        /* row stride of the transposed key tile (floats) */
    ATTN_MAX_HD         = 256,       /* largest head dim (the generic path) */
    ATTN_SMEM_DEFAULT   = 48 * 1024, /* dynamic shared memory a kernel gets without opting in */
    /* A fixed split for callers that have no reason to pick another: a multiple of the key tile
     * (so chunk and tile boundaries agree), small enough that a single decode row of a 2k context
     * still spreads over 8 blocks per KV head. */
    ATTN_SPLIT_KEYS_DEFAULT = 256
};

/* What the kernels need to find their work (passed to them by value). */
typedef struct attn_geom {
    int paged; /* 1: cuda_attention_paged; 0: prefill */
    int n_seqs, n_heads, n_kv_heads, hd, window;
    int group;                         /* query heads per KV head */
    int heads_per_block;               /* query heads of one group in a block */
    int head_tiles;                    /* blocks across one group: ceil(group / heads_per_block) */
    int rows_per_block;                /* consecutive rows of one sequence in a block */
    int row_tiles;                     /* prefill: ceil(max_len / rows_per_block); paged: 0 */
    int max_ctx, split_keys, n_chunks; /* paged: n_chunks = ceil(max_ctx / split_keys) */
    int rows;                          /* paged: rows the caller sized out and partial for */
} attn_geom;

typedef struct attn_plan {
    attn_geom geom;
    int       hd_template; /* 64, 80, 128: a kernel specialised for that head dim; 0: generic */
    unsigned  grid[3];     /* main kernel: x (prefill: sequence x row tile; paged: row), y (KV
                              head x head tile), z (paged: chunk) */
    unsigned merge_grid;   /* paged merge kernel (ATTN_THREADS threads, a warp per (row, head));
                              0: no merge needed (every query fits in one chunk) */
    int    threads;        /* ATTN_THREADS */
    size_t smem_bytes;     /* dynamic shared memory of the main kernel */
    size_t partial_bytes;  /* paged: scratch for the chunk partials (0: none needed) */
} attn_plan;

/* Shared-memory bytes of one block, all fp32: the slots' queries (ATTN_SLOTS x hd), the key
 * tile transposed (hd x ATTN_KEY_STRIDE: lane j reads key j of dim d at d * 33 + j, and the
 * loader, lane d writing dim d of one key, hits 32 distinct banks too) and the value tile
 * (ATTN_KEY_TILE x hd). */
size_t attn_smem_bytes(int hd);

/* Bytes of partial scratch for the paged kernel: rows * n_heads * n_chunks * (hd + 2) floats when
 * a key range can span more than one chunk (n_chunks > 1), else 0. SIZE_MAX on invalid arguments
 * or overflow (so that allocating it fails loudly). */
size_t attn_partial_bytes(int rows, int n_heads, int hd, int max_ctx, int split_keys);

/* Plans cuda_attention_prefill. Fails (ASSAY_EINVAL, naming the argument) on n_seqs < 0,
 * max_len < 0, heads not dividing, hd outside 1..ATTN_MAX_HD, window < 0, or a grid beyond the
 * CUDA limits. n_seqs == 0 or max_len == 0 plans an empty grid (grid[0] == 0). */
int attn_plan_prefill(attn_plan *p, int n_seqs, int max_len, int n_heads, int n_kv_heads, int hd,
                      int window, assay_error *err);

/* Plans cuda_attention_paged. Same checks, plus rows >= 0, n_seqs >= 1 when rows > 0, max_ctx >= 1,
 * split_keys >= 1, block_tokens >= 1, max_blocks >= 1 and max_ctx <= max_blocks * block_tokens
 * (every position a query may have is in the block table). rows == 0 plans an empty grid. */
int attn_plan_paged(attn_plan *p, int rows, int n_seqs, int max_ctx, int n_heads, int n_kv_heads,
                    int hd, int window, int split_keys, int max_blocks, int block_tokens,
                    assay_error *err);

#ifdef __cplusplus
}
#endif

/* ---- Work decoding, shared by the kernels and the CPU tests -----------------------------------
 * The kernels call these with device pointers; tests/test_attn_plan.c calls them on host arrays
 * to check, for random batches, that the grid writes every output exactly once and visits every
 * key a query may see. */
#ifdef __CUDACC__
#define ATTN_FN __host__ __device__ static inline
#else
#define ATTN_FN static inline
#endif

ATTN_FN int attn_imin(int a, int b) { return a < b ? a : b; }
ATTN_FN int attn_imax(int a, int b) { return a > b ? a : b; }

/* First key position visible from position p (window > 0: key j visible iff p - j < window). */
ATTN_FN int attn_window_lo(int p, int window) {
    return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
}

/* The sequence that owns packed row r: the largest s with q_off[s] <= r (an empty sequence
 * shares its offset with the next one, the owner). n_seqs >= 1. */
ATTN_FN int attn_find_seq(const int32_t *q_off, int n_seqs, int r) {
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (q_off[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* The work of one block of the main kernel. */
typedef struct attn_block {
    int s, i0, nr;                 /* rows i0 .. i0+nr-1 of sequence s (nr 0: none) */
    int g, hb, nh;                 /* KV head g, query heads g*group + hb .. + nh - 1 */
    int start;                     /* position of the sequence's row 0 */
    int chunk, chunk_lo, chunk_hi; /* keys chunk_lo .. chunk_hi - 1 (prefill: 0, 0, INT32_MAX) */
    int lo, hi, t0;                /* keys lo .. hi (lo > hi: none), tiles from t0 */
    int poison_i0, poison_i1;      /* rows [poison_i0, poison_i1) of sequence s get NaN for these
                                      heads (a broken precondition, see attention.cu) */
} attn_block;

/* Fills b for block (bx, by, bz); returns 1 when it has keys to visit. */
ATTN_FN int attn_block_decode(attn_block *b, const attn_geom *ge, const int32_t *q_off,
                              const int32_t *start_pos, unsigned bx, unsigned by, unsigned bz) {
    b->g         = (int)(by / (unsigned)ge->head_tiles);
    b->hb        = (int)(by % (unsigned)ge->head_tiles) * ge->heads_per_block;
    b->nh        = attn_imin(ge->heads_per_block, ge->group - b->hb);
    b->poison_i0 = b->poison_i1 = 0;
    b->nr                       = 0;
    b->lo = 1, b->hi = 0, b->t0 = 0;
    if (ge->paged) {
        int r       = (int)bx;
        b->s        = attn_find_seq(q_off, ge->n_seqs, r);
        b->i0       = r - q_off[b->s];
        b->start    = start_pos[b->s];
        b->chunk    = (int)bz;
        b->chunk_lo = b->chunk * ge->split_keys;
        b->chunk_hi = b->chunk_lo + ge->split_keys;
        if (b->i0 % ge->rows_per_block)
            return 0; /* a row inside another block's tile */
        /* never past the rows out and partial were sized for, whatever q_off says */
        b->nr =
            attn_imax(0, attn_imin(ge->rows_per_block, attn_imin(q_off[b->s + 1], ge->rows) - r));
        if (b->nr == 0)
            return 0; /* r beyond the batch */
        if (b->chunk == 0 && b->start + b->i0 + b->nr > ge->max_ctx) {
            /* positions past max_ctx have no chunk and no block-table entry */
            b->poison_i0 = attn_imax(b->i0, ge->max_ctx - b->start);
            b->poison_i1 = b->i0 + b->nr;
        }
    } else {
        b->s        = (int)(bx / (unsigned)ge->row_tiles);
        int tile    = ge->row_tiles - 1 - (int)(bx % (unsigned)ge->row_tiles); /* long first */
        int len     = q_off[b->s + 1] - q_off[b->s];
        b->start    = 0;
        b->chunk    = 0;
        b->chunk_lo = 0;
        b->chunk_hi = INT32_MAX;
        b->i0       = tile * ge->rows_per_block;
        if (len > ge->row_tiles * ge->rows_per_block) {
            /* longer than max_len: rows no block covers; NaN on the whole sequence, written by
             * its first tile alone */
            if (tile == 0)
                b->poison_i1 = len;
            return 0;
        }
        if (b->i0 >= len)
            return 0;
        b->nr = attn_imin(ge->rows_per_block, len - b->i0);
    }
    int p_first = b->start + b->i0, p_last = b->start + b->i0 + b->nr - 1;
    b->lo = attn_imax(attn_window_lo(p_first, ge->window), b->chunk_lo);
    b->hi = attn_imin(p_last, b->chunk_hi - 1);
    if (ge->paged)
        b->hi = attn_imin(b->hi, ge->max_ctx - 1);
    if (b->lo > b->hi)
        return 0;
    /* absolute tiles: multiples of ATTN_KEY_TILE from the chunk start */
    b->t0 = b->chunk_lo + (b->lo - b->chunk_lo) / ATTN_KEY_TILE * ATTN_KEY_TILE;
    return 1;
}

/* Slot u of block b: local row *i and query head *h. */
ATTN_FN void attn_slot(int *i, int *h, const attn_block *b, const attn_geom *ge, int u) {
    *i = b->i0 + u / b->nh;
    *h = b->g * ge->group + b->hb + u % b->nh;
}

/* Keys *qa .. *qb that the query at position p sees in block b (*qa > *qb: none). Depends on
 * p and the chunk alone, not on the block's other rows. */
ATTN_FN void attn_query_keys(int *qa, int *qb, const attn_block *b, const attn_geom *ge, int p) {
    *qa = attn_imax(attn_window_lo(p, ge->window), b->chunk_lo);
    *qb = attn_imin(p, b->hi);
}

enum { ATTN_OUT_NONE = 0, ATTN_OUT_DIRECT, ATTN_OUT_PARTIAL };

/* Paged: the chunks c0 .. c1 holding the keys of the query at position p. */
ATTN_FN void attn_query_chunks(int *c0, int *c1, const attn_geom *ge, int p) {
    *c0 = attn_window_lo(p, ge->window) / ge->split_keys;
    *c1 = p / ge->split_keys;
}

/* What block b writes for the query at position p that saw keys (any) or not. */
ATTN_FN int attn_query_output(const attn_block *b, const attn_geom *ge, int p, int any) {
    if (!ge->paged)
        return ATTN_OUT_DIRECT;
    if (p >= ge->max_ctx || !any)
        return ATTN_OUT_NONE; /* past max_ctx: poisoned instead */
    int c0, c1;
    attn_query_chunks(&c0, &c1, ge, p);
    if (c0 != c1)
        return ATTN_OUT_PARTIAL;
    return b->chunk == c0 ? ATTN_OUT_DIRECT : ATTN_OUT_NONE;
}

/* Merge kernel: whether (row r) needs a merge, and of which chunks. */
ATTN_FN int attn_merge_row(int *c0, int *c1, const attn_geom *ge, const int32_t *q_off,
                           const int32_t *start_pos, int r) {
    int s = attn_find_seq(q_off, ge->n_seqs, r);
    if (r >= q_off[s + 1])
        return 0;
    int p = start_pos[s] + r - q_off[s];
    if (p >= ge->max_ctx)
        return 0;
    attn_query_chunks(c0, c1, ge, p);
    return *c0 != *c1;
}

#endif
