/* runtime/device.h — which accelerators this process can use. The binary always runs without a
 * GPU or driver: the probe then reports why, and the CPU backend is used. */
#ifndef ASSAY_DEVICE_H
#define ASSAY_DEVICE_H

#include <stddef.h>

typedef struct cuda_device_info {
    int    count;     /* 0 when none is usable */
    char   name[256]; /* of device 0 */
    size_t total_mem; /* bytes, device 0 */
    int    cc_major, cc_minor;
    char   why_none[256]; /* when count == 0: "no CUDA device (...)" or "built without CUDA" */
} cuda_device_info;

/* Never fails: fills info. */
void device_cuda_probe(cuda_device_info *info);
/* 1 when the binary was built with the CUDA backend. */
int device_cuda_compiled(void);

#endif
