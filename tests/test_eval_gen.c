/* assay eval's generation tasks end to end on the tiny llama fixture: a user generation spec with
 * every filter and metric, each per-sample value and each aggregate recomputed here from the
 * samples file with the scoring functions themselves (so the wiring, not the metric, is under
 * test: tests/test_textmetrics*.c and test_filters*.c prove the metrics against their references);
 * stop strings, the max-new-tokens bound, the system prompt, and bad input. */
#include <cJSON.h>
#include <math.h>

#include "scoring/filters.h"
#include "scoring/textmetrics.h"
#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

static const char *const queries[] = {"two plus two",    "the capital of France", "a red apple",
                                      "seven times six", "the sky at night",      "an old song",
                                      "cats and dogs",   "the number 42"};
#define N_Q 8

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

static void free_lines(cJSON **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(v[i]);
    free(v);
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Writes data.jsonl: one row per query; refs[i] (NULL: "none") as "reference", every third row
 * as the first of two "references"; labels cycle over a, e, o. */
static void write_data(const char *dir, char *const *refs) {
    cJSON *rows = NULL;
    char   path[600];
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < N_Q; i++) {
        rows = cJSON_CreateObject();
        cJSON_AddStringToObject(rows, "query", queries[i]);
        const char *r = refs && refs[i] ? refs[i] : "none";
        if (i % 3 == 2) {
            cJSON *l = cJSON_AddArrayToObject(rows, "references");
            cJSON_AddItemToArray(l, cJSON_CreateString(r)); /* best first: max, not last */
            cJSON_AddItemToArray(l, cJSON_CreateString("another answer"));
        } else {
            cJSON_AddStringToObject(rows, "reference", r);
        }
        cJSON_AddStringToObject(rows, "label", (const char *[]){"a", "e", "o"}[i % 3]);
        char *s = cJSON_PrintUnformatted(rows);
        fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(rows);
    }
    fclose(f);
}

static const char full_spec[] =
    "{\"task\": \"mygen\", \"output_type\": \"generate_until\", \"data\": \"data.jsonl\","
    " \"prompt\": \"Q: {query}\\nA:\", \"until\": [\"\\n\\n\"], \"max_gen_toks\": 12,"
    " \"filter_list\": ["
    "  {\"name\": \"raw\", \"filter\": [{\"function\": \"take_first\"}]},"
    "  {\"name\": \"clean\", \"filter\": [{\"function\": \"first_line\"}, {\"function\": "
    "\"strip\"}, {\"function\": \"lowercase\"}]},"
    "  {\"name\": \"num\", \"filter\": [{\"function\": \"regex\", \"regex_pattern\": \"([a-z]+)\","
    " \"group_select\": -1, \"fallback\": \"nothing\"}]},"
    "  {\"name\": \"lab\", \"filter\": [{\"function\": \"label\"}]},"
    "  {\"name\": \"json\", \"filter\": [{\"function\": \"regex\", \"regex_pattern\": "
    "\"(QQQ)\", \"fallback\": \"{\\\"x\\\": \\\"s\\\"}\"}]}],"
    " \"metric_list\": [{\"metric\": \"exact_match\", \"ignore_case\": true}, \"f1\", \"bleu\","
    " \"chrf\", \"rouge1\", \"rouge2\", \"rougeL\", {\"metric\": \"rougeLsum\", \"use_stemmer\": "
    "true}, \"label_accuracy\", \"json_valid\", \"json_schema\", \"length\", \"latency\"],"
    " \"labels\": [\"a\", \"e\", \"o\"], \"schema\": {\"required\": {\"x\": \"number\"}}}";

static cJSON *run_spec(const char *dir, const char *spec, const char *flags, cJSON ***samples,
                       size_t *n) {
    char *log = NULL, out[600];
    test_write_file(dir, "spec.json", spec);
    snprintf(out, sizeof out, "%s/out", dir);
    int rc = test_run(&log,
                      "eval " MODEL " --task-file %s/spec.json --data %s --device cpu "
                      "--output-path %s --log-samples %s",
                      dir, dir, out, flags);
    cr_assert_eq(rc, 0, "assay eval failed (%d): %s", rc, log ? log : "");
    free(log);
    char path[700];
    snprintf(path, sizeof path, "%s/samples_mygen.jsonl", out);
    *samples = read_lines(path, n);
    snprintf(path, sizeof path, "%s/results.json", out);
    cJSON *j = test_read_json(path);
    return j;
}

