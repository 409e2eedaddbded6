/* fuzz/fuzz_gguf.c — the GGUF reader over arbitrary bytes: it must reject or accept without
 * reading outside the buffer; every accepted tensor lies inside it, every metadata value can be
 * read back, supported tensors dequantize, and the llama config, the tensor check, and the
 * tokenizer builders (JSON texts, then the tokenizer the CLI loads from them) cope. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/gguf.h"
#include "loader/gguf_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    assay_error err;
    assay_error_clear(&err);
    /* a private copy of exactly `size` bytes, so ASan flags any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    gguf_file *f = gguf_open_buffer(buf, size, "fuzz.gguf", &err);
    if (!f) {
        if (err.code == 0 || strncmp(err.msg, "fuzz.gguf: ", 11) != 0)
            abort(); /* every failure sets a code and a message naming the input */
        free(buf);
        return 0;
    }
    volatile double sink = 0;
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_kv_key(f, i);
        int64_t     iv;
        double      dv;
        size_t      len;
        int         et;
        if (gguf_get_int(f, key, &iv) == 0)
            sink += (double)iv;
        if (gguf_get_float(f, key, &dv) == 0)
            sink += dv;
        const char *s = gguf_get_str(f, key, &len);
        if (s && len)
            sink += s[0] + s[len - 1];
        int64_t n = gguf_get_arr_n(f, key, &et);
        for (int64_t k = 0; k < n && k < 64; k++) {
            if ((s = gguf_get_arr_str(f, key, k, &len)) && len)
                sink += s[0] + s[len - 1];
            if (gguf_get_arr_int(f, key, k, &iv) == 0)
                sink += (double)iv;
            if (gguf_get_arr_float(f, key, k, &dv) == 0)
                sink += dv;
        }
        if (n > 0) { /* the last element too */
            if ((s = gguf_get_arr_str(f, key, n - 1, &len)) && len)
                sink += s[len - 1];
            if (gguf_get_arr_float(f, key, n - 1, &dv) == 0)
                sink += dv;
        }
    }
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const uint8_t     *p = t->data;
        if (p < buf || p > buf + size || (t->nbytes && p + t->nbytes > buf + size))
            abort();
        if (gguf_find_tensor(f, t->name) != t)
            abort();
        if (t->nbytes && gguf_type_supported(t->type)) {
            int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            if (n <= (1 << 16)) {
                float *out = malloc((size_t)n * sizeof *out);
                if (out && gguf_dequantize(out, t->data, t->type, n) == 0)
                    sink += out[0] + out[n - 1];
                free(out);
            }
        }
    }
    size_t         hn;
    const uint8_t *h = gguf_header(f, &hn);
    if (h != buf || hn > size)
        abort(); /* what hashes_model reads lies inside the file */
    model_config cfg;
    if (gguf_to_config(f, &cfg, &err) == 0) {
        sink += cfg.dim;
        /* what model_load checks before planning memory (a MODEL given as a GGUF file) */
        if (gguf_check_tensors(f, &cfg, "fuzz.gguf", &err) != 0 &&
            (err.code == 0 || strncmp(err.msg, "fuzz.gguf: ", 11) != 0))
            abort();
    }
    char *tj = NULL, *tc = NULL;
    if (gguf_tokenizer_to_json(f, "fuzz.gguf", 16, &tj, &tc, &err) == 0)
        sink += (double)strlen(tj) + (double)strlen(tc);
    free(tj);
    free(tc);
    /* the tokenizer the CLI builds from those texts (tok_load of a GGUF path) */
    tokenizer *t = gguf_tokenizer_load(f, "fuzz.gguf", &err);
    if (t)
        sink += tok_vocab_size(t) + tok_bos_id(t);
    tok_free(t);
    (void)sink;
    gguf_close(f);
    free(buf);
    return 0;
}
