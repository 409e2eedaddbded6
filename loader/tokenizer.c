/* loader/tokenizer.c — loads tokenizer.json (and tokenizer_config.json, or GPT-2's encoder.json +
 * vocab.bpe) into the structures of loader/tok_internal.h, drives encoding (added tokens ->
 * normalizer -> pre-tokenizer -> BPE -> post-processor, as HF's Tokenizer::encode does) and
 * decoding, and implements the small accessors of loader/tokenizer.h. */
#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/util.h"
#include "loader/config.h"
#include "loader/gguf_tokenizer.h"
#include "loader/modeldir.h"
#include "loader/tok_internal.h"

#define TOK_MAX_ID                                                                                 \
    (1 << 24) /* ids above this are treated as corrupt (largest real vocab: 262144) */

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char WS_REGEX[] = "\\w+|[^\\w\\s]+";
/* cl100k (Llama 3) and Qwen2 pre-tokenizer regexes, as tokenizer.json writes them */
static const char CL100K_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok_regex_known(const char *pat, size_t len) {
    static const struct {
        const char *re;
        int         known;
    } k[] = {{GPT2_REGEX, TOK_RE_GPT2}, {CL100K_REGEX, TOK_RE_CL100K}, {QWEN2_REGEX, TOK_RE_QWEN2}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strlen(k[i].re) == len && !memcmp(k[i].re, pat, len))
            return k[i].known;
    return TOK_RE_OTHER;
}

typedef struct lctx {
    const char  *name; /* file name used in messages */
    assay_error *err;
} lctx;

/* ---- freeing ------------------------------------------------------------------------------- */

static void pattern_free(tok_pattern *p) {
    free(p->str);
    free(p->src);
    if (p->re)
        pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

static void norm_free(tok_norm *n) {
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        norm_free(&n->kids[i]);
    free(n->kids);
    free(n->str);
    pattern_free(&n->pat);
}

static void pre_free(tok_pre *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->nkids; i++)
        pre_free(&p->kids[i]);
    free(p->kids);
    pattern_free(&p->pat);
}

static void dec_free(tok_dec *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->nkids; i++)
        dec_free(&d->kids[i]);
    free(d->kids);
    free(d->str);
    pattern_free(&d->pat);
}

static void trie_free(tok_trie *tr) {
    tok_pmap_free(&tr->edges);
    free(tr->term);
    memset(tr, 0, sizeof *tr);
}

void tok_free(tokenizer *t) {
    if (!t)
        return;
    free(t->path);
    tok_smap_free(&t->vocab);
    tok_smap_free(&t->raw);
    tok_pmap_free(&t->merges);
    free(t->cont_prefix);
    free(t->eow_suffix);
    free(t->piece);
    free(t->piece_len);
    free(t->is_special);
    free(t->piece_arena);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].piece);
    }
    free(t->added);
    tok_smap_free(&t->added_map);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    norm_free(t->norm);
    free(t->norm);
    pre_free(t->pre);
    free(t->pre);
    dec_free(t->dec);
    free(t->dec);
    free(t->post_pre);
    free(t->post_suf);
    tok_cache_free(t->cache);
    free(t);
}

/* ---- JSON helpers --------------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    return dflt;
}

static int jint(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(v) && v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX)
        return (int)v->valuedouble;
    return dflt;
}

static char *xstrndup(const char *s, size_t n) {
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = 0;
    }
    return r;
}

static int nomem(lctx *c) { return assay_fail(c->err, ASSAY_ENOMEM, "%s: out of memory", c->name); }

/* {"String": "..."} or {"Regex": "..."} */
static int parse_pattern(lctx *c, const cJSON *o, const char *where, tok_pattern *p) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char  *s;
    if (cJSON_IsObject(pat) && (s = jstr(pat, "String"))) {
        p->is_regex = 0;
        p->len      = strlen(s);
        p->str      = xstrndup(s, p->len);
        return p->str ? 0 : nomem(c);
    }
    if (cJSON_IsObject(pat) && (s = jstr(pat, "Regex"))) {
        char msg[300];
        p->is_regex = 1;
        p->len      = strlen(s);
        p->known    = tok_regex_known(s, p->len);
        p->re       = tok_regex_compile(s, p->len, msg, sizeof msg);
        if (!p->re)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: %s regex '%s' rejected by PCRE2: %s",
                              c->name, where, s, msg);
        p->src = xstrndup(s, p->len);
        return p->src ? 0 : nomem(c);
    }
    return assay_fail(c->err, ASSAY_EFORMAT,
                      "%s: %s needs a \"pattern\" object with a \"String\" or \"Regex\"", c->name,
                      where);
}

static int utf8_one_char(const char *s, char *out, size_t *len) {
    size_t  adv;
    int32_t ch = tok_utf8_decode(s, strlen(s), &adv);
    if (ch < 0 || adv > 7)
        return -1;
    memcpy(out, s, adv);
    out[adv] = 0;
    *len     = adv;
    return 0;
}

static int prepend_scheme_of(const cJSON *o) {
    const char *ps = jstr(o, "prepend_scheme");
    if (ps) {
        if (!strcmp(ps, "first"))
            return PREPEND_FIRST;
        if (!strcmp(ps, "never"))
            return PREPEND_NEVER;
        return PREPEND_ALWAYS;
    }
    return jbool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
}

/* ---- normalizers ---------------------------------------------------------------------------- */

static int parse_norm(lctx *c, const cJSON *o, tok_norm *n) {
    memset(n, 0, sizeof *n);
    const char *ty = jstr(o, "type");
    if (!ty)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: normalizer without a \"type\"", c->name);
    if (!strcmp(ty, "NFC"))
        n->type = NORM_NFC;
    else if (!strcmp(ty, "NFD"))
        n->type = NORM_NFD;
    else if (!strcmp(ty, "NFKC"))
        n->type = NORM_NFKC;
    else if (!strcmp(ty, "NFKD"))
        n->type = NORM_NFKD;
    else if (!strcmp(ty, "Lowercase"))
        n->type = NORM_LOWER;
    else if (!strcmp(ty, "StripAccents"))
        n->type = NORM_STRIP_ACCENTS;
    else if (!strcmp(ty, "Strip")) {
        n->type  = NORM_STRIP;
        n->left  = jbool(o, "strip_left", 1);
        n->right = jbool(o, "strip_right", 1);
    } else if (!strcmp(ty, "Prepend")) {
        n->type       = NORM_PREPEND;
        const char *s = jstr(o, "prepend");
        if (!s)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: Prepend normalizer needs \"prepend\"",
                              c->name);
        n->len = strlen(s);
        if (!(n->str = xstrndup(s, n->len)))
            return nomem(c);
    } else if (!strcmp(ty, "Replace")) {
        n->type       = NORM_REPLACE;
        const char *s = jstr(o, "content");
        if (!s)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: Replace normalizer needs \"content\"",
                              c->name);
        n->len = strlen(s);
        if (!(n->str = xstrndup(s, n->len)))
            return nomem(c);
        return parse_pattern(c, o, "Replace normalizer", &n->pat);
    } else if (!strcmp(ty, "Sequence")) {
        n->type          = NORM_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(arr))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Sequence normalizer needs \"normalizers\"", c->name);
        size_t k = (size_t)cJSON_GetArraySize(arr);
        n->kids  = calloc(k ? k : 1, sizeof *n->kids);
        if (!n->kids)
            return nomem(c);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            if (parse_norm(c, e, &n->kids[n->nkids++]))
                return -1;
        }
    } else if (!strcmp(ty, "BertNormalizer") || !strcmp(ty, "Precompiled") || !strcmp(ty, "Nmt") ||
               !strcmp(ty, "ByteLevel") || !strcmp(ty, "StripAccents")) {
        return assay_fail(c->err, ASSAY_EUNSUPPORTED, "%s: normalizer type '%s' is not supported",
                          c->name, ty);
    } else {
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown normalizer type '%s'", c->name, ty);
    }
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------- */

static int parse_behavior(lctx *c, const cJSON *o, int dflt, int *out) {
    const char *b = jstr(o, "behavior");
    if (!b) {
        *out = dflt;
        return 0;
    }
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) {
            *out = i;
            return 0;
        }
    return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown split behavior '%s'", c->name, b);
}

static int compile_builtin(lctx *c, const char *pat, tok_pattern *p) {
    char msg[300];
    p->is_regex = 1;
    p->known    = tok_regex_known(pat, strlen(pat));
    p->re       = tok_regex_compile(pat, strlen(pat), msg, sizeof msg);
    if (!p->re)
        return assay_fail(c->err, ASSAY_EINTERNAL, "%s: built-in regex failed: %s", c->name, msg);
    p->src = xstrndup(pat, strlen(pat));
    return p->src ? 0 : nomem(c);
}

static int parse_pre(lctx *c, const cJSON *o, tok_pre *p) {
    memset(p, 0, sizeof *p);
    const char *ty = jstr(o, "type");
    if (!ty)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: pre_tokenizer without a \"type\"", c->name);
    if (!strcmp(ty, "Split")) {
        p->type   = PRE_SPLIT;
        p->invert = jbool(o, "invert", 0);
        if (parse_behavior(c, o, BEH_REMOVED, &p->behavior))
            return -1;
        return parse_pattern(c, o, "Split pre_tokenizer", &p->pat);
    }
    if (!strcmp(ty, "ByteLevel")) {
        p->type             = PRE_BYTELEVEL;
        p->add_prefix_space = jbool(o, "add_prefix_space", 1);
        p->use_regex        = jbool(o, "use_regex", 1);
        return p->use_regex ? compile_builtin(c, GPT2_REGEX, &p->pat) : 0;
    }
    if (!strcmp(ty, "Metaspace")) {
        p->type       = PRE_METASPACE;
        const char *r = jstr(o, "replacement");
        if (!r || utf8_one_char(r, p->repl, &p->repl_len))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Metaspace needs a one-character \"replacement\"", c->name);
        p->prepend_scheme = prepend_scheme_of(o);
        p->split          = jbool(o, "split", 1);
        return 0;
    }
    if (!strcmp(ty, "Digits")) {
        p->type              = PRE_DIGITS;
        p->individual_digits = jbool(o, "individual_digits", 0);
        return 0;
    }
    if (!strcmp(ty, "Punctuation")) {
        p->type = PRE_PUNCT;
        return parse_behavior(c, o, BEH_ISOLATED, &p->behavior);
    }
    if (!strcmp(ty, "Whitespace")) {
        p->type = PRE_WS;
        return compile_builtin(c, WS_REGEX, &p->pat);
    }
    if (!strcmp(ty, "WhitespaceSplit")) {
        p->type = PRE_WSSPLIT;
        return 0;
    }
    if (!strcmp(ty, "BertPreTokenizer")) {
        p->type = PRE_BERT;
        return 0;
    }
    if (!strcmp(ty, "CharDelimiterSplit")) {
        p->type       = PRE_CHARDELIM;
        const char *d = jstr(o, "delimiter");
        char        one[8];
        size_t      l;
        if (!d || utf8_one_char(d, one, &l))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: CharDelimiterSplit needs a one-character \"delimiter\"",
                              c->name);
        p->pat.str = xstrndup(one, l);
        p->pat.len = l;
        return p->pat.str ? 0 : nomem(c);
    }
    if (!strcmp(ty, "Sequence")) {
        p->type          = PRE_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Sequence pre_tokenizer needs \"pretokenizers\"", c->name);
        size_t k = (size_t)cJSON_GetArraySize(arr);
        p->kids  = calloc(k ? k : 1, sizeof *p->kids);
        if (!p->kids)
            return nomem(c);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            if (parse_pre(c, e, &p->kids[p->nkids++]))
                return -1;
        }
        return 0;
    }
    if (!strcmp(ty, "UnicodeScripts"))
        return assay_fail(c->err, ASSAY_EUNSUPPORTED,
                          "%s: pre_tokenizer type '%s' is not supported", c->name, ty);
    return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown pre_tokenizer type '%s'", c->name, ty);
}

