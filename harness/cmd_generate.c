/* harness/cmd_generate.c — `assay generate`: greedy generation for a file of prompts with
 * continuous batching. Stop strings are matched on the decoded text as tokens arrive (a stop
 * string may span several tokens), and a matched request leaves the batch at once. */
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
#include "scoring/stop.h"

static const char generate_help[] =
    "usage: assay generate MODEL --prompts FILE.jsonl [--max-new-tokens N] [--stop S]...\n"
    "                      [--output OUT.jsonl] [--json] [--threads N]\n"
    "                      [--device auto|cpu|cuda] [--mem-budget SIZE]\n"
    "\n"
    "Greedy generation under MODEL (a Hugging Face checkpoint directory with its tokenizer) for\n"
    "every prompt of FILE.jsonl, all decoded together with continuous batching. Each line is\n"
    "  {\"prompt\": \"...\"}          text, tokenized as tokenizer(text) (BOS when the tokenizer\n"
    "                              adds it; special-token text becomes special tokens)\n"
    "  {\"prompt_ids\": [...]}       token ids as they are\n"
    "with optional \"max_new_tokens\" (replaces --max-new-tokens), \"stop\" (a string or a list;\n"
    "replaces the --stop list) and \"id\" (copied to the result).\n"
    "\n"
    "A request ends at an end-of-sequence token (not part of the text), when its decoded text\n"
    "contains a stop string (the text is cut before it, as lm-eval does), or after\n"
    "max_new_tokens tokens. The text is decoded without special tokens.\n"
    "\n"
    "options:\n"
    "  --prompts FILE      the prompts (JSON Lines)\n"
    "  --max-new-tokens N  tokens to generate at most per prompt (default 128)\n"
    "  --stop S            a stop string (repeatable; \\n in S is a newline)\n"
    "  --output OUT.jsonl  also write one result per line to OUT.jsonl (written atomically)\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "Result per prompt: line, text, n_tokens (generated, a stopping token included), finish\n"
    "(eos, stop or length), ttft_s (time to its first token) and latency_s (time to its last\n"
    "token), both from the start of generation, and tokens. Totals: prompt and generated\n"
    "tokens, prefill tokens/s (prompt tokens / time until every prompt had its first token),\n"
    "decode tokens/s (generated tokens / wall time) and wall time. Without --json the texts\n"
    "go to stdout as a readable list; with --json one JSON object holds everything.\n"
    "A progress line is shown on a terminal; a summary line goes to stderr.\n"
    "\n"
    "exit codes: 0 success, 2 bad input or usage (invalid JSONL names file:line, a prompt that\n"
    "leaves no room in the model's context, model over the memory budget), 3 environment\n"
    "failure\n";

typedef struct gen_item {
    size_t   line;
    cJSON   *id;
    int32_t *prompt;
    size_t   n_prompt;
    int      max_new;
    char   **stops; /* owned */
    size_t   n_stops;
    /* while generating */
    stop_matcher sm;
    int32_t     *out;
    int          n_out;
    size_t       fed; /* bytes of the decoded text already fed to sm */
    double       t_first, t_last;
    /* result */
    char       *text;
    size_t      text_len;
    const char *finish;
} gen_item;

typedef struct gen_ctx {
    gen_item        *items;
    const tokenizer *tok;
    double           t0;
    progress        *prog;
    int64_t          emitted;
    assay_error      err; /* first failure inside the callback */
} gen_ctx;

static void items_free(gen_item *it, size_t n) {
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(it[i].id);
        free(it[i].prompt);
        for (size_t s = 0; s < it[i].n_stops; s++)
            free(it[i].stops[s]);
        free(it[i].stops);
        stop_free(&it[i].sm);
        free(it[i].out);
        free(it[i].text);
    }
    free(it);
}

/* "\n" and "\t" in a --stop argument mean newline and tab; "\\" a backslash. */
static char *unescape(const char *s) {
    char *o = malloc(strlen(s) + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        if (s[0] == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            *p++ = s[1] == 'n' ? '\n' : s[1] == 't' ? '\t' : '\\';
            s++;
        } else {
            *p++ = *s;
        }
    }
    *p = '\0';
    return o;
}

static int copy_stops(gen_item *it, const char *const *src, size_t n, int esc, assay_error *err) {
    it->stops = calloc(n ? n : 1, sizeof *it->stops);
    if (!it->stops)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        it->stops[i] = esc ? unescape(src[i]) : strdup(src[i]);
        if (!it->stops[i])
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        it->n_stops++;
    }
    return ASSAY_OK;
}

