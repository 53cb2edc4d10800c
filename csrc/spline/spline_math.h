// Per-element math of the rational-quadratic spline op (gencore::rq_spline), shared by the
// CPU and CUDA kernels. Durkan et al. (2019), "Neural Spline Flows", with identity tails.
//
// Parameters of one element: K unnormalized widths u, K heights v, K - 1 interior
// derivatives r. Bin widths p_j = m_w + (1 - K m_w) softmax(u)_j (heights alike with m_h),
// knots x_0 = -B, x_j = -B + 2B (p_0 + ... + p_{j-1}), x_K = B (exactly; y_j alike), knot
// derivatives d_0 = d_K = 1 and d_j = m_d + softplus(r_{j-1}); m_w = m_h = m_d = 1e-3
// (gencore.reference.RQ_MIN_*). Nothing of size K is stored: the softmax's maximum and
// sum are taken in one pass over u, the knots are re-accumulated up to the bin of the
// element, and only the bin's (x_k, w, y_k, h, d_k, d_{k+1}) are kept.
//
// In bin k with t = (x - x_k) / w, s = h / w, g = d_{k+1} + d_k - 2 s, tt = t (1 - t):
//   y      = y_k + h N / Den,    N = s t^2 + d_k tt,    Den = s + g tt
//   dy/dx  = s^2 M / Den^2,      M = d_{k+1} t^2 + 2 s tt + d_k (1 - t)^2
//   L      = log dy/dx (the element's log-determinant, nats)
// Inverse: t solves a t^2 + b t + c = 0 with a = (s - d_k) + r g, b = d_k - r g, c = -s r,
// r = (y - y_k) / h in [0, 1] (Durkan et al.'s coefficients divided by h: free of units, so
// b^2 cannot overflow for a wide bound, as h^2 did from 2B ~ 1e19 in float32). a + b = s > 0,
// so b < 0 implies a > 0: the root in [0, 1] is
// 2c / (-b - sqrt(disc)) when b >= 0 and (-b + sqrt(disc)) / (2a) when b < 0, each free of
// cancellation (Durkan et al. use the first form alone, which cancels when b < 0 and
// 4ac << b^2: a large d_{k+1} near the top of a bin). disc = b^2 - 4ac >= 0 for a
// monotonic spline; rounding below 0 is clamped to 0.
//
// Gradients (both directions from the forward map's partials f_. and L_.): with
// gy = dLoss/d(output), gl = dLoss/d(logdet of the row),
//   forward:  grad_in = gy f_x + gl L_x;      G_theta = gy f_theta + gl L_theta
//   reverse:  q = (gy - gl L_x) / f_x (x = the output);  grad_in = q;
//             G_theta = -q f_theta - gl L_theta
// for theta in (x_k, w, y_k, h, d_k, d_{k+1}) (implicit function theorem: the inverse's
// output moves by -f_theta / f_x; its log-determinant is -L). G then flows to the knots
// (x_k gets G_xk - G_w, x_{k+1} gets G_w; the end knots are constants), through the
// cumulative sum to p and the softmax to u (for knot gradients a at x_k, b at x_{k+1}:
// dLoss/dp_i = 2B (a [i < k] + b [i <= k]) and dLoss/du_i = (1 - K m) sigma_i
// (dLoss/dp_i - sum_j sigma_j dLoss/dp_j)), and to r through the softplus (its sigmoid).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd_math.h"
#include "common/macros.h"

namespace gencore {
namespace spline {

constexpr double kMinBinWidth = 1e-3;
constexpr double kMinBinHeight = 1e-3;
constexpr double kMinDerivative = 1e-3;

// One element's K unnormalized widths (or heights): its softmax max and 1 / sum.
template <typename A>
struct Softmax {
  A max, inv_sum;
};

template <typename A, typename T>
GENCORE_HD Softmax<A> softmax_of(const T* u, int k) {
  A m = static_cast<A>(u[0]);
  for (int j = 1; j < k; ++j) {
    const A v = static_cast<A>(u[j]);
    m = v > m ? v : m;
  }
  A sum = A(0);
  for (int j = 0; j < k; ++j) sum += hd::exp(static_cast<A>(u[j]) - m);
  return {m, A(1) / sum};
}

// softmax_j of one parameter row, recomputed at each call (the CUDA kernels: no per-thread
// array of K values, which would live in local memory).
template <typename A, typename T>
struct LiveSigma {
  const T* u;
  Softmax<A> sm;
  GENCORE_HD A operator()(int j) const { return hd::exp(static_cast<A>(u[j]) - sm.max) * sm.inv_sum; }
};

// softmax_j read from a buffer filled beforehand (the CPU kernel: vectorized exps).
template <typename A>
struct CachedSigma {
  const A* s;
  GENCORE_HD A operator()(int j) const { return s[j]; }
};

// The knots of one parameter row: p_j = lo + span * sigma_j, knots -B + 2B cumsum.
template <typename A, typename Sigma>
struct Knots {
  Sigma sigma;
  int k;
  A lo, span, bound;  // lo = the minimum bin fraction, span = 1 - k lo

