/* tests/test_judge.c — `assay judge`: prompts, verdict and reply parsing, pairwise statistics,
 * and whole runs against tests/judge_server.c (real HTTP on 127.0.0.1, real libcurl): fixed
 * judges, 429 with Retry-After, 500s, dropped connections, broken replies, the cache, the
 * budget, kill -9 and the API key. Backoff is shortened through ASSAY_JUDGE_BACKOFF_S. */
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>

#include "harness/judge.h"
#include "scoring/bootstrap.h"
#include "tests/helpers.h"

#define KEY "sk-test-NEVER-WRITE-7f3a9c"

/* ---- pure parts ------------------------------------------------------------------------- */

Test(judge, verdict_is_the_last_bracketed_letter_in_the_reply) {
    const char *s = "Use [[A]], [[B]] or [[C]]. My final verdict: [[B]]";
    cr_assert_eq(judge_parse_verdict(s, strlen(s)), JUDGE_V_B);
    s = "[[C]] then [[A]]";
    cr_assert_eq(judge_parse_verdict(s, strlen(s)), JUDGE_V_A);
    s = "no verdict [[D]] [A] [[a]]";
    cr_assert_eq(judge_parse_verdict(s, strlen(s)), JUDGE_V_NONE);
    cr_assert_eq(judge_parse_verdict("[[A]", 4), JUDGE_V_NONE);
    /* the length bounds the search: a verdict past it is not seen */
    cr_assert_eq(judge_parse_verdict("xx[[A]]", 6), JUDGE_V_NONE);
}

Test(judge, rating_is_the_last_bracketed_number_from_1_to_10) {
    double v = 0;
    cr_assert(judge_parse_score("Rating: [[7]]", 13, &v));
    cr_assert_eq(v, 7.0);
    cr_assert(judge_parse_score("[[3]] ... Rating: [[8.5]]", 25, &v));
    cr_assert_eq(v, 8.5);
    cr_assert(!judge_parse_score("Rating: [[11]]", 14, &v));
    cr_assert(!judge_parse_score("Rating: [[0]]", 13, &v));
    cr_assert(!judge_parse_score("Rating: [[5.]]", 14, &v));
    cr_assert(!judge_parse_score("Rating: [5]", 11, &v));
    cr_assert(!judge_parse_score("[[7]] then [[12]]", 17, &v), "the last rating counts");
}

Test(judge, pair_outcome_counts_only_when_both_orders_agree) {
    cr_assert_eq(judge_pair_outcome(JUDGE_V_B, JUDGE_V_A), JUDGE_B_WINS);
    cr_assert_eq(judge_pair_outcome(JUDGE_V_A, JUDGE_V_B), JUDGE_A_WINS);
    cr_assert_eq(judge_pair_outcome(JUDGE_V_A, JUDGE_V_A), JUDGE_TIE); /* position bias */
    cr_assert_eq(judge_pair_outcome(JUDGE_V_B, JUDGE_V_B), JUDGE_TIE);
    cr_assert_eq(judge_pair_outcome(JUDGE_V_B, JUDGE_V_C), JUDGE_TIE);
    cr_assert_eq(judge_pair_outcome(JUDGE_V_B, JUDGE_V_NONE), JUDGE_TIE);
}

Test(judge, an_always_first_judge_gives_half_and_zero_consistency) {
    judge_verdict ab[40], ba[40];
    for (int i = 0; i < 40; i++)
        ab[i] = ba[i] = JUDGE_V_A;
    judge_pair_stats st;
    cr_assert_eq(judge_pair_stats_compute(ab, ba, 40, 1000, 1234, &st), 0);
    cr_assert_eq(st.win_rate, 0.5);
    cr_assert_eq(st.consistency, 0.0);
    cr_assert_eq(st.first_position_rate, 1.0);
    cr_assert_eq(st.ties, 40);
    /* every pair scores 0.5, so every resample does too */
    cr_assert_eq(st.ci_lo, 0.5);
    cr_assert_eq(st.ci_hi, 0.5);
}

Test(judge, pair_stats_count_wins_losses_consistency_and_interval) {
    /* 6 B wins, 2 A wins, 1 consistent tie, 1 inconsistent, 1 unparsed */
    judge_verdict ab[11], ba[11];
    for (int i = 0; i < 6; i++)
        ab[i] = JUDGE_V_B, ba[i] = JUDGE_V_A;
    for (int i = 6; i < 8; i++)
        ab[i] = JUDGE_V_A, ba[i] = JUDGE_V_B;
    ab[8] = JUDGE_V_C, ba[8] = JUDGE_V_C;
    ab[9] = JUDGE_V_A, ba[9] = JUDGE_V_A;
    ab[10] = JUDGE_V_B, ba[10] = JUDGE_V_NONE;
    judge_pair_stats st;
    cr_assert_eq(judge_pair_stats_compute(ab, ba, 11, 1000, 1234, &st), 0);
    cr_assert_eq(st.wins, 6);
    cr_assert_eq(st.losses, 2);
    cr_assert_eq(st.ties, 3);
    cr_assert_eq(st.win_rate, 7.5 / 11);
    cr_assert_eq(st.n_both_parsed, 10);
    cr_assert_eq(st.n_consistent, 9);
    cr_assert_eq(st.consistency, 0.9);
    cr_assert_eq(st.n_unparsed_verdicts, 1);
    /* decisive parsed verdicts: 19 (21 parsed less the two C); first position: 6 + 2 + 2 */
    cr_assert_eq(st.n_decisive, 19);
    cr_assert_eq(st.n_first, 10);
    cr_assert(st.ci_lo < st.win_rate && st.win_rate < st.ci_hi);
    cr_assert(st.ci_lo >= 0 && st.ci_hi <= 1);
    judge_pair_stats again;
    judge_pair_stats_compute(ab, ba, 11, 1000, 1234, &again);
    cr_assert(again.ci_lo == st.ci_lo && again.ci_hi == st.ci_hi, "fixed seed, same interval");
}

