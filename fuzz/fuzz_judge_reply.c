/* fuzz/fuzz_judge_reply.c — what comes back from a judge server is untrusted: the reply parser,
 * then the verdict and rating parsers on its content and on the raw bytes. Nothing may crash or
 * read out of bounds; a parsed reply has content of the stated length and sane token counts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness/judge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    double      v = 0;
    /* the raw bytes as if they were a reply's content */
    judge_verdict raw = judge_parse_verdict(s, size);
    if (raw > JUDGE_V_C)
        abort();
    if (judge_parse_score(s, size, &v) && !(v >= 1 && v <= 10))
        abort();

    judge_reply r;
    assay_error err;
    if (judge_reply_parse(s, size, &r, &err) == ASSAY_OK) {
        if (!r.content || strlen(r.content) != r.content_len)
            abort();
        if (r.has_usage && (r.prompt_tokens < 0 || r.completion_tokens < 0))
            abort();
        judge_parse_verdict(r.content, r.content_len);
        if (judge_parse_score(r.content, r.content_len, &v) && !(v >= 1 && v <= 10))
            abort();
        judge_reply_free(&r);
    } else if (r.content) {
        abort(); /* nothing is handed out on failure */
    }
    return 0;
}
