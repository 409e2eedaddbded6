/* tests/test_engine.c — the engine through the backend interface: golden bit-identity of the
 * CPU path across refactors, and the host-side pieces (batch packing, block tables, memory plan,
 * device specs) that a GPU backend relies on.
 *
 * Golden files (tests/fixtures/engine/<model>.golden) hold the exact float bits of every
 * per-token log-prob, the greedy flags and the generated tokens of a fixed set of requests on
 * each tiny fixture model: scored one at a time, batched, through the KV cache in chunks (a
 * 24-token batch budget), on a shared context, and greedy generation. They were written by this
 * file from the tree before the backend refactor (ASSAY_WRITE_GOLDEN=1 make test), so the test
 * proves the CPU results did not move by one bit. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/arch.h"
#include "runtime/backend.h"
#include "runtime/device.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"
#include "tests/helpers.h"

#define FIXTURES "tests/fixtures/models"
#define GOLDEN "tests/fixtures/engine"

static const char *const GOLDEN_MODELS[] = {"llama", "llama3",  "llama_linear", "llama_hd",
                                            "qwen2", "mistral", "gpt2"};
#define N_GOLDEN (sizeof GOLDEN_MODELS / sizeof *GOLDEN_MODELS)

#define N_REQ 6
#define N_CONT 4
#define N_GEN 4
#define CTX_LEN 37
#define MAX_LEN 120 /* GPT-2's fixture has 128 positions */

/* The fixed requests: lengths 1..120 (one of a single token: fed nothing, scored nothing), ids
 * from a multiplicative hash, score_from varied. */
typedef struct golden_set {
    int32_t       toks[N_REQ][MAX_LEN];
    score_request req[N_REQ];
    int32_t       ctx[CTX_LEN];
    int32_t       cont[N_CONT][20];
    score_request conts[N_CONT];
    int32_t       prompts[N_GEN][40];
    gen_request   gens[N_GEN];
} golden_set;

