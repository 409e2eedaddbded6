/* tests/test_gguf.c — the GGUF reader on the fixtures of tools/make_gguf_fixtures.py, the
 * dequantization of every supported type against the gguf package, and malformed files. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"
#include "core/util.h"
#include "loader/gguf.h"
#include "loader/safetensors.h"
#include "tests/helpers.h"

#define TINY "tests/fixtures/gguf/tiny.gguf"
#define META "tests/fixtures/gguf/meta.gguf"
#define EXPECTED "tests/fixtures/gguf/tiny_expected.safetensors"

static uint8_t *read_file(const char *path, size_t *n) {
    char       *buf = NULL;
    assay_error err;
    cr_assert_eq(file_read_all(path, &buf, n, &err), 0, "%s", err.msg);
    return (uint8_t *)buf;
}

/* Byte offset of the first occurrence of needle in buf (the tests patch fields found this way). */
static size_t find_bytes(const uint8_t *buf, size_t n, const void *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(buf + i, needle, m))
            return i;
    cr_assert_fail("pattern not found");
    return 0;
}

/* Opens a mutated buffer that must be rejected with `code`, the file name and `what` in the
 * message. */
static void expect_reject(const uint8_t *buf, size_t n, int code, const char *what) {
    assay_error err;
    assay_error_clear(&err);
    gguf_file *f = gguf_open_buffer(buf, n, "bad.gguf", &err);
    cr_assert_null(f, "accepted a file that should fail with '%s'", what);
    cr_assert_eq(err.code, code, "code %d, message: %s", err.code, err.msg);
    cr_assert(strstr(err.msg, "bad.gguf") != NULL, "message does not name the file: %s", err.msg);
    cr_assert(strstr(err.msg, what) != NULL, "message lacks '%s': %s", what, err.msg);
}

Test(gguf, reads_the_tiny_llama_directory) {
    assay_error err;
    gguf_file  *f = gguf_open(TINY, &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_eq(gguf_version(f), 3);
    cr_assert_eq(gguf_n_tensors(f), 20);
    int64_t v;
    cr_assert_eq(gguf_get_int(f, "llama.block_count", &v), 0);
    cr_assert_eq(v, 2);
    size_t      len;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    cr_assert(arch && len == 5 && !memcmp(arch, "llama", 5));
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->type, GGML_TYPE_Q4_1);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->ne[0], 32); /* FFN: the row length */
    cr_assert_eq(t->ne[1], 32);
    cr_assert_eq(t->nbytes, 32 * 20); /* 32 rows of one 20-byte Q4_1 block */
    t = gguf_find_tensor(f, "token_embd.weight");
    cr_assert_eq(t->type, GGML_TYPE_Q8_0);
    cr_assert_eq(t->ne[0], 32);
    cr_assert_eq(t->nbytes, (size_t)t->ne[1] * 34);
    cr_assert_null(gguf_find_tensor(f, "output.weight"));
    int et;
    cr_assert_eq(gguf_get_arr_n(f, "tokenizer.ggml.tokens", &et), t->ne[1]);
    cr_assert_eq(et, GGUF_T_STRING);
    const char *tok = gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &len);
    cr_assert(tok && len == 3 && !memcmp(tok, "<s>", 3));
    cr_assert_null(gguf_get_arr_str(f, "tokenizer.ggml.tokens", t->ne[1], &len));
    for (int i = 0; i < gguf_n_tensors(f); i++) /* every tensor lies inside the file */
        cr_assert(gguf_tensor_at(f, i)->nbytes > 0);
    gguf_close(f);
}

