/* harness/pipeline.c — request grouping, shared contexts and window batching (see pipeline.h). */
#include "harness/pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "harness/dist.h"
#include "harness/hashes.h"
#include "loader/modeldir.h"

/* Forward passes per engine call: enough to keep the engine busy, few enough that progress
 * moves and only one group's per-token results are held at once. */
#define PIPE_GROUP_BATCHES 8

typedef struct pipe_ref {
    const pipe_request *r;
    size_t              i;
} pipe_ref;

/* Context tokens, then score_from, then continuation tokens, then input order: equal contexts
 * end up adjacent and, inside them, equal requests too. */
static int cmp_ref(const void *a, const void *b) {
    const pipe_ref     *pa = a, *pb = b;
    const pipe_request *x = pa->r, *y = pb->r;
    size_t              n = x->score_from < y->score_from ? x->score_from : y->score_from;
    int                 c = memcmp(x->tokens, y->tokens, n * sizeof *x->tokens);
    if (c)
        return c;
    if (x->score_from != y->score_from)
        return x->score_from < y->score_from ? -1 : 1;
    size_t kx = x->n - x->score_from, ky = y->n - y->score_from;
    size_t k = kx < ky ? kx : ky;
    if ((c = memcmp(x->tokens + x->score_from, y->tokens + y->score_from, k * sizeof *x->tokens)))
        return c;
    if (kx != ky)
        return kx < ky ? -1 : 1;
    return pa->i < pb->i ? -1 : 1;
}

static int same_ctx(const pipe_request *x, const pipe_request *y) {
    return x->score_from == y->score_from &&
           !memcmp(x->tokens, y->tokens, x->score_from * sizeof *x->tokens);
}

static int same_req(const pipe_request *x, const pipe_request *y) {
    return x->n == y->n && same_ctx(x, y) &&
           !memcmp(x->tokens + x->score_from, y->tokens + y->score_from,
                   (x->n - x->score_from) * sizeof *x->tokens);
}

static int result_copy(score_result *dst, const score_result *src, assay_error *err) {
    *dst           = *src;
    size_t k       = (size_t)(src->n_targets > 0 ? src->n_targets : 0);
    dst->logprob   = malloc((k ? k : 1) * sizeof *dst->logprob);
    dst->is_greedy = malloc(k ? k : 1);
    if (!dst->logprob || !dst->is_greedy) {
        free(dst->logprob);
        free(dst->is_greedy);
        memset(dst, 0, sizeof *dst);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory copying a result");
    }
    memcpy(dst->logprob, src->logprob, k * sizeof *dst->logprob);
    memcpy(dst->is_greedy, src->is_greedy, k);
    return ASSAY_OK;
}

/* Tokens two contexts share at the start. */
static size_t common_prefix(const pipe_request *x, const pipe_request *y) {
    size_t n = x->score_from < y->score_from ? x->score_from : y->score_from, i = 0;
    while (i < n && x->tokens[i] == y->tokens[i])
        i++;
    return i;
}

/* Runs the distinct requests uniq[u0..u1) on top of the shared first p tokens. */
static int run_shared(model *m, const pipe_ref *refs, const size_t *uniq, size_t u0, size_t u1,
                      size_t p, score_request *sr, score_result *tmp, score_result *out,
                      pipe_counts *counts, assay_error *err) {
    const pipe_request *head = refs[uniq[u0]].r;
    for (size_t u = u0; u < u1; u++) {
        const pipe_request *r = refs[uniq[u]].r;
        sr[u - u0]            = (score_request){.tokens     = r->tokens + p,
                                                .n_tokens   = (int)(r->n - p),
                                                .score_from = (int)(r->score_from - p)};
        counts->computed += (int64_t)(r->n - p) - 1;
    }
    counts->computed += (int64_t)p;
    int rc = model_score_shared(m, head->tokens, (int)p, sr, (int)(u1 - u0), tmp, err);
    if (rc)
        return rc;
    for (size_t u = u0; u < u1; u++) {
        out[refs[uniq[u]].i] = tmp[u - u0];
        counts->scored += tmp[u - u0].n_targets;
        memset(&tmp[u - u0], 0, sizeof tmp[u - u0]);
    }
    return ASSAY_OK;
}

/* Groups g0..g1 (distinct requests uniq[u_off[g0]..u_off[g1])) on one pass over their first p
 * tokens, each group's own context once on top, its continuations on that (model_score_groups).
 * p is below every group's context length. */
