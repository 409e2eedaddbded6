/* kernels/cpu/gemm.c — linear layers and the fused LM head on weights packed once at load
 * (layout and reduction-order contract in ops.h). Our own GEMM rather than OpenBLAS: a BLAS
 * picks kernels (and so summation orders) by call shape and repacks the weights on every call;
 * here the order is fixed per output element, so any row split, tile or thread count gives the
 * same bits, and the weights are packed once.
 *
 * Structure (BLIS-like): X rows are packed into GEMM_MR-row micro-panels ([k][mr]); a task is
 * (up to GEMM_RB micro-panels) x (up to GEMM_PB weight panels); inside a task, for each
 * GEMM_KC-long slice of k, each weight panel slice is applied to every micro-panel while it is
 * hot in L1/L2. The micro-kernel keeps an mr x 32 tile of C in registers (AVX-512: 12 x 32 =
 * 24 zmm accumulators; AVX2: 6 x 16 per call; a portable fmaf loop otherwise), chosen at run
 * time, compiled with function-level target attributes so the build flags stay generic.
 *
 * Weight formats (ops.h): the AVX-512 micro-kernel decodes bf16 and Q8_0 weights in registers as
 * it streams a panel (decode reads each weight once, so fewer bytes is the speed-up), except that
 * a Q8_0 slice applied to several micro-panels is decoded once into an f32 buffer; the AVX2 and
 * portable paths decode a panel's k slice into an f32 buffer first. Both give the exact f32 value
 * of each weight, so every path keeps the f32 contract. */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/vmath.h"

#define GEMM_NR CPU_PANEL /* output features per weight panel (one micro-tile's width) */
#define GEMM_MR 12        /* rows per micro-panel (AVX-512: 24 accumulators of 32) */
#define GEMM_KC 256       /* k per pass: a weight panel slice is 32 KiB */
#define GEMM_RB 8         /* micro-panels per task, reusing each weight slice from cache */
#define GEMM_PB 16        /* at most this many weight panels per task */
#define HEAD_ROWS (GEMM_MR * GEMM_RB) /* LM-head rows per chunk: one task row range */

/* ---- instruction set --------------------------------------------------------------------- */

static int isa_cap = 2; /* tests lower it to check that every path gives the same bits */

/* __builtin_cpu_supports reads what libgcc's constructor detected: cheap, and thread-safe */
static int isa_detected(void) {
    return __builtin_cpu_supports("avx512f")                                 ? 2
           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                             : 0;
}

int cpu_gemm_isa(void) {
    int d = isa_detected();
    return d < isa_cap ? d : isa_cap;
}

void cpu_gemm_set_isa(int max_isa) { isa_cap = max_isa < 0 ? 2 : max_isa; }

/* ---- packing ----------------------------------------------------------------------------- */

