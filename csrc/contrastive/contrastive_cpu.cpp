// CPU backend of the contrastive losses (contrastive.h has the contract). The logits
// are visited tile by tile: a kTile x kTile tile of R = q k^T comes from one ATen GEMM
// (multi-threaded BLAS), and the online log-sum-exp (forward) or the gradient weights
// W (backward) are computed on it in place by vectorized loops run with
// torch::stable::parallel_for; the backward's two products W k and W^T q are GEMMs accumulated
// into the gradients. Only one tile exists at a time: memory O(kTile^2 + (n + m) D).
// Tiles run in a fixed order and per-row partial sums are added serially, so results
// do not depend on the thread count. In symmetric mode (NT-Xent, q = k) only the tiles
// on and above the diagonal are visited: each feeds both its rows and its columns.

#include <torch/csrc/inductor/aoti_torch/generated/c_shim_cpu.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/cpu_loop.h"
#include "common/fastmath.h"
#include "contrastive/contrastive.h"

namespace gencore {
namespace contrastive {
namespace {

constexpr int64_t kTile = 512;      // rows and columns of a logits tile
constexpr int64_t kColChunk = 128;  // columns per task of the column reductions

template <typename T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

template <typename T>
GENCORE_CPU_CLONES T max_of(const T* __restrict x, int64_t n) {
  T m = kNegInf<T>;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// sum_j exp(x_j - m)
template <typename T>
GENCORE_CPU_CLONES T sum_exp(const T* __restrict x, int64_t n, T m) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += fastmath::exp(x[j] - m);
  return acc;
}

template <typename T>
GENCORE_CPU_CLONES void col_max(const T* __restrict x, int64_t n, T* __restrict cmax) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) cmax[j] = x[j] > cmax[j] ? x[j] : cmax[j];
}

template <typename T>
GENCORE_CPU_CLONES void col_sum_exp(const T* __restrict x, int64_t n, const T* __restrict m,
                                    T* __restrict acc) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += fastmath::exp(x[j] - m[j]);
}

// x := a exp(x - lse) [+ b_j exp(x_j - clse_j)]; returns sum_j w_j x_j (old x).
template <typename T, bool kCols>
GENCORE_CPU_CLONES T weights_row(T* __restrict x, int64_t n, T a, T lse,
                                 const T* __restrict b, const T* __restrict clse) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) {
    const T l = x[j];
    T w = a * fastmath::exp(l - lse);
    if constexpr (kCols) w += b[j] * fastmath::exp(l - clse[j]);
    acc += w * x[j];
    x[j] = w;
  }
  return acc;
}

// sum_j softplus(x_j + bias): the sigmoid loss of a row of negatives.
template <typename T>
GENCORE_CPU_CLONES T softplus_sum(const T* __restrict x, int64_t n, T bias) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += fastmath::softplus(x[j] + bias);
  return acc;
}

// x := c sigmoid(x + bias) (every entry a negative's weight); adds sum_j w_j to *w_sum and
// sum_j w_j x_j (old x) to *wx_sum.
template <typename T>
GENCORE_CPU_CLONES void sigmoid_weights_row(T* __restrict x, int64_t n, T c, T bias,
                                            T* __restrict w_sum, T* __restrict wx_sum) {
  T ws = T(0), wx = T(0);
#pragma omp simd reduction(+ : ws, wx)
  for (int64_t j = 0; j < n; ++j) {
    const T w = c * fastmath::sigmoid(x[j] + bias);
    ws += w;
    wx += w * x[j];
    x[j] = w;
  }
  *w_sum += ws;
  *wx_sum += wx;
}

// Online log-sum-exp state of one row or column: logits seen so far sum to l * exp(m).
template <typename T>
inline void merge(T& m, T& l, T tile_sum_at_new_max, T new_max) {
  l = l * std::exp(m - new_max) + tile_sum_at_new_max;
  m = new_max;
}

template <typename T>
struct Problem {
  const T* q;
  const T* k;
  int64_t n, m, d;
  T s;
  const int64_t* exclude;  // (n,) or nullptr
  bool symmetric;
};

