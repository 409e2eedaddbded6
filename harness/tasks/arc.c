/* harness/tasks/arc.c — ARC-Easy / ARC-Challenge as lm-eval's arc_easy / arc_challenge render
 * them: "Question: {question}\nAnswer:", choices = choices.text, gold =
 * choices.label.index(answerKey), zero-shot, acc + acc_norm. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

static int arc_row(eval_task *t, const task_row *row, void *user, assay_error *err) {
    tbuf        *q = user;
    const char  *qs, *key, **text = NULL, **lab = NULL;
    size_t       ql, kl, *tl = NULL, *ll = NULL, nt = 0, nl = 0;
    const char  *where = row->where;
    const cJSON *ch    = cJSON_GetObjectItemCaseSensitive(row->obj, "choices");
    int          rc;
    if ((rc = jsonl_get_string(row->r, row->obj, "question", 1, &qs, &ql, err)) ||
        (rc = jsonl_get_string(row->r, row->obj, "answerKey", 1, &key, &kl, err)))
        goto done;
    if (!cJSON_IsObject(ch)) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s: missing field 'choices' (an object with 'text' and 'label')", where);
        goto done;
    }
    if ((rc = jsonl_get_strings(row->r, ch, "text", &text, &tl, &nt, err)) ||
        (rc = jsonl_get_strings(row->r, ch, "label", &lab, &ll, &nl, err)))
        goto done;
    if (nt == 0 || nt != nl) {
        rc = assay_fail(err, ASSAY_EINVAL,
                        nt ? "%s: choices.text has %zu entries, choices.label %zu"
                           : "%s: the choice list is empty (choices.text %zu, label %zu)",
                        where, nt, nl);
        goto done;
    }
    int gold = -1;
    for (size_t i = 0; i < nl && gold < 0; i++)
        if (ll[i] == kl && !memcmp(lab[i], key, kl))
            gold = (int)i;
    if (gold < 0) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: answerKey '%.20s' is not one of choices.label",
                        where, key);
        goto done;
    }
    q->n = 0;
    if (tbuf_puts(q, "Question: ") || tbuf_put(q, qs, ql) || tbuf_puts(q, "\nAnswer:")) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
        goto done;
    }
    rc = eval_task_add(t, q->s, q->n, text, tl, (int)nt, gold, 0, eval_task_count(t), where, err);
done:
    free(text);
    free(tl);
    free(lab);
    free(ll);
    return rc;
}

int task_arc_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char        path[1100], source[64];
    tbuf        q     = {0};
    const char *split = o->split ? o->split : "test";
    snprintf(path, sizeof path, "%s/%s/%s.jsonl", o->dir, t->def->name, split);
    snprintf(source, sizeof source, "allenai/ai2_arc %s split as JSON Lines", split);
    snprintf(t->layout, sizeof t->layout, "jsonl: %s/%s.jsonl (allenai/ai2_arc)", t->def->name,
             split);
    int rc = task_jsonl_each(t, o, path, source,
                             "{\"question\": \"...\", \"choices\": {\"text\": [...], \"label\": "
                             "[\"A\", ...]}, \"answerKey\": \"A\"}",
                             "questions", arc_row, &q, err);
    tbuf_free(&q);
    return rc;
}
