#include "scoring/windows.h"

#include <stdlib.h>
#include <string.h>

void win_plan_free(win_plan *p) {
    if (!p)
        return;
    free(p->spans);
    memset(p, 0, sizeof *p);
}

static int plan_push(win_plan *p, win_span s, assay_error *err) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof *p->spans)
            return assay_fail(err, ASSAY_ENOMEM, "window plan: too many windows");
        win_span *ns = realloc(p->spans, cap * sizeof *ns);
        if (!ns)
            return assay_fail(err, ASSAY_ENOMEM, "window plan: out of memory (%zu windows)", cap);
        p->spans = ns;
        p->cap   = cap;
    }
    p->spans[p->n++] = s;
    return ASSAY_OK;
}

int win_plan_sliding(win_plan *plan, size_t n, size_t max_length, size_t stride, assay_error *err) {
    if (max_length < 2)
        return assay_fail(err, ASSAY_EINVAL, "sliding window: context %zu is too small (need >= 2)",
                          max_length);
    if (stride < 1 || stride > max_length)
        return assay_fail(err, ASSAY_EINVAL,
                          "sliding window: stride %zu must be between 1 and the context %zu",
                          stride, max_length);
    if (n < 2)
        return assay_fail(err, ASSAY_EINVAL,
                          "sliding window: %zu token(s); need at least 2 to score anything", n);
    size_t prev_end = 0;
    for (size_t begin = 0; begin < n; begin += stride) {
        size_t end     = n - begin > max_length ? begin + max_length : n;
        size_t trg_len = end - prev_end;
        size_t len     = end - begin;
        /* Labels before the last trg_len are masked; the label shift drops window position 0. */
        size_t   from = trg_len >= len ? 1 : len - trg_len;
        size_t   nval = trg_len < len ? trg_len : len;
        win_span s    = {
               .start = begin, .end = end, .prefix = 0, .score_from = from, .hf_count = nval - 1};
        int rc = plan_push(plan, s, err);
        if (rc)
            return rc;
        prev_end = end;
        if (end == n)
            break;
    }
    return ASSAY_OK;
}

int win_plan_rolling(win_plan *plan, size_t n, size_t max_seq_len, size_t context_len,
                     assay_error *err) {
    if (context_len < 1 || context_len > max_seq_len)
        return assay_fail(err, ASSAY_EINVAL,
                          "rolling window: context_len %zu must be between 1 and %zu", context_len,
                          max_seq_len);
    if (n == 0)
        return ASSAY_OK;
    size_t pred_len = max_seq_len - context_len + 1;
    size_t first    = n < max_seq_len ? n : max_seq_len;
    /* ([prefix] + t[:first-1], t[:first]) made disjoint: context [prefix], predictions t[:first].
     */
    win_span s0 = {.start = 0, .end = first, .prefix = 1, .score_from = 1, .hf_count = first};
    int      rc = plan_push(plan, s0, err);
    if (rc)
        return rc;
    size_t predicted = first;
    while (predicted < n) {
        size_t wpl = n - predicted < pred_len ? n - predicted : pred_len;
        size_t end = predicted + wpl;
        /* input t[end-max-1 : end-1] (predicted >= max_seq_len keeps the start >= 0), made
         * disjoint to t[end-max-1 : end-wpl], followed by the predictions t[end-wpl : end]. */
        size_t   start = end - max_seq_len - 1;
        win_span s     = {.start      = start,
                          .end        = end,
                          .prefix     = 0,
                          .score_from = end - start - wpl,
                          .hf_count   = wpl};
        rc             = plan_push(plan, s, err);
        if (rc)
            return rc;
        predicted += wpl;
    }
    return ASSAY_OK;
}

void win_fill_tokens(int32_t *out, const win_span *w, const int32_t *t, int32_t prefix_token) {
    size_t k = 0;
    if (w->prefix)
        out[k++] = prefix_token;
    memcpy(out + k, t + w->start, (w->end - w->start) * sizeof *t);
}
