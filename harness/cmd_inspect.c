/* harness/cmd_inspect.c — `assay inspect`: what a checkpoint is (architecture, sizes, dtypes,
 * tokenizer, chat template) and what it costs to run (weights and KV cache on CPU and GPU).
 * Everything is collected into one cJSON object first; the text view is rendered from it, so
 * `--json` and the text always agree. */
#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/inspect_fmt.h"
#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/gguf_tokenizer.h"
#include "loader/modeldir.h"
#include "loader/safetensors.h"

static const char inspect_help[] =
    "usage: assay inspect PATH [--tensors] [--json] [--verbose]\n"
    "       assay inspect MODEL --formats-ppl TEXT [--ctx N] [--max-tokens N] [--threads N]\n"
    "\n"
    "Describes a checkpoint without loading its weights into compute memory.\n"
    "PATH is a Hugging Face model directory (config.json + *.safetensors [+ tokenizer files]),\n"
    "a single .safetensors file (tensors only: no config), or a .gguf file.\n"
    "\n"
    "Prints the architecture, parameter count (unique tensors, a tied head counted once),\n"
    "dtypes, context length, vocab size, layers/dim/heads/kv heads/ffn, tokenizer kind,\n"
    "whether a chat template is present, and the memory needed: weights as f32 on CPU and\n"
    "bf16 on GPU, plus the KV cache per 1024 tokens (2 * layers * kv_heads * head_dim * 1024\n"
    "elements, f32 on CPU, bf16 on GPU), and the CPU weights in each --weights format (f32,\n"
    "bf16, q8_0).\n"
    "\n"
    "The checkpoint is checked against the config: a missing, misshaped or unexpected tensor\n"
    "is an error.\n"
    "\n"
    "options:\n"
    "  --tensors   list every tensor (name, dtype, shape; GGUF shapes in ggml order)\n"
    "  --json      print one JSON object instead of text\n"
    "  --verbose   also list the stored tensors that are ignored (rotary inv_freq, GPT-2\n"
    "              attention mask buffers)\n"
    "  --formats-ppl TEXT\n"
    "              also measure what each CPU weight format costs this model: load it as\n"
    "              f32, bf16 and q8_0 in turn and score the same tokens of TEXT (the first\n"
    "              --max-tokens, default 4096, with the tokenizer's special tokens) in windows\n"
    "              of --ctx tokens (default min(512, the model's positions), stride = ctx);\n"
    "              prints each format's perplexity, its change against f32, and tokens/s\n"
    "  --threads N CPU threads for --formats-ppl (default: all cores)\n"
    "  --help      this text\n"
    "\n"
    "exit codes: 0 success, 2 bad input or usage (an unreadable file included), 3 internal error\n";

/* ---- tokenizer description ---- */

/* True when `node` or anything below it is an object with "type": name. */
static int json_has_type(const cJSON *node, const char *name) {
    if (!node)
        return 0;
    if (cJSON_IsObject(node)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(node, "type");
        if (cJSON_IsString(t) && !strcmp(t->valuestring, name))
            return 1;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, node) {
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && json_has_type(c, name))
            return 1;
    }
    return 0;
}

/* True when a Replace/Prepend step anywhere under node maps to or from the SentencePiece
 * space marker U+2581. */
static int json_mentions_metaspace(const cJSON *node) {
    if (!node)
        return 0;
    if (cJSON_IsString(node))
        return strstr(node->valuestring, "\xe2\x96\x81") != NULL;
    const cJSON *c;
    cJSON_ArrayForEach(c, node) {
        if (json_mentions_metaspace(c))
            return 1;
    }
    return 0;
}

