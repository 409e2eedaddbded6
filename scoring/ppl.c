#include "scoring/ppl.h"

#include <math.h>

int ppl_is_py_space(uint32_t cp) {
    /* CPython Py_UNICODE_ISSPACE: ASCII 0x09-0x0D, 0x1C-0x20, then bidi WS/B/S or Zs. */
    if (cp < 0x80)
        return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return 1;
    default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

size_t ppl_utf8_next(const char *s, size_t len, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char        c = u[0];
    size_t               need;
    uint32_t             v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        need = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        need = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        need = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if (need > len) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < need; i++) {
        if ((u[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (u[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = v;
    return need;
}

int64_t ppl_count_words(const char *text, size_t len) {
    int64_t pieces   = 1;
    int     in_space = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += ppl_utf8_next(text + i, len - i, &cp);
        int sp = ppl_is_py_space(cp);
        if (sp && !in_space)
            pieces++;
        in_space = sp;
    }
    return pieces;
}

void ppl_stats_init(ppl_stats *s, const char *text, size_t len) {
    *s       = (ppl_stats){0};
    s->words = ppl_count_words(text, len);
    s->bytes = (int64_t)len;
}

void ppl_stats_add_window(ppl_stats *s, double nll_sum, int64_t scored, int64_t hf_count) {
    s->nll += nll_sum;
    s->tokens += scored;
    if (scored > 0)
        s->hf_nll += nll_sum / (double)scored * (double)hf_count;
    s->hf_tokens += hf_count;
}

void ppl_stats_merge(ppl_stats *total, const ppl_stats *doc) {
    total->nll += doc->nll;
    total->tokens += doc->tokens;
    total->words += doc->words;
    total->bytes += doc->bytes;
    total->hf_nll += doc->hf_nll;
    total->hf_tokens += doc->hf_tokens;
}

static double ratio(double a, int64_t b) { return b > 0 ? a / (double)b : NAN; }

double ppl_token_ppl(const ppl_stats *s) { return exp(ratio(s->nll, s->tokens)); }
double ppl_word_ppl(const ppl_stats *s) { return exp(ratio(s->nll, s->words)); }
double ppl_byte_ppl(const ppl_stats *s) { return exp(ratio(s->nll, s->bytes)); }
double ppl_bits_per_byte(const ppl_stats *s) { return ratio(s->nll, s->bytes) / log(2.0); }
double ppl_hf_recipe_ppl(const ppl_stats *s) { return exp(ratio(s->hf_nll, s->hf_tokens)); }
