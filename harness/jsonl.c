#include "harness/jsonl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int jsonl_open(jsonl_reader *r, const char *path, assay_error *err) {
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->fp = fopen(path, "rb");
    if (!r->fp)
        return assay_fail(err, ASSAY_EIO, "%s: cannot open: %s", path, strerror(errno));
    return ASSAY_OK;
}

void jsonl_close(jsonl_reader *r) {
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    free(r->buf);
    r->fp  = NULL;
    r->buf = NULL;
    r->cap = 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

int jsonl_next(jsonl_reader *r, cJSON **out, assay_error *err) {
    *out = NULL;
    for (;;) {
        errno     = 0;
        ssize_t n = getline(&r->buf, &r->cap, r->fp);
        if (n < 0) {
            if (ferror(r->fp))
                return assay_fail(err, ASSAY_EIO, "%s:%zu: read error: %s", r->path, r->line + 1,
                                  strerror(errno ? errno : EIO));
            return 0;
        }
        r->line++;
        size_t len = (size_t)n;
        while (len > 0 && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r'))
            len--;
        if (is_blank(r->buf, len))
            continue;
        if (memchr(r->buf, '\0', len))
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: line contains a NUL byte", r->path,
                              r->line);
        const char *end = NULL;
        cJSON      *obj = cJSON_ParseWithLengthOpts(r->buf, len, &end, 0);
        if (!obj) {
            size_t at = end && end >= r->buf ? (size_t)(end - r->buf) + 1 : 1;
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: invalid JSON near column %zu", r->path,
                              r->line, at);
        }
        if (!is_blank(end, len - (size_t)(end - r->buf))) {
            cJSON_Delete(obj);
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s:%zu: more than one JSON value on the line (column %zu)", r->path,
                              r->line, (size_t)(end - r->buf) + 1);
        }
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: expected a JSON object", r->path,
                              r->line);
        }
        *out = obj;
        return 1;
    }
}

int jsonl_get_string(const jsonl_reader *r, const cJSON *obj, const char *field, int required,
                     const char **out, size_t *len, assay_error *err) {
    *out = NULL;
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
    *out = v->valuestring;
    if (len)
        *len = strlen(v->valuestring);
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
                      size_t *n, assay_error *err) {
    *out           = NULL;
    *n             = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v)
        return ASSAY_OK;
    size_t cnt = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 0;
    if (!cJSON_IsString(v) && !cJSON_IsArray(v))
        goto bad;
    const char **arr = calloc(cnt ? cnt : 1, sizeof *arr);
    if (!arr)
        return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", r->path, r->line);
    if (cJSON_IsString(v)) {
        arr[0] = v->valuestring;
    } else {
        size_t       i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsString(e) || !e->valuestring) {
                free(arr);
                goto bad;
            }
            arr[i++] = e->valuestring;
        }
    }
    *out = arr;
    *n   = cnt;
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
