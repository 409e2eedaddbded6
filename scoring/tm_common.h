/* scoring/tm_common.h — internals shared by the textmetrics files (not a public interface):
 * UTF-8 decoding as Python sees a str, Python's whitespace and lower(), growable buffers, and one
 * n-gram matcher that BLEU, chrF, ROUGE-N and SQuAD F1 all count with. */
#ifndef ASSAY_TM_COMMON_H
#define ASSAY_TM_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Invalid UTF-8 bytes decode one at a time to U+DC80+byte (Python's surrogateescape) and encode
 * back to the same byte, so no input is lost or rejected. Returns the bytes consumed (>= 1). */
size_t tm_utf8_next(const char *s, size_t n, size_t i, uint32_t *cp);

/* str.isspace() / str.split() whitespace. */
int tm_py_isspace(uint32_t cp);
/* A character Python's `re` counts as \w in a str pattern (isalnum() or '_'). */
int tm_py_isword(uint32_t cp);

typedef struct tm_buf {
    char  *p;
    size_t n, cap;
} tm_buf;
/* Room for `extra` more bytes and a NUL. */
int  tm_buf_reserve(tm_buf *b, size_t extra);
int  tm_buf_put(tm_buf *b, const void *p, size_t n); /* keeps p NUL-terminated */
int  tm_buf_put_cp(tm_buf *b, uint32_t cp);
void tm_buf_free(tm_buf *b);

/* str.lower() of s into out (replacing its contents): full mappings (U+0130 -> "i\u0307") and a
 * capital sigma that ends a word becoming U+03C2. numpy's char.lower gives the same. */
int tm_lower(tm_buf *out, const char *s, size_t n);

/* A token or character: bytes and a hash of them. */
typedef struct tm_unit {
    const char *p;
    uint32_t    n;
    uint64_t    h;
} tm_unit;
typedef struct tm_units {
    tm_unit *v;
    size_t   n, cap;
} tm_units;
int  tm_units_push(tm_units *u, const char *p, size_t n);
void tm_units_free(tm_units *u);
/* Splits on Python whitespace, like str.split(). */
int tm_split_ws(tm_units *out, const char *s, size_t n);

/* Clipped n-gram matches of a hypothesis against references, orders 1..max_order (<= 8): a
 * hypothesis n-gram counts up to the largest number of times it occurs in any one reference (with
 * one reference, Counter intersection). match[k] gets the matches of order k + 1. The table is
 * reused between calls. */
typedef struct tm_ngram_table {
    struct tm_ngram_entry *e;
    size_t                 cap;
    uint32_t               gen;
} tm_ngram_table;
int  tm_ngram_match(tm_ngram_table *t, const tm_units *hyp, const tm_units *refs, size_t n_refs,
                    int max_order, long *match);
void tm_ngram_table_free(tm_ngram_table *t);

/* n-grams of order k in a sequence of n units. */
static inline long tm_ngram_count(size_t n, int k) {
    return n >= (size_t)k ? (long)(n - (size_t)k + 1) : 0;
}

#endif
