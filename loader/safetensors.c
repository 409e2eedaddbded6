/* loader/safetensors.c — safetensors reader (mmap + cJSON header, every number checked before
 * use) and writer.
 *
 * File layout: 8-byte little-endian header length N, N bytes of JSON header (an object mapping
 * tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
 * "__metadata__" object of strings), then the data area; offsets are relative to its start. */
#include "loader/safetensors.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* Header integers arrive as JSON numbers (doubles): above 2^53 they are no longer exact. */
#define ST_MAX_JSON_INT 9007199254740992.0

struct st_file {
    char       *path; /* for messages */
    mapped_file map;  /* empty when opened over a caller's buffer */
    st_tensor  *tensors;
    int         n_tensors;
    char      **meta_keys;
    char      **meta_vals;
    int         n_meta;
};

struct st_model {
    char      *path;
    st_file  **shards;
    int        n_shards;
    st_tensor *tensors; /* sorted by name; names point into the shards */
    int        n_tensors;
    size_t     total_bytes;
};

/* ---------------------------------------------------------------------------------------------
 * Shared helpers */

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char  *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* "[2, 3]" into buf (truncated safely). */
static void st_format_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = 0;
    int    w = snprintf(buf, cap, "[");
    n        = w > 0 ? (size_t)w : 0;
    for (int d = 0; d < ndim && n < cap; d++) {
        w = snprintf(buf + n, cap - n, "%s%" PRId64, d ? ", " : "", shape[d]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Element count and byte size of a shape; -1 on overflow. A zero dimension makes the tensor
 * empty whatever the other dimensions are. */
static int st_shape_bytes(const int64_t *shape, int ndim, size_t elem_size, size_t *n_elements,
                          size_t *nbytes) {
    size_t count = 1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) {
            *n_elements = 0;
            *nbytes     = 0;
            return 0;
        }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (uint64_t)shape[d] > SIZE_MAX)
            return -1;
        if (size_mul(count, (size_t)shape[d], &count))
            return -1;
    }
    size_t bytes;
    if (size_mul(count, elem_size, &bytes))
        return -1;
    *n_elements = count;
    *nbytes     = bytes;
    return 0;
}

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---------------------------------------------------------------------------------------------
 * Writer */

static int st_write_check(const char *path, const st_write_tensor *tensors, int n,
                          const char *const *metadata, size_t *total, assay_error *err) {
    *total = 0;
    if (n < 0 || (n > 0 && !tensors))
        return assay_fail(err, ASSAY_EINVAL, "%s: invalid tensor list (n = %d)", path, n);
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        if (!t->name)
            return assay_fail(err, ASSAY_EINVAL, "%s: tensor %d has no name", path, i);
        if (strcmp(t->name, "__metadata__") == 0)
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: tensor %d is named '__metadata__', a reserved key", path, i);
        size_t esize = dtype_size(t->dtype);
        if (esize == 0)
            return assay_fail(err, ASSAY_EINVAL, "%s: tensor '%s' has unknown dtype %d", path,
                              t->name, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: tensor '%s' has %d dimensions (0..%d allowed)", path, t->name,
                              t->ndim, ST_MAX_DIMS);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || (double)t->shape[d] > ST_MAX_JSON_INT)
                return assay_fail(err, ASSAY_EINVAL,
                                  "%s: tensor '%s' dimension %d is %" PRId64 " (out of range)",
                                  path, t->name, d, t->shape[d]);
        size_t count, bytes;
        if (st_shape_bytes(t->shape, t->ndim, esize, &count, &bytes) ||
            size_add(*total, bytes, total)) {
            char shp[256];
            st_format_shape(shp, sizeof shp, t->shape, t->ndim);
            return assay_fail(err, ASSAY_EINVAL,
                              "%s: tensor '%s' shape %s is too large (byte size overflows)", path,
                              t->name, shp);
        }
        if (bytes > 0 && !t->data)
            return assay_fail(err, ASSAY_EINVAL, "%s: tensor '%s' has no data", path, t->name);
    }
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
        for (int i = 0; i < n; i++)
            names[i] = tensors[i].name;
        qsort(names, (size_t)n, sizeof *names, st_cmp_str);
        for (int i = 1; i < n; i++)
            if (strcmp(names[i - 1], names[i]) == 0) {
                int rc =
                    assay_fail(err, ASSAY_EINVAL, "%s: tensor '%s' is given twice", path, names[i]);
                free(names);
                return rc;
            }
        free(names);
    }
    if (metadata)
        for (int i = 0; metadata[i]; i += 2)
            if (!metadata[i + 1])
                return assay_fail(err, ASSAY_EINVAL, "%s: metadata key '%s' has no value", path,
                                  metadata[i]);
    return ASSAY_OK;
}