/* Describes tokenizer.json text into buf, e.g. "BPE (byte-level)"; `path` names it. */
static int describe_tokenizer_text(const char *text, size_t len, const char *path, char *buf,
                                   size_t cap, assay_error *err) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return assay_fail(err, ASSAY_EFORMAT, "%s: not a valid JSON object", path);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type  = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *pre   = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *dec   = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const cJSON *norm  = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!cJSON_IsObject(model)) {
        cJSON_Delete(root);
        return assay_fail(err, ASSAY_EFORMAT, "%s: field 'model' must be an object", path);
    }
    const char *kind = cJSON_IsString(type) ? type->valuestring : NULL;
    /* tokenizer.json files written before "type" was mandatory: BPE is the one with merges */
    if (!kind)
        kind = cJSON_GetObjectItemCaseSensitive(model, "merges") ? "BPE" : "unknown model type";
    int byte_level = json_has_type(pre, "ByteLevel") || json_has_type(dec, "ByteLevel");
    int metaspace  = json_has_type(pre, "Metaspace") || json_has_type(dec, "Metaspace") ||
                    json_mentions_metaspace(norm) || json_mentions_metaspace(dec) ||
                    json_mentions_metaspace(pre);
    int fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) ||
                   json_has_type(dec, "ByteFallback");
    if (byte_level)
        snprintf(buf, cap, "%.40s (byte-level)", kind);
    else if (metaspace)
        snprintf(buf, cap, "%.40s (SentencePiece-style%s)", kind,
                 fallback ? ", byte fallback" : "");
    else
        snprintf(buf, cap, "%.40s%s", kind, fallback ? " (byte fallback)" : "");
    cJSON_Delete(root);
    return 0;
}

/* Describes tokenizer.json at `path` into buf. */
static int describe_tokenizer_json(const char *path, char *buf, size_t cap, assay_error *err) {
    char  *text = NULL;
    size_t len  = 0;
    int    rc   = file_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    rc = describe_tokenizer_text(text, len, path, buf, cap, err);
    free(text);
    return rc;
}

/* Tokenizer kind and chat template presence for a model directory. */
static int describe_dir_tokenizer(const char *dir, char *kind, size_t cap, int *chat,
                                  assay_error *err) {
    char p[4096], q[4096];
    *chat = 0;
    snprintf(kind, cap, "none");
    if (path_join(p, sizeof p, dir, "tokenizer.json"))
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", dir);
    if (path_present(p)) { /* a broken link or a link loop is an error, not "no tokenizer" */
        if (describe_tokenizer_json(p, kind, cap, err))
            return err->code;
    } else if (!path_join(p, sizeof p, dir, "encoder.json") &&
               !path_join(q, sizeof q, dir, "vocab.bpe") && path_exists(p) && path_exists(q)) {
        snprintf(kind, cap, "GPT-2 encoder.json/vocab.bpe");
    }

    /* transformers 5 may keep the template in its own file */
    if (!path_join(p, sizeof p, dir, "chat_template.jinja") && path_exists(p))
        *chat = 1;
    if (!path_join(p, sizeof p, dir, "chat_template.json") && path_exists(p))
        *chat = 1;
    if (path_join(p, sizeof p, dir, "tokenizer_config.json") || !path_present(p))
        return 0;
    char  *text = NULL;
    size_t len  = 0;
    if (file_read_all(p, &text, &len, err))
        return err->code;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return assay_fail(err, ASSAY_EFORMAT, "%s: not a valid JSON object", p);
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    /* a string, or a list of {"name", "template"} in older files */
    if ((cJSON_IsString(ct) && ct->valuestring[0]) ||
        (cJSON_IsArray(ct) && cJSON_GetArraySize(ct) > 0))
        *chat = 1;
    cJSON_Delete(root);
    return 0;
}

/* ---- collection into one JSON object ---- */

static void add_count(cJSON *dtypes, const char *name) {
    cJSON *it = cJSON_GetObjectItemCaseSensitive(dtypes, name);
    if (it)
        cJSON_SetNumberValue(it, it->valuedouble + 1);
    else
        cJSON_AddNumberToObject(dtypes, name, 1);
}

static cJSON *tensor_entry(const char *name, const char *type, int ndim, const int64_t *shape) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", name);
    cJSON_AddStringToObject(t, "dtype", type);
    cJSON *s = cJSON_AddArrayToObject(t, "shape");
    for (int d = 0; d < ndim; d++)
        cJSON_AddItemToArray(s, cJSON_CreateNumber((double)shape[d]));
    return t;
}

