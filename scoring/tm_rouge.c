/* scoring/tm_rouge.c — ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum as rouge-score 0.1.2's RougeScorer
 * computes them: its tokenizer (lower(), anything but [a-z0-9] separates, optional Porter stem of
 * tokens longer than 3), n-gram overlap, LCS, and the summary-level union LCS over "\n" lines. */
#include <stdlib.h>
#include <string.h>

#include "scoring/textmetrics.h"
#include "scoring/tm_common.h"

/* A text as tokens: `text` holds them separated by ' ' within a line and '\n' between lines. */
typedef struct rouge_text {
    tm_buf    text, stemmed;
    tm_units  toks;
    size_t   *line_end; /* token index one past each line's last token */
    size_t    n_lines, cap_lines;
    uint32_t *ids; /* each token's interned id */
} rouge_text;

static void rouge_text_free(rouge_text *t) {
    tm_buf_free(&t->text);
    tm_buf_free(&t->stemmed);
    tm_units_free(&t->toks);
    free(t->line_end);
    free(t->ids);
}

/* str.lower() then [^a-z0-9]+ -> " ", keeping "\n" for rougeLsum's lines (a separator either
 * way). Only two non-ASCII characters lower-case to ASCII letters: U+0130 (to "i" and a combining
 * dot, which separates) and the Kelvin sign U+212A ("k"). */
static int rouge_normalize(tm_buf *out, tm_str s) {
    out->n = 0;
    if (tm_buf_reserve(out, s.n + 1) != 0)
        return -1;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        i += tm_utf8_next(s.s, s.n, i, &cp);
        char c = ' ';
        if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9') || cp == '\n')
            c = (char)cp;
        else if (cp >= 'A' && cp <= 'Z')
            c = (char)(cp + 32);
        else if (cp == 0x212A)
            c = 'k';
        else if (cp == 0x130) /* "i", then the combining dot separates like a space */
            out->p[out->n++] = 'i';
        out->p[out->n++] = c; /* never more bytes than the character had */
    }
    out->p[out->n] = '\0';
    return 0;
}

static int is_tok_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

static int rouge_tokenize(rouge_text *t, tm_str s, int use_stemmer) {
    if (rouge_normalize(&t->text, s) != 0)
        return -1;
    tm_buf *src = &t->text;
    if (use_stemmer) {
        tm_buf *o = &t->stemmed;
        o->n      = 0;
        if (tm_buf_reserve(o, src->n) != 0)
            return -1;
        for (size_t i = 0; i < src->n;) {
            if (!is_tok_char(src->p[i])) {
                o->p[o->n++] = src->p[i++];
                continue;
            }
            size_t j = i;
            while (j < src->n && is_tok_char(src->p[j]))
                j++;
            if (j - i > 3) {
                /* A stem is never longer than its word, so it fits where the word was. */
                if (tm_porter_stem(src->p + i, j - i, o->p + o->n, o->cap - o->n) != 0)
                    return -1;
                o->n += strlen(o->p + o->n);
            } else {
                memcpy(o->p + o->n, src->p + i, j - i);
                o->n += j - i;
            }
            i = j;
        }
        o->p[o->n] = '\0';
        src        = o;
    }
    t->toks.n  = 0;
    t->n_lines = 0;
    for (size_t i = 0; i <= src->n;) {
        if (i == src->n || src->p[i] == '\n') {
            if (t->n_lines == t->cap_lines) {
                size_t  cap = t->cap_lines ? t->cap_lines * 2 : 16;
                size_t *v =
                    cap <= SIZE_MAX / sizeof *v ? realloc(t->line_end, cap * sizeof *v) : NULL;
                if (!v)
                    return -1;
                t->line_end = v, t->cap_lines = cap;
            }
            t->line_end[t->n_lines++] = t->toks.n;
            i++;
        } else if (is_tok_char(src->p[i])) {
            size_t j = i;
            while (j < src->n && is_tok_char(src->p[j]))
                j++;
            if (tm_units_push(&t->toks, src->p + i, j - i) != 0)
                return -1;
            i = j;
        } else {
            i++;
        }
    }
    return 0;
}

