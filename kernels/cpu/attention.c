/* kernels/cpu/attention.c — causal GQA attention over a packed ragged batch, and against a paged
 * KV cache. Both gather the key/value rows of one (sequence, kv head) into pointer lists and run
 * the same per-query routine, so a query's output does not depend on which path computed it,
 * on the batch, or on the thread count. */
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/vmath.h"

/* out (head_dim) = softmax(q . k_j * scale) @ v_j over keys j = lo..hi (inclusive).
 * krow/vrow: per-position pointers to this kv head's slice. scores: hi + 1 floats.
 * Order (the same in both forms below, so the bits are too): s_j = vm_dot(q, k_j) * scale;
 * mx = max s_j; p_j = vm_expf(s_j - mx); sum = sum of p_j in double over 16 lanes (key j - lo
 * in lane (j - lo) % 16, vm_fold16d); out[d] = fma chain of p_j * v_j[d], j ascending;
 * out[d] *= (float)(1 / sum). */
static void attend_query(float *out, const float *q, const float *const *krow,
                         const float *const *vrow, int lo, int hi, int head_dim, float scale,
                         float *scores) {
    float mx = -INFINITY;
    for (int j = lo; j <= hi; j++) {
        float s   = vm_dot(q, krow[j], head_dim) * scale;
        scores[j] = s;
        if (s > mx)
            mx = s;
    }
    double lanes[16] = {0};
    for (int j = lo; j <= hi; j++) {
        float p   = vm_expf(scores[j] - mx);
        scores[j] = p;
        lanes[(j - lo) % 16] += p;
    }
    double sum = vm_fold16d(lanes);
    for (int d = 0; d < head_dim; d++)
        out[d] = 0.0f;
    for (int j = lo; j <= hi; j++) {
        const float *v = vrow[j];
        float        p = scores[j];
        for (int d = 0; d < head_dim; d++)
            out[d] = fmaf(p, v[d], out[d]);
    }
    float inv = (float)(1.0 / sum);
    for (int d = 0; d < head_dim; d++)
        out[d] *= inv;
}

/* vm_dot512(q, krow[j], head_dim) for the 16 keys j = 0..15, lane j of the result: the same
 * per-lane fma chains, then vm_fold512's four halving steps done on all 16 keys at once (a
 * transposing tree of 15 adds instead of 16 horizontal folds). Every add pairs the same two
 * partial sums as vm_fold16f, so each lane has vm_dot's bits. */
static inline VM_AVX512 __m512 dot16_512(const float *q, const float *const *krow, int head_dim) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        acc[j] = _mm512_setzero_ps();
    for (int i = 0; i < head_dim; i += 16) {
        __mmask16 m  = (__mmask16)(head_dim - i >= 16 ? 0xffffu : (1u << (head_dim - i)) - 1);
        __m512    qv = _mm512_maskz_loadu_ps(m, q + i);
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, krow[j] + i), acc[j]);
    }
    /* w = 8: keys 2t, 2t+1 -> t8[t] = [key 2t lanes l + (l+8), l < 8 | key 2t+1 likewise] */
    __m512 t8[8], t4[4], t2[2];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        t8[t] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * t], acc[2 * t + 1], 0x44),
                              _mm512_shuffle_f32x4(acc[2 * t], acc[2 * t + 1], 0xEE));
        /* w = 4: 128-bit quarter c of t4[t] = key 4t + c's four partials */
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
        t4[t] = _mm512_add_ps(_mm512_shuffle_f32x4(t8[2 * t], t8[2 * t + 1], 0x88),
                              _mm512_shuffle_f32x4(t8[2 * t], t8[2 * t + 1], 0xDD));
        /* w = 2: quarter c of t2[t] = [key 8t + c: 2 partials | key 8t + 4 + c: 2 partials] */
#pragma GCC unroll 2
    for (int t = 0; t < 2; t++)
        t2[t] = _mm512_add_ps(_mm512_shuffle_ps(t4[2 * t], t4[2 * t + 1], 0x44),
                              _mm512_shuffle_ps(t4[2 * t], t4[2 * t + 1], 0xEE));
    /* w = 1: quarter c = keys c, 4 + c, 8 + c, 12 + c; then lane j <- key j */
    __m512 f =
        _mm512_add_ps(_mm512_shuffle_ps(t2[0], t2[1], 0x88), _mm512_shuffle_ps(t2[0], t2[1], 0xDD));
    return _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), f);
}

