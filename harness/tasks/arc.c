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

int task_arc_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char         path[1100];
    jsonl_reader r;
    cJSON       *obj = NULL;
    tbuf         q   = {0};
    int          rc, got;
    const char  *split = o->split ? o->split : "test";
    snprintf(path, sizeof path, "%s/%s/%s.jsonl", o->dir, t->def->name, split);
    if (!path_exists(path))
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: %s does not exist (allenai/ai2_arc %s split "
                          "as JSON Lines)",
                          t->def->name, path, split);
    snprintf(t->layout, sizeof t->layout, "jsonl: %s/%s.jsonl (allenai/ai2_arc)", t->def->name,
             split);
    if ((rc = eval_task_add_file(t, path, err)) || (rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = "{\"question\": \"...\", \"choices\": {\"text\": [...], \"label\": [\"A\", ...]}, "
              "\"answerKey\": \"A\"}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *qs, *key, **text = NULL, **lab = NULL;
        size_t      ql, kl, *tl = NULL, *ll = NULL, nt = 0, nl = 0;
        char        where[1200];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        t->total++;
        if (o->limit > 0 && (int64_t)t->n >= o->limit)
            goto next;
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(obj, "choices");
        if ((rc = jsonl_get_string(&r, obj, "question", 1, &qs, &ql, err)) ||
            (rc = jsonl_get_string(&r, obj, "answerKey", 1, &key, &kl, err)))
            goto next;
        if (!cJSON_IsObject(ch)) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: missing field 'choices' (an object with 'text' and 'label')",
                            where);
            goto next;
        }
        if ((rc = jsonl_get_strings(&r, ch, "text", &text, &tl, &nt, err)) ||
            (rc = jsonl_get_strings(&r, ch, "label", &lab, &ll, &nl, err)))
            goto next;
        if (nt == 0 || nt != nl) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            nt ? "%s: choices.text has %zu entries, choices.label %zu"
                               : "%s: the choice list is empty (choices.text %zu, label %zu)",
                            where, nt, nl);
            goto next;
        }
        int gold = -1;
        for (size_t i = 0; i < nl && gold < 0; i++)
            if (ll[i] == kl && !memcmp(lab[i], key, kl))
                gold = (int)i;
        if (gold < 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: answerKey '%.20s' is not one of choices.label",
                            where, key);
            goto next;
        }
        q.n = 0;
        if (tbuf_puts(&q, "Question: ") || tbuf_put(&q, qs, ql) || tbuf_puts(&q, "\nAnswer:")) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
            goto next;
        }
        rc = eval_task_add(t, q.s, q.n, text, tl, (int)nt, gold, 0, t->n, where, err);
    next:
        free(text);
        free(tl);
        free(lab);
        free(ll);
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    if (!rc && t->total == 0)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no questions", path);
    tbuf_free(&q);
    jsonl_close(&r);
    return rc;
}
