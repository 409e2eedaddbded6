/* harness/cmd_judge.c — `assay judge`: an LLM judge over any OpenAI-compatible chat-completions
 * server. Pairwise: every pair judged in both orders, a verdict counts only when both agree.
 * Pointwise: a 1-10 rating per answer. Replies are cached (judge_cache.h) the moment they
 * arrive, so a re-run sends only what is missing; a budget stops new requests before the cap. */
#include <cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/sha256.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/eval.h"
#include "harness/history.h"
#include "harness/jsonl.h"
#include "harness/judge.h"
#include "harness/judge_cache.h"
#include "harness/judge_client.h"
#include "harness/progress.h"
#include "scoring/bootstrap.h"

#define JUDGE_RESAMPLES 1000
#define JUDGE_BOOT_SEED 1234

static const char judge_usage[] =
    "usage: assay judge (--pairs PAIRS.jsonl | --a BASE.jsonl --b CAND.jsonl) --endpoint URL\n"
    "                   --model NAME [--mode pairwise|pointwise] [--reference-guided]\n"
    "                   [--rubric FILE] [--output-path OUT] [--cache FILE.sqlite]\n"
    "                   [--budget-usd X --price-in P --price-out P] [--concurrency N]\n"
    "                   [--timeout S] [--max-retries R] [--api-key-env NAME]\n"
    "                   [--ca-bundle FILE] [--seed S] [--max-tokens N] [--json]\n";

static const char judge_help[] =
    "\n"
    "Asks a judge model behind an OpenAI-compatible chat-completions endpoint to compare or rate\n"
    "answers. Each line of PAIRS.jsonl is {\"id\", \"prompt\", \"a\", \"b\"} with optional\n"
    "\"reference\" and \"category\" (pointwise: \"b\" is optional). --a/--b instead join two\n"
    "`assay eval --log-samples` files of a generation task by (\"task\", \"doc_id\"): the\n"
    "prompt is A's \"prompt\" (or \"arguments\"), the answers each file's \"filtered_resps\" (or\n"
    "\"resps\"), the reference \"target\"; a document in one file only is an error.\n"
    "\n"
    "pairwise (default): every pair is judged twice, A shown first and B shown first. A verdict\n"
    "counts only when both orders agree; otherwise the pair is a tie. Reported for B against A:\n"
    "wins, losses, ties, win rate (ties count half) with a 95%% percentile bootstrap interval\n"
    "over pairs (1000 resamples, seed 1234), position consistency (pairs whose two parsed\n"
    "verdicts agree) and first-position rate (decisive parsed verdicts that chose the answer\n"
    "shown first; 0.5 is unbiased). The prompt is in the MT-Bench style with the verdicts\n"
    "\"[[A]]\", \"[[B]]\", \"[[C]]\" (tie); the last one in a reply counts.\n"
    "pointwise: a rating \"[[N]]\" from 1 to 10 per answer: mean, distribution (rounded to whole\n"
    "numbers), per-category means, and the mean difference B - A with its interval.\n"
    "A reply without a verdict gets one reminder; still none: recorded as unparsed and counted\n"
    "(an unparsed pairwise verdict makes its pair a tie).\n"
    "\n"
    "options:\n"
    "  --endpoint URL      the server: its chat-completions URL, or a base URL to which\n"
    "                      /chat/completions is added (http:// or https://)\n"
    "  --model NAME        the judge model\n"
    "  --reference-guided  show the reference answer (\"reference\" field, needed) to the judge\n"
    "  --rubric FILE       instructions replacing the default ones (the verdict format line is\n"
    "                      kept after them)\n"
    "  --output-path OUT   directory for results.json and verdicts.jsonl (default judge_out)\n"
    "  --cache FILE        the reply cache (SQLite; default OUT/judge_cache.sqlite)\n"
    "  --budget-usd X      stop starting requests before the cost would pass X\n"
    "  --price-in P        USD per million prompt tokens (with --budget-usd: needed)\n"
    "  --price-out P       USD per million completion tokens\n"
    "  --concurrency N     requests in flight (default 8)\n"
    "  --timeout S         seconds per try (default 120)\n"
    "  --max-retries R     tries after the first on 429, 5xx, timeouts, dropped connections\n"
    "                      and invalid replies (default 5); then the item has failed\n"
    "  --api-key-env NAME  read the key from $NAME (default OPENAI_API_KEY; none: no key)\n"
    "  --ca-bundle FILE    CA certificates for TLS (verification is always on)\n"
    "  --seed S            the seed sent in every request (default 0; temperature is 0)\n"
    "  --max-tokens N      max_tokens per request (default 1024)\n"
    "  --history FILE      append the run to this history file (SQLite; see assay history);\n"
    "                      default $ASSAY_HISTORY, else OUT/history.sqlite\n"
    "  --json              print results.json to stdout\n"
    "  --help              this text\n"
    "\n"
    "Replies are stored in the cache as they arrive (one transaction each), keyed by the\n"
    "sha256 of the request body; a re-run with the same inputs sends no request, and one after\n"
    "a failure or an interruption (even kill -9) sends only what is missing. The budget uses\n"
    "the replies' usage: a request starts only when the spent cost, the estimates of those in\n"
    "flight and its own estimate (its bytes times the largest tokens-per-byte seen, 1 before\n"
    "any reply; the most completion tokens seen, max_tokens before any) stay within the cap.\n"
    "Retries back off exponentially with jitter (1 s doubling up to 60 s; the environment\n"
    "variables ASSAY_JUDGE_BACKOFF_S and ASSAY_JUDGE_BACKOFF_MAX_S change both, for tests) and\n"
    "wait at least what Retry-After asks (up to 600 s). Replies over 8 MiB, not JSON, without\n"
    "choices[0].message.content or with another content type are errors of that try.\n"
    "Proxies come from http_proxy, https_proxy and no_proxy. The key is sent only in the\n"
    "Authorization header and never printed or written.\n"
    "\n"
    "verdicts.jsonl: one line per judgment with the request body, the judge's full reply (and\n"
    "the reminder's), the verdict or rating, whether it came from the cache, or the error.\n"
    "A progress line is shown on a terminal.\n"
    "\n"
    "exit codes: 0 success (also when the budget stopped the run: results say how far it got),\n"
    "1 items failed after their retries (a re-run retries only those), 2 bad input or usage\n"
    "(also a cache or output directory that cannot be opened or written), 3 internal failure.\n";

/* Where `assay eval --log-samples` keeps each value, in the order tried. */
static const char *const sample_prompt_fields[]    = {"prompt", "arguments", NULL};
static const char *const sample_answer_fields[]    = {"filtered_resps", "resps", NULL};
static const char *const sample_reference_fields[] = {"target", NULL};
static const char        sample_id_field[]         = "doc_id";
static const char        sample_task_field[]       = "task";

static const char *const pair_fields[] = {"id", "prompt", "a", "b", "reference", "category", NULL};

typedef struct ostr {
    char  *s;
    size_t len;
} ostr;

typedef struct jitem {
    char  *id;
    ostr   prompt, a, b, ref, cat;
    size_t line;
} jitem;

enum { J_PENDING = 0, J_DONE, J_FAILED };

