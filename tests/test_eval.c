/* assay eval: task rendering (lm-eval's prompts), metrics and their stderr, the CSV reader, the
 * pipeline's sharing, results.json / samples files, and every bad input the issue lists. */
#include <cJSON.h>
#include <math.h>
#include <sys/stat.h>

#include "core/sha256.h"
#include "harness/csv.h"
#include "harness/pipeline.h"
#include "harness/tasks/tasks.h"
#include "runtime/model.h"
#include "scoring/metrics.h"
#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s                      = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = '\0';
    fclose(f);
    return s;
}

/* The first line of a samples file as JSON. */
static cJSON *first_sample(const char *path) {
    char *s = read_text(path);
    cr_assert(s, "%s missing", path);
    char *nl = strchr(s, '\n');
    if (nl)
        *nl = '\0';
    cJSON *j = cJSON_Parse(s);
    free(s);
    cr_assert(j, "%s: first line is not JSON", path);
    return j;
}

static const char *arg0(cJSON *sample, int choice) {
    char key[32];
    snprintf(key, sizeof key, "gen_args_%d", choice);
    cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(sample, "arguments"), key);
    return cJSON_GetStringValue(cJSON_GetObjectItem(a, "arg_0"));
}
static const char *arg1(cJSON *sample, int choice) {
    char key[32];
    snprintf(key, sizeof key, "gen_args_%d", choice);
    cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(sample, "arguments"), key);
    return cJSON_GetStringValue(cJSON_GetObjectItem(a, "arg_1"));
}

/* ---- pure pieces ------------------------------------------------------------------------ */

Test(eval_text, hellaswag_preprocess_follows_lm_eval_utils) {
    tbuf b = {0};
    /* strip, " [title]" -> ". ", "[...]" dropped, then "  " -> " " in one pass (3 spaces -> 2) */
    const char *in = "  How to cook [title] Boil water [step] now.   Then  eat. \n";
    cr_assert_eq(hellaswag_preprocess(&b, in, strlen(in)), 0);
    cr_expect_str_eq(b.s, "How to cook. Boil water now.  Then eat."); /* as Python */
    /* a bracket closed only on the next line is not a match ('.' excludes newline) */
    const char *in2 = "a [b\nc] d";
    cr_assert_eq(hellaswag_preprocess(&b, in2, strlen(in2)), 0);
    cr_expect_str_eq(b.s, "a [b\nc] d");
    tbuf_free(&b);
}

Test(eval_text, capitalize_is_pythons) {
    tbuf b = {0};
    cr_assert_eq(py_capitalize(&b, "the IPhone IS", 13), 0);
    cr_expect_str_eq(b.s, "The iphone is"); /* str.capitalize lower-cases the rest */
    b.n = 0;
    cr_assert_eq(py_capitalize(&b, "\xc3\xa9t\xc3\x89", 5), 0); /* "étÉ" -> "Été" */
    cr_expect_str_eq(b.s, "\xc3\x89t\xc3\xa9");
    tbuf_free(&b);
    size_t off, len;
    py_strip(" \t\xe2\x80\x83x y\n", 9, &off, &len); /* U+2003 is Python whitespace */
    cr_expect_eq(off, 5);
    cr_expect_eq(len, 3);
}

Test(eval_metrics, argmax_ties_go_to_the_first_choice) {
    double v[4] = {-2, -1, -1, -3};
    cr_expect_eq(metric_argmax(v, 4), 1);
    /* acc_norm divides by characters: -4/8 beats -1/1 */
    double ll[2] = {-1, -4};
    size_t ch[2] = {1, 8};
    cr_expect_eq(metric_argmax_norm(ll, ch, 2), 1);
    double tie[2] = {-2, -4};
    size_t tc[2]  = {2, 4};
    cr_expect_eq(metric_argmax_norm(tie, tc, 2), 0);
    cr_expect_eq(metric_chars("h\xc3\xa9llo", 6), 5);
}

