/* scoring/compare.h — the statistics behind `assay compare`: deltas in points, the WARN/CRIT
 * levels, McNemar's test for paired 0/1 outcomes and a paired bootstrap for means and corpus
 * metrics. Pure functions (no I/O). */
#ifndef ASSAY_COMPARE_H
#define ASSAY_COMPARE_H

#include <stddef.h>
#include <stdint.h>

#include "scoring/bootstrap.h"

/* How a metric's change is put in points (so one --warn/--crit pair fits every metric):
 *   CMP_UNIT_FRACTION  values in [0, 1] (acc, exact_match): 100 * (cand - base), percentage points
 *   CMP_UNIT_RELATIVE  unbounded values (perplexity, bits_per_byte): 100 * (cand - base) / |base|,
 *                      percent of the base value
 *   CMP_UNIT_RAW       values already in points (bleu, chrf: 0..100): cand - base
 * The delta is then signed so that negative is always worse: multiplied by -1 when lower is
 * better. */
typedef enum cmp_unit { CMP_UNIT_FRACTION, CMP_UNIT_RELATIVE, CMP_UNIT_RAW } cmp_unit;

double compare_delta_points(double base, double cand, cmp_unit unit, int higher_is_better);

/* The unit of a metric name (the part before ','), given both values. */
cmp_unit compare_metric_unit(const char *metric, double base, double cand);
/* 1 when higher is better for a metric name by default (perplexities and bits_per_byte, ter:
 * lower); a results file's "higher_is_better" block takes precedence. */
int compare_default_higher_is_better(const char *metric);

typedef enum cmp_level { CMP_OK = 0, CMP_WARN, CMP_CRIT } cmp_level;

/* d <= crit is CRIT, else d <= warn is WARN, else OK. crit <= warn (both usually negative) is
 * the caller's check: tested first, CRIT is always reachable. */
cmp_level   compare_level(double delta, double warn, double crit);
const char *compare_level_name(cmp_level l);

/* McNemar's test on paired 0/1 outcomes. b: pairs the base got right and the candidate wrong;
 * c: the reverse. The exact test is the two-sided binomial test of min(b, c) among b + c
 * discordant pairs at p = 1/2: p = min(1, 2 * P[X <= min(b, c)]), X ~ Binomial(b + c, 1/2)
 * (1 when b + c = 0). chi2 is the continuity-corrected statistic (|b - c| - 1)^2 / (b + c) with
 * its 1-degree-of-freedom p-value, reported alongside; decisions use the exact p. */
typedef struct cmp_mcnemar {
    int64_t b, c;
    double  p_exact;
    double  chi2, p_chi2; /* NAN when b + c = 0 */
} cmp_mcnemar;

void compare_mcnemar(int64_t b, int64_t c, cmp_mcnemar *out);

/* How per-sample values aggregate into the task's metric:
 *   CMP_AGG_MEAN          mean of x (acc, acc_norm, exact_match, f1 per sample)
 *   CMP_AGG_PPL           exp(-mean of x), x a log-likelihood (lambada's perplexity)
 *   CMP_AGG_WEIGHTED_PPL  exp(-sum x / sum w), x a log-likelihood and w its words or bytes
 *                         (word_perplexity, byte_perplexity)
 *   CMP_AGG_BITS_PER_BYTE -sum x / sum w / ln 2 */
typedef enum cmp_agg {
    CMP_AGG_MEAN,
    CMP_AGG_PPL,
    CMP_AGG_WEIGHTED_PPL,
    CMP_AGG_BITS_PER_BYTE
} cmp_agg;

/* The aggregate over x[idx[i]] (w may be NULL except for the weighted kinds); idx NULL: all. */
double compare_aggregate(cmp_agg agg, const double *x, const double *w, const size_t *idx,
                         size_t n);

/* One metric of paired samples: sample i of base and cand are the same document. */
typedef struct cmp_paired {
    cmp_agg       agg;
    cmp_unit      unit;
    int           higher_is_better;
    const double *xb, *wb, *xc, *wc;
    size_t        n;
} cmp_paired;

/* Paired percentile bootstrap of the delta in points: each resample draws n documents with
 * replacement and recomputes both aggregates on the same documents (boot_ci_compute: fixed
 * seed, so the same inputs always give the same interval). Returns 0, or -1 out of memory. */
int compare_paired_bootstrap(const cmp_paired *p, int resamples, double level, uint64_t seed,
                             boot_ci *out);

#endif
