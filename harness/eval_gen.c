/* harness/eval_gen.c — see eval_gen.h. What follows lm-eval 0.4.13 (HF backend) and where:
 *   - prompt: api/task.py fewshot_context: [system] + per example user(doc_to_text, delimiter " ")
 *     and assistant(target, delimiter "\n\n") + user(doc_to_text); plain text joins content +
 *     delimiter (the system prompt directly before the first question); with a chat template the
 *     turns go through it (add_generation_prompt) either as they are (--fewshot-as-multiturn) or
 *     collapsed into one user turn after the system turn (api/utils.py multiturn_to_singleturn);
 *     a template that fails with a system turn is rendered again without it, as HFLM does;
 *   - tokens: HFLM.tok_batch_encode: the tokenizer's default special tokens, none when the
 *     prompt already starts with the BOS text; left-truncated to max_length - max_gen_toks;
 *   - generation: greedy, at most max_gen_toks new tokens, ends at the model's EOS; the text is
 *     tokenizer.decode(skip_special_tokens=True) of the new tokens, cut at the first occurrence
 *     of any `until` string or the EOS token's text (models/utils.py handle_stop_sequences,
 *     postprocess_generated_text), not stripped;
 *   - filters (filters/extraction.py, transformation.py) then metrics per filter; results keys
 *     "<metric>,<filter>" and "<metric>_stderr,<filter>". */
#include "harness/eval_gen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "harness/dist.h"
#include "harness/jsonl.h"
#include "harness/pipeline.h"
#include "harness/progress.h"
#include "loader/chat_template.h"
#include "scoring/bootstrap.h"
#include "scoring/metrics.h"
#include "scoring/pyrandom.h"
#include "scoring/stop.h"

#define EVALGEN_WINDOW 256      /* prompts generated at a time (memory bound) */
#define EVALGEN_BOOT_ITERS 1000 /* bootstrap resamples for corpus metrics */
#define EVALGEN_BOOT_SEED 1234

const char gen_filter_names[] = "regex, take_first, first_line, strip, lowercase, label";
const char gen_metric_names[] =
    "exact_match, f1, bleu, chrf, rouge1, rouge2, rougeL, rougeLsum, label_accuracy, "
    "json_valid, json_schema, length, latency";

static const char *const filter_fn[] = {"regex", "take_first", "first_line",
                                        "strip", "lowercase",  "label"};
static const char *const metric_fn[] = {"exact_match",    "f1",         "bleu",        "chrf",
                                        "rouge1",         "rouge2",     "rougeL",      "rougeLsum",
                                        "label_accuracy", "json_valid", "json_schema", "length",
                                        "latency"};
_Static_assert(sizeof metric_fn / sizeof metric_fn[0] == GM_COUNT, "metric names");

/* ---- the spec ---------------------------------------------------------------------------- */

void gen_spec_free(gen_spec *g) {
    if (!g)
        return;
    free(g->text);
    free(g->path);
    for (size_t i = 0; i < g->n_until; i++)
        free(g->until[i]);
    free(g->until);
    free(g->until_lens);
    free(g->system_prompt);
    for (size_t f = 0; f < g->n_filters; f++) {
        for (size_t s = 0; s < g->filters[f].n_steps; s++)
            flt_regex_free(g->filters[f].steps[s].re);
        free(g->filters[f].steps);
        free(g->filters[f].name);
    }
    free(g->filters);
    free(g->metrics);
    for (size_t i = 0; i < g->n_regexes; i++)
        free(g->regexes[i]);
    free(g->regexes);
    for (size_t i = 0; i < g->n_labels; i++)
        free(g->labels[i]);
    free(g->labels);
    free(g->label_lens);
    free(g->schema);
    free(g);
}

static int get_bool(const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* A list of strings at key into *out / *lens (owned copies). Absent: 0 items. */
static int get_strlist(const cJSON *spec, const char *key, const char *where, char ***out,
                       size_t **lens, size_t *n, assay_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    *n             = 0;
    if (!v)
        return ASSAY_OK;
    if (cJSON_IsString(v)) { /* lm-eval accepts one string for until */
        cJSON *one = cJSON_CreateArray();
        cJSON_AddItemToArray(one, cJSON_CreateString(v->valuestring));
        int rc = get_strlist(one, NULL, where, out, lens, n, err);
        cJSON_Delete(one);
        return rc;
    }
    if (!cJSON_IsArray(v))
        return assay_fail(err, ASSAY_EINVAL, "%s: \"%s\" must be a list of strings", where, key);
    size_t cap = (size_t)cJSON_GetArraySize(v);
    *out       = calloc(cap ? cap : 1, sizeof **out);
    if (lens)
        *lens = calloc(cap ? cap : 1, sizeof **lens);
    if (!*out || (lens && !*lens))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return assay_fail(err, ASSAY_EINVAL, "%s: \"%s\" item %zu is not a string", where, key,
                              *n + 1);
        if (!((*out)[*n] = strdup(c->valuestring)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        if (lens)
            (*lens)[*n] = strlen(c->valuestring);
        (*n)++;
    }
    return ASSAY_OK;
}

static int parse_filters(const cJSON *spec, const char *where, gen_spec *g, assay_error *err) {
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(spec, "filter_list");
    if (!fl) { /* lm-eval's default: one "none" filter, take_first */
        if (!(g->filters = calloc(1, sizeof *g->filters)) ||
            !(g->filters[0].name = strdup("none")) ||
            !(g->filters[0].steps = calloc(1, sizeof *g->filters[0].steps)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        g->filters[0].steps[0].kind = GF_TAKE_FIRST;
        g->filters[0].n_steps       = 1;
        g->n_filters                = 1;
        return ASSAY_OK;
    }
    if (!cJSON_IsArray(fl) || cJSON_GetArraySize(fl) == 0)
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: \"filter_list\" must be a non-empty list of {\"name\", \"filter\"}",
                          where);
    size_t nf = (size_t)cJSON_GetArraySize(fl);
    if (!(g->filters = calloc(nf, sizeof *g->filters)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (const cJSON *f = fl->child; f; f = f->next) {
        gen_filter  *gf    = &g->filters[g->n_filters++];
        const cJSON *name  = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *steps = cJSON_GetObjectItemCaseSensitive(f, "filter");
        if (!cJSON_IsString(name) || !cJSON_IsArray(steps) || strlen(name->valuestring) > 60 ||
            strchr(name->valuestring, ','))
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: filter_list item %zu needs \"name\" (1-60 characters, no ',') "
                              "and \"filter\" (a list of steps)",
                              where, g->n_filters);
        for (size_t k = 0; k + 1 < g->n_filters; k++)
            if (!strcmp(g->filters[k].name, name->valuestring))
                return assay_fail(err, ASSAY_EINVAL, "%s: filter name '%s' appears twice", where,
                                  name->valuestring);
        size_t ns = (size_t)cJSON_GetArraySize(steps);
        if (!(gf->name = strdup(name->valuestring)) ||
            !(gf->steps = calloc(ns ? ns : 1, sizeof *gf->steps)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        for (const cJSON *s = steps->child; s; s = s->next) {
            const cJSON     *fn = cJSON_GetObjectItemCaseSensitive(s, "function");
            gen_filter_step *st = &gf->steps[gf->n_steps++];
            st->kind            = -1;
            for (int k = 0; cJSON_IsString(fn) && k < (int)(sizeof filter_fn / sizeof *filter_fn);
                 k++)
                if (!strcmp(fn->valuestring, filter_fn[k]))
                    st->kind = k;
            if (st->kind < 0)
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s: filter '%s' step %zu: unknown function '%s' (known: %s)",
                                  where, gf->name, gf->n_steps,
                                  cJSON_IsString(fn) ? fn->valuestring : "(missing)",
                                  gen_filter_names);
            if (st->kind == GF_LABEL && !cJSON_GetObjectItemCaseSensitive(spec, "labels"))
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s: filter '%s' uses \"label\": the spec needs \"labels\"",
                                  where, gf->name);
            if (st->kind != GF_REGEX)
                continue;
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "regex_pattern");
            const cJSON *gs  = cJSON_GetObjectItemCaseSensitive(s, "group_select");
            const cJSON *fb  = cJSON_GetObjectItemCaseSensitive(s, "fallback");
            char         what[300];
            snprintf(what, sizeof what, "%s: filter '%s' regex_pattern", where, gf->name);
            if (gs && (!cJSON_IsNumber(gs) || gs->valuedouble != floor(gs->valuedouble) ||
                       fabs(gs->valuedouble) > 1e6))
                return assay_fail(err, ASSAY_EINVAL, "%s: group_select must be an integer", what);
            if (!(st->re = flt_regex_compile(
                      cJSON_IsString(pat) ? pat->valuestring : "#### (\\-?[0-9\\.\\,]+)",
                      gs ? (int)gs->valuedouble : 0,
                      cJSON_IsString(fb) ? fb->valuestring : "[invalid]", err))) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                return assay_fail(err, ASSAY_EINVAL, "%s: %s", what, msg);
            }
        }
    }
    return ASSAY_OK;
}

static int parse_metrics(const cJSON *spec, const char *where, gen_spec *g, assay_error *err) {
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(spec, "metric_list");
    if (!cJSON_IsArray(ml) || cJSON_GetArraySize(ml) == 0)
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: \"metric_list\" must be a non-empty list (known metrics: %s)", where,
                          gen_metric_names);
    size_t nm = (size_t)cJSON_GetArraySize(ml);
    if (!(g->metrics = calloc(nm, sizeof *g->metrics)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (const cJSON *m = ml->child; m; m = m->next) {
        const cJSON *name = cJSON_IsString(m) ? m : cJSON_GetObjectItemCaseSensitive(m, "metric");
        gen_metric  *gm   = &g->metrics[g->n_metrics++];
        gm->kind          = -1;
        for (int k = 0; cJSON_IsString(name) && k < GM_COUNT; k++)
            if (!strcmp(name->valuestring, metric_fn[k]))
                gm->kind = k;
        if (gm->kind < 0)
            return assay_fail(err, ASSAY_EINVAL, "%s: unknown metric '%s' (known: %s)", where,
                              cJSON_IsString(name) ? name->valuestring : "(missing)",
                              gen_metric_names);
        for (size_t k = 0; k + 1 < g->n_metrics; k++)
            if (g->metrics[k].kind == gm->kind)
                return assay_fail(err, ASSAY_EINVAL, "%s: metric '%s' appears twice", where,
                                  metric_fn[gm->kind]);
        if (gm->kind == GM_LABEL_ACCURACY && !g->n_labels)
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: label_accuracy needs \"labels\" (the label set)", where);
        gm->use_stemmer = get_bool(m, "use_stemmer", 0);
        if (gm->kind == GM_EXACT_MATCH) {
            gm->em.ignore_case        = get_bool(m, "ignore_case", 0);
            gm->em.ignore_punctuation = get_bool(m, "ignore_punctuation", 0);
            gm->em.ignore_numbers     = get_bool(m, "ignore_numbers", 0);
            int rc =
                get_strlist(m, "regexes_to_ignore", where, &g->regexes, NULL, &g->n_regexes, err);
            if (rc)
                return rc;
            /* each pattern is tried now, so a bad one fails before any generation */
            for (size_t k = 0; k < g->n_regexes; k++) {
                double     em;
                tm_em_opts one = {(const char *const *)&g->regexes[k], 1, 0, 0, 0};
                if (tm_exact_match((tm_str){"", 0}, (tm_str){"", 0}, &one, &em, err)) {
                    char msg[sizeof err->msg];
                    snprintf(msg, sizeof msg, "%s", err->msg);
                    return assay_fail(err, ASSAY_EINVAL, "%s: exact_match regexes_to_ignore: %s",
                                      where, msg);
                }
            }
            gm->em.regexes_to_ignore = (const char *const *)g->regexes;
            gm->em.n_regexes         = g->n_regexes;
        }
    }
    return ASSAY_OK;
}

int gen_spec_parse(const cJSON *spec, const char *where, gen_spec **out, assay_error *err) {
    gen_spec *g = calloc(1, sizeof *g);
    int       rc;
    *out = NULL;
    if (!g)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    snprintf(g->target_delim, sizeof g->target_delim, " ");
    snprintf(g->fewshot_delim, sizeof g->fewshot_delim, "\n\n");
    const cJSON *mg = cJSON_GetObjectItemCaseSensitive(spec, "max_gen_toks");
    const cJSON *nf = cJSON_GetObjectItemCaseSensitive(spec, "num_fewshot");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(spec, "system_prompt");
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(spec, "schema");
    g->max_gen_toks = 256; /* lm-eval HFLM's max_gen_toks default */
    if (mg && (!cJSON_IsNumber(mg) || mg->valuedouble < 1 || mg->valuedouble > 1 << 20 ||
               mg->valuedouble != floor(mg->valuedouble))) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: \"max_gen_toks\" must be an integer 1..1048576",
                        where);
        goto fail;
    }
    if (mg)
        g->max_gen_toks = (int)mg->valuedouble;
    if (nf && (!cJSON_IsNumber(nf) || nf->valuedouble < 0 || nf->valuedouble > 1000)) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: \"num_fewshot\" must be an integer 0..1000", where);
        goto fail;
    }
    g->num_fewshot = nf ? (int)nf->valuedouble : 0;
    if (sp && !cJSON_IsString(sp)) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: \"system_prompt\" must be a string", where);
        goto fail;
    }
    if (sp && !(g->system_prompt = strdup(sp->valuestring))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = get_strlist(spec, "until", where, &g->until, &g->until_lens, &g->n_until, err)) ||
        (rc = get_strlist(spec, "labels", where, &g->labels, &g->label_lens, &g->n_labels, err)))
        goto fail;
    if (cJSON_GetObjectItemCaseSensitive(spec, "labels") && g->n_labels == 0) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: \"labels\" is empty", where);
        goto fail;
    }
    if (sc) { /* an object, or a string holding the schema's JSON */
        char *text = cJSON_IsString(sc) ? strdup(sc->valuestring) : cJSON_PrintUnformatted(sc);
        char  what[300];
        if (!text) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        snprintf(what, sizeof what, "%s: \"schema\"", where);
        flt_schema *fs = flt_schema_parse(text, strlen(text), what, err);
        if (!fs) {
            free(text);
            rc = err->code ? err->code : ASSAY_EINVAL;
            goto fail;
        }
        flt_schema_free(fs);
        g->schema     = text;
        g->schema_len = strlen(text);
    }
    if ((rc = parse_filters(spec, where, g, err)) || (rc = parse_metrics(spec, where, g, err)))
        goto fail;
    *out = g;
    return ASSAY_OK;
