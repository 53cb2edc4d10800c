// CPU launcher of the reparameterized sampler: torch::stable::parallel_for over (row, chunk)
// tasks of common/cpu_loop.h. Each chunk is processed in blocks of kBlock columns: the
// block's sigma = exp(logvar / 2) and KL terms are computed once, then for every sample
// the block's normals are generated (Philox + Box-Muller, common/philox.h; on AVX2 CPUs the
// Philox words by common/philox_x86.h)
// into a stack buffer and z is written. Backward regenerates the same normals.

#include <cmath>
#include <cstdlib>
#include <vector>

#include "common/cpu_loop.h"
#include "common/fastmath.h"
#include "common/philox.h"
#include "common/philox_x86.h"
#include "reparam/reparam.h"

namespace gencore {
namespace reparam {
namespace {

constexpr int64_t kBlock = 256;  // columns per block; a multiple of 64

// GENCORE_PORTABLE_PHILOX=1 in the environment (read once) selects the portable normals
// even on AVX2 CPUs: the tests compare both paths.
bool use_x86_philox() {
  static const bool use = [] {
    const char* v = std::getenv("GENCORE_PORTABLE_PHILOX");
    return v == nullptr || v[0] == '\0' || v[0] == '0';
  }();
  return use;
}

// Normals of columns [col0, col0 + m) of (row, sample); col0 is a multiple of 4. The
// portable path: philox::normals_at vectorized by the compiler over the groups of 4.
template <typename T>
GENCORE_CPU_CLONES void normals_block_portable(philox::Stream st, uint64_t col0, uint64_t row,
                                               uint64_t sample, int64_t m, T* __restrict out) {
  const int64_t groups = (m + 3) / 4;
  const uint64_t g0 = col0 / 4;
#pragma omp simd
  for (int64_t k = 0; k < groups; ++k) {
    const philox::Normal4<T> n = philox::normals_at<T>(st, g0 + k, row, sample);
    out[4 * k] = n.n[0];
    out[4 * k + 1] = n.n[1];
    out[4 * k + 2] = n.n[2];
    out[4 * k + 3] = n.n[3];
  }
}

// Box-Muller of the first `groups` groups of words stored by word (w[j * G + k]).
template <typename T>
GENCORE_CPU_CLONES void box_muller_words(const uint32_t* __restrict w, int64_t G,
                                         int64_t groups, T* __restrict out) {
#pragma omp simd
  for (int64_t k = 0; k < groups; ++k) {
    const philox::Normal4<T> n =
        philox::box_muller4<T>(philox::U4{{w[k], w[G + k], w[2 * G + k], w[3 * G + k]}});
    out[4 * k] = n.n[0];
    out[4 * k + 1] = n.n[1];
    out[4 * k + 2] = n.n[2];
    out[4 * k + 3] = n.n[3];
  }
}

// The same normals; on AVX2 CPUs the Philox words come from common/philox_x86.h.
template <typename T>
void normals_block(philox::Stream st, uint64_t col0, uint64_t row, uint64_t sample, int64_t m,
                   T* __restrict out) {
  if (!philox::cpu_has_avx2() || !use_x86_philox()) {
    normals_block_portable<T>(st, col0, row, sample, m, out);
    return;
  }
  constexpr int64_t kGroups = kBlock / 4;
  static_assert(kGroups % philox::kWordLanes == 0, "kBlock / 4 must be a multiple of 16");
  alignas(32) uint32_t w[4 * kGroups];
  const int64_t groups = (m + 3) / 4;
  const int64_t G = (groups + philox::kWordLanes - 1) / philox::kWordLanes * philox::kWordLanes;
  philox::philox_words_x16(st, static_cast<uint32_t>(col0 / 4), static_cast<uint32_t>(row),
                           static_cast<uint32_t>(sample), G, w);
  box_muller_words<T>(w, G, groups, out);
}

// sigma = exp(logvar / 2), twice the block's KL to N(0, I) (reparam.h) and its sum of
// logvar. One loop for both kinds of prior, so that z does not depend on the prior.
template <typename T>
GENCORE_CPU_CLONES void sigma_block(const T* __restrict mu, const T* __restrict lv,
                                    T* __restrict sigma, int64_t m, T& kl, T& lvsum) {
  T a = T(0), b = T(0);
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < m; ++i) {
    const T s = fastmath::exp(T(0.5) * lv[i]);
    sigma[i] = s;
    a += expm1mx(lv[i], s * s) + mu[i] * mu[i];
    b += lv[i];
  }
  kl = a;
  lvsum = b;
}

// Twice the block's KL to N(pm, e^pl).
template <typename T>
GENCORE_CPU_CLONES T prior_kl_block(const T* __restrict mu, const T* __restrict lv,
                                    const T* __restrict pm, const T* __restrict pl, int64_t m) {
  T a = T(0);
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < m; ++i) {
    const T x = lv[i] - pl[i];
    a += expm1mx(x, fastmath::exp(x)) + sq_scaled(mu[i] - pm[i], fastmath::exp(-pl[i]));
  }
  return a;
}

template <typename T>
GENCORE_CPU_CLONES T sample_block(const T* __restrict mu, const T* __restrict sigma,
                                  const T* __restrict eps, T* __restrict z, int64_t m) {
  T sq = T(0);
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < m; ++i) {
    z[i] = mu[i] + sigma[i] * eps[i];
    sq += eps[i] * eps[i];
  }
  return sq;
}

