/* loader/gguf.c — GGUF v2/v3 reader. The whole header (metadata and tensor directory) is parsed
 * and validated once at open: every length is checked against the bytes that remain, so the
 * accessors below can index the mapped file without further checks. */
#include "loader/gguf.h"

#include "loader/arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/util.h"

/* Caps that no real file comes near; they bound allocations driven by untrusted counts. */
#define GGUF_MAX_TENSORS (1 << 20)
#define GGUF_MAX_KV (1 << 20)
#define GGUF_MAX_ARR_DEPTH 4
#define GGUF_MAX_NAME 4096
#define GGUF_DEFAULT_ALIGN 32

typedef struct gguf_kv {
    char   *key;
    int     type;      /* GGUF_T_* */
    size_t  off;       /* offset of the value (for arrays: of the first element) */
    size_t  len;       /* strings: byte length */
    int     elem_type; /* arrays */
    int64_t n;         /* arrays: element count */
    size_t *str_off;   /* string arrays: offset of each element's u64 length */
} gguf_kv;

struct gguf_file {
    mapped_file    map; /* empty when opened from a buffer */
    const uint8_t *buf;
    size_t         size;
    char          *name;
    uint32_t       version;
    gguf_kv       *kv;
    int            n_kv;
    gguf_kv      **kv_sorted; /* kv sorted by key, for lookup and duplicate checks */
    gguf_tensor   *tensors;
    int            n_tensors;
    gguf_tensor  **sorted; /* tensors sorted by name, for lookup and duplicate checks */
    uint64_t      *rel;    /* tensor data offsets relative to the data section, while parsing */
    size_t         alignment;
    size_t         data_off;
};

/* ---- little-endian cursor over the untrusted bytes ---- */

typedef struct cursor {
    const uint8_t *buf;
    size_t         size, pos;
    const char    *name;
    assay_error   *err;
} cursor;

static int cur_need(cursor *c, size_t n, const char *what) {
    if (n > c->size - c->pos)
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: truncated at byte %zu: %s needs %zu bytes, %zu remain", c->name,
                          c->pos, what, n, c->size - c->pos);
    return 0;
}

static int cur_u32(cursor *c, uint32_t *out, const char *what) {
    if (cur_need(c, 4, what))
        return -1;
    memcpy(out, c->buf + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int cur_u64(cursor *c, uint64_t *out, const char *what) {
    if (cur_need(c, 8, what))
        return -1;
    memcpy(out, c->buf + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* A GGUF string: u64 length then bytes (not NUL-terminated). */
static int cur_str(cursor *c, size_t *off, size_t *len, const char *what) {
    uint64_t n;
    size_t   at = c->pos;
    if (cur_u64(c, &n, what))
        return -1;
    if (n > c->size - c->pos)
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: %s at byte %zu has length %llu, only %zu bytes remain", c->name,
                          what, at, (unsigned long long)n, c->size - c->pos);
    *off = c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return 0;
}

static size_t scalar_size(int type) {
    switch (type) {
    case GGUF_T_U8:
    case GGUF_T_I8:
    case GGUF_T_BOOL: return 1;
    case GGUF_T_U16:
    case GGUF_T_I16: return 2;
    case GGUF_T_U32:
    case GGUF_T_I32:
    case GGUF_T_F32: return 4;
    case GGUF_T_U64:
    case GGUF_T_I64:
    case GGUF_T_F64: return 8;
    default: return 0;
    }
}

/* Skips one value of `type` (validating it); nested arrays bounded by depth. */
static int cur_skip_value(cursor *c, int type, int depth, const char *key) {
    size_t sz = scalar_size(type);
    if (sz)
        return cur_need(c, sz, key) ? -1 : (c->pos += sz, 0);
    if (type == GGUF_T_STRING) {
        size_t off, len;
        return cur_str(c, &off, &len, key);
    }
    if (type != GGUF_T_ARRAY)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: key '%s': unknown value type %d at byte %zu",
                          c->name, key, type, c->pos);
    if (depth >= GGUF_MAX_ARR_DEPTH)
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: key '%s': arrays nested deeper than %d levels", c->name, key,
                          GGUF_MAX_ARR_DEPTH);
    uint32_t et;
    uint64_t n;
    if (cur_u32(c, &et, key) || cur_u64(c, &n, key))
        return -1;
    size_t esz = scalar_size((int)et);
    if (esz) {
        if (n > (c->size - c->pos) / esz)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: key '%s': array of %llu elements at byte %zu exceeds the file",
                              c->name, key, (unsigned long long)n, c->pos);
        c->pos += (size_t)n * esz;
        return 0;
    }
    /* Strings need at least 8 bytes each, arrays 12: refuse counts the file cannot hold. */
    size_t min = et == GGUF_T_STRING ? 8 : 12;
    if (n > (c->size - c->pos) / min)
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: key '%s': array of %llu elements at byte %zu exceeds the file",
                          c->name, key, (unsigned long long)n, c->pos);
    for (uint64_t i = 0; i < n; i++)
        if (cur_skip_value(c, (int)et, depth + 1, key))
            return -1;
    return 0;
}

