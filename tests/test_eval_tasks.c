/* assay eval task items checked without lm-eval: truthfulqa_mc2's metric and its bad inputs, the
 * MMLU category table (lm-eval's mmlu/default YAML tags), the category groups in results.json,
 * and acc_mutual_info's unconditional requests. The lm-eval comparisons are in
 * tests/test_eval_lmeval.c. */
#include <cJSON.h>
#include <math.h>

#include "harness/tasks/tasks.h"
#include "scoring/metrics.h"
#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

Test(eval_tasks, mc2_is_the_normalized_mass_on_true_answers) {
    /* p = exp(ll) / sum(exp(ll)): ll = log(0.5), log(0.3), log(0.2) -> true {0, 2} has 0.7 */
    double        ll[3] = {log(0.5), log(0.3), log(0.2)};
    unsigned char t[3]  = {1, 0, 1};
    cr_expect(fabs(metric_mc2(ll, t, 3) - 0.7) < 1e-15, "%.17g", metric_mc2(ll, t, 3));
    /* the scale of ll does not matter: shifting every ll keeps the ratio */
    double sh[3] = {ll[0] - 50, ll[1] - 50, ll[2] - 50};
    cr_expect(fabs(metric_mc2(sh, t, 3) - 0.7) < 1e-12);
    /* every exp(ll) underflows (lm-eval: 0 / 0 = NaN): computed from the differences */
    double lo[3] = {ll[0] - 1000, ll[1] - 1000, ll[2] - 1000};
    cr_expect(fabs(metric_mc2(lo, t, 3) - 0.7) < 1e-12, "%.17g", metric_mc2(lo, t, 3));
    unsigned char all[3] = {1, 1, 1};
    cr_expect(fabs(metric_mc2(ll, all, 3) - 1.0) < 1e-15);
}

Test(eval_tasks, mmlu_categories_are_lm_evals_tags) {
    /* lm-eval mmlu/default: 19 stem, 13 humanities, 12 social_sciences, 13 other = 57 subjects */
    static const char *const subjects[] = {
        "abstract_algebra",       "anatomy",           "marketing",       "philosophy",
        "high_school_psychology", "us_foreign_policy", "world_religions", "virology",
        "college_physics"};
    static const char *const cats[] = {
        "stem",       "stem",  "other", "humanities", "social_sciences", "social_sciences",
        "humanities", "other", "stem"};
    for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++) {
        const char *c = mmlu_category(subjects[i]);
        cr_assert(c, "%s has no category", subjects[i]);
        cr_expect_str_eq(c, cats[i], "%s", subjects[i]);
    }
    cr_expect_null(mmlu_category("not_a_subject"));
}

