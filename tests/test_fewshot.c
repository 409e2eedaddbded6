/* Few-shot sampling: scoring/pyrandom.c against CPython's random.Random outputs
 * (tests/fixtures/pyrandom/cases.txt, written by tools/make_pyrandom_fixture.py): seeding,
 * getrandbits widths, _randbelow, random.sample's pool and set algorithms. Exact equality: the
 * generator is integer arithmetic, nothing to tolerate. */
#include <cJSON.h>
#include <inttypes.h>
#include <math.h>

#include "scoring/pyrandom.h"
#include "tests/helpers.h"

#define CASES "tests/fixtures/pyrandom/cases.txt"

static uint64_t next_u64(char **p) {
    char    *e;
    uint64_t v = strtoull(*p, &e, 10);
    cr_assert(e != *p, "fixture: expected a number at '%.20s'", *p);
    *p = e;
    return v;
}

Test(pyrandom, matches_cpython_fixture) {
    FILE *f = fopen(CASES, "r");
    cr_assert(f, "cannot open %s (run tools/make_pyrandom_fixture.py)", CASES);
    static char line[1 << 16];
    int         n_bits = 0, n_below = 0, n_set = 0, n_pool = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#')
            continue;
        char   *p = line, op[16] = {0}, alg[8] = {0};
        int64_t seed = strtoll(p, &p, 10);
        int     used = 0;
        cr_assert_eq(sscanf(p, " %15s%n", op, &used), 1, "%s:%d", CASES, lineno);
        p += used;
        pyrandom r;
        pyr_seed(&r, seed);
        if (!strcmp(op, "bits") || !strcmp(op, "below")) {
            uint64_t arg = next_u64(&p), reps = next_u64(&p);
            p = strchr(p, ':') + 1;
            for (uint64_t i = 0; i < reps; i++) {
                uint64_t want = next_u64(&p);
                uint64_t got  = op[0] == 'b' && op[1] == 'i' ? pyr_getrandbits(&r, (int)arg)
                                                             : pyr_randbelow(&r, arg);
                cr_assert_eq(got, want,
                             "%s:%d: %s(%" PRIu64 ") #%" PRIu64 " seed %" PRId64 ": %" PRIu64
                             " != CPython's %" PRIu64,
                             CASES, lineno, op, arg, i, seed, got, want);
            }
            *(op[1] == 'i' ? &n_bits : &n_below) += 1;
        } else {
            cr_assert_str_eq(op, "sample", "%s:%d", CASES, lineno);
            size_t n = (size_t)next_u64(&p), k = (size_t)next_u64(&p);
            size_t reps = (size_t)next_u64(&p);
            cr_assert_eq(sscanf(p, " %7s", alg), 1);
            cr_assert_eq(pyr_sample_uses_set(n, k), !strcmp(alg, "set"),
                         "%s:%d: sample(%zu, %zu) algorithm", CASES, lineno, n, k);
            p           = strchr(p, ':') + 1;
            size_t *out = calloc(k ? k : 1, sizeof *out);
            for (size_t i = 0; i < reps; i++) {
                cr_assert_eq(pyr_sample(&r, n, k, out), 0);
                for (size_t j = 0; j < k; j++) {
                    size_t want = (size_t)next_u64(&p);
                    cr_assert_eq(out[j], want,
                                 "%s:%d: sample(%zu, %zu) rep %zu [%zu] seed %" PRId64
                                 ": %zu != CPython's %zu",
                                 CASES, lineno, n, k, i, j, seed, out[j], want);
                }
            }
            free(out);
            *(alg[0] == 's' ? &n_set : &n_pool) += 1;
        }
    }
    fclose(f);
    /* the fixture exercises every path */
    cr_assert(n_bits > 0 && n_below > 0 && n_set > 0 && n_pool > 0, "%d %d %d %d", n_bits, n_below,
              n_set, n_pool);
}

Test(pyrandom, refuses_k_over_n) {
    pyrandom r;
    size_t   out[4];
    pyr_seed(&r, 1234);
    cr_assert_eq(pyr_sample(&r, 3, 4, out), -1);
}

/* A known value independent of the fixture: random.Random(1234).getrandbits(32). */
Test(pyrandom, seed_1234_first_word) {
    pyrandom r;
    pyr_seed(&r, 1234);
    cr_assert_eq(pyr_u32(&r), 4150886329u);
}

/* ---- `assay eval --num-fewshot 3` against lm-eval's --log_samples (K = 3, seed 1234):
 * tests/fixtures/lmeval/fewshot/, written by tools/make_lmeval_fewshot_reference.py ---- */

