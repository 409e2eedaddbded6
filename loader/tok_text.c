/* loader/tok_text.c — text stages of encoding: UTF-8 helpers, regex compilation, added-token
 * matching, normalizers (with byte alignments back to the input) and pre-tokenizers. Each stage
 * mirrors the corresponding HF `tokenizers` component; comments name the HF behaviour copied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "loader/tok_internal.h"

/* ---- UTF-8 ------------------------------------------------------------------------------- */

size_t tok_utf8_len(unsigned char c) {
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        return 2;
    if ((c & 0xF0) == 0xE0)
        return 3;
    if ((c & 0xF8) == 0xF0)
        return 4;
    return 1;
}

int32_t tok_utf8_decode(const char *s, size_t n, size_t *adv) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) {
        *adv = 0;
        return -1;
    }
    if (u[0] < 0x80) {
        *adv = 1;
        return u[0];
    }
    utf8proc_int32_t c;
    utf8proc_ssize_t r = utf8proc_iterate(u, (utf8proc_ssize_t)(n < 4 ? n : 4), &c);
    if (r <= 0) {
        *adv = 1;
        return -1;
    }
    *adv = (size_t)r;
    return c;
}

size_t tok_utf8_encode(int32_t c, char *out) {
    return (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)out);
}

/* Length of the valid UTF-8 prefix of s. When it stops short, *bad_len is the length of the
 * invalid sequence there, as Rust's from_utf8_lossy measures it (the maximal prefix of a valid
 * sequence, at least 1), so each such run becomes one U+FFFD. */
size_t tok_utf8_valid_prefix(const char *s, size_t n, size_t *bad_len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t               i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t        need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            *bad_len = 1;
            return i;
        }
        size_t k = 1;
        for (; k <= need; k++) {
            if (i + k >= n) {
                *bad_len = k;
                return i;
            }
            unsigned char d = u[i + k];
            unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (d < l || d > h) {
                *bad_len = k;
                return i;
            }
        }
        i += need + 1;
    }
    *bad_len = 0;
    return n;
}

int tok_is_whitespace(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

int tok_is_word_char(int32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC: return 1;
    default: return 0;
    }
}

