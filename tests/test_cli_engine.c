/* The model commands end to end on the tiny llama fixture: `assay ppl` against Hugging Face's
 * sliding-window recipe and lm-eval's rolling windows (ppl_reference.json), `assay score` against
 * lm-eval loglikelihood (score_reference.json), `assay generate` against transformers' greedy
 * generate (reference.json), and every bad input giving exit 2 with a message that names it.
 * References come from tools/make_tiny_models.py (torch float32, eager attention). */
#include <cJSON.h>
#include <math.h>

#include "core/util.h"
#include "tests/helpers.h"

#define LLAMA "tests/fixtures/models/llama"

/* The tolerance for perplexity: 1e-5 relative. Per-token log-probs: 1e-4 absolute (the
 * fp32 engine against torch fp32; summation orders differ). */
#define PPL_RTOL 1e-5
#define TOKEN_ATOL 1e-4

static cJSON *load_json(const char *path) {
    char  *text = NULL;
    size_t n    = 0;
    cr_assert_eq(file_read_all(path, &text, &n, NULL), 0, "cannot read %s", path);
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    cr_assert(j, "%s: not JSON", path);
    return j;
}

/* The JSON document a --json run printed (stderr's summary line has no '{'). */
static cJSON *parse_output(const char *out) {
    const char *b = strchr(out, '{');
    cr_assert(b, "no JSON in output:\n%s", out);
    cJSON *j = cJSON_ParseWithOpts(b, NULL, 0);
    cr_assert(j, "bad JSON in output:\n%s", out);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "missing number '%s'", k);
    return v->valuedouble;
}

static void expect_rel(double got, double want, double rtol, const char *what) {
    cr_expect(fabs(got - want) <= rtol * fabs(want), "%s: got %.10g, want %.10g (rtol %g)", what,
              got, want, rtol);
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    fputs(s, f);
    fclose(f);
}

/* Writes the reference text to dir/doc.txt. */
static cJSON *ppl_ref(char *doc, size_t cap, const char *dir) {
    cJSON *ref = load_json(LLAMA "/ppl_reference.json");
    snprintf(doc, cap, "%s/doc.txt", dir);
    write_text(doc, cJSON_GetObjectItem(ref, "text")->valuestring);
    return ref;
}

static void check_sliding_run(const cJSON *run, const char *doc) {
    char *out = NULL;
    int   ctx = (int)num(run, "max_length"), stride = (int)num(run, "stride");
    int   rc = test_run(&out, "ppl " LLAMA " %s --ctx %d --stride %d --json", doc, ctx, stride);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j     = parse_output(out);
    const cJSON *total = cJSON_GetObjectItem(j, "total");
    cr_expect_eq(num(total, "tokens"), num(run, "n_tokens"), "ctx %d stride %d", ctx, stride);
    expect_rel(num(total, "nll_nats"), num(run, "nll_sum"), PPL_RTOL, "sliding nll");
    expect_rel(num(total, "ppl"), num(run, "ppl"), PPL_RTOL, "sliding ppl");
    const cJSON *doc_recipe = cJSON_GetObjectItem(run, "doc_recipe");
    cr_expect_eq(num(total, "hf_recipe_tokens"), num(doc_recipe, "n_tokens"));
    expect_rel(num(total, "hf_recipe_ppl"), num(doc_recipe, "ppl"), PPL_RTOL, "recipe ppl");
    cr_expect_eq(num(j, "windows"), cJSON_GetArraySize(cJSON_GetObjectItem(run, "windows")));
    cJSON_Delete(j);
    free(out);
}

Test(cli_ppl, sliding_window_matches_the_hugging_face_recipe) {
    char dir[64], doc[128];
    test_tmpdir(dir, sizeof dir);
    cJSON       *ref  = ppl_ref(doc, sizeof doc, dir);
    const cJSON *runs = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "hf_sliding_window"), "runs");
    cr_assert_geq(cJSON_GetArraySize(runs), 2);
    const cJSON *run;
    cJSON_ArrayForEach(run, runs) check_sliding_run(run, doc);
    cJSON_Delete(ref);
    unlink(doc);
    rmdir(dir);
}

