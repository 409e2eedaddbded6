/* harness/cmd_score.c — `assay score`: log-likelihood of continuations given contexts, the way
 * lm-eval's loglikelihood requests are built. Requests stream through in windows (bounded memory
 * for any number of them); each window goes to harness/pipeline.h (shared contexts once, the
 * rest batched). Results leave in input order after each window. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/dist.h"
#include "harness/jsonl.h"
#include "harness/pipeline.h"
#include "harness/progress.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/model.h"
#include "scoring/loglik.h"

/* The reorder buffer: a window holds at most this many requests or tokens. */
#define SCORE_WINDOW_REQUESTS 4096
#define SCORE_WINDOW_TOKENS ((size_t)1 << 20)

static const char score_usage[] =
    "usage: assay score MODEL --requests FILE.jsonl [--output OUT.jsonl] [--ctx N] [--json]\n"
    "                   [--strict] [--threads N] [--device auto|cpu|cuda[:N]] [--mem-budget "
    "SIZE]\n";

static const char score_help[] =
    "\n"
    "Log-likelihood of each continuation given its context under MODEL (a Hugging Face\n"
    "checkpoint directory with its tokenizer, or a GGUF file). Each line of FILE.jsonl is one\n"
    "request:\n"
    "  {\"context\": \"...\", \"continuation\": \"...\"}            text, tokenized as lm-eval "
    "does\n"
    "  {\"context_ids\": [...], \"continuation_ids\": [...]}    token ids as they are\n"
    "An optional \"id\" field (any JSON value) is copied to the result. Other fields are\n"
    "ignored with a warning (an error with --strict). Strings may hold any Unicode, \\u0000\n"
    "included. A line may be at most 64 MiB and hold at most 1,048,576 JSON values nested at\n"
    "most 64 deep.\n"
    "\n"
    "Text requests follow lm-eval: trailing whitespace of the context moves to the front of the\n"
    "continuation; the continuation's tokens are encode(context + continuation) after the\n"
    "tokens of encode(context), no special tokens added; an empty context becomes the prefix\n"
    "token (BOS, or EOS when there is no BOS). Context + continuation is cut from the left to\n"
    "--ctx + 1 tokens and the model reads all but the last, i.e. at most --ctx positions (as\n"
    "lm-eval's (context + continuation)[-(max_length + 1):][:-1]).\n"
    "\n"
    "Requests are read, scored and written in windows of at most 4096 requests or 1,048,576\n"
    "tokens, so memory does not grow with the file; results keep the input order. Requests with\n"
    "the same context tokens in one window share one pass over the context.\n"
    "\n"
    "options:\n"
    "  --requests FILE     the requests (JSON Lines)\n"
    "  --output OUT.jsonl  also write one result per line to OUT.jsonl (written atomically)\n"
    "  --ctx N             model length for truncation (default: the model's max positions,\n"
    "                      n_positions or max_position_embeddings of config.json)\n"
    "  --strict            unknown fields in a request are an error\n"
    "  --resume DIR        keep each window's results in DIR (per MPI rank) and reuse them when\n"
    "                      the same command runs again: an interrupted run continues\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "Result per request: line (in FILE), id, logprob (sum over the continuation tokens in nats,\n"
    "i.e. natural log, double), is_greedy (every continuation token is the argmax), n_tokens\n"
    "(continuation tokens), n_context (context tokens after truncation), logprobs (per token,\n"
    "nats) and tokens. Without --json a table goes to stdout; with --json one JSON object\n"
    "holding all results. A progress line is shown on a terminal; a summary line with\n"
    "tokens/s goes to stderr.\n"
    "\n"
    "exit codes: 0 success, 1 a non-finite log-probability (NaN/Inf weights or overflow; the\n"
    "message names the request), 2 bad input or usage (invalid JSONL names file:line, empty\n"
    "continuation, continuation longer than the context window, model over the memory budget),\n"
    "3 environment failure. Results of windows before a failing line are already on stdout;\n"
    "OUT.jsonl is only written when every request succeeded.\n";

/* the help states these numbers */
_Static_assert(SCORE_WINDOW_REQUESTS == 4096 && SCORE_WINDOW_TOKENS == 1048576 &&
                   JSONL_LINE_MAX == 64 << 20 && JSONL_VALUES_MAX == 1048576 &&
                   JSONL_DEPTH_MAX == 64,
               "update score_help");

static const char *const score_fields[] = {"context",          "continuation", "context_ids",
                                           "continuation_ids", "id",           NULL};

typedef struct score_item {
    size_t       line;
    cJSON       *id; /* detached copy or NULL */
    int32_t     *tokens;
    size_t       n;
    size_t       score_from;
    score_result res;
} score_item;

/* One window of requests and what reading them needs between windows. */
typedef struct score_window {
    jsonl_reader r;
    tokenizer   *tok;
    int32_t      prefix;
    size_t       max_len;
    int64_t      vocab;
    int          strict;
    score_item  *items; /* SCORE_WINDOW_REQUESTS */
    size_t       n;
    tok_ids      c, k;
} score_window;

static void window_clear(score_window *w) {
    for (size_t i = 0; i < w->n; i++) {
        score_results_free(&w->items[i].res, 1);
        free(w->items[i].tokens);
        cJSON_Delete(w->items[i].id);
    }
    w->n = 0;
}

static cJSON *item_json(const score_item *it) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "line", (double)it->line);
    if (it->id)
        cJSON_AddItemToObject(o, "id", cJSON_Duplicate(it->id, 1));
    cJSON_AddNumberToObject(o, "logprob", it->res.sum);
    cJSON_AddBoolToObject(o, "is_greedy", it->res.n_greedy == it->res.n_targets);
    cJSON_AddNumberToObject(o, "n_tokens", it->res.n_targets);
    cJSON_AddNumberToObject(o, "n_context", (double)it->score_from);
    cJSON *lp = cJSON_CreateArray(), *tk = cJSON_CreateArray();
    for (int k = 0; k < it->res.n_targets; k++) {
        cJSON_AddItemToArray(lp, cJSON_CreateNumber(it->res.logprob[k]));
        cJSON_AddItemToArray(tk, cJSON_CreateNumber(it->tokens[it->score_from + (size_t)k]));
    }
    cJSON_AddItemToObject(o, "logprobs", lp);
    cJSON_AddItemToObject(o, "tokens", tk);
    return o;
}

