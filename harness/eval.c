/* harness/eval.c — see eval.h. */
#include "harness/eval.h"
#include "harness/hashes.h"
#include "harness/history.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "harness/commands.h"
#include "harness/dist.h"
#include "harness/eval_gen.h"
#include "harness/fewshot.h"
#include "harness/jsonl.h"
#include "harness/pipeline.h"
#include "harness/progress.h"
#include "harness/tasks/tasks.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/model.h"
#include "scoring/loglik.h"
#include "scoring/metrics.h"

#ifndef ASSAY_COMMIT /* the Makefile passes `git describe --always --dirty` */
#define ASSAY_COMMIT "unknown"
#endif

int eval_check_output_dir(const char *dir, assay_error *err) {
    char probe[4200];
    if (!path_is_dir(dir) && mkdir(dir, 0777) != 0 && errno != EEXIST)
        return assay_fail(err, ASSAY_EINVAL, "--output-path %s: cannot create the directory: %s",
                          dir, strerror(errno));
    if (!path_is_dir(dir))
        return assay_fail(err, ASSAY_EINVAL, "--output-path %s: exists and is not a directory",
                          dir);
    snprintf(probe, sizeof probe, "%s/.assay-write-check-XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0)
        return assay_fail(err, ASSAY_EINVAL, "--output-path %s: not writable: %s", dir,
                          strerror(errno));
    close(fd);
    unlink(probe);
    return ASSAY_OK;
}

/* lm-eval's HFLM tok_encode for a causal model with add_bos_token unset: the tokenizer's own
 * default (add_special_tokens=True), so BOS is added exactly when the tokenizer's post-processor
 * adds it (Llama: yes; GPT-2: no). */
static int encode_hf_default(void *ctx, const char *text, size_t len, tok_ids *out,
                             assay_error *err) {
    tok_encode_opts o = tok_default_opts();
    return tok_encode((const tokenizer *)ctx, text, len, &o, 0, out, err);
}

/* --num-fewshot K > 0 for a task whose examples lm-eval draws at random (harness/fewshot.h): load
 * the task's train split as the pool and prepend K examples to each context. MMLU (the first K dev
 * questions) and the tasks that refuse K > 0 handle it in their loaders. */
static int check_fewshot(const eval_task *t, const eval_opts *o, int *random, assay_error *err) {
    int extra;
    *random = 0;
    if (o->num_fewshot <= 0 || t->own_def || t->def->generate || !strcmp(t->def->name, "mmlu") ||
        fewshot_config_zero(t->def->name))
        return ASSAY_OK;
    if (!(*random = fewshot_random_rule(t->def->name, &extra)))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: --num-fewshot %d is not implemented for this task (random few-shot "
                          "examples: hellaswag, arc_easy, arc_challenge, piqa, boolq, openbookqa, "
                          "winogrande, lambada_openai; mmlu: the first K dev questions; "
                          "truthfulqa: always zero-shot)",
                          t->def->name, o->num_fewshot);
    return ASSAY_OK;
}

static int load_fewshot(eval_task *t, const eval_opts *o, assay_error *err) {
    int random, rc0 = check_fewshot(t, o, &random, err);
    if (rc0 || !random)
        return rc0;
    eval_task      pool = {0};
    eval_task_opts po   = {o->data_dir, 0, 0, "train"};
    pool.def            = t->def;
    int rc              = t->def->load(&pool, &po, err);
    if (!rc)
        rc = fewshot_apply(t, &pool, o->num_fewshot, o->seed, err);
    for (size_t f = 0; !rc && f < pool.n_files; f++)
        rc = eval_task_add_file(t, pool.files[f], err);
    eval_task_free(&pool);
    return rc;
}

static const char *task_delim(const eval_task *t) { return t->delim[0] ? t->delim : " "; }

/* target delimiter + choice, malloc'd */
static char *make_cont(const eval_task *t, const eval_doc *doc, int ch, size_t *len) {
    const char *d  = task_delim(t);
    size_t      dl = strlen(d);
    char       *s  = malloc(dl + doc->choice_len[ch] + 1);
    if (s) {
        memcpy(s, d, dl);
        memcpy(s + dl, doc->choices[ch], doc->choice_len[ch]);
        s[dl + doc->choice_len[ch]] = '\0';
    }
    *len = dl + doc->choice_len[ch];
    return s;
}

typedef struct ereq {
    int32_t *tokens;
    size_t   n, score_from;
    int      truncated;
} ereq;

typedef struct etask {
    eval_task     t;
    size_t       *req0; /* per doc: index of its first request */
    double        naive_tokens;
    tok_ids      *ids; /* rolling tasks: each document's tokens */
    ppl_stats    *st;  /* and its windows' NLL */
    pipe_doc     *pd;
    pipe_ppl_plan plan;
} etask;

static double peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss * 1024.0 : 0;
}

/* lm-eval prints "N/A" where a stderr is undefined (one sample). */
static void add_metric(cJSON *o, const char *name, double v, double se) {
    char key[64];
    snprintf(key, sizeof key, "%s,none", name);
    cJSON_AddNumberToObject(o, key, v);
    snprintf(key, sizeof key, "%s_stderr,none", name);
    if (isfinite(se))
        cJSON_AddNumberToObject(o, key, se);
    else
        cJSON_AddStringToObject(o, key, "N/A");
}

/* Per (sub)task outcome. */
typedef struct sub_stats {
    double *acc, *acc_norm;
    size_t  n;
} sub_stats;

static cJSON *task_config(const etask *et, const char *name, const eval_opts *o) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "task", name);
    cJSON_AddStringToObject(c, "output_type",
                            et->t.def->loglik ? "loglikelihood" : "multiple_choice");
    cJSON_AddStringToObject(c, "target_delimiter", task_delim(&et->t));
    cJSON_AddStringToObject(c, "fewshot_delimiter", "\n\n");
    cJSON_AddNumberToObject(c, "num_fewshot", et->t.num_fewshot);
    cJSON_AddStringToObject(c, "data_layout", et->t.layout);
    cJSON *ml = cJSON_AddArrayToObject(c, "metric_list");
    for (int k = 0; k < (et->t.def->acc_norm ? 2 : 1); k++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "metric", k ? "acc_norm" : "acc");
        cJSON_AddStringToObject(m, "aggregation", "mean");
        cJSON_AddBoolToObject(m, "higher_is_better", 1);
        cJSON_AddItemToArray(ml, m);
    }
    if (et->t.def->mutual_info) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "metric", "acc_mutual_info");
        cJSON_AddStringToObject(m, "aggregation", "mean");
        cJSON_AddBoolToObject(m, "higher_is_better", 1);
        cJSON_AddItemToArray(ml, m);
    }
    if (et->t.def->loglik) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "metric", "perplexity");
        cJSON_AddStringToObject(m, "aggregation", "perplexity");
        cJSON_AddBoolToObject(m, "higher_is_better", 0);
        cJSON_AddItemToArray(ml, m);
    }
    cJSON *md = cJSON_AddObjectToObject(c, "metadata");
    cJSON_AddNumberToObject(md, "version", et->t.def->version);
    (void)o;
    return c;
}

