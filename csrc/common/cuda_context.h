// The CUDA context of a launcher, through the stable ABI: the device guard, the current
// stream (the C shim of torch's CUDA stream; the stable accelerator API returns the raw
// handle only from torch 2.13 on), and the launch check.
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include "common/stable_api.h"

namespace gencore {
namespace cuda {

// Makes t's device the current one for the scope of the launcher.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Tensor& t) : guard_(t.get_device_index()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

// The current stream of the current device: kernels are ordered with torch's work on it.
inline cudaStream_t current_stream() {
  void* stream = nullptr;
  const auto index = torch::stable::accelerator::getCurrentDeviceIndex();
  GENCORE_SHIM_CHECK(aoti_torch_get_current_cuda_stream(index, &stream));
  return static_cast<cudaStream_t>(stream);
}

inline void check_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  GENCORE_CHECK(err == cudaSuccess, "gencore: ", what, " failed at ", file, ":", line, ": ",
                cudaGetErrorString(err));
}

}  // namespace cuda
}  // namespace gencore

#define GENCORE_CUDA_CHECK(expr) \
  ::gencore::cuda::check_cuda_error((expr), #expr, __FILE__, __LINE__)
#define GENCORE_CUDA_KERNEL_LAUNCH_CHECK() \
  ::gencore::cuda::check_cuda_error(cudaGetLastError(), "CUDA kernel launch", __FILE__, __LINE__)
