/* tests/test_cuda_emu.c — the CUDA build emulated on the CPU (make cuda-emu: build/emu/assay, see
 * tests/gpu/emu/) against the CPU backend of the same binary, on one tiny fixture: per-token
 * log-probs within the bf16 tolerance of tests/gpu/parity.py (separate contexts, shared contexts
 * through the KV cache, a long request), and bitwise batch invariance (one request alone vs in
 * the batch). Skipped, with a SKIP line, when build/emu/assay was not built (make cuda-emu;
 * make cuda-emu-check runs the full comparison). */
#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

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
