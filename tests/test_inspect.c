#include <stdint.h>
#include <string.h>

#include <cJSON.h>

#include "core/util.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "tests/helpers.h"

#define FIXTURES "tests/fixtures/models"

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

static void fixtures_or_skip(const char *name) {
    char p[256];
    snprintf(p, sizeof p, FIXTURES "/%s/config.json", name);
    if (access(p, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s missing (run the fixture generator)\n", p);
        cr_skip_test("SKIP: %s missing", p);
    }
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(it), "JSON field '%s' missing or not a number", key);
    return it->valuedouble;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsString(it), "JSON field '%s' missing or not a string", key);
    return it->valuestring;
}

/* Runs `assay inspect <args> --json` and parses stdout (stderr is merged: it must be empty). */
static cJSON *inspect_json(const char *args) {
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s --json", args);
    cr_assert_eq(rc, 0, "inspect %s exited %d:\n%s", args, rc, out);
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o, "inspect --json output is not JSON:\n%s", out);
    free(out);
    return o;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Parameter counts from transformers: AutoModelForCausalLM.from_pretrained(dir).num_parameters()
 * (which counts a tied head once). */
static const struct {
    const char *name, *arch, *tokenizer;
    int64_t     params;
    int         chat;
} fixtures[] = {
    {"llama", "LlamaForCausalLM", "BPE (SentencePiece-style, byte fallback)", 125248, 0},
    {"llama3", "LlamaForCausalLM", "BPE (byte-level)", 98624, 1},
    {"llama_hd", "LlamaForCausalLM", "BPE (SentencePiece-style, byte fallback)", 149824, 0},
    {"llama_linear", "LlamaForCausalLM", "BPE (SentencePiece-style, byte fallback)", 125248, 0},
    {"mistral", "MistralForCausalLM", "BPE (SentencePiece-style, byte fallback)", 125248, 0},
    {"qwen2", "Qwen2ForCausalLM", "BPE (byte-level)", 98880, 1},
    {"gpt2", "GPT2LMHeadModel", "BPE (byte-level)", 132864, 0},
};

Test(inspect, fixture_models_match_transformers_parameter_counts) {
    fixtures_or_skip("llama");
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, FIXTURES "/%s", fixtures[i].name);
        if (!path_exists(p)) {
            fprintf(stderr, "SKIP: %s missing\n", p);
            continue;
        }
        cJSON *o = inspect_json(p);
        cr_assert_str_eq(jstr(o, "architecture"), fixtures[i].arch, "%s", p);
        cr_assert_eq((int64_t)jnum(o, "parameters"), fixtures[i].params, "%s: %.0f", p,
                     jnum(o, "parameters"));
        cr_assert_str_eq(jstr(o, "tokenizer"), fixtures[i].tokenizer, "%s", p);
        cr_assert_eq(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "chat_template")),
                     fixtures[i].chat, "%s chat template", p);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "memory");
        cr_assert_eq((int64_t)jnum(m, "cpu_f32_weights_bytes"), fixtures[i].params * 4);
        cr_assert_eq((int64_t)jnum(m, "gpu_bf16_weights_bytes"), fixtures[i].params * 2);
        /* K and V, every layer, kv_heads * head_dim per token, 1024 tokens */
        double kv = 2 * jnum(o, "n_layers") * jnum(o, "n_kv_heads") * jnum(o, "head_dim") * 1024;
        cr_assert_eq(jnum(m, "cpu_f32_kv_cache_per_1k_tokens_bytes"), kv * 4);
        cr_assert_eq(jnum(m, "gpu_bf16_kv_cache_per_1k_tokens_bytes"), kv * 2);
        cJSON_Delete(o);
    }
}

Test(inspect, llama_fixture_text_names_every_field) {
    fixtures_or_skip("llama3");
    char *out = NULL;
    int   rc  = test_run(&out, "inspect " FIXTURES "/llama3");
    cr_assert_eq(rc, 0, "%s", out);
    const char *want[] = {"architecture    LlamaForCausalLM",
                          "parameters      98,624",
                          "dtypes          F32 x 20",
                          "context length  512",
                          "vocab size      384",
                          "layers          2",
                          "dim             64",
                          "heads           4 (kv heads 2, head_dim 16)",
                          "ffn             128",
                          "llama3 factor 8",
                          "tokenizer       BPE (byte-level)",
                          "chat template   yes",
                          "memory CPU",
                          "memory GPU"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    free(out);
}

Test(inspect, tensors_flag_lists_names_dtypes_and_shapes) {
    fixtures_or_skip("llama");
    char *out = NULL;
    int   rc  = test_run(&out, "inspect " FIXTURES "/llama --tensors");
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "model.layers.1.mlp.down_proj.weight"), "%s", out);
    cr_assert(strstr(out, "[64, 128]"), "down_proj shape [D, F]: %s", out);
    free(out);
    cJSON       *o = inspect_json(FIXTURES "/llama --tensors");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tensors");
    cr_assert_eq(cJSON_GetArraySize(t), 21);
    cJSON_Delete(o);
}

