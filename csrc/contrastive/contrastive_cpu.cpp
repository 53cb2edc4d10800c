// CPU backend of the contrastive losses (contrastive.h has the contract). The logits
// are visited tile by tile: a kTile x kTile tile of R = q k^T comes from one ATen GEMM
// (multi-threaded BLAS), and the online log-sum-exp (forward) or the gradient weights
// W (backward) are computed on it in place by vectorized loops run with
// at::parallel_for; the backward's two products W k and W^T q are GEMMs accumulated
// into the gradients. Only one tile exists at a time: memory O(kTile^2 + (n + m) D).
// Tiles run in a fixed order and per-row partial sums are added serially, so results
// do not depend on the thread count. In symmetric mode (NT-Xent, q = k) only the tiles
// on and above the diagonal are visited: each feeds both its rows and its columns.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

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

// sum_j exp(s x_j - m)
template <typename T>
GENCORE_CPU_CLONES T sum_exp(const T* __restrict x, int64_t n, T s, T m) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += fastmath::exp(s * x[j] - m);
  return acc;
}

template <typename T>
GENCORE_CPU_CLONES void col_max(const T* __restrict x, int64_t n, T* __restrict cmax) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) cmax[j] = x[j] > cmax[j] ? x[j] : cmax[j];
}

template <typename T>
GENCORE_CPU_CLONES void col_sum_exp(const T* __restrict x, int64_t n, T s, const T* __restrict m,
                                    T* __restrict acc) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += fastmath::exp(s * x[j] - m[j]);
}

// x := a exp(s x - lse) [+ b_j exp(s x_j - clse_j)]; returns sum_j w_j x_j (old x).
template <typename T, bool kCols>
GENCORE_CPU_CLONES T weights_row(T* __restrict x, int64_t n, T s, T a, T lse,
                                 const T* __restrict b, const T* __restrict clse) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) {
    const T l = s * x[j];
    T w = a * fastmath::exp(l - lse);
    if constexpr (kCols) w += b[j] * fastmath::exp(l - clse[j]);
    acc += w * x[j];
    x[j] = w;
  }
  return acc;
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

// The tile of R for rows [i0, i0 + br), columns [j0, j0 + bc), in a contiguous buffer.
template <typename T>
at::Tensor tile_product(const at::Tensor& q, const at::Tensor& k, at::Tensor& buf, int64_t i0,
                        int64_t br, int64_t j0, int64_t bc) {
  at::Tensor r = buf.view({-1}).narrow(0, 0, br * bc).view({br, bc});
  at::mm_out(r, q.narrow(0, i0, br), k.narrow(0, j0, bc).t());
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
void tile_row_stats(const T* x, int64_t br, int64_t bc, T s, T* rm, T* rl) {
  at::parallel_for(0, br, std::max<int64_t>(1, 16384 / std::max<int64_t>(bc, 1)),
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       const T* row = x + r * bc;
                       const T tmax = s * max_of(row, bc);
                       const T new_max = std::max(rm[r], tmax);
                       if (new_max == kNegInf<T>) continue;  // everything so far masked
                       merge(rm[r], rl[r], sum_exp(row, bc, s, new_max), new_max);
                     }
                   });
}

// Column statistics of a tile (columns j0.. of the (m, l) state arrays).
template <typename T>
void tile_col_stats(const T* x, int64_t br, int64_t bc, T s, T* cm, T* cl) {
  const int64_t chunks = (bc + kColChunk - 1) / kColChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    T cmax[kColChunk], newm[kColChunk], acc[kColChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * kColChunk, w = std::min(kColChunk, bc - j0);
      std::fill(cmax, cmax + w, kNegInf<T>);
      for (int64_t r = 0; r < br; ++r) col_max(x + r * bc + j0, w, cmax);
      for (int64_t j = 0; j < w; ++j) {
        const T nm = std::max(cm[j0 + j], s * cmax[j]);
        // A column masked everywhere so far keeps a -inf maximum; its terms are zero.
        newm[j] = nm == kNegInf<T> ? T(0) : nm;
        acc[j] = T(0);
      }
      for (int64_t r = 0; r < br; ++r) col_sum_exp(x + r * bc + j0, w, s, newm, acc);
      for (int64_t j = 0; j < w; ++j) {
        if (cm[j0 + j] == kNegInf<T> && cmax[j] == kNegInf<T>) continue;
        merge(cm[j0 + j], cl[j0 + j], acc[j], newm[j]);
      }
    }
  });
}

template <typename T>
void forward_typed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& scale,
                   const at::Tensor& exclude, bool symmetric, const at::Tensor& row_lse,
                   const at::Tensor& col_lse) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = scale.item<T>();
  const int64_t* ex = exclude.defined() ? exclude.data_ptr<int64_t>() : nullptr;
  const bool cols = col_lse.defined();
  std::vector<T> rm(n, kNegInf<T>), rl(n, T(0)), cm(cols ? m : 0, kNegInf<T>), cl(cols ? m : 0, T(0));
  at::Tensor buf = at::empty({std::min(n, kTile), std::min(m, kTile)}, q.options());
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = symmetric ? i0 : 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      at::Tensor r = tile_product<T>(q, k, buf, i0, br, j0, bc);
      T* x = r.data_ptr<T>();
      for (const auto& [rr, cc] : masked_in_tile(ex, i0, br, j0, bc)) x[rr * bc + cc] = kNegInf<T>;
      if (symmetric && j0 != i0) {
        // The tile's transpose is tile (j0, i0): its columns are rows j0.. of q = k; the
        // mask (the diagonal) does not meet off-diagonal tiles.
        tile_col_stats(x, br, bc, s, rm.data() + j0, rl.data() + j0);
      }
      tile_row_stats(x, br, bc, s, rm.data() + i0, rl.data() + i0);
      if (cols) tile_col_stats(x, br, bc, s, cm.data() + j0, cl.data() + j0);
    }
  }
  T* out = row_lse.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) out[i] = rm[i] + std::log(rl[i]);
  if (cols) {
    T* cout = col_lse.data_ptr<T>();
    for (int64_t j = 0; j < m; ++j) cout[j] = cm[j] + std::log(cl[j]);
  }
}

