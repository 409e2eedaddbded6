// runtime/cuda/backend_cuda.cu — the CUDA backend: every slot of backend_ops (runtime/backend.h)
// on one device and one stream, calling the kernel launchers of kernels/cuda/ops.cuh and
// cuBLASLt for the GEMMs.
//
// Types: linear weights and embedding tables bf16 row-major (out, in); activations between ops
// bf16; residual stream f32; KV cache bf16. GEMMs take bf16 in and accumulate in fp32
// (CUBLAS_COMPUTE_32F: never TF32).
//
// Batch invariance (the default): one cuBLASLt algorithm per (n, k, output type), chosen once
// without split-K and used for every row count (cuda_plan.h says why); every other op is per row
// or per sequence by its contract. `fast` uses per-shape heuristics with split-K and says so in
// caps.batch_invariant.
//
// cuBLASLt is opened with dlopen when the backend is created, so the binary (which links cudart
// statically) still starts on machines without CUDA libraries; a missing library fails only
// backend creation, with ASSAY_EDEVICE.
//
// Decode passes run as CUDA graphs (docs/ARCHITECTURE.md, cuda_plan.h): set_batch recognises a
// decode pass, its ops are recorded instead of run, and fetch runs the recording eagerly, captures
// it, or replays the graph captured for the same key and ops. Everything a graph reads stays at
// the address it was captured with: set_batch uploads to the same device buffer, scratch only
// grows outside a capture (and a growth retires the graphs), and the paged attention of a decode
// pass is planned for the block table's whole span, so its launch does not change as sequences
// grow. ASSAY_CUDA_GRAPHS=0 turns graphs off; results are bitwise the same either way.
//
// Host-side arithmetic (packing, layouts, checks, algorithm cache, graph cache) is in
// cuda_plan.c, tested on the CPU.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/ops.cuh"

extern "C" {
#include "core/error.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_plan.h"
#include "runtime/device.h"
}

static_assert(sizeof(cublasLtMatmulAlgo_t) == CUDA_GEMM_ALGO_WORDS * sizeof(uint64_t),
              "cuda_gemm_entry.algo must hold a cublasLtMatmulAlgo_t");

// Keys per attention chunk of the paged path: fixed, so a query's reduction order depends on its
// own context length only (never on the batch).
#define CUDA_SPLIT_KEYS 256
// f32 -> bf16 weight upload: elements per pinned staging buffer (two, used in turn).
#define CUDA_UPLOAD_CHUNK ((size_t)4 << 20)

// ---- cuBLASLt, resolved at run time ------------------------------------------------------------
typedef struct lt_api {
    void                                           *lib;
    decltype(&cublasLtCreate)                       create;
    decltype(&cublasLtDestroy)                      destroy;
    decltype(&cublasLtMatmulDescCreate)             desc_create;
    decltype(&cublasLtMatmulDescDestroy)            desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute)       desc_set;
    decltype(&cublasLtMatrixLayoutCreate)           layout_create;
    decltype(&cublasLtMatrixLayoutDestroy)          layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate)       pref_create;
    decltype(&cublasLtMatmulPreferenceDestroy)      pref_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic)       heuristic;
    decltype(&cublasLtMatmulAlgoCheck)              algo_check;
    decltype(&cublasLtMatmulAlgoConfigGetAttribute) algo_get;
    decltype(&cublasLtMatmulAlgoConfigSetAttribute) algo_set;
    decltype(&cublasLtMatmul)                       matmul;
    decltype(&cublasLtGetStatusString)              status_string; // optional
} lt_api;

typedef struct cuda_be {
    backend     *be;
    int          ordinal;
    int          fast;
    cudaStream_t stream;

    lt_api               lt;
    cublasLtHandle_t     lt_handle;
    cublasLtMatmulDesc_t lt_desc; // fp32 compute and scale, A transposed: shared by every GEMM
    void                *lt_ws;
    cuda_gemm_cache      algos;

    // the current pass's index data: one pinned buffer, one device buffer, one copy
    void             *batch_host, *batch_dev;
    size_t            batch_cap;
    cudaEvent_t       batch_copied; // the pinned buffer may be rewritten once this has passed
    cuda_batch_layout layout;
    const int32_t    *d[CB_COUNT]; // device pointers into batch_dev (NULL: array absent)
    int               n_tokens, n_seqs, max_blocks, block_tokens, n_sel, max_len, max_ctx;

    // scratch, grown on demand
    float *acc;
    size_t acc_bytes;
    float *logits;
    size_t logits_bytes;
    float *partial;
    size_t partial_bytes;
    // paged attention in groups when one call's split buffer would pass CUDA_ATTN_PARTIAL_CAP:
    // host copies of the pass's q_off and start_pos, the plan (for grp_heads x grp_hd; 0: none
    // yet this pass) and its rebased index arrays on the device
    int32_t         *h_q_off, *h_start;
    size_t           h_idx_cap;
    cuda_attn_group *grp;
    int32_t         *grp_idx;
    size_t           grp_cap, grp_idx_cap;
    int              n_grp, grp_heads, grp_hd;
    void            *grp_dev;
    size_t           grp_dev_bytes;
    size_t           grp_partial;          // the largest group's split buffer
    size_t           attn_cap;             // CUDA_ATTN_PARTIAL_CAP, or ASSAY_CUDA_ATTN_CAP (tests)
    void            *head_dev, *head_host; // lm_head results (cuda_head_layout), device and pinned
    size_t           head_cap, head_host_cap;
    int              head_rows;     // rows of the last lm_head (-1: none since the last set_batch)
    int              head_has_prob; // the last lm_head computed log-probs

    uint16_t   *stage[2]; // pinned bf16 staging for upload_weight
    cudaEvent_t stage_free[2];

    // CUDA graphs for decode passes
    int              graphs;      // 1: on (ASSAY_CUDA_GRAPHS is not 0) and no capture failed
    const char      *graph_fault; // ASSAY_CUDA_GRAPH_FAULT: an illegal call in each capture (tests)
    int              graph_stats; // ASSAY_CUDA_GRAPH_STATS=1: counts on stderr at destroy
    int              deferring;   // this pass's ops are recorded in pass_ops until fetch
    int              capturing;   // between cudaStreamBeginCapture and cudaStreamEndCapture
    cuda_graph_key   gkey;        // the decode pass's key (when deferring)
    cuda_op_list     pass_ops;
    cuda_graph_cache gcache;
    unsigned         scratch_gen; // bumped whenever a device scratch buffer moves
    int              attn_ctx;    // context the paged attention is planned for (>= max_ctx)
    long             n_decode, n_captured, n_replayed; // decode passes; graphs made, reused
} cuda_be;

static cuda_be *impl_of(backend *be) { return (cuda_be *)be->impl; }

static int cuda_fail_call(backend *be, cudaError_t e, const char *call, const char *file,
                          int line) {
    return assay_fail(&be->last_error, ASSAY_EDEVICE, "CUDA: %s failed: %s (%s) at %s:%d", call,
                      cudaGetErrorString(e), cudaGetErrorName(e), file, line);
}

static int lt_fail_call(backend *be, const lt_api *lt, cublasStatus_t st, const char *call,
                        const char *file, int line) {
    const char *what = lt->status_string ? lt->status_string(st) : "cuBLAS status";
    return assay_fail(&be->last_error, ASSAY_EDEVICE, "cuBLASLt: %s failed: %s (%d) at %s:%d", call,
                      what, (int)st, file, line);
}

// Every CUDA runtime call and every launcher (they return cudaGetLastError()) goes through this.
#define CUDA_CHECK(be_, call)                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_fail_call((be_), e_, #call, __FILE__, __LINE__);                           \
    } while (0)

#define CUBLAS_CHECK(be_, lt_, call)                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return lt_fail_call((be_), (lt_), s_, #call, __FILE__, __LINE__);                      \
    } while (0)

// ---- cuBLASLt loading --------------------------------------------------------------------------
static void *lt_open(char *tried, size_t tried_size) {
    // The toolkit's lib64 is often not on the loader path of a machine that has the toolkit.
    const char *env     = getenv("ASSAY_CUBLASLT");
    const char *names[] = {env,
                           "libcublasLt.so.13",
                           "libcublasLt.so.12",
                           "libcublasLt.so",
                           "/usr/local/cuda/lib64/libcublasLt.so.13",
                           "/usr/local/cuda/lib64/libcublasLt.so.12",
                           "/usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so.13",
                           "/usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so.12"};
    size_t      used    = 0;
    tried[0]            = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!names[i] || !names[i][0])
            continue;
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
        if (used < tried_size) {
            int w = snprintf(tried + used, tried_size - used, "%s%s", used ? ", " : "", names[i]);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    return NULL;
}

