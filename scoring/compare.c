#include "scoring/compare.h"

#include <math.h>
#include <string.h>

static int metric_is(const char *metric, const char *name) {
    size_t n = strcspn(metric, ",");
    return strlen(name) == n && !strncmp(metric, name, n);
}

static int metric_is_perplexity_like(const char *metric) {
    return metric_is(metric, "perplexity") || metric_is(metric, "word_perplexity") ||
           metric_is(metric, "byte_perplexity") || metric_is(metric, "bits_per_byte") ||
           metric_is(metric, "ppl") || metric_is(metric, "word_ppl") ||
           metric_is(metric, "byte_ppl");
}

int compare_default_higher_is_better(const char *metric) {
    return !(metric_is_perplexity_like(metric) || metric_is(metric, "ter"));
}

cmp_unit compare_metric_unit(const char *metric, double base, double cand) {
    if (metric_is_perplexity_like(metric))
        return CMP_UNIT_RELATIVE;
    if (base >= 0 && base <= 1 && cand >= 0 && cand <= 1)
        return CMP_UNIT_FRACTION;
    return CMP_UNIT_RAW;
}

double compare_delta_points(double base, double cand, cmp_unit unit, int higher_is_better) {
    double d = unit == CMP_UNIT_FRACTION ? 100.0 * (cand - base)
               : unit == CMP_UNIT_RELATIVE
                   ? (base != 0 ? 100.0 * (cand - base) / fabs(base) : (cand == base ? 0 : NAN))
                   : cand - base;
    return higher_is_better ? d : -d;
}

cmp_level compare_level(double delta, double warn, double crit) {
    if (delta <= crit)
        return CMP_CRIT;
    if (delta <= warn)
        return CMP_WARN;
    return CMP_OK;
}

const char *compare_level_name(cmp_level l) {
    return l == CMP_CRIT ? "CRIT" : l == CMP_WARN ? "WARN" : "OK";
}

void compare_mcnemar(int64_t b, int64_t c, cmp_mcnemar *out) {
    int64_t n = b + c, k = b < c ? b : c;
    out->b = b;
    out->c = c;
    if (n == 0) {
        out->p_exact = 1;
        out->chi2 = out->p_chi2 = NAN;
        return;
    }
    /* P[X <= k] summed in log space (n may be in the millions): log C(n, i) - n ln 2 */
    double lmax = -INFINITY, terms = 0;
    double lg_n = lgamma((double)n + 1);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i <= k; i++) {
            double l =
                lg_n - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - (double)n * M_LN2;
            if (pass == 0)
                lmax = l > lmax ? l : lmax;
            else
                terms += exp(l - lmax);
        }
    double p     = 2.0 * exp(lmax + log(terms));
    out->p_exact = p < 1 ? p : 1;
    double d     = fabs((double)(b - c)) - 1.0;
    out->chi2    = d > 0 ? d * d / (double)n : 0;
    out->p_chi2  = erfc(sqrt(out->chi2 / 2.0));
}

double compare_aggregate(cmp_agg agg, const double *x, const double *w, const size_t *idx,
                         size_t n) {
    double sx = 0, sw = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = idx ? idx[i] : i;
        sx += x[j];
        sw += w ? w[j] : 1.0;
    }
    switch (agg) {
    case CMP_AGG_MEAN: return sx / (double)n;
    case CMP_AGG_PPL: return exp(-sx / (double)n);
    case CMP_AGG_WEIGHTED_PPL: return exp(-sx / sw);
    case CMP_AGG_BITS_PER_BYTE: return -sx / sw / M_LN2;
    }
    return NAN;
}

static double paired_delta(void *user, const size_t *idx, size_t n) {
    const cmp_paired *p = user;
    double            b = compare_aggregate(p->agg, p->xb, p->wb, idx, n);
    double            c = compare_aggregate(p->agg, p->xc, p->wc, idx, n);
    return compare_delta_points(b, c, p->unit, p->higher_is_better);
}

int compare_paired_bootstrap(const cmp_paired *p, int resamples, double level, uint64_t seed,
                             boot_ci *out) {
    return boot_ci_compute(paired_delta, (void *)p, p->n, resamples, level, seed, out);
}