#define FS_DIR "tests/fixtures/lmeval/fewshot"
#define FS_MODEL "tests/fixtures/models/llama"

static cJSON *read_jsonl_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    cJSON      *arr = cJSON_CreateArray();
    static char line[1 << 20];
    *n = 0;
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        cr_assert(o, "%s:%zu: not JSON", path, *n + 1);
        cJSON_AddItemToArray(arr, o);
        (*n)++;
    }
    fclose(f);
    return arr;
}

/* assay's samples row -> its (context, continuation) pairs, in choice order */
static const cJSON *pair(const cJSON *row, int ch, int which) {
    char key[32];
    snprintf(key, sizeof key, "gen_args_%d", ch);
    const cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(row, "arguments"), key);
    return a ? cJSON_GetObjectItem(a, which ? "arg_1" : "arg_0") : NULL;
}

/* Runs eval on the fixture data; returns the number of docs compared, asserting every context
 * and continuation equals lm-eval's byte for byte (want_equal) or that some context differs. */
static size_t compare_with_lmeval(const char *task, const char *extra, int want_equal) {
    char out[64], path[300];
    test_tmpdir(out, sizeof out);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " FS_MODEL " --tasks %s --data " FS_DIR
                        "/data --num-fewshot 3 --output-path %s --log-samples %s",
                        task, out, extra);
    cr_assert_eq(rc, 0, "eval %s: %s", task, o);
    free(o);
    size_t n_ref, n_got, differ = 0;
    snprintf(path, sizeof path, FS_DIR "/llama/samples_%s.jsonl", task);
    cJSON *ref = read_jsonl_all(path, &n_ref);
    snprintf(path, sizeof path, "%s/samples_%s.jsonl", out, task);
    cJSON *got = read_jsonl_all(path, &n_got);
    cr_assert(n_got > 0 && n_got <= n_ref, "%s: %zu rows, lm-eval %zu", task, n_got, n_ref);
    for (size_t d = 0; d < n_got; d++) {
        const cJSON *r = cJSON_GetArrayItem(ref, (int)d), *g = cJSON_GetArrayItem(got, (int)d);
        const cJSON *args = cJSON_GetObjectItem(r, "arguments");
        const cJSON *lls  = cJSON_GetObjectItem(r, "ll");
        cr_assert_eq(cJSON_GetObjectItem(g, "doc_id")->valueint, (int)d);
        for (int ch = 0; ch < cJSON_GetArraySize(args); ch++) {
            const cJSON *ra  = cJSON_GetArrayItem(args, ch);
            const char  *rc0 = cJSON_GetArrayItem(ra, 0)->valuestring;
            const char  *rc1 = cJSON_GetArrayItem(ra, 1)->valuestring;
            const cJSON *gc0 = pair(g, ch, 0), *gc1 = pair(g, ch, 1);
            cr_assert(gc0 && gc1, "%s doc %zu: no choice %d", task, d, ch);
            if (!want_equal) {
                differ += strcmp(rc0, gc0->valuestring) != 0;
                continue;
            }
            cr_assert_str_eq(gc0->valuestring, rc0, "%s doc %zu choice %d context", task, d, ch);
            cr_assert_str_eq(gc1->valuestring, rc1, "%s doc %zu choice %d continuation", task, d,
                             ch);
            /* the tolerance: lm-eval's float32 softmax drifts ~1e-4 */
            const cJSON *gl = cJSON_GetArrayItem(
                cJSON_GetArrayItem(cJSON_GetObjectItem(g, "filtered_resps"), ch), 0);
            cr_assert(cJSON_IsNumber(gl), "%s doc %zu: no log-likelihood %d", task, d, ch);
            cr_expect(fabs(gl->valuedouble - cJSON_GetArrayItem(lls, ch)->valuedouble) < 1e-3,
                      "%s doc %zu choice %d: ll %.6f vs lm-eval %.6f", task, d, ch, gl->valuedouble,
                      cJSON_GetArrayItem(lls, ch)->valuedouble);
        }
    }
    if (!want_equal)
        cr_assert(differ > 0, "%s: another seed rendered lm-eval's seed-1234 contexts", task);
    cJSON_Delete(ref);
    cJSON_Delete(got);
    return n_got;
}

