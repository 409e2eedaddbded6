/* scoring/flt_text.c — the string filters (first line, Python's strip and lower) and label
 * extraction. Python's definitions are on code points; here they run on UTF-8 bytes, and bytes
 * that are not valid UTF-8 pass through unchanged (Python would never see them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/util.h"
#include "scoring/filters.h"
#include "scoring/flt_internal.h"

int flt_out_set(flt_out *out, const char *s, size_t n) {
    out->s = NULL;
    out->n = 0;
    if (n == SIZE_MAX)
        return -1;
    char *p = malloc(n + 1);
    if (!p)
        return -1;
    if (n)
        memcpy(p, s, n);
    p[n]   = '\0';
    out->s = p;
    out->n = n;
    return 0;
}

/* Python's str.isspace(): bidirectional class WS, B or S, or category Zs (CPython 3.11's table). */
static int py_isspace(int32_t c) {
    if (c <= 0x20)
        return c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Decodes one code point at s[i..n); its length, or 0 when the bytes there are not valid UTF-8. */
static size_t utf8_decode(const char *s, size_t n, size_t i, int32_t *cp) {
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                          (utf8proc_ssize_t)(n - i < 4 ? n - i : 4), cp);
    return k > 0 ? (size_t)k : 0;
}

void flt_strip_span(const char *s, size_t n, size_t *a, size_t *b) {
    size_t  i = 0, j = n;
    int32_t c;
    size_t  k;
    while (i < j && (k = utf8_decode(s, j, i, &c)) && py_isspace(c))
        i += k;
    while (j > i) {
        size_t st = j - 1; /* the last code point starts at most 3 continuation bytes back */
        while (st > i && j - st < 4 && ((unsigned char)s[st] & 0xC0) == 0x80)
            st--;
        if (utf8_decode(s, j, st, &c) != j - st || !py_isspace(c))
            break;
        j = st;
    }
    *a = i;
    *b = j;
}

int flt_first_line(const char *s, size_t n, flt_out *out) {
    const char *nl = n ? memchr(s, '\n', n) : NULL;
    return flt_out_set(out, s, nl ? (size_t)(nl - s) : n);
}

int flt_strip(const char *s, size_t n, flt_out *out) {
    size_t a, b;
    flt_strip_span(s, n, &a, &b);
    return flt_out_set(out, s + a, b - a);
}

/* ---- lower ------------------------------------------------------------------------------- */

/* Invalid bytes are kept in the code point array with this mark (never a code point). */
#define RAW_BYTE 0x40000000

/* Python's _PyUnicode_IsCaseIgnorable, from general categories plus Word_Break MidLetter,
 * MidNumLet and Single_Quote (the Unicode definition Python's table is built from). */
static int is_case_ignorable(int32_t c) {
    static const int32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                  0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                  0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    if (c & RAW_BYTE)
        return 0;
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (c == mid[i])
            return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK: return 1;
    default: return 0;
    }
}

/* Cased: Lu, Ll, Lt, a character with a case mapping (circled letters, Roman numerals), and the
 * Other_Lowercase / Other_Uppercase characters that have none and are not case-ignorable (which
 * the context rule skips first). Checked against Python for every code point of Unicode 14. */
static int is_cased(int32_t c) {
    if (c & RAW_BYTE)
        return 0;
    if (c == 0xAA || c == 0xBA || (c >= 0x1F130 && c <= 0x1F149) ||
        (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

/* Python's handle_capital_sigma: Σ lowers to ς when a cased letter precedes it (skipping
 * case-ignorable ones) and none follows it. */
static int32_t sigma_lower(const int32_t *cp, size_t m, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(cp[j - 1]))
        j--;
    if (j == 0 || !is_cased(cp[j - 1]))
        return 0x3C3;
    for (j = i + 1; j < m && is_case_ignorable(cp[j]); j++)
        ;
    return j < m && is_cased(cp[j]) ? 0x3C3 : 0x3C2;
}

int flt_lowercase(const char *s, size_t n, flt_out *out) {
    out->s = NULL;
    out->n = 0;
    size_t cap;
    /* a code point of k bytes lowers to at most max(k, 3) bytes and ASCII stays ASCII, so 2n
     * covers every case (U+0130 is 2 bytes and lowers to "i" + U+0307, 3 bytes) */
    if (size_mul(n ? n : 1, 2, &cap) || size_add(cap, 1, &cap))
        return -1;
    int32_t *cp = malloc((n ? n : 1) * sizeof *cp);
    char    *o  = malloc(cap);
    if (!cp || !o) {
        free(cp);
        free(o);
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        int32_t c;
        size_t  k = utf8_decode(s, n, i, &c);
        cp[m++]   = k ? c : (RAW_BYTE | (unsigned char)s[i]);
        i += k ? k : 1;
    }
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        int32_t c = cp[i];
        if (c & RAW_BYTE) {
            o[w++] = (char)(c & 0xFF);
            continue;
        }
        if (c == 0x130) { /* the one unconditional multi-character lowercase mapping */
            o[w++] = 'i';
            w += (size_t)utf8proc_encode_char(0x307, (utf8proc_uint8_t *)o + w);
            continue;
        }
        c = c == 0x3A3 ? sigma_lower(cp, m, i) : utf8proc_tolower(c);
        w += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)o + w);
    }
    free(cp);
    o[w]   = '\0';
    out->s = o;
    out->n = w;
    return 0;
}

/* ---- labels ------------------------------------------------------------------------------ */

int flt_extract_label(const char *s, size_t n, const char *const *labels, const size_t *label_lens,
                      size_t n_labels) {
    size_t a, b;
    flt_strip_span(s, n, &a, &b);
    flt_out text;
    if (flt_lowercase(s + a, b - a, &text))
        return -1;
    /* a label the response starts with is also the one at the smallest offset (0), and the
     * longest of those, so one search gives both rules of the contract */
    int    best     = -1;
    size_t best_off = SIZE_MAX, best_len = 0;
    for (size_t l = 0; l < n_labels && l < INT32_MAX; l++) {
        flt_out lab;
        if (!label_lens[l] || flt_lowercase(labels[l], label_lens[l], &lab))
            continue;
        const char *hit = lab.n <= text.n ? memmem(text.s, text.n, lab.s, lab.n) : NULL;
        if (hit) {
            size_t off = (size_t)(hit - text.s);
            if (off < best_off || (off == best_off && lab.n > best_len)) {
                best     = (int)l;
                best_off = off;
                best_len = lab.n;
            }
        }
        free(lab.s);
    }
    free(text.s);
    return best;
}
