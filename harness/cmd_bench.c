/* harness/cmd_bench.c — `assay bench`: a fixed workload through the engine (scoring, prefill,
 * greedy decoding at batch 1, 4 and 16), repeated, against a baseline saved earlier.
 *
 * Timings are only comparable on the same machine in the same state, and CI machines are
 * neither. So every repeat also times a fixed f32 multiply-add loop (the machine's reference)
 * right before the workload, and each workload time is divided by that repeat's reference
 * time: a machine that is twice as slow, or busy for a while, slows both. The gate then takes
 * the spread of the repeats into account (see bench_help). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/hashes.h"
#include "harness/history.h"
#include "harness/jsonl.h"
#include "runtime/model.h"

#define BENCH_ITEMS 5
/* A regression is a slowdown by more than BENCH_K standard errors of the difference of the two
 * medians, and by more than a floor. The floors cover what the spread within one run cannot
 * see: the machine's state drifting between runs. Measured on a shared 2-core machine at load
 * averages of 6 to 11 (other builds), in CPU time: over 14 unchanged reruns the geometric mean
 * moved by -5% to +7% and single items by up to +27%; 14 runs with an injected 20% slowdown
 * showed the mean at +18% to +47%. */
#define BENCH_K 3.0
#define BENCH_FLOOR_ITEM 0.35
#define BENCH_FLOOR_MEAN 0.12
#define BENCH_REF_N 256 /* reference: 256 x 256 f32 matrix-vector products */
#define BENCH_REF_REPS 192

static const char bench_help[] =
    "usage: assay bench MODEL [--baseline FILE] [--save-baseline FILE] [--repeat N]\n"
    "                   [--history FILE] [--json] [--threads N] [--device D]\n"
    "\n"
    "Runs a fixed workload on MODEL (a checkpoint directory or GGUF file) and reports each\n"
    "item's median time and spread:\n"
    "  score      32 requests of 128 tokens, every token scored\n"
    "  prefill    4 prompts of 256 tokens, only the last token scored\n"
    "  decode_b1  greedy decoding, 1 prompt of 16 tokens, 64 new tokens\n"
    "  decode_b4  the same with 4 prompts\n"
    "  decode_b16 the same with 16 prompts\n"
    "(lengths are capped by the model's positions). Token ids are a fixed pseudo-random\n"
    "sequence, so any checkpoint runs the same work. One unmeasured warm-up pass comes first.\n"
    "\n"
    "Times are CPU seconds of the process (time the scheduler gives to other processes is\n"
    "not counted; with --threads above 1 they sum the threads, so the GEMM threads do not\n"
    "spin while they wait: ASSAY_SPIN_US is 0 here unless set). Right before each item the\n"
    "machine's reference is timed the same way: 192 passes of a 256 x 256 f32\n"
    "matrix-vector product, single-threaded. Items are stored as time / reference time\n"
    "(normalized), so a baseline from a faster machine still compares; tokens/s are per\n"
    "CPU second.\n"
    "\n"
    "Gate (--baseline), on normalized medians: an item regresses when it is slower than the\n"
    "baseline's by more than max(3 * se, 35%%), the geometric mean of the items' changes when\n"
    "by more than max(3 * se, 12%%). se = sqrt(se_base^2 + se_run^2), the standard error of a\n"
    "median being 1.2533 * s / sqrt(repeat) with s the robust relative spread of the repeats\n"
    "(1.4826 * MAD / median); the mean's se is sqrt(sum of the items' se^2) / 5. The floors\n"
    "cover drift between runs that no spread within a run shows (measured: up to 7%% for the\n"
    "mean, 27%% for one item, between unchanged runs on a loaded 2-core machine). Exit 1 when\n"
    "an item or the mean regresses.\n"
    "\n"
    "options:\n"
    "  --repeat N            measured repeats, 3..100 (default 7)\n"
    "  --baseline FILE       compare with a file written by --save-baseline\n"
    "  --save-baseline FILE  write this run's results (temporary file + rename)\n"
    "  --history FILE        append the run to a history file (default: $ASSAY_HISTORY; none\n"
    "                        when unset: bench has no output folder)\n"
    "  --threads N           compute threads (default 1: the reference is single-threaded,\n"
    "                        and one thread is what a busy machine disturbs least)\n"
    "%s"
    "  --help                this text\n"
    "\n"
    "testing: ASSAY_BENCH_SLOWDOWN=F (test-only) makes every workload item busy-wait F times\n"
    "its own measured time more, e.g. 0.2 for a 20%% slowdown; the tests use it to check that\n"
    "the gate fires.\n"
    "\n"
    "exit codes: 0 no regression, 1 a regression beyond the noise, 2 bad input or usage\n"
    "(also a baseline from another workload), 3 device failure\n";

