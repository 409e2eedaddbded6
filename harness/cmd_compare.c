/* harness/cmd_compare.c — `assay compare`: a candidate's results against a base's, per task and
 * metric, for CI. Reads assay's results.json and lm-eval's (the same "results" layout), and the
 * per-sample files beside them for paired tests. The statistics are in scoring/compare.c. */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/jsonl.h"
#include "scoring/compare.h"

#define COMPARE_JSON_MAX ((size_t)256 << 20) /* results files with every config inline */

static const char compare_help[] =
    "usage: assay compare BASE CAND [--warn -3] [--crit -5] [--alpha 0.05] [--resamples 1000]\n"
    "                     [--seed 1234] [--json]\n"
    "\n"
    "Compares per task and metric the results of CAND against BASE. Each is a results.json\n"
    "written by assay eval or lm-eval, or the folder holding it (results.json, else the newest\n"
    "results_*.json). Samples files beside them, when both runs have them, give a paired test:\n"
    "assay's samples_<task>.jsonl, lm-eval's samples_<task>_<timestamp>.jsonl (the newest).\n"
    "\n"
    "delta, in points, negative is worse:\n"
    "  metrics in [0, 1] (acc, acc_norm, exact_match): percentage points, 100 * (cand - base)\n"
    "  perplexity, word/byte_perplexity, bits_per_byte: percent of the base value\n"
    "  others (bleu, chrf: already 0..100): cand - base\n"
    "  the sign is flipped for lower-is-better metrics (the file's higher_is_better block, else\n"
    "  perplexities, bits_per_byte and ter are lower-is-better)\n"
    "level: delta <= --crit is CRIT, else delta <= --warn is WARN, else OK (--crit <= --warn)\n"
    "\n"
    "paired tests (documents matched by doc_id):\n"
    "  per-sample values all 0 or 1: McNemar's exact test (two-sided binomial test on the\n"
    "  discordant pairs; the continuity-corrected chi-square is shown too); a regression is\n"
    "  significant when p < --alpha and the candidate loses more pairs than it wins\n"
    "  other means and corpus metrics (lambada perplexity exp(-mean ll), word/byte perplexity\n"
    "  and bits_per_byte from [ll, words|bytes]): a paired percentile bootstrap of the delta\n"
    "  (--resamples, --seed: the same files always give the same interval); a regression is\n"
    "  significant when the whole (1 - alpha) interval is below 0\n"
    "  samples that are not numbers (e.g. [reference, prediction] pairs) get no test\n"
    "\n"
    "A metric of BASE that CAND lacks is listed as MISSING; it does not fail the gate.\n"
    "\n"
    "exit codes: 0 no CRIT and no significant regression, 1 a CRIT or a significant\n"
    "regression, 2 bad input or usage (also: no metric in common)\n";

typedef struct cmp_run {
    char   path[4200]; /* the results file */
    char   dir[4200];
    cJSON *root;
    int    lmeval; /* samples_<task>_<timestamp>.jsonl */
} cmp_run;

/* Newest (name-wise largest) file in dir named prefix + <timestamp> + suffix. The timestamp
 * must start with a digit: "samples_piqa_" must not pick up "samples_piqa_mi_<timestamp>". */
static int find_newest(const char *dir, const char *prefix, const char *suffix, char *out,
                       size_t cap) {
    DIR *d          = opendir(dir);
    char best[1024] = "";
    if (!d)
        return 0;
    struct dirent *e;
    size_t         pl = strlen(prefix);
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, pl) && e->d_name[pl] >= '0' && e->d_name[pl] <= '9' &&
            str_ends_with(e->d_name, suffix) && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    closedir(d);
    if (!best[0])
        return 0;
    return path_join(out, cap, dir, best) == 0;
}

