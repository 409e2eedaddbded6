/* assay eval against lm-evaluation-harness itself: tools/make_lmeval_reference.py ran lm-eval
 * (HF backend, CPU, float32) on the tiny llama fixture over the documents in
 * tests/fixtures/lmeval/data and kept its --log_samples output. Here assay evaluates the same
 * files and must produce the same (context, continuation) pairs, log-likelihoods within 1e-3
 * (lm-eval's float32 softmax drifts ~1e-4), the same predictions unless the top two choices are
 * within 1e-4 (both printed), and the same metrics. */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>

#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"
#define REF "tests/fixtures/lmeval/llama"
#define DATA "tests/fixtures/lmeval/data"

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

static int argmax(const double *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* Compares samples_<task>.jsonl of assay (dir) with lm-eval's; returns docs compared. */
static size_t compare_task(const char *dir, const char *task, double *max_diff) {
    char ap[512], rp[512];
    snprintf(ap, sizeof ap, "%s/samples_%s.jsonl", dir, task);
    snprintf(rp, sizeof rp, REF "/samples_%s.jsonl", task);
    size_t  na, nr;
    cJSON **a = read_lines(ap, &na), **r = read_lines(rp, &nr);
    cr_assert_eq(na, nr, "%s: assay has %zu documents, lm-eval %zu", task, na, nr);
    for (size_t i = 0; i < na; i++) {
        int did = cJSON_GetObjectItem(r[i], "doc_id")->valueint;
        cr_assert_eq(cJSON_GetObjectItem(a[i], "doc_id")->valueint, did, "%s: doc order", task);
        cJSON *rargs = cJSON_GetObjectItem(r[i], "arguments");
        cJSON *rll   = cJSON_GetObjectItem(r[i], "ll");
        cJSON *aargs = cJSON_GetObjectItem(a[i], "arguments");
        cJSON *afr   = cJSON_GetObjectItem(a[i], "filtered_resps");
        int    nc    = cJSON_GetArraySize(rll);
        cr_assert_eq(cJSON_GetArraySize(afr), nc, "%s doc %d: number of choices", task, did);
        double la[64], lr[64];
        for (int c = 0; c < nc && c < 64; c++) {
            char key[32];
            snprintf(key, sizeof key, "gen_args_%d", c);
            cJSON *ga = cJSON_GetObjectItem(aargs, key);
            cJSON *ra = cJSON_GetArrayItem(rargs, c);
            cr_assert_str_eq(cJSON_GetObjectItem(ga, "arg_0")->valuestring,
                             cJSON_GetArrayItem(ra, 0)->valuestring, "%s doc %d choice %d: context",
                             task, did, c);
            cr_assert_str_eq(cJSON_GetObjectItem(ga, "arg_1")->valuestring,
                             cJSON_GetArrayItem(ra, 1)->valuestring,
                             "%s doc %d choice %d: continuation", task, did, c);
            la[c]    = cJSON_GetArrayItem(cJSON_GetArrayItem(afr, c), 0)->valuedouble;
            lr[c]    = cJSON_GetArrayItem(rll, c)->valuedouble;
            double d = fabs(la[c] - lr[c]);
            if (d > *max_diff)
                *max_diff = d;
            cr_expect(d <= 1e-3, "%s doc %d choice %d: assay %.6f, lm-eval %.6f", task, did, c,
                      la[c], lr[c]);
        }
        int pa = argmax(la, nc), pr = argmax(lr, nc);
        if (pa != pr) {
            /* a near-tie may flip under float32 drift: allowed, and shown */
            double gap = fabs(lr[pa] - lr[pr]);
            fprintf(stderr, "%s doc %d: predictions differ (assay %d, lm-eval %d), gap %.2e\n",
                    task, did, pa, pr, gap);
            cr_expect(gap <= 1e-4, "%s doc %d: assay predicts %d, lm-eval %d (gap %.2e)", task, did,
                      pa, pr, gap);
        } else if (!strcmp(task, "truthfulqa_mc2")) {
            /* acc = p mass on true answers; d(mass)/d(ll_i) = p_i (1[i true] - mass), so each
             * ll within 1e-3 moves it by at most sum p_i * 1e-3 = 1e-3 (to first order) */
            double x = cJSON_GetObjectItem(a[i], "acc")->valuedouble,
                   y = cJSON_GetObjectItem(r[i], "acc")->valuedouble;
            cr_expect(fabs(x - y) <= 1e-3, "%s doc %d: acc assay %.9g, lm-eval %.9g", task, did, x,
                      y);
        } else {
            cr_expect_eq(cJSON_GetObjectItem(a[i], "acc")->valuedouble,
                         cJSON_GetObjectItem(r[i], "acc")->valuedouble, "%s doc %d: acc", task,
                         did);
        }
        cJSON *rmi = cJSON_GetObjectItem(r[i], "acc_mutual_info");
        if (cJSON_IsNumber(rmi)) { /* choices c < n/2 conditional, the rest unconditional */
            int    h = nc / 2, pm_a = 0, pm_r = 0;
            double ma[32], mr[32];
            for (int c = 0; c < h; c++) {
                ma[c] = la[c] - la[h + c];
                mr[c] = lr[c] - lr[h + c];
            }
            pm_a = argmax(ma, h);
            pm_r = argmax(mr, h);
            /* four log-likelihoods each drifting ~1e-4: a gap below 4e-4 may flip */
            if (pm_a != pm_r)
                cr_expect(fabs(mr[pm_a] - mr[pm_r]) <= 4e-4,
                          "%s doc %d: acc_mutual_info predicts %d, lm-eval %d", task, did, pm_a,
                          pm_r);
            else
                cr_expect_eq(cJSON_GetObjectItem(a[i], "acc_mutual_info")->valuedouble,
                             rmi->valuedouble, "%s doc %d: acc_mutual_info", task, did);
        }
        cJSON *rn = cJSON_GetObjectItem(r[i], "acc_norm");
        if (cJSON_IsNumber(rn))
            cr_expect_eq(cJSON_GetObjectItem(a[i], "acc_norm")->valuedouble, rn->valuedouble,
                         "%s doc %d: acc_norm", task, did);
    }
    for (size_t i = 0; i < na; i++)
        cJSON_Delete(a[i]);
    for (size_t i = 0; i < nr; i++)
        cJSON_Delete(r[i]);
    free(a);
    free(r);
    return na;
}

static void compare_metrics(const char *dir, const char *const *tasks, int n) {
    char path[512];
    snprintf(path, sizeof path, "%s/results.json", dir);
    cJSON *a = test_read_json(path), *r = test_read_json(REF "/results.json");
    for (int i = 0; i < n; i++) {
        cJSON *ar = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "results"), tasks[i]);
        cJSON *rr = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "results"), tasks[i]);
        cr_assert(ar && rr, "%s: missing in results", tasks[i]);
        const char *keys[] = {"acc,none", "acc_stderr,none", "acc_norm,none",
                              "acc_norm_stderr,none"};
        for (int k = 0; k < 4; k++) {
            cJSON *x = cJSON_GetObjectItem(ar, keys[k]), *y = cJSON_GetObjectItem(rr, keys[k]);
            if (!cJSON_IsNumber(y))
                continue;
            cr_assert(cJSON_IsNumber(x), "%s: %s missing", tasks[i], keys[k]);
            cr_expect(fabs(x->valuedouble - y->valuedouble) <= 1e-12,
                      "%s %s: assay %.17g, lm-eval %.17g", tasks[i], keys[k], x->valuedouble,
                      y->valuedouble);
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(r);
}

