/* fuzz/fuzz_config.c — config_parse on arbitrary bytes; when it accepts, the derived tensor
 * list, parameter count and config.json output must be usable and parse back to the same
 * config. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loader/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_config cfg;
    assay_error  err;
    if (config_parse(&cfg, (const char *)data, size, "fuzz", &err))
        return 0;
    model_tensor_spec *specs = NULL;
    int                n     = 0;
    if (config_tensor_specs(&cfg, &specs, &n, &err) == 0)
        free(specs);
    if (config_param_count(&cfg) <= 0)
        abort();
    char *text = config_to_json(&cfg);
    if (!text)
        abort();
    model_config back;
    if (config_parse(&back, text, strlen(text), "fuzz round trip", &err) ||
        memcmp(&cfg, &back, sizeof cfg) != 0)
        abort(); /* what we write must read back as the same config */
    free(text);
    return 0;
}