static int run_load(cmp_run *r, const char *arg, assay_error *err) {
    char  *text = NULL;
    size_t len  = 0;
    if (path_is_dir(arg)) {
        snprintf(r->dir, sizeof r->dir, "%s", arg);
        if (path_join(r->path, sizeof r->path, arg, "results.json") || !path_exists(r->path))
            if (!find_newest(arg, "results_", ".json", r->path, sizeof r->path))
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s: no results.json or results_*.json in the folder", arg);
    } else {
        snprintf(r->path, sizeof r->path, "%s", arg);
        const char *slash = strrchr(arg, '/');
        snprintf(r->dir, sizeof r->dir, "%.*s", slash ? (int)(slash - arg) : 1, slash ? arg : ".");
    }
    int rc = file_read_capped(r->path, COMPARE_JSON_MAX, &text, &len, err);
    if (rc)
        return rc;
    r->root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!r->root || !cJSON_IsObject(r->root))
        return assay_fail(err, ASSAY_EFORMAT, "%s: not a JSON object", r->path);
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r->root, "results")))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: no \"results\" object (expected assay's or lm-eval's "
                          "results.json)",
                          r->path);
    r->lmeval = cJSON_GetObjectItemCaseSensitive(r->root, "assay") == NULL;
    return ASSAY_OK;
}

/* One sample's value of a metric. */
typedef struct cmp_sample {
    double doc_id, x, w;
} cmp_sample;

typedef struct cmp_samples {
    cmp_sample *s;
    size_t      n;
    int         has_w, binary, numeric;
} cmp_samples;

static int cmp_doc(const void *a, const void *b) {
    double x = ((const cmp_sample *)a)->doc_id, y = ((const cmp_sample *)b)->doc_id;
    return (x > y) - (x < y);
}

/* Reads the metric's per-sample values from the run's samples file of task (filter: lines
 * whose "filter" differs are skipped). Returns ASSAY_OK with out->n == 0 when there is no
 * file. Values that are not a number or a [number, number] pair make out->numeric 0. */
static int samples_load(const cmp_run *r, const char *task, const char *metric, const char *filter,
                        cmp_samples *out, assay_error *err) {
    char         path[4200], prefix[600];
    jsonl_reader rd;
    cJSON       *obj;
    int          got, rc;
    size_t       cap = 0;
    memset(out, 0, sizeof *out);
    out->binary = out->numeric = 1;
    snprintf(prefix, sizeof prefix, "samples_%s", task);
    if (r->lmeval) {
        char pre[620];
        snprintf(pre, sizeof pre, "%s_", prefix);
        if (!find_newest(r->dir, pre, ".jsonl", path, sizeof path))
            return ASSAY_OK;
    } else {
        snprintf(prefix + strlen(prefix), sizeof prefix - strlen(prefix), ".jsonl");
        if (path_join(path, sizeof path, r->dir, prefix) || !path_exists(path))
            return ASSAY_OK;
    }
    if ((rc = jsonl_open(&rd, path, err)))
        return rc;
    while ((got = jsonl_next(&rd, &obj, err)) == 1) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "doc_id");
        const cJSON *f  = cJSON_GetObjectItemCaseSensitive(obj, "filter");
        const cJSON *v  = cJSON_GetObjectItemCaseSensitive(obj, metric);
        if (!cJSON_IsNumber(id)) {
            cJSON_Delete(obj);
            rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: expected a number \"doc_id\"", path,
                            rd.line);
            break;
        }
        if ((cJSON_IsString(f) && strcmp(f->valuestring, filter)) || !v) {
            cJSON_Delete(obj);
            continue;
        }
        cmp_sample s = {id->valuedouble, NAN, NAN};
        if (cJSON_IsNumber(v) || cJSON_IsBool(v))
            s.x = cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
        else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2 &&
                 cJSON_IsNumber(cJSON_GetArrayItem(v, 0)) &&
                 cJSON_IsNumber(cJSON_GetArrayItem(v, 1))) {
            s.x        = cJSON_GetArrayItem(v, 0)->valuedouble;
            s.w        = cJSON_GetArrayItem(v, 1)->valuedouble;
            out->has_w = 1;
        } else
            out->numeric = 0;
        cJSON_Delete(obj);
        if (!isfinite(s.x) || (out->has_w && !isfinite(s.w)))
            out->numeric = 0;
        if (s.x != 0 && s.x != 1)
            out->binary = 0;
        if (out->n == cap) {
            cap            = cap ? cap * 2 : 256;
            cmp_sample *ns = realloc(out->s, cap * sizeof *ns);
            if (!ns) {
                rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
                break;
            }
            out->s = ns;
        }
        out->s[out->n++] = s;
    }
    jsonl_close(&rd);
    if (!rc && got > 1)
        rc = got;
    if (rc) {
        free(out->s);
        memset(out, 0, sizeof *out);
        return rc;
    }
    if (out->n)
        qsort(out->s, out->n, sizeof *out->s, cmp_doc);
    return ASSAY_OK;
}

