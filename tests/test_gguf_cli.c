/* tests/test_gguf_cli.c — a GGUF file wherever the CLI takes a model: `ppl`, `generate`, `eval`,
 * `tokenize` and `inspect` on a .gguf give what they give on the directory `assay convert` makes
 * from it (bitwise: the loader decodes every supported type exactly and maps llama.cpp's names
 * and RoPE row order back), a Q8_0 file keeps its blocks with --weights q8_0 (no f32 copy, no
 * re-quantization), and damaged or unsupported files are refused with exit 2 naming the file and
 * the field. The Q8_0 files are written here, following the GGUF v3 layout, from a fixed seed. */
#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "core/sha256.h"
#include "loader/chat_template.h"
#include "loader/gguf.h"
#include "loader/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "tests/helpers.h"

#define STORIES "models/stories260K/stories260K.gguf"

/* ---- a GGUF v3 writer for test models ------------------------------------------------------ */

typedef struct gbuf {
    uint8_t *p;
    size_t   n, cap;
} gbuf;

static void gb_put(gbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p   = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void gb_u32(gbuf *b, uint32_t v) { gb_put(b, &v, 4); } /* the test hosts are little-endian */
static void gb_u64(gbuf *b, uint64_t v) { gb_put(b, &v, 8); }
static void gb_str(gbuf *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void kv_key(gbuf *b, int *n_kv, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
    (*n_kv)++;
}

static uint32_t rng_state;
static uint32_t rng(void) { /* xorshift32: a fixed, platform-independent stream */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

typedef struct tiny_spec {
    int         dim, n_heads, n_kv, ffn, n_layers;
    uint32_t    down_type;    /* blk.0.ffn_down.weight's type: 0 = Q8_0 like the other matrices */
    int         no_tok_model; /* leave out tokenizer.ggml.model */
    int         no_tokens;    /* leave out tokenizer.ggml.tokens/scores/token_type */
    const char *name;
    int         gpt2; /* a byte-level BPE vocabulary with merges, as SmolLM2's GGUF has */
} tiny_spec;

enum { N_PIECES = 41 };
/* SentencePiece-style pieces after <unk>, <s>, </s> and the 256 byte tokens: letters, then
 * merges whose halves are in the vocabulary (merges are derived from pieces and scores) */
#define SP "\xe2\x96\x81" /* U+2581, SentencePiece's space */
static const char *const PIECES[N_PIECES] = {
    SP,       "a",    "b",      "c",    "d",      "e",     "f",    "g",    "h",    "i",      "j",
    "k",      "l",    "m",      "n",    "o",      "p",     "q",    "r",    "s",    "t",      "u",
    "v",      "w",    "x",      "y",    "z",      "at",    "he",   "on",   SP "t", SP "the", SP "c",
    SP "cat", SP "s", SP "sat", SP "m", SP "mat", SP "on", SP "a", SP "an"};
#define VOCAB (3 + 256 + N_PIECES)

/* Byte-level BPE: the 256 byte symbols (GPT-2's byte-to-unicode map), merged pieces, then the
 * end-of-text token. */
enum { N_BL_MERGES = 8 };
#define G "\xc4\xa0" /* U+0120, byte-level's space */
static const char *const BL_MERGES[N_BL_MERGES][2] = {{G, "t"}, {"h", "e"},   {G "t", "he"},
                                                      {G, "c"}, {"a", "t"},   {G "c", "at"},
                                                      {G, "s"}, {G "s", "at"}};
#define VOCAB_GPT2 (256 + N_BL_MERGES + 1)

/* The printable character GPT-2's byte-level encoding gives byte b, as UTF-8 into out. */
static void byte_symbol(int b, char *out) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int n = 0; /* the others, in order, from U+0100 */
        for (int k = 0; k < b; k++)
            n += !((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255));
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
    }
}

/* Q8_0 blocks for a (rows, cols) matrix: random f16 scales near 1/512 and quants in [-100, 100]
 * (never +-127, so quantizing the decoded values again gives other scales and quants). */
static void q8_blocks(gbuf *b, size_t rows, size_t cols) {
    for (size_t k = 0; k < rows * cols / 32; k++) {
        uint16_t d = (uint16_t)(0x1800 | (rng() & 0x3ff));
        int8_t   q[32];
        for (int j = 0; j < 32; j++)
            q[j] = (int8_t)((int)(rng() % 201) - 100);
        gb_put(b, &d, 2);
        gb_put(b, q, 32);
    }
}

typedef struct wtensor {
    char     name[64];
    int      ndim;
    uint64_t ne[2];
    uint32_t type;
    size_t   off, nbytes;
} wtensor;

/* Writes a llama GGUF of spec `s` to dir/s->name; returns the path (static buffer per call). */
static const char *write_tiny_gguf(const char *dir, const tiny_spec *s) {
    static char path[512];
    gbuf        kv = {0}, data = {0}, out = {0};
    int         n_kv = 0, hd = s->dim / s->n_heads, vocab = s->gpt2 ? VOCAB_GPT2 : VOCAB;
    uint32_t    eot = VOCAB_GPT2 - 1;
    rng_state       = 12345u;
    kv_key(&kv, &n_kv, "general.architecture", GGUF_T_STRING);
    gb_str(&kv, "llama");
    const struct {
        const char *k;
        uint32_t    v;
    } u[] = {{"llama.context_length", 256},
             {"llama.embedding_length", (uint32_t)s->dim},
             {"llama.block_count", (uint32_t)s->n_layers},
             {"llama.feed_forward_length", (uint32_t)s->ffn},
             {"llama.attention.head_count", (uint32_t)s->n_heads},
             {"llama.attention.head_count_kv", (uint32_t)s->n_kv},
             {"llama.rope.dimension_count", (uint32_t)hd},
             {"llama.vocab_size", (uint32_t)vocab},
             {"tokenizer.ggml.bos_token_id", s->gpt2 ? eot : 1},
             {"tokenizer.ggml.eos_token_id", s->gpt2 ? eot : 2},
             {s->gpt2 ? "tokenizer.ggml.padding_token_id" : "tokenizer.ggml.unknown_token_id",
              s->gpt2 ? eot : 0}};
    for (size_t i = 0; i < sizeof u / sizeof *u; i++) {
        kv_key(&kv, &n_kv, u[i].k, GGUF_T_U32);
        gb_u32(&kv, u[i].v);
    }
    float eps = 1e-5f, theta = 10000.0f;
    kv_key(&kv, &n_kv, "llama.attention.layer_norm_rms_epsilon", GGUF_T_F32);
    gb_put(&kv, &eps, 4);
    kv_key(&kv, &n_kv, "llama.rope.freq_base", GGUF_T_F32);
    gb_put(&kv, &theta, 4);
    if (!s->no_tok_model) {
        kv_key(&kv, &n_kv, "tokenizer.ggml.model", GGUF_T_STRING);
        gb_str(&kv, s->gpt2 ? "gpt2" : "llama");
    }
    if (s->gpt2) {
        char sym[8], joined[32];
        kv_key(&kv, &n_kv, "tokenizer.ggml.pre", GGUF_T_STRING);
        gb_str(&kv, "gpt-2");
        kv_key(&kv, &n_kv, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_STRING);
        gb_u64(&kv, VOCAB_GPT2);
        for (int b = 0; b < 256; b++) {
            byte_symbol(b, sym);
            gb_str(&kv, sym);
        }
        for (int i = 0; i < N_BL_MERGES; i++) {
            snprintf(joined, sizeof joined, "%s%s", BL_MERGES[i][0], BL_MERGES[i][1]);
            gb_str(&kv, joined);
        }
        gb_str(&kv, "<|endoftext|>");
        kv_key(&kv, &n_kv, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_I32);
        gb_u64(&kv, VOCAB_GPT2);
        for (int i = 0; i < VOCAB_GPT2; i++) {
            int32_t ty = i == VOCAB_GPT2 - 1 ? 3 : 1;
            gb_put(&kv, &ty, 4);
        }
        kv_key(&kv, &n_kv, "tokenizer.ggml.merges", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_STRING);
        gb_u64(&kv, N_BL_MERGES);
        for (int i = 0; i < N_BL_MERGES; i++) {
            snprintf(joined, sizeof joined, "%s %s", BL_MERGES[i][0], BL_MERGES[i][1]);
            gb_str(&kv, joined);
        }
    } else if (!s->no_tokens) {
        char tok[16];
        kv_key(&kv, &n_kv, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_STRING);
        gb_u64(&kv, VOCAB);
        gb_str(&kv, "<unk>");
        gb_str(&kv, "<s>");
        gb_str(&kv, "</s>");
        for (int i = 0; i < 256; i++) {
            snprintf(tok, sizeof tok, "<0x%02X>", i);
            gb_str(&kv, tok);
        }
        for (int i = 0; i < N_PIECES; i++)
            gb_str(&kv, PIECES[i]);
        kv_key(&kv, &n_kv, "tokenizer.ggml.scores", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_F32);
        gb_u64(&kv, VOCAB);
        for (int i = 0; i < VOCAB; i++) {
            float sc = i < 259 ? 0.0f : -(float)(i - 259); /* earlier pieces merge first */
            gb_put(&kv, &sc, 4);
        }
        kv_key(&kv, &n_kv, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
        gb_u32(&kv, GGUF_T_I32);
        gb_u64(&kv, VOCAB);
        for (int i = 0; i < VOCAB; i++) {
            int32_t ty = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1; /* unknown, control, byte */
            gb_put(&kv, &ty, 4);
        }
    }

    /* tensors: every matrix Q8_0 (ffn_down of layer 0 as down_type says), norms F32; tied
     * embeddings (no output.weight) */
    wtensor t[64];
    int     nt = 0;
    size_t  D = (size_t)s->dim, F = (size_t)s->ffn, KV = (size_t)s->n_kv * hd;
#define ADD_T(nm, nd, c, r, ty)                                                                    \
    do {                                                                                           \
        wtensor *w = &t[nt++];                                                                     \
        snprintf(w->name, sizeof w->name, "%s", nm);                                               \
        w->ndim  = nd;                                                                             \
        w->ne[0] = c;                                                                              \
        w->ne[1] = r;                                                                              \
        w->type  = ty;                                                                             \
        while (data.n % 32)                                                                        \
            gb_put(&data, "", 1);                                                                  \
        w->off = data.n;                                                                           \
        if (ty == GGML_TYPE_F32)                                                                   \
            for (size_t e = 0; e < (size_t)(c); e++) {                                             \
                float x = 1.0f + (float)((int)(rng() % 64) - 32) / 256.0f;                         \
                gb_put(&data, &x, 4);                                                              \
            }                                                                                      \
        else                                                                                       \
            q8_blocks(&data, r, c);                                                                \
        w->nbytes = data.n - w->off;                                                               \
    } while (0)
    char nm[64];
    ADD_T("token_embd.weight", 2, D, (size_t)vocab, GGML_TYPE_Q8_0);
    for (int l = 0; l < s->n_layers; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        ADD_T(nm, 1, D, 1, GGML_TYPE_F32);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        ADD_T(nm, 2, D, D, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
        ADD_T(nm, 2, D, KV, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        ADD_T(nm, 2, D, KV, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l);
        ADD_T(nm, 2, D, D, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        ADD_T(nm, 1, D, 1, GGML_TYPE_F32);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", l);
        ADD_T(nm, 2, D, F, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
        ADD_T(nm, 2, D, F, GGML_TYPE_Q8_0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        ADD_T(nm, 2, F, D, GGML_TYPE_Q8_0);
        if (l == 0 && s->down_type)
            t[nt - 1].type = s->down_type; /* the bytes stay; the reader cannot size them */
    }
    ADD_T("output_norm.weight", 1, D, 1, GGML_TYPE_F32);
#undef ADD_T

    gb_put(&out, "GGUF", 4);
    gb_u32(&out, 3);
    gb_u64(&out, (uint64_t)nt);
    gb_u64(&out, (uint64_t)n_kv);
    gb_put(&out, kv.p, kv.n);
    for (int i = 0; i < nt; i++) {
        gb_str(&out, t[i].name);
        gb_u32(&out, (uint32_t)t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            gb_u64(&out, t[i].ne[d]);
        gb_u32(&out, t[i].type);
        gb_u64(&out, t[i].off);
    }
    while (out.n % 32)
        gb_put(&out, "", 1);
    gb_put(&out, data.p, data.n);
    snprintf(path, sizeof path, "%s/%s", dir, s->name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(out.p, 1, out.n, f), out.n);
    fclose(f);
    free(kv.p), free(data.p), free(out.p);
    return path;
}

static const tiny_spec SMALL = {64, 4, 2, 128, 2, 0, 0, 0, "q8.gguf", 0};

/* ---- helpers -------------------------------------------------------------------------------- */

/* Runs a command that prints JSON on stdout (then a summary on stderr): the parsed object. */
static cJSON *run_json(const char *what, const char *fmt, const char *path, const char *rest) {
    char *out = NULL;
    char  args[4096];
    snprintf(args, sizeof args, fmt, path, rest);
    int rc = test_run(&out, "%s", args);
    cr_assert_eq(rc, 0, "%s: %s", what, out);
    cJSON *j = cJSON_ParseWithOpts(out, NULL, 0);
    cr_assert_not_null(j, "%s: no JSON in %s", what, out);
    free(out);
    return j;
}

/* The "nll_nats" of every document and the total: equal as doubles, bit for bit. */
static void same_ppl(cJSON *a, cJSON *b, const char *what) {
    cJSON *da = cJSON_GetObjectItem(a, "documents"), *db = cJSON_GetObjectItem(b, "documents");
    cr_assert_eq(cJSON_GetArraySize(da), cJSON_GetArraySize(db));
    cr_assert_gt(cJSON_GetArraySize(da), 0);
    for (int i = 0; i < cJSON_GetArraySize(da); i++) {
        cJSON *x = cJSON_GetArrayItem(da, i), *y = cJSON_GetArrayItem(db, i);
        double nx = cJSON_GetObjectItem(x, "nll_nats")->valuedouble;
        double ny = cJSON_GetObjectItem(y, "nll_nats")->valuedouble;
        cr_assert(nx == ny, "%s: document %d nll %.17g vs %.17g", what, i, nx, ny);
        cr_assert_eq(cJSON_GetObjectItem(x, "tokens")->valueint,
                     cJSON_GetObjectItem(y, "tokens")->valueint, "%s: document %d tokens", what, i);
    }
    double pa = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "total"), "ppl")->valuedouble;
    double pb = cJSON_GetObjectItem(cJSON_GetObjectItem(b, "total"), "ppl")->valuedouble;
    cr_assert(pa == pb, "%s: total ppl %.17g vs %.17g", what, pa, pb);
}

static void convert_to(const char *gguf, const char *dir) {
    char *out = NULL;
    cr_assert_eq(test_run(&out, "convert %s %s", gguf, dir), 0, "%s", out);
    free(out);
}

static const char TEXT[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big red ball under a tree. She ran to get it and showed it to "
    "her mom. Her mom smiled and said they could play together.\n";

/* ---- stories260K: the real GGUF against its converted directory ---------------------------- */

Test(gguf_cli, ppl_on_the_stories_gguf_is_bitwise_that_of_its_converted_directory) {
    SHARED_OR_SKIP(gguf, STORIES);
    char dir[64], conv[128], doc[128], rest[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(gguf, conv);
    test_write_file(dir, "t.txt", TEXT);
    snprintf(doc, sizeof doc, "%s/t.txt", dir);
    /* several windows, so positions past the first window and the stride path run too */
    const char *modes[] = {"--ctx 32 --stride 16", "--mode rolling --ctx 24"};
    for (int m = 0; m < 2; m++) {
        snprintf(rest, sizeof rest, "%s %s --json", doc, modes[m]);
        cJSON *a = run_json("ppl gguf", "ppl %s %s", gguf, rest);
        cJSON *b = run_json("ppl dir", "ppl %s %s", conv, rest);
        same_ppl(a, b, modes[m]);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static char buf[1 << 16];
    size_t      n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

/* The "tokens" of every line of a generate --output file, joined. */
static char *generated_tokens(const char *path) {
    char  *text = read_text(path), *line = text, *acc = calloc(1, 1 << 16);
    size_t n = 0;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j, "%s: %s", path, line);
        char *t = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "tokens"));
        n += (size_t)snprintf(acc + n, (1 << 16) - n, "%s\n", t);
        free(t);
        cJSON_Delete(j);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return acc;
}

Test(gguf_cli, generate_on_the_stories_gguf_gives_the_converted_directorys_tokens) {
    SHARED_OR_SKIP(gguf, STORIES);
    char dir[64], conv[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(gguf, conv);
    test_write_file(dir, "p.jsonl",
                    "{\"prompt\": \"Once upon a time\", \"max_new_tokens\": 40}\n"
                    "{\"prompt\": \"The cat\", \"max_new_tokens\": 24}\n"
                    "{\"prompt\": \"Lily and Ben\", \"max_new_tokens\": 32}\n");
    char *out = NULL;
    cr_assert_eq(
        test_run(&out, "generate %s --prompts %s/p.jsonl --output %s/a.jsonl", gguf, dir, dir), 0,
        "%s", out);
    free(out);
    cr_assert_eq(
        test_run(&out, "generate %s --prompts %s/p.jsonl --output %s/b.jsonl", conv, dir, dir), 0,
        "%s", out);
    free(out);
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/a.jsonl", dir);
    snprintf(pb, sizeof pb, "%s/b.jsonl", dir);
    char *ta = generated_tokens(pa), *tb = generated_tokens(pb);
    cr_assert_gt(strlen(ta), 90, "three lines of tokens expected: %s", ta);
    cr_assert_str_eq(ta, tb);
    free(ta), free(tb);
}

Test(gguf_cli, tokenize_reads_the_gguf_vocabulary_as_the_converted_tokenizer) {
    SHARED_OR_SKIP(gguf, STORIES);
    char dir[64], conv[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(gguf, conv);
    char       *a = NULL, *b = NULL;
    const char *text = "'Hello, Lily!  The 3 cats ran.\\nzq\xc3\xa9'";
    cr_assert_eq(test_run(&a, "tokenize %s --json %s", gguf, text), 0, "%s", a);
    cr_assert_eq(test_run(&b, "tokenize %s --json %s", conv, text), 0, "%s", b);
    cr_assert_str_eq(a, b);
    cr_assert(strstr(a, "\"ids\""), "%s", a);
    free(a), free(b);
}

/* eval: the same metrics, and results.json names the model by its GGUF header and the tokenizer
 * by the texts `convert` writes (so the file and its directory share the tokenizer hash). */
Test(gguf_cli, eval_on_a_gguf_scores_a_task_and_records_its_hashes) {
    SHARED_OR_SKIP(gguf, STORIES);
    char dir[64], conv[128], path[256];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(gguf, conv);
    test_write_file(dir, "rows.jsonl",
                    "{\"q\": \"Lily went to the\", \"opts\": [\"park\", \"moon\"], \"ans\": 0}\n"
                    "{\"q\": \"The cat said\", \"opts\": [\"meow\", \"table\"], \"ans\": 0}\n"
                    "{\"q\": \"Once upon a\", \"opts\": [\"green\", \"time\"], \"ans\": 1}\n");
    test_write_file(dir, "spec.json",
                    "{\"task\": \"tiny\", \"data\": \"rows.jsonl\", \"context\": \"{q}\", "
                    "\"choices\": \"opts\", \"gold_index\": \"ans\", \"metrics\": [\"acc\", "
                    "\"acc_norm\"]}");
    const char *models[2] = {gguf, conv};
    cJSON      *res[2];
    for (int i = 0; i < 2; i++) {
        char *out = NULL;
        cr_assert_eq(test_run(&out,
                              "eval %s --task-file %s/spec.json --data %s --output-path %s/out%d",
                              models[i], dir, dir, dir, i),
                     0, "%s", out);
        free(out);
        snprintf(path, sizeof path, "%s/out%d/results.json", dir, i);
        res[i] = test_read_json(path);
    }
    cJSON *ra = cJSON_GetObjectItem(cJSON_GetObjectItem(res[0], "results"), "tiny");
    cJSON *rb = cJSON_GetObjectItem(cJSON_GetObjectItem(res[1], "results"), "tiny");
    cr_assert_not_null(ra);
    const char *keys[] = {"acc,none", "acc_norm,none"};
    for (int k = 0; k < 2; k++) {
        cJSON *x = cJSON_GetObjectItem(ra, keys[k]), *y = cJSON_GetObjectItem(rb, keys[k]);
        cr_assert(cJSON_IsNumber(x) && cJSON_IsNumber(y), "%s", keys[k]);
        cr_assert(x->valuedouble == y->valuedouble, "%s: %g vs %g", keys[k], x->valuedouble,
                  y->valuedouble);
    }
    cJSON *ha = cJSON_GetObjectItem(cJSON_GetObjectItem(res[0], "assay"), "hashes");
    cJSON *hb = cJSON_GetObjectItem(cJSON_GetObjectItem(res[1], "assay"), "hashes");
    cr_assert_str_eq(cJSON_GetObjectItem(ha, "tokenizer_sha256")->valuestring,
                     cJSON_GetObjectItem(hb, "tokenizer_sha256")->valuestring);
    /* the model hash: SHA-256 of the bytes before the tensor data */
    assay_error err;
    gguf_file  *g = gguf_open(gguf, &err);
    cr_assert_not_null(g, "%s", err.msg);
    size_t      n;
    const void *h = gguf_header(g, &n);
    cr_assert(n > 24 && n < 64 << 10, "header of %zu bytes", n);
    sha256_ctx c;
    char       want[65];
    sha256_init(&c);
    sha256_update(&c, h, n);
    sha256_hex(&c, want);
    gguf_close(g);
    const cJSON *mh = cJSON_GetObjectItem(ha, "model_sha256_gguf_header");
    cr_assert(cJSON_IsString(mh));
    cr_assert_str_eq(mh->valuestring, want);
    cJSON_Delete(res[0]);
    cJSON_Delete(res[1]);
}

/* inspect FILE.gguf: the directory's fields, the same values */
Test(gguf_cli, inspect_shows_for_a_gguf_what_it_shows_for_its_converted_directory) {
    SHARED_OR_SKIP(gguf, STORIES);
    char dir[64], conv[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(gguf, conv);
    cJSON      *a      = run_json("inspect gguf", "inspect %s %s", gguf, "--json");
    cJSON      *b      = run_json("inspect dir", "inspect %s %s", conv, "--json");
    const char *same[] = {
        "architecture", "model_type",   "parameters", "context_length", "vocab_size",
        "n_layers",     "dim",          "n_heads",    "n_kv_heads",     "head_dim",
        "ffn_dim",      "norm",         "norm_eps",   "rope",           "tie_embeddings",
        "bos_token_id", "eos_token_id", "memory",     "chat_template"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        cJSON *x = cJSON_GetObjectItem(a, same[i]), *y = cJSON_GetObjectItem(b, same[i]);
        cr_assert_not_null(y, "%s missing for the directory", same[i]);
        cr_assert(cJSON_Compare(x, y, 1), "%s differs", same[i]);
    }
    /* the tokenizer as the directory describes it, then where it came from */
    const char *ta = cJSON_GetObjectItem(a, "tokenizer")->valuestring;
    const char *tb = cJSON_GetObjectItem(b, "tokenizer")->valuestring;
    cr_assert(!strncmp(ta, tb, strlen(tb)) && strstr(ta, "tokenizer.ggml.model llama"), "%s | %s",
              ta, tb);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* tok_load and chat_template_load_dir of a GGUF path give what they give on its converted
 * directory: tokenizer.json and tokenizer_config.json (special ids, add_bos, model_max_length,
 * the chat template and its bos/eos strings). tiny.gguf carries a chat template. */
Test(gguf_cli, a_gguf_tokenizer_and_chat_template_are_those_of_its_converted_directory) {
    const char *g = "tests/fixtures/gguf/tiny.gguf";
    char        dir[64], conv[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(g, conv);
    assay_error err;
    tokenizer  *a = tok_load(g, &err);
    cr_assert_not_null(a, "%s", err.msg);
    tokenizer *b = tok_load(conv, &err);
    cr_assert_not_null(b, "%s", err.msg);
    cr_assert_eq(tok_vocab_size(a), tok_vocab_size(b));
    cr_assert_str_eq(tok_kind(a), tok_kind(b));
    cr_assert_eq(tok_bos_id(a), tok_bos_id(b));
    cr_assert_eq(tok_eos_id(a), tok_eos_id(b));
    cr_assert_eq(tok_add_bos(a), tok_add_bos(b));
    cr_assert_eq(tok_model_max_length(a), tok_model_max_length(b));
    cr_assert_gt(tok_model_max_length(a), 0, "model_max_length from llama.context_length");
    cr_assert_eq(tok_has_chat_template(a), 1);
    cr_assert_eq(tok_has_chat_template(b), 1);
    const char      text[] = "hello world, 12 \xc3\xa9t\xc3\xa9";
    tok_encode_opts o      = tok_default_opts();
    tok_ids         ia = {0}, ib = {0};
    cr_assert_eq(tok_encode(a, text, strlen(text), &o, 0, &ia, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_encode(b, text, strlen(text), &o, 0, &ib, &err), 0, "%s", err.msg);
    cr_assert_eq(ia.n, ib.n);
    cr_assert_arr_eq(ia.ids, ib.ids, ia.n * sizeof(int32_t));
    tok_ids_free(&ia), tok_ids_free(&ib);
    tok_free(a), tok_free(b);

    chat_template *ta = NULL, *tb = NULL;
    chat_vars      va, vb;
    cr_assert_eq(chat_template_load_dir(g, &ta, &va, &err), 0, "%s", err.msg);
    cr_assert_eq(chat_template_load_dir(conv, &tb, &vb, &err), 0, "%s", err.msg);
    cr_assert(ta && tb, "both have a template");
    cr_assert_str_eq(va.bos_token, vb.bos_token);
    cr_assert_str_eq(va.eos_token, vb.eos_token);
    va.add_generation_prompt = vb.add_generation_prompt = 1;
    chat_message m[2] = {{"user", "hi there", 8}, {"assistant", "hello", 5}};
    char        *ra = NULL, *rb = NULL;
    size_t       la, lb;
    cr_assert_eq(chat_template_render(ta, m, 2, &va, &ra, &la, &err), 0, "%s", err.msg);
    cr_assert_eq(chat_template_render(tb, m, 2, &vb, &rb, &lb, &err), 0, "%s", err.msg);
    cr_assert_str_eq(ra, rb);
    cr_assert(strstr(ra, "hi there"), "%s", ra);
    free(ra), free(rb);
    chat_template_free(ta), chat_template_free(tb);
}

/* ---- Q8_0 files ----------------------------------------------------------------------------- */

/* With --weights q8_0 the file's blocks are used as they are: the scores are bitwise those of the
 * f32 engine on the decoded weights (the converted directory with --weights f32; the GEMM
 * contract decodes Q8_0 to those exact f32 values), and differ from re-quantizing the decoded
 * weights (the directory with --weights q8_0), which a round trip through f32 would give. */
Test(gguf_cli, a_q8_0_gguf_keeps_its_blocks_with_weights_q8_0) {
    char dir[64], conv[128], doc[128], rest[256];
    test_tmpdir(dir, sizeof dir);
    const char *g = write_tiny_gguf(dir, &SMALL);
    snprintf(conv, sizeof conv, "%s/conv", dir);
    convert_to(g, conv);
    test_write_file(dir, "t.txt", "the cat sat on the mat, then a cat sat on an oak.\n");
    snprintf(doc, sizeof doc, "%s/t.txt", dir);
    snprintf(rest, sizeof rest, "%s --ctx 16 --stride 8 --json --weights q8_0", doc);
    cJSON *q8 = run_json("gguf q8_0", "ppl %s %s", g, rest);
    cr_assert_str_eq(cJSON_GetObjectItem(q8, "weights")->valuestring, "q8_0");
    snprintf(rest, sizeof rest, "%s --ctx 16 --stride 8 --json --weights f32", doc);
    cJSON *f32 = run_json("dir f32", "ppl %s %s", conv, rest);
    same_ppl(q8, f32, "Q8_0 GGUF with --weights q8_0 against its converted directory in f32");
    /* and --weights f32 on the file dequantizes exactly */
    cJSON *gf32 = run_json("gguf f32", "ppl %s %s", g, rest);
    same_ppl(gf32, f32, "Q8_0 GGUF with --weights f32 against its converted directory");
    snprintf(rest, sizeof rest, "%s --ctx 16 --stride 8 --json --weights q8_0", doc);
    cJSON *rq = run_json("dir q8_0", "ppl %s %s", conv, rest);
    double a  = cJSON_GetObjectItem(cJSON_GetObjectItem(q8, "total"), "nll_nats")->valuedouble;
    double b  = cJSON_GetObjectItem(cJSON_GetObjectItem(rq, "total"), "nll_nats")->valuedouble;
    cr_assert(a != b, "re-quantized weights scored the same (%.17g): the test cannot tell", a);
    cJSON_Delete(q8), cJSON_Delete(f32), cJSON_Delete(gf32), cJSON_Delete(rq);
}

/* A byte-level BPE vocabulary (tokenizer.ggml.model gpt2, merges in the file), and tiny.gguf
 * (Q4_0, Q4_1, F16, BF16, Q8_0 and F32 tensors): tokenize and ppl as their converted
 * directories, in every weight format. */
Test(gguf_cli, byte_level_and_mixed_type_ggufs_score_as_their_converted_directories) {
    char dir[64], conv[128], doc[128], rest[256];
    test_tmpdir(dir, sizeof dir);
    tiny_spec s   = SMALL;
    s.gpt2        = 1;
    s.name        = "bl.gguf";
    const char *g = write_tiny_gguf(dir, &s);
    test_write_file(dir, "t.txt",
                    "the cat sat on the mat; that cat's hat: 42 \xc3\xa9t\xc3\xa9s.\n");
    snprintf(doc, sizeof doc, "%s/t.txt", dir);
    const char *files[2] = {g, "tests/fixtures/gguf/tiny.gguf"};
    for (int f = 0; f < 2; f++) {
        snprintf(conv, sizeof conv, "%s/conv%d", dir, f);
        convert_to(files[f], conv);
        char *a = NULL, *b = NULL;
        cr_assert_eq(test_run(&a, "tokenize %s --ids --file %s", files[f], doc), 0, "%s", a);
        cr_assert_eq(test_run(&b, "tokenize %s --ids --file %s", conv, doc), 0, "%s", b);
        cr_assert_str_eq(a, b);
        if (f == 0) /* the merges ran: "Ġthe" and "Ġcat" are single tokens */
            cr_assert(strstr(a, " 258 ") && strstr(a, " 261 "), "%s", a);
        free(a), free(b);
        const char *w[3] = {"f32", "bf16", "q8_0"};
        for (int k = 0; k < 3; k++) {
            if (f == 0 && k == 2)
                continue; /* its Q8_0 blocks do not survive re-quantization, by design */
            snprintf(rest, sizeof rest, "%s --ctx 16 --stride 8 --json --weights %s", doc, w[k]);
            cJSON *x = run_json("gguf", "ppl %s %s", files[f], rest);
            cJSON *y = run_json("dir", "ppl %s %s", conv, rest);
            same_ppl(x, y, w[k]);
            cJSON_Delete(x), cJSON_Delete(y);
        }
    }
}

/* Peak RSS of one child (wait4 reports that process's own peak). */
static double child_peak_rss(const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s %s >/dev/null 2>&1", test_bin(), args);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int           st;
    struct rusage ru;
    cr_assert_eq(wait4(pid, &st, 0, &ru), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %d", cmd, st);
    return (double)ru.ru_maxrss * 1024.0;
}

/* A Q8_0 GGUF with --weights q8_0: the peak is its Q8_0 weights plus what the run needs besides
 * weights (measured on the f32 run of the same file), not an f32 copy and not the file's pages
 * kept resident beside the packed weights. */
Test(gguf_cli, peak_rss_of_a_q8_0_gguf_is_about_its_q8_0_bytes, .timeout = 120) {
    if (!TEST_CHECK_MEMORY)
        cr_skip_test("SKIP: resident memory means nothing under ASan");
    char dir[64], args[512];
    test_tmpdir(dir, sizeof dir);
    /* 12.7M parameters: 14 MB as Q8_0, 51 MB as f32 */
    const tiny_spec big = {512, 8, 4, 1536, 4, 0, 0, 0, "big.gguf", 0};
    const char     *g   = write_tiny_gguf(dir, &big);
    test_write_file(dir, "t.txt", "the cat sat on the mat.\n");
    const char *fmts[2] = {"q8_0", "f32"};
    const int   wf[2]   = {BE_WEIGHTS_Q8_0, BE_WEIGHTS_F32};
    double      peak[2], wbytes[2];
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "ppl %s %s/t.txt --threads 2 --weights %s", g, dir, fmts[i]);
        peak[i]       = child_peak_rss(args);
        model_opts  o = {.device = "cpu", .weights = wf[i], .max_batch_tokens = 64};
        assay_error err;
        model      *m = model_load(g, &o, &err);
        cr_assert_not_null(m, "%s", err.msg);
        wbytes[i] = (double)model_weight_bytes(m);
        model_free(m);
        fprintf(stderr, "gguf_cli: %s weights %.1f MB, peak RSS %.1f MB\n", fmts[i],
                wbytes[i] / 1e6, peak[i] / 1e6);
    }
    cr_assert(wbytes[0] < 0.3 * wbytes[1], "Q8_0 %.0f bytes against f32 %.0f", wbytes[0],
              wbytes[1]);
    /* what the run needs besides weights, measured on f32; 6 MB of slack for allocator noise and
     * one stacked weight's transient buffer (the largest, gate|up, is 1.8 MB as Q8_0); keeping
     * the file's 13.5 MB of pages resident would exceed it */
    double rest = peak[1] - wbytes[1];
    cr_assert(peak[0] <= wbytes[0] + rest + 6e6,
              "q8_0: peak %.1f MB, expected about its %.1f MB of weights + %.1f MB", peak[0] / 1e6,
              wbytes[0] / 1e6, rest / 1e6);
}

/* ---- files that are refused ----------------------------------------------------------------- */

static void expect_refused(const char *cmd, const char *path, const char *what) {
    char *out = NULL;
    int   rc  = test_run(&out, cmd, path);
    cr_assert_eq(rc, 2, "%s: exit %d: %s", cmd, rc, out);
    cr_assert(strstr(out, path), "the message names the file: %s", out);
    cr_assert(strstr(out, what), "the message names '%s': %s", what, out);
    free(out);
}

static void truncate_copy(const char *src, const char *dst, size_t n) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    cr_assert(in && out);
    char  *buf = malloc(n);
    size_t r   = fread(buf, 1, n, in);
    cr_assert_eq(r, n);
    fwrite(buf, 1, n, out);
    fclose(in), fclose(out), free(buf);
}

Test(gguf_cli, a_truncated_gguf_is_refused_naming_the_file_and_field) {
    char dir[64], cut[128], doc[128];
    test_tmpdir(dir, sizeof dir);
    const char *g = write_tiny_gguf(dir, &SMALL);
    test_write_file(dir, "t.txt", "the cat\n");
    snprintf(doc, sizeof doc, "ppl %%s %s/t.txt", dir);
    assay_error err;
    gguf_file  *f = gguf_open(g, &err);
    cr_assert_not_null(f, "%s", err.msg);
    size_t hdr;
    gguf_header(f, &hdr);
    gguf_close(f);
    /* inside the metadata (the vocabulary array: past the tensor-count plausibility check) */
    snprintf(cut, sizeof cut, "%s/meta_cut.gguf", dir);
    truncate_copy(g, cut, 1500);
    expect_refused(doc, cut, "key 'tokenizer.ggml.tokens'");
    /* a file too short for its own counts */
    truncate_copy(g, cut, 40);
    expect_refused(doc, cut, "tensor count 20 is not plausible");
    /* inside the tensor data: the tensor that runs past the end is named */
    snprintf(cut, sizeof cut, "%s/data_cut.gguf", dir);
    truncate_copy(g, cut, hdr + 1000);
    expect_refused(doc, cut, "ends past the end of the file");
    expect_refused("inspect %s", cut, "tensor '");
    expect_refused("tokenize %s hello", cut, "ends past the end of the file");
}

Test(gguf_cli, an_unsupported_quant_type_is_refused_naming_the_tensor_and_type) {
    char dir[64], doc[128];
    test_tmpdir(dir, sizeof dir);
    tiny_spec s   = SMALL;
    s.down_type   = 12; /* Q4_K */
    s.name        = "q4k.gguf";
    const char *g = write_tiny_gguf(dir, &s);
    test_write_file(dir, "t.txt", "the cat\n");
    snprintf(doc, sizeof doc, "ppl %%s %s/t.txt --weights q8_0", dir);
    expect_refused(doc, g, "tensor 'blk.0.ffn_down.weight' has type Q4_K");
    test_write_file(dir, "p.jsonl", "{\"prompt\": \"the cat\"}\n");
    snprintf(doc, sizeof doc, "generate %%s --prompts %s/p.jsonl", dir);
    expect_refused(doc, g, "tensor 'blk.0.ffn_down.weight' has type Q4_K");
    expect_refused("inspect %s", g, "tensor 'blk.0.ffn_down.weight' has type Q4_K");
}

Test(gguf_cli, missing_tokenizer_keys_are_refused_naming_the_key) {
    char dir[64], doc[128];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "t.txt", "the cat\n");
    snprintf(doc, sizeof doc, "ppl %%s %s/t.txt", dir);
    tiny_spec s    = SMALL;
    s.no_tok_model = 1;
    s.name         = "no_model.gguf";
    const char *g  = write_tiny_gguf(dir, &s);
    expect_refused(doc, g, "tokenizer.ggml.model");
    expect_refused("tokenize %s hello", g, "tokenizer.ggml.model");
    s           = SMALL;
    s.no_tokens = 1;
    s.name      = "no_tokens.gguf";
    g           = write_tiny_gguf(dir, &s);
    expect_refused(doc, g, "tokenizer.ggml.tokens");
}

/* The file is recognised by its magic, not its name; a damaged file named .gguf gets the GGUF
 * reader's message rather than "not a directory". */
Test(gguf_cli, a_gguf_is_recognised_by_content_and_a_bad_one_by_name) {
    char dir[64], renamed[128], doc[128];
    test_tmpdir(dir, sizeof dir);
    const char *g = write_tiny_gguf(dir, &SMALL);
    snprintf(renamed, sizeof renamed, "%s/weights.bin", dir);
    cr_assert_eq(rename(g, renamed), 0);
    test_write_file(dir, "t.txt", "the cat sat\n");
    char *out = NULL;
    cr_assert_eq(test_run(&out, "ppl %s %s/t.txt --weights q8_0", renamed, dir), 0, "%s", out);
    free(out);
    test_write_file(dir, "bad.gguf", "GGU");
    snprintf(doc, sizeof doc, "ppl %%s %s/t.txt", dir);
    snprintf(renamed, sizeof renamed, "%s/bad.gguf", dir);
    expect_refused(doc, renamed, "bad.gguf: ");
    cr_assert_eq(test_run(&out, "ppl %s/t.txt %s/t.txt", dir, dir), 2, "%s", out);
    cr_assert(strstr(out, "not a directory or a GGUF file"), "%s", out);
    free(out);
}
