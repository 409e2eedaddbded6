/* loader/config.c — config.json → model_config, the tensor list of each architecture, and the
 * check of a checkpoint against it. Field names and defaults follow transformers' config classes
 * (LlamaConfig, MistralConfig, Qwen2Config, GPT2Config), in both the 4.x layout (rope_theta +
 * rope_scaling) and the 5.x one (rope_parameters, "dtype"). */
#include "loader/config.h"
#include "loader/arch.h"
#include "loader/gguf.h"
#include "loader/modeldir.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* Upper bounds that no real checkpoint of these families comes near, chosen so that every
 * tensor size computed from them fits easily in int64 (vocab * dim < 2^41). */
#define MAX_LAYERS 1024
#define MAX_DIM 65536
#define MAX_HEADS 1024
#define MAX_HEAD_DIM 1024
#define MAX_FFN (1 << 20)
#define MAX_VOCAB (1 << 24)
#define MAX_POS (1 << 26)

static const struct {
    const char *arch_name;
    const char *model_type;
    model_arch  arch;
} known_archs[] = {
    {"LlamaForCausalLM", "llama", ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", ARCH_QWEN2},
    {"GPT2LMHeadModel", "gpt2", ARCH_GPT2},
};
#define N_KNOWN_ARCHS ((int)(sizeof known_archs / sizeof known_archs[0]))

const char *config_supported_archs(void) {
    return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel";
}

/* ---- duplicate keys ---- */

typedef struct json_member {
    const char *key; /* copied out of the item: the sort then touches one array */
    cJSON      *item;
    size_t      index;
} json_member;

static int cmp_member(const void *a, const void *b) {
    const json_member *x = a, *y = b;
    int                c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

int config_json_keep_last(cJSON *node) {
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
        return 0;
    size_t n = 0;
    for (cJSON *it = node->child; it; it = it->next)
        n++;
    if (cJSON_IsObject(node) && n > 1) {
        json_member *m = malloc(n * sizeof *m);
        if (!m)
            return -1;
        size_t i = 0;
        for (cJSON *it = node->child; it; it = it->next, i++)
            m[i] = (json_member){it->string ? it->string : "", it, i};
        qsort(m, n, sizeof *m, cmp_member);
        for (i = 0; i + 1 < n; i++)
            if (!strcmp(m[i].key, m[i + 1].key))
                cJSON_Delete(cJSON_DetachItemViaPointer(node, m[i].item));
        free(m);
    }
    for (cJSON *it = node->child; it; it = it->next)
        if (config_json_keep_last(it))
            return -1;
    return 0;
}

/* ---- typed field readers: absent and null mean "use the default" ---- */

static int is_absent(const cJSON *it) { return !it || cJSON_IsNull(it); }

/* `label` is the name used in messages (the key, or "rope_scaling.factor" for nested ones). */
static int read_int_l(const cJSON *obj, const char *key, const char *label, int required, int def,
                      int64_t lo, int64_t hi, int *out, const char *name, assay_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_absent(it)) {
        if (required)
            return assay_fail(err, ASSAY_EFORMAT, "%s: required field '%s' is missing", name,
                              label);
        *out = def;
        return 0;
    }
    double v = it->valuedouble;
    /* JSON has one number type: accept 4096.0 but not 4096.5, nor values past int64 */
    if (!cJSON_IsNumber(it) || !isfinite(v) || v != floor(v) || fabs(v) > 9.0e18)
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be an integer", name, label);
    if ((int64_t)v < lo || (int64_t)v > hi)
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' is %.0f, expected %lld to %lld", name,
                          label, v, (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

/* Floats must be finite and in (lo, hi]. */
static int read_float_l(const cJSON *obj, const char *key, const char *label, int required,
                        double def, double lo, double hi, float *out, const char *name,
                        assay_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_absent(it)) {
        if (required)
            return assay_fail(err, ASSAY_EFORMAT, "%s: required field '%s' is missing", name,
                              label);
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be a number", name, label);
    /* check the float we keep: 1e-62 is positive as a double but 0 as a float */
    float f = (float)it->valuedouble;
    if (!((double)f > lo && (double)f <= hi))
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' is %g, expected a value in (%g, %g]",
                          name, label, it->valuedouble, lo, hi);
    *out = f;
    return 0;
}

static int read_int(const cJSON *obj, const char *key, int required, int def, int64_t lo,
                    int64_t hi, int *out, const char *name, assay_error *err) {
    return read_int_l(obj, key, key, required, def, lo, hi, out, name, err);
}

static int read_float(const cJSON *obj, const char *key, int required, double def, double lo,
                      double hi, float *out, const char *name, assay_error *err) {
    return read_float_l(obj, key, key, required, def, lo, hi, out, name, err);
}

static int read_bool(const cJSON *obj, const char *key, int def, int *out, const char *name,
                     assay_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_absent(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(it))
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be true or false", name, key);
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return 0;
}

/* Returns the string value, `def` when absent/null, or NULL (and err set) on a wrong type. */
static const char *read_str(const cJSON *obj, const char *key, const char *def, const char *name,
                            assay_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_absent(it))
        return def;
    if (!cJSON_IsString(it) || !it->valuestring) {
        assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be a string", name, key);
        return NULL;
    }
    return it->valuestring;
}

/* Token ids: an int, null, or (eos) a list whose first entry is kept. Ids the model cannot
 * produce (>= vocab_size, as in tiny test configs that keep GPT-2's 50256) are stored as -1. */
static int read_token_id(const cJSON *obj, const char *key, int allow_list, int def, int vocab,
                         int *out, const char *name, assay_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    int          id = -1;
    if (!it) {
        id = def;
    } else if (cJSON_IsNull(it)) {
        id = -1;
    } else if (cJSON_IsArray(it) && allow_list) {
        const cJSON *e;
        cJSON_ArrayForEach(e, it) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) ||
                e->valuedouble < 0 || e->valuedouble > 2147483647.0)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s: field '%s' must be an integer or a list of integers", name,
                                  key);
        }
        id = cJSON_GetArraySize(it) > 0 ? (int)cJSON_GetArrayItem(it, 0)->valuedouble : -1;
    } else if (cJSON_IsNumber(it) && it->valuedouble == floor(it->valuedouble) &&
               it->valuedouble >= 0 && it->valuedouble <= 2147483647.0) {
        id = (int)it->valuedouble;
    } else {
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be %s", name, key,
                          allow_list ? "an integer or a list of integers"
                                     : "a non-negative integer");
    }
    *out = (id >= 0 && id < vocab) ? id : -1;
    return 0;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

