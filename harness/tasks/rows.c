/* harness/tasks/rows.c — the loop every JSONL task loader shares (see tasks.h task_jsonl_each). */
#include <cJSON.h>
#include <stdio.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

int task_jsonl_each(eval_task *t, const eval_task_opts *o, const char *path, const char *source,
                    const char *shape, const char *noun, task_row_fn fn, void *user,
                    assay_error *err) {
    jsonl_reader r;
    cJSON       *obj = NULL;
    int          rc, got;
    if (!path_exists(path))
        return source ? assay_fail(err, ASSAY_EINVAL, "%s: %s does not exist (%s)", t->def->name,
                                   path, source)
                      : assay_fail(err, ASSAY_EINVAL, "%s: %s does not exist", t->def->name, path);
    if ((rc = eval_task_add_file(t, path, err)) || (rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = shape;
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        char where[1200];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        t->total++;
        /* rows past --limit are counted (results report the file's size) but not parsed */
        if (!(o->limit > 0 && (int64_t)eval_task_count(t) >= o->limit)) {
            task_row row = {&r, obj, where};
            rc           = fn(t, &row, user, err);
        }
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    if (!rc && t->total == 0)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no %s", path, noun);
    jsonl_close(&r);
    return rc;
}
