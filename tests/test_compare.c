/* tests/test_compare.c — `assay compare` and scoring/compare.c: McNemar against scipy
 * (tests/fixtures/compare/mcnemar.json, tools/compare_reference.py), the WARN/CRIT levels, the
 * exit codes of the gate, lm-eval's file layout and lower-is-better metrics. */
#include <math.h>

#include "scoring/compare.h"
#include "tests/helpers.h"

Test(compare, mcnemar_p_values_equal_scipy) {
    cJSON *ref = test_read_json("tests/fixtures/compare/mcnemar.json"), *c;
    int    n   = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "cases")) {
        int64_t     b = (int64_t)cJSON_GetObjectItem(c, "b")->valuedouble;
        int64_t     k = (int64_t)cJSON_GetObjectItem(c, "c")->valuedouble;
        cmp_mcnemar m;
        compare_mcnemar(b, k, &m);
        double want = cJSON_GetObjectItem(c, "p_exact")->valuedouble;
        /* 1e-9 relative: the binomial tail summed in log space with lgamma (scipy sums exact
         * probabilities); the largest difference seen was 2e-13 */
        cr_assert(fabs(m.p_exact - want) <= 1e-9 * want, "b=%lld c=%lld: %.17g, scipy %.17g",
                  (long long)b, (long long)k, m.p_exact, want);
        cJSON *chi = cJSON_GetObjectItem(c, "chi2");
        if (chi) {
            double pc = cJSON_GetObjectItem(c, "p_chi2")->valuedouble;
            cr_assert(fabs(m.chi2 - chi->valuedouble) <= 1e-12 * (1 + chi->valuedouble));
            cr_assert(fabs(m.p_chi2 - pc) <= 1e-12 + 1e-9 * pc, "b=%lld c=%lld: %.17g vs %.17g",
                      (long long)b, (long long)k, m.p_chi2, pc);
        } else
            cr_assert(isnan(m.chi2));
        n++;
    }
    cr_assert_eq(n, 14);
    cJSON_Delete(ref);
}

Test(compare, crit_is_reached_below_crit_and_warn_between) {
    cr_assert_eq(compare_level(-6, -3, -5), CMP_CRIT);
    cr_assert_eq(compare_level(-5, -3, -5), CMP_CRIT);
    cr_assert_eq(compare_level(-4, -3, -5), CMP_WARN);
    cr_assert_eq(compare_level(-3, -3, -5), CMP_WARN);
    cr_assert_eq(compare_level(-2.9, -3, -5), CMP_OK);
    cr_assert_eq(compare_level(4, -3, -5), CMP_OK);
}

Test(compare, deltas_are_points_signed_so_negative_is_worse) {
    cr_assert_float_eq(compare_delta_points(0.60, 0.55, CMP_UNIT_FRACTION, 1), -5.0, 1e-12);
    /* perplexity 10 -> 11 is 10% worse */
    cr_assert_eq(compare_metric_unit("word_perplexity,none", 10, 11), CMP_UNIT_RELATIVE);
    cr_assert_eq(compare_default_higher_is_better("word_perplexity,none"), 0);
    cr_assert_float_eq(compare_delta_points(10, 11, CMP_UNIT_RELATIVE, 0), -10.0, 1e-12);
    cr_assert_eq(compare_metric_unit("bleu,none", 20, 25), CMP_UNIT_RAW);
    cr_assert_float_eq(compare_delta_points(20, 25, CMP_UNIT_RAW, 1), 5.0, 1e-12);
}

/* An assay-style run in dir: results.json with acc of one task "t" and samples_t.jsonl. The
 * samples are given as a string of '0'/'1' per document. */