/* The model sees raw bytes when the pre-tokenizer ends with ByteLevel; ByteLevel anywhere else
 * would hand byte-mapped text to later pre-tokenizers, which we do not model. */
static int check_bytelevel(lctx *c, const tok_pre *p, int is_last, int *found) {
    if (p->type == PRE_BYTELEVEL) {
        if (!is_last)
            return assay_fail(
                c->err, ASSAY_EUNSUPPORTED,
                "%s: a ByteLevel pre_tokenizer before other pre_tokenizers is not supported",
                c->name);
        *found = 1;
    }
    if (p->type == PRE_SEQ)
        for (size_t i = 0; i < p->nkids; i++)
            if (check_bytelevel(c, &p->kids[i], is_last && i + 1 == p->nkids, found))
                return -1;
    return 0;
}

/* ---- decoders ------------------------------------------------------------------------------- */

static int parse_dec(lctx *c, const cJSON *o, tok_dec *d) {
    memset(d, 0, sizeof *d);
    const char *ty = jstr(o, "type");
    if (!ty)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: decoder without a \"type\"", c->name);
    if (!strcmp(ty, "ByteLevel"))
        d->type = DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback"))
        d->type = DEC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse"))
        d->type = DEC_FUSE;
    else if (!strcmp(ty, "Replace")) {
        d->type       = DEC_REPLACE;
        const char *s = jstr(o, "content");
        if (!s)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: Replace decoder needs \"content\"",
                              c->name);
        d->len = strlen(s);
        if (!(d->str = xstrndup(s, d->len)))
            return nomem(c);
        return parse_pattern(c, o, "Replace decoder", &d->pat);
    } else if (!strcmp(ty, "Strip")) {
        d->type       = DEC_STRIP;
        const char *s = jstr(o, "content");
        char        one[8];
        size_t      l;
        if (!s || utf8_one_char(s, one, &l))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Strip decoder needs a one-character \"content\"", c->name);
        d->str   = xstrndup(one, l);
        d->len   = l;
        d->start = jint(o, "start", 0);
        d->stop  = jint(o, "stop", 0);
        if (!d->str)
            return nomem(c);
    } else if (!strcmp(ty, "Metaspace")) {
        d->type       = DEC_METASPACE;
        const char *r = jstr(o, "replacement");
        if (!r || utf8_one_char(r, d->repl, &d->repl_len))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Metaspace decoder needs a one-character \"replacement\"",
                              c->name);
        d->prepend_scheme = prepend_scheme_of(o);
    } else if (!strcmp(ty, "BPEDecoder")) {
        d->type       = DEC_BPE;
        const char *s = jstr(o, "suffix");
        if (!s)
            s = "</w>";
        d->len = strlen(s);
        if (!(d->str = xstrndup(s, d->len)))
            return nomem(c);
    } else if (!strcmp(ty, "WordPiece")) {
        d->type       = DEC_WORDPIECE;
        const char *s = jstr(o, "prefix");
        if (!s)
            s = "##";
        d->len     = strlen(s);
        d->cleanup = jbool(o, "cleanup", 1);
        if (!(d->str = xstrndup(s, d->len)))
            return nomem(c);
    } else if (!strcmp(ty, "Sequence")) {
        d->type          = DEC_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(arr))
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: Sequence decoder needs \"decoders\"",
                              c->name);
        size_t k = (size_t)cJSON_GetArraySize(arr);
        d->kids  = calloc(k ? k : 1, sizeof *d->kids);
        if (!d->kids)
            return nomem(c);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            if (parse_dec(c, e, &d->kids[d->nkids++]))
                return -1;
        }
    } else if (!strcmp(ty, "CTC")) {
        return assay_fail(c->err, ASSAY_EUNSUPPORTED, "%s: decoder type '%s' is not supported",
                          c->name, ty);
    } else {
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown decoder type '%s'", c->name, ty);
    }
    return 0;
}

/* ---- post-processors ------------------------------------------------------------------------ */

static int push_ids(int32_t **v, size_t *n, const int32_t *ids, size_t k, int front) {
    int32_t *nv = realloc(*v, (*n + k + 1) * sizeof *nv);
    if (!nv)
        return -1;
    if (k == 0) { /* ids may be NULL then: memcpy from NULL is undefined even for 0 bytes */
        *v = nv;
        return 0;
    }
    if (front) {
        memmove(nv + k, nv, *n * sizeof *nv);
        memcpy(nv, ids, k * sizeof *nv);
    } else
        memcpy(nv + *n, ids, k * sizeof *nv);
    *v = nv;
    *n += k;
    return 0;
}

static int parse_post(lctx *c, tokenizer *t, const cJSON *o) {
    const char *ty = jstr(o, "type");
    if (!ty)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: post_processor without a \"type\"", c->name);
    if (!strcmp(ty, "ByteLevel")) { /* only adjusts offsets */
        t->post_trim        = jbool(o, "trim_offsets", 1);
        t->post_trim_prefix = jbool(o, "add_prefix_space", 1);
        return 0;
    }
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(arr))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: Sequence post_processor needs \"processors\"", c->name);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            if (parse_post(c, t, e))
                return -1;
        }
        return 0;
    }
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(o, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(o, "sep");
        const cJSON *ci = cJSON_GetArrayItem(cls, 1), *si = cJSON_GetArrayItem(sep, 1);
        if (!cJSON_IsNumber(ci) || !cJSON_IsNumber(si) || ci->valuedouble < 0 ||
            ci->valuedouble >= TOK_MAX_ID || si->valuedouble < 0 || si->valuedouble >= TOK_MAX_ID)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: %s needs \"cls\" and \"sep\" as [token, id]", c->name, ty);
        int32_t a = (int32_t)ci->valuedouble, b = (int32_t)si->valuedouble;
        t->has_post = 1;
        if (push_ids(&t->post_pre, &t->n_post_pre, &a, 1, 1) ||
            push_ids(&t->post_suf, &t->n_post_suf, &b, 1, 0))
            return nomem(c);
        return 0;
    }
    if (!strcmp(ty, "TemplateProcessing")) {
        const cJSON *single   = cJSON_GetObjectItemCaseSensitive(o, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
        if (!cJSON_IsArray(single))
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: TemplateProcessing needs a \"single\" list", c->name);
        int32_t     *pre = NULL, *suf = NULL;
        size_t       npre = 0, nsuf = 0;
        int          seen_a = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, single) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
                seen_a = 1;
                continue;
            }
            const char  *name = st ? jstr(st, "id") : NULL;
            const cJSON *sp   = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
            const cJSON *ids  = sp ? cJSON_GetObjectItemCaseSensitive(sp, "ids") : NULL;
            if (!cJSON_IsArray(ids)) {
                free(pre);
                free(suf);
                return assay_fail(c->err, ASSAY_EFORMAT,
                                  "%s: TemplateProcessing names special token '%s' missing from "
                                  "\"special_tokens\"",
                                  c->name, name ? name : "?");
            }
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= TOK_MAX_ID) {
                    free(pre);
                    free(suf);
                    return assay_fail(c->err, ASSAY_EFORMAT, "%s: special token '%s' has a bad id",
                                      c->name, name);
                }
                int32_t id = (int32_t)x->valuedouble;
                if (push_ids(seen_a ? &suf : &pre, seen_a ? &nsuf : &npre, &id, 1, 0)) {
                    free(pre);
                    free(suf);
                    return nomem(c);
                }
            }
        }
        t->has_post = 1;
        /* applied after earlier processors: wraps their output */
        int rc = push_ids(&t->post_pre, &t->n_post_pre, pre, npre, 1) ||
                 push_ids(&t->post_suf, &t->n_post_suf, suf, nsuf, 0);
        free(pre);
        free(suf);
        return rc ? nomem(c) : 0;
    }
    return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown post_processor type '%s'", c->name, ty);
}

/* ---- model ---------------------------------------------------------------------------------- */

static int set_prefix(lctx *c, const cJSON *m, const char *key, char **out, size_t *len) {
    const char *s = jstr(m, key);
    if (!s || !*s)
        return 0;
    *len = strlen(s);
    if (*len > 40)
        return assay_fail(c->err, ASSAY_EUNSUPPORTED, "%s: model %s longer than 40 bytes", c->name,
                          key);
    *out = xstrndup(s, *len);
    return *out ? 0 : nomem(c);
}

