/* harness/cmd_contamination.c — `assay contamination`: which eval items share word n-grams with
 * training text. Train n-grams go into a hash set of 64-bit fingerprints (8 bytes a slot, at most
 * half full), so memory grows with the number of distinct train n-grams, not with the text. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/jsonl.h"

static const char contamination_help[] =
    "usage: assay contamination --train FILE... --eval FILE... [--n 13] [--field F ...]\n"
    "                           [--train-field F] [--task-field F] [--max-ngrams N] [--json]\n"
    "\n"
    "For every eval item, the share of its word n-grams that also occur in the training text,\n"
    "and per task the items that share any (contaminated) and their share of the task.\n"
    "\n"
    "Normalization (the same for both sides): Unicode NFKC with case folding (utf8proc);\n"
    "then a word is a maximal run of letters, marks and numbers (Unicode categories L, M, N),\n"
    "so punctuation, symbols and whitespace only separate words (\"Don't!\" gives don, t).\n"
    "An n-gram is n consecutive words of one document (train) or one item (eval), across\n"
    "line breaks. An item with fewer than n words has no n-gram: it is counted as too short,\n"
    "never as contaminated.\n"
    "\n"
    "inputs:\n"
    "  --train FILE   training text (repeatable): a .jsonl file holds one document per line\n"
    "                 in --train-field (default \"text\"); any other file is one document\n"
    "  --eval FILE    eval items, .jsonl (repeatable). An item's text is its --field values\n"
    "                 (strings or arrays of strings), default every string in the record\n"
    "                 except the task field; each field is its own run of words\n"
    "  --task-field F the item's task (default \"task\"; when absent: the file's name)\n"
    "  --n N          n-gram length in words (default 13, 1..64)\n"
    "  --max-ngrams N at most N distinct train n-grams (default 67108864: a 1 GiB table);\n"
    "                 more is an error, not a silent truncation\n"
    "  --json         a JSON report: per task items, contaminated, too_short, share; the\n"
    "                 contaminated items (file, line, task, ngrams, overlap, overlap_share)\n"
    "\n"
    "Fingerprints are 64-bit: a false match needs a hash collision (about 1 in 2^64 / set\n"
    "size per lookup).\n"
    "exit codes: 0 success (contamination found or not), 2 bad usage or input\n";

#define NGRAM_MAX 64
#define TRAIN_PIECE ((size_t)1 << 20) /* bytes of a text file normalized at a time */

/* ---- the set of train fingerprints: open addressing, 0 marks an empty slot ---- */
typedef struct ngram_set {
    uint64_t *slot;
    size_t    cap, n, max;
} ngram_set;

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer spreads low bits */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int set_has(const ngram_set *s, uint64_t h) {
    if (!s->cap)
        return 0;
    for (size_t i = mix64(h) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->slot[i] == h)
            return 1;
        if (!s->slot[i])
            return 0;
    }
}

static int set_add(ngram_set *s, uint64_t h, assay_error *err) {
    if ((s->n + 1) * 2 > s->cap) {
        size_t    cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *ns  = calloc(cap, sizeof *ns);
        if (!ns)
            return assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu train n-grams", s->n);
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) {
                size_t j = mix64(s->slot[i]) & (cap - 1);
                while (ns[j])
                    j = (j + 1) & (cap - 1);
                ns[j] = s->slot[i];
            }
        free(s->slot);
        s->slot = ns;
        s->cap  = cap;
    }
    size_t i = mix64(h) & (s->cap - 1);
    while (s->slot[i] && s->slot[i] != h)
        i = (i + 1) & (s->cap - 1);
    if (s->slot[i])
        return ASSAY_OK;
    if (s->n >= s->max)
        return assay_fail(err, ASSAY_ENOMEM,
                          "more than %zu distinct train n-grams (raise --max-ngrams; each takes "
                          "up to 16 bytes)",
                          s->max);
    s->slot[i] = h;
    s->n++;
    return ASSAY_OK;
}

/* ---- words → n-gram fingerprints ---- */
typedef struct ngram_win {
    int      n; /* n-gram length */
    uint64_t ring[NGRAM_MAX];
    int64_t  words; /* words seen in this document */
} ngram_win;

/* Fingerprint of the last n words: a polynomial over their FNV-1a hashes, oldest first. */
static uint64_t win_hash(const ngram_win *w) {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (int k = 0; k < w->n; k++)
        h = h * 0x100000001b3ULL + w->ring[(w->words + k) % w->n];
    return h ? h : 1;
}

