/* Text metrics against their reference implementations. tests/fixtures/textmetrics/cases.jsonl is
 * written by tools/make_textmetrics_reference.py from sacrebleu 2.6.0 (BLEU, chrF), rouge-score
 * 0.1.2 with nltk's PorterStemmer, SQuAD v1.1's evaluate script's definitions and lm-eval 0.4.13's
 * exact_match; stems.tsv holds nltk stems. Tolerances: scores computed by the same float
 * operations in the same order as the reference agree to the last bit in practice; 1e-6 absolute
 * (the bound) leaves room for a libm that rounds exp/log differently. Integer statistics,
 * SQuAD F1/EM and exact_match must be equal. */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "scoring/textmetrics.h"
#include "tests/helpers.h"

#define FIX "tests/fixtures/textmetrics/"
#define TOL 1e-6

static tm_str S(const char *s) { return (tm_str){s, strlen(s)}; }

static tm_str json_str(const cJSON *j) {
    cr_assert(cJSON_IsString(j), "fixture: expected a string");
    return S(j->valuestring);
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(j), "fixture: '%s' missing", key);
    return j->valuedouble;
}

/* Every line of cases.jsonl (the caller frees with free_lines). */
static cJSON **read_lines(size_t *n_out) {
    FILE *f = fopen(FIX "cases.jsonl", "r");
    cr_assert(f, FIX "cases.jsonl missing (tools/make_textmetrics_reference.py writes it)");
    cJSON **v = NULL;
    size_t  n = 0, cap = 0, len = 0;
    char   *line = NULL;
    ssize_t r;
    while ((r = getline(&line, &len, f)) > 0) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            v   = realloc(v, cap * sizeof *v);
            cr_assert(v);
        }
        v[n] = cJSON_ParseWithLength(line, (size_t)r);
        cr_assert(v[n], "cases.jsonl line %zu is not JSON", n + 1);
        n++;
    }
    free(line);
    fclose(f);
    *n_out = n;
    return v;
}

static void free_lines(cJSON **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(v[i]);
    free(v);
}

static const char *kind(const cJSON *o) {
    return cJSON_GetObjectItemCaseSensitive(o, "kind")->valuestring;
}

static void expect_bleu(const tm_bleu *b, const cJSON *want, const char *what) {
    cr_expect(fabs(b->score - json_num(want, "score")) <= TOL, "%s: BLEU %.12f, sacrebleu %.12f",
              what, b->score, json_num(want, "score"));
    cr_expect(fabs(b->bp - json_num(want, "bp")) <= TOL, "%s: BP %.12f, sacrebleu %.12f", what,
              b->bp, json_num(want, "bp"));
    cr_expect_eq(b->sys_len, (long)json_num(want, "sys_len"), "%s: sys_len %ld", what, b->sys_len);
    cr_expect_eq(b->ref_len, (long)json_num(want, "ref_len"), "%s: ref_len %ld", what, b->ref_len);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(want, "counts");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(want, "totals");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(want, "precisions");
    for (int k = 0; k < 4; k++) {
        cr_expect_eq(b->counts[k], (long)cJSON_GetArrayItem(c, k)->valuedouble,
                     "%s: counts[%d] %ld, sacrebleu %g", what, k, b->counts[k],
                     cJSON_GetArrayItem(c, k)->valuedouble);
        cr_expect_eq(b->totals[k], (long)cJSON_GetArrayItem(t, k)->valuedouble,
                     "%s: totals[%d] %ld", what, k, b->totals[k]);
        if (p) /* per-item lines leave them out (size); sub-corpus lines have them */
            cr_expect(fabs(b->precisions[k] - cJSON_GetArrayItem(p, k)->valuedouble) <= TOL,
                      "%s: precision[%d] %.12f", what, k, b->precisions[k]);
    }
}

