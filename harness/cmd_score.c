/* harness/cmd_score.c — `assay score`: log-likelihood of continuations given contexts, the way
 * lm-eval's loglikelihood requests are built. Requests that share a context run it once (the
 * engine's shared-prefix path); the rest go through batched scoring. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/jsonl.h"
#include "harness/progress.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/util.h"
#include "scoring/loglik.h"

static const char score_help[] =
    "usage: assay score MODEL --requests FILE.jsonl [--output OUT.jsonl] [--ctx N] [--json]\n"
    "                   [--threads N] [--device auto|cpu|cuda] [--mem-budget SIZE]\n"
    "\n"
    "Log-likelihood of each continuation given its context under MODEL (a Hugging Face\n"
    "checkpoint directory with its tokenizer). Each line of FILE.jsonl is one request:\n"
    "  {\"context\": \"...\", \"continuation\": \"...\"}            text, tokenized as lm-eval "
    "does\n"
    "  {\"context_ids\": [...], \"continuation_ids\": [...]}    token ids as they are\n"
    "An optional \"id\" field (any JSON value) is copied to the result.\n"
    "\n"
    "Text requests follow lm-eval: trailing whitespace of the context moves to the front of the\n"
    "continuation; the continuation's tokens are encode(context + continuation) after the\n"
    "tokens of encode(context), no special tokens added; an empty context becomes the prefix\n"
    "token (BOS, or EOS when there is no BOS). Context + continuation is cut from the left to\n"
    "--ctx + 1 tokens (the model reads --ctx positions). Requests with the same context tokens\n"
    "share one pass over the context.\n"
    "\n"
    "options:\n"
    "  --requests FILE     the requests (JSON Lines)\n"
    "  --output OUT.jsonl  also write one result per line to OUT.jsonl (written atomically)\n"
    "  --ctx N             model length for truncation (default: the model's context)\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "Result per request: line (in FILE), logprob (sum over the continuation tokens, double),\n"
    "is_greedy (every continuation token is the argmax), n_tokens (continuation tokens),\n"
    "n_context (context tokens after truncation), logprobs (per token) and tokens. Without\n"
    "--json a table goes to stdout; with --json one JSON object holding all results.\n"
    "A progress line is shown on a terminal; a summary line with tokens/s goes to stderr.\n"
    "\n"
    "exit codes: 0 success, 2 bad input or usage (invalid JSONL names file:line, empty\n"
    "continuation, continuation longer than the context window, model over the memory budget),\n"
    "3 environment failure\n";

typedef struct score_item {
    size_t       line;
    cJSON       *id; /* detached copy or NULL */
    int32_t     *tokens;
    size_t       n;
    size_t       score_from;
    score_result res;
} score_item;

static score_item *g_items; /* qsort has no user pointer */

static int cmp_ctx(const void *a, const void *b) {
    const score_item *x = &g_items[*(const size_t *)a], *y = &g_items[*(const size_t *)b];
    size_t            n = x->score_from < y->score_from ? x->score_from : y->score_from;
    int               c = memcmp(x->tokens, y->tokens, n * sizeof *x->tokens);
    if (c)
        return c;
    if (x->score_from != y->score_from)
        return x->score_from < y->score_from ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1; /* stable: file order */
}

