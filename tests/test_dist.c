/* tests/test_dist.c — sharding across processes: the assignment of units to ranks, shards that
 * merge into the one-process result bit for bit, resume files, and real `mpirun` runs (skipped
 * when mpirun or an MPI build is missing): equal output, a failing rank, a killed rank. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/dist.h"
#include "harness/pipeline.h"
#include "helpers.h"
#include "runtime/model.h"

#define MODEL "tests/fixtures/models/llama"

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

Test(dist_gather, one_process_gets_a_copy_of_its_own_bytes) {
    char  *recv = NULL;
    size_t counts[1];
    cr_assert_eq(dist_allgather_bytes("abc", 3, &recv, counts, NULL), 0);
    cr_expect_eq(counts[0], 3);
    cr_expect(recv && !memcmp(recv, "abc", 3));
    free(recv);
    cr_assert_eq(dist_allgather_bytes(NULL, 0, &recv, counts, NULL), 0);
    cr_expect(recv != NULL && counts[0] == 0);
    free(recv);
}

Test(dist_gather, per_rank_entries_carry_the_noted_numbers) {
    dist_per_rank_note("generated_prompts", 3);
    dist_per_rank_note("generated_prompts", 7); /* a later note replaces the earlier */
    cJSON *a = dist_per_rank_json(1.5, 10, NULL);
    cr_assert(a && cJSON_GetArraySize(a) == 1);
    cJSON *r0 = cJSON_GetArrayItem(a, 0);
    cr_expect_eq(cJSON_GetObjectItem(r0, "generated_prompts")->valuedouble, 7);
    cr_expect_eq(cJSON_GetObjectItem(r0, "tokens_computed")->valuedouble, 10);
    cJSON_Delete(a);
}

Test(dist_assign, gives_the_longest_units_first_to_the_least_loaded_rank) {
    int64_t cost[5] = {5, 3, 3, 2, 1};
    int     owner[5];
    cr_assert_eq(dist_assign(cost, 5, 2, owner, NULL), 0);
    /* 5 -> r0; 3 (unit 1) -> r1; 3 (unit 2) -> r1 (3 < 5); 2 -> r0 (7); 1 -> r1 (6 < 7) */
    int want[5] = {0, 1, 1, 0, 1};
    for (int i = 0; i < 5; i++)
        cr_expect_eq(owner[i], want[i], "unit %d on rank %d", i, owner[i]);
}

Test(dist_assign, is_deterministic_and_balanced_within_the_largest_unit) {
    uint32_t seed = 7;
    int64_t  cost[300];
    int      a[300], b[300];
    for (int i = 0; i < 300; i++)
        cost[i] = 1 + (int64_t)(lcg(&seed) % 5000);
    for (int size = 1; size <= 9; size++) {
        cr_assert_eq(dist_assign(cost, 300, size, a, NULL), 0);
        cr_assert_eq(dist_assign(cost, 300, size, b, NULL), 0);
        cr_expect_eq(memcmp(a, b, sizeof a), 0, "two plans for %d ranks differ", size);
        int64_t load[9] = {0}, biggest = 0;
        for (int i = 0; i < 300; i++) {
            cr_assert(a[i] >= 0 && a[i] < size);
            load[a[i]] += cost[i];
            biggest = cost[i] > biggest ? cost[i] : biggest;
        }
        int64_t lo = load[0], hi = load[0];
        for (int r = 1; r < size; r++) {
            lo = load[r] < lo ? load[r] : lo;
            hi = load[r] > hi ? load[r] : hi;
        }
        cr_expect(hi - lo <= biggest, "%d ranks: loads %lld..%lld, largest unit %lld", size,
                  (long long)lo, (long long)hi, (long long)biggest);
    }
}

/* Requests that exercise every unit kind: runs of contexts with a 40-token common start
 * (clusters), contexts with several continuations, duplicates, and singles. */
#define N_REQ 96
static int32_t toks[N_REQ][120];

static size_t make_requests(pipe_request *r) {
    uint32_t seed = 11;
    int32_t  head[2][40];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 40; i++)
            head[h][i] = 1 + (int32_t)(lcg(&seed) % 399);
    size_t n = 0;
    for (int i = 0; i < N_REQ; i++) {
        int kind = i % 4, len = 10 + (int)(lcg(&seed) % 60), from;
        if (kind == 3 && i > 4) { /* a duplicate of an earlier request */
            r[n] = r[n - 3];
            n++;
            continue;
        }
        for (int k = 0; k < len; k++)
            toks[i][k] = 1 + (int32_t)(lcg(&seed) % 399);
        if (kind <= 1) { /* a cluster member: shared start, own context, a continuation */
            memcpy(toks[i], head[i % 8 < 4], sizeof head[0]);
            len += 40;
            from = len - 3;
        } else {
            from = len / 2;
        }
        r[n++] = (pipe_request){toks[i], (size_t)len, (size_t)from};
    }
    return n;
}

