/* tests/test_split.c — `assay split`: assignments equal the definition's (computed in Python by
 * tools/split_reference.py), stable when records are added, atomic, and file:line errors. */
#include <math.h>

#include "tests/helpers.h"

/* id -> split index, from the output files <stem>.<name>.jsonl in dir. */
static int split_of(const char *dir, const char *stem, const char *const *names, int n,
                    const char *id_json) {
    for (int k = 0; k < n; k++) {
        char path[1200], line[4096];
        snprintf(path, sizeof path, "%s/%s.%s.jsonl", dir, stem, names[k]);
        FILE *f = fopen(path, "r");
        cr_assert(f, "%s missing", path);
        while (fgets(line, sizeof line, f)) {
            cJSON *o = cJSON_Parse(line);
            cr_assert(o, "%s: not JSON: %s", path, line);
            char *id = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "id"));
            int   eq = !strcmp(id, id_json);
            free(id);
            cJSON_Delete(o);
            if (eq) {
                fclose(f);
                return k;
            }
        }
        fclose(f);
    }
    return -1;
}

static void check_reference(const char *ratios, const char *seed, const char *key,
                            const char *const *names, int n) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    cr_assert_eq(test_run(&out,
                          "split tests/fixtures/split/items.jsonl --by id --ratios %s "
                          "--seed %s --out-dir %s",
                          ratios, seed, dir),
                 0, "%s", out);
    free(out);
    cJSON *exp = test_read_json("tests/fixtures/split/expected.json");
    cJSON *arr = cJSON_GetObjectItem(exp, key);
    FILE  *in  = fopen("tests/fixtures/split/items.jsonl", "r");
    char   line[4096];
    int    i = 0;
    while (fgets(line, sizeof line, in)) {
        cJSON *o    = cJSON_Parse(line);
        char  *id   = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "id"));
        int    want = cJSON_GetArrayItem(arr, i)->valueint;
        cr_assert_eq(split_of(dir, "items", names, n, id), want, "record %d (id %s)", i + 1, id);
        free(id);
        cJSON_Delete(o);
        i++;
    }
    fclose(in);
    cr_assert_eq(i, cJSON_GetArraySize(arr));
    cJSON_Delete(exp);
}

Test(split, assigns_each_record_as_the_reference_computes_it) {
    static const char *const three[] = {"train", "val", "test"}, *const two[] = {"train", "test"};
    check_reference("0.8,0.1,0.1", "0", "ratios_0.8_0.1_0.1_seed_0", three, 3);
    check_reference("1,1", "abc", "ratios_0.5_0.5_seed_abc", two, 2);
}

Test(split, a_record_keeps_its_split_when_other_records_are_added) {
    char dir[256], small[300], big[300], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(small, sizeof small, "%s/small", dir);
    snprintf(big, sizeof big, "%s/big", dir);
    FILE *a = fopen(small, "w"), *b = fopen(big, "w");
    cr_assert(a && b);
    /* the big file holds the small one's records, shuffled among 400 new ones */
    for (int i = 0; i < 500; i++) {
        if (i % 5 == 0)
            fprintf(a, "{\"id\": \"doc-%d\", \"text\": \"t\"}\n", i);
        fprintf(b, "{\"id\": \"doc-%d\", \"text\": \"t\"}\n", (i * 7919) % 500);
    }
    fclose(a);
    fclose(b);
    cr_assert_eq(test_run(&out, "split %s --by id --ratios 0.6,0.2,0.2 --out-dir %s", small, dir),
                 0, "%s", out);
    free(out);
    cr_assert_eq(
        test_run(&out, "split %s --by id --ratios 0.6,0.2,0.2 --out-dir %s --json", big, dir), 0,
        "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert(j, "%s", out);
    /* 500 records at 0.6/0.2/0.2: each count within 5 binomial standard deviations */
    const double p[3] = {0.6, 0.2, 0.2};
    for (int k = 0; k < 3; k++) {
        double got =
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "splits"), k), "records")
                ->valuedouble;
        cr_assert(fabs(got - 500 * p[k]) < 5 * sqrt(500 * p[k] * (1 - p[k])), "split %d: %g", k,
                  got);
    }
    cJSON_Delete(j);
    free(out);
    static const char *const names[] = {"train", "val", "test"};
    int                      seen[3] = {0};
    for (int i = 0; i < 500; i += 5) {
        char id[32];
        snprintf(id, sizeof id, "\"doc-%d\"", i);
        int ks = split_of(dir, "small", names, 3, id), kb = split_of(dir, "big", names, 3, id);
        cr_assert(ks >= 0 && ks == kb, "%s: split %d alone, %d among others", id, ks, kb);
        seen[ks]++;
    }
    cr_assert(seen[0] && seen[1] && seen[2]);
}

Test(split, a_bad_line_names_file_and_line_and_leaves_no_output) {
    char dir[256], *out = NULL, path[400];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "in.jsonl", "{\"id\": 1}\n\n{\"id\": 2\n");
    cr_assert_eq(test_run(&out, "split %s/in.jsonl --by id --ratios 0.5,0.5", dir), 2, "%s", out);
    cr_assert(strstr(out, "in.jsonl:3:"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/in.train.jsonl", dir);
    cr_assert(access(path, F_OK) != 0, "a partial output was left");
    test_write_file(dir, "in2.jsonl", "{\"id\": 1}\n{\"other\": 2}\n");
    cr_assert_eq(test_run(&out, "split %s/in2.jsonl --by id --ratios 0.5,0.5", dir), 2, "%s", out);
    cr_assert(strstr(out, "in2.jsonl:2: no \"id\" field"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/in2.test.jsonl", dir);
    cr_assert(access(path, F_OK) != 0, "a partial output was left");
}

Test(split, rejects_bad_ratios_and_names) {
    char       *out   = NULL;
    const char *bad[] = {"0.5", "0.5,-0.5", "a,b", "0.5,0"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(test_run(&out,
                              "split tests/fixtures/split/items.jsonl --by id --ratios %s "
                              "--out-dir /tmp",
                              bad[i]),
                     2, "%s: %s", bad[i], out);
        cr_assert(strstr(out, "--ratios"), "%s", out);
        free(out);
    }
    cr_assert_eq(test_run(&out, "split tests/fixtures/split/items.jsonl --by id --ratios 1,1 "
                                "--names a,a --out-dir /tmp"),
                 2, "%s", out);
    free(out);
}

/* A missing input is named as missing (it was reported as an empty --out-dir when its path had
 * a single leading slash). */
Test(split, a_missing_input_is_named) {
    char *out = NULL;
    int   rc  = test_run(&out, "split /nonexistent-split-input.jsonl --by id --ratios 0.5,0.5");
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "/nonexistent-split-input.jsonl"), "%s", out);
    cr_expect_null(strstr(out, "not a directory"), "%s", out);
    free(out);
}