/* ---- ggml types ---- */

static const char *const type_names[] = {
    [0] = "F32",     [1] = "F16",      [2] = "Q4_0",   [3] = "Q4_1",    [6] = "Q5_0",
    [7] = "Q5_1",    [8] = "Q8_0",     [9] = "Q8_1",   [10] = "Q2_K",   [11] = "Q3_K",
    [12] = "Q4_K",   [13] = "Q5_K",    [14] = "Q6_K",  [15] = "Q8_K",   [16] = "IQ2_XXS",
    [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",
    [22] = "IQ2_S",  [23] = "IQ4_XS",  [24] = "I8",    [25] = "I16",    [26] = "I32",
    [27] = "I64",    [28] = "F64",     [29] = "IQ1_M", [30] = "BF16",   [34] = "TQ1_0",
    [35] = "TQ2_0",  [39] = "MXFP4",
};

const char *ggml_type_name(int type) {
    static _Thread_local char buf[24];
    if (type >= 0 && (size_t)type < sizeof type_names / sizeof type_names[0] && type_names[type])
        return type_names[type];
    snprintf(buf, sizeof buf, "type %d", type);
    return buf;
}

int gguf_type_supported(int type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
           type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1;
}

/* Elements per block and bytes per block; 0 when we do not know the layout. */
static int type_layout(int type, size_t *blck, size_t *bytes) {
    switch (type) {
    case GGML_TYPE_F32:
        *blck  = 1;
        *bytes = 4;
        return 1;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        *blck  = 1;
        *bytes = 2;
        return 1;
    case GGML_TYPE_Q8_0:
        *blck  = 32;
        *bytes = 34;
        return 1;
    case GGML_TYPE_Q4_0:
        *blck  = 32;
        *bytes = 18;
        return 1;
    case GGML_TYPE_Q4_1:
        *blck  = 32;
        *bytes = 20;
        return 1;
    default: return 0;
    }
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int gguf_dequantize(float *dst, const void *src, int type, int64_t n) {
    const uint8_t *s = src;
    if (n < 0)
        return -1;
    switch (type) {
    case GGML_TYPE_F32: memcpy(dst, s, (size_t)n * 4); return 0;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(rd16(s + 2 * i));
        return 0;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(rd16(s + 2 * i));
        return 0;
    case GGML_TYPE_Q8_0:
        if (n % 32)
            return -1;
        for (int64_t b = 0; b < n / 32; b++, s += 34, dst += 32) {
            float d = f16_to_f32(rd16(s));
            for (int j = 0; j < 32; j++)
                dst[j] = (float)(int8_t)s[2 + j] * d;
        }
        return 0;
    case GGML_TYPE_Q4_0:
        if (n % 32)
            return -1;
        for (int64_t b = 0; b < n / 32; b++, s += 18, dst += 32) {
            float d = f16_to_f32(rd16(s));
            for (int j = 0; j < 16; j++) {
                dst[j]      = (float)((s[2 + j] & 0x0f) - 8) * d;
                dst[j + 16] = (float)((s[2 + j] >> 4) - 8) * d;
            }
        }
        return 0;
    case GGML_TYPE_Q4_1:
        if (n % 32)
            return -1;
        for (int64_t b = 0; b < n / 32; b++, s += 20, dst += 32) {
            float d = f16_to_f32(rd16(s)), m = f16_to_f32(rd16(s + 2));
            for (int j = 0; j < 16; j++) {
                dst[j]      = (float)(s[4 + j] & 0x0f) * d + m;
                dst[j + 16] = (float)(s[4 + j] >> 4) * d + m;
            }
        }
        return 0;
    default: return -1;
    }
}

/* ---- open ---- */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(gguf_tensor *const *)a)->name, (*(gguf_tensor *const *)b)->name);
}

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp((*(gguf_kv *const *)a)->key, (*(gguf_kv *const *)b)->key);
}

