/* loader/safetensors.h — read Hugging Face safetensors checkpoints (one file, or shards named by
 * model.safetensors.index.json) through mmap, validating every offset and size before use; and
 * write them (used by `assay convert`). */
#ifndef ASSAY_SAFETENSORS_H
#define ASSAY_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#define ST_MAX_DIMS 8
/* Largest header we accept: real checkpoints stay well under a few MB. */
#define ST_MAX_HEADER (100u * 1024u * 1024u)
/* model.safetensors.index.json: a few hundred kilobytes even for the largest models */
#define ST_INDEX_MAX ((size_t)64 << 20)

typedef struct st_tensor {
    const char *name; /* owned by the st_file / st_model */
    dtype       dtype;
    int         ndim;
    int64_t     shape[ST_MAX_DIMS];
    size_t      n_elements;
    const void *data; /* view into the mapped file; valid until close */
    size_t      nbytes;
    int         shard; /* index of the file it came from (0 for one file) */
} st_tensor;

typedef struct st_file st_file;

/* Opens, maps and validates one .safetensors file. On failure returns NULL and sets err with a
 * message that starts with the path. */
st_file *st_open(const char *path, assay_error *err);
/* Same checks over an in-memory buffer (the fuzz target uses this; `name` is used in messages).
 * The buffer must outlive the returned st_file. */
st_file *st_open_buffer(const uint8_t *buf, size_t size, const char *name, assay_error *err);
void     st_close(st_file *f); /* NULL-safe */

int              st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, int i);
/* __metadata__ value for key, or NULL. */
const char *st_file_metadata(const st_file *f, const char *key);

/* A whole checkpoint: `path` is a directory (model.safetensors or model.safetensors.index.json
 * inside), a .safetensors file, or an index .json file. Every tensor of the weight map must be
 * found in its shard, and no tensor may appear twice. */
typedef struct st_model st_model;

st_model        *st_model_open(const char *path, assay_error *err);
void             st_model_close(st_model *m); /* NULL-safe */
int              st_model_count(const st_model *m);
const st_tensor *st_model_tensor(const st_model *m, int i);          /* sorted by name */
const st_tensor *st_model_find(const st_model *m, const char *name); /* NULL if absent */
int              st_model_n_shards(const st_model *m);
size_t           st_model_total_bytes(const st_model *m); /* sum of tensor bytes */

/* Writer: tensors given as name/dtype/shape/data, written in the given order to `path`
 * atomically (temporary file, then rename). `metadata` is NULL or pairs of key/value strings
 * terminated by NULL. */
typedef struct st_write_tensor {
    const char *name;
    dtype       dtype;
    int         ndim;
    int64_t     shape[ST_MAX_DIMS];
    const void *data;
} st_write_tensor;

int st_write(const char *path, const st_write_tensor *tensors, int n, const char *const *metadata,
             assay_error *err);

#endif
