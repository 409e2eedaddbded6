/* tests/test_convert.c — `assay convert` end to end: the tiny fixture (every supported type,
 * tied embeddings) and stories260K (when ../shared is present), dtype bf16, and bad inputs that
 * must leave nothing behind. */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/util.h"
#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/gguf_tokenizer.h"
#include "loader/safetensors.h"
#include "loader/tokenizer.h"
#include "tests/helpers.h"

#define TINY "tests/fixtures/gguf/tiny.gguf"
#define UNSUPPORTED "tests/fixtures/gguf/unsupported.gguf"
#define EXPECTED "tests/fixtures/gguf/tiny_expected.safetensors"
#define STORIES "models/stories260K/stories260K.gguf"

static const char *const out_files[] = {"model.safetensors", "config.json", "tokenizer.json",
                                        "tokenizer_config.json"};

/* HF name → GGUF name (the test's own table, written independently of cmd_convert.c). */
static void gguf_name_of(const char *hf, char *out, size_t cap) {
    static const char *const pairs[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (!strcmp(hf, "model.embed_tokens.weight"))
        snprintf(out, cap, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight"))
        snprintf(out, cap, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight"))
        snprintf(out, cap, "output.weight");
    else {
        int layer, used = 0;
        cr_assert_eq(sscanf(hf, "model.layers.%d.%n", &layer, &used), 1, "%s", hf);
        for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
            if (!strcmp(hf + used, pairs[i][0])) {
                snprintf(out, cap, "blk.%d.%s", layer, pairs[i][1]);
                return;
            }
        cr_assert_fail("unexpected tensor %s", hf);
    }
}

/* llama.cpp's HF→GGUF permute, literally: w.reshape(n_head, 2, rows/n_head/2, cols)
 * .swapaxes(1, 2).reshape(rows, cols). out[h][j][a] = in[h][a][j]. */
static void hf_to_gguf_permute(float *out, const float *in, int64_t rows, int64_t cols,
                               int n_head) {
    int64_t half = rows / n_head / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t j = 0; j < half; j++)
            for (int64_t a = 0; a < 2; a++)
                memcpy(out + ((h * half + j) * 2 + a) * cols, in + ((h * 2 + a) * half + j) * cols,
                       (size_t)cols * sizeof *out);
}

static void assert_only_output(const char *dir) {
    for (size_t i = 0; i < sizeof out_files / sizeof *out_files; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, out_files[i]);
        cr_assert(path_exists(p), "%s missing", p);
    }
}

/* No "<anything>.tmp.<pid>" left in dir. */
static void assert_no_tmp(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert_null(strstr(e->d_name, ".tmp."), "left behind: %s/%s", dir, e->d_name);
    closedir(d);
}

/* Converted tensor → f32 in the GGUF row order (q/k permuted back). */
static float *converted_as_gguf(const st_tensor *t, const model_config *c, const char *gname) {
    size_t n = t->n_elements;
    float *f = malloc(n * sizeof *f);
    cr_assert_eq(dtype_to_f32(f, t->data, t->dtype, n), 0);
    int n_head = strstr(gname, "attn_q.")   ? c->n_heads
                 : strstr(gname, "attn_k.") ? c->n_kv_heads
                                            : 0;
    if (n_head) {
        float *p = malloc(n * sizeof *p);
        hf_to_gguf_permute(p, f, t->shape[0], t->shape[1], n_head);
        free(f);
        f = p;
    }
    return f;
}

/* Checks the checkpoint in dir: loads, passes the config's tensor checks, and every tensor
 * equals `ref` (the GGUF values, as the test computes them) after the HF→GGUF permute. */
static void check_checkpoint(const char *dir, const char *gguf_path, dtype want_dt) {
    assay_error err;
    char        p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    model_config c;
    cr_assert_eq(config_load(&c, p, &err), 0, "%s", err.msg);
    st_model *m = st_model_open(dir, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_eq(config_check_tensors(&c, m, NULL, NULL, &err), 0, "%s", err.msg);
    gguf_file *g = gguf_open(gguf_path, &err);
    cr_assert_not_null(g, "%s", err.msg);
    st_file *e = strstr(gguf_path, "tiny") ? st_open(EXPECTED, &err) : NULL;
    cr_assert_eq(st_model_count(m), gguf_n_tensors(g));
    for (int i = 0; i < st_model_count(m); i++) {
        const st_tensor *t = st_model_tensor(m, i);
        char             gname[128];
        gguf_name_of(t->name, gname, sizeof gname);
        const gguf_tensor *s = gguf_find_tensor(g, gname);
        cr_assert_not_null(s, "%s has no source %s", t->name, gname);
        cr_assert_eq(t->dtype, want_dt, "%s is %s", t->name, dtype_name(t->dtype));
        cr_assert_eq(t->ndim, s->ndim);
        cr_assert_eq(t->shape[0], s->ndim == 2 ? s->ne[1] : s->ne[0], "%s", t->name);
        if (s->ndim == 2)
            cr_assert_eq(t->shape[1], s->ne[0], "%s", t->name);
        /* reference values: the gguf package's dequantization where the fixture has it, the
         * float types decoded directly otherwise */
        size_t           n = t->n_elements, n_ref = n;
        float           *ref = malloc(n * sizeof *ref);
        const st_tensor *x   = NULL;
        for (int k = 0; e && k < st_file_count(e); k++)
            if (!strncmp(st_file_tensor(e, k)->name, gname, strlen(gname)))
                x = st_file_tensor(e, k);
        if (x) {
            n_ref = x->n_elements;
            memcpy(ref, x->data, n_ref * 4);
        } else {
            dtype sd = s->type == GGML_TYPE_F32    ? DTYPE_F32
                       : s->type == GGML_TYPE_F16  ? DTYPE_F16
                       : s->type == GGML_TYPE_BF16 ? DTYPE_BF16
                                                   : DTYPE_UNKNOWN;
            cr_assert_neq(sd, DTYPE_UNKNOWN, "%s: no reference for %s", gname,
                          ggml_type_name(s->type));
            dtype_to_f32(ref, s->data, sd, n);
        }
        float *got = converted_as_gguf(t, &c, gname);
        for (size_t k = 0; k < n_ref; k++) {
            float want = want_dt == DTYPE_BF16 ? bf16_to_f32(f32_to_bf16(ref[k])) : ref[k];
            cr_assert(memcmp(&got[k], &want, 4) == 0, "%s element %zu: %.9g, GGUF %.9g", t->name, k,
                      got[k], want);
        }
        free(got);
        free(ref);
    }
    st_close(e);
    gguf_close(g);
    st_model_close(m);
}

static void rm_out(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(convert, converts_the_tiny_fixture_with_every_type) {
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/tiny", tmp);
    char *log = NULL;
    int   rc  = test_run(&log, "convert %s %s", TINY, out);
    cr_assert_eq(rc, 0, "%s", log);
    free(log);
    assert_only_output(out);
    assert_no_tmp(tmp);
    check_checkpoint(out, TINY, DTYPE_F32);
    assay_error err;
    st_model   *m = st_model_open(out, &err);
    cr_assert_null(st_model_find(m, "lm_head.weight"), "tied embeddings: no lm_head");
    st_model_close(m);
    rm_out(tmp);
}

Test(convert, writes_bf16_tensors_when_asked) {
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/tiny-bf16", tmp);
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert %s %s --dtype bf16", TINY, out), 0, "%s", log);
    free(log);
    check_checkpoint(out, TINY, DTYPE_BF16);
    char p[256], *text;
    snprintf(p, sizeof p, "%s/config.json", out);
    cr_assert_eq(file_read_all(p, &text, NULL, NULL), 0);
    cr_assert(strstr(text, "bfloat16"), "%s", text);
    free(text);
    rm_out(tmp);
}

Test(convert, converts_stories260k_and_q_k_permutes_round_trip) {
    SHARED_OR_SKIP(path, STORIES);
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/stories", tmp);
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert %s %s", path, out), 0, "%s", log);
    free(log);
    assert_only_output(out);
    /* all F32: every value must come back bit for bit after the HF→GGUF permute */
    check_checkpoint(out, path, DTYPE_F32);
    assay_error  err;
    model_config c;
    char         p[256];
    snprintf(p, sizeof p, "%s/config.json", out);
    cr_assert_eq(config_load(&c, p, &err), 0, "%s", err.msg);
    cr_assert_eq(c.n_layers, 5);
    cr_assert_eq(c.n_kv_heads, 4);
    cr_assert_eq(c.vocab_size, 512);
    cr_assert(!c.tie_embeddings);
    rm_out(tmp);
}

Test(convert, writes_a_sentencepiece_tokenizer_json) {
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/tok", tmp);
    cr_assert_eq(test_run(NULL, "convert %s %s", TINY, out), 0);
    char p[256], *text;
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    cr_assert_eq(file_read_all(p, &text, NULL, NULL), 0);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j, "tokenizer.json is not JSON");
    cJSON *model = cJSON_GetObjectItem(j, "model");
    cr_assert_str_eq(cJSON_GetObjectItem(model, "type")->valuestring, "BPE");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(model, "byte_fallback")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(model, "fuse_unk")));
    cr_assert_str_eq(cJSON_GetObjectItem(model, "unk_token")->valuestring, "<unk>");
    cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
    cr_assert_eq(cJSON_GetArraySize(vocab), 317);
    cr_assert_eq(cJSON_GetObjectItem(vocab, "<0x41>")->valueint, 3 + 0x41);
    /* merges ordered as transformers' generate_merges orders them (by the merged token's score):
     * "▁t" (score 0) first, then "he" (-1), then "▁the" (-2) = "▁t" + "he" */
    cJSON *merges = cJSON_GetObjectItem(model, "merges");
    cr_assert_eq(cJSON_GetArraySize(merges), 27); /* the count transformers derives */
    const char *want[3][2] = {{"\xe2\x96\x81", "t"}, {"h", "e"}, {"\xe2\x96\x81t", "he"}};
    for (int i = 0; i < 3; i++) {
        cJSON *m = cJSON_GetArrayItem(merges, i);
        cr_assert_str_eq(cJSON_GetArrayItem(m, 0)->valuestring, want[i][0]);
        cr_assert_str_eq(cJSON_GetArrayItem(m, 1)->valuestring, want[i][1]);
    }
    cJSON *norm = cJSON_GetObjectItem(j, "normalizer");
    cr_assert_str_eq(cJSON_GetObjectItem(norm, "type")->valuestring, "Sequence");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "pre_tokenizer")));
    cJSON *added     = cJSON_GetObjectItem(j, "added_tokens");
    int    found_end = 0;
    cJSON *a;
    cJSON_ArrayForEach(a, added) {
        if (!strcmp(cJSON_GetObjectItem(a, "content")->valuestring, "<|end|>"))
            found_end = cJSON_IsTrue(cJSON_GetObjectItem(a, "special"));
    }
    cr_assert(found_end, "the control token <|end|> is a special added token");
    cJSON_Delete(j);

    snprintf(p, sizeof p, "%s/tokenizer_config.json", out);
    cr_assert_eq(file_read_all(p, &text, NULL, NULL), 0);
    j = cJSON_Parse(text);
    free(text);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "add_bos_token")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "add_eos_token")));
    cr_assert_str_eq(cJSON_GetObjectItem(j, "bos_token")->valuestring, "<s>");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "eos_token")->valuestring, "</s>");
    cr_assert_eq(cJSON_GetObjectItem(j, "model_max_length")->valueint, 128);
    cr_assert(strstr(cJSON_GetObjectItem(j, "chat_template")->valuestring, "messages"));
    cJSON_Delete(j);
    rm_out(tmp);
}

