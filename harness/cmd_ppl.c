/* harness/cmd_ppl.c — `assay ppl`: perplexity of text files under Hugging Face's sliding-window
 * recipe or lm-eval's rolling windows. Documents are read and tokenized, and every argument is
 * checked, before the model is loaded, so bad input fails fast. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/dist.h"
#include "harness/hashes.h"
#include "harness/history.h"
#include "harness/jsonl.h"
#include "harness/pipeline.h"
#include "harness/progress.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/model.h"
#include "scoring/ppl.h"
#include "scoring/windows.h"

static const char ppl_help[] =
    "usage: assay ppl MODEL FILE... [--mode sliding|rolling] [--ctx N] [--stride S] [--json]\n"
    "                 [--threads N] [--device auto|cpu|cuda[:N]] [--mem-budget SIZE]\n"
    "\n"
    "Perplexity of text under MODEL (a Hugging Face checkpoint directory with its tokenizer, or\n"
    "a GGUF file: its metadata, tokenizer and weights used as they are).\n"
    "A FILE ending in .jsonl holds one document per line as {\"text\": \"...\"}; any other FILE\n"
    "is one document (its whole content, UTF-8).\n"
    "\n"
    "modes:\n"
    "  sliding   Hugging Face's \"Perplexity of fixed-length models\": the document is tokenized\n"
    "            as tokenizer(text) does (BOS added when the tokenizer adds it); windows of\n"
    "            --ctx tokens start every --stride tokens, each scores the tokens the previous\n"
    "            window did not reach; the first token of a window that starts where the last\n"
    "            one ended has no context and is not scored (as in the recipe). (default)\n"
    "  rolling   lm-eval's loglikelihood_rolling: tokens without special tokens, the first\n"
    "            window predicts them from the prefix token (BOS, or EOS when there is no BOS),\n"
    "            later windows read --ctx tokens of context; every token is scored once.\n"
    "\n"
    "Special-token text inside documents is scored as plain text.\n"
    "\n"
    "options:\n"
    "  --mode M            sliding or rolling (default sliding)\n"
    "  --ctx N             window length in tokens (default: the model's max positions,\n"
    "                      config.json n_positions / max_position_embeddings, as lm-eval's\n"
    "                      max_length; a larger N is lowered to it, with a note on stderr)\n"
    "  --stride S          sliding only: step between windows, 1..ctx (default ctx)\n"
    "  --history FILE      append the run to this history file (SQLite; see assay history);\n"
    "                      default $ASSAY_HISTORY, none when unset (ppl has no output folder)\n"
    "  --resume DIR        keep each rank's window results in DIR and reuse them when the same\n"
    "                      command runs again: an interrupted run continues\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "Output, per document and in total: tokens scored, the negative log-likelihood in nats\n"
    "(natural log, summed in double; JSON nll_nats), token perplexity exp(nll/tokens), word\n"
    "perplexity exp(nll/words) with words counted as lm-eval does (len(re.split(r\"\\s+\",\n"
    "text))), byte perplexity exp(nll/bytes) over UTF-8 bytes, and bits per byte\n"
    "nll/bytes/ln 2. Totals sum NLL, tokens, words and bytes first (lm-eval's\n"
    "weighted_perplexity). The window length used, and where it came from, is printed too.\n"
    "When sliding windows overlap (--stride < --ctx), the total also gives the figure the\n"
    "Hugging Face docs' code prints (JSON hf_recipe_ppl, always present in sliding mode): it\n"
    "multiplies each window's mean loss by one token fewer than the mean was taken over, so\n"
    "it differs slightly from ppl, which counts every token once.\n"
    "A progress line is shown on a terminal; a summary line with tokens/s goes to stderr.\n"
    "\n"
    "exit codes: 0 success, 1 a log-prob came out NaN or infinite (broken weights: the message\n"
    "names the document and window), 2 bad input or usage (empty file, document under 2\n"
    "tokens, invalid JSONL, model over the memory budget), 3 environment failure\n";

typedef struct ppl_doc {
    char      name[1100]; /* "file" or "file:line" */
    char     *text;
    size_t    len;
    tok_ids   ids;
    ppl_stats st;
} ppl_doc;