Test(eval_vs_lmeval, mmlu_five_shot_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks mmlu --data " DATA " --num-fewshot 5 "
                          "--output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *tasks[] = {"mmlu_abstract_algebra", "mmlu_anatomy", "mmlu_marketing"};
    double      md      = 0;
    size_t      docs    = 0;
    for (int i = 0; i < 3; i++)
        docs += compare_task(out, tasks[i], &md);
    compare_metrics(out, tasks, 3);
    /* lm-eval's mmlu group config: the category groups and mmlu, size-weighted, pooled stderr */
    const char *groups[] = {"mmlu_stem", "mmlu_other", "mmlu"};
    compare_metrics(out, groups, 3);
    fprintf(stderr, "mmlu vs lm-eval: %zu documents, largest log-likelihood difference %.2e\n",
            docs, md);
}

Test(eval_vs_lmeval, hellaswag_and_arc_match_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks hellaswag,arc_easy --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *tasks[] = {"hellaswag", "arc_easy"};
    double      md      = 0;
    size_t      docs    = 0;
    for (int i = 0; i < 2; i++)
        docs += compare_task(out, tasks[i], &md);
    compare_metrics(out, tasks, 2);
    fprintf(stderr, "hellaswag + arc_easy vs lm-eval: %zu documents, largest difference %.2e\n",
            docs, md);
}