// self = beta * self + alpha * (a @ b), by torch's CPU GEMM (the C shim of ATen's CPU
// kernels, part of the stable ABI).
inline void addmm_(const Tensor& self, const Tensor& a, const Tensor& b, double beta,
                   double alpha) {
  GENCORE_SHIM_CHECK(
      aoti_torch_cpu_addmm_out(self.get(), self.get(), a.get(), b.get(), beta, alpha));
}

// The tile of the logits L = s R for rows [i0, i0 + br), columns [j0, j0 + bc), in a
// contiguous buffer. The scale is the GEMM's alpha, so every logit is one rounded number
// that all later loops read as is: with s folded into `s * x - m` instead, the compiler
// may fuse it into one fma, whose exact product minus the rounded maximum is off by up to
// half an ulp of s x; at large scales (1 / temperature = 1e20) that error exceeds 700 and
// exp overflowed or vanished (measured: the loss was -inf or NaN).
template <typename T>
Tensor tile_product(const Tensor& q, const Tensor& k, Tensor& buf, int64_t i0,
                    int64_t br, int64_t j0, int64_t bc, T s) {
  const Tensor flat = torch::stable::view(buf, {buf.numel()});
  Tensor r = torch::stable::view(aten::narrow(flat, 0, 0, br * bc), {br, bc});
  // beta = 0: the buffer's old contents are not read (nor NaNs in them propagated).
  addmm_(r, aten::narrow(q, 0, i0, br), aten::t(aten::narrow(k, 0, j0, bc)), 0,
         static_cast<double>(s));
  return r;
}

// Masked entries of the tile, as (row in tile, column in tile) pairs.
inline std::vector<std::pair<int64_t, int64_t>> masked_in_tile(const int64_t* exclude, int64_t i0,
                                                               int64_t br, int64_t j0, int64_t bc) {
  std::vector<std::pair<int64_t, int64_t>> out;
  if (exclude == nullptr) return out;
  for (int64_t r = 0; r < br; ++r) {
    const int64_t e = exclude[i0 + r];
    if (e >= j0 && e < j0 + bc) out.emplace_back(r, e - j0);
  }
  return out;
}

// Row statistics of a tile (rows i0.. of the (m, l) state arrays).
template <typename T>
void tile_row_stats(const T* x, int64_t br, int64_t bc, T* rm, T* rl) {
  torch::stable::parallel_for(0, br, std::max<int64_t>(1, 16384 / std::max<int64_t>(bc, 1)),
                              [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       const T* row = x + r * bc;
                       const T tmax = max_of(row, bc);
                       const T new_max = std::max(rm[r], tmax);
                       if (new_max == kNegInf<T>) continue;  // everything so far masked
                       merge(rm[r], rl[r], sum_exp(row, bc, new_max), new_max);
                     }
                   });
}

// Column statistics of a tile (columns j0.. of the (m, l) state arrays).
template <typename T>
void tile_col_stats(const T* x, int64_t br, int64_t bc, T* cm, T* cl) {
  const int64_t chunks = (bc + kColChunk - 1) / kColChunk;
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    T cmax[kColChunk], newm[kColChunk], acc[kColChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * kColChunk, w = std::min(kColChunk, bc - j0);
      std::fill(cmax, cmax + w, kNegInf<T>);
      for (int64_t r = 0; r < br; ++r) col_max(x + r * bc + j0, w, cmax);
      for (int64_t j = 0; j < w; ++j) {
        const T nm = std::max(cm[j0 + j], cmax[j]);
        // A column masked everywhere so far keeps a -inf maximum; its terms are zero.
        newm[j] = nm == kNegInf<T> ? T(0) : nm;
        acc[j] = T(0);
      }
      for (int64_t r = 0; r < br; ++r) col_sum_exp(x + r * bc + j0, w, newm, acc);
      for (int64_t j = 0; j < w; ++j) {
        if (cm[j0 + j] == kNegInf<T> && cmax[j] == kNegInf<T>) continue;
        merge(cm[j0 + j], cl[j0 + j], acc[j], newm[j]);
      }
    }
  });
}