static int run_groups(model *m, const pipe_ref *refs, const size_t *uniq, const size_t *u_off,
                      size_t g0, size_t g1, size_t p, score_request *sr, score_result *tmp,
                      score_result *out, pipe_counts *counts, assay_error *err) {
    score_group *gs = malloc((g1 - g0) * sizeof *gs);
    if (!gs)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    size_t u0 = u_off[g0];
    counts->computed += (int64_t)p;
    for (size_t g = g0; g < g1; g++) {
        const pipe_request *head = refs[uniq[u_off[g]]].r;
        gs[g - g0]               = (score_group){.ctx   = head->tokens + p,
                                                 .n_ctx = (int)(head->score_from - p),
                                                 .conts = sr + (u_off[g] - u0),
                                                 .n     = (int)(u_off[g + 1] - u_off[g])};
        counts->computed += (int64_t)(head->score_from - p) - 1;
        for (size_t u = u_off[g]; u < u_off[g + 1]; u++) {
            const pipe_request *r = refs[uniq[u]].r;
            sr[u - u0]            = (score_request){.tokens     = r->tokens + r->score_from,
                                                    .n_tokens   = (int)(r->n - r->score_from),
                                                    .score_from = 0};
            counts->computed += (int64_t)(r->n - r->score_from);
        }
    }
    const int32_t *prefix = refs[uniq[u0]].r->tokens;
    int            rc     = model_score_groups(m, prefix, (int)p, gs, (int)(g1 - g0), tmp, err);
    free(gs);
    if (rc)
        return rc;
    for (size_t u = u0; u < u_off[g1]; u++) {
        out[refs[uniq[u]].i] = tmp[u - u0];
        counts->scored += tmp[u - u0].n_targets;
        memset(&tmp[u - u0], 0, sizeof tmp[u - u0]);
    }
    return ASSAY_OK;
}

/* A prefix shorter than this is not worth a shared pass across contexts. */
#define PIPE_MIN_SHARED_PREFIX 32
/* How many following groups are tried for a shared prefix (bounds the search). */
#define PIPE_MAX_CLUSTER_SCAN 4096
/* With several ranks, units are cut to about 1/(this * ranks) of the work so the greedy
 * assignment can balance them. */
#define PIPE_UNITS_PER_RANK 4

/* A piece of work the engine runs in one call, and the unit of sharding. */
typedef enum { UNIT_GROUPS, UNIT_SHARED, UNIT_SINGLES } unit_kind;
typedef struct pipe_unit {
    unit_kind kind;
    size_t    a, b; /* groups [a, b) (UNIT_GROUPS, UNIT_SHARED: one group) or singles [a, b) */
    size_t    p;    /* UNIT_GROUPS: the shared prefix */
    int64_t   cost; /* positions the model runs */
} pipe_unit;

typedef struct pipe_plan {
    pipe_ref  *refs;
    size_t    *uniq, *u_off, *dup_of, *single;
    size_t     n_groups, n_uniq, n_single;
    pipe_unit *units;
    size_t     n_units;
} pipe_plan;

static void plan_free(pipe_plan *pl) {
    free(pl->refs), free(pl->uniq), free(pl->u_off), free(pl->dup_of), free(pl->single);
    free(pl->units);
}

/* Positions a run of groups [g0, g1) on a p-token shared prefix costs (as run_groups counts). */
static int64_t groups_cost(const pipe_plan *pl, size_t g0, size_t g1, size_t p) {
    int64_t c = (int64_t)p;
    for (size_t g = g0; g < g1; g++) {
        c += (int64_t)(pl->refs[pl->uniq[pl->u_off[g]]].r->score_from - p) - 1;
        for (size_t u = pl->u_off[g]; u < pl->u_off[g + 1]; u++) {
            const pipe_request *r = pl->refs[pl->uniq[u]].r;
            c += (int64_t)(r->n - r->score_from);
        }
    }
    return c;
}

static void plan_push(pipe_plan *pl, pipe_unit u) { pl->units[pl->n_units++] = u; }

/* The units: a pure function of the requests, the model's batch budget and the number of
 * ranks, so every rank computes the same list. */