static const char *const bench_names[BENCH_ITEMS] = {"score", "prefill", "decode_b1", "decode_b4",
                                                     "decode_b16"};

typedef struct bench_work {
    int32_t      *ids; /* one pseudo-random sequence; requests are windows of it */
    int           n_ids;
    score_request score[32], prefill[4];
    gen_request   gen[16];
    int           score_len, prefill_len, prompt_len, new_tokens;
    int64_t       tokens[BENCH_ITEMS]; /* per measurement: what a baseline must have run too */
} bench_work;

/* Calls per measurement, so that each item takes tens of milliseconds on a tiny model: shorter
 * measurements are mostly scheduler noise on a shared machine. */
static const int bench_calls[BENCH_ITEMS] = {4, 8, 24, 12, 4};

static int bench_work_make(bench_work *w, const model_config *cfg, assay_error *err) {
    int maxp = cfg->max_pos;
    if (maxp < 32)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "the model has %d positions; the bench workload needs at least 32", maxp);
    w->score_len   = maxp < 128 ? maxp : 128;
    w->prefill_len = maxp < 256 ? maxp : 256;
    w->prompt_len  = 16;
    w->new_tokens  = maxp - 16 < 64 ? maxp - 16 : 64;
    w->n_ids       = 32 * 128 + 4 * 256;
    if (!(w->ids = malloc((size_t)w->n_ids * sizeof *w->ids)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    uint64_t x = 0x2545f4914f6cdd1dULL; /* xorshift64: the same ids on every machine */
    for (int i = 0; i < w->n_ids; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w->ids[i] = (int32_t)(x % (uint64_t)cfg->vocab_size);
    }
    for (int i = 0; i < 32; i++)
        w->score[i] = (score_request){w->ids + i * 128, w->score_len, 1};
    for (int i = 0; i < 4; i++)
        w->prefill[i] =
            (score_request){w->ids + 32 * 128 + i * 256, w->prefill_len, w->prefill_len - 1};
    for (int i = 0; i < 16; i++)
        w->gen[i] = (gen_request){w->ids + i * 128, w->prompt_len, w->new_tokens};
    const int64_t per_call[BENCH_ITEMS] = {32 * w->score_len, 4 * w->prefill_len, w->new_tokens,
                                           4 * w->new_tokens, 16 * w->new_tokens};
    for (int i = 0; i < BENCH_ITEMS; i++)
        w->tokens[i] = per_call[i] * bench_calls[i];
    return ASSAY_OK;
}

/* The reference: single-threaded f32 multiply-adds in a fixed order, the shape of the
 * engine's inner loop. volatile keeps the compiler from dropping it. */
static volatile float bench_sink;

/* CPU seconds of the process: time the scheduler gives to other processes is not counted, which
 * is most of the noise on a shared machine (with --threads above 1 it sums the threads). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double bench_reference(void) {
    static float a[BENCH_REF_N * BENCH_REF_N], x[BENCH_REF_N], y[BENCH_REF_N];
    for (int i = 0; i < BENCH_REF_N * BENCH_REF_N; i++)
        a[i] = (float)((i * 7 + 3) % 17) * 0.01f;
    for (int i = 0; i < BENCH_REF_N; i++)
        x[i] = (float)(i % 5) * 0.1f;
    double t0 = cpu_now();
    for (int r = 0; r < BENCH_REF_REPS; r++) {
        for (int i = 0; i < BENCH_REF_N; i++) {
            float s = 0;
            for (int k = 0; k < BENCH_REF_N; k++)
                s += a[i * BENCH_REF_N + k] * x[k];
            y[i] = s;
        }
        x[r % BENCH_REF_N] += y[(r * 31) % BENCH_REF_N] * 1e-6f;
    }
    bench_sink = y[0];
    return cpu_now() - t0;
}

static double bench_slowdown(void) {
    const char *s = getenv("ASSAY_BENCH_SLOWDOWN");
    double      f = s ? strtod(s, NULL) : 0;
    return f > 0 && f < 10 ? f : 0;
}

/* Busy-waits `seconds` of CPU time (the injected slowdown costs CPU as real work would). */
static void bench_spin(double seconds) {
    double end = cpu_now() + seconds;
    while (cpu_now() < end)
        bench_sink = bench_sink + 1.0f;
}

static int bench_call(model *m, const bench_work *w, int item, int64_t *tokens, assay_error *err) {
    score_result res[32];
    int          rc = ASSAY_OK;
    if (item == 0 || item == 1) {
        int n = item == 0 ? 32 : 4;
        memset(res, 0, sizeof res);
        rc      = model_score(m, item == 0 ? w->score : w->prefill, n, res, err);
        *tokens = (int64_t)n * (item == 0 ? w->score_len : w->prefill_len);
        score_results_free(res, n);
    } else {
        int        n = item == 2 ? 1 : item == 3 ? 4 : 16;
        gen_result out[16];
        memset(out, 0, sizeof out);
        rc      = model_generate_greedy(m, w->gen, n, NULL, 0, NULL, NULL, out, err);
        *tokens = 0;
        for (int i = 0; i < n; i++)
            *tokens += out[i].n_tokens;
        gen_results_free(out, n);
    }
    return rc;
}

static int bench_item(model *m, const bench_work *w, int item, double slow, double *secs,
                      int64_t *tokens, assay_error *err) {
    int64_t one = 0;
    int     rc  = ASSAY_OK;
    double  t0  = cpu_now();
    for (int k = 0; k < bench_calls[item] && !rc; k++)
        rc = bench_call(m, w, item, &one, err);
    *tokens  = one * bench_calls[item];
    double t = cpu_now() - t0;
    if (slow > 0)
        bench_spin(t * slow);
    *secs = cpu_now() - t0;
    return rc;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(const double *v, int n) {
    double s[100 * BENCH_ITEMS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_dbl);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* 1.4826 * MAD / median: a standard deviation, relative, that one outlier does not move. */
static double rel_spread(const double *v, int n) {
    double med = median_of(v, n), dev[100 * BENCH_ITEMS];
    for (int i = 0; i < n; i++)
        dev[i] = fabs(v[i] - med);
    return med > 0 ? 1.4826 * median_of(dev, n) / med : 0;
}

typedef struct bench_stat {
    double median_s, norm_median, norm_spread, tokens_per_s;
} bench_stat;

static int baseline_read(const char *path, cJSON **out, assay_error *err) {
    char  *text = NULL;
    size_t len  = 0;
    int    rc   = file_read_capped(path, (size_t)16 << 20, &text, &len, err);
    if (rc)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "bench_version");
    if (!root || !cJSON_IsNumber(v) || v->valuedouble != 1 ||
        !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "items"))) {
        cJSON_Delete(root);
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: not an assay bench baseline (expected JSON with bench_version 1 "
                          "and \"items\"; write one with --save-baseline)",
                          path);
    }
    *out = root;
    return ASSAY_OK;
}