static const gguf_kv *find_kv(const gguf_file *f, const char *key) {
    if (!f->kv_sorted || f->n_kv == 0)
        return NULL;
    gguf_kv         probe = {.key = (char *)key}, *pp = &probe;
    gguf_kv *const *hit = bsearch(&pp, f->kv_sorted, (size_t)f->n_kv, sizeof pp, cmp_kv_key);
    return hit ? *hit : NULL;
}

static int parse_kv(gguf_file *f, cursor *c, gguf_kv *kv) {
    size_t koff, klen;
    if (cur_str(c, &koff, &klen, "metadata key"))
        return -1;
    if (klen == 0 || klen > GGUF_MAX_NAME || memchr(c->buf + koff, 0, klen))
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: metadata key at byte %zu is empty, longer than %d bytes or holds "
                          "a NUL byte",
                          f->name, koff, GGUF_MAX_NAME);
    kv->key = strndup((const char *)c->buf + koff, klen);
    if (!kv->key)
        return assay_fail(c->err, ASSAY_ENOMEM, "%s: out of memory", f->name);
    uint32_t t;
    if (cur_u32(c, &t, kv->key))
        return -1;
    kv->type = (int)t;
    if (t == GGUF_T_STRING)
        return cur_str(c, &kv->off, &kv->len, kv->key);
    if (t != GGUF_T_ARRAY) {
        kv->off = c->pos;
        return cur_skip_value(c, kv->type, 0, kv->key);
    }
    uint32_t et;
    uint64_t n;
    if (cur_u32(c, &et, kv->key) || cur_u64(c, &n, kv->key))
        return -1;
    kv->elem_type = (int)et;
    kv->off       = c->pos;
    if (n > INT64_MAX)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: key '%s': array count %llu too large",
                          f->name, kv->key, (unsigned long long)n);
    kv->n = (int64_t)n;
    if (et == GGUF_T_STRING) {
        if (n > (c->size - c->pos) / 8)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: key '%s': %llu strings at byte %zu exceed the file", f->name,
                              kv->key, (unsigned long long)n, c->pos);
        kv->str_off = malloc(((size_t)n ? (size_t)n : 1) * sizeof *kv->str_off);
        if (!kv->str_off)
            return assay_fail(c->err, ASSAY_ENOMEM, "%s: out of memory", f->name);
        for (uint64_t i = 0; i < n; i++) {
            size_t off, len;
            kv->str_off[i] = c->pos;
            if (cur_str(c, &off, &len, kv->key))
                return -1;
        }
        return 0;
    }
    /* Re-read the array header through the generic walker so nested arrays are bounded too. */
    c->pos = kv->off - 12;
    return cur_skip_value(c, GGUF_T_ARRAY, 0, kv->key);
}

