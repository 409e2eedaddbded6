/* tests/test_eval_stream.c — `assay eval` streams log-likelihood documents: memory does not grow
 * with the number of documents, results do not depend on the window, and a run that fails part
 * way leaves no output files. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

/* A user task of n documents, each a ~500-byte context and two choices (as templates, and as the
 * list "opts" for a spec that names it). bad_line (1-based, or 0): that line holds `bad`. */
static void write_big_task(const char *dir, int n, int bad_line, const char *bad) {
    char path[256];
    snprintf(path, sizeof path, "%s/big.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < n; i++) {
        if (i + 1 == bad_line) {
            fprintf(f, "%s\n", bad);
            continue;
        }
        fprintf(f, "{\"text\": \"Item %d:", i);
        for (int w = 0; w < 80; w++)
            fprintf(f, " w%d", (i * 7 + w * 13) % 997);
        fprintf(f,
                "\", \"a\": \"yes %d\", \"b\": \"no %d\", \"opts\": [\"p\", \"q\"], \"label\": "
                "%d}\n",
                i % 13, i % 7, i % 2);
    }
    fclose(f);
    test_write_file(dir, "big.json",
                    "{\"task\": \"big\", \"data\": \"big.jsonl\", \"context\": \"{text}\", "
                    "\"choices\": [\"{a}\", \"{b}\"], \"gold_index\": \"label\"}");
}

/* peak_rss_bytes of `eval <args> --limit <limit>` (args select the task), results in out; the
 * task's n-samples must say `limit` documents used, and `original` in the file when > 0. */
static double eval_peak_rss(const char *out, const char *task, int limit, int original,
                            const char *args) {
    char path[160], *o = NULL;
    int  rc = test_run(&o, "eval " MODEL " %s --limit %d --output-path %s", args, limit, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON       *r = test_read_json(path);
    const cJSON *p = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(r, "assay"), "cost"), "peak_rss_bytes");
    cr_assert(cJSON_IsNumber(p));
    const cJSON *ns = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "n-samples"), task);
    cr_expect_eq(cJSON_GetObjectItem(ns, "effective")->valueint, limit);
    if (original > 0)
        cr_expect_eq(cJSON_GetObjectItem(ns, "original")->valueint, original);
    double v = p->valuedouble;
    cJSON_Delete(r);
    return v;
}

static double big_peak_rss(const char *dir, int limit) {
    char out[64], args[256];
    test_tmpdir(out, sizeof out);
    /* --ctx 16 cuts every request to 17 tokens: the model's work is small, the documents' text
     * (what this test is about) keeps its full size */
    snprintf(args, sizeof args,
             "--task-file %s/big.json --data %s --ctx 16 --threads 1 --window-tokens 2048", dir,
             dir);
    return eval_peak_rss(out, "big", limit, 20000, args);
}

/* 5,000 and then 20,000 documents of ~500 bytes of text each. Holding every document (as eval
 * did before it streamed) grew the peak by their text and requests: measured +13.2 MB here.
 * Streamed, what grows is one doc_score (32 bytes) per document, 0.5 MB (up to twice that after
 * realloc): measured +0.6 to +0.8 MB. The bound, 3 MB, is under a quarter of the old growth.
 * Skipped under AddressSanitizer, whose quarantine keeps freed memory resident. */
Test(eval_stream, memory_does_not_grow_with_the_number_of_documents, .timeout = 300) {
    if (!TEST_CHECK_MEMORY)
        cr_skip_test("peak RSS is not meaningful under AddressSanitizer");
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_big_task(dir, 20000, 0, NULL);
    double a = big_peak_rss(dir, 5000), b = big_peak_rss(dir, 20000);
    fprintf(stderr, "eval_stream: peak RSS 5,000 docs %.1f MB, 20,000 docs %.1f MB (+%.2f MB)\n",
            a / 1e6, b / 1e6, (b - a) / 1e6);
    cr_expect(b - a < 3e6, "peak RSS grew %.2f MB from 5,000 to 20,000 documents", (b - a) / 1e6);
}

/* Every file of dir a (not dir b) whose name starts with prefix is byte-identical in b. */
static int same_files(const char *a, const char *b, const char *prefix) {
    DIR *d = opendir(a);
    cr_assert(d, "%s", a);
    struct dirent *e;
    int            n = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)))
            continue;
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "cmp -s '%.200s/%.255s' '%.200s/%.255s'", a, e->d_name, b,
                 e->d_name);
        cr_expect_eq(system(cmd), 0, "%s/%s differs from %s's", a, e->d_name, b);
        n++;
    }
    closedir(d);
    return n;
}

