/* Host-side pieces of the CUDA backend (runtime/cuda/cuda_plan.h), checked without a GPU: the
 * packed index buffer of a pass, the validation that guards the kernels' trusted indices, the
 * LM-head result layout and chunking, the GEMM algorithm cache that makes GEMMs batch invariant,
 * the memory plan and the bf16 weight conversion. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "runtime/cuda/cuda_plan.h"
#include "tests/helpers.h"

static void plan_counts(cuda_batch_layout *L, size_t ids, size_t seqs, size_t blocks, size_t sel,
                        int targets) {
    size_t      count[CB_COUNT] = {ids, ids, seqs + 1, seqs, blocks, sel, targets ? sel : 0};
    assay_error err;
    cr_assert_eq(cuda_batch_plan(L, count, &err), 0);
}

Test(cuda_host, batch_layout_aligns_every_array_and_never_overlaps) {
    cuda_batch_layout L;
    plan_counts(&L, 37, 5, 5 * 3, 11, 1);
    size_t end = 0;
    for (int i = 0; i < CB_COUNT; i++) {
        cr_assert_eq(L.off[i] % CUDA_BATCH_ALIGN, 0, "array %d at %zu", i, L.off[i]);
        cr_assert_geq(L.off[i], end, "array %d overlaps the one before", i);
        end = L.off[i] + L.count[i] * sizeof(int32_t);
    }
    cr_assert_geq(L.total, end);
    cr_assert_eq(L.total % CUDA_BATCH_ALIGN, 0);
    /* 37 ids: 148 bytes -> the next array at 192 */
    cr_assert_eq(L.off[CB_POS], 192);
    /* absent block table and targets take no room */
    cuda_batch_layout M;
    plan_counts(&M, 37, 5, 0, 11, 0);
    cr_assert_eq(M.off[CB_SEL], M.off[CB_BLOCKS]);
    cr_assert_lt(M.total, L.total);
}

Test(cuda_host, batch_layout_rejects_sizes_that_overflow) {
    size_t            count[CB_COUNT] = {1, 1, 2, 1, SIZE_MAX / 2, 0, 0};
    cuda_batch_layout L;
    assay_error       err;
    cr_assert_eq(cuda_batch_plan(&L, count, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "too large"), "%s", err.msg);
}

Test(cuda_host, batch_pack_puts_each_array_at_its_offset_and_zeroes_padding) {
    int32_t           ids[5] = {7, 8, 9, 10, 11}, pos[5] = {0, 1, 2, 0, 1}, q_off[3] = {0, 3, 5};
    int32_t           start[2] = {0, 0}, sel[2] = {2, 4}, tgt[2] = {100, 200};
    const int32_t    *src[CB_COUNT] = {ids, pos, q_off, start, NULL, sel, tgt};
    cuda_batch_layout L;
    plan_counts(&L, 5, 2, 0, 2, 1);
    unsigned char *buf = malloc(L.total);
    memset(buf, 0xab, L.total); /* poison: every byte must be written */
    cuda_batch_pack(buf, &L, src);
    for (int i = 0; i < CB_COUNT; i++) {
        if (L.count[i])
            cr_assert_eq(memcmp(buf + L.off[i], src[i], L.count[i] * 4), 0, "array %d", i);
        size_t pad_end = i + 1 < CB_COUNT ? L.off[i + 1] : L.total;
        for (size_t b = L.off[i] + L.count[i] * 4; b < pad_end; b++)
            cr_assert_eq(buf[b], 0, "padding byte %zu after array %d", b, i);
    }
    free(buf);
}

Test(cuda_host, batch_check_derives_launch_sizes) {
    int32_t     q_off[4] = {0, 3, 3, 10}, start[3] = {5, 0, 2};
    int32_t     table[3 * 4] = {0, 1, -1, -1, 2, -1, -1, -1, 3, 4, 5, -1};
    int32_t     sel[2]       = {0, 9};
    int         max_len = -1, max_ctx = -1;
    assay_error err;
    /* 4 blocks of 4 tokens: sequence 0 reaches position 8 (blocks 0..1), sequence 2 position 9
     * (blocks 0..2); sequence 1 has no new rows and needs no block */
    cr_assert_eq(
        cuda_batch_check(&max_len, &max_ctx, 10, 3, q_off, start, table, 4, 4, 2, sel, &err), 0,
        "%s", err.msg);
    cr_assert_eq(max_len, 7);
    cr_assert_eq(max_ctx, 9);
    int32_t zero[3] = {0, 0, 0};
    cr_assert_eq(cuda_batch_check(&max_len, &max_ctx, 10, 3, q_off, zero, NULL, 0, 0, 2, sel, &err),
                 0);
    cr_assert_eq(max_len, 7);
    cr_assert_eq(max_ctx, 7);
    /* an empty pass is valid */
    cr_assert_eq(cuda_batch_check(&max_len, &max_ctx, 0, 0, NULL, NULL, NULL, 0, 0, 0, NULL, &err),
                 0);
    cr_assert_eq(max_len, 0);
}

