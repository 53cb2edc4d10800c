// Reparameterized Gaussian sampling with a fused KL: input validation, output
// allocation, the per-coordinate KL terms and the entry points of both backends.
//
//   z[s, b, j] = mu[b, j] + exp(logvar[b, j] / 2) * eps[s, b, j]
//   kl[b]      = 1/2 sum_j (e^x - 1 - x + (mu - pm)^2 e^-plv),   x = logvar - plv
//                = KL(N(mu, e^logvar) || N(pm, e^plv)); without a prior pm = plv = 0,
//                i.e. 1/2 sum_j (mu^2 + e^logvar - 1 - logvar) = KL(q || N(0, I))
//   log_q[s,b] = -1/2 sum_j (eps^2 + logvar + ln 2 pi)                log q(z | mu, logvar)
//
// eps comes from Philox4x32-10 at (seed, offset) = rng_state (common/philox.h) and is
// regenerated in backward, never stored. n_samples = 0 means no sample dimension.
// e^x - 1 - x is taken from a Taylor polynomial on |x| <= ln2/2, where the direct form
// cancels (x = 1e-3 would lose 3 of float's 7 digits), and from exp elsewhere; nothing
// overflows for |logvar - plv| up to 80 (float) and (mu - pm)^2 e^-plv is 0 when mu = pm
// even where e^-plv overflows.
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/macros.h"

