// tests/gpu/emu/cuda_runtime.h — the CUDA runtime on the CPU, for two uses: running one kernel's
// source (tests/gpu/attn_emu.cc) and the whole CUDA build (make cuda-emu: build/emu/assay, the
// real backend_cuda.cu and kernels/cuda/*.cu compiled as C++ for the host after
// tests/gpu/emu/rewrite.py turned `k<<<g, b, smem, s>>>(args)` into emu_launch calls).
//
// Kernels: the threads of a block are fibers (ucontext) run one after another on the calling
// thread; __syncthreads is a block barrier, warp shuffles an exchange between two warp barriers
// (exited threads leave both, as on the GPU); blocks run one after another, so `__shared__` is a
// function static and dynamic shared memory a malloc'd buffer of exactly the launch's size
// (ASan sees overruns), filled with garbage. Uniform control flow is assumed where CUDA requires
// it: a barrier some threads never reach aborts with a message (a deadlock on the GPU).
//
// Memory: device memory is host memory. Every cudaMalloc is recorded with its size, poisoned
// (0xFF bytes: NaN as f32 and bf16) and surrounded by guard bytes checked at cudaFree and at
// exit; cudaMemcpy*/cudaMemset* check that their device side lies inside one allocation (and
// their host side outside every one), so a wrong buffer, size or direction fails loudly. Async
// copies run at once; streams and events are recordings. cudaMemGetInfo reports ASSAY_EMU_MEM
// bytes (default 8 GiB) less what is allocated; cudaGetDeviceProperties an sm_90 device.
//
// Graphs (emu_graph.h): between cudaStreamBeginCapture and cudaStreamEndCapture the launches,
// async copies and memsets issued on the capturing stream (and the emulated cuBLASLt's matmuls,
// through emu_capture_add) are recorded, not run; cudaGraphLaunch runs the recording in order.
// What real CUDA refuses while a stream captures (capture mode global or thread-local) fails
// here too and invalidates the capture: synchronous copies and memsets, cudaMalloc / cudaFree /
// cudaMallocHost / cudaFreeHost, stream / device / event synchronisation, cudaMemGetInfo, work
// on another stream, and async copies from or to pageable host memory.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <type_traits>
#include <ucontext.h>
#include <vector>

#include "cuda_bf16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
#define __restrict__

typedef int   cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum {
    cudaSuccess                       = 0,
    cudaErrorInvalidValue             = 1,
    cudaErrorMemoryAllocation         = 2,
    cudaErrorLaunchFailure            = 4,
    cudaErrorNoDevice                 = 100,
    cudaErrorInvalidConfiguration     = 9,
    cudaErrorIllegalState             = 401,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit    = 906,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemcpyKind {
    cudaMemcpyHostToHost     = 0,
    cudaMemcpyHostToDevice   = 1,
    cudaMemcpyDeviceToHost   = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault        = 4
};
#define cudaStreamNonBlocking 1
#define cudaEventDisableTiming 2
struct cudaDeviceProp {
    char   name[256];
    int    major, minor;
    size_t totalGlobalMem;
    size_t sharedMemPerBlockOptin;
    int    multiProcessorCount;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3_ {
    unsigned x, y, z;
};
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
struct uint2 {
    unsigned x, y;
};
struct uint4 {
    unsigned x, y, z, w;
};
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}

// ---- IEEE intrinsics: plain operators (the host is IEEE; no FMA contraction: -ffp-contract=off)
inline float  __fmul_rn(float a, float b) { return a * b; }
inline float  __fadd_rn(float a, float b) { return a + b; }
inline float  __fsub_rn(float a, float b) { return a - b; }
inline float  __fdiv_rn(float a, float b) { return a / b; }
inline float  __fsqrt_rn(float a) { return sqrtf(a); }
inline float  __frcp_rn(float a) { return 1.0f / a; }
inline float  __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float  __double2float_rn(double a) { return (float)a; }
inline int    min(int a, int b) { return a < b ? a : b; }
inline int    max(int a, int b) { return a > b ? a : b; }

// ---- the SIMT machine ---------------------------------------------------------------------------
struct emu_fiber {
    ucontext_t ctx;
    char      *stack;
    int        state; // 0 runnable, 1 at the block barrier, 2 at its warp barrier, 3 exited
    unsigned   gen;   // the barrier generation it waits for
};
struct emu_block {
    std::vector<emu_fiber> f;
    unsigned               threads, block_gen;
    std::vector<unsigned>  warp_gen;
    std::vector<uint64_t>  shfl; // one slot per thread
    void                  *smem;
    int                    cur;
    ucontext_t             sched;
};
inline uint3_      threadIdx, blockIdx;
inline dim3        blockDim, gridDim;
inline emu_block  *emu_cur;
inline size_t      emu_smem_limit  = 227 * 1024;
inline int         emu_launches    = 0;
inline cudaError_t emu_last_error  = cudaSuccess;
inline const char *emu_kernel_name = "";
#define EMU_STACK ((size_t)256 << 10)
// One stack per thread slot, kept for the next launch and freed at exit.
struct emu_stack_pool {
    std::vector<char *> v;
    ~emu_stack_pool() {
        for (char *p : v)
            free(p);
    }
};
inline emu_stack_pool emu_stacks;

inline float            *emu_smem() { return (float *)emu_cur->smem; }
[[noreturn]] inline void emu_die(const char *what) {
    fprintf(stderr, "cuda-emu: %s (kernel %s, block %u,%u,%u)\n", what, emu_kernel_name, blockIdx.x,
            blockIdx.y, blockIdx.z);
    abort();
}
inline void emu_yield() { swapcontext(&emu_cur->f[emu_cur->cur].ctx, &emu_cur->sched); }
inline void __syncthreads() {
    emu_fiber &me = emu_cur->f[emu_cur->cur];
    me.state      = 1;
    me.gen        = emu_cur->block_gen;
    emu_yield();
}
inline void emu_warp_barrier() {
    emu_fiber &me = emu_cur->f[emu_cur->cur];
    me.state      = 2;
    me.gen        = emu_cur->warp_gen[threadIdx.x / 32];
    emu_yield();
}
template <class T> T emu_shfl(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
    memcpy(&emu_cur->shfl[threadIdx.x], &v, sizeof(T));
    emu_warp_barrier();
    T r = v; // out-of-range lanes read their own value, as __shfl_down_sync / __shfl_xor_sync
    if (src_lane >= 0 && src_lane < 32 && base + (unsigned)src_lane < emu_cur->threads)
        memcpy(&r, &emu_cur->shfl[base + (unsigned)src_lane], sizeof(T));
    emu_warp_barrier();
    return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    return emu_shfl(v, (int)(threadIdx.x % 32) ^ o);
}
template <class T> T __shfl_down_sync(unsigned, T v, int o) {
    return emu_shfl(v, (int)(threadIdx.x % 32) + o);
}
template <class T> T __shfl_sync(unsigned, T v, int j) { return emu_shfl(v, j & 31); }

inline cudaError_t cudaGetLastError() {
    cudaError_t e  = emu_last_error;
    emu_last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu_last_error; }
inline cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int bytes) {
    return (size_t)bytes <= emu_smem_limit ? cudaSuccess : cudaErrorInvalidValue;
}