Test(judge, reply_parser_takes_content_and_usage_and_refuses_the_rest) {
    judge_reply r;
    assay_error e;
    const char *ok = "{\"choices\":[{\"message\":{\"content\":\"x [[A]]\"}}],"
                     "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}";
    cr_assert_eq(judge_reply_parse(ok, strlen(ok), &r, &e), 0);
    cr_assert_str_eq(r.content, "x [[A]]");
    cr_assert(r.has_usage && r.prompt_tokens == 12 && r.completion_tokens == 3);
    judge_reply_free(&r);
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"choices\":[]}",
                         "{\"choices\":[{\"message\":{}}]}",
                         "{\"choices\":[{\"message\":{\"content\":null}}]}",
                         "{\"error\":{\"message\":\"rate limited\"}}",
                         "{\"choices\":[{\"message\":{\"content\":\"x\"}}]} trailing",
                         "\xff\xfe"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(judge_reply_parse(bad[i], strlen(bad[i]), &r, &e), ASSAY_EFORMAT, "%s",
                     bad[i]);
        cr_assert(r.content == NULL);
    }
    const char *neg = "{\"choices\":[{\"message\":{\"content\":\"x\"}}],"
                      "\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":3}}";
    cr_assert_eq(judge_reply_parse(neg, strlen(neg), &r, &e), 0);
    cr_assert(!r.has_usage, "negative token counts are not usage");
    judge_reply_free(&r);
}

Test(judge, request_body_is_canonical_with_temperature_zero_and_a_seed) {
    judge_prompt_in in = {
        .mode = JUDGE_PAIRWISE, .question = {"Q?", 2}, .first = {"one", 3}, .second = {"two", 3}};
    judge_prompt pr;
    assay_error  e;
    cr_assert_eq(judge_prompt_build(&in, &pr, &e), 0);
    judge_params p = {JUDGE_PAIRWISE, "judge-m", 7, 64};
    size_t       n1, n2;
    char        *b1 = judge_body_build(&p, &pr, (judge_str){0}, &n1);
    char        *b2 = judge_body_build(&p, &pr, (judge_str){0}, &n2);
    cr_assert(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1));
    cr_assert(strstr(b1, "\"temperature\":0,\"seed\":7,\"max_tokens\":64}"), "%s", b1);
    cr_assert(strstr(b1, "[Question]\\nQ?"));
    cr_assert(strstr(b1, "\\\"[[A]]\\\" if assistant A is better"), "%s", b1);
    char *b3 = judge_body_build(&p, &pr, (judge_str){"undecided", 9}, &n2);
    cr_assert(strstr(b3, "\"role\":\"assistant\",\"content\":\"undecided\""));
    cr_assert(strstr(b3, "Reply now with only the verdict"));
    free(b1);
    free(b2);
    free(b3);
    judge_prompt_free(&pr);
}

Test(judge, rubric_replaces_the_instructions_and_keeps_the_format) {
    judge_prompt_in in = {.mode      = JUDGE_POINTWISE,
                          .rubric    = {"Grade strictly.", 15},
                          .question  = {"Q", 1},
                          .first     = {"ans", 3},
                          .reference = {"ref", 3}};
    judge_prompt    pr;
    assay_error     e;
    cr_assert_eq(judge_prompt_build(&in, &pr, &e), 0);
    cr_assert(!strncmp(pr.system, "Grade strictly. After your explanation", 38), "%s", pr.system);
    cr_assert(strstr(pr.system, "\"Rating: [[5]]\""));
    cr_assert(!strstr(pr.user, "ref"), "no reference without reference_guided");
    judge_prompt_free(&pr);
    char h1[65], h2[65];
    judge_prompt_hash(JUDGE_POINTWISE, 0, in.rubric, h1);
    judge_prompt_hash(JUDGE_POINTWISE, 0, (judge_str){"Grade gently.", 13}, h2);
    cr_assert_str_neq(h1, h2);
}

/* ---- runs against the test server ------------------------------------------------------ */

typedef struct server {
    pid_t pid;
    int   port;
    char  log[1200];
} server;

static void server_path(char *out, size_t cap) {
    const char *b     = test_bin();
    const char *slash = strrchr(b, '/');
    snprintf(out, cap, "%.*s/tests/judge_server", slash ? (int)(slash - b) : 1, slash ? b : ".");
}

