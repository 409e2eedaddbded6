/* harness/fewshot.h — lm-evaluation-harness's default few-shot sampler (api/samplers.py
 * ContextSampler, api/task.py fewshot_context) for the built-in tasks that draw their examples at
 * random from a training split:
 *   - one random.Random(seed) per task (lm-eval's fewshot_random_seed, default 1234), consumed
 *     document by document in doc_id order (so a --limit prefix renders as the full run does);
 *   - per document: random.sample(train docs, K), or K + 1 with the evaluated document removed and
 *     the first K kept where the task's lm-eval config has no test split (hellaswag, piqa, boolq:
 *     its fewshot_context passes eval_doc when fewshot split == test split, both None);
 *   - each example is doc_to_text + target_delimiter + the gold choice + "\n\n", in the drawn
 *     order, before the document's own context (no description for these tasks); winogrande's
 *     doc_to_text is the context of its gold option and every per-choice context gets the
 *     examples; lambada_openai (a loglikelihood task) draws from its test split, its own document
 *     included, and its answer is the continuation with its leading space after the delimiter.
 * A training document equal to the evaluated one (lm-eval compares the whole row) is never
 * removed here: the training and evaluation splits of these sets share no rows. */
#ifndef ASSAY_FEWSHOT_H
#define ASSAY_FEWSHOT_H

#include <stdint.h>

#include "core/error.h"
#include "harness/tasks/tasks.h"
#include "scoring/pyrandom.h"

/* 1 when the task's few-shot examples come from fewshot_apply (its loader reads split "train"),
 * and *draw_extra says whether lm-eval draws K + 1. 0 for tasks with their own rule (MMLU: the
 * first K dev questions) or none. */
int fewshot_random_rule(const char *task, int *draw_extra);

/* 1 for tasks whose lm-eval config sets num_fewshot: 0 (truthfulqa_mc1/mc2): lm-eval ignores a
 * requested --num_fewshot for them, and so does assay (with a note). */
int fewshot_config_zero(const char *task);

/* Prepends K examples drawn from pool (the task loaded with split "train", every row) to each of
 * t's contexts, one document at a time as they are read in doc_id order (harness/eval.c streams
 * them): fewshot_begin checks the pool's size (ASSAY_EINVAL when it has fewer than K (+1)
 * documents) and seeds the task's random.Random; fewshot_doc prepends the next document's
 * examples; fewshot_end frees (NULL-safe). pool must outlive the sampler. */
typedef struct fewshot_sampler {
    const eval_task *pool;
    int              k;
    size_t           draw;
    size_t          *idx;
    tbuf             b;
    pyrandom         r;
} fewshot_sampler;
int  fewshot_begin(fewshot_sampler *s, const eval_task *t, const eval_task *pool, int k,
                   int64_t seed, assay_error *err);
int  fewshot_doc(fewshot_sampler *s, const eval_task *t, eval_doc *doc, assay_error *err);
void fewshot_end(fewshot_sampler *s);

#endif
