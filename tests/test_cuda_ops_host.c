/* tests/test_cuda_ops_host.c — the host-side arithmetic of the CUDA ops, checked without a GPU:
 * launch shapes (kernels/cuda/launch.h), the paged-cache addressing and row->sequence lookup the
 * RoPE kernel runs (against the CPU reference's kv_store_forward), the argmax merge under the
 * exact reduction tree of kernels/cuda/reduce.cuh, and the reference the GPU op check uses for
 * cuda_logits_reduce (tests/gpu/ops_ref.h) against a direct double-precision computation. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/launch.h"
#include "tests/gpu/ops_ref.h"
#include "tests/helpers.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

Test(cuda_ops_host, row_threads_are_a_power_of_two_fixed_by_the_width) {
    cr_assert_eq(ops_row_threads(1), 32);
    cr_assert_eq(ops_row_threads(256), 32);
    cr_assert_eq(ops_row_threads(257), 64);
    cr_assert_eq(ops_row_threads(4096), 512);
    cr_assert_eq(ops_row_threads(128256), 1024);
    int prev = 0;
    for (int n = 1; n <= 20000; n += 7) {
        int t = ops_row_threads(n);
        cr_assert(t >= 32 && t <= 1024 && (t & (t - 1)) == 0, "n=%d t=%d", n, t);
        cr_assert(t == 1024 || (long long)t * 8 >= n, "n=%d: %d threads sum > 8 each", n, t);
        cr_assert(t == 32 || (long long)t / 2 * 8 < n, "n=%d: %d threads, half would do", n, t);
        cr_assert(t >= prev);
        prev = t;
    }
}

Test(cuda_ops_host, rowwise_and_rope_threads_are_whole_warps_within_limits) {
    for (int n = 1; n < 5000; n += 3) {
        int t = ops_rowwise_threads(n);
        cr_assert(t % 32 == 0 && t >= 32 && t <= 256 && (t >= n || t == 256), "n=%d t=%d", n, t);
    }
    cr_assert_eq(ops_rope_threads(32, 8, 128), 256); /* Llama-3-8B: 2560 pairs */
    cr_assert_eq(ops_rope_threads(1, 1, 2), 32);
    cr_assert_eq(ops_rope_threads(2, 1, 16), 32); /* 24 pairs, 16 copies */
    cr_assert_eq(ops_rope_threads(4, 2, 16), 64); /* 48 pairs, 32 copies */
    cr_assert_eq(ops_rope_threads(1, 4, 16), 64); /* 40 pairs, 64 copies */
    cr_assert_eq(ops_rope_smem_bytes(128), 64 * 2 * sizeof(float));
    cr_assert_eq(ops_rope_smem_bytes(80), 40 * 2 * sizeof(float));
}

Test(cuda_ops_host, grid_covers_n_and_is_capped) {
    cr_assert_eq(ops_grid_1d(0, 256), 0u);
    cr_assert_eq(ops_grid_1d(1, 256), 1u);
    cr_assert_eq(ops_grid_1d(256, 256), 1u);
    cr_assert_eq(ops_grid_1d(257, 256), 2u);
    cr_assert_eq(ops_grid_1d((size_t)1 << 40, 256), OPS_GRID_CAP);
    for (size_t n = 1; n < 3000000; n = n * 3 + 1) {
        unsigned g = ops_grid_1d(n, OPS_THREADS);
        cr_assert(g >= 1 && g <= OPS_GRID_CAP);
        if (g < OPS_GRID_CAP)
            cr_assert((size_t)g * OPS_THREADS >= n && (size_t)(g - 1) * OPS_THREADS < n);
    }
}

Test(cuda_ops_host, ranges_overlap_only_when_a_byte_is_shared) {
    char buf[64];
    cr_assert(!ops_ranges_overlap(buf, 16, buf + 16, 16));
    cr_assert(!ops_ranges_overlap(buf + 16, 16, buf, 16));
    cr_assert(ops_ranges_overlap(buf, 17, buf + 16, 16));
    cr_assert(ops_ranges_overlap(buf + 16, 16, buf, 17));
    cr_assert(ops_ranges_overlap(buf, 64, buf + 8, 2));
    cr_assert(ops_ranges_overlap(buf + 8, 2, buf, 64));
    cr_assert(!ops_ranges_overlap(buf, 0, buf, 64));
}

Test(cuda_ops_host, seq_of_row_agrees_with_a_scan_including_empty_sequences) {
    int32_t q_off[41];
    for (int trial = 0; trial < 200; trial++) {
        int n_seqs = 1 + (int)(rnd() % 40);
        q_off[0]   = (int32_t)(rnd() % 3);
        for (int s = 0; s < n_seqs; s++) /* one in four sequences is empty */
            q_off[s + 1] = q_off[s] + (rnd() % 4 == 0 ? 0 : 1 + (int32_t)(rnd() % 9));
        for (int r = -1; r <= q_off[n_seqs] + 1; r++) {
            int want = -1;
            for (int s = 0; s < n_seqs; s++)
                if (q_off[s] <= r && r < q_off[s + 1])
                    want = s;
            cr_assert_eq(ops_seq_of_row(q_off, n_seqs, r), want, "trial %d row %d", trial, r);
        }
    }
    cr_assert_eq(ops_seq_of_row(q_off, 0, 0), -1);
}