typedef struct jjob {
    size_t        item;
    int           side; /* pairwise: 0 = (A,B), 1 = (B,A); pointwise: 0 = a, 1 = b */
    char         *body[2];
    size_t        body_len[2];
    char          key[2][65];
    char         *reply[2]; /* the raw reply bodies, first and reminder */
    size_t        reply_len[2];
    int           cached[2];
    int           state, parsed, tries;
    judge_verdict verdict;
    double        score, est;
    char         *error;
} jjob;

typedef struct judge_run {
    judge_mode    mode;
    int           ref_guided;
    judge_str     rubric;
    judge_params  params;
    jitem        *items;
    size_t        n_items;
    jjob         *jobs;
    size_t        n_jobs;
    judge_cache  *cache;
    judge_client *client;
    /* money */
    double  budget, price_in, price_out; /* budget < 0: none; prices per token */
    double  spent, reserved, cached_cost;
    double  in_per_byte; /* the largest prompt tokens per body byte seen; 0: none yet */
    int64_t out_max;     /* the most completion tokens seen; -1: none yet */
    int64_t tok_in, tok_out, n_usage_missing;
    int     stopped_by_budget;
    /* counts */
    size_t      n_finished, n_cache_hits;
    progress    prog;
    assay_error fatal; /* a failure of our own (cache write) stops the run */
} judge_run;

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int ostr_set(ostr *o, const char *s, size_t n) {
    o->s   = dup_n(s, n);
    o->len = n;
    return o->s ? 0 : -1;
}

static judge_str js(const ostr *o) { return (judge_str){o->s, o->len}; }

static void items_free(jitem *it, size_t n) {
    for (size_t i = 0; it && i < n; i++) {
        free(it[i].id);
        free(it[i].prompt.s);
        free(it[i].a.s);
        free(it[i].b.s);
        free(it[i].ref.s);
        free(it[i].cat.s);
    }
    free(it);
}

static int items_grow(jitem **it, size_t n, size_t *cap) {
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    jitem *ni = realloc(*it, nc * sizeof *ni);
    if (!ni)
        return -1;
    memset(ni + *cap, 0, (nc - *cap) * sizeof *ni);
    *it  = ni;
    *cap = nc;
    return 0;
}

/* An optional string field into o (absent: o stays empty). */
static int take_string(jsonl_reader *r, const cJSON *obj, const char *field, int required, ostr *o,
                       assay_error *err) {
    const char *s;
    size_t      n;
    int         rc = jsonl_get_string(r, obj, field, required, &s, &n, err);
    if (rc || !s)
        return rc;
    if (ostr_set(o, s, n))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    return ASSAY_OK;
}

static int read_pairs(const char *path, judge_mode mode, int ref_guided, jitem **out, size_t *n_out,
                      assay_error *err) {
    jsonl_reader r;
    jitem       *it = NULL;
    size_t       n = 0, cap = 0;
    cJSON       *obj = NULL;
    int          rc, got;
    if ((rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = "{\"id\": \"q1\", \"prompt\": \"...\", \"a\": \"...\", \"b\": \"...\"}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        if (items_grow(&it, n, &cap)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        jitem *x = &it[n++];
        x->line  = r.line;
        if ((rc = jsonl_check_fields(&r, obj, pair_fields, 0, err)))
            goto fail;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
        if (!cJSON_IsString(id) && !cJSON_IsNumber(id)) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: expected an \"id\" (a string or a number)",
                            path, r.line);
            goto fail;
        }
        x->id = cJSON_IsString(id) ? strdup(id->valuestring) : cJSON_PrintUnformatted(id);
        if (!x->id) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        if ((rc = take_string(&r, obj, "prompt", 1, &x->prompt, err)) ||
            (rc = take_string(&r, obj, "a", 1, &x->a, err)) ||
            (rc = take_string(&r, obj, "b", mode == JUDGE_PAIRWISE, &x->b, err)) ||
            (rc = take_string(&r, obj, "reference", ref_guided, &x->ref, err)) ||
            (rc = take_string(&r, obj, "category", 0, &x->cat, err)))
            goto fail;
        cJSON_Delete(obj);
        obj = NULL;
    }
    if (got > 1) {
        rc = got;
        goto fail;
    }
    jsonl_close(&r);
    *out   = it;
    *n_out = n;
    return ASSAY_OK;
fail:
    cJSON_Delete(obj);
    jsonl_close(&r);
    items_free(it, n);
    return rc;
}

/* The first string inside v: v itself, else its first element or member, at most 8 deep
 * (lm-eval keeps a generation as ["text"] or [["text"]] and arguments as
 * {"gen_args_0": {"arg_0": "prompt", ...}}). */
static const cJSON *first_string(const cJSON *v) {
    for (int d = 0; v && d < 8; d++) {
        if (cJSON_IsString(v))
            return v;
        v = (cJSON_IsArray(v) || cJSON_IsObject(v)) ? v->child : NULL;
    }
    return NULL;
}

static int sample_string(const jsonl_reader *r, const cJSON *obj, const char *const *fields,
                         int required, ostr *o, assay_error *err) {
    for (int i = 0; fields[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, fields[i]);
        if (!v)
            continue;
        const cJSON *s = first_string(v);
        if (!s && !required)
            return ASSAY_OK; /* e.g. a multiple-choice task's "target" is the gold index */
        if (!s)
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: field '%s' holds no string", r->path,
                              r->line, fields[i]);
        if (ostr_set(o, s->valuestring, strlen(s->valuestring)))
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return ASSAY_OK;
    }
    if (!required)
        return ASSAY_OK;
    return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: expected a field '%s'%s", r->path, r->line,
                      fields[0], fields[1] ? " (or another name of it)" : "");
}

/* One samples file: id = "task/doc_id" (or doc_id), prompt, answer in .a, reference. */
static int read_samples(const char *path, int ref_guided, jitem **out, size_t *n_out,
                        assay_error *err) {
    jsonl_reader r;
    jitem       *it = NULL;
    size_t       n = 0, cap = 0;
    cJSON       *obj = NULL;
    int          rc, got;
    if ((rc = jsonl_open(&r, path, err)))
        return rc;
    r.shape = "{\"doc_id\": 0, \"task\": \"...\", \"prompt\": \"...\", \"resps\": [[\"...\"]]}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        if (items_grow(&it, n, &cap)) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        jitem  *x = &it[n++];
        int     has;
        int64_t doc;
        x->line = r.line;
        if ((rc = jsonl_get_int(&r, obj, sample_id_field, 0, INT64_MAX / 2, &has, &doc, err)))
            goto fail;
        if (!has) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: expected an integer field '%s'", path,
                            r.line, sample_id_field);
            goto fail;
        }
        if ((rc = take_string(&r, obj, sample_task_field, 0, &x->cat, err)) ||
            (rc = sample_string(&r, obj, sample_prompt_fields, 1, &x->prompt, err)) ||
            (rc = sample_string(&r, obj, sample_answer_fields, 1, &x->a, err)) ||
            (rc = sample_string(&r, obj, sample_reference_fields, ref_guided, &x->ref, err)))
            goto fail;
        char id[512];
        if (x->cat.s)
            snprintf(id, sizeof id, "%.400s/%lld", x->cat.s, (long long)doc);
        else
            snprintf(id, sizeof id, "%lld", (long long)doc);
        if (!(x->id = strdup(id))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto fail;
        }
        cJSON_Delete(obj);
        obj = NULL;
    }
    if (got > 1) {
        rc = got;
        goto fail;
    }
    jsonl_close(&r);
    *out   = it;
    *n_out = n;
    return ASSAY_OK;