/* Encodes text with assay's tokenizer on dir and compares with ids from transformers' GGUF
 * tokenizer (tools/check_convert.py prints them; they equal `tokenizers` on the written file). */
static void expect_ids(const char *dir, const char *text, const int32_t *want, size_t n) {
    assay_error err;
    tokenizer  *t = tok_load(dir, &err);
    cr_assert_not_null(t, "%s", err.msg);
    tok_encode_opts o   = tok_default_opts();
    tok_ids         ids = {0};
    cr_assert_eq(tok_encode(t, text, strlen(text), &o, 0, &ids, &err), 0, "%s", err.msg);
    cr_assert_eq(ids.n, n, "%s: %zu ids, expected %zu", text, ids.n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ids.ids[i], want[i], "%s: id %zu is %d, expected %d", text, i, ids.ids[i],
                     want[i]);
    tok_ids_free(&ids);
    tok_free(t);
}

Test(convert, tokenizer_matches_transformers_gguf_ids) {
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/tiny", tmp);
    cr_assert_eq(test_run(NULL, "convert %s %s", TINY, out), 0);
    static const int32_t tiny_ids[] = {1,   284, 314, 260, 284, 287, 269, 272, 261,
                                       284, 288, 299, 291, 278, 274, 280, 313};
    expect_ids(out, "The cat and the dog was in it!", tiny_ids, sizeof tiny_ids / 4);
    rm_out(tmp);
}