typedef struct cmp_opts {
    double  warn, crit, alpha;
    int64_t resamples, seed;
} cmp_opts;

typedef struct cmp_tally {
    int n_ok, n_warn, n_crit, n_sig, n_rows;
} cmp_tally;

static cmp_agg metric_agg(const char *metric) {
    size_t n = strcspn(metric, ",");
    if (n == 10 && !strncmp(metric, "perplexity", n))
        return CMP_AGG_PPL;
    if (n == 13 && !strncmp(metric, "bits_per_byte", n))
        return CMP_AGG_BITS_PER_BYTE;
    if ((n == 15 && !strncmp(metric, "word_perplexity", n)) ||
        (n == 15 && !strncmp(metric, "byte_perplexity", n)))
        return CMP_AGG_WEIGHTED_PPL;
    return CMP_AGG_MEAN;
}

/* The paired test of one metric; fills the row's "test" fields. */
static int paired_test(const cmp_run *b, const cmp_run *c, const char *task, const char *name,
                       const char *filter, const char *metric, cmp_unit unit, int hib,
                       const cmp_opts *o, cJSON *row, int *significant, assay_error *err) {
    cmp_samples sb, sc;
    double     *buf = NULL;
    int         rc  = samples_load(b, task, name, filter, &sb, err);
    *significant    = 0;
    if (rc)
        return rc;
    if ((rc = samples_load(c, task, name, filter, &sc, err))) {
        free(sb.s);
        return rc;
    }
    cmp_agg agg = metric_agg(metric);
    if (!sb.n || !sc.n) {
        cJSON_AddStringToObject(row, "test", "none");
        cJSON_AddStringToObject(row, "test_note", "samples missing in one or both runs");
        goto done;
    }
    if (!sb.numeric || !sc.numeric || sb.has_w != sc.has_w ||
        ((agg == CMP_AGG_WEIGHTED_PPL || agg == CMP_AGG_BITS_PER_BYTE) && !sb.has_w)) {
        cJSON_AddStringToObject(row, "test", "none");
        cJSON_AddStringToObject(row, "test_note",
                                "per-sample values are not numbers this "
                                "comparison can aggregate");
        goto done;
    }
    /* documents present in both, by doc_id (first occurrence of a repeated id) */
    size_t n = 0, i = 0, j = 0;
    if (!(buf = malloc(4 * (sb.n < sc.n ? sb.n : sc.n) * sizeof *buf))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory pairing samples of %s", task);
        goto done;
    }
    size_t  m  = sb.n < sc.n ? sb.n : sc.n;
    double *xb = buf, *wb = buf + m, *xc = buf + 2 * m, *wc = buf + 3 * m;
    while (i < sb.n && j < sc.n) {
        if (sb.s[i].doc_id < sc.s[j].doc_id)
            i++;
        else if (sb.s[i].doc_id > sc.s[j].doc_id)
            j++;
        else {
            xb[n] = sb.s[i].x, wb[n] = sb.s[i].w, xc[n] = sc.s[j].x, wc[n] = sc.s[j].w;
            n++;
            double id = sb.s[i].doc_id;
            while (i < sb.n && sb.s[i].doc_id == id)
                i++;
            while (j < sc.n && sc.s[j].doc_id == id)
                j++;
        }
    }
    cJSON_AddNumberToObject(row, "paired_samples", (double)n);
    if (n == 0) {
        cJSON_AddStringToObject(row, "test", "none");
        cJSON_AddStringToObject(row, "test_note", "no doc_id in common");
        goto done;
    }
    if (sb.binary && sc.binary && agg == CMP_AGG_MEAN) {
        int64_t nb = 0, nc = 0; /* base right & cand wrong; base wrong & cand right */
        for (size_t k = 0; k < n; k++) {
            nb += xb[k] == 1 && xc[k] == 0;
            nc += xb[k] == 0 && xc[k] == 1;
        }
        /* a lower-is-better 0/1 metric loses where it goes from 0 to 1 */
        if (!hib) {
            int64_t t = nb;
            nb        = nc;
            nc        = t;
        }
        cmp_mcnemar mc;
        compare_mcnemar(nb, nc, &mc);
        cJSON_AddStringToObject(row, "test", "mcnemar");
        cJSON_AddNumberToObject(row, "base_only", (double)nb);
        cJSON_AddNumberToObject(row, "cand_only", (double)nc);
        cJSON_AddNumberToObject(row, "p_value", mc.p_exact);
        if (isfinite(mc.chi2)) {
            cJSON_AddNumberToObject(row, "chi2", mc.chi2);
            cJSON_AddNumberToObject(row, "p_chi2", mc.p_chi2);
        }
        *significant = mc.p_exact < o->alpha && nb > nc;
    } else {
        cmp_paired p = {agg, unit, hib, xb, sb.has_w ? wb : NULL, xc, sc.has_w ? wc : NULL, n};
        boot_ci    ci;
        if (compare_paired_bootstrap(&p, (int)o->resamples, 1.0 - o->alpha, (uint64_t)o->seed,
                                     &ci)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory bootstrapping %s", task);
            goto done;
        }
        cJSON_AddStringToObject(row, "test", "paired_bootstrap");
        cJSON_AddNumberToObject(row, "paired_delta",
                                compare_delta_points(compare_aggregate(agg, xb, p.wb, NULL, n),
                                                     compare_aggregate(agg, xc, p.wc, NULL, n),
                                                     unit, hib));
        cJSON_AddNumberToObject(row, "ci_lo", ci.lo);
        cJSON_AddNumberToObject(row, "ci_hi", ci.hi);
        cJSON_AddNumberToObject(row, "ci_level", 1.0 - o->alpha);
        cJSON_AddNumberToObject(row, "resamples", ci.resamples);
        *significant = ci.hi < 0;
    }
done:
    free(buf);
    free(sb.s);
    free(sc.s);
    return rc;
}