/* The RoPE kernel's store addresses (ops_seq_of_row + ops_pool_row) put every new row where the
 * CPU reference's kv_store_forward puts it. */
Test(cuda_ops_host, pool_rows_match_the_cpu_kv_store) {
    enum { N_SEQS = 5, MAX_BLOCKS = 6, BT = 4, KV_DIM = 3, N_BLOCKS = N_SEQS * MAX_BLOCKS };
    int32_t table[N_SEQS * MAX_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) /* a shuffled table: blocks in any order */
        table[i] = i;
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        int     j = (int)(rnd() % (unsigned)(i + 1));
        int32_t t = table[i];
        table[i]  = table[j];
        table[j]  = t;
    }
    int start_pos[N_SEQS] = {0, 5, 3, 11, 20}, lens[N_SEQS] = {4, 1, 0, 7, 4}, q_off[N_SEQS + 1];
    q_off[0] = 0;
    for (int s = 0; s < N_SEQS; s++)
        q_off[s + 1] = q_off[s] + lens[s];
    int    rows = q_off[N_SEQS];
    float *k = malloc(sizeof(float) * rows * KV_DIM), *v = malloc(sizeof(float) * rows * KV_DIM);
    float *kp = malloc(sizeof(float) * N_BLOCKS * BT * KV_DIM);
    float *vp = malloc(sizeof(float) * N_BLOCKS * BT * KV_DIM);
    cr_assert(k && v && kp && vp);
    for (int i = 0; i < rows * KV_DIM; i++) {
        k[i] = (float)i;
        v[i] = (float)-i - 1;
    }
    for (int i = 0; i < N_BLOCKS * BT * KV_DIM; i++)
        kp[i] = vp[i] = NAN;
    kv_store_forward(kp, vp, k, v, KV_DIM, KV_DIM, table, MAX_BLOCKS, BT, q_off, start_pos, N_SEQS);
    int32_t q_off32[N_SEQS + 1];
    for (int s = 0; s <= N_SEQS; s++)
        q_off32[s] = q_off[s];
    int written = 0;
    for (int r = 0; r < rows; r++) {
        int s = ops_seq_of_row(q_off32, N_SEQS, r);
        cr_assert(s >= 0);
        size_t pr = ops_pool_row(table, MAX_BLOCKS, BT, s, start_pos[s] + r - q_off32[s]);
        for (int c = 0; c < KV_DIM; c++) {
            cr_assert_eq(kp[pr * KV_DIM + c], k[(size_t)r * KV_DIM + c], "row %d", r);
            cr_assert_eq(vp[pr * KV_DIM + c], v[(size_t)r * KV_DIM + c], "row %d", r);
        }
        written++;
    }
    int stored = 0; /* and nothing else was written */
    for (int i = 0; i < N_BLOCKS * BT; i++)
        stored += kp[(size_t)i * KV_DIM] == kp[(size_t)i * KV_DIM];
    cr_assert_eq(stored, written);
    free(k);
    free(v);
    free(kp);
    free(vp);
}

/* The argmax that reduce.cuh's block_argmax computes, step for step: thread t scans j = t,
 * t + T, ...; each warp folds by __shfl_down_sync (lane l takes lane l + o's value, lanes
 * past 31 get their own back); warp 0 folds the warps' results the same way. */
static void emulate_block_argmax(float *m_out, int *i_out, const float *l, int n, int threads) {
    float m[1024], wm[32];
    int   ix[1024], wi[32];
    for (int t = 0; t < threads; t++) {
        m[t]  = -INFINITY;
        ix[t] = 0x7fffffff;
        for (int j = t; j < n; j += threads)
            ops_argmax_merge(&m[t], &ix[t], l[j], j);
    }
    int n_warps = threads / 32;
    for (int w = 0; w < n_warps; w++) {
        float *wmv = m + w * 32;
        int   *wiv = ix + w * 32;
        for (int o = 16; o > 0; o >>= 1) {
            float vm[32];
            int   vi[32];
            for (int lane = 0; lane < 32; lane++) {
                vm[lane] = lane + o < 32 ? wmv[lane + o] : wmv[lane];
                vi[lane] = lane + o < 32 ? wiv[lane + o] : wiv[lane];
            }
            for (int lane = 0; lane < 32; lane++)
                ops_argmax_merge(&wmv[lane], &wiv[lane], vm[lane], vi[lane]);
        }
    }
    for (int lane = 0; lane < 32; lane++) {
        wm[lane] = lane < n_warps ? m[lane * 32] : -INFINITY;
        wi[lane] = lane < n_warps ? ix[lane * 32] : 0x7fffffff;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float vm[32];
        int   vi[32];
        for (int lane = 0; lane < 32; lane++) {
            vm[lane] = lane + o < 32 ? wm[lane + o] : wm[lane];
            vi[lane] = lane + o < 32 ? wi[lane + o] : wi[lane];
        }
        for (int lane = 0; lane < 32; lane++)
            ops_argmax_merge(&wm[lane], &wi[lane], vm[lane], vi[lane]);
    }
    *m_out = wm[0];
    *i_out = wi[0];
}