/* ---- rope: rope_parameters (transformers 5) or rope_scaling (4.x) ---- */

static int parse_rope(model_config *cfg, const cJSON *root, const char *name, assay_error *err) {
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const char  *field  = "rope_parameters";
    if (is_absent(params)) {
        params = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
        field  = "rope_scaling";
    }
    if (!is_absent(params) && !cJSON_IsObject(params))
        return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be an object or null", name,
                          field);

    /* theta: inside rope_parameters in 5.x, at the top level in 4.x */
    if (read_float(root, "rope_theta", 0, 10000.0, 0.0, 1e12, &cfg->rope_theta, name, err))
        return err->code;
    cfg->rope                  = ROPE_DEFAULT;
    cfg->rope_factor           = 1.0f;
    cfg->rope_low_freq_factor  = 0.0f;
    cfg->rope_high_freq_factor = 0.0f;
    cfg->rope_orig_max_pos     = 0;
    if (is_absent(params))
        return 0;

    char key[96];
    snprintf(key, sizeof key, "%s.rope_theta", field);
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(params, "rope_theta");
    if (!is_absent(th)) {
        if (!cJSON_IsNumber(th) || !isfinite(th->valuedouble) || (float)th->valuedouble <= 0 ||
            th->valuedouble > 1e12)
            return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s' must be a positive number", name,
                              key);
        cfg->rope_theta = (float)th->valuedouble;
    }

    const char *type = NULL;
    for (int k = 0; k < 2 && !type; k++) {
        const char  *tk = k == 0 ? "rope_type" : "type";
        const cJSON *t  = cJSON_GetObjectItemCaseSensitive(params, tk);
        if (is_absent(t))
            continue;
        if (!cJSON_IsString(t))
            return assay_fail(err, ASSAY_EFORMAT, "%s: field '%s.%s' must be a string", name, field,
                              tk);
        type = t->valuestring;
    }
    if (!type || !strcmp(type, "default")) {
        /* theta only; nothing else to read */
    } else if (!strcmp(type, "linear")) {
        cfg->rope = ROPE_LINEAR;
        snprintf(key, sizeof key, "%s.factor", field);
        if (read_float_l(params, "factor", key, 1, 1.0, 0.0, 1e6, &cfg->rope_factor, name, err))
            return err->code;
    } else if (!strcmp(type, "llama3")) {
        cfg->rope                        = ROPE_LLAMA3;
        static const char *const keys[3] = {"factor", "low_freq_factor", "high_freq_factor"};
        float *const             dst[3]  = {&cfg->rope_factor, &cfg->rope_low_freq_factor,
                                            &cfg->rope_high_freq_factor};
        for (int k = 0; k < 3; k++) {
            snprintf(key, sizeof key, "%s.%s", field, keys[k]);
            if (read_float_l(params, keys[k], key, 1, 0.0, 0.0, 1e6, dst[k], name, err))
                return err->code;
        }
        snprintf(key, sizeof key, "%s.original_max_position_embeddings", field);
        if (read_int_l(params, "original_max_position_embeddings", key, 1, 0, 1, MAX_POS,
                       &cfg->rope_orig_max_pos, name, err))
            return err->code;
        /* the llama3 ramp divides by (high - low) */
        if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: %s.high_freq_factor (%g) must be greater than low_freq_factor "
                              "(%g)",
                              name, field, cfg->rope_high_freq_factor, cfg->rope_low_freq_factor);
    } else {
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: rope type '%s' in '%s' is not supported (supported: default, "
                          "linear, llama3)",
                          name, type, field);
    }
    const cJSON *prf = cJSON_GetObjectItemCaseSensitive(params, "partial_rotary_factor");
    if (!is_absent(prf) && !(cJSON_IsNumber(prf) && prf->valuedouble == 1.0))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: %s.partial_rotary_factor other than 1 is not supported", name,
                          field);
    return 0;
}

