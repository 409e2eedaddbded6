/* harness/cmd_generate.c — `assay generate`: greedy generation for a file of prompts with
 * continuous batching. Prompts stream through in windows (bounded memory for any number of
 * them); results leave in input order after each window. Stop strings are matched on the
 * decoded text as tokens arrive (a stop string may span several tokens), and a matched request
 * leaves the batch at once. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/jsonl.h"
#include "harness/progress.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/model.h"
#include "scoring/stop.h"

/* The reorder buffer: a window holds at most this many prompts. */
#define GEN_WINDOW_PROMPTS 1024
/* Bytes of a text prompt shown beside its answer in the text output. */
#define GEN_PREVIEW_BYTES 60

static const char generate_usage[] =
    "usage: assay generate MODEL --prompts FILE.jsonl [--max-new-tokens N] [--stop S]...\n"
    "                      [--output OUT.jsonl] [--json] [--strict] [--threads N]\n"
    "                      [--device auto|cpu|cuda[:N]] [--mem-budget SIZE]\n";

static const char generate_help[] =
    "\n"
    "Greedy generation under MODEL (a Hugging Face checkpoint directory with its tokenizer, or a\n"
    "GGUF file) for every prompt of FILE.jsonl, decoded together with continuous batching.\n"
    "Each line is\n"
    "  {\"prompt\": \"...\"}          text, tokenized as tokenizer(text) (BOS when the tokenizer\n"
    "                              adds it; special-token text becomes special tokens)\n"
    "  {\"prompt_ids\": [...]}       token ids as they are\n"
    "with optional \"max_new_tokens\" (replaces --max-new-tokens), \"stop\" (a string or a list;\n"
    "replaces the --stop list) and \"id\" (copied to the result). Other fields are ignored\n"
    "with a warning (an error with --strict). Strings may hold any Unicode, \\u0000 included.\n"
    "A line may be at most 64 MiB and hold at most 1,048,576 JSON values nested at most 64\n"
    "deep.\n"
    "\n"
    "Prompts are read, generated and written in windows of at most 1024 prompts (continuous\n"
    "batching runs within a window), so memory does not grow with the file; results keep the\n"
    "input order.\n"
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
    "  --strict            unknown fields in a prompt line are an error\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "Result per prompt: line, text, n_tokens (generated, a stopping token included), finish\n"
    "(eos, stop or length), ttft_s (time to its first token) and latency_s (time to its last\n"
    "token), both from the start of generation, and tokens. Totals: prompt and generated\n"
    "tokens, prefill tokens/s (prompt tokens / time until every prompt had its first token),\n"
    "decode tokens/s (generated tokens / wall time), mean_tpot_s (the time per token after\n"
    "the first: (latency_s - ttft_s) / (n_tokens - 1), averaged over prompts with 2 or more\n"
    "new tokens; null when none did) and wall time. Without --json the texts go to stdout as\n"
    "a readable list (each with its line, id and the start of its prompt); with --json one\n"
    "JSON object holds everything.\n"
    "A progress line is shown on a terminal; a summary line goes to stderr.\n"
    "\n"
    "exit codes: 0 success, 1 non-finite logits (NaN/Inf weights or overflow; the message names\n"
    "the prompt), 2 bad input or usage (invalid JSONL names file:line, a prompt that leaves no\n"
    "room in the model's context, model over the memory budget), 3 environment failure.\n"
    "Results of windows before a failing line are already on stdout; OUT.jsonl is only written\n"
    "when every prompt succeeded.\n";

/* the help states these numbers */
_Static_assert(GEN_WINDOW_PROMPTS == 1024 && JSONL_LINE_MAX == 64 << 20 &&
                   JSONL_VALUES_MAX == 1048576 && JSONL_DEPTH_MAX == 64,
               "update generate_help");

static const char *const gen_fields[] = {"prompt", "prompt_ids", "max_new_tokens",
                                         "stop",   "id",         NULL};

typedef struct gen_item {
    size_t   line;
    cJSON   *id;
    char    *preview; /* the start of a text prompt, for the text output; NULL for ids */
    size_t   preview_len;
    int32_t *prompt;
    size_t   n_prompt;
    int      max_new;
    char   **stops; /* owned */
    size_t  *stop_lens;
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

/* What reading prompts needs between windows. */
typedef struct gen_reader {
    jsonl_reader       r;
    const tokenizer   *tok;
    int                max_new_default;
    const char *const *stops; /* --stop, escapes not yet undone */
    size_t             n_stops;
    int                max_pos;
    int64_t            vocab;
    int                strict;
} gen_reader;

static void items_clear(gen_item *it, size_t n) {
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(it[i].id);
        free(it[i].preview);
        free(it[i].prompt);
        for (size_t s = 0; s < it[i].n_stops; s++)
            free(it[i].stops[s]);
        free(it[i].stops);
        free(it[i].stop_lens);
        stop_free(&it[i].sm);
        free(it[i].out);
        free(it[i].text);
        memset(&it[i], 0, sizeof it[i]);
    }
}