fail:
    cJSON_Delete(obj);
    jsonl_close(&r);
    items_free(it, n);
    return rc;
}

static int cmp_item_id(const void *x, const void *y) {
    return strcmp(((const jitem *)x)->id, ((const jitem *)y)->id);
}

/* Joins B's answers onto A's items by id; both files must hold the same documents. */
static int join_samples(const char *pa, const char *pb, jitem *a, size_t na, jitem *b, size_t nb,
                        assay_error *err) {
    qsort(b, nb, sizeof *b, cmp_item_id);
    for (size_t i = 1; i < nb; i++)
        if (!strcmp(b[i - 1].id, b[i].id))
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: document %s appears twice", pb,
                              b[i].line, b[i].id);
    for (size_t i = 0; i < na; i++) {
        jitem *m = bsearch(&a[i], b, nb, sizeof *b, cmp_item_id);
        if (!m)
            return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: document %s is not in %s", pa, a[i].line,
                              a[i].id, pb);
        a[i].b = m->a;
        m->a   = (ostr){0};
    }
    if (na != nb) {
        for (size_t i = 0; i < nb; i++)
            if (b[i].a.s)
                return assay_fail(err, ASSAY_EFORMAT, "%s:%zu: document %s is not in %s", pb,
                                  b[i].line, b[i].id, pa);
    }
    return ASSAY_OK;
}

static int check_unique_ids(const char *path, const jitem *it, size_t n, assay_error *err) {
    jitem *s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    memcpy(s, it, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_item_id);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(s[i - 1].id, s[i].id)) {
            size_t l1 = s[i - 1].line, l2 = s[i].line;
            int rc = assay_fail(err, ASSAY_EFORMAT, "%s:%zu: id '%.200s' already used on line %zu",
                                path, l1 > l2 ? l1 : l2, s[i].id, l1 < l2 ? l1 : l2);
            free(s);
            return rc;
        }
    free(s);
    return ASSAY_OK;
}

/* ---- the run ---------------------------------------------------------------------------- */

static double cost_of(const judge_run *jr, int64_t in, int64_t out) {
    return (double)in * jr->price_in + (double)out * jr->price_out;
}

static double estimate(const judge_run *jr, size_t body_len) {
    double in  = (double)body_len * (jr->in_per_byte > 0 ? jr->in_per_byte : 1.0);
    double out = jr->out_max >= 0 ? (double)jr->out_max : (double)jr->params.max_tokens;
    return in * jr->price_in + out * jr->price_out;
}

static int build_body(judge_run *jr, jjob *j, int stage, judge_str first_reply, assay_error *err) {
    const jitem    *x    = &jr->items[j->item];
    int             pair = jr->mode == JUDGE_PAIRWISE;
    judge_prompt_in in   = {.mode             = jr->mode,
                            .reference_guided = jr->ref_guided,
                            .rubric           = jr->rubric,
                            .question         = js(&x->prompt),
                            .first            = pair ? (j->side ? js(&x->b) : js(&x->a))
                                                     : (j->side ? js(&x->b) : js(&x->a)),
                            .second    = pair ? (j->side ? js(&x->a) : js(&x->b)) : (judge_str){0},
                            .reference = js(&x->ref)};
    judge_prompt    pr;
    int             rc = judge_prompt_build(&in, &pr, err);
    if (rc)
        return rc;
    j->body[stage] = judge_body_build(&jr->params, &pr, first_reply, &j->body_len[stage]);
    judge_prompt_free(&pr);
    if (!j->body[stage])
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, j->body[stage], j->body_len[stage]);
    sha256_hex(&c, j->key[stage]);
    return ASSAY_OK;
}

static void job_release(judge_run *jr, jjob *j) {
    jr->reserved -= j->est;
    if (jr->reserved < 0)
        jr->reserved = 0;
    j->est = 0;
}

static void job_finish(judge_run *jr, jjob *j, int state) {
    j->state = state;
    job_release(jr, j);
    jr->n_finished++;
    progress_update(&jr->prog, (int64_t)jr->n_finished);
}

static int handle_reply(judge_run *jr, size_t jid, int stage, const char *body, size_t len,
                        int from_cache, char *msg, size_t msg_cap);

/* The next request of a job: from the cache when it is there, else queued for the client. */
static int job_request(judge_run *jr, size_t jid, int stage, assay_error *err) {
    jjob  *j     = &jr->jobs[jid];
    char  *reply = NULL;
    size_t len   = 0;
    int    rc    = judge_cache_get(jr->cache, j->key[stage], &reply, &len, err);
    if (rc > 1)
        return rc;
    if (rc == 1) {
        char msg[256];
        int  bad = handle_reply(jr, jid, stage, reply, len, 1, msg, sizeof msg);
        free(reply);
        if (jr->fatal.code) {
            *err = jr->fatal;
            return err->code;
        }
        if (!bad)
            return ASSAY_OK;
        /* a cached reply that no longer parses is asked for again */
    }
    return judge_client_submit(jr->client, jid * 2 + (size_t)stage, j->body[stage],
                               j->body_len[stage], err);
}

static int handle_reply(judge_run *jr, size_t jid, int stage, const char *body, size_t len,
                        int from_cache, char *msg, size_t msg_cap) {
    jjob       *j = &jr->jobs[jid];
    judge_reply rp;
    assay_error e = {0};
    if (judge_reply_parse(body, len, &rp, &e)) {
        snprintf(msg, msg_cap, "%s", e.msg);
        return 1;
    }
    if (!from_cache && judge_cache_put(jr->cache, j->key[stage], j->body[stage], j->body_len[stage],
                                       body, len, &e)) {
        if (!jr->fatal.code)
            jr->fatal = e;
    }
    int64_t in = rp.prompt_tokens, out = rp.completion_tokens;
    if (rp.has_usage) {
        if (j->body_len[stage] > 0 && (double)in / (double)j->body_len[stage] > jr->in_per_byte)
            jr->in_per_byte = (double)in / (double)j->body_len[stage];
        if (out > jr->out_max)
            jr->out_max = out;
    }
    double c = rp.has_usage ? cost_of(jr, in, out) : estimate(jr, j->body_len[stage]);
    if (from_cache) {
        jr->cached_cost += c;
        jr->n_cache_hits++;
    } else {
        jr->spent += c;
        jr->tok_in += in;
        jr->tok_out += out;
        jr->n_usage_missing += !rp.has_usage;
    }
    free(j->reply[stage]);
    j->reply[stage]     = dup_n(body, len);
    j->reply_len[stage] = j->reply[stage] ? len : 0;
    j->cached[stage]    = from_cache;
    int ok;
    if (jr->mode == JUDGE_PAIRWISE) {
        j->verdict = judge_parse_verdict(rp.content, rp.content_len);
        ok         = j->verdict != JUDGE_V_NONE;
    } else {
        ok = judge_parse_score(rp.content, rp.content_len, &j->score);
    }
    if (ok || stage == 1) {
        j->parsed = ok;
        job_finish(jr, j, J_DONE);
        judge_reply_free(&rp);
        return 0;
    }
    /* no verdict: one more try with the reply and a reminder */
    assay_error be = {0};
    job_release(jr, j);
    int rc = build_body(jr, j, 1, (judge_str){rp.content, rp.content_len}, &be);
    judge_reply_free(&rp);
    if (!rc)
        rc = job_request(jr, jid, 1, &be);
    if (rc && !jr->fatal.code)
        jr->fatal = be;
    return 0;
}

