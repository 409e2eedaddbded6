/* scoring/textmetrics.c — what the text metrics share (UTF-8 as Python str sees it, Python's
 * whitespace and lower(), the n-gram matcher), SQuAD v1.1 F1/EM and lm-eval's exact_match. BLEU and
 * chrF are in tm_bleu.c, ROUGE in tm_rouge.c, the Porter stemmer in tm_porter.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "scoring/textmetrics.h"
#include "scoring/filters.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "scoring/tm_common.h"

/* ---- UTF-8 and Python's character classes ---- */

size_t tm_utf8_next(const char *s, size_t n, size_t i, uint32_t *cp) {
    const unsigned char *u    = (const unsigned char *)s + i;
    size_t               left = n - i;
    unsigned             c    = u[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t   len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xDC00 + c;
        return 1;
    }
    if (left < len) {
        *cp = 0xDC00 + c;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) {
            *cp = 0xDC00 + c;
            return 1;
        }
        v = (v << 6) | (u[k] & 0x3F);
    }
    /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
    if (v < min || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) {
        *cp = 0xDC00 + c;
        return 1;
    }
    *cp = v;
    return len;
}

int tm_py_isspace(uint32_t c) {
    if (c < 0x80)
        return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int tm_py_isword(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (c >= 0xDC80 && c <= 0xDCFF) /* an undecodable byte */
        return 0;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return 1;
    default: return 0;
    }
}

/* ---- buffers ---- */

int tm_buf_reserve(tm_buf *b, size_t extra) {
    if (extra > SIZE_MAX - b->n - 1)
        return -1;
    if (b->n + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + extra + 1)
            cap = cap > SIZE_MAX / 2 ? b->n + extra + 1 : cap * 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q, b->cap = cap;
    }
    return 0;
}

int tm_buf_put(tm_buf *b, const void *p, size_t n) {
    if (tm_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int tm_buf_put_cp(tm_buf *b, uint32_t cp) {
    if (cp >= 0xDC80 && cp <= 0xDCFF) {
        unsigned char raw = (unsigned char)(cp - 0xDC00);
        return tm_buf_put(b, &raw, 1);
    }
    utf8proc_uint8_t u[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, u);
    return tm_buf_put(b, u, (size_t)k);
}

void tm_buf_free(tm_buf *b) {
    free(b->p);
    b->p = NULL, b->n = b->cap = 0;
}

/* ---- lower() ---- */

/* Unicode's Cased and Case_Ignorable properties, which str.lower() consults for final sigma. */
static int cp_is_cased(uint32_t c) {
    if (c >= 0xDC80 && c <= 0xDCFF)
        return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           utf8proc_islower((utf8proc_int32_t)c) || utf8proc_isupper((utf8proc_int32_t)c);
}

static int cp_is_case_ignorable(uint32_t c) {
    static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                   0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                   0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (c == mid[i])
            return 1;
    if (c < 0x80 || (c >= 0xDC80 && c <= 0xDCFF))
        return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* Final_Sigma: a cased letter before (case-ignorables skipped), none after. */
static int sigma_is_final(const uint32_t *cps, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && cp_is_case_ignorable(cps[j - 1]))
        j--;
    if (j == 0 || !cp_is_cased(cps[j - 1]))
        return 0;
    for (j = i + 1; j < n && cp_is_case_ignorable(cps[j]); j++) {
    }
    return j == n || !cp_is_cased(cps[j]);
}

int tm_lower(tm_buf *out, const char *s, size_t n) {
    out->n = 0;
    if (tm_buf_put(out, "", 0) != 0)
        return -1;
    uint32_t *cps = malloc((n ? n : 1) * sizeof *cps);
    if (!cps)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < n;)
        i += tm_utf8_next(s, n, i, &cps[m++]);
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        uint32_t c = cps[i];
        if (c < 0x80)
            rc = tm_buf_put(out, &(char){(char)(c >= 'A' && c <= 'Z' ? c + 32 : c)}, 1);
        else if (c == 0x130)
            rc = tm_buf_put(out, "i\xCC\x87", 3);
        else if (c == 0x3A3 && sigma_is_final(cps, m, i))
            rc = tm_buf_put_cp(out, 0x3C2);
        else if (c >= 0xDC80 && c <= 0xDCFF)
            rc = tm_buf_put_cp(out, c);
        else
            rc = tm_buf_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
    }
    free(cps);
    return rc;
}

/* ---- units ---- */

