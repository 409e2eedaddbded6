/* scoring/ppl.h — perplexity arithmetic: per-document counts and the corpus aggregates the way
 * lm-eval defines them (weighted_perplexity = exp(sum NLL / sum words), bits_per_byte =
 * sum NLL / sum bytes / ln 2), plus token perplexity exp(sum NLL / sum tokens). Pure functions. */
#ifndef ASSAY_PPL_H
#define ASSAY_PPL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ppl_stats {
    double  nll;    /* negative log-likelihood, natural log, summed in double */
    int64_t tokens; /* tokens scored */
    int64_t words;  /* lm-eval count_words: len(re.split(r"\s+", doc)) */
    int64_t bytes;  /* UTF-8 bytes of the document */
    /* Hugging Face recipe arithmetic (sliding mode only; see ppl_hf_recipe_add). */
    double  hf_nll;
    int64_t hf_tokens;
} ppl_stats;

/* Python's str.isspace() (what re's \s and str.rstrip() match) for one code point. */
int ppl_is_py_space(uint32_t cp);

/* Decodes one UTF-8 code point at s[0..len) (len >= 1). Returns its byte length (1..4) and sets
 * *cp; an invalid or truncated sequence counts as one byte with *cp = 0xFFFD. */
size_t ppl_utf8_next(const char *s, size_t len, uint32_t *cp);

/* lm-eval count_words: len(re.split(r"\s+", doc)) = 1 + the number of maximal runs of
 * whitespace, so leading/trailing whitespace each add an empty piece and "" counts 1. */
int64_t ppl_count_words(const char *text, size_t len);

/* Fills words and bytes for a document; nll and tokens start at 0. */
void ppl_stats_init(ppl_stats *s, const char *text, size_t len);

/* Adds one window's result: the sum of its scored NLLs over `scored` tokens; hf_count is the
 * count Hugging Face's recipe multiplies the window's mean loss by (win_span.hf_count). */
void ppl_stats_add_window(ppl_stats *s, double nll_sum, int64_t scored, int64_t hf_count);

void ppl_stats_merge(ppl_stats *total, const ppl_stats *doc);

double ppl_token_ppl(const ppl_stats *s);     /* exp(nll / tokens) */
double ppl_word_ppl(const ppl_stats *s);      /* exp(nll / words) */
double ppl_byte_ppl(const ppl_stats *s);      /* exp(nll / bytes) */
double ppl_bits_per_byte(const ppl_stats *s); /* nll / bytes / ln 2 */
/* The HF doc's `exp(nll_sum / n_tokens)` where each window adds mean_loss * (num_valid - 1). */
double ppl_hf_recipe_ppl(const ppl_stats *s);

#endif