static int parse_tensor(gguf_file *f, cursor *c, int i) {
    gguf_tensor *t = &f->tensors[i];
    size_t       noff, nlen;
    if (cur_str(c, &noff, &nlen, "tensor name"))
        return -1;
    if (nlen == 0 || nlen > GGUF_MAX_NAME || memchr(c->buf + noff, 0, nlen))
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: tensor %d name at byte %zu is empty, longer than %d bytes or holds "
                          "a NUL byte",
                          f->name, i, noff, GGUF_MAX_NAME);
    char *name = strndup((const char *)c->buf + noff, nlen);
    if (!name)
        return assay_fail(c->err, ASSAY_ENOMEM, "%s: out of memory", f->name);
    t->name = name;
    uint32_t nd;
    if (cur_u32(c, &nd, name))
        return -1;
    if (nd < 1 || nd > 4)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: tensor '%s' has %u dimensions, expected 1..4",
                          f->name, name, nd);
    t->ndim        = (int)nd;
    uint64_t total = 1;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if (cur_u64(c, &ne, name))
            return -1;
        if (ne == 0 || ne > INT64_MAX || total > (uint64_t)INT64_MAX / ne)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: tensor '%s' dimension %u is %llu: must be > 0 and the element "
                              "count must fit in 63 bits",
                              f->name, name, d, (unsigned long long)ne);
        total *= ne;
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    uint64_t off;
    if (cur_u32(c, &type, name) || cur_u64(c, &off, name))
        return -1;
    t->type = (int)type;
    if (off % f->alignment)
        return assay_fail(c->err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data offset %llu is not a multiple of the alignment %zu",
                          f->name, name, (unsigned long long)off, f->alignment);
    f->rel[i] = off;
    return 0;
}

/* Resolves each tensor's data pointer and size once the data section start is known. */
static int place_tensor(gguf_file *f, gguf_tensor *t, uint64_t rel, assay_error *err) {
    size_t start;
    if (rel > SIZE_MAX || size_add(f->data_off, (size_t)rel, &start) || start > f->size)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' data starts at byte %zu + %llu, past the end of the "
                          "file (%zu bytes)",
                          f->name, t->name, f->data_off, (unsigned long long)rel, f->size);
    size_t blck, bsz;
    if (!type_layout(t->type, &blck, &bsz)) {
        t->data   = f->buf + start;
        t->nbytes = 0;
        return 0;
    }
    if (t->ne[0] % (int64_t)blck)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' has type %s but its row length %lld is not a multiple "
                          "of the block size %zu",
                          f->name, t->name, ggml_type_name(t->type), (long long)t->ne[0], blck);
    size_t nel = 1, nbytes;
    for (int d = 0; d < t->ndim; d++)
        nel *= (size_t)t->ne[d]; /* fits: checked against INT64_MAX at parse time */
    size_t end;
    if (size_mul(nel / blck, bsz, &nbytes) || size_add(start, nbytes, &end) || end > f->size)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor '%s' (%s, %zu elements) ends past the end of the file "
                          "(data at byte %zu, file is %zu bytes)",
                          f->name, t->name, ggml_type_name(t->type), nel, start, f->size);
    t->data   = f->buf + start;
    t->nbytes = nbytes;
    return 0;
}