static const char *resp_of(const cJSON *s) {
    return cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "resps"), 0), 0)
        ->valuestring;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "%s missing or not a number", key);
    return v->valuedouble;
}

/* The references of a sample line ("target": a string or a list). */
static size_t refs_of(const cJSON *s, tm_str *out) {
    const cJSON *t = cJSON_GetObjectItem(s, "target");
    if (cJSON_IsString(t)) {
        out[0] = (tm_str){t->valuestring, strlen(t->valuestring)};
        return 1;
    }
    size_t k = 0;
    for (const cJSON *c = t->child; c && k < 4; c = c->next)
        out[k++] = (tm_str){c->valuestring, strlen(c->valuestring)};
    return k;
}

Test(eval_gen, user_spec_metrics_equal_the_scoring_functions_on_the_samples) {
    char dir[256];
    test_tmpdir(dir, sizeof dir);
    /* pass 1: what the model writes; pass 2: even rows get that text as their reference, so
       exact_match on the raw filter is 1 exactly there */
    cJSON **s1;
    size_t  n1;
    write_data(dir, NULL);
    cJSON_Delete(run_spec(dir, full_spec, "", &s1, &n1));
    cr_assert_eq(n1, N_Q);
    char *refs[N_Q] = {0};
    for (int i = 0; i < N_Q; i += 2)
        refs[i] = strdup(resp_of(s1[i]));
    free_lines(s1, n1);
    write_data(dir, refs);
    cJSON **s;
    size_t  n;
    cJSON  *res = run_spec(dir, full_spec, "", &s, &n);
    cJSON  *r   = cJSON_GetObjectItem(cJSON_GetObjectItem(res, "results"), "mygen");
    cr_assert_eq(n, N_Q);

    const char *const filters[]     = {"raw", "clean", "num", "lab", "json"};
    const char *const labels[]      = {"a", "e", "o"};
    const size_t      lab_len[]     = {1, 1, 1};
    tm_em_opts        em_opts       = {NULL, 0, 1, 0, 0};
    assay_error       err           = {0};
    const char        schema_text[] = "{\"required\": {\"x\": \"number\"}}";
    flt_schema       *schema = flt_schema_parse(schema_text, strlen(schema_text), "test", &err);
    cr_assert(schema, "%s", err.msg);
    int raw_hits = 0;
    for (int fi = 0; fi < 5; fi++) {
        const char *f      = filters[fi];
        double      sum[8] = {0}; /* em, f1, r1, r2, rL, rLsum, label, json */
        tm_str      hyp[N_Q], ref[N_Q * 2];
        size_t      n_refs = 2;
        for (size_t d = 0; d < n; d++) {
            const cJSON *fr = cJSON_GetObjectItem(cJSON_GetObjectItem(s[d], "filtered_resps"), f);
            cr_assert(cJSON_IsString(fr), "doc %zu: no %s answer", d, f);
            tm_str p = {fr->valuestring, strlen(fr->valuestring)};
            tm_str rs[4];
            size_t nr = refs_of(s[d], rs);
            double em = 0, f1 = 0, rg[4] = {0}, x;
            for (size_t k = 0; k < nr; k++) {
                cr_assert_eq(tm_exact_match(p, rs[k], &em_opts, &x, &err), 0);
                em = fmax(em, x);
                cr_assert_eq(tm_squad_f1(p, rs[k], &x), 0);
                f1 = fmax(f1, x);
                struct tm_rouge ro, rs_stem;
                cr_assert_eq(tm_rouge(rs[k], p, 0, &ro), 0);
                cr_assert_eq(tm_rouge(rs[k], p, 1, &rs_stem), 0);
                rg[0] = fmax(rg[0], ro.rouge1.fmeasure);
                rg[1] = fmax(rg[1], ro.rouge2.fmeasure);
                rg[2] = fmax(rg[2], ro.rougeL.fmeasure);
                rg[3] = fmax(rg[3], rs_stem.rougeLsum.fmeasure);
            }
            hyp[d]     = p;
            ref[d]     = rs[0];
            ref[n + d] = rs[nr > 1 ? 1 : 0]; /* a one-reference row repeats it in stream 2 */
            /* after the label filter the answer is a label or UNKNOWN, taken as it is */
            int li = fi == 3
                         ? (p.n == 1 && strchr("aeo", p.s[0]) ? (int)(strchr("aeo", p.s[0]) - "aeo")
                                                              : -1)
                         : flt_extract_label(p.s, p.n, labels, lab_len, 3);
            int gold =
                (int)(strchr("aeo", cJSON_GetObjectItem(s[d], "label")->valuestring[0]) - "aeo");
            flt_json_check jc, js;
            cr_assert_eq(flt_json_check_response(NULL, p.s, p.n, &jc), 0);
            cr_assert_eq(flt_json_check_response(schema, p.s, p.n, &js), 0);
            char key_js[96];
            snprintf(key_js, sizeof key_js, "json_schema,%s", f);
            cr_assert_eq(num(s[d], key_js), js.has_required, "doc %zu %s", d, key_js);
            double      want[8]  = {em, f1, rg[0], rg[1], rg[2], rg[3], li == gold, jc.parses};
            const char *names[8] = {"exact_match", "f1",        "rouge1",         "rouge2",
                                    "rougeL",      "rougeLsum", "label_accuracy", "json_valid"};
            for (int k = 0; k < 8; k++) {
                char key[96];
                snprintf(key, sizeof key, "%s,%s", names[k], f);
                cr_assert_eq(num(s[d], key), want[k], "doc %zu %s: %g, recomputed %g", d, key,
                             num(s[d], key), want[k]);
                sum[k] += want[k];
            }
            if (fi == 0 && d % 2 == 0)
                raw_hits += em == 1.0;
        }
        const char *names[8] = {"exact_match", "f1",        "rouge1",         "rouge2",
                                "rougeL",      "rougeLsum", "label_accuracy", "json_valid"};
        for (int k = 0; k < 8; k++) {
            char key[96];
            snprintf(key, sizeof key, "%s,%s", names[k], f);
            /* a mean of N_Q values, summed in the same order: equal to rounding (1e-12) */
            cr_assert(fabs(num(r, key) - sum[k] / N_Q) < 1e-12, "%s: %g, recomputed %g", key,
                      num(r, key), sum[k] / N_Q);
        }
        tm_bleu b;
        tm_chrf c;
        char    key[96];
        cr_assert_eq(tm_bleu_corpus(hyp, ref, n, n_refs, &b), 0);
        cr_assert_eq(tm_chrf_corpus(hyp, ref, n, n_refs, &c), 0);
        snprintf(key, sizeof key, "bleu,%s", f);
        cr_assert(fabs(num(r, key) - b.score) < 1e-9, "%s: %g vs %g", key, num(r, key), b.score);
        snprintf(key, sizeof key, "chrf,%s", f);
        cr_assert(fabs(num(r, key) - c.score) < 1e-9, "%s: %g vs %g", key, num(r, key), c.score);
        snprintf(key, sizeof key, "bleu_ci95,%s", f);
        cJSON *ci = cJSON_GetObjectItem(r, key);
        cr_assert(cJSON_GetArraySize(ci) == 2 &&
                  cJSON_GetArrayItem(ci, 0)->valuedouble <= cJSON_GetArrayItem(ci, 1)->valuedouble);
        char sig[200], want_sig[200];
        snprintf(key, sizeof key, "bleu_signature,%s", f);
        snprintf(sig, sizeof sig, "%s", cJSON_GetObjectItem(r, key)->valuestring);
        cr_assert_str_eq(sig, tm_bleu_signature(2, want_sig, sizeof want_sig));
        snprintf(key, sizeof key, "classification_report,%s", f);
        cr_assert(cJSON_IsObject(cJSON_GetObjectItem(r, key)), "%s missing", key);
    }
    /* the json filter's fallback parses but its "x" is not the schema's number */
    cr_assert(fabs(num(r, "json_valid,json") - 1) < 1e-12 && num(r, "json_schema,json") == 0);
    /* the even rows' references are the model's own text */
    cr_assert_eq(raw_hits, N_Q / 2);
    cr_assert(fabs(num(r, "exact_match,raw") - 0.5) < 1e-12);
    /* length: characters of the raw generations */
    double chars = 0;
    for (size_t d = 0; d < n; d++) {
        const unsigned char *p = (const unsigned char *)resp_of(s[d]);
        for (; *p; p++)
            chars += (*p & 0xC0) != 0x80;
    }
    cr_assert(fabs(num(r, "response_chars_mean,none") - chars / N_Q) < 1e-9);
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(r, "latency_s_p95,none")));
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(r, "ttft_s_p50,none")));
    free_lines(s, n);
    cJSON_Delete(res);
    flt_schema_free(schema);
    for (int i = 0; i < N_Q; i++)
        free(refs[i]);
    rm_rf(dir);
}