static int parse_model(lctx *c, tokenizer *t, const cJSON *m, int32_t *max_id) {
    const char  *ty     = jstr(m, "type");
    const cJSON *vocab  = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!ty && cJSON_IsObject(vocab) && merges)
        ty = "BPE";
    if (!ty)
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: model without a \"type\"", c->name);
    if (!strcmp(ty, "Unigram") || !strcmp(ty, "WordPiece") || !strcmp(ty, "WordLevel"))
        return assay_fail(c->err, ASSAY_EUNSUPPORTED,
                          "%s: model type '%s' is not supported (BPE only)", c->name, ty);
    if (strcmp(ty, "BPE"))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: unknown model type '%s'", c->name, ty);
    if (!cJSON_IsObject(vocab))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: BPE model needs a \"vocab\" object", c->name);
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dr) && dr->valuedouble > 0)
        return assay_fail(c->err, ASSAY_EUNSUPPORTED,
                          "%s: BPE dropout %g is not supported (null only)", c->name,
                          dr->valuedouble);
    size_t nv = (size_t)cJSON_GetArraySize(vocab);
    if (tok_smap_init(&t->vocab, nv))
        return nomem(c);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= TOK_MAX_ID ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: vocab entry '%.80s' has a bad id",
                              c->name, e->string ? e->string : "");
        int32_t id = (int32_t)e->valuedouble;
        if (tok_smap_put(&t->vocab, e->string, strlen(e->string), id))
            return nomem(c);
        if (id > *max_id)
            *max_id = id;
    }
    t->fuse_unk      = jbool(m, "fuse_unk", 0);
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    t->unk_id        = -1;
    const char *unk  = jstr(m, "unk_token");
    if (unk) {
        t->unk_id = tok_smap_get(&t->vocab, unk, strlen(unk));
        if (t->unk_id < 0)
            return assay_fail(c->err, ASSAY_EFORMAT, "%s: unk_token '%s' is not in the vocab",
                              c->name, unk);
    }
    if (set_prefix(c, m, "continuing_subword_prefix", &t->cont_prefix, &t->cont_prefix_len) ||
        set_prefix(c, m, "end_of_word_suffix", &t->eow_suffix, &t->eow_suffix_len))
        return -1;
    for (int b = 0; b < 256; b++) {
        char k[8];
        snprintf(k, sizeof k, "<0x%02X>", b);
        t->bytefb_id[b] = tok_smap_get(&t->vocab, k, 6);
    }
    if (merges && !cJSON_IsArray(merges))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: BPE \"merges\" must be a list", c->name);
    size_t nm = merges ? (size_t)cJSON_GetArraySize(merges) : 0;
    if (tok_pmap_init(&t->merges, nm))
        return nomem(c);
    /* Merges are resolved in blocks: hashes first, prefetches, then the lookups, so the cache
     * misses of a block overlap (a 500k-merge file makes 1.5M random lookups). */
    enum { BLK = 64 };
    struct mref {
        const char *s[3];
        size_t      l[3];
        uint32_t    h[3];
        int32_t     id[3];
    } blk[BLK];
    char        *buf  = NULL;
    size_t       bcap = 0, blen = 0, idx = 0, nb = 0;
    int          rc   = 0;
    const cJSON *next = merges ? merges->child : NULL;
    while (next || nb) {
        /* gather a block */
        blen         = 0;
        nb           = 0;
        size_t first = idx;
        for (; next && nb < BLK; next = next->next, nb++) {
            const cJSON *x = next;
            const char  *a, *b;
            size_t       al, bl;
            if (cJSON_IsString(x)) {
                const char *sp = strchr(x->valuestring, ' ');
                if (!sp) {
                    rc = assay_fail(c->err, ASSAY_EFORMAT, "%s: merge %zu '%.80s' is not \"a b\"",
                                    c->name, first + nb, x->valuestring);
                    goto out;
                }
                a  = x->valuestring;
                al = (size_t)(sp - a);
                b  = sp + 1;
                bl = strlen(b);
            } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 &&
                       cJSON_IsString(cJSON_GetArrayItem(x, 0)) &&
                       cJSON_IsString(cJSON_GetArrayItem(x, 1))) {
                a  = cJSON_GetArrayItem(x, 0)->valuestring;
                b  = cJSON_GetArrayItem(x, 1)->valuestring;
                al = strlen(a);
                bl = strlen(b);
            } else {
                rc = assay_fail(c->err, ASSAY_EFORMAT,
                                "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", c->name,
                                first + nb);
                goto out;
            }
            size_t skip = 0;
            if (t->cont_prefix_len && bl >= t->cont_prefix_len &&
                !memcmp(b, t->cont_prefix, t->cont_prefix_len))
                skip = t->cont_prefix_len;
            struct mref *r = &blk[nb];
            r->s[0]        = a;
            r->l[0]        = al;
            r->s[1]        = b;
            r->l[1]        = bl;
            r->l[2]        = al + bl - skip;
            /* merged strings go to buf; store offsets now, pointers once buf stops moving */
            if (tok_grow((void **)&buf, &bcap, blen + r->l[2] + 1, 1)) {
                rc = nomem(c);
                goto out;
            }
            memcpy(buf + blen, a, al);
            memcpy(buf + blen + al, b + skip, bl - skip);
            buf[blen + r->l[2]] = 0;
            r->s[2]             = (const char *)(uintptr_t)blen;
            blen += r->l[2] + 1;
        }
        for (size_t i = 0; i < nb; i++) {
            blk[i].s[2] = buf + (uintptr_t)blk[i].s[2];
            for (int k = 0; k < 3; k++) {
                blk[i].h[k] = tok_hash(blk[i].s[k], blk[i].l[k]);
                tok_smap_prefetch(&t->vocab, blk[i].h[k]);
            }
        }
        for (size_t i = 0; i < nb; i++)
            for (int k = 0; k < 3; k++)
                tok_smap_prefetch_entry(&t->vocab, blk[i].h[k]);
        for (size_t i = 0; i < nb; i++) {
            struct mref *r = &blk[i];
            for (int k = 0; k < 3; k++)
                r->id[k] = tok_smap_get_h(&t->vocab, r->s[k], r->l[k], r->h[k]);
            for (int k = 0; k < 2; k++)
                if (r->id[k] < 0) {
                    rc = assay_fail(c->err, ASSAY_EFORMAT,
                                    "%s: merge %zu names token '%.*s' that is not in the vocab",
                                    c->name, idx, (int)(r->l[k] > 80 ? 80 : r->l[k]), r->s[k]);
                    goto out;
                }
            if (r->id[2] < 0) {
                rc = assay_fail(
                    c->err, ASSAY_EFORMAT,
                    "%s: merge %zu ('%.40s' + '%.40s') makes '%.80s', which is not in the vocab",
                    c->name, idx, r->s[0], r->s[1], r->s[2]);
                goto out;
            }
            if (tok_pmap_put(&t->merges, ((uint64_t)(uint32_t)r->id[0] << 32) | (uint32_t)r->id[1],
                             (uint32_t)idx, r->id[2])) {
                rc = nomem(c);
                goto out;
            }
            idx++;
        }
        nb = 0;
    }
out:
    free(buf);
    return rc;
}

/* Byte-level mode: index the vocab by the raw bytes each piece stands for. */
static int build_raw_vocab(lctx *c, tokenizer *t) {
    int32_t b2c[256];
    int32_t c2b[512];
    tok_bytelevel_tables(b2c);
    for (int i = 0; i < 512; i++)
        c2b[i] = -1;
    for (int b = 0; b < 256; b++)
        c2b[b2c[b]] = b;
    if (tok_smap_init(&t->raw, t->vocab.n))
        return nomem(c);
    char  *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < t->vocab.n; i++) {
        const char *s = t->vocab.arena + t->vocab.ent[i].off;
        size_t      n = t->vocab.ent[i].len, o = 0;
        if (tok_grow((void **)&buf, &cap, n + 1, 1)) {
            free(buf);
            return nomem(c);
        }
        int ok = 1;
        for (size_t k = 0; k < n;) {
            size_t  adv;
            int32_t ch = tok_utf8_decode(s + k, n - k, &adv);
            if (ch < 0 || ch >= 512 || c2b[ch] < 0) {
                ok = 0;
                break;
            }
            buf[o++] = (char)c2b[ch];
            k += adv;
        }
        if (ok && tok_smap_put(&t->raw, buf, o, t->vocab.ent[i].val)) {
            free(buf);
            return nomem(c);
        }
    }
    free(buf);
    for (int b = 0; b < 256; b++) {
        char k        = (char)b;
        t->byte_id[b] = tok_smap_get(&t->raw, &k, 1);
    }
    return 0;
}

/* ---- added tokens --------------------------------------------------------------------------- */

static int trie_init(tok_trie *tr) {
    memset(tr, 0, sizeof *tr);
    tr->empty = 1;
    if (tok_pmap_init(&tr->edges, 64))
        return -1;
    if (tok_grow((void **)&tr->term, &tr->cap, 1, sizeof *tr->term))
        return -1;
    tr->term[0] = -1;
    tr->nnodes  = 1;
    return 0;
}

static int trie_add(tok_trie *tr, const char *s, size_t n, int32_t idx) {
    if (n == 0)
        return 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = ((uint64_t)(uint32_t)node << 8) | (unsigned char)s[i];
        int32_t  child;
        if (!tok_pmap_get(&tr->edges, key, NULL, &child)) {
            if (tok_grow((void **)&tr->term, &tr->cap, tr->nnodes + 1, sizeof *tr->term))
                return -1;
            child           = (int32_t)tr->nnodes++;
            tr->term[child] = -1;
            if (tok_pmap_put(&tr->edges, key, 0, child))
                return -1;
        }
        node = child;
    }
    if (tr->term[node] < 0) /* the first of equal patterns wins, as in aho-corasick */
        tr->term[node] = idx;
    tr->first[(unsigned char)s[0]] = 1;
    tr->empty                      = 0;
    return 0;
}

static void work_free(tok_work *w);

/* Normalizes an added token's content (HF normalizes the patterns of normalized=true tokens). */
static int normalize_content(tokenizer *t, const char *s, size_t n, char **out, size_t *out_len,
                             assay_error *err) {
    tok_work w;
    memset(&w, 0, sizeof w);
    w.text     = s;
    w.text_len = n;
    int rc     = tok_normalize(t, &w, 0, n, err);
    if (!rc) {
        const tok_split *sp = &w.sp[0];
        const char      *p  = sp->in_arena ? w.arena + sp->off : s + sp->off;
        *out                = xstrndup(p, sp->len);
        *out_len            = sp->len;
        if (!*out)
            rc = assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
    }
    work_free(&w);
    return rc;
}

static int parse_added(lctx *c, tokenizer *t, const cJSON *arr, int32_t *max_id) {
    if (trie_init(&t->trie_raw) || trie_init(&t->trie_norm) || tok_smap_init(&t->added_map, 16))
        return nomem(c);
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: \"added_tokens\" must be a list", c->name);
    size_t k = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(k ? k : 1, sizeof *t->added);
    if (!t->added)
        return nomem(c);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const char  *content = jstr(e, "content");
        const cJSON *id      = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!content || !cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= TOK_MAX_ID)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: added token %zu needs \"content\" and an \"id\"", c->name,
                              t->n_added);
        tok_added *a = &t->added[t->n_added];
        a->len       = strlen(content);
        a->content   = xstrndup(content, a->len);
        if (!a->content)
            return nomem(c);
        a->id          = (int32_t)id->valuedouble;
        a->special     = (uint8_t)jbool(e, "special", 0);
        a->lstrip      = (uint8_t)jbool(e, "lstrip", 0);
        a->rstrip      = (uint8_t)jbool(e, "rstrip", 0);
        a->single_word = (uint8_t)jbool(e, "single_word", 0);
        a->normalized  = (uint8_t)jbool(e, "normalized", !a->special);
        if (a->id > *max_id)
            *max_id = a->id;
        t->n_added++;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (tok_smap_put(&t->added_map, a->content, a->len, (int32_t)i))
            return nomem(c);
        if (a->normalized && t->norm) {
            char  *nc = NULL;
            size_t nl = 0;
            if (normalize_content(t, a->content, a->len, &nc, &nl, c->err))
                return -1;
            int rc = trie_add(&t->trie_norm, nc, nl, (int32_t)i);
            /* HF's id_to_token gives a normalized added token's normalized content */
            free(a->piece);
            a->piece     = nc;
            a->piece_len = nl;
            if (rc)
                return nomem(c);
        } else if (trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, a->content, a->len,
                            (int32_t)i))
            return nomem(c);
    }
    return 0;
}

/* ---- assembling --------------------------------------------------------------------------- */

