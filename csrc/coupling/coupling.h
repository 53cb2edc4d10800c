// Affine coupling: input validation and the (row, chunk) partition that both
// backends use. Declarations of the per-backend entry points.
#pragma once

#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "common/checks.h"
#include "common/coupling_math.h"

namespace gencore {
namespace coupling {

// Validates (x, log_scale, shift, clamp) for both directions and both backends.
inline void check_affine_coupling_inputs(const Tensor& x, const Tensor& log_scale,
                                         const Tensor& shift, double clamp) {
  check_min_dim(x, "x", 1);
  check_floating(x, "x");
  check_same_shape(x, "x", log_scale, "log_scale");
  check_same_shape(x, "x", shift, "shift");
  check_same_device(x, "x", log_scale, "log_scale");
  check_same_device(x, "x", shift, "shift");
  check_same_dtype(x, "x", log_scale, "log_scale");
  check_same_dtype(x, "x", shift, "shift");
  GENCORE_CHECK_VALUE(!std::isnan(clamp) && clamp >= 0.0 && !std::isinf(clamp),
                      "gencore: clamp must be a finite number >= 0 (0 disables the soft clamp), "
                      "got ",
                      clamp);
}

inline void check_affine_coupling_backward_inputs(const Tensor& grad_y,
                                                  const Tensor& grad_logdet,
                                                  const Tensor& x, const Tensor& log_scale,
                                                  const Tensor& shift, double clamp) {
  check_affine_coupling_inputs(x, log_scale, shift, clamp);
  check_output_grads(grad_y, grad_logdet, x);
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
inline int64_t row_length(const Tensor& x) {
  return x.size(0) == 0 ? 0 : x.numel() / x.size(0);
}

// A (B, N) view of a (B, ...) input: element (r, j) lies at data + r * row + j * col.
// Models feed the op views (x[:, 1::2], chunks of a conditioner's output): reading them
// in place saves a copy per input and call. `t` keeps the data alive: the input itself
// when its non-batch dims flatten to one stride (and, with unit_col, that stride is 1),
// else a contiguous copy.
struct RowView {
  Tensor t;
  int64_t row, col;
};

// The strides (row, col) of a (B, N) view of t, when its non-batch dims flatten to one
// stride (dims of size 1 do not count); false otherwise.
inline bool flat_row_strides(const Tensor& t, int64_t n, int64_t& row, int64_t& col) {
  bool found = false;
  int64_t expect = 0;
  col = 1;
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) == 1) continue;
    if (found && t.stride(d) != expect) return false;
    if (!found) col = t.stride(d), found = true;
    expect = t.stride(d) * t.size(d);
  }
  row = t.size(0) == 1 ? n * col : t.stride(0);
  return true;
}

inline RowView row_view(const Tensor& t, bool unit_col) {
  const int64_t n = row_length(t);
  int64_t row = 0, col = 1;
  if (t.numel() > 0 && flat_row_strides(t, n, row, col)) {
    if (n == 1) col = 1;
    if (!unit_col || col == 1) return {t, row, col};
  }
  return {contig(t), n, 1};
}

// Input views and freshly allocated (contiguous) outputs: what each backend's launcher
// works on. The validation shared by both backends runs here; each backend adds its
// device check. unit_col: the backend needs unit-stride rows (vector loads on CUDA).
struct ForwardTensors {
  RowView x, log_scale, shift;
  Tensor y, logdet;  // outputs; logdet starts at 0 (rows of length 0)
};

inline ForwardTensors prepare_forward(const Tensor& x, const Tensor& log_scale,
                                      const Tensor& shift, double clamp, bool unit_col) {
  check_affine_coupling_inputs(x, log_scale, shift, clamp);
  ForwardTensors t{row_view(x, unit_col), row_view(log_scale, unit_col),
                   row_view(shift, unit_col), {}, {}};
  t.y = empty(x.sizes(), x);
  t.logdet = zeros({x.size(0)}, x);
  return t;
}

struct BackwardTensors {
  RowView grad_y, x, log_scale, shift;
  Tensor grad_logdet;  // in x's dtype; often an expanded scalar gradient (stride 0)
  int64_t grad_logdet_stride;
  Tensor grad_x, grad_log_scale;  // outputs, contiguous
};