/* hyps and refs (stream-major, as tm_bleu_corpus takes them) of items [a, b) with k references. */
static void gather(cJSON **items, size_t a, size_t b, size_t k, tm_str *hyps, tm_str *refs) {
    for (size_t i = a; i < b; i++) {
        hyps[i - a]     = json_str(cJSON_GetObjectItemCaseSensitive(items[i], "hyp"));
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(items[i], "refs");
        for (size_t r = 0; r < k; r++)
            refs[r * (b - a) + (i - a)] = json_str(cJSON_GetArrayItem(rs, (int)r));
    }
}

/* The item lines, in order (they come first in the file). */
static size_t items_of(cJSON **lines, size_t n) {
    size_t k = 0;
    while (k < n && strcmp(kind(lines[k]), "item") == 0)
        k++;
    cr_assert_geq(k, 500, "fixture has %zu items, expected >= 500", k);
    return k;
}

Test(textmetrics, bleu_and_chrf_of_every_fixture_sentence_match_sacrebleu) {
    size_t  n;
    cJSON **lines   = read_lines(&n);
    size_t  n_items = items_of(lines, n);
    for (size_t i = 0; i < n_items; i++) {
        for (size_t k = 1; k <= 3; k += 2) {
            tm_str hyp, refs[3];
            gather(lines, i, i + 1, k, &hyp, refs);
            char key[8], what[64];
            snprintf(key, sizeof key, "%zu", k);
            snprintf(what, sizeof what, "item %zu, %zu refs", i, k);
            tm_bleu b;
            cr_assert_eq(tm_bleu_corpus(&hyp, refs, 1, k, &b), 0);
            expect_bleu(&b,
                        cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(lines[i], "bleu"), key),
                        what);
            tm_chrf c;
            cr_assert_eq(tm_chrf_corpus(&hyp, refs, 1, k, &c), 0);
            double want = json_num(cJSON_GetObjectItemCaseSensitive(lines[i], "chrf"), key);
            cr_expect(fabs(c.score - want) <= TOL, "%s: chrF %.12f, sacrebleu %.12f", what, c.score,
                      want);
        }
    }
    free_lines(lines, n);
}

Test(textmetrics, corpus_bleu_and_chrf_of_fixture_sub_corpora_match_sacrebleu) {
    size_t  n;
    cJSON **lines   = read_lines(&n);
    size_t  n_items = items_of(lines, n), checked = 0;
    tm_str *hyps = malloc(n_items * sizeof *hyps), *refs = malloc(3 * n_items * sizeof *refs);
    for (size_t l = n_items; l < n; l++) {
        if (strcmp(kind(lines[l]), "corpus") != 0)
            continue;
        size_t a = (size_t)json_num(lines[l], "start"), b = (size_t)json_num(lines[l], "end");
        size_t k = (size_t)json_num(lines[l], "n_refs");
        cr_assert(a < b && b <= n_items && k >= 1 && k <= 3);
        gather(lines, a, b, k, hyps, refs);
        char what[64];
        snprintf(what, sizeof what, "items [%zu, %zu), %zu refs", a, b, k);
        tm_bleu bl;
        cr_assert_eq(tm_bleu_corpus(hyps, refs, b - a, k, &bl), 0);
        expect_bleu(&bl, cJSON_GetObjectItemCaseSensitive(lines[l], "bleu"), what);
        tm_chrf c;
        cr_assert_eq(tm_chrf_corpus(hyps, refs, b - a, k, &c), 0);
        cr_expect(fabs(c.score - json_num(lines[l], "chrf")) <= TOL, "%s: chrF %.12f vs %.12f",
                  what, c.score, json_num(lines[l], "chrf"));
        checked++;
    }
    cr_expect_geq(checked, 100);
    free(hyps);
    free(refs);
    free_lines(lines, n);
}

