/* scoring/windows.h — how a long token array is cut into score requests. Two protocols:
 * Hugging Face's strided sliding window ("Perplexity of fixed-length models") and lm-eval's
 * loglikelihood_rolling (get_rolling_token_windows + make_disjoint_window). Pure functions. */
#ifndef ASSAY_WINDOWS_H
#define ASSAY_WINDOWS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* One score request cut from a document's tokens t[0..n):
 *   request tokens = (prefix ? [prefix token] : []) + t[start..end)
 * and the targets scored are the request tokens at index >= score_from (each predicted from all
 * request tokens before it). score_from >= 1 always: the first request token has no prediction. */
typedef struct win_span {
    size_t start, end;
    int    prefix;
    size_t score_from;
    /* The number of tokens Hugging Face's perplexity recipe counts for this window
     * (num_valid_tokens - 1). Equal to the scored count except in overlapping windows, where the
     * recipe's loss averages over one more token than it counts; kept so the recipe's arithmetic
     * can be reproduced exactly (see ppl_hf_recipe_nll). */
    size_t hf_count;
} win_span;

/* Number of request tokens and of scored targets of a span. */
static inline size_t win_len(const win_span *w) { return w->end - w->start + (w->prefix ? 1 : 0); }
static inline size_t win_scored(const win_span *w) { return win_len(w) - w->score_from; }

typedef struct win_plan {
    win_span *spans;
    size_t    n, cap;
} win_plan;

void win_plan_free(win_plan *p); /* NULL-safe; leaves p zeroed */

/* Hugging Face sliding window over n tokens, window max_length, step stride
 * (1 <= stride <= max_length, max_length >= 2, n >= 2):
 *   prev_end = 0; for begin in range(0, n, stride): end = min(begin + max_length, n);
 *   trg_len = end - prev_end; the window t[begin..end) scores its last trg_len tokens except its
 *   first token (the model's loss shifts labels by one); prev_end = end; stop when end == n.
 * Appends to plan. Every token but t[0] is scored exactly once. */
int win_plan_sliding(win_plan *plan, size_t n, size_t max_length, size_t stride, assay_error *err);

/* lm-eval rolling windows with context_len (1 in loglikelihood_rolling) and max_seq_len, after
 * make_disjoint_window: the first request is [prefix] + t[0..min(max_seq_len, n)) scoring all of
 * t; each later one is t[end - max_seq_len - 1 .. end) scoring its last pred_len tokens. Every
 * token t[i] is scored exactly once; requests are at most max_seq_len + 1 tokens (the model reads
 * all but the last, so at most max_seq_len positions). n == 0 appends nothing. */
int win_plan_rolling(win_plan *plan, size_t n, size_t max_seq_len, size_t context_len,
                     assay_error *err);

/* Writes the request tokens of span w over doc tokens t into out (capacity >= win_len(w)). */
void win_fill_tokens(int32_t *out, const win_span *w, const int32_t *t, int32_t prefix_token);

#endif
