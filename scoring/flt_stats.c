/* scoring/flt_stats.c — the classification report (sklearn's precision_recall_fscore_support and
 * classification_report with zero_division=0 and labels = every class) and the length
 * distribution (numpy's mean and percentile). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "scoring/bootstrap.h"
#include "scoring/filters.h"

/* zero_division=0: an empty denominator gives 0 */
static double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

/* P, R and F1 from counts; F1 = 2tp / (2tp + fp + fn), which is sklearn's form. */
static flt_class_stats class_stats(size_t tp, size_t fp, size_t fn) {
    flt_class_stats s;
    s.precision = ratio((double)tp, (double)tp + (double)fp);
    s.recall    = ratio((double)tp, (double)tp + (double)fn);
    s.f1        = ratio(2.0 * (double)tp, 2.0 * (double)tp + (double)fp + (double)fn);
    s.support   = tp + fn;
    return s;
}

int flt_class_report_compute(const int *pred, const int *gold, size_t n, size_t n_labels,
                             flt_class_report *out) {
    memset(out, 0, sizeof *out);
    size_t cols, cells;
    if (n_labels == 0 || size_add(n_labels, 1, &cols) || size_mul(n_labels, cols, &cells))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (gold[i] < 0 || (size_t)gold[i] >= n_labels || pred[i] < -1 ||
            (pred[i] >= 0 && (size_t)pred[i] >= n_labels))
            return -1;
    out->per_class = calloc(n_labels, sizeof *out->per_class);
    out->confusion = calloc(cells, sizeof *out->confusion);
    if (!out->per_class || !out->confusion) {
        flt_class_report_free(out);
        return -1;
    }
    out->n_labels  = n_labels;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t col = pred[i] < 0 ? n_labels : (size_t)pred[i];
        out->confusion[(size_t)gold[i] * cols + col]++;
        correct += pred[i] == gold[i];
        out->n_unknown += pred[i] < 0;
    }
    size_t tp_sum = 0, fp_sum = 0, fn_sum = 0;
    double w_p = 0, w_r = 0, w_f = 0, m_p = 0, m_r = 0, m_f = 0;
    for (size_t c = 0; c < n_labels; c++) {
        size_t tp = out->confusion[c * cols + c], fp = 0, fn = 0;
        for (size_t g = 0; g < n_labels; g++)
            fp += g != c ? out->confusion[g * cols + c] : 0;
        for (size_t p = 0; p < cols; p++)
            fn += p != c ? out->confusion[c * cols + p] : 0;
        flt_class_stats s = class_stats(tp, fp, fn);
        out->per_class[c] = s;
        tp_sum += tp, fp_sum += fp, fn_sum += fn;
        m_p += s.precision, m_r += s.recall, m_f += s.f1;
        w_p += s.precision * (double)s.support, w_r += s.recall * (double)s.support;
        w_f += s.f1 * (double)s.support;
    }
    double k           = (double)n_labels;
    out->macro         = (flt_class_stats){m_p / k, m_r / k, m_f / k, n};
    out->micro         = class_stats(tp_sum, fp_sum, fn_sum);
    out->micro.support = n;
    /* every gold label is a class, so the weights sum to n; no support at all: zeros */
    out->weighted =
        (flt_class_stats){ratio(w_p, (double)n), ratio(w_r, (double)n), ratio(w_f, (double)n), n};
    out->accuracy = n ? (double)correct / (double)n : NAN;
    return 0;
}

void flt_class_report_free(flt_class_report *r) {
    if (!r)
        return;
    free(r->per_class);
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int flt_dist_compute(const double *x, size_t n, flt_dist *out) {
    out->n    = n;
    out->mean = out->p50 = out->p95 = out->min = out->max = NAN;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (isnan(x[i])) /* numpy: any NaN makes every statistic NaN */
            return 0;
    double *s = n <= SIZE_MAX / sizeof *s ? malloc(n * sizeof *s) : NULL;
    if (!s)
        return -1;
    memcpy(s, x, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    out->mean = sum / (double)n;
    out->min  = s[0];
    out->max  = s[n - 1];
    /* numpy.percentile divides q by 100 first: 95 / 100 is the double 0.95 */
    out->p50 = boot_quantile_sorted(s, n, 50.0 / 100.0);
    out->p95 = boot_quantile_sorted(s, n, 95.0 / 100.0);
    free(s);
    return 0;
}