template <typename F> static int lt_sym(F *dst, void *lib, const char *name, int optional) {
    void *p = dlsym(lib, name);
    *dst    = (F)p;
    return p || optional ? 0 : -1;
}

static int lt_load(lt_api *lt, assay_error *err) {
    char tried[512];
    lt->lib = lt_open(tried, sizeof tried);
    if (!lt->lib)
        return assay_fail(err, ASSAY_EDEVICE,
                          "cuBLASLt not found (tried %s; set ASSAY_CUBLASLT to the "
                          "library's path)",
                          tried);
    const char *missing = NULL;
#define LT_SYM(field, name)                                                                        \
    if (!missing && lt_sym(&lt->field, lt->lib, #name, 0))                                         \
        missing = #name;
    LT_SYM(create, cublasLtCreate)
    LT_SYM(destroy, cublasLtDestroy)
    LT_SYM(desc_create, cublasLtMatmulDescCreate)
    LT_SYM(desc_destroy, cublasLtMatmulDescDestroy)
    LT_SYM(desc_set, cublasLtMatmulDescSetAttribute)
    LT_SYM(layout_create, cublasLtMatrixLayoutCreate)
    LT_SYM(layout_destroy, cublasLtMatrixLayoutDestroy)
    LT_SYM(pref_create, cublasLtMatmulPreferenceCreate)
    LT_SYM(pref_destroy, cublasLtMatmulPreferenceDestroy)
    LT_SYM(pref_set, cublasLtMatmulPreferenceSetAttribute)
    LT_SYM(heuristic, cublasLtMatmulAlgoGetHeuristic)
    LT_SYM(algo_check, cublasLtMatmulAlgoCheck)
    LT_SYM(algo_get, cublasLtMatmulAlgoConfigGetAttribute)
    LT_SYM(algo_set, cublasLtMatmulAlgoConfigSetAttribute)
    LT_SYM(matmul, cublasLtMatmul)
#undef LT_SYM
    lt_sym(&lt->status_string, lt->lib, "cublasLtGetStatusString", 1);
    if (missing) {
        dlclose(lt->lib);
        lt->lib = NULL;
        return assay_fail(err, ASSAY_EDEVICE, "cuBLASLt has no symbol %s", missing);
    }
    return 0;
}

// ---- scratch ------------------------------------------------------------------------------------
// Grows a device buffer to at least `bytes` (geometrically). The old buffer may still be read by
// queued work, so the stream is drained before it is freed.
static int scratch_grow(cuda_be *cb, void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *buf)
        return 0;
    if (cb->capturing) // the warm-up passes should have grown it: no allocation in a graph
        return assay_fail(&cb->be->last_error, ASSAY_EDEVICE,
                          "CUDA: scratch would grow to %zu bytes during graph capture", bytes);
    size_t want = *cap * 2 > bytes ? *cap * 2 : bytes;
    if (want < 256)
        want = 256;
    cb->scratch_gen++; // graphs captured with the old buffer are stale
    CUDA_CHECK(cb->be, cudaStreamSynchronize(cb->stream));
    if (*buf)
        CUDA_CHECK(cb->be, cudaFree(*buf));
    *buf          = NULL;
    *cap          = 0;
    cudaError_t e = cudaMalloc(buf, want);
    if (e != cudaSuccess) {
        *buf = NULL;
        cudaGetLastError();
        return assay_fail(&cb->be->last_error, ASSAY_ENOMEM,
                          "CUDA: %zu bytes of device scratch could not be allocated (%s)", want,
                          cudaGetErrorString(e));
    }
    *cap = want;
    return 0;
}

static int pinned_grow(cuda_be *cb, void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *buf)
        return 0;
    if (cb->capturing)
        return assay_fail(&cb->be->last_error, ASSAY_EDEVICE,
                          "CUDA: pinned memory would grow during graph capture");
    size_t want = *cap * 2 > bytes ? *cap * 2 : bytes;
    if (want < 4096)
        want = 4096;
    CUDA_CHECK(cb->be, cudaStreamSynchronize(cb->stream));
    if (*buf)
        CUDA_CHECK(cb->be, cudaFreeHost(*buf));
    *buf = NULL;
    *cap = 0;
    CUDA_CHECK(cb->be, cudaMallocHost(buf, want));
    *cap = want;
    return 0;
}

static int  pass_flush(cuda_be *cb);
static void graphs_clear(cuda_be *cb);

// ---- lifecycle ----------------------------------------------------------------------------------
static void cbe_destroy(backend *be) {
    if (!be)
        return;
    cuda_be *cb = impl_of(be);
    if (cb) {
        if (cb->graph_stats)
            fprintf(stderr,
                    "assay: CUDA graphs %s: %ld decode steps, %ld captured, %ld replayed, %ld "
                    "eager\n",
                    cb->graphs ? "on" : "off", cb->n_decode, cb->n_captured, cb->n_replayed,
                    cb->n_decode - cb->n_captured - cb->n_replayed);
        if (cb->stream)
            cudaStreamSynchronize(cb->stream);
        graphs_clear(cb);
        cuda_graph_cache_free(&cb->gcache);
        cuda_op_list_free(&cb->pass_ops);
        cudaFree(cb->batch_dev);
        cudaFreeHost(cb->batch_host);
        cudaFree(cb->acc);
        cudaFree(cb->logits);
        cudaFree(cb->partial);
        cudaFree(cb->grp_dev);
        free(cb->h_q_off);
        free(cb->h_start);
        free(cb->grp);
        free(cb->grp_idx);
        cudaFree(cb->head_dev);
        cudaFreeHost(cb->head_host);
        cudaFree(cb->lt_ws);
        for (int i = 0; i < 2; i++) {
            cudaFreeHost(cb->stage[i]);
            if (cb->stage_free[i])
                cudaEventDestroy(cb->stage_free[i]);
        }
        if (cb->batch_copied)
            cudaEventDestroy(cb->batch_copied);
        if (cb->lt_desc)
            cb->lt.desc_destroy(cb->lt_desc);
        if (cb->lt_handle)
            cb->lt.destroy(cb->lt_handle);
        if (cb->stream)
            cudaStreamDestroy(cb->stream);
        if (cb->lt.lib)
            dlclose(cb->lt.lib);
        cuda_gemm_cache_free(&cb->algos);
        cudaGetLastError();
        free(cb);
    }
    free(be);
}

static int cbe_mem_info(backend *be, size_t *free_bytes, size_t *total_bytes) {
    /* Raw numbers: the model applies --gpu-mem-fraction (applying it here too would take the
     * share twice). */
    size_t f = 0, t = 0;
    CUDA_CHECK(be, cudaMemGetInfo(&f, &t));
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return 0;
}

static size_t cbe_scratch_bytes(backend *be, int max_rows, int max_in, int dim, int vocab) {
    (void)be;
    cuda_scratch_plan p;
    cuda_scratch_plan_make(&p, max_rows, max_in, dim, vocab);
    // the cuBLASLt workspace was allocated when the backend was created, so the free memory the
    // model plans with (mem_info) already excludes it: counting it here would take it twice
    return p.total - p.workspace;
}

// ---- memory -------------------------------------------------------------------------------------
static int cbe_alloc(backend *be, void **ptr, size_t bytes) {
    *ptr = NULL;
    // cudaMalloc returns 256-byte aligned memory, which cuda_gemm_align assumes
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        *ptr = NULL;
        cudaGetLastError();
        size_t f = 0, t = 0;
        cudaMemGetInfo(&f, &t);
        cudaGetLastError();
        return assay_fail(&be->last_error, ASSAY_ENOMEM,
                          "CUDA: allocating %zu bytes failed (%s; %zu of %zu bytes free)", bytes,
                          cudaGetErrorString(e), f, t);
    }
    return 0;
}

static void cbe_release(backend *be, void *ptr) {
    if (!ptr)
        return;
    cuda_be *cb = impl_of(be);
    pass_flush(cb);   // errors surface at the next call that reports them
    graphs_clear(cb); // a graph may hold ptr
    // queued kernels may still read it
    cudaStreamSynchronize(cb->stream);
    cudaFree(ptr);
    cudaGetLastError();
}