/* Starts the server with extra args ("--judge always-a ..."), logging to dir/<name>.log. */
static server server_start(const char *dir, const char *name, const char *args) {
    server s = {0};
    char   bin[1200], port_file[1200], cmd[4096];
    server_path(bin, sizeof bin);
    cr_assert(access(bin, X_OK) == 0, "%s missing (make builds it)", bin);
    snprintf(port_file, sizeof port_file, "%s/%s.port", dir, name);
    snprintf(s.log, sizeof s.log, "%s/%s.log", dir, name);
    snprintf(cmd, sizeof cmd, "exec %s --port-file %s --log %s --key %s %s >%s/%s.err 2>&1", bin,
             port_file, s.log, KEY, args, dir, name);
    s.pid = fork();
    if (s.pid == 0) {
        /* a failed assertion ends the test process: the server must not outlive it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && s.port == 0; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            if (fscanf(f, "%d", &s.port) != 1)
                s.port = 0;
            fclose(f);
        }
        if (!s.port)
            usleep(10000);
    }
    cr_assert(s.port > 0, "the test server did not start");
    return s;
}

static void server_stop(server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Requests the server has logged, and how many carried the right key. */
static int server_count(const server *s, int *auth_ok) {
    FILE *f = fopen(s->log, "r");
    char  line[256];
    int   n = 0, a = 0;
    while (f && fgets(line, sizeof line, f)) {
        n++;
        a += strstr(line, "auth=1") != NULL;
    }
    if (f)
        fclose(f);
    if (auth_ok)
        *auth_ok = a;
    return n;
}

/* The test process's environment is the runs': no proxy for 127.0.0.1, the key, fast backoff. */
static void run_env(void) {
    const char *proxies[] = {"http_proxy",  "https_proxy", "HTTP_PROXY",
                             "HTTPS_PROXY", "ALL_PROXY",   "all_proxy"};
    for (size_t i = 0; i < sizeof proxies / sizeof *proxies; i++)
        unsetenv(proxies[i]);
    setenv("OPENAI_API_KEY", KEY, 1);
    setenv("ASSAY_JUDGE_BACKOFF_S", "0.01", 1);
    setenv("ASSAY_JUDGE_BACKOFF_MAX_S", "0.05", 1);
}

/* n pairs; pair i: a has quality i % 3, b has quality (i + 1) % 3 (b better unless i % 3 == 2). */
static void write_pairs(const char *dir, const char *name, int n) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < n; i++)
        fprintf(f,
                "{\"id\": \"q%d\", \"prompt\": \"Question %d? Explain in detail, with an "
                "example or two.\", \"a\": \"Answer A%d quality=%d\", \"b\": \"Answer B%d "
                "quality=%d\", \"category\": \"%s\", \"reference\": \"ref %d\"}\n",
                i, i, i, i % 3, i, (i + 1) % 3, i % 2 ? "math" : "writing", i);
    fclose(f);
}

static int judge_run(char **out, const char *dir, const server *s, const char *extra) {
    return test_run(out,
                    "judge --pairs %s/pairs.jsonl --endpoint http://127.0.0.1:%d/v1 --model "
                    "judge-m --output-path %s/out %s",
                    dir, s->port, dir, extra);
}

static double jnum(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = o;
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t; t = strtok_r(NULL, ".", &save))
        v = cJSON_GetObjectItemCaseSensitive(v, t);
    cr_assert(cJSON_IsNumber(v) || cJSON_IsBool(v), "%s is not a number", path);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
}

static cJSON *results(const char *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/out/results.json", dir);
    return test_read_json(p);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    int   n = 0, c;
    while (f && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f)
        fclose(f);
    return n;
}

