// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC'11) and the Box-Muller transform to standard normals, written once for host and
// device. The CPU and CUDA kernels call exactly these functions, so one (seed, offset)
// gives the same normals on both (up to the rounding of fused multiply-adds).
//
// Stream layout of gencore's samplers. rng_state = (seed, offset), two int64. For
// element `col` of row `row` of sample `sample`:
//   key     = (lo32(seed), hi32(seed) ^ hi32(offset))
//   counter = (col / 4, row, sample, lo32(offset))
//   eps     = normal4(philox(counter, key))[col % 4]
// so each counter yields the normals of 4 consecutive columns, every element has its
// own counter, and nothing about the stream depends on threads, tiles or the device.
//
// Normals: the top 23 bits k of each word give u = (k + 1/2) / 2^23 in (0, 1), exact in
// float (2k + 1 < 2^24) and double; words (0, 1) and (2, 3) are Box-Muller pairs
//   n0 = r cos(2 pi u1), n1 = r sin(2 pi u1), r = sqrt(-2 ln u0)
// with |n| <= sqrt(-2 ln 2^-24) = 5.77 (a normal exceeds it with probability 8e-9). ln and sincos are polynomial (no libm calls) so
// the CPU loops vectorize and the device runs the same arithmetic:
//   ln: u = m 2^e, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1), series
//       in s^2 <= 0.0295 (float: 6 terms, double: 12 terms);
//   sincos(2 pi u): q = round(4u), r = u - q/4 in [-1/8, 1/8] (exact), theta = 2 pi r,
//       minimax (float, Cephes) / Taylor (double) polynomials on |theta| <= pi/4, then
//       the quadrant q rotates (sin, cos).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd_math.h"
#include "common/macros.h"

namespace gencore {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments

struct U4 {
  uint32_t x[4];
};

GENCORE_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds: a bijection of the 128-bit counter under the 64-bit key.
GENCORE_HD U4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                            uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c0, hi0, lo0);
    mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return U4{{c0, c1, c2, c3}};
}

// (seed, offset) -> key words and the fourth counter word; see the header comment.
struct Stream {
  uint32_t k0, k1, c3;
};

GENCORE_HD Stream make_stream(int64_t seed, int64_t offset) {
  const uint64_t s = static_cast<uint64_t>(seed), o = static_cast<uint64_t>(offset);
  return Stream{static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32) ^ static_cast<uint32_t>(o >> 32),
                static_cast<uint32_t>(o)};
}

// ---- uniform and normal transforms -------------------------------------------------

// u = (top 23 bits of w + 1/2) / 2^23, in (0, 1); exact in float and double.
template <typename A>
GENCORE_HD A uniform23(uint32_t w) {
  return (static_cast<A>(static_cast<int32_t>(w >> 9)) + A(0.5)) * A(1.1920928955078125e-07);
}

GENCORE_HD uint32_t bits_of(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  return __builtin_bit_cast(uint32_t, v);
#endif
}
GENCORE_HD float float_of(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  return __builtin_bit_cast(float, b);
#endif
}
GENCORE_HD uint64_t bits_of(double v) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  return __builtin_bit_cast(uint64_t, v);
#endif
}
GENCORE_HD double double_of(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  return __builtin_bit_cast(double, b);
#endif
}

