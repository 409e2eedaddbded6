/* tests/test_stories.c — stories260K, a real trained model, end to end: the GGUF in ../shared is
 * converted with `assay convert`, loaded by the engine, and held to what transformers computes
 * on the same converted checkpoint (tests/fixtures/stories260K/reference.json, written by
 * tools/make_stories_reference.py): per-position log-probs, argmaxes, 64-token greedy
 * continuations and the HF sliding-window perplexity. Agreement proves the conversion and the
 * engine together.
 *
 * Tolerance: 1e-4 absolute per log-prob (the bound). transformers and the engine both
 * compute in float32 on identical weights; the measured gap is ~1e-6 per token. Every reference
 * input has a top-1 minus top-2 logit gap of at least 1e-3 (the reference's margin_min), so an
 * engine within tolerance cannot pick a different argmax. Sums over n tokens get n * 1e-4. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/util.h"
#include "runtime/model.h"
#include "tests/helpers.h"

#define STORIES "models/stories260K/stories260K.gguf"
#define REFERENCE "tests/fixtures/stories260K/reference.json"
#define LOGPROB_TOL 1e-4
#define EOS_ID 2

typedef struct ints {
    int32_t *v;
    int      n;
} ints;

static ints int_array(const cJSON *a) {
    ints r = {NULL, cJSON_GetArraySize(a)};
    cr_assert(cJSON_IsArray(a) && r.n > 0, "reference: expected a non-empty array");
    r.v = malloc((size_t)r.n * sizeof *r.v);
    for (int i = 0; i < r.n; i++)
        r.v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return r;
}

static cJSON *load_reference(void) {
    char       *text = NULL;
    size_t      n    = 0;
    assay_error err;
    cr_assert_eq(file_read_all(REFERENCE, &text, &n, &err), 0, "%s", err.msg);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    cr_assert_not_null(j, "%s is not JSON", REFERENCE);
    return j;
}

static void rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The reference was made from one exact file: a different GGUF under the same name would make
 * every comparison below meaningless, so say that plainly instead. */
static void check_gguf_hash(const char *gguf, const cJSON *ref) {
    char cmd[1200], line[128] = {0};
    snprintf(cmd, sizeof cmd, "sha256sum '%s' 2>/dev/null", gguf);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(line, sizeof line, p) || strlen(line) < 64) {
        if (p)
            pclose(p);
        fprintf(stderr, "note: sha256sum unavailable; not checking %s's hash\n", gguf);
        return;
    }
    pclose(p);
    const char *want = cJSON_GetObjectItem(ref, "gguf_sha256")->valuestring;
    cr_assert(!strncmp(line, want, 64), "%s: sha256 %.64s, the reference was made from %s", gguf,
              line, want);
}

/* Converts the shared GGUF into a fresh temporary directory; dir receives "<tmp>/stories". */
static void convert_stories(const char *gguf, char *tmp, size_t tmp_cap, char *dir, size_t cap) {
    test_tmpdir(tmp, tmp_cap);
    snprintf(dir, cap, "%s/stories", tmp);
    char *log = NULL;
    int   rc  = test_run(&log, "convert %s %s", gguf, dir);
    cr_assert_eq(rc, 0, "assay convert failed (%d): %s", rc, log ? log : "");
    free(log);
}

static model *load_model(const char *dir) {
    assay_error err;
    model      *m = model_load(dir, NULL, &err);
    cr_assert_not_null(m, "model_load %s: %s", dir, err.msg);
    return m;
}

