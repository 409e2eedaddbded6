#include "scoring/metrics.h"

#include <math.h>

#include "scoring/ppl.h"

int metric_argmax(const double *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

int metric_argmax_norm(const double *loglik, const size_t *chars, int n) {
    int    best = 0;
    double bv   = loglik[0] / (double)chars[0];
    for (int i = 1; i < n; i++) {
        double v = loglik[i] / (double)chars[i];
        /* numpy.argmax treats NaN as the maximum; a NaN here only comes from 0 / 0 */
        if (isnan(bv))
            break;
        if (isnan(v) || v > bv) {
            best = i;
            bv   = v;
        }
    }
    return best;
}

size_t metric_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint32_t cp;
        i += ppl_utf8_next(s + i, len - i, &cp);
    }
    return n;
}

double metric_mean(const double *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    return n ? s / (double)n : NAN;
}

double metric_mean_stderr(const double *x, size_t n) {
    if (n < 2)
        return NAN;
    double mu = metric_mean(x, n), ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (x[i] - mu) * (x[i] - mu);
    return sqrt(ss / (double)(n - 1)) / sqrt((double)n);
}

double metric_pooled_stderr(const double *stderrs, const size_t *sizes, size_t k) {
    double num = 0, total = 0;
    for (size_t i = 0; i < k; i++) {
        double n = (double)sizes[i];
        num += (n - 1) * stderrs[i] * stderrs[i] * n;
        total += n;
    }
    return sqrt(num / (total - (double)k) / total);
}

double metric_mc2(const double *loglik, const unsigned char *is_true, int n) {
    double num = 0, den = 0, mx = loglik[0];
    for (int i = 0; i < n; i++) { /* numpy: probs = exp(ll); probs / sum(probs) */
        den += exp(loglik[i]);
        mx = loglik[i] > mx ? loglik[i] : mx;
    }
    for (int i = 0; i < n; i++)
        if (is_true[i])
            num += exp(loglik[i]) / den;
    if (den > 0)
        return num;
    /* every exp(ll) underflowed (all ll below about -745): lm-eval gets 0 / 0 = NaN; the same
     * ratio computed as exp(ll - max) */
    num = den = 0;
    for (int i = 0; i < n; i++) {
        den += exp(loglik[i] - mx);
        num += is_true[i] ? exp(loglik[i] - mx) : 0;
    }
    return num / den;
}
