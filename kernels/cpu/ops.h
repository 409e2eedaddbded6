/* kernels/cpu/ops.h — the CPU reference ops: C11 (SIMD micro-kernels chosen at run time),
 * outputs first, then inputs, then dimensions. Every op computes each output row from that row's
 * inputs alone, in an order that does not depend on the number of rows, their neighbours or the
 * thread count, so a sequence scores bitwise the same alone or inside any batch (DESIGN.md decision
 * 4).
 *
 * Layouts: activations are row-major (rows, features) f32; linear weights are (out, in) as
 * Hugging Face nn.Linear stores them (GPT-2 Conv1D weights are transposed at load), then packed
 * into panels (below).
 * Integer index arrays (ids, positions, block tables, targets) are trusted: callers validate. */
#ifndef ASSAY_KERNELS_CPU_OPS_H
#define ASSAY_KERNELS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/rope.h"

/* Linear weights are packed once at load (gemm_pack) into panels of CPU_PANEL output features:
 * W (n, k) row-major becomes ceil(n / 32) panels; panel p holds, for kk = 0..k-1, the 32 floats
 * W[p*32 + j][kk] (j = 0..31; rows past n are zero). So W[j][kk] sits at
 * (j / 32) * 32 * k + kk * 32 + j % 32, and a GEMV or a GEMM micro-kernel reads each panel as
 * one contiguous stream. Embedding tables use the same layout (they may be the tied LM head).
 *
 * Reduction-order contract of every GEMM op: for each output element
 *   s = fma(x[i][k-1], W[j][k-1], ... fma(x[i][1], W[j][1], fma(x[i][0], W[j][0], 0.0f)))
 *   out[i][j] = s + bias[j]   (or s without a bias)
 * — one fp32 accumulator, k ascending, every step a fused multiply-add (correctly rounded, so
 * the AVX-512, AVX2 and portable fmaf paths agree bit for bit), bias added last. Nothing else —
 * the number of rows in the call, a row's position in its tile, the thread count, the ISA —
 * changes a result, so batch invariance holds by construction. */
#define CPU_PANEL 32

/* Ops smaller than this many multiply-adds run on one thread: an OpenMP region costs
 * microseconds, far more when the cores are oversubscribed and threads spin at barriers. */
#define CPU_PAR_MIN_WORK (1 << 16)

/* for (int VAR = 0; VAR < N; VAR++) BODY, across OpenMP threads when COND holds, else on this
 * thread without opening a region: a region that an `if` clause turns off still costs about half
 * a microsecond, and a decode step runs a few hundred small ops. */
#define CPU_PAR_FOR(COND, VAR, N, ...)                                                             \
    do {                                                                                           \
        if (COND) {                                                                                \
            _Pragma("omp parallel for schedule(static)") for (int VAR = 0; VAR < (N); VAR++)       \
                __VA_ARGS__                                                                        \
        } else {                                                                                   \
            for (int VAR = 0; VAR < (N); VAR++)                                                    \
                __VA_ARGS__                                                                        \
        }                                                                                          \
    } while (0)

/* Weight formats (the element of the panel layout above):
 *   CPU_W_F32   f32.
 *   CPU_W_BF16  bf16 (the upper half of an f32; gemm_pack rounds to nearest even).
 *   CPU_W_Q8_0  GGUF's Q8_0: for each output feature, each run of 32 consecutive k holds 32 int8
 *               q and one scale d (an f16 value, kept as f16: 34 bytes per 32 weights, as
 *               in a GGUF file); the weight is d * q. gemm_pack
 *               quantizes as GGUF defines it (d = max|w| / 127 rounded to f16, q = roundf(w *
 * (1/d)) with the unrounded d); gemm_pack_q8_0 copies GGUF blocks as they are. Layout of Q8_0: k is
 * padded to a multiple of 32 (zeros); panel p holds, for each k block b, 32 f16 scales (j = 0..31)
 * then 32 x 32 int8 in [kk][j] order (CPU_Q8_BLOCK_BYTES). Every decoded weight is exactly an f32
 * (bf16 widens; an f16 times an int8 needs 18 bits), and the GEMM contract below applies to the
 * decoded weights: a format's results are bitwise those of the f32 GEMM on the weights the format
 * decodes to, whatever the ISA. */
typedef enum cpu_wfmt { CPU_W_F32 = 0, CPU_W_BF16, CPU_W_Q8_0 } cpu_wfmt;
#define CPU_Q8_BLOCK_BYTES (CPU_PANEL * 2 + CPU_PANEL * CPU_PANEL)

/* Bytes of a packed (n, k) weight in format fmt. */
size_t gemm_packed_bytes(cpu_wfmt fmt, int n, int k);
/* dst (gemm_packed_bytes(fmt, n, k)) = w (n, k) row-major f32, packed in format fmt. */
void gemm_pack_fmt(void *dst, cpu_wfmt fmt, const float *w, int n, int k);
/* dst (gemm_packed_bytes(CPU_W_Q8_0, n, k)) = GGUF Q8_0 blocks (n rows of k / 32 blocks of 34
 * bytes: f16 d, then 32 int8), without decoding. k must be a multiple of 32. */
void gemm_pack_q8_0(void *dst, const void *blocks, int n, int k);
/* dst (k) = row `row` of a packed (n, k) weight in format fmt, decoded to f32. */
void gemm_unpack_row_fmt(float *dst, const void *packed, cpu_wfmt fmt, int row, int k);

