/* loader/jinja_eval.c — renders a parsed chat template with Python's value semantics as Jinja2
 * evaluates them in transformers' sandboxed environment: default Undefined (prints "", fails
 * when used further), Python str()/repr() of values, immutable lists and dicts, namespace()
 * assignment, the `tojson` filter transformers defines (json.dumps, ensure_ascii=False). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "core/util.h"
#include "loader/jinja_internal.h"

#define MAX_RANGE 100000 /* the sandbox's cap on range() */

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };
enum { FN_RAISE = 1, FN_NAMESPACE, FN_DICT, FN_RANGE, FN_STRFTIME };

typedef struct jvar {
    jstr name;
    jval v;
} jvar;

struct jframe {
    jframe *parent;
    jvar   *vars;
    size_t  n, cap;
};

typedef struct sbuf {
    char  *p;
    size_t n, cap, max;
} sbuf;

typedef struct render {
    jarena       arena;
    const char  *where;
    assay_error *err;
    sbuf        *out;
    jframe      *top;
    long         iterations;
    int          depth, calls;
    int          ctl;
} render;

/* ---- errors ---- */

static int rfail(render *R, const jnode *at, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int rfail(render *R, const jnode *at, int code, const char *fmt, ...) {
    if (R->err->code) /* the first error wins */
        return R->err->code;
    char    msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        return assay_fail(R->err, code, "%s:%d:%d: %s", R->where, at->line, at->col, msg);
    return assay_fail(R->err, code, "%s: %s", R->where, msg);
}

static int oom(render *R, const jnode *at) {
    return rfail(R, at, ASSAY_ENOMEM, "rendering needs more than %zu MiB of values",
                 JINJA_MAX_MEMORY >> 20);
}

static int undef_fail(render *R, const jnode *at, jval v) {
    return rfail(R, at, ASSAY_EINVAL, "%.*s", (int)v.u.s.n, v.u.s.p);
}

/* ---- buffers and values ---- */

static int sb_put(render *R, sbuf *b, const char *p, size_t n) {
    if (n > b->max || b->n > b->max - n)
        return rfail(R, NULL, ASSAY_EINVAL, "output exceeds %zu MiB", b->max >> 20);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return rfail(R, NULL, ASSAY_ENOMEM, "out of memory for %zu bytes of output", cap);
        b->p = q, b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}
static int sb_puts(render *R, sbuf *b, const char *s) { return sb_put(R, b, s, strlen(s)); }

static jval v_none(void) { return (jval){.kind = JV_NONE}; }
static jval v_bool(int b) { return (jval){.kind = JV_BOOL, .u.b = !!b}; }
static jval v_int(int64_t i) { return (jval){.kind = JV_INT, .u.i = i}; }
static jval v_float(double f) { return (jval){.kind = JV_FLOAT, .u.f = f}; }
static jval v_strn(const char *p, size_t n) { return (jval){.kind = JV_STR, .u.s = {p, n}}; }

static int v_str_copy(render *R, const char *p, size_t n, jval *out) {
    char *q = jarena_alloc(&R->arena, n + 1);
    if (!q)
        return oom(R, NULL);
    if (n)
        memcpy(q, p, n);
    *out = v_strn(q, n);
    return 0;
}

/* An undefined value that remembers why, for the error its use raises. */
static jval v_undef(render *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static jval v_undef(render *R, const char *fmt, ...) {
    char    msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    jval  v = {.kind = JV_UNDEF};
    char *q = jarena_alloc(&R->arena, (size_t)n + 1);
    if (q)
        memcpy(q, msg, (size_t)n), v.u.s = (jstr){q, (size_t)n};
    return v;
}

static jlist *list_new(render *R, size_t cap) {
    jlist *l = jarena_alloc(&R->arena, sizeof *l);
    if (!l)
        return NULL;
    if (cap && !(l->items = jarena_alloc(&R->arena, cap * sizeof(jval))))
        return NULL;
    l->cap = cap;
    return l;
}
static int list_push(render *R, jlist *l, jval v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jval  *it  = jarena_alloc(&R->arena, cap * sizeof *it);
        if (!it)
            return oom(R, NULL);
        if (l->n)
            memcpy(it, l->items, l->n * sizeof *it);
        l->items = it, l->cap = cap;
    }
    l->items[l->n++] = v;
    return 0;
}
static jval v_list(jlist *l, int tuple) {
    return (jval){.kind = JV_LIST, .tuple = (uint8_t)tuple, .u.l = l};
}

static jdict *dict_new(render *R) { return jarena_alloc(&R->arena, sizeof(jdict)); }

static int py_eq(jval a, jval b);

static jval *dict_find(const jdict *d, jval key) {
    for (size_t i = 0; i < d->n; i++)
        if (py_eq(d->keys[i], key))
            return &d->vals[i];
    return NULL;
}
static jval *dict_find_str(const jdict *d, const char *p, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].kind == JV_STR && d->keys[i].u.s.n == n &&
            memcmp(d->keys[i].u.s.p, p, n) == 0)
            return &d->vals[i];
    return NULL;
}
static int dict_set(render *R, jdict *d, jval key, jval val) {
    jval *slot = dict_find(d, key);
    if (slot) {
        *slot = val;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jval  *k   = jarena_alloc(&R->arena, cap * sizeof *k);
        jval  *v   = jarena_alloc(&R->arena, cap * sizeof *v);
        if (!k || !v)
            return oom(R, NULL);
        if (d->n)
            memcpy(k, d->keys, d->n * sizeof *k), memcpy(v, d->vals, d->n * sizeof *v);
        d->keys = k, d->vals = v, d->cap = cap;
    }
    d->keys[d->n]   = key;
    d->vals[d->n++] = val;
    return 0;
}

static const char *type_name(jval v) {
    switch (v.kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.tuple ? "tuple" : "list";
    case JV_ITER: return "generator";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_MACRO: return "Macro";
    default: return "function";
    }
}

static int    is_num(jval v) { return v.kind == JV_BOOL || v.kind == JV_INT || v.kind == JV_FLOAT; }
static double num_f(jval v) {
    return v.kind == JV_FLOAT ? v.u.f : v.kind == JV_INT ? (double)v.u.i : (double)v.u.b;
}
static int64_t num_i(jval v) { return v.kind == JV_INT ? v.u.i : v.u.b; }

static int truthy(jval v) {
    switch (v.kind) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

/* ---- UTF-8 code points ---- */

static size_t cp_len(const char *p, size_t n) {
    unsigned char c = (unsigned char)p[0];
    size_t        l = c < 0x80             ? 1
                      : (c & 0xe0) == 0xc0 ? 2
                      : (c & 0xf0) == 0xe0 ? 3
                      : (c & 0xf8) == 0xf0 ? 4
                                           : 1;
    return l > n ? n : l;
}
static size_t cp_count(jstr s) {
    size_t k = 0;
    for (size_t i = 0; i < s.n; i += cp_len(s.p + i, s.n - i))
        k++;
    return k;
}
static int32_t cp_decode(const char *p, size_t n, size_t *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)p, (utf8proc_ssize_t)n, &cp);
    if (l <= 0) { /* invalid byte: carried through as is */
        *len = 1;
        return -1 - (unsigned char)p[0];
    }
    *len = (size_t)l;
    return cp;
}

/* Byte offsets of each code point start, plus the end; *count gets the number of code points. */
static size_t *cp_offsets(render *R, jstr s, size_t *count) {
    size_t  n   = cp_count(s);
    size_t *off = jarena_alloc(&R->arena, (n + 1) * sizeof *off);
    if (!off)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < s.n; i += cp_len(s.p + i, s.n - i))
        off[k++] = i;
    off[k] = s.n;
    *count = n;
    return off;
}

/* ---- str() and repr() as Python writes them ---- */

static void py_float_repr(double f, char *buf, size_t cap) {
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    char tmp[64];
    int  prec;
    for (prec = 1; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
    /* tmp: [-]d[.ddd]e[+-]xx */
    char  digits[32];
    int   nd = 0, neg = tmp[0] == '-';
    char *q = tmp + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int    e   = atoi(q + 1);
    size_t o   = 0;
    char   out[64];
    if (neg)
        out[o++] = '-';
    if (e >= -4 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > e + 1)
                for (int i = e + 1; i < nd; i++)
                    out[o++] = digits[i];
            else
                out[o++] = '0';
        } else {
            out[o++] = '0', out[o++] = '.';
            for (int i = 0; i < -e - 1; i++)
                out[o++] = '0';
            for (int i = 0; i < nd; i++)
                out[o++] = digits[i];
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    snprintf(buf, cap, "%s", out);
}

static int write_str(render *R, sbuf *b, jval v, int repr);

/* Python's str.isprintable() for one code point: repr() escapes the others. */
static int py_printable(int32_t cp) {
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return 0;
    default: return 1;
    }
}

static int write_repr_str(render *R, sbuf *b, jstr s) {
    int  has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    if (sb_put(R, b, &q, 1))
        return -1;
    for (size_t i = 0; i < s.n;) {
        size_t  len;
        int32_t cp = cp_decode(s.p + i, s.n - i, &len);
        char    e[16];
        if (cp == q || cp == '\\')
            snprintf(e, sizeof e, "\\%c", (char)cp);
        else if (cp == '\n')
            snprintf(e, sizeof e, "\\n");
        else if (cp == '\r')
            snprintf(e, sizeof e, "\\r");
        else if (cp == '\t')
            snprintf(e, sizeof e, "\\t");
        else if (cp < 0)
            snprintf(e, sizeof e, "\\udc%02x", (unsigned)(-1 - cp)); /* surrogateescape */
        else if (cp != ' ' && !py_printable(cp))
            snprintf(e, sizeof e,
                     cp < 0x100     ? "\\x%02x"
                     : cp < 0x10000 ? "\\u%04x"
                                    : "\\U%08x",
                     (unsigned)cp);
        else {
            if (sb_put(R, b, s.p + i, len))
                return -1;
            i += len;
            continue;
        }
        if (sb_puts(R, b, e))
            return -1;
        i += len;
    }
    return sb_put(R, b, &q, 1);
}

/* Python's str(v) (repr 0) or repr(v) (repr 1) appended to b. */
static int write_str(render *R, sbuf *b, jval v, int repr) {
    char num[64];
    switch (v.kind) {
    case JV_UNDEF: return repr ? sb_puts(R, b, "Undefined") : 0;
    case JV_NONE: return sb_puts(R, b, "None");
    case JV_BOOL: return sb_puts(R, b, v.u.b ? "True" : "False");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return sb_puts(R, b, num);
    case JV_FLOAT: py_float_repr(v.u.f, num, sizeof num); return sb_puts(R, b, num);
    case JV_STR: return repr ? write_repr_str(R, b, v.u.s) : sb_put(R, b, v.u.s.p, v.u.s.n);
    case JV_LIST:
        if (++R->depth > JINJA_MAX_DEPTH)
            return rfail(R, NULL, ASSAY_EINVAL, "value nested deeper than %d levels",
                         JINJA_MAX_DEPTH);
        if (sb_puts(R, b, v.tuple ? "(" : "["))
            return -1;
        for (size_t i = 0; i < v.u.l->n; i++)
            if ((i && sb_puts(R, b, ", ")) || write_str(R, b, v.u.l->items[i], 1))
                return -1;
        R->depth--;
        return sb_puts(R, b, v.tuple ? (v.u.l->n == 1 ? ",)" : ")") : "]");
    case JV_DICT:
    case JV_NS:
        if (++R->depth > JINJA_MAX_DEPTH)
            return rfail(R, NULL, ASSAY_EINVAL, "value nested deeper than %d levels",
                         JINJA_MAX_DEPTH);
        if (sb_puts(R, b, v.kind == JV_NS ? "<Namespace {" : "{"))
            return -1;
        for (size_t i = 0; i < v.u.d->n; i++)
            if ((i && sb_puts(R, b, ", ")) || write_str(R, b, v.u.d->keys[i], 1) ||
                sb_puts(R, b, ": ") || write_str(R, b, v.u.d->vals[i], 1))
                return -1;
        R->depth--;
        return sb_puts(R, b, v.kind == JV_NS ? "}>" : "}");
    case JV_ITER:
        /* Jinja2 prints the generator's repr, a memory address: nothing to match */
        return rfail(R, NULL, ASSAY_EUNSUPPORTED,
                     "printing a generator (a select/map/unique/items/reverse filter's result "
                     "without |list)");
    case JV_LOOP:
        snprintf(num, sizeof num, "<LoopContext %zu/%zu>", v.u.loop->i + 1, v.u.loop->n);
        return sb_puts(R, b, num);
    default: return sb_puts(R, b, "<function>");
    }
}