  GENCORE_HD A fraction(int j) const { return lo + span * sigma(j); }
  // Knot j + 1 from the cumulative fraction c = p_0 + ... + p_j.
  GENCORE_HD A next_knot(int j, A c) const { return j == k - 1 ? bound : A(2) * bound * c - bound; }
};

template <typename A, typename Sigma>
GENCORE_HD Knots<A, Sigma> knots_from(Sigma sigma, int k, double minimum, A bound) {
  return {sigma, k, static_cast<A>(minimum), A(1) - static_cast<A>(k * minimum), bound};
}

template <typename A, typename T>
GENCORE_HD Knots<A, LiveSigma<A, T>> live_knots(const T* u, int k, double minimum, A bound) {
  return knots_from<A>(LiveSigma<A, T>{u, softmax_of<A>(u, k)}, k, minimum, bound);
}

// The bin of v (the last knot at or below it; the top knot belongs to the last bin) and
// its two knots: v must lie in [-B, B].
template <typename A, typename S>
GENCORE_HD int locate(const Knots<A, S>& kn, A v, A& lo, A& hi) {
  A c = A(0), left = -kn.bound;
  for (int j = 0; j < kn.k; ++j) {
    c += kn.fraction(j);
    const A right = kn.next_knot(j, c);
    if (v < right || j == kn.k - 1) {
      lo = left;
      hi = right;
      return j;
    }
    left = right;
  }
  lo = left;  // not reached (k >= 1)
  hi = kn.bound;
  return kn.k - 1;
}

// Knots `bin` and `bin + 1`.
template <typename A, typename S>
GENCORE_HD void knots_at(const Knots<A, S>& kn, int bin, A& lo, A& hi) {
  A c = A(0), left = -kn.bound;
  for (int j = 0; j < bin; ++j) {
    c += kn.fraction(j);
    left = kn.next_knot(j, c);
  }
  c += kn.fraction(bin);
  lo = left;
  hi = kn.next_knot(bin, c);
}

template <typename A, typename T>
GENCORE_HD A knot_derivative(const T* r, int k, int j) {
  return (j == 0 || j == k) ? A(1) : static_cast<A>(kMinDerivative) + hd::softplus(static_cast<A>(r[j - 1]));
}

// The bin an element falls in, in the coordinates the formulas use.
template <typename A>
struct Bin {
  int k;
  A x0, w, y0, h, d0, d1;
};

template <typename A>
GENCORE_HD A clamp01(A t) {
  return t < A(0) ? A(0) : (t > A(1) ? A(1) : t);
}

// Forward map inside the bin at t: y and L = log dy/dx.
template <typename A>
struct Eval {
  A out, log_deriv, t;
};

template <typename A>
GENCORE_HD A log_deriv_at(const Bin<A>& b, A t) {
  const A s = b.h / b.w, tt = t * (A(1) - t), u = A(1) - t;
  const A den = s + (b.d1 + b.d0 - A(2) * s) * tt;
  const A m = b.d1 * t * t + A(2) * s * tt + b.d0 * u * u;
  return hd::log(s * s * m / (den * den));
}

template <typename A>
GENCORE_HD Eval<A> forward_in_bin(const Bin<A>& b, A x) {
  const A t = clamp01((x - b.x0) / b.w);
  const A s = b.h / b.w, tt = t * (A(1) - t);
  const A den = s + (b.d1 + b.d0 - A(2) * s) * tt;
  const A y = b.y0 + b.h * ((s * t * t + b.d0 * tt) / den);  // (N / Den in [0, 1]: no overflow)
  return {y, log_deriv_at(b, t), t};
}

template <typename A>
GENCORE_HD Eval<A> inverse_in_bin(const Bin<A>& b, A y) {
  const A s = b.h / b.w, g = b.d1 + b.d0 - A(2) * s, r = (y - b.y0) / b.h;
  const A qa = (s - b.d0) + r * g, qb = b.d0 - r * g, qc = -s * r;
  A disc = qb * qb - A(4) * qa * qc;
  disc = disc > A(0) ? disc : A(0);
  const A root = hd::sqrt(disc);
  A t;
  if (qb >= A(0)) {
    const A den = -qb - root;
    t = den < A(0) ? A(2) * qc / den : A(0);
  } else {
    t = (-qb + root) / (A(2) * qa);
  }
  t = clamp01(t);
  return {b.x0 + t * b.w, log_deriv_at(b, t), t};
}

// The partial derivatives of y (f_.) and L (l_.) with respect to the input and the bin.
template <typename A>
struct Partials {
  A fx, fx0, fw, fy0, fh, fd0, fd1;
  A lx, lx0, lw, lh, ld0, ld1;  // (L does not depend on y0)
};

template <typename A>
GENCORE_HD Partials<A> partials_at(const Bin<A>& b, A t) {
  const A w = b.w, h = b.h, d0 = b.d0, d1 = b.d1;
  const A s = h / w, g = d1 + d0 - A(2) * s, u = A(1) - t, tt = t * u;
  const A n = s * t * t + d0 * tt, den = s + g * tt;
  const A m = d1 * t * t + A(2) * s * tt + d0 * u * u;
  const A inv_den = A(1) / den, inv_den2 = inv_den * inv_den, inv_m = A(1) / m, inv_w = A(1) / w;
  Partials<A> p;
  // y in (t, s, h, d0, d1): f_t = w dy/dx.
  const A fx = s * s * m * inv_den2;
  const A f_s = h * (t * t * den - n * (A(1) - A(2) * tt)) * inv_den2;
  const A f_h = n * inv_den;
  p.fd0 = h * tt * (den - n) * inv_den2;
  p.fd1 = -h * n * tt * inv_den2;
  // L in (t, s, d0, d1).
  const A den_t = g * (A(1) - A(2) * t);
  const A m_t = A(2) * d1 * t + A(2) * s * (A(1) - A(2) * t) - A(2) * d0 * u;
  const A l_t = m_t * inv_m - A(2) * den_t * inv_den;
  const A l_s = A(2) / s + A(2) * tt * inv_m - A(2) * (A(1) - A(2) * tt) * inv_den;
  p.ld0 = u * u * inv_m - A(2) * tt * inv_den;
  p.ld1 = t * t * inv_m - A(2) * tt * inv_den;
  // (t, s) -> (x, x0, w, h): t = (x - x0) / w, s = h / w.
  p.fx = fx;
  p.fx0 = -fx;
  p.fw = -t * fx - s * f_s * inv_w;
  p.fy0 = A(1);
  p.fh = f_h + f_s * inv_w;
  p.lx = l_t * inv_w;
  p.lx0 = -p.lx;
  p.lw = -t * p.lx - s * l_s * inv_w;
  p.lh = l_s * inv_w;
  return p;
}

// dLoss/d(bin parameters) and dLoss/d(input) of one element inside [-B, B].
template <typename A>
struct BinGrad {
  A in, x0, w, y0, h, d0, d1;
};

template <typename A>
GENCORE_HD BinGrad<A> bin_grad(const Bin<A>& b, A t, A gy, A gl, bool reverse) {
  const Partials<A> p = partials_at(b, t);
  A cf = gy, cl = gl, in = gy * p.fx + gl * p.lx;
  if (reverse) {
    const A q = (gy - gl * p.lx) / p.fx;
    cf = -q;
    cl = -gl;
    in = q;
  }
  return {in,
          cf * p.fx0 + cl * p.lx0,
          cf * p.fw + cl * p.lw,
          cf * p.fy0,
          cf * p.fh + cl * p.lh,
          cf * p.fd0 + cl * p.ld0,
          cf * p.fd1 + cl * p.ld1};
}

// dLoss/du (K values, written to out[0..K)) of one parameter row whose knots k and k + 1
// receive gradients g_lo and g_hi (the end knots are constants: their gradients drop).
template <typename A, typename S, typename G>
GENCORE_HD void knot_grad_to_logits(const Knots<A, S>& kn, int bin, A g_lo, A g_hi, G* out) {
  const A a = bin >= 1 ? g_lo : A(0);
  const A c = bin + 1 <= kn.k - 1 ? g_hi : A(0);
  // S_j = sum_{i < j} sigma_i at j = bin and bin + 1.
  A s_lo = A(0);
  for (int j = 0; j < bin; ++j) s_lo += kn.sigma(j);
  const A sigma_bin = kn.sigma(bin);
  const A s_hi = s_lo + sigma_bin;
  const A two_b = A(2) * kn.bound;
  const A mean = two_b * (a * s_lo + c * s_hi);
  for (int j = 0; j < kn.k; ++j) {
    const A dp = two_b * ((j < bin ? a : A(0)) + (j <= bin ? c : A(0)));
    const A sj = j == bin ? sigma_bin : kn.sigma(j);
    out[j] = static_cast<G>(kn.span * sj * (dp - mean));
  }
}

// ---- one element, both directions -------------------------------------------------------

// The bin of `v` (an input when !reverse, an output when reverse) from the element's
// knots; false when v lies outside [-B, B] (the identity tails; NaN too).
template <typename A, typename S, typename T>
GENCORE_HD bool find_bin(const Knots<A, S>& kw, const Knots<A, S>& kh, const T* r, A v, bool reverse,
                         Bin<A>& b) {
  const A bound = kw.bound;
  if (!(v >= -bound && v <= bound)) return false;
  A lo, hi;
  if (reverse) {
    b.k = locate(kh, v, lo, hi);
    b.y0 = lo;
    b.h = hi - lo;
    knots_at(kw, b.k, lo, hi);
    b.x0 = lo;
    b.w = hi - lo;
  } else {
    b.k = locate(kw, v, lo, hi);
    b.x0 = lo;
    b.w = hi - lo;
    knots_at(kh, b.k, lo, hi);
    b.y0 = lo;
    b.h = hi - lo;
  }
  b.d0 = knot_derivative<A>(r, kw.k, b.k);
  b.d1 = knot_derivative<A>(r, kw.k, b.k + 1);
  return true;
}

// Output and log-determinant term of one element, given its width and height knots.
template <typename A, typename S, typename T>
GENCORE_HD Eval<A> element_forward(const Knots<A, S>& kw, const Knots<A, S>& kh, const T* r, A v,
                                   bool reverse) {
  Bin<A> b;
  if (!find_bin(kw, kh, r, v, reverse, b)) return {v, A(0), A(0)};
  if (reverse) {
    Eval<A> e = inverse_in_bin(b, v);
    e.log_deriv = -e.log_deriv;
    return e;
  }
  return forward_in_bin(b, v);
}

// Gradients of one element: returns dLoss/dv and writes the K width, K height and K - 1
// derivative gradients (zeros in the tails).
template <typename A, typename S, typename T, typename G>
GENCORE_HD A element_backward(const Knots<A, S>& kw, const Knots<A, S>& kh, const T* r, A v, A gy,
                              A gl, bool reverse, G* gw, G* gh, G* gr) {
  const int k = kw.k;
  Bin<A> b;
  if (!find_bin(kw, kh, r, v, reverse, b)) {
    for (int j = 0; j < k; ++j) gw[j] = gh[j] = static_cast<G>(A(0));
    for (int j = 0; j + 1 < k; ++j) gr[j] = static_cast<G>(A(0));
    return gy;
  }
  const A t = reverse ? inverse_in_bin(b, v).t : clamp01((v - b.x0) / b.w);
  const BinGrad<A> g = bin_grad(b, t, gy, gl, reverse);
  knot_grad_to_logits(kw, b.k, g.x0 - g.w, g.w, gw);
  knot_grad_to_logits(kh, b.k, g.y0 - g.h, g.h, gh);
  for (int j = 0; j + 1 < k; ++j) gr[j] = static_cast<G>(A(0));
  if (b.k >= 1) gr[b.k - 1] = static_cast<G>(g.d0 * hd::sigmoid(static_cast<A>(r[b.k - 1])));
  if (b.k + 1 <= k - 1) gr[b.k] = static_cast<G>(g.d1 * hd::sigmoid(static_cast<A>(r[b.k])));
  return g.in;
}

}  // namespace spline
}  // namespace gencore