static void expect_bad(int n_tokens, int n_seqs, const int32_t *q_off, const int32_t *start,
                       const int32_t *table, int max_blocks, int block_tokens, int n_sel,
                       const int32_t *sel, const char *words) {
    int         a, b;
    assay_error err;
    err.msg[0] = 0;
    cr_assert_eq(cuda_batch_check(&a, &b, n_tokens, n_seqs, q_off, start, table, max_blocks,
                                  block_tokens, n_sel, sel, &err),
                 ASSAY_EINVAL, "expected a failure mentioning '%s'", words);
    cr_assert(strstr(err.msg, words), "'%s' does not mention '%s'", err.msg, words);
}

Test(cuda_host, batch_check_rejects_indices_the_kernels_would_trust) {
    int32_t start0[2] = {0, 0}, start3[2] = {3, 0}, sel_ok[1] = {0}, sel_bad[1] = {6};
    int32_t q_ok[3] = {0, 2, 6}, q_nz[3] = {1, 2, 6}, q_dec[3] = {0, 4, 3}, q_short[3] = {0, 2, 5};
    int32_t table[2 * 2] = {0, 1, 2, -1};
    expect_bad(6, 2, q_nz, start0, NULL, 0, 0, 0, NULL, "q_off[0]");
    expect_bad(6, 2, q_dec, start0, NULL, 0, 0, 0, NULL, "sequence 1 has rows 4..3");
    expect_bad(6, 2, q_short, start0, NULL, 0, 0, 0, NULL, "cover 5 rows of 6");
    expect_bad(6, 2, q_ok, start3, NULL, 0, 0, 0, NULL, "without a KV cache");
    expect_bad(6, 2, q_ok, start0, NULL, 0, 0, 1, sel_bad, "selected row 0 is 6");
    /* sequence 1 has 4 tokens: 2 blocks of 2, but its second slot is unassigned */
    expect_bad(6, 2, q_ok, start0, table, 2, 2, 1, sel_ok, "unassigned");
    /* sequence 0 at positions 3..4 needs 5 tokens, its table holds 4 */
    expect_bad(6, 2, q_ok, start3, table, 2, 2, 1, sel_ok, "needs 5 cached tokens");
    expect_bad(6, 2, q_ok, start0, table, 0, 2, 0, NULL, "block table of 0 blocks");
}

Test(cuda_host, head_layout_is_one_aligned_buffer_sized_by_the_rows) {
    for (int n = 0; n < 300; n += 7) {
        cuda_head_layout h;
        cuda_head_plan(&h, n);
        cr_assert_eq(h.off_logprob, 0);
        cr_assert_geq(h.off_argmax, (size_t)n * 4);
        cr_assert_geq(h.off_is_max, h.off_argmax + (size_t)n * 4);
        cr_assert_geq(h.total, h.off_is_max + (size_t)n);
        cr_assert_eq(h.off_argmax % 16, 0);
        cr_assert_eq(h.off_is_max % 16, 0);
        cr_assert_eq(h.total % 16, 0);
        cr_assert_lt(h.total, (size_t)n * 9 + 48, "n %d: %zu bytes", n, h.total);
    }
}