static int gguf_parse(gguf_file *f, assay_error *err) {
    cursor   c = {f->buf, f->size, 0, f->name, err};
    uint32_t magic;
    if (f->size < 4 || memcmp(f->buf, "GGUF", 4) != 0)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", f->name);
    cur_u32(&c, &magic, "magic");
    if (cur_u32(&c, &f->version, "version"))
        return -1;
    if (f->version != 2 && f->version != 3)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: GGUF version %u is not supported (versions 2 and 3 are)", f->name,
                          f->version);
    uint64_t nt, nkv;
    if (cur_u64(&c, &nt, "tensor count") || cur_u64(&c, &nkv, "metadata count"))
        return -1;
    /* A tensor info takes at least 8+4+8+4+8 bytes, a key/value at least 8+1+4+1. */
    if (nt > GGUF_MAX_TENSORS || nt > (f->size - c.pos) / 32)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tensor count %llu is not plausible for a %zu-byte file", f->name,
                          (unsigned long long)nt, f->size);
    if (nkv > GGUF_MAX_KV || nkv > (f->size - c.pos) / 14)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: metadata count %llu is not plausible for a %zu-byte file", f->name,
                          (unsigned long long)nkv, f->size);
    f->kv      = calloc(nkv ? nkv : 1, sizeof *f->kv);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    f->sorted  = calloc(nt ? nt : 1, sizeof *f->sorted);
    f->rel     = calloc(nt ? nt : 1, sizeof *f->rel);
    if (!f->kv || !f->tensors || !f->sorted || !f->rel)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->name);
    for (uint64_t i = 0; i < nkv; i++) {
        f->n_kv = (int)i + 1; /* so cleanup frees what parse_kv allocated */
        if (parse_kv(f, &c, &f->kv[i]))
            return -1;
    }
    /* Sorted, not pairwise: a file may hold up to GGUF_MAX_KV keys. */
    f->kv_sorted = calloc(nkv ? nkv : 1, sizeof *f->kv_sorted);
    if (!f->kv_sorted)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", f->name);
    for (int i = 0; i < f->n_kv; i++)
        f->kv_sorted[i] = &f->kv[i];
    qsort(f->kv_sorted, (size_t)f->n_kv, sizeof *f->kv_sorted, cmp_kv_key);
    for (int i = 1; i < f->n_kv; i++)
        if (!strcmp(f->kv_sorted[i - 1]->key, f->kv_sorted[i]->key))
            return assay_fail(err, ASSAY_EFORMAT, "%s: metadata key '%s' appears twice", f->name,
                              f->kv_sorted[i]->key);
    f->alignment = GGUF_DEFAULT_ALIGN;
    int64_t al;
    if (gguf_get_int(f, "general.alignment", &al) == 0) {
        if (al <= 0 || al > (1 << 30) || (al & (al - 1)))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: general.alignment is %lld, expected a power of two", f->name,
                              (long long)al);
        f->alignment = (size_t)al;
    } else if (find_kv(f, "general.alignment")) {
        return assay_fail(err, ASSAY_EFORMAT, "%s: general.alignment must be an integer", f->name);
    }
    for (uint64_t i = 0; i < nt; i++) {
        f->n_tensors = (int)i + 1;
        if (parse_tensor(f, &c, (int)i))
            return -1;
    }
    size_t pad  = (f->alignment - c.pos % f->alignment) % f->alignment;
    f->data_off = c.pos + pad;
    if (nt > 0 && f->data_off > f->size)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: truncated: the tensor data section starts at byte %zu, the file "
                          "has %zu bytes",
                          f->name, f->data_off, f->size);
    for (int i = 0; i < f->n_tensors; i++)
        if (place_tensor(f, &f->tensors[i], f->rel[i], err))
            return -1;
    for (int i = 0; i < f->n_tensors; i++)
        f->sorted[i] = &f->tensors[i];
    qsort(f->sorted, (size_t)f->n_tensors, sizeof *f->sorted, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->sorted[i]->name, f->sorted[i - 1]->name))
            return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' appears twice", f->name,
                              f->sorted[i]->name);
    return 0;
}