static cJSON *st_json_int(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    /* Raw text keeps integers exact and out of exponent notation (cJSON prints doubles). */
    return cJSON_CreateRaw(buf);
}

static char *st_write_header(const st_write_tensor *tensors, int n, const char *const *metadata) {
    char  *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    if (metadata && metadata[0]) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta)
            goto done;
        for (int i = 0; metadata[i]; i += 2) {
            /* Last value wins for a repeated key, so the header never holds duplicates. */
            cJSON_DeleteItemFromObjectCaseSensitive(meta, metadata[i]);
            if (!cJSON_AddStringToObject(meta, metadata[i], metadata[i + 1]))
                goto done;
        }
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        size_t                 count, bytes;
        st_shape_bytes(t->shape, t->ndim, dtype_size(t->dtype), &count, &bytes); /* checked */
        cJSON *entry = cJSON_CreateObject();
        if (!entry || !cJSON_AddItemToObject(root, t->name, entry)) {
            cJSON_Delete(entry);
            goto done;
        }
        cJSON *shape = NULL, *offs = NULL;
        if (!cJSON_AddStringToObject(entry, "dtype", dtype_name(t->dtype)) ||
            !(shape = cJSON_AddArrayToObject(entry, "shape")) ||
            !(offs = cJSON_AddArrayToObject(entry, "data_offsets")))
            goto done;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *v = st_json_int(t->shape[d]);
            if (!v || !cJSON_AddItemToArray(shape, v)) {
                cJSON_Delete(v);
                goto done;
            }
        }
        cJSON *b = st_json_int((int64_t)offset);
        offset += bytes;
        cJSON *e = st_json_int((int64_t)offset);
        if (!b || !e || !cJSON_AddItemToArray(offs, b)) {
            cJSON_Delete(b);
            cJSON_Delete(e);
            goto done;
        }
        if (!cJSON_AddItemToArray(offs, e)) {
            cJSON_Delete(e);
            goto done;
        }
    }
    text = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return text;
}

