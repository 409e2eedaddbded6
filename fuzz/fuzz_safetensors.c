/* fuzz/fuzz_safetensors.c — the safetensors reader over arbitrary bytes: it must reject or accept
 * without reading outside the buffer, and every accepted tensor must lie inside it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    assay_error err;
    assay_error_clear(&err);
    st_file *f = st_open_buffer(data, size, "fuzz.safetensors", &err);
    if (!f) {
        if (err.code == 0 || strncmp(err.msg, "fuzz.safetensors: ", 18) != 0)
            abort(); /* every failure sets a code and a message naming the input */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (int i = 0; i < st_file_count(f); i++) {
        const st_tensor *t = st_file_tensor(f, i);
        const uint8_t   *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size))
            abort();
        if (t->nbytes) /* touch both ends so ASan sees any out-of-range view */
            sink ^= p[0] ^ p[t->nbytes - 1];
    }
    (void)st_file_metadata(f, "format");
    (void)sink;
    st_close(f);
    return 0;
}