static void write_assay_run(const char *dir, const char *sub, const char *outcomes, int samples) {
    char   name[300], *text;
    size_t n = strlen(outcomes), right = 0;
    for (size_t i = 0; i < n; i++)
        right += outcomes[i] == '1';
    double acc = (double)right / (double)n;
    snprintf(name, sizeof name, "%s/results.json", sub);
    cr_assert(asprintf(&text,
                       "{\"results\": {\"t\": {\"alias\": \"t\", \"acc,none\": %.17g, "
                       "\"acc_stderr,none\": %.17g}}, \"higher_is_better\": {\"t\": {\"acc\": "
                       "true}}, \"assay\": {\"version\": \"0.1.0\"}}\n",
                       acc, sqrt(acc * (1 - acc) / (double)(n - 1))) > 0);
    test_write_file(dir, name, text);
    free(text);
    if (!samples)
        return;
    size_t cap = n * 64 + 1, len = 0;
    char  *s = malloc(cap);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "{\"doc_id\": %zu, \"acc\": %c}\n", i,
                                outcomes[i]);
    snprintf(name, sizeof name, "%s/samples_t.jsonl", sub);
    test_write_file(dir, name, s);
    free(s);
}

/* n documents; the base gets the first `base_right` right; the candidate loses b of those and
 * wins c of the others. */
static char *outcomes(int n, int base_right, int b, int c, int cand) {
    char *o = malloc((size_t)n + 1);
    for (int i = 0; i < n; i++) {
        int r = i < base_right;
        if (cand && i < b)
            r = 0;
        if (cand && i >= base_right && i < base_right + c)
            r = 1;
        o[i] = r ? '1' : '0';
    }
    o[n] = 0;
    return o;
}

static int run_compare(const char *dir, const char *extra, cJSON **json) {
    char *out = NULL;
    int   rc  = test_run(&out, "compare %s/base %s/cand --json %s", dir, dir, extra);
    *json     = cJSON_Parse(out);
    cr_assert(*json || rc == 2, "%s", out);
    free(out);
    return rc;
}

static cJSON *row0(cJSON *j) { return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "rows"), 0); }

