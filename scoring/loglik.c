#include "scoring/loglik.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "scoring/ppl.h"

int loglik_encode_tokenizer(void *ctx, const char *text, size_t len, tok_ids *out,
                            assay_error *err) {
    tok_encode_opts o = tok_default_opts();
    o.add_special     = 0;
    o.split_special   = 1;
    return tok_encode((const tokenizer *)ctx, text, len, &o, 0, out, err);
}

/* Byte length of the trailing Python-whitespace run of s[0..len). */
static size_t trailing_space_bytes(const char *s, size_t len) {
    size_t keep = 0; /* end of the last non-space code point */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t   k = ppl_utf8_next(s + i, len - i, &cp);
        i += k;
        if (!ppl_is_py_space(cp))
            keep = i;
    }
    return len - keep;
}

static int ids_append(tok_ids *v, const int32_t *ids, size_t n, assay_error *err) {
    if (n > SIZE_MAX / sizeof(int32_t) - v->n)
        return assay_fail(err, ASSAY_ENOMEM, "token list too long");
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 16;
        while (cap < v->n + n)
            cap *= 2;
        int32_t *ni = realloc(v->ids, cap * sizeof *ni);
        if (!ni)
            return assay_fail(err, ASSAY_ENOMEM, "out of memory (%zu tokens)", cap);
        v->ids = ni;
        v->cap = cap;
    }
    if (n) /* ids and v->ids may be NULL when empty: memcpy(NULL, ..., 0) is undefined */
        memcpy(v->ids + v->n, ids, n * sizeof *ids);
    v->n += n;
    return ASSAY_OK;
}

int loglik_encode_pair(loglik_encode_fn enc, void *enc_ctx, const char *context, size_t ctx_len,
                       const char *continuation, size_t cont_len, int32_t prefix_token,
                       tok_ids *ctx_out, tok_ids *cont_out, assay_error *err) {
    tok_ids whole  = {0};
    char   *joined = NULL;
    int     rc;
    ctx_out->n = cont_out->n = 0;
    if (ctx_len == 0) {
        if ((rc = enc(enc_ctx, continuation, cont_len, &whole, err)))
            goto fail;
        if (whole.n > 0 && whole.ids[0] == prefix_token) {
            if ((rc = ids_append(ctx_out, whole.ids, 1, err)) ||
                (rc = ids_append(cont_out, whole.ids + 1, whole.n - 1, err)))
                goto fail;
        } else {
            if ((rc = ids_append(ctx_out, &prefix_token, 1, err)) ||
                (rc = ids_append(cont_out, whole.ids, whole.n, err)))
                goto fail;
        }
        tok_ids_free(&whole);
        return ASSAY_OK;
    }
    size_t n_sp = trailing_space_bytes(context, ctx_len);
    size_t c_n  = ctx_len - n_sp, total;
    if (size_add(ctx_len, cont_len, &total) || total == SIZE_MAX) {
        rc = assay_fail(err, ASSAY_EINVAL, "context + continuation too long");
        goto fail;
    }
    joined = malloc(total + 1);
    if (!joined) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory (%zu bytes of text)", total);
        goto fail;
    }
    memcpy(joined, context, ctx_len);
    memcpy(joined + ctx_len, continuation, cont_len);
    joined[total] = '\0';
    if ((rc = enc(enc_ctx, joined, total, &whole, err)) ||
        (rc = enc(enc_ctx, joined, c_n, ctx_out, err)))
        goto fail;
    if (ctx_out->n <= whole.n &&
        (rc = ids_append(cont_out, whole.ids + ctx_out->n, whole.n - ctx_out->n, err)))
        goto fail;
    tok_ids_free(&whole);
    free(joined);
    return ASSAY_OK;
fail:
    tok_ids_free(&whole);
    free(joined);
    return rc;
}

int loglik_build_request(const int32_t *ctx, size_t n_ctx, const int32_t *cont, size_t n_cont,
                         size_t max_len, const char *what, int32_t **tokens_out, size_t *n_out,
                         size_t *score_from_out, assay_error *err) {
    *tokens_out = NULL;
    if (n_cont == 0)
        return assay_fail(err, ASSAY_EINVAL, "%s: the continuation encodes to no tokens", what);
    if (n_cont > max_len)
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: the continuation is %zu tokens; the model context is %zu", what,
                          n_cont, max_len);
    if (n_ctx == 0)
        return assay_fail(err, ASSAY_EINVAL, "%s: the context encodes to no tokens", what);
    size_t keep_ctx = n_ctx, n;
    if (n_ctx + n_cont > max_len + 1) /* no overflow: n_cont <= max_len */
        keep_ctx = max_len + 1 - n_cont;
    n            = keep_ctx + n_cont;
    int32_t *tok = malloc(n * sizeof *tok);
    if (!tok)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory (%zu tokens)", what, n);
    memcpy(tok, ctx + (n_ctx - keep_ctx), keep_ctx * sizeof *tok);
    memcpy(tok + keep_ctx, cont, n_cont * sizeof *tok);
    *tokens_out     = tok;
    *n_out          = n;
    *score_from_out = keep_ctx;
    return ASSAY_OK;
}
