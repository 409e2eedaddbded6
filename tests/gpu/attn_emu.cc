// tests/gpu/attn_emu.cc — runs the source of kernels/cuda/attention.cu on the CPU, through the
// thin emulation in tests/gpu/emu/ (threads, barriers, shuffles through memory), built with
// ASan + UBSan: the kernels' indexing, shared-memory layout, barriers and shuffles checked
// without a GPU, against the CPU reference. It cannot see what only hardware does (timing,
// real memory ordering, the compiled code), so tests/gpu/ops_check.cu on a GPU still decides.
//
//   make SAN=1 attn-emu && build/san/gpu/attn_emu
//
// Each case: random bf16 inputs (q scaled by 3 for peaked rows), outputs poisoned with NaN,
// pool rows outside every context NaN (a kernel reading past a context turns its row NaN);
// |emu - cpu| <= 2^-8 |cpu| + 2^-12 max|v| (attention.cu's header), and every sequence alone
// gives its rows of the batch bit for bit. Exit 1 on a failure.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "core/dtype.h"
#include "kernels/cpu/ops.h"
}
#include "kernels/cuda/attn_plan.h"
#include "kernels/cuda/ops.cuh"

static int      g_fail = 0;
static uint64_t g_rng  = 0x9e3779b97f4a7c15ull;
static int      irand(int n) {
         g_rng ^= g_rng << 13;
         g_rng ^= g_rng >> 7;
         g_rng ^= g_rng << 17;
         return (int)((g_rng >> 33) % (uint64_t)n);
}
static void rand_bf16(std::vector<bf16> &b, std::vector<float> &f, size_t n, float scale) {
    b.resize(n);
    f.resize(n);
    for (size_t i = 0; i < n; i++) {
        b[i].x = f32_to_bf16(scale * (irand(2001) - 1000) / 1000.0f);
        f[i]   = bf16_to_f32(b[i].x);
    }
}
static float to_f(bf16 b) { return bf16_to_f32(b.x); }

// Compares got (bf16) with ref (f32); returns the number of elements out of tolerance or NaN.
static int compare(const char *what, const std::vector<bf16> &got, const std::vector<float> &ref,
                   float vmax) {
    int    bad   = 0;
    double worst = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        double g = to_f(got[i]), tol = ldexp(fabs(ref[i]), -8) + ldexp(vmax, -12);
        double e = fabs(g - ref[i]);
        if (!(e <= tol)) {
            if (bad++ < 3)
                printf("    %s: element %zu: %g vs %g\n", what, i, g, ref[i]);
        } else {
            worst = std::max(worst, e / tol);
        }
    }
    printf("  %-4s %-44s worst err/tol %.3f%s\n", bad ? "FAIL" : "ok", what, worst,
           bad ? " (out of tolerance or NaN)" : "");
    g_fail |= bad != 0;
    return bad;
}
static void same_bits(const char *what, const bf16 *a, const bf16 *b, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff += a[i].x != b[i].x;
    printf("  %-4s %-44s %zu of %zu differ\n", diff ? "FAIL" : "ok", what, diff, n);
    g_fail |= diff != 0;
}

static std::vector<bf16> run_prefill(const std::vector<bf16>    &qkv,
                                     const std::vector<int32_t> &q_off, int max_len, int n_heads,
                                     int n_kv, int hd, int window) {
    std::vector<bf16> out((size_t)q_off.back() * n_heads * hd, bf16{0xFFFF});
    cudaError_t       e =
        cuda_attention_prefill(out.data(), qkv.data(), q_off.data(), (int)q_off.size() - 1, max_len,
                               n_heads, n_kv, hd, window, nullptr);
    if (e != cudaSuccess) {
        printf("  FAIL cuda_attention_prefill returned %d\n", e);
        g_fail = 1;
    }
    return out;
}