static uint64_t bytes_hash(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

int tm_units_push(tm_units *u, const char *p, size_t n) {
    if (n > UINT32_MAX)
        return -1;
    if (u->n == u->cap) {
        size_t   cap = u->cap ? u->cap * 2 : 64;
        tm_unit *v   = cap <= SIZE_MAX / sizeof *v ? realloc(u->v, cap * sizeof *v) : NULL;
        if (!v)
            return -1;
        u->v = v, u->cap = cap;
    }
    u->v[u->n++] = (tm_unit){p, (uint32_t)n, bytes_hash(p, n)};
    return 0;
}

void tm_units_free(tm_units *u) {
    free(u->v);
    u->v = NULL, u->n = u->cap = 0;
}

int tm_split_ws(tm_units *out, const char *s, size_t n) {
    out->n        = 0;
    size_t start  = 0;
    int    in_tok = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t   k = tm_utf8_next(s, n, i, &cp);
        if (tm_py_isspace(cp)) {
            if (in_tok && tm_units_push(out, s + start, i - start) != 0)
                return -1;
            in_tok = 0;
        } else if (!in_tok) {
            start = i, in_tok = 1;
        }
        i += k;
    }
    if (in_tok && tm_units_push(out, s + start, n - start) != 0)
        return -1;
    return 0;
}

/* ---- n-gram matching ---- */

typedef struct tm_ngram_entry {
    const tm_unit *first;
    uint64_t       h;
    uint32_t       gen, order;
    uint32_t       ref_seen; /* index + 1 of the reference cur counts */
    long           cur, ref_max, hyp;
} tm_ngram_entry;

static int units_equal(const tm_unit *a, const tm_unit *b, uint32_t n) {
    for (uint32_t k = 0; k < n; k++)
        if (a[k].h != b[k].h || a[k].n != b[k].n || memcmp(a[k].p, b[k].p, a[k].n) != 0)
            return 0;
    return 1;
}

static tm_ngram_entry *table_find(tm_ngram_table *t, const tm_unit *first, uint32_t order,
                                  uint64_t h) {
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        tm_ngram_entry *e = &t->e[i];
        if (e->gen != t->gen) {
            *e = (tm_ngram_entry){first, h, t->gen, order, 0, 0, 0, 0};
            return e;
        }
        if (e->h == h && e->order == order && units_equal(e->first, first, order))
            return e;
    }
}

static uint64_t ngram_hash_step(uint64_t h, uint64_t unit_h) {
    h = (h ^ unit_h) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

int tm_ngram_match(tm_ngram_table *t, const tm_units *hyp, const tm_units *refs, size_t n_refs,
                   int max_order, long *match) {
    size_t need = hyp->n;
    for (size_t r = 0; r < n_refs; r++)
        need += refs[r].n;
    if (need > SIZE_MAX / 4 / (size_t)max_order)
        return -1;
    need *= (size_t)max_order * 2;
    if (need > t->cap || t->gen == UINT32_MAX) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < need)
            cap *= 2;
        if (cap != t->cap) {
            tm_ngram_entry *e = cap <= SIZE_MAX / sizeof *e ? malloc(cap * sizeof *e) : NULL;
            if (!e)
                return -1;
            free(t->e);
            t->e = e, t->cap = cap;
        }
        memset(t->e, 0, t->cap * sizeof *t->e);
        t->gen = 0;
    }
    t->gen++;
    for (int k = 0; k < max_order; k++)
        match[k] = 0;
    /* Each reference counts into cur; ref_max keeps the largest count any one reference has. */
    for (size_t r = 0; r < n_refs; r++) {
        const tm_units *u = &refs[r];
        for (size_t i = 0; i < u->n; i++) {
            uint64_t h = 0;
            for (uint32_t k = 1; k <= (uint32_t)max_order && i + k <= u->n; k++) {
                h                 = ngram_hash_step(h, u->v[i + k - 1].h);
                tm_ngram_entry *e = table_find(t, &u->v[i], k, h + k);
                if (e->ref_seen != r + 1)
                    e->ref_seen = (uint32_t)(r + 1), e->cur = 0;
                if (++e->cur > e->ref_max)
                    e->ref_max = e->cur;
            }
        }
    }
    for (size_t i = 0; i < hyp->n; i++) {
        uint64_t h = 0;
        for (uint32_t k = 1; k <= (uint32_t)max_order && i + k <= hyp->n; k++) {
            h                 = ngram_hash_step(h, hyp->v[i + k - 1].h);
            tm_ngram_entry *e = table_find(t, &hyp->v[i], k, h + k);
            if (++e->hyp <= e->ref_max)
                match[k - 1]++;
        }
    }
    return 0;
}

void tm_ngram_table_free(tm_ngram_table *t) {
    free(t->e);
    t->e = NULL, t->cap = 0, t->gen = 0;
}

/* ---- SQuAD v1.1 ---- */

static int is_ascii_punct(uint32_t c) {
    return c < 0x80 && c > 0x20 && c != 0x7F && !(c >= '0' && c <= '9') &&
           !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z');
}

