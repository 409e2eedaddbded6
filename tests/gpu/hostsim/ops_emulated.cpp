// tests/gpu/hostsim/ops_emulated.cpp — the launchers of kernels/cuda/ops.cuh emulated on the
// CPU, one row after another, with the kernels' arithmetic and their rules (launch.h: the
// argmax merge with NaN highest, the cache addressing; bf16 outputs rounded once). Attention
// runs the CPU reference and rounds its output. Lets make gpu-ops-check-hostsim run the GPU
// checker end to end without a GPU: a failure there is a bug in the checker.
#include <math.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "core/dtype.h"
#include "kernels/cpu/ops.h"
}
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"

static float to_f32(bf16 v) { return bf16_to_f32(v.x); }
static bf16  to_bf16(float f) {
     bf16 b;
     b.x = f32_to_bf16(f);
     return b;
}
static std::vector<float> widen(const bf16 *p, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++)
        v[i] = to_f32(p[i]);
    return v;
}

extern "C" {

cudaError_t cuda_f32_to_bf16(bf16 *dst, const float *src, size_t n, cudaStream_t) {
    for (size_t i = 0; i < n; i++)
        dst[i] = to_bf16(src[i]);
    return cudaSuccess;
}

cudaError_t cuda_bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t) {
    for (size_t i = 0; i < n; i++)
        dst[i] = to_f32(src[i]);
    return cudaSuccess;
}

cudaError_t cuda_embed(float *x, const bf16 *tok, const float *pos_table, const int32_t *ids,
                       const int32_t *pos, int rows, int dim, cudaStream_t) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++) {
            float v = to_f32(tok[(size_t)ids[r] * dim + i]);
            if (pos_table)
                v += pos_table[(size_t)pos[r] * dim + i];
            x[(size_t)r * dim + i] = v;
        }
    return cudaSuccess;
}

cudaError_t cuda_gather_rows(float *out, const float *x, const int32_t *sel, int n_sel, int dim,
                             cudaStream_t) {
    for (int r = 0; r < n_sel; r++)
        memcpy(out + (size_t)r * dim, x + (size_t)sel[r] * dim, (size_t)dim * sizeof(float));
    return cudaSuccess;
}

cudaError_t cuda_add_norm(float *x, bf16 *xn, const bf16 *delta, const float *w, const float *b,
                          int kind, int rows, int dim, float eps, cudaStream_t) {
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        bf16  *o  = xn + (size_t)r * dim;
        double s  = 0.0;
        for (int i = 0; i < dim; i++) {
            if (delta)
                xr[i] = xr[i] + to_f32(delta[(size_t)r * dim + i]);
            s += kind ? (double)xr[i] : (double)xr[i] * xr[i];
        }
        if (kind == 0) {
            float rs = 1.0f / sqrtf((float)(s / dim) + eps);
            for (int i = 0; i < dim; i++)
                o[i] = to_bf16(w[i] * (xr[i] * rs));
            continue;
        }
        double mean = s / dim, v = 0.0;
        for (int i = 0; i < dim; i++) {
            double d = xr[i] - mean;
            v += d * d;
        }
        float m = (float)mean, rs = 1.0f / sqrtf((float)(v / dim) + eps);
        for (int i = 0; i < dim; i++)
            o[i] = to_bf16((xr[i] - m) * rs * w[i] + b[i]);
    }
    return cudaSuccess;
}

cudaError_t cuda_swiglu(bf16 *out, const bf16 *gate_up, int rows, int ffn, cudaStream_t) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ffn; c++) {
            float g                  = to_f32(gate_up[(size_t)r * 2 * ffn + c]);
            float u                  = to_f32(gate_up[(size_t)r * 2 * ffn + ffn + c]);
            out[(size_t)r * ffn + c] = to_bf16(g / (1.0f + expf(-g)) * u);
        }
    return cudaSuccess;
}

cudaError_t cuda_bias_act(bf16 *y, const float *acc, const float *bias, int rows, int n, int epi,
                          cudaStream_t) {
    for (size_t k = 0; k < (size_t)rows * n; k++) {
        float v = acc[k];
        if (bias)
            v += bias[k % (size_t)n];
        if (epi == 1) {
            float u = v * v * v;
            u       = v + 0.044715f * u;
            v       = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * u));
        }
        y[k] = to_bf16(v);
    }
    return cudaSuccess;
}

