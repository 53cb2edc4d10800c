// CUDA backend of the nearest-code search (vq.h has the contract), tiled so that the
// (N, K) distances are never stored.
//
// A block of 256 threads owns kTile = 64 rows of x and loops over 64-code tiles of the
// codebook; the 64 x 64 tile of dot products is built from shared-memory slices over D,
// each thread holding a 4 x 4 piece in registers (rows ty + 16 i, codes tx + 16 j,
// ty = tid / 16, tx = tid % 16), accumulated with fused multiply-adds in float32
// (float64 for double) in increasing d. Each thread turns its piece into distances
// code_sq[j] - 2 <x_i, c_j>, reduces each of its rows to a (minimum, index) pair with
// ties to the lower index, and the 16 threads sharing a row combine their pairs by warp
// shuffles; the pair then replaces the row's running best only when strictly smaller,
// so a tie between tiles keeps the earlier (lower) index. NaN distances never win.
//
// When x has too few row blocks to fill the GPU, the code tiles are split over
// gridDim.y: each split writes its (minimum, index) per row to a buffer and a second
// kernel merges the splits in increasing order. Every result is deterministic: each
// distance is summed in a fixed order and the merges are order-independent given ties
// to the lowest index.
#include <cstdint>
#include <limits>

#include "common/cuda_context.h"
#include "common/cuda_utils.cuh"
#include "vq/vq.h"

namespace gencore {
namespace vq {
namespace {

constexpr int kTile = 64;        // rows of x per block, codes per tile
constexpr int kThreads = 256;    // a 16 x 16 grid of threads over the 64 x 64 tile
constexpr int kSide = 16;        // threads along each side of the tile
constexpr int kMicro = 4;        // rows (and codes) of the tile per thread
constexpr int kBlocksPerSm = 4;  // target resident blocks when choosing the code split

static_assert(kSide * kMicro == kTile && kSide * kSide == kThreads, "tile geometry");

// D slice per shared-memory step: 16 (float), 8 (double).
template <typename A>
constexpr int slice() {
  return sizeof(A) == 8 ? 8 : 16;
}

// (value, index) order of the search: smaller value first, then lower index; a NaN
// value is never better than anything.
template <typename A>
__device__ __forceinline__ bool better(A v, int j, A bv, int bj) {
  return v < bv || (v == bv && j < bj);
}

template <typename T, typename A>
struct Problem {
  const T* x;
  const T* codes;
  const A* code_sq;
  int64_t n, k, d;
  int64_t tiles_per_split;
  A* best;        // (splits, n): split s writes row i at s * n + i
  int64_t* index;
};

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) nearest_code_kernel(Problem<T, A> p) {
  constexpr int kSlice = slice<A>();
  __shared__ A xs[kSlice][kTile];
  __shared__ A cs[kSlice][kTile];
  const int tid = threadIdx.x, tx = tid % kSide, ty = tid / kSide;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t tiles = (p.k + kTile - 1) / kTile;
  const int64_t t_begin = static_cast<int64_t>(blockIdx.y) * p.tiles_per_split;
  const int64_t t_end = min(tiles, t_begin + p.tiles_per_split);
  const A inf = std::numeric_limits<A>::infinity();
  A run_v[kMicro];
  int run_j[kMicro];  // codes < 2^31 (vq.h checks)
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    run_v[r] = inf;
    run_j[r] = 0;
  }
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t code0 = t * kTile;
    A acc[kMicro][kMicro];
#pragma unroll
    for (int r = 0; r < kMicro; ++r)
#pragma unroll
      for (int c = 0; c < kMicro; ++c) acc[r][c] = A(0);
    for (int64_t d0 = 0; d0 < p.d; d0 += kSlice) {
      // Stage the (64, kSlice) slices of x and of the codes, transposed.
      for (int e = tid; e < kTile * kSlice; e += kThreads) {
        const int r = e / kSlice, dd = e % kSlice;
        const int64_t d = d0 + dd;
        xs[dd][r] = (row0 + r < p.n && d < p.d) ? static_cast<A>(p.x[(row0 + r) * p.d + d]) : A(0);
        cs[dd][r] =
            (code0 + r < p.k && d < p.d) ? static_cast<A>(p.codes[(code0 + r) * p.d + d]) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int dd = 0; dd < kSlice; ++dd) {
        A a[kMicro], b[kMicro];
#pragma unroll
        for (int r = 0; r < kMicro; ++r) a[r] = xs[dd][ty + kSide * r];
#pragma unroll
        for (int c = 0; c < kMicro; ++c) b[c] = cs[dd][tx + kSide * c];
#pragma unroll
        for (int r = 0; r < kMicro; ++r)
#pragma unroll
          for (int c = 0; c < kMicro; ++c) acc[r][c] = fma(a[r], b[c], acc[r][c]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      A v = inf;
      int j = 0;
#pragma unroll
      for (int c = 0; c < kMicro; ++c) {
        const int64_t code = code0 + tx + kSide * c;
        if (code < p.k) {
          const A dist = p.code_sq[code] - A(2) * acc[r][c];
          if (better(dist, static_cast<int>(code), v, j)) {
            v = dist;
            j = static_cast<int>(code);
          }
        }
      }
      // The 16 threads of a row are 16 consecutive lanes of one warp.
#pragma unroll
      for (int o = kSide / 2; o > 0; o /= 2) {
        const A ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oj = __shfl_xor_sync(0xffffffffu, j, o);
        if (better(ov, oj, v, j)) {
          v = ov;
          j = oj;
        }
      }
      if (v < run_v[r]) {  // strictly smaller: a tie keeps the earlier tile's index
        run_v[r] = v;
        run_j[r] = j;
      }
    }
  }
  if (tx == 0) {
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      const int64_t row = row0 + ty + kSide * r;
      if (row < p.n) {
        const int64_t at = static_cast<int64_t>(blockIdx.y) * p.n + row;
        p.best[at] = run_v[r];
        p.index[at] = run_j[r];
      }
    }
  }
}

// Row i's result over the splits, merged in increasing split (code) order.
template <typename A>
__global__ void merge_splits_kernel(const A* __restrict__ part_v, const int64_t* __restrict__ part_j,
                                    int64_t n, int64_t splits, A* __restrict__ best,
                                    int64_t* __restrict__ index) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  A v = part_v[i];
  int64_t j = part_j[i];
  for (int64_t s = 1; s < splits; ++s) {
    const A sv = part_v[s * n + i];
    if (sv < v) {
      v = sv;
      j = part_j[s * n + i];
    }
  }
  best[i] = v;
  index[i] = j;
}