gguf_file *gguf_open_buffer(const uint8_t *buf, size_t size, const char *name, assay_error *err) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    f->buf  = buf;
    f->size = size;
    f->name = strdup(name ? name : "<buffer>");
    if (!f->name) {
        free(f);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    if (gguf_parse(f, err)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

gguf_file *gguf_open(const char *path, assay_error *err) {
    mapped_file m;
    if (file_map(&m, path, err))
        return NULL;
    gguf_file *f = gguf_open_buffer(m.data, m.size, path, err);
    if (!f) {
        file_unmap(&m);
        return NULL;
    }
    f->map = m;
    return f;
}

void gguf_close(gguf_file *f) {
    if (!f)
        return;
    for (int i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str_off);
    }
    for (int i = 0; i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->kv);
    free(f->kv_sorted);
    free(f->tensors);
    free(f->sorted);
    free(f->rel);
    free(f->name);
    file_unmap(&f->map);
    free(f);
}

/* ---- accessors ---- */

uint32_t    gguf_version(const gguf_file *f) { return f->version; }
const void *gguf_header(const gguf_file *f, size_t *nbytes) {
    /* a file without tensors may end inside the alignment padding */
    *nbytes = f->data_off < f->size ? f->data_off : f->size;
    return f->buf;
}
int gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }
int gguf_n_kv(const gguf_file *f) { return f->n_kv; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c   = strcmp(name, f->sorted[mid]->name);
        if (c == 0)
            return f->sorted[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *gguf_kv_key(const gguf_file *f, int i) {
    return i >= 0 && i < f->n_kv ? f->kv[i].key : NULL;
}

/* Reads one scalar at p as int (ok=1) or float (ok=2); 0 when not a number. */
static int read_scalar(const uint8_t *p, int type, int64_t *iv, double *dv) {
    union {
        uint8_t  u8;
        int8_t   i8;
        uint16_t u16;
        int16_t  i16;
        uint32_t u32;
        int32_t  i32;
        float    f32;
        uint64_t u64;
        int64_t  i64;
        double   f64;
    } v;
    size_t sz = scalar_size(type);
    if (!sz)
        return 0;
    memcpy(&v, p, sz);
    switch (type) {
    case GGUF_T_U8:
    case GGUF_T_BOOL: *iv = v.u8; break;
    case GGUF_T_I8: *iv = v.i8; break;
    case GGUF_T_U16: *iv = v.u16; break;
    case GGUF_T_I16: *iv = v.i16; break;
    case GGUF_T_U32: *iv = v.u32; break;
    case GGUF_T_I32: *iv = v.i32; break;
    case GGUF_T_U64:
        if (v.u64 > INT64_MAX)
            return 0;
        *iv = (int64_t)v.u64;
        break;
    case GGUF_T_I64: *iv = v.i64; break;
    case GGUF_T_F32: *dv = v.f32; return 2;
    case GGUF_T_F64: *dv = v.f64; return 2;
    default: return 0;
    }
    *dv = (double)*iv;
    return 1;
}

int gguf_get_int(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = find_kv(f, key);
    int64_t        iv;
    double         dv;
    if (!kv || read_scalar(f->buf + kv->off, kv->type, &iv, &dv) != 1)
        return -1;
    *out = iv;
    return 0;
}

int gguf_get_float(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = find_kv(f, key);
    int64_t        iv;
    double         dv;
    if (!kv || !read_scalar(f->buf + kv->off, kv->type, &iv, &dv) || kv->type == GGUF_T_BOOL)
        return -1;
    *out = dv;
    return 0;
}

const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_T_STRING)
        return NULL;
    if (len)
        *len = kv->len;
    return (const char *)f->buf + kv->off;
}

int64_t gguf_get_arr_n(const gguf_file *f, const char *key, int *elem_type) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY)
        return -1;
    if (elem_type)
        *elem_type = kv->elem_type;
    return kv->n;
}

const char *gguf_get_arr_str(const gguf_file *f, const char *key, int64_t i, size_t *len) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || kv->elem_type != GGUF_T_STRING || i < 0 || i >= kv->n)
        return NULL;
    uint64_t n;
    memcpy(&n, f->buf + kv->str_off[i], 8);
    if (len)
        *len = (size_t)n;
    return (const char *)f->buf + kv->str_off[i] + 8;
}

static int arr_scalar(const gguf_file *f, const char *key, int64_t i, int64_t *iv, double *dv) {
    const gguf_kv *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || i < 0 || i >= kv->n)
        return 0;
    size_t sz = scalar_size(kv->elem_type);
    if (!sz)
        return 0;
    return read_scalar(f->buf + kv->off + (size_t)i * sz, kv->elem_type, iv, dv);
}

int gguf_get_arr_float(const gguf_file *f, const char *key, int64_t i, double *out) {
    int64_t iv;
    double  dv;
    if (!arr_scalar(f, key, i, &iv, &dv))
        return -1;
    *out = dv;
    return 0;
}

int gguf_get_arr_int(const gguf_file *f, const char *key, int64_t i, int64_t *out) {
    int64_t iv;
    double  dv;
    if (arr_scalar(f, key, i, &iv, &dv) != 1)
        return -1;
    *out = iv;
    return 0;
}

/* ---- llama metadata → model_config ---- */