static void expect_same(const score_result *a, const score_result *b, size_t i) {
    cr_assert_eq(a->n_targets, b->n_targets, "request %zu", i);
    cr_expect_eq(memcmp(a->logprob, b->logprob, sizeof(float) * (size_t)a->n_targets), 0,
                 "request %zu: log-probs differ", i);
    cr_expect_eq(memcmp(a->is_greedy, b->is_greedy, (size_t)a->n_targets), 0, "request %zu", i);
    cr_expect(a->sum == b->sum && a->n_greedy == b->n_greedy, "request %zu: sums differ", i);
}

Test(dist_shard, shards_run_in_turn_merge_into_the_unsharded_result_bitwise) {
    assay_error  err = {0};
    model       *m   = model_load(MODEL, NULL, &err);
    pipe_request r[N_REQ];
    cr_assert(m, "%s", err.msg);
    size_t       n          = make_requests(r);
    score_result ref[N_REQ] = {{0}};
    pipe_counts  c1         = {0};
    cr_assert_eq(pipe_score_loglik_on(m, r, n, ref, &c1, NULL, NULL, &err), 0, "%s", err.msg);
    for (int size = 2; size <= 3; size++) {
        score_result part[3][N_REQ];
        memset(part, 0, sizeof part);
        pipe_counts cs[3] = {{0}};
        for (int rank = 0; rank < size; rank++) {
            pipe_shard sh = {.rank = rank, .size = size};
            cr_assert_eq(pipe_score_loglik_on(m, r, n, part[rank], &cs[rank], NULL, &sh, &err), 0,
                         "%s", err.msg);
            cr_expect(cs[rank].computed > 0, "rank %d of %d got no work", rank, size);
            cr_expect_eq(cs[rank].naive, c1.naive);
        }
        for (size_t i = 0; i < n; i++) {
            int by = 0, who = -1;
            for (int rank = 0; rank < size; rank++)
                if (part[rank][i].n_targets) {
                    by++;
                    who = rank;
                }
            cr_assert_eq(by, 1, "%d ranks of %d scored request %zu", by, size, i);
            expect_same(&part[who][i], &ref[i], i);
        }
        for (int rank = 0; rank < size; rank++)
            score_results_free(part[rank], (int)n);
    }
    score_results_free(ref, (int)n);
    model_free(m);
}

Test(dist_shard, a_resumed_call_loads_its_results_and_computes_nothing) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    assay_error  err = {0};
    model       *m   = model_load(MODEL, NULL, &err);
    pipe_request r[N_REQ];
    cr_assert(m, "%s", err.msg);
    size_t       n        = make_requests(r);
    score_result a[N_REQ] = {{0}}, b[N_REQ] = {{0}};
    pipe_counts  ca = {0}, cb = {0};
    pipe_shard   sh = {.rank = 1, .size = 2, .resume_dir = dir, .resume_key = MODEL};
    cr_assert_eq(pipe_score_loglik_on(m, r, n, a, &ca, NULL, &sh, &err), 0, "%s", err.msg);
    cr_assert_eq(pipe_score_loglik_on(m, r, n, b, &cb, NULL, &sh, &err), 0, "%s", err.msg);
    cr_expect(ca.computed > 0);
    cr_expect_eq(cb.computed, 0, "the second call computed %lld positions", (long long)cb.computed);
    cr_expect_eq(cb.scored, ca.scored);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(a[i].n_targets != 0, b[i].n_targets != 0, "request %zu", i);
        if (a[i].n_targets)
            expect_same(&b[i], &a[i], i);
    }
    /* another key (another model) does not see those files */
    pipe_counts cc = {0};
    sh.resume_key  = "another model";
    score_results_free(b, (int)n);
    memset(b, 0, sizeof b);
    cr_assert_eq(pipe_score_loglik_on(m, r, n, b, &cc, NULL, &sh, &err), 0, "%s", err.msg);
    cr_expect_eq(cc.computed, ca.computed);
    score_results_free(a, (int)n);
    score_results_free(b, (int)n);
    model_free(m);
}