Test(eval_metrics, stderr_is_lm_evals) {
    /* [1,0,1,0]: sample variance 1/3, stderr sqrt(1/3)/2 */
    double x[4] = {1, 0, 1, 0};
    cr_expect_float_eq(metric_mean(x, 4), 0.5, 1e-15);
    cr_expect_float_eq(metric_mean_stderr(x, 4), sqrt(1.0 / 3.0) / 2.0, 1e-15);
    cr_expect(isnan(metric_mean_stderr(x, 1)));
    /* pooled_sample_stderr by hand: ((3*.2^2*4) + (1*.5^2*2)) / (6 - 2) / 6 */
    double se[2] = {0.2, 0.5};
    size_t n[2]  = {4, 2};
    cr_expect_float_eq(metric_pooled_stderr(se, n, 2), sqrt((0.48 + 0.5) / 4.0 / 6.0), 1e-15);
}

Test(eval_sha256, matches_fips_vectors) {
    sha256_ctx c;
    char       hex[65];
    sha256_init(&c);
    sha256_update(&c, "abc", 3);
    sha256_hex(&c, hex);
    cr_expect_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_init(&c);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_update(&c, m, strlen(m));
    sha256_hex(&c, hex);
    cr_expect_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(eval_csv, quoted_fields_and_errors_name_file_and_line) {
    char dir[64], path[200];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "ok.csv",
                    "a,b,c\n\"x, y\",\"he said \"\"hi\"\"\",\"two\nlines\"\r\n3,,z\n");
    snprintf(path, sizeof path, "%s/ok.csv", dir);
    csv_table   t   = {0};
    assay_error err = {0};
    cr_assert_eq(csv_read(path, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(t.n, 3);
    cr_expect_str_eq(t.rows[1].f[0], "x, y");
    cr_expect_str_eq(t.rows[1].f[1], "he said \"hi\"");
    cr_expect_str_eq(t.rows[1].f[2], "two\nlines");
    cr_expect_eq(t.rows[2].line, 4);
    cr_expect_str_eq(t.rows[2].f[1], "");
    csv_free(&t);
    test_write_file(dir, "open.csv", "a,b\n1,2\n3,\"never closed\n");
    snprintf(path, sizeof path, "%s/open.csv", dir);
    cr_expect_neq(csv_read(path, &t, &err), 0);
    cr_expect(strstr(err.msg, "open.csv:3: a quoted field is not closed"), "%s", err.msg);
    test_write_file(dir, "short.csv", "a,b\n1,2\n3\n");
    snprintf(path, sizeof path, "%s/short.csv", dir);
    cr_expect_neq(csv_read(path, &t, &err), 0);
    cr_expect(strstr(err.msg, "short.csv:3: 1 fields, the header has 2"), "%s", err.msg);
}

/* ---- the pipeline ----------------------------------------------------------------------- */

Test(eval_pipeline, shared_and_duplicate_requests_equal_plain_scoring_bitwise) {
    assay_error err = {0};
    model      *m   = model_load(MODEL, NULL, &err);
    cr_assert(m, "%s", err.msg);
    /* two requests share a context, one is a duplicate of another, one stands alone */
    int32_t      a[] = {1, 5, 6, 7, 8}, b[] = {1, 5, 6, 7, 9, 10}, c[] = {1, 11, 12, 13};
    pipe_request r[4]   = {{a, 5, 4}, {b, 6, 4}, {a, 5, 4}, {c, 4, 2}};
    score_result out[4] = {{0}}, ref[4] = {{0}};
    pipe_counts  counts = {0};
    cr_assert_eq(pipe_score_loglik(m, r, 4, out, &counts, NULL, &err), 0, "%s", err.msg);
    for (int i = 0; i < 4; i++) {
        score_request sr = {r[i].tokens, (int)r[i].n, (int)r[i].score_from};
        cr_assert_eq(model_score(m, &sr, 1, &ref[i], &err), 0);
        cr_assert_eq(out[i].n_targets, ref[i].n_targets);
        cr_expect_eq(memcmp(out[i].logprob, ref[i].logprob, sizeof(float) * ref[i].n_targets), 0,
                     "request %d differs", i);
        cr_expect_eq(out[i].sum, ref[i].sum);
    }
    /* no sharing: 4 + 5 + 4 + 3 positions; with sharing: context (4) + 0 + 1, then c (3) */
    cr_expect_eq(counts.naive, 16);
    cr_expect_eq(counts.computed, 8);
    cr_expect_eq(counts.scored, 1 + 2 + 1 + 2);
    score_results_free(out, 4);
    score_results_free(ref, 4);
    model_free(m);
}

/* ---- the command ------------------------------------------------------------------------ */

static void make_mmlu(const char *dir) {
    const char *hdr = "question,choice0,choice1,choice2,choice3,answer\n";
    char        buf[2048];
    snprintf(buf, sizeof buf,
             "%s  What is 1+1? ,one,two,three,four,1\nPick a color,red,\"a, b\",c,d,3\n", hdr);
    test_write_file(dir, "mmlu/dev/high_school_math_dev.csv", buf);
    snprintf(buf, sizeof buf,
             "%sWhat is 2+2?,4,5,6,7,0\nWhat is 3+3?,5,6,7,8,1\nHow many legs?,1,2,3,4,3\n", hdr);
    test_write_file(dir, "mmlu/test/high_school_math_test.csv", buf);
    snprintf(buf, sizeof buf, "%sA dev q,w,x,y,z,2\n", hdr);
    test_write_file(dir, "mmlu/dev/anatomy_dev.csv", buf);
    snprintf(buf, sizeof buf, "%sBones?,206,12,3,1,0\nSkin?,organ,bone,hair,none,0\n", hdr);
    test_write_file(dir, "mmlu/test/anatomy_test.csv", buf);
}

Test(cli_eval, mmlu_renders_lm_evals_prompt_and_writes_results_and_samples) {
    char dir[64], out[128], path[256];
    test_tmpdir(dir, sizeof dir);
    make_mmlu(dir);
    snprintf(out, sizeof out, "%s/out", dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks mmlu --data %s --num-fewshot 1 --output-path %s "
                          "--log-samples --price-per-hour 3.6",
                        dir, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/samples_mmlu_high_school_math.jsonl", out);
    cJSON *s = first_sample(path);
    cr_expect_str_eq(arg0(s, 0),
                     "The following are multiple choice questions (with answers) about high "
                     "school math.\n\nWhat is 1+1?\nA. one\nB. two\nC. three\nD. four\nAnswer: "
                     "B\n\nWhat is 2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:");
    cr_expect_str_eq(arg1(s, 2), " C");
    cJSON_Delete(s);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r   = test_read_json(path);
    cJSON *res = cJSON_GetObjectItem(r, "results");
    cr_assert(cJSON_GetObjectItem(res, "mmlu"));
    cr_assert(cJSON_GetObjectItem(res, "mmlu_anatomy"));
    cJSON *hs = cJSON_GetObjectItem(res, "mmlu_high_school_math");
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(hs, "acc,none")));
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(hs, "acc_stderr,none")));
    /* the group is the micro-average over 5 questions */
    double a1 = cJSON_GetObjectItem(hs, "acc,none")->valuedouble;
    double a2 =
        cJSON_GetObjectItem(cJSON_GetObjectItem(res, "mmlu_anatomy"), "acc,none")->valuedouble;
    double g = cJSON_GetObjectItem(cJSON_GetObjectItem(res, "mmlu"), "acc,none")->valuedouble;
    cr_expect_float_eq(g, (a1 * 3 + a2 * 2) / 5, 1e-12);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "n-shot"), "mmlu_anatomy")->valueint,
                 1);
    cJSON *cost = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "assay"), "cost");
    cr_assert(cost);
    double computed = cJSON_GetObjectItem(cost, "tokens_computed")->valuedouble;
    double naive    = cJSON_GetObjectItem(cost, "tokens_no_sharing")->valuedouble;
    cr_expect(computed > 0 && computed < naive / 3, "computed %g, naive %g", computed, naive);
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(cost, "cost_per_run")));
    cr_expect(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "assay"), "hashes"),
                                  "tokenizer_sha256"));
    cJSON_Delete(r);
}