static int cbe_upload(backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *cb = impl_of(be);
    int      rc = pass_flush(cb);
    if (rc || !bytes)
        return rc;
    CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
    // the caller may free or reuse src on return
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
    return 0;
}

static int cbe_download(backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *cb = impl_of(be);
    int      rc = pass_flush(cb);
    if (rc || !bytes)
        return rc;
    CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
    return 0;
}

static int cbe_copy(backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *cb = impl_of(be);
    int      rc = pass_flush(cb);
    if (rc || !bytes)
        return rc;
    CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cb->stream));
    return 0;
}

static int cbe_sync(backend *be) {
    int rc = pass_flush(impl_of(be));
    if (rc)
        return rc;
    CUDA_CHECK(be, cudaStreamSynchronize(impl_of(be)->stream));
    return 0;
}

static size_t cbe_weight_bytes(backend *be, int rows, int cols) {
    (void)be;
    return (size_t)(rows > 0 ? rows : 0) * (size_t)(cols > 0 ? cols : 0) * sizeof(bf16);
}

// f32 host -> bf16 device, converted on the host (half the bytes over PCIe) into two pinned
// staging buffers used in turn, so the conversion of one chunk overlaps the copy of the last.
static int cbe_upload_weight(backend *be, void *dst, const float *w, int rows, int cols) {
    cuda_be *cb = impl_of(be);
    if (rows < 0 || cols < 0)
        return assay_fail(&be->last_error, ASSAY_EINVAL, "CUDA: weight of shape (%d, %d)", rows,
                          cols);
    size_t n  = (size_t)rows * (size_t)cols;
    int    rc = pass_flush(cb);
    if (rc)
        return rc;
    for (int i = 0; i < 2; i++)
        if (!cb->stage[i])
            CUDA_CHECK(
                be, cudaMallocHost((void **)&cb->stage[i], CUDA_UPLOAD_CHUNK * sizeof(uint16_t)));
    for (size_t done = 0, c = 0; done < n; c++) {
        size_t m = n - done < CUDA_UPLOAD_CHUNK ? n - done : CUDA_UPLOAD_CHUNK;
        int    s = (int)(c & 1);
        CUDA_CHECK(be, cudaEventSynchronize(cb->stage_free[s]));
        cuda_bf16_from_f32(cb->stage[s], w + done, m);
        CUDA_CHECK(be, cudaMemcpyAsync((uint16_t *)dst + done, cb->stage[s], m * sizeof(uint16_t),
                                       cudaMemcpyHostToDevice, cb->stream));
        CUDA_CHECK(be, cudaEventRecord(cb->stage_free[s], cb->stream));
        done += m;
    }
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
    return 0;
}

// ---- the pass -----------------------------------------------------------------------------------
static int cbe_set_batch(backend *be, const be_batch *b) {
    cuda_be *cb      = impl_of(be);
    int      max_len = 0, max_ctx = 0;
    int      rc = pass_flush(cb); // the last pass's recorded ops read the last batch
    if (rc)
        return rc;
    rc = cuda_batch_check(&max_len, &max_ctx, b->n_tokens, b->n_seqs, b->q_off, b->start_pos,
                          b->block_table, b->max_blocks, b->block_tokens, b->n_sel, b->sel,
                          &be->last_error);
    if (rc)
        return rc;
    size_t count[CB_COUNT] = {0};
    count[CB_IDS]          = (size_t)b->n_tokens;
    count[CB_POS]          = (size_t)b->n_tokens;
    count[CB_Q_OFF]        = (size_t)b->n_seqs + 1;
    count[CB_START]        = (size_t)b->n_seqs;
    count[CB_BLOCKS]       = b->block_table ? (size_t)b->n_seqs * (size_t)b->max_blocks : 0;
    count[CB_SEL]          = (size_t)b->n_sel;
    count[CB_TARGETS]      = b->targets ? (size_t)b->n_sel : 0;
    const int32_t  zero    = 0; // q_off of an empty batch
    const int32_t *src[CB_COUNT];
    src[CB_IDS]     = b->ids;
    src[CB_POS]     = b->pos;
    src[CB_Q_OFF]   = b->n_seqs > 0 ? b->q_off : &zero;
    src[CB_START]   = b->start_pos;
    src[CB_BLOCKS]  = b->block_table;
    src[CB_SEL]     = b->sel;
    src[CB_TARGETS] = b->targets;
    for (int i = 0; i < CB_COUNT; i++)
        if (count[i] && !src[i])
            return assay_fail(&be->last_error, ASSAY_EINVAL,
                              "CUDA batch: index array %d is missing", i);
    cuda_batch_layout L;
    if ((rc = cuda_batch_plan(&L, count, &be->last_error)))
        return rc;
    // the previous pass's copy must have left the pinned buffer before it is rewritten
    CUDA_CHECK(be, cudaEventSynchronize(cb->batch_copied));
    if (L.total > cb->batch_cap) {
        size_t want = L.total > 2 * cb->batch_cap ? L.total : 2 * cb->batch_cap;
        want        = want > 4096 ? want : 4096; // the pinned minimum: both buffers alike
        size_t hcap = cb->batch_cap, dcap = cb->batch_cap;
        if ((rc = pinned_grow(cb, &cb->batch_host, &hcap, want)) ||
            (rc = scratch_grow(cb, &cb->batch_dev, &dcap, want)))
            return rc;
        cb->batch_cap = hcap < dcap ? hcap : dcap;
    }
    if ((size_t)b->n_seqs + 1 > cb->h_idx_cap) {
        size_t   cap = (size_t)b->n_seqs + 1;
        int32_t *q   = (int32_t *)realloc(cb->h_q_off, cap * sizeof(int32_t));
        if (q)
            cb->h_q_off = q;
        int32_t *st = q ? (int32_t *)realloc(cb->h_start, cap * sizeof(int32_t)) : NULL;
        if (st)
            cb->h_start = st;
        if (!q || !st)
            return assay_fail(&be->last_error, ASSAY_ENOMEM, "CUDA batch: out of host memory");
        cb->h_idx_cap = cap;
    }
    memcpy(cb->h_q_off, src[CB_Q_OFF], ((size_t)b->n_seqs + 1) * sizeof(int32_t));
    if (b->n_seqs > 0)
        memcpy(cb->h_start, b->start_pos, (size_t)b->n_seqs * sizeof(int32_t));
    cb->grp_heads = 0;
    cuda_batch_pack(cb->batch_host, &L, src);
    CUDA_CHECK(be, cudaMemcpyAsync(cb->batch_dev, cb->batch_host, L.total, cudaMemcpyHostToDevice,
                                   cb->stream));
    CUDA_CHECK(be, cudaEventRecord(cb->batch_copied, cb->stream));
    cb->layout = L;
    for (int i = 0; i < CB_COUNT; i++)
        cb->d[i] = count[i] ? (const int32_t *)((const char *)cb->batch_dev + L.off[i]) : NULL;
    cb->n_tokens     = b->n_tokens;
    cb->n_seqs       = b->n_seqs;
    cb->max_blocks   = b->block_table ? b->max_blocks : 0;
    cb->block_tokens = b->block_table ? b->block_tokens : 0;
    cb->n_sel        = b->n_sel;
    cb->max_len      = max_len;
    cb->max_ctx      = max_ctx;
    cb->head_rows    = -1;
    cb->attn_ctx     = max_ctx;
    // a decode pass is recorded until fetch (pass_finish) and planned for its key's context
    int decode =
        cuda_graph_decode_key(&cb->gkey, b->n_tokens, b->n_seqs, b->q_off, b->block_table != NULL,
                              b->max_blocks, b->block_tokens, b->n_sel, b->targets != NULL);
    cb->n_decode += decode;
    cb->pass_ops.n = 0;
    cb->deferring  = cb->graphs && decode;
    if (cb->deferring)
        cb->attn_ctx = cuda_graph_attn_ctx(&cb->gkey);
    return 0;
}

static int run_embed(backend *be, float *x, const void *table, const float *pos_table, int dim) {
    cuda_be *cb = impl_of(be);
    if (cb->n_tokens == 0)
        return 0;
    CUDA_CHECK(be, cuda_embed(x, (const bf16 *)table, pos_table, cb->d[CB_IDS], cb->d[CB_POS],
                              cb->n_tokens, dim, cb->stream));
    return 0;
}

