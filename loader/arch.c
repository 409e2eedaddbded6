/* loader/arch.c — the architecture table (loader/arch.h). */
#include "loader/arch.h"

#include <stdio.h>

/* Llama, Mistral and Qwen2 share Llama's layout (Qwen2 adds q/k/v biases). */
static const arch_tensor llama_tensors[] = {
    {ROLE_TOK_EMB, "model.embed_tokens.weight", 0, DIM_V, DIM_D, 0, WHEN_ALWAYS,
     "token_embd.weight", 0},
    {ROLE_ATTN_NORM_W, "model.layers.%d.input_layernorm.weight", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS,
     "attn_norm.weight", 0},
    {ROLE_Q, "model.layers.%d.self_attn.q_proj.weight", 1, DIM_Q, DIM_D, 0, WHEN_ALWAYS,
     "attn_q.weight", 1},
    {ROLE_K, "model.layers.%d.self_attn.k_proj.weight", 1, DIM_KV, DIM_D, 0, WHEN_ALWAYS,
     "attn_k.weight", 2},
    {ROLE_V, "model.layers.%d.self_attn.v_proj.weight", 1, DIM_KV, DIM_D, 0, WHEN_ALWAYS,
     "attn_v.weight", 0},
    {ROLE_Q_BIAS, "model.layers.%d.self_attn.q_proj.bias", 1, DIM_Q, DIM_NONE, 0, WHEN_QKV_BIAS,
     NULL, 0},
    {ROLE_K_BIAS, "model.layers.%d.self_attn.k_proj.bias", 1, DIM_KV, DIM_NONE, 0, WHEN_QKV_BIAS,
     NULL, 0},
    {ROLE_V_BIAS, "model.layers.%d.self_attn.v_proj.bias", 1, DIM_KV, DIM_NONE, 0, WHEN_QKV_BIAS,
     NULL, 0},
    {ROLE_O, "model.layers.%d.self_attn.o_proj.weight", 1, DIM_D, DIM_Q, 0, WHEN_ALWAYS,
     "attn_output.weight", 0},
    {ROLE_FFN_NORM_W, "model.layers.%d.post_attention_layernorm.weight", 1, DIM_D, DIM_NONE, 0,
     WHEN_ALWAYS, "ffn_norm.weight", 0},
    {ROLE_GATE, "model.layers.%d.mlp.gate_proj.weight", 1, DIM_F, DIM_D, 0, WHEN_ALWAYS,
     "ffn_gate.weight", 0},
    {ROLE_UP, "model.layers.%d.mlp.up_proj.weight", 1, DIM_F, DIM_D, 0, WHEN_ALWAYS,
     "ffn_up.weight", 0},
    {ROLE_DOWN, "model.layers.%d.mlp.down_proj.weight", 1, DIM_D, DIM_F, 0, WHEN_ALWAYS,
     "ffn_down.weight", 0},
    {ROLE_FINAL_NORM_W, "model.norm.weight", 2, DIM_D, DIM_NONE, 0, WHEN_ALWAYS,
     "output_norm.weight", 0},
    {ROLE_HEAD, "lm_head.weight", 2, DIM_V, DIM_D, 0, WHEN_UNTIED, "output.weight", 0},
};

/* GPT-2: Conv1D weights stored (in, out); the head is always tied (lm_head.weight optional). */
static const arch_tensor gpt2_tensors[] = {
    {ROLE_TOK_EMB, "%swte.weight", 0, DIM_V, DIM_D, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_POS_EMB, "%swpe.weight", 0, DIM_P, DIM_D, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_ATTN_NORM_W, "%sh.%d.ln_1.weight", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_ATTN_NORM_B, "%sh.%d.ln_1.bias", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_QKV, "%sh.%d.attn.c_attn.weight", 1, DIM_D, DIM_3D, 1, WHEN_ALWAYS, NULL, 0},
    {ROLE_QKV_BIAS, "%sh.%d.attn.c_attn.bias", 1, DIM_3D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_O, "%sh.%d.attn.c_proj.weight", 1, DIM_D, DIM_D, 1, WHEN_ALWAYS, NULL, 0},
    {ROLE_O_BIAS, "%sh.%d.attn.c_proj.bias", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_FFN_NORM_W, "%sh.%d.ln_2.weight", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_FFN_NORM_B, "%sh.%d.ln_2.bias", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_UP, "%sh.%d.mlp.c_fc.weight", 1, DIM_D, DIM_F, 1, WHEN_ALWAYS, NULL, 0},
    {ROLE_UP_BIAS, "%sh.%d.mlp.c_fc.bias", 1, DIM_F, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_DOWN, "%sh.%d.mlp.c_proj.weight", 1, DIM_F, DIM_D, 1, WHEN_ALWAYS, NULL, 0},
    {ROLE_DOWN_BIAS, "%sh.%d.mlp.c_proj.bias", 1, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_FINAL_NORM_W, "%sln_f.weight", 2, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    {ROLE_FINAL_NORM_B, "%sln_f.bias", 2, DIM_D, DIM_NONE, 0, WHEN_ALWAYS, NULL, 0},
    /* transformers ties it; some exports still write it */
    {ROLE_HEAD, "lm_head.weight", 2, DIM_V, DIM_D, 0, WHEN_UNTIED, NULL, 0},
};

const arch_tensor *arch_tensors(model_arch arch, int *n) {
    if (arch == ARCH_GPT2) {
        *n = (int)(sizeof gpt2_tensors / sizeof *gpt2_tensors);
        return gpt2_tensors;
    }
    *n = (int)(sizeof llama_tensors / sizeof *llama_tensors);
    return llama_tensors;
}

const arch_tensor *arch_find(model_arch arch, arch_role role) {
    int                n = 0;
    const arch_tensor *t = arch_tensors(arch, &n);
    for (int i = 0; i < n; i++)
        if (t[i].role == role)
            return &t[i];
    return NULL;
}

int arch_present(const model_config *c, const arch_tensor *t) {
    return t->when != WHEN_QKV_BIAS || c->qkv_bias;
}

int64_t arch_dim_size(const model_config *c, arch_dim d) {
    switch (d) {
    case DIM_D: return c->dim;
    case DIM_3D: return 3 * (int64_t)c->dim;
    case DIM_F: return c->ffn_dim;
    case DIM_V: return c->vocab_size;
    case DIM_P: return c->max_pos;
    case DIM_Q: return (int64_t)c->n_heads * c->head_dim;
    case DIM_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    default: return 0;
    }
}

char *arch_name(char *buf, size_t cap, const arch_tensor *t, int layer, const char *gpt2_prefix) {
    const char *p = gpt2_prefix ? gpt2_prefix : "";
    if (t->name[0] == '%' && t->name[1] == 's') /* GPT-2: the prefix first */
        snprintf(buf, cap, t->name, p, layer);
    else
        snprintf(buf, cap, t->name, layer);
    return buf;
}
