/* harness/pipeline.h — how scoring work reaches the engine, shared by `score`, `ppl` and `eval`:
 * log-likelihood requests are deduplicated and grouped by context (a shared context runs once
 * through model_score_shared), the rest are packed into groups of forward passes; perplexity
 * documents are cut into windows (scoring/windows.h) and scored in order. It lives in harness/
 * because it drives the model: scoring/ stays pure functions, runtime/ stays one model's API.
 *
 * Results do not depend on the order or grouping of the requests (the engine's bitwise
 * batch invariance), so callers may hand in any set of requests. */
#ifndef ASSAY_PIPELINE_H
#define ASSAY_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "harness/progress.h"
#include "runtime/model.h"
#include "scoring/ppl.h"
#include "scoring/windows.h"

/* What a run cost in tokens. */
typedef struct pipe_counts {
    int64_t computed; /* positions the model ran (shared contexts once, duplicates never) */
    int64_t naive;    /* positions an evaluator that shares nothing runs: n - 1 per request */
    int64_t scored;   /* target tokens whose log-prob was returned (progress counts these) */
} pipe_counts;

/* One log-likelihood request: tokens[score_from..n) are the targets (1 <= score_from < n), the
 * tokens before score_from its context. */
typedef struct pipe_request {
    const int32_t *tokens;
    size_t         n;
    size_t         score_from;
} pipe_request;

/* Scores reqs[0..n) into out[0..n) (zeroed by the caller; free with score_results_free).
 * Requests with equal tokens and score_from are computed once (each gets its own copy of the
 * result); requests with the same context tokens share one pass over the context; contexts
 * with a long common start share one pass over it (model_score_groups); the rest are packed
 * into groups of about eight forward passes. counts are added to; prog may be NULL. */
int pipe_score_loglik(model *m, const pipe_request *reqs, size_t n, score_result *out,
                      pipe_counts *counts, progress *prog, assay_error *err);

/* ---- perplexity ------------------------------------------------------------------------ */

typedef struct pipe_doc {
    const char    *name; /* "file" or "file:line", for messages */
    const int32_t *ids;
    size_t         n;
    ppl_stats     *st; /* windows' NLL and token counts are added here */
} pipe_doc;

typedef struct pipe_window {
    size_t   doc;
    win_span span;
} pipe_window;

typedef struct pipe_ppl_plan {
    pipe_window *w;
    size_t       n;
    int64_t      request_tokens; /* tokens of all windows (what the model reads, +1 each) */
    int64_t      scored;         /* targets of all windows */
    int64_t      longest;        /* longest window in tokens */
} pipe_ppl_plan;

/* Plans the windows of every document: sliding (HF recipe: window ctx, step stride) or rolling
 * (lm-eval: window ctx, context 1). Fails when a document is too short for the mode. */
int  pipe_ppl_plan_make(pipe_ppl_plan *p, const pipe_doc *docs, size_t n_docs, int sliding,
                        size_t ctx, size_t stride, assay_error *err);
void pipe_ppl_plan_free(pipe_ppl_plan *p); /* NULL-safe */

/* Scores the planned windows in groups of about eight forward passes and adds each window to
 * its document's stats. A NaN or infinite log-prob is ASSAY_ECHECK naming the document, window
 * and token (model_dir names the model). prefix is the rolling windows' prefix token. */
int pipe_ppl_run(model *m, const pipe_ppl_plan *p, const pipe_doc *docs, int32_t prefix,
                 const char *model_dir, pipe_counts *counts, progress *prog, assay_error *err);

#endif
