// Contrastive similarity-matrix losses (CLIP, NT-Xent, and the rectangular row loss
// the distributed versions use), tiled with an online log-sum-exp so that the (n, m)
// matrix of logits is never stored.
//
// Everything here is device-agnostic ATen code: input checks, normalization, the
// positive (diagonal) terms, which cost O(n D), and the assembly of losses and
// gradients. The O(n m D) part is two backend functions, implemented once per device
// (contrastive_cpu.cpp, contrastive_cuda.cu) and passed in as a Backend:
//
//   Backend::forward(q, k, scale, exclude, symmetric, row_lse, col_lse)
//     q: (n, D), k: (m, D), contiguous, one dtype; scale: 0-d tensor of the
//     accumulation dtype A (float32, or float64 for float64 inputs) on the device.
//     With R = q k^T and logits L = scale * R, entry (i, exclude[i]) masked out
//     (exclude: int64 (n,), -1 = nothing masked in row i):
//       row_lse[i] = log sum_j exp(L[i, j])            (n,) A, written
//       col_lse[j] = log sum_i exp(L[i, j])            (m,) A, written; undefined = not wanted
//     symmetric: q and k are one tensor, exclude[i] = i and col_lse is undefined; a
//     backend may visit only the tiles on and above the diagonal.
//
//   Backend::backward(q, k, scale, exclude, symmetric, row_lse, alpha, col_lse, beta,
//                     grad_q, grad_k, grad_scale)
//     With P[i, j] = exp(L[i, j] - row_lse[i]) and C[i, j] = exp(L[i, j] - col_lse[j])
//     (masked entries 0), W = alpha[:, None] * P + beta[None, :] * C (the C term only
//     when col_lse is defined); alpha (n,), beta (m,) A. Accumulates (+=) into the A
//     tensors grad_q (n, D), grad_k (m, D) and grad_scale (0-d):
//       grad_q += scale * W k,  grad_k += scale * W^T q,  grad_scale += sum(W * R).
//     symmetric (col_lse undefined, grad_k undefined): the total gradient with respect
//     to the one tensor q = k goes into grad_q: grad_q += scale * (W + W^T) q.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

#include "common/checks.h"

