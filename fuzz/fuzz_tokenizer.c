/* fuzz/fuzz_tokenizer.c — libFuzzer target for the tokenizer. The first input byte picks the
 * mode: even, the rest is a tokenizer.json to load (then encode and decode a fixed text with it);
 * odd, the rest is text encoded (and decoded back) by two fixed tokenizers: byte-level with a
 * Split regex and added tokens, and SentencePiece-style with normalizers, Metaspace and
 * byte_fallback, plus two tokenizers whose texts are cut into pieces. Every encoding is also done
 * cut at every allowed point and must not change. Bit 1 of the first byte turns split_special
 * off, bit 2 replace_invalid on. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/tok_internal.h"
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

/* Two tokenizers whose long texts are cut into pieces (tok_encode_chunked): odd inputs are also
 * encoded cut at every allowed point, which must give what the whole text gives. They hold a
 * merge across a space, added tokens with spaces and strip flags, byte fallback. */
static const char SPMCUT_JSON[] =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"x a\",\"special\":false,\"normalized\":false},{"
    "\"id\":8,\"content\":\"<r>\",\"special\":true,\"rstrip\":true},{\"id\":9,\"content\":\"<l>"
    "\",\"special\":true,\"lstrip\":true},{\"id\":10,\"content\":\"w\",\"special\":false,\"norm"
    "alized\":false,\"single_word\":true}],\"normalizer\":{\"type\":\"Sequence\",\"normalizers"
    "\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"St"
    "ring\":\" \"},\"content\":\"\\u2581\"}]},\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>"
    "\",\"byte_fallback\":true,\"vocab\":{\"a\":0,\"e\":1,\"\\u2581\":2,\"e\\u2581\":3,\"\\u258"
    "1a\":4,\"x\":5,\"w\":6,\"<\":11,\">\":12,\"r\":13,\"l\":14,\"<unk>\":16,\"<0x0A>\":17,\""
    "\\u2581\\u2581\":18},\"merges\":[\"e \\u2581\",\"\\u2581 a\",\"\\u2581 \\u2581\"]}}";

static const char CL100K_JSON[] =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"x a\",\"special\":false,\"normalized\":false},{"
    "\"id\":8,\"content\":\"<r>\",\"special\":true,\"rstrip\":true},{\"id\":9,\"content\":\"<l>"
    "\",\"special\":true,\"lstrip\":true},{\"id\":10,\"content\":\"w\",\"special\":false,\"norm"
    "alized\":false,\"single_word\":true}],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":"
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i"
    ":'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s"
    "\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\""
    ":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_r"
    "egex\":false}]},\"post_processor\":{\"type\":\"ByteLevel\",\"trim_offsets\":true},\"model"
    "\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"e\":1,\"\\u0120\":2,\"\\u0120e\":3,\"\\u0120a\":"
    "4,\"x\":5,\"w\":6,\"\\u010a\":15,\"\\u010a\\u010a\":16,\"<\":11,\">\":12,\"r\":13,\"l\":14"
    ",\"\\u0120\\u0120\":17},\"merges\":[\"\\u0120 e\",\"\\u0120 a\",\"\\u010a \\u010a\",\"\\u0"
    "120 \\u0120\"]}}";

static tokenizer *fixed[4];

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
        /* cutting anywhere the rules allow changes no id and no offset */
        tok_ids c = {0};
        if (tok_encode_chunked(t, text, len, &o, 1, 1, &c, &err) != 0 || c.n != v.n ||
            (v.n && (memcmp(c.ids, v.ids, v.n * sizeof *v.ids) ||
                     memcmp(c.offsets, v.offsets, 2 * v.n * sizeof *v.offsets))))
            abort();
        tok_ids_free(&c);
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
        fixed[2] = tok_load_buffer(SPMCUT_JSON, sizeof SPMCUT_JSON - 1, "spm-cut", &err);
        fixed[3] = tok_load_buffer(CL100K_JSON, sizeof CL100K_JSON - 1, "cl100k-cut", &err);
        for (int i = 0; i < 4; i++)
            if (!fixed[i] || (i >= 2 && tok_chunking(fixed[i])))
                abort(); /* the fixed tokenizers must load, the last two must be cuttable */
    }
    for (int i = 0; i < 4; i++)
        run(fixed[i], rest, n, flags);
    return 0;
}