static void golden_make(golden_set *g, int vocab) {
    static const int lens[N_REQ] = {1, 2, 17, 45, 90, 120};
    for (int i = 0; i < N_REQ; i++) {
        for (int t = 0; t < lens[i]; t++)
            g->toks[i][t] = (int32_t)(((unsigned)(i + 1) * 2654435761u + (unsigned)t * 40503u) %
                                      (unsigned)vocab);
        g->req[i] = (score_request){g->toks[i], lens[i], i % 2 ? 1 : (lens[i] + 1) / 2};
    }
    for (int t = 0; t < CTX_LEN; t++)
        g->ctx[t] = (int32_t)(((unsigned)t * 97u + 11u) % (unsigned)vocab);
    for (int c = 0; c < N_CONT; c++) {
        int len = 1 + c * 6;
        for (int t = 0; t < len; t++)
            g->cont[c][t] =
                (int32_t)(((unsigned)c * 131u + (unsigned)t * 17u + 5u) % (unsigned)vocab);
        g->conts[c] = (score_request){g->cont[c], len, c == 2 ? len / 2 : 0};
    }
    for (int i = 0; i < N_GEN; i++) {
        int len = 1 + i * 12;
        for (int t = 0; t < len; t++)
            g->prompts[i][t] =
                (int32_t)(((unsigned)i * 37u + (unsigned)t * 11u + 1u) % (unsigned)vocab);
        g->gens[i] = (gen_request){g->prompts[i], len, 6 + 2 * i};
    }
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

/* One text line per result: "<mode> <index> <n> <sum bits> <bits>... <flags>" where flags is a
 * string of 0/1 (or "-" when n == 0); "gen <index> <n> <finish> <tokens>...". */
static void put_score(FILE *f, const char *mode, int i, const score_result *r) {
    fprintf(f, "%s %d %d %016llx", mode, i, r->n_targets, (unsigned long long)f64_bits(r->sum));
    for (int t = 0; t < r->n_targets; t++)
        fprintf(f, " %08x", f32_bits(r->logprob[t]));
    fputc(' ', f);
    if (r->n_targets == 0)
        fputc('-', f);
    for (int t = 0; t < r->n_targets; t++)
        fputc('0' + r->is_greedy[t], f);
    fputc('\n', f);
}
static void put_gen(FILE *f, const char *mode, int i, const gen_result *r) {
    fprintf(f, "%s %d %d %d", mode, i, r->n_tokens, (int)r->finish);
    for (int t = 0; t < r->n_tokens; t++)
        fprintf(f, " %d", r->tokens[t]);
    fputc('\n', f);
}

static model *golden_load(const char *dir, int batch_tokens) {
    model_opts  o = {.n_threads = 2, .max_batch_tokens = batch_tokens};
    assay_error err;
    model      *m = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    return m;
}

/* Runs every golden request on the model in dir and writes the lines to f. */
static void golden_run(FILE *f, const char *dir) {
    assay_error  err;
    model       *m = golden_load(dir, 0);
    golden_set  *g = calloc(1, sizeof *g);
    score_result res[N_REQ];
    cr_assert(g);
    golden_make(g, model_get_config(m)->vocab_size);
    for (int i = 0; i < N_REQ; i++) {
        cr_assert_eq(model_score(m, &g->req[i], 1, &res[i], &err), 0, "%s: %s", dir, err.msg);
        put_score(f, "single", i, &res[i]);
    }
    score_results_free(res, N_REQ);
    /* batched, in reverse order: the packing differs from the single runs */
    score_request rev[N_REQ];
    for (int i = 0; i < N_REQ; i++)
        rev[i] = g->req[N_REQ - 1 - i];
    cr_assert_eq(model_score(m, rev, N_REQ, res, &err), 0, "%s: %s", dir, err.msg);
    for (int i = 0; i < N_REQ; i++)
        put_score(f, "batched", N_REQ - 1 - i, &res[i]);
    score_results_free(res, N_REQ);
    cr_assert_eq(model_score_shared(m, g->ctx, CTX_LEN, g->conts, N_CONT, res, &err), 0, "%s: %s",
                 dir, err.msg);
    for (int i = 0; i < N_CONT; i++)
        put_score(f, "shared", i, &res[i]);
    score_results_free(res, N_CONT);
    gen_result out[N_GEN];
    cr_assert_eq(model_generate_greedy(m, g->gens, N_GEN, NULL, 0, NULL, NULL, out, &err), 0,
                 "%s: %s", dir, err.msg);
    for (int i = 0; i < N_GEN; i++)
        put_gen(f, "gen", i, &out[i]);
    /* the greedy continuations scored back: their flags must be 1 (random weights rarely give
     * a 1 otherwise) */
    for (int i = 0; i < N_GEN; i++) {
        int32_t       seq[80];
        int           np = g->gens[i].n_prompt;
        score_request r  = {seq, np + out[i].n_tokens, np};
        memcpy(seq, g->gens[i].prompt, (size_t)np * sizeof(int32_t));
        memcpy(seq + np, out[i].tokens, (size_t)out[i].n_tokens * sizeof(int32_t));
        cr_assert_eq(model_score(m, &r, 1, &res[i], &err), 0, "%s: %s", dir, err.msg);
        put_score(f, "greedy_rescored", i, &res[i]);
    }
    score_results_free(res, N_GEN);
    gen_results_free(out, N_GEN);
    model_free(m);
    /* a 24-token budget: long requests and the context go through the KV cache in chunks,
     * prompts are prefilled in chunks */
    m = golden_load(dir, 24);
    cr_assert_eq(model_score(m, g->req, N_REQ, res, &err), 0, "%s: %s", dir, err.msg);
    for (int i = 0; i < N_REQ; i++)
        put_score(f, "chunked", i, &res[i]);
    score_results_free(res, N_REQ);
    cr_assert_eq(model_score_shared(m, g->ctx, CTX_LEN, g->conts, N_CONT, res, &err), 0, "%s: %s",
                 dir, err.msg);
    for (int i = 0; i < N_CONT; i++)
        put_score(f, "shared_chunked", i, &res[i]);
    score_results_free(res, N_CONT);
    cr_assert_eq(model_generate_greedy(m, g->gens, N_GEN, NULL, 0, NULL, NULL, out, &err), 0,
                 "%s: %s", dir, err.msg);
    for (int i = 0; i < N_GEN; i++)
        put_gen(f, "gen_chunked", i, &out[i]);
    gen_results_free(out, N_GEN);
    model_free(m);
    free(g);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(f);
    return s;
}

/* The first line where a and b differ, for the failure message. */
static void first_diff(const char *a, const char *b, char *out, size_t cap) {
    int         line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++, b++;
    }
    int na = (int)strcspn(la, "\n"), nb = (int)strcspn(lb, "\n");
    snprintf(out, cap, "line %d:\n  golden: %.*s\n  now:    %.*s", line, na > 200 ? 200 : na, la,
             nb > 200 ? 200 : nb, lb);
}