static int same_ctx(const score_item *x, const score_item *y) {
    return x->score_from == y->score_from &&
           !memcmp(x->tokens, y->tokens, x->score_from * sizeof *x->tokens);
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

/* Reads every request and builds its tokens; fails with file:line on the first bad one. */
static int read_requests(const char *path, tokenizer *tok, int32_t prefix, size_t max_len,
                         int64_t vocab, score_item **out, size_t *n_out, assay_error *err) {
    jsonl_reader r;
    score_item  *items = NULL;
    size_t       n = 0, cap = 0;
    cJSON       *obj = NULL;
    tok_ids      c = {0}, k = {0};
    int32_t     *ci = NULL, *ki = NULL;
    int          rc = jsonl_open(&r, path, err), got;
    if (rc)
        return rc;
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        char   what[1100];
        size_t nc = 0, nk = 0;
        snprintf(what, sizeof what, "%s:%zu", path, r.line);
        const cJSON *has_ids = cJSON_GetObjectItemCaseSensitive(obj, "context_ids");
        if (has_ids) {
            if ((rc = jsonl_get_ids(&r, obj, "context_ids", vocab, &ci, &nc, err)) ||
                (rc = jsonl_get_ids(&r, obj, "continuation_ids", vocab, &ki, &nk, err)))
                goto fail;
        } else {
            const char *cs, *ks;
            size_t      cl, kl;
            if ((rc = jsonl_get_string(&r, obj, "context", 1, &cs, &cl, err)) ||
                (rc = jsonl_get_string(&r, obj, "continuation", 1, &ks, &kl, err)))
                goto fail;
            if (rc == 0 && (rc = loglik_encode_pair(loglik_encode_tokenizer, tok, cs, cl, ks, kl,
                                                    prefix, &c, &k, err))) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                assay_fail(err, rc, "%s: %s", what, msg);
                goto fail;
            }
            if (prefix < 0 && cl == 0) {
                rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                                "%s: empty context, and the tokenizer has no BOS or EOS token",
                                what);
                goto fail;
            }
        }
        if (n == cap) {
            cap              = cap ? cap * 2 : 64;
            score_item *grow = realloc(items, cap * sizeof *grow);
            if (!grow) {
                rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", what);
                goto fail;
            }
            items = grow;
        }
        score_item *it = &items[n];
        memset(it, 0, sizeof *it);
        it->line = r.line;
        rc = has_ids ? loglik_build_request(ci, nc, ki, nk, max_len, what, &it->tokens, &it->n,
                                            &it->score_from, err)
                     : loglik_build_request(c.ids, c.n, k.ids, k.n, max_len, what, &it->tokens,
                                            &it->n, &it->score_from, err);
        if (rc)
            goto fail;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
        it->id          = id ? cJSON_Duplicate(id, 1) : NULL;
        n++;
        free(ci);
        free(ki);
        ci = ki = NULL;
        cJSON_Delete(obj);
        obj = NULL;
    }
    if (got != 0) {
        rc = got;
        goto fail;
    }
    if (n == 0) {
        rc = assay_fail(err, ASSAY_EINVAL,
                        "%s: no requests (expected lines like {\"context\": ..., \"continuation\": "
                        "...})",
                        path);
        goto fail;
    }
    tok_ids_free(&c);
    tok_ids_free(&k);
    jsonl_close(&r);
    *out   = items;
    *n_out = n;
    return ASSAY_OK;
fail:
    for (size_t i = 0; i < n; i++) {
        free(items[i].tokens);
        cJSON_Delete(items[i].id);
    }
    free(items);
    free(ci);
    free(ki);
    cJSON_Delete(obj);
    tok_ids_free(&c);
    tok_ids_free(&k);
    jsonl_close(&r);
    return rc;
}