static int hook_may_start(void *user, size_t id) {
    judge_run *jr = user;
    jjob      *j  = &jr->jobs[id / 2];
    if (jr->fatal.code)
        return 1;
    double est = estimate(jr, j->body_len[id % 2]);
    if (jr->budget >= 0 && jr->spent + jr->reserved + est > jr->budget) {
        jr->stopped_by_budget = 1;
        return 1;
    }
    j->est = est;
    jr->reserved += est;
    return 0;
}

static int hook_on_reply(void *user, size_t id, const char *body, size_t len, char *msg,
                         size_t msg_cap) {
    judge_run *jr = user;
    jr->jobs[id / 2].tries++;
    return handle_reply(jr, id / 2, (int)(id % 2), body, len, 0, msg, msg_cap);
}

static void hook_on_fail(void *user, size_t id, const char *msg, int tries) {
    judge_run *jr = user;
    jjob      *j  = &jr->jobs[id / 2];
    char       buf[640];
    snprintf(buf, sizeof buf, "%s after %d tr%s%s", msg, tries, tries == 1 ? "y" : "ies",
             id % 2 ? " (the reminder request)" : "");
    j->tries = tries;
    free(j->error);
    j->error = strdup(buf);
    job_finish(jr, j, J_FAILED);
}

/* ---- results ----------------------------------------------------------------------------- */

static cJSON *num_or_null(double v) {
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *reply_json(const char *body, size_t len) {
    cJSON *j = body ? cJSON_ParseWithLength(body, len) : NULL;
    return j ? j : cJSON_CreateNull();
}

static const char *verdict_name(judge_verdict v) {
    return v == JUDGE_V_A ? "A" : v == JUDGE_V_B ? "B" : v == JUDGE_V_C ? "C" : NULL;
}

static cJSON *job_json(const judge_run *jr, const jjob *j) {
    const jitem *x    = &jr->items[j->item];
    int          pair = jr->mode == JUDGE_PAIRWISE;
    cJSON       *o    = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", x->id);
    if (x->cat.s)
        cJSON_AddItemToObject(o, "category", jsonl_string_create(x->cat.s, x->cat.len));
    if (pair)
        cJSON_AddStringToObject(o, "order", j->side ? "BA" : "AB");
    else
        cJSON_AddStringToObject(o, "answer", j->side ? "b" : "a");
    const char *status = j->state == J_FAILED    ? "failed"
                         : j->state == J_PENDING ? "not_judged"
                                                 : (j->parsed ? "ok" : "unparsed");
    cJSON_AddStringToObject(o, "status", status);
    if (j->state == J_DONE && pair) {
        const char *v = verdict_name(j->verdict);
        cJSON_AddItemToObject(o, "verdict", v ? cJSON_CreateString(v) : cJSON_CreateNull());
        /* the verdict in terms of the inputs: in (B,A), position A holds b */
        const char *w = j->verdict == JUDGE_V_C                       ? "tie"
                        : j->verdict == JUDGE_V_NONE                  ? NULL
                        : (j->verdict == JUDGE_V_A) != (j->side == 1) ? "a"
                                                                      : "b";
        cJSON_AddItemToObject(o, "preferred", w ? cJSON_CreateString(w) : cJSON_CreateNull());
    } else if (j->state == J_DONE) {
        cJSON_AddItemToObject(o, "score",
                              j->parsed ? cJSON_CreateNumber(j->score) : cJSON_CreateNull());
    }
    if (j->error)
        cJSON_AddStringToObject(o, "error", j->error);
    cJSON_AddBoolToObject(o, "cached",
                          j->reply[0] && j->cached[0] && (!j->reply[1] || j->cached[1]));
    cJSON_AddStringToObject(o, "request_sha256", j->key[0]);
    cJSON_AddItemToObject(o, "request", reply_json(j->body[0], j->body_len[0]));
    cJSON_AddItemToObject(o, "reply", reply_json(j->reply[0], j->reply_len[0]));
    if (j->body[1]) {
        cJSON_AddStringToObject(o, "reminder_request_sha256", j->key[1]);
        cJSON_AddItemToObject(o, "reminder_request", reply_json(j->body[1], j->body_len[1]));
        cJSON_AddItemToObject(o, "reminder_reply", reply_json(j->reply[1], j->reply_len[1]));
    }
    return o;
}

static int write_verdicts(const judge_run *jr, const char *path, assay_error *err) {
    atomic_file af;
    int         rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < jr->n_jobs; i++) {
        cJSON *o    = job_json(jr, &jr->jobs[i]);
        char  *line = o ? jsonl_print(o, 0) : NULL;
        cJSON_Delete(o);
        if (!line) {
            atomic_abort(&af);
            return assay_fail(err, ASSAY_ENOMEM, "out of memory");
        }
        int bad = fputs(line, af.fp) < 0 || fputc('\n', af.fp) < 0;
        free(line);
        if (bad) {
            atomic_abort(&af);
            return assay_fail(err, ASSAY_EIO, "%s: write failed", path);
        }
    }
    return atomic_commit(&af, err);
}

/* The endpoint as results show it: no user, password or query (they may carry secrets). */
static char *endpoint_public(const char *url) {
    CURLU *u   = curl_url();
    char  *out = NULL, *s = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
        curl_url_set(u, CURLUPART_USER, NULL, 0);
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
        curl_url_set(u, CURLUPART_QUERY, NULL, 0);
        curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
        if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK)
            out = strdup(s);
    }
    curl_free(s);
    curl_url_cleanup(u);
    return out;
}

typedef struct point_side {
    double sum;
    size_t n, unparsed;
    size_t hist[11];
} point_side;

