// tests/gpu/emu/cublaslt_emu.cc — an emulated cuBLASLt (build/emu/libcublasLt-emu.so; make
// cuda-emu) for the CPU emulation of the CUDA build: the functions backend_cuda.cu resolves, a
// plain GEMM with cuBLASLt's documented semantics — column-major layouts (rows, cols, ld),
// D = alpha * op(A) * op(B) + beta * C with op from CUBLASLT_MATMUL_DESC_TRANSA/TRANSB, C not
// read when beta == 0 — for bf16 A and B, fp32 accumulation in order over k (so a column of D
// never depends on the other columns), D bf16 (round to nearest even) or f32. Everything else
// (shapes that do not agree, other types or compute types, an ld shorter than the rows,
// pointers below the alignment promised in the preference, a workspace smaller than the
// algorithm's) fails with CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED, and says why on stderr.
#include "cublasLt.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

namespace {
struct desc {
    int compute, scale, transa, transb, transc, epilogue;
};
struct layout {
    int      type;
    uint64_t rows, cols;
    int64_t  ld;
};
struct pref {
    uint64_t ws;
    uint32_t align[4];
};
// algo data: [0] id, [1] splitK, [2] reduction scheme, [3] the alignment it was chosen for
cublasStatus_t bad(const char *why) {
    fprintf(stderr, "cublasLt-emu: %s\n", why);
    return CUBLAS_STATUS_INVALID_VALUE;
}
float bf(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t to_bf(float f) { return __float2bfloat16_rn(f).x; }

// Shapes of D = op(A) op(B): m x n with inner k; 0 when they agree.
cublasStatus_t shapes(const desc *op, const layout *a, const layout *b, const layout *c,
                      const layout *d, uint64_t *m, uint64_t *n, uint64_t *k) {
    if (!op || !a || !b || !c || !d)
        return bad("a NULL descriptor");
    if (op->compute != CUBLAS_COMPUTE_32F || op->scale != CUDA_R_32F)
        return bad("compute or scale type other than CUBLAS_COMPUTE_32F / CUDA_R_32F");
    if (op->epilogue)
        return bad("epilogues are not emulated");
    if (op->transc)
        return bad("TRANSC must be N");
    if (a->type != CUDA_R_16BF || b->type != CUDA_R_16BF)
        return bad("A and B must be CUDA_R_16BF");
    if (d->type != CUDA_R_16BF && d->type != CUDA_R_32F)
        return bad("D must be CUDA_R_16BF or CUDA_R_32F");
    if (c->type != d->type)
        return bad("C and D types differ");
    const layout *ls[4] = {a, b, c, d};
    for (const layout *l : ls)
        if (l->ld < (int64_t)(l->rows > 1 ? l->rows : 1))
            return bad("a layout's leading dimension is below its rows (column-major)");
    uint64_t am = op->transa ? a->cols : a->rows, ak = op->transa ? a->rows : a->cols;
    uint64_t bk = op->transb ? b->cols : b->rows, bn = op->transb ? b->rows : b->cols;
    if (ak != bk)
        return bad("op(A) columns != op(B) rows");
    if (c->rows != am || c->cols != bn || d->rows != am || d->cols != bn)
        return bad("C/D shape is not op(A) rows x op(B) columns");
    *m = am, *n = bn, *k = ak;
    return CUBLAS_STATUS_SUCCESS;
}
// One GEMM with everything it reads copied: run now, or later from a captured graph.
struct mm_job {
    desc        op;
    layout      a, b, c, d;
    const void *A, *B, *C;
    void       *D;
    uint64_t    m, n, k;
    float       al, be;
};
void mm_drop(void *p) { delete (mm_job *)p; }
void mm_run(void *p) {
    const mm_job   *j  = (const mm_job *)p;
    const desc     *op = &j->op;
    const layout   *a = &j->a, *b = &j->b, *c = &j->c, *d = &j->d;
    const uint64_t  m = j->m, n = j->n, k = j->k;
    const float     al = j->al, be = j->be;
    const void     *C  = j->C;
    void           *D  = j->D;
    const uint16_t *pa = (const uint16_t *)j->A, *pb = (const uint16_t *)j->B;
    int             f32 = d->type == CUDA_R_32F;
#pragma omp parallel for schedule(static)
    for (int64_t jj = 0; jj < (int64_t)n; jj++)
        for (uint64_t i = 0; i < m; i++) {
            float acc = 0.0f;
            for (uint64_t p = 0; p < k; p++) {
                float x = bf(op->transa ? pa[p + i * a->ld] : pa[i + p * a->ld]);
                float y = bf(op->transb ? pb[jj + p * b->ld] : pb[p + jj * b->ld]);
                acc += x * y;
            }
            float r = al * acc;
            if (be != 0.0f)
                r += be * (f32 ? ((const float *)C)[i + jj * c->ld]
                               : bf(((const uint16_t *)C)[i + jj * c->ld]));
            if (f32)
                ((float *)D)[i + jj * d->ld] = r;
            else
                ((uint16_t *)D)[i + jj * d->ld] = to_bf(r);
        }
}
} // namespace

extern "C" {
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = (cublasLtHandle_t)malloc(16);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasLtGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "cublasLt-emu error";
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t ct,
                                        cudaDataType_t scale) {
    desc *x    = (desc *)calloc(1, sizeof(desc));
    x->compute = ct, x->scale = scale;
    *d = (cublasLtMatmulDesc_t)x;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t           d,
                                              cublasLtMatmulDescAttributes_t a, const void *buf,
                                              size_t n) {
    desc *x = (desc *)d;
    if (n != sizeof(int32_t))
        return bad("MatmulDescSetAttribute: size is not 4");
    int32_t v;
    memcpy(&v, buf, 4);
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: x->transa = v; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: x->transb = v; break;
    case CUBLASLT_MATMUL_DESC_TRANSC: x->transc = v; break;
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: x->compute = v; break;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: x->scale = v; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: x->epilogue = v; break;
    default: return bad("MatmulDescSetAttribute: attribute not emulated");
    }
    if (v != 0 && v != 1 && (a == CUBLASLT_MATMUL_DESC_TRANSA || a == CUBLASLT_MATMUL_DESC_TRANSB))
        return bad("transpose must be CUBLAS_OP_N or CUBLAS_OP_T");
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    layout *x = (layout *)malloc(sizeof(layout));
    *x        = {type, rows, cols, ld};
    *l        = (cublasLtMatrixLayout_t)x;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    pref *x = (pref *)calloc(1, sizeof(pref));
    for (int i = 0; i < 4; i++)
        x->align[i] = 256;
    *p = (cublasLtMatmulPreference_t)x;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t           p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *buf, size_t n) {
    pref *x = (pref *)p;
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (n != 8)
            return bad("MAX_WORKSPACE_BYTES is a uint64_t");
        memcpy(&x->ws, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
        a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        if (n != 4)
            return bad("MIN_ALIGNMENT_*_BYTES is a uint32_t");
        memcpy(&x->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
        return CUBLAS_STATUS_SUCCESS;
    }
    return bad("PreferenceSetAttribute: attribute not emulated");
}
// One algorithm (two candidates: the first with split-K 2, to exercise the backend's choice).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *res, int *returned) {
    uint64_t       m, n, k;
    cublasStatus_t st =
        shapes((desc *)op, (layout *)a, (layout *)b, (layout *)c, (layout *)d, &m, &n, &k);
    if (st)
        return st;
    const pref *x     = (const pref *)p;
    uint32_t    align = 256;
    for (int i = 0; i < 4; i++)
        align = x->align[i] < align ? x->align[i] : align;
    int cnt = 0;
    for (int s = 2; s >= 1 && cnt < requested; s--, cnt++) {
        memset(&res[cnt], 0, sizeof res[cnt]);
        res[cnt].algo.data[0]  = 1;
        res[cnt].algo.data[1]  = (uint64_t)s;
        res[cnt].algo.data[2]  = s > 1 ? CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE : 0;
        res[cnt].algo.data[3]  = align;
        res[cnt].workspaceSize = s > 1 ? (size_t)m * n * 4 : 0;
        res[cnt].state         = CUBLAS_STATUS_SUCCESS;
        res[cnt].wavesCount    = 1.0f;
        if (res[cnt].workspaceSize > x->ws)
            cnt--; // does not fit the workspace: not offered
    }
    *returned = cnt;
    return cnt ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t op,
                                       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                       const cublasLtMatmulAlgo_t      *algo,
                                       cublasLtMatmulHeuristicResult_t *res) {
    uint64_t       m, n, k;
    cublasStatus_t st =
        shapes((desc *)op, (layout *)a, (layout *)b, (layout *)c, (layout *)d, &m, &n, &k);
    if (st)
        return st;
    if (algo->data[0] != 1)
        return bad("AlgoCheck: not an algorithm of this library");
    memset(res, 0, sizeof *res);
    res->algo          = *algo;
    res->workspaceSize = algo->data[1] > 1 ? (size_t)m * n * 4 : 0;
    res->state         = CUBLAS_STATUS_SUCCESS;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t          *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t a,
                                                    void *buf, size_t n, size_t *written) {
    if (a == CUBLASLT_ALGO_CONFIG_SPLITK_NUM || a == CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) {
        if (n != 4)
            return bad("ALGO_CONFIG_SPLITK_NUM / REDUCTION_SCHEME are 4 bytes");
        uint32_t v = (uint32_t)algo->data[a == CUBLASLT_ALGO_CONFIG_SPLITK_NUM ? 1 : 2];
        memcpy(buf, &v, 4);
        if (written)
            *written = 4;
        return CUBLAS_STATUS_SUCCESS;
    }
    return bad("AlgoConfigGetAttribute: attribute not emulated");
}
cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t                *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t a,
                                                    const void *buf, size_t n) {
    if (a == CUBLASLT_ALGO_CONFIG_SPLITK_NUM || a == CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) {
        if (n != 4)
            return bad("ALGO_CONFIG_SPLITK_NUM / REDUCTION_SCHEME are 4 bytes");
        uint32_t v;
        memcpy(&v, buf, 4);
        algo->data[a == CUBLASLT_ALGO_CONFIG_SPLITK_NUM ? 1 : 2] = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    return bad("AlgoConfigSetAttribute: attribute not emulated");
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t opd, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t Ad, const void *B,
                              cublasLtMatrixLayout_t Bd, const void *beta, const void *C,
                              cublasLtMatrixLayout_t Cd, void *D, cublasLtMatrixLayout_t Dd,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_size,
                              cudaStream_t stream) {
    const desc   *op = (const desc *)opd;
    const layout *a = (const layout *)Ad, *b = (const layout *)Bd, *c = (const layout *)Cd,
                 *d = (const layout *)Dd;
    uint64_t       m, n, k;
    cublasStatus_t st = shapes(op, a, b, c, d, &m, &n, &k);
    if (st)
        return st;
    if (!algo || algo->data[0] != 1)
        return bad("Matmul: no algorithm of this library");
    uint64_t align = algo->data[3];
    if (((uintptr_t)A | (uintptr_t)B | (uintptr_t)C | (uintptr_t)D) % align)
        return bad("Matmul: a pointer below the alignment the algorithm was chosen for");
    if (algo->data[1] > 1 && ws_size < (size_t)m * n * 4)
        return bad("Matmul: workspace too small for split-K");
    // every operand inside one device allocation (the check build/emu/assay exports)
    typedef int (*range_fn)(const void *, size_t);
    static range_fn in_device = (range_fn)dlsym(RTLD_DEFAULT, "emu_device_range_ok");
    if (in_device) {
        const void   *ptr[4] = {A, B, C, D};
        const layout *lay[4] = {a, b, c, d};
        for (int i = 0; i < 4; i++) {
            if (i == 2 && ((const float *)beta)[0] == 0.0f)
                continue; // C is not read
            size_t el = lay[i]->type == CUDA_R_32F ? 4 : 2;
            size_t n =
                lay[i]->cols ? ((lay[i]->cols - 1) * (size_t)lay[i]->ld + lay[i]->rows) * el : 0;
            if (!in_device(ptr[i], n))
                return bad("Matmul: an operand is not inside one device allocation");
        }
        if (ws && ws_size && !in_device(ws, ws_size))
            return bad("Matmul: the workspace is not inside one device allocation");
    }
    mm_job *j = new mm_job;
    j->op = *op, j->a = *a, j->b = *b, j->c = *c, j->d = *d;
    j->A = A, j->B = B, j->C = C, j->D = D;
    j->m = m, j->n = n, j->k = k;
    memcpy(&j->al, alpha, 4);
    memcpy(&j->be, beta, 4);
    // a capturing stream records the GEMM (descriptors and scalars copied, as cuBLASLt does)
    typedef int (*capture_fn)(cudaStream_t, void (*)(void *), void *, void (*)(void *));
    static capture_fn capture = (capture_fn)dlsym(RTLD_DEFAULT, "emu_capture_add");
    int               r       = capture ? capture(stream, mm_run, j, mm_drop) : 0;
    if (r == 0) {
        mm_run(j);
        delete j;
    }
    return r < 0 ? bad("Matmul: refused by the stream's capture") : CUBLAS_STATUS_SUCCESS;
}
}