int cmd_score(int argc, char **argv) {
    cli_common     cc        = {0};
    assay_error    err       = {0};
    const char    *model_dir = NULL, *req_path = NULL, *out_path = NULL;
    int64_t        ctx = 0;
    int            rc;
    tokenizer     *tok     = NULL;
    model         *m       = NULL;
    score_item    *items   = NULL;
    size_t         n_items = 0, *order = NULL;
    score_request *reqs    = NULL;
    score_result  *tmp     = NULL;
    atomic_file    af      = {0};
    int            af_open = 0;
    progress       prog;

    const cli_opt opts[] = {
        {"--requests", CLI_STR, &req_path, 0, 0, NULL},
        {"--output", CLI_STR, &out_path, 0, 0, NULL},
        {"--ctx", CLI_INT, &ctx, 1, 1 << 24, NULL},
    };
    const cli_cmd cmd  = {"score", opts, CLI_N_OPTS(opts), 1, "(requests go in --requests FILE)"};
    cli_list      args = {&model_dir, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        printf(score_help, cli_common_help);
        return 0;
    }
    if (!model_dir || !req_path) {
        fprintf(stderr, score_help, cli_common_help);
        return 2;
    }

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
    if (!(tok = tok_load(model_dir, &err)))
        goto fail;
    int32_t prefix = tok_bos_id(tok) >= 0 ? tok_bos_id(tok) : tok_eos_id(tok);
    if ((rc = read_requests(req_path, tok, prefix, (size_t)ctx, cfg.vocab_size, &items, &n_items,
                            &err)))
        goto fail;
    if (out_path && (rc = atomic_open(&af, out_path, &err)))
        goto fail;
    af_open = out_path != NULL;
    if ((rc = cli_load_model(model_dir, &cc, &m, &err)))
        goto fail;

    /* Group by context tokens: groups of two or more share one pass over their context. */
    order = malloc(n_items * sizeof *order);
    reqs  = malloc(n_items * sizeof *reqs);
    tmp   = calloc(n_items, sizeof *tmp);
    if (!order || !reqs || !tmp) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory for %zu requests", n_items);
        goto fail;
    }
    for (size_t i = 0; i < n_items; i++)
        order[i] = i;
    g_items = items;
    qsort(order, n_items, sizeof *order, cmp_ctx);

    int64_t total_targets = 0, done = 0;
    for (size_t i = 0; i < n_items; i++)
        total_targets += (int64_t)(items[i].n - items[i].score_from);
    double t0 = time_now();
    progress_init(&prog, "score", "tok", total_targets);
    size_t n_single = 0;
    for (size_t g = 0; g < n_items;) {
        size_t e = g + 1;
        while (e < n_items && same_ctx(&items[order[g]], &items[order[e]]))
            e++;
        if (e - g == 1) {
            order[n_single++] = order[g]; /* singles are scored together below */
            g                 = e;
            continue;
        }
        const score_item *head = &items[order[g]];
        for (size_t k = g; k < e; k++) {
            const score_item *it = &items[order[k]];
            reqs[k - g]          = (score_request){.tokens     = it->tokens + it->score_from,
                                                   .n_tokens   = (int)(it->n - it->score_from),
                                                   .score_from = 0};
        }
        if ((rc = model_score_shared(m, head->tokens, (int)head->score_from, reqs, (int)(e - g),
                                     tmp, &err)))
            goto fail_progress;
        for (size_t k = g; k < e; k++) {
            items[order[k]].res = tmp[k - g];
            done += tmp[k - g].n_targets;
            memset(&tmp[k - g], 0, sizeof tmp[k - g]);
        }
        progress_update(&prog, done);
        g = e;
    }
    /* Singles in groups of about eight forward passes. */
    int64_t budget = (int64_t)model_max_batch_tokens(m) * 8;
    for (size_t s = 0; s < n_single;) {
        size_t  first = s;
        int64_t used  = 0;
        while (s < n_single && (s == first || used + (int64_t)items[order[s]].n <= budget)) {
            const score_item *it = &items[order[s]];
            reqs[s - first]      = (score_request){
                     .tokens = it->tokens, .n_tokens = (int)it->n, .score_from = (int)it->score_from};
            used += (int64_t)it->n;
            s++;
        }
        if ((rc = model_score(m, reqs, (int)(s - first), tmp, &err)))
            goto fail_progress;
        for (size_t k = first; k < s; k++) {
            items[order[k]].res = tmp[k - first];
            done += tmp[k - first].n_targets;
            memset(&tmp[k - first], 0, sizeof tmp[k - first]);
        }
        progress_update(&prog, done);
    }
    progress_finish(&prog);
    double wall = time_now() - t0;

    if (af_open) {
        for (size_t i = 0; i < n_items; i++) {
            cJSON *o = item_json(&items[i]);
            char  *s = cJSON_PrintUnformatted(o);
            if (!s || fprintf(af.fp, "%s\n", s) < 0) {
                free(s);
                cJSON_Delete(o);
                assay_fail(&err, ASSAY_EIO, "%s: write failed", out_path);
                goto fail;
            }
            free(s);
            cJSON_Delete(o);
        }
        af_open = 0;
        if ((rc = atomic_commit(&af, &err)))
            goto fail;
    }
    if (cc.json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(root, "model", model_dir);
        cJSON_AddStringToObject(root, "requests_file", req_path);
        cJSON_AddNumberToObject(root, "ctx", (double)ctx);
        cJSON_AddNumberToObject(root, "prefix_token", prefix);
        for (size_t i = 0; i < n_items; i++)
            cJSON_AddItemToArray(arr, item_json(&items[i]));
        cJSON_AddItemToObject(root, "results", arr);
        cJSON_AddNumberToObject(root, "tokens_scored", (double)done);
        cJSON_AddNumberToObject(root, "wall_s", wall);
        cJSON_AddNumberToObject(root, "tokens_per_s", wall > 0 ? (double)done / wall : 0);
        char *s = cJSON_Print(root);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else {
        printf("%8s %8s %8s %16s %9s\n", "line", "context", "tokens", "logprob", "is_greedy");
        for (size_t i = 0; i < n_items; i++)
            printf("%8zu %8zu %8d %16.6f %9s\n", items[i].line, items[i].score_from,
                   items[i].res.n_targets, items[i].res.sum,
                   items[i].res.n_greedy == items[i].res.n_targets ? "yes" : "no");
    }
    cli_summary("score", "tokens", done, wall);
    rc = 0;
    goto cleanup;

fail_progress:
    progress_finish(&prog);
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
cleanup:
    if (af_open)
        atomic_abort(&af);
    score_results_free(tmp, tmp ? (int)n_items : 0);
    free(tmp);
    free(reqs);
    free(order);
    for (size_t i = 0; i < n_items; i++) {
        score_results_free(&items[i].res, 1);
        free(items[i].tokens);
        cJSON_Delete(items[i].id);
    }
    free(items);
    model_free(m);
    tok_free(tok);
    return rc;
}