/* two subjects of different categories: mmlu_stem and mmlu_humanities groups, mmlu over both */
Test(eval_tasks, mmlu_results_hold_the_category_groups) {
    char dir[64], path[256];
    test_tmpdir(dir, sizeof dir);
    const char *hdr = "question,choice0,choice1,choice2,choice3,answer\n";
    char        buf[4096];
    snprintf(buf, sizeof buf, "%sWhat is 2+2?,3,4,5,6,1\nWhat is 1+1?,2,3,4,5,0\n1+2?,1,2,3,4,2\n",
             hdr);
    test_write_file(dir, "mmlu/test/college_physics_test.csv", buf);
    test_write_file(dir, "mmlu/dev/college_physics_dev.csv", buf);
    snprintf(buf, sizeof buf, "%sWho wrote it?,a,b,c,d,3\nWhy?,e,f,g,h,1\n", hdr);
    test_write_file(dir, "mmlu/test/philosophy_test.csv", buf);
    test_write_file(dir, "mmlu/dev/philosophy_dev.csv", buf);
    char *o  = NULL;
    int   rc = test_run(&o, "eval " MODEL " --tasks mmlu --data %s --output-path %s/out", dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    cJSON *j = test_read_json(path), *res = cJSON_GetObjectItem(j, "results");
    cJSON *stem = cJSON_GetObjectItem(res, "mmlu_stem"),
          *hum  = cJSON_GetObjectItem(res, "mmlu_humanities");
    cJSON *phys = cJSON_GetObjectItem(res, "mmlu_college_physics");
    cJSON *phil = cJSON_GetObjectItem(res, "mmlu_philosophy"),
          *all  = cJSON_GetObjectItem(res, "mmlu");
    cr_assert(stem && hum && phys && phil && all);
    cr_expect_null(cJSON_GetObjectItem(res, "mmlu_other"), "a category without subjects");
    /* one subject per category: the group is that subject */
    cr_expect_eq(cJSON_GetObjectItem(stem, "acc,none")->valuedouble,
                 cJSON_GetObjectItem(phys, "acc,none")->valuedouble);
    cr_expect_eq(cJSON_GetObjectItem(hum, "acc_stderr,none")->valuedouble,
                 cJSON_GetObjectItem(phil, "acc_stderr,none")->valuedouble);
    /* mmlu: micro-average (3 + 2 questions) */
    double a3 = cJSON_GetObjectItem(phys, "acc,none")->valuedouble,
           a2 = cJSON_GetObjectItem(phil, "acc,none")->valuedouble;
    cr_expect(fabs(cJSON_GetObjectItem(all, "acc,none")->valuedouble - (3 * a3 + 2 * a2) / 5) <
              1e-15);
    cJSON *gs  = cJSON_GetObjectItem(j, "group_subtasks");
    cJSON *top = cJSON_GetObjectItem(gs, "mmlu"), *sg = cJSON_GetObjectItem(gs, "mmlu_stem");
    cr_assert(top && sg);
    cr_expect_eq(cJSON_GetArraySize(top), 2);
    cr_expect_str_eq(cJSON_GetArrayItem(top, 0)->valuestring, "mmlu_stem");
    cr_expect_str_eq(cJSON_GetArrayItem(sg, 0)->valuestring, "mmlu_college_physics");
    cJSON_Delete(j);
}

static void expect_fail(const char *dir, const char *args, const char *needle) {
    char *o  = NULL;
    int   rc = test_run(&o, "eval " MODEL " --data %s %s", dir, args);
    cr_expect_eq(rc, 2, "rc %d for %s: %s", rc, needle, o);
    cr_expect(o && strstr(o, needle), "expected '%s' in: %s", needle, o);
    free(o);
}

Test(eval_tasks, truthfulqa_mc2_renders_and_refuses_bad_rows) {
    char dir[64], path[256];
    test_tmpdir(dir, sizeof dir);
    test_write_file(
        dir, "truthfulqa_mc2/validation.jsonl",
        "{\"question\": \"Is the sky blue?\", \"mc2_targets\": {\"choices\": [\"Yes\", \"It is "
        "blue\", \"No\"], \"labels\": [1, 1, 0]}}\n");
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --tasks truthfulqa_mc2 --data %s --output-path %s/out "
                          "--log-samples",
                        dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/out/samples_truthfulqa_mc2.jsonl", dir);
    cJSON      *s   = test_read_json(path);
    cJSON      *g0  = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "arguments"), "gen_args_0");
    const char *ctx = cJSON_GetObjectItem(g0, "arg_0")->valuestring;
    cr_expect(!strncmp(ctx, truthfulqa_prompt, strlen(truthfulqa_prompt)), "%s", ctx);
    cr_expect_str_eq(ctx + strlen(truthfulqa_prompt), "Is the sky blue?\nA:");
    cr_expect_str_eq(cJSON_GetObjectItem(g0, "arg_1")->valuestring, " Yes");
    double ll[3];
    for (int c = 0; c < 3; c++)
        ll[c] =
            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "filtered_resps"), c), 0)
                ->valuedouble;
    double want = (exp(ll[0]) + exp(ll[1])) / (exp(ll[0]) + exp(ll[1]) + exp(ll[2]));
    cr_expect(fabs(cJSON_GetObjectItem(s, "acc")->valuedouble - want) < 1e-12);
    cJSON_Delete(s);

    test_write_file(dir, "truthfulqa_mc2/validation.jsonl", "{\"question\": \"q\"}\n");
    expect_fail(dir, "--tasks truthfulqa_mc2", "validation.jsonl:1: missing field 'mc2_targets'");
    test_write_file(
        dir, "truthfulqa_mc2/validation.jsonl",
        "{\"question\": \"q\", \"mc2_targets\": {\"choices\": [\"a\", \"b\"], \"labels\": [1]}}\n");
    expect_fail(dir, "--tasks truthfulqa_mc2", "validation.jsonl:1: mc2_targets.labels must be");
    test_write_file(
        dir, "truthfulqa_mc2/validation.jsonl",
        "{\"question\": \"q\", \"mc2_targets\": {\"choices\": [\"a\", \"b\"], \"labels\": [0, "
        "0]}}\n");
    expect_fail(dir, "--tasks truthfulqa_mc2", "validation.jsonl:1: mc2_targets.labels has no 1");
    test_write_file(
        dir, "truthfulqa_mc2/validation.jsonl",
        "{\"question\": \"q\", \"mc2_targets\": {\"choices\": [\"a\", \"b\"], \"labels\": [1, "
        "2]}}\n");
    expect_fail(dir, "--tasks truthfulqa_mc2", "mc2_targets.labels[1] is not 0 or 1");
}