Test(textmetrics, signatures_match_sacrebleu) {
    size_t       n;
    cJSON      **lines = read_lines(&n);
    const cJSON *sigs  = cJSON_GetObjectItemCaseSensitive(lines[n - 1], "sigs");
    cr_assert(sigs, "the last fixture line holds the signatures");
    const cJSON *s;
    cJSON_ArrayForEach(s, sigs) {
        size_t k = (size_t)atoi(s->string);
        char   buf[128];
        cr_expect_str_eq(tm_bleu_signature(k, buf, sizeof buf),
                         cJSON_GetObjectItemCaseSensitive(s, "bleu")->valuestring);
        cr_expect_str_eq(tm_chrf_signature(k, buf, sizeof buf),
                         cJSON_GetObjectItemCaseSensitive(s, "chrf")->valuestring);
    }
    free_lines(lines, n);
}

Test(textmetrics, rouge_of_every_fixture_pair_matches_rouge_score) {
    size_t  n;
    cJSON **lines   = read_lines(&n);
    size_t  n_items = items_of(lines, n);
    for (size_t i = 0; i < n_items; i++) {
        tm_str hyp, ref;
        gather(lines, i, i + 1, 1, &hyp, &ref);
        for (int stem = 0; stem <= 1; stem++) {
            struct tm_rouge r;
            cr_assert_eq(tm_rouge(ref, hyp, stem, &r), 0);
            const tm_prf *got[4] = {&r.rouge1, &r.rouge2, &r.rougeL, &r.rougeLsum};
            const cJSON  *want =
                cJSON_GetObjectItemCaseSensitive(lines[i], stem ? "rouge_stem" : "rouge");
            static const char *const names[4] = {"rouge1", "rouge2", "rougeL", "rougeLsum"};
            for (int t = 0; t < 4; t++) {
                const cJSON *w    = cJSON_GetArrayItem(want, t);
                double       g[3] = {got[t]->precision, got[t]->recall, got[t]->fmeasure};
                for (int q = 0; q < 3; q++)
                    cr_expect(fabs(g[q] - cJSON_GetArrayItem(w, q)->valuedouble) <= TOL,
                              "item %zu %s stem=%d [%d]: %.12f, rouge-score %.12f", i, names[t],
                              stem, q, g[q], cJSON_GetArrayItem(w, q)->valuedouble);
            }
        }
    }
    free_lines(lines, n);
}

Test(textmetrics, squad_f1_and_em_of_every_fixture_pair_match_the_squad_script_exactly) {
    size_t  n;
    cJSON **lines   = read_lines(&n);
    size_t  n_items = items_of(lines, n);
    for (size_t i = 0; i < n_items; i++) {
        tm_str hyp, ref;
        gather(lines, i, i + 1, 1, &hyp, &ref);
        double f1 = -1, em = -1;
        cr_assert_eq(tm_squad_f1(hyp, ref, &f1), 0);
        cr_assert_eq(tm_squad_em(hyp, ref, &em), 0);
        cr_expect(f1 == json_num(lines[i], "squad_f1"), "item %zu: F1 %.17g, reference %.17g", i,
                  f1, json_num(lines[i], "squad_f1"));
        cr_expect(em == json_num(lines[i], "squad_em"), "item %zu: EM %g", i, em);
    }
    free_lines(lines, n);
}

Test(textmetrics, exact_match_of_every_fixture_pair_matches_lm_eval_for_each_option_set) {
    size_t       n;
    cJSON      **lines   = read_lines(&n);
    size_t       n_items = items_of(lines, n);
    const cJSON *opts    = cJSON_GetObjectItemCaseSensitive(lines[n - 1], "em_opts");
    int          n_opts  = cJSON_GetArraySize(opts);
    cr_assert_geq(n_opts, 5);
    for (int o = 0; o < n_opts; o++) {
        const cJSON *js = cJSON_GetArrayItem(opts, o);
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(js, "regexes");
        const char  *pats[8];
        tm_em_opts   eo = {pats, 0, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(js, "case")),
                           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(js, "punct")),
                           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(js, "nums"))};
        const cJSON *p;
        cJSON_ArrayForEach(p, rx) {
            cr_assert_lt(eo.n_regexes, 8);
            pats[eo.n_regexes++] = p->valuestring;
        }
        for (size_t i = 0; i < n_items; i++) {
            tm_str hyp, ref;
            gather(lines, i, i + 1, 1, &hyp, &ref);
            double       em  = -1;
            assay_error  err = {0};
            const cJSON *want =
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lines[i], "em"), o);
            cr_assert_eq(tm_exact_match(hyp, ref, &eo, &em, &err), 0, "%s", err.msg);
            cr_expect(em == want->valuedouble, "item %zu, option set %d: %g, lm-eval %g", i, o, em,
                      want->valuedouble);
        }
    }
    free_lines(lines, n);
}