static void make_hellaswag(const char *dir) {
    test_write_file(
        dir, "hellaswag_val_full.txt",
        "Roof shingle removal: A man is sitting on a roof. he\n3\nis using wrap [step] to "
        "wrap skis.\nis ripping level tiles off.\nis holding a rubik's cube.\nstarts "
        "pulling up roofing on a roof.\nClean and jerk: A lady walks to a barbell. "
        "the lady\n0\nswings.\npulls the  barbell.\npulls a rope.\nstands.\n");
    test_write_file(
        dir, "arc_easy/test.jsonl",
        "{\"id\": \"q1\", \"question\": \"Which is a gas?\", \"choices\": {\"text\": "
        "[\"rock\", \"steam\", \"ice\"], \"label\": [\"A\", \"B\", \"C\"]}, \"answerKey\": "
        "\"B\"}\n{\"id\": \"q2\", \"question\": \"Sun is a?\", \"choices\": {\"text\": "
        "[\"star\", \"planet\"], \"label\": [\"1\", \"2\"]}, \"answerKey\": \"1\"}\n");
}

Test(cli_eval, hellaswag_and_arc_render_as_lm_eval) {
    char dir[64], out[128], path[256];
    test_tmpdir(dir, sizeof dir);
    make_hellaswag(dir);
    snprintf(out, sizeof out, "%s/out", dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks hellaswag,arc_easy --data %s --output-path %s "
                          "--log-samples",
                        dir, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/samples_hellaswag.jsonl", out);
    cJSON *s = first_sample(path);
    cr_expect_str_eq(arg0(s, 0), "Roof shingle removal: A man is sitting on a roof. he");
    cr_expect_str_eq(arg1(s, 0), " is using wrap to wrap skis.");
    cr_expect_eq(cJSON_GetObjectItem(s, "target")->valueint, 3);
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(s, "acc_norm")));
    cJSON_Delete(s);
    snprintf(path, sizeof path, "%s/samples_arc_easy.jsonl", out);
    s = first_sample(path);
    cr_expect_str_eq(arg0(s, 1), "Question: Which is a gas?\nAnswer:");
    cr_expect_str_eq(arg1(s, 1), " steam");
    cr_expect_eq(cJSON_GetObjectItem(s, "target")->valueint, 1);
    cJSON_Delete(s);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r = test_read_json(path);
    cJSON *h = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "results"), "hellaswag");
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(h, "acc_norm,none")));
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(h, "acc_norm_stderr,none")));
    cr_expect(strstr(
        cJSON_GetStringValue(cJSON_GetObjectItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(r, "configs"), "hellaswag"), "data_layout")),
        "not capitalized"));
    cJSON_Delete(r);
}

