/* harness/judge_cache.c — the SQLite reply cache (see judge_cache.h). */
#include "harness/judge_cache.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct judge_cache {
    sqlite3      *db;
    sqlite3_stmt *get, *put;
    char          path[1024];
};

static int db_fail(judge_cache *c, int code, const char *what, assay_error *err) {
    return assay_fail(err, code, "%s: cache %s: %s", c->path, what,
                      c->db ? sqlite3_errmsg(c->db) : "cannot open");
}

int judge_cache_open(const char *path, judge_cache **out, assay_error *err) {
    judge_cache *c = calloc(1, sizeof *c);
    *out           = NULL;
    if (!c)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    snprintf(c->path, sizeof c->path, "%s", path);
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        rc = db_fail(c, ASSAY_EIO, "cannot be opened", err);
        goto fail;
    }
    sqlite3_busy_timeout(c->db, 10000);
    /* WAL: a commit is one append to the log, and a process killed at any moment leaves every
     * committed row readable (synchronous=NORMAL only risks the last commits on power loss). */
    const char *setup = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                        "CREATE TABLE IF NOT EXISTS replies("
                        " key TEXT PRIMARY KEY NOT NULL,"
                        " request BLOB NOT NULL,"
                        " reply BLOB NOT NULL,"
                        " created REAL NOT NULL)";
    if (sqlite3_exec(c->db, setup, NULL, NULL, NULL) != SQLITE_OK) {
        int code = sqlite3_errcode(c->db);
        rc = db_fail(c, code == SQLITE_NOTADB || code == SQLITE_CORRUPT ? ASSAY_EFORMAT : ASSAY_EIO,
                     "cannot be set up", err);
        goto fail;
    }
    if (sqlite3_prepare_v2(c->db, "SELECT reply FROM replies WHERE key = ?1", -1, &c->get, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(c->db,
                           "INSERT OR REPLACE INTO replies(key, request, reply, created) "
                           "VALUES (?1, ?2, ?3, julianday('now'))",
                           -1, &c->put, NULL) != SQLITE_OK) {
        rc = db_fail(c, ASSAY_EFORMAT, "has an unexpected table 'replies'", err);
        goto fail;
    }
    *out = c;
    return ASSAY_OK;
fail:
    judge_cache_close(c);
    return rc;
}

void judge_cache_close(judge_cache *c) {
    if (!c)
        return;
    sqlite3_finalize(c->get);
    sqlite3_finalize(c->put);
    sqlite3_close(c->db);
    free(c);
}

int judge_cache_get(judge_cache *c, const char *key, char **reply, size_t *len, assay_error *err) {
    *reply = NULL;
    *len   = 0;
    sqlite3_reset(c->get);
    sqlite3_bind_text(c->get, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(c->get);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_fail(c, ASSAY_EIO, "read failed", err);
    const void *b = sqlite3_column_blob(c->get, 0);
    int         n = sqlite3_column_bytes(c->get, 0);
    char       *p = malloc((size_t)n + 1);
    if (!p)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    if (n > 0)
        memcpy(p, b, (size_t)n);
    p[n]   = '\0';
    *reply = p;
    *len   = (size_t)n;
    sqlite3_reset(c->get);
    return 1;
}

int judge_cache_put(judge_cache *c, const char *key, const char *request, size_t request_len,
                    const char *reply, size_t reply_len, assay_error *err) {
    if (request_len > INT32_MAX || reply_len > INT32_MAX)
        return assay_fail(err, ASSAY_EINVAL, "%s: cache entry over 2 GiB", c->path);
    sqlite3_reset(c->put);
    sqlite3_bind_text(c->put, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(c->put, 2, request, (int)request_len, SQLITE_STATIC);
    sqlite3_bind_blob(c->put, 3, reply, (int)reply_len, SQLITE_STATIC);
    int rc = sqlite3_step(c->put);
    sqlite3_reset(c->put);
    if (rc != SQLITE_DONE)
        return db_fail(c, ASSAY_EIO, "write failed", err);
    return ASSAY_OK;
}