Test(cuda_host, lm_head_chunks_stay_within_the_cap_and_cover_every_row) {
    /* Llama-3 vocabulary: 256 MiB holds 523 rows of f32 logits, the row cap is 256 */
    cr_assert_eq(cuda_head_chunk_rows(128256, CUDA_HEAD_CAP, CUDA_HEAD_CHUNK_ROWS), 256);
    cr_assert_eq(cuda_head_chunk_rows(128256, 64u << 20, CUDA_HEAD_CHUNK_ROWS), 130);
    cr_assert_eq(cuda_head_chunk_rows(1 << 30, CUDA_HEAD_CAP, CUDA_HEAD_CHUNK_ROWS), 1);
    cr_assert_eq(cuda_head_chunk_rows(512, CUDA_HEAD_CAP, 3), 3);
    int vocab = 151936, n_sel = 1001, chunk = cuda_head_chunk_rows(vocab, 16u << 20, 256);
    cr_assert_leq((size_t)chunk * vocab * 4, 16u << 20);
    int covered = 0, chunks = 0;
    for (int r0 = 0; r0 < n_sel; r0 += chunk, chunks++)
        covered += n_sel - r0 < chunk ? n_sel - r0 : chunk;
    cr_assert_eq(covered, n_sel);
    cr_assert_eq(chunks, (n_sel + chunk - 1) / chunk);
}

Test(cuda_host, epilogue_chunks_fit_the_accumulator) {
    cr_assert_eq(cuda_acc_chunk_rows(100, 1000, 4000 * 10), 10);
    cr_assert_eq(cuda_acc_chunk_rows(5, 1000, 4000 * 10), 5);
    cr_assert_eq(cuda_acc_chunk_rows(100, 1000, 3999), 0); /* not one row: the caller grows it */
    cr_assert_eq(cuda_acc_chunk_rows(0, 1000, 1 << 20), 0);
}

Test(cuda_host, invariant_gemm_keys_ignore_the_row_count_fast_keys_do_not) {
    cuda_gemm_key a = cuda_gemm_key_make(4096, 2048, 0, 1, 0);
    cuda_gemm_key b = cuda_gemm_key_make(4096, 2048, 0, 4096, 0);
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "one algorithm for every row count");
    cuda_gemm_key f1 = cuda_gemm_key_make(4096, 2048, 0, 1, 1);
    cuda_gemm_key f2 = cuda_gemm_key_make(4096, 2048, 0, 4096, 1);
    cr_assert_neq(f1.rows, f2.rows);
    cr_assert_neq(f1.rows, 0);

    cuda_gemm_cache c = {0};
    cuda_gemm_entry e;
    memset(&e, 0, sizeof e);
    /* more entries than the first allocation holds, to go through a realloc */
    for (int i = 0; i < 100; i++) {
        e.key     = cuda_gemm_key_make(64 * (i + 1), 128, i % 2, 0, 0);
        e.algo[0] = (uint64_t)i;
        cr_assert_eq(cuda_gemm_cache_add(&c, &e), i);
    }
    for (int i = 0; i < 100; i++) {
        int idx = cuda_gemm_cache_find(&c, cuda_gemm_key_make(64 * (i + 1), 128, i % 2, 77, 0));
        cr_assert_eq(idx, i);
        cr_assert_eq(c.e[idx].algo[0], (uint64_t)i);
    }
    /* the output type is part of the key: the LM head's f32 GEMM is not the bf16 one */
    cr_assert_eq(cuda_gemm_cache_find(&c, cuda_gemm_key_make(64, 128, 1, 0, 0)), -1);
    cr_assert_eq(cuda_gemm_cache_find(&c, cuda_gemm_key_make(64, 128, 0, 5, 1)), -1);
    cuda_gemm_cache_clear(&c);
    cr_assert_eq(cuda_gemm_cache_find(&c, cuda_gemm_key_make(64, 128, 0, 0, 0)), -1);
    cuda_gemm_cache_free(&c);
    cr_assert_null(c.e);
}

Test(cuda_host, gemm_alignment_follows_the_row_strides) {
    cr_assert_eq(cuda_gemm_align(4096, 2048, 2), 16);
    cr_assert_eq(cuda_gemm_align(4096, 172, 2), 8); /* stories260K FFN: 344-byte rows */
    cr_assert_eq(cuda_gemm_align(151936, 896, 4), 16);
    cr_assert_eq(cuda_gemm_align(50257, 768, 4), 4); /* GPT-2 vocabulary, f32 logits */
    cr_assert_eq(cuda_gemm_align(50257, 768, 2), 2);
    cr_assert_eq(cuda_gemm_align(64, 33, 2), 2);
}