Test(convert, stories260k_tokenizer_matches_transformers_gguf_ids) {
    SHARED_OR_SKIP(path, STORIES);
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/stories", tmp);
    cr_assert_eq(test_run(NULL, "convert %s %s", path, out), 0);
    static const int32_t a[] = {1,   403, 407, 261, 378, 432, 383, 286,
                                261, 376, 298, 315, 421, 395, 317, 426};
    expect_ids(out, "Once upon a time, there was a little girl named Lily.", a, sizeof a / 4);
    static const int32_t b[] = {1,   297, 412, 198, 178, 360, 280, 412,
                                431, 485, 410, 243, 162, 156, 133};
    expect_ids(out, "na\xc3\xafve caf\xc3\xa9 \xf0\x9f\x99\x82", b,
               sizeof b / 4); /* byte fallback */
    rm_out(tmp);
}

Test(convert, rejects_an_unsupported_tensor_type_and_writes_nothing) {
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/x", tmp);
    char *log = NULL;
    int   rc  = test_run(&log, "convert %s %s", UNSUPPORTED, out);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, log);
    cr_assert(strstr(log, "unsupported.gguf") && strstr(log, "'blk.0.attn_q.weight'") &&
                  strstr(log, "Q5_0") && strstr(log, "supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"),
              "%s", log);
    free(log);
    cr_assert(!path_exists(out), "OUT_DIR was created");
    assert_no_tmp(tmp);
    rm_out(tmp);
}