/* Length of text without a trailing U+FFFD: an incomplete UTF-8 sequence at the end of the
 * tokens so far decodes to it, and the next token may complete it. */
static size_t stable_len(const char *s, size_t n) {
    if (n >= 3 && !memcmp(s + n - 3, "\xEF\xBF\xBD", 3))
        return n - 3;
    return n;
}

static int on_token(void *user, int request, int32_t token, int index) {
    gen_ctx  *g   = user;
    gen_item *it  = &g->items[request];
    double    now = time_now() - g->t0;
    (void)index;
    if (it->n_out == 0)
        it->t_first = now;
    it->t_last           = now;
    it->out[it->n_out++] = token;
    g->emitted++;
    progress_update(g->prog, g->emitted);
    if (it->n_stops == 0 || g->err.code)
        return 0;
    char  *text = NULL;
    size_t len  = 0;
    if (tok_decode(g->tok, it->out, (size_t)it->n_out, 1, &text, &len, &g->err))
        return 1;
    size_t st  = stable_len(text, len);
    int    hit = 0;
    /* Decoding all tokens again keeps multi-token characters and SentencePiece spaces right;
     * only the part past what was fed is new. */
    if (st > it->fed) {
        hit     = stop_feed(&it->sm, text + it->fed, st - it->fed, &g->err);
        it->fed = st;
    }
    free(text);
    return hit != 0;
}

static int read_prompts(const char *path, const tokenizer *tok, int max_new_default,
                        const char *const *stops, size_t n_stops, int max_pos, int64_t vocab,
                        gen_item **out, size_t *n_out, assay_error *err) {
    jsonl_reader r;
    gen_item    *items = NULL;
    size_t       n = 0, cap = 0;
    cJSON       *obj        = NULL;
    const char **line_stops = NULL;
    int          rc         = jsonl_open(&r, path, err), got;
    if (rc)
        return rc;
    tok_encode_opts eo = tok_default_opts();
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        if (n == cap) {
            cap            = cap ? cap * 2 : 32;
            gen_item *grow = realloc(items, cap * sizeof *grow);
            if (!grow) {
                rc = assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", path, r.line);
                goto fail;
            }
            items = grow;
        }
        gen_item *it = &items[n++];
        memset(it, 0, sizeof *it);
        it->line = r.line;
        if (cJSON_GetObjectItemCaseSensitive(obj, "prompt_ids")) {
            if ((rc = jsonl_get_ids(&r, obj, "prompt_ids", vocab, &it->prompt, &it->n_prompt, err)))
                goto fail;
        } else {
            const char *s;
            size_t      len;
            tok_ids     ids = {0};
            if ((rc = jsonl_get_string(&r, obj, "prompt", 1, &s, &len, err)))
                goto fail;
            if ((rc = tok_encode(tok, s, len, &eo, 0, &ids, err))) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                tok_ids_free(&ids);
                rc = assay_fail(err, rc, "%s:%zu: %s", path, r.line, msg);
                goto fail;
            }
            it->prompt   = ids.ids;
            it->n_prompt = ids.n;
            free(ids.offsets);
        }
        if (it->n_prompt == 0) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s:%zu: the prompt has no tokens", path, r.line);
            goto fail;
        }
        int     has;
        int64_t v;
        if ((rc = jsonl_get_int(&r, obj, "max_new_tokens", 1, 1 << 24, &has, &v, err)))
            goto fail;
        it->max_new = has ? (int)v : max_new_default;
        if (it->n_prompt + (size_t)it->max_new > (size_t)max_pos) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "%s:%zu: prompt (%zu tokens) + max_new_tokens (%d) exceeds the "
                            "model's context of %d positions",
                            path, r.line, it->n_prompt, it->max_new, max_pos);
            goto fail;
        }
        size_t nls = 0;
        if ((rc = jsonl_get_strings(&r, obj, "stop", &line_stops, &nls, err)))
            goto fail;
        rc = cJSON_GetObjectItemCaseSensitive(obj, "stop") ? copy_stops(it, line_stops, nls, 0, err)
                                                           : copy_stops(it, stops, n_stops, 1, err);
        free(line_stops);
        line_stops = NULL;
        if (rc)
            goto fail;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
        it->id          = id ? cJSON_Duplicate(id, 1) : NULL;
        cJSON_Delete(obj);
        obj = NULL;
    }
    if (got != 0) {
        rc = got;
        goto fail;
    }
    if (n == 0) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no prompts (expected lines like {\"prompt\": ...})",
                        path);
        goto fail;
    }
    jsonl_close(&r);
    *out   = items;
    *n_out = n;
    return ASSAY_OK;
