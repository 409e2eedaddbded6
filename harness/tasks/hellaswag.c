/* harness/tasks/hellaswag.c — HellaSwag as lm-eval's hellaswag task renders it (utils.py):
 *   query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
 *   choices = preprocess(ending) for each ending, gold = int(label), zero-shot, acc + acc_norm;
 *   preprocess = strip, " [title]" -> ". ", drop every "[...]" (non-greedy, within a line),
 *   "  " -> " " (one pass).
 * The llama.cpp six-line layout keeps only activity_label + ": " + ctx (= ctx_a + " " + ctx_b),
 * so ctx_b cannot be capitalized there: its prompts differ from lm-eval's wherever ctx_b starts
 * with a lower-case letter, and results.json says so. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

/* re.sub(r"\[.*?\]", "", s): '.' does not match a newline. */
static int drop_brackets(tbuf *out, const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        if (s[i] == '[') {
            size_t j = i + 1;
            while (j < len && s[j] != ']' && s[j] != '\n')
                j++;
            if (j < len && s[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        if (tbuf_put(out, s + i, 1))
            return -1;
        i++;
    }
    return tbuf_put(out, "", 0);
}

int hellaswag_preprocess(tbuf *out, const char *s, size_t len) {
    tbuf   a = {0}, b = {0};
    size_t off, n;
    int    rc = -1;
    py_strip(s, len, &off, &n);
    out->n = 0;
    if (!py_replace(&a, s + off, n, " [title]", ". ") && !drop_brackets(&b, a.s, a.n) &&
        !py_replace(out, b.s, b.n, "  ", " "))
        rc = 0;
    tbuf_free(&a);
    tbuf_free(&b);
    return rc;
}

static int add_doc(eval_task *t, const char *query, size_t ql, const char *const *endings,
                   const size_t *el, size_t n_end, int gold, const char *where, assay_error *err) {
    tbuf q = {0}, ch[8] = {{0}};
    int  rc;
    if (n_end == 0 || n_end > 8) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: %zu endings (expected 1 to 8%s)", where, n_end,
                        n_end ? "" : "; the choice list is empty");
        goto done;
    }
    const char *cs[8];
    size_t      cl[8];
    if (hellaswag_preprocess(&q, query, ql))
        goto oom;
    for (size_t i = 0; i < n_end; i++) {
        if (hellaswag_preprocess(&ch[i], endings[i], el[i]))
            goto oom;
        cs[i] = ch[i].s;
        cl[i] = ch[i].n;
    }
    rc = eval_task_add(t, q.s, q.n, cs, cl, (int)n_end, gold, 0, eval_task_count(t), where, err);
    goto done;
oom:
    rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
done:
    tbuf_free(&q);
    for (int i = 0; i < 8; i++)
        tbuf_free(&ch[i]);
    return rc;
}

/* One line of f without its '\n' (and a '\r' before it) into b: 1, 0 at the end of the file, or a
 * status. Read a line at a time so the file is never held whole; a line is capped at 1 MiB. */
static int six_next(FILE *f, tbuf *b, const char *path, size_t lineno, assay_error *err) {
    int c, any = 0;
    b->n = 0;
    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        char ch = (char)c;
        any     = 1;
        if (b->n >= ((size_t)1 << 20))
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: line longer than 1 MiB", path, lineno);
        if (tbuf_put(b, &ch, 1))
            return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", path, lineno);
    }
    if (ferror(f))
        return assay_fail(err, ASSAY_EIO, "%s:%zu: read failed", path, lineno);
    if (c == EOF && !any)
        return 0;
    if (b->n && b->s[b->n - 1] == '\r')
        b->s[--b->n] = '\0';
    return tbuf_put(b, "", 0) ? assay_fail(err, ASSAY_ENOMEM, "out of memory") : 1;
}

/* Six lines per item: "activity_label: ctx", the gold index, four endings. */
static int read_six_line(eval_task *t, const char *path, const eval_task_opts *o,
                         assay_error *err) {
    tbuf   b[6]   = {{0}};
    size_t lineno = 0, k = 0;
    int    rc = ASSAY_OK, got;
    int    fd = file_open_regular(path, NULL, err);
    if (fd < 0)
        return err && err->code ? err->code : ASSAY_EIO;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return assay_fail(err, ASSAY_EIO, "%s: cannot open", path);
    }
    while ((got = six_next(f, &b[k], path, lineno + 1, err)) == 1) {
        lineno++;
        if (++k < 6)
            continue;
        k = 0;
        t->total++;
        char where[1200];
        snprintf(where, sizeof where, "%s:%zu", path, lineno - 5);
        if (o->limit > 0 && (int64_t)eval_task_count(t) >= o->limit)
            continue;
        if (!(b[1].n == 1 && b[1].s[0] >= '0' && b[1].s[0] <= '9')) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s:%zu: expected the gold index (a digit 0-3) on the item's second "
                            "line, found '%.*s'",
                            path, lineno - 4, (int)(b[1].n > 40 ? 40 : b[1].n), b[1].s);
            goto done;
        }
        const char *line[4];
        size_t      len[4];
        for (int i = 0; i < 4; i++)
            line[i] = b[2 + i].s, len[i] = b[2 + i].n;
        if ((rc = add_doc(t, b[0].s, b[0].n, line, len, 4, b[1].s[0] - '0', where, err)))
            goto done;
    }
    if (got != 0) { /* six_next's statuses are never 1 (ASSAY_EINVAL) */
        rc = got;
        goto done;
    }
    if (k != 0) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s:%zu: the file ends inside an item (%zu of its 6 lines: context, gold "
                        "index, 4 endings)",
                        path, lineno, k);
        goto done;
    }
    if (t->total == 0)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no items", path);
