// Reparameterized Gaussian sampling with a fused KL: input validation, output
// allocation and the entry points of both backends.
//
//   z[s, b, j] = mu[b, j] + exp(logvar[b, j] / 2) * eps[s, b, j]
//   kl[b]      = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar)          KL(q || N(0, I))
//   log_q[s,b] = -1/2 sum_j (eps^2 + logvar + ln 2 pi)                log q(z | mu, logvar)
//
// eps comes from Philox4x32-10 at (seed, offset) = rng_state (common/philox.h) and is
// regenerated in backward, never stored. n_samples = 0 means no sample dimension.
#pragma once

#include <cstdint>
#include <tuple>

#include "common/checks.h"

namespace gencore {
namespace reparam {

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

struct Tensors {
  Tensor mu, logvar, rng_state;  // contiguous
  Tensor z, kl, log_q;           // outputs; log_q is (0,) unless requested
};

inline Tensors prepare_forward(const Tensor& mu, const Tensor& logvar,
                               const Tensor& rng_state, int64_t n_samples, bool with_log_q) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
  Tensors t{contig(mu), contig(logvar), contig(rng_state), {}, {}, {}};
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
  Tensor grad_mu, grad_logvar;                                 // outputs
};

inline BackwardTensors prepare_backward(const Tensor& grad_z, const Tensor& grad_kl,
                                        const Tensor& grad_log_q, const Tensor& mu,
                                        const Tensor& logvar, const Tensor& rng_state,
                                        int64_t n_samples) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
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
                    contig(rng_state), {}, {}};
  t.grad_mu = empty(t.mu.sizes(), t.mu);
  t.grad_logvar = empty(t.mu.sizes(), t.mu);
  return t;
}

// ln(2 pi), for log_q.
constexpr double kLog2Pi = 1.83787706640934548356;

}  // namespace reparam
}  // namespace gencore
