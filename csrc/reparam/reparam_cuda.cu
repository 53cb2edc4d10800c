// CUDA launcher of the reparameterized sampler. One warp owns one segment of a row
// (kIters * 32 lanes * 4 columns); each lane owns groups of 4 consecutive columns, the
// 4 normals of one Philox call (common/philox.h: the same functions as the CPU path,
// so one rng_state gives the same eps on both devices). Math in float32 for the half
// types (float64 for double). The KL and log_q sums leave the warps as per-segment
// partials that a second kernel adds in a fixed order: deterministic, no atomics.
// The (seed, offset) pair is read from device memory: no host sync, graph-safe.

#include <cstdint>

#include "common/cuda_context.h"
#include "common/cuda_utils.cuh"
#include "common/philox.h"
#include "reparam/reparam.h"

namespace gencore {
namespace reparam {
namespace {

using cuda::grid_for;
using cuda::kWarp;
using cuda::kWarpsPerBlock;
using cuda::load_pack;
using cuda::Pack;
using cuda::store_pack;
using cuda::warp_sum;
constexpr int kIters = 4;                       // column groups per lane per segment
constexpr int64_t kSegLen = kWarp * 4 * kIters;  // columns per segment

struct Geometry {
  int64_t rows, n, numel, per_row, segments, samples;
};

Geometry make_geometry(const Tensor& mu, int64_t n_samples) {
  Geometry g;
  g.rows = mu.size(0);
  g.n = row_length(mu);
  g.numel = mu.numel();
  g.per_row = g.n == 0 ? 1 : (g.n + kSegLen - 1) / kSegLen;
  g.segments = g.rows * g.per_row;
  g.samples = n_samples > 0 ? n_samples : 1;
  return g;
}

__device__ __forceinline__ cuda::WarpSegment warp_segment(const Geometry& g) {
  return cuda::warp_segment(g.n, kSegLen, g.per_row);
}

// Loads the 4 columns [c, c + 4) of a row (fewer at the row's end) as opmath values.
template <typename T, typename A, bool kVec>
__device__ __forceinline__ void load4(const T* p, int64_t c, int64_t n, A (&out)[4]) {
  if (kVec) {  // n % 4 == 0 and 4-element alignment: one vector load
    const auto v = load_pack<T, 4>(p + c);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = static_cast<A>(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = c + k < n ? static_cast<A>(p[c + k]) : A(0);
  }
}

template <typename T, typename A, bool kVec>
__device__ __forceinline__ void store4(T* p, int64_t c, int64_t n, const A (&v)[4]) {
  if (kVec) {
    Pack<T, 4> pk;
#pragma unroll
    for (int k = 0; k < 4; ++k) pk.v[k] = static_cast<T>(v[k]);
    store_pack<T, 4>(p + c, pk);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (c + k < n) p[c + k] = static_cast<T>(v[k]);
  }
}

// partial layout: [kl sums (segments) | logvar sums (segments) | eps^2 sums (samples x segments)]
// kPrior: the KL against N(pm, e^pl) (reparam.h), else against N(0, I) (pm, pl unused).
template <typename T, typename A, bool kVec, bool kLogQ, bool kPrior>
__global__ void reparam_fwd_kernel(const T* __restrict__ mu, const T* __restrict__ lv,
                                   const T* __restrict__ pm, const T* __restrict__ pl,
                                   const int64_t* __restrict__ rng, T* __restrict__ z,
                                   A* __restrict__ partial, Geometry g) {
  const cuda::WarpSegment w = warp_segment(g);
  if (w.index >= g.segments) return;
  const int lane = w.lane;
  const int64_t seg = w.index, row = w.row, begin = w.begin, end = w.end;
  const T* mur = mu + row * g.n;
  const T* lvr = lv + row * g.n;
  const philox::Stream st = philox::make_stream(rng[0], rng[1]);
  A kl = A(0), lvs = A(0);
  for (int64_t s = 0; s < g.samples; ++s) {
    T* zr = z + s * g.numel + row * g.n;
    A sq = A(0);
    for (int64_t c = begin + 4 * lane; c < end; c += 4 * kWarp) {
      A m[4], l[4], out[4], pmv[4] = {A(0), A(0), A(0), A(0)}, plv[4] = {A(0), A(0), A(0), A(0)};
      load4<T, A, kVec>(mur, c, g.n, m);
      load4<T, A, kVec>(lvr, c, g.n, l);
      if (kPrior && s == 0) {
        load4<T, A, kVec>(pm + row * g.n, c, g.n, pmv);
        load4<T, A, kVec>(pl + row * g.n, c, g.n, plv);
      }
      const auto e = philox::normals_at<A>(st, static_cast<uint64_t>(c / 4),
                                           static_cast<uint64_t>(row), static_cast<uint64_t>(s));
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const bool in = c + k < end;
        const A sigma = ::exp(A(0.5) * l[k]);
        out[k] = m[k] + sigma * e.n[k];
        if (kLogQ) sq += in ? e.n[k] * e.n[k] : A(0);
        if (s == 0 && in) {
          if (kPrior) {
            const A x = l[k] - plv[k];
            kl += expm1mx(x, ::exp(x)) + sq_scaled(m[k] - pmv[k], ::exp(-plv[k]));
          } else {
            kl += expm1mx(l[k], sigma * sigma) + m[k] * m[k];
          }
          lvs += l[k];
        }
      }
      store4<T, A, kVec>(zr, c, g.n, out);
    }
    if (kLogQ) {
      sq = warp_sum(sq);
      if (lane == 0) partial[(2 + s) * g.segments + seg] = sq;
    }
  }
  kl = warp_sum(kl);
  lvs = warp_sum(lvs);
  if (lane == 0) {
    partial[seg] = kl;
    partial[g.segments + seg] = lvs;
  }
}

// One warp a row: adds the row's segment partials in a fixed order.
template <typename T, typename A, bool kLogQ>
__global__ void reparam_finish_kernel(const A* __restrict__ partial, T* __restrict__ kl,
                                      T* __restrict__ log_q, Geometry g) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= g.rows) return;
  auto row_sum = [&](int64_t slot) {
    A acc = A(0);
    for (int64_t k = lane; k < g.per_row; k += kWarp)
      acc += partial[slot * g.segments + row * g.per_row + k];
    return warp_sum(acc);
  };
  const A k = row_sum(0);
  if (lane == 0) kl[row] = static_cast<T>(A(0.5) * k);
  if (kLogQ) {
    const A lvs = row_sum(1);
    const A c = A(0.5) * static_cast<A>(kLog2Pi) * static_cast<A>(g.n);
    for (int64_t s = 0; s < g.samples; ++s) {
      const A sq = row_sum(2 + s);
      if (lane == 0) log_q[s * g.rows + row] = static_cast<T>(A(-0.5) * (sq + lvs) - c);
    }
  }
}

// The KL's gradients as in reparam_cpu.cpp's finish_block.
template <typename T, typename A, bool kVec, bool kPrior>
__global__ void reparam_bwd_kernel(const T* __restrict__ gz, const T* __restrict__ gkl,
                                   const A* __restrict__ glq_row, const T* __restrict__ mu,
                                   const T* __restrict__ lv, const T* __restrict__ pm,
                                   const T* __restrict__ pl, const int64_t* __restrict__ rng,
                                   T* __restrict__ gmu, T* __restrict__ glv,
                                   T* __restrict__ gpm, T* __restrict__ gpl, Geometry g) {
  const cuda::WarpSegment w = warp_segment(g);
  if (w.index >= g.segments) return;
  const int lane = w.lane;
  const int64_t row = w.row, begin = w.begin, end = w.end;
  const int64_t base = row * g.n;
  const philox::Stream st = philox::make_stream(rng[0], rng[1]);
  const A gk = static_cast<A>(gkl[row]);
  const A gq = glq_row != nullptr ? glq_row[row] : A(0);
  for (int64_t c = begin + 4 * lane; c < end; c += 4 * kWarp) {
    A m[4], l[4], acc_mu[4] = {A(0), A(0), A(0), A(0)}, acc_lv[4] = {A(0), A(0), A(0), A(0)};
    A pmv[4] = {A(0), A(0), A(0), A(0)}, plv[4] = {A(0), A(0), A(0), A(0)};
    load4<T, A, kVec>(mu + base, c, g.n, m);
    load4<T, A, kVec>(lv + base, c, g.n, l);
    if (kPrior) {
      load4<T, A, kVec>(pm + base, c, g.n, pmv);
      load4<T, A, kVec>(pl + base, c, g.n, plv);
    }
    for (int64_t s = 0; s < g.samples; ++s) {
      A gzs[4];
      load4<T, A, kVec>(gz + s * g.numel + base, c, g.n, gzs);
      const auto e = philox::normals_at<A>(st, static_cast<uint64_t>(c / 4),
                                           static_cast<uint64_t>(row), static_cast<uint64_t>(s));
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        acc_mu[k] += gzs[k];
        acc_lv[k] += gzs[k] * e.n[k];
      }
    }
    A om[4], ol[4], opm[4], opl[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const A sigma = ::exp(A(0.5) * l[k]);
      const A x = l[k] - plv[k], d = m[k] - pmv[k];
      const A w = kPrior ? ::exp(-plv[k]) : A(1);
      const A dlv = A(0.5) * (expm1mx(x, kPrior ? ::exp(x) : sigma * sigma) + x);
      const A dmu = scaled(d, w);
      om[k] = acc_mu[k] + gk * dmu;
      ol[k] = A(0.5) * sigma * acc_lv[k] + gk * dlv + gq;
      opm[k] = -gk * dmu;
      opl[k] = -gk * (dlv + A(0.5) * sq_scaled(d, w));
    }
    store4<T, A, kVec>(gmu + base, c, g.n, om);
    store4<T, A, kVec>(glv + base, c, g.n, ol);
    if (kPrior) {
      store4<T, A, kVec>(gpm + base, c, g.n, opm);
      store4<T, A, kVec>(gpl + base, c, g.n, opl);
    }
  }
}