/* Interned ids for the tokens of both texts, so LCS compares integers. */
static int intern_ids(rouge_text *a, rouge_text *b, uint32_t *n_ids) {
    size_t total = a->toks.n + b->toks.n, cap = 16;
    while (cap < 2 * total)
        cap *= 2;
    const tm_unit **slot    = calloc(cap, sizeof *slot);
    uint32_t       *slot_id = malloc(cap * sizeof *slot_id);
    free(a->ids), free(b->ids);
    a->ids = malloc((a->toks.n ? a->toks.n : 1) * sizeof *a->ids);
    b->ids = malloc((b->toks.n ? b->toks.n : 1) * sizeof *b->ids);
    int rc = -1;
    if (!slot || !slot_id || !a->ids || !b->ids)
        goto done;
    *n_ids            = 0;
    rouge_text *ts[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < ts[k]->toks.n; i++) {
            const tm_unit *u = &ts[k]->toks.v[i];
            size_t         s = (size_t)u->h & (cap - 1);
            while (slot[s] && !(slot[s]->h == u->h && slot[s]->n == u->n &&
                                memcmp(slot[s]->p, u->p, u->n) == 0))
                s = (s + 1) & (cap - 1);
            if (!slot[s])
                slot[s] = u, slot_id[s] = (*n_ids)++;
            ts[k]->ids[i] = slot_id[s];
        }
    }
    rc = 0;
done:
    free(slot);
    free(slot_id);
    return rc;
}

static double fmeasure(double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; }

static tm_prf prf(double p, double r) { return (tm_prf){p, r, fmeasure(p, r)}; }

/* LCS length in two rows. */
static int lcs_length(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, size_t *len) {
    size_t *prev = calloc(nb + 1, sizeof *prev), *cur = calloc(nb + 1, sizeof *cur);
    if (!prev || !cur) {
        free(prev), free(cur);
        return -1;
    }
    for (size_t i = 1; i <= na; i++) {
        for (size_t j = 1; j <= nb; j++)
            cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1
                                          : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        size_t *t = prev;
        prev = cur, cur = t;
    }
    *len = prev[nb];
    free(prev), free(cur);
    return 0;
}

/* Marks in `mark` the positions of ref that rouge-score's backtrack picks for one LCS with can
 * (table: (nr+1) x (nc+1), reused by the caller). */
static void lcs_mark(const uint32_t *ref, size_t nr, const uint32_t *can, size_t nc, uint32_t *t,
                     unsigned char *mark) {
    size_t w = nc + 1;
    for (size_t j = 0; j <= nc; j++)
        t[j] = 0;
    for (size_t i = 1; i <= nr; i++) {
        t[i * w] = 0;
        for (size_t j = 1; j <= nc; j++) {
            uint32_t up = t[(i - 1) * w + j], left = t[i * w + j - 1];
            t[i * w + j] =
                ref[i - 1] == can[j - 1] ? t[(i - 1) * w + j - 1] + 1 : (up > left ? up : left);
        }
    }
    size_t i = nr, j = nc;
    while (i > 0 && j > 0) {
        if (ref[i - 1] == can[j - 1]) {
            mark[i - 1] = 1;
            i--, j--;
        } else if (t[i * w + j - 1] > t[(i - 1) * w + j]) {
            j--;
        } else {
            i--;
        }
    }
}