int st_write(const char *path, const st_write_tensor *tensors, int n, const char *const *metadata,
             assay_error *err) {
    if (!path)
        return assay_fail(err, ASSAY_EINVAL, "st_write: no path");
    size_t total;
    int    rc = st_write_check(path, tensors, n, metadata, &total, err);
    if (rc)
        return rc;
    char *header = st_write_header(tensors, n, metadata);
    if (!header)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory building the header", path);
    size_t hlen = strlen(header);
    size_t pad  = (8 - hlen % 8) % 8;
    if (hlen + pad > ST_MAX_HEADER) {
        free(header);
        return assay_fail(err, ASSAY_EINVAL, "%s: header would be %zu bytes (limit %u)", path,
                          hlen + pad, ST_MAX_HEADER);
    }
    uint8_t  len8[8];
    uint64_t L = (uint64_t)(hlen + pad);
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(L >> (8 * i));

    atomic_file af;
    rc = atomic_open(&af, path, err);
    if (rc) {
        free(header);
        return rc;
    }
    int ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(header, 1, hlen, af.fp) == hlen &&
             fwrite("        ", 1, pad, af.fp) == pad;
    for (int i = 0; ok && i < n; i++) {
        size_t count, bytes;
        st_shape_bytes(tensors[i].shape, tensors[i].ndim, dtype_size(tensors[i].dtype), &count,
                       &bytes);
        if (bytes && fwrite(tensors[i].data, 1, bytes, af.fp) != bytes)
            ok = 0;
    }
    free(header);
    if (!ok) {
        atomic_abort(&af); /* keeps errno */
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return atomic_commit(&af, err);
}

/* ---------------------------------------------------------------------------------------------
 * Reader: one file */

void st_close(st_file *f) {
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    file_unmap(&f->map);
    free(f->path);
    free(f);
}

int st_file_count(const st_file *f) { return f ? f->n_tensors : 0; }

const st_tensor *st_file_tensor(const st_file *f, int i) {
    return (f && i >= 0 && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

const char *st_file_metadata(const st_file *f, const char *key) {
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}

/* A JSON number that is an exact non-negative integer a header may hold; -1 otherwise. */
static int st_json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_JSON_INT || d != (double)(uint64_t)d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Fills f->meta_* from the __metadata__ object. */
static int st_parse_metadata(st_file *f, const cJSON *meta, assay_error *err) {
    if (!cJSON_IsObject(meta))
        return assay_fail(err, ASSAY_EFORMAT, "%s: __metadata__ is not an object", f->path);
    int n = cJSON_GetArraySize(meta);
    if (n == 0)
        return ASSAY_OK;
    f->meta_keys = calloc((size_t)n, sizeof *f->meta_keys);
    f->meta_vals = calloc((size_t)n, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv) || !kv->string)
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: __metadata__ value for key '%s' is not a string", f->path,
                              kv->string ? kv->string : "?");
        for (int i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_keys[i], kv->string) == 0)
                return assay_fail(err, ASSAY_EFORMAT, "%s: __metadata__ key '%s' appears twice",
                                  f->path, kv->string);
        f->meta_keys[f->n_meta] = st_strdup(kv->string);
        f->meta_vals[f->n_meta] = st_strdup(kv->valuestring);
        if (!f->meta_keys[f->n_meta] || !f->meta_vals[f->n_meta]) {
            f->n_meta++; /* so st_close frees the one that was allocated */
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->path);
        }
        f->n_meta++;
    }
    return ASSAY_OK;
}

/* Parses one tensor entry into t (name already set). begin/end are the data offsets. */
static int st_parse_entry(const st_file *f, const cJSON *e, st_tensor *t, uint64_t *begin,
                          uint64_t *end, const uint8_t *data, size_t data_size, assay_error *err) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' entry is not an object", f->path,
                          nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' has no \"dtype\" string", f->path,
                          nm);
    t->dtype = dtype_from_name(jd->valuestring);
    if (t->dtype == DTYPE_UNKNOWN)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: tensor '%s' has unsupported dtype '%.64s' (supported: %s)", f->path,
                          nm, jd->valuestring, dtype_supported_list());

    if (!cJSON_IsArray(js))
        return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' has no \"shape\" array", f->path,
                          nm);
    int ndim = cJSON_GetArraySize(js);
    if (ndim > ST_MAX_DIMS)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: tensor '%s' shape has %d dimensions (at most %d supported)", f->path,
                          nm, ndim, ST_MAX_DIMS);
    t->ndim = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, js) {
        uint64_t v;
        if (st_json_uint(dim, &v))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: tensor '%s' shape entry %d is not a non-negative integer",
                              f->path, nm, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
    }
    char shp[256];
    st_format_shape(shp, sizeof shp, t->shape, t->ndim);
    if (st_shape_bytes(t->shape, t->ndim, dtype_size(t->dtype), &t->n_elements, &t->nbytes))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' shape %s is too large (byte size overflows)", f->path,
                          nm, shp);

    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        st_json_uint(cJSON_GetArrayItem(jo, 0), begin) ||
        st_json_uint(cJSON_GetArrayItem(jo, 1), end))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data_offsets must be [begin, end] non-negative integers",
                          f->path, nm);
    if (*begin > *end)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
                          f->path, nm, *begin, *end);
    if (*end - *begin != (uint64_t)t->nbytes)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                          "] need %zu bytes for %s shape %s",
                          f->path, nm, *begin, *end, t->nbytes, dtype_name(t->dtype), shp);
    if (*end > (uint64_t)data_size)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                          "] end past the data area (%zu bytes)",
                          f->path, nm, *begin, *end, data_size);
    t->data = data + *begin;
    return ASSAY_OK;
}

