// Contrastive similarity-matrix losses (CLIP, NT-Xent, and the rectangular row loss
// the distributed versions use), tiled with an online log-sum-exp so that the (n, m)
// matrix of logits is never stored.
//
// Everything here is device-agnostic (ATen ops by name through the stable dispatcher):
// input checks, normalization, the
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
//
// The sigmoid (SigLIP) loss has no normalizer to carry between passes, only a sum of
// elementwise terms over the same tiles. With L = scale * q k^T + bias and
// z[i, j] = +1 where j == i + offset (a positive pair), -1 elsewhere:
//
//   Backend::sigmoid_forward(q, k, scale, bias, offset, row_sum)
//     row_sum[i] += sum_j softplus(-z[i, j] L[i, j])     (n,) A; scale, bias 0-d A
//
//   Backend::sigmoid_backward(q, k, scale, bias, offset, coef, grad_q, grad_k,
//                             grad_scale, grad_bias)
//     W = coef * (sigmoid(L) - [z = +1]) (coef: 0-d A), computed as -coef sigmoid(-L)
//     on the positives; accumulates grad_q += scale * W k, grad_k += scale * W^T q,
//     grad_scale += sum(W * R) and grad_bias += sum(W).
//
//   Backend::sigmoid_forward_backward(q, k, scale, bias, offset, coef, row_sum, grad_q,
//                                     grad_k, grad_scale, grad_bias)
//     both of the above on one visit of the logits where the backend can (the CUDA GEMM
//     path: three products instead of four); a backend may call the two in turn.
#pragma once

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace gencore {
namespace contrastive {

inline ScalarType acc_type(ScalarType st) { return st == kDouble ? kDouble : kFloat; }

inline void check_features(const Tensor& t, const char* name) {
  check_floating(t, name);
  GENCORE_CHECK_VALUE(t.dim() == 2, "gencore: ", name, " must have shape (N, D), got ", shape(t));
  if (t.is_cuda()) {
    check_dtype_supported_cuda(t, name);
  } else {
    check_dtype_supported_cpu(t, name);
  }
}

inline void check_pair(const Tensor& a, const char* a_name, const Tensor& b, const char* b_name,
                       bool same_rows) {
  check_features(a, a_name);
  check_features(b, b_name);
  check_same_device(a, a_name, b, b_name);
  check_same_dtype(a, a_name, b, b_name);
  GENCORE_CHECK_VALUE(a.size(1) == b.size(1), "gencore: ", a_name, " and ", b_name,
                      " must have the same feature dimension D: got ", a_name, ".shape=",
                      shape(a), " and ", b_name, ".shape=", shape(b));
  if (same_rows) {
    GENCORE_CHECK_VALUE(a.size(0) == b.size(0), "gencore: ", a_name, " and ", b_name,
                        " must have the same number of rows N (row i of one is the positive of "
                        "row i of the other): got ",
                        a_name, ".shape=", shape(a), " and ", b_name, ".shape=", shape(b));
  }
  GENCORE_CHECK_VALUE(a.size(0) > 0 && b.size(0) > 0, "gencore: ", a_name, " and ", b_name,
                      " must not be empty: got ", a_name, ".shape=", shape(a), " and ", b_name,
                      ".shape=", shape(b));
}

// A 0-d floating tensor on `device`.
inline void check_scalar_tensor(const Tensor& s, const char* name, const Device& device) {
  GENCORE_CHECK_VALUE(s.dim() == 0, "gencore: ", name, " must be a 0-d tensor, got shape ",
                      shape(s));
  check_floating(s, name);
  GENCORE_CHECK_VALUE(s.device() == device, "gencore: ", name,
                      " must be on the features' device (", device_name(device), "), got ",
                      device_name(s.device()));
}

// The largest finite value of the accumulation dtype: a hyper-parameter above it (a float64
// 1e300 with float32 features) would become inf there.
inline double acc_max(ScalarType acc) {
  return acc == kDouble ? std::numeric_limits<double>::max()
                        : static_cast<double>(std::numeric_limits<float>::max());
}

// A 0-d floating tensor on `device`; its value must be finite and positive, also in the
// accumulation dtype. Reading it would sync a CUDA stream, so a CUDA tensor's value is not
// checked here: a non-finite or non-positive scale there gives a non-finite loss. (The
// Python wrappers check float hyper-parameters on every device; the nn modules form the
// scale as exp(parameter).)
inline void check_scale(const Tensor& s, const char* name, const Device& device, ScalarType acc,
                        bool reciprocal) {
  check_scalar_tensor(s, name, device);
  if (!s.is_cuda()) {
    const double v = cpu_scalar(s);
    GENCORE_CHECK_VALUE(std::isfinite(v) && v > 0, "gencore: ", name,
                        " must be finite and > 0, got ", v);
    GENCORE_CHECK_VALUE(v <= acc_max(acc), "gencore: ", name, " = ", v, " is not finite in ",
                        dtype_name(acc), ", the dtype the kernels use (largest value ",
                        acc_max(acc), ")");
    if (reciprocal) {  // a temperature: the kernels multiply by 1 / v in `acc`
      const double lowest = 1.0 / acc_max(acc);
      GENCORE_CHECK_VALUE(v >= lowest, "gencore: ", name, " must be >= ", lowest,
                          " (its reciprocal must be finite in ", dtype_name(acc), "), got ", v);
    }
  }
}

inline void check_index(const Tensor& idx, const char* name, int64_t n, const Device& device) {
  GENCORE_CHECK_TYPE(idx.scalar_type() == kLong, "gencore: ", name, " must be int64, got ",
                     dtype_name(idx.scalar_type()));
  GENCORE_CHECK_VALUE(idx.dim() == 1 && idx.size(0) == n, "gencore: ", name,
                      " must have shape (n,) = (", n, ",), got ", shape(idx));
  GENCORE_CHECK_VALUE(idx.device() == device, "gencore: ", name,
                      " must be on the features' device (", device_name(device), "), got ",
                      device_name(idx.device()));
}

// sum_i <a_i, b_i> in the accumulation dtype: the positive logits' raw products.
inline Tensor row_dots(const Tensor& a, const Tensor& b, ScalarType acc) {
  return aten::sum(aten::mul(to_dtype(a, acc), to_dtype(b, acc)), 1);
}

// The checked, contiguous operands of one op call and its accumulation dtype.
struct Operands {
  Tensor a, b, s;  // a, b contiguous in the input dtype; s: 0-d, accumulation dtype
  ScalarType acc;
  int64_t n;  // rows of a
};

inline Operands prepare(const Tensor& a, const char* a_name, const Tensor& b, const char* b_name,
                        const Tensor& scale, const char* scale_name, bool same_rows,
                        bool reciprocal = false) {
  check_pair(a, a_name, b, b_name, same_rows);
  const auto acc = acc_type(a.scalar_type());
  check_scale(scale, scale_name, a.device(), acc, reciprocal);
  return {contig(a), contig(b), to_contig(scale, acc), acc, a.size(0)};
}

// ---------------------------------------------------------------- CLIP ------------------
// loss = (CE(L, arange N) + CE(L^T, arange N)) / 2, L = logit_scale * a b^T.
template <class Backend>
std::tuple<Tensor, Tensor, Tensor> clip_loss_impl(const Tensor& image, const Tensor& text,
                                                  const Tensor& logit_scale) {
  const auto [a, b, s, acc, n] =
      prepare(image, "image_features", text, "text_features", logit_scale, "logit_scale", true);
  Tensor row_lse = empty({n}, a, acc), col_lse = empty({n}, a, acc);
  Backend::forward(a, b, s, Tensor(), false, row_lse, col_lse);
  const Tensor pos = aten::mul(s, row_dots(a, b, acc));  // (n,) the diagonal logits
  // (sum row_lse + sum col_lse - 2 sum pos) / (2N)
  const Tensor total = aten::sub(aten::add(aten::sum(row_lse), aten::sum(col_lse)),
                                 aten::sum(pos), 2.0);
  const Tensor loss = aten::div(total, 2.0 * n);
  return {to_dtype(loss, image.scalar_type()), row_lse, col_lse};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> clip_loss_backward_impl(const Tensor& grad_loss,
                                                           const Tensor& image, const Tensor& text,
                                                           const Tensor& logit_scale,
                                                           const Tensor& row_lse,
                                                           const Tensor& col_lse) {
  const auto [a, b, s, acc, n] =
      prepare(image, "image_features", text, "text_features", logit_scale, "logit_scale", true);
  // d loss / d L = g / (2N) (P + C - 2 I): W carries the P and C terms, the identity
  // (positive) term is added here.
  const Tensor w = aten::div(to_dtype(grad_loss, acc), 2.0 * n);  // 0-d
  const Tensor alpha = contig(aten::expand(w, {n})), beta = alpha;
  Tensor ga = zeros({n, a.size(1)}, a, acc);
  Tensor gb = zeros({n, a.size(1)}, a, acc);
  Tensor gs = zeros({}, a, acc);
  Backend::backward(a, b, s, Tensor(), false, to_contig(row_lse, acc), alpha,
                    to_contig(col_lse, acc), beta, ga, gb, gs);
  const Tensor a_acc = to_dtype(a, acc), b_acc = to_dtype(b, acc);
  const Tensor ws2 = aten::mul(aten::mul(w, s), 2.0);  // 2 w s, 0-d
  ga = aten::sub(ga, aten::mul(b_acc, ws2));
  gb = aten::sub(gb, aten::mul(a_acc, ws2));
  gs = aten::sub(gs, aten::mul(w, aten::sum(aten::mul(a_acc, b_acc))), 2.0);
  return {to_dtype(ga, image.scalar_type()), to_dtype(gb, text.scalar_type()),
          to_dtype(gs, logit_scale.scalar_type())};
}

// ---------------------------------------------------------------- NT-Xent ---------------
// z = normalize(cat(z1, z2)) (2N, D); L = z z^T / temperature without its diagonal;
// row i's positive is i + N (i < N) or i - N; loss = mean over the 2N rows of CE.

// zraw (2N, D) in the accumulation dtype, its row norms clamped at 1e-12 (2N, 1), and
// zhat = zraw / norm.
struct Normalized {
  Tensor zraw, norm, zhat;
};

inline Normalized normalize_rows(const Tensor& z1, const Tensor& z2, ScalarType acc) {
  const Tensor zraw = to_dtype(aten::cat({z1, z2}), acc);
  const Tensor norm = aten::clamp_min(aten::row_norms(zraw), 1e-12);
  return {zraw, norm, aten::div(zraw, norm)};
}

template <class Backend>
std::tuple<Tensor, Tensor> nt_xent_loss_impl(const Tensor& z1, const Tensor& z2,
                                             const Tensor& temperature) {
  const auto [z1c, z2c, t, acc, n] = prepare(z1, "z1", z2, "z2", temperature, "temperature", true, true);
  const Tensor zhat = normalize_rows(z1c, z2c, acc).zhat;
  const Tensor zk = to_contig(zhat, z1.scalar_type());
  const Tensor inv_t = aten::reciprocal(t);
  const Tensor self = aten::arange(2 * n, z1);
  Tensor lse = empty({2 * n}, z1, acc);
  Backend::forward(zk, zk, inv_t, self, true, lse, Tensor());
  const Tensor pos =
      aten::mul(inv_t, row_dots(aten::narrow(zhat, 0, 0, n), aten::narrow(zhat, 0, n, n), acc));
  const Tensor loss = aten::div(aten::sub(aten::sum(lse), aten::sum(pos), 2.0), 2.0 * n);
  return {to_dtype(loss, z1.scalar_type()), lse};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> nt_xent_loss_backward_impl(const Tensor& grad_loss,
                                                              const Tensor& z1, const Tensor& z2,
                                                              const Tensor& temperature,
                                                              const Tensor& lse) {
  const auto [z1c, z2c, t, acc, n] = prepare(z1, "z1", z2, "z2", temperature, "temperature", true, true);
  const auto [zraw, norm, zhat] = normalize_rows(z1c, z2c, acc);
  const Tensor zk = to_contig(zhat, z1.scalar_type());
  const Tensor inv_t = aten::reciprocal(t);
  const Tensor self = aten::arange(2 * n, z1);
  const Tensor w = aten::div(to_dtype(grad_loss, acc), 2.0 * n);
  const Tensor alpha = contig(aten::expand(w, {2 * n}));
  Tensor gz = zeros({2 * n, z1.size(1)}, z1, acc);
  Tensor gs = zeros({}, z1, acc);  // d loss / d (1 / temperature)
  Backend::backward(zk, zk, inv_t, self, true, to_contig(lse, acc), alpha, Tensor(), Tensor(),
                    gz, Tensor(), gs);
  // Positive terms: L[i, p(i)] = <zhat_i, zhat_p(i)> / t appears in rows i and p(i).
  const Tensor z_lo = aten::narrow(zhat, 0, 0, n), z_hi = aten::narrow(zhat, 0, n, n);
  const Tensor partner = aten::cat({z_hi, z_lo});
  gz = aten::sub(gz, aten::mul(partner, aten::mul(aten::mul(w, inv_t), 2.0)));
  gs = aten::sub(gs, aten::mul(w, aten::sum(aten::mul(z_lo, z_hi))), 2.0);
  // Through the normalization: d zraw = (d zhat - zhat <zhat, d zhat>) / |zraw|; norms
  // clamped at 1e-12 pass the gradient through unscaled by the projection, as
  // F.normalize's autograd does.
  const Tensor proj = aten::sum(aten::mul(gz, zhat), 1, true);
  const Tensor clamped = aten::lt(aten::row_norms(zraw), 1e-12);
  const Tensor gzraw = aten::where(clamped, aten::div(gz, norm),
                                   aten::div(aten::sub(gz, aten::mul(zhat, proj)), norm));
  // d/dt = d/d(1/t) * (-1/t^2)
  const Tensor gt = aten::neg(aten::mul(gs, aten::mul(inv_t, inv_t)));
  return {to_dtype(aten::narrow(gzraw, 0, 0, n), z1.scalar_type()),
          to_dtype(aten::narrow(gzraw, 0, n, n), z2.scalar_type()),
          to_dtype(gt, temperature.scalar_type())};
}

// ---------------------------------------------------------------- rows ------------------
// The rectangular row loss the distributed losses are made of:
//   loss[i] = log sum_{j != exclude[i]} exp(scale q_i . k_j) - scale q_i . k_{positive[i]}

// On CPU, the index values are checked too (on CUDA that would sync the stream).
inline void check_index_values(const Tensor& positive, const Tensor& exclude, int64_t m) {
  const Tensor p = contig(positive), e = contig(exclude);
  const int64_t* pp = p.const_data_ptr<int64_t>();
  const int64_t* ep = e.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < p.numel(); ++i) {
    GENCORE_CHECK_VALUE(pp[i] >= 0 && pp[i] < m,
                        "gencore: positive must index rows of keys, in [0, ", m, ")");
    GENCORE_CHECK_VALUE(ep[i] >= -1 && ep[i] < m,
                        "gencore: exclude must be -1 or index rows of keys, in [0, ", m, ")");
    GENCORE_CHECK_VALUE(pp[i] != ep[i],
                        "gencore: a row's positive must not be its excluded column");
  }
}

template <class Backend>
std::tuple<Tensor, Tensor> contrastive_rows_impl(const Tensor& query, const Tensor& keys,
                                                 const Tensor& scale, const Tensor& positive,
                                                 const Tensor& exclude) {
  const auto [q, k, s, acc, n] = prepare(query, "query", keys, "keys", scale, "scale", false);
  check_index(positive, "positive", n, query.device());
  check_index(exclude, "exclude", n, query.device());
  if (!query.is_cuda()) check_index_values(positive, exclude, keys.size(0));
  Tensor lse = empty({q.size(0)}, q, acc);
  Backend::forward(q, k, s, contig(exclude), false, lse, Tensor());
  const Tensor loss =
      aten::sub(lse, aten::mul(s, row_dots(q, aten::index_select(k, 0, positive), acc)));
  return {to_dtype(loss, query.scalar_type()), lse};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> contrastive_rows_backward_impl(
    const Tensor& grad_loss, const Tensor& query, const Tensor& keys, const Tensor& scale,
    const Tensor& positive, const Tensor& exclude, const Tensor& lse) {
  const auto [q, k, s, acc, n] = prepare(query, "query", keys, "keys", scale, "scale", false);
  check_index(positive, "positive", n, query.device());
  check_index(exclude, "exclude", n, query.device());
  GENCORE_CHECK_VALUE(grad_loss.dim() == 1 && grad_loss.size(0) == query.size(0),
                      "gencore: grad_loss must have shape (n,), got ", shape(grad_loss));
  const Tensor g = to_contig(grad_loss, acc);
  Tensor gq = zeros({q.size(0), q.size(1)}, q, acc);
  Tensor gk = zeros({k.size(0), k.size(1)}, k, acc);
  Tensor gs = zeros({}, q, acc);
  Backend::backward(q, k, s, contig(exclude), false, to_contig(lse, acc), g, Tensor(),
                    Tensor(), gq, gk, gs);
  const Tensor kpos = to_dtype(aten::index_select(k, 0, positive), acc), q_acc = to_dtype(q, acc);
  const Tensor gsq = aten::mul(aten::unsqueeze(g, 1), s);
  gq = aten::sub(gq, aten::mul(kpos, gsq));
  gk = aten::index_add_rows(gk, positive, aten::neg(aten::mul(q_acc, gsq)));
  gs = aten::sub(gs, aten::sum(aten::mul(g, aten::sum(aten::mul(q_acc, kpos), 1))));
  return {to_dtype(gq, query.scalar_type()), to_dtype(gk, keys.scalar_type()),
          to_dtype(gs, scale.scalar_type())};
}

// ---------------------------------------------------------------- SigLIP ----------------
// loss = (1/n) sum_{i < n, j < m} softplus(-z[i, j] L[i, j]), L = logit_scale * a b^T +
// logit_bias, z = +1 on the pairs (i, i + positive_offset), -1 elsewhere. SigLIP itself is
// n = m, offset 0; the distributed loss (python/gencore/nn/contrastive.py) calls it on
// another rank's text chunk with offset m (no positives) and rescales.

// The bias: a 0-d floating tensor on the device, finite (checked on CPU only: reading a
// CUDA value would sync the stream).
inline void check_bias(const Tensor& b, const char* name, const Device& device, ScalarType acc) {
  check_scalar_tensor(b, name, device);
  if (!b.is_cuda()) {
    const double v = cpu_scalar(b);
    GENCORE_CHECK_VALUE(std::isfinite(v), "gencore: ", name, " must be finite, got ", v);
    GENCORE_CHECK_VALUE(std::abs(v) <= acc_max(acc), "gencore: ", name, " = ", v,
                        " is not finite in ", dtype_name(acc), ", the dtype the kernels use (largest value ",
                        acc_max(acc), ")");
  }
}

struct SigmoidOperands {
  Operands ops;
  Tensor bias;  // 0-d, accumulation dtype
};

inline SigmoidOperands prepare_sigmoid(const Tensor& image, const Tensor& text,
                                       const Tensor& logit_scale, const Tensor& logit_bias,
                                       int64_t offset) {
  Operands ops = prepare(image, "image_features", text, "text_features", logit_scale,
                         "logit_scale", false);
  check_bias(logit_bias, "logit_bias", image.device(), ops.acc);
  const int64_t m = text.size(0);
  // Offsets outside [-n, m] place no positive at all, as -n and m do: refused rather than
  // letting i + offset overflow.
  GENCORE_CHECK_VALUE(offset >= -ops.n && offset <= m, "gencore: positive_offset must be in [-n, m] = [",
                      -ops.n, ", ", m, "], got ", offset);
  return {ops, to_contig(logit_bias, ops.acc)};
}

template <class Backend>
Tensor sigmoid_contrastive_loss_impl(const Tensor& image, const Tensor& text,
                                     const Tensor& logit_scale, const Tensor& logit_bias,
                                     int64_t positive_offset) {
  const auto [ops, bias] = prepare_sigmoid(image, text, logit_scale, logit_bias, positive_offset);
  const auto& [a, b, s, acc, n] = ops;
  const Tensor row_sum = zeros({n}, a, acc);
  Backend::sigmoid_forward(a, b, s, bias, positive_offset, row_sum);
  return to_dtype(aten::div(aten::sum(row_sum), static_cast<double>(n)), image.scalar_type());
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> sigmoid_contrastive_loss_backward_impl(
    const Tensor& grad_loss, const Tensor& image, const Tensor& text, const Tensor& logit_scale,
    const Tensor& logit_bias, int64_t positive_offset) {
  const auto [ops, bias] = prepare_sigmoid(image, text, logit_scale, logit_bias, positive_offset);
  const auto& [a, b, s, acc, n] = ops;
  GENCORE_CHECK_VALUE(grad_loss.dim() == 0, "gencore: grad_loss must be a 0-d tensor, got shape ",
                      shape(grad_loss));
  check_same_device(grad_loss, "grad_loss", image, "image_features");
  const Tensor coef = to_contig(aten::div(to_dtype(grad_loss, acc), static_cast<double>(n)), acc);
  Tensor ga = zeros({n, a.size(1)}, a, acc);
  Tensor gb = zeros({b.size(0), b.size(1)}, b, acc);
  Tensor gs = zeros({}, a, acc);
  Tensor gbias = zeros({}, a, acc);
  Backend::sigmoid_backward(a, b, s, bias, positive_offset, coef, ga, gb, gs, gbias);
  return {to_dtype(ga, image.scalar_type()), to_dtype(gb, text.scalar_type()),
          to_dtype(gs, logit_scale.scalar_type()), to_dtype(gbias, logit_bias.scalar_type())};
}

// The loss and its gradients at grad_loss = 1, from one visit of the logits: the training
// path of python/gencore/ops/contrastive.py, whose backward then only scales them by the
// incoming grad_loss (the loss is linear in coef = grad_loss / n). The same numbers as
// sigmoid_contrastive_loss and its backward at grad_loss = 1.
template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> sigmoid_contrastive_loss_with_grads_impl(
    const Tensor& image, const Tensor& text, const Tensor& logit_scale, const Tensor& logit_bias,
    int64_t positive_offset) {
  const auto [ops, bias] = prepare_sigmoid(image, text, logit_scale, logit_bias, positive_offset);
  const auto& [a, b, s, acc, n] = ops;
  const Tensor coef =
      torch::stable::full({}, 1.0 / static_cast<double>(n), acc, std::nullopt, a.device());
  const Tensor row_sum = zeros({n}, a, acc);
  Tensor ga = zeros({n, a.size(1)}, a, acc);
  Tensor gb = zeros({b.size(0), b.size(1)}, b, acc);
  Tensor gs = zeros({}, a, acc);
  Tensor gbias = zeros({}, a, acc);
  Backend::sigmoid_forward_backward(a, b, s, bias, positive_offset, coef, row_sum, ga, gb, gs,
                                    gbias);
  const Tensor loss = aten::div(aten::sum(row_sum), static_cast<double>(n));
  return {to_dtype(loss, image.scalar_type()), to_dtype(ga, image.scalar_type()),
          to_dtype(gb, text.scalar_type()), to_dtype(gs, logit_scale.scalar_type()),
          to_dtype(gbias, logit_bias.scalar_type())};
}

}  // namespace contrastive
}  // namespace gencore