static cJSON *pairwise_json(const judge_run *jr, judge_pair_stats *st, assay_error *err) {
    size_t         n  = 0;
    judge_verdict *ab = malloc((jr->n_items ? jr->n_items : 1) * sizeof *ab);
    judge_verdict *ba = malloc((jr->n_items ? jr->n_items : 1) * sizeof *ba);
    cJSON         *o  = NULL;
    if (!ab || !ba)
        goto oom;
    for (size_t i = 0; i < jr->n_items; i++) {
        const jjob *x = &jr->jobs[2 * i], *y = &jr->jobs[2 * i + 1];
        if (x->state != J_DONE || y->state != J_DONE)
            continue;
        ab[n] = x->parsed ? x->verdict : JUDGE_V_NONE;
        ba[n] = y->parsed ? y->verdict : JUDGE_V_NONE;
        n++;
    }
    if (judge_pair_stats_compute(ab, ba, n, JUDGE_RESAMPLES, JUDGE_BOOT_SEED, st))
        goto oom;
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "pairs", (double)st->n_pairs);
    cJSON_AddNumberToObject(o, "wins", (double)st->wins);
    cJSON_AddNumberToObject(o, "losses", (double)st->losses);
    cJSON_AddNumberToObject(o, "ties", (double)st->ties);
    cJSON_AddItemToObject(o, "win_rate", num_or_null(st->win_rate));
    cJSON *ci = cJSON_AddArrayToObject(o, "win_rate_ci95");
    cJSON_AddItemToArray(ci, num_or_null(st->ci_lo));
    cJSON_AddItemToArray(ci, num_or_null(st->ci_hi));
    cJSON *bs = cJSON_AddObjectToObject(o, "bootstrap");
    cJSON_AddNumberToObject(bs, "resamples", JUDGE_RESAMPLES);
    cJSON_AddNumberToObject(bs, "seed", JUDGE_BOOT_SEED);
    cJSON_AddStringToObject(bs, "method", "percentile over pairs");
    cJSON_AddItemToObject(o, "position_consistency", num_or_null(st->consistency));
    cJSON_AddNumberToObject(o, "consistent_pairs", (double)st->n_consistent);
    cJSON_AddNumberToObject(o, "pairs_both_parsed", (double)st->n_both_parsed);
    cJSON_AddItemToObject(o, "first_position_rate", num_or_null(st->first_position_rate));
    cJSON_AddNumberToObject(o, "decisive_verdicts", (double)st->n_decisive);
    cJSON_AddNumberToObject(o, "unparsed_verdicts", (double)st->n_unparsed_verdicts);
    free(ab);
    free(ba);
    return o;
oom:
    free(ab);
    free(ba);
    assay_fail(err, ASSAY_ENOMEM, "out of memory");
    return NULL;
}

static cJSON *side_json(const point_side *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rated", (double)s->n);
    cJSON_AddNumberToObject(o, "unparsed", (double)s->unparsed);
    cJSON_AddItemToObject(o, "mean", num_or_null(s->n ? s->sum / (double)s->n : NAN));
    cJSON *h = cJSON_AddObjectToObject(o, "distribution");
    for (int k = 1; k <= 10; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        cJSON_AddNumberToObject(h, key, (double)s->hist[k]);
    }
    return o;
}

static void side_add(point_side *s, const jjob *j) {
    if (j->state != J_DONE)
        return;
    if (!j->parsed) {
        s->unparsed++;
        return;
    }
    s->sum += j->score;
    s->n++;
    int k = (int)floor(j->score + 0.5);
    s->hist[k < 1 ? 1 : k > 10 ? 10 : k]++;
}

static cJSON *pointwise_json(const judge_run *jr, assay_error *err) {
    point_side all[2] = {{0}};
    size_t     n_diff = 0;
    double    *d      = malloc((jr->n_items ? jr->n_items : 1) * sizeof *d);
    if (!d) {
        assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return NULL;
    }
    cJSON *o   = cJSON_CreateObject();
    cJSON *cat = cJSON_CreateObject();
    for (size_t i = 0; i < jr->n_jobs; i++) {
        const jjob  *j = &jr->jobs[i];
        const jitem *x = &jr->items[j->item];
        side_add(&all[j->side], j);
        /* per category: sum and count kept in the output object while going */
        if (j->state != J_DONE || !j->parsed)
            continue;
        const char *cn = x->cat.s ? x->cat.s : "(none)";
        cJSON      *c  = cJSON_GetObjectItemCaseSensitive(cat, cn);
        if (!c) {
            c = cJSON_AddObjectToObject(cat, cn);
            cJSON_AddNumberToObject(c, "sum_a", 0);
            cJSON_AddNumberToObject(c, "n_a", 0);
            cJSON_AddNumberToObject(c, "sum_b", 0);
            cJSON_AddNumberToObject(c, "n_b", 0);
        }
        cJSON *sum = cJSON_GetObjectItemCaseSensitive(c, j->side ? "sum_b" : "sum_a");
        cJSON *cnt = cJSON_GetObjectItemCaseSensitive(c, j->side ? "n_b" : "n_a");
        cJSON_SetNumberValue(sum, sum->valuedouble + j->score);
        cJSON_SetNumberValue(cnt, cnt->valuedouble + 1);
    }
    /* an item's jobs are adjacent, a before b */
    for (size_t k = 0; k + 1 < jr->n_jobs; k++) {
        const jjob *a = &jr->jobs[k], *b = &jr->jobs[k + 1];
        if (a->side == 0 && b->item == a->item && a->state == J_DONE && b->state == J_DONE &&
            a->parsed && b->parsed)
            d[n_diff++] = b->score - a->score;
    }
    cJSON_AddItemToObject(o, "a", side_json(&all[0]));
    cJSON_AddItemToObject(o, "b", side_json(&all[1]));
    cJSON *bycat = cJSON_AddObjectToObject(o, "by_category");
    for (cJSON *c = cat->child; c; c = c->next) {
        cJSON *m  = cJSON_AddObjectToObject(bycat, c->string);
        double na = cJSON_GetObjectItemCaseSensitive(c, "n_a")->valuedouble;
        double nb = cJSON_GetObjectItemCaseSensitive(c, "n_b")->valuedouble;
        cJSON_AddItemToObject(
            m, "mean_a",
            num_or_null(na ? cJSON_GetObjectItemCaseSensitive(c, "sum_a")->valuedouble / na : NAN));
        cJSON_AddItemToObject(
            m, "mean_b",
            num_or_null(nb ? cJSON_GetObjectItemCaseSensitive(c, "sum_b")->valuedouble / nb : NAN));
        cJSON_AddNumberToObject(m, "rated_a", na);
        cJSON_AddNumberToObject(m, "rated_b", nb);
    }
    cJSON_Delete(cat);
    boot_ci ci = {0};
    double  s  = 0;
    for (size_t i = 0; i < n_diff; i++)
        s += d[i];
    int rc = boot_ci_mean(d, n_diff, JUDGE_RESAMPLES, 0.95, JUDGE_BOOT_SEED, &ci);
    free(d);
    if (rc) {
        cJSON_Delete(o);
        assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return NULL;
    }
    cJSON_AddNumberToObject(o, "paired", (double)n_diff);
    cJSON_AddItemToObject(o, "mean_diff_b_minus_a", num_or_null(n_diff ? s / (double)n_diff : NAN));
    cJSON *cj = cJSON_AddArrayToObject(o, "mean_diff_ci95");
    cJSON_AddItemToArray(cj, num_or_null(ci.lo));
    cJSON_AddItemToArray(cj, num_or_null(ci.hi));
    return o;
}

typedef struct judge_cli {
    const char *pairs, *in_a, *in_b, *endpoint, *model, *mode, *rubric_path, *out, *cache;
    const char *history;
    const char *budget, *price_in, *price_out, *timeout, *key_env, *ca_bundle;
    int64_t     concurrency, max_retries, seed, max_tokens;
    int         ref_guided;
} judge_cli;