Test(textmetrics, porter_stems_equal_nltk_on_the_fixture_word_list) {
    FILE *f = fopen(FIX "stems.tsv", "r");
    cr_assert(f, FIX "stems.tsv missing");
    char  *line = NULL;
    size_t len = 0, n = 0, bad = 0;
    while (getline(&line, &len, f) > 0) {
        char *tab = strchr(line, '\t');
        cr_assert(tab, "stems.tsv line %zu has no tab", n + 1);
        *tab                      = '\0';
        char *want                = tab + 1;
        want[strcspn(want, "\n")] = '\0';
        char out[256];
        cr_assert_eq(tm_porter_stem(line, strlen(line), out, sizeof out), 0);
        if (strcmp(out, want) != 0 && bad++ < 20)
            cr_expect_fail("stem(%s) = %s, nltk %s", line, out, want);
        n++;
    }
    free(line);
    fclose(f);
    cr_expect_geq(n, 3000);
    cr_expect_eq(bad, 0, "%zu of %zu stems differ", bad, n);
}

/* ---- hand-checkable cases ---- */

Test(textmetrics, identical_texts_score_100_and_1) {
    tm_str  h = S("The quick brown fox jumps over the lazy dog.");
    tm_bleu b;
    tm_chrf c;
    cr_assert_eq(tm_bleu_corpus(&h, &h, 1, 1, &b), 0);
    cr_expect(fabs(b.score - 100.0) < 1e-9, "BLEU %f", b.score);
    cr_expect_eq(b.bp, 1.0);
    cr_assert_eq(tm_chrf_corpus(&h, &h, 1, 1, &c), 0);
    cr_expect(fabs(c.score - 100.0) < 1e-9, "chrF %f", c.score);
    struct tm_rouge r;
    cr_assert_eq(tm_rouge(h, h, 1, &r), 0);
    cr_expect_eq(r.rouge1.fmeasure, 1.0);
    cr_expect_eq(r.rouge2.fmeasure, 1.0);
    cr_expect_eq(r.rougeL.fmeasure, 1.0);
    cr_expect_eq(r.rougeLsum.fmeasure, 1.0);
    double f1, em;
    cr_assert_eq(tm_squad_f1(h, h, &f1), 0);
    cr_assert_eq(tm_squad_em(h, h, &em), 0);
    cr_expect_eq(f1, 1.0);
    cr_expect_eq(em, 1.0);
}

Test(textmetrics, brevity_penalty_is_exp_of_one_minus_the_length_ratio) {
    /* Every n-gram of the 4-token hypothesis is in the 8-token reference: precisions 100, BP
     * exp(1 - 8/4), so BLEU = 100/e. */
    tm_str  h = S("a b c d"), r = S("a b c d e f g h");
    tm_bleu b;
    cr_assert_eq(tm_bleu_corpus(&h, &r, 1, 1, &b), 0);
    cr_expect_eq(b.sys_len, 4);
    cr_expect_eq(b.ref_len, 8);
    cr_expect(fabs(b.bp - exp(-1.0)) < 1e-15, "bp %.17g", b.bp);
    cr_expect(fabs(b.score - 100.0 * exp(-1.0)) < 1e-9, "BLEU %.17g", b.score);
    cr_expect(fabs(b.ratio - 0.5) < 1e-15);
}

