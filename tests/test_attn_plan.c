/* tests/test_attn_plan.c — the CUDA attention kernels' launch plans and work decoding, on the
 * CPU. The kernels find their work through the same inline functions (kernels/cuda/attn_plan.h),
 * so walking every block of a planned grid here proves, for random batches, what the GPU will
 * do: each output written exactly once (directly, by the merge, or as NaN for a broken
 * precondition), each query's visible keys visited in absolute tiles, and no index outside the
 * batch, the sequence or the block table. A C model of the kernels' reduction order, against
 * the CPU reference, checks the tolerance attention.cu states. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/attn_plan.h"
#include "tests/helpers.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static int      irand(int n) { /* uniform in [0, n) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int)((rng >> 33) % (uint64_t)n);
}

Test(attn_plan, rejects_bad_shapes_naming_the_argument) {
    attn_plan   p;
    assay_error err;
    cr_assert_eq(attn_plan_prefill(&p, 2, 8, 6, 4, 64, 0, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "n_kv_heads 4"), "%s", err.msg);
    cr_assert_eq(attn_plan_prefill(&p, 2, 8, 4, 0, 64, 0, &err), ASSAY_EINVAL);
    cr_assert_eq(attn_plan_prefill(&p, 2, 8, 4, 4, 0, 0, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "head dim 0"), "%s", err.msg);
    cr_assert_eq(attn_plan_prefill(&p, 2, 8, 4, 4, ATTN_MAX_HD + 1, 0, &err), ASSAY_EINVAL);
    cr_assert_eq(attn_plan_prefill(&p, 2, 8, 4, 4, 64, -1, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "window -1"), "%s", err.msg);
    cr_assert_eq(attn_plan_prefill(&p, -1, 8, 4, 4, 64, 0, &err), ASSAY_EINVAL);
    cr_assert_eq(attn_plan_prefill(&p, 1 << 30, 1 << 20, 4, 4, 64, 0, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "grid"), "%s", err.msg);

    cr_assert_eq(attn_plan_paged(&p, 4, 2, 100, 4, 2, 64, 0, 256, 6, 16, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "block table"), "%s", err.msg); /* 100 > 6 * 16 */
    cr_assert_eq(attn_plan_paged(&p, 4, 2, 96, 4, 2, 64, 0, 0, 6, 16, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "split_keys 0"), "%s", err.msg);
    cr_assert_eq(attn_plan_paged(&p, 4, 0, 96, 4, 2, 64, 0, 32, 6, 16, &err), ASSAY_EINVAL);
    cr_assert_eq(attn_plan_paged(&p, -1, 1, 96, 4, 2, 64, 0, 32, 6, 16, &err), ASSAY_EINVAL);
    cr_assert_eq(attn_plan_paged(&p, 4, 2, 1 << 20, 4, 2, 64, 0, 1, 1 << 20, 1, &err),
                 ASSAY_EINVAL); /* 2^20 chunks: over the grid's z limit */
    cr_assert(strstr(err.msg, "z limit"), "%s", err.msg);

    cr_assert_eq(attn_plan_paged(&p, 0, 0, 96, 4, 2, 64, 0, 32, 6, 16, &err), 0);
    cr_assert_eq(p.grid[0], 0u, "no rows: an empty grid, nothing launched");
    cr_assert_eq(attn_plan_prefill(&p, 3, 0, 4, 2, 64, 0, &err), 0);
    cr_assert_eq(p.grid[0], 0u);
}

Test(attn_plan, picks_a_template_for_64_80_128_and_the_generic_path_otherwise) {
    attn_plan p;
    int       hds[] = {64, 80, 128, 1, 32, 96, 100, 256}, want[] = {64, 80, 128, 0, 0, 0, 0, 0};
    for (int k = 0; k < 8; k++) {
        cr_assert_eq(attn_plan_prefill(&p, 1, 4, 8, 2, hds[k], 0, NULL), 0);
        cr_assert_eq(p.hd_template, want[k], "hd %d", hds[k]);
        cr_assert_eq(p.smem_bytes, attn_smem_bytes(hds[k]));
        cr_assert_eq(p.threads, ATTN_THREADS);
    }
}