template <typename Fn>
void dispatch_bool(bool b, const Fn& fn) {
  if (b) fn(std::true_type{});
  else fn(std::false_type{});
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> reparameterize_cuda(
    const Tensor& mu, const Tensor& logvar, const Tensor& rng_state,
    const std::optional<Tensor>& prior_mu, const std::optional<Tensor>& prior_logvar,
    int64_t n_samples, bool with_log_q) {
  const cuda::DeviceGuard guard(mu);
  Tensors t =
      prepare_forward(mu, logvar, rng_state, n_samples, with_log_q, prior_mu, prior_logvar);
  check_cuda(mu, "mu");
  const Geometry g = make_geometry(t.mu, n_samples);
  if (g.rows == 0) return {t.z, t.kl, t.log_q};
  auto stream = cuda::current_stream();
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(mu.scalar_type(), "reparameterize_cuda",
                                            [&] {
    using T = scalar_t;
    using A = opmath_t<T>;
    const bool prior = t.has_prior();
    const T* pm = prior ? t.prior_mu.const_data_ptr<T>() : nullptr;
    const T* pl = prior ? t.prior_logvar.const_data_ptr<T>() : nullptr;
    const bool vec = g.n % 4 == 0 &&
                     cuda::aligned_to(4 * sizeof(T), {t.mu.const_data_ptr(), t.logvar.const_data_ptr(),
                                                      t.z.const_data_ptr(), pm, pl});
    const int64_t slots = 2 + (with_log_q ? g.samples : 0);
    Tensor partial =
        empty({slots * g.segments}, t.mu, scalar_type_of<A>());
    dispatch_bool(vec, [&](auto kv) {
      dispatch_bool(with_log_q, [&](auto kq) {
        dispatch_bool(prior, [&](auto kp) {
          reparam_fwd_kernel<T, A, decltype(kv)::value, decltype(kq)::value, decltype(kp)::value>
              <<<grid_for(g.segments), kWarp * kWarpsPerBlock, 0, stream>>>(
                  t.mu.const_data_ptr<T>(), t.logvar.const_data_ptr<T>(), pm, pl,
                  t.rng_state.const_data_ptr<int64_t>(), t.z.mutable_data_ptr<T>(),
                  partial.mutable_data_ptr<A>(), g);
          GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
        });
        reparam_finish_kernel<T, A, decltype(kq)::value>
            <<<grid_for(g.rows), kWarp * kWarpsPerBlock, 0, stream>>>(
                partial.const_data_ptr<A>(), t.kl.mutable_data_ptr<T>(),
                with_log_q ? t.log_q.mutable_data_ptr<T>() : nullptr, g);
        GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {t.z, t.kl, t.log_q};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> reparameterize_backward_cuda(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& grad_log_q,
    const Tensor& mu, const Tensor& logvar, const Tensor& rng_state,
    const std::optional<Tensor>& prior_mu, const std::optional<Tensor>& prior_logvar,
    int64_t n_samples) {
  const cuda::DeviceGuard guard(mu);
  BackwardTensors t = prepare_backward(grad_z, grad_kl, grad_log_q, mu, logvar, rng_state,
                                       n_samples, prior_mu, prior_logvar);
  check_cuda(mu, "mu");
  const Geometry g = make_geometry(t.mu, n_samples);
  if (t.mu.numel() == 0) return {t.grad_mu, t.grad_logvar, t.grad_prior_mu, t.grad_prior_logvar};
  auto stream = cuda::current_stream();
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(mu.scalar_type(),
                                            "reparameterize_backward_cuda", [&] {
    using T = scalar_t;
    using A = opmath_t<T>;
    // d log_q[s, b] / d logvar[b, j] = -1/2: one constant per row, summed over samples.
    Tensor glq;
    if (t.grad_log_q.numel() > 0) {
      // -1/2 sum over samples of grad_log_q: (rows,) in A.
      glq = contig(aten::mul(
          aten::sum(torch::stable::reshape(to_dtype(t.grad_log_q, scalar_type_of<A>()),
                                           {g.samples, g.rows}),
                    0),
          -0.5));
    }
    const bool prior = t.has_prior();
    const T* pm = prior ? t.prior_mu.const_data_ptr<T>() : nullptr;
    const T* pl = prior ? t.prior_logvar.const_data_ptr<T>() : nullptr;
    T* gpm = prior ? t.grad_prior_mu.mutable_data_ptr<T>() : nullptr;
    T* gpl = prior ? t.grad_prior_logvar.mutable_data_ptr<T>() : nullptr;
    const bool vec = g.n % 4 == 0 &&
                     cuda::aligned_to(4 * sizeof(T), {t.grad_z.const_data_ptr(), t.mu.const_data_ptr(),
                                                      t.logvar.const_data_ptr(),
                                                      t.grad_mu.const_data_ptr(),
                                                      t.grad_logvar.const_data_ptr(), pm, pl, gpm,
                                                      gpl});
    dispatch_bool(vec, [&](auto kv) {
      dispatch_bool(prior, [&](auto kp) {
        reparam_bwd_kernel<T, A, decltype(kv)::value, decltype(kp)::value>
            <<<grid_for(g.segments), kWarp * kWarpsPerBlock, 0, stream>>>(
                t.grad_z.const_data_ptr<T>(), t.grad_kl.const_data_ptr<T>(),
                glq.defined() ? glq.const_data_ptr<A>() : nullptr, t.mu.const_data_ptr<T>(),
                t.logvar.const_data_ptr<T>(), pm, pl, t.rng_state.const_data_ptr<int64_t>(),
                t.grad_mu.mutable_data_ptr<T>(), t.grad_logvar.mutable_data_ptr<T>(), gpm, gpl,
                g);
        GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {t.grad_mu, t.grad_logvar, t.grad_prior_mu, t.grad_prior_logvar};
}

STABLE_TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("reparameterize", TORCH_BOX(&reparameterize_cuda));
  m.impl("reparameterize_backward", TORCH_BOX(&reparameterize_backward_cuda));
}

}  // namespace reparam
}  // namespace gencore