/* str(v) as a value (strings are returned as they are). */
static int to_str(render *R, jval v, jstr *out) {
    if (v.kind == JV_STR) {
        *out = v.u.s;
        return 0;
    }
    sbuf b = {.max = JINJA_MAX_OUTPUT};
    if (write_str(R, &b, v, 0)) {
        free(b.p);
        return -1;
    }
    jval s;
    int  rc = v_str_copy(R, b.p ? b.p : "", b.n, &s);
    free(b.p);
    if (rc)
        return -1;
    *out = s.u.s;
    return 0;
}

/* ---- JSON (json.dumps with transformers' tojson options) ---- */

typedef struct json_opts {
    int         ascii, sort;
    const char *indent; /* NULL: none */
    size_t      indent_n;
    jstr        item_sep, key_sep;
} json_opts;

static int json_write(render *R, const jnode *at, sbuf *b, jval v, const json_opts *o, int level);

static int json_newline(render *R, sbuf *b, const json_opts *o, int level) {
    if (sb_puts(R, b, "\n"))
        return -1;
    for (int i = 0; i < level; i++)
        if (sb_put(R, b, o->indent, o->indent_n))
            return -1;
    return 0;
}

static int json_string(render *R, sbuf *b, jstr s, int ascii) {
    if (sb_puts(R, b, "\""))
        return -1;
    for (size_t i = 0; i < s.n;) {
        size_t  len;
        int32_t cp = cp_decode(s.p + i, s.n - i, &len);
        char    e[16];
        e[0] = 0;
        if (cp == '"')
            snprintf(e, sizeof e, "\\\"");
        else if (cp == '\\')
            snprintf(e, sizeof e, "\\\\");
        else if (cp == '\n')
            snprintf(e, sizeof e, "\\n");
        else if (cp == '\r')
            snprintf(e, sizeof e, "\\r");
        else if (cp == '\t')
            snprintf(e, sizeof e, "\\t");
        else if (cp == '\b')
            snprintf(e, sizeof e, "\\b");
        else if (cp == '\f')
            snprintf(e, sizeof e, "\\f");
        else if (cp >= 0 && cp < 0x20)
            snprintf(e, sizeof e, "\\u%04x", (unsigned)cp);
        else if (cp < 0)
            snprintf(e, sizeof e, "\\udc%02x", (unsigned)(-1 - cp));
        else if (ascii && cp >= 0x7f) {
            if (cp >= 0x10000) {
                unsigned c = (unsigned)cp - 0x10000;
                snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
            } else
                snprintf(e, sizeof e, "\\u%04x", (unsigned)cp);
        }
        if (e[0] ? sb_puts(R, b, e) : sb_put(R, b, s.p + i, len))
            return -1;
        i += len;
    }
    return sb_puts(R, b, "\"");
}

static int cmp_str_keys(const void *x, const void *y) {
    const jval *a = *(const jval *const *)x, *b = *(const jval *const *)y;
    size_t      n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int         c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
    return c ? c : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

static int json_write(render *R, const jnode *at, sbuf *b, jval v, const json_opts *o, int level) {
    char num[64];
    switch (v.kind) {
    case JV_NONE: return sb_puts(R, b, "null");
    case JV_BOOL: return sb_puts(R, b, v.u.b ? "true" : "false");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return sb_puts(R, b, num);
    case JV_FLOAT:
        if (isnan(v.u.f))
            return sb_puts(R, b, "NaN");
        if (isinf(v.u.f))
            return sb_puts(R, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        py_float_repr(v.u.f, num, sizeof num);
        return sb_puts(R, b, num);
    case JV_STR: return json_string(R, b, v.u.s, o->ascii);
    case JV_LIST:
    case JV_DICT: {
        if (level >= JINJA_MAX_DEPTH)
            return rfail(R, at, ASSAY_EINVAL, "tojson: value nested deeper than %d levels",
                         JINJA_MAX_DEPTH);
        int    is_list = v.kind == JV_LIST;
        size_t n       = is_list ? v.u.l->n : v.u.d->n;
        if (n == 0)
            return sb_puts(R, b, is_list ? "[]" : "{}");
        jval **order = NULL;
        if (!is_list) {
            if (!(order = jarena_alloc(&R->arena, n * sizeof *order)))
                return oom(R, at);
            for (size_t i = 0; i < n; i++) {
                jval k = v.u.d->keys[i];
                if (k.kind != JV_STR && k.kind != JV_INT && k.kind != JV_BOOL &&
                    k.kind != JV_NONE && k.kind != JV_FLOAT)
                    return rfail(R, at, ASSAY_EINVAL,
                                 "tojson: keys must be str, int, float, bool or None, not %s",
                                 type_name(k));
                if (o->sort && k.kind != JV_STR)
                    return rfail(R, at, ASSAY_EINVAL, "tojson: sort_keys needs string keys");
                order[i] = &v.u.d->keys[i];
            }
            if (o->sort)
                qsort(order, n, sizeof *order, cmp_str_keys);
        }
        if (sb_puts(R, b, is_list ? "[" : "{"))
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (i && sb_put(R, b, o->item_sep.p, o->item_sep.n))
                return -1;
            if (o->indent && json_newline(R, b, o, level + 1))
                return -1;
            if (is_list) {
                if (json_write(R, at, b, v.u.l->items[i], o, level + 1))
                    return -1;
                continue;
            }
            jval  k   = *order[i];
            jval *val = &v.u.d->vals[order[i] - v.u.d->keys];
            if (k.kind == JV_STR) {
                if (json_string(R, b, k.u.s, o->ascii))
                    return -1;
            } else {
                if (sb_puts(R, b, "\"") || json_write(R, at, b, k, o, level + 1) ||
                    sb_puts(R, b, "\""))
                    return -1;
            }
            if (sb_put(R, b, o->key_sep.p, o->key_sep.n) ||
                json_write(R, at, b, *val, o, level + 1))
                return -1;
        }
        if (o->indent && json_newline(R, b, o, level))
            return -1;
        return sb_puts(R, b, is_list ? "]" : "}");
    }
    default:
        if (v.kind == JV_UNDEF)
            return undef_fail(R, at, v);
        return rfail(R, at, ASSAY_EINVAL, "tojson: Object of type %s is not JSON serializable",
                     type_name(v));
    }
}

/* ---- comparisons ---- */

/* Set when a comparison met values nested deeper than the cap (lists built in a loop can nest
 * without bound); eval() turns it into an error, so the recursion below stays bounded. */
static _Thread_local int eq_too_deep;

static int py_eq_at(jval a, jval b, int depth) {
    if (depth > JINJA_MAX_DEPTH) {
        eq_too_deep = 1;
        return 0;
    }
    if (is_num(a) && is_num(b)) {
        if (a.kind == JV_FLOAT || b.kind == JV_FLOAT)
            return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.kind != b.kind)
        return 0;
    switch (a.kind) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR:
        return a.u.s.n == b.u.s.n && (a.u.s.n == 0 || memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0);
    case JV_LIST:
        if (a.tuple != b.tuple || a.u.l->n != b.u.l->n)
            return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!py_eq_at(a.u.l->items[i], b.u.l->items[i], depth + 1))
                return 0;
        return 1;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n)
            return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jval *o = dict_find(b.u.d, a.u.d->keys[i]);
            if (!o || !py_eq_at(a.u.d->vals[i], *o, depth + 1))
                return 0;
        }
        return 1;
    case JV_NS: return a.u.d == b.u.d;
    case JV_ITER: return a.u.l == b.u.l;
    case JV_LOOP:
    case JV_CYCLE: return a.u.loop == b.u.loop;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_MACRO: return a.u.macro == b.u.macro;
    default: return 0;
    }
}

/* Python's ordering: <0, 0, >0 in *c; -1 with err set when the types do not order. */
static int py_eq(jval a, jval b) { return py_eq_at(a, b, 0); }

static int py_cmp_at(render *R, const jnode *at, const char *op, jval a, jval b, int *c,
                     int depth) {
    if (depth > JINJA_MAX_DEPTH)
        return rfail(R, at, ASSAY_EINVAL, "comparing values nested deeper than %d levels",
                     JINJA_MAX_DEPTH),
               -1;
    if (is_num(a) && is_num(b)) {
        if (a.kind == JV_FLOAT || b.kind == JV_FLOAT) {
            double x = num_f(a), y = num_f(b);
            *c = x < y ? -1 : x > y ? 1 : x == y ? 0 : 2; /* 2: NaN, every comparison false */
        } else
            *c = (num_i(a) > num_i(b)) - (num_i(a) < num_i(b));
        return 0;
    }
    if (a.kind == JV_STR && b.kind == JV_STR) {
        /* UTF-8 byte order is code point order */
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int    r = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        *c       = r ? (r > 0) - (r < 0) : (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
        return 0;
    }
    if (a.kind == JV_LIST && b.kind == JV_LIST && a.tuple == b.tuple) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (py_eq_at(a.u.l->items[i], b.u.l->items[i], depth + 1))
                continue;
            return py_cmp_at(R, at, op, a.u.l->items[i], b.u.l->items[i], c, depth + 1);
        }
        *c = (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
        return 0;
    }
    if (a.kind == JV_UNDEF)
        return undef_fail(R, at, a), -1;
    if (b.kind == JV_UNDEF)
        return undef_fail(R, at, b), -1;
    rfail(R, at, ASSAY_EINVAL, "'%s' not supported between instances of '%s' and '%s'", op,
          type_name(a), type_name(b));
    return -1;
}

static int py_cmp(render *R, const jnode *at, const char *op, jval a, jval b, int *c) {
    return py_cmp_at(R, at, op, a, b, c, 0);
}

/* `needle in hay`; -1 on a type error. */
static int py_contains(render *R, const jnode *at, jval hay, jval needle) {
    switch (hay.kind) {
    case JV_STR:
        if (needle.kind != JV_STR)
            return needle.kind == JV_UNDEF
                       ? (undef_fail(R, at, needle), -1)
                       : (rfail(R, at, ASSAY_EINVAL,
                                "'in <string>' requires string as left operand, not %s",
                                type_name(needle)),
                          -1);
        if (needle.u.s.n == 0)
            return 1;
        return memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case JV_LIST:
    case JV_ITER:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (py_eq(hay.u.l->items[i], needle))
                return 1;
        return 0;
    case JV_DICT: return dict_find(hay.u.d, needle) != NULL;
    case JV_UNDEF: return 0; /* Undefined iterates as empty */
    default:
        rfail(R, at, ASSAY_EINVAL, "argument of type '%s' is not iterable", type_name(hay));
        return -1;
    }
}

/* ---- iteration ---- */

/* The items `for` would see: list items, string characters, dict keys; Undefined is empty. */
static int iter_items(render *R, const jnode *at, jval v, jval **items, size_t *n) {
    switch (v.kind) {
    case JV_LIST:
    case JV_ITER: *items = v.u.l->items, *n = v.u.l->n; return 0;
    case JV_DICT: *items = v.u.d->keys, *n = v.u.d->n; return 0;
    case JV_UNDEF: *items = NULL, *n = 0; return 0;
    case JV_STR: {
        size_t  count;
        size_t *off = cp_offsets(R, v.u.s, &count);
        jval   *it  = count ? jarena_alloc(&R->arena, count * sizeof *it) : NULL;
        if (!off || (count && !it))
            return oom(R, at);
        for (size_t i = 0; i < count; i++)
            it[i] = v_strn(v.u.s.p + off[i], off[i + 1] - off[i]);
        *items = it, *n = count;
        return 0;
    }
    case JV_LOOP: *items = v.u.loop->items, *n = v.u.loop->n; return 0;
    default: return rfail(R, at, ASSAY_EINVAL, "'%s' object is not iterable", type_name(v));
    }
}

/* ---- frames ---- */

static jval *frame_find(jframe *f, const char *p, size_t n) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (f->vars[i].name.n == n && memcmp(f->vars[i].name.p, p, n) == 0)
                return &f->vars[i].v;
    return NULL;
}

static int frame_set(render *R, jframe *f, jstr name, jval v) {
    for (size_t i = 0; i < f->n; i++)
        if (f->vars[i].name.n == name.n && memcmp(f->vars[i].name.p, name.p, name.n) == 0) {
            f->vars[i].v = v;
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        jvar  *nv  = jarena_alloc(&R->arena, cap * sizeof *nv);
        if (!nv)
            return oom(R, NULL);
        if (f->n)
            memcpy(nv, f->vars, f->n * sizeof *nv);
        f->vars = nv, f->cap = cap;
    }
    f->vars[f->n++] = (jvar){name, v};
    return 0;
}

/* ---- expressions ---- */

static int eval(render *R, jframe *f, const jnode *n, jval *out);
static int exec_body(render *R, jframe *f, const jnode *body, sbuf *out);

