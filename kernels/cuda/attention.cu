// kernels/cuda/attention.cu — causal GQA attention on the GPU: packed variable-length prefill
// (cuda_attention_prefill) and new rows against the paged KV cache, split at a fixed number of
// keys (cuda_attention_paged). The CPU reference is kernels/cpu/attention.c; launch shapes come
// from kernels/cuda/attn_plan.c (unit-tested on the CPU).
//
// Method. Both entry points run one kernel template, flash-attention style, in plain SIMT fp32
// (no tensor cores): a block of 4 warps holds ATTN_SLOTS = 16 query slots, (row, query head)
// pairs of one sequence and one KV head, in shared memory, walks the keys in tiles of 32
// (K, transposed, and V converted from bf16 to fp32 in shared memory), and keeps an fp32 online
// softmax per query in registers. Lane j of a warp owns key j of the tile for the scores and dims
// d = lane + 32t of the output. There is never an S x S matrix. SIMT rather than mma.sync,
// because this was written without a GPU to debug on: simple to get right, at a cost. Expect
// ~10-20 TFLOP/s on an H100/H200, 10-30x below a tensor-core flash kernel; at 1k tokens
// attention is ~3% of a 1B model's FLOPs but would then take about as long as all its GEMMs, so
// a tensor-core version of the same tiling is the next step for the scoring throughput goal.
// Decode reads the whole cache once per KV head either way and is bound by that.
//
// Reduction order (fixed; what every bit of a query's result depends on):
//   per key tile (absolute positions: tile = 32 keys starting at a multiple of 32 from the chunk
//   start, which is a multiple of split_keys, or 0 for prefill):
//     s_j   = fmaf chain of q[d] * k_j[d], d ascending, then * (1/sqrtf(hd))   (masked: -inf)
//     m_t   = max over the tile (xor butterfly); m' = max(m, m_t)
//     alpha = expf(m - m'), p_j = expf(s_j - m')       (IEEE expf, no fast math)
//     l     = l * alpha + (xor-butterfly sum of p_j, 5 levels)
//     acc_d = acc_d * alpha, then fmaf(p_j, v_j[d], acc_d) for j = 0..31 in order
//   a tile where the query sees no key is skipped, so tiles a block visits for other queries
//   change nothing. out = acc / l (+0.0f, so an exact zero is always +0) rounded to bf16 (RNE).
//   Paged, a query whose keys span chunks c0..c1 (chunk c = keys c*split_keys ..): each chunk
//   leaves (m_c, l_c, acc_c) in fp32; merge: M = max m_c; w_c = expf(m_c - M);
//   L = fmaf(l_c, w_c, L) and A_d = fmaf(acc_c[d], w_c, A_d), c ascending; out = A / L.
// So a row's result depends on its own query, keys and position alone: not on the batch, the
// other rows of its block, or the number of rows (bitwise). A query whose keys fit one chunk of
// the paged kernel gets the prefill kernel's bits exactly when split_keys % 32 == 0.
//
// Tolerance vs the CPU reference (given these bf16 inputs widened to f32; it computes in f32
// with plain softmax, keys in order, the sum of weights in double). The two differ only by
// association: each score carries at most gamma_hd = hd * 2^-24 relative error of
// scale * sum_d |q_d k_d|, which moves the normalised weights, so the output, by at most
// 2 * gamma_hd * scale * max sum_d |q_d k_d| * max|v| (<= 5e-4 * max|v| for |q| <= 3,
// |k| <= 1, hd = 128, a worst case; tests/test_attn_plan.c's C model of this order measures
// <= 3e-7 * max|v| on such inputs, with and without chunk merges); then the bf16 output
// rounding, half an ulp: up to 2^-8 relative. Expect |gpu - cpu| <= 2^-8 * |cpu| + 2^-12 *
// max|v| (tests/gpu/ops_check.cu's tolerance; the model meets it, and so does this source run
// on the CPU by tests/gpu/attn_emu.cc: worst error 0.89 of that).
//
// Preconditions the kernel cannot check on the host (device data): q_off ascending, sequence
// lengths <= max_len (prefill), positions start_pos[s] + i < max_ctx (paged), block table
// entries valid. A sequence longer than max_len, or a position at or past max_ctx, gives NaN in
// those rows (and never a read past the block table), so parity tests fail loudly.
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/attn_plan.h"
#include "kernels/cuda/ops.cuh"

