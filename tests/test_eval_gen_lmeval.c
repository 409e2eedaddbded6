/* assay eval's generation path against lm-evaluation-harness itself:
 * tools/make_lmeval_gen_reference.py ran lm-eval 0.4.13 (HF backend, CPU, float32, batch size 1)
 * with its own gsm8k.yaml (5-shot, its stop strings and filters, exact_match options) and
 * max_gen_toks 32 on GSM8K-shaped items we wrote (tests/fixtures/eval_gen/data) and kept each
 * document's prompt, raw generation, filtered answers and exact_match. assay must give the same
 * strings byte for byte (no tolerance: greedy decoding on batch-invariant float32 logits, and
 * none of these runs has a near-tie that flips an argmax) and the same metrics (to 1e-12: both are
 * means of 0/1 values over the same documents). */
#include <cJSON.h>
#include <math.h>

#include "tests/helpers.h"

#define REF "tests/fixtures/eval_gen"
#define DATA REF "/data"

static cJSON **read_lines(const char *path, size_t *n) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s missing", path);
    cJSON **v    = NULL;
    size_t  cap  = 0;
    char   *line = NULL;
    size_t  lcap = 0;
    *n           = 0;
    while (getline(&line, &lcap, f) > 0) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            v   = realloc(v, cap * sizeof *v);
        }
        v[*n] = cJSON_Parse(line);
        cr_assert(v[*n], "%s:%zu is not JSON", path, *n + 1);
        (*n)++;
    }
    free(line);
    fclose(f);
    return v;
}

static const char *str_at(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsString(v), "field %s missing", k);
    return v->valuestring;
}

/* Runs assay on model with extra flags and compares with the reference run `ref`. */
static void compare_run(const char *model, const char *ref, const char *flags) {
    char tmp[256], rp[512], ap[512];
    test_tmpdir(tmp, sizeof tmp);
    char *log = NULL;
    int   rc  = test_run(&log,
                         "eval %s --tasks gsm8k --data " DATA " --max-gen-toks 32 --device cpu "
                            "--output-path %s --log-samples %s",
                         model, tmp, flags);
    cr_assert_eq(rc, 0, "assay eval failed (%d): %s", rc, log ? log : "");
    free(log);
    snprintf(rp, sizeof rp, REF "/%s/samples_gsm8k.jsonl", ref);
    snprintf(ap, sizeof ap, "%s/samples_gsm8k.jsonl", tmp);
    size_t  nr, na;
    cJSON **r = read_lines(rp, &nr), **a = read_lines(ap, &na);
    cr_assert_eq(na, nr, "%s: assay has %zu documents, lm-eval %zu", ref, na, nr);
    cr_assert_geq(nr, 12);
    for (size_t i = 0; i < nr; i++) {
        int did = cJSON_GetObjectItem(r[i], "doc_id")->valueint;
        cr_assert_eq(cJSON_GetObjectItem(a[i], "doc_id")->valueint, did);
        const cJSON *args =
            cJSON_GetObjectItem(cJSON_GetObjectItem(a[i], "arguments"), "gen_args_0");
        cr_assert_str_eq(str_at(args, "arg_0"), str_at(r[i], "prompt"), "%s doc %d: prompt", ref,
                         did);
        const cJSON *resp =
            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(a[i], "resps"), 0), 0);
        cr_assert_str_eq(resp->valuestring, str_at(r[i], "resp"), "%s doc %d: generation", ref,
                         did);
        const cJSON *f;
        cJSON_ArrayForEach(f, cJSON_GetObjectItem(r[i], "filtered")) {
            char key[96];
            cr_assert_str_eq(str_at(cJSON_GetObjectItem(a[i], "filtered_resps"), f->string),
                             f->valuestring, "%s doc %d: filter %s", ref, did, f->string);
            snprintf(key, sizeof key, "exact_match,%s", f->string);
            double want = cJSON_GetObjectItem(cJSON_GetObjectItem(r[i], "exact_match"), f->string)
                              ->valuedouble;
            cr_assert_eq(cJSON_GetObjectItem(a[i], key)->valuedouble, want, "%s doc %d: %s", ref,
                         did, key);
        }
    }
    for (size_t i = 0; i < nr; i++)
        cJSON_Delete(r[i]);
    for (size_t i = 0; i < na; i++)
        cJSON_Delete(a[i]);
    free(r);
    free(a);

    /* the task's metrics */
    char res_a[512], res_r[512];
    snprintf(res_a, sizeof res_a, "%s/results.json", tmp);
    snprintf(res_r, sizeof res_r, REF "/%s/results.json", ref);
    cJSON *ja = test_read_json(res_a), *jr = test_read_json(res_r);
    cJSON *ra = cJSON_GetObjectItem(cJSON_GetObjectItem(ja, "results"), "gsm8k");
    cJSON *rr = cJSON_GetObjectItem(jr, "results");
    cJSON *m;
    int    n_cmp = 0;
    cJSON_ArrayForEach(m, rr) {
        if (!cJSON_IsNumber(m) || strchr(m->string, ',') == NULL)
            continue;
        cJSON *v = cJSON_GetObjectItem(ra, m->string);
        cr_assert(v && cJSON_IsNumber(v), "%s: %s missing in assay's results", ref, m->string);
        cr_assert(fabs(v->valuedouble - m->valuedouble) <= 1e-12,
                  "%s: %s assay %.17g lm-eval %.17g", ref, m->string, v->valuedouble,
                  m->valuedouble);
        n_cmp++;
    }
    cr_assert_geq(n_cmp, 2, "%s: no metrics compared", ref);
    cJSON_Delete(ja);
    cJSON_Delete(jr);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    cr_assert_eq(system(cmd), 0);
}