Test(convert, rejects_truncated_and_bad_magic_files) {
    char tmp[64], bad[128], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/x", tmp);
    size_t n;
    char  *buf;
    cr_assert_eq(file_read_all(TINY, &buf, &n, NULL), 0);
    snprintf(bad, sizeof bad, "%s/truncated.gguf", tmp);
    cr_assert_eq(file_write_atomic(bad, buf, n / 2, NULL), 0);
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert %s %s", bad, out), 2, "%s", log);
    cr_assert(strstr(log, "truncated.gguf") && strstr(log, "past the end"), "%s", log);
    free(log);
    snprintf(bad, sizeof bad, "%s/magic.gguf", tmp);
    buf[0] = 'Z';
    cr_assert_eq(file_write_atomic(bad, buf, n, NULL), 0);
    cr_assert_eq(test_run(&log, "convert %s %s", bad, out), 2, "%s", log);
    cr_assert(strstr(log, "magic.gguf") && strstr(log, "not a GGUF file"), "%s", log);
    free(log);
    free(buf);
    cr_assert(!path_exists(out));
    assert_no_tmp(tmp);
    rm_out(tmp);
}

Test(convert, refuses_an_existing_out_dir_unless_forced) {
    char tmp[64], out[128], marker[160];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/exists", tmp);
    snprintf(marker, sizeof marker, "%s/marker", out);
    cr_assert_eq(mkdir(out, 0777), 0);
    cr_assert_eq(file_write_atomic(marker, "x", 1, NULL), 0);
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert %s %s", TINY, out), 2, "%s", log);
    cr_assert(strstr(log, "exists") && strstr(log, "--force"), "%s", log);
    free(log);
    cr_assert(path_exists(marker), "existing directory touched without --force");
    cr_assert_eq(test_run(&log, "convert %s %s/ --force", TINY, out), 0, "%s", log);
    free(log);
    cr_assert(!path_exists(marker), "--force did not replace the directory");
    assert_only_output(out);
    assert_no_tmp(tmp);
    rm_out(tmp);
}

Test(convert, checks_its_usage) {
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert --help"), 0);
    cr_assert(strstr(log, "--dtype f32|bf16") && strstr(log, "--force"), "%s", log);
    free(log);
    cr_assert_eq(test_run(NULL, "convert %s", TINY), 2);
    cr_assert_eq(test_run(&log, "convert %s /tmp/never --dtype f16", TINY), 2);
    cr_assert(strstr(log, "--dtype"), "%s", log);
    free(log);
    cr_assert(!path_exists("/tmp/never"));
}

/* ---- byte-level vocabularies: tokenizer.ggml.pre decides the split ---- */

