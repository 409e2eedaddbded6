/* tests/test_history.c — the run history: ppl appends a record with the model's content hash
 * (recomputed here from its definition), `assay history` shows trends, eval-style results go in
 * through history_record_run, concurrent writers never lose or split a run, and a file that is
 * not a history is exit 2. */
#include <math.h>
#include <sqlite3.h>

#include "core/sha256.h"
#include "harness/history.h"
#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

/* The model hash as documented: config.json's bytes, then per safetensors file its name, a NUL
 * and its 8-byte header length + JSON header. */
static void expected_model_hash(char hex[65]) {
    sha256_ctx c;
    char      *cfg = NULL;
    size_t     n   = 0;
    FILE      *f   = fopen(MODEL "/config.json", "rb");
    cr_assert(f);
    cfg = malloc(1 << 16);
    n   = fread(cfg, 1, 1 << 16, f);
    fclose(f);
    sha256_init(&c);
    sha256_update(&c, cfg, n);
    sha256_update(&c, "model.safetensors", sizeof "model.safetensors");
    f = fopen(MODEL "/model.safetensors", "rb");
    unsigned char hl[8];
    cr_assert_eq(fread(hl, 1, 8, f), 8);
    uint64_t len = 0;
    for (int k = 7; k >= 0; k--)
        len = len << 8 | hl[k];
    char *hdr = malloc(len);
    cr_assert_eq(fread(hdr, 1, len, f), len);
    fclose(f);
    sha256_update(&c, hl, 8);
    sha256_update(&c, hdr, len);
    sha256_hex(&c, hex);
    free(cfg);
    free(hdr);
}

Test(history, ppl_runs_are_recorded_and_listed_as_a_trend) {
    char dir[256], *out = NULL, hex[65];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "a.txt", "The history keeps every run of this text.\n");
    test_write_file(dir, "b.txt", "Another text, another perplexity value for the trend.\n");
    cr_assert_eq(test_run(&out, "ppl " MODEL " %s/a.txt --history %s/h.db", dir, dir), 0, "%s",
                 out);
    free(out);
    cr_assert_eq(test_run(&out, "ppl " MODEL " %s/b.txt --json --history %s/h.db", dir, dir), 0,
                 "%s", out);
    cJSON *ppl = cJSON_Parse(out);
    cr_assert(ppl, "%s", out);
    free(out);
    double second = cJSON_GetObjectItem(cJSON_GetObjectItem(ppl, "total"), "ppl")->valuedouble;
    cJSON_Delete(ppl);
    cr_assert_eq(test_run(&out, "history --history %s/h.db --task ppl --json", dir), 0, "%s", out);
    cJSON *h = cJSON_Parse(out);
    cr_assert(h, "%s", out);
    free(out);
    cJSON *tr = cJSON_GetObjectItem(h, "trends"), *t, *want = NULL;
    cr_assert_eq(cJSON_GetArraySize(tr), 4, "ppl, word_ppl, byte_ppl, bits_per_byte");
    cJSON_ArrayForEach(t, tr) if (!strcmp(cJSON_GetObjectItem(t, "metric")->valuestring, "ppl"))
        want = t;
    cr_assert(want);
    cJSON *pts = cJSON_GetObjectItem(want, "points");
    cr_assert_eq(cJSON_GetArraySize(pts), 2);
    cJSON *p0 = cJSON_GetArrayItem(pts, 0), *p1 = cJSON_GetArrayItem(pts, 1);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(p0, "delta")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(p0, "stderr")), "a corpus ppl has no stderr");
    cr_assert_float_eq(cJSON_GetObjectItem(p1, "value")->valuedouble, second, 1e-9 * second);
    cr_assert_float_eq(cJSON_GetObjectItem(p1, "delta")->valuedouble,
                       second - cJSON_GetObjectItem(p0, "value")->valuedouble, 1e-6 * second);
    expected_model_hash(hex);
    cr_assert_str_eq(cJSON_GetObjectItem(p0, "model_sha256")->valuestring, hex);
    cr_assert_str_eq(cJSON_GetObjectItem(p0, "device")->valuestring, "cpu");
    cr_assert(cJSON_GetObjectItem(p0, "tokens")->valuedouble > 0);
    cr_assert(cJSON_GetObjectItem(p0, "wall_s")->valuedouble > 0);
    cJSON_Delete(h);
    /* filters: another model prefix matches nothing; a hash prefix matches */
    cr_assert_eq(test_run(&out, "history --history %s/h.db --model nothing-like-it", dir), 0);
    cr_assert(strstr(out, "no runs match"), "%s", out);
    free(out);
    char pre[9];
    snprintf(pre, sizeof pre, "%.8s", hex);
    cr_assert_eq(test_run(&out, "history --history %s/h.db --model %s", dir, pre), 0);
    cr_assert(strstr(out, "ppl / word_ppl"), "%s", out);
    free(out);
}

