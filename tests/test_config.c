#include <stdint.h>
#include <string.h>

#include <cJSON.h>

#include "core/util.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "tests/helpers.h"

/* Removes what the tests write into a temporary model dir. */
static void remove_model_dir(const char *dir) {
    const char *files[] = {"config.json", "model.safetensors"};
    char        p[256];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int parse(model_config *cfg, const char *json, assay_error *err) {
    return config_parse(cfg, json, strlen(json), "config.json", err);
}

/* Asserts a parse fails with `status` and a message that contains every given piece. */
static void expect_parse_error(const char *json, int status, const char *piece1,
                               const char *piece2) {
    model_config cfg;
    assay_error  err;
    int          rc = parse(&cfg, json, &err);
    cr_assert_eq(rc, status, "status %d (%s), expected %d for %s", rc, err.msg, status, json);
    cr_assert_eq(err.code, status);
    cr_assert(strncmp(err.msg, "config.json: ", 13) == 0, "message names the file: %s", err.msg);
    cr_assert(strstr(err.msg, piece1), "message '%s' should contain '%s'", err.msg, piece1);
    if (piece2)
        cr_assert(strstr(err.msg, piece2), "message '%s' should contain '%s'", err.msg, piece2);
}

/* Llama 3.2 1B's config.json as published (trimmed of fields we do not read). */
static const char *llama32_json =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009],"
    " \"head_dim\": 64, \"hidden_act\": \"silu\", \"hidden_size\": 2048,"
    " \"intermediate_size\": 8192, \"max_position_embeddings\": 131072,"
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0,"
    " \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192,"
    " \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0, \"tie_word_embeddings\": true,"
    " \"torch_dtype\": \"bfloat16\", \"vocab_size\": 128256}";

Test(config, parses_llama32_with_llama3_rope_and_eos_list) {
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, llama32_json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.arch, ARCH_LLAMA);
    cr_assert_str_eq(cfg.arch_name, "LlamaForCausalLM");
    cr_assert_str_eq(cfg.model_type, "llama");
    cr_assert_eq(cfg.n_layers, 16);
    cr_assert_eq(cfg.dim, 2048);
    cr_assert_eq(cfg.n_heads, 32);
    cr_assert_eq(cfg.n_kv_heads, 8);
    cr_assert_eq(cfg.head_dim, 64);
    cr_assert_eq(cfg.ffn_dim, 8192);
    cr_assert_eq(cfg.vocab_size, 128256);
    cr_assert_eq(cfg.max_pos, 131072);
    cr_assert_float_eq(cfg.norm_eps, 1e-5f, 0);
    cr_assert_eq(cfg.norm, NORM_RMS);
    cr_assert_eq(cfg.act, ACT_SILU);
    cr_assert_eq(cfg.learned_pos, 0);
    cr_assert_eq(cfg.qkv_bias, 0);
    cr_assert_eq(cfg.tie_embeddings, 1);
    cr_assert_eq(cfg.rope, ROPE_LLAMA3);
    cr_assert_float_eq(cfg.rope_theta, 500000.0f, 0);
    cr_assert_float_eq(cfg.rope_factor, 32.0f, 0);
    cr_assert_float_eq(cfg.rope_low_freq_factor, 1.0f, 0);
    cr_assert_float_eq(cfg.rope_high_freq_factor, 4.0f, 0);
    cr_assert_eq(cfg.rope_orig_max_pos, 8192);
    cr_assert_eq(cfg.sliding_window, 0);
    cr_assert_eq(cfg.bos_token_id, 128000);
    cr_assert_eq(cfg.eos_token_id, 128001, "first entry of the eos list");
    cr_assert_str_eq(cfg.torch_dtype, "bfloat16");
}