Test(textmetrics, exponential_smoothing_halves_each_further_zero_precision) {
    /* unigrams 4/5, bigrams 2/4, trigrams 0/3 -> 100/(2*3), 4-grams 0/2 -> 100/(4*2). */
    tm_str  h = S("a b c d e"), r = S("a b x d e");
    tm_bleu b;
    cr_assert_eq(tm_bleu_corpus(&h, &r, 1, 1, &b), 0);
    double p[4] = {80.0, 50.0, 100.0 / 6.0, 12.5};
    for (int k = 0; k < 4; k++)
        cr_expect(fabs(b.precisions[k] - p[k]) < 1e-12, "p%d %.17g", k + 1, b.precisions[k]);
    double want = exp((log(p[0]) + log(p[1]) + log(p[2]) + log(p[3])) / 4);
    cr_expect(fabs(b.score - want) < 1e-9, "BLEU %.17g, by hand %.17g", b.score, want);
}

Test(textmetrics, one_word_and_empty_hypotheses_score_zero_bleu) {
    /* One token: no bigrams, so the loop stops and the missing precisions are floored to 0. */
    tm_str  h = S("word"), r = S("word"), e = S("");
    tm_bleu b;
    cr_assert_eq(tm_bleu_corpus(&h, &r, 1, 1, &b), 0);
    cr_expect_eq(b.counts[0], 1);
    cr_expect_eq(b.totals[1], 0);
    cr_expect_eq(b.precisions[0], 100.0);
    cr_expect_eq(b.score, 0.0);
    cr_assert_eq(tm_bleu_corpus(&e, &r, 1, 1, &b), 0);
    cr_expect_eq(b.score, 0.0);
    cr_expect_eq(b.bp, 0.0);
    tm_chrf c;
    cr_assert_eq(tm_chrf_corpus(&e, &r, 1, 1, &c), 0);
    cr_expect_eq(c.score, 0.0);
    struct tm_rouge rg;
    cr_assert_eq(tm_rouge(r, e, 0, &rg), 0);
    cr_expect_eq(rg.rouge1.fmeasure, 0.0);
    cr_expect_eq(rg.rougeLsum.fmeasure, 0.0);
}

Test(textmetrics, the_13a_tokenizer_splits_punctuation_but_not_numbers) {
    /* "1,000.50" stays one token, "$3" splits, "end." splits, the entity becomes "&": the
     * hypothesis matches the pre-tokenized reference exactly. */
    tm_str  h = S("Cost: $3 &amp; 1,000.50 at the end.");
    tm_str  r = S("Cost : $ 3 & 1,000.50 at the end .");
    tm_bleu b;
    cr_assert_eq(tm_bleu_corpus(&h, &r, 1, 1, &b), 0);
    cr_expect_eq(b.sys_len, 10);
    cr_expect(fabs(b.score - 100.0) < 1e-9, "BLEU %f", b.score);
}

Test(textmetrics, multiple_references_clip_to_the_best_reference_count_and_closest_length) {
    /* "the the" is clipped at 2 by the second reference; the closest reference length to 3 is 3. */
    tm_str  h       = S("the the the");
    tm_str  refs[2] = {S("the cat"), S("the the end")};
    tm_bleu b;
    cr_assert_eq(tm_bleu_corpus(&h, refs, 1, 2, &b), 0);
    cr_expect_eq(b.counts[0], 2);
    cr_expect_eq(b.counts[1], 1);
    cr_expect_eq(b.ref_len, 3);
}