static const char small_spec[] =
    "{\"task\": \"mygen\", \"output_type\": \"generate_until\", \"data\": \"data.jsonl\","
    " \"prompt\": \"Q: {query}\\nA:\", \"until\": %s, \"max_gen_toks\": %d,"
    " \"metric_list\": [\"exact_match\"]}";

Test(eval_gen, a_generation_is_cut_before_the_first_stop_string) {
    char dir[256], spec[1024];
    test_tmpdir(dir, sizeof dir);
    write_data(dir, NULL);
    cJSON **s;
    size_t  n;
    snprintf(spec, sizeof spec, small_spec, "[]", 16);
    cJSON_Delete(run_spec(dir, spec, "", &s, &n));
    /* a stop string from inside doc 0's free generation: two ASCII characters after its start */
    const char *g  = resp_of(s[0]);
    size_t      at = 0;
    for (size_t i = 2; g[i] && g[i + 1] && !at; i++)
        if ((unsigned char)g[i] < 0x80 && (unsigned char)g[i + 1] < 0x80 && g[i] != '"' &&
            g[i + 1] != '"' && g[i] != '\\' && g[i + 1] != '\\' && g[i] >= ' ' && g[i + 1] >= ' ')
            at = i;
    cr_assert(at, "no ASCII pair in %s", g);
    char   stop[3] = {g[at], g[at + 1], 0};
    size_t cut     = (size_t)(strstr(g, stop) - g);
    char  *want    = strndup(g, cut);
    free_lines(s, n);
    char until[64];
    snprintf(until, sizeof until, "[\"%s\"]", stop);
    snprintf(spec, sizeof spec, small_spec, until, 16);
    cJSON_Delete(run_spec(dir, spec, "", &s, &n));
    cr_assert_str_eq(resp_of(s[0]), want, "stop '%s'", stop);
    cr_assert_str_eq(cJSON_GetObjectItem(s[0], "finish")->valuestring, "stop");
    free(want);
    free_lines(s, n);
    rm_rf(dir);
}

