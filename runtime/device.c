#include "runtime/device.h"

#include <stdio.h>
#include <string.h>

#ifdef ASSAY_CUDA
/* runtime/cuda/device.cu */
void device_cuda_probe_impl(cuda_device_info *info);
#endif

void device_cuda_probe(cuda_device_info *info) {
    memset(info, 0, sizeof *info);
#ifdef ASSAY_CUDA
    device_cuda_probe_impl(info);
#else
    snprintf(info->why_none, sizeof info->why_none, "no CUDA device (built without CUDA)");
#endif
}

int device_cuda_compiled(void) {
#ifdef ASSAY_CUDA
    return 1;
#else
    return 0;
#endif
}