typedef struct st_span {
    uint64_t begin, end;
    int      index;
} st_span;

static int st_cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

static int st_cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Rejects tensors whose byte ranges share a byte. Empty tensors occupy no bytes. */
static int st_check_overlap(const st_file *f, st_span *spans, int n, assay_error *err) {
    qsort(spans, (size_t)n, sizeof *spans, st_cmp_span);
    int have = 0;
    int far  = 0; /* span reaching furthest so far */
    for (int i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (have && spans[i].begin < spans[far].end) {
            const st_tensor *a = &f->tensors[spans[far].index], *b = &f->tensors[spans[i].index];
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                              "] overlap tensor '%s' [%" PRIu64 ", %" PRIu64 "]",
                              f->path, b->name, spans[i].begin, spans[i].end, a->name,
                              spans[far].begin, spans[far].end);
        }
        if (!have || spans[i].end > spans[far].end)
            far = i;
        have = 1;
    }
    return ASSAY_OK;
}

/* Rejects a repeated tensor name (cJSON keeps both copies of a duplicated key). */
static int st_check_unique(const st_file *f, assay_error *err) {
    if (f->n_tensors < 2)
        return ASSAY_OK;
    st_tensor *sorted = malloc((size_t)f->n_tensors * sizeof *sorted);
    if (!sorted)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->path);
    memcpy(sorted, f->tensors, (size_t)f->n_tensors * sizeof *sorted);
    qsort(sorted, (size_t)f->n_tensors, sizeof *sorted, st_cmp_tensor_name);
    int rc = ASSAY_OK;
    for (int i = 1; i < f->n_tensors && !rc; i++)
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' appears twice in the header",
                            f->path, sorted[i].name);
    free(sorted);
    return rc;
}

/* Header shape limits checked before cJSON sees the text (see st_prescan). */
#define ST_MAX_NESTING 3 /* header object > tensor entry > shape / data_offsets */
#define ST_MAX_ARRAY 64  /* shapes beyond ST_MAX_DIMS get their own message from the parse */
#define ST_MIN_BYTES_PER_ITEM 3

/* cJSON spends about 100 bytes per JSON value: a 100 MB header of "[0,0,0,..." grew to 4.3 GB.
 * One pass over the text first enforces what a safetensors header can hold: containers at most
 * ST_MAX_NESTING deep, arrays of at most ST_MAX_ARRAY elements (a shape; data_offsets has 2),
 * and at least ST_MIN_BYTES_PER_ITEM bytes per string or value (the tightest valid header, an
 * 8-dimensional empty tensor per entry, spends 3.7). Parse memory then stays near 20x the
 * header (measured: 16 MB of '"x":0,' members peaked at 341 MB), and hostile headers fail at
 * their first excess, before any copy or allocation.
 * Malformed JSON is left to cJSON, which reports it. */