size_t gemm_packed_floats(int n, int k) {
    return (size_t)((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR * (size_t)k;
}

void gemm_pack(float *dst, const float *w, int n, int k) {
    int n_panels = (n + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((size_t)n * k >= 4 * CPU_PAR_MIN_WORK)
    for (int p = 0; p < n_panels; p++) {
        float *d = dst + (size_t)p * GEMM_NR * k;
        for (int j = 0; j < GEMM_NR; j++) {
            int r = p * GEMM_NR + j;
            for (int kk = 0; kk < k; kk++)
                d[(size_t)kk * GEMM_NR + j] = r < n ? w[(size_t)r * k + kk] : 0.0f;
        }
    }
}

void gemm_unpack_row(float *dst, const float *packed, int row, int k) {
    const float *s = packed + (size_t)(row / GEMM_NR) * GEMM_NR * k + row % GEMM_NR;
    for (int kk = 0; kk < k; kk++)
        dst[kk] = s[(size_t)kk * GEMM_NR];
}

/* ---- weight formats ---------------------------------------------------------------------- */

/* k rounded up to whole Q8_0 blocks */
static size_t q8_blocks(int k) { return ((size_t)k + GEMM_NR - 1) / GEMM_NR; }

/* Bytes of one packed panel (32 output features, all of k). */
static size_t panel_bytes(cpu_wfmt fmt, int k) {
    switch (fmt) {
    case CPU_W_BF16: return (size_t)GEMM_NR * k * sizeof(uint16_t);
    case CPU_W_Q8_0: return q8_blocks(k) * CPU_Q8_BLOCK_BYTES;
    default: return (size_t)GEMM_NR * k * sizeof(float);
    }
}

size_t gemm_packed_bytes(cpu_wfmt fmt, int n, int k) {
    return (size_t)((n + GEMM_NR - 1) / GEMM_NR) * panel_bytes(fmt, k);
}

/* One Q8_0 block of 32 values as GGUF quantizes it: d = amax / 127 (stored as f16), q =
 * roundf(x * (1 / d)) with the unrounded d. *d gets the f16 scale. */
static void q8_quantize(uint16_t *d, int8_t *q, const float *x, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    for (int i = 0; i < GEMM_NR; i++) {
        /* |x * id| <= 127 for finite weights; a NaN or infinite weight must not reach the int
         * conversion (undefined behaviour): it becomes 0 */
        float r = i < n ? roundf(x[i] * id) : 0.0f;
        q[i]    = (int8_t)(r >= -128.0f && r <= 127.0f ? r : 0.0f);
    }
    *d = f32_to_f16(dd);
}

/* Panel p of a Q8_0 weight, from f32 rows (quantized) or from GGUF blocks (copied). */
static void q8_pack_panel(char *dst, int p, int n, int k, const void *src, int gguf) {
    int8_t q[GEMM_NR];
    for (size_t b = 0; b < q8_blocks(k); b++) {
        char     *blk = dst + b * CPU_Q8_BLOCK_BYTES;
        uint16_t *ds  = (uint16_t *)blk;
        int8_t   *qs  = (int8_t *)(blk + GEMM_NR * sizeof(uint16_t));
        int       kn  = k - (int)b * GEMM_NR < GEMM_NR ? k - (int)b * GEMM_NR : GEMM_NR;
        for (int j = 0; j < GEMM_NR; j++) {
            int r = p * GEMM_NR + j;
            if (r >= n) {
                ds[j] = 0;
                memset(q, 0, sizeof q);
            } else if (gguf) { /* 34-byte GGUF blocks: f16 d, 32 int8 */
                const unsigned char *g =
                    (const unsigned char *)src + ((size_t)r * q8_blocks(k) + b) * 34;
                memcpy(&ds[j], g, 2);
                memcpy(q, g + 2, GEMM_NR);
            } else {
                q8_quantize(&ds[j], q, (const float *)src + (size_t)r * k + b * GEMM_NR, kn);
            }
            for (int i = 0; i < GEMM_NR; i++)
                qs[i * GEMM_NR + j] = q[i];
        }
    }
}

void gemm_pack_fmt(void *dst, cpu_wfmt fmt, const float *w, int n, int k) {
    if (fmt == CPU_W_F32) {
        gemm_pack(dst, w, n, k);
        return;
    }
    int n_panels = (n + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((size_t)n * k >= 4 * CPU_PAR_MIN_WORK)
    for (int p = 0; p < n_panels; p++) {
        char *d = (char *)dst + (size_t)p * panel_bytes(fmt, k);
        if (fmt == CPU_W_Q8_0) {
            q8_pack_panel(d, p, n, k, w, 0);
            continue;
        }
        uint16_t *h = (uint16_t *)d;
        for (int j = 0; j < GEMM_NR; j++) {
            int r = p * GEMM_NR + j;
            for (int kk = 0; kk < k; kk++)
                h[(size_t)kk * GEMM_NR + j] = r < n ? f32_to_bf16(w[(size_t)r * k + kk]) : 0;
        }
    }
}

void gemm_pack_q8_0(void *dst, const void *blocks, int n, int k) {
    int n_panels = (n + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((size_t)n * k >= 4 * CPU_PAR_MIN_WORK)
    for (int p = 0; p < n_panels; p++)
        q8_pack_panel((char *)dst + (size_t)p * panel_bytes(CPU_W_Q8_0, k), p, n, k, blocks, 1);
}

/* w (kc, 32) f32 = a panel's k slice decoded (slice: its first element or Q8_0 block). */
static void decode_slice(float *w, const void *slice, cpu_wfmt fmt, int kc) {
    if (fmt == CPU_W_BF16) {
        const uint16_t *h = slice;
        for (size_t i = 0; i < (size_t)kc * GEMM_NR; i++)
            w[i] = bf16_to_f32(h[i]);
        return;
    }
    for (int kk = 0; kk < kc; kk++) {
        const char     *blk = (const char *)slice + (size_t)kk / GEMM_NR * CPU_Q8_BLOCK_BYTES;
        const uint16_t *ds  = (const uint16_t *)blk;
        const int8_t   *qs =
            (const int8_t *)(blk + GEMM_NR * sizeof(uint16_t)) + kk % GEMM_NR * GEMM_NR;
        for (int j = 0; j < GEMM_NR; j++)
            w[(size_t)kk * GEMM_NR + j] = f16_to_f32(ds[j]) * (float)qs[j];
    }
}

void gemm_unpack_row_fmt(float *dst, const void *packed, cpu_wfmt fmt, int row, int k) {
    const char *panel = (const char *)packed + (size_t)(row / GEMM_NR) * panel_bytes(fmt, k);
    int         j     = row % GEMM_NR;
    if (fmt == CPU_W_F32) {
        gemm_unpack_row(dst, packed, row, k);
    } else if (fmt == CPU_W_BF16) {
        const uint16_t *h = (const uint16_t *)panel + j;
        for (int kk = 0; kk < k; kk++)
            dst[kk] = bf16_to_f32(h[(size_t)kk * GEMM_NR]);
    } else {
        for (int kk = 0; kk < k; kk++) {
            const char *blk = panel + (size_t)kk / GEMM_NR * CPU_Q8_BLOCK_BYTES;
            int8_t      q =
                ((const int8_t *)(blk + GEMM_NR * sizeof(uint16_t)))[(kk % GEMM_NR) * GEMM_NR + j];
            dst[kk] = f16_to_f32(((const uint16_t *)blk)[j]) * (float)q;
        }
    }
}

/* xp = x (m, k) as micro-panels: panel b (rows b*MR .. +mr) at xp + b*MR*k, element (i, kk) at
 * kk*mr + i, so a micro-kernel reads its rows' k-th values contiguously. This packs panel b. */
static void pack_rows(float *xp, const float *x, int m, int k, int b) {
    int          mr = m - b * GEMM_MR < GEMM_MR ? m - b * GEMM_MR : GEMM_MR;
    float       *d  = xp + (size_t)b * GEMM_MR * k;
    const float *s  = x + (size_t)b * GEMM_MR * k;
    for (int i = 0; i < mr; i++)
        for (int kk = 0; kk < k; kk++)
            d[(size_t)kk * mr + i] = s[(size_t)i * k + kk];
}

/* ---- micro-kernels ------------------------------------------------------------------------
 * c (mr, 32; leading dimension ldc) = (acc ? c : 0) + x (kc, mr; stride xs) applied to w (kc,
 * 32): for each element, fma over k ascending, one accumulator. */

#define TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The 32 weights of row k of a panel slice (kb a multiple of 32, so Q8_0 blocks start at 0),
 * decoded to f32 exactly: bf16 shifted into place; Q8_0 int8 widened and times its scale (d0, d1:
 * the block's 32 scales as f32, converted once per block by the caller). */
static TARGET_AVX512 ALWAYS_INLINE void w512_load(const int FMT, const void *w, int k, __m512 d0,
                                                  __m512 d1, __m512 *w0, __m512 *w1) {
    if (FMT == CPU_W_BF16) {
        const uint16_t *h = (const uint16_t *)w + (size_t)k * GEMM_NR;
        *w0               = _mm512_castsi512_ps(
                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)h)), 16));
        *w1 = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + 16))), 16));
    } else if (FMT == CPU_W_Q8_0) {
        const char *qs = (const char *)w + (size_t)(k / GEMM_NR) * CPU_Q8_BLOCK_BYTES +
                         GEMM_NR * sizeof(uint16_t) + (k % GEMM_NR) * GEMM_NR;
        *w0 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs))), d0);
        *w1 = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16)))),
            d1);
    } else {
        (void)d0, (void)d1;
        *w0 = _mm512_loadu_ps((const float *)w + (size_t)k * GEMM_NR);
        *w1 = _mm512_loadu_ps((const float *)w + (size_t)k * GEMM_NR + 16);
    }
}

