/* loader/jinja_parse.c — template text to syntax tree, lexing as Jinja2 does with trim_blocks and
 * lstrip_blocks on (the environment transformers renders chat templates in): newlines normalized
 * to \n and one trailing newline dropped, `-` / `+` whitespace control, Python string escapes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/jinja_internal.h"

/* ---- arena ---- */

struct jarena_block {
    jarena_block *next;
    size_t        size, used;
    max_align_t   data[];
};

void *jarena_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (a->cap && (n > a->cap || a->used > a->cap - n))
        return NULL;
    jarena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > ((size_t)64 << 10) ? n : ((size_t)64 << 10);
        b           = calloc(1, sizeof *b + size);
        if (!b)
            return NULL;
        b->size = size;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    a->used += n;
    return p;
}

void jarena_free(jarena *a) {
    if (!a)
        return;
    jarena_block *b = a->head;
    while (b) {
        jarena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- lexer ---- */

enum { T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct jtok {
    int     type;
    int     line, col;
    jstr    s; /* text, name, operator, decoded string */
    int64_t i;
    double  f;
} jtok;

typedef struct lexer {
    jarena      *arena;
    const char  *where;
    assay_error *err;
    char        *src; /* normalized copy */
    size_t       n;
    jtok        *toks;
    size_t       ntoks, cap;
    /* line tracking: positions only move forward */
    size_t lc_pos, lc_line_start;
    int    lc_line;
} lexer;

static void lex_linecol(lexer *L, size_t pos, int *line, int *col) {
    if (pos < L->lc_pos) { /* rare: restart */
        L->lc_pos = 0, L->lc_line = 1, L->lc_line_start = 0;
    }
    for (; L->lc_pos < pos; L->lc_pos++)
        if (L->src[L->lc_pos] == '\n')
            L->lc_line++, L->lc_line_start = L->lc_pos + 1;
    *line = L->lc_line;
    *col  = (int)(pos - L->lc_line_start) + 1;
}

static int lex_fail(lexer *L, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int lex_fail(lexer *L, size_t pos, const char *fmt, ...) {
    char    msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    lex_linecol(L, pos, &line, &col);
    return assay_fail(L->err, ASSAY_EFORMAT, "%s:%d:%d: %s", L->where, line, col, msg);
}

static jtok *lex_push(lexer *L, int type, size_t pos) {
    if (L->ntoks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtok  *t   = realloc(L->toks, cap * sizeof *t);
        if (!t)
            return NULL;
        L->toks = t, L->cap = cap;
    }
    jtok *t = &L->toks[L->ntoks++];
    memset(t, 0, sizeof *t);
    t->type = type;
    lex_linecol(L, pos, &t->line, &t->col);
    return t;
}

/* Python's str.isspace() for the code point at p (n bytes available); *len gets its length. */
static int py_space(const char *p, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)p;
    *len                   = 1;
    if (u[0] < 0x80)
        return u[0] == ' ' || (u[0] >= 0x09 && u[0] <= 0x0d) || (u[0] >= 0x1c && u[0] <= 0x1f);
    unsigned cp = 0;
    if ((u[0] & 0xe0) == 0xc0 && n >= 2)
        cp = ((u[0] & 0x1fu) << 6) | (u[1] & 0x3fu), *len = 2;
    else if ((u[0] & 0xf0) == 0xe0 && n >= 3)
        cp = ((u[0] & 0x0fu) << 12) | ((u[1] & 0x3fu) << 6) | (u[2] & 0x3fu), *len = 3;
    else
        return 0;
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* Length of s[0..n) without trailing Python whitespace. */
size_t jinja_rstrip_len(const char *s, size_t n) {
    size_t keep = 0, i = 0, len;
    while (i < n) {
        if (!py_space(s + i, n - i, &len))
            keep = i + len;
        i += len;
    }
    return keep;
}

/* Length of the Python whitespace at the start of s[0..n). */
size_t jinja_lstrip_len(const char *s, size_t n) {
    size_t i = 0, len;
    while (i < n && py_space(s + i, n - i, &len))
        i += len;
    return i;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_name_char(char c) { return is_name_start(c) || is_digit(c); }
static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string literal's body with Python's escapes decoded (as Jinja2 decodes it). */
static int lex_string(lexer *L, size_t pos, size_t *end, jstr *out) {
    char   q = L->src[pos];
    size_t i = pos + 1;
    while (i < L->n && L->src[i] != q) {
        if (L->src[i] == '\\')
            i++;
        i++;
    }
    if (i >= L->n)
        return lex_fail(L, pos, "unterminated string literal");
    *end    = i + 1;
    char *o = jarena_alloc(L->arena, i - pos + 1);
    if (!o)
        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
    size_t k = 0;
    for (size_t j = pos + 1; j < i; j++) {
        char c = L->src[j];
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        char e = L->src[++j];
        switch (e) {
        case '\n': break;
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'v': o[k++] = '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
            int      digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned cp     = 0;
            for (int d = 0; d < digits; d++) {
                int h = j + 1 + (size_t)d < i ? hexval(L->src[j + 1 + d]) : -1;
                if (h < 0)
                    return lex_fail(L, j - 1, "truncated \\%c escape in a string literal", e);
                cp = cp * 16 + (unsigned)h;
            }
            j += (size_t)digits;
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return lex_fail(L, j - 1, "escape \\%c gives U+%X, not a Unicode scalar value", e,
                                cp);
            /* \xHH is a code point too, so \xe9 is é; the escape is never shorter than its UTF-8 */
            k += utf8_put(o + k, cp);
            break;
        }
        case 'N': return lex_fail(L, j - 1, "\\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                unsigned cp = 0;
                int      d  = 0;
                while (d < 3 && j < i && L->src[j] >= '0' && L->src[j] <= '7')
                    cp = cp * 8 + (unsigned)(L->src[j++] - '0'), d++;
                j--;
                k += utf8_put(o + k, cp);
            } else {
                o[k++] = '\\';
                o[k++] = e;
            }
        }
    }
    out->p = o;
    out->n = k;
    return 0;
}

static const char *const OPS2[] = {"//", "**", "==", "!=", ">=", "<="};
static const char        OPS1[] = "+-/*%~[](){}<>=.:|,;";

/* Tokens inside {{ }} or {% %} up to the closing tag. *pos is just past the opening tag. */
static int lex_tag(lexer *L, size_t *pos, int block, int *line_starting) {
    size_t i       = *pos;
    int    balance = 0;
    size_t open    = i;
    for (;;) {
        if (i >= L->n)
            return lex_fail(L, open, "missing end of %s tag",
                            block ? "block ('%}')" : "variable ('}}')");
        const char *s    = L->src + i;
        size_t      left = L->n - i;
        if (balance == 0) {
            if (block) {
                if (left >= 3 && s[0] == '+' && s[1] == '%' && s[2] == '}') {
                    if (!lex_push(L, T_BEND, i))
                        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                    i += 3;
                    *line_starting = 0;
                    break;
                }
                if (left >= 3 && s[0] == '-' && s[1] == '%' && s[2] == '}') {
                    if (!lex_push(L, T_BEND, i))
                        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                    i += 3;
                    i += jinja_lstrip_len(L->src + i, L->n - i);
                    *line_starting = L->src[i - 1] == '\n';
                    break;
                }
                if (left >= 2 && s[0] == '%' && s[1] == '}') {
                    if (!lex_push(L, T_BEND, i))
                        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                    i += 2;
                    *line_starting = 0;
                    if (i < L->n && L->src[i] == '\n') /* trim_blocks */
                        i++, *line_starting = 1;
                    break;
                }
            } else {
                if (left >= 3 && s[0] == '-' && s[1] == '}' && s[2] == '}') {
                    if (!lex_push(L, T_VEND, i))
                        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                    i += 3;
                    i += jinja_lstrip_len(L->src + i, L->n - i);
                    *line_starting = L->src[i - 1] == '\n';
                    break;
                }
                if (left >= 2 && s[0] == '}' && s[1] == '}') {
                    if (!lex_push(L, T_VEND, i))
                        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                    i += 2;
                    *line_starting = 0;
                    break;
                }
            }
        }
        size_t sp = jinja_lstrip_len(s, left);
        if (sp) {
            i += sp;
            continue;
        }
        if (is_digit(s[0])) {
            /* a float needs a fraction or an exponent; otherwise an integer (0x/0o/0b too) */
            size_t j = 0;
            while (j < left &&
                   (is_digit(s[j]) || (s[j] == '_' && j + 1 < left && is_digit(s[j + 1]))))
                j++;
            int    is_float = 0;
            size_t k        = j;
            if (k + 1 < left && s[k] == '.' && is_digit(s[k + 1])) {
                k++;
                while (k < left &&
                       (is_digit(s[k]) || (s[k] == '_' && k + 1 < left && is_digit(s[k + 1]))))
                    k++;
                is_float = 1;
            }
            if (k < left && (s[k] == 'e' || s[k] == 'E')) {
                size_t e = k + 1;
                if (e < left && (s[e] == '+' || s[e] == '-'))
                    e++;
                if (e < left && is_digit(s[e])) {
                    while (e < left &&
                           (is_digit(s[e]) || (s[e] == '_' && e + 1 < left && is_digit(s[e + 1]))))
                        e++;
                    k = e, is_float = 1;
                }
            }
            char buf[128];
            if (is_float) {
                size_t b = 0;
                for (size_t m = 0; m < k && b + 1 < sizeof buf; m++)
                    if (s[m] != '_')
                        buf[b++] = s[m];
                buf[b]  = 0;
                jtok *t = lex_push(L, T_FLOAT, i);
                if (!t)
                    return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
                t->f = strtod(buf, NULL);
                i += k;
                continue;
            }
            int      base = 10;
            size_t   m    = 0;
            uint64_t v    = 0;
            if (s[0] == '0' && left > 1 &&
                (s[1] == 'x' || s[1] == 'X' || s[1] == 'o' || s[1] == 'O' || s[1] == 'b' ||
                 s[1] == 'B')) {
                base = (s[1] | 0x20) == 'x' ? 16 : (s[1] | 0x20) == 'o' ? 8 : 2;
                m    = 2;
            } else if (s[0] == '0') {
                j = 1; /* "0", "0_0": Python forbids leading zeros, the next digits lex apart */
                while (j + 1 < left && s[j] == '_' && s[j + 1] == '0')
                    j += 2;
                while (j < left && s[j] == '0')
                    j++;
            }
            size_t end  = base == 10 ? j : m;
            int    ndig = 0;
            if (base != 10)
                while (end < left) {
                    if (s[end] == '_' && end + 1 < left && hexval(s[end + 1]) >= 0 &&
                        hexval(s[end + 1]) < base)
                        end++;
                    int h = hexval(s[end]);
                    if (h < 0 || h >= base)
                        break;
                    end++, ndig++;
                }
            else
                ndig = 1;
            if (!ndig)
                return lex_fail(L, i, "invalid integer literal");
            for (size_t q = base == 10 ? 0 : 2; q < end; q++) {
                if (s[q] == '_')
                    continue;
                uint64_t d = (uint64_t)hexval(s[q]);
                if (v > (UINT64_C(0x7fffffffffffffff) - d) / (uint64_t)base)
                    return lex_fail(L, i, "integer literal larger than 2^63-1");
                v = v * (uint64_t)base + d;
            }
            jtok *t = lex_push(L, T_INT, i);
            if (!t)
                return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
            t->i = (int64_t)v;
            i += end;
            continue;
        }
        if (is_name_start(s[0])) {
            size_t j = 1;
            while (j < left && is_name_char(s[j]))
                j++;
            jtok *t = lex_push(L, T_NAME, i);
            if (!t)
                return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
            t->s = (jstr){s, j};
            i += j;
            continue;
        }
        if (s[0] == '\'' || s[0] == '"') {
            jstr   v   = {0};
            size_t end = 0;
            if (lex_string(L, i, &end, &v))
                return L->err->code;
            jtok *t = lex_push(L, T_STR, i);
            if (!t)
                return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
            t->s = v;
            i    = end;
            continue;
        }
        size_t oplen = 0;
        for (size_t k = 0; k < sizeof OPS2 / sizeof *OPS2; k++)
            if (left >= 2 && s[0] == OPS2[k][0] && s[1] == OPS2[k][1])
                oplen = 2;
        if (!oplen && s[0] && strchr(OPS1, s[0]))
            oplen = 1;
        if (!oplen) {
            if ((unsigned char)s[0] >= 0x80)
                return lex_fail(L, i,
                                "non-ASCII character in a tag (only ASCII names are supported)");
            return lex_fail(L, i, "unexpected character '%c' in a tag", s[0]);
        }
        if (oplen == 1 && (s[0] == '(' || s[0] == '[' || s[0] == '{'))
            balance++;
        else if (oplen == 1 && (s[0] == ')' || s[0] == ']' || s[0] == '}')) {
            if (balance == 0)
                return lex_fail(L, i, "unexpected '%c'", s[0]);
            balance--;
        }
        jtok *t = lex_push(L, T_OP, i);
        if (!t)
            return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
        t->s = (jstr){s, oplen};
        i += oplen;
    }
    *pos = i;
    return 0;
}

static int lex_text(lexer *L, size_t start, size_t end) {
    if (end <= start)
        return 0;
    jtok *t = lex_push(L, T_TEXT, start);
    if (!t)
        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
    t->s = (jstr){L->src + start, end - start};
    return 0;
}

/* Matches `{%(-|+|)\s*NAME\s*` at p; returns the length up to where `-%}` / `%}` must follow. */
static size_t match_block_name(const char *s, size_t n, size_t p, const char *name) {
    size_t i = p + 2;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    i += jinja_lstrip_len(s + i, n - i);
    size_t k = strlen(name);
    if (n - i < k || memcmp(s + i, name, k) != 0 || (i + k < n && is_name_char(s[i + k])))
        return 0;
    i += k;
    i += jinja_lstrip_len(s + i, n - i);
    return i - p;
}

static int lex_all(lexer *L) {
    size_t pos           = 0;
    int    line_starting = 1;
    while (pos < L->n) {
        /* the next tag start */
        size_t t = pos;
        while (t + 1 < L->n &&
               !(L->src[t] == '{' &&
                 (L->src[t + 1] == '{' || L->src[t + 1] == '%' || L->src[t + 1] == '#')))
            t++;
        if (t + 1 >= L->n) {
            if (lex_text(L, pos, L->n))
                return L->err->code;
            break;
        }
        char   kind = L->src[t + 1];
        char   sign = t + 2 < L->n ? L->src[t + 2] : 0;
        size_t raw  = kind == '%' ? match_block_name(L->src, L->n, t, "raw") : 0;
        if (sign != '-' && sign != '+')
            sign = 0;
        size_t text_end = t;
        if (sign == '-')
            text_end = pos + jinja_rstrip_len(L->src + pos, t - pos);
        else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: whitespace alone between a line start and a block or comment tag */
            size_t l = t;
            while (l > pos && L->src[l - 1] != '\n')
                l--;
            if ((l > pos || line_starting) && l < t && jinja_lstrip_len(L->src + l, t - l) == t - l)
                text_end = l;
        }
        if (lex_text(L, pos, text_end))
            return L->err->code;
        size_t i = t + 2 + (sign ? 1 : 0);
        if (raw) {
            /* {% raw %}...{% endraw %}: the body is text */
            size_t j = t + raw;
            if (j + 1 < L->n && L->src[j] == '-' && L->src[j + 1] == '%' && j + 2 < L->n &&
                L->src[j + 2] == '}')
                j += 3, j += jinja_lstrip_len(L->src + j, L->n - j);
            else if (j + 1 < L->n && L->src[j] == '%' && L->src[j + 1] == '}')
                j += 2;
            else
                return lex_fail(L, t, "expected '%%}' after 'raw'");
            size_t body = j, e = j;
            size_t m = 0;
            for (; e + 1 < L->n; e++)
                if (L->src[e] == '{' && L->src[e + 1] == '%' &&
                    (m = match_block_name(L->src, L->n, e, "endraw")))
                    break;
            if (!m)
                return lex_fail(L, t, "missing {%% endraw %%} for this raw block");
            char   esign = L->src[e + 2];
            size_t bend  = e;
            if (esign == '-')
                bend = body + jinja_rstrip_len(L->src + body, e - body);
            else if (esign != '+') {
                size_t l = e;
                while (l > body && L->src[l - 1] != '\n')
                    l--;
                if (l > body && l < e && jinja_lstrip_len(L->src + l, e - l) == e - l)
                    bend = l;
            }
            if (lex_text(L, body, bend))
                return L->err->code;
            size_t q = e + m;
            if (q + 2 < L->n && L->src[q] == '+' && L->src[q + 1] == '%' && L->src[q + 2] == '}')
                q += 3, line_starting = 0;
            else if (q + 2 < L->n && L->src[q] == '-' && L->src[q + 1] == '%' &&
                     L->src[q + 2] == '}') {
                q += 3, q += jinja_lstrip_len(L->src + q, L->n - q);
                line_starting = L->src[q - 1] == '\n';
            } else if (q + 1 < L->n && L->src[q] == '%' && L->src[q + 1] == '}') {
                q += 2, line_starting = 0;
                if (q < L->n && L->src[q] == '\n')
                    q++, line_starting = 1;
            } else
                return lex_fail(L, e, "expected '%%}' after 'endraw'");
            pos = q;
            continue;
        }
        if (kind == '#') {
            size_t e = i, found = 0;
            for (; e + 1 < L->n && !found; e++) {
                if (e + 2 < L->n && (L->src[e] == '+' || L->src[e] == '-') &&
                    L->src[e + 1] == '#' && L->src[e + 2] == '}') {
                    int minus = L->src[e] == '-';
                    e += 3, found = e, line_starting = 0;
                    if (minus) {
                        found += jinja_lstrip_len(L->src + found, L->n - found);
                        line_starting = L->src[found - 1] == '\n';
                    }
                } else if (L->src[e] == '#' && L->src[e + 1] == '}') {
                    found = e + 2, line_starting = 0;
                    if (found < L->n && L->src[found] == '\n') /* trim_blocks */
                        found++, line_starting = 1;
                }
            }
            if (!found)
                return lex_fail(L, t, "missing end of comment tag ('#}')");
            pos = found;
            continue;
        }
        if (!lex_push(L, kind == '%' ? T_BBEGIN : T_VBEGIN, t))
            return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
        if (lex_tag(L, &i, kind == '%', &line_starting))
            return L->err->code;
        pos = i;
    }
    if (!lex_push(L, T_EOF, L->n))
        return assay_fail(L->err, ASSAY_ENOMEM, "%s: out of memory", L->where);
    return 0;
}

/* ---- parser ---- */

typedef struct parser {
    lexer       *L;
    jtok        *t; /* current */
    int          depth;
    int          loops; /* for bodies open around here (break/continue need one) */
    assay_error *err;
    const char  *where;
    jarena      *arena;
} parser;

static int p_fail(parser *p, const jtok *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int p_fail(parser *p, const jtok *t, int code, const char *fmt, ...) {
    char    msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return assay_fail(p->err, code, "%s:%d:%d: %s", p->where, t->line, t->col, msg);
}

static const char *tok_desc(const jtok *t, char *buf, size_t cap) {
    switch (t->type) {
    case T_TEXT: return "template text";
    case T_VBEGIN: return "'{{'";
    case T_VEND: return "'}}'";
    case T_BBEGIN: return "'{%'";
    case T_BEND: return "'%}'";
    case T_STR: return "a string";
    case T_INT: return "an integer";
    case T_FLOAT: return "a float";
    case T_EOF: return "the end of the template";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p); return buf;
    }
}

static int is_op(const jtok *t, const char *op) {
    return t->type == T_OP && t->s.n == strlen(op) && memcmp(t->s.p, op, t->s.n) == 0;
}
static int is_name(const jtok *t, const char *name) {
    return t->type == T_NAME && t->s.n == strlen(name) && memcmp(t->s.p, name, t->s.n) == 0;
}

static jnode *p_node(parser *p, int type, const jtok *at) {
    jnode *n = jarena_alloc(p->arena, sizeof *n);
    if (!n) {
        assay_fail(p->err, ASSAY_ENOMEM, "%s: out of memory", p->where);
        return NULL;
    }
    n->type = (uint8_t)type;
    n->line = at->line;
    n->col  = at->col;
    return n;
}

/* Growable arrays of node pointers and names, copied into the arena when done. */
typedef struct nvec {
    jnode **v;
    size_t  n, cap;
} nvec;
static int nvec_push(parser *p, nvec *v, jnode *x) {
    if (v->n == v->cap) {
        size_t  cap = v->cap ? v->cap * 2 : 8;
        jnode **nv  = jarena_alloc(p->arena, cap * sizeof *nv);
        if (!nv)
            return assay_fail(p->err, ASSAY_ENOMEM, "%s: out of memory", p->where);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv, v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}
typedef struct svec {
    jstr  *v;
    size_t n, cap;
} svec;
static int svec_push(parser *p, svec *v, jstr x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        jstr  *nv  = jarena_alloc(p->arena, cap * sizeof *nv);
        if (!nv)
            return assay_fail(p->err, ASSAY_ENOMEM, "%s: out of memory", p->where);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv, v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

static int expect_op(parser *p, const char *op) {
    if (!is_op(p->t, op)) {
        char b[64];
        return p_fail(p, p->t, ASSAY_EFORMAT, "expected '%s', got %s", op,
                      tok_desc(p->t, b, sizeof b));
    }
    p->t++;
    return 0;
}
static int expect_type(parser *p, int type, const char *what) {
    if (p->t->type != type) {
        char b[64];
        return p_fail(p, p->t, ASSAY_EFORMAT, "expected %s, got %s", what,
                      tok_desc(p->t, b, sizeof b));
    }
    p->t++;
    return 0;
}

static jnode *parse_expr(parser *p, int with_cond);
static jnode *parse_tuple(parser *p, int with_cond, int explicit_parens);
static jnode *parse_unary(parser *p, int with_filter);
static jnode *parse_or(parser *p);

static int enter(parser *p) {
    if (++p->depth > JINJA_MAX_DEPTH) {
        p_fail(p, p->t, ASSAY_EUNSUPPORTED, "nesting deeper than %d levels", JINJA_MAX_DEPTH);
        return -1;
    }
    return 0;
}

/* Call arguments after '(': positional into *pos, keywords into names/vals. */
static int parse_call_args(parser *p, nvec *pos, svec *names, nvec *vals) {
    if (expect_op(p, "("))
        return -1;
    while (!is_op(p->t, ")")) {
        if (pos->n + vals->n && expect_op(p, ","))
            return -1;
        if (is_op(p->t, ")"))
            break;
        if (is_op(p->t, "*") || is_op(p->t, "**"))
            return p_fail(p, p->t, ASSAY_EUNSUPPORTED,
                          "'*args' / '**kwargs' in calls are not supported");
        if (p->t->type == T_NAME && is_op(p->t + 1, "=")) {
            jstr name = p->t->s;
            p->t += 2;
            jnode *v = parse_expr(p, 1);
            if (!v || svec_push(p, names, name) || nvec_push(p, vals, v))
                return -1;
        } else {
            if (vals->n)
                return p_fail(p, p->t, ASSAY_EFORMAT, "positional argument after keyword argument");
            jnode *v = parse_expr(p, 1);
            if (!v || nvec_push(p, pos, v))
                return -1;
        }
    }
    p->t++;
    return 0;
}

static void set_args(jnode *n, nvec *pos, svec *names, nvec *vals) {
    n->kids = pos->v, n->nkids = pos->n;
    n->names = names->v, n->nnames = names->n;
    n->kids2 = vals->v, n->nkids2 = vals->n;
}

static jnode *parse_primary(parser *p) {
    jtok  *t = p->t;
    jnode *n;
    if (t->type == T_NAME) {
        p->t++;
        n = p_node(p, JN_LIT, t);
        if (!n)
            return NULL;
        if (is_name(t, "true") || is_name(t, "True"))
            n->val = (jval){.kind = JV_BOOL, .u.b = 1};
        else if (is_name(t, "false") || is_name(t, "False"))
            n->val = (jval){.kind = JV_BOOL, .u.b = 0};
        else if (is_name(t, "none") || is_name(t, "None"))
            n->val = (jval){.kind = JV_NONE};
        else
            n->type = JN_NAME, n->s = t->s;
        return n;
    }
    if (t->type == T_STR) {
        /* adjacent literals concatenate */
        size_t total = 0;
        jtok  *e     = t;
        for (; e->type == T_STR; e++)
            total += e->s.n;
        char *buf = jarena_alloc(p->arena, total + 1);
        if (!buf || !(n = p_node(p, JN_LIT, t))) {
            assay_fail(p->err, ASSAY_ENOMEM, "%s: out of memory", p->where);
            return NULL;
        }
        size_t k = 0;
        for (jtok *q = t; q < e; q++)
            memcpy(buf + k, q->s.p, q->s.n), k += q->s.n;
        n->val = (jval){.kind = JV_STR, .u.s = {buf, total}};
        p->t   = e;
        return n;
    }
    if (t->type == T_INT || t->type == T_FLOAT) {
        p->t++;
        if (!(n = p_node(p, JN_LIT, t)))
            return NULL;
        n->val = t->type == T_INT ? (jval){.kind = JV_INT, .u.i = t->i}
                                  : (jval){.kind = JV_FLOAT, .u.f = t->f};
        return n;
    }
    if (is_op(t, "(")) {
        p->t++;
        n = parse_tuple(p, 1, 1);
        if (!n || expect_op(p, ")"))
            return NULL;
        return n;
    }
    if (is_op(t, "[")) {
        p->t++;
        nvec items = {0};
        while (!is_op(p->t, "]")) {
            if (items.n && expect_op(p, ","))
                return NULL;
            if (is_op(p->t, "]"))
                break;
            jnode *x = parse_expr(p, 1);
            if (!x || nvec_push(p, &items, x))
                return NULL;
        }
        p->t++;
        if (!(n = p_node(p, JN_LIST, t)))
            return NULL;
        n->kids = items.v, n->nkids = items.n;
        return n;
    }
    if (is_op(t, "{")) {
        p->t++;
        nvec keys = {0}, vals = {0};
        while (!is_op(p->t, "}")) {
            if (keys.n && expect_op(p, ","))
                return NULL;
            if (is_op(p->t, "}"))
                break;
            jnode *k = parse_expr(p, 1);
            if (!k || expect_op(p, ":"))
                return NULL;
            jnode *v = parse_expr(p, 1);
            if (!v || nvec_push(p, &keys, k) || nvec_push(p, &vals, v))
                return NULL;
        }
        p->t++;
        if (!(n = p_node(p, JN_DICT, t)))
            return NULL;
        n->kids = keys.v, n->nkids = keys.n, n->kids2 = vals.v, n->nkids2 = vals.n;
        return n;
    }
    char b[64];
    p_fail(p, t, ASSAY_EFORMAT, "expected an expression, got %s", tok_desc(t, b, sizeof b));
    return NULL;
}

static jnode *parse_subscript(parser *p, jnode *obj, const jtok *at) {
    /* after '[': an index or a slice a:b:c */
    jnode *parts[3] = {0};
    int    colons   = 0;
    for (;;) {
        if (is_op(p->t, ":")) {
            if (++colons > 2)
                return p_fail(p, p->t, ASSAY_EFORMAT, "too many ':' in a slice"), NULL;
            p->t++;
            continue;
        }
        if (is_op(p->t, "]"))
            break;
        if (parts[colons])
            return p_fail(p, p->t, ASSAY_EFORMAT, "expected ':' or ']' in a subscript"), NULL;
        if (!(parts[colons] = parse_expr(p, 1)))
            return NULL;
    }
    p->t++;
    jnode *n = p_node(p, colons ? JN_SLICE : JN_GETITEM, at);
    if (!n)
        return NULL;
    n->a = obj;
    if (colons)
        n->b = parts[0], n->c = parts[1], n->d = parts[2];
    else if (!(n->b = parts[0]))
        return p_fail(p, at, ASSAY_EFORMAT, "empty subscript '[]'"), NULL;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *n) {
    for (;;) {
        jtok *t = p->t;
        if (is_op(t, ".")) {
            p->t++;
            if (p->t->type == T_NAME) {
                jnode *g = p_node(p, JN_GETATTR, t);
                if (!g)
                    return NULL;
                g->a = n, g->s = p->t->s;
                p->t++;
                n = g;
            } else if (p->t->type == T_INT) {
                jnode *g = p_node(p, JN_GETITEM, t), *k = p_node(p, JN_LIT, p->t);
                if (!g || !k)
                    return NULL;
                k->val = (jval){.kind = JV_INT, .u.i = p->t->i};
                g->a = n, g->b = k;
                p->t++;
                n = g;
            } else {
                char b[64];
                return p_fail(p, p->t, ASSAY_EFORMAT, "expected a name after '.', got %s",
                              tok_desc(p->t, b, sizeof b)),
                       NULL;
            }
        } else if (is_op(t, "[")) {
            p->t++;
            if (!(n = parse_subscript(p, n, t)))
                return NULL;
        } else if (is_op(t, "(")) {
            nvec   pos = {0}, vals = {0};
            svec   names = {0};
            jnode *c     = p_node(p, JN_CALL, t);
            if (!c || parse_call_args(p, &pos, &names, &vals))
                return NULL;
            c->a = n, c->line = n->line, c->col = n->col; /* errors point at the callee */
            set_args(c, &pos, &names, &vals);
            n = c;
        } else
            return n;
    }
}

static jnode *parse_filter_expr(parser *p, jnode *n) {
    for (;;) {
        jtok *t = p->t;
        if (is_op(t, "|")) {
            p->t++;
            if (p->t->type != T_NAME) {
                char b[64];
                return p_fail(p, p->t, ASSAY_EFORMAT, "expected a filter name after '|', got %s",
                              tok_desc(p->t, b, sizeof b)),
                       NULL;
            }
            jnode *f = p_node(p, JN_FILTER, p->t);
            if (!f)
                return NULL;
            f->s = p->t->s;
            if (!jinja_known(0, f->s))
                return p_fail(p, p->t, ASSAY_EUNSUPPORTED, "filter '%.*s' is not supported",
                              (int)f->s.n, f->s.p),
                       NULL;
            p->t++;
            f->a     = n;
            nvec pos = {0}, vals = {0};
            svec names = {0};
            if (is_op(p->t, "(") && parse_call_args(p, &pos, &names, &vals))
                return NULL;
            set_args(f, &pos, &names, &vals);
            n = f;
        } else if (is_name(t, "is")) {
            p->t++;
            int neg = 0;
            if (is_name(p->t, "not"))
                neg = 1, p->t++;
            if (p->t->type != T_NAME) {
                char b[64];
                return p_fail(p, p->t, ASSAY_EFORMAT, "expected a test name after 'is', got %s",
                              tok_desc(p->t, b, sizeof b)),
                       NULL;
            }
            jnode *x = p_node(p, JN_TEST, p->t);
            if (!x)
                return NULL;
            x->s = p->t->s;
            if (!jinja_known(1, x->s))
                return p_fail(p, p->t, ASSAY_EUNSUPPORTED, "test '%.*s' is not supported",
                              (int)x->s.n, x->s.p),
                       NULL;
            x->op = neg;
            x->a  = n;
            p->t++;
            nvec  pos = {0}, vals = {0};
            svec  names = {0};
            jtok *c     = p->t;
            if (is_op(c, "(")) {
                if (parse_call_args(p, &pos, &names, &vals))
                    return NULL;
            } else if ((c->type == T_NAME || c->type == T_STR || c->type == T_INT ||
                        c->type == T_FLOAT || is_op(c, "[") || is_op(c, "{")) &&
                       !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
                if (is_name(c, "is"))
                    return p_fail(p, c, ASSAY_EFORMAT, "you cannot chain multiple tests with 'is'"),
                           NULL;
                jnode *arg = parse_primary(p);
                if (!arg || !(arg = parse_postfix(p, arg)) || nvec_push(p, &pos, arg))
                    return NULL;
            }
            set_args(x, &pos, &names, &vals);
            n = x;
        } else if (is_op(t, "(")) {
            nvec   pos = {0}, vals = {0};
            svec   names = {0};
            jnode *c     = p_node(p, JN_CALL, t);
            if (!c || parse_call_args(p, &pos, &names, &vals))
                return NULL;
            c->a = n;
            set_args(c, &pos, &names, &vals);
            n = c;
        } else
            return n;
    }
}

static jnode *parse_unary(parser *p, int with_filter) {
    if (enter(p))
        return NULL;
    jtok  *t = p->t;
    jnode *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        p->t++;
        jnode *x = parse_unary(p, 0);
        if (!x || !(n = p_node(p, JN_UNARY, t)))
            return NULL;
        n->op = t->s.p[0];
        n->a  = x;
    } else if (!(n = parse_primary(p)))
        return NULL;
    if (!(n = parse_postfix(p, n)))
        return NULL;
    if (with_filter && !(n = parse_filter_expr(p, n)))
        return NULL;
    p->depth--;
    return n;
}

static jnode *binary(parser *p, const jtok *at, int op, jnode *a, jnode *b) {
    jnode *n = p_node(p, JN_BINARY, at);
    if (!n)
        return NULL;
    n->op = op, n->a = a, n->b = b;
    return n;
}

static jnode *parse_pow(parser *p) {
    jnode *n = parse_unary(p, 1);
    while (n && is_op(p->t, "**")) {
        jtok  *t = p->t++;
        jnode *r = parse_unary(p, 1);
        n        = r ? binary(p, t, JOP_POW, n, r) : NULL;
    }
    return n;
}

static jnode *parse_math2(parser *p) {
    jnode *n = parse_pow(p);
    while (n) {
        jtok *t  = p->t;
        int   op = is_op(t, "*")    ? JOP_MUL
                   : is_op(t, "/")  ? JOP_DIV
                   : is_op(t, "//") ? JOP_FLOORDIV
                   : is_op(t, "%")  ? JOP_MOD
                                    : 0;
        if (!op)
            break;
        p->t++;
        jnode *r = parse_pow(p);
        n        = r ? binary(p, t, op, n, r) : NULL;
    }
    return n;
}

static jnode *parse_concat(parser *p) {
    jnode *n = parse_math2(p);
    while (n && is_op(p->t, "~")) {
        jtok  *t = p->t++;
        jnode *r = parse_math2(p);
        n        = r ? binary(p, t, JOP_CONCAT, n, r) : NULL;
    }
    return n;
}

static jnode *parse_math1(parser *p) {
    jnode *n = parse_concat(p);
    while (n && (is_op(p->t, "+") || is_op(p->t, "-"))) {
        jtok  *t = p->t++;
        jnode *r = parse_concat(p);
        n        = r ? binary(p, t, t->s.p[0] == '+' ? JOP_ADD : JOP_SUB, n, r) : NULL;
    }
    return n;
}

static jnode *parse_compare(parser *p) {
    jtok  *at = p->t;
    jnode *n  = parse_math1(p);
    if (!n)
        return NULL;
    nvec kids = {0};
    int *ops  = NULL;
    for (;;) {
        jtok *t  = p->t;
        int   op = is_op(t, "==")     ? JOP_EQ
                   : is_op(t, "!=")   ? JOP_NE
                   : is_op(t, "<")    ? JOP_LT
                   : is_op(t, "<=")   ? JOP_LE
                   : is_op(t, ">")    ? JOP_GT
                   : is_op(t, ">=")   ? JOP_GE
                   : is_name(t, "in") ? JOP_IN
                                      : 0;
        if (!op && is_name(t, "not") && is_name(t + 1, "in"))
            op = JOP_NOTIN, p->t++;
        if (!op)
            break;
        p->t++;
        jnode *r = parse_math1(p);
        if (!r || nvec_push(p, &kids, r))
            return NULL;
        int *nops = jarena_alloc(p->arena, kids.n * sizeof *nops);
        if (!nops)
            return p_fail(p, t, ASSAY_ENOMEM, "out of memory"), NULL;
        if (ops)
            memcpy(nops, ops, (kids.n - 1) * sizeof *nops);
        nops[kids.n - 1] = op;
        ops              = nops;
    }
    if (!kids.n)
        return n;
    jnode *c = p_node(p, JN_COMPARE, at);
    if (!c)
        return NULL;
    c->a = n, c->kids = kids.v, c->nkids = kids.n, c->ops = ops;
    return c;
}

static jnode *parse_not(parser *p) {
    if (is_name(p->t, "not")) {
        jtok *t = p->t++;
        if (enter(p))
            return NULL;
        jnode *x = parse_not(p), *n;
        p->depth--;
        if (!x || !(n = p_node(p, JN_UNARY, t)))
            return NULL;
        n->op = '!', n->a = x;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(parser *p) {
    jnode *n = parse_not(p);
    while (n && is_name(p->t, "and")) {
        jtok  *t = p->t++;
        jnode *r = parse_not(p), *x;
        if (!r || !(x = p_node(p, JN_AND, t)))
            return NULL;
        x->a = n, x->b = r, n = x;
    }
    return n;
}

static jnode *parse_or(parser *p) {
    jnode *n = parse_and(p);
    while (n && is_name(p->t, "or")) {
        jtok  *t = p->t++;
        jnode *r = parse_and(p), *x;
        if (!r || !(x = p_node(p, JN_OR, t)))
            return NULL;
        x->a = n, x->b = r, n = x;
    }
    return n;
}

static jnode *parse_expr(parser *p, int with_cond) {
    if (enter(p))
        return NULL;
    jnode *n = parse_or(p);
    while (n && with_cond && is_name(p->t, "if")) {
        jtok  *t = p->t++;
        jnode *c = parse_or(p), *x, *e = NULL;
        if (!c)
            return NULL;
        if (is_name(p->t, "else")) {
            p->t++;
            if (!(e = parse_expr(p, 1)))
                return NULL;
        }
        if (!(x = p_node(p, JN_COND, t)))
            return NULL;
        x->a = c, x->b = n, x->c = e, n = x;
    }
    if (n)
        p->depth--;
    return n;
}

/* Expressions separated by commas form a tuple; one without a comma is itself. */
static jnode *parse_tuple(parser *p, int with_cond, int explicit_parens) {
    jtok *at    = p->t;
    nvec  items = {0};
    int   comma = 0;
    for (;;) {
        if (items.n) {
            if (!is_op(p->t, ","))
                break;
            p->t++;
            comma = 1;
        }
        jtok *t = p->t;
        if (t->type == T_VEND || t->type == T_BEND || is_op(t, ")") || is_op(t, "]") ||
            is_op(t, "}") ||
            (t->type == T_NAME &&
             (is_name(t, "in") || is_name(t, "recursive") || (!with_cond && is_name(t, "if")))))
            break;
        jnode *x = with_cond ? parse_expr(p, 1) : parse_or(p);
        if (!x || nvec_push(p, &items, x))
            return NULL;
    }
    if (!items.n && !explicit_parens) {
        char b[64];
        return p_fail(p, p->t, ASSAY_EFORMAT, "expected an expression, got %s",
                      tok_desc(p->t, b, sizeof b)),
               NULL;
    }
    if (items.n == 1 && !comma)
        return items.v[0];
    jnode *n = p_node(p, JN_LIST, at);
    if (!n)
        return NULL;
    n->op = 1, n->kids = items.v, n->nkids = items.n;
    return n;
}

/* ---- statements ---- */

static jnode *parse_body(parser *p, const char *const *ends, size_t nends, const jtok *opener);

static int expect_bend(parser *p) { return expect_type(p, T_BEND, "'%}'"); }

static int parse_targets(parser *p, svec *names) {
    for (;;) {
        if (p->t->type != T_NAME) {
            char b[64];
            return p_fail(p, p->t, ASSAY_EFORMAT, "expected a variable name, got %s",
                          tok_desc(p->t, b, sizeof b));
        }
        if (svec_push(p, names, p->t->s))
            return -1;
        p->t++;
        if (!is_op(p->t, ","))
            return 0;
        p->t++;
    }
}

static jnode *parse_if(parser *p, const jtok *at) {
    static const char *const ends[] = {"elif", "else", "endif"};
    jnode                   *n      = p_node(p, JN_IF, at);
    nvec                     conds = {0}, bodies = {0};
    if (!n)
        return NULL;
    for (;;) {
        jnode *c = parse_tuple(p, 0, 0);
        if (!c || expect_bend(p))
            return NULL;
        jnode *b = parse_body(p, ends, 3, at);
        if (!b || nvec_push(p, &conds, c) || nvec_push(p, &bodies, b))
            return NULL;
        if (is_name(p->t, "elif")) {
            p->t++;
            continue;
        }
        if (is_name(p->t, "else")) {
            p->t++;
            if (expect_bend(p))
                return NULL;
            jnode *e = parse_body(p, ends + 2, 1, at);
            if (!e || nvec_push(p, &bodies, e))
                return NULL;
        }
        p->t++; /* endif */
        if (expect_bend(p))
            return NULL;
        break;
    }
    n->kids = conds.v, n->nkids = conds.n, n->kids2 = bodies.v, n->nkids2 = bodies.n;
    return n;
}

static jnode *parse_for(parser *p, const jtok *at) {
    static const char *const ends[] = {"else", "endfor"};
    jnode                   *n      = p_node(p, JN_FOR, at);
    svec                     names  = {0};
    if (!n || parse_targets(p, &names))
        return NULL;
    if (!is_name(p->t, "in")) {
        char b[64];
        return p_fail(p, p->t, ASSAY_EFORMAT, "expected 'in' in a for loop, got %s",
                      tok_desc(p->t, b, sizeof b)),
               NULL;
    }
    p->t++;
    if (!(n->a = parse_tuple(p, 0, 0)))
        return NULL;
    if (is_name(p->t, "if")) {
        p->t++;
        if (!(n->b = parse_expr(p, 1)))
            return NULL;
    }
    if (is_name(p->t, "recursive"))
        return p_fail(p, p->t, ASSAY_EUNSUPPORTED, "recursive for loops are not supported"), NULL;
    if (expect_bend(p))
        return NULL;
    p->loops++;
    n->c = parse_body(p, ends, 2, at);
    p->loops--;
    if (!n->c)
        return NULL;
    if (is_name(p->t, "else")) {
        p->t++;
        if (expect_bend(p) || !(n->d = parse_body(p, ends + 1, 1, at)))
            return NULL;
    }
    p->t++;
    if (expect_bend(p))
        return NULL;
    n->names = names.v, n->nnames = names.n;
    return n;
}

static jnode *parse_set(parser *p, const jtok *at) {
    if (p->t->type == T_NAME && is_op(p->t + 1, ".")) {
        jnode *n = p_node(p, JN_SETATTR, at);
        if (!n)
            return NULL;
        n->s = p->t->s;
        p->t += 2;
        if (p->t->type != T_NAME)
            return p_fail(p, p->t, ASSAY_EFORMAT, "expected an attribute name after '.'"), NULL;
        n->s2 = p->t->s;
        p->t++;
        if (expect_op(p, "=") || !(n->a = parse_tuple(p, 1, 0)) || expect_bend(p))
            return NULL;
        return n;
    }
    svec names = {0};
    if (parse_targets(p, &names))
        return NULL;
    if (p->t->type == T_BEND && names.n == 1) {
        static const char *const ends[] = {"endset"};
        p->t++;
        jnode *n = p_node(p, JN_SETBLOCK, at);
        if (!n || !(n->a = parse_body(p, ends, 1, at)))
            return NULL;
        n->s = names.v[0];
        p->t++;
        return expect_bend(p) ? NULL : n;
    }
    if (is_op(p->t, "|"))
        return p_fail(p, p->t, ASSAY_EUNSUPPORTED,
                      "filtered set blocks ({%% set x | filter %%}) are not supported"),
               NULL;
    jnode *n = p_node(p, JN_SET, at);
    if (!n || expect_op(p, "=") || !(n->a = parse_tuple(p, 1, 0)) || expect_bend(p))
        return NULL;
    n->names = names.v, n->nnames = names.n;
    return n;
}

static jnode *parse_macro(parser *p, const jtok *at) {
    static const char *const ends[] = {"endmacro"};
    jnode                   *n      = p_node(p, JN_MACRO, at);
    svec                     names  = {0};
    nvec                     defs   = {0};
    if (!n)
        return NULL;
    if (p->t->type != T_NAME)
        return p_fail(p, p->t, ASSAY_EFORMAT, "expected a macro name"), NULL;
    n->s = p->t->s;
    p->t++;
    if (expect_op(p, "("))
        return NULL;
    while (!is_op(p->t, ")")) {
        if (names.n && expect_op(p, ","))
            return NULL;
        if (p->t->type != T_NAME)
            return p_fail(p, p->t, ASSAY_EFORMAT, "expected a parameter name"), NULL;
        jstr   name = p->t->s;
        jnode *def  = NULL;
        p->t++;
        if (is_op(p->t, "=")) {
            p->t++;
            if (!(def = parse_expr(p, 1)))
                return NULL;
        } else if (defs.n && defs.v[defs.n - 1])
            return p_fail(p, p->t, ASSAY_EFORMAT,
                          "parameter without a default after one with a default"),
                   NULL;
        if (svec_push(p, &names, name) || nvec_push(p, &defs, def))
            return NULL;
    }
    p->t++;
    int loops = p->loops; /* a macro body is a function: no loop around it */
    p->loops  = 0;
    if (!expect_bend(p))
        n->a = parse_body(p, ends, 1, at);
    p->loops = loops;
    if (!n->a)
        return NULL;
    p->t++;
    if (expect_bend(p))
        return NULL;
    n->names = names.v, n->nnames = names.n, n->kids = defs.v, n->nkids = defs.n;
    return n;
}

static jnode *parse_statement(parser *p) {
    jtok *at = p->t; /* the tag's name */
    if (at->type != T_NAME) {
        char b[64];
        return p_fail(p, at, ASSAY_EFORMAT, "expected a tag name after '{%%', got %s",
                      tok_desc(at, b, sizeof b)),
               NULL;
    }
    if (enter(p))
        return NULL;
    p->t++;
    jnode *n = NULL;
    if (is_name(at, "if"))
        n = parse_if(p, at);
    else if (is_name(at, "for"))
        n = parse_for(p, at);
    else if (is_name(at, "set"))
        n = parse_set(p, at);
    else if (is_name(at, "macro"))
        n = parse_macro(p, at);
    else if (is_name(at, "break") || is_name(at, "continue")) {
        if (!p->loops)
            return p_fail(p, at, ASSAY_EFORMAT, "'%s' outside a for loop",
                          is_name(at, "break") ? "break" : "continue"),
                   NULL;
        if ((n = p_node(p, is_name(at, "break") ? JN_BREAK : JN_CONTINUE, at)) && expect_bend(p))
            n = NULL;
    } else if (is_name(at, "generation")) {
        /* transformers' assistant-mask tag renders its body unchanged */
        static const char *const ends[] = {"endgeneration"};
        if (!expect_bend(p) && (n = parse_body(p, ends, 1, at))) {
            p->t++;
            if (expect_bend(p))
                n = NULL;
        }
    } else {
        static const char *const known[] = {"block", "extends",   "include", "import",     "from",
                                            "call",  "filter",    "with",    "autoescape", "do",
                                            "trans", "pluralize", "print"};
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            if (is_name(at, known[k]))
                return p_fail(p, at, ASSAY_EUNSUPPORTED,
                              "'{%% %s %%}' is not supported in chat templates", known[k]),
                       NULL;
        return p_fail(p, at, ASSAY_EFORMAT, "unknown tag '%.*s'",
                      (int)(at->s.n > 40 ? 40 : at->s.n), at->s.p),
               NULL;
    }
    if (n)
        p->depth--;
    return n;
}

/* Statements until EOF (nends 0) or a {% NAME %} with NAME in ends, left at that name. */
static jnode *parse_body(parser *p, const char *const *ends, size_t nends, const jtok *opener) {
    jnode *body = p_node(p, JN_BODY, p->t);
    nvec   kids = {0};
    if (!body)
        return NULL;
    for (;;) {
        jtok  *t = p->t;
        jnode *n = NULL;
        if (t->type == T_EOF) {
            if (nends)
                return p_fail(p, t, ASSAY_EFORMAT,
                              "unexpected end of template: the '%.*s' tag at %d:%d expects '%s'",
                              (int)opener->s.n, opener->s.p, opener->line, opener->col,
                              ends[nends - 1]),
                       NULL;
            break;
        }
        if (t->type == T_TEXT) {
            if (!(n = p_node(p, JN_TEXT, t)))
                return NULL;
            n->s = t->s;
            p->t++;
        } else if (t->type == T_VBEGIN) {
            p->t++;
            if (!(n = p_node(p, JN_OUTPUT, t)) || !(n->a = parse_tuple(p, 1, 0)) ||
                expect_type(p, T_VEND, "'}}'"))
                return NULL;
        } else if (t->type == T_BBEGIN) {
            jtok *name = t + 1;
            for (size_t k = 0; k < nends; k++)
                if (is_name(name, ends[k])) {
                    p->t = name;
                    goto done;
                }
            if (name->type == T_NAME && name->s.n >= 3 &&
                (memcmp(name->s.p, "end", 3) == 0 || is_name(name, "elif") ||
                 is_name(name, "else")))
                return p_fail(p, name, ASSAY_EFORMAT, "unexpected '%.*s'%s", (int)name->s.n,
                              name->s.p, nends ? "" : " (no block is open)"),
                       NULL;
            p->t++;
            if (!(n = parse_statement(p)))
                return NULL;
        } else {
            char b[64];
            return p_fail(p, t, ASSAY_EFORMAT, "unexpected %s", tok_desc(t, b, sizeof b)), NULL;
        }
        if (nvec_push(p, &kids, n))
            return NULL;
    }
done:
    body->kids = kids.v, body->nkids = kids.n;
    return body;
}

int jinja_parse(jarena *arena, const char *text, size_t len, const char *where, jnode **root,
                assay_error *err) {
    lexer L = {.arena = arena, .where = where, .err = err, .lc_line = 1};
    *root   = NULL;
    /* newlines normalized to \n; one trailing newline dropped (keep_trailing_newline=False) */
    L.src = jarena_alloc(arena, len + 1);
    if (!L.src)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for a %zu-byte template", where,
                          len);
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\r') {
            if (i + 1 < len && text[i + 1] == '\n')
                i++;
            c = '\n';
        }
        L.src[L.n++] = c;
    }
    if (L.n && L.src[L.n - 1] == '\n')
        L.n--;
    int rc = lex_all(&L);
    if (!rc) {
        parser p = {.L = &L, .t = L.toks, .err = err, .where = where, .arena = arena};
        *root    = parse_body(&p, NULL, 0, L.toks);
        if (!*root)
            rc = err->code ? err->code : ASSAY_EINTERNAL;
    }
    free(L.toks);
    return rc;
}
