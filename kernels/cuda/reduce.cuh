// kernels/cuda/reduce.cuh — block-wide reductions of the one-block-per-row kernels (norm.cu,
// logits.cu). Fixed trees: a warp folds by __shfl_down_sync halving (16, 8, 4, 2, 1), then warp 0
// folds the per-warp results the same way, so for a given blockDim the order never changes and
// a row's result depends on that row's values alone. blockDim.x must be a multiple of 32 and at
// most 1024 (launch.h: ops_row_threads). Every thread of the block must call these (they hold
// __syncthreads) and every thread gets the result.
#pragma once
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"

#define REDUCE_MAX_WARPS 32

struct reduce_shared {
    double sum[REDUCE_MAX_WARPS + 1];
    float  max[REDUCE_MAX_WARPS + 1];
    int    idx[REDUCE_MAX_WARPS + 1];
};

static __device__ double block_sum_double(double v, reduce_shared *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = __dadd_rn(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0)
        sh->sum[warp] = v;
    __syncthreads();
    if (warp == 0) {
        // Missing warps add +0.0, which leaves every sum but -0.0 unchanged: the row's value
        // does not depend on how many warps were idle.
        v = lane < n_warps ? sh->sum[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1)
            v = __dadd_rn(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0)
            sh->sum[REDUCE_MAX_WARPS] = v;
    }
    __syncthreads();
    double r = sh->sum[REDUCE_MAX_WARPS];
    __syncthreads(); // the next call may overwrite the slots
    return r;
}

// (*m, *i) of every thread becomes the block's argmax under ops_argmax_merge (NaN highest,
// lowest index on ties): the merge is order-free, so any tree gives the scan's answer.
static __device__ void block_argmax(float *m, int *i, reduce_shared *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float vm = __shfl_down_sync(0xffffffffu, *m, o);
        int   vi = __shfl_down_sync(0xffffffffu, *i, o);
        ops_argmax_merge(m, i, vm, vi);
    }
    if (lane == 0) {
        sh->max[warp] = *m;
        sh->idx[warp] = *i;
    }
    __syncthreads();
    if (warp == 0) {
        float bm = lane < n_warps ? sh->max[lane] : -INFINITY;
        int   bi = lane < n_warps ? sh->idx[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float vm = __shfl_down_sync(0xffffffffu, bm, o);
            int   vi = __shfl_down_sync(0xffffffffu, bi, o);
            ops_argmax_merge(&bm, &bi, vm, vi);
        }
        if (lane == 0) {
            sh->max[REDUCE_MAX_WARPS] = bm;
            sh->idx[REDUCE_MAX_WARPS] = bi;
        }
    }
    __syncthreads();
    *m = sh->max[REDUCE_MAX_WARPS];
    *i = sh->idx[REDUCE_MAX_WARPS];
    __syncthreads();
}