/* One request from the current line into *it. */
static int read_item(score_window *w, const cJSON *obj, score_item *it, assay_error *err) {
    char     what[1100];
    size_t   nc = 0, nk = 0;
    int32_t *ci = NULL, *ki = NULL;
    int      rc;
    memset(it, 0, sizeof *it);
    it->line = w->r.line;
    snprintf(what, sizeof what, "%s:%zu", w->r.path, w->r.line);
    if ((rc = jsonl_check_fields(&w->r, obj, score_fields, w->strict, err)))
        return rc;
    const cJSON *has_ids = cJSON_GetObjectItemCaseSensitive(obj, "context_ids");
    if (has_ids) {
        if ((rc = jsonl_get_ids(&w->r, obj, "context_ids", w->vocab, &ci, &nc, err)) ||
            (rc = jsonl_get_ids(&w->r, obj, "continuation_ids", w->vocab, &ki, &nk, err)))
            goto done;
        rc = loglik_build_request(ci, nc, ki, nk, w->max_len, what, &it->tokens, &it->n,
                                  &it->score_from, err);
        goto done;
    }
    const char *cs, *ks;
    size_t      cl, kl;
    if ((rc = jsonl_get_string(&w->r, obj, "context", 1, &cs, &cl, err)) ||
        (rc = jsonl_get_string(&w->r, obj, "continuation", 1, &ks, &kl, err)))
        goto done;
    if ((rc = loglik_encode_pair(loglik_encode_tokenizer, w->tok, cs, cl, ks, kl, w->prefix, &w->c,
                                 &w->k, err))) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        assay_fail(err, rc, "%s: %s", what, msg);
        goto done;
    }
    if (w->prefix < 0 && cl == 0) {
        rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                        "%s: empty context, and the tokenizer has no BOS or EOS token", what);
        goto done;
    }
    rc = loglik_build_request(w->c.ids, w->c.n, w->k.ids, w->k.n, w->max_len, what, &it->tokens,
                              &it->n, &it->score_from, err);