Test(config, reads_transformers5_rope_parameters) {
    /* transformers 5 writes theta inside rope_parameters and "dtype" instead of torch_dtype */
    const char *json =
        "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
        " \"vocab_size\": 512, \"dtype\": \"float32\", \"rope_parameters\": {\"factor\": 8.0,"
        " \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
        " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0,"
        " \"rope_type\": \"llama3\"}}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_str_eq(cfg.arch_name, "LlamaForCausalLM", "model_type alone names the arch");
    cr_assert_eq(cfg.rope, ROPE_LLAMA3);
    cr_assert_float_eq(cfg.rope_theta, 500000.0f, 0);
    cr_assert_float_eq(cfg.rope_factor, 8.0f, 0);
    cr_assert_str_eq(cfg.torch_dtype, "float32");
    cr_assert_eq(cfg.head_dim, 16);
    cr_assert_eq(cfg.max_pos, 2048, "LlamaConfig default");
    cr_assert_float_eq(cfg.norm_eps, 1e-6f, 0);
    cr_assert_eq(cfg.bos_token_id, 1);
    cr_assert_eq(cfg.eos_token_id, 2);
    cr_assert_eq(cfg.tie_embeddings, 0);
}

Test(config, parses_linear_rope_and_old_type_key) {
    const char *json =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
        " \"intermediate_size\": 128, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
        " \"vocab_size\": 100, \"rope_theta\": 1000.0,"
        " \"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0}}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.rope, ROPE_LINEAR);
    cr_assert_float_eq(cfg.rope_factor, 4.0f, 0);
    cr_assert_float_eq(cfg.rope_theta, 1000.0f, 0);
    cr_assert_eq(cfg.n_kv_heads, 4, "no GQA when num_key_value_heads is absent");
}

Test(config, null_rope_scaling_means_default_rope) {
    const char *json =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 2048,"
        " \"intermediate_size\": 5632, \"num_hidden_layers\": 22, \"num_attention_heads\": 32,"
        " \"num_key_value_heads\": 4, \"vocab_size\": 32000, \"rope_scaling\": null,"
        " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"bos_token_id\": 1,"
        " \"eos_token_id\": 2, \"max_position_embeddings\": 2048}"; /* TinyLlama 1.1B */
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.rope, ROPE_DEFAULT);
    cr_assert_float_eq(cfg.rope_factor, 1.0f, 0);
    cr_assert_eq(cfg.head_dim, 64);
    cr_assert_eq(cfg.n_kv_heads, 4);
}

Test(config, parses_mistral_with_and_without_sliding_window) {
    const char *base =
        "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 4096,"
        " \"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
        " \"num_key_value_heads\": 8, \"vocab_size\": 32000, \"sliding_window\": %s}";
    char         json[512];
    model_config cfg;
    assay_error  err;
    snprintf(json, sizeof json, base, "4096");
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.arch, ARCH_MISTRAL);
    cr_assert_eq(cfg.sliding_window, 4096);
    cr_assert_eq(cfg.max_pos, 131072, "MistralConfig default");
    snprintf(json, sizeof json, base, "null");
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.sliding_window, 0);
}

Test(config, parses_qwen2_bias_and_sliding_only_when_enabled) {
    const char *base =
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 896,"
        " \"intermediate_size\": 4864, \"num_hidden_layers\": 24, \"num_attention_heads\": 14,"
        " \"num_key_value_heads\": 2, \"vocab_size\": 151936, \"tie_word_embeddings\": true,"
        " \"rope_theta\": 1000000.0, \"sliding_window\": 32768, \"max_window_layers\": %d,"
        " \"use_sliding_window\": %s, \"bos_token_id\": 151643, \"eos_token_id\": 151645}";
    char         json[768];
    model_config cfg;
    assay_error  err;
    snprintf(json, sizeof json, base, 21, "false"); /* Qwen2.5-0.5B-Instruct */
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.arch, ARCH_QWEN2);
    cr_assert_eq(cfg.qkv_bias, 1);
    cr_assert_eq(cfg.mlp_bias, 0);
    cr_assert_eq(cfg.head_dim, 64);
    cr_assert_eq(cfg.sliding_window, 0, "use_sliding_window false: no window");
    cr_assert_eq(cfg.tie_embeddings, 1);
    cr_assert_eq(cfg.eos_token_id, 151645);
    snprintf(json, sizeof json, base, 0, "true");
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.sliding_window, 32768);
    snprintf(json, sizeof json, base, 12, "true");
    cr_assert_eq(parse(&cfg, json, &err), ASSAY_EUNSUPPORTED, "window on some layers only");
    cr_assert(strstr(err.msg, "max_window_layers"), "%s", err.msg);
}

