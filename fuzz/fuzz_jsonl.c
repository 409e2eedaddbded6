/* fuzz/fuzz_jsonl.c — the JSON Lines reader and its field helpers on arbitrary bytes: every line
 * either yields an object or an error that names "fuzz:LINE"; strings come back NUL-restored with
 * their lengths and print back as valid JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    jsonl_reader r;
    memset(&r, 0, sizeof r);
    r.fp = fmemopen((void *)data, size, "r");
    if (!r.fp)
        return 0;
    snprintf(r.path, sizeof r.path, "fuzz");
    /* small caps so the fuzzer reaches the over-the-cap paths */
    r.line_max   = 4096;
    r.values_max = 64;
    for (int i = 0; i < 1000; i++) {
        cJSON      *obj = NULL;
        assay_error err;
        int         rc = jsonl_next(&r, &obj, &err);
        if (rc == 0)
            break;
        if (rc != 1) {
            if (strncmp(err.msg, "fuzz:", 5) != 0)
                abort(); /* every error names file:line */
            break;
        }
        const char              *s;
        size_t                   len, n;
        int64_t                  v;
        int                      present;
        const char             **strs    = NULL;
        size_t                  *lens    = NULL;
        int32_t                 *ids     = NULL;
        static const char *const known[] = {"text", "stop", "context_ids", NULL};
        if (jsonl_check_fields(&r, obj, known, 1, &err) != 0 && strncmp(err.msg, "fuzz:", 5) != 0)
            abort();
        /* a restored string is exactly as long as reported; printing it back is valid JSON */
        if (jsonl_get_string(&r, obj, "text", 0, &s, &len, &err) == 0 && s) {
            cJSON *c    = jsonl_string_create(s, len);
            char  *p    = c ? jsonl_print(c, 0) : NULL;
            cJSON *back = p ? cJSON_Parse(p) : NULL;
            if (p && !back)
                abort();
            cJSON_Delete(back);
            free(p);
            cJSON_Delete(c);
        }
        jsonl_get_int(&r, obj, "max_new_tokens", 1, 1 << 20, &present, &v, &err);
        if (jsonl_get_strings(&r, obj, "stop", &strs, &lens, &n, &err) == 0) {
            for (size_t k = 0; k < n; k++)
                if (lens[k] > JSONL_LINE_MAX || memchr(strs[k], 0xFF, lens[k]))
                    abort(); /* every NUL mark was restored */
            free(strs);
            free(lens);
        }
        if (jsonl_get_ids(&r, obj, "context_ids", 512, &ids, &n, &err) == 0) {
            for (size_t k = 0; k < n; k++)
                if (ids[k] < 0 || ids[k] >= 512)
                    abort();
            free(ids);
        }
        cJSON_Delete(obj);
    }
    jsonl_close(&r);
    return 0;
}