typedef struct doc_list {
    ppl_doc *d;
    size_t   n, cap;
} doc_list;

static void docs_free(doc_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->d[i].text);
        tok_ids_free(&l->d[i].ids);
    }
    free(l->d);
    memset(l, 0, sizeof *l);
}

static int docs_push(doc_list *l, const char *name, char *text, size_t len, assay_error *err) {
    if (l->n == l->cap) {
        size_t   cap = l->cap ? l->cap * 2 : 8;
        ppl_doc *nd  = realloc(l->d, cap * sizeof *nd);
        if (!nd) {
            free(text);
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name);
        }
        l->d   = nd;
        l->cap = cap;
    }
    ppl_doc *d = &l->d[l->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->text = text;
    d->len  = len;
    return ASSAY_OK;
}

static int read_documents(const char *path, doc_list *docs, assay_error *err) {
    if (path_is_dir(path))
        return assay_fail(err, ASSAY_EINVAL, "%s: is a directory, expected a text or .jsonl file",
                          path);
    if (!str_ends_with(path, ".jsonl")) {
        char  *text = NULL;
        size_t len  = 0;
        int    rc   = file_read_all(path, &text, &len, err);
        if (rc)
            return rc;
        if (len == 0) {
            free(text);
            return assay_fail(err, ASSAY_EINVAL, "%s: empty file, nothing to score", path);
        }
        return docs_push(docs, path, text, len, err);
    }
    jsonl_reader r;
    int          rc     = jsonl_open(&r, path, err), got;
    size_t       before = docs->n;
    cJSON       *obj    = NULL;
    if (rc)
        return rc;
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *s;
        size_t      n;
        char        name[1100];
        rc = jsonl_get_string(&r, obj, "text", 1, &s, &n, err);
        if (!rc && n == 0)
            rc = assay_fail(err, ASSAY_EINVAL, "%s:%zu: empty \"text\", nothing to score", path,
                            r.line);
        char *copy = rc ? NULL : malloc(n + 1);
        if (!rc && !copy)
            rc = assay_fail(err, ASSAY_ENOMEM, "%s:%zu: out of memory", path, r.line);
        if (!rc) {
            memcpy(copy, s, n + 1);
            snprintf(name, sizeof name, "%s:%zu", path, r.line);
            rc = docs_push(docs, name, copy, n, err);
        }
        cJSON_Delete(obj);
        if (rc)
            goto done;
    }
    if (got != 0)
        rc = got;
    else if (docs->n == before)
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no documents (expected lines like {\"text\": ...})",
                        path);
done:
    jsonl_close(&r);
    return rc;
}

static cJSON *stats_json(const char *name, const ppl_stats *s, int sliding) {
    cJSON *o = cJSON_CreateObject();
    if (name)
        cJSON_AddStringToObject(o, "document", name);
    cJSON_AddNumberToObject(o, "tokens", (double)s->tokens);
    cJSON_AddNumberToObject(o, "words", (double)s->words);
    cJSON_AddNumberToObject(o, "bytes", (double)s->bytes);
    cJSON_AddNumberToObject(o, "nll_nats", s->nll);
    cJSON_AddNumberToObject(o, "ppl", ppl_token_ppl(s));
    cJSON_AddNumberToObject(o, "word_ppl", ppl_word_ppl(s));
    cJSON_AddNumberToObject(o, "byte_ppl", ppl_byte_ppl(s));
    cJSON_AddNumberToObject(o, "bits_per_byte", ppl_bits_per_byte(s));
    if (sliding) {
        cJSON_AddNumberToObject(o, "hf_recipe_nll", s->hf_nll);
        cJSON_AddNumberToObject(o, "hf_recipe_tokens", (double)s->hf_tokens);
        cJSON_AddNumberToObject(o, "hf_recipe_ppl", ppl_hf_recipe_ppl(s));
    }
    return o;
}

