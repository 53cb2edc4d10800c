// Affine coupling: input validation and the (row, chunk) partition that both
// backends use. Declarations of the per-backend entry points.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <type_traits>

#include "common/checks.h"

namespace gencore {
namespace coupling {

// Validates (x, log_scale, shift, clamp) for both directions and both backends.
inline void check_affine_coupling_inputs(const at::Tensor& x, const at::Tensor& log_scale,
                                         const at::Tensor& shift, double clamp) {
  check_min_dim(x, "x", 1);
  check_floating(x, "x");
  check_same_shape(x, "x", log_scale, "log_scale");
  check_same_shape(x, "x", shift, "shift");
  check_same_device(x, "x", log_scale, "log_scale");
  check_same_device(x, "x", shift, "shift");
  check_same_dtype(x, "x", log_scale, "log_scale");
  check_same_dtype(x, "x", shift, "shift");
  TORCH_CHECK_VALUE(!std::isnan(clamp) && clamp >= 0.0 && !std::isinf(clamp),
                    "gencore: clamp must be a finite number >= 0 (0 disables the soft clamp), got ",
                    clamp);
}

inline void check_affine_coupling_backward_inputs(const at::Tensor& grad_y,
                                                  const at::Tensor& grad_logdet,
                                                  const at::Tensor& x, const at::Tensor& log_scale,
                                                  const at::Tensor& shift, double clamp) {
  check_affine_coupling_inputs(x, log_scale, shift, clamp);
  check_same_shape(x, "x", grad_y, "grad_y");
  check_same_device(x, "x", grad_y, "grad_y");
  check_same_dtype(x, "x", grad_y, "grad_y");
  TORCH_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == x.size(0),
                    "gencore: grad_logdet must have shape (B,) = (", x.size(0), ",), got ",
                    grad_logdet.sizes());
  check_same_device(x, "x", grad_logdet, "grad_logdet");
}

// Calls fn(std::bool_constant<reverse>{}, std::bool_constant<clamp > 0>{}): both are
// compile-time switches of the kernels, so the element loops carry no branch.
template <typename Fn>
inline void dispatch_direction(bool reverse, double clamp, const Fn& fn) {
  const bool clamped = clamp > 0;
  if (reverse) {
    if (clamped) fn(std::true_type{}, std::true_type{});
    else fn(std::true_type{}, std::false_type{});
  } else {
    if (clamped) fn(std::false_type{}, std::true_type{});
    else fn(std::false_type{}, std::false_type{});
  }
}

// (B, N) view of a (B, ...) tensor; N = 1 for a 1-D input.
inline int64_t row_length(const at::Tensor& x) {
  return x.size(0) == 0 ? 0 : x.numel() / x.size(0);
}

// Contiguous inputs and freshly allocated outputs: what each backend's launcher works on.
// The validation shared by both backends runs here; each backend adds its device check.
struct ForwardTensors {
  at::Tensor x, log_scale, shift;  // contiguous
  at::Tensor y, logdet;            // outputs; logdet starts at 0 (rows of length 0)
};

inline ForwardTensors prepare_forward(const at::Tensor& x, const at::Tensor& log_scale,
                                      const at::Tensor& shift, double clamp) {
  check_affine_coupling_inputs(x, log_scale, shift, clamp);
  ForwardTensors t{x.contiguous(), log_scale.contiguous(), shift.contiguous(), {}, {}};
  t.y = at::empty_like(t.x);
  t.logdet = at::zeros({x.size(0)}, x.options());
  return t;
}

struct BackwardTensors {
  at::Tensor grad_y, grad_logdet, x, log_scale, shift;  // contiguous, grad_logdet in x's dtype
  at::Tensor grad_x, grad_log_scale;                    // outputs
};

inline BackwardTensors prepare_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                        const at::Tensor& x, const at::Tensor& log_scale,
                                        const at::Tensor& shift, double clamp) {
  check_affine_coupling_backward_inputs(grad_y, grad_logdet, x, log_scale, shift, clamp);
  BackwardTensors t{grad_y.contiguous(), grad_logdet.to(x.scalar_type()).contiguous(),
                    x.contiguous(), log_scale.contiguous(), shift.contiguous(), {}, {}};
  t.grad_x = at::empty_like(t.x);
  t.grad_log_scale = at::empty_like(t.x);
  return t;
}

// 1 / clamp, or 0 when the clamp is off; passed to the kernels to avoid a division.
inline double inverse_clamp(double clamp) { return clamp > 0 ? 1.0 / clamp : 0.0; }

std::tuple<at::Tensor, at::Tensor> affine_coupling_cpu(const at::Tensor& x,
                                                       const at::Tensor& log_scale,
                                                       const at::Tensor& shift, double clamp,
                                                       bool reverse);
std::tuple<at::Tensor, at::Tensor> affine_coupling_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& log_scale, const at::Tensor& shift, double clamp, bool reverse);

}  // namespace coupling
}  // namespace gencore
