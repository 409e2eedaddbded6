/* loader/config.h — config.json → model description, and the tensor list each architecture
 * needs (names and shapes in the Hugging Face layout). */
#ifndef ASSAY_CONFIG_H
#define ASSAY_CONFIG_H

#include <stdint.h>

#include "core/error.h"
#include "loader/safetensors.h"

typedef enum model_arch { ARCH_LLAMA = 0, ARCH_MISTRAL, ARCH_QWEN2, ARCH_GPT2 } model_arch;
typedef enum norm_kind { NORM_RMS = 0, NORM_LAYER } norm_kind;
typedef enum act_kind { ACT_SILU = 0, ACT_GELU_NEW } act_kind; /* silu = SwiGLU MLP */
typedef enum rope_kind { ROPE_NONE = 0, ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3 } rope_kind;

typedef struct model_config {
    model_arch arch;
    char       arch_name[64];  /* as in config.json "architectures"[0] */
    char       model_type[32]; /* config.json "model_type" */
    int        n_layers;
    int        dim; /* hidden_size / n_embd */
    int        n_heads;
    int        n_kv_heads; /* == n_heads without GQA */
    int        head_dim;   /* dim / n_heads unless config says otherwise */
    int        ffn_dim;    /* intermediate_size / n_inner (GPT-2 default 4*dim) */
    int        vocab_size;
    int        max_pos;  /* max_position_embeddings / n_positions */
    float      norm_eps; /* rms_norm_eps / layer_norm_epsilon */
    norm_kind  norm;
    act_kind   act;
    int        learned_pos;    /* GPT-2: wpe */
    int        qkv_bias;       /* Qwen2, GPT-2 */
    int        mlp_bias;       /* GPT-2 */
    int        tie_embeddings; /* lm_head shares embed_tokens */
    rope_kind  rope;
    float      rope_theta;
    float      rope_factor;           /* linear and llama3 */
    float      rope_low_freq_factor;  /* llama3 */
    float      rope_high_freq_factor; /* llama3 */
    int        rope_orig_max_pos;     /* llama3 original_max_position_embeddings */
    int        sliding_window;        /* 0 = none (Mistral; Qwen2 only when use_sliding_window) */
    int        bos_token_id;          /* -1 when absent or not < vocab_size */
    int        eos_token_id;          /* -1 when absent or not < vocab_size (first one of a list) */
    char       torch_dtype[16];       /* "" when absent */
} model_config;

/* Size caps for the JSON files of a checkpoint directory, checked before reading (real ones are
 * kilobytes; tokenizer.json reaches tens of megabytes with a 256k vocabulary). */
#define CONFIG_JSON_MAX ((size_t)16 << 20)      /* config.json */
#define TOKENIZER_JSON_MAX ((size_t)512 << 20)  /* tokenizer.json, encoder.json, vocab.bpe */
#define TOKENIZER_CONFIG_MAX ((size_t)64 << 20) /* tokenizer_config.json */

/* Python's json (and so transformers) keeps the LAST value of a repeated key; cJSON lookups find
 * the first. Removes every earlier duplicate from every object under `node`, in O(n log n) per
 * object. Returns 0, or -1 when out of memory. */
struct cJSON;
int config_json_keep_last(struct cJSON *node);

/* Parses config.json text. `name` is used in messages (usually the path). */
int config_parse(model_config *cfg, const char *json, size_t len, const char *name,
                 assay_error *err);
/* Reads and parses a config.json file. */
int config_load(model_config *cfg, const char *path, assay_error *err);
/* Reads DIR/config.json, or a GGUF file's llama metadata when `dir` is one (model_path_is_gguf). */
int config_load_dir(model_config *cfg, const char *dir, assay_error *err);
/* Serializes to Hugging Face config.json text (malloc'd; caller frees). */
char *config_to_json(const model_config *cfg);
/* "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel" */
const char *config_supported_archs(void);

/* One tensor the architecture needs, in Hugging Face naming. */
typedef struct model_tensor_spec {
    char    name[96];
    int     ndim;
    int64_t shape[2]; /* as stored in the checkpoint (GPT-2 Conv1D: [in, out]) */
    int     layer;    /* -1 for global tensors */
    int     optional; /* e.g. lm_head.weight when tied */
} model_tensor_spec;

/* Fills a malloc'd array of every tensor the architecture needs (caller frees). */
int config_tensor_specs(const model_config *cfg, model_tensor_spec **out, int *n_out,
                        assay_error *err);

/* Checks that every needed tensor is present with the right shape and a weight dtype, and that
 * no tensor is left unused except known harmless ones (rotary inv_freq, attn.bias masks), which
 * are reported through `ignored` (malloc'd array of names pointing into m; may be NULL). */
int config_check_tensors(const model_config *cfg, const st_model *m, const char ***ignored,
                         int *n_ignored, assay_error *err);

/* Same, with messages that start with `where` (the checkpoint path); config_check_tensors uses
 * "checkpoint". */
int config_check_tensors_in(const model_config *cfg, const st_model *m, const char *where,
                            const char ***ignored, int *n_ignored, assay_error *err);

/* GPT-2 checkpoints from openai-community name tensors without "transformer." ("wte.weight"):
 * returns the prefix this checkpoint uses, "transformer." or "". */
const char *config_gpt2_prefix(const st_model *m);
/* Finds the tensor for a spec name from config_tensor_specs, also under GPT-2's unprefixed
 * naming. NULL if absent. */
const st_tensor *config_find_tensor(const model_config *cfg, const st_model *m,
                                    const char *spec_name);

/* Parameter count of the unique tensors (tied head counted once); -1 for an invalid config. */
int64_t config_param_count(const model_config *cfg);

#endif
