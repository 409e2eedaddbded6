// kernels/cuda/ops.cuh — the CUDA ops: launchers with the CPU reference's argument order
// (outputs, inputs, sizes) plus the stream. Each family lives in its own file
// (kernels/cuda/<family>.cu): header comment, static __global__ kernels, launchers. Every
// launcher checks its arguments, launches on `s`, and returns cudaGetLastError() (no sync).
// Element types: residual stream f32; activations, weights (row-major (out, in), NOT the CPU's
// panels) and KV cache bf16; norm weights, biases, RoPE/position tables f32. Index arrays are
// device memory (the backend uploaded them with set_batch). fp32 accumulation and fp32 softmax
// everywhere; no fast-math intrinsics on scoring paths (expf/logf as IEEE, no __expf).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

#ifdef __cplusplus
extern "C" {
#endif

// ---- embed.cu ---------------------------------------------------------------------------------
// x (rows, dim) f32 = tok[ids[r]] (bf16 (vocab, dim)) + pos_table[pos[r]] (f32, NULL: none)
cudaError_t cuda_embed(float *x, const bf16 *tok, const float *pos_table, const int32_t *ids,
                       const int32_t *pos, int rows, int dim, cudaStream_t s);
// out (n_sel, dim) f32 = x[sel[i]]
cudaError_t cuda_gather_rows(float *out, const float *x, const int32_t *sel, int n_sel, int dim,
                             cudaStream_t s);

// ---- norm.cu ----------------------------------------------------------------------------------
// kind 0 RMSNorm (x * rsqrt(mean(x^2) + eps) * w), 1 LayerNorm ((x - mean) * rsqrt(var + eps) *
// w + b). x (rows, dim) f32 += delta (bf16, NULL: none) first; xn (rows, dim) bf16. One block per
// row, fixed reduction tree (the result of a row depends on that row alone).
cudaError_t cuda_add_norm(float *x, bf16 *xn, const bf16 *delta, const float *w, const float *b,
                          int kind, int rows, int dim, float eps, cudaStream_t s);

// ---- act.cu -----------------------------------------------------------------------------------
// out (rows, ffn) bf16 = silu(gate) * up in fp32, gate_up (rows, 2*ffn) bf16
cudaError_t cuda_swiglu(bf16 *out, const bf16 *gate_up, int rows, int ffn, cudaStream_t s);
// in place: y (rows, n) bf16 = epi(acc (rows, n) f32 + bias (f32, NULL: none)); epi 0 none,
// 1 gelu_new (tanh approximation, HF NewGELUActivation). The GEMM epilogue when the GEMM itself
// writes f32.
cudaError_t cuda_bias_act(bf16 *y, const float *acc, const float *bias, int rows, int n, int epi,
                          cudaStream_t s);

// ---- rope.cu ----------------------------------------------------------------------------------
// qkv (rows, (n_heads + 2*n_kv) * hd) bf16 = [q | k | v]: rotate q and k heads in place
// (rotate-half, angle pos[r] * inv_freq[i], computed in fp32 as the CPU does; inv_freq NULL: no
// rotation); then, when block_table != NULL, store k and v rows into the paged pools (row of
// token p of sequence s: block_table[s*max_blocks + p/block_tokens]*block_tokens +
// p%block_tokens; sequence s has rows q_off[s]..q_off[s+1]-1 at positions start_pos[s]+i).
cudaError_t cuda_rope_kv(bf16 *qkv, bf16 *k_pool, bf16 *v_pool, const float *inv_freq,
                         const int32_t *pos, const int32_t *block_table, int max_blocks,
                         int block_tokens, const int32_t *q_off, const int32_t *start_pos,
                         int n_seqs, int rows, int n_heads, int n_kv_heads, int hd,
                         cudaStream_t s);

// ---- attention.cu -----------------------------------------------------------------------------
// Prefill over packed variable-length sequences, flash-attention style (tiles of queries and
// keys, fp32 online softmax, no S x S matrix), causal, GQA, hd in {64, 80, 128} (others may fall
// back to a generic path), sliding window (window > 0: key j visible from query i iff i - j <
// window). q, k, v read from qkv (rows, (n_heads + 2*n_kv) * hd); out (rows, n_heads*hd) bf16.
cudaError_t cuda_attention_prefill(bf16 *out, const bf16 *qkv, const int32_t *q_off, int n_seqs,
                                   int max_len, int n_heads, int n_kv_heads, int hd, int window,
                                   cudaStream_t s);
// New rows (chunked prefill or decode) against the paged cache: query i of sequence s (position
// start_pos[s] + i) attends to cached positions 0..its own (its own key stored already). The key
// range of a query is split into chunks of a FIXED number of keys (split_keys, e.g. 512: not a
// fixed number of splits), each chunk's (max, sum, acc) in fp32 in `partial`, then merged in
// chunk order: a row's result depends on its own keys alone, never on the batch.
// partial: cuda_attention_paged_partial_bytes(...) bytes of device scratch.
size_t      cuda_attention_paged_partial_bytes(int rows, int n_heads, int hd, int max_ctx,
                                               int split_keys);
cudaError_t cuda_attention_paged(bf16 *out, const bf16 *qkv, const bf16 *k_pool,
                                 const bf16 *v_pool, const int32_t *block_table, int max_blocks,
                                 int block_tokens, const int32_t *q_off, const int32_t *start_pos,
                                 int n_seqs, int rows, int max_ctx, int n_heads, int n_kv_heads,
                                 int hd, int window, int split_keys, float *partial,
                                 cudaStream_t s);

// ---- logits.cu --------------------------------------------------------------------------------
// One pass per row over a chunk of logits (rows, vocab) f32 that a GEMM wrote: fp32 online
// max / sum-exp (sum in fp32 pairs or double: state which), target gather, is-argmax, argmax
// (lowest index on ties). Outputs device memory. target NULL: argmax only.
cudaError_t cuda_logits_reduce(float *out_logprob, uint8_t *out_is_max, int32_t *out_argmax,
                               const float *logits, const int32_t *target, int rows, int vocab,
                               cudaStream_t s);

// ---- convert.cu -------------------------------------------------------------------------------
// dst (n) bf16 = round-to-nearest-even(src (n) f32); and back
cudaError_t cuda_f32_to_bf16(bf16 *dst, const float *src, size_t n, cudaStream_t s);
cudaError_t cuda_bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t s);

#ifdef __cplusplus
}
#endif
