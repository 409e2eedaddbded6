/* loader/tokenizer.h — Hugging Face tokenizer.json (plus tokenizer_config.json) in C, token for
 * token identical to the `tokenizers` library. Public API; internals live in loader/tokenizer*.c.
 */
#ifndef ASSAY_TOKENIZER_H
#define ASSAY_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct tokenizer tokenizer;

/* Offsets are BYTE spans [start, end) of the ORIGINAL input (HF reports char offsets); special
 * tokens added by the post-processor get [0, 0). Invalid UTF-8 in the input is an error naming the
 * byte offset ("invalid UTF-8 at byte 17") unless opts.replace_invalid, which replaces each
 * maximal invalid sequence with U+FFFD (as Rust's from_utf8_lossy) and encodes that text; offsets
 * still point into the original bytes. Supported: BPE models (merges as "a b" or ["a","b"],
 * byte_fallback, unk_token/fuse_unk, ignore_merges, continuing_subword_prefix/end_of_word_suffix,
 * dropout null); normalizers NFC NFD NFKC NFKD Lowercase Strip StripAccents Prepend Replace
 * Sequence; pre-tokenizers Split ByteLevel Metaspace Digits Punctuation Whitespace WhitespaceSplit
 * BertPreTokenizer CharDelimiterSplit Sequence (ByteLevel only last); post-processors
 * TemplateProcessing ByteLevel RobertaProcessing BertProcessing Sequence; decoders ByteLevel
 * Replace ByteFallback Fuse Strip Metaspace BPEDecoder WordPiece Sequence. Not applied:
 * tokenizer.json "truncation" and "padding". Differences from HF on purpose: tok_decode rejects
 * ids outside the vocab (HF drops them silently). A tokenizer is immutable after loading:
 * encode/decode may run from several threads at once.
 *
 * `path` is a model directory (tokenizer.json + optional tokenizer_config.json, or GPT-2's
 * encoder.json + vocab.bpe), a GGUF file (its tokenizer.ggml.* metadata, as `assay convert` would
 * write it: tok_load_gguf) or a tokenizer.json file. */
tokenizer *tok_load(const char *path, assay_error *err);
void       tok_free(tokenizer *t); /* NULL-safe */

/* Loads a tokenizer.json held in memory (no tokenizer_config.json); `name` (may be NULL) is used
 * in error messages. */
tokenizer *tok_load_buffer(const char *json, size_t len, const char *name, assay_error *err);
/* The same with tokenizer_config.json text (`cfg` may be NULL: none), as tok_load applies the
 * file of that name. */
tokenizer *tok_load_buffers(const char *json, size_t len, const char *cfg, size_t cfg_len,
                            const char *name, assay_error *err);

typedef struct tok_encode_opts {
    int add_special;     /* apply the post-processor (BOS/EOS as the config says) */
    int split_special;   /* 1: special-token text in the input becomes special tokens (HF
                            default); 0: treat it as plain text (for scoring untrusted text;
                            = HF's encode_special_tokens=True: non-special added tokens still
                            match) */
    int replace_invalid; /* 1: invalid UTF-8 becomes U+FFFD; 0: error naming the byte offset */
} tok_encode_opts;

tok_encode_opts tok_default_opts(void); /* add_special=1, split_special=1, replace_invalid=0 */

/* A growable id list with byte offsets into the input text: [start, end) per token. */
typedef struct tok_ids {
    int32_t *ids;
    int32_t *offsets; /* 2 per token; may be NULL when not requested */
    size_t   n, cap;
} tok_ids;

void tok_ids_free(tok_ids *v); /* frees the arrays, leaves v zeroed */

/* Encodes text[0..len) and appends to out. want_offsets: fill out->offsets. */
int tok_encode(const tokenizer *t, const char *text, size_t len, const tok_encode_opts *opts,
               int want_offsets, tok_ids *out, assay_error *err);

/* Long texts are encoded in pieces cut where the result provably cannot change (see
 * loader/tokenizer.c, "chunked encoding"), so working memory stays bounded by the piece size
 * (256 KiB of text) rather than the text; tokenizers whose components do not allow a cut are
 * encoded whole (tok_chunking says which). The ids are the same either way.
 *
 * Streaming form for long texts: tokens are handed to sink(ctx, part) as they are made; each
 * part holds the tokens since the previous call (offsets, when wanted, into the whole text) and
 * is reused once the sink returns. A nonzero return from the sink stops encoding and is
 * returned as it is. Errors found before any token is made (invalid UTF-8) come first. */
typedef int (*tok_sink_fn)(void *ctx, const tok_ids *part);
int tok_encode_stream(const tokenizer *t, const char *text, size_t len, const tok_encode_opts *opts,
                      int want_offsets, tok_sink_fn sink, void *ctx, assay_error *err);

/* NULL when long texts are cut into pieces; else the component that makes this tokenizer encode
 * a text whole. */
const char *tok_chunking(const tokenizer *t);

/* Decodes ids into a malloc'd NUL-terminated string (*out, length *out_len may be NULL). */
int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
               size_t *out_len, assay_error *err);

int         tok_vocab_size(const tokenizer *t);                     /* including added tokens */
const char *tok_id_to_piece(const tokenizer *t, int32_t id);        /* NULL if out of range */
int32_t     tok_piece_to_id(const tokenizer *t, const char *piece); /* -1 if absent */
int32_t     tok_bos_id(const tokenizer *t);                         /* -1 if none */
int32_t     tok_eos_id(const tokenizer *t);                         /* -1 if none */
int         tok_add_bos(const tokenizer *t); /* 1 when encoding with add_special prepends a
                                                token (the post-processor's template) */
int         tok_is_special(const tokenizer *t, int32_t id);
const char *tok_kind(const tokenizer *t); /* "bpe-bytelevel", "bpe-sentencepiece", ... */
int         tok_has_chat_template(const tokenizer *t);
int64_t     tok_model_max_length(const tokenizer *t); /* -1 if absent */

#endif
