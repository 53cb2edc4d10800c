// Elementary functions for math shared by host and device code (GENCORE_HD): CUDA's
// builtins in device code, fastmath's vectorizable ones (or the standard library's) on the
// host. One place for the choice, used by the per-element math of the coupling,
// reparameterization and spline ops.
#pragma once

#include <cmath>

#include "common/fastmath.h"
#include "common/macros.h"

namespace gencore {
namespace hd {

template <typename T>
GENCORE_HD T exp(T v) {
#if defined(__CUDA_ARCH__)
  return ::exp(v);
#else
  return fastmath::exp(v);
#endif
}

template <typename T>
GENCORE_HD T log(T v) {
#if defined(__CUDA_ARCH__)
  return ::log(v);
#else
  return fastmath::log(v);
#endif
}

template <typename T>
GENCORE_HD T sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(v);
#else
  return std::sqrt(v);
#endif
}

template <typename T>
GENCORE_HD T tanh(T v) {
#if defined(__CUDA_ARCH__)
  return ::tanh(v);
#else
  return fastmath::tanh(v);
#endif
}

// log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)): no overflow at any v.
template <typename T>
GENCORE_HD T softplus(T v) {
#if defined(__CUDA_ARCH__)
  const T e = ::exp(-(v < T(0) ? -v : v));
  return (v > T(0) ? v : T(0)) + ::log1p(e);
#else
  return fastmath::softplus(v);
#endif
}

// 1 / (1 + exp(-v)), from e = exp(-|v|) <= 1: no overflow, accurate where it is tiny.
template <typename T>
GENCORE_HD T sigmoid(T v) {
#if defined(__CUDA_ARCH__)
  const T e = ::exp(-(v < T(0) ? -v : v));
  return v >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
#else
  return fastmath::sigmoid(v);
#endif
}

}  // namespace hd
}  // namespace gencore