/* CPU weight bytes per --weights format: bf16 2 bytes a parameter; Q8_0 a byte plus a 2-byte
 * f16 scale per 32 (kernels/cpu/ops.h). Norms and biases stay f32 in every format, a rounding
 * error against these counts. */
static void add_format_bytes(cJSON *m, int64_t params) {
    cJSON_AddNumberToObject(m, "cpu_bf16_weights_bytes", (double)params * 2);
    cJSON_AddNumberToObject(m, "cpu_q8_0_weights_bytes", (double)params * 34 / 32);
}

static void add_model_fields(cJSON *o, const model_config *c, int64_t params) {
    cJSON_AddStringToObject(o, "architecture", c->arch_name);
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    cJSON_AddNumberToObject(o, "context_length", c->max_pos);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "dim", c->dim);
    cJSON_AddNumberToObject(o, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "ffn_dim", c->ffn_dim);
    cJSON_AddStringToObject(o, "norm", c->norm == NORM_RMS ? "RMSNorm" : "LayerNorm");
    cJSON_AddNumberToObject(o, "norm_eps", float_shortest_decimal(c->norm_eps));
    cJSON_AddStringToObject(o, "activation", c->act == ACT_SILU ? "silu (SwiGLU)" : "gelu_new");
    if (c->learned_pos) {
        cJSON_AddStringToObject(o, "positions", "learned");
    } else {
        cJSON                   *r       = cJSON_AddObjectToObject(o, "rope");
        static const char *const kinds[] = {"none", "default", "linear", "llama3"};
        cJSON_AddStringToObject(r, "type", kinds[c->rope <= ROPE_LLAMA3 ? c->rope : 0]);
        cJSON_AddNumberToObject(r, "theta", float_shortest_decimal(c->rope_theta));
        if (c->rope == ROPE_LINEAR || c->rope == ROPE_LLAMA3)
            cJSON_AddNumberToObject(r, "factor", float_shortest_decimal(c->rope_factor));
        if (c->rope == ROPE_LLAMA3) {
            cJSON_AddNumberToObject(r, "low_freq_factor",
                                    float_shortest_decimal(c->rope_low_freq_factor));
            cJSON_AddNumberToObject(r, "high_freq_factor",
                                    float_shortest_decimal(c->rope_high_freq_factor));
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", c->rope_orig_max_pos);
        }
        cJSON_AddStringToObject(o, "positions", "rope");
    }
    cJSON_AddBoolToObject(o, "tie_embeddings", c->tie_embeddings);
    cJSON_AddBoolToObject(o, "qkv_bias", c->qkv_bias);
    if (c->sliding_window > 0)
        cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
    else
        cJSON_AddNullToObject(o, "sliding_window");
    if (c->bos_token_id >= 0)
        cJSON_AddNumberToObject(o, "bos_token_id", c->bos_token_id);
    if (c->eos_token_id >= 0)
        cJSON_AddNumberToObject(o, "eos_token_id", c->eos_token_id);
    if (c->torch_dtype[0])
        cJSON_AddStringToObject(o, "torch_dtype", c->torch_dtype);

    /* KV cache: keys and values, every layer, kv heads x head_dim per token */
    double kv_elems = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 1024.0;
    cJSON *m        = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(m, "cpu_f32_weights_bytes", (double)params * 4);
    cJSON_AddNumberToObject(m, "gpu_bf16_weights_bytes", (double)params * 2);
    cJSON_AddNumberToObject(m, "cpu_f32_kv_cache_per_1k_tokens_bytes", kv_elems * 4);
    cJSON_AddNumberToObject(m, "gpu_bf16_kv_cache_per_1k_tokens_bytes", kv_elems * 2);
    add_format_bytes(m, params);
}

static void add_weights_only_memory(cJSON *o, int64_t params) {
    cJSON *m = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(m, "cpu_f32_weights_bytes", (double)params * 4);
    cJSON_AddNumberToObject(m, "gpu_bf16_weights_bytes", (double)params * 2);
    add_format_bytes(m, params);
}

