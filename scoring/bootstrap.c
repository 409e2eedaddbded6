/* scoring/bootstrap.c — percentile bootstrap on a fixed-seed xoshiro256** stream. The generator
 * is the published one (Blackman and Vigna), seeded with four splitmix64 outputs, so any
 * implementation of the two reproduces our draws (tools/make_filters_reference.py has one). */
#include "scoring/bootstrap.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void boot_rng_seed(boot_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
        z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        r->s[i]    = z ^ (z >> 31);
    }
}

uint64_t boot_rng_next(boot_rng *r) {
    uint64_t *s      = r->s;
    uint64_t  result = rotl(s[1] * 5, 7) * 9;
    uint64_t  t      = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t boot_rng_below(boot_rng *r, uint64_t n) {
    if (n <= 1)
        return 0;
    /* reject the lowest 2^64 mod n values so every residue is equally likely */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = boot_rng_next(r);
        if (x >= threshold)
            return x % n;
    }
}

double boot_quantile_sorted(const double *sorted, size_t n, double q) {
    if (n == 0 || isnan(q))
        return NAN;
    double v = (double)(n - 1) * q;
    if (v >= (double)(n - 1))
        return sorted[n - 1];
    if (v < 0)
        return sorted[0];
    double lo = floor(v);
    size_t i  = (size_t)lo;
    double a = sorted[i], b = sorted[i + 1], t = v - lo, d = b - a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int boot_ci_compute(boot_stat_fn stat, void *user, size_t n, int resamples, double level,
                    uint64_t seed, boot_ci *out) {
    out->lo = out->hi = out->stderr = NAN;
    out->resamples                  = 0;
    if (n == 0 || resamples < 2)
        return 0;
    size_t *idx = n <= SIZE_MAX / sizeof *idx ? malloc(n * sizeof *idx) : NULL;
    double *st  = malloc((size_t)resamples * sizeof *st);
    if (!idx || !st) {
        free(idx);
        free(st);
        return -1;
    }
    boot_rng r;
    boot_rng_seed(&r, seed);
    int    m   = 0;
    double sum = 0;
    for (int k = 0; k < resamples; k++) {
        for (size_t i = 0; i < n; i++)
            idx[i] = (size_t)boot_rng_below(&r, n);
        double v = stat(user, idx, n);
        /* a statistic undefined on some resample (NaN) leaves that resample out */
        if (!isnan(v)) {
            st[m++] = v;
            sum += v;
        }
    }
    free(idx);
    out->resamples = m;
    if (m >= 2) {
        double mean = sum / m, ss = 0;
        for (int k = 0; k < m; k++)
            ss += (st[k] - mean) * (st[k] - mean);
        out->stderr = sqrt(ss / (m - 1));
        qsort(st, (size_t)m, sizeof *st, cmp_double);
        out->lo = boot_quantile_sorted(st, (size_t)m, (1 - level) / 2);
        out->hi = boot_quantile_sorted(st, (size_t)m, (1 + level) / 2);
    }
    free(st);
    return 0;
}

typedef struct mean_ctx {
    const double *x;
} mean_ctx;

static double stat_mean(void *user, const size_t *idx, size_t n) {
    const double *x = ((mean_ctx *)user)->x;
    double        s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[idx[i]];
    return s / (double)n;
}

int boot_ci_mean(const double *x, size_t n, int resamples, double level, uint64_t seed,
                 boot_ci *out) {
    mean_ctx c = {x};
    return boot_ci_compute(stat_mean, &c, n, resamples, level, seed, out);
}