static TARGET_AVX512 ALWAYS_INLINE void mk512_rows(const int FMT, const int MR, int kc,
                                                   const float *x, const void *w, float *c,
                                                   size_t ldc, int acc) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        c0[i] = acc ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        c1[i] = acc ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int k0 = 0; k0 < kc; k0 += GEMM_NR) { /* one Q8_0 block of k at a time */
        __m512 d0 = _mm512_setzero_ps(), d1 = d0;
        if (FMT == CPU_W_Q8_0) {
            const uint16_t *ds =
                (const uint16_t *)((const char *)w + (size_t)(k0 / GEMM_NR) * CPU_Q8_BLOCK_BYTES);
            d0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ds));
            d1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ds + 16)));
        }
        int k1 = k0 + GEMM_NR < kc ? k0 + GEMM_NR : kc;
        for (int k = k0; k < k1; k++) {
            __m512 w0, w1;
            w512_load(FMT, w, k, d0, d1, &w0, &w1);
#pragma GCC unroll 12
            for (int i = 0; i < MR; i++) {
                __m512 xv = _mm512_set1_ps(x[(size_t)k * MR + i]);
                c0[i]     = _mm512_fmadd_ps(xv, w0, c0[i]);
                c1[i]     = _mm512_fmadd_ps(xv, w1, c1[i]);
            }
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        _mm512_storeu_ps(c + i * ldc, c0[i]);
        _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
    }
}

