/* harness/tasks/user.c — a user's multiple-choice task from a small JSON spec (--task-file):
 *   {"task": "my_task", "data": "my_task.jsonl",            (relative to --data DIR)
 *    "context": "Question: {question}\nAnswer:",            ({field} substitution; {{ and }} are
 *                                                            literal braces)
 *    "choices": "options"  or  ["{a}", "{b}"],              (a field holding a list of strings,
 *                                                            dotted for nesting, or templates)
 *    "gold_index": "label"  or  "gold_text": "answer"  or   (an index 0.. (number or digits; a
 *                                                            number here: that index for all), the
 *    "gold_label": "answerKey", "labels": "choices.label"   text of the right choice, or a key
 *                                                            found in a label list, lstripped)
 *    "target_delimiter": " ",                               (optional, lm-eval's default)
 *    "metrics": ["acc", "acc_norm"]}                        (acc always; acc_norm and
 *                                                            acc_mutual_info optional)
 * Requests are lm-eval's: (context, target_delimiter + choice). Built-in tasks whose lm-eval
 * YAML is a plain template (piqa, boolq, openbookqa) are specs too (tasks.c). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

/* obj's value at a dotted path ("choices.text"), or NULL. */
static const cJSON *get_path(const cJSON *obj, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = cJSON_GetObjectItemCaseSensitive(v, k);
    return v;
}

int task_render_template(tbuf *out, const char *tpl, const cJSON *doc, const char *where,
                         const char *key, assay_error *err) {
    out->n = 0;
    for (const char *p = tpl; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            if (tbuf_put(out, p, 1))
                goto oom;
            p += 2;
            continue;
        }
        if (*p != '{') {
            if (tbuf_put(out, p++, 1))
                goto oom;
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end || end - p - 1 >= 255)
            return assay_fail(err, ASSAY_EINVAL, "%s: the spec's \"%s\" has an unclosed '{'", where,
                              key);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
        const cJSON *v = get_path(doc, name);
        if (cJSON_IsString(v)) {
            if (tbuf_puts(out, v->valuestring))
                goto oom;
        } else if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
                   fabs(v->valuedouble) < 1e15) {
            char num[32];
            snprintf(num, sizeof num, "%.0f", v->valuedouble);
            if (tbuf_puts(out, num))
                goto oom;
        } else {
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: field '%s' (named in the spec's \"%s\") is %s", where, name, key,
                              v ? "not a string or whole number" : "missing");
        }
        p = end + 1;
    }
    return ASSAY_OK;
oom:
    return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
}

