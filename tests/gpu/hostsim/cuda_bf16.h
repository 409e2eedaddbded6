/* tests/gpu/hostsim/cuda_bf16.h — the bf16 type for the host emulation (see cuda_runtime.h). */
#pragma once
#include <stdint.h>
typedef struct {
    uint16_t x;
} __nv_bfloat16;
