/* harness/jsonl.h — JSON Lines input: one JSON object per line, lines of any length, blank lines
 * skipped, CRLF tolerated; every error names "file:line" and what was expected. */
#ifndef ASSAY_JSONL_H
#define ASSAY_JSONL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

#include "runtime/error.h"

typedef struct jsonl_reader {
    FILE  *fp;
    char   path[1024];
    size_t line; /* 1-based number of the line last returned */
    char  *buf;
    size_t cap;
} jsonl_reader;

int  jsonl_open(jsonl_reader *r, const char *path, assay_error *err);
void jsonl_close(jsonl_reader *r); /* NULL-safe, idempotent */

/* Reads the next non-blank line as a JSON object into *out (caller cJSON_Deletes).
 * Returns 1 with an object, 0 at end of file, or an assay status (> 1) with err set to
 * "path:line: ..." when the line is not a JSON object. */
int jsonl_next(jsonl_reader *r, cJSON **out, assay_error *err);

/* Field helpers for the object of the current line. They fail with "path:line: expected ..."
 * naming the field. *out points into obj (valid while obj lives). `required` 0: a missing field
 * gives ASSAY_OK with *out = NULL (or *present = 0). */
int jsonl_get_string(const jsonl_reader *r, const cJSON *obj, const char *field, int required,
                     const char **out, size_t *len, assay_error *err);
int jsonl_get_int(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t min,
                  int64_t max, int *present, int64_t *out, assay_error *err);
/* A string or an array of strings ("stop": "x" or ["x", "y"]); *out is a malloc'd array of
 * pointers into obj (caller frees the array only). */
int jsonl_get_strings(const jsonl_reader *r, const cJSON *obj, const char *field, const char ***out,
                      size_t *n, assay_error *err);
/* An array of integer token ids in [0, vocab) (vocab <= 0: no upper bound); malloc'd copy. */
int jsonl_get_ids(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t vocab,
                  int32_t **out, size_t *n, assay_error *err);

#endif