static int run_add_norm(backend *be, float *x, void *xn, const void *delta, const float *w,
                        const float *b, be_norm kind, int rows, int dim, float eps) {
    cuda_be *cb = impl_of(be);
    if (rows == 0)
        return 0;
    CUDA_CHECK(be, cuda_add_norm(x, (bf16 *)xn, (const bf16 *)delta, w, b,
                                 kind == BE_NORM_LAYER ? 1 : 0, rows, dim, eps, cb->stream));
    return 0;
}

// ---- GEMM ---------------------------------------------------------------------------------------
typedef struct gemm_layouts {
    cublasLtMatrixLayout_t a, b, d;
} gemm_layouts;

static void gemm_layouts_free(const lt_api *lt, gemm_layouts *g) {
    if (g->a)
        lt->layout_destroy(g->a);
    if (g->b)
        lt->layout_destroy(g->b);
    if (g->d)
        lt->layout_destroy(g->d);
    g->a = g->b = g->d = NULL;
}

// Column-major view of out (rows, n) = x (rows, k) @ w (n, k)^T: D (n x rows, ld n) =
// op_T(A: w as k x n, ld k) * (B: x as k x rows, ld k). Row counts vary in cuBLAS's "n".
static cublasStatus_t gemm_layouts_make(const lt_api *lt, gemm_layouts *g, int n, int k, int rows,
                                        int out_f32) {
    cublasStatus_t st;
    g->a = g->b = g->d = NULL;
    if ((st = lt->layout_create(&g->a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, (int64_t)k)) ||
        (st = lt->layout_create(&g->b, CUDA_R_16BF, (uint64_t)k, (uint64_t)rows, (int64_t)k)) ||
        (st = lt->layout_create(&g->d, out_f32 ? CUDA_R_32F : CUDA_R_16BF, (uint64_t)n,
                                (uint64_t)rows, (int64_t)n)))
        gemm_layouts_free(lt, g);
    return st;
}

// Whether algo runs this shape at `rows` rows, with no split-K and no reduction scheme.
static int gemm_algo_usable(cuda_be *cb, const cublasLtMatmulAlgo_t *algo, int n, int k, int rows,
                            int out_f32, int need_no_split) {
    const lt_api *lt = &cb->lt;
    if (need_no_split) {
        int32_t  splits = 1;
        uint32_t scheme = 0;
        size_t   wr     = 0;
        if (lt->algo_get(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof splits, &wr) ||
            lt->algo_get(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme, &wr))
            return 0;
        if (splits > 1 || scheme != CUBLASLT_REDUCTION_SCHEME_NONE)
            return 0;
    }
    gemm_layouts g;
    if (gemm_layouts_make(lt, &g, n, k, rows, out_f32))
        return 0;
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    cublasStatus_t st = lt->algo_check(cb->lt_handle, cb->lt_desc, g.a, g.b, g.d, g.d, algo, &res);
    gemm_layouts_free(lt, &g);
    return st == CUBLAS_STATUS_SUCCESS && res.workspaceSize <= CUDA_LT_WORKSPACE;
}

// Chooses the algorithm of a cache key. Invariant keys: among the heuristic's candidates at
// CUDA_GEMM_REP_ROWS rows, the first without split-K (SPLITK_NUM 1, no reduction scheme) that also
// runs at 1 and 7 rows (cuBLASLt kernels handle partial tiles; the checks catch one that does
// not). If every candidate splits K, the first is forced to SPLITK_NUM 1 and checked again.
// (The preference's reduction-scheme mask is not used: NONE is 0, and a mask of 0 reads as
// "nothing allowed" as much as "no reduction".)
static int gemm_plan(cuda_be *cb, cuda_gemm_key key, int *index) {
    backend                   *be    = cb->be;
    const lt_api              *lt    = &cb->lt;
    int                        rows  = key.rows ? key.rows : CUDA_GEMM_REP_ROWS;
    int                        inv   = key.rows == 0;
    int                        align = cuda_gemm_align(key.n, key.k, key.out_f32 ? 4 : 2);
    cublasLtMatmulPreference_t pref  = NULL;
    gemm_layouts               g     = {NULL, NULL, NULL};
    enum { N_CAND = 16 };
    cublasLtMatmulHeuristicResult_t cand[N_CAND];
    int                             n_cand = 0;
    uint64_t                        ws     = CUDA_LT_WORKSPACE;
    uint32_t                        al     = (uint32_t)align;
    cublasStatus_t                  st;
    memset(cand, 0, sizeof cand);
    if ((st = lt->pref_create(&pref)) ||
        (st = lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)) ||
        (st = lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al)) ||
        (st = lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al)) ||
        (st = lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al)) ||
        (st = lt->pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al)) ||
        (st = gemm_layouts_make(lt, &g, key.n, key.k, rows, key.out_f32)) ||
        (st = lt->heuristic(cb->lt_handle, cb->lt_desc, g.a, g.b, g.d, g.d, pref, N_CAND, cand,
                            &n_cand))) {
        gemm_layouts_free(lt, &g);
        if (pref)
            lt->pref_destroy(pref);
        return lt_fail_call(be, lt, st, "cublasLtMatmulAlgoGetHeuristic (choosing a GEMM)",
                            __FILE__, __LINE__);
    }
    gemm_layouts_free(lt, &g);
    lt->pref_destroy(pref);
    cublasLtMatmulAlgo_t chosen;
    int                  found = 0;
    for (int i = 0; i < n_cand && !found; i++) {
        if (cand[i].state != CUBLAS_STATUS_SUCCESS)
            continue;
        if (inv && !(gemm_algo_usable(cb, &cand[i].algo, key.n, key.k, rows, key.out_f32, 1) &&
                     gemm_algo_usable(cb, &cand[i].algo, key.n, key.k, 1, key.out_f32, 1) &&
                     gemm_algo_usable(cb, &cand[i].algo, key.n, key.k, 7, key.out_f32, 1)))
            continue;
        chosen = cand[i].algo;
        found  = 1;
    }
    if (!found && inv && n_cand > 0 && cand[0].state == CUBLAS_STATUS_SUCCESS) {
        int32_t  one  = 1;
        uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
        chosen        = cand[0].algo;
        found         = !lt->algo_set(&chosen, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) &&
                !lt->algo_set(&chosen, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof none) &&
                gemm_algo_usable(cb, &chosen, key.n, key.k, rows, key.out_f32, 1) &&
                gemm_algo_usable(cb, &chosen, key.n, key.k, 1, key.out_f32, 1) &&
                gemm_algo_usable(cb, &chosen, key.n, key.k, 7, key.out_f32, 1);
    }
    if (!found)
        return assay_fail(&be->last_error, ASSAY_EDEVICE,
                          "cuBLASLt has no %sbf16 GEMM algorithm for (%d x %d) weights with %s "
                          "output (%d candidates, pointer alignment %d bytes)",
                          inv ? "batch-invariant (no split-K) " : "", key.n, key.k,
                          key.out_f32 ? "f32" : "bf16", n_cand, align);
    if (!inv && cb->algos.n >= CUDA_GEMM_FAST_MAX)
        cuda_gemm_cache_clear(&cb->algos); // fast mode keys on row counts: keep it bounded
    cuda_gemm_entry e;
    memset(&e, 0, sizeof e);
    e.key   = key;
    e.align = align;
    memcpy(e.algo, &chosen, sizeof e.algo);
    *index = cuda_gemm_cache_add(&cb->algos, &e);
    if (*index < 0)
        return assay_fail(&be->last_error, ASSAY_ENOMEM, "CUDA: GEMM algorithm cache is full");
    return 0;
}