Test(engine, cpu_results_are_bit_identical_to_the_golden_files, .timeout = 600) {
    const char *write     = getenv("ASSAY_WRITE_GOLDEN");
    int         n_checked = 0;
    for (size_t mi = 0; mi < N_GOLDEN; mi++) {
        char dir[256], path[256];
        snprintf(dir, sizeof dir, FIXTURES "/%s", GOLDEN_MODELS[mi]);
        snprintf(path, sizeof path, GOLDEN "/%s.golden", GOLDEN_MODELS[mi]);
        if (access(dir, R_OK) != 0) {
            fprintf(stderr, "SKIP: %s missing\n", dir);
            continue;
        }
        char  *now = NULL;
        size_t len = 0;
        FILE  *f   = open_memstream(&now, &len);
        cr_assert(f);
        fprintf(f, "# assay engine golden v1, %s: float bits per target (tests/test_engine.c)\n",
                GOLDEN_MODELS[mi]);
        golden_run(f, dir);
        fclose(f);
        if (write && *write == '1') {
            FILE *o = fopen(path, "wb");
            cr_assert(o, "cannot write %s", path);
            cr_assert_eq(fwrite(now, 1, len, o), len);
            fclose(o);
            fprintf(stderr, "wrote %s\n", path);
        } else {
            char *golden = read_text(path);
            cr_assert(golden, "%s missing: write it with ASSAY_WRITE_GOLDEN=1", path);
            if (strcmp(golden, now) != 0) {
                char d[1024];
                first_diff(golden, now, d, sizeof d);
                cr_assert_fail("%s: results moved from the golden file, %s", GOLDEN_MODELS[mi], d);
            }
            free(golden);
        }
        free(now);
        n_checked++;
    }
    if (n_checked == 0)
        cr_skip_test("SKIP: no fixtures in " FIXTURES);
}

/* ---- backend registry ---------------------------------------------------------------------- */

Test(engine, backend_create_parses_device_specs_and_names_bad_ones) {
    assay_error  err;
    backend_opts o  = {.n_threads = 1};
    backend     *be = backend_create("cpu", &o, &err);
    cr_assert(be, "%s", err.msg);
    cr_assert_str_eq(be->ops->name, "cpu");
    backend_free(be);
    /* auto is the CPU where no GPU works (this machine unless one is probed) */
    cuda_device_info info;
    device_cuda_probe(&info);
    be = backend_create("auto", &o, &err);
    cr_assert(be, "%s", err.msg);
    if (info.count == 0)
        cr_assert_str_eq(be->ops->name, "cpu");
    backend_free(be);
    backend_free(NULL);
    /* malformed specs are usage errors naming the spec */
    static const char *const bad[] = {"tpu", "cuda:x", "cuda:-1", "cuda:",  "cuda:1x",
                                      "CPU", "cuda0",  "cuda: 1", "cuda:+1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assay_error_clear(&err);
        cr_assert_null(backend_create(bad[i], &o, &err), "%s accepted", bad[i]);
        cr_assert_eq(err.code, ASSAY_EINVAL, "%s: %s", bad[i], err.msg);
        cr_assert(strstr(err.msg, bad[i]), "%s: %s", bad[i], err.msg);
    }
    /* a well-formed cuda spec without a usable GPU is a device error with the reason */
    if (info.count == 0) {
        static const char *const none[] = {"cuda", "cuda:0", "cuda:7"};
        for (size_t i = 0; i < sizeof none / sizeof *none; i++) {
            cr_assert_null(backend_create(none[i], &o, &err), "%s", none[i]);
            cr_assert_eq(err.code, ASSAY_EDEVICE, "%s: %s", none[i], err.msg);
            cr_assert(strstr(err.msg, "cuda") && strlen(err.msg) > 10, "%s", err.msg);
        }
    }
    cr_assert_eq(backend_dtype_bytes(DTYPE_F32), 4);
    cr_assert_eq(backend_dtype_bytes(DTYPE_BF16), 2);
    cr_assert_eq(backend_dtype_bytes(DTYPE_F16), 2);
    cr_assert_eq(backend_dtype_bytes(DTYPE_I32), 0);
}

/* ---- memory plan ----------------------------------------------------------------------------- */

#define MiB ((size_t)1 << 20)