Test(dist_shard, perplexity_windows_split_between_ranks_add_up_to_one_process) {
    assay_error err = {0};
    model      *m   = model_load(MODEL, NULL, &err);
    cr_assert(m, "%s", err.msg);
    uint32_t seed = 3;
    int32_t  ids[2][700];
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 700; i++)
            ids[d][i] = 1 + (int32_t)(lcg(&seed) % 399);
    ppl_stats     whole[2] = {{0}}, parts[2][2];
    pipe_doc      docs[2]  = {{"a", ids[0], 700, &whole[0]}, {"b", ids[1], 500, &whole[1]}};
    pipe_ppl_plan plan;
    cr_assert_eq(pipe_ppl_plan_make(&plan, docs, 2, 0, 64, 64, &err), 0, "%s", err.msg);
    pipe_counts c = {0};
    cr_assert_eq(pipe_ppl_run_on(m, &plan, docs, 0, MODEL, &c, NULL, NULL, &err), 0, "%s", err.msg);
    memset(parts, 0, sizeof parts);
    for (int rank = 0; rank < 2; rank++) {
        pipe_doc pd[2] = {{"a", ids[0], 700, &parts[rank][0]}, {"b", ids[1], 500, &parts[rank][1]}};
        pipe_shard  sh = {.rank = rank, .size = 2};
        pipe_counts cr = {0};
        cr_assert_eq(pipe_ppl_run_on(m, &plan, pd, 0, MODEL, &cr, NULL, &sh, &err), 0, "%s",
                     err.msg);
        cr_expect(cr.computed > 0 && cr.computed < c.computed, "rank %d: %lld of %lld", rank,
                  (long long)cr.computed, (long long)c.computed);
    }
    for (int d = 0; d < 2; d++) {
        cr_expect_eq(parts[0][d].tokens + parts[1][d].tokens, whole[d].tokens);
        /* the two halves are summed separately here (real ranks add every window in order and
         * match bitwise, see dist_mpi): two double sums of ~700 terms differ by rounding only */
        double sum = parts[0][d].nll + parts[1][d].nll;
        cr_expect(fabs(sum - whole[d].nll) <= 1e-12 * fabs(whole[d].nll), "doc %d: %.17g vs %.17g",
                  d, sum, whole[d].nll);
    }
    pipe_ppl_plan_free(&plan);
    model_free(m);
}

/* ---- real ranks ---------------------------------------------------------------------------- */

/* mpirun as root needs these; --oversubscribe lets 2 ranks run on fewer cores. */
#define MPIRUN                                                                                     \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "                                   \
    "OMPI_MCA_rmaps_base_oversubscribe=1 "                                                         \
    "ASAN_OPTIONS=detect_leaks=0 timeout 120 mpirun -np 2 "

static void mpi_or_skip(void) {
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: mpirun not found\n");
        cr_skip_test("SKIP: mpirun not found");
    }
    if (!dist_mpi_compiled()) {
        fprintf(stderr, "SKIP: built without MPI\n");
        cr_skip_test("SKIP: built without MPI");
    }
}

/* A requests file for `assay score`: contexts with a long shared start and several choices. */
static void write_requests(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/req.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    const char *subj[] = {"alpha beta gamma delta", "one two three four five", "red green blue"};
    for (int i = 0; i < 60; i++)
        fprintf(f,
                "{\"id\": %d, \"context\": \"The following are questions about %s. Question "
                "%d: what comes after %d?\", \"continuation\": \" %d and more\"}\n",
                i, subj[i % 3], i / 3, i, i + (i % 4));
    fclose(f);
}

/* Runs `assay args` on 2 ranks; *out gets standard output, and standard error too unless
 * stdout_only. */
static int run_mpi_to(char **out, const char *env, const char *args, int stdout_only) {
    const char *bin = test_bin();
    char        cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s", env, MPIRUN, bin, args,
             stdout_only ? "2>/dev/null" : "2>&1");
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char  *buf = calloc(1, 1 << 20);
    size_t n   = fread(buf, 1, (1 << 20) - 1, p);
    buf[n]     = 0;
    int st     = pclose(p);
    *out       = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int run_mpi(char **out, const char *env, const char *args) {
    return run_mpi_to(out, env, args, 0);
}

Test(dist_mpi, two_ranks_give_the_same_perplexity_bits_as_one_process) {
    mpi_or_skip();
    char dir[64], args[1024], path[256], *o1 = NULL, *o2 = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/doc.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < 300; i++)
        fprintf(f, "Line %d of a document that is long enough for many windows. ", i);
    fclose(f);
    snprintf(args, sizeof args, "ppl " MODEL " %s --mode rolling --ctx 64 --json", path);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", test_bin(), args);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    o1       = calloc(1, 1 << 20);
    size_t n = fread(o1, 1, (1 << 20) - 1, p);
    o1[n]    = 0;
    cr_assert_eq(pclose(p), 0, "%s", o1);
    int rc = run_mpi_to(&o2, "", args, 1);
    cr_assert_eq(rc, 0, "%s", o2);
    cJSON *a = cJSON_Parse(o1), *b = cJSON_Parse(o2);
    cr_assert(a && b, "%s\n%s", o1, o2);
    cr_expect(cJSON_GetObjectItem(a, "windows")->valuedouble > 20);
    /* cJSON prints doubles that read back exactly, so equal text is equal bits */
    const char *keys[] = {"documents", "total", "windows"};
    for (int k = 0; k < 3; k++) {
        char *ta = cJSON_PrintUnformatted(cJSON_GetObjectItem(a, keys[k]));
        char *tb = cJSON_PrintUnformatted(cJSON_GetObjectItem(b, keys[k]));
        cr_expect(ta && tb && !strcmp(ta, tb), "%s differs:\n%s\n%s", keys[k], ta, tb);
        free(ta);
        free(tb);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(o1);
    free(o2);
}