static int st_prescan(const st_file *f, const char *text, size_t n, assay_error *err) {
    size_t items = 0, count[ST_MAX_NESTING + 1] = {0};
    int    depth = 0, is_array[ST_MAX_NESTING + 1] = {0};
    /* cJSON skips a UTF-8 BOM at the start and takes every byte <= 32 for whitespace */
    size_t start = n >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;
    for (size_t i = start; i < n; i++) {
        char ch = text[i];
        if ((unsigned char)ch <= 32 || ch == ',' || ch == ':')
            continue;
        if (ch == '}' || ch == ']') {
            depth -= depth > 0;
            continue;
        }
        /* a string, scalar or container starts here (or junk cJSON will stop at: counted too) */
        items++;
        if (depth > 0 && is_array[depth] && ++count[depth] > ST_MAX_ARRAY)
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: header byte %zu: an array of more than %d elements (a shape "
                              "has at most %d dimensions)",
                              f->path, i, ST_MAX_ARRAY, ST_MAX_DIMS);
        if (ch == '{' || ch == '[') {
            if (depth == ST_MAX_NESTING)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s: header nests deeper than %d levels at header byte %zu "
                                  "(a safetensors header is an object of tensor entries)",
                                  f->path, ST_MAX_NESTING, i);
            depth++;
            is_array[depth] = ch == '[';
            count[depth]    = 0;
        } else if (ch == '"') {
            for (i++; i < n && text[i] != '"'; i++)
                i += text[i] == '\\';
        } else {
            while (i + 1 < n && (unsigned char)text[i + 1] > 32 && !strchr(",:{}[]\"", text[i + 1]))
                i++;
        }
        if (items > 64 && items > n / ST_MIN_BYTES_PER_ITEM)
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: header holds more than %zu JSON values in %zu bytes (a "
                              "safetensors header spends at least %d bytes per value)",
                              f->path, items - 1, n, ST_MIN_BYTES_PER_ITEM);
    }
    return ASSAY_OK;
}

static int st_parse(st_file *f, const uint8_t *buf, size_t size, assay_error *err) {
    char    *text  = NULL;
    cJSON   *root  = NULL;
    st_span *spans = NULL;
    int      rc;
    if (size < 8) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s: file is %zu bytes, too short for the 8-byte header length (truncated)",
                        f->path, size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > ST_MAX_HEADER) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s: header length %" PRIu64 " exceeds the limit of %u bytes", f->path,
                        hlen, ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s: header length %" PRIu64
                        " runs past the end of the file (%zu bytes; truncated?)",
                        f->path, hlen, size);
        goto fail;
    }
    /* Over the mapped bytes, so a refused header costs no copy. */
    if ((rc = st_prescan(f, (const char *)buf + 8, (size_t)hlen, err)))
        goto fail;
    /* A NUL-terminated copy: cJSON then never reads past the header, whatever it contains. */
    text = malloc((size_t)hlen + 1);
    if (!text) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for the header", f->path);
        goto fail;
    }
    memcpy(text, buf + 8, (size_t)hlen);
    text[hlen]           = '\0';
    const char *json_end = NULL;
    root                 = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &json_end, 0);
    if (!root) {
        size_t at = json_end ? (size_t)(json_end - text) : 0;
        rc        = assay_fail(err, ASSAY_EFORMAT,
                               "%s: header is not valid JSON (error at header byte %zu)", f->path, at);
        goto fail;
    }
    /* Writers pad the header with spaces; anything else after the JSON is damage. */
    for (const char *p = json_end; p && p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: header is not valid JSON (trailing bytes at header byte %zu)",
                            f->path, (size_t)(p - text));
            goto fail;
        }
    if (!cJSON_IsObject(root)) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: header JSON is not an object", f->path);
        goto fail;
    }

    const uint8_t *data      = buf + 8 + hlen;
    size_t         data_size = size - 8 - (size_t)hlen;
    int            n_items   = cJSON_GetArraySize(root);
    f->tensors               = calloc(n_items > 0 ? (size_t)n_items : 1, sizeof *f->tensors);
    spans                    = calloc(n_items > 0 ? (size_t)n_items : 1, sizeof *spans);
    if (!f->tensors || !spans) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->path);
        goto fail;
    }
    int          have_meta = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const char *key = item->string ? item->string : "";
        if (strcmp(key, "__metadata__") == 0) {
            if (have_meta) {
                rc = assay_fail(err, ASSAY_EFORMAT, "%s: __metadata__ appears twice", f->path);
                goto fail;
            }
            have_meta = 1;
            if ((rc = st_parse_metadata(f, item, err)))
                goto fail;
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name      = st_strdup(key);
        if (!t->name) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->path);
            goto fail;
        }
        f->n_tensors++;
        uint64_t begin = 0, end = 0;
        if ((rc = st_parse_entry(f, item, t, &begin, &end, data, data_size, err)))
            goto fail;
        spans[f->n_tensors - 1] = (st_span){begin, end, f->n_tensors - 1};
    }
    if ((rc = st_check_unique(f, err)) || (rc = st_check_overlap(f, spans, f->n_tensors, err)))
        goto fail;
    rc = ASSAY_OK;
