// Emulator stand-in: launches are checked when they are made (simt::run_grid throws).
#pragma once
#include <c10/util/Exception.h>

#include "cuda_runtime.h"

#define C10_CUDA_CHECK(expr)                                                               \
  do {                                                                                     \
    const cudaError_t simt_err_ = (expr);                                                  \
    TORCH_CHECK(simt_err_ == cudaSuccess, "CUDA error: ", cudaGetErrorString(simt_err_)); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