Test(inspect, stories260k_gguf) {
    SHARED_OR_SKIP(path, "models/stories260K/stories260K.gguf");
    cJSON *o = inspect_json(path);
    cr_assert_str_eq(jstr(o, "format"), "gguf");
    cr_assert_eq(jnum(o, "vocab_size"), 512);
    cr_assert_eq(jnum(o, "n_layers"), 5);
    cr_assert_eq(jnum(o, "dim"), 64);
    cr_assert_eq(jnum(o, "n_heads"), 8);
    cr_assert_eq(jnum(o, "n_kv_heads"), 4);
    cr_assert_eq(jnum(o, "ffn_dim"), 172);
    cr_assert_eq(jnum(o, "context_length"), 2048);
    /* per layer: 2 norms 2*64, wq/wo 2*64*64, wk/wv 2*32*64, w1/w2/w3 3*172*64;
     * plus token_embd and output 2*512*64 and the final norm 64 */
    int64_t layer = 2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64;
    cr_assert_eq((int64_t)jnum(o, "parameters"), 5 * layer + 2 * 512 * 64 + 64);
    cr_assert(strstr(jstr(o, "tokenizer"), "llama"), "%s", jstr(o, "tokenizer"));
    cJSON_Delete(o);
}

/* A model dir written at test time: tiny llama config + checkpoint (+ one extra tensor). */
static void write_model_dir(const char *dir, const char *config, const char *extra,
                            const char *reshape) {
    char p[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assay_error err;
    cr_assert_eq(file_write_atomic(p, config, strlen(config), &err), 0, "%s", err.msg);
    model_config cfg;
    if (config_parse(&cfg, config, strlen(config), p, &err)) {
        /* a broken config: write a one-tensor checkpoint so only the config is wrong */
        float           z  = 0;
        st_write_tensor t1 = {.name = "x", .dtype = DTYPE_F32, .ndim = 1, .shape = {1}, .data = &z};
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        cr_assert_eq(st_write(p, &t1, 1, NULL, &err), 0, "%s", err.msg);
        return;
    }
    model_tensor_spec *s = NULL;
    int                n = 0;
    cr_assert_eq(config_tensor_specs(&cfg, &s, &n, &err), 0, "%s", err.msg);
    st_write_tensor *t     = calloc((size_t)n + 1, sizeof *t);
    float           *zeros = calloc(64 * 512, sizeof(float));
    int              k     = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].optional)
            continue;
        t[k].name     = s[i].name;
        t[k].dtype    = DTYPE_F32;
        t[k].ndim     = s[i].ndim;
        t[k].shape[0] = reshape && !strcmp(reshape, s[i].name) ? 3 : s[i].shape[0];
        t[k].shape[1] = s[i].shape[1];
        t[k].data     = zeros;
        k++;
    }
    if (extra) {
        t[k].name     = extra;
        t[k].dtype    = DTYPE_F32;
        t[k].ndim     = 1;
        t[k].shape[0] = 8;
        t[k].data     = zeros;
        k++;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(p, t, k, NULL, &err), 0, "%s", err.msg);
    free(t);
    free(zeros);
    free(s);
}

static const char *tiny_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
    " \"intermediate_size\": 172, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
    " \"num_key_value_heads\": 4, \"vocab_size\": 512, \"tie_word_embeddings\": true}";

Test(inspect, verbose_lists_ignored_inv_freq) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_model_dir(dir, tiny_config, "model.layers.1.self_attn.rotary_emb.inv_freq", NULL);
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s --verbose", dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ignored tensors 1"), "%s", out);
    cr_assert(strstr(out, "  model.layers.1.self_attn.rotary_emb.inv_freq"), "%s", out);
    cr_assert(strstr(out, "tokenizer       none"), "%s", out);
    free(out);
    /* the count excludes the ignored buffer */
    cJSON *o = inspect_json(dir);
    cr_assert_eq((int64_t)jnum(o, "parameters"),
                 512 * 64 + 2 * (2 * 64 + 64 * 64 * 2 + 2 * 32 * 64 + 3 * 172 * 64) + 64);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "ignored_tensors")), 1);
    cJSON_Delete(o);
    remove_model_dir(dir);
}

