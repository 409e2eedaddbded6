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
