/* kernels/cpu/elementwise.c — embeddings, norms, activations, residual add and RoPE. Each
 * reproduces the float32 arithmetic of the transformers module it stands for, so scores agree
 * with the reference to float rounding. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"

void        embed_forward(float *out, const float *table, const int32_t *ids, int rows, int dim) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++)
        gemm_unpack_row(out + (size_t)r * dim, table, ids[r], dim);
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
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
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
    }
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

void        add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 4 * CPU_PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void        swiglu_forward(float *out, const float *gate_up, int rows, int ffn) {
#pragma omp parallel for schedule(static) if ((size_t)rows * ffn * 8 >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float *g = gate_up + (size_t)r * 2 * ffn, *u = g + ffn;
        float       *o = out + (size_t)r * ffn;
        for (int i = 0; i < ffn; i++) {
            float silu = g[i] / (1.0f + expf(-g[i])); /* torch silu: x / (1 + exp(-x)) */
            o[i]       = silu * u[i];
        }
    }
}

void gelu_new_forward(float *out, const float *x, size_t n) {
    /* 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), python constants rounded to f32 */
    const float c = 0.7978845608028654f, a = 0.044715f;
#pragma omp parallel for schedule(static) if (n * 8 >= CPU_PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf(c * (v + a * (v * v * v)));
        out[i]  = 0.5f * v * (1.0f + t);
    }
}

void rope_inv_freq(float *inv_freq, int rot_dim, float theta, int kind, float factor,
                   float low_freq_factor, float high_freq_factor, int orig_max_pos) {
    int half = rot_dim / 2;
    for (int i = 0; i < half; i++) {
        /* torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32 */
        float e     = (float)(2 * i) / (float)rot_dim;
        inv_freq[i] = 1.0f / powf(theta, e);
    }
    if (kind == 2) { /* linear: inv_freq /= factor */
        for (int i = 0; i < half; i++)
            inv_freq[i] = inv_freq[i] / factor;
    } else if (kind == 3) { /* llama3: _compute_llama3_parameters, float32 tensor ops */
        float low_wavelen  = (float)((double)orig_max_pos / low_freq_factor);
        float high_wavelen = (float)((double)orig_max_pos / high_freq_factor);
        float denom        = (float)((double)high_freq_factor - (double)low_freq_factor);
        for (int i = 0; i < half; i++) {
            float f       = inv_freq[i];
            float wavelen = (float)(2.0 * M_PI) / f;
            float fl      = wavelen > low_wavelen ? f / factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float s = ((float)orig_max_pos / wavelen - low_freq_factor) / denom;
                fl      = (1.0f - s) * fl / factor + s * fl;
            }
            inv_freq[i] = fl;
        }
    }
}

void rope_forward(float *x, const int32_t *pos, const float *inv_freq, int rows, int n_heads,
                  int head_dim, int stride) {
    int half = head_dim / 2;
#pragma omp parallel for schedule(static) if ((size_t)rows * n_heads * head_dim * 4 >=             \
                                              CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
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
    }
}
