/* runtime/backend.h — the compute backend interface: a struct of function pointers that the model
 * code calls without knowing the device (DESIGN.md). A NULL slot means "not supported here"
 * (only set_threads and upload_weight_q8_0 may be NULL).
 *
 * One forward pass: set_batch (all index data of the pass, handed over once; a device backend
 * copies it in one transfer), then the ops in order, then fetch (the LM-head results in one
 * download). Ops read the index data (ids, positions, cu_seqlens, block tables, selected rows,
 * targets) from the current batch; only pointers to backend memory and sizes are arguments.
 *
 * Element types are data (backend_caps): the residual stream is F32 everywhere; activations
 * between ops (`act`), linear weights and embedding tables (`weight`) and the KV cache (`kv`) are
 * in the backend's types: F32/F32/F32 on the CPU (weights BF16 or Q8_0 with --weights),
 * BF16/BF16/BF16 on CUDA. Norm weights, biases,
 * RoPE tables and learned position tables are F32 in every backend (upload them with `upload`).
 * Linear weights and embedding tables (out, in) go in through upload_weight from f32 host memory
 * (the loader converts F16/BF16/F32 checkpoints to f32 one tensor at a time), which converts and
 * may repack them (the CPU stores panels for its GEMM, kernels/cpu/ops.h).
 *
 * Every op returns 0, or an assay_status and fills be->last_error with the call that failed.
 * The arithmetic of each op is that of the CPU kernel of the same name in kernels/cpu/ops.h. */
#ifndef ASSAY_BACKEND_H
#define ASSAY_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

typedef struct backend backend;

/* How linear weights and embedding tables are stored (--weights). NATIVE: the backend's own type
 * (weight_dtype). The CPU also stores BF16 and Q8_0 (kernels/cpu/ops.h: each decodes to exact f32
 * values and keeps the f32 reduction order, so results stay batch invariant). */
typedef enum be_weights {
    BE_WEIGHTS_NATIVE = 0,
    BE_WEIGHTS_F32,
    BE_WEIGHTS_BF16,
    BE_WEIGHTS_Q8_0
} be_weights;

typedef struct backend_caps {
    int        batch_invariant; /* 1: a request's results never depend on the rest of the batch */
    int        host_memory;     /* 1: backend pointers are host pointers */
    dtype      weight_dtype;    /* linear weights and embedding tables */
    dtype      act_dtype;       /* activations between ops: xn, qkv, att, up, act, the head input */
    dtype      kv_dtype;        /* KV cache pools */
    be_weights weight_format;   /* NATIVE: weight_dtype; else the --weights format in use */
} backend_caps;

/* The index data of one forward pass (host memory, read during set_batch only). */
typedef struct be_batch {
    int            n_tokens; /* new tokens, packed sequence after sequence */
    int            n_seqs;
    const int32_t *ids;         /* n_tokens, validated (0 <= id < vocab) */
    const int32_t *pos;         /* n_tokens: absolute positions (start_pos[s] + i) */
    const int32_t *q_off;       /* n_seqs + 1: sequence s owns rows q_off[s] .. q_off[s+1]-1 */
    const int32_t *start_pos;   /* n_seqs: tokens already in the sequence's cache */
    const int32_t *block_table; /* n_seqs * max_blocks, or NULL: no cache, attention runs over
                                   each sequence's new rows alone (start_pos all 0) */
    int            max_blocks, block_tokens;
    int            n_sel;   /* rows that reach the LM head */
    const int32_t *sel;     /* n_sel packed row indices */
    const int32_t *targets; /* n_sel target ids (validated), or NULL: argmax only */
} be_batch;

typedef enum be_norm { BE_NORM_RMS = 0, BE_NORM_LAYER } be_norm;
typedef enum be_epilogue { BE_EPI_NONE = 0, BE_EPI_GELU_NEW } be_epilogue;
typedef enum be_head_mode {
    BE_HEAD_LOGPROB = 0, /* log-prob of each target, is-argmax flag, and the argmax */
    BE_HEAD_ARGMAX       /* the argmax only (greedy decoding) */
} be_head_mode;

