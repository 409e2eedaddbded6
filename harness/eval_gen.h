/* harness/eval_gen.h — generation tasks in `assay eval` (lm-eval output_type generate_until):
 * prompts built as lm-eval's fewshot_context builds them (plain text, or through the model's chat
 * template), greedy generations in windows with continuous batching, the text cut at the
 * first stop string, then each filter pipeline (scoring/filters.h) and each metric
 * (scoring/textmetrics.h) per filter, written into results.json and samples_<task>.jsonl. */
#ifndef ASSAY_EVAL_GEN_H
#define ASSAY_EVAL_GEN_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "harness/tasks/tasks.h"
#include "loader/tokenizer.h"
#include "runtime/model.h"
#include "scoring/filters.h"
#include "scoring/textmetrics.h"

enum gen_filter_kind { GF_REGEX, GF_TAKE_FIRST, GF_FIRST_LINE, GF_STRIP, GF_LOWERCASE, GF_LABEL };

typedef struct gen_filter_step {
    int        kind;
    flt_regex *re; /* GF_REGEX */
} gen_filter_step;

/* One entry of lm-eval's filter_list: a name and its steps, applied in order. */
typedef struct gen_filter {
    char            *name;
    gen_filter_step *steps;
    size_t           n_steps;
} gen_filter;

enum gen_metric_kind {
    GM_EXACT_MATCH,
    GM_F1,
    GM_BLEU,
    GM_CHRF,
    GM_ROUGE1,
    GM_ROUGE2,
    GM_ROUGEL,
    GM_ROUGELSUM,
    GM_LABEL_ACCURACY,
    GM_JSON_VALID,
    GM_JSON_SCHEMA,
    GM_LENGTH,
    GM_LATENCY,
    GM_COUNT
};

typedef struct gen_metric {
    int        kind;
    tm_em_opts em; /* exact_match's options (regexes owned by the spec) */
    int        use_stemmer;
} gen_metric;

typedef struct gen_spec {
    char       *text; /* the spec's JSON (owned), re-read for the few-shot pool */
    size_t      text_len;
    char       *path; /* where it came from, for messages */
    int         builtin;
    char      **until; /* stop strings (lm-eval generation_kwargs.until) */
    size_t     *until_lens;
    size_t      n_until;
    int         max_gen_toks;
    char       *system_prompt; /* the spec's own, or NULL (--system-prompt replaces it) */
    gen_filter *filters;       /* lm-eval filter_list; default one "none" (take_first) */
    size_t      n_filters;
    gen_metric *metrics;
    size_t      n_metrics;
    char      **regexes; /* exact_match regexes_to_ignore, owned */
    size_t      n_regexes;
    char      **labels; /* label set for label extraction / label_accuracy */
    size_t     *label_lens;
    size_t      n_labels;
    char       *schema; /* the spec-wide JSON schema text, or NULL */
    size_t      schema_len;
    int         num_fewshot; /* default */
    char        target_delim[16];
    char        fewshot_delim[16];
} gen_spec;

/* Parses the generation part of a spec (until, max_gen_toks, system_prompt, filter_list,
 * metric_list, labels, schema, num_fewshot) into a new gen_spec. `where` names the spec. Errors
 * name the key; an invalid regex carries PCRE2's message; an unknown filter or metric lists the
 * known ones. */
int gen_spec_parse(const cJSON *spec, const char *where, gen_spec **out, assay_error *err);

/* Known filter and metric names, for messages and --help. */
extern const char gen_filter_names[];
extern const char gen_metric_names[];

typedef struct evalgen_opts {
    const char *model_dir;
    const char *data_dir;
    int         num_fewshot; /* -1: each task's default */
    int64_t     seed;
    int64_t     ctx; /* max_length */
    int         apply_chat_template;
    int         fewshot_as_multiturn;
    const char *system_prompt;  /* --system-prompt, or NULL */
    int         window_prompts; /* prompts generated at a time; 0: 256 */
    int         max_gen_toks;   /* > 0: replaces every task's (lm-eval --gen_kwargs max_gen_toks) */
} evalgen_opts;

typedef struct evalgen evalgen;
struct pipe_shard;

/* Prepares every generation task (tasks[i] with gen set; others are skipped): the few-shot pool,
 * the stop strings, the chat template. The tasks may hold no documents: they stream in later
 * (evalgen_task_step), their counts (eval_task_count) known. */
int evalgen_prepare(evalgen **out, eval_task *const *tasks, int n_tasks, const evalgen_opts *o,
                    const tokenizer *tok, assay_error *err);
/* A bound on any prompt + max_gen_toks, known before any prompt is built (ctx), for sizing the
 * KV cache before the model loads; 0 without generation tasks. */
int64_t evalgen_longest(const evalgen *g);
/* Starts generating: the model, the shard (NULL: one process) and where sample lines go
 * (samples_<task>.jsonl appended under samples_dir; NULL: none). */
int evalgen_begin(evalgen *g, model *m, const tokenizer *tok, const struct pipe_shard *sh,
                  const char *samples_dir, assay_error *err);
/* Task t's documents stream through here (eval_task.on_add): src holds its documents not yet
 * generated, in order. Their prompts are built (few-shot, system prompt, chat template) and, once
 * src holds a window (window_prompts per rank; ASSAY_TEST_GEN_WINDOW=N sets a smaller default for
 * tests) or at the `last` call, generated with continuous batching; each document is reduced to
 * what the metrics need, its sample line written, and src's documents are dropped. Memory is one
 * window's prompts and generations plus a few numbers per document (and, for corpus metrics, the
 * filtered answers and references). With a shard each window's prompts are assigned to the ranks
 * by token cost (prompt tokens + max_gen_toks, dist_assign: the same plan on every rank and every
 * re-run); with sh->exchange the ranks agree on failure and exchange the generations after each
 * window, so every rank ends with all of them (greedy decoding is batch-invariant: the texts are
 * those of one process). With sh->resume_dir each rank saves its part of each window and a re-run
 * reuses it. */
int evalgen_task_step(evalgen *g, const eval_task *t, eval_task *src, int last, assay_error *err);
/* Ends generating: notes this rank's prompts, tokens and seconds for dist_per_rank_json. */
int evalgen_end(evalgen *g, assay_error *err);
/* Writes task t's results (results, configs, versions, n-shot, higher_is_better, n-samples) from
 * its streamed documents. */
int evalgen_results(evalgen *g, const eval_task *t, cJSON *results, cJSON *configs, cJSON *versions,
                    cJSON *nshot, cJSON *hib, cJSON *nsamp, assay_error *err);
/* Totals for the assay block: prompts, prompt tokens, generated tokens (all ranks'), seconds
 * generating (the slowest rank's). */
void evalgen_totals(const evalgen *g, int64_t *prompts, int64_t *prompt_tokens, int64_t *new_tokens,
                    double *seconds);
void evalgen_free(evalgen *g); /* NULL-safe */

#endif