typedef int (*ngram_fn)(void *user, uint64_t h, assay_error *err);

/* Normalizes text[0..len) and feeds its words; for each complete n-gram calls fn. `where`
 * names the text in errors. */
static int feed_text(ngram_win *w, const char *text, size_t len, ngram_fn fn, void *user,
                     const char *where, assay_error *err) {
    utf8proc_uint8_t *norm = NULL;
    utf8proc_ssize_t  nl =
        utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &norm,
                     UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD);
    if (nl < 0)
        return assay_fail(err, ASSAY_EFORMAT, "%s: %s", where, utf8proc_errmsg(nl));
    uint64_t wh = 0xcbf29ce484222325ULL; /* FNV-1a 64 of the current word's bytes */
    int      in = 0, rc = ASSAY_OK;
    for (utf8proc_ssize_t i = 0; i <= nl && !rc;) {
        utf8proc_int32_t cp   = -1;
        utf8proc_ssize_t k    = i < nl ? utf8proc_iterate(norm + i, nl - i, &cp) : 1;
        int              cat  = cp >= 0 ? (int)utf8proc_category(cp) : 0;
        int              word = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NO;
        if (word) {
            for (utf8proc_ssize_t b = 0; b < k; b++)
                wh = (wh ^ norm[i + b]) * 0x100000001b3ULL;
            in = 1;
        } else if (in) {
            w->ring[w->words % w->n] = wh;
            w->words++;
            if (w->words >= w->n)
                rc = fn(user, win_hash(w), err);
            wh = 0xcbf29ce484222325ULL;
            in = 0;
        }
        i += k > 0 ? k : 1;
    }
    free(norm);
    return rc;
}

static int add_train(void *user, uint64_t h, assay_error *err) { return set_add(user, h, err); }

typedef struct item_count {
    const ngram_set *train;
    int64_t          ngrams, overlap;
} item_count;

static int count_item(void *user, uint64_t h, assay_error *err) {
    (void)err;
    item_count *c = user;
    c->ngrams++;
    c->overlap += set_has(c->train, h);
    return ASSAY_OK;
}

static int read_train(const char *path, const char *field, int n, ngram_set *set,
                      assay_error *err) {
    ngram_win w = {.n = n};
    if (!str_ends_with(path, ".jsonl")) {
        mapped_file m  = {0};
        int         rc = file_map(&m, path, err);
        /* in pieces that end at a newline or space: normalization allocates several times its
         * input, and no word spans a separator, so the n-gram window simply carries on */
        const char *p = (const char *)m.data, *end = p + m.size;
        while (!rc && p < end) {
            size_t k = (size_t)(end - p) > TRAIN_PIECE ? TRAIN_PIECE : (size_t)(end - p);
            if (k < (size_t)(end - p)) { /* a newline, else a space, else a UTF-8 boundary */
                const char *cut = memrchr(p, '\n', k);
                if (!cut)
                    cut = memrchr(p, ' ', k);
                if (cut)
                    k = (size_t)(cut - p) + 1;
                else
                    while (k > 1 && ((unsigned char)p[k] & 0xC0) == 0x80)
                        k--;
            }
            rc = feed_text(&w, p, k, add_train, set, path, err);
            p += k;
        }
        file_unmap(&m);
        return rc;
    }
    jsonl_reader r;
    cJSON       *obj;
    int          rc = jsonl_open(&r, path, err), got;
    if (rc)
        return rc;
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *s;
        size_t      len;
        char        where[1100];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        w.words = 0;
        rc      = jsonl_get_string(&r, obj, field, 1, &s, &len, err);
        if (!rc)
            rc = feed_text(&w, s, len, add_train, set, where, err);
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    jsonl_close(&r);
    return rc ? rc : got;
}

typedef struct task_stat {
    char   *name;
    int64_t items, contaminated, too_short;
} task_stat;