static int write_json_file(const char *path, const cJSON *root, assay_error *err) {
    char *s = jsonl_print(root, 1);
    if (!s)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory writing %s", path);
    size_t n = strlen(s);
    s[n]     = '\n';
    int rc   = file_write_atomic(path, s, n + 1, err);
    free(s);
    return rc;
}

/* lm-eval acc_mutual_info prediction: argmax(ll[c] - ll_unconditional[c]); the unconditional
 * requests follow the doc's n_choices conditional ones. Counts them in naive_tokens. */
static int doc_mutual_info(etask *et, size_t d, const ereq *reqs, const score_result *res,
                           const double *ll, int *pred, assay_error *err) {
    const eval_doc *doc = &et->t.docs[d];
    double          mi[64];
    for (int ch = 0; ch < doc->n_choices; ch++) {
        size_t ri = et->req0[d] + (size_t)doc->n_choices + (size_t)ch;
        et->naive_tokens += (double)reqs[ri].n - 1;
        if (!isfinite(res[ri].sum))
            return assay_fail(err, ASSAY_ECHECK,
                              "%s doc %zu choice %d (unconditional): the log-likelihood is not "
                              "finite: the model's weights or activations hold NaN or Inf",
                              et->t.def->name, doc->doc_id, ch);
        mi[ch] = ll[ch] - res[ri].sum;
    }
    *pred = metric_argmax(mi, doc->n_choices);
    return ASSAY_OK;
}

/* A loglikelihood_rolling task (wikitext): each document's text tokenized as lm-eval's HFLM
 * tok_encode (the tokenizer's default special tokens, as encode_hf_default) and planned into
 * lm-eval's rolling windows (window ctx, context 1, prefix token first), as `ppl --mode
 * rolling` plans them. */
static int rolling_prepare(etask *et, const tokenizer *tok, int64_t ctx, assay_error *err) {
    et->ids = calloc(et->t.n, sizeof *et->ids);
    et->st  = calloc(et->t.n, sizeof *et->st);
    et->pd  = calloc(et->t.n, sizeof *et->pd);
    if (!et->ids || !et->st || !et->pd)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (size_t d = 0; d < et->t.n; d++) {
        const eval_doc *doc = &et->t.docs[d];
        int rc = encode_hf_default((void *)tok, doc->context, doc->ctx_len, &et->ids[d], err);
        if (rc)
            return rc;
        et->st[d].words = doc->words;
        et->st[d].bytes = doc->bytes;
        et->pd[d]       = (pipe_doc){et->t.files[0], et->ids[d].ids, et->ids[d].n, &et->st[d]};
    }
    return pipe_ppl_plan_make(&et->plan, et->pd, et->t.n, 0, (size_t)ctx, (size_t)ctx, err);
}

/* lm-eval's wikitext metrics: word_perplexity = exp(-sum ll / sum words), byte_perplexity =
 * exp(-sum ll / sum bytes), bits_per_byte = -sum ll / sum bytes / ln 2 (weighted_mean over
 * documents; lm-eval reports no stderr for them: "N/A"). samples_<task>.jsonl: each document's
 * text (lm-eval's arguments), its log-likelihood and (ll, words) / (ll, bytes). */
static int rolling_results(etask *et, const eval_opts *o, cJSON *results, cJSON *configs,
                           cJSON *versions, cJSON *nshot, cJSON *hib, cJSON *nsamp,
                           assay_error *err) {
    const char *nm  = et->t.def->name;
    ppl_stats   tot = {0};
    for (size_t d = 0; d < et->t.n; d++) {
        if (!isfinite(et->st[d].nll))
            return assay_fail(err, ASSAY_ECHECK, "%s doc %zu: the log-likelihood is not finite", nm,
                              d);
        ppl_stats_merge(&tot, &et->st[d]);
    }
    cJSON *r = cJSON_AddObjectToObject(results, nm);
    cJSON_AddStringToObject(r, "alias", nm);
    add_metric(r, "word_perplexity", ppl_word_ppl(&tot), NAN);
    add_metric(r, "byte_perplexity", ppl_byte_ppl(&tot), NAN);
    add_metric(r, "bits_per_byte", ppl_bits_per_byte(&tot), NAN);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "task", nm);
    cJSON_AddStringToObject(c, "output_type", "loglikelihood_rolling");
    cJSON_AddNumberToObject(c, "num_fewshot", 0);
    cJSON_AddStringToObject(c, "data_layout", et->t.layout);
    cJSON_AddStringToObject(c, "windows",
                            "lm-eval rolling: window ctx tokens, context 1, the "
                            "prefix token before the first");
    cJSON *md = cJSON_AddObjectToObject(c, "metadata");
    cJSON_AddNumberToObject(md, "version", et->t.def->version);
    cJSON_AddItemToObject(configs, nm, c);
    cJSON_AddNumberToObject(versions, nm, et->t.def->version);
    cJSON_AddNumberToObject(nshot, nm, 0);
    cJSON *h = cJSON_AddObjectToObject(hib, nm);
    cJSON_AddBoolToObject(h, "word_perplexity", 0);
    cJSON_AddBoolToObject(h, "byte_perplexity", 0);
    cJSON_AddBoolToObject(h, "bits_per_byte", 0);
    cJSON *ns = cJSON_AddObjectToObject(nsamp, nm);
    cJSON_AddNumberToObject(ns, "original", (double)et->t.total);
    cJSON_AddNumberToObject(ns, "effective", (double)et->t.n);
    if (!o->log_samples || !o->out_dir)
        return ASSAY_OK;
    char        path[4200];
    atomic_file af = {0};
    snprintf(path, sizeof path, "%s/samples_%s.jsonl", o->out_dir, nm);
    int rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    for (size_t d = 0; d < et->t.n; d++) {
        const eval_doc *doc = &et->t.docs[d];
        double          ll  = -et->st[d].nll;
        cJSON *s = cJSON_CreateObject(), *args = cJSON_CreateArray(), *a1 = cJSON_CreateArray();
        cJSON_AddNumberToObject(s, "doc_id", (double)doc->doc_id);
        cJSON_AddItemToArray(a1, jsonl_string_create(doc->context, doc->ctx_len));
        cJSON_AddItemToArray(args, a1);
        cJSON_AddItemToObject(s, "arguments", args);
        cJSON_AddNumberToObject(s, "ll", ll);
        cJSON_AddNumberToObject(s, "tokens", (double)et->st[d].tokens);
        cJSON *wp = cJSON_AddArrayToObject(s, "word_perplexity");
        cJSON_AddItemToArray(wp, cJSON_CreateNumber(ll));
        cJSON_AddItemToArray(wp, cJSON_CreateNumber((double)doc->words));
        cJSON *bp = cJSON_AddArrayToObject(s, "byte_perplexity");
        cJSON_AddItemToArray(bp, cJSON_CreateNumber(ll));
        cJSON_AddItemToArray(bp, cJSON_CreateNumber((double)doc->bytes));
        char *line = jsonl_print(s, 0);
        cJSON_Delete(s);
        if (!line || fprintf(af.fp, "%s\n", line) < 0) {
            free(line);
            atomic_abort(&af);
            return assay_fail(err, ASSAY_EIO, "%s: write failed", path);
        }
        free(line);
    }
    return atomic_commit(&af, err);
}

