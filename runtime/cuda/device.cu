// runtime/cuda/device.cu — CUDA device probe. With no driver, cudaGetDeviceCount returns an
// error and may leave its argument untouched, so the count starts at 0.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "runtime/device.h"
void device_cuda_probe_impl(cuda_device_info *info);
}

void device_cuda_probe_impl(cuda_device_info *info) {
    int         count = 0;
    cudaError_t e     = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        // The runtime says "driver version is insufficient" both when the driver is too old and
        // when there is no driver at all; the driver library tells the two apart.
        void *drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (drv)
            dlclose(drv);
        if (!drv)
            snprintf(info->why_none, sizeof info->why_none,
                     "no NVIDIA driver/GPU found (libcuda.so.1 is not installed)");
        else if (e == cudaErrorNoDevice || (e == cudaSuccess && count <= 0))
            snprintf(info->why_none, sizeof info->why_none,
                     "no NVIDIA GPU found (the driver is installed)");
        else
            snprintf(info->why_none, sizeof info->why_none, "no usable CUDA device (%s)",
                     cudaGetErrorString(e));
        info->count = 0;
        cudaGetLastError(); // clear the sticky error state
        return;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        snprintf(info->why_none, sizeof info->why_none, "no CUDA device (properties unavailable)");
        info->count = 0;
        return;
    }
    info->count = count;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->total_mem = p.totalGlobalMem;
    info->cc_major  = p.major;
    info->cc_minor  = p.minor;
}
