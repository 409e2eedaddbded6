#include "harness/jsonl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

#define NUL_MARK 0xFF /* stands for an escaped NUL inside parsed strings (see jsonl.h) */

int jsonl_open(jsonl_reader *r, const char *path, assay_error *err) {
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->line_max   = JSONL_LINE_MAX;
    r->values_max = JSONL_VALUES_MAX;
    int fd        = file_open_regular(path, NULL, err);
    if (fd < 0)
        return err && err->code ? err->code : ASSAY_EIO;
    r->fp = fdopen(fd, "rb");
    if (!r->fp) {
        int e = errno;
        close(fd);
        return assay_fail(err, ASSAY_EIO, "%s: cannot open: %s", path, strerror(e));
    }
    return ASSAY_OK;
}

void jsonl_close(jsonl_reader *r) {
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    free(r->buf);
    for (size_t i = 0; i < r->n_warned; i++)
        free(r->warned[i]);
    r->fp       = NULL;
    r->buf      = NULL;
    r->cap      = 0;
    r->n_warned = 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* Reads one line (without its '\n') into r->buf; 1 with *len, 0 at end of file, or a status.
 * Stops reading as soon as the line is over the cap. */
static int read_line(jsonl_reader *r, size_t *len, assay_error *err) {
    size_t n = 0;
    int    c;
    errno = 0;
    while ((c = getc_unlocked(r->fp)) != EOF && c != '\n') {
        if (n == r->line_max) {
            if (r->line_max >= (1u << 20))
                return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: line longer than %zu MiB", r->path,
                                  r->line + 1, r->line_max >> 20);
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: line longer than %zu bytes", r->path,
                              r->line + 1, r->line_max);
        }
        if (n + 1 >= r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 4096;
            char  *nb  = realloc(r->buf, cap);
            if (!nb)
                return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory (%zu bytes)", r->path,
                                  r->line + 1, cap);
            r->buf = nb;
            r->cap = cap;
        }
        r->buf[n++] = (char)c;
    }
    if (c == EOF && ferror(r->fp))
        return assay_fail(err, ASSAY_EIO, "%s:%zu: read error: %s", r->path, r->line + 1,
                          strerror(errno ? errno : EIO));
    if (c == EOF && n == 0)
        return 0;
    r->line++;
    *len = n;
    return 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid (overlong, surrogate, > U+10FFFF,
 * cut short). */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t        k;
    uint32_t      cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4, cp = c & 0x07;
    else
        return 0;
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return k;
}

/* Checks the line is UTF-8 and within the value/depth caps, and rewrites each \u0000 escape
 * inside a string to NUL_MARK (in place: the line only shrinks). *len is updated. */
static int prepare_line(jsonl_reader *r, size_t *len, assay_error *err) {
    unsigned char *b = (unsigned char *)r->buf;
    size_t         n = *len, o = 0, values = 1;
    int            in_str = 0, depth = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = b[i];
        if (c == 0)
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: line contains a NUL byte (column %zu)",
                              r->path, r->line, i + 1);
        if (c >= 0x80) {
            size_t k = utf8_seq_len(b + i, n - i);
            if (!k)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s:%zu: invalid UTF-8 at column %zu (JSON Lines are UTF-8)",
                                  r->path, r->line, i + 1);
            memmove(b + o, b + i, k);
            o += k;
            i += k;
            continue;
        }
        if (in_str) {
            if (c == '\\' && i + 1 < n) {
                if (i + 6 <= n && !memcmp(b + i + 1, "u0000", 5)) {
                    b[o++] = NUL_MARK;
                    i += 6;
                } else {
                    b[o++] = b[i++];
                    b[o++] = b[i++];
                }
                continue;
            }
            in_str = c != '"';
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            values++;
            if (++depth > JSONL_DEPTH_MAX)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s:%zu: JSON nested deeper than %d levels (column %zu)", r->path,
                                  r->line, JSONL_DEPTH_MAX, i + 1);
        } else if (c == ']' || c == '}') {
            depth--;
        } else if (c == ',' && ++values > r->values_max) {
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s:%zu: more than %zu JSON values on one line (column %zu)", r->path,
                              r->line, r->values_max, i + 1);
        }
        b[o++] = b[i++];
    }
    *len = o;
    return ASSAY_OK;
}

/* Column in the line as written, for an offset in the rewritten line (each NUL_MARK was six
 * bytes). */
static size_t source_column(const char *buf, size_t at) {
    size_t marks = 0;
    for (size_t i = 0; i < at; i++)
        marks += (unsigned char)buf[i] == NUL_MARK;
    return at + 5 * marks + 1;
}