/* Writes samples_<name>.jsonl for the docs of one (sub)task. */
static int write_samples(const char *out_dir, const char *name, const etask *et, size_t sub,
                         const ereq *reqs, const score_result *res, assay_error *err) {
    char        path[4200];
    atomic_file af = {0};
    snprintf(path, sizeof path, "%s/samples_%s.jsonl", out_dir, name);
    int rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    for (size_t d = 0; d < et->t.n; d++) {
        const eval_doc *doc = &et->t.docs[d];
        if (doc->sub != sub)
            continue;
        double ll[64], norm_len[64];
        (void)norm_len;
        cJSON *o = cJSON_CreateObject(), *args = cJSON_CreateObject(), *resps = cJSON_CreateArray(),
              *fr = cJSON_CreateArray(), *ntok = cJSON_CreateArray();
        cJSON_AddNumberToObject(o, "doc_id", (double)doc->doc_id);
        cJSON_AddNumberToObject(o, "target", doc->gold);
        int    trunc = 0;
        size_t chars[64];
        int    n_r = doc->n_choices * (et->t.def->mutual_info ? 2 : 1); /* + unconditional */
        for (int c2 = 0; c2 < n_r; c2++) {
            int                 c = c2 % doc->n_choices, uncond = c2 >= doc->n_choices;
            size_t              ri = et->req0[d] + (size_t)c2;
            const score_result *r  = &res[ri];
            char                key[32];
            cJSON              *a = cJSON_CreateObject();
            cJSON_AddItemToObject(a, "arg_0",
                                  uncond      ? jsonl_string_create("", 0)
                                  : doc->ctxs ? jsonl_string_create(doc->ctxs[c], doc->ctx_lens[c])
                                              : jsonl_string_create(doc->context, doc->ctx_len));
            char *cont = malloc(doc->choice_len[c] + 2);
            if (cont) {
                cont[0] = ' ';
                memcpy(cont + 1, doc->choices[c], doc->choice_len[c]);
                cJSON_AddItemToObject(a, "arg_1",
                                      jsonl_string_create(cont, doc->choice_len[c] + 1));
                free(cont);
            }
            snprintf(key, sizeof key, "gen_args_%d", c2);
            cJSON_AddItemToObject(args, key, a);
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(r->sum));
            cJSON_AddItemToArray(pair, cJSON_CreateBool(r->n_greedy == r->n_targets));
            cJSON *wrap = cJSON_CreateArray();
            cJSON_AddItemToArray(wrap, cJSON_Duplicate(pair, 1));
            cJSON_AddItemToArray(resps, wrap);
            cJSON_AddItemToArray(fr, pair);
            cJSON_AddItemToArray(ntok, cJSON_CreateNumber(r->n_targets));
            ll[c2]   = r->sum;
            chars[c] = metric_chars(doc->choices[c], doc->choice_len[c]);
            trunc |= reqs[ri].truncated;
        }
        int pred = metric_argmax(ll, doc->n_choices);
        if (et->t.def->mutual_info) {
            double mi[32];
            for (int c = 0; c < doc->n_choices; c++)
                mi[c] = ll[c] - ll[doc->n_choices + c];
            cJSON_AddNumberToObject(o, "acc_mutual_info",
                                    metric_argmax(mi, doc->n_choices) == doc->gold);
        }
        cJSON_AddItemToObject(o, "arguments", args);
        cJSON_AddItemToObject(o, "resps", resps);
        cJSON_AddItemToObject(o, "filtered_resps", fr);
        if (et->t.def->loglik) {
            const score_result *r = &res[et->req0[d]];
            cJSON_AddNumberToObject(o, "acc", r->n_greedy == r->n_targets);
            cJSON_AddNumberToObject(o, "perplexity", r->sum);
        } else if (et->t.def->mc2)
            cJSON_AddNumberToObject(o, "acc", metric_mc2(ll, doc->truth, doc->n_choices));
        else
            cJSON_AddNumberToObject(o, "acc", pred == doc->gold);
        if (et->t.def->acc_norm) {
            int pn = metric_argmax_norm(ll, chars, doc->n_choices);
            cJSON_AddNumberToObject(o, "acc_norm", pn == doc->gold);
            cJSON_AddNumberToObject(o, "pred_norm", pn);
        }
        cJSON_AddNumberToObject(o, "pred", pred);
        cJSON_AddNumberToObject(o, "gold", doc->gold);
        cJSON_AddBoolToObject(o, "correct", pred == doc->gold);
        cJSON_AddItemToObject(o, "n_tokens", ntok);
        cJSON_AddBoolToObject(o, "truncated", trunc);
        char *line = jsonl_print(o, 0);
        cJSON_Delete(o);
        if (!line || fprintf(af.fp, "%s\n", line) < 0) {
            int e = errno;
            free(line);
            atomic_abort(&af);
            return line ? assay_fail(err, ASSAY_EIO, "%s: write failed: %s", path, strerror(e))
                        : assay_fail(err, ASSAY_ENOMEM, "out of memory writing %s", path);
        }
        free(line);
    }
    return atomic_commit(&af, err);
}

/* lm-eval's mmlu group config: mmlu_stem, mmlu_other, mmlu_social_sciences, mmlu_humanities,
 * each the size-weighted mean of its subjects' acc with the pooled stderr over them (lm-eval
 * api/group.py aggregates over leaf tasks); mmlu's group_subtasks become these four. A category
 * with no subject holding questions is left out, as lm-eval has no group to report. accs holds
 * the documents of every subject in subject order; sizes and se_a are per subject. */
