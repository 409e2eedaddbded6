/* harness/pipeline.c — request grouping, shared contexts and window batching (see pipeline.h). */
#include "harness/pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int pipe_score_loglik(model *m, const pipe_request *reqs, size_t n, score_result *out,
                      pipe_counts *counts, progress *prog, assay_error *err) {
    if (n == 0)
        return ASSAY_OK;
    int            rc     = ASSAY_OK;
    pipe_ref      *refs   = malloc(n * sizeof *refs);
    size_t        *uniq   = malloc(n * sizeof *uniq); /* ref index of each distinct request */
    size_t        *u_off  = malloc((n + 1) * sizeof *u_off); /* per group: its first in uniq */
    size_t        *dup_of = malloc(n * sizeof *dup_of); /* ref index -> its distinct one's ref */
    size_t        *single = malloc(n * sizeof *single);
    score_request *sr     = malloc(n * sizeof *sr);
    score_result  *tmp    = calloc(n, sizeof *tmp);
    if (!refs || !uniq || !u_off || !dup_of || !single || !sr || !tmp) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu requests", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        refs[i] = (pipe_ref){&reqs[i], i};
    qsort(refs, n, sizeof *refs, cmp_ref);
    for (size_t i = 0; i < n; i++)
        counts->naive += (int64_t)reqs[i].n - 1;

    /* Groups: equal context tokens; inside, distinct requests (duplicates point at them). */
    size_t n_groups = 0, n_uniq = 0;
    for (size_t g = 0; g < n;) {
        size_t e = g + 1;
        while (e < n && same_ctx(refs[g].r, refs[e].r))
            e++;
        u_off[n_groups++] = n_uniq;
        for (size_t k = g; k < e; k++) {
            if (k > g && same_req(refs[uniq[n_uniq - 1]].r, refs[k].r)) {
                dup_of[k] = uniq[n_uniq - 1];
                continue;
            }
            dup_of[k]      = k;
            uniq[n_uniq++] = k;
        }
        g = e;
    }
    u_off[n_groups] = n_uniq;

    /* Sorted contexts put those with a common start (an MMLU subject's few-shot block) next to
     * each other. A run of k groups sharing their first p tokens computes those once instead of
     * k times (each group's own context then once, its continuations on top), saving (k - 1) * p
     * positions; the run that saves most is taken. Otherwise a group with two or more
     * continuations shares its own context, and the rest are batched as singles. */
    size_t n_single = 0;
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
            if ((rc = run_groups(m, refs, uniq, u_off, g, best_end, best_p, sr, tmp, out, counts,
                                 err)))
                goto done;
        } else if (u_off[g + 1] - u_off[g] > 1) {
            if ((rc = run_shared(m, refs, uniq, u_off[g], u_off[g + 1], first->score_from, sr, tmp,
                                 out, counts, err)))
                goto done;
        } else {
            single[n_single++] = uniq[u_off[g]]; /* scored with the other singles below */
            g                  = best_end;
            continue;
        }
        if (prog)
            progress_update(prog, counts->scored);
        g = best_end;
    }
    /* Singles in groups of about PIPE_GROUP_BATCHES forward passes. */
    int64_t budget = (int64_t)model_max_batch_tokens(m) * PIPE_GROUP_BATCHES;
    for (size_t s = 0; s < n_single;) {
        size_t  first = s;
        int64_t used  = 0;
        while (s < n_single && (s == first || used + (int64_t)refs[single[s]].r->n <= budget)) {
            const pipe_request *r = refs[single[s]].r;
            sr[s - first]         = (score_request){
                        .tokens = r->tokens, .n_tokens = (int)r->n, .score_from = (int)r->score_from};
            used += (int64_t)r->n;
            counts->computed += (int64_t)r->n - 1;
            s++;
        }
        if ((rc = model_score(m, sr, (int)(s - first), tmp, err)))
            goto done;
        for (size_t k = first; k < s; k++) {
            out[refs[single[k]].i] = tmp[k - first];
            memset(&tmp[k - first], 0, sizeof tmp[k - first]);
            counts->scored += out[refs[single[k]].i].n_targets;
        }
        if (prog)
            progress_update(prog, counts->scored);
    }
    /* Duplicates get copies of their distinct request's result. */
    for (size_t k = 0; k < n; k++) {
        if (dup_of[k] == k)
            continue;
        if ((rc = result_copy(&out[refs[k].i], &out[refs[dup_of[k]].i], err)))
            goto done;
        counts->scored += out[refs[k].i].n_targets;
    }
    if (prog)
        progress_update(prog, counts->scored);
done:
    score_results_free(tmp, tmp ? (int)n : 0);
    free(tmp);
    free(sr);
    free(single);
    free(dup_of);
    free(u_off);
    free(uniq);
    free(refs);
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
    int64_t group_tokens = (int64_t)model_max_batch_tokens(m) * PIPE_GROUP_BATCHES;
    if (group_tokens < p->longest)
        group_tokens = p->longest;
    int            rc    = ASSAY_OK;
    int32_t       *buf   = malloc((size_t)(group_tokens + p->longest) * sizeof *buf);
    score_request *reqs  = malloc((p->n ? p->n : 1) * sizeof *reqs);
    score_result  *res   = calloc(p->n ? p->n : 1, sizeof *res);
    int            n_res = 0;
    if (!buf || !reqs || !res) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu windows", p->n);
        goto done;
    }
    for (size_t w = 0; w < p->n;) {
        size_t  first = w;
        int64_t used  = 0;
        while (w < p->n && (w == first || used + (int64_t)win_len(&p->w[w].span) <= group_tokens)) {
            const pipe_doc *doc = &docs[p->w[w].doc];
            win_fill_tokens(buf + used, &p->w[w].span, doc->ids, prefix);
            reqs[w] = (score_request){.tokens     = buf + used,
                                      .n_tokens   = (int)win_len(&p->w[w].span),
                                      .score_from = (int)p->w[w].span.score_from};
            used += (int64_t)win_len(&p->w[w].span);
            w++;
        }
        int n = (int)(w - first);
        n_res = (int)w; /* res is zeroed, so a partly filled group frees cleanly */
        if ((rc = model_score(m, reqs + first, n, res + first, err)))
            goto done;
        for (size_t k = first; k < w; k++) {
            const win_span *s = &p->w[k].span;
            if (res[k].n_targets != (int)win_scored(s)) {
                rc = assay_fail(err, ASSAY_EINTERNAL, "%s: window scored %d targets, expected %zu",
                                docs[p->w[k].doc].name, res[k].n_targets, win_scored(s));
                goto done;
            }
            if (!isfinite(res[k].sum)) {
                rc = fail_nonfinite(&docs[p->w[k].doc], p->w, k, &res[k], model_dir, err);
                goto done;
            }
            ppl_stats_add_window(docs[p->w[k].doc].st, -res[k].sum, res[k].n_targets,
                                 (int64_t)s->hf_count);
            counts->scored += res[k].n_targets;
            counts->computed += (int64_t)win_len(s) - 1;
            counts->naive += (int64_t)win_len(s) - 1;
        }
        score_results_free(res + first, n);
        if (prog)
            progress_update(prog, counts->scored);
    }
done:
    score_results_free(res, n_res);
    free(res);
    free(reqs);
    free(buf);
    return rc;
}
