/* harness/history.h — the run history: one SQLite file that eval, ppl, judge and bench append a
 * record to (what ran, on what, with which results and at what cost), and that `assay history`
 * and trend reports read back.
 *
 * Schema (user_version 1, application_id HISTORY_APP_ID):
 *   runs(id, time_utc, command, model, model_sha256, tokenizer_sha256, data_sha256 (JSON
 *        object path -> hex), config (JSON), assay_version, assay_commit, device, wall_s,
 *        tokens, cost)
 *   metrics(run_id -> runs.id, task, metric, value, stderr)  -- stderr NULL: none
 * Each record is written in one IMMEDIATE transaction (a reader never sees half a run; two
 * writers wait for each other up to 10 s). */
#ifndef ASSAY_HISTORY_H
#define ASSAY_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define HISTORY_APP_ID 0x41535931 /* "ASY1" in PRAGMA application_id */

typedef struct history_metric {
    const char *task;   /* "hellaswag" */
    const char *metric; /* "acc", "acc_norm", "ppl", "decode_b4_norm" */
    double      value;
    double      stderr; /* NAN: none */
} history_metric;

typedef struct history_run {
    const char           *command;          /* "eval", "ppl", "judge", "bench" */
    const char           *model;            /* as given on the command line */
    const char           *model_sha256;     /* hashes_model; NULL: unknown */
    const char           *tokenizer_sha256; /* hashes_tokenizer; NULL: unknown */
    const char           *data_sha256;      /* JSON object text {"path": "hex", ...}; NULL: none */
    const char           *config;           /* JSON object text of the options that shape results */
    const char           *device;           /* "cpu", "cuda:0" */
    double                wall_s;
    int64_t               tokens; /* tokens computed; < 0: unknown */
    double                cost;   /* in the user's price unit; NAN: unknown */
    const history_metric *metrics;
    size_t                n_metrics;
} history_run;

/* Appends one run (creating the file and schema when absent). *run_id (may be NULL) gets the
 * new record's id. A file that is not an SQLite database, or an SQLite database that is not an
 * assay history, is ASSAY_EFORMAT naming the path. */
int history_append(const char *path, const history_run *run, int64_t *run_id, assay_error *err);

/* Opens (creating when absent) and checks `path` the way history_append will, so a command can
 * refuse a bad history file before it spends its run. */
int history_check(const char *path, assay_error *err);

/* Appends the record of an assay results.json tree (eval, judge): per task every "M,filter"
 * number of "results" with its "M_stderr,filter" (a non-number stderr such as "N/A" is none),
 * the hashes, config, version and device of the "assay" block, tokens_computed and cost_per_run
 * of "assay"."cost". `results` is a cJSON object; command names the producer. */
struct cJSON;
int history_record_run(const char *path, const char *command, const struct cJSON *results,
                       assay_error *err);

/* One (run, task, metric) row as read back, runs in append order. */
typedef struct history_row {
    int64_t run_id;
    char    time_utc[32];
    char   *command, *model, *model_sha256, *device, *version, *task, *metric;
    double  value, stderr; /* stderr NAN: none */
    double  wall_s, cost;  /* cost NAN: unknown */
    int64_t tokens;        /* -1: unknown */
} history_row;

typedef struct history_rows {
    history_row *r;
    size_t       n;
} history_rows;

/* Reads the rows whose task equals `task` and whose model path or model_sha256 equals or
 * starts with `model` (NULL: any), ordered by task, metric, then run id. The file is opened
 * read-only; a missing file is ASSAY_EIO. */
int  history_query(const char *path, const char *task, const char *model, history_rows *out,
                   assay_error *err);
void history_rows_free(history_rows *rows); /* NULL-safe */

#endif