static int build_pieces(lctx *c, tokenizer *t, int32_t max_id) {
    t->n_ids = max_id + 1;
    size_t n = (size_t)t->n_ids, total = 0;
    t->piece      = calloc(n ? n : 1, sizeof *t->piece);
    t->piece_len  = calloc(n ? n : 1, sizeof *t->piece_len);
    t->is_special = calloc(n ? n : 1, 1);
    if (!t->piece || !t->piece_len || !t->is_special)
        return nomem(c);
    for (size_t i = 0; i < t->vocab.n; i++)
        total += t->vocab.ent[i].len + 1;
    for (size_t i = 0; i < t->n_added; i++)
        total += (t->added[i].piece ? t->added[i].piece_len : t->added[i].len) + 1;
    t->piece_arena = malloc(total ? total : 1);
    if (!t->piece_arena)
        return nomem(c);
    size_t o = 0;
    for (size_t i = 0; i < t->vocab.n; i++) {
        size_t  l  = t->vocab.ent[i].len;
        int32_t id = t->vocab.ent[i].val;
        memcpy(t->piece_arena + o, t->vocab.arena + t->vocab.ent[i].off, l);
        t->piece_arena[o + l] = 0;
        t->piece[id]          = t->piece_arena + o;
        t->piece_len[id]      = (uint32_t)l;
        o += l + 1;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added  *a  = &t->added[i];
        const char *pc = a->piece ? a->piece : a->content;
        size_t      pl = a->piece ? a->piece_len : a->len;
        memcpy(t->piece_arena + o, pc, pl);
        t->piece_arena[o + pl] = 0;
        t->piece[a->id]        = t->piece_arena + o;
        t->piece_len[a->id]    = (uint32_t)pl;
        if (a->special)
            t->is_special[a->id] = 1;
        o += pl + 1;
    }
    return 0;
}

static int32_t id_of_config_token(const tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char  *s =
        cJSON_IsString(v) ? v->valuestring : (cJSON_IsObject(v) ? jstr(v, "content") : NULL);
    return s ? tok_piece_to_id(t, s) : -1;
}

static void apply_config(tokenizer *t, const cJSON *cfg) {
    int32_t b = id_of_config_token(t, cfg, "bos_token"),
            e = id_of_config_token(t, cfg, "eos_token");
    if (b >= 0 || cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token")))
        t->bos_id = b;
    if (e >= 0)
        t->eos_id = e;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    if (cJSON_IsBool(ab))
        t->add_bos_cfg = cJSON_IsTrue(ab);
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length");
    /* HF writes int(1e30) for "no limit" */
    if (cJSON_IsNumber(ml) && ml->valuedouble > 0 && ml->valuedouble < 9.0e15)
        t->max_len = (int64_t)ml->valuedouble;
    if (cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"))
        t->chat_template = 1;
}

/* tokenizer_config.json text applied to t. */
static int apply_config_text(tokenizer *t, const char *text, size_t len, const char *name,
                             assay_error *err) {
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return assay_fail(err, ASSAY_EFORMAT, "%s: invalid JSON", name);
    }
    if (config_json_keep_last(cfg)) {
        cJSON_Delete(cfg);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name);
    }
    apply_config(t, cfg);
    cJSON_Delete(cfg);
    return ASSAY_OK;
}

/* ---- planning chunked encoding --------------------------------------------------------------- */

/* A long text is encoded in pieces cut between two ASCII chars x|y (see tok_encode_chunked).
 * Normalizers that act char by char on ASCII (NFC/NFD/NFKC/NFKD: no composition or reordering
 * involves an ASCII char; Lowercase; StripAccents; Replace of one char by a string) give the
 * same text cut or whole; Prepend is applied to the first piece of a stretch only. Strip (looks
 * at the ends), regex Replace and a Unicode form after a Replace (whose output could compose
 * with its neighbour) make the text uncuttable. Returns NULL or the reason. */
static int norm_small(const tok_norm *n, char *s, size_t *len, size_t cap);
static int chunk_symbol(const tokenizer *t, const char *s, size_t n, int first, char *out,
                        size_t *out_len);

static const char *chunk_norm_check(const tok_norm *n, int *seen_replace) {
    switch (n->type) {
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD: return *seen_replace ? "a Unicode normalizer after Replace" : NULL;
    case NORM_LOWER:
    case NORM_STRIP_ACCENTS:
    case NORM_PREPEND: return NULL;
    case NORM_REPLACE:
        *seen_replace = 1;
        if (n->pat.is_regex || n->pat.len == 0 ||
            tok_utf8_len((unsigned char)n->pat.str[0]) != n->pat.len)
            return "a Replace normalizer with a regex or multi-char pattern";
        return NULL;
    case NORM_SEQ:
        for (size_t i = 0; i < n->nkids; i++) {
            const char *why = chunk_norm_check(&n->kids[i], seen_replace);
            if (why)
                return why;
        }
        return NULL;
    default: return "a Strip normalizer";
    }
}

/* Pre-tokenizers: a Split by a well-known regex (Isolated), optionally followed by ByteLevel
 * without its own regex, or ByteLevel with the GPT-2 regex and no prefix space, always split at
 * the cut points chosen (BOUNDARY; why, per regex, at cut_rule_ok). No pre-tokenizer, or a Split
 * by a literal string, leaves the cut inside a word (SPAN). */
static void plan_chunks(tokenizer *t) {
    int         seen_replace = 0;
    const char *why          = t->norm ? chunk_norm_check(t->norm, &seen_replace) : NULL;
    t->chunk_mode            = TOK_CHUNK_NONE;
    t->chunk_nl              = 0;
    const tok_pre *p = t->pre, *split = NULL;
    if (!why && p && p->type == PRE_SEQ) {
        if (p->nkids == 1)
            p = &p->kids[0];
        else if (p->nkids == 2 && p->kids[1].type == PRE_BYTELEVEL && !p->kids[1].use_regex &&
                 p->kids[0].type == PRE_SPLIT && p->kids[0].pat.is_regex)
            p = &p->kids[0];
        else
            why = "this Sequence of pre-tokenizers";
    }
    if (why) {
    } else if (!p) {
        t->chunk_mode = TOK_CHUNK_SPAN;
    } else if (p->type == PRE_SPLIT && !p->pat.is_regex && !p->invert && p->pat.len) {
        t->chunk_mode = TOK_CHUNK_SPAN;
        split         = p;
    } else if (p->type == PRE_SPLIT && p->pat.is_regex && !p->invert &&
               p->behavior == BEH_ISOLATED && p->pat.known != TOK_RE_OTHER) {
        t->chunk_mode = TOK_CHUNK_BOUNDARY;
        t->chunk_nl   = p->pat.known != TOK_RE_GPT2;
    } else if (p->type == PRE_BYTELEVEL && p->use_regex && !p->add_prefix_space &&
               p->pat.known == TOK_RE_GPT2) {
        t->chunk_mode = TOK_CHUNK_BOUNDARY;
    } else
        why = "the pre-tokenizer";
    if (t->chunk_mode == TOK_CHUNK_SPAN &&
        (t->byte_level || t->ignore_merges || t->cont_prefix_len || t->eow_suffix_len)) {
        t->chunk_mode = TOK_CHUNK_NONE;
        why           = "the BPE options (byte-level, ignore_merges or affixes) with one word";
    }
    /* HF places BPE offsets by adding up the lengths of the symbols kept, so a char that is
     * dropped (neither unk nor byte fallback) shifts the offsets after it to the word's end;
     * cutting the word would change those offsets */
    int drops = t->unk_id < 0;
    if (drops && t->byte_fallback) {
        drops = 0;
        for (int b = 0; b < 256; b++)
            if (t->bytefb_id[b] < 0)
                drops = 1;
    }
    if (t->chunk_mode == TOK_CHUNK_SPAN && drops) {
        t->chunk_mode = TOK_CHUNK_NONE;
        why = "a vocabulary that drops unknown chars (no unk_token, no byte fallback) in one "
              "word";
    }
    (void)split;
    t->space_norm_len = 0;
    char   sp[8]      = " ", pr[8];
    size_t sl         = 1, prl;
    if (t->chunk_mode == TOK_CHUNK_SPAN && (!t->norm || !norm_small(t->norm, sp, &sl, sizeof sp)) &&
        sl && tok_utf8_len((unsigned char)sp[0]) == sl && !chunk_symbol(t, sp, sl, 1, pr, &prl)) {
        /* which ASCII chars x may precede the space symbol at a cut: x is a vocabulary char
         * and no vocabulary entry holds x followed by the space's piece (one pass over all) */
        unsigned char bad[128] = {0};
        for (size_t i = 0; i < t->vocab.n; i++) {
            const char *k = t->vocab.arena + t->vocab.ent[i].off;
            size_t      n = t->vocab.ent[i].len;
            for (const char *f = k; (f = memmem(f, n - (size_t)(f - k), pr, prl)) != NULL; f++)
                if (f > k && (unsigned char)f[-1] < 128)
                    bad[(unsigned char)f[-1]] = 1;
        }
        for (int x = 0; x < 128; x++) {
            char c  = (char)x;
            int  ok = x > ' ' && x < 0x7f && !bad[x] && tok_smap_get(&t->vocab, &c, 1) >= 0;
            atomic_store_explicit(&t->word_memo[x], ok ? 1 : 2, memory_order_relaxed);
        }
        memcpy(t->space_norm, sp, sl);
        t->space_norm_len = sl;
    }
    t->chunk_why = t->chunk_mode == TOK_CHUNK_NONE ? why : NULL;
}

