/* loader/arch.h — the one table of architecture knowledge: for each supported architecture, the
 * tensors a checkpoint holds (Hugging Face names, shapes as stored, what each is for) and, for the
 * llama family, their llama.cpp GGUF names. config.c checks checkpoints against it, model.c
 * loads weights by role from it, cmd_convert.c maps GGUF files with it. */
#ifndef ASSAY_ARCH_H
#define ASSAY_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "loader/config.h"

/* What a tensor is for. */
typedef enum arch_role {
    ROLE_TOK_EMB = 0,
    ROLE_POS_EMB,
    ROLE_ATTN_NORM_W,
    ROLE_ATTN_NORM_B,
    ROLE_Q, /* separate q, k, v projections (llama family) */
    ROLE_K,
    ROLE_V,
    ROLE_Q_BIAS,
    ROLE_K_BIAS,
    ROLE_V_BIAS,
    ROLE_QKV, /* fused [q | k | v] (GPT-2 c_attn) */
    ROLE_QKV_BIAS,
    ROLE_O,
    ROLE_O_BIAS,
    ROLE_FFN_NORM_W,
    ROLE_FFN_NORM_B,
    ROLE_GATE,
    ROLE_UP,
    ROLE_UP_BIAS,
    ROLE_DOWN,
    ROLE_DOWN_BIAS,
    ROLE_FINAL_NORM_W,
    ROLE_FINAL_NORM_B,
    ROLE_HEAD,
    ROLE_COUNT
} arch_role;

/* A size in terms of the config. */
typedef enum arch_dim {
    DIM_NONE = 0, /* a vector's missing second dimension */
    DIM_D,        /* hidden size */
    DIM_3D,       /* GPT-2 fused qkv: 3 * hidden */
    DIM_F,        /* MLP inner size */
    DIM_V,        /* vocabulary */
    DIM_P,        /* learned positions */
    DIM_Q,        /* n_heads * head_dim */
    DIM_KV        /* n_kv_heads * head_dim */
} arch_dim;

/* When a tensor is part of the checkpoint. */
typedef enum arch_when {
    WHEN_ALWAYS = 0,
    WHEN_QKV_BIAS, /* config qkv_bias (Qwen2) */
    WHEN_UNTIED    /* required unless tie_embeddings, then optional (it may still be there) */
} arch_when;

typedef struct arch_tensor {
    arch_role   role;
    const char *name;       /* Hugging Face name; per-layer names hold one %d; GPT-2 names start
                               with the checkpoint's prefix (%s: "transformer." or "") */
    int         section;    /* 0 before the layers, 1 once per layer, 2 after the layers */
    arch_dim    rows, cols; /* as stored in the checkpoint (cols DIM_NONE: a vector) */
    int         transposed; /* stored (in, out): GPT-2 Conv1D; model.c transposes it */
    arch_when   when;
    const char *gguf;         /* llama.cpp's name (per-layer: after "blk.%d."), or NULL */
    int         gguf_permute; /* llama.cpp's RoPE row permutation: 1 q (n_heads), 2 k (n_kv) */
} arch_tensor;

/* The tensors of cfg's architecture, in checkpoint order (globals first, then layer tensors,
 * then the final ones); *n set. Never NULL for a known architecture. */
const arch_tensor *arch_tensors(model_arch arch, int *n);
/* The entry for a role in an architecture, or NULL when the architecture has none. */
const arch_tensor *arch_find(model_arch arch, arch_role role);
/* 1 when t is part of a checkpoint with config c (WHEN_UNTIED: also when tied, as optional). */
int arch_present(const model_config *c, const arch_tensor *t);
/* The size a dimension has under c (0 for DIM_NONE). */
int64_t arch_dim_size(const model_config *c, arch_dim d);
/* Writes t's name for `layer` (ignored for globals) with GPT-2's prefix `gpt2_prefix` into buf.
 * Returns buf. */
char *arch_name(char *buf, size_t cap, const arch_tensor *t, int layer, const char *gpt2_prefix);

#endif