Test(judge_run, an_always_A_judge_gives_win_rate_one_half_and_consistency_zero) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 12);
    server s  = server_start(dir, "srv", "--judge always-a");
    int    rc = judge_run(&out, dir, &s, "");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pairwise.win_rate"), 0.5);
    cr_assert_eq(jnum(r, "pairwise.position_consistency"), 0.0);
    cr_assert_eq(jnum(r, "pairwise.first_position_rate"), 1.0);
    cr_assert_eq(jnum(r, "pairwise.ties"), 12);
    cr_assert_eq(jnum(r, "judgments"), 24, "both orders of every pair");
    cr_assert_eq(server_count(&s, NULL), 24);
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, a_perfect_judge_gives_the_true_preference) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 12);
    server s  = server_start(dir, "srv", "--judge perfect");
    int    rc = judge_run(&out, dir, &s, "--json --concurrency 3");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    /* the truth from the qualities write_pairs gives: b better unless i % 3 == 2 */
    int wins = 0, losses = 0;
    for (int i = 0; i < 12; i++)
        *(i % 3 == 2 ? &losses : &wins) += 1;
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pairwise.wins"), wins);
    cr_assert_eq(jnum(r, "pairwise.losses"), losses);
    cr_assert_eq(jnum(r, "pairwise.ties"), 0);
    cr_assert_eq(jnum(r, "pairwise.win_rate"), (double)wins / 12);
    cr_assert_eq(jnum(r, "pairwise.position_consistency"), 1.0);
    cr_assert_eq(jnum(r, "pairwise.first_position_rate"), 0.5);
    cJSON *ci = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "pairwise"),
                                                 "win_rate_ci95");
    double lo = cJSON_GetArrayItem(ci, 0)->valuedouble, hi = cJSON_GetArrayItem(ci, 1)->valuedouble;
    cr_assert(lo < (double)wins / 12 && (double)wins / 12 < hi && lo >= 0 && hi <= 1);
    /* the interval is the bootstrap of the per-pair scores (1 win, 0 loss) with the seed and
     * resample count results.json states; JSON keeps doubles exactly, so equal bits */
    double x[12];
    for (int i = 0; i < 12; i++)
        x[i] = i % 3 == 2 ? 0.0 : 1.0;
    boot_ci ref;
    cr_assert_eq(boot_ci_mean(x, 12, 1000, 0.95, 1234, &ref), 0);
    cr_assert(lo == ref.lo && hi == ref.hi, "[%.17g, %.17g] vs [%.17g, %.17g]", lo, hi, ref.lo,
              ref.hi);
    /* --json printed the same results on stdout */
    cr_assert(strstr(out, "\"win_rate_ci95\""), "%s", out);
    /* verdicts.jsonl: one line per judgment with the request and the full reply */
    char p[1200];
    snprintf(p, sizeof p, "%s/out/verdicts.jsonl", dir);
    cr_assert_eq(count_lines(p), 24);
    char *v = NULL;
    cr_assert_eq(test_run(&v, "version >/dev/null; cat %s", p), 0);
    cr_assert(strstr(v, "\"temperature\":0,\"seed\":0"));
    cr_assert(strstr(v, "\"usage\":{\"prompt_tokens\""), "the full reply is kept");
    cr_assert(strstr(v, "\"order\":\"BA\""));
    free(v);
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, the_cache_makes_a_second_run_request_free) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 8);
    server s = server_start(dir, "srv", "--judge perfect");
    cr_assert_eq(judge_run(&out, dir, &s, ""), 0, "%s", out);
    free(out);
    cr_assert_eq(server_count(&s, NULL), 16);
    cJSON *r1 = results(dir);
    cr_assert_eq(judge_run(&out, dir, &s, ""), 0, "%s", out);
    server_stop(&s);
    cr_assert_eq(server_count(&s, NULL), 16, "no request on the second run");
    cJSON *r2 = results(dir);
    cr_assert_eq(jnum(r2, "requests.sent"), 0);
    cr_assert_eq(jnum(r2, "requests.from_cache"), 16);
    cr_assert_eq(jnum(r2, "pairwise.win_rate"), jnum(r1, "pairwise.win_rate"));
    cr_assert_eq(jnum(r2, "cost.usd"), 0);
    cJSON_Delete(r1);
    cJSON_Delete(r2);
    free(out);
}

Test(judge_run, the_budget_stops_new_requests_before_the_cap) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 10);
    /* usage: prompt_tokens = body bytes / 4 (~300 for these bodies), completion ~50 tokens.
     * At $1000 and $2000 per million that is ~$0.4 a request: $2 buys about 5 of 20. The first
     * request is estimated at 1 token per byte plus --max-tokens: ~$1.3. */
    server s  = server_start(dir, "srv", "--judge perfect --usage-div 4");
    int    rc = judge_run(&out, dir, &s,
                          "--concurrency 1 --max-tokens 100 --budget-usd 2 --price-in 1000 "
                             "--price-out 2000");
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "stopped by the budget"), "%s", out);
    cJSON *r    = results(dir);
    double usd  = jnum(r, "cost.usd");
    double sent = jnum(r, "requests.sent");
    cr_assert_eq(jnum(r, "stopped_by_budget"), 1);
    cr_assert_eq(jnum(r, "complete"), 0);
    cr_assert_eq(sent, server_count(&s, NULL));
    cr_assert(sent >= 2 && sent < 20, "%g requests", sent);
    cr_assert(usd <= 2.0, "spent %g over the $2 cap", usd);
    /* on time: it stopped with less than two requests' worth left (requests differ by a few
     * bytes, and the estimate uses the largest tokens-per-byte seen) */
    cr_assert(2.0 - usd < 2 * usd / sent, "stopped early: $%g spent in %g requests", usd, sent);
    cr_assert_eq(jnum(r, "judgments_not_judged"), 20 - sent);
    cJSON_Delete(r);
    free(out);

    /* with 4 in flight the cap holds too, counting what is in flight */
    char dir2[64];
    test_tmpdir(dir2, sizeof dir2);
    write_pairs(dir2, "pairs.jsonl", 10);
    rc = judge_run(&out, dir2, &s,
                   "--concurrency 4 --max-tokens 100 --budget-usd 2 --price-in 1000 "
                   "--price-out 2000");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    r = results(dir2);
    cr_assert(jnum(r, "cost.usd") <= 2.0);
    cr_assert_eq(jnum(r, "stopped_by_budget"), 1);
    cJSON_Delete(r);
    free(out);
}

