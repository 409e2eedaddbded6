#include "harness/csv.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void csv_free(csv_table *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->rows[i].f);
        free(t->rows[i].len);
    }
    free(t->rows);
    free(t->buf);
    memset(t, 0, sizeof *t);
}

static int row_push_field(csv_row *r, size_t *cap, char *f, size_t len) {
    if (r->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **nf = realloc(r->f, nc * sizeof *nf);
        if (!nf)
            return -1;
        r->f       = nf;
        size_t *nl = realloc(r->len, nc * sizeof *nl);
        if (!nl)
            return -1;
        r->len = nl;
        *cap   = nc;
    }
    r->f[r->n]     = f;
    r->len[r->n++] = len;
    return 0;
}

int csv_read(const char *path, csv_table *t, assay_error *err) {
    size_t size = 0;
    memset(t, 0, sizeof *t);
    int rc = file_read_capped(path, CSV_FILE_MAX, &t->buf, &size, err);
    if (rc)
        return rc;
    if (memchr(t->buf, 0, size)) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: holds a NUL byte (not a text CSV file)", path);
        goto fail;
    }
    char  *p = t->buf, *end = t->buf + size, *w;
    size_t line = 1;
    if (size >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3))
        p += 3; /* a UTF-8 BOM, as Excel writes */
    while (p < end) {
        if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) { /* blank line */
            p += *p == '\r' ? 2 : 1;
            line++;
            continue;
        }
        csv_row r   = {.line = line};
        size_t  cap = 0;
        for (;;) { /* one field per iteration */
            char *start = w = p;
            if (p < end && *p == '"') {
                p++;
                for (;;) {
                    if (p >= end) {
                        free(r.f);
                        free(r.len);
                        rc = assay_fail(err, ASSAY_EFORMAT,
                                        "%s:%zu: a quoted field is not closed before the end of "
                                        "the file",
                                        path, r.line);
                        goto fail;
                    }
                    if (*p == '"') {
                        if (p + 1 < end && p[1] == '"') {
                            *w++ = '"';
                            p += 2;
                            continue;
                        }
                        p++;
                        break;
                    }
                    if (*p == '\n')
                        line++;
                    *w++ = *p++;
                }
                if (p < end && *p != ',' && *p != '\n' && *p != '\r') {
                    free(r.f);
                    free(r.len);
                    rc = assay_fail(err, ASSAY_EFORMAT,
                                    "%s:%zu: text after the closing quote of field %zu (expected "
                                    "a comma or the end of the line)",
                                    path, line, r.n + 1);
                    goto fail;
                }
            } else {
                while (p < end && *p != ',' && *p != '\n' && *p != '\r')
                    *w++ = *p++;
            }
            char   sep = p < end ? *p : '\n';
            size_t len = (size_t)(w - start);
            *w         = '\0'; /* w <= p: the terminator overwrites consumed bytes only */
            if (row_push_field(&r, &cap, start, len)) {
                free(r.f);
                free(r.len);
                rc = assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", path, line);
                goto fail;
            }
            if (p < end)
                p++;
            if (sep == '\r' && p < end && *p == '\n')
                p++;
            if (sep != ',') {
                line++;
                break;
            }
        }
        if (t->n > 0 && r.n != t->rows[0].n) {
            size_t got = r.n;
            free(r.f);
            free(r.len);
            rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: %zu fields, the header has %zu", path,
                            r.line, got, t->rows[0].n);
            goto fail;
        }
        if (t->n == t->cap) {
            size_t   nc = t->cap ? t->cap * 2 : 64;
            csv_row *nr = realloc(t->rows, nc * sizeof *nr);
            if (!nr) {
                free(r.f);
                free(r.len);
                rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            t->rows = nr;
            t->cap  = nc;
        }
        t->rows[t->n++] = r;
    }
    return ASSAY_OK;
fail:
    csv_free(t);
    return rc;
}