/* FMT_ is a literal so that each format gets its own unrolled kernels */
#define MK512_FN(name, FMT_)                                                                       \
    static TARGET_AVX512 void name(int mr, int kc, const float *x, const void *w, float *c,        \
                                   size_t ldc, int acc) {                                          \
        switch (mr) {                                                                              \
        case 1: mk512_rows(FMT_, 1, kc, x, w, c, ldc, acc); break;                                 \
        case 2: mk512_rows(FMT_, 2, kc, x, w, c, ldc, acc); break;                                 \
        case 3: mk512_rows(FMT_, 3, kc, x, w, c, ldc, acc); break;                                 \
        case 4: mk512_rows(FMT_, 4, kc, x, w, c, ldc, acc); break;                                 \
        case 5: mk512_rows(FMT_, 5, kc, x, w, c, ldc, acc); break;                                 \
        case 6: mk512_rows(FMT_, 6, kc, x, w, c, ldc, acc); break;                                 \
        case 7: mk512_rows(FMT_, 7, kc, x, w, c, ldc, acc); break;                                 \
        case 8: mk512_rows(FMT_, 8, kc, x, w, c, ldc, acc); break;                                 \
        case 9: mk512_rows(FMT_, 9, kc, x, w, c, ldc, acc); break;                                 \
        case 10: mk512_rows(FMT_, 10, kc, x, w, c, ldc, acc); break;                               \
        case 11: mk512_rows(FMT_, 11, kc, x, w, c, ldc, acc); break;                               \
        case 12: mk512_rows(FMT_, 12, kc, x, w, c, ldc, acc); break;                               \
        }                                                                                          \
    }
MK512_FN(mk512_f32, CPU_W_F32)
MK512_FN(mk512_bf16, CPU_W_BF16)
MK512_FN(mk512_q8, CPU_W_Q8_0)
#undef MK512_FN

static void mk512(cpu_wfmt fmt, int mr, int kc, const float *x, const void *w, float *c, size_t ldc,
                  int acc) {
    if (fmt == CPU_W_BF16)
        mk512_bf16(mr, kc, x, w, c, ldc, acc);
    else if (fmt == CPU_W_Q8_0)
        mk512_q8(mr, kc, x, w, c, ldc, acc);
    else
        mk512_f32(mr, kc, x, w, c, ldc, acc);
}

/* decode_slice's AVX-512 form for Q8_0 (the same exact values: w512_load's), for a task that
 * applies one weight slice to several micro-panels: decoded once into w, the slice then runs
 * through the f32 micro-kernel for each of them instead of being decoded in registers for each
 * (Q8_0 prompt processing +9%; bf16's decode is a shift, and decoding it once gained nothing). */
static TARGET_AVX512 void decode_slice512_q8(float *w, const void *slice, int kc) {
    for (int k0 = 0; k0 < kc; k0 += GEMM_NR) {
        const uint16_t *ds =
            (const uint16_t *)((const char *)slice + (size_t)(k0 / GEMM_NR) * CPU_Q8_BLOCK_BYTES);
        __m512 d0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ds));
        __m512 d1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ds + 16)));
        int    k1 = k0 + GEMM_NR < kc ? k0 + GEMM_NR : kc;
        for (int k = k0; k < k1; k++) {
            __m512 w0, w1;
            w512_load(CPU_W_Q8_0, slice, k, d0, d1, &w0, &w1);
            _mm512_storeu_ps(w + (size_t)k * GEMM_NR, w0);
            _mm512_storeu_ps(w + (size_t)k * GEMM_NR + 16, w1);
        }
    }
}

