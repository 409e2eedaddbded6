/* harness/tasks/user_gen.c — a generation task from a JSON spec (--task-file), scored as lm-eval
 * scores generate_until tasks:
 *   {"task": "my_gen", "output_type": "generate_until",
 *    "data": "my_gen.jsonl",                  (JSONL under --data DIR; each row has "query" or
 *                                              whatever "prompt" names, "reference" (a string) or
 *                                              "references" (a list), optional "label" and
 *                                              "schema" (an object, or its JSON text))
 *    "prompt": "Q: {query}\nA:",              ({field} substitution as user.c; {{ }} literal)
 *    "target": "{answer}",                    (optional: the reference as a template instead of
 *                                              "reference"/"references")
 *    "system_prompt": "You are terse.",       (optional; --system-prompt replaces it)
 *    "until": ["\n\n"], "max_gen_toks": 64,   (stop strings, max new tokens; default [] and 256)
 *    "num_fewshot": 0, "fewshot_data": "train.jsonl",   (optional: examples drawn from it with
 *                                              lm-eval's sampler: prompt + " " + target + "\n\n")
 *    "filter_list": [{"name": "answer", "filter": [
 *        {"function": "regex", "regex_pattern": "(\\d+)", "group_select": 0, "fallback":
 * "[invalid]"},
 *        {"function": "first_line"}, {"function": "strip"}, {"function": "lowercase"},
 *        {"function": "label"}, {"function": "take_first"}]}],   (default: one "none" filter)
 *    "metric_list": ["exact_match", {"metric": "exact_match", "ignore_case": true,
 *        "ignore_punctuation": false, "ignore_numbers": false, "regexes_to_ignore": [","]},
 *        "f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL", {"metric": "rougeLsum",
 *        "use_stemmer": true}, "label_accuracy", "json_valid", "json_schema", "length",
 *        "latency"],
 *    "labels": ["positive", "negative"],      (the label set: "label" filter, label_accuracy)
 *    "schema": {"required": {"name": "string"}}}  (json_schema's schema; a row's "schema" wins)
 * Metrics per sample: exact_match and f1 take the best reference; rouge* the best F-measure;
 * bleu and chrf are corpus scores (every reference a stream) with bootstrap 95% intervals;
 * label_accuracy adds the extraction rate and a classification report; length and latency are
 * distributions (mean, p50, p95) of the raw generation. gsm8k is this format (gsm8k.c). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/eval_gen.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

static const char *spec_str(const cJSON *spec, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The references of one row: "target" rendered, else "references" (a list of strings) or
 * "reference" (a string). */
static int row_refs(const jsonl_reader *r, const cJSON *spec, const cJSON *row, const char *where,
                    tbuf *tmp, char ***refs, size_t **lens, size_t *n, assay_error *err) {
    const char  *target = spec_str(spec, "target");
    const char **src    = NULL;
    size_t      *sl = NULL, ns = 0;
    int          rc;
    *n = 0;
    if (target) {
        if ((rc = task_render_template(tmp, target, row, where, "target", err)))
            return rc;
        src = malloc(sizeof *src);
        sl  = malloc(sizeof *sl);
        if (!src || !sl) {
            free(src);
            free(sl);
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        }
        src[0] = tmp->s ? tmp->s : "";
        sl[0]  = tmp->n;
        ns     = 1;
    } else if (cJSON_GetObjectItemCaseSensitive(row, "references")) {
        if ((rc = jsonl_get_strings(r, row, "references", &src, &sl, &ns, err)))
            return rc;
        if (ns == 0) {
            free(src);
            free(sl);
            return assay_fail(err, ASSAY_EINVAL, "%s: \"references\" is an empty list", where);
        }
    } else {
        const char *s;
        size_t      len;
        if (!cJSON_GetObjectItemCaseSensitive(row, "reference"))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: the row needs \"reference\" (a string) or \"references\" (a "
                              "list of strings)",
                              where);
        if ((rc = jsonl_get_string(r, row, "reference", 1, &s, &len, err)))
            return rc;
        src = malloc(sizeof *src);
        sl  = malloc(sizeof *sl);
        if (!src || !sl) {
            free(src);
            free(sl);
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        }
        src[0] = s;
        sl[0]  = len;
        ns     = 1;
    }
    *refs = calloc(ns, sizeof **refs);
    *lens = calloc(ns, sizeof **lens);
    rc    = *refs && *lens ? ASSAY_OK : assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < ns; i++) {
        if (!((*refs)[i] = malloc(sl[i] + 1))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            break;
        }
        memcpy((*refs)[i], src[i], sl[i]);
        (*refs)[i][sl[i]] = '\0';
        (*lens)[i]        = sl[i];
        *n                = i + 1;
    }
    free(src);
    free(sl);
    return rc;
}

/* A row's "schema": an object, or a string holding JSON; checked here so a bad one names its
 * row. */
static int row_schema(const cJSON *row, const char *where, char **out, size_t *out_len,
                      assay_error *err) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(row, "schema");
    *out           = NULL;
    if (!s || cJSON_IsNull(s))
        return ASSAY_OK;
    char *text = cJSON_IsString(s) ? strdup(s->valuestring) : cJSON_PrintUnformatted(s);
    if (!text)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    char        what[2400];
    flt_schema *fs;
    snprintf(what, sizeof what, "%s: \"schema\"", where);
    if (!(fs = flt_schema_parse(text, strlen(text), what, err))) {
        free(text);
        return err->code ? err->code : ASSAY_EINVAL;
    }
    flt_schema_free(fs);
    *out     = text;
    *out_len = strlen(text);
    return ASSAY_OK;
}