// Splits u > 0 (normal, not subnormal) into m in [sqrt(1/2), sqrt(2)) and e with u = m 2^e.
GENCORE_HD void split_log(float u, float& m, float& e) {
  const uint32_t b = bits_of(u);
  float mm = float_of((b & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  float ee = static_cast<float>(static_cast<int32_t>(b >> 23) - 127);
  const bool big = mm > 1.41421356237309505f;
  mm = big ? mm * 0.5f : mm;
  ee = big ? ee + 1.0f : ee;
  m = mm;
  e = ee;
}
GENCORE_HD void split_log(double u, double& m, double& e) {
  const uint64_t b = bits_of(u);
  double mm = double_of((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  double ee = static_cast<double>(static_cast<int64_t>(b >> 52) - 1023);
  const bool big = mm > 1.41421356237309505;
  mm = big ? mm * 0.5 : mm;
  ee = big ? ee + 1.0 : ee;
  m = mm;
  e = ee;
}

// ln(m) / (2 s) - 1 as a series in t = s^2: sum_{k>=1} t^k / (2k + 1).
GENCORE_HD float atanh_series(float t) {
  float p = 1.0f / 13.0f;
  p = p * t + 1.0f / 11.0f;
  p = p * t + 1.0f / 9.0f;
  p = p * t + 1.0f / 7.0f;
  p = p * t + 1.0f / 5.0f;
  p = p * t + 1.0f / 3.0f;
  return p * t;
}
GENCORE_HD double atanh_series(double t) {
  double p = 1.0 / 25.0;
  p = p * t + 1.0 / 23.0;
  p = p * t + 1.0 / 21.0;
  p = p * t + 1.0 / 19.0;
  p = p * t + 1.0 / 17.0;
  p = p * t + 1.0 / 15.0;
  p = p * t + 1.0 / 13.0;
  p = p * t + 1.0 / 11.0;
  p = p * t + 1.0 / 9.0;
  p = p * t + 1.0 / 7.0;
  p = p * t + 1.0 / 5.0;
  p = p * t + 1.0 / 3.0;
  return p * t;
}

// Natural log of a positive normal number (the uniforms above), branch-free.
template <typename A>
GENCORE_HD A log_positive(A u) {
  A m, e;
  split_log(u, m, e);
  const A s = (m - A(1)) / (m + A(1));
  const A lnm = A(2) * s + A(2) * s * atanh_series(s * s);
  return e * A(0.693147180559945309417) + lnm;
}

// sin and cos of theta, |theta| <= pi/4.
GENCORE_HD void sincos_reduced(float th, float& s, float& c) {
  const float t = th * th;
  s = th + th * t * ((-1.9515295891e-4f * t + 8.3321608736e-3f) * t - 1.6666654611e-1f);
  c = 1.0f - 0.5f * t + t * t * ((2.443315711809948e-5f * t - 1.388731625493765e-3f) * t +
                                 4.166664568298827e-2f);
}
GENCORE_HD void sincos_reduced(double th, double& s, double& c) {
  const double t = th * th;
  // Taylor to theta^15 / theta^16: truncation < 5e-17 on |theta| <= pi/4.
  double ps = -1.0 / 1307674368000.0;
  ps = ps * t + 1.0 / 6227020800.0;
  ps = ps * t - 1.0 / 39916800.0;
  ps = ps * t + 1.0 / 362880.0;
  ps = ps * t - 1.0 / 5040.0;
  ps = ps * t + 1.0 / 120.0;
  ps = ps * t - 1.0 / 6.0;
  s = th + th * t * ps;
  double pc = 1.0 / 20922789888000.0;
  pc = pc * t - 1.0 / 87178291200.0;
  pc = pc * t + 1.0 / 479001600.0;
  pc = pc * t - 1.0 / 3628800.0;
  pc = pc * t + 1.0 / 40320.0;
  pc = pc * t - 1.0 / 720.0;
  pc = pc * t + 1.0 / 24.0;
  c = 1.0 - 0.5 * t + t * t * pc;
}

// sin(2 pi u) and cos(2 pi u) for u in [0, 1].
template <typename A>
GENCORE_HD void sincos_2pi(A u, A& s, A& c) {
  const int q = static_cast<int>(u * A(4) + A(0.5));  // round(4u) in 0..4
  const A r = u - static_cast<A>(q) * A(0.25);           // exact, |r| <= 1/8
  A sr, cr;
  sincos_reduced(r * A(6.28318530717958647693), sr, cr);
  const int k = q & 3;
  // Rotate by k quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s).
  const A s1 = (k & 1) ? cr : sr;
  const A c1 = (k & 1) ? sr : cr;
  s = (k & 2) ? -s1 : s1;
  c = ((k + 1) & 2) ? -c1 : c1;
}

template <typename A>
struct Normal4 {
  A n[4];
};

// Four standard normals from one Philox output (two Box-Muller pairs).
template <typename A>
GENCORE_HD Normal4<A> box_muller4(const U4& w) {
  Normal4<A> out;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int p = 0; p < 2; ++p) {
    const A u0 = uniform23<A>(w.x[2 * p]);
    const A u1 = uniform23<A>(w.x[2 * p + 1]);
    const A r = hd::sqrt(A(-2) * log_positive(u0));
    A s, c;
    sincos_2pi(u1, s, c);
    out.n[2 * p] = r * c;
    out.n[2 * p + 1] = r * s;
  }
  return out;
}

// The normals of columns [4 g, 4 g + 4) of (row, sample) in stream `st`.
template <typename A>
GENCORE_HD Normal4<A> normals_at(const Stream& st, uint64_t g, uint64_t row, uint64_t sample) {
  return box_muller4<A>(philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(row),
                                      static_cast<uint32_t>(sample), st.c3, st.k0, st.k1));
}

}  // namespace philox
}  // namespace gencore
