/* loader/gguf_tokenizer.c — GGUF tokenizer metadata → tokenizer.json / tokenizer_config.json.
 *
 * The vocabulary can hold 100k+ tokens, so tokenizer.json is written with a string builder (cJSON
 * builds objects by walking lists); the small tokenizer_config.json uses cJSON. */
#include "loader/gguf_tokenizer.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define TOK_NORMAL 1
#define TOK_UNKNOWN 2
#define TOK_CONTROL 3
#define TOK_USER 4

/* ---- growable text ---- */

typedef struct sbuf {
    char  *p;
    size_t n, cap;
    int    oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p   = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char    tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal; s must be valid UTF-8 (checked by the caller). */
static void sb_json(sbuf *b, const char *s, size_t n) {
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        if (c == '"')
            sb_str(b, "\\\"");
        else if (c == '\\')
            sb_str(b, "\\\\");
        else if (c == '\n')
            sb_str(b, "\\n");
        else if (c == '\t')
            sb_str(b, "\\t");
        else if (c == '\r')
            sb_str(b, "\\r");
        else
            sb_fmt(b, "\\u%04x", c);
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t   len;
    uint32_t c, min;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, c = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, c = s[0] & 0x0f, min = 0x800;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, c = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static int utf8_valid(const char *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len((const unsigned char *)s + i, n - i, &cp);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

/* ---- string → id hash (open addressing over views into the file) ---- */

typedef struct tok_view {
    const char *s;
    size_t      n;
} tok_view;

typedef struct tok_map {
    int32_t        *slot; /* token id or -1 */
    size_t          mask;
    const tok_view *tok;
} tok_map;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int map_init(tok_map *m, const tok_view *tok, int64_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot)
        return -1;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->mask = cap - 1;
    m->tok  = tok;
    return 0;
}

static int32_t map_get(const tok_map *m, const char *s, size_t n) {
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0)
            return -1;
        if (m->tok[id].n == n && !memcmp(m->tok[id].s, s, n))
            return id;
    }
}

/* Inserts id; returns the id already there for an equal string, or -1 when new. */
static int32_t map_put(tok_map *m, int32_t id) {
    const tok_view *t = &m->tok[id];
    size_t          i = hash_bytes(t->s, t->n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t at = m->slot[i];
        if (at < 0) {
            m->slot[i] = id;
            return -1;
        }
        if (m->tok[at].n == t->n && !memcmp(m->tok[at].s, t->s, t->n))
            return at;
    }
}

/* ---- merges derived from vocabulary + scores (transformers' generate_merges) ---- */

typedef struct merge {
    int32_t l, r;
    float   score;
    int32_t len_l, len_r; /* in code points */
    int64_t seq;          /* order of creation: the sort is stable */
} merge;