inline BackwardTensors prepare_backward(const Tensor& grad_y, const Tensor& grad_logdet,
                                        const Tensor& x, const Tensor& log_scale,
                                        const Tensor& shift, double clamp, bool unit_col) {
  check_affine_coupling_backward_inputs(grad_y, grad_logdet, x, log_scale, shift, clamp);
  BackwardTensors t{row_view(grad_y, unit_col), row_view(x, unit_col),
                    row_view(log_scale, unit_col), row_view(shift, unit_col),
                    to_dtype(grad_logdet, x.scalar_type()), 0, {}, {}};
  t.grad_logdet_stride = t.grad_logdet.stride(0);
  t.grad_x = empty(x.sizes(), x);
  t.grad_log_scale = empty(x.sizes(), x);
  return t;
}

// 1 / clamp, or 0 when the clamp is off; passed to the kernels to avoid a division.
inline double inverse_clamp(double clamp) { return clamp > 0 ? 1.0 / clamp : 0.0; }

std::tuple<Tensor, Tensor> affine_coupling_cpu(const Tensor& x,
                                               const Tensor& log_scale,
                                               const Tensor& shift, double clamp,
                                               bool reverse);
std::tuple<Tensor, Tensor> affine_coupling_backward_cpu(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x,
    const Tensor& log_scale, const Tensor& shift, double clamp, bool reverse);

// ---- masked_affine_coupling: the split, the transform and the merge in one pass ----

// x (B, C, ...) and params (B, 2 n_b, ...) as contiguous (B, C, S) / (B, 2 n_b, S) data.
struct MaskedTensors {
  Tensor x, params;
  MaskLayout layout;
};

inline MaskedTensors prepare_masked(const Tensor& x, const Tensor& params,
                                    std::string_view mask, bool swap, double clamp) {
  GENCORE_CHECK_VALUE(mask == "half" || mask == "alternate",
                      "gencore: mask must be 'half' or 'alternate', got '", mask, "'");
  check_min_dim(x, "x", 2);
  check_floating(x, "x");
  check_same_device(x, "x", params, "params");
  check_same_dtype(x, "x", params, "params");
  GENCORE_CHECK_VALUE(x.size(1) >= 2,
                      "gencore: x must have at least 2 channels/features in dim 1, got shape ",
                      shape(x));
  GENCORE_CHECK_VALUE(!std::isnan(clamp) && clamp >= 0.0 && !std::isinf(clamp),
                      "gencore: clamp must be a finite number >= 0 (0 disables the soft clamp), "
                      "got ",
                      clamp);
  const int64_t spatial =
      x.size(0) == 0 || x.size(1) == 0 ? 1 : x.numel() / (x.size(0) * x.size(1));
  const MaskLayout m = make_mask_layout(x.size(1), spatial, mask == "alternate", swap);
  auto want = vec(x.sizes());
  want[1] = 2 * m.n_b;
  GENCORE_CHECK_VALUE(same_sizes(params.sizes(), want), "gencore: params must have shape ",
                      Shape{want}, " (log_scale and shift of the ", m.n_b,
                      " transformed channels stacked on dim 1), got ", shape(params));
  return {contig(x), contig(params), m};
}

// Validated inputs and freshly allocated outputs of the masked op, for both backends.
struct MaskedForward {
  MaskedTensors mt;
  Tensor y, logdet;
};

inline MaskedForward prepare_masked_forward(const Tensor& x, const Tensor& params,
                                            std::string_view mask, bool swap, double clamp) {
  return {prepare_masked(x, params, mask, swap, clamp), empty(x.sizes(), x),
          zeros({x.size(0)}, x)};
}

struct MaskedBackward {
  MaskedTensors mt;
  Tensor grad_y, grad_logdet;  // contiguous; in x's dtype (grad_logdet may have stride 0)
  Tensor grad_x, grad_params;  // outputs
};

inline MaskedBackward prepare_masked_backward(const Tensor& grad_y,
                                              const Tensor& grad_logdet, const Tensor& x,
                                              const Tensor& params, std::string_view mask,
                                              bool swap, double clamp) {
  MaskedTensors mt = prepare_masked(x, params, mask, swap, clamp);
  check_output_grads(grad_y, grad_logdet, x);
  return {std::move(mt), contig(grad_y), to_dtype(grad_logdet, x.scalar_type()),
          empty(x.sizes(), x), empty(params.sizes(), x)};
}

std::tuple<Tensor, Tensor> masked_affine_coupling_cpu(const Tensor& x,
                                                      const Tensor& params,
                                                      std::string_view mask, bool swap,
                                                      double clamp, bool reverse);
std::tuple<Tensor, Tensor> masked_affine_coupling_backward_cpu(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x,
    const Tensor& params, std::string_view mask, bool swap, double clamp, bool reverse);

}  // namespace coupling
}  // namespace gencore