Test(compare, the_gate_exits_1_on_crit_or_a_significant_regression_only) {
    char dir[256];
    test_tmpdir(dir, sizeof dir);
    struct {
        int         n, base_right, b, c, samples, exit_code;
        const char *level;
        int         significant;
    } cases[] = {
        /* 100 docs, 60 -> 50 right: CRIT (-10 points), McNemar 15 vs 5 (p = 0.041) */
        {100, 60, 15, 5, 1, 1, "CRIT", 1},
        /* 60 -> 56: WARN (-4 points), 6 vs 2 not significant (p = 0.29): passes */
        {100, 60, 6, 2, 1, 0, "WARN", 0},
        /* 2000 docs, -3 points (WARN) but 100 vs 40: significant (p ~ 4e-7): fails */
        {2000, 1200, 100, 40, 1, 1, "WARN", 1},
        /* CRIT without samples: fails on the level alone */
        {100, 60, 15, 5, 0, 1, "CRIT", 0},
        /* +2 points: OK */
        {100, 60, 3, 5, 1, 0, "OK", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *ob = outcomes(cases[k].n, cases[k].base_right, 0, 0, 0);
        char *oc = outcomes(cases[k].n, cases[k].base_right, cases[k].b, cases[k].c, 1);
        write_assay_run(dir, "base", ob, cases[k].samples);
        write_assay_run(dir, "cand", oc, cases[k].samples);
        free(ob), free(oc);
        if (!cases[k].samples) {
            char cmd[600];
            snprintf(cmd, sizeof cmd, "rm -f %s/base/samples_t.jsonl %s/cand/samples_t.jsonl", dir,
                     dir);
            cr_assert_eq(system(cmd), 0);
        }
        cJSON *j;
        int    rc = run_compare(dir, "", &j);
        cJSON *r  = row0(j);
        cr_assert_eq(rc, cases[k].exit_code, "case %zu", k);
        cr_assert_str_eq(cJSON_GetObjectItem(r, "level")->valuestring, cases[k].level, "case %zu",
                         k);
        cr_assert_eq(cJSON_IsTrue(cJSON_GetObjectItem(r, "significant_regression")),
                     cases[k].significant, "case %zu", k);
        double delta = 100.0 * (cases[k].c - cases[k].b) / cases[k].n;
        cr_assert_float_eq(cJSON_GetObjectItem(r, "delta")->valuedouble, delta, 1e-9);
        if (cases[k].samples) {
            cr_assert_str_eq(cJSON_GetObjectItem(r, "test")->valuestring, "mcnemar");
            cr_assert_eq(cJSON_GetObjectItem(r, "base_only")->valueint, cases[k].b);
            cr_assert_eq(cJSON_GetObjectItem(r, "cand_only")->valueint, cases[k].c);
            cmp_mcnemar m;
            compare_mcnemar(cases[k].b, cases[k].c, &m);
            cr_assert_float_eq(cJSON_GetObjectItem(r, "p_value")->valuedouble, m.p_exact, 1e-15);
        }
        cJSON_Delete(j);
    }
}

Test(compare, warn_and_crit_thresholds_come_from_the_options) {
    char   dir[256];
    cJSON *j;
    test_tmpdir(dir, sizeof dir);
    char *ob = outcomes(100, 60, 0, 0, 0), *oc = outcomes(100, 60, 4, 0, 1);
    write_assay_run(dir, "base", ob, 0);
    write_assay_run(dir, "cand", oc, 0);
    free(ob), free(oc);
    cr_assert_eq(run_compare(dir, "", &j), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(row0(j), "level")->valuestring, "WARN");
    cJSON_Delete(j);
    cr_assert_eq(run_compare(dir, "--warn -1 --crit -2", &j), 1);
    cr_assert_str_eq(cJSON_GetObjectItem(row0(j), "level")->valuestring, "CRIT");
    cJSON_Delete(j);
    cr_assert_eq(run_compare(dir, "--warn -5 --crit -3", &j), 2, "crit above warn is refused");
    cJSON_Delete(j);
}

/* lm-eval's layout: results_<timestamp>.json, samples_<task>_<timestamp>.jsonl with a
 * "filter" per line; a samples file of another task sharing the prefix must not be read. */
Test(compare, reads_lm_eval_results_and_samples) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    const char *res = "{\"results\": {\"piqa\": {\"alias\": \"piqa\", \"acc,none\": %s, "
                      "\"acc_stderr,none\": 0.05}}, \"higher_is_better\": {\"piqa\": {\"acc\": "
                      "true}}, \"lm_eval_version\": \"0.4.13\"}\n";
    char       *t;
    cr_assert(asprintf(&t, res, "0.5") > 0);
    test_write_file(dir, "base/results_2025-01-01T00-00-00.000001.json", t);
    free(t);
    cr_assert(asprintf(&t, res, "0.4") > 0);
    test_write_file(dir, "cand/results_2025-01-02T00-00-00.000001.json", t);
    free(t);
    char b[8192] = "", c[8192] = "", decoy[8192] = "";
    for (int i = 0; i < 20; i++) {
        size_t lb = strlen(b), lc = strlen(c), ld = strlen(decoy);
        snprintf(b + lb, sizeof b - lb, "{\"doc_id\": %d, \"filter\": \"none\", \"acc\": %d}\n", i,
                 i < 10);
        /* the candidate loses docs 0..3 and wins doc 10..11: 4 vs 2 */
        snprintf(c + lc, sizeof c - lc, "{\"doc_id\": %d, \"filter\": \"none\", \"acc\": %d}\n", i,
                 (i >= 4 && i < 10) || i == 10 || i == 11);
        snprintf(decoy + ld, sizeof decoy - ld, "{\"doc_id\": %d, \"acc\": 0}\n", i);
    }
    test_write_file(dir, "base/samples_piqa_2025-01-01T00-00-00.000001.jsonl", b);
    test_write_file(dir, "cand/samples_piqa_2025-01-02T00-00-00.000001.jsonl", c);
    test_write_file(dir, "cand/samples_piqa_mi_2025-01-02T00-00-00.000001.jsonl", decoy);
    cJSON *j;
    int    rc = run_compare(dir, "", &j);
    cJSON *r  = row0(j);
    cr_assert_eq(rc, 1, "-10 points is CRIT");
    cr_assert_str_eq(cJSON_GetObjectItem(r, "test")->valuestring, "mcnemar");
    cr_assert_eq(cJSON_GetObjectItem(r, "base_only")->valueint, 4);
    cr_assert_eq(cJSON_GetObjectItem(r, "cand_only")->valueint, 2);
    cr_assert_eq(cJSON_GetObjectItem(r, "paired_samples")->valueint, 20);
    cJSON_Delete(j);
    /* the text table says the same */
    cr_assert_eq(test_run(&out, "compare %s/base %s/cand", dir, dir), 1, "%s", out);
    cr_assert(strstr(out, "McNemar 4 vs 2") && strstr(out, "CRIT") && strstr(out, "FAIL"), "%s",
              out);
    free(out);
}