static void run_window(const char *dir, const char *tasks, const char *out, const char *extra) {
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks %s --data %s --log-samples --threads 2 "
                          "--output-path %s %s",
                        tasks, dir, out, extra);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
}

/* Results and samples at one document per window (--window-tokens 1) equal the default window's
 * (everything here in one): MMLU 5-shot over all 57 subjects with --limit 2, and the first 40
 * HellaSwag items of ../shared with --limit 25 and without. Exact: the pipeline's bits do not
 * depend on how requests are grouped. */
Test(eval_stream, shared_mmlu_and_hellaswag_do_not_depend_on_the_window, .timeout = 600) {
    SHARED_OR_SKIP(mmlu, "data/mmlu/test/anatomy_test.csv");
    SHARED_OR_SKIP(hs, "data/hellaswag_val_full.txt.bz2");
    char dir[64], cmd[2400];
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "bzcat %s | head -n 240 > %s/hellaswag_val_full.txt && ln -s "
             "\"$(cd ../shared/data && pwd)/mmlu\" %s/mmlu",
             hs, dir, dir);
    cr_assert_eq(system(cmd), 0);
    static const char *const tasks[3]  = {"mmlu", "hellaswag", "hellaswag"};
    static const char *const limits[3] = {"--num-fewshot 5 --limit 2", "--limit 25", ""};
    static const int         files[3]  = {57, 1, 1}; /* samples files: one per subject */
    for (int l = 0; l < 3; l++) {
        char a[128], b[128], pa[160], pb[160], extra[96];
        snprintf(a, sizeof a, "%s/one%d", dir, l);
        snprintf(b, sizeof b, "%s/all%d", dir, l);
        snprintf(extra, sizeof extra, "%s --window-tokens 1", limits[l]);
        run_window(dir, tasks[l], a, extra);
        run_window(dir, tasks[l], b, limits[l]);
        int n = same_files(a, b, "samples_");
        cr_expect_eq(n, files[l], "%s: %d samples files", a, n);
        snprintf(pa, sizeof pa, "%s/results.json", a);
        snprintf(pb, sizeof pb, "%s/results.json", b);
        cJSON                   *ra = test_read_json(pa), *rb = test_read_json(pb);
        static const char *const keys[] = {"results",  "groups", "group_subtasks", "configs",
                                           "versions", "n-shot", "n-samples"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const cJSON *x = cJSON_GetObjectItem(ra, keys[k]),
                        *y = cJSON_GetObjectItem(rb, keys[k]);
            cr_expect((!x && !y) || cJSON_Compare(x, y, 1),
                      "%s %s: \"%s\" differs with one document per window", tasks[l], limits[l],
                      keys[k]);
        }
        cJSON_Delete(ra);
        cJSON_Delete(rb);
    }
}

/* Names in dir that the failed run must not have left: results, samples, the staging folder. */
static void expect_no_outputs(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return; /* never created: nothing left either */
    struct dirent *e;
    while ((e = readdir(d)))
        cr_expect(strcmp(e->d_name, "results.json") && strncmp(e->d_name, "samples_", 8) &&
                      strncmp(e->d_name, ".assay-samples", 14),
                  "a failed run left %s/%s", dir, e->d_name);
    closedir(d);
}

/* A document with too many choices late in a task, found while windows of an earlier task and
 * of this one have already been scored and their sample lines written: exit 2, the document
 * named, and no results or samples file left (hellaswag's included). */
Test(eval_stream, a_run_failing_mid_way_leaves_no_samples_or_results) {
    char dir[64], out[128], bad[2048], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f;
    char  hs[128];
    snprintf(hs, sizeof hs, "%s/hellaswag_val_full.txt", dir);
    cr_assert((f = fopen(hs, "w")));
    for (int i = 0; i < 30; i++)
        fprintf(f, "Item %d: a man walks to the\n%d\ndoor.\nwall.\ncar.\nsea.\n", i, i % 4);
    fclose(f);
    int n = snprintf(bad, sizeof bad,
                     "{\"text\": \"many\", \"a\": \"x\", \"b\": \"y\", "
                     "\"label\": 0, \"opts\": [");
    for (int c = 0; c < 65; c++)
        n += snprintf(bad + n, sizeof bad - (size_t)n, "%s\"o%d\"", c ? ", " : "", c);
    snprintf(bad + n, sizeof bad - (size_t)n, "]}");
    write_big_task(dir, 300, 290, bad);
    test_write_file(dir, "big.json",
                    "{\"task\": \"big\", \"data\": \"big.jsonl\", \"context\": \"{text}\", "
                    "\"choices\": \"opts\", \"gold_index\": \"label\"}");
    int rc = test_run(&o,
                      "eval " MODEL " --tasks hellaswag --task-file %s/big.json --data %s "
                      "--window-tokens 256 --log-samples --output-path %s",
                      dir, dir, out);
    cr_expect_eq(rc, 2, "%s", o);
    cr_expect(strstr(o, "big doc 289: 65 choices (at most 64)"), "%s", o);
    free(o);
    expect_no_outputs(out);
}