/* _summary_level_lcs over the texts' lines. */
static int rouge_lsum(const rouge_text *ref, const rouge_text *can, uint32_t n_ids, tm_prf *out) {
    size_t m = ref->toks.n, n = can->toks.n;
    *out = (tm_prf){0, 0, 0};
    if (!m || !n)
        return 0;
    long          *cnt_r = calloc(n_ids, sizeof *cnt_r), *cnt_c = calloc(n_ids, sizeof *cnt_c);
    unsigned char *mark  = NULL;
    uint32_t      *table = NULL;
    int            rc    = -1;
    size_t         max_r = 0, max_c = 0;
    for (size_t l = 0, s = 0; l < ref->n_lines; s = ref->line_end[l++])
        max_r = ref->line_end[l] - s > max_r ? ref->line_end[l] - s : max_r;
    for (size_t l = 0, s = 0; l < can->n_lines; s = can->line_end[l++])
        max_c = can->line_end[l] - s > max_c ? can->line_end[l] - s : max_c;
    if (max_r + 1 > SIZE_MAX / sizeof *table / (max_c + 1))
        goto done;
    mark  = malloc(max_r + 1);
    table = malloc((max_r + 1) * (max_c + 1) * sizeof *table);
    if (!cnt_r || !cnt_c || !mark || !table)
        goto done;
    for (size_t i = 0; i < m; i++)
        cnt_r[ref->ids[i]]++;
    for (size_t i = 0; i < n; i++)
        cnt_c[can->ids[i]]++;
    long hits = 0;
    for (size_t l = 0, rs = 0; l < ref->n_lines; rs = ref->line_end[l++]) {
        size_t          nr = ref->line_end[l] - rs;
        const uint32_t *r  = ref->ids + rs;
        memset(mark, 0, nr + 1);
        for (size_t k = 0, cs = 0; k < can->n_lines; cs = can->line_end[k++])
            lcs_mark(r, nr, can->ids + cs, can->line_end[k] - cs, table, mark);
        for (size_t i = 0; i < nr; i++) {
            if (mark[i] && cnt_c[r[i]] > 0 && cnt_r[r[i]] > 0) {
                hits++;
                cnt_c[r[i]]--;
                cnt_r[r[i]]--;
            }
        }
    }
    *out = prf((double)hits / (double)n, (double)hits / (double)m);
    rc   = 0;
done:
    free(cnt_r), free(cnt_c), free(mark), free(table);
    return rc;
}

int tm_rouge(tm_str target, tm_str prediction, int use_stemmer, struct tm_rouge *out) {
    rouge_text     tg = {0}, pr = {0};
    tm_ngram_table nt    = {0};
    int            rc    = -1;
    uint32_t       n_ids = 0;
    memset(out, 0, sizeof *out);
    if (rouge_tokenize(&tg, target, use_stemmer) != 0 ||
        rouge_tokenize(&pr, prediction, use_stemmer) != 0 || intern_ids(&tg, &pr, &n_ids) != 0)
        goto done;
    long inter[2];
    if (tm_ngram_match(&nt, &pr.toks, &tg.toks, 1, 2, inter) != 0)
        goto done;
    tm_prf *rn[2] = {&out->rouge1, &out->rouge2};
    for (int k = 0; k < 2; k++) {
        long nt_k = tm_ngram_count(tg.toks.n, k + 1), np_k = tm_ngram_count(pr.toks.n, k + 1);
        *rn[k] = prf((double)inter[k] / (double)(np_k > 1 ? np_k : 1),
                     (double)inter[k] / (double)(nt_k > 1 ? nt_k : 1));
    }
    if (tg.toks.n && pr.toks.n) {
        size_t lcs;
        if (lcs_length(tg.ids, tg.toks.n, pr.ids, pr.toks.n, &lcs) != 0)
            goto done;
        out->rougeL = prf((double)lcs / (double)pr.toks.n, (double)lcs / (double)tg.toks.n);
    }
    if (rouge_lsum(&tg, &pr, n_ids, &out->rougeLsum) != 0)
        goto done;
    rc = 0;
done:
    tm_ngram_table_free(&nt);
    rouge_text_free(&tg);
    rouge_text_free(&pr);
    return rc;
}
