/* runtime/model.h — a loaded checkpoint and the three things assay asks of it: score target
 * tokens (perplexity, log-likelihoods), score continuations on top of a shared context, and
 * greedy generation with continuous batching. Requests are packed into ragged batches (no
 * padding, sorted by length, under a token budget); the LM head runs only on scored rows.
 *
 * The model runs on one backend (runtime/backend.h: the CPU, or a GPU) through one code path.
 *
 * Reproducibility is per backend. When model_batch_invariant(m) is 1 (the CPU always; a GPU
 * unless `fast`), a request's log-probs are bitwise identical whatever else is in the batch and
 * its position in the request list; on the CPU also whatever the thread count and whether its
 * prefix came from the KV cache (model_score_shared) or was computed in the same pass
 * (model_score). A GPU states its tolerance for the latter (bf16 activations). */
#ifndef ASSAY_MODEL_H
#define ASSAY_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "loader/config.h"

typedef struct model_opts {
    const char *device;               /* "cpu", "cuda", "cuda:N" or "auto" (backend_create); NULL:
                                         "cpu" (the CLI defaults to "auto") */
    double          gpu_mem_fraction; /* GPU: share of free device memory to use; 0: 0.9 */
    int             fast;             /* 1: the backend may drop batch invariance for speed */
    struct backend *backend;          /* optional: run on this backend instead of creating one from
                                         `device` (the model frees it, also when loading fails); for
                                         tests that watch what the model asks of a backend */
    int    n_threads;                 /* <= 0: OpenMP default (OMP_NUM_THREADS or all cores) */
    size_t mem_budget;    /* bytes for weights + workspace + KV cache; 0: 80% of MemAvailable
                             on the CPU, free device memory * gpu_mem_fraction on a GPU */
    int max_batch_tokens; /* tokens per forward pass; 0: 2048 */
    int kv_tokens;        /* KV cache capacity in tokens; 0: max(4 * batch, 8192), less if the
                             budget is short (at least one batch + one block) */
    int kv_block_tokens;  /* tokens per KV block; 0: 16 */
    int weights;          /* be_weights (runtime/backend.h): linear weights and embeddings stored as
                             f32, bf16 or Q8_0 (CPU); 0: the backend's own type */
} model_opts;

typedef struct model model;

/* Loads the checkpoint in `dir` (config.json + model.safetensors or a sharded index), or a llama
 * GGUF file (model_path_is_gguf: config from its metadata, weights F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1, other types refused before loading; with weights Q8_0 its Q8_0 tensors are stored as they
 * are, without a round trip through f32, when every part of a stacked weight (q|k|v, gate|up) is
 * Q8_0). The tokenizer of a GGUF file is not read here (tok_load reads it). Weights
 * are converted to the backend's format (opts->weights). The memory need (weights + workspace + the
 * smallest KV cache) is checked against the budget BEFORE any weight is read: over budget is
 * ASSAY_ENOMEM with a message naming the need and the budget. opts may be NULL (defaults). */
model *model_load(const char *dir, const model_opts *opts, assay_error *err);
void   model_free(model *m); /* NULL-safe */

const model_config *model_get_config(const model *m);
/* Bytes of memory the loaded model holds (weights, workspace, KV pool, scratch). */
size_t model_mem_bytes(const model *m);
/* Sets the compute threads (process-wide on the CPU backend; results do not depend on it). */
void model_set_threads(model *m, int n_threads);
/* The backend the model runs on: "cpu", "cuda:0", ... */
const char *model_device_name(const model *m);
/* How the weights are stored: "f32", "bf16" or "q8_0". */
const char *model_weights_name(const model *m);
/* Bytes the linear weights, embeddings, norms and biases take (the weight arena). */
size_t model_weight_bytes(const model *m);
/* 1 when a request's results never depend on the rest of the batch on this backend. */
int model_batch_invariant(const model *m);
/* Effective settings after defaults. */
int model_max_batch_tokens(const model *m);
int model_kv_tokens(const model *m);

/* ---- memory plan ------------------------------------------------------------------------ */

/* What a model needs, in bytes, and what the device has (mem_info). */
typedef struct model_mem_need {
    size_t weights, workspace, scratch; /* fixed */
    size_t kv_per_token;                /* KV cache, all layers, K and V */
    int    batch_tokens, block_tokens;  /* the cache holds at least one batch + one block */
    size_t mem_budget;                  /* model_opts.mem_budget (0: from mem_free) */
    size_t mem_free;                    /* backend mem_info free bytes (0: unknown) */
    double fraction;                    /* of mem_free to use when mem_budget is 0 */
    int    kv_tokens;                   /* model_opts.kv_tokens (0: the default) */
} model_mem_need;

