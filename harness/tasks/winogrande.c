/* harness/tasks/winogrande.c — Winogrande as lm-eval's winogrande task scores it (partial
 * scoring, preprocess_winogrande.py): with i = sentence.index("_"), choice k's context is
 * sentence[:i] + option_k and every choice scores the same continuation
 * " " + sentence[i + 1:].strip(); gold = {"1": 0, "2": 1}[answer]; acc only. Reads
 * winogrande/validation.jsonl, and winogrande/train.jsonl for --num-fewshot. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

typedef struct wino_scratch {
    tbuf c0, c1;
} wino_scratch;

static int winogrande_row(eval_task *t, const task_row *row, void *user, assay_error *err) {
    wino_scratch *w = user;
    const char   *se, *o1, *o2, *an, *where = row->where;
    size_t        sl, l1, l2, al;
    int           rc;
    if ((rc = jsonl_get_string(row->r, row->obj, "sentence", 1, &se, &sl, err)) ||
        (rc = jsonl_get_string(row->r, row->obj, "option1", 1, &o1, &l1, err)) ||
        (rc = jsonl_get_string(row->r, row->obj, "option2", 1, &o2, &l2, err)) ||
        (rc = jsonl_get_string(row->r, row->obj, "answer", 1, &an, &al, err)))
        return rc;
    const char *blank = memchr(se, '_', sl);
    if (!blank)
        return assay_fail(err, ASSAY_EFORMAT, "%s: field 'sentence' has no '_' blank", where);
    if (!(al == 1 && (an[0] == '1' || an[0] == '2')))
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: field 'answer' is '%.10s', expected \"1\" or \"2\"", where, an);
    size_t i = (size_t)(blank - se), off, len;
    py_strip(se + i + 1, sl - i - 1, &off, &len);
    w->c0.n = w->c1.n = 0;
    if (tbuf_put(&w->c0, se, i) || tbuf_put(&w->c0, o1, l1) || tbuf_put(&w->c1, se, i) ||
        tbuf_put(&w->c1, o2, l2))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
    const char *target[2] = {se + i + 1 + off, se + i + 1 + off};
    size_t      tl[2]     = {len, len};
    if ((rc = eval_task_add(t, "", 0, target, tl, 2, an[0] - '1', 0, eval_task_count(t), where,
                            err)))
        return rc;
    eval_doc *d = &t->docs[t->n - 1];
    d->ctxs     = calloc(2, sizeof *d->ctxs);
    d->ctx_lens = calloc(2, sizeof *d->ctx_lens);
    if (!d->ctxs || !d->ctx_lens || !(d->ctxs[0] = strdup(w->c0.s)) ||
        !(d->ctxs[1] = strdup(w->c1.s)))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
    d->ctx_lens[0] = w->c0.n;
    d->ctx_lens[1] = w->c1.n;
    return ASSAY_OK;
}

int task_winogrande_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char         path[1100];
    wino_scratch w = {0};
    /* the few-shot pool (harness/fewshot.h) is the train split, in the same layout */
    const char *split = o->split ? o->split : "validation";
    snprintf(path, sizeof path, "%s/winogrande/%s.jsonl", o->dir, split);
    snprintf(t->layout, sizeof t->layout, "jsonl: winogrande/%s.jsonl", split);
    int rc = task_jsonl_each(t, o, path, NULL,
                             "{\"sentence\": \"... _ ...\", \"option1\": \"...\", \"option2\": "
                             "\"...\", \"answer\": \"1\"}",
                             "sentences", winogrande_row, &w, err);
    tbuf_free(&w.c0);
    tbuf_free(&w.c1);
    return rc;
}
