#include "harness/history.h"

#include <cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "harness/commands.h"

#ifndef ASSAY_COMMIT
#define ASSAY_COMMIT "unknown"
#endif

static const char history_schema[] =
    "CREATE TABLE IF NOT EXISTS runs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time_utc TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " command TEXT NOT NULL, model TEXT, model_sha256 TEXT, tokenizer_sha256 TEXT,"
    " data_sha256 TEXT, config TEXT, assay_version TEXT NOT NULL, assay_commit TEXT,"
    " device TEXT, wall_s REAL, tokens INTEGER, cost REAL);"
    "CREATE TABLE IF NOT EXISTS metrics ("
    " run_id INTEGER NOT NULL REFERENCES runs(id), task TEXT NOT NULL, metric TEXT NOT NULL,"
    " value REAL, stderr REAL, PRIMARY KEY (run_id, task, metric));"
    "CREATE INDEX IF NOT EXISTS metrics_task ON metrics(task, metric);";

/* The SQLite message, with the path; SQLITE_NOTADB and SQLITE_CORRUPT are bad input. */
static int history_fail(sqlite3 *db, int src, const char *path, const char *what,
                        assay_error *err) {
    int code = (src & 0xff) == SQLITE_NOTADB || (src & 0xff) == SQLITE_CORRUPT ? ASSAY_EFORMAT
               : (src & 0xff) == SQLITE_CANTOPEN || (src & 0xff) == SQLITE_READONLY ||
                       (src & 0xff) == SQLITE_IOERR || (src & 0xff) == SQLITE_FULL
                   ? ASSAY_EIO
                   : ASSAY_EINTERNAL;
    if (code == ASSAY_EFORMAT)
        return assay_fail(err, code,
                          "%s: not a readable SQLite database (%s); expected an assay history "
                          "file",
                          path, db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
    return assay_fail(err, code, "%s: %s: %s", path, what,
                      db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
}

/* Refuses a FIFO, device or directory before SQLite sees it (it would block or misbehave). */
static int history_check_path(const char *path, int must_exist, assay_error *err) {
    if (!path_present(path)) {
        if (must_exist)
            return assay_fail(err, ASSAY_EIO, "%s: no such history file", path);
        return ASSAY_OK;
    }
    int fd = file_open_regular(path, NULL, err);
    if (fd < 0)
        return err->code ? err->code : ASSAY_EIO;
    close(fd);
    return ASSAY_OK;
}

static int history_open(const char *path, int write, sqlite3 **out, assay_error *err) {
    sqlite3 *db = NULL;
    int      rc = history_check_path(path, !write, err);
    if (rc)
        return rc;
    int flags = write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int src   = sqlite3_open_v2(path, &db, flags, NULL);
    if (src != SQLITE_OK) {
        rc = history_fail(db, src, path, "cannot open", err);
        sqlite3_close(db);
        return rc;
    }
    /* The file may come from anyone: no schema-defined functions run, no double-quoted strings,
     * and the defensive mode refuses writes that could corrupt it. */
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_busy_timeout(db, 10000);

    sqlite3_stmt *st  = NULL;
    int           app = 0, tables = 0;
    /* The check and the creation are one transaction: a writer that creates the file while
     * another checks it must not be seen half-way (tables there, application_id not yet). */
    if ((src = sqlite3_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL)) !=
        SQLITE_OK)
        goto sql_fail;
    if ((src = sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &st, NULL)) != SQLITE_OK ||
        (src = sqlite3_step(st)) != SQLITE_ROW)
        goto sql_fail;
    app = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if ((src = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL)) !=
            SQLITE_OK ||
        (src = sqlite3_step(st)) != SQLITE_ROW)
        goto sql_fail;
    tables = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (app != HISTORY_APP_ID && (tables > 0 || !write)) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s: an SQLite database but not an assay history (application_id %d, "
                        "expected %d)",
                        path, app, HISTORY_APP_ID);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
        return rc;
    }
    if (write && app != HISTORY_APP_ID) {
        char sql[sizeof history_schema + 128];
        snprintf(sql, sizeof sql, "%sPRAGMA application_id=%d;", history_schema, HISTORY_APP_ID);
        if ((src = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK)
            goto sql_fail;
    }
    if ((src = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
        goto sql_fail;
    *out = db;
    return ASSAY_OK;
sql_fail:
    rc = history_fail(db, src, path, "cannot read", err);
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

int history_check(const char *path, assay_error *err) {
    sqlite3 *db = NULL;
    int      rc = history_open(path, 1, &db, err);
    sqlite3_close(db);
    return rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void bind_real(sqlite3_stmt *st, int i, double v) {
    if (isfinite(v))
        sqlite3_bind_double(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

int history_append(const char *path, const history_run *run, int64_t *run_id, assay_error *err) {
    sqlite3      *db = NULL;
    sqlite3_stmt *st = NULL;
    int           rc = history_open(path, 1, &db, err), src;
    if (rc)
        return rc;
    if ((src = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
        goto sql_fail;
    if ((src = sqlite3_prepare_v2(db,
                                  "INSERT INTO runs (command, model, model_sha256, "
                                  "tokenizer_sha256, data_sha256, config, assay_version, "
                                  "assay_commit, device, wall_s, tokens, cost) VALUES "
                                  "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                                  -1, &st, NULL)) != SQLITE_OK)
        goto sql_fail;
    bind_text(st, 1, run->command ? run->command : "unknown");
    bind_text(st, 2, run->model);
    bind_text(st, 3, run->model_sha256);
    bind_text(st, 4, run->tokenizer_sha256);
    bind_text(st, 5, run->data_sha256);
    bind_text(st, 6, run->config);
    bind_text(st, 7, ASSAY_VERSION);
    bind_text(st, 8, ASSAY_COMMIT);
    bind_text(st, 9, run->device);
    bind_real(st, 10, run->wall_s);
    if (run->tokens >= 0)
        sqlite3_bind_int64(st, 11, run->tokens);
    else
        sqlite3_bind_null(st, 11);
    bind_real(st, 12, run->cost);
    if ((src = sqlite3_step(st)) != SQLITE_DONE)
        goto sql_fail;
    sqlite3_finalize(st);
    st         = NULL;
    int64_t id = sqlite3_last_insert_rowid(db);
    if ((src = sqlite3_prepare_v2(db,
                                  "INSERT OR REPLACE INTO metrics (run_id, task, metric, value, "
                                  "stderr) VALUES (?1,?2,?3,?4,?5)",
                                  -1, &st, NULL)) != SQLITE_OK)
        goto sql_fail;
    for (size_t i = 0; i < run->n_metrics; i++) {
        const history_metric *m = &run->metrics[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        bind_text(st, 2, m->task);
        bind_text(st, 3, m->metric);
        bind_real(st, 4, m->value);
        bind_real(st, 5, m->stderr);
        if ((src = sqlite3_step(st)) != SQLITE_DONE)
            goto sql_fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((src = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
        goto sql_fail;
    if (run_id)
        *run_id = id;
    sqlite3_close(db);
    return ASSAY_OK;
sql_fail:
    rc = history_fail(db, src, path, "cannot append the run", err);
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int history_record_run(const char *path, const char *command, const cJSON *results,
                       assay_error *err) {
    const cJSON *res  = cJSON_GetObjectItemCaseSensitive(results, "results");
    const cJSON *as   = cJSON_GetObjectItemCaseSensitive(results, "assay");
    const cJSON *hs   = cJSON_GetObjectItemCaseSensitive(as, "hashes");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(as, "cost");
    const cJSON *task, *v;
    size_t       n = 0, k = 0;
    if (!cJSON_IsObject(res))
        return assay_fail(err, ASSAY_EINVAL, "%s: the run to record has no \"results\" object",
                          path);
    cJSON_ArrayForEach(task, res) cJSON_ArrayForEach(v, task) n++;
    history_metric *ms   = calloc(n ? n : 1, sizeof *ms);
    char          **name = calloc(n ? n : 1, sizeof *name);
    if (!ms || !name) {
        free(ms), free(name);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    }
    int rc = ASSAY_OK;
    cJSON_ArrayForEach(task, res) {
        cJSON_ArrayForEach(v, task) {
            const char *key = v->string, *comma = key ? strchr(key, ',') : NULL;
            size_t      base = comma ? (size_t)(comma - key) : 0;
            if (!cJSON_IsNumber(v) || !comma || strstr(key, "_stderr,"))
                continue;
            /* "acc,none" is stored as "acc"; another filter keeps its name */
            int  plain = !strcmp(comma, ",none");
            char sek[512];
            snprintf(sek, sizeof sek, "%.*s_stderr%s", (int)base, key, comma);
            if (!(name[k] = plain ? strndup(key, base) : strdup(key))) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                goto done;
            }
            ms[k] = (history_metric){task->string, name[k], v->valuedouble, json_num(task, sek)};
            k++;
        }
    }
    cJSON       *cfg  = cJSON_CreateObject();
    const cJSON *conf = cJSON_GetObjectItemCaseSensitive(results, "config");
    const cJSON *ns   = cJSON_GetObjectItemCaseSensitive(results, "n-shot");
    if (conf)
        cJSON_AddItemToObject(cfg, "config", cJSON_Duplicate(conf, 1));
    if (ns)
        cJSON_AddItemToObject(cfg, "n-shot", cJSON_Duplicate(ns, 1));
    double ctx = json_num(as, "ctx");
    if (isfinite(ctx))
        cJSON_AddNumberToObject(cfg, "ctx", ctx);
    char *cfg_s  = cJSON_PrintUnformatted(cfg);
    char *data_s = NULL;
    cJSON_Delete(cfg);
    const cJSON *dh = cJSON_GetObjectItemCaseSensitive(hs, "data_sha256");
    if (dh)
        data_s = cJSON_PrintUnformatted(dh);
    double      tokens = json_num(cost, "tokens_computed");
    history_run run    = {
           .command          = command,
           .model            = json_str(conf, "model_args"),
           .model_sha256     = json_str(hs, "model_sha256_config_and_safetensors_headers")
                                   ? json_str(hs, "model_sha256_config_and_safetensors_headers")
                                   : json_str(hs, "model_sha256_gguf_header"),
           .tokenizer_sha256 = json_str(hs, "tokenizer_sha256"),
           .data_sha256      = data_s,
           .config           = cfg_s,
           .device           = json_str(as, "device"),
           .wall_s           = json_num(cJSON_GetObjectItemCaseSensitive(cost, "wall_s"), "total"),
           .tokens           = isfinite(tokens) ? (int64_t)tokens : -1,
           .cost             = json_num(cost, "cost_per_run"),
           .metrics          = ms,
           .n_metrics        = k,
    };
    rc = history_append(path, &run, NULL, err);
    free(cfg_s);
    free(data_s);
done:
    for (size_t i = 0; i < k; i++)
        free(name[i]);
    free(name);
    free(ms);
    return rc;
}

static char *col_dup(sqlite3_stmt *st, int i) {
    const unsigned char *s = sqlite3_column_text(st, i);
    return strdup(s ? (const char *)s : "");
}

static double col_real(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static void row_free(history_row *r) {
    free(r->command), free(r->model), free(r->model_sha256), free(r->device);
    free(r->version), free(r->task), free(r->metric);
}

void history_rows_free(history_rows *rows) {
    if (!rows)
        return;
    for (size_t i = 0; i < rows->n; i++)
        row_free(&rows->r[i]);
    free(rows->r);
    rows->r = NULL;
    rows->n = 0;
}

int history_query(const char *path, const char *task, const char *model, history_rows *out,
                  assay_error *err) {
    sqlite3      *db  = NULL;
    sqlite3_stmt *st  = NULL;
    size_t        cap = 0;
    int           rc  = history_open(path, 0, &db, err), src;
    memset(out, 0, sizeof *out);
    if (rc)
        return rc;
    /* prefix match with substr, not LIKE: a path may hold % or _ */
    if ((src = sqlite3_prepare_v2(
             db,
             "SELECT r.id, r.time_utc, r.command, r.model, r.model_sha256, r.device, "
             "r.assay_version, m.task, m.metric, m.value, m.stderr, r.wall_s, r.tokens, r.cost "
             "FROM metrics m JOIN runs r ON r.id = m.run_id "
             "WHERE (?1 IS NULL OR m.task = ?1) AND (?2 IS NULL OR "
             "substr(r.model, 1, length(?2)) = ?2 OR substr(r.model_sha256, 1, length(?2)) = ?2) "
             "ORDER BY m.task, m.metric, r.id",
             -1, &st, NULL)) != SQLITE_OK)
        goto sql_fail;
    bind_text(st, 1, task);
    bind_text(st, 2, model);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap             = cap ? cap * 2 : 64;
            history_row *nr = realloc(out->r, cap * sizeof *nr);
            if (!nr) {
                rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory reading the history", path);
                goto fail;
            }
            out->r = nr;
        }
        history_row *r = &out->r[out->n];
        memset(r, 0, sizeof *r);
        r->run_id               = sqlite3_column_int64(st, 0);
        const unsigned char *tm = sqlite3_column_text(st, 1);
        snprintf(r->time_utc, sizeof r->time_utc, "%s", tm ? (const char *)tm : "");
        r->command      = col_dup(st, 2);
        r->model        = col_dup(st, 3);
        r->model_sha256 = col_dup(st, 4);
        r->device       = col_dup(st, 5);
        r->version      = col_dup(st, 6);
        r->task         = col_dup(st, 7);
        r->metric       = col_dup(st, 8);
        r->value        = col_real(st, 9);
        r->stderr       = col_real(st, 10);
        r->wall_s       = col_real(st, 11);
        r->tokens = sqlite3_column_type(st, 12) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 12);
        r->cost   = col_real(st, 13);
        out->n++;
        if (!r->command || !r->model || !r->model_sha256 || !r->device || !r->version || !r->task ||
            !r->metric) {
            rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory reading the history", path);
            goto fail;
        }
    }
    if (src != SQLITE_DONE)
        goto sql_fail;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ASSAY_OK;
sql_fail:
    rc = history_fail(db, src, path, "cannot read", err);
fail:
    sqlite3_finalize(st);
    sqlite3_close(db);
    history_rows_free(out);
    return rc;
}