static int cmp_local(const void *a, const void *b) {
    const merge *x = a, *y = b;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

/* (score, len_l, len_r) descending, then creation order. */
static int cmp_global(const void *a, const void *b) {
    const merge *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->len_l != y->len_l)
        return x->len_l > y->len_l ? -1 : 1;
    if (x->len_r != y->len_r)
        return x->len_r > y->len_r ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static size_t cp_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* Every split of every token into two tokens of the vocabulary, ordered as transformers orders
 * them: tokens in vocabulary order, splits of one token by (id left, id right), then a stable
 * sort by the merged token's score, longer left part first, longer right part first. */
static int derive_merges(const tok_view *tok, const float *score, int64_t n, const tok_map *map,
                         merge **out, size_t *n_out) {
    size_t cap = 1024, cnt = 0;
    merge *m = malloc(cap * sizeof *m);
    if (!m)
        return -1;
    for (int64_t i = 0; i < n; i++) {
        size_t   start = cnt;
        uint32_t cp;
        for (size_t k = 0; k < tok[i].n;) {
            size_t l = utf8_len((const unsigned char *)tok[i].s + k, tok[i].n - k, &cp);
            k += l;
            if (k >= tok[i].n)
                break;
            int32_t a = map_get(map, tok[i].s, k);
            int32_t b = a >= 0 ? map_get(map, tok[i].s + k, tok[i].n - k) : -1;
            if (b < 0)
                continue;
            if (cnt == cap) {
                merge *nm = cap < SIZE_MAX / 2 / sizeof *m ? realloc(m, 2 * cap * sizeof *m) : NULL;
                if (!nm) {
                    free(m);
                    return -1;
                }
                m = nm;
                cap *= 2;
            }
            m[cnt++] = (merge){a,
                               b,
                               score[i],
                               (int32_t)cp_count(tok[i].s, k),
                               (int32_t)cp_count(tok[i].s + k, tok[i].n - k),
                               0};
        }
        qsort(m + start, cnt - start, sizeof *m, cmp_local);
    }
    for (size_t i = 0; i < cnt; i++)
        m[i].seq = (int64_t)i;
    qsort(m, cnt, sizeof *m, cmp_global);
    *out   = m;
    *n_out = cnt;
    return 0;
}

/* ---- byte-level alphabet (GPT-2 bytes_to_unicode) ---- */

static int byte_is_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static uint32_t byte_to_cp(int b) {
    if (byte_is_printable(b))
        return (uint32_t)b;
    uint32_t k = 0;
    for (int i = 0; i < b; i++)
        k += !byte_is_printable(i);
    return 256 + k;
}

static int cp_in_byte_alphabet(uint32_t cp) {
    return (cp < 256 && byte_is_printable((int)cp)) || (cp >= 256 && cp < 256 + 68);
}

static void sb_cp(sbuf *b, uint32_t cp) {
    char buf[4];
    if (cp < 0x80) {
        buf[0] = (char)cp;
        sb_put(b, buf, 1);
    } else if (cp < 0x800) {
        buf[0] = (char)(0xc0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3f));
        sb_put(b, buf, 2);
    } else {
        buf[0] = (char)(0xe0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[2] = (char)(0x80 | (cp & 0x3f));
        sb_put(b, buf, 3);
    }
}

/* ---- the converter ---- */

#define LLAMA3_SPLIT                                                                               \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_SPLIT                                                                                \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* How a byte-level vocabulary splits text before BPE, from tokenizer.ggml.pre. The names and
 * their regexes are llama.cpp's (llama-vocab.cpp: the pre name → LLAMA_VOCAB_PRE_TYPE_* table and
 * the regex list of each type); each is written as the HF pre_tokenizer that splits the same way:
 *   PRE_GPT2:   GPT-2's regex alone = ByteLevel(use_regex=true). A file without the key, or
 *               with "default", gets this too: it is what transformers builds for such a file
 *               (llama.cpp warns that the split is unknown and uses a fallback regex list).
 *   PRE_DIGITS: "\p{N}" isolated first, then GPT-2's regex (SmolLM, StarCoder, ...)
 *               = Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)], which is the
 *               pre_tokenizer of these models' own tokenizer.json.
 *   PRE_SPLIT:  one regex (Llama 3, Qwen2) = Sequence[Split(regex, Isolated), ByteLevel(use_regex=
 *               false)], as in their tokenizer.json and as transformers builds them from GGUF.
 * Any other name is rejected: its split is not known here, and guessing would give wrong ids. */
enum { PRE_GPT2, PRE_DIGITS, PRE_SPLIT };

typedef struct pre_kind {
    const char *name;
    int         kind;
    const char *regex;         /* PRE_SPLIT only */
    int         ignore_merges; /* a whole word in the vocabulary is one token (llama.cpp sets it for
                                  its LLAMA3 group; Llama 3's tokenizer.json has it too) */
} pre_kind;