Test(engine, memory_plan_takes_the_budget_from_mem_info_then_the_kv_cache_from_the_rest) {
    model_mem_plan p;
    assay_error    err;
    /* CPU-like: 80% of 1000 MiB free; 100 MiB fixed; 1 KiB of KV per token: the default 8192
     * tokens (4 x 2048 = 8192) fit */
    model_mem_need n = {.weights      = 60 * MiB,
                        .workspace    = 30 * MiB,
                        .scratch      = 10 * MiB,
                        .kv_per_token = 1024,
                        .batch_tokens = 2048,
                        .block_tokens = 16,
                        .mem_free     = 1000 * MiB,
                        .fraction     = 0.8};
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0, "%s", err.msg);
    cr_assert_eq(p.budget, 800 * MiB);
    cr_assert_eq(p.fixed, 100 * MiB);
    cr_assert_eq(p.kv_tokens, 8192);
    /* a bigger batch wants 4 batches of cache */
    n.batch_tokens = 4096;
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.kv_tokens, 4 * 4096);
    /* GPU-like: 90% of 80 GiB free, 64 KiB per token: what is left after the fixed part caps
     * the default */
    n = (model_mem_need){.weights      = 2048 * MiB,
                         .workspace    = 512 * MiB,
                         .scratch      = 512 * MiB,
                         .kv_per_token = 64 * 1024,
                         .batch_tokens = 8192,
                         .block_tokens = 16,
                         .mem_free     = 81920 * MiB,
                         .fraction     = 0.9};
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.budget, (size_t)(81920.0 * 0.9 * MiB));
    cr_assert_eq(p.kv_tokens, 4 * 8192, "32768 tokens x 64 KiB = 2 GiB fits in 69 GiB");
    n.kv_per_token = 4 * MiB; /* 32768 tokens would take 128 GiB: take what is left */
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.kv_tokens, (int)((p.budget - p.fixed) / (4 * MiB)));
    /* an explicit budget wins over mem_info */
    n = (model_mem_need){.weights      = 1 * MiB,
                         .kv_per_token = 1024,
                         .batch_tokens = 64,
                         .block_tokens = 16,
                         .mem_budget   = 2 * MiB,
                         .mem_free     = 1000 * MiB,
                         .fraction     = 0.8};
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.budget, 2 * MiB);
    cr_assert_eq(p.kv_tokens, 1024, "1 MiB left / 1 KiB per token");
    /* unknown free memory and no budget: nothing to check, the default cache */
    n.mem_budget = 0;
    n.mem_free   = 0;
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.budget, 0);
    cr_assert_eq(p.kv_tokens, 8192);
    /* the cache never drops under one batch + one block; under that it is an error naming the
     * model, the need and the budget */
    n.mem_budget = 1 * MiB + 79 * 1024; /* 79 tokens of KV: the minimum is 64 + 16 */
    cr_assert_eq(model_plan_memory(&p, &n, "dir/x on cpu", &err), ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, "dir/x on cpu") && strstr(err.msg, "memory budget") &&
                  strstr(err.msg, "for 80 tokens"),
              "%s", err.msg);
    n.mem_budget = 1 * MiB + 80 * 1024;
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0, "%s", err.msg);
    cr_assert_eq(p.kv_tokens, 80);
    /* an asked-for cache that does not fit says what would */
    n.mem_budget = 2 * MiB;
    n.kv_tokens  = 5000;
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, "requested 5000 tokens") && strstr(err.msg, "1024 tokens would fit"),
              "%s", err.msg);
    n.kv_tokens = 1000;
    cr_assert_eq(model_plan_memory(&p, &n, "m", &err), 0);
    cr_assert_eq(p.kv_tokens, 1000);
}

/* ---- what the model hands a backend ---------------------------------------------------------- */

/* A spy: the CPU backend with set_batch, lm_head, fetch and kv_block_copy wrapped to check every
 * batch the model packs (offsets, positions, block tables, selected rows, targets) and the order
 * of a pass (one fetch after one lm_head per pass that selects rows). */
static backend_ops spy_ops, real_ops;
static struct {
    int vocab, max_T, n_blocks;
    int passes, cached_passes, fetches, heads, block_copies, expect_fetch, max_seqs;
} spy;