template <typename T>
void backward_typed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& scale,
                    const at::Tensor& exclude, bool symmetric, const at::Tensor& row_lse,
                    const at::Tensor& alpha, const at::Tensor& col_lse, const at::Tensor& beta,
                    const at::Tensor& grad_q, const at::Tensor& grad_k,
                    const at::Tensor& grad_scale) {
  const int64_t n = q.size(0), m = k.size(0);
  const T s = scale.item<T>();
  const int64_t* ex = exclude.defined() ? exclude.data_ptr<int64_t>() : nullptr;
  const bool cols = col_lse.defined();
  const T* lse = row_lse.data_ptr<T>();
  const T* a = alpha.data_ptr<T>();
  // Symmetric: the column term of tile (I, J) is row J's own term, transposed.
  const T* clse = cols ? col_lse.data_ptr<T>() : (symmetric ? lse : nullptr);
  const T* b = cols ? beta.data_ptr<T>() : (symmetric ? a : nullptr);
  const bool two_terms = cols || symmetric;
  at::Tensor buf = at::empty({std::min(n, kTile), std::min(m, kTile)}, q.options());
  std::vector<T> partial(kTile);
  double total = 0;  // sum(W * R), added in tile and row order
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t br = std::min(kTile, n - i0);
    for (int64_t j0 = symmetric ? i0 : 0; j0 < m; j0 += kTile) {
      const int64_t bc = std::min(kTile, m - j0);
      const bool diag = symmetric && j0 == i0;
      at::Tensor r = tile_product<T>(q, k, buf, i0, br, j0, bc);
      T* x = r.data_ptr<T>();
      // A masked entry gets a finite R so negative that its weight exp(s R - lse) is
      // exactly 0 and its W * R term is 0 * R = 0. (Adding its weight and subtracting it
      // afterwards cancels catastrophically: lse excludes it, so the weight is huge.)
      const T never = -std::numeric_limits<T>::max() / (T(2) * std::max(s, T(1)));
      for (const auto& [rr, cc] : masked_in_tile(ex, i0, br, j0, bc)) x[rr * bc + cc] = never;
      at::parallel_for(0, br, std::max<int64_t>(1, 16384 / bc), [&](int64_t r0, int64_t r1) {
        for (int64_t rr = r0; rr < r1; ++rr) {
          const int64_t i = i0 + rr;
          partial[rr] = two_terms ? weights_row<T, true>(x + rr * bc, bc, s, a[i], lse[i], b + j0, clse + j0)
                                  : weights_row<T, false>(x + rr * bc, bc, s, a[i], lse[i], nullptr, nullptr);
        }
      });
      double tile_sum = 0;
      for (int64_t rr = 0; rr < br; ++rr) tile_sum += partial[rr];
      total += diag ? 0.5 * tile_sum : tile_sum;
      const at::Tensor w = r;
      grad_q.narrow(0, i0, br).addmm_(w, k.narrow(0, j0, bc), 1, s);
      if (symmetric) {
        if (!diag) grad_q.narrow(0, j0, bc).addmm_(w.t(), q.narrow(0, i0, br), 1, s);
      } else {
        grad_k.narrow(0, j0, bc).addmm_(w.t(), q.narrow(0, i0, br), 1, s);
      }
    }
  }
  grad_scale.add_(total);
}

struct CpuBackend {
  static void forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& scale,
                      const at::Tensor& exclude, bool symmetric, const at::Tensor& row_lse,
                      const at::Tensor& col_lse) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "contrastive_forward_cpu", [&] {
      forward_typed<scalar_t>(q, k, scale, exclude, symmetric, row_lse, col_lse);
    });
  }
  static void backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& scale,
                       const at::Tensor& exclude, bool symmetric, const at::Tensor& row_lse,
                       const at::Tensor& alpha, const at::Tensor& col_lse, const at::Tensor& beta,
                       const at::Tensor& grad_q, const at::Tensor& grad_k,
                       const at::Tensor& grad_scale) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "contrastive_backward_cpu", [&] {
      backward_typed<scalar_t>(q, k, scale, exclude, symmetric, row_lse, alpha, col_lse, beta,
                               grad_q, grad_k, grad_scale);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("clip_loss", &clip_loss_impl<CpuBackend>);
  m.impl("clip_loss_backward", &clip_loss_backward_impl<CpuBackend>);
  m.impl("nt_xent_loss", &nt_xent_loss_impl<CpuBackend>);
  m.impl("nt_xent_loss_backward", &nt_xent_loss_backward_impl<CpuBackend>);
  m.impl("contrastive_rows", &contrastive_rows_impl<CpuBackend>);
  m.impl("contrastive_rows_backward", &contrastive_rows_backward_impl<CpuBackend>);
}

}  // namespace contrastive
}  // namespace gencore