typedef struct backend_ops {
    const char *name;
    /* lifecycle and queries */
    void (*destroy)(backend *be); /* frees be; NULL-safe */
    int (*mem_info)(backend *be, size_t *free_bytes,
                    size_t *total_bytes); /* raw free / total; the model takes its share */
    /* bytes of workspace the backend keeps for passes of up to max_rows tokens, GEMM inputs of up
     * to max_in features and an LM head (dim, vocab) */
    size_t (*scratch_bytes)(backend *be, int max_rows, int max_in, int dim, int vocab);
    void (*set_threads)(backend *be, int n_threads); /* optional; results do not depend on it */

    /* memory */
    int (*alloc)(backend *be, void **ptr, size_t bytes);
    void (*release)(backend *be, void *ptr);                                /* NULL-safe */
    int (*upload)(backend *be, void *dst, const void *src, size_t bytes);   /* host -> backend */
    int (*download)(backend *be, void *dst, const void *src, size_t bytes); /* backend -> host */
    int (*copy)(backend *be, void *dst, const void *src, size_t bytes);     /* within backend */
    int (*sync)(backend *be);
    size_t (*weight_bytes)(backend *be, int rows, int cols); /* a linear weight (rows, cols) */
    /* dst (weight_bytes) = w (rows, cols) row-major f32 host memory, in the backend's layout */
    int (*upload_weight)(backend *be, void *dst, const float *w, int rows, int cols);

    /* the pass */
    int (*set_batch)(backend *be, const be_batch *b);
    /* x (n_tokens, dim) f32 = table[ids[r]] (+ pos_table[pos[r]] when pos_table != NULL) */
    int (*embed)(backend *be, float *x, const void *table, const float *pos_table, int dim);
    /* x (rows, dim) f32 += delta (rows, dim; act dtype) when delta != NULL; then
     * xn (rows, dim; act dtype) = norm(x) * w (+ b for LayerNorm). rows is n_tokens or n_sel. */
    int (*add_norm)(backend *be, float *x, void *xn, const void *delta, const float *w,
                    const float *b, be_norm kind, int rows, int dim, float eps);
    /* out (rows, out_dim) = epi(x (rows, in) @ w (out_dim, in)^T + bias (NULL: none)); act dtype
     * in and out. Batch invariant when caps.batch_invariant: a row's result never depends on
     * rows (the row count) or the other rows. */
    int (*matmul)(backend *be, void *out, const void *x, const void *w, const float *bias, int rows,
                  int in, int out_dim, be_epilogue epi);
    /* out (rows, ffn) = silu(gate) * up; gate_up (rows, 2*ffn) = [gate | up] */
    int (*swiglu)(backend *be, void *out, const void *gate_up, int rows, int ffn);
    /* qkv (n_tokens, (n_heads + 2*n_kv_heads) * head_dim) = [q | k | v]: rotates q and k in
     * place by the batch's positions (rotate-half layout; inv_freq (head_dim/2) f32; NULL: no
     * RoPE), then, when the batch has a block table, stores k and v into layer pools k_pool,
     * v_pool (n_blocks * block_tokens rows of n_kv_heads * head_dim, kv dtype). */
    int (*rope_kv)(backend *be, void *qkv, void *k_pool, void *v_pool, const float *inv_freq,
                   int n_heads, int n_kv_heads, int head_dim);
    /* out (n_tokens, n_heads*head_dim) = causal GQA attention of the batch's queries (in qkv).
     * With a block table: against every cached key at positions <= the query's (pools of one
     * layer; the new keys were stored by rope_kv); without: over the sequence's new rows (k, v
     * in qkv). window > 0: key j visible from query i iff i - j < window. Scale 1/sqrt(head_dim),
     * fp32 softmax. The backend picks its method (packed prefill, chunked prefill against the
     * cache, paged decode) from the batch; a row's result must not depend on that choice beyond
     * the backend's stated tolerance, and never on the other sequences. */
    int (*attention)(backend *be, void *out, const void *qkv, const void *k_pool,
                     const void *v_pool, int n_heads, int n_kv_heads, int head_dim, int window);
    /* out (n_sel, dim) f32 = x[sel[i]] (x: (n_tokens, dim) f32) */
    int (*gather)(backend *be, float *out, const float *x, int dim);
    /* LM head on h (n_sel, dim; act dtype) against w_head (vocab, dim; weight layout): per row,
     * logits in fp32 in chunks (never n_sel x vocab at once), then BE_HEAD_LOGPROB:
     * log_softmax(logits)[target], target == argmax (lowest index on ties), the argmax;
     * BE_HEAD_ARGMAX: the argmax. Results stay in the backend until fetch. */
    int (*lm_head)(backend *be, const void *h, const void *w_head, int dim, int vocab,
                   be_head_mode mode);
    /* Downloads the last lm_head's n_sel results (any pointer may be NULL: not wanted). */
    int (*fetch)(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax);
    /* Copies KV block src to block dst in every layer (prefix forks): pools are n_layers
     * consecutive layers of layer_bytes each, a block is block_bytes. */
    int (*kv_block_copy)(backend *be, void *k_pool, void *v_pool, int n_layers, size_t layer_bytes,
                         size_t block_bytes, int dst, int src);
    /* optional (NULL: not supported; last, so tables that list the slots in order stay valid):
     * dst (weight_bytes) = GGUF Q8_0 blocks (rows x cols / 32 blocks of 34 bytes) stored as they
     * are, for a backend whose weight_format is Q8_0 */
    int (*upload_weight_q8_0)(backend *be, void *dst, const void *blocks, int rows, int cols);
} backend_ops;

struct backend {
    const backend_ops *ops;
    backend_caps       caps;
    int                n_threads;
    assay_error        last_error; /* details of the last failed op */
    void              *impl;
};

typedef struct backend_opts {
    int        n_threads;        /* CPU: <= 0 OpenMP's default */
    double     gpu_mem_fraction; /* CUDA: share of free device memory to use; 0: 0.9 */
    int        fast;             /* 1: the backend may drop batch invariance for speed (caps say) */
    be_weights weights;          /* CPU: the weight format; others take NATIVE only */
} backend_opts;

/* "cpu", "cuda" (= "cuda:0"), "cuda:N" or "auto" (the first working GPU, else the CPU). A GPU
 * that cannot be used is ASSAY_EDEVICE with the reason; an unknown spec ASSAY_EINVAL. */
backend *backend_create(const char *spec, const backend_opts *opts, assay_error *err);
void     backend_free(backend *be); /* NULL-safe: be->ops->destroy */

/* The backends backend_create dispatches to. backend_cuda_create lives in
 * runtime/cuda/backend_cuda.cu when built with CUDA (ASSAY_CUDA); otherwise runtime/backend.c
 * provides one that fails with ASSAY_EDEVICE "built without CUDA". It fails with ASSAY_EDEVICE
 * and the reason (no driver, no such device, out of memory) when the GPU cannot be used. */
backend *backend_cpu_create(const backend_opts *opts, assay_error *err);
backend *backend_cuda_create(int ordinal, const backend_opts *opts, assay_error *err);

/* Bytes per element of a backend dtype (F32 4, BF16/F16 2). */
size_t backend_dtype_bytes(dtype t);

#endif