fail:
    free(spans);
    cJSON_Delete(root);
    free(text);
    return rc;
}

static st_file *st_new(const char *name, assay_error *err) {
    st_file *f = calloc(1, sizeof *f);
    if (f)
        f->path = st_strdup(name ? name : "(buffer)");
    if (!f || !f->path) {
        free(f);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name ? name : "(buffer)");
        return NULL;
    }
    return f;
}

st_file *st_open_buffer(const uint8_t *buf, size_t size, const char *name, assay_error *err) {
    st_file *f = st_new(name, err);
    if (!f)
        return NULL;
    if (st_parse(f, size ? buf : NULL, size, err)) {
        st_close(f);
        return NULL;
    }
    return f;
}

st_file *st_open(const char *path, assay_error *err) {
    if (!path) {
        assay_fail(err, ASSAY_EINVAL, "st_open: no path");
        return NULL;
    }
    st_file *f = st_new(path, err);
    if (!f)
        return NULL;
    if (file_map(&f->map, path, err) || st_parse(f, f->map.data, f->map.size, err)) {
        st_close(f);
        return NULL;
    }
    return f;
}

/* ---------------------------------------------------------------------------------------------
 * Reader: a whole checkpoint */

void st_model_close(st_model *m) {
    if (!m)
        return;
    for (int i = 0; i < m->n_shards; i++)
        st_close(m->shards[i]);
    free(m->shards);
    free(m->tensors);
    free(m->path);
    free(m);
}

int st_model_count(const st_model *m) { return m ? m->n_tensors : 0; }

const st_tensor *st_model_tensor(const st_model *m, int i) {
    return (m && i >= 0 && i < m->n_tensors) ? &m->tensors[i] : NULL;
}

const st_tensor *st_model_find(const st_model *m, const char *name) {
    if (!m || !name || m->n_tensors == 0)
        return NULL;
    st_tensor key = {.name = name};
    return bsearch(&key, m->tensors, (size_t)m->n_tensors, sizeof key, st_cmp_tensor_name);
}

int st_model_n_shards(const st_model *m) { return m ? m->n_shards : 0; }

size_t st_model_total_bytes(const st_model *m) { return m ? m->total_bytes : 0; }

/* Gathers every shard's tensors into m->tensors (sorted by name) and sums their bytes.
 * `shard_names` name the shards in messages. */
static int st_model_collect(st_model *m, const char *const *shard_names, assay_error *err) {
    size_t n = 0;
    for (int s = 0; s < m->n_shards; s++)
        n += (size_t)m->shards[s]->n_tensors;
    if (n > (size_t)INT32_MAX)
        return assay_fail(err, ASSAY_EUNSUPPORTED, "%s: too many tensors", m->path);
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    if (!m->tensors)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", m->path);
    for (int s = 0; s < m->n_shards; s++)
        for (int i = 0; i < m->shards[s]->n_tensors; i++) {
            st_tensor *t = &m->tensors[m->n_tensors++];
            *t           = m->shards[s]->tensors[i];
            t->shard     = s;
            m->total_bytes += t->nbytes; /* each shard is mapped, so the sum fits size_t */
        }
    qsort(m->tensors, n, sizeof *m->tensors, st_cmp_tensor_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(m->tensors[i - 1].name, m->tensors[i].name) == 0)
            return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is present in shards %s and %s",
                              m->path, m->tensors[i].name, shard_names[m->tensors[i - 1].shard],
                              shard_names[m->tensors[i].shard]);
    return ASSAY_OK;
}