/* normalize_answer: lower, drop string.punctuation, articles to a space, then whitespace-split
 * (white_space_fix's join is undone by the split the metric does next). */
static int squad_tokens(tm_str s, tm_buf *lower, tm_buf *norm, tm_units *toks) {
    if (tm_lower(lower, s.s, s.n) != 0)
        return -1;
    uint32_t *cps = malloc((lower->n ? lower->n : 1) * sizeof *cps);
    if (!cps)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < lower->n;) {
        uint32_t c;
        i += tm_utf8_next(lower->p, lower->n, i, &c);
        if (!is_ascii_punct(c))
            cps[m++] = c;
    }
    norm->n = 0;
    int rc  = tm_buf_put(norm, "", 0);
    /* \b(a|an|the)\b: the alternatives in order, each needing a word boundary after it. */
    for (size_t i = 0; i < m && rc == 0;) {
        size_t len = 0;
        if (i == 0 || !tm_py_isword(cps[i - 1])) {
            static const char *const arts[] = {"a", "an", "the"};
            for (int a = 0; a < 3 && !len; a++) {
                size_t k = strlen(arts[a]);
                if (i + k <= m && (i + k == m || !tm_py_isword(cps[i + k]))) {
                    size_t j = 0;
                    while (j < k && cps[i + j] == (uint32_t)arts[a][j])
                        j++;
                    if (j == k)
                        len = k;
                }
            }
        }
        if (len) {
            rc = tm_buf_put(norm, " ", 1);
            i += len;
        } else {
            rc = tm_buf_put_cp(norm, cps[i++]);
        }
    }
    free(cps);
    return rc == 0 ? tm_split_ws(toks, norm->p, norm->n) : -1;
}

typedef struct squad_work {
    tm_buf   lower, norm[2];
    tm_units toks[2];
} squad_work;

static void squad_work_free(squad_work *w) {
    tm_buf_free(&w->lower);
    for (int i = 0; i < 2; i++) {
        tm_buf_free(&w->norm[i]);
        tm_units_free(&w->toks[i]);
    }
}

int tm_squad_f1(tm_str prediction, tm_str gold, double *f1) {
    squad_work     w    = {0};
    tm_ngram_table t    = {0};
    long           same = 0;
    int            rc   = -1;
    if (squad_tokens(prediction, &w.lower, &w.norm[0], &w.toks[0]) != 0 ||
        squad_tokens(gold, &w.lower, &w.norm[1], &w.toks[1]) != 0 ||
        tm_ngram_match(&t, &w.toks[0], &w.toks[1], 1, 1, &same) != 0)
        goto done;
    *f1 = 0.0;
    if (same > 0) {
        double precision = 1.0 * (double)same / (double)w.toks[0].n;
        double recall    = 1.0 * (double)same / (double)w.toks[1].n;
        *f1              = (2 * precision * recall) / (precision + recall);
    }
    rc = 0;
done:
    tm_ngram_table_free(&t);
    squad_work_free(&w);
    return rc;
}

int tm_squad_em(tm_str prediction, tm_str gold, double *em) {
    squad_work w  = {0};
    int        rc = -1;
    if (squad_tokens(prediction, &w.lower, &w.norm[0], &w.toks[0]) != 0 ||
        squad_tokens(gold, &w.lower, &w.norm[1], &w.toks[1]) != 0)
        goto done;
    int same = w.toks[0].n == w.toks[1].n;
    for (size_t i = 0; same && i < w.toks[0].n; i++) {
        const tm_unit *a = &w.toks[0].v[i], *b = &w.toks[1].v[i];
        same = a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
    }
    *em = same ? 1.0 : 0.0;
    rc  = 0;
done:
    squad_work_free(&w);
    return rc;
}

/* ---- lm-eval exact_match ---- */

/* Between steps the strings live in one-element numpy arrays: a fixed-width string that drops
 * trailing NUL characters and whose width (in characters) is the length the string had when the
 * array was made. lower() keeps the width, so a string that grows (U+0130 becomes two characters)
 * loses its tail. */
static void strip_trailing_nul(tm_buf *b) {
    while (b->n > 0 && b->p[b->n - 1] == '\0')
        b->n--;
}

static size_t cp_count(const tm_buf *b) {
    size_t k = 0;
    for (size_t i = 0; i < b->n; k++)
        i += tm_utf8_next(b->p, b->n, i, &(uint32_t){0});
    return k;
}

static void truncate_cps(tm_buf *b, size_t width) {
    size_t i = 0;
    for (size_t k = 0; k < width && i < b->n; k++)
        i += tm_utf8_next(b->p, b->n, i, &(uint32_t){0});
    b->n    = i;
    b->p[i] = '\0';
}