static int plan_make(pipe_plan *pl, const model *m, const pipe_request *reqs, size_t n, int size,
                     assay_error *err) {
    memset(pl, 0, sizeof *pl);
    pl->refs   = malloc(n * sizeof *pl->refs);
    pl->uniq   = malloc(n * sizeof *pl->uniq);        /* ref index of each distinct request */
    pl->u_off  = malloc((n + 1) * sizeof *pl->u_off); /* per group: its first in uniq */
    pl->dup_of = malloc(n * sizeof *pl->dup_of);      /* ref index -> its distinct one's ref */
    pl->single = malloc(n * sizeof *pl->single);
    pl->units  = malloc(2 * n * sizeof *pl->units); /* cluster pieces + batches: at most 2n */
    if (!pl->refs || !pl->uniq || !pl->u_off || !pl->dup_of || !pl->single || !pl->units)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", n);
    pipe_ref *refs = pl->refs;
    size_t   *uniq = pl->uniq, *u_off = pl->u_off;
    for (size_t i = 0; i < n; i++)
        refs[i] = (pipe_ref){&reqs[i], i};
    qsort(refs, n, sizeof *refs, cmp_ref);

    /* Groups: equal context tokens; inside, distinct requests (duplicates point at them). */
    size_t n_groups = 0, n_uniq = 0;
    for (size_t g = 0; g < n;) {
        size_t e = g + 1;
        while (e < n && same_ctx(refs[g].r, refs[e].r))
            e++;
        u_off[n_groups++] = n_uniq;
        for (size_t k = g; k < e; k++) {
            if (k > g && same_req(refs[uniq[n_uniq - 1]].r, refs[k].r)) {
                pl->dup_of[k] = uniq[n_uniq - 1];
                continue;
            }
            pl->dup_of[k]  = k;
            uniq[n_uniq++] = k;
        }
        g = e;
    }
    u_off[n_groups] = n_uniq;
    pl->n_groups    = n_groups;
    pl->n_uniq      = n_uniq;

    /* Sorted contexts put those with a common start (an MMLU subject's few-shot block) next to
     * each other. A run of k groups sharing their first p tokens computes those once instead of
     * k times (each group's own context then once, its continuations on top), saving (k - 1) * p
     * positions; the run that saves most is taken. Otherwise a group with two or more
     * continuations shares its own context, and the rest are batched as singles. */
    int64_t total = 0;
    for (size_t g = 0; g < n_groups;) {
        const pipe_request *first = refs[uniq[u_off[g]]].r;
        size_t              p = first->score_from, min_ctx = first->score_from;
        size_t              best_end = g + 1, best_p = 0;
        int64_t             best_save = 0;
        for (size_t h = g + 1; h < n_groups && h - g <= PIPE_MAX_CLUSTER_SCAN; h++) {
            const pipe_request *rh = refs[uniq[u_off[h]]].r;
            size_t              l  = common_prefix(first, rh);
            if (l < p)
                p = l;
            if (rh->score_from < min_ctx)
                min_ctx = rh->score_from;
            /* every group keeps at least one context token of its own */
            size_t pe = p < min_ctx ? p : min_ctx - 1;
            if (pe < PIPE_MIN_SHARED_PREFIX)
                break;
            int64_t save = (int64_t)(h - g) * (int64_t)pe;
            if (save > best_save) {
                best_save = save;
                best_end  = h + 1;
                best_p    = pe;
            }
        }
        if (best_end > g + 1) {
            int64_t c = groups_cost(pl, g, best_end, best_p);
            plan_push(pl, (pipe_unit){UNIT_GROUPS, g, best_end, best_p, c});
            total += c;
        } else if (u_off[g + 1] - u_off[g] > 1) {
            int64_t c = (int64_t)first->score_from;
            for (size_t u = u_off[g]; u < u_off[g + 1]; u++)
                c += (int64_t)(refs[uniq[u]].r->n - first->score_from) - 1;
            plan_push(pl, (pipe_unit){UNIT_SHARED, g, g + 1, first->score_from, c});
            total += c;
        } else {
            pl->single[pl->n_single++] = uniq[u_off[g]]; /* scored with the other singles */
            total += (int64_t)first->n - 1;
        }
        g = best_end;
    }
    /* One rank keeps the units as they are; several need pieces small enough to balance. The
     * pieces change no score (batch invariance), only how often a shared prefix is computed. */
    int64_t cap = INT64_MAX;
    if (size > 1) {
        cap          = total / ((int64_t)size * PIPE_UNITS_PER_RANK);
        cap          = cap > 0 ? cap : 1;
        size_t n_big = pl->n_units;
        for (size_t k = 0; k < n_big; k++) {
            pipe_unit *u = &pl->units[k];
            if (u->kind != UNIT_GROUPS || u->cost <= cap || u->b - u->a < 2)
                continue;
            size_t a = u->a, b = u->b, p = u->p;
            /* the first piece replaces the unit, the others go to the end */
            size_t g0 = a, g = a;
            int    first_piece = 1;
            while (g0 < b) {
                int64_t c = groups_cost(pl, g0, g0 + 1, p), cg;
                for (g = g0 + 1;
                     g < b && c + (cg = groups_cost(pl, g, g + 1, p) - (int64_t)p) <= cap; g++)
                    c += cg;
                pipe_unit piece = {UNIT_GROUPS, g0, g, p, c};
                if (first_piece)
                    pl->units[k] = piece;
                else
                    plan_push(pl, piece);
                first_piece = 0;
                g0          = g;
            }
        }
    }
    /* Singles in groups of about PIPE_GROUP_BATCHES forward passes. */
    int64_t budget = (int64_t)model_max_batch_tokens(m) * PIPE_GROUP_BATCHES;
    if (budget > cap)
        budget = cap;
    for (size_t s = 0; s < pl->n_single;) {
        size_t  first = s;
        int64_t used = 0, c = 0;
        while (s < pl->n_single &&
               (s == first || used + (int64_t)refs[pl->single[s]].r->n <= budget)) {
            used += (int64_t)refs[pl->single[s]].r->n;
            c += (int64_t)refs[pl->single[s]].r->n - 1;
            s++;
        }
        plan_push(pl, (pipe_unit){UNIT_SINGLES, first, s, 0, c});
    }
    return ASSAY_OK;
}

