// Rational-quadratic spline (gencore::rq_spline): input validation and the views both
// backends read. The per-element math is spline_math.h; each backend (spline_cpu.cpp,
// spline_cuda.cu) walks the elements of x, reads each one's parameter rows in place, and
// sums the log-determinant per batch row in a fixed order.
//
// Shapes: x (B, ...) with E = x.numel() elements; widths and heights x.shape + (K,),
// derivatives x.shape + (K - 1,). Element e (in x's row-major order) reads its K widths at
// widths_data + e * stride (unit stride within the row): a parameter tensor is read in
// place when its leading dims flatten to one stride (a slice of a conditioner's output
// such as params[..., :K] does), else through a contiguous copy.
#pragma once

#include <cmath>
#include <tuple>

#include "common/checks.h"
#include "spline/spline_math.h"

namespace gencore {
namespace spline {

// 1 <= K < 1 / min bin width: the minimum widths alone must not fill the interval.
constexpr int64_t kMaxBins = 999;

inline int64_t bins_of(const Tensor& widths) { return widths.size(widths.dim() - 1); }

inline void check_param(const Tensor& x, const Tensor& p, const char* name, int64_t last) {
  check_same_device(x, "x", p, name);
  check_same_dtype(x, "x", p, name);
  bool ok = p.dim() == x.dim() + 1 && p.size(p.dim() - 1) == last;
  for (int64_t d = 0; ok && d < x.dim(); ++d) ok = p.size(d) == x.size(d);
  if (!ok) {
    auto want = vec(x.sizes());
    want.push_back(last);
    GENCORE_CHECK_VALUE(false, "gencore: ", name, " must have shape x.shape + (", last, ",) = ",
                        Shape{want}, ", got ", shape(p));
  }
}

inline void check_inputs(const Tensor& x, const Tensor& widths, const Tensor& heights,
                         const Tensor& derivatives, double bound) {
  check_min_dim(x, "x", 1);
  check_floating(x, "x");
  GENCORE_CHECK_VALUE(widths.dim() == x.dim() + 1,
                      "gencore: widths must have shape x.shape + (K,) (K bins), got widths.shape=",
                      shape(widths), " and x.shape=", shape(x));
  const int64_t k = bins_of(widths);
  GENCORE_CHECK_VALUE(k >= 1 && k <= kMaxBins, "gencore: the number of bins K = widths.shape[-1] must be in [1, ",
                      kMaxBins, "] (K times the minimum bin width 1e-3 must stay below 1), got ", k);
  check_param(x, widths, "widths", k);
  check_param(x, heights, "heights", k);
  check_param(x, derivatives, "derivatives", k - 1);
  GENCORE_CHECK_VALUE(std::isfinite(bound) && bound > 0.0,
                      "gencore: bound must be a finite number > 0, got ", bound);
  if (x.is_cuda()) {
    check_dtype_supported_cuda(x, "x");
  } else {
    check_dtype_supported_cpu(x, "x");
  }
}

// Element e's parameter row starts at data + e * stride.
struct ParamView {
  Tensor t;
  int64_t stride;
};

inline ParamView param_view(const Tensor& p) {
  const int64_t last = p.dim() - 1, k = p.size(last);
  if (p.numel() > 0 && (k == 1 || p.stride(last) == 1)) {
    bool ok = true, found = false;
    int64_t stride = k, expect = 0;
    for (int64_t d = last - 1; d >= 0 && ok; --d) {
      if (p.size(d) == 1) continue;
      if (!found) {
        stride = p.stride(d);
        found = true;
      } else {
        ok = p.stride(d) == expect;
      }
      expect = p.stride(d) * p.size(d);
    }
    if (ok && stride >= k) return {p, stride};
  }
  return {contig(p), k};
}

inline int64_t row_length(const Tensor& x) { return x.size(0) == 0 ? 0 : x.numel() / x.size(0); }

// What a backend's forward works on.
struct Forward {
  Tensor x;  // contiguous
  ParamView w, h, d;
  int64_t rows, n, k;
  double bound;
  bool reverse;
  Tensor y, logdet;  // outputs: x's shape (contiguous), (B,)
};

inline Forward prepare_forward(const Tensor& x, const Tensor& widths, const Tensor& heights,
                               const Tensor& derivatives, double bound, bool reverse) {
  check_inputs(x, widths, heights, derivatives, bound);
  return {contig(x), param_view(widths), param_view(heights), param_view(derivatives),
          x.size(0), row_length(x), bins_of(widths), bound, reverse,
          empty(x.sizes(), x), zeros({x.size(0)}, x)};
}

struct Backward {
  Forward f;                   // (f.y and f.logdet unused)
  Tensor grad_y, grad_logdet;  // contiguous; grad_logdet in x's dtype, stride possibly 0
  int64_t grad_logdet_stride;
  Tensor grad_x, grad_w, grad_h, grad_d;  // outputs, contiguous
};

inline Backward prepare_backward(const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x,
                                 const Tensor& widths, const Tensor& heights,
                                 const Tensor& derivatives, double bound, bool reverse) {
  check_inputs(x, widths, heights, derivatives, bound);
  check_output_grads(grad_y, grad_logdet, x);
  Forward f{contig(x), param_view(widths), param_view(heights), param_view(derivatives),
            x.size(0), row_length(x), bins_of(widths), bound, reverse, Tensor(), Tensor()};
  const Tensor gl = to_dtype(grad_logdet, x.scalar_type());
  return {std::move(f), contig(grad_y), gl, gl.stride(0), empty(x.sizes(), x),
          empty(widths.sizes(), x), empty(heights.sizes(), x), empty(derivatives.sizes(), x)};
}

template <class Backend>
std::tuple<Tensor, Tensor> rq_spline_impl(const Tensor& x, const Tensor& widths,
                                          const Tensor& heights, const Tensor& derivatives,
                                          double bound, bool reverse) {
  Forward f = prepare_forward(x, widths, heights, derivatives, bound, reverse);
  if (x.numel() > 0) Backend::forward(f);
  return {f.y, f.logdet};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> rq_spline_backward_impl(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x, const Tensor& widths,
    const Tensor& heights, const Tensor& derivatives, double bound, bool reverse) {
  Backward b = prepare_backward(grad_y, grad_logdet, x, widths, heights, derivatives, bound, reverse);
  if (x.numel() > 0) Backend::backward(b);
  return {b.grad_x, b.grad_w, b.grad_h, b.grad_d};
}

}  // namespace spline
}  // namespace gencore