/* "\n" and "\t" in a --stop argument mean newline and tab; "\\" a backslash. */
static char *unescape(const char *s, size_t *len) {
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
    *p   = '\0';
    *len = (size_t)(p - o);
    return o;
}

/* lens NULL: src are --stop arguments (escapes undone here). */
static int copy_stops(gen_item *it, const char *const *src, const size_t *lens, size_t n,
                      assay_error *err) {
    it->stops     = calloc(n ? n : 1, sizeof *it->stops);
    it->stop_lens = calloc(n ? n : 1, sizeof *it->stop_lens);
    if (!it->stops || !it->stop_lens)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (lens) {
            it->stops[i] = malloc(lens[i] + 1);
            if (it->stops[i]) {
                memcpy(it->stops[i], src[i], lens[i]);
                it->stops[i][lens[i]] = '\0';
                it->stop_lens[i]      = lens[i];
            }
        } else {
            it->stops[i] = unescape(src[i], &it->stop_lens[i]);
        }
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

/* The first GEN_PREVIEW_BYTES bytes of s, cut at a UTF-8 character boundary. */
static int keep_preview(gen_item *it, const char *s, size_t len) {
    size_t n = len;
    if (n > GEN_PREVIEW_BYTES) {
        n = GEN_PREVIEW_BYTES;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    if (!(it->preview = malloc(n + 1)))
        return -1;
    memcpy(it->preview, s, n);
    it->preview[n]  = '\0';
    it->preview_len = n;
    return 0;
}

/* One prompt from the current line into *it. */
static int read_item(gen_reader *gr, const cJSON *obj, gen_item *it, assay_error *err) {
    jsonl_reader   *r          = &gr->r;
    const char    **line_stops = NULL;
    size_t         *line_lens = NULL, nls = 0;
    int             rc;
    tok_encode_opts eo = tok_default_opts();
    it->line           = r->line;
    if ((rc = jsonl_check_fields(r, obj, gen_fields, gr->strict, err)))
        return rc;
    if (cJSON_GetObjectItemCaseSensitive(obj, "prompt_ids")) {
        if ((rc = jsonl_get_ids(r, obj, "prompt_ids", gr->vocab, &it->prompt, &it->n_prompt, err)))
            return rc;
    } else {
        const char *s;
        size_t      len;
        tok_ids     ids = {0};
        if ((rc = jsonl_get_string(r, obj, "prompt", 1, &s, &len, err)))
            return rc;
        if (keep_preview(it, s, len))
            return assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", r->path, r->line);
        if ((rc = tok_encode(gr->tok, s, len, &eo, 0, &ids, err))) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            tok_ids_free(&ids);
            return assay_fail(err, rc, "%s:%zu: %s", r->path, r->line, msg);
        }
        it->prompt   = ids.ids;
        it->n_prompt = ids.n;
        free(ids.offsets);
    }
    if (it->n_prompt == 0)
        return assay_fail(err, ASSAY_EINVAL, "%s:%zu: the prompt has no tokens", r->path, r->line);
    int     has;
    int64_t v;
    if ((rc = jsonl_get_int(r, obj, "max_new_tokens", 1, 1 << 24, &has, &v, err)))
        return rc;
    it->max_new = has ? (int)v : gr->max_new_default;
    if (it->n_prompt + (size_t)it->max_new > (size_t)gr->max_pos)
        return assay_fail(err, ASSAY_EINVAL,
                          "%s:%zu: prompt (%zu tokens) + max_new_tokens (%d) exceeds the "
                          "model's context of %d positions",
                          r->path, r->line, it->n_prompt, it->max_new, gr->max_pos);
    if ((rc = jsonl_get_strings(r, obj, "stop", &line_stops, &line_lens, &nls, err)))
        return rc;
    rc = cJSON_GetObjectItemCaseSensitive(obj, "stop")
             ? copy_stops(it, line_stops, line_lens, nls, err)
             : copy_stops(it, gr->stops, NULL, gr->n_stops, err);
    free(line_stops);
    free(line_lens);
    if (rc)
        return rc;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
    it->id          = id ? cJSON_Duplicate(id, 1) : NULL;
    return ASSAY_OK;
}

/* Reads up to GEN_WINDOW_PROMPTS prompts into items (*n == 0 at end of file). */
static int window_read(gen_reader *gr, gen_item *items, size_t *n, assay_error *err) {
    cJSON *obj = NULL;
    int    got = 0;
    *n         = 0;
    while (*n < GEN_WINDOW_PROMPTS && (got = jsonl_next(&gr->r, &obj, err)) == 1) {
        int rc = read_item(gr, obj, &items[*n], err);
        cJSON_Delete(obj);
        (*n)++; /* items_clear frees a half-read item too */
        if (rc)
            return rc;
    }
    return got > 1 ? got : ASSAY_OK;
}

static cJSON *item_json(const gen_item *it) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "line", (double)it->line);
    if (it->id)
        cJSON_AddItemToObject(o, "id", cJSON_Duplicate(it->id, 1));
    cJSON_AddItemToObject(o, "text", jsonl_string_create(it->text ? it->text : "", it->text_len));
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