fail:
    gen_spec_free(g);
    return rc;
}

/* ---- prompts ------------------------------------------------------------------------------ */

enum { FIN_STOP, FIN_EOS, FIN_LENGTH };
static const char *const fin_name[] = {"stop", "eos", "length"};

typedef struct gen_out {
    char  *prompt; /* rendered */
    size_t prompt_len;
    char  *text; /* the generation, cut at the first stop string */
    size_t text_len;
    int    n_tokens, n_prompt, finish, truncated;
    int    done; /* generated here, received from its rank, or read from --resume */
    double ttft, latency;
} gen_out;

typedef struct msg {
    const char *role;
    const char *s;
    size_t      n;
    const char *delim;
} msg;

typedef struct fstate fstate;

typedef struct gtask {
    eval_task *t;     /* the counting pass's task: spec, files, totals (it holds no documents) */
    gen_out   *out;   /* the window's documents */
    char     **stops; /* until + the EOS token's text */
    size_t    *stop_lens;
    size_t    *stop_window; /* tokens looked back for each: its token count + 2 */
    size_t     n_stops;
    int        num_fewshot;
    int        system_dropped; /* the template refused the system turn (rendered without it) */
    /* prompts are built window by window: the few-shot pool and the sampler's state carry over */
    eval_task pool;
    pyrandom  r;
    size_t   *idx;
    msg      *m;
    size_t    n_built, d0; /* the window's documents with prompts; documents before it */
    /* what each generated document leaves for the metrics (harness/eval_gen.c's results) */
    fstate  *fs;      /* per filter */
    int      corpus;  /* a corpus metric (BLEU, chrF) needs the answers and references */
    int     *gold;    /* each document's label */
    double  *dist[4]; /* response chars and tokens, latency, time to first token */
    tm_str **refs;    /* corpus metrics: each document's references (owned) */
    int     *n_refs;
    size_t   n_done, cap; /* documents reduced; the arrays' capacity */
    size_t   hit_max, trunc;
    FILE    *fp; /* samples_<task>.jsonl in the samples directory, while the task streams */
    char     fp_path[4300];
} gtask;

struct evalgen {
    gtask         *g;
    int            n;
    evalgen_opts   o;
    int64_t        longest;
    int64_t        prompts, prompt_tokens, new_tokens;
    double         seconds;
    int            chat;
    const char    *bos_text; /* the tokenizer's BOS text, or NULL */
    chat_template *tpl;
    chat_vars      vars;
    /* the run (evalgen_begin .. evalgen_end) */
    model            *m;
    const tokenizer  *tok;
    const pipe_shard *sh;
    pipe_shard        one;
    const char       *samples_dir;
    size_t            span; /* documents a window holds: window_prompts per rank */
    struct witem     *items, *mine;
    int64_t          *cost, emitted, own[2];
    int              *owner;
    progress          prog;
};

/* The prompt of one document into b, from msgs[0..n) (lm-eval's Message list). */
static int render_prompt(tbuf *b, const msg *m, size_t n, const chat_template *tpl,
                         const chat_vars *vars, int multiturn, int *dropped, assay_error *err) {
    b->n = 0;
    if (!tpl) {
        for (size_t i = 0; i < n; i++)
            if (tbuf_put(b, m[i].s, m[i].n) || tbuf_puts(b, m[i].delim))
                return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return tbuf_put(b, "", 0) ? assay_fail(err, ASSAY_ENOMEM, "out of memory") : ASSAY_OK;
    }
    chat_message *cm = malloc((n + 1) * sizeof *cm);
    size_t        k = 0, first = n && !strcmp(m[0].role, "system") ? 1 : 0;
    tbuf          one = {0};
    if (!cm)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    if (first)
        cm[k++] = (chat_message){"system", m[0].s, m[0].n};
    if (multiturn) {
        for (size_t i = first; i < n; i++)
            cm[k++] = (chat_message){m[i].role, m[i].s, m[i].n};
    } else { /* one user turn: every message's text and delimiter, the last without */
        for (size_t i = first; i < n; i++)
            if (tbuf_put(&one, m[i].s, m[i].n) || (i + 1 < n && tbuf_puts(&one, m[i].delim))) {
                tbuf_free(&one);
                free(cm);
                return assay_fail(err, ASSAY_ENOMEM, "out of memory");
            }
        cm[k++] = (chat_message){"user", one.s ? one.s : "", one.n};
    }
    char  *s  = NULL;
    size_t sl = 0;
    int    rc = chat_template_render(tpl, cm, k, vars, &s, &sl, err);
    if (rc == ASSAY_EINVAL && first) { /* HFLM retries without the system turn */
        *dropped = 1;
        rc       = chat_template_render(tpl, cm + 1, k - 1, vars, &s, &sl, err);
    }
    tbuf_free(&one);
    free(cm);
    if (rc)
        return rc;
    rc = tbuf_put(b, s, sl) ? assay_fail(err, ASSAY_ENOMEM, "out of memory") : ASSAY_OK;
    free(s);
    return rc;
}