static const pre_kind pre_kinds[] = {
    {"default", PRE_GPT2, NULL, 0},
    {"gpt-2", PRE_GPT2, NULL, 0},
    {"phi-2", PRE_GPT2, NULL, 0},
    {"mpt", PRE_GPT2, NULL, 0},
    {"olmo", PRE_GPT2, NULL, 0},
    {"smollm", PRE_DIGITS, NULL, 0},
    {"starcoder", PRE_DIGITS, NULL, 0},
    {"refact", PRE_DIGITS, NULL, 0},
    {"command-r", PRE_DIGITS, NULL, 0},
    {"codeshell", PRE_DIGITS, NULL, 0},
    {"exaone", PRE_DIGITS, NULL, 0},
    {"minerva-7b", PRE_DIGITS, NULL, 0},
    {"llama3", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"llama-v3", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"llama-bpe", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"falcon3", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"falcon-h1", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"pixtral", PRE_SPLIT, LLAMA3_SPLIT, 1},
    {"smaug-bpe", PRE_SPLIT, LLAMA3_SPLIT, 0},
    {"dbrx", PRE_SPLIT, LLAMA3_SPLIT, 0},
    {"qwen2", PRE_SPLIT, QWEN2_SPLIT, 0},
    {"deepseek-r1-qwen", PRE_SPLIT, QWEN2_SPLIT, 0},
    {"stablelm2", PRE_SPLIT, QWEN2_SPLIT, 0},
    {"megrez", PRE_SPLIT, QWEN2_SPLIT, 0},
};

/* The entry for pre (len n; NULL = the key is absent), or NULL when the name is unknown. */
static const pre_kind *pre_kind_for(const char *pre, size_t n) {
    if (!pre)
        return &pre_kinds[0];
    for (size_t i = 0; i < sizeof pre_kinds / sizeof *pre_kinds; i++)
        if (strlen(pre_kinds[i].name) == n && !memcmp(pre, pre_kinds[i].name, n))
            return &pre_kinds[i];
    return NULL;
}

static void write_byte_level_pre(sbuf *b, const pre_kind *k) {
    static const char bl[] = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":"
                             "true,\"use_regex\":";
    sb_str(b, "\"pre_tokenizer\":");
    if (k->kind == PRE_GPT2) {
        sb_str(b, bl);
        sb_str(b, "true},");
        return;
    }
    sb_str(b, "{\"type\":\"Sequence\",\"pretokenizers\":[");
    if (k->kind == PRE_DIGITS) {
        sb_str(b, "{\"type\":\"Digits\",\"individual_digits\":true},");
        sb_str(b, bl);
        sb_str(b, "true}]},");
        return;
    }
    sb_str(b, "{\"type\":\"Split\",\"pattern\":{\"Regex\":");
    sb_json(b, k->regex, strlen(k->regex));
    sb_str(b, "},\"behavior\":\"Isolated\",\"invert\":false},");
    sb_str(b, bl);
    sb_str(b, "false}]},");
}

typedef struct tok_ctx {
    const gguf_file *f;
    const char      *name;
    int64_t          n;
    tok_view        *tok; /* spelling as written in tokenizer.json */
    int32_t         *type;
    float           *score;
    tok_map          map;
    int              byte_level;
    int32_t          bos, eos, unk, pad;
    int              add_bos, add_eos;
} tok_ctx;

static int32_t special_id(const tok_ctx *c, const char *key) {
    int64_t id;
    if (gguf_get_int(c->f, key, &id) || id < 0 || id >= c->n)
        return -1;
    return (int32_t)id;
}

static int get_bool(const gguf_file *f, const char *key, int def) {
    int64_t v;
    return gguf_get_int(f, key, &v) ? def : v != 0;
}

static void sb_token(sbuf *b, const tok_ctx *c, int32_t id) {
    sb_json(b, c->tok[id].s, c->tok[id].n);
}

/* In a byte-level vocabulary every real token is spelled in the byte alphabet; a control token
 * that is not is a llama.cpp mislabel, and transformers leaves it out of the added tokens. */