done:
    fclose(f);
    for (int i = 0; i < 6; i++)
        tbuf_free(&b[i]);
    return rc;
}

/* Rowan/hellaswag rows: activity_label, ctx_a, ctx_b, endings (4 strings), label ("0".."3"). */
static int read_jsonl(eval_task *t, const char *path, const eval_task_opts *o, assay_error *err) {
    jsonl_reader r;
    cJSON       *obj = NULL;
    tbuf         q = {0}, cap = {0};
    int          rc = jsonl_open(&r, path, err), got;
    if (rc)
        return rc;
    r.shape = "{\"activity_label\": \"...\", \"ctx_a\": \"...\", \"ctx_b\": \"...\", \"endings\": "
              "[...], \"label\": \"0\"}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *al, *ca, *cb, **en = NULL, *ls = NULL;
        size_t      all, cal, cbl, *enl = NULL, n_en = 0, lsl = 0;
        char        where[1200];
        int64_t     label = -1;
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        t->total++;
        if (o->limit > 0 && (int64_t)eval_task_count(t) >= o->limit)
            goto next;
        if ((rc = jsonl_get_string(&r, obj, "activity_label", 1, &al, &all, err)) ||
            (rc = jsonl_get_string(&r, obj, "ctx_a", 1, &ca, &cal, err)) ||
            (rc = jsonl_get_string(&r, obj, "ctx_b", 1, &cb, &cbl, err)) ||
            (rc = jsonl_get_strings(&r, obj, "endings", &en, &enl, &n_en, err)))
            goto next;
        const cJSON *lv = cJSON_GetObjectItemCaseSensitive(obj, "label");
        if (cJSON_IsNumber(lv))
            label =
                lv->valuedouble == (double)(int64_t)lv->valuedouble ? (int64_t)lv->valuedouble : -1;
        else if ((rc = jsonl_get_string(&r, obj, "label", 1, &ls, &lsl, err)))
            goto next;
        else if (lsl >= 1 && lsl <= 3 && strspn(ls, "0123456789") == lsl)
            label = atoi(ls);
        else {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: field 'label' must be an index (\"0\".. or 0..)", where);
            goto next;
        }
        q.n = cap.n = 0;
        if (tbuf_put(&q, al, all) || tbuf_puts(&q, ": ") || tbuf_put(&q, ca, cal) ||
            tbuf_puts(&q, " ") || py_capitalize(&cap, cb, cbl) || tbuf_put(&q, cap.s, cap.n)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
            goto next;
        }
        if (label < 0 || label >= (int64_t)n_en) {
            rc = n_en == 0 ? assay_fail(err, ASSAY_EINVAL, "%s: the choice list is empty", where)
                           : assay_fail(err, ASSAY_EINVAL,
                                        "%s: gold index %lld is out of range (%zu choices)", where,
                                        (long long)label, n_en);
            goto next;
        }
        rc = add_doc(t, q.s, q.n, en, enl, n_en, (int)label, where, err);
    next:
        free(en);
        free(enl);
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    tbuf_free(&q);
    tbuf_free(&cap);
    jsonl_close(&r);
    return rc;
}

int task_hellaswag_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char six[1100], js[1100];
    t->num_fewshot = 0;
    snprintf(six, sizeof six, "%s/hellaswag_val_full.txt", o->dir);
    snprintf(js, sizeof js, "%s/hellaswag/%s.jsonl", o->dir, o->split ? o->split : "validation");
    int rc;
    if (o->split) { /* the few-shot pool: Rowan/hellaswag's train split as JSON Lines */
        if (!path_exists(js))
            return assay_fail(err, ASSAY_EINVAL,
                              "hellaswag: --num-fewshot needs %s (Rowan/hellaswag %s split)", js,
                              o->split);
        snprintf(t->layout, sizeof t->layout, "jsonl: hellaswag/%s.jsonl (Rowan/hellaswag)",
                 o->split);
        if ((rc = eval_task_add_file(t, js, err)))
            return rc;
        return read_jsonl(t, js, o, err);
    }
    if (path_exists(js)) {
        snprintf(t->layout, sizeof t->layout,
                 "jsonl: hellaswag/validation.jsonl (Rowan/hellaswag)");
        if ((rc = eval_task_add_file(t, js, err)))
            return rc;
        return read_jsonl(t, js, o, err);
    }
    if (path_exists(six)) {
        snprintf(t->layout, sizeof t->layout,
                 "llama.cpp six-line: hellaswag_val_full.txt (ctx_b is not capitalized: the "
                 "layout lacks the ctx_a/ctx_b split)");
        if ((rc = eval_task_add_file(t, six, err)))
            return rc;
        return read_six_line(t, six, o, err);
    }
    return assay_fail(err, ASSAY_EINVAL,
                      "hellaswag: neither %s (jsonl layout) nor %s (llama.cpp six-line layout; "
                      "bunzip2 the .bz2) exists",
                      js, six);
}