/* Few-shot pool of a task: its spec's fewshot_data, every row. */
static int load_pool(eval_task *pool, const eval_task *t, const evalgen_opts *o, assay_error *err) {
    eval_task_opts po = {o->data_dir, 0, 0, "train"};
    pool->def         = t->def;
    return task_gen_load(pool, t->gen->text, t->gen->text_len, t->gen->path, t->gen->builtin, &po,
                         err);
}

static int prepare_task(evalgen *e, gtask *gt, const tokenizer *tok, assay_error *err) {
    eval_task      *t    = gt->t;
    const gen_spec *g    = t->gen;
    eval_task      *pool = &gt->pool;
    int             rc = ASSAY_OK, k = e->o.num_fewshot >= 0 ? e->o.num_fewshot : g->num_fewshot;
    if (k > 1000)
        return assay_fail(err, ASSAY_EINVAL, "%s: at most 1000 few-shot examples", t->def->name);
    gt->num_fewshot = k;
    t->num_fewshot  = k;
    if (e->o.max_gen_toks > 0)
        t->gen->max_gen_toks = e->o.max_gen_toks;
    if (k > 0) {
        if ((rc = load_pool(pool, t, &e->o, err)))
            goto done;
        for (size_t f = 0; f < pool->n_files; f++)
            if ((rc = eval_task_add_file(t, pool->files[f], err)))
                goto done;
        if (pool->n < (size_t)k) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: --num-fewshot %d draws %d examples, %s has %zu",
                            t->def->name, k, k, pool->n_files ? pool->files[0] : "the pool",
                            pool->n);
            goto done;
        }
    }
    gt->idx = malloc(((size_t)k + 1) * sizeof *gt->idx);
    gt->m   = malloc((2 * (size_t)k + 2) * sizeof *gt->m);
    if (!gt->idx || !gt->m) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    /* the stop strings: until, then the EOS token's text (lm-eval handle_stop_sequences) */
    size_t ns     = g->n_until + 1;
    gt->stops     = calloc(ns, sizeof *gt->stops);
    gt->stop_lens = calloc(ns, sizeof *gt->stop_lens);
    if (!gt->stops || !gt->stop_lens) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < g->n_until; i++) {
        if (!(gt->stops[i] = strdup(g->until[i]))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        gt->stop_lens[i] = g->until_lens[i];
        gt->n_stops++;
    }
    if (tok_eos_id(tok) >= 0) {
        char   *eos = NULL;
        size_t  el  = 0;
        int32_t id  = tok_eos_id(tok);
        if ((rc = tok_decode(tok, &id, 1, 0, &eos, &el, err)))
            goto done;
        int dup = 0;
        for (size_t i = 0; i < gt->n_stops; i++)
            dup |= gt->stop_lens[i] == el && !memcmp(gt->stops[i], eos, el);
        if (dup || el == 0) {
            free(eos);
        } else {
            gt->stops[gt->n_stops]       = eos;
            gt->stop_lens[gt->n_stops++] = el;
        }
    }
    if (!(gt->stop_window = calloc(gt->n_stops + 1, sizeof *gt->stop_window))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < gt->n_stops;
         i++) { /* tokenizer.encode(stop, add_special_tokens=False) */
        tok_encode_opts eo  = tok_default_opts();
        tok_ids         ids = {0};
        eo.add_special      = 0;
        if ((rc = tok_encode(tok, gt->stops[i], gt->stop_lens[i], &eo, 0, &ids, err)))
            goto done;
        gt->stop_window[i] = ids.n + 2;
        tok_ids_free(&ids);
    }
    pyr_seed(&gt->r, e->o.seed);
    for (size_t k2 = 0; k2 < g->n_metrics; k2++)
        gt->corpus |= g->metrics[k2].kind == GM_BLEU || g->metrics[k2].kind == GM_CHRF;
done:
    return rc;
}

/* The prompt of doc (the window's j-th document) into gt->out[j], drawing its few-shot examples
 * from the sampler as lm-eval does, document after document. */
