// CUDA backend of the rational-quadratic spline op (spline.h has the contract, spline_math.h
// the per-element math), in float32 (float64 for double; float16 / bfloat16 read and
// written in their own type).
//
// Forward: one warp owns a segment of kSegment consecutive elements of one row of x, each
// lane every 32nd element (coalesced x and y), walking that element's parameter rows from
// global memory (K consecutive values; neighbouring lanes read neighbouring rows, so a
// warp's reads of one j touch few cache lines). The warp sums its log-determinant terms
// with shuffles; rows longer than one segment write per-segment sums that
// cuda::row_partial_sum_kernel adds in a fixed order: no atomics, deterministic.
// Backward: one thread per element (no reduction): it writes its input gradient and its
// K + K + K - 1 parameter gradients.
#include <cstdint>

#include "common/cuda_context.h"
#include "common/cuda_utils.cuh"
#include "spline/spline.h"

namespace gencore {
namespace spline {
namespace {

using cuda::kWarp;
using cuda::kWarpsPerBlock;
constexpr int64_t kSegment = 4 * kWarp;  // elements per warp segment
constexpr int kThreads = kWarp * kWarpsPerBlock;

template <typename T>
struct Params {
  const T *w, *h, *d;
  int64_t sw, sh, sd;  // element strides of the parameter rows
  int k;
};

template <typename T>
Params<T> params_of(const Forward& f) {
  return {f.w.t.const_data_ptr<T>(), f.h.t.const_data_ptr<T>(), f.d.t.const_data_ptr<T>(),
          f.w.stride, f.h.stride, f.d.stride, static_cast<int>(f.k)};
}

template <typename T, typename A, bool kReverse>
__global__ void rq_spline_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, Params<T> p,
                                     T* __restrict__ logdet, A* __restrict__ partial, int64_t rows,
                                     int64_t n, int64_t per_row, A bound) {
  const cuda::WarpSegment w = cuda::warp_segment(n, kSegment, per_row);
  if (w.index >= rows * per_row) return;
  A acc = A(0);
  for (int64_t j = w.begin + w.lane; j < w.end; j += kWarp) {
    const int64_t e = w.base + j;
    const Eval<A> r = element_forward(live_knots<A>(p.w + e * p.sw, p.k, kMinBinWidth, bound),
                                      live_knots<A>(p.h + e * p.sh, p.k, kMinBinHeight, bound),
                                      p.d + e * p.sd, static_cast<A>(x[e]), kReverse);
    y[e] = static_cast<T>(r.out);
    acc += r.log_deriv;
  }
  acc = cuda::warp_sum(acc);
  if (w.lane != 0) return;
  if (per_row == 1) {
    logdet[w.row] = static_cast<T>(acc);
  } else {
    partial[w.index] = acc;
  }
}

template <typename T, typename A, bool kReverse>
__global__ void rq_spline_bwd_kernel(const T* __restrict__ x, const T* __restrict__ gy,
                                     const T* __restrict__ gl, int64_t gl_stride, Params<T> p,
                                     T* __restrict__ gx, T* __restrict__ gw, T* __restrict__ gh,
                                     T* __restrict__ gd, int64_t total, int64_t n, A bound) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const int k = p.k;
  const A g_logdet = static_cast<A>(gl[(e / n) * gl_stride]);
  const A r = element_backward(live_knots<A>(p.w + e * p.sw, k, kMinBinWidth, bound),
                               live_knots<A>(p.h + e * p.sh, k, kMinBinHeight, bound), p.d + e * p.sd,
                               static_cast<A>(x[e]), static_cast<A>(gy[e]), g_logdet, kReverse,
                               gw + e * k, gh + e * k, gd + e * (k - 1));
  gx[e] = static_cast<T>(r);
}

template <typename T, bool kReverse>
void launch_forward(Forward& f) {
  using A = opmath_t<T>;
  const int64_t per_row = (f.n + kSegment - 1) / kSegment;
  const int64_t total = f.rows * per_row;
  Tensor partial;
  if (per_row > 1) partial = empty({total}, f.y, scalar_type_of<A>());
  auto stream = cuda::current_stream();
  rq_spline_fwd_kernel<T, A, kReverse><<<cuda::grid_for(total), kThreads, 0, stream>>>(
      f.x.const_data_ptr<T>(), f.y.mutable_data_ptr<T>(), params_of<T>(f),
      f.logdet.mutable_data_ptr<T>(), per_row > 1 ? partial.mutable_data_ptr<A>() : nullptr, f.rows,
      f.n, per_row, static_cast<A>(f.bound));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  if (per_row > 1) {
    cuda::row_partial_sum_kernel<T, A><<<cuda::grid_for(f.rows), kThreads, 0, stream>>>(
        partial.const_data_ptr<A>(), f.logdet.mutable_data_ptr<T>(), f.rows, per_row);
    GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, bool kReverse>
void launch_backward(Backward& b) {
  using A = opmath_t<T>;
  const Forward& f = b.f;
  const int64_t total = f.rows * f.n;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  GENCORE_CHECK(blocks < (int64_t{1} << 31), "gencore: rq_spline: tensor too large for one launch");
  rq_spline_bwd_kernel<T, A, kReverse><<<static_cast<unsigned>(blocks), kThreads, 0, cuda::current_stream()>>>(
      f.x.const_data_ptr<T>(), b.grad_y.const_data_ptr<T>(), b.grad_logdet.const_data_ptr<T>(),
      b.grad_logdet_stride, params_of<T>(f), b.grad_x.mutable_data_ptr<T>(),
      b.grad_w.mutable_data_ptr<T>(), b.grad_h.mutable_data_ptr<T>(), b.grad_d.mutable_data_ptr<T>(),
      total, f.n, static_cast<A>(f.bound));
  GENCORE_CUDA_KERNEL_LAUNCH_CHECK();
}

struct CudaBackend {
  static void forward(Forward& f) {
    const cuda::DeviceGuard guard(f.x);
    check_cuda(f.x, "x");
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(f.x.scalar_type(), "rq_spline_cuda", [&] {
      if (f.reverse) {
        launch_forward<scalar_t, true>(f);
      } else {
        launch_forward<scalar_t, false>(f);
      }
    });
  }
  static void backward(Backward& b) {
    const cuda::DeviceGuard guard(b.f.x);
    check_cuda(b.f.x, "x");
    GENCORE_DISPATCH_FLOATING_TYPES_AND_HALF2(b.f.x.scalar_type(), "rq_spline_backward_cuda", [&] {
      if (b.f.reverse) {
        launch_backward<scalar_t, true>(b);
      } else {
        launch_backward<scalar_t, false>(b);
      }
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("rq_spline", TORCH_BOX(&rq_spline_impl<CudaBackend>));
  m.impl("rq_spline_backward", TORCH_BOX(&rq_spline_backward_impl<CudaBackend>));
}

}  // namespace spline
}  // namespace gencore