/* The file at dir/name, whole (NULL when it cannot be read). */
static char *slurp(const char *dir, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return test_read_file(path);
}

/* Data for a two-task run with samples (hellaswag, then the big user task) in dir, and dir/out
 * made, as a previous run's output folder. */
static void two_task_data(const char *dir, char *out, size_t cap) {
    snprintf(out, cap, "%s/out", dir);
    cr_assert_eq(mkdir(out, 0755), 0);
    FILE *f;
    char  hs[128];
    snprintf(hs, sizeof hs, "%s/hellaswag_val_full.txt", dir);
    cr_assert((f = fopen(hs, "w")));
    for (int i = 0; i < 30; i++)
        fprintf(f, "Item %d: a man walks to the\n%d\ndoor.\nwall.\ncar.\nsea.\n", i, i % 4);
    fclose(f);
    write_big_task(dir, 40, 0, NULL);
}

/* The two-task run with samples into out; its exit code, its output in *o. */
static int run_two_tasks(char **o, const char *dir, const char *out) {
    return test_run(o,
                    "eval " MODEL " --tasks hellaswag --task-file %s/big.json --data %s "
                    "--log-samples --output-path %s",
                    dir, dir, out);
}

/* Every name in dir is one of the n in keep (history.sqlite, opened before the run, too). */
static void expect_only(const char *dir, const char *const *keep, int n) {
    DIR *d = opendir(dir);
    cr_assert(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int ok = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
                 !strcmp(e->d_name, "history.sqlite");
        for (int k = 0; k < n && !ok; k++)
            ok = !strcmp(e->d_name, keep[k]);
        cr_expect(ok, "the failed commit left %s/%s", dir, e->d_name);
    }
    closedir(d);
}

/* Every task succeeds, but one samples file cannot be moved into place (a directory stands at
 * its name): the samples already moved go back to their previous versions and results.json stays
 * the previous run's, so the output directory holds the old run whole, not a mix. */
Test(eval_stream, a_samples_file_that_cannot_be_moved_into_place_puts_back_the_previous_run) {
    char dir[64], out[128], blocker[192], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    two_task_data(dir, out, sizeof out);
    /* the previous run: results.json and big's samples; then the blocker, moved after big's
     * samples (the commit goes in name order) */
    test_write_file(out, "results.json", "{\"previous\": true}\n");
    test_write_file(out, "samples_big.jsonl", "previous samples\n");
    snprintf(blocker, sizeof blocker, "%s/samples_hellaswag.jsonl", out);
    cr_assert_eq(mkdir(blocker, 0755), 0);
    int rc = run_two_tasks(&o, dir, out);
    cr_expect_neq(rc, 0, "%s", o);
    cr_expect(strstr(o, "samples_hellaswag.jsonl"), "%s", o);
    free(o);
    char *res = slurp(out, "results.json"), *big = slurp(out, "samples_big.jsonl");
    cr_expect(res && !strcmp(res, "{\"previous\": true}\n"), "results.json: %.80s", res);
    cr_expect(big && !strcmp(big, "previous samples\n"), "samples_big.jsonl: %.80s", big);
    free(res);
    free(big);
    const char *keep[] = {"results.json", "samples_big.jsonl", "samples_hellaswag.jsonl"};
    expect_only(out, keep, 3);
    /* without the blocker the same run commits: new samples, new results */
    cr_assert_eq(rmdir(blocker), 0);
    rc = run_two_tasks(&o, dir, out);
    cr_expect_eq(rc, 0, "%s", o);
    free(o);
    res       = slurp(out, "results.json");
    big       = slurp(out, "samples_big.jsonl");
    char *hsw = slurp(out, "samples_hellaswag.jsonl");
    cr_expect(res && strstr(res, "\"results\""), "results.json: %.80s", res);
    cr_expect(big && strstr(big, "\"doc_id\""), "samples_big.jsonl: %.80s", big);
    cr_expect(hsw && strstr(hsw, "\"doc_id\""), "samples_hellaswag.jsonl: %.80s", hsw);
    free(res);
    free(big);
    free(hsw);
}

