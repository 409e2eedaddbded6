#include "harness/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "core/util.h"

void progress_init(progress *p, const char *label, const char *unit, int64_t total) {
    p->enabled = isatty(2);
    p->label   = label;
    p->unit    = unit;
    p->total   = total;
    p->t0      = time_now();
    p->last    = 0;
    p->drawn   = 0;
}

void progress_update(progress *p, int64_t done) {
    if (!p->enabled)
        return;
    double now = time_now();
    if (p->drawn && now - p->last < 0.1 && (p->total <= 0 || done < p->total))
        return;
    p->last        = now;
    double el      = now - p->t0;
    double rate    = el > 0 ? (double)done / el : 0;
    char   eta[32] = "";
    if (p->total > 0 && rate > 0 && done <= p->total)
        snprintf(eta, sizeof eta, ", ETA %.0fs", (double)(p->total - done) / rate);
    if (p->total > 0)
        fprintf(stderr, "\r\033[K%s: %lld/%lld %s (%.1f%%), %.1f %s/s%s", p->label, (long long)done,
                (long long)p->total, p->unit, 100.0 * (double)done / (double)p->total, rate,
                p->unit, eta);
    else
        fprintf(stderr, "\r\033[K%s: %lld %s, %.1f %s/s", p->label, (long long)done, p->unit, rate,
                p->unit);
    fflush(stderr);
    p->drawn = 1;
}

void progress_finish(progress *p) {
    if (p->enabled && p->drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    p->drawn = 0;
}
