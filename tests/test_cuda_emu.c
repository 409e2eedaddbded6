/* tests/test_cuda_emu.c — the CUDA build emulated on the CPU (make cuda-emu: build/emu/assay, see
 * tests/gpu/emu/) against the CPU backend of the same binary, on one tiny fixture: per-token
 * log-probs within the bf16 tolerance of tests/gpu/parity.py (separate contexts, shared contexts
 * through the KV cache, a long request), and bitwise batch invariance (one request alone vs in
 * the batch). Then CUDA graphs for decode passes: the same greedy tokens and bitwise the same
 * log-probs with graphs on and off (ASSAY_CUDA_GRAPHS=0), graphs really replayed, and a capture
 * that makes a call CUDA refuses while capturing falls back to eager with the same results.
 * Skipped, with a SKIP line, when build/emu/assay was not built (make cuda-emu; make
 * cuda-emu-check runs the full comparison). */
#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

#include "runtime/cuda/cuda_plan.h"
#include "tests/helpers.h"

#define EMU_BIN "build/emu/assay"
#define EMU_MODEL "tests/fixtures/models/llama"

static char *emu_read_cmd(const char *cmd) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, n = 0, r;
    char  *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    cr_assert_eq(pclose(p), 0, "%s failed: %.2000s", cmd, buf);
    return buf;
}

static cJSON *emu_score(const char *device, const char *req) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, EMU_BIN " score " EMU_MODEL " --requests %s --json --device %s", req,
             device);
    char  *out = emu_read_cmd(cmd);
    cJSON *j   = cJSON_Parse(out);
    cr_assert_not_null(j, "%s: not JSON: %.500s", cmd, out);
    free(out);
    cJSON *r = cJSON_GetObjectItem(j, "results");
    cr_assert(cJSON_IsArray(r));
    return j;
}

// 7 requests of random ids into `all`, request `only` alone into `one`: requests 2..4 share one
// context (the KV-cache path), request 6 is long.
static void emu_write_requests(const char *all, const char *one, int only) {
    FILE *f = fopen(all, "w"), *g = fopen(one, "w");
    cr_assert(f && g);
    unsigned s = 12345;
    for (int i = 0; i < 7; i++) {
        char     line[8192];
        int      n     = 0;
        int      n_ctx = i == 6 ? 150 : 5 + 3 * i, n_cont = i == 6 ? 40 : 2 + i;
        unsigned cs = i >= 2 && i <= 4 ? 777u : s + 1;
        n += snprintf(line + n, sizeof line - n, "{\"id\": %d, \"context_ids\": [", i);
        for (int k = 0; k < n_ctx; k++) {
            cs = cs * 1103515245u + 12345u;
            n += snprintf(line + n, sizeof line - n, "%s%u", k ? ", " : "", 3 + (cs >> 16) % 380);
        }
        n += snprintf(line + n, sizeof line - n, "], \"continuation_ids\": [");
        for (int k = 0; k < n_cont; k++) {
            s = s * 1103515245u + 12345u;
            n += snprintf(line + n, sizeof line - n, "%s%u", k ? ", " : "", 3 + (s >> 16) % 380);
        }
        snprintf(line + n, sizeof line - n, "]}\n");
        fputs(line, f);
        if (i == only)
            fputs(line, g);
    }
    fclose(f);
    fclose(g);
}

Test(cuda_emu, emulated_cuda_matches_the_cpu_and_is_batch_invariant, .timeout = 120) {
    if (access(EMU_BIN, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s not built (make cuda-emu)\n", EMU_BIN);
        cr_skip_test("SKIP: " EMU_BIN " not built (make cuda-emu)");
    }
    char dir[] = "/tmp/assay-emu-XXXXXX", all[256], one[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(all, sizeof all, "%s/all.jsonl", dir);
    snprintf(one, sizeof one, "%s/one.jsonl", dir);
    emu_write_requests(all, one, 5);
    cJSON *cpu = emu_score("cpu", all), *gpu = emu_score("cuda", all),
          *alone = emu_score("cuda", one);
    cJSON *rc = cJSON_GetObjectItem(cpu, "results"), *rg = cJSON_GetObjectItem(gpu, "results");
    cr_assert_eq(cJSON_GetArraySize(rc), 7);
    cr_assert_eq(cJSON_GetArraySize(rg), 7);
    for (int i = 0; i < 7; i++) {
        cJSON *a = cJSON_GetObjectItem(cJSON_GetArrayItem(rc, i), "logprobs");
        cJSON *b = cJSON_GetObjectItem(cJSON_GetArrayItem(rg, i), "logprobs");
        cr_assert_eq(cJSON_GetArraySize(a), cJSON_GetArraySize(b));
        for (int k = 0; k < cJSON_GetArraySize(a); k++) {
            double x = cJSON_GetArrayItem(a, k)->valuedouble;
            double y = cJSON_GetArrayItem(b, k)->valuedouble;
            cr_assert(isfinite(y) && fabs(x - y) <= 0.1 + 0.02 * fabs(x),
                      "request %d token %d: cpu %.6g, emulated cuda %.6g", i, k, x, y);
        }
    }
    cJSON *b3 = cJSON_GetObjectItem(cJSON_GetArrayItem(rg, 5), "logprobs");
    cJSON *a3 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(alone, "results"), 0),
                                    "logprobs");
    cr_assert_eq(cJSON_GetArraySize(a3), cJSON_GetArraySize(b3));
    for (int k = 0; k < cJSON_GetArraySize(a3); k++)
        cr_assert_eq(cJSON_GetArrayItem(a3, k)->valuedouble, cJSON_GetArrayItem(b3, k)->valuedouble,
                     "request 5 token %d: alone and in the batch differ", k);
    cJSON_Delete(cpu);
    cJSON_Delete(gpu);
    cJSON_Delete(alone);
    unlink(all);
    unlink(one);
    rmdir(dir);
}