typedef struct inspect_opts {
    const char *path;
    int         tensors, json, verbose;
    const char *fmt_text; /* --formats-ppl */
    int64_t     fmt_ctx, fmt_max_tokens, threads;
} inspect_opts;

static int inspect_safetensors(cJSON *o, const inspect_opts *opt, int is_dir, assay_error *err) {
    model_config cfg;
    int          have_config = 0, rc = 0;
    st_model    *m         = NULL;
    const char **ignored   = NULL;
    int          n_ignored = 0;
    char         p[4096];

    if (is_dir) {
        if (path_join(p, sizeof p, opt->path, "config.json"))
            return assay_fail(err, ASSAY_EINVAL, "%s: path too long", opt->path);
        if (path_present(p)) { /* a broken link or a link loop is an error, not "no config" */
            if ((rc = config_load(&cfg, p, err)))
                return rc;
            have_config = 1;
        }
    }
    if (!(m = st_model_open(opt->path, err)))
        return err->code ? err->code : ASSAY_EFORMAT;
    if (have_config &&
        (rc = config_check_tensors_in(&cfg, m, opt->path, &ignored, &n_ignored, err)))
        goto fail;

    int     n      = st_model_count(m);
    int64_t params = 0;
    cJSON  *dtypes = cJSON_CreateObject();
    cJSON  *list   = cJSON_CreateArray();
    cJSON  *ign    = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_model_tensor(m, i);
        add_count(dtypes, dtype_name(t->dtype));
        params += (int64_t)t->n_elements;
        cJSON_AddItemToArray(list, tensor_entry(t->name, dtype_name(t->dtype), t->ndim, t->shape));
    }
    for (int i = 0; i < n_ignored; i++)
        cJSON_AddItemToArray(ign, cJSON_CreateString(ignored[i]));

    cJSON_AddStringToObject(o, "format", "safetensors");
    cJSON_AddNumberToObject(o, "files", st_model_n_shards(m));
    cJSON_AddNumberToObject(o, "n_tensors", n);
    cJSON_AddBoolToObject(o, "config", have_config);
    if (have_config) {
        /* the config's count: unique tensors, no ignored buffers, a stored tied head once */
        params = config_param_count(&cfg);
        cJSON_AddNumberToObject(o, "parameters", (double)params);
        cJSON_AddItemToObject(o, "dtypes", dtypes);
        add_model_fields(o, &cfg, params);
    } else {
        cJSON_AddNullToObject(o, "architecture");
        cJSON_AddNumberToObject(o, "parameters", (double)params);
        cJSON_AddItemToObject(o, "dtypes", dtypes);
        add_weights_only_memory(o, params);
    }
    char kind[160] = "none";
    int  chat      = 0;
    if (is_dir && (rc = describe_dir_tokenizer(opt->path, kind, sizeof kind, &chat, err))) {
        cJSON_Delete(list);
        cJSON_Delete(ign);
        goto fail;
    }
    cJSON_AddStringToObject(o, "tokenizer", kind);
    cJSON_AddBoolToObject(o, "chat_template", chat);
    cJSON_AddItemToObject(o, "ignored_tensors", ign);
    if (opt->tensors)
        cJSON_AddItemToObject(o, "tensors", list);
    else
        cJSON_Delete(list);

fail:
    free(ignored);
    st_model_close(m);
    return rc;
}

