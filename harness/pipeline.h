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
    int64_t mine;     /* positions this rank ran (computed, before the sum over ranks) */
} pipe_counts;

/* Which part of the work this process runs. The work is cut into units (a shared-prefix run of
 * contexts, a shared context, a batch of single requests, a batch of perplexity windows) as a
 * pure function of the requests, the model's batch budget and size, so every rank makes the same
 * list; harness/dist assigns them (longest first to the least-loaded rank). */
typedef struct pipe_shard {
    int rank, size;
    int exchange;           /* 1: failures agreed and results exchanged between MPI ranks, so
                               every rank ends with every result; 0: this rank's results only,
                               the others left zeroed (tests run ranks in turn in one process) */
    const char *resume_dir; /* NULL, or where each call's per-rank results are kept: a re-run
                               with the same inputs loads them instead of computing */
    const char *resume_key; /* what else results depend on (the model), part of the file names */
} pipe_shard;

/* This process's place among the MPI ranks (harness/dist.h), exchange on. */
pipe_shard pipe_shard_world(void);

/* Creates the --resume directory when missing (its parent must exist). */
int pipe_resume_dir(const char *dir, assay_error *err);

/* The key (hex) a model directory's --resume files are filed under: its content hash
 * (hashes_model: config.json and the safetensors headers) and each safetensors file's size and
 * modification time, since the headers stay the same when a checkpoint's values change (a copy
 * or re-save changes the time: a lost shortcut, never a stale result). */
int pipe_resume_key(const char *model_dir, char out[65], assay_error *err);

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

/* The same for one shard (NULL: all the work in this process). With exchange, every rank ends
 * with all of out and counts summed over ranks (naive counted once); a failure on any rank
 * fails every rank with that rank's message. */
int pipe_score_loglik_on(model *m, const pipe_request *reqs, size_t n, score_result *out,
                         pipe_counts *counts, progress *prog, const pipe_shard *sh,
                         assay_error *err);

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

/* The same for one shard (NULL: every window here); see pipe_score_loglik_on. Without exchange
 * only this rank's windows are added to the documents' stats. */
int pipe_ppl_run_on(model *m, const pipe_ppl_plan *p, const pipe_doc *docs, int32_t prefix,
                    const char *model_dir, pipe_counts *counts, progress *prog,
                    const pipe_shard *sh, assay_error *err);

#endif
