/* bench/engine_driver.c — runs one benchmark work item on the assay engine (runtime/model.h)
 * straight from token ids, so the numbers are the engine's: no tokenizer, no JSONL, no CLI.
 *
 *   engine_driver MODEL_DIR WORK.json [--threads N] [--batch-tokens N] [--repeats R]
 *                 [--device cpu|cuda[:N]|auto] [--fast]
 *
 * WORK.json (written by bench/engine_bench.py):
 *   {"kind": "score", "seqs": [[id, ...], ...]}      every token after the first is a target
 *   {"kind": "generate", "prompts": [[id, ...], ...], "max_new_tokens": N}   greedy, no EOS
 * One untimed warm-up call first (the first sequence or prompt, cut to 32 tokens / 2 new
 * tokens: it pages the weights in and lets OpenBLAS allocate its buffers), then R timed calls
 * (best kept). Prints one JSON object on stdout: load and run times, token counts, per-sequence
 * log-prob sums (score) or the generated ids (generate) so the caller can check that assay
 * and transformers did the same work, max RSS of the process, and the engine's own memory.
 * Exit 0 on success, 2 on bad input, 3 when the engine fails (its message on stderr). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "runtime/model.h"

typedef struct seqs {
    int32_t **ids;
    int      *len;
    int       n;
} seqs;

typedef struct gen_clock {
    double  t0;
    double *first; /* per request: seconds from t0 to its first token */
    double *last;  /* per request: seconds from t0 to its last token */
} gen_clock;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char  *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            char *nb = realloc(buf, cap = cap * 2 + 65536);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

static void seqs_free(seqs *s) {
    for (int i = 0; i < s->n; i++)
        free(s->ids[i]);
    free(s->ids);
    free(s->len);
    memset(s, 0, sizeof *s);
}

/* Reads an array of arrays of token ids; 0 on success. */
static int seqs_parse(seqs *s, const cJSON *arr, const char *path, const char *key) {
    memset(s, 0, sizeof *s);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1) {
        fprintf(stderr, "%s: \"%s\" must be a non-empty array of token-id arrays\n", path, key);
        return -1;
    }
    int n  = cJSON_GetArraySize(arr);
    s->ids = calloc((size_t)n, sizeof *s->ids);
    s->len = calloc((size_t)n, sizeof *s->len);
    if (!s->ids || !s->len)
        goto fail;
    s->n = n;
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(arr, i);
        int          m = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
        if (m < 1) {
            fprintf(stderr, "%s: %s[%d] must be a non-empty array of token ids\n", path, key, i);
            goto fail;
        }
        if (!(s->ids[i] = malloc((size_t)m * sizeof(int32_t))))
            goto fail;
        s->len[i] = m;
        for (int j = 0; j < m; j++) {
            const cJSON *v = cJSON_GetArrayItem(a, j);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0) {
                fprintf(stderr, "%s: %s[%d][%d] is not a token id\n", path, key, i, j);
                goto fail;
            }
            s->ids[i][j] = (int32_t)v->valuedouble;
        }
    }
    return 0;
fail:
    seqs_free(s);
    return -1;
}

static int on_token(void *user, int request, int32_t token, int index) {
    gen_clock *c = user;
    double     t = now_s() - c->t0;
    (void)token;
    if (index == 0)
        c->first[request] = t;
    c->last[request] = t;
    return 0;
}