static int tok_from_json(tokenizer *t, const cJSON *root, lctx *c) {
    int32_t max_id = -1;
    if (!cJSON_IsObject(root))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: not a JSON object", c->name);
    if (!(t->path = xstrndup(c->name, strlen(c->name))))
        return nomem(c);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return assay_fail(c->err, ASSAY_EFORMAT, "%s: no \"model\" object", c->name);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (x && !cJSON_IsNull(x)) {
        if (!(t->norm = calloc(1, sizeof *t->norm)))
            return nomem(c);
        if (parse_norm(c, x, t->norm))
            return -1;
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (x && !cJSON_IsNull(x)) {
        if (!(t->pre = calloc(1, sizeof *t->pre)))
            return nomem(c);
        if (parse_pre(c, x, t->pre) || check_bytelevel(c, t->pre, 1, &t->byte_level))
            return -1;
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (x && !cJSON_IsNull(x)) {
        if (!(t->dec = calloc(1, sizeof *t->dec)))
            return nomem(c);
        if (parse_dec(c, x, t->dec))
            return -1;
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (x && !cJSON_IsNull(x) && parse_post(c, t, x))
        return -1;
    if (parse_model(c, t, model, &max_id))
        return -1;
    if (t->byte_level && build_raw_vocab(c, t))
        return -1;
    if (parse_added(c, t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &max_id))
        return -1;
    if (build_pieces(c, t, max_id))
        return -1;
    for (size_t i = 0; i < t->n_post_pre; i++)
        if (t->post_pre[i] >= t->n_ids)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: post_processor id %d is outside the vocab", c->name,
                              t->post_pre[i]);
    for (size_t i = 0; i < t->n_post_suf; i++)
        if (t->post_suf[i] >= t->n_ids)
            return assay_fail(c->err, ASSAY_EFORMAT,
                              "%s: post_processor id %d is outside the vocab", c->name,
                              t->post_suf[i]);
    if (t->byte_level)
        snprintf(t->kind, sizeof t->kind, "bpe-bytelevel");
    else if (t->byte_fallback || (t->pre && t->pre->type == PRE_METASPACE) ||
             tok_smap_get(&t->vocab, "\xe2\x96\x81", 3) >= 0)
        snprintf(t->kind, sizeof t->kind, "bpe-sentencepiece");
    else
        snprintf(t->kind, sizeof t->kind, "bpe");
    /* defaults without tokenizer_config.json: the template's first special token is the BOS */
    if (t->n_post_pre)
        t->bos_id = t->post_pre[0];
    plan_chunks(t);
    if (!(t->cache = tok_cache_new()))
        return nomem(c);
    return 0;
}

static tokenizer *tok_new(void) {
    tokenizer *t = calloc(1, sizeof *t);
    if (t) {
        t->unk_id = -1;
        t->bos_id = t->eos_id = -1;
        t->add_bos_cfg        = -1;
        t->max_len            = -1;
    }
    return t;
}

tokenizer *tok_load_buffer(const char *json, size_t len, const char *name, assay_error *err) {
    lctx       c = {name ? name : "tokenizer.json", err};
    tokenizer *t = tok_new();
    if (!t) {
        nomem(&c);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        size_t      at = ep && ep >= json && ep <= json + len ? (size_t)(ep - json) : 0;
        assay_fail(err, ASSAY_EFORMAT, "%s: invalid JSON near byte %zu", c.name, at);
        tok_free(t);
        return NULL;
    }
    /* HF's vocab is a map: a repeated piece keeps its last id */
    int rc = config_json_keep_last(root) ? nomem(&c) : tok_from_json(t, root, &c);
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return NULL;
    }
    return t;
}

/* GPT-2's encoder.json + vocab.bpe, as the equivalent tokenizer.json. */
static cJSON *gpt2_json(const char *dir, assay_error *err) {
    char   p1[4096], p2[4096];
    char  *enc = NULL, *bpe = NULL;
    size_t enc_len = 0, bpe_len = 0;
    cJSON *root = NULL, *vocab = NULL;
    if (path_join(p1, sizeof p1, dir, "encoder.json") ||
        path_join(p2, sizeof p2, dir, "vocab.bpe")) {
        assay_fail(err, ASSAY_EINVAL, "%s: path too long", dir);
        return NULL;
    }
    if (file_read_capped(p1, TOKENIZER_JSON_MAX, &enc, &enc_len, err) ||
        file_read_capped(p2, TOKENIZER_JSON_MAX, &bpe, &bpe_len, err))
        goto fail;
    vocab = cJSON_ParseWithLength(enc, enc_len);
    if (!cJSON_IsObject(vocab)) {
        assay_fail(err, ASSAY_EFORMAT, "%s: not a JSON object of token -> id", p1);
        goto fail;
    }
    if (config_json_keep_last(vocab)) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", p1);
        goto fail;
    }
    root         = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    const cJSON *eot = cJSON_GetObjectItemCaseSensitive(vocab, "<|endoftext|>");
    vocab            = NULL;
    cJSON *merges    = cJSON_AddArrayToObject(model, "merges");
    char  *line = bpe, *end = bpe + bpe_len;
    int    first = 1;
    while (line < end) {
        char  *nl = memchr(line, '\n', (size_t)(end - line));
        char  *le = nl ? nl : end;
        size_t l  = (size_t)(le - line);
        if (l && line[l - 1] == '\r')
            l--;
        if (!(first && l >= 8 && !memcmp(line, "#version", 8)) && l > 0) {
            char save = line[l];
            line[l]   = 0;
            cJSON_AddItemToArray(merges, cJSON_CreateString(line));
            line[l] = save;
        }
        first = 0;
        line  = nl ? nl + 1 : end;
    }
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddTrueToObject(pre, "use_regex");
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    if (cJSON_IsNumber(eot)) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", eot->valuedouble);
        cJSON_AddStringToObject(a, "content", "<|endoftext|>");
        cJSON_AddTrueToObject(a, "special");
        cJSON_AddFalseToObject(a, "normalized");
        cJSON_AddItemToArray(added, a);
    }
    free(enc);
    free(bpe);
    return root;
fail:
    cJSON_Delete(vocab);
    free(enc);
    free(bpe);
    return NULL;
}

tokenizer *tok_load_buffers(const char *json, size_t len, const char *cfg, size_t cfg_len,
                            const char *name, assay_error *err) {
    tokenizer *t = tok_load_buffer(json, len, name, err);
    if (t && cfg && apply_config_text(t, cfg, cfg_len, name, err)) {
        tok_free(t);
        return NULL;
    }
    return t;
}

tokenizer *tok_load(const char *path, assay_error *err) {
    char       json_path[4096], cfg_path[4096], dir[4096];
    char      *buf = NULL, *cfg_buf = NULL;
    size_t     len = 0, cfg_len = 0;
    tokenizer *t    = NULL;
    cJSON     *root = NULL;
    int        gpt2 = 0;
    if (model_path_is_gguf(path))
        return tok_load_gguf(path, err);
    if (path_is_dir(path)) {
        snprintf(dir, sizeof dir, "%s", path);
        if (path_join(json_path, sizeof json_path, path, "tokenizer.json")) {
            assay_fail(err, ASSAY_EINVAL, "%s: path too long", path);
            return NULL;
        }
        if (!path_exists(json_path)) {
            char e1[4096];
            if (path_join(e1, sizeof e1, path, "encoder.json") == 0 && path_exists(e1))
                gpt2 = 1;
            else {
                assay_fail(
                    err, ASSAY_EIO,
                    "%s: no tokenizer.json (or GPT-2 encoder.json + vocab.bpe) in this directory",
                    path);
                return NULL;
            }
        }
    } else {
        snprintf(json_path, sizeof json_path, "%s", path);
        snprintf(dir, sizeof dir, "%s", path);
        char *sl = strrchr(dir, '/');
        if (sl)
            *sl = 0;
        else
            snprintf(dir, sizeof dir, ".");
    }
    if (gpt2) {
        root = gpt2_json(dir, err);
        if (!root)
            return NULL;
        char name[4200];
        snprintf(name, sizeof name, "%s/vocab.bpe", dir);
        lctx c = {name, err};
        t      = tok_new();
        if (!t || tok_from_json(t, root, &c)) {
            if (!t)
                nomem(&c);
            goto fail;
        }
        cJSON_Delete(root);
        root      = NULL;
        t->bos_id = t->eos_id = tok_piece_to_id(t, "<|endoftext|>");
        t->max_len            = 1024;
    } else {
        if (file_read_capped(json_path, TOKENIZER_JSON_MAX, &buf, &len, err))
            return NULL;
        t = tok_load_buffer(buf, len, json_path, err);
        free(buf);
        buf = NULL;
        if (!t)
            return NULL;
    }
    if (path_join(cfg_path, sizeof cfg_path, dir, "tokenizer_config.json") == 0 &&
        path_exists(cfg_path)) {
        if (file_read_capped(cfg_path, TOKENIZER_CONFIG_MAX, &cfg_buf, &cfg_len, err) ||
            apply_config_text(t, cfg_buf, cfg_len, cfg_path, err))
            goto fail;
        free(cfg_buf);
        cfg_buf = NULL;
    }
    if (path_join(cfg_path, sizeof cfg_path, dir, "chat_template.jinja") == 0 &&
        path_exists(cfg_path))
        t->chat_template = 1;
    return t;
fail:
    cJSON_Delete(root);
    free(buf);
    free(cfg_buf);
    tok_free(t);
    return NULL;
}

/* ---- encoding ------------------------------------------------------------------------------- */

static void work_free(tok_work *w) {
    free(w->arena);
    free(w->al);
    free(w->sp);
    free(w->sp2);
    for (int k = 0; k < 2; k++) {
        free(w->nb[k]);
        free(w->nal[k]);
    }
    free(w->sym);
    free(w->heap);
    free(w->cv);
    if (w->md)
        pcre2_match_data_free(w->md);
    if (w->mctx)
        pcre2_match_context_free(w->mctx);
    if (w->jit)
        pcre2_jit_stack_free(w->jit);
}

tok_encode_opts tok_default_opts(void) {
    tok_encode_opts o = {1, 1, 0};
    return o;
}

void tok_ids_free(tok_ids *v) {
    if (!v)
        return;
    free(v->ids);
    free(v->offsets);
    memset(v, 0, sizeof *v);
}

typedef struct enc_ctx {
    const tokenizer       *t;
    tok_work              *w;
    const tok_encode_opts *opts;
    assay_error           *err;
    int                    failed;
    /* normalized-token pass */
    tok_split cur;
    /* chunking: the chunk's first stretch of text continues the previous chunk's last one */
    int    continues, tail_text;
    size_t chunk_len;
} enc_ctx;

static int emit_norm_piece(void *vc, int32_t id, size_t s, size_t e) {
    enc_ctx  *c = vc;
    tok_work *w = c->w;
    if (e == s)
        return 0;
    tok_split sp = c->cur;
    sp.off       = c->cur.off + s;
    sp.len       = e - s;
    if (!c->cur.in_arena)
        sp.orig = c->cur.orig + s;
    sp.id = id;
    if (tok_grow((void **)&w->sp2, &w->capsp2, w->nsp2 + 1, sizeof *w->sp2))
        return -1;
    w->sp2[w->nsp2++] = sp;
    return 0;
}

/* SPAN mode: runs BPE on the pieces of a word cut before each normalized space that no merge
 * can join to the ASCII char before it (the argument of "chunked encoding" below, applied to one
 * word: BPE of the word is BPE of the pieces; offsets too, as no char is ever dropped). */
static int bpe_word_cut(const tokenizer *t, tok_work *w, const char *p, const tok_split *sp,
                        assay_error *err) {
    const char            *sn = t->space_norm;
    size_t                 sl = t->space_norm_len, n = sp->len, start = 0, i = 1;
    _Atomic unsigned char *memo = ((tokenizer *)t)->word_memo;
    while (i + sl <= n) {
        const char *f = memchr(p + i, sn[0], n - i - sl + 1);
        if (!f)
            break;
        i               = (size_t)(f - p);
        unsigned char x = (unsigned char)p[i - 1];
        if (x > ' ' && x < 0x7f && !memcmp(f, sn, sl)) {
            unsigned char m = atomic_load_explicit(&memo[x], memory_order_relaxed);
            if (m == 1) {
                tok_split part = *sp;
                part.off += start;
                part.len = i - start;
                if (!sp->in_arena)
                    part.orig += start;
                if (tok_bpe_word(t, w, p + start, i - start, &part, err))
                    return -1;
                start = i;
            }
        }
        i += 1;
    }
    tok_split part = *sp;
    part.off += start;
    part.len = n - start;
    if (!sp->in_arena)
        part.orig += start;
    return tok_bpe_word(t, w, p + start, n - start, &part, err);
}

