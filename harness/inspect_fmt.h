/* harness/inspect_fmt.h — what each CPU weight format (--weights f32|bf16|q8_0) costs a model in
 * perplexity, measured on a text the user names (`assay inspect MODEL --formats-ppl FILE`): the
 * model is loaded once per format and scores the same tokens in the same windows, so the
 * differences are the formats' rounding alone. */
#ifndef ASSAY_INSPECT_FMT_H
#define ASSAY_INSPECT_FMT_H

#include <stdint.h>

#include "core/error.h"
#include "harness/cli_common.h"

struct cJSON;

/* Scores the first max_tokens tokens of text_path (encoded with the tokenizer's default special
 * tokens) in sliding windows of ctx tokens (stride ctx, the Hugging Face recipe) with each format
 * on the CPU, and appends to out (a JSON array) one object per format: "weights", "weight_bytes",
 * "tokens", "ppl", "change_pct" (against f32) and "tokens_per_s". ctx 0: min(512, the model's
 * max positions). */
int inspect_formats_ppl(const char *model_path, const char *text_path, int64_t ctx,
                        int64_t max_tokens, const cli_common *cc, struct cJSON *out,
                        assay_error *err);

#endif
