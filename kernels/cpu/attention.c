/* kernels/cpu/attention.c — causal GQA attention over a packed ragged batch, and against a paged
 * KV cache. Both gather the key/value rows of one (sequence, kv head) into pointer lists and run
 * the same per-query routine, so a query's output does not depend on which path computed it,
 * on the batch, or on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"

/* Fixed 8-lane partial sums: vectorizable without -ffast-math, and the same order every time. */
static float dot8(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int   i      = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* out (head_dim) = softmax(q . k_j * scale) @ v_j over keys j = lo..hi (inclusive).
 * krow/vrow: per-position pointers to this kv head's slice. scores: hi + 1 floats. */
static void attend_query(float *out, const float *q, const float *const *krow,
                         const float *const *vrow, int lo, int hi, int head_dim, float scale,
                         float *scores) {
    float mx = -INFINITY;
    for (int j = lo; j <= hi; j++) {
        float s   = dot8(q, krow[j], head_dim) * scale;
        scores[j] = s;
        if (s > mx)
            mx = s;
    }
    double sum = 0.0;
    for (int j = lo; j <= hi; j++) {
        float p   = expf(scores[j] - mx);
        scores[j] = p;
        sum += p;
    }
    for (int d = 0; d < head_dim; d++)
        out[d] = 0.0f;
    for (int j = lo; j <= hi; j++) {
        const float *v = vrow[j];
        float        p = scores[j];
        for (int d = 0; d < head_dim; d++)
            out[d] += p * v[d];
    }
    float inv = (float)(1.0 / sum);
    for (int d = 0; d < head_dim; d++)
        out[d] *= inv;
}

/* One (sequence, query head) task: queries at rows q_row0 + i, positions start + i, i < n_new;
 * keys at positions 0..start+n_new-1 through krow/vrow. */
static void attend_head(float *out, const float *q, const float *const *krow,
                        const float *const *vrow, int q_row0, int n_new, int start, int h,
                        int n_heads, int head_dim, int q_stride, int window, float *scores) {
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int i = 0; i < n_new; i++) {
        int p  = start + i;
        int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        attend_query(out + (size_t)(q_row0 + i) * n_heads * head_dim + (size_t)h * head_dim,
                     q + (size_t)(q_row0 + i) * q_stride + (size_t)h * head_dim, krow, vrow, lo, p,
                     head_dim, scale, scores);
    }
}

int attention_varlen_forward(float *out, const float *q, const float *k, const float *v,
                             const int *cu_seqlens, int n_seqs, int n_heads, int n_kv_heads,
                             int head_dim, int q_stride, int kv_stride, int window) {
    int    group = n_heads / n_kv_heads, failed = 0;
    size_t work = 0; /* ~ query-key pairs x head_dim */
    for (int s = 0; s < n_seqs; s++)
        work += (size_t)(cu_seqlens[s + 1] - cu_seqlens[s]) * (cu_seqlens[s + 1] - cu_seqlens[s]);
    work *= (size_t)n_heads * head_dim;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed) if (work >= CPU_PAR_MIN_WORK)
    for (int task = 0; task < n_seqs * n_heads; task++) {
        int s = task / n_heads, h = task % n_heads, g = h / group;
        int r0 = cu_seqlens[s], len = cu_seqlens[s + 1] - r0;
        if (len <= 0)
            continue;
        void *mem = malloc((size_t)len * (2 * sizeof(float *) + sizeof(float)));
        if (!mem) {
            failed = 1;
            continue;
        }
        const float **krow = mem, **vrow = krow + len;
        float        *scores = (float *)(vrow + len);
        for (int j = 0; j < len; j++) {
            krow[j] = k + (size_t)(r0 + j) * kv_stride + (size_t)g * head_dim;
            vrow[j] = v + (size_t)(r0 + j) * kv_stride + (size_t)g * head_dim;
        }
        attend_head(out, q, krow, vrow, r0, len, 0, h, n_heads, head_dim, q_stride, window, scores);
        free(mem);
    }
    return failed ? -1 : 0;
}

void kv_store_forward(float *k_pool, float *v_pool, const float *k, const float *v, int kv_stride,
                      int kv_dim, const int32_t *block_table, int max_blocks, int block_tokens,
                      const int *q_off, const int *start_pos, int n_seqs) {
#pragma omp parallel for schedule(static) if ((size_t)q_off[n_seqs] * kv_dim >= CPU_PAR_MIN_WORK)
    for (int s = 0; s < n_seqs; s++) {
        for (int r = q_off[s]; r < q_off[s + 1]; r++) {
            int    p = start_pos[s] + (r - q_off[s]);
            size_t row =
                (size_t)block_table[(size_t)s * max_blocks + p / block_tokens] * block_tokens +
                (size_t)(p % block_tokens);
            memcpy(k_pool + row * kv_dim, k + (size_t)r * kv_stride,
                   (size_t)kv_dim * sizeof(float));
            memcpy(v_pool + row * kv_dim, v + (size_t)r * kv_stride,
                   (size_t)kv_dim * sizeof(float));
        }
    }
}

int attention_paged_forward(float *out, const float *q, const float *k_pool, const float *v_pool,
                            const int32_t *block_table, int max_blocks, int block_tokens,
                            const int *q_off, const int *start_pos, int n_seqs, int n_heads,
                            int n_kv_heads, int head_dim, int q_stride, int window) {
    int    group = n_heads / n_kv_heads, failed = 0, kv_dim = n_kv_heads * head_dim;
    size_t work = 0;
    for (int s = 0; s < n_seqs; s++)
        work +=
            (size_t)(q_off[s + 1] - q_off[s]) * (size_t)(start_pos[s] + q_off[s + 1] - q_off[s]);
    work *= (size_t)n_heads * head_dim;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed) if (work >= CPU_PAR_MIN_WORK)
    for (int task = 0; task < n_seqs * n_heads; task++) {
        int s = task / n_heads, h = task % n_heads, g = h / group;
        int n_new = q_off[s + 1] - q_off[s], len = start_pos[s] + n_new;
        if (n_new <= 0)
            continue;
        void *mem = malloc((size_t)len * (2 * sizeof(float *) + sizeof(float)));
        if (!mem) {
            failed = 1;
            continue;
        }
        const float  **krow = mem, **vrow = krow + len;
        float         *scores = (float *)(vrow + len);
        const int32_t *bt     = block_table + (size_t)s * max_blocks;
        for (int j = 0; j < len; j++) {
            size_t row = (size_t)bt[j / block_tokens] * block_tokens + (size_t)(j % block_tokens);
            krow[j]    = k_pool + row * kv_dim + (size_t)g * head_dim;
            vrow[j]    = v_pool + row * kv_dim + (size_t)g * head_dim;
        }
        attend_head(out, q, krow, vrow, q_off[s], n_new, start_pos[s], h, n_heads, head_dim,
                    q_stride, window, scores);
        free(mem);
    }
    return failed ? -1 : 0;
}