/* AVX2: up to 6 rows x 16 columns per call (12 accumulators of the 16 ymm registers). */
static TARGET_AVX2 ALWAYS_INLINE void mk256_rows(const int MR, int kc, const float *x, int xs,
                                                 const float *w, float *c, size_t ldc, int acc) {
    __m256 c0[6], c1[6];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        c0[i] = acc ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
        c1[i] = acc ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        __m256 w0 = _mm256_loadu_ps(w + (size_t)k * GEMM_NR);
        __m256 w1 = _mm256_loadu_ps(w + (size_t)k * GEMM_NR + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_broadcast_ss(x + (size_t)k * xs + i);
            c0[i]     = _mm256_fmadd_ps(xv, w0, c0[i]);
            c1[i]     = _mm256_fmadd_ps(xv, w1, c1[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(c + i * ldc, c0[i]);
        _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
    }
}

static TARGET_AVX2 void mk256(int mr, int kc, const float *x, const float *w, float *c, size_t ldc,
                              int acc) {
    for (int h = 0; h < GEMM_NR; h += 16)
        for (int i0 = 0; i0 < mr; i0 += 6) {
            const float *xi = x + i0;
            float       *ci = c + (size_t)i0 * ldc + h;
            switch (mr - i0 < 6 ? mr - i0 : 6) {
#define MK256_CASE(n)                                                                              \
    case n: mk256_rows(n, kc, xi, mr, w + h, ci, ldc, acc); break;
                MK256_CASE(1)
                MK256_CASE(2)
                MK256_CASE(3)
                MK256_CASE(4)
                MK256_CASE(5)
                MK256_CASE(6)
#undef MK256_CASE
            }
        }
}

static void mk_scalar(int mr, int kc, const float *x, const float *w, float *c, size_t ldc,
                      int acc) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < GEMM_NR; j++) {
            float s = acc ? c[i * ldc + j] : 0.0f;
            for (int k = 0; k < kc; k++)
                s = fmaf(x[(size_t)k * mr + i], w[(size_t)k * GEMM_NR + j], s);
            c[i * ldc + j] = s;
        }
}

/* One micro-tile: rows of c (mr, nc <= 32 valid columns). w: the weight panel's k slice (f32:
 * floats; other formats: the slice's first element or block). A partial panel (the last one when
 * n is not a multiple of 32) runs through a local full-width tile. bias (NULL: none) is added
 * after the last k slice. Below AVX-512 a non-f32 slice is decoded into wdec first (kc x 32
 * floats): the same decoded values, so the same bits. */
static void micro_tile(int isa, cpu_wfmt fmt, int mr, int kc, const float *x, const void *w,
                       float *wdec, float *c, size_t ldc, int nc, int acc, const float *bias) {
    float  tile[GEMM_MR * GEMM_NR];
    float *t  = c;
    size_t ld = ldc;
    if (nc < GEMM_NR) {
        t  = tile;
        ld = GEMM_NR;
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < GEMM_NR; j++)
                tile[i * GEMM_NR + j] = acc && j < nc ? c[i * ldc + j] : 0.0f;
    }
    if (isa == 2) {
        mk512(fmt, mr, kc, x, w, t, ld, acc);
    } else {
        const float *wf = w;
        if (fmt != CPU_W_F32) {
            decode_slice(wdec, w, fmt, kc);
            wf = wdec;
        }
        if (isa == 1)
            mk256(mr, kc, x, wf, t, ld, acc);
        else
            mk_scalar(mr, kc, x, wf, t, ld, acc);
    }
    if (t != c)
        for (int i = 0; i < mr; i++)
            memcpy(c + i * ldc, tile + i * GEMM_NR, (size_t)nc * sizeof(float));
    if (bias)
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nc; j++)
                c[i * ldc + j] += bias[j];
}

/* The k slice [kb, ..) of panel p: its first element (f32, bf16) or block (Q8_0). */
static const void *panel_slice(const void *wp, cpu_wfmt fmt, int p, int k, int kb) {
    const char *panel = (const char *)wp + (size_t)p * panel_bytes(fmt, k);
    switch (fmt) {
    case CPU_W_BF16: return panel + (size_t)kb * GEMM_NR * sizeof(uint16_t);
    case CPU_W_Q8_0: return panel + (size_t)kb / GEMM_NR * CPU_Q8_BLOCK_BYTES;
    default: return panel + (size_t)kb * GEMM_NR * sizeof(float);
    }
}