static int inspect_gguf(cJSON *o, const inspect_opts *opt, assay_error *err) {
    gguf_file *f = gguf_open(opt->path, err);
    if (!f)
        return err->code ? err->code : ASSAY_EFORMAT;
    int     n      = gguf_n_tensors(f);
    int64_t params = 0;
    cJSON  *dtypes = cJSON_CreateObject();
    cJSON  *list   = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t     = gguf_tensor_at(f, i);
        int64_t            elems = 1;
        for (int d = 0; d < t->ndim; d++)
            elems *= t->ne[d];
        params += elems;
        add_count(dtypes, ggml_type_name(t->type));
        cJSON_AddItemToArray(list, tensor_entry(t->name, ggml_type_name(t->type), t->ndim, t->ne));
    }
    cJSON_AddStringToObject(o, "format", "gguf");
    cJSON_AddNumberToObject(o, "gguf_version", gguf_version(f));
    cJSON_AddNumberToObject(o, "n_tensors", n);
    model_config cfg;
    assay_error  cerr;
    int          have_config = gguf_to_config(f, &cfg, &cerr) == 0;
    cJSON_AddBoolToObject(o, "config", have_config);
    if (have_config) {
        /* GGUF keeps the vocab in the tokenizer metadata, not in llama.* keys */
        int64_t n_tok = gguf_get_arr_n(f, "tokenizer.ggml.tokens", NULL);
        if (cfg.vocab_size <= 0 && n_tok > 0)
            cfg.vocab_size = (int)n_tok;
        /* checked against the config as a directory is: what the model commands would refuse */
        int rc = gguf_check_tensors(f, &cfg, opt->path, err);
        if (rc) {
            cJSON_Delete(dtypes);
            cJSON_Delete(list);
            gguf_close(f);
            return rc;
        }
        /* the config's count, as for a directory (a tied head once, unused tensors not) */
        params = config_param_count(&cfg);
    }
    cJSON_AddNumberToObject(o, "parameters", (double)params);
    cJSON_AddItemToObject(o, "dtypes", dtypes);
    if (have_config) {
        add_model_fields(o, &cfg, params);
    } else {
        size_t      alen = 0;
        const char *arch = gguf_get_str(f, "general.architecture", &alen);
        char        a[96];
        snprintf(a, sizeof a, "%.*s", arch ? (int)(alen > 64 ? 64 : alen) : 0, arch ? arch : "");
        if (arch)
            cJSON_AddStringToObject(o, "architecture", a);
        else
            cJSON_AddNullToObject(o, "architecture");
        cJSON_AddStringToObject(o, "config_problem", cerr.msg);
        add_weights_only_memory(o, params);
    }
    size_t      tlen = 0;
    const char *tm   = gguf_get_str(f, "tokenizer.ggml.model", &tlen);
    if (tm) {
        /* the tokenizer the model commands build from it, described as a directory's */
        char        kind[400], what[160] = "";
        int64_t     n_tok = gguf_get_arr_n(f, "tokenizer.ggml.tokens", NULL);
        char       *tj = NULL, *tc = NULL;
        assay_error terr;
        if (gguf_tokenizer_texts(f, opt->path, &tj, &tc, &terr) == 0 &&
            describe_tokenizer_text(tj, strlen(tj), opt->path, what, sizeof what, &terr) == 0)
            strcat(what, "; ");
        else
            cJSON_AddStringToObject(o, "tokenizer_problem", terr.msg);
        free(tj);
        free(tc);
        snprintf(kind, sizeof kind, "%sGGUF tokenizer.ggml.model %.*s, %" PRId64 " tokens", what,
                 (int)(tlen > 64 ? 64 : tlen), tm, n_tok > 0 ? n_tok : 0);
        cJSON_AddStringToObject(o, "tokenizer", kind);
    } else {
        cJSON_AddStringToObject(o, "tokenizer", "none");
    }
    size_t clen = 0;
    cJSON_AddBoolToObject(o, "chat_template",
                          gguf_get_str(f, "tokenizer.chat_template", &clen) != NULL && clen > 0);
    cJSON_AddItemToObject(o, "ignored_tensors", cJSON_CreateArray());
    if (opt->tensors)
        cJSON_AddItemToObject(o, "tensors", list);
    else
        cJSON_Delete(list);
    gguf_close(f);
    return 0;
}

/* ---- text rendering ---- */

