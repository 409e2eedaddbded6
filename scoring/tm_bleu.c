/* scoring/tm_bleu.c — corpus BLEU (13a tokenizer, exponential smoothing) and chrF, computed as
 * sacrebleu 2.6.0's BLEU() and CHRF() defaults compute them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoring/textmetrics.h"
#include "scoring/tm_common.h"

#define TM_SACREBLEU_VERSION "2.6.0"
#define BLEU_ORDER 4
#define CHRF_ORDER 6
#define CHRF_BETA 2

/* One segment's text on its way through the tokenizer: two buffers used in turn, and the tokens
 * (pointing into whichever buffer holds the final text). */
typedef struct seg_work {
    tm_buf   a, b;
    tm_units toks;
} seg_work;

static void seg_work_free(seg_work *w, size_t n) {
    for (size_t i = 0; w && i < n; i++) {
        tm_buf_free(&w[i].a);
        tm_buf_free(&w[i].b);
        tm_units_free(&w[i].toks);
    }
    free(w);
}

/* str.replace(needle, repl): src into dst. */
static int replace_all(tm_buf *dst, const tm_buf *src, const char *needle, const char *repl) {
    size_t nl = strlen(needle), rl = strlen(repl);
    dst->n = 0;
    if (tm_buf_reserve(dst, src->n) != 0)
        return -1;
    size_t i = 0;
    while (i < src->n) {
        const char *hit  = src->n - i >= nl ? memmem(src->p + i, src->n - i, needle, nl) : NULL;
        size_t      upto = hit ? (size_t)(hit - src->p) : src->n;
        if (tm_buf_put(dst, src->p + i, upto - i) != 0)
            return -1;
        if (!hit)
            break;
        if (tm_buf_put(dst, repl, rl) != 0)
            return -1;
        i = upto + nl;
    }
    return tm_buf_put(dst, "", 0);
}

/* The first rule's class: {|}~ [\]^_` space!"#$%& ()*+ :;<=>?@ and / (ASCII only). */
static int in_class13a(unsigned char c) {
    return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
           (c >= 0x28 && c <= 0x2B) || (c >= 0x3A && c <= 0x40) || c == '/';
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_dot_comma(unsigned char c) { return c == '.' || c == ','; }

/* The three two-character rules as re.sub applies them: left to right, non-overlapping. A
 * multi-byte character never contains an ASCII byte, so matching bytes gives what matching
 * characters gives. */
enum { RULE_NONDIGIT_PUNCT, RULE_PUNCT_NONDIGIT, RULE_DIGIT_DASH };
static int apply_pair_rule(tm_buf *dst, const tm_buf *src, int rule) {
    /* A match turns 2 bytes into 4: the output is at most twice the input. */
    dst->n = 0;
    if (src->n > SIZE_MAX / 2 - 1 || tm_buf_reserve(dst, 2 * src->n) != 0)
        return -1;
    const unsigned char *p = (const unsigned char *)src->p;
    char                *o = dst->p;
    size_t               k = 0;
    for (size_t i = 0; i < src->n;) {
        unsigned char c = p[i], d = i + 1 < src->n ? p[i + 1] : 0;
        int           hit = 0;
        if (i + 1 < src->n) {
            if (rule == RULE_NONDIGIT_PUNCT) /* ([^0-9])([\.,]) -> "\1 \2 " */
                hit = !is_digit(c) && is_dot_comma(d);
            else if (rule == RULE_PUNCT_NONDIGIT) /* ([\.,])([^0-9]) -> " \1 \2" */
                hit = is_dot_comma(c) && !is_digit(d);
            else /* ([0-9])(-) -> "\1 \2 " */
                hit = is_digit(c) && d == '-';
        }
        if (!hit) {
            o[k++] = (char)c;
            i++;
        } else if (rule == RULE_PUNCT_NONDIGIT) {
            o[k++] = ' ', o[k++] = (char)c, o[k++] = ' ', o[k++] = (char)d;
            i += 2;
        } else {
            o[k++] = (char)c, o[k++] = ' ', o[k++] = (char)d, o[k++] = ' ';
            i += 2;
        }
    }
    dst->n    = k;
    dst->p[k] = '\0';
    return 0;
}

/* sacrebleu's 13a tokenizer after rstrip(); w->toks gets the tokens. */
static int tokenize_13a(seg_work *w, tm_str s) {
    size_t end = 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        i += tm_utf8_next(s.s, s.n, i, &cp);
        if (!tm_py_isspace(cp))
            end = i;
    }
    tm_buf *cur = &w->a, *other = &w->b, *t;
    cur->n = 0;
    if (tm_buf_put(cur, s.s, end) != 0)
        return -1;
#define STEP(call)                                                                                 \
    do {                                                                                           \
        if ((call) != 0)                                                                           \
            return -1;                                                                             \
        t = cur, cur = other, other = t;                                                           \
    } while (0)
    STEP(replace_all(other, cur, "<skipped>", ""));
    STEP(replace_all(other, cur, "-\n", ""));
    STEP(replace_all(other, cur, "\n", " "));
    if (memchr(cur->p, '&', cur->n)) {
        STEP(replace_all(other, cur, "&quot;", "\""));
        STEP(replace_all(other, cur, "&amp;", "&"));
        STEP(replace_all(other, cur, "&lt;", "<"));
        STEP(replace_all(other, cur, "&gt;", ">"));
    }
    /* f" {line} " through the first rule: each class character gets a space either side. */
    other->n = 0;
    if (tm_buf_reserve(other, 3 * cur->n + 6) != 0)
        return -1;
    other->p[other->n++] = ' ';
    for (size_t i = 0; i <= cur->n; i++) {
        char c = i < cur->n ? cur->p[i] : ' ';
        if (in_class13a((unsigned char)c)) {
            other->p[other->n++] = ' ';
            other->p[other->n++] = c;
            other->p[other->n++] = ' ';
        } else {
            other->p[other->n++] = c;
        }
    }
    other->p[other->n] = '\0';
    t = cur, cur = other, other = t;
    /* The leading space went through the rule too (it is in the class). */
    /* The rules only ever match at a '.', ',' or '-' (none of them adds one). */
    if (memchr(cur->p, '.', cur->n) || memchr(cur->p, ',', cur->n)) {
        STEP(apply_pair_rule(other, cur, RULE_NONDIGIT_PUNCT));
        STEP(apply_pair_rule(other, cur, RULE_PUNCT_NONDIGIT));
    }
    if (memchr(cur->p, '-', cur->n))
        STEP(apply_pair_rule(other, cur, RULE_DIGIT_DASH));
#undef STEP
    return tm_split_ws(&w->toks, cur->p, cur->n);
}

