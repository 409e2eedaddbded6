// tests/gpu/emu/cuda_runtime.h — just enough of the CUDA runtime to run a kernel's source on the
// CPU (tests/gpu/attn_emu.cc): every thread of a block is a std::thread, __syncthreads a block
// barrier, warp shuffles an exchange through memory between two warp barriers, shared memory a
// malloc'd buffer of exactly the launch's size (so ASan sees overruns). Uniform control flow is
// assumed, as CUDA requires for barriers and full-mask shuffles: a divergent one deadlocks here.
#pragma once
#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

typedef int   cudaError_t;
typedef void *cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
    float x, y, z, w;
};
struct uint4 {
    unsigned x, y, z, w;
};
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
struct uint3_ {
    unsigned x, y, z;
};

struct emu_block {
    std::barrier<>               *block_bar;
    std::vector<std::barrier<> *> warp_bar;
    std::vector<float>            shfl; // one float per thread
    void                         *smem;
};
inline thread_local uint3_     threadIdx, blockIdx;
inline thread_local dim3       blockDim, gridDim;
inline thread_local emu_block *emu_cur;
inline size_t                  emu_smem_limit = 227 * 1024;
inline int                     emu_launches   = 0;

inline float *emu_smem() { return (float *)emu_cur->smem; }
inline void   __syncthreads() { emu_cur->block_bar->arrive_and_wait(); }
inline float  emu_shfl(float v, int src_lane) {
     unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
     emu_cur->shfl[threadIdx.x] = v;
     emu_cur->warp_bar[threadIdx.x / 32]->arrive_and_wait();
     float r = emu_cur->shfl[base + (unsigned)src_lane];
     emu_cur->warp_bar[threadIdx.x / 32]->arrive_and_wait();
     return r;
}
inline float __shfl_xor_sync(unsigned, float v, int o) {
    return emu_shfl(v, (int)(threadIdx.x % 32) ^ o);
}
inline float __shfl_sync(unsigned, float v, int j) { return emu_shfl(v, j); }
inline int   min(int a, int b) { return a < b ? a : b; }
inline int   max(int a, int b) { return a > b ? a : b; }

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int bytes) {
    return (size_t)bytes <= emu_smem_limit ? cudaSuccess : cudaErrorInvalidValue;
}

// kernel<<<grid, threads, smem, s>>>(args...) becomes emu_launch(kernel, grid, threads, smem,
// args...) (the build rewrites the source). Blocks run one after another.
template <typename K, typename... A>
void emu_launch(K kernel, dim3 grid, unsigned threads, size_t smem, A... args) {
    emu_launches++;
    if (smem > 48 * 1024 && smem > emu_smem_limit)
        abort();
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                std::barrier<> bar((std::ptrdiff_t)threads);
                emu_block      blk;
                blk.block_bar = &bar;
                for (unsigned w = 0; w < threads / 32; w++)
                    blk.warp_bar.push_back(new std::barrier<>(32));
                blk.shfl.assign(threads, 0.0f);
                blk.smem = malloc(smem ? smem : 1);
                memset(blk.smem, 0xA5, smem); // garbage, like real shared memory
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; t++)
                    ts.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        blockIdx  = {bx, by, bz};
                        blockDim  = dim3(threads);
                        gridDim   = grid;
                        emu_cur   = &blk;
                        kernel(args...);
                    });
                for (auto &th : ts)
                    th.join();
                free(blk.smem);
                for (auto *b : blk.warp_bar)
                    delete b;
            }
}