static double num(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? it->valuedouble : 0.0;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static void fmt_bytes(char *buf, size_t cap, double b) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int                      u       = 0;
    while (b >= 1024.0 && u < 4) {
        b /= 1024.0;
        u++;
    }
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

/* 1234567 -> "1,234,567 (1.23M)" */
static void fmt_count(char *buf, size_t cap, int64_t n) {
    char digits[32], grouped[48];
    snprintf(digits, sizeof digits, "%" PRId64, n);
    size_t len = strlen(digits), k = 0;
    for (size_t i = 0; i < len && k + 2 < sizeof grouped; i++) {
        if (i && (len - i) % 3 == 0 && digits[0] != '-')
            grouped[k++] = ',';
        grouped[k++] = digits[i];
    }
    grouped[k] = '\0';
    if (n >= 1000000000)
        snprintf(buf, cap, "%s (%.2fB)", grouped, (double)n / 1e9);
    else if (n >= 1000000)
        snprintf(buf, cap, "%s (%.2fM)", grouped, (double)n / 1e6);
    else if (n >= 1000)
        snprintf(buf, cap, "%s (%.1fK)", grouped, (double)n / 1e3);
    else
        snprintf(buf, cap, "%s", grouped);
}

static void print_text(const cJSON *o, const inspect_opts *opt) {
    char b1[64], b2[64];
    printf("%-16s%s\n", "path", str(o, "path"));
    const char *format = str(o, "format");
    if (!strcmp(format, "gguf"))
        printf("%-16sGGUF v%.0f, %.0f tensors\n", "format", num(o, "gguf_version"),
               num(o, "n_tensors"));
    else
        printf("%-16ssafetensors, %.0f file%s, %.0f tensors\n", "format", num(o, "files"),
               num(o, "files") == 1 ? "" : "s", num(o, "n_tensors"));
    int have_config = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "config"));
    if (have_config)
        printf("%-16s%s (model_type %s)\n", "architecture", str(o, "architecture"),
               str(o, "model_type"));
    else if (str(o, "config_problem"))
        printf("%-16s%s (%s)\n", "architecture",
               str(o, "architecture") ? str(o, "architecture") : "unknown",
               str(o, "config_problem"));
    else
        printf("%-16sunknown (config missing: tensors only)\n", "architecture");
    fmt_count(b1, sizeof b1, (int64_t)num(o, "parameters"));
    printf("%-16s%s\n", "parameters", b1);
    printf("%-16s", "dtypes");
    const cJSON *d;
    int          first = 1;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(o, "dtypes")) {
        printf("%s%s x %.0f", first ? "" : ", ", d->string, d->valuedouble);
        first = 0;
    }
    printf("\n");
    if (have_config) {
        printf("%-16s%.0f\n", "context length", num(o, "context_length"));
        printf("%-16s%.0f\n", "vocab size", num(o, "vocab_size"));
        printf("%-16s%.0f\n", "layers", num(o, "n_layers"));
        printf("%-16s%.0f\n", "dim", num(o, "dim"));
        printf("%-16s%.0f (kv heads %.0f, head_dim %.0f)\n", "heads", num(o, "n_heads"),
               num(o, "n_kv_heads"), num(o, "head_dim"));
        printf("%-16s%.0f, %s\n", "ffn", num(o, "ffn_dim"), str(o, "activation"));
        printf("%-16s%s, eps %g\n", "norm", str(o, "norm"), num(o, "norm_eps"));
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "rope");
        if (r) {
            double theta = num(r, "theta");
            /* 1000000 reads better than 1e+06 */
            printf(theta == (double)(int64_t)theta && theta < 1e15 ? "%-16sRoPE theta %.0f, %s"
                                                                   : "%-16sRoPE theta %g, %s",
                   "positions", theta, str(r, "type"));
            if (cJSON_GetObjectItemCaseSensitive(r, "factor"))
                printf(" factor %g", num(r, "factor"));
            if (cJSON_GetObjectItemCaseSensitive(r, "low_freq_factor"))
                printf(" (low %g, high %g, original context %.0f)", num(r, "low_freq_factor"),
                       num(r, "high_freq_factor"), num(r, "original_max_position_embeddings"));
            printf("\n");
        } else {
            printf("%-16slearned (wpe)\n", "positions");
        }
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(o, "sliding_window");
        if (cJSON_IsNumber(sw))
            printf("%-16s%.0f\n", "sliding window", sw->valuedouble);
        printf("%-16s%s\n", "embeddings",
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "tie_embeddings"))
                   ? "tied (lm_head = embed)"
                   : "separate lm_head");
    }
    printf("%-16s%s\n", "tokenizer", str(o, "tokenizer"));
    if (str(o, "tokenizer_problem"))
        printf("%-16s%s\n", "", str(o, "tokenizer_problem"));
    printf("%-16s%s\n", "chat template",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "chat_template")) ? "yes" : "no");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "memory");
    fmt_bytes(b1, sizeof b1, num(m, "cpu_f32_weights_bytes"));
    if (cJSON_GetObjectItemCaseSensitive(m, "cpu_f32_kv_cache_per_1k_tokens_bytes")) {
        fmt_bytes(b2, sizeof b2, num(m, "cpu_f32_kv_cache_per_1k_tokens_bytes"));
        printf("%-16s%s weights (f32) + %s KV cache per 1k tokens\n", "memory CPU", b1, b2);
        fmt_bytes(b1, sizeof b1, num(m, "gpu_bf16_weights_bytes"));
        fmt_bytes(b2, sizeof b2, num(m, "gpu_bf16_kv_cache_per_1k_tokens_bytes"));
        printf("%-16s%s weights (bf16) + %s KV cache per 1k tokens\n", "memory GPU", b1, b2);
    } else {
        printf("%-16s%s weights (f32)\n", "memory CPU", b1);
        fmt_bytes(b1, sizeof b1, num(m, "gpu_bf16_weights_bytes"));
        printf("%-16s%s weights (bf16)\n", "memory GPU", b1);
    }
    if (cJSON_GetObjectItemCaseSensitive(m, "cpu_q8_0_weights_bytes")) {
        char b3[32];
        fmt_bytes(b1, sizeof b1, num(m, "cpu_f32_weights_bytes"));
        fmt_bytes(b2, sizeof b2, num(m, "cpu_bf16_weights_bytes"));
        fmt_bytes(b3, sizeof b3, num(m, "cpu_q8_0_weights_bytes"));
        printf("%-16sf32 %s, bf16 %s, q8_0 %s (CPU --weights; perplexity effect: "
               "--formats-ppl TEXT)\n",
               "weight formats", b1, b2, b3);
    }
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(o, "weight_formats_ppl"), *f;
    cJSON_ArrayForEach(f, fp) {
        fmt_bytes(b1, sizeof b1, num(f, "weight_bytes"));
        printf("%-16s%-5s ppl %.4f (%+.3f%% vs f32) on %.0f tokens, ctx %.0f, %s weights, %.0f "
               "tokens/s\n",
               f == fp->child ? "format ppl" : "", str(f, "weights"), num(f, "ppl"),
               num(f, "change_pct"), num(f, "tokens"), num(f, "ctx"), b1, num(f, "tokens_per_s"));
    }
    const cJSON *ign = cJSON_GetObjectItemCaseSensitive(o, "ignored_tensors");
    if (opt->verbose) {
        printf("%-16s%d\n", "ignored tensors", cJSON_GetArraySize(ign));
        cJSON_ArrayForEach(d, ign) printf("  %s\n", d->valuestring);
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "tensors");
    if (list) {
        printf("tensors%s:\n", strcmp(format, "gguf") ? "" : " (shapes in ggml order)");
        cJSON_ArrayForEach(d, list) {
            char         shape[160];
            size_t       k = 0;
            const cJSON *s;
            k += (size_t)snprintf(shape, sizeof shape, "[");
            cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(d, "shape")) {
                if (k < sizeof shape)
                    k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%.0f", k > 1 ? ", " : "",
                                          s->valuedouble);
            }
            if (k < sizeof shape)
                snprintf(shape + k, sizeof shape - k, "]");
            const char *nm = str(d, "name"), *dt = str(d, "dtype");
            printf("  %-56s %-5s %s\n", nm ? nm : "?", dt ? dt : "?", shape);
        }
    }
}