static int spy_set_batch(backend *be, const be_batch *b) {
    cr_assert(!spy.expect_fetch, "a pass selected rows but never fetched them");
    cr_assert(b->n_tokens >= 1 && b->n_tokens <= spy.max_T, "%d tokens", b->n_tokens);
    cr_assert(b->n_seqs >= 1 && b->q_off[0] == 0 && b->q_off[b->n_seqs] == b->n_tokens);
    cr_assert(b->targets && b->n_sel >= 0 && b->n_sel <= b->n_tokens);
    uint8_t *slot = b->block_table ? calloc((size_t)spy.n_blocks * b->block_tokens, 1) : NULL;
    for (int s = 0; s < b->n_seqs; s++) {
        cr_assert(b->q_off[s + 1] > b->q_off[s], "sequence %d has no rows", s);
        cr_assert(b->block_table || b->start_pos[s] == 0, "a start position without a cache");
        for (int r = b->q_off[s]; r < b->q_off[s + 1]; r++) {
            int p = b->start_pos[s] + (r - b->q_off[s]);
            cr_assert_eq(b->pos[r], p, "row %d: position %d, expected %d", r, b->pos[r], p);
            cr_assert(b->ids[r] >= 0 && b->ids[r] < spy.vocab);
        }
        if (!b->block_table)
            continue;
        /* every position up to the last new one has a block; new rows write distinct slots */
        int last = b->start_pos[s] + (b->q_off[s + 1] - b->q_off[s]) - 1;
        cr_assert(last / b->block_tokens < b->max_blocks, "sequence %d: %d positions, %d blocks", s,
                  last + 1, b->max_blocks);
        for (int p = 0; p <= last; p++) {
            int blk = b->block_table[s * b->max_blocks + p / b->block_tokens];
            cr_assert(blk >= 0 && blk < spy.n_blocks, "block %d of %d", blk, spy.n_blocks);
            if (p >= b->start_pos[s]) {
                size_t k = (size_t)blk * b->block_tokens + p % b->block_tokens;
                cr_assert(!slot[k], "two new rows write KV slot %zu", k);
                slot[k] = 1;
            }
        }
    }
    free(slot);
    for (int i = 0; i < b->n_sel; i++) {
        cr_assert(b->sel[i] >= 0 && b->sel[i] < b->n_tokens);
        cr_assert(i == 0 || b->sel[i] > b->sel[i - 1], "selected rows out of order");
        cr_assert(b->targets[i] >= 0 && b->targets[i] < spy.vocab);
    }
    spy.passes++;
    spy.cached_passes += b->block_table != NULL;
    spy.expect_fetch = b->n_sel > 0;
    if (b->n_seqs > spy.max_seqs)
        spy.max_seqs = b->n_seqs;
    return real_ops.set_batch(be, b);
}
static int spy_lm_head(backend *be, const void *h, const void *w, int dim, int vocab,
                       be_head_mode mode) {
    cr_assert(spy.expect_fetch, "lm_head on a pass without selected rows");
    spy.heads++;
    return real_ops.lm_head(be, h, w, dim, vocab, mode);
}
static int spy_fetch(backend *be, float *lp, uint8_t *is_max, int32_t *am) {
    cr_assert(spy.expect_fetch && spy.heads == spy.fetches + 1, "fetch without lm_head");
    spy.expect_fetch = 0;
    spy.fetches++;
    return real_ops.fetch(be, lp, is_max, am);
}
static int spy_kv_block_copy(backend *be, void *k, void *v, int n_layers, size_t layer_bytes,
                             size_t block_bytes, int dst, int src) {
    cr_assert(dst != src && dst >= 0 && src >= 0 && dst < spy.n_blocks && src < spy.n_blocks);
    cr_assert_eq(layer_bytes, (size_t)spy.n_blocks * block_bytes);
    spy.block_copies++;
    return real_ops.kv_block_copy(be, k, v, n_layers, layer_bytes, block_bytes, dst, src);
}

static model *spy_load(const char *dir, int batch_tokens, int kv_tokens) {
    assay_error  err;
    backend_opts bo = {.n_threads = 2};
    backend     *be = backend_cpu_create(&bo, &err);
    cr_assert(be, "%s", err.msg);
    real_ops              = *be->ops;
    spy_ops               = real_ops;
    spy_ops.set_batch     = spy_set_batch;
    spy_ops.lm_head       = spy_lm_head;
    spy_ops.fetch         = spy_fetch;
    spy_ops.kv_block_copy = spy_kv_block_copy;
    be->ops               = &spy_ops;
    model_opts o = {.backend = be, .max_batch_tokens = batch_tokens, .kv_tokens = kv_tokens};
    model     *m = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    memset(&spy, 0, sizeof spy);
    spy.vocab    = model_get_config(m)->vocab_size;
    spy.max_T    = model_max_batch_tokens(m);
    spy.n_blocks = model_kv_tokens(m) / 16;
    return m;
}

static void same_scores(const score_result *a, const score_result *b, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        cr_assert_eq(a[i].n_targets, b[i].n_targets);
        cr_assert(!memcmp(a[i].logprob, b[i].logprob, (size_t)a[i].n_targets * sizeof(float)) &&
                      !memcmp(a[i].is_greedy, b[i].is_greedy, (size_t)a[i].n_targets),
                  "%s: request %d", what, i);
    }
}