static int parse_money(const char *opt, const char *val, double *out, assay_error *err) {
    char *end = NULL;
    *out      = strtod(val, &end);
    if (!end || *end || end == val || !(*out >= 0) || *out > 1e12)
        return assay_fail(err, ASSAY_EINVAL, "%s '%s': expected a number >= 0", opt, val);
    return ASSAY_OK;
}

static double env_seconds(const char *name, double dflt) {
    const char *v = getenv(name);
    char       *end;
    double      d = v ? strtod(v, &end) : dflt;
    return v && *end == '\0' && d >= 0 && d <= 3600 ? d : dflt;
}

static cJSON *results_json(const judge_run *jr, const judge_cli *o, const char *prompt_hash,
                           size_t n_failed, size_t n_pending, double wall, judge_client_counts cnt,
                           assay_error *err) {
    cJSON *r  = cJSON_CreateObject();
    cJSON *j  = cJSON_AddObjectToObject(r, "judge");
    char  *ep = endpoint_public(o->endpoint);
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "endpoint", ep ? ep : "(unparsable URL)");
    free(ep);
    cJSON_AddStringToObject(j, "mode", jr->mode == JUDGE_PAIRWISE ? "pairwise" : "pointwise");
    cJSON_AddBoolToObject(j, "reference_guided", jr->ref_guided);
    if (o->rubric_path)
        cJSON_AddStringToObject(j, "rubric", o->rubric_path);
    else
        cJSON_AddNullToObject(j, "rubric");
    cJSON_AddStringToObject(j, "prompt_sha256", prompt_hash);
    cJSON_AddNumberToObject(j, "temperature", 0);
    cJSON_AddNumberToObject(j, "seed", (double)jr->params.seed);
    cJSON_AddNumberToObject(j, "max_tokens", jr->params.max_tokens);
    cJSON *in = cJSON_AddObjectToObject(r, "inputs");
    if (o->pairs)
        cJSON_AddStringToObject(in, "pairs", o->pairs);
    else {
        cJSON_AddStringToObject(in, "a", o->in_a);
        cJSON_AddStringToObject(in, "b", o->in_b);
    }
    cJSON_AddNumberToObject(r, "items", (double)jr->n_items);
    cJSON_AddNumberToObject(r, "judgments", (double)jr->n_jobs);
    cJSON_AddNumberToObject(r, "judgments_done", (double)(jr->n_jobs - n_failed - n_pending));
    cJSON_AddNumberToObject(r, "judgments_failed", (double)n_failed);
    cJSON_AddNumberToObject(r, "judgments_not_judged", (double)n_pending);
    cJSON_AddBoolToObject(r, "complete", n_failed == 0 && n_pending == 0);
    cJSON_AddBoolToObject(r, "stopped_by_budget", jr->stopped_by_budget);
    cJSON *rq = cJSON_AddObjectToObject(r, "requests");
    cJSON_AddNumberToObject(rq, "sent", (double)cnt.tries);
    cJSON_AddNumberToObject(rq, "retries", (double)cnt.retries);
    cJSON_AddNumberToObject(rq, "from_cache", (double)jr->n_cache_hits);
    cJSON *c = cJSON_AddObjectToObject(r, "cost");
    cJSON_AddNumberToObject(c, "usd", jr->spent);
    cJSON_AddNumberToObject(c, "usd_cached_replies", jr->cached_cost);
    cJSON_AddNumberToObject(c, "prompt_tokens", (double)jr->tok_in);
    cJSON_AddNumberToObject(c, "completion_tokens", (double)jr->tok_out);
    cJSON_AddNumberToObject(c, "replies_without_usage", (double)jr->n_usage_missing);
    cJSON_AddNumberToObject(c, "price_in_per_mtok", jr->price_in * 1e6);
    cJSON_AddNumberToObject(c, "price_out_per_mtok", jr->price_out * 1e6);
    if (jr->budget >= 0)
        cJSON_AddNumberToObject(c, "budget_usd", jr->budget);
    else
        cJSON_AddNullToObject(c, "budget_usd");
    cJSON_AddNumberToObject(r, "wall_s", wall);
    if (jr->mode == JUDGE_PAIRWISE) {
        judge_pair_stats st;
        cJSON           *p = pairwise_json(jr, &st, err);
        if (!p) {
            cJSON_Delete(r);
            return NULL;
        }
        cJSON_AddItemToObject(r, "pairwise", p);
    } else {
        cJSON *p = pointwise_json(jr, err);
        if (!p) {
            cJSON_Delete(r);
            return NULL;
        }
        cJSON_AddItemToObject(r, "pointwise", p);
    }
    return r;
}

/* The run as a history record (harness/history.h reads lm-eval's "results" layout): task
 * "judge_pairwise" or "judge_pointwise", the rates or mean ratings, the judge as the device. */
static int judge_record_history(const char *hist, const cJSON *res, const judge_cli *o,
                                assay_error *err) {
    cJSON       *h = cJSON_CreateObject(), *rs = cJSON_AddObjectToObject(h, "results");
    cJSON       *as = cJSON_AddObjectToObject(h, "assay");
    const cJSON *pw = cJSON_GetObjectItemCaseSensitive(res, "pairwise");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(res, "pointwise");
    cJSON       *t  = cJSON_AddObjectToObject(rs, pw ? "judge_pairwise" : "judge_pointwise");
    static const char *const pw_keys[] = {"win_rate", "position_consistency",
                                          "first_position_rate"};
    for (size_t k = 0; pw && k < sizeof pw_keys / sizeof *pw_keys; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(pw, pw_keys[k]);
        char         key[64];
        snprintf(key, sizeof key, "%s,none", pw_keys[k]);
        if (cJSON_IsNumber(v))
            cJSON_AddNumberToObject(t, key, v->valuedouble);
    }
    for (int side = 0; pt && side < 2; side++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(pt, side ? "b" : "a"), "mean");
        if (cJSON_IsNumber(v))
            cJSON_AddNumberToObject(t, side ? "mean_rating_b,none" : "mean_rating_a,none",
                                    v->valuedouble);
    }
    char dev[300];
    snprintf(dev, sizeof dev, "judge:%.250s", o->model ? o->model : "?");
    cJSON_AddStringToObject(as, "version", ASSAY_VERSION);
    cJSON_AddStringToObject(as, "device", dev);
    const cJSON *usd =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(res, "cost"), "usd");
    if (cJSON_IsNumber(usd))
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(as, "cost"), "cost_per_run",
                                usd->valuedouble);
    int rc = history_record_run(hist, "judge", h, err);
    cJSON_Delete(h);
    return rc;
}

static void run_free(judge_run *jr) {
    for (size_t i = 0; jr->jobs && i < jr->n_jobs; i++) {
        for (int s = 0; s < 2; s++) {
            free(jr->jobs[i].body[s]);
            free(jr->jobs[i].reply[s]);
        }
        free(jr->jobs[i].error);
    }
    free(jr->jobs);
    items_free(jr->items, jr->n_items);
    judge_client_free(jr->client);
    judge_cache_close(jr->cache);
}