static int mmlu_category_groups(const etask *et, const size_t *sizes, const double *se_a,
                                const double *accs, cJSON *results, cJSON *groups, cJSON *gsub,
                                cJSON *versions, assay_error *err) {
    static const char *const cats[] = MMLU_CATEGORIES;
    size_t                   n_subs = et->t.n_subs;
    double                  *sa     = calloc(n_subs, sizeof *sa);
    double                  *x      = calloc(et->t.n ? et->t.n : 1, sizeof *x);
    size_t                  *sz     = calloc(n_subs, sizeof *sz);
    if (!sa || !sz || !x) {
        free(sa), free(sz), free(x);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    }
    cJSON *top = cJSON_CreateArray();
    for (size_t c = 0; c < sizeof cats / sizeof cats[0]; c++) {
        size_t k = 0, nx = 0, first = 0;
        cJSON *members = cJSON_CreateArray();
        for (size_t s = 0; s < n_subs; first += sizes[s], s++) {
            const char *cat = mmlu_category(et->t.subs[s]);
            if (!sizes[s] || !cat || strcmp(cat, cats[c]))
                continue;
            char sub_name[300];
            snprintf(sub_name, sizeof sub_name, "mmlu_%s", et->t.subs[s]);
            cJSON_AddItemToArray(members, cJSON_CreateString(sub_name));
            memcpy(x + nx, accs + first, sizes[s] * sizeof *x);
            nx += sizes[s];
            sa[k]   = se_a[s];
            sz[k++] = sizes[s];
        }
        if (!k) {
            cJSON_Delete(members);
            continue;
        }
        char name[64], alias[64];
        snprintf(name, sizeof name, "mmlu_%s", cats[c]);
        snprintf(alias, sizeof alias, " - %s", cats[c]);
        for (char *p = alias; *p; p++)
            if (*p == '_')
                *p = ' ';
        cJSON *g = cJSON_CreateObject();
        cJSON_AddStringToObject(g, "alias", alias);
        add_metric(g, "acc", metric_mean(x, nx), k > 1 ? metric_pooled_stderr(sa, sz, k) : sa[0]);
        cJSON_AddItemToObject(results, name, cJSON_Duplicate(g, 1));
        cJSON_AddItemToObject(groups, name, g);
        cJSON_AddItemToObject(gsub, name, members);
        cJSON_AddNumberToObject(versions, name, 2.0);
        cJSON_AddItemToArray(top, cJSON_CreateString(name));
    }
    cJSON_ReplaceItemInObjectCaseSensitive(gsub, "mmlu", top);
    free(sa), free(sz), free(x);
    return ASSAY_OK;
}

/* Scores requests [w0, w1) (one window), keeps each result's sum, n_greedy and n_targets in
 * res[w0..w1) and frees the window's tokens and per-token arrays: memory for tokens and
 * per-token results is bounded by the window, whatever the number of documents. The pipeline's
 * results do not depend on how requests are grouped (harness/pipeline.h), so any window size
 * gives the same bits. */
static int score_window(model *m, ereq *reqs, score_result *res, size_t w0, size_t w1,
                        pipe_counts *counts, progress *prog, const pipe_shard *sh,
                        assay_error *err) {
    size_t        n  = w1 - w0;
    pipe_request *pr = malloc((n ? n : 1) * sizeof *pr);
    score_result *rw = calloc(n ? n : 1, sizeof *rw);
    int           rc;
    if (!pr || !rw) {
        free(pr);
        free(rw);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", n);
    }
    for (size_t i = 0; i < n; i++)
        pr[i] = (pipe_request){reqs[w0 + i].tokens, reqs[w0 + i].n, reqs[w0 + i].score_from};
    rc = pipe_score_loglik_on(m, pr, n, rw, counts, prog, sh, err);
    for (size_t i = 0; i < n; i++) {
        res[w0 + i] = (score_result){
            .n_targets = rw[i].n_targets, .sum = rw[i].sum, .n_greedy = rw[i].n_greedy};
        free(reqs[w0 + i].tokens);
        reqs[w0 + i].tokens = NULL;
    }
    score_results_free(rw, (int)n);
    free(rw);
    free(pr);
    return rc;
}