Test(attn_plan, shared_memory_fits_and_key_rows_hit_distinct_banks) {
    /* The templated head dims run without opting in to more than 48 KiB; the largest generic one
     * within sm_80's opt-in limit (163 KiB; sm_90 allows 227 KiB). */
    cr_assert_leq(attn_smem_bytes(64), (size_t)ATTN_SMEM_DEFAULT);
    cr_assert_leq(attn_smem_bytes(80), (size_t)ATTN_SMEM_DEFAULT);
    cr_assert_leq(attn_smem_bytes(128), (size_t)ATTN_SMEM_DEFAULT);
    cr_assert_leq(attn_smem_bytes(ATTN_MAX_HD), (size_t)163 * 1024);
    cr_assert_eq(attn_smem_bytes(128), (size_t)(16 * 128 + 128 * 33 + 32 * 128) * 4);
    cr_assert_eq(attn_smem_bytes(0), (size_t)0);
    /* the transposed key tile: lane j reading (d, j), and lane d writing (d, j) */
    for (int x = 0; x < 32; x++) {
        unsigned reads = 0, writes = 0;
        for (int lane = 0; lane < 32; lane++) {
            reads |= 1u << ((x * ATTN_KEY_STRIDE + lane) % 32);
            writes |= 1u << ((lane * ATTN_KEY_STRIDE + x) % 32);
        }
        cr_assert_eq(reads, 0xffffffffu);
        cr_assert_eq(writes, 0xffffffffu);
    }
}

Test(attn_plan, partial_bytes_cover_every_chunk_and_vanish_for_one_chunk) {
    cr_assert_eq(attn_partial_bytes(100, 8, 128, 512, 512), (size_t)0);
    cr_assert_eq(attn_partial_bytes(0, 8, 128, 4096, 512), (size_t)0);
    /* 1000 keys in chunks of 256: 4 chunks of (max, sum, 64 acc) floats per (row, head) */
    cr_assert_eq(attn_partial_bytes(3, 4, 64, 1000, 256), (size_t)3 * 4 * 4 * 66 * 4);
    cr_assert_eq(attn_partial_bytes(3, 4, 64, 1025, 256), (size_t)3 * 4 * 5 * 66 * 4);
    cr_assert_eq(attn_partial_bytes(-1, 4, 64, 1000, 256), SIZE_MAX);
    cr_assert_eq(attn_partial_bytes(3, 4, 64, 1000, 0), SIZE_MAX);
    cr_assert_eq(attn_partial_bytes(3, 4, 300, 1000, 256), SIZE_MAX);
    if (sizeof(size_t) == 4)
        cr_assert_eq(attn_partial_bytes(INT_MAX, 64, 256, INT_MAX / 2, 1), SIZE_MAX);
    attn_plan p;
    cr_assert_eq(attn_plan_paged(&p, 7, 3, 2000, 12, 4, 80, 0, 512, 125, 16, NULL), 0);
    cr_assert_eq(p.partial_bytes, attn_partial_bytes(7, 12, 80, 2000, 512));
    cr_assert_eq(p.geom.n_chunks, 4);
    cr_assert_eq(p.grid[2], 4u);
    cr_assert_geq(p.merge_grid * ATTN_WARPS, 7u * 12u, "a warp for every (row, head)");
    cr_assert_lt((p.merge_grid - 1) * ATTN_WARPS, 7u * 12u);
    cr_assert_eq(attn_plan_paged(&p, 7, 3, 512, 12, 4, 80, 0, 512, 32, 16, NULL), 0);
    cr_assert_eq(p.merge_grid, 0u, "one chunk: no merge");
    cr_assert_eq(p.partial_bytes, (size_t)0);
}

