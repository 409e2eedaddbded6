/* scoring/flt_regex.c — lm-eval's RegexFilter on PCRE2: Python `re` findall semantics (groups,
 * empty matches), group_select, fallback, .strip() of the selected match.
 *
 * Patterns are written for Python's `re`; before compiling, the few places where PCRE2 reads the
 * same text differently are rewritten: \s and \S take Python's whitespace (which adds
 * U+001C..U+001F and U+0085; a \S inside a set keeps PCRE2's, which has no set difference to
 * express it), \Z is the end of the string, \uXXXX / \UXXXXXXXX are code points,
 * x{,n} is x{0,n} (x{,} is x{0,}), '[' inside a set is literal (no POSIX classes), and syntax
 * Python rejects is rejected (unknown letter escapes such as \K or \p, "(*" verbs). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "scoring/filters.h"
#include "scoring/flt_internal.h"

struct flt_regex {
    pcre2_code *code;
    uint32_t    n_groups;
    int         group_select;
    char       *fallback;
    size_t      fallback_n;
};

/* Python's \s is str.isspace(): it has U+001C..U+001F and U+0085, which PCRE2's Unicode \s
 * lacks, and lacks U+180E, which PCRE2's has; so the set is written out. */
#define PY_SPACE_SET                                                                               \
    "\\t-\\r\\x1c-\\x20\\x85\\xa0\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"                   \
    "\\x{202f}\\x{205f}\\x{3000}"
/* bytes of output per byte of pattern, enough for the longest rewrite (\S: 2 bytes in) */
#define PY_REWRITE_MAX sizeof("[^" PY_SPACE_SET "]")

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int all_hex(const char *p, size_t k) {
    for (size_t i = 0; i < k; i++)
        if (!is_hex(p[i]))
            return 0;
    return 1;
}

static int py_reject(size_t *bad, const char **why, size_t at, const char *reason) {
    *bad = at;
    *why = reason;
    return -1;
}

/* Python's pattern → PCRE2's. 0, or -1 with *bad the offset of what Python would reject and
 * *why its reason. out holds PY_REWRITE_MAX bytes per input byte. */
static int py_translate(const char *p, size_t n, char *out, size_t *out_n, size_t *bad,
                        const char **why) {
    size_t w      = 0;
    int    in_set = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\') {
            if (i + 1 >= n)
                return py_reject(bad, why, i, "bad escape (end of pattern)");
            char e = p[++i];
            if ((e == 'u' || e == 'U') && (e == 'u' ? 4 : 8) <= n - i - 1 &&
                all_hex(p + i + 1, e == 'u' ? 4 : 8)) {
                size_t k = e == 'u' ? 4 : 8;
                w += (size_t)sprintf(out + w, "\\x{%.*s}", (int)k, p + i + 1);
                i += k;
                continue;
            }
            if (e == 'x' && !(n - i - 1 >= 2 && all_hex(p + i + 1, 2)))
                return py_reject(bad, why, i - 1, "incomplete escape \\x");
            const char *ok = in_set ? "abfnrtvxdDsSwW" : "abBdDfnrsStvwWxAZ";
            if (((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) && !strchr(ok, e))
                return py_reject(bad, why, i - 1, "bad escape");
            if (e == 's' || (e == 'S' && !in_set)) {
                const char *r = in_set     ? PY_SPACE_SET
                                : e == 's' ? "[" PY_SPACE_SET "]"
                                           : "[^" PY_SPACE_SET "]";
                size_t      k = strlen(r);
                memcpy(out + w, r, k);
                w += k;
            } else if (e == 'Z') {
                memcpy(out + w, "\\z", 2);
                w += 2;
            } else {
                out[w++] = '\\';
                out[w++] = e;
            }
            continue;
        }
        if (in_set) {
            if (c == ']')
                in_set = 0;
            if (c == '[')
                out[w++] = '\\';
            out[w++] = c;
            continue;
        }
        if (c == '[') {
            in_set   = 1;
            out[w++] = c;
            if (i + 1 < n && p[i + 1] == '^')
                out[w++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') /* a leading ']' is a member */
                out[w++] = '\\', out[w++] = p[++i];
            continue;
        }
        if (c == '(' && i + 1 < n && p[i + 1] == '*')
            return py_reject(bad, why, i + 1, "nothing to repeat");
        out[w++] = c;
        if (c == '{' && i + 1 < n && p[i + 1] == ',') {
            size_t j = i + 2;
            while (j < n && p[j] >= '0' && p[j] <= '9')
                j++;
            if (j < n && p[j] == '}') /* Python: {,n} is {0,n} and {,} is {0,} */
                out[w++] = '0';
        }
    }
    *out_n = w;
    return 0;
}