Test(history, eval_results_go_in_through_history_record_run) {
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/h.db", dir);
    const char *js =
        "{\"results\": {\"arc_easy\": {\"alias\": \"arc_easy\", \"acc,none\": 0.28, "
        "\"acc_stderr,none\": 0.045, \"acc_norm,none\": 0.26, \"acc_norm_stderr,none\": 0.044}, "
        "\"weird\": [1, 2], \"wikitext\": {\"word_perplexity,none\": 123.5, "
        "\"word_perplexity_stderr,none\": "
        "\"N/A\"}, \"gsm\": {\"exact_match,strict-match\": 0.1, "
        "\"exact_match_stderr,strict-match\": 0.02}}, "
        "\"config\": {\"model\": \"assay\", \"model_args\": \"/m/tiny\"}, "
        "\"assay\": {\"version\": \"0.1.0\", \"device\": \"cpu\", \"ctx\": 512, \"hashes\": "
        "{\"model_sha256_config_and_safetensors_headers\": \"abc\", \"tokenizer_sha256\": "
        "\"def\", \"data_sha256\": {\"d.jsonl\": \"0123\"}}, \"cost\": {\"wall_s\": {\"total\": "
        "2.5}, \"tokens_computed\": 4096, \"cost_per_run\": 0.01}}}";
    cJSON      *r   = cJSON_Parse(js);
    assay_error err = {0};
    cr_assert_eq(history_record_run(path, "eval", r, &err), 0, "%s", err.msg);
    cr_assert_eq(history_record_run(path, "eval", r, &err), 0, "%s", err.msg);
    cJSON_Delete(r);
    history_rows rows;
    cr_assert_eq(history_query(path, NULL, "/m/ti", &rows, &err), 0, "%s", err.msg);
    cr_assert_eq(rows.n, 8, "4 metrics x 2 runs");
    /* ordered by task, metric, run */
    cr_assert_str_eq(rows.r[0].task, "arc_easy");
    cr_assert_str_eq(rows.r[0].metric, "acc");
    cr_assert_float_eq(rows.r[0].value, 0.28, 1e-15);
    cr_assert_float_eq(rows.r[0].stderr, 0.045, 1e-15);
    cr_assert_eq(rows.r[1].run_id, rows.r[0].run_id + 1);
    cr_assert_str_eq(rows.r[4].task, "gsm");
    cr_assert_str_eq(rows.r[4].metric, "exact_match,strict-match", "a filter keeps its name");
    cr_assert_str_eq(rows.r[6].metric, "word_perplexity");
    cr_assert(isnan(rows.r[6].stderr), "N/A is no stderr");
    cr_assert_str_eq(rows.r[0].model_sha256, "abc");
    cr_assert_eq(rows.r[0].tokens, 4096);
    cr_assert_float_eq(rows.r[0].cost, 0.01, 1e-15);
    cr_assert_float_eq(rows.r[0].wall_s, 2.5, 1e-15);
    history_rows_free(&rows);
    cr_assert_eq(history_query(path, "wikitext", NULL, &rows, &err), 0);
    cr_assert_eq(rows.n, 2);
    history_rows_free(&rows);
}