static int respelled(const tok_ctx *c, int64_t i) {
    size_t      len;
    const char *s = gguf_get_arr_str(c->f, "tokenizer.ggml.tokens", i, &len);
    return len != c->tok[i].n || memcmp(s, c->tok[i].s, len) != 0;
}

/* Whether token i is an added token (control, unknown, the bos/eos/unk ids: special;
 * user-defined: not special), as transformers' add_gguf_special_tokens decides. */
static int is_added(const tok_ctx *c, int64_t i, int *special) {
    int t    = c->type[i];
    *special = t == TOK_CONTROL || t == TOK_UNKNOWN || i == c->bos || i == c->eos || i == c->unk;
    if (!*special && t != TOK_USER)
        return 0;
    if (c->byte_level && t == TOK_CONTROL && i != c->bos && i != c->eos && respelled(c, i))
        return 0;
    return 1;
}

static void write_added(sbuf *b, const tok_ctx *c) {
    sb_str(b, "\"added_tokens\":[");
    int first = 1;
    for (int64_t i = 0; i < c->n; i++) {
        int special;
        if (!is_added(c, i, &special))
            continue;
        sb_str(b, first ? "" : ",");
        first = 0;
        sb_fmt(b, "{\"id\":%lld,\"content\":", (long long)i);
        sb_token(b, c, (int32_t)i);
        sb_fmt(b,
               ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,"
               "\"special\":%s}",
               special ? "true" : "false");
    }
    sb_str(b, "],");
}

static void sb_special(sbuf *b, const tok_ctx *c, int32_t id, int type_id) {
    sb_str(b, "{\"SpecialToken\":{\"id\":");
    sb_token(b, c, id);
    sb_fmt(b, ",\"type_id\":%d}}", type_id);
}

/* As transformers' update_post_processor: "[bos:0] $A:0 [eos:0]" and for pairs
 * "[bos:0] $A:0 [eos:0] [bos:1] $B:1 [eos:1]". */
static void write_post_processor(sbuf *b, const tok_ctx *c) {
    int bos = c->add_bos && c->bos >= 0, eos = c->add_eos && c->eos >= 0;
    if (!bos && !eos) {
        sb_str(b, "\"post_processor\":null,");
        return;
    }
    sb_str(b, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[");
    for (int pair = 0; pair < 2; pair++) {
        if (pair)
            sb_str(b, "],\"pair\":[");
        for (int seq = 0; seq <= pair; seq++) {
            if (seq)
                sb_str(b, ",");
            if (bos) {
                sb_special(b, c, c->bos, seq);
                sb_str(b, ",");
            }
            sb_fmt(b, "{\"Sequence\":{\"id\":\"%s\",\"type_id\":%d}}", seq ? "B" : "A", seq);
            if (eos) {
                sb_str(b, ",");
                sb_special(b, c, c->eos, seq);
            }
        }
    }
    sb_str(b, "],\"special_tokens\":{");
    int32_t ids[2] = {bos ? c->bos : -1, eos ? c->eos : -1};
    if (ids[0] == ids[1])
        ids[1] = -1;
    int first = 1;
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0)
            continue;
        sb_str(b, first ? "" : ",");
        first = 0;
        sb_token(b, c, ids[k]);
        sb_str(b, ":{\"id\":");
        sb_token(b, c, ids[k]);
        sb_fmt(b, ",\"ids\":[%d],\"tokens\":[", ids[k]);
        sb_token(b, c, ids[k]);
        sb_str(b, "]}");
    }
    sb_str(b, "}},");
}

/* A BPE merge "l r" needs l, r and the merged "lr" in the vocabulary (tokenizers refuses the file
 * otherwise, and so does our loader): checked here so convert never writes such a file.
 * *joined is a scratch buffer (grown as needed; caller frees). */
