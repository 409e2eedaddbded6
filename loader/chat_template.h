/* loader/chat_template.h — the subset of Jinja2 that Hugging Face `chat_template` strings use,
 * rendered byte-identically to transformers' `apply_chat_template(..., tokenize=False)`
 * (jinja2 sandboxed environment with trim_blocks=True, lstrip_blocks=True, the `raise_exception`,
 * `strftime_now` globals and the `tojson` filter transformers adds). A template is parsed once and
 * rendered many times. Unsupported constructs fail at parse time with ASSAY_EUNSUPPORTED naming
 * the construct and its line:column (unknown filters and tests too, even in a branch never
 * taken; syntax errors are ASSAY_EFORMAT); errors while rendering (raise_exception, a type error,
 * undefined attribute use that Jinja2 would reject) fail with ASSAY_EINVAL and the message, or
 * ASSAY_EUNSUPPORTED where a value has no reproducible text (printing a generator, '%'
 * formatting, an integer past 64 bits). Messages read "where:line:col: what". */
#ifndef ASSAY_CHAT_TEMPLATE_H
#define ASSAY_CHAT_TEMPLATE_H

#include <stddef.h>

#include "core/error.h"

typedef struct chat_message {
    const char *role;    /* "system", "user", "assistant", ... (NUL-terminated) */
    const char *content; /* UTF-8; may hold NUL bytes when content_len says so */
    size_t      content_len;
} chat_message;

typedef struct chat_vars {
    const char
        *bos_token; /* tokenizer_config.json's, "" when absent; NULL: undefined in the template */
    const char *eos_token;
    int         add_generation_prompt;
} chat_vars;

typedef struct chat_template chat_template;

/* Parses template text. `where` names its source for messages ("tokenizer_config.json"). */
chat_template *chat_template_parse(const char *text, size_t len, const char *where,
                                   assay_error *err);
void           chat_template_free(chat_template *t); /* NULL-safe */

/* Renders messages[0..n) into *out (malloc'd, NUL-terminated; *out_len excludes the NUL).
 * The template sees `messages` (a list of {"role", "content"} dicts), `bos_token`, `eos_token`,
 * `add_generation_prompt`, and `tools` / `documents` as None, as transformers passes them.
 * Rendering is bounded: loops and output size are capped (64 MiB, 10^7 loop iterations) so a
 * hostile template fails cleanly; so are the values it builds (256 MiB), range() (10^5 items, the
 * sandbox's own cap), nesting (200 levels, checked at parse time) and macro recursion (64).
 * 0 on success, else a status with err set (*out NULL). Safe to call from several threads on
 * one template. */
int chat_template_render(const chat_template *t, const chat_message *messages, size_t n,
                         const chat_vars *vars, char **out, size_t *out_len, assay_error *err);

/* Reads a model directory's chat template as transformers finds it: chat_template.jinja when
 * present (it takes priority), else tokenizer_config.json "chat_template" (a string, or the
 * list-of-{name, template} form, taking "default"); and bos_token / eos_token (strings or
 * {"content": ...} objects) from tokenizer_config.json, else special_tokens_map.json, else "".
 * *tpl NULL and 0 returned when the model has no template; vars' strings are owned by the
 * returned template. `model_dir` may be a GGUF file: tokenizer.chat_template and its bos/eos
 * tokens, as the tokenizer_config.json `assay convert` writes from it. */
int chat_template_load_dir(const char *model_dir, chat_template **tpl, chat_vars *vars,
                           assay_error *err);

#endif