/* _get_closest_ref_len: the nearest length, the shorter one on a tie. */
static long closest_ref_len(long hyp_len, const seg_work *refs, size_t n_refs) {
    long best_diff = -1, best = -1;
    for (size_t r = 0; r < n_refs; r++) {
        long len = (long)refs[r].toks.n, diff = labs(hyp_len - len);
        if (best_diff == -1 || diff < best_diff)
            best_diff = diff, best = len;
        else if (diff == best_diff && len < best)
            best = len;
    }
    return best;
}

static double my_log(double x) { return x == 0.0 ? -9999999999.0 : log(x); }

/* compute_bleu with smooth "exp", effective order off. */
static void bleu_from_stats(tm_bleu *o) {
    o->bp = 1.0;
    if (o->sys_len < o->ref_len)
        o->bp = o->sys_len > 0 ? exp(1.0 - (double)o->ref_len / (double)o->sys_len) : 0.0;
    o->ratio = o->ref_len ? (double)o->sys_len / (double)o->ref_len : 0.0;
    for (int k = 0; k < BLEU_ORDER; k++)
        o->precisions[k] = 0.0;
    o->score = 0.0;
    int any  = 0;
    for (int k = 0; k < BLEU_ORDER; k++)
        any |= o->counts[k] != 0;
    if (!any)
        return;
    double smooth = 1.0;
    for (int k = 0; k < BLEU_ORDER; k++) {
        if (o->totals[k] == 0)
            break;
        if (o->counts[k] == 0) {
            smooth *= 2;
            o->precisions[k] = 100. / (smooth * (double)o->totals[k]);
        } else {
            o->precisions[k] = 100. * (double)o->counts[k] / (double)o->totals[k];
        }
    }
    double sum = 0.0;
    for (int k = 0; k < BLEU_ORDER; k++)
        sum += my_log(o->precisions[k]);
    o->score = o->bp * exp(sum / BLEU_ORDER);
}

int tm_bleu_corpus(const tm_str *hyps, const tm_str *refs, size_t n, size_t n_refs, tm_bleu *out) {
    memset(out, 0, sizeof *out);
    if (n_refs == 0 || n_refs >= SIZE_MAX / sizeof(seg_work) - 1)
        return -1;
    seg_work      *w  = calloc(n_refs + 1, sizeof *w);
    tm_ngram_table t  = {0};
    int            rc = -1;
    if (!w)
        return -1;
    tm_units *ref_toks = malloc(n_refs * sizeof *ref_toks);
    if (!ref_toks)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (tokenize_13a(&w[0], hyps[i]) != 0)
            goto done;
        for (size_t r = 0; r < n_refs; r++) {
            if (tokenize_13a(&w[r + 1], refs[r * n + i]) != 0)
                goto done;
            ref_toks[r] = w[r + 1].toks;
        }
        long match[BLEU_ORDER];
        if (tm_ngram_match(&t, &w[0].toks, ref_toks, n_refs, BLEU_ORDER, match) != 0)
            goto done;
        long hyp_len = (long)w[0].toks.n;
        out->sys_len += hyp_len;
        out->ref_len += closest_ref_len(hyp_len, &w[1], n_refs);
        for (int k = 0; k < BLEU_ORDER; k++) {
            out->counts[k] += match[k];
            out->totals[k] += tm_ngram_count(w[0].toks.n, k + 1);
        }
    }
    bleu_from_stats(out);
    rc = 0;