/* ---- architectures ---- */

static int parse_llama_family(model_config *cfg, const cJSON *root, const char *name,
                              assay_error *err) {
    static const int default_max_pos[] = {
        [ARCH_LLAMA] = 2048, [ARCH_MISTRAL] = 131072, [ARCH_QWEN2] = 32768};
    if (read_int(root, "hidden_size", 1, 0, 1, MAX_DIM, &cfg->dim, name, err) ||
        read_int(root, "num_hidden_layers", 1, 0, 1, MAX_LAYERS, &cfg->n_layers, name, err) ||
        read_int(root, "num_attention_heads", 1, 0, 1, MAX_HEADS, &cfg->n_heads, name, err) ||
        read_int(root, "num_key_value_heads", 0, cfg->n_heads, 1, MAX_HEADS, &cfg->n_kv_heads, name,
                 err) ||
        read_int(root, "intermediate_size", 1, 0, 1, MAX_FFN, &cfg->ffn_dim, name, err) ||
        read_int(root, "vocab_size", 1, 0, 1, MAX_VOCAB, &cfg->vocab_size, name, err) ||
        read_int(root, "max_position_embeddings", 0, default_max_pos[cfg->arch], 1, MAX_POS,
                 &cfg->max_pos, name, err) ||
        read_float(root, "rms_norm_eps", 0, 1e-6, 0.0, 1.0, &cfg->norm_eps, name, err) ||
        read_bool(root, "tie_word_embeddings", 0, &cfg->tie_embeddings, name, err))
        return err->code;

    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (is_absent(hd)) {
        if (cfg->dim % cfg->n_heads)
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: hidden_size (%d) is not divisible by num_attention_heads (%d)",
                              name, cfg->dim, cfg->n_heads);
        cfg->head_dim = cfg->dim / cfg->n_heads;
    } else if (read_int(root, "head_dim", 1, 0, 1, MAX_HEAD_DIM, &cfg->head_dim, name, err)) {
        return err->code;
    }
    if (cfg->head_dim > MAX_HEAD_DIM)
        return assay_fail(err, ASSAY_EFORMAT, "%s: head_dim %d is larger than %d", name,
                          cfg->head_dim, MAX_HEAD_DIM);
    /* rotary embedding rotates pairs */
    if (cfg->head_dim % 2)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: head_dim (%d) must be even for rotary embeddings", name,
                          cfg->head_dim);
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads)
        return assay_fail(err, ASSAY_EFORMAT,
                          "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads "
                          "(%d)",
                          name, cfg->n_heads, cfg->n_kv_heads);

    const char *act = read_str(root, "hidden_act", "silu", name, err);
    if (!act)
        return err->code;
    if (strcmp(act, "silu") && strcmp(act, "swish"))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: hidden_act '%s' is not supported for %s (supported: silu)", name,
                          act, cfg->arch_name);

    int attn_bias = 0, mlp_bias = 0;
    if (read_bool(root, "attention_bias", 0, &attn_bias, name, err) ||
        read_bool(root, "mlp_bias", 0, &mlp_bias, name, err))
        return err->code;
    if (cfg->arch != ARCH_QWEN2 && attn_bias)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: attention_bias=true is not supported for %s", name, cfg->arch_name);
    if (mlp_bias)
        return assay_fail(err, ASSAY_EUNSUPPORTED, "%s: mlp_bias=true is not supported for %s",
                          name, cfg->arch_name);

    cfg->norm        = NORM_RMS;
    cfg->act         = ACT_SILU;
    cfg->learned_pos = 0;
    cfg->qkv_bias    = cfg->arch == ARCH_QWEN2; /* Qwen2 hard-codes bias on q/k/v, not o */
    cfg->mlp_bias    = 0;

    cfg->sliding_window = 0;
    if (cfg->arch == ARCH_MISTRAL) {
        if (read_int(root, "sliding_window", 0, 0, 1, MAX_POS, &cfg->sliding_window, name, err))
            return err->code;
    } else if (cfg->arch == ARCH_QWEN2) {
        int use = 0, window = 0, max_window_layers = 0;
        if (read_bool(root, "use_sliding_window", 0, &use, name, err))
            return err->code;
        if (use) {
            if (read_int(root, "sliding_window", 0, 4096, 1, MAX_POS, &window, name, err) ||
                read_int(root, "max_window_layers", 0, 28, 0, MAX_LAYERS, &max_window_layers, name,
                         err))
                return err->code;
            /* Qwen2 slides only in layers >= max_window_layers; one window for all layers is
             * what model_config can say */
            if (max_window_layers == 0)
                cfg->sliding_window = window;
            else if (max_window_layers < cfg->n_layers)
                return assay_fail(err, ASSAY_EUNSUPPORTED,
                                  "%s: sliding window on only some layers (max_window_layers=%d "
                                  "of %d) is not supported",
                                  name, max_window_layers, cfg->n_layers);
        }
    }
    if (parse_rope(cfg, root, name, err))
        return err->code;
    if (read_token_id(root, "bos_token_id", 0, cfg->arch == ARCH_QWEN2 ? -1 : 1, cfg->vocab_size,
                      &cfg->bos_token_id, name, err) ||
        read_token_id(root, "eos_token_id", 1, cfg->arch == ARCH_QWEN2 ? -1 : 2, cfg->vocab_size,
                      &cfg->eos_token_id, name, err))
        return err->code;
    return 0;
}