Test(cli_ppl, rolling_windows_match_lm_eval) {
    char dir[64], doc[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    cJSON       *ref = ppl_ref(doc, sizeof doc, dir);
    const cJSON *lm  = cJSON_GetObjectItem(ref, "lm_eval_rolling");
    int          rc  = test_run(&out, "ppl " LLAMA " %s --mode rolling --ctx %d --json", doc,
                                (int)num(lm, "max_length"));
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j = parse_output(out);
    const cJSON *t = cJSON_GetObjectItem(j, "total");
    cr_expect_eq(num(t, "tokens"), num(lm, "n_tokens"));
    cr_expect_eq(num(t, "words"), num(lm, "words"));
    cr_expect_eq(num(t, "bytes"), num(lm, "bytes"));
    cr_expect_eq(num(j, "prefix_token"), num(lm, "prefix_token"));
    cr_expect_eq(num(j, "windows"), cJSON_GetArraySize(cJSON_GetObjectItem(lm, "windows")));
    expect_rel(num(t, "nll_nats"), num(lm, "nll_sum"), PPL_RTOL, "rolling nll");
    expect_rel(num(t, "word_ppl"), num(lm, "word_perplexity"), PPL_RTOL, "word_perplexity");
    expect_rel(num(t, "byte_ppl"), num(lm, "byte_perplexity"), PPL_RTOL, "byte_perplexity");
    expect_rel(num(t, "bits_per_byte"), num(lm, "bits_per_byte"), PPL_RTOL, "bits_per_byte");
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out);
    unlink(doc);
    rmdir(dir);
}

Test(cli_ppl, jsonl_documents_are_scored_separately_and_summed) {
    char dir[64], doc[128], jl[160], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    cJSON       *ref = ppl_ref(doc, sizeof doc, dir);
    const cJSON *lm  = cJSON_GetObjectItem(ref, "lm_eval_rolling");
    /* the same document twice: each equals the reference, the total is twice it */
    snprintf(jl, sizeof jl, "%s/docs.jsonl", dir);
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "text", cJSON_GetObjectItem(ref, "text")->valuestring);
    char *s = cJSON_PrintUnformatted(line);
    FILE *f = fopen(jl, "wb");
    fprintf(f, "%s\r\n\n%s\n", s, s);
    fclose(f);
    free(s);
    cJSON_Delete(line);
    int rc = test_run(&out, "ppl " LLAMA " %s --mode=rolling --ctx=32 --json", jl);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j    = parse_output(out);
    const cJSON *docs = cJSON_GetObjectItem(j, "documents");
    cr_assert_eq(cJSON_GetArraySize(docs), 2);
    cr_expect(strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(docs, 1), "document")->valuestring,
                     "docs.jsonl:3"));
    expect_rel(num(cJSON_GetArrayItem(docs, 1), "nll_nats"), num(lm, "nll_sum"), PPL_RTOL, "doc 2");
    const cJSON *t = cJSON_GetObjectItem(j, "total");
    expect_rel(num(t, "nll_nats"), 2 * num(lm, "nll_sum"), PPL_RTOL, "total nll");
    expect_rel(num(t, "word_ppl"), num(lm, "word_perplexity"), PPL_RTOL, "weighted word ppl");
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out);
    unlink(jl);
    unlink(doc);
    rmdir(dir);
}

