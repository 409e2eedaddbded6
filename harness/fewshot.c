/* harness/fewshot.c — see fewshot.h. */
#include "harness/fewshot.h"

#include <stdlib.h>
#include <string.h>

#include "scoring/pyrandom.h"

static const struct {
    const char *task;
    int         draw_extra; /* lm-eval's config has test_split null: sample K + 1, drop eval_doc */
} rules[] = {
    {"hellaswag", 1},
    {"arc_easy", 0},
    {"arc_challenge", 0},
    {"piqa", 1},
    {"boolq", 1},
    {"openbookqa", 0},
    {"winogrande", 1},
    /* no train or validation split: lm-eval samples the test split itself, without removing the
     * evaluated document (its config's test split differs from the unset few-shot split) */
    {"lambada_openai", 0},
};

int fewshot_config_zero(const char *task) {
    return !strcmp(task, "truthfulqa_mc1") || !strcmp(task, "truthfulqa_mc2");
}

/* Appends one example: its text, then (when it has an answer) the target delimiter, the answer
 * and "\n\n". Winogrande's text is the context of its gold option (lm-eval's multiple-input
 * rule) and an empty answer is no answer; a loglikelihood task's answer is its whole continuation
 * (delimiter + word), so lm-eval writes the delimiter twice. */
static int put_example(tbuf *b, const eval_task *t, const eval_doc *ex, const char *delim,
                       size_t dl) {
    int         g     = ex->gold;
    const char *q     = ex->ctxs ? ex->ctxs[g] : ex->context;
    size_t      ql    = ex->ctxs ? ex->ctx_lens[g] : ex->ctx_len;
    int         ans   = !(ex->ctxs && ex->choice_len[g] == 0);
    int         twice = t->def->loglik;
    if (tbuf_put(b, q, ql))
        return -1;
    if (!ans)
        return 0;
    if (tbuf_put(b, delim, dl) || (twice && tbuf_put(b, delim, dl)) ||
        tbuf_put(b, ex->choices[g], ex->choice_len[g]) || tbuf_puts(b, "\n\n"))
        return -1;
    return 0;
}

/* s = prefix[0..pn) + s, reallocated. */
static int prepend(char **s, size_t *len, const char *prefix, size_t pn) {
    if (pn == 0)
        return 0;
    char *n = malloc(pn + *len + 1);
    if (!n)
        return -1;
    memcpy(n, prefix, pn);
    memcpy(n + pn, *s, *len);
    n[pn + *len] = '\0';
    free(*s);
    *s = n;
    *len += pn;
    return 0;
}

int fewshot_random_rule(const char *task, int *draw_extra) {
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strcmp(rules[i].task, task)) {
            *draw_extra = rules[i].draw_extra;
            return 1;
        }
    return 0;
}

int fewshot_begin(fewshot_sampler *s, const eval_task *t, const eval_task *pool, int k,
                  int64_t seed, assay_error *err) {
    int extra = 0;
    memset(s, 0, sizeof *s);
    if (!fewshot_random_rule(t->def->name, &extra))
        return assay_fail(err, ASSAY_EUNSUPPORTED, "%s: no random few-shot rule", t->def->name);
    size_t draw = (size_t)k + (size_t)extra;
    if (pool->n < draw)
        return assay_fail(
            err, ASSAY_EINVAL, "%s: --num-fewshot %d draws %zu training documents, %s has %zu",
            t->def->name, k, draw, pool->n_files ? pool->files[0] : "the pool", pool->n);
    if (!(s->idx = malloc((draw ? draw : 1) * sizeof *s->idx)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    s->pool = pool;
    s->k    = k;
    s->draw = draw;
    pyr_seed(&s->r, seed);
    return ASSAY_OK;
}

int fewshot_doc(fewshot_sampler *s, const eval_task *t, eval_doc *doc, assay_error *err) {
    const char *delim = t->delim[0] ? t->delim : " ";
    size_t      dl    = strlen(delim);
    if (pyr_sample(&s->r, s->pool->n, s->draw, s->idx))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    s->b.n = 0;
    for (int j = 0; j < s->k; j++)
        if (put_example(&s->b, t, &s->pool->docs[s->idx[j]], delim, dl))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    /* per-choice contexts (winogrande) each get the examples; the shared one is empty */
    int bad = doc->ctxs ? 0 : prepend(&doc->context, &doc->ctx_len, s->b.s, s->b.n);
    for (int c = 0; doc->ctxs && c < doc->n_choices && !bad; c++)
        bad = prepend(&doc->ctxs[c], &doc->ctx_lens[c], s->b.s, s->b.n);
    return bad ? assay_fail(err, ASSAY_ENOMEM, "out of memory") : ASSAY_OK;
}

void fewshot_end(fewshot_sampler *s) {
    if (!s)
        return;
    free(s->idx);
    tbuf_free(&s->b);
    memset(s, 0, sizeof *s);
}