/* Every samples file moves into place, then results.json cannot be written (a directory stands
 * at its name): the moved samples go back to their previous versions, or away when they had
 * none. */
Test(eval_stream, a_results_file_that_cannot_be_written_puts_back_the_previous_samples) {
    char dir[64], out[128], res[192], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    two_task_data(dir, out, sizeof out);
    test_write_file(out, "samples_big.jsonl", "previous samples\n");
    snprintf(res, sizeof res, "%s/results.json", out);
    cr_assert_eq(mkdir(res, 0755), 0);
    int rc = run_two_tasks(&o, dir, out);
    cr_expect_neq(rc, 0, "%s", o);
    cr_expect(strstr(o, "results.json"), "%s", o);
    free(o);
    char *big = slurp(out, "samples_big.jsonl"), *hsw = slurp(out, "samples_hellaswag.jsonl");
    cr_expect(big && !strcmp(big, "previous samples\n"), "samples_big.jsonl: %.80s", big);
    cr_expect(!hsw, "samples_hellaswag.jsonl had no previous version, yet is there: %.80s", hsw);
    free(big);
    free(hsw);
    const char *keep[] = {"results.json", "samples_big.jsonl"};
    expect_only(out, keep, 2);
}

/* A malformed line late in a file: found by the counting pass, before the model runs; exit 2,
 * file:line named, no output files. */
Test(eval_stream, a_malformed_line_late_in_the_file_is_named_and_leaves_no_outputs) {
    char dir[64], out[128], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    write_big_task(dir, 300, 297, "{\"text\": \"cut short");
    int rc = test_run(&o,
                      "eval " MODEL " --task-file %s/big.json --data %s --window-tokens 256 "
                      "--log-samples --output-path %s",
                      dir, dir, out);
    cr_expect_eq(rc, 2, "%s", o);
    cr_expect(strstr(o, "big.jsonl:297"), "%s", o);
    free(o);
    expect_no_outputs(out);
}

/* wikitext/test.jsonl of n short pages (~500 bytes each) under dir. */
static void write_wikitext(const char *dir, int n) {
    char path[256];
    snprintf(path, sizeof path, "%s/wikitext", dir);
    cr_assert(mkdir(path, 0777) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/wikitext/test.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"page\": \" = Item %d = \\n", i);
        for (int w = 0; w < 80; w++)
            fprintf(f, " w%d", (i * 7 + w * 13) % 997);
        fprintf(f, " . \\n\"}\n");
    }
    fclose(f);
}

/* 1,000 and then 4,000 wikitext pages of ~500 bytes. Holding every page, its tokens and its
 * planned windows (as eval did before rolling tasks streamed) grew the peak by ~4.9 KB a page:
 * measured +14.9 MB here (and 45 -> 119 MB from 5,000 to 20,000 pages). Streamed, a task keeps one
 * ppl_stats whatever its size: measured +0.0 to +0.2 MB. The bound, 3 MB, is under a quarter of
 * the old growth. Skipped under AddressSanitizer, whose quarantine keeps freed memory resident. */
Test(eval_stream, rolling_memory_does_not_grow_with_the_number_of_documents, .timeout = 300) {
    if (!TEST_CHECK_MEMORY)
        cr_skip_test("peak RSS is not meaningful under AddressSanitizer");
    char dir[64], out[128], args[256];
    test_tmpdir(dir, sizeof dir);
    write_wikitext(dir, 4000);
    /* --ctx 16: windows of 17 tokens keep the model's work small; the pages keep their size */
    snprintf(args, sizeof args,
             "--tasks wikitext --data %s --ctx 16 --threads 1 --window-tokens 4096", dir);
    snprintf(out, sizeof out, "%s/a", dir);
    double a = eval_peak_rss(out, "wikitext", 1000, 0, args);
    snprintf(out, sizeof out, "%s/b", dir);
    double b = eval_peak_rss(out, "wikitext", 4000, 0, args);
    fprintf(stderr,
            "eval_stream: wikitext peak RSS 1,000 pages %.1f MB, 4,000 %.1f MB (+%.2f MB)\n",
            a / 1e6, b / 1e6, (b - a) / 1e6);
    cr_expect(b - a < 3e6, "peak RSS grew %.2f MB from 1,000 to 4,000 pages", (b - a) / 1e6);
}

