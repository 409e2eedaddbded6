/* scoring/stop.h — stop strings over generated text that arrives in pieces (one decoded token at a
 * time): finds the earliest occurrence of any stop string even when it spans several pieces, and
 * says how much text is already final (cannot become part of a stop string). */
#ifndef ASSAY_STOP_H
#define ASSAY_STOP_H

#include <stddef.h>

#include "core/error.h"

typedef struct stop_matcher {
    char  **stops; /* owned copies of the non-empty stop strings */
    size_t *lens;
    size_t  n_stops;
    size_t  max_len; /* longest stop string */
    char   *text;    /* everything fed so far (may hold NULs), NUL-terminated */
    size_t  len, cap;
    size_t  scanned; /* occurrences starting before this offset have been ruled out */
    int     hit;     /* 1 once a stop string was found */
    size_t  hit_at;  /* text offset of the earliest occurrence */
    int     hit_which;
} stop_matcher;

/* Copies the stop strings (empty ones are ignored: an empty stop would stop before any text).
 * lens[i] is the byte length of stops[i], which may hold NUL bytes; lens NULL: strlen. */
int  stop_init(stop_matcher *m, const char *const *stops, const size_t *lens, size_t n_stops,
               assay_error *err);
void stop_free(stop_matcher *m); /* NULL-safe */

/* Appends a piece. Returns 1 when the text now contains a stop string (the earliest one wins;
 * later feeds are ignored), 0 when not, or a negative assay status on allocation failure. */
int stop_feed(stop_matcher *m, const char *piece, size_t len, assay_error *err);

/* The text so far, truncated before the stop string when one was found. */
const char *stop_text(const stop_matcher *m, size_t *len);

/* How many bytes of stop_text are final: everything but the longest suffix that is a proper
 * prefix of some stop string (after a hit, all of it). */
size_t stop_final_len(const stop_matcher *m);

/* Which stop string was hit (index into the original list, counting only non-empty ones), or
 * -1. */
static inline int stop_which(const stop_matcher *m) { return m->hit ? m->hit_which : -1; }

#endif
