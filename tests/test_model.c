/* tests/test_model.c — the engine against transformers on the tiny fixture checkpoints
 * (tests/fixtures/models/<name>/reference.json, written by tools/), and its reproducibility
 * promises: batch invariance (bitwise), shared-prefix == plain scoring (bitwise), generation
 * independent of batching, and the memory budget checked before loading. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "runtime/model.h"
#include "tests/helpers.h"

#define FIXTURES "tests/fixtures/models"
/* transformers' reference is fp32 with other reduction orders (BLAS, attention); float32 logits
 * of these tiny models carry ~1e-6 rounding, so 1e-4 absolute on log-probs (the bound) */
#define LOGPROB_TOL 1e-4
/* below this top-2 logit margin, fp32 rounding may legitimately flip an argmax */
#define MARGIN_MIN 1e-4

static const char *const MODELS[] = {"llama", "llama3",  "llama_linear", "llama_hd",
                                     "qwen2", "mistral", "gpt2"};
#define N_MODELS (sizeof MODELS / sizeof *MODELS)

typedef struct ref_seq {
    int32_t *ids;
    int      n;
    double  *logprobs; /* n - 1 */
    int32_t *greedy;   /* n - 1 */
    double   margin;
} ref_seq;

typedef struct ref_gen {
    int32_t *prompt, *cont;
    int      n_prompt, n_cont;
    double   margin;
} ref_gen;

typedef struct reference {
    ref_seq seqs[16];
    int     n_seqs;
    ref_gen gens[8];
    int     n_gens;
} reference;

static int32_t *int_array(const cJSON *a, int *n) {
    *n         = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof(int32_t));
    int      i = 0;
    cJSON   *it;
    cJSON_ArrayForEach(it, a) v[i++] = (int32_t)it->valuedouble;
    return v;
}

static void free_reference(reference *r) {
    for (int i = 0; i < r->n_seqs; i++)
        free(r->seqs[i].ids), free(r->seqs[i].logprobs), free(r->seqs[i].greedy);
    for (int i = 0; i < r->n_gens; i++)
        free(r->gens[i].prompt), free(r->gens[i].cont);
}

/* Loads <dir>/reference.json; 0 when the fixture is missing (the caller skips). */
static int load_reference(const char *dir, reference *r) {
    char path[512], *text = NULL;
    memset(r, 0, sizeof *r);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    if (access(path, R_OK) != 0)
        return 0;
    assay_error err;
    cr_assert_eq(file_read_all(path, &text, NULL, &err), 0, "%s", err.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert(j, "%s: not JSON", path);
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "sequences")) {
        cr_assert(r->n_seqs < 16);
        ref_seq *s = &r->seqs[r->n_seqs++];
        int      nl, ng;
        s->ids    = int_array(cJSON_GetObjectItem(it, "ids"), &s->n);
        s->greedy = int_array(cJSON_GetObjectItem(it, "greedy"), &ng);
        cJSON *lp = cJSON_GetObjectItem(it, "logprobs");
        nl        = cJSON_GetArraySize(lp);
        cr_assert(nl == s->n - 1 && ng == s->n - 1, "%s: lengths", path);
        s->logprobs = malloc((size_t)(nl ? nl : 1) * sizeof(double));
        int    k    = 0;
        cJSON *x;
        cJSON_ArrayForEach(x, lp) s->logprobs[k++] = x->valuedouble;
        s->margin = cJSON_GetObjectItem(it, "min_top2_margin")->valuedouble;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "generate")) {
        cr_assert(r->n_gens < 8);
        ref_gen *g = &r->gens[r->n_gens++];
        g->prompt  = int_array(cJSON_GetObjectItem(it, "prompt"), &g->n_prompt);
        g->cont    = int_array(cJSON_GetObjectItem(it, "continuation"), &g->n_cont);
        g->margin  = cJSON_GetObjectItem(it, "min_top2_margin")->valuedouble;
    }
    cJSON_Delete(j);
    return 1;
}

static model *load_or_die(const char *dir, int threads, int batch_tokens) {
    model_opts  o = {.n_threads = threads, .max_batch_tokens = batch_tokens};
    assay_error err;
    model      *m = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    return m;
}

