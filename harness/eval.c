/* harness/eval.c — see eval.h. */
#include "harness/eval.h"
#include "harness/hashes.h"
#include "harness/history.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "loader/modeldir.h"
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

/* What a log-likelihood document leaves once its window is scored: its metric inputs. */
typedef struct doc_score {
    double acc, norm, mi; /* acc (or mc2 mass, or is_greedy), acc_norm (or loglik), mutual info */
    size_t sub;
} doc_score;

typedef struct etask {
    eval_task t; /* the counting pass's task: files, subtasks, totals (a streamed task keeps no
                    documents) */
    eval_task_opts topts;   /* the options its loader ran with (the streaming pass repeats them) */
    size_t         n_docs;  /* documents within --limit */
    eval_task      pool;    /* the few-shot pool when lm-eval draws examples at random */
    int            fewshot; /* 1 when pool is used */
    doc_score     *ds;      /* streamed tasks: per document, in load order */
    size_t         n_ds, cap_ds;
    double         naive_tokens;
    ppl_stats      tot;       /* rolling tasks: their documents' stats, merged in load order */
    size_t         max_bytes; /* and their longest text, seen by the counting pass */
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
static int doc_mutual_info(etask *et, const eval_doc *doc, size_t req0, const ereq *reqs,
                           const score_result *res, const double *ll, int *pred, assay_error *err) {
    double mi[64];
    for (int ch = 0; ch < doc->n_choices; ch++) {
        size_t ri = req0 + (size_t)doc->n_choices + (size_t)ch;
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

/* lm-eval's wikitext metrics: word_perplexity = exp(-sum ll / sum words), byte_perplexity =
 * exp(-sum ll / sum bytes), bits_per_byte = -sum ll / sum bytes / ln 2 (weighted_mean over
 * documents; lm-eval reports no stderr for them: "N/A"), from the streamed documents' stats. */
static void rolling_results(etask *et, cJSON *results, cJSON *configs, cJSON *versions,
                            cJSON *nshot, cJSON *hib, cJSON *nsamp) {
    const char *nm = et->t.def->name;
    cJSON      *r  = cJSON_AddObjectToObject(results, nm);
    cJSON_AddStringToObject(r, "alias", nm);
    add_metric(r, "word_perplexity", ppl_word_ppl(&et->tot), NAN);
    add_metric(r, "byte_perplexity", ppl_byte_ppl(&et->tot), NAN);
    add_metric(r, "bits_per_byte", ppl_bits_per_byte(&et->tot), NAN);
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
    cJSON_AddNumberToObject(ns, "effective", (double)et->n_docs);
}

/* A rolling document's line of samples_<task>.jsonl: its text (lm-eval's arguments), its
 * log-likelihood and (ll, words) / (ll, bytes). NULL when out of memory. */
static char *rolling_sample_line(const eval_doc *doc, const ppl_stats *st) {
    double ll = -st->nll;
    cJSON *s = cJSON_CreateObject(), *args = cJSON_CreateArray(), *a1 = cJSON_CreateArray();
    cJSON_AddNumberToObject(s, "doc_id", (double)doc->doc_id);
    cJSON_AddItemToArray(a1, jsonl_string_create(doc->context, doc->ctx_len));
    cJSON_AddItemToArray(args, a1);
    cJSON_AddItemToObject(s, "arguments", args);
    cJSON_AddNumberToObject(s, "ll", ll);
    cJSON_AddNumberToObject(s, "tokens", (double)st->tokens);
    cJSON *wp = cJSON_AddArrayToObject(s, "word_perplexity");
    cJSON_AddItemToArray(wp, cJSON_CreateNumber(ll));
    cJSON_AddItemToArray(wp, cJSON_CreateNumber((double)doc->words));
    cJSON *bp = cJSON_AddArrayToObject(s, "byte_perplexity");
    cJSON_AddItemToArray(bp, cJSON_CreateNumber(ll));
    cJSON_AddItemToArray(bp, cJSON_CreateNumber((double)doc->bytes));
    char *line = jsonl_print(s, 0);
    cJSON_Delete(s);
    return line;
}

/* One line of samples_<task>.jsonl: the document's requests as lm-eval logs them, their results,
 * its prediction and metrics. Its requests start at reqs[req0]. NULL when out of memory. */
static char *sample_line(const etask *et, const eval_doc *doc, size_t req0, const ereq *reqs,
                         const score_result *res) {
    double ll[64];
    cJSON *o = cJSON_CreateObject(), *args = cJSON_CreateObject(), *resps = cJSON_CreateArray(),
          *fr = cJSON_CreateArray(), *ntok = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "doc_id", (double)doc->doc_id);
    cJSON_AddNumberToObject(o, "target", doc->gold);
    int    trunc = 0;
    size_t chars[64];
    int    n_r = doc->n_choices * (et->t.def->mutual_info ? 2 : 1); /* + unconditional */
    for (int c2 = 0; c2 < n_r; c2++) {
        int                 c = c2 % doc->n_choices, uncond = c2 >= doc->n_choices;
        size_t              ri = req0 + (size_t)c2;
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
            cJSON_AddItemToObject(a, "arg_1", jsonl_string_create(cont, doc->choice_len[c] + 1));
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
        const score_result *r = &res[req0];
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
    return line;
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
    double                  *x      = calloc(et->n_ds ? et->n_ds : 1, sizeof *x);
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

/* A log-likelihood task's documents stream through here: the loader hands each finished document
 * to stream_on_add (eval_task.on_add), which turns it into requests; once a window holds
 * --window-tokens tokens its requests are scored, each document is reduced to its doc_score and
 * its sample line, and the documents and requests are freed. Document text in memory is thus one
 * window's, whatever the size of the eval. Samples go to files under a temporary directory in the
 * output directory, moved into place once every task has succeeded (stream_commit). */
typedef struct ewin {
    const eval_opts *o;
    model           *m;
    const tokenizer *tok;
    int32_t          prefix;
    int64_t          ctx, window_tokens, w_tokens, total_targets;
    etask           *et; /* the task being streamed */
    evalgen         *eg; /* generation tasks stream through it */
    fewshot_sampler  fs;
    size_t           n_built; /* held documents already turned into requests */
    ereq            *reqs;    /* the window's requests, their results, each doc's first request */
    score_result    *res;
    size_t          *req0;
    size_t           n_req, cap_req, cap_res, cap_doc;
    size_t           req_total, n_trunc, docs_done, docs_total;
    tok_ids          c, k;
    tok_ids         *ids; /* rolling tasks: the window's documents' tokens, stats, plan inputs */
    ppl_stats       *st;
    pipe_doc        *pd;
    size_t           cap_ids, cap_st, cap_pd;
    pipe_counts      counts;
    progress         prog;
    pipe_shard       sh;
    double           t_score;
    char             stage[4200]; /* the samples' temporary directory, "" when not logging */
    FILE            *fp;          /* the open samples file and the (sub)task it belongs to */
    size_t           fp_sub;
    char             fp_path[4400];
    char           **moved;   /* samples files moved into place by stream_commit, for the undo */
    unsigned char   *had_old; /* moved[i] replaced a file, kept in the stage as .prev.<i> */
    size_t           n_moved;
    int              keep_stage; /* a previous version could not be put back: it stays there */
} ewin;

static void stream_free(ewin *w) {
    for (size_t i = 0; i < w->n_req; i++)
        free(w->reqs[i].tokens);
    free(w->reqs);
    free(w->res);
    free(w->req0);
    for (size_t i = 0; i < w->cap_ids; i++)
        tok_ids_free(&w->ids[i]);
    free(w->ids);
    free(w->st);
    free(w->pd);
    tok_ids_free(&w->c);
    tok_ids_free(&w->k);
    fewshot_end(&w->fs);
    if (w->fp)
        fclose(w->fp);
    if (w->keep_stage)
        dir_keep_temp(w->stage);
    else
        dir_discard_temp(w->stage); /* after a commit: the previous versions; else everything */
    for (size_t i = 0; i < w->n_moved; i++)
        free(w->moved[i]);
    free(w->moved);
    free(w->had_old);
    memset(w, 0, sizeof *w);
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    if (nc > SIZE_MAX / size)
        return -1;
    void *np = realloc(*p, nc * size);
    if (!np)
        return -1;
    *p   = np;
    *cap = nc;
    return 0;
}

/* (context, " " + choice) per choice, then lm-eval's unconditional ("", " " + choice) requests
 * for acc_mutual_info, encoded as lm-eval's _encode_pair. */
static int stream_build(ewin *w, eval_task *src, size_t j, assay_error *err) {
    etask    *et  = w->et;
    eval_doc *doc = &src->docs[j];
    size_t    d   = src->n_dropped + j; /* its index in the task, for messages */
    int       rc;
    if (et->fewshot && (rc = fewshot_doc(&w->fs, &et->t, doc, err)))
        return rc;
    if (doc->n_choices > (et->t.def->mutual_info ? 32 : 64))
        return assay_fail(err, ASSAY_EINVAL, "%s doc %zu: %d choices (at most %d)", et->t.def->name,
                          doc->doc_id, doc->n_choices, et->t.def->mutual_info ? 32 : 64);
    int    n_r  = doc->n_choices * (et->t.def->mutual_info ? 2 : 1);
    size_t need = w->n_req + (size_t)n_r;
    if (grow((void **)&w->req0, &w->cap_doc, j + 1, sizeof *w->req0) ||
        grow((void **)&w->reqs, &w->cap_req, need, sizeof *w->reqs) ||
        grow((void **)&w->res, &w->cap_res, need, sizeof *w->res))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", need);
    w->req0[j] = w->n_req;
    for (int ch2 = 0; ch2 < n_r; ch2++) {
        int  ch = ch2 % doc->n_choices, uncond = ch2 >= doc->n_choices;
        char what[160];
        snprintf(what, sizeof what, "%s doc %zu choice %d%s", et->t.def->name, d, ch,
                 uncond ? " (unconditional)" : "");
        size_t cont_len;
        char  *cont = make_cont(&et->t, doc, ch, &cont_len);
        if (!cont)
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        rc = loglik_encode_pair(encode_hf_default, (void *)w->tok,
                                uncond      ? ""
                                : doc->ctxs ? doc->ctxs[ch]
                                            : doc->context,
                                uncond      ? 0
                                : doc->ctxs ? doc->ctx_lens[ch]
                                            : doc->ctx_len,
                                cont, cont_len, w->prefix, &w->c, &w->k, err);
        free(cont);
        if (rc)
            return rc;
        ereq *r = &w->reqs[w->n_req];
        memset(r, 0, sizeof *r);
        if ((rc = loglik_build_request(w->c.ids, w->c.n, w->k.ids, w->k.n, (size_t)w->ctx, what,
                                       &r->tokens, &r->n, &r->score_from, err)))
            return rc;
        r->truncated = w->c.n + w->k.n > (size_t)w->ctx + 1;
        w->n_trunc += (size_t)r->truncated;
        w->total_targets += (int64_t)(r->n - r->score_from);
        w->w_tokens += (int64_t)r->n;
        w->n_req++;
        w->req_total++;
    }
    w->docs_done++;
    return ASSAY_OK;
}

/* Appends a document's sample line (freed here; NULL: out of memory) to its (sub)task's file in
 * the temporary directory. */
static int stream_sample(ewin *w, const eval_doc *doc, char *line, assay_error *err) {
    const etask *et = w->et;
    if (!w->fp || w->fp_sub != doc->sub) {
        if (w->fp && fclose(w->fp) != 0) {
            w->fp = NULL;
            free(line);
            return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", w->fp_path, strerror(errno));
        }
        w->fp = NULL;
        if (et->t.n_subs)
            snprintf(w->fp_path, sizeof w->fp_path, "%s/samples_%s_%s.jsonl", w->stage,
                     et->t.def->name, et->t.subs[doc->sub]);
        else
            snprintf(w->fp_path, sizeof w->fp_path, "%s/samples_%s.jsonl", w->stage,
                     et->t.def->name);
        if (!(w->fp = fopen(w->fp_path, "ab"))) {
            free(line);
            return assay_fail(err, ASSAY_EIO, "%s: cannot create: %s", w->fp_path, strerror(errno));
        }
        w->fp_sub = doc->sub;
    }
    if (!line)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory writing %s", w->fp_path);
    int bad = fprintf(w->fp, "%s\n", line) < 0;
    free(line);
    return bad ? assay_fail(err, ASSAY_EIO, "%s: write failed: %s", w->fp_path, strerror(errno))
               : ASSAY_OK;
}

/* A scored document's metric inputs, as lm-eval's process_results computes them. */
static int stream_reduce(ewin *w, const eval_doc *doc, size_t req0, assay_error *err) {
    etask    *et = w->et;
    double    ll[64];
    size_t    chars[64];
    doc_score ds = {.sub = doc->sub};
    int       rc;
    for (int ch = 0; ch < doc->n_choices; ch++) {
        const score_result *r = &w->res[req0 + (size_t)ch];
        et->naive_tokens += (double)w->reqs[req0 + (size_t)ch].n - 1;
        if (!isfinite(r->sum))
            return assay_fail(err, ASSAY_ECHECK,
                              "%s doc %zu choice %d: the log-likelihood is %s: the model's "
                              "weights or activations hold NaN or Inf",
                              et->t.def->name, doc->doc_id, ch, isnan(r->sum) ? "NaN" : "infinite");
        ll[ch]    = r->sum;
        chars[ch] = metric_chars(doc->choices[ch], doc->choice_len[ch]);
    }
    if (et->t.def->loglik) { /* acc = is_greedy; norm holds the log-likelihood */
        const score_result *r = &w->res[req0];
        ds.acc                = r->n_greedy == r->n_targets;
        ds.norm               = r->sum;
    } else if (et->t.def->mc2) { /* acc is the probability mass on true answers */
        ds.acc = metric_mc2(ll, doc->truth, doc->n_choices);
    } else {
        ds.acc  = metric_argmax(ll, doc->n_choices) == doc->gold;
        ds.norm = metric_argmax_norm(ll, chars, doc->n_choices) == doc->gold;
    }
    if (et->t.def->mutual_info) {
        int pm = 0;
        if ((rc = doc_mutual_info(et, doc, req0, w->reqs, w->res, ll, &pm, err)))
            return rc;
        ds.mi = pm == doc->gold;
    }
    if (grow((void **)&et->ds, &et->cap_ds, et->n_ds + 1, sizeof *et->ds))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    et->ds[et->n_ds++] = ds;
    return w->stage[0] ? stream_sample(w, doc, sample_line(et, doc, req0, w->reqs, w->res), err)
                       : ASSAY_OK;
}

/* Builds the held documents' requests; scores and frees the window when it is full (or `last`). */
static int stream_step(ewin *w, eval_task *src, int last, assay_error *err) {
    int rc;
    for (; w->n_built < src->n; w->n_built++)
        if ((rc = stream_build(w, src, w->n_built, err)))
            return rc;
    if (!(w->w_tokens >= w->window_tokens || (last && src->n)))
        return ASSAY_OK;
    /* the progress total: exact at the end, extrapolated from the documents so far */
    w->prog.total = (int64_t)((double)w->total_targets * (double)w->docs_total /
                              (double)(w->docs_done ? w->docs_done : 1));
    memset(w->res, 0, w->n_req * sizeof *w->res);
    double t0 = time_now();
    rc        = score_window(w->m, w->reqs, w->res, 0, w->n_req, &w->counts, &w->prog, &w->sh, err);
    w->t_score += time_now() - t0;
    for (size_t j = 0; !rc && j < src->n; j++)
        rc = stream_reduce(w, &src->docs[j], w->req0[j], err);
    w->n_req    = 0; /* score_window freed the tokens */
    w->n_built  = 0;
    w->w_tokens = 0;
    eval_task_drop(src);
    return rc;
}

static int stream_on_add(eval_task *src, void *user, assay_error *err) {
    return stream_step(user, src, 0, err);
}

/* A loglikelihood_rolling document (wikitext): its text tokenized as lm-eval's HFLM tok_encode
 * (the tokenizer's default special tokens, as encode_hf_default). */
static int rolling_build(ewin *w, eval_task *src, size_t j, assay_error *err) {
    const eval_doc *doc = &src->docs[j];
    if (grow((void **)&w->st, &w->cap_st, j + 1, sizeof *w->st) ||
        grow((void **)&w->pd, &w->cap_pd, j + 1, sizeof *w->pd))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    size_t had = w->cap_ids;
    if (grow((void **)&w->ids, &w->cap_ids, j + 1, sizeof *w->ids))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    memset(w->ids + had, 0, (w->cap_ids - had) * sizeof *w->ids);
    int rc = encode_hf_default((void *)w->tok, doc->context, doc->ctx_len, &w->ids[j], err);
    if (rc)
        return rc;
    w->st[j] = (ppl_stats){.words = doc->words, .bytes = doc->bytes};
    w->w_tokens += (int64_t)w->ids[j].n;
    w->docs_done++;
    return ASSAY_OK;
}

/* The rolling counterpart of stream_step: the held documents are planned into lm-eval's rolling
 * windows (window ctx, context 1, prefix token first, as `ppl --mode rolling`), scored, merged in
 * load order into the task's stats (the order one pass over every document adds them) and their
 * sample lines written; then their text and tokens are freed. Every rank makes the same windows:
 * they depend only on the data and --window-tokens. */
static int rolling_step(ewin *w, eval_task *src, int last, assay_error *err) {
    etask *et = w->et;
    int    rc;
    for (; w->n_built < src->n; w->n_built++)
        if ((rc = rolling_build(w, src, w->n_built, err)))
            return rc;
    if (!(w->w_tokens >= w->window_tokens || (last && src->n)))
        return ASSAY_OK;
    for (size_t j = 0; j < src->n; j++) /* st may have moved while the window grew */
        w->pd[j] = (pipe_doc){et->t.files[0], w->ids[j].ids, w->ids[j].n, &w->st[j]};
    pipe_ppl_plan plan = {0};
    rc = pipe_ppl_plan_make(&plan, w->pd, src->n, 0, (size_t)w->ctx, (size_t)w->ctx, err);
    if (!rc) {
        w->total_targets += plan.scored;
        w->prog.total = (int64_t)((double)w->total_targets * (double)w->docs_total /
                                  (double)(w->docs_done ? w->docs_done : 1));
        double t0     = time_now();
        rc = pipe_ppl_run_on(w->m, &plan, w->pd, w->prefix, w->o->model_dir, &w->counts, &w->prog,
                             &w->sh, err);
        w->t_score += time_now() - t0;
    }
    pipe_ppl_plan_free(&plan);
    for (size_t j = 0; !rc && j < src->n; j++) {
        if (!isfinite(w->st[j].nll))
            rc = assay_fail(err, ASSAY_ECHECK, "%s doc %zu: the log-likelihood is not finite",
                            et->t.def->name, src->n_dropped + j);
        else
            ppl_stats_merge(&et->tot, &w->st[j]);
        if (!rc && w->stage[0])
            rc =
                stream_sample(w, &src->docs[j], rolling_sample_line(&src->docs[j], &w->st[j]), err);
    }
    for (size_t j = 0; j < src->n; j++)
        tok_ids_free(&w->ids[j]);
    w->n_built  = 0;
    w->w_tokens = 0;
    eval_task_drop(src);
    return rc;
}

static int rolling_on_add(eval_task *src, void *user, assay_error *err) {
    return rolling_step(user, src, 0, err);
}

/* The pool is kept for the streaming pass, which draws each document's examples as it reads it
 * (fewshot_doc); its size is checked here, before any work. */
static int load_fewshot(etask *et, const eval_opts *o, assay_error *err) {
    eval_task *t = &et->t;
    int        random, rc = check_fewshot(t, o, &random, err);
    if (rc || !random)
        return rc;
    eval_task_opts  po = {o->data_dir, 0, 0, "train"};
    fewshot_sampler fs;
    et->pool.def = t->def;
    if ((rc = t->def->load(&et->pool, &po, err)))
        return rc;
    rc = fewshot_begin(&fs, t, &et->pool, o->num_fewshot, o->seed, err);
    fewshot_end(&fs);
    for (size_t f = 0; !rc && f < et->pool.n_files; f++)
        rc = eval_task_add_file(t, et->pool.files[f], err);
    et->fewshot    = !rc;
    t->num_fewshot = o->num_fewshot;
    return rc;
}

static int gen_on_add(eval_task *src, void *user, assay_error *err) {
    ewin *w = user;
    return evalgen_task_step(w->eg, &w->et->t, src, 0, err);
}

static int task_generates(const eval_task *t) { return t->gen != NULL; }

/* The counting pass keeps no streamed document. */
static int count_on_add(eval_task *t, void *user, assay_error *err) {
    etask *et = user;
    (void)err;
    for (size_t d = 0; d < t->n; d++)
        if (t->docs[d].ctx_len > et->max_bytes)
            et->max_bytes = t->docs[d].ctx_len;
    eval_task_drop(t);
    return ASSAY_OK;
}

/* Runs the task's loader again, this time scoring its documents window by window. */
static int stream_task(ewin *w, etask *et, assay_error *err) {
    eval_task src = {0};
    int       rc  = ASSAY_OK;
    src.def       = et->t.def;
    w->et         = et;
    w->n_built    = 0;
    if (et->fewshot &&
        (rc = fewshot_begin(&w->fs, &et->t, &et->pool, w->o->num_fewshot, w->o->seed, err)))
        return rc;
    int rolling = et->t.def->rolling, gen = task_generates(&et->t);
    src.on_add      = gen ? gen_on_add : rolling ? rolling_on_add : stream_on_add;
    src.on_add_user = w;
    rc              = et->t.own_def ? task_user_load(&src, w->o->task_file, &et->topts, err)
                                    : et->t.def->load(&src, &et->topts, err);
    src.on_add      = NULL;
    if (!rc)
        rc = gen       ? evalgen_task_step(w->eg, &et->t, &src, 1, err)
             : rolling ? rolling_step(w, &src, 1, err)
                       : stream_step(w, &src, 1, err);
    if (!rc && (eval_task_count(&src) != et->n_docs || src.total != et->t.total))
        rc = assay_fail(
            err, ASSAY_EIO, "%s: the data changed while it was read (%zu documents, then %zu)",
            et->t.n_files ? et->t.files[0] : et->t.def->name, et->n_docs, eval_task_count(&src));
    if (!rc && w->fp && fclose(w->fp) != 0)
        rc = assay_fail(err, ASSAY_EIO, "%s: write failed: %s", w->fp_path, strerror(errno));
    if (!rc)
        w->fp = NULL;
    fewshot_end(&w->fs);
    for (size_t i = 0; i < w->n_req; i++) /* a failed window's requests */
        free(w->reqs[i].tokens);
    w->n_req = 0;
    eval_task_free(&src);
    return rc;
}

/* Undoes stream_commit: each moved file goes back to its previous version (kept in the stage as
 * ".prev.<i>"), or away when it had none. A previous version that cannot be put back stays in the
 * stage, which is then kept, and err's message says where. */
static void stream_rollback(ewin *w, assay_error *err) {
    int lost = 0;
    for (size_t i = w->n_moved; i-- > 0;) {
        char to[4600], prev[4300];
        snprintf(to, sizeof to, "%.4200s/%.255s", w->o->out_dir, w->moved[i]);
        snprintf(prev, sizeof prev, "%.4200s/.prev.%zu", w->stage, i);
        if (!w->had_old[i])
            unlink(to);
        else if (rename(prev, to) != 0)
            lost = 1;
        free(w->moved[i]);
    }
    w->n_moved = 0;
    if (lost) {
        w->keep_stage = 1;
        size_t n      = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n,
                 "; some previous samples files could not be put back: they are kept in %s as "
                 ".prev.N (N in name order)",
                 w->stage);
    }
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Moves the staged samples files into the output directory, once every task has succeeded. A
 * file it replaces is kept in the stage (hard-linked, or moved aside where links fail) until the
 * run is over, so that a failure part-way, here or while writing results.json, puts every
 * earlier file back (stream_rollback): the output directory holds the whole new run or the old
 * one. From here on the stage is no longer removed by the signal handlers: a run killed in the
 * middle leaves it (with the previous versions in it) rather than lose them. */
static int stream_commit(ewin *w, assay_error *err) {
    if (!w->stage[0])
        return ASSAY_OK;
    dir_keep_temp(w->stage);
    DIR *dir = opendir(w->stage);
    if (!dir)
        return assay_fail(err, ASSAY_EIO, "%s: cannot read: %s", w->stage, strerror(errno));
    /* the names first: the loop below adds and removes entries of this directory */
    char         **names = NULL;
    size_t         n = 0, cap = 0;
    int            rc = ASSAY_OK;
    struct dirent *e;
    for (;;) {
        errno = 0;
        if (!(e = readdir(dir))) {
            if (errno)
                rc = assay_fail(err, ASSAY_EIO, "%s: cannot read: %s", w->stage, strerror(errno));
            break;
        }
        if (e->d_name[0] == '.')
            continue;
        if (n == cap && grow((void **)&names, &cap, n + 1, sizeof *names))
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        else if (!(names[n] = strdup(e->d_name)))
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        else
            n++;
        if (rc)
            break;
    }
    closedir(dir);
    if (!rc && n && (!(w->moved = calloc(n, sizeof *w->moved)) || !(w->had_old = calloc(n, 1))))
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
    if (n)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; !rc && i < n; i++) {
        char from[4600], to[4600], prev[4300];
        snprintf(from, sizeof from, "%.4200s/%.255s", w->stage, names[i]);
        snprintf(to, sizeof to, "%.4200s/%.255s", w->o->out_dir, names[i]);
        snprintf(prev, sizeof prev, "%.4200s/.prev.%zu", w->stage, i);
        struct stat st;
        int         old = lstat(to, &st) == 0;
        if (!old && errno != ENOENT)
            rc = assay_fail(err, ASSAY_EIO, "%s: %s", to, strerror(errno));
        else if (old && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            rc =
                assay_fail(err, ASSAY_EIO,
                           "%s: not a regular file, so the new %s cannot replace it", to, names[i]);
        /* a hard link (to a symlink itself, not its target) keeps the old file at its name until
         * the new one replaces it; where the file system has none, the old one moves aside */
        else if (old && linkat(AT_FDCWD, to, AT_FDCWD, prev, 0) != 0 && rename(to, prev) != 0)
            rc = assay_fail(err, ASSAY_EIO,
                            "%s: cannot keep the previous version while replacing it: %s", to,
                            strerror(errno));
        else {
            if (rename(from, to) != 0)
                rc = assay_fail(err, ASSAY_EIO, "%s: cannot move %s into place: %s", to, from,
                                strerror(errno));
            /* a failed move still has its previous version (maybe moved aside) put back by the
             * rollback with the others */
            if (!rc || old) {
                w->had_old[w->n_moved] = (unsigned char)old;
                w->moved[w->n_moved++] = names[i];
                names[i]               = NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc)
        stream_rollback(w, err);
    return rc;
}

int eval_run(const eval_opts *o, assay_error *err) {
    etask      *tasks = calloc((size_t)o->n_tasks + 1, sizeof *tasks); /* + a user task */
    int         n_t = 0, rc = ASSAY_OK;
    tokenizer  *tok    = NULL;
    model      *m      = NULL;
    cJSON      *root   = NULL;
    evalgen    *eg     = NULL;
    eval_task **gts    = calloc((size_t)o->n_tasks + 1, sizeof *gts);
    ewin        w      = {0};
    double      t_tok0 = time_now(), t_tok = 0, t_load = 0, t_score = 0;
    cJSON      *per_rank = NULL;
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
    /* The counting pass: every document is read, checked and counted, and (log-likelihood tasks)
     * dropped; the streaming pass reads them again once the model is loaded. */
    if (o->task_file) {
        tasks[n_t].t.on_add      = count_on_add;
        tasks[n_t].t.on_add_user = &tasks[n_t];
        tasks[n_t].topts         = to;
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
        etask *et = &tasks[i];
        if (!et->t.own_def) {
            et->t.on_add      = count_on_add;
            et->t.on_add_user = et;
            et->topts         = ti;
            if ((rc = et->t.def->load(&et->t, &ti, err)))
                goto done;
        }
        et->t.on_add = NULL;
        count_on_add(&et->t, et, err); /* the last document */
        et->n_docs = eval_task_count(&et->t);
        if (et->n_docs == 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: no documents in %s", tasks[i].t.def->name,
                            tasks[i].t.n_files ? tasks[i].t.files[0] : o->data_dir);
            goto done;
        }
        if ((rc = load_fewshot(et, o, err)))
            goto done;
    }
    if (!(tok = tok_load(o->model_dir, err))) {
        rc = err->code ? err->code : ASSAY_EINTERNAL;
        goto done;
    }
    int32_t prefix = tok_bos_id(tok) >= 0 ? tok_bos_id(tok) : tok_eos_id(tok);

    /* Generation tasks: few-shot pools, stop strings, chat template (prompts come per window). */
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

    /* Rolling windows (wikitext) run through the KV cache; streamed, they are planned after the
     * model loads, so the cache is sized for the longest any can be: the prefix token and ctx
     * tokens (scoring/windows.c), or fewer for short texts, as a token holds at least one byte of
     * text (a few special tokens aside: 4 allowed). */
    int64_t longest_window = 0;
    for (int i = 0; i < n_t; i++)
        if (tasks[i].t.def->rolling) {
            int64_t need = (int64_t)tasks[i].max_bytes + 4;
            need         = (need < ctx ? need : ctx) + 1;
            if (need > longest_window)
                longest_window = need;
        }
    t_tok              = time_now() - t_tok0;
    double     t_load0 = time_now();
    cli_common cc      = *o->cc;
    if (evalgen_longest(eg) > longest_window) /* a prompt and its new tokens: at most ctx */
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

    /* The streaming pass: each log-likelihood task's documents are read again and scored in
     * windows of about window_tokens tokens (whole documents, stream_step), so memory does not
     * grow with the number of documents beyond each document's doc_score. */
    w.o             = o;
    w.m             = m;
    w.tok           = tok;
    w.prefix        = prefix;
    w.ctx           = ctx;
    w.sh            = sh;
    w.window_tokens = o->window_tokens > 0 ? o->window_tokens : 1 << 22;
    w.eg            = eg;
    for (int i = 0; i < n_t; i++)
        w.docs_total += task_generates(&tasks[i].t) ? 0 : tasks[i].n_docs;
    if (o->log_samples && o->out_dir) {
        char base[4200];
        snprintf(base, sizeof base, "%s/.assay-samples", o->out_dir);
        if ((rc = dir_create_temp(w.stage, sizeof w.stage, base, err)))
            goto done;
    }
    progress_init(&w.prog, "eval", "tok", 0);
    t_tok0 = time_now();
    for (int i = 0; !rc && i < n_t; i++)
        if (!task_generates(&tasks[i].t))
            rc = stream_task(&w, &tasks[i], err);
    if (rc)
        goto done;
    t_tok += time_now() - t_tok0 - w.t_score;
    t_score += w.t_score;
    progress_finish(&w.prog);
    /* generation tasks stream after: their progress line is their own */
    double t_gen0 = time_now();
    rc            = evalgen_begin(eg, m, tok, &sh, w.stage[0] ? w.stage : NULL, err);
    for (int i = 0; !rc && i < n_t; i++)
        if (task_generates(&tasks[i].t))
            rc = stream_task(&w, &tasks[i], err);
    if (rc || (rc = evalgen_end(eg, err)))
        goto done;
    t_score += time_now() - t_gen0;
    if (!(per_rank = dist_per_rank_json(t_score, w.counts.mine, err))) {
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
            total_docs += et->n_docs;
            rolling_results(et, results, configs, versions, nshot, hib, nsamp);
            continue;
        }
        if (et->t.gen) {
            total_docs += et->n_docs;
            if ((rc = evalgen_results(eg, &et->t, results, configs, versions, nshot, hib, nsamp,
                                      err)))
                goto done;
            continue;
        }
        size_t  n_subs = et->t.n_subs ? et->t.n_subs : 1, n = et->n_ds;
        double *accs = calloc(n ? n : 1, sizeof *accs), *norms = calloc(n ? n : 1, sizeof *norms);
        double *se_a = calloc(n_subs, sizeof *se_a), *se_n = calloc(n_subs, sizeof *se_n);
        size_t *sizes = calloc(n_subs, sizeof *sizes);
        double *mis   = calloc(n ? n : 1, sizeof *mis); /* acc_mutual_info */
        if (!accs || !norms || !se_a || !se_n || !sizes || !mis) {
            free(accs), free(norms), free(se_a), free(se_n), free(sizes), free(mis);
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        total_docs += n;
        size_t pos = 0; /* grouped by subtask, load order within each */
        for (size_t s = 0; s < n_subs; s++) {
            size_t first = pos;
            for (size_t d = 0; d < n; d++)
                if (et->ds[d].sub == s) {
                    accs[pos]  = et->ds[d].acc;
                    norms[pos] = et->ds[d].norm;
                    mis[pos++] = et->ds[d].mi;
                }
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
    cJSON_AddStringToObject(hs,
                            model_path_is_gguf(o->model_dir)
                                ? "model_sha256_gguf_header"
                                : "model_sha256_config_and_safetensors_headers",
                            hex);
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
    cJSON_AddNumberToObject(as, "requests", (double)w.req_total);
    cJSON_AddNumberToObject(as, "truncated_requests", (double)w.n_trunc);
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
    cJSON_AddNumberToObject(cost, "tokens_computed", (double)w.counts.computed);
    cJSON_AddNumberToObject(cost, "tokens_no_sharing", (double)w.counts.naive);
    cJSON_AddNumberToObject(cost, "tokens_scored", (double)w.counts.scored);
    cJSON_AddNumberToObject(cost, "tokens_per_s",
                            t_score > 0 ? (double)w.counts.computed / t_score : 0);
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
                w.counts.naive ? run * tasks[i].naive_tokens / (double)w.counts.naive : 0);
        cJSON_AddItemToObject(cost, "cost_per_task", per_task_cost);
        per_task_cost = NULL;
    }
    cJSON_Delete(per_task_cost);
    if ((rc = stream_commit(&w, err)))
        goto done;
    if (o->out_dir) {
        char path[4200];
        snprintf(path, sizeof path, "%s/results.json", o->out_dir);
        if ((rc = write_json_file(path, root, err))) {
            stream_rollback(&w, err); /* no new samples beside the old results.json */
            goto done;
        }
    }
    if (o->history && (rc = history_record_run(o->history, "eval", root, err)))
        goto done;
    if (dist_rank() > 0) /* rank 0 prints the run's table and summary */
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
            w.req_total, (long long)w.counts.computed, (long long)w.counts.naive, t_score,
            t_score > 0 ? (double)w.counts.computed / t_score : 0, total_wall);
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
    stream_free(&w);  /* a failed run's staged samples go with it */
    evalgen_free(eg); /* before the tasks it points at */
    for (int i = 0; i <= o->n_tasks; i++) {
        eval_task_free(&tasks[i].t);
        eval_task_free(&tasks[i].pool);
        free(tasks[i].ds);
    }
    free(tasks);
    free(gts);
    model_free(m);
    tok_free(tok);
    return rc;
}