/* ---- CUDA graphs ----------------------------------------------------------------------------- */

typedef struct emu_graph_run {
    cJSON *json;
    long   decode, captured, replayed, eager; /* the backend's ASSAY_CUDA_GRAPH_STATS line */
    int    graphs_on, noted;                  /* "on" in that line; the capture-failure note */
    int    refused; /* the note names the runtime's refusal of a call during capture */
} emu_graph_run;

/* build/emu/assay ARGS --json --device cuda under the environment settings ENV, with graph
 * counts on stderr. */
static emu_graph_run emu_graph_cmd(const char *dir, const char *env, const char *args) {
    char cmd[2048], errpath[512];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd,
             "env OMP_WAIT_POLICY=passive ASSAY_CUDA_GRAPH_STATS=1 %s " EMU_BIN
             " %s --json --device cuda 2>%s",
             env, args, errpath);
    emu_graph_run r   = {0};
    char         *out = emu_read_cmd(cmd);
    r.json            = cJSON_Parse(out);
    cr_assert_not_null(r.json, "%s: not JSON: %.500s", cmd, out);
    free(out);
    FILE *f = fopen(errpath, "r");
    cr_assert_not_null(f);
    char line[1024], state[8] = "";
    int  stats = 0;
    while (fgets(line, sizeof line, f)) {
        const char *g = strstr(line, "CUDA graphs ");
        if (g && sscanf(g,
                        "CUDA graphs %7[a-z]: %ld decode steps, %ld captured, %ld replayed, "
                        "%ld eager",
                        state, &r.decode, &r.captured, &r.replayed, &r.eager) == 5)
            stats = 1;
        if (strstr(line, "CUDA graph capture failed")) {
            r.noted   = 1;
            r.refused = strstr(line, "(cudaErrorStreamCaptureUnsupported)") != NULL;
        }
    }
    fclose(f);
    cr_assert(stats, "%s: no graph counts on stderr", cmd);
    r.graphs_on = strcmp(state, "on") == 0;
    return r;
}

static cJSON *emu_results(const emu_graph_run *r) {
    cJSON *res = cJSON_GetObjectItem(r->json, "results");
    cr_assert(cJSON_IsArray(res));
    return res;
}

/* Every result's array `field` equal element by element (tokens, or log-probs bit for bit: JSON
 * carries 17 significant digits, so a float's value comes back exactly). */
static void emu_assert_same(const emu_graph_run *a, const emu_graph_run *b, const char *field,
                            const char *what) {
    cJSON *ra = emu_results(a), *rb = emu_results(b);
    cr_assert_eq(cJSON_GetArraySize(ra), cJSON_GetArraySize(rb));
    cr_assert_gt(cJSON_GetArraySize(ra), 0);
    for (int i = 0; i < cJSON_GetArraySize(ra); i++) {
        cJSON *x = cJSON_GetObjectItem(cJSON_GetArrayItem(ra, i), field);
        cJSON *y = cJSON_GetObjectItem(cJSON_GetArrayItem(rb, i), field);
        cr_assert(cJSON_IsArray(x) && cJSON_IsArray(y), "result %d has no %s", i, field);
        cr_assert_eq(cJSON_GetArraySize(x), cJSON_GetArraySize(y), "%s: result %d's %s differ",
                     what, i, field);
        for (int k = 0; k < cJSON_GetArraySize(x); k++) {
            double u = cJSON_GetArrayItem(x, k)->valuedouble,
                   v = cJSON_GetArrayItem(y, k)->valuedouble;
            cr_assert(memcmp(&u, &v, sizeof u) == 0, "%s: result %d %s[%d]: %.17g vs %.17g", what,
                      i, field, k, u, v);
        }
    }
}