static void case_prefill(int n_heads, int n_kv, int hd, int window, std::vector<int> lens) {
    int                  stride = (n_heads + 2 * n_kv) * hd, max_len = 0;
    std::vector<int32_t> q_off(1, 0);
    for (int l : lens) {
        q_off.push_back(q_off.back() + l);
        max_len = std::max(max_len, l);
    }
    int rows = q_off.back();
    printf("prefill h=%d/%d hd=%d window=%d rows=%d\n", n_heads, n_kv, hd, window, rows);
    std::vector<bf16>  qkv;
    std::vector<float> qkv_f;
    rand_bf16(qkv, qkv_f, (size_t)rows * stride, 1.0f);
    float vmax = 0;
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < n_heads * hd; j++) {
            size_t i = (size_t)r * stride + j;
            qkv[i].x = f32_to_bf16(3.0f * qkv_f[i]);
            qkv_f[i] = bf16_to_f32(qkv[i].x);
        }
        for (int j = 0; j < n_kv * hd; j++)
            vmax = std::max(vmax, fabsf(qkv_f[(size_t)r * stride + (n_heads + n_kv) * hd + j]));
    }
    std::vector<bf16>  got = run_prefill(qkv, q_off, max_len, n_heads, n_kv, hd, window);
    std::vector<float> ref((size_t)rows * n_heads * hd);
    attention_varlen_forward(ref.data(), qkv_f.data(), qkv_f.data() + (size_t)n_heads * hd,
                             qkv_f.data() + (size_t)(n_heads + n_kv) * hd, q_off.data(),
                             (int)lens.size(), n_heads, n_kv, hd, stride, stride, window);
    compare("vs CPU reference", got, ref, vmax);
    for (size_t s = 0; s < lens.size(); s++) {
        if (!lens[s])
            continue;
        std::vector<bf16> sub(qkv.begin() + (size_t)q_off[s] * stride,
                              qkv.begin() + (size_t)q_off[s + 1] * stride);
        std::vector<bf16> one = run_prefill(sub, {0, lens[s]}, lens[s], n_heads, n_kv, hd, window);
        char              what[64];
        snprintf(what, sizeof what, "sequence %zu alone == in batch", s);
        same_bits(what, one.data(), got.data() + (size_t)q_off[s] * n_heads * hd, one.size());
    }
    if (max_len > 1) { // a max_len below the longest sequence: what no block covers is NaN
        std::vector<bf16> cut = run_prefill(qkv, q_off, max_len - 1, n_heads, n_kv, hd, window);
        attn_plan         pl;
        attn_plan_prefill(&pl, (int)lens.size(), max_len - 1, n_heads, n_kv, hd, window, NULL);
        int    covered = pl.geom.row_tiles * pl.geom.rows_per_block;
        size_t wrong = 0, total = 0;
        for (size_t s = 0; s < lens.size(); s++)
            for (size_t i = (size_t)q_off[s] * n_heads * hd;
                 i < (size_t)q_off[s + 1] * n_heads * hd; i++, total++)
                wrong += isnan(to_f(cut[i])) != (lens[s] > covered);
        printf("  %-4s %-44s %zu of %zu wrong\n", wrong ? "FAIL" : "ok",
               "max_len too small: NaN exactly where uncovered", wrong, total);
        g_fail |= wrong != 0;
    }
}

struct paged {
    std::vector<int32_t> q_off, start_pos, table;
    int                  n_seqs, rows, max_blocks, block_tokens, n_blocks, max_ctx;
};
static paged paged_new(const std::vector<int> &lens, const std::vector<int> &starts, int bt) {
    paged p;
    p.n_seqs       = (int)lens.size();
    p.block_tokens = bt;
    p.q_off.assign(1, 0);
    p.max_ctx = 0;
    int used  = 0;
    for (int s = 0; s < p.n_seqs; s++) {
        p.q_off.push_back(p.q_off.back() + lens[s]);
        p.start_pos.push_back(starts[s]);
        p.max_ctx = std::max(p.max_ctx, starts[s] + lens[s]);
        used += (starts[s] + lens[s] + bt - 1) / bt;
    }
    p.rows       = p.q_off.back();
    p.max_blocks = (p.max_ctx + bt - 1) / bt;
    std::vector<int32_t> ids(used);
    for (int i = 0; i < used; i++)
        ids[i] = i;
    for (int i = used - 1; i > 0; i--)
        std::swap(ids[i], ids[irand(i + 1)]);
    p.n_blocks = used + 1; // the last: a spare, NaN, where the table has no block
    p.table.assign((size_t)p.n_seqs * p.max_blocks, used);
    int k = 0;
    for (int s = 0; s < p.n_seqs; s++)
        for (int b = 0; b < (starts[s] + lens[s] + bt - 1) / bt; b++)
            p.table[(size_t)s * p.max_blocks + b] = ids[k++];
    return p;
}

