// CUDA backend of the contrastive losses (contrastive.h): the O(n m D) passes over the
// matrix of logits L = scale * q k^T, tiled so that L is never stored.
//
// Every kernel has the same shape. A block of 256 threads owns kTile = 64 rows of one
// operand X and loops over 64-row tiles of the other operand Y; a tile R = X Y^T
// (64 x 64) is built from shared-memory slices over D, each thread holding a 4 x 4 piece
// of it in registers (rows ty + 16 i, columns tx + 16 j, ty = tid / 16, tx = tid % 16).
// The slice products are SIMT fused multiply-adds in float32 (float64 for double), or,
// for float16 and bfloat16, nvcuda::wmma 16x16x16 tensor-core products with float32
// accumulators (GENCORE_CONTRASTIVE_SIMT=1 forces the SIMT path, for comparisons).
//   forward: X = q (rows) or X = k (columns), an online (max, sum) per owned row.
//   backward: W of the tile is recomputed from the forward's log-sum-exps, staged in
//   shared memory, and W Y is added into the owned rows of grad_x (grad_q with X = q,
//   grad_k with X = k); only the block owning those rows touches them, so no atomics.
// When X has too few row blocks to fill the GPU, the Y tiles are split over gridDim.y;
// the splits' partial results are combined in a fixed order, as are the per-block
// partial sums of grad_scale: every result is deterministic (on one GPU model: the
// split count follows the number of SMs).
// The sigmoid (SigLIP) loss runs on the same tiles with an elementwise epilogue instead
// of the log-sum-exp: softplus_sum_kernel (forward) and sigmoid_grad_kernel (backward,
// sharing grad_kernel's W y accumulation, add_w_times_y).
// Those tile kernels serve small problems. From 2048 x 2048 pairs on, every loss takes the
// GEMM-chunked path instead (its section below): cuBLAS products over chunks of query
// rows, with one elementwise kernel per chunk in between.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "common/cuda_context.h"
#include "common/cuda_utils.cuh"
#include "contrastive/contrastive.h"

namespace gencore {
namespace contrastive {
namespace {

using cuda::kWarp;
using cuda::warp_sum;

constexpr int kTile = 64;        // rows of X per block, rows of Y per tile
constexpr int kThreads = 256;    // a 16 x 16 grid of threads over the 64 x 64 tile
constexpr int kSide = 16;        // threads along each side of the tile
constexpr int kMicro = 4;        // rows (and columns) of the tile per thread
constexpr int kBlocksPerSm = 4;  // target resident blocks when choosing the Y split
// The backward's split partials of grad_x live in a (splits, nx, D) buffer: capped.
constexpr int64_t kMaxSplitBytes = int64_t{256} << 20;

static_assert(kSide * kMicro == kTile && kSide * kSide == kThreads, "tile geometry");

// D slice per shared-memory step of the SIMT product: 16 (float), 8 (double), which
// keeps the backward's static shared memory under 48 KiB for double.
template <typename A>
constexpr int simt_slice() {
  return sizeof(A) == 8 ? 8 : 16;
}

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }

// A logit as one rounded product. nvcc would fuse `scale * acc - m` into an fma, whose
// exact product minus the rounded row maximum leaves the maximum's own exponent off by
// the product's rounding error: thousands at logits of 1e20, and the sums overflow or
// vanish (the CPU tiles take the scale as the GEMM's alpha for the same reason).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float dev_log(float v) { return logf(v); }
__device__ __forceinline__ double dev_log(double v) { return log(v); }

// softplus(v) = log(1 + exp(v)) and sigmoid(v), without overflow at any v.
__device__ __forceinline__ float dev_softplus(float v) { return fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v))); }
__device__ __forceinline__ double dev_softplus(double v) { return fmax(v, 0.0) + log1p(exp(-fabs(v))); }
__device__ __forceinline__ float dev_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ double dev_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

// Merges the log-sum-exp state (m2, s2) into (m, s), where lse = m + log(s) and
// (-inf, 0) is the empty state.
template <typename A>
__device__ __forceinline__ void lse_merge(A& m, A& s, A m2, A s2) {
  const A mx = m2 > m ? m2 : m;
  if (mx == neg_inf<A>()) return;  // both empty: exp(-inf - -inf) would be NaN
  s = s * dev_exp(m - mx) + s2 * dev_exp(m2 - mx);
  m = mx;
}

// ------------------------------------------------------------------ tile products ------
// Dot::run(sm, x, nx, a0, y, ny, b0, D, acc): acc[i][j] = <x[a0 + ty + 16 i], y[b0 + tx +
// 16 j]> over all D, rows past nx / ny read as zeros. Called by every thread of the
// block (it synchronizes); it writes only its own shared memory `sm`.

template <typename T, typename A>
struct SimtDot {
  static constexpr int kK = simt_slice<A>();
  // Slices stored transposed, [d][row], so the 4 x 4 reads are conflict-free; the + 1
  // pad spreads the transposing stores over the banks.
  struct Smem {
    A x[kK][kTile + 1];
    A y[kK][kTile + 1];
  };

  __device__ __forceinline__ static void run(Smem& sm, const T* __restrict__ x, int64_t nx,
                                             int64_t a0, const T* __restrict__ y, int64_t ny,
                                             int64_t b0, int64_t D, A (&acc)[kMicro][kMicro]) {
    const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
#pragma unroll
    for (int i = 0; i < kMicro; ++i)
#pragma unroll
      for (int j = 0; j < kMicro; ++j) acc[i][j] = A(0);
    for (int64_t d0 = 0; d0 < D; d0 += kK) {
      // Consecutive threads read consecutive d of one row: coalesced.
#pragma unroll
      for (int l = 0; l < kTile * kK / kThreads; ++l) {
        const int e = tid + l * kThreads, r = e / kK, c = e % kK;
        const int64_t d = d0 + c;
        sm.x[c][r] = (a0 + r < nx && d < D) ? static_cast<A>(x[(a0 + r) * D + d]) : A(0);
        sm.y[c][r] = (b0 + r < ny && d < D) ? static_cast<A>(y[(b0 + r) * D + d]) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int c = 0; c < kK; ++c) {
        A xv[kMicro], yv[kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i) xv[i] = sm.x[c][ty + kSide * i];
#pragma unroll
        for (int j = 0; j < kMicro; ++j) yv[j] = sm.y[c][tx + kSide * j];
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) acc[i][j] += xv[i] * yv[j];
      }
      __syncthreads();
    }
  }
};

template <typename T>
struct MmaElement;
template <>
struct MmaElement<c10::Half> {
  using type = __half;
};
template <>
struct MmaElement<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// Tensor cores for float16 / bfloat16: warp w computes the 16 x 32 sub-tile at rows
// 16 (w / 2), columns 32 (w % 2) as two 16x16 float accumulators, over D slices of 32.
// The accumulators go through shared memory into the threads' 4 x 4 layout.
template <typename T>
struct MmaDot {
  using E = typename MmaElement<T>::type;  // same bits as T
  static constexpr int kK = 32;
  static constexpr int kLd = kK + 8;       // halves: a multiple of 8, rows 32-byte aligned
  static constexpr int kOutLd = kTile + 4;  // floats: a multiple of 4
  struct alignas(32) Smem {
    T x[kTile][kLd];  // [row][d]: wmma's row-major A and column-major B
    T y[kTile][kLd];
    float out[kTile][kOutLd];
  };

  __device__ __forceinline__ static void run(Smem& sm, const T* __restrict__ x, int64_t nx,
                                             int64_t a0, const T* __restrict__ y, int64_t ny,
                                             int64_t b0, int64_t D,
                                             float (&acc)[kMicro][kMicro]) {
    const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // No bfloat16 wmma before sm_80: the same slices, multiplied one by one.
#pragma unroll
    for (int i = 0; i < kMicro; ++i)
#pragma unroll
      for (int j = 0; j < kMicro; ++j) acc[i][j] = 0.0f;
#else
    namespace wmma = nvcuda::wmma;
    const int warp = tid / kWarp, wr = warp / 2, wc = (warp % 2) * 2;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c_frag[2];
    wmma::fill_fragment(c_frag[0], 0.0f);
    wmma::fill_fragment(c_frag[1], 0.0f);
#endif
    for (int64_t d0 = 0; d0 < D; d0 += kK) {
#pragma unroll
      for (int l = 0; l < kTile * kK / kThreads; ++l) {
        const int e = tid + l * kThreads, r = e / kK, c = e % kK;
        const int64_t d = d0 + c;
        sm.x[r][c] = (a0 + r < nx && d < D) ? x[(a0 + r) * D + d] : T(0.0f);
        sm.y[r][c] = (b0 + r < ny && d < D) ? y[(b0 + r) * D + d] : T(0.0f);
      }
      __syncthreads();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
      for (int c = 0; c < kK; ++c)
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j)
            acc[i][j] += static_cast<float>(sm.x[ty + kSide * i][c]) *
                         static_cast<float>(sm.y[tx + kSide * j][c]);
#else
#pragma unroll
      for (int kk = 0; kk < kK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> a_frag;
        wmma::load_matrix_sync(a_frag, reinterpret_cast<const E*>(&sm.x[16 * wr][kk]), kLd);
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          // y stored [row][d] is the column-major (d, row) operand B = y^T.
          wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::col_major> b_frag;
          wmma::load_matrix_sync(b_frag, reinterpret_cast<const E*>(&sm.y[16 * (wc + f)][kk]),
                                 kLd);
          wmma::mma_sync(c_frag[f], a_frag, b_frag, c_frag[f]);
        }
      }
#endif
      __syncthreads();
    }
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800)
    // For D == 0 the loop above has no barrier: the previous call's readers of sm.out
    // must be done before it is overwritten.
    __syncthreads();
#pragma unroll
    for (int f = 0; f < 2; ++f)
      wmma::store_matrix_sync(&sm.out[16 * wr][16 * (wc + f)], c_frag[f], kOutLd,
                              wmma::mem_row_major);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMicro; ++i)