inline std::function<void()> *emu_body;
inline void                   emu_fiber_main() {
                      (*emu_body)();
                      emu_cur->f[emu_cur->cur].state = 3;
                      // returning resumes uc_link: the scheduler
}

// Runs one block: fibers in turn until each is at a barrier or has exited, then releases the
// barrier every live thread has reached.
inline void emu_run_block(emu_block &b) {
    for (unsigned t = 0; t < b.threads; t++) {
        emu_fiber &f = b.f[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp   = f.stack;
        f.ctx.uc_stack.ss_size = EMU_STACK;
        f.ctx.uc_link          = &b.sched;
        makecontext(&f.ctx, emu_fiber_main, 0);
        f.state = 0;
    }
    b.block_gen = 0;
    b.warp_gen.assign((b.threads + 31) / 32, 0);
    for (;;) {
        int ran = 0;
        for (unsigned t = 0; t < b.threads; t++) {
            emu_fiber &f = b.f[t];
            if (f.state != 0)
                continue;
            b.cur     = (int)t;
            threadIdx = {t, 0, 0};
            swapcontext(&b.sched, &f.ctx);
            ran = 1;
        }
        // release a warp barrier all live lanes of a warp reached (lanes at the block barrier
        // or exited do not take part: a divergent shuffle is a bug, reported below)
        int released = 0;
        for (unsigned w = 0; w * 32 < b.threads; w++) {
            unsigned lo = w * 32, hi = lo + 32 < b.threads ? lo + 32 : b.threads;
            int      waiting = 0, live = 0;
            for (unsigned t = lo; t < hi; t++) {
                live += b.f[t].state != 3;
                waiting += b.f[t].state == 2;
            }
            if (waiting && waiting == live) {
                for (unsigned t = lo; t < hi; t++)
                    if (b.f[t].state == 2)
                        b.f[t].state = 0;
                b.warp_gen[w]++;
                released = 1;
            } else if (waiting) {
                emu_die("a warp shuffle not reached by every live lane of its warp");
            }
        }
        if (released)
            continue;
        int at_bar = 0, live = 0;
        for (unsigned t = 0; t < b.threads; t++) {
            live += b.f[t].state != 3;
            at_bar += b.f[t].state == 1;
        }
        if (live == 0)
            return;
        if (at_bar == live) {
            for (unsigned t = 0; t < b.threads; t++)
                if (b.f[t].state == 1)
                    b.f[t].state = 0;
            b.block_gen++;
            continue;
        }
        (void)ran;
        emu_die("__syncthreads not reached by every live thread of the block");
    }
}

// Kernel arguments: every pointer a kernel receives (directly, or as a member of attention's
// argument struct) must be NULL or point into a device allocation: a host pointer handed to a
// kernel works here but faults on the GPU. (emu_memory.h.)
inline int              emu_ptr_ok(const void *p);
template <class T> void emu_check_arg(const char *kernel, int i, const T &v) {
    if constexpr (std::is_pointer_v<T>) {
        if (v && !emu_ptr_ok((const void *)v)) {
            fprintf(stderr, "cuda-emu: kernel %s argument %d (%p) is not device memory\n", kernel,
                    i, (const void *)v);
            abort();
        }
    } else if constexpr (requires {
                             v.qkv, v.out, v.k_pool, v.v_pool, v.block_table, v.q_off, v.start_pos,
                                 v.partial;
                         }) {
        const void *ps[] = {v.out,         v.qkv,   v.k_pool,    v.v_pool,
                            v.block_table, v.q_off, v.start_pos, v.partial};
        for (const void *p : ps)
            emu_check_arg(kernel, i, p);
    }
}

// ---- stream capture state (the API is in emu_graph.h) ------------------------------------------
// One capture at a time (the backend has one stream): the stream, whether an illegal call has
// invalidated it, and the work recorded so far.
struct emu_capture_state {
    cudaStream_t                       stream = nullptr;
    int                                active = 0, invalid = 0;
    std::vector<std::function<void()>> nodes;
};
inline emu_capture_state emu_capture;
// A call real CUDA refuses while a stream captures: fails and invalidates the capture.
inline cudaError_t emu_capture_refuse(const char *call) {
    if (getenv("ASSAY_EMU_VERBOSE"))
        fprintf(stderr, "cuda-emu: %s while a stream is capturing\n", call);
    emu_capture.invalid   = 1;
    return emu_last_error = cudaErrorStreamCaptureUnsupported;
}
// Where work issued on stream s goes: 0 runs now (no capture, or another non-blocking stream),
// 1 is recorded, -1 is refused (*st says why): the legacy stream while another one captures, or
// anything after the capture was invalidated.
inline int emu_capture_route(cudaStream_t s, cudaError_t *st) {
    *st = cudaSuccess;
    if (!emu_capture.active || (s && s != emu_capture.stream))
        return 0;
    if (!s) {
        emu_capture.invalid = 1;
        *st = emu_last_error = cudaErrorStreamCaptureImplicit;
        return -1;
    }
    if (emu_capture.invalid) {
        *st = emu_last_error = cudaErrorStreamCaptureInvalidated;
        return -1;
    }
    return 1;
}
// 0 when the work should run now, else it was recorded or refused (*st).
inline int emu_capture_take(cudaStream_t s, const std::function<void()> &work, cudaError_t *st) {
    int r = emu_capture_route(s, st);
    if (r == 1)
        emu_capture.nodes.push_back(work);
    return r != 0;
}

// kernel<<<grid, block, smem, s>>>(args...) becomes emu_launch(kernel, grid, block, smem, s,
// args...) (the build rewrites the source). CUDA's launch limits are checked like the GPU does
// (the error comes from cudaGetLastError), when the launch is issued (recorded or not).
template <typename K, typename... A>
void emu_launch_run(const char *name, K kernel, dim3 grid, dim3 block, size_t smem, A... args);
template <typename K, typename... A>
void emu_launch_named(const char *name, K kernel, dim3 grid, dim3 block, size_t smem,
                      cudaStream_t s, A... args) {
    {
        int i = 0;
        (emu_check_arg(name, i++, args), ...);
    }
    unsigned threads = block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        threads == 0 || threads > 1024 || block.y != 1 || block.z != 1) {
        emu_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (smem > 48 * 1024 && smem > emu_smem_limit) {
        emu_last_error = cudaErrorInvalidValue;
        return;
    }
    cudaError_t st;
    if (emu_capture_take(
            s, [=] { emu_launch_run(name, kernel, grid, block, smem, args...); }, &st))
        return;
    emu_launch_run(name, kernel, grid, block, smem, args...);
}
template <typename K, typename... A>
void emu_launch_run(const char *name, K kernel, dim3 grid, dim3 block, size_t smem, A... args) {
    emu_launches++;
    emu_kernel_name = name;
    {
        int i = 0; // a replayed graph's buffers must still be device memory
        (emu_check_arg(name, i++, args), ...);
    }
    unsigned             threads = block.x * block.y * block.z;
    std::vector<char *> &stacks  = emu_stacks.v;
    while (stacks.size() < threads)
        stacks.push_back((char *)malloc(EMU_STACK));
    emu_block blk;
    blk.threads = threads;
    blk.f.resize(threads);
    for (unsigned t = 0; t < threads; t++)
        blk.f[t].stack = stacks[t];
    blk.shfl.assign(threads, 0);
    std::function<void()>  body       = [&] { kernel(args...); };
    emu_block             *saved_cur  = emu_cur;
    std::function<void()> *saved_body = emu_body;
    emu_cur                           = &blk;
    emu_body                          = &body;
    blockDim                          = block;
    gridDim                           = grid;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                blk.smem = malloc(smem ? smem : 1);
                memset(blk.smem, 0xA5, smem); // garbage, like real shared memory
                emu_run_block(blk);
                free(blk.smem);
            }
    emu_cur  = saved_cur;
    emu_body = saved_body;
}
#define emu_launch(kernel, ...) emu_launch_named(#kernel, kernel, __VA_ARGS__)

#include "emu_graph.h"
#include "emu_memory.h"