/* GPT-2 spells its sizes n_embd/n_layer/n_head/n_positions; transformers also maps the common
 * names onto them, so accept either. */
static int read_int_alias(const cJSON *root, const char *key, const char *alias, int required,
                          int def, int64_t lo, int64_t hi, int *out, const char *name,
                          assay_error *err) {
    const char *use = key;
    if (is_absent(cJSON_GetObjectItemCaseSensitive(root, key)) &&
        !is_absent(cJSON_GetObjectItemCaseSensitive(root, alias)))
        use = alias;
    return read_int(root, use, required, def, lo, hi, out, name, err);
}

static int parse_gpt2(model_config *cfg, const cJSON *root, const char *name, assay_error *err) {
    if (read_int_alias(root, "n_embd", "hidden_size", 1, 0, 1, MAX_DIM, &cfg->dim, name, err) ||
        read_int_alias(root, "n_layer", "num_hidden_layers", 1, 0, 1, MAX_LAYERS, &cfg->n_layers,
                       name, err) ||
        read_int_alias(root, "n_head", "num_attention_heads", 1, 0, 1, MAX_HEADS, &cfg->n_heads,
                       name, err) ||
        read_int_alias(root, "n_positions", "max_position_embeddings", 0, 1024, 1, 1 << 20,
                       &cfg->max_pos, name, err) ||
        read_int(root, "vocab_size", 1, 0, 1, MAX_VOCAB, &cfg->vocab_size, name, err) ||
        read_int(root, "n_inner", 0, 0, 1, MAX_FFN, &cfg->ffn_dim, name, err) ||
        read_float(root, "layer_norm_epsilon", 0, 1e-5, 0.0, 1.0, &cfg->norm_eps, name, err))
        return err->code;
    if (cfg->dim % cfg->n_heads)
        return assay_fail(err, ASSAY_EFORMAT, "%s: n_embd (%d) is not divisible by n_head (%d)",
                          name, cfg->dim, cfg->n_heads);
    if (cfg->ffn_dim == 0) /* n_inner null or absent */
        cfg->ffn_dim = 4 * cfg->dim;
    cfg->n_kv_heads = cfg->n_heads;
    cfg->head_dim   = cfg->dim / cfg->n_heads;
    if (cfg->head_dim > MAX_HEAD_DIM)
        return assay_fail(err, ASSAY_EFORMAT, "%s: head size n_embd/n_head = %d is larger than %d",
                          name, cfg->head_dim, MAX_HEAD_DIM);

    const char *act = read_str(root, "activation_function", "gelu_new", name, err);
    if (!act)
        return err->code;
    /* gelu_pytorch_tanh is the same tanh approximation as gelu_new */
    if (strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh"))
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: activation_function '%s' is not supported for GPT2LMHeadModel "
                          "(supported: gelu_new, gelu_pytorch_tanh)",
                          name, act);
    int by_layer = 0, scale = 1;
    if (read_bool(root, "scale_attn_by_inverse_layer_idx", 0, &by_layer, name, err) ||
        read_bool(root, "scale_attn_weights", 1, &scale, name, err))
        return err->code;
    if (by_layer || !scale)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "%s: only the standard 1/sqrt(head_dim) attention scaling is supported "
                          "(scale_attn_by_inverse_layer_idx=false, scale_attn_weights=true)",
                          name);

    cfg->norm           = NORM_LAYER;
    cfg->act            = ACT_GELU_NEW;
    cfg->learned_pos    = 1;
    cfg->qkv_bias       = 1;
    cfg->mlp_bias       = 1;
    cfg->tie_embeddings = 1; /* GPT2LMHeadModel always ties lm_head to wte */
    cfg->rope           = ROPE_NONE;
    cfg->rope_theta     = 0.0f;
    cfg->rope_factor    = 1.0f;
    cfg->sliding_window = 0;
    if (read_token_id(root, "bos_token_id", 0, 50256, cfg->vocab_size, &cfg->bos_token_id, name,
                      err) ||
        read_token_id(root, "eos_token_id", 1, 50256, cfg->vocab_size, &cfg->eos_token_id, name,
                      err))
        return err->code;
    return 0;
}