static int check_merge(const tok_ctx *c, int64_t i, const char *l, size_t ln, const char *r,
                       size_t rn, char **joined, size_t *jcap, assay_error *err) {
    const char *which = map_get(&c->map, l, ln) < 0 ? l : map_get(&c->map, r, rn) < 0 ? r : NULL;
    size_t      wn    = which == l ? ln : rn;
    if (!which) {
        if (ln + rn > *jcap) {
            char *nb = realloc(*joined, ln + rn);
            if (!nb)
                return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", c->name);
            *joined = nb;
            *jcap   = ln + rn;
        }
        memcpy(*joined, l, ln);
        memcpy(*joined + ln, r, rn);
        if (map_get(&c->map, *joined, ln + rn) >= 0)
            return ASSAY_OK;
        which = *joined;
        wn    = ln + rn;
    }
    return assay_fail(err, ASSAY_EFORMAT,
                      "%s: tokenizer.ggml.merges[%lld] names '%.*s', which is not in "
                      "tokenizer.ggml.tokens",
                      c->name, (long long)i, (int)(wn > 64 ? 64 : wn), which);
}

static int write_merges(sbuf *b, tok_ctx *c, assay_error *err) {
    int     n_file_merges = 0;
    int     et;
    int64_t nm = gguf_get_arr_n(c->f, "tokenizer.ggml.merges", &et);
    if (nm >= 0) {
        if (et != GGUF_T_STRING)
            return assay_fail(err, ASSAY_EFORMAT, "%s: tokenizer.ggml.merges is not a string array",
                              c->name);
        n_file_merges = 1;
    }
    sb_str(b, "\"merges\":[");
    if (n_file_merges) {
        char  *joined = NULL;
        size_t jcap   = 0;
        int    rc;
        for (int64_t i = 0; i < nm; i++) {
            size_t      len;
            const char *s  = gguf_get_arr_str(c->f, "tokenizer.ggml.merges", i, &len);
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp - s) - 1) || !utf8_valid(s, len)) {
                free(joined);
                return assay_fail(err, ASSAY_EUNSUPPORTED,
                                  "%s: tokenizer.ggml.merges[%lld] is not two tokens separated by "
                                  "one space in valid UTF-8",
                                  c->name, (long long)i);
            }
            if ((rc = check_merge(c, i, s, (size_t)(sp - s), sp + 1, len - (size_t)(sp - s) - 1,
                                  &joined, &jcap, err))) {
                free(joined);
                return rc;
            }
            sb_str(b, i ? ",[" : "[");
            sb_json(b, s, (size_t)(sp - s));
            sb_str(b, ",");
            sb_json(b, sp + 1, len - (size_t)(sp - s) - 1);
            sb_str(b, "]");
        }
        free(joined);
    } else {
        merge *m;
        size_t n;
        if (derive_merges(c->tok, c->score, c->n, &c->map, &m, &n))
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory deriving merges", c->name);
        for (size_t i = 0; i < n; i++) {
            sb_str(b, i ? ",[" : "[");
            sb_token(b, c, m[i].l);
            sb_str(b, ",");
            sb_token(b, c, m[i].r);
            sb_str(b, "]");
        }
        free(m);
    }
    sb_str(b, "]");
    return 0;
}