done:
    if (!rc) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
        it->id          = id ? cJSON_Duplicate(id, 1) : NULL;
    }
    free(ci);
    free(ki);
    return rc;
}

/* Reads the next window (w->n == 0 at end of file); fails with file:line on a bad request. */
static int window_read(score_window *w, assay_error *err) {
    size_t tokens = 0;
    int    got    = 0;
    cJSON *obj    = NULL;
    window_clear(w);
    while (w->n < SCORE_WINDOW_REQUESTS && tokens < SCORE_WINDOW_TOKENS &&
           (got = jsonl_next(&w->r, &obj, err)) == 1) {
        int rc = read_item(w, obj, &w->items[w->n], err);
        cJSON_Delete(obj);
        if (rc) {
            free(w->items[w->n].tokens);
            return rc;
        }
        tokens += w->items[w->n].n;
        w->n++;
    }
    if (w->n < SCORE_WINDOW_REQUESTS && tokens < SCORE_WINDOW_TOKENS && got != 0)
        return got;
    return ASSAY_OK;
}

/* Scores the window's requests into items[].res (grouping and batching: harness/pipeline.h). */
static int window_score(model *m, score_window *w, pipe_request *reqs, score_result *tmp,
                        pipe_counts *counts, progress *prog, const pipe_shard *sh,
                        assay_error *err) {
    for (size_t i = 0; i < w->n; i++)
        reqs[i] = (pipe_request){w->items[i].tokens, w->items[i].n, w->items[i].score_from};
    int rc = pipe_score_loglik_on(m, reqs, w->n, tmp, counts, prog, sh, err);
    for (size_t i = 0; i < w->n; i++) {
        w->items[i].res = tmp[i];
        memset(&tmp[i], 0, sizeof tmp[i]);
    }
    return rc;
}

/* "requests.jsonl:7 (id "q7")" for messages. */
static void item_where(char *buf, size_t cap, const char *path, const score_item *it) {
    char *id = it->id ? jsonl_print(it->id, 0) : NULL;
    if (id && strlen(id) > 80)
        memcpy(id + 74, " ...", 5);
    snprintf(buf, cap, "%s:%zu%s%s%s", path, it->line, id ? " (id " : "", id ? id : "",
             id ? ")" : "");
    free(id);
}

/* Writes the window's results in input order: OUT.jsonl lines, --json array elements or table
 * rows. A non-finite score stops everything with ASSAY_ECHECK naming the request. */
static int window_emit(const score_window *w, FILE *out_fp, const char *out_path, int json,
                       size_t *n_emitted, assay_error *err) {
    for (size_t i = 0; i < w->n; i++) {
        const score_item *it = &w->items[i];
        if (!isfinite(it->res.sum)) {
            char where[1200];
            item_where(where, sizeof where, w->r.path, it);
            return assay_fail(err, ASSAY_ECHECK,
                              "%s: the log-probability is %s: the model's weights or activations "
                              "hold NaN or Inf",
                              where, isnan(it->res.sum) ? "NaN" : "infinite");
        }
        char *line = NULL;
        int   rc_  = (out_fp || json) ? jsonl_emit(item_json(it), out_fp, out_path, &line, err) : 0;
        if (rc_)
            return rc_;
        if (json) {
            printf("%s    %s", *n_emitted ? ",\n" : "", line);
        } else {
            char *id = it->id ? jsonl_print(it->id, 0) : NULL;
            printf("%8zu %8zu %8d %16.6f %9s  %s\n", it->line, it->score_from, it->res.n_targets,
                   it->res.sum, it->res.n_greedy == it->res.n_targets ? "yes" : "no",
                   id ? id : "-");
            free(id);
        }
        free(line);
        (*n_emitted)++;
    }
    /* a full disk shows at the latest here, while the message can still name the file */
    if (out_fp && fflush(out_fp) != 0) {
        int e = errno;
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", out_path, strerror(e));
    }
    return ASSAY_OK;
}