Test(config, parses_gpt2_with_defaults) {
    /* openai-community/gpt2 config.json (n_inner null, no layer_norm_epsilon default override) */
    const char *json =
        "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"],"
        " \"bos_token_id\": 50256, \"eos_token_id\": 50256, \"model_type\": \"gpt2\","
        " \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12, \"n_inner\": null, \"n_layer\": 12,"
        " \"n_positions\": 1024, \"vocab_size\": 50257}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.arch, ARCH_GPT2);
    cr_assert_eq(cfg.dim, 768);
    cr_assert_eq(cfg.n_layers, 12);
    cr_assert_eq(cfg.n_heads, 12);
    cr_assert_eq(cfg.n_kv_heads, 12);
    cr_assert_eq(cfg.head_dim, 64);
    cr_assert_eq(cfg.ffn_dim, 4 * 768, "n_inner null means 4 * n_embd");
    cr_assert_eq(cfg.max_pos, 1024);
    cr_assert_float_eq(cfg.norm_eps, 1e-5f, 0);
    cr_assert_eq(cfg.norm, NORM_LAYER);
    cr_assert_eq(cfg.act, ACT_GELU_NEW);
    cr_assert_eq(cfg.learned_pos, 1);
    cr_assert_eq(cfg.qkv_bias, 1);
    cr_assert_eq(cfg.mlp_bias, 1);
    cr_assert_eq(cfg.tie_embeddings, 1);
    cr_assert_eq(cfg.rope, ROPE_NONE);
    cr_assert_eq(cfg.eos_token_id, 50256);
    cr_assert_eq(cfg.bos_token_id, 50256);
}

Test(config, gpt2_token_ids_outside_a_tiny_vocab_become_absent) {
    const char  *json = "{\"model_type\": \"gpt2\", \"n_embd\": 32, \"n_head\": 4,"
                        " \"n_layer\": 2, \"vocab_size\": 300, \"n_inner\": 48}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(cfg.eos_token_id, -1, "default 50256 does not exist in a 300-token vocab");
    cr_assert_eq(cfg.ffn_dim, 48);
    cr_assert_eq(cfg.max_pos, 1024, "GPT2Config default n_positions");
}

Test(config, rejects_missing_field_naming_it) {
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "'num_attention_heads'", "missing");
    expect_parse_error("{\"model_type\": \"gpt2\", \"n_embd\": 32, \"n_head\": 4,"
                       " \"vocab_size\": 300}",
                       ASSAY_EFORMAT, "'n_layer'", "missing");
}

Test(config, rejects_wrong_types_naming_field_and_type) {
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": \"4\", \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "field 'num_attention_heads' must be an integer", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64.5,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "field 'hidden_size' must be an integer", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"tie_word_embeddings\": 1}",
                       ASSAY_EFORMAT, "'tie_word_embeddings' must be true or false", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"eos_token_id\": [2, \"x\"]}",
                       ASSAY_EFORMAT, "'eos_token_id'", "list of integers");
    expect_parse_error("{\"architectures\": \"LlamaForCausalLM\"}", ASSAY_EFORMAT,
                       "'architectures'", "list");
    expect_parse_error("[1, 2]", ASSAY_EFORMAT, "object", NULL);
    expect_parse_error("{\"hidden_size\": 64,", ASSAY_EFORMAT, "not valid JSON", NULL);
}

