/* loader/safetensors.c — safetensors reader (mmap + cJSON header, every number checked before
 * use) and writer.
 *
 * File layout: 8-byte little-endian header length N, N bytes of JSON header (an object mapping
 * tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
 * "__metadata__" object of strings), then the data area; offsets are relative to its start. */
#include "loader/safetensors.h"

#include <cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

/* Header integers arrive as JSON numbers (doubles): above 2^53 they are no longer exact. */
#define ST_MAX_JSON_INT 9007199254740992.0

struct st_file {
    char          *path; /* for messages */
    mapped_file    map;  /* empty when opened over a caller's buffer */
    st_tensor     *tensors;
    int            n_tensors;
    char         **meta_keys;
    char         **meta_vals;
    int            n_meta;
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
            return assay_fail(err, ASSAY_EINVAL, "%s: tensor '%s' has %d dimensions (0..%d allowed)",
                              path, t->name, t->ndim, ST_MAX_DIMS);
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
                int rc = assay_fail(err, ASSAY_EINVAL, "%s: tensor '%s' is given twice", path,
                                    names[i]);
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
        atomic_abort(&af);
        return assay_fail(err, ASSAY_EIO, "%s: write failed", path);
    }
    return atomic_commit(&af, err);
}