Test(cli_eval, hellaswag_jsonl_capitalizes_ctx_b) {
    char dir[64], out[128], path[256];
    test_tmpdir(dir, sizeof dir);
    test_write_file(
        dir, "hellaswag/validation.jsonl",
        "{\"activity_label\": \"Roof shingle removal\", \"ctx_a\": \"A man is on a roof.\", "
        "\"ctx_b\": \"he IS\", \"endings\": [\"a [title] b\", \"c\"], \"label\": \"1\"}\n");
    snprintf(out, sizeof out, "%s/out", dir);
    char *o  = NULL;
    int   rc = test_run(
          &o, "eval " MODEL " --tasks hellaswag --data %s --output-path %s --log-samples", dir, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/samples_hellaswag.jsonl", out);
    cJSON *s = first_sample(path);
    cr_expect_str_eq(arg0(s, 0), "Roof shingle removal: A man is on a roof. He is");
    cr_expect_str_eq(arg1(s, 0), " a. b");
    cr_expect_eq(cJSON_GetObjectItem(s, "target")->valueint, 1);
    cJSON_Delete(s);
}

/* Samples are bitwise the same whatever the thread count and task order. */
Test(cli_eval, results_do_not_depend_on_threads_or_task_order) {
    char dir[64], o1[128], o2[128], p1[256], p2[256];
    test_tmpdir(dir, sizeof dir);
    make_hellaswag(dir);
    snprintf(o1, sizeof o1, "%s/o1", dir);
    snprintf(o2, sizeof o2, "%s/o2", dir);
    cr_assert_eq(test_run(NULL,
                          "eval " MODEL " --tasks hellaswag,arc_easy --data %s --threads 1 "
                          "--output-path %s --log-samples",
                          dir, o1),
                 0);
    cr_assert_eq(test_run(NULL,
                          "eval " MODEL " --tasks arc_easy,hellaswag --data %s --threads 2 "
                          "--output-path %s --log-samples",
                          dir, o2),
                 0);
    const char *names[] = {"samples_hellaswag.jsonl", "samples_arc_easy.jsonl"};
    for (int i = 0; i < 2; i++) {
        snprintf(p1, sizeof p1, "%s/%s", o1, names[i]);
        snprintf(p2, sizeof p2, "%s/%s", o2, names[i]);
        char *a = read_text(p1), *b = read_text(p2);
        cr_assert(a && b);
        cr_expect_str_eq(a, b, "%s differs", names[i]);
        free(a);
        free(b);
    }
}

Test(cli_eval, a_context_longer_than_the_window_is_cut_and_counted) {
    char dir[64], out[128], path[256];
    test_tmpdir(dir, sizeof dir);
    make_hellaswag(dir);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert_eq(test_run(NULL,
                          "eval " MODEL " --tasks arc_easy --data %s --ctx 8 --output-path %s", dir,
                          out),
                 0);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r = test_read_json(path);
    cJSON *t = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "assay"), "truncated_requests");
    cr_expect(cJSON_IsNumber(t) && t->valueint == 5, "truncated_requests %d", t ? t->valueint : -1);
    cJSON_Delete(r);
}