Test(gguf, reads_every_metadata_value_type) {
    assay_error err;
    gguf_file  *f = gguf_open(META, &err);
    cr_assert_not_null(f, "%s", err.msg);
    const struct {
        const char *key;
        int64_t     v;
    } ints[] = {{"t.u8", 200},        {"t.i8", -100},          {"t.u16", 60000},
                {"t.i16", -30000},    {"t.u32", 4000000000LL}, {"t.i32", -2000000000LL},
                {"t.u64", 1LL << 40}, {"t.i64", -(1LL << 40)}, {"t.bool", 1}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        int64_t v = 0;
        cr_assert_eq(gguf_get_int(f, ints[i].key, &v), 0, "%s", ints[i].key);
        cr_assert_eq(v, ints[i].v, "%s: %lld", ints[i].key, (long long)v);
    }
    double d;
    cr_assert_eq(gguf_get_float(f, "t.f32", &d), 0);
    cr_assert_eq(d, 0.25);
    cr_assert_eq(gguf_get_float(f, "t.f64", &d), 0);
    cr_assert_eq(d, -1.5);
    cr_assert_eq(gguf_get_float(f, "t.i32", &d), 0); /* ints read as floats too */
    cr_assert_eq(d, -2000000000.0);
    int64_t v;
    cr_assert_eq(gguf_get_int(f, "t.f32", &v), -1, "a float is not an int");
    cr_assert_eq(gguf_get_int(f, "t.missing", &v), -1);
    size_t      len;
    const char *s = gguf_get_str(f, "t.str", &len);
    cr_assert(s && len == 6 && !memcmp(s, "h\xc3\xa9llo", 6));
    cr_assert_null(gguf_get_str(f, "t.u8", &len));
    int et;
    cr_assert_eq(gguf_get_arr_n(f, "t.arr_i32", &et), 3);
    cr_assert_eq(et, GGUF_T_I32);
    cr_assert_eq(gguf_get_arr_int(f, "t.arr_i32", 1, &v), 0);
    cr_assert_eq(v, -2);
    cr_assert_eq(gguf_get_arr_int(f, "t.arr_i32", 3, &v), -1, "index past the end");
    cr_assert_eq(gguf_get_arr_float(f, "t.arr_f32", 1, &d), 0);
    cr_assert_eq(d, 1.5);
    cr_assert_eq(gguf_get_arr_n(f, "t.arr_str", &et), 3);
    s = gguf_get_arr_str(f, "t.arr_str", 1, &len);
    cr_assert(s && len == 0);
    s = gguf_get_arr_str(f, "t.arr_str", 2, &len);
    cr_assert(s && len == 3 && !memcmp(s, "ccc", 3));
    cr_assert_eq(gguf_get_arr_n(f, "t.arr_nested", &et), 2);
    cr_assert_eq(et, GGUF_T_ARRAY);
    cr_assert_eq(gguf_get_arr_int(f, "t.arr_nested", 0, &v), -1, "nested elements are not ints");
    cr_assert_eq(gguf_get_arr_n(f, "t.u8", &et), -1);
    int found = 0;
    for (int i = 0; i < gguf_n_kv(f); i++)
        found += !strcmp(gguf_kv_key(f, i), "t.arr_nested");
    cr_assert_eq(found, 1);
    cr_assert_null(gguf_kv_key(f, gguf_n_kv(f)));
    gguf_close(f);
}

/* The gguf package's numpy dequantization and ours both compute d*q (+ m) in float32 from the
 * same f16 scales, so the values must be bitwise equal (x86-64: no FMA contraction). */
Test(gguf, dequantizes_every_type_exactly_like_the_gguf_package) {
    assay_error err;
    gguf_file  *f = gguf_open(TINY, &err);
    cr_assert_not_null(f, "%s", err.msg);
    st_file *e = st_open(EXPECTED, &err);
    cr_assert_not_null(e, "%s", err.msg);
    int seen[64] = {0};
    for (int i = 0; i < st_file_count(e); i++) {
        const st_tensor *x = st_file_tensor(e, i);
        char             name[128];
        snprintf(name, sizeof name, "%s", x->name);
        char *cut = strstr(name, "[:");
        if (cut)
            *cut = '\0'; /* "token_embd.weight[:32]": its first rows only */
        const gguf_tensor *t = gguf_find_tensor(f, name);
        cr_assert_not_null(t, "%s", name);
        cr_assert_eq(x->dtype, DTYPE_F32);
        size_t n   = x->n_elements;
        float *got = malloc(n * sizeof *got);
        cr_assert_eq(gguf_dequantize(got, t->data, t->type, (int64_t)n), 0, "%s", name);
        for (size_t k = 0; k < n; k++) {
            float want;
            memcpy(&want, (const uint8_t *)x->data + 4 * k, 4);
            cr_assert(memcmp(&got[k], &want, 4) == 0, "%s (%s) element %zu: %.9g vs %.9g", name,
                      ggml_type_name(t->type), k, got[k], want);
        }
        seen[t->type & 63] = 1;
        free(got);
    }
    cr_assert(seen[GGML_TYPE_Q8_0] && seen[GGML_TYPE_Q4_0] && seen[GGML_TYPE_Q4_1] &&
              seen[GGML_TYPE_F16] && seen[GGML_TYPE_BF16]);
    st_close(e);
    gguf_close(f);
}

/* Hand-made blocks pin the layout independently of any fixture: low nibbles are elements
 * 0..15, high nibbles 16..31. */