Test(config, rejects_unknown_architecture_listing_supported) {
    expect_parse_error("{\"architectures\": [\"FalconForCausalLM\"], \"hidden_size\": 64}",
                       ASSAY_EUNSUPPORTED, "'FalconForCausalLM'",
                       "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel");
    expect_parse_error("{\"model_type\": \"bert\"}", ASSAY_EUNSUPPORTED, "'bert'",
                       "GPT2LMHeadModel");
    expect_parse_error("{\"hidden_size\": 64}", ASSAY_EFORMAT, "architecture", "Qwen2ForCausalLM");
}

Test(config, rejects_inconsistent_heads_and_sizes) {
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 6, \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "hidden_size (64)", "num_attention_heads (6)");
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 8, \"num_key_value_heads\": 3,"
                       " \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "num_key_value_heads (3)", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 0,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 8, \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "'hidden_size' is 0", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 100000,"
                       " \"num_attention_heads\": 8, \"vocab_size\": 100}",
                       ASSAY_EFORMAT, "'num_hidden_layers' is 100000", NULL);
    /* positive as a double, 0 as the float we keep */
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 8, \"vocab_size\": 100,"
                       " \"rms_norm_eps\": 1e-62}",
                       ASSAY_EFORMAT, "'rms_norm_eps' is 1e-62", NULL);
    expect_parse_error("{\"model_type\": \"gpt2\", \"n_embd\": 30, \"n_head\": 4,"
                       " \"n_layer\": 2, \"vocab_size\": 300}",
                       ASSAY_EFORMAT, "n_embd (30)", "n_head (4)");
}

Test(config, rejects_unsupported_rope_and_options) {
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
                       ASSAY_EUNSUPPORTED, "'yarn'", "llama3");
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0,"
                       " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}}",
                       ASSAY_EFORMAT, "'rope_scaling.original_max_position_embeddings'", "missing");
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"hidden_act\": \"gelu\"}",
                       ASSAY_EUNSUPPORTED, "hidden_act 'gelu'", NULL);
    expect_parse_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                       " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                       " \"num_attention_heads\": 4, \"vocab_size\": 100,"
                       " \"attention_bias\": true}",
                       ASSAY_EUNSUPPORTED, "attention_bias", NULL);
}

Test(config, load_names_the_path) {
    model_config cfg;
    assay_error  err;
    cr_assert_eq(config_load(&cfg, "/nonexistent/config.json", &err), ASSAY_EIO);
    cr_assert(strstr(err.msg, "/nonexistent/config.json"), "%s", err.msg);
}

Test(config, to_json_round_trips_every_field) {
    const char *jsons[] = {
        llama32_json,
        "{\"model_type\": \"gpt2\", \"n_embd\": 32, \"n_head\": 4, \"n_layer\": 2,"
        " \"vocab_size\": 300, \"n_positions\": 64, \"eos_token_id\": 7}",
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64,"
        " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"num_key_value_heads\": 2, \"vocab_size\": 100, \"use_sliding_window\": true,"
        " \"sliding_window\": 16, \"max_window_layers\": 0}",
        "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64,"
        " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"vocab_size\": 100, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
    };
    for (size_t i = 0; i < sizeof jsons / sizeof jsons[0]; i++) {
        model_config a, b;
        assay_error  err;
        cr_assert_eq(parse(&a, jsons[i], &err), 0, "%s", err.msg);
        char *text = config_to_json(&a);
        cr_assert_not_null(text);
        cr_assert_eq(parse(&b, text, &err), 0, "%s\n%s", err.msg, text);
        cr_assert(memcmp(&a, &b, sizeof a) == 0, "config %zu differs after round trip:\n%s", i,
                  text);
        free(text);
    }
    /* eps written as the short decimal, not the float's double expansion */
    model_config a;
    cr_assert_eq(parse(&a, llama32_json, NULL), 0);
    char *text = config_to_json(&a);
    cr_assert(strstr(text, "\"rms_norm_eps\":\t1e-05"), "%s", text);
    free(text);
}

static const char *tiny_llama_json =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
    " \"intermediate_size\": 172, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
    " \"num_key_value_heads\": 4, \"vocab_size\": 512, \"tie_word_embeddings\": %s}";