namespace gencore {
namespace contrastive {

inline at::ScalarType acc_type(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_features(const at::Tensor& t, const char* name) {
  check_floating(t, name);
  TORCH_CHECK_VALUE(t.dim() == 2, "gencore: ", name, " must have shape (N, D), got ", t.sizes());
  if (t.is_cuda()) {
    check_dtype_supported_cuda(t, name);
  } else {
    check_dtype_supported_cpu(t, name);
  }
}

inline void check_pair(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                       const char* b_name, bool same_rows) {
  check_features(a, a_name);
  check_features(b, b_name);
  check_same_device(a, a_name, b, b_name);
  check_same_dtype(a, a_name, b, b_name);
  TORCH_CHECK_VALUE(a.size(1) == b.size(1), "gencore: ", a_name, " and ", b_name,
                    " must have the same feature dimension D: got ", a_name, ".shape=",
                    a.sizes(), " and ", b_name, ".shape=", b.sizes());
  if (same_rows) {
    TORCH_CHECK_VALUE(a.size(0) == b.size(0), "gencore: ", a_name, " and ", b_name,
                      " must have the same number of rows N (row i of one is the positive of row "
                      "i of the other): got ",
                      a_name, ".shape=", a.sizes(), " and ", b_name, ".shape=", b.sizes());
  }
  TORCH_CHECK_VALUE(a.size(0) > 0 && b.size(0) > 0, "gencore: ", a_name, " and ", b_name,
                    " must not be empty: got ", a_name, ".shape=", a.sizes(), " and ", b_name,
                    ".shape=", b.sizes());
}

// A 0-d floating tensor on `device`; its value must be finite and positive. Reading it
// would sync a CUDA stream, so a CUDA tensor's value is not checked here: a non-finite
// or non-positive scale there gives a non-finite loss. (The Python wrappers check float
// hyper-parameters on every device; the nn modules form the scale as exp(parameter).)
inline void check_scale(const at::Tensor& s, const char* name, const at::Device& device) {
  TORCH_CHECK_VALUE(s.dim() == 0, "gencore: ", name, " must be a 0-d tensor, got shape ",
                    s.sizes());
  check_floating(s, name);
  TORCH_CHECK_VALUE(s.device() == device, "gencore: ", name, " must be on the features' device (",
                    device, "), got ", s.device());
  if (!s.is_cuda()) {
    const double v = s.item<double>();
    TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, "gencore: ", name,
                      " must be finite and > 0, got ", v);
  }
}

inline void check_index(const at::Tensor& idx, const char* name, int64_t n,
                        const at::Device& device) {
  TORCH_CHECK_TYPE(idx.scalar_type() == at::kLong, "gencore: ", name, " must be int64, got ",
                   idx.scalar_type());
  TORCH_CHECK_VALUE(idx.dim() == 1 && idx.size(0) == n, "gencore: ", name,
                    " must have shape (n,) = (", n, ",), got ", idx.sizes());
  TORCH_CHECK_VALUE(idx.device() == device, "gencore: ", name,
                    " must be on the features' device (", device, "), got ", idx.device());
}

// scale as a 0-d tensor of the accumulation dtype (no copy when it already is one).
inline at::Tensor acc_scalar(const at::Tensor& s, at::ScalarType acc) {
  return s.to(acc).contiguous();
}

inline at::Tensor to_acc(const at::Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous();
}

// sum_i <a_i, b_i> in the accumulation dtype: the positive logits' raw products.
inline at::Tensor row_dots(const at::Tensor& a, const at::Tensor& b, at::ScalarType acc) {
  return (a.to(acc) * b.to(acc)).sum(1);
}

// The checked, contiguous operands of one op call and its accumulation dtype.
struct Operands {
  at::Tensor a, b, s;  // a, b contiguous in the input dtype; s: 0-d, accumulation dtype
  at::ScalarType acc;
  int64_t n;  // rows of a
};

inline Operands prepare(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                        const at::Tensor& scale, const char* scale_name, bool same_rows) {
  check_pair(a, a_name, b, b_name, same_rows);
  check_scale(scale, scale_name, a.device());
  const auto acc = acc_type(a.scalar_type());
  return {a.contiguous(), b.contiguous(), acc_scalar(scale, acc), acc, a.size(0)};
}

// ---------------------------------------------------------------- CLIP ------------------
// loss = (CE(L, arange N) + CE(L^T, arange N)) / 2, L = logit_scale * a b^T.
template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_loss_impl(const at::Tensor& image,
                                                              const at::Tensor& text,
                                                              const at::Tensor& logit_scale) {
  const auto [a, b, s, acc, n] =
      prepare(image, "image_features", text, "text_features", logit_scale, "logit_scale", true);
  const auto opts = a.options().dtype(acc);
  at::Tensor row_lse = at::empty({n}, opts), col_lse = at::empty({n}, opts);
  Backend::forward(a, b, s, at::Tensor(), false, row_lse, col_lse);
  const at::Tensor pos = s * row_dots(a, b, acc);  // (n,) the diagonal logits
  const at::Tensor loss = ((row_lse.sum() + col_lse.sum() - 2 * pos.sum()) / (2.0 * n));
  return {loss.to(image.scalar_type()), row_lse, col_lse};
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_loss_backward_impl(
    const at::Tensor& grad_loss, const at::Tensor& image, const at::Tensor& text,
    const at::Tensor& logit_scale, const at::Tensor& row_lse, const at::Tensor& col_lse) {
  const auto [a, b, s, acc, n] =
      prepare(image, "image_features", text, "text_features", logit_scale, "logit_scale", true);
  // d loss / d L = g / (2N) (P + C - 2 I): W carries the P and C terms, the identity
  // (positive) term is added here.
  const at::Tensor w = to_acc(grad_loss, acc) / (2.0 * n);  // 0-d
  const at::Tensor alpha = w.expand({n}).contiguous(), beta = alpha;
  at::Tensor ga = at::zeros({n, a.size(1)}, a.options().dtype(acc));
  at::Tensor gb = at::zeros_like(ga);
  at::Tensor gs = at::zeros({}, a.options().dtype(acc));
  Backend::backward(a, b, s, at::Tensor(), false, row_lse.to(acc).contiguous(), alpha,
                    col_lse.to(acc).contiguous(), beta, ga, gb, gs);
  const at::Tensor a_acc = a.to(acc), b_acc = b.to(acc);
  ga.sub_(b_acc * (2 * w * s));
  gb.sub_(a_acc * (2 * w * s));
  gs.sub_(2 * w * (a_acc * b_acc).sum());
  return {ga.to(image.scalar_type()), gb.to(text.scalar_type()),
          gs.to(logit_scale.scalar_type())};
}

// ---------------------------------------------------------------- NT-Xent ---------------
// z = normalize(cat(z1, z2)) (2N, D); L = z z^T / temperature without its diagonal;
// row i's positive is i + N (i < N) or i - N; loss = mean over the 2N rows of CE.
inline at::Tensor normalize_rows(const at::Tensor& z, at::ScalarType acc) {
  const at::Tensor za = z.to(acc);
  return za / za.norm(2, 1, true).clamp_min(1e-12);
}

inline at::Tensor positive_partner(int64_t n, const at::TensorOptions& opts) {
  // (2N,) int64: i + N for i < N, i - N otherwise.
  return at::cat({at::arange(n, 2 * n, opts.dtype(at::kLong)), at::arange(0, n, opts.dtype(at::kLong))});
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor> nt_xent_loss_impl(const at::Tensor& z1, const at::Tensor& z2,
                                                     const at::Tensor& temperature) {
  const auto [z1c, z2c, t, acc, n] = prepare(z1, "z1", z2, "z2", temperature, "temperature", true);
  const at::Tensor zhat = normalize_rows(at::cat({z1c, z2c}), acc);
  const at::Tensor zk = zhat.to(z1.scalar_type()).contiguous();
  const at::Tensor inv_t = t.reciprocal();
  const at::Tensor self = at::arange(2 * n, z1.options().dtype(at::kLong));
  at::Tensor lse = at::empty({2 * n}, z1.options().dtype(acc));
  Backend::forward(zk, zk, inv_t, self, true, lse, at::Tensor());
  const at::Tensor pos = inv_t * row_dots(zhat.narrow(0, 0, n), zhat.narrow(0, n, n), acc);
  const at::Tensor loss = (lse.sum() - 2 * pos.sum()) / (2.0 * n);
  return {loss.to(z1.scalar_type()), lse};
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> nt_xent_loss_backward_impl(
    const at::Tensor& grad_loss, const at::Tensor& z1, const at::Tensor& z2,
    const at::Tensor& temperature, const at::Tensor& lse) {
  const auto [z1c, z2c, t, acc, n] = prepare(z1, "z1", z2, "z2", temperature, "temperature", true);
  const at::Tensor zraw = at::cat({z1c, z2c}).to(acc);
  const at::Tensor norm = zraw.norm(2, 1, true).clamp_min(1e-12);
  const at::Tensor zhat = zraw / norm;
  const at::Tensor zk = zhat.to(z1.scalar_type()).contiguous();
  const at::Tensor inv_t = t.reciprocal();
  const at::Tensor self = at::arange(2 * n, z1.options().dtype(at::kLong));
  const at::Tensor w = to_acc(grad_loss, acc) / (2.0 * n);
  const at::Tensor alpha = w.expand({2 * n}).contiguous();
  at::Tensor gz = at::zeros({2 * n, z1.size(1)}, z1.options().dtype(acc));
  at::Tensor gs = at::zeros({}, z1.options().dtype(acc));  // d loss / d (1 / temperature)
  Backend::backward(zk, zk, inv_t, self, true, lse.to(acc).contiguous(), alpha, at::Tensor(),
                    at::Tensor(), gz, at::Tensor(), gs);
  // Positive terms: L[i, p(i)] = <zhat_i, zhat_p(i)> / t appears in rows i and p(i).
  const at::Tensor partner = at::cat({zhat.narrow(0, n, n), zhat.narrow(0, 0, n)});
  gz.sub_(partner * (2 * w * inv_t));
  gs.sub_(2 * w * (zhat.narrow(0, 0, n) * zhat.narrow(0, n, n)).sum());
  // Through the normalization: d zraw = (d zhat - zhat <zhat, d zhat>) / |zraw|; norms
  // clamped at 1e-12 pass the gradient through unscaled by the projection, as
  // F.normalize's autograd does.
  const at::Tensor proj = (gz * zhat).sum(1, true);
  const at::Tensor clamped = zraw.norm(2, 1, true) < 1e-12;
  const at::Tensor gzraw = at::where(clamped, gz / norm, (gz - zhat * proj) / norm);
  const at::Tensor gt = -gs * inv_t * inv_t;  // d/dt = d/d(1/t) * (-1/t^2)
  return {gzraw.narrow(0, 0, n).to(z1.scalar_type()), gzraw.narrow(0, n, n).to(z2.scalar_type()),
          gt.to(temperature.scalar_type())};
}

// ---------------------------------------------------------------- rows ------------------
// The rectangular row loss the distributed losses are made of:
//   loss[i] = log sum_{j != exclude[i]} exp(scale q_i . k_j) - scale q_i . k_{positive[i]}
template <class Backend>
std::tuple<at::Tensor, at::Tensor> contrastive_rows_impl(const at::Tensor& query,
                                                         const at::Tensor& keys,
                                                         const at::Tensor& scale,
                                                         const at::Tensor& positive,
                                                         const at::Tensor& exclude) {
  const auto [q, k, s, acc, n] = prepare(query, "query", keys, "keys", scale, "scale", false);
  check_index(positive, "positive", n, query.device());
  check_index(exclude, "exclude", n, query.device());
  if (!query.is_cuda()) {
    const int64_t m = keys.size(0);
    TORCH_CHECK_VALUE(positive.min().item<int64_t>() >= 0 && positive.max().item<int64_t>() < m,
                      "gencore: positive must index rows of keys, in [0, ", m, ")");
    TORCH_CHECK_VALUE(exclude.min().item<int64_t>() >= -1 && exclude.max().item<int64_t>() < m,
                      "gencore: exclude must be -1 or index rows of keys, in [0, ", m, ")");
    TORCH_CHECK_VALUE(!positive.eq(exclude).any().item<bool>(),
                      "gencore: a row's positive must not be its excluded column");
  }
  at::Tensor lse = at::empty({q.size(0)}, q.options().dtype(acc));
  Backend::forward(q, k, s, exclude.contiguous(), false, lse, at::Tensor());
  const at::Tensor loss = lse - s * row_dots(q, k.index_select(0, positive), acc);
  return {loss.to(query.scalar_type()), lse};
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_rows_backward_impl(
    const at::Tensor& grad_loss, const at::Tensor& query, const at::Tensor& keys,
    const at::Tensor& scale, const at::Tensor& positive, const at::Tensor& exclude,
    const at::Tensor& lse) {
  const auto [q, k, s, acc, n] = prepare(query, "query", keys, "keys", scale, "scale", false);
  check_index(positive, "positive", n, query.device());
  check_index(exclude, "exclude", n, query.device());
  TORCH_CHECK_VALUE(grad_loss.dim() == 1 && grad_loss.size(0) == query.size(0),
                    "gencore: grad_loss must have shape (n,), got ", grad_loss.sizes());
  const at::Tensor g = to_acc(grad_loss, acc);
  at::Tensor gq = at::zeros({q.size(0), q.size(1)}, q.options().dtype(acc));
  at::Tensor gk = at::zeros({k.size(0), k.size(1)}, k.options().dtype(acc));
  at::Tensor gs = at::zeros({}, q.options().dtype(acc));
  Backend::backward(q, k, s, exclude.contiguous(), false, lse.to(acc).contiguous(), g,
                    at::Tensor(), at::Tensor(), gq, gk, gs);
  const at::Tensor kpos = k.index_select(0, positive).to(acc), q_acc = q.to(acc);
  const at::Tensor gsq = g.unsqueeze(1) * s;
  gq.sub_(kpos * gsq);
  gk.index_add_(0, positive, -(q_acc * gsq));
  gs.sub_((g * (q_acc * kpos).sum(1)).sum());
  return {gq.to(query.scalar_type()), gk.to(keys.scalar_type()), gs.to(scale.scalar_type())};
}

}  // namespace contrastive
}  // namespace gencore