cudaError_t cuda_rope_kv(bf16 *qkv, bf16 *k_pool, bf16 *v_pool, const float *inv_freq,
                         const int32_t *pos, const int32_t *block_table, int max_blocks,
                         int block_tokens, const int32_t *q_off, const int32_t *start_pos,
                         int n_seqs, int rows, int n_heads, int n_kv_heads, int hd, cudaStream_t) {
    int    half   = hd / 2;
    size_t stride = (size_t)(n_heads + 2 * n_kv_heads) * hd, kv_dim = (size_t)n_kv_heads * hd;
    for (int r = 0; r < rows; r++) {
        bf16  *row   = qkv + r * stride;
        int    store = 0;
        size_t prow  = 0;
        if (block_table) {
            int s = ops_seq_of_row(q_off, n_seqs, r);
            if (s >= 0) {
                store = 1;
                prow  = ops_pool_row(block_table, max_blocks, block_tokens, s,
                                     start_pos[s] + r - q_off[s]);
            }
        }
        for (int h = 0; h < n_heads + n_kv_heads; h++)
            for (int i = 0; i < half; i++) {
                bf16 *v = row + (size_t)h * hd, o1 = v[i], o2 = v[i + half];
                if (inv_freq) {
                    float ang = (float)pos[r] * inv_freq[i], c = cosf(ang), sn = sinf(ang);
                    float x1 = to_f32(o1), x2 = to_f32(o2);
                    o1          = to_bf16(x1 * c + (-x2) * sn);
                    o2          = to_bf16(x2 * c + x1 * sn);
                    v[i]        = o1;
                    v[i + half] = o2;
                }
                if (store && h >= n_heads) {
                    bf16 *kp     = k_pool + prow * kv_dim + (size_t)(h - n_heads) * hd;
                    kp[i]        = o1;
                    kp[i + half] = o2;
                }
            }
        if (store)
            memcpy(v_pool + prow * kv_dim, row + (size_t)(n_heads + n_kv_heads) * hd,
                   kv_dim * sizeof(bf16));
    }
    return cudaSuccess;
}

cudaError_t cuda_logits_reduce(float *out_logprob, uint8_t *out_is_max, int32_t *out_argmax,
                               const float *logits, const int32_t *target, int rows, int vocab,
                               cudaStream_t) {
    for (int r = 0; r < rows; r++) {
        const float *l  = logits + (size_t)r * vocab;
        float        m  = -INFINITY;
        int          am = 0x7fffffff;
        for (int j = 0; j < vocab; j++)
            ops_argmax_merge(&m, &am, l[j], j);
        if (target && (out_logprob || out_is_max)) {
            double sum = 0.0;
            for (int j = 0; j < vocab; j++)
                sum += (double)expf(l[j] - m);
            if (out_logprob)
                out_logprob[r] = (float)(((double)l[target[r]] - (double)m) - log(sum));
            if (out_is_max)
                out_is_max[r] = (uint8_t)(am == target[r]);
        }
        if (out_argmax)
            out_argmax[r] = am;
    }
    return cudaSuccess;
}

cudaError_t cuda_attention_prefill(bf16 *out, const bf16 *qkv, const int32_t *q_off, int n_seqs,
                                   int, int n_heads, int n_kv_heads, int hd, int window,
                                   cudaStream_t) {
    int                stride = (n_heads + 2 * n_kv_heads) * hd, rows = q_off[n_seqs];
    std::vector<float> q = widen(qkv, (size_t)rows * stride), o((size_t)rows * n_heads * hd);
    if (attention_varlen_forward(o.data(), q.data(), q.data() + (size_t)n_heads * hd,
                                 q.data() + (size_t)(n_heads + n_kv_heads) * hd, q_off, n_seqs,
                                 n_heads, n_kv_heads, hd, stride, stride, window))
        return cudaErrorMemoryAllocation;
    for (size_t i = 0; i < o.size(); i++)
        out[i] = to_bf16(o[i]);
    return cudaSuccess;
}

size_t cuda_attention_paged_partial_bytes(int rows, int n_heads, int hd, int max_ctx,
                                          int split_keys) {
    size_t chunks = (size_t)(max_ctx + split_keys - 1) / split_keys;
    return (size_t)rows * n_heads * chunks * (hd + 2) * sizeof(float);
}

cudaError_t cuda_attention_paged(bf16 *out, const bf16 *qkv, const bf16 *k_pool, const bf16 *v_pool,
                                 const int32_t *block_table, int max_blocks, int block_tokens,
                                 const int32_t *q_off, const int32_t *start_pos, int n_seqs,
                                 int rows, int max_ctx, int n_heads, int n_kv_heads, int hd,
                                 int window, int split_keys, float *partial, cudaStream_t) {
    int    stride   = (n_heads + 2 * n_kv_heads) * hd;
    size_t n_blocks = 0; // the pools' extent: up to the largest block the table names
    for (size_t i = 0; i < (size_t)n_seqs * max_blocks; i++)
        n_blocks = std::max(n_blocks, (size_t)block_table[i] + 1);
    size_t             pool_n = n_blocks * block_tokens * n_kv_heads * hd;
    std::vector<float> q = widen(qkv, (size_t)rows * stride), k = widen(k_pool, pool_n),
                       v = widen(v_pool, pool_n), o((size_t)rows * n_heads * hd);
    memset(partial, 0, cuda_attention_paged_partial_bytes(rows, n_heads, hd, max_ctx, split_keys));
    if (attention_paged_forward(o.data(), q.data(), k.data(), v.data(), block_table, max_blocks,
                                block_tokens, q_off, start_pos, n_seqs, n_heads, n_kv_heads, hd,
                                stride, window))
        return cudaErrorMemoryAllocation;
    for (size_t i = 0; i < o.size(); i++)
        out[i] = to_bf16(o[i]);
    return cudaSuccess;
}
}
