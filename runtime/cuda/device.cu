// runtime/cuda/device.cu — CUDA device probe. With no driver, cudaGetDeviceCount returns an
// error and may leave its argument untouched, so the count starts at 0.
#include <cuda_runtime.h>
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
        snprintf(info->why_none, sizeof info->why_none, "no CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
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