/* Each bad input: exit 2 and a message naming the place. */
static void expect_fail(const char *dir, const char *tasks, const char *extra, const char *needle) {
    char *o  = NULL;
    int   rc = test_run(&o, "eval " MODEL " --tasks %s --data %s %s", tasks, dir, extra);
    cr_expect_eq(rc, 2, "rc %d for %s: %s", rc, needle, o);
    cr_expect(o && strstr(o, needle), "expected '%s' in: %s", needle, o);
    free(o);
}

Test(cli_eval, bad_inputs_exit_2_naming_the_problem) {
    char dir[64], file[128], extra[256];
    test_tmpdir(dir, sizeof dir);
    expect_fail(dir, "mmlu,nope", "",
                "unknown task 'nope' (known tasks: mmlu, hellaswag, arc_easy");
    /* malformed CSV */
    test_write_file(
        dir, "mmlu/test/x_test.csv",
        "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,0\n\"q,a,b,c,d,1\n");
    expect_fail(dir, "mmlu", "", "x_test.csv:3: a quoted field is not closed");
    test_write_file(dir, "mmlu/test/x_test.csv",
                    "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,7\n");
    expect_fail(dir, "mmlu", "", "x_test.csv:2: gold index 7 is out of range (4 choices)");
    /* malformed JSONL, missing field, gold out of range, empty choice list */
    test_write_file(dir, "arc_easy/test.jsonl", "{\"question\": \"q\"\n");
    expect_fail(dir, "arc_easy", "", "arc_easy/test.jsonl:1");
    test_write_file(
        dir, "arc_easy/test.jsonl",
        "{\"question\": \"q\", \"choices\": {\"text\": [\"a\"], \"label\": [\"A\"]}}\n");
    expect_fail(dir, "arc_easy", "", "'answerKey'");
    test_write_file(
        dir, "arc_easy/test.jsonl",
        "{\"question\": \"q\", \"choices\": {\"text\": [], \"label\": []}, \"answerKey\": "
        "\"A\"}\n");
    expect_fail(dir, "arc_easy", "", "test.jsonl:1: the choice list is empty");
    test_write_file(dir, "hellaswag/validation.jsonl",
                    "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": "
                    "[\"x\", \"y\"], \"label\": \"5\"}\n");
    expect_fail(dir, "hellaswag", "",
                "validation.jsonl:1: gold index 5 is out of range (2 choices)");
    test_write_file(
        dir, "hellaswag/validation.jsonl",
        "{\"activity_label\": \"a\", \"ctx_b\": \"c\", \"endings\": [\"x\"], \"label\": "
        "\"0\"}\n");
    expect_fail(dir, "hellaswag", "", "'ctx_a'");
    test_write_file(dir, "winogrande/validation.jsonl",
                    "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", "
                    "\"answer\": \"1\"}\n");
    expect_fail(dir, "winogrande", "", "validation.jsonl:1: field 'sentence' has no '_' blank");
    test_write_file(dir, "winogrande/validation.jsonl",
                    "{\"sentence\": \"a _ b\", \"option1\": \"a\", \"option2\": \"b\", "
                    "\"answer\": \"3\"}\n");
    expect_fail(dir, "winogrande", "", "field 'answer' is '3', expected \"1\" or \"2\"");
    /* the six-line layout cut short */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/six", dir);
    test_write_file(sub, "hellaswag_val_full.txt", "ctx\n0\na\nb\n");
    expect_fail(sub, "hellaswag", "", "hellaswag_val_full.txt:4: the file ends inside an item");
    /* an output directory that cannot be written is found before any work: the data here is
     * broken too, yet the message is about the output */
    snprintf(file, sizeof file, "%s/plainfile", dir);
    test_write_file(dir, "plainfile", "x");
    snprintf(extra, sizeof extra, "--output-path %s/sub", file);
    expect_fail(dir, "hellaswag", extra, "--output-path");
    snprintf(extra, sizeof extra, "--output-path %s", file);
    expect_fail(dir, "hellaswag", extra, "exists and is not a directory");
}