/* Four processes append 25 runs of 3 metrics each at once: every run is there, whole. */
Test(history, concurrent_writers_neither_lose_nor_split_runs) {
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/h.db", dir);
    pid_t pids[4];
    for (int p = 0; p < 4; p++) {
        if ((pids[p] = fork()) == 0) {
            for (int i = 0; i < 25; i++) {
                history_metric m[3] = {{"t", "a", i, NAN}, {"t", "b", i, 0.1}, {"t", "c", p, 0}};
                history_run    r   = {"test", "m", NULL, NULL, NULL, "{}", "cpu", 1, 10, NAN, m, 3};
                assay_error    err = {0};
                if (history_append(path, &r, NULL, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    _exit(1);
                }
            }
            _exit(0);
        }
    }
    for (int p = 0; p < 4; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed", p);
    }
    history_rows rows;
    assay_error  err = {0};
    cr_assert_eq(history_query(path, "t", NULL, &rows, &err), 0, "%s", err.msg);
    cr_assert_eq(rows.n, 300);
    int per_metric[3] = {0};
    for (size_t i = 0; i < rows.n; i++)
        per_metric[rows.r[i].metric[0] - 'a']++;
    cr_assert(per_metric[0] == 100 && per_metric[1] == 100 && per_metric[2] == 100);
    history_rows_free(&rows);
}

Test(history, a_file_that_is_not_a_history_is_exit_2) {
    char dir[256], *out = NULL, path[300];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "junk.db", "this is not an SQLite file at all, just text\n");
    cr_assert_eq(test_run(&out, "history --history %s/junk.db", dir), 2, "%s", out);
    cr_assert(strstr(out, "junk.db: not a readable SQLite database"), "%s", out);
    free(out);
    test_write_file(dir, "doc.txt", "Some text to score.\n");
    cr_assert_eq(test_run(&out, "ppl " MODEL " %s/doc.txt --history %s/junk.db", dir, dir), 2, "%s",
                 out);
    cr_assert(strstr(out, "junk.db") && !strstr(out, "tokens/s"), "refused before the run: %s",
              out);
    free(out);
    /* an SQLite database of something else */
    snprintf(path, sizeof path, "%s/other.db", dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE x(a)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(test_run(&out, "history --history %s", path), 2, "%s", out);
    cr_assert(strstr(out, "not an assay history"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "history --history %s/none.db", dir), 2, "%s", out);
    cr_assert(strstr(out, "no such history file"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "history --history %s", dir), 2, "a directory: %s", out);
    free(out);
}

/* eval appends every run to OUT/history.sqlite by default (and to --history when given): two runs
 * give two points of each metric's trend, the device the run used. */
Test(history, eval_runs_append_to_the_output_folders_history) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    for (int i = 0; i < 2; i++) {
        int rc =
            test_run(&out,
                     "eval " MODEL " --tasks arc_easy --data tests/fixtures/lmeval/fewshot/data "
                     "--limit %d --output-path %s/out",
                     2 + i, dir);
        cr_assert_eq(rc, 0, "%s", out);
        free(out);
    }
    int rc = test_run(&out, "history --history %s/out/history.sqlite --task arc_easy --json", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *h = cJSON_Parse(out);
    cr_assert(h, "%s", out);
    const cJSON *t;
    int          n_trends = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(h, "trends")) {
        const cJSON *pts = cJSON_GetObjectItemCaseSensitive(t, "points");
        cr_expect_eq(cJSON_GetArraySize(pts), 2, "%s", out);
        const cJSON *dev = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(pts, 0), "device");
        cr_expect(cJSON_IsString(dev) && !strcmp(dev->valuestring, "cpu"), "%s", out);
        n_trends++;
    }
    cr_expect_geq(n_trends, 2, "acc and acc_norm: %s", out);
    cJSON_Delete(h);
    free(out);
}