#pragma unroll
      for (int j = 0; j < kMicro; ++j) acc[i][j] = sm.out[ty + kSide * i][tx + kSide * j];
#endif
  }
};

// ------------------------------------------------------------------ kernels ------------
// X (nx, D) is owned by the blocks, Y (ny, D) is looped over. kXIsQuery: X = q, Y = k
// (row i of L is row a of the block); otherwise X = k, Y = q (L transposed).
template <typename T, typename A>
struct Pair {
  const T* x;
  const T* y;
  int64_t nx, ny, d;
  const A* scale;            // 0-d, on the device
  const int64_t* exclude;    // (n_query,): masked key of each query row; nullptr: none
  int64_t tiles_per_split;   // Y tiles per blockIdx.y
};

// Y tiles [begin, end) of this block's split.
struct TileRange {
  int64_t begin, end;
};

__device__ __forceinline__ TileRange tile_range(int64_t ny, int64_t tiles_per_split) {
  const int64_t tiles = (ny + kTile - 1) / kTile;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * tiles_per_split;
  const int64_t end = begin + tiles_per_split;
  return {begin, end < tiles ? end : tiles};
}

// Log-sum-exp over Y of each row of X: row_lse (kXIsQuery) or col_lse. One split: lse
// written directly; several: the (max, sum) states go to part_m / part_s (splits, nx).
template <typename T, typename A, class Dot, bool kXIsQuery>
__global__ void __launch_bounds__(kThreads)
    lse_kernel(Pair<T, A> p, A* __restrict__ lse, A* __restrict__ part_m,
               A* __restrict__ part_s) {
  __shared__ typename Dot::Smem dot_sm;
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const A scale = *p.scale;
  int64_t own_ex[kMicro];  // kXIsQuery: the masked key of each owned row
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    const int64_t a = a0 + ty + kSide * i;
    own_ex[i] = (kXIsQuery && p.exclude != nullptr && a < p.nx) ? p.exclude[a] : -1;
  }
  A m[kMicro], s[kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    m[i] = neg_inf<A>();
    s[i] = A(0);
  }
  const TileRange tr = tile_range(p.ny, p.tiles_per_split);
  for (int64_t t = tr.begin; t < tr.end; ++t) {
    const int64_t b0 = t * kTile;
    A acc[kMicro][kMicro];
    Dot::run(dot_sm, p.x, p.nx, a0, p.y, p.ny, b0, p.d, acc);
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t b = b0 + tx + kSide * j;
      if (b >= p.ny) continue;
      // !kXIsQuery: column b of the tile is query row b, which masks key exclude[b].
      const int64_t oth_ex = (!kXIsQuery && p.exclude != nullptr) ? p.exclude[b] : -1;
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int64_t a = a0 + ty + kSide * i;
        if (kXIsQuery ? own_ex[i] == b : oth_ex == a) continue;
        const A l = mul_rn(scale, acc[i][j]);
        if (l > m[i]) {
          s[i] = s[i] * dev_exp(m[i] - l) + A(1);
          m[i] = l;
        } else {
          s[i] += dev_exp(l - m[i]);
        }
      }
    }
  }
  // The 16 threads of a row (tx = 0..15) are 16 consecutive lanes of one warp.
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
#pragma unroll
    for (int o = kSide / 2; o > 0; o /= 2) {
      const A m2 = __shfl_xor_sync(0xffffffffu, m[i], o);
      const A s2 = __shfl_xor_sync(0xffffffffu, s[i], o);
      lse_merge(m[i], s[i], m2, s2);
    }
    const int64_t a = a0 + ty + kSide * i;
    if (tx == 0 && a < p.nx) {
      if (gridDim.y == 1) {
        lse[a] = m[i] + dev_log(s[i]);
      } else {
        part_m[blockIdx.y * p.nx + a] = m[i];
        part_s[blockIdx.y * p.nx + a] = s[i];
      }
    }
  }
}

// lse[a] from the (splits, n) partial states, merged in split order.
template <typename A>
__global__ void lse_split_merge_kernel(const A* __restrict__ part_m, const A* __restrict__ part_s,
                                       int64_t n, int64_t splits, A* __restrict__ lse) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= n) return;
  A m = neg_inf<A>(), s = A(0);
  for (int64_t k = 0; k < splits; ++k) lse_merge(m, s, part_m[k * n + a], part_s[k * n + a]);
  lse[a] = m + dev_log(s);
}

// The backward's per-row statistics: query side (row_lse, alpha, exclude via Pair) and
// key side (col_lse, beta; nullptr: no column term).
template <typename A>
struct Stats {
  const A* row_lse;
  const A* alpha;
  const A* col_lse;
  const A* beta;
};

template <typename A>
struct QueryStat {
  A lse, coef;
  int64_t ex;
};

template <typename A>
struct KeyStat {
  A lse, coef;
};

template <typename A>
__device__ __forceinline__ QueryStat<A> query_stat(const Stats<A>& st, const int64_t* exclude,
                                                   int64_t i, bool in_range) {
  if (!in_range) return {A(0), A(0), -1};
  return {st.row_lse[i], st.alpha[i], exclude != nullptr ? exclude[i] : -1};
}

template <typename A>
__device__ __forceinline__ KeyStat<A> key_stat(const Stats<A>& st, int64_t j, bool in_range) {
  if (!in_range || st.col_lse == nullptr) return {A(0), A(0)};
  return {st.col_lse[j], st.beta[j]};
}

// out[a, :] += scale * W[a, :] y[b0:b0+64, :] for the block's rows a0.. (W: the tile's
// weights in w_tile), y read in kK-row, 64-column slices. Called by every thread of the
// block: its first barrier publishes w_tile, its last retires w_tile's readers before the
// caller's next tile rewrites it.
template <typename T, typename A>
__device__ __forceinline__ void add_w_times_y(const A (&w_tile)[kTile][kTile + 1],
                                              A (&y_slice)[simt_slice<A>()][kTile + 1],
                                              const Pair<T, A>& p, int64_t a0, int64_t b0,
                                              A scale, A* __restrict__ out) {
  constexpr int kK = simt_slice<A>();
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t D = p.d;
  const int rows = p.ny - b0 < kTile ? static_cast<int>(p.ny - b0) : kTile;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    A acc2[kMicro][kMicro];
#pragma unroll
    for (int i = 0; i < kMicro; ++i)
#pragma unroll
      for (int j = 0; j < kMicro; ++j) acc2[i][j] = A(0);
    for (int c0 = 0; c0 < rows; c0 += kK) {
#pragma unroll
      for (int l = 0; l < kK * kTile / kThreads; ++l) {
        const int e = tid + l * kThreads, c = e / kTile, dd = e % kTile;
        const int64_t b = b0 + c0 + c, d = d0 + dd;
        y_slice[c][dd] = (b < p.ny && d < D) ? static_cast<A>(p.y[b * D + d]) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int c = 0; c < kK; ++c) {
        A wv[kMicro], yv[kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i) wv[i] = w_tile[ty + kSide * i][c0 + c];
#pragma unroll
        for (int j = 0; j < kMicro; ++j) yv[j] = y_slice[c][tx + kSide * j];
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) acc2[i][j] += wv[i] * yv[j];
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kMicro; ++i) {
      const int64_t a = a0 + ty + kSide * i;
      if (a >= p.nx) continue;
#pragma unroll
      for (int j = 0; j < kMicro; ++j) {
        const int64_t d = d0 + tx + kSide * j;
        if (d < D) out[a * D + d] += scale * acc2[i][j];
      }
    }
  }
}

// out[a] += scale * sum_b W(a, b) y[b] for the owned rows a: W = W (kXIsQuery, out =
// grad_q) or W^T (out = grad_k). out: (nx, D), offset by blockIdx.y * nx * D when Y is
// split. scale_partial (kXIsQuery only; nullptr: not wanted): the block's sum(W * R).
// At least two resident blocks per SM: registers capped at 128. Uncapped, ptxas takes
// 174 for the float16 tensor-core grad_k variant (one block per SM); capped, it spills a
// few hundred bytes on sm_80, as does the float64 variant on sm_90.
template <typename T, typename A, class Dot, bool kXIsQuery>
__global__ void __launch_bounds__(kThreads, 2)
    grad_kernel(Pair<T, A> p, Stats<A> st, A* __restrict__ out, A* __restrict__ scale_partial) {
  constexpr int kK = simt_slice<A>();
  __shared__ typename Dot::Smem dot_sm;
  __shared__ A w_tile[kTile][kTile + 1];  // [a][b]
  __shared__ A y_slice[kK][kTile + 1];    // [b][d]: rows b0 + c0 .. of y, a 64-wide d slice
  __shared__ A red[kThreads / kWarp];
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t D = p.d;
  const A scale = *p.scale;
  out += static_cast<int64_t>(blockIdx.y) * p.nx * D;

  QueryStat<A> own_q[kMicro];
  KeyStat<A> own_k[kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    const int64_t a = a0 + ty + kSide * i;
    if (kXIsQuery) {
      own_q[i] = query_stat(st, p.exclude, a, a < p.nx);
    } else {
      own_k[i] = key_stat(st, a, a < p.nx);
    }
  }
  A scale_sum = A(0);

  const TileRange tr = tile_range(p.ny, p.tiles_per_split);
  for (int64_t t = tr.begin; t < tr.end; ++t) {
    const int64_t b0 = t * kTile;
    A acc[kMicro][kMicro];
    Dot::run(dot_sm, p.x, p.nx, a0, p.y, p.ny, b0, D, acc);
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t b = b0 + tx + kSide * j;
      QueryStat<A> oth_q;
      KeyStat<A> oth_k;
      if (kXIsQuery) {
        oth_k = key_stat(st, b, b < p.ny);
      } else {
        oth_q = query_stat(st, p.exclude, b, b < p.ny);
      }
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int64_t a = a0 + ty + kSide * i;
        const QueryStat<A>& qs = kXIsQuery ? own_q[i] : oth_q;
        const KeyStat<A>& ks = kXIsQuery ? oth_k : own_k[i];
        const int64_t key = kXIsQuery ? b : a;
        A w = A(0);
        if (a < p.nx && b < p.ny && qs.ex != key) {
          const A l = mul_rn(scale, acc[i][j]);
          w = qs.coef * dev_exp(l - qs.lse);
          if (st.col_lse != nullptr) w += ks.coef * dev_exp(l - ks.lse);
        }
        scale_sum += w * acc[i][j];
        w_tile[ty + kSide * i][tx + kSide * j] = w;
      }
    }
    add_w_times_y(w_tile, y_slice, p, a0, b0, scale, out);
  }

  if (scale_partial != nullptr) {  // uniform over the block
    scale_sum = warp_sum(scale_sum);
    if (tid % kWarp == 0) red[tid / kWarp] = scale_sum;
    __syncthreads();
    if (tid == 0) {
      A total = A(0);
      for (int w = 0; w < kThreads / kWarp; ++w) total += red[w];
      scale_partial[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = total;
    }
  }
}