/* The URL requests go to: a base URL gets /chat/completions. */
static char *endpoint_url(const char *ep) {
    size_t n   = strlen(ep);
    char  *url = malloc(n + 32);
    if (!url)
        return NULL;
    memcpy(url, ep, n + 1);
    if (!str_ends_with(url, "/chat/completions")) {
        while (n > 0 && url[n - 1] == '/')
            url[--n] = '\0';
        strcat(url, "/chat/completions");
    }
    return url;
}

static int judge_main(judge_cli *o, int json, assay_error *err) {
    judge_run jr     = {0};
    char     *rubric = NULL, *url = NULL, *text = NULL;
    size_t    rubric_len = 0;
    int       rc;
    double    t0 = time_now();
    char      out_dir[4096], path[4200], cache_path[4200];

    jr.mode       = o->mode && !strcmp(o->mode, "pointwise") ? JUDGE_POINTWISE : JUDGE_PAIRWISE;
    jr.ref_guided = o->ref_guided;
    jr.budget     = -1;
    jr.out_max    = -1;
    jr.params     = (judge_params){jr.mode, o->model, o->seed, (int)o->max_tokens};
    double pin = 0, pout = 0;
    if (o->budget && (rc = parse_money("--budget-usd", o->budget, &jr.budget, err)))
        goto done;
    if (o->price_in && (rc = parse_money("--price-in", o->price_in, &pin, err)))
        goto done;
    if (o->price_out && (rc = parse_money("--price-out", o->price_out, &pout, err)))
        goto done;
    if (o->budget && !o->price_in && !o->price_out) {
        rc = assay_fail(err, ASSAY_EINVAL, "--budget-usd needs --price-in and/or --price-out");
        goto done;
    }
    jr.price_in    = pin / 1e6;
    jr.price_out   = pout / 1e6;
    double timeout = 120;
    if (o->timeout && ((rc = parse_money("--timeout", o->timeout, &timeout, err)) ||
                       !(timeout > 0 && timeout <= 86400))) {
        rc = assay_fail(err, ASSAY_EINVAL, "--timeout '%s': expected seconds in (0, 86400]",
                        o->timeout);
        goto done;
    }
    if (strncmp(o->endpoint, "http://", 7) && strncmp(o->endpoint, "https://", 8)) {
        rc = assay_fail(err, ASSAY_EINVAL, "--endpoint '%s': expected an http:// or https:// URL",
                        o->endpoint);
        goto done;
    }
    const char *key_env = o->key_env ? o->key_env : "OPENAI_API_KEY";
    const char *key     = getenv(key_env);
    if (o->key_env && (!key || !*key)) {
        rc = assay_fail(err, ASSAY_EINVAL, "--api-key-env %s: the variable is not set", key_env);
        goto done;
    }
    if (key && !*key)
        key = NULL;
    if (o->rubric_path) {
        if ((rc = file_read_capped(o->rubric_path, (size_t)1 << 20, &rubric, &rubric_len, err)))
            goto done;
        jr.rubric = (judge_str){rubric, rubric_len};
    }
    /* inputs */
    if (o->pairs) {
        if ((rc = read_pairs(o->pairs, jr.mode, jr.ref_guided, &jr.items, &jr.n_items, err)) ||
            (rc = check_unique_ids(o->pairs, jr.items, jr.n_items, err)))
            goto done;
    } else {
        jitem *b  = NULL;
        size_t nb = 0;
        if ((rc = read_samples(o->in_a, jr.ref_guided, &jr.items, &jr.n_items, err)) ||
            (rc = check_unique_ids(o->in_a, jr.items, jr.n_items, err)) ||
            (rc = read_samples(o->in_b, 0, &b, &nb, err)))
            goto done;
        rc = join_samples(o->in_a, o->in_b, jr.items, jr.n_items, b, nb, err);
        items_free(b, nb);
        if (rc)
            goto done;
    }
    if (jr.n_items == 0) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no items to judge", o->pairs ? o->pairs : o->in_a);
        goto done;
    }
    snprintf(out_dir, sizeof out_dir, "%s", o->out ? o->out : "judge_out");
    if ((rc = eval_check_output_dir(out_dir, err)))
        goto done;
    /* the history: --history, else $ASSAY_HISTORY, else OUT/history.sqlite; checked now */
    char hist[4200];
    if (o->history && *o->history)
        snprintf(hist, sizeof hist, "%s", o->history);
    else if (getenv("ASSAY_HISTORY") && *getenv("ASSAY_HISTORY"))
        snprintf(hist, sizeof hist, "%s", getenv("ASSAY_HISTORY"));
    else
        path_join(hist, sizeof hist, out_dir, "history.sqlite");
    if ((rc = history_check(hist, err)))
        goto done;
    if (o->cache)
        snprintf(cache_path, sizeof cache_path, "%s", o->cache);
    else
        snprintf(cache_path, sizeof cache_path, "%s/judge_cache.sqlite", out_dir);
    if ((rc = judge_cache_open(cache_path, &jr.cache, err)))
        goto done;
    if (!(url = endpoint_url(o->endpoint))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    judge_client_cfg cfg = {.url           = url,
                            .api_key       = key,
                            .ca_bundle     = o->ca_bundle,
                            .concurrency   = (int)o->concurrency,
                            .timeout_s     = timeout,
                            .max_retries   = (int)o->max_retries,
                            .backoff_s     = env_seconds("ASSAY_JUDGE_BACKOFF_S", 1.0),
                            .backoff_max_s = env_seconds("ASSAY_JUDGE_BACKOFF_MAX_S", 60.0),
                            .reply_max     = JUDGE_REPLY_MAX};
    if (!(jr.client = judge_client_new(&cfg, err))) {
        rc = err->code;
        goto done;
    }
    /* jobs: pairwise (A,B) then (B,A) per item; pointwise a then b */
    jr.jobs = calloc(jr.n_items * 2, sizeof *jr.jobs);
    if (!jr.jobs) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < jr.n_items; i++)
        for (int s = 0; s < 2; s++) {
            if (jr.mode == JUDGE_POINTWISE && s == 1 && !jr.items[i].b.s)
                continue;
            jjob *j = &jr.jobs[jr.n_jobs++];
            j->item = i;
            j->side = s;
            if ((rc = build_body(&jr, j, 0, (judge_str){0}, err)))
                goto done;
        }
    progress_init(&jr.prog, "judge", "judgments", (int64_t)jr.n_jobs);
    for (size_t i = 0; i < jr.n_jobs; i++)
        if ((rc = job_request(&jr, i, 0, err)))
            goto done;
    judge_client_hooks hooks = {&jr, hook_may_start, hook_on_reply, hook_on_fail};
    if ((rc = judge_client_run(jr.client, &hooks, err)))
        goto done;
    progress_finish(&jr.prog);
    if (jr.fatal.code) {
        *err = jr.fatal;
        rc   = err->code;
        goto done;
    }
    size_t n_failed = 0, n_pending = 0;
    for (size_t i = 0; i < jr.n_jobs; i++) {
        n_failed += jr.jobs[i].state == J_FAILED;
        n_pending += jr.jobs[i].state == J_PENDING;
    }
    char prompt_hash[65];
    judge_prompt_hash(jr.mode, jr.ref_guided, jr.rubric, prompt_hash);
    cJSON *res = results_json(&jr, o, prompt_hash, n_failed, n_pending, time_now() - t0,
                              judge_client_get_counts(jr.client), err);
    if (!res) {
        rc = err->code;
        goto done;
    }
    text = cJSON_Print(res);
    if (!text) {
        cJSON_Delete(res);
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    path_join(path, sizeof path, out_dir, "verdicts.jsonl");
    if ((rc = write_verdicts(&jr, path, err))) {
        cJSON_Delete(res);
        goto done;
    }
    path_join(path, sizeof path, out_dir, "results.json");
    if ((rc = file_write_atomic(path, text, strlen(text), err))) {
        cJSON_Delete(res);
        goto done;
    }
    if (hist[0] && (rc = judge_record_history(hist, res, o, err))) {
        cJSON_Delete(res);
        goto done;
    }
    if (json) {
        printf("%s\n", text);
    } else if (jr.mode == JUDGE_PAIRWISE) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(res, "pairwise");
        printf("pairs judged: %.0f  B wins %.0f, losses %.0f, ties %.0f\n",
               cJSON_GetObjectItemCaseSensitive(p, "pairs")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(p, "wins")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(p, "losses")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(p, "ties")->valuedouble);
        char *wr = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(p, "win_rate"));
        char *ci = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(p, "win_rate_ci95"));
        char *pc =
            cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(p, "position_consistency"));
        char *fp =
            cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(p, "first_position_rate"));
        printf("win rate of B: %s  95%% CI %s\nposition consistency: %s  first-position rate: %s\n",
               wr ? wr : "?", ci ? ci : "?", pc ? pc : "?", fp ? fp : "?");
        free(wr);
        free(ci);
        free(pc);
        free(fp);
    } else {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(res, "pointwise");
        char  *a = cJSON_PrintUnformatted(
             cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "a"), "mean"));
        char *b = cJSON_PrintUnformatted(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "b"), "mean"));
        printf("mean rating: a %s, b %s\n", a ? a : "?", b ? b : "?");
        free(a);
        free(b);
    }
    cJSON_Delete(res);
    judge_client_counts cnt = judge_client_get_counts(jr.client);
    fprintf(stderr,
            "judge: %zu judgments (%zu from the cache, %ld HTTP requests, %ld retries), %zu "
            "failed, cost $%.6f, %.1f s\n",
            jr.n_jobs, jr.n_cache_hits, cnt.tries, cnt.retries, n_failed, jr.spent,
            time_now() - t0);
    if (jr.stopped_by_budget)
        fprintf(stderr,
                "judge: stopped by the budget of $%.6f: %zu of %zu judgments done, %zu not "
                "started (a re-run with a larger --budget-usd continues from the cache)\n",
                jr.budget, jr.n_jobs - n_failed - n_pending, jr.n_jobs, n_pending);
    if (n_failed) {
        for (size_t i = 0, shown = 0; i < jr.n_jobs && shown < 5; i++)
            if (jr.jobs[i].state == J_FAILED) {
                const jjob *j = &jr.jobs[i];
                fprintf(stderr, "judge: item %s (%s) failed: %s\n", jr.items[j->item].id,
                        jr.mode == JUDGE_PAIRWISE ? (j->side ? "order BA" : "order AB")
                                                  : (j->side ? "answer b" : "answer a"),
                        j->error ? j->error : "?");
                shown++;
            }
        fprintf(stderr, "judge: %zu judgments failed; a re-run retries only those\n", n_failed);
        rc = ASSAY_ECHECK;
        assay_fail(err, rc, "%zu judgments failed after retries (see %s)", n_failed, path);
    }