static int run_singles(model *m, const pipe_plan *pl, size_t s0, size_t s1, score_request *sr,
                       score_result *tmp, score_result *out, pipe_counts *counts,
                       assay_error *err) {
    for (size_t s = s0; s < s1; s++) {
        const pipe_request *r = pl->refs[pl->single[s]].r;
        sr[s - s0]            = (score_request){
                       .tokens = r->tokens, .n_tokens = (int)r->n, .score_from = (int)r->score_from};
        counts->computed += (int64_t)r->n - 1;
    }
    int rc = model_score(m, sr, (int)(s1 - s0), tmp, err);
    if (rc)
        return rc;
    for (size_t k = s0; k < s1; k++) {
        out[pl->refs[pl->single[k]].i] = tmp[k - s0];
        memset(&tmp[k - s0], 0, sizeof tmp[k - s0]);
        counts->scored += out[pl->refs[pl->single[k]].i].n_targets;
    }
    return ASSAY_OK;
}

/* Marks own[i] for every request of the units this rank runs (duplicates with their original). */
static void plan_mark_own(const pipe_plan *pl, size_t n, const int *owner, int rank,
                          unsigned char *own) {
    for (size_t k = 0; k < pl->n_units; k++) {
        const pipe_unit *u = &pl->units[k];
        if (owner[k] != rank)
            continue;
        if (u->kind == UNIT_SINGLES) {
            for (size_t s = u->a; s < u->b; s++)
                own[pl->refs[pl->single[s]].i] = 1;
            continue;
        }
        for (size_t x = pl->u_off[u->a]; x < pl->u_off[u->b]; x++)
            own[pl->refs[pl->uniq[x]].i] = 1;
    }
    for (size_t k = 0; k < n; k++)
        own[pl->refs[k].i] = own[pl->refs[pl->dup_of[k]].i];
}

pipe_shard pipe_shard_world(void) {
    return (pipe_shard){.rank = dist_rank(), .size = dist_size(), .exchange = 1};
}

int pipe_resume_dir(const char *dir, assay_error *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return assay_fail(err, ASSAY_EIO, "--resume %s: cannot create the directory: %s", dir,
                          strerror(errno));
    if (!path_is_dir(dir))
        return assay_fail(err, ASSAY_EINVAL, "--resume %s: not a directory", dir);
    return ASSAY_OK;
}

typedef struct weight_stat {
    char   *name;
    int64_t v[3]; /* size, modification time (s, ns) */
} weight_stat;

static int cmp_weight_stat(const void *a, const void *b) {
    return strcmp(((const weight_stat *)a)->name, ((const weight_stat *)b)->name);
}

int pipe_resume_key(const char *model_dir, char out[65], assay_error *err) {
    char         content[65], path[4200];
    weight_stat *ws = NULL;
    size_t       n = 0, cap = 0;
    int          rc   = hashes_model(model_dir, content, err);
    int          gguf = !rc && model_path_is_gguf(model_dir);
    DIR         *d    = rc || gguf ? NULL : opendir(model_dir);
    if (!rc && !gguf && !d)
        rc = assay_fail(err, ASSAY_EIO, "%s: cannot open the directory", model_dir);
    if (gguf) { /* the file itself is the one weight file */
        struct stat st;
        if (stat(model_dir, &st) != 0)
            rc = assay_fail(err, ASSAY_EIO, "%s: %s", model_dir, strerror(errno));
        else if (!(ws = malloc(sizeof *ws)) || !(ws[0].name = strdup("gguf")))
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        else {
            ws[0].v[0] = (int64_t)st.st_size;
            ws[0].v[1] = (int64_t)st.st_mtim.tv_sec;
            ws[0].v[2] = (int64_t)st.st_mtim.tv_nsec;
            n          = 1;
        }
    }
    for (struct dirent *e; !rc && d && (e = readdir(d));) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", model_dir, e->d_name);
        if (!str_ends_with(e->d_name, ".safetensors") || stat(path, &st) != 0)
            continue;
        if (n == cap) {
            weight_stat *nw = realloc(ws, (cap = cap ? 2 * cap : 8) * sizeof *nw);
            if (!nw) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                break;
            }
            ws = nw;
        }
        ws[n] = (weight_stat){
            strdup(e->d_name),
            {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec}};
        if (!ws[n++].name)
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
    }
    if (d)
        closedir(d);
    if (!rc) {
        sha256_ctx c;
        qsort(ws, n, sizeof *ws, cmp_weight_stat);
        sha256_init(&c);
        sha256_update(&c, content, 64);
        for (size_t i = 0; i < n; i++) {
            sha256_update(&c, ws[i].name, strlen(ws[i].name) + 1);
            sha256_update(&c, ws[i].v, sizeof ws[i].v);
        }
        sha256_hex(&c, out);
    }
    for (size_t i = 0; i < n; i++)
        free(ws[i].name);
    free(ws);
    return rc;
}

/* ---- resume files: one per (call, rank), the rank's results written when its units are done */

#define RESUME_MAGIC "ASSAYRS1"

static void resume_path(char *buf, size_t cap, const pipe_shard *sh, const char *hash) {
    snprintf(buf, cap, "%s/%.32s.rank%dof%d", sh->resume_dir, hash, sh->rank, sh->size);
}

/* The model's part of a call's identity: the caller's key (the model's files), the weights'
 * format and the device kind, which change the scores' bits. */