Test(textmetrics, rouge_scores_unigram_overlap_and_lcs_by_hand) {
    /* target "the cat sat", prediction "the dog sat down": unigrams 2 of 4 and 2 of 3, LCS 2. */
    struct tm_rouge r;
    cr_assert_eq(tm_rouge(S("The cat sat"), S("the dog, sat down!"), 0, &r), 0);
    cr_expect(fabs(r.rouge1.precision - 0.5) < 1e-15);
    cr_expect(fabs(r.rouge1.recall - 2.0 / 3) < 1e-15);
    cr_expect_eq(r.rouge2.recall, 0.0);
    cr_expect(fabs(r.rougeL.fmeasure - 2 * 0.5 * (2.0 / 3) / (0.5 + 2.0 / 3)) < 1e-15);
    /* Stemming makes "running" and "runs" both "run". */
    cr_assert_eq(tm_rouge(S("running"), S("runs"), 1, &r), 0);
    cr_expect_eq(r.rouge1.fmeasure, 1.0);
    cr_assert_eq(tm_rouge(S("running"), S("runs"), 0, &r), 0);
    cr_expect_eq(r.rouge1.fmeasure, 0.0);
}

Test(textmetrics, rouge_lsum_takes_the_union_lcs_line_by_line) {
    /* Lines swapped: each target line is found whole in some prediction line (4 of 4), while one
     * LCS over the whole texts finds only "a b" (2 of 4). */
    struct tm_rouge r;
    cr_assert_eq(tm_rouge(S("a b\nc d"), S("c d\na b"), 0, &r), 0);
    cr_expect_eq(r.rougeLsum.fmeasure, 1.0);
    cr_expect_eq(r.rougeL.fmeasure, 0.5);
}

Test(textmetrics, empty_strings_may_have_null_pointers_and_empty_corpora_score_zero) {
    tm_str          e = {NULL, 0};
    tm_bleu         b;
    tm_chrf         c;
    struct tm_rouge r;
    double          x;
    assay_error     err  = {0};
    const char     *rx[] = {"a"};
    tm_em_opts      o    = {rx, 1, 1, 1, 1};
    cr_expect_eq(tm_bleu_corpus(&e, &e, 1, 1, &b), 0);
    cr_expect_eq(tm_chrf_corpus(&e, &e, 1, 1, &c), 0);
    cr_expect_eq(tm_rouge(e, e, 1, &r), 0);
    cr_expect_eq(tm_squad_f1(e, e, &x), 0);
    cr_expect_eq(x, 0.0, "SQuAD v1.1 gives F1 0 when nothing is shared, even two empty answers");
    cr_expect_eq(tm_squad_em(e, e, &x), 0);
    cr_expect_eq(x, 1.0);
    cr_expect_eq(tm_exact_match(e, e, &o, &x, &err), 0);
    cr_expect_eq(x, 1.0);
    cr_expect_eq(tm_bleu_corpus(NULL, NULL, 0, 1, &b), 0);
    cr_expect_eq(b.score, 0.0);
    cr_expect_eq(tm_chrf_corpus(NULL, NULL, 0, 1, &c), 0);
    cr_expect_eq(c.score, 0.0);
}