Test(fewshot, hellaswag_contexts_equal_lm_evals) { compare_with_lmeval("hellaswag", "", 1); }
Test(fewshot, arc_easy_contexts_equal_lm_evals) { compare_with_lmeval("arc_easy", "", 1); }
Test(fewshot, piqa_boolq_openbookqa_contexts_equal_lm_evals) {
    compare_with_lmeval("piqa", "", 1);
    compare_with_lmeval("boolq", "", 1);
    compare_with_lmeval("openbookqa", "", 1);
}

/* winogrande: each example is the gold option's partial context + " " + the shared target, and
 * both per-choice contexts get the examples (lm-eval's multiple-input rule). */
Test(fewshot, winogrande_contexts_equal_lm_evals) { compare_with_lmeval("winogrande", "", 1); }

/* lambada_openai: examples drawn from the test split itself (the document may be its own example)
 * and written with lm-eval's doubled space before the answer word. */
Test(fewshot, lambada_contexts_equal_lm_evals) { compare_with_lmeval("lambada_openai", "", 1); }

/* truthfulqa: lm-eval's config fixes num_fewshot 0 and ignores --num_fewshot; so does assay, with a
 * note, and results.json says 0 shots. */
Test(fewshot, truthfulqa_stays_zero_shot_as_lm_eval_does) {
    compare_with_lmeval("truthfulqa_mc1", "", 1);
    char out[64], path[128], *o = NULL;
    test_tmpdir(out, sizeof out);
    int rc = test_run(&o,
                      "eval " FS_MODEL " --tasks truthfulqa_mc1 --data " FS_DIR
                      "/data --num-fewshot 3 --limit 2 --output-path %s",
                      out);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect(strstr(o, "--num-fewshot 3 ignored, as lm-eval does"), "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r = test_read_json(path);
    cr_assert(r);
    const cJSON *n = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "n-shot"), "truthfulqa_mc1");
    cr_expect(cJSON_IsNumber(n) && n->valueint == 0, "n-shot truthfulqa_mc1");
    cJSON_Delete(r);
}

/* The sampler runs over documents in order: a --limit prefix renders as the full run did. */
Test(fewshot, a_limit_prefix_renders_the_same_contexts) {
    cr_assert_eq(compare_with_lmeval("hellaswag", "--limit 5", 1), 5);
}

/* The seed matters (the equality above is not an accident of the data). */
Test(fewshot, another_seed_draws_other_examples) {
    compare_with_lmeval("arc_easy", "--seed 1235", 0);
    compare_with_lmeval("hellaswag", "--seed 1", 0);
}

Test(fewshot, missing_train_split_and_unsupported_tasks_exit_2) {
    char dir[64], cmd[300], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/arc_easy && cp " FS_DIR "/data/arc_easy/test.jsonl %s/arc_easy/", dir,
             dir);
    cr_assert_eq(system(cmd), 0);
    int rc = test_run(&o, "eval " FS_MODEL " --tasks arc_easy --data %s --num-fewshot 3", dir);
    cr_expect_eq(rc, 2);
    cr_expect(o && strstr(o, "arc_easy/train.jsonl does not exist"), "%s", o);
    free(o);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/winogrande && cp " FS_DIR
             "/data/winogrande/validation.jsonl %s/winogrande/",
             dir, dir);
    cr_assert_eq(system(cmd), 0);
    rc = test_run(&o, "eval " FS_MODEL " --tasks winogrande --data %s --num-fewshot 2", dir);
    cr_expect_eq(rc, 2);
    cr_expect(o && strstr(o, "winogrande/train.jsonl does not exist"), "%s", o);
    free(o);
    rc = test_run(&o, "eval " FS_MODEL " --tasks arc_easy --data " FS_DIR "/data --num-fewshot 41");
    cr_expect_eq(rc, 2);
    cr_expect(o && strstr(o, "draws 41 training documents, "), "%s", o);
    free(o);
    rc = test_run(&o, "eval " FS_MODEL " --tasks wikitext --data %s --num-fewshot 1", dir);
    cr_expect_eq(rc, 2);
    cr_expect(o && strstr(o, "not implemented for this task"), "%s", o);
    free(o);
}

/* results.json names the build's commit: `git describe --always --dirty` at build time, or
 * "unknown" outside a git checkout (the Makefile's ASSAY_COMMIT). */