static void resume_hash_model(sha256_ctx *c, const pipe_shard *sh, const model *m) {
    const char *key = sh->resume_key ? sh->resume_key : "", *dev = model_device_name(m);
    sha256_update(c, key, strlen(key) + 1);
    sha256_update(c, model_weights_name(m), strlen(model_weights_name(m)) + 1);
    sha256_update(c, dev, strcspn(dev, ":"));
}

/* The call's identity: the caller's key (the model), the ranks, the batch budget (it shapes the
 * units) and every request in input order. */
static void resume_hash(char out[65], const pipe_shard *sh, const model *m,
                        const score_request *reqs, size_t n) {
    sha256_ctx c;
    sha256_init(&c);
    resume_hash_model(&c, sh, m);
    int64_t head[3] = {sh->size, (int64_t)n, model_max_batch_tokens(m)};
    sha256_update(&c, head, sizeof head);
    for (size_t i = 0; i < n; i++) {
        int32_t rh[2] = {reqs[i].n_tokens, reqs[i].score_from};
        sha256_update(&c, rh, sizeof rh);
        sha256_update(&c, reqs[i].tokens, (size_t)reqs[i].n_tokens * sizeof *reqs[i].tokens);
    }
    sha256_hex(&c, out);
}

typedef struct resume_entry {
    uint64_t i;
    int32_t  n_targets, n_greedy;
    double   sum;
    int32_t  has_tokens;
} resume_entry;

static int resume_save(const pipe_shard *sh, const char *hash, const score_result *out, size_t n,
                       const unsigned char *own, assay_error *err) {
    char path[4200];
    resume_path(path, sizeof path, sh, hash);
    atomic_file af;
    int         rc = atomic_open(&af, path, err);
    if (rc)
        return rc;
    uint64_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += own[i];
    int ok = fwrite(RESUME_MAGIC, 8, 1, af.fp) == 1 && fwrite(&count, sizeof count, 1, af.fp) == 1;
    for (size_t i = 0; ok && i < n; i++) {
        if (!own[i])
            continue;
        const score_result *r = &out[i];
        resume_entry        e = {i, r->n_targets, r->n_greedy, r->sum, r->logprob != NULL};
        ok                    = fwrite(&e, sizeof e, 1, af.fp) == 1;
        if (ok && e.has_tokens && r->n_targets > 0)
            ok = fwrite(r->logprob, sizeof(float), (size_t)r->n_targets, af.fp) ==
                     (size_t)r->n_targets &&
                 fwrite(r->is_greedy, 1, (size_t)r->n_targets, af.fp) == (size_t)r->n_targets;
    }
    if (!ok) {
        atomic_abort(&af);
        return assay_fail(err, ASSAY_EIO, "%s: cannot write partial results", path);
    }
    return atomic_commit(&af, err);
}

/* Loads this rank's results of an earlier run of the same call: 1 when every entry the rank owns
 * came from the file, 0 when there is no usable file (then out is as it was). */
static int resume_load(const pipe_shard *sh, const char *hash, score_result *out, size_t n,
                       const unsigned char *own) {
    char path[4200];
    resume_path(path, sizeof path, sh, hash);
    if (access(path, F_OK) != 0)
        return 0;
    char  *buf = NULL;
    size_t len = 0;
    if (file_read_capped(path, (size_t)1 << 31, &buf, &len, NULL))
        return 0;
    uint64_t count = 0, want = 0;
    for (size_t i = 0; i < n; i++)
        want += own[i];
    const char *q = buf, *end = buf + len;
    int         ok = len >= 16 && !memcmp(q, RESUME_MAGIC, 8);
    if (ok) {
        memcpy(&count, q + 8, sizeof count);
        q += 16;
        ok = count == want;
    }
    size_t loaded = 0;
    for (uint64_t k = 0; ok && k < count; k++) {
        resume_entry e;
        if ((size_t)(end - q) < sizeof e) {
            ok = 0;
            break;
        }
        memcpy(&e, q, sizeof e);
        q += sizeof e;
        size_t t    = e.n_targets > 0 ? (size_t)e.n_targets : 0;
        size_t need = e.has_tokens ? t * (sizeof(float) + 1) : 0;
        if (e.i >= n || !own[e.i] || out[e.i].n_targets || (size_t)(end - q) < need) {
            ok = 0;
            break;
        }
        score_result *o = &out[e.i];
        *o = (score_result){.n_targets = e.n_targets, .n_greedy = e.n_greedy, .sum = e.sum};
        loaded++;
        if (e.has_tokens) {
            o->logprob   = malloc((t ? t : 1) * sizeof(float));
            o->is_greedy = malloc(t ? t : 1);
            if (!o->logprob || !o->is_greedy) {
                ok = 0;
                break;
            }
            memcpy(o->logprob, q, t * sizeof(float));
            memcpy(o->is_greedy, q + t * sizeof(float), t);
            q += need;
        }
    }
    free(buf);
    if (!ok) {
        /* an unusable file is only a lost shortcut: the rank computes its units again */
        fprintf(stderr, "assay: %s: not usable as partial results; computing them again\n", path);
        for (size_t i = 0; i < n; i++)
            if (own[i] && out[i].n_targets) {
                score_results_free(&out[i], 1);
                memset(&out[i], 0, sizeof out[i]);
            }
        return 0;
    }
    fprintf(stderr, "assay: %s: reusing %zu results of an earlier run (--resume)\n", path, loaded);
    return 1;
}