static int load_tokens(tok_ctx *c, sbuf *respelled, assay_error *err) {
    int et;
    c->n = gguf_get_arr_n(c->f, "tokenizer.ggml.tokens", &et);
    if (c->n <= 0 || et != GGUF_T_STRING)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: tokenizer.ggml.tokens (a non-empty string array) is missing",
                          c->name);
    if (c->n > INT32_MAX / 2)
        return assay_fail(err, ASSAY_EFORMAT, "%s: %lld tokens is too many", c->name,
                          (long long)c->n);
    c->tok   = calloc((size_t)c->n, sizeof *c->tok);
    c->type  = calloc((size_t)c->n, sizeof *c->type);
    c->score = calloc((size_t)c->n, sizeof *c->score);
    if (!c->tok || !c->type || !c->score || map_init(&c->map, c->tok, c->n))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", c->name);
    int     st_t, sc_t;
    int64_t n_types  = gguf_get_arr_n(c->f, "tokenizer.ggml.token_type", &st_t);
    int64_t n_scores = gguf_get_arr_n(c->f, "tokenizer.ggml.scores", &sc_t);
    if (n_types >= 0 && n_types != c->n)
        return assay_fail(err, ASSAY_EFORMAT, "%s: %lld token types for %lld tokens", c->name,
                          (long long)n_types, (long long)c->n);
    if (n_scores >= 0 && n_scores != c->n)
        return assay_fail(err, ASSAY_EFORMAT, "%s: %lld token scores for %lld tokens", c->name,
                          (long long)n_scores, (long long)c->n);
    /* Byte-level respelling writes into one buffer; record offsets, fix pointers afterwards. */
    size_t *off = NULL;
    if (c->byte_level && !(off = calloc((size_t)c->n, sizeof *off)))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", c->name);
    for (int64_t i = 0; i < c->n; i++) {
        size_t      len;
        const char *s = gguf_get_arr_str(c->f, "tokenizer.ggml.tokens", i, &len);
        if (!utf8_valid(s, len) || memchr(s, 0, len) || len == 0) {
            free(off);
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: token %lld is empty, holds a NUL byte or is not valid UTF-8; "
                              "tokenizer.json cannot express it",
                              c->name, (long long)i);
        }
        c->tok[i]  = (tok_view){s, len};
        int64_t t  = TOK_NORMAL;
        double  sc = 0;
        if (n_types >= 0 && gguf_get_arr_int(c->f, "tokenizer.ggml.token_type", i, &t))
            t = TOK_NORMAL;
        if (n_scores >= 0)
            gguf_get_arr_float(c->f, "tokenizer.ggml.scores", i, &sc);
        c->type[i]  = (int32_t)t;
        c->score[i] = (float)sc;
        if (c->byte_level) {
            int      all_in = 1;
            uint32_t cp;
            for (size_t k = 0; k < len;) {
                k += utf8_len((const unsigned char *)s + k, len - k, &cp);
                all_in &= cp_in_byte_alphabet(cp);
            }
            off[i] = respelled->n;
            if (all_in)
                sb_put(respelled, s, len);
            else
                for (size_t k = 0; k < len; k++)
                    sb_cp(respelled, byte_to_cp((unsigned char)s[k]));
            c->tok[i].n = respelled->n - off[i];
        }
    }
    if (respelled->oom) {
        free(off);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", c->name);
    }
    for (int64_t i = 0; c->byte_level && i < c->n; i++)
        c->tok[i].s = respelled->p + off[i];
    free(off);
    for (int64_t i = 0; i < c->n; i++) {
        int32_t dup = map_put(&c->map, (int32_t)i);
        if (dup >= 0)
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: tokens %d and %lld are both '%.*s'; a tokenizer.json vocabulary "
                              "cannot hold the same token twice",
                              c->name, dup, (long long)i,
                              (int)(c->tok[i].n > 64 ? 64 : c->tok[i].n), c->tok[i].s);
    }
    return 0;
}