/* results.json but its "assay" block (timings, hashes) is equal in dirs a and b. */
static void expect_same_results(const char *a, const char *b, const char *what) {
    char pa[160], pb[160];
    snprintf(pa, sizeof pa, "%s/results.json", a);
    snprintf(pb, sizeof pb, "%s/results.json", b);
    cJSON *ra = test_read_json(pa), *rb = test_read_json(pb);
    cJSON_DeleteItemFromObject(ra, "assay");
    cJSON_DeleteItemFromObject(rb, "assay");
    cr_expect(cJSON_Compare(ra, rb, 1), "%s: results.json differs from the default window's", what);
    cJSON_Delete(ra);
    cJSON_Delete(rb);
}

/* wikitext over 300 short pages and the lm-eval fixture's pages: one page per window
 * (--window-tokens 1) gives the default window's results and samples exactly. Exact: a page's
 * windows are scored alike in any group, and the pages' stats are merged in load order. */
Test(eval_stream, rolling_results_do_not_depend_on_the_window, .timeout = 300) {
    char dir[64], a[128], b[128];
    test_tmpdir(dir, sizeof dir);
    write_wikitext(dir, 300);
    const char *data[2] = {dir, "tests/fixtures/lmeval/data"};
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s/one%d", dir, k);
        snprintf(b, sizeof b, "%s/all%d", dir, k);
        run_window(data[k], "wikitext", a, "--ctx 32 --window-tokens 1");
        run_window(data[k], "wikitext", b, "--ctx 32");
        cr_expect_eq(same_files(a, b, "samples_"), 1);
        expect_same_results(a, b, data[k]);
    }
}

/* A generate_until user task of n documents under dir: a ~2,000-byte question each and a short
 * reference; extra: the rest of the spec (its metrics, few-shot). */
static void write_gen_task(const char *dir, int n, const char *extra) {
    char path[256], spec[1024];
    snprintf(path, sizeof path, "%s/gen.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"q\": \"Item %d:", i);
        for (int w = 0; w < 320; w++)
            fprintf(f, " w%d", (i * 7 + w * 13) % 997);
        fprintf(f, "\", \"a\": \"w%d w%d\"}\n", i % 997, (i * 3) % 997);
    }
    fclose(f);
    snprintf(spec, sizeof spec,
             "{\"task\": \"gen\", \"output_type\": \"generate_until\", \"data\": \"gen.jsonl\", "
             "\"prompt\": \"Q: {q}\\nA:\", \"target\": \"{a}\", \"until\": [\"\\n\"], %s}",
             extra);
    test_write_file(dir, "gen.json", spec);
}

/* 1,000 and then 4,000 generation documents of ~2,000 bytes, one new token each. Holding every
 * document and its rendered prompt for the run (as eval did before generation tasks streamed)
 * grew the peak by about their text: measured +11.1 MB here. Streamed, a document leaves a
 * few numbers (its exact_match, label, lengths and times: ~60 bytes): measured -0.1 MB. The
 * bound, 3 MB, is under a quarter of the old growth. Skipped under AddressSanitizer, whose
 * quarantine keeps freed memory resident. */
Test(eval_stream, generation_memory_does_not_grow_with_the_number_of_documents, .timeout = 300) {
    if (!TEST_CHECK_MEMORY)
        cr_skip_test("peak RSS is not meaningful under AddressSanitizer");
    char dir[64], out[128], args[256];
    test_tmpdir(dir, sizeof dir);
    write_gen_task(dir, 4000, "\"metric_list\": [\"exact_match\"]");
    /* --ctx 16 cuts every prompt to 15 tokens: the model's work is small, the prompts' text (what
     * this test is about) keeps its size */
    snprintf(args, sizeof args,
             "--task-file %s/gen.json --data %s --ctx 16 --max-gen-toks 1 --threads 1 "
             "--log-samples",
             dir, dir);
    snprintf(out, sizeof out, "%s/a", dir);
    double a = eval_peak_rss(out, "gen", 1000, 0, args);
    snprintf(out, sizeof out, "%s/b", dir);
    double b = eval_peak_rss(out, "gen", 4000, 0, args);
    fprintf(stderr,
            "eval_stream: generation peak RSS 1,000 docs %.1f MB, 4,000 %.1f MB (+%.2f MB)\n",
            a / 1e6, b / 1e6, (b - a) / 1e6);
    cr_expect(b - a < 3e6, "peak RSS grew %.2f MB from 1,000 to 4,000 documents", (b - a) / 1e6);
}