Test(cli_ppl, bad_inputs_exit_2_naming_the_file) {
    char dir[64], p[160], *out = NULL;
    test_tmpdir(dir, sizeof dir);

    snprintf(p, sizeof p, "%s/empty.txt", dir);
    write_text(p, "");
    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s", p), 2);
    cr_expect(strstr(out, "empty.txt") && strstr(out, "empty file"), "%s", out);
    free(out);
    unlink(p);

    snprintf(p, sizeof p, "%s/bad.jsonl", dir);
    write_text(p, "{\"text\": \"fine\"}\n\n{\"txt\": \"typo\"}\n");
    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s", p), 2);
    cr_expect(strstr(out, "bad.jsonl:3: expected a JSON object with a string field 'text'"), "%s",
              out);
    free(out);
    write_text(p, "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n");
    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s", p), 2);
    cr_expect(strstr(out, "bad.jsonl:2: invalid JSON"), "%s", out);
    free(out);
    unlink(p);

    /* GPT-2 adds no BOS: a one-token document has nothing to predict */
    snprintf(p, sizeof p, "%s/short.txt", dir);
    write_text(p, "a");
    cr_expect_eq(test_run(&out, "ppl tests/fixtures/models/gpt2 %s", p), 2);
    cr_expect(strstr(out, "short.txt") && strstr(out, "at least 2"), "%s", out);
    free(out);

    /* a --ctx over the model's positions is lowered to them, with a note naming the config */
    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s --ctx 100000", p), 0, "%s", out);
    cr_expect(strstr(out, "--ctx 100000") && strstr(out, "config.json"), "%s", out);
    free(out);

    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s --ctx 8 --stride 9", p), 2);
    cr_expect(strstr(out, "--stride"), "%s", out);
    free(out);

    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s/missing.txt", dir), 2);
    cr_expect(strstr(out, "missing.txt"), "%s", out);
    free(out);

    /* over the memory budget: refused before loading, naming the budget */
    snprintf(p, sizeof p, "%s/ok.txt", dir);
    write_text(p, "hello there, lighthouse");
    int rc = test_run(&out, "ppl " LLAMA " %s --mem-budget 64K", p);
    cr_expect_eq(rc, 2, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "budget"), "%s", out);
    free(out);

    cr_expect_eq(test_run(&out, "ppl " LLAMA " %s --mode tumbling", p), 2);
    cr_expect(strstr(out, "tumbling"), "%s", out);
    free(out);
    unlink(p);
    snprintf(p, sizeof p, "%s/short.txt", dir);
    unlink(p);
    rmdir(dir);
}

/* ---- score ------------------------------------------------------------------------------- */

static void check_score_result(const cJSON *got, const cJSON *want, int i) {
    const cJSON *lp = cJSON_GetObjectItem(got, "logprobs"),
                *wl = cJSON_GetObjectItem(want, "logprobs");
    cr_assert_eq(cJSON_GetArraySize(lp), cJSON_GetArraySize(wl), "request %d", i);
    cr_expect_eq(num(got, "n_tokens"), cJSON_GetArraySize(wl));
    for (int k = 0; k < cJSON_GetArraySize(wl); k++) {
        double a = cJSON_GetArrayItem(lp, k)->valuedouble,
               b = cJSON_GetArrayItem(wl, k)->valuedouble;
        cr_expect(fabs(a - b) <= TOKEN_ATOL, "request %d token %d: %.7f vs %.7f", i, k, a, b);
    }
    double n = (double)cJSON_GetArraySize(wl);
    cr_expect(fabs(num(got, "logprob") - num(want, "sum")) <= TOKEN_ATOL * n, "request %d sum", i);
    cr_expect_eq(cJSON_IsTrue(cJSON_GetObjectItem(got, "is_greedy")),
                 cJSON_IsTrue(cJSON_GetObjectItem(want, "is_greedy")), "request %d greedy", i);
    /* the continuation tokens are lm-eval's continuation_enc */
    const cJSON *tk = cJSON_GetObjectItem(got, "tokens"),
                *we = cJSON_GetObjectItem(want, "continuation_enc");
    for (int k = 0; k < cJSON_GetArraySize(we); k++)
        cr_expect_eq(cJSON_GetArrayItem(tk, k)->valueint, cJSON_GetArrayItem(we, k)->valueint,
                     "request %d token %d id", i, k);
    cr_expect_eq(num(got, "n_context"), num(want, "score_from") + 1, "request %d context", i);
}