/* Sets valueint = byte length of every string value (before NULs are restored in it). */
static void record_lengths(cJSON *item) {
    for (; item; item = item->next) {
        if (cJSON_IsString(item) && item->valuestring)
            item->valueint = (int)strlen(item->valuestring); /* < JSONL_LINE_MAX */
        if (item->child)
            record_lengths(item->child); /* depth <= JSONL_DEPTH_MAX */
    }
}

static int fail_shape(const jsonl_reader *r, int code, const char *what, size_t col,
                      assay_error *err) {
    char where[48] = "";
    if (col)
        snprintf(where, sizeof where, " near column %zu", col);
    if (r->shape)
        return assay_fail(err, code, "%s:%zu: %s%s; each line must be one JSON object, e.g. %s",
                          r->path, r->line, what, where, r->shape);
    return assay_fail(err, code, "%s:%zu: %s%s", r->path, r->line, what, where);
}

int jsonl_next(jsonl_reader *r, cJSON **out, assay_error *err) {
    *out = NULL;
    for (;;) {
        size_t len = 0;
        int    rc  = read_line(r, &len, err);
        if (rc != 1)
            return rc;
        while (len > 0 && r->buf[len - 1] == '\r')
            len--;
        if (is_blank(r->buf, len))
            continue;
        if ((rc = prepare_line(r, &len, err)))
            return rc;
        const char *end = NULL;
        cJSON      *obj = cJSON_ParseWithLengthOpts(r->buf, len, &end, 0);
        if (!obj) {
            size_t at = end && end >= r->buf ? (size_t)(end - r->buf) : 0;
            return fail_shape(r, ASSAY_EFORMAT, "invalid JSON", source_column(r->buf, at), err);
        }
        if (!is_blank(end, len - (size_t)(end - r->buf))) {
            cJSON_Delete(obj);
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s:%zu: more than one JSON value on the line (column %zu)", r->path,
                              r->line, source_column(r->buf, (size_t)(end - r->buf)));
        }
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            return fail_shape(r, ASSAY_EFORMAT, "expected a JSON object", 0, err);
        }
        record_lengths(obj->child);
        *out = obj;
        return 1;
    }
}

int jsonl_check_fields(jsonl_reader *r, const cJSON *obj, const char *const *known, int strict,
                       assay_error *err) {
    const cJSON *f;
    cJSON_ArrayForEach(f, obj) {
        int ok = 0;
        for (size_t k = 0; known[k] && !ok; k++)
            ok = f->string && !strcmp(f->string, known[k]);
        if (ok)
            continue;
        char list[512] = "";
        for (size_t k = 0, at = 0; known[k] && at < sizeof list; k++) {
            int w = snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "", known[k]);
            at += w > 0 ? (size_t)w : 0;
        }
        const char *name = f->string ? f->string : "";
        cJSON      *q    = jsonl_string_create(name, strlen(name)); /* quoted, escaped */
        char       *qs   = q ? jsonl_print(q, 0) : NULL;
        cJSON_Delete(q);
        if (strict) {
            int rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: unknown field %s (known: %s)", r->path,
                                r->line, qs ? qs : "?", list);
            free(qs);
            return rc;
        }
        int seen = 0;
        for (size_t w = 0; w < r->n_warned && !seen; w++)
            seen = !strcmp(r->warned[w], name);
        if (!seen && r->n_warned < JSONL_WARN_MAX) {
            fprintf(stderr,
                    "assay: warning: %s:%zu: unknown field %s ignored (known: %s; --strict makes "
                    "this an error)\n",
                    r->path, r->line, qs ? qs : "?", list);
            r->warned[r->n_warned] = strdup(name);
            r->n_warned += r->warned[r->n_warned] != NULL;
        }
        free(qs);
    }
    return ASSAY_OK;
}

/* The bytes of string node v with NULs restored (idempotent); *len from record_lengths. */
static const char *string_bytes(const cJSON *v, size_t *len) {
    char  *s = v->valuestring;
    size_t n = v->valueint > 0 ? (size_t)v->valueint : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] == NUL_MARK)
            s[i] = '\0';
    *len = n;
    return s;
}

int jsonl_get_string(const jsonl_reader *r, const cJSON *obj, const char *field, int required,
                     const char **out, size_t *len, assay_error *err) {
    size_t n = 0;
    *out     = NULL;
    if (len)
        *len = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v) {
        if (!required)
            return ASSAY_OK;
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s:%zu: expected a JSON object with a string field '%s'", r->path,
                          r->line, field);
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: field '%s' must be a string", r->path,
                          r->line, field);
    *out = string_bytes(v, &n);
    if (len)
        *len = n;
    return ASSAY_OK;
}