static int jstr_is(jstr s, const char *lit) {
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static int get_attr(render *R, const jnode *at, jval obj, jstr name, jval *out) {
    switch (obj.kind) {
    case JV_UNDEF: return undef_fail(R, at, obj);
    case JV_DICT:
    case JV_NS: {
        jval *v = dict_find_str(obj.u.d, name.p, name.n);
        if (v) {
            *out = *v;
            return 0;
        }
        break;
    }
    case JV_LOOP: {
        jloop *l = obj.u.loop;
        if (jstr_is(name, "index0"))
            *out = v_int((int64_t)l->i);
        else if (jstr_is(name, "index"))
            *out = v_int((int64_t)l->i + 1);
        else if (jstr_is(name, "revindex"))
            *out = v_int((int64_t)(l->n - l->i));
        else if (jstr_is(name, "revindex0"))
            *out = v_int((int64_t)(l->n - l->i - 1));
        else if (jstr_is(name, "first"))
            *out = v_bool(l->i == 0);
        else if (jstr_is(name, "last"))
            *out = v_bool(l->i + 1 == l->n);
        else if (jstr_is(name, "length"))
            *out = v_int((int64_t)l->n);
        else if (jstr_is(name, "depth"))
            *out = v_int(1);
        else if (jstr_is(name, "depth0"))
            *out = v_int(0);
        else if (jstr_is(name, "previtem"))
            *out = l->i ? l->items[l->i - 1] : v_undef(R, "there is no previous item");
        else if (jstr_is(name, "nextitem"))
            *out = l->i + 1 < l->n ? l->items[l->i + 1] : v_undef(R, "there is no next item");
        else if (jstr_is(name, "cycle"))
            *out = (jval){.kind = JV_CYCLE, .u.loop = l};
        else
            break;
        return 0;
    }
    default: break;
    }
    const char *tn = obj.kind == JV_NONE ? "None" : type_name(obj);
    char        what[64];
    snprintf(what, sizeof what, obj.kind == JV_NONE ? "'%s'" : "'%s object'", tn);
    *out =
        v_undef(R, "%s has no attribute '%.*s'", what, (int)(name.n > 100 ? 100 : name.n), name.p);
    return 0;
}

/* Python's slice.indices(): start, stop, step for a sequence of n. */
static int slice_indices(render *R, const jnode *at, jval *sv, size_t n, int64_t *start,
                         int64_t *stop, int64_t *step) {
    for (int k = 0; k < 3; k++)
        if (sv[k].kind != JV_NONE && sv[k].kind != JV_INT && sv[k].kind != JV_BOOL)
            return sv[k].kind == JV_UNDEF
                       ? undef_fail(R, at, sv[k])
                       : rfail(R, at, ASSAY_EINVAL,
                               "slice indices must be integers or None, not %s", type_name(sv[k]));
    int64_t len = (int64_t)n;
    *step       = sv[2].kind == JV_NONE ? 1 : num_i(sv[2]);
    if (*step == 0)
        return rfail(R, at, ASSAY_EINVAL, "slice step cannot be zero");
    int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? len - 1 : len;
    if (sv[0].kind == JV_NONE)
        *start = *step < 0 ? hi : lo;
    else {
        *start = num_i(sv[0]);
        if (*start < 0) {
            *start += len;
            if (*start < lo)
                *start = lo;
        } else if (*start > hi)
            *start = hi;
    }
    if (sv[1].kind == JV_NONE)
        *stop = *step < 0 ? lo : hi;
    else {
        *stop = num_i(sv[1]);
        if (*stop < 0) {
            *stop += len;
            if (*stop < lo)
                *stop = lo;
        } else if (*stop > hi)
            *stop = hi;
    }
    if (*step == INT64_MIN)
        return rfail(R, at, ASSAY_EINVAL, "slice step out of range");
    return 0;
}

static int do_slice(render *R, const jnode *at, jval obj, jval *sv, jval *out) {
    if (obj.kind == JV_UNDEF)
        return undef_fail(R, at, obj);
    if (obj.kind != JV_LIST && obj.kind != JV_STR) /* Jinja2 slices with Python's own [] */
        return rfail(R, at, ASSAY_EINVAL,
                     obj.kind == JV_DICT ? "unhashable type: 'slice'"
                                         : "'%s' object is not subscriptable",
                     type_name(obj));
    size_t count = 0, *off = NULL;
    if (obj.kind == JV_STR) {
        if (!(off = cp_offsets(R, obj.u.s, &count)))
            return oom(R, at);
    } else
        count = obj.u.l->n;
    int64_t start = 0, stop = 0, step = 1;
    if (slice_indices(R, at, sv, count, &start, &stop, &step))
        return -1;
    if (obj.kind == JV_LIST) {
        jlist *l = list_new(R, 0);
        if (!l)
            return oom(R, at);
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            if (list_push(R, l, obj.u.l->items[i]))
                return -1;
        *out = v_list(l, obj.tuple);
        return 0;
    }
    sbuf b = {.max = JINJA_MAX_OUTPUT};
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        if (sb_put(R, &b, obj.u.s.p + off[i], off[i + 1] - off[i])) {
            free(b.p);
            return -1;
        }
    int rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
    free(b.p);
    return rc;
}

static int get_item(render *R, const jnode *at, jval obj, jval key, jval *out) {
    switch (obj.kind) {
    case JV_UNDEF: return undef_fail(R, at, obj);
    case JV_LIST:
    case JV_STR:
        if (key.kind == JV_INT || key.kind == JV_BOOL) {
            int64_t i = num_i(key);
            if (obj.kind == JV_LIST) {
                int64_t n = (int64_t)obj.u.l->n;
                if (i < 0)
                    i += n;
                if (i >= 0 && i < n) {
                    *out = obj.u.l->items[i];
                    return 0;
                }
            } else {
                size_t  count;
                size_t *off = cp_offsets(R, obj.u.s, &count);
                if (!off)
                    return oom(R, at);
                if (i < 0)
                    i += (int64_t)count;
                if (i >= 0 && i < (int64_t)count) {
                    *out = v_strn(obj.u.s.p + off[i], off[i + 1] - off[i]);
                    return 0;
                }
            }
            *out = v_undef(R, "'%s object' has no element %lld", type_name(obj),
                           (long long)num_i(key));
            return 0;
        }
        break;
    case JV_DICT: {
        jval *v = dict_find(obj.u.d, key);
        if (v) {
            *out = *v;
            return 0;
        }
        break;
    }
    default: break;
    }
    if (key.kind == JV_STR) /* Jinja falls back to the attribute */
        return get_attr(R, at, obj, key.u.s, out);
    jstr ks;
    if (to_str(R, key, &ks))
        return -1;
    *out = v_undef(R, "'%s object' has no element %.*s", type_name(obj),
                   (int)(ks.n > 100 ? 100 : ks.n), ks.p);
    return 0;
}

/* Evaluated call arguments. */
typedef struct jargs {
    jval  *pos;
    size_t npos;
    jstr  *names;
    jval  *kw;
    size_t nkw;
} jargs;

static int eval_args(render *R, jframe *f, const jnode *n, jargs *a) {
    memset(a, 0, sizeof *a);
    a->npos = n->nkids, a->nkw = n->nkids2, a->names = n->names;
    if ((a->npos && !(a->pos = jarena_alloc(&R->arena, a->npos * sizeof(jval)))) ||
        (a->nkw && !(a->kw = jarena_alloc(&R->arena, a->nkw * sizeof(jval)))))
        return oom(R, n);
    for (size_t i = 0; i < a->npos; i++)
        if (eval(R, f, n->kids[i], &a->pos[i]))
            return -1;
    for (size_t i = 0; i < a->nkw; i++)
        if (eval(R, f, n->kids2[i], &a->kw[i]))
            return -1;
    return 0;
}

/* Binds arguments to named parameters (positional first, then by keyword); absent ones are
 * JV_UNDEF with .u.s empty. */
static int bind_args(render *R, const jnode *at, const char *fname, const jargs *a,
                     const char *const *params, size_t np, jval *out) {
    for (size_t i = 0; i < np; i++)
        out[i] = (jval){.kind = JV_UNDEF};
    if (a->npos > np)
        return rfail(R, at, ASSAY_EINVAL, "%s() takes at most %zu arguments (%zu given)", fname, np,
                     a->npos);
    for (size_t i = 0; i < a->npos; i++)
        out[i] = a->pos[i];
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < np && !jstr_is(a->names[k], params[i]))
            i++;
        if (i == np)
            return rfail(R, at, ASSAY_EINVAL, "%s() got an unexpected keyword argument '%.*s'",
                         fname, (int)a->names[k].n, a->names[k].p);
        out[i] = a->kw[k];
    }
    return 0;
}
static int present(jval v) { return !(v.kind == JV_UNDEF && v.u.s.p == NULL); }

static int need_str(render *R, const jnode *at, const char *what, jval v, jstr *s) {
    if (v.kind == JV_STR) {
        *s = v.u.s;
        return 0;
    }
    if (v.kind == JV_UNDEF && v.u.s.p)
        return undef_fail(R, at, v);
    return rfail(R, at, ASSAY_EINVAL, "%s expects a string, not %s", what, type_name(v));
}
static int need_int(render *R, const jnode *at, const char *what, jval v, int64_t *i) {
    if (v.kind == JV_INT || v.kind == JV_BOOL) {
        *i = num_i(v);
        return 0;
    }
    if (v.kind == JV_UNDEF && v.u.s.p)
        return undef_fail(R, at, v);
    return rfail(R, at, ASSAY_EINVAL, "%s expects an integer, not %s", what, type_name(v));
}

/* str.strip family; chars NULL = Python whitespace. which: 1 left, 2 right, 3 both. */
static jstr str_strip(jstr s, const jstr *chars, int which) {
    size_t a = 0, b = s.n;
    if (!chars) {
        if (which & 1)
            a = jinja_lstrip_len(s.p, s.n);
        if (which & 2)
            b = a + jinja_rstrip_len(s.p + a, s.n - a);
        return (jstr){s.p + a, b - a};
    }
    /* strip code points that occur in chars */
    for (;;) {
        if (!(which & 1) || a >= b)
            break;
        size_t l  = cp_len(s.p + a, b - a);
        int    in = 0;
        for (size_t k = 0; k < chars->n; k += cp_len(chars->p + k, chars->n - k))
            if (cp_len(chars->p + k, chars->n - k) == l && memcmp(chars->p + k, s.p + a, l) == 0)
                in = 1;
        if (!in)
            break;
        a += l;
    }
    while ((which & 2) && b > a) {
        size_t st = b - 1;
        while (st > a && ((unsigned char)s.p[st] & 0xc0) == 0x80)
            st--;
        size_t l  = b - st;
        int    in = 0;
        for (size_t k = 0; k < chars->n; k += cp_len(chars->p + k, chars->n - k))
            if (cp_len(chars->p + k, chars->n - k) == l && memcmp(chars->p + k, s.p + st, l) == 0)
                in = 1;
        if (!in)
            break;
        b = st;
    }
    return (jstr){s.p + a, b - a};
}

/* Case mapping per code point: 0 lower, 1 upper, 2 str.title() (a cased letter after an uncased
 * character starts a word), 3 capitalize, 4 the title filter (words start after runs of
 * whitespace or - ( { [ <, and their first character is upper-cased). */
static int str_case(render *R, const jnode *at, jstr s, int mode, jval *out) {
    sbuf b          = {.max = JINJA_MAX_OUTPUT};
    int  prev_cased = 0, first = 1, after_sep = 1;
    (void)at;
    for (size_t i = 0; i < s.n;) {
        size_t  len;
        int32_t cp = cp_decode(s.p + i, s.n - i, &len);
        if (cp < 0) {
            if (sb_put(R, &b, s.p + i, len))
                goto fail;
            i += len, first = 0, prev_cased = 0;
            continue;
        }
        int32_t m = cp;
        int     sep =
            (cp > 0 && cp < 0x80 && strchr("-({[<", (int)cp)) || jinja_lstrip_len(s.p + i, len) > 0;
        int up = mode == 1 || (mode == 2 && !prev_cased) || (mode == 3 && first) ||
                 (mode == 4 && after_sep);
        after_sep = sep;
        if (mode == 2 || mode == 3)
            m = up ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        else
            m = up ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        utf8proc_category_t cat = utf8proc_category(cp);
        prev_cased              = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                     cat == UTF8PROC_CATEGORY_LT;
        first = 0;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t el = utf8proc_encode_char(m, enc);
        if (sb_put(R, &b, (const char *)enc, (size_t)el))
            goto fail;
        i += len;
    }
    int rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
    free(b.p);
    return rc;
fail:
    free(b.p);
    return -1;
}

