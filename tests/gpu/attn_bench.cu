// tests/gpu/attn_bench.cu — times the CUDA attention kernels (kernels/cuda/attention.cu) on
// model-shaped problems with cudaEvents, and checks the two properties the timing relies on:
// no NaN in any output, and the paged kernel with a single chunk giving the prefill kernel's
// bits (they share one reduction order; tests/gpu/ops_check.cu does parity with the CPU).
//
//   build/gpu/attn_bench [--quick]        (make gpu-attn-bench builds it; needs a GPU)
//
// Prints one line per case: shape, mean time over 10 runs after 2 warm-ups, and the rate that
// matters for it (prefill: attention TFLOP/s counting 4 * hd flops per visible (query, key)
// pair; decode: GB/s of K and V read, the bound for decode). Exit 1 on a failed check.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "kernels/cuda/ops.cuh"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,                   \
                    cudaGetErrorString(e_));                                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int g_fail = 0;

// Uniform in [-scale, scale), from a hash of the index: the same data on every run.
__global__ void fill_kernel(bf16 *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        h *= 0x846ca68bu;
        h ^= h >> 16;
        p[i] = __float2bfloat16_rn(scale * ((float)(h >> 8) / 8388608.0f - 1.0f));
    }
}

// Copies the k and v of each packed row into the pools at its position (what rope_kv does).
__global__ void store_kernel(bf16 *k_pool, bf16 *v_pool, const bf16 *qkv, const int32_t *q_off,
                             const int32_t *start_pos, const int32_t *table, int n_seqs,
                             int max_blocks, int block_tokens, int n_heads, int n_kv, int hd) {
    int s = blockIdx.y, kv_dim = n_kv * hd, stride = (n_heads + 2 * n_kv) * hd;
    if (s >= n_seqs)
        return;
    for (int r = q_off[s] + blockIdx.x; r < q_off[s + 1]; r += gridDim.x) {
        int    p = start_pos[s] + r - q_off[s];
        size_t row =
            (size_t)table[s * max_blocks + p / block_tokens] * block_tokens + p % block_tokens;
        for (int d = threadIdx.x; d < kv_dim; d += blockDim.x) {
            k_pool[row * kv_dim + d] = qkv[(size_t)r * stride + (size_t)n_heads * hd + d];
            v_pool[row * kv_dim + d] = qkv[(size_t)r * stride + (size_t)(n_heads + n_kv) * hd + d];
        }
    }
}

struct dev {
    void *p = nullptr;
    dev(size_t bytes) { CK(cudaMalloc(&p, bytes ? bytes : 1)); }
    ~dev() { cudaFree(p); }
    dev(const dev &)            = delete;
    dev &operator=(const dev &) = delete;
};

template <typename T> static void put(dev &d, const std::vector<T> &v) {
    CK(cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
}

static void fill(dev &d, size_t n, uint32_t seed, float scale) {
    fill_kernel<<<1024, 256>>>((bf16 *)d.p, n, seed, scale);
    CK(cudaGetLastError());
}

static std::vector<uint16_t> get_bf16(const dev &d, size_t n) {
    std::vector<uint16_t> v(n);
    CK(cudaMemcpy(v.data(), d.p, n * 2, cudaMemcpyDeviceToHost));
    return v;
}

static int count_nan(const std::vector<uint16_t> &v) {
    int n = 0;
    for (uint16_t x : v)
        n += (x & 0x7f80) == 0x7f80 && (x & 0x7f);
    return n;
}

// Mean milliseconds of `run` over 10 timed calls after 2 warm-ups.
template <typename F> static double time_ms(F run) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 2; i++)
        CK(run());
    CK(cudaEventRecord(a));
    for (int i = 0; i < 10; i++)
        CK(run());
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return ms / 10.0;
}

struct model_shape {
    const char *name;
    int         n_heads, n_kv, hd;
};