/* A GGUF v3 with no tensors and only the tokenizer keys, built in memory. */
typedef struct gbuf {
    uint8_t *p;
    size_t   n, cap;
} gbuf;

static void gb_put(gbuf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p   = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void gb_u32(gbuf *b, uint32_t v) { gb_put(b, &v, 4); }
static void gb_u64(gbuf *b, uint64_t v) { gb_put(b, &v, 8); }
static void gb_str(gbuf *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void gb_key(gbuf *b, const char *k, uint32_t type) {
    gb_str(b, k);
    gb_u32(b, type);
}

/* GPT-2's printable-byte alphabet, spelled out as the spec gives it: bytes 33..126, 161..172 and
 * 174..255 stand for themselves; the other 68 bytes map to U+0100.. in byte order. */
static void byte_token(int byte, char out[4]) {
    int cp = byte, k = 0;
    if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)) {
        for (int i = 0; i < byte; i++)
            k += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174);
        cp = 256 + k;
    }
    memset(out, 0, 4);
    if (cp < 0x80)
        out[0] = (char)cp;
    else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
    }
}

/* Vocabulary: 0 <|endoftext|> (control), 1..256 the byte tokens, 257 "ĠĠ", 258 "Ġa"; merges as
 * given. pre == NULL leaves tokenizer.ggml.pre out. */