// ------------------------------------------------------------------ sigmoid (SigLIP) ---
// The same tiles with an elementwise epilogue: L = scale R + bias, a positive where column
// b == row a + offset.
template <typename A>
struct SigmoidArgs {
  const A* bias;  // 0-d, on the device
  const A* coef;  // 0-d: the backward's grad_loss / n
  int64_t offset;
};

// out[a] += sum over this split's columns b of softplus(-z L[a, b]), X = q (rows of L).
// out: (nx,), offset by blockIdx.y * nx when Y is split.
template <typename T, typename A, class Dot>
__global__ void __launch_bounds__(kThreads)
    softplus_sum_kernel(Pair<T, A> p, SigmoidArgs<A> sa, A* __restrict__ out) {
  __shared__ typename Dot::Smem dot_sm;
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const A scale = *p.scale, bias = *sa.bias;
  A sum[kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) sum[i] = A(0);
  const TileRange tr = tile_range(p.ny, p.tiles_per_split);
  for (int64_t t = tr.begin; t < tr.end; ++t) {
    const int64_t b0 = t * kTile;
    A acc[kMicro][kMicro];
    Dot::run(dot_sm, p.x, p.nx, a0, p.y, p.ny, b0, p.d, acc);
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t b = b0 + tx + kSide * j;
      if (b >= p.ny) continue;
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int64_t a = a0 + ty + kSide * i;
        const A l = mul_rn(scale, acc[i][j]) + bias;
        sum[i] += dev_softplus(b == a + sa.offset ? -l : l);
      }
    }
  }
  out += static_cast<int64_t>(blockIdx.y) * p.nx;
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
#pragma unroll
    for (int o = kSide / 2; o > 0; o /= 2) sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], o);
    const int64_t a = a0 + ty + kSide * i;
    if (tx == 0 && a < p.nx) out[a] += sum[i];
  }
}

// out[a] += scale * sum_b W(a, b) y[b] with W = coef (sigmoid(L) - [positive]) (kXIsQuery:
// X = q, out = grad_q; else X = k, W^T, out = grad_k), out offset by blockIdx.y * nx * D
// when Y is split. partial (kXIsQuery only; nullptr: not wanted): (2, blocks), the block's
// sum(W * R) and sum(W).
template <typename T, typename A, class Dot, bool kXIsQuery>
__global__ void __launch_bounds__(kThreads, 2)
    sigmoid_grad_kernel(Pair<T, A> p, SigmoidArgs<A> sa, A* __restrict__ out,
                        A* __restrict__ partial) {
  constexpr int kK = simt_slice<A>();
  __shared__ typename Dot::Smem dot_sm;
  __shared__ A w_tile[kTile][kTile + 1];  // [a][b]
  __shared__ A y_slice[kK][kTile + 1];
  __shared__ A red[2][kThreads / kWarp];
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const A scale = *p.scale, bias = *sa.bias, coef = *sa.coef;
  out += static_cast<int64_t>(blockIdx.y) * p.nx * p.d;
  A wr_sum = A(0), w_sum = A(0);
  const TileRange tr = tile_range(p.ny, p.tiles_per_split);
  for (int64_t t = tr.begin; t < tr.end; ++t) {
    const int64_t b0 = t * kTile;
    A acc[kMicro][kMicro];
    Dot::run(dot_sm, p.x, p.nx, a0, p.y, p.ny, b0, p.d, acc);
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t b = b0 + tx + kSide * j;
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const int64_t a = a0 + ty + kSide * i;
        A w = A(0);
        if (a < p.nx && b < p.ny) {
          const A l = mul_rn(scale, acc[i][j]) + bias;
          const bool positive = kXIsQuery ? b == a + sa.offset : a == b + sa.offset;
          // sigmoid(L) - 1 = -sigmoid(-L), without the cancellation.
          w = positive ? -coef * dev_sigmoid(-l) : coef * dev_sigmoid(l);
        }
        wr_sum += w * acc[i][j];
        w_sum += w;
        w_tile[ty + kSide * i][tx + kSide * j] = w;
      }
    }
    add_w_times_y(w_tile, y_slice, p, a0, b0, scale, out);
  }
  if (partial != nullptr) {  // uniform over the block
    wr_sum = warp_sum(wr_sum);
    w_sum = warp_sum(w_sum);
    if (tid % kWarp == 0) {
      red[0][tid / kWarp] = wr_sum;
      red[1][tid / kWarp] = w_sum;
    }
    __syncthreads();
    if (tid == 0) {
      A total_wr = A(0), total_w = A(0);
      for (int w = 0; w < kThreads / kWarp; ++w) {
        total_wr += red[0][w];
        total_w += red[1][w];
      }
      const int64_t blocks = static_cast<int64_t>(gridDim.x) * gridDim.y;
      const int64_t blk = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
      partial[blk] = total_wr;
      partial[blocks + blk] = total_w;
    }
  }
}

// ------------------------------------------------------------------ GEMM-chunked path --
// For large problems the O(n m D) products are cuBLAS GEMMs (aten::mm through the stable
// dispatcher) over chunks of C query rows, and only the elementwise work runs in the
// kernels below, one block per row of the chunk:
//   R_c = q_c k^T                         (C, m) in A (the half types: aten::mm.dtype, float32 out)
//   forward:  the rows' statistics from R_c (softplus sums; log-sum-exps, and the
//             columns' running (max, sum) merged chunk by chunk, in order)
//   backward: R_c -> V_c = scale * W_c, then grad_q[c] += V_c k and grad_k += V_c^T q_c.
// For float32 / float64, V_c overwrites R_c and the products are exact GEMMs of A. For
// float16 / bfloat16, every product runs on the tensor cores with float32 accumulation and
// V_c goes to them as two values of the input dtype, hi = round(v) and lo = round(v - hi):
// hi k + lo k = V_c k to about 16 bits, so that the gradients, rounded to the input dtype
// on return, stay within the tests' bound (twice the error of rounding the exact result).
// One rounding (FlashAttention's P) keeps 8 bits, which is not enough where the products
// cancel: the log-sum-exp losses subtract their positive's term outside the products
// (grad = V k - scale k_pos), and where the softmax puts its weight on the positive the two
// nearly cancel (CLIP at N = 1: an error of 0.023 against an exact 0). The sigmoid loss's
// weights are small numbers computed as such (the positive's sigmoid(L) - 1 as
// -sigmoid(-L)), and with one rounding its gradients' worst error over 120 cases of up to
// 1000 x 256 is 3.3 times the bound, where eager bfloat16's is 15 times
// (tools/half_weights_error.py). What the second plane costs is two more products of the
// chunk's size in a training step (five, against eager's three):
// GENCORE_CONTRASTIVE_HALF_WEIGHTS=single (default: split) gives the sigmoid loss one
// rounding, so that a GPU can measure the two side by side (bench/bench_siglip_chunks.py).
// V_c k is short and wide (C x D out of a contraction over all m keys): it runs split-K
// (plan_split_k, run_split_k) so that it fills the GPU.
// Memory: the chunk (C m values of A, plus C m or 2 C m of the input dtype) is capped at
// kChunkBytes, so the (n, m) matrix is never held; for the half types the spent logits'
// storage also holds the chunk's split-K partials and V_c^T q_c, so the chunk is all there
// is. Every sum is in a fixed order (per-row partials indexed by the global row for
// grad_scale and grad_bias, the split-K slices in slice order, chunks one after another on
// the stream): deterministic, on one GPU model (the split-K slice count follows the number
// of SMs, as the tile path's splits do). The tile kernels above keep the small problems
// (n m < kGemmMinPairs; GENCORE_CONTRASTIVE_PATH=tiles|gemm overrides): both paths'
// times on an H200 are in docs/benchmarks.md.
constexpr int64_t kChunkBytes = int64_t{32} << 20;
constexpr int64_t kGemmMinPairs = int64_t{1} << 22;  // 2048 x 2048
constexpr int kRowThreads = 256;

// The sum of v over the block's kRowThreads threads in a fixed order, returned to all.
// `red` is kRowThreads / kWarp values of shared memory, free again on return.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* red) {
  const int tid = threadIdx.x;
  v = warp_sum(v);
  if (tid % kWarp == 0) red[tid / kWarp] = v;
  __syncthreads();
  A total = A(0);
#pragma unroll
  for (int w = 0; w < kRowThreads / kWarp; ++w) total += red[w];
  __syncthreads();
  return total;
}

// The block's (max, sum) states merged in a fixed order, returned to all threads.
template <typename A>
__device__ __forceinline__ void block_lse_merge(A& m, A& s, A* red_m, A* red_s) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const A m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const A s2 = __shfl_xor_sync(0xffffffffu, s, o);
    lse_merge(m, s, m2, s2);
  }
  if (tid % kWarp == 0) {
    red_m[tid / kWarp] = m;
    red_s[tid / kWarp] = s;
  }
  __syncthreads();
  m = neg_inf<A>();
  s = A(0);
