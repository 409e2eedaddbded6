/* harness/csv.h — RFC 4180 CSV files (the MMLU layout): fields separated by commas, quoted
 * fields may hold commas, newlines and doubled quotes. Errors name file:line. */
#ifndef ASSAY_CSV_H
#define ASSAY_CSV_H

#include <stddef.h>

#include "core/error.h"

#define CSV_FILE_MAX ((size_t)256 << 20) /* bytes read from one file */

typedef struct csv_row {
    char  **f;   /* fields, NUL-terminated, pointing into the table's buffer */
    size_t *len; /* field lengths (a field may not hold NUL: refused on input) */
    size_t  n;
    size_t  line; /* 1-based line where the row starts */
} csv_row;

typedef struct csv_table {
    char    *buf;
    csv_row *rows;
    size_t   n, cap;
} csv_table;

/* Reads the whole file. Every row must have the same number of fields as the first (the
 * header); blank lines are skipped. */
int  csv_read(const char *path, csv_table *t, assay_error *err);
void csv_free(csv_table *t); /* NULL-safe */

#endif