int jsonl_get_int(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t min,
                  int64_t max, int *present, int64_t *out, assay_error *err) {
    *present       = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v)
        return ASSAY_OK;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)min && d <= (double)max) || d != floor(d))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s:%zu: field '%s' must be an integer between %lld and %lld", r->path,
                          r->line, field, (long long)min, (long long)max);
    *present = 1;
    *out     = (int64_t)d;
    return ASSAY_OK;
}

int jsonl_get_strings(const jsonl_reader *r, const cJSON *obj, const char *field, const char ***out,
                      size_t **lens, size_t *n, assay_error *err) {
    *out           = NULL;
    *lens          = NULL;
    *n             = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v)
        return ASSAY_OK;
    if (!cJSON_IsString(v) && !cJSON_IsArray(v))
        goto bad;
    size_t       cnt = cJSON_IsString(v) ? 1 : (size_t)cJSON_GetArraySize(v);
    const char **arr = calloc(cnt ? cnt : 1, sizeof *arr);
    size_t      *ln  = calloc(cnt ? cnt : 1, sizeof *ln);
    if (!arr || !ln) {
        free(arr);
        free(ln);
        return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", r->path, r->line);
    }
    size_t       i = 0;
    const cJSON *e = cJSON_IsString(v) ? v : v->child;
    for (; i < cnt && e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !e->valuestring) {
            free(arr);
            free(ln);
            goto bad;
        }
        arr[i] = string_bytes(e, &ln[i]);
    }
    *out  = arr;
    *lens = ln;
    *n    = cnt;
    return ASSAY_OK;
bad:
    return assay_fail(err, ASSAY_EFORMAT,
                      "%s:%zu: field '%s' must be a string or an array of strings", r->path,
                      r->line, field);
}

int jsonl_get_ids(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t vocab,
                  int32_t **out, size_t *n, assay_error *err) {
    *out           = NULL;
    *n             = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!cJSON_IsArray(v))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s:%zu: expected field '%s' to be an array of token ids", r->path,
                          r->line, field);
    size_t   cnt = (size_t)cJSON_GetArraySize(v), i = 0;
    int32_t *ids = malloc((cnt ? cnt : 1) * sizeof *ids);
    if (!ids)
        return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", r->path, r->line);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        double d   = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        double lim = vocab > 0 ? (double)vocab : 2147483648.0;
        if (!(d >= 0 && d < lim) || d != floor(d)) {
            free(ids);
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s:%zu: '%s'[%zu] must be a token id in [0, %.0f)", r->path, r->line,
                              field, i, lim);
        }
        ids[i++] = (int32_t)d;
    }
    *out = ids;
    *n   = cnt;
    return ASSAY_OK;
}

cJSON *jsonl_string_create(const char *s, size_t len) {
    /* NUL becomes NUL_MARK; a raw 0xFF (invalid UTF-8, so never in decoded text that is valid)
     * becomes U+FFFD so that jsonl_print cannot mistake it for a NUL. */
    size_t extra = 0;
    for (size_t i = 0; i < len; i++)
        extra += (unsigned char)s[i] == NUL_MARK ? 2 : 0;
    if (len > SIZE_MAX - extra - 1)
        return NULL;
    char *t = malloc(len + extra + 1), *p = t;
    if (!t)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) {
            *p++ = (char)NUL_MARK;
        } else if (c == NUL_MARK) {
            memcpy(p, "\xEF\xBF\xBD", 3);
            p += 3;
        } else {
            *p++ = (char)c;
        }
    }
    *p       = '\0';
    cJSON *o = cJSON_CreateString(t);
    free(t);
    return o;
}

char *jsonl_print(const cJSON *item, int formatted) {
    char *s = formatted ? cJSON_Print(item) : cJSON_PrintUnformatted(item);
    if (!s)
        return NULL;
    size_t n = 0, marks = 0;
    for (; s[n]; n++)
        marks += (unsigned char)s[n] == NUL_MARK;
    if (!marks)
        return s;
    char *t = malloc(n + 5 * marks + 1), *p = t;
    if (t) {
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)s[i] == NUL_MARK) {
                memcpy(p, "\\u0000", 6);
                p += 6;
            } else {
                *p++ = s[i];
            }
        }
        *p = '\0';
    }
    free(s);
    return t;
}

int jsonl_emit(cJSON *o, FILE *out_fp, const char *out_path, char **line, assay_error *err) {
    *line = o ? jsonl_print(o, 0) : NULL;
    cJSON_Delete(o);
    if (!*line)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory writing results");
    if (out_fp && fprintf(out_fp, "%s\n", *line) < 0) {
        int e = errno;
        free(*line);
        *line = NULL;
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", out_path, strerror(e));
    }
    return ASSAY_OK;
}