/* Feeds one value of an item: a string, or the strings of an array (each its own run). */
static int feed_value(ngram_win *w, item_count *c, const cJSON *v, const char *where,
                      assay_error *err) {
    const cJSON *e;
    if (cJSON_IsString(v)) {
        /* jsonl marks an escaped NUL as 0xFF (not UTF-8): a NUL only separates words */
        size_t len  = strlen(v->valuestring);
        char  *text = malloc(len + 1);
        if (!text)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
        for (size_t i = 0; i <= len; i++)
            text[i] = v->valuestring[i] == '\xff' ? ' ' : v->valuestring[i];
        w->words = 0;
        int rc   = feed_text(w, text, len, count_item, c, where, err);
        free(text);
        return rc;
    }
    if (cJSON_IsArray(v))
        cJSON_ArrayForEach(e, v) if (cJSON_IsString(e)) {
            int rc = feed_value(w, c, e, where, err);
            if (rc)
                return rc;
        }
    return ASSAY_OK;
}

int cmd_contamination(int argc, char **argv) {
    cli_common   cc     = {0};
    assay_error  err    = {0};
    const char **buf    = calloc((size_t)argc * 3 + 3, sizeof *buf);
    cli_list     trains = {buf, 0}, evals = {buf + argc + 1, 0}, fields = {buf + 2 * argc + 2, 0};
    const char  *train_field = "text", *task_field = "task";
    int64_t      n = 13, max_ngrams = (int64_t)1 << 26;
    ngram_set    set     = {0};
    task_stat   *tasks   = NULL;
    size_t       n_tasks = 0;
    cJSON       *flagged = cJSON_CreateArray();
    int          rc      = ASSAY_OK;
    if (!buf || !flagged) {
        free(buf);
        cJSON_Delete(flagged);
        return cli_report(&(assay_error){ASSAY_ENOMEM, "out of memory"});
    }
    const cli_opt opts[] = {
        {"--train", CLI_STR_LIST, &trains, 0, 0, NULL},
        {"--eval", CLI_STR_LIST, &evals, 0, 0, NULL},
        {"--field", CLI_STR_LIST, &fields, 0, 0, NULL},
        {"--train-field", CLI_STR, &train_field, 0, 0, NULL},
        {"--task-field", CLI_STR, &task_field, 0, 0, NULL},
        {"--n", CLI_INT, &n, 1, NGRAM_MAX, NULL},
        {"--max-ngrams", CLI_INT, &max_ngrams, 1, (int64_t)1 << 40, NULL},
    };
    const cli_cmd cmd  = {"contamination", opts, CLI_N_OPTS(opts), -1,
                          "(inputs are given with --train and --eval)"};
    cli_list      none = {NULL, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &none, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        fputs(contamination_help, stdout);
        goto out;
    }
    if (!trains.n || !evals.n) {
        assay_fail(&err, ASSAY_EINVAL, "contamination: missing %s (see assay contamination --help)",
                   !trains.n ? "--train FILE" : "--eval FILE");
        goto fail;
    }
    set.max = (size_t)max_ngrams;
    for (int i = 0; i < trains.n; i++)
        if ((rc = read_train(trains.v[i], train_field, (int)n, &set, &err)))
            goto fail;

    int64_t total_items = 0, total_cont = 0;
    for (int f = 0; f < evals.n; f++) {
        const char  *path = evals.v[f];
        jsonl_reader rd;
        cJSON       *obj;
        int          got;
        if ((rc = jsonl_open(&rd, path, &err)))
            goto fail;
        const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
        while ((got = jsonl_next(&rd, &obj, &err)) == 1) {
            char         where[1100], tname[512];
            ngram_win    w  = {.n = (int)n};
            item_count   c  = {&set, 0, 0};
            const cJSON *tv = cJSON_GetObjectItemCaseSensitive(obj, task_field), *v;
            snprintf(where, sizeof where, "%s:%zu", path, rd.line);
            if (cJSON_IsString(tv))
                snprintf(tname, sizeof tname, "%s", tv->valuestring);
            else
                snprintf(tname, sizeof tname, "%.*s",
                         (int)(strlen(base) - (str_ends_with(base, ".jsonl") ? 6 : 0)), base);
            if (fields.n)
                for (int k = 0; k < fields.n && !rc; k++) {
                    if (!(v = cJSON_GetObjectItemCaseSensitive(obj, fields.v[k])))
                        rc = assay_fail(&err, ASSAY_EFORMAT, "%s: no \"%s\" field (--field)", where,
                                        fields.v[k]);
                    else
                        rc = feed_value(&w, &c, v, where, &err);
                }
            else
                cJSON_ArrayForEach(v, obj) if (!rc && strcmp(v->string, task_field)) rc =
                    feed_value(&w, &c, v, where, &err);
            cJSON_Delete(obj);
            if (rc) {
                jsonl_close(&rd);
                goto fail;
            }
            size_t t = 0;
            while (t < n_tasks && strcmp(tasks[t].name, tname))
                t++;
            if (t == n_tasks) {
                task_stat *nt = realloc(tasks, (n_tasks + 1) * sizeof *nt);
                if (!nt || !(nt[n_tasks].name = strdup(tname))) {
                    if (nt)
                        tasks = nt;
                    jsonl_close(&rd);
                    assay_fail(&err, ASSAY_ENOMEM, "out of memory");
                    goto fail;
                }
                tasks                = nt;
                tasks[n_tasks].items = tasks[n_tasks].contaminated = tasks[n_tasks].too_short = 0;
                n_tasks++;
            }
            tasks[t].items++;
            total_items++;
            if (c.ngrams == 0)
                tasks[t].too_short++;
            if (c.overlap > 0) {
                tasks[t].contaminated++;
                total_cont++;
                cJSON *it = cJSON_CreateObject();
                cJSON_AddStringToObject(it, "file", path);
                cJSON_AddNumberToObject(it, "line", (double)rd.line);
                cJSON_AddStringToObject(it, "task", tname);
                cJSON_AddNumberToObject(it, "ngrams", (double)c.ngrams);
                cJSON_AddNumberToObject(it, "overlap", (double)c.overlap);
                cJSON_AddNumberToObject(it, "overlap_share", (double)c.overlap / (double)c.ngrams);
                cJSON_AddItemToArray(flagged, it);
            }
        }
        jsonl_close(&rd);
        if (got != 0) {
            rc = got;
            goto fail;
        }
    }
    if (cc.json) {
        cJSON *root = cJSON_CreateObject(), *ts = cJSON_CreateArray();
        cJSON_AddNumberToObject(root, "n", (double)n);
        cJSON_AddNumberToObject(root, "train_ngrams", (double)set.n);
        cJSON_AddNumberToObject(root, "items", (double)total_items);
        cJSON_AddNumberToObject(root, "contaminated", (double)total_cont);
        cJSON_AddNumberToObject(root, "share",
                                total_items ? (double)total_cont / (double)total_items : 0);
        for (size_t t = 0; t < n_tasks; t++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", tasks[t].name);
            cJSON_AddNumberToObject(o, "items", (double)tasks[t].items);
            cJSON_AddNumberToObject(o, "contaminated", (double)tasks[t].contaminated);
            cJSON_AddNumberToObject(o, "too_short", (double)tasks[t].too_short);
            cJSON_AddNumberToObject(o, "share",
                                    (double)tasks[t].contaminated / (double)tasks[t].items);
            cJSON_AddItemToArray(ts, o);
        }
        cJSON_AddItemToObject(root, "tasks", ts);
        cJSON_AddItemToObject(root, "contaminated_items", flagged);
        flagged = NULL;
        char *s = jsonl_print(root, 1);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else {
        printf("%lld distinct train %lld-grams\n", (long long)set.n, (long long)n);
        printf("%-32s %8s %12s %9s %10s\n", "task", "items", "contaminated", "share", "too_short");
        for (size_t t = 0; t < n_tasks; t++)
            printf("%-32s %8lld %12lld %8.2f%% %10lld\n", tasks[t].name, (long long)tasks[t].items,
                   (long long)tasks[t].contaminated,
                   100.0 * (double)tasks[t].contaminated / (double)tasks[t].items,
                   (long long)tasks[t].too_short);
        const cJSON *it;
        cJSON_ArrayForEach(it, flagged) {
            printf("contaminated: %s:%d (%s) %d of %d n-grams\n",
                   cJSON_GetObjectItem(it, "file")->valuestring,
                   (int)cJSON_GetObjectItem(it, "line")->valuedouble,
                   cJSON_GetObjectItem(it, "task")->valuestring,
                   (int)cJSON_GetObjectItem(it, "overlap")->valuedouble,
                   (int)cJSON_GetObjectItem(it, "ngrams")->valuedouble);
        }
    }
    goto out;
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    rc = cli_report(&err);
    goto cleanup;
out:
    rc = 0;
cleanup:
    for (size_t t = 0; t < n_tasks; t++)
        free(tasks[t].name);
    free(tasks);
    free(set.slot);
    cJSON_Delete(flagged);
    free(buf);
    return rc;
}