fail:
    items_free(items, n);
    cJSON_Delete(obj);
    jsonl_close(&r);
    return rc;
}

static cJSON *item_json(const gen_item *it) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "line", (double)it->line);
    if (it->id)
        cJSON_AddItemToObject(o, "id", cJSON_Duplicate(it->id, 1));
    cJSON_AddStringToObject(o, "text", it->text ? it->text : "");
    cJSON_AddNumberToObject(o, "n_tokens", it->n_out);
    cJSON_AddStringToObject(o, "finish", it->finish);
    cJSON_AddNumberToObject(o, "n_prompt", (double)it->n_prompt);
    cJSON_AddNumberToObject(o, "ttft_s", it->t_first);
    cJSON_AddNumberToObject(o, "latency_s", it->t_last);
    cJSON *tk = cJSON_CreateArray();
    for (int k = 0; k < it->n_out; k++)
        cJSON_AddItemToArray(tk, cJSON_CreateNumber(it->out[k]));
    cJSON_AddItemToObject(o, "tokens", tk);
    return o;
}

int cmd_generate(int argc, char **argv) {
    cli_common   cc        = {0};
    assay_error  err       = {0};
    const char  *model_dir = NULL, *prompt_path = NULL, *out_path = NULL;
    const char **stops   = calloc((size_t)argc, sizeof *stops);
    size_t       n_stops = 0, n_items = 0;
    int64_t      max_new = 128;
    int          rc;
    tokenizer   *tok     = NULL;
    model       *m       = NULL;
    gen_item    *items   = NULL;
    gen_request *reqs    = NULL;
    gen_result  *res     = NULL;
    atomic_file  af      = {0};
    int          af_open = 0;
    progress     prog;
    gen_ctx      g         = {0};
    cli_list     stop_list = {stops, 0};
    if (!stops)
        return cli_report(&(assay_error){ASSAY_ENOMEM, "out of memory"});

    const cli_opt opts[] = {
        {"--prompts", CLI_STR, &prompt_path, 0, 0, NULL},
        {"--output", CLI_STR, &out_path, 0, 0, NULL},
        {"--stop", CLI_STR_LIST, &stop_list, 0, 0, NULL},
        {"--max-new-tokens", CLI_INT, &max_new, 1, 1 << 24, NULL},
    };
    const cli_cmd cmd  = {"generate", opts, CLI_N_OPTS(opts), 1, "(prompts go in --prompts FILE)"};
    cli_list      args = {&model_dir, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    n_stops            = (size_t)stop_list.n;
    if (r < 0)
        goto fail;
    if (r > 0) {
        printf(generate_help, cli_common_help);
        free(stops);
        return 0;
    }
    if (!model_dir || !prompt_path) {
        fprintf(stderr, generate_help, cli_common_help);
        free(stops);
        return 2;
    }

    model_config cfg;
    if ((rc = config_load_dir(&cfg, model_dir, &err)))
        goto fail;
    if (!(tok = tok_load(model_dir, &err)))
        goto fail;
    if ((rc = read_prompts(prompt_path, tok, (int)max_new, stops, n_stops, cfg.max_pos,
                           cfg.vocab_size, &items, &n_items, &err)))
        goto fail;
    if (out_path && (rc = atomic_open(&af, out_path, &err)))
        goto fail;
    af_open = out_path != NULL;
    if ((rc = cli_load_model(model_dir, &cc, &m, &err)))
        goto fail;

    reqs = calloc(n_items, sizeof *reqs);
    res  = calloc(n_items, sizeof *res);
    if (!reqs || !res) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory for %zu prompts", n_items);
        goto fail;
    }
    int64_t total_max = 0, prompt_tokens = 0;
    for (size_t i = 0; i < n_items; i++) {
        gen_item *it = &items[i];
        if ((rc = stop_init(&it->sm, (const char *const *)it->stops, it->n_stops, &err)))
            goto fail;
        if (!(it->out = malloc((size_t)it->max_new * sizeof *it->out))) {
            assay_fail(&err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        reqs[i] = (gen_request){
            .prompt = it->prompt, .n_prompt = (int)it->n_prompt, .max_new_tokens = it->max_new};
        total_max += it->max_new;
        prompt_tokens += (int64_t)it->n_prompt;
    }
    int32_t eos[2];
    int     n_eos = 0;
    if (tok_eos_id(tok) >= 0)
        eos[n_eos++] = tok_eos_id(tok);
    if (cfg.eos_token_id >= 0 && (n_eos == 0 || cfg.eos_token_id != eos[0]))
        eos[n_eos++] = cfg.eos_token_id;

    g.items = items;
    g.tok   = tok;
    g.prog  = &prog;
    progress_init(&prog, "generate", "tok", total_max);
    g.t0 = time_now();
    rc   = model_generate_greedy(m, reqs, (int)n_items, eos, n_eos, on_token, &g, res, &err);
    progress_finish(&prog);
    double wall = time_now() - g.t0;
    if (rc)
        goto fail;
    if (g.err.code) {
        err = g.err;
        goto fail;
    }

    int64_t generated = 0;
    double  all_first = 0;
    for (size_t i = 0; i < n_items; i++) {
        gen_item *it = &items[i];
        if (res[i].n_tokens != it->n_out) {
            assay_fail(&err, ASSAY_EINTERNAL, "%s:%zu: %d tokens reported, %d seen", prompt_path,
                       it->line, res[i].n_tokens, it->n_out);
            goto fail;
        }
        generated += it->n_out;
        if (it->t_first > all_first)
            all_first = it->t_first;
        if ((rc = tok_decode(tok, it->out, (size_t)it->n_out, 1, &it->text, &it->text_len, &err)))
            goto fail;
        /* The final text is cut at the earliest stop string of the whole decoded text. */
        stop_matcher fin;
        if ((rc = stop_init(&fin, (const char *const *)it->stops, it->n_stops, &err)))
            goto fail;
        int hit = stop_feed(&fin, it->text, it->text_len, &err);
        if (hit > 0) {
            stop_text(&fin, &it->text_len);
            it->text[it->text_len] = '\0';
        }
        stop_free(&fin);
        if (hit < 0)
            goto fail;
        it->finish = hit > 0 || res[i].finish == GEN_STOPPED ? "stop"
                     : res[i].finish == GEN_EOS              ? "eos"
                                                             : "length";
    }

    if (af_open) {
        for (size_t i = 0; i < n_items; i++) {
            cJSON *o   = item_json(&items[i]);
            char  *s   = cJSON_PrintUnformatted(o);
            int    bad = !s || fprintf(af.fp, "%s\n", s) < 0;
            free(s);
            cJSON_Delete(o);
            if (bad) {
                assay_fail(&err, ASSAY_EIO, "%s: write failed", out_path);
                goto fail;
            }
        }
        af_open = 0;
        if ((rc = atomic_commit(&af, &err)))
            goto fail;
    }
    double prefill_tps = all_first > 0 ? (double)prompt_tokens / all_first : 0;
    double decode_tps  = wall > 0 ? (double)generated / wall : 0;
    if (cc.json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(root, "model", model_dir);
        cJSON_AddStringToObject(root, "prompts_file", prompt_path);
        for (size_t i = 0; i < n_items; i++)
            cJSON_AddItemToArray(arr, item_json(&items[i]));
        cJSON_AddItemToObject(root, "results", arr);
        cJSON_AddNumberToObject(root, "prompt_tokens", (double)prompt_tokens);
        cJSON_AddNumberToObject(root, "generated_tokens", (double)generated);
        cJSON_AddNumberToObject(root, "prefill_tokens_per_s", prefill_tps);
        cJSON_AddNumberToObject(root, "decode_tokens_per_s", decode_tps);
        cJSON_AddNumberToObject(root, "wall_s", wall);
        char *s = cJSON_Print(root);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else {
        for (size_t i = 0; i < n_items; i++) {
            const gen_item *it = &items[i];
            printf("--- line %zu: %d tokens, finish %s, latency %.3f s\n%s\n", it->line, it->n_out,
                   it->finish, it->t_last, it->text);
        }
        printf("--- %lld prompt tokens (prefill %.1f tokens/s), %lld generated (%.1f tokens/s)\n",
               (long long)prompt_tokens, prefill_tps, (long long)generated, decode_tps);
    }
    cli_summary("generate", "tokens", generated, wall);
    rc = 0;
    goto cleanup;

fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
cleanup:
    if (af_open)
        atomic_abort(&af);
    gen_results_free(res, res ? (int)n_items : 0);
    free(res);
    free(reqs);
    items_free(items, n_items);
    model_free(m);
    tok_free(tok);
    free(stops);
    return rc;
}