Test(model, fixtures_match_transformers_logprobs_and_greedy) {
    int n_checked = 0;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        char dir[256];
        snprintf(dir, sizeof dir, FIXTURES "/%s", MODELS[mi]);
        reference ref;
        if (!load_reference(dir, &ref)) {
            fprintf(stderr, "SKIP: %s/reference.json missing\n", dir);
            continue;
        }
        model        *m = load_or_die(dir, 2, 0);
        score_request req[16];
        score_result  res[16];
        for (int i = 0; i < ref.n_seqs; i++)
            req[i] = (score_request){ref.seqs[i].ids, ref.seqs[i].n, 1};
        assay_error err;
        cr_assert_eq(model_score(m, req, ref.n_seqs, res, &err), 0, "%s: %s", dir, err.msg);
        for (int i = 0; i < ref.n_seqs; i++) {
            const ref_seq *s = &ref.seqs[i];
            cr_assert_eq(res[i].n_targets, s->n - 1);
            double sum = 0;
            for (int t = 0; t < s->n - 1; t++) {
                cr_assert(fabs(res[i].logprob[t] - s->logprobs[t]) <= LOGPROB_TOL,
                          "%s seq %d pos %d: %.7f vs transformers %.7f", MODELS[mi], i, t,
                          res[i].logprob[t], s->logprobs[t]);
                if (s->margin > MARGIN_MIN)
                    cr_assert_eq(res[i].is_greedy[t], s->greedy[t] == s->ids[t + 1],
                                 "%s seq %d pos %d: greedy flag", MODELS[mi], i, t);
                sum += res[i].logprob[t];
            }
            cr_assert(fabs(res[i].sum - sum) < 1e-9);
        }
        /* greedy generation, all prompts in one continuous batch */
        gen_request g[8];
        gen_result  out[8];
        for (int i = 0; i < ref.n_gens; i++)
            g[i] = (gen_request){ref.gens[i].prompt, ref.gens[i].n_prompt, ref.gens[i].n_cont};
        cr_assert_eq(model_generate_greedy(m, g, ref.n_gens, NULL, 0, NULL, NULL, out, &err), 0,
                     "%s: %s", dir, err.msg);
        for (int i = 0; i < ref.n_gens; i++) {
            if (ref.gens[i].margin <= MARGIN_MIN) {
                fprintf(stderr, "SKIP: %s generation %d: top-2 margin %g too small\n", dir, i,
                        ref.gens[i].margin);
                continue;
            }
            cr_assert_eq(out[i].n_tokens, ref.gens[i].n_cont);
            cr_assert_eq(out[i].finish, GEN_LENGTH);
            for (int t = 0; t < ref.gens[i].n_cont; t++)
                cr_assert_eq(out[i].tokens[t], ref.gens[i].cont[t], "%s gen %d token %d",
                             MODELS[mi], i, t);
        }
        gen_results_free(out, ref.n_gens);
        score_results_free(res, ref.n_seqs);
        model_free(m);
        free_reference(&ref);
        n_checked++;
    }
    if (n_checked == 0)
        cr_skip_test("SKIP: no fixtures in " FIXTURES);
}

/* 32 pseudo-random sequences of mixed lengths (2..120 tokens: GPT-2 has 128 positions) */
static void make_batch(score_request *req, int32_t **bufs, int n, int vocab, unsigned seed) {
    for (int i = 0; i < n; i++) {
        int len = 2 + (int)((seed * 2654435761u + (unsigned)i * 40503u) % 119u);
        bufs[i] = malloc((size_t)len * sizeof(int32_t));
        for (int t = 0; t < len; t++)
            bufs[i][t] =
                (int32_t)((seed + (unsigned)i * 131u + (unsigned)t * 7919u) % (unsigned)vocab);
        req[i] = (score_request){bufs[i], len, 1 + (i % 3 == 0 ? len / 2 : 0)};
    }
}

static void check_bitwise(const score_result *a, const score_result *b, const char *what, int i) {
    cr_assert_eq(a->n_targets, b->n_targets);
    cr_assert(memcmp(a->logprob, b->logprob, (size_t)a->n_targets * sizeof(float)) == 0,
              "%s: request %d log-probs differ", what, i);
    cr_assert(memcmp(a->is_greedy, b->is_greedy, (size_t)a->n_targets) == 0);
    cr_assert(a->sum == b->sum);
}

