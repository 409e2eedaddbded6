/* scoring/filters.h — what turns a raw generation into an answer, and the per-response checks of
 * generation tasks: lm-eval's filters (regex extract, take first line, strip, lowercase), label
 * extraction from a label set, JSON format compliance against a small schema, a classification
 * report, response-length statistics. Pure functions on UTF-8 byte strings with lengths. */
#ifndef ASSAY_FILTERS_H
#define ASSAY_FILTERS_H

#include <stddef.h>

#include "core/error.h"

/* An owned output string (NUL-terminated; n excludes the NUL). Free with free(s). */
typedef struct flt_out {
    char  *s;
    size_t n;
} flt_out;

/* ---- lm-eval RegexFilter: re.findall(pattern, resp); select the group_select-th match (negative
 * counts from the end: -1 is lm-eval's "last match" of flexible-extract); when a match is a tuple
 * (several groups) the first non-empty group is taken, as lm-eval does; no match gives
 * fallback ("[invalid]" in lm-eval). The selected match is str.strip()ped; a tuple of empty
 * groups gives the fallback stripped, no match the fallback as given (both as lm-eval). A
 * group_select past the matches (IndexError in Python) gives the fallback as given.
 * Patterns are Python `re` syntax, compiled once with PCRE2 (UTF, UCP) after a rewrite of what
 * PCRE2 reads differently (\s and \S are Python's whitespace, \Z the very end, \uXXXX and
 * \UXXXXXXXX code points, x{,n} = x{0,n}, "[" inside a set literal, (?m)^ matching after a final
 * "\n"); escapes Python rejects (\K, \p, \Q ...) and "(*" verbs are refused. Empty matches
 * follow Python 3.7+. Bytes that are not valid UTF-8 never match. A compiled flt_regex is
 * read-only: one may serve several threads. ---- */
typedef struct flt_regex flt_regex;
/* NULL with err (ASSAY_EINVAL, the pattern and PCRE2's message with the offset) when invalid. */
flt_regex *flt_regex_compile(const char *pattern, int group_select, const char *fallback,
                             assay_error *err);
void       flt_regex_free(flt_regex *r); /* NULL-safe */
/* A pattern written for Python's `re`, compiled by PCRE2 with Python's meaning (the rewrite
 * above; LF the only newline; JIT when available). NULL with err (ASSAY_EINVAL: `what`, the
 * pattern and the reason, from the rewrite or PCRE2) when either rejects it. The result is a
 * pcre2_code (8-bit); free it with pcre2_code_free. Shared by the filters and exact_match. */
struct pcre2_real_code_8;
struct pcre2_real_code_8 *flt_pyre_compile(const char *pattern, const char *what, assay_error *err);
/* 0, or -1 when out of memory / PCRE2 match failure such as its match limit on a pathological
 * pattern (err says which). */
int flt_regex_apply(const flt_regex *r, const char *s, size_t n, flt_out *out, assay_error *err);

/* lm-eval "take_first" is the first response (the caller's); these are the string filters: */
/* Each returns 0, or -1 when out of memory. Bytes that are not valid UTF-8 are kept as they
 * are (Python would never see them). */
int flt_first_line(const char *s, size_t n, flt_out *out); /* text before the first "\n" */
int flt_strip(const char *s, size_t n, flt_out *out);      /* Python str.strip() */
/* Python str.lower(): the simple lowercase mapping plus U+0130 → "i" U+0307 and the final
 * sigma rule (Σ → ς after a cased letter and not before one). */
int flt_lowercase(const char *s, size_t n, flt_out *out);

/* ---- label extraction: labels[0..n_labels); matching is case-insensitive on the stripped
 * response. A response that starts with a label wins (the longest such label); else the label
 * found at the smallest offset anywhere (ties: the longest; equal labels: the first); else -1
 * (UNKNOWN). Both sides are lowered as flt_lowercase; a label is found anywhere, also inside a
 * word ("no" in "know"); an empty label never matches. Returns the label index, or -1 (also
 * when out of memory). ---- */
int flt_extract_label(const char *s, size_t n, const char *const *labels, const size_t *label_lens,
                      size_t n_labels);

/* ---- JSON format compliance. schema is a JSON object (text) of the form
 * {"required": {"key": "string"|"number"|"integer"|"boolean"|"array"|"object"|"null"|"any", ...}}
 * or a subset of JSON Schema: {"type": "object", "properties": {"k": {"type": T}}, "required":
 * [..]}, where T is a type name or a list of them and "$schema", "$id", "title", "description"
 * may appear; other keywords are refused. In that form a present optional property must have its
 * type too. "integer" is a number with an integral value (1.0 is one, as in JSON Schema);
 * "number" and "integer" never take booleans.
 * The response is stripped and one ``` fence is removed first (the opening ``` with an optional
 * info word such as json, and then a closing ``` at the end if there is one), then must be one
 * RFC 8259 value (as Python's json.loads with NaN / Infinity refused; nesting deeper than 512
 * counts as not JSON). A repeated key keeps its last value, as Python's json does. ---- */
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
/* 0, or -1 when out of memory. With schema NULL, has_required = parses. */
int flt_json_check_response(const flt_schema *schema /* NULL: parse only */, const char *s,
                            size_t n, flt_json_check *out);

/* ---- classification report over predicted / gold label indices in [0, n_labels) (a predicted
 * -1 is UNKNOWN: counted as wrong for its gold class, its own column in the confusion matrix). As
 * sklearn's classification_report(labels=[0..n_labels), zero_division=0): macro averages every
 * class (also those without support), weighted by support, micro sums counts over the classes
 * (UNKNOWN predictions lower micro recall, not precision); accuracy is the share pred == gold
 * (NaN when n == 0). Returns 0, or -1 when a label is out of range, n_labels is 0, or out of
 * memory. ---- */
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
/* 0, or -1 when out of memory. n == 0 or a NaN in x: NaN statistics (as numpy). */
int flt_dist_compute(const double *x, size_t n, flt_dist *out);

#endif