static int req_int(const gguf_file *f, const char *key, int64_t lo, int64_t hi, int *out,
                   assay_error *err) {
    int64_t v;
    if (gguf_get_int(f, key, &v)) {
        if (find_kv(f, key)) /* e.g. a per-layer array, which a Llama config cannot express */
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: metadata '%s' is not a single integer (type %d)", f->name, key,
                              find_kv(f, key)->type);
        return assay_fail(err, ASSAY_EFORMAT, "%s: metadata key '%s' (an integer) is missing",
                          f->name, key);
    }
    if (v < lo || v > hi)
        return assay_fail(err, ASSAY_EFORMAT, "%s: metadata '%s' is %lld, expected %lld..%lld",
                          f->name, key, (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

static int opt_int(const gguf_file *f, const char *key, int64_t lo, int64_t hi, int def, int *out,
                   assay_error *err) {
    if (!find_kv(f, key)) {
        *out = def;
        return 0;
    }
    return req_int(f, key, lo, hi, out, err);
}

int gguf_to_config(const gguf_file *f, model_config *cfg, assay_error *err) {
    memset(cfg, 0, sizeof *cfg);
    size_t      alen;
    const char *arch = gguf_get_str(f, "general.architecture", &alen);
    if (!arch)
        return assay_fail(err, ASSAY_EFORMAT, "%s: metadata 'general.architecture' is missing",
                          f->name);
    if (alen != 5 || memcmp(arch, "llama", 5))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: architecture '%.*s' is not supported; supported: llama", f->name,
                          (int)(alen > 64 ? 64 : alen), arch);
    cfg->arch = ARCH_LLAMA;
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "LlamaForCausalLM");
    snprintf(cfg->model_type, sizeof cfg->model_type, "llama");
    const int BIG = 1 << 30;
    if (req_int(f, "llama.block_count", 1, 1 << 16, &cfg->n_layers, err) ||
        req_int(f, "llama.embedding_length", 1, BIG, &cfg->dim, err) ||
        req_int(f, "llama.attention.head_count", 1, 1 << 16, &cfg->n_heads, err) ||
        opt_int(f, "llama.attention.head_count_kv", 1, 1 << 16, cfg->n_heads, &cfg->n_kv_heads,
                err) ||
        req_int(f, "llama.feed_forward_length", 1, BIG, &cfg->ffn_dim, err) ||
        req_int(f, "llama.context_length", 1, BIG, &cfg->max_pos, err))
        return err ? err->code : ASSAY_EFORMAT;
    if (cfg->n_heads > cfg->dim || cfg->n_heads % cfg->n_kv_heads)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: %d attention heads, %d key/value heads and width %d do not fit "
                          "together (heads must be a multiple of key/value heads)",
                          f->name, cfg->n_heads, cfg->n_kv_heads, cfg->dim);
    int def_hd = cfg->dim % cfg->n_heads ? 0 : cfg->dim / cfg->n_heads;
    if (opt_int(f, "llama.attention.key_length", 1, 1 << 16, def_hd, &cfg->head_dim, err))
        return err ? err->code : ASSAY_EFORMAT;
    int vlen;
    if (opt_int(f, "llama.attention.value_length", 1, 1 << 16, cfg->head_dim, &vlen, err))
        return err ? err->code : ASSAY_EFORMAT;
    if (cfg->head_dim == 0 || cfg->head_dim % 2 || vlen != cfg->head_dim)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: head size %d (value size %d) is not an even size usable by "
                          "LlamaForCausalLM",
                          f->name, cfg->head_dim, vlen);
    int rope_dim;
    if (opt_int(f, "llama.rope.dimension_count", 1, 1 << 16, cfg->head_dim, &rope_dim, err))
        return err ? err->code : ASSAY_EFORMAT;
    if (rope_dim != cfg->head_dim)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: llama.rope.dimension_count is %d but the head size is %d; partial "
                          "rotary embeddings are not expressible in a Llama config",
                          f->name, rope_dim, cfg->head_dim);
    double v;
    if (gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &v))
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: metadata 'llama.attention.layer_norm_rms_epsilon' is missing",
                          f->name);
    if (!(v > 0 && v < 1))
        return assay_fail(err, ASSAY_EFORMAT, "%s: rms norm epsilon %g is not in (0, 1)", f->name,
                          v);
    cfg->norm_eps   = (float)v;
    cfg->norm       = NORM_RMS;
    cfg->act        = ACT_SILU;
    cfg->rope       = ROPE_DEFAULT;
    cfg->rope_theta = 10000.0f;
    if (gguf_get_float(f, "llama.rope.freq_base", &v) == 0) {
        if (!(v > 0))
            return assay_fail(err, ASSAY_EFORMAT, "%s: llama.rope.freq_base %g is not positive",
                              f->name, v);
        cfg->rope_theta = (float)v;
    }
    size_t      slen;
    const char *st         = gguf_get_str(f, "llama.rope.scaling.type", &slen);
    double      factor     = 0;
    int         has_factor = gguf_get_float(f, "llama.rope.scaling.factor", &factor) == 0;
    if (!st && gguf_get_float(f, "llama.rope.scale_linear", &factor) == 0) {
        st = "linear", slen = 6, has_factor = 1;
    }
    if (st && !(slen == 4 && !memcmp(st, "none", 4))) {
        if (slen == 6 && !memcmp(st, "linear", 6)) {
            if (!has_factor || !(factor > 0))
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s: linear rope scaling without a positive factor", f->name);
            if (factor != 1.0) {
                cfg->rope        = ROPE_LINEAR;
                cfg->rope_factor = (float)factor;
            }
        } else {
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: rope scaling type '%.*s' is not supported; supported: none, "
                              "linear",
                              f->name, (int)(slen > 32 ? 32 : slen), st);
        }
    }
    if (gguf_find_tensor(f, "rope_freqs.weight"))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: tensor 'rope_freqs.weight' (per-frequency rope factors, as in "
                          "Llama 3.1) cannot be expressed in the converted config",
                          f->name);
    int64_t n_tok = gguf_get_arr_n(f, "tokenizer.ggml.tokens", NULL);
    if (n_tok > 0) {
        if (n_tok > BIG)
            return assay_fail(err, ASSAY_EFORMAT, "%s: %lld tokens is too many", f->name,
                              (long long)n_tok);
        cfg->vocab_size = (int)n_tok;
    } else if (req_int(f, "llama.vocab_size", 1, BIG, &cfg->vocab_size, err)) {
        return err ? err->code : ASSAY_EFORMAT;
    }
    cfg->bos_token_id = cfg->eos_token_id = -1;
    int64_t id;
    if (gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id) == 0 && id >= 0 && id < cfg->vocab_size)
        cfg->bos_token_id = (int)id;
    if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id) == 0 && id >= 0 && id < cfg->vocab_size)
        cfg->eos_token_id = (int)id;
    cfg->tie_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    return ASSAY_OK;
}