Test(attn_plan, slots_cover_each_gqa_group_within_a_block) {
    attn_plan p;
    for (int group = 1; group <= 40; group++) {
        cr_assert_eq(attn_plan_prefill(&p, 1, 64, 3 * group, 3, 64, 0, NULL), 0);
        const attn_geom *g = &p.geom;
        cr_assert_eq(g->group, group);
        cr_assert_leq(g->heads_per_block * g->rows_per_block, ATTN_SLOTS);
        cr_assert_geq(g->rows_per_block, 1);
        cr_assert_geq(g->head_tiles * g->heads_per_block, group);
        cr_assert_lt((g->head_tiles - 1) * g->heads_per_block, group);
        cr_assert_eq(p.grid[1], (unsigned)(3 * g->head_tiles));
        /* small groups fill the block: at most heads_per_block - 1 idle slots */
        cr_assert_gt(g->heads_per_block * (g->rows_per_block + 1), ATTN_SLOTS);
    }
}

/* ---- walking a planned grid ------------------------------------------------------------------ */

typedef struct walk {
    int *out;     /* (rows, n_heads): times written, directly or by the merge */
    int *poison;  /* (rows, n_heads): times written NaN */
    int *partial; /* (rows, n_heads, n_chunks): times written */
} walk;

/* The keys query p may see (the reference's definition), and checks on a block's work. */
static void check_block(const attn_plan *p, const attn_block *b, const int32_t *q_off,
                        const int32_t *block_table, int max_blocks, int block_tokens) {
    const attn_geom *g   = &p->geom;
    int              len = q_off[b->s + 1] - q_off[b->s];
    cr_assert(b->nr >= 1 && b->nr <= g->rows_per_block);
    cr_assert(b->i0 >= 0 && b->i0 + b->nr <= len, "rows %d+%d of a %d-row sequence", b->i0, b->nr,
              len);
    cr_assert(b->nh >= 1 && b->hb + b->nh <= g->group && b->g < g->n_kv_heads);
    cr_assert(b->nr * b->nh <= ATTN_SLOTS);
    cr_assert(b->lo <= b->hi && b->lo >= 0);
    cr_assert(b->lo >= b->chunk_lo && b->hi < b->chunk_hi);
    cr_assert_eq((b->t0 - b->chunk_lo) % ATTN_KEY_TILE, 0, "tiles at absolute positions");
    cr_assert(b->t0 <= b->lo && b->t0 + ATTN_KEY_TILE > b->lo);
    if (g->paged) {
        cr_assert_lt(b->hi, g->max_ctx);
        cr_assert_lt(b->hi / block_tokens, max_blocks, "block table read in bounds");
        (void)block_table;
    } else {
        cr_assert_lt(b->hi, len, "keys are rows of the sequence");
    }
}