Test(stories, converted_model_matches_transformers_logprobs_and_argmax) {
    SHARED_OR_SKIP(gguf, STORIES);
    cJSON *ref = load_reference();
    check_gguf_hash(gguf, ref);
    char tmp[64], dir[128];
    convert_stories(gguf, tmp, sizeof tmp, dir, sizeof dir);
    model *m = load_model(dir);

    const cJSON *seqs = cJSON_GetObjectItem(ref, "sequences");
    int          n    = cJSON_GetArraySize(seqs);
    cr_assert_geq(n, 5, "reference has %d sequences", n);
    ints *ids = calloc((size_t)n, sizeof *ids), *greedy = calloc((size_t)n, sizeof *greedy);
    score_request *req   = calloc((size_t)n, sizeof *req);
    score_result  *res   = calloc((size_t)n, sizeof *res);
    int            n_pos = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_GetArrayItem(seqs, i);
        ids[i]         = int_array(cJSON_GetObjectItem(s, "ids"));
        greedy[i]      = int_array(cJSON_GetObjectItem(s, "greedy"));
        cr_assert_eq(greedy[i].n, ids[i].n - 1);
        cr_assert_geq(cJSON_GetObjectItem(s, "min_top2_margin")->valuedouble, 10 * LOGPROB_TOL);
        req[i] = (score_request){ids[i].v, ids[i].n, 1};
        n_pos += ids[i].n - 1;
    }
    assay_error err;
    cr_assert_eq(model_score(m, req, n, res, &err), 0, "%s", err.msg);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *lp = cJSON_GetObjectItem(cJSON_GetArrayItem(seqs, i), "logprobs");
        cr_assert_eq(res[i].n_targets, ids[i].n - 1);
        for (int t = 0; t < res[i].n_targets; t++) {
            double want = cJSON_GetArrayItem(lp, t)->valuedouble,
                   d    = fabs(res[i].logprob[t] - want);
            worst       = d > worst ? d : worst;
            cr_assert_leq(d, LOGPROB_TOL,
                          "sequence %d position %d: log-prob %.7f, transformers %.7f", i, t,
                          res[i].logprob[t], want);
            cr_assert_eq(res[i].is_greedy[t], greedy[i].v[t] == ids[i].v[t + 1],
                         "sequence %d position %d: greedy flag", i, t);
        }
    }
    fprintf(stderr, "stories260K: %d positions, largest log-prob difference %.3g\n", n_pos, worst);

    /* The argmax itself at every position: score the reference's argmax as the target after
     * each prefix; the engine must call it the greedy token. */
    score_request *arg  = calloc((size_t)n_pos, sizeof *arg);
    score_result  *ares = calloc((size_t)n_pos, sizeof *ares);
    int32_t      **buf  = calloc((size_t)n_pos, sizeof *buf);
    int            k    = 0;
    for (int i = 0; i < n; i++)
        for (int t = 0; t + 1 < ids[i].n; t++, k++) {
            buf[k] = malloc((size_t)(t + 2) * sizeof **buf);
            memcpy(buf[k], ids[i].v, (size_t)(t + 1) * sizeof **buf);
            buf[k][t + 1] = greedy[i].v[t];
            arg[k]        = (score_request){buf[k], t + 2, t + 1};
        }
    cr_assert_eq(model_score(m, arg, n_pos, ares, &err), 0, "%s", err.msg);
    k = 0;
    for (int i = 0; i < n; i++)
        for (int t = 0; t + 1 < ids[i].n; t++, k++)
            cr_assert_eq(ares[k].is_greedy[0], 1,
                         "sequence %d position %d: transformers' argmax %d is not the engine's", i,
                         t, greedy[i].v[t]);

    for (int i = 0; i < n_pos; i++)
        free(buf[i]);
    free(buf);
    score_results_free(ares, n_pos);
    free(ares);
    free(arg);
    score_results_free(res, n);
    for (int i = 0; i < n; i++)
        free(ids[i].v), free(greedy[i].v);
    free(ids), free(greedy), free(req), free(res);
    model_free(m);
    cJSON_Delete(ref);
    rm_tree(tmp);
}