namespace {

constexpr unsigned FULL_MASK = 0xffffffffu;

struct attn_args {
    attn_geom      ge;
    bf16          *out;
    const bf16    *qkv;
    const bf16    *k_pool, *v_pool;
    const int32_t *block_table, *q_off, *start_pos;
    float         *partial;
    int            max_blocks, block_tokens;
    int            vec16; // K and V bases 16-byte aligned: the templated kernels load 8 at once
    float          scale;
};

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// The xor butterfly leaves the same bits in every lane (each level adds the same two values,
// and fp addition is commutative).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Element offset of key position kpos's row (its KV head's slice starts there): the paged pool
// row through the block table, or the packed qkv row.
template <bool PAGED>
__device__ __forceinline__ size_t key_offset(const attn_args &a, const attn_block &b, int row0,
                                             int kpos, int q_stride, int kv_dim) {
    if (PAGED) {
        const int blk = a.block_table[(size_t)b.s * a.max_blocks + kpos / a.block_tokens];
        return ((size_t)blk * a.block_tokens + kpos % a.block_tokens) * kv_dim;
    }
    return (size_t)(row0 + kpos) * q_stride;
}

// One block: the work attn_block_decode gives it (rows x query heads of one KV head; the keys
// of one chunk, paged, or all, prefill). HD: the head dim, 0 for any (<= ATTN_MAX_HD).
template <int HD, bool PAGED>
__global__ void __launch_bounds__(ATTN_THREADS) attn_kernel(const attn_args a) {
    constexpr int     QW = ATTN_SLOTS_PER_WARP;
    constexpr int     T  = HD ? (HD + 31) / 32 : ATTN_MAX_HD / 32; // output dims per lane
    const attn_geom  &ge = a.ge;
    const int         hd = HD ? HD : ge.hd;
    constexpr int     KS = ATTN_KEY_STRIDE;
    extern __shared__ __align__(16) float smem[];
    float *const q_s  = smem;                  // ATTN_SLOTS x hd (16-byte rows when hd % 4 == 0)
    float *const k_s  = q_s + ATTN_SLOTS * hd; // hd x KS: the key tile transposed
    float *const v_s  = k_s + hd * KS;         // ATTN_KEY_TILE x hd
    const int    warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int    q_stride = (ge.n_heads + 2 * ge.n_kv_heads) * hd; // qkv row (elements)
    const int    kv_dim   = ge.n_kv_heads * hd;                    // pool row (elements)

    attn_block b;
    const int  work =
        attn_block_decode(&b, &ge, a.q_off, a.start_pos, blockIdx.x, blockIdx.y, blockIdx.z);
    const int row0 = b.s < ge.n_seqs ? a.q_off[b.s] : 0;
    if (b.poison_i1 > b.poison_i0) {
        const int n = (b.poison_i1 - b.poison_i0) * b.nh * hd;
        for (int e = threadIdx.x; e < n; e += ATTN_THREADS) {
            const int u = e / hd, d = e % hd;
            const int i = b.poison_i0 + u / b.nh, h = b.g * ge.group + b.hb + u % b.nh;
            a.out[(size_t)(row0 + i) * ge.n_heads * hd + (size_t)h * hd + d] =
                __float2bfloat16_rn(NAN);
        }
    }
    if (!work)
        return; // uniform over the block: no barrier is skipped by some threads only

    // This warp's slots u = warp + ATTN_WARPS * q, q < nq; visible keys qa[q] .. qb[q].
    const int n_slots = b.nr * b.nh;
    const int nq = n_slots > warp ? min(QW, (n_slots - warp + ATTN_WARPS - 1) / ATTN_WARPS) : 0;
    int       qa[QW], qb[QW];
#pragma unroll
    for (int q = 0; q < QW; q++) {
        qa[q] = 1;
        qb[q] = 0;
        if (q < nq) {
            int i, h;
            attn_slot(&i, &h, &b, &ge, warp + ATTN_WARPS * q);
            attn_query_keys(&qa[q], &qb[q], &b, &ge, b.start + i);
        }
    }

    for (int e = threadIdx.x; e < ATTN_SLOTS * hd; e += ATTN_THREADS) {
        const int u = e / hd, d = e - u * hd;
        float     x = 0.0f;
        if (u < n_slots) {
            int i, h;
            attn_slot(&i, &h, &b, &ge, u);
            x = __bfloat162float(a.qkv[(size_t)(row0 + i) * q_stride + (size_t)h * hd + d]);
        }
        q_s[e] = x;
    }

    const bf16 *k_src =
        PAGED ? a.k_pool + (size_t)b.g * hd : a.qkv + (size_t)(ge.n_heads + b.g) * hd;
    const bf16 *v_src = PAGED ? a.v_pool + (size_t)b.g * hd
                              : a.qkv + (size_t)(ge.n_heads + ge.n_kv_heads + b.g) * hd;

    float m[QW], l[QW], acc[QW][T];
#pragma unroll
    for (int q = 0; q < QW; q++) {
        m[q] = -INFINITY;
        l[q] = 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++)
            acc[q][t] = 0.0f;
    }