/* After this rank's part: partial results saved, failure agreed between ranks, results
 * exchanged, counts summed. */
static int shard_finish(const pipe_shard *sh, int rc, const char *hash, score_result *out, size_t n,
                        const unsigned char *own, int per_token, pipe_counts *counts,
                        int64_t computed0, int64_t scored0, assay_error *err) {
    if (!rc && sh->resume_dir && hash)
        rc = resume_save(sh, hash, out, n, own, err);
    if (!rc && sh->size > 1)
        rc = dist_test_fault(err);
    counts->mine += counts->computed - computed0;
    if (!sh->exchange || sh->size < 2)
        return rc;
    if ((rc = dist_agree(rc, err)))
        return rc;
    /* a failure while unpacking is one rank's: every rank agrees on it before going on */
    if ((rc = dist_agree(dist_allgather_results(out, n, own, per_token, err), err)))
        return rc;
    int64_t d[2] = {counts->computed - computed0, counts->scored - scored0};
    if ((rc = dist_sum_i64(d, 2, err)))
        return rc;
    counts->computed = computed0 + d[0];
    counts->scored   = scored0 + d[1];
    return ASSAY_OK;
}

int pipe_score_loglik(model *m, const pipe_request *reqs, size_t n, score_result *out,
                      pipe_counts *counts, progress *prog, assay_error *err) {
    return pipe_score_loglik_on(m, reqs, n, out, counts, prog, NULL, err);
}

int pipe_score_loglik_on(model *m, const pipe_request *reqs, size_t n, score_result *out,
                         pipe_counts *counts, progress *prog, const pipe_shard *sh,
                         assay_error *err) {
    pipe_shard one = {.rank = 0, .size = 1};
    if (!sh)
        sh = &one;
    if (sh->size < 1 || sh->rank < 0 || sh->rank >= sh->size)
        return assay_fail(err, ASSAY_EINVAL, "shard: rank %d of %d", sh->rank, sh->size);
    if (n == 0)
        return ASSAY_OK;
    int64_t        computed0 = counts->computed, scored0 = counts->scored;
    int            rc    = ASSAY_OK;
    pipe_plan      pl    = {0};
    score_request *sr    = malloc(n * sizeof *sr);
    score_result  *tmp   = calloc(n, sizeof *tmp);
    int           *owner = NULL;
    unsigned char *own   = calloc(n, 1);
    char           hash[65];
    const char    *h = NULL;
    if (!sr || !tmp || !own) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", n);
        goto done;
    }
    if ((rc = plan_make(&pl, m, reqs, n, sh->size, err)))
        goto done;
    for (size_t i = 0; i < n; i++)
        counts->naive += (int64_t)reqs[i].n - 1;
    owner = malloc((pl.n_units ? pl.n_units : 1) * sizeof *owner);
    if (!owner) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu units", pl.n_units);
        goto done;
    }
    int64_t *cost = malloc((pl.n_units ? pl.n_units : 1) * sizeof *cost);
    if (!cost) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu units", pl.n_units);
        goto done;
    }
    for (size_t k = 0; k < pl.n_units; k++)
        cost[k] = pl.units[k].cost;
    rc = dist_assign(cost, pl.n_units, sh->size, owner, err);
    free(cost);
    if (rc)
        goto done;
    plan_mark_own(&pl, n, owner, sh->rank, own);
    if (sh->resume_dir) {
        for (size_t i = 0; i < n; i++)
            sr[i] = (score_request){.tokens     = reqs[i].tokens,
                                    .n_tokens   = (int)reqs[i].n,
                                    .score_from = (int)reqs[i].score_from};
        resume_hash(hash, sh, m, sr, n);
        h = hash;
    }
    int resumed = h && resume_load(sh, h, out, n, own);
    for (size_t k = 0; !resumed && k < pl.n_units; k++) {
        const pipe_unit *u = &pl.units[k];
        if (owner[k] != sh->rank)
            continue;
        if (u->kind == UNIT_GROUPS)
            rc = run_groups(m, pl.refs, pl.uniq, pl.u_off, u->a, u->b, u->p, sr, tmp, out, counts,
                            err);
        else if (u->kind == UNIT_SHARED)
            rc = run_shared(m, pl.refs, pl.uniq, pl.u_off[u->a], pl.u_off[u->b], u->p, sr, tmp, out,
                            counts, err);
        else
            rc = run_singles(m, &pl, u->a, u->b, sr, tmp, out, counts, err);
        if (rc)
            break;
        if (prog)
            progress_update(prog, counts->scored);
    }
    if (resumed)
        for (size_t i = 0; i < n; i++)
            counts->scored += own[i] ? out[i].n_targets : 0;
    /* Duplicates get copies of their distinct request's result, on the rank that has it. */
    for (size_t k = 0; !rc && !resumed && k < n; k++) {
        if (pl.dup_of[k] == k || !own[pl.refs[k].i])
            continue;
        if ((rc = result_copy(&out[pl.refs[k].i], &out[pl.refs[pl.dup_of[k]].i], err)))
            break;
        counts->scored += out[pl.refs[k].i].n_targets;
    }
    rc = shard_finish(sh, rc, h, out, n, own, 1, counts, computed0, scored0, err);
    if (prog && !rc)
        progress_update(prog, counts->scored);