#pragma unroll
  for (int w = 0; w < kRowThreads / kWarp; ++w) lse_merge(m, s, red_m[w], red_s[w]);
  __syncthreads();
}

// V = scale * w into the chunk: in place (E = A), or in the input dtype E at vv[j] (the
// row's place in the (rows, m) plane of V), rounded once (kPlanes = 1), or as hi there and
// lo one plane (rows * m values) further (kPlanes = 2).
template <typename A, typename E, int kPlanes>
__device__ __forceinline__ void store_weight(A* row, E* vv, int64_t plane, int64_t j, A v) {
  if constexpr (std::is_same_v<E, A>) {
    row[j] = v;
  } else if constexpr (kPlanes == 1) {
    vv[j] = static_cast<E>(v);
  } else {
    const E hi = static_cast<E>(v);
    vv[j] = hi;
    vv[plane + j] = static_cast<E>(v - static_cast<A>(hi));
  }
}

// row_sum[r0 + r] += sum_j softplus(-z L[r, j]), L = scale R + bias, for the chunk's row r
// (blockIdx.x); the positive of query row i is column i + offset.
template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    gemm_softplus_rows_kernel(const A* __restrict__ R, int64_t m, int64_t r0,
                              const A* __restrict__ scale_p, const A* __restrict__ bias_p,
                              int64_t offset, A* __restrict__ row_sum) {
  __shared__ A red[kRowThreads / kWarp];
  const int64_t r = blockIdx.x, i = r0 + r, pos = i + offset;
  const A* row = R + r * m;
  const A scale = *scale_p, bias = *bias_p;
  A sum = A(0);
  for (int64_t j = threadIdx.x; j < m; j += kRowThreads) {
    const A l = mul_rn(scale, row[j]) + bias;
    sum += dev_softplus(j == pos ? -l : l);
  }
  sum = block_sum(sum, red);
  if (threadIdx.x == 0) row_sum[i] += sum;
}

// The sigmoid loss's weights of the chunk's row r: W = coef (sigmoid(L) - [positive]),
// stored as V = scale W (store_weight, in kPlanes planes); partial (nullptr: not wanted)
// gets the row's sum(W * R) at [i] and sum(W) at [n + i]; row_sum (nullptr: not wanted) +=
// the row's loss sum(softplus(-z L)), as gemm_softplus_rows_kernel would add it.
template <typename A, typename E, int kPlanes>
__global__ void __launch_bounds__(kRowThreads)
    gemm_sigmoid_weights_kernel(A* __restrict__ R, E* __restrict__ hilo, int64_t rows,
                                int64_t m, int64_t n, int64_t r0, const A* __restrict__ scale_p,
                                const A* __restrict__ bias_p, const A* __restrict__ coef_p,
                                int64_t offset, A* __restrict__ partial,
                                A* __restrict__ row_sum) {
  __shared__ A red[kRowThreads / kWarp];
  const int64_t r = blockIdx.x, i = r0 + r, pos = i + offset;
  A* row = R + r * m;
  E* vv = hilo != nullptr ? hilo + r * m : nullptr;
  const A scale = *scale_p, bias = *bias_p, coef = *coef_p;
  const bool want_loss = row_sum != nullptr;  // uniform over the block, as partial is
  A wr_sum = A(0), w_sum = A(0), loss = A(0);
  for (int64_t j = threadIdx.x; j < m; j += kRowThreads) {
    const A rv = row[j];
    const A l = mul_rn(scale, rv) + bias;
    // sigmoid(L) - 1 = -sigmoid(-L), without the cancellation.
    const A w = j == pos ? -coef * dev_sigmoid(-l) : coef * dev_sigmoid(l);
    if (want_loss) loss += dev_softplus(j == pos ? -l : l);
    wr_sum += w * rv;
    w_sum += w;
    store_weight<A, E, kPlanes>(row, vv, rows * m, j, scale * w);
  }
  if (want_loss) {
    loss = block_sum(loss, red);
    if (threadIdx.x == 0) row_sum[i] += loss;
  }
  if (partial == nullptr) return;
  wr_sum = block_sum(wr_sum, red);
  w_sum = block_sum(w_sum, red);
  if (threadIdx.x == 0) {
    partial[i] = wr_sum;
    partial[n + i] = w_sum;
  }
}

// Row log-sum-exps of the chunk (row_lse[r0 + r], query row i masks key exclude[i]), and
// the columns' running (max, sum) states col_m / col_s (m,) merged with this chunk's rows
// in row order (nullptr: no column statistics). Blocks [0, rows) do the rows; blocks from
// `rows` on do kRowThreads columns each.
template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    gemm_lse_kernel(const A* __restrict__ R, int64_t rows, int64_t m, int64_t r0,
                    const A* __restrict__ scale_p, const int64_t* __restrict__ exclude,
                    A* __restrict__ row_lse, A* __restrict__ col_m, A* __restrict__ col_s) {
  __shared__ A red_m[kRowThreads / kWarp], red_s[kRowThreads / kWarp];
  const A scale = *scale_p;
  if (static_cast<int64_t>(blockIdx.x) < rows) {
    const int64_t r = blockIdx.x, i = r0 + r;
    const int64_t ex = exclude != nullptr ? exclude[i] : -1;
    const A* row = R + r * m;
    A mx = neg_inf<A>(), s = A(0);
    for (int64_t j = threadIdx.x; j < m; j += kRowThreads) {
      if (j == ex) continue;
      const A l = mul_rn(scale, row[j]);
      if (l > mx) {
        s = s * dev_exp(mx - l) + A(1);
        mx = l;
      } else {
        s += dev_exp(l - mx);
      }
    }
    block_lse_merge(mx, s, red_m, red_s);
    if (threadIdx.x == 0) row_lse[i] = mx + dev_log(s);
    return;
  }
  const int64_t j = (static_cast<int64_t>(blockIdx.x) - rows) * kRowThreads + threadIdx.x;
  if (j >= m) return;
  A mx = col_m[j], s = col_s[j];
  for (int64_t r = 0; r < rows; ++r) {
    if (exclude != nullptr && exclude[r0 + r] == j) continue;
    const A l = mul_rn(scale, R[r * m + j]);
    if (l > mx) {
      s = s * dev_exp(mx - l) + A(1);
      mx = l;
    } else {
      s += dev_exp(l - mx);
    }
  }
  col_m[j] = mx;
  col_s[j] = s;
}

// lse[j] = m + log(s) of the columns' final states.
template <typename A>
__global__ void gemm_lse_finish_kernel(const A* __restrict__ col_m, const A* __restrict__ col_s,
                                       int64_t m, A* __restrict__ lse) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < m) lse[j] = col_m[j] + dev_log(col_s[j]);
}

// The log-sum-exp losses' weights of the chunk's row r: W = alpha_i P + beta_j C (the C
// term only with col_lse), 0 at the excluded key; stored as V = scale W (hi and lo);
// partial (nullptr: not wanted) gets the row's sum(W * R) at [i].
template <typename A, typename E>
__global__ void __launch_bounds__(kRowThreads)
    gemm_lse_weights_kernel(A* __restrict__ R, E* __restrict__ hilo, int64_t rows, int64_t m,
                            int64_t r0,
                            const A* __restrict__ scale_p, const int64_t* __restrict__ exclude,
                            Stats<A> st, A* __restrict__ partial) {
  __shared__ A red[kRowThreads / kWarp];
  const int64_t r = blockIdx.x, i = r0 + r;
  const int64_t ex = exclude != nullptr ? exclude[i] : -1;
  A* row = R + r * m;
  E* vv = hilo != nullptr ? hilo + r * m : nullptr;
  const A scale = *scale_p, lse = st.row_lse[i], alpha = st.alpha[i];
  A wr_sum = A(0);
  for (int64_t j = threadIdx.x; j < m; j += kRowThreads) {
    const A rv = row[j];
    A w = A(0);
    if (j != ex) {
      const A l = mul_rn(scale, rv);
      w = alpha * dev_exp(l - lse);
      if (st.col_lse != nullptr) w += st.beta[j] * dev_exp(l - st.col_lse[j]);
    }
    wr_sum += w * rv;
    store_weight<A, E, 2>(row, vv, rows * m, j, scale * w);
  }
  if (partial == nullptr) return;  // uniform over the block
  wr_sum = block_sum(wr_sum, red);
  if (threadIdx.x == 0) partial[i] = wr_sum;
}

// dst[e] += the sum of src[p count + e] over p < parts, in that order: one partial product
// (parts = 1), or the split-K partials of gemm_backward's V k (for the half types each
// slice's hi rows, then its lo rows).
template <typename A>
__global__ void add_parts_kernel(A* __restrict__ dst, const A* __restrict__ src, int64_t count,
                                 int64_t parts) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += stride) {
    A sum = A(0);
    for (int64_t p = 0; p < parts; ++p) sum += src[p * count + e];
    dst[e] += sum;
  }
}

// ------------------------------------------------------------------ launchers ----------
using Grid = cuda::SplitGrid;

// Row blocks of X times splits of Y's tiles, enough blocks to fill the device when X
// alone is too short; no more than max_splits splits, none of them empty.
Grid make_grid(int64_t nx, int64_t ny, int64_t max_splits, int device) {
  return cuda::split_grid(nx, ny, kTile, kBlocksPerSm, max_splits, device, "contrastive");
}

template <typename T, typename A>
Pair<T, A> make_pair(const Tensor& x, const Tensor& y, const Tensor& scale,
                     const Tensor& exclude, int64_t tiles_per_split) {
  return {x.const_data_ptr<T>(),
          y.const_data_ptr<T>(),
          x.size(0),
          y.size(0),
          x.size(1),
          scale.const_data_ptr<A>(),
          exclude.defined() ? exclude.const_data_ptr<int64_t>() : nullptr,
          tiles_per_split};
}

