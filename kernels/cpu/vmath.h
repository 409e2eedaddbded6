/* kernels/cpu/vmath.h — exp, dot products and sums with ONE canonical operation order each, in
 * an AVX-512 form and a portable form that give the same bits (every step is the same IEEE
 * operation: fma where the text says fma, separate mul/add elsewhere). Kernels pick the form
 * with cpu_gemm_isa() == 2; results never depend on which one ran, nor on the batch around a
 * row. Internal to kernels/cpu (static inline). */
#ifndef ASSAY_KERNELS_CPU_VMATH_H
#define ASSAY_KERNELS_CPU_VMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define VM_AVX512 __attribute__((target("avx512f,fma")))

/* exp(x), Cephes expf (n = rint(x log2 e), two-part ln 2 reduction, degree-5 polynomial, scale
 * by 2^n): within ~1 ulp of exp for -87.3 <= x <= 88; below that 0 (no subnormal results),
 * above +inf, NaN stays NaN. Callers use it on x <= 0 (max-subtracted scores). */
#define VM_EXP_LO -87.33654f
#define VM_EXP_HI 88.0f
static inline float vm_expf(float x) {
    if (x != x)
        return x;
    if (x < VM_EXP_LO)
        return 0.0f;
    if (x > VM_EXP_HI)
        return INFINITY;
    float n      = nearbyintf(x * 1.44269504088896341f);
    float r      = fmaf(n, -0.693359375f, x);
    r            = fmaf(n, 2.12194440e-4f, r);
    float p      = 1.9875691500e-4f;
    p            = fmaf(p, r, 1.3981999507e-3f);
    p            = fmaf(p, r, 8.3334519073e-3f);
    p            = fmaf(p, r, 4.1665795894e-2f);
    p            = fmaf(p, r, 1.6666665459e-1f);
    p            = fmaf(p, r, 5.0000001201e-1f);
    float   y    = fmaf(p, r * r, r) + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float   s;
    memcpy(&s, &bits, sizeof s);
    return y * s;
}

static inline VM_AVX512 __m512 vm_exp512(__m512 x) {
    __m512 xc =
        _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(VM_EXP_LO)), _mm512_set1_ps(VM_EXP_HI));
    __m512 n  = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r  = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), xc);
    r         = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p  = _mm512_set1_ps(1.9875691500e-4f);
    p         = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p         = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p         = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p         = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p         = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512  y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(VM_EXP_LO), _CMP_LT_OQ),
                           _mm512_setzero_ps());
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(VM_EXP_HI), _CMP_GT_OQ),
                           _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

/* out (16) = vm_exp512 of x (16); for tests */
static inline VM_AVX512 void vm_store_exp512(float *out, const float *x) {
    _mm512_storeu_ps(out, vm_exp512(_mm512_loadu_ps(x)));
}

/* Canonical 16-lane reductions: element i goes to lane i % 16 (lane sums in i order), then the
 * lanes fold as l + (l + 8), l + (l + 4), l + (l + 2), l + (l + 1). */
static inline float vm_fold16f(float *a) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            a[l] = a[l] + a[l + w];
    return a[0];
}
static inline double vm_fold16d(double *a) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            a[l] = a[l] + a[l + w];
    return a[0];
}
static inline VM_AVX512 float vm_fold512(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}
/* lanes 0-7 in lo, 8-15 in hi */
static inline VM_AVX512 double vm_fold512d(__m512d lo, __m512d hi) {
    __m512d s = _mm512_add_pd(lo, hi);
    __m256d a = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

/* dot(a, b) over n floats: lane l = fma chain over i = l, l + 16, ... (from 0; positions past n
 * count as 0 * 0), then vm_fold16f. */
static inline float vm_dot(const float *a, const float *b, int n) {
    float acc[16] = {0};
    for (int i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] = i + l < n ? fmaf(a[i + l], b[i + l], acc[l]) : fmaf(0.0f, 0.0f, acc[l]);
    return vm_fold16f(acc);
}
static inline VM_AVX512 float vm_dot512(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    int    i   = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return vm_fold512(acc);
}

#endif
