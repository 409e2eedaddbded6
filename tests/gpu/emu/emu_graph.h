// tests/gpu/emu/emu_graph.h — stream capture and CUDA graphs in the emulated runtime
// (cuda_runtime.h says what a capture records and what it refuses). A graph is its recorded work
// in issue order; an instantiated graph a copy of it; cudaGraphLaunch runs it at once, as every
// emulated stream operation runs. Counters (emu_graph_stats) let a test see that replays
// happened. Included by cuda_runtime.h.
#pragma once
#include <memory>

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal      = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed     = 2
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone        = 0,
    cudaStreamCaptureStatusActive      = 1,
    cudaStreamCaptureStatusInvalidated = 2
};
struct emu_graph {
    std::vector<std::function<void()>> nodes;
};
typedef emu_graph *cudaGraph_t;
typedef emu_graph *cudaGraphExec_t;

struct emu_graph_counters {
    long captures, launches, live;
};
inline emu_graph_counters emu_graph_stats;

inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return emu_last_error = cudaErrorInvalidValue;
    if (!s) // the legacy stream cannot be captured
        return emu_last_error = cudaErrorStreamCaptureUnsupported;
    if (emu_capture.active)
        return emu_last_error = cudaErrorIllegalState;
    emu_capture.active  = 1;
    emu_capture.invalid = 0;
    emu_capture.stream  = s;
    emu_capture.nodes.clear();
    return cudaSuccess;
}

inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    if (!graph)
        return emu_last_error = cudaErrorInvalidValue;
    *graph = nullptr;
    if (!emu_capture.active || s != emu_capture.stream)
        return emu_last_error = cudaErrorIllegalState;
    emu_capture.active = 0;
    if (emu_capture.invalid) {
        emu_capture.nodes.clear();
        return emu_last_error = cudaErrorStreamCaptureInvalidated;
    }
    emu_graph *g = new emu_graph;
    g->nodes.swap(emu_capture.nodes);
    emu_graph_stats.captures++;
    emu_graph_stats.live++;
    *graph = g;
    return cudaSuccess;
}

inline cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    if (!status)
        return cudaErrorInvalidValue;
    *status = !emu_capture.active || s != emu_capture.stream ? cudaStreamCaptureStatusNone
              : emu_capture.invalid                          ? cudaStreamCaptureStatusInvalidated
                                                             : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

inline cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t g,
                                                 unsigned long long flags) {
    if (!exec || !g || flags)
        return emu_last_error = cudaErrorInvalidValue;
    *exec = new emu_graph(*g);
    emu_graph_stats.live++;
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g,
                                        unsigned long long flags = 0) {
    return cudaGraphInstantiateWithFlags(exec, g, flags);
}

inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec)
        return emu_last_error = cudaErrorInvalidValue;
    if (emu_capture.active) // a graph launched into a capture: not something the backend does
        return emu_capture_refuse("cudaGraphLaunch");
    (void)s;
    emu_graph_stats.launches++;
    for (auto &node : exec->nodes)
        node();
    return emu_last_error;
}

inline cudaError_t emu_graph_free(emu_graph *g) {
    if (!g)
        return cudaSuccess;
    delete g;
    emu_graph_stats.live--;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { return emu_graph_free(e); }
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { return emu_graph_free(g); }

// For the emulated cuBLASLt (a shared object with no view of this state): work it issues on
// stream s. Returns 0 when s is not capturing (the caller runs the work now), 1 when the work was
// recorded (the graph owns ctx and frees it with drop), -1 when the capture refused it (ctx freed).
extern "C" __attribute__((weak, used, visibility("default"))) int
emu_capture_add(cudaStream_t s, void (*run)(void *), void *ctx, void (*drop)(void *)) {
    cudaError_t st;
    int         r = emu_capture_route(s, &st);
    if (r == 0)
        return 0;
    std::shared_ptr<void> owned(ctx, drop);
    if (r < 0)
        return -1;
    emu_capture.nodes.push_back([owned, run] { run(owned.get()); });
    return 1;
}
