/* harness/tasks/lambada.c — lambada_openai as lm-eval scores it (output_type loglikelihood):
 * context = " ".join(text.split(" ")[:-1]), continuation = " " + text.split(" ")[-1]; acc is
 * whether every continuation token is the argmax (is_greedy), perplexity = exp(-mean(loglik)). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

int task_lambada_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char         path[1100];
    jsonl_reader r;
    cJSON       *obj = NULL;
    int          rc, got;
    /* lm-eval has no train split for it: the few-shot pool (o->split set) is the test split */
    snprintf(path, sizeof path, "%s/lambada_openai/test.jsonl", o->dir);
    if (!path_exists(path))
        return assay_fail(err, ASSAY_EINVAL, "lambada_openai: %s does not exist", path);
    snprintf(t->layout, sizeof t->layout, "jsonl: lambada_openai/test.jsonl");
    if ((rc = eval_task_add_file(t, path, err)) || (rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = "{\"text\": \"...\"}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *text;
        size_t      len;
        char        where[1200];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        t->total++;
        if (o->limit > 0 && (int64_t)t->n >= o->limit)
            goto next;
        if ((rc = jsonl_get_string(&r, obj, "text", 1, &text, &len, err)))
            goto next;
        size_t sp = len; /* the last ' ' (text.split(" ") splits on that byte only) */
        while (sp > 0 && text[sp - 1] != ' ')
            sp--;
        const char *word  = sp ? text + sp : text;
        size_t      wl    = sp ? len - sp : len;
        size_t      ctx_l = sp ? sp - 1 : 0;
        if (len == 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: empty \"text\"", where);
            goto next;
        }
        rc = eval_task_add(t, text, ctx_l, &word, &wl, 1, 0, 0, t->n, where, err);
    next:
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    if (!rc && t->total == 0)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no documents", path);
    jsonl_close(&r);
    return rc;
}
