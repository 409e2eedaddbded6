#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>

int assay_fail(assay_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void assay_error_clear(assay_error *err) {
    if (err) {
        err->code   = ASSAY_OK;
        err->msg[0] = '\0';
    }
}

const char *assay_status_name(int code) {
    switch (code) {
    case ASSAY_OK: return "ok";
    case ASSAY_EINVAL: return "invalid argument";
    case ASSAY_EFORMAT: return "format error";
    case ASSAY_EUNSUPPORTED: return "unsupported";
    case ASSAY_EIO: return "I/O error";
    case ASSAY_ENOMEM: return "out of memory";
    case ASSAY_EDEVICE: return "device error";
    case ASSAY_ECHECK: return "check failed";
    default: return "internal error";
    }
}

int assay_exit_code(int code) {
    switch (code) {
    case ASSAY_OK: return 0;
    case ASSAY_ECHECK: return 1;
    case ASSAY_EINVAL:
    case ASSAY_EFORMAT:
    case ASSAY_EUNSUPPORTED:
    case ASSAY_EIO:    /* a file we were told to read is missing or unreadable: bad input */
    case ASSAY_ENOMEM: /* the model does not fit the memory budget: checked before loading */
        return 2;
    default: return 3;
    }
}