static int str_replace(render *R, const jnode *at, jstr s, jstr old, jstr new_, int64_t count,
                       jval *out) {
    sbuf b = {.max = JINJA_MAX_OUTPUT};
    if (old.n == 0) {
        /* Python inserts `new` between code points and at both ends */
        size_t  i = 0;
        int64_t k = 0;
        for (;;) {
            if (count < 0 || k < count) {
                if (sb_put(R, &b, new_.p, new_.n))
                    goto fail;
                k++;
            }
            if (i >= s.n)
                break;
            size_t l = cp_len(s.p + i, s.n - i);
            if (sb_put(R, &b, s.p + i, l))
                goto fail;
            i += l;
        }
    } else {
        size_t  i = 0;
        int64_t k = 0;
        while (i <= s.n) {
            const char *hit =
                (count < 0 || k < count) ? memmem(s.p + i, s.n - i, old.p, old.n) : NULL;
            if (!hit) {
                if (sb_put(R, &b, s.p + i, s.n - i))
                    goto fail;
                break;
            }
            if (sb_put(R, &b, s.p + i, (size_t)(hit - (s.p + i))) || sb_put(R, &b, new_.p, new_.n))
                goto fail;
            i = (size_t)(hit - s.p) + old.n;
            k++;
        }
    }
    int rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
    free(b.p);
    return rc;
fail:
    free(b.p);
    (void)at;
    return -1;
}

static int str_split(render *R, const jnode *at, jstr s, const jstr *sep, int64_t maxsplit,
                     jval *out) {
    jlist *l = list_new(R, 0);
    if (!l)
        return oom(R, at);
    if (sep && sep->n == 0)
        return rfail(R, at, ASSAY_EINVAL, "split(): empty separator");
    size_t  i = 0;
    int64_t k = 0;
    if (!sep) {
        for (;;) {
            i += jinja_lstrip_len(s.p + i, s.n - i);
            if (i >= s.n)
                break;
            if (maxsplit >= 0 && k >= maxsplit) {
                jstr rest = {s.p + i, jinja_rstrip_len(s.p + i, s.n - i)};
                if (list_push(R, l, v_strn(rest.p, rest.n)))
                    return -1;
                break;
            }
            size_t j = i;
            while (j < s.n && jinja_lstrip_len(s.p + j, s.n - j) == 0)
                j += cp_len(s.p + j, s.n - j);
            if (list_push(R, l, v_strn(s.p + i, j - i)))
                return -1;
            k++;
            i = j;
        }
    } else {
        for (;;) {
            const char *hit =
                (maxsplit < 0 || k < maxsplit) ? memmem(s.p + i, s.n - i, sep->p, sep->n) : NULL;
            if (!hit) {
                if (list_push(R, l, v_strn(s.p + i, s.n - i)))
                    return -1;
                break;
            }
            if (list_push(R, l, v_strn(s.p + i, (size_t)(hit - (s.p + i)))))
                return -1;
            i = (size_t)(hit - s.p) + sep->n;
            k++;
        }
    }
    *out = v_list(l, 0);
    return 0;
}

static int str_join(render *R, const jnode *at, jstr sep, jval seq, const jstr *attr, jval *out) {
    jval  *items;
    size_t n;
    if (iter_items(R, at, seq, &items, &n))
        return -1;
    sbuf b = {.max = JINJA_MAX_OUTPUT};
    for (size_t i = 0; i < n; i++) {
        jval it = items[i];
        if (attr && get_attr(R, at, it, *attr, &it))
            goto fail;
        if ((i && sb_put(R, &b, sep.p, sep.n)) || write_str(R, &b, it, 0))
            goto fail;
    }
    int rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
    free(b.p);
    return rc;
fail:
    free(b.p);
    return -1;
}

static int call_method(render *R, const jnode *at, jval obj, jstr name, const jargs *a, jval *out,
                       int *found) {
    *found = 1;
#define M(lit) jstr_is(name, lit)
#define ARGS(fn, ...)                                                                              \
    static const char *const params_[] = {__VA_ARGS__};                                            \
    jval                     p[sizeof params_ / sizeof *params_];                                  \
    if (bind_args(R, at, fn, a, params_, sizeof params_ / sizeof *params_, p))                     \
    return -1
    if (obj.kind == JV_STR) {
        jstr s = obj.u.s;
        if (M("strip") || M("lstrip") || M("rstrip")) {
            ARGS("strip", "chars");
            jstr chars;
            if (present(p[0]) && p[0].kind != JV_NONE && need_str(R, at, "strip()", p[0], &chars))
                return -1;
            int  which = M("strip") ? 3 : M("lstrip") ? 1 : 2;
            jstr r     = str_strip(s, present(p[0]) && p[0].kind != JV_NONE ? &chars : NULL, which);
            *out       = v_strn(r.p, r.n);
            return 0;
        }
        if (M("startswith") || M("endswith")) {
            ARGS("startswith", "prefix");
            jval  *cands = &p[0];
            size_t nc    = 1;
            if (p[0].kind == JV_LIST && p[0].tuple)
                cands = p[0].u.l->items, nc = p[0].u.l->n;
            *out = v_bool(0);
            for (size_t i = 0; i < nc; i++) {
                jstr x;
                if (need_str(R, at, M("startswith") ? "startswith()" : "endswith()", cands[i], &x))
                    return -1;
                if (x.n <= s.n && memcmp(M("startswith") ? s.p : s.p + s.n - x.n, x.p, x.n) == 0)
                    *out = v_bool(1);
            }
            return 0;
        }
        if (M("split")) {
            ARGS("split", "sep", "maxsplit");
            jstr    sep;
            int64_t maxsplit = -1;
            int     has_sep  = present(p[0]) && p[0].kind != JV_NONE;
            if ((has_sep && need_str(R, at, "split()", p[0], &sep)) ||
                (present(p[1]) && need_int(R, at, "split()", p[1], &maxsplit)))
                return -1;
            return str_split(R, at, s, has_sep ? &sep : NULL, maxsplit, out);
        }
        if (M("upper") || M("lower") || M("title") || M("capitalize")) {
            ARGS("upper");
            (void)p;
            return str_case(R, at, s, M("lower") ? 0 : M("upper") ? 1 : M("title") ? 2 : 3, out);
        }
        if (M("replace")) {
            ARGS("replace", "old", "new", "count");
            jstr    o, nw;
            int64_t count = -1;
            if (need_str(R, at, "replace()", p[0], &o) || need_str(R, at, "replace()", p[1], &nw) ||
                (present(p[2]) && need_int(R, at, "replace()", p[2], &count)))
                return -1;
            return str_replace(R, at, s, o, nw, count, out);
        }
        if (M("find") || M("count")) {
            ARGS("find", "sub");
            jstr x;
            if (need_str(R, at, "find()", p[0], &x))
                return -1;
            if (M("find")) {
                const char *hit = x.n ? memmem(s.p, s.n, x.p, x.n) : s.p;
                *out = v_int(hit ? (int64_t)cp_count((jstr){s.p, (size_t)(hit - s.p)}) : -1);
            } else {
                int64_t k = 0;
                if (!x.n)
                    k = (int64_t)cp_count(s) + 1;
                else
                    for (const char *q = s.p; (q = memmem(q, s.n - (size_t)(q - s.p), x.p, x.n));
                         q += x.n)
                        k++;
                *out = v_int(k);
            }
            return 0;
        }
        if (M("join")) {
            ARGS("join", "iterable");
            return str_join(R, at, s, p[0], NULL, out);
        }
    } else if (obj.kind == JV_DICT) {
        jdict *d = obj.u.d;
        if (M("items") || M("keys") || M("values")) {
            ARGS("items");
            (void)p;
            jlist *l = list_new(R, d->n);
            if (!l)
                return oom(R, at);
            for (size_t i = 0; i < d->n; i++) {
                if (M("items")) {
                    jlist *pair = list_new(R, 2);
                    if (!pair)
                        return oom(R, at);
                    pair->items[0] = d->keys[i], pair->items[1] = d->vals[i], pair->n = 2;
                    l->items[i] = v_list(pair, 1);
                } else
                    l->items[i] = M("keys") ? d->keys[i] : d->vals[i];
            }
            l->n = d->n;
            *out = v_list(l, 0);
            return 0;
        }
        if (M("get")) {
            ARGS("get", "key", "default");
            jval *v = dict_find(d, p[0]);
            *out    = v ? *v : present(p[1]) ? p[1] : v_none();
            return 0;
        }
        if (M("pop") || M("popitem") || M("setdefault") || M("update") || M("clear"))
            return rfail(R, at, ASSAY_EINVAL,
                         "access to attribute '%.*s' of 'dict' object is unsafe.", (int)name.n,
                         name.p);
    } else if (obj.kind == JV_LIST) {
        if (M("append") || M("extend") || M("pop") || M("insert") || M("remove") || M("sort") ||
            M("reverse") || M("clear"))
            return rfail(R, at, ASSAY_EINVAL,
                         "access to attribute '%.*s' of '%s' object is unsafe.", (int)name.n,
                         name.p, type_name(obj));
        if (M("count") || M("index")) {
            ARGS("count", "value");
            int64_t k = 0, at_i = -1;
            for (size_t i = 0; i < obj.u.l->n; i++)
                if (py_eq(obj.u.l->items[i], p[0])) {
                    k++;
                    if (at_i < 0)
                        at_i = (int64_t)i;
                }
            if (M("index") && at_i < 0)
                return rfail(R, at, ASSAY_EINVAL, "list.index(x): x not in list");
            *out = v_int(M("count") ? k : at_i);
            return 0;
        }
    }
#undef M
#undef ARGS
    *found = 0;
    return 0;
}

static int call_macro(render *R, const jnode *at, const struct jmacro *mac, const jargs *a,
                      jval *out) {
    const jnode *m = mac->node;
    if (R->calls >= JINJA_MAX_CALL_DEPTH)
        return rfail(R, at, ASSAY_EINVAL, "macro calls nested deeper than %d",
                     JINJA_MAX_CALL_DEPTH);
    jframe *fr = jarena_alloc(&R->arena, sizeof *fr);
    if (!fr)
        return oom(R, at);
    fr->parent = mac->env;
    if (a->npos > m->nnames)
        return rfail(R, at, ASSAY_EINVAL, "macro '%.*s' takes not more than %zu argument(s)",
                     (int)m->s.n, m->s.p, m->nnames);
    for (size_t i = 0; i < m->nnames; i++) {
        jval v   = {.kind = JV_UNDEF};
        int  set = 0;
        if (i < a->npos)
            v = a->pos[i], set = 1;
        for (size_t k = 0; k < a->nkw; k++)
            if (a->names[k].n == m->names[i].n &&
                memcmp(a->names[k].p, m->names[i].p, a->names[k].n) == 0) {
                if (set)
                    return rfail(R, at, ASSAY_EINVAL,
                                 "macro '%.*s' got multiple values for argument '%.*s'",
                                 (int)m->s.n, m->s.p, (int)m->names[i].n, m->names[i].p);
                v = a->kw[k], set = 1;
            }
        if (!set) {
            if (m->kids[i]) {
                if (eval(R, fr, m->kids[i], &v))
                    return -1;
            } else
                v = v_undef(R, "parameter '%.*s' was not provided", (int)m->names[i].n,
                            m->names[i].p);
        }
        if (frame_set(R, fr, m->names[i], v))
            return -1;
    }
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < m->nnames && !(a->names[k].n == m->names[i].n &&
                                  memcmp(a->names[k].p, m->names[i].p, a->names[k].n) == 0))
            i++;
        if (i == m->nnames)
            return rfail(R, at, ASSAY_EINVAL, "macro '%.*s' takes no keyword argument '%.*s'",
                         (int)m->s.n, m->s.p, (int)a->names[k].n, a->names[k].p);
    }
    sbuf b = {.max = JINJA_MAX_OUTPUT};
    R->calls++;
    int rc = exec_body(R, fr, m->a, &b);
    R->calls--;
    R->ctl = CTL_NONE;
    if (!rc)
        rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
    free(b.p);
    return rc;
}

