// kernels/cuda/rope.cu — RoPE on the q and k heads of a packed qkv row, fused with the store of
// k and v into the paged cache. The RoPE kind (default, linear, llama3) lives in the inv_freq
// table (rope_inv_freq, kernels/cpu/ops.h), so one kernel serves them all. The arithmetic is
// rope_forward's: angle = (float)pos * inv_freq[i] (one rounding), cosf / sinf (CUDA's
// accurate forms), x1 c - x2 s and x2 c + x1 s with _rn intrinsics (no contraction to fma, as
// on the CPU), then one rounding to bf16; the cache gets exactly the bf16 values left in qkv.
#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops.cuh"

// One block per row. Shared memory: cos[half], sin[half] of the row's angles.
static __global__ void rope_kv_kernel(bf16 *qkv, bf16 *k_pool, bf16 *v_pool, const float *inv_freq,
                                      const int32_t *pos, const int32_t *block_table,
                                      int max_blocks, int block_tokens, const int32_t *q_off,
                                      const int32_t *start_pos, int n_seqs, int n_heads,
                                      int n_kv_heads, int hd) {
    extern __shared__ float cs[];
    int                     half   = hd / 2;
    int                     r      = blockIdx.x;
    size_t                  stride = (size_t)(n_heads + 2 * n_kv_heads) * hd;
    bf16                   *row    = qkv + (size_t)r * stride;

    if (inv_freq) {
        float p = (float)pos[r];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float ang    = __fmul_rn(p, inv_freq[i]);
            cs[i]        = cosf(ang);
            cs[half + i] = sinf(ang);
        }
        __syncthreads();
    }

    // The pool row of this token, or none (no cache, or a row no sequence owns).
    int    store = 0;
    size_t prow  = 0;
    if (block_table) {
        int sq = ops_seq_of_row(q_off, n_seqs, r);
        if (sq >= 0) {
            store = 1;
            prow  = ops_pool_row(block_table, max_blocks, block_tokens, sq,
                                 start_pos[sq] + (r - q_off[sq]));
        }
    }
    size_t kv_dim  = (size_t)n_kv_heads * hd;
    int    n_pairs = (n_heads + n_kv_heads) * half;
    for (int k = threadIdx.x; k < n_pairs; k += blockDim.x) {
        int   h = k / half, i = k % half;
        bf16 *v  = row + (size_t)h * hd;
        bf16  o1 = v[i], o2 = v[i + half];
        if (inv_freq) {
            float x1 = __bfloat162float(o1), x2 = __bfloat162float(o2);
            float c = cs[i], sn = cs[half + i];
            // q * cos + rotate_half(q) * sin, rotate_half = cat(-x2, x1)
            o1          = __float2bfloat16_rn(__fadd_rn(__fmul_rn(x1, c), __fmul_rn(-x2, sn)));
            o2          = __float2bfloat16_rn(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn)));
            v[i]        = o1;
            v[i + half] = o2;
        }
        if (store && h >= n_heads) {
            bf16 *kp     = k_pool + prow * kv_dim + (size_t)(h - n_heads) * hd;
            kp[i]        = o1;
            kp[i + half] = o2;
        }
    }
    if (store) {
        const bf16 *vr = row + (size_t)(n_heads + n_kv_heads) * hd;
        bf16       *vp = v_pool + prow * kv_dim;
        for (size_t k = threadIdx.x; k < kv_dim; k += blockDim.x)
            vp[k] = vr[k];
    }
}

extern "C" cudaError_t cuda_rope_kv(bf16 *qkv, bf16 *k_pool, bf16 *v_pool, const float *inv_freq,
                                    const int32_t *pos, const int32_t *block_table, int max_blocks,
                                    int block_tokens, const int32_t *q_off,
                                    const int32_t *start_pos, int n_seqs, int rows, int n_heads,
                                    int n_kv_heads, int hd, cudaStream_t s) {
    if (rows < 0 || n_heads <= 0 || n_kv_heads <= 0 || hd <= 0 || hd % 2 != 0)
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    if (!qkv || (inv_freq && !pos))
        return cudaErrorInvalidValue;
    if (block_table && (!k_pool || !v_pool || !q_off || !start_pos || n_seqs <= 0 ||
                        max_blocks <= 0 || block_tokens <= 0))
        return cudaErrorInvalidValue;
    rope_kv_kernel<<<rows, ops_rope_threads(n_heads, n_kv_heads, hd), ops_rope_smem_bytes(hd), s>>>(
        qkv, k_pool, v_pool, inv_freq, pos, block_table, max_blocks, block_tokens, q_off, start_pos,
        n_seqs, n_heads, n_kv_heads, hd);
    return cudaGetLastError();
}