Test(eval_pipeline, contexts_with_a_long_common_start_share_one_pass_bitwise) {
    assay_error err = {0};
    model      *m   = model_load(MODEL, NULL, &err);
    cr_assert(m, "%s", err.msg);
    /* 3 questions after a 40-token shared block, 4 one-token choices each (MMLU's shape) */
    enum { P = 40, Q = 5, NQ = 3, NC = 4 };
    int32_t      tok[NQ * NC][P + Q + 1];
    pipe_request r[NQ * NC];
    for (int q = 0; q < NQ; q++)
        for (int c = 0; c < NC; c++) {
            int32_t *t = tok[q * NC + c];
            for (int i = 0; i < P; i++)
                t[i] = 3 + (i * 7) % 300;
            for (int i = 0; i < Q; i++)
                t[P + i] = 10 + q * 20 + i;
            t[P + Q]      = 200 + c;
            r[q * NC + c] = (pipe_request){t, P + Q + 1, P + Q};
        }
    score_result out[NQ * NC] = {{0}};
    pipe_counts  counts       = {0};
    cr_assert_eq(pipe_score_loglik(m, r, NQ * NC, out, &counts, NULL, &err), 0, "%s", err.msg);
    /* one pass over the block, each question's own context once (its last token is fed with
     * each choice, the row that predicts the choice) */
    cr_expect_eq(counts.computed, P + NQ * (Q - 1) + NQ * NC, "computed %lld",
                 (long long)counts.computed);
    for (int i = 0; i < NQ * NC; i++) {
        score_request sr  = {r[i].tokens, (int)r[i].n, (int)r[i].score_from};
        score_result  ref = {0};
        cr_assert_eq(model_score(m, &sr, 1, &ref, &err), 0);
        cr_expect_eq(memcmp(out[i].logprob, ref.logprob, sizeof(float)), 0, "request %d", i);
        score_results_free(&ref, 1);
    }
    score_results_free(out, NQ * NC);
    model_free(m);
}