/* The lines of path with their timings (ttft_s, latency_s: they differ from run to run) taken
 * out, joined. */
static char *untimed_lines(const char *path) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    char  *line = NULL, *all = NULL;
    size_t cap = 0, n = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        cr_assert(o, "%s: not JSON", path);
        cJSON_DeleteItemFromObject(o, "ttft_s");
        cJSON_DeleteItemFromObject(o, "latency_s");
        char  *s = cJSON_PrintUnformatted(o);
        size_t k = strlen(s);
        all      = realloc(all, n + k + 2);
        memcpy(all + n, s, k);
        all[n + k] = '\n';
        n += k + 1;
        all[n] = '\0';
        free(s);
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return all ? all : strdup("");
}

/* A generation task over 40 documents with per-document and corpus metrics (BLEU, chrF need every
 * answer and reference at the end) and 2-shot prompts drawn document after document: windows of
 * one prompt (ASSAY_TEST_GEN_WINDOW=1) give the default window's results and samples, but the
 * timings. Exact: greedy decoding is batch-invariant and the metrics see the same per-document
 * inputs in the same order. */
Test(eval_stream, generation_results_do_not_depend_on_the_window, .timeout = 300) {
    char dir[64], a[128], b[128];
    test_tmpdir(dir, sizeof dir);
    write_gen_task(dir, 40,
                   "\"metric_list\": [\"exact_match\", \"f1\", \"bleu\", \"chrf\", \"rouge1\", "
                   "\"length\"], \"num_fewshot\": 2, \"fewshot_data\": \"shots.jsonl\"");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "head -n 12 %s/gen.jsonl > %s/shots.jsonl", dir, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(a, sizeof a, "%s/one", dir);
    snprintf(b, sizeof b, "%s/all", dir);
    for (int k = 0; k < 2; k++) {
        char *o = NULL;
        if (k == 0)
            setenv("ASSAY_TEST_GEN_WINDOW", "1", 1);
        int rc = test_run(&o,
                          "eval " MODEL " --task-file %s/gen.json --data %s --ctx 48 "
                          "--max-gen-toks 4 --threads 2 --log-samples --output-path %s",
                          dir, dir, k ? b : a);
        unsetenv("ASSAY_TEST_GEN_WINDOW");
        cr_assert_eq(rc, 0, "%s", o);
        free(o);
    }
    expect_same_results(a, b, "generation");
    char pa[160], pb[160];
    snprintf(pa, sizeof pa, "%s/samples_gen.jsonl", a);
    snprintf(pb, sizeof pb, "%s/samples_gen.jsonl", b);
    char *la = untimed_lines(pa), *lb = untimed_lines(pb);
    cr_expect(strlen(la) > 1000, "%s: %zu bytes", pa, strlen(la));
    cr_expect_str_eq(la, lb, "samples_gen.jsonl differs with one prompt per window");
    free(la);
    free(lb);
}

/* A generation document that label_accuracy cannot score (no "label"), late in the file: found
 * when its window is reduced, after earlier windows' sample lines were written; exit 2, the
 * document named, no results or samples file left. */
Test(eval_stream, a_generation_run_failing_mid_way_leaves_no_samples_or_results) {
    char dir[64], out[128], path[160], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(path, sizeof path, "%s/gen.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < 30; i++)
        fprintf(f, "{\"q\": \"Item %d\", \"a\": \"x\"%s}\n", i,
                i == 25 ? "" : ", \"label\": \"a\"");
    fclose(f);
    test_write_file(dir, "gen.json",
                    "{\"task\": \"gen\", \"output_type\": \"generate_until\", \"data\": "
                    "\"gen.jsonl\", \"prompt\": \"Q: {q}\\nA:\", \"target\": \"{a}\", "
                    "\"labels\": [\"a\", \"b\"], \"metric_list\": [\"label_accuracy\"]}");
    setenv("ASSAY_TEST_GEN_WINDOW", "4", 1);
    int rc = test_run(&o,
                      "eval " MODEL " --task-file %s/gen.json --data %s --max-gen-toks 2 "
                      "--log-samples --output-path %s",
                      dir, dir, out);
    unsetenv("ASSAY_TEST_GEN_WINDOW");
    cr_expect_eq(rc, 2, "%s", o);
    cr_expect(strstr(o, "gen doc 25: label_accuracy needs a \"label\""), "%s", o);
    free(o);
    expect_no_outputs(out);
}