struct pcre2_real_code_8 *flt_pyre_compile(const char *pattern, const char *what,
                                           assay_error *err) {
    size_t n = strlen(pattern), cap;
    if (size_mul(n, PY_REWRITE_MAX, &cap) || size_add(cap, 1, &cap)) {
        assay_fail(err, ASSAY_EINVAL, "%s: pattern too long", what);
        return NULL;
    }
    char *tr = malloc(cap);
    if (!tr) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    size_t      tn, bad = 0;
    const char *why  = NULL;
    pcre2_code *code = NULL;
    if (py_translate(pattern, n, tr, &tn, &bad, &why)) {
        assay_fail(err, ASSAY_EINVAL, "%s: pattern \"%.200s\": %s at position %zu", what, pattern,
                   why, bad);
        goto done;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    /* '.', '^' and '$' see only "\n" as a line end, and (?m)^ also matches after a final "\n",
     * as in Python */
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int        ec;
    PCRE2_SIZE eo;
    code = pcre2_compile((PCRE2_SPTR)tr, tn,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C |
                             PCRE2_ALT_CIRCUMFLEX,
                         &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        assay_fail(err, ASSAY_EINVAL, "%s: pattern \"%.200s\": %s (at offset %zu of %s)", what,
                   pattern, (const char *)msg, (size_t)eo,
                   tn == n && !memcmp(tr, pattern, n) ? "the pattern" : "its PCRE2 rewrite");
        goto done;
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* optional: the interpreter is the fallback */
done:
    free(tr);
    return code;
}

flt_regex *flt_regex_compile(const char *pattern, int group_select, const char *fallback,
                             assay_error *err) {
    if (!pattern || !fallback) {
        assay_fail(err, ASSAY_EINVAL, "regex filter: pattern and fallback are required");
        return NULL;
    }
    flt_regex *r = calloc(1, sizeof *r);
    if (!r) {
        assay_fail(err, ASSAY_ENOMEM, "regex filter: out of memory");
        return NULL;
    }
    if (!(r->code = flt_pyre_compile(pattern, "regex filter", err)))
        goto fail;
    pcre2_pattern_info(r->code, PCRE2_INFO_CAPTURECOUNT, &r->n_groups);
    r->group_select = group_select;
    r->fallback_n   = strlen(fallback);
    r->fallback     = malloc(r->fallback_n + 1);
    if (!r->fallback) {
        assay_fail(err, ASSAY_ENOMEM, "regex filter: out of memory");
        goto fail;
    }
    memcpy(r->fallback, fallback, r->fallback_n + 1);
    return r;
fail:
    flt_regex_free(r);
    return NULL;
}

void flt_regex_free(flt_regex *r) {
    if (!r)
        return;
    pcre2_code_free(r->code);
    free(r->fallback);
    free(r);
}

/* What re.findall yields for one match: the whole match (no groups), group 1 (one group; unset
 * is ""), or, for a tuple, lm-eval's first non-empty group (none: *tuple_empty). */
static void match_item(const flt_regex *r, const PCRE2_SIZE *ov, size_t *a, size_t *b,
                       int *tuple_empty) {
    *tuple_empty = 0;
    if (r->n_groups == 0) {
        *a = ov[0], *b = ov[1];
        return;
    }
    for (uint32_t g = 1; g <= r->n_groups; g++) {
        PCRE2_SIZE s = ov[2 * g], e = ov[2 * g + 1];
        int        set = s != PCRE2_UNSET && e > s;
        if (set || r->n_groups == 1) {
            *a = set ? s : 0, *b = set ? e : 0;
            return;
        }
    }
    *a = *b      = 0;
    *tuple_empty = 1;
}

/* Walks re.findall(pattern, s) and stops at match number `want` (SIZE_MAX: never): the number
 * of matches seen, or -1 on a PCRE2 failure (err set). *a, *b, *te: the item of the match
 * `want`, or of the last one when want is SIZE_MAX. */
static long long regex_walk(const flt_regex *r, const char *s, size_t n, size_t want,
                            pcre2_match_data *md, size_t *a, size_t *b, int *te, assay_error *err) {
    size_t   off = 0, count = 0;
    uint32_t opts = 0;
    while (off <= n) {
        int rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, off, opts, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep patterns: the interpreter's heap instead */
            rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, off, opts | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            assay_fail(err, ASSAY_EINTERNAL, "regex filter: matching at byte %zu: %s", off,
                       (const char *)msg);
            return -1;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        match_item(r, ov, a, b, te);
        if (count++ == want)
            break;
        /* Python: after an empty match the next one must not be empty at the same place; a
         * non-empty match may still start there */
        opts = ov[1] == ov[0] ? PCRE2_NOTEMPTY_ATSTART : 0;
        off  = ov[1] > off ? ov[1] : off;
    }
    return (long long)count;
}

int flt_regex_apply(const flt_regex *r, const char *s, size_t n, flt_out *out, assay_error *err) {
    out->s = NULL;
    out->n = 0;
    if (!s) { /* an empty response may come as NULL; PCRE2 wants a pointer */
        s = "";
        n = 0;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->code, NULL);
    if (!md) {
        assay_fail(err, ASSAY_ENOMEM, "regex filter: out of memory");
        return -1;
    }
    size_t    a = 0, b = 0;
    int       te = 0, found;
    long long gs = r->group_select, count;
    if (gs >= 0) {
        count = regex_walk(r, s, n, (size_t)gs, md, &a, &b, &te, err);
        found = count > gs;
    } else {
        count = regex_walk(r, s, n, SIZE_MAX, md, &a, &b, &te, err);
        found = count + gs >= 0;
        /* -1 is the last match, in hand; -k needs a second walk to match number count - k */
        if (count > 0 && found && gs < -1)
            count = regex_walk(r, s, n, (size_t)(count + gs), md, &a, &b, &te, err);
    }
    pcre2_match_data_free(md);
    if (count < 0)
        return -1;
    /* no match, or a group_select beyond the matches (Python would raise IndexError): the
     * fallback as given; a tuple of empty groups: the fallback stripped, as lm-eval does */
    const char *src = s;
    if (!found || te) {
        src = r->fallback;
        a   = 0;
        b   = r->fallback_n;
    }
    size_t lo = 0, hi = b - a;
    if (found)
        flt_strip_span(src + a, b - a, &lo, &hi);
    if (flt_out_set(out, src + a + lo, hi - lo)) {
        assay_fail(err, ASSAY_ENOMEM, "regex filter: out of memory");
        return -1;
    }
    return 0;
}
