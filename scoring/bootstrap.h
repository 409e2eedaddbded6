/* scoring/bootstrap.h — bootstrap confidence intervals with a fixed seed, so the same samples
 * always give the same interval. Pure functions. */
#ifndef ASSAY_BOOTSTRAP_H
#define ASSAY_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

/* A small deterministic PRNG (splitmix64-seeded xoshiro256**), independent of libc. */
typedef struct boot_rng {
    uint64_t s[4];
} boot_rng;
void     boot_rng_seed(boot_rng *r, uint64_t seed);
uint64_t boot_rng_next(boot_rng *r);
/* Uniform in [0, n) without modulo bias. n >= 1. */
uint64_t boot_rng_below(boot_rng *r, uint64_t n);

/* The q-quantile (q in [0, 1]) of sorted[0..n) as numpy.quantile's default "linear" method
 * computes it, to the bit: virtual index (n - 1) * q, then a + (b - a) * t, or b - (b - a) *
 * (1 - t) when t >= 0.5. n == 0 or a NaN q gives NaN; sorted must hold no NaN. */
double boot_quantile_sorted(const double *sorted, size_t n, double q);

/* The statistic of a resample: idx[0..n) are indices into the caller's samples (with
 * repetition). Returns the statistic's value. */
typedef double (*boot_stat_fn)(void *user, const size_t *idx, size_t n);

typedef struct boot_ci {
    double lo, hi; /* percentile interval at the requested level */
    double stderr; /* standard deviation of the resampled statistic, n - 1 in the divisor
                      (as lm-eval's bootstrap_stderr) */
    int resamples; /* resamples whose statistic was not NaN (the others are left out) */
} boot_ci;

/* Percentile bootstrap: `resamples` resamples of n indices drawn with replacement from
 * [0, n) by a boot_rng seeded with seed; the interval is the (1-level)/2 and (1+level)/2
 * quantiles of the sorted statistics (linear interpolation, numpy's default). Resample k draws
 * its n indices in order from the one stream, after resample k - 1's. n == 0, resamples < 2 or
 * fewer than 2 statistics that are not NaN give NaN bounds. Returns 0, or -1 when out of
 * memory. */
int boot_ci_compute(boot_stat_fn stat, void *user, size_t n, int resamples, double level,
                    uint64_t seed, boot_ci *out);

/* Convenience: the mean of x under the bootstrap. */
int boot_ci_mean(const double *x, size_t n, int resamples, double level, uint64_t seed,
                 boot_ci *out);

#endif