/* word_perplexity: lower is better, samples are [loglikelihood, words]; the paired bootstrap
 * is deterministic and a 10% worse candidate is both CRIT and significant. */
Test(compare, lower_is_better_corpus_metric_gets_a_paired_bootstrap) {
    char dir[256];
    test_tmpdir(dir, sizeof dir);
    char   sb[16384] = "", sc[16384] = "";
    double llb = 0, llc = 0, words = 0;
    for (int i = 0; i < 50; i++) {
        double w = 50 + (i * 37) % 40, lb = -w * (2.0 + 0.3 * ((i * 13) % 7) / 7.0);
        double lc = lb - w * log(1.1); /* every document 10% worse in word perplexity */
        size_t nb = strlen(sb), nc = strlen(sc);
        snprintf(sb + nb, sizeof sb - nb, "{\"doc_id\": %d, \"word_perplexity\": [%.17g, %g]}\n", i,
                 lb, w);
        snprintf(sc + nc, sizeof sc - nc, "{\"doc_id\": %d, \"word_perplexity\": [%.17g, %g]}\n", i,
                 lc, w);
        llb += lb, llc += lc, words += w;
    }
    char *t;
    cr_assert(asprintf(&t,
                       "{\"results\": {\"wikitext\": {\"word_perplexity,none\": %.17g, "
                       "\"word_perplexity_stderr,none\": \"N/A\"}}, \"assay\": {}}\n",
                       exp(-llb / words)) > 0);
    test_write_file(dir, "base/results.json", t);
    free(t);
    cr_assert(asprintf(&t,
                       "{\"results\": {\"wikitext\": {\"word_perplexity,none\": %.17g, "
                       "\"word_perplexity_stderr,none\": \"N/A\"}}, \"assay\": {}}\n",
                       exp(-llc / words)) > 0);
    test_write_file(dir, "cand/results.json", t);
    free(t);
    test_write_file(dir, "base/samples_wikitext.jsonl", sb);
    test_write_file(dir, "cand/samples_wikitext.jsonl", sc);
    cJSON *j, *j2;
    cr_assert_eq(run_compare(dir, "", &j), 1);
    cJSON *r = row0(j);
    cr_assert_eq(cJSON_IsFalse(cJSON_GetObjectItem(r, "higher_is_better")), 1);
    cr_assert_float_eq(cJSON_GetObjectItem(r, "delta")->valuedouble, -10.0, 1e-9);
    cr_assert_str_eq(cJSON_GetObjectItem(r, "level")->valuestring, "CRIT");
    cr_assert_str_eq(cJSON_GetObjectItem(r, "test")->valuestring, "paired_bootstrap");
    cr_assert_float_eq(cJSON_GetObjectItem(r, "paired_delta")->valuedouble, -10.0, 1e-9);
    /* every document is 10% worse: every resample's delta is -10 */
    cr_assert_float_eq(cJSON_GetObjectItem(r, "ci_hi")->valuedouble, -10.0, 1e-9);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "significant_regression")));
    cr_assert_eq(run_compare(dir, "", &j2), 1);
    char *a = cJSON_PrintUnformatted(j), *b = cJSON_PrintUnformatted(j2);
    cr_assert_str_eq(a, b, "same files, same seed: same report");
    free(a), free(b);
    cJSON_Delete(j), cJSON_Delete(j2);
    /* swapped, the candidate is 10% better: OK, exit 0 */
    char cmd[1700];
    snprintf(cmd, sizeof cmd, "mv %s/base %s/x && mv %s/cand %s/base && mv %s/x %s/cand", dir, dir,
             dir, dir, dir, dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(run_compare(dir, "", &j), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(row0(j), "level")->valuestring, "OK");
    cr_assert(cJSON_GetObjectItem(row0(j), "ci_lo")->valuedouble > 0);
    cJSON_Delete(j);
}