static std::vector<bf16> run_paged(const paged &p, const bf16 *qkv, const std::vector<bf16> &kp,
                                   const std::vector<bf16> &vp, int n_heads, int n_kv, int hd,
                                   int window, int split) {
    size_t pb = cuda_attention_paged_partial_bytes(p.rows, n_heads, hd, p.max_ctx, split);
    std::vector<float> part(pb / 4 + 1, NAN);
    std::vector<bf16>  out((size_t)p.rows * n_heads * hd, bf16{0xFFFF});
    cudaError_t        e = cuda_attention_paged(
               out.data(), qkv, kp.data(), vp.data(), p.table.data(), p.max_blocks, p.block_tokens,
               p.q_off.data(), p.start_pos.data(), p.n_seqs, p.rows, p.max_ctx, n_heads, n_kv, hd, window,
               split, pb ? part.data() : nullptr, nullptr);
    if (e != cudaSuccess) {
        printf("  FAIL cuda_attention_paged returned %d\n", e);
        g_fail = 1;
    }
    return out;
}

static void case_paged(int n_heads, int n_kv, int hd, int window, int split, std::vector<int> lens,
                       std::vector<int> starts) {
    paged  p      = paged_new(lens, starts, 16);
    int    stride = (n_heads + 2 * n_kv) * hd, kv_dim = n_kv * hd;
    size_t pool_n = (size_t)p.n_blocks * p.block_tokens * kv_dim;
    printf("paged h=%d/%d hd=%d window=%d split=%d rows=%d max_ctx=%d\n", n_heads, n_kv, hd, window,
           split, p.rows, p.max_ctx);
    std::vector<bf16>  qkv, kp, vp;
    std::vector<float> qkv_f, kp_f, vp_f;
    rand_bf16(qkv, qkv_f, (size_t)p.rows * stride, 3.0f);
    rand_bf16(kp, kp_f, pool_n, 1.0f);
    rand_bf16(vp, vp_f, pool_n, 1.0f);
    std::vector<char> live((size_t)p.n_blocks * p.block_tokens, 0);
    for (int s = 0; s < p.n_seqs; s++)
        for (int t = 0; t < starts[s] + lens[s]; t++)
            live[(size_t)p.table[(size_t)s * p.max_blocks + t / 16] * 16 + t % 16] = 1;
    float vmax = 0;
    for (size_t row = 0; row < live.size(); row++)
        for (int j = 0; j < kv_dim; j++) {
            size_t i = row * kv_dim + j;
            if (live[row])
                vmax = std::max(vmax, fabsf(vp_f[i]));
            else
                kp[i].x = vp[i].x = 0xFFFF; // NaN: read only by a kernel that overreaches
        }
    std::vector<bf16>  got = run_paged(p, qkv.data(), kp, vp, n_heads, n_kv, hd, window, split);
    std::vector<float> ref((size_t)p.rows * n_heads * hd);
    attention_paged_forward(ref.data(), qkv_f.data(), kp_f.data(), vp_f.data(), p.table.data(),
                            p.max_blocks, p.block_tokens, p.q_off.data(), p.start_pos.data(),
                            p.n_seqs, n_heads, n_kv, hd, stride, window);
    compare("vs CPU reference", got, ref, vmax);
    for (int s = 0; s < p.n_seqs; s++) {
        if (!lens[s])
            continue;
        paged one            = p;
        one.n_seqs           = 1;
        one.rows             = lens[s];
        one.max_ctx          = starts[s] + lens[s];
        one.q_off            = {0, lens[s]};
        one.start_pos        = {starts[s]};
        one.table            = std::vector<int32_t>(p.table.begin() + (size_t)s * p.max_blocks,
                                         p.table.begin() + (size_t)(s + 1) * p.max_blocks);
        std::vector<bf16> o1 = run_paged(one, qkv.data() + (size_t)p.q_off[s] * stride, kp, vp,
                                         n_heads, n_kv, hd, window, split);
        char              what[64];
        snprintf(what, sizeof what, "sequence %d alone == in batch", s);
        same_bits(what, o1.data(), got.data() + (size_t)p.q_off[s] * n_heads * hd, o1.size());
    }
}