static void batch_invariance(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, FIXTURES "/%s", name);
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing\n", dir);
        cr_skip_test("SKIP: %s missing", dir);
    }
    model        *m = load_or_die(dir, 1, 0);
    int           n = 32, vocab = model_get_config(m)->vocab_size;
    score_request req[32], shuffled[32];
    int32_t      *bufs[32];
    score_result  alone[32], batch[32];
    assay_error   err;
    make_batch(req, bufs, n, vocab, 12345u);
    for (int i = 0; i < n; i++) /* each request alone, 1 thread */
        cr_assert_eq(model_score(m, &req[i], 1, &alone[i], &err), 0, "%s", err.msg);
    /* all together, shuffled, with 2 threads; then with a tiny batch budget (forces other
     * packings and the chunked KV-cache path for long requests) */
    int perm[32];
    for (int i = 0; i < n; i++)
        perm[i] = (i * 13 + 5) % n;
    for (int i = 0; i < n; i++)
        shuffled[i] = req[perm[i]];
    for (int t = 1; t <= 2; t++) {
        model_set_threads(m, t);
        cr_assert_eq(model_score(m, shuffled, n, batch, &err), 0, "%s", err.msg);
        for (int i = 0; i < n; i++)
            check_bitwise(&alone[perm[i]], &batch[i], "batch of 32", perm[i]);
        score_results_free(batch, n);
    }
    model_free(m);
    m = load_or_die(dir, 2, 40);
    cr_assert_eq(model_score(m, shuffled, n, batch, &err), 0, "%s", err.msg);
    for (int i = 0; i < n; i++)
        check_bitwise(&alone[perm[i]], &batch[i], "40-token budget", perm[i]);
    score_results_free(batch, n);
    score_results_free(alone, n);
    model_free(m);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
}

Test(model, scores_are_bitwise_batch_invariant_llama) { batch_invariance("llama"); }
Test(model, scores_are_bitwise_batch_invariant_gpt2) { batch_invariance("gpt2"); }
Test(model, scores_are_bitwise_batch_invariant_mistral_window) { batch_invariance("mistral"); }

static void shared_prefix(const char *name, int batch_tokens) {
    char dir[256];
    snprintf(dir, sizeof dir, FIXTURES "/%s", name);
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing\n", dir);
        cr_skip_test("SKIP: %s missing", dir);
    }
    model      *m     = load_or_die(dir, 2, batch_tokens);
    int         vocab = model_get_config(m)->vocab_size;
    assay_error err;
    /* contexts of 1, 16 (a whole block), 37 and 70 tokens; 5 continuations each */
    int ctx_lens[] = {1, 16, 37, 70};
    for (size_t ci = 0; ci < sizeof ctx_lens / sizeof *ctx_lens; ci++) {
        int           n_ctx = ctx_lens[ci], nc = 5;
        int32_t       ctx[70], full[5][160];
        score_request conts[5], plain[5];
        score_result  rs[5], rp[5];
        for (int t = 0; t < n_ctx; t++)
            ctx[t] = (int32_t)((t * 31 + 7) % vocab);
        for (int c = 0; c < nc; c++) {
            int len = 1 + c * 9;
            memcpy(full[c], ctx, (size_t)n_ctx * 4);
            for (int t = 0; t < len; t++)
                full[c][n_ctx + t] = (int32_t)((c * 17 + t * 101 + 3) % vocab);
            int sf   = c == 3 ? len / 2 : 0; /* one continuation scores only its second half */
            conts[c] = (score_request){full[c] + n_ctx, len, sf};
            plain[c] = (score_request){full[c], n_ctx + len, n_ctx + sf};
        }
        cr_assert_eq(model_score_shared(m, ctx, n_ctx, conts, nc, rs, &err), 0, "%s", err.msg);
        cr_assert_eq(model_score(m, plain, nc, rp, &err), 0, "%s", err.msg);
        for (int c = 0; c < nc; c++)
            check_bitwise(&rp[c], &rs[c], "shared prefix", c);
        score_results_free(rs, nc);
        score_results_free(rp, nc);
    }
    model_free(m);
}

Test(model, shared_prefix_scoring_equals_plain_scoring_bitwise) {
    shared_prefix("llama", 0);
    shared_prefix("qwen2", 0);
    shared_prefix("gpt2", 0);
}
Test(model, shared_prefix_with_tiny_batch_budget_chunks_and_still_matches) {
    shared_prefix("mistral", 24);
}

/* stops request 1 after 3 tokens */
static int stop_after_three(void *user, int request, int32_t token, int index) {
    (void)token;
    int *calls = user;
    calls[request]++;
    return request == 1 && index == 2;
}