static int cache_rows(const char *path) {
    sqlite3      *db = NULL;
    sqlite3_stmt *st = NULL;
    int           n  = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM replies", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

Test(judge_run, kill_9_mid_run_then_a_rerun_loses_and_duplicates_nothing) {
    char dir[64], *out = NULL, cmd[2048], cache[1200], verdicts[1200];
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 20);
    server s = server_start(dir, "srv", "--judge perfect --delay-ms 40");
    snprintf(cmd, sizeof cmd,
             "exec %s judge --pairs %s/pairs.jsonl --endpoint http://127.0.0.1:%d --model "
             "judge-m --output-path %s/out --concurrency 2 >%s/run1.txt 2>&1",
             test_bin(), dir, s.port, dir, dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 3000 && server_count(&s, NULL) < 12; i++)
        usleep(5000);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the run ended before the kill");
    int sent1 = server_count(&s, NULL);
    snprintf(cache, sizeof cache, "%s/out/judge_cache.sqlite", dir);
    int rows = cache_rows(cache);
    cr_assert(rows >= 8 && rows < 40, "%d replies committed, %d requests sent", rows, sent1);
    /* every reply received before the kill is committed: at most those in flight are lost */
    cr_assert(rows >= sent1 - 2, "%d rows for %d requests", rows, sent1);

    cr_assert_eq(judge_run(&out, dir, &s, "--concurrency 2"), 0, "%s", out);
    server_stop(&s);
    int sent2 = server_count(&s, NULL) - sent1;
    cr_assert_eq(sent2, 40 - rows, "the re-run asks exactly for what is missing");
    cr_assert_eq(cache_rows(cache), 40);
    snprintf(verdicts, sizeof verdicts, "%s/out/verdicts.jsonl", dir);
    cr_assert_eq(count_lines(verdicts), 40);
    /* each (id, order) once */
    char *uniq = NULL;
    cr_assert_eq(test_run(&uniq,
                          "version >/dev/null; grep -o '\"id\":\"q[0-9]*\",\"category\":\"[a-z]*\","
                          "\"order\":\"[AB]*\",\"status\":\"ok\"' %s | sort -u | wc -l",
                          verdicts),
                 0);
    cr_assert_eq(atoi(uniq), 40, "%s", uniq);
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "requests.from_cache"), rows);
    cr_assert_eq(jnum(r, "complete"), 1);
    cJSON_Delete(r);
    free(uniq);
    free(out);
}

Test(judge_run, a_429_waits_for_retry_after_then_succeeds) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 1);
    server s  = server_start(dir, "srv", "--fault 429 --fault-count 1 --retry-after 1");
    int    rc = judge_run(&out, dir, &s, "--concurrency 1");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    FILE  *f = fopen(s.log, "r");
    double t[3];
    char   line[256];
    int    n = 0;
    while (n < 3 && fgets(line, sizeof line, f))
        t[n++] = atof(strstr(line, "t=") + 2);
    fclose(f);
    cr_assert_eq(n, 3, "429, its retry, the other order");
    /* backoff alone is 0.01 s here: the wait is Retry-After's second (less 50 ms of timer
     * slack) */
    cr_assert(t[1] - t[0] >= 0.95, "retried after %.3f s", t[1] - t[0]);
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "requests.retries"), 1);
    cr_assert_eq(jnum(r, "judgments_failed"), 0);
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, server_errors_timeouts_and_dropped_connections_are_retried) {
    const char *faults[] = {"500", "drop", "truncated", "invalid", "missing", "ctype", "slow"};
    for (size_t k = 0; k < sizeof faults / sizeof *faults; k++) {
        char dir[64], *out = NULL, args[128];
        test_tmpdir(dir, sizeof dir);
        run_env();
        write_pairs(dir, "pairs.jsonl", 3);
        snprintf(args, sizeof args, "--fault %s --fault-count 3", faults[k]);
        server s = server_start(dir, "srv", args);
        /* --timeout 0.5 s against the 3 s of "slow" */
        int rc = judge_run(&out, dir, &s, "--concurrency 1 --max-retries 3 --timeout 0.5");
        server_stop(&s);
        cr_assert_eq(rc, 0, "%s: %s", faults[k], out);
        cJSON *r = results(dir);
        cr_assert_eq(jnum(r, "requests.retries"), 3, "%s", faults[k]);
        cr_assert_eq(jnum(r, "judgments_failed"), 0, "%s", faults[k]);
        cr_assert_eq(server_count(&s, NULL), 9, "%s", faults[k]);
        cJSON_Delete(r);
        free(out);
    }
}

