// CUDA launcher of the affine coupling op. One warp owns one segment (a row, or a
// chunk of a long row) of kWarpChunk * V elements, loads V elements per lane with
// one vector instruction, computes in float32 (float64 for double) with the math of
// common/coupling_math.h, and reduces s with warp shuffles for the log-determinant.
// Long rows write per-segment partial sums that a second kernel adds in a fixed
// order, so the result is deterministic (no atomics). Inputs are read in place with
// any row stride (unit column stride, coupling.h RowView); outputs are contiguous.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "common/coupling_math.h"
#include "common/cuda_utils.cuh"
#include "coupling/coupling.h"

namespace gencore {
namespace coupling {
namespace {

using cuda::kWarp;
using cuda::kWarpsPerBlock;
using cuda::load_pack;
using cuda::Pack;
using cuda::store_pack;
using cuda::warp_sum;
using cuda::grid_for;
constexpr int kIters = 4;  // vectors per lane per segment

struct Segments {
  int64_t n;        // row length
  int64_t seg_len;  // elements per segment
  int64_t per_row;  // segments per row
  int64_t total;    // rows * per_row
};

// Row strides (in elements) of the inputs; gl: of grad_logdet (often 0, an expanded
// scalar gradient).
struct InputStrides {
  int64_t gy, x, ls, t, gl;
};

using cuda::WarpSegment;

__device__ __forceinline__ WarpSegment warp_segment(const Segments& sg) {
  return cuda::warp_segment(sg.n, sg.seg_len, sg.per_row);
}

template <typename T, typename A, int V, bool kReverse, bool kClamped>
__global__ void affine_coupling_fwd_kernel(const T* __restrict__ x, const T* __restrict__ ls,
                                           const T* __restrict__ t, T* __restrict__ y,
                                           T* __restrict__ logdet, A* __restrict__ partial,
                                           Segments sg, InputStrides st, A clamp, A inv_clamp) {
  const WarpSegment w = warp_segment(sg);
  if (w.index >= sg.total) return;
  const int64_t base = w.base;
  x += w.row * st.x;
  ls += w.row * st.ls;
  t += w.row * st.t;
  A acc = A(0);
  for (int64_t j = w.begin + static_cast<int64_t>(w.lane) * V; j < w.end; j += kWarp * V) {
    const auto xv = load_pack<T, V>(x + j);
    const auto lv = load_pack<T, V>(ls + j);
    const auto tv = load_pack<T, V>(t + j);
    Pack<T, V> yv;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const auto r = coupling_forward<A, kReverse, kClamped>(static_cast<A>(xv.v[k]),
                                                   static_cast<A>(lv.v[k]),
                                                   static_cast<A>(tv.v[k]), clamp, inv_clamp);
      yv.v[k] = static_cast<T>(r.y);
      acc += r.logdet;
    }
    store_pack<T, V>(y + base + j, yv);
  }
  acc = warp_sum(acc);
  if (w.lane == 0) {
    if (sg.per_row == 1) {
      logdet[w.row] = static_cast<T>(acc);
    } else {
      partial[w.index] = acc;
    }
  }
}

template <typename T, typename A>
__global__ void row_partial_sum_kernel(const A* __restrict__ partial, T* __restrict__ logdet,
                                       int64_t rows, int64_t per_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  A acc = A(0);
  for (int64_t k = lane; k < per_row; k += kWarp) acc += partial[row * per_row + k];
  acc = warp_sum(acc);
  if (lane == 0) logdet[row] = static_cast<T>(acc);
}

template <typename T, typename A, int V, bool kReverse, bool kClamped>
__global__ void affine_coupling_bwd_kernel(const T* __restrict__ gy, const T* __restrict__ gl,
                                           const T* __restrict__ x, const T* __restrict__ ls,
                                           const T* __restrict__ t, T* __restrict__ gx,
                                           T* __restrict__ gls, Segments sg, InputStrides st,
                                           A clamp, A inv_clamp) {
  const WarpSegment w = warp_segment(sg);
  if (w.index >= sg.total) return;
  const int64_t base = w.base;
  const A g_logdet = static_cast<A>(gl[w.row * st.gl]);
  gy += w.row * st.gy;
  x += w.row * st.x;
  ls += w.row * st.ls;
  t += w.row * st.t;
  for (int64_t j = w.begin + static_cast<int64_t>(w.lane) * V; j < w.end; j += kWarp * V) {
    const auto gyv = load_pack<T, V>(gy + j);
    const auto xv = load_pack<T, V>(x + j);
    const auto lv = load_pack<T, V>(ls + j);
    const auto tv = load_pack<T, V>(t + j);
    Pack<T, V> gxv, glsv;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const auto r = coupling_backward<A, kReverse, kClamped>(
          static_cast<A>(gyv.v[k]), g_logdet, static_cast<A>(xv.v[k]), static_cast<A>(lv.v[k]),
          static_cast<A>(tv.v[k]), clamp, inv_clamp);
      gxv.v[k] = static_cast<T>(r.grad_x);
      glsv.v[k] = static_cast<T>(r.grad_log_scale);
    }
    store_pack<T, V>(gx + base + j, gxv);
    store_pack<T, V>(gls + base + j, glsv);
  }
}

// Widest vector (up to 16 bytes) that divides the row length, every row stride and the
// alignment of every pointer, so each row starts on a vector boundary.
template <typename T>
int pick_vec(int64_t n, std::initializer_list<int64_t> row_strides,
             std::initializer_list<const void*> ptrs) {
  int v = static_cast<int>(16 / sizeof(T));
  while (v > 1) {
    bool ok = n % v == 0;
    for (int64_t r : row_strides) ok = ok && r % v == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (v * sizeof(T)) == 0;
    if (ok) break;
    v /= 2;
  }
  return v;
}

Segments make_segments(int64_t rows, int64_t n, int vec) {
  Segments sg;
  sg.n = n;
  sg.seg_len = static_cast<int64_t>(kWarp) * vec * kIters;
  sg.per_row = n == 0 ? 1 : (n + sg.seg_len - 1) / sg.seg_len;
  sg.total = rows * sg.per_row;
  return sg;
}


template <typename T, int V, bool kReverse, bool kClamped>
void launch_forward(ForwardTensors& t, double clamp) {
  using A = at::opmath_type<T>;
  const int64_t rows = t.y.size(0);
  const Segments sg = make_segments(rows, row_length(t.y), V);
  const InputStrides st{0, t.x.row, t.log_scale.row, t.shift.row, 0};
  at::Tensor partial;
  if (sg.per_row > 1) {
    partial = at::empty({sg.total}, t.y.options().dtype(c10::CppTypeToScalarType<A>::value));
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  affine_coupling_fwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          t.x.t.const_data_ptr<T>(), t.log_scale.t.const_data_ptr<T>(),
          t.shift.t.const_data_ptr<T>(), t.y.mutable_data_ptr<T>(), t.logdet.mutable_data_ptr<T>(),
          sg.per_row > 1 ? partial.mutable_data_ptr<A>() : nullptr, sg, st, static_cast<A>(clamp),
          static_cast<A>(inverse_clamp(clamp)));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (sg.per_row > 1) {
    row_partial_sum_kernel<T, A><<<grid_for(rows), kWarp * kWarpsPerBlock, 0, stream>>>(
        partial.const_data_ptr<A>(), t.logdet.mutable_data_ptr<T>(), rows, sg.per_row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, int V, bool kReverse, bool kClamped>
void launch_backward(BackwardTensors& t, double clamp) {
  using A = at::opmath_type<T>;
  const Segments sg = make_segments(t.grad_x.size(0), row_length(t.grad_x), V);
  const InputStrides st{t.grad_y.row, t.x.row, t.log_scale.row, t.shift.row,
                        t.grad_logdet_stride};
  auto stream = c10::cuda::getCurrentCUDAStream();
  affine_coupling_bwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          t.grad_y.t.const_data_ptr<T>(), t.grad_logdet.const_data_ptr<T>(),
          t.x.t.const_data_ptr<T>(), t.log_scale.t.const_data_ptr<T>(),
          t.shift.t.const_data_ptr<T>(), t.grad_x.mutable_data_ptr<T>(),
          t.grad_log_scale.mutable_data_ptr<T>(), sg, st, static_cast<A>(clamp),
          static_cast<A>(inverse_clamp(clamp)));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Calls fn(std::integral_constant<int, V>{}) for the runtime vector width.
template <typename T, typename Fn>
void dispatch_vec(int vec, const Fn& fn) {
  constexpr int kMaxV = static_cast<int>(16 / sizeof(T));
  if (vec >= kMaxV) {
    fn(std::integral_constant<int, kMaxV>{});
  } else if (vec >= 4) {
    fn(std::integral_constant<int, (kMaxV >= 4 ? 4 : 1)>{});
  } else if (vec >= 2) {
    fn(std::integral_constant<int, (kMaxV >= 2 ? 2 : 1)>{});
  } else {
    fn(std::integral_constant<int, 1>{});
  }
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cuda(), "gencore: ", name, " must be a CUDA tensor here, got ",
                    t.device());
  check_dtype_supported_cuda(t, name);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> affine_coupling_cuda(const at::Tensor& x,
                                                        const at::Tensor& log_scale,
                                                        const at::Tensor& shift, double clamp,
                                                        bool reverse) {
  const c10::cuda::CUDAGuard guard(x.device());
  ForwardTensors t = prepare_forward(x, log_scale, shift, clamp, /*unit_col=*/true);
  check_cuda(x, "x");
  if (x.numel() == 0) return {t.y, t.logdet};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_cuda",
                                  [&] {
    const int vec = pick_vec<scalar_t>(
        row_length(x), {t.x.row, t.log_scale.row, t.shift.row},
        {t.x.t.const_data_ptr(), t.log_scale.t.const_data_ptr(), t.shift.t.const_data_ptr(),
         t.y.const_data_ptr()});
    dispatch_vec<scalar_t>(vec, [&](auto v) {
      dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
        launch_forward<scalar_t, decltype(v)::value, decltype(rev)::value,
                       decltype(clamped)::value>(t, clamp);
      });
    });
  });
  return {t.y, t.logdet};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& log_scale, const at::Tensor& shift, double clamp, bool reverse) {
  const c10::cuda::CUDAGuard guard(x.device());
  BackwardTensors t =
      prepare_backward(grad_y, grad_logdet, x, log_scale, shift, clamp, /*unit_col=*/true);
  check_cuda(x, "x");
  if (x.numel() == 0) return {t.grad_x, t.grad_log_scale};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "affine_coupling_backward_cuda", [&] {
    const int vec = pick_vec<scalar_t>(
        row_length(x), {t.grad_y.row, t.x.row, t.log_scale.row, t.shift.row},
        {t.grad_y.t.const_data_ptr(), t.x.t.const_data_ptr(), t.log_scale.t.const_data_ptr(),
         t.shift.t.const_data_ptr(), t.grad_x.const_data_ptr(),
         t.grad_log_scale.const_data_ptr()});
    dispatch_vec<scalar_t>(vec, [&](auto v) {
      dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
        launch_backward<scalar_t, decltype(v)::value, decltype(rev)::value,
                        decltype(clamped)::value>(t, clamp);
      });
    });
  });
  return {t.grad_x, t.grad_log_scale};
}

TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("affine_coupling", &affine_coupling_cuda);
  m.impl("affine_coupling_backward", &affine_coupling_backward_cuda);
}

}  // namespace coupling
}  // namespace gencore