/* One stretch of text between added tokens: normalize, pre-tokenize, run the model. */
static int encode_text(enc_ctx *c, size_t a, size_t b) {
    const tokenizer *t = c->t;
    tok_work        *w = c->w;
    w->nsp             = 0;
    w->alen            = 0;
    if (tok_normalize(t, w, a, b, c->err))
        return -1;
    if (w->nsp == 1 && w->sp[0].len == 0)
        return 0;
    if (!t->trie_norm.empty) {
        const tok_split *sp = &w->sp[0];
        c->cur              = *sp;
        w->nsp2             = 0;
        const char *p       = sp->in_arena ? w->arena + sp->off : w->text + sp->off;
        if (tok_trie_split(t, &t->trie_norm, p, sp->len, c->opts->split_special, emit_norm_piece,
                           c))
            return assay_fail(c->err, ASSAY_ENOMEM, "tokenizer: out of memory");
        tok_split *tmp = w->sp;
        w->sp          = w->sp2;
        w->sp2         = tmp;
        size_t cp      = w->capsp;
        w->capsp       = w->capsp2;
        w->capsp2      = cp;
        w->nsp         = w->nsp2;
    }
    if (tok_pretokenize(t, w, c->err))
        return -1;
    for (size_t i = 0; i < w->nsp; i++) {
        tok_split *sp = &w->sp[i];
        if (sp->id >= 0) {
            int32_t os = 0, oe = 0;
            if (w->want_offsets)
                tok_split_offsets(w, sp, 0, sp->len, &os, &oe);
            if (tok_ids_push(w->out, sp->id, os, oe, w->want_offsets))
                return assay_fail(c->err, ASSAY_ENOMEM, "tokenizer: out of memory");
            continue;
        }
        const char *p = sp->in_arena ? w->arena + sp->off : w->text + sp->off;
        if (t->space_norm_len ? bpe_word_cut(t, w, p, sp, c->err)
                              : tok_bpe_word(t, w, p, sp->len, sp, c->err))
            return -1;
    }
    return 0;
}

static int emit_raw_piece(void *vc, int32_t id, size_t s, size_t e) {
    enc_ctx *c   = vc;
    c->tail_text = id < 0 && e == c->chunk_len && e > s;
    if (id >= 0) {
        if (tok_ids_push(c->w->out, id, (int32_t)s, (int32_t)e, c->w->want_offsets)) {
            assay_fail(c->err, ASSAY_ENOMEM, "tokenizer: out of memory");
            c->failed = 1;
            return -1;
        }
        return 0;
    }
    if (e == s)
        return 0;
    c->w->no_prepend = c->continues && s == 0;
    int rc           = encode_text(c, s, e);
    c->w->no_prepend = 0;
    if (rc) {
        c->failed = 1;
        return -1;
    }
    return 0;
}

/* Replaces invalid UTF-8 with U+FFFD; omap (when wanted) maps each output byte position (and the
 * end) to the input position. */
static int repair_utf8(const char *s, size_t n, char **out, size_t *out_n, size_t **omap) {
    size_t  cap = n + n * 2 + 1, o = 0, i = 0;
    char   *r = malloc(cap);
    size_t *m = omap ? malloc((cap + 1) * sizeof *m) : NULL;
    if (!r || (omap && !m)) {
        free(r);
        free(m);
        return -1;
    }
    while (i < n) {
        size_t bad, v = tok_utf8_valid_prefix(s + i, n - i, &bad);
        memcpy(r + o, s + i, v);
        if (m)
            for (size_t k = 0; k < v; k++)
                m[o + k] = i + k;
        o += v;
        i += v;
        if (bad) {
            memcpy(r + o, "\xEF\xBF\xBD", 3);
            if (m)
                m[o] = m[o + 1] = m[o + 2] = i;
            o += 3;
            i += bad;
        }
    }
    if (m)
        m[o] = n;
    r[o]   = 0;
    *out   = r;
    *out_n = o;
    if (omap)
        *omap = m;
    return 0;
}

/* HF's ByteLevel post-processor with trim_offsets: spaces at the ends of a token's piece ('Ġ' or
 * whitespace chars; one input byte each for 'Ġ') are cut from its offsets. Tokens [from, to) are
 * trimmed; token first_idx and tokens at offset 0 of the whole text (offsets here + base) count
 * as the first. */
static void trim_offsets(const tokenizer *t, tok_ids *out, size_t from, size_t to, size_t first_idx,
                         size_t base) {
    for (size_t i = from; i < to; i++) {
        const char *p = tok_id_to_piece(t, out->ids[i]);
        if (!p)
            continue;
        size_t   n = strlen(p), lead = 0, trail = 0, k = 0, adv;
        int32_t *o = &out->offsets[2 * i];
        while (k < n) {
            int32_t c = tok_utf8_decode(p + k, n - k, &adv);
            if (c != 0x120 && !tok_is_whitespace(c))
                break;
            lead++;
            k += adv;
        }
        if (k < n) /* count from the end only when the piece is not all spaces */
            for (size_t e = n; e > k;) {
                size_t b = e - 1;
                while (b > k && ((unsigned char)p[b] & 0xC0) == 0x80)
                    b--;
                int32_t c = tok_utf8_decode(p + b, e - b, &adv);
                if (c != 0x120 && !tok_is_whitespace(c))
                    break;
                trail++;
                e = b;
            }
        else
            trail = lead; /* HF counts both ends over the same all-space piece */
        if (lead > 0) {
            int is_first = i == first_idx || (base == 0 && o[0] == 0);
            if (is_first && t->post_trim_prefix && lead == 1)
                lead = 0;
            o[0] = o[0] + (int32_t)lead < o[1] ? o[0] + (int32_t)lead : o[1];
        }
        if (trail > 0 && o[1] >= (int32_t)trail)
            o[1] = o[1] - (int32_t)trail > o[0] ? o[1] - (int32_t)trail : o[0];
    }
}

/* ---- chunked encoding ------------------------------------------------------------------------
 *
 * A long text is encoded piece by piece, so that working memory (normalized copies, alignments,
 * pre-token lists, BPE symbols) follows the piece, not the text. A cut goes between two ASCII
 * chars x|y, where the tokens of the whole text are provably the tokens of the two sides:
 *
 * - input: an ASCII byte is a whole char and ends any invalid UTF-8 sequence, so validation and
 *   U+FFFD repair give the same text either way.
 * - added tokens (raw and normalized): no token's content holds "xy" (no match can cross the
 *   cut; leftmost-longest then finds the same matches on both sides), none with rstrip or
 *   single_word ends with x, none with lstrip or single_word starts with y (they look past
 *   their match).
 * - normalizers: see chunk_norm_check; Prepend is applied only to the first piece of a stretch.
 * - pre-tokenizer, BOUNDARY (GPT-2, cl100k, Qwen2 regexes): y is ' ' and x is not whitespace.
 *   No alternative matches a non-space char followed by a space (spaces only lead a match:
 *   " ?\p{L}+", "[^\r\n\p{L}\p{N}]?\p{L}+", " ?[^\s\p{L}\p{N}]+"; [\r\n]* and \s runs never
 *   start at x), so a match ends at the cut; every quantifier that reaches the cut stops there
 *   whether it sees ' ' or the end, and (?!\S) succeeds on both; nothing looks behind. cl100k
 *   and Qwen2 also allow x = '\n' with y printable, non-space: the match holding x is then
 *   "\s*[\r\n]+" (or " ?[^\s\p{L}\p{N}]+[\r\n]*"), which ends after the last newline before y
 *   either way, and is tried before "\s+(?!\S)" at every position of that run. (GPT-2 lacks the
 *   newline alternative: "\s+(?!\S)" would give "\n\n|X" whole but " \n" cut.)
 * - SPAN (no pre-tokenizer, or a Split by a literal string that contains neither char): the cut
 *   splits one word in two. BPE on the whole word equals BPE on the sides exactly when no merge
 *   joins symbols across the cut. Each merged token's string is the concatenation of its
 *   symbols' strings, so such a merge leaves a vocabulary entry containing piece(x) + piece(y)
 *   (the symbols of the chars next to the cut: the char itself, or its byte-fallback piece);
 *   if no entry contains that string, no merge ever crosses. Unknown chars (unk, fusable) are
 *   never cut next to.
 *
 * Pipelines outside these (chunk_why says which component) are encoded whole. Verified by
 * tests/test_tokenizer.c, which cuts at every allowed point of the reference corpus and of
 * wikitext and compares with whole-text encoding. */

enum { CHUNK_DEFAULT = 256 * 1024 };

/* Applies the normalizer to a short string (an ASCII char, as chunk cuts see it); -1 when the
 * result does not fit. Only the normalizers chunk_norm_check allows reach here. */
static int norm_small(const tok_norm *n, char *s, size_t *len, size_t cap) {
    char   tmp[64];
    size_t o = 0;
    switch (n->type) {
    case NORM_SEQ:
        for (size_t i = 0; i < n->nkids; i++)
            if (norm_small(&n->kids[i], s, len, cap))
                return -1;
        return 0;
    case NORM_LOWER:
    case NORM_STRIP_ACCENTS:
    case NORM_REPLACE:
        for (size_t i = 0; i < *len;) {
            size_t  adv;
            int32_t c = tok_utf8_decode(s + i, *len - i, &adv);
            char    one[16];
            size_t  l = 0;
            if (n->type == NORM_REPLACE && adv == n->pat.len && !memcmp(s + i, n->pat.str, adv)) {
                if (o + n->len > sizeof tmp)
                    return -1;
                memcpy(tmp + o, n->str, n->len);
                o += n->len;
                i += adv;
                continue;
            }
            if (n->type == NORM_LOWER && c == 0x130) {
                l = tok_utf8_encode('i', one);
                l += tok_utf8_encode(0x307, one + l);
            } else if (n->type == NORM_LOWER && c >= 0)
                l = tok_utf8_encode(utf8proc_tolower(c), one);
            else if (n->type != NORM_STRIP_ACCENTS || c < 0 ||
                     utf8proc_category(c) != UTF8PROC_CATEGORY_MN) {
                memcpy(one, s + i, adv);
                l = adv;
            }
            if (o + l > sizeof tmp)
                return -1;
            memcpy(tmp + o, one, l);
            o += l;
            i += adv;
        }
        if (o > cap)
            return -1;
        memcpy(s, tmp, o);
        *len = o;
        return 0;
    default: return 0; /* NFx leave ASCII alone (none follows a Replace); Prepend: see no_prepend */
    }
}

static int has_sub(const char *s, size_t n, const char *sub, size_t m) {
    return m && n >= m && memmem(s, n, sub, m) != NULL;
}

/* Added tokens: no match may cross the cut between x and y or look across it. */
static int chunk_added_ok(const tokenizer *t, const char *x, size_t xl, const char *y, size_t yl) {
    char xy[32];
    memcpy(xy, x, xl);
    memcpy(xy + xl, y, yl);
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        for (int k = 0; k < 2; k++) {
            const char *c = k ? a->piece : a->content;
            size_t      n = k ? a->piece_len : a->len;
            if (!c)
                continue;
            if (has_sub(c, n, xy, xl + yl))
                return 0;
            if ((a->rstrip || a->single_word) && n >= xl && !memcmp(c + n - xl, x, xl))
                return 0;
            if ((a->lstrip || a->single_word) && n >= yl && !memcmp(c, y, yl))
                return 0;
        }
    }
    return 1;
}

/* The piece of the BPE symbol a char (s, n bytes) starts as next to the cut: the char, or its
 * first (first=1) or last byte-fallback piece. 0 ok; -1 unknown char. */