Test(dist_mpi, two_ranks_write_the_same_scores_as_one_process) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    write_requests(dir);
    int rc =
        test_run(&o, "score " MODEL " --requests %s/req.jsonl --output %s/one.jsonl", dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(args, sizeof args, "score " MODEL " --requests %s/req.jsonl --output %s/two.jsonl",
             dir, dir);
    rc = run_mpi(&o, "", args);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/one.jsonl", dir);
    snprintf(p2, sizeof p2, "%s/two.jsonl", dir);
    char *a = test_read_file(p1), *b = test_read_file(p2);
    cr_assert(a && b && strlen(a) > 1000);
    cr_expect_str_eq(b, a);
    free(a);
    free(b);
}

Test(dist_mpi, a_failing_rank_fails_every_rank_with_its_message_and_no_hang) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    write_requests(dir);
    snprintf(args, sizeof args, "score " MODEL " --requests %s/req.jsonl --output %s/x.jsonl", dir,
             dir);
    int rc = run_mpi(&o, "ASSAY_TEST_FAIL_RANK=1", args);
    cr_expect_eq(rc, 3, "exit %d (124: timed out, a hang)\n%s", rc, o);
    const char *msg = "assay: rank 1: ASSAY_TEST_FAIL_RANK=1: this rank fails on purpose";
    char       *at  = strstr(o, msg);
    cr_expect(at, "%s", o);
    cr_expect(!at || !strstr(at + 1, msg), "printed more than once:\n%s", o);
    char path[256];
    snprintf(path, sizeof path, "%s/x.jsonl", dir);
    cr_expect(access(path, F_OK) != 0, "a failed run left %s", path);
    free(o);
}

Test(dist_mpi, a_rank_failing_alone_before_any_exchange_aborts_the_job_promptly) {
    mpi_or_skip();
    char dir[64], cmd[2048];
    test_tmpdir(dir, sizeof dir);
    write_requests(dir);
    /* two programs in one job (mpirun's A : B): rank 1 is given a file that does not exist and
     * fails while rank 0 waits to exchange results with it */
    const char *env = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                      "ASAN_OPTIONS=detect_leaks=0 timeout 120 mpirun --oversubscribe";
    snprintf(cmd, sizeof cmd,
             "%s -np 1 %s score " MODEL " --requests %s/req.jsonl : -np 1 %s score " MODEL
             " --requests %s/missing.jsonl 2>&1",
             env, test_bin(), dir, test_bin(), dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char  *o = calloc(1, 1 << 20);
    size_t n = fread(o, 1, (1 << 20) - 1, p);
    o[n]     = 0;
    int st   = pclose(p);
    int rc   = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    cr_expect_eq(rc, 2, "exit %d (124: timed out, a hang)\n%s", rc, o);
    cr_expect(strstr(o, "missing.jsonl: cannot open"), "%s", o);
    free(o);
}

Test(dist_mpi, a_killed_rank_ends_the_run_and_resume_completes_it_identically) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    write_requests(dir);
    int rc =
        test_run(&o, "score " MODEL " --requests %s/req.jsonl --output %s/one.jsonl", dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(args, sizeof args,
             "score " MODEL " --requests %s/req.jsonl --output %s/two.jsonl --resume %s/state", dir,
             dir, dir);
    /* rank 1 SIGKILLs itself after saving its window's results */
    rc = run_mpi(&o, "ASSAY_TEST_KILL_RANK=1 ASSAY_TEST_KILL_AFTER=0", args);
    cr_expect(rc != 0 && rc != 124, "exit %d (124: timed out, a hang)\n%s", rc, o);
    free(o);
    char p1[256], p2[256];
    snprintf(p2, sizeof p2, "%s/two.jsonl", dir);
    cr_expect(access(p2, F_OK) != 0, "a killed run left %s", p2);
    rc = run_mpi(&o, "", args);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect(strstr(o, ".rank1of2: reusing"), "rank 1 did not reuse its results:\n%s", o);
    free(o);
    snprintf(p1, sizeof p1, "%s/one.jsonl", dir);
    char *a = test_read_file(p1), *b = test_read_file(p2);
    cr_assert(a && b && strlen(a) > 1000);
    cr_expect_str_eq(b, a);
    free(a);
    free(b);
}

/* ---- assay eval on two ranks ------------------------------------------------------------------
 */

/* The scoring tasks of the lm-eval fixtures and gsm8k (generation: each rank its share of the
 * prompts), in windows of 3000 tokens so there are many. */
#define EVAL_ARGS                                                                                  \
    "eval " MODEL " --tasks mmlu,hellaswag,wikitext,gsm8k --data %s/data --limit 6 "               \
    "--max-gen-toks 8 --window-tokens 3000 --log-samples --output-path "

static void make_eval_data(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/data && for t in mmlu hellaswag wikitext; do ln -s \"$PWD/"
             "tests/fixtures/lmeval/data/$t\" %s/data/$t; done && ln -s \"$PWD/"
             "tests/fixtures/eval_gen/data/gsm8k\" %s/data/gsm8k",
             dir, dir, dir);
    cr_assert_eq(system(cmd), 0);
}

