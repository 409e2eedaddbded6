/* core/dtype.h — element types of checkpoint tensors and conversions to f32. */
#ifndef ASSAY_DTYPE_H
#define ASSAY_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DTYPE_UNKNOWN = 0,
    DTYPE_F32,
    DTYPE_F16,
    DTYPE_BF16,
    DTYPE_F64,
    DTYPE_I8,
    DTYPE_I16,
    DTYPE_I32,
    DTYPE_I64,
    DTYPE_U8,
    DTYPE_BOOL,
    DTYPE_COUNT
} dtype;

/* Bytes per element (0 for DTYPE_UNKNOWN). */
size_t dtype_size(dtype t);
/* safetensors spelling: "F32", "BF16", ... */
const char *dtype_name(dtype t);
/* Parses a safetensors dtype string; DTYPE_UNKNOWN if not known. */
dtype dtype_from_name(const char *s);
/* True for the float types usable as weights (F32, F16, BF16). */
int dtype_is_weight(dtype t);
/* The list of supported safetensors dtypes, for error messages. */
const char *dtype_supported_list(void);

float    f16_to_f32(uint16_t h);
float    bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
uint16_t f32_to_f16(float f);  /* round to nearest even */

/* Converts n elements of a weight dtype (F32/F16/BF16) at src (any alignment) to f32.
 * Returns 0, or -1 when t is not a weight dtype. */
int dtype_to_f32(float *dst, const void *src, dtype t, size_t n);

#endif
