/* loader/modeldir.h — what a MODEL argument is: a Hugging Face checkpoint directory or a GGUF file
 * (decided by content, not by name). The first check every model command makes, so that a common
 * mistake (a lone .safetensors file given where a model belongs) gets an answer that says what to
 * do instead of "Not a directory". */
#ifndef ASSAY_MODELDIR_H
#define ASSAY_MODELDIR_H

#include "core/error.h"

/* 1 when `path` is a regular file whose first 4 bytes are "GGUF" (read without blocking) or whose
 * name ends in ".gguf" (so that a damaged one gets the GGUF reader's message), else 0. */
int model_path_is_gguf(const char *path);

/* ASSAY_OK when `path` is a directory or a GGUF file. Otherwise an error (ASSAY_EINVAL, or
 * ASSAY_EIO when it cannot be examined) naming the path and, for a safetensors file, the way
 * out. */
int model_dir_check(const char *path, assay_error *err);

#endif
