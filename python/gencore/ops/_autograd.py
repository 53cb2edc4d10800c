"""The autograd conventions shared by the op wrappers.

Every op has a first derivative (a fused backward kernel) and no second one. A backward
formula is decorated with :func:`first_order`: it runs without recording a graph and,
when a graph is being recorded (``create_graph=True``) and anything it read requires
grad, its results are attached to a node that raises a clear error if the second
derivative is ever taken (the mechanism of ``torch.autograd.function.once_differentiable``,
except that the node is connected to the tensors the formula read, saved ones included:
``autograd.grad(f(x).sum(), x, create_graph=True)`` reads no gradient that requires grad,
only the saved ``x``, and a second ``autograd.grad(.., x)`` must reach the node). The
first derivative itself is unaffected, so a gradient penalty through an op works until it
needs the op's second derivative, where it raises instead of being silently zero.

:func:`transforms_active` tells a wrapper that torch.func is transforming the call
(``grad``, ``vjp``, ``jacrev``, ``vmap``): the wrappers then use their
``torch.autograd.Function`` (``setup_context`` style, which torch.func supports) instead
of a fast path that it cannot see through; forward mode (torch.func's and
``torch.autograd.forward_ad``'s dual tensors, whose tangents the ops would otherwise drop)
and nested differentiation are refused there with a clear error.

Under torch.func the backward formula runs inside :class:`_FirstOrderOnly`, a Function
whose own backward raises: a graph recorded around the transform (``torch.func.grad(f)(x)``
with ``x.requires_grad``, then ``torch.autograd.grad`` of the result) or a transform around
an autograd graph (``torch.autograd.grad(..., create_graph=True)`` inside
``torch.func.grad``) reaches it and raises, where the fused backward kernels, which have
no derivative of their own, would give a silently wrong (often zero) second derivative.
"""

from __future__ import annotations

import functools

import torch
from torch._C import _functions
from torch._C._functorch import TransformType
from torch.autograd import forward_ad

__all__ = ["first_order", "second_derivative_message", "transforms_active"]


def second_derivative_message(op: str) -> str:
    return (
        f"gencore: the second derivative of {op} is not implemented (double backward: a backward "
        "through gradients computed with create_graph=True, e.g. gradgradcheck, a Hessian or a "
        "gradient penalty through this op). First derivatives, including with create_graph=True, "
        "are supported."
    )


def first_order(op: str):
    """Decorator of a backward formula ``(ctx, *grads) -> grads`` of op ``op``."""

    text = second_derivative_message(op)
    message = text.encode()  # (DelayedError takes bytes)

    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            if torch.compiler.is_compiling():
                return backward(ctx, *grads)  # (traced: torch.compile's own derivatives)
            if torch._C._functorch.peek_interpreter_stack() is not None:
                # Under torch.func: nested torch.func differentiation was refused when the op
                # was called (transforms_active); any other level that differentiates the
                # formula reaches _FirstOrderOnly's backward and raises.
                return _FirstOrderOnly.apply(backward, ctx, text, len(grads), *grads,
                                             *ctx.saved_tensors)
            with torch.no_grad():
                outputs = backward(ctx, *grads)
            if not torch.is_grad_enabled():
                return outputs
            read = [t for t in (*grads, *ctx.saved_tensors) if isinstance(t, torch.Tensor) and t.requires_grad]
            if not read:
                return outputs
            single = not isinstance(outputs, tuple)
            outs = (outputs,) if single else outputs
            # The error node takes the results (detached) and what the formula read, so the
            # second backward reaches it (and raises) from the results to the inputs.
            idx = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor)]
            err = _functions.DelayedError(message, len(idx) + len(read))
            wrapped = err(*[outs[i].detach() for i in idx], *read)[: len(idx)]
            if isinstance(wrapped, torch.Tensor):
                wrapped = (wrapped,)
            result = list(outs)
            for i, w in zip(idx, wrapped):
                result[i] = w
            return result[0] if single else tuple(result)

        return wrapper

    return decorate


class _SavedView:
    """The ctx of a backward formula with ``saved_tensors`` replaced (the unwrapped tensors
    that :class:`_FirstOrderOnly`'s forward receives); every other attribute is ctx's."""

    def __init__(self, ctx, saved: tuple) -> None:
        self._ctx = ctx
        self.saved_tensors = saved

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)


class _FirstOrderOnly(torch.autograd.Function):
    """``backward(ctx, *grads)`` evaluated as a Function whose derivative raises ``message``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(backward, ctx, message, n_grads, *tensors):
        return backward(_SavedView(ctx, tensors[n_grads:]), *tensors[:n_grads])

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[2]

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def _forward_message(op: str) -> str:
    return (f"gencore: {op} has no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
            "torch.autograd.forward_ad dual tensors); use reverse mode (torch.func.grad, vjp, jacrev, "
            "torch.autograd.grad)")


def transforms_active(op: str, *tensors) -> bool:
    """Whether a torch.func transform (grad, vjp, jacrev, vmap) is running around a call of
    ``op`` with inputs ``tensors`` (None entries allowed). Raises for what the ops cannot do:
    forward-mode derivatives (``jvp``, ``jacfwd``, ``hessian``, or a dual tensor of
    ``torch.autograd.forward_ad`` among ``tensors``) and nested reverse-mode ones under
    torch.func (``grad(grad(f))``)."""
    if torch.compiler.is_compiling():
        return False  # (torch.compile traces the registered autograd of the op)
    if forward_ad._current_level >= 0 and any(
            isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise RuntimeError(_forward_message(op))
    if torch._C._functorch.peek_interpreter_stack() is None:
        return False
    kinds = [i.key() for i in torch._C._functorch.get_interpreter_stack()]
    if TransformType.Jvp in kinds:
        raise RuntimeError(_forward_message(op))
    if kinds.count(TransformType.Grad) > 1:
        raise RuntimeError(second_derivative_message(op))
    return True
