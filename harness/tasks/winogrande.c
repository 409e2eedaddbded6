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

int task_winogrande_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char         path[1100];
    jsonl_reader r;
    cJSON       *obj = NULL;
    tbuf         c0 = {0}, c1 = {0};
    int          rc, got;
    /* the few-shot pool (harness/fewshot.h) is the train split, in the same layout */
    const char *split = o->split ? o->split : "validation";
    snprintf(path, sizeof path, "%s/winogrande/%s.jsonl", o->dir, split);
    if (!path_exists(path))
        return assay_fail(err, ASSAY_EINVAL, "winogrande: %s does not exist", path);
    snprintf(t->layout, sizeof t->layout, "jsonl: winogrande/%s.jsonl", split);
    if ((rc = eval_task_add_file(t, path, err)) || (rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = "{\"sentence\": \"... _ ...\", \"option1\": \"...\", \"option2\": \"...\", "
              "\"answer\": \"1\"}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *se, *o1, *o2, *an;
        size_t      sl, l1, l2, al;
        char        where[1200];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        t->total++;
        if (o->limit > 0 && (int64_t)t->n >= o->limit)
            goto next;
        if ((rc = jsonl_get_string(&r, obj, "sentence", 1, &se, &sl, err)) ||
            (rc = jsonl_get_string(&r, obj, "option1", 1, &o1, &l1, err)) ||
            (rc = jsonl_get_string(&r, obj, "option2", 1, &o2, &l2, err)) ||
            (rc = jsonl_get_string(&r, obj, "answer", 1, &an, &al, err)))
            goto next;
        const char *blank = memchr(se, '_', sl);
        if (!blank) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: field 'sentence' has no '_' blank", where);
            goto next;
        }
        if (!(al == 1 && (an[0] == '1' || an[0] == '2'))) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "%s: field 'answer' is '%.10s', expected \"1\" or "
                            "\"2\"",
                            where, an);
            goto next;
        }
        size_t i = (size_t)(blank - se), off, len;
        py_strip(se + i + 1, sl - i - 1, &off, &len);
        c0.n = c1.n = 0;
        if (tbuf_put(&c0, se, i) || tbuf_put(&c0, o1, l1) || tbuf_put(&c1, se, i) ||
            tbuf_put(&c1, o2, l2)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
            goto next;
        }
        const char *target[2] = {se + i + 1 + off, se + i + 1 + off};
        size_t      tl[2]     = {len, len};
        if ((rc = eval_task_add(t, "", 0, target, tl, 2, an[0] - '1', 0, t->n, where, err)))
            goto next;
        eval_doc *d = &t->docs[t->n - 1];
        d->ctxs     = calloc(2, sizeof *d->ctxs);
        d->ctx_lens = calloc(2, sizeof *d->ctx_lens);
        if (!d->ctxs || !d->ctx_lens || !(d->ctxs[0] = strdup(c0.s)) ||
            !(d->ctxs[1] = strdup(c1.s))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
            goto next;
        }
        d->ctx_lens[0] = c0.n;
        d->ctx_lens[1] = c1.n;
    next:
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    if (!rc && t->total == 0)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no sentences", path);
    tbuf_free(&c0);
    tbuf_free(&c1);
    jsonl_close(&r);
    return rc;
}
