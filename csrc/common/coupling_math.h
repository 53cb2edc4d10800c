// Per-element math of the affine coupling op, shared by the CPU and CUDA kernels.
//
//   s  = clamp * tanh(log_scale / clamp)   (clamp > 0),   s = log_scale otherwise
//   forward:  y = x * exp(s) + shift,        logdet = +sum(s)
//   reverse:  y = (x - shift) * exp(-s),     logdet = -sum(s)
//
// Backward, with sigma = +1 (forward) or -1 (reverse), e = exp(sigma * s),
// u = x (forward) or x - shift (reverse), gy = dL/dy, gl = dL/dlogdet of the row:
//   dL/dx         = gy * e
//   dL/dlog_scale = sigma * (gy * u * e + gl) * ds/dlog_scale,
//   dL/dshift     = gy (forward), -dL/dx (reverse): formed by the autograd wrapper,
//                   so the kernel writes two tensors, not three.
//   ds/dlog_scale = 1 - tanh^2(log_scale / clamp)  (clamp > 0), 1 otherwise.
// Nothing is saved from the forward but its inputs: s and e are recomputed.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/fastmath.h"
#include "common/hd_math.h"
#include "common/macros.h"

namespace gencore {
namespace coupling {

// Channel layout of the masked op (gencore::masked_affine_coupling): x is (B, C, S),
// S = prod of the dims after the channel dim (1 for vectors). The n_b transformed
// channels are tr_start + j * tr_step (j < n_b); the others pass through. params is
// (B, 2 n_b, S): log_scale in channels [0, n_b), shift in [n_b, 2 n_b).
//   "half":      identity = the first C / 2 channels (swap: the last C - C / 2)
//   "alternate": identity = the even channels (swap: the odd ones)
struct MaskLayout {
  int64_t channels, spatial, n_b, tr_start, tr_step;
};

inline MaskLayout make_mask_layout(int64_t channels, int64_t spatial, bool alternate, bool swap) {
  if (alternate) {
    const int64_t start = swap ? 0 : 1;  // transformed: the odd channels, or the even ones
    return {channels, spatial, (channels - start + 1) / 2, start, 2};
  }
  const int64_t cut = channels / 2;
  return {channels, spatial, swap ? cut : channels - cut, swap ? 0 : cut, 1};
}

// Element k of a (C, S) row lies in channel c = k / S: its offset in the log_scale (and
// shift) half of the row's params when c is transformed, else -1 (a copied element).
GENCORE_HD int64_t param_index(const MaskLayout& m, int64_t k) {
  const int64_t c = k / m.spatial;
  const int64_t d = c - m.tr_start;
  if (d < 0 || d % m.tr_step != 0 || d / m.tr_step >= m.n_b) return -1;
  return (d / m.tr_step) * m.spatial + (k - c * m.spatial);
}

// Values are returned in small structs, not through pointers: an addressable local
// inside an `omp simd` loop stops GCC from vectorizing it.
template <typename T>
struct SoftClamp {
  T s;   // clamped log-scale
  T ds;  // ds / dlog_scale
};

// kClamped (clamp > 0) is a compile-time switch so the element loops have no branch.
template <typename T, bool kClamped>
GENCORE_HD SoftClamp<T> soft_clamp(T log_scale, T clamp, T inv_clamp) {
  if (kClamped) {
    const T t = hd::tanh(log_scale * inv_clamp);
    return {clamp * t, T(1) - t * t};
  }
  return {log_scale, T(1)};
}

template <typename T>
struct ForwardResult {
  T y;
  T logdet;  // this element's term of the log-determinant: +s or -s
};

// The transform for a given s (the launchers may compute s in a separate pass).
template <typename T, bool kReverse>
GENCORE_HD ForwardResult<T> coupling_forward_given_s(T x, T s, T shift) {
  if (kReverse) return {(x - shift) * hd::exp(-s), -s};
  return {x * hd::exp(s) + shift, s};
}

template <typename T, bool kReverse, bool kClamped>
GENCORE_HD ForwardResult<T> coupling_forward(T x, T log_scale, T shift, T clamp, T inv_clamp) {
  const T s = soft_clamp<T, kClamped>(log_scale, clamp, inv_clamp).s;
  return coupling_forward_given_s<T, kReverse>(x, s, shift);
}

template <typename T>
struct BackwardResult {
  T grad_x;
  T grad_log_scale;
};

template <typename T, bool kReverse>
GENCORE_HD BackwardResult<T> coupling_backward_given_s(T gy, T gl, T x, SoftClamp<T> sc,
                                                       T shift) {
  const T e = hd::exp(kReverse ? -sc.s : sc.s);
  const T u = kReverse ? x - shift : x;
  const T gxe = gy * e;
  const T gs = gxe * u + gl;
  return {gxe, (kReverse ? -gs : gs) * sc.ds};
}

template <typename T, bool kReverse, bool kClamped>
GENCORE_HD BackwardResult<T> coupling_backward(T gy, T gl, T x, T log_scale, T shift, T clamp,
                                               T inv_clamp) {
  const SoftClamp<T> sc = soft_clamp<T, kClamped>(log_scale, clamp, inv_clamp);
  return coupling_backward_given_s<T, kReverse>(gy, gl, x, sc, shift);
}

}  // namespace coupling
}  // namespace gencore