Test(eval_tasks, acc_mutual_info_adds_unconditional_requests) {
    char dir[64], path[256];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "t.jsonl",
                    "{\"q\": \"Sky?\", \"a\": \"blue\", \"b\": \"green\", \"y\": 0}\n");
    test_write_file(
        dir, "t.json",
        "{\"task\": \"mi\", \"data\": \"t.jsonl\", \"context\": \"Q: {q}\\nA:\", \"choices\": "
        "[\"{a}\", \"{b}\"], \"gold_index\": \"y\", \"metrics\": [\"acc\", \"acc_mutual_info\"]}");
    char *o  = NULL;
    int   rc = test_run(&o,
                        "eval " MODEL " --task-file %s/t.json --data %s --output-path %s/out "
                          "--log-samples",
                        dir, dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(path, sizeof path, "%s/out/samples_mi.jsonl", dir);
    cJSON *s    = test_read_json(path);
    cJSON *args = cJSON_GetObjectItem(s, "arguments");
    cr_assert_eq(cJSON_GetArraySize(args), 4, "2 conditional + 2 unconditional requests");
    cJSON *u = cJSON_GetObjectItem(args, "gen_args_3");
    cr_expect_str_eq(cJSON_GetObjectItem(u, "arg_0")->valuestring, "");
    cr_expect_str_eq(cJSON_GetObjectItem(u, "arg_1")->valuestring, " green");
    double ll[4];
    for (int c = 0; c < 4; c++)
        ll[c] =
            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "filtered_resps"), c), 0)
                ->valuedouble;
    int pm = (ll[1] - ll[3] > ll[0] - ll[2]) ? 1 : 0;
    cr_expect_eq(cJSON_GetObjectItem(s, "acc_mutual_info")->valuedouble, pm == 0);
    cJSON_Delete(s);
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    cJSON *j = test_read_json(path);
    cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "results"), "mi"), "acc_mutual_info,none")));
    cJSON_Delete(j);
    /* an unknown metric names the known ones */
    test_write_file(
        dir, "t.json",
        "{\"task\": \"mi\", \"data\": \"t.jsonl\", \"context\": \"{q}\", \"choices\": [\"{a}\"], "
        "\"gold_index\": 0, \"metrics\": [\"acc_mi\"]}");
    char extra[200];
    snprintf(extra, sizeof extra, "--task-file %s/t.json", dir);
    expect_fail(dir, extra, "(known: acc, acc_norm, acc_mutual_info)");
}

Test(eval_tasks, wikitext_detokenizer_follows_lm_eval) {
    static const char *const cases[][2] = {
        {"a @-@ b @,@ c @.@ d", "a-b,c.d"},
        {"x : y ; z . w ! v ? u , t", "x: y; z. w! v? u, t"},
        {"( a b ) [ c ] { d } \" e \" ' f '", "(a b) [c] {d} \"e\" 'f'"},
        {"( never closed", "( never closed"},
        {" = = = Title = = = \n", " === Title ===\n"}, /* " \n" -> "\n" last */
        {"it is 5 \xC2\xB0 C", "it is 5\xC2\xB0"
                               "C"},
        {"line \n next", "line\nnext"},
        {"the N th and John 's", "the 1 th and John's"},
        {"dogs ' bones", "dogs' bones"},
        {"a /' 7/ b", "a /'[0-9]/ b"}};
    tbuf out = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(wikitext_detokenize(&out, cases[i][0], strlen(cases[i][0])), 0);
        cr_expect_str_eq(out.s, cases[i][1], "case %zu", i);
    }
    tbuf_free(&out);
}

Test(eval_tasks, wikitext_bad_rows_name_the_line) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "wikitext/test.jsonl",
                    "{\"page\": \" = A = \\n text \\n\"}\n{\"text\": \"x\"}\n");
    expect_fail(dir, "--tasks wikitext", "wikitext/test.jsonl:2");
    test_write_file(dir, "wikitext/test.jsonl", "{\"page\": \"\"}\n");
    expect_fail(dir, "--tasks wikitext", "test.jsonl:1: empty \"page\"");
    expect_fail(dir, "--tasks wikitext --num-fewshot 2",
                "--num-fewshot 2 is not implemented for this task");
}
