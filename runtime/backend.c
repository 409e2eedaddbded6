/* runtime/backend.c — the backend registry: a device spec ("cpu", "cuda", "cuda:N", "auto") to a
 * backend, and the helpers every backend shares. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/device.h"

size_t backend_dtype_bytes(dtype t) {
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_F16:
    case DTYPE_BF16: return 2;
    default: return 0;
    }
}

/* "cuda" -> 0, "cuda:N" -> N (decimal digits only, no sign or spaces); -1 when malformed. */
static int spec_cuda_ordinal(const char *spec) {
    if (!strcmp(spec, "cuda"))
        return 0;
    if (strncmp(spec, "cuda:", 5) != 0)
        return -1;
    const char *d = spec + 5;
    if (!*d || strlen(d) > 6)
        return -1;
    for (const char *p = d; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    return (int)strtol(d, NULL, 10);
}

backend *backend_create(const char *spec, const backend_opts *opts, assay_error *err) {
    backend_opts o = {0};
    if (opts)
        o = *opts;
    if (!spec || !*spec)
        spec = "auto";
    if (!strcmp(spec, "cpu"))
        return backend_cpu_create(&o, err);
    if (!strcmp(spec, "auto")) {
        /* the GPU when one works; a GPU that is present but fails to start is not an error
         * here (auto promises a working device, and the CPU always is one) */
        cuda_device_info info;
        device_cuda_probe(&info);
        if (device_cuda_compiled() && info.count > 0) {
            backend *be = backend_cuda_create(0, &o, NULL);
            if (be)
                return be;
        }
        return backend_cpu_create(&o, err);
    }
    if (!strncmp(spec, "cuda", 4)) {
        int ordinal = spec_cuda_ordinal(spec);
        if (ordinal < 0) {
            assay_fail(err, ASSAY_EINVAL,
                       "device '%s': expected cuda or cuda:N with N a device number (0, 1, ...)",
                       spec);
            return NULL;
        }
        return backend_cuda_create(ordinal, &o, err);
    }
    assay_fail(err, ASSAY_EINVAL, "device '%s': expected cpu, cuda, cuda:N or auto", spec);
    return NULL;
}

void backend_free(backend *be) {
    if (be && be->ops && be->ops->destroy)
        be->ops->destroy(be);
}

/* The CUDA backend lives in runtime/cuda/backend_cuda.cu, compiled when the build has CUDA. */
#ifndef ASSAY_CUDA
backend *backend_cuda_create(int ordinal, const backend_opts *opts, assay_error *err) {
    (void)opts;
    assay_fail(err, ASSAY_EDEVICE, "cuda:%d: built without CUDA", ordinal);
    return NULL;
}
#endif