static int hib_of(const cmp_run *r, const char *task, const char *name, const char *metric) {
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(r->root, "higher_is_better"), task),
        name);
    return cJSON_IsBool(h) ? cJSON_IsTrue(h) : compare_default_higher_is_better(metric);
}

static int compare_runs(const cmp_run *b, const cmp_run *c, const cmp_opts *o, cJSON *rows,
                        cmp_tally *t, assay_error *err) {
    const cJSON *rb    = cJSON_GetObjectItemCaseSensitive(b->root, "results");
    const cJSON *rcand = cJSON_GetObjectItemCaseSensitive(c->root, "results");
    const cJSON *task, *v;
    cJSON_ArrayForEach(task, rb) {
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(rcand, task->string);
        cJSON_ArrayForEach(v, task) {
            const char *key = v->string, *comma = key ? strchr(key, ',') : NULL;
            if (!cJSON_IsNumber(v) || !comma || strstr(key, "_stderr,"))
                continue;
            char name[256], filter[256], sek[600];
            snprintf(name, sizeof name, "%.*s", (int)(comma - key), key);
            snprintf(filter, sizeof filter, "%s", comma + 1);
            snprintf(sek, sizeof sek, "%s_stderr,%s", name, filter);
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "task", task->string);
            cJSON_AddStringToObject(row, "metric", key);
            cJSON_AddItemToArray(rows, row);
            const cJSON *cv = cJSON_GetObjectItemCaseSensitive(tc, key);
            if (!cJSON_IsNumber(cv)) {
                cJSON_AddStringToObject(row, "level", "MISSING");
                cJSON_AddNumberToObject(row, "base", v->valuedouble);
                continue;
            }
            double       bv = v->valuedouble, cvv = cv->valuedouble;
            int          hib  = hib_of(b, task->string, name, key);
            cmp_unit     unit = compare_metric_unit(key, bv, cvv);
            double       d    = compare_delta_points(bv, cvv, unit, hib);
            const cJSON *bse  = cJSON_GetObjectItemCaseSensitive(task, sek),
                        *cse  = cJSON_GetObjectItemCaseSensitive(tc, sek);
            cJSON_AddNumberToObject(row, "base", bv);
            cJSON_AddNumberToObject(row, "cand", cvv);
            if (cJSON_IsNumber(bse))
                cJSON_AddNumberToObject(row, "base_stderr", bse->valuedouble);
            if (cJSON_IsNumber(cse))
                cJSON_AddNumberToObject(row, "cand_stderr", cse->valuedouble);
            cJSON_AddBoolToObject(row, "higher_is_better", hib);
            cJSON_AddStringToObject(row, "unit",
                                    unit == CMP_UNIT_FRACTION   ? "percentage_points"
                                    : unit == CMP_UNIT_RELATIVE ? "percent_of_base"
                                                                : "points");
            cmp_level lv = isfinite(d) ? compare_level(d, o->warn, o->crit) : CMP_CRIT;
            if (isfinite(d))
                cJSON_AddNumberToObject(row, "delta", d);
            else
                cJSON_AddNullToObject(row, "delta");
            cJSON_AddStringToObject(row, "level", compare_level_name(lv));
            int sig = 0, rc;
            if ((rc = paired_test(b, c, task->string, name, filter, key, unit, hib, o, row, &sig,
                                  err)))
                return rc;
            cJSON_AddBoolToObject(row, "significant_regression", sig);
            t->n_rows++;
            t->n_ok += lv == CMP_OK;
            t->n_warn += lv == CMP_WARN;
            t->n_crit += lv == CMP_CRIT;
            t->n_sig += sig;
        }
    }
    return ASSAY_OK;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void compare_print(const cJSON *rows) {
    const cJSON *r;
    printf("%-32s %-22s %10s %10s %9s %-5s  %s\n", "task", "metric", "base", "cand", "delta",
           "level", "paired test");
    cJSON_ArrayForEach(r, rows) {
        const char  *lv        = cJSON_GetObjectItem(r, "level")->valuestring;
        const cJSON *tst       = cJSON_GetObjectItem(r, "test");
        char         test[160] = "";
        if (tst && !strcmp(tst->valuestring, "mcnemar"))
            snprintf(test, sizeof test, "McNemar %d vs %d, p=%.4g%s", (int)jnum(r, "base_only"),
                     (int)jnum(r, "cand_only"), jnum(r, "p_value"),
                     cJSON_IsTrue(cJSON_GetObjectItem(r, "significant_regression"))
                         ? " SIGNIFICANT REGRESSION"
                         : "");
        else if (tst && !strcmp(tst->valuestring, "paired_bootstrap"))
            snprintf(test, sizeof test, "bootstrap %.0f%% CI [%.3g, %.3g]%s",
                     100 * jnum(r, "ci_level"), jnum(r, "ci_lo"), jnum(r, "ci_hi"),
                     cJSON_IsTrue(cJSON_GetObjectItem(r, "significant_regression"))
                         ? " SIGNIFICANT REGRESSION"
                         : "");
        else if (tst)
            snprintf(test, sizeof test, "none (%s)",
                     cJSON_GetObjectItem(r, "test_note")->valuestring);
        if (!strcmp(lv, "MISSING"))
            printf("%-32s %-22s %10.4g %10s %9s %-5s  not in the candidate\n",
                   cJSON_GetObjectItem(r, "task")->valuestring,
                   cJSON_GetObjectItem(r, "metric")->valuestring, jnum(r, "base"), "-", "-", "-");
        else
            printf("%-32s %-22s %10.4g %10.4g %+9.3f %-5s  %s\n",
                   cJSON_GetObjectItem(r, "task")->valuestring,
                   cJSON_GetObjectItem(r, "metric")->valuestring, jnum(r, "base"), jnum(r, "cand"),
                   jnum(r, "delta"), lv, test);
    }
}

