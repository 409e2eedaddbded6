/* kernels/cpu/elementwise.c — embeddings, norms, activations, residual add and RoPE. Each
 * reproduces the float32 arithmetic of the transformers module it stands for, so scores agree
 * with the reference to float rounding. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vmath.h"

void        embed_forward(float *out, const float *table, const int32_t *ids, int rows, int dim) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++)
        gemm_unpack_row(out + (size_t)r * dim, table, ids[r], dim);
}

void embed_forward_fmt(float *out, const void *table, cpu_wfmt fmt, const int32_t *ids, int rows,
                       int dim) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++)
        gemm_unpack_row_fmt(out + (size_t)r * dim, table, fmt, ids[r], dim);
}

void        pos_embed_add(float *out, const float *table, const int32_t *pos, int rows, int dim) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        float       *o = out + (size_t)r * dim;
        const float *p = table + (size_t)pos[r] * dim;
        for (int i = 0; i < dim; i++)
            o[i] += p[i];
    }
}

void rmsnorm_forward(float *out, const float *x, const float *w, int rows, int dim, float eps) {
    CPU_PAR_FOR((size_t)rows * dim >= CPU_PAR_MIN_WORK, r, rows, {
        const float *xr = x + (size_t)r * dim;
        float       *o  = out + (size_t)r * dim;
        double       ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        /* HF: variance in fp32, hidden * rsqrt(variance + eps), then weight * hidden */
        float var = (float)(ss / dim);
        float rs  = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < dim; i++)
            o[i] = w[i] * (xr[i] * rs);
    });
}

void        layernorm_forward(float *out, const float *x, const float *w, const float *b, int rows,
                              int dim, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float       *o  = out + (size_t)r * dim;
        double       s  = 0.0;
        for (int i = 0; i < dim; i++)
            s += xr[i];
        double mean = s / dim, v = 0.0;
        for (int i = 0; i < dim; i++) {
            double d = xr[i] - mean;
            v += d * d;
        }
        float m  = (float)mean;
        float rs = 1.0f / sqrtf((float)(v / dim) + eps);
        for (int i = 0; i < dim; i++)
            o[i] = (xr[i] - m) * rs * w[i] + b[i];
    }
}

void add_forward(float *out, const float *a, const float *b, size_t n) {
    if (n < 4 * CPU_PAR_MIN_WORK) {
        for (size_t i = 0; i < n; i++)
            out[i] = a[i] + b[i];
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

/* silu(g) * u = g / (1 + exp(-g)) * u (torch's silu formula) with vm_expf's exp; the three
 * forms do the same float operations in the same order, so the ISA never changes a bit. */
static void swiglu_span(float *o, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++)
        o[i] = g[i] / (1.0f + vm_expf(-g[i])) * u[i];
}

static VM_AVX512 void swiglu_span512(float *o, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i += 16) {
        __mmask16 m  = (__mmask16)(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1);
        __m512    gv = _mm512_maskz_loadu_ps(m, g + i);
        __m512    e =
            vm_exp512(_mm512_castsi512_ps(/* -g: flip the sign bit, like C's - */
                                          _mm512_xor_si512(_mm512_castps_si512(gv),
                                                           _mm512_set1_epi32((int)0x80000000u))));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static VM_AVX2 void swiglu_span256(float *o, const float *g, const float *u, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 e  = vm_exp256(_mm256_xor_ps(gv, _mm256_set1_ps(-0.0f))); /* -g */
        __m256 s  = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    swiglu_span(o + i, g + i, u + i, n - i);
}

void swiglu_forward(float *out, const float *gate_up, int rows, int ffn) {
    int isa = cpu_gemm_isa();
    CPU_PAR_FOR((size_t)rows * ffn * 8 >= CPU_PAR_MIN_WORK, r, rows, {
        const float *g = gate_up + (size_t)r * 2 * ffn, *u = g + ffn;
        float       *o = out + (size_t)r * ffn;
        if (isa == 2)
            swiglu_span512(o, g, u, ffn);
        else if (isa == 1)
            swiglu_span256(o, g, u, ffn);
        else
            swiglu_span(o, g, u, ffn);
    });
}

/* 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), python constants rounded to f32;
 * every form does the same float operations in the same order, with vm_tanhf's tanh (libm's
 * scalar tanhf was a sixth of GPT-2 decode time), so the ISA never changes a bit. */
#define GELU_C 0.7978845608028654f
#define GELU_A 0.044715f
static void gelu_span(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = vm_tanhf(GELU_C * (v + GELU_A * (v * v * v)));
        out[i]  = 0.5f * v * (1.0f + t);
    }
}

static VM_AVX512 void gelu_span512(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1);
        __m512    v = _mm512_maskz_loadu_ps(m, x + i);
        __m512    u = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        u           = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(GELU_A), u));
        __m512 t    = vm_tanh512(_mm512_mul_ps(_mm512_set1_ps(GELU_C), u));
        __m512 o    = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                                    _mm512_add_ps(_mm512_set1_ps(1.0f), t));
        _mm512_mask_storeu_ps(out + i, m, o);
    }
}

static VM_AVX2 void gelu_span256(float *out, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 u = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        u        = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(GELU_A), u));
        __m256 t = vm_tanh256(_mm256_mul_ps(_mm256_set1_ps(GELU_C), u));
        __m256 o = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v),
                                 _mm256_add_ps(_mm256_set1_ps(1.0f), t));
        _mm256_storeu_ps(out + i, o);
    }
    gelu_span(out + i, x + i, n - i);
}

void gelu_new_span(float *out, const float *x, size_t n, int isa) {
    if (isa == 2)
        gelu_span512(out, x, n);
    else if (isa == 1)
        gelu_span256(out, x, n);
    else
        gelu_span(out, x, n);
}

#define GELU_CHUNK 4096 /* floats per task */
void gelu_new_forward(float *out, const float *x, size_t n) {
    int    isa      = cpu_gemm_isa();
    size_t n_chunks = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) if (n * 8 >= CPU_PAR_MIN_WORK)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t i = c * GELU_CHUNK;
        gelu_new_span(out + i, x + i, n - i < GELU_CHUNK ? n - i : GELU_CHUNK, isa);
    }
}

void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int rows, int n_heads,
                  int head_dim, int stride) {
    int half = head_dim / 2;
    CPU_PAR_FOR((size_t)rows * n_heads * head_dim * 4 >= CPU_PAR_MIN_WORK, r, rows, {
        float c[half > 0 ? half : 1], s[half > 0 ? half : 1];
        float p = (float)pos[r];
        for (int i = 0; i < half; i++) {
            float ang = p * inv_freq[i]; /* freqs = position (f32) * inv_freq, one rounding */
            c[i]      = cosf(ang);
            s[i]      = sinf(ang);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)r * stride + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                /* q * cos + rotate_half(q) * sin, rotate_half = cat(-x2, x1) */
                v[i]        = x1 * c[i] + (-x2) * s[i];
                v[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    });
}