static int call_value(render *R, const jnode *at, jval fn, const jargs *a, jval *out) {
    switch (fn.kind) {
    case JV_UNDEF: return undef_fail(R, at, fn);
    case JV_MACRO: return call_macro(R, at, fn.u.macro, a, out);
    case JV_CYCLE:
        if (!a->npos)
            return rfail(R, at, ASSAY_EINVAL, "no items for cycling given");
        *out = a->pos[fn.u.loop->i % a->npos];
        return 0;
    case JV_FUNC: break;
    default: return rfail(R, at, ASSAY_EINVAL, "'%s' object is not callable", type_name(fn));
    }
    switch (fn.u.fn) {
    case FN_RAISE: {
        jstr msg = {"", 0};
        if (a->npos && to_str(R, a->pos[0], &msg))
            return -1;
        return rfail(R, at, ASSAY_EINVAL, "template error: %.*s", (int)(msg.n > 600 ? 600 : msg.n),
                     msg.p);
    }
    case FN_NAMESPACE:
    case FN_DICT: {
        jdict *d = dict_new(R);
        if (!d)
            return oom(R, at);
        if (a->npos > 1)
            return rfail(R, at, ASSAY_EINVAL, "%s() takes at most one positional argument",
                         fn.u.fn == FN_DICT ? "dict" : "namespace");
        if (a->npos) {
            jval src = a->pos[0];
            if (src.kind != JV_DICT && src.kind != JV_NS)
                return rfail(R, at, ASSAY_EINVAL, "%s(): expected a mapping, got %s",
                             fn.u.fn == FN_DICT ? "dict" : "namespace", type_name(src));
            for (size_t i = 0; i < src.u.d->n; i++)
                if (dict_set(R, d, src.u.d->keys[i], src.u.d->vals[i]))
                    return -1;
        }
        for (size_t k = 0; k < a->nkw; k++) {
            if (fn.u.fn == FN_NAMESPACE && a->names[k].n && a->names[k].p[0] == '_')
                return rfail(R, at, ASSAY_EINVAL,
                             "namespace attributes cannot start with '_' ('%.*s')",
                             (int)a->names[k].n, a->names[k].p);
            if (dict_set(R, d, v_strn(a->names[k].p, a->names[k].n), a->kw[k]))
                return -1;
        }
        *out = (jval){.kind = fn.u.fn == FN_DICT ? JV_DICT : JV_NS, .u.d = d};
        return 0;
    }
    case FN_RANGE: {
        int64_t r[3] = {0, 0, 1};
        if (a->nkw || a->npos < 1 || a->npos > 3)
            return rfail(R, at, ASSAY_EINVAL, "range() takes 1 to 3 positional arguments");
        for (size_t i = 0; i < a->npos; i++)
            if (need_int(R, at, "range()", a->pos[i], &r[a->npos == 1 ? 1 : i]))
                return -1;
        if (r[2] == 0)
            return rfail(R, at, ASSAY_EINVAL, "range() arg 3 must not be zero");
        double count = r[2] > 0 ? ceil(((double)r[1] - (double)r[0]) / (double)r[2])
                                : ceil(((double)r[0] - (double)r[1]) / -(double)r[2]);
        if (count > MAX_RANGE)
            return rfail(R, at, ASSAY_EINVAL, "range() of more than %d items (the sandbox's limit)",
                         MAX_RANGE);
        jlist *l = list_new(R, count > 0 ? (size_t)count : 0);
        if (!l)
            return oom(R, at);
        for (int64_t i = r[0]; r[2] > 0 ? i < r[1] : i > r[1]; i += r[2])
            l->items[l->n++] = v_int(i);
        *out = v_list(l, 0);
        return 0;
    }
    case FN_STRFTIME: {
        jstr fmt;
        if (a->npos != 1 || need_str(R, at, "strftime_now()", a->pos[0], &fmt))
            return a->npos != 1 ? rfail(R, at, ASSAY_EINVAL, "strftime_now() takes one argument")
                                : -1;
        char *f = jarena_alloc(&R->arena, fmt.n + 1), buf[512];
        if (!f)
            return oom(R, at);
        memcpy(f, fmt.p, fmt.n);
        time_t    now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t k = strftime(buf, sizeof buf, f, &tmv);
        return v_str_copy(R, buf, k, out);
    }
    default: return rfail(R, at, ASSAY_EINTERNAL, "unknown function");
    }
}

/* ---- filters and tests ---- */

static const char *const FILTERS[] = {
    "trim",   "length", "count", "upper",   "lower",   "title",      "capitalize", "tojson",
    "first",  "last",   "join",  "default", "d",       "replace",    "string",     "safe",
    "int",    "float",  "items", "list",    "reverse", "selectattr", "rejectattr", "select",
    "reject", "map",    "abs",   "round",   "sort",    "unique",     "sum",        "min",
    "max",    "indent", "e",     "escape"};
static const char *const TESTS[] = {
    "defined",  "undefined", "none", "string", "number",      "integer",
    "float",    "boolean",   "true", "false",  "mapping",     "iterable",
    "sequence", "callable",  "odd",  "even",   "divisibleby", "eq",
    "equalto",  "==",        "ne",   "!=",     "lt",          "lessthan",
    "<",        "le",        "<=",   "gt",     "greaterthan", ">",
    "ge",       ">=",        "in",   "sameas", "lower",       "upper"};

int jinja_known(int test, jstr name) {
    const char *const *list = test ? TESTS : FILTERS;
    size_t             n = test ? sizeof TESTS / sizeof *TESTS : sizeof FILTERS / sizeof *FILTERS;
    for (size_t i = 0; i < n; i++)
        if (jstr_is(name, list[i]))
            return 1;
    return 0;
}

static int apply_test(render *R, const jnode *at, jstr name, jval v, const jargs *a, int *res);
static int arith(render *R, const jnode *at, int op, jval a, jval b, jval *out);
static int apply_filter(render *R, const jnode *at, jstr name, jval v, const jargs *a, jval *out);

static int one_arg(render *R, const jnode *at, const char *what, const jargs *a, jval *x) {
    if (a->npos + a->nkw != 1)
        return rfail(R, at, ASSAY_EINVAL, "test '%s' takes one argument", what);
    *x = a->npos ? a->pos[0] : a->kw[0];
    return 0;
}

static int apply_test(render *R, const jnode *at, jstr name, jval v, const jargs *a, int *res) {
#define T(lit) jstr_is(name, lit)
    jval x;
    if (T("defined"))
        *res = v.kind != JV_UNDEF;
    else if (T("undefined"))
        *res = v.kind == JV_UNDEF;
    else if (T("none"))
        *res = v.kind == JV_NONE;
    else if (T("string"))
        *res = v.kind == JV_STR;
    else if (T("number"))
        *res = is_num(v);
    else if (T("integer"))
        *res = v.kind == JV_INT;
    else if (T("float"))
        *res = v.kind == JV_FLOAT;
    else if (T("boolean"))
        *res = v.kind == JV_BOOL;
    else if (T("true"))
        *res = v.kind == JV_BOOL && v.u.b;
    else if (T("false"))
        *res = v.kind == JV_BOOL && !v.u.b;
    else if (T("mapping"))
        *res = v.kind == JV_DICT;
    else if (T("iterable"))
        *res = v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT || v.kind == JV_UNDEF ||
               v.kind == JV_LOOP || v.kind == JV_ITER;
    else if (T("sequence"))
        *res = v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT || v.kind == JV_UNDEF;
    else if (T("callable"))
        *res = v.kind == JV_FUNC || v.kind == JV_MACRO || v.kind == JV_CYCLE;
    else if (T("odd") || T("even") || T("divisibleby")) {
        /* value % 2 == 1, value % 2 == 0, value % num == 0, with Python's % */
        jval d = v_int(2), m;
        if (T("divisibleby") && one_arg(R, at, "divisibleby", a, &d))
            return -1;
        if (arith(R, at, JOP_MOD, v, d, &m))
            return -1;
        *res = py_eq(m, v_int(T("odd") ? 1 : 0));
    } else if (T("eq") || T("equalto") || T("==") || T("ne") || T("!=")) {
        if (one_arg(R, at, "eq", a, &x))
            return -1;
        *res = py_eq(v, x) == (T("eq") || T("equalto") || T("=="));
    } else if (T("lt") || T("lessthan") || T("<") || T("le") || T("<=") || T("gt") ||
               T("greaterthan") || T(">") || T("ge") || T(">=")) {
        int c;
        if (one_arg(R, at, "comparison", a, &x) || py_cmp(R, at, "<", v, x, &c))
            return -1;
        if (T("lt") || T("lessthan") || T("<"))
            *res = c == -1;
        else if (T("le") || T("<="))
            *res = c == -1 || c == 0;
        else if (T("gt") || T("greaterthan") || T(">"))
            *res = c == 1;
        else
            *res = c == 1 || c == 0;
    } else if (T("in")) {
        if (one_arg(R, at, "in", a, &x))
            return -1;
        int r = py_contains(R, at, x, v);
        if (r < 0)
            return -1;
        *res = r;
    } else if (T("sameas")) {
        if (one_arg(R, at, "sameas", a, &x))
            return -1;
        *res = v.kind == x.kind &&
               (v.kind == JV_STR ? v.u.s.p == x.u.s.p && v.u.s.n == x.u.s.n : py_eq(v, x));
    } else if (T("lower") || T("upper")) {
        jstr s;
        if (to_str(R, v, &s))
            return -1;
        int cased = 0, ok = 1;
        for (size_t i = 0; i < s.n;) {
            size_t  len;
            int32_t cp = cp_decode(s.p + i, s.n - i, &len);
            i += len;
            if (cp < 0)
                continue;
            utf8proc_category_t c = utf8proc_category(cp);
            if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT)
                cased = 1, ok &= T("upper") && c == UTF8PROC_CATEGORY_LU;
            else if (c == UTF8PROC_CATEGORY_LL)
                cased = 1, ok &= T("lower");
        }
        *res = cased && ok;
    } else
        return rfail(R, at, ASSAY_EUNSUPPORTED, "no test named '%.*s'", (int)name.n, name.p);
#undef T
    return 0;
}

/* select/reject/selectattr/rejectattr: keep items whose (attribute's) test result is `keep`. */
static int filter_select(render *R, const jnode *at, jval v, const jargs *a, int by_attr, int keep,
                         jval *out) {
    jval  *items = NULL;
    size_t n     = 0;
    if (truthy(v) && iter_items(R, at, v, &items, &n)) /* Jinja2 skips a false value */
        return -1;
    size_t first = 0;
    jstr   attr  = {0};
    if (by_attr) {
        if (a->npos < 1 || need_str(R, at, "selectattr()", a->pos[0], &attr))
            return a->npos < 1 ? rfail(R, at, ASSAY_EINVAL, "selectattr() needs an attribute name")
                               : -1;
        first = 1;
    }
    jstr test = {0};
    if (a->npos > first && need_str(R, at, "select()", a->pos[first], &test))
        return -1;
    jargs targs = {.pos  = a->npos > first + 1 ? a->pos + first + 1 : NULL,
                   .npos = a->npos > first + 1 ? a->npos - first - 1 : 0};
    if (test.p && !jinja_known(1, test))
        return rfail(R, at, ASSAY_EUNSUPPORTED, "no test named '%.*s'", (int)test.n, test.p);
    jlist *l = list_new(R, 0);
    if (!l)
        return oom(R, at);
    for (size_t i = 0; i < n; i++) {
        jval x = items[i];
        /* an attribute path may be dotted: "function.name" */
        for (size_t s = 0; by_attr && s < attr.n;) {
            const char *dot = memchr(attr.p + s, '.', attr.n - s);
            size_t      e   = dot ? (size_t)(dot - attr.p) : attr.n;
            if (x.kind == JV_UNDEF)
                break;
            jval key = v_strn(attr.p + s, e - s);
            if (get_item(R, at, x, key, &x))
                return -1;
            s = e + 1;
        }
        int r;
        if (test.p) {
            if (apply_test(R, at, test, x, &targs, &r))
                return -1;
        } else
            r = truthy(x);
        if (r == keep && list_push(R, l, items[i]))
            return -1;
    }
    *out = (jval){.kind = JV_ITER, .u.l = l};
    return 0;
}

static int cmp_sort(render *R, const jnode *at, jval x, jval y, int *c) {
    if (x.kind == JV_STR && y.kind == JV_STR) { /* case_sensitive=False: compare lowered */
        jval lx, ly;
        if (str_case(R, at, x.u.s, 0, &lx) || str_case(R, at, y.u.s, 0, &ly))
            return -1;
        x = lx, y = ly;
    }
    return py_cmp(R, at, "<", x, y, c);
}