static gbuf byte_level_gguf_merges(const char *pre, const char *const *merges, int n_merges) {
    gbuf b = {0};
    gb_put(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, pre ? 6 : 5);
    gb_key(&b, "general.architecture", GGUF_T_STRING);
    gb_str(&b, "llama");
    gb_key(&b, "tokenizer.ggml.model", GGUF_T_STRING);
    gb_str(&b, "gpt2");
    if (pre) {
        gb_key(&b, "tokenizer.ggml.pre", GGUF_T_STRING);
        gb_str(&b, pre);
    }
    gb_key(&b, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
    gb_u32(&b, GGUF_T_STRING);
    gb_u64(&b, 259);
    gb_str(&b, "<|endoftext|>");
    for (int i = 0; i < 256; i++) {
        char t[4];
        byte_token(i, t);
        gb_str(&b, t);
    }
    gb_str(&b, "\xc4\xa0\xc4\xa0");
    gb_str(&b, "\xc4\xa0"
               "a");
    gb_key(&b, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
    gb_u32(&b, GGUF_T_I32);
    gb_u64(&b, 259);
    for (int i = 0; i < 259; i++)
        gb_u32(&b, i == 0 ? 3 : 1);
    gb_key(&b, "tokenizer.ggml.merges", GGUF_T_ARRAY);
    gb_u32(&b, GGUF_T_STRING);
    gb_u64(&b, (uint64_t)n_merges);
    for (int i = 0; i < n_merges; i++)
        gb_str(&b, merges[i]);
    return b;
}

/* The merges "Ġ Ġ" and "Ġ a", which build tokens 257 and 258. */
static gbuf byte_level_gguf(const char *pre) {
    static const char *const merges[] = {"\xc4\xa0 \xc4\xa0", "\xc4\xa0 a"};
    return byte_level_gguf_merges(pre, merges, 2);
}

/* tokenizer.json for a byte-level vocabulary with this pre (rc must be 0). */
static cJSON *byte_level_json(const char *pre, char **text) {
    gbuf        b = byte_level_gguf(pre);
    assay_error err;
    gguf_file  *g = gguf_open_buffer(b.p, b.n, "bl.gguf", &err);
    cr_assert_not_null(g, "%s", err.msg);
    char *cfg = NULL;
    cr_assert_eq(gguf_tokenizer_to_json(g, "bl.gguf", 64, text, &cfg, &err), 0, "%s", err.msg);
    free(cfg);
    gguf_close(g);
    free(b.p);
    cJSON *j = cJSON_Parse(*text);
    cr_assert_not_null(j);
    return j;
}

/* ids of `s` under the tokenizer.json that convert writes for this pre. */
static void expect_byte_level_ids(const char *pre, const char *s, const int32_t *want, size_t n) {
    char  *text;
    cJSON *j = byte_level_json(pre, &text);
    cJSON_Delete(j);
    assay_error err;
    tokenizer  *t = tok_load_buffer(text, strlen(text), "bl/tokenizer.json", &err);
    cr_assert_not_null(t, "%s", err.msg);
    tok_encode_opts o   = tok_default_opts();
    tok_ids         ids = {0};
    cr_assert_eq(tok_encode(t, s, strlen(s), &o, 0, &ids, &err), 0, "%s", err.msg);
    cr_assert_eq(ids.n, n, "pre %s, '%s': %zu ids, expected %zu", pre ? pre : "(none)", s, ids.n,
                 n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ids.ids[i], want[i], "pre %s, '%s': id %zu is %d, expected %d",
                     pre ? pre : "(none)", s, i, ids.ids[i], want[i]);
    tok_ids_free(&ids);
    tok_free(t);
    free(text);
}

/* Byte b is token 1 + b. 'a' = 0x61 → 98, '1' = 0x31 → 50, ' ' → 33 ("Ġ"), "ĠĠ" = 257. */
Test(convert, smollm_isolates_digits_before_the_gpt2_split) {
    /* llama.cpp's smollm split: \p{N} first, so "  " stays one piece → "ĠĠ"; then "1". */
    static const int32_t digits[] = {98, 257, 50};
    expect_byte_level_ids("smollm", "a  1", digits, 3);
    expect_byte_level_ids("starcoder", "a  1", digits, 3);
    /* GPT-2's regex alone: " 1" is one piece, so the first space stands alone → Ġ Ġ 1 */
    static const int32_t gpt2[] = {98, 33, 33, 50};
    expect_byte_level_ids("gpt-2", "a  1", gpt2, 4);
    expect_byte_level_ids(NULL, "a  1", gpt2, 4);
    expect_byte_level_ids("default", "a  1", gpt2, 4);
    /* no digits: both splits agree, and the control token stays whole */
    static const int32_t plain[] = {0, 98, 258};
    expect_byte_level_ids("smollm", "<|endoftext|>a a", plain, 3);
    expect_byte_level_ids("gpt-2", "<|endoftext|>a a", plain, 3);
}

Test(convert, writes_the_pre_tokenizer_each_pre_value_names) {
    char  *text;
    cJSON *j   = byte_level_json("smollm", &text);
    cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
    cr_assert_str_eq(cJSON_GetObjectItem(pre, "type")->valuestring, "Sequence");
    cJSON *seq = cJSON_GetObjectItem(pre, "pretokenizers");
    cr_assert_eq(cJSON_GetArraySize(seq), 2);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(seq, 0), "type")->valuestring,
                     "Digits");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(seq, 0), "individual_digits")));
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(seq, 1), "type")->valuestring,
                     "ByteLevel");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(seq, 1), "use_regex")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "post_processor")), "no BOS/EOS added");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "ignore_merges")));
    cJSON_Delete(j);
    free(text);

    /* Llama 3: one Split regex, and a whole word in the vocabulary is one token */
    j            = byte_level_json("llama-bpe", &text);
    pre          = cJSON_GetObjectItem(j, "pre_tokenizer");
    seq          = cJSON_GetObjectItem(pre, "pretokenizers");
    cJSON *split = cJSON_GetArrayItem(seq, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(split, "type")->valuestring, "Split");
    cr_assert(
        strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(split, "pattern"), "Regex")->valuestring,
               "\\p{N}{1,3}"));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(seq, 1), "use_regex")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "ignore_merges")));
    cJSON_Delete(j);
    free(text);

    /* Qwen2: single digits, merges applied */
    j     = byte_level_json("qwen2", &text);
    split = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pre_tokenizer"), "pretokenizers"), 0);
    const char *re =
        cJSON_GetObjectItem(cJSON_GetObjectItem(split, "pattern"), "Regex")->valuestring;
    cr_assert(strstr(re, "|\\p{N}|") && !strstr(re, "{1,3}"), "%s", re);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "ignore_merges")));
    cJSON_Delete(j);
    free(text);

    /* GPT-2: ByteLevel's own regex, nothing else */
    j   = byte_level_json("gpt-2", &text);
    pre = cJSON_GetObjectItem(j, "pre_tokenizer");
    cr_assert_str_eq(cJSON_GetObjectItem(pre, "type")->valuestring, "ByteLevel");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(pre, "use_regex")));
    cJSON_Delete(j);
    free(text);
}