done:
    score_results_free(tmp, tmp ? (int)n : 0);
    free(tmp);
    free(sr);
    free(owner);
    free(own);
    plan_free(&pl);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------------------ */

void pipe_ppl_plan_free(pipe_ppl_plan *p) {
    if (!p)
        return;
    free(p->w);
    memset(p, 0, sizeof *p);
}

int pipe_ppl_plan_make(pipe_ppl_plan *p, const pipe_doc *docs, size_t n_docs, int sliding,
                       size_t ctx, size_t stride, assay_error *err) {
    win_plan plan = {0};
    int      rc   = ASSAY_OK;
    memset(p, 0, sizeof *p);
    for (size_t d = 0; d < n_docs; d++) {
        size_t need = sliding ? 2 : 1;
        if (docs[d].n < need) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "%s: the document is %zu token(s); %s perplexity needs at least %zu",
                            docs[d].name, docs[d].n, sliding ? "sliding" : "rolling", need);
            goto done;
        }
        plan.n = 0;
        rc     = sliding ? win_plan_sliding(&plan, docs[d].n, ctx, stride, err)
                         : win_plan_rolling(&plan, docs[d].n, ctx, 1, err);
        if (rc)
            goto done;
        pipe_window *nw = realloc(p->w, (p->n + plan.n) * sizeof *nw);
        if (!nw) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory planning windows", docs[d].name);
            goto done;
        }
        p->w = nw;
        for (size_t k = 0; k < plan.n; k++) {
            int64_t len  = (int64_t)win_len(&plan.spans[k]);
            p->w[p->n++] = (pipe_window){.doc = d, .span = plan.spans[k]};
            p->request_tokens += len;
            p->scored += (int64_t)win_scored(&plan.spans[k]);
            if (len > p->longest)
                p->longest = len;
        }
    }
done:
    win_plan_free(&plan);
    if (rc)
        pipe_ppl_plan_free(p);
    return rc;
}

/* A NaN or infinite log-prob: a perplexity computed from it would mean nothing. Names the
 * document, the window (1-based within the document) and the token. */
static int fail_nonfinite(const pipe_doc *doc, const pipe_window *work, size_t k,
                          const score_result *r, const char *model_dir, assay_error *err) {
    size_t nth = 1;
    while (nth <= k && work[k - nth].doc == work[k].doc)
        nth++;
    int at = 0;
    while (at + 1 < r->n_targets && isfinite(r->logprob[at]))
        at++;
    const win_span *s = &work[k].span;
    /* request index score_from + at is document token start + that, less the prefix token */
    size_t tok = s->start + s->score_from + (size_t)at - (s->prefix ? 1 : 0);
    return assay_fail(err, ASSAY_ECHECK,
                      "%s: window %zu (tokens %zu..%zu) gives log-prob %g for token %zu: %s has "
                      "NaN or infinite weights or activations, so no perplexity is reported",
                      doc->name, nth, s->start, s->end - 1, (double)r->logprob[at], tok, model_dir);
}

int pipe_ppl_run(model *m, const pipe_ppl_plan *p, const pipe_doc *docs, int32_t prefix,
                 const char *model_dir, pipe_counts *counts, progress *prog, assay_error *err) {
    return pipe_ppl_run_on(m, p, docs, prefix, model_dir, counts, prog, NULL, err);
}