int eval_run(const eval_opts *o, assay_error *err) {
    etask        *tasks = calloc((size_t)o->n_tasks + 1, sizeof *tasks); /* + a user task */
    int           n_t = 0, rc = ASSAY_OK;
    tokenizer    *tok   = NULL;
    model        *m     = NULL;
    ereq         *reqs  = NULL;
    size_t        n_req = 0, cap_req = 0, n_trunc = 0;
    score_result *res  = NULL;
    cJSON        *root = NULL;
    tok_ids       c = {0}, k = {0};
    pipe_counts   counts = {0};
    evalgen      *eg     = NULL;
    eval_task   **gts    = calloc((size_t)o->n_tasks + 1, sizeof *gts);
    progress      prog;
    double        t_tok0 = time_now(), t_tok = 0, t_load = 0, t_score = 0;
    cJSON        *per_rank = NULL;
    if (!tasks || !gts) {
        free(tasks);
        free(gts);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    }
    /* Under mpirun every rank reads and tokenizes the same data and scores its share of each
     * window (harness/dist.h); rank 0 writes the files and the history record. */
    eval_opts  one = *o;
    pipe_shard sh  = pipe_shard_world();
    char       rkey[65];
    if (dist_rank() > 0)
        one.out_dir = NULL, one.log_samples = 0, one.history = NULL;
    o             = &one;
    sh.resume_dir = o->resume_dir;
    sh.resume_key = rkey;
    if (o->resume_dir && (rc = pipe_resume_key(o->model_dir, rkey, err)))
        goto done;

    /* Tasks: names first (an unknown one fails before any file is read). */
    for (int i = 0; i < o->n_tasks; i++) {
        const eval_task_def *def = eval_task_find(o->tasks[i]);
        if (!def) {
            char names[512];
            eval_task_names(names, sizeof names);
            rc = assay_fail(err, ASSAY_EINVAL, "unknown task '%s' (known tasks: %s)", o->tasks[i],
                            names);
            goto done;
        }
        int dup = 0;
        for (int j = 0; j < n_t; j++)
            dup |= tasks[j].t.def == def;
        if (!dup)
            tasks[n_t++].t.def = def;
    }
    model_config cfg;
    if ((rc = config_load_dir(&cfg, o->model_dir, err)))
        goto done;
    int64_t ctx = o->ctx ? o->ctx : cfg.max_pos;
    if (ctx > cfg.max_pos) {
        rc = assay_fail(err, ASSAY_EINVAL,
                        "--ctx %lld is larger than the model's context (%s/config.json: max "
                        "positions %d)",
                        (long long)ctx, o->model_dir, cfg.max_pos);
        goto done;
    }
    eval_task_opts to = {o->data_dir, o->num_fewshot, o->limit, NULL};
    if (o->task_file) {
        if ((rc = task_user_load(&tasks[n_t].t, o->task_file, &to, err)))
            goto done;
        for (int j = 0; j < n_t; j++)
            if (!strcmp(tasks[j].t.def->name, tasks[n_t].t.def->name)) {
                rc = assay_fail(err, ASSAY_EINVAL, "%s: task '%s' is also a built-in task's name",
                                o->task_file, tasks[n_t].t.def->name);
                n_t++;
                goto done;
            }
        n_t++;
    }
    for (int i = 0; i < n_t; i++) {
        int random;
        if ((rc = check_fewshot(&tasks[i].t, o, &random, err)))
            goto done;
        eval_task_opts ti = to;
        if (o->num_fewshot > 0 && !tasks[i].t.own_def &&
            fewshot_config_zero(tasks[i].t.def->name)) {
            ti.num_fewshot = 0;
            fprintf(stderr,
                    "assay: note: %s: lm-eval's config fixes num_fewshot 0 and ignores a requested "
                    "one; --num-fewshot %d ignored, as lm-eval does\n",
                    tasks[i].t.def->name, o->num_fewshot);
        }
        if (!tasks[i].t.own_def && (rc = tasks[i].t.def->load(&tasks[i].t, &ti, err)))
            goto done;
        if (tasks[i].t.n == 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: no documents in %s", tasks[i].t.def->name,
                            tasks[i].t.n_files ? tasks[i].t.files[0] : o->data_dir);
            goto done;
        }
        if ((rc = load_fewshot(&tasks[i].t, o, err)))
            goto done;
    }
    if (!(tok = tok_load(o->model_dir, err))) {
        rc = err->code ? err->code : ASSAY_EINTERNAL;
        goto done;
    }
    int32_t prefix = tok_bos_id(tok) >= 0 ? tok_bos_id(tok) : tok_eos_id(tok);

    /* Generation tasks: prompts (few-shot, system prompt, chat template) and stop strings. */
    for (int i = 0; i < n_t; i++) {
        gts[i] = &tasks[i].t;
        if (o->apply_chat_template && !tasks[i].t.gen) {
            rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                            "%s: --apply-chat-template is implemented for generation tasks "
                            "(gsm8k, generate_until specs) only",
                            tasks[i].t.def->name);
            goto done;
        }
    }
    evalgen_opts go = {.model_dir            = o->model_dir,
                       .data_dir             = o->data_dir,
                       .num_fewshot          = o->num_fewshot,
                       .seed                 = o->seed,
                       .ctx                  = ctx,
                       .apply_chat_template  = o->apply_chat_template,
                       .fewshot_as_multiturn = o->fewshot_as_multiturn,
                       .system_prompt        = o->system_prompt,
                       .max_gen_toks         = o->max_gen_toks};
    if ((rc = evalgen_prepare(&eg, gts, n_t, &go, tok, err)))
        goto done;

    /* Rolling tasks (wikitext) are tokenized and planned first: the KV cache is sized for their
     * longest window when the model loads. */
    int64_t longest_window = 0;
    for (int i = 0; i < n_t; i++) {
        etask *et = &tasks[i];
        if (!et->t.def->rolling)
            continue;
        if ((rc = rolling_prepare(et, tok, ctx, err)))
            goto done;
        if (et->plan.longest > longest_window)
            longest_window = et->plan.longest;
    }
    t_tok              = time_now() - t_tok0;
    double     t_load0 = time_now();
    cli_common cc      = *o->cc; /* rolling windows run through the KV cache: size it for them */
    if (evalgen_longest(eg) > longest_window) /* a prompt and its new tokens stay cached */
        longest_window = evalgen_longest(eg);
    if (longest_window > (cc.kv_tokens ? cc.kv_tokens : 8192))
        cc.kv_tokens = (int)longest_window;
    if ((rc = cli_load_model(o->model_dir, &cc, &m, err)))
        goto done;
    if (model_get_config(m)->vocab_size < tok_vocab_size(tok)) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: the tokenizer has %d tokens, the model only %d",
                        o->model_dir, tok_vocab_size(tok), model_get_config(m)->vocab_size);
        goto done;
    }
    t_load = time_now() - t_load0;

    /* Requests: (context, " " + choice) per choice, encoded as lm-eval's _encode_pair, built and
     * scored in windows of about window_tokens tokens (whole documents), so memory does not grow
     * with the number of documents beyond each request's few result numbers. */
    int64_t total_targets = 0, window_tokens = o->window_tokens > 0 ? o->window_tokens : 1 << 22;
    size_t  w0 = 0, docs_total = 0, docs_done = 0;
    int64_t w_tokens = 0;
    for (int i = 0; i < n_t; i++)
        docs_total += tasks[i].t.def->rolling || tasks[i].t.gen ? 0 : tasks[i].t.n;
    progress_init(&prog, "eval", "tok", 0);
    t_tok0 = time_now();
    for (int i = 0; i < n_t; i++) {
        etask *et = &tasks[i];
        if (!(et->req0 = malloc(et->t.n * sizeof *et->req0))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        if (et->t.def->rolling || et->t.gen)
            continue;
        for (size_t d = 0; d < et->t.n; d++) {
            const eval_doc *doc = &et->t.docs[d];
            et->req0[d]         = n_req;
            /* acc_mutual_info: then lm-eval's unconditional ("", delimiter + choice) requests */
            int n_r = doc->n_choices * (et->t.def->mutual_info ? 2 : 1);
            for (int ch2 = 0; ch2 < n_r; ch2++) {
                int  ch = ch2 % doc->n_choices, uncond = ch2 >= doc->n_choices;
                char what[160];
                snprintf(what, sizeof what, "%s doc %zu choice %d%s", et->t.def->name, d, ch,
                         uncond ? " (unconditional)" : "");
                if (n_req == cap_req) {
                    size_t        nc = cap_req ? cap_req * 2 : 1024;
                    ereq         *nr = realloc(reqs, nc * sizeof *nr);
                    score_result *ns = nr ? realloc(res, nc * sizeof *ns) : NULL;
                    if (nr)
                        reqs = nr;
                    if (!ns) {
                        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", nc);
                        goto done;
                    }
                    res = ns;
                    memset(res + cap_req, 0, (nc - cap_req) * sizeof *res);
                    cap_req = nc;
                }
                size_t cont_len;
                char  *cont = make_cont(&et->t, doc, ch, &cont_len);
                if (!cont) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    goto done;
                }
                rc = loglik_encode_pair(encode_hf_default, tok,
                                        uncond      ? ""
                                        : doc->ctxs ? doc->ctxs[ch]
                                                    : doc->context,
                                        uncond      ? 0
                                        : doc->ctxs ? doc->ctx_lens[ch]
                                                    : doc->ctx_len,
                                        cont, cont_len, prefix, &c, &k, err);
                free(cont);
                if (rc)
                    goto done;
                ereq *r = &reqs[n_req];
                memset(r, 0, sizeof *r);
                if ((rc = loglik_build_request(c.ids, c.n, k.ids, k.n, (size_t)ctx, what,
                                               &r->tokens, &r->n, &r->score_from, err)))
                    goto done;
                r->truncated = c.n + k.n > (size_t)ctx + 1;
                n_trunc += (size_t)r->truncated;
                total_targets += (int64_t)(r->n - r->score_from);
                w_tokens += (int64_t)r->n;
                n_req++;
            }
            docs_done++;
            int last = docs_done == docs_total;
            if (w_tokens >= window_tokens || last) {
                /* the progress total: exact at the end, extrapolated from the documents so far */
                prog.total =
                    (int64_t)((double)total_targets * (double)docs_total / (double)docs_done);
                t_tok += time_now() - t_tok0;
                double t_score0 = time_now();
                rc              = score_window(m, reqs, res, w0, n_req, &counts, &prog, &sh, err);
                t_score += time_now() - t_score0;
                t_tok0 = time_now();
                if (rc)
                    goto done;
                w0       = n_req;
                w_tokens = 0;
            }
        }
    }
    for (int i = 0; !rc && i < n_t; i++)
        if (tasks[i].t.def->rolling) {
            double t_score0 = time_now();
            rc = pipe_ppl_run_on(m, &tasks[i].plan, tasks[i].pd, prefix, o->model_dir, &counts,
                                 NULL, &sh, err);
            t_score += time_now() - t_score0;
        }
    if (rc)
        goto done;
    progress_finish(&prog);
    t_tok += time_now() - t_tok0;
    double t_gen0 = time_now();
    if ((rc = evalgen_generate(eg, m, tok, &sh, err)))
        goto done;
    t_score += time_now() - t_gen0;
    if (!(per_rank = dist_per_rank_json(t_score, counts.mine, err))) {
        rc = err->code;
        goto done;
    }

    /* Metrics. */
    double t_write0 = time_now();
    root            = cJSON_CreateObject();
    cJSON *results  = cJSON_AddObjectToObject(root, "results");
    cJSON *groups = cJSON_CreateObject(), *gsub = cJSON_CreateObject();
    cJSON *configs = cJSON_CreateObject(), *versions = cJSON_CreateObject();
    cJSON *nshot = cJSON_CreateObject(), *hib = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
    cJSON *per_task_cost = cJSON_CreateObject();
    size_t total_docs    = 0;
    for (int i = 0; i < n_t; i++) {
        etask *et = &tasks[i];
        if (et->t.def->rolling) {
            total_docs += et->t.n;
            if ((rc = rolling_results(et, o, results, configs, versions, nshot, hib, nsamp, err)))
                goto done;
            continue;
        }
        if (et->t.gen) {
            total_docs += et->t.n;
            if ((rc = evalgen_results(eg, &et->t, results, configs, versions, nshot, hib, nsamp,
                                      o->log_samples ? o->out_dir : NULL, err)))
                goto done;
            continue;
        }
        size_t  n_subs = et->t.n_subs ? et->t.n_subs : 1;
        double *accs = calloc(et->t.n, sizeof *accs), *norms = calloc(et->t.n, sizeof *norms);
        double *se_a = calloc(n_subs, sizeof *se_a), *se_n = calloc(n_subs, sizeof *se_n);
        size_t *sizes = calloc(n_subs, sizeof *sizes);
        double *mis   = calloc(et->t.n ? et->t.n : 1, sizeof *mis); /* acc_mutual_info */
        if (!accs || !norms || !se_a || !se_n || !sizes || !mis) {
            free(accs), free(norms), free(se_a), free(se_n), free(sizes), free(mis);
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        total_docs += et->t.n;
        size_t pos = 0; /* docs are grouped by subtask in load order */
        for (size_t s = 0; s < n_subs; s++) {
            size_t first = pos;
            for (size_t d = 0; d < et->t.n; d++) {
                const eval_doc *doc = &et->t.docs[d];
                if (doc->sub != s)
                    continue;
                double ll[64];
                size_t chars[64];
                if (doc->n_choices > (et->t.def->mutual_info ? 32 : 64)) {
                    rc = assay_fail(err, ASSAY_EINVAL, "%s doc %zu: %d choices (at most %d)",
                                    et->t.def->name, doc->doc_id, doc->n_choices,
                                    et->t.def->mutual_info ? 32 : 64);
                    break;
                }
                for (int ch = 0; ch < doc->n_choices; ch++) {
                    const score_result *r = &res[et->req0[d] + (size_t)ch];
                    et->naive_tokens += (double)reqs[et->req0[d] + (size_t)ch].n - 1;
                    if (!isfinite(r->sum)) {
                        rc = assay_fail(err, ASSAY_ECHECK,
                                        "%s doc %zu choice %d: the log-likelihood is %s: the "
                                        "model's weights or activations hold NaN or Inf",
                                        et->t.def->name, doc->doc_id, ch,
                                        isnan(r->sum) ? "NaN" : "infinite");
                        break;
                    }
                    ll[ch]    = r->sum;
                    chars[ch] = metric_chars(doc->choices[ch], doc->choice_len[ch]);
                }
                if (rc)
                    break;
                if (et->t.def->loglik) { /* acc = is_greedy; norms holds the log-likelihoods */
                    const score_result *r = &res[et->req0[d]];
                    accs[pos]             = r->n_greedy == r->n_targets;
                    norms[pos]            = r->sum;
                } else if (et->t.def->mc2) { /* acc is the probability mass on true answers */
                    accs[pos]  = metric_mc2(ll, doc->truth, doc->n_choices);
                    norms[pos] = 0;
                } else {
                    accs[pos]  = metric_argmax(ll, doc->n_choices) == doc->gold;
                    norms[pos] = metric_argmax_norm(ll, chars, doc->n_choices) == doc->gold;
                }
                if (et->t.def->mutual_info) {
                    int pm = 0;
                    if ((rc = doc_mutual_info(et, d, reqs, res, ll, &pm, err)))
                        break;
                    mis[pos] = pm == doc->gold;
                }
                pos++;
            }
            if (rc)
                break;
            sizes[s]       = pos - first;
            const char *nm = et->t.def->name;
            char        sub_name[300], alias[300];
            if (et->t.n_subs) {
                snprintf(sub_name, sizeof sub_name, "%s_%s", nm, et->t.subs[s]);
                snprintf(alias, sizeof alias, " - %s", et->t.subs[s]);
                nm = sub_name;
            } else {
                snprintf(alias, sizeof alias, "%s", nm);
            }
            if (sizes[s] == 0)
                continue; /* a subject without test questions */
            cJSON *r = cJSON_AddObjectToObject(results, nm);
            cJSON_AddStringToObject(r, "alias", alias);
            se_a[s] = metric_mean_stderr(accs + first, sizes[s]);
            add_metric(r, "acc", metric_mean(accs + first, sizes[s]), se_a[s]);
            if (et->t.def->acc_norm) {
                se_n[s] = metric_mean_stderr(norms + first, sizes[s]);
                add_metric(r, "acc_norm", metric_mean(norms + first, sizes[s]), se_n[s]);
            }
            if (et->t.def->mutual_info)
                add_metric(r, "acc_mutual_info", metric_mean(mis + first, sizes[s]),
                           metric_mean_stderr(mis + first, sizes[s]));
            if (et->t.def->loglik) /* lm-eval bootstraps this stderr; assay does not */
                add_metric(r, "perplexity", exp(-metric_mean(norms + first, sizes[s])), NAN);
            cJSON_AddItemToObject(configs, nm, task_config(et, nm, o));
            cJSON_AddNumberToObject(versions, nm, et->t.def->version);
            cJSON_AddNumberToObject(nshot, nm, et->t.num_fewshot);
            cJSON *h = cJSON_AddObjectToObject(hib, nm);
            cJSON_AddBoolToObject(h, "acc", 1);
            if (et->t.def->loglik)
                cJSON_AddBoolToObject(h, "perplexity", 0);
            if (et->t.def->acc_norm)
                cJSON_AddBoolToObject(h, "acc_norm", 1);
            if (et->t.def->mutual_info)
                cJSON_AddBoolToObject(h, "acc_mutual_info", 1);
            cJSON *ns = cJSON_AddObjectToObject(nsamp, nm);
            cJSON_AddNumberToObject(ns, "original",
                                    (double)(et->t.n_subs ? et->t.sub_total[s] : et->t.total));
            cJSON_AddNumberToObject(ns, "effective", (double)sizes[s]);
            if (o->log_samples && o->out_dir &&
                (rc = write_samples(o->out_dir, nm, et, et->t.n_subs ? s : 0, reqs, res, err)))
                break;
        }
        if (!rc && et->t.n_subs) {
            /* the group: micro-average (lm-eval weight_by_size) and pooled stderr over the
             * subjects that have questions */
            double *sa = calloc(n_subs, sizeof *sa);
            size_t *sz = calloc(n_subs, sizeof *sz), k2 = 0;
            if (!sa || !sz) {
                free(sa);
                free(sz);
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            } else {
                cJSON *members = cJSON_CreateArray();
                for (size_t s = 0; s < n_subs; s++) {
                    if (!sizes[s])
                        continue;
                    char sub_name[300];
                    snprintf(sub_name, sizeof sub_name, "%s_%s", et->t.def->name, et->t.subs[s]);
                    cJSON_AddItemToArray(members, cJSON_CreateString(sub_name));
                    sa[k2]   = se_a[s];
                    sz[k2++] = sizes[s];
                }
                cJSON *g = cJSON_CreateObject();
                cJSON_AddStringToObject(g, "alias", et->t.def->name);
                add_metric(g, "acc", metric_mean(accs, pos),
                           k2 > 1 ? metric_pooled_stderr(sa, sz, k2) : se_a[0]);
                cJSON_AddItemToObject(results, et->t.def->name, cJSON_Duplicate(g, 1));
                cJSON_AddItemToObject(groups, et->t.def->name, g);
                cJSON_AddItemToObject(gsub, et->t.def->name, members);
                cJSON_AddNumberToObject(versions, et->t.def->name, 2.0);
                if (!strcmp(et->t.def->name, "mmlu"))
                    rc = mmlu_category_groups(et, sizes, se_a, accs, results, groups, gsub,
                                              versions, err);
                free(sa);
                free(sz);
            }
        }
        free(accs), free(norms), free(se_a), free(se_n), free(sizes), free(mis);
        if (rc)
            goto done;
    }
    if (cJSON_GetArraySize(groups) > 0) {
        cJSON_AddItemToObject(root, "groups", groups);
        cJSON_AddItemToObject(root, "group_subtasks", gsub);
    } else {
        cJSON_Delete(groups);
        cJSON_Delete(gsub);
    }
    cJSON_AddItemToObject(root, "configs", configs);
    cJSON_AddItemToObject(root, "versions", versions);
    cJSON_AddItemToObject(root, "n-shot", nshot);
    cJSON_AddItemToObject(root, "higher_is_better", hib);
    cJSON_AddItemToObject(root, "n-samples", nsamp);
    cJSON *conf = cJSON_AddObjectToObject(root, "config");
    cJSON_AddStringToObject(conf, "model", "assay");
    cJSON_AddStringToObject(conf, "model_args", o->model_dir);
    if (o->limit)
        cJSON_AddNumberToObject(conf, "limit", (double)o->limit);
    else
        cJSON_AddNullToObject(conf, "limit");
    cJSON_AddNumberToObject(conf, "random_seed", (double)o->seed);
    cJSON_AddNumberToObject(conf, "fewshot_seed", (double)o->seed);

    /* The assay block: what was evaluated and what it cost. */
    cJSON *as = cJSON_AddObjectToObject(root, "assay");
    cJSON_AddStringToObject(as, "version", ASSAY_VERSION);
    cJSON_AddStringToObject(as, "commit", ASSAY_COMMIT);
    char   hex[65];
    cJSON *hs = cJSON_AddObjectToObject(as, "hashes");
    if ((rc = hashes_model(o->model_dir, hex, err)))
        goto done;
    cJSON_AddStringToObject(hs, "model_sha256_config_and_safetensors_headers", hex);
    {
        if ((rc = hashes_tokenizer(o->model_dir, hex, err)))
            goto done;
        cJSON_AddStringToObject(hs, "tokenizer_sha256", hex);
        cJSON *dh = cJSON_AddObjectToObject(hs, "data_sha256");
        for (int i = 0; i < n_t; i++)
            for (size_t f = 0; f < tasks[i].t.n_files; f++) {
                const char *fp = tasks[i].t.files[f];
                if ((rc = hashes_files(hex, &fp, 1, SIZE_MAX, err)))
                    goto done;
                if (!cJSON_GetObjectItemCaseSensitive(dh, fp))
                    cJSON_AddStringToObject(dh, fp, hex);
            }
    }
    cJSON_AddStringToObject(as, "device", model_device_name(m));
    cJSON_AddStringToObject(as, "dtype", model_weights_name(m));
    cJSON_AddNumberToObject(as, "threads",
                            o->cc->threads > 0 ? o->cc->threads : omp_get_max_threads());
    cJSON_AddNumberToObject(as, "gpus", strncmp(model_device_name(m), "cuda", 4) ? 0 : 1);
    cJSON_AddNumberToObject(as, "ranks", dist_size());
    cJSON_AddItemToObject(as, "per_rank", per_rank);
    per_rank = NULL;
    cJSON_AddNumberToObject(as, "ctx", (double)ctx);
    cJSON *bos = cJSON_AddObjectToObject(as, "prefix");
    cJSON_AddBoolToObject(bos, "bos_added_to_contexts", tok_add_bos(tok));
    cJSON_AddStringToObject(bos, "rule",
                            "as lm-eval's HF backend with add_bos_token unset: each context and "
                            "context+continuation is encoded with the tokenizer's default special "
                            "tokens (BOS exactly when the tokenizer adds it); an empty context "
                            "becomes the prefix token");
    cJSON_AddNumberToObject(as, "requests", (double)n_req);
    cJSON_AddNumberToObject(as, "truncated_requests", (double)n_trunc);
    cJSON_AddStringToObject(as, "truncation",
                            "context + continuation left-truncated to ctx + 1 tokens, as lm-eval's "
                            "(context_enc + continuation_enc)[-(max_length + 1):]");
    double total_wall = time_now() - o->t_start;
    cJSON *cost       = cJSON_AddObjectToObject(as, "cost");
    cJSON *ph         = cJSON_AddObjectToObject(cost, "wall_s");
    cJSON_AddNumberToObject(ph, "data_and_tokenize", t_tok);
    cJSON_AddNumberToObject(ph, "load", t_load);
    cJSON_AddNumberToObject(ph, "score", t_score);
    cJSON_AddNumberToObject(ph, "metrics_and_samples", time_now() - t_write0);
    cJSON_AddNumberToObject(ph, "total", total_wall);
    cJSON_AddNumberToObject(cost, "tokens_computed", (double)counts.computed);
    cJSON_AddNumberToObject(cost, "tokens_no_sharing", (double)counts.naive);
    cJSON_AddNumberToObject(cost, "tokens_scored", (double)counts.scored);
    cJSON_AddNumberToObject(cost, "tokens_per_s",
                            t_score > 0 ? (double)counts.computed / t_score : 0);
    cJSON_AddNumberToObject(cost, "device_seconds", t_score);
    {
        int64_t gp, gpt, gnt;
        double  gs;
        evalgen_totals(eg, &gp, &gpt, &gnt, &gs);
        if (gp) {
            cJSON *gc = cJSON_AddObjectToObject(cost, "generation");
            cJSON_AddNumberToObject(gc, "prompts", (double)gp);
            cJSON_AddNumberToObject(gc, "prompt_tokens", (double)gpt);
            cJSON_AddNumberToObject(gc, "new_tokens", (double)gnt);
            cJSON_AddNumberToObject(gc, "seconds", gs);
            cJSON_AddNumberToObject(gc, "prompts_per_s", gs > 0 ? (double)gp / gs : 0);
            cJSON_AddNumberToObject(gc, "new_tokens_per_s", gs > 0 ? (double)gnt / gs : 0);
        }
    }
    cJSON_AddStringToObject(cost, "device_seconds_means",
                            "seconds the scoring phase held the CPU device (threads above)");
    cJSON_AddNumberToObject(cost, "peak_rss_bytes", peak_rss_bytes());
    if (o->price_per_hour >= 0) {
        double run = total_wall / 3600.0 * o->price_per_hour;
        cJSON_AddNumberToObject(cost, "price_per_hour", o->price_per_hour);
        cJSON_AddNumberToObject(cost, "cost_per_run", run);
        cJSON_AddNumberToObject(cost, "cost_per_1000_samples",
                                total_docs ? run * 1000.0 / (double)total_docs : 0);
        cJSON_AddStringToObject(cost, "cost_per_task_rule",
                                "the run's cost split by each task's share of tokens_no_sharing");
        for (int i = 0; i < n_t; i++)
            cJSON_AddNumberToObject(
                per_task_cost, tasks[i].t.def->name,
                counts.naive ? run * tasks[i].naive_tokens / (double)counts.naive : 0);
        cJSON_AddItemToObject(cost, "cost_per_task", per_task_cost);
        per_task_cost = NULL;
    }
    cJSON_Delete(per_task_cost);
    if (o->out_dir) {
        char path[4200];
        snprintf(path, sizeof path, "%s/results.json", o->out_dir);
        if ((rc = write_json_file(path, root, err)))
            goto done;
    }
    if (o->history && (rc = history_record_run(o->history, "eval", root, err)))
        goto done;
    cJSON *groups_seen = cJSON_GetObjectItemCaseSensitive(root, "groups");
    /* stdout: results.json itself with --json, else a short table like lm-eval's */
    if (o->cc->json) {
        char *js = jsonl_print(root, 1);
        if (!js) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory printing results");
            goto done;
        }
        printf("%s\n", js);
        free(js);
    } else {
        printf("|%-40s|%6s|%-18s|%-16s|%12s|%10s|\n", "task", "kind", "metric", "filter", "value",
               "stderr");
        cJSON *it;
        cJSON_ArrayForEach(it, results) {
            cJSON *v;
            cJSON_ArrayForEach(v, it) {
                if (!cJSON_IsNumber(v) || strstr(v->string, "_stderr"))
                    continue;
                char        mname[64], sek[200];
                const char *filter = strchr(v->string, ',') ? strchr(v->string, ',') + 1 : "none";
                snprintf(mname, sizeof mname, "%.*s", (int)strcspn(v->string, ","), v->string);
                snprintf(sek, sizeof sek, "%s_stderr,%.100s", mname, filter);
                cJSON *se      = cJSON_GetObjectItemCaseSensitive(it, sek);
                char   sev[32] = "N/A"; /* lm-eval prints N/A where it has no stderr */
                if (se && cJSON_IsNumber(se))
                    snprintf(sev, sizeof sev, "%.4f", se->valuedouble);
                char val[32]; /* huge perplexities of untrained models keep the column */
                snprintf(val, sizeof val, fabs(v->valuedouble) < 1e7 ? "%.4f" : "%.4e",
                         v->valuedouble);
                printf("|%-40s|%6s|%-18s|%-16s|%12s|%10s|\n", it->string,
                       cJSON_GetObjectItemCaseSensitive(groups_seen, it->string) ? "group" : "task",
                       mname, filter, val, sev);
            }
        }
    }
    fprintf(stderr,
            "eval: %zu requests, %lld tokens computed (%lld without sharing), %.2f s scoring, "
            "%.0f tokens/s, %.2f s total\n",
            n_req, (long long)counts.computed, (long long)counts.naive, t_score,
            t_score > 0 ? (double)counts.computed / t_score : 0, total_wall);
    {
        int64_t gp, gpt, gnt;
        double  gs;
        evalgen_totals(eg, &gp, &gpt, &gnt, &gs);
        if (gp)
            fprintf(stderr,
                    "eval: generation: %lld prompts (%lld tokens), %lld new tokens in %.2f s, "
                    "%.1f new tokens/s\n",
                    (long long)gp, (long long)gpt, (long long)gnt, gs,
                    gs > 0 ? (double)gnt / gs : 0);
    }
done:
    cJSON_Delete(root);
    cJSON_Delete(per_rank);
    score_results_free(res, res ? (int)n_req : 0);
    free(res);
    for (size_t i = 0; i < n_req; i++)
        free(reqs[i].tokens);
    free(reqs);
    tok_ids_free(&c);
    tok_ids_free(&k);
    evalgen_free(eg); /* before the tasks it points at */
    for (int i = 0; i <= o->n_tasks; i++) {
        for (size_t d = 0; tasks[i].ids && d < tasks[i].t.n; d++)
            tok_ids_free(&tasks[i].ids[d]);
        free(tasks[i].ids);
        free(tasks[i].st);
        free(tasks[i].pd);
        pipe_ppl_plan_free(&tasks[i].plan);
        eval_task_free(&tasks[i].t);
        free(tasks[i].req0);
    }
    free(tasks);
    free(gts);
    model_free(m);
    tok_free(tok);
    return rc;
}
