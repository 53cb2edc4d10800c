// Every gencore op schema, in one place. Backend kernels register themselves at the
// end of their own files (STABLE_TORCH_LIBRARY_IMPL); fake kernels and autograd are
// registered in Python (python/gencore/ops/): the LibTorch stable ABI has no C++ autograd.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(gencore, m) {
  // y = x * exp(s) + shift (reverse: (x - shift) * exp(-s)), s = clamp*tanh(log_scale/clamp);
  // logdet = +-sum of s over the non-batch dims, shape (B,).
  m.def(
      "affine_coupling(Tensor x, Tensor log_scale, Tensor shift, *, float clamp=2.0, "
      "bool reverse=False) -> (Tensor y, Tensor logdet)");
  // dL/dshift is grad_y (forward) or -grad_x (reverse), formed by the autograd formula.
  m.def(
      "affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor log_scale, "
      "Tensor shift, *, float clamp, bool reverse) -> (Tensor grad_x, Tensor grad_log_scale)");
  // The whole coupling after the conditioner: x (B, C, ...) is split by `mask` ("half":
  // identity = first C/2 channels; "alternate": the even ones; swap exchanges the parts),
  // params (B, 2 n_b, ...) holds log_scale and shift of the n_b transformed channels, and
  // y (x's shape) has the transformed channels replaced by affine_coupling's y, the
  // others copied. logdet as affine_coupling's.
  m.def(
      "masked_affine_coupling(Tensor x, Tensor params, *, str mask, bool swap=False, "
      "float clamp=2.0, bool reverse=False) -> (Tensor y, Tensor logdet)");
  m.def(
      "masked_affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, "
      "Tensor params, *, str mask, bool swap, float clamp, bool reverse) -> "
      "(Tensor grad_x, Tensor grad_params)");
  // z = mu + exp(logvar / 2) * eps with eps from Philox4x32-10 at rng_state = (seed, offset)
  // (an int64 tensor of shape (2,) on mu's device); n_samples = 0: z has mu's shape, else
  // (n_samples, *mu.shape). kl = KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar)))
  // per row, shape (B,); the prior tensors (mu's shape) are given together or not at all
  // (N(0, I)), and are positional because register_autograd refuses keyword-only tensors.
  // log_q = log N(z; mu, exp(logvar)) per (sample, row) when with_log_q, else shape (0,).
  m.def(
      "reparameterize(Tensor mu, Tensor logvar, Tensor rng_state, Tensor? prior_mu=None, "
      "Tensor? prior_logvar=None, *, int n_samples=0, bool with_log_q=False) -> "
      "(Tensor z, Tensor kl, Tensor log_q)");
  // eps is regenerated from rng_state; grad_log_q may be empty (log_q unused). The prior's
  // gradients are empty (shape (0,)) without a prior.
  m.def(
      "reparameterize_backward(Tensor grad_z, Tensor grad_kl, Tensor grad_log_q, Tensor mu, "
      "Tensor logvar, Tensor rng_state, Tensor? prior_mu=None, Tensor? prior_logvar=None, "
      "*, int n_samples) -> (Tensor grad_mu, Tensor grad_logvar, "
      "Tensor grad_prior_mu, Tensor grad_prior_logvar)");
  // Contrastive losses, tiled with an online log-sum-exp (csrc/contrastive/contrastive.h):
  // the (N, N) logits are never stored. The *_lse outputs are the row / column
  // log-sum-exps (accumulation dtype) the backward needs; the public wrappers return
  // only the loss. loss = mean of the row and column CEs of logit_scale * a b^T.
  m.def(
      "clip_loss(Tensor image_features, Tensor text_features, Tensor logit_scale) -> "
      "(Tensor loss, Tensor row_lse, Tensor col_lse)");
  m.def(
      "clip_loss_backward(Tensor grad_loss, Tensor image_features, Tensor text_features, "
      "Tensor logit_scale, Tensor row_lse, Tensor col_lse) -> (Tensor grad_image_features, "
      "Tensor grad_text_features, Tensor grad_logit_scale)");
  // SimCLR's NT-Xent on normalize(cat(z1, z2)) with logits z z^T / temperature.
  m.def("nt_xent_loss(Tensor z1, Tensor z2, Tensor temperature) -> (Tensor loss, Tensor lse)");
  m.def(
      "nt_xent_loss_backward(Tensor grad_loss, Tensor z1, Tensor z2, Tensor temperature, "
      "Tensor lse) -> (Tensor grad_z1, Tensor grad_z2, Tensor grad_temperature)");
  // Per-row loss[i] = lse_{j != exclude[i]}(scale q_i.k_j) - scale q_i.k_positive[i]
  // (exclude[i] = -1: none): the local rows of the distributed losses.
  m.def(
      "contrastive_rows(Tensor query, Tensor keys, Tensor scale, Tensor positive, "
      "Tensor exclude) -> (Tensor loss, Tensor lse)");
  m.def(
      "contrastive_rows_backward(Tensor grad_loss, Tensor query, Tensor keys, Tensor scale, "
      "Tensor positive, Tensor exclude, Tensor lse) -> (Tensor grad_query, Tensor grad_keys, "
      "Tensor grad_scale)");
  // SigLIP's sigmoid loss, (1/n) sum_ij softplus(-z_ij (logit_scale a_i.b_j + logit_bias))
  // with z = +1 on the pairs (i, i + positive_offset), -1 elsewhere; a (n, D), b (m, D).
  // Tiled like the losses above; its backward recomputes the tiles (nothing is saved).
  m.def(
      "sigmoid_contrastive_loss(Tensor image_features, Tensor text_features, Tensor logit_scale, "
      "Tensor logit_bias, int positive_offset=0) -> Tensor");
  m.def(
      "sigmoid_contrastive_loss_backward(Tensor grad_loss, Tensor image_features, "
      "Tensor text_features, Tensor logit_scale, Tensor logit_bias, int positive_offset) -> "
      "(Tensor grad_image_features, Tensor grad_text_features, Tensor grad_logit_scale, "
      "Tensor grad_logit_bias)");
  // The loss and its gradients at grad_loss = 1 from one visit of the logits (the training
  // path: the autograd backward only scales them).
  m.def(
      "sigmoid_contrastive_loss_with_grads(Tensor image_features, Tensor text_features, "
      "Tensor logit_scale, Tensor logit_bias, int positive_offset=0) -> (Tensor loss, "
      "Tensor grad_image_features, Tensor grad_text_features, Tensor grad_logit_scale, "
      "Tensor grad_logit_bias)");
  // Vector quantization (csrc/vq/vq.h): for x (N, D) and codebook (K, D), the index of
  // each row's nearest code in squared Euclidean distance (ties to the lowest index) and
  // that distance |x_i - codebook_index|^2, recomputed exactly; cosine: both sides scaled
  // to unit rows first. Tiled: no (N, K) matrix is stored. Differentiable in sq_dist
  // (python/gencore/ops/vq.py, whose nearest_code returns (indices, sq_dist)). The float
  // output comes first: opcheck's autograd test adds up the outputs in order, and an
  // int64 first output makes that sum an int64 tensor that cannot take the float.
  m.def(
      "nearest_code(Tensor x, Tensor codebook, *, bool cosine=False) -> "
      "(Tensor sq_dist, Tensor indices)");
  // Rational-quadratic spline (csrc/spline/spline_math.h), elementwise with identity tails
  // outside [-bound, bound]: x (B, ...), widths / heights x.shape + (K,) (softmax),
  // derivatives x.shape + (K - 1,) (softplus); logdet (B,) = +-sum log|dy/dx| per row.
  m.def(
      "rq_spline(Tensor x, Tensor widths, Tensor heights, Tensor derivatives, *, "
      "float bound=3.0, bool reverse=False) -> (Tensor y, Tensor logdet)");
  m.def(
      "rq_spline_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor widths, "
      "Tensor heights, Tensor derivatives, *, float bound, bool reverse) -> (Tensor grad_x, "
      "Tensor grad_widths, Tensor grad_heights, Tensor grad_derivatives)");
}