Test(eval_commit, results_json_records_the_build_commit) {
    char out[64], path[128], *o = NULL;
    test_tmpdir(out, sizeof out);
    int rc = test_run(
        &o, "eval " FS_MODEL " --tasks arc_easy --data " FS_DIR "/data --limit 2 --output-path %s",
        out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/results.json", out);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    static char text[1 << 20];
    size_t      len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len]   = '\0';
    cJSON *root = cJSON_Parse(text);
    cr_assert(root, "%s: not JSON", path);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "assay"), "commit");
    cr_assert(cJSON_IsString(c), "assay.commit is not a string");
    const char *s   = c->valuestring;
    size_t      hex = strspn(s, "0123456789abcdef");
    cr_expect(!strcmp(s, "unknown") || (hex >= 7 && (s[hex] == '\0' || !strcmp(s + hex, "-dirty"))),
              "assay.commit '%s' is neither a git hash[-dirty] nor 'unknown'", s);
    cJSON_Delete(root);
}

/* ---- bounded memory: requests are built and scored in windows (--window-tokens) ---- */

static double eval_peak_rss(const char *dir, int limit, long long window) {
    char out[64], path[128], *o = NULL;
    test_tmpdir(out, sizeof out);
    int rc = test_run(&o,
                      "eval " FS_MODEL " --tasks hellaswag --data %s --limit %d --threads 1 "
                      "--window-tokens %lld --output-path %s",
                      dir, limit, window, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/results.json", out);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    static char text[1 << 20];
    size_t      len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len]   = '\0';
    cJSON *root = cJSON_Parse(text);
    cr_assert(root);
    const cJSON *p = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "assay"), "cost"), "peak_rss_bytes");
    cr_assert(cJSON_IsNumber(p));
    double v = p->valuedouble;
    cJSON_Delete(root);
    return v;
}

/* Peak RSS at 250 and 1,000 documents: scored in small windows, the growth is the documents'
 * text and a few numbers per request; scored at once (one window holding everything, as before
 * windows), the growth also holds every request's tokens. Measured on this machine: windows of
 * 4,096 tokens grow ~0.9 MB, one window ~4.6 MB; the test asks for less than half. Skipped under
 * AddressSanitizer, whose quarantine keeps freed memory resident. */
Test(eval_memory, windows_bound_the_growth_with_the_number_of_documents, .timeout = 120) {
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("peak RSS is not meaningful under AddressSanitizer");
#endif
    char dir[64], path[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/hellaswag_val_full.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < 1000; i++) {
        fprintf(f, "Activity %d: ", i % 37);
        for (int w = 0; w < 40; w++)
            fprintf(f, "word%d ", (i * 7 + w * 13) % 101);
        fprintf(f, "end.\n%d\n", i % 4);
        for (int e = 0; e < 4; e++) {
            for (int w = 0; w < 12; w++)
                fprintf(f, "w%d ", (i + e * 5 + w * 3) % 89);
            fprintf(f, "stop.\n");
        }
    }
    fclose(f);
    double small0 = eval_peak_rss(dir, 250, 4096), small1 = eval_peak_rss(dir, 1000, 4096);
    double all0 = eval_peak_rss(dir, 250, 1LL << 40), all1 = eval_peak_rss(dir, 1000, 1LL << 40);
    double g_small = small1 - small0, g_all = all1 - all0;
    fprintf(
        stderr,
        "peak RSS growth 250 -> 1000 docs: windows of 4096 tokens %.2f MB, one window %.2f MB\n",
        g_small / 1e6, g_all / 1e6);
    cr_expect(g_all > 1e6, "one window should hold every request's tokens (grew %.0f bytes)",
              g_all);
    cr_expect(g_small < 0.5 * g_all, "windows grew %.0f bytes, one window %.0f", g_small, g_all);
}

/* Windows change what is held at once, not the bits: samples files are byte-identical with one
 * request per window and with everything in one window. */
Test(eval_memory, results_do_not_depend_on_the_window) {
    char out[2][64], cmd[600];
    for (int k = 0; k < 2; k++) {
        test_tmpdir(out[k], sizeof out[k]);
        cr_assert_eq(test_run(NULL,
                              "eval " FS_MODEL " --tasks hellaswag,arc_easy --data " FS_DIR
                              "/data --num-fewshot 3 --log-samples --window-tokens %s "
                              "--output-path %s",
                              k ? "1" : "1000000000", out[k]),
                     0);
    }
    snprintf(cmd, sizeof cmd,
             "cmp %s/samples_hellaswag.jsonl %s/samples_hellaswag.jsonl && cmp "
             "%s/samples_arc_easy.jsonl %s/samples_arc_easy.jsonl",
             out[0], out[1], out[0], out[1]);
    cr_expect_eq(system(cmd), 0, "samples differ between window sizes");
}
