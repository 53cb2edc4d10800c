// Every gencore op schema, in one place. Backend kernels register themselves at the
// end of their own files (TORCH_LIBRARY_IMPL); fake kernels and autograd are
// registered in Python (python/gencore/ops/).
#include <torch/library.h>

TORCH_LIBRARY(gencore, m) {
  // y = x * exp(s) + shift (reverse: (x - shift) * exp(-s)), s = clamp*tanh(log_scale/clamp);
  // logdet = +-sum of s over the non-batch dims, shape (B,).
  m.def(
      "affine_coupling(Tensor x, Tensor log_scale, Tensor shift, *, float clamp=2.0, "
      "bool reverse=False) -> (Tensor y, Tensor logdet)");
  // dL/dshift is grad_y (forward) or -grad_x (reverse), formed by the autograd formula.
  m.def(
      "affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor log_scale, "
      "Tensor shift, *, float clamp, bool reverse) -> (Tensor grad_x, Tensor grad_log_scale)");
}