// out (rows, n) = x (rows, k) @ w (n, k)^T; bf16 in, fp32 accumulate, out bf16 or f32.
static int gemm_run(cuda_be *cb, void *out, int out_f32, const bf16 *x, const bf16 *w, int rows,
                    int k, int n) {
    backend *be = cb->be;
    if (rows <= 0 || n <= 0)
        return 0;
    if (k <= 0)
        return assay_fail(&be->last_error, ASSAY_EINVAL, "CUDA GEMM: %d input features", k);
    cuda_gemm_key key = cuda_gemm_key_make(n, k, out_f32, rows, cb->fast);
    int           idx = cuda_gemm_cache_find(&cb->algos, key);
    int           rc;
    if (idx < 0 && (rc = gemm_plan(cb, key, &idx)))
        return rc;
    const cuda_gemm_entry *e = &cb->algos.e[idx];
    uintptr_t              a = (uintptr_t)e->align - 1;
    if (((uintptr_t)out & a) || ((uintptr_t)x & a) || ((uintptr_t)w & a))
        return assay_fail(&be->last_error, ASSAY_EINTERNAL,
                          "CUDA GEMM (%d x %d): operand not %d-byte aligned (out %p, x %p, w %p)",
                          n, k, e->align, out, (const void *)x, (const void *)w);
    cublasLtMatmulAlgo_t algo;
    memcpy(&algo, e->algo, sizeof algo);
    gemm_layouts g;
    CUBLAS_CHECK(be, &cb->lt, gemm_layouts_make(&cb->lt, &g, n, k, rows, out_f32));
    const float    one = 1.0f, zero = 0.0f;
    cublasStatus_t st =
        cb->lt.matmul(cb->lt_handle, cb->lt_desc, &one, w, g.a, x, g.b, &zero, out, g.d, out, g.d,
                      &algo, cb->lt_ws, CUDA_LT_WORKSPACE, cb->stream);
    gemm_layouts_free(&cb->lt, &g);
    CUBLAS_CHECK(be, &cb->lt, st);
    return 0;
}

static int run_matmul(backend *be, void *out, const void *x, const void *w, const float *bias,
                      int rows, int in, int out_dim, be_epilogue epi) {
    cuda_be *cb = impl_of(be);
    if (rows <= 0 || out_dim <= 0)
        return 0;
    if (!bias && epi == BE_EPI_NONE)
        return gemm_run(cb, out, 0, (const bf16 *)x, (const bf16 *)w, rows, in, out_dim);
    // bias / gelu_new: the GEMM writes f32, cuda_bias_act adds, activates and rounds once (as the
    // CPU adds the bias to the fp32 sum, then activates). Rows go in chunks that fit the f32
    // accumulator; a row's result does not depend on its chunk.
    size_t need = (size_t)(rows < 64 ? rows : 64) * (size_t)out_dim * sizeof(float);
    size_t want = (size_t)(rows < CUDA_ACC_CHUNK_ROWS ? rows : CUDA_ACC_CHUNK_ROWS) *
                  (size_t)out_dim * sizeof(float);
    int rc;
    if (cb->acc_bytes < need && (rc = scratch_grow(cb, (void **)&cb->acc, &cb->acc_bytes, want)))
        return rc;
    int chunk = cuda_acc_chunk_rows(rows, out_dim, cb->acc_bytes);
    if (chunk <= 0)
        return assay_fail(&be->last_error, ASSAY_EINTERNAL, "CUDA: epilogue accumulator too small");
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int m = rows - r0 < chunk ? rows - r0 : chunk;
        if ((rc = gemm_run(cb, cb->acc, 1, (const bf16 *)x + (size_t)r0 * in, (const bf16 *)w, m,
                           in, out_dim)))
            return rc;
        CUDA_CHECK(be, cuda_bias_act((bf16 *)out + (size_t)r0 * out_dim, cb->acc, bias, m, out_dim,
                                     epi == BE_EPI_GELU_NEW ? 1 : 0, cb->stream));
    }
    return 0;
}

static int run_swiglu(backend *be, void *out, const void *gate_up, int rows, int ffn) {
    cuda_be *cb = impl_of(be);
    if (rows <= 0)
        return 0;
    CUDA_CHECK(be, cuda_swiglu((bf16 *)out, (const bf16 *)gate_up, rows, ffn, cb->stream));
    return 0;
}

static int run_rope_kv(backend *be, void *qkv, void *k_pool, void *v_pool, const float *inv_freq,
                       int n_heads, int n_kv_heads, int head_dim) {
    cuda_be *cb = impl_of(be);
    if (cb->n_tokens == 0)
        return 0;
    const int32_t *bt = cb->d[CB_BLOCKS];
    if (bt && (!k_pool || !v_pool))
        return assay_fail(&be->last_error, ASSAY_EINVAL,
                          "CUDA rope_kv: a block table but no "
                          "KV pools");
    CUDA_CHECK(be, cuda_rope_kv((bf16 *)qkv, bt ? (bf16 *)k_pool : NULL, bt ? (bf16 *)v_pool : NULL,
                                inv_freq, cb->d[CB_POS], bt, cb->max_blocks, cb->block_tokens,
                                cb->d[CB_Q_OFF], cb->d[CB_START], cb->n_seqs, cb->n_tokens, n_heads,
                                n_kv_heads, head_dim, cb->stream));
    return 0;
}

// The paged call in groups of rows whose split buffers fit CUDA_ATTN_PARTIAL_CAP (cuda_plan.h):
// planned at the pass's first attention (every layer has the same heads), its rebased q_off and
// start_pos uploaded once (a pageable copy: staged before cudaMemcpyAsync returns).
static int attention_grouped(cuda_be *cb, bf16 *out, const bf16 *qkv, const bf16 *k_pool,
                             const bf16 *v_pool, int n_heads, int n_kv_heads, int hd, int window) {
    backend *be = cb->be;
    int      rc;
    if (cb->grp_heads != n_heads || cb->grp_hd != hd) {
        size_t gcap = cuda_attn_groups_cap(cb->n_seqs, cb->n_tokens);
        size_t icap = cuda_attn_idx_cap(cb->n_seqs, cb->n_tokens);
        if (gcap > cb->grp_cap) {
            cuda_attn_group *g = (cuda_attn_group *)realloc(cb->grp, gcap * sizeof *g);
            if (!g)
                return assay_fail(&be->last_error, ASSAY_ENOMEM, "CUDA attention: out of memory");
            cb->grp     = g;
            cb->grp_cap = gcap;
        }
        if (icap > cb->grp_idx_cap) {
            int32_t *ix = (int32_t *)realloc(cb->grp_idx, icap * sizeof *ix);
            if (!ix)
                return assay_fail(&be->last_error, ASSAY_ENOMEM, "CUDA attention: out of memory");
            cb->grp_idx     = ix;
            cb->grp_idx_cap = icap;
        }
        // one row, two chunks: the partial of one (row, chunk)
        size_t unit = cuda_attention_paged_partial_bytes(1, n_heads, hd, 2 * CUDA_SPLIT_KEYS,
                                                         CUDA_SPLIT_KEYS) /
                      2;
        size_t used = 0;
        cb->n_grp   = cuda_attn_groups(cb->grp, cb->grp_idx, &used, cb->h_q_off, cb->h_start,
                                       cb->n_seqs, CUDA_SPLIT_KEYS, unit, cb->attn_cap);
        if ((rc = scratch_grow(cb, &cb->grp_dev, &cb->grp_dev_bytes, used * sizeof(int32_t))))
            return rc;
        CUDA_CHECK(be, cudaMemcpyAsync(cb->grp_dev, cb->grp_idx, used * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, cb->stream));
        cb->grp_partial = 0;
        for (int k = 0; k < cb->n_grp; k++) {
            const cuda_attn_group *G = &cb->grp[k];
            size_t b        = G->rows > 0 ? cuda_attention_paged_partial_bytes(G->rows, n_heads, hd,
                                                                               G->max_ctx, CUDA_SPLIT_KEYS)
                                          : 0;
            cb->grp_partial = b > cb->grp_partial ? b : cb->grp_partial;
        }
        cb->grp_heads = n_heads;
        cb->grp_hd    = hd;
    }
    if (cb->grp_partial > cb->partial_bytes &&
        (rc = scratch_grow(cb, (void **)&cb->partial, &cb->partial_bytes, cb->grp_partial)))
        return rc;
    size_t qkv_stride = (size_t)(n_heads + 2 * n_kv_heads) * hd, out_stride = (size_t)n_heads * hd;
    for (int k = 0; k < cb->n_grp; k++) {
        const cuda_attn_group *G = &cb->grp[k];
        if (G->rows == 0)
            continue;
        const int32_t *qo = (const int32_t *)cb->grp_dev + G->idx_off;
        CUDA_CHECK(be, cuda_attention_paged(
                           out + (size_t)G->row0 * out_stride, qkv + (size_t)G->row0 * qkv_stride,
                           k_pool, v_pool, cb->d[CB_BLOCKS] + (size_t)G->seq0 * cb->max_blocks,
                           cb->max_blocks, cb->block_tokens, qo, qo + G->n_seqs + 1, G->n_seqs,
                           G->rows, G->max_ctx, n_heads, n_kv_heads, hd, window, CUDA_SPLIT_KEYS,
                           cb->partial, cb->stream));
    }
    return 0;
}