// lse (nx,) = log-sum-exp over y of each row of x (kXIsQuery: rows of L, else columns).
template <typename T, class Dot, bool kXIsQuery>
void launch_lse(const Tensor& x, const Tensor& y, const Tensor& scale,
                const Tensor& exclude, const Tensor& lse) {
  using A = opmath_t<T>;
  const int64_t nx = x.size(0), ny = y.size(0);
  const Grid g = make_grid(nx, ny, /*max_splits=*/ny, x.get_device());
  const Pair<T, A> p = make_pair<T, A>(x, y, scale, exclude, g.tiles_per_split);
  const auto stream = cuda::current_stream();
  if (g.splits == 1) {
    lse_kernel<T, A, Dot, kXIsQuery>
        <<<g.blocks, kThreads, 0, stream>>>(p, lse.mutable_data_ptr<A>(), nullptr, nullptr);
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const Tensor part = empty({2, g.splits, nx}, lse);
  A* part_m = part.mutable_data_ptr<A>();
  A* part_s = part_m + g.splits * nx;
  lse_kernel<T, A, Dot, kXIsQuery><<<g.blocks, kThreads, 0, stream>>>(p, nullptr, part_m, part_s);
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t merge_blocks = (nx + kThreads - 1) / kThreads;
  lse_split_merge_kernel<A><<<static_cast<unsigned>(merge_blocks), kThreads, 0, stream>>>(
      part_m, part_s, nx, g.splits, lse.mutable_data_ptr<A>());
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
}

// The grid of a gradient pass over x (nx, D) and y, the buffer its kernel writes (out
// itself, or (splits, nx, D) split partials, capped at kMaxSplitBytes) and `per_block`
// block partial sums (0: none).
struct GradPlan {
  Grid grid;
  Tensor target, partial;

  template <typename A>
  A* partial_ptr() const {
    return partial.defined() ? partial.mutable_data_ptr<A>() : nullptr;
  }
  // out += the splits' partials, added in split order.
  void finish(const Tensor& out) const {
    if (grid.splits > 1) aten::add_into(out, aten::sum(target, 0));
  }
};

template <typename A>
GradPlan plan_grad(const Tensor& x, const Tensor& y, const Tensor& out, int64_t per_block) {
  const int64_t nx = x.size(0), ny = y.size(0), d = x.size(1);
  const int64_t split_bytes = std::max<int64_t>(1, nx * d * static_cast<int64_t>(sizeof(A)));
  const int64_t max_splits = std::max<int64_t>(1, kMaxSplitBytes / split_bytes);
  GradPlan g{make_grid(nx, ny, max_splits, x.get_device()), Tensor(), Tensor()};
  g.target = g.grid.splits == 1 ? out : zeros({g.grid.splits, nx, d}, out);
  if (per_block > 0) {
    g.partial = empty({per_block * static_cast<int64_t>(g.grid.blocks.x) * g.grid.splits}, out);
  }
  return g;
}

// out (nx, D) += scale * W y (kXIsQuery: x = q, W as is; else x = k, W^T); with
// grad_scale defined also grad_scale += sum(W * R).
template <typename T, class Dot, bool kXIsQuery>
void launch_grad(const Tensor& x, const Tensor& y, const Tensor& scale,
                 const Tensor& exclude, const Stats<opmath_t<T>>& st,
                 const Tensor& out, const Tensor& grad_scale) {
  using A = opmath_t<T>;
  const GradPlan g = plan_grad<A>(x, y, out, grad_scale.defined() ? 1 : 0);
  const Pair<T, A> p = make_pair<T, A>(x, y, scale, exclude, g.grid.tiles_per_split);
  grad_kernel<T, A, Dot, kXIsQuery><<<g.grid.blocks, kThreads, 0, cuda::current_stream()>>>(
      p, st, g.target.mutable_data_ptr<A>(), g.partial_ptr<A>());
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  g.finish(out);
  if (g.partial.defined()) aten::add_into(grad_scale, aten::sum(g.partial));
}

// softplus_sum_kernel: row_sum (nq,) += the sigmoid loss of each row of q.
template <typename T, class Dot>
void launch_softplus_sum(const Tensor& q, const Tensor& k, const Tensor& scale,
                         const SigmoidArgs<opmath_t<T>>& sa, const Tensor& row_sum) {
  using A = opmath_t<T>;
  const int64_t nx = q.size(0), ny = k.size(0);
  const Grid g = make_grid(nx, ny, /*max_splits=*/ny, q.get_device());
  const Pair<T, A> p = make_pair<T, A>(q, k, scale, Tensor(), g.tiles_per_split);
  const Tensor target = g.splits == 1 ? row_sum : zeros({g.splits, nx}, row_sum);
  softplus_sum_kernel<T, A, Dot><<<g.blocks, kThreads, 0, cuda::current_stream()>>>(
      p, sa, target.mutable_data_ptr<A>());
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  if (g.splits > 1) aten::add_into(row_sum, aten::sum(target, 0));
}

// sigmoid_grad_kernel: out (nx, D) += scale * W y (kXIsQuery: x = q; else x = k, W^T);
// with grad_scale / grad_bias defined (kXIsQuery) also sum(W * R) / sum(W) into them.
template <typename T, class Dot, bool kXIsQuery>
void launch_sigmoid_grad(const Tensor& x, const Tensor& y, const Tensor& scale,
                         const SigmoidArgs<opmath_t<T>>& sa, const Tensor& out,
                         const Tensor& grad_scale, const Tensor& grad_bias) {
  using A = opmath_t<T>;
  const GradPlan g = plan_grad<A>(x, y, out, grad_scale.defined() ? 2 : 0);
  const Pair<T, A> p = make_pair<T, A>(x, y, scale, Tensor(), g.grid.tiles_per_split);
  sigmoid_grad_kernel<T, A, Dot, kXIsQuery>
      <<<g.grid.blocks, kThreads, 0, cuda::current_stream()>>>(
          p, sa, g.target.mutable_data_ptr<A>(), g.partial_ptr<A>());
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  g.finish(out);
  if (g.partial.defined()) {
    const int64_t blocks = g.partial.numel() / 2;  // [sum(W * R) per block, sum(W) per block]
    aten::add_into(grad_scale, aten::sum(aten::narrow(g.partial, 0, 0, blocks)));
    aten::add_into(grad_bias, aten::sum(aten::narrow(g.partial, 0, blocks, blocks)));
  }
}

// ---- the GEMM-chunked path's launchers ----

// GENCORE_CONTRASTIVE_PATH=tiles|gemm forces a path (tests, benchmarks); by default the
// GEMMs run from kGemmMinPairs (query, key) pairs on.
bool use_gemm(int64_t n, int64_t m) {
  const char* path = std::getenv("GENCORE_CONTRASTIVE_PATH");
  if (path != nullptr && path[0] != '\0') {
    const std::string p(path);
    GENCORE_CHECK_VALUE(p == "tiles" || p == "gemm",
                        "gencore: GENCORE_CONTRASTIVE_PATH must be 'tiles' or 'gemm', got '", p,
                        "'");
    return p == "gemm";
  }
  return n * m >= kGemmMinPairs;
}

// out = a @ b (aten::mm for 2-D, aten::bmm for 3-D operands) with the products accumulated
// in acc; a and b of one input dtype (views allowed), out contiguous in acc with the
// product's shape (a view of a spent buffer is fine: nothing is allocated beyond it).
// float16 / bfloat16: the .dtype_out overloads (cuBLAS, float32 out). A torch whose
// .dtype_out overload fails (older than it, or refusing these operands) gets the product of
// float32 copies instead (float16 / bfloat16 -> float32 is exact: the same products), with
// one warning. The SIMT emulator's stand-in device tensors live on the CPU, which has no
// .dtype overloads: there the product runs on float32 copies of small blocks of a and b, so
// that, as with cuBLAS, it allocates next to nothing beyond out and the emulated path's
// memory is the GPU's (tests/cuda_emulation/test_emu_contrastive.py measures it).
void matmul_acc_into(const Tensor& a, const Tensor& b, ScalarType acc, const Tensor& out) {
  const char* op = a.dim() == 3 ? "aten::bmm" : "aten::mm";
  if (a.scalar_type() == acc) {
    aten::call(op, "out", a, b, out);
    return;
  }
#ifdef GENCORE_SIMT_EMULATION
  if (a.dim() == 3) {
    for (int64_t i = 0; i < a.size(0); ++i) {
      matmul_acc_into(aten::call("aten::select", "int", a, int64_t{0}, i),
                      aten::call("aten::select", "int", b, int64_t{0}, i), acc,
                      aten::call("aten::select", "int", out, int64_t{0}, i));
    }
    return;
  }
  // Blocks of 32 x 32 values of out, each summed over slices of 128 products: at most
  // 40 KiB of float32 copies and partial sums live at a time. GENCORE_EMU_GEMM_BLOCK sets
  // another block side (the slices 4 times as long): the memory measurement of large
  // problems takes bigger blocks, fewer allocations to record (tests/cuda_emulation/memory.py).
  int64_t block = 32;
  if (const char* env = std::getenv("GENCORE_EMU_GEMM_BLOCK"); env != nullptr && env[0])
    block = std::max<int64_t>(1, std::atoll(env));
  const int64_t kEmuBlock = block, kEmuSlice = 4 * block;
  const int64_t inner = a.size(1);
  for (int64_t r0 = 0; r0 < a.size(0); r0 += kEmuBlock) {
    const int64_t nr = std::min(kEmuBlock, a.size(0) - r0);
    for (int64_t c0 = 0; c0 < b.size(1); c0 += kEmuBlock) {
      const int64_t nc = std::min(kEmuBlock, b.size(1) - c0);
      Tensor dst = aten::narrow(aten::narrow(out, 0, r0, nr), 1, c0, nc);
      if (inner == 0) torch::stable::fill_(dst, 0.0);
      for (int64_t s0 = 0; s0 < inner; s0 += kEmuSlice) {
        const int64_t ns = std::min(kEmuSlice, inner - s0);
        const Tensor part = aten::call(
            op, "", to_dtype(aten::narrow(aten::narrow(a, 0, r0, nr), 1, s0, ns), acc),
            to_dtype(aten::narrow(aten::narrow(b, 0, s0, ns), 1, c0, nc), acc));
        torch::stable::copy_(dst, s0 == 0 ? part : aten::add(dst, part));
      }
    }
  }
#else
  static std::atomic<bool> no_dtype_overload{false};
  if (!no_dtype_overload.load(std::memory_order_relaxed)) {
    try {
      aten::call(op, "dtype_out", a, b, acc, out);
      return;
    } catch (const std::runtime_error& e) {
      no_dtype_overload.store(true, std::memory_order_relaxed);
      std::fprintf(stderr,
                   "gencore: %s.dtype_out failed (%s); the contrastive GEMMs of float16 / "
                   "bfloat16 features run on float32 copies instead\n",
                   op, e.what());
    }
  }
  Tensor dst = out;
  torch::stable::copy_(dst, aten::call(op, "", to_dtype(a, acc), to_dtype(b, acc)));
#endif
}

// The first prod(size) values of the contiguous buffer `spent` (whose contents are no
// longer needed), as a contiguous tensor of that size.
Tensor reuse(const Tensor& spent, const std::vector<int64_t>& size) {
  int64_t count = 1;
  for (const int64_t s : size) count *= s;
  const std::vector<int64_t> flat{spent.numel()};
  return aten::call("aten::view", "",
                    aten::narrow(aten::call("aten::view", "", spent, IntArrayRef(flat)), 0, 0,
                                 count),
                    IntArrayRef(size));
}

// dst[0, count) += the sum of the `parts` arrays of `count` values that src holds one
// after another (add_parts_kernel); src contiguous in A.
template <typename A>
void add_parts(A* dst, int64_t count, const Tensor& src, int64_t parts) {
  GENCORE_CHECK(src.numel() == parts * count && src.is_contiguous(),
                "gencore: contrastive CUDA backend: add_parts needs ", parts,
                " contiguous partial sums of ", count, " values");
  if (count == 0) return;
  const int64_t blocks = std::min<int64_t>((count + kRowThreads - 1) / kRowThreads, 65535);
  add_parts_kernel<A><<<static_cast<unsigned>(blocks), kRowThreads, 0, cuda::current_stream()>>>(
      dst, src.const_data_ptr<A>(), count, parts);
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
}

// Splits of the contraction below which a split-K product is not worth its extra sum.
constexpr int64_t kMinSplitK = 256;

// The split-K product gq += V k of a chunk. V = v (vrows, m), or with two planes of the
// half types (halves = 2) v = [hi; lo] (2 rows, m) and V = hi + lo. The product is short
// and wide: one GEMM would have only about (halves rows / 128) (D / 128) output tiles
// (hi and lo of a 512-row chunk at D = 256: 16 tiles for 132 SMs) and a contraction as long
// as the number of keys. So the contraction is cut into S slices of kp keys that run as one
// strided-batched GEMM (v's column blocks against k's row blocks: views, no copy), and the
// m - S kp keys left over are one more small GEMM. Their partial products are the slots of
// one (slots, halves rows, D) buffer, summed into gq by one kernel (add_parts) in slot
// order. The plan (its operands and outputs, all views) is made once per chunk shape:
// every chunk of that shape reuses the same buffers, so a chunk costs its two products
// and the sum, with no other call on the host.
struct SplitK {
  Tensor vs, ks, out;                 // the S slices' product (S = 1: v k into slot 0)
  Tensor rest_v, rest_k, rest_out;    // the keys left over after the slices (or undefined)
  Tensor buf;                         // (slots, vrows, D): the partial products
  int64_t splits = 0, slots = 0, halves = 1;
};

// Slices for a (vrows, m) x (m, D) product on `sms` SMs: enough for two output tiles per
// SM, none shorter than kMinSplitK keys; where a buffer holds `fit` >= 2 partial products,
// at most fit - 1 (one slot kept for the keys left over).
int64_t split_k_slices(int64_t vrows, int64_t m, int64_t d, int sms, int64_t fit) {
  const int64_t tiles = std::max<int64_t>(1, ((vrows + 127) / 128) * ((d + 127) / 128));
  const int64_t want = (2 * static_cast<int64_t>(sms) + tiles - 1) / tiles;
  int64_t splits = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, m / kMinSplitK));
  if (fit >= 2) splits = std::min(splits, fit - 1);
  return splits;
}