static char *config_json(const tok_ctx *c, int max_len, int sentencepiece) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddBoolToObject(o, "add_bos_token", c->add_bos);
    cJSON_AddBoolToObject(o, "add_eos_token", c->add_eos);
    cJSON *dec = cJSON_AddObjectToObject(o, "added_tokens_decoder");
    for (int64_t i = 0; dec && i < c->n; i++) {
        int special;
        if (!is_added(c, i, &special))
            continue;
        char key[24], *content = strndup(c->tok[i].s, c->tok[i].n);
        snprintf(key, sizeof key, "%lld", (long long)i);
        cJSON *e = cJSON_AddObjectToObject(dec, key);
        if (!e || !content) {
            free(content);
            break;
        }
        cJSON_AddStringToObject(e, "content", content);
        cJSON_AddBoolToObject(e, "lstrip", 0);
        cJSON_AddBoolToObject(e, "normalized", 0);
        cJSON_AddBoolToObject(e, "rstrip", 0);
        cJSON_AddBoolToObject(e, "single_word", 0);
        cJSON_AddBoolToObject(e, "special", special);
        free(content);
    }
    const struct {
        const char *key;
        int32_t     id;
    } sp[] = {
        {"bos_token", c->bos}, {"eos_token", c->eos}, {"unk_token", c->unk}, {"pad_token", c->pad}};
    for (size_t k = 0; k < sizeof sp / sizeof *sp; k++) {
        if (sp[k].id < 0) {
            cJSON_AddNullToObject(o, sp[k].key);
            continue;
        }
        char *s = strndup(c->tok[sp[k].id].s, c->tok[sp[k].id].n);
        if (s)
            cJSON_AddStringToObject(o, sp[k].key, s);
        free(s);
    }
    cJSON_AddBoolToObject(o, "clean_up_tokenization_spaces", 0);
    if (sentencepiece)
        cJSON_AddBoolToObject(o, "legacy", 1);
    cJSON_AddNumberToObject(o, "model_max_length", max_len);
    /* A named class (LlamaTokenizer, GPT2Tokenizer) makes transformers 5 rebuild its own
     * normalizer and pre-tokenizer around the vocabulary, dropping tokenizer.json's (a digit split,
     * leading-space handling): AutoTokenizer then disagrees with tokenizer.json and with assay.
     * PreTrainedTokenizerFast runs tokenizer.json as written (tools/check_converted_tokenizer.py).
     */
    cJSON_AddStringToObject(o, "tokenizer_class", "PreTrainedTokenizerFast");
    size_t      tlen;
    const char *tmpl = gguf_get_str(c->f, "tokenizer.chat_template", &tlen);
    if (tmpl) {
        char *s = strndup(tmpl, tlen);
        if (s)
            cJSON_AddStringToObject(o, "chat_template", s);
        free(s);
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

int gguf_tokenizer_to_json(const gguf_file *f, const char *name, int max_len, char **tokenizer_json,
                           char **tokenizer_config_json, assay_error *err) {
    *tokenizer_json = *tokenizer_config_json = NULL;
    tok_ctx     c                            = {.f = f, .name = name};
    sbuf        b = {0}, respelled = {0};
    int         rc;
    size_t      mlen;
    const char *model         = gguf_get_str(f, "tokenizer.ggml.model", &mlen);
    int         sentencepiece = model && mlen == 5 && !memcmp(model, "llama", 5);
    c.byte_level              = model && mlen == 4 && !memcmp(model, "gpt2", 4);
    if (!sentencepiece && !c.byte_level) {
        rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                        "%s: tokenizer.ggml.model is '%.*s'; supported: llama (SentencePiece "
                        "BPE), gpt2 (byte-level BPE)",
                        name, model ? (int)(mlen > 32 ? 32 : mlen) : 7, model ? model : "missing");
        goto fail;
    }
    const pre_kind *pre = NULL;
    if (c.byte_level) {
        size_t      plen;
        const char *pname = gguf_get_str(f, "tokenizer.ggml.pre", &plen);
        if (!(pre = pre_kind_for(pname, plen))) {
            rc =
                assay_fail(err, ASSAY_EUNSUPPORTED,
                           "%s: tokenizer.ggml.pre is '%.*s', a pre-tokenizer assay does not know; "
                           "known: default, gpt-2, smollm, starcoder, llama-bpe, qwen2 and their "
                           "aliases (a wrong guess would give wrong token ids)",
                           name, (int)(plen > 64 ? 64 : plen), pname);
            goto fail;
        }
    }
    if ((rc = load_tokens(&c, &respelled, err)))
        goto fail;
    c.bos     = special_id(&c, "tokenizer.ggml.bos_token_id");
    c.eos     = special_id(&c, "tokenizer.ggml.eos_token_id");
    c.unk     = special_id(&c, "tokenizer.ggml.unknown_token_id");
    c.pad     = special_id(&c, "tokenizer.ggml.padding_token_id");
    c.add_bos = get_bool(f, "tokenizer.ggml.add_bos_token", sentencepiece);
    c.add_eos = get_bool(f, "tokenizer.ggml.add_eos_token", 0);
    if (sentencepiece && c.unk < 0)
        c.unk = map_get(&c.map, "<unk>", 5);
    int prefix = get_bool(f, "tokenizer.ggml.add_space_prefix", 1);

    sb_str(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,");
    write_added(&b, &c);
    if (sentencepiece) {
        sb_str(&b, "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[");
        if (prefix)
            sb_str(&b, "{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},");
        sb_str(
            &b,
            "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
            "\"pre_tokenizer\":null,");
    } else {
        sb_str(&b, "\"normalizer\":null,");
        write_byte_level_pre(&b, pre);
    }
    write_post_processor(&b, &c);
    if (sentencepiece) {
        sb_str(&b, "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\","
                   "\"pattern\":{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},{\"type\":"
                   "\"ByteFallback\"},{\"type\":\"Fuse\"}");
        sb_str(&b, prefix ? ",{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
                          : "]},");
        sb_str(&b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":");
        if (c.unk >= 0)
            sb_token(&b, &c, c.unk);
        else
            sb_str(&b, "null");
        sb_str(&b, ",\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,"
                   "\"fuse_unk\":true,\"byte_fallback\":true,\"ignore_merges\":false,");
    } else {
        sb_str(&b, "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
                   "\"trim_offsets\":true,\"use_regex\":true},");
        sb_str(&b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
                   "\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":\"\","
                   "\"fuse_unk\":false,\"byte_fallback\":false,");
        sb_str(&b, pre->ignore_merges ? "\"ignore_merges\":true," : "\"ignore_merges\":false,");
    }
    sb_str(&b, "\"vocab\":{");
    for (int64_t i = 0; i < c.n; i++) {
        if (i)
            sb_str(&b, ",");
        sb_token(&b, &c, (int32_t)i);
        sb_fmt(&b, ":%lld", (long long)i);
    }
    sb_str(&b, "},");
    if ((rc = write_merges(&b, &c, err)))
        goto fail;
    sb_str(&b, "}}\n");
    if (b.oom) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory writing tokenizer.json", name);
        goto fail;
    }
    *tokenizer_config_json = config_json(&c, max_len, sentencepiece);
    if (!*tokenizer_config_json) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory writing tokenizer_config.json", name);
        goto fail;
    }
    *tokenizer_json = b.p;
    b.p             = NULL;
    rc              = ASSAY_OK;