static int apply_filter(render *R, const jnode *at, jstr name, jval v, const jargs *a, jval *out) {
#define F(lit) jstr_is(name, lit)
#define ARGS(fn, ...)                                                                              \
    static const char *const params_[] = {__VA_ARGS__};                                            \
    jval                     p[sizeof params_ / sizeof *params_];                                  \
    if (bind_args(R, at, fn, a, params_, sizeof params_ / sizeof *params_, p))                     \
    return -1
    if (F("default") || F("d")) {
        ARGS("default", "default_value", "boolean");
        jval dflt = present(p[0]) ? p[0] : v_strn("", 0);
        *out = (v.kind == JV_UNDEF || (present(p[1]) && truthy(p[1]) && !truthy(v))) ? dflt : v;
        return 0;
    }
    if (F("length") || F("count")) {
        switch (v.kind) {
        case JV_STR: *out = v_int((int64_t)cp_count(v.u.s)); return 0;
        case JV_LIST: *out = v_int((int64_t)v.u.l->n); return 0;
        case JV_DICT: *out = v_int((int64_t)v.u.d->n); return 0;
        case JV_UNDEF: *out = v_int(0); return 0;
        case JV_LOOP: *out = v_int((int64_t)v.u.loop->n); return 0;
        default:
            return rfail(R, at, ASSAY_EINVAL, "object of type '%s' has no len()", type_name(v));
        }
    }
    if (F("tojson")) {
        ARGS("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
        json_opts o = {.ascii = present(p[0]) && truthy(p[0]),
                       .sort  = present(p[3]) && truthy(p[3])};
        char      ind[64];
        if (present(p[1]) && p[1].kind != JV_NONE) {
            if (p[1].kind == JV_STR)
                o.indent = p[1].u.s.p, o.indent_n = p[1].u.s.n;
            else {
                int64_t k;
                if (need_int(R, at, "tojson(indent=)", p[1], &k))
                    return -1;
                if (k > (int64_t)sizeof ind - 1)
                    return rfail(R, at, ASSAY_EUNSUPPORTED, "tojson: indent over %zu",
                                 sizeof ind - 1);
                k = k < 0 ? 0 : k;
                memset(ind, ' ', (size_t)k);
                o.indent = ind, o.indent_n = (size_t)k;
            }
        }
        o.item_sep = o.indent ? (jstr){",", 1} : (jstr){", ", 2};
        o.key_sep  = (jstr){": ", 2};
        if (present(p[2]) && p[2].kind != JV_NONE) {
            if (p[2].kind != JV_LIST || p[2].u.l->n != 2 || p[2].u.l->items[0].kind != JV_STR ||
                p[2].u.l->items[1].kind != JV_STR)
                return rfail(R, at, ASSAY_EINVAL, "tojson: separators must be a pair of strings");
            o.item_sep = p[2].u.l->items[0].u.s, o.key_sep = p[2].u.l->items[1].u.s;
        }
        sbuf b  = {.max = JINJA_MAX_OUTPUT};
        int  rc = json_write(R, at, &b, v, &o, 0);
        if (!rc)
            rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
        free(b.p);
        return rc;
    }
    if (F("select") || F("reject") || F("selectattr") || F("rejectattr"))
        return filter_select(R, at, v, a, F("selectattr") || F("rejectattr"),
                             F("select") || F("selectattr"), out);
    if (F("map")) {
        jval  *items = NULL;
        size_t n     = 0;
        if (truthy(v) && iter_items(R, at, v, &items, &n)) /* Jinja2 skips a false value */
            return -1;
        jlist *l = list_new(R, n);
        if (!l)
            return oom(R, at);
        jval attr = {0}, dflt = {0};
        int  has_attr = 0, has_dflt = 0;
        for (size_t k = 0; k < a->nkw; k++) {
            if (jstr_is(a->names[k], "attribute"))
                attr = a->kw[k], has_attr = 1;
            else if (jstr_is(a->names[k], "default"))
                dflt = a->kw[k], has_dflt = 1;
            else
                return rfail(R, at, ASSAY_EINVAL, "map(): unexpected keyword argument '%.*s'",
                             (int)a->names[k].n, a->names[k].p);
        }
        jstr fname = {0};
        if (!has_attr && (a->npos < 1 || need_str(R, at, "map()", a->pos[0], &fname)))
            return a->npos < 1
                       ? rfail(R, at, ASSAY_EINVAL, "map() needs a filter name or attribute=")
                       : -1;
        if (fname.p && !jinja_known(0, fname))
            return rfail(R, at, ASSAY_EUNSUPPORTED, "no filter named '%.*s'", (int)fname.n,
                         fname.p);
        jargs fargs = {.pos  = a->npos > 1 ? a->pos + 1 : NULL,
                       .npos = a->npos > 1 ? a->npos - 1 : 0};
        for (size_t i = 0; i < n; i++) {
            jval x = items[i];
            if (has_attr) {
                if (get_item(R, at, x, attr, &x))
                    return -1;
                if (x.kind == JV_UNDEF && has_dflt)
                    x = dflt;
            } else if (apply_filter(R, at, fname, x, &fargs, &x))
                return -1;
            l->items[l->n++] = x;
        }
        *out = (jval){.kind = JV_ITER, .u.l = l};
        return 0;
    }
    if (F("items")) {
        if (v.kind == JV_UNDEF) {
            jlist *l = list_new(R, 0);
            if (!l)
                return oom(R, at);
            *out = (jval){.kind = JV_ITER, .u.l = l};
            return 0;
        }
        if (v.kind != JV_DICT)
            return rfail(R, at, ASSAY_EINVAL,
                         "items filter: can only get item pairs from a mapping, not %s",
                         type_name(v));
        int found;
        if (call_method(R, at, v, (jstr){"items", 5}, &(jargs){0}, out, &found))
            return -1;
        out->kind = JV_ITER;
        return 0;
    }
    if (F("list") || F("reverse") || F("sort") || F("unique")) {
        if (F("reverse") && v.kind == JV_STR) {
            size_t count, *off = cp_offsets(R, v.u.s, &count);
            char  *q = off ? jarena_alloc(&R->arena, v.u.s.n + 1) : NULL;
            if (!q)
                return oom(R, at);
            size_t k = 0;
            for (size_t i = count; i-- > 0;)
                memcpy(q + k, v.u.s.p + off[i], off[i + 1] - off[i]), k += off[i + 1] - off[i];
            *out = v_strn(q, k);
            return 0;
        }
        jval  *items;
        size_t n;
        if (iter_items(R, at, v, &items, &n))
            return -1;
        jlist *l = list_new(R, n);
        if (!l)
            return oom(R, at);
        for (size_t i = 0; i < n; i++)
            l->items[i] = items[F("reverse") ? n - 1 - i : i];
        l->n = n;
        if (F("sort")) {
            ARGS("sort", "reverse", "case_sensitive", "attribute");
            if (present(p[1]) && truthy(p[1]))
                return rfail(R, at, ASSAY_EUNSUPPORTED,
                             "sort(case_sensitive=true) is not supported");
            if (present(p[2]))
                return rfail(R, at, ASSAY_EUNSUPPORTED, "sort(attribute=) is not supported");
            int rev = present(p[0]) && truthy(p[0]);
            for (size_t i = 1; i < n; i++) { /* insertion sort: stable, as Python's */
                jval   x = l->items[i];
                size_t j = i;
                while (j > 0) {
                    int c;
                    if (cmp_sort(R, at, l->items[j - 1], x, &c))
                        return -1;
                    if (!(rev ? c == -1 : c == 1))
                        break;
                    l->items[j] = l->items[j - 1];
                    j--;
                }
                l->items[j] = x;
            }
        } else if (F("unique")) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                int dup = 0;
                for (size_t j = 0; j < k && !dup; j++) {
                    jval x = l->items[j], y = l->items[i];
                    if (x.kind == JV_STR && y.kind == JV_STR) {
                        jval lx, ly;
                        if (str_case(R, at, x.u.s, 0, &lx) || str_case(R, at, y.u.s, 0, &ly))
                            return -1;
                        dup = py_eq(lx, ly);
                    } else
                        dup = py_eq(x, y);
                }
                if (!dup)
                    l->items[k++] = l->items[i];
            }
            l->n = k;
        }
        /* reverse gives an iterator over a list and a list from an iterator; unique an iterator */
        int iter = F("unique") || (F("reverse") && v.kind != JV_ITER);
        *out     = iter ? (jval){.kind = JV_ITER, .u.l = l} : v_list(l, 0);
        return 0;
    }
    if (F("first") || F("last")) {
        jval  *items;
        size_t n;
        if (F("last") && v.kind == JV_ITER)
            return rfail(R, at, ASSAY_EINVAL, "'generator' object is not reversible");
        if (iter_items(R, at, v, &items, &n))
            return -1;
        *out = n ? items[F("first") ? 0 : n - 1]
                 : v_undef(R, "No %s item, sequence was empty.", F("first") ? "first" : "last");
        return 0;
    }
    if (F("sum") || F("min") || F("max")) {
        jval  *items;
        size_t n;
        if (iter_items(R, at, v, &items, &n))
            return -1;
        if (F("sum")) {
            jval acc = v_int(0);
            for (size_t i = 0; i < n; i++) {
                if (!is_num(items[i]))
                    return rfail(R, at, ASSAY_EINVAL, "sum: unsupported operand type '%s'",
                                 type_name(items[i]));
                if (acc.kind == JV_FLOAT || items[i].kind == JV_FLOAT)
                    acc = v_float(num_f(acc) + num_f(items[i]));
                else if (__builtin_add_overflow(acc.u.i, num_i(items[i]), &acc.u.i))
                    return rfail(R, at, ASSAY_EINVAL, "integer overflow");
            }
            *out = acc;
            return 0;
        }
        if (!n) {
            *out = v_undef(R, "No aggregated item, sequence was empty.");
            return 0;
        }
        jval best = items[0];
        for (size_t i = 1; i < n; i++) {
            int c;
            if (cmp_sort(R, at, items[i], best, &c))
                return -1;
            if (F("min") ? c == -1 : c == 1)
                best = items[i];
        }
        *out = best;
        return 0;
    }
    if (F("abs")) {
        if (v.kind == JV_INT) {
            if (v.u.i == INT64_MIN)
                return rfail(R, at, ASSAY_EINVAL, "integer overflow");
            *out = v_int(v.u.i < 0 ? -v.u.i : v.u.i);
        } else if (v.kind == JV_FLOAT)
            *out = v_float(fabs(v.u.f));
        else if (v.kind == JV_BOOL)
            *out = v_int(v.u.b);
        else
            return rfail(R, at, ASSAY_EINVAL, "bad operand type for abs(): '%s'", type_name(v));
        return 0;
    }
    if (F("round")) {
        ARGS("round", "precision", "method");
        int64_t prec   = 0;
        jstr    method = {"common", 6};
        if ((present(p[0]) && need_int(R, at, "round()", p[0], &prec)) ||
            (present(p[1]) && need_str(R, at, "round()", p[1], &method)))
            return -1;
        if (!is_num(v))
            return rfail(R, at, ASSAY_EINVAL, "round: expects a number, not %s", type_name(v));
        double x = num_f(v), scale = pow(10.0, (double)(prec < -300  ? -300
                                                        : prec > 300 ? 300
                                                                     : prec));
        if (jstr_is(method, "common") && v.kind != JV_FLOAT) {
            /* Python's round() of an int stays an int */
            *out = v_int(prec >= 0 ? num_i(v)
                                   : (int64_t)(nearbyint((double)num_i(v) / scale) * scale));
            return 0;
        }
        if (jstr_is(method, "common")) {
            /* Python's round(x, n): correctly rounded, ties to even, as printf does it */
            char buf[400];
            if (prec >= 0 && prec <= 300) {
                snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
                x = strtod(buf, NULL);
            } else
                x = nearbyint(x * scale) / scale;
        } else if (jstr_is(method, "ceil"))
            x = ceil(x * scale) / scale;
        else if (jstr_is(method, "floor"))
            x = floor(x * scale) / scale;
        else
            return rfail(R, at, ASSAY_EINVAL, "round: method must be common, ceil or floor");
        *out = v_float(x);
        return 0;
    }
    /* string filters: the value through str() first */
    jstr s;
    if (F("int") || F("float")) {
        ARGS("int", "default", "base");
        if (F("float") && present(p[1]))
            return rfail(R, at, ASSAY_EINVAL, "float() takes no base");
        jval dflt = present(p[0]) ? p[0] : F("int") ? v_int(0) : v_float(0);
        if (v.kind == JV_UNDEF) /* int(Undefined) fails rather than falling back to the default */
            return undef_fail(R, at, v);
        if (v.kind == JV_INT || v.kind == JV_BOOL) {
            *out = F("int") ? v_int(num_i(v)) : v_float(num_f(v));
            return 0;
        }
        if (v.kind == JV_FLOAT) {
            if (F("float"))
                *out = v;
            else if (!isfinite(v.u.f) || fabs(v.u.f) >= 9.2e18)
                *out = dflt;
            else
                *out = v_int((int64_t)v.u.f);
            return 0;
        }
        if (v.kind != JV_STR) {
            *out = dflt;
            return 0;
        }
        jstr t = str_strip(v.u.s, NULL, 3);
        char buf[128];
        if (t.n == 0 || t.n >= sizeof buf) {
            *out = dflt;
            return 0;
        }
        size_t k = 0;
        for (size_t i = 0; i < t.n; i++)
            if (t.p[i] != '_')
                buf[k++] = t.p[i];
        buf[k] = 0;
        char *end;
        if (F("int")) {
            long long x = strtoll(buf, &end, 10);
            if (*end == 0 && strchr("+-0123456789", buf[0])) {
                *out = v_int(x);
                return 0;
            }
        }
        double d = strtod(buf, &end);
        if (*end == 0 &&
            (buf[0] == '+' || buf[0] == '-' || buf[0] == '.' || (buf[0] >= '0' && buf[0] <= '9'))) {
            *out = F("int") ? (isfinite(d) && fabs(d) < 9.2e18 ? v_int((int64_t)d) : dflt)
                            : v_float(d);
            return 0;
        }
        *out = dflt;
        return 0;
    }
    if (F("join")) {
        ARGS("join", "d", "attribute");
        jstr sep = {"", 0}, attr;
        if ((present(p[0]) && need_str(R, at, "join", p[0], &sep)) ||
            (present(p[1]) && need_str(R, at, "join", p[1], &attr)))
            return -1;
        return str_join(R, at, sep, v, present(p[1]) ? &attr : NULL, out);
    }
    if (to_str(R, v, &s))
        return -1;
    if (F("string") || F("safe") || F("e") || F("escape")) {
        if (F("e") || F("escape"))
            return rfail(R, at, ASSAY_EUNSUPPORTED, "the escape filter is not supported");
        *out = v_strn(s.p, s.n);
        return 0;
    }
    if (F("trim")) {
        ARGS("trim", "chars");
        jstr chars;
        int  has = present(p[0]) && p[0].kind != JV_NONE;
        if (has && need_str(R, at, "trim", p[0], &chars))
            return -1;
        jstr r = str_strip(s, has ? &chars : NULL, 3);
        *out   = v_strn(r.p, r.n);
        return 0;
    }
    if (F("upper") || F("lower") || F("title") || F("capitalize"))
        return str_case(R, at, s, F("lower") ? 0 : F("upper") ? 1 : F("title") ? 4 : 3, out);
    if (F("replace")) {
        ARGS("replace", "old", "new", "count");
        jstr    o, nw;
        int64_t count = -1;
        if (need_str(R, at, "replace", p[0], &o) || need_str(R, at, "replace", p[1], &nw) ||
            (present(p[2]) && p[2].kind != JV_NONE && need_int(R, at, "replace", p[2], &count)))
            return -1;
        return str_replace(R, at, s, o, nw, count, out);
    }
    if (F("indent")) {
        ARGS("indent", "width", "first", "blank");
        if (v.kind != JV_STR)
            return v.kind == JV_UNDEF
                       ? undef_fail(R, at, v)
                       : rfail(R, at, ASSAY_EINVAL,
                               "unsupported operand type(s) for +=: '%s' and 'str'", type_name(v));
        jstr    pad   = {"    ", 4};
        int64_t width = 4;
        char    spaces[64];
        if (present(p[0])) {
            if (p[0].kind == JV_STR)
                pad = p[0].u.s;
            else {
                if (need_int(R, at, "indent", p[0], &width))
                    return -1;
                if (width > 63)
                    return rfail(R, at, ASSAY_EUNSUPPORTED, "indent over 63");
                width = width < 0 ? 0 : width;
                memset(spaces, ' ', (size_t)width);
                pad = (jstr){spaces, (size_t)width};
            }
        }
        int  first = present(p[1]) && truthy(p[1]), blank = present(p[2]) && truthy(p[2]);
        sbuf b  = {.max = JINJA_MAX_OUTPUT};
        int  rc = 0;
        /* lines split at \n (the text after the last newline is a line too) */
        size_t i      = 0;
        int    lineno = 0;
        while (!rc) {
            const char *nl    = memchr(s.p + i, '\n', s.n - i);
            size_t      e     = nl ? (size_t)(nl - s.p) : s.n;
            int         empty = e == i || jinja_lstrip_len(s.p + i, e - i) == e - i;
            if ((lineno > 0 || first) && (blank || !empty))
                rc = sb_put(R, &b, pad.p, pad.n);
            if (!rc)
                rc = sb_put(R, &b, s.p + i, e - i);
            if (!nl || rc)
                break;
            rc = sb_put(R, &b, "\n", 1);
            i  = e + 1;
            lineno++;
        }
        if (!rc)
            rc = v_str_copy(R, b.p ? b.p : "", b.n, out);
        free(b.p);
        return rc;
    }
