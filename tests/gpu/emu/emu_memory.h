// tests/gpu/emu/emu_memory.h — the memory, stream, event and device parts of the emulated CUDA
// runtime (cuda_runtime.h says what is checked). Included by cuda_runtime.h.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

#define EMU_GUARD 256 // bytes before and after every device allocation (cudaMalloc aligns to 256)

struct emu_alloc {
    size_t bytes;
    int    pinned; // cudaMallocHost: host memory, not checked as device memory
};
inline std::map<uintptr_t, emu_alloc> &emu_allocs() {
    static std::map<uintptr_t, emu_alloc> m;
    return m;
}
inline std::mutex &emu_mem_mutex() {
    static std::mutex m;
    return m;
}
inline size_t            emu_allocated = 0;
[[noreturn]] inline void emu_mem_die(const char *what, const void *p, size_t n) {
    fprintf(stderr, "cuda-emu: %s (%p, %zu bytes)\n", what, p, n);
    abort();
}
inline size_t emu_mem_total() {
    static size_t t = [] {
        const char *e = getenv("ASSAY_EMU_MEM");
        return e && *e ? (size_t)strtoull(e, NULL, 10) : (size_t)8 << 30;
    }();
    return t;
}
inline void emu_guard_check(uintptr_t p, const emu_alloc &a) {
    const unsigned char *lo = (const unsigned char *)p - EMU_GUARD,
                        *hi = (const unsigned char *)p + a.bytes;
    for (int i = 0; i < EMU_GUARD; i++)
        if (lo[i] != 0xFD || hi[i] != 0xFD)
            emu_mem_die(i < EMU_GUARD && lo[i] != 0xFD
                            ? "write before a device allocation"
                            : "write past the end of a device allocation",
                        (void *)p, a.bytes);
}
// The allocation [p, p + n) lies in, or NULL. n may be 0.
inline const emu_alloc *emu_find(const void *p, size_t n, int pinned, uintptr_t *base = NULL) {
    std::lock_guard<std::mutex> g(emu_mem_mutex());
    auto                       &m  = emu_allocs();
    auto                        it = m.upper_bound((uintptr_t)p);
    if (it == m.begin())
        return NULL;
    --it;
    if (it->second.pinned != pinned)
        return NULL;
    if ((uintptr_t)p + n > it->first + it->second.bytes)
        return NULL;
    if (base)
        *base = it->first;
    return &it->second;
}
inline int emu_is_device(const void *p, size_t n) { return emu_find(p, n, 0) != NULL; }
// The kernel-argument check (cuda_runtime.h); attn_emu.cc's buffers are std::vectors, so it
// is on only where this runtime owns all memory (build/emu/assay).
#ifdef EMU_CHECK_KERNEL_PTRS
inline int emu_ptr_ok(const void *p) { return emu_find(p, 0, 0) != NULL; }
#else
inline int emu_ptr_ok(const void *) { return 1; }
#endif
inline int emu_touches_device(const void *p) { return emu_find(p, 1, 0) != NULL; }

// For the emulated cuBLASLt (a shared object with no view of this map): 1 when [p, p + n) lies
// in one device allocation. Exported (build/emu/assay links with -rdynamic).
extern "C" __attribute__((weak, used, visibility("default"))) int emu_device_range_ok(const void *p,
                                                                                      size_t n) {
    return emu_is_device(p, n);
}

inline cudaError_t emu_alloc_raw(void **p, size_t n, int pinned) {
    if (!p)
        return cudaErrorInvalidValue;
    *p = NULL;
    if (!pinned && emu_allocated + n > emu_mem_total())
        return emu_last_error = cudaErrorMemoryAllocation;
    unsigned char *raw = (unsigned char *)aligned_alloc(256, (n + 2 * EMU_GUARD + 255) / 256 * 256);
    if (!raw)
        return emu_last_error = cudaErrorMemoryAllocation;
    memset(raw, 0xFD, EMU_GUARD);
    memset(raw + EMU_GUARD, pinned ? 0x00 : 0xFF, n); // device memory: NaN garbage
    memset(raw + EMU_GUARD + n, 0xFD, EMU_GUARD);
    *p = raw + EMU_GUARD;
    std::lock_guard<std::mutex> g(emu_mem_mutex());
    emu_allocs()[(uintptr_t)*p] = {n, pinned};
    if (!pinned)
        emu_allocated += n;
    return cudaSuccess;
}
inline cudaError_t emu_free_raw(void *p, int pinned) {
    if (!p)
        return cudaSuccess;
    std::lock_guard<std::mutex> g(emu_mem_mutex());
    auto                        it = emu_allocs().find((uintptr_t)p);
    if (it == emu_allocs().end() || it->second.pinned != pinned)
        emu_mem_die(pinned ? "cudaFreeHost of a pointer cudaMallocHost did not return"
                           : "cudaFree of a pointer cudaMalloc did not return",
                    p, 0);
    emu_guard_check(it->first, it->second);
    if (!pinned)
        emu_allocated -= it->second.bytes;
    emu_allocs().erase(it);
    free((unsigned char *)p - EMU_GUARD);
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t n) {
    return emu_capture.active ? emu_capture_refuse("cudaMalloc") : emu_alloc_raw(p, n, 0);
}
template <class T> cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
inline cudaError_t             cudaFree(void *p) {
                return emu_capture.active ? emu_capture_refuse("cudaFree") : emu_free_raw(p, 0);
}
inline cudaError_t cudaMallocHost(void **p, size_t n) {
    return emu_capture.active ? emu_capture_refuse("cudaMallocHost") : emu_alloc_raw(p, n, 1);
}
template <class T> cudaError_t cudaMallocHost(T **p, size_t n) {
    return cudaMallocHost((void **)p, n);
}
inline cudaError_t cudaFreeHost(void *p) {
    return emu_capture.active ? emu_capture_refuse("cudaFreeHost") : emu_free_raw(p, 1);
}
inline cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    if (emu_capture.active)
        return emu_capture_refuse("cudaMemGetInfo");
    *t = emu_mem_total();
    *f = *t - emu_allocated;
    return cudaSuccess;
}

