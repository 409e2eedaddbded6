/* The bootstrap: xoshiro256** draws against an independent Python implementation
 * (tests/fixtures/filters/reference.json, tools/make_filters_reference.py), whole intervals
 * against the same resampling in Python with numpy.quantile, and properties of the interval. */
#include <math.h>
#include <stdint.h>

#include "scoring/bootstrap.h"
#include "tests/helpers.h"

#define REF "tests/fixtures/filters/reference.json"

/* 64-bit values are strings in the reference: a JSON number is a double */
static uint64_t u64_of(const cJSON *v) {
    cr_assert(cJSON_IsString(v));
    return strtoull(v->valuestring, NULL, 10);
}

Test(bootstrap, rng_draws_equal_the_python_xoshiro256starstar) {
    cJSON *ref = test_read_json(REF);
    cJSON *c;
    int    checked = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "rng")) {
        uint64_t seed = u64_of(cJSON_GetObjectItem(c, "seed"));
        boot_rng r;
        boot_rng_seed(&r, seed);
        cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(c, "next")) {
            cr_expect_eq(boot_rng_next(&r), u64_of(v), "seed %llu", (unsigned long long)seed);
            checked++;
        }
        cJSON *below;
        cJSON_ArrayForEach(below, cJSON_GetObjectItem(c, "below")) {
            uint64_t n = strtoull(below->string, NULL, 10);
            boot_rng_seed(&r, seed);
            cJSON_ArrayForEach(v, below) {
                cr_expect_eq(boot_rng_below(&r, n), u64_of(v), "seed %llu below %llu",
                             (unsigned long long)seed, (unsigned long long)n);
                checked++;
            }
        }
    }
    cr_expect_eq(checked, 5 * (6 + 8 * 8));
    cJSON_Delete(ref);
}

Test(bootstrap, interval_equals_python_resampling_with_numpy_quantile) {
    cJSON *ref = test_read_json(REF);
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "bootstrap")) {
        cJSON  *xs = cJSON_GetObjectItem(c, "x");
        int     n  = cJSON_GetArraySize(xs);
        double *x  = malloc(sizeof *x * (size_t)n);
        for (int i = 0; i < n; i++)
            x[i] = cJSON_GetArrayItem(xs, i)->valuedouble;
        boot_ci  ci;
        int      res  = cJSON_GetObjectItem(c, "resamples")->valueint;
        double   lvl  = cJSON_GetObjectItem(c, "level")->valuedouble;
        uint64_t seed = u64_of(cJSON_GetObjectItem(c, "seed"));
        cr_assert_eq(boot_ci_mean(x, (size_t)n, res, lvl, seed, &ci), 0);
        /* same draws, same sequential sums, numpy's interpolation: bit-equal bounds */
        cr_expect_eq(ci.lo, cJSON_GetObjectItem(c, "lo")->valuedouble, "lo %.17g", ci.lo);
        cr_expect_eq(ci.hi, cJSON_GetObjectItem(c, "hi")->valuedouble, "hi %.17g", ci.hi);
        /* numpy.std sums pairwise, we sum in order: 1e-12 relative is far above that rounding */
        double want = cJSON_GetObjectItem(c, "stderr")->valuedouble;
        cr_expect(fabs(ci.stderr - want) <= 1e-12 * want, "stderr %.17g, want %.17g", ci.stderr,
                  want);
        cr_expect_eq(ci.resamples, res);
        free(x);
    }
    cJSON_Delete(ref);
}

Test(bootstrap, same_seed_gives_the_same_interval_and_another_seed_another) {
    double x[100];
    for (int i = 0; i < 100; i++)
        x[i] = (double)((i * 37) % 11);
    boot_ci a, b, c;
    cr_assert_eq(boot_ci_mean(x, 100, 200, 0.95, 99, &a), 0);
    cr_assert_eq(boot_ci_mean(x, 100, 200, 0.95, 99, &b), 0);
    cr_assert_eq(boot_ci_mean(x, 100, 200, 0.95, 100, &c), 0);
    cr_expect(a.lo == b.lo && a.hi == b.hi && a.stderr == b.stderr && a.resamples == b.resamples);
    cr_expect(a.lo != c.lo || a.hi != c.hi);
}

Test(bootstrap, constant_data_gives_a_zero_width_interval) {
    double x[50];
    for (int i = 0; i < 50; i++)
        x[i] = 0.75;
    boot_ci ci;
    cr_assert_eq(boot_ci_mean(x, 50, 100, 0.95, 1, &ci), 0);
    cr_expect_eq(ci.lo, 0.75);
    cr_expect_eq(ci.hi, 0.75);
    cr_expect_eq(ci.stderr, 0.0);
}