int cmd_inspect(int argc, char **argv) {
    inspect_opts opt = {0};
    assay_error  err;
    assay_error_clear(&err);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(inspect_help, stdout);
            return 0;
        } else if (!strcmp(a, "--tensors")) {
            opt.tensors = 1;
        } else if (!strcmp(a, "--json")) {
            opt.json = 1;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            opt.verbose = 1;
        } else if (!strcmp(a, "--formats-ppl") || !strcmp(a, "--ctx") ||
                   !strcmp(a, "--max-tokens") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                assay_fail(&err, ASSAY_EINVAL, "inspect: %s needs a value", a);
                return cli_report(&err);
            }
            const char *v = argv[++i];
            int64_t    *t = !strcmp(a, "--ctx")          ? &opt.fmt_ctx
                            : !strcmp(a, "--max-tokens") ? &opt.fmt_max_tokens
                            : !strcmp(a, "--threads")    ? &opt.threads
                                                         : NULL;
            if (!t)
                opt.fmt_text = v;
            else if (cli_parse_int(a, v, 1, 1 << 30, t, &err))
                return cli_report(&err);
        } else if (a[0] == '-' && a[1]) {
            assay_fail(&err, ASSAY_EINVAL,
                       "inspect: unknown option '%s' (see assay inspect --help)", a);
            return cli_report(&err);
        } else if (opt.path) {
            assay_fail(&err, ASSAY_EINVAL, "inspect: one PATH expected, got '%s' and '%s'",
                       opt.path, a);
            return cli_report(&err);
        } else {
            opt.path = a;
        }
    }
    if (!opt.path) {
        assay_fail(&err, ASSAY_EINVAL, "inspect: missing PATH (see assay inspect --help)");
        return cli_report(&err);
    }
    if (!opt.fmt_text && (opt.fmt_ctx || opt.fmt_max_tokens || opt.threads)) {
        assay_fail(&err, ASSAY_EINVAL,
                   "inspect: --ctx, --max-tokens and --threads go with "
                   "--formats-ppl TEXT");
        return cli_report(&err);
    }
    struct stat st;
    if (stat(opt.path, &st) != 0) {
        assay_fail(&err, ASSAY_EINVAL, "%s: %s", opt.path,
                   errno == ENOENT ? "no such file or directory" : strerror(errno));
        return cli_report(&err);
    }

    cJSON *o = cJSON_CreateObject();
    if (!o) {
        assay_fail(&err, ASSAY_ENOMEM, "inspect: out of memory");
        return cli_report(&err);
    }
    cJSON_AddStringToObject(o, "path", opt.path);
    int rc;
    if (path_is_dir(opt.path))
        rc = inspect_safetensors(o, &opt, 1, &err);
    else if (model_path_is_gguf(opt.path))
        rc = inspect_gguf(o, &opt, &err);
    else if (str_ends_with(opt.path, ".safetensors") || str_ends_with(opt.path, ".json"))
        rc = inspect_safetensors(o, &opt, 0, &err);
    else
        rc = assay_fail(&err, ASSAY_EINVAL,
                        "%s: not a model directory, .safetensors, .safetensors.index.json or "
                        ".gguf file",
                        opt.path);
    if (!rc && opt.fmt_text) {
        cJSON *arr = cJSON_AddArrayToObject(o, "weight_formats_ppl");
        if (!path_is_dir(opt.path) && !model_path_is_gguf(opt.path))
            rc = assay_fail(&err, ASSAY_EINVAL,
                            "inspect: --formats-ppl needs a model (a directory or a .gguf file), "
                            "not %s",
                            opt.path);
        else {
            cli_common cc = {.threads = (int)opt.threads};
            rc =
                inspect_formats_ppl(opt.path, opt.fmt_text, opt.fmt_ctx,
                                    opt.fmt_max_tokens ? opt.fmt_max_tokens : 4096, &cc, arr, &err);
        }
    }
    if (rc) {
        cJSON_Delete(o);
        return cli_report(&err);
    }
    if (opt.json) {
        char *text = cJSON_Print(o);
        if (!text) {
            cJSON_Delete(o);
            assay_fail(&err, ASSAY_ENOMEM, "inspect: out of memory");
            return cli_report(&err);
        }
        printf("%s\n", text);
        free(text);
    } else {
        print_text(o, &opt);
    }
    cJSON_Delete(o);
    return 0;
}
