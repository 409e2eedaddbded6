/* scoring/filters.h — what turns a raw generation into an answer, and the per-response checks of
 * generation tasks: lm-eval's filters (regex extract, take first line, strip, lowercase), label
 * extraction from a label set, JSON format compliance against a small schema, a classification
 * report, response-length statistics. Pure functions on UTF-8 byte strings with lengths. */
#ifndef ASSAY_FILTERS_H
#define ASSAY_FILTERS_H

#include <stddef.h>

#include "core/error.h"

/* An owned output string (NUL-terminated for convenience; n excludes the NUL). Free with free(s).
 */
typedef struct flt_out {
    char  *s;
    size_t n;
} flt_out;

/* ---- lm-eval RegexFilter: re.findall(pattern, resp); select the group_select-th match (negative
 * counts from the end: -1 is lm-eval's "last match" of flexible-extract); when a match is a tuple
 * (several groups) the first non-empty group is taken, as lm-eval does; no match gives
 * fallback ("[invalid]" in lm-eval). Patterns are compiled with PCRE2 (UTF mode) once. ---- */
typedef struct flt_regex flt_regex;
/* NULL with err (ASSAY_EINVAL, the pattern and PCRE2's message with the offset) when invalid. */
flt_regex *flt_regex_compile(const char *pattern, int group_select, const char *fallback,
                             assay_error *err);
void       flt_regex_free(flt_regex *r); /* NULL-safe */
/* 0, or -1 when out of memory / PCRE2 match failure (err says which). */
int flt_regex_apply(const flt_regex *r, const char *s, size_t n, flt_out *out, assay_error *err);

/* lm-eval "take_first" is the first response (the caller's); these are the string filters: */
int flt_first_line(const char *s, size_t n, flt_out *out); /* text before the first "\n" */
int flt_strip(const char *s, size_t n, flt_out *out);      /* Python str.strip() */
int flt_lowercase(const char *s, size_t n, flt_out *out);  /* Python str.lower() on UTF-8 */

/* ---- label extraction: labels[0..n_labels); matching is case-insensitive on the stripped
 * response. A response that starts with a label wins (the longest such label); else the label
 * found at the smallest offset anywhere (ties: the longest); else -1 (UNKNOWN). Returns the
 * label index or -1. ---- */
int flt_extract_label(const char *s, size_t n, const char *const *labels, const size_t *label_lens,
                      size_t n_labels);

/* ---- JSON format compliance. schema is a JSON object (text) of the form
 * {"required": {"key": "string"|"number"|"integer"|"boolean"|"array"|"object"|"null"|"any", ...}}
 * or a subset of JSON Schema: {"type": "object", "properties": {"k": {"type": T}}, "required":
 * [..]}. The response is stripped and one surrounding ``` / ```json fence is removed first. ---- */
typedef struct flt_schema flt_schema;
/* NULL with err (ASSAY_EINVAL, what is wrong in the schema) when the schema is not valid JSON or
 * not of that form. `where` names the schema's source in messages. */
flt_schema *flt_schema_parse(const char *text, size_t n, const char *where, assay_error *err);
void        flt_schema_free(flt_schema *s); /* NULL-safe */
typedef struct flt_json_check {
    int  parses;       /* the response is a JSON value */
    int  has_required; /* it is an object with every required key of the right type */
    char why[160];     /* first failure, for samples ("missing key \"x\"", "x: expected number") */
} flt_json_check;
int flt_json_check_response(const flt_schema *schema /* NULL: parse only */, const char *s,
                            size_t n, flt_json_check *out);

/* ---- classification report over predicted / gold label indices in [0, n_labels) (a predicted
 * -1 is UNKNOWN: counted as wrong for its gold class, its own column in the confusion matrix). As
 * sklearn's classification_report with zero_division=0. ---- */
typedef struct flt_class_stats {
    double precision, recall, f1;
    size_t support;
} flt_class_stats;
typedef struct flt_class_report {
    size_t           n_labels;
    flt_class_stats *per_class; /* n_labels */
    flt_class_stats  macro, micro, weighted;
    double           accuracy;
    size_t          *confusion; /* (n_labels) x (n_labels + 1): [gold][pred], last column UNKNOWN */
    size_t           n_unknown;
} flt_class_report;
int  flt_class_report_compute(const int *pred, const int *gold, size_t n, size_t n_labels,
                              flt_class_report *out);
void flt_class_report_free(flt_class_report *r);

/* ---- length statistics: mean, p50, p95 (numpy.percentile, linear interpolation) ---- */
typedef struct flt_dist {
    double mean, p50, p95, min, max;
    size_t n;
} flt_dist;
int flt_dist_compute(const double *x, size_t n, flt_dist *out); /* n == 0: NaNs */

#endif