Test(inspect, safetensors_file_without_config_lists_tensors) {
    char dir[64], file[128];
    test_tmpdir(dir, sizeof dir);
    write_model_dir(dir, tiny_config, NULL, NULL);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s --tensors", file);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "config missing"), "%s", out);
    cr_assert(strstr(out, "model.embed_tokens.weight"), "%s", out);
    free(out);
    cJSON *o = inspect_json(file);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "config")));
    cr_assert_eq((int64_t)jnum(o, "parameters"),
                 512 * 64 + 2 * (2 * 64 + 64 * 64 * 2 + 2 * 32 * 64 + 3 * 172 * 64) + 64);
    cJSON_Delete(o);
    remove_model_dir(dir);
}

Test(inspect, bad_config_exits_2_with_one_line_naming_file_and_field) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_model_dir(dir,
                    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                    " \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
                    " \"num_attention_heads\": \"8\", \"vocab_size\": 512}",
                    NULL, NULL);
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s", dir);
    cr_assert_eq(rc, 2, "%s", out);
    char want[256];
    snprintf(want, sizeof want,
             "assay: %s/config.json: field 'num_attention_heads' must be an integer\n", dir);
    cr_assert_str_eq(out, want);
    free(out);
    remove_model_dir(dir);
}

Test(inspect, misshaped_checkpoint_exits_2_naming_tensor) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_model_dir(dir, tiny_config, NULL, "model.layers.0.mlp.up_proj.weight");
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s", dir);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, "tensor 'model.layers.0.mlp.up_proj.weight' has shape [3, 64], "
                          "expected [172, 64]"),
              "%s", out);
    cr_assert(strstr(out, dir), "names the checkpoint: %s", out);
    free(out);
    remove_model_dir(dir);
}

Test(inspect, unexpected_tensor_exits_2) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_model_dir(dir, tiny_config, "model.layers.0.mystery.weight", NULL);
    char *out = NULL;
    int   rc  = test_run(&out, "inspect %s", dir);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "unexpected tensor 'model.layers.0.mystery.weight'"), "%s", out);
    free(out);
    remove_model_dir(dir);
}

Test(inspect, missing_path_exits_2_with_one_line) {
    char *out = NULL;
    int   rc  = test_run(&out, "inspect /nonexistent/model-dir");
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_str_eq(out, "assay: /nonexistent/model-dir: no such file or directory\n");
    free(out);
}

Test(inspect, usage_errors_exit_2_and_help_exits_0) {
    char *out = NULL;
    cr_assert_eq(test_run(&out, "inspect"), 2, "%s", out);
    cr_assert(strstr(out, "missing PATH"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "inspect . --bogus"), 2, "%s", out);
    cr_assert(strstr(out, "unknown option '--bogus'"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "inspect --help"), 0, "%s", out);
    cr_assert(strstr(out, "usage: assay inspect PATH"), "%s", out);
    cr_assert(strstr(out, "--tensors") && strstr(out, "--json") && strstr(out, "--verbose"), "%s",
              out);
    free(out);
}

/* A config.json that cannot be read is an error saying why, never "config missing". */
Test(inspect, config_symlink_loop_is_reported_not_called_missing) {
    char dir[64], p[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cp tests/fixtures/models/llama/model.safetensors %s/", dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    cr_assert_eq(symlink("config.json", p), 0);
    cr_assert_eq(test_run(&out, "inspect %s", dir), 2, "%s", out);
    cr_assert(strstr(out, p) && strstr(out, "Too many levels of symbolic links") &&
                  !strstr(out, "missing"),
              "%s", out);
    free(out);
    /* a dangling tokenizer.json is not "no tokenizer" either */
    cr_assert_eq(unlink(p), 0);
    snprintf(cmd, sizeof cmd, "cp tests/fixtures/models/llama/config.json %s/", dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    cr_assert_eq(symlink("nowhere.json", p), 0);
    cr_assert_eq(test_run(&out, "inspect %s", dir), 2, "%s", out);
    cr_assert(strstr(out, p) && strstr(out, "No such file"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