static st_model *st_model_new(const char *path, assay_error *err) {
    st_model *m = calloc(1, sizeof *m);
    if (m)
        m->path = st_strdup(path);
    if (!m || !m->path) {
        free(m);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    return m;
}

static st_model *st_model_open_file(const char *path, assay_error *err) {
    st_model *m = st_model_new(path, err);
    if (!m)
        return NULL;
    m->shards = calloc(1, sizeof *m->shards);
    if (!m->shards) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (!(m->shards[0] = st_open(path, err)))
        goto fail;
    m->n_shards          = 1;
    const char *names[1] = {path};
    if (st_model_collect(m, names, err))
        goto fail;
    return m;
fail:
    st_model_close(m);
    return NULL;
}

typedef struct st_map_entry {
    const char *name;  /* tensor, points into the parsed index */
    const char *shard; /* file name, points into the parsed index */
} st_map_entry;

static int st_cmp_map_entry(const void *a, const void *b) {
    return strcmp(((const st_map_entry *)a)->name, ((const st_map_entry *)b)->name);
}

/* Shard names come from an untrusted index: they must stay inside the checkpoint directory. */
static int st_shard_name_ok(const char *s) {
    return s[0] != '\0' && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static st_model *st_model_open_index(const char *index_path, assay_error *err) {
    char         *text    = NULL;
    cJSON        *root    = NULL;
    st_map_entry *entries = NULL;
    const char  **shards  = NULL; /* distinct shard file names, sorted */
    size_t        len     = 0;
    st_model     *m       = st_model_new(index_path, err);
    if (!m)
        return NULL;
    if (file_read_capped(index_path, ST_INDEX_MAX, &text, &len, err))
        goto fail;
    const char *json_end = NULL;
    root                 = cJSON_ParseWithLengthOpts(text, len, &json_end, 0);
    if (!root) {
        assay_fail(err, ASSAY_EFORMAT, "%s: not valid JSON (error at byte %zu)", index_path,
                   json_end ? (size_t)(json_end - text) : (size_t)0);
        goto fail;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        assay_fail(err, ASSAY_EFORMAT, "%s: no \"weight_map\" object", index_path);
        goto fail;
    }
    int n = cJSON_GetArraySize(wm);
    if (n == 0) {
        assay_fail(err, ASSAY_EFORMAT, "%s: weight_map is empty", index_path);
        goto fail;
    }
    entries = calloc((size_t)n, sizeof *entries);
    shards  = calloc((size_t)n, sizeof *shards);
    if (!entries || !shards) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", index_path);
        goto fail;
    }
    int          k = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, wm) {
        const char *tn = kv->string ? kv->string : "";
        if (!cJSON_IsString(kv)) {
            assay_fail(err, ASSAY_EFORMAT, "%s: weight_map entry for tensor '%s' is not a string",
                       index_path, tn);
            goto fail;
        }
        if (!st_shard_name_ok(kv->valuestring)) {
            assay_fail(err, ASSAY_EFORMAT,
                       "%s: tensor '%s' names shard '%s'; shard names must be plain file names "
                       "(no '/' or '..')",
                       index_path, tn, kv->valuestring);
            goto fail;
        }
        entries[k] = (st_map_entry){tn, kv->valuestring};
        shards[k]  = kv->valuestring;
        k++;
    }
    qsort(entries, (size_t)n, sizeof *entries, st_cmp_map_entry);
    for (int i = 1; i < n; i++)
        if (strcmp(entries[i - 1].name, entries[i].name) == 0) {
            assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is listed twice in the weight_map",
                       index_path, entries[i].name);
            goto fail;
        }
    qsort(shards, (size_t)n, sizeof *shards, st_cmp_str);
    int n_shards = 0;
    for (int i = 0; i < n; i++)
        if (n_shards == 0 || strcmp(shards[n_shards - 1], shards[i]) != 0)
            shards[n_shards++] = shards[i];

    /* Shard paths are relative to the index's directory. */
    char        dir[4096];
    const char *slash = strrchr(index_path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - index_path);
        if (dl >= sizeof dir) {
            assay_fail(err, ASSAY_EINVAL, "%s: path too long", index_path);
            goto fail;
        }
        memcpy(dir, index_path, dl);
        dir[dl] = '\0';
        if (dl == 0)
            strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }
    m->shards = calloc((size_t)n_shards, sizeof *m->shards);
    if (!m->shards) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", index_path);
        goto fail;
    }
    for (int s = 0; s < n_shards; s++) {
        char sp[4096 + 256];
        if (path_join(sp, sizeof sp, dir, shards[s])) {
            assay_fail(err, ASSAY_EINVAL, "%s: shard path too long", index_path);
            goto fail;
        }
        assay_error serr;
        assay_error_clear(&serr);
        if (!(m->shards[s] = st_open(sp, &serr))) {
            /* The shard's own message already starts with its path. */
            assay_fail(err, serr.code, "%s: shard '%s' named by the weight_map: %s", index_path,
                       shards[s], serr.msg);
            goto fail;
        }
        m->n_shards++;
    }
    if (st_model_collect(m, shards, err))
        goto fail;

    /* Both lists are sorted by name: walk them together. */
    int i = 0, j = 0;
    while (i < n || j < m->n_tensors) {
        int c = i >= n ? 1 : j >= m->n_tensors ? -1 : strcmp(entries[i].name, m->tensors[j].name);
        if (c < 0) {
            assay_fail(err, ASSAY_EFORMAT,
                       "%s: tensor '%s' named by the weight_map is missing from shard %s",
                       index_path, entries[i].name, entries[i].shard);
            goto fail;
        }
        if (c > 0) {
            assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' in shard %s is not in the weight_map",
                       index_path, m->tensors[j].name, shards[m->tensors[j].shard]);
            goto fail;
        }
        if (strcmp(entries[i].shard, shards[m->tensors[j].shard]) != 0) {
            assay_fail(err, ASSAY_EFORMAT,
                       "%s: tensor '%s' named by the weight_map is missing from shard %s "
                       "(found in shard %s)",
                       index_path, entries[i].name, entries[i].shard, shards[m->tensors[j].shard]);
            goto fail;
        }
        i++;
        j++;
    }
    free(entries);
    free(shards);
    cJSON_Delete(root);
    free(text);
    return m;
