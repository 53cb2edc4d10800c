// CUDA launcher of the affine coupling op. One warp owns one segment (a row, or a
// chunk of a long row) of kWarpChunk * V elements, loads V elements per lane with
// one vector instruction, computes in float32 (float64 for double) with the math of
// common/coupling_math.h, and reduces s with warp shuffles for the log-determinant.
// Long rows write per-segment partial sums that a second kernel adds in a fixed
// order, so the result is deterministic (no atomics).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "common/coupling_math.h"
#include "coupling/coupling.h"

namespace gencore {
namespace coupling {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kIters = 4;  // vectors per lane per segment

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

struct Segments {
  int64_t n;        // row length
  int64_t seg_len;  // elements per segment
  int64_t per_row;  // segments per row
  int64_t total;    // rows * per_row
};

template <typename T, typename A, int V, bool kReverse, bool kClamped>
__global__ void affine_coupling_fwd_kernel(const T* __restrict__ x, const T* __restrict__ ls,
                                           const T* __restrict__ t, T* __restrict__ y,
                                           T* __restrict__ logdet, A* __restrict__ partial,
                                           Segments sg, A clamp, A inv_clamp) {
  const int lane = threadIdx.x % kWarp;
  const int64_t seg = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (seg >= sg.total) return;
  const int64_t row = seg / sg.per_row;
  const int64_t begin = (seg % sg.per_row) * sg.seg_len;
  const int64_t end = min(sg.n, begin + sg.seg_len);
  const int64_t base = row * sg.n;
  A acc = A(0);
  for (int64_t j = begin + static_cast<int64_t>(lane) * V; j < end; j += kWarp * V) {
    const auto xv = load_pack<T, V>(x + base + j);
    const auto lv = load_pack<T, V>(ls + base + j);
    const auto tv = load_pack<T, V>(t + base + j);
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
  if (lane == 0) {
    if (sg.per_row == 1) {
      logdet[row] = static_cast<T>(acc);
    } else {
      partial[seg] = acc;
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
                                           T* __restrict__ gls, Segments sg, A clamp,
                                           A inv_clamp) {
  const int lane = threadIdx.x % kWarp;
  const int64_t seg = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (seg >= sg.total) return;
  const int64_t row = seg / sg.per_row;
  const int64_t begin = (seg % sg.per_row) * sg.seg_len;
  const int64_t end = min(sg.n, begin + sg.seg_len);
  const int64_t base = row * sg.n;
  const A g_logdet = static_cast<A>(gl[row]);
  for (int64_t j = begin + static_cast<int64_t>(lane) * V; j < end; j += kWarp * V) {
    const auto gyv = load_pack<T, V>(gy + base + j);
    const auto xv = load_pack<T, V>(x + base + j);
    const auto lv = load_pack<T, V>(ls + base + j);
    const auto tv = load_pack<T, V>(t + base + j);
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

// Widest vector (up to 16 bytes) that divides the row length and the alignment of
// every pointer, so each row starts on a vector boundary.
template <typename T>
int pick_vec(int64_t n, std::initializer_list<const void*> ptrs) {
  int v = static_cast<int>(16 / sizeof(T));
  while (v > 1) {
    bool ok = n % v == 0;
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

unsigned grid_for(int64_t items) {
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  TORCH_CHECK(blocks < (int64_t{1} << 31), "gencore: tensor too large for one launch");
  return static_cast<unsigned>(std::max<int64_t>(blocks, 1));
}

template <typename T, int V, bool kReverse, bool kClamped>
void launch_forward(const at::Tensor& x, const at::Tensor& ls, const at::Tensor& t, at::Tensor& y,
                    at::Tensor& logdet, double clamp) {
  using A = at::opmath_type<T>;
  const int64_t rows = x.size(0);
  const Segments sg = make_segments(rows, row_length(x), V);
  at::Tensor partial;
  if (sg.per_row > 1) {
    partial = at::empty({sg.total}, x.options().dtype(c10::CppTypeToScalarType<A>::value));
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  const A c = static_cast<A>(clamp);
  const A inv_c = clamp > 0 ? static_cast<A>(1.0 / clamp) : A(0);
  affine_coupling_fwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          x.const_data_ptr<T>(), ls.const_data_ptr<T>(), t.const_data_ptr<T>(),
          y.mutable_data_ptr<T>(), logdet.mutable_data_ptr<T>(),
          sg.per_row > 1 ? partial.mutable_data_ptr<A>() : nullptr, sg, c, inv_c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (sg.per_row > 1) {
    row_partial_sum_kernel<T, A><<<grid_for(rows), kWarp * kWarpsPerBlock, 0, stream>>>(
        partial.const_data_ptr<A>(), logdet.mutable_data_ptr<T>(), rows, sg.per_row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T, int V, bool kReverse, bool kClamped>
void launch_backward(const at::Tensor& gy, const at::Tensor& gl, const at::Tensor& x,
                     const at::Tensor& ls, const at::Tensor& t, at::Tensor& gx, at::Tensor& gls,
                     double clamp) {
  using A = at::opmath_type<T>;
  const Segments sg = make_segments(x.size(0), row_length(x), V);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const A c = static_cast<A>(clamp);
  const A inv_c = clamp > 0 ? static_cast<A>(1.0 / clamp) : A(0);
  affine_coupling_bwd_kernel<T, A, V, kReverse, kClamped>
      <<<grid_for(sg.total), kWarp * kWarpsPerBlock, 0, stream>>>(
          gy.const_data_ptr<T>(), gl.const_data_ptr<T>(), x.const_data_ptr<T>(),
          ls.const_data_ptr<T>(), t.const_data_ptr<T>(), gx.mutable_data_ptr<T>(),
          gls.mutable_data_ptr<T>(), sg, c, inv_c);
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
  check_affine_coupling_inputs(x, log_scale, shift, clamp);
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto xc = x.contiguous();
  const auto lc = log_scale.contiguous();
  const auto tc = shift.contiguous();
  auto y = at::empty_like(xc);
  auto logdet = at::empty({x.size(0)}, x.options());
  if (x.numel() == 0) {
    logdet.zero_();
    return {y, logdet};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_cuda",
                                  [&] {
    const int vec = pick_vec<scalar_t>(row_length(xc), {xc.const_data_ptr(), lc.const_data_ptr(),
                                                        tc.const_data_ptr(), y.const_data_ptr()});
    dispatch_vec<scalar_t>(vec, [&](auto v) {
      dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
        launch_forward<scalar_t, decltype(v)::value, decltype(rev)::value,
                       decltype(clamped)::value>(xc, lc, tc, y, logdet, clamp);
      });
    });
  });
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& log_scale, const at::Tensor& shift, double clamp, bool reverse) {
  check_affine_coupling_backward_inputs(grad_y, grad_logdet, x, log_scale, shift, clamp);
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto gyc = grad_y.contiguous();
  const auto glc = grad_logdet.to(x.scalar_type()).contiguous();
  const auto xc = x.contiguous();
  const auto lc = log_scale.contiguous();
  const auto tc = shift.contiguous();
  auto gx = at::empty_like(xc);
  auto gls = at::empty_like(xc);
  if (x.numel() == 0) return {gx, gls};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "affine_coupling_backward_cuda", [&] {
    const int vec = pick_vec<scalar_t>(
        row_length(xc), {gyc.const_data_ptr(), xc.const_data_ptr(), lc.const_data_ptr(),
                         tc.const_data_ptr(), gx.const_data_ptr(), gls.const_data_ptr()});
    dispatch_vec<scalar_t>(vec, [&](auto v) {
      dispatch_direction(reverse, clamp, [&](auto rev, auto clamped) {
        launch_backward<scalar_t, decltype(v)::value, decltype(rev)::value,
                        decltype(clamped)::value>(gyc, glc, xc, lc, tc, gx, gls, clamp);
      });
    });
  });
  return {gx, gls};
}

TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("affine_coupling", &affine_coupling_cuda);
  m.impl("affine_coupling_backward", &affine_coupling_backward_cuda);
}

}  // namespace coupling
}  // namespace gencore