Test(engine, batches_handed_to_the_backend_are_packed_consistently, .timeout = 300) {
    static const char *const names[] = {"llama", "gpt2", "mistral"};
    for (size_t mi = 0; mi < sizeof names / sizeof *names; mi++) {
        char dir[256];
        snprintf(dir, sizeof dir, FIXTURES "/%s", names[mi]);
        if (access(dir, R_OK) != 0) {
            fprintf(stderr, "SKIP: %s missing\n", dir);
            continue;
        }
        assay_error  err;
        model       *ref = golden_load(dir, 0), *m = spy_load(dir, 24, 256);
        golden_set  *g = calloc(1, sizeof *g);
        score_result a[N_REQ], b[N_REQ];
        gen_result   ga[N_GEN], gb[N_GEN];
        golden_make(g, spy.vocab);
        /* chunked through the cache (24-token passes), several sequences per pass */
        cr_assert_eq(model_score(m, g->req, N_REQ, a, &err), 0, "%s", err.msg);
        cr_assert_eq(model_score(ref, g->req, N_REQ, b, &err), 0, "%s", err.msg);
        same_scores(a, b, N_REQ, "score");
        cr_assert(spy.cached_passes > 0 && spy.passes > spy.cached_passes && spy.max_seqs > 1,
                  "%d passes, %d cached, at most %d sequences", spy.passes, spy.cached_passes,
                  spy.max_seqs);
        score_results_free(a, N_REQ);
        score_results_free(b, N_REQ);
        /* a shared context of 37 tokens: 36 go into the cache, which ends inside a block, so each
         * fork copies that block */
        cr_assert_eq(model_score_shared(m, g->ctx, CTX_LEN, g->conts, N_CONT, a, &err), 0, "%s",
                     err.msg);
        cr_assert_eq(model_score_shared(ref, g->ctx, CTX_LEN, g->conts, N_CONT, b, &err), 0);
        same_scores(a, b, N_CONT, "shared");
        cr_assert_eq(spy.block_copies, N_CONT);
        score_results_free(a, N_CONT);
        score_results_free(b, N_CONT);
        cr_assert_eq(model_generate_greedy(m, g->gens, N_GEN, NULL, 0, NULL, NULL, ga, &err), 0);
        cr_assert_eq(model_generate_greedy(ref, g->gens, N_GEN, NULL, 0, NULL, NULL, gb, &err), 0);
        for (int i = 0; i < N_GEN; i++) {
            cr_assert_eq(ga[i].n_tokens, gb[i].n_tokens);
            cr_assert(!memcmp(ga[i].tokens, gb[i].tokens, (size_t)ga[i].n_tokens * 4));
        }
        gen_results_free(ga, N_GEN);
        gen_results_free(gb, N_GEN);
        cr_assert(!spy.expect_fetch && spy.fetches == spy.heads && spy.fetches > 0);
        model_free(m);
        model_free(ref);
        free(g);
    }
}

/* ---- the KV cache's fork copies through the backend --------------------------------------------
 */

Test(engine, kv_fork_copies_a_partial_block_in_every_layer_and_shares_full_ones) {
    assay_error  err;
    backend_opts bo = {.n_threads = 1};
    backend     *be = backend_cpu_create(&bo, &err);
    kv_cache     kv;
    cr_assert(be, "%s", err.msg);
    cr_assert_eq(kv_create(&kv, be, 3, 8, 4, 10, &err), 0, "%s", err.msg);
    cr_assert_eq(kv.elem_bytes, 4);
    cr_assert_eq(kv_pool_bytes(3, 8, 4, 10, 4), (size_t)3 * 8 * 4 * 10 * 4 * 2);
    cr_assert_eq(kv_pool_bytes(3, 8, 4, 10, 2), (size_t)3 * 8 * 4 * 10 * 2 * 2);
    cr_assert_eq(kv_pool_bytes(1 << 30, 1 << 30, 1 << 30, 1 << 30, 4), SIZE_MAX);
    kv_seq src = {0}, dst = {0};
    cr_assert_eq(kv_seq_reserve(&kv, &src, 6), 0); /* one full block of 4, one partial */
    src.n_tokens = 6;
    for (int l = 0; l < 3; l++) {
        float *k = kv_layer_k(&kv, l), *v = kv_layer_v(&kv, l);
        for (int i = 0; i < 10 * 4 * 8; i++) {
            k[i] = (float)(l * 1000 + i);
            v[i] = (float)(-l * 1000 - i);
        }
    }
    int n_free = kv.n_free;
    cr_assert_eq(kv_seq_fork(&kv, &dst, &src), 0);
    cr_assert_eq(dst.n_tokens, 6);
    cr_assert_eq(dst.blocks[0], src.blocks[0], "full blocks are shared");
    cr_assert_neq(dst.blocks[1], src.blocks[1], "the partial block is copied");
    cr_assert_eq(kv.n_free, n_free - 1);
    cr_assert_eq(kv.refs[src.blocks[0]], 2);
    size_t blk = 4 * 8;
    for (int l = 0; l < 3; l++) {
        float *k = kv_layer_k(&kv, l), *v = kv_layer_v(&kv, l);
        cr_assert(!memcmp(k + dst.blocks[1] * blk, k + src.blocks[1] * blk, blk * 4), "layer %d",
                  l);
        cr_assert(!memcmp(v + dst.blocks[1] * blk, v + src.blocks[1] * blk, blk * 4), "layer %d",
                  l);
    }
    kv_seq_release(&kv, &dst);
    cr_assert_eq(kv.refs[src.blocks[0]], 1);
    kv_seq_release(&kv, &src);
    cr_assert_eq(kv.n_free, 10);
    kv_destroy(&kv);
    backend_free(be);
}

/* ---- the CLI says where it ran ------------------------------------------------------------------
 */