    for (int kt = b.t0; kt <= b.hi; kt += ATTN_KEY_TILE) {
        __syncthreads(); // the previous tile (the first time: nothing) is consumed
        if (HD % 8 == 0 && HD && a.vec16) {
            // 16-byte loads, 8 dims of one key each: thread e of the tile takes key e / (HD/8),
            // dims 8 * (e % (HD/8)) .. + 7 (every row offset is a multiple of 8 elements, and
            // the launcher checked the base pointers)
            constexpr int PER = HD >= 8 ? HD / 8 : 1; // (HD 0: a branch never taken)
            for (int e = threadIdx.x; e < ATTN_KEY_TILE * PER; e += ATTN_THREADS) {
                const int j = e / PER, d0 = 8 * (e % PER), kpos = kt + j;
                uint4     kw = {0, 0, 0, 0}, vw = {0, 0, 0, 0};
                if (kpos >= b.lo && kpos <= b.hi) {
                    const size_t off = key_offset<PAGED>(a, b, row0, kpos, q_stride, kv_dim);
                    kw               = *reinterpret_cast<const uint4 *>(k_src + off + d0);
                    vw               = *reinterpret_cast<const uint4 *>(v_src + off + d0);
                }
                const unsigned kk[4] = {kw.x, kw.y, kw.z, kw.w}, vv4[4] = {vw.x, vw.y, vw.z, vw.w};
#pragma unroll
                for (int t = 0; t < 4; t++) { // bf16 -> f32 is exact: the bits moved up
                    k_s[(d0 + 2 * t) * KS + j]     = __uint_as_float(kk[t] << 16);
                    k_s[(d0 + 2 * t + 1) * KS + j] = __uint_as_float(kk[t] & 0xffff0000u);
                    v_s[j * HD + d0 + 2 * t]       = __uint_as_float(vv4[t] << 16);
                    v_s[j * HD + d0 + 2 * t + 1]   = __uint_as_float(vv4[t] & 0xffff0000u);
                }
            }
        } else {
            for (int j = warp; j < ATTN_KEY_TILE; j += ATTN_WARPS) {
                const int    kpos = kt + j;
                const bool   ok   = kpos >= b.lo && kpos <= b.hi;
                const size_t off  = ok ? key_offset<PAGED>(a, b, row0, kpos, q_stride, kv_dim) : 0;
                // Keys outside the block's range are zeros, never stale shared memory: their
                // weight is 0, and 0 * NaN would not be.
                for (int d = lane; d < hd; d += 32) {
                    k_s[d * KS + j] = ok ? __bfloat162float(k_src[off + d]) : 0.0f;
                    v_s[j * hd + d] = ok ? __bfloat162float(v_src[off + d]) : 0.0f;
                }
            }
        }
        __syncthreads();
        if (nq == 0)
            continue;

        float sc[QW];
#pragma unroll
        for (int q = 0; q < QW; q++)
            sc[q] = 0.0f;
        const float *k_col = k_s + lane; // key `lane`, dim d at k_col[d * KS]
        if (HD % 4 == 0 && HD) {
            // Four dims at a time: one 16-byte broadcast read of each query serves four fmas
            // (the chain over d is the same as below, so are the bits).
            for (int d = 0; d < hd; d += 4) {
                const float k0 = k_col[d * KS], k1 = k_col[(d + 1) * KS];
                const float k2 = k_col[(d + 2) * KS], k3 = k_col[(d + 3) * KS];
#pragma unroll
                for (int q = 0; q < QW; q++)
                    if (q < nq) {
                        const float4 qv = *reinterpret_cast<const float4 *>(
                            q_s + (warp + ATTN_WARPS * q) * hd + d);
                        sc[q] = fmaf(qv.x, k0, sc[q]);
                        sc[q] = fmaf(qv.y, k1, sc[q]);
                        sc[q] = fmaf(qv.z, k2, sc[q]);
                        sc[q] = fmaf(qv.w, k3, sc[q]);
                    }
            }
        } else {
            for (int d = 0; d < hd; d++) {
                const float kv = k_col[d * KS];
#pragma unroll
                for (int q = 0; q < QW; q++)
                    if (q < nq)
                        sc[q] = fmaf(q_s[(warp + ATTN_WARPS * q) * hd + d], kv, sc[q]);
            }
        }

        const int kpos = kt + lane;
        float     pr[QW];
        bool      live[QW];
#pragma unroll
        for (int q = 0; q < QW; q++) {
            pr[q]   = 0.0f;
            live[q] = false;
            if (q < nq) { // warp-uniform, like every branch below
                const float sv = kpos >= qa[q] && kpos <= qb[q] ? sc[q] * a.scale : -INFINITY;
                const float mt = warp_max(sv);
                if (mt != -INFINITY) { // a tile this query sees nothing of changes nothing
                    const float mn    = fmaxf(m[q], mt);
                    const float alpha = expf(m[q] - mn);
                    pr[q]             = expf(sv - mn);
                    l[q]              = l[q] * alpha + warp_sum(pr[q]);
                    m[q]              = mn;
                    live[q]           = true;
#pragma unroll
                    for (int t = 0; t < T; t++)
                        acc[q][t] *= alpha;
                }
            }
        }

        for (int j = 0; j < ATTN_KEY_TILE; j++) {
            float vv[T];
#pragma unroll
            for (int t = 0; t < T; t++) {
                const int d = lane + 32 * t;
                vv[t]       = d < hd ? v_s[j * hd + d] : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < QW; q++) {
                if (live[q]) {
                    const float pj = __shfl_sync(FULL_MASK, pr[q], j);
#pragma unroll
                    for (int t = 0; t < T; t++)
                        if (HD || 32 * t < hd)
                            acc[q][t] = fmaf(pj, vv[t], acc[q][t]);
                }
            }
        }
    }

#pragma unroll
    for (int q = 0; q < QW; q++) {
        if (q >= nq)
            continue;
        int i, h;
        attn_slot(&i, &h, &b, &ge, warp + ATTN_WARPS * q);
        const size_t row  = (size_t)(row0 + i);
        const int    kind = attn_query_output(&b, &ge, b.start + i, qa[q] <= qb[q]);
        if (kind == ATTN_OUT_PARTIAL) {
            float *part = a.partial + ((row * ge.n_heads + h) * ge.n_chunks + b.chunk) * (hd + 2);
            if (lane == 0) {
                part[0] = m[q];
                part[1] = l[q];
            }
#pragma unroll
            for (int t = 0; t < T; t++) {
                const int d = lane + 32 * t;
                if (d < hd)
                    part[2 + d] = acc[q][t];
            }
        } else if (kind == ATTN_OUT_DIRECT) {
            bf16 *o = a.out + row * ge.n_heads * hd + (size_t)h * hd;
#pragma unroll
            for (int t = 0; t < T; t++) {
                const int d = lane + 32 * t;
                if (d < hd)
                    o[d] = __float2bfloat16_rn(acc[q][t] / l[q] + 0.0f);
            }
        }
    }
}