#define EMU_OR_SKIP()                                                                              \
    if (access(EMU_BIN, X_OK) != 0) {                                                              \
        fprintf(stderr, "SKIP: %s not built (make cuda-emu)\n", EMU_BIN);                          \
        cr_skip_test("SKIP: " EMU_BIN " not built (make cuda-emu)");                               \
    }

Test(cuda_emu, greedy_decoding_gives_the_same_tokens_with_and_without_graphs, .timeout = 300) {
    EMU_OR_SKIP();
    char dir[64], args[512];
    test_tmpdir(dir, sizeof dir);
    /* prompts of 3 to 20 tokens: the shorter ones finish at different steps, so the batch's row
     * count changes and each count gets its own graph */
    test_write_file(
        dir, "p.jsonl",
        "{\"prompt_ids\": [1, 5, 9, 33, 7], \"max_new_tokens\": 10}\n"
        "{\"prompt_ids\": [1, 50, 60]}\n"
        "{\"prompt_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, "
        "19, 20]}\n");
    snprintf(args, sizeof args, "generate " EMU_MODEL " --prompts %s/p.jsonl --max-new-tokens 20",
             dir);
    emu_graph_run on  = emu_graph_cmd(dir, "", args),
                  off = emu_graph_cmd(dir, "ASSAY_CUDA_GRAPHS=0", args);
    emu_assert_same(&on, &off, "tokens", "greedy tokens, graphs on vs off");
    cr_assert(on.graphs_on && !off.graphs_on);
    cr_assert_geq(on.captured, 2, "a graph for 3 rows and one for 2 rows (%ld)", on.captured);
    cr_assert_gt(on.replayed, 10, "graphs were replayed (%ld of %ld decode steps)", on.replayed,
                 on.decode);
    cr_assert_eq(on.decode, off.decode);
    cr_assert_eq(off.captured + off.replayed, 0);
    cJSON_Delete(on.json);
    cJSON_Delete(off.json);
}

/* Single-token continuations of shared contexts: each context's continuations are one decode
 * pass with real targets, so a graph's log-probs are compared with eager ones. A capture that
 * calls what CUDA forbids during capture (ASSAY_CUDA_GRAPH_FAULT) must be refused by the
 * emulation as by CUDA, noted, and answered eagerly with the same bits. */
Test(cuda_emu, graph_log_probs_equal_eager_ones_bit_for_bit_and_a_failed_capture_falls_back,
     .timeout = 300) {
    EMU_OR_SKIP();
    char dir[64], args[1024], path[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/req.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    unsigned s = 99;
    for (int c = 0, id = 0; c < 5; c++) {
        char ctx[1024];
        int  n = 0;
        for (int k = 0; k < 20 + c; k++) {
            s = s * 1103515245u + 12345u;
            n += snprintf(ctx + n, sizeof ctx - n, "%s%u", k ? ", " : "", 3 + (s >> 16) % 380);
        }
        for (int k = 0; k < 3; k++, id++) {
            s = s * 1103515245u + 12345u;
            fprintf(f, "{\"id\": %d, \"context_ids\": [%s], \"continuation_ids\": [%u]}\n", id, ctx,
                    3 + (s >> 16) % 380);
        }
    }
    fclose(f);
    snprintf(args, sizeof args, "score " EMU_MODEL " --requests %s", path);
    emu_graph_run on  = emu_graph_cmd(dir, "", args),
                  off = emu_graph_cmd(dir, "ASSAY_CUDA_GRAPHS=0", args);
    emu_assert_same(&on, &off, "logprobs", "log-probs, graphs on vs off");
    cr_assert_eq(on.decode, 5, "one decode pass per context (%ld)", on.decode);
    cr_assert_eq(on.captured, 1);
    cr_assert_eq(on.replayed, 5 - CUDA_GRAPH_WARMUP - 1);
    cr_assert_not(on.noted);
    const char *faults[] = {"sync", "malloc", "pageable"};
    for (int i = 0; i < 3; i++) {
        char env[64];
        snprintf(env, sizeof env, "ASSAY_CUDA_GRAPH_FAULT=%s", faults[i]);
        emu_graph_run bad = emu_graph_cmd(dir, env, args);
        cr_assert(bad.noted, "%s: the failed capture was not noted", env);
        cr_assert(bad.refused, "%s: the emulated runtime did not refuse the call", env);
        cr_assert(!bad.graphs_on && bad.captured == 0 && bad.replayed == 0, "%s", env);
        emu_assert_same(&bad, &off, "logprobs", env);
        cJSON_Delete(bad.json);
    }
    cJSON_Delete(on.json);
    cJSON_Delete(off.json);
}
