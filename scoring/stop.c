#include "scoring/stop.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

int stop_init(stop_matcher *m, const char *const *stops, const size_t *lens, size_t n_stops,
              assay_error *err) {
    memset(m, 0, sizeof *m);
    m->text = malloc(64);
    m->cap  = 64;
    if (!m->text)
        return assay_fail(err, ASSAY_ENOMEM, "stop strings: out of memory");
    m->text[0] = '\0';
    if (n_stops) {
        m->stops = calloc(n_stops, sizeof *m->stops);
        m->lens  = calloc(n_stops, sizeof *m->lens);
        if (!m->stops || !m->lens)
            goto oom;
    }
    for (size_t i = 0; i < n_stops; i++) {
        size_t l = !stops[i] ? 0 : lens ? lens[i] : strlen(stops[i]);
        if (l == 0)
            continue;
        char *c = malloc(l);
        if (!c)
            goto oom;
        memcpy(c, stops[i], l);
        m->stops[m->n_stops]  = c;
        m->lens[m->n_stops++] = l;
        if (l > m->max_len)
            m->max_len = l;
    }
    return ASSAY_OK;
oom:
    stop_free(m);
    return assay_fail(err, ASSAY_ENOMEM, "stop strings: out of memory");
}

void stop_free(stop_matcher *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n_stops; i++)
        free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    free(m->text);
    memset(m, 0, sizeof *m);
}

int stop_feed(stop_matcher *m, const char *piece, size_t len, assay_error *err) {
    if (m->hit)
        return 1;
    size_t need;
    if (size_add(m->len, len, &need) || size_add(need, 1, &need))
        return -assay_fail(err, ASSAY_ENOMEM, "stop strings: text too long");
    if (need > m->cap) {
        size_t cap = m->cap;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *nt = realloc(m->text, cap);
        if (!nt)
            return -assay_fail(err, ASSAY_ENOMEM, "stop strings: out of memory (%zu bytes)", cap);
        m->text = nt;
        m->cap  = cap;
    }
    memcpy(m->text + m->len, piece, len);
    m->len += len;
    m->text[m->len] = '\0';
    /* Any new occurrence ends in the new bytes, so it starts at or after
     * scanned = old_len - (max_len - 1); scan each start once, earliest first. */
    for (size_t at = m->scanned; at < m->len; at++) {
        for (size_t i = 0; i < m->n_stops; i++) {
            if (m->lens[i] <= m->len - at && !memcmp(m->text + at, m->stops[i], m->lens[i])) {
                m->hit       = 1;
                m->hit_at    = at;
                m->hit_which = (int)i;
                return 1;
            }
        }
        /* Ruled out for good only when even the longest stop had room to match here. */
        if (m->scanned == at && m->len - at >= m->max_len)
            m->scanned = at + 1;
    }
    return 0;
}

const char *stop_text(const stop_matcher *m, size_t *len) {
    if (len)
        *len = m->hit ? m->hit_at : m->len;
    return m->text;
}

size_t stop_final_len(const stop_matcher *m) {
    if (m->hit)
        return m->hit_at;
    /* Hold back the longest suffix that is a proper prefix of a stop string. */
    size_t hold = 0;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t lim = m->lens[i] - 1 < m->len ? m->lens[i] - 1 : m->len;
        for (size_t k = lim; k > hold; k--)
            if (!memcmp(m->text + m->len - k, m->stops[i], k)) {
                hold = k;
                break;
            }
    }
    return m->len - hold;
}