Test(cuda_host, scratch_plan_adds_up_and_bounds_the_logits_chunk) {
    cuda_scratch_plan p;
    cuda_scratch_plan_make(&p, 8192, 14336, 4096, 128256);
    cr_assert_eq(p.total, p.workspace + p.acc + p.logits + p.head + p.batch);
    cr_assert_leq(p.logits, (size_t)CUDA_HEAD_CAP);
    cr_assert_eq(p.logits, (size_t)256 * 128256 * 4);
    cr_assert_eq(p.acc, (size_t)CUDA_ACC_CHUNK_ROWS * 2 * 14336 * 4);
    cr_assert_geq(p.head, (size_t)8192 * 9);
    /* a vocabulary too large for the cap still gets one row */
    cuda_scratch_plan_make(&p, 1, 64, 64, 1 << 27);
    cr_assert_eq(p.logits, (size_t)4 << 27);
}

Test(cuda_host, weight_conversion_rounds_to_nearest_even) {
    float    in[6]  = {1.0f, 1.00390625f, 1.01171875f, -2.5f, INFINITY, NAN};
    uint16_t out[6] = {0};
    cuda_bf16_from_f32(out, in, 6);
    cr_assert_eq(out[0], 0x3f80);
    cr_assert_eq(out[1], 0x3f80); /* tie to even, down */
    cr_assert_eq(out[2], 0x3f82); /* tie to even, up */
    cr_assert_eq(out[3], 0xc020);
    cr_assert_eq(out[4], 0x7f80);
    cr_assert(isnan(bf16_to_f32(out[5])));
    /* a tensor large enough for the threaded path gives the same bits */
    size_t    n   = (1u << 20) + 123;
    float    *big = malloc(n * sizeof *big);
    uint16_t *got = malloc(n * sizeof *got);
    uint32_t  x   = 12345;
    for (size_t i = 0; i < n; i++) {
        x      = x * 1664525u + 1013904223u;
        big[i] = ((float)(x >> 8) / (float)(1 << 24) - 0.5f) * 8.0f;
    }
    cuda_bf16_from_f32(got, big, n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != f32_to_bf16(big[i]))
            cr_assert_fail("element %zu: %04x, expected %04x", i, got[i], f32_to_bf16(big[i]));
    free(big);
    free(got);
}

/* Every row of the pass must reach the kernel exactly once, with the block-table row of its own
 * sequence and its own position, whatever the grouping; each group's split buffer must fit the
 * cap unless the group is a single row (the least a call can hold). */
static void check_attn_groups(const int32_t *q_off, const int32_t *start, int n_seqs, int split,
                              size_t unit, size_t cap, int *n_groups_out) {
    int              n_tok = q_off[n_seqs];
    cuda_attn_group *g     = malloc(cuda_attn_groups_cap(n_seqs, n_tok) * sizeof *g);
    int32_t         *idx   = malloc(cuda_attn_idx_cap(n_seqs, n_tok) * sizeof *idx);
    size_t           used  = 0;
    int              n = cuda_attn_groups(g, idx, &used, q_off, start, n_seqs, split, unit, cap);
    cr_assert_leq((size_t)n, cuda_attn_groups_cap(n_seqs, n_tok));
    cr_assert_leq(used, cuda_attn_idx_cap(n_seqs, n_tok));
    int next_row = 0;
    for (int k = 0; k < n; k++) {
        const cuda_attn_group *G  = &g[k];
        const int32_t         *qo = idx + G->idx_off, *sp = qo + G->n_seqs + 1;
        cr_assert_eq(G->row0, next_row, "group %d starts at row %d, expected %d", k, G->row0,
                     next_row);
        cr_assert_eq(qo[0], 0);
        cr_assert_eq(qo[G->n_seqs], G->rows);
        int mc = 0;
        for (int j = 0; j < G->n_seqs; j++)
            for (int i = qo[j]; i < qo[j + 1]; i++) {
                int r = G->row0 + i, s = 0;
                while (q_off[s + 1] <= r)
                    s++;
                cr_assert_eq(G->seq0 + j, s, "row %d: block-table row %d, expected %d", r,
                             G->seq0 + j, s);
                int pos = sp[j] + (i - qo[j]);
                cr_assert_eq(pos, start[s] + (r - q_off[s]), "row %d: position", r);
                mc = pos + 1 > mc ? pos + 1 : mc;
            }
        cr_assert_eq(G->max_ctx, mc, "group %d: max_ctx %d, its rows reach %d", k, G->max_ctx, mc);
        size_t chunks = (size_t)(G->max_ctx + split - 1) / (size_t)split;
        if (G->rows > 1)
            cr_assert_leq((size_t)G->rows * chunks * unit, cap, "group %d over the cap", k);
        next_row += G->rows;
    }
    cr_assert_eq(next_row, n_tok, "rows covered");
    *n_groups_out = n;
    free(g);
    free(idx);
}

