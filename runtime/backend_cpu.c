/* runtime/backend_cpu.c — the backend interface over kernels/cpu. Memory is host memory; the only
 * state is a growing GEMM scratch buffer. Linear weights are stored packed (kernels/cpu/ops.h). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"

typedef struct cpu_impl {
    float *scratch;
    size_t scratch_floats;
} cpu_impl;

static int cpu_scratch(backend *be, size_t need, float **s) {
    cpu_impl *c = be->impl;
    if (need > c->scratch_floats) {
        float *n = NULL;
        if (posix_memalign((void **)&n, 64, need * sizeof(float)) != 0)
            return assay_fail(&be->last_error, ASSAY_ENOMEM,
                              "cpu backend: cannot allocate %zu bytes of GEMM scratch",
                              need * sizeof(float));
        free(c->scratch);
        c->scratch        = n;
        c->scratch_floats = need;
    }
    *s = c->scratch;
    return 0;
}

static int cpu_alloc(backend *be, void **ptr, size_t bytes) {
    *ptr = NULL;
    if (posix_memalign(ptr, 64, bytes ? bytes : 1) != 0) {
        *ptr = NULL;
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: cannot allocate %zu bytes",
                          bytes);
    }
    return 0;
}
static void cpu_release(backend *be, void *ptr) {
    (void)be;
    free(ptr);
}
static int cpu_memcpy(backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}
static int cpu_sync(backend *be) {
    (void)be;
    return 0;
}
static size_t cpu_weight_bytes(backend *be, int rows, int cols) {
    (void)be;
    return gemm_packed_floats(rows, cols) * sizeof(float);
}
static int cpu_upload_weight(backend *be, void *dst, const float *w, int rows, int cols) {
    (void)be;
    gemm_pack(dst, w, rows, cols);
    return 0;
}
static int cpu_embed(backend *be, float *out, const void *table, const int32_t *ids, int rows,
                     int dim) {
    (void)be;
    embed_forward(out, table, ids, rows, dim);
    return 0;
}
static int cpu_pos_embed_add(backend *be, float *out, const void *table, const int32_t *pos,
                             int rows, int dim) {
    (void)be;
    pos_embed_add(out, table, pos, rows, dim);
    return 0;
}
static int cpu_rmsnorm(backend *be, float *out, const float *x, const void *w, int rows, int dim,
                       float eps) {
    (void)be;
    rmsnorm_forward(out, x, w, rows, dim, eps);
    return 0;
}
static int cpu_layernorm(backend *be, float *out, const float *x, const void *w, const void *b,
                         int rows, int dim, float eps) {
    (void)be;
    layernorm_forward(out, x, w, b, rows, dim, eps);
    return 0;
}
static int cpu_matmul(backend *be, float *out, const float *x, const void *w, const void *bias,
                      int rows, int in, int out_dim) {
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_matmul_scratch_floats(rows, in), &s);
    if (rc)
        return rc;
    matmul_forward(out, s, x, w, bias, rows, in, out_dim);
    return 0;
}
static int cpu_matmul_gelu(backend *be, float *out, const float *x, const void *w, const void *bias,
                           int rows, int in, int out_dim) {
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_matmul_scratch_floats(rows, in), &s);
    if (rc)
        return rc;
    matmul_gelu_forward(out, s, x, w, bias, rows, in, out_dim);
    return 0;
}
static int cpu_add(backend *be, float *out, const float *a, const float *b, size_t n) {
    (void)be;
    add_forward(out, a, b, n);
    return 0;
}
static int cpu_swiglu(backend *be, float *out, const float *gate_up, int rows, int ffn) {
    (void)be;
    swiglu_forward(out, gate_up, rows, ffn);
    return 0;
}
static int cpu_gelu_new(backend *be, float *out, const float *x, size_t n) {
    (void)be;
    gelu_new_forward(out, x, n);
    return 0;
}
static int cpu_rope(backend *be, float *x, const int32_t *pos, const float *inv_freq, int rows,
                    int n_heads, int head_dim, int stride) {
    (void)be;
    rope_forward(x, pos, inv_freq, rows, n_heads, head_dim, stride);
    return 0;
}
static int cpu_attention_varlen(backend *be, float *out, const float *q, const float *k,
                                const float *v, const int *cu_seqlens, int n_seqs, int n_heads,
                                int n_kv_heads, int head_dim, int q_stride, int kv_stride,
                                int window) {
    if (attention_varlen_forward(out, q, k, v, cu_seqlens, n_seqs, n_heads, n_kv_heads, head_dim,
                                 q_stride, kv_stride, window) != 0)
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: attention scratch");
    return 0;
}
static int cpu_kv_store(backend *be, float *k_pool, float *v_pool, const float *k, const float *v,
                        int kv_stride, int kv_dim, const int32_t *block_table, int max_blocks,
                        int block_tokens, const int *q_off, const int *start_pos, int n_seqs) {
    (void)be;
    kv_store_forward(k_pool, v_pool, k, v, kv_stride, kv_dim, block_table, max_blocks, block_tokens,
                     q_off, start_pos, n_seqs);
    return 0;
}
static int cpu_attention_paged(backend *be, float *out, const float *q, const float *k_pool,
                               const float *v_pool, const int32_t *block_table, int max_blocks,
                               int block_tokens, const int *q_off, const int *start_pos, int n_seqs,
                               int n_heads, int n_kv_heads, int head_dim, int q_stride,
                               int window) {
    if (attention_paged_forward(out, q, k_pool, v_pool, block_table, max_blocks, block_tokens,
                                q_off, start_pos, n_seqs, n_heads, n_kv_heads, head_dim, q_stride,
                                window) != 0)
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "cpu backend: attention scratch");
    return 0;
}
static int cpu_target_logprob(backend *be, float *out_logprob, uint8_t *out_is_max, const float *h,
                              const void *w_head, const int32_t *target, int rows, int dim,
                              int vocab) {
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_head_scratch_floats(dim, vocab), &s);
    if (rc)
        return rc;
    target_logprob_forward(out_logprob, out_is_max, s, h, w_head, target, rows, dim, vocab);
    return 0;
}
static int cpu_argmax(backend *be, int32_t *out_id, const float *h, const void *w_head, int rows,
                      int dim, int vocab) {
    float *s  = NULL;
    int    rc = cpu_scratch(be, cpu_head_scratch_floats(dim, vocab), &s);
    if (rc)
        return rc;
    argmax_forward(out_id, s, h, w_head, rows, dim, vocab);
    return 0;
}

static const backend_ops cpu_ops = {
    .name             = "cpu",
    .alloc            = cpu_alloc,
    .release          = cpu_release,
    .upload           = cpu_memcpy,
    .download         = cpu_memcpy,
    .copy             = cpu_memcpy,
    .sync             = cpu_sync,
    .weight_bytes     = cpu_weight_bytes,
    .upload_weight    = cpu_upload_weight,
    .embed            = cpu_embed,
    .pos_embed_add    = cpu_pos_embed_add,
    .rmsnorm          = cpu_rmsnorm,
    .layernorm        = cpu_layernorm,
    .matmul           = cpu_matmul,
    .add              = cpu_add,
    .swiglu           = cpu_swiglu,
    .gelu_new         = cpu_gelu_new,
    .matmul_gelu      = cpu_matmul_gelu,
    .rope             = cpu_rope,
    .attention_varlen = cpu_attention_varlen,
    .kv_store         = cpu_kv_store,
    .attention_paged  = cpu_attention_paged,
    .target_logprob   = cpu_target_logprob,
    .argmax           = cpu_argmax,
};

size_t backend_cpu_scratch_bytes(int max_rows, int max_in, int dim, int vocab) {
    size_t mm   = cpu_matmul_scratch_floats(max_rows, max_in),
           head = cpu_head_scratch_floats(dim, vocab);
    return (mm > head ? mm : head) * sizeof(float);
}

void backend_cpu_set_threads(backend *be, int n_threads) {
    if (n_threads > 0)
        omp_set_num_threads(n_threads);
    else
        n_threads = omp_get_max_threads(); /* OMP_NUM_THREADS, or all cores */
    if (be)
        be->n_threads = n_threads;
}

backend *backend_cpu_create(int n_threads, assay_error *err) {
    backend  *be = calloc(1, sizeof *be);
    cpu_impl *c  = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        assay_fail(err, ASSAY_ENOMEM, "cpu backend: out of memory");
        return NULL;
    }
    backend_cpu_set_threads(be, n_threads);
    be->ops          = &cpu_ops;
    be->weight_dtype = DTYPE_F32;
    be->host_memory  = 1;
    be->impl         = c;
    return be;
}

void backend_free(backend *be) {
    if (!be)
        return;
    if (be->impl && be->ops == &cpu_ops) {
        cpu_impl *c = be->impl;
        free(c->scratch);
        free(c);
    }
    free(be);
}
