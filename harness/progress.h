/* harness/progress.h — a one-line progress display on stderr ("\r" updates with rate and ETA),
 * shown only when stderr is a terminal so logs and pipes stay clean. */
#ifndef ASSAY_PROGRESS_H
#define ASSAY_PROGRESS_H

#include <stdint.h>

typedef struct progress {
    int         enabled;
    const char *label; /* "ppl", "score", ... */
    const char *unit;  /* "tok", "req", ... */
    int64_t     total; /* 0: unknown */
    double      t0, last;
    int         drawn;
} progress;

void progress_init(progress *p, const char *label, const char *unit, int64_t total);
void progress_update(progress *p, int64_t done); /* redraws at most ~10 times a second */
void progress_finish(progress *p);               /* clears the line */

#endif