/* An item's id as JSON text (malloc'd) or NULL. */
static char *id_text(const gen_item *it) { return it->id ? jsonl_print(it->id, 0) : NULL; }

/* Totals over every window. */
typedef struct gen_totals {
    int64_t prompt_tokens, generated;
    double  all_first;
    /* the sum, over prompts with 2+ new tokens, of their time per token after the first */
    double  tpot_sum;
    int64_t n_tpot;
    size_t  n_emitted;
} gen_totals;

/* Generates one window and writes its results in input order. */
static int window_run(model *m, const tokenizer *tok, const model_config *cfg, gen_ctx *g,
                      gen_item *items, size_t n, gen_request *reqs, gen_result *res,
                      const char *path, FILE *out_fp, const char *out_path, int json,
                      gen_totals *tot, assay_error *err) {
    int rc;
    for (size_t i = 0; i < n; i++) {
        gen_item *it = &items[i];
        if ((rc = stop_init(&it->sm, (const char *const *)it->stops, it->stop_lens, it->n_stops,
                            err)))
            return rc;
        if (!(it->out = malloc((size_t)it->max_new * sizeof *it->out)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        reqs[i] = (gen_request){
            .prompt = it->prompt, .n_prompt = (int)it->n_prompt, .max_new_tokens = it->max_new};
        tot->prompt_tokens += (int64_t)it->n_prompt;
    }
    int32_t eos[2];
    int     n_eos = 0;
    if (tok_eos_id(tok) >= 0)
        eos[n_eos++] = tok_eos_id(tok);
    if (cfg->eos_token_id >= 0 && (n_eos == 0 || cfg->eos_token_id != eos[0]))
        eos[n_eos++] = cfg->eos_token_id;
    g->items = items;
    rc       = model_generate_greedy(m, reqs, (int)n, eos, n_eos, on_token, g, res, err);
    if (rc)
        return rc;
    if (g->err.code) {
        *err = g->err;
        return err->code;
    }
    for (size_t i = 0; i < n; i++) {
        gen_item *it = &items[i];
        char     *id = id_text(it);
        if (res[i].finish == GEN_NONFINITE) {
            rc = assay_fail(err, ASSAY_ECHECK,
                            "%s:%zu%s%s%s: the logits are NaN or Inf at generated token %d: the "
                            "model's weights or activations hold NaN or Inf",
                            path, it->line, id ? " (id " : "", id ? id : "", id ? ")" : "",
                            it->n_out + 1);
            free(id);
            return rc;
        }
        free(id);
        if (res[i].n_tokens != it->n_out)
            return assay_fail(err, ASSAY_EINTERNAL, "%s:%zu: %d tokens reported, %d seen", path,
                              it->line, res[i].n_tokens, it->n_out);
        tot->generated += it->n_out;
        if (it->t_first > tot->all_first)
            tot->all_first = it->t_first;
        if (it->n_out >= 2) {
            tot->tpot_sum += (it->t_last - it->t_first) / (it->n_out - 1);
            tot->n_tpot++;
        }
        if ((rc = tok_decode(tok, it->out, (size_t)it->n_out, 1, &it->text, &it->text_len, err)))
            return rc;
        /* The final text is cut at the earliest stop string of the whole decoded text. */
        stop_matcher fin;
        if ((rc = stop_init(&fin, (const char *const *)it->stops, it->stop_lens, it->n_stops, err)))
            return rc;
        int hit = stop_feed(&fin, it->text, it->text_len, err);
        if (hit > 0) {
            stop_text(&fin, &it->text_len);
            it->text[it->text_len] = '\0';
        }
        stop_free(&fin);
        if (hit < 0)
            return -hit;
        it->finish = hit > 0 || res[i].finish == GEN_STOPPED ? "stop"
                     : res[i].finish == GEN_EOS              ? "eos"
                                                             : "length";
    }
    for (size_t i = 0; i < n; i++) {
        const gen_item *it   = &items[i];
        char           *line = NULL;
        int rc_ = (out_fp || json) ? jsonl_emit(item_json(it), out_fp, out_path, &line, err) : 0;
        if (rc_)
            return rc_;
        if (json) {
            printf("%s    %s", tot->n_emitted ? ",\n" : "", line);
        } else {
            char  *id = id_text(it), *pv = NULL;
            cJSON *q = it->preview ? jsonl_string_create(it->preview, it->preview_len) : NULL;
            if (q)
                pv = jsonl_print(q, 0);
            cJSON_Delete(q);
            printf("--- line %zu%s%s: %d tokens, finish %s, latency %.3f s\n", it->line,
                   id ? ", id " : "", id ? id : "", it->n_out, it->finish, it->t_last);
            if (pv)
                printf("prompt: %s%s\n", pv, it->preview_len < GEN_PREVIEW_BYTES ? "" : " ...");
            else
                printf("prompt: %zu token ids\n", it->n_prompt);
            if (it->text_len) /* NULs included */
                fwrite(it->text, 1, it->text_len, stdout);
            putchar('\n');
            free(id);
            free(pv);
        }
        free(line);
        tot->n_emitted++;
    }
    /* a full disk shows at the latest here, while the message can still name the file */
    if (out_fp && fflush(out_fp) != 0) {
        int e = errno;
        return assay_fail(err, ASSAY_EIO, "%s: write failed: %s", out_path, strerror(e));
    }
    return ASSAY_OK;
}

int cmd_generate(int argc, char **argv) {
    cli_common   cc        = {0};
    assay_error  err       = {0};
    const char  *model_dir = NULL, *prompt_path = NULL, *out_path = NULL;
    const char **stops   = calloc((size_t)argc, sizeof *stops);
    size_t       n_items = 0;
    int64_t      max_new = 128;
    int          rc, strict = 0, started = 0;
    tokenizer   *tok     = NULL;
    model       *m       = NULL;
    gen_item    *items   = NULL;
    gen_request *reqs    = NULL;
    gen_result  *res     = NULL;
    atomic_file  af      = {0};
    int          af_open = 0;
    progress     prog;
    gen_ctx      g         = {0};
    gen_totals   tot       = {0};
    gen_reader   gr        = {0};
    cli_list     stop_list = {stops, 0};
    if (!stops)
        return cli_report(&(assay_error){ASSAY_ENOMEM, "out of memory"});

    const cli_opt opts[] = {
        {"--prompts", CLI_STR, &prompt_path, 0, 0, NULL},
        {"--output", CLI_STR, &out_path, 0, 0, NULL},
        {"--stop", CLI_STR_LIST, &stop_list, 0, 0, NULL},
        {"--max-new-tokens", CLI_INT, &max_new, 1, 1 << 24, NULL},
        {"--strict", CLI_FLAG, &strict, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"generate", opts, CLI_N_OPTS(opts), 1, "(prompts go in --prompts FILE)"};
    cli_list      args = {&model_dir, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        printf("%s", generate_usage);
        printf(generate_help, cli_common_help);
        free(stops);
        return 0;
    }
    if (!model_dir || !prompt_path) {
        fprintf(stderr, "assay: generate: missing %s (see assay generate --help)\n%s",
                !model_dir ? "MODEL (a checkpoint directory or GGUF file)" : "--prompts FILE.jsonl",
                generate_usage);
        free(stops);
        return 2;
    }

    model_config cfg;
    if ((rc = config_load_dir(&cfg, model_dir, &err)))
        goto fail;
    if (!(tok = tok_load(model_dir, &err)))
        goto fail;
    gr    = (gen_reader){.tok             = tok,
                         .max_new_default = (int)max_new,
                         .stops           = stops,
                         .n_stops         = (size_t)stop_list.n,
                         .max_pos         = cfg.max_pos,
                         .vocab           = cfg.vocab_size,
                         .strict          = strict};
    items = calloc(GEN_WINDOW_PROMPTS, sizeof *items);
    reqs  = calloc(GEN_WINDOW_PROMPTS, sizeof *reqs);
    res   = calloc(GEN_WINDOW_PROMPTS, sizeof *res);
    if (!items || !reqs || !res) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory for a window of %d prompts",
                   GEN_WINDOW_PROMPTS);
        goto fail;
    }
    if ((rc = jsonl_open(&gr.r, prompt_path, &err)))
        goto fail;
    gr.r.shape = "{\"prompt\": \"Once upon a time\"}";
    /* the first window is read before the model loads: most bad files fail in a moment */
    if ((rc = window_read(&gr, items, &n_items, &err)))
        goto fail;
    if (n_items == 0) {
        assay_fail(&err, ASSAY_EINVAL, "%s: no prompts (expected lines like {\"prompt\": \"...\"})",
                   prompt_path);
        goto fail;
    }
    if (out_path && (rc = atomic_open(&af, out_path, &err)))
        goto fail;
    af_open = out_path != NULL;
    if ((rc = cli_load_model(model_dir, &cc, &m, &err)))
        goto fail;

    if (cc.json) {
        char  *mp = NULL, *pp = NULL;
        cJSON *a = cJSON_CreateString(model_dir), *b = cJSON_CreateString(prompt_path);
        mp = a ? jsonl_print(a, 0) : NULL;
        pp = b ? jsonl_print(b, 0) : NULL;
        printf("{\n  \"model\": %s,\n  \"device\": \"%s\",\n  \"batch_invariant\": %s,\n"
               "  \"prompts_file\": %s,\n  \"results\": [\n",
               mp ? mp : "null", model_device_name(m), model_batch_invariant(m) ? "true" : "false",
               pp ? pp : "null");
        free(mp);
        free(pp);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    started = 1;
    g.tok   = tok;
    g.prog  = &prog;
    progress_init(&prog, "generate", "tok", 0);
    g.t0 = time_now();
    while (n_items > 0) {
        rc = window_run(m, tok, &cfg, &g, items, n_items, reqs, res, prompt_path,
                        af_open ? af.fp : NULL, out_path, cc.json, &tot, &err);
        gen_results_free(res, (int)n_items);
        items_clear(items, n_items);
        n_items = 0;
        if (rc || (rc = window_read(&gr, items, &n_items, &err))) {
            progress_finish(&prog);
            goto fail;
        }
    }
    progress_finish(&prog);
    double wall = time_now() - g.t0;

    if (af_open) {
        af_open = 0;
        if ((rc = atomic_commit(&af, &err)))
            goto fail;
    }
    double prefill_tps = tot.all_first > 0 ? (double)tot.prompt_tokens / tot.all_first : 0;
    double decode_tps  = wall > 0 ? (double)tot.generated / wall : 0;
    double tpot        = tot.n_tpot > 0 ? tot.tpot_sum / (double)tot.n_tpot : 0;
    char   tpot_s[32]  = "null"; /* no prompt made 2 or more tokens */
    if (tot.n_tpot > 0)
        snprintf(tpot_s, sizeof tpot_s, "%.6g", tpot);
    if (cc.json) {
        printf("\n  ],\n  \"prompt_tokens\": %lld,\n  \"generated_tokens\": %lld,\n"
               "  \"prefill_tokens_per_s\": %.6g,\n  \"decode_tokens_per_s\": %.6g,\n"
               "  \"mean_tpot_s\": %s,\n  \"wall_s\": %.6g\n}\n",
               (long long)tot.prompt_tokens, (long long)tot.generated, prefill_tps, decode_tps,
               tpot_s, wall);
    } else {
        printf("--- %lld prompt tokens (prefill %.1f tokens/s), %lld generated (%.1f tokens/s)",
               (long long)tot.prompt_tokens, prefill_tps, (long long)tot.generated, decode_tps);
        if (tot.n_tpot > 0)
            printf(", %.2f ms per token after the first", tpot * 1e3);
        printf("\n");
    }
    cli_summary("generate", "tokens", tot.generated, wall);
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
    if (res)
        gen_results_free(res, GEN_WINDOW_PROMPTS);
    free(res);
    free(reqs);
    if (items)
        items_clear(items, n_items);
    free(items);
    jsonl_close(&gr.r);
    model_free(m);
    tok_free(tok);
    free(stops);
    return rc;
}
