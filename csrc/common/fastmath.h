// Elementary functions written so that GCC vectorizes the loops that call them:
// no libm calls, no branches (selects only), no addressable temporaries. glibc's
// expf/tanhf are scalar calls, which would leave a fused CPU kernel slower than
// ATen's SIMD loops. On the device the CUDA math library is used instead.
//
// exp: Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, exp(r) = 1 + q(r) by a
// polynomial (float: Cephes' minimax, degree 7; double: Taylor, degree 13, truncation
// < 1e-17), and the factor 2^n built from its bit pattern. Range: exp overflows to
// +inf above ln(max) and returns 0 below 2^-125 (float) / 2^-1021 (double), i.e.
// values that would be subnormal are flushed to zero. NaN propagates.
// tests/test_fastmath.py measures the error against the C library (a few ulp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Forced inline: GCC's size limits otherwise keep exp out of line in a loop that calls it
// more than once (the learned-prior KL of reparam_cpu.cpp), and a call per element
// leaves the loop scalar (measured: 8x slower).
#if defined(__GNUC__)
#define GENCORE_FASTMATH_INLINE inline __attribute__((always_inline))
#else
#define GENCORE_FASTMATH_INLINE inline
#endif

namespace gencore {
namespace fastmath {

template <typename T>
struct ExpTraits;

template <>
struct ExpTraits<float> {
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kHi = 88.72283905206835f;  // ln(FLT_MAX): above, +inf
  static constexpr float kLo = -86.64f;             // ~ln(2^-125): below, 0
  static constexpr float kRound = 12582912.0f;      // 1.5 * 2^23: round to nearest
};

template <>
struct ExpTraits<double> {
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kLog2e = 1.44269504088896338700e+00;
  static constexpr double kHi = 709.782712893384;       // ln(DBL_MAX)
  static constexpr double kLo = -707.7;                 // ~ln(2^-1021)
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
};

// 2^(n-1) for an integral n in [-124, 128], n given as a float. The float path
// converts (n + 126) * 2^23 to an int32 bit pattern: a float multiply-add and one
// conversion, all 8-wide on AVX (which has no 256-bit integer arithmetic).
GENCORE_FASTMATH_INLINE float pow2_half(float n) {
  return __builtin_bit_cast(float, static_cast<int32_t>((n + 126.0f) * 8388608.0f));
}

// double: the rounding trick left n in the low bits of (n + 1.5 * 2^52); int64 add
// and shift (SSE2) build the exponent field.
GENCORE_FASTMATH_INLINE double pow2_half(double n) {
  const int64_t k = __builtin_bit_cast(int64_t, n + ExpTraits<double>::kRound) -
                    __builtin_bit_cast(int64_t, ExpTraits<double>::kRound);
  return __builtin_bit_cast(double, (k + 1022) << 52);
}

// q(r) = exp(r) - 1 on |r| <= ln2/2, computed without cancellation.
GENCORE_FASTMATH_INLINE float expm1_reduced(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return r + r * r * p;
}

GENCORE_FASTMATH_INLINE double expm1_reduced(double r) {
  // sum_{k=1}^{13} r^k / k!, by Horner from the highest term.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  return r + r * r * p;
}

// exp(x) = 2 * half * (1 + q): half = 2^(n-1) keeps n = 128 (x near ln(FLT_MAX))
// inside the exponent range.
template <typename T>
struct ExpParts {
  T half;
  T q;
};

// x must lie in [kLo, kHi] (and not be NaN).
template <typename T>
GENCORE_FASTMATH_INLINE ExpParts<T> exp_parts_in_range(T x) {
  using Tr = ExpTraits<T>;
  const T n = (x * Tr::kLog2e + Tr::kRound) - Tr::kRound;  // round to nearest
  const T r = (x - n * Tr::kLn2Hi) - n * Tr::kLn2Lo;
  return {pow2_half(n), expm1_reduced(r)};
}

template <typename T>
GENCORE_FASTMATH_INLINE ExpParts<T> exp_parts(T x) {
  using Tr = ExpTraits<T>;
  // NaN fails both comparisons and becomes kLo here: the reduction never sees it.
  T xc = x > Tr::kLo ? x : Tr::kLo;
  xc = xc < Tr::kHi ? xc : Tr::kHi;
  return exp_parts_in_range(xc);
}

template <typename T>
GENCORE_FASTMATH_INLINE T exp(T x) {
  const ExpParts<T> e = exp_parts(x);
  T y = (e.half + e.half * e.q) * T(2);
  y = x > ExpTraits<T>::kHi ? std::numeric_limits<T>::infinity() : y;
  y = x < ExpTraits<T>::kLo ? T(0) : y;
  return x == x ? y : x;
}

template <typename T>
GENCORE_FASTMATH_INLINE T expm1(T x) {
  const ExpParts<T> e = exp_parts(x);
  const T scale = e.half * T(2);
  T y = scale * e.q + (scale - T(1));
  y = x > ExpTraits<T>::kHi ? std::numeric_limits<T>::infinity() : y;
  y = x < ExpTraits<T>::kLo ? T(-1) : y;
  return x == x ? y : x;
}

template <typename T>
struct TanhTraits;
template <>
struct TanhTraits<float> {
  static constexpr float kSaturate = 9.0f;  // 1 - tanh(9) < FLT_EPSILON / 2
};
template <>
struct TanhTraits<double> {
  static constexpr double kSaturate = 19.5;  // 1 - tanh(19.5) < DBL_EPSILON / 2
};

// tanh(a) = -expm1(-2|a|) / (2 + expm1(-2|a|)) with the sign restored: accurate near 0
// (no 1 - t cancellation). |a| is capped where tanh rounds to 1, so the reduced
// argument stays in range and exp's edge cases need no handling here.
template <typename T>
GENCORE_FASTMATH_INLINE T tanh(T a) {
  T m = a < T(0) ? -a : a;
  m = m < TanhTraits<T>::kSaturate ? m : TanhTraits<T>::kSaturate;  // NaN -> cap
  const ExpParts<T> p = exp_parts_in_range(T(-2) * m);
  const T scale = p.half * T(2);
  const T e = scale * p.q + (scale - T(1));  // expm1(-2m)
  const T t = -e / (T(2) + e);
  return a == a ? (a < T(0) ? -t : t) : a;
}

// log(1 + e) for e in [0, 1]: 2 atanh(u) with u = e / (2 + e) in [0, 1/3], by its series
// 2u sum_k u^2k / (2k + 1), truncated where the next term is below the dtype's rounding
// (float: 8 terms, relative truncation < (1/9)^8 / 17 = 1.4e-9; double: 16 terms,
// < (1/9)^16 / 33 = 1.6e-17). Division and multiply-adds only: it vectorizes.
GENCORE_FASTMATH_INLINE float log1p_unit(float e) {
  const float u = e / (2.0f + e), v = u * u;
  float p = 1.0f / 15.0f;
  p = p * v + 1.0f / 13.0f;
  p = p * v + 1.0f / 11.0f;
  p = p * v + 1.0f / 9.0f;
  p = p * v + 1.0f / 7.0f;
  p = p * v + 1.0f / 5.0f;
  p = p * v + 1.0f / 3.0f;
  return 2.0f * u + 2.0f * u * v * p;
}

GENCORE_FASTMATH_INLINE double log1p_unit(double e) {
  const double u = e / (2.0 + e), v = u * u;
  double p = 1.0 / 31.0;
  p = p * v + 1.0 / 29.0;
  p = p * v + 1.0 / 27.0;
  p = p * v + 1.0 / 25.0;
  p = p * v + 1.0 / 23.0;
  p = p * v + 1.0 / 21.0;
  p = p * v + 1.0 / 19.0;
  p = p * v + 1.0 / 17.0;
  p = p * v + 1.0 / 15.0;
  p = p * v + 1.0 / 13.0;
  p = p * v + 1.0 / 11.0;
  p = p * v + 1.0 / 9.0;
  p = p * v + 1.0 / 7.0;
  p = p * v + 1.0 / 5.0;
  p = p * v + 1.0 / 3.0;
  return 2.0 * u + 2.0 * u * v * p;
}

// log(x) = k ln 2 + log(m) for x = 2^k m, m in [1, 2), log(m) = log1p_unit(m - 1): an
// absolute error of a few ulps of the result's size (k ln 2 and log m may cancel for x just
// below 1). Zero, subnormal, negative, infinite and NaN inputs go to std::log.
GENCORE_FASTMATH_INLINE float log(float x) {
  if (!(x >= 1.17549435e-38f && x <= 3.40282347e38f)) return std::log(x);
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  const int k = static_cast<int>(b >> 23) - 127;
  b = (b & 0x7fffffu) | 0x3f800000u;
  float m;
  std::memcpy(&m, &b, sizeof m);
  return static_cast<float>(k) * 0.693147180559945309f + log1p_unit(m - 1.0f);
}

GENCORE_FASTMATH_INLINE double log(double x) {
  if (!(x >= 2.2250738585072014e-308 && x <= 1.7976931348623157e308)) return std::log(x);
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  const int k = static_cast<int>(b >> 52) - 1023;
  b = (b & 0xfffffffffffffull) | 0x3ff0000000000000ull;
  double m;
  std::memcpy(&m, &b, sizeof m);
  return static_cast<double>(k) * 0.693147180559945309 + log1p_unit(m - 1.0);
}

// softplus(x) = log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|)): no overflow at any x,
// exact to rounding where exp(-|x|) underflows. NaN propagates (through exp).
template <typename T>
GENCORE_FASTMATH_INLINE T softplus(T x) {
  const T m = x < T(0) ? -x : x;
  return (x > T(0) ? x : T(0)) + log1p_unit(exp(-m));
}

// sigmoid(x) = 1 / (1 + exp(-x)), from e = exp(-|x|) <= 1: no overflow, and sigmoid(x)
// for x < 0 is e / (1 + e), accurate where it is tiny. NaN propagates.
template <typename T>
GENCORE_FASTMATH_INLINE T sigmoid(T x) {
  const T m = x < T(0) ? -x : x;
  const T e = exp(-m);
  const T r = T(1) / (T(1) + e);
  return x < T(0) ? e * r : r;
}

}  // namespace fastmath
}  // namespace gencore