/* Visits every block of the main kernel (and the merge) the way the GPU will. */
static void walk_grid(walk *w, const attn_plan *p, const int32_t *q_off, const int32_t *start_pos,
                      const int32_t *block_table, int max_blocks, int block_tokens, int rows) {
    const attn_geom *g = &p->geom;
    int              H = g->n_heads, C = g->n_chunks;
    for (unsigned bz = 0; bz < p->grid[2]; bz++)
        for (unsigned by = 0; by < p->grid[1]; by++)
            for (unsigned bx = 0; bx < p->grid[0]; bx++) {
                attn_block b;
                int        work = attn_block_decode(&b, g, q_off, start_pos, bx, by, bz);
                for (int i = b.poison_i0; i < b.poison_i1; i++)
                    for (int k = 0; k < b.nh; k++)
                        w->poison[(q_off[b.s] + i) * H + b.g * g->group + b.hb + k]++;
                if (!work)
                    continue;
                check_block(p, &b, q_off, block_table, max_blocks, block_tokens);
                for (int u = 0; u < b.nr * b.nh; u++) {
                    int i, h, qa, qb;
                    attn_slot(&i, &h, &b, g, u);
                    int pos = b.start + i, row = q_off[b.s] + i;
                    cr_assert_lt(row, rows, "row %d of a %d-row call", row, rows);
                    attn_query_keys(&qa, &qb, &b, g, pos);
                    /* the query's own keys in this chunk, whatever the block's other rows */
                    int want_a = attn_imax(attn_window_lo(pos, g->window), b.chunk_lo);
                    int want_b = attn_imin(pos, b.chunk_hi - 1);
                    if (g->paged)
                        want_b = attn_imin(want_b, g->max_ctx - 1);
                    cr_assert_eq(qa, want_a);
                    cr_assert_eq(qb, want_b);
                    cr_assert(qa > qb || (qa >= b.lo && qb <= b.hi), "visible keys visited");
                    int kind = attn_query_output(&b, g, pos, qa <= qb);
                    if (kind == ATTN_OUT_DIRECT) {
                        cr_assert(qa <= qb);
                        cr_assert_eq(qa, attn_window_lo(pos, g->window), "all its keys here");
                        cr_assert_eq(qb, pos);
                        w->out[row * H + h]++;
                    } else if (kind == ATTN_OUT_PARTIAL) {
                        w->partial[((size_t)row * H + h) * C + b.chunk]++;
                    }
                }
            }
    if (!g->paged)
        return;
    cr_assert_eq(p->merge_grid == 0, C == 1 || rows == 0);
    for (unsigned pair = 0; pair < p->merge_grid * ATTN_WARPS; pair++) {
        if (pair >= (unsigned)(rows * H))
            break;
        int r = (int)pair / H, h = (int)pair % H, c0, c1;
        if (!attn_merge_row(&c0, &c1, g, q_off, start_pos, r))
            continue;
        cr_assert(c0 >= 0 && c0 < c1 && c1 < C);
        for (int c = c0; c <= c1; c++)
            cr_assert_eq(w->partial[((size_t)r * H + h) * C + c], 1,
                         "row %d head %d chunk %d merged but written %d times", r, h, c,
                         w->partial[((size_t)r * H + h) * C + c]);
        w->out[r * H + h]++;
    }
}

typedef struct shape {
    int n_heads, n_kv_heads, hd, window;
} shape;

static const shape shapes[] = {
    {4, 4, 64, 0}, {8, 2, 64, 0}, {14, 2, 64, 5}, {32, 1, 80, 0}, {12, 3, 128, 7}, {40, 2, 96, 0},
};

Test(attn_plan, prefill_grid_writes_every_output_once_over_all_its_keys) {
    for (int trial = 0; trial < 60; trial++) {
        const shape *sh     = &shapes[trial % 6];
        int          n_seqs = 1 + irand(6), max_len = 0;
        int32_t      q_off[8];
        q_off[0] = 0;
        for (int s = 0; s < n_seqs; s++) {
            int len      = irand(5) == 0 ? 0 : 1 + irand(trial < 30 ? 40 : 150);
            q_off[s + 1] = q_off[s] + len;
            if (len > max_len)
                max_len = len;
        }
        int rows = q_off[n_seqs];
        /* a third of the trials understate max_len: those sequences must come out NaN */
        int       short_max = trial % 3 == 2 && max_len > 1 ? max_len - 1 - irand(max_len - 1) : 0;
        attn_plan p;
        cr_assert_eq(attn_plan_prefill(&p, n_seqs, short_max ? short_max : max_len, sh->n_heads,
                                       sh->n_kv_heads, sh->hd, sh->window, NULL),
                     0);
        walk w = {calloc((size_t)rows * sh->n_heads + 1, sizeof(int)),
                  calloc((size_t)rows * sh->n_heads + 1, sizeof(int)), NULL};
        cr_assert(w.out && w.poison);
        walk_grid(&w, &p, q_off, NULL, NULL, 0, 1, rows);
        int covered = p.geom.row_tiles * p.geom.rows_per_block;
        for (int s = 0; s < n_seqs; s++)
            for (int r = q_off[s]; r < q_off[s + 1]; r++)
                for (int h = 0; h < sh->n_heads; h++) {
                    int too_long = q_off[s + 1] - q_off[s] > covered;
                    cr_assert_eq(w.out[r * sh->n_heads + h], !too_long,
                                 "trial %d row %d head %d written %d times", trial, r, h,
                                 w.out[r * sh->n_heads + h]);
                    cr_assert_eq(w.poison[r * sh->n_heads + h], too_long);
                }
        free(w.out);
        free(w.poison);
    }
}