#undef F
#undef ARGS
    return rfail(R, at, ASSAY_EUNSUPPORTED, "no filter named '%.*s'", (int)name.n, name.p);
}

/* ---- operators ---- */

static int arith(render *R, const jnode *at, int op, jval a, jval b, jval *out) {
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (a.kind == JV_UNDEF)
        return undef_fail(R, at, a);
    if (b.kind == JV_UNDEF)
        return undef_fail(R, at, b);
    if (is_num(a) && is_num(b)) {
        int fl = a.kind == JV_FLOAT || b.kind == JV_FLOAT;
        if (fl || op == JOP_DIV) {
            double x = num_f(a), y = num_f(b), r = 0;
            switch (op) {
            case JOP_ADD: r = x + y; break;
            case JOP_SUB: r = x - y; break;
            case JOP_MUL: r = x * y; break;
            case JOP_DIV:
                if (y == 0)
                    return rfail(R, at, ASSAY_EINVAL, "division by zero");
                r = x / y;
                break;
            case JOP_FLOORDIV:
            case JOP_MOD:
                if (y == 0)
                    return rfail(R, at, ASSAY_EINVAL, "float division by zero");
                r = fmod(x, y);
                if (r != 0 && ((r < 0) != (y < 0)))
                    r += y;
                if (op == JOP_FLOORDIV)
                    r = floor((x - r) / y + 0.5); /* exact for the cases floats hold */
                break;
            case JOP_POW: r = pow(x, y); break;
            }
            *out = v_float(r);
            return 0;
        }
        int64_t x = num_i(a), y = num_i(b), r = 0;
        switch (op) {
        case JOP_ADD:
            if (__builtin_add_overflow(x, y, &r))
                goto overflow;
            break;
        case JOP_SUB:
            if (__builtin_sub_overflow(x, y, &r))
                goto overflow;
            break;
        case JOP_MUL:
            if (__builtin_mul_overflow(x, y, &r))
                goto overflow;
            break;
        case JOP_FLOORDIV:
        case JOP_MOD:
            if (y == 0)
                return rfail(R, at, ASSAY_EINVAL, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1)
                goto overflow;
            r = x % y;
            if (r != 0 && ((r < 0) != (y < 0)))
                r += y;
            if (op == JOP_FLOORDIV)
                r = (x - r) / y;
            break;
        case JOP_POW:
            if (y < 0) {
                *out = v_float(pow((double)x, (double)y));
                return 0;
            }
            r = 1;
            for (int64_t base = x, e = y;
                 e > 0;) { /* by squaring; a squared base is always needed */
                if ((e & 1) && __builtin_mul_overflow(r, base, &r))
                    goto overflow;
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base))
                    goto overflow;
            }
            break;
        }
        *out = v_int(r);
        return 0;
    overflow:
        return rfail(R, at, ASSAY_EUNSUPPORTED, "integer result outside 64 bits");
    }
    if (op == JOP_ADD && a.kind == JV_STR && b.kind == JV_STR) {
        size_t n;
        if (size_add(a.u.s.n, b.u.s.n, &n) || n > JINJA_MAX_OUTPUT)
            return rfail(R, at, ASSAY_EINVAL, "string over %zu MiB", JINJA_MAX_OUTPUT >> 20);
        char *q = jarena_alloc(&R->arena, n + 1);
        if (!q)
            return oom(R, at);
        if (a.u.s.n)
            memcpy(q, a.u.s.p, a.u.s.n);
        if (b.u.s.n)
            memcpy(q + a.u.s.n, b.u.s.p, b.u.s.n);
        *out = v_strn(q, n);
        return 0;
    }
    if (op == JOP_ADD && a.kind == JV_LIST && b.kind == JV_LIST && a.tuple == b.tuple) {
        jlist *l = list_new(R, a.u.l->n + b.u.l->n);
        if (!l)
            return oom(R, at);
        for (size_t i = 0; i < a.u.l->n; i++)
            l->items[l->n++] = a.u.l->items[i];
        for (size_t i = 0; i < b.u.l->n; i++)
            l->items[l->n++] = b.u.l->items[i];
        *out = v_list(l, a.tuple);
        return 0;
    }
    if (op == JOP_MUL &&
        ((a.kind == JV_STR || a.kind == JV_LIST) && (b.kind == JV_INT || b.kind == JV_BOOL))) {
        int64_t k    = num_i(b) < 0 ? 0 : num_i(b);
        size_t  unit = a.kind == JV_STR ? a.u.s.n : a.u.l->n * sizeof(jval);
        if (unit && (uint64_t)k > JINJA_MAX_OUTPUT / unit)
            return rfail(R, at, ASSAY_EINVAL, "repetition result over %zu MiB",
                         JINJA_MAX_OUTPUT >> 20);
        if (a.kind == JV_STR) {
            char *q = jarena_alloc(&R->arena, a.u.s.n * (size_t)k + 1);
            if (!q)
                return oom(R, at);
            for (int64_t i = 0; i < k; i++)
                memcpy(q + (size_t)i * a.u.s.n, a.u.s.p, a.u.s.n);
            *out = v_strn(q, a.u.s.n * (size_t)k);
        } else {
            jlist *l = list_new(R, a.u.l->n * (size_t)k);
            if (!l)
                return oom(R, at);
            for (int64_t i = 0; i < k; i++)
                for (size_t j = 0; j < a.u.l->n; j++)
                    l->items[l->n++] = a.u.l->items[j];
            *out = v_list(l, a.tuple);
        }
        return 0;
    }
    if (op == JOP_MUL && (b.kind == JV_STR || b.kind == JV_LIST) &&
        (a.kind == JV_INT || a.kind == JV_BOOL))
        return arith(R, at, op, b, a, out);
    if (op == JOP_MOD && a.kind == JV_STR)
        return rfail(R, at, ASSAY_EUNSUPPORTED, "'%%' string formatting is not supported");
    if (op == JOP_ADD && a.kind == JV_STR)
        return rfail(R, at, ASSAY_EINVAL, "can only concatenate str (not \"%s\") to str",
                     type_name(b));
    return rfail(R, at, ASSAY_EINVAL, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op],
                 type_name(a), type_name(b));
}

