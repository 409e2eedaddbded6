/* loader/modeldir.h — is this path a Hugging Face checkpoint directory? The first check every
 * model command makes, so that a common mistake (a .gguf or .safetensors file given where a
 * directory is expected) gets an answer that says what to do instead of "Not a directory". */
#ifndef ASSAY_MODELDIR_H
#define ASSAY_MODELDIR_H

#include "core/error.h"

/* ASSAY_OK when `path` is a directory. Otherwise an error (ASSAY_EINVAL, or ASSAY_EIO when it
 * cannot be examined) naming the path and, for a GGUF or safetensors file, the way out. */
int model_dir_check(const char *path, assay_error *err);

#endif