Test(judge_run, broken_replies_fail_the_item_and_a_rerun_retries_only_failures) {
    const char *faults[] = {"truncated", "invalid", "missing", "ctype", "oversized", "400", "500"};
    for (size_t k = 0; k < sizeof faults / sizeof *faults; k++) {
        char dir[64], *out = NULL, args[128];
        test_tmpdir(dir, sizeof dir);
        run_env();
        write_pairs(dir, "pairs.jsonl", 3);
        /* without retries the first two requests, both orders of q0, fail; four succeed */
        snprintf(args, sizeof args, "--fault %s --fault-count 2", faults[k]);
        server s  = server_start(dir, "srv", args);
        int    rc = judge_run(&out, dir, &s, "--concurrency 1 --max-retries 0");
        server_stop(&s);
        cr_assert_eq(rc, 1, "%s: %s", faults[k], out);
        cr_assert(strstr(out, "item q0 (order AB) failed"), "%s: %s", faults[k], out);
        cJSON *r = results(dir);
        cr_assert_eq(jnum(r, "judgments_failed"), 2, "%s", faults[k]);
        cr_assert_eq(jnum(r, "pairwise.pairs"), 2, "%s: the failed pair is left out", faults[k]);
        cJSON_Delete(r);
        free(out);
        int before = server_count(&s, NULL);
        cr_assert_eq(before, 6, "%s", faults[k]);
        server s2 = server_start(dir, "srv2", "--judge perfect");
        rc        = judge_run(&out, dir, &s2, "--concurrency 1");
        server_stop(&s2);
        cr_assert_eq(rc, 0, "%s: %s", faults[k], out);
        cr_assert_eq(server_count(&s2, NULL), 2, "%s: only the failed judgments", faults[k]);
        free(out);
    }
}

Test(judge_run, an_unparsable_verdict_gets_one_reminder_then_counts_as_unparsed) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 3);
    server s  = server_start(dir, "srv", "--judge garbage");
    int    rc = judge_run(&out, dir, &s, "");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_eq(server_count(&s, NULL), 12, "each of 6 judgments once and once reminded");
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pairwise.unparsed_verdicts"), 6);
    cr_assert_eq(jnum(r, "pairwise.ties"), 3);
    cr_assert_eq(jnum(r, "pairwise.pairs"), 3, "never dropped");
    cJSON_Delete(r);
    free(out);

    char dir2[64];
    test_tmpdir(dir2, sizeof dir2);
    write_pairs(dir2, "pairs.jsonl", 3);
    server s2 = server_start(dir2, "srv", "--judge garbage-once");
    rc        = judge_run(&out, dir2, &s2, "");
    server_stop(&s2);
    cr_assert_eq(rc, 0, "%s", out);
    r = results(dir2);
    cr_assert_eq(jnum(r, "pairwise.unparsed_verdicts"), 0);
    cr_assert_eq(jnum(r, "pairwise.position_consistency"), 1);
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, the_api_key_is_sent_but_never_written_anywhere) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 4);
    server s  = server_start(dir, "srv", "--judge perfect --fault 500 --fault-count 1");
    int    rc = judge_run(&out, dir, &s, "--json --concurrency 2");
    cr_assert_eq(rc, 0, "%s", out);
    int auth = 0, n = server_count(&s, &auth);
    cr_assert(n == 9 && auth == n, "%d of %d requests carried the key", auth, n);
    cr_assert(!strstr(out, KEY), "stdout/stderr hold the key");
    free(out);
    /* a failing run prints errors: they must not hold it either */
    rc = test_run(&out,
                  "judge --pairs %s/pairs.jsonl --endpoint http://127.0.0.1:1/v1 --model m "
                  "--output-path %s/out2 --max-retries 0",
                  dir, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(!strstr(out, KEY));
    free(out);
    /* --api-key-env names another variable */
    setenv("MY_JUDGE_KEY", KEY, 1);
    unsetenv("OPENAI_API_KEY");
    rc = judge_run(&out, dir, &s, "--api-key-env MY_JUDGE_KEY --cache /dev/null/x");
    cr_assert_eq(rc, 2, "an unusable cache path is bad input: %s", out);
    free(out);
    rc = test_run(&out,
                  "judge --pairs %s/pairs.jsonl --endpoint http://127.0.0.1:%d --model m "
                  "--output-path %s/out3 --api-key-env MY_JUDGE_KEY",
                  dir, s.port, dir);
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    n = server_count(&s, &auth);
    cr_assert(auth == n, "%d of %d requests carried the key", auth, n);
    free(out);
    /* every file under dir except the server's own log and port files */
    rc = test_run(&out, "version >/dev/null; grep -rlaF '%s' %s --exclude='srv.*'", KEY, dir);
    cr_assert_neq(rc, 0, "the key is in: %s", out);
    free(out);
    rc = test_run(&out, "version >/dev/null; ls %s/out %s/out3", dir, dir);
    cr_assert(strstr(out, "judge_cache.sqlite") && strstr(out, "verdicts.jsonl"), "%s", out);
    free(out);
}

Test(judge_run, connections_are_kept_alive) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 5);
    server s  = server_start(dir, "srv", "--judge perfect");
    int    rc = judge_run(&out, dir, &s, "--concurrency 1");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    char *c = NULL;
    test_run(&c, "version >/dev/null; grep -c 'conn=1 ' %s", s.log);
    cr_assert_eq(atoi(c), 10, "all 10 requests on one connection: %s", c);
    free(c);
    free(out);
}