static const char *tiny_gpt2_json = "{\"model_type\": \"gpt2\", \"n_embd\": 32, \"n_head\": 4,"
                                    " \"n_layer\": 2, \"vocab_size\": 300, \"n_positions\": 64}";

static const model_tensor_spec *find_spec(const model_tensor_spec *s, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name))
            return &s[i];
    return NULL;
}

static void expect_spec(const model_tensor_spec *s, int n, const char *name, int64_t d0,
                        int64_t d1) {
    const model_tensor_spec *t = find_spec(s, n, name);
    cr_assert_not_null(t, "spec %s missing", name);
    cr_assert_eq(t->ndim, d1 ? 2 : 1, "%s ndim", name);
    cr_assert_eq(t->shape[0], d0, "%s dim 0: %lld", name, (long long)t->shape[0]);
    if (d1)
        cr_assert_eq(t->shape[1], d1, "%s dim 1: %lld", name, (long long)t->shape[1]);
}

Test(config, llama_tensor_specs_have_hf_names_and_shapes) {
    char json[512];
    snprintf(json, sizeof json, tiny_llama_json, "false");
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    model_tensor_spec *s = NULL;
    int                n = 0;
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1 + 2 * 9 + 2);
    expect_spec(s, n, "model.embed_tokens.weight", 512, 64);
    expect_spec(s, n, "model.layers.1.input_layernorm.weight", 64, 0);
    expect_spec(s, n, "model.layers.0.self_attn.q_proj.weight", 64, 64);
    expect_spec(s, n, "model.layers.0.self_attn.k_proj.weight", 32, 64);
    expect_spec(s, n, "model.layers.0.self_attn.v_proj.weight", 32, 64);
    expect_spec(s, n, "model.layers.0.self_attn.o_proj.weight", 64, 64);
    expect_spec(s, n, "model.layers.1.post_attention_layernorm.weight", 64, 0);
    expect_spec(s, n, "model.layers.1.mlp.gate_proj.weight", 172, 64);
    expect_spec(s, n, "model.layers.1.mlp.up_proj.weight", 172, 64);
    expect_spec(s, n, "model.layers.1.mlp.down_proj.weight", 64, 172);
    expect_spec(s, n, "model.norm.weight", 64, 0);
    expect_spec(s, n, "lm_head.weight", 512, 64);
    cr_assert_eq(find_spec(s, n, "lm_head.weight")->optional, 0, "untied head is required");
    cr_assert_eq(find_spec(s, n, "model.layers.1.mlp.up_proj.weight")->layer, 1);
    cr_assert_eq(find_spec(s, n, "model.norm.weight")->layer, -1);
    free(s);
    /* per layer: 2*64 norms + q 64*64 + k,v 2*32*64 + o 64*64 + 3*172*64 */
    int64_t layer = 128 + 4096 + 4096 + 4096 + 3 * 172 * 64;
    cr_assert_eq(config_param_count(&cfg), 2 * 512 * 64 + 2 * layer + 64);

    snprintf(json, sizeof json, tiny_llama_json, "true");
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(find_spec(s, n, "lm_head.weight")->optional, 1, "tied head is optional");
    free(s);
    cr_assert_eq(config_param_count(&cfg), 512 * 64 + 2 * layer + 64, "tied head counted once");
}

Test(config, qwen2_specs_add_qkv_biases) {
    const char  *json = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64,"
                        " \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
                        " \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                        " \"vocab_size\": 100}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    model_tensor_spec *s = NULL;
    int                n = 0;
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1 + 12 + 2);
    expect_spec(s, n, "model.layers.0.self_attn.q_proj.bias", 64, 0);
    expect_spec(s, n, "model.layers.0.self_attn.k_proj.bias", 32, 0);
    expect_spec(s, n, "model.layers.0.self_attn.v_proj.bias", 32, 0);
    cr_assert_null(find_spec(s, n, "model.layers.0.self_attn.o_proj.bias"));
    free(s);
}

