/* kernels/cuda/launch.h — the host-side arithmetic of the CUDA ops (launch shapes, size checks,
 * paged-cache addressing, the argmax merge rule), in plain C so the CPU test suite checks it
 * without a GPU (tests/test_cuda_ops_host.c); the .cu files include it and run the same code.
 *
 * A launch shape depends on an op's widths (dim, vocab, head_dim) only, never on the row count:
 * a row's reduction order is fixed by its width, so its result never depends on the batch. */
#ifndef ASSAY_KERNELS_CUDA_LAUNCH_H
#define ASSAY_KERNELS_CUDA_LAUNCH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define OPS_HD __host__ __device__
#else
#define OPS_HD
#endif

#define OPS_THREADS 256 /* elementwise (grid-stride) kernels */
/* Grid-stride kernels launch at most this many blocks: more only adds scheduling work, and it
 * keeps gridDim.x far below its 2^31 - 1 limit whatever n is. */
#define OPS_GRID_CAP (1u << 16)
#define OPS_ROW_THREADS_MIN 32
#define OPS_ROW_THREADS_MAX 1024

/* Threads of a one-block-per-row reduction over n elements: the smallest power of two in
 * [32, 1024] with at least n / 8 of them, so each thread sums about 4-8 elements and the tree
 * stays a small part of the work. A function of n alone (see above). */
static inline int ops_row_threads(int n) {
    int t = OPS_ROW_THREADS_MIN;
    while (t < OPS_ROW_THREADS_MAX && (long long)t * 8 < n)
        t *= 2;
    return t;
}

/* Blocks of `threads` for a grid-stride loop over n elements: ceil(n / threads), at most
 * OPS_GRID_CAP; 0 when n is 0 (the launcher then launches nothing). */
static inline unsigned ops_grid_1d(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    return b > OPS_GRID_CAP ? OPS_GRID_CAP : (unsigned)b;
}

/* Threads of a per-row elementwise kernel over n elements (one block per row, threads striding
 * along the row): n rounded up to a warp, in [32, 256]. */
static inline int ops_rowwise_threads(int n) {
    long long t = ((long long)n + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : t > 256 ? 256 : t);
}

/* Threads of the RoPE + KV-store kernel (one block per row): enough for the larger of the two
 * per-row work lists, (n_heads + n_kv_heads) * head_dim / 2 rotation pairs and n_kv_heads *
 * head_dim value copies, rounded up to a warp, in [32, 256] (the kernel strides past 256). */
static inline int ops_rope_threads(int n_heads, int n_kv_heads, int head_dim) {
    long long pairs  = (long long)(n_heads + n_kv_heads) * (head_dim / 2);
    long long copies = (long long)n_kv_heads * head_dim;
    long long work   = pairs > copies ? pairs : copies;
    long long t      = (work + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : t > 256 ? 256 : t);
}

/* Dynamic shared memory of the RoPE kernel: the row's cos and sin tables, head_dim / 2 each. */
static inline size_t ops_rope_smem_bytes(int head_dim) {
    return (size_t)(head_dim / 2) * 2 * sizeof(float);
}

/* 1 when the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte. */
static inline int ops_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    if (a_bytes == 0 || b_bytes == 0)
        return 0;
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

/* The sequence that owns packed row r: the s with q_off[s] <= r < q_off[s + 1] (q_off
 * ascending, n_seqs + 1 entries), or -1 when no sequence does. Empty sequences (q_off[s] ==
 * q_off[s + 1]) own no row. Binary search: O(log n_seqs) per row. */
static inline OPS_HD int ops_seq_of_row(const int32_t *q_off, int n_seqs, int r) {
    if (n_seqs <= 0 || r < q_off[0] || r >= q_off[n_seqs])
        return -1;
    int lo = 0, hi = n_seqs - 1; /* invariant: q_off[lo] <= r < q_off[hi + 1] */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (q_off[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Pool row of token p of sequence s (kernels/cpu/ops.h, paged KV cache views). */
static inline OPS_HD size_t ops_pool_row(const int32_t *block_table, int max_blocks,
                                         int block_tokens, int s, int p) {
    int32_t blk = block_table[(size_t)s * max_blocks + p / block_tokens];
    return (size_t)blk * block_tokens + (size_t)(p % block_tokens);
}

/* Argmax merge: folds candidate (v, j) into the running (*m, *i). NaN ranks above every number
 * (torch.argmax: a row with a NaN answers its first NaN); among equal values, or among NaNs,
 * the lower index wins. The result is the same for any merge order, so a tree gives the
 * sequential scan's answer. */
static inline OPS_HD void ops_argmax_merge(float *m, int *i, float v, int j) {
    int v_nan = v != v, m_nan = *m != *m;
    int take;
    if (v_nan || m_nan)
        take = v_nan && (!m_nan || j < *i);
    else
        take = v > *m || (v == *m && j < *i);
    if (take) {
        *m = v;
        *i = j;
    }
}

#endif