/* ---- driver ------------------------------------------------------------------------------ */

size_t cpu_matmul_scratch_floats(int rows, int in) { return (size_t)rows * in; }

size_t cpu_head_scratch_floats(int dim, int vocab) {
    return (size_t)HEAD_ROWS * ((size_t)dim + vocab);
}

/* One GEMM as pool jobs (kernels/cpu/pool.h): the rows packed into micro-panels (m > 1), then
 * tasks of (up to GEMM_RB micro-panels) x (up to pb weight panels) taken in order by whichever
 * thread is free. Each output element is computed whole by one task, so the split never changes
 * a result. */
typedef struct gemm_job {
    float       *out, *xp;
    size_t       ldo;
    const float *x, *xs, *bias;
    const void  *wp;
    cpu_wfmt     fmt;
    int          m, k, n, gelu, isa;
    int          n_blocks, n_panels, n_pgroups, pb, n_tasks;
    _Atomic int  next; /* the next task to take */
} gemm_job;

static void gemm_pack_job(void *arg, int tid, int nth) {
    gemm_job *j = arg;
    for (int b = tid; b < j->n_blocks; b += nth)
        pack_rows(j->xp, j->x, j->m, j->k, b);
}

static void gemm_task(const gemm_job *j, int task, float *wdec) {
    int m = j->m, k = j->k, n = j->n;
    int b0 = task / j->n_pgroups * GEMM_RB, p0 = task % j->n_pgroups * j->pb;
    int b1 = b0 + GEMM_RB < j->n_blocks ? b0 + GEMM_RB : j->n_blocks;
    int p1 = p0 + j->pb < j->n_panels ? p0 + j->pb : j->n_panels;
    /* one micro-panel (decode): panel-major, so each panel streams once front to back (no
       weight slice to reuse across micro-panels); the k order per element is the same either
       way */
    int one = b1 - b0 == 1, n_kb = (k + GEMM_KC - 1) / GEMM_KC;
    for (int it = 0; it < (p1 - p0) * n_kb; it++) {
        int         p  = one ? p0 + it / n_kb : p0 + it % (p1 - p0);
        int         kb = (one ? it % n_kb : it / (p1 - p0)) * GEMM_KC;
        int         kc = k - kb < GEMM_KC ? k - kb : GEMM_KC, last = kb + kc == k;
        const void *w   = panel_slice(j->wp, j->fmt, p, k, kb);
        int         nc  = n - p * GEMM_NR < GEMM_NR ? n - p * GEMM_NR : GEMM_NR;
        cpu_wfmt    fmt = j->fmt;
        if (j->isa == 2 && fmt == CPU_W_Q8_0 && b1 - b0 > 1) {
            decode_slice512_q8(wdec, w, kc);
            w   = wdec;
            fmt = CPU_W_F32;
        }
        for (int b = b0; b < b1; b++) {
            int    mr = m - b * GEMM_MR < GEMM_MR ? m - b * GEMM_MR : GEMM_MR;
            float *c  = j->out + (size_t)b * GEMM_MR * j->ldo + (size_t)p * GEMM_NR;
            micro_tile(j->isa, fmt, mr, kc, j->xs + (size_t)b * GEMM_MR * k + (size_t)kb * mr, w,
                       wdec, c, j->ldo, nc, kb > 0,
                       last && j->bias ? j->bias + (size_t)p * GEMM_NR : NULL);
            if (last && j->gelu)
                for (int i = 0; i < mr; i++)
                    gelu_new_span(c + (size_t)i * j->ldo, c + (size_t)i * j->ldo, (size_t)nc,
                                  j->isa);
        }
    }
}