Test(eval_gen, a_generation_that_never_stops_is_bounded_and_counted) {
    char dir[256], spec[1024];
    test_tmpdir(dir, sizeof dir);
    write_data(dir, NULL);
    cJSON **s;
    size_t  n, hit = 0;
    snprintf(spec, sizeof spec, small_spec, "[]", 5);
    cJSON *res = run_spec(dir, spec, "", &s, &n);
    for (size_t d = 0; d < n; d++) {
        int len = !strcmp(cJSON_GetObjectItem(s[d], "finish")->valuestring, "length");
        if (len)
            cr_assert_eq(num(s[d], "n_tokens"), 5);
        cr_assert_leq(num(s[d], "n_tokens"), 5);
        hit += (size_t)len;
    }
    cr_assert_gt(hit, 0);
    cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(res, "results"), "mygen");
    cr_assert_eq(num(r, "hit_max_new_tokens,none"), (double)hit);
    cJSON_Delete(res);
    free_lines(s, n);
    rm_rf(dir);
}

/* lm-eval's plain-text prompt puts the system instruction directly before the first question */
Test(eval_gen, the_system_prompt_comes_first_in_a_plain_prompt) {
    char dir[256], spec[1024];
    test_tmpdir(dir, sizeof dir);
    write_data(dir, NULL);
    cJSON **s;
    size_t  n;
    snprintf(spec, sizeof spec, small_spec, "[]", 2);
    cJSON_Delete(run_spec(dir, spec, "--system-prompt 'Be brief.'", &s, &n));
    const cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(s[0], "arguments"), "gen_args_0");
    cr_assert_str_eq(cJSON_GetObjectItem(a, "arg_0")->valuestring, "Be brief.Q: two plus two\nA:");
    free_lines(s, n);
    rm_rf(dir);
}

/* Runs a spec that must fail with exit 2 and a message containing `want`. */
static void expect_bad(const char *spec, const char *data, const char *flags, const char *want) {
    char dir[256], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    if (data)
        test_write_file(dir, "data.jsonl", data);
    else
        write_data(dir, NULL);
    test_write_file(dir, "spec.json", spec);
    int rc = test_run(&log, "eval " MODEL " --task-file %s/spec.json --data %s --device cpu %s",
                      dir, dir, flags);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, log ? log : "");
    cr_assert(log && strstr(log, want), "'%s' not in: %s", want, log ? log : "");
    free(log);
    rm_rf(dir);
}

#define SPEC_HEAD                                                                                  \
    "{\"task\": \"mygen\", \"output_type\": \"generate_until\", \"data\": \"data.jsonl\", "        \
    "\"prompt\": \"{query}\", "