Test(attn_plan, paged_grid_writes_every_output_once_from_chunk_partials) {
    for (int trial = 0; trial < 80; trial++) {
        const shape *sh     = &shapes[trial % 6];
        int          n_seqs = 1 + irand(5), block_tokens = 1 + irand(20), max_blocks = 4 + irand(8);
        int          capacity = max_blocks * block_tokens;
        int          max_ctx  = capacity - irand(block_tokens);
        /* fixed splits: tile multiples, and odd ones the kernel must also get right */
        int     splits[] = {32, 64, 256, 7, 50, 1000}, split_keys = splits[irand(6)];
        int32_t q_off[7], start_pos[6], *table = malloc((size_t)n_seqs * max_blocks * 4);
        cr_assert(table);
        q_off[0] = 0;
        for (int s = 0; s < n_seqs; s++) {
            /* decode rows, chunked prefill on a long context, and a few rows past max_ctx */
            int n_new    = irand(3) == 0 ? 1 : irand(4) == 0 ? 0 : 1 + irand(40);
            int overflow = trial % 5 == 4 && s == 0;
            n_new        = attn_imin(n_new, max_ctx);
            start_pos[s] = overflow ? max_ctx - n_new + 1 + irand(3) : irand(max_ctx - n_new + 1);
            q_off[s + 1] = q_off[s] + n_new;
            for (int k = 0; k < max_blocks; k++)
                table[s * max_blocks + k] = irand(1000);
        }
        int rows = q_off[n_seqs];
        /* some calls say fewer rows than q_off holds: nothing past them is touched */
        if (trial % 7 == 6 && rows > 1)
            rows -= 1 + irand(rows - 1);
        attn_plan p;
        cr_assert_eq(attn_plan_paged(&p, rows, n_seqs, max_ctx, sh->n_heads, sh->n_kv_heads, sh->hd,
                                     sh->window, split_keys, max_blocks, block_tokens, NULL),
                     0);
        int  H = sh->n_heads, C = p.geom.n_chunks;
        walk w = {calloc((size_t)rows * H + 1, sizeof(int)),
                  calloc((size_t)rows * H + 1, sizeof(int)),
                  calloc((size_t)rows * H * C + 1, sizeof(int))};
        cr_assert(w.out && w.poison && w.partial);
        walk_grid(&w, &p, q_off, start_pos, table, max_blocks, block_tokens, rows);
        cr_assert_geq(p.partial_bytes, (size_t)(C > 1 ? rows * H * C * (sh->hd + 2) * 4 : 0));
        for (int s = 0; s < n_seqs; s++)
            for (int r = q_off[s]; r < attn_imin(q_off[s + 1], rows); r++) {
                int past = start_pos[s] + r - q_off[s] >= max_ctx;
                for (int h = 0; h < H; h++) {
                    cr_assert_eq(w.out[r * H + h], !past,
                                 "trial %d row %d (position %d) head %d written %d times", trial, r,
                                 start_pos[s] + r - q_off[s], h, w.out[r * H + h]);
                    cr_assert_eq(w.poison[r * H + h], past);
                }
            }
        free(w.out);
        free(w.poison);
        free(w.partial);
        free(table);
    }
}