/* The run's record in the history: task "ppl", the total's metrics (no stderr: perplexity over
 * a corpus has none), model, tokenizer and input hashes. */
static int ppl_record_history(const char *hist, const char *model_dir, const char *mode,
                              int64_t ctx, int64_t stride, const char *const *files, int n_files,
                              const ppl_stats *total, const model *m, double wall, int64_t computed,
                              assay_error *err) {
    char   mh[65], th[65], dh[65], cfg[160];
    cJSON *data = cJSON_CreateObject();
    int    rc   = hashes_model(model_dir, mh, err);
    if (!rc)
        rc = hashes_tokenizer(model_dir, th, err);
    for (int f = 0; f < n_files && !rc; f++)
        if (!(rc = hashes_files(dh, &files[f], 1, SIZE_MAX, err)))
            cJSON_AddStringToObject(data, files[f], dh);
    char *ds = rc ? NULL : cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    if (rc)
        return rc;
    snprintf(cfg, sizeof cfg, "{\"mode\":\"%s\",\"ctx\":%lld,\"stride\":%lld}", mode,
             (long long)ctx, (long long)stride);
    const history_metric ms[] = {
        {"ppl", "ppl", ppl_token_ppl(total), NAN},
        {"ppl", "word_ppl", ppl_word_ppl(total), NAN},
        {"ppl", "byte_ppl", ppl_byte_ppl(total), NAN},
        {"ppl", "bits_per_byte", ppl_bits_per_byte(total), NAN},
    };
    history_run run = {"ppl",
                       model_dir,
                       mh,
                       th,
                       ds,
                       cfg,
                       model_device_name(m),
                       wall,
                       computed,
                       NAN,
                       ms,
                       sizeof ms / sizeof ms[0]};
    rc              = history_append(hist, &run, NULL, err);
    free(ds);
    return rc;
}

static void print_row(const char *name, const ppl_stats *s) {
    size_t nl = strlen(name);
    printf("%-28s %8lld %14.6f %12.6g %12.6g %10.6g %10.6f\n", nl > 28 ? name + nl - 28 : name,
           (long long)s->tokens, s->nll, ppl_token_ppl(s), ppl_word_ppl(s), ppl_byte_ppl(s),
           ppl_bits_per_byte(s));
}