// Split-buffer bytes of the paged call planned for context ctx.
static size_t attn_need(const cuda_be *cb, int n_heads, int head_dim, int ctx) {
    return cuda_attention_paged_partial_bytes(cb->n_tokens, n_heads, head_dim, ctx,
                                              CUDA_SPLIT_KEYS);
}

static int run_attention(backend *be, void *out, const void *qkv, const void *k_pool,
                         const void *v_pool, int n_heads, int n_kv_heads, int head_dim,
                         int window) {
    cuda_be *cb = impl_of(be);
    if (cb->n_tokens == 0)
        return 0;
    if (!cb->d[CB_BLOCKS]) {
        CUDA_CHECK(be, cuda_attention_prefill((bf16 *)out, (const bf16 *)qkv, cb->d[CB_Q_OFF],
                                              cb->n_seqs, cb->max_len, n_heads, n_kv_heads,
                                              head_dim, window, cb->stream));
        return 0;
    }
    if (!k_pool || !v_pool)
        return assay_fail(&be->last_error, ASSAY_EINVAL,
                          "CUDA attention: a block table but no KV pools");
    // a decode pass plans for attn_ctx (cuda_graph_attn_ctx), unless that is past the cap where
    // its true context is not; the kernel's bits do not depend on the planned context
    int    ctx  = cb->attn_ctx;
    size_t need = attn_need(cb, n_heads, head_dim, ctx);
    if (need > cb->attn_cap && ctx != cb->max_ctx) {
        ctx  = cb->max_ctx;
        need = attn_need(cb, n_heads, head_dim, ctx);
    }
    int rc;
    if (need == SIZE_MAX)
        return assay_fail(&be->last_error, ASSAY_EINVAL,
                          "CUDA attention: %d heads of %d dims over %d tokens are not supported",
                          n_heads, head_dim, cb->max_ctx);
    if (need > cb->attn_cap)
        return attention_grouped(cb, (bf16 *)out, (const bf16 *)qkv, (const bf16 *)k_pool,
                                 (const bf16 *)v_pool, n_heads, n_kv_heads, head_dim, window);
    if (need > cb->partial_bytes &&
        (rc = scratch_grow(cb, (void **)&cb->partial, &cb->partial_bytes, need)))
        return rc;
    CUDA_CHECK(be, cuda_attention_paged(
                       (bf16 *)out, (const bf16 *)qkv, (const bf16 *)k_pool, (const bf16 *)v_pool,
                       cb->d[CB_BLOCKS], cb->max_blocks, cb->block_tokens, cb->d[CB_Q_OFF],
                       cb->d[CB_START], cb->n_seqs, cb->n_tokens, ctx, n_heads, n_kv_heads,
                       head_dim, window, CUDA_SPLIT_KEYS, cb->partial, cb->stream));
    return 0;
}

static int run_gather(backend *be, float *out, const float *x, int dim) {
    cuda_be *cb = impl_of(be);
    if (cb->n_sel == 0)
        return 0;
    CUDA_CHECK(be, cuda_gather_rows(out, x, cb->d[CB_SEL], cb->n_sel, dim, cb->stream));
    return 0;
}

static int run_lm_head(backend *be, const void *h, const void *w_head, int dim, int vocab,
                       be_head_mode mode) {
    cuda_be         *cb = impl_of(be);
    int              n  = cb->n_sel;
    int              rc;
    cuda_head_layout L;
    cuda_head_plan(&L, n);
    if ((rc = scratch_grow(cb, &cb->head_dev, &cb->head_cap, L.total)))
        return rc;
    int chunk = cuda_head_chunk_rows(
        vocab, CUDA_HEAD_CAP, n < CUDA_HEAD_CHUNK_ROWS ? (n > 0 ? n : 1) : CUDA_HEAD_CHUNK_ROWS);
    size_t need = (size_t)chunk * (size_t)vocab * sizeof(float);
    if (n > 0 && (rc = scratch_grow(cb, (void **)&cb->logits, &cb->logits_bytes, need)))
        return rc;
    char *base = (char *)cb->head_dev;
    for (int r0 = 0; r0 < n; r0 += chunk) {
        int m = n - r0 < chunk ? n - r0 : chunk;
        if ((rc = gemm_run(cb, cb->logits, 1, (const bf16 *)h + (size_t)r0 * dim,
                           (const bf16 *)w_head, m, dim, vocab)))
            return rc;
        const int32_t *tgt = mode == BE_HEAD_LOGPROB ? cb->d[CB_TARGETS] + r0 : NULL;
        // every output pointer is valid memory even in argmax mode (where they go unread)
        CUDA_CHECK(be, cuda_logits_reduce((float *)(base + L.off_logprob) + r0,
                                          (uint8_t *)(base + L.off_is_max) + r0,
                                          (int32_t *)(base + L.off_argmax) + r0, cb->logits, tgt, m,
                                          vocab, cb->stream));
    }
    return 0;
}

// ---- the pass's ops: run now, or recorded for a graph -------------------------------------------
// Each slot packs its arguments into a cuda_op; op_exec unpacks them into the run_* function, so
// an eager pass, a captured one and the ops recorded for comparison are the same calls.
static int op_exec(cuda_be *cb, const cuda_op *o) {
    backend *be = cb->be;
    void    *p0 = (void *)o->p[0], *p1 = (void *)o->p[1], *p2 = (void *)o->p[2];
    switch (o->kind) {
    case CUDA_OP_EMBED: return run_embed(be, (float *)p0, p1, (const float *)p2, o->a[0]);
    case CUDA_OP_ADD_NORM:
        return run_add_norm(be, (float *)p0, p1, p2, (const float *)o->p[3], (const float *)o->p[4],
                            (be_norm)o->a[0], o->a[1], o->a[2], o->f);
    case CUDA_OP_MATMUL:
        return run_matmul(be, p0, p1, p2, (const float *)o->p[3], o->a[0], o->a[1], o->a[2],
                          (be_epilogue)o->a[3]);
    case CUDA_OP_SWIGLU: return run_swiglu(be, p0, p1, o->a[0], o->a[1]);
    case CUDA_OP_ROPE_KV:
        return run_rope_kv(be, p0, p1, p2, (const float *)o->p[3], o->a[0], o->a[1], o->a[2]);
    case CUDA_OP_ATTENTION:
        return run_attention(be, p0, p1, p2, o->p[3], o->a[0], o->a[1], o->a[2], o->a[3]);
    case CUDA_OP_GATHER: return run_gather(be, (float *)p0, (const float *)p1, o->a[0]);
    case CUDA_OP_LM_HEAD: return run_lm_head(be, p0, p1, o->a[0], o->a[1], (be_head_mode)o->a[2]);
    default:
        return assay_fail(&be->last_error, ASSAY_EINTERNAL, "CUDA: recorded op of kind %d",
                          o->kind);
    }
}

static int op_issue(cuda_be *cb, const cuda_op *o) {
    if (!cb->deferring)
        return op_exec(cb, o);
    if (cuda_op_list_push(&cb->pass_ops, o))
        return assay_fail(&cb->be->last_error, ASSAY_ENOMEM, "CUDA: out of host memory");
    return 0;
}