static int is_numeric(int32_t c) { /* Rust char::is_numeric: Nd, Nl, No */
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static int is_punct(int32_t c) { /* HF is_punc: ASCII punctuation or a P* category */
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

void tok_bytelevel_tables(int32_t byte_to_cp[256]) {
    /* GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + k. */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = keep ? b : 256 + n++;
    }
}

/* ---- regex ---------------------------------------------------------------------------------- */

/* Oniguruma's Unicode \s is White_Space and \w is Letter|Mark|Decimal_Number|Connector_Punct;
 * PCRE2 10.42's UCP classes differ slightly (\w lacks marks, \s adds U+180E), so rewrite them. */
#define WS_CLASS                                                                                   \
    "\\t\\n\\x0B\\f\\r\\x20\\x85\\xA0\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{"  \
    "205F}\\x{3000}"
/* HF's Oniguruma knows Unicode 16; PCRE2 10.42 knows 14. The letters and numbers added since
 * (found by asking HF's pre-tokenizer about every char the newer tables class as L or N) are
 * appended to \p{L} and \p{N}. */
#define UNI_L_ADD                                                                                  \
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-"    \
    "\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{"     \
    "11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{" \
    "11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}"    \
    "\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{"      \
    "1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}"   \
    "\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define UNI_N_ADD                                                                                  \
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{"     \
    "16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-"  \
    "\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"
#define W_CLASS "\\p{L}\\p{M}\\p{Nd}\\p{Pc}" UNI_L_ADD

pcre2_code *tok_regex_compile(const char *pat, size_t len, char *msg, size_t msgcap) {
    size_t cap = len * 4 + 64, n = 0;
    char  *buf = malloc(cap);
    if (!buf) {
        snprintf(msg, msgcap, "out of memory");
        return NULL;
    }
    int in_class = 0;
#define PUT(str)                                                                                   \
    do {                                                                                           \
        size_t l_ = strlen(str);                                                                   \
        if (n + l_ + 8 > cap) {                                                                    \
            char *nb_ = realloc(buf, (cap = (cap + l_) * 2));                                      \
            if (!nb_) {                                                                            \
                free(buf);                                                                         \
                snprintf(msg, msgcap, "out of memory");                                            \
                return NULL;                                                                       \
            }                                                                                      \
            buf = nb_;                                                                             \
        }                                                                                          \
        memcpy(buf + n, str, l_);                                                                  \
        n += l_;                                                                                   \
    } while (0)
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char d = pat[i + 1];
            if (d == 's')
                PUT(in_class ? WS_CLASS : "[" WS_CLASS "]");
            else if (d == 'S' && !in_class)
                PUT("[^" WS_CLASS "]");
            else if (d == 'w')
                PUT(in_class ? W_CLASS : "[" W_CLASS "]");
            else if (d == 'W' && !in_class)
                PUT("[^" W_CLASS "]");
            else if (d == 'p' && i + 4 < len && pat[i + 2] == '{' && pat[i + 4] == '}' &&
                     (pat[i + 3] == 'L' || pat[i + 3] == 'N')) {
                const char *add = pat[i + 3] == 'L' ? "\\p{L}" UNI_L_ADD : "\\p{N}" UNI_N_ADD;
                if (!in_class)
                    PUT("[");
                PUT(add);
                if (!in_class)
                    PUT("]");
                i += 4;
                continue;
            } else {
                char two[3] = {c, d, 0};
                PUT(two);
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class    = 1;
            char one[2] = {c, 0};
            PUT(one);
            /* a ']' right after '[' or '[^' is literal */
            if (i + 1 < len && pat[i + 1] == '^') {
                PUT("^");
                i++;
            }
            if (i + 1 < len && pat[i + 1] == ']') {
                PUT("]");
                i++;
            }
            continue;
        }
        if (in_class && c == '[' && i + 1 < len && pat[i + 1] == ':') {
            const char *e = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (pat[j] == ':' && pat[j + 1] == ']') {
                    e = pat + j;
                    break;
                }
            if (e) {
                size_t l   = (size_t)(e - (pat + i)) + 2;
                char  *tmp = malloc(l + 1);
                if (!tmp) {
                    free(buf);
                    snprintf(msg, msgcap, "out of memory");
                    return NULL;
                }
                memcpy(tmp, pat + i, l);
                tmp[l] = 0;
                PUT(tmp);
                free(tmp);
                i += l - 1;
                continue;
            }
        }
        if (in_class && c == ']')
            in_class = 0;
        char one[2] = {c, 0};
        if (c == 0) {
            PUT("\\x00");
            continue;
        }
        PUT(one);
    }
#undef PUT
    int         ec;
    PCRE2_SIZE  eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)buf, n, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    free(buf);
    if (!re) {
        /* a rewritten pattern fails where the original does: compile the original for the
         * message so the offset refers to the text in tokenizer.json */
        pcre2_code *orig =
            pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (orig) {
            pcre2_code_free(orig);
            snprintf(msg, msgcap, "pattern does not compile after class rewriting");
            return NULL;
        }
        PCRE2_UCHAR m[256];
        pcre2_get_error_message(ec, m, sizeof m);
        snprintf(msg, msgcap, "%s at offset %zu", (const char *)m, (size_t)eo);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if unavailable */
    return re;
}

/* Finds the next match of re in s[0..n) from `start`, handling a small JIT stack by retrying with
 * a large one. Returns 1 and sets *ms, *me; 0 no match; -1 error. */
static int regex_next(tok_work *w, const tok_pattern *pat, const char *s, size_t n, size_t start,
                      size_t *ms, size_t *me) {
    const pcre2_code *re = pat->re;
    if (!w->md) {
        w->md = pcre2_match_data_create(32, NULL);
        if (!w->md)
            return -1;
    }
    for (;;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, w->md, w->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !w->jit) {
            w->jit  = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
            w->mctx = pcre2_match_context_create(NULL);
            if (!w->jit || !w->mctx)
                return -1;
            pcre2_jit_stack_assign(w->mctx, NULL, w->jit);
            continue;
        }
        if (rc < 0) {
            w->re_failed = pat;
            w->re_rc     = rc;
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        *ms            = ov[0];
        *me            = ov[1];
        return 1;
    }
}

/* ---- splits and alignments ------------------------------------------------------------------ */

static const char *split_ptr(const tok_work *w, const tok_split *sp) {
    return sp->in_arena ? w->arena + sp->off : w->text + sp->off;
}

static size_t split_orig_start(const tok_work *w, const tok_split *sp) {
    if (!sp->in_arena)
        return sp->orig;
    return sp->len ? w->al[2 * sp->off] : 0;
}

void tok_split_offsets(const tok_work *w, const tok_split *sp, size_t s, size_t e, int32_t *os,
                       int32_t *oe) {
    if (e > sp->len)
        e = sp->len;
    if (s > e)
        s = e;
    if (!sp->in_arena) {
        /* a byte-level token holding part of a char reports the whole char, as HF does */
        const unsigned char *p = (const unsigned char *)w->text + sp->off;
        while (s > 0 && (p[s] & 0xC0) == 0x80)
            s--;
        while (e < sp->len && (p[e] & 0xC0) == 0x80)
            e++;
        *os = (int32_t)(sp->orig + s);
        *oe = (int32_t)(sp->orig + e);
        return;
    }
    if (sp->len == 0) {
        *os = *oe = 0;
        return;
    }
    if (s == e) {
        size_t k = s < sp->len ? s : sp->len - 1;
        *os = *oe = (int32_t)w->al[2 * (sp->off + k)];
        return;
    }
    *os = (int32_t)w->al[2 * (sp->off + s)];
    *oe = (int32_t)w->al[2 * (sp->off + e - 1) + 1];
}

static int push_split(tok_split **v, size_t *n, size_t *cap, tok_split s) {
    if (tok_grow((void **)v, cap, *n + 1, sizeof **v))
        return -1;
    (*v)[(*n)++] = s;
    return 0;
}

static tok_split sub_split(const tok_split *sp, size_t s, size_t e) {
    tok_split r = *sp;
    r.off       = sp->off + s;
    r.len       = e - s;
    if (!sp->in_arena)
        r.orig = sp->orig + s;
    return r;
}

/* Reserves arena space for `n` more bytes (with alignments); returns the start offset. */
static int arena_reserve(tok_work *w, size_t n) {
    if (tok_grow((void **)&w->arena, &w->acap, w->alen + n + 1, 1))
        return -1;
    size_t need = 2 * (w->alen + n + 1);
    if (tok_grow((void **)&w->al, &w->alcap, need, sizeof *w->al))
        return -1;
    return 0;
}

/* Alignment of byte k of a split (char-granular in arena splits, byte-granular otherwise). */
static void split_align(const tok_work *w, const tok_split *sp, size_t k, uint32_t *a,
                        uint32_t *b) {
    if (sp->in_arena) {
        *a = w->al[2 * (sp->off + k)];
        *b = w->al[2 * (sp->off + k) + 1];
    } else {
        /* the whole char containing byte k */
        const char *p  = w->text + sp->off;
        size_t      cs = k;
        while (cs > 0 && ((unsigned char)p[cs] & 0xC0) == 0x80)
            cs--;
        size_t cl = tok_utf8_len((unsigned char)p[cs]);
        *a        = (uint32_t)(sp->orig + cs);
        *b        = (uint32_t)(sp->orig + cs + cl);
    }
}

/* ---- added tokens (HF AddedVocabulary::find_matches) ---------------------------------------- */

static int ends_with_word(const char *s, size_t n) {
    if (n == 0)
        return 0;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    size_t  adv;
    int32_t c = tok_utf8_decode(s + k, n - k, &adv);
    return c >= 0 && tok_is_word_char(c);
}

static int starts_with_word(const char *s, size_t n) {
    size_t  adv;
    int32_t c = tok_utf8_decode(s, n, &adv);
    return n && c >= 0 && tok_is_word_char(c);
}

int tok_trie_split(const tokenizer *t, const tok_trie *tr, const char *s, size_t n,
                   int split_special, tok_emit_fn emit_fn, void *ctx) {
    size_t start_offset = 0, i = 0;
    if (!tr->empty) {
        while (i < n) {
            if (!tr->first[(unsigned char)s[i]]) {
                i++;
                continue;
            }
            int32_t node = 0, best = -1;
            size_t  best_end = 0;
            for (size_t j = i; j < n; j++) {
                int32_t child;
                if (!tok_pmap_get(&tr->edges, ((uint64_t)(uint32_t)node << 8) | (unsigned char)s[j],
                                  NULL, &child))
                    break;
                node = child;
                if (tr->term[node] >= 0) {
                    best     = tr->term[node];
                    best_end = j + 1;
                }
            }
            if (best < 0) {
                i++;
                continue;
            }
            const tok_added *a  = &t->added[best];
            size_t           ms = i, me = best_end;
            i = best_end; /* the matcher resumes after this match, used or not */
            if (!split_special && a->special)
                continue;
            if (a->single_word) {
                int start_space = ms == 0 || !ends_with_word(s, ms);
                int stop_space  = me == n || !starts_with_word(s + me, n - me);
                if (!start_space || !stop_space)
                    continue;
            }
            if (a->lstrip) {
                size_t k = ms;
                while (k > 0) {
                    size_t p = k - 1;
                    while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80)
                        p--;
                    size_t  adv;
                    int32_t c = tok_utf8_decode(s + p, k - p, &adv);
                    if (!tok_is_whitespace(c))
                        break;
                    k = p;
                }
                ms = k > start_offset ? k : start_offset;
            }
            if (a->rstrip) {
                while (me < n) {
                    size_t  adv;
                    int32_t c = tok_utf8_decode(s + me, n - me, &adv);
                    if (!tok_is_whitespace(c))
                        break;
                    me += adv;
                }
            }
            if (start_offset < ms && emit_fn(ctx, -1, start_offset, ms))
                return -1;
            if (emit_fn(ctx, a->id, ms, me))
                return -1;
            start_offset = me;
        }
    }
    if (start_offset < n || n == 0)
        if (emit_fn(ctx, -1, start_offset, n))
            return -1;
    return 0;
}

/* ---- normalizers ----------------------------------------------------------------------------- */

typedef struct nbuf {
    char     *s;
    uint32_t *al;
    size_t    n;
} nbuf;

/* Makes room for `n` bytes in ping-pong buffer k. */
static int nb_reserve(tok_work *w, int k, size_t n) {
    if (tok_grow((void **)&w->nb[k], &w->nbcap[k], n + 1, 1))
        return -1;
    if (tok_grow((void **)&w->nal[k], &w->nalcap[k], 2 * (n + 1), sizeof(uint32_t)))
        return -1;
    return 0;
}

typedef struct nout {
    tok_work *w;
    int       k;
    size_t    n;
} nout;

static int nout_put(nout *o, const char *s, size_t n, uint32_t a, uint32_t b) {
    if (nb_reserve(o->w, o->k, o->n + n))
        return -1;
    memcpy(o->w->nb[o->k] + o->n, s, n);
    for (size_t i = 0; i < n; i++) {
        o->w->nal[o->k][2 * (o->n + i)]     = a;
        o->w->nal[o->k][2 * (o->n + i) + 1] = b;
    }
    o->n += n;
    return 0;
}

/* Copies bytes with their existing alignments. */
static int nout_copy(nout *o, const char *s, const uint32_t *al, size_t n) {
    if (nb_reserve(o->w, o->k, o->n + n))
        return -1;
    memcpy(o->w->nb[o->k] + o->n, s, n);
    memcpy(o->w->nal[o->k] + 2 * o->n, al, 2 * n * sizeof *al);
    o->n += n;
    return 0;
}

static int norm_unicode(const tok_norm *nm, const nbuf *in, nout *o) {
    utf8proc_option_t opt = UTF8PROC_STABLE;
    switch (nm->type) {
    case NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
    case NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
    case NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    size_t i = 0;
    while (i < in->n) {
        /* A segment is an ASCII char (or the start) followed by non-ASCII chars: no
         * normalization form moves or composes anything across an ASCII char. */
        size_t j = i + tok_utf8_len((unsigned char)in->s[i]);
        if ((unsigned char)in->s[i] < 0x80 && (j >= in->n || (unsigned char)in->s[j] < 0x80)) {
            if (nout_copy(o, in->s + i, in->al + 2 * i, 1))
                return -1;
            i++;
            continue;
        }
        while (j < in->n && (unsigned char)in->s[j] >= 0x80)
            j++;
        if (j > in->n)
            j = in->n;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t  r =
            utf8proc_map((const utf8proc_uint8_t *)in->s + i, (utf8proc_ssize_t)(j - i), &dst, opt);
        if (r < 0) { /* cannot happen on valid UTF-8; keep the text as it is */
            free(dst);
            if (nout_copy(o, in->s + i, in->al + 2 * i, j - i))
                return -1;
            i = j;
            continue;
        }
        size_t dn = (size_t)r;
        if (dn == j - i && memcmp(dst, in->s + i, dn) == 0) {
            free(dst);
            if (nout_copy(o, in->s + i, in->al + 2 * i, dn))
                return -1;
            i = j;
            continue;
        }
        /* changed: HF aligns each output char to the input char where its decomposition starts
         * (a composed char to its base, the pieces of a decomposed char to that char); found by
         * walking both sides' full decompositions, whose lengths agree. */
        utf8proc_option_t dopt = (opt & UTF8PROC_COMPAT) | UTF8PROC_DECOMPOSE;
        size_t            pi = i, in_pos = 0, in_next = 0, out_pos = 0;
        for (size_t p = 0; p < dn;) {
            size_t l = tok_utf8_len(dst[p]), adv;
            if (p + l > dn)
                l = dn - p;
            int32_t oc = tok_utf8_decode((const char *)dst + p, dn - p, &adv);
            /* advance the input char whose decomposition covers out_pos */
            while (pi < j) {
                size_t  il = tok_utf8_len((unsigned char)in->s[pi]), a2;
                int32_t ic = tok_utf8_decode(in->s + pi, j - pi, &a2);
                if (in_next == in_pos) {
                    utf8proc_int32_t tmp[32];
                    int              bc = 0;
                    utf8proc_ssize_t k =
                        ic < 0 ? 1 : utf8proc_decompose_char(ic, tmp, 32, dopt, &bc);
                    in_next = in_pos + (size_t)(k > 0 ? k : 1);
                }
                if (out_pos < in_next || pi + il >= j)
                    break;
                in_pos = in_next;
                pi += il;
            }
            size_t il = tok_utf8_len((unsigned char)in->s[pi]);
            if (pi + il > j)
                il = j - pi;
            uint32_t a = in->al[2 * pi], b = in->al[2 * (pi + il - 1) + 1];
            if (nout_put(o, (const char *)dst + p, l, a, b)) {
                free(dst);
                return -1;
            }
            utf8proc_int32_t tmp[32];
            int              bc = 0;
            utf8proc_ssize_t k  = oc < 0 ? 1 : utf8proc_decompose_char(oc, tmp, 32, dopt, &bc);
            out_pos += (size_t)(k > 0 ? k : 1);
            p += l;
        }
        free(dst);
        i = j;
    }
    return 0;
}

static int norm_replace_emit(tok_work *w, const tok_norm *nm, const nbuf *in, nout *o) {
    size_t pos = 0;
    while (pos <= in->n) {
        size_t ms, me;
        int    found;
        if (nm->pat.is_regex) {
            found = regex_next(w, &nm->pat, in->s, in->n, pos, &ms, &me);
            if (found < 0)
                return -1;
            while (found && ms == me) { /* skip empty matches */
                if (me >= in->n) {
                    found = 0;
                    break;
                }
                found = regex_next(w, &nm->pat, in->s, in->n,
                                   me + tok_utf8_len((unsigned char)in->s[me]), &ms, &me);
                if (found < 0)
                    return -1;
            }
        } else {
            found = 0;
            if (nm->pat.len && in->n >= nm->pat.len) {
                const char *f = memmem(in->s + pos, in->n - pos, nm->pat.str, nm->pat.len);
                if (f) {
                    found = 1;
                    ms    = (size_t)(f - in->s);
                    me    = ms + nm->pat.len;
                }
            }
        }
        if (!found) {
            if (nout_copy(o, in->s + pos, in->al + 2 * pos, in->n - pos))
                return -1;
            break;
        }
        if (nout_copy(o, in->s + pos, in->al + 2 * pos, ms - pos))
            return -1;
        /* HF aligns the whole replacement to the last replaced char */
        if (nout_put(o, nm->str, nm->len, in->al[2 * (me - 1)], in->al[2 * (me - 1) + 1]))
            return -1;
        pos = me;
        if (pos == in->n)
            break;
    }
    return 0;
}

/* The active length of each ping-pong buffer lives here (kept out of tok_work for clarity). */
typedef struct nstate {
    tok_work *w;
    int       cur;
    size_t    n;
} nstate;

static int norm_run(const tok_norm *nm, nstate *st);

static int norm_one(const tok_norm *nm, nstate *st) {
    tok_work *w  = st->w;
    int       k  = st->cur;
    nbuf      in = {w->nb[k], w->nal[k], st->n};
    nout      o  = {w, 1 - k, 0};
    if (nb_reserve(w, 1 - k, in.n))
        return -1;
    switch (nm->type) {
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD:
        if (norm_unicode(nm, &in, &o))
            return -1;
        break;
    case NORM_LOWER:
    case NORM_STRIP_ACCENTS: {
        for (size_t i = 0; i < in.n;) {
            size_t  adv;
            int32_t c = tok_utf8_decode(in.s + i, in.n - i, &adv);
            char    tmp[16];
            size_t  tl = 0;
            if (nm->type == NORM_LOWER) {
                if (c == 0x130) { /* Rust's full lowercase of U+0130: i + combining dot */
                    tl = tok_utf8_encode('i', tmp);
                    tl += tok_utf8_encode(0x307, tmp + tl);
                } else
                    tl = tok_utf8_encode(c < 0 ? 0xFFFD : utf8proc_tolower(c), tmp);
            } else if (c < 0 || utf8proc_category(c) != UTF8PROC_CATEGORY_MN) {
                memcpy(tmp, in.s + i, adv);
                tl = adv;
            }
            if (tl && nout_put(&o, tmp, tl, in.al[2 * i], in.al[2 * (i + adv - 1) + 1]))
                return -1;
            i += adv;
        }
        break;
    }
    case NORM_STRIP: {
        size_t a = 0, b = in.n;
        if (nm->left)
            while (a < b) {
                size_t  adv;
                int32_t c = tok_utf8_decode(in.s + a, b - a, &adv);
                if (!tok_is_whitespace(c))
                    break;
                a += adv;
            }
        if (nm->right)
            while (b > a) {
                size_t p = b - 1;
                while (p > a && ((unsigned char)in.s[p] & 0xC0) == 0x80)
                    p--;
                size_t  adv;
                int32_t c = tok_utf8_decode(in.s + p, b - p, &adv);
                if (!tok_is_whitespace(c))
                    break;
                b = p;
            }
        if (nout_copy(&o, in.s + a, in.al + 2 * a, b - a))
            return -1;
        break;
    }
    case NORM_PREPEND:
        if (in.n && w->no_prepend) { /* a chunk continuing a stretch: HF prepends once */
            if (nout_copy(&o, in.s, in.al, in.n))
                return -1;
        } else if (in.n) {
            size_t l = tok_utf8_len((unsigned char)in.s[0]);
            if (l > in.n)
                l = in.n;
            if (nout_put(&o, nm->str, nm->len, in.al[0], in.al[2 * (l - 1) + 1]) ||
                nout_copy(&o, in.s, in.al, in.n))
                return -1;
        }
        break;
    case NORM_REPLACE:
        if (norm_replace_emit(w, nm, &in, &o))
            return -1;
        break;
    default: return -1;
    }
    st->cur = 1 - k;
    st->n   = o.n;
    return 0;
}

static int norm_run(const tok_norm *nm, nstate *st) {
    if (nm->type == NORM_SEQ) {
        for (size_t i = 0; i < nm->nkids; i++)
            if (norm_run(&nm->kids[i], st))
                return -1;
        return 0;
    }
    return norm_one(nm, st);
}

/* A failed normalizer or pre-tokenizer: a regex that hit a PCRE2 limit (match or depth limit)
 * is named with the tokenizer file, since the text alone does not say what went wrong. */
static int stage_fail(const tokenizer *t, tok_work *w, const char *stage, assay_error *err) {
    if (!w->re_failed)
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: %s ran out of memory", stage);
    PCRE2_UCHAR msg[160];
    if (pcre2_get_error_message(w->re_rc, msg, sizeof msg) < 0)
        snprintf((char *)msg, sizeof msg, "PCRE2 error %d", w->re_rc);
    const char *src = w->re_failed->src ? w->re_failed->src : "?";
    w->re_failed    = NULL;
    return assay_fail(err, ASSAY_EFORMAT, "%s: %s regex '%.300s' failed on this input: %s",
                      t->path ? t->path : "tokenizer", stage, src, (const char *)msg);
}

int tok_normalize(const tokenizer *t, tok_work *w, size_t a, size_t b, assay_error *err) {
    w->re_failed = NULL;
    if (!t->norm) {
        tok_split sp = {a, b - a, a, -1, 0};
        if (push_split(&w->sp, &w->nsp, &w->capsp, sp))
            return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        return 0;
    }
    size_t n = b - a;
    if (nb_reserve(w, 0, n))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory normalizing %zu bytes", n);
    memcpy(w->nb[0], w->text + a, n);
    for (size_t i = 0; i < n;) {
        size_t l = tok_utf8_len((unsigned char)w->text[a + i]);
        if (i + l > n)
            l = n - i;
        for (size_t k = 0; k < l; k++) {
            w->nal[0][2 * (i + k)]     = (uint32_t)(a + i);
            w->nal[0][2 * (i + k) + 1] = (uint32_t)(a + i + l);
        }
        i += l;
    }
    nstate st = {w, 0, n};
    if (norm_run(t->norm, &st))
        return stage_fail(t, w, "normalizer", err);
    if (arena_reserve(w, st.n))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
    memcpy(w->arena + w->alen, w->nb[st.cur], st.n);
    memcpy(w->al + 2 * w->alen, w->nal[st.cur], 2 * st.n * sizeof(uint32_t));
    tok_split sp = {w->alen, st.n, 0, -1, 1};
    w->alen += st.n;
    if (push_split(&w->sp, &w->nsp, &w->capsp, sp))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------- */

typedef struct piece {
    size_t s, e;
    int    flag; /* is a match (before behavior) / to remove (after) */
} piece;

typedef struct ptmp {
    piece *v;
    size_t n, cap;
} ptmp;

static int ptmp_push(ptmp *p, size_t s, size_t e, int flag) {
    if (tok_grow((void **)&p->v, &p->cap, p->n + 1, sizeof *p->v))
        return -1;
    p->v[p->n++] = (piece){s, e, flag};
    return 0;
}

typedef int (*char_pred)(int32_t c, const tok_pre *p);

static int pred_ws(int32_t c, const tok_pre *p) {
    (void)p;
    return tok_is_whitespace(c);
}
static int pred_punct(int32_t c, const tok_pre *p) {
    (void)p;
    return is_punct(c);
}
static int pred_digit(int32_t c, const tok_pre *p) {
    (void)p;
    return is_numeric(c);
}
static int pred_delim(int32_t c, const tok_pre *p) {
    size_t adv;
    return p->pat.len && c == tok_utf8_decode(p->pat.str, p->pat.len, &adv);
}

/* Finds matches (HF Pattern::find_matches) of a regex, string or char predicate. */
static int find_matches(tok_work *w, const char *s, size_t n, const tok_pattern *re,
                        const char *lit, size_t litlen, char_pred pred, const tok_pre *pp,
                        ptmp *out) {
    out->n = 0;
    if (n == 0)
        return ptmp_push(out, 0, 0, 0);
    size_t prev = 0;
    if (re) {
        size_t start = 0, last_end = (size_t)-1;
        while (start <= n) {
            size_t ms, me;
            int    r = regex_next(w, re, s, n, start, &ms, &me);
            if (r < 0)
                return -1;
            if (!r)
                break;
            if (ms == me && last_end == me) { /* Oniguruma's find_iter: skip an empty match
                                                 right after the previous match */
                if (start >= n)
                    break;
                start += tok_utf8_len((unsigned char)s[start]);
                continue;
            }
            start    = me;
            last_end = me;
            if (prev != ms && ptmp_push(out, prev, ms, 0))
                return -1;
            if (ptmp_push(out, ms, me, 1))
                return -1;
            prev = me;
        }
    } else if (lit) {
        if (litlen) {
            size_t pos = 0;
            while (pos < n) {
                const char *f = memmem(s + pos, n - pos, lit, litlen);
                if (!f)
                    break;
                size_t ms = (size_t)(f - s);
                if (prev != ms && ptmp_push(out, prev, ms, 0))
                    return -1;
                if (ptmp_push(out, ms, ms + litlen, 1))
                    return -1;
                prev = pos = ms + litlen;
            }
        }
    } else {
        for (size_t i = 0; i < n;) {
            size_t  adv;
            int32_t c = tok_utf8_decode(s + i, n - i, &adv);
            if (pred(c, pp)) {
                if (prev != i && ptmp_push(out, prev, i, 0))
                    return -1;
                if (ptmp_push(out, i, i + adv, 1))
                    return -1;
                prev = i + adv;
            }
            i += adv;
        }
    }
    if (prev != n && ptmp_push(out, prev, n, 0))
        return -1;
    return 0;
}

/* Applies an HF SplitDelimiterBehavior in place; afterwards flag = remove. */
static void apply_behavior(ptmp *p, int behavior, int invert) {
    if (invert)
        for (size_t i = 0; i < p->n; i++)
            p->v[i].flag = !p->v[i].flag;
    size_t k     = 0;
    int    prevm = 0;
    switch (behavior) {
    case BEH_REMOVED: return;
    case BEH_ISOLATED:
        for (size_t i = 0; i < p->n; i++)
            p->v[i].flag = 0;
        return;
    case BEH_CONTIGUOUS:
        for (size_t i = 0; i < p->n; i++) {
            int m = p->v[i].flag;
            if (m == prevm && k > 0)
                p->v[k - 1].e = p->v[i].e;
            else
                p->v[k++] = (piece){p->v[i].s, p->v[i].e, 0};
            prevm = m;
        }
        p->n = k;
        return;
    case BEH_PREV:
        for (size_t i = 0; i < p->n; i++) {
            int m = p->v[i].flag;
            if (m && !prevm && k > 0)
                p->v[k - 1].e = p->v[i].e;
            else
                p->v[k++] = (piece){p->v[i].s, p->v[i].e, 0};
            prevm = m;
        }
        p->n = k;
        return;
    case BEH_NEXT: {
        /* walk backwards, then restore order */
        size_t n = p->n;
        piece *v = p->v;
        k        = 0;
        for (size_t ii = n; ii-- > 0;) {
            int   m   = v[ii].flag;
            piece cur = v[ii];
            if (m && !prevm && k > 0)
                v[n - k].s = cur.s; /* acc.last() is stored at the tail */
            else {
                k++;
                v[n - k] = (piece){cur.s, cur.e, 0};
            }
            prevm = m;
        }
        memmove(v, v + (n - k), k * sizeof *v);
        p->n = k;
        return;
    }
    }
}

typedef struct pstate {
    tok_work *w;
    ptmp      tmp;
} pstate;

/* Replaces w->sp by splitting each text split with the given matcher + behavior. */
static int split_all(pstate *ps, const tok_pattern *re, const char *lit, size_t litlen,
                     char_pred pred, const tok_pre *pp, int behavior, int invert) {
    tok_work *w = ps->w;
    w->nsp2     = 0;
    for (size_t i = 0; i < w->nsp; i++) {
        tok_split *sp = &w->sp[i];
        if (sp->id >= 0) {
            if (push_split(&w->sp2, &w->nsp2, &w->capsp2, *sp))
                return -1;
            continue;
        }
        if (find_matches(w, split_ptr(w, sp), sp->len, re, lit, litlen, pred, pp, &ps->tmp))
            return -1;
        apply_behavior(&ps->tmp, behavior, invert);
        for (size_t k = 0; k < ps->tmp.n; k++) {
            piece *p = &ps->tmp.v[k];
            if (p->flag || p->e == p->s)
                continue;
            if (push_split(&w->sp2, &w->nsp2, &w->capsp2, sub_split(sp, p->s, p->e)))
                return -1;
        }
    }
    tok_split *t = w->sp;
    w->sp        = w->sp2;
    w->sp2       = t;
    size_t c     = w->capsp;
    w->capsp     = w->capsp2;
    w->capsp2    = c;
    w->nsp       = w->nsp2;
    return 0;
}

/* Rewrites a split into the arena: optional prefix, and `from` replaced by `to`. */
static int transform_split(tok_work *w, tok_split *sp, const char *prefix, size_t plen,
                           const char *from, size_t flen, const char *to, size_t tlen) {
    const char *s    = split_ptr(w, sp);
    size_t      n    = sp->len;
    size_t      grow = plen + n * (tlen > flen ? tlen : 1) + 8;
    if (arena_reserve(w, grow))
        return -1;
    s              = split_ptr(w, sp); /* the arena may have moved */
    size_t   start = w->alen, o = w->alen;
    uint32_t a, b;
    if (plen) {
        if (n)
            split_align(w, sp, 0, &a, &b);
        else
            a = b = (uint32_t)split_orig_start(w, sp);
        for (size_t k = 0; k < plen; k++) {
            w->arena[o]      = prefix[k];
            w->al[2 * o]     = a;
            w->al[2 * o + 1] = b;
            o++;
        }
    }
    for (size_t i = 0; i < n;) {
        if (flen && i + flen <= n && memcmp(s + i, from, flen) == 0) {
            uint32_t a2, b2;
            split_align(w, sp, i, &a, &b);
            split_align(w, sp, i + flen - 1, &a2, &b2);
            for (size_t k = 0; k < tlen; k++) {
                w->arena[o]      = to[k];
                w->al[2 * o]     = a;
                w->al[2 * o + 1] = b2;
                o++;
            }
            i += flen;
            continue;
        }
        split_align(w, sp, i, &a, &b);
        w->arena[o]      = s[i];
        w->al[2 * o]     = a;
        w->al[2 * o + 1] = b;
        o++;
        i++;
    }
    w->alen      = o;
    sp->in_arena = 1;
    sp->off      = start;
    sp->len      = o - start;
    return 0;
}

static int pre_run(const tokenizer *t, const tok_pre *p, pstate *ps) {
    tok_work *w = ps->w;
    switch (p->type) {
    case PRE_SEQ:
        for (size_t i = 0; i < p->nkids; i++)
            if (pre_run(t, &p->kids[i], ps))
                return -1;
        return 0;
    case PRE_SPLIT:
        return split_all(ps, p->pat.is_regex ? &p->pat : NULL, p->pat.is_regex ? NULL : p->pat.str,
                         p->pat.len, NULL, p, p->behavior, p->invert);
    case PRE_WS: /* HF Whitespace: keep the matches of \w+|[^\w\s]+ */
        return split_all(ps, &p->pat, NULL, 0, NULL, p, BEH_REMOVED, 1);
    case PRE_WSSPLIT: return split_all(ps, NULL, NULL, 0, pred_ws, p, BEH_REMOVED, 0);
    case PRE_PUNCT: return split_all(ps, NULL, NULL, 0, pred_punct, p, p->behavior, 0);
    case PRE_BERT:
        if (split_all(ps, NULL, NULL, 0, pred_ws, p, BEH_REMOVED, 0))
            return -1;
        return split_all(ps, NULL, NULL, 0, pred_punct, p, BEH_ISOLATED, 0);
    case PRE_DIGITS:
        return split_all(ps, NULL, NULL, 0, pred_digit, p,
                         p->individual_digits ? BEH_ISOLATED : BEH_CONTIGUOUS, 0);
    case PRE_CHARDELIM: return split_all(ps, NULL, NULL, 0, pred_delim, p, BEH_REMOVED, 0);
    case PRE_BYTELEVEL:
        if (p->add_prefix_space)
            for (size_t i = 0; i < w->nsp; i++) {
                tok_split *sp = &w->sp[i];
                if (sp->id < 0 && (sp->len == 0 || split_ptr(w, sp)[0] != ' '))
                    if (transform_split(w, sp, " ", 1, NULL, 0, NULL, 0))
                        return -1;
            }
        if (p->use_regex)
            return split_all(ps, &p->pat, NULL, 0, NULL, p, BEH_ISOLATED, 0);
        return 0;
    case PRE_METASPACE:
        for (size_t i = 0; i < w->nsp; i++) {
            tok_split *sp = &w->sp[i];
            if (sp->id >= 0)
                continue;
            int pre = 0;
            int starts =
                sp->len >= p->repl_len && memcmp(split_ptr(w, sp), p->repl, p->repl_len) == 0;
            /* HF checks the prefix after replacing spaces: a leading space counts as one */
            if (!starts && sp->len && split_ptr(w, sp)[0] == ' ')
                starts = 1;
            if (p->prepend_scheme == PREPEND_ALWAYS)
                pre = !starts;
            else if (p->prepend_scheme == PREPEND_FIRST)
                pre = !starts && split_orig_start(w, sp) == 0;
            if (transform_split(w, sp, p->repl, pre ? p->repl_len : 0, " ", 1, p->repl,
                                p->repl_len))
                return -1;
        }
        if (p->split)
            return split_all(ps, NULL, p->repl, p->repl_len, NULL, p, BEH_NEXT, 0);
        return 0;
    }
    return -1;
}

int tok_pretokenize(const tokenizer *t, tok_work *w, assay_error *err) {
    if (!t->pre)
        return 0;
    pstate ps    = {w, {NULL, 0, 0}};
    w->re_failed = NULL;
    int rc       = pre_run(t, t->pre, &ps);
    free(ps.tmp.v);
    if (rc)
        return stage_fail(t, w, "pre-tokenizer", err);
    return 0;
}