namespace gencore {
namespace reparam {

// |x| <= kSmallX: e^x - 1 - x from its Taylor series (ln 2 / 2: the range of the exp
// polynomials' reduced argument, common/fastmath.h).
constexpr double kSmallX = 0.34657359027997264;

// e^x - 1 - x = x^2 (1/2! + x/3! + x^2/4! + ...) for |x| <= kSmallX. Terms up to x^8
// (float math: truncation < 4e-9 relative) or x^15 (double: < 3e-19 relative).
template <typename A>
GENCORE_HD A expm1mx_series(A x) {
  A p;
  if (sizeof(A) == 8) {
    p = A(1.0 / 20922789888000.0);
    p = p * x + A(1.0 / 1307674368000.0);
    p = p * x + A(1.0 / 87178291200.0);
    p = p * x + A(1.0 / 6227020800.0);
    p = p * x + A(1.0 / 479001600.0);
    p = p * x + A(1.0 / 39916800.0);
    p = p * x + A(1.0 / 3628800.0);
    p = p * x + A(1.0 / 362880.0);
  } else {
    p = A(1.0 / 362880.0);
  }
  p = p * x + A(1.0 / 40320.0);
  p = p * x + A(1.0 / 5040.0);
  p = p * x + A(1.0 / 720.0);
  p = p * x + A(1.0 / 120.0);
  p = p * x + A(1.0 / 24.0);
  p = p * x + A(1.0 / 6.0);
  p = p * x + A(0.5);
  return x * x * p;
}

// e^x - 1 - x given ex = e^x (each backend's exp): a select, so CPU loops vectorize.
template <typename A>
GENCORE_HD A expm1mx(A x, A ex) {
  const A small = expm1mx_series(x);
  const A big = (ex - A(1)) - x;
  return (x <= A(kSmallX) && x >= A(-kSmallX)) ? small : big;
}

// (mu - pm)^2 e^-plv given d = mu - pm and w = e^-plv: 0 when d = 0, also where w = inf.
template <typename A>
GENCORE_HD A sq_scaled(A d, A w) {
  return d == A(0) ? A(0) : d * d * w;
}

// d e^-plv, 0 when d = 0 (the KL's gradient in mu).
template <typename A>
GENCORE_HD A scaled(A d, A w) {
  return d == A(0) ? A(0) : d * w;
}

inline int64_t row_length(const Tensor& mu) {
  return mu.size(0) == 0 ? 0 : mu.numel() / mu.size(0);
}

inline void check_reparameterize_inputs(const Tensor& mu, const Tensor& logvar,
                                        const Tensor& rng_state, int64_t n_samples) {
  check_min_dim(mu, "mu", 1);
  check_floating(mu, "mu");
  check_same_shape(mu, "mu", logvar, "logvar");
  check_same_device(mu, "mu", logvar, "logvar");
  check_same_dtype(mu, "mu", logvar, "logvar");
  GENCORE_CHECK_TYPE(rng_state.scalar_type() == kLong, "gencore: rng_state must be int64, got ",
                     dtype_name(rng_state.scalar_type()));
  GENCORE_CHECK_VALUE(rng_state.dim() == 1 && rng_state.size(0) == 2,
                      "gencore: rng_state must have shape (2,) = (seed, offset), got ",
                      shape(rng_state));
  check_same_device(mu, "mu", rng_state, "rng_state");
  GENCORE_CHECK_VALUE(n_samples >= 0 && n_samples <= 0xFFFFFFFFLL,
                      "gencore: n_samples must be >= 1 (or None), got ", n_samples);
  // Each element owns a Philox counter (column / 4, row, sample, offset): 32 bits each.
  GENCORE_CHECK_VALUE(mu.size(0) <= 0xFFFFFFFFLL && row_length(mu) / 4 <= 0xFFFFFFFFLL,
                      "gencore: reparameterize supports at most 2^32 rows and 2^34 elements per "
                      "row, "
                      "got mu.shape=", shape(mu));
}

// The prior N(prior_mu, e^prior_logvar): both given (mu's shape, dtype and device) or
// neither (N(0, I)); the Python wrapper fills a missing one with zeros.
inline bool check_prior(const Tensor& mu, const std::optional<Tensor>& prior_mu,
                        const std::optional<Tensor>& prior_logvar) {
  GENCORE_CHECK_VALUE(prior_mu.has_value() == prior_logvar.has_value(),
                      "gencore: prior_mu and prior_logvar must be given together, got only ",
                      prior_mu.has_value() ? "prior_mu" : "prior_logvar");
  if (!prior_mu.has_value()) return false;
  for (const auto* p : {&*prior_mu, &*prior_logvar}) {
    const char* name = p == &*prior_mu ? "prior_mu" : "prior_logvar";
    check_same_shape(mu, "mu", *p, name);
    check_same_device(mu, "mu", *p, name);
    check_same_dtype(mu, "mu", *p, name);
  }
  return true;
}

struct Tensors {
  Tensor mu, logvar, rng_state;  // contiguous
  Tensor prior_mu, prior_logvar;  // contiguous, or undefined (N(0, I))
  Tensor z, kl, log_q;           // outputs; log_q is (0,) unless requested
  bool has_prior() const { return prior_mu.defined(); }
};

inline Tensors prepare_forward(const Tensor& mu, const Tensor& logvar,
                               const Tensor& rng_state, int64_t n_samples, bool with_log_q,
                               const std::optional<Tensor>& prior_mu,
                               const std::optional<Tensor>& prior_logvar) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
  const bool prior = check_prior(mu, prior_mu, prior_logvar);
  Tensors t{contig(mu), contig(logvar), contig(rng_state), {}, {}, {}, {}, {}};
  if (prior) {
    t.prior_mu = contig(*prior_mu);
    t.prior_logvar = contig(*prior_logvar);
  }
  std::vector<int64_t> zshape;
  if (n_samples > 0) zshape.push_back(n_samples);
  for (auto s : mu.sizes()) zshape.push_back(s);
  t.z = empty(zshape, t.mu);
  t.kl = empty({mu.size(0)}, t.mu);
  if (with_log_q) {
    t.log_q = n_samples > 0 ? empty({n_samples, mu.size(0)}, t.mu) : empty({mu.size(0)}, t.mu);
  } else {
    t.log_q = empty({0}, t.mu);
  }
  return t;
}

struct BackwardTensors {
  Tensor grad_z, grad_kl, grad_log_q, mu, logvar, rng_state;  // contiguous, mu's dtype
  Tensor prior_mu, prior_logvar;                               // contiguous, or undefined
  Tensor grad_mu, grad_logvar;                                 // outputs
  Tensor grad_prior_mu, grad_prior_logvar;                     // outputs; (0,) without prior
  bool has_prior() const { return prior_mu.defined(); }
};

inline BackwardTensors prepare_backward(const Tensor& grad_z, const Tensor& grad_kl,
                                        const Tensor& grad_log_q, const Tensor& mu,
                                        const Tensor& logvar, const Tensor& rng_state,
                                        int64_t n_samples,
                                        const std::optional<Tensor>& prior_mu,
                                        const std::optional<Tensor>& prior_logvar) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
  const bool prior = check_prior(mu, prior_mu, prior_logvar);
  const int64_t S = n_samples > 0 ? n_samples : 1;
  GENCORE_CHECK_VALUE(grad_z.numel() == S * mu.numel() &&
                      grad_z.dim() == mu.dim() + (n_samples > 0 ? 1 : 0),
                      "gencore: grad_z must have the shape of z, got ", shape(grad_z));
  GENCORE_CHECK_VALUE(grad_kl.dim() == 1 && grad_kl.size(0) == mu.size(0),
                      "gencore: grad_kl must have shape (B,), got ", shape(grad_kl));
  GENCORE_CHECK_VALUE(grad_log_q.numel() == 0 || grad_log_q.numel() == S * mu.size(0),
                      "gencore: grad_log_q must have the shape of log_q (or be empty), got ",
                      shape(grad_log_q));
  check_same_device(mu, "mu", grad_z, "grad_z");
  check_same_device(mu, "mu", grad_kl, "grad_kl");
  check_same_device(mu, "mu", grad_log_q, "grad_log_q");
  const auto st = mu.scalar_type();
  BackwardTensors t{to_contig(grad_z, st), to_contig(grad_kl, st),
                    to_contig(grad_log_q, st), contig(mu), contig(logvar),
                    contig(rng_state), {}, {}, {}, {}, {}, {}};
  t.grad_mu = empty(t.mu.sizes(), t.mu);
  t.grad_logvar = empty(t.mu.sizes(), t.mu);
  if (prior) {
    t.prior_mu = contig(*prior_mu);
    t.prior_logvar = contig(*prior_logvar);
    t.grad_prior_mu = empty(t.mu.sizes(), t.mu);
    t.grad_prior_logvar = empty(t.mu.sizes(), t.mu);
  } else {
    t.grad_prior_mu = empty({0}, t.mu);
    t.grad_prior_logvar = empty({0}, t.mu);
  }
  return t;
}

// ln(2 pi), for log_q.
constexpr double kLog2Pi = 1.83787706640934548356;

}  // namespace reparam
}  // namespace gencore