// Partial products of `splits` slices of m keys: one per slice, one more for the keys left
// over.
int64_t split_k_slots(int64_t m, int64_t splits) { return splits + (m % splits != 0 ? 1 : 0); }

// The plan for v (vrows, m; rows contiguous) against k (m, D) in `splits` slices: the
// partials in the first values of `spent` (a contiguous buffer whose contents are no
// longer needed when the product runs) where it holds them all, else in a new buffer.
template <typename A>
SplitK plan_split_k(const Tensor& v, int64_t halves, const Tensor& k, int64_t splits,
                    const Tensor& spent) {
  const int64_t vrows = v.size(0), m = v.size(1), d = k.size(1);
  SplitK p;
  p.splits = splits;
  p.slots = split_k_slots(m, splits);
  p.halves = halves;
  const int64_t kp = m / splits, main = splits * kp;
  const std::vector<int64_t> bshape{p.slots, vrows, d};
  p.buf = spent.defined() && spent.numel() >= p.slots * vrows * d
              ? reuse(spent, bshape)
              : empty(IntArrayRef(bshape), v, scalar_type_of<A>());
  if (splits == 1) {
    p.vs = v;
    p.ks = k;
    p.out = aten::call("aten::select", "int", p.buf, int64_t{0}, int64_t{0});
  } else {
    const std::vector<int64_t> vshape{vrows, splits, kp}, kshape{splits, kp, d};
    p.vs = torch::stable::transpose(
        aten::call("aten::view", "", aten::narrow(v, 1, 0, main), IntArrayRef(vshape)), 0, 1);
    p.ks = aten::call("aten::view", "", aten::narrow(k, 0, 0, main), IntArrayRef(kshape));
    p.out = aten::narrow(p.buf, 0, 0, splits);
  }
  if (main < m) {
    p.rest_v = aten::narrow(v, 1, main, m - main);
    p.rest_k = aten::narrow(k, 0, main, m - main);
    p.rest_out = aten::call("aten::select", "int", p.buf, int64_t{0}, splits);
  }
  return p;
}

// gq[0, count) += V k by the plan p (count: the chunk's rows times D).
template <typename A>
void run_split_k(const SplitK& p, A* gq, int64_t count) {
  const ScalarType acc = scalar_type_of<A>();
  matmul_acc_into(p.vs, p.ks, acc, p.out);
  if (p.rest_v.defined()) matmul_acc_into(p.rest_v, p.rest_k, acc, p.rest_out);
  add_parts<A>(gq, count, p.buf, p.slots * p.halves);
}

// Query rows per chunk: C m values of `bytes_per_pair` bytes within kChunkBytes, or
// within GENCORE_CONTRASTIVE_CHUNK_BYTES where set (a positive integer; less memory, more
// and smaller GEMMs; the tests use it to cut small problems into many chunks).
int64_t chunk_rows(int64_t n, int64_t m, int64_t bytes_per_pair) {
  int64_t budget = kChunkBytes;
  if (const char* env = std::getenv("GENCORE_CONTRASTIVE_CHUNK_BYTES"); env != nullptr && env[0]) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    GENCORE_CHECK_VALUE(end != env && *end == '\0' && v > 0,
                        "gencore: GENCORE_CONTRASTIVE_CHUNK_BYTES must be a positive integer, "
                        "got '", env, "'");
    budget = v;
  }
  return std::clamp<int64_t>(budget / std::max<int64_t>(1, m * bytes_per_pair), 1, n);
}

// The first `rows` rows of a chunk buffer allocated for `chunk` rows (the whole buffer for
// a full chunk): the last, shorter chunk reuses the full chunks' storage.
Tensor chunk_view(const Tensor& all, int64_t chunk, int64_t rows,
                  const std::vector<int64_t>& size) {
  if (rows == chunk) return all;
  return reuse(all, size);
}