struct CudaBackend {
  static void search(const Tensor& x, const Tensor& codes, const Tensor& code_sq,
                     const Tensor& index, const Tensor& best) {
    const cuda::DeviceGuard guard(x);
    check_cuda(x, "x");
    const int64_t n = x.size(0), k = codes.size(0);
    const cuda::SplitGrid g = cuda::split_grid(n, k, kTile, kBlocksPerSm, int64_t{65535},
                                               x.get_device_index(), "nearest_code");
    auto stream = cuda::current_stream();
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(x.scalar_type(), "nearest_code_cuda", [&] {
      using T = scalar_t;
      using A = opmath_t<T>;
      Tensor part_v = best, part_j = index;
      if (g.splits > 1) {
        part_v = empty({g.splits * n}, x, scalar_type_of<A>());
        part_j = empty({g.splits * n}, x, kLong);
      }
      const Problem<T, A> p{x.const_data_ptr<T>(), codes.const_data_ptr<T>(),
                            code_sq.const_data_ptr<A>(), n, k, x.size(1), g.tiles_per_split,
                            part_v.mutable_data_ptr<A>(), part_j.mutable_data_ptr<int64_t>()};
      nearest_code_kernel<T, A><<<g.blocks, kThreads, 0, stream>>>(p);
      GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      if (g.splits > 1) {
        const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
        merge_splits_kernel<A><<<blocks, kThreads, 0, stream>>>(
            part_v.const_data_ptr<A>(), part_j.const_data_ptr<int64_t>(), n, g.splits,
            best.mutable_data_ptr<A>(), index.mutable_data_ptr<int64_t>());
        GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("nearest_code", TORCH_BOX(&nearest_code_impl<CudaBackend>));
}

}  // namespace vq
}  // namespace gencore
