/* scoring/metrics.h — multiple-choice metrics and their standard errors as lm-eval defines them
 * (lm_eval/api/task.py process_results, lm_eval/api/metrics.py). Pure functions. */
#ifndef ASSAY_METRICS_H
#define ASSAY_METRICS_H

#include <stddef.h>

/* Index of the largest value; ties go to the first (numpy.argmax). n >= 1. NaN never wins
 * (the caller refuses non-finite log-likelihoods before this). */
int metric_argmax(const double *v, int n);

/* lm-eval's acc_norm prediction: argmax of loglik[i] / chars[i], chars the length of choice i in
 * code points (Python len(str)) without the target delimiter. A zero length divides to +-inf or
 * NaN as numpy does (lm-eval would warn); such a choice never wins unless its log-likelihood is
 * positive. */
int metric_argmax_norm(const double *loglik, const size_t *chars, int n);

/* Code points in s[0..len) (invalid bytes count one each). */
size_t metric_chars(const char *s, size_t len);

/* lm-eval truthfulqa utils.process_results_mc2: p = exp(ll) / sum(exp(ll)); the sum of p over the
 * true choices, in numpy's order of operations. Where every exp(ll) underflows to 0 (all ll below
 * about -745) lm-eval's score is 0 / 0 = NaN; here the same ratio is computed as exp(ll - max). */
double metric_mc2(const double *loglik, const unsigned char *is_true, int n);

/* mean and lm-eval's mean_stderr = sample stddev (n - 1) / sqrt(n); n < 2 gives NaN stderr. */
double metric_mean(const double *x, size_t n);
double metric_mean_stderr(const double *x, size_t n);

/* lm-eval's pooled_sample_stderr for a group weighted by size:
 * sqrt(sum((n_i - 1) * se_i^2 * n_i) / (sum n_i - k) / sum n_i). */
double metric_pooled_stderr(const double *stderrs, const size_t *sizes, size_t k);

#endif