Test(engine, cli_reports_the_device_and_refuses_devices_it_cannot_use) {
    const char *dir = FIXTURES "/llama";
    if (access(dir, R_OK) != 0)
        cr_skip_test("SKIP: %s missing", dir);
    char *out = NULL;
    int   rc  = test_run(&out, "ppl %s README.md --device cpu --json 2>/dev/null", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "\"device\":\t\"cpu\"") && strstr(out, "\"batch_invariant\":\ttrue"),
              "%s", out);
    free(out);
    rc = test_run(&out, "ppl %s README.md --device cpu", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "on cpu, batch-invariant"), "%s", out);
    free(out);
    /* --fast lets a GPU drop invariance; the CPU keeps it and says so */
    rc = test_run(&out, "ppl %s README.md --device cpu --fast --gpu-mem-fraction 0.5", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "on cpu, batch-invariant"), "%s", out);
    free(out);
    rc = test_run(&out, "ppl %s README.md --device tpu", dir);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "'tpu'"), "%s", out);
    free(out);
    rc = test_run(&out, "ppl %s README.md --gpu-mem-fraction 0", dir);
    cr_assert_eq(rc, 2, "%s", out);
    free(out);
    cuda_device_info info;
    device_cuda_probe(&info);
    if (info.count == 0) { /* no GPU here: an explicit cuda is a usage error with the reason */
        char tmp[64], req[128];
        test_tmpdir(tmp, sizeof tmp);
        snprintf(req, sizeof req, "%s/req.jsonl", tmp);
        FILE *f = fopen(req, "w");
        cr_assert(f);
        fputs("{\"context\": \"a\", \"continuation\": \" b\", \"prompt\": \"a\"}\n", f);
        fclose(f);
        rc = test_run(&out, "score %s --requests %s --device cuda:1", dir, req);
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "cuda:1") && strstr(out, "use --device cpu or auto"), "%s", out);
        free(out);
        rc = test_run(&out, "generate %s --prompts %s --device cuda", dir, req);
        cr_assert_eq(rc, 2, "%s", out);
        cr_assert(strstr(out, "cuda:0"), "%s", out);
        free(out);
        unlink(req);
        rmdir(tmp);
    }
}

/* ---- the architecture table -------------------------------------------------------------------
 */

Test(engine, architecture_table_has_one_entry_per_role_and_names_that_format) {
    static const model_arch archs[] = {ARCH_LLAMA, ARCH_MISTRAL, ARCH_QWEN2, ARCH_GPT2};
    for (size_t a = 0; a < sizeof archs / sizeof *archs; a++) {
        int                n                = 0;
        const arch_tensor *t                = arch_tensors(archs[a], &n);
        int                seen[ROLE_COUNT] = {0};
        cr_assert(t && n > 0);
        for (int i = 0; i < n; i++) {
            cr_assert(t[i].role >= 0 && t[i].role < ROLE_COUNT);
            cr_assert(!seen[t[i].role]++, "arch %d: role %d twice", (int)archs[a], t[i].role);
            cr_assert_eq(arch_find(archs[a], t[i].role), &t[i]);
            /* per-layer names hold the layer number, global ones do not */
            cr_assert_eq(strstr(t[i].name, "%d") != NULL, t[i].section == 1, "%s", t[i].name);
            cr_assert(i == 0 || t[i].section >= t[i - 1].section, "%s out of order", t[i].name);
            cr_assert(t[i].rows != DIM_NONE);
        }
        cr_assert(seen[ROLE_TOK_EMB] && seen[ROLE_HEAD] && seen[ROLE_FINAL_NORM_W]);
    }
    char buf[128];
    cr_assert_str_eq(arch_name(buf, sizeof buf, arch_find(ARCH_GPT2, ROLE_QKV), 3, "transformer."),
                     "transformer.h.3.attn.c_attn.weight");
    cr_assert_str_eq(arch_name(buf, sizeof buf, arch_find(ARCH_GPT2, ROLE_TOK_EMB), 0, ""),
                     "wte.weight");
    cr_assert_str_eq(arch_name(buf, sizeof buf, arch_find(ARCH_QWEN2, ROLE_K_BIAS), 11, ""),
                     "model.layers.11.self_attn.k_proj.bias");
    cr_assert_null(arch_find(ARCH_LLAMA, ROLE_QKV));
    model_config c = {.dim = 64, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .ffn_dim = 160};
    cr_assert_eq(arch_dim_size(&c, DIM_Q), 64);
    cr_assert_eq(arch_dim_size(&c, DIM_KV), 32);
    cr_assert_eq(arch_dim_size(&c, DIM_3D), 192);
    cr_assert_eq(arch_dim_size(&c, DIM_NONE), 0);
    cr_assert(!arch_present(&c, arch_find(ARCH_QWEN2, ROLE_Q_BIAS)));
    c.qkv_bias = 1;
    cr_assert(arch_present(&c, arch_find(ARCH_QWEN2, ROLE_Q_BIAS)));
}