static int regex_remove(pcre2_code *re, pcre2_match_data *md, tm_buf *b, tm_buf *tmp,
                        const char *pattern, assay_error *err) {
    PCRE2_SIZE cap = b->n + 1;
    for (int attempt = 0; attempt < 2; attempt++) {
        tmp->n = 0;
        if (tm_buf_reserve(tmp, cap) != 0)
            return -1;
        PCRE2_SIZE out_len = tmp->cap;
        int        rc      = pcre2_substitute(re, (PCRE2_SPTR)(b->p ? b->p : ""), b->n, 0,
                                              PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, md,
                                              NULL, (PCRE2_SPTR) "", 0, (PCRE2_UCHAR *)tmp->p, &out_len);
        if (rc == PCRE2_ERROR_NOMEMORY && attempt == 0) {
            cap = out_len;
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            assay_fail(err, rc == PCRE2_ERROR_NOMEMORY ? ASSAY_ENOMEM : ASSAY_EINVAL,
                       "exact_match: regex '%s' failed on a %zu-byte string: %s", pattern, b->n,
                       (const char *)msg);
            return -1;
        }
        tmp->n      = out_len;
        tm_buf swap = *b;
        *b = *tmp, *tmp = swap;
        b->p[b->n] = '\0';
        return 0;
    }
    return -1;
}

/* Python's \s is str.isspace(): it has U+001C..U+001F, which PCRE2's Unicode \s lacks, and lacks
 * U+180E, which PCRE2's has. */
#define PY_SPACE_SET                                                                               \
    "\\t-\\r\\x1c-\\x20\\x85\\xa0\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"                   \
    "\\x{202f}\\x{205f}\\x{3000}"

static void remove_bytes(tm_buf *b, int (*drop)(unsigned char)) {
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!drop((unsigned char)b->p[i]))
            b->p[k++] = b->p[i];
    b->n = k;
}
static int drop_punct(unsigned char c) { return is_ascii_punct(c); }
static int drop_digit(unsigned char c) { return c >= '0' && c <= '9'; }

int tm_exact_match(tm_str prediction, tm_str reference, const tm_em_opts *o, double *em,
                   assay_error *err) {
    tm_buf s[2] = {{0}}, tmp = {0};
    int    rc = -1;
    if (tm_buf_put(&s[0], prediction.s, prediction.n) != 0 ||
        tm_buf_put(&s[1], reference.s, reference.n) != 0) {
        assay_fail(err, ASSAY_ENOMEM, "exact_match: out of memory");
        goto done;
    }
    size_t width[2];
    for (int k = 0; k < 2; k++) {
        width[k] = cp_count(&s[k]);
        if (!o || o->n_regexes == 0) /* the first regex sees the string as given */
            strip_trailing_nul(&s[k]);
    }
    for (size_t r = 0; o && r < o->n_regexes; r++) {
        const char *pat = o->regexes_to_ignore[r] ? o->regexes_to_ignore[r] : "";
        char        what[64];
        snprintf(what, sizeof what, "exact_match: regexes_to_ignore[%zu]", r);
        pcre2_code *re = flt_pyre_compile(pat, what, err);
        if (!re)
            goto done;
        pcre2_match_data *md  = pcre2_match_data_create_from_pattern(re, NULL);
        int               bad = !md;
        for (int k = 0; k < 2 && !bad; k++) {
            bad      = regex_remove(re, md, &s[k], &tmp, pat, err) != 0;
            width[k] = cp_count(&s[k]);
            strip_trailing_nul(&s[k]);
        }
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        if (bad) {
            if (!err || err->code == ASSAY_OK)
                assay_fail(err, ASSAY_ENOMEM, "exact_match: out of memory");
            goto done;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (o && o->ignore_case) {
            if (tm_lower(&tmp, s[k].p, s[k].n) != 0) {
                assay_fail(err, ASSAY_ENOMEM, "exact_match: out of memory");
                goto done;
            }
            tm_buf swap = s[k];
            s[k] = tmp, tmp = swap;
            truncate_cps(&s[k], width[k]);
            strip_trailing_nul(&s[k]);
        }
        if (o && o->ignore_punctuation)
            remove_bytes(&s[k], drop_punct);
        if (o && o->ignore_numbers)
            remove_bytes(&s[k], drop_digit);
        strip_trailing_nul(&s[k]);
    }
    *em = s[0].n == s[1].n && (s[0].n == 0 || memcmp(s[0].p, s[1].p, s[0].n) == 0) ? 1.0 : 0.0;
    rc  = 0;
done:
    tm_buf_free(&s[0]);
    tm_buf_free(&s[1]);
    tm_buf_free(&tmp);
    return rc;
}
