#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t      size;
} dtype_info[DTYPE_COUNT] = {
    [DTYPE_UNKNOWN] = {"?", 0}, [DTYPE_F32] = {"F32", 4},   [DTYPE_F16] = {"F16", 2},
    [DTYPE_BF16] = {"BF16", 2}, [DTYPE_F64] = {"F64", 8},   [DTYPE_I8] = {"I8", 1},
    [DTYPE_I16] = {"I16", 2},   [DTYPE_I32] = {"I32", 4},   [DTYPE_I64] = {"I64", 8},
    [DTYPE_U8] = {"U8", 1},     [DTYPE_BOOL] = {"BOOL", 1},
};

size_t dtype_size(dtype t) { return (t > 0 && t < DTYPE_COUNT) ? dtype_info[t].size : 0; }

const char *dtype_name(dtype t) { return (t >= 0 && t < DTYPE_COUNT) ? dtype_info[t].name : "?"; }

dtype dtype_from_name(const char *s) {
    for (int t = 1; t < DTYPE_COUNT; t++)
        if (strcmp(s, dtype_info[t].name) == 0)
            return (dtype)t;
    return DTYPE_UNKNOWN;
}

int dtype_is_weight(dtype t) { return t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16; }

const char *dtype_supported_list(void) {
    return "F32, F16, BF16 (weights); F64, I8, I16, I32, I64, U8, BOOL (read only)";
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t man  = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float v = (float)man * 5.9604644775390625e-8f;
            return sign ? -v : v;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float    f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

uint16_t f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t absb = bits & 0x7fffffffu;
    if (absb > 0x7f800000u)
        return sign | 0x7e00u;
    if (absb >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00u;
    if (absb < 0x38800000u) {             /* below the smallest normal half: subnormal or zero */
        float a = fabsf(f) * 16777216.0f; /* in units of 2^-24, exact */
        float r = nearbyintf(a);          /* default rounding: nearest even */
        return sign | (uint16_t)r;
    }
    uint32_t e = (absb >> 23) - 112, m = absb & 0x7fffffu;
    uint32_t h    = (e << 10) | (m >> 13);
    uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

int dtype_to_f32(float *dst, const void *src, dtype t, size_t n) {
    const uint8_t *p = src;
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, n * 4); return 0;
    case DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        return 0;
    case DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        return 0;
    default: return -1;
    }
}