/* Samples line by line, equal but for the generation timings (ttft_s, latency_s), which differ
 * between any two runs. */
static void expect_same_samples(char *a, char *b, const char *pa, const char *pb) {
    char *sa = NULL, *sb = NULL;
    char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb);
    int   line = 1;
    for (; la && lb; la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), line++) {
        cJSON *ja = cJSON_Parse(la), *jb = cJSON_Parse(lb);
        cr_assert(ja && jb, "%s:%d", pb, line);
        const char *timings[] = {"ttft_s", "latency_s"};
        for (int k = 0; k < 2; k++) {
            cJSON_DeleteItemFromObject(ja, timings[k]);
            cJSON_DeleteItemFromObject(jb, timings[k]);
        }
        char *ta = cJSON_PrintUnformatted(ja), *tb = cJSON_PrintUnformatted(jb);
        cr_expect(ta && tb && !strcmp(ta, tb), "%s:%d differs from %s", pb, line, pa);
        free(ta);
        free(tb);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
    }
    cr_expect(!la && !lb, "%s and %s have different numbers of lines", pa, pb);
}

/* Two results.json objects equal key by key but for the "assay" block (times, ranks, cost). */
static void expect_same_results(const cJSON *ja, const cJSON *jb) {
    cr_assert(ja && jb);
    for (cJSON *k = ja->child; k; k = k->next) {
        if (!strcmp(k->string, "assay"))
            continue;
        char *ta = cJSON_PrintUnformatted(k);
        char *tb = cJSON_PrintUnformatted(cJSON_GetObjectItem(jb, k->string));
        cr_expect(ta && tb && !strcmp(ta, tb), "results.json: \"%s\" differs", k->string);
        free(ta);
        free(tb);
    }
}

/* Every file of one/ equals two/'s, results.json except its "assay" block (timings, ranks). */
static void expect_same_eval_outputs(const char *one, const char *two) {
    DIR *d = opendir(one);
    cr_assert(d, "%s", one);
    int            n_samples = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "samples_", 8) && strcmp(e->d_name, "results.json"))
            continue; /* the history file records times */
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/%s", one, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s", two, e->d_name);
        char *a = test_read_file(pa), *b = test_read_file(pb);
        cr_assert(a && b, "%s or %s is missing", pa, pb);
        if (strcmp(e->d_name, "results.json")) {
            n_samples++;
            expect_same_samples(a, b, pa, pb);
        } else {
            cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
            expect_same_results(ja, jb);
            cJSON *as = cJSON_GetObjectItem(jb, "assay");
            cr_expect_eq(cJSON_GetObjectItem(as, "ranks")->valueint, 2);
            cJSON *pr = cJSON_GetObjectItem(as, "per_rank");
            cr_expect_eq(cJSON_GetArraySize(pr), 2);
            for (int r = 0; r < 2; r++)
                cr_expect(
                    cJSON_GetObjectItem(cJSON_GetArrayItem(pr, r), "tokens_computed")->valuedouble >
                        0,
                    "rank %d computed nothing", r);
            cJSON_Delete(ja);
            cJSON_Delete(jb);
        }
        free(a);
        free(b);
    }
    closedir(d);
    cr_expect_eq(n_samples, 6, "samples files: %d", n_samples);
    /* one history record for the run, written by rank 0 alone */
    char *o  = NULL;
    int   rc = test_run(&o, "history --history %s/history.sqlite --task hellaswag --json", two);
    cr_assert_eq(rc, 0, "%s", o);
    cJSON *h = cJSON_Parse(o);
    cr_assert(h, "%s", o);
    cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItem(h, "trends"), 0);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(t, "points")), 1, "%s", o);
    cJSON_Delete(h);
    free(o);
}