// Paged, queries whose keys span several chunks: a warp per (row, head) merges the chunks'
// partials in chunk order.
__global__ void __launch_bounds__(ATTN_THREADS) attn_merge_kernel(const attn_args a, int rows) {
    const attn_geom &ge   = a.ge;
    const int        warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int        pair = blockIdx.x * ATTN_WARPS + warp;
    if (pair >= rows * ge.n_heads)
        return;
    const int r = pair / ge.n_heads, h = pair % ge.n_heads;
    int       c0, c1;
    if (!attn_merge_row(&c0, &c1, &ge, a.q_off, a.start_pos, r))
        return; // written by the main kernel (directly, or NaN)
    const int    w    = ge.hd + 2;
    const float *part = a.partial + ((size_t)r * ge.n_heads + h) * ge.n_chunks * w;
    float        mx   = -INFINITY;
    for (int c = c0; c <= c1; c++)
        mx = fmaxf(mx, part[(size_t)c * w]);
    float sum = 0.0f;
    for (int c = c0; c <= c1; c++)
        sum = fmaf(part[(size_t)c * w + 1], expf(part[(size_t)c * w] - mx), sum);
    bf16 *o = a.out + ((size_t)r * ge.n_heads + h) * ge.hd;
    for (int d = lane; d < ge.hd; d += 32) {
        float acc = 0.0f;
        for (int c = c0; c <= c1; c++)
            acc = fmaf(part[(size_t)c * w + 2 + d], expf(part[(size_t)c * w] - mx), acc);
        o[d] = __float2bfloat16_rn(acc / sum + 0.0f);
    }
}