Test(cli_eval, mmlu_reads_the_cais_jsonl_layout_like_the_csv_one) {
    char dir[64], out[128], path[256];
    test_tmpdir(dir, sizeof dir);
    test_write_file(
        dir, "mmlu/test.jsonl",
        "{\"question\": \"Bones?\", \"subject\": \"anatomy\", \"choices\": [\"206\", \"12\", "
        "\"3\", \"1\"], \"answer\": 0}\n{\"question\": \" 2+2? \", \"subject\": "
        "\"abstract_algebra\", \"choices\": [\"4\", \"5\", \"6\", \"7\"], \"answer\": 0}\n");
    test_write_file(
        dir, "mmlu/dev.jsonl",
        "{\"question\": \"1+1?\", \"subject\": \"abstract_algebra\", \"choices\": [\"1\", "
        "\"2\", \"3\", \"4\"], \"answer\": 1}\n{\"question\": \"Skin?\", \"subject\": "
        "\"anatomy\", \"choices\": [\"organ\", \"bone\", \"hair\", \"none\"], \"answer\": "
        "0}\n");
    snprintf(out, sizeof out, "%s/out", dir);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks mmlu --data %s --num-fewshot 1 --output-path %s "
                          "--log-samples",
                        dir, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/samples_mmlu_abstract_algebra.jsonl", out);
    cJSON *s = first_sample(path);
    cr_expect_str_eq(arg0(s, 0), "The following are multiple choice questions (with answers) about "
                                 "abstract algebra.\n\n1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: "
                                 "B\n\n2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:");
    cJSON_Delete(s);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r = test_read_json(path);
    /* both subjects are stem: lm-eval's mmlu -> mmlu_stem -> subjects */
    cJSON *gs = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "group_subtasks"), "mmlu_stem");
    cr_assert_eq(cJSON_GetArraySize(gs), 2);
    cr_expect_str_eq(cJSON_GetArrayItem(gs, 0)->valuestring, "mmlu_abstract_algebra");
    cJSON_Delete(r);
}

Test(cli_eval, a_user_task_spec_renders_fields_and_finds_gold_by_text) {
    char dir[64], out[128], path[256], spec[128];
    test_tmpdir(dir, sizeof dir);
    test_write_file(
        dir, "mine.jsonl",
        "{\"q\": \"Sky color?\", \"n\": 3, \"opts\": [\"blue\", \"green\"], \"ans\": "
        "\"green\"}\n{\"q\": \"Grass?\", \"n\": 4, \"opts\": [\"red\", \"green\"], \"ans\": "
        "\"green\"}\n");
    test_write_file(
        dir, "spec.json",
        "{\"task\": \"colors\", \"data\": \"mine.jsonl\", \"context\": \"Q{n} {{x}}: "
        "{q}\\nA:\", \"choices\": \"opts\", \"gold_text\": \"ans\", \"metrics\": [\"acc\", "
        "\"acc_norm\"]}");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(spec, sizeof spec, "%s/spec.json", dir);
    char *o = NULL;
    int rc  = test_run(&o, "eval " MODEL " --task-file %s --data %s --output-path %s --log-samples",
                       spec, dir, out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/samples_colors.jsonl", out);
    cJSON *s = first_sample(path);
    cr_expect_str_eq(arg0(s, 0), "Q3 {x}: Sky color?\nA:");
    cr_expect_str_eq(arg1(s, 1), " green");
    cr_expect_eq(cJSON_GetObjectItem(s, "target")->valueint, 1);
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(s, "acc_norm")));
    cJSON_Delete(s);
    /* bad specs and rows name what is wrong */
    test_write_file(dir, "spec.json",
                    "{\"task\": \"colors\", \"data\": \"mine.jsonl\", \"context\": "
                    "\"{missing}\", \"choices\": \"opts\", \"gold_text\": \"ans\"}");
    rc = test_run(&o, "eval " MODEL " --task-file %s --data %s", spec, dir);
    cr_expect_eq(rc, 2);
    cr_expect(
        strstr(o, "mine.jsonl:1: field 'missing' (named in the spec's \"context\") is missing"),
        "%s", o);
    free(o);
    test_write_file(dir, "spec.json",
                    "{\"task\": \"colors\", \"data\": \"mine.jsonl\", \"context\": "
                    "\"{q}\", \"choices\": \"opts\"}");
    rc = test_run(&o, "eval " MODEL " --task-file %s --data %s", spec, dir);
    cr_expect_eq(rc, 2);
    cr_expect(strstr(o, "the spec needs a string \"gold_index, gold_text or gold_label\""), "%s",
              o);
    free(o);
    test_write_file(dir, "mine.jsonl", "{\"q\": \"x\", \"opts\": [], \"ans\": \"a\"}\n");
    test_write_file(dir, "spec.json",
                    "{\"task\": \"colors\", \"data\": \"mine.jsonl\", \"context\": "
                    "\"{q}\", \"choices\": \"opts\", \"gold_index\": \"ans\"}");
    rc = test_run(&o, "eval " MODEL " --task-file %s --data %s", spec, dir);
    cr_expect_eq(rc, 2);
    cr_expect(strstr(o, "mine.jsonl:1: the choice list is empty"), "%s", o);
    free(o);
}