Test(stories, greedy_generation_matches_transformers_for_64_tokens) {
    SHARED_OR_SKIP(gguf, STORIES);
    cJSON *ref = load_reference();
    char   tmp[64], dir[128];
    convert_stories(gguf, tmp, sizeof tmp, dir, sizeof dir);
    model *m = load_model(dir);

    const cJSON *gens = cJSON_GetObjectItem(ref, "generate");
    int          n    = cJSON_GetArraySize(gens);
    cr_assert_geq(n, 4, "reference has %d generations", n);
    ints *prompt = calloc((size_t)n, sizeof *prompt), *cont = calloc((size_t)n, sizeof *cont);
    gen_request *req = calloc((size_t)n, sizeof *req);
    gen_result  *out = calloc((size_t)n, sizeof *out);
    for (int i = 0; i < n; i++) {
        const cJSON *g = cJSON_GetArrayItem(gens, i);
        prompt[i]      = int_array(cJSON_GetObjectItem(g, "prompt"));
        cont[i]        = int_array(cJSON_GetObjectItem(g, "continuation"));
        cr_assert_geq(cont[i].n, 64);
        cr_assert_geq(cJSON_GetObjectItem(g, "min_top2_margin")->valuedouble, 10 * LOGPROB_TOL);
        req[i] = (gen_request){prompt[i].v, prompt[i].n, cont[i].n};
    }
    /* EOS is live: the reference checked that it is never the argmax within these tokens. */
    const int32_t eos = EOS_ID;
    assay_error   err;
    cr_assert_eq(model_generate_greedy(m, req, n, &eos, 1, NULL, NULL, out, &err), 0, "%s",
                 err.msg);
    for (int i = 0; i < n; i++) {
        const char *text = cJSON_GetObjectItem(cJSON_GetArrayItem(gens, i), "text")->valuestring;
        cr_assert_eq(out[i].finish, GEN_LENGTH, "'%s': stopped early (finish %d) after %d tokens",
                     text, out[i].finish, out[i].n_tokens);
        cr_assert_eq(out[i].n_tokens, cont[i].n, "'%s'", text);
        for (int t = 0; t < cont[i].n; t++)
            cr_assert_eq(out[i].tokens[t], cont[i].v[t], "'%s': token %d is %d, transformers %d",
                         text, t, out[i].tokens[t], cont[i].v[t]);
    }
    gen_results_free(out, n);
    for (int i = 0; i < n; i++)
        free(prompt[i].v), free(cont[i].v);
    free(prompt), free(cont), free(req), free(out);
    model_free(m);
    cJSON_Delete(ref);
    rm_tree(tmp);
}

/* The sliding windows of the reference, scored with the library: each window's NLL. */
Test(stories, sliding_window_nll_matches_transformers_per_window) {
    SHARED_OR_SKIP(gguf, STORIES);
    cJSON *ref = load_reference();
    char   tmp[64], dir[128];
    convert_stories(gguf, tmp, sizeof tmp, dir, sizeof dir);
    model *m = load_model(dir);

    const cJSON *hf  = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "ppl"), "hf_sliding_window");
    ints         ids = int_array(cJSON_GetObjectItem(hf, "ids"));
    const cJSON *run = cJSON_GetArrayItem(cJSON_GetObjectItem(hf, "runs"), 0);
    const cJSON *win = cJSON_GetObjectItem(run, "windows");
    int          n   = cJSON_GetArraySize(win);
    cr_assert_geq(ids.n, 300);
    cr_assert_geq(n, 4);
    score_request *req    = calloc((size_t)n, sizeof *req);
    score_result  *res    = calloc((size_t)n, sizeof *res);
    int            scored = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *w     = cJSON_GetArrayItem(win, i);
        int          begin = cJSON_GetObjectItem(w, "begin")->valueint;
        int          end   = cJSON_GetObjectItem(w, "end")->valueint;
        int          first = cJSON_GetObjectItem(w, "first_scored")->valueint;
        cr_assert(begin >= 0 && begin < first && first < end && end <= ids.n);
        req[i] = (score_request){ids.v + begin, end - begin, first - begin};
    }
    assay_error err;
    cr_assert_eq(model_score(m, req, n, res, &err), 0, "%s", err.msg);
    double total = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *w    = cJSON_GetArrayItem(win, i);
        double       want = cJSON_GetObjectItem(w, "nll_sum")->valuedouble;
        int          ns   = cJSON_GetObjectItem(w, "n_scored")->valueint;
        cr_assert_eq(res[i].n_targets, ns, "window %d", i);
        cr_assert_leq(fabs(-res[i].sum - want), ns * LOGPROB_TOL, "window %d: NLL %.6f, want %.6f",
                      i, -res[i].sum, want);
        total -= res[i].sum;
        scored += ns;
    }
    /* every token after the first is scored exactly once */
    cr_assert_eq(scored, ids.n - 1);
    cr_assert_eq(cJSON_GetObjectItem(run, "n_tokens")->valueint, ids.n - 1);
    double want = cJSON_GetObjectItem(run, "nll_sum")->valuedouble;
    cr_assert_leq(fabs(total - want), scored * LOGPROB_TOL, "NLL %.6f, want %.6f", total, want);
    fprintf(stderr, "stories260K ppl: %d tokens, NLL %.6f (transformers %.6f)\n", scored, total,
            want);
    score_results_free(res, n);
    free(req), free(res), free(ids.v);
    model_free(m);
    cJSON_Delete(ref);
    rm_tree(tmp);
}