int config_parse(model_config *cfg, const char *json, size_t len, const char *name,
                 assay_error *err) {
    assay_error local;
    if (!err)
        err = &local;
    assay_error_clear(err);
    if (!name)
        name = "config.json";
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = cfg->eos_token_id = -1;
    if (!json)
        return assay_fail(err, ASSAY_EINVAL, "%s: no text", name);

    cJSON *root = cJSON_ParseWithLength(json, len);
    int    rc   = 0;
    if (!root) {
        const char *at  = cJSON_GetErrorPtr();
        size_t      off = (at && at >= json && at <= json + len) ? (size_t)(at - json) : 0;
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: not valid JSON (near byte %zu)", name, off);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: top level must be a JSON object", name);
        goto fail;
    }
    if (config_json_keep_last(root)) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", name);
        goto fail;
    }

    const char  *arch_name  = NULL;
    const cJSON *archs      = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char  *model_type = read_str(root, "model_type", "", name, err);
    if (!model_type) {
        rc = err->code;
        goto fail;
    }
    if (!is_absent(archs)) {
        const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!first || !cJSON_IsString(first)) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: field 'architectures' must be a non-empty list of strings", name);
            goto fail;
        }
        arch_name = first->valuestring;
    }
    int found = -1;
    for (int i = 0; i < N_KNOWN_ARCHS; i++) {
        /* transformers 5 omits "architectures" from a bare config: fall back to model_type */
        if (arch_name ? !strcmp(arch_name, known_archs[i].arch_name)
                      : !strcmp(model_type, known_archs[i].model_type)) {
            found = i;
            break;
        }
    }
    if (found < 0) {
        if (arch_name)
            rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                            "%s: architecture '%s' is not supported (supported: %s)", name,
                            arch_name, config_supported_archs());
        else if (*model_type)
            rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                            "%s: model_type '%s' is not supported (supported: %s)", name,
                            model_type, config_supported_archs());
        else
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: neither 'architectures' nor 'model_type' names the architecture "
                            "(supported: %s)",
                            name, config_supported_archs());
        goto fail;
    }
    cfg->arch = known_archs[found].arch;
    copy_str(cfg->arch_name, sizeof cfg->arch_name, known_archs[found].arch_name);
    copy_str(cfg->model_type, sizeof cfg->model_type,
             *model_type ? model_type : known_archs[found].model_type);

    /* transformers 5 writes "dtype", 4.x "torch_dtype" */
    const char *dt = read_str(root, "dtype", NULL, name, err);
    if (!dt && err->code) {
        rc = err->code;
        goto fail;
    }
    if (!dt && !(dt = read_str(root, "torch_dtype", "", name, err))) {
        rc = err->code;
        goto fail;
    }
    copy_str(cfg->torch_dtype, sizeof cfg->torch_dtype, dt);

    rc = cfg->arch == ARCH_GPT2 ? parse_gpt2(cfg, root, name, err)
                                : parse_llama_family(cfg, root, name, err);
    if (rc)
        goto fail;
    if ((int64_t)cfg->n_heads * cfg->head_dim > MAX_DIM * 4) {
        rc = assay_fail(err, ASSAY_EFORMAT, "%s: %d heads of %d dims is implausibly large", name,
                        cfg->n_heads, cfg->head_dim);
        goto fail;
    }
    cJSON_Delete(root);
    return 0;

fail:
    cJSON_Delete(root);
    return rc ? rc : assay_fail(err, ASSAY_EINTERNAL, "%s: config parse failed", name);
}

int config_load(model_config *cfg, const char *path, assay_error *err) {
    char  *text = NULL;
    size_t len  = 0;
    int    rc   = file_read_capped(path, CONFIG_JSON_MAX, &text, &len, err);
    if (rc) {
        memset(cfg, 0, sizeof *cfg);
        return rc;
    }
    rc = config_parse(cfg, text, len, path, err);
    free(text);
    return rc;
}