Test(eval_vs_lmeval, piqa_boolq_openbookqa_winogrande_truthfulqa_mc1_match_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL
                        " --tasks piqa,boolq,openbookqa,winogrande,truthfulqa_mc1 --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    /* winogrande: one context per choice, one shared continuation (partial scoring) */
    const char *tasks[] = {"piqa", "boolq", "openbookqa", "winogrande", "truthfulqa_mc1"};
    double      md      = 0;
    size_t      docs    = 0;
    for (int i = 0; i < 5; i++)
        docs += compare_task(out, tasks[i], &md);
    compare_metrics(out, tasks, 5);
    fprintf(
        stderr,
        "piqa, boolq, openbookqa, winogrande, truthfulqa_mc1 vs lm-eval: %zu documents, largest "
        "difference %.2e\n",
        docs, md);
}

Test(eval_vs_lmeval, lambada_openai_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks lambada_openai --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128], path[256];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *tasks[] = {"lambada_openai"};
    double      md      = 0;
    size_t      docs    = compare_task(out, tasks[0], &md);
    compare_metrics(out, tasks, 1); /* acc (is_greedy) and its stderr */
    /* perplexity = exp(-mean(loglik)): equal up to the log-likelihoods' float32 drift */
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *a = test_read_json(path), *r = test_read_json(REF "/results.json");
    double pa =
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "results"), tasks[0]),
                            "perplexity,none")
            ->valuedouble;
    double pr =
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "results"), tasks[0]),
                            "perplexity,none")
            ->valuedouble;
    cr_expect(fabs(pa - pr) <= 1e-3 * pr, "perplexity: assay %.9g, lm-eval %.9g", pa, pr);
    cJSON_Delete(a);
    cJSON_Delete(r);
    fprintf(stderr, "lambada_openai vs lm-eval: %zu documents, largest difference %.2e\n", docs,
            md);
}

Test(eval_vs_lmeval, arc_challenge_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks arc_challenge --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *tasks[] = {"arc_challenge"};
    double      md      = 0;
    size_t      docs    = compare_task(out, tasks[0], &md);
    compare_metrics(out, tasks, 1);
    fprintf(stderr, "arc_challenge vs lm-eval: %zu documents, largest difference %.2e\n", docs, md);
}

/* acc is a probability mass here, so the metrics equal lm-eval's within the log-likelihoods'
 * drift: each document's within 1e-3 (compare_task), so the mean within 1e-3 and the stderr
 * (sample stddev / sqrt(n)) within 1e-3 * sqrt(n / (n - 1)) / sqrt(n) = 1e-3 / sqrt(n - 1). */
Test(eval_vs_lmeval, truthfulqa_mc2_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks truthfulqa_mc2 --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128], path[256];
    snprintf(out, sizeof out, "%s/out", dir);
    double md   = 0;
    size_t docs = compare_task(out, "truthfulqa_mc2", &md);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *a = test_read_json(path), *r = test_read_json(REF "/results.json");
    cJSON *ar = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "results"), "truthfulqa_mc2");
    cJSON *rr = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "results"), "truthfulqa_mc2");
    cr_assert(ar && rr);
    const char *keys[] = {"acc,none", "acc_stderr,none"};
    for (int k = 0; k < 2; k++) {
        double x = cJSON_GetObjectItem(ar, keys[k])->valuedouble,
               y = cJSON_GetObjectItem(rr, keys[k])->valuedouble;
        cr_expect(isfinite(y), "lm-eval's %s is not finite: regenerate the fixture", keys[k]);
        cr_expect(fabs(x - y) <= 1e-3, "truthfulqa_mc2 %s: assay %.9g, lm-eval %.9g", keys[k], x,
                  y);
    }
    cJSON_Delete(a);
    cJSON_Delete(r);
    fprintf(stderr, "truthfulqa_mc2 vs lm-eval: %zu documents, largest difference %.2e\n", docs,
            md);
}

/* acc_mutual_info: lm-eval's piqa with the metric added (no built-in task lists it), as a user
 * task spec: lm-eval's unconditional ("", " " + choice) requests and argmax(ll - ll_uncond). */