static VM_AVX512 void attend_query512(float *out, const float *q, const float *const *krow,
                                      const float *const *vrow, int lo, int hi, int head_dim,
                                      float scale, float *scores) {
    /* max over scores: NaN never wins (max_ps returns its second operand on NaN), as in the
     * scalar form; which zero wins does not matter (s - (+0) == s - (-0) bitwise for s != 0) */
    __m512 smax = _mm512_set1_ps(-INFINITY);
    int    jb   = lo;
    for (; jb + 16 <= hi + 1; jb += 16) {
        __m512 s = _mm512_mul_ps(dot16_512(q, krow + jb, head_dim), _mm512_set1_ps(scale));
        _mm512_storeu_ps(scores + jb, s);
        smax = _mm512_max_ps(s, smax);
    }
    float mx = _mm512_reduce_max_ps(smax);
    for (; jb <= hi; jb++) {
        float s    = vm_dot512(q, krow[jb], head_dim) * scale;
        scores[jb] = s;
        if (s > mx)
            mx = s;
    }
    __m512d lo8 = _mm512_setzero_pd(), hi8 = _mm512_setzero_pd();
    __m512  vmx = _mm512_set1_ps(mx);
    for (int j = lo; j <= hi; j += 16) {
        int       n = hi + 1 - j < 16 ? hi + 1 - j : 16;
        __mmask16 m = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1);
        __m512    p = vm_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), vmx));
        p           = _mm512_maskz_mov_ps(m, p);
        _mm512_mask_storeu_ps(scores + j, m, p);
        lo8 = _mm512_add_pd(lo8, _mm512_cvtps_pd(_mm512_castps512_ps256(p)));
        hi8 = _mm512_add_pd(
            hi8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1))));
    }
    double sum = vm_fold512d(lo8, hi8);
    float  inv = (float)(1.0 / sum);
    for (int d0 = 0; d0 < head_dim; d0 += 64) {
        /* up to 64 outputs in registers across all keys */
        int       nd = head_dim - d0 < 64 ? head_dim - d0 : 64;
        __mmask16 m[4];
        __m512    acc[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            int left = nd - 16 * c;
            m[c]     = (__mmask16)(left >= 16 ? 0xffffu : left > 0 ? (1u << left) - 1 : 0);
            acc[c]   = _mm512_setzero_ps();
        }
        for (int j = lo; j <= hi; j++) {
            __m512       p = _mm512_set1_ps(scores[j]);
            const float *v = vrow[j] + d0;
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[c], v + 16 * c), acc[c]);
        }
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(out + d0 + 16 * c, m[c],
                                  _mm512_mul_ps(acc[c], _mm512_set1_ps(inv)));
    }
}

/* One (sequence, query head) task: queries at rows q_row0 + i, positions start + i, i < n_new;
 * keys at positions 0..start+n_new-1 through krow/vrow. */
static void attend_head(float *out, const float *q, const float *const *krow,
                        const float *const *vrow, int q_row0, int n_new, int start, int h,
                        int n_heads, int head_dim, int q_stride, int window, float *scores,
                        int simd) {
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int i = 0; i < n_new; i++) {
        int          p  = start + i;
        int          lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        float       *o  = out + (size_t)(q_row0 + i) * n_heads * head_dim + (size_t)h * head_dim;
        const float *qi = q + (size_t)(q_row0 + i) * q_stride + (size_t)h * head_dim;
        if (simd)
            attend_query512(o, qi, krow, vrow, lo, p, head_dim, scale, scores);
        else
            attend_query(o, qi, krow, vrow, lo, p, head_dim, scale, scores);
    }
}

/* The (sequence, query head) tasks of one attention call, as a pool job (kernels/cpu/pool.h):
 * taken in order by whichever thread is free; each output row of a head is written by one task,
 * so the split never changes a bit. Keys of sequence s at positions t < start_pos[s] + n_new are
 * rows of k/v: with a block table, row bt[t / block_tokens] * block_tokens + t % block_tokens of
 * the pool (kv_stride floats apart); without, row q_off[s] + t of the batch. */
typedef struct attn_job {
    float         *out;
    const float   *q, *k, *v;
    const int32_t *block_table; /* NULL: keys are the batch's own rows */
    const int     *q_off, *start_pos;
    int max_blocks, block_tokens, n_seqs, n_heads, group, kv_stride, head_dim, q_stride, window,
        simd, max_len;
    _Atomic int next, failed;
} attn_job;

