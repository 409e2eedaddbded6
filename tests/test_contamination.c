/* tests/test_contamination.c — `assay contamination` against exact word-tuple n-gram sets
 * computed in Python (tools/contamination_reference.py), and its input errors. */
#include "tests/helpers.h"

#define FIX "tests/fixtures/contamination/"

static void check_case(const char *train, int n, const char *key) {
    char *out = NULL;
    cr_assert_eq(test_run(&out,
                          "contamination --train " FIX "%s --eval " FIX "eval.jsonl --n %d "
                          "--json",
                          train, n),
                 0, "%s", out);
    cJSON *got = cJSON_Parse(out);
    cr_assert(got, "%s", out);
    cJSON *all = test_read_json(FIX "expected.json"), *exp = cJSON_GetObjectItem(all, key);
    cr_assert_eq(cJSON_GetObjectItem(got, "train_ngrams")->valueint,
                 cJSON_GetObjectItem(exp, "train_ngrams")->valueint, "%s", key);
    /* every item the reference finds overlapping is reported, with its counts, and no other */
    cJSON *items = cJSON_GetObjectItem(got, "contaminated_items"), *e;
    int    want  = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(exp, "items")) {
        int    line = cJSON_GetObjectItem(e, "line")->valueint;
        int    ov   = cJSON_GetObjectItem(e, "overlap")->valueint;
        cJSON *hit  = NULL, *it;
        cJSON_ArrayForEach(it, items) if (cJSON_GetObjectItem(it, "line")->valueint == line) hit =
            it;
        cr_assert_eq(hit != NULL, ov > 0, "%s line %d: reported %d, overlap %d", key, line,
                     hit != NULL, ov);
        if (hit) {
            want++;
            cr_assert_eq(cJSON_GetObjectItem(hit, "overlap")->valueint, ov, "%s line %d", key,
                         line);
            cr_assert_eq(cJSON_GetObjectItem(hit, "ngrams")->valueint,
                         cJSON_GetObjectItem(e, "ngrams")->valueint, "%s line %d", key, line);
        }
    }
    cr_assert_eq(cJSON_GetArraySize(items), want);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(got, "tasks")) {
        const char *t = cJSON_GetObjectItem(e, "task")->valuestring;
        cJSON      *x = cJSON_GetObjectItem(cJSON_GetObjectItem(exp, "tasks"), t);
        cr_assert(x, "unexpected task %s", t);
        static const char *const f[] = {"items", "contaminated", "too_short"};
        for (int k = 0; k < 3; k++)
            cr_assert_eq(cJSON_GetObjectItem(e, f[k])->valueint,
                         cJSON_GetObjectItem(x, f[k])->valueint, "%s %s %s", key, t, f[k]);
        cr_assert_float_eq(cJSON_GetObjectItem(e, "share")->valuedouble,
                           cJSON_GetObjectItem(x, "contaminated")->valuedouble /
                               cJSON_GetObjectItem(x, "items")->valuedouble,
                           1e-12);
    }
    cJSON_Delete(all);
    cJSON_Delete(got);
    free(out);
}

Test(contamination, overlaps_equal_exact_ngram_sets_after_normalization) {
    check_case("train.txt", 13, "txt_n13");
    check_case("train.txt", 5, "txt_n5");
    check_case("train.jsonl", 13, "jsonl_n13");
}

Test(contamination, only_the_named_fields_count) {
    char *out = NULL;
    /* item 6's words reach 13 only if its two fields were joined; with --field choices alone
     * item 1 (choices "yes", "no") has no 13-gram */
    cr_assert_eq(test_run(&out, "contamination --train " FIX "train.txt --eval " FIX
                                "eval.jsonl --field choices --json"),
                 0, "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert_eq(cJSON_GetObjectItem(j, "contaminated")->valueint, 0, "%s", out);
    cJSON_Delete(j);
    free(out);
}

Test(contamination, bad_input_is_exit_2_naming_the_place) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "bad.txt", "valid words \xff\xfe then not UTF-8\n");
    cr_assert_eq(test_run(&out, "contamination --train %s/bad.txt --eval " FIX "eval.jsonl", dir),
                 2, "%s", out);
    cr_assert(strstr(out, "bad.txt"), "%s", out);
    free(out);
    test_write_file(dir, "ev.jsonl", "{\"q\": \"a b c\"}\n{\"x\": 1}\n");
    cr_assert_eq(test_run(&out,
                          "contamination --train " FIX "train.txt --eval %s/ev.jsonl "
                          "--field q",
                          dir),
                 2, "%s", out);
    cr_assert(strstr(out, "ev.jsonl:2: no \"q\" field"), "%s", out);
    free(out);
    /* the set is capped, never silently truncated */
    cr_assert_eq(test_run(&out, "contamination --train " FIX "train.txt --eval " FIX
                                "eval.jsonl --n 2 --max-ngrams 10"),
                 2, "%s", out);
    cr_assert(strstr(out, "more than 10 distinct train n-grams"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "contamination --eval " FIX "eval.jsonl"), 2, "%s", out);
    free(out);
}