Test(attn_plan, a_query_visits_the_same_tiles_alone_and_in_a_batch) {
    /* The bits of a query depend on which keys share a tile with it. Plan one long sequence in a
     * batch and the same query alone (one row at its position): the absolute tiles that hold its
     * visible keys are the same in every chunk. */
    attn_plan pb, pa;
    int32_t   q_off_b[] = {0, 3, 40}, start_b[] = {10, 300};
    cr_assert_eq(attn_plan_paged(&pb, 40, 2, 512, 8, 2, 64, 100, 128, 32, 16, NULL), 0);
    for (int i = 0; i < 37; i++) {
        int32_t q_off_a[] = {0, 1}, start_a[] = {300 + i};
        cr_assert_eq(attn_plan_paged(&pa, 1, 1, 512, 8, 2, 64, 100, 128, 32, 16, NULL), 0);
        for (int c = 0; c < pb.geom.n_chunks; c++) {
            attn_block bb, ba;
            int        wb =
                attn_block_decode(&bb, &pb.geom, q_off_b, start_b,
                                  (unsigned)(3 + i - i % pb.geom.rows_per_block), 0, (unsigned)c);
            int wa   = attn_block_decode(&ba, &pa.geom, q_off_a, start_a, 0, 0, (unsigned)c);
            int qa_b = 1, qb_b = 0, qa_a = 1, qb_a = 0;
            if (wb)
                attn_query_keys(&qa_b, &qb_b, &bb, &pb.geom, 300 + i);
            if (wa)
                attn_query_keys(&qa_a, &qb_a, &ba, &pa.geom, 300 + i);
            cr_assert_eq(qa_b <= qb_b, qa_a <= qb_a, "query %d chunk %d", i, c);
            if (qa_a > qb_a)
                continue;
            cr_assert_eq(qa_b, qa_a);
            cr_assert_eq(qb_b, qb_a);
            cr_assert_eq((bb.t0 - ba.t0) % ATTN_KEY_TILE, 0, "same tile grid");
            cr_assert_eq(attn_query_output(&bb, &pb.geom, 300 + i, 1),
                         attn_query_output(&ba, &pa.geom, 300 + i, 1));
        }
    }
}

/* ---- a C model of the kernels' reduction order ------------------------------------------------
 * Not the kernel (which needs a GPU), but the arithmetic its header specifies, step for step:
 * per 32-key absolute tile an xor-butterfly max and sum over the lanes, expf rescaling, fmaf
 * chains; chunk partials merged in order. Run against the CPU reference, it checks that the
 * order is sound (masking, empty tiles, the merge) and that the tolerance the header states
 * holds on peaked and flat softmax rows. */
static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* warp_sum / warp_max of attention.cu: lane i takes a[i] op a[i ^ o], o = 16 .. 1 */
static float butterfly(const float *v, int is_max) {
    float a[32], b[32];
    memcpy(a, v, sizeof a);
    for (int o = 16; o > 0; o >>= 1) {
        for (int i = 0; i < 32; i++)
            b[i] = is_max ? fmaxf(a[i], a[i ^ o]) : a[i] + a[i ^ o];
        memcpy(a, b, sizeof a);
    }
    for (int i = 1; i < 32; i++) /* every lane holds the same bits */
        cr_assert(memcmp(&a[i], &a[0], sizeof a[0]) == 0);
    return a[0];
}

/* One chunk of one query: keys ka .. kb (rows of K, V (n, hd)), tiles from tile_base. */
static void model_chunk(float *m, float *l, float *acc, const float *q, const float *k,
                        const float *v, int ka, int kb, int tile_base, int hd, float scale) {
    *m = -INFINITY;
    *l = 0.0f;
    for (int d = 0; d < hd; d++)
        acc[d] = 0.0f;
    for (int kt = tile_base + (ka - tile_base) / 32 * 32; kt <= kb; kt += 32) {
        float s[32], p[32];
        for (int j = 0; j < 32; j++) {
            int   kp = kt + j;
            float sc = 0.0f;
            for (int d = 0; d < hd && kp >= ka && kp <= kb; d++)
                sc = fmaf(q[d], k[(size_t)kp * hd + d], sc);
            s[j] = kp >= ka && kp <= kb ? sc * scale : -INFINITY;
        }
        float mt = butterfly(s, 1);
        if (mt == -INFINITY)
            continue;
        float mn = fmaxf(*m, mt), alpha = expf(*m - mn);
        for (int j = 0; j < 32; j++)
            p[j] = expf(s[j] - mn);
        *l = *l * alpha + butterfly(p, 0);
        *m = mn;
        for (int d = 0; d < hd; d++)
            acc[d] *= alpha;
        for (int j = 0; j < 32; j++)
            for (int d = 0; d < hd; d++)
                if (kt + j >= ka && kt + j <= kb)
                    acc[d] = fmaf(p[j], v[(size_t)(kt + j) * hd + d], acc[d]);
    }
}

