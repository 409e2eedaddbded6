#include <stdio.h>

#include "core/error.h"
#include "harness/commands.h"
#include "harness/dist.h"

int cli_report(const assay_error *err) {
    /* a failure all ranks agreed on is printed once, by rank 0 */
    if (!dist_error_printed_elsewhere(err))
        fprintf(stderr, "assay: %s\n", err->msg[0] ? err->msg : assay_status_name(err->code));
    return assay_exit_code(err->code);
}