int task_gen_load(eval_task *t, const char *spec_text, size_t size, const char *spec_path,
                  int builtin, const eval_task_opts *o, assay_error *err) {
    char         data[2200];
    cJSON       *spec = NULL, *obj = NULL;
    jsonl_reader r   = {0};
    tbuf         ctx = {0}, tmp = {0};
    int          rc   = ASSAY_OK, got;
    char       **refs = NULL;
    size_t      *lens = NULL, n_refs = 0;
    if (!(spec = cJSON_ParseWithLength(spec_text, size)) || !cJSON_IsObject(spec)) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: not a JSON object", spec_path);
        goto done;
    }
    const char *name = spec_str(spec, "task"), *file = spec_str(spec, "data");
    const char *tpl = spec_str(spec, "prompt"), *fs_file = spec_str(spec, "fewshot_data");
    const char *missing = !name ? "task" : !file ? "data" : !tpl ? "prompt" : NULL;
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
    if (!o->split) { /* the evaluated split: the spec's generation settings */
        gen_spec *g = NULL;
        if ((rc = gen_spec_parse(spec, spec_path, &g, err)))
            goto done;
        t->gen = g;
        if (!(g->text = malloc(size + 1)) || !(g->path = strdup(spec_path))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(g->text, spec_text, size);
        g->text[size] = '\0';
        g->text_len   = size;
        g->builtin    = builtin;
        if (!builtin) {
            const cJSON   *ver = cJSON_GetObjectItemCaseSensitive(spec, "version");
            eval_task_def *def = calloc(1, sizeof *def + strlen(name) + 1);
            if (!def) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                goto done;
            }
            strcpy((char *)(def + 1), name);
            def->name     = (const char *)(def + 1);
            def->paths    = "";
            def->generate = 1;
            def->version  = cJSON_IsNumber(ver) ? ver->valuedouble : 1.0;
            t->def        = def;
            t->own_def    = def;
        }
    } else if (!fs_file) {
        rc = assay_fail(err, ASSAY_EINVAL,
                        "%s: few-shot examples need \"fewshot_data\" (a JSONL file under --data)",
                        spec_path);
        goto done;
    }
    snprintf(data, sizeof data, "%s/%s", o->dir, o->split ? fs_file : file);
    snprintf(t->layout, sizeof t->layout, "%s %.40s over %.60s",
             builtin ? "generate_until" : "user generation spec", spec_path,
             o->split ? fs_file : file);
    if (!path_exists(data)) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: %s does not exist", name, data);
        goto done;
    }
    if ((!builtin && !o->split && (rc = eval_task_add_file(t, spec_path, err))) ||
        (rc = eval_task_add_file(t, data, err)) || (rc = jsonl_open(&r, data, err)))
        goto done;
    /* the labels (for the rows' "label") come from the evaluated task's spec */
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(spec, "labels");
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        char where[2300];
        snprintf(where, sizeof where, "%s:%zu", data, r.line);
        t->total++;
        n_refs = 0;
        if (o->limit > 0 && (int64_t)eval_task_count(t) >= o->limit && !o->split)
            goto next;
        if ((rc = task_render_template(&ctx, tpl, obj, where, "prompt", err)) ||
            (rc = row_refs(&r, spec, obj, where, &tmp, &refs, &lens, &n_refs, err)))
            goto next;
        int          label = -1;
        const cJSON *lv    = cJSON_GetObjectItemCaseSensitive(obj, "label");
        if (cJSON_IsArray(labels) && lv && !o->split) {
            int k = 0;
            if (!cJSON_IsString(lv)) {
                rc = assay_fail(err, ASSAY_EFORMAT, "%s: \"label\" is not a string", where);
                goto next;
            }
            for (const cJSON *l = labels->child; l && label < 0; l = l->next, k++)
                if (cJSON_IsString(l) && !strcmp(l->valuestring, lv->valuestring))
                    label = k;
            if (label < 0) {
                rc = assay_fail(err, ASSAY_EINVAL,
                                "%s: label '%.40s' is not one of the spec's \"labels\"", where,
                                lv->valuestring);
                goto next;
            }
        }
        char  *schema = NULL;
        size_t sl     = 0;
        if (!o->split && (rc = row_schema(obj, where, &schema, &sl, err)))
            goto next;
        rc = eval_task_add(t, ctx.s ? ctx.s : "", ctx.n, (const char *const *)refs, lens,
                           (int)n_refs, 0, 0, eval_task_count(t), where, err);
        if (rc) {
            free(schema);
            goto next;
        }
        t->docs[t->n - 1].label      = label;
        t->docs[t->n - 1].schema     = schema;
        t->docs[t->n - 1].schema_len = sl;
    next:
        for (size_t i = 0; refs && i < n_refs; i++)
            free(refs[i]);
        free(refs);
        free(lens);
        refs = NULL;
        lens = NULL;
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    if (!rc && t->gen)
        t->num_fewshot = t->gen->num_fewshot;
done:
    jsonl_close(&r);
    tbuf_free(&ctx);
    tbuf_free(&tmp);
    cJSON_Delete(spec);
    return rc;
}
