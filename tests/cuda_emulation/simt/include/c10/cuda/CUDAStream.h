// Emulator stand-in: one in-order stream; a launch completes before it returns.
#pragma once
#include <c10/core/Device.h>

#include "cuda_runtime.h"

namespace c10 {
namespace cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex device = -1) {
  (void)device;
  return {};
}
}  // namespace cuda
}  // namespace c10