Test(cli_score, text_and_id_requests_match_lm_eval) {
    char   dir[64], req[128], outp[128], *out = NULL;
    cJSON *ref  = load_json(LLAMA "/score_reference.json");
    cJSON *reqs = cJSON_GetObjectItem(ref, "requests");
    int    n    = cJSON_GetArraySize(reqs);
    cr_assert_geq(n, 5);
    test_tmpdir(dir, sizeof dir);
    snprintf(req, sizeof req, "%s/requests.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/out.jsonl", dir);
    FILE *f = fopen(req, "wb");
    /* each request as text, then the same as token ids, then text again with an id: repeated
     * contexts take the shared-prefix path and must give the same numbers */
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < n; i++) {
            const cJSON *r = cJSON_GetArrayItem(reqs, i);
            cJSON       *o = cJSON_CreateObject();
            if (pass == 1) {
                cJSON_AddItemToObject(o, "context_ids",
                                      cJSON_Duplicate(cJSON_GetObjectItem(r, "context_enc"), 1));
                cJSON_AddItemToObject(
                    o, "continuation_ids",
                    cJSON_Duplicate(cJSON_GetObjectItem(r, "continuation_enc"), 1));
            } else {
                cJSON_AddStringToObject(o, "context",
                                        cJSON_GetObjectItem(r, "context")->valuestring);
                cJSON_AddStringToObject(o, "continuation",
                                        cJSON_GetObjectItem(r, "continuation")->valuestring);
                if (pass == 2)
                    cJSON_AddNumberToObject(o, "id", 1000 + i);
            }
            char *s = cJSON_PrintUnformatted(o);
            fprintf(f, "%s\n", s);
            free(s);
            cJSON_Delete(o);
        }
    fclose(f);
    int rc = test_run(&out, "score " LLAMA " --requests %s --output %s --json", req, outp);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j   = parse_output(out);
    const cJSON *res = cJSON_GetObjectItem(j, "results");
    cr_assert_eq(cJSON_GetArraySize(res), 3 * n);
    for (int i = 0; i < 3 * n; i++) {
        const cJSON *g = cJSON_GetArrayItem(res, i);
        check_score_result(g, cJSON_GetArrayItem(reqs, i % n), i);
        cr_expect_eq(num(g, "line"), i + 1);
    }
    cr_expect_eq(num(cJSON_GetArrayItem(res, 2 * n), "id"), 1000);
    /* Each context above came three times (shared-prefix path). Alone, each request takes the
     * batched path; the engine promises the same bits either way. */
    char alone[128], *out2 = NULL;
    snprintf(alone, sizeof alone, "%s/alone.jsonl", dir);
    f = fopen(alone, "wb");
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(reqs, i);
        cJSON       *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "context", cJSON_GetObjectItem(r, "context")->valuestring);
        cJSON_AddStringToObject(o, "continuation",
                                cJSON_GetObjectItem(r, "continuation")->valuestring);
        char *s = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    fclose(f);
    rc = test_run(&out2, "score " LLAMA " --requests %s --json", alone);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out2);
    cJSON *j2 = parse_output(out2);
    for (int i = 0; i < n; i++)
        cr_expect_eq(num(cJSON_GetArrayItem(cJSON_GetObjectItem(j2, "results"), i), "logprob"),
                     num(cJSON_GetArrayItem(res, i), "logprob"), "request %d: shared != alone", i);
    cJSON_Delete(j2);
    free(out2);
    unlink(alone);
    /* the --output file holds the same results, one per line */
    char  *text = NULL;
    size_t len  = 0;
    cr_assert_eq(file_read_all(outp, &text, &len, NULL), 0);
    int lines = 0;
    for (char *p = text; (p = strchr(p, '\n')); p++)
        lines++;
    cr_expect_eq(lines, 3 * n);
    cJSON *first = cJSON_ParseWithOpts(text, NULL, 0);
    cr_assert(first);
    check_score_result(first, cJSON_GetArrayItem(reqs, 0), 0);
    cJSON_Delete(first);
    free(text);
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out);
    unlink(req);
    unlink(outp);
    rmdir(dir);
}

