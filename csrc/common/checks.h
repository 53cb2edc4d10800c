// Input validation shared by every op's CPU and CUDA entry points. Errors name the
// argument; shape/dtype/value problems surface in Python as ValueError / TypeError.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace gencore {

inline void check_same_shape(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), "gencore: ", b_name, " must have the shape of ",
                    a_name, ": got ", b_name, ".shape=", b.sizes(), " and ", a_name,
                    ".shape=", a.sizes());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "gencore: ", a_name, " and ", b_name,
                    " must be on the same device: got ", a.device(), " and ", b.device());
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "gencore: ", a_name, " and ", b_name,
                   " must have the same dtype: got ", a.scalar_type(), " and ",
                   b.scalar_type());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "gencore: ", name,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_min_dim(const at::Tensor& t, const char* name, int64_t min_dim) {
  TORCH_CHECK_VALUE(t.dim() >= min_dim, "gencore: ", name, " must have at least ", min_dim,
                    " dimension(s) with the batch first, got shape ", t.sizes());
}

inline void check_finite_scalar(double v, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(v), "gencore: ", name, " must be finite, got ", v);
}

inline void check_dtype_supported_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "gencore: on CPU, ", name, " must be float32 or float64, got ",
                   t.scalar_type());
}

inline void check_dtype_supported_cuda(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf ||
                       st == at::kBFloat16,
                   "gencore: on CUDA, ", name,
                   " must be float32, float64, float16 or bfloat16, got ", st);
}

}  // namespace gencore
