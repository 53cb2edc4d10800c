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

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

#include "common/checks.h"

namespace gencore {
namespace reparam {

inline int64_t row_length(const at::Tensor& mu) {
  return mu.size(0) == 0 ? 0 : mu.numel() / mu.size(0);
}

inline void check_reparameterize_inputs(const at::Tensor& mu, const at::Tensor& logvar,
                                        const at::Tensor& rng_state, int64_t n_samples) {
  check_min_dim(mu, "mu", 1);
  check_floating(mu, "mu");
  check_same_shape(mu, "mu", logvar, "logvar");
  check_same_device(mu, "mu", logvar, "logvar");
  check_same_dtype(mu, "mu", logvar, "logvar");
  TORCH_CHECK_TYPE(rng_state.scalar_type() == at::kLong, "gencore: rng_state must be int64, got ",
                   rng_state.scalar_type());
  TORCH_CHECK_VALUE(rng_state.dim() == 1 && rng_state.size(0) == 2,
                    "gencore: rng_state must have shape (2,) = (seed, offset), got ",
                    rng_state.sizes());
  check_same_device(mu, "mu", rng_state, "rng_state");
  TORCH_CHECK_VALUE(n_samples >= 0 && n_samples <= 0xFFFFFFFFLL,
                    "gencore: n_samples must be >= 1 (or None), got ", n_samples);
  // Each element owns a Philox counter (column / 4, row, sample, offset): 32 bits each.
  TORCH_CHECK_VALUE(mu.size(0) <= 0xFFFFFFFFLL && row_length(mu) / 4 <= 0xFFFFFFFFLL,
                    "gencore: reparameterize supports at most 2^32 rows and 2^34 elements per row, "
                    "got mu.shape=", mu.sizes());
}

struct Tensors {
  at::Tensor mu, logvar, rng_state;  // contiguous
  at::Tensor z, kl, log_q;           // outputs; log_q is (0,) unless requested
};

inline Tensors prepare_forward(const at::Tensor& mu, const at::Tensor& logvar,
                               const at::Tensor& rng_state, int64_t n_samples, bool with_log_q) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
  Tensors t{mu.contiguous(), logvar.contiguous(), rng_state.contiguous(), {}, {}, {}};
  std::vector<int64_t> zshape;
  if (n_samples > 0) zshape.push_back(n_samples);
  for (auto s : mu.sizes()) zshape.push_back(s);
  t.z = at::empty(zshape, t.mu.options());
  t.kl = at::empty({mu.size(0)}, t.mu.options());
  if (with_log_q) {
    t.log_q = n_samples > 0 ? at::empty({n_samples, mu.size(0)}, t.mu.options())
                            : at::empty({mu.size(0)}, t.mu.options());
  } else {
    t.log_q = at::empty({0}, t.mu.options());
  }
  return t;
}

struct BackwardTensors {
  at::Tensor grad_z, grad_kl, grad_log_q, mu, logvar, rng_state;  // contiguous, mu's dtype
  at::Tensor grad_mu, grad_logvar;                                 // outputs
};

inline BackwardTensors prepare_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                                        const at::Tensor& grad_log_q, const at::Tensor& mu,
                                        const at::Tensor& logvar, const at::Tensor& rng_state,
                                        int64_t n_samples) {
  check_reparameterize_inputs(mu, logvar, rng_state, n_samples);
  const int64_t S = n_samples > 0 ? n_samples : 1;
  TORCH_CHECK_VALUE(grad_z.numel() == S * mu.numel() &&
                        grad_z.dim() == mu.dim() + (n_samples > 0 ? 1 : 0),
                    "gencore: grad_z must have the shape of z, got ", grad_z.sizes());
  TORCH_CHECK_VALUE(grad_kl.dim() == 1 && grad_kl.size(0) == mu.size(0),
                    "gencore: grad_kl must have shape (B,), got ", grad_kl.sizes());
  TORCH_CHECK_VALUE(grad_log_q.numel() == 0 || grad_log_q.numel() == S * mu.size(0),
                    "gencore: grad_log_q must have the shape of log_q (or be empty), got ",
                    grad_log_q.sizes());
  check_same_device(mu, "mu", grad_z, "grad_z");
  check_same_device(mu, "mu", grad_kl, "grad_kl");
  check_same_device(mu, "mu", grad_log_q, "grad_log_q");
  const auto st = mu.scalar_type();
  BackwardTensors t{grad_z.to(st).contiguous(), grad_kl.to(st).contiguous(),
                    grad_log_q.to(st).contiguous(), mu.contiguous(), logvar.contiguous(),
                    rng_state.contiguous(), {}, {}};
  t.grad_mu = at::empty_like(t.mu);
  t.grad_logvar = at::empty_like(t.mu);
  return t;
}

// ln(2 pi), for log_q.
constexpr double kLog2Pi = 1.83787706640934548356;

}  // namespace reparam
}  // namespace gencore