Test(dist_mpi, eval_on_two_ranks_writes_the_results_and_samples_of_one_process) {
    mpi_or_skip();
    char dir[64], args[1024], one[128], two[128], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    make_eval_data(dir);
    int rc = test_run(&o, EVAL_ARGS "%s", dir, one);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(args, sizeof args, EVAL_ARGS "%s", dir, two);
    rc = run_mpi(&o, "", args);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    expect_same_eval_outputs(one, two);
}

Test(dist_mpi, eval_killed_mid_run_then_resumed_equals_one_process) {
    mpi_or_skip();
    char dir[64], args[1024], one[128], two[128], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    make_eval_data(dir);
    int rc = test_run(&o, EVAL_ARGS "%s", dir, one);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(args, sizeof args, EVAL_ARGS "%s --resume %s/state", dir, two, dir);
    /* rank 1 SIGKILLs itself in its third window, after two complete ones */
    rc = run_mpi(&o, "ASSAY_TEST_KILL_RANK=1 ASSAY_TEST_KILL_AFTER=2", args);
    cr_expect(rc != 0 && rc != 124, "exit %d (124: timed out, a hang)\n%s", rc, o);
    free(o);
    char res[256];
    snprintf(res, sizeof res, "%s/results.json", two);
    cr_expect(access(res, F_OK) != 0, "a killed run left %s", res);
    rc = run_mpi(&o, "", args);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect(strstr(o, ".rank1of2: reusing"), "rank 1 reused nothing:\n%s", o);
    free(o);
    expect_same_eval_outputs(one, two);
}

/* ---- generation tasks on two ranks ------------------------------------------------------------
 */

/* gsm8k alone (60 prompts), 16 new tokens each; ASSAY_TEST_GEN_WINDOW makes windows of a few
 * prompts per rank so a run has several. */
#define GEN_ARGS                                                                                   \
    "eval " MODEL " --tasks gsm8k --data tests/fixtures/eval_gen/data --max-gen-toks 16 "          \
    "--log-samples --output-path "
#define GEN_PROMPTS 60

/* results.json but its "assay" block and samples_gsm8k.jsonl but the timings equal one/'s; the
 * cost block counts the same prompts and tokens. */
static void expect_same_generations(const char *one, const char *two) {
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/samples_gsm8k.jsonl", one);
    snprintf(pb, sizeof pb, "%s/samples_gsm8k.jsonl", two);
    char *a = test_read_file(pa), *b = test_read_file(pb);
    cr_assert(a && b && strlen(a) > 1000, "%s or %s is missing", pa, pb);
    expect_same_samples(a, b, pa, pb);
    free(a);
    free(b);
    snprintf(pa, sizeof pa, "%s/results.json", one);
    snprintf(pb, sizeof pb, "%s/results.json", two);
    cJSON *ja = test_read_json(pa), *jb = test_read_json(pb);
    expect_same_results(ja, jb);
    const char *counts[] = {"prompts", "prompt_tokens", "new_tokens"};
    cJSON *ga = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ja, "assay"), "cost"),
                                    "generation");
    cJSON *gb = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(jb, "assay"), "cost"),
                                    "generation");
    cr_assert(ga && gb);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(cJSON_GetObjectItem(ga, counts[i])->valuedouble,
                     cJSON_GetObjectItem(gb, counts[i])->valuedouble, "cost.generation.%s",
                     counts[i]);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

/* Each rank's generated_prompts from two/results.json into got[2]. */
static void per_rank_prompts(const char *two, double got[2]) {
    char path[256];
    snprintf(path, sizeof path, "%s/results.json", two);
    cJSON *j = test_read_json(path);
    cr_assert(j, "%s", path);
    cJSON *pr = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "assay"), "per_rank");
    cr_assert_eq(cJSON_GetArraySize(pr), 2);
    for (int r = 0; r < 2; r++) {
        cJSON *v = cJSON_GetObjectItem(cJSON_GetArrayItem(pr, r), "generated_prompts");
        cr_assert(cJSON_IsNumber(v), "rank %d has no generated_prompts", r);
        got[r] = v->valuedouble;
    }
    cJSON_Delete(j);
}

static int count_str(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p++)
        n++;
    return n;
}

Test(dist_mpi, generation_on_two_ranks_gives_one_process_results_with_half_the_prompts_each) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    int rc = test_run(&o, GEN_ARGS "%s/one", dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    /* 7 prompts per rank and window: windows of 14, the last one of 4 */
    snprintf(args, sizeof args, GEN_ARGS "%s/two", dir);
    rc = run_mpi(&o, "ASSAY_TEST_GEN_WINDOW=7", args);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    char one[128], two[128];
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    expect_same_generations(one, two);
    /* every prompt of this fixture costs the same (each is cut to ctx - max_gen_toks tokens), so
     * a balanced shard is half of them, exactly */
    double got[2];
    per_rank_prompts(two, got);
    cr_expect(got[0] == GEN_PROMPTS / 2 && got[1] == GEN_PROMPTS / 2,
              "ranks generated %g and %g of %d prompts", got[0], got[1], GEN_PROMPTS);
}