int pipe_ppl_run_on(model *m, const pipe_ppl_plan *p, const pipe_doc *docs, int32_t prefix,
                    const char *model_dir, pipe_counts *counts, progress *prog,
                    const pipe_shard *sh, assay_error *err) {
    pipe_shard one = {.rank = 0, .size = 1};
    if (!sh)
        sh = &one;
    if (sh->size < 1 || sh->rank < 0 || sh->rank >= sh->size)
        return assay_fail(err, ASSAY_EINVAL, "shard: rank %d of %d", sh->rank, sh->size);
    int64_t group_tokens = (int64_t)model_max_batch_tokens(m) * PIPE_GROUP_BATCHES;
    /* several ranks: groups small enough to balance (at most 1/(4 * ranks) of the tokens) */
    if (sh->size > 1 && group_tokens > p->request_tokens / (sh->size * PIPE_UNITS_PER_RANK))
        group_tokens = p->request_tokens / (sh->size * PIPE_UNITS_PER_RANK);
    if (group_tokens < p->longest)
        group_tokens = p->longest;
    int64_t        computed0 = counts->computed, scored0 = counts->scored;
    int            rc   = ASSAY_OK;
    size_t         nw   = p->n ? p->n : 1;
    int32_t       *buf  = malloc((size_t)(group_tokens + p->longest) * sizeof *buf);
    score_request *reqs = malloc(nw * sizeof *reqs);
    score_result  *res  = calloc(nw, sizeof *res);
    size_t  *start = malloc((nw + 1) * sizeof *start); /* units: windows [start[u], start[u+1]) */
    int64_t *cost  = malloc(nw * sizeof *cost);
    int     *owner = malloc(nw * sizeof *owner);
    unsigned char *own    = calloc(nw, 1);
    size_t         n_unit = 0;
    char           hash[65];
    const char    *h = NULL;
    if (!buf || !reqs || !res || !start || !cost || !owner || !own) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu windows", p->n);
        goto done;
    }
    for (size_t w = 0; w < p->n;) {
        size_t  first = w;
        int64_t used  = 0;
        cost[n_unit]  = 0;
        while (w < p->n && (w == first || used + (int64_t)win_len(&p->w[w].span) <= group_tokens)) {
            used += (int64_t)win_len(&p->w[w].span);
            cost[n_unit] += (int64_t)win_len(&p->w[w].span) - 1;
            w++;
        }
        start[n_unit++] = first;
    }
    start[n_unit] = p->n;
    if ((rc = dist_assign(cost, n_unit, sh->size, owner, err)))
        goto done;
    for (size_t u = 0; u < n_unit; u++)
        for (size_t w = start[u]; w < start[u + 1]; w++)
            own[w] = owner[u] == sh->rank;
    if (sh->resume_dir) {
        /* the windows' identity: their tokens, filled one at a time */
        sha256_ctx c;
        sha256_init(&c);
        resume_hash_model(&c, sh, m);
        int64_t head[4] = {sh->size, (int64_t)p->n, model_max_batch_tokens(m), prefix};
        sha256_update(&c, head, sizeof head);
        for (size_t w = 0; w < p->n; w++) {
            win_fill_tokens(buf, &p->w[w].span, docs[p->w[w].doc].ids, prefix);
            int64_t wh[2] = {(int64_t)win_len(&p->w[w].span), (int64_t)p->w[w].span.score_from};
            sha256_update(&c, wh, sizeof wh);
            sha256_update(&c, buf, win_len(&p->w[w].span) * sizeof *buf);
        }
        sha256_hex(&c, hash);
        h = hash;
    }
    int resumed = h && resume_load(sh, h, res, p->n, own);
    for (size_t u = 0; !resumed && u < n_unit; u++) {
        if (owner[u] != sh->rank)
            continue;
        size_t  first = start[u], end = start[u + 1];
        int64_t used = 0;
        for (size_t w = first; w < end; w++) {
            const pipe_doc *doc = &docs[p->w[w].doc];
            win_fill_tokens(buf + used, &p->w[w].span, doc->ids, prefix);
            reqs[w] = (score_request){.tokens     = buf + used,
                                      .n_tokens   = (int)win_len(&p->w[w].span),
                                      .score_from = (int)p->w[w].span.score_from};
            used += (int64_t)win_len(&p->w[w].span);
        }
        if ((rc = model_score(m, reqs + first, (int)(end - first), res + first, err)))
            break;
        for (size_t k = first; k < end; k++) {
            if (!isfinite(res[k].sum)) {
                rc = fail_nonfinite(&docs[p->w[k].doc], p->w, k, &res[k], model_dir, err);
                break;
            }
            counts->scored += res[k].n_targets;
            counts->computed += (int64_t)win_len(&p->w[k].span) - 1;
            /* only the sums travel on: the per-token arrays of a window are not kept */
            free(res[k].logprob), free(res[k].is_greedy);
            res[k].logprob   = NULL;
            res[k].is_greedy = NULL;
        }
        if (rc)
            break;
        if (prog)
            progress_update(prog, counts->scored);
    }
    if (resumed)
        for (size_t k = 0; k < p->n; k++)
            counts->scored += own[k] ? res[k].n_targets : 0;
    if ((rc = shard_finish(sh, rc, h, res, p->n, own, 0, counts, computed0, scored0, err)))
        goto done;
    /* every window, in order, into its document's stats: the same sums as one process adds */
    for (size_t k = 0; k < p->n; k++) {
        const win_span *s = &p->w[k].span;
        if (!sh->exchange && !own[k])
            continue;
        if (res[k].n_targets != (int)win_scored(s)) {
            rc = assay_fail(err, ASSAY_EINTERNAL, "%s: window scored %d targets, expected %zu",
                            docs[p->w[k].doc].name, res[k].n_targets, win_scored(s));
            goto done;
        }
        ppl_stats_add_window(docs[p->w[k].doc].st, -res[k].sum, res[k].n_targets,
                             (int64_t)s->hf_count);
        counts->naive += (int64_t)win_len(s) - 1;
    }
    if (prog)
        progress_update(prog, counts->scored);
done:
    score_results_free(res, (int)p->n);
    free(res);
    free(own);
    free(owner);
    free(cost);
    free(start);
    free(reqs);
    free(buf);
    return rc;
}