int cmd_ppl(int argc, char **argv) {
    cli_common    cc        = {0};
    assay_error   err       = {0};
    const char   *model_dir = NULL, *mode = "sliding", *hist = getenv("ASSAY_HISTORY");
    const char   *resume = NULL;
    char          rkey[65];
    const char  **files   = calloc((size_t)argc, sizeof *files);
    int           n_files = 0, rc = ASSAY_OK;
    int64_t       ctx = 0, stride = 0;
    doc_list      docs   = {0};
    pipe_ppl_plan plan   = {0};
    pipe_doc     *pdocs  = NULL;
    pipe_counts   counts = {0};
    tokenizer    *tok    = NULL;
    model        *m      = NULL;
    progress      prog;
    if (!files)
        return cli_report(&(assay_error){ASSAY_ENOMEM, "out of memory"});

    static const char *const modes[] = {"sliding", "rolling", NULL};
    const cli_opt            opts[]  = {
                    {"--mode", CLI_CHOICE, &mode, 0, 0, modes},
                    {"--ctx", CLI_INT, &ctx, 2, 1 << 24, NULL},
                    {"--stride", CLI_INT, &stride, 1, 1 << 24, NULL},
                    {"--history", CLI_STR, &hist, 0, 0, NULL},
                    {"--resume", CLI_STR, &resume, 0, 0, NULL},
    };
    const cli_cmd cmd  = {"ppl", opts, CLI_N_OPTS(opts), 0, NULL};
    cli_list      args = {files, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        printf(ppl_help, cli_common_help);
        free(files);
        return 0;
    }
    /* MODEL, then the FILEs. */
    if (args.n > 0) {
        model_dir = files[0];
        n_files   = args.n - 1;
    }
    if (!model_dir || n_files == 0) {
        /* one line naming what is missing and the usage line, not the whole help */
        fprintf(stderr, "assay: ppl: missing %s (see assay ppl --help)\n%.*s",
                !model_dir ? "MODEL (a checkpoint directory or GGUF file) and FILE"
                           : "FILE (text to score)",
                (int)(strstr(ppl_help, "\n\n") - ppl_help) + 1, ppl_help);
        free(files);
        return 2;
    }
    dist_apply_device(&cc);
    int sliding = !strcmp(mode, "sliding");
    if (!sliding && stride) {
        assay_fail(&err, ASSAY_EINVAL, "--stride applies to --mode sliding only");
        goto fail;
    }

    /* Everything that can be checked without the weights comes first. */
    model_config cfg;
    if ((rc = config_load_dir(&cfg, model_dir, &err)))
        goto fail;
    /* lm-eval's HFLM max_length: the config's n_positions / max_position_embeddings. No window
     * may read more positions than the model has (GPT-2's are a learned table). */
    const char *ctx_from = "--ctx";
    if (ctx == 0) {
        ctx      = cfg.max_pos;
        ctx_from = "the model's max positions";
    } else if (ctx > cfg.max_pos) {
        fprintf(stderr,
                "assay ppl: note: --ctx %lld is more than the model's %d positions "
                "(%s/config.json); using %d\n",
                (long long)ctx, cfg.max_pos, model_dir, cfg.max_pos);
        ctx      = cfg.max_pos;
        ctx_from = "--ctx, lowered to the model's max positions";
    }
    if (stride == 0)
        stride = ctx;
    if (stride > ctx) {
        assay_fail(&err, ASSAY_EINVAL, "--stride %lld is larger than --ctx %lld", (long long)stride,
                   (long long)ctx);
        goto fail;
    }
    if (resume &&
        ((rc = pipe_resume_dir(resume, &err)) || (rc = pipe_resume_key(model_dir, rkey, &err))))
        goto fail;
    if (hist && *hist && (rc = history_check(hist, &err)))
        goto fail;
    for (int f = 0; f < n_files; f++)
        if ((rc = read_documents(files[1 + f], &docs, &err)))
            goto fail;
    if (!(tok = tok_load(model_dir, &err)))
        goto fail;
    int32_t prefix = tok_bos_id(tok) >= 0 ? tok_bos_id(tok) : tok_eos_id(tok);
    if (!sliding && prefix < 0) {
        assay_fail(&err, ASSAY_EUNSUPPORTED,
                   "%s: the tokenizer has neither a BOS nor an EOS token to use as the rolling "
                   "windows' prefix",
                   model_dir);
        goto fail;
    }
    tok_encode_opts eo = tok_default_opts();
    eo.add_special     = sliding;
    eo.split_special   = 0;
    if (!(pdocs = calloc(docs.n, sizeof *pdocs))) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory for %zu documents", docs.n);
        goto fail;
    }
    for (size_t d = 0; d < docs.n; d++) {
        ppl_doc *doc = &docs.d[d];
        if ((rc = tok_encode(tok, doc->text, doc->len, &eo, 0, &doc->ids, &err))) {
            char msg[sizeof err.msg];
            snprintf(msg, sizeof msg, "%s", err.msg);
            assay_fail(&err, rc, "%s: %s", doc->name, msg);
            goto fail;
        }
        ppl_stats_init(&doc->st, doc->text, doc->len);
        pdocs[d] = (pipe_doc){doc->name, doc->ids.ids, doc->ids.n, &doc->st};
    }
    if ((rc = pipe_ppl_plan_make(&plan, pdocs, docs.n, sliding, (size_t)ctx, (size_t)stride, &err)))
        goto fail;

    /* A window longer than a batch runs through the KV cache: size it for the longest window
     * (the default window can be 128k tokens; the runtime's default cache holds 8192). The
     * memory budget check then covers it. */
    cc.kv_tokens = (int)plan.longest;
    if ((rc = cli_load_model(model_dir, &cc, &m, &err)))
        goto fail;
    if (model_get_config(m)->vocab_size < tok_vocab_size(tok)) {
        assay_fail(&err, ASSAY_EINVAL, "%s: the tokenizer has %d tokens, the model only %d",
                   model_dir, tok_vocab_size(tok), model_get_config(m)->vocab_size);
        goto fail;
    }

    double t0 = time_now();
    progress_init(&prog, "ppl", "tok", plan.scored);
    prog.enabled &= dist_rank() == 0;   /* one progress line for the run */
    pipe_shard sh = pipe_shard_world(); /* under mpirun: each rank its share of the windows */
    sh.resume_dir = resume;
    sh.resume_key = rkey;
    if ((rc = pipe_ppl_run_on(m, &plan, pdocs, prefix, model_dir, &counts, &prog, &sh, &err)))
        goto fail_progress;
    progress_finish(&prog);
    double wall = time_now() - t0;

    ppl_stats total = {0};
    for (size_t d = 0; d < docs.n; d++)
        ppl_stats_merge(&total, &docs.d[d].st);
    if (cc.json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(root, "model", model_dir);
        cli_json_device(root, m);
        cJSON_AddStringToObject(root, "mode", mode);
        cJSON_AddNumberToObject(root, "ctx", (double)ctx);
        cJSON_AddStringToObject(root, "ctx_from", ctx_from);
        cJSON_AddNumberToObject(root, "model_max_positions", cfg.max_pos);
        if (sliding)
            cJSON_AddNumberToObject(root, "stride", (double)stride);
        else
            cJSON_AddNumberToObject(root, "prefix_token", prefix);
        for (size_t d = 0; d < docs.n; d++)
            cJSON_AddItemToArray(arr, stats_json(docs.d[d].name, &docs.d[d].st, sliding));
        cJSON_AddItemToObject(root, "documents", arr);
        cJSON_AddItemToObject(root, "total", stats_json(NULL, &total, sliding));
        cJSON_AddNumberToObject(root, "windows", (double)plan.n);
        cJSON_AddNumberToObject(root, "tokens_computed", (double)plan.request_tokens);
        cJSON_AddNumberToObject(root, "wall_s", wall);
        cJSON_AddNumberToObject(root, "tokens_per_s", wall > 0 ? (double)total.tokens / wall : 0);
        char *s = cJSON_Print(root);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else {
        printf("mode %s, ctx %lld (%s)", mode, (long long)ctx, ctx_from);
        if (sliding)
            printf(", stride %lld", (long long)stride);
        printf(", %zu windows\n", plan.n);
        printf("%-28s %8s %14s %12s %12s %10s %10s\n", "document", "tokens", "nll (nats)", "ppl",
               "word_ppl", "byte_ppl", "bits/byte");
        for (size_t d = 0; d < docs.n; d++)
            print_row(docs.d[d].name, &docs.d[d].st);
        if (docs.n > 1)
            print_row("total", &total);
        if (sliding && stride < ctx) /* without overlap the two figures are the same */
            printf("Hugging Face docs' loop prints ppl %.6g (it weights each window's mean loss by "
                   "one token fewer than it averages; see --help)\n",
                   ppl_hf_recipe_ppl(&total));
    }
    if (dist_rank() == 0) /* the run's summary, once */
        cli_summary("ppl", "tokens", total.tokens, wall);
    if (hist && *hist && dist_rank() == 0 && /* one record per run, not per rank */
        (rc = ppl_record_history(hist, model_dir, mode, ctx, sliding ? stride : ctx, files + 1,
                                 n_files, &total, m, wall, (int64_t)plan.request_tokens, &err)))
        goto fail;
    goto out;

fail_progress:
    progress_finish(&prog);
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
    goto cleanup;
out:
    rc = 0;
cleanup:
    model_free(m);
    tok_free(tok);
    free(pdocs);
    pipe_ppl_plan_free(&plan);
    docs_free(&docs);
    free(files);
    return rc;
}
