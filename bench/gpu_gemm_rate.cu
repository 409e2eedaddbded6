// bench/gpu_gemm_rate.cu — the GPU's measured cuBLAS bf16 GEMM rate, the reference of the
// benchmark's MFU: bf16 in, fp32 accumulate (CUBLAS_COMPUTE_32F), bf16 out, cuBLAS's default
// algorithm choice (split-K allowed: the best cuBLAS can do), for each shape given.
//
//   gpu_gemm_rate M:N:K [M:N:K ...]      (M rows of activations, N out features, K in features)
//
// Prints one JSON object: {"device": ..., "shapes": [{"m","n","k","tflops"}...], "best_tflops"}.
// Timing: 3 warm-up calls, then the best of 5 timed batches of 10 calls (cudaEvents).
// Built by bench/gpu_bench.sh with nvcc and -lcublas; not part of libassay.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_CUDA(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__,    \
                    __LINE__);                                                                     \
            exit(3);                                                                               \
        }                                                                                          \
    } while (0)
#define CHECK_CUBLAS(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s failed: status %d (%s:%d)\n", #call, (int)s_, __FILE__, __LINE__); \
            exit(3);                                                                               \
        }                                                                                          \
    } while (0)

static __global__ void fill_kernel(__nv_bfloat16 *p, size_t n, unsigned seed) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) {
        unsigned x = (unsigned)i * 2654435761u + seed;
        x ^= x >> 13;
        p[i] = __float2bfloat16(((float)(x & 0xffff) / 65536.0f - 0.5f) * 0.1f);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gpu_gemm_rate M:N:K [M:N:K ...]\n");
        return 2;
    }
    cudaDeviceProp p;
    CHECK_CUDA(cudaGetDeviceProperties(&p, 0));
    cublasHandle_t h;
    CHECK_CUBLAS(cublasCreate(&h));
    cudaEvent_t t0, t1;
    CHECK_CUDA(cudaEventCreate(&t0));
    CHECK_CUDA(cudaEventCreate(&t1));
    printf("{\"device\": \"%s\", \"shapes\": [", p.name);
    double best_all = 0;
    for (int a = 1; a < argc; a++) {
        long m, n, k;
        if (sscanf(argv[a], "%ld:%ld:%ld", &m, &n, &k) != 3 || m <= 0 || n <= 0 || k <= 0) {
            fprintf(stderr, "gpu_gemm_rate: bad shape '%s' (want M:N:K)\n", argv[a]);
            return 2;
        }
        __nv_bfloat16 *x, *w, *y;
        CHECK_CUDA(cudaMalloc(&x, (size_t)m * k * 2));
        CHECK_CUDA(cudaMalloc(&w, (size_t)n * k * 2));
        CHECK_CUDA(cudaMalloc(&y, (size_t)m * n * 2));
        fill_kernel<<<(unsigned)(((size_t)m * k + 255) / 256), 256>>>(x, (size_t)m * k, 1);
        CHECK_CUDA(cudaGetLastError());
        fill_kernel<<<(unsigned)(((size_t)n * k + 255) / 256), 256>>>(w, (size_t)n * k, 2);
        CHECK_CUDA(cudaGetLastError());
        const float one = 1.0f, zero = 0.0f;
        // y (m, n) = x (m, k) @ w (n, k)^T, row-major: column-major y^T = w^T' * x^T
        auto gemm = [&]() {
            CHECK_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, w,
                                      CUDA_R_16BF, (int)k, x, CUDA_R_16BF, (int)k, &zero, y,
                                      CUDA_R_16BF, (int)n, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
        };
        for (int i = 0; i < 3; i++)
            gemm();
        float best_ms = 1e30f;
        for (int r = 0; r < 5; r++) {
            CHECK_CUDA(cudaEventRecord(t0));
            for (int i = 0; i < 10; i++)
                gemm();
            CHECK_CUDA(cudaEventRecord(t1));
            CHECK_CUDA(cudaEventSynchronize(t1));
            float ms = 0;
            CHECK_CUDA(cudaEventElapsedTime(&ms, t0, t1));
            if (ms / 10 < best_ms)
                best_ms = ms / 10;
        }
        double tflops = 2.0 * m * n * k / (best_ms * 1e-3) / 1e12;
        if (tflops > best_all)
            best_all = tflops;
        printf("%s{\"m\": %ld, \"n\": %ld, \"k\": %ld, \"tflops\": %.1f}", a > 1 ? ", " : "", m, n,
               k, tflops);
        CHECK_CUDA(cudaFree(x));
        CHECK_CUDA(cudaFree(w));
        CHECK_CUDA(cudaFree(y));
    }
    printf("], \"best_tflops\": %.1f}\n", best_all);
    cublasDestroy(h);
    return 0;
}