int gguf_check_tensors(const gguf_file *f, const model_config *cfg, const char *where,
                       assay_error *err) {
    int                n = 0;
    const arch_tensor *a = arch_tensors(cfg->arch, &n);
    char               name[128];
    for (int l = -1; l < cfg->n_layers; l++)
        for (int k = 0; k < n; k++) {
            const arch_tensor *t = &a[k];
            if ((t->section == 1) != (l >= 0) || !arch_present(cfg, t))
                continue;
            if (!t->gguf)
                return assay_fail(err, ASSAY_EUNSUPPORTED,
                                  "%s: %s has no GGUF name for tensor '%s'", where, cfg->arch_name,
                                  t->name);
            if (l >= 0)
                snprintf(name, sizeof name, "blk.%d.%s", l, t->gguf);
            else
                snprintf(name, sizeof name, "%s", t->gguf);
            const gguf_tensor *g = gguf_find_tensor(f, name);
            if (!g && t->when == WHEN_UNTIED && cfg->tie_embeddings)
                continue;
            if (!g)
                return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is missing", where, name);
            int64_t rows = arch_dim_size(cfg, t->rows), cols = arch_dim_size(cfg, t->cols);
            /* ggml ne = [cols, rows]: ne[0] varies fastest */
            int ok = cols ? g->ndim == 2 && g->ne[0] == cols && g->ne[1] == rows
                          : g->ndim == 1 && g->ne[0] == rows;
            if (!ok)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s: tensor '%s' has ne [%lld, %lld] (%d dims), expected "
                                  "[%lld, %lld] from the metadata",
                                  where, name, (long long)g->ne[0], (long long)g->ne[1], g->ndim,
                                  (long long)(cols ? cols : rows), (long long)(cols ? rows : 1));
            if (!gguf_type_supported(g->type))
                return assay_fail(err, ASSAY_EUNSUPPORTED,
                                  "%s: tensor '%s' has type %s; supported: F32, F16, BF16, Q8_0, "
                                  "Q4_0, Q4_1",
                                  where, name, ggml_type_name(g->type));
        }
    return ASSAY_OK;
}