// A batch of n_seqs sequences of `len` new rows on `ctx` cached tokens each, paged in blocks of
// 16 tokens handed out in a scattered order.
struct batch {
    int                  n_seqs, rows, max_ctx, max_blocks, n_blocks, block_tokens = 16;
    std::vector<int32_t> q_off, start_pos, table;
    batch(int n, int len, int ctx) : n_seqs(n) {
        rows       = n * len;
        max_ctx    = ctx + len;
        max_blocks = (max_ctx + block_tokens - 1) / block_tokens;
        n_blocks   = n * max_blocks;
        for (int s = 0; s <= n; s++)
            q_off.push_back(s * len);
        start_pos.assign(n, ctx);
        table.resize((size_t)n_blocks);
        // i * 7919 mod n_blocks: a permutation while n_blocks is no multiple of the prime 7919
        for (int i = 0; i < n_blocks; i++)
            table[i] = (int32_t)(((int64_t)i * 7919) % n_blocks);
    }
};

static void bench_prefill(const model_shape &m, int n_seqs, int len) {
    int    stride = (m.n_heads + 2 * m.n_kv) * m.hd, rows = n_seqs * len;
    batch  b(n_seqs, len, 0);
    dev    qkv((size_t)rows * stride * 2), out((size_t)rows * m.n_heads * m.hd * 2);
    dev    qoff(b.q_off.size() * 4), start(b.start_pos.size() * 4), tab(b.table.size() * 4);
    size_t pool_n = (size_t)b.n_blocks * b.block_tokens * m.n_kv * m.hd;
    dev    kp(pool_n * 2), vp(pool_n * 2), out2((size_t)rows * m.n_heads * m.hd * 2);
    put(qoff, b.q_off);
    put(start, b.start_pos);
    put(tab, b.table);
    fill(qkv, (size_t)rows * stride, 1234u + m.hd, 2.0f);
    double ms = time_ms([&] {
        return cuda_attention_prefill((bf16 *)out.p, (const bf16 *)qkv.p, (const int32_t *)qoff.p,
                                      n_seqs, len, m.n_heads, m.n_kv, m.hd, 0, 0);
    });
    CK(cudaDeviceSynchronize());
    double pairs = (double)n_seqs * len * (len + 1) / 2.0 * m.n_heads;
    printf("prefill  %-10s %3d x %5d tokens        %9.1f us  %6.2f TFLOP/s\n", m.name, n_seqs, len,
           ms * 1e3, pairs * 4.0 * m.hd / (ms * 1e-3) / 1e12);
    std::vector<uint16_t> o = get_bf16(out, (size_t)rows * m.n_heads * m.hd);

    // The same rows through the paged kernel, one chunk (split >= every position): same bits.
    store_kernel<<<dim3(64, n_seqs), 256>>>((bf16 *)kp.p, (bf16 *)vp.p, (const bf16 *)qkv.p,
                                            (const int32_t *)qoff.p, (const int32_t *)start.p,
                                            (const int32_t *)tab.p, n_seqs, b.max_blocks,
                                            b.block_tokens, m.n_heads, m.n_kv, m.hd);
    CK(cudaGetLastError());
    int split = ((b.max_ctx + 31) / 32) * 32;
    if (cuda_attention_paged_partial_bytes(rows, m.n_heads, m.hd, b.max_ctx, split) != 0) {
        printf("  FAIL: one chunk should need no partial scratch\n");
        g_fail = 1;
    }
    CK(cuda_attention_paged((bf16 *)out2.p, (const bf16 *)qkv.p, (const bf16 *)kp.p,
                            (const bf16 *)vp.p, (const int32_t *)tab.p, b.max_blocks,
                            b.block_tokens, (const int32_t *)qoff.p, (const int32_t *)start.p,
                            n_seqs, rows, b.max_ctx, m.n_heads, m.n_kv, m.hd, 0, split, nullptr,
                            0));
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> o2  = get_bf16(out2, o.size());
    int                   nan = count_nan(o), diff = 0;
    for (size_t i = 0; i < o.size(); i++)
        diff += o[i] != o2[i];
    printf("  %s: %d NaN, paged (one chunk) == prefill: %d of %zu elements differ\n",
           nan || diff ? "FAIL" : "ok", nan, diff, o.size());
    g_fail |= nan || diff;
}