Test(convert, rejects_an_unknown_pre_tokenizer_naming_it) {
    const char *bad[] = {"tekken", "made-up-pre", "smollm2", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gbuf        b = byte_level_gguf(bad[i]);
        assay_error err;
        assay_error_clear(&err);
        gguf_file *g = gguf_open_buffer(b.p, b.n, "bl.gguf", &err);
        cr_assert_not_null(g, "%s", err.msg);
        char *tj = NULL, *cfg = NULL;
        cr_assert_eq(gguf_tokenizer_to_json(g, "bl.gguf", 64, &tj, &cfg, &err), ASSAY_EUNSUPPORTED,
                     "pre '%s' accepted", bad[i]);
        cr_assert_null(tj);
        cr_assert_null(cfg);
        char want[96];
        snprintf(want, sizeof want, "tokenizer.ggml.pre is '%s'", bad[i]);
        cr_assert(strstr(err.msg, "bl.gguf") && strstr(err.msg, want), "%s", err.msg);
        gguf_close(g);
        free(b.p);
    }
}

/* SmolLM2-135M-Instruct (the README's default model): Q4_1 + Q8_0 tensors, tied embeddings, a
 * "smollm" byte-level vocabulary. Not in ../shared (98 MB): the test reads the GGUF that `make
 * demo` (tools/fetch_smollm2.sh) leaves in its cache, or the file ASSAY_SMOLLM2_GGUF names, and
 * skips when neither is there. Expected ids: llama.cpp's split for "smollm"
 * (tools/check_convert.py's reference); "x  7" is where GPT-2's regex alone differs. */
