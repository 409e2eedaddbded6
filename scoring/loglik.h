/* scoring/loglik.h — lm-eval's loglikelihood request building: the context/continuation split
 * (_encode_pair), the empty-context prefix token, and left truncation to the model's length. */
#ifndef ASSAY_LOGLIK_H
#define ASSAY_LOGLIK_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "loader/tokenizer.h"

/* Encodes text[0..len) without special tokens and appends to out (lm-eval HFLM.tok_encode with
 * add_special_tokens=False). A callback so tests can use a fake tokenizer. */
typedef int (*loglik_encode_fn)(void *ctx, const char *text, size_t len, tok_ids *out,
                                assay_error *err);

/* The loglik_encode_fn for a real tokenizer (ctx is a const tokenizer *): no special tokens
 * added, special-token text split as the HF tokenizer does. */
int loglik_encode_tokenizer(void *ctx, const char *text, size_t len, tok_ids *out,
                            assay_error *err);

/* lm-eval loglikelihood encoding of one (context, continuation) pair:
 * - empty context: cont = encode(continuation); context = [prefix_token] unless cont already
 *   starts with it, in which case that first token becomes the context;
 * - otherwise trailing whitespace (Python str.isspace) of the context moves to the front of the
 *   continuation; whole = encode(context + continuation), ctx = encode(context),
 *   cont = whole[len(ctx):].
 * ctx_out and cont_out are cleared first (ids only, no offsets). */
int loglik_encode_pair(loglik_encode_fn enc, void *enc_ctx, const char *context, size_t ctx_len,
                       const char *continuation, size_t cont_len, int32_t prefix_token,
                       tok_ids *ctx_out, tok_ids *cont_out, assay_error *err);

/* The score request of (ctx, cont): (ctx + cont) keeping the last max_len + 1 tokens (the model
 * reads all but the last, so at most max_len positions), scoring from the first continuation
 * token. *tokens_out is malloc'd (caller frees). Fails when the continuation is empty or does
 * not fit (it needs at least one token of context before it). `what` names the request in
 * messages (e.g. "requests.jsonl:3"). */
int loglik_build_request(const int32_t *ctx, size_t n_ctx, const int32_t *cont, size_t n_cont,
                         size_t max_len, const char *what, int32_t **tokens_out, size_t *n_out,
                         size_t *score_from_out, assay_error *err);

#endif