static long max_rss_kb(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

/* Resident set now (VmRSS): the peak above includes the load, when the mapped checkpoint and
 * the converted weights are both resident. */
static long rss_now_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    long  kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* CPU seconds (user + system, all threads) of this process so far. */
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* Scoring: all sequences in one model_score call; returns seconds, fills sums (n). */
static int run_score(model *m, const seqs *s, int cut, double *sums, long *n_targets, double *secs,
                     assay_error *err) {
    score_request *reqs = calloc((size_t)s->n, sizeof *reqs);
    score_result  *out  = calloc((size_t)s->n, sizeof *out);
    int            rc   = ASSAY_ENOMEM;
    if (!reqs || !out)
        goto done;
    for (int i = 0; i < s->n; i++) {
        reqs[i].tokens     = s->ids[i];
        reqs[i].n_tokens   = cut > 0 && s->len[i] > cut ? cut : s->len[i];
        reqs[i].score_from = 1;
    }
    double t0 = now_s();
    rc        = model_score(m, reqs, s->n, out, err);
    *secs     = now_s() - t0;
    if (rc == 0) {
        *n_targets = 0;
        for (int i = 0; i < s->n; i++) {
            if (sums)
                sums[i] = out[i].sum;
            *n_targets += out[i].n_targets;
        }
    }
    score_results_free(out, s->n);
done:
    free(reqs);
    free(out);
    return rc;
}

static int run_generate(model *m, const seqs *s, int n_req, int max_new, gen_clock *clk,
                        gen_result *out, double *secs, assay_error *err) {
    gen_request *reqs = calloc((size_t)n_req, sizeof *reqs);
    if (!reqs)
        return ASSAY_ENOMEM;
    for (int i = 0; i < n_req; i++) {
        reqs[i].prompt         = s->ids[i];
        reqs[i].n_prompt       = s->len[i];
        reqs[i].max_new_tokens = max_new;
    }
    clk->t0 = now_s();
    /* no EOS ids: every request makes exactly max_new tokens, as transformers is told to */
    int rc = model_generate_greedy(m, reqs, n_req, NULL, 0, on_token, clk, out, err);
    *secs  = now_s() - clk->t0;
    free(reqs);
    return rc;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *work = NULL, *device = "cpu";
    int         threads = 0, batch_tokens = 0, repeats = 1, fast = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-tokens") && i + 1 < argc)
            batch_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--fast"))
            fast = 1;
        else if (!dir)
            dir = argv[i];
        else if (!work)
            work = argv[i];
        else
            dir = NULL, i = argc; /* too many: usage below */
    }
    if (!dir || !work || repeats < 1) {
        fprintf(stderr, "usage: engine_driver MODEL_DIR WORK.json [--threads N] "
                        "[--batch-tokens N] [--repeats R] [--device D] [--fast]\n");
        return 2;
    }

    int         status = 2;
    size_t      len    = 0;
    char       *text   = read_all(work, &len);
    cJSON      *root   = NULL;
    seqs        s      = {0};
    model      *m      = NULL;
    double     *sums   = NULL;
    gen_result *gout   = NULL;
    gen_clock   clk    = {0};
    assay_error err    = {0};
    if (!text) {
        fprintf(stderr, "%s: cannot read\n", work);
        goto done;
    }
    if (!(root = cJSON_ParseWithLength(text, len))) {
        fprintf(stderr, "%s: not valid JSON\n", work);
        goto done;
    }
    const cJSON *kind     = cJSON_GetObjectItemCaseSensitive(root, "kind");
    int          is_score = cJSON_IsString(kind) && !strcmp(kind->valuestring, "score");
    int          is_gen   = cJSON_IsString(kind) && !strcmp(kind->valuestring, "generate");
    if (!is_score && !is_gen) {
        fprintf(stderr, "%s: \"kind\" must be \"score\" or \"generate\"\n", work);
        goto done;
    }
    const char *key = is_score ? "seqs" : "prompts";
    if (seqs_parse(&s, cJSON_GetObjectItemCaseSensitive(root, key), work, key) != 0)
        goto done;
    int max_new = 0;
    if (is_gen) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(root, "max_new_tokens");
        max_new         = cJSON_IsNumber(mn) ? mn->valueint : 0;
        if (max_new < 1) {
            fprintf(stderr, "%s: \"max_new_tokens\" must be a positive integer\n", work);
            goto done;
        }
    }

    status          = 3;
    model_opts opts = {
        .device = device, .fast = fast, .n_threads = threads, .max_batch_tokens = batch_tokens};
    double t0 = now_s();
    if (!(m = model_load(dir, &opts, &err))) {
        fprintf(stderr, "engine_driver: %s\n", err.msg);
        goto done;
    }
    double load_s         = now_s() - t0;
    long   rss_after_load = max_rss_kb();

    double best = -1, best_cpu = 0, secs = 0;
    long   n_in = 0, n_out = 0;
    cJSON *res   = cJSON_CreateObject();
    cJSON *times = cJSON_AddArrayToObject(res, "times");
    if (is_score) {
        if (!(sums = calloc((size_t)s.n, sizeof *sums)))
            goto done_res;
        long nt = 0;
        if (run_score(m, &s, 32, NULL, &nt, &secs, &err) != 0) /* warm-up */
            goto fail_engine;
        for (int r = 0; r < repeats; r++) {
            double c0 = cpu_s();
            if (run_score(m, &s, 0, sums, &nt, &secs, &err) != 0)
                goto fail_engine;
            cJSON_AddItemToArray(times, cJSON_CreateNumber(secs));
            if (best < 0 || secs < best) {
                best     = secs;
                best_cpu = cpu_s() - c0;
            }
        }
        for (int i = 0; i < s.n; i++)
            n_in += s.len[i];
        n_out      = nt;
        cJSON *arr = cJSON_AddArrayToObject(res, "sums");
        for (int i = 0; i < s.n; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(sums[i]));
    } else {
        clk.first = calloc((size_t)s.n, sizeof *clk.first);
        clk.last  = calloc((size_t)s.n, sizeof *clk.last);
        gout      = calloc((size_t)s.n, sizeof *gout);
        if (!clk.first || !clk.last || !gout)
            goto done_res;
        seqs warm = s;
        int  wl   = s.len[0] < 32 ? s.len[0] : 32;
        warm.len  = &wl;
        if (run_generate(m, &warm, 1, 2, &clk, gout, &secs, &err) != 0)
            goto fail_engine;
        gen_results_free(gout, 1);
        double prefill_best = 0;
        for (int r = 0; r < repeats; r++) {
            double c0 = cpu_s();
            if (run_generate(m, &s, s.n, max_new, &clk, gout, &secs, &err) != 0)
                goto fail_engine;
            double used = cpu_s() - c0;
            cJSON_AddItemToArray(times, cJSON_CreateNumber(secs));
            double pf = 0;
            for (int i = 0; i < s.n; i++)
                if (clk.first[i] > pf)
                    pf = clk.first[i];
            if (best < 0 || secs < best) {
                best         = secs;
                best_cpu     = used;
                prefill_best = pf;
            }
            if (r + 1 < repeats)
                gen_results_free(gout, s.n);
        }
        cJSON *arr = cJSON_AddArrayToObject(res, "gen_tokens");
        for (int i = 0; i < s.n; i++) {
            n_in += s.len[i];
            n_out += gout[i].n_tokens;
            cJSON_AddItemToArray(arr, cJSON_CreateIntArray(gout[i].tokens, gout[i].n_tokens));
        }
        cJSON_AddNumberToObject(res, "prefill_s", prefill_best);
    }
    cJSON_AddStringToObject(res, "impl", "assay");
    cJSON_AddStringToObject(res, "kind", is_score ? "score" : "generate");
    cJSON_AddNumberToObject(res, "threads", threads);
    cJSON_AddStringToObject(res, "device", model_device_name(m));
    cJSON_AddBoolToObject(res, "batch_invariant", model_batch_invariant(m));
    cJSON_AddNumberToObject(res, "max_batch_tokens", model_max_batch_tokens(m));
    cJSON_AddNumberToObject(res, "kv_tokens", model_kv_tokens(m));
    cJSON_AddNumberToObject(res, "load_s", load_s);
    cJSON_AddNumberToObject(res, "time_s", best);
    cJSON_AddNumberToObject(res, "n_seqs", s.n);
    cJSON_AddNumberToObject(res, "n_input_tokens", (double)n_in);
    cJSON_AddNumberToObject(res, is_score ? "n_targets" : "n_new_tokens", (double)n_out);
    cJSON_AddNumberToObject(res, "model_mem_bytes", (double)model_mem_bytes(m));
    cJSON_AddNumberToObject(res, "rss_after_load_kb", (double)rss_after_load);
    cJSON_AddNumberToObject(res, "cpu_s", best_cpu);
    cJSON_AddNumberToObject(res, "max_rss_kb", (double)max_rss_kb());
    cJSON_AddNumberToObject(res, "rss_end_kb", (double)rss_now_kb());
    char *js = cJSON_PrintUnformatted(res);
    if (js) {
        puts(js);
        free(js);
        status = 0;
    }
    goto done_res;
fail_engine:
    fprintf(stderr, "engine_driver: %s\n", err.msg);
done_res:
    cJSON_Delete(res);
done:
    if (gout)
        gen_results_free(gout, s.n);
    free(gout);
    free(clk.first);
    free(clk.last);
    free(sums);
    model_free(m);
    seqs_free(&s);
    cJSON_Delete(root);
    free(text);
    return status;
}