/* Floats of a packed (n, k) weight: n rounded up to a multiple of CPU_PANEL, times k. */
size_t gemm_packed_floats(int n, int k);
/* dst (gemm_packed_floats(n, k)) = w (n, k) row-major, packed. */
void gemm_pack(float *dst, const float *w, int n, int k);
/* dst (k) = row `row` of a packed (n, k) weight. */
void gemm_unpack_row(float *dst, const float *packed, int row, int k);
/* The GEMM instruction set in use: 2 AVX-512F, 1 AVX2+FMA, 0 portable C (fmaf). Chosen at run
 * time from the CPU; cpu_gemm_set_isa caps it (tests check every path gives the same bits;
 * negative: no cap). Not thread-safe: call between ops. */
int  cpu_gemm_isa(void);
void cpu_gemm_set_isa(int max_isa);
/* Scratch floats: matmul_forward on `rows` rows of `in` features; the LM-head ops. */
size_t cpu_matmul_scratch_floats(int rows, int in);
size_t cpu_head_scratch_floats(int dim, int vocab);

/* out (rows, dim) = table[ids[r]], table (vocab, dim) packed like a linear weight */
void embed_forward(float *out, const float *table, const int32_t *ids, int rows, int dim);
void embed_forward_fmt(float *out, const void *table, cpu_wfmt fmt, const int32_t *ids, int rows,
                       int dim);
/* out (rows, dim) += table[pos[r]] (max_pos, dim) — GPT-2 learned positions */
void pos_embed_add(float *out, const float *table, const int32_t *pos, int rows, int dim);
/* out (rows, dim) = x * rsqrt(mean(x^2) + eps) * w — Llama RMSNorm; out may alias x */
void rmsnorm_forward(float *out, const float *x, const float *w, int rows, int dim, float eps);
/* out (rows, dim) = (x - mean) * rsqrt(var + eps) * w + b — nn.LayerNorm; out may alias x */
void layernorm_forward(float *out, const float *x, const float *w, const float *b, int rows,
                       int dim, float eps);
/* out (rows, out_dim) = x (rows, in) @ w (out_dim, in)^T + bias (out_dim, may be NULL); w packed
 * (gemm_pack). scratch: cpu_matmul_scratch_floats(rows, in) floats. out must not alias x.
 * Parallel (OpenMP) over row blocks and weight panels, so one decode row uses every core. */
void matmul_forward(float *out, float *scratch, const float *x, const float *w, const float *bias,
                    int rows, int in, int out_dim);
/* matmul_forward on a weight packed in format fmt (gemm_pack_fmt). */
void matmul_forward_fmt(float *out, float *scratch, const float *x, const void *w, cpu_wfmt fmt,
                        const float *bias, int rows, int in, int out_dim, int gelu);
/* out (rows, out_dim) = gelu_new(matmul_forward(x, w, bias)), the activation applied to each
 * output tile as its task finishes it: one parallel region (and barrier) instead of two, and
 * the tile is still in cache. Bitwise the same as matmul_forward then gelu_new_forward. */
void matmul_gelu_forward(float *out, float *scratch, const float *x, const float *w,
                         const float *bias, int rows, int in, int out_dim);
/* out (n) = a + b; out may alias a or b */
void add_forward(float *out, const float *a, const float *b, size_t n);
/* out (rows, ffn) = silu(gate) * up, gate_up (rows, 2*ffn) = [gate | up]; SwiGLU MLP */
void swiglu_forward(float *out, const float *gate_up, int rows, int ffn);
/* out (n) = HF NewGELUActivation (tanh approximation, GPT-2 "gelu_new"); out may alias x */
void gelu_new_forward(float *out, const float *x, size_t n);
/* gelu_new_forward on the calling thread with the given ISA (cpu_gemm_isa()), for fused
 * epilogues; out may alias x */
void gelu_new_span(float *out, const float *x, size_t n, int isa);

/* rope_inv_freq (the table rope_forward takes) lives in core/rope.h. */
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

/* Fused LM head. For each row r of h (rows, dim): logits = h[r] @ w (vocab, dim; packed)^T,
 * computed 96 rows at a time (never rows x vocab), then
 *   out_logprob[r] = logits[target[r]] - logsumexp(logits)   (max-subtracted, double sum)
 *   out_is_max[r]  = target[r] is the argmax (ties: lowest index, like torch.argmax).
 * scratch: cpu_head_scratch_floats(dim, vocab) floats. */
void target_logprob_forward(float *out_logprob, uint8_t *out_is_max, float *scratch, const float *h,
                            const float *w, const int32_t *target, int rows, int dim, int vocab);
void target_logprob_forward_fmt(float *out_logprob, uint8_t *out_is_max, float *scratch,
                                const float *h, const void *w, cpu_wfmt fmt, const int32_t *target,
                                int rows, int dim, int vocab);
/* Statistics of one row of logits (vocab), as the head computes them: *am the first index of
 * the largest (NaN never wins), *mx that logit, *sum = sum of exp(l - mx) in double over 16
 * lanes; the AVX-512 and portable forms give the same bits. */
void logits_row_stats(const float *l, int vocab, int *am, float *mx, double *sum);
/* out_id[r] = argmax(h[r] @ w^T) (lowest index on ties); same scratch as above. */
void argmax_forward(int32_t *out_id, float *scratch, const float *h, const float *w, int rows,
                    int dim, int vocab);
void argmax_forward_fmt(int32_t *out_id, float *scratch, const float *h, const void *w,
                        cpu_wfmt fmt, int rows, int dim, int vocab);

#endif
