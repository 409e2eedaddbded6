/* Placeholder until the generate command lands. */
#include <stdio.h>

#include "harness/commands.h"

int cmd_generate(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "assay: '%s' is not available in this build yet\n", argv[0]);
    return 2;
}