template <typename T>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& scale,
                   const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                   const Tensor& col_lse) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = static_cast<T>(cpu_scalar(scale));
  const int64_t* ex = exclude.defined() ? exclude.const_data_ptr<int64_t>() : nullptr;
  const bool cols = col_lse.defined();
  std::vector<T> rm(n, kNegInf<T>), rl(n, T(0)), cm(cols ? m : 0, kNegInf<T>), cl(cols ? m : 0, T(0));
  Tensor buf = empty({std::min(n, kTile), std::min(m, kTile)}, q);
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = symmetric ? i0 : 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      Tensor r = tile_product<T>(q, k, buf, i0, br, j0, bc, s);
      T* x = r.mutable_data_ptr<T>();
      for (const auto& [rr, cc] : masked_in_tile(ex, i0, br, j0, bc)) x[rr * bc + cc] = kNegInf<T>;
      if (symmetric && j0 != i0) {
        // The tile's transpose is tile (j0, i0): its columns are rows j0.. of q = k; the
        // mask (the diagonal) does not meet off-diagonal tiles.
        tile_col_stats(x, br, bc, rm.data() + j0, rl.data() + j0);
      }
      tile_row_stats(x, br, bc, rm.data() + i0, rl.data() + i0);
      if (cols) tile_col_stats(x, br, bc, cm.data() + j0, cl.data() + j0);
    }
  }
  T* out = row_lse.mutable_data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) out[i] = rm[i] + std::log(rl[i]);
  if (cols) {
    T* cout = col_lse.mutable_data_ptr<T>();
    for (int64_t j = 0; j < m; ++j) cout[j] = cm[j] + std::log(cl[j]);
  }
}

template <typename T>
void backward_typed(const Tensor& q, const Tensor& k, const Tensor& scale,
                    const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                    const Tensor& alpha, const Tensor& col_lse, const Tensor& beta,
                    const Tensor& grad_q, const Tensor& grad_k,
                    const Tensor& grad_scale) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = static_cast<T>(cpu_scalar(scale));
  const int64_t* ex = exclude.defined() ? exclude.const_data_ptr<int64_t>() : nullptr;
  const bool cols = col_lse.defined();
  const T* lse = row_lse.const_data_ptr<T>();
  const T* a = alpha.const_data_ptr<T>();
  // Symmetric: the column term of tile (I, J) is row J's own term, transposed.
  const T* clse = cols ? col_lse.const_data_ptr<T>() : (symmetric ? lse : nullptr);
  const T* b = cols ? beta.const_data_ptr<T>() : (symmetric ? a : nullptr);
  const bool two_terms = cols || symmetric;
  Tensor buf = empty({std::min(n, kTile), std::min(m, kTile)}, q);
  std::vector<T> partial(kTile);
  double total = 0;  // sum(W * L), added in tile and row order; sum(W * R) = total / s
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = symmetric ? i0 : 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      const bool diag = symmetric && j0 == i0;
      Tensor r = tile_product<T>(q, k, buf, i0, br, j0, bc, s);
      T* x = r.mutable_data_ptr<T>();
      // A masked entry gets a finite logit so negative that its weight exp(L - lse) is
      // exactly 0 and its W * L term is 0 * L = 0. (Adding its weight and subtracting it
      // afterwards cancels catastrophically: lse excludes it, so the weight is huge.)
      const T never = -std::numeric_limits<T>::max() / T(2);
      for (const auto& [rr, cc] : masked_in_tile(ex, i0, br, j0, bc)) x[rr * bc + cc] = never;
      torch::stable::parallel_for(0, br, std::max<int64_t>(1, 16384 / bc), [&](int64_t r0, int64_t r1) {
        for (int64_t rr = r0; rr < r1; ++rr) {
          const int64_t i = i0 + rr;
          partial[rr] = two_terms ? weights_row<T, true>(x + rr * bc, bc, a[i], lse[i], b + j0, clse + j0)
                                  : weights_row<T, false>(x + rr * bc, bc, a[i], lse[i], nullptr, nullptr);
        }
      });
      double tile_sum = 0;
      for (int64_t rr = 0; rr < br; ++rr) tile_sum += partial[rr];
      total += diag ? 0.5 * tile_sum : tile_sum;
      const Tensor w = r;
      addmm_(aten::narrow(grad_q, 0, i0, br), w, aten::narrow(k, 0, j0, bc), 1, s);
      if (symmetric) {
        if (!diag)
          addmm_(aten::narrow(grad_q, 0, j0, bc), aten::t(w), aten::narrow(q, 0, i0, br), 1, s);
      } else {
        addmm_(aten::narrow(grad_k, 0, j0, bc), aten::t(w), aten::narrow(q, 0, i0, br), 1, s);
      }
    }
  }
  *grad_scale.mutable_data_ptr<T>() += static_cast<T>(total / static_cast<double>(s));  // 0-d, fresh
}

