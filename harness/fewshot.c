/* harness/fewshot.c — see fewshot.h. */
#include "harness/fewshot.h"

#include <stdlib.h>
#include <string.h>

#include "scoring/pyrandom.h"

static const struct {
    const char *task;
    int         draw_extra; /* lm-eval's config has test_split null: sample K + 1, drop eval_doc */
} rules[] = {
    {"hellaswag", 1}, {"arc_easy", 0}, {"arc_challenge", 0},
    {"piqa", 1},      {"boolq", 1},    {"openbookqa", 0},
};

int fewshot_random_rule(const char *task, int *draw_extra) {
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strcmp(rules[i].task, task)) {
            *draw_extra = rules[i].draw_extra;
            return 1;
        }
    return 0;
}

int fewshot_apply(eval_task *t, const eval_task *pool, int k, int64_t seed, assay_error *err) {
    int extra = 0;
    if (!fewshot_random_rule(t->def->name, &extra))
        return assay_fail(err, ASSAY_EUNSUPPORTED, "%s: no random few-shot rule", t->def->name);
    size_t draw = (size_t)k + (size_t)extra;
    if (pool->n < draw)
        return assay_fail(
            err, ASSAY_EINVAL, "%s: --num-fewshot %d draws %zu training documents, %s has %zu",
            t->def->name, k, draw, pool->n_files ? pool->files[0] : "the pool", pool->n);
    const char *delim = t->delim[0] ? t->delim : " ";
    size_t      dl    = strlen(delim);
    size_t     *idx   = malloc(draw * sizeof *idx);
    tbuf        b     = {0};
    int         rc    = ASSAY_OK;
    pyrandom    r;
    if (!idx)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    pyr_seed(&r, seed);
    for (size_t d = 0; d < t->n && !rc; d++) {
        eval_doc *doc = &t->docs[d];
        if (doc->ctxs) {
            rc =
                assay_fail(err, ASSAY_EUNSUPPORTED,
                           "%s: few-shot for per-choice contexts is not implemented", t->def->name);
            break;
        }
        if (pyr_sample(&r, pool->n, draw, idx)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            break;
        }
        b.n = 0;
        for (int j = 0; j < k; j++) {
            const eval_doc *ex = &pool->docs[idx[j]];
            if (tbuf_put(&b, ex->context, ex->ctx_len) || tbuf_put(&b, delim, dl) ||
                tbuf_put(&b, ex->choices[ex->gold], ex->choice_len[ex->gold]) ||
                tbuf_puts(&b, "\n\n")) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                break;
            }
        }
        if (rc || tbuf_put(&b, doc->context, doc->ctx_len)) {
            rc = rc ? rc : assay_fail(err, ASSAY_ENOMEM, "out of memory");
            break;
        }
        char *s = malloc(b.n + 1);
        if (!s) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            break;
        }
        memcpy(s, b.s, b.n + 1);
        free(doc->context);
        doc->context = s;
        doc->ctx_len = b.n;
    }
    if (!rc)
        t->num_fewshot = k;
    free(idx);
    tbuf_free(&b);
    return rc;
}
