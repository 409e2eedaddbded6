/* kernels/cpu/ops.h — the CPU reference ops: plain C11 + OpenBLAS, outputs first, then inputs,
 * then dimensions. Every op computes each output row from that row's inputs alone, in an order
 * that does not depend on the number of rows, their neighbours or the thread count, so a
 * sequence scores bitwise the same alone or inside any batch (DESIGN.md decision 4).
 *
 * Layouts: activations are row-major (rows, features) f32; linear weights are (out, in)
 * row-major as Hugging Face nn.Linear stores them (GPT-2 Conv1D weights are transposed at load).
 * Integer index arrays (ids, positions, block tables, targets) are trusted: callers validate. */
#ifndef ASSAY_KERNELS_CPU_OPS_H
#define ASSAY_KERNELS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* GEMMs run on row tiles of fixed shapes: OpenBLAS may pick different kernels for different
 * M (e.g. "small matrix" kernels for small M*N*K), which changes the bits of a row's result.
 * Rows go in CPU_GEMM_TILE-row tiles — or 256-row tiles while they fit, and the remainder in
 * 16-, 4- and 1-row tiles, when gemm_tile_mask() verified, for that weight shape, that those
 * give every row the same bits as the 64-row tile; otherwise zero-padded to 64 rows (exact, but
 * up to 64x the work for one decode row). OpenBLAS repacks the weights on every call, so small
 * tiles cost throughput: 64-row tiles reached ~70% of the full-M sgemm rate on the dev box. */
#define CPU_GEMM_TILE 64

/* ... and on fixed column tiles of this many output features, in parallel (OpenMP); the tiling
 * never depends on the thread count. */
#define CPU_GEMM_COLS 1024

/* Ops smaller than this many multiply-adds run on one thread: an OpenMP region costs
 * microseconds, far more when the cores are oversubscribed and threads spin at barriers. */
#define CPU_PAR_MIN_WORK (1 << 16)

/* Scratch floats the GEMM-based ops need: 64 * (in + out) + 256 * out. */
size_t cpu_gemm_scratch_floats(int in, int out);

/* out (rows, dim) = table[ids[r]] (vocab, dim) */
void embed_forward(float *out, const float *table, const int32_t *ids, int rows, int dim);
/* out (rows, dim) += table[pos[r]] (max_pos, dim) — GPT-2 learned positions */
void pos_embed_add(float *out, const float *table, const int32_t *pos, int rows, int dim);
/* out (rows, dim) = x * rsqrt(mean(x^2) + eps) * w — Llama RMSNorm; out may alias x */
void rmsnorm_forward(float *out, const float *x, const float *w, int rows, int dim, float eps);
/* out (rows, dim) = (x - mean) * rsqrt(var + eps) * w + b — nn.LayerNorm; out may alias x */
void layernorm_forward(float *out, const float *x, const float *w, const float *b, int rows,
                       int dim, float eps);
/* The GEMM ops expect OpenBLAS set single-threaded (openblas_set_num_threads(1), as
 * backend_cpu_create does): they parallelize over tiles with OpenMP, and OpenBLAS's own
 * threading changes the bits of large tiles.
 * Which other row tiles (bit 0: 16, bit 1: 4, bit 2: 1, bit 3: 256 rows) give bitwise the same
 * rows as the 64-row tile for weights w (out_dim, in) on this machine's OpenBLAS; 0 when none
 * (or out of memory). Costs about nine 64-row GEMMs; callers cache it per weight shape. */
int gemm_tile_mask(const float *w, int in, int out_dim);
/* out (rows, out_dim) = x (rows, in) @ w (out_dim, in)^T + bias (out_dim, may be NULL).
 * scratch: cpu_gemm_scratch_floats(in, out_dim) floats. out must not alias x. tile_mask: from
 * gemm_tile_mask for this shape (0 is always exact). */
void matmul_forward(float *out, float *scratch, const float *x, const float *w, const float *bias,
                    int rows, int in, int out_dim, int tile_mask);