// grad_q (n, D) += V k and, with grad_k defined, grad_k (m, D) += V^T q, chunk by chunk:
// weights(R, hilo, r0, rows) launches the kernel that turns the chunk's R = q_c k^T into
// V = scale W, in place in R, or for the half types into hilo (kPlanes, rows, m) of the
// input dtype: V rounded once, or the planes of hi and lo. Then V k (run_split_k; with two
// planes [hi; lo] k, summed by halves) and V^T q_c (with two planes [hi; lo]^T [q_c; q_c],
// one GEMM whose contraction is the 2 rows of each key). For the half types R's float32
// logits are spent once the weights are out, so the C m values of R's storage (all of it,
// also for a shorter last chunk) hold the split-K partials and then V^T q_c (when D <= C):
// the chunk's memory is R and hilo, as chunk_rows counts it. For float32 / float64 R holds
// V until both products are done, and the partials and V^T q_c take turns in one scratch
// buffer. The buffers and the views the products need are made once, before the first
// chunk (and again for a shorter last chunk): a chunk then costs the host one view (q_c),
// its products (two to four), the weights and two sums, plus, with two planes, the
// concatenation [q_c; q_c]. grad_q and grad_k contiguous.
template <typename T, int kPlanes, typename Weights>
void gemm_backward(const Tensor& q, const Tensor& k, const Tensor& grad_q, const Tensor& grad_k,
                   const Weights& weights) {
  using A = opmath_t<T>;
  static_assert(kPlanes == 1 || kPlanes == 2, "V is rounded once or split into hi and lo");
  constexpr bool kSplit = !std::is_same_v<T, A>;  // V in a buffer of the input dtype
  constexpr int64_t halves = kSplit ? kPlanes : 1;
  const ScalarType acc = scalar_type_of<A>();
  const int64_t n = q.size(0), m = k.size(0), d = k.size(1);
  int sms = 0;
  GENCORE_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, q.get_device()));
  const int64_t chunk =
      chunk_rows(n, m, static_cast<int64_t>(sizeof(A) + (kSplit ? halves * sizeof(T) : 0)));
  const Tensor kt = aten::t(k);
  const Tensor r_all = empty({chunk, m}, q, acc);
  const Tensor hilo_all = kSplit ? empty({halves, chunk, m}, q) : Tensor();
  Tensor scratch;  // float32 / float64: the split-K partials, then V^T q_c
  if constexpr (!kSplit) {
    const int64_t slots = split_k_slots(m, split_k_slices(chunk, m, d, sms, 0));
    scratch = empty({std::max(slots * chunk * d, grad_k.defined() ? m * d : 0)}, q, acc);
  }

  struct Views {  // one chunk shape's operands and outputs
    int64_t rows = 0;
    Tensor r, hilo, vt, prod;
    SplitK split;
  };
  const auto views_for = [&](int64_t rows) {
    Views w;
    w.rows = rows;
    w.r = chunk_view(r_all, chunk, rows, {rows, m});
    Tensor v = w.r;
    if constexpr (kSplit) {
      w.hilo = chunk_view(hilo_all, chunk, rows, {halves, rows, m});
      v = aten::call("aten::view", "", w.hilo,
                     IntArrayRef(std::vector<int64_t>{halves * rows, m}));
    }
    // The half types' logits are spent once the weights are out: all of r_all, also where a
    // shorter last chunk's R is only its first rows (V^T q_c would not fit in those).
    const Tensor& spent = kSplit ? r_all : scratch;
    const int64_t fit = kSplit ? spent.numel() / std::max<int64_t>(1, halves * rows * d) : 0;
    w.split = plan_split_k<A>(v, halves, k, split_k_slices(halves * rows, m, d, sms, fit), spent);
    if (grad_k.defined()) {
      w.vt = aten::t(v);
      w.prod = spent.numel() >= m * d ? reuse(spent, {m, d}) : empty({m, d}, q, acc);
    }
    return w;
  };

  A* const grad_q_data = grad_q.mutable_data_ptr<A>();
  A* const grad_k_data = grad_k.defined() ? grad_k.mutable_data_ptr<A>() : nullptr;
  Views w;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    if (rows != w.rows) {
      w = Views();  // the full chunks' own buffers go before the last chunk's are made
      w = views_for(rows);
    }
    const Tensor qc = aten::narrow(q, 0, r0, rows);
    matmul_acc_into(qc, kt, acc, w.r);
    weights(w.r, w.hilo, r0, rows);
    run_split_k<A>(w.split, grad_q_data + r0 * d, rows * d);
    if (grad_k.defined()) {
      matmul_acc_into(w.vt, halves == 2 ? aten::cat({qc, qc}) : qc, acc, w.prod);
      add_parts<A>(grad_k_data, m * d, w.prod, 1);
    }
  }
}

// The V (or hi/lo) buffer's pointer for the weights kernels: T for the half types, none for A.
template <typename T>
auto hilo_ptr(const Tensor& hl) {
  using A = opmath_t<T>;
  if constexpr (std::is_same_v<T, A>) {
    return static_cast<A*>(nullptr);
  } else {
    return hl.mutable_data_ptr<T>();
  }
}

// row_lse (n,) and, when defined, col_lse (m,) of L = scale q k^T (exclude as Pair's).
template <typename T>
void gemm_lse_forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                      const Tensor& exclude, const Tensor& row_lse, const Tensor& col_lse) {
  using A = opmath_t<T>;
  const ScalarType acc = scalar_type_of<A>();
  const int64_t n = q.size(0), m = k.size(0);
  const int64_t chunk = chunk_rows(n, m, sizeof(A));
  const auto stream = cuda::current_stream();
  Tensor state;  // (2, m): the columns' running max and sum
  A* col_m = nullptr;
  A* col_s = nullptr;
  const int64_t col_blocks = col_lse.defined() ? (m + kRowThreads - 1) / kRowThreads : 0;
  if (col_lse.defined()) {
    state = empty({2, m}, row_lse);
    torch::stable::fill_(aten::narrow(state, 0, 0, 1), -std::numeric_limits<double>::infinity());
    torch::stable::fill_(aten::narrow(state, 0, 1, 1), 0.0);
    col_m = state.mutable_data_ptr<A>();
    col_s = col_m + m;
  }
  const Tensor kt = aten::t(k);
  const int64_t* ex = exclude.defined() ? exclude.const_data_ptr<int64_t>() : nullptr;
  const Tensor r_all = empty({chunk, m}, q, acc);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    const Tensor R = chunk_view(r_all, chunk, rows, {rows, m});
    matmul_acc_into(aten::narrow(q, 0, r0, rows), kt, acc, R);
    gemm_lse_kernel<A><<<static_cast<unsigned>(rows + col_blocks), kRowThreads, 0, stream>>>(
        R.const_data_ptr<A>(), rows, m, r0, scale.const_data_ptr<A>(), ex,
        row_lse.mutable_data_ptr<A>(), col_m, col_s);
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (col_lse.defined()) {
    gemm_lse_finish_kernel<A><<<static_cast<unsigned>(col_blocks), kRowThreads, 0, stream>>>(
        col_m, col_s, m, col_lse.mutable_data_ptr<A>());
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// grad_q += scale W k, grad_k (when defined) += scale W^T q, grad_scale (when defined) +=
// sum(W * R), W from the statistics st (Backend::backward's contract).
template <typename T>
void gemm_lse_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                       const Tensor& exclude, const Stats<opmath_t<T>>& st, const Tensor& grad_q,
                       const Tensor& grad_k, const Tensor& grad_scale) {
  using A = opmath_t<T>;
  const int64_t n = q.size(0), m = k.size(0);
  const Tensor partial = grad_scale.defined() ? empty({n}, grad_q) : Tensor();
  A* part = partial.defined() ? partial.mutable_data_ptr<A>() : nullptr;
  const int64_t* ex = exclude.defined() ? exclude.const_data_ptr<int64_t>() : nullptr;
  const auto stream = cuda::current_stream();
  gemm_backward<T, 2>(
      q, k, grad_q, grad_k, [&](const Tensor& R, const Tensor& hl, int64_t r0, int64_t rows) {
        auto* vv = hilo_ptr<T>(hl);
        gemm_lse_weights_kernel<A, std::remove_pointer_t<decltype(vv)>>
            <<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
                R.mutable_data_ptr<A>(), vv, rows, m, r0, scale.const_data_ptr<A>(), ex, st,
                part);
        GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      });
  if (partial.defined()) aten::add_into(grad_scale, aten::sum(partial));
}

// row_sum (n,) += the sigmoid loss of each row of q.
template <typename T>
void gemm_sigmoid_forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                          const Tensor& bias, int64_t offset, const Tensor& row_sum) {
  using A = opmath_t<T>;
  const ScalarType acc = scalar_type_of<A>();
  const int64_t n = q.size(0), m = k.size(0);
  const int64_t chunk = chunk_rows(n, m, sizeof(A));
  const Tensor kt = aten::t(k);
  const Tensor r_all = empty({chunk, m}, q, acc);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    const Tensor R = chunk_view(r_all, chunk, rows, {rows, m});
    matmul_acc_into(aten::narrow(q, 0, r0, rows), kt, acc, R);
    gemm_softplus_rows_kernel<A>
        <<<static_cast<unsigned>(rows), kRowThreads, 0, cuda::current_stream()>>>(
            R.const_data_ptr<A>(), m, r0, scale.const_data_ptr<A>(), bias.const_data_ptr<A>(),
            offset, row_sum.mutable_data_ptr<A>());
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// GENCORE_CONTRASTIVE_HALF_WEIGHTS=single|split: the sigmoid loss's weights on the GEMM
// path, for float16 / bfloat16, rounded once or as hi and lo (the default; see the path's
// notes above).
bool half_weights_single() {
  const char* env = std::getenv("GENCORE_CONTRASTIVE_HALF_WEIGHTS");
  if (env == nullptr || env[0] == '\0') return false;
  const std::string v(env);
  GENCORE_CHECK_VALUE(v == "single" || v == "split",
                      "gencore: GENCORE_CONTRASTIVE_HALF_WEIGHTS must be 'single' or 'split', ",
                      "got '", v, "'");
  return v == "single";
}

// Backend::sigmoid_backward on the GEMM path, V in kPlanes planes for the half types; with
// row_sum defined also the forward's row sums (Backend::sigmoid_forward_backward: the
// logits' GEMM serves both).
template <typename T, int kPlanes>
void gemm_sigmoid_backward_planes(const Tensor& q, const Tensor& k, const Tensor& scale,
                                  const Tensor& bias, int64_t offset, const Tensor& coef,
                                  const Tensor& grad_q, const Tensor& grad_k,
                                  const Tensor& grad_scale, const Tensor& grad_bias,
                                  const Tensor& row_sum) {
  using A = opmath_t<T>;
  const int64_t n = q.size(0), m = k.size(0);
  const Tensor partial = grad_scale.defined() ? empty({2 * n}, grad_q) : Tensor();
  A* part = partial.defined() ? partial.mutable_data_ptr<A>() : nullptr;
  A* loss_rows = row_sum.defined() ? row_sum.mutable_data_ptr<A>() : nullptr;
  const auto stream = cuda::current_stream();
  gemm_backward<T, kPlanes>(
      q, k, grad_q, grad_k, [&](const Tensor& R, const Tensor& hl, int64_t r0, int64_t rows) {
        auto* vv = hilo_ptr<T>(hl);
        gemm_sigmoid_weights_kernel<A, std::remove_pointer_t<decltype(vv)>, kPlanes>
            <<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
                R.mutable_data_ptr<A>(), vv, rows, m, n, r0, scale.const_data_ptr<A>(),
                bias.const_data_ptr<A>(), coef.const_data_ptr<A>(), offset, part, loss_rows);
        GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      });
  if (partial.defined()) {
    aten::add_into(grad_scale, aten::sum(aten::narrow(partial, 0, 0, n)));
    aten::add_into(grad_bias, aten::sum(aten::narrow(partial, 0, n, n)));
  }
}

