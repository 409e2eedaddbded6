/* harness/jsonl.h — JSON Lines input: one JSON object per line, blank lines skipped, CRLF
 * tolerated; every error names "file:line" and what was expected. Lines are capped (JSONL_LINE_MAX
 * bytes, JSONL_VALUES_MAX values, JSONL_DEPTH_MAX nesting) so memory stays proportional to a
 * bounded line. Strings keep their length: an escaped NUL (\u0000) survives to the caller.
 *
 * How NUL survives cJSON (which ends strings at NUL): a line must be valid UTF-8, so the byte 0xFF
 * never occurs in it; each \u0000 escape inside a string is rewritten to 0xFF before parsing. In
 * the trees this module hands out, 0xFF inside a string means NUL: the field helpers turn it back
 * into NUL, and jsonl_print writes it back as \u0000. */
#ifndef ASSAY_JSONL_H
#define ASSAY_JSONL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

#include "core/error.h"

#define JSONL_LINE_MAX ((size_t)64 << 20)  /* 64 MiB */
#define JSONL_VALUES_MAX ((size_t)1 << 20) /* JSON values (array elements, members) per line */
#define JSONL_DEPTH_MAX 64                 /* nested arrays / objects per line */
#define JSONL_WARN_MAX 64                  /* distinct unknown field names warned about */

typedef struct jsonl_reader {
    FILE  *fp;
    char   path[1024];
    size_t line; /* 1-based number of the line last returned */
    char  *buf;
    size_t cap;
    /* an example line for messages, e.g. {"prompt": "..."}; may be NULL, not owned */
    const char *shape;
    size_t      line_max;   /* bytes; jsonl_open sets JSONL_LINE_MAX (smaller in the fuzzer) */
    size_t      values_max; /* jsonl_open sets JSONL_VALUES_MAX */
    char       *warned[JSONL_WARN_MAX]; /* unknown field names already warned about */
    size_t      n_warned;
} jsonl_reader;

/* Opens a regular file (FIFOs, devices and directories are refused at once). Set r->shape after
 * it to have "not a JSON object" messages quote the expected form of a line. */
int  jsonl_open(jsonl_reader *r, const char *path, assay_error *err);
void jsonl_close(jsonl_reader *r); /* NULL-safe, idempotent */

/* Reads the next non-blank line as a JSON object into *out (caller cJSON_Deletes).
 * Returns 1 with an object, 0 at end of file, or an assay status (> 1) with err set to
 * "path:line: ..." when the line is not a JSON object, is not UTF-8 or is over the caps. */
int jsonl_next(jsonl_reader *r, cJSON **out, assay_error *err);

/* Unknown fields of obj (names not in `known`, NULL-terminated): with strict, an error naming
 * the field and the known ones; else one warning per field name on stderr (the first
 * JSONL_WARN_MAX names), and ASSAY_OK. */
int jsonl_check_fields(jsonl_reader *r, const cJSON *obj, const char *const *known, int strict,
                       assay_error *err);

/* Field helpers for the object of the current line. They fail with "path:line: expected ..."
 * naming the field. *out points into obj (valid while obj lives; NULs restored in place, so the
 * string may hold NUL bytes: use *len). `required` 0: a missing field gives ASSAY_OK with
 * *out = NULL (or *present = 0). */
int jsonl_get_string(const jsonl_reader *r, const cJSON *obj, const char *field, int required,
                     const char **out, size_t *len, assay_error *err);
int jsonl_get_int(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t min,
                  int64_t max, int *present, int64_t *out, assay_error *err);
/* A string or an array of strings ("stop": "x" or ["x", "y"]); *out and *lens are malloc'd
 * arrays (caller frees both; *out points into obj). */
int jsonl_get_strings(const jsonl_reader *r, const cJSON *obj, const char *field, const char ***out,
                      size_t **lens, size_t *n, assay_error *err);
/* An array of integer token ids in [0, vocab) (vocab <= 0: no upper bound); malloc'd copy. */
int jsonl_get_ids(const jsonl_reader *r, const cJSON *obj, const char *field, int64_t vocab,
                  int32_t **out, size_t *n, assay_error *err);

/* A cJSON string node for s[0..len) (which may hold NUL bytes); NULL when out of memory. */
cJSON *jsonl_string_create(const char *s, size_t len);
/* cJSON_Print(Unformatted) with NULs written as \u0000; malloc'd, NULL when out of memory. */
char *jsonl_print(const cJSON *item, int formatted);
/* One result line: prints o (consumed, may be NULL: out of memory) as jsonl_print text, writes
 * it with a newline to out_fp when not NULL (errors name out_path and strerror), and hands the
 * text to the caller in *line (malloc'd) for --json output. */
int jsonl_emit(cJSON *o, FILE *out_fp, const char *out_path, char **line, assay_error *err);

#endif
