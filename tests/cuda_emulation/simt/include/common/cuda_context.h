// Emulator stand-in for csrc/common/cuda_context.h: one emulated device with one
// in-order stream; a launch completes (or throws, from simt::launch) before it returns.
#pragma once

#include "common/stable_api.h"
#include "cuda_runtime.h"

namespace gencore {
namespace cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor&) {}
};

inline cudaStream_t current_stream() { return nullptr; }

inline void check_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  GENCORE_CHECK(err == cudaSuccess, "gencore: ", what, " failed at ", file, ":", line, ": ",
                cudaGetErrorString(err));
}

}  // namespace cuda
}  // namespace gencore

#define GENCORE_CUDA_CHECK(expr) ::gencore::cuda::check_cuda_error((expr), #expr, __FILE__, __LINE__)
#define GENCORE_CUDA_KERNEL_LAUNCH_CHECK() \
  ::gencore::cuda::check_cuda_error(cudaGetLastError(), "CUDA kernel launch", __FILE__, __LINE__)