fail:
    free(entries);
    free(shards);
    cJSON_Delete(root);
    free(text);
    st_model_close(m);
    return NULL;
}

st_model *st_model_open(const char *path, assay_error *err) {
    if (!path) {
        assay_fail(err, ASSAY_EINVAL, "st_model_open: no path");
        return NULL;
    }
    if (!path_is_dir(path)) {
        if (str_ends_with(path, ".json"))
            return st_model_open_index(path, err);
        return st_model_open_file(path, err);
    }
    char p[4096];
    if (path_join(p, sizeof p, path, "model.safetensors.index.json")) {
        assay_fail(err, ASSAY_EINVAL, "%s: path too long", path);
        return NULL;
    }
    if (path_exists(p))
        return st_model_open_index(p, err);
    path_join(p, sizeof p, path, "model.safetensors");
    if (path_exists(p))
        return st_model_open_file(p, err);

    /* Some repositories name their only file differently (e.g. pytorch_model.safetensors). */
    DIR *d = opendir(path);
    if (!d) {
        assay_fail(err, ASSAY_EIO, "%s: cannot open directory", path);
        return NULL;
    }
    char           found[256] = "";
    int            n_found    = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!str_ends_with(e->d_name, ".safetensors") || strlen(e->d_name) >= sizeof found)
            continue;
        if (n_found++ == 0)
            snprintf(found, sizeof found, "%s", e->d_name);
    }
    closedir(d);
    if (n_found == 0) {
        assay_fail(err, ASSAY_EIO, "%s: no model.safetensors, index or *.safetensors file", path);
        return NULL;
    }
    if (n_found > 1) {
        assay_fail(err, ASSAY_EFORMAT,
                   "%s: %d .safetensors files and no model.safetensors.index.json to say which "
                   "tensors each holds",
                   path, n_found);
        return NULL;
    }
    if (path_join(p, sizeof p, path, found)) {
        assay_fail(err, ASSAY_EINVAL, "%s: path too long", path);
        return NULL;
    }
    return st_model_open_file(p, err);
}