static void bench_paged(const model_shape &m, int n_seqs, int len, int ctx, int split) {
    int    stride = (m.n_heads + 2 * m.n_kv) * m.hd;
    batch  b(n_seqs, len, ctx);
    size_t pool_n = (size_t)b.n_blocks * b.block_tokens * m.n_kv * m.hd;
    dev    qkv((size_t)b.rows * stride * 2), out((size_t)b.rows * m.n_heads * m.hd * 2);
    dev    kp(pool_n * 2), vp(pool_n * 2);
    dev    qoff(b.q_off.size() * 4), start(b.start_pos.size() * 4), tab(b.table.size() * 4);
    size_t pbytes = cuda_attention_paged_partial_bytes(b.rows, m.n_heads, m.hd, b.max_ctx, split);
    dev    part(pbytes);
    put(qoff, b.q_off);
    put(start, b.start_pos);
    put(tab, b.table);
    fill(qkv, (size_t)b.rows * stride, 99u + m.hd, 2.0f);
    fill(kp, pool_n, 7u, 1.0f);
    fill(vp, pool_n, 8u, 1.0f);
    auto run = [&](int sk, void *o, void *pp) {
        return cuda_attention_paged((bf16 *)o, (const bf16 *)qkv.p, (const bf16 *)kp.p,
                                    (const bf16 *)vp.p, (const int32_t *)tab.p, b.max_blocks,
                                    b.block_tokens, (const int32_t *)qoff.p,
                                    (const int32_t *)start.p, n_seqs, b.rows, b.max_ctx, m.n_heads,
                                    m.n_kv, m.hd, 0, sk, (float *)pp, 0);
    };
    double ms = time_ms([&] { return run(split, out.p, part.p); });
    CK(cudaDeviceSynchronize());
    double bytes = (double)n_seqs * (ctx + len) * m.n_kv * m.hd * 2 * 2;
    printf("paged    %-10s %3d x %3d rows on %5d    %9.1f us  %6.0f GB/s of K+V  (split %d)\n",
           m.name, n_seqs, len, ctx, ms * 1e3, bytes / (ms * 1e-3) / 1e9, split);
    std::vector<uint16_t> o = get_bf16(out, (size_t)b.rows * m.n_heads * m.hd);

    // Another split moves a result by rounding only: within 2^-7 of max|v| = 1 (a bf16 ulp of
    // the output twice over, ops_check's attention tolerance).
    dev out2((size_t)b.rows * m.n_heads * m.hd * 2);
    CK(run(((b.max_ctx + 31) / 32) * 32, out2.p, nullptr));
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> o2  = get_bf16(out2, o.size());
    double                big = 0;
    for (size_t i = 0; i < o.size(); i++) {
        float    x, y;
        uint32_t bx = (uint32_t)o[i] << 16, by = (uint32_t)o2[i] << 16;
        memcpy(&x, &bx, 4);
        memcpy(&y, &by, 4);
        big = fmax(big, fabs((double)x - y));
    }
    int nan = count_nan(o);
    printf("  %s: %d NaN, split %d vs one chunk: max |diff| %.3g\n",
           nan || !(big <= 1.0 / 128) ? "FAIL" : "ok", nan, split, big);
    g_fail |= nan || !(big <= 1.0 / 128);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        fprintf(stderr, "attn_bench: no CUDA device\n");
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("attn_bench on %s (SIMT fp32 attention kernels)\n", prop.name);
    const model_shape shapes[] = {
        {"llama-1b", 32, 8, 64}, {"qwen-0.5b", 14, 2, 64}, {"llama-8b", 32, 8, 128}};
    for (const model_shape &m : shapes) {
        bench_prefill(m, quick ? 2 : 8, quick ? 256 : 1024);
        if (!quick)
            bench_prefill(m, 1, 4096);
        int batches[] = {1, 32, 256};
        for (int nb : batches)
            bench_paged(m, quick ? (nb > 4 ? 4 : nb) : nb, 1, quick ? 300 : 2048,
                        256);                           // ATTN_SPLIT_KEYS_DEFAULT
        bench_paged(m, 4, 64, quick ? 200 : 1024, 256); // continuations on a shared-size context
    }
    printf("attn_bench: %s\n", g_fail ? "FAIL" : "all checks passed");
    return g_fail;
}