Test(compare, bad_input_is_exit_2) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "a/results.json", "{\"results\": {\"t\": {\"acc,none\": 0.5}}}");
    test_write_file(dir, "b/results.json", "not json");
    test_write_file(dir, "c/results.json", "{\"config\": {}}");
    test_write_file(dir, "d/results.json", "{\"results\": {\"u\": {\"acc,none\": 0.5}}}");
    const char *pairs[][2] = {{"a", "b"}, {"a", "c"}, {"a", "missing"}, {"a", "d"}};
    const char *want[]     = {"not a JSON object", "no \"results\" object", "missing",
                              "no task and metric in common"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(test_run(&out, "compare %s/%s %s/%s", dir, pairs[i][0], dir, pairs[i][1]), 2,
                     "%s", out);
        cr_assert(strstr(out, want[i]), "%s", out);
        free(out);
    }
    test_write_file(dir, "e/results.json",
                    "{\"results\": {\"t\": {\"acc,none\": 0.5}}, \"assay\": {}}");
    test_write_file(dir, "e/samples_t.jsonl", "{\"doc_id\": 0, \"acc\": 1}\n{\"acc\": 1}\n");
    test_write_file(dir, "f/results.json",
                    "{\"results\": {\"t\": {\"acc,none\": 0.5}}, \"assay\": {}}");
    test_write_file(dir, "f/samples_t.jsonl", "{\"doc_id\": 0, \"acc\": 1}\n");
    cr_assert_eq(test_run(&out, "compare %s/e %s/f", dir, dir), 2, "%s", out);
    cr_assert(strstr(out, "samples_t.jsonl:2: expected a number \"doc_id\""), "%s", out);
    free(out);
}

/* truthfulqa_mc2's acc is a probability per document: not 0/1, so the bootstrap; a candidate
 * that moves documents both ways by the same amount has a CI around 0 and passes. */
Test(compare, a_mean_metric_that_moves_both_ways_is_not_significant) {
    char   dir[256], sb[8192] = "", sc[8192] = "";
    double mb = 0, mc = 0;
    test_tmpdir(dir, sizeof dir);
    for (int i = 0; i < 40; i++) {
        double b = 0.3 + 0.01 * (i % 7), c = b + (i % 2 ? 0.05 : -0.05);
        size_t nb = strlen(sb), nc = strlen(sc);
        snprintf(sb + nb, sizeof sb - nb, "{\"doc_id\": %d, \"acc\": %.17g}\n", i, b);
        snprintf(sc + nc, sizeof sc - nc, "{\"doc_id\": %d, \"acc\": %.17g}\n", i, c);
        mb += b / 40, mc += c / 40;
    }
    char *t;
    cr_assert(asprintf(&t, "{\"results\": {\"mc2\": {\"acc,none\": %.17g}}, \"assay\": {}}", mb) >
              0);
    test_write_file(dir, "base/results.json", t);
    free(t);
    cr_assert(asprintf(&t, "{\"results\": {\"mc2\": {\"acc,none\": %.17g}}, \"assay\": {}}", mc) >
              0);
    test_write_file(dir, "cand/results.json", t);
    free(t);
    test_write_file(dir, "base/samples_mc2.jsonl", sb);
    test_write_file(dir, "cand/samples_mc2.jsonl", sc);
    cJSON *j;
    cr_assert_eq(run_compare(dir, "", &j), 0);
    cJSON *r = row0(j);
    cr_assert_str_eq(cJSON_GetObjectItem(r, "test")->valuestring, "paired_bootstrap");
    cr_assert(cJSON_GetObjectItem(r, "ci_lo")->valuedouble < 0 &&
                  cJSON_GetObjectItem(r, "ci_hi")->valuedouble > 0,
              "[%g, %g]", cJSON_GetObjectItem(r, "ci_lo")->valuedouble,
              cJSON_GetObjectItem(r, "ci_hi")->valuedouble);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(r, "significant_regression")));
    cr_assert_eq(cJSON_GetObjectItem(r, "resamples")->valueint, 1000);
    cJSON_Delete(j);
}