Test(gguf, dequantizes_hand_made_blocks) {
    uint8_t  q40[18], q41[20], q80[34];
    float    out[32];
    uint16_t two = f32_to_f16(2.0f), half = f32_to_f16(0.5f);
    memcpy(q40, &two, 2);
    for (int j = 0; j < 16; j++)
        q40[2 + j] = (uint8_t)((j & 15) | ((15 - j) << 4));
    cr_assert_eq(gguf_dequantize(out, q40, GGML_TYPE_Q4_0, 32), 0);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(out[j], 2.0f * (float)(j - 8));
        cr_assert_eq(out[16 + j], 2.0f * (float)(15 - j - 8));
    }
    memcpy(q41, &two, 2);
    memcpy(q41 + 2, &half, 2);
    memcpy(q41 + 4, q40 + 2, 16);
    cr_assert_eq(gguf_dequantize(out, q41, GGML_TYPE_Q4_1, 32), 0);
    for (int j = 0; j < 16; j++) {
        cr_assert_eq(out[j], 2.0f * (float)j + 0.5f);
        cr_assert_eq(out[16 + j], 2.0f * (float)(15 - j) + 0.5f);
    }
    memcpy(q80, &half, 2);
    for (int j = 0; j < 32; j++)
        q80[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
    cr_assert_eq(gguf_dequantize(out, q80, GGML_TYPE_Q8_0, 32), 0);
    for (int j = 0; j < 32; j++)
        cr_assert_eq(out[j], 0.5f * (float)(j * 8 - 128));
    cr_assert_eq(gguf_dequantize(out, q80, GGML_TYPE_Q8_0, 31), -1, "not a whole block");
    cr_assert_eq(gguf_dequantize(out, q80, 13 /* Q5_K */, 256), -1);
}

Test(gguf, names_types_and_says_which_are_supported) {
    cr_assert_str_eq(ggml_type_name(GGML_TYPE_Q8_0), "Q8_0");
    cr_assert_str_eq(ggml_type_name(13), "Q5_K");
    cr_assert_str_eq(ggml_type_name(99), "type 99");
    cr_assert(gguf_type_supported(GGML_TYPE_BF16));
    cr_assert(!gguf_type_supported(13));
    cr_assert(!gguf_type_supported(6)); /* Q5_0 */
}

Test(gguf, maps_llama_metadata_to_a_config) {
    assay_error err;
    gguf_file  *f = gguf_open(TINY, &err);
    cr_assert_not_null(f, "%s", err.msg);
    model_config c;
    cr_assert_eq(gguf_to_config(f, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.arch, ARCH_LLAMA);
    cr_assert_eq(c.n_layers, 2);
    cr_assert_eq(c.dim, 32);
    cr_assert_eq(c.n_heads, 4);
    cr_assert_eq(c.n_kv_heads, 2);
    cr_assert_eq(c.head_dim, 8);
    cr_assert_eq(c.ffn_dim, 32);
    cr_assert_eq(c.max_pos, 128);
    cr_assert_eq(c.vocab_size, (int)gguf_get_arr_n(f, "tokenizer.ggml.tokens", NULL));
    cr_assert_eq(c.rope_theta, 500000.0f);
    cr_assert_eq(c.norm_eps, 1e-5f);
    cr_assert_eq(c.bos_token_id, 1);
    cr_assert_eq(c.eos_token_id, 2);
    cr_assert(c.tie_embeddings, "no output.weight: tied");
    gguf_close(f);
}

Test(gguf, maps_stories260k_metadata_to_a_config) {
    SHARED_OR_SKIP(path, "models/stories260K/stories260K.gguf");
    assay_error err;
    gguf_file  *f = gguf_open(path, &err);
    cr_assert_not_null(f, "%s", err.msg);
    model_config c;
    cr_assert_eq(gguf_to_config(f, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.n_layers, 5);
    cr_assert_eq(c.dim, 64);
    cr_assert_eq(c.n_heads, 8);
    cr_assert_eq(c.n_kv_heads, 4);
    cr_assert_eq(c.ffn_dim, 172);
    cr_assert_eq(c.vocab_size, 512);
    cr_assert_eq(c.rope_theta, 10000.0f, "freq_base absent: the default");
    cr_assert(!c.tie_embeddings);
    gguf_close(f);
}

Test(gguf, rejects_a_non_llama_architecture) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    size_t   at  = find_bytes(buf, n, "llama", 5); /* the general.architecture value */
    memcpy(buf + at, "gemma", 5);
    assay_error err;
    gguf_file  *f = gguf_open_buffer(buf, n, "arch.gguf", &err);
    cr_assert_not_null(f, "%s", err.msg);
    model_config c;
    cr_assert_eq(gguf_to_config(f, &c, &err), ASSAY_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "arch.gguf") && strstr(err.msg, "gemma"), "%s", err.msg);
    gguf_close(f);
    free(buf);
}