/* out (n) = a + b; out may alias a or b */
void add_forward(float *out, const float *a, const float *b, size_t n);
/* out (rows, ffn) = silu(gate) * up, gate_up (rows, 2*ffn) = [gate | up]; SwiGLU MLP */
void swiglu_forward(float *out, const float *gate_up, int rows, int ffn);
/* out (n) = HF NewGELUActivation (tanh approximation, GPT-2 "gelu_new"); out may alias x */
void gelu_new_forward(float *out, const float *x, size_t n);

/* RoPE inverse frequencies (rot_dim / 2 floats) computed in float32 the way transformers does:
 * default: 1 / theta^(2i/rot_dim); linear: default / factor; llama3: the piecewise
 * low/high-frequency scaling of _compute_llama3_parameters. kind: 1 default, 2 linear, 3 llama3
 * (matches loader/config.h rope_kind). */
void rope_inv_freq(float *inv_freq, int rot_dim, float theta, int kind, float factor,
                   float low_freq_factor, float high_freq_factor, int orig_max_pos);
/* In place on x (rows, stride): heads h = 0..n_heads-1 at x + r*stride + h*head_dim, rotated
 * in the rotate-half layout by angle pos[r] * inv_freq (head_dim / 2 floats). */
void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int rows, int n_heads,
                  int head_dim, int stride);

/* Causal GQA attention over a packed ragged batch: sequence s owns rows
 * cu_seqlens[s]..cu_seqlens[s+1]-1 (positions 0..len-1) and attends only to itself.
 * q (rows, q_stride): head h at h*head_dim; k, v (rows, kv_stride): kv head h / (n_heads /
 * n_kv_heads). out (rows, n_heads*head_dim). window > 0: key j visible from query i iff
 * i - j < window (HF Mistral). Scale 1/sqrt(head_dim), softmax in fp32 with max subtraction.
 * Returns 0, or -1 when scratch memory could not be allocated. */
int attention_varlen_forward(float *out, const float *q, const float *k, const float *v,
                             const int *cu_seqlens, int n_seqs, int n_heads, int n_kv_heads,
                             int head_dim, int q_stride, int kv_stride, int window);

/* Paged KV cache views. A pool holds n_blocks * block_tokens rows of kv_dim floats (one layer).
 * Token p of sequence s sits in row block_table[s*max_blocks + p/block_tokens]*block_tokens +
 * p%block_tokens. Sequence s has new rows q_off[s]..q_off[s+1]-1 at positions start_pos[s]+i. */
/* Writes the new rows' keys and values (k, v: (rows, kv_stride)) into the pools. */
void kv_store_forward(float *k_pool, float *v_pool, const float *k, const float *v, int kv_stride,
                      int kv_dim, const int32_t *block_table, int max_blocks, int block_tokens,
                      const int *q_off, const int *start_pos, int n_seqs);
/* Attention of the new rows against every cached key at positions <= their own (so the new
 * rows' keys must be stored first). Same arithmetic, key for key, as attention_varlen_forward:
 * a row's output is bitwise the same through either path. */
int attention_paged_forward(float *out, const float *q, const float *k_pool, const float *v_pool,
                            const int32_t *block_table, int max_blocks, int block_tokens,
                            const int *q_off, const int *start_pos, int n_seqs, int n_heads,
                            int n_kv_heads, int head_dim, int q_stride, int window);

/* Fused LM head. For each row r of h (rows, dim): logits = h[r] @ w (vocab, dim)^T, computed
 * 64 or 256 rows at a time (never rows x vocab), then
 *   out_logprob[r] = logits[target[r]] - logsumexp(logits)   (max-subtracted, double sum)
 *   out_is_max[r]  = target[r] is the argmax (ties: lowest index, like torch.argmax).
 * scratch: cpu_gemm_scratch_floats(dim, vocab) floats. */
void target_logprob_forward(float *out_logprob, uint8_t *out_is_max, float *scratch, const float *h,
                            const float *w, const int32_t *target, int rows, int dim, int vocab,
                            int tile_mask);
/* out_id[r] = argmax(h[r] @ w^T) (lowest index on ties); same scratch as above. */
void argmax_forward(int32_t *out_id, float *scratch, const float *h, const float *w, int rows,
                    int dim, int vocab, int tile_mask);

#endif
