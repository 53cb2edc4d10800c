// Version-locked fast path: the autograd of the two coupling ops in C++, as before the
// stable-ABI port. It is a separate library (gencore/_C_autograd.so, CMakeLists.txt) that
// uses libtorch's C++ API, whose ABI is not stable between releases, so
// python/gencore/ops/coupling.py loads it only when the running torch is the exact
// version it was built against; everywhere else the ops' autograd is the Python one of
// that file (same formula, tested against each other). Why it exists: a flow runs these
// ops once per coupling at small batch sizes, where Python autograd around each call
// costs more than the kernels (measured: the comment above the autograd section of
// python/gencore/ops/coupling.py).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace gencore {
namespace coupling {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The same convention as python/gencore/ops/_autograd.py (first_order): the backward
// kernels run below autograd and, when a graph is being recorded (create_graph=True) and
// anything the backward read requires grad, the gradients are attached to an Error node:
// the first derivative works, a second derivative raises instead of being silently zero.
variable_list first_order(variable_list grads_out, const variable_list& read, const char* op) {
  if (!at::GradMode::is_enabled() || !torch::autograd::compute_requires_grad(read)) {
    return grads_out;
  }
  const std::string message =
      std::string("gencore: the second derivative of ") + op +
      " is not implemented (double backward: a backward through gradients computed with "
      "create_graph=True, e.g. gradgradcheck, a Hessian or a gradient penalty through this op). "
      "First derivatives, including with create_graph=True, are supported.";
  auto node = c10::make_intrusive<torch::autograd::Error>(
      message, torch::autograd::collect_next_edges(read));
  for (auto& g : grads_out) {
    if (g.defined()) {
      g = g.detach();
      torch::autograd::set_history(g, node);
    }
  }
  return grads_out;
}

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& x, const at::Tensor& log_scale,
                                                const at::Tensor& shift, double clamp,
                                                bool reverse) {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("gencore::affine_coupling", "")
                              .typed<std::tuple<at::Tensor, at::Tensor>(
                                  const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  double, bool)>();
  return op.call(x, log_scale, shift, clamp, reverse);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad_y,
                                                 const at::Tensor& grad_logdet,
                                                 const at::Tensor& x, const at::Tensor& log_scale,
                                                 const at::Tensor& shift, double clamp,
                                                 bool reverse) {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("gencore::affine_coupling_backward", "")
                              .typed<std::tuple<at::Tensor, at::Tensor>(
                                  const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const at::Tensor&, double, bool)>();
  return op.call(grad_y, grad_logdet, x, log_scale, shift, clamp, reverse);
}

class AffineCouplingFunction : public torch::autograd::Function<AffineCouplingFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const at::Tensor& log_scale, const at::Tensor& shift,
                               double clamp, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, logdet] = call_forward(x, log_scale, shift, clamp, reverse);
    // Inputs only: s and exp(s) are recomputed in the backward kernel.
    ctx->save_for_backward({x, log_scale, shift});
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["reverse"] = reverse;
    return {y, logdet};
  }

  // Undefined output gradients arrive as zeros (the context materializes them).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double clamp = ctx->saved_data["clamp"].toDouble();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [grad_x, grad_log_scale] =
          call_backward(grads[0], grads[1], saved[0], saved[1], saved[2], clamp, reverse);
      // dy/dshift is the identity (forward) or -exp(-s) (reverse): no kernel output needed.
      at::Tensor grad_shift = reverse ? -grad_x : grads[0];
      out = {grad_x, grad_log_scale, grad_shift};
    }
    out = first_order(std::move(out), {grads[0], grads[1], saved[0], saved[1], saved[2]},
                      "gencore.ops.affine_coupling");
    return {out[0], out[1], out[2], at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> affine_coupling_autograd(const at::Tensor& x,
                                                            const at::Tensor& log_scale,
                                                            const at::Tensor& shift,
                                                            double clamp, bool reverse) {
  const variable_list out = AffineCouplingFunction::apply(x, log_scale, shift, clamp, reverse);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> call_masked_forward(const at::Tensor& x,
                                                       const at::Tensor& params,
                                                       c10::string_view mask, bool swap,
                                                       double clamp, bool reverse) {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("gencore::masked_affine_coupling", "")
                              .typed<std::tuple<at::Tensor, at::Tensor>(
                                  const at::Tensor&, const at::Tensor&, c10::string_view, bool,
                                  double, bool)>();
  return op.call(x, params, mask, swap, clamp, reverse);
}

std::tuple<at::Tensor, at::Tensor> call_masked_backward(const at::Tensor& grad_y,
                                                        const at::Tensor& grad_logdet,
                                                        const at::Tensor& x,
                                                        const at::Tensor& params,
                                                        c10::string_view mask, bool swap,
                                                        double clamp, bool reverse) {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("gencore::masked_affine_coupling_backward", "")
                              .typed<std::tuple<at::Tensor, at::Tensor>(
                                  const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, c10::string_view, bool, double, bool)>();
  return op.call(grad_y, grad_logdet, x, params, mask, swap, clamp, reverse);
}

class MaskedAffineCouplingFunction
    : public torch::autograd::Function<MaskedAffineCouplingFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const at::Tensor& params, c10::string_view mask, bool swap,
                               double clamp, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, logdet] = call_masked_forward(x, params, mask, swap, clamp, reverse);
    ctx->save_for_backward({x, params});
    ctx->saved_data["mask"] = std::string(mask);
    ctx->saved_data["swap"] = swap;
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["reverse"] = reverse;
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::string mask = ctx->saved_data["mask"].toStringRef();
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [grad_x, grad_params] = call_masked_backward(
          grads[0], grads[1], saved[0], saved[1], mask, ctx->saved_data["swap"].toBool(),
          ctx->saved_data["clamp"].toDouble(), ctx->saved_data["reverse"].toBool());
      out = {grad_x, grad_params};
    }
    out = first_order(std::move(out), {grads[0], grads[1], saved[0], saved[1]},
                      "gencore.ops.masked_affine_coupling");
    return {out[0], out[1], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> masked_affine_coupling_autograd(const at::Tensor& x,
                                                                   const at::Tensor& params,
                                                                   c10::string_view mask,
                                                                   bool swap, double clamp,
                                                                   bool reverse) {
  const variable_list out =
      MaskedAffineCouplingFunction::apply(x, params, mask, swap, clamp, reverse);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, Autograd, m) {
  m.impl("affine_coupling", &affine_coupling_autograd);
  m.impl("masked_affine_coupling", &masked_affine_coupling_autograd);
}

}  // namespace coupling
}  // namespace gencore