Test(gguf, rejects_bad_magic_and_version_1) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    buf[0]       = 'X';
    expect_reject(buf, n, ASSAY_EFORMAT, "not a GGUF file");
    buf[0]      = 'G';
    uint32_t v1 = 1;
    memcpy(buf + 4, &v1, 4);
    expect_reject(buf, n, ASSAY_EUNSUPPORTED, "version 1");
    free(buf);
}

Test(gguf, rejects_every_truncation_of_the_header) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    /* the data section starts after the header: find where the first tensor's bytes begin */
    assay_error err;
    gguf_file  *f = gguf_open_buffer(buf, n, "tiny", &err);
    cr_assert_not_null(f);
    size_t data_start = n;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        size_t at  = (size_t)((const uint8_t *)gguf_tensor_at(f, i)->data - buf);
        data_start = at < data_start ? at : data_start;
    }
    gguf_close(f);
    for (size_t cut = 0; cut < data_start; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, buf, cut);
        f = gguf_open_buffer(copy, cut, "cut.gguf", &err);
        cr_assert_null(f, "accepted a file cut at byte %zu", cut);
        cr_assert(strstr(err.msg, "cut.gguf"), "%s", err.msg);
        free(copy);
    }
    free(buf);
}

Test(gguf, rejects_tensor_data_past_the_end) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    expect_reject(buf, n - 1, ASSAY_EFORMAT, "past the end");
    free(buf);
}

Test(gguf, rejects_a_string_length_past_the_end) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    /* the first metadata key's length field follows the 24-byte header */
    uint64_t huge = (uint64_t)n;
    memcpy(buf + 24, &huge, 8);
    expect_reject(buf, n, ASSAY_EFORMAT, "only");
    free(buf);
}

Test(gguf, rejects_duplicate_tensor_names) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    /* rename blk.1.attn_q.weight to blk.0.attn_q.weight (same length) */
    size_t at   = find_bytes(buf, n, "blk.1.attn_q.weight", 19);
    buf[at + 4] = '0';
    expect_reject(buf, n, ASSAY_EFORMAT, "appears twice");
    free(buf);
}

Test(gguf, rejects_a_misaligned_offset_and_bad_dimensions) {
    size_t   n;
    uint8_t *buf = read_file(TINY, &n);
    /* tensor info of output_norm.weight: name, n_dims u32, ne[0] u64, type u32, offset u64 */
    size_t   at = find_bytes(buf, n, "output_norm.weight", 18) + 18;
    uint64_t off;
    memcpy(&off, buf + at + 4 + 8 + 4, 8);
    uint64_t bad = off + 4;
    memcpy(buf + at + 16, &bad, 8);
    expect_reject(buf, n, ASSAY_EFORMAT, "not a multiple of the alignment");
    memcpy(buf + at + 16, &off, 8);
    uint32_t nd = 5;
    memcpy(buf + at, &nd, 4);
    expect_reject(buf, n, ASSAY_EFORMAT, "dimensions");
    nd = 1;
    memcpy(buf + at, &nd, 4);
    uint64_t zero = 0;
    memcpy(buf + at + 4, &zero, 8);
    expect_reject(buf, n, ASSAY_EFORMAT, "must be > 0");
    free(buf);
}

Test(gguf, rejects_a_bad_alignment) {
    /* a hand-made file: no tensors, one key general.alignment (u32) */
    uint8_t f[128];
    size_t  p = 0;
    memcpy(f, "GGUF", 4), p = 4;
    uint32_t v = 3;
    memcpy(f + p, &v, 4), p += 4;
    uint64_t nt = 0, nkv = 1, klen = 17;
    memcpy(f + p, &nt, 8), p += 8;
    memcpy(f + p, &nkv, 8), p += 8;
    memcpy(f + p, &klen, 8), p += 8;
    memcpy(f + p, "general.alignment", 17), p += 17;
    uint32_t t = GGUF_T_U32, al = 48;
    memcpy(f + p, &t, 4), p += 4;
    memcpy(f + p, &al, 4), p += 4;
    expect_reject(f, p, ASSAY_EFORMAT, "power of two");
    al = 64;
    memcpy(f + p - 4, &al, 4);
    assay_error err;
    gguf_file  *g = gguf_open_buffer(f, p, "ok.gguf", &err);
    cr_assert_not_null(g, "%s", err.msg);
    gguf_close(g);
}