Test(config, gpt2_tensor_specs_use_conv1d_layout) {
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, tiny_gpt2_json, &err), 0, "%s", err.msg);
    model_tensor_spec *s = NULL;
    int                n = 0;
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2 + 2 * 12 + 2 + 1);
    expect_spec(s, n, "transformer.wte.weight", 300, 32);
    expect_spec(s, n, "transformer.wpe.weight", 64, 32);
    expect_spec(s, n, "transformer.h.0.ln_1.weight", 32, 0);
    expect_spec(s, n, "transformer.h.0.ln_1.bias", 32, 0);
    expect_spec(s, n, "transformer.h.1.attn.c_attn.weight", 32, 96);
    expect_spec(s, n, "transformer.h.1.attn.c_attn.bias", 96, 0);
    expect_spec(s, n, "transformer.h.1.attn.c_proj.weight", 32, 32);
    expect_spec(s, n, "transformer.h.1.mlp.c_fc.weight", 32, 128);
    expect_spec(s, n, "transformer.h.1.mlp.c_fc.bias", 128, 0);
    expect_spec(s, n, "transformer.h.1.mlp.c_proj.weight", 128, 32);
    expect_spec(s, n, "transformer.h.1.mlp.c_proj.bias", 32, 0);
    expect_spec(s, n, "transformer.ln_f.bias", 32, 0);
    cr_assert_eq(find_spec(s, n, "lm_head.weight")->optional, 1);
    free(s);
    /* per layer: 4*32 ln + 32*96+96 + 32*32+32 + 32*128+128 + 128*32+32 */
    int64_t layer = 128 + 3072 + 96 + 1024 + 32 + 4096 + 128 + 4096 + 32;
    cr_assert_eq(config_param_count(&cfg), 300 * 32 + 64 * 32 + 2 * layer + 64);
}

/* ---- config_check_tensors against a checkpoint written at test time ---- */

typedef struct tensor_buf {
    st_write_tensor t[64];
    int             n;
    float          *zeros;
} tensor_buf;

static void add_tensor(tensor_buf *b, const char *name, int64_t d0, int64_t d1, dtype dt) {
    cr_assert_lt(b->n, 64);
    st_write_tensor *t = &b->t[b->n++];
    memset(t, 0, sizeof *t);
    t->name     = name;
    t->dtype    = dt;
    t->ndim     = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data     = b->zeros;
}

/* Writes the tensors of `cfg`'s spec list (minus `skip`, with `reshape` given shape [3]) plus
 * `extra` to dir/model.safetensors and opens it. */
static st_model *write_model(const char *dir, const model_config *cfg, const char *prefix_strip,
                             const char *skip, const char *reshape, const char *extra,
                             dtype extra_dtype) {
    model_tensor_spec *s = NULL;
    int                n = 0;
    assay_error        err;
    cr_assert_eq(config_tensor_specs(cfg, &s, &n, &err), 0, "%s", err.msg);
    static tensor_buf b;
    static char       names[64][96];
    memset(&b, 0, sizeof b);
    b.zeros = calloc(512 * 200, sizeof(float)); /* largest tiny tensor fits */
    for (int i = 0; i < n; i++) {
        if (s[i].optional || (skip && !strcmp(s[i].name, skip)))
            continue;
        const char *name = s[i].name;
        if (prefix_strip && !strncmp(name, prefix_strip, strlen(prefix_strip)))
            name += strlen(prefix_strip);
        snprintf(names[b.n], sizeof names[0], "%s", name);
        if (reshape && !strcmp(s[i].name, reshape))
            add_tensor(&b, names[b.n], 3, 0, DTYPE_F32);
        else
            add_tensor(&b, names[b.n], s[i].shape[0], s[i].ndim == 2 ? s[i].shape[1] : 0,
                       DTYPE_F32);
    }
    if (extra)
        add_tensor(&b, extra, 4, 0, extra_dtype);
    free(s);
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, b.t, b.n, NULL, &err), 0, "%s", err.msg);
    free(b.zeros);
    st_model *m = st_model_open(dir, &err);
    cr_assert_not_null(m, "%s", err.msg);
    return m;
}