static int parse_real(const char *opt, const char *s, double *out, assay_error *err) {
    char *end = NULL;
    if (!s)
        return ASSAY_OK;
    *out = strtod(s, &end);
    if (!*s || !end || *end || !isfinite(*out))
        return assay_fail(err, ASSAY_EINVAL, "%s: '%s' is not a number", opt, s);
    return ASSAY_OK;
}

int cmd_compare(int argc, char **argv) {
    cli_common    cc     = {0};
    assay_error   err    = {0};
    const char   *pos[2] = {NULL, NULL}, *warn_s = NULL, *crit_s = NULL, *alpha_s = NULL;
    cmp_opts      o = {-3, -5, 0.05, 1000, 1234};
    cmp_run       b = {0}, c = {0};
    cmp_tally     t      = {0};
    cJSON        *rows   = cJSON_CreateArray();
    int           rc     = 0;
    const cli_opt opts[] = {
        {"--warn", CLI_STR, &warn_s, 0, 0, NULL},
        {"--crit", CLI_STR, &crit_s, 0, 0, NULL},
        {"--alpha", CLI_STR, &alpha_s, 0, 0, NULL},
        {"--resamples", CLI_INT, &o.resamples, 100, 1000000, NULL},
        {"--seed", CLI_INT, &o.seed, 0, INT64_MAX, NULL},
    };
    const cli_cmd cmd  = {"compare", opts, CLI_N_OPTS(opts), 2, "(expected BASE and CAND)"};
    cli_list      args = {pos, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r > 0) {
        fputs(compare_help, stdout);
        cJSON_Delete(rows);
        return 0;
    }
    if (r < 0 || parse_real("--warn", warn_s, &o.warn, &err) ||
        parse_real("--crit", crit_s, &o.crit, &err) ||
        parse_real("--alpha", alpha_s, &o.alpha, &err))
        goto fail;
    if (args.n != 2) {
        assay_fail(&err, ASSAY_EINVAL,
                   "compare: expected BASE and CAND results (see assay "
                   "compare --help)");
        goto fail;
    }
    if (o.crit > o.warn) {
        assay_fail(&err, ASSAY_EINVAL,
                   "--crit %g is above --warn %g: CRIT must be the worse level (e.g. --warn -3 "
                   "--crit -5)",
                   o.crit, o.warn);
        goto fail;
    }
    if (!(o.alpha > 0 && o.alpha < 1)) {
        assay_fail(&err, ASSAY_EINVAL, "--alpha %g: expected a level in (0, 1)", o.alpha);
        goto fail;
    }
    if (run_load(&b, pos[0], &err) || run_load(&c, pos[1], &err) ||
        compare_runs(&b, &c, &o, rows, &t, &err))
        goto fail;
    if (t.n_rows == 0) {
        assay_fail(&err, ASSAY_EINVAL, "%s and %s have no task and metric in common", b.path,
                   c.path);
        goto fail;
    }
    int gate = t.n_crit > 0 || t.n_sig > 0;
    if (cc.json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "base", b.path);
        cJSON_AddStringToObject(root, "candidate", c.path);
        cJSON_AddNumberToObject(root, "warn", o.warn);
        cJSON_AddNumberToObject(root, "crit", o.crit);
        cJSON_AddNumberToObject(root, "alpha", o.alpha);
        cJSON_AddNumberToObject(root, "resamples", (double)o.resamples);
        cJSON_AddNumberToObject(root, "seed", (double)o.seed);
        cJSON_AddItemToObject(root, "rows", rows);
        rows     = NULL;
        cJSON *s = cJSON_AddObjectToObject(root, "summary");
        cJSON_AddNumberToObject(s, "ok", t.n_ok);
        cJSON_AddNumberToObject(s, "warn", t.n_warn);
        cJSON_AddNumberToObject(s, "crit", t.n_crit);
        cJSON_AddNumberToObject(s, "significant_regressions", t.n_sig);
        cJSON_AddStringToObject(s, "verdict", gate ? "FAIL" : "PASS");
        char *txt = cJSON_Print(root);
        if (txt)
            printf("%s\n", txt);
        free(txt);
        cJSON_Delete(root);
    } else {
        compare_print(rows);
        printf("\n%d OK, %d WARN, %d CRIT, %d significant regressions: %s\n", t.n_ok, t.n_warn,
               t.n_crit, t.n_sig, gate ? "FAIL" : "PASS");
    }
    rc = gate ? 1 : 0;
    goto out;
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
out:
    cJSON_Delete(rows);
    cJSON_Delete(b.root);
    cJSON_Delete(c.root);
    return rc;
}
