/* runtime/backend.h — the compute backend interface: a struct of function pointers that the model
 * code calls without knowing the device (DESIGN.md). A NULL slot means "not supported here".
 *
 * Memory: float tensors (activations, weights, KV pools) live in backend memory, obtained from
 * `alloc`; integer index arrays (token ids, positions, offsets, block tables, targets) and the
 * outputs of target_logprob/argmax are HOST memory — a device backend copies them itself.
 * Weights are in the backend's weight format (`weight_dtype`: f32 on the CPU). Linear weights and
 * embedding tables (out, in) go in through upload_weight, which may repack them (the CPU backend
 * stores panels for its GEMM, kernels/cpu/ops.h); norm weights, biases and position tables are
 * plain arrays (upload). Every op returns 0, or an assay_status (and fills the backend's last
 * error). Shapes and semantics of each op are those of the CPU kernel of the same name in
 * kernels/cpu/ops.h. */
#ifndef ASSAY_BACKEND_H
#define ASSAY_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

typedef struct backend backend;

typedef struct backend_ops {
    const char *name;
    /* memory */
    int (*alloc)(backend *be, void **ptr, size_t bytes);
    void (*release)(backend *be, void *ptr);                                /* NULL-safe */
    int (*upload)(backend *be, void *dst, const void *src, size_t bytes);   /* host -> backend */
    int (*download)(backend *be, void *dst, const void *src, size_t bytes); /* backend -> host */
    int (*copy)(backend *be, void *dst, const void *src, size_t bytes);     /* within backend */
    int (*sync)(backend *be);
    /* bytes a linear weight (rows, cols) takes in the backend's layout */
    size_t (*weight_bytes)(backend *be, int rows, int cols);
    /* dst (weight_bytes) = w (rows, cols) row-major f32 host memory, in the backend's layout */
    int (*upload_weight)(backend *be, void *dst, const float *w, int rows, int cols);

    /* out (rows, dim) = table[ids[r]]; table (vocab, dim) stored by upload_weight */
    int (*embed)(backend *be, float *out, const void *table, const int32_t *ids, int rows, int dim);
    /* out (rows, dim) += table[pos[r]] */
    int (*pos_embed_add)(backend *be, float *out, const void *table, const int32_t *pos, int rows,
                         int dim);
    /* out (rows, dim) = x * rsqrt(mean(x^2) + eps) * w */
    int (*rmsnorm)(backend *be, float *out, const float *x, const void *w, int rows, int dim,
                   float eps);
    /* out (rows, dim) = (x - mean) * rsqrt(var + eps) * w + b */
    int (*layernorm)(backend *be, float *out, const float *x, const void *w, const void *b,
                     int rows, int dim, float eps);
    /* out (rows, out_dim) = x (rows, in) @ w (out_dim, in; from upload_weight)^T + bias (NULL:
     * none). Batch invariant: a row's result never depends on the other rows. */
    int (*matmul)(backend *be, float *out, const float *x, const void *w, const void *bias,
                  int rows, int in, int out_dim);
    /* out (n) = a + b */
    int (*add)(backend *be, float *out, const float *a, const float *b, size_t n);
    /* out (rows, ffn) = silu(gate) * up; gate_up (rows, 2*ffn) */
    int (*swiglu)(backend *be, float *out, const float *gate_up, int rows, int ffn);
    /* out (n) = gelu_new(x) */
    int (*gelu_new)(backend *be, float *out, const float *x, size_t n);
    /* out (rows, out_dim) = gelu_new(x @ w^T + bias): matmul then gelu_new in one pass (the same
     * bits as the two calls). Optional: NULL means the model makes the two calls. */
    int (*matmul_gelu)(backend *be, float *out, const float *x, const void *w, const void *bias,
                       int rows, int in, int out_dim);
    /* in place, rotate-half RoPE of n_heads heads of x (rows, stride); inv_freq (head_dim/2) is
     * backend memory */
    int (*rope)(backend *be, float *x, const int32_t *pos, const float *inv_freq, int rows,
                int n_heads, int head_dim, int stride);
    /* causal GQA attention over a packed ragged batch (cu_seqlens: n_seqs + 1 row offsets) */
    int (*attention_varlen)(backend *be, float *out, const float *q, const float *k, const float *v,
                            const int *cu_seqlens, int n_seqs, int n_heads, int n_kv_heads,
                            int head_dim, int q_stride, int kv_stride, int window);
    /* store new rows' K/V into one layer's paged pools */
    int (*kv_store)(backend *be, float *k_pool, float *v_pool, const float *k, const float *v,
                    int kv_stride, int kv_dim, const int32_t *block_table, int max_blocks,
                    int block_tokens, const int *q_off, const int *start_pos, int n_seqs);
    /* attention of new rows against the paged cache (bitwise equal to attention_varlen) */
    int (*attention_paged)(backend *be, float *out, const float *q, const float *k_pool,
                           const float *v_pool, const int32_t *block_table, int max_blocks,
                           int block_tokens, const int *q_off, const int *start_pos, int n_seqs,
                           int n_heads, int n_kv_heads, int head_dim, int q_stride, int window);
    /* per row: out_logprob = log_softmax(h @ W^T)[target], out_is_max = target is the argmax
     * (lowest index on ties). Never materializes rows x vocab. Outputs are host memory. */
    int (*target_logprob)(backend *be, float *out_logprob, uint8_t *out_is_max, const float *h,
                          const void *w_head, const int32_t *target, int rows, int dim, int vocab);
    /* per row: out_id = argmax(h @ W^T) (host memory) */
    int (*argmax)(backend *be, int32_t *out_id, const float *h, const void *w_head, int rows,
                  int dim, int vocab);
} backend_ops;

struct backend {
    const backend_ops *ops;
    dtype              weight_dtype; /* format weights must be uploaded in */
    int                host_memory;  /* 1: backend pointers are host pointers (CPU) */
    int                n_threads;
    assay_error        last_error; /* details of the last failed op */
    void              *impl;
};

/* CPU backend: kernels/cpu. n_threads <= 0: OpenMP's default. Sets the process-wide thread count
 * as backend_cpu_set_threads does (results do not depend on it). */
backend *backend_cpu_create(int n_threads, assay_error *err);
/* Sets the process-wide OpenMP thread count (n <= 0: keep OpenMP's current count). */
void backend_cpu_set_threads(backend *be, int n_threads);
/* Bytes of scratch the CPU backend will hold: GEMMs of up to max_rows rows and max_in inputs,
 * and an LM head (dim, vocab). */
size_t backend_cpu_scratch_bytes(int max_rows, int max_in, int dim, int vocab);
void   backend_free(backend *be); /* NULL-safe */

#endif