// The tile column of row i's positive (i + offset - j0), or -1 when it is not in the tile.
inline int64_t positive_in_tile(int64_t i, int64_t offset, int64_t j0, int64_t bc) {
  const int64_t j = i + offset - j0;
  return j >= 0 && j < bc ? j : -1;
}

template <typename T>
void sigmoid_forward_typed(const Tensor& q, const Tensor& k, const Tensor& scale,
                           const Tensor& bias, int64_t offset, const Tensor& row_sum) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = static_cast<T>(cpu_scalar(scale)), b = static_cast<T>(cpu_scalar(bias));
  T* out = row_sum.mutable_data_ptr<T>();
  Tensor buf = empty({std::min(n, kTile), std::min(m, kTile)}, q);
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      T* x = tile_product<T>(q, k, buf, i0, br, j0, bc, s).template mutable_data_ptr<T>();
      torch::stable::parallel_for(0, br, std::max<int64_t>(1, 16384 / bc), [&](int64_t r0, int64_t r1) {
        for (int64_t rr = r0; rr < r1; ++rr) {
          const int64_t i = i0 + rr;
          T* row = x + rr * bc;
          // The positive's term softplus(-L) on its own: a -inf logit adds exactly 0 to the
          // row's softplus sum (softplus(L) - L would cancel to 0 where the term is tiny).
          const int64_t jp = positive_in_tile(i, offset, j0, bc);
          T pos = T(0);
          if (jp >= 0) {
            pos = fastmath::softplus(-(row[jp] + b));
            row[jp] = -std::numeric_limits<T>::infinity();
          }
          out[i] += softplus_sum(row, bc, b) + pos;  // tiles in a fixed order
        }
      });
    }
  }
}

template <typename T>
void sigmoid_backward_typed(const Tensor& q, const Tensor& k, const Tensor& scale,
                            const Tensor& bias, int64_t offset, const Tensor& coef,
                            const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_scale,
                            const Tensor& grad_bias) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = static_cast<T>(cpu_scalar(scale)), b = static_cast<T>(cpu_scalar(bias));
  const T c = static_cast<T>(cpu_scalar(coef));
  Tensor buf = empty({std::min(n, kTile), std::min(m, kTile)}, q);
  std::vector<T> w_part(kTile), wx_part(kTile);
  double w_total = 0, wx_total = 0;  // sum(W) and sum(W * L), in tile and row order
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      Tensor r = tile_product<T>(q, k, buf, i0, br, j0, bc, s);
      T* x = r.mutable_data_ptr<T>();
      torch::stable::parallel_for(0, br, std::max<int64_t>(1, 16384 / bc), [&](int64_t r0, int64_t r1) {
        for (int64_t rr = r0; rr < r1; ++rr) {
          T* row = x + rr * bc;
          const int64_t jp = positive_in_tile(i0 + rr, offset, j0, bc);
          const T lp = jp >= 0 ? row[jp] : T(0);
          w_part[rr] = wx_part[rr] = T(0);
          sigmoid_weights_row(row, bc, c, b, &w_part[rr], &wx_part[rr]);
          if (jp >= 0) {
            // The positive's weight c (sigmoid(L) - 1) = -c sigmoid(-L), without the
            // cancellation; the row sums trade the negative's weight for it.
            const T w = -c * fastmath::sigmoid(-(lp + b));
            w_part[rr] += w - row[jp];
            wx_part[rr] += (w - row[jp]) * lp;
            row[jp] = w;
          }
        }
      });
      for (int64_t rr = 0; rr < br; ++rr) {
        w_total += w_part[rr];
        wx_total += wx_part[rr];
      }
      addmm_(aten::narrow(grad_q, 0, i0, br), r, aten::narrow(k, 0, j0, bc), 1, s);
      addmm_(aten::narrow(grad_k, 0, j0, bc), aten::t(r), aten::narrow(q, 0, i0, br), 1, s);
    }
  }
  // 0-d and fresh: sum(W * R) = sum(W * L) / s with L the unbiased product s R.
  *grad_scale.mutable_data_ptr<T>() += static_cast<T>(wx_total / static_cast<double>(s));
  *grad_bias.mutable_data_ptr<T>() += static_cast<T>(w_total);
}

