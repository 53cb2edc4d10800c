// CPU backend of the rational-quadratic spline op: parallel_for over (row, chunk) tasks of
// the (B, N) view of x (common/cpu_loop.h), one element at a time with the math of
// spline_math.h, the parameter rows read in place. The log-determinant's chunk sums are
// added in a fixed order, so results do not depend on the thread count.

#include <algorithm>
#include <vector>

#include "common/cpu_loop.h"
#include "spline/spline.h"

namespace gencore {
namespace spline {
namespace {

template <typename T>
struct Rows {
  const T *w, *h, *d;
  int64_t sw, sh, sd;
};

template <typename T>
Rows<T> rows_of(const Forward& f) {
  return {f.w.t.const_data_ptr<T>(), f.h.t.const_data_ptr<T>(), f.d.t.const_data_ptr<T>(),
          f.w.stride, f.h.stride, f.d.stride};
}

// softmax of one parameter row (k values at u) into o, shifted by its own maximum.
template <typename T>
inline void softmax_row(const T* __restrict u, int k, T* __restrict o) {
  T mx = u[0];
  for (int j = 1; j < k; ++j) mx = u[j] > mx ? u[j] : mx;
  T sum = T(0);
  for (int j = 0; j < k; ++j) sum += (o[j] = fastmath::exp(u[j] - mx));
  const T inv = T(1) / sum;
  for (int j = 0; j < k; ++j) o[j] *= inv;
}

// exp(-40): a row whose terms all lie below it relative to the shared shift could have
// lost digits to subnormals (float32 below exp(-87)); it is redone with its own shift.
constexpr double kSharedShiftFloor = 4.248354255291589e-18;

// softmax of the parameter rows of elements [first, first + m) into out (m * k values).
// Contiguous rows (stride k) share one shift, the block's maximum, so the exps run as one
// vectorized loop over m * k values; a row far below that maximum is redone on its own.
template <typename T>
GENCORE_CPU_CLONES void softmax_rows(const T* __restrict u, int64_t stride, int64_t first, int64_t m, int k,
                                     T* __restrict out) {
  if (stride != k) {
    for (int64_t i = 0; i < m; ++i) softmax_row(u + (first + i) * stride, k, out + i * k);
    return;
  }
  const T* __restrict v = u + first * stride;
  const int64_t len = m * k;
  T mx = v[0];
  for (int64_t i = 1; i < len; ++i) mx = v[i] > mx ? v[i] : mx;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) out[i] = fastmath::exp(v[i] - mx);
  for (int64_t i = 0; i < m; ++i) {
    T* o = out + i * k;
    T sum = T(0);
    for (int j = 0; j < k; ++j) sum += o[j];
    // sum >= exp(row max - mx): a row far below the shift has a tiny sum (NaN rows fail too)
    if (!(sum >= static_cast<T>(kSharedShiftFloor))) {
      softmax_row(v + i * k, k, o);
      continue;
    }
    const T inv = T(1) / sum;
    for (int j = 0; j < k; ++j) o[j] *= inv;
  }
}

// Elements per block: their softmaxes fit two buffers of kSigmaBuffer values (L1).
constexpr int64_t kSigmaBuffer = 2048;

// fn(i, e, knots of the widths, knots of the heights) for the elements e of
// [first, first + len), the softmaxes computed a block at a time.
template <typename T, typename Fn>
inline void for_each_element(const Rows<T>& p, int64_t first, int64_t len, int k, T bound, const Fn& fn) {
  alignas(64) T sw[kSigmaBuffer];
  alignas(64) T sh[kSigmaBuffer];
  const int64_t block = std::max<int64_t>(1, kSigmaBuffer / k);
  for (int64_t b = 0; b < len; b += block) {
    const int64_t m = std::min(block, len - b);
    softmax_rows(p.w, p.sw, first + b, m, k, sw);
    softmax_rows(p.h, p.sh, first + b, m, k, sh);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t e = first + b + i;
      fn(e, knots_from<T>(CachedSigma<T>{sw + i * k}, k, kMinBinWidth, bound),
         knots_from<T>(CachedSigma<T>{sh + i * k}, k, kMinBinHeight, bound));
    }
  }
}

template <typename T, bool kReverse>
GENCORE_CPU_CLONES T forward_chunk(const T* __restrict x, T* __restrict y, Rows<T> p, int64_t first,
                                   int64_t len, int k, T bound) {
  T acc = T(0);
  for_each_element(p, first, len, k, bound, [&](int64_t e, const auto& kw, const auto& kh) {
    const Eval<T> r = element_forward(kw, kh, p.d + e * p.sd, x[e], kReverse);
    y[e] = r.out;
    acc += r.log_deriv;
  });
  return acc;
}

template <typename T, bool kReverse>
GENCORE_CPU_CLONES void backward_chunk(const T* __restrict x, const T* __restrict gy, T gl,
                                       Rows<T> p, T* __restrict gx, T* __restrict gw,
                                       T* __restrict gh, T* __restrict gd, int64_t first,
                                       int64_t len, int k, T bound) {
  for_each_element(p, first, len, k, bound, [&](int64_t e, const auto& kw, const auto& kh) {
    gx[e] = element_backward(kw, kh, p.d + e * p.sd, x[e], gy[e], gl, kReverse, gw + e * k,
                             gh + e * k, gd + e * (k - 1));
  });
}

template <typename T, bool kReverse>
void forward_typed(Forward& f) {
  const T* x = f.x.const_data_ptr<T>();
  T* y = f.y.mutable_data_ptr<T>();
  T* logdet = f.logdet.mutable_data_ptr<T>();
  const Rows<T> p = rows_of<T>(f);
  const int64_t n = f.n, per_row = chunks_per_row(n);
  const int k = static_cast<int>(f.k);
  const T bound = static_cast<T>(f.bound);
  std::vector<T> partial(per_row > 1 ? f.rows * per_row : 0);
  for_each_row_chunk(f.rows, n, [&](int64_t task, int64_t row, int64_t begin, int64_t end) {
    const T sum = forward_chunk<T, kReverse>(x, y, p, row * n + begin, end - begin, k, bound);
    if (per_row == 1) {
      logdet[row] = sum;
    } else {
      partial[task] = sum;
    }
  });
  for (int64_t row = 0; per_row > 1 && row < f.rows; ++row) {
    T sum = T(0);
    for (int64_t c = 0; c < per_row; ++c) sum += partial[row * per_row + c];
    logdet[row] = sum;
  }
}

template <typename T, bool kReverse>
void backward_typed(Backward& b) {
  const Forward& f = b.f;
  const T* x = f.x.const_data_ptr<T>();
  const T* gy = b.grad_y.const_data_ptr<T>();
  const T* gl = b.grad_logdet.const_data_ptr<T>();
  const Rows<T> p = rows_of<T>(f);
  T* gx = b.grad_x.mutable_data_ptr<T>();
  T* gw = b.grad_w.mutable_data_ptr<T>();
  T* gh = b.grad_h.mutable_data_ptr<T>();
  T* gd = b.grad_d.mutable_data_ptr<T>();
  const int64_t n = f.n, gls = b.grad_logdet_stride;
  const int k = static_cast<int>(f.k);
  const T bound = static_cast<T>(f.bound);
  for_each_row_chunk(f.rows, n, [&](int64_t, int64_t row, int64_t begin, int64_t end) {
    backward_chunk<T, kReverse>(x, gy, gl[row * gls], p, gx, gw, gh, gd, row * n + begin, end - begin,
                                k, bound);
  });
}

struct CpuBackend {
  static void forward(Forward& f) {
    check_cpu(f.x, "x");
    GENCORE_DISPATCH_FLOATING_TYPES(f.x.scalar_type(), "rq_spline_cpu", [&] {
      if (f.reverse) {
        forward_typed<scalar_t, true>(f);
      } else {
        forward_typed<scalar_t, false>(f);
      }
    });
  }
  static void backward(Backward& b) {
    check_cpu(b.f.x, "x");
    GENCORE_DISPATCH_FLOATING_TYPES(b.f.x.scalar_type(), "rq_spline_backward_cpu", [&] {
      if (b.f.reverse) {
        backward_typed<scalar_t, true>(b);
      } else {
        backward_typed<scalar_t, false>(b);
      }
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("rq_spline", TORCH_BOX(&rq_spline_impl<CpuBackend>));
  m.impl("rq_spline_backward", TORCH_BOX(&rq_spline_backward_impl<CpuBackend>));
}

}  // namespace spline
}  // namespace gencore