Test(eval_gen_lmeval, gsm8k_on_tiny_llama_matches_lmeval_generations_answers_and_scores) {
    compare_run("tests/fixtures/models/llama", "llama", "");
}

Test(eval_gen_lmeval, gsm8k_on_tiny_qwen2_matches_lmeval_generations_answers_and_scores) {
    compare_run("tests/fixtures/models/qwen2", "qwen2", "");
}

/* gpt2 has 128 positions: every prompt is cut to its last 128 - 32 tokens, as lm-eval does */
Test(eval_gen_lmeval, gsm8k_on_tiny_gpt2_with_left_truncated_prompts_matches_lmeval) {
    compare_run("tests/fixtures/models/gpt2", "gpt2", "");
}

Test(eval_gen_lmeval, gsm8k_on_stories260K_matches_lmeval_generations_answers_and_scores) {
    SHARED_OR_SKIP(gguf, "models/stories260K/stories260K.gguf");
    char tmp[256], dir[512], *log = NULL;
    test_tmpdir(tmp, sizeof tmp);
    snprintf(dir, sizeof dir, "%s/stories260K", tmp);
    int rc = test_run(&log, "convert %s %s", gguf, dir);
    cr_assert_eq(rc, 0, "assay convert failed (%d): %s", rc, log ? log : "");
    free(log);
    compare_run(dir, "stories260K", "");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    cr_assert_eq(system(cmd), 0);
}

/* --apply-chat-template with a system instruction: the qwen2 fixture's ChatML template, few-shot
 * examples as user/assistant turns (lm-eval's default with a template) */
Test(eval_gen_lmeval, gsm8k_through_the_chat_template_with_multiturn_fewshot_matches_lmeval) {
    compare_run("tests/fixtures/models/qwen2", "qwen2_chat",
                "--limit 12 --apply-chat-template --system-prompt 'Answer with a number.'");
}

Test(eval_gen_lmeval, gsm8k_through_the_chat_template_with_single_turn_fewshot_matches_lmeval) {
    compare_run("tests/fixtures/models/qwen2", "qwen2_chat_single",
                "--limit 12 --apply-chat-template --no-fewshot-as-multiturn --system-prompt "
                "'Answer with a number.'");
}

/* llama3's template writes BOS itself: the prompt is encoded without special tokens, as lm-eval's
 * tok_batch_encode does when the text starts with the BOS text (one BOS, not two) */
Test(eval_gen_lmeval, gsm8k_through_a_template_that_writes_bos_matches_lmeval) {
    compare_run("tests/fixtures/models/llama3", "llama3_chat", "--limit 12 --apply-chat-template");
}