Test(cuda_host, paged_attention_groups_keep_every_row_its_sequence_and_position) {
    /* 4 sequences: a decode row, a chunk of 300 new rows after 1000 cached, an empty one, 40 rows
     * from position 0 */
    int32_t q_off[5] = {0, 1, 301, 301, 341}, start[4] = {700, 1000, 5, 0};
    int     n;
    check_attn_groups(q_off, start, 4, 256, 100, SIZE_MAX, &n);
    cr_assert_eq(n, 1, "everything fits: one call");
    /* sequence 1 alone needs 300 x 6 chunks x 100 bytes: a cap of 60000 splits it in 100-row
     * pieces and puts the others in runs */
    check_attn_groups(q_off, start, 4, 256, 100, 60000, &n);
    cr_assert_geq(n, 4);
    /* a cap below one row: single-row groups, still every row once */
    check_attn_groups(q_off, start, 4, 256, 100, 1, &n);
    cr_assert_eq(n, 341 + 1, "one group per row, plus the empty sequence's run");
    /* random passes */
    uint32_t x = 99;
    for (int t = 0; t < 200; t++) {
        int32_t qo[17], sp[16];
        int     ns = 1 + t % 16;
        qo[0]      = 0;
        for (int s = 0; s < ns; s++) {
            x         = x * 1664525u + 1013904223u;
            qo[s + 1] = qo[s] + (int)((x >> 8) % 70);
            sp[s]     = (int)((x >> 20) % 900);
        }
        x = x * 1664525u + 1013904223u;
        check_attn_groups(qo, sp, ns, 64, 8, (size_t)((x >> 8) % 20000), &n);
    }
}

/* ---- CUDA graphs for decode passes --------------------------------------------------------- */

Test(cuda_host, decode_key_accepts_only_one_token_per_sequence_through_the_cache) {
    cuda_graph_key k;
    int32_t        one[4] = {0, 1, 2, 3}, uneven[4] = {0, 2, 2, 3};
    cr_assert(cuda_graph_decode_key(&k, 3, 3, one, 1, 5, 16, 3, 1));
    cr_assert_eq(k.n_seqs, 3);
    cr_assert_eq(k.max_blocks, 5);
    cr_assert_eq(k.block_tokens, 16);
    cr_assert_eq(k.has_targets, 1);
    cr_assert_eq(cuda_graph_attn_ctx(&k), 80, "the block table's whole span");
    /* same token count, but one sequence feeds two and another none */
    cr_assert_not(cuda_graph_decode_key(&k, 3, 3, uneven, 1, 5, 16, 3, 1));
    cr_assert_not(cuda_graph_decode_key(&k, 3, 3, one, 0, 0, 16, 3, 1), "no KV cache");
    cr_assert_not(cuda_graph_decode_key(&k, 3, 3, one, 1, 5, 16, 2, 1), "a row skips the head");
    cr_assert_not(cuda_graph_decode_key(&k, 0, 0, one, 1, 5, 16, 0, 1), "empty");
}

static void graph_ops(cuda_op_list *l, const void *x, int rows) {
    l->n                     = 0;
    static const char base[] = "weights";
    cuda_op           e      = {CUDA_OP_EMBED, {64, 0, 0, 0}, 0.0f, {x, base, NULL, NULL, NULL}};
    cuda_op m = {CUDA_OP_MATMUL, {rows, 64, 128, 0}, 0.0f, {base + 1, x, base + 2, NULL, NULL}};
    cuda_op n = {CUDA_OP_ADD_NORM, {0, rows, 64, 0}, 1e-5f, {x, base + 3, NULL, base, NULL}};
    cr_assert_eq(cuda_op_list_push(l, &e), 0);
    cr_assert_eq(cuda_op_list_push(l, &m), 0);
    cr_assert_eq(cuda_op_list_push(l, &n), 0);
}

