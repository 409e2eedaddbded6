/* tests/test_safetensors.c — writer/reader round trip, and every malformed-file check of the
 * reader. Bad files are written byte by byte at test time into a temporary directory. */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "core/util.h"
#include "loader/safetensors.h"
#include "tests/helpers.h"

static char tmp[256];

static void setup(void) { test_tmpdir(tmp, sizeof tmp); }

static void teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmp);
}

TestSuite(safetensors, .init = setup, .fini = teardown);

/* Full path of `name` inside the test's temporary directory (static buffer: copy to keep). */
static const char *tmp_path(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    return p;
}

static void write_bytes(const char *name, const void *buf, size_t n) {
    FILE *f = fopen(tmp_path(name), "wb");
    cr_assert(f, "cannot create %s", name);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

/* A safetensors file with header length `hlen` (as stored), header text and `data_len` bytes of
 * data (a counting pattern). */
static void write_raw_len(const char *name, uint64_t hlen, const char *header, size_t data_len) {
    size_t   hl = strlen(header);
    size_t   n  = 8 + hl + data_len;
    uint8_t *b  = malloc(n);
    cr_assert(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)i;
    write_bytes(name, b, n);
    free(b);
}

static void write_raw(const char *name, const char *header, size_t data_len) {
    write_raw_len(name, strlen(header), header, data_len);
}

/* Opens tmp/name expecting failure with `code`; the message must name the file and contain
 * `word`. */
static void expect_open_fails(const char *name, int code, const char *word) {
    assay_error err;
    assay_error_clear(&err);
    st_file *f = st_open(tmp_path(name), &err);
    cr_assert_null(f, "%s opened but should fail (%s)", name, word);
    cr_assert_eq(err.code, code, "%s: code %d (%s), want %d: %s", name, err.code,
                 assay_status_name(err.code), code, err.msg);
    cr_assert(strstr(err.msg, name), "message does not name the file: %s", err.msg);
    cr_assert(strstr(err.msg, word), "message lacks '%s': %s", word, err.msg);
    cr_assert(!strchr(err.msg, '\n'), "message is not one line: %s", err.msg);
}

static void expect_model_fails(const char *path, int code, const char *name, const char *word) {
    assay_error err;
    assay_error_clear(&err);
    st_model *m = st_model_open(path, &err);
    cr_assert_null(m, "%s opened but should fail (%s)", path, word);
    cr_assert_eq(err.code, code, "code %d (%s), want %d: %s", err.code, assay_status_name(err.code),
                 code, err.msg);
    cr_assert(strstr(err.msg, name), "message does not name '%s': %s", name, err.msg);
    cr_assert(strstr(err.msg, word), "message lacks '%s': %s", word, err.msg);
}

/* ---- writer / round trip ---- */

Test(safetensors, round_trip_keeps_values_shapes_dtypes_and_metadata) {
    float           f32[6]  = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
    uint16_t        bf16[3] = {0x3f80, 0xc040, 0x7fc0};
    int64_t         i64[2]  = {INT64_MIN, (int64_t)1 << 53};
    uint8_t         bl[3]   = {1, 0, 1};
    int32_t         scalar  = 42;
    st_write_tensor t[]     = {
            {"model.w", DTYPE_F32, 2, {2, 3}, f32}, {"a.bf16", DTYPE_BF16, 1, {3}, bf16},
            {"ids", DTYPE_I64, 1, {2}, i64},        {"mask", DTYPE_BOOL, 3, {1, 3, 1}, bl},
            {"empty", DTYPE_F16, 2, {0, 7}, NULL},  {"scalar", DTYPE_I32, 0, {0}, &scalar},
    };
    const char *meta[] = {"format", "pt", "note", "h\u00e9llo \"q\"", NULL};
    assay_error err;
    assay_error_clear(&err);
    cr_assert_eq(st_write(tmp_path("rt.safetensors"), t, 6, meta, &err), ASSAY_OK, "%s", err.msg);

    st_file *f = st_open(tmp_path("rt.safetensors"), &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_eq(st_file_count(f), 6);
    cr_assert_str_eq(st_file_metadata(f, "format"), "pt");
    cr_assert_str_eq(st_file_metadata(f, "note"), "h\u00e9llo \"q\"");
    cr_assert_null(st_file_metadata(f, "absent"));
    const uint8_t *prev_end = NULL;
    for (int i = 0; i < 6; i++) {
        const st_tensor *r = st_file_tensor(f, i);
        cr_assert_str_eq(r->name, t[i].name, "writer order is kept");
        cr_assert_eq(r->dtype, t[i].dtype, "%s", r->name);
        cr_assert_eq(r->ndim, t[i].ndim, "%s", r->name);
        size_t n = 1;
        for (int d = 0; d < r->ndim; d++) {
            cr_assert_eq(r->shape[d], t[i].shape[d]);
            n *= (size_t)t[i].shape[d];
        }
        cr_assert_eq(r->n_elements, n, "%s", r->name);
        cr_assert_eq(r->nbytes, n * dtype_size(r->dtype), "%s", r->name);
        cr_assert_eq(r->shard, 0);
        if (n)
            cr_assert(memcmp(r->data, t[i].data, r->nbytes) == 0, "%s data differs", r->name);
        if (prev_end)
            cr_assert_eq(r->data, prev_end, "%s: data_offsets are not contiguous", r->name);
        prev_end = (const uint8_t *)r->data + r->nbytes;
    }
    cr_assert_null(st_file_tensor(f, 6));
    cr_assert_null(st_file_tensor(f, -1));
    st_close(f);

    /* Header length is a multiple of 8 (the data area stays 8-byte aligned). */
    FILE   *fp = fopen(tmp_path("rt.safetensors"), "rb");
    uint8_t len8[8];
    cr_assert_eq(fread(len8, 1, 8, fp), 8u);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    cr_assert_eq(hlen % 8, 0u, "header length %" PRIu64, hlen);
}

Test(safetensors, writer_without_metadata_or_tensors_is_readable) {
    assay_error err;
    assay_error_clear(&err);
    cr_assert_eq(st_write(tmp_path("e.safetensors"), NULL, 0, NULL, &err), ASSAY_OK, "%s", err.msg);
    st_file *f = st_open(tmp_path("e.safetensors"), &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_eq(st_file_count(f), 0);
    cr_assert_null(st_file_metadata(f, "format"));
    st_close(f);
}

Test(safetensors, writer_rejects_bad_input_and_leaves_no_file) {
    float           x[4] = {0};
    assay_error     err;
    st_write_tensor bad_dtype[] = {{"x", DTYPE_UNKNOWN, 1, {4}, x}};
    st_write_tensor dup[]       = {{"x", DTYPE_F32, 1, {4}, x}, {"x", DTYPE_F32, 1, {4}, x}};
    st_write_tensor huge[]      = {{"x", DTYPE_F32, 3, {1 << 30, 1 << 30, 1 << 30}, x}};
    st_write_tensor neg[]       = {{"x", DTYPE_F32, 1, {-4}, x}};
    st_write_tensor nodata[]    = {{"x", DTYPE_F32, 1, {4}, NULL}};
    struct {
        const st_write_tensor *t;
        int                    n;
        const char            *word;
    } cases[] = {{bad_dtype, 1, "dtype"},
                 {dup, 2, "twice"},
                 {huge, 1, "overflow"},
                 {neg, 1, "range"},
                 {nodata, 1, "data"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assay_error_clear(&err);
        cr_assert_eq(st_write(tmp_path("w.safetensors"), cases[c].t, cases[c].n, NULL, &err),
                     ASSAY_EINVAL, "case %zu: %s", c, err.msg);
        cr_assert(strstr(err.msg, "w.safetensors") && strstr(err.msg, cases[c].word),
                  "case %zu: %s", c, err.msg);
        cr_assert(!path_exists(tmp_path("w.safetensors")), "case %zu left a file", c);
    }
}

/* ---- models: single file, directory ---- */

Test(safetensors, model_lists_tensors_sorted_and_finds_them) {
    float           a[2] = {1, 2}, b[3] = {3, 4, 5};
    st_write_tensor t[] = {{"zeta", DTYPE_F32, 1, {2}, a}, {"alpha", DTYPE_F32, 1, {3}, b}};
    assay_error     err;
    assay_error_clear(&err);
    cr_assert_eq(st_write(tmp_path("model.safetensors"), t, 2, NULL, &err), ASSAY_OK);
    st_model *m = st_model_open(tmp, &err); /* the directory */
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_eq(st_model_count(m), 2);
    cr_assert_eq(st_model_n_shards(m), 1);
    cr_assert_str_eq(st_model_tensor(m, 0)->name, "alpha");
    cr_assert_str_eq(st_model_tensor(m, 1)->name, "zeta");
    cr_assert_eq(st_model_total_bytes(m), 20u);
    const st_tensor *z = st_model_find(m, "zeta");
    cr_assert_not_null(z);
    cr_assert_eq(((const float *)z->data)[1], 2.0f);
    cr_assert_null(st_model_find(m, "beta"));
    st_model_close(m);
}

Test(safetensors, directory_with_one_odd_named_file_opens_it) {
    float           a[1] = {7};
    st_write_tensor t[]  = {{"w", DTYPE_F32, 1, {1}, a}};
    assay_error     err;
    assay_error_clear(&err);
    cr_assert_eq(st_write(tmp_path("weights.safetensors"), t, 1, NULL, &err), ASSAY_OK);
    st_model *m = st_model_open(tmp, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_not_null(st_model_find(m, "w"));
    st_model_close(m);

    cr_assert_eq(st_write(tmp_path("other.safetensors"), t, 1, NULL, &err), ASSAY_OK);
    expect_model_fails(tmp, ASSAY_EFORMAT, tmp, "index");
}

Test(safetensors, missing_file_is_an_io_error) {
    expect_open_fails("nope.safetensors", ASSAY_EIO, "open");
}

/* ---- malformed single files ---- */

Test(safetensors, rejects_file_shorter_than_the_length_field) {
    write_bytes("short.safetensors", "\x10\x00\x00", 3);
    expect_open_fails("short.safetensors", ASSAY_EFORMAT, "truncated");
    write_bytes("zero.safetensors", "", 0);
    expect_open_fails("zero.safetensors", ASSAY_EFORMAT, "truncated");
}

Test(safetensors, rejects_header_cut_short) {
    /* Claims 64 header bytes, holds 20. */
    write_raw_len("cut.safetensors", 64, "{\"x\":{\"dtype\":\"F32\",", 0);
    expect_open_fails("cut.safetensors", ASSAY_EFORMAT, "past the end");
}

Test(safetensors, rejects_header_length_larger_than_the_file) {
    write_raw_len("big.safetensors", 1000, "{}", 8);
    expect_open_fails("big.safetensors", ASSAY_EFORMAT, "past the end");
}

Test(safetensors, rejects_header_length_over_the_cap) {
    write_raw_len("cap.safetensors", (uint64_t)ST_MAX_HEADER + 1, "{}", 0);
    expect_open_fails("cap.safetensors", ASSAY_EFORMAT, "limit");
    write_raw_len("cap2.safetensors", UINT64_MAX, "{}", 0);
    expect_open_fails("cap2.safetensors", ASSAY_EFORMAT, "limit");
}

Test(safetensors, rejects_header_that_is_not_json) {
    write_raw("nj.safetensors", "{\"x\": {\"dtype\": F32}}", 0);
    expect_open_fails("nj.safetensors", ASSAY_EFORMAT, "JSON");
    write_raw("tr.safetensors", "{}  garbage", 0);
    expect_open_fails("tr.safetensors", ASSAY_EFORMAT, "JSON");
    write_raw("em.safetensors", "", 0);
    expect_open_fails("em.safetensors", ASSAY_EFORMAT, "JSON");
}

Test(safetensors, rejects_header_json_that_is_not_an_object) {
    write_raw("arr.safetensors", "[1, 2]  ", 0);
    expect_open_fails("arr.safetensors", ASSAY_EFORMAT, "not an object");
}

Test(safetensors, accepts_space_padding_after_the_header) {
    write_raw("pad.safetensors",
              "{\"x\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}   ", 3);
    assay_error err;
    st_file    *f = st_open(tmp_path("pad.safetensors"), &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_eq(((const uint8_t *)st_file_tensor(f, 0)->data)[2], 2);
    st_close(f);
}

Test(safetensors, rejects_unknown_dtype_listing_the_supported_ones) {
    write_raw("f8.safetensors",
              "{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_open_fails("f8.safetensors", ASSAY_EUNSUPPORTED, "F8_E4M3");
    expect_open_fails("f8.safetensors", ASSAY_EUNSUPPORTED, "supported: ");
    expect_open_fails("f8.safetensors", ASSAY_EUNSUPPORTED, "BF16");
    write_raw("f5.safetensors",
              "{\"x\":{\"dtype\":\"F8_E5M2\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_open_fails("f5.safetensors", ASSAY_EUNSUPPORTED, "'x'");
    write_raw("q.safetensors", "{\"x\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,4]}}",
              4);
    expect_open_fails("q.safetensors", ASSAY_EUNSUPPORTED, "dtype 'Q4'");
    write_raw("nd.safetensors", "{\"x\":{\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    expect_open_fails("nd.safetensors", ASSAY_EFORMAT, "dtype");
}

Test(safetensors, rejects_shape_with_negative_or_fractional_entries) {
    write_raw("neg.safetensors", "{\"x\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
              0);
    expect_open_fails("neg.safetensors", ASSAY_EFORMAT, "non-negative integer");
    write_raw("flt.safetensors",
              "{\"x\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,2]}}", 2);
    expect_open_fails("flt.safetensors", ASSAY_EFORMAT, "non-negative integer");
    write_raw("str.safetensors",
              "{\"x\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", 2);
    expect_open_fails("str.safetensors", ASSAY_EFORMAT, "shape");
    write_raw("dims.safetensors",
              "{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    expect_open_fails("dims.safetensors", ASSAY_EUNSUPPORTED, "dimensions");
}

Test(safetensors, rejects_shape_whose_byte_size_overflows) {
    /* 2^40 * 2^40 elements: exact JSON integers whose product does not fit 64 bits. */
    write_raw("ovf.safetensors",
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
              "\"data_offsets\":[0,0]}}",
              0);
    expect_open_fails("ovf.safetensors", ASSAY_EFORMAT, "overflow");
    /* Element count fits, byte count (x8) does not. */
    write_raw(
        "ovf2.safetensors",
        "{\"x\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,0]}}", 0);
    expect_open_fails("ovf2.safetensors", ASSAY_EFORMAT, "overflow");
}

Test(safetensors, zero_element_tensors_are_legal) {
    write_raw("z.safetensors",
              "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776,1099511627776],"
              "\"data_offsets\":[4,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
              "\"data_offsets\":[0,4]}}",
              4);
    assay_error err;
    st_file    *f = st_open(tmp_path("z.safetensors"), &err);
    cr_assert_not_null(f, "%s", err.msg);
    cr_assert_eq(st_file_tensor(f, 0)->n_elements, 0u);
    cr_assert_eq(st_file_tensor(f, 0)->nbytes, 0u);
    st_close(f);
}

Test(safetensors, rejects_size_that_does_not_match_dtype_and_shape) {
    write_raw("mm.safetensors",
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16);
    expect_open_fails("mm.safetensors", ASSAY_EFORMAT,
                      "tensor 'x' data_offsets [0, 12] need 16 bytes for F32 shape [2, 2]");
}

Test(safetensors, rejects_offsets_past_the_end_of_the_data) {
    write_raw("end.safetensors",
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 20);
    expect_open_fails("end.safetensors", ASSAY_EFORMAT, "past the data area");
    write_raw("rev.safetensors", "{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}",
              20);
    expect_open_fails("rev.safetensors", ASSAY_EFORMAT, "begin after end");
    write_raw("bad.safetensors", "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}",
              1);
    expect_open_fails("bad.safetensors", ASSAY_EFORMAT, "data_offsets");
}

Test(safetensors, rejects_overlapping_tensors) {
    write_raw("ov.safetensors",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]},"
              "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              24);
    expect_open_fails("ov.safetensors", ASSAY_EFORMAT, "overlap");
    expect_open_fails("ov.safetensors", ASSAY_EFORMAT, "'c'");
    /* A long tensor covering a later short one, with an empty one (which owns no bytes) between. */
    write_raw("ov2.safetensors",
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[100],\"data_offsets\":[0,100]},"
              "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[10,10]},"
              "\"c\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[50,60]}}",
              100);
    expect_open_fails("ov2.safetensors", ASSAY_EFORMAT, "tensor 'c' data_offsets [50, 60] overlap");
}

Test(safetensors, rejects_duplicate_tensor_names) {
    write_raw("dup.safetensors",
              "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
              2);
    expect_open_fails("dup.safetensors", ASSAY_EFORMAT, "tensor 'w' appears twice");
}

Test(safetensors, rejects_metadata_with_non_string_value) {
    write_raw("meta.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0);
    expect_open_fails("meta.safetensors", ASSAY_EFORMAT, "not a string");
    expect_open_fails("meta.safetensors", ASSAY_EFORMAT, "'n'");
    write_raw("meta2.safetensors", "{\"__metadata__\":[\"a\"]}", 0);
    expect_open_fails("meta2.safetensors", ASSAY_EFORMAT, "__metadata__");
}

Test(safetensors, rejects_tensor_entry_that_is_not_an_object) {
    write_raw("ent.safetensors", "{\"w\":[1,2]}", 0);
    expect_open_fails("ent.safetensors", ASSAY_EFORMAT, "tensor 'w' entry is not an object");
}

Test(safetensors, open_buffer_names_the_buffer) {
    const uint8_t buf[10] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assay_error   err;
    st_file      *f = st_open_buffer(buf, sizeof buf, "mem", &err);
    cr_assert_not_null(f, "%s", err.msg);
    st_close(f);
    f = st_open_buffer(buf, 9, "mem", &err);
    cr_assert_null(f);
    cr_assert(strncmp(err.msg, "mem: ", 5) == 0, "%s", err.msg);
}

/* ---- sharded checkpoints ---- */

/* Two shards: s1 holds a, b; s2 holds c. */
static void write_two_shards(void) {
    float           a[2] = {1, 2}, b[1] = {3}, c[3] = {4, 5, 6};
    st_write_tensor s1[] = {{"a", DTYPE_F32, 1, {2}, a}, {"b", DTYPE_F32, 1, {1}, b}};
    st_write_tensor s2[] = {{"c", DTYPE_F32, 1, {3}, c}};
    assay_error     err;
    cr_assert_eq(st_write(tmp_path("m-00001-of-00002.safetensors"), s1, 2, NULL, &err), ASSAY_OK);
    cr_assert_eq(st_write(tmp_path("m-00002-of-00002.safetensors"), s2, 1, NULL, &err), ASSAY_OK);
}

static void write_index(const char *weight_map) {
    char text[2048];
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":24},\"weight_map\":%s}", weight_map);
    write_bytes("model.safetensors.index.json", text, strlen(text));
}

#define S1 "\"m-00001-of-00002.safetensors\""
#define S2 "\"m-00002-of-00002.safetensors\""

Test(safetensors, two_shard_model_opens_and_finds_every_tensor) {
    write_two_shards();
    write_index("{\"c\":" S2 ",\"a\":" S1 ",\"b\":" S1 "}");
    assay_error err;
    st_model   *m = st_model_open(tmp, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_eq(st_model_count(m), 3);
    cr_assert_eq(st_model_n_shards(m), 2);
    cr_assert_eq(st_model_total_bytes(m), 24u);
    const char *names[] = {"a", "b", "c"};
    float       first[] = {1, 3, 4};
    for (int i = 0; i < 3; i++) {
        const st_tensor *t = st_model_find(m, names[i]);
        cr_assert_not_null(t, "%s", names[i]);
        cr_assert_eq(t, st_model_tensor(m, i));
        cr_assert_eq(((const float *)t->data)[0], first[i]);
        cr_assert_eq(t->shard, i < 2 ? 0 : 1);
    }
    st_model_close(m);
    /* The index path itself works too. */
    m = st_model_open(tmp_path("model.safetensors.index.json"), &err);
    cr_assert_not_null(m, "%s", err.msg);
    st_model_close(m);
}

Test(safetensors, index_naming_a_missing_shard_file_fails) {
    write_two_shards();
    write_index("{\"a\":" S1 ",\"b\":" S1 ",\"c\":\"m-00003-of-00002.safetensors\"}");
    expect_model_fails(tmp, ASSAY_EIO, "m-00003-of-00002.safetensors", "open");
}

Test(safetensors, index_naming_a_tensor_absent_from_its_shard_fails) {
    write_two_shards();
    write_index("{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 ",\"d\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'd'", "missing from shard m-00002");
    write_index("{\"a\":" S2 ",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'a'", "missing from shard m-00002");
}

Test(safetensors, tensor_present_in_two_shards_fails) {
    write_two_shards();
    float           x[1] = {9};
    st_write_tensor s2[] = {{"c", DTYPE_F32, 1, {1}, x}, {"a", DTYPE_F32, 1, {1}, x}};
    assay_error     err;
    cr_assert_eq(st_write(tmp_path("m-00002-of-00002.safetensors"), s2, 2, NULL, &err), ASSAY_OK);
    write_index("{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'a'", "present in shards");
}

Test(safetensors, tensor_listed_twice_in_the_weight_map_fails) {
    write_two_shards();
    write_index("{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 ",\"a\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'a'", "listed twice");
}

Test(safetensors, shard_tensor_missing_from_the_weight_map_fails) {
    write_two_shards();
    write_index("{\"a\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'b'", "not in the weight_map");
}

Test(safetensors, shard_names_with_path_traversal_are_rejected) {
    write_two_shards();
    write_index("{\"a\":\"../m-00001-of-00002.safetensors\",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "model.safetensors.index.json", "plain file names");
    write_index("{\"a\":\"/etc/passwd\",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'a'", "plain file names");
    write_index("{\"a\":\"..\",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "tensor 'a'", "plain file names");
}

Test(safetensors, index_without_weight_map_fails) {
    write_bytes("model.safetensors.index.json", "{\"metadata\":{}}", 15);
    expect_model_fails(tmp, ASSAY_EFORMAT, "model.safetensors.index.json", "weight_map");
    write_bytes("model.safetensors.index.json", "{\"weight_map\":", 14);
    expect_model_fails(tmp, ASSAY_EFORMAT, "model.safetensors.index.json", "JSON");
}

Test(safetensors, bad_shard_error_names_index_and_shard) {
    write_two_shards();
    write_bytes("m-00002-of-00002.safetensors", "\x01\x00", 2);
    write_index("{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}");
    expect_model_fails(tmp, ASSAY_EFORMAT, "m-00002-of-00002.safetensors", "truncated");
}

/* ---- real files written by Python safetensors (fixtures of the model tests) ---- */

Test(safetensors, reads_every_fixture_checkpoint_written_by_python) {
    const char *root = "tests/fixtures/models";
    DIR        *d    = opendir(root);
    if (!d) {
        fprintf(stderr, "SKIP: %s missing\n", root);
        cr_skip_test("SKIP: %s missing", root);
    }
    int            n_models = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char file[1024];
        snprintf(file, sizeof file, "%s/%s/model.safetensors", root, e->d_name);
        FILE *fp = fopen(file, "rb");
        if (!fp)
            continue;
        uint8_t len8[8];
        cr_assert_eq(fread(len8, 1, 8, fp), 8u, "%s", file);
        fseek(fp, 0, SEEK_END);
        long size = ftell(fp);
        fclose(fp);
        uint64_t hlen = 0;
        for (int i = 0; i < 8; i++)
            hlen |= (uint64_t)len8[i] << (8 * i);

        assay_error err;
        st_model   *m = st_model_open(file, &err);
        cr_assert_not_null(m, "%s", err.msg);
        cr_assert_gt(st_model_count(m), 0, "%s", file);
        /* The Python writer packs tensors back to back: they cover the data area exactly. */
        cr_assert_eq(st_model_total_bytes(m), (size_t)size - 8 - hlen, "%s", file);
        for (int i = 1; i < st_model_count(m); i++)
            cr_assert(strcmp(st_model_tensor(m, i - 1)->name, st_model_tensor(m, i)->name) < 0);
        st_model_close(m);
        n_models++;
    }
    closedir(d);
    if (n_models == 0) {
        fprintf(stderr, "SKIP: no model.safetensors under %s\n", root);
        cr_skip_test("SKIP: no fixtures");
    }
}

/* A header of `hlen` bytes: `head`, then `unit` repeated, then `tail`, then space padding. */
static void write_big_header(const char *name, size_t hlen, const char *head, const char *unit,
                             const char *tail) {
    char  *h = malloc(hlen + 1);
    size_t n = strlen(head), u = strlen(unit), t = strlen(tail);
    cr_assert(h);
    memcpy(h, head, n);
    while (n + u + t <= hlen)
        memcpy(h + n, unit, u), n += u;
    memcpy(h + n, tail, t);
    memset(h + n + t, ' ', hlen - n - t);
    h[hlen] = '\0';
    write_raw(name, h, 0);
    free(h);
}

/* cJSON spends ~100 bytes per value: 100 MB of "[0,0,0,..." reached 4.3 GB. Hostile headers are
 * refused from a scan of the text, before any of it is parsed or copied. */
Test(safetensors, refuses_value_heavy_headers_quickly_in_bounded_memory) {
    const size_t hlen = (size_t)16 << 20;
    struct {
        const char *name, *head, *unit, *tail, *word;
    } cases[] = {
        {"zeros.safetensors", "[", "0,", "0]", "array of more than 64 elements"},
        /* what cJSON skips (a BOM, control bytes) must not hide the rest from the scan */
        {"bom.safetensors", "\xEF\xBB\xBF\x01\x1f[", "0,", "0]", "array of more than 64 elements"},
        {"shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[", "0,", "0]}}",
         "array of more than 64 elements"},
        {"deep.safetensors", "{\"a\":{\"b\":", "[", "", "nests deeper than 3"},
        {"dense.safetensors", "{\"a\":{\"dtype\":\"F32\"", ",\"s\":[0,0,0,0,0,0,0,0]", "}}",
         "JSON values in 16777216 bytes"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        write_big_header(cases[c].name, hlen, cases[c].head, cases[c].unit, cases[c].tail);
        size_t before = test_proc_mem("VmRSS:", 1);
        double t0     = time_now();
        expect_open_fails(cases[c].name, ASSAY_EFORMAT, cases[c].word);
        double secs = time_now() - t0;
        size_t peak = test_proc_mem("VmHWM:", 0);
        cr_expect_lt(secs, 2.0, "%s: %.2f s", cases[c].name, secs);
        if (TEST_CHECK_MEMORY && before && peak)
            cr_expect_lt(peak - before, 2 * hlen, "%s: peak RSS grew %.1f MB for a %zu MB header",
                         cases[c].name, (double)(peak - before) / 1e6, hlen >> 20);
    }
}