static int chunk_symbol(const tokenizer *t, const char *s, size_t n, int first, char *out,
                        size_t *out_len) {
    if (tok_smap_get(&t->vocab, s, n) >= 0) {
        memcpy(out, s, n);
        *out_len = n;
        return 0;
    }
    if (!t->byte_fallback)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (t->bytefb_id[(unsigned char)s[i]] < 0)
            return -1;
    snprintf(out, 8, "<0x%02X>", (unsigned char)s[first ? 0 : n - 1]);
    *out_len = 6;
    return 0;
}

static const tok_pattern *chunk_split_literal(const tokenizer *t) {
    const tok_pre *p = t->pre;
    if (p && p->type == PRE_SEQ && p->nkids == 1)
        p = &p->kids[0];
    return p && p->type == PRE_SPLIT && !p->pat.is_regex ? &p->pat : NULL;
}

/* Whether the text may be cut between ASCII chars x and y (see the comment above). */
static int chunk_pair_ok(const tokenizer *t, char x, char y) {
    if (!chunk_added_ok(t, &x, 1, &y, 1))
        return 0;
    char   xs[16] = {x}, ys[16] = {y};
    size_t xn = 1, yn = 1;
    if (t->norm &&
        (norm_small(t->norm, xs, &xn, sizeof xs) || norm_small(t->norm, ys, &yn, sizeof ys)))
        return 0;
    if (!xn || !yn)
        return 0;
    /* the chars next to the cut after normalization */
    size_t xb = xn - 1;
    while (xb > 0 && ((unsigned char)xs[xb] & 0xC0) == 0x80)
        xb--;
    const char *xc = xs + xb, *yc = ys;
    size_t      xcl = xn - xb, ycl = tok_utf8_len((unsigned char)ys[0]), adv;
    if (ycl > yn)
        return 0;
    if (!chunk_added_ok(t, xc, xcl, yc, ycl))
        return 0;
    if (t->chunk_mode == TOK_CHUNK_BOUNDARY) {
        int32_t xcp = tok_utf8_decode(xc, xcl, &adv);
        if (ycl == 1 && yc[0] == ' ' && xcp >= 0 && !tok_is_whitespace(xcp))
            return 1;
        return t->chunk_nl && xcl == 1 && xc[0] == '\n' && ycl == 1 && yc[0] > ' ' && yc[0] < 0x7f;
    }
    if (t->chunk_mode != TOK_CHUNK_SPAN)
        return 0;
    const tok_pattern *lit = chunk_split_literal(t);
    if (lit && (has_sub(lit->str, lit->len, xc, xcl) || has_sub(lit->str, lit->len, yc, ycl)))
        return 0;
    if (xcl == 1 && ycl == t->space_norm_len && !memcmp(yc, t->space_norm, ycl))
        return atomic_load_explicit(&t->word_memo[(unsigned char)xc[0] & 127],
                                    memory_order_relaxed) == 1;
    char   pair[32];
    size_t pl, pr;
    if (chunk_symbol(t, xc, xcl, 0, pair, &pl) || chunk_symbol(t, yc, ycl, 1, pair + pl, &pr))
        return 0;
    for (size_t i = 0; i < t->vocab.n; i++) /* entry by entry: the arena runs keys together */
        if (has_sub(t->vocab.arena + t->vocab.ent[i].off, t->vocab.ent[i].len, pair, pl + pr))
            return 0;
    return 1;
}

/* First allowed cut at or after `from` (before len), or len. */
static size_t chunk_find_cut(const tokenizer *t, const char *s, size_t len, size_t from) {
    _Atomic unsigned char(*memo)[128] = ((tokenizer *)t)->chunk_memo;
    for (size_t p = from < 1 ? 1 : from; p < len; p++) {
        unsigned char x = (unsigned char)s[p - 1], y = (unsigned char)s[p];
        int           cand =
            (y == ' ' && x > ' ' && x < 0x7f) || (t->chunk_nl && x == '\n' && y > ' ' && y < 0x7f);
        if (!cand)
            continue;
        unsigned char m = atomic_load_explicit(&memo[x][y], memory_order_relaxed);
        if (!m) {
            m = chunk_pair_ok(t, (char)x, (char)y) ? 1 : 2;
            atomic_store_explicit(&memo[x][y], m, memory_order_relaxed);
        }
        if (m == 1)
            return p;
    }
    return len;
}

/* Encodes one piece text[0..len) of the input (it starts at `base` there); appends its tokens
 * with offsets into the whole input. */