/* `assay ppl` on the same text: tokenizes it itself, so this also checks the converted
 * tokenizer against the ids transformers' tokenizer gave. */
Test(stories, cli_ppl_matches_the_hf_sliding_window_reference) {
    SHARED_OR_SKIP(gguf, STORIES);
    if (test_run(NULL, "ppl --help") != 0) {
        fprintf(stderr, "SKIP: assay ppl is not available in %s\n", test_bin());
        cr_skip_test("assay ppl is not available");
    }
    cJSON *ref = load_reference();
    char   tmp[64], dir[128], txt[160];
    convert_stories(gguf, tmp, sizeof tmp, dir, sizeof dir);
    const cJSON *ppl  = cJSON_GetObjectItem(ref, "ppl");
    const char  *text = cJSON_GetObjectItem(ppl, "text")->valuestring;
    snprintf(txt, sizeof txt, "%s/story.txt", tmp);
    cr_assert_eq(file_write_atomic(txt, text, strlen(text), NULL), 0);
    const cJSON *hf  = cJSON_GetObjectItem(ppl, "hf_sliding_window");
    const cJSON *run = cJSON_GetArrayItem(cJSON_GetObjectItem(hf, "runs"), 0);

    char *log = NULL;
    int   rc  = test_run(&log, "ppl %s %s --ctx %d --stride %d --json --threads 2", dir, txt,
                         cJSON_GetObjectItem(run, "max_length")->valueint,
                         cJSON_GetObjectItem(run, "stride")->valueint);
    cr_assert_eq(rc, 0, "assay ppl exit %d: %s", rc, log);
    const char *start = strchr(log, '{'); /* stderr's summary line may come first */
    cr_assert_not_null(start, "%s", log);
    cJSON *j = cJSON_ParseWithOpts(start, NULL, 0);
    cr_assert_not_null(j, "not JSON: %s", log);
    const cJSON *tot = cJSON_GetObjectItem(j, "total");
    cr_assert_not_null(tot, "%s", log);
    int    n_tok = cJSON_GetObjectItem(run, "n_tokens")->valueint;
    double want  = cJSON_GetObjectItem(run, "nll_sum")->valuedouble;
    double got   = cJSON_GetObjectItem(tot, "nll_nats")->valuedouble;
    cr_assert_eq(cJSON_GetObjectItem(tot, "tokens")->valueint, n_tok, "%s", log);
    cr_assert_leq(fabs(got - want), n_tok * LOGPROB_TOL, "NLL %.6f, transformers %.6f", got, want);
    cr_assert_leq(fabs(cJSON_GetObjectItem(tot, "ppl")->valuedouble -
                       cJSON_GetObjectItem(run, "ppl")->valuedouble),
                  cJSON_GetObjectItem(run, "ppl")->valuedouble * LOGPROB_TOL,
                  "ppl %.6f, transformers %.6f", cJSON_GetObjectItem(tot, "ppl")->valuedouble,
                  cJSON_GetObjectItem(run, "ppl")->valuedouble);
    /* the recipe's own arithmetic (mean loss x (valid - 1) per window) */
    const cJSON *doc = cJSON_GetObjectItem(run, "doc_recipe");
    const cJSON *rn  = cJSON_GetObjectItem(tot, "hf_recipe_nll");
    if (rn) {
        int dn = cJSON_GetObjectItem(doc, "n_tokens")->valueint;
        cr_assert_eq(cJSON_GetObjectItem(tot, "hf_recipe_tokens")->valueint, dn);
        cr_assert_leq(fabs(rn->valuedouble - cJSON_GetObjectItem(doc, "nll_sum")->valuedouble),
                      n_tok * LOGPROB_TOL);
    }
    cJSON_Delete(j);
    free(log);
    cJSON_Delete(ref);
    rm_tree(tmp);
}