Test(bootstrap, bernoulli_mean_interval_is_close_to_the_normal_approximation) {
    /* n = 10000 draws with p = 0.3: the normal interval is p ± 1.96 sqrt(p(1-p)/n) (half-width
     * 0.00898). With 2000 resamples a bound's Monte Carlo error is about 0.06 sd (0.0003), so
     * 10% of the half-width is over 3 sd; the seed is fixed, so the test cannot flicker. */
    size_t  n = 10000;
    double *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (i % 10) < 3;
    boot_ci ci;
    cr_assert_eq(boot_ci_mean(x, n, 2000, 0.95, 2026, &ci), 0);
    double half = 1.959963984540054 * sqrt(0.3 * 0.7 / (double)n);
    cr_expect(fabs(ci.lo - (0.3 - half)) < 0.1 * half, "lo %.6f, normal %.6f", ci.lo, 0.3 - half);
    cr_expect(fabs(ci.hi - (0.3 + half)) < 0.1 * half, "hi %.6f, normal %.6f", ci.hi, 0.3 + half);
    double sd = sqrt(0.3 * 0.7 / (double)n);
    cr_expect(fabs(ci.stderr - sd) < 0.1 * sd, "stderr %.6f, normal %.6f", ci.stderr, sd);
    free(x);
}

Test(bootstrap, below_is_uniform_for_small_and_huge_ranges) {
    boot_rng r;
    boot_rng_seed(&r, 5);
    /* chi-square over 7 cells, 70000 draws: 6 degrees of freedom, 22.46 is the 0.999 point */
    double cnt[7] = {0};
    for (int i = 0; i < 70000; i++)
        cnt[boot_rng_below(&r, 7)]++;
    double chi2 = 0;
    for (int k = 0; k < 7; k++)
        chi2 += (cnt[k] - 10000) * (cnt[k] - 10000) / 10000;
    cr_expect_lt(chi2, 22.46, "chi2 %.2f", chi2);
    /* n = 2/3 of 2^64: a plain modulo would put 3/4 of the draws below n/2; uniform is 1/2
     * (20000 draws: sd 0.0035, the bound 0.02 is over 5 sd from both) */
    uint64_t big = UINT64_MAX / 3 * 2;
    int      low = 0;
    for (int i = 0; i < 20000; i++) {
        uint64_t v = boot_rng_below(&r, big);
        cr_assert_lt(v, big);
        low += v < big / 2;
    }
    cr_expect(fabs(low / 20000.0 - 0.5) < 0.02, "share below n/2: %.4f", low / 20000.0);
    cr_expect_eq(boot_rng_below(&r, 1), 0);
}

static double stat_nan_on_first_odd(void *user, const size_t *idx, size_t n) {
    (void)user;
    (void)n;
    return idx[0] % 2 ? NAN : (double)idx[0];
}

Test(bootstrap, degenerate_inputs_give_nan_and_nan_statistics_are_left_out) {
    boot_ci ci;
    double  x[3] = {1, 2, 3};
    cr_assert_eq(boot_ci_mean(x, 0, 100, 0.95, 1, &ci), 0);
    cr_expect(isnan(ci.lo) && isnan(ci.hi) && isnan(ci.stderr));
    cr_assert_eq(boot_ci_mean(x, 3, 1, 0.95, 1, &ci), 0);
    cr_expect(isnan(ci.lo) && isnan(ci.hi));
    cr_assert_eq(boot_ci_compute(stat_nan_on_first_odd, NULL, 10, 400, 0.95, 3, &ci), 0);
    cr_expect(ci.resamples > 100 && ci.resamples < 300, "%d kept", ci.resamples);
    cr_expect(!isnan(ci.lo) && !isnan(ci.hi));
    cr_expect(isnan(boot_quantile_sorted(x, 0, 0.5)));
}

Test(bootstrap, quantile_interpolates_as_numpy_linear) {
    /* numpy.quantile([1, 2, 4, 8], q): 0 -> 1, 1/3 -> 2, 0.5 -> 3, 0.75 -> 5, 1 -> 8 */
    double s[4] = {1, 2, 4, 8};
    cr_expect_eq(boot_quantile_sorted(s, 4, 0.0), 1.0);
    cr_expect_eq(boot_quantile_sorted(s, 4, 0.5), 3.0);
    cr_expect_eq(boot_quantile_sorted(s, 4, 0.75), 5.0);
    cr_expect_eq(boot_quantile_sorted(s, 4, 1.0), 8.0);
    cr_expect_eq(boot_quantile_sorted(s, 1, 0.3), 1.0);
}

Test(bootstrap, quantile_equals_numpy_to_the_bit_on_a_grid_of_levels) {
    cJSON  *ref = test_read_json(REF);
    cJSON  *qc = cJSON_GetObjectItem(ref, "quantile"), *xs = cJSON_GetObjectItem(qc, "x");
    cJSON  *qs = cJSON_GetObjectItem(qc, "q"), *want = cJSON_GetObjectItem(qc, "want");
    int     n = cJSON_GetArraySize(xs);
    double *x = malloc(sizeof *x * (size_t)n);
    for (int i = 0; i < n; i++)
        x[i] = cJSON_GetArrayItem(xs, i)->valuedouble;
    for (int k = 0; k < cJSON_GetArraySize(qs); k++) {
        double q   = cJSON_GetArrayItem(qs, k)->valuedouble,
               w   = cJSON_GetArrayItem(want, k)->valuedouble;
        double got = boot_quantile_sorted(x, (size_t)n, q);
        cr_expect_eq(got, w, "q=%.17g: %.17g, numpy %.17g", q, got, w);
    }
    free(x);
    cJSON_Delete(ref);
}
