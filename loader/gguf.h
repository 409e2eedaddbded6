/* loader/gguf.h — read GGUF (v2/v3) files: metadata and tensor directory, validated before use;
 * dequantization of the types `assay convert` supports; llama metadata → model_config. */
#ifndef ASSAY_GGUF_H
#define ASSAY_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "loader/config.h"

/* ggml tensor types we name (values as in the GGUF spec). */
enum {
    GGML_TYPE_F32  = 0,
    GGML_TYPE_F16  = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_BF16 = 30,
};

/* GGUF metadata value types (as in the spec). */
enum {
    GGUF_T_U8 = 0,
    GGUF_T_I8,
    GGUF_T_U16,
    GGUF_T_I16,
    GGUF_T_U32,
    GGUF_T_I32,
    GGUF_T_F32,
    GGUF_T_BOOL,
    GGUF_T_STRING,
    GGUF_T_ARRAY,
    GGUF_T_U64,
    GGUF_T_I64,
    GGUF_T_F64
};

typedef struct gguf_tensor {
    const char *name; /* owned by the gguf_file */
    int         ndim;
    int64_t     ne[4]; /* ggml order: ne[0] is the fastest-varying (row length) */
    int         type;  /* GGML_TYPE_* (other values possible; see gguf_type_supported) */
    const void *data;  /* view into the mapped file */
    size_t      nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

gguf_file *gguf_open(const char *path, assay_error *err);
gguf_file *gguf_open_buffer(const uint8_t *buf, size_t size, const char *name, assay_error *err);
void       gguf_close(gguf_file *f); /* NULL-safe */

uint32_t gguf_version(const gguf_file *f);
/* Bytes before the tensor data: header, metadata and tensor directory (what names the model). */
const void        *gguf_header(const gguf_file *f, size_t *nbytes);
int                gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Metadata lookups: return 0 and set *out when the key exists with a compatible type, else -1. */
int         gguf_get_int(const gguf_file *f, const char *key, int64_t *out);  /* any int/bool */
int         gguf_get_float(const gguf_file *f, const char *key, double *out); /* f32/f64/int */
const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len);   /* NULL if absent */
/* Arrays: element count and type, or -1 when absent / not an array. */
int64_t     gguf_get_arr_n(const gguf_file *f, const char *key, int *elem_type);
const char *gguf_get_arr_str(const gguf_file *f, const char *key, int64_t i, size_t *len);
int         gguf_get_arr_float(const gguf_file *f, const char *key, int64_t i, double *out);
int         gguf_get_arr_int(const gguf_file *f, const char *key, int64_t i, int64_t *out);
int         gguf_n_kv(const gguf_file *f);
const char *gguf_kv_key(const gguf_file *f, int i);

const char *ggml_type_name(int type);      /* "F32", "Q4_0", ..., "type 12" for others */
int         gguf_type_supported(int type); /* F32, F16, BF16, Q8_0, Q4_0, Q4_1 */
/* Dequantizes n elements (a multiple of the type's block size) to f32. 0 ok, -1 unsupported. */
int gguf_dequantize(float *dst, const void *src, int type, int64_t n);

/* llama-architecture metadata → model_config (ARCH_LLAMA, HF conventions). */
int gguf_to_config(const gguf_file *f, model_config *cfg, assay_error *err);

/* Every tensor cfg needs is present (output.weight only when not tied), shaped as cfg says, in a
 * type gguf_dequantize decodes; other tensors are ignored. Errors start with `where` (the path)
 * and name the tensor: ASSAY_EFORMAT (missing, misshaped), ASSAY_EUNSUPPORTED (type). */
int gguf_check_tensors(const gguf_file *f, const model_config *cfg, const char *where,
                       assay_error *err);

#endif