Test(model, generation_is_independent_of_batching_and_honours_stop_and_eos) {
    const char *dir = FIXTURES "/llama";
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing\n", dir);
        cr_skip_test("SKIP: %s missing", dir);
    }
    /* a budget of 24 KV tokens per batch and a small cache: prompts must wait for blocks and
     * long prompts are prefilled in chunks */
    model_opts  o = {.n_threads = 2, .max_batch_tokens = 24, .kv_tokens = 96};
    assay_error err;
    model      *m = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    int         n = 6, vocab = model_get_config(m)->vocab_size;
    int32_t     prompts[6][50];
    gen_request reqs[6];
    gen_result  alone[6], all[6];
    for (int i = 0; i < n; i++) {
        int len = 1 + i * 9;
        for (int t = 0; t < len; t++)
            prompts[i][t] = (int32_t)((i * 37 + t * 11 + 1) % vocab);
        reqs[i] = (gen_request){prompts[i], len, 20 + i};
    }
    for (int i = 0; i < n; i++)
        cr_assert_eq(model_generate_greedy(m, &reqs[i], 1, NULL, 0, NULL, NULL, &alone[i], &err), 0,
                     "%s", err.msg);
    int calls[6] = {0};
    cr_assert_eq(model_generate_greedy(m, reqs, n, NULL, 0, stop_after_three, calls, all, &err), 0,
                 "%s", err.msg);
    for (int i = 0; i < n; i++) {
        if (i == 1) {
            cr_assert_eq(all[i].finish, GEN_STOPPED);
            cr_assert_eq(all[i].n_tokens, 3);
            cr_assert_eq(calls[i], 3);
            cr_assert(memcmp(all[i].tokens, alone[i].tokens, 3 * 4) == 0);
            continue;
        }
        cr_assert_eq(all[i].n_tokens, reqs[i].max_new_tokens);
        cr_assert_eq(calls[i], reqs[i].max_new_tokens);
        cr_assert(memcmp(all[i].tokens, alone[i].tokens, (size_t)all[i].n_tokens * 4) == 0,
                  "request %d differs in a batch", i);
    }
    /* EOS: declare request 0's 5th token an end token; it stops there, not emitted */
    int32_t    eos = alone[0].tokens[4];
    gen_result e;
    cr_assert_eq(model_generate_greedy(m, &reqs[0], 1, &eos, 1, NULL, NULL, &e, &err), 0);
    cr_assert_eq(e.finish, GEN_EOS);
    int first = 0;
    while (alone[0].tokens[first] != eos)
        first++;
    cr_assert_eq(e.n_tokens, first);
    gen_results_free(&e, 1);
    /* a request that can never fit the cache is an error, not a hang */
    int32_t     big[200] = {0};
    gen_request huge     = {big, 200, 10};
    cr_assert_eq(model_generate_greedy(m, &huge, 1, NULL, 0, NULL, NULL, NULL, &err), ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, "KV cache"), "%s", err.msg);
    gen_results_free(alone, n);
    gen_results_free(all, n);
    model_free(m);
}

Test(model, memory_budget_is_checked_before_loading) {
    const char *dir = FIXTURES "/llama";
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing\n", dir);
        cr_skip_test("SKIP: %s missing", dir);
    }
    model_opts  o = {.mem_budget = 100000}; /* the weights alone are ~500 kB */
    assay_error err;
    cr_assert_null(model_load(dir, &o, &err));
    cr_assert_eq(err.code, ASSAY_ENOMEM);
    cr_assert(strstr(err.msg, dir) && strstr(err.msg, "memory budget") &&
                  strstr(err.msg, "weights"),
              "%s", err.msg);
    /* the message gives the need in MiB; with a budget just above it the model loads */
    o.mem_budget = 64u << 20;
    model *m     = model_load(dir, &o, &err);
    cr_assert(m, "%s", err.msg);
    model_free(m);
}

Test(model, rejects_bad_requests_with_a_message) {
    const char *dir = FIXTURES "/llama";
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing\n", dir);
        cr_skip_test("SKIP: %s missing", dir);
    }
    model        *m       = load_or_die(dir, 1, 0);
    int32_t       toks[3] = {1, 2, 100000};
    score_request r       = {toks, 3, 1};
    score_result  res;
    assay_error   err;
    cr_assert_eq(model_score(m, &r, 1, &res, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "token id 100000 out of range"), "%s", err.msg);
    r = (score_request){toks, 2, 0};
    cr_assert_eq(model_score(m, &r, 1, &res, &err), ASSAY_EINVAL);
    cr_assert(strstr(err.msg, "score_from"), "%s", err.msg);
    model_free(m);
}

Test(model, missing_checkpoint_is_reported_with_its_path) {
    assay_error err;
    cr_assert_null(model_load("/nonexistent/model-dir", NULL, &err));
    cr_assert_neq(err.code, ASSAY_OK);
    cr_assert(strstr(err.msg, "/nonexistent/model-dir"), "%s", err.msg);
}