typedef void (*attn_kernel_fn)(attn_args);

cudaError_t launch_kernel(attn_kernel_fn kernel, const attn_plan &p, const attn_args &a,
                          cudaStream_t s) {
    if (p.smem_bytes > ATTN_SMEM_DEFAULT) {
        cudaError_t e = cudaFuncSetAttribute(
            (const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)p.smem_bytes);
        if (e != cudaSuccess)
            return e;
    }
    kernel<<<dim3(p.grid[0], p.grid[1], p.grid[2]), p.threads, p.smem_bytes, s>>>(a);
    return cudaGetLastError();
}

template <bool PAGED>
cudaError_t launch_attention(const attn_plan &p, const attn_args &a, cudaStream_t s) {
    switch (p.hd_template) {
    case 64: return launch_kernel(attn_kernel<64, PAGED>, p, a, s);
    case 80: return launch_kernel(attn_kernel<80, PAGED>, p, a, s);
    case 128: return launch_kernel(attn_kernel<128, PAGED>, p, a, s);
    default: return launch_kernel(attn_kernel<0, PAGED>, p, a, s);
    }
}

int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

attn_args args_common(bf16 *out, const bf16 *qkv, const int32_t *q_off, const attn_plan &p) {
    attn_args a = {};
    a.ge        = p.geom;
    a.out       = out;
    a.qkv       = qkv;
    a.q_off     = q_off;
    a.scale     = 1.0f / sqrtf((float)p.geom.hd); // as the CPU reference computes it
    return a;
}

} // namespace

extern "C" cudaError_t cuda_attention_prefill(bf16 *out, const bf16 *qkv, const int32_t *q_off,
                                              int n_seqs, int max_len, int n_heads, int n_kv_heads,
                                              int hd, int window, cudaStream_t s) {
    attn_plan p;
    if (attn_plan_prefill(&p, n_seqs, max_len, n_heads, n_kv_heads, hd, window, NULL))
        return cudaErrorInvalidValue;
    if (p.grid[0] == 0)
        return cudaSuccess;
    if (!out || !qkv || !q_off)
        return cudaErrorInvalidValue;
    attn_args a = args_common(out, qkv, q_off, p);
    a.vec16     = aligned16(qkv);
    return launch_attention<false>(p, a, s);
}

extern "C" size_t cuda_attention_paged_partial_bytes(int rows, int n_heads, int hd, int max_ctx,
                                                     int split_keys) {
    return attn_partial_bytes(rows, n_heads, hd, max_ctx, split_keys);
}

extern "C" cudaError_t cuda_attention_paged(bf16 *out, const bf16 *qkv, const bf16 *k_pool,
                                            const bf16 *v_pool, const int32_t *block_table,
                                            int max_blocks, int block_tokens, const int32_t *q_off,
                                            const int32_t *start_pos, int n_seqs, int rows,
                                            int max_ctx, int n_heads, int n_kv_heads, int hd,
                                            int window, int split_keys, float *partial,
                                            cudaStream_t s) {
    attn_plan p;
    if (attn_plan_paged(&p, rows, n_seqs, max_ctx, n_heads, n_kv_heads, hd, window, split_keys,
                        max_blocks, block_tokens, NULL))
        return cudaErrorInvalidValue;
    if (p.grid[0] == 0)
        return cudaSuccess;
    if (!out || !qkv || !k_pool || !v_pool || !block_table || !q_off || !start_pos ||
        (p.partial_bytes && !partial))
        return cudaErrorInvalidValue;
    attn_args a    = args_common(out, qkv, q_off, p);
    a.vec16        = aligned16(k_pool) && aligned16(v_pool);
    a.k_pool       = k_pool;
    a.v_pool       = v_pool;
    a.block_table  = block_table;
    a.start_pos    = start_pos;
    a.partial      = partial;
    a.max_blocks   = max_blocks;
    a.block_tokens = block_tokens;
    cudaError_t e  = launch_attention<true>(p, a, s);
    if (e != cudaSuccess || p.merge_grid == 0)
        return e;
    attn_merge_kernel<<<p.merge_grid, ATTN_THREADS, 0, s>>>(a, rows);
    return cudaGetLastError();
}