Test(eval_gen, an_invalid_regex_fails_with_pcre2s_message) {
    expect_bad(SPEC_HEAD "\"filter_list\": [{\"name\": \"x\", \"filter\": [{\"function\": "
                         "\"regex\", \"regex_pattern\": \"(ab\"}]}], \"metric_list\": "
                         "[\"exact_match\"]}",
               NULL, "", "missing closing parenthesis");
}

Test(eval_gen, a_schema_that_is_not_json_is_named) {
    expect_bad(SPEC_HEAD "\"schema\": \"{not json\", \"metric_list\": [\"json_schema\"]}", NULL, "",
               "\"schema\"");
    expect_bad(SPEC_HEAD "\"metric_list\": [\"json_schema\"]}",
               "{\"query\": \"q\", \"reference\": \"r\", \"schema\": \"{oops\"}\n", "",
               "data.jsonl:1: \"schema\"");
}

Test(eval_gen, a_row_without_references_names_its_file_and_line) {
    expect_bad(SPEC_HEAD "\"metric_list\": [\"exact_match\"]}",
               "{\"query\": \"q\", \"reference\": \"r\"}\n{\"query\": \"q2\"}\n", "",
               "data.jsonl:2: the row needs \"reference\"");
}

Test(eval_gen, unknown_metrics_and_filters_list_the_known_ones) {
    expect_bad(SPEC_HEAD "\"metric_list\": [\"bleurt\"]}", NULL, "",
               "unknown metric 'bleurt' (known: exact_match, f1, bleu");
    expect_bad(SPEC_HEAD "\"filter_list\": [{\"name\": \"x\", \"filter\": [{\"function\": "
                         "\"majority_vote\"}]}], \"metric_list\": [\"exact_match\"]}",
               NULL, "", "unknown function 'majority_vote' (known: regex, take_first");
}

Test(eval_gen, a_chat_template_flag_without_a_template_is_a_clear_error) {
    expect_bad(SPEC_HEAD "\"metric_list\": [\"exact_match\"]}", NULL, "--apply-chat-template",
               "has no chat template");
    expect_bad(SPEC_HEAD "\"metric_list\": [\"exact_match\"]}", NULL, "--fewshot-as-multiturn",
               "--fewshot-as-multiturn needs --apply-chat-template");
}

/* Two generation tasks share the continuous batch; each one's samples equal its run alone. */
Test(eval_gen, generation_tasks_run_together_give_what_each_gives_alone) {
    char dir[256], spec[1024], *log = NULL;
    test_tmpdir(dir, sizeof dir);
    write_data(dir, NULL);
    snprintf(spec, sizeof spec, small_spec, "[\"\\n\"]", 8);
    test_write_file(dir, "spec.json", spec);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "cp -r tests/fixtures/eval_gen/data/gsm8k '%s/'", dir);
    cr_assert_eq(system(cmd), 0);
    const char *runs[3] = {"--tasks gsm8k --task-file %s/spec.json", "--tasks gsm8k",
                           "--task-file %s/spec.json"};
    for (int i = 0; i < 3; i++) {
        char flags[600];
        snprintf(flags, sizeof flags, runs[i], dir);
        int rc = test_run(&log,
                          "eval " MODEL " %s --data %s --limit 6 --max-gen-toks 8 --device cpu "
                          "--output-path %s/out%d --log-samples",
                          flags, dir, dir, i);
        cr_assert_eq(rc, 0, "%s", log ? log : "");
        free(log);
    }
    const char *pairs[2][2] = {{"out0/samples_gsm8k.jsonl", "out1/samples_gsm8k.jsonl"},
                               {"out0/samples_mygen.jsonl", "out2/samples_mygen.jsonl"}};
    for (int p = 0; p < 2; p++) {
        char   a[700], b[700];
        size_t na, nb;
        snprintf(a, sizeof a, "%s/%s", dir, pairs[p][0]);
        snprintf(b, sizeof b, "%s/%s", dir, pairs[p][1]);
        cJSON **la = read_lines(a, &na), **lb = read_lines(b, &nb);
        cr_assert_eq(na, nb);
        cr_assert_eq(na, 6);
        for (size_t i = 0; i < na; i++)
            cr_assert_str_eq(resp_of(la[i]), resp_of(lb[i]), "%s doc %zu", pairs[p][0], i);
        free_lines(la, na);
        free_lines(lb, nb);
    }
    rm_rf(dir);
}