int cmd_bench(int argc, char **argv) {
    /* The GEMM pool's waits spin on an idle machine (kernels/cpu/pool.h), and a spin is CPU time
     * that is not work: how much of it a run books depends on the neighbours, which is the noise
     * these CPU-second timings exist to leave out. Unless the user asked for a spin, none. */
    setenv("ASSAY_SPIN_US", "0", 0);
    cli_common    cc     = {0};
    assay_error   err    = {0};
    const char   *pos[1] = {NULL}, *base_path = NULL, *save_path = NULL, *hist = NULL;
    int64_t       repeat = 7;
    model        *m      = NULL;
    cJSON        *base = NULL, *root = NULL;
    bench_work    w  = {0};
    int           rc = 0, regressed = 0;
    const cli_opt opts[] = {
        {"--baseline", CLI_STR, &base_path, 0, 0, NULL},
        {"--save-baseline", CLI_STR, &save_path, 0, 0, NULL},
        {"--repeat", CLI_INT, &repeat, 3, 100, NULL},
        {"--history", CLI_STR, &hist, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"bench", opts, CLI_N_OPTS(opts), 1, "(one MODEL)"};
    cli_list      args = {pos, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r > 0) {
        printf(bench_help, cli_common_help);
        return 0;
    }
    if (r < 0)
        goto fail;
    if (!pos[0]) {
        assay_fail(&err, ASSAY_EINVAL, "bench: missing MODEL (see assay bench --help)");
        goto fail;
    }
    if (!hist)
        hist = getenv("ASSAY_HISTORY");
    if (base_path && (rc = baseline_read(base_path, &base, &err)))
        goto fail;
    if (hist && *hist && (rc = history_check(hist, &err)))
        goto fail;
    if (cc.threads <= 0)
        cc.threads = 1;
    if ((rc = cli_load_model(pos[0], &cc, &m, &err)))
        goto fail;
    if ((rc = bench_work_make(&w, model_get_config(m), &err)))
        goto fail;
    for (int i = 0; base && i < BENCH_ITEMS; i++) { /* before minutes of measuring */
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(base, "items"), bench_names[i]);
        const cJSON *bm = cJSON_GetObjectItemCaseSensitive(b, "norm_median");
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(b, "norm_spread");
        const cJSON *bt = cJSON_GetObjectItemCaseSensitive(b, "tokens");
        if (!cJSON_IsNumber(bm) || !(bm->valuedouble > 0) || !cJSON_IsNumber(bs) ||
            !cJSON_IsNumber(bt) || bt->valuedouble != (double)w.tokens[i]) {
            rc = assay_fail(&err, ASSAY_EINVAL,
                            "%s: item \"%s\" is missing or ran another workload (%s tokens, "
                            "this run %lld: another model or assay version?)",
                            base_path, bench_names[i], cJSON_IsNumber(bt) ? "other" : "no",
                            (long long)w.tokens[i]);
            goto fail;
        }
    }

    double slow = bench_slowdown(), ref[100 * BENCH_ITEMS], t[BENCH_ITEMS][100],
           norm[BENCH_ITEMS][100];
    int64_t toks[BENCH_ITEMS] = {0};
    double  t_start           = time_now();
    for (int rep = -1; rep < (int)repeat; rep++) { /* rep -1: warm-up */
        for (int i = 0; i < BENCH_ITEMS; i++) {
            double s, rt = bench_reference(); /* right before the item: the same machine state */
            if ((rc = bench_item(m, &w, i, slow, &s, &toks[i], &err)))
                goto fail;
            if (rep >= 0) {
                t[i][rep]                  = s;
                norm[i][rep]               = s / rt;
                ref[rep * BENCH_ITEMS + i] = rt;
            }
        }
    }
    double wall = time_now() - t_start;

    char mhash[65] = "";
    if (hashes_model(pos[0], mhash, &err))
        mhash[0] = '\0'; /* a GGUF-converted or odd folder: the hash is informative only */
    root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "bench_version", 1);
    cJSON_AddStringToObject(root, "assay_version", ASSAY_VERSION);
    cJSON_AddStringToObject(root, "model", pos[0]);
    cJSON_AddStringToObject(root, "model_sha256", mhash);
    cli_json_device(root, m);
    cJSON_AddNumberToObject(root, "threads", cc.threads);
    cJSON_AddNumberToObject(root, "repeat", (double)repeat);
    if (slow > 0)
        cJSON_AddNumberToObject(root, "injected_slowdown", slow);
    cJSON *rj = cJSON_AddObjectToObject(root, "reference");
    cJSON_AddStringToObject(rj, "what", "64 x (256 x 256 f32 matrix-vector), single-threaded");
    cJSON_AddNumberToObject(rj, "median_cpu_s", median_of(ref, (int)repeat * BENCH_ITEMS));
    cJSON_AddNumberToObject(rj, "spread", rel_spread(ref, (int)repeat * BENCH_ITEMS));
    cJSON         *items = cJSON_AddObjectToObject(root, "items");
    bench_stat     st[BENCH_ITEMS];
    history_metric hm[BENCH_ITEMS * 2];
    for (int i = 0; i < BENCH_ITEMS; i++) {
        st[i].median_s     = median_of(t[i], (int)repeat);
        st[i].norm_median  = median_of(norm[i], (int)repeat);
        st[i].norm_spread  = rel_spread(norm[i], (int)repeat);
        st[i].tokens_per_s = st[i].median_s > 0 ? (double)toks[i] / st[i].median_s : 0;
        cJSON *it          = cJSON_AddObjectToObject(items, bench_names[i]);
        cJSON_AddNumberToObject(it, "tokens", (double)toks[i]);
        cJSON_AddNumberToObject(it, "median_cpu_s", st[i].median_s);
        cJSON_AddNumberToObject(it, "tokens_per_s", st[i].tokens_per_s);
        cJSON_AddNumberToObject(it, "norm_median", st[i].norm_median);
        cJSON_AddNumberToObject(it, "norm_spread", st[i].norm_spread);
        cJSON *sa = cJSON_AddArrayToObject(it, "norm_samples");
        for (int k = 0; k < repeat; k++)
            cJSON_AddItemToArray(sa, cJSON_CreateNumber(norm[i][k]));
        hm[2 * i]     = (history_metric){"bench", NULL, st[i].norm_median,
                                         st[i].norm_spread * st[i].norm_median};
        hm[2 * i + 1] = (history_metric){"bench", NULL, st[i].tokens_per_s, NAN};
    }

    if (base) {
        const cJSON *bi     = cJSON_GetObjectItemCaseSensitive(base, "items");
        const cJSON *br     = cJSON_GetObjectItemCaseSensitive(base, "repeat");
        double       base_n = cJSON_IsNumber(br) && br->valuedouble >= 1 ? br->valuedouble : 1;
        cJSON       *g      = cJSON_AddObjectToObject(root, "gate");
        cJSON_AddStringToObject(g, "baseline", base_path);
        cJSON_AddStringToObject(g, "rule",
                                "regression when, on normalized medians, cand/base - 1 > max(3 * "
                                "se, 0.35) for an item, max(3 * se, 0.12) for the geometric "
                                "mean of the items; "
                                "se = sqrt(se_base^2 + se_cand^2), se of a median = 1.2533 * "
                                "spread / sqrt(repeat); the mean's se = sqrt(sum se_i^2) / 5");
        double log_sum = 0, s2_sum = 0;
        for (int i = 0; i < BENCH_ITEMS; i++) {
            const cJSON *b  = cJSON_GetObjectItemCaseSensitive(bi, bench_names[i]);
            const cJSON *bm = cJSON_GetObjectItemCaseSensitive(b, "norm_median");
            const cJSON *bs = cJSON_GetObjectItemCaseSensitive(b, "norm_spread");
            const cJSON *bt = cJSON_GetObjectItemCaseSensitive(b, "tokens");
            if (bt->valuedouble != (double)toks[i]) { /* generation stopped early */
                rc = assay_fail(&err, ASSAY_EINTERNAL, "bench: item %s ran %lld tokens, not %g",
                                bench_names[i], (long long)toks[i], bt->valuedouble);
                goto fail;
            }
            /* the standard error of a median of n normal samples: 1.2533 * sd / sqrt(n) */
            double seb    = 1.2533 * bs->valuedouble / sqrt(base_n);
            double sec    = 1.2533 * st[i].norm_spread / sqrt((double)repeat);
            double change = st[i].norm_median / bm->valuedouble - 1.0;
            double s      = sqrt(seb * seb + sec * sec);
            double thr    = BENCH_K * s > BENCH_FLOOR_ITEM ? BENCH_K * s : BENCH_FLOOR_ITEM;
            int    bad    = change > thr;
            regressed |= bad;
            log_sum += log1p(change);
            s2_sum += s * s;
            cJSON *gi = cJSON_AddObjectToObject(g, bench_names[i]);
            cJSON_AddNumberToObject(gi, "change", change);
            cJSON_AddNumberToObject(gi, "threshold", thr);
            cJSON_AddBoolToObject(gi, "regression", bad);
        }
        /* the items' noise partly averages out in the mean, so a uniform slowdown that no
         * single noisy item shows clearly still shows here */
        double change = expm1(log_sum / BENCH_ITEMS), s = sqrt(s2_sum) / BENCH_ITEMS;
        double thr = BENCH_K * s > BENCH_FLOOR_MEAN ? BENCH_K * s : BENCH_FLOOR_MEAN;
        cJSON *gm  = cJSON_AddObjectToObject(g, "geomean");
        cJSON_AddNumberToObject(gm, "change", change);
        cJSON_AddNumberToObject(gm, "threshold", thr);
        cJSON_AddBoolToObject(gm, "regression", change > thr);
        regressed |= change > thr;
        cJSON_AddBoolToObject(g, "regression", regressed);
    }
    if (save_path) {
        char *txt = jsonl_print(root, 1);
        if (!txt) {
            assay_fail(&err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        size_t n = strlen(txt);
        txt[n]   = '\n'; /* replaces the NUL; the length says where it ends */
        rc       = file_write_atomic(save_path, txt, n + 1, &err);
        free(txt);
        if (rc)
            goto fail;
    }
    if (hist && *hist) {
        char names[BENCH_ITEMS * 2][48];
        for (int i = 0; i < BENCH_ITEMS * 2; i++) {
            snprintf(names[i], sizeof names[i], "%s_%s", bench_names[i / 2],
                     i % 2 ? "tokens_per_s" : "norm");
            hm[i].metric = names[i];
        }
        char cfg[128];
        snprintf(cfg, sizeof cfg, "{\"threads\":%d,\"repeat\":%d}", cc.threads, (int)repeat);
        int64_t all = 0;
        for (int i = 0; i < BENCH_ITEMS; i++)
            all += toks[i] * (repeat + 1);
        history_run hr = {"bench",
                          pos[0],
                          mhash[0] ? mhash : NULL,
                          NULL,
                          NULL,
                          cfg,
                          model_device_name(m),
                          wall,
                          all,
                          NAN,
                          hm,
                          BENCH_ITEMS * 2};
        if ((rc = history_append(hist, &hr, NULL, &err)))
            goto fail;
    }
    if (cc.json) {
        char *txt = jsonl_print(root, 1);
        if (txt)
            printf("%s\n", txt);
        free(txt);
    } else {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "gate");
        printf("reference %.4f s (spread %.1f%%), %d repeats, %d thread(s)\n",
               median_of(ref, (int)repeat * BENCH_ITEMS),
               100 * rel_spread(ref, (int)repeat * BENCH_ITEMS), (int)repeat, cc.threads);
        printf("%-11s %10s %12s %12s %8s", "item", "tokens", "median cpu s", "tokens/s", "spread");
        printf(g ? " %9s %9s\n" : "\n", "change", "limit");
        for (int i = 0; i < BENCH_ITEMS; i++) {
            printf("%-11s %10lld %12.5f %12.1f %7.1f%%", bench_names[i], (long long)toks[i],
                   st[i].median_s, st[i].tokens_per_s, 100 * st[i].norm_spread);
            const cJSON *gi = cJSON_GetObjectItemCaseSensitive(g, bench_names[i]);
            if (gi)
                printf(" %+8.1f%% %8.1f%%%s", 100 * cJSON_GetObjectItem(gi, "change")->valuedouble,
                       100 * cJSON_GetObjectItem(gi, "threshold")->valuedouble,
                       cJSON_IsTrue(cJSON_GetObjectItem(gi, "regression")) ? "  REGRESSION" : "");
            printf("\n");
        }
        const cJSON *gm = cJSON_GetObjectItemCaseSensitive(g, "geomean");
        if (gm)
            printf("%-11s %10s %12s %12s %8s %+8.1f%% %8.1f%%%s\n", "geomean", "", "", "", "",
                   100 * cJSON_GetObjectItem(gm, "change")->valuedouble,
                   100 * cJSON_GetObjectItem(gm, "threshold")->valuedouble,
                   cJSON_IsTrue(cJSON_GetObjectItem(gm, "regression")) ? "  REGRESSION" : "");
        if (base)
            printf("%s\n", regressed ? "bench: REGRESSION beyond the noise"
                                     : "bench: no regression beyond the noise");
    }
    rc = regressed ? 1 : 0;
    goto out;
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
out:
    cJSON_Delete(root);
    cJSON_Delete(base);
    free(w.ids);
    model_free(m);
    return rc;
}
