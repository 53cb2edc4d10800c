// CPU backend of the nearest-code search (vq.h has the contract).
//
// The codebook is packed once into panels of kLanes codes stored dimension-major
// (panel p, dimension d: the kLanes values codes[p kLanes + l][d] side by side), padded
// with zero codes whose squared norm is +inf so that they never win. A register-blocked
// micro-kernel computes a kRows x kLanes block of dot products, every one of them by the
// same sequence of multiply-adds in increasing d, so identical codes give bit-identical
// distances and an exact tie is a tie (a BLAS GEMM may compute the columns of a tile by
// different kernels, and it did: a duplicated code came out one ulp nearer). Each block
// is turned into distances code_sq[j] - 2 <x_i, c_j> and merged into a running
// (minimum, index) per row and lane, strictly smaller replacing; lanes see their codes
// in increasing order, and the lanes of a row are combined at the end by (value, index),
// so ties go to the lowest index. Tasks are blocks of rows, each reduced by one thread:
// the results do not depend on the thread count. Memory: the packed codebook and a
// (rows, kLanes) running state per task, O((N + K) D) for any N and K; no (N, K) matrix.

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "common/cpu_loop.h"
#include "vq/vq.h"

namespace gencore {
namespace vq {
namespace {

constexpr int kRows = 6;              // rows of x per micro-kernel call
constexpr int64_t kBlockRows = 96;    // rows of x per task (a multiple of kRows)
constexpr int64_t kChunkBytes = 64 << 10;  // packed codes visited per pass over a task's rows

template <typename T>
constexpr int lanes() {
  return 64 / sizeof(T);  // 16 floats or 8 doubles: two AVX2 registers
}

// acc[r][l] = sum_d x[r][d] * panel[d][l] for kRows rows of x (row stride ld) and one
// panel; then the distances code_sq[l] - 2 acc are merged into the running state.
template <typename T>
GENCORE_CPU_CLONES void block_merge(const T* __restrict x, int64_t ld, const T* __restrict panel,
                                    int64_t d, const T* __restrict code_sq, int64_t j0,
                                    T* __restrict best, int64_t* __restrict best_j) {
  constexpr int L = lanes<T>();
  T acc[kRows][L];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma omp simd
    for (int l = 0; l < L; ++l) acc[r][l] = T(0);
  for (int64_t k = 0; k < d; ++k) {
    const T* p = panel + k * L;
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const T xv = x[r * ld + k];
#pragma omp simd
      for (int l = 0; l < L; ++l) acc[r][l] += xv * p[l];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    T* bv = best + r * L;
    int64_t* bj = best_j + r * L;
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const T v = code_sq[l] - T(2) * acc[r][l];
      const bool win = v < bv[l];  // NaN never wins; ties keep the earlier code
      bv[l] = win ? v : bv[l];
      bj[l] = win ? j0 + l : bj[l];
    }
  }
}

template <typename T>
void search_typed(const Tensor& x, const Tensor& codes, const Tensor& code_sq,
                  const Tensor& index, const Tensor& best) {
  constexpr int L = lanes<T>();
  const int64_t n = x.size(0), k = codes.size(0), d = x.size(1);
  const int64_t panels = (k + L - 1) / L;
  // Pack the codebook into dimension-major panels; padding codes are 0 with norm +inf.
  std::vector<T> packed(static_cast<size_t>(panels * std::max<int64_t>(d, 1) * L), T(0));
  std::vector<T> sq(static_cast<size_t>(panels * L), std::numeric_limits<T>::infinity());
  const T* cp = codes.const_data_ptr<T>();
  const T* csq = code_sq.const_data_ptr<T>();
  torch::stable::parallel_for(0, panels, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int l = 0; l < L && p * L + l < k; ++l) {
        const int64_t j = p * L + l;
        for (int64_t c = 0; c < d; ++c) packed[(p * d + c) * L + l] = cp[j * d + c];
        sq[p * L + l] = csq[j];
      }
  });
  // Panels per pass: a chunk of packed codes that stays in cache while a task's rows
  // visit it.
  const int64_t chunk = std::max<int64_t>(
      1, kChunkBytes / static_cast<int64_t>(std::max<int64_t>(d, 1) * L * sizeof(T)));
  const T* xp = x.const_data_ptr<T>();
  T* out_v = best.mutable_data_ptr<T>();
  int64_t* out_j = index.mutable_data_ptr<int64_t>();
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  torch::stable::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> bv(kBlockRows * L), pad(static_cast<size_t>(kRows * std::max<int64_t>(d, 1)));
    std::vector<int64_t> bj(kBlockRows * L);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlockRows, rows = std::min(kBlockRows, n - i0);
      std::fill(bv.begin(), bv.end(), std::numeric_limits<T>::infinity());
      std::fill(bj.begin(), bj.end(), int64_t{0});
      for (int64_t c0 = 0; c0 < panels; c0 += chunk) {
        const int64_t c1 = std::min(panels, c0 + chunk);
        for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
          const T* xs = xp + (i0 + r0) * d;
          if (r0 + kRows > rows) {  // the last rows, zero-padded to kRows
            std::fill(pad.begin(), pad.end(), T(0));
            if (d > 0) std::memcpy(pad.data(), xs, sizeof(T) * (rows - r0) * d);
            xs = pad.data();
          }
          for (int64_t p = c0; p < c1; ++p)
            block_merge<T>(xs, d, packed.data() + p * d * L, d, sq.data() + p * L, p * L,
                           bv.data() + r0 * L, bj.data() + r0 * L);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {  // the lanes of a row, by (value, index)
        T v = bv[r * L];
        int64_t j = bj[r * L];
        for (int l = 1; l < L; ++l) {
          const T lv = bv[r * L + l];
          const int64_t lj = bj[r * L + l];
          if (lv < v || (lv == v && lj < j)) {
            v = lv;
            j = lj;
          }
        }
        out_v[i0 + r] = v;
        out_j[i0 + r] = j;
      }
    }
  });
}

struct CpuBackend {
  static void search(const Tensor& x, const Tensor& codes, const Tensor& code_sq,
                     const Tensor& index, const Tensor& best) {
    GENCORE_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nearest_code_cpu", [&] {
      search_typed<scalar_t>(x, codes, code_sq, index, best);
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("nearest_code", TORCH_BOX(&nearest_code_impl<CpuBackend>));
}

}  // namespace vq
}  // namespace gencore