Test(eval_vs_lmeval, acc_mutual_info_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --task-file " DATA "/piqa_mi.json --data " DATA
                        " --output-path %s/out --log-samples",
                        dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *tasks[] = {"piqa_mi"};
    double      md      = 0;
    size_t      docs    = compare_task(out, tasks[0], &md);
    compare_metrics(out, tasks, 1);
    char path[256];
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON      *a = test_read_json(path), *r = test_read_json(REF "/results.json");
    cJSON      *ar     = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "results"), "piqa_mi");
    cJSON      *rr     = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "results"), "piqa_mi");
    const char *keys[] = {"acc_mutual_info,none", "acc_mutual_info_stderr,none"};
    for (int k = 0; k < 2; k++) {
        cJSON *x = cJSON_GetObjectItem(ar, keys[k]), *y = cJSON_GetObjectItem(rr, keys[k]);
        cr_assert(cJSON_IsNumber(x) && cJSON_IsNumber(y), "piqa_mi: %s missing", keys[k]);
        cr_expect(fabs(x->valuedouble - y->valuedouble) <= 1e-12, "%s: assay %.17g, lm-eval %.17g",
                  keys[k], x->valuedouble, y->valuedouble);
    }
    cJSON_Delete(a);
    cJSON_Delete(r);
    fprintf(stderr,
            "piqa_mi (acc_mutual_info) vs lm-eval: %zu documents, largest difference %.2e\n", docs,
            md);
}

/* wikitext: lm-eval's loglikelihood_rolling over the detokenized page. The detokenized text must
 * be lm-eval's exactly; a document's log-likelihood is a sum of ~2,000 token log-probs that
 * lm-eval adds in float32 per window (relative rounding ~6e-8 per add), so it is compared within
 * 1e-3 + 1e-7 * |ll|; the word and byte counts exactly; the metrics within 1e-6 relative (from the
 * log-likelihoods' 1e-7 relative drift, times sum ll / sum words <= 60 in the exponent). */
Test(eval_vs_lmeval, wikitext_matches_lm_eval) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    char *o  = NULL;
    int   rc = test_run(
          &o, "eval " MODEL " --tasks wikitext --data " DATA " --output-path %s/out --log-samples",
          dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char ap[256];
    snprintf(ap, sizeof ap, "%s/out/samples_wikitext.jsonl", dir);
    size_t  na, nr;
    cJSON **a = read_lines(ap, &na), **r = read_lines(REF "/samples_wikitext.jsonl", &nr);
    cr_assert_eq(na, nr);
    double md = 0;
    for (size_t i = 0; i < na; i++) {
        cr_expect_str_eq(
            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(a[i], "arguments"), 0), 0)
                ->valuestring,
            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r[i], "arguments"), 0), 0)
                ->valuestring,
            "doc %zu: detokenized text", i);
        double x = cJSON_GetObjectItem(a[i], "ll")->valuedouble,
               y = cJSON_GetObjectItem(r[i], "ll")->valuedouble;
        md       = fmax(md, fabs(x - y));
        cr_expect(fabs(x - y) <= 1e-3 + 1e-7 * fabs(y), "doc %zu: ll assay %.6f, lm-eval %.6f", i,
                  x, y);
        const char *cnt[] = {"word_perplexity", "byte_perplexity"};
        for (int k = 0; k < 2; k++)
            cr_expect_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(a[i], cnt[k]), 1)->valueint,
                         cJSON_GetArrayItem(cJSON_GetObjectItem(r[i], cnt[k]), 1)->valueint,
                         "doc %zu: %s count", i, cnt[k]);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    cJSON      *aroot = test_read_json(path), *rroot = test_read_json(REF "/results.json");
    cJSON      *ar     = cJSON_GetObjectItem(cJSON_GetObjectItem(aroot, "results"), "wikitext");
    cJSON      *rr     = cJSON_GetObjectItem(cJSON_GetObjectItem(rroot, "results"), "wikitext");
    const char *keys[] = {"word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"};
    for (int k = 0; k < 3; k++) {
        double x = cJSON_GetObjectItem(ar, keys[k])->valuedouble,
               y = cJSON_GetObjectItem(rr, keys[k])->valuedouble;
        cr_expect(fabs(x - y) <= 1e-6 * fabs(y), "wikitext %s: assay %.12g, lm-eval %.12g", keys[k],
                  x, y);
    }
    cJSON_Delete(aroot);
    cJSON_Delete(rroot);
    for (size_t i = 0; i < na; i++)
        cJSON_Delete(a[i]);
    for (size_t i = 0; i < nr; i++)
        cJSON_Delete(r[i]);
    free(a);
    free(r);
    fprintf(stderr, "wikitext vs lm-eval: %zu documents, largest difference %.2e\n", na, md);
}