static const char *spec_str(const cJSON *spec, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Loads the documents a spec describes. spec_path names the spec in messages (and is hashed
 * when it is a file); a built-in task passes its def (t->def set, own_def stays NULL). */
static int spec_load(eval_task *t, const char *spec_text, size_t size, const char *spec_path,
                     int builtin, const eval_task_opts *o, assay_error *err) {
    char         data[2200];
    cJSON       *spec = NULL, *obj = NULL;
    jsonl_reader r   = {0};
    tbuf         ctx = {0}, ch = {0};
    int          rc = ASSAY_OK, got;
    char       **cs = NULL;
    size_t      *cl = NULL, n_cs = 0;
    if (!(spec = cJSON_ParseWithLength(spec_text, size)) || !cJSON_IsObject(spec)) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: not a JSON object", spec_path);
        goto done;
    }
    const char  *name = spec_str(spec, "task"), *file = spec_str(spec, "data");
    const char  *gl = spec_str(spec, "gold_label"), *labels = spec_str(spec, "labels");
    const cJSON *ver        = cJSON_GetObjectItemCaseSensitive(spec, "version");
    const cJSON *gic        = cJSON_GetObjectItemCaseSensitive(spec, "gold_index");
    int          gold_const = cJSON_IsNumber(gic) && gic->valuedouble >= 0 && gic->valuedouble < 1e6
                                  ? (int)gic->valuedouble
                                  : -1; /* "gold_index": 0 — the same index for every row */
    const char  *tpl = spec_str(spec, "context"), *gi = spec_str(spec, "gold_index");
    const char  *gt = spec_str(spec, "gold_text"), *delim = spec_str(spec, "target_delimiter");
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(spec, "choices");
    const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(spec, "metrics");
    const char  *missing = !name      ? "task"
                           : !file    ? "data"
                           : !tpl     ? "context"
                           : !choices ? "choices"
                           : !gi && !gt && !gl && gold_const < 0
                               ? "gold_index, gold_text or gold_label"
                           : gl && !labels ? "labels (with gold_label)"
                                           : NULL;
    if (missing) {
        rc =
            assay_fail(err, ASSAY_EINVAL, "%s: the spec needs a string \"%s\"", spec_path, missing);
        goto done;
    }
    if (strlen(name) > 60 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(name)) {
        rc = assay_fail(err, ASSAY_EINVAL,
                        "%s: \"task\" must be 1-60 characters of a-z, 0-9, '_' and '-'", spec_path);
        goto done;
    }
    if (!cJSON_IsString(choices) && !cJSON_IsArray(choices)) {
        rc =
            assay_fail(err, ASSAY_EINVAL,
                       "%s: \"choices\" must name a field (a string) or list templates", spec_path);
        goto done;
    }
    int acc_norm = 0, mutual_info = 0;
    for (const cJSON *mv = metrics ? metrics->child : NULL; mv; mv = mv->next) {
        if (cJSON_IsString(mv) && !strcmp(mv->valuestring, "acc_norm"))
            acc_norm = 1;
        else if (cJSON_IsString(mv) && !strcmp(mv->valuestring, "acc_mutual_info"))
            mutual_info = 1;
        else if (!cJSON_IsString(mv) || strcmp(mv->valuestring, "acc")) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "%s: unknown metric in \"metrics\" (known: acc, "
                            "acc_norm, acc_mutual_info)",
                            spec_path);
            goto done;
        }
    }
    if (!builtin && o->num_fewshot > 0) {
        rc = assay_fail(err, ASSAY_EUNSUPPORTED, "%s: few-shot user tasks are not implemented yet",
                        name);
        goto done;
    }
    if (!builtin) {
        eval_task_def *def = calloc(1, sizeof *def + strlen(name) + 1);
        if (!def) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        strcpy((char *)(def + 1), name);
        def->name        = (const char *)(def + 1);
        def->paths       = "";
        def->acc_norm    = acc_norm;
        def->mutual_info = mutual_info;
        def->version     = cJSON_IsNumber(ver) ? ver->valuedouble : 1.0;
        t->def           = def;
        t->own_def       = def;
    }
    snprintf(t->delim, sizeof t->delim, "%s", delim ? delim : " ");
    if (o->split) { /* the few-shot pool: <split>.jsonl next to the evaluated file */
        const char *slash = strrchr(file, '/');
        snprintf(data, sizeof data, "%s/%.*s%s.jsonl", o->dir, slash ? (int)(slash - file + 1) : 0,
                 file, o->split);
    } else {
        snprintf(data, sizeof data, "%s/%s", o->dir, file);
    }
    if (!builtin)
        snprintf(t->layout, sizeof t->layout, "user spec %.60s over %.80s", spec_path, file);
    else
        snprintf(t->layout, sizeof t->layout, "jsonl: %.100s", file);
    if (!path_exists(data)) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: %s does not exist", name, data);
        goto done;
    }
    if ((!builtin && (rc = eval_task_add_file(t, spec_path, err))) ||
        (rc = eval_task_add_file(t, data, err)) || (rc = jsonl_open(&r, data, err)))
        goto done;
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        char where[2300];
        snprintf(where, sizeof where, "%s:%zu", data, r.line);
        t->total++;
        n_cs = 0;
        if (o->limit > 0 && (int64_t)eval_task_count(t) >= o->limit)
            goto next;
        if ((rc = task_render_template(&ctx, tpl, obj, where, "context", err)))
            goto next;
        /* the choices, copied (render reuses its buffer) */
        const cJSON *list = cJSON_IsString(choices) ? get_path(obj, choices->valuestring) : choices;
        if (!cJSON_IsArray(list)) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' (the spec's \"choices\") is %s",
                            where, choices->valuestring, list ? "not a list" : "missing");
            goto next;
        }
        size_t n_list = (size_t)cJSON_GetArraySize(list);
        cs            = calloc(n_list ? n_list : 1, sizeof *cs);
        cl            = calloc(n_list ? n_list : 1, sizeof *cl);
        if (!cs || !cl) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto next;
        }
        for (const cJSON *c = list->child; c; c = c->next) {
            if (!cJSON_IsString(c)) {
                rc = assay_fail(err, ASSAY_EFORMAT, "%s: choice %zu is not a string", where,
                                n_cs + 1);
                goto next;
            }
            if (cJSON_IsArray(choices)) {
                if ((rc = task_render_template(&ch, c->valuestring, obj, where, "choices", err)))
                    goto next;
            } else {
                ch.n = 0;
                if (tbuf_puts(&ch, c->valuestring)) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                    goto next;
                }
            }
            if (!(cs[n_cs] = strdup(ch.s ? ch.s : ""))) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                goto next;
            }
            cl[n_cs++] = ch.n;
        }
        if (n_cs == 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: the choice list is empty", where);
            goto next;
        }
        int gold = -1;
        if (gold_const >= 0) {
            gold = gold_const;
        } else if (gi) {
            const cJSON *g = get_path(obj, gi);
            if (cJSON_IsNumber(g) && g->valuedouble == floor(g->valuedouble) &&
                fabs(g->valuedouble) < 1e9)
                gold = (int)g->valuedouble;
            else if (cJSON_IsString(g) && g->valuestring[0] &&
                     strspn(g->valuestring, "0123456789") == strlen(g->valuestring) &&
                     strlen(g->valuestring) < 9)
                gold = atoi(g->valuestring);
            else {
                rc = assay_fail(err, ASSAY_EFORMAT,
                                "%s: field '%s' (the spec's \"gold_index\") is %s", where, gi,
                                g ? "not an index" : "missing");
                goto next;
            }
        } else if (gl) {
            /* lm-eval's choices.label.index(answerKey.lstrip()) */
            const cJSON *g = get_path(obj, gl), *labs = get_path(obj, labels);
            if (!cJSON_IsString(g) || !cJSON_IsArray(labs)) {
                rc = assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' is %s", where,
                                !cJSON_IsString(g) ? gl : labels,
                                (!cJSON_IsString(g) ? g : labs) ? "of the wrong type" : "missing");
                goto next;
            }
            size_t off, len;
            py_strip(g->valuestring, strlen(g->valuestring), &off, &len);
            int k = 0;
            for (const cJSON *l = labs->child; l && gold < 0; l = l->next, k++)
                if (cJSON_IsString(l) && strlen(l->valuestring) == len &&
                    !memcmp(l->valuestring, g->valuestring + off, len))
                    gold = k;
            if (gold < 0) {
                rc = assay_fail(err, ASSAY_EINVAL, "%s: %s '%.20s' is not one of '%s'", where, gl,
                                g->valuestring, labels);
                goto next;
            }
        } else {
            const cJSON *g = get_path(obj, gt);
            if (!cJSON_IsString(g)) {
                rc = assay_fail(err, ASSAY_EFORMAT,
                                "%s: field '%s' (the spec's \"gold_text\") is %s", where, gt,
                                g ? "not a string" : "missing");
                goto next;
            }
            for (size_t i = 0; i < n_cs && gold < 0; i++)
                if (!strcmp(cs[i], g->valuestring))
                    gold = (int)i;
            if (gold < 0) {
                rc =
                    assay_fail(err, ASSAY_EINVAL, "%s: gold text '%.40s' is not one of the choices",
                               where, g->valuestring);
                goto next;
            }
        }
        rc = eval_task_add(t, ctx.s, ctx.n, (const char *const *)cs, cl, (int)n_cs, gold, 0,
                           eval_task_count(t), where, err);
    next:
        for (size_t i = 0; cs && i < n_cs; i++)
            free(cs[i]);
        free(cs);
        free(cl);
        cs = NULL;
        cl = NULL;
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
done:
    jsonl_close(&r);
    tbuf_free(&ctx);
    tbuf_free(&ch);
    cJSON_Delete(spec);
    return rc;
}

int task_user_load(eval_task *t, const char *spec_path, const eval_task_opts *o, assay_error *err) {
    char  *text = NULL;
    size_t size = 0;
    int    rc   = file_read_capped(spec_path, (size_t)1 << 20, &text, &size, err);
    if (!rc) {
        cJSON       *probe = cJSON_ParseWithLength(text, size);
        const cJSON *ot    = cJSON_GetObjectItemCaseSensitive(probe, "output_type");
        int          gen   = cJSON_IsString(ot) && !strcmp(ot->valuestring, "generate_until");
        cJSON_Delete(probe);
        rc = gen ? task_gen_load(t, text, size, spec_path, 0, o, err)
                 : spec_load(t, text, size, spec_path, 0, o, err);
    }
    free(text);
    return rc;
}

int task_spec_builtin_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    return spec_load(t, t->def->spec, strlen(t->def->spec), t->def->name, 1, o, err);
}