static int encode_piece(enc_ctx *c, const char *text, size_t len, size_t base, size_t first_idx) {
    const tokenizer *t     = c->t;
    tok_work        *w     = c->w;
    tok_ids         *out   = w->out;
    size_t           n0    = out->n;
    char            *fixed = NULL;
    size_t          *omap  = NULL;
    size_t           bad, v = tok_utf8_valid_prefix(text, len, &bad);
    if (v < len) { /* the caller has checked that replacing is wanted */
        size_t fn;
        if (repair_utf8(text, len, &fixed, &fn, w->want_offsets ? &omap : NULL))
            return assay_fail(c->err, ASSAY_ENOMEM, "tokenizer: out of memory");
        text = fixed;
        len  = fn;
    }
    w->text      = text ? text : "";
    w->text_len  = len;
    c->chunk_len = len;
    c->failed    = 0;
    int rc       = 0;
    if (tok_trie_split(t, &t->trie_raw, w->text, len, c->opts->split_special, emit_raw_piece, c)) {
        rc = c->failed && c->err && c->err->code
                 ? c->err->code
                 : assay_fail(c->err, ASSAY_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    if (out->offsets) {
        if (t->post_trim)
            trim_offsets(t, out, n0, out->n, first_idx, base);
        for (size_t i = 2 * n0; i < 2 * out->n; i++)
            out->offsets[i] =
                (int32_t)((omap ? omap[out->offsets[i]] : (size_t)out->offsets[i]) + base);
    }
done:
    free(fixed);
    free(omap);
    return rc;
}

/* tok_encode, tok_encode_chunked and tok_encode_stream: tokens go to out; with a sink, out is
 * handed over and emptied after every piece. */
static int encode_run(const tokenizer *t, const char *text, size_t len, const tok_encode_opts *opts,
                      int want_offsets, size_t chunk, tok_ids *out, tok_sink_fn sink, void *sctx,
                      assay_error *err) {
    tok_encode_opts dflt = tok_default_opts();
    if (!opts)
        opts = &dflt;
    if (!t || !out || (!text && len))
        return assay_fail(err, ASSAY_EINVAL, "tok_encode: NULL argument");
    if (len > (size_t)INT32_MAX / 2)
        return assay_fail(err, ASSAY_EINVAL,
                          "tok_encode: text of %zu bytes is too long (limit 1 GiB)", len);
    size_t bad, v = tok_utf8_valid_prefix(text, len, &bad);
    if (v < len && !opts->replace_invalid)
        return assay_fail(err, ASSAY_EINVAL, "invalid UTF-8 at byte %zu", v);
    if (chunk == 0)
        chunk = CHUNK_DEFAULT;
    size_t   start_n = out->n, first_idx = start_n;
    tok_work w;
    memset(&w, 0, sizeof w);
    w.want_offsets = want_offsets;
    w.out          = out;
    enc_ctx c      = {t, &w, opts, err, 0, {0, 0, 0, -1, 0}, 0, 0, 0};
    int     rc     = 0;
    if (opts->add_special && t->has_post)
        for (size_t i = 0; i < t->n_post_pre && !rc; i++)
            rc = tok_ids_push(out, t->post_pre[i], 0, 0, want_offsets);
    if (rc) {
        rc = assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    if (t->post_trim && out->offsets)
        trim_offsets(t, out, start_n, out->n, first_idx, 0);
    size_t pos = 0;
    do {
        size_t end = len;
        if (t->chunk_mode != TOK_CHUNK_NONE && len - pos > chunk)
            end = chunk_find_cut(t, text, len, pos + chunk);
        c.continues = pos > 0 && c.tail_text;
        c.tail_text = 0;
        if ((rc = encode_piece(&c, text + pos, end - pos, pos, first_idx)))
            goto done;
        if (sink && end < len && out->n > start_n) {
            if ((rc = sink(sctx, out)))
                goto done;
            out->n    = start_n;
            first_idx = SIZE_MAX;
        }
        pos = end;
    } while (pos < len);
    size_t suf = out->n;
    if (opts->add_special && t->has_post)
        for (size_t i = 0; i < t->n_post_suf && !rc; i++)
            rc = tok_ids_push(out, t->post_suf[i], 0, 0, want_offsets);
    if (rc) {
        rc = assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        goto done;
    }
    if (t->post_trim && out->offsets)
        trim_offsets(t, out, suf, out->n, first_idx, 0);
    if (sink && out->n > start_n)
        rc = sink(sctx, out);
done:
    if (rc || sink)
        out->n = start_n;
    work_free(&w);
    return rc;
}

int tok_encode(const tokenizer *t, const char *text, size_t len, const tok_encode_opts *opts,
               int want_offsets, tok_ids *out, assay_error *err) {
    return encode_run(t, text, len, opts, want_offsets, 0, out, NULL, NULL, err);
}

int tok_encode_chunked(const tokenizer *t, const char *text, size_t len,
                       const tok_encode_opts *opts, int want_offsets, size_t chunk, tok_ids *out,
                       assay_error *err) {
    return encode_run(t, text, len, opts, want_offsets, chunk, out, NULL, NULL, err);
}

int tok_encode_stream(const tokenizer *t, const char *text, size_t len, const tok_encode_opts *opts,
                      int want_offsets, tok_sink_fn sink, void *ctx, assay_error *err) {
    if (!sink)
        return assay_fail(err, ASSAY_EINVAL, "tok_encode_stream: NULL sink");
    tok_ids part = {0};
    int     rc   = encode_run(t, text, len, opts, want_offsets, 0, &part, sink, ctx, err);
    tok_ids_free(&part);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------- */

/* A list of strings in one arena. */
typedef struct slist {
    char   *buf;
    size_t  len, cap;
    size_t *off; /* n + 1 offsets */
    size_t  n, ocap;
} slist;

static int sl_begin(slist *l) {
    /* buf is never NULL once a string is begun, so SL_STR is always a valid pointer */
    if (tok_grow((void **)&l->off, &l->ocap, l->n + 2, sizeof *l->off) ||
        tok_grow((void **)&l->buf, &l->cap, l->len + 1, 1))
        return -1;
    if (l->n == 0)
        l->off[0] = l->len;
    return 0;
}

static int sl_app(slist *l, const char *s, size_t n) {
    if (n == 0)
        return 0;
    if (tok_grow((void **)&l->buf, &l->cap, l->len + n + 1, 1))
        return -1;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

static int sl_end(slist *l) {
    if (tok_grow((void **)&l->off, &l->ocap, l->n + 2, sizeof *l->off))
        return -1;
    l->off[++l->n] = l->len;
    return 0;
}

static int sl_push(slist *l, const char *s, size_t n) {
    return sl_begin(l) || sl_app(l, s, n) || sl_end(l);
}

static void sl_reset(slist *l) {
    l->len = 0;
    l->n   = 0;
}

#define SL_STR(l, i) ((l)->buf + (l)->off[i])
#define SL_LEN(l, i) ((l)->off[(i) + 1] - (l)->off[i])

/* Appends s with invalid UTF-8 replaced (Rust from_utf8_lossy). */
static int sl_app_lossy(slist *l, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t bad, v = tok_utf8_valid_prefix(s + i, n - i, &bad);
        if (sl_app(l, s + i, v))
            return -1;
        i += v;
        if (bad) {
            if (sl_app(l, "\xEF\xBF\xBD", 3))
                return -1;
            i += bad;
        }
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int dec_step(const tok_dec *d, slist *in, slist *out) {
    sl_reset(out);
    switch (d->type) {
    case DEC_BYTELEVEL: {
        int32_t b2c[256];
        int16_t c2b[512];
        tok_bytelevel_tables(b2c);
        memset(c2b, 0xff, sizeof c2b);
        for (int b = 0; b < 256; b++)
            c2b[b2c[b]] = (int16_t)b;
        slist raw = {0};
        int   rc  = 0;
        for (size_t i = 0; i < in->n && !rc; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i), k = 0, start = raw.len;
            while (k < n) {
                size_t  adv;
                int32_t ch = tok_utf8_decode(s + k, n - k, &adv);
                if (ch < 0 || ch >= 512 || c2b[ch] < 0)
                    break;
                char byte = (char)c2b[ch];
                if ((rc = sl_app(&raw, &byte, 1)))
                    break;
                k += adv;
            }
            if (!rc && k < n) { /* not all chars map: the token's own bytes */
                raw.len = start;
                rc      = sl_app(&raw, s, n);
            }
        }
        if (!rc)
            rc = sl_begin(out) || sl_app_lossy(out, raw.buf ? raw.buf : "", raw.len) || sl_end(out);
        free(raw.buf);
        free(raw.off);
        return rc;
    }
    case DEC_FUSE:
        if (sl_begin(out))
            return -1;
        for (size_t i = 0; i < in->n; i++)
            if (sl_app(out, SL_STR(in, i), SL_LEN(in, i)))
                return -1;
        return sl_end(out);
    case DEC_BYTEFALLBACK: {
        size_t i = 0;
        while (i < in->n) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i);
            if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 &&
                hexval(s[4]) >= 0) {
                size_t j = i;
                char   bytes[256];
                size_t nb = 0;
                if (sl_begin(out))
                    return -1;
                size_t mark = out->len;
                /* collect the run of byte tokens */
                while (j < in->n && SL_LEN(in, j) == 6 && !memcmp(SL_STR(in, j), "<0x", 3) &&
                       SL_STR(in, j)[5] == '>' && hexval(SL_STR(in, j)[3]) >= 0 &&
                       hexval(SL_STR(in, j)[4]) >= 0) {
                    bytes[nb++] = (char)(hexval(SL_STR(in, j)[3]) * 16 + hexval(SL_STR(in, j)[4]));
                    if (nb == sizeof bytes) {
                        if (sl_app(out, bytes, nb))
                            return -1;
                        nb = 0;
                    }
                    j++;
                }
                if (sl_app(out, bytes, nb))
                    return -1;
                size_t blen = out->len - mark, bad;
                if (tok_utf8_valid_prefix(out->buf + mark, blen, &bad) == blen) {
                    if (sl_end(out))
                        return -1;
                } else { /* one U+FFFD token per byte */
                    out->len = mark;
                    for (size_t k = 0; k < j - i; k++) {
                        if (k && sl_begin(out))
                            return -1;
                        if (sl_app(out, "\xEF\xBF\xBD", 3) || sl_end(out))
                            return -1;
                    }
                }
                i = j;
                continue;
            }
            if (sl_push(out, s, n))
                return -1;
            i++;
        }
        return 0;
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i), pos = 0;
            if (sl_begin(out))
                return -1;
            while (pos < n) {
                size_t ms = 0, me = 0;
                int    found = 0;
                if (d->pat.is_regex) {
                    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
                    if (!md)
                        return -1;
                    int rc = pcre2_match(d->pat.re, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
                    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) { /* a limit: see tok_decode */
                        pcre2_match_data_free(md);
                        return rc;
                    }
                    if (rc > 0) {
                        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                        ms             = ov[0];
                        me             = ov[1];
                        found          = me > ms;
                    }
                    pcre2_match_data_free(md);
                } else if (d->pat.len) {
                    const char *f = memmem(s + pos, n - pos, d->pat.str, d->pat.len);
                    if (f) {
                        found = 1;
                        ms    = (size_t)(f - s);
                        me    = ms + d->pat.len;
                    }
                }
                if (!found) {
                    if (sl_app(out, s + pos, n - pos))
                        return -1;
                    break;
                }
                if (sl_app(out, s + pos, ms - pos) || sl_app(out, d->str, d->len))
                    return -1;
                pos = me;
            }
            if (sl_end(out))
                return -1;
        }
        return 0;
    case DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i), a = 0, b = n;
            for (int k = 0; k < d->start && a + d->len <= b && !memcmp(s + a, d->str, d->len); k++)
                a += d->len;
            for (int k = 0;
                 k < d->stop && b >= a + d->len && !memcmp(s + b - d->len, d->str, d->len); k++)
                b -= d->len;
            if (sl_push(out, s + a, b - a))
                return -1;
        }
        return 0;
    case DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i), k = 0;
            if (sl_begin(out))
                return -1;
            while (k < n) {
                if (k + d->repl_len <= n && !memcmp(s + k, d->repl, d->repl_len)) {
                    if (!(i == 0 && d->prepend_scheme != PREPEND_NEVER) && sl_app(out, " ", 1))
                        return -1;
                    k += d->repl_len;
                    continue;
                }
                if (sl_app(out, s + k, 1))
                    return -1;
                k++;
            }
            if (sl_end(out))
                return -1;
        }
        return 0;
    case DEC_BPE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i), k = 0;
            const char *rep = i + 1 == in->n ? "" : " ";
            if (sl_begin(out))
                return -1;
            while (k < n) {
                if (d->len && k + d->len <= n && !memcmp(s + k, d->str, d->len)) {
                    if (sl_app(out, rep, strlen(rep)))
                        return -1;
                    k += d->len;
                    continue;
                }
                if (sl_app(out, s + k, 1))
                    return -1;
                k++;
            }
            if (sl_end(out))
                return -1;
        }
        return 0;
    case DEC_WORDPIECE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = SL_STR(in, i);
            size_t      n = SL_LEN(in, i);
            if (sl_begin(out))
                return -1;
            if (i != 0) {
                if (n >= d->len && !memcmp(s, d->str, d->len)) {
                    s += d->len;
                    n -= d->len;
                } else if (sl_app(out, " ", 1))
                    return -1;
            }
            if (sl_app(out, s, n) || sl_end(out))
                return -1;
            if (d->cleanup) {
                static const char *from[] = {" .",  " ?",      " !",  " ,",   " ' ", " n't",
                                             " 'm", " do not", " 's", " 've", " 're"};
                static const char *to[]   = {".",  "?",      "!",  ",",   "'",  "n't",
                                             "'m", " don't", "'s", "'ve", "'re"};
                size_t             st = out->off[out->n - 1], en = out->len;
                char              *tmp = xstrndup(out->buf + st, en - st);
                if (!tmp)
                    return -1;
                for (size_t r = 0; r < sizeof from / sizeof *from; r++) {
                    size_t fl = strlen(from[r]), tl = strlen(to[r]);
                    char  *p;
                    while ((p = strstr(tmp, from[r]))) {
                        memmove(p + tl, p + fl, strlen(p + fl) + 1);
                        memcpy(p, to[r], tl);
                    }
                }
                out->len = st;
                int rc   = sl_app(out, tmp, strlen(tmp));
                free(tmp);
                if (rc)
                    return -1;
                out->off[out->n] = out->len;
            }
        }
        return 0;
    }
    return -1;
}

/* Returns 0, -1 out of memory, or a PCRE2 error of the regex of *failed. */
static int dec_run(const tok_dec *d, slist *a, slist *b, slist **cur, const tok_dec **failed) {
    if (d->type == DEC_SEQ) {
        for (size_t i = 0; i < d->nkids; i++) {
            int rc = dec_run(&d->kids[i], a, b, cur, failed);
            if (rc)
                return rc;
        }
        return 0;
    }
    slist *in = *cur, *out = in == a ? b : a;
    int    rc = dec_step(d, in, out);
    if (rc) {
        *failed = d;
        return rc;
    }
    *cur = out;
    return 0;
}

int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
               size_t *out_len, assay_error *err) {
    slist a = {0}, b = {0}, *cur = &a;
    int   rc = 0;
    *out     = NULL;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->piece[id]) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "decode: id %d at position %zu is not in the vocab (size %d)", id, i,
                            t->n_ids);
            goto done;
        }
        if (skip_special && t->is_special[id])
            continue;
        if (sl_push(&a, t->piece[id], t->piece_len[id]))
            goto nomem;
    }
    const tok_dec *failed = NULL;
    int            drc    = t->dec ? dec_run(t->dec, &a, &b, &cur, &failed) : 0;
    if (drc < -1) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(drc, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "PCRE2 error %d", drc);
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: decoder regex '%.300s' failed on this input: %s",
                        t->path ? t->path : "tokenizer", failed->pat.src ? failed->pat.src : "?",
                        (const char *)msg);
        goto done;
    }
    if (drc)
        goto nomem;
    {
        size_t total = 0;
        for (size_t i = 0; i < cur->n; i++)
            total += SL_LEN(cur, i) + 1;
        char *r = malloc(total + 1), *p = r;
        if (!r)
            goto nomem;
        for (size_t i = 0; i < cur->n; i++) {
            if (i && !t->dec)
                *p++ = ' ';
            memcpy(p, SL_STR(cur, i), SL_LEN(cur, i));
            p += SL_LEN(cur, i);
        }
        *p   = 0;
        *out = r;
        if (out_len)
            *out_len = (size_t)(p - r);
    }
    goto done;
nomem:
    rc = assay_fail(err, ASSAY_ENOMEM, "decode: out of memory");
done:
    free(a.buf);
    free(a.off);
    free(b.buf);
    free(b.off);
    return rc;
}

/* ---- accessors ------------------------------------------------------------------------------ */

int tok_vocab_size(const tokenizer *t) { return t->n_ids; }

const char *tok_id_to_piece(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->piece[id] : NULL;
}

int32_t tok_piece_to_id(const tokenizer *t, const char *piece) {
    size_t  n = strlen(piece);
    int32_t k = tok_smap_get(&t->added_map, piece, n);
    if (k >= 0)
        return t->added[k].id;
    return tok_smap_get(&t->vocab, piece, n);
}

int32_t tok_bos_id(const tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tokenizer *t) { return t->eos_id; }

int tok_add_bos(const tokenizer *t) { return t->n_post_pre > 0; }

int tok_is_special(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && t->is_special[id];
}

const char *tok_kind(const tokenizer *t) { return t->kind; }
const char *tok_chunking(const tokenizer *t) {
    return t->chunk_mode == TOK_CHUNK_NONE ? (t->chunk_why ? t->chunk_why : "unknown") : NULL;
}
int     tok_has_chat_template(const tokenizer *t) { return t->chat_template; }
int64_t tok_model_max_length(const tokenizer *t) { return t->max_len; }