/* out (hd) for the query at position pos; split 0: prefill (one pass over all its keys). */
static void model_query(float *out, const float *q, const float *k, const float *v, int pos,
                        int window, int split, int hd) {
    float scale = 1.0f / sqrtf((float)hd), m[64], l[64], acc[64][128];
    int   lo    = attn_window_lo(pos, window);
    int   c0 = split ? lo / split : 0, c1 = split ? pos / split : 0;
    cr_assert(c1 - c0 < 64 && hd <= 128);
    for (int c = c0; c <= c1; c++) {
        int ka = split ? attn_imax(lo, c * split) : lo,
            kb = split ? attn_imin(pos, c * split + split - 1) : pos;
        model_chunk(&m[c - c0], &l[c - c0], acc[c - c0], q, k, v, ka, kb, split ? c * split : 0, hd,
                    scale);
    }
    if (c0 == c1) {
        for (int d = 0; d < hd; d++)
            out[d] = round_bf16(acc[0][d] / l[0] + 0.0f);
        return;
    }
    float mx = -INFINITY, sum = 0.0f;
    for (int c = 0; c <= c1 - c0; c++)
        mx = fmaxf(mx, m[c]);
    for (int c = 0; c <= c1 - c0; c++)
        sum = fmaf(l[c], expf(m[c] - mx), sum);
    for (int d = 0; d < hd; d++) {
        float a = 0.0f;
        for (int c = 0; c <= c1 - c0; c++)
            a = fmaf(acc[c][d], expf(m[c] - mx), a);
        out[d] = round_bf16(a / sum + 0.0f);
    }
}

Test(attn_plan, the_kernels_reduction_order_meets_the_stated_tolerance) {
    int hds[] = {64, 80, 128}, windows[] = {0, 0, 37}, splits[] = {0, 32, 64, 50, 256};
    for (int trial = 0; trial < 6; trial++) {
        int    hd = hds[trial % 3], window = windows[trial % 3], S = 150 + irand(150);
        float  qs = trial < 3 ? 3.0f : 0.25f; /* peaked and flat softmax rows */
        float *q = malloc((size_t)S * hd * 4), *k = malloc((size_t)S * hd * 4);
        float *v = malloc((size_t)S * hd * 4), *ref = malloc((size_t)S * hd * 4);
        cr_assert(q && k && v && ref);
        float vmax = 0.0f;
        for (int i = 0; i < S * hd; i++) {
            q[i] = round_bf16(qs * (irand(2001) - 1000) / 1000.0f);
            k[i] = round_bf16((irand(2001) - 1000) / 1000.0f);
            v[i] = round_bf16((irand(2001) - 1000) / 1000.0f);
            vmax = fmaxf(vmax, fabsf(v[i]));
        }
        int cu[] = {0, S};
        cr_assert_eq(attention_varlen_forward(ref, q, k, v, cu, 1, 1, 1, hd, hd, hd, window), 0);
        for (int si = 0; si < 5; si++) {
            double worst = 0.0;
            for (int pos = 0; pos < S; pos++) {
                float out[128];
                model_query(out, q + (size_t)pos * hd, k, v, pos, window, splits[si], hd);
                for (int d = 0; d < hd; d++) {
                    float  want = ref[(size_t)pos * hd + d];
                    double err  = fabs((double)out[d] - want);
                    double tol  = ldexp(fabs(want), -8) + ldexp(vmax, -12); /* attention.cu */
                    cr_assert(err <= tol, "hd %d split %d pos %d d %d: %g vs %g", hd, splits[si],
                              pos, d, out[d], want);
                    worst = fmax(worst, err / tol);
                }
            }
            cr_assert_gt(worst, 0.0, "the model rounds to bf16, the reference does not");
        }
        free(q);
        free(k);
        free(v);
        free(ref);
    }
}