static void tiny_llama(model_config *cfg) {
    char json[512];
    snprintf(json, sizeof json, tiny_llama_json, "true");
    assay_error err;
    cr_assert_eq(parse(cfg, json, &err), 0, "%s", err.msg);
}

Test(config_check, accepts_complete_checkpoint_and_reports_inv_freq_as_ignored) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    tiny_llama(&cfg);
    st_model    *m   = write_model(dir, &cfg, NULL, NULL, NULL,
                                   "model.layers.0.self_attn.rotary_emb.inv_freq", DTYPE_F32);
    const char **ign = NULL;
    int          n   = 0;
    assay_error  err;
    cr_assert_eq(config_check_tensors(&cfg, m, &ign, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ign[0], "model.layers.0.self_attn.rotary_emb.inv_freq");
    free(ign);
    st_model_close(m);
    remove_model_dir(dir);
}

Test(config_check, rejects_missing_tensor_naming_it) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    tiny_llama(&cfg);
    st_model *m =
        write_model(dir, &cfg, NULL, "model.layers.1.mlp.down_proj.weight", NULL, NULL, 0);
    assay_error err;
    cr_assert_eq(config_check_tensors_in(&cfg, m, "model.safetensors", NULL, NULL, &err),
                 ASSAY_EFORMAT);
    cr_assert(strstr(err.msg, "model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' "
                              "is missing"),
              "%s", err.msg);
    st_model_close(m);
    remove_model_dir(dir);
}

Test(config_check, rejects_misshaped_tensor_with_both_shapes) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    tiny_llama(&cfg);
    st_model *m = write_model(dir, &cfg, NULL, NULL, "model.layers.0.mlp.up_proj.weight", NULL, 0);
    assay_error err;
    cr_assert_eq(config_check_tensors_in(&cfg, m, "model.safetensors", NULL, NULL, &err),
                 ASSAY_EFORMAT);
    cr_assert_str_eq(err.msg, "model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has "
                              "shape [3], expected [172, 64]");
    st_model_close(m);
    remove_model_dir(dir);
}

Test(config_check, rejects_unexpected_tensor) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    tiny_llama(&cfg);
    st_model *m =
        write_model(dir, &cfg, NULL, NULL, NULL, "model.layers.0.extra.weight", DTYPE_F32);
    assay_error  err;
    const char **ign = NULL;
    int          n   = 0;
    cr_assert_eq(config_check_tensors(&cfg, m, &ign, &n, &err), ASSAY_EFORMAT);
    cr_assert(strstr(err.msg, "unexpected tensor 'model.layers.0.extra.weight'"), "%s", err.msg);
    cr_assert_null(ign);
    st_model_close(m);
    remove_model_dir(dir);
}

Test(config_check, rejects_integer_weights) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    tiny_llama(&cfg);
    /* every tensor right, except the final norm stored as I32 with the right shape */
    assay_error        err;
    st_model          *m = NULL;
    model_tensor_spec *s = NULL;
    int                n = 0;
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0);
    st_write_tensor *t     = calloc((size_t)n, sizeof *t);
    float           *zeros = calloc(512 * 200, sizeof(float));
    int              k     = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].optional)
            continue;
        t[k].name     = s[i].name;
        t[k].dtype    = strcmp(s[i].name, "model.norm.weight") ? DTYPE_F32 : DTYPE_I32;
        t[k].ndim     = s[i].ndim;
        t[k].shape[0] = s[i].shape[0];
        t[k].shape[1] = s[i].shape[1];
        t[k].data     = zeros;
        k++;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, t, k, NULL, &err), 0, "%s", err.msg);
    m = st_model_open(dir, &err);
    cr_assert_not_null(m, "%s", err.msg);
    cr_assert_eq(config_check_tensors(&cfg, m, NULL, NULL, &err), ASSAY_EFORMAT);
    cr_assert(strstr(err.msg, "'model.norm.weight' has dtype I32"), "%s", err.msg);
    st_model_close(m);
    free(s);
    free(t);
    free(zeros);
    remove_model_dir(dir);
}

