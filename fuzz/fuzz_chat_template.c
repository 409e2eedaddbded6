/* fuzz/fuzz_chat_template.c — chat_template_parse on arbitrary bytes (up to the first NUL; the
 * bytes after it become a message's content); a template that parses is rendered over a fixed
 * conversation and must finish within the caps, with NUL-terminated output of the stated length
 * or an error message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char    *text = (const char *)data;
    const char    *sep  = memchr(text, 0, size);
    size_t         tlen = sep ? (size_t)(sep - text) : size;
    const char    *user = sep ? sep + 1 : "What is 2+2?";
    size_t         ulen = sep ? size - tlen - 1 : 12;
    assay_error    err  = {0};
    chat_template *t    = chat_template_parse(text, tlen, "fuzz", &err);
    if (!t) {
        if (!err.code || !err.msg[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    chat_message m[4] = {{"system", "Be brief.", 9},
                         {"user", user, ulen},
                         {"assistant", " ok\n", 4},
                         {"user", "next", 4}};
    for (int pass = 0; pass < 2; pass++) {
        chat_vars   v   = {pass ? "<s>" : NULL, "</s>", pass};
        char       *out = NULL;
        size_t      len = 0;
        assay_error e   = {0};
        int rc = chat_template_render(t, pass ? m : m + 1, pass ? 4 : 1, &v, &out, &len, &e);
        if (rc == 0 && (!out || out[len] != 0))
            abort();
        if (rc != 0 && (out || !e.msg[0]))
            abort();
        free(out);
    }
    chat_template_free(t);
    return 0;
}
