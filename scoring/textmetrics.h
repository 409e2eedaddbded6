/* scoring/textmetrics.h — text-generation metrics computed exactly as their reference
 * implementations compute them: sacrebleu 2.6.0 (corpus BLEU with the 13a tokenizer and
 * exponential smoothing; chrF with its defaults), Google's rouge-score 0.1.2 (its tokenizer,
 * optional Porter stemming; ROUGE-1, ROUGE-2, ROUGE-L, ROUGE-Lsum), SQuAD v1.1 token F1 and
 * lm-eval's exact_match options. Pure functions on UTF-8 byte strings (a string is a pointer and a
 * length; embedded NUL bytes are ordinary bytes; a byte that is not valid UTF-8 counts as one
 * character of its own). Python's notions are kept where the references use them: str.split()
 * whitespace, str.lower() (full mappings, final sigma), `re`'s \w and \b. Every function returns 0
 * on success and -1 when out of memory (or, for exact_match's regexes, an invalid pattern: err
 * says PCRE2's message). Reentrant: no global state. */
#ifndef ASSAY_TEXTMETRICS_H
#define ASSAY_TEXTMETRICS_H

#include <stddef.h>

#include "core/error.h"

typedef struct tm_str {
    const char *s;
    size_t      n;
} tm_str;

/* ---- BLEU (sacrebleu.metrics.BLEU defaults: max n-gram 4, tokenize "13a", smooth "exp",
 * lowercase off, effective order off) ---- */
typedef struct tm_bleu {
    double score; /* 0..100, as sacrebleu's BLEUScore.score */
    double precisions[4];
    double bp;    /* brevity penalty */
    double ratio; /* sys_len / ref_len */
    long   sys_len, ref_len;
    long   counts[4], totals[4];
} tm_bleu;
/* hyps[i] is scored against refs[r * n + i] for r in 0..n_refs-1 (sacrebleu's list of reference
 * streams). Corpus-level, like sacrebleu.corpus_bleu. n_refs == 0 fails (-1); an empty reference
 * string is a reference of length 0, as in sacrebleu. */
int tm_bleu_corpus(const tm_str *hyps, const tm_str *refs, size_t n, size_t n_refs, tm_bleu *out);
/* sacrebleu's signature for these settings, e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|
 * version:2.6.0"; version is the sacrebleu version the values were checked against. Returns buf. */
const char *tm_bleu_signature(size_t n_refs, char *buf, size_t cap);

/* ---- chrF (sacrebleu.metrics.CHRF defaults: char order 6, word order 0, beta 2, whitespace
 * removed, corpus-level statistics summed) ---- */
typedef struct tm_chrf {
    double score; /* 0..100 */
} tm_chrf;
int tm_chrf_corpus(const tm_str *hyps, const tm_str *refs, size_t n, size_t n_refs, tm_chrf *out);
const char *tm_chrf_signature(size_t n_refs, char *buf, size_t cap); /* returns buf */

/* ---- ROUGE (rouge_score.rouge_scorer.RougeScorer(["rouge1","rouge2","rougeL","rougeLsum"],
 * use_stemmer=stem)) for one (target, prediction) pair; F-measure, precision, recall each. ---- */
typedef struct tm_prf {
    double precision, recall, fmeasure;
} tm_prf;
/* A struct tag only: a typedef of the same name would clash with the function tm_rouge. */
struct tm_rouge {
    tm_prf rouge1, rouge2, rougeL, rougeLsum;
};
/* rougeLsum splits target and prediction on "\n" (rouge-score's behaviour when the text already
 * has newlines; it does not sentence-split otherwise). Memory: rougeLsum keeps one LCS table of
 * (longest target line + 1) x (longest prediction line + 1) 4-byte cells; the rest is linear. */
int tm_rouge(tm_str target, tm_str prediction, int use_stemmer, struct tm_rouge *out);
/* The Porter stemmer rouge-score uses (nltk's PorterStemmer, mode NLTK_EXTENSIONS) on one
 * lower-case ASCII token; out gets a NUL-terminated stem (cap >= n + 1). */
int tm_porter_stem(const char *w, size_t n, char *out, size_t cap);

/* ---- SQuAD v1.1 (lowercase, remove punctuation, remove articles a/an/the, split) ---- */
/* Token F1 of one prediction against one gold answer; max over several golds is the caller's. */
int tm_squad_f1(tm_str prediction, tm_str gold, double *f1);
/* SQuAD exact match after the same normalization: 1.0 or 0.0. */
int tm_squad_em(tm_str prediction, tm_str gold, double *em);

/* ---- lm-eval's exact_match (HF evaluate's exact_match as lm-eval vendors it) ---- */
typedef struct tm_em_opts {
    const char *const *regexes_to_ignore; /* each removed (re.sub with "") from both, in order */
    size_t             n_regexes;
    int                ignore_case;        /* lower() both */
    int                ignore_punctuation; /* remove string.punctuation from both */
    int                ignore_numbers;     /* remove string.digits from both */
} tm_em_opts;
/* 1.0 when equal after the options are applied in lm-eval's order (regexes, case, punctuation,
 * numbers), else 0.0; as lm-eval computes it for one item, numpy's one-element string arrays
 * included (trailing NUL characters drop; lower() keeps the string's width, so a string that grows,
 * as U+0130 does, loses its last characters). n_regexes == 0 is regexes_to_ignore=None. Patterns
 * are Python `re` patterns run by PCRE2 (UTF, UCP), with \s, \S and \Z rewritten to Python's
 * meaning; an invalid pattern fails with err naming it and PCRE2's message (ASSAY_EINVAL). */
int tm_exact_match(tm_str prediction, tm_str reference, const tm_em_opts *o, double *em,
                   assay_error *err);

#endif