int config_load_dir(model_config *cfg, const char *dir, assay_error *err) {
    char path[4200];
    int  rc = model_dir_check(dir, err);
    if (rc)
        return rc;
    if (model_path_is_gguf(dir)) {
        gguf_file *g = gguf_open(dir, err);
        if (!g) {
            memset(cfg, 0, sizeof *cfg);
            return err->code ? err->code : ASSAY_EFORMAT;
        }
        rc = gguf_to_config(g, cfg, err);
        gguf_close(g);
        return rc;
    }
    if (path_join(path, sizeof path, dir, "config.json"))
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", dir);
    return config_load(cfg, path, err);
}

/* ---- config.json output ---- */

static void add_token_id(cJSON *o, const char *key, int id) {
    if (id >= 0)
        cJSON_AddNumberToObject(o, key, id);
    else
        cJSON_AddNullToObject(o, key);
}

char *config_to_json(const model_config *cfg) {
    if (!cfg || (int)cfg->arch < 0 || (int)cfg->arch >= N_KNOWN_ARCHS)
        return NULL;
    const char *arch_name = NULL, *model_type = NULL;
    for (int i = 0; i < N_KNOWN_ARCHS; i++)
        if (known_archs[i].arch == cfg->arch) {
            arch_name  = known_archs[i].arch_name;
            model_type = known_archs[i].model_type;
        }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON *archs = cJSON_AddArrayToObject(o, "architectures");
    if (archs)
        cJSON_AddItemToArray(archs, cJSON_CreateString(arch_name));
    cJSON_AddStringToObject(o, "model_type", cfg->model_type[0] ? cfg->model_type : model_type);
    if (cfg->arch == ARCH_GPT2) {
        cJSON_AddNumberToObject(o, "vocab_size", cfg->vocab_size);
        cJSON_AddNumberToObject(o, "n_positions", cfg->max_pos);
        cJSON_AddNumberToObject(o, "n_embd", cfg->dim);
        cJSON_AddNumberToObject(o, "n_layer", cfg->n_layers);
        cJSON_AddNumberToObject(o, "n_head", cfg->n_heads);
        cJSON_AddNumberToObject(o, "n_inner", cfg->ffn_dim);
        cJSON_AddStringToObject(o, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(o, "layer_norm_epsilon", float_shortest_decimal(cfg->norm_eps));
        cJSON_AddBoolToObject(o, "scale_attn_weights", 1);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", 1);
    } else {
        cJSON_AddNumberToObject(o, "vocab_size", cfg->vocab_size);
        cJSON_AddNumberToObject(o, "hidden_size", cfg->dim);
        cJSON_AddNumberToObject(o, "intermediate_size", cfg->ffn_dim);
        cJSON_AddNumberToObject(o, "num_hidden_layers", cfg->n_layers);
        cJSON_AddNumberToObject(o, "num_attention_heads", cfg->n_heads);
        cJSON_AddNumberToObject(o, "num_key_value_heads", cfg->n_kv_heads);
        cJSON_AddNumberToObject(o, "head_dim", cfg->head_dim);
        cJSON_AddNumberToObject(o, "max_position_embeddings", cfg->max_pos);
        cJSON_AddNumberToObject(o, "rms_norm_eps", float_shortest_decimal(cfg->norm_eps));
        cJSON_AddStringToObject(o, "hidden_act", "silu");
        cJSON_AddBoolToObject(o, "tie_word_embeddings", cfg->tie_embeddings);
        if (cfg->arch == ARCH_LLAMA) {
            cJSON_AddBoolToObject(o, "attention_bias", 0);
            cJSON_AddBoolToObject(o, "mlp_bias", 0);
        }
        /* 4.x layout (rope_theta + rope_scaling), which transformers 5 still reads */
        cJSON_AddNumberToObject(o, "rope_theta", float_shortest_decimal(cfg->rope_theta));
        if (cfg->rope == ROPE_LINEAR || cfg->rope == ROPE_LLAMA3) {
            cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
            if (rs) {
                cJSON_AddStringToObject(rs, "rope_type",
                                        cfg->rope == ROPE_LINEAR ? "linear" : "llama3");
                cJSON_AddNumberToObject(rs, "factor", float_shortest_decimal(cfg->rope_factor));
                if (cfg->rope == ROPE_LLAMA3) {
                    cJSON_AddNumberToObject(rs, "low_freq_factor",
                                            float_shortest_decimal(cfg->rope_low_freq_factor));
                    cJSON_AddNumberToObject(rs, "high_freq_factor",
                                            float_shortest_decimal(cfg->rope_high_freq_factor));
                    cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                            cfg->rope_orig_max_pos);
                }
            }
        } else {
            cJSON_AddNullToObject(o, "rope_scaling");
        }
        if (cfg->arch == ARCH_MISTRAL) {
            if (cfg->sliding_window > 0)
                cJSON_AddNumberToObject(o, "sliding_window", cfg->sliding_window);
            else
                cJSON_AddNullToObject(o, "sliding_window");
        } else if (cfg->arch == ARCH_QWEN2) {
            cJSON_AddBoolToObject(o, "use_sliding_window", cfg->sliding_window > 0);
            if (cfg->sliding_window > 0) {
                cJSON_AddNumberToObject(o, "sliding_window", cfg->sliding_window);
                cJSON_AddNumberToObject(o, "max_window_layers", 0); /* every layer slides */
            } else {
                cJSON_AddNullToObject(o, "sliding_window");
            }
        }
    }
    add_token_id(o, "bos_token_id", cfg->bos_token_id);
    add_token_id(o, "eos_token_id", cfg->eos_token_id);
    if (cfg->torch_dtype[0])
        cJSON_AddStringToObject(o, "torch_dtype", cfg->torch_dtype);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

/* ---- tensor lists ---- */

typedef struct spec_list {
    model_tensor_spec *v;
    int                n, cap;
} spec_list;

static int spec_add(spec_list *l, int layer, int optional, int64_t d0, int64_t d1, const char *fmt,
                    ...) __attribute__((format(printf, 6, 7)));
static int spec_add(spec_list *l, int layer, int optional, int64_t d0, int64_t d1, const char *fmt,
                    ...) {
    if (l->n == l->cap)
        return -1; /* capacity is computed exactly up front */
    model_tensor_spec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim     = d1 > 0 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1 > 0 ? d1 : 0;
    s->layer    = layer;
    s->optional = optional;
    return 0;
}

static int config_is_sane(const model_config *c) {
    return (int)c->arch >= 0 && (int)c->arch < N_KNOWN_ARCHS && c->n_layers >= 1 &&
           c->n_layers <= MAX_LAYERS && c->dim >= 1 && c->dim <= MAX_DIM && c->n_heads >= 1 &&
           c->n_heads <= MAX_HEADS && c->n_kv_heads >= 1 && c->n_kv_heads <= c->n_heads &&
           c->head_dim >= 1 && c->head_dim <= MAX_HEAD_DIM && c->ffn_dim >= 1 &&
           c->ffn_dim <= MAX_FFN && c->vocab_size >= 1 && c->vocab_size <= MAX_VOCAB &&
           (c->arch != ARCH_GPT2 || (c->max_pos >= 1 && c->max_pos <= MAX_POS));
}

/* Builds the list with GPT-2 names under `gpt2_prefix` ("transformer." or ""). */
static int specs_build(const model_config *c, const char *gpt2_prefix, model_tensor_spec **out,
                       int *n_out, assay_error *err) {
    *out   = NULL;
    *n_out = 0;
    if (!config_is_sane(c))
        return assay_fail(err, ASSAY_EINVAL, "model config: sizes out of range (not parsed?)");
    int                n_t = 0;
    const arch_tensor *t   = arch_tensors(c->arch, &n_t);
    int                n_g = 0, n_l = 0;
    for (int k = 0; k < n_t; k++)
        if (arch_present(c, &t[k]))
            *(t[k].section == 1 ? &n_l : &n_g) += 1;
    spec_list l = {0};
    l.cap       = n_g + c->n_layers * n_l;
    l.v         = calloc((size_t)l.cap, sizeof *l.v);
    if (!l.v)
        return assay_fail(err, ASSAY_ENOMEM, "model config: out of memory for %d tensor specs",
                          l.cap);
    int  rc = 0;
    char name[96];
    for (int section = 0; section < 3; section++)
        for (int i = 0; i < (section == 1 ? c->n_layers : 1); i++)
            for (int k = 0; k < n_t; k++) {
                if (t[k].section != section || !arch_present(c, &t[k]))
                    continue;
                int layer = section == 1 ? i : -1;
                rc |= spec_add(&l, layer, t[k].when == WHEN_UNTIED && c->tie_embeddings,
                               arch_dim_size(c, t[k].rows), arch_dim_size(c, t[k].cols), "%s",
                               arch_name(name, sizeof name, &t[k], i, gpt2_prefix));
            }
    if (rc) {
        free(l.v);
        return assay_fail(err, ASSAY_EINTERNAL, "model config: tensor spec list overflow");
    }
    *out   = l.v;
    *n_out = l.n;
    return 0;
}

int config_tensor_specs(const model_config *cfg, model_tensor_spec **out, int *n_out,
                        assay_error *err) {
    return specs_build(cfg, "transformer.", out, n_out, err);
}

const char *config_gpt2_prefix(const st_model *m) {
    if (!st_model_find(m, "transformer.wte.weight") && st_model_find(m, "wte.weight"))
        return "";
    return "transformer.";
}

const st_tensor *config_find_tensor(const model_config *cfg, const st_model *m,
                                    const char *spec_name) {
    const st_tensor  *t     = st_model_find(m, spec_name);
    static const char pfx[] = "transformer.";
    if (!t && cfg->arch == ARCH_GPT2 && !strncmp(spec_name, pfx, sizeof pfx - 1))
        t = st_model_find(m, spec_name + sizeof pfx - 1);
    return t;
}

int64_t config_param_count(const model_config *cfg) {
    model_tensor_spec *specs = NULL;
    int                n     = 0;
    if (specs_build(cfg, "", &specs, &n, NULL))
        return -1;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        if (!specs[i].optional)
            total += specs[i].shape[0] * (specs[i].ndim == 2 ? specs[i].shape[1] : 1);
    free(specs);
    return total;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Buffers transformers keeps in old checkpoints that carry nothing the forward pass needs:
 * rotary inverse frequencies (recomputed from the config), GPT-2's causal mask and its fill
 * value. */
static int is_harmless_extra(const model_config *cfg, const char *name) {
    if (cfg->arch != ARCH_GPT2)
        return str_ends_with(name, "rotary_emb.inv_freq");
    return str_ends_with(name, ".attn.bias") || str_ends_with(name, ".attn.masked_bias");
}

static int cmp_spec_name(const void *a, const void *b) {
    return strcmp(((const model_tensor_spec *)a)->name, ((const model_tensor_spec *)b)->name);
}

int config_check_tensors_in(const model_config *cfg, const st_model *m, const char *where,
                            const char ***ignored, int *n_ignored, assay_error *err) {
    assay_error local;
    if (!err)
        err = &local;
    if (ignored)
        *ignored = NULL;
    if (n_ignored)
        *n_ignored = 0;
    if (!where)
        where = "checkpoint";
    model_tensor_spec *specs   = NULL;
    const char       **ign     = NULL;
    int                n_specs = 0, n_ign = 0, rc = 0;
    const char        *prefix = cfg->arch == ARCH_GPT2 ? config_gpt2_prefix(m) : "";
    if ((rc = specs_build(cfg, prefix, &specs, &n_specs, err)))
        return rc;

    int n_missing = 0;
    for (int i = 0; i < n_specs; i++) {
        const model_tensor_spec *s = &specs[i];
        const st_tensor         *t = st_model_find(m, s->name);
        if (!t) {
            if (!s->optional && n_missing++ == 0)
                assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is missing (%s needs it)", where,
                           s->name, cfg->arch_name[0] ? cfg->arch_name : "the architecture");
            continue;
        }
        if (n_missing)
            continue;
        int same = t->ndim == s->ndim;
        for (int d = 0; same && d < s->ndim; d++)
            same = t->shape[d] == s->shape[d];
        if (!same) {
            char got[128], want[64];
            format_shape(got, sizeof got, t->ndim, t->shape);
            format_shape(want, sizeof want, s->ndim, s->shape);
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", where,
                            s->name, got, want);
            goto fail;
        }
        if (!dtype_is_weight(t->dtype)) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: tensor '%s' has dtype %s, expected a weight dtype (F32, F16, "
                            "BF16)",
                            where, s->name, dtype_name(t->dtype));
            goto fail;
        }
    }
    if (n_missing) {
        if (n_missing > 1) {
            char more[64];
            snprintf(more, sizeof more, " (and %d more missing)", n_missing - 1);
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof err->msg - len, "%s", more);
        }
        rc = ASSAY_EFORMAT;
        goto fail;
    }

    qsort(specs, (size_t)n_specs, sizeof *specs, cmp_spec_name);
    int n = st_model_count(m);
    for (int i = 0; i < n; i++) {
        const st_tensor  *t = st_model_tensor(m, i);
        model_tensor_spec key;
        copy_str(key.name, sizeof key.name, t->name);
        if (strlen(t->name) < sizeof key.name &&
            bsearch(&key, specs, (size_t)n_specs, sizeof *specs, cmp_spec_name))
            continue;
        if (!is_harmless_extra(cfg, t->name)) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: unexpected tensor '%s' (not part of %s with this config)", where,
                            t->name, cfg->arch_name[0] ? cfg->arch_name : "the architecture");
            goto fail;
        }
        if (ignored) {
            if (!ign && !(ign = calloc((size_t)n, sizeof *ign))) {
                rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
                goto fail;
            }
            ign[n_ign] = t->name;
        }
        n_ign++;
    }
    free(specs);
    if (ignored)
        *ignored = ign;
    if (n_ignored)
        *n_ignored = n_ign;
    return 0;

fail:
    free(specs);
    free(ign);
    return rc;
}

int config_check_tensors(const model_config *cfg, const st_model *m, const char ***ignored,
                         int *n_ignored, assay_error *err) {
    return config_check_tensors_in(cfg, m, "checkpoint", ignored, n_ignored, err);
}