struct CpuBackend {
  static void forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                      const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                      const Tensor& col_lse) {
    GENCORE_DISPATCH_FLOATING_TYPES(q.scalar_type(), "contrastive_forward_cpu", [&] {
      forward_typed<scalar_t>(q, k, scale, exclude, symmetric, row_lse, col_lse);
    });
  }
  static void backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                       const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                       const Tensor& alpha, const Tensor& col_lse, const Tensor& beta,
                       const Tensor& grad_q, const Tensor& grad_k,
                       const Tensor& grad_scale) {
    GENCORE_DISPATCH_FLOATING_TYPES(q.scalar_type(), "contrastive_backward_cpu", [&] {
      backward_typed<scalar_t>(q, k, scale, exclude, symmetric, row_lse, alpha, col_lse, beta,
                               grad_q, grad_k, grad_scale);
    });
  }
  static void sigmoid_forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                              const Tensor& bias, int64_t offset, const Tensor& row_sum) {
    GENCORE_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sigmoid_contrastive_forward_cpu", [&] {
      sigmoid_forward_typed<scalar_t>(q, k, scale, bias, offset, row_sum);
    });
  }
  static void sigmoid_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                               const Tensor& bias, int64_t offset, const Tensor& coef,
                               const Tensor& grad_q, const Tensor& grad_k,
                               const Tensor& grad_scale, const Tensor& grad_bias) {
    GENCORE_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sigmoid_contrastive_backward_cpu", [&] {
      sigmoid_backward_typed<scalar_t>(q, k, scale, bias, offset, coef, grad_q, grad_k,
                                       grad_scale, grad_bias);
    });
  }

  // The CPU tiles cost the same either way: the two passes in turn.
  static void sigmoid_forward_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                                       const Tensor& bias, int64_t offset, const Tensor& coef,
                                       const Tensor& row_sum, const Tensor& grad_q,
                                       const Tensor& grad_k, const Tensor& grad_scale,
                                       const Tensor& grad_bias) {
    sigmoid_forward(q, k, scale, bias, offset, row_sum);
    sigmoid_backward(q, k, scale, bias, offset, coef, grad_q, grad_k, grad_scale, grad_bias);
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("clip_loss", TORCH_BOX(&clip_loss_impl<CpuBackend>));
  m.impl("clip_loss_backward", TORCH_BOX(&clip_loss_backward_impl<CpuBackend>));
  m.impl("nt_xent_loss", TORCH_BOX(&nt_xent_loss_impl<CpuBackend>));
  m.impl("nt_xent_loss_backward", TORCH_BOX(&nt_xent_loss_backward_impl<CpuBackend>));
  m.impl("contrastive_rows", TORCH_BOX(&contrastive_rows_impl<CpuBackend>));
  m.impl("contrastive_rows_backward", TORCH_BOX(&contrastive_rows_backward_impl<CpuBackend>));
  m.impl("sigmoid_contrastive_loss", TORCH_BOX(&sigmoid_contrastive_loss_impl<CpuBackend>));
  m.impl("sigmoid_contrastive_loss_backward",
         TORCH_BOX(&sigmoid_contrastive_loss_backward_impl<CpuBackend>));
  m.impl("sigmoid_contrastive_loss_with_grads",
         TORCH_BOX(&sigmoid_contrastive_loss_with_grads_impl<CpuBackend>));
}

}  // namespace contrastive
}  // namespace gencore
