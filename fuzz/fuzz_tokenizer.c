/* fuzz/fuzz_tokenizer.c — libFuzzer target for the tokenizer. The first input byte picks the
 * mode: even, the rest is a tokenizer.json to load (then encode and decode a fixed text with it);
 * odd, the rest is text encoded (and decoded back) by two fixed tokenizers: byte-level with a
 * Split regex and added tokens, and SentencePiece-style with normalizers, Metaspace and
 * byte_fallback. Bit 1 of the first byte turns split_special off, bit 2 replace_invalid on. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/tokenizer.h"

static const char BYTELEVEL_JSON[] =
    "{\"added_tokens\":[{\"id\":9,\"content\":\"<|eot|>\",\"special\":true,\"normalized\":false},"
    "{\"id\":10,\"content\":\" "
    "ab\",\"lstrip\":true,\"rstrip\":true,\"single_word\":true,\"normalized\":true}],"
    "\"normalizer\":{\"type\":\"NFKC\"},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{"
    "\"Regex\":"
    "\"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
    "\"use_regex\":false}]},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|"
    "eot|>\"}},"
    "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<|eot|>\":{\"id\":\"<|eot|>\",\"ids\":[9]"
    "}}},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"\\u0120\":2,"
    "\"ab\":3,\"\\u0120a\":4,"
    "\"\\u0120ab\":5,\"c\":6,\"\\u010a\":7,\"1\":8},\"merges\":[\"a b\",\"\\u0120 a\",\"\\u0120a "
    "b\"]}}";

static const char SPM_JSON[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<"
    "s>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\"},{\"type\":"
    "\"Lowercase\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\d\"},\"content\":\"#\"}]},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Punctuation\","
    "\"behavior\":\"Contiguous\"},"
    "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":"
    "true}]},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{"
    "\"String\":\"\\u2581\"},"
    "\"content\":\" "
    "\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" "
    "\",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0x41>\":2,\"<0xC3>\":3,\"<0xA9>\":4,\"\\u2581\":5,\"a\":6,"
    "\"b\":7,\"\\u2581a\":8,\"#\":9},"
    "\"merges\":[[\"\\u2581\",\"a\"]]}}";

static tokenizer *fixed[2];

static void run(const tokenizer *t, const char *text, size_t len, int flags) {
    tok_encode_opts o = tok_default_opts();
    o.split_special   = !(flags & 2);
    o.replace_invalid = (flags & 4) != 0;
    tok_ids     v     = {0};
    assay_error err;
    if (tok_encode(t, text, len, &o, 1, &v, &err) == 0) {
        for (size_t i = 0; i < v.n; i++)
            if (v.offsets[2 * i] < 0 || v.offsets[2 * i] > v.offsets[2 * i + 1] ||
                (size_t)v.offsets[2 * i + 1] > len)
                abort(); /* offsets must lie inside the input */
        char *d = NULL;
        if (tok_decode(t, v.ids, v.n, flags & 1, &d, NULL, &err) == 0)
            free(d);
    }
    tok_ids_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    int         flags = data[0];
    const char *rest  = (const char *)data + 1;
    size_t      n     = size - 1;
    assay_error err;
    if (!(flags & 1)) {
        tokenizer *t = tok_load_buffer(rest, n, "fuzz.json", &err);
        if (t) {
            run(t, "Hello, world! 123 <s> \xc3\xa9", 22, flags);
            tok_free(t);
        }
        return 0;
    }
    if (!fixed[0]) {
        fixed[0] = tok_load_buffer(BYTELEVEL_JSON, sizeof BYTELEVEL_JSON - 1, "bytelevel", &err);
        fixed[1] = tok_load_buffer(SPM_JSON, sizeof SPM_JSON - 1, "spm", &err);
        if (!fixed[0] || !fixed[1])
            abort(); /* the fixed tokenizers must load */
    }
    run(fixed[0], rest, n, flags);
    run(fixed[1], rest, n, flags);
    return 0;
}
