// CUDA launcher of the affine coupling op. One warp owns one segment (a row, or a
// chunk of a long row) of kWarpChunk * V elements, loads V elements per lane with
// one vector instruction, computes in float32 (float64 for double) with the math of
// common/coupling_math.h, and reduces s with warp shuffles for the log-determinant.
// Long rows write per-segment partial sums that a second kernel adds in a fixed
// order, so the result is deterministic (no atomics). Inputs are read in place with
// any row stride (unit column stride, coupling.h RowView); outputs are contiguous.

#include <cstdint>

#include "common/coupling_math.h"
#include "common/cuda_context.h"
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
using cuda::row_partial_sum_kernel;
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

// The warp's sum of s: the row's logdet when the row is one segment, else its partial
// sum (added in a fixed order by row_partial_sum_kernel).
template <typename T, typename A>
__device__ __forceinline__ void store_segment_sum(A acc, const WarpSegment& w, const Segments& sg,
                                                  T* logdet, A* partial) {
  if (w.lane != 0) return;
  if (sg.per_row == 1) {
    logdet[w.row] = static_cast<T>(acc);
  } else {
    partial[w.index] = acc;
  }
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
  store_segment_sum(warp_sum(acc), w, sg, logdet, partial);
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
  using A = opmath_t<T>;
  const int64_t rows = t.y.size(0);
  const Segments sg = make_segments(rows, row_length(t.y), V);
  const InputStrides st{0, t.x.row, t.log_scale.row, t.shift.row, 0};
  Tensor partial;
  if (sg.per_row > 1) {
    partial = empty({sg.total}, t.y, scalar_type_of<A>());
  }
  auto stream = cuda::current_stream();
  affine_coupling_fwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          t.x.t.const_data_ptr<T>(), t.log_scale.t.const_data_ptr<T>(),
          t.shift.t.const_data_ptr<T>(), t.y.mutable_data_ptr<T>(), t.logdet.mutable_data_ptr<T>(),
          sg.per_row > 1 ? partial.mutable_data_ptr<A>() : nullptr, sg, st, static_cast<A>(clamp),
          static_cast<A>(inverse_clamp(clamp)));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  if (sg.per_row > 1) {
    row_partial_sum_kernel<T, A><<<grid_for(rows), kWarp * kWarpsPerBlock, 0, stream>>>(
        partial.const_data_ptr<A>(), t.logdet.mutable_data_ptr<T>(), rows, sg.per_row);
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, int V, bool kReverse, bool kClamped>
void launch_backward(BackwardTensors& t, double clamp) {
  using A = opmath_t<T>;
  const Segments sg = make_segments(t.grad_x.size(0), row_length(t.grad_x), V);
  const InputStrides st{t.grad_y.row, t.x.row, t.log_scale.row, t.shift.row,
                        t.grad_logdet_stride};
  auto stream = cuda::current_stream();
  affine_coupling_bwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          t.grad_y.t.const_data_ptr<T>(), t.grad_logdet.const_data_ptr<T>(),
          t.x.t.const_data_ptr<T>(), t.log_scale.t.const_data_ptr<T>(),
          t.shift.t.const_data_ptr<T>(), t.grad_x.mutable_data_ptr<T>(),
          t.grad_log_scale.mutable_data_ptr<T>(), sg, st, static_cast<A>(clamp),
          static_cast<A>(inverse_clamp(clamp)));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
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

// ---- masked_affine_coupling: one warp per segment of a (C * S) row of y, element k ----
// of the row in channel c = k / S: transformed channels are computed from params, the
// others copied, so y (and grad_x) is written once, in order.

template <typename T, typename A, bool kReverse, bool kClamped>
__global__ void masked_fwd_kernel(const T* __restrict__ x, const T* __restrict__ params,
                                  T* __restrict__ y, T* __restrict__ logdet,
                                  A* __restrict__ partial, Segments sg, MaskLayout m, A clamp,
                                  A inv_clamp) {
  const WarpSegment w = warp_segment(sg);
  if (w.index >= sg.total) return;
  const int64_t np = 2 * m.n_b * m.spatial;
  const T* xr = x + w.base;
  const T* ls = params + w.row * np;
  const T* sh = ls + m.n_b * m.spatial;
  T* yr = y + w.base;
  A acc = A(0);
  for (int64_t k = w.begin + w.lane; k < w.end; k += kWarp) {
    const int64_t p = param_index(m, k);
    if (p < 0) {
      yr[k] = xr[k];
      continue;
    }
    const auto r = coupling_forward<A, kReverse, kClamped>(
        static_cast<A>(xr[k]), static_cast<A>(ls[p]), static_cast<A>(sh[p]), clamp, inv_clamp);
    yr[k] = static_cast<T>(r.y);
    acc += r.logdet;
  }
  store_segment_sum(warp_sum(acc), w, sg, logdet, partial);
}

template <typename T, typename A, bool kReverse, bool kClamped>
__global__ void masked_bwd_kernel(const T* __restrict__ gy, const T* __restrict__ gl,
                                  int64_t gl_stride, const T* __restrict__ x,
                                  const T* __restrict__ params, T* __restrict__ gx,
                                  T* __restrict__ gp, Segments sg, MaskLayout m, A clamp,
                                  A inv_clamp) {
  const WarpSegment w = warp_segment(sg);
  if (w.index >= sg.total) return;
  const int64_t np = 2 * m.n_b * m.spatial;
  const A g_logdet = static_cast<A>(gl[w.row * gl_stride]);
  const T* gyr = gy + w.base;
  const T* xr = x + w.base;
  const T* ls = params + w.row * np;
  const T* sh = ls + m.n_b * m.spatial;
  T* gxr = gx + w.base;
  T* g_ls = gp + w.row * np;
  T* g_sh = g_ls + m.n_b * m.spatial;
  for (int64_t k = w.begin + w.lane; k < w.end; k += kWarp) {
    const int64_t p = param_index(m, k);
    if (p < 0) {
      gxr[k] = gyr[k];
      continue;
    }
    const A g = static_cast<A>(gyr[k]);
    const auto r = coupling_backward<A, kReverse, kClamped>(
        g, g_logdet, static_cast<A>(xr[k]), static_cast<A>(ls[p]), static_cast<A>(sh[p]), clamp,
        inv_clamp);
    gxr[k] = static_cast<T>(r.grad_x);
    g_ls[p] = static_cast<T>(r.grad_log_scale);
    g_sh[p] = static_cast<T>(kReverse ? -r.grad_x : g);  // dL/dshift
  }
}

template <typename T, bool kReverse, bool kClamped>
void launch_masked_forward(const MaskedTensors& mt, Tensor& y, Tensor& logdet,
                           double clamp) {
  using A = opmath_t<T>;
  const int64_t rows = y.size(0);
  const Segments sg = make_segments(rows, mt.layout.channels * mt.layout.spatial, 1);
  Tensor partial;
  if (sg.per_row > 1) {
    partial = empty({sg.total}, y, scalar_type_of<A>());
  }
  auto stream = cuda::current_stream();
  masked_fwd_kernel<T, A, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          mt.x.const_data_ptr<T>(), mt.params.const_data_ptr<T>(), y.mutable_data_ptr<T>(),
          logdet.mutable_data_ptr<T>(), sg.per_row > 1 ? partial.mutable_data_ptr<A>() : nullptr,
          sg, mt.layout, static_cast<A>(clamp), static_cast<A>(inverse_clamp(clamp)));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  if (sg.per_row > 1) {
    row_partial_sum_kernel<T, A><<<grid_for(rows), kWarp * kWarpsPerBlock, 0, stream>>>(
        partial.const_data_ptr<A>(), logdet.mutable_data_ptr<T>(), rows, sg.per_row);
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, bool kReverse, bool kClamped>
void launch_masked_backward(const MaskedTensors& mt, const Tensor& gy, const Tensor& gl,
                            Tensor& gx, Tensor& gp, double clamp) {
  using A = opmath_t<T>;
  const Segments sg = make_segments(gx.size(0), mt.layout.channels * mt.layout.spatial, 1);
  auto stream = cuda::current_stream();
  masked_bwd_kernel<T, A, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          gy.const_data_ptr<T>(), gl.const_data_ptr<T>(), gl.stride(0), mt.x.const_data_ptr<T>(),
          mt.params.const_data_ptr<T>(), gx.mutable_data_ptr<T>(), gp.mutable_data_ptr<T>(), sg,
          mt.layout, static_cast<A>(clamp), static_cast<A>(inverse_clamp(clamp)));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
}


}  // namespace