done:
    free(text);
    free(url);
    free(rubric);
    run_free(&jr);
    return rc;
}

int cmd_judge(int argc, char **argv) {
    static const char *const modes[] = {"pairwise", "pointwise", NULL};
    cli_common               cc      = {0};
    assay_error              err     = {0};
    judge_cli                o       = {.concurrency = 8, .max_retries = 5, .max_tokens = 1024};
    const cli_opt            opts[]  = {
                    {"--pairs", CLI_STR, &o.pairs, 0, 0, NULL},
                    {"--a", CLI_STR, &o.in_a, 0, 0, NULL},
                    {"--b", CLI_STR, &o.in_b, 0, 0, NULL},
                    {"--endpoint", CLI_STR, &o.endpoint, 0, 0, NULL},
                    {"--model", CLI_STR, &o.model, 0, 0, NULL},
                    {"--mode", CLI_CHOICE, &o.mode, 0, 0, modes},
                    {"--reference-guided", CLI_FLAG, &o.ref_guided, 0, 0, NULL},
                    {"--rubric", CLI_STR, &o.rubric_path, 0, 0, NULL},
                    {"--output-path", CLI_STR, &o.out, 0, 0, NULL},
                    {"--cache", CLI_STR, &o.cache, 0, 0, NULL},
                    {"--history", CLI_STR, &o.history, 0, 0, NULL},
                    {"--budget-usd", CLI_STR, &o.budget, 0, 0, NULL},
                    {"--price-in", CLI_STR, &o.price_in, 0, 0, NULL},
                    {"--price-out", CLI_STR, &o.price_out, 0, 0, NULL},
                    {"--concurrency", CLI_INT, &o.concurrency, 1, 256, NULL},
                    {"--timeout", CLI_STR, &o.timeout, 0, 0, NULL},
                    {"--max-retries", CLI_INT, &o.max_retries, 0, 100, NULL},
                    {"--api-key-env", CLI_STR, &o.key_env, 0, 0, NULL},
                    {"--ca-bundle", CLI_STR, &o.ca_bundle, 0, 0, NULL},
                    {"--seed", CLI_INT, &o.seed, 0, INT64_MAX / 2, NULL},
                    {"--max-tokens", CLI_INT, &o.max_tokens, 1, 1 << 20, NULL},
    };
    const cli_cmd cmd  = {"judge", opts, CLI_N_OPTS(opts), -1, NULL};
    cli_list      none = {NULL, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &none, &err);
    if (r < 0)
        return cli_report(&err);
    if (r > 0) {
        printf("%s%s", judge_usage, judge_help);
        return 0;
    }
    const char *missing = !o.endpoint ? "--endpoint URL"
                          : !o.model  ? "--model NAME"
                          : !o.pairs && !(o.in_a && o.in_b)
                              ? "--pairs FILE (or --a FILE and --b FILE)"
                              : NULL;
    if (missing || (o.pairs && (o.in_a || o.in_b))) {
        fprintf(stderr, "assay: judge: %s (see assay judge --help)\n%s",
                missing ? missing : "--pairs and --a/--b do not go together", judge_usage);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        assay_fail(&err, ASSAY_EINTERNAL, "libcurl could not start");
        return cli_report(&err);
    }
    int rc = judge_main(&o, cc.json, &err);
    curl_global_cleanup();
    if (rc)
        return cli_report(&err);
    return 0;
}
