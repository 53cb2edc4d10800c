// Input validation shared by every op's CPU and CUDA entry points. Errors name the
// argument; shape/device/value problems surface in Python as ValueError, dtype problems
// as TypeError (common/stable_api.h).
#pragma once

#include <cmath>
#include <string>

#include "common/stable_api.h"

namespace gencore {

inline bool same_sizes(IntArrayRef a, IntArrayRef b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

inline void check_same_shape(const Tensor& a, const char* a_name, const Tensor& b,
                             const char* b_name) {
  GENCORE_CHECK_VALUE(same_sizes(a.sizes(), b.sizes()), "gencore: ", b_name,
                      " must have the shape of ", a_name, ": got ", b_name, ".shape=", shape(b),
                      " and ", a_name, ".shape=", shape(a));
}

inline void check_same_device(const Tensor& a, const char* a_name, const Tensor& b,
                              const char* b_name) {
  GENCORE_CHECK_VALUE(a.device() == b.device(), "gencore: ", a_name, " and ", b_name,
                      " must be on the same device: got ", device_name(a.device()), " and ",
                      device_name(b.device()));
}

inline void check_same_dtype(const Tensor& a, const char* a_name, const Tensor& b,
                             const char* b_name) {
  GENCORE_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "gencore: ", a_name, " and ", b_name,
                     " must have the same dtype: got ", dtype_name(a.scalar_type()), " and ",
                     dtype_name(b.scalar_type()));
}

inline void check_floating(const Tensor& t, const char* name) {
  GENCORE_CHECK_TYPE(is_floating(t.scalar_type()), "gencore: ", name,
                     " must be a floating-point tensor, got ", dtype_name(t.scalar_type()));
}

inline void check_min_dim(const Tensor& t, const char* name, int64_t min_dim) {
  GENCORE_CHECK_VALUE(t.dim() >= min_dim, "gencore: ", name, " must have at least ", min_dim,
                      " dimension(s) with the batch first, got shape ", shape(t));
}

inline void check_finite_scalar(double v, const char* name) {
  GENCORE_CHECK_VALUE(std::isfinite(v), "gencore: ", name, " must be finite, got ", v);
}

inline void check_dtype_supported_cpu(const Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  GENCORE_CHECK_TYPE(st == kFloat || st == kDouble, "gencore: on CPU, ", name,
                     " must be float32 or float64, got ", dtype_name(st));
}

inline void check_dtype_supported_cuda(const Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  GENCORE_CHECK_TYPE(st == kFloat || st == kDouble || st == kHalf || st == kBFloat16,
                     "gencore: on CUDA, ", name,
                     " must be float32, float64, float16 or bfloat16, got ", dtype_name(st));
}

// The gradients of (y, logdet) that a backward receives: y's shape, (B,).
inline void check_output_grads(const Tensor& grad_y, const Tensor& grad_logdet,
                               const Tensor& x) {
  check_same_shape(x, "x", grad_y, "grad_y");
  check_same_device(x, "x", grad_y, "grad_y");
  check_same_dtype(x, "x", grad_y, "grad_y");
  GENCORE_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == x.size(0),
                      "gencore: grad_logdet must have shape (B,) = (", x.size(0), ",), got ",
                      shape(grad_logdet));
  check_same_device(x, "x", grad_logdet, "grad_logdet");
}

// The device check of a backend's entry point: the dispatcher routes by device, so this
// fails only for a direct call with mixed devices.
inline void check_cpu(const Tensor& t, const char* name) {
  GENCORE_CHECK_VALUE(t.is_cpu(), "gencore: ", name, " must be a CPU tensor here, got ",
                      device_name(t.device()));
  check_dtype_supported_cpu(t, name);
}

inline void check_cuda(const Tensor& t, const char* name) {
  GENCORE_CHECK_VALUE(t.is_cuda(), "gencore: ", name, " must be a CUDA tensor here, got ",
                      device_name(t.device()));
  check_dtype_supported_cuda(t, name);
}

}  // namespace gencore