static void json_field(const char *key, cJSON *v) {
    char *s = v ? jsonl_print(v, 0) : NULL;
    printf("  \"%s\": %s,\n", key, s ? s : "null");
    free(s);
    cJSON_Delete(v);
}

int cmd_score(int argc, char **argv) {
    cli_common    cc        = {0};
    assay_error   err       = {0};
    const char   *model_dir = NULL, *req_path = NULL, *out_path = NULL, *resume = NULL;
    int64_t       ctx    = 0;
    pipe_counts   counts = {0};
    int           rc, strict = 0, started = 0;
    model        *m         = NULL;
    size_t        n_emitted = 0;
    pipe_request *reqs      = NULL;
    score_result *tmp       = NULL;
    atomic_file   af        = {0};
    int           af_open   = 0;
    progress      prog;
    score_window  w = {0};

    const cli_opt opts[] = {
        {"--requests", CLI_STR, &req_path, 0, 0, NULL},
        {"--output", CLI_STR, &out_path, 0, 0, NULL},
        {"--ctx", CLI_INT, &ctx, 1, 1 << 24, NULL},
        {"--strict", CLI_FLAG, &strict, 0, 0, NULL},
        {"--resume", CLI_STR, &resume, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"score", opts, CLI_N_OPTS(opts), 1, "(requests go in --requests FILE)"};
    cli_list      args = {&model_dir, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        printf("%s", score_usage);
        printf(score_help, cli_common_help);
        return 0;
    }
    if (!model_dir || !req_path) {
        fprintf(stderr, "assay: score: missing %s (see assay score --help)\n%s",
                !model_dir ? "MODEL (a checkpoint directory or GGUF file)"
                           : "--requests FILE.jsonl",
                score_usage);
        return 2;
    }

    /* under mpirun / srun each rank scores its share of every window; rank 0 writes */
    dist_apply_device(&cc);
    pipe_shard sh = pipe_shard_world();
    char       rkey[65];
    sh.resume_key = rkey;
    if (resume &&
        ((rc = pipe_resume_dir(resume, &err)) || (rc = pipe_resume_key(model_dir, rkey, &err))))
        goto fail;
    sh.resume_dir = resume;
    model_config cfg;
    if ((rc = config_load_dir(&cfg, model_dir, &err)))
        goto fail;
    if (ctx == 0)
        ctx = cfg.max_pos;
    if (ctx > cfg.max_pos) {
        assay_fail(&err, ASSAY_EINVAL,
                   "--ctx %lld is larger than the model's context (%s/config.json: max "
                   "positions %d)",
                   (long long)ctx, model_dir, cfg.max_pos);
        goto fail;
    }
    if (!(w.tok = tok_load(model_dir, &err)))
        goto fail;
    w.prefix  = tok_bos_id(w.tok) >= 0 ? tok_bos_id(w.tok) : tok_eos_id(w.tok);
    w.max_len = (size_t)ctx;
    w.vocab   = cfg.vocab_size;
    w.strict  = strict;
    w.items   = calloc(SCORE_WINDOW_REQUESTS, sizeof *w.items);
    reqs      = malloc(SCORE_WINDOW_REQUESTS * sizeof *reqs);
    tmp       = calloc(SCORE_WINDOW_REQUESTS, sizeof *tmp);
    if (!w.items || !reqs || !tmp) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory for a window of %d requests",
                   SCORE_WINDOW_REQUESTS);
        goto fail;
    }
    if ((rc = jsonl_open(&w.r, req_path, &err)))
        goto fail;
    w.r.shape = "{\"context\": \"The sky is\", \"continuation\": \" blue\"}";
    /* the first window is read before the model loads: most bad files fail in a moment */
    if ((rc = window_read(&w, &err)))
        goto fail;
    if (w.n == 0) {
        assay_fail(&err, ASSAY_EINVAL,
                   "%s: no requests (expected lines like {\"context\": \"...\", "
                   "\"continuation\": \"...\"})",
                   req_path);
        goto fail;
    }
    if (out_path && dist_rank() == 0 && (rc = atomic_open(&af, out_path, &err)))
        goto fail;
    af_open = out_path != NULL && dist_rank() == 0;
    /* The KV cache holds the longest request of the first window when that is over the default
     * (requests are at most --ctx tokens; later windows fail clearly if longer still). */
    for (size_t i = 0; i < w.n; i++)
        if (w.items[i].n > (size_t)(cc.kv_tokens ? cc.kv_tokens : 8192))
            cc.kv_tokens = (int)w.items[i].n;
    if ((rc = cli_load_model(model_dir, &cc, &m, &err)))
        goto fail;

    if (cc.json) {
        printf("{\n");
        json_field("model", cJSON_CreateString(model_dir));
        json_field("device", cJSON_CreateString(model_device_name(m)));
        json_field("batch_invariant", cJSON_CreateBool(model_batch_invariant(m)));
        json_field("requests_file", cJSON_CreateString(req_path));
        json_field("ctx", cJSON_CreateNumber((double)ctx));
        json_field("prefix_token", cJSON_CreateNumber(w.prefix));
        json_field("logprob_unit", cJSON_CreateString("nats"));
        printf("  \"results\": [\n");
    } else {
        printf("# context window %lld tokens; logprob in nats (natural log)\n", (long long)ctx);
        printf("%8s %8s %8s %16s %9s  %s\n", "line", "context", "tokens", "logprob", "is_greedy",
               "id");
    }
    started   = 1;
    double t0 = time_now();
    progress_init(&prog, "score", "tok", 0);
    prog.enabled &= dist_rank() == 0; /* one progress line for the run */
    while (w.n > 0) {
        if ((rc = window_score(m, &w, reqs, tmp, &counts, &prog, &sh, &err)) ||
            (rc = window_emit(&w, af_open ? af.fp : NULL, out_path, cc.json, &n_emitted, &err)) ||
            (rc = window_read(&w, &err))) {
            progress_finish(&prog);
            goto fail;
        }
    }
    progress_finish(&prog);
    double wall = time_now() - t0;

    if (af_open) {
        af_open = 0;
        if ((rc = atomic_commit(&af, &err)))
            goto fail;
    }
    if (cc.json) {
        printf("\n  ],\n  \"tokens_scored\": %lld,\n  \"wall_s\": %.6g,\n  \"tokens_per_s\": "
               "%.6g\n}\n",
               (long long)counts.scored, wall, wall > 0 ? (double)counts.scored / wall : 0);
    }
    if (dist_rank() == 0) /* the run's summary, once */
        cli_summary("score", "tokens", counts.scored, wall);
    rc = 0;
    goto cleanup;

fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    if (started)
        fflush(stdout); /* the results before the failure, then the message */
    rc = cli_report(&err);
cleanup:
    if (af_open)
        atomic_abort(&af);
    score_results_free(tmp, tmp ? SCORE_WINDOW_REQUESTS : 0);
    free(tmp);
    free(reqs);
    if (w.items)
        window_clear(&w);
    free(w.items);
    tok_ids_free(&w.c);
    tok_ids_free(&w.k);
    jsonl_close(&w.r);
    model_free(m);
    tok_free(w.tok);
    return rc;
}