static void gemm_tasks_job(void *arg, int tid, int nth) {
    (void)tid, (void)nth;
    gemm_job *j = arg;
    /* a decoded weight slice: below AVX-512, or shared by several micro-panels */
    float wdec[GEMM_KC * GEMM_NR];
    for (int t; (t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_tasks;)
        gemm_task(j, t, wdec);
}

/* out (m, n; leading dimension ldo) = x (m, k) @ W^T + bias, W packed. xp: m*k floats.
 * gelu: then gelu_new on each finished tile (elementwise, so the bits are gelu_new_forward's). */
static void gemm_run(float *out, size_t ldo, float *xp, const float *x, const void *wp,
                     cpu_wfmt fmt, const float *bias, int m, int k, int n, int gelu) {
    if (m <= 0 || n <= 0)
        return;
    int n_blocks = (m + GEMM_MR - 1) / GEMM_MR, n_panels = (n + GEMM_NR - 1) / GEMM_NR;
    int n_rgroups = (n_blocks + GEMM_RB - 1) / GEMM_RB;
    /* panels per task: enough tasks (8 per thread: a decode step's GEMMs are short, and an
     * uneven last task leaves the other threads waiting) to balance, few enough to reuse X */
    int threads = omp_get_max_threads(), pb = n_panels * n_rgroups / (8 * threads);
    pb                 = pb < 1 ? 1 : pb > GEMM_PB ? GEMM_PB : pb;
    int      n_pgroups = (n_panels + pb - 1) / pb, n_tasks = n_rgroups * n_pgroups;
    gemm_job j = {.out       = out,
                  .xp        = xp,
                  .ldo       = ldo,
                  .x         = x,
                  .xs        = m == 1 ? x : xp, /* one row is its own micro-panel ([k][1]) */
                  .bias      = bias,
                  .wp        = wp,
                  .fmt       = fmt,
                  .m         = m,
                  .k         = k,
                  .n         = n,
                  .gelu      = gelu,
                  .isa       = cpu_gemm_isa(),
                  .n_blocks  = n_blocks,
                  .n_panels  = n_panels,
                  .n_pgroups = n_pgroups,
                  .pb        = pb,
                  .n_tasks   = n_tasks};
    atomic_init(&j.next, 0);
    int nth = n_tasks > 1 && (size_t)m * k * n >= 8 * CPU_PAR_MIN_WORK ? threads : 1;
    if (m > 1)
        cpu_pool_run(nth < n_blocks ? nth : n_blocks, gemm_pack_job, &j);
    cpu_pool_run(nth < n_tasks ? nth : n_tasks, gemm_tasks_job, &j);
}

void matmul_forward_fmt(float *out, float *scratch, const float *x, const void *w, cpu_wfmt fmt,
                        const float *bias, int rows, int in, int out_dim, int gelu) {
    gemm_run(out, (size_t)out_dim, scratch, x, w, fmt, bias, rows, in, out_dim, gelu);
}

void matmul_forward(float *out, float *scratch, const float *x, const float *w, const float *bias,
                    int rows, int in, int out_dim) {
    gemm_run(out, (size_t)out_dim, scratch, x, w, CPU_W_F32, bias, rows, in, out_dim, 0);
}

void matmul_gelu_forward(float *out, float *scratch, const float *x, const float *w,
                         const float *bias, int rows, int in, int out_dim) {
    gemm_run(out, (size_t)out_dim, scratch, x, w, CPU_W_F32, bias, rows, in, out_dim, 1);
}

/* ---- LM head ----------------------------------------------------------------------------- */

/* Statistics of one logits row (vocab): *am = first index of the largest logit (NaN never wins;
 * a NaN at index 0 stays the max), *mx = that logit, *sum = sum of vm_expf(l[j] - mx) in double
 * over 16 lanes (vmath.h order). The AVX-512 form below gives the same bits. */
static void row_stats(const float *l, int vocab, int *am, float *mx, double *sum) {
    int   best = 0;
    float m    = l[0];
    for (int j = 1; j < vocab; j++)
        if (l[j] > m) {
            m    = l[j];
            best = j;
        }
    double lanes[16] = {0};
    for (int j = 0; j < vocab; j++)
        lanes[j % 16] += (double)vm_expf(l[j] - m);
    *am  = best;
    *mx  = m;
    *sum = vm_fold16d(lanes);
}

static VM_AVX512 void row_stats512(const float *l, int vocab, int *am, float *mx, double *sum) {
    __m512 vm = _mm512_set1_ps(l[0]);
    for (int j = 0; j < vocab; j += 16) {
        __mmask16 k = (__mmask16)(vocab - j >= 16 ? 0xffffu : (1u << (vocab - j)) - 1);
        /* max_ps(v, vm) keeps vm where v is NaN, like the scalar `l[j] > m` */
        vm = _mm512_max_ps(_mm512_mask_loadu_ps(vm, k, l + j), vm);
    }
    float m = _mm512_reduce_max_ps(vm); /* max of non-NaN values: order-free */
    if (l[0] != l[0])
        m = l[0];
    int best = 0;
    if (m == m)
        for (int j = 0; j < vocab; j += 16) {
            __mmask16 k  = (__mmask16)(vocab - j >= 16 ? 0xffffu : (1u << (vocab - j)) - 1);
            __mmask16 eq = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, l + j),
                                                   _mm512_set1_ps(m), _CMP_EQ_OQ);
            if (eq) {
                best = j + __builtin_ctz(eq);
                break;
            }
        }
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    __m512  vmx = _mm512_set1_ps(m);
    for (int j = 0; j < vocab; j += 16) {
        __mmask16 k = (__mmask16)(vocab - j >= 16 ? 0xffffu : (1u << (vocab - j)) - 1);
        __m512    e =
            _mm512_maskz_mov_ps(k, vm_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, l + j), vmx)));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(
            hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    *am  = best;
    *mx  = m;
    *sum = vm_fold512d(lo, hi);
}