static int eval(render *R, jframe *f, const jnode *n, jval *out) {
    if (++R->depth > JINJA_MAX_DEPTH * 2)
        return rfail(R, n, ASSAY_EINVAL, "expression nested deeper than %d", JINJA_MAX_DEPTH * 2);
    int rc = 0;
    switch (n->type) {
    case JN_LIT: *out = n->val; break;
    case JN_NAME: {
        jval *v = frame_find(f, n->s.p, n->s.n);
        *out =
            v ? *v : v_undef(R, "'%.*s' is undefined", (int)(n->s.n > 100 ? 100 : n->s.n), n->s.p);
        break;
    }
    case JN_LIST: {
        jlist *l = list_new(R, n->nkids);
        if (!l) {
            rc = oom(R, n);
            break;
        }
        for (size_t i = 0; i < n->nkids && !rc; i++)
            rc = eval(R, f, n->kids[i], &l->items[i]);
        l->n = n->nkids;
        *out = v_list(l, n->op == 1);
        break;
    }
    case JN_DICT: {
        jdict *d = dict_new(R);
        if (!d) {
            rc = oom(R, n);
            break;
        }
        for (size_t i = 0; i < n->nkids && !rc; i++) {
            jval k, v;
            rc = eval(R, f, n->kids[i], &k) || eval(R, f, n->kids2[i], &v) || dict_set(R, d, k, v);
            if (!rc && (k.kind == JV_LIST && !k.tuple))
                rc = rfail(R, n, ASSAY_EINVAL, "unhashable type: 'list'");
        }
        *out = (jval){.kind = JV_DICT, .u.d = d};
        break;
    }
    case JN_GETATTR: {
        jval obj;
        rc = eval(R, f, n->a, &obj) || get_attr(R, n, obj, n->s, out);
        break;
    }
    case JN_GETITEM: {
        jval obj, key;
        rc = eval(R, f, n->a, &obj) || eval(R, f, n->b, &key) || get_item(R, n, obj, key, out);
        break;
    }
    case JN_SLICE: {
        jval obj, sv[3] = {v_none(), v_none(), v_none()};
        rc = eval(R, f, n->a, &obj) || (n->b && eval(R, f, n->b, &sv[0])) ||
             (n->c && eval(R, f, n->c, &sv[1])) || (n->d && eval(R, f, n->d, &sv[2])) ||
             do_slice(R, n, obj, sv, out);
        break;
    }
    case JN_CALL: {
        jargs a;
        if (n->a->type == JN_GETATTR) {
            jval obj;
            int  found = 0;
            if (eval(R, f, n->a->a, &obj) || eval_args(R, f, n, &a)) {
                rc = -1;
                break;
            }
            if (obj.kind == JV_STR || obj.kind == JV_DICT || obj.kind == JV_LIST) {
                if (call_method(R, n, obj, n->a->s, &a, out, &found)) {
                    rc = -1;
                    break;
                }
                if (found)
                    break;
            }
            jval fn;
            rc = get_attr(R, n->a, obj, n->a->s, &fn) || call_value(R, n, fn, &a, out);
            break;
        }
        jval fn;
        rc = eval(R, f, n->a, &fn) || eval_args(R, f, n, &a) || call_value(R, n, fn, &a, out);
        break;
    }
    case JN_FILTER: {
        jval  v;
        jargs a;
        rc = eval(R, f, n->a, &v) || eval_args(R, f, n, &a) || apply_filter(R, n, n->s, v, &a, out);
        break;
    }
    case JN_TEST: {
        jval  v;
        jargs a;
        int   r = 0;
        rc   = eval(R, f, n->a, &v) || eval_args(R, f, n, &a) || apply_test(R, n, n->s, v, &a, &r);
        *out = v_bool(r != n->op);
        break;
    }
    case JN_UNARY: {
        jval v;
        if ((rc = eval(R, f, n->a, &v)))
            break;
        if (n->op == '!')
            *out = v_bool(!truthy(v));
        else if (v.kind == JV_UNDEF)
            rc = undef_fail(R, n, v);
        else if (v.kind == JV_FLOAT)
            *out = v_float(n->op == '-' ? -v.u.f : v.u.f);
        else if (v.kind == JV_INT || v.kind == JV_BOOL) {
            if (n->op == '-' && num_i(v) == INT64_MIN)
                rc = rfail(R, n, ASSAY_EUNSUPPORTED, "integer result outside 64 bits");
            else
                *out = v_int(n->op == '-' ? -num_i(v) : num_i(v));
        } else
            rc = rfail(R, n, ASSAY_EINVAL, "bad operand type for unary %c: '%s'", n->op,
                       type_name(v));
        break;
    }
    case JN_BINARY: {
        jval a, b;
        if ((rc = eval(R, f, n->a, &a) || eval(R, f, n->b, &b)))
            break;
        if (n->op == JOP_CONCAT) {
            jstr x, y;
            rc = to_str(R, a, &x) || to_str(R, b, &y) ||
                 arith(R, n, JOP_ADD, v_strn(x.p, x.n), v_strn(y.p, y.n), out);
        } else
            rc = arith(R, n, n->op, a, b, out);
        break;
    }
    case JN_COMPARE: {
        jval a;
        if ((rc = eval(R, f, n->a, &a)))
            break;
        *out = v_bool(1);
        for (size_t i = 0; i < n->nkids; i++) {
            jval b;
            if ((rc = eval(R, f, n->kids[i], &b)))
                break;
            int r = 0, c = 0, op = n->ops[i];
            if (op == JOP_EQ || op == JOP_NE)
                r = py_eq(a, b) == (op == JOP_EQ);
            else if (op == JOP_IN || op == JOP_NOTIN) {
                if ((r = py_contains(R, n, b, a)) < 0) {
                    rc = -1;
                    break;
                }
                r = r == (op == JOP_IN);
            } else {
                static const char *const sym[] = {"<", "<=", ">", ">="};
                if (py_cmp(R, n, sym[op - JOP_LT], a, b, &c)) {
                    rc = -1;
                    break;
                }
                r = op == JOP_LT   ? c == -1
                    : op == JOP_LE ? (c == -1 || c == 0)
                    : op == JOP_GT ? c == 1
                                   : (c == 1 || c == 0);
            }
            if (!r) {
                *out = v_bool(0);
                break;
            }
            a = b;
        }
        break;
    }
    case JN_AND:
    case JN_OR: {
        jval a;
        if ((rc = eval(R, f, n->a, &a)))
            break;
        if (truthy(a) == (n->type == JN_OR))
            *out = a;
        else
            rc = eval(R, f, n->b, out);
        break;
    }
    case JN_COND: {
        jval c;
        if ((rc = eval(R, f, n->a, &c)))
            break;
        if (truthy(c))
            rc = eval(R, f, n->b, out);
        else if (n->c)
            rc = eval(R, f, n->c, out);
        else
            *out = v_undef(R,
                           "the inline if-expression on line %d evaluated to false and no else "
                           "section was defined",
                           n->line);
        break;
    }
    default: rc = rfail(R, n, ASSAY_EINTERNAL, "not an expression (node %d)", n->type);
    }
    R->depth--;
    if (!rc && eq_too_deep)
        rc = rfail(R, n, ASSAY_EINVAL, "comparing values nested deeper than %d levels",
                   JINJA_MAX_DEPTH);
    return rc ? (R->err->code ? R->err->code : ASSAY_EINTERNAL) : 0;
}

/* ---- statements ---- */

static int assign(render *R, jframe *f, const jnode *at, const jstr *names, size_t nnames, jval v) {
    if (nnames == 1)
        return frame_set(R, f, names[0], v);
    jval  *items;
    size_t n;
    if (v.kind == JV_UNDEF)
        return undef_fail(R, at, v);
    if (iter_items(R, at, v, &items, &n))
        return -1;
    if (n != nnames)
        return rfail(R, at, ASSAY_EINVAL,
                     n > nnames ? "too many values to unpack (expected %zu)"
                                : "not enough values to unpack (expected %zu, got %zu)",
                     nnames, n);
    for (size_t i = 0; i < n; i++)
        if (frame_set(R, f, names[i], items[i]))
            return -1;
    return 0;
}

static int exec_for(render *R, jframe *f, const jnode *n, sbuf *out) {
    jval seq;
    if (eval(R, f, n->a, &seq))
        return -1;
    jval  *items;
    size_t count;
    if (iter_items(R, n->a, seq, &items, &count))
        return -1;
    if (n->b) { /* `for x in seq if cond`: filter first, so loop.length counts what is kept */
        jval  *kept = count ? jarena_alloc(&R->arena, count * sizeof *kept) : NULL;
        size_t k    = 0;
        if (count && !kept)
            return oom(R, n);
        for (size_t i = 0; i < count; i++) {
            jframe tmp = {.parent = f};
            jval   c;
            if (++R->iterations > JINJA_MAX_ITERATIONS)
                return rfail(R, n, ASSAY_EINVAL, "more than %ld loop iterations",
                             JINJA_MAX_ITERATIONS);
            if (assign(R, &tmp, n, n->names, n->nnames, items[i]) || eval(R, &tmp, n->b, &c))
                return -1;
            if (truthy(c))
                kept[k++] = items[i];
        }
        items = kept, count = k;
    }
    jloop *loop = jarena_alloc(&R->arena, sizeof *loop);
    if (!loop)
        return oom(R, n);
    loop->items = items, loop->n = count;
    jframe *fr = jarena_alloc(&R->arena, sizeof *fr);
    if (!fr)
        return oom(R, n);
    fr->parent    = f;
    int completed = 0;
    for (size_t i = 0; i < count; i++) {
        if (++R->iterations > JINJA_MAX_ITERATIONS)
            return rfail(R, n, ASSAY_EINVAL, "more than %ld loop iterations", JINJA_MAX_ITERATIONS);
        /* each iteration starts from a fresh scope, as in Jinja2 (a set does not carry over); the
         * slots are reused so a long loop costs no memory per iteration */
        fr->n   = 0;
        loop->i = i;
        if (assign(R, fr, n, n->names, n->nnames, items[i]) ||
            frame_set(R, fr, (jstr){"loop", 4}, (jval){.kind = JV_LOOP, .u.loop = loop}))
            return -1;
        if (exec_body(R, fr, n->c, out))
            return -1;
        completed |= R->ctl == CTL_NONE;
        if (R->ctl == CTL_BREAK) {
            R->ctl = CTL_NONE;
            break;
        }
        R->ctl = CTL_NONE;
    }
    /* Jinja2's else runs unless some iteration reached the end of the body (not cut short by
     * continue or break) */
    if (!completed && n->d)
        return exec_body(R, f, n->d, out);
    return 0;
}

static int exec_body(render *R, jframe *f, const jnode *body, sbuf *out) {
    if (++R->depth > JINJA_MAX_DEPTH * 2)
        return rfail(R, body, ASSAY_EINVAL, "blocks nested deeper than %d", JINJA_MAX_DEPTH * 2);
    for (size_t k = 0; k < body->nkids && R->ctl == CTL_NONE; k++) {
        const jnode *n = body->kids[k];
        jval         v;
        switch (n->type) {
        case JN_TEXT:
            if (sb_put(R, out, n->s.p, n->s.n))
                return -1;
            break;
        case JN_OUTPUT:
            if (eval(R, f, n->a, &v) || write_str(R, out, v, 0))
                return -1;
            break;
        case JN_IF: {
            size_t i = 0;
            for (; i < n->nkids; i++) {
                if (eval(R, f, n->kids[i], &v))
                    return -1;
                if (truthy(v))
                    break;
            }
            if (i < n->nkids2 && exec_body(R, f, n->kids2[i], out))
                return -1;
            break;
        }
        case JN_FOR:
            if (exec_for(R, f, n, out))
                return -1;
            break;
        case JN_SET:
            if (eval(R, f, n->a, &v) || assign(R, f, n, n->names, n->nnames, v))
                return -1;
            break;
        case JN_SETATTR: {
            jval *ns = frame_find(f, n->s.p, n->s.n);
            if (!ns || ns->kind != JV_NS)
                return rfail(R, n, ASSAY_EINVAL,
                             "cannot assign attribute on non-namespace object '%.*s'", (int)n->s.n,
                             n->s.p);
            if (n->s2.n && n->s2.p[0] == '_')
                return rfail(R, n, ASSAY_EINVAL,
                             "namespace attributes cannot start with '_' ('%.*s')", (int)n->s2.n,
                             n->s2.p);
            if (eval(R, f, n->a, &v) || dict_set(R, ns->u.d, v_strn(n->s2.p, n->s2.n), v))
                return -1;
            break;
        }
        case JN_SETBLOCK: {
            sbuf b  = {.max = JINJA_MAX_OUTPUT};
            int  rc = exec_body(R, f, n->a, &b);
            R->ctl  = CTL_NONE;
            if (!rc)
                rc = v_str_copy(R, b.p ? b.p : "", b.n, &v) || frame_set(R, f, n->s, v);
            free(b.p);
            if (rc)
                return -1;
            break;
        }
        case JN_MACRO: {
            struct jmacro *mac = jarena_alloc(&R->arena, sizeof *mac);
            if (!mac)
                return oom(R, n);
            mac->node = n, mac->env = f;
            if (frame_set(R, f, n->s, (jval){.kind = JV_MACRO, .u.macro = mac}))
                return -1;
        } break;
        case JN_BREAK: R->ctl = CTL_BREAK; break;
        case JN_CONTINUE: R->ctl = CTL_CONTINUE; break;
        case JN_BODY:
            if (exec_body(R, f, n, out))
                return -1;
            break;
        default: return rfail(R, n, ASSAY_EINTERNAL, "not a statement (node %d)", n->type);
        }
    }
    R->depth--;
    return 0;
}

int jinja_render(const jnode *root, const char *where, const jinja_var *vars, size_t nvars,
                 char **out, size_t *out_len, assay_error *err) {
    static const struct {
        const char *name;
        int         fn;
    } globals[] = {{"raise_exception", FN_RAISE},
                   {"namespace", FN_NAMESPACE},
                   {"dict", FN_DICT},
                   {"range", FN_RANGE},
                   {"strftime_now", FN_STRFTIME}};
    assay_error_clear(err);
    eq_too_deep = 0;
    *out        = NULL;
    *out_len    = 0;
    sbuf   o    = {.max = JINJA_MAX_OUTPUT};
    render R    = {.arena = {.cap = JINJA_MAX_MEMORY}, .where = where, .err = err, .out = &o};
    jframe globals_frame = {0}, top = {.parent = &globals_frame};
    R.top  = &top;
    int rc = 0;
    for (size_t i = 0; i < sizeof globals / sizeof *globals && !rc; i++)
        rc = frame_set(&R, &globals_frame, (jstr){globals[i].name, strlen(globals[i].name)},
                       (jval){.kind = JV_FUNC, .u.fn = globals[i].fn});
    for (size_t i = 0; i < nvars && !rc; i++)
        rc = frame_set(&R, &top, (jstr){vars[i].name, strlen(vars[i].name)}, vars[i].value);
    if (!rc)
        rc = exec_body(&R, &top, root, &o);
    jarena_free(&R.arena);
    if (rc) {
        free(o.p);
        return err->code ? err->code : ASSAY_EINTERNAL;
    }
    if (!o.p && !(o.p = calloc(1, 1)))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
    *out     = o.p;
    *out_len = o.n;
    return 0;
}
