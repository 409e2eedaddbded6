/* harness/eval.h — `assay eval`: load tasks (harness/tasks/), build lm-eval's log-likelihood
 * requests, score them all at once through harness/pipeline.h (deduplicated, shared contexts
 * once), compute the metrics (scoring/metrics.h) and write results.json (lm-eval's layout plus an
 * "assay" block with hashes and the run's cost) and, on request, samples_<task>.jsonl. */
#ifndef ASSAY_EVAL_H
#define ASSAY_EVAL_H

#include <stdint.h>

#include "core/error.h"
#include "harness/cli_common.h"

typedef struct eval_opts {
    const char *model_dir;
    const char *data_dir;
    const char *out_dir;   /* NULL: no files (stdout gets the table, or results.json with --json) */
    const char *history;   /* a run history (SQLite, harness/history.h) to append to, or NULL */
    const char *task_file; /* a user task spec (harness/tasks/user.c), or NULL */
    const char *const *tasks;
    int                n_tasks;
    int                num_fewshot; /* -1: each task's default */
    int64_t            limit;       /* 0: every document */
    int64_t            seed;        /* few-shot sampler seed (lm-eval's default 1234) */
    int                log_samples;
    double             price_per_hour; /* < 0: not given */
    int64_t            ctx;            /* 0: the model's max positions */
    int64_t            window_tokens;  /* tokens built and scored at a time; 0: 4M (16 MiB) */
    double             t_start;        /* process start (time_now), for the end-to-end wall time */
    const char        *resume_dir;     /* --resume: per-rank results of each window, or NULL */
    int                apply_chat_template;  /* generation tasks: prompts through the template */
    int                fewshot_as_multiturn; /* few-shot examples as user/assistant turns */
    const char        *system_prompt;        /* --system-prompt, or NULL */
    int                max_gen_toks;         /* > 0: every generation task's max new tokens */
    const cli_common  *cc;
} eval_opts;

/* Checks that dir exists or can be created and that a file can be written in it (a file is
 * created and removed), before any other work. */
int eval_check_output_dir(const char *dir, assay_error *err);

int eval_run(const eval_opts *o, assay_error *err);

#endif