Test(config_check, accepts_gpt2_without_transformer_prefix_and_ignores_mask_buffers) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, tiny_gpt2_json, &err), 0, "%s", err.msg);
    st_model *m = write_model(dir, &cfg, "transformer.", NULL, NULL, "h.0.attn.bias", DTYPE_F32);
    cr_assert_str_eq(config_gpt2_prefix(m), "");
    cr_assert_not_null(config_find_tensor(&cfg, m, "transformer.h.1.mlp.c_fc.weight"));
    const char **ign = NULL;
    int          n   = 0;
    cr_assert_eq(config_check_tensors(&cfg, m, &ign, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ign[0], "h.0.attn.bias");
    free(ign);
    st_model_close(m);
    remove_model_dir(dir);
}

Test(config_check, gpt2_stored_lm_head_must_match_wte) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, tiny_gpt2_json, &err), 0, "%s", err.msg);
    st_model *m = write_model(dir, &cfg, NULL, NULL, NULL, "lm_head.weight", DTYPE_F32);
    cr_assert_eq(config_check_tensors(&cfg, m, NULL, NULL, &err), ASSAY_EFORMAT);
    cr_assert(strstr(err.msg, "'lm_head.weight' has shape [4], expected [300, 32]"), "%s", err.msg);
    st_model_close(m);
    remove_model_dir(dir);
}

/* Python's json.load (so transformers) keeps the last value of a repeated key, nested too. */
Test(config, a_repeated_key_keeps_its_last_value_as_python_does) {
    static const char json[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 99,"
        " \"hidden_size\": 64, \"intermediate_size\": 128, \"num_attention_heads\": 4,"
        " \"rope_theta\": 1.0, \"max_position_embeddings\": 256, \"vocab_size\": 100,"
        " \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"factor\": 2.0},"
        " \"rope_theta\": 10000.0, \"num_hidden_layers\": 2, \"rope_theta\": 500000.0}";
    model_config cfg;
    assay_error  err;
    cr_assert_eq(parse(&cfg, json, &err), 0, "%s", err.msg);
    cr_expect_eq(cfg.n_layers, 2);
    cr_expect_float_eq(cfg.rope_theta, 500000.0f, 0);
    cr_expect_eq(cfg.rope, ROPE_LINEAR);
    cr_expect_float_eq(cfg.rope_factor, 2.0f, 0);
}

/* 2^18 keys, every one repeated: a pairwise search would take minutes. */
Test(config, removing_repeated_keys_is_not_quadratic) {
    alarm(60); /* a quadratic removal would run for minutes: end it as a failure */
    const int n   = 1 << 18;
    cJSON    *obj = cJSON_CreateObject();
    cr_assert_not_null(obj);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            cJSON_AddItemToObject(obj, key, cJSON_CreateNumber(r * n + i));
        }
    cJSON_AddItemToObject(obj, "k7", cJSON_CreateString("last"));
    cr_assert_eq(config_json_keep_last(obj), 0);
    cr_expect_eq(cJSON_GetArraySize(obj), n);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(obj, "k5")->valuedouble, n + 5);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(obj, "k7")->valuestring, "last");
    cJSON_Delete(obj);
}

/* config.json is read whole: one over CONFIG_JSON_MAX is refused before reading. */
Test(config, load_refuses_a_config_over_its_size_cap) {
    char dir[64], p[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    cr_assert_eq(ftruncate(fileno(f), (off_t)CONFIG_JSON_MAX + 1), 0);
    fclose(f);
    model_config cfg;
    assay_error  err;
    cr_assert_eq(config_load(&cfg, p, &err), ASSAY_EINVAL);
    cr_expect(strstr(err.msg, p) && strstr(err.msg, "more than"), "%s", err.msg);
    unlink(p);
    rmdir(dir);
}