Test(cuda_host, graph_is_captured_after_the_warmup_and_replayed_only_for_the_same_ops) {
    cuda_graph_cache *c   = calloc(1, sizeof *c);
    cuda_op_list      ops = {0}, other = {0};
    cuda_graph_key    k = {4, 3, 16, 1};
    int               x = 0, y     = 0, slot;
    void             *drop, *graph = (void *)&slot; /* any non-NULL token stands for a graph */
    graph_ops(&ops, &x, 4);
    for (int i = 0; i < CUDA_GRAPH_WARMUP; i++) {
        cr_assert_eq(cuda_graph_decide(c, &k, &ops, 7, &slot, &drop), CUDA_GRAPH_EAGER,
                     "warm-up pass %d", i);
        cr_assert_null(drop);
    }
    cr_assert_eq(cuda_graph_decide(c, &k, &ops, 7, &slot, &drop), CUDA_GRAPH_CAPTURE);
    c->slot[slot].exec = graph;
    cr_assert_eq(cuda_graph_decide(c, &k, &ops, 7, &slot, &drop), CUDA_GRAPH_REPLAY);
    cr_assert_eq(cuda_graph_decide(c, &k, &ops, 7, &slot, &drop), CUDA_GRAPH_REPLAY);
    /* one pointer differs: the graph is stale, counting starts again */
    graph_ops(&other, &y, 4);
    cr_assert_eq(cuda_graph_decide(c, &k, &other, 7, &slot, &drop), CUDA_GRAPH_EAGER);
    cr_assert_eq(drop, graph);
    cr_assert_null(c->slot[slot].exec);
    /* the scratch moved (generation 8): not replayed, not captured at once */
    c->slot[slot].exec = graph;
    cr_assert_eq(cuda_graph_decide(c, &k, &other, 8, &slot, &drop), CUDA_GRAPH_EAGER);
    cr_assert_eq(drop, graph);
    /* an eps that differs in its bits is another op */
    graph_ops(&other, &x, 4);
    other.op[2].f = 1e-6f;
    cr_assert_not(cuda_op_list_equal(&ops, &other));
    other.op[2].f = 1e-5f;
    cr_assert(cuda_op_list_equal(&ops, &other));
    void *all[CUDA_GRAPH_SLOTS];
    cuda_graph_cache_clear(c, all);
    cuda_graph_cache_free(c);
    cuda_op_list_free(&ops);
    cuda_op_list_free(&other);
    free(c);
}

Test(cuda_host, graph_cache_keeps_its_bound_and_drops_the_least_recently_used) {
    cuda_graph_cache *c   = calloc(1, sizeof *c);
    cuda_op_list      ops = {0};
    int               x   = 0, slot, token[CUDA_GRAPH_SLOTS + 1];
    void             *drop;
    graph_ops(&ops, &x, 1);
    /* one graph per row count 1..SLOTS, each captured and holding token[rows - 1] */
    for (int rows = 1; rows <= CUDA_GRAPH_SLOTS; rows++) {
        cuda_graph_key k = {rows, 2, 16, 1};
        for (int i = 0; i <= CUDA_GRAPH_WARMUP; i++)
            cuda_graph_decide(c, &k, &ops, 0, &slot, &drop);
        c->slot[slot].exec = &token[rows - 1];
    }
    /* row count 1 used again: 2 is now the least recently used */
    cuda_graph_key k1 = {1, 2, 16, 1};
    cr_assert_eq(cuda_graph_decide(c, &k1, &ops, 0, &slot, &drop), CUDA_GRAPH_REPLAY);
    cuda_graph_key kn = {CUDA_GRAPH_SLOTS + 1, 2, 16, 1};
    cr_assert_eq(cuda_graph_decide(c, &kn, &ops, 0, &slot, &drop), CUDA_GRAPH_EAGER);
    cr_assert_eq(drop, &token[1], "the graph of 2 rows goes");
    cr_assert_eq(cuda_graph_decide(c, &k1, &ops, 0, &slot, &drop), CUDA_GRAPH_REPLAY);
    int live = 0;
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
        live += c->slot[i].exec != NULL;
    cr_assert_eq(live, CUDA_GRAPH_SLOTS - 1);
    void *all[CUDA_GRAPH_SLOTS];
    cuda_graph_cache_clear(c, all);
    int dropped = 0;
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
        dropped += all[i] != NULL;
    cr_assert_eq(dropped, CUDA_GRAPH_SLOTS - 1, "clear hands back every graph to destroy");
    cuda_graph_cache_free(c);
    cuda_op_list_free(&ops);
    free(c);
}