done:
    free(ref_toks);
    tm_ngram_table_free(&t);
    seg_work_free(w, n_refs + 1);
    return rc;
}

const char *tm_bleu_signature(size_t n_refs, char *buf, size_t cap) {
    if (buf && cap)
        snprintf(buf, cap, "nrefs:%zu|case:mixed|eff:no|tok:13a|smooth:exp|version:%s", n_refs,
                 TM_SACREBLEU_VERSION);
    return buf;
}

/* ---- chrF ---- */

/* stats holds [hyp, ref, match] per character order. */
static double chrf_f_score(const long *stats) {
    const double eps = 1e-16, factor = CHRF_BETA * CHRF_BETA;
    double       avg_prec = 0.0, avg_rec = 0.0;
    int          effective_order = 0;
    for (int k = 0; k < CHRF_ORDER; k++) {
        long   n_hyp = stats[3 * k], n_ref = stats[3 * k + 1], n_match = stats[3 * k + 2];
        double prec = n_hyp > 0 ? (double)n_match / (double)n_hyp : eps;
        double rec  = n_ref > 0 ? (double)n_match / (double)n_ref : eps;
        if (n_hyp > 0 && n_ref > 0) {
            avg_prec += prec;
            avg_rec += rec;
            effective_order++;
        }
    }
    if (effective_order == 0) {
        avg_prec = avg_rec = 0.0;
    } else {
        avg_prec /= effective_order;
        avg_rec /= effective_order;
    }
    if (avg_prec + avg_rec == 0.0)
        return 0.0;
    double score = (1 + factor) * avg_prec * avg_rec;
    score /= (factor * avg_prec) + avg_rec;
    return 100 * score;
}

/* The characters of s with whitespace removed. */
static int chrf_chars(tm_units *u, tm_str s) {
    u->n = 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        size_t   k = tm_utf8_next(s.s, s.n, i, &cp);
        if (!tm_py_isspace(cp) && tm_units_push(u, s.s + i, k) != 0)
            return -1;
        i += k;
    }
    return 0;
}

int tm_chrf_corpus(const tm_str *hyps, const tm_str *refs, size_t n, size_t n_refs, tm_chrf *out) {
    out->score = 0.0;
    if (n_refs == 0)
        return -1;
    tm_units       hyp = {0}, ref = {0};
    tm_ngram_table t                     = {0};
    long           total[3 * CHRF_ORDER] = {0};
    int            rc                    = -1;
    for (size_t i = 0; i < n; i++) {
        if (chrf_chars(&hyp, hyps[i]) != 0)
            goto done;
        /* The reference whose own chrF is highest gives the segment's statistics. */
        long   best[3 * CHRF_ORDER] = {0};
        double best_f               = -1.0;
        for (size_t r = 0; r < n_refs; r++) {
            long stats[3 * CHRF_ORDER], match[CHRF_ORDER];
            if (chrf_chars(&ref, refs[r * n + i]) != 0 ||
                tm_ngram_match(&t, &hyp, &ref, 1, CHRF_ORDER, match) != 0)
                goto done;
            for (int k = 0; k < CHRF_ORDER; k++) {
                long n_ref       = tm_ngram_count(ref.n, k + 1);
                stats[3 * k]     = n_ref > 0 ? tm_ngram_count(hyp.n, k + 1) : 0;
                stats[3 * k + 1] = n_ref;
                stats[3 * k + 2] = match[k];
            }
            double f = chrf_f_score(stats);
            if (f > best_f) {
                best_f = f;
                memcpy(best, stats, sizeof best);
            }
        }
        for (int k = 0; k < 3 * CHRF_ORDER; k++)
            total[k] += best[k];
    }
    out->score = chrf_f_score(total);
    rc         = 0;
done:
    tm_units_free(&hyp);
    tm_units_free(&ref);
    tm_ngram_table_free(&t);
    return rc;
}

const char *tm_chrf_signature(size_t n_refs, char *buf, size_t cap) {
    if (buf && cap)
        snprintf(buf, cap, "nrefs:%zu|case:mixed|eff:yes|nc:%d|nw:0|space:no|version:%s", n_refs,
                 CHRF_ORDER, TM_SACREBLEU_VERSION);
    return buf;
}
