// Small device helpers shared by the CUDA launchers: vector loads and stores, warp
// reductions and grid sizing. Warp-per-segment kernels use kWarpsPerBlock warps a block.
#pragma once

#include <cuda_runtime.h>

#include "common/stable_api.h"

#include <algorithm>
#include <cstdint>

namespace gencore {
namespace cuda {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Warp-per-segment kernels: a row of n elements is cut into per_row segments of seg_len;
// the calling warp owns elements [begin, end) of row `row`, which starts at `base` in a
// contiguous (rows, n) tensor. index >= rows * per_row: the warp has nothing to do.
struct WarpSegment {
  int64_t index, row, begin, end, base;
  int lane;
};

__device__ __forceinline__ WarpSegment warp_segment(int64_t n, int64_t seg_len, int64_t per_row) {
  WarpSegment w;
  w.lane = threadIdx.x % kWarp;
  w.index = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  w.row = w.index / per_row;
  w.begin = (w.index % per_row) * seg_len;
  w.end = min(n, w.begin + seg_len);
  w.base = w.row * n;
  return w;
}

// out[row] = the sum of partial[row * per_row + k] over k < per_row, one warp a row, in a
// fixed order: per-row sums of warp segments without atomics (launch: grid_for(rows)
// blocks of kWarp * kWarpsPerBlock threads).
template <typename T, typename A>
__global__ void row_partial_sum_kernel(const A* __restrict__ partial, T* __restrict__ out,
                                       int64_t rows, int64_t per_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  A acc = A(0);
  for (int64_t k = lane; k < per_row; k += kWarp) acc += partial[row * per_row + k];
  acc = warp_sum(acc);
  if (lane == 0) out[row] = static_cast<T>(acc);
}

// Blocks of kWarpsPerBlock warps for `items` warp-sized work items.
inline unsigned grid_for(int64_t items) {
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  GENCORE_CHECK(blocks < (int64_t{1} << 31), "gencore: tensor too large for one launch");
  return static_cast<unsigned>(std::max<int64_t>(blocks, 1));
}

// A grid of row blocks (blockIdx.x: `tile` rows each) times splits of the column tiles
// (blockIdx.y: `tiles_per_split` tiles of `tile` columns each), with enough splits to give
// the device blocks_per_sm blocks per SM when the rows alone are too few; at most
// max_splits splits, none of them empty. The split count follows the SM count, so a
// result merged over splits is the same on every run of one GPU model.
struct SplitGrid {
  dim3 blocks;
  int64_t splits, tiles_per_split;
};

inline SplitGrid split_grid(int64_t rows, int64_t cols, int64_t tile, int64_t blocks_per_sm,
                            int64_t max_splits, int device, const char* op) {
  const int64_t row_blocks = (rows + tile - 1) / tile;
  const int64_t tiles = (cols + tile - 1) / tile;
  GENCORE_CHECK(row_blocks < (int64_t{1} << 31), "gencore: ", op, ": too many rows (", rows,
                ") for one launch");
  int sms = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  GENCORE_CHECK(err == cudaSuccess, "gencore: ", op, ": cudaDeviceGetAttribute failed: ",
                cudaGetErrorString(err));
  const int64_t target = static_cast<int64_t>(sms) * blocks_per_sm;
  int64_t splits = (target + row_blocks - 1) / row_blocks;
  splits = std::max<int64_t>(1, std::min({splits, tiles, max_splits, int64_t{65535}}));
  const int64_t per = (tiles + splits - 1) / splits;
  splits = (tiles + per - 1) / per;
  return {dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits)), splits, per};
}

// True when every pointer is aligned to `bytes`.
inline bool aligned_to(int64_t bytes, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
  return true;
}

}  // namespace cuda
}  // namespace gencore
