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

static int lambada_row(eval_task *t, const task_row *row, void *user, assay_error *err) {
    const char *text;
    size_t      len;
    int         rc;
    (void)user;
    if ((rc = jsonl_get_string(row->r, row->obj, "text", 1, &text, &len, err)))
        return rc;
    if (len == 0)
        return assay_fail(err, ASSAY_EINVAL, "%s: empty \"text\"", row->where);
    size_t sp = len; /* the last ' ' (text.split(" ") splits on that byte only) */
    while (sp > 0 && text[sp - 1] != ' ')
        sp--;
    const char *word  = sp ? text + sp : text;
    size_t      wl    = sp ? len - sp : len;
    size_t      ctx_l = sp ? sp - 1 : 0;
    return eval_task_add(t, text, ctx_l, &word, &wl, 1, 0, 0, eval_task_count(t), row->where, err);
}

int task_lambada_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char path[1100];
    /* lm-eval has no train split for it: the few-shot pool (o->split set) is the test split */
    snprintf(path, sizeof path, "%s/lambada_openai/test.jsonl", o->dir);
    snprintf(t->layout, sizeof t->layout, "jsonl: lambada_openai/test.jsonl");
    return task_jsonl_each(t, o, path, NULL, "{\"text\": \"...\"}", "documents", lambada_row, NULL,
                           err);
}