/* The layouts ../shared/data holds: all 57 MMLU subjects (one question each) and the first 10
 * HellaSwag items of the llama.cpp file. */
Test(cli_eval, reads_the_shared_mmlu_csvs_and_hellaswag_six_line_file) {
    SHARED_OR_SKIP(mmlu, "data/mmlu/test/anatomy_test.csv");
    SHARED_OR_SKIP(hs, "data/hellaswag_val_full.txt.bz2");
    char dir[64], cmd[2400], path[256];
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "bzcat %s | head -n 60 > %s/hellaswag_val_full.txt && ln -s "
             "\"$(cd ../shared/data && pwd)/mmlu\" %s/mmlu",
             hs, dir, dir);
    cr_assert_eq(system(cmd), 0);
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks mmlu,hellaswag --data %s --limit 1 "
                          "--output-path %s/out",
                        dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    cJSON *r    = test_read_json(path);
    cJSON *gsub = cJSON_GetObjectItem(r, "group_subtasks"); /* mmlu -> 4 categories -> 57 */
    cJSON *gs   = cJSON_GetObjectItem(gsub, "mmlu");
    cr_expect_eq(cJSON_GetArraySize(gs), 4);
    int    n_subjects = 0;
    cJSON *cat;
    cJSON_ArrayForEach(cat, gs) n_subjects +=
        cJSON_GetArraySize(cJSON_GetObjectItem(gsub, cat->valuestring));
    cr_expect_eq(n_subjects, 57);
    cJSON *ns = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "n-samples"), "hellaswag");
    cr_expect_eq(cJSON_GetObjectItem(ns, "original")->valueint, 10);
    cr_expect_eq(cJSON_GetObjectItem(ns, "effective")->valueint, 1);
    cJSON *an = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "n-samples"), "mmlu_anatomy");
    cr_expect_eq(cJSON_GetObjectItem(an, "original")->valueint, 135);
    cJSON_Delete(r);
}

/* results.json's "assay" block names the device and the weight format the run used (it said
 * "cpu" / "float32" whatever the run was). */
Test(cli_eval, results_name_the_device_and_weight_format_used) {
    char out[64], path[128], *o = NULL;
    test_tmpdir(out, sizeof out);
    int rc = test_run(&o,
                      "eval " MODEL " --tasks arc_easy --data tests/fixtures/lmeval/fewshot/data "
                      "--limit 2 --weights bf16 --output-path %s",
                      out);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *r = test_read_json(path);
    cr_assert(r);
    const cJSON *as = cJSON_GetObjectItem(r, "assay");
    cr_expect_str_eq(cJSON_GetObjectItem(as, "device")->valuestring, "cpu");
    cr_expect_str_eq(cJSON_GetObjectItem(as, "dtype")->valuestring, "bf16");
    cJSON_Delete(r);
}
