/* harness/judge_cache.h — the judge's reply cache: SQLite, one row per request, keyed by the
 * sha256 of the canonical request body. Every reply is committed in its own transaction the
 * moment it arrives (WAL journal), so killing the process at any point loses no reply that was
 * received, and a re-run with the same inputs sends nothing it already has. Only replies that
 * parsed are stored; failures are not, so a re-run retries exactly what failed. */
#ifndef ASSAY_JUDGE_CACHE_H
#define ASSAY_JUDGE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct judge_cache judge_cache;

/* Opens or creates the cache at path. A file that is not an SQLite database, or one whose table
 * has another shape, is ASSAY_EFORMAT naming the path. */
int  judge_cache_open(const char *path, judge_cache **out, assay_error *err);
void judge_cache_close(judge_cache *c); /* NULL-safe */

/* The stored reply for key (64 hex digits): returns 1 with *reply malloc'd (caller frees), 0 when
 * absent, or an assay status (> 1) with err set. */
int judge_cache_get(judge_cache *c, const char *key, char **reply, size_t *len, assay_error *err);

/* Stores (or replaces) the reply to request under key, committed before it returns. */
int judge_cache_put(judge_cache *c, const char *key, const char *request, size_t request_len,
                    const char *reply, size_t reply_len, assay_error *err);

#endif