static void attn_tasks(void *arg, int tid, int nth) {
    (void)tid, (void)nth;
    attn_job *j = arg;
    /* one buffer per thread for the whole call, made when the thread takes its first task: key
     * and value row pointers and the scores */
    void         *mem  = NULL;
    const float **krow = NULL, **vrow = NULL;
    float        *scores = NULL;
    for (int task; (task = atomic_fetch_add(&j->next, 1)) < j->n_seqs * j->n_heads;) {
        int s = task / j->n_heads, h = task % j->n_heads, g = h / j->group;
        int n_new = j->q_off[s + 1] - j->q_off[s], start = j->start_pos ? j->start_pos[s] : 0;
        if (n_new <= 0)
            continue;
        if (!mem) {
            if (!(mem = malloc((size_t)j->max_len * (2 * sizeof(float *) + sizeof(float))))) {
                atomic_store(&j->failed, 1); /* this task is not done: the call fails */
                return;
            }
            krow   = mem;
            vrow   = krow + j->max_len;
            scores = (float *)(vrow + j->max_len);
        }
        const int32_t *bt = j->block_table ? j->block_table + (size_t)s * j->max_blocks : NULL;
        for (int t = 0; t < start + n_new; t++) {
            size_t row = bt ? (size_t)bt[t / j->block_tokens] * j->block_tokens +
                                  (size_t)(t % j->block_tokens)
                            : (size_t)(j->q_off[s] + t);
            krow[t]    = j->k + row * j->kv_stride + (size_t)g * j->head_dim;
            vrow[t]    = j->v + row * j->kv_stride + (size_t)g * j->head_dim;
        }
        attend_head(j->out, j->q, krow, vrow, j->q_off[s], n_new, start, h, j->n_heads, j->head_dim,
                    j->q_stride, j->window, scores, j->simd);
    }
    free(mem);
}

/* Runs j over the pool, sizing the threads' scratch (j->max_len) from the sequences. A decode
 * step's attention is tens of microseconds: worth splitting only while the pool's threads hand
 * over without sleeping. */
static int attn_run(attn_job *j) {
    size_t work = 0; /* query-key pairs */
    for (int s = 0; s < j->n_seqs; s++) {
        int n_new = j->q_off[s + 1] - j->q_off[s];
        int len   = (j->start_pos ? j->start_pos[s] : 0) + n_new;
        if (n_new <= 0)
            continue;
        work += (size_t)n_new * len;
        j->max_len = len > j->max_len ? len : j->max_len;
    }
    work *= (size_t)j->n_heads * j->head_dim;
    atomic_init(&j->next, 0);
    atomic_init(&j->failed, 0);
    j->simd = cpu_gemm_isa() == 2;
    if (j->max_len <= 0)
        return 0;
    int par = work >= CPU_PAR_MIN_WORK || (work >= CPU_PAR_MIN_WORK / 8 && cpu_pool_spinning());
    cpu_pool_run(par ? omp_get_max_threads() : 1, attn_tasks, j);
    return atomic_load(&j->failed) ? -1 : 0;
}

int attention_varlen_forward(float *out, const float *q, const float *k, const float *v,
                             const int *cu_seqlens, int n_seqs, int n_heads, int n_kv_heads,
                             int head_dim, int q_stride, int kv_stride, int window) {
    attn_job j = {.out       = out,
                  .q         = q,
                  .k         = k,
                  .v         = v,
                  .q_off     = cu_seqlens,
                  .n_seqs    = n_seqs,
                  .n_heads   = n_heads,
                  .group     = n_heads / n_kv_heads,
                  .kv_stride = kv_stride,
                  .head_dim  = head_dim,
                  .q_stride  = q_stride,
                  .window    = window};
    return attn_run(&j);
}

void kv_store_forward(float *k_pool, float *v_pool, const float *k, const float *v, int kv_stride,
                      int kv_dim, const int32_t *block_table, int max_blocks, int block_tokens,
                      const int *q_off, const int *start_pos, int n_seqs) {
    CPU_PAR_FOR((size_t)q_off[n_seqs] * kv_dim >= CPU_PAR_MIN_WORK, s, n_seqs, {
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
    });
}

int attention_paged_forward(float *out, const float *q, const float *k_pool, const float *v_pool,
                            const int32_t *block_table, int max_blocks, int block_tokens,
                            const int *q_off, const int *start_pos, int n_seqs, int n_heads,
                            int n_kv_heads, int head_dim, int q_stride, int window) {
    attn_job j = {.out          = out,
                  .q            = q,
                  .k            = k_pool,
                  .v            = v_pool,
                  .block_table  = block_table,
                  .q_off        = q_off,
                  .start_pos    = start_pos,
                  .max_blocks   = max_blocks,
                  .block_tokens = block_tokens,
                  .n_seqs       = n_seqs,
                  .n_heads      = n_heads,
                  .group        = n_heads / n_kv_heads,
                  .kv_stride    = n_kv_heads * head_dim,
                  .head_dim     = head_dim,
                  .q_stride     = q_stride,
                  .window       = window};
    return attn_run(&j);
}