#define SMOLLM2_CACHED "build/models/cache/SmolLM2-135M-Instruct.Q4_1.gguf"
Test(convert, converts_smollm2_from_the_demo_cache) {
    const char *gguf = getenv("ASSAY_SMOLLM2_GGUF");
    if (!gguf || !*gguf)
        gguf = SMOLLM2_CACHED;
    if (access(gguf, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing (run make demo, or set ASSAY_SMOLLM2_GGUF)\n", gguf);
        cr_skip_test("%s missing", gguf);
    }
    char tmp[64], out[128];
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/smollm2", tmp);
    char *log = NULL;
    cr_assert_eq(test_run(&log, "convert %s %s", gguf, out), 0, "%s", log);
    free(log);
    assert_only_output(out);
    char         p[256];
    model_config c;
    assay_error  err;
    snprintf(p, sizeof p, "%s/config.json", out);
    cr_assert_eq(config_load(&c, p, &err), 0, "%s", err.msg);
    cr_assert(c.n_layers == 30 && c.dim == 576 && c.n_heads == 9 && c.n_kv_heads == 3 &&
              c.ffn_dim == 1536 && c.vocab_size == 49152 && c.tie_embeddings);
    st_model *m = st_model_open(out, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_eq(config_check_tensors(&c, m, NULL, NULL, &err), 0, "%s", err.msg);
    st_model_close(m);
    static const int32_t hello[] = {19556, 905, 17, 216, 33, 34, 35};
    expect_ids(out, "Hello world! 123", hello, sizeof hello / 4);
    static const int32_t call[] = {12800, 216, 37, 37, 37,  29,   32, 33,   34,  35,
                                   355,   256, 36, 34, 216, 1711, 28, 1792, 256, 39};
    expect_ids(out, "Call 555-0123 or  42  times, x  7", call, sizeof call / 4);
    static const int32_t chat[] = {1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198};
    expect_ids(out, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n", chat, sizeof chat / 4);
    rm_out(tmp);
}

/* ---- values the loader would refuse or read differently are refused at convert time ---- */

/* tiny.gguf with llama.rope.freq_base (an F32) patched to `value`; returns convert's exit code
 * and its output in *log, checking that nothing is left behind. */
static int convert_with_freq_base(float value, char **log) {
    char  *buf = NULL, tmp[64], bad[128], out[128];
    size_t n   = 0;
    cr_assert_eq(file_read_all(TINY, &buf, &n, NULL), 0);
    static const char key[] = "llama.rope.freq_base";
    char             *at    = memmem(buf, n, key, sizeof key - 1);
    cr_assert_not_null(at);
    at += sizeof key - 1;
    uint32_t type;
    memcpy(&type, at, 4);
    cr_assert_eq(type, GGUF_T_F32);
    memcpy(at + 4, &value, 4);
    test_tmpdir(tmp, sizeof tmp);
    snprintf(bad, sizeof bad, "%s/patched.gguf", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    cr_assert_eq(file_write_atomic(bad, buf, n, NULL), 0);
    free(buf);
    int rc = test_run(log, "convert %s %s", bad, out);
    if (rc != 0) {
        cr_assert(!path_exists(out));
        assert_no_tmp(tmp);
    }
    rm_out(tmp);
    return rc;
}

/* +inf used to become "rope_theta": null, and the model then ran with the default 10000; 1e13
 * was written and then refused by the loader (rope_theta is at most 1e12 there). */
Test(convert, refuses_a_rope_freq_base_config_json_cannot_hold_or_the_loader_refuses) {
    char *log = NULL;
    cr_assert_eq(convert_with_freq_base(INFINITY, &log), 2, "%s", log);
    cr_assert(strstr(log, "patched.gguf") && strstr(log, "llama.rope.freq_base") &&
                  strstr(log, "inf"),
              "%s", log);
    free(log);
    cr_assert_eq(convert_with_freq_base(1e13f, &log), 2, "%s", log);
    cr_assert(strstr(log, "patched.gguf") && strstr(log, "rope_theta"), "%s", log);
    free(log);
    cr_assert_eq(convert_with_freq_base(123456.0f, &log), 0, "%s", log);
    free(log);
}

/* A merge must name two tokens of the vocabulary whose concatenation is one too: tokenizers (and
 * our loader) refuse anything else, so convert refuses it, naming the merge. */
Test(convert, refuses_merges_that_name_tokens_outside_the_vocabulary) {
    static const char *const unknown_left[]  = {"\xc4\xa0 \xc4\xa0", "zz a"};
    static const char *const unknown_joint[] = {"\xc4\xa0 q"};
    const struct {
        const char *const *merges;
        int                n;
        const char        *want;
    } cases[] = {
        {unknown_left, 2, "tokenizer.ggml.merges[1] names 'zz'"},
        {unknown_joint, 1, "tokenizer.ggml.merges[0] names '\xc4\xa0q'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gbuf        b = byte_level_gguf_merges("gpt-2", cases[i].merges, cases[i].n);
        assay_error err;
        assay_error_clear(&err);
        gguf_file *g = gguf_open_buffer(b.p, b.n, "bl.gguf", &err);
        cr_assert_not_null(g, "%s", err.msg);
        char *tj = NULL, *cfg = NULL;
        cr_assert_eq(gguf_tokenizer_to_json(g, "bl.gguf", 64, &tj, &cfg, &err), ASSAY_EFORMAT,
                     "case %zu accepted", i);
        cr_assert(strstr(err.msg, "bl.gguf") && strstr(err.msg, cases[i].want), "%s", err.msg);
        cr_assert_null(tj);
        gguf_close(g);
        free(b.p);
    }
}

/* A named class (LlamaTokenizer, GPT2Tokenizer) makes transformers 5's AutoTokenizer rebuild the
 * pre-tokenizer and ignore tokenizer.json's (tools/check_converted_tokenizer.py measures it). */
Test(convert, tokenizer_config_names_pretrainedtokenizerfast) {
    char tmp[64], out[128], p[256], *text = NULL;
    test_tmpdir(tmp, sizeof tmp);
    snprintf(out, sizeof out, "%s/tok", tmp);
    cr_assert_eq(test_run(NULL, "convert %s %s", TINY, out), 0);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", out);
    cr_assert_eq(file_read_all(p, &text, NULL, NULL), 0);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "tokenizer_class")->valuestring,
                     "PreTrainedTokenizerFast");
    cJSON_Delete(j);
    rm_out(tmp);

    /* byte-level vocabularies too */
    gbuf        b = byte_level_gguf("smollm");
    assay_error err;
    gguf_file  *g = gguf_open_buffer(b.p, b.n, "bl.gguf", &err);
    cr_assert_not_null(g, "%s", err.msg);
    char *tj = NULL, *cfg = NULL;
    cr_assert_eq(gguf_tokenizer_to_json(g, "bl.gguf", 64, &tj, &cfg, &err), 0, "%s", err.msg);
    j = cJSON_Parse(cfg);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "tokenizer_class")->valuestring,
                     "PreTrainedTokenizerFast");
    cJSON_Delete(j);
    free(tj);
    free(cfg);
    gguf_close(g);
    free(b.p);
}