template <typename T>
void gemm_sigmoid_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                           const Tensor& bias, int64_t offset, const Tensor& coef,
                           const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_scale,
                           const Tensor& grad_bias, const Tensor& row_sum) {
  if constexpr (!std::is_same_v<T, opmath_t<T>>) {
    if (half_weights_single()) {
      gemm_sigmoid_backward_planes<T, 1>(q, k, scale, bias, offset, coef, grad_q, grad_k,
                                         grad_scale, grad_bias, row_sum);
      return;
    }
  }
  gemm_sigmoid_backward_planes<T, 2>(q, k, scale, bias, offset, coef, grad_q, grad_k, grad_scale,
                                     grad_bias, row_sum);
}

template <typename T>
constexpr bool has_tensor_core_path() {
  return std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;
}

// fn(Dot{}) with the tile product for T: tensor cores for float16 / bfloat16 unless
// GENCORE_CONTRASTIVE_SIMT=1, SIMT otherwise.
template <typename T, typename Fn>
void dispatch_dot(const Fn& fn) {
  if constexpr (has_tensor_core_path<T>()) {
    const char* simt = std::getenv("GENCORE_CONTRASTIVE_SIMT");
    if (simt == nullptr || simt[0] != '1') {
      fn(MmaDot<T>{});
      return;
    }
  }
  fn(SimtDot<T, opmath_t<T>>{});
}

void check_backend_inputs(const Tensor& q, const Tensor& k, const Tensor& scale) {
  GENCORE_CHECK_VALUE(q.is_cuda() && k.is_cuda() && scale.is_cuda(),
                      "gencore: contrastive CUDA backend needs CUDA tensors, got ",
                      device_name(q.device()), ", ", device_name(k.device()), ", ",
                      device_name(scale.device()));
  GENCORE_CHECK(q.is_contiguous() && k.is_contiguous(),
                "gencore: contrastive CUDA backend needs contiguous features");
  GENCORE_CHECK(scale.scalar_type() == acc_type(q.scalar_type()) && scale.numel() == 1,
                "gencore: contrastive CUDA backend: scale must be one ",
                dtype_name(acc_type(q.scalar_type())), " value, got ",
                dtype_name(scale.scalar_type()), " ", shape(scale));
}

template <typename A>
const A* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

}  // namespace

struct CudaBackend {
  static void forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                      const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                      const Tensor& col_lse) {
    (void)symmetric;  // the full matrix is visited either way
    const cuda::DeviceGuard guard(q);
    check_backend_inputs(q, k, scale);
    if (use_gemm(q.size(0), k.size(0))) {
      GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(q.scalar_type(), "contrastive_forward_cuda", [&] {
        gemm_lse_forward<scalar_t>(q, k, scale, exclude, row_lse, col_lse);
      });
      return;
    }
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(q.scalar_type(),
                                              "contrastive_forward_cuda", [&] {
      dispatch_dot<scalar_t>([&](auto dot) {
        using Dot = decltype(dot);
        launch_lse<scalar_t, Dot, true>(q, k, scale, exclude, row_lse);
        if (col_lse.defined()) launch_lse<scalar_t, Dot, false>(k, q, scale, exclude, col_lse);
      });
    });
  }

  static void backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                       const Tensor& exclude, bool symmetric, const Tensor& row_lse,
                       const Tensor& alpha, const Tensor& col_lse,
                       const Tensor& beta, const Tensor& grad_q,
                       const Tensor& grad_k, const Tensor& grad_scale) {
    const cuda::DeviceGuard guard(q);
    check_backend_inputs(q, k, scale);
    GENCORE_CHECK(grad_q.is_contiguous() && (!grad_k.defined() || grad_k.is_contiguous()),
                  "gencore: contrastive CUDA backend needs contiguous gradient accumulators");
    GENCORE_CHECK(!col_lse.defined() || beta.defined(),
                  "gencore: contrastive CUDA backend: col_lse given without beta");
    // symmetric: q is k, so (W + W^T) q = grad_q's W k plus a grad_k-style W^T q.
    const Tensor gk = symmetric ? zeros(grad_q.sizes(), grad_q) : grad_k;
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(q.scalar_type(),
                                              "contrastive_backward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      const Stats<A> st{ptr_or_null<A>(row_lse), ptr_or_null<A>(alpha),
                        ptr_or_null<A>(col_lse), ptr_or_null<A>(beta)};
      if (use_gemm(q.size(0), k.size(0))) {
        gemm_lse_backward<scalar_t>(q, k, scale, exclude, st, grad_q, gk, grad_scale);
        return;
      }
      dispatch_dot<scalar_t>([&](auto dot) {
        using Dot = decltype(dot);
        launch_grad<scalar_t, Dot, true>(q, k, scale, exclude, st, grad_q, grad_scale);
        if (gk.defined()) {
          launch_grad<scalar_t, Dot, false>(k, q, scale, exclude, st, gk, Tensor());
        }
      });
    });
    if (symmetric) aten::add_into(grad_q, gk);
  }

  static void sigmoid_forward(const Tensor& q, const Tensor& k, const Tensor& scale,
                              const Tensor& bias, int64_t offset, const Tensor& row_sum) {
    const cuda::DeviceGuard guard(q);
    check_backend_inputs(q, k, scale);
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(q.scalar_type(), "sigmoid_contrastive_forward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      const SigmoidArgs<A> sa{bias.const_data_ptr<A>(), nullptr, offset};
      if (use_gemm(q.size(0), k.size(0))) {
        gemm_sigmoid_forward<scalar_t>(q, k, scale, bias, offset, row_sum);
        return;
      }
      dispatch_dot<scalar_t>([&](auto dot) {
        launch_softplus_sum<scalar_t, decltype(dot)>(q, k, scale, sa, row_sum);
      });
    });
  }

  static void sigmoid_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                               const Tensor& bias, int64_t offset, const Tensor& coef,
                               const Tensor& grad_q, const Tensor& grad_k,
                               const Tensor& grad_scale, const Tensor& grad_bias) {
    const cuda::DeviceGuard guard(q);
    check_backend_inputs(q, k, scale);
    GENCORE_CHECK(grad_q.is_contiguous() && grad_k.is_contiguous(),
                  "gencore: contrastive CUDA backend needs contiguous gradient accumulators");
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(q.scalar_type(), "sigmoid_contrastive_backward_cuda", [&] {
      using A = opmath_t<scalar_t>;
      const SigmoidArgs<A> sa{bias.const_data_ptr<A>(), coef.const_data_ptr<A>(), offset};
      if (use_gemm(q.size(0), k.size(0))) {
        gemm_sigmoid_backward<scalar_t>(q, k, scale, bias, offset, coef, grad_q, grad_k,
                                        grad_scale, grad_bias, Tensor());
        return;
      }
      dispatch_dot<scalar_t>([&](auto dot) {
        using Dot = decltype(dot);
        launch_sigmoid_grad<scalar_t, Dot, true>(q, k, scale, sa, grad_q, grad_scale, grad_bias);
        launch_sigmoid_grad<scalar_t, Dot, false>(k, q, scale, sa, grad_k, Tensor(), Tensor());
      });
    });
  }

  static void sigmoid_forward_backward(const Tensor& q, const Tensor& k, const Tensor& scale,
                                       const Tensor& bias, int64_t offset, const Tensor& coef,
                                       const Tensor& row_sum, const Tensor& grad_q,
                                       const Tensor& grad_k, const Tensor& grad_scale,
                                       const Tensor& grad_bias) {
    {
      const cuda::DeviceGuard guard(q);
      check_backend_inputs(q, k, scale);
      if (use_gemm(q.size(0), k.size(0))) {
        GENCORE_CHECK(grad_q.is_contiguous() && grad_k.is_contiguous(),
                      "gencore: contrastive CUDA backend needs contiguous gradient accumulators");
        GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(
            q.scalar_type(), "sigmoid_contrastive_forward_backward_cuda", [&] {
              gemm_sigmoid_backward<scalar_t>(q, k, scale, bias, offset, coef, grad_q, grad_k,
                                              grad_scale, grad_bias, row_sum);
            });
        return;
      }
    }
    // The tile kernels: the two passes in turn.
    sigmoid_forward(q, k, scale, bias, offset, row_sum);
    sigmoid_backward(q, k, scale, bias, offset, coef, grad_q, grad_k, grad_scale, grad_bias);
  }
};

STABLE_TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("clip_loss", TORCH_BOX(&clip_loss_impl<CudaBackend>));
  m.impl("clip_loss_backward", TORCH_BOX(&clip_loss_backward_impl<CudaBackend>));
  m.impl("nt_xent_loss", TORCH_BOX(&nt_xent_loss_impl<CudaBackend>));
  m.impl("nt_xent_loss_backward", TORCH_BOX(&nt_xent_loss_backward_impl<CudaBackend>));
  m.impl("contrastive_rows", TORCH_BOX(&contrastive_rows_impl<CudaBackend>));
  m.impl("contrastive_rows_backward", TORCH_BOX(&contrastive_rows_backward_impl<CudaBackend>));
  m.impl("sigmoid_contrastive_loss", TORCH_BOX(&sigmoid_contrastive_loss_impl<CudaBackend>));
  m.impl("sigmoid_contrastive_loss_backward",
         TORCH_BOX(&sigmoid_contrastive_loss_backward_impl<CudaBackend>));
  m.impl("sigmoid_contrastive_loss_with_grads",
         TORCH_BOX(&sigmoid_contrastive_loss_with_grads_impl<CudaBackend>));
}

}  // namespace contrastive
}  // namespace gencore
