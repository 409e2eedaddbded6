/* harness/cmd_devices.c — `assay devices` and `assay version`: what this build contains and what
 * it can run on. Both take --help and --json like every command; anything else is a usage error. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/commands.h"
#include "runtime/device.h"

static const char devices_help[] =
    "usage: assay devices [--json]\n"
    "\n"
    "Lists the compute devices assay can use: the CPU always; an NVIDIA GPU (compute\n"
    "capability 8.0 or newer) when the build has the CUDA backend and a driver and GPU are\n"
    "present (otherwise the CUDA line says why not).\n"
    "\n"
    "  --json   one JSON object on stdout\n"
    "\n"
    "exit codes: 0 success, 2 usage\n";

static const char version_help[] = "usage: assay version [--json]\n"
                                   "\n"
                                   "Prints the version and what this build contains.\n"
                                   "\n"
                                   "  --json   one JSON object on stdout\n"
                                   "\n"
                                   "exit codes: 0 success, 2 usage\n";

/* Parses [--json] [--help]: returns 0 to run, 1 after printing help, 2 on a usage error. */
static int parse_json_only(int argc, char **argv, const char *help, int *json) {
    *json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--json")) {
            *json = 1;
            continue;
        }
        fprintf(stderr, "assay %s: %s '%s'\n%.*s", argv[0],
                argv[i][0] == '-' ? "unknown option" : "unexpected argument", argv[i],
                (int)strcspn(help, "\n") + 1, help);
        return 2;
    }
    return 0;
}

static int print_json(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) {
        fprintf(stderr, "assay: out of memory\n");
        return 3;
    }
    puts(s);
    free(s);
    return 0;
}

int cmd_devices(int argc, char **argv) {
    int json, rc = parse_json_only(argc, argv, devices_help, &json);
    if (rc)
        return rc == 1 ? 0 : rc;
    cuda_device_info info;
    device_cuda_probe(&info);
    if (!json) {
        printf("cpu: available\n");
        if (info.count > 0)
            printf("cuda: %d device(s); 0: %s, %.1f GiB, sm_%d%d\n", info.count, info.name,
                   (double)info.total_mem / (1024.0 * 1024.0 * 1024.0), info.cc_major,
                   info.cc_minor);
        else
            printf("cuda: %s\n", info.why_none);
        return 0;
    }
    cJSON *o = cJSON_CreateObject(), *cpu = cJSON_AddObjectToObject(o, "cpu");
    cJSON_AddBoolToObject(cpu, "available", 1);

    cJSON *cu = cJSON_AddObjectToObject(o, "cuda");
    cJSON_AddBoolToObject(cu, "compiled", device_cuda_compiled());
    cJSON_AddNumberToObject(cu, "count", info.count);
    if (info.count > 0) {
        cJSON_AddStringToObject(cu, "name", info.name);
        cJSON_AddNumberToObject(cu, "total_mem_bytes", (double)info.total_mem);
        char sm[16];
        snprintf(sm, sizeof sm, "sm_%d%d", info.cc_major, info.cc_minor);
        cJSON_AddStringToObject(cu, "arch", sm);
    } else {
        cJSON_AddStringToObject(cu, "why_none", info.why_none);
    }
    return print_json(o);
}

int cmd_version(int argc, char **argv) {
    int json, rc = parse_json_only(argc, argv, version_help, &json);
    if (rc)
        return rc == 1 ? 0 : rc;
    const char *what = device_cuda_compiled()
                           ? "backends: cpu, cuda (bf16; sm_80, sm_90; cuBLASLt loaded at run time)"
                           : "backends: cpu; built without CUDA";
    if (!json) {
        printf("assay %s (%s)\n", ASSAY_VERSION, what);
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", ASSAY_VERSION);
    cJSON *b = cJSON_AddArrayToObject(o, "backends");
    cJSON_AddItemToArray(b, cJSON_CreateString("cpu"));
    if (device_cuda_compiled())
        cJSON_AddItemToArray(b, cJSON_CreateString("cuda"));
    cJSON_AddStringToObject(o, "build", what);
    return print_json(o);
}