Test(cli_score, bad_requests_exit_2_naming_file_and_line) {
    char dir[64], p[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/req.jsonl", dir);
    write_text(p, "{\"context\": \"a\", \"continuation\": \" b\"}\n{\"context\": \"a\"}\n");
    cr_expect_eq(test_run(&out, "score " LLAMA " --requests %s", p), 2);
    cr_expect(strstr(out, "req.jsonl:2: expected a JSON object with a string field 'continuation'"),
              "%s", out);
    free(out);
    write_text(p, "{\"context_ids\": [1, 2], \"continuation_ids\": [5, 100000]}\n");
    cr_expect_eq(test_run(&out, "score " LLAMA " --requests %s", p), 2);
    cr_expect(strstr(out, "req.jsonl:1: 'continuation_ids'[1]"), "%s", out);
    free(out);
    write_text(p, "{\"context\": \"a b c\", \"continuation\": \"\"}\n");
    cr_expect_eq(test_run(&out, "score " LLAMA " --requests %s", p), 2);
    cr_expect(strstr(out, "req.jsonl:1") && strstr(out, "no tokens"), "%s", out);
    free(out);
    write_text(p, "[1, 2]\n");
    cr_expect_eq(test_run(&out, "score " LLAMA " --requests %s", p), 2);
    cr_expect(strstr(out, "req.jsonl:1: expected a JSON object"), "%s", out);
    free(out);
    cr_expect_eq(test_run(&out, "score " LLAMA), 2);
    cr_expect(strstr(out, "usage: assay score"), "%s", out);
    free(out);
    unlink(p);
    rmdir(dir);
}

/* ---- generate ---------------------------------------------------------------------------- */

/* tokenizers' decode(skip_special_tokens=True) of reference.json generate[0].continuation: lone
 * byte-fallback tokens decode to U+FFFD. */
#define R "\xef\xbf\xbd"
static const char gen0_text[] = "Ieciehtv" R "me" R R "'|ci-c" R "ureh p W" R R R R
                                "mese,I" R R R R R "ed" R R R R "orA" R R R R "edci- lvs\xd5\x86"
                                "no" R R " for g" R R R R R R R;
#undef R

static cJSON *gen_ref(void) { return load_json(LLAMA "/reference.json"); }

Test(cli_generate, greedy_continuations_match_transformers) {
    char   dir[64], p[128], *out = NULL;
    cJSON *ref  = gen_ref();
    cJSON *gens = cJSON_GetObjectItem(ref, "generate");
    int    n    = cJSON_GetArraySize(gens);
    cr_assert_geq(n, 1);
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/prompts.jsonl", dir);
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(
            o, "prompt_ids",
            cJSON_Duplicate(cJSON_GetObjectItem(cJSON_GetArrayItem(gens, i), "prompt"), 1));
        char *s = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    fclose(f);
    int max_new =
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(gens, 0), "continuation"));
    int rc =
        test_run(&out, "generate " LLAMA " --prompts %s --max-new-tokens %d --json", p, max_new);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j   = parse_output(out);
    const cJSON *res = cJSON_GetObjectItem(j, "results");
    cr_assert_eq(cJSON_GetArraySize(res), n);
    for (int i = 0; i < n; i++) {
        const cJSON *g    = cJSON_GetArrayItem(res, i);
        const cJSON *want = cJSON_GetObjectItem(cJSON_GetArrayItem(gens, i), "continuation");
        const cJSON *got  = cJSON_GetObjectItem(g, "tokens");
        cr_assert_eq(cJSON_GetArraySize(got), cJSON_GetArraySize(want), "prompt %d", i);
        for (int k = 0; k < cJSON_GetArraySize(want); k++)
            cr_expect_eq(cJSON_GetArrayItem(got, k)->valueint,
                         cJSON_GetArrayItem(want, k)->valueint, "prompt %d token %d", i, k);
        cr_expect_str_eq(cJSON_GetObjectItem(g, "finish")->valuestring, "length");
    }
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "text")->valuestring,
                     gen0_text);
    cr_expect_eq(num(j, "generated_tokens"), n * max_new);
    /* mean_tpot_s: the mean of each prompt's (latency_s - ttft_s) / (n_tokens - 1), printed to
     * 6 significant digits */
    cr_assert_geq(max_new, 2);
    double tpot = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *g = cJSON_GetArrayItem(res, i);
        tpot += (num(g, "latency_s") - num(g, "ttft_s")) / (num(g, "n_tokens") - 1);
    }
    tpot /= n;
    cr_expect_gt(tpot, 0);
    cr_expect(fabs(num(j, "mean_tpot_s") - tpot) <= 1e-5 * tpot, "mean_tpot_s %g, from results %g",
              num(j, "mean_tpot_s"), tpot);
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out);
    unlink(p);
    rmdir(dir);
}