void logits_row_stats(const float *l, int vocab, int *am, float *mx, double *sum) {
    if (cpu_gemm_isa() == 2)
        row_stats512(l, vocab, am, mx, sum);
    else
        row_stats(l, vocab, am, mx, sum);
}

void target_logprob_forward(float *out_logprob, uint8_t *out_is_max, float *scratch, const float *h,
                            const float *w, const int32_t *target, int rows, int dim, int vocab) {
    target_logprob_forward_fmt(out_logprob, out_is_max, scratch, h, w, CPU_W_F32, target, rows, dim,
                               vocab);
}

void target_logprob_forward_fmt(float *out_logprob, uint8_t *out_is_max, float *scratch,
                                const float *h, const void *w, cpu_wfmt fmt, const int32_t *target,
                                int rows, int dim, int vocab) {
    float *xp = scratch, *logits = scratch + (size_t)HEAD_ROWS * dim;
    int    simd = cpu_gemm_isa() == 2;
    for (int r0 = 0; r0 < rows; r0 += HEAD_ROWS) {
        int n = rows - r0 < HEAD_ROWS ? rows - r0 : HEAD_ROWS;
        gemm_run(logits, (size_t)vocab, xp, h + (size_t)r0 * dim, w, fmt, NULL, n, dim, vocab, 0);
#pragma omp parallel for schedule(static) if (n > 1 && (size_t)n * vocab * 8 >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * vocab;
            float        mx;
            int          am;
            double       sum;
            if (simd)
                row_stats512(l, vocab, &am, &mx, &sum);
            else
                row_stats(l, vocab, &am, &mx, &sum);
            int32_t t           = target[r0 + i];
            out_logprob[r0 + i] = (float)(((double)l[t] - (double)mx) - log(sum));
            out_is_max[r0 + i]  = (uint8_t)(am == t);
        }
    }
}

/* First index of the largest logit (NaN never wins: comparisons with NaN are false). */
static int row_argmax(const float *l, int vocab) {
    int   best = 0;
    float mx   = l[0];
    for (int j = 1; j < vocab; j++)
        if (l[j] > mx) {
            mx   = l[j];
            best = j;
        }
    return best;
}

void argmax_forward(int32_t *out_id, float *scratch, const float *h, const float *w, int rows,
                    int dim, int vocab) {
    argmax_forward_fmt(out_id, scratch, h, w, CPU_W_F32, rows, dim, vocab);
}

void argmax_forward_fmt(int32_t *out_id, float *scratch, const float *h, const void *w,
                        cpu_wfmt fmt, int rows, int dim, int vocab) {
    float *xp = scratch, *logits = scratch + (size_t)HEAD_ROWS * dim;
    for (int r0 = 0; r0 < rows; r0 += HEAD_ROWS) {
        int n = rows - r0 < HEAD_ROWS ? rows - r0 : HEAD_ROWS;
        gemm_run(logits, (size_t)vocab, xp, h + (size_t)r0 * dim, w, fmt, NULL, n, dim, vocab, 0);
#pragma omp parallel for schedule(static) if (n > 1 && (size_t)n * vocab >= CPU_PAR_MIN_WORK)
        for (int i = 0; i < n; i++)
            out_id[r0 + i] = row_argmax(logits + (size_t)i * vocab, vocab);
    }
}