std::tuple<Tensor, Tensor> affine_coupling_cuda(const Tensor& x,
                                                const Tensor& log_scale,
                                                const Tensor& shift, double clamp,
                                                bool reverse) {
  const cuda::DeviceGuard guard(x);
  ForwardTensors t = prepare_forward(x, log_scale, shift, clamp, /*unit_col=*/true);
  check_cuda(x, "x");
  if (x.numel() == 0) return {t.y, t.logdet};
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(x.scalar_type(), "affine_coupling_cuda",
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

std::tuple<Tensor, Tensor> affine_coupling_backward_cuda(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x,
    const Tensor& log_scale, const Tensor& shift, double clamp, bool reverse) {
  const cuda::DeviceGuard guard(x);
  BackwardTensors t =
      prepare_backward(grad_y, grad_logdet, x, log_scale, shift, clamp, /*unit_col=*/true);
  check_cuda(x, "x");
  if (x.numel() == 0) return {t.grad_x, t.grad_log_scale};
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(x.scalar_type(),
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

std::tuple<Tensor, Tensor> masked_affine_coupling_cuda(const Tensor& x,
                                                       const Tensor& params,
                                                       std::string_view mask, bool swap,
                                                       double clamp, bool reverse) {
  const cuda::DeviceGuard guard(x);
  auto [mt, y, logdet] = prepare_masked_forward(x, params, mask, swap, clamp);
  check_cuda(x, "x");
  if (x.numel() == 0) return {y, logdet};
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(x.scalar_type(),
                                            "masked_affine_coupling_cuda", [&] {
    dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
      launch_masked_forward<scalar_t, decltype(rev)::value, decltype(clamped)::value>(mt, y, logdet,
                                                                                      clamp);
    });
  });
  return {y, logdet};
}

std::tuple<Tensor, Tensor> masked_affine_coupling_backward_cuda(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x,
    const Tensor& params, std::string_view mask, bool swap, double clamp, bool reverse) {
  const cuda::DeviceGuard guard(x);
  auto [mt, gy, gl, grad_x, grad_params] =
      prepare_masked_backward(grad_y, grad_logdet, x, params, mask, swap, clamp);
  check_cuda(x, "x");
  if (x.numel() == 0) return {grad_x, grad_params};
  GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(x.scalar_type(),
                                            "masked_affine_coupling_backward_cuda", [&] {
    dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
      launch_masked_backward<scalar_t, decltype(rev)::value, decltype(clamped)::value>(
          mt, gy, gl, grad_x, grad_params, clamp);
    });
  });
  return {grad_x, grad_params};
}

STABLE_TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("affine_coupling", TORCH_BOX(&affine_coupling_cuda));
  m.impl("affine_coupling_backward", TORCH_BOX(&affine_coupling_backward_cuda));
  m.impl("masked_affine_coupling", TORCH_BOX(&masked_affine_coupling_cuda));
  m.impl("masked_affine_coupling_backward", TORCH_BOX(&masked_affine_coupling_backward_cuda));
}

}  // namespace coupling
}  // namespace gencore