Test(cli_generate, stop_string_spanning_four_tokens_ends_the_request) {
    char   dir[64], p[128], *out = NULL;
    cJSON *ref = gen_ref();
    cJSON *prompt =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "generate"), 0), "prompt");
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/prompts.jsonl", dir);
    /* continuation pieces: I e ci e ht v ...; "ciehtv" spans tokens 2..5 ("ci" "e" "ht" "v") */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "prompt_ids", cJSON_Duplicate(prompt, 1));
    cJSON_AddStringToObject(o, "id", "first");
    char *s = cJSON_PrintUnformatted(o);
    FILE *f = fopen(p, "wb");
    /* line 1 uses --stop; line 2 replaces it with its own list that never matches */
    fprintf(f, "%s\n", s);
    cJSON_AddItemToObject(o, "stop", cJSON_CreateStringArray((const char *[]){"zzz"}, 1));
    cJSON_AddNumberToObject(o, "max_new_tokens", 8);
    free(s);
    s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", s);
    fclose(f);
    free(s);
    cJSON_Delete(o);
    int rc = test_run(
        &out, "generate " LLAMA " --prompts %s --max-new-tokens 40 --stop ciehtv --json", p);
    cr_assert_eq(rc, 0, "exit %d:\n%s", rc, out);
    cJSON       *j  = parse_output(out);
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 1);
    cr_expect_str_eq(cJSON_GetObjectItem(r0, "finish")->valuestring, "stop");
    cr_expect_str_eq(cJSON_GetObjectItem(r0, "text")->valuestring, "Ie");
    cr_expect_eq(num(r0, "n_tokens"), 6); /* the token completing the stop string is counted */
    cr_expect_str_eq(cJSON_GetObjectItem(r0, "id")->valuestring, "first");
    cr_expect_str_eq(cJSON_GetObjectItem(r1, "finish")->valuestring, "length");
    cr_expect_eq(num(r1, "n_tokens"), 8);
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out);
    unlink(p);
    rmdir(dir);
}

Test(cli_generate, bad_prompts_exit_2_naming_file_and_line) {
    char dir[64], p[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/prompts.jsonl", dir);
    write_text(p, "{\"prompt\": \"hi\"}\n{\"prompt\": 3}\n");
    cr_expect_eq(test_run(&out, "generate " LLAMA " --prompts %s", p), 2);
    cr_expect(strstr(out, "prompts.jsonl:2: field 'prompt' must be a string"), "%s", out);
    free(out);
    write_text(p, "{\"prompt\": \"hi\", \"max_new_tokens\": 100000}\n");
    cr_expect_eq(test_run(&out, "generate " LLAMA " --prompts %s", p), 2);
    cr_expect(strstr(out, "prompts.jsonl:1") && strstr(out, "context"), "%s", out);
    free(out);
    write_text(p, "{\"prompt\": \"hi\", \"stop\": [1]}\n");
    cr_expect_eq(test_run(&out, "generate " LLAMA " --prompts %s", p), 2);
    cr_expect(strstr(out, "prompts.jsonl:1: field 'stop'"), "%s", out);
    free(out);
    cr_expect_eq(test_run(&out, "generate " LLAMA " --prompts %s --max-new-tokens 0", p), 2);
    cr_expect(strstr(out, "--max-new-tokens"), "%s", out);
    free(out);
    unlink(p);
    rmdir(dir);
}

Test(cli_commands, help_is_printed_with_exit_0) {
    const char *cmds[] = {"ppl", "score", "generate"};
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        cr_expect_eq(test_run(&out, "%s --help", cmds[i]), 0);
        cr_expect(strstr(out, "usage: assay") && strstr(out, "--json") &&
                      strstr(out, "--mem-budget") && strstr(out, "exit codes"),
                  "%s", out);
        free(out);
    }
}
