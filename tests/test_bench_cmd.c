/* tests/test_bench_cmd.c — `assay bench`: the gate fires on an injected 50% slowdown
 * (ASSAY_BENCH_SLOWDOWN, test-only) and not on an unchanged rerun; baselines are checked. */
#include "tests/helpers.h"

#define MODEL "tests/fixtures/models/llama"

/* Under ASan the timings mean nothing and a run takes a minute: the paths (baseline saved, read,
 * gated, history) still run once, the gate's verdicts are checked in normal builds only. */
#if defined(__SANITIZE_ADDRESS__)
#define BENCH_TIMING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BENCH_TIMING 0
#endif
#endif
#ifndef BENCH_TIMING
#define BENCH_TIMING 1
#endif
#define REPEAT (BENCH_TIMING ? "7" : "3")

static cJSON *bench_json(int *rc, const char *env, const char *args) {
    char *out = NULL, cmd[1024];
    snprintf(cmd, sizeof cmd, "bench " MODEL " --json %s 2>/dev/null", args);
    if (env)
        setenv("ASSAY_BENCH_SLOWDOWN", env, 1);
    *rc = test_run(&out, "%s", cmd);
    unsetenv("ASSAY_BENCH_SLOWDOWN");
    cJSON *j = cJSON_Parse(out);
    cr_assert(j, "rc %d: %s", *rc, out);
    free(out);
    return j;
}

static double geomean_change(cJSON *j) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "gate"), "geomean"),
                               "change")
        ->valuedouble;
}

/* The thresholds (bench --help) were set from reruns on a loaded 2-core machine; one rerun
 * each way is what CI does too. */
Test(bench_cmd, an_injected_50_percent_slowdown_fires_the_gate_and_a_rerun_does_not,
     .timeout = 480) {
    char dir[256], args[600];
    int  rc;
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--repeat %s --save-baseline %s/base.json --history %s/h.db",
             REPEAT, dir, dir);
    cJSON *b = bench_json(&rc, NULL, args);
    cr_assert_eq(rc, 0);
    cJSON *it = cJSON_GetObjectItem(b, "items");
    cr_assert_eq(cJSON_GetArraySize(it), 5);
    cr_assert(
        cJSON_GetObjectItem(cJSON_GetObjectItem(it, "decode_b16"), "tokens_per_s")->valuedouble >
        0);
    cJSON_Delete(b);
    /* the saved run went into the history as task "bench" */
    char *out = NULL;
    cr_assert_eq(test_run(&out, "history --history %s/h.db --task bench", dir), 0, "%s", out);
    cr_assert(strstr(out, "bench / decode_b4_norm") && strstr(out, "bench / score_tokens_per_s"),
              "%s", out);
    free(out);
    snprintf(args, sizeof args, "--repeat %s --baseline %s/base.json", REPEAT, dir);
    cJSON *same = bench_json(&rc, NULL, args);
    cr_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(same, "gate"), "geomean"));
    if (!BENCH_TIMING) {
        cJSON_Delete(same);
        return;
    }
    if (rc != 0) {
        /* CI's gate (.ci/run) fails only on a regression flagged twice in a row: a rerun beside
         * the other tests of this suite has been flagged once (+13-14% geomean) */
        fprintf(stderr, "bench_cmd: unchanged rerun flagged once (geomean %+.1f%%); again\n",
                100 * geomean_change(same));
        cJSON_Delete(same);
        same = bench_json(&rc, NULL, args);
    }
    cr_assert_eq(rc, 0, "unchanged rerun flagged twice: geomean %+.1f%%",
                 100 * geomean_change(same));
    /* a loaded machine can hide much of an injected slowdown (the injection is a busy loop,
     * which memory contention does not slow as it slows the model's work): an injected 20% read
     * +6% at load average 10 on 2 cores, and +5% to +12% in three runs in a row beside a build
     * (2026-12-01). 50% leaves a margin over the gate's 12% floor; the gate must catch it in one
     * of three runs, as CI needs a regression twice in a row to fail */
    cJSON *slow = NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        cJSON_Delete(slow);
        slow = bench_json(&rc, "0.5", args);
        if (rc == 1)
            break;
        fprintf(stderr, "bench_cmd: 50%% slowdown run %d: geomean %+.1f%%, not flagged\n",
                attempt + 1, 100 * geomean_change(slow));
    }
    cr_assert_eq(rc, 1, "50%% slowdown missed three times: geomean %+.1f%%",
                 100 * geomean_change(slow));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(slow, "gate"), "regression")));
    cr_assert(geomean_change(slow) > geomean_change(same) + 0.1);
    cJSON_Delete(same);
    cJSON_Delete(slow);
}

Test(bench_cmd, a_baseline_that_is_not_one_or_ran_other_work_is_exit_2) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "junk.json", "{\"hello\": 1}");
    cr_assert_eq(test_run(&out, "bench " MODEL " --repeat 3 --baseline %s/junk.json", dir), 2, "%s",
                 out);
    cr_assert(strstr(out, "not an assay bench baseline"), "%s", out);
    free(out);
    test_write_file(dir, "other.json",
                    "{\"bench_version\": 1, \"repeat\": 3, \"items\": {\"score\": {\"tokens\": 7, "
                    "\"norm_median\": 1, \"norm_spread\": 0}}}");
    cr_assert_eq(test_run(&out, "bench " MODEL " --repeat 3 --baseline %s/other.json", dir), 2,
                 "%s", out);
    cr_assert(strstr(out, "ran another workload"), "%s", out);
    free(out);
}
