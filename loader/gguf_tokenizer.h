/* loader/gguf_tokenizer.h — a GGUF file's tokenizer metadata (tokenizer.ggml.*) rewritten as a
 * Hugging Face tokenizer.json + tokenizer_config.json, the way transformers builds them from GGUF:
 *   "llama": SentencePiece-style BPE (byte fallback; merges from the file, or derived from the
 *            vocabulary and scores as transformers' generate_merges does);
 *   "gpt2":  byte-level BPE with the file's merges, split before BPE as tokenizer.ggml.pre says
 *            (llama.cpp's meaning of each name, written as the equivalent HF pre_tokenizer; e.g.
 *            "smollm" = Digits(individual) then ByteLevel). An unknown pre is an error. */
#ifndef ASSAY_GGUF_TOKENIZER_H
#define ASSAY_GGUF_TOKENIZER_H

#include "core/error.h"
#include "loader/gguf.h"
#include "loader/tokenizer.h"

/* Fills *tokenizer_json and *tokenizer_config_json (malloc'd NUL-terminated text; caller frees).
 * `max_len` becomes model_max_length. Anything the JSON cannot express (duplicate tokens, invalid
 * UTF-8, an unknown tokenizer model) is an error naming the file and the token. */
int gguf_tokenizer_to_json(const gguf_file *f, const char *name, int max_len, char **tokenizer_json,
                           char **tokenizer_config_json, assay_error *err);

/* The two texts as `assay convert` writes them: model_max_length is the llama context length when
 * the metadata gives a config (else 0: none). */
int gguf_tokenizer_texts(const gguf_file *f, const char *name, char **tokenizer_json,
                         char **tokenizer_config_json, assay_error *err);
/* The tokenizer of an open GGUF file, built from gguf_tokenizer_texts. `name` is used in
 * messages. */
tokenizer *gguf_tokenizer_load(const gguf_file *f, const char *name, assay_error *err);
/* Opens GGUF file `path` and loads its tokenizer (tok_load does this for a GGUF path). */
tokenizer *tok_load_gguf(const char *path, assay_error *err);

#endif