// A copy's sides: device pointers inside one device allocation, host pointers outside all.
inline void emu_check_side(const void *p, size_t n, int device, const char *what) {
    if (n == 0)
        return;
    if (device && !emu_is_device(p, n))
        emu_mem_die(what, p, n);
    if (!device && emu_touches_device(p))
        emu_mem_die(what, p, n);
}
inline cudaError_t emu_copy_check(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    if (k == cudaMemcpyDefault)
        k = (cudaMemcpyKind)((emu_touches_device(s) ? 2 : 0) | (emu_touches_device(d) ? 1 : 0));
    emu_check_side(d, n, k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice,
                   "cudaMemcpy: the destination is not what the copy kind says (or overruns)");
    emu_check_side(s, n, k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice,
                   "cudaMemcpy: the source is not what the copy kind says (or overruns)");
    return cudaSuccess;
}
inline cudaError_t emu_copy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    emu_copy_check(d, s, n, k);
    if (n)
        memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    if (emu_capture.active)
        return emu_capture_refuse("cudaMemcpy (synchronous)");
    return emu_copy(d, s, n, k);
}
// A captured copy's host side must be pinned (cudaMallocHost): a graph cannot copy pageable
// memory. Its sides are checked when it is issued and again when it runs.
inline int emu_host_side_pinned(const void *p, size_t n) {
    return n == 0 || emu_touches_device(p) || emu_find(p, n, 1) != NULL;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k,
                                   cudaStream_t st = 0) {
    if (emu_capture.active && (!emu_host_side_pinned(d, n) || !emu_host_side_pinned(s, n)))
        return emu_capture_refuse("cudaMemcpyAsync of pageable host memory");
    cudaError_t e = cudaSuccess;
    if (emu_capture_take(
            st, [=] { emu_copy(d, s, n, k); }, &e))
        return e == cudaSuccess ? emu_copy_check(d, s, n, k) : e;
    return emu_copy(d, s, n, k);
}
inline cudaError_t cudaMemcpy2DAsync(void *d, size_t dpitch, const void *s, size_t spitch,
                                     size_t width, size_t height, cudaMemcpyKind k,
                                     cudaStream_t st = 0) {
    if (width > dpitch || width > spitch)
        return cudaErrorInvalidValue;
    auto run = [=] {
        for (size_t r = 0; r < height; r++)
            emu_copy((char *)d + r * dpitch, (const char *)s + r * spitch, width, k);
    };
    if (emu_capture.active && height &&
        (!emu_host_side_pinned(d, (height - 1) * dpitch + width) ||
         !emu_host_side_pinned(s, (height - 1) * spitch + width)))
        return emu_capture_refuse("cudaMemcpy2DAsync of pageable host memory");
    cudaError_t e = cudaSuccess;
    if (emu_capture_take(st, run, &e))
        return e;
    run();
    return cudaSuccess;
}
inline cudaError_t emu_memset(void *p, int v, size_t n) {
    emu_check_side(p, n, 1, "cudaMemset outside a device allocation");
    memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int v, size_t n) {
    if (emu_capture.active)
        return emu_capture_refuse("cudaMemset (synchronous)");
    return emu_memset(p, v, n);
}
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st = 0) {
    cudaError_t e = cudaSuccess;
    if (emu_capture_take(
            st, [=] { emu_memset(p, v, n); }, &e))
        return e;
    return emu_memset(p, v, n);
}

// ---- streams, events, device
// ---------------------------------------------------------------------
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
    static char token;
    *s = &token;
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return emu_capture.active ? emu_capture_refuse("cudaStreamSynchronize") : cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
    return emu_capture.active ? emu_capture_refuse("cudaDeviceSynchronize") : cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
    *e = malloc(1);
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0) {
    return e ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (emu_capture.active)
        return emu_capture_refuse("cudaEventSynchronize");
    return e ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaGetDeviceCount(int *n) {
    const char *e = getenv("ASSAY_EMU_DEVICES");
    *n            = e && *e ? atoi(e) : 1;
    return *n > 0 ? cudaSuccess : cudaErrorNoDevice;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p);
    strcpy(p->name, "cuda-emu (CPU emulation, sm_90)");
    p->major                  = 9;
    p->minor                  = 0;
    p->totalGlobalMem         = emu_mem_total();
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->multiProcessorCount    = 132;
    return cudaSuccess;
}
inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalState: return "operation not permitted in this state";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return "emulated CUDA error";
    }
}
inline const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    default: return "cudaErrorUnknown";
    }
}

// build/emu/assay loads the emulated cuBLASLt next to it unless ASSAY_CUBLASLT says otherwise.
inline const int emu_cublaslt_default = [] {
    char    exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0 && !getenv("ASSAY_CUBLASLT")) {
        exe[n]          = 0;
        std::string dir = exe;
        dir             = dir.substr(0, dir.rfind('/') + 1);
        setenv("ASSAY_CUBLASLT", (dir + "libcublasLt-emu.so").c_str(), 0);
    }
    return 0;
}();