static int cbe_embed(backend *be, float *x, const void *table, const float *pos_table, int dim) {
    cuda_op o = {CUDA_OP_EMBED, {dim, 0, 0, 0}, 0.0f, {x, table, pos_table, NULL, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_add_norm(backend *be, float *x, void *xn, const void *delta, const float *w,
                        const float *b, be_norm kind, int rows, int dim, float eps) {
    cuda_op o = {CUDA_OP_ADD_NORM, {(int)kind, rows, dim, 0}, eps, {x, xn, delta, w, b}};
    return op_issue(impl_of(be), &o);
}

static int cbe_matmul(backend *be, void *out, const void *x, const void *w, const float *bias,
                      int rows, int in, int out_dim, be_epilogue epi) {
    cuda_op o = {CUDA_OP_MATMUL, {rows, in, out_dim, (int)epi}, 0.0f, {out, x, w, bias, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_swiglu(backend *be, void *out, const void *gate_up, int rows, int ffn) {
    cuda_op o = {CUDA_OP_SWIGLU, {rows, ffn, 0, 0}, 0.0f, {out, gate_up, NULL, NULL, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_rope_kv(backend *be, void *qkv, void *k_pool, void *v_pool, const float *inv_freq,
                       int n_heads, int n_kv_heads, int head_dim) {
    cuda_op o = {CUDA_OP_ROPE_KV,
                 {n_heads, n_kv_heads, head_dim, 0},
                 0.0f,
                 {qkv, k_pool, v_pool, inv_freq, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_attention(backend *be, void *out, const void *qkv, const void *k_pool,
                         const void *v_pool, int n_heads, int n_kv_heads, int head_dim,
                         int window) {
    cuda_op o = {CUDA_OP_ATTENTION,
                 {n_heads, n_kv_heads, head_dim, window},
                 0.0f,
                 {out, qkv, k_pool, v_pool, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_gather(backend *be, float *out, const float *x, int dim) {
    cuda_op o = {CUDA_OP_GATHER, {dim, 0, 0, 0}, 0.0f, {out, x, NULL, NULL, NULL}};
    return op_issue(impl_of(be), &o);
}

static int cbe_lm_head(backend *be, const void *h, const void *w_head, int dim, int vocab,
                       be_head_mode mode) {
    cuda_be *cb = impl_of(be);
    if (mode == BE_HEAD_LOGPROB && cb->n_sel > 0 && !cb->d[CB_TARGETS])
        return assay_fail(&be->last_error, ASSAY_EINVAL,
                          "CUDA lm_head: log-probs asked for a batch without targets");
    if (vocab <= 0 || dim <= 0)
        return assay_fail(&be->last_error, ASSAY_EINVAL, "CUDA lm_head: dim %d, vocab %d", dim,
                          vocab);
    // fetch's bookkeeping is set when the op is issued: a replayed graph runs no run_lm_head
    cb->head_rows     = cb->n_sel;
    cb->head_has_prob = mode == BE_HEAD_LOGPROB;
    cuda_op o = {CUDA_OP_LM_HEAD, {dim, vocab, (int)mode, 0}, 0.0f, {h, w_head, NULL, NULL, NULL}};
    return op_issue(cb, &o);
}

// ---- decode passes as graphs --------------------------------------------------------------------
static int ops_run(cuda_be *cb) {
    for (int i = 0; i < cb->pass_ops.n; i++) {
        int rc = op_exec(cb, &cb->pass_ops.op[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void graphs_clear(cuda_be *cb) {
    void *drop[CUDA_GRAPH_SLOTS];
    cuda_graph_cache_clear(&cb->gcache, drop);
    for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
        if (drop[i])
            cudaGraphExecDestroy((cudaGraphExec_t)drop[i]);
    cudaGetLastError();
}

// Tests (ASSAY_CUDA_GRAPH_FAULT=sync|malloc|memcpy|pageable|meminfo): one call that every capture
// must refuse, made inside it, so the fallback to eager runs; real CUDA and the emulation alike.
static int graph_fault(cuda_be *cb) {
    const char *f = cb->graph_fault;
    int         host[4];
    void       *p = NULL;
    size_t      fr, tot;
    cudaError_t e;
    if (!strcmp(f, "malloc"))
        e = cudaMalloc(&p, 256);
    else if (!strcmp(f, "memcpy"))
        e = cudaMemcpy(host, cb->head_dev, sizeof host, cudaMemcpyDeviceToHost);
    else if (!strcmp(f, "pageable"))
        e = cudaMemcpyAsync(host, cb->head_dev, sizeof host, cudaMemcpyDeviceToHost, cb->stream);
    else if (!strcmp(f, "meminfo"))
        e = cudaMemGetInfo(&fr, &tot);
    else
        e = cudaStreamSynchronize(cb->stream);
    if (p)
        cudaFree(p); // not reached where the capture refused the allocation
    if (e != cudaSuccess)
        return cuda_fail_call(cb->be, e, "ASSAY_CUDA_GRAPH_FAULT's call", __FILE__, __LINE__);
    return assay_fail(&cb->be->last_error, ASSAY_EDEVICE,
                      "CUDA: ASSAY_CUDA_GRAPH_FAULT=%s was allowed during capture", f);
}

// Captures the recorded pass into *exec. The capture is ended whatever fails inside it, so the
// stream is usable again; nothing captured has run.
static int graph_capture(cuda_be *cb, cudaGraphExec_t *exec) {
    backend    *be = cb->be;
    cudaGraph_t g  = NULL;
    *exec          = NULL;
    CUDA_CHECK(be, cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal));
    cb->capturing = 1;
    int rc        = ops_run(cb);
    if (!rc && cb->graph_fault)
        rc = graph_fault(cb);
    cb->capturing = 0;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &g);
    if (!rc && e != cudaSuccess)
        rc = cuda_fail_call(be, e, "cudaStreamEndCapture", __FILE__, __LINE__);
    if (!rc && (e = cudaGraphInstantiateWithFlags(exec, g, 0)) != cudaSuccess) {
        *exec = NULL;
        rc    = cuda_fail_call(be, e, "cudaGraphInstantiateWithFlags", __FILE__, __LINE__);
    }
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError();
    return rc;
}

// Whether the recorded pass can be a graph: its paged attention fits the split buffer's cap when
// planned for the block table's span (else it runs in groups planned on the host per pass).
static int pass_graphable(const cuda_be *cb) {
    for (int i = 0; i < cb->pass_ops.n; i++) {
        const cuda_op *o = &cb->pass_ops.op[i];
        if (o->kind == CUDA_OP_ATTENTION &&
            attn_need(cb, o->a[0], o->a[2], cb->attn_ctx) > cb->attn_cap)
            return 0;
    }
    return 1;
}

// The end of a recorded decode pass (fetch): eager, captured then launched, or replayed.
static int pass_finish(cuda_be *cb) {
    if (!cb->deferring)
        return 0;
    cb->deferring = 0;
    if (!cb->graphs || !pass_graphable(cb))
        return ops_run(cb);
    int               slot;
    void             *drop = NULL;
    cuda_graph_action act =
        cuda_graph_decide(&cb->gcache, &cb->gkey, &cb->pass_ops, cb->scratch_gen, &slot, &drop);
    if (drop)
        cudaGraphExecDestroy((cudaGraphExec_t)drop);
    cuda_graph_slot *s = &cb->gcache.slot[slot];
    if (act == CUDA_GRAPH_REPLAY) {
        cb->n_replayed++;
        CUDA_CHECK(cb->be, cudaGraphLaunch((cudaGraphExec_t)s->exec, cb->stream));
        return 0;
    }
    if (act == CUDA_GRAPH_CAPTURE) {
        cudaGraphExec_t exec;
        if (!graph_capture(cb, &exec)) {
            s->exec = (void *)exec;
            cb->n_captured++;
            CUDA_CHECK(cb->be, cudaGraphLaunch(exec, cb->stream));
            return 0;
        }
        // never a wrong answer: this pass and the rest run eagerly
        fprintf(stderr,
                "assay: note: CUDA graph capture failed (%s); decode steps run without graphs\n",
                cb->be->last_error.msg);
        cb->graphs = 0;
        graphs_clear(cb);
    }
    int rc = ops_run(cb);
    if (act != CUDA_GRAPH_CAPTURE)
        s->gen = cb->scratch_gen;
    return rc;
}

// Entry points other than the pass's ops run what a pass recorded first, in order (a pass that
// never reaches fetch, or a copy in its middle).
static int pass_flush(cuda_be *cb) {
    if (!cb->deferring)
        return 0;
    cb->deferring = 0;
    return ops_run(cb);
}

static int cbe_fetch(backend *be, float *logprob, uint8_t *is_max, int32_t *argmax) {
    cuda_be *cb = impl_of(be);
    int      n  = cb->head_rows;
    int      rc;
    if ((rc = pass_finish(cb)))
        return rc;
    if (n < 0)
        return assay_fail(&be->last_error, ASSAY_EINVAL, "CUDA fetch: no lm_head in this pass");
    // after an argmax-only lm_head there are no log-probs: only argmax is written (as the CPU)
    if (!cb->head_has_prob)
        logprob = NULL, is_max = NULL;
    if (n == 0)
        return 0;
    cuda_head_layout L;
    cuda_head_plan(&L, n);
    if ((rc = pinned_grow(cb, &cb->head_host, &cb->head_host_cap, L.total)))
        return rc;
    CUDA_CHECK(be, cudaMemcpyAsync(cb->head_host, cb->head_dev, L.total, cudaMemcpyDeviceToHost,
                                   cb->stream));
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
    const char *h = (const char *)cb->head_host;
    if (logprob)
        memcpy(logprob, h + L.off_logprob, (size_t)n * sizeof(float));
    if (argmax)
        memcpy(argmax, h + L.off_argmax, (size_t)n * sizeof(int32_t));
    if (is_max)
        memcpy(is_max, h + L.off_is_max, (size_t)n);
    return 0;
}

static int cbe_kv_block_copy(backend *be, void *k_pool, void *v_pool, int n_layers,
                             size_t layer_bytes, size_t block_bytes, int dst, int src) {
    cuda_be *cb = impl_of(be);
    int      rc = pass_flush(cb);
    if (rc || n_layers <= 0 || dst == src)
        return rc;
    if (dst < 0 || src < 0 || block_bytes == 0 || block_bytes > layer_bytes ||
        ((size_t)(dst > src ? dst : src) + 1) > layer_bytes / block_bytes)
        return assay_fail(&be->last_error, ASSAY_EINVAL,
                          "CUDA kv_block_copy: block %d -> %d of %zu bytes in layers of %zu "
                          "bytes",
                          src, dst, block_bytes, layer_bytes);
    // one strided copy per pool: row l is layer l's block
    size_t d_off = (size_t)dst * block_bytes, s_off = (size_t)src * block_bytes;
    CUDA_CHECK(be, cudaMemcpy2DAsync((char *)k_pool + d_off, layer_bytes,
                                     (const char *)k_pool + s_off, layer_bytes, block_bytes,
                                     (size_t)n_layers, cudaMemcpyDeviceToDevice, cb->stream));
    CUDA_CHECK(be, cudaMemcpy2DAsync((char *)v_pool + d_off, layer_bytes,
                                     (const char *)v_pool + s_off, layer_bytes, block_bytes,
                                     (size_t)n_layers, cudaMemcpyDeviceToDevice, cb->stream));
    return 0;
}

static const backend_ops cuda_ops = {
    "cuda",       cbe_destroy,      cbe_mem_info,      cbe_scratch_bytes,
    NULL, // set_threads: the GPU has no host thread count to set
    cbe_alloc,    cbe_release,      cbe_upload,        cbe_download,      cbe_copy,
    cbe_sync,     cbe_weight_bytes, cbe_upload_weight, cbe_set_batch,     cbe_embed,
    cbe_add_norm, cbe_matmul,       cbe_swiglu,        cbe_rope_kv,       cbe_attention,
    cbe_gather,   cbe_lm_head,      cbe_fetch,         cbe_kv_block_copy,
};

// A kernel of this file run once at creation: a device this build has no code for (sm_80 and
// sm_90 cubins only, no PTX) fails here with a clear message, not in the middle of a pass.
static __global__ void cuda_probe_kernel(int *flag) { *flag = 42; }

static int cuda_probe_kernels(cuda_be *cb, const cudaDeviceProp *p) {
    backend *be   = cb->be;
    int     *flag = NULL, host = 0;
    CUDA_CHECK(be, cudaMalloc((void **)&flag, sizeof(int)));
    cuda_probe_kernel<<<1, 1, 0, cb->stream>>>(flag);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(&host, flag, sizeof host, cudaMemcpyDeviceToHost, cb->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(cb->stream);
    cudaFree(flag);
    if (e != cudaSuccess || host != 42)
        return assay_fail(&be->last_error, ASSAY_EDEVICE,
                          "%s (compute capability %d.%d) cannot run this build's kernels (built "
                          "for sm_80 and sm_90): %s",
                          p->name, p->major, p->minor,
                          e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
    return 0;
}

extern "C" backend *backend_cuda_create(int ordinal, const backend_opts *opts, assay_error *err) {
    int         count = 0;
    cudaError_t e     = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        cudaGetLastError();
        // the probe tells "no driver" from "no GPU" from "driver too old"
        cuda_device_info info;
        device_cuda_probe(&info);
        assay_fail(err, ASSAY_EDEVICE, "cuda:%d: %s", ordinal,
                   info.count == 0 && info.why_none[0]
                       ? info.why_none
                       : (e != cudaSuccess ? cudaGetErrorString(e) : "no device"));
        return NULL;
    }
    if (ordinal < 0 || ordinal >= count) {
        assay_fail(err, ASSAY_EDEVICE, "cuda:%d: no such device (%d CUDA device%s)", ordinal, count,
                   count == 1 ? "" : "s");
        return NULL;
    }
    cudaDeviceProp p;
    if ((e = cudaSetDevice(ordinal)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&p, ordinal)) != cudaSuccess) {
        cudaGetLastError();
        assay_fail(err, ASSAY_EDEVICE, "cuda:%d: unusable (%s)", ordinal, cudaGetErrorString(e));
        return NULL;
    }
    if (p.major < 8) {
        assay_fail(err, ASSAY_EDEVICE,
                   "cuda:%d: %s has compute capability %d.%d; bf16 tensor cores need 8.0 or newer",
                   ordinal, p.name, p.major, p.minor);
        return NULL;
    }
    backend *be = (backend *)calloc(1, sizeof *be);
    cuda_be *cb = (cuda_be *)calloc(1, sizeof *cb);
    if (!be || !cb) {
        free(be);
        free(cb);
        assay_fail(err, ASSAY_EDEVICE, "cuda:%d: out of host memory", ordinal);
        return NULL;
    }
    be->ops                  = &cuda_ops;
    be->impl                 = cb;
    be->n_threads            = 1;
    be->caps.host_memory     = 0;
    be->caps.weight_dtype    = DTYPE_BF16;
    be->caps.act_dtype       = DTYPE_BF16;
    be->caps.kv_dtype        = DTYPE_BF16;
    cb->be                   = be;
    cb->ordinal              = ordinal;
    cb->fast                 = opts && opts->fast;
    cb->head_rows            = -1;
    be->caps.batch_invariant = !cb->fast;
    cb->attn_cap             = CUDA_ATTN_PARTIAL_CAP;
    // tests/gpu/check.sh sets a tiny cap to run the grouped attention path on small models
    const char *cap_env = getenv("ASSAY_CUDA_ATTN_CAP");
    if (cap_env && *cap_env)
        cb->attn_cap = (size_t)strtoull(cap_env, NULL, 10);
    const char *g_env = getenv("ASSAY_CUDA_GRAPHS"), *f_env = getenv("ASSAY_CUDA_GRAPH_FAULT"),
               *s_env = getenv("ASSAY_CUDA_GRAPH_STATS");
    cb->graphs        = !(g_env && strcmp(g_env, "0") == 0);
    cb->graph_fault   = f_env && *f_env ? f_env : NULL;
    cb->graph_stats   = s_env && strcmp(s_env, "1") == 0;

    int rc = lt_load(&cb->lt, &be->last_error);
    if (!rc) {
        rc = [&]() -> int {
            CUDA_CHECK(be, cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
            CUDA_CHECK(be, cudaEventCreateWithFlags(&cb->batch_copied, cudaEventDisableTiming));
            for (int i = 0; i < 2; i++)
                CUDA_CHECK(be,
                           cudaEventCreateWithFlags(&cb->stage_free[i], cudaEventDisableTiming));
            if ((rc = cuda_probe_kernels(cb, &p)))
                return rc;
            CUDA_CHECK(be, cudaMalloc(&cb->lt_ws, CUDA_LT_WORKSPACE));
            const lt_api *lt = &cb->lt;
            CUBLAS_CHECK(be, lt, lt->create(&cb->lt_handle));
            CUBLAS_CHECK(be, lt, lt->desc_create(&cb->lt_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
            CUBLAS_CHECK(be, lt,
                         lt->desc_set(cb->lt_desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
            CUBLAS_CHECK(be, lt,
                         lt->desc_set(cb->lt_desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
            return 0;
        }();
    }
    if (rc) {
        // the device spec first, so the reason reads "cuda:0: cuBLASLt not found ..."
        assay_fail(err, ASSAY_EDEVICE, "cuda:%d: %s", ordinal, be->last_error.msg);
        cbe_destroy(be);
        return NULL;
    }
    return be;
}