Test(textmetrics, porter_stems_the_papers_examples) {
    static const char *const cases[][2] = {
        {"caresses", "caress"}, {"ponies", "poni"},       {"ties", "tie"},
        {"cats", "cat"},        {"agreed", "agre"},       {"plastered", "plaster"},
        {"motoring", "motor"},  {"conflated", "conflat"}, {"hopping", "hop"},
        {"filing", "file"},     {"happy", "happi"},       {"relational", "relat"},
        {"dying", "die"},       {"skies", "sky"},         {"a", "a"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        cr_assert_eq(tm_porter_stem(cases[i][0], strlen(cases[i][0]), out, sizeof out), 0);
        cr_expect_str_eq(out, cases[i][1], "stem(%s)", cases[i][0]);
    }
    char tiny[3];
    cr_expect_eq(tm_porter_stem("abc", 3, tiny, sizeof tiny), -1, "cap < n + 1 is refused");
}

Test(textmetrics, squad_normalization_drops_case_punctuation_and_articles) {
    double em, f1;
    cr_assert_eq(tm_squad_em(S("The  Eiffel-Tower!"), S("eiffeltower"), &em), 0);
    cr_expect_eq(em, 1.0);
    /* prediction "an apple pie" -> [apple, pie]; gold "apple" -> p 1/2, r 1, F1 2/3. */
    cr_assert_eq(tm_squad_f1(S("an apple pie"), S("Apple."), &f1), 0);
    cr_expect(fabs(f1 - 2.0 / 3) < 1e-15, "F1 %.17g", f1);
    /* "theory" keeps its "the": articles need word boundaries. */
    cr_assert_eq(tm_squad_em(S("theory"), S("ory"), &em), 0);
    cr_expect_eq(em, 0.0);
}

Test(textmetrics, exact_match_applies_regexes_then_case_then_punctuation_then_numbers) {
    const char *rx[] = {"^answer:\\s*"};
    tm_em_opts  o    = {rx, 1, 1, 1, 1};
    double      em;
    assay_error err = {0};
    cr_assert_eq(tm_exact_match(S("answer:  Paris,42."), S("PARIS"), &o, &em, &err), 0);
    cr_expect_eq(em, 1.0);
    /* The regex runs before lower-casing, so it does not see "ANSWER:". */
    cr_assert_eq(tm_exact_match(S("ANSWER: paris"), S("paris"), &o, &em, &err), 0);
    cr_expect_eq(em, 0.0);
    tm_em_opts none = {0};
    cr_assert_eq(tm_exact_match(S("a"), S("A"), &none, &em, &err), 0);
    cr_expect_eq(em, 0.0);
}

/* re.sub results from Python 3.11: \s is str.isspace() (U+001C..U+001F yes, U+180E no), inside a
 * class too; $ matches before a final newline; \Z is the very end. */
Test(textmetrics, exact_match_regexes_mean_what_they_mean_in_python) {
    static const struct {
        const char *pattern, *text, *after;
    } cases[] = {{"\\s+",
                  "a\x1c"
                  "b\xE1\xA0\x8E"
                  "c",
                  "ab\xE1\xA0\x8E"
                  "c"},
                 {"x$", "ax\n", "a\n"},
                 {"x.$", "ax\r", "a"}, /* "\r" is no newline to Python */
                 {"[\\s,]", "a\x1d,b", "ab"},
                 {"b\\Z", "ab", "a"},
                 {"\\S", "a b", " "}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *rx[] = {cases[i].pattern};
        tm_em_opts  o    = {rx, 1, 0, 0, 0};
        double      em   = -1;
        assay_error err  = {0};
        cr_assert_eq(tm_exact_match(S(cases[i].text), S(cases[i].after), &o, &em, &err), 0, "%s",
                     err.msg);
        cr_expect_eq(em, 1.0, "re.sub(%s) on case %zu", cases[i].pattern, i);
    }
}

Test(textmetrics, exact_match_rejects_an_invalid_regex_naming_it) {
    const char *rx[] = {"(unclosed"};
    tm_em_opts  o    = {rx, 1, 0, 0, 0};
    double      em   = -1;
    assay_error err  = {0};
    cr_assert_eq(tm_exact_match(S("a"), S("a"), &o, &em, &err), -1);
    cr_expect_eq(err.code, ASSAY_EINVAL);
    cr_expect(strstr(err.msg, "(unclosed") != NULL, "message: %s", err.msg);
}

Test(textmetrics, no_refs_fails_instead_of_scoring) {
    tm_str  h = S("x");
    tm_bleu b;
    tm_chrf c;
    cr_expect_eq(tm_bleu_corpus(&h, NULL, 1, 0, &b), -1);
    cr_expect_eq(tm_chrf_corpus(&h, NULL, 1, 0, &c), -1);
}

/* Random bytes (invalid UTF-8, NULs, newlines, entities) through every metric: no crash, values in
 * range. Under ASan/UBSan this doubles as a memory check. */
Test(textmetrics, arbitrary_bytes_never_crash_and_stay_in_range) {
    static const char *const pieces[] = {"&amp;",
                                         "<skipped>",
                                         "-\n",
                                         "\n",
                                         " ",
                                         ".",
                                         ",",
                                         "1",
                                         "-",
                                         "\xC3\xA9",
                                         "\xCE\xA3",
                                         "\xC4\xB0",
                                         "\xE2\x80\xA8",
                                         "\xFF",
                                         "\xC3",
                                         "\xED\xA0\x80",
                                         "the",
                                         "a",
                                         "yyyy",
                                         "Running",
                                         "\xF0\x9F\x98\x80",
                                         "x",
                                         "\t"};
    uint64_t                 seed     = 12345;
    char                     buf[2][256];
    const char              *rx[] = {"\\s+", "x*", "\\w"};
    tm_em_opts               eo   = {rx, 3, 1, 1, 1};
    for (int it = 0; it < 3000; it++) {
        size_t len[2];
        for (int s = 0; s < 2; s++) {
            len[s]    = 0;
            seed      = seed * 6364136223846793005ull + 1442695040888963407ull;
            int parts = (int)((seed >> 33) % 24);
            for (int p = 0; p < parts; p++) {
                seed              = seed * 6364136223846793005ull + 1442695040888963407ull;
                char        raw   = (char)(seed >> 40); /* any byte, NUL included */
                const char *piece = pieces[(seed >> 33) % (sizeof pieces / sizeof pieces[0])];
                size_t      k     = (seed >> 60) == 0 ? 1 : strlen(piece);
                if (k > 16 || len[s] > sizeof buf[s] - 16)
                    break;
                memcpy(&buf[s][len[s]], (seed >> 60) == 0 ? &raw : piece, k);
                len[s] += k;
            }
        }
        tm_str  h = {buf[0], len[0]}, r = {buf[1], len[1]};
        tm_bleu b;
        tm_chrf c;
        cr_assert_eq(tm_bleu_corpus(&h, &r, 1, 1, &b), 0);
        cr_assert(b.score >= 0 && b.score <= 100 + 1e-9, "BLEU %f", b.score);
        cr_assert_eq(tm_chrf_corpus(&h, &r, 1, 1, &c), 0);
        cr_assert(c.score >= 0 && c.score <= 100 + 1e-9, "chrF %f", c.score);
        struct tm_rouge rg;
        cr_assert_eq(tm_rouge(r, h, it & 1, &rg), 0);
        cr_assert(rg.rougeLsum.fmeasure >= 0 && rg.rougeLsum.fmeasure <= 1 + 1e-12);
        double      f1, em;
        assay_error err = {0};
        cr_assert_eq(tm_squad_f1(h, r, &f1), 0);
        cr_assert(f1 >= 0 && f1 <= 1);
        cr_assert_eq(tm_squad_em(h, r, &em), 0);
        cr_assert_eq(tm_exact_match(h, r, &eo, &em, &err), 0, "%s", err.msg);
    }
}

Test(textmetrics, corpus_bleu_over_ten_thousand_pairs_takes_well_under_a_second) {
    enum { N = 10000 };
    tm_str *h = malloc(N * sizeof *h), *r = malloc(N * sizeof *r);
    char   *text = malloc((size_t)N * 2 * 160);
    cr_assert(h && r && text);
    uint64_t seed = 7;
    for (int i = 0; i < 2 * N; i++) {
        char  *s = text + (size_t)i * 160;
        size_t n = 0;
        while (n < 140) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            n += (size_t)snprintf(s + n, 160 - n, "w%u%s ", (unsigned)((seed >> 33) % 500),
                                  (seed >> 60) == 0 ? "," : "");
        }
        tm_str t = {s, n};
        if (i < N)
            h[i] = t;
        else
            r[i - N] = t;
    }
    struct timespec t0, t1;
    tm_bleu         b;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(tm_bleu_corpus(h, r, N, 1, &b), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_log_info("corpus BLEU over %d pairs (%ld hypothesis tokens): %.3f s", N, b.sys_len, s);
    if (TEST_CHECK_MEMORY) /* sanitizer builds are several times slower */
        cr_expect_lt(s, 1.0, "%.3f s", s);
    free(h), free(r), free(text);
}