template <typename T>
GENCORE_CPU_CLONES void accumulate_block(const T* __restrict gz, const T* __restrict eps,
                                         T* __restrict acc_mu, T* __restrict acc_lv, int64_t m) {
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    acc_mu[i] += gz[i];
    acc_lv[i] += gz[i] * eps[i];
  }
}

// dz/dmu = 1, dz/dlogvar = eps sigma / 2, dlog_q/dlogvar = -1/2 and the KL's
// dkl/dmu = (mu - pm) e^-pl = -dkl/dpm, dkl/dlogvar = (e^x - 1) / 2 (x = logvar - pl),
// dkl/dpl = -(e^x - 1) / 2 - (mu - pm)^2 e^-pl / 2; without a prior pm = pl = 0.
template <typename T, bool kPrior>
GENCORE_CPU_CLONES void finish_block(const T* __restrict mu, const T* __restrict lv,
                                     const T* __restrict pm, const T* __restrict pl,
                                     const T* __restrict acc_mu, const T* __restrict acc_lv,
                                     T gkl, T glq, T* __restrict gmu, T* __restrict glv,
                                     T* __restrict gpm, T* __restrict gpl, int64_t m) {
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const T s = fastmath::exp(T(0.5) * lv[i]);
    const T x = kPrior ? lv[i] - pl[i] : lv[i];
    const T d = kPrior ? mu[i] - pm[i] : mu[i];
    const T w = kPrior ? fastmath::exp(-pl[i]) : T(1);
    const T ex = kPrior ? fastmath::exp(x) : s * s;
    const T dlv = T(0.5) * (expm1mx(x, ex) + x);
    const T dmu = scaled(d, w);
    gmu[i] = acc_mu[i] + gkl * dmu;
    glv[i] = T(0.5) * s * acc_lv[i] + gkl * dlv + glq;
    if (kPrior) {
      gpm[i] = -gkl * dmu;
      gpl[i] = -gkl * (dlv + T(0.5) * sq_scaled(d, w));
    }
  }
}

template <typename T, bool kPrior>
void forward_impl(Tensors& t, int64_t S_arg) {
  const int64_t rows = t.mu.size(0), n = row_length(t.mu), numel = t.mu.numel();
  const int64_t S = S_arg > 0 ? S_arg : 1;
  const bool with_log_q = t.log_q.numel() > 0;
  const int64_t* rs = t.rng_state.const_data_ptr<int64_t>();
  const philox::Stream st = philox::make_stream(rs[0], rs[1]);
  const T* mu = t.mu.const_data_ptr<T>();
  const T* lv = t.logvar.const_data_ptr<T>();
  const T* pm = kPrior ? t.prior_mu.const_data_ptr<T>() : nullptr;
  const T* pl = kPrior ? t.prior_logvar.const_data_ptr<T>() : nullptr;
  T* z = t.z.mutable_data_ptr<T>();
  const int64_t per_row = chunks_per_row(n), tasks = rows * per_row;
  // Per task: [kl, sum logvar, sum eps^2 of sample 0, 1, ...]; added in a fixed order.
  const int64_t width = 2 + (with_log_q ? S : 0);
  std::vector<T> partial(tasks * width, T(0));
  for_each_row_chunk(rows, n, [&](int64_t task, int64_t row, int64_t begin, int64_t end) {
    alignas(64) T sigma[kBlock];
    alignas(64) T eps[kBlock];
    T* part = partial.data() + task * width;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t m = std::min(kBlock, end - b), off = row * n + b;
      T kl, lvs;
      sigma_block<T>(mu + off, lv + off, sigma, m, kl, lvs);
      if (kPrior) kl = prior_kl_block<T>(mu + off, lv + off, pm + off, pl + off, m);
      part[0] += kl;
      part[1] += lvs;
      for (int64_t s = 0; s < S; ++s) {
        normals_block<T>(st, b, row, s, m, eps);
        const T sq = sample_block<T>(mu + off, sigma, eps, z + s * numel + off, m);
        if (with_log_q) part[2 + s] += sq;
      }
    }
  });
  T* kl = t.kl.mutable_data_ptr<T>();
  T* lq = with_log_q ? t.log_q.mutable_data_ptr<T>() : nullptr;
  const T half_log_2pi_n = static_cast<T>(0.5 * kLog2Pi * static_cast<double>(n));
  for (int64_t row = 0; row < rows; ++row) {
    T a = T(0), l = T(0);
    for (int64_t k = 0; k < per_row; ++k) {
      a += partial[(row * per_row + k) * width];
      l += partial[(row * per_row + k) * width + 1];
    }
    kl[row] = T(0.5) * a;
    for (int64_t s = 0; with_log_q && s < S; ++s) {
      T sq = T(0);
      for (int64_t k = 0; k < per_row; ++k) sq += partial[(row * per_row + k) * width + 2 + s];
      lq[s * rows + row] = T(-0.5) * (sq + l) - half_log_2pi_n;
    }
  }
}

