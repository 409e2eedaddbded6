/* core/error.h — status codes and error messages. Library code never exits: it returns a
 * status and fills an assay_error; the CLI turns statuses into exit codes. */
#ifndef ASSAY_ERROR_H
#define ASSAY_ERROR_H

#include <stddef.h>

typedef enum assay_status {
    ASSAY_OK = 0,
    ASSAY_EINVAL,       /* bad argument or usage */
    ASSAY_EFORMAT,      /* malformed input file */
    ASSAY_EUNSUPPORTED, /* well-formed but not supported (dtype, architecture, ...) */
    ASSAY_EIO,          /* open/read/write failed */
    ASSAY_ENOMEM,       /* allocation failed or over the memory budget */
    ASSAY_EDEVICE,      /* accelerator missing or failed */
    ASSAY_EINTERNAL,    /* a bug: an invariant did not hold */
    ASSAY_ECHECK        /* the run worked but a check failed (non-finite scores, a gate) */
} assay_status;

typedef struct assay_error {
    int  code;
    char msg[1024];
} assay_error;

/* Sets err (may be NULL) to code and a printf-style message; returns code. */
int assay_fail(assay_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err (may be NULL). */
void assay_error_clear(assay_error *err);

/* Short name of a status, e.g. "format error". */
const char *assay_status_name(int code);

/* Exit code the CLI uses for a status: 0 success, 1 a failed check (ASSAY_ECHECK), 2 bad input /
 * usage / unsupported / unreadable file / over the memory budget, 3 for device failures and
 * internal errors. */
int assay_exit_code(int code);

#endif