typedef struct model_mem_plan {
    size_t budget;    /* 0: none (mem_free unknown and no mem_budget) */
    size_t fixed;     /* weights + workspace + scratch */
    int    kv_tokens; /* KV cache capacity */
} model_mem_plan;

/* The budget (mem_budget, else mem_free * fraction), then the KV cache from what is left:
 * kv_tokens when asked, else max(4 * batch, 8192) tokens, fewer when the budget is short but
 * never under batch + block. Over budget is ASSAY_ENOMEM with a message that starts with `what`
 * and names the need and what would fit. Pure arithmetic (tests/test_engine.c). */
int model_plan_memory(model_mem_plan *plan, const model_mem_need *need, const char *what,
                      assay_error *err);

/* ---- scoring ---------------------------------------------------------------------------- */

/* Targets are tokens[score_from .. n_tokens-1], each predicted from the tokens before it, so
 * 1 <= score_from <= n_tokens (score_from == n_tokens: nothing scored). */
typedef struct score_request {
    const int32_t *tokens;
    int            n_tokens;
    int            score_from;
} score_request;

typedef struct score_result {
    int      n_targets;
    float   *logprob;   /* n_targets: log p(target | tokens before it), malloc'd */
    uint8_t *is_greedy; /* n_targets: 1 when the target is the argmax (lowest index on ties) */
    double   sum;       /* sum of logprob in double */
    int      n_greedy;  /* count of is_greedy */
} score_result;

/* Scores n requests into out[0..n-1] (caller-provided array; fill with score_result_free).
 * Requests longer than the batch budget run in chunks through the KV cache (same bits). The last
 * token is only a target and is never fed, so a request may be max positions + 1 tokens long.
 * Non-finite weights or activations show as NaN/Inf log-probs (the caller checks). */
int model_score(model *m, const score_request *reqs, int n, score_result *out, assay_error *err);

/* Scores continuations on top of one shared context: the context is computed once, each
 * continuation runs on the context's KV blocks. conts[i].tokens are the continuation only and
 * conts[i].score_from indexes into it (0 <= score_from <= n_tokens; 0 scores the first
 * continuation token, predicted from the context's last token, so n_ctx >= 1 then). The result
 * is bitwise identical to model_score on ctx + continuation with score_from + n_ctx. */
int model_score_shared(model *m, const int32_t *ctx, int n_ctx, const score_request *conts, int n,
                       score_result *out, assay_error *err);

/* Two levels of sharing: a prefix computed once, then groups, each with its own context after
 * the prefix (computed once per group) and continuations on top (as model_score_shared's). An
 * MMLU subject: the few-shot block is the prefix, each question a group, its four answers the
 * continuations. out holds every group's continuations, group after group. Each result is
 * bitwise identical to model_score on prefix + ctx + continuation. n_ctx >= 1 per group. */
typedef struct score_group {
    const int32_t       *ctx;
    int                  n_ctx;
    const score_request *conts;
    int                  n;
} score_group;
int model_score_groups(model *m, const int32_t *prefix, int n_prefix, const score_group *groups,
                       int n_groups, score_result *out, assay_error *err);

/* Frees the arrays inside out[0..n-1] and zeroes them. NULL-safe. */
void score_results_free(score_result *out, int n);

/* ---- greedy generation ------------------------------------------------------------------ */

typedef struct gen_request {
    const int32_t *prompt;
    int            n_prompt; /* >= 1 */
    int            max_new_tokens;
} gen_request;

typedef enum gen_finish {
    GEN_LENGTH = 0, /* max_new_tokens reached */
    GEN_EOS,        /* the argmax was an end-of-sequence id (not emitted) */
    GEN_STOPPED,    /* the callback asked to stop (that token is kept) */
    GEN_NONFINITE   /* the logits held NaN or Inf (broken weights or overflow); no token emitted */
} gen_finish;

/* Called for every emitted token, in order per request: index = 0-based position in the
 * continuation. Return nonzero to stop this request (e.g. a stop string matched). */
typedef int (*gen_token_fn)(void *user, int request, int32_t token, int index);

typedef struct gen_result {
    int32_t   *tokens; /* emitted tokens (malloc'd) */
    int        n_tokens;
    gen_finish finish;
} gen_result;

/* Greedy decoding of n prompts with continuous batching: every active request decodes one
 * token per step together; finished ones leave and waiting ones join (prefill, chunked under
 * the batch budget) when KV blocks are free (a request is admitted when blocks for its prompt
 * + max_new_tokens are free). eos_ids may be NULL/0. cb and out may be NULL. The tokens of a
 * request do not depend on the other requests. */
int  model_generate_greedy(model *m, const gen_request *reqs, int n, const int32_t *eos_ids,
                           int n_eos, gen_token_fn cb, void *user, gen_result *out,
                           assay_error *err);
void gen_results_free(gen_result *out, int n); /* NULL-safe */

#endif