fail:
    free(b.p);
    free(respelled.p);
    free(c.tok);
    free(c.type);
    free(c.score);
    free(c.map.slot);
    return rc;
}

int gguf_tokenizer_texts(const gguf_file *f, const char *name, char **tokenizer_json,
                         char **tokenizer_config_json, assay_error *err) {
    model_config cfg;
    assay_error  cerr;
    /* a file whose metadata is not a llama config still has a tokenizer worth reading */
    int max_len = gguf_to_config(f, &cfg, &cerr) == 0 ? cfg.max_pos : 0;
    return gguf_tokenizer_to_json(f, name, max_len, tokenizer_json, tokenizer_config_json, err);
}

tokenizer *gguf_tokenizer_load(const gguf_file *f, const char *name, assay_error *err) {
    char *tj = NULL, *tc = NULL;
    if (gguf_tokenizer_texts(f, name, &tj, &tc, err))
        return NULL;
    tokenizer *t = tok_load_buffers(tj, strlen(tj), tc, strlen(tc), name, err);
    free(tj);
    free(tc);
    return t;
}

tokenizer *tok_load_gguf(const char *path, assay_error *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f)
        return NULL;
    tokenizer *t = gguf_tokenizer_load(f, path, err);
    gguf_close(f);
    return t;
}