// Fresh sequences (start 0) with their keys in the pool: the paged kernel in one chunk gives
// the prefill kernel's bits.
static void case_paged_equals_prefill(int n_heads, int n_kv, int hd, int window,
                                      std::vector<int> lens) {
    std::vector<int> starts(lens.size(), 0);
    paged            p      = paged_new(lens, starts, 16);
    int              stride = (n_heads + 2 * n_kv) * hd, kv_dim = n_kv * hd;
    printf("paged (one chunk) vs prefill h=%d/%d hd=%d window=%d rows=%d\n", n_heads, n_kv, hd,
           window, p.rows);
    std::vector<bf16>  qkv;
    std::vector<float> qkv_f;
    rand_bf16(qkv, qkv_f, (size_t)p.rows * stride, 3.0f);
    std::vector<bf16> kp((size_t)p.n_blocks * 16 * kv_dim, bf16{0xFFFF}), vp = kp;
    for (int s = 0; s < p.n_seqs; s++)
        for (int i = 0; i < lens[s]; i++) {
            size_t row = (size_t)p.table[(size_t)s * p.max_blocks + i / 16] * 16 + i % 16;
            for (int d = 0; d < kv_dim; d++) {
                size_t r             = (size_t)(p.q_off[s] + i) * stride;
                kp[row * kv_dim + d] = qkv[r + (size_t)n_heads * hd + d];
                vp[row * kv_dim + d] = qkv[r + (size_t)(n_heads + n_kv) * hd + d];
            }
        }
    int               split = (p.max_ctx + 31) / 32 * 32;
    std::vector<bf16> a     = run_paged(p, qkv.data(), kp, vp, n_heads, n_kv, hd, window, split);
    std::vector<bf16> b     = run_prefill(qkv, p.q_off, *std::max_element(lens.begin(), lens.end()),
                                          n_heads, n_kv, hd, window);
    same_bits("paged == prefill", a.data(), b.data(), a.size());
}

int main() {
    setvbuf(stdout, NULL, _IOLBF, 0); // progress shows even when a run is cut short
    // prefill: MHA, GQA, MQA with a window, head dims 64 / 80 / 128 and two generic ones (96;
    // 256, over 48 KiB of shared memory), a group wider than a block (20 heads per KV head)
    case_prefill(4, 4, 64, 0, {1, 17, 5});
    case_prefill(8, 2, 80, 0, {33, 0, 40});
    case_prefill(6, 1, 128, 16, {70, 3});
    case_prefill(14, 2, 64, 5, {20, 9});
    case_prefill(4, 2, 96, 0, {37});
    case_prefill(2, 1, 256, 0, {34});
    case_prefill(40, 2, 64, 0, {9, 3});
    // paged: decode rows, chunked prefill on a context, windows, splits that are and are not
    // multiples of the key tile, one chunk and many
    case_paged(4, 2, 64, 0, 64, {1, 1, 1, 1}, {0, 63, 64, 200});
    case_paged(8, 1, 128, 0, 512, {1, 1, 1}, {10, 300, 511});
    case_paged(4, 4, 64, 0, 64, {7, 33}, {100, 20});
    case_paged(8, 2, 80, 32, 64, {16, 1}, {50, 90});
    case_paged(14, 2, 64, 0, 50, {5, 0, 3}, {120, 7, 77});
    case_paged(6, 3, 96, 40, 7, {4, 2}, {60, 30});
    case_paged(40, 2, 64, 0, 32, {2, 1}, {70, 40});
    case_paged_equals_prefill(8, 2, 64, 0, {40, 7, 1});
    case_paged_equals_prefill(6, 1, 80, 9, {50});
    printf("attn_emu: %s (%d kernel launches)\n", g_fail ? "FAIL" : "all checks passed",
           emu_launches);
    return g_fail;
}
