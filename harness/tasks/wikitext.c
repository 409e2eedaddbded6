/* harness/tasks/wikitext.c — lm-eval's wikitext task (wikitext.yaml, preprocess_wikitext.py):
 * output_type loglikelihood_rolling over doc_to_target = wikitext_detokenizer(page), the whole
 * page scored in lm-eval's rolling windows (harness/pipeline.h, as `assay ppl --mode rolling`);
 * process_results counts words (len(re.split(r"\s+", page))) and UTF-8 bytes of the page before
 * detokenization; word_perplexity = exp(-sum ll / sum words), byte_perplexity = exp(-sum ll /
 * sum bytes), bits_per_byte = -sum ll / sum bytes / ln 2 (weighted over documents). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"
#include "scoring/ppl.h"

/* re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s) for open o and close c (o == c for quotes): each o
 * with a later c gets the whitespace just inside both ends removed; scanning resumes after c. */
static int strip_pairs(tbuf *out, const char *s, size_t len, char o, char c) {
    size_t i = 0;
    while (i < len) {
        const char *close = s[i] == o ? memchr(s + i + 1, c, len - i - 1) : NULL;
        if (!close) {
            if (tbuf_put(out, s + i, 1))
                return -1;
            i++;
            continue;
        }
        size_t a = (size_t)(close - s), off, n;
        py_strip(s + i + 1, a - i - 1, &off, &n);
        if (tbuf_put(out, &o, 1) || tbuf_put(out, s + i + 1 + off, n) || tbuf_put(out, &c, 1))
            return -1;
        i = a + 1;
    }
    return tbuf_put(out, "", 0);
}

/* re.sub(r"/' [0-9]/", r"/'[0-9]/", s): the literal text "/'[0-9]/" replaces "/' D/" (lm-eval's
 * pattern and replacement as written; the replacement is not a back-reference). */
static int slash_quote_digit(tbuf *out, const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (i + 5 <= len && !memcmp(s + i, "/' ", 3) && s[i + 3] >= '0' && s[i + 3] <= '9' &&
            s[i + 4] == '/') {
            if (tbuf_puts(out, "/'[0-9]/"))
                return -1;
            i += 5;
        } else {
            if (tbuf_put(out, s + i, 1))
                return -1;
            i++;
        }
    }
    return tbuf_put(out, "", 0);
}

int wikitext_detokenize(tbuf *out, const char *s, size_t len) {
    static const char *const reps1[][2] = {{" @-@ ", "-"}, {" @,@ ", ","}, {" @.@ ", "."},
                                           {" : ", ": "},  {" ; ", "; "},  {" . ", ". "},
                                           {" ! ", "! "},  {" ? ", "? "},  {" , ", ", "}};
    static const char *const reps2[][2] = {
        {"= = = =", "===="}, {"= = =", "==="}, {"= =", "=="},  {" \xC2\xB0 ", "\xC2\xB0"},
        {" \n", "\n"},       {"\n ", "\n"},    {" N ", " 1 "}, {" 's", "'s"}};
    static const char pairs[][2] = {{'(', ')'}, {'[', ']'}, {'{', '}'}, {'"', '"'}, {'\'', '\''}};
    tbuf              a = {0}, b = {0};
    int               rc = py_replace(&a, s, len, "s '", "s'") || slash_quote_digit(&b, a.s, a.n);
    for (size_t k = 0; !rc && k < sizeof reps1 / sizeof reps1[0]; k++) {
        tbuf *src = k % 2 ? &a : &b, *dst = k % 2 ? &b : &a;
        dst->n = 0;
        rc     = py_replace(dst, src->s, src->n, reps1[k][0], reps1[k][1]);
    }
    /* 9 replacements: the text is in a */
    for (size_t k = 0; !rc && k < sizeof pairs / sizeof pairs[0]; k++) {
        tbuf *src = k % 2 ? &b : &a, *dst = k % 2 ? &a : &b;
        dst->n = 0;
        rc     = strip_pairs(dst, src->s, src->n, pairs[k][0], pairs[k][1]);
    }
    /* 5 passes: the text is in b */
    for (size_t k = 0; !rc && k < sizeof reps2 / sizeof reps2[0]; k++) {
        tbuf *src = k % 2 ? &a : &b, *dst = k % 2 ? &b : &a;
        dst->n = 0;
        rc     = py_replace(dst, src->s, src->n, reps2[k][0], reps2[k][1]);
    }
    /* 8 replacements: the text is in b */
    out->n = 0;
    rc     = rc || tbuf_put(out, b.s ? b.s : "", b.n);
    tbuf_free(&a);
    tbuf_free(&b);
    return rc ? -1 : 0;
}

static int wikitext_row(eval_task *t, const task_row *row, void *user, assay_error *err) {
    tbuf       *d = user;
    const char *page;
    size_t      len;
    int         rc;
    if ((rc = jsonl_get_string(row->r, row->obj, "page", 1, &page, &len, err)))
        return rc;
    if (wikitext_detokenize(d, page, len))
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", row->where);
    if (d->n == 0)
        return assay_fail(err, ASSAY_EINVAL, "%s: empty \"page\" (nothing to score)", row->where);
    const char *none = "";
    size_t      zero = 0;
    if ((rc = eval_task_add(t, d->s, d->n, &none, &zero, 1, 0, 0, eval_task_count(t), row->where,
                            err)))
        return rc;
    ppl_stats st;
    ppl_stats_init(&st, page, len); /* lm-eval counts the page before detokenizing */
    t->docs[t->n - 1].words = st.words;
    t->docs[t->n - 1].bytes = st.bytes;
    return ASSAY_OK;
}

int task_wikitext_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char path[1100];
    tbuf d = {0};
    if (o->num_fewshot > 0)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "wikitext: --num-fewshot %d: a perplexity task has no few-shot examples",
                          o->num_fewshot);
    snprintf(path, sizeof path, "%s/wikitext/test.jsonl", o->dir);
    snprintf(t->layout, sizeof t->layout,
             "jsonl: wikitext/test.jsonl (wikitext_document_level wikitext-2-raw-v1)");
    int rc = task_jsonl_each(
        t, o, path, "EleutherAI/wikitext_document_level wikitext-2-raw-v1 test split as JSON Lines",
        "{\"page\": \"...\"}", "documents", wikitext_row, &d, err);
    tbuf_free(&d);
    return rc;
}
