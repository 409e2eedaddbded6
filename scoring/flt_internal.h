/* scoring/flt_internal.h — helpers shared by the scoring/flt_*.c files (not a public API). */
#ifndef ASSAY_FLT_INTERNAL_H
#define ASSAY_FLT_INTERNAL_H

#include <stddef.h>

#include "scoring/filters.h"

/* Python str.strip() bounds of s[0..n): s[*a..*b) is what remains. Code points Python's
 * str.isspace() accepts are removed from both ends; bytes that are not valid UTF-8 stay. */
void flt_strip_span(const char *s, size_t n, size_t *a, size_t *b);

/* out = a NUL-terminated copy of s[0..n). 0, or -1 when out of memory. */
int flt_out_set(flt_out *out, const char *s, size_t n);

#endif