Test(gguf, bounds_array_nesting_depth) {
    /* one key holding arrays nested 6 deep: more than the reader accepts */
    uint8_t f[256];
    size_t  p = 0;
    memcpy(f, "GGUF", 4), p = 4;
    uint32_t v = 3;
    memcpy(f + p, &v, 4), p += 4;
    uint64_t nt = 0, nkv = 1, klen = 1;
    memcpy(f + p, &nt, 8), p += 8;
    memcpy(f + p, &nkv, 8), p += 8;
    memcpy(f + p, &klen, 8), p += 8;
    f[p++]     = 'a';
    uint32_t t = GGUF_T_ARRAY;
    memcpy(f + p, &t, 4), p += 4;
    for (int d = 0; d < 6; d++) {
        uint32_t et  = d < 5 ? GGUF_T_ARRAY : GGUF_T_U8;
        uint64_t one = 1;
        memcpy(f + p, &et, 4), p += 4;
        memcpy(f + p, &one, 8), p += 8;
    }
    f[p++] = 7;
    expect_reject(f, p, ASSAY_EFORMAT, "nested deeper");
}

Test(gguf, open_names_a_missing_file) {
    assay_error err;
    cr_assert_null(gguf_open("tests/fixtures/gguf/nope.gguf", &err));
    cr_assert_eq(err.code, ASSAY_EIO);
    cr_assert(strstr(err.msg, "nope.gguf"), "%s", err.msg);
}

/* A GGUF holding only n u8 keys "k.<8 hex digits>" (key i + 1 is named i when dup_at == i + 1). */
static uint8_t *make_many_keys(uint32_t n, uint32_t dup_at, size_t *size) {
    const size_t per = 8 + 10 + 4 + 1;
    *size            = 4 + 4 + 8 + 8 + (size_t)n * per;
    uint8_t *buf = malloc(*size), *p = buf;
    cr_assert_not_null(buf);
    uint32_t version = 3;
    uint64_t n_t = 0, n_kv = n, klen = 10;
    memcpy(p, "GGUF", 4), p += 4;
    memcpy(p, &version, 4), p += 4;
    memcpy(p, &n_t, 8), p += 8;
    memcpy(p, &n_kv, 8), p += 8;
    for (uint32_t i = 0; i < n; i++) {
        char     key[11];
        uint32_t type = GGUF_T_U8;
        snprintf(key, sizeof key, "k.%08x", i == dup_at ? i - 1 : i);
        memcpy(p, &klen, 8), p += 8;
        memcpy(p, key, 10), p += 10;
        memcpy(p, &type, 4), p += 4;
        *p++ = (uint8_t)i;
    }
    return buf;
}

/* A pairwise duplicate check took ~35 minutes on 2^20 keys. */
Test(gguf, checks_a_million_keys_for_duplicates_in_seconds) {
    alarm(60); /* the quadratic check would run for half an hour: end it as a failure */
    const uint32_t n = 1u << 20;
    size_t         size;
    uint8_t       *buf = make_many_keys(n, UINT32_MAX, &size);
    assay_error    err;
    double         t0 = time_now();
    gguf_file     *f  = gguf_open_buffer(buf, size, "many.gguf", &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_lt(time_now() - t0, 10.0, "took %.1f s", time_now() - t0);
    int64_t v;
    cr_assert_eq(gguf_get_int(f, "k.000abcde", &v), 0);
    cr_assert_eq(v, (int64_t)(uint8_t)0xabcde);
    gguf_close(f);
    free(buf);

    /* a duplicate at the very end, and one in the middle, are still named */
    const uint32_t at[] = {n - 1, n / 2 + 7};
    for (size_t k = 0; k < 2; k++) {
        buf = make_many_keys(n, at[k], &size);
        char key[16];
        snprintf(key, sizeof key, "'k.%08x'", at[k] - 1);
        expect_reject(buf, size, ASSAY_EFORMAT, "appears twice");
        assay_error_clear(&err);
        cr_assert_null(gguf_open_buffer(buf, size, "bad.gguf", &err));
        cr_assert(strstr(err.msg, key), "message does not name %s: %s", key, err.msg);
        free(buf);
    }
}