Test(cuda_ops_host, block_argmax_tree_gives_the_first_maximum_and_the_first_nan) {
    enum { N = 5000 };
    static float l[N];
    int          threads[] = {32, 64, 256, 1024};
    for (int trial = 0; trial < 60; trial++) {
        int n = 1 + (int)(rnd() % N);
        for (int j = 0; j < n; j++) /* few distinct values: many ties */
            l[j] = (float)((int)(rnd() % 7) - 3);
        if (trial % 3 == 0)
            for (int j = 0; j < n; j++)
                l[j] = -INFINITY;
        int nan_at = -1;
        if (trial % 4 == 1) { /* NaNs at two places: the first one wins */
            nan_at    = (int)(rnd() % (unsigned)n);
            l[nan_at] = NAN;
            int later = nan_at + (int)(rnd() % (unsigned)(n - nan_at));
            l[later]  = NAN;
        }
        int first = 0; /* the scan: first largest value, or first NaN */
        for (int j = 1; j < n; j++)
            if (l[j] > l[first])
                first = j;
        if (nan_at >= 0)
            first = nan_at;
        for (size_t k = 0; k < sizeof threads / sizeof *threads; k++) {
            float m;
            int   i;
            emulate_block_argmax(&m, &i, l, n, threads[k]);
            cr_assert_eq(i, first, "trial %d n %d threads %d: %d, want %d", trial, n, threads[k], i,
                         first);
        }
    }
}

/* The GPU check's reference for cuda_logits_reduce reproduces a direct computation:
 * log-prob = l[t] - max - log(sum exp(l - max)), to f32 rounding plus the CPU's expf error
 * (vm_expf within a few ulp: 1e-6 relative on each term, so on the sum and ~1e-6 absolute on its
 * log); is-argmax and argmax exactly, lowest index on ties. */
Test(cuda_ops_host, logits_reference_matches_a_direct_computation) {
    enum { ROWS = 5, VOCAB = 1001 };
    float  *logits = malloc(sizeof(float) * ROWS * VOCAB);
    float   lp[ROWS];
    uint8_t is_max[ROWS];
    int32_t am[ROWS], am_only[ROWS], target[ROWS];
    cr_assert(logits);
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < VOCAB; j++) /* steps of 1/4 in [-8, 8): exact, with ties */
            logits[(size_t)r * VOCAB + j] = (float)((int)(rnd() % 64) - 32) / 4.0f;
    logits[1 * VOCAB + 7] = logits[1 * VOCAB + 900] = 9.0f; /* a tie for the max */
    for (int r = 0; r < ROWS; r++)
        target[r] = (int32_t)(rnd() % VOCAB);
    target[1]               = 7;
    target[2]               = 900;
    logits[2 * VOCAB + 900] = 12.0f; /* row 2's target is the argmax */
    cr_assert_eq(ref_logits_reduce(lp, is_max, am, logits, target, ROWS, VOCAB), 0);
    cr_assert_eq(ref_logits_reduce(NULL, NULL, am_only, logits, NULL, ROWS, VOCAB), 0);
    for (int r = 0; r < ROWS; r++) {
        const float *l = logits + (size_t)r * VOCAB;
        int          a = 0;
        for (int j = 1; j < VOCAB; j++)
            if (l[j] > l[a])
                a = j;
        double s = 0.0;
        for (int j = 0; j < VOCAB; j++)
            s += exp((double)l[j] - l[a]);
        double want = (double)l[target[r]] - l[a] - log(s);
        cr_assert(ref_close(lp[r], want, 1e-6, 1e-6), "row %d: %.9g vs %.9g", r, lp[r], want);
        cr_assert_eq(am[r], a, "row %d", r);
        cr_assert_eq(am_only[r], a, "row %d", r);
        cr_assert_eq(is_max[r], (uint8_t)(a == target[r]), "row %d", r);
    }
    cr_assert_eq(am[1], 7);
    cr_assert_eq(is_max[1], 1);
    cr_assert_eq(is_max[2], 1);
    free(logits);
}

Test(cuda_ops_host, close_rejects_nan_and_mismatched_infinities) {
    cr_assert(ref_close(1.0, 1.0, 0, 0));
    cr_assert(ref_close(1.0 + 1e-7, 1.0, 0, 2e-7));
    cr_assert(!ref_close(1.0 + 1e-6, 1.0, 1e-7, 2e-7));
    cr_assert(!ref_close(NAN, 1.0, 1e9, 1e9));
    cr_assert(!ref_close(1.0, NAN, 1e9, 1e9));
    cr_assert(!ref_close(NAN, NAN, 1e9, 1e9));
    cr_assert(ref_close(INFINITY, INFINITY, 0, 0));
    cr_assert(!ref_close(INFINITY, -INFINITY, 1e9, 1e9));
    cr_assert(!ref_close(1e30, INFINITY, 1e9, 1e9));
}
