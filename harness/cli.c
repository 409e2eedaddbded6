#include <stdio.h>

#include "core/error.h"
#include "harness/commands.h"

int cli_report(const assay_error *err) {
    fprintf(stderr, "assay: %s\n", err->msg[0] ? err->msg : assay_status_name(err->code));
    return assay_exit_code(err->code);
}