Test(judge_run, pointwise_rates_each_answer_with_means_distribution_and_categories) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 6);
    server s  = server_start(dir, "srv", "--judge rating");
    int    rc = judge_run(&out, dir, &s, "--mode pointwise");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    /* ratings are the qualities, 0 read as no rating: a = 0,1,2,0,1,2; b = 1,2,0,1,2,0 */
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pointwise.a.rated"), 4);
    cr_assert_eq(jnum(r, "pointwise.a.unparsed"), 2);
    cr_assert_eq(jnum(r, "pointwise.a.mean"), 1.5);
    cr_assert_eq(jnum(r, "pointwise.b.mean"), 1.5);
    cr_assert_eq(jnum(r, "pointwise.a.distribution.1"), 2);
    cr_assert_eq(jnum(r, "pointwise.a.distribution.2"), 2);
    /* categories: even i writing (a: 0,2,1 -> 2,1 rated), odd i math (a: 1,0,2 -> 1,2) */
    cr_assert_eq(jnum(r, "pointwise.by_category.writing.mean_a"), 1.5);
    cr_assert_eq(jnum(r, "pointwise.by_category.math.mean_b"), 1.5);
    /* paired: i = 1 (1 vs 2) and 4 (1 vs 2) */
    cr_assert_eq(jnum(r, "pointwise.paired"), 2);
    cr_assert_eq(jnum(r, "pointwise.mean_diff_b_minus_a"), 1);
    cr_assert_eq(server_count(&s, NULL), 12 + 4, "12 answers, 4 reminders for quality=0");
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, reference_guided_and_rubric_reach_the_request) {
    char dir[64], *out = NULL, *v = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 2);
    test_write_file(dir, "rubric.txt", "Prefer the answer with fewer words.");
    server s = server_start(dir, "srv", "--judge perfect");
    char   extra[1300];
    snprintf(extra, sizeof extra, "--reference-guided --rubric %s/rubric.txt", dir);
    int rc = judge_run(&out, dir, &s, extra);
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    test_run(&v, "version >/dev/null; head -1 %s/out/verdicts.jsonl", dir);
    cr_assert(strstr(v, "\"content\":\"Prefer the answer with fewer words. After your"), "%s", v);
    cr_assert(strstr(v, "[Start of the Reference Answer]\\nref 0\\n"), "%s", v);
    free(v);
    cJSON *r = results(dir);
    cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "judge");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "reference_guided")));
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "prompt_sha256")));
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, eval_samples_are_joined_by_task_and_doc_id) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    /* the candidate's file lists the documents in another order */
    test_write_file(dir, "a.jsonl",
                    "{\"doc_id\": 0, \"task\": \"t\", \"arguments\": {\"gen_args_0\": {\"arg_0\": "
                    "\"Q0\", \"arg_1\": {}}}, \"resps\": [[\"base quality=1\"]], "
                    "\"filtered_resps\": [\"base quality=1\"], \"target\": \"r\"}\n"
                    "{\"doc_id\": 1, \"task\": \"t\", \"prompt\": \"Q1\", \"resps\": "
                    "[[\"base quality=2\"]], \"target\": 3}\n");
    test_write_file(dir, "b.jsonl",
                    "{\"doc_id\": 1, \"task\": \"t\", \"prompt\": \"Q1\", \"filtered_resps\": "
                    "[\"cand quality=1\"]}\n"
                    "{\"doc_id\": 0, \"task\": \"t\", \"prompt\": \"Q0\", \"filtered_resps\": "
                    "[\"cand quality=2\"]}\n");
    server s  = server_start(dir, "srv", "--judge perfect");
    int    rc = test_run(&out,
                         "judge --a %s/a.jsonl --b %s/b.jsonl --endpoint http://127.0.0.1:%d "
                            "--model m --output-path %s/out",
                         dir, dir, s.port, dir);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pairwise.wins"), 1);
    cr_assert_eq(jnum(r, "pairwise.losses"), 1);
    cJSON_Delete(r);
    free(out);
    /* a document only one side has is an error naming it */
    test_write_file(dir, "b2.jsonl",
                    "{\"doc_id\": 1, \"task\": \"t\", \"prompt\": \"Q1\", \"resps\": [\"x\"]}\n");
    rc = test_run(&out,
                  "judge --a %s/a.jsonl --b %s/b2.jsonl --endpoint http://127.0.0.1:%d --model m "
                  "--output-path %s/out",
                  dir, dir, s.port, dir);
    server_stop(&s);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "a.jsonl:1: document t/0 is not in"), "%s", out);
    free(out);
}

