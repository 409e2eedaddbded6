/* tests/gpu/hostsim/simt.h — runs the real kernels of kernels/cuda/ on the CPU, slowly: one
 * std::thread per CUDA thread, one block at a time, __syncthreads as a block barrier, warp
 * shuffles through a per-warp exchange and barrier, __shared__ as function statics (shared by
 * the block's threads because blocks run one after another), IEEE _rn intrinsics as plain
 * operators. Force-included (-include) into the kernel sources after tests/gpu/hostsim/simt.sh
 * rewrote their launches `k<<<g, b, smem, s>>>(args)` into simt_launch calls. Exited threads
 * leave the barriers (arrive_and_drop), as exited threads do on the GPU. What it cannot show:
 * races and memory-model effects (the barriers order everything), and device-libm ulps. */
#pragma once
#include <barrier>
#include <math.h>
#include <memory>
#include <stdint.h>
#include <string.h>
#include <thread>
#include <vector>

extern "C" {
#include "core/dtype.h"
}
#include "cuda_bf16.h"
#include "cuda_runtime.h"

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1) : x(a), y(1), z(1) {}
};
inline thread_local dim3                            threadIdx, blockIdx;
inline dim3                                         blockDim, gridDim;
inline std::barrier<>                              *simt_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> simt_warp_barrier;
inline unsigned char                                simt_slot[32][32][8];
inline std::vector<unsigned char>                   simt_dyn_smem_buf;
inline void                                        *simt_dyn_smem;
inline cudaError_t                                  simt_launch_error = cudaSuccess;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { simt_block_barrier->arrive_and_wait(); }

template <class T> static T simt_exchange(T v, int src_lane) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    memcpy(simt_slot[w][lane], &v, sizeof(T));
    simt_warp_barrier[w]->arrive_and_wait();
    T r = v;
    if (src_lane >= 0 && src_lane < 32)
        memcpy(&r, simt_slot[w][src_lane], sizeof(T));
    simt_warp_barrier[w]->arrive_and_wait();
    return r;
}
template <class T> T __shfl_down_sync(unsigned, T v, int o) {
    return simt_exchange(v, (int)(threadIdx.x & 31) + o);
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    return simt_exchange(v, (int)(threadIdx.x & 31) ^ o);
}

inline float         __fmul_rn(float a, float b) { return a * b; }
inline float         __fadd_rn(float a, float b) { return a + b; }
inline float         __fsub_rn(float a, float b) { return a - b; }
inline float         __fdiv_rn(float a, float b) { return a / b; }
inline float         __fsqrt_rn(float a) { return sqrtf(a); }
inline double        __dmul_rn(double a, double b) { return a * b; }
inline double        __dadd_rn(double a, double b) { return a + b; }
inline double        __dsub_rn(double a, double b) { return a - b; }
inline double        __ddiv_rn(double a, double b) { return a / b; }
inline float         __double2float_rn(double a) { return (float)a; }
inline float         __bfloat162float(__nv_bfloat16 b) { return bf16_to_f32(b.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    __nv_bfloat16 b;
    b.x = f32_to_bf16(f);
    return b;
}
inline cudaError_t cudaGetLastError() {
    cudaError_t e     = simt_launch_error;
    simt_launch_error = cudaSuccess;
    return e;
}

/* The launch: CUDA's limits on the block size (<= 1024), plus whole warps (what the shuffle
 * emulation needs; every kernel here launches whole warps). Dynamic shared memory is filled
 * with 0xAB so a kernel that reads it before writing sees garbage. */
template <class F> void simt_launch(unsigned grid, unsigned block, size_t smem, F f) {
    if (grid == 0 || block == 0 || block > 1024 || block % 32) {
        simt_launch_error = cudaErrorInvalidValue;
        return;
    }
    for (unsigned b = 0; b < grid; b++) {
        blockDim = dim3(block);
        gridDim  = dim3(grid);
        simt_dyn_smem_buf.assign(smem + 16, 0xAB);
        simt_dyn_smem = simt_dyn_smem_buf.data();
        std::barrier<> bar(block);
        simt_block_barrier = &bar;
        simt_warp_barrier.clear();
        for (unsigned w = 0; w < block / 32; w++)
            simt_warp_barrier.emplace_back(new std::barrier<>(32));
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; t++)
            threads.emplace_back([=, &bar] {
                threadIdx = dim3(t);
                blockIdx  = dim3(b);
                f();
                simt_warp_barrier[t >> 5]->arrive_and_drop();
                bar.arrive_and_drop();
            });
        for (std::thread &th : threads)
            th.join();
    }
}
