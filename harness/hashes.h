/* harness/hashes.h — content hashes that identify what a run read (checkpoint, tokenizer, data),
 * shared by eval's results.json "assay" block and the run history so the two agree. */
#ifndef ASSAY_HASHES_H
#define ASSAY_HASHES_H

#include <stddef.h>

#include "core/error.h"

/* Hex SHA-256 of the files' bytes, in the caller's order, each read up to max_bytes. */
int hashes_files(char out[65], const char *const *paths, size_t n, size_t max_bytes,
                 assay_error *err);

/* The model's content hash: config.json, then for each *.safetensors file (in name order) its
 * name and its 8-byte length + JSON header. Tensor bytes are not read: hashing gigabytes would
 * cost more than most runs; the header pins names, dtypes, shapes and offsets. For a GGUF file: the
 * bytes before its tensor data (header, metadata, tensor directory). */
int hashes_model(const char *dir, char out[65], assay_error *err);

/* tokenizer.json, then tokenizer_config.json when present. For a GGUF file: the two texts
 * `assay convert` would write from its metadata, so it equals its converted directory's hash. */
int hashes_tokenizer(const char *dir, char out[65], assay_error *err);

#endif