static int render_doc(evalgen *e, gtask *gt, const eval_doc *doc, size_t j, tbuf *b,
                      assay_error *err) {
    const gen_spec *g   = gt->t->gen;
    int             k   = gt->num_fewshot, rc;
    const char     *sys = e->o.system_prompt ? e->o.system_prompt : g->system_prompt;
    msg            *m   = gt->m;
    size_t          nm  = 0;
    if (sys && *sys)
        m[nm++] = (msg){"system", sys, strlen(sys), ""};
    if (k > 0 && pyr_sample(&gt->r, gt->pool.n, (size_t)k, gt->idx))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (int i = 0; i < k; i++) {
        const eval_doc *ex = &gt->pool.docs[gt->idx[i]];
        m[nm++]            = (msg){"user", ex->context, ex->ctx_len, g->target_delim};
        m[nm++] = (msg){"assistant", ex->choices[0], ex->choice_len[0], g->fewshot_delim};
    }
    m[nm++] = (msg){"user", doc->context, doc->ctx_len, ""};
    if ((rc = render_prompt(b, m, nm, e->tpl, &e->vars, e->o.fewshot_as_multiturn,
                            &gt->system_dropped, err)))
        return rc;
    if (!(gt->out[j].prompt = malloc(b->n + 1)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    memcpy(gt->out[j].prompt, b->s, b->n + 1);
    gt->out[j].prompt_len = b->n;
    return ASSAY_OK;
}

int evalgen_prepare(evalgen **out, eval_task *const *tasks, int n_tasks, const evalgen_opts *o,
                    const tokenizer *tok, assay_error *err) {
    evalgen *e  = calloc(1, sizeof *e);
    int      rc = ASSAY_OK;
    *out        = e;
    if (!e || !(e->g = calloc((size_t)n_tasks + 1, sizeof *e->g)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    e->o = *o;
    if (tok_bos_id(tok) >= 0)
        e->bos_text = tok_id_to_piece(tok, tok_bos_id(tok));
    for (int i = 0; i < n_tasks; i++)
        if (tasks[i]->gen)
            e->g[e->n++].t = tasks[i];
    if (!e->n)
        return ASSAY_OK;
    if (o->apply_chat_template) {
        if ((rc = chat_template_load_dir(o->model_dir, &e->tpl, &e->vars, err)))
            return rc;
        if (!e->tpl)
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: --apply-chat-template: the model has no chat template "
                              "(tokenizer_config.json \"chat_template\" or chat_template.jinja)",
                              o->model_dir);
        e->vars.add_generation_prompt = 1;
        e->chat                       = 1;
    }
    for (int i = 0; !rc && i < e->n; i++) {
        rc         = prepare_task(e, &e->g[i], tok, err);
        int64_t mx = e->g[i].t->gen->max_gen_toks;
        if (!rc && o->ctx - mx < 1)
            rc = assay_fail(err, ASSAY_EINVAL,
                            "%s: max_gen_toks %lld leaves no room for the prompt in the model's "
                            "%lld positions",
                            e->g[i].t->def->name, (long long)mx, (long long)o->ctx);
    }
    /* prompts are built after the model loads, window by window: a prompt is cut to ctx -
       max_gen_toks tokens and generates at most max_gen_toks, so ctx bounds every sequence */
    e->longest = o->ctx;
    return rc;
}

int64_t evalgen_longest(const evalgen *g) { return g ? g->longest : 0; }

void evalgen_totals(const evalgen *g, int64_t *prompts, int64_t *prompt_tokens, int64_t *new_tokens,
                    double *seconds) {
    *prompts       = g ? g->prompts : 0;
    *prompt_tokens = g ? g->prompt_tokens : 0;
    *new_tokens    = g ? g->new_tokens : 0;
    *seconds       = g ? g->seconds : 0;
}

/* ---- generation --------------------------------------------------------------------------- */

typedef struct witem {
    gtask   *gt;
    size_t   d, j; /* the document's index in its task, and in the window (gt->out) */
    int32_t *prompt;
    size_t   n_prompt;
    int32_t *out;
    int      n_out;
    double   t_first, t_last;
} witem;

typedef struct wctx {
    witem           *items;
    const tokenizer *tok;
    double           t0;
    progress        *prog;
    int64_t          emitted;
    assay_error      err;
} wctx;

/* lm-eval's stopping criterion (models/utils_hf.py MultiTokenEOSCriteria): generation ends once a
 * stop string occurs in the decode, special tokens kept, of the last (its token count + 2)
 * generated tokens. A special token whose text is a stop string thus ends it, though the final
 * text (special tokens skipped) does not show it. */
static int on_token(void *user, int request, int32_t token, int index) {
    wctx  *w   = user;
    witem *it  = &w->items[request];
    gtask *gt  = it->gt;
    double now = time_now() - w->t0;
    (void)index;
    if (it->n_out == 0)
        it->t_first = now;
    it->t_last           = now;
    it->out[it->n_out++] = token;
    progress_update(w->prog, ++w->emitted);
    for (size_t s = 0; s < gt->n_stops && !w->err.code; s++) {
        size_t k = gt->stop_window[s] < (size_t)it->n_out ? gt->stop_window[s] : (size_t)it->n_out;
        char  *text = NULL;
        size_t len  = 0;
        if (tok_decode(w->tok, it->out + it->n_out - k, k, 0, &text, &len, &w->err))
            return 1;
        int hit = memmem(text, len, gt->stops[s], gt->stop_lens[s]) != NULL;
        free(text);
        if (hit)
            return 1;
    }
    return 0;
}

/* lm-eval HFLM.tok_batch_encode: no special tokens when the prompt starts with the BOS text. */
static int encode_prompt(const evalgen *e, const tokenizer *tok, const gen_out *go, tok_ids *ids,
                         assay_error *err) {
    tok_encode_opts eo = tok_default_opts();
    if (e->bos_text && *e->bos_text && go->prompt_len >= strlen(e->bos_text) &&
        !memcmp(go->prompt, e->bos_text, strlen(e->bos_text)))
        eo.add_special = 0;
    return tok_encode(tok, go->prompt, go->prompt_len, &eo, 0, ids, err);
}

/* Tokens of items[0..n)'s prompts, left-truncated to max_length - max_gen_toks (lm-eval). */
static int encode_items(const evalgen *e, const tokenizer *tok, witem *items, size_t n,
                        assay_error *err) {
    for (size_t i = 0; i < n; i++) {
        witem   *it  = &items[i];
        gen_out *go  = &it->gt->out[it->j];
        int      mx  = it->gt->t->gen->max_gen_toks;
        tok_ids  ids = {0};
        int      rc  = encode_prompt(e, tok, go, &ids, err);
        if (rc)
            return rc;
        size_t keep = (size_t)(e->o.ctx - mx);
        if (ids.n > keep) {
            memmove(ids.ids, ids.ids + (ids.n - keep), keep * sizeof *ids.ids);
            ids.n         = keep;
            go->truncated = 1;
        }
        free(ids.offsets);
        it->prompt   = ids.ids;
        it->n_prompt = ids.n;
        if (ids.n == 0)
            return assay_fail(err, ASSAY_EINVAL, "%s doc %zu: the prompt has no tokens",
                              it->gt->t->def->name, it->d);
        go->n_prompt = (int)ids.n;
    }
    return ASSAY_OK;
}

static void free_items(witem *items, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(items[i].prompt);
        free(items[i].out);
        items[i].prompt = NULL;
        items[i].out    = NULL;
    }
}

/* Generates items[0..n) (prompts encoded) with continuous batching into their gen_out. */
static int run_window(evalgen *e, model *m, const tokenizer *tok, witem *items, size_t n,
                      progress *prog, int64_t *emitted, assay_error *err) {
    gen_request *reqs = calloc(n ? n : 1, sizeof *reqs);
    gen_result  *res  = calloc(n ? n : 1, sizeof *res);
    wctx         w    = {items, tok, 0, prog, *emitted, {0}};
    int          rc   = ASSAY_OK;
    if (!reqs || !res) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        witem *it = &items[i];
        int    mx = it->gt->t->gen->max_gen_toks;
        if (!(it->out = malloc((size_t)mx * sizeof *it->out))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        reqs[i] = (gen_request){it->prompt, (int)it->n_prompt, mx};
    }
    int32_t             eos[2];
    int                 n_eos = 0;
    const model_config *cfg   = model_get_config(m);
    if (tok_eos_id(tok) >= 0)
        eos[n_eos++] = tok_eos_id(tok);
    if (cfg->eos_token_id >= 0 && (n_eos == 0 || cfg->eos_token_id != eos[0]))
        eos[n_eos++] = cfg->eos_token_id;
    w.t0     = time_now();
    rc       = model_generate_greedy(m, reqs, (int)n, eos, n_eos, on_token, &w, res, err);
    *emitted = w.emitted;
    e->seconds += time_now() - w.t0;
    if (rc)
        goto done;
    if (w.err.code) {
        *err = w.err;
        rc   = err->code;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        witem   *it = &items[i];
        gen_out *go = &it->gt->out[it->j];
        if (res[i].finish == GEN_NONFINITE) {
            rc = assay_fail(err, ASSAY_ECHECK,
                            "%s doc %zu: the logits are NaN or Inf at generated token %d: the "
                            "model's weights or activations hold NaN or Inf",
                            it->gt->t->def->name, it->d, it->n_out + 1);
            goto done;
        }
        if ((rc = tok_decode(tok, it->out, (size_t)it->n_out, 1, &go->text, &go->text_len, err)))
            goto done;
        stop_matcher fin; /* the final cut: the earliest stop string in the whole text */
        if ((rc = stop_init(&fin, (const char *const *)it->gt->stops, it->gt->stop_lens,
                            it->gt->n_stops, err)))
            goto done;
        int hit = stop_feed(&fin, go->text, go->text_len, err);
        if (hit > 0) {
            stop_text(&fin, &go->text_len);
            go->text[go->text_len] = '\0';
        }
        stop_free(&fin);
        if (hit < 0) {
            rc = -hit;
            goto done;
        }
        go->n_tokens = it->n_out;
        go->finish   = hit > 0 || res[i].finish == GEN_STOPPED ? FIN_STOP
                       : res[i].finish == GEN_EOS              ? FIN_EOS
                                                               : FIN_LENGTH;
        go->ttft     = it->t_first;
        go->latency  = it->t_last;
        go->done     = 1;
    }
done:
    gen_results_free(res, res ? (int)n : 0);
    free(res);
    free(reqs);
    free_items(items, n);
    return rc;
}

/* ---- sharding, exchange and resume -------------------------------------------------------- */

/* One generation on the wire and in resume files: its index in the window, then text_len bytes
 * of text. */
typedef struct gen_wire {
    uint64_t k, text_len;
    int32_t  n_tokens, n_prompt, finish, truncated;
    double   ttft, latency;
} gen_wire;

/* Appends the generations of items[k] with owner[k] == rank to b. */
static int gen_pack(tbuf *b, const witem *items, size_t n, const int *owner, int rank,
                    assay_error *err) {
    for (size_t k = 0; k < n; k++) {
        if (owner[k] != rank)
            continue;
        const gen_out *go = &items[k].gt->out[items[k].j];
        gen_wire       w  = {k,          go->text_len,  go->n_tokens, go->n_prompt,
                             go->finish, go->truncated, go->ttft,     go->latency};
        if (tbuf_put(b, (const char *)&w, sizeof w) || tbuf_put(b, go->text, go->text_len))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    }
    return ASSAY_OK;
}

/* Reads generations from q[0..len) into items[k] (k < n, owner[k] == from, not yet done);
 * *got counts them. Anything else fails naming `what`. */
static int gen_unpack(const char *q, size_t len, witem *items, size_t n, const int *owner, int from,
                      size_t *got, const char *what, assay_error *err) {
    const char *end = q + len;
    while (q < end) {
        gen_wire w;
        if ((size_t)(end - q) < sizeof w)
            return assay_fail(err, ASSAY_EINTERNAL, "%s: a truncated generation", what);
        memcpy(&w, q, sizeof w);
        q += sizeof w;
        gen_out *go = w.k < n ? &items[w.k].gt->out[items[w.k].j] : NULL;
        if (!go || owner[w.k] != from || go->done || w.text_len > (size_t)(end - q) ||
            w.finish < FIN_STOP || w.finish > FIN_LENGTH || w.n_tokens < 0 || w.n_prompt < 1 ||
            (w.truncated != 0 && w.truncated != 1) ||
            w.n_tokens > items[w.k].gt->t->gen->max_gen_toks)
            return assay_fail(err, ASSAY_EINTERNAL,
                              "%s: generation %llu is not one of this window's, or is malformed",
                              what, (unsigned long long)w.k);
        free(go->text);
        if (!(go->text = malloc(w.text_len + 1)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        memcpy(go->text, q, w.text_len);
        go->text[w.text_len] = '\0';
        q += w.text_len;
        go->text_len  = w.text_len;
        go->n_tokens  = w.n_tokens;
        go->n_prompt  = w.n_prompt;
        go->finish    = w.finish;
        go->truncated = w.truncated;
        go->ttft      = w.ttft;
        go->latency   = w.latency;
        go->done      = 1;
        (*got)++;
    }
    return ASSAY_OK;
}

/* After each window every rank holds every generation of it. */
static int gen_exchange(witem *items, size_t n, const int *owner, const pipe_shard *sh,
                        assay_error *err) {
    tbuf    b      = {0};
    char   *recv   = NULL;
    size_t *counts = calloc((size_t)sh->size, sizeof *counts);
    int     rc     = counts ? gen_pack(&b, items, n, owner, sh->rank, err)
                            : assay_fail(err, ASSAY_ENOMEM, "out of memory");
    /* a rank that failed to pack still takes part (sending nothing) and fails with its error */
    int rc2   = dist_allgather_bytes(b.s, rc ? 0 : b.n, &recv, counts, err);
    rc        = rc ? rc : rc2;
    size_t at = 0;
    for (int r = 0; !rc && r < sh->size; at += counts[r], r++) {
        size_t got = 0, want = 0;
        char   what[32];
        if (r == sh->rank)
            continue;
        snprintf(what, sizeof what, "rank %d", r);
        for (size_t k = 0; k < n; k++)
            want += owner[k] == r;
        rc = gen_unpack(recv + at, counts[r], items, n, owner, r, &got, what, err);
        if (!rc && got != want)
            rc = assay_fail(err, ASSAY_EINTERNAL, "rank %d sent %zu generations, %zu expected", r,
                            got, want);
    }
    free(recv);
    free(counts);
    tbuf_free(&b);
    return rc;
}

#define GEN_RESUME_MAGIC "ASSAYRG1"

/* A window's identity for --resume: the caller's key (the model's content hash), the weights'
 * format and the device kind (they change greedy tokens), the context length, the EOS ids, and
 * each of this rank's prompts: task, document, max_gen_toks, stop strings, prompt tokens. */
static void gen_resume_hash(char out[65], const evalgen *e, const model *m, const tokenizer *tok,
                            const pipe_shard *sh, const witem *mine, size_t nm) {
    sha256_ctx  c;
    const char *key = sh->resume_key ? sh->resume_key : "", *dev = model_device_name(m);
    sha256_init(&c);
    sha256_update(&c, "assay generate_until 1", 23);
    sha256_update(&c, key, strlen(key) + 1);
    sha256_update(&c, model_weights_name(m), strlen(model_weights_name(m)) + 1);
    sha256_update(&c, dev, strcspn(dev, ":"));
    int64_t head[5] = {e->o.ctx, tok_eos_id(tok), model_get_config(m)->eos_token_id, sh->size,
                       (int64_t)nm};
    sha256_update(&c, head, sizeof head);
    for (size_t i = 0; i < nm; i++) {
        const gtask *gt = mine[i].gt;
        sha256_update(&c, gt->t->def->name, strlen(gt->t->def->name) + 1);
        int64_t ih[4] = {(int64_t)mine[i].d, gt->t->gen->max_gen_toks, (int64_t)gt->n_stops,
                         (int64_t)mine[i].n_prompt};
        sha256_update(&c, ih, sizeof ih);
        for (size_t s = 0; s < gt->n_stops; s++) {
            uint64_t l = gt->stop_lens[s];
            sha256_update(&c, &l, sizeof l);
            sha256_update(&c, gt->stops[s], gt->stop_lens[s]);
        }
        sha256_update(&c, mine[i].prompt, mine[i].n_prompt * sizeof *mine[i].prompt);
    }
    sha256_hex(&c, out);
}

static void gen_resume_path(char *buf, size_t cap, const pipe_shard *sh, const char *hash) {
    snprintf(buf, cap, "%s/%.32s.gen.rank%dof%d", sh->resume_dir, hash, sh->rank, sh->size);
}

static int gen_resume_save(const pipe_shard *sh, const char *hash, const witem *items, size_t n,
                           const int *owner, assay_error *err) {
    char        path[4200];
    tbuf        b  = {0};
    atomic_file af = {0};
    gen_resume_path(path, sizeof path, sh, hash);
    int rc = tbuf_put(&b, GEN_RESUME_MAGIC, 8) ? assay_fail(err, ASSAY_ENOMEM, "out of memory")
                                               : gen_pack(&b, items, n, owner, sh->rank, err);
    if (!rc && !(rc = atomic_open(&af, path, err))) {
        if (fwrite(b.s, 1, b.n, af.fp) != b.n) {
            atomic_abort(&af);
            rc = assay_fail(err, ASSAY_EIO, "%s: cannot write the window's generations", path);
        } else {
            rc = atomic_commit(&af, err);
        }
    }
    tbuf_free(&b);
    return rc;
}

/* This rank's generations of the window from an earlier run: 1 when all came from the file, 0
 * when there is no usable file (then nothing is kept). */
static int gen_resume_load(const pipe_shard *sh, const char *hash, witem *items, size_t n,
                           const int *owner, size_t want) {
    char   path[4200], *buf = NULL;
    size_t len = 0, got = 0;
    gen_resume_path(path, sizeof path, sh, hash);
    if (access(path, F_OK) != 0)
        return 0;
    assay_error e  = {0};
    int         ok = !file_read_capped(path, (size_t)1 << 31, &buf, &len, &e) && len >= 8 &&
             !memcmp(buf, GEN_RESUME_MAGIC, 8) &&
             !gen_unpack(buf + 8, len - 8, items, n, owner, sh->rank, &got, path, &e) &&
             got == want;
    free(buf);
    if (!ok) {
        /* an unusable file is only a lost shortcut: the rank generates the window again */
        fprintf(stderr, "assay: %s: not usable as partial results; generating them again\n", path);
        for (size_t k = 0; k < n; k++)
            if (owner[k] == sh->rank) {
                gen_out *go = &items[k].gt->out[items[k].j];
                free(go->text);
                go->text = NULL;
                go->done = 0;
            }
        return 0;
    }
    fprintf(stderr, "assay: %s: reusing %zu generations of an earlier run (--resume)\n", path, got);
    return 1;
}

/* This rank's part of one window: every prompt encoded (its token count is its cost), the
 * window assigned to the ranks, this rank's prompts reused from --resume or generated (then
 * saved). */
static int gen_window(evalgen *e, model *m, const tokenizer *tok, const pipe_shard *sh,
                      witem *items, witem *mine, size_t n, int64_t *cost, int *owner,
                      progress *prog, int64_t *emitted, int64_t own[2], assay_error *err) {
    size_t nm = 0;
    char   hash[65];
    int    rc = encode_items(e, tok, items, n, err);
    for (size_t k = 0; !rc && k < n; k++)
        cost[k] = (int64_t)items[k].n_prompt + items[k].gt->t->gen->max_gen_toks;
    if (!rc)
        rc = dist_assign(cost, n, sh->size, owner, err);
    if (rc) {
        free_items(items, n);
        return rc;
    }
    for (size_t k = 0; k < n; k++) {
        if (owner[k] == sh->rank) {
            mine[nm++]      = items[k];
            items[k].prompt = NULL;
        }
    }
    free_items(items, n);
    if (sh->resume_dir)
        gen_resume_hash(hash, e, m, tok, sh, mine, nm);
    if (sh->resume_dir && gen_resume_load(sh, hash, items, n, owner, nm)) {
        free_items(mine, nm);
    } else if (nm > 0) {
        if ((rc = run_window(e, m, tok, mine, nm, prog, emitted, err)))
            return rc;
        if (sh->resume_dir && (rc = gen_resume_save(sh, hash, items, n, owner, err)))
            return rc;
    }
    own[0] += (int64_t)nm;
    for (size_t i = 0; i < nm; i++)
        own[1] += mine[i].gt->out[mine[i].j].n_tokens;
    return ASSAY_OK;
}

int evalgen_begin(evalgen *e, model *m, const tokenizer *tok, const pipe_shard *sh,
                  const char *samples_dir, assay_error *err) {
    if (!e || !e->n)
        return ASSAY_OK;
    e->one = (pipe_shard){.rank = 0, .size = 1};
    if (!sh)
        sh = &e->one;
    if (sh->size < 1 || sh->rank < 0 || sh->rank >= sh->size)
        return assay_fail(err, ASSAY_EINVAL, "shard: rank %d of %d", sh->rank, sh->size);
    e->m             = m;
    e->tok           = tok;
    e->sh            = sh;
    e->samples_dir   = samples_dir;
    size_t      win  = e->o.window_prompts > 0 ? (size_t)e->o.window_prompts : EVALGEN_WINDOW;
    const char *knob = getenv("ASSAY_TEST_GEN_WINDOW");
    if (e->o.window_prompts <= 0 && knob && atoi(knob) > 0 && atoi(knob) < EVALGEN_WINDOW)
        win = (size_t)atoi(knob);
    /* a window is win prompts per rank, consecutive in document order within a task */
    e->span  = win * (size_t)sh->size;
    e->items = calloc(e->span, sizeof *e->items);
    e->mine  = calloc(e->span, sizeof *e->mine);
    e->cost  = calloc(e->span, sizeof *e->cost);
    e->owner = calloc(e->span, sizeof *e->owner);
    for (int i = 0; i < e->n; i++)
        if (!(e->g[i].out = calloc(e->span, sizeof *e->g[i].out)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    if (!e->items || !e->mine || !e->cost || !e->owner)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    int64_t total = 0;
    for (int i = 0; i < e->n; i++)
        total += (int64_t)eval_task_count(e->g[i].t) * e->g[i].t->gen->max_gen_toks;
    progress_init(&e->prog, "generate", "tok", total / sh->size);
    e->prog.enabled &= sh->rank == 0; /* one progress line for the run */
    return ASSAY_OK;
}

static int reduce_doc(evalgen *e, gtask *gt, const eval_doc *doc, size_t j, assay_error *err);

/* Generates the window's documents src->docs[0..n) of gt (their prompts built), reduces each to
 * its metric inputs and sample line, and frees them. */
static int gen_task_window(evalgen *e, gtask *gt, eval_task *src, assay_error *err) {
    const pipe_shard *sh = e->sh;
    size_t            n  = src->n;
    for (size_t k = 0; k < n; k++)
        e->items[k] = (witem){.gt = gt, .d = gt->d0 + k, .j = k};
    int rc = gen_window(e, e->m, e->tok, sh, e->items, e->mine, n, e->cost, e->owner, &e->prog,
                        &e->emitted, e->own, err);
    if (sh->size > 1) {
        if (!rc)
            rc = dist_test_fault(err);
        if (sh->exchange && !(rc = dist_agree(rc, err)))
            rc = dist_agree(gen_exchange(e->items, n, e->owner, sh, err), err);
    }
    for (size_t k = 0; !rc && k < n; k++)
        rc = reduce_doc(e, gt, &src->docs[k], k, err);
    for (size_t k = 0; k < n; k++) {
        free(gt->out[k].prompt);
        free(gt->out[k].text);
        memset(&gt->out[k], 0, sizeof gt->out[k]);
    }
    gt->d0 += n;
    gt->n_built = 0;
    eval_task_drop(src);
    return rc;
}

int evalgen_task_step(evalgen *e, const eval_task *t, eval_task *src, int last, assay_error *err) {
    gtask *gt = NULL;
    for (int i = 0; e && i < e->n; i++)
        if (e->g[i].t == t)
            gt = &e->g[i];
    if (!gt || !e->items)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: not a generation task, or not begun",
                          t->def->name);
    tbuf b  = {0};
    int  rc = ASSAY_OK;
    for (; !rc && gt->n_built < src->n; gt->n_built++)
        rc = gt->n_built < e->span
                 ? render_doc(e, gt, &src->docs[gt->n_built], gt->n_built, &b, err)
                 : assay_fail(err, ASSAY_EINTERNAL, "%s: window overflow", t->def->name);
    tbuf_free(&b);
    if (!rc && (src->n >= e->span || (last && src->n)))
        rc = gen_task_window(e, gt, src, err);
    if (!rc && last && gt->fp) {
        int bad = fclose(gt->fp) != 0;
        gt->fp  = NULL;
        if (bad)
            rc = assay_fail(err, ASSAY_EIO, "%s: write failed: %s", gt->fp_path, strerror(errno));
    }
    return rc;
}

int evalgen_end(evalgen *e, assay_error *err) {
    if (!e || !e->n || !e->items)
        return ASSAY_OK;
    const pipe_shard *sh = e->sh;
    progress_finish(&e->prog);
    dist_per_rank_note("generated_prompts", (double)e->own[0]);
    dist_per_rank_note("generated_tokens", (double)e->own[1]);
    dist_per_rank_note("generate_s", e->seconds);
    if (sh->exchange && sh->size > 1) { /* the run's generation time: its slowest rank's */
        double *all = calloc((size_t)sh->size, sizeof *all);
        if (!all)
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        dist_allgather_f64(e->seconds, all, err);
        for (int r = 0; r < sh->size; r++)
            e->seconds = all[r] > e->seconds ? all[r] : e->seconds;
        free(all);
    }
    return ASSAY_OK;
}

/* ---- filters and metrics ------------------------------------------------------------------ */

/* Applies filter f's steps to the generation into *out (malloc'd). */
static int apply_filter(const gen_spec *g, const gen_filter *f, const char *s, size_t n,
                        flt_out *out, assay_error *err) {
    flt_out cur = {NULL, 0};
    if (!(cur.s = malloc(n + 1)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    memcpy(cur.s, s, n);
    cur.s[n] = '\0';
    cur.n    = n;
    for (size_t k = 0; k < f->n_steps; k++) {
        flt_out nx = {NULL, 0};
        int     r  = 0;
        switch (f->steps[k].kind) {
        case GF_REGEX: r = flt_regex_apply(f->steps[k].re, cur.s, cur.n, &nx, err); break;
        case GF_FIRST_LINE: r = flt_first_line(cur.s, cur.n, &nx); break;
        case GF_STRIP: r = flt_strip(cur.s, cur.n, &nx); break;
        case GF_LOWERCASE: r = flt_lowercase(cur.s, cur.n, &nx); break;
        case GF_LABEL: {
            int li = flt_extract_label(cur.s, cur.n, (const char *const *)g->labels, g->label_lens,
                                       g->n_labels);
            const char *lab = li >= 0 ? g->labels[li] : "UNKNOWN";
            nx.n            = strlen(lab);
            if (!(nx.s = strdup(lab)))
                r = -1;
            break;
        }
        default: continue; /* take_first: one response per request already */
        }
        free(cur.s);
        if (r || !nx.s) {
            free(nx.s);
            return err->code ? err->code : assay_fail(err, ASSAY_ENOMEM, "out of memory");
        }
        cur = nx;
    }
    *out = cur;
    return ASSAY_OK;
}

typedef struct corpus {
    const tm_str *hyps, *refs;
    size_t        n, n_refs;
    int           chrf;
} corpus;

static double corpus_stat(void *user, const size_t *idx, size_t n) {
    const corpus *c = user;
    tm_str       *h = malloc((n ? n : 1) * sizeof *h);
    tm_str       *r = malloc((n ? n : 1) * c->n_refs * sizeof *r);
    double        v = NAN;
    if (h && r) {
        for (size_t i = 0; i < n; i++) {
            h[i] = c->hyps[idx[i]];
            for (size_t k = 0; k < c->n_refs; k++)
                r[k * n + i] = c->refs[k * c->n + idx[i]];
        }
        if (c->chrf) {
            tm_chrf s;
            if (!tm_chrf_corpus(h, r, n, c->n_refs, &s))
                v = s.score;
        } else {
            tm_bleu s;
            if (!tm_bleu_corpus(h, r, n, c->n_refs, &s))
                v = s.score;
        }
    }
    free(h);
    free(r);
    return v;
}

static void add_num(cJSON *o, const char *metric, const char *filter, double v) {
    char key[512];
    snprintf(key, sizeof key, "%s,%s", metric, filter);
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddStringToObject(o, key, "N/A");
}

static void add_mean(cJSON *r, cJSON *hib, const char *metric, const char *filter, const double *x,
                     size_t n) {
    char se[96];
    add_num(r, metric, filter, metric_mean(x, n));
    snprintf(se, sizeof se, "%s_stderr", metric);
    add_num(r, se, filter, n > 1 ? metric_mean_stderr(x, n) : NAN);
    if (!cJSON_GetObjectItemCaseSensitive(hib, metric))
        cJSON_AddBoolToObject(hib, metric, 1);
}

static void add_dist(cJSON *r, const char *name, const double *x, size_t n) {
    flt_dist d;
    char     key[96];
    if (flt_dist_compute(x, n, &d))
        return;
    snprintf(key, sizeof key, "%s_mean", name);
    add_num(r, key, "none", d.mean);
    snprintf(key, sizeof key, "%s_p50", name);
    add_num(r, key, "none", d.p50);
    snprintf(key, sizeof key, "%s_p95", name);
    add_num(r, key, "none", d.p95);
}

/* The classification report as JSON. */
static cJSON *report_json(const flt_class_report *cr, const gen_spec *g) {
    cJSON *o = cJSON_CreateObject(), *pc = cJSON_AddObjectToObject(o, "per_class");
    for (size_t c = 0; c < cr->n_labels; c++) {
        cJSON *k = cJSON_AddObjectToObject(pc, g->labels[c]);
        cJSON_AddNumberToObject(k, "precision", cr->per_class[c].precision);
        cJSON_AddNumberToObject(k, "recall", cr->per_class[c].recall);
        cJSON_AddNumberToObject(k, "f1", cr->per_class[c].f1);
        cJSON_AddNumberToObject(k, "support", (double)cr->per_class[c].support);
    }
    const flt_class_stats *avg[3]   = {&cr->macro, &cr->micro, &cr->weighted};
    const char *const      names[3] = {"macro avg", "micro avg", "weighted avg"};
    for (int a = 0; a < 3; a++) {
        cJSON *k = cJSON_AddObjectToObject(o, names[a]);
        cJSON_AddNumberToObject(k, "precision", avg[a]->precision);
        cJSON_AddNumberToObject(k, "recall", avg[a]->recall);
        cJSON_AddNumberToObject(k, "f1", avg[a]->f1);
    }
    cJSON_AddNumberToObject(o, "accuracy", cr->accuracy);
    cJSON_AddNumberToObject(o, "unknown", (double)cr->n_unknown);
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion_matrix");
    for (size_t gi = 0; gi < cr->n_labels; gi++) {
        cJSON *row = cJSON_CreateArray();
        for (size_t p = 0; p <= cr->n_labels; p++)
            cJSON_AddItemToArray(
                row, cJSON_CreateNumber((double)cr->confusion[gi * (cr->n_labels + 1) + p]));
        cJSON_AddItemToArray(cm, row);
    }
    cJSON_AddStringToObject(
        o, "confusion_matrix_layout",
        "rows: gold label in \"labels\" order; columns: predicted, then UNKNOWN");
    return o;
}

/* Per-filter results of one task, per document. */
struct fstate {
    flt_out *ans;  /* the filtered answers (kept for corpus metrics only) */
    double **per;  /* per metric: per-doc values (mean metrics), NULL for corpus ones */
    int     *pred; /* label index per doc */
};

/* The label a filtered answer names: after a "label" step the answer is a label or UNKNOWN
 * itself (UNKNOWN holds letters a label set may use); else it is extracted from the text. */
static int answer_label(const gen_spec *g, const gen_filter *f, const flt_out *a) {
    if (f->n_steps && f->steps[f->n_steps - 1].kind == GF_LABEL) {
        for (size_t i = 0; i < g->n_labels; i++)
            if (g->label_lens[i] == a->n && !memcmp(g->labels[i], a->s, a->n))
                return (int)i;
        return -1;
    }
    return flt_extract_label(a->s, a->n, (const char *const *)g->labels, g->label_lens,
                             g->n_labels);
}

/* Document doc's per-document metrics under filter f into fs's d-th entries. */
static int sample_metrics(const gen_spec *g, const gen_filter *f, const eval_task *t,
                          const eval_doc *doc, size_t d, const flt_out *a, fstate *fs,
                          assay_error *err) {
    tm_str p = {a->s, a->n};
    for (size_t k = 0; k < g->n_metrics; k++) {
        const gen_metric *gm = &g->metrics[k];
        double            v  = 0, x;
        switch (gm->kind) {
        case GM_EXACT_MATCH:
        case GM_F1:
            for (int rr = 0; rr < doc->n_choices; rr++) {
                tm_str ref = {doc->choices[rr], doc->choice_len[rr]};
                int    r   = gm->kind == GM_F1 ? tm_squad_f1(p, ref, &x)
                                               : tm_exact_match(p, ref, &gm->em, &x, err);
                if (r)
                    return err->code ? err->code : assay_fail(err, ASSAY_ENOMEM, "out of memory");
                v = x > v ? x : v;
            }
            break;
        case GM_ROUGE1:
        case GM_ROUGE2:
        case GM_ROUGEL:
        case GM_ROUGELSUM:
            for (int rr = 0; rr < doc->n_choices; rr++) {
                struct tm_rouge rs;
                if (tm_rouge((tm_str){doc->choices[rr], doc->choice_len[rr]}, p, gm->use_stemmer,
                             &rs))
                    return assay_fail(err, ASSAY_ENOMEM, "out of memory");
                x = gm->kind == GM_ROUGE1   ? rs.rouge1.fmeasure
                    : gm->kind == GM_ROUGE2 ? rs.rouge2.fmeasure
                    : gm->kind == GM_ROUGEL ? rs.rougeL.fmeasure
                                            : rs.rougeLsum.fmeasure;
                v = x > v ? x : v;
            }
            break;
        case GM_LABEL_ACCURACY: {
            if (doc->label < 0)
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s doc %zu: label_accuracy needs a \"label\" in every row",
                                  t->def->name, doc->doc_id);
            int li      = answer_label(g, f, a);
            fs->pred[d] = li;
            v           = li == doc->label;
            break;
        }
        case GM_JSON_VALID:
        case GM_JSON_SCHEMA: {
            flt_json_check jc;
            flt_schema    *sc = NULL;
            if (gm->kind == GM_JSON_SCHEMA) {
                const char *text = doc->schema ? doc->schema : g->schema;
                size_t      tl   = doc->schema ? doc->schema_len : g->schema_len;
                if (!text)
                    return assay_fail(err, ASSAY_EINVAL,
                                      "%s doc %zu: json_schema needs a \"schema\" (in the spec or "
                                      "the row)",
                                      t->def->name, doc->doc_id);
                if (!(sc = flt_schema_parse(text, tl, t->def->name, err)))
                    return err->code ? err->code : ASSAY_EINVAL;
            }
            int r = flt_json_check_response(sc, a->s, a->n, &jc);
            flt_schema_free(sc);
            if (r)
                return assay_fail(err, ASSAY_ENOMEM, "out of memory");
            v = gm->kind == GM_JSON_VALID ? jc.parses : jc.has_required;
            break;
        }
        default: continue; /* corpus and distribution metrics */
        }
        fs->per[k][d] = v;
    }
    return ASSAY_OK;
}

/* Appends document doc's line (the d-th of its task; ans: its filtered answers) to the task's
 * samples_<task>.jsonl in the samples directory. */
static int write_sample(evalgen *e, gtask *gt, const eval_doc *doc, const gen_out *go,
                        const flt_out *ans, size_t d, assay_error *err) {
    const eval_task *t = gt->t;
    const gen_spec  *g = t->gen;
    if (!gt->fp) {
        snprintf(gt->fp_path, sizeof gt->fp_path, "%s/samples_%s.jsonl", e->samples_dir,
                 t->def->name);
        if (!(gt->fp = fopen(gt->fp_path, "ab")))
            return assay_fail(err, ASSAY_EIO, "%s: cannot create: %s", gt->fp_path,
                              strerror(errno));
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "doc_id", (double)doc->doc_id);
    cJSON *tg = cJSON_CreateArray();
    for (int r = 0; r < doc->n_choices; r++)
        cJSON_AddItemToArray(tg, jsonl_string_create(doc->choices[r], doc->choice_len[r]));
    cJSON_AddItemToObject(o, "target",
                          doc->n_choices == 1
                              ? jsonl_string_create(doc->choices[0], doc->choice_len[0])
                              : cJSON_Duplicate(tg, 1));
    cJSON_Delete(tg);
    if (doc->label >= 0)
        cJSON_AddStringToObject(o, "label", g->labels[doc->label]);
    cJSON *args = cJSON_AddObjectToObject(o, "arguments");
    cJSON *a0   = cJSON_AddObjectToObject(args, "gen_args_0");
    cJSON_AddItemToObject(a0, "arg_0", jsonl_string_create(go->prompt, go->prompt_len));
    cJSON *kw = cJSON_AddObjectToObject(a0, "arg_1");
    cJSON *un = cJSON_AddArrayToObject(kw, "until");
    for (size_t s = 0; s < g->n_until; s++)
        cJSON_AddItemToArray(un, jsonl_string_create(g->until[s], g->until_lens[s]));
    cJSON_AddBoolToObject(kw, "do_sample", 0);
    cJSON_AddNumberToObject(kw, "temperature", 0.0);
    cJSON_AddNumberToObject(kw, "max_gen_toks", g->max_gen_toks);
    cJSON *resp = cJSON_CreateArray(), *rr = cJSON_CreateArray();
    cJSON_AddItemToArray(rr, jsonl_string_create(go->text ? go->text : "", go->text_len));
    cJSON_AddItemToArray(resp, rr);
    cJSON_AddItemToObject(o, "resps", resp);
    cJSON *fr = cJSON_AddObjectToObject(o, "filtered_resps");
    for (size_t f = 0; f < g->n_filters; f++)
        cJSON_AddItemToObject(fr, g->filters[f].name, jsonl_string_create(ans[f].s, ans[f].n));
    for (size_t f = 0; f < g->n_filters; f++)
        for (size_t k = 0; k < g->n_metrics; k++)
            if (gt->fs[f].per[k]) {
                char key[160];
                snprintf(key, sizeof key, "%s,%s", metric_fn[g->metrics[k].kind],
                         g->filters[f].name);
                cJSON_AddNumberToObject(o, key, gt->fs[f].per[k][d]);
            }
    cJSON_AddStringToObject(o, "finish", fin_name[go->finish]);
    cJSON_AddNumberToObject(o, "n_tokens", go->n_tokens);
    cJSON_AddNumberToObject(o, "n_prompt_tokens", go->n_prompt);
    cJSON_AddBoolToObject(o, "truncated", go->truncated);
    cJSON_AddNumberToObject(o, "ttft_s", go->ttft);
    cJSON_AddNumberToObject(o, "latency_s", go->latency);
    char *line = jsonl_print(o, 0);
    cJSON_Delete(o);
    int bad = !line || fprintf(gt->fp, "%s\n", line) < 0;
    free(line);
    return bad ? assay_fail(err, ASSAY_EIO, "%s: write failed", gt->fp_path) : ASSAY_OK;
}

static int grow_array(void **p, size_t n, size_t size) {
    void *q = realloc(*p, (n ? n : 1) * size);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* Room for document d in every per-document array of gt. */
static int gtask_reserve(gtask *gt, size_t d) {
    const gen_spec *g = gt->t->gen;
    if (d < gt->cap)
        return 0;
    size_t nc = gt->cap ? 2 * gt->cap : 256;
    if (!gt->fs && !(gt->fs = calloc(g->n_filters ? g->n_filters : 1, sizeof *gt->fs)))
        return -1;
    for (size_t f = 0; f < g->n_filters; f++) {
        fstate *fs = &gt->fs[f];
        if (!fs->per && !(fs->per = calloc(g->n_metrics ? g->n_metrics : 1, sizeof *fs->per)))
            return -1;
        if (grow_array((void **)&fs->pred, nc, sizeof *fs->pred) ||
            (gt->corpus && grow_array((void **)&fs->ans, nc, sizeof *fs->ans)))
            return -1;
        for (size_t k = 0; k < g->n_metrics; k++) {
            int kind = g->metrics[k].kind;
            if (kind != GM_BLEU && kind != GM_CHRF && kind != GM_LENGTH && kind != GM_LATENCY &&
                grow_array((void **)&fs->per[k], nc, sizeof *fs->per[k]))
                return -1;
        }
    }
    for (int q = 0; q < 4; q++)
        if (grow_array((void **)&gt->dist[q], nc, sizeof *gt->dist[q]))
            return -1;
    if (grow_array((void **)&gt->gold, nc, sizeof *gt->gold) ||
        (gt->corpus && (grow_array((void **)&gt->refs, nc, sizeof *gt->refs) ||
                        grow_array((void **)&gt->n_refs, nc, sizeof *gt->n_refs))))
        return -1;
    gt->cap = nc;
    return 0;
}

/* What a generated document leaves for its task's metrics: each filter's answer and per-document
 * values, its label, the distributions' inputs, and (corpus metrics) the answers and references;
 * its sample line is written now. The prompt and the few-shot block are not kept. */
static int reduce_doc(evalgen *e, gtask *gt, const eval_doc *doc, size_t j, assay_error *err) {
    const eval_task *t  = gt->t;
    const gen_spec  *g  = t->gen;
    const gen_out   *go = &gt->out[j];
    size_t           d  = gt->n_done;
    flt_out         *ans;
    int              rc = ASSAY_OK;
    if (gtask_reserve(gt, d) || !(ans = calloc(g->n_filters ? g->n_filters : 1, sizeof *ans)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    if (go->done) { /* totals over the generations this process holds: all after the exchange */
        e->prompts++;
        e->prompt_tokens += go->n_prompt;
        e->new_tokens += go->n_tokens;
    }
    for (size_t f = 0; f < g->n_filters && !rc; f++)
        if (!(rc = apply_filter(g, &g->filters[f], go->text ? go->text : "", go->text_len, &ans[f],
                                err)))
            rc = sample_metrics(g, &g->filters[f], t, doc, d, &ans[f], &gt->fs[f], err);
    gt->gold[d]    = doc->label;
    gt->dist[0][d] = (double)metric_chars(go->text ? go->text : "", go->text_len);
    gt->dist[1][d] = go->n_tokens;
    gt->dist[2][d] = go->latency;
    gt->dist[3][d] = go->ttft;
    gt->hit_max += go->finish == FIN_LENGTH;
    gt->trunc += (size_t)go->truncated;
    if (!rc && e->samples_dir)
        rc = write_sample(e, gt, doc, go, ans, d, err);
    if (!rc && gt->corpus) {
        tm_str *r = calloc((size_t)doc->n_choices + 1, sizeof *r);
        for (int q = 0; r && q < doc->n_choices; q++) {
            char *c = malloc(doc->choice_len[q] + 1);
            if (c) {
                memcpy(c, doc->choices[q], doc->choice_len[q]);
                c[doc->choice_len[q]] = '\0';
            }
            r[q] = (tm_str){c, doc->choice_len[q]};
            if (!c) {
                for (int q2 = 0; q2 < q; q2++)
                    free((char *)r[q2].s);
                free(r);
                r = NULL;
            }
        }
        if (!r)
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        else {
            gt->refs[d]   = r;
            gt->n_refs[d] = doc->n_choices;
            for (size_t f = 0; f < g->n_filters; f++)
                gt->fs[f].ans[d] = ans[f], ans[f] = (flt_out){NULL, 0};
        }
    }
    for (size_t f = 0; f < g->n_filters; f++)
        free(ans[f].s);
    free(ans);
    if (!rc)
        gt->n_done++;
    return rc;
}

static cJSON *task_config(const evalgen *e, const gtask *gt) {
    const eval_task *t = gt->t;
    const gen_spec  *g = t->gen;
    cJSON           *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "task", t->def->name);
    cJSON_AddStringToObject(c, "output_type", "generate_until");
    cJSON_AddStringToObject(c, "target_delimiter", g->target_delim);
    cJSON_AddStringToObject(c, "fewshot_delimiter", g->fewshot_delim);
    cJSON_AddNumberToObject(c, "num_fewshot", gt->num_fewshot);
    cJSON_AddStringToObject(c, "data_layout", t->layout);
    cJSON *gk = cJSON_AddObjectToObject(c, "generation_kwargs");
    cJSON *un = cJSON_AddArrayToObject(gk, "until");
    for (size_t s = 0; s < gt->n_stops; s++)
        cJSON_AddItemToArray(un, jsonl_string_create(gt->stops[s], gt->stop_lens[s]));
    cJSON_AddBoolToObject(gk, "do_sample", 0);
    cJSON_AddNumberToObject(gk, "temperature", 0.0);
    cJSON_AddNumberToObject(gk, "max_gen_toks", g->max_gen_toks);
    cJSON *fl = cJSON_AddArrayToObject(c, "filter_list");
    for (size_t f = 0; f < g->n_filters; f++)
        cJSON_AddItemToArray(fl, cJSON_CreateString(g->filters[f].name));
    cJSON *ml = cJSON_AddArrayToObject(c, "metric_list");
    for (size_t k = 0; k < g->n_metrics; k++)
        cJSON_AddItemToArray(ml, cJSON_CreateString(metric_fn[g->metrics[k].kind]));
    cJSON_AddBoolToObject(c, "apply_chat_template", e->chat);
    cJSON_AddBoolToObject(c, "fewshot_as_multiturn", e->chat && e->o.fewshot_as_multiturn);
    if (e->o.system_prompt || g->system_prompt)
        cJSON_AddStringToObject(c, "system_instruction",
                                e->o.system_prompt ? e->o.system_prompt : g->system_prompt);
    if (gt->system_dropped)
        cJSON_AddStringToObject(c, "note",
                                "the chat template refused the system turn: rendered without it");
    cJSON *md = cJSON_AddObjectToObject(c, "metadata");
    cJSON_AddNumberToObject(md, "version", t->def->version);
    return c;
}

int evalgen_results(evalgen *e, const eval_task *t, cJSON *results, cJSON *configs, cJSON *versions,
                    cJSON *nshot, cJSON *hib, cJSON *nsamp, assay_error *err) {
    gtask *gt = NULL;
    for (int i = 0; e && i < e->n; i++)
        if (e->g[i].t == t)
            gt = &e->g[i];
    if (!gt)
        return assay_fail(err, ASSAY_EINTERNAL, "%s: not a generation task", t->def->name);
    const gen_spec *g  = t->gen;
    size_t          n  = gt->n_done;
    const char     *nm = t->def->name;
    int             rc = ASSAY_OK;
    tm_str         *hy = NULL, *rf = NULL;
    if (gtask_reserve(gt, 0))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    cJSON *r = cJSON_AddObjectToObject(results, nm);
    cJSON *h = cJSON_AddObjectToObject(hib, nm);
    cJSON_AddStringToObject(r, "alias", nm);
    size_t n_refs = 1;
    for (size_t d = 0; gt->corpus && d < n; d++)
        if ((size_t)gt->n_refs[d] > n_refs)
            n_refs = (size_t)gt->n_refs[d];
    for (size_t f = 0; f < g->n_filters && !rc; f++) {
        const char *fn = g->filters[f].name;
        fstate     *fs = &gt->fs[f];
        for (size_t k = 0; k < g->n_metrics && !rc; k++) {
            const gen_metric *gm = &g->metrics[k];
            if (fs->per[k]) {
                add_mean(r, h, metric_fn[gm->kind], fn, fs->per[k], n);
            }
            if (gm->kind == GM_LABEL_ACCURACY) {
                size_t found = 0;
                for (size_t d = 0; d < n; d++)
                    found += fs->pred[d] >= 0;
                add_num(r, "label_extraction_rate", fn, n ? (double)found / (double)n : NAN);
                flt_class_report cr = {0};
                if (flt_class_report_compute(fs->pred, gt->gold, n, g->n_labels, &cr)) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    break;
                }
                char key[160];
                snprintf(key, sizeof key, "classification_report,%s", fn);
                cJSON_AddItemToObject(r, key, report_json(&cr, g));
                flt_class_report_free(&cr);
            }
            if (gm->kind == GM_BLEU || gm->kind == GM_CHRF) {
                /* corpus score over all documents; every reference list padded to n_refs streams
                   with its first reference (a repeated reference changes neither score) */
                hy = calloc(n ? n : 1, sizeof *hy);
                rf = calloc((n ? n : 1) * n_refs, sizeof *rf);
                if (!hy || !rf) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    break;
                }
                for (size_t d = 0; d < n; d++) {
                    hy[d] = (tm_str){fs->ans[d].s, fs->ans[d].n};
                    for (size_t q = 0; q < n_refs; q++)
                        rf[q * n + d] = gt->refs[d][q < (size_t)gt->n_refs[d] ? q : 0];
                }
                corpus  c   = {hy, rf, n, n_refs, gm->kind == GM_CHRF};
                size_t *all = malloc((n ? n : 1) * sizeof *all);
                boot_ci ci;
                if (!all) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    break;
                }
                for (size_t d = 0; d < n; d++)
                    all[d] = d;
                double v = corpus_stat(&c, all, n);
                free(all);
                if (boot_ci_compute(corpus_stat, &c, n, EVALGEN_BOOT_ITERS, 0.95, EVALGEN_BOOT_SEED,
                                    &ci)) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    break;
                }
                const char *mn = metric_fn[gm->kind];
                char        key[160], sig[200];
                add_num(r, mn, fn, v);
                snprintf(key, sizeof key, "%s_stderr", mn);
                add_num(r, key, fn, ci.stderr);
                snprintf(key, sizeof key, "%s_ci95,%s", mn, fn);
                cJSON *ca = cJSON_AddArrayToObject(r, key);
                cJSON_AddItemToArray(ca, cJSON_CreateNumber(isfinite(ci.lo) ? ci.lo : 0));
                cJSON_AddItemToArray(ca, cJSON_CreateNumber(isfinite(ci.hi) ? ci.hi : 0));
                snprintf(key, sizeof key, "%s_signature,%s", mn, fn);
                cJSON_AddStringToObject(r, key,
                                        gm->kind == GM_CHRF
                                            ? tm_chrf_signature(n_refs, sig, sizeof sig)
                                            : tm_bleu_signature(n_refs, sig, sizeof sig));
                if (!cJSON_GetObjectItemCaseSensitive(h, mn))
                    cJSON_AddBoolToObject(h, mn, 1);
                free(hy);
                free(rf);
                hy = rf = NULL;
            }
        }
    }
    /* raw-generation distributions and the generation counts (filter "none") */
    for (size_t k = 0; k < g->n_metrics && !rc; k++) {
        int kind = g->metrics[k].kind;
        if (kind == GM_LENGTH) {
            add_dist(r, "response_chars", gt->dist[0], n);
            add_dist(r, "response_tokens", gt->dist[1], n);
        } else if (kind == GM_LATENCY) {
            add_dist(r, "latency_s", gt->dist[2], n);
            add_dist(r, "ttft_s", gt->dist[3], n);
        }
    }
    if (!rc) {
        cJSON_AddNumberToObject(r, "hit_max_new_tokens,none", (double)gt->hit_max);
        cJSON_AddNumberToObject(r, "truncated_prompts,none", (double)gt->trunc);
        cJSON_AddItemToObject(configs, nm, task_config(e, gt));
        cJSON_AddNumberToObject(versions, nm, t->def->version);
        cJSON_AddNumberToObject(nshot, nm, gt->num_fewshot);
        cJSON *ns = cJSON_AddObjectToObject(nsamp, nm);
        cJSON_AddNumberToObject(ns, "original", (double)t->total);
        cJSON_AddNumberToObject(ns, "effective", (double)n);
    }
    free(hy);
    free(rf);
    return rc;
}

void evalgen_free(evalgen *e) {
    if (!e)
        return;
    for (int i = 0; i < e->n; i++) {
        gtask          *gt = &e->g[i];
        const gen_spec *g  = gt->t->gen;
        for (size_t d = 0; gt->out && d < e->span; d++) {
            free(gt->out[d].prompt);
            free(gt->out[d].text);
        }
        free(gt->out);
        for (size_t s = 0; s < gt->n_stops; s++)
            free(gt->stops[s]);
        free(gt->stops);
        free(gt->stop_lens);
        free(gt->stop_window);
        eval_task_free(&gt->pool);
        free(gt->idx);
        free(gt->m);
        for (size_t f = 0; gt->fs && f < g->n_filters; f++) {
            for (size_t d = 0; gt->fs[f].ans && d < gt->n_done; d++)
                free(gt->fs[f].ans[d].s);
            free(gt->fs[f].ans);
            for (size_t k = 0; gt->fs[f].per && k < g->n_metrics; k++)
                free(gt->fs[f].per[k]);
            free(gt->fs[f].per);
            free(gt->fs[f].pred);
        }
        free(gt->fs);
        for (size_t d = 0; gt->refs && d < gt->n_done; d++) {
            for (int q = 0; q < gt->n_refs[d]; q++)
                free((char *)gt->refs[d][q].s);
            free(gt->refs[d]);
        }
        free(gt->refs);
        free(gt->n_refs);
        free(gt->gold);
        for (int q = 0; q < 4; q++)
            free(gt->dist[q]);
        if (gt->fp)
            fclose(gt->fp);
    }
    free(e->items);
    free(e->mine);
    free(e->cost);
    free(e->owner);
    chat_template_free(e->tpl);
    free(e->g);
    free(e);
}