template <typename T, bool kPrior>
void backward_impl(BackwardTensors& t, int64_t S_arg) {
  const int64_t rows = t.mu.size(0), n = row_length(t.mu), numel = t.mu.numel();
  const int64_t S = S_arg > 0 ? S_arg : 1;
  const int64_t* rs = t.rng_state.const_data_ptr<int64_t>();
  const philox::Stream st = philox::make_stream(rs[0], rs[1]);
  const T* mu = t.mu.const_data_ptr<T>();
  const T* lv = t.logvar.const_data_ptr<T>();
  const T* pm = kPrior ? t.prior_mu.const_data_ptr<T>() : nullptr;
  const T* pl = kPrior ? t.prior_logvar.const_data_ptr<T>() : nullptr;
  const T* gz = t.grad_z.const_data_ptr<T>();
  const T* gkl = t.grad_kl.const_data_ptr<T>();
  // d log_q[s, b] / d logvar[b, j] = -1/2 for every j: one constant per row.
  std::vector<T> glq(rows, T(0));
  if (t.grad_log_q.numel() > 0) {
    const T* g = t.grad_log_q.const_data_ptr<T>();
    for (int64_t s = 0; s < S; ++s)
      for (int64_t row = 0; row < rows; ++row) glq[row] += T(-0.5) * g[s * rows + row];
  }
  T* gmu = t.grad_mu.mutable_data_ptr<T>();
  T* glv = t.grad_logvar.mutable_data_ptr<T>();
  T* gpm = kPrior ? t.grad_prior_mu.mutable_data_ptr<T>() : nullptr;
  T* gpl = kPrior ? t.grad_prior_logvar.mutable_data_ptr<T>() : nullptr;
  for_each_row_chunk(rows, n, [&](int64_t, int64_t row, int64_t begin, int64_t end) {
    alignas(64) T eps[kBlock];
    alignas(64) T acc_mu[kBlock];
    alignas(64) T acc_lv[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t m = std::min(kBlock, end - b), off = row * n + b;
      std::fill(acc_mu, acc_mu + m, T(0));
      std::fill(acc_lv, acc_lv + m, T(0));
      for (int64_t s = 0; s < S; ++s) {
        normals_block<T>(st, b, row, s, m, eps);
        accumulate_block<T>(gz + s * numel + off, eps, acc_mu, acc_lv, m);
      }
      finish_block<T, kPrior>(mu + off, lv + off, kPrior ? pm + off : nullptr,
                              kPrior ? pl + off : nullptr, acc_mu, acc_lv, gkl[row], glq[row],
                              gmu + off, glv + off, kPrior ? gpm + off : nullptr,
                              kPrior ? gpl + off : nullptr, m);
    }
  });
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> reparameterize_cpu(
    const Tensor& mu, const Tensor& logvar, const Tensor& rng_state,
    const std::optional<Tensor>& prior_mu, const std::optional<Tensor>& prior_logvar,
    int64_t n_samples, bool with_log_q) {
  Tensors t =
      prepare_forward(mu, logvar, rng_state, n_samples, with_log_q, prior_mu, prior_logvar);
  check_cpu(mu, "mu");
  GENCORE_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_cpu", [&] {
    if (t.has_prior()) forward_impl<scalar_t, true>(t, n_samples);
    else forward_impl<scalar_t, false>(t, n_samples);
  });
  return {t.z, t.kl, t.log_q};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> reparameterize_backward_cpu(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& grad_log_q,
    const Tensor& mu, const Tensor& logvar, const Tensor& rng_state,
    const std::optional<Tensor>& prior_mu, const std::optional<Tensor>& prior_logvar,
    int64_t n_samples) {
  BackwardTensors t = prepare_backward(grad_z, grad_kl, grad_log_q, mu, logvar, rng_state,
                                       n_samples, prior_mu, prior_logvar);
  check_cpu(mu, "mu");
  GENCORE_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "reparameterize_backward_cpu", [&] {
    if (t.has_prior()) backward_impl<scalar_t, true>(t, n_samples);
    else backward_impl<scalar_t, false>(t, n_samples);
  });
  return {t.grad_mu, t.grad_logvar, t.grad_prior_mu, t.grad_prior_logvar};
}

STABLE_TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("reparameterize", TORCH_BOX(&reparameterize_cpu));
  m.impl("reparameterize_backward", TORCH_BOX(&reparameterize_backward_cpu));
}

}  // namespace reparam
}  // namespace gencore