Test(engine, a_request_over_the_kv_cache_is_an_error_naming_it_and_the_capacity) {
    const char *dir = FIXTURES "/llama";
    if (access(dir, R_OK) != 0)
        cr_skip_test("SKIP: %s missing", dir);
    model_opts  o = {.max_batch_tokens = 24, .kv_tokens = 48};
    assay_error err;
    model      *m = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    cr_assert_eq(model_kv_tokens(m), 48);
    int32_t       toks[100] = {0};
    score_request r[2]      = {{toks, 10, 1}, {toks, 100, 1}};
    score_result  res[2];
    cr_assert_eq(model_score(m, r, 2, res, &err), ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, "request 1 needs 99 tokens of KV cache, the cache holds 48"), "%s",
              err.msg);
    /* a continuation on a shared context counts the context */
    score_request c = {toks, 30, 1};
    cr_assert_eq(model_score_shared(m, toks, 40, &c, 1, res, &err), ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, "continuation 0 needs 69 tokens"), "%s", err.msg);
    model_free(m);
}

/* model_score_groups (a prefix once, each group's context once, continuations on top) gives
 * every continuation exactly model_score's bits on prefix + context + continuation: on every
 * fixture, with the default budget and with a 24-token batch budget and a 160-token cache (the
 * prefix, group contexts and continuations in chunks, groups in several runs). */
static void groups_vs_plain(const char *dir, int max_batch, int kv_tokens) {
    model_opts  o   = {.max_batch_tokens = max_batch, .kv_tokens = kv_tokens};
    assay_error err = {0};
    model      *m   = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    int vocab = model_get_config(m)->vocab_size;
    enum { NP = 30, NG = 5, NC = 3 };
    int32_t          prefix[NP], ctx[NG][40], cont[NG][NC][12], full[80];
    score_request    conts[NG * NC];
    score_group      gs[NG];
    static const int ctx_len[NG] = {1, 2, 7, 33, 3};
    for (int i = 0; i < NP; i++)
        prefix[i] = (int32_t)(((unsigned)i * 2654435761u + 7u) % (unsigned)vocab);
    for (int g = 0; g < NG; g++) {
        for (int i = 0; i < ctx_len[g]; i++)
            ctx[g][i] =
                (int32_t)(((unsigned)(g + 3) * 40503u + (unsigned)i * 97u) % (unsigned)vocab);
        for (int c = 0; c < NC; c++) {
            int len = 1 + (g + c * 4) % 11;
            for (int i = 0; i < len; i++)
                cont[g][c][i] = (int32_t)(((unsigned)(g * 7 + c + 1) * 131u + (unsigned)i * 17u) %
                                          (unsigned)vocab);
            conts[g * NC + c] = (score_request){cont[g][c], len, c == 2 && len > 1 ? 1 : 0};
        }
        gs[g] = (score_group){ctx[g], ctx_len[g], conts + g * NC, NC};
    }
    score_result out[NG * NC];
    cr_assert_eq(model_score_groups(m, prefix, NP, gs, NG, out, &err), 0, "%s: %s", dir, err.msg);
    for (int g = 0; g < NG; g++)
        for (int c = 0; c < NC; c++) {
            const score_request *k = &conts[g * NC + c];
            int                  n = 0;
            memcpy(full, prefix, sizeof prefix);
            n = NP;
            memcpy(full + n, ctx[g], (size_t)ctx_len[g] * sizeof(int32_t));
            n += ctx_len[g];
            memcpy(full + n, k->tokens, (size_t)k->n_tokens * sizeof(int32_t));
            score_request r   = {full, n + k->n_tokens, NP + ctx_len[g] + k->score_from};
            score_result  ref = {0};
            cr_assert_eq(model_score(m, &r, 1, &ref, &err), 0, "%s", err.msg);
            const score_result *got = &out[g * NC + c];
            cr_assert_eq(got->n_targets, ref.n_targets, "%s group %d cont %d", dir, g, c);
            cr_expect_eq(memcmp(got->logprob, ref.logprob, (size_t)ref.n_targets * sizeof(float)),
                         0, "%s (batch %d, kv %d) group %d cont %d: log-probs differ", dir,
                         max_batch, kv_tokens, g, c);
            cr_expect_eq(memcmp(got->is_greedy, ref.is_greedy, (size_t)ref.n_targets), 0);
            score_results_free(&ref, 1);
        }
    score_results_free(out, NG * NC);
    model_free(m);
}

Test(engine, score_groups_equals_model_score_bitwise_on_every_fixture) {
    for (size_t i = 0; i < N_GOLDEN; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, FIXTURES "/%s", GOLDEN_MODELS[i]);
        groups_vs_plain(dir, 0, 0);
        groups_vs_plain(dir, 24, 160);
    }
}