Test(dist_mpi, a_rank_failing_in_generation_fails_the_run_with_its_message_and_no_hang) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, GEN_ARGS "%s/two", dir);
    /* gsm8k alone: the first sharded call is its first generation window */
    int rc = run_mpi(&o, "ASSAY_TEST_FAIL_RANK=1 ASSAY_TEST_GEN_WINDOW=7", args);
    cr_expect_eq(rc, 3, "exit %d (124: timed out, a hang)\n%s", rc, o);
    const char *msg = "assay: rank 1: ASSAY_TEST_FAIL_RANK=1: this rank fails on purpose";
    cr_expect_eq(count_str(o, msg), 1, "the message, once:\n%s", o);
    char path[256];
    snprintf(path, sizeof path, "%s/two/results.json", dir);
    cr_expect(access(path, F_OK) != 0, "a failed run left %s", path);
    free(o);
}

Test(dist_mpi, a_rank_killed_in_generation_then_resumed_gives_one_process_results) {
    mpi_or_skip();
    char dir[64], args[1024], *o = NULL, one[128], two[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    int rc = test_run(&o, GEN_ARGS "%s", one);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    snprintf(args, sizeof args, GEN_ARGS "%s --resume %s/state", two, dir);
    /* windows of 5 prompts per rank (6 windows); rank 1 SIGKILLs itself in its third, after
     * saving it */
    rc =
        run_mpi(&o, "ASSAY_TEST_GEN_WINDOW=5 ASSAY_TEST_KILL_RANK=1 ASSAY_TEST_KILL_AFTER=2", args);
    cr_expect(rc != 0 && rc != 124, "exit %d (124: timed out, a hang)\n%s", rc, o);
    free(o);
    char res[256];
    snprintf(res, sizeof res, "%s/results.json", two);
    cr_expect(access(res, F_OK) != 0, "a killed run left %s", res);
    rc = run_mpi(&o, "ASSAY_TEST_GEN_WINDOW=5", args);
    cr_assert_eq(rc, 0, "%s", o);
    /* rank 1 saved three windows before it died; rank 0 two or three (it may have been killed
     * while generating its third); the other windows were generated in this run */
    int r1 = count_str(o, ".gen.rank1of2: reusing 5 generations");
    int r0 = count_str(o, ".gen.rank0of2: reusing 5 generations");
    cr_expect_eq(r1, 3, "rank 1 reused %d windows:\n%s", r1, o);
    cr_expect(r0 >= 2 && r0 <= 3, "rank 0 reused %d windows:\n%s", r0, o);
    free(o);
    expect_same_generations(one, two);
}

/* ---- --resume keys and ppl --resume ------------------------------------------------------------
 */

Test(dist_resume, the_key_follows_the_weights_not_the_directory_name) {
    char dir[64], cmd[512], a[65], b[65], c[65];
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "cp -rp " MODEL " %s/copy && cp -r " MODEL " %s/fresh", dir, dir);
    cr_assert_eq(system(cmd), 0);
    assay_error err = {0};
    char        path[256];
    cr_assert_eq(pipe_resume_key(MODEL, a, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/copy", dir);
    cr_assert_eq(pipe_resume_key(path, b, &err), 0, "%s", err.msg);
    cr_expect_str_eq(b, a, "a copy with the same files and times has another key");
    /* the same headers, other values: the files' times tell them apart */
    snprintf(cmd, sizeof cmd, "touch -d '2001-01-01' %s/copy/*.safetensors", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(pipe_resume_key(path, c, &err), 0, "%s", err.msg);
    cr_expect_str_neq(c, a, "a rewritten weights file kept the key");
    snprintf(path, sizeof path, "%s/missing", dir);
    cr_expect_neq(pipe_resume_key(path, c, &err), 0);
}

Test(dist_resume, score_reuses_results_across_directory_names_of_the_same_checkpoint) {
    char dir[64], cmd[512], *o = NULL;
    test_tmpdir(dir, sizeof dir);
    write_requests(dir);
    snprintf(cmd, sizeof cmd, "cp -rp " MODEL " %s/copy", dir);
    cr_assert_eq(system(cmd), 0);
    int rc =
        test_run(&o, "score " MODEL " --requests %s/req.jsonl --output %s/a.jsonl --resume %s/st",
                 dir, dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    rc = test_run(&o, "score %s/copy --requests %s/req.jsonl --output %s/b.jsonl --resume %s/st",
                  dir, dir, dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect(strstr(o, ": reusing"), "the same checkpoint elsewhere reused nothing:\n%s", o);
    free(o);
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/a.jsonl", dir);
    snprintf(pb, sizeof pb, "%s/b.jsonl", dir);
    char *a = test_read_file(pa), *b = test_read_file(pb);
    cr_assert(a && b && strlen(a) > 1000);
    cr_expect_str_eq(b, a);
    free(a);
    free(b);
    /* rewritten weights under the first name: nothing reused */
    snprintf(cmd, sizeof cmd, "touch %s/copy/*.safetensors", dir);
    cr_assert_eq(system(cmd), 0);
    rc = test_run(&o, "score %s/copy --requests %s/req.jsonl --resume %s/st", dir, dir, dir);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect(!strstr(o, ": reusing"), "results of other weights were reused:\n%s", o);
    free(o);
}

/* `assay ppl ... --json` with standard error into dir/err<k>.txt; returns the JSON's "total". */
static char *ppl_total(const char *dir, const char *doc, int k, char **err_text) {
    char cmd[1024], ep[256];
    snprintf(ep, sizeof ep, "%s/err%d.txt", dir, k);
    snprintf(cmd, sizeof cmd,
             "%s ppl " MODEL " %s --mode rolling --ctx 64 --json --resume %s/st 2>%s", test_bin(),
             doc, dir, ep);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char  *out = calloc(1, 1 << 20);
    size_t n   = fread(out, 1, (1 << 20) - 1, p);
    out[n]     = 0;
    cr_assert_eq(pclose(p), 0, "%s", out);
    *err_text = test_read_file(ep);
    cJSON *j  = cJSON_Parse(out);
    cr_assert(j, "%s", out);
    char *t = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "total"));
    cJSON_Delete(j);
    free(out);
    return t;
}

Test(dist_resume, ppl_resumed_reuses_its_windows_and_gives_the_same_bits) {
    char dir[64], path[256], *e1 = NULL, *e2 = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/doc.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < 100; i++)
        fprintf(f, "Line %d of a document that is long enough for many windows. ", i);
    fclose(f);
    char *t1 = ppl_total(dir, path, 1, &e1), *t2 = ppl_total(dir, path, 2, &e2);
    cr_assert(t1 && t2 && e1 && e2);
    cr_expect(!strstr(e1, "reusing"), "%s", e1);
    cr_expect(strstr(e2, ": reusing"), "the second run reused nothing:\n%s", e2);
    /* cJSON prints doubles that read back exactly, so equal text is equal bits */
    cr_expect_str_eq(t2, t1);
    free(t1), free(t2), free(e1), free(e2);
}

Test(dist_resume, a_damaged_generation_file_is_generated_again_with_the_same_result) {
    char dir[64], *o = NULL, one[128], two[128], cmd[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    setenv("ASSAY_TEST_GEN_WINDOW", "20", 1); /* three windows */
    int rc = test_run(&o, GEN_ARGS "%s --resume %s/st", one, dir);
    cr_assert_eq(rc, 0, "%s", o);
    free(o);
    /* three windows' files: one cut short, one overwritten with other bytes */
    snprintf(cmd, sizeof cmd,
             "cd %s/st && set -- *.gen.rank0of1 && test $# -eq 3 && truncate -s 100 \"$1\" && "
             "head -c 300 /dev/urandom > \"$2\"",
             dir);
    cr_assert_eq(system(cmd), 0, "expected 3 generation files in %s/st", dir);
    rc = test_run(&o, GEN_ARGS "%s --resume %s/st", two, dir);
    cr_assert_eq(rc, 0, "%s", o);
    cr_expect_eq(count_str(o, "not usable as partial results; generating them again"), 2, "%s", o);
    cr_expect_eq(count_str(o, ": reusing 20 generations"), 1, "%s", o);
    free(o);
    expect_same_generations(one, two);
}

/* A GGUF file as MODEL: the key is its header hash plus the file's size and times (it has no
 * directory to list), so `--resume` works for it and a rewritten file gets another key. */
Test(dist_resume, a_gguf_file_has_a_key_that_follows_the_file) {
    char dir[64], cmd[512], a[65], b[65], c[65], path[256];
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "cp -p tests/fixtures/gguf/tiny.gguf %s/m.gguf", dir);
    cr_assert_eq(system(cmd), 0);
    assay_error err = {0};
    cr_assert_eq(pipe_resume_key("tests/fixtures/gguf/tiny.gguf", a, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    cr_assert_eq(pipe_resume_key(path, b, &err), 0, "%s", err.msg);
    cr_expect_str_eq(b, a, "a copy with the same bytes and times has another key");
    snprintf(cmd, sizeof cmd, "touch -d '2001-01-01' %s/m.gguf", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(pipe_resume_key(path, c, &err), 0, "%s", err.msg);
    cr_expect_str_neq(c, a, "a rewritten GGUF kept the key");
}
