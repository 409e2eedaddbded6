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

#define VM_AVX2 __attribute__((target("avx2,fma")))

/* vm_exp256: the same steps as vm_exp512 on 8 lanes (AVX2), the same bits as vm_expf. */
static inline VM_AVX2 __m256 vm_exp256(__m256 x) {
    __m256 xc =
        _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(VM_EXP_LO)), _mm256_set1_ps(VM_EXP_HI));
    __m256 n  = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r  = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), xc);
    r         = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p  = _mm256_set1_ps(1.9875691500e-4f);
    p         = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p         = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p         = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p         = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p         = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256  y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(),
                         _mm256_cmp_ps(x, _mm256_set1_ps(VM_EXP_LO), _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY),
                         _mm256_cmp_ps(x, _mm256_set1_ps(VM_EXP_HI), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* tanh(x), Cephes tanhf's split with our exp: |x| < 0.625: x + x^3 P(x^2) (degree-4 P, fma
 * chain; no cancellation near 0), else 1 - 2 / (exp(2 min(|x|, 10)) + 1) (tanh(10) rounds to
 * 1), then x's sign. Within 3 ulp of tanh everywhere (tests/test_kernels.c); NaN stays NaN,
 * -0 stays -0. The vector forms compute both branches and select, step for step the same
 * IEEE operations, so every form gives the same bits. */
#define VM_TANH_SMALL 0.625f
#define VM_TANH_CLAMP 10.0f
#define VM_TANH_P4 -5.70498872745e-3f
#define VM_TANH_P3 2.06390887954e-2f
#define VM_TANH_P2 -5.37397155531e-2f
#define VM_TANH_P1 1.33314422036e-1f
#define VM_TANH_P0 -3.33332819422e-1f
static inline float vm_tanhf(float x) {
    if (x != x)
        return x;
    float ax = fabsf(x), r;
    if (ax < VM_TANH_SMALL) {
        float z = ax * ax;
        float p = fmaf(VM_TANH_P4, z, VM_TANH_P3);
        p       = fmaf(p, z, VM_TANH_P2);
        p       = fmaf(p, z, VM_TANH_P1);
        p       = fmaf(p, z, VM_TANH_P0);
        r       = fmaf(p, z * ax, ax);
    } else {
        float e = vm_expf(2.0f * (ax < VM_TANH_CLAMP ? ax : VM_TANH_CLAMP));
        r       = 1.0f - 2.0f / (e + 1.0f);
    }
    return copysignf(r, x);
}

static inline VM_AVX512 __m512 vm_tanh512(__m512 x) {
    /* AVX-512F has no float and/or: use the integer forms on the bits */
    __m512i sign = _mm512_set1_epi32((int)0x80000000u), xi = _mm512_castps_si512(x);
    __m512  ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xi));
    __m512  z  = _mm512_mul_ps(ax, ax);
    __m512  p  = _mm512_fmadd_ps(_mm512_set1_ps(VM_TANH_P4), z, _mm512_set1_ps(VM_TANH_P3));
    p          = _mm512_fmadd_ps(p, z, _mm512_set1_ps(VM_TANH_P2));
    p          = _mm512_fmadd_ps(p, z, _mm512_set1_ps(VM_TANH_P1));
    p          = _mm512_fmadd_ps(p, z, _mm512_set1_ps(VM_TANH_P0));
    __m512 sm  = _mm512_fmadd_ps(p, _mm512_mul_ps(z, ax), ax);
    __m512 e   = vm_exp512(
          _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_min_ps(ax, _mm512_set1_ps(VM_TANH_CLAMP))));
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 lg  = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    __m512 r   = _mm512_mask_mov_ps(
          lg, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(VM_TANH_SMALL), _CMP_LT_OQ), sm);
    r = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(sign, xi)));
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

static inline VM_AVX2 __m256 vm_tanh256(__m256 x) {
    __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 ax   = _mm256_andnot_ps(sign, x);
    __m256 z    = _mm256_mul_ps(ax, ax);
    __m256 p    = _mm256_fmadd_ps(_mm256_set1_ps(VM_TANH_P4), z, _mm256_set1_ps(VM_TANH_P3));
    p           = _mm256_fmadd_ps(p, z, _mm256_set1_ps(VM_TANH_P2));
    p           = _mm256_fmadd_ps(p, z, _mm256_set1_ps(VM_TANH_P1));
    p           = _mm256_fmadd_ps(p, z, _mm256_set1_ps(VM_TANH_P0));
    __m256 sm   = _mm256_fmadd_ps(p, _mm256_mul_ps(z, ax), ax);
    __m256 e    = vm_exp256(
           _mm256_mul_ps(_mm256_set1_ps(2.0f), _mm256_min_ps(ax, _mm256_set1_ps(VM_TANH_CLAMP))));
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 lg  = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    __m256 r =
        _mm256_blendv_ps(lg, sm, _mm256_cmp_ps(ax, _mm256_set1_ps(VM_TANH_SMALL), _CMP_LT_OQ));
    r = _mm256_or_ps(r, _mm256_and_ps(sign, x));
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* out (16) / (8) = the vector tanh of x; for tests */
static inline VM_AVX512 void vm_store_tanh512(float *out, const float *x) {
    _mm512_storeu_ps(out, vm_tanh512(_mm512_loadu_ps(x)));
}
static inline VM_AVX2 void vm_store_tanh256(float *out, const float *x) {
    _mm256_storeu_ps(out, vm_tanh256(_mm256_loadu_ps(x)));
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