Test(judge_run, bad_input_exits_2_naming_the_problem) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    test_write_file(dir, "nob.jsonl", "{\"id\": 1, \"prompt\": \"p\", \"a\": \"x\"}\n");
    test_write_file(dir, "dup.jsonl",
                    "{\"id\": 1, \"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}\n"
                    "{\"id\": 1, \"prompt\": \"p\", \"a\": \"x\", \"b\": \"y\"}\n");
    struct {
        const char *args, *msg;
    } cases[] = {
        {"--pairs %s/nob.jsonl --endpoint http://127.0.0.1:1 --model m", "nob.jsonl:1"},
        {"--pairs %s/dup.jsonl --endpoint http://127.0.0.1:1 --model m", "already used on line 1"},
        {"--pairs %s/none.jsonl --endpoint http://127.0.0.1:1 --model m", "none.jsonl"},
        {"--pairs %s/dup.jsonl --endpoint ftp://x --model m", "http:// or https://"},
        {"--pairs %s/dup.jsonl --endpoint http://x", "--model"},
        {"--pairs %s/dup.jsonl --endpoint http://x --model m --budget-usd 1", "--price-in"},
        {"--pairs %s/dup.jsonl --endpoint http://x --model m --budget-usd -3 --price-in 1",
         "--budget-usd"},
        {"--pairs %s/nob.jsonl --endpoint http://x --model m --mode pointwise --reference-guided",
         "reference"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[1024];
        snprintf(args, sizeof args, cases[i].args, dir);
        int rc = test_run(&out, "judge %s --output-path %s/out", args, dir);
        cr_assert_eq(rc, 2, "%s: %s", args, out);
        cr_assert(strstr(out, cases[i].msg), "%s: %s", args, out);
        free(out);
    }
}

Test(judge_run, tls_is_verified_and_a_ca_bundle_makes_a_private_ca_trusted) {
    char dir[64], *out = NULL, cmd[2048], port_file[1200];
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 1);
    snprintf(cmd, sizeof cmd,
             "version >/dev/null; openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
             "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out "
             "%s/cert.pem",
             dir, dir);
    if (test_run(&out, "%s", cmd) != 0 || system("python3 -c 'import ssl' 2>/dev/null") != 0) {
        fprintf(stderr, "SKIP: openssl or python3 with ssl missing: %s\n", out ? out : "");
        free(out);
        cr_skip_test("SKIP: openssl or python3 with ssl missing");
    }
    free(out);
    snprintf(port_file, sizeof port_file, "%s/tls.port", dir);
    snprintf(cmd, sizeof cmd,
             "exec python3 tests/judge_tls_server.py %s/cert.pem %s/key.pem %s >%s/tls.err 2>&1",
             dir, dir, port_file, dir);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int port = 0;
    for (int i = 0; i < 1000 && !port; i++) {
        FILE *f = fopen(port_file, "r");
        if (!f || fscanf(f, "%d", &port) != 1)
            usleep(10000);
        if (f)
            fclose(f);
    }
    cr_assert(port > 0, "the TLS server did not start");
    /* the self-signed certificate is not trusted: an error no retry can fix, so one try each */
    int rc = test_run(&out,
                      "judge --pairs %s/pairs.jsonl --endpoint https://127.0.0.1:%d/v1 --model m "
                      "--output-path %s/out --max-retries 3",
                      dir, port, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "certificate"), "%s", out);
    cr_assert(strstr(out, "after 1 try"), "%s", out);
    free(out);
    rc = test_run(&out,
                  "judge --pairs %s/pairs.jsonl --endpoint https://127.0.0.1:%d/v1 --model m "
                  "--output-path %s/out --ca-bundle %s/cert.pem",
                  dir, port, dir, dir);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *r = results(dir);
    cr_assert_eq(jnum(r, "pairwise.ties"), 1);
    cJSON_Delete(r);
    free(out);
}

Test(judge_run, concurrency_keeps_n_requests_in_flight) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 4);
    server s  = server_start(dir, "srv", "--judge perfect --delay-ms 300");
    int    rc = judge_run(&out, dir, &s, "--concurrency 8");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    FILE  *f = fopen(s.log, "r");
    char   line[256];
    double lo = 1e18, hi = 0;
    int    n = 0;
    while (fgets(line, sizeof line, f)) {
        double t = atof(strstr(line, "t=") + 2);
        lo       = fmin(lo, t);
        hi       = fmax(hi, t);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, 8);
    /* one after another, the 8 arrivals would span at least 7 x 300 ms; together, about 0 (1 s
     * leaves room for a loaded machine) */
    cr_assert(hi - lo < 1.0, "requests arrived over %.3f s", hi - lo);
    free(out);
}

/* Every judge run appends a record to the history (default OUT/history.sqlite): task
 * judge_pairwise with the win rate the results say. */
Test(judge_run, a_run_is_recorded_in_the_history) {
    char dir[64], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    run_env();
    write_pairs(dir, "pairs.jsonl", 6);
    server s  = server_start(dir, "srv", "--judge always-a");
    int    rc = judge_run(&out, dir, &s, "");
    server_stop(&s);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    rc =
        test_run(&out, "history --history %s/out/history.sqlite --task judge_pairwise --json", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON       *h = cJSON_Parse(out);
    const cJSON *t, *win = NULL;
    cr_assert(h, "%s", out);
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(h, "trends")) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(t, "metric");
        if (cJSON_IsString(m) && !strcmp(m->valuestring, "win_rate"))
            win = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "points"), 0);
    }
    cr_assert(win, "no win_rate trend: %s", out);
    cr_expect_eq(jnum(win, "value"), 0.5);
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(win, "device");
    cr_expect(cJSON_IsString(dev) && !strcmp(dev->valuestring, "judge:judge-m"), "%s", out);
    cJSON_Delete(h);
    free(out);
}
