"""Rational-quadratic spline (Durkan et al. 2019, "Neural Spline Flows") in one pass per element.

The usual implementation (nflows, zuko, normflows and :func:`gencore.reference.rq_spline`)
builds several ``(B, D, K)`` temporaries per transform: the softmax of the widths and of the
heights, their cumulative sums, the knots, the bin search and the gathers, then their
gradients. :func:`rq_spline` reads each element's ``K + K + (K - 1)`` parameters where they
are, finds its bin while re-accumulating the knots, and keeps six numbers; its backward
does the same and writes the parameter gradients directly. The schema is in
``csrc/registration.cpp``, the math in ``csrc/spline/spline_math.h``, the kernels in
``csrc/spline/``.
"""

from __future__ import annotations

import math

import torch

from gencore.ops._autograd import first_order, transforms_active
from gencore.ops._errors import as_finite_float, check_representable, check_scalar, check_tensors, typed

__all__ = ["rq_spline", "RQ_MAX_BINS"]

_op = typed(torch.ops.gencore.rq_spline.default)
_op_backward = typed(torch.ops.gencore.rq_spline_backward.default)

#: the most bins: K times the minimum bin width (1e-3) must stay below 1
RQ_MAX_BINS = 999


def rq_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, *,
              bound: float = 3.0, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotonic rational-quadratic spline of every element of ``x``, with identity tails.

    On ``[-bound, bound]`` each element has its own spline of ``K`` bins: bin widths
    ``w = 2 bound (m + (1 - K m) softmax(widths))`` and heights likewise from ``heights``
    (``m = 1e-3``, :data:`gencore.reference.RQ_MIN_BIN_WIDTH` / ``_HEIGHT``), interior knot
    derivatives ``1e-3 + softplus(derivatives)`` (:data:`~gencore.reference.RQ_MIN_DERIVATIVE`)
    and derivative 1 at both ends, so the spline meets the identity outside
    ``[-bound, bound]`` with a continuous first derivative. Inside bin ``k`` (``t`` the
    position in the bin, ``s = h / w``)::

        y = y_k + h (s t^2 + d_k t (1 - t)) / (s + (d_{k+1} + d_k - 2 s) t (1 - t))

    ``reverse=True`` inverts it through the root of a quadratic, taken in the form that
    does not cancel for the sign of its linear coefficient (the textbook
    ``2c / (-b - sqrt(b^2 - 4ac))`` alone loses digits near the top of a bin whose upper
    derivative is large); a discriminant rounded below 0 is clamped to 0. The same numbers as
    :func:`gencore.reference.rq_spline` (which builds the ``(..., K)`` temporaries), without them.

    Precision: where the spline is nearly flat, one rounding step of ``y`` spans many of ``x``:
    a round trip recovers ``x`` to about ``eps / (dy/dx)``, which no method in the same
    precision beats (the tests bound ``|x - inverse(forward(x))| * dy/dx``).

    Args:
        x: ``(B, ...)`` inputs (the outputs of the forward map when ``reverse``).
            CPU: float32/float64; CUDA: also float16/bfloat16 (float32 math).
        widths: ``x.shape + (K,)``, unnormalized bin widths, ``1 <= K <= 999``.
        heights: ``x.shape + (K,)``, unnormalized bin heights.
        derivatives: ``x.shape + (K - 1,)``, unnormalized interior knot derivatives.
            The parameters are read in place when their leading dims flatten to one stride
            (slices ``params[..., :K]`` of a conditioner's output do).
        bound: the spline's interval ``[-bound, bound]`` (finite, > 0).
        reverse: apply the inverse map.

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape (contiguous) and ``logdet`` of shape ``(B,)``,
        ``sum log |dy/dx|`` over all but the batch dim, in nats (of the inverse map when
        ``reverse``: the negative of the forward's at the output). Differentiable in every
        tensor argument; the second derivative is refused with a clear error.

    Raises:
        ValueError: a parameter's shape is not ``x.shape + (K,)`` / ``x.shape + (K - 1,)``,
            ``K`` outside ``[1, 999]``, a non-positive or non-finite ``bound``, devices differ.
        TypeError: non-floating or mismatched dtypes, or an unsupported dtype.

    Example::

        >>> x = torch.randn(16, 4)
        >>> w, h, d = torch.randn(16, 4, 8), torch.randn(16, 4, 8), torch.randn(16, 4, 7)
        >>> y, logdet = rq_spline(x, w, h, d)
        >>> x2, ld = rq_spline(y, w, h, d, reverse=True)     # x2 ≈ x, ld ≈ -logdet
    """
    check_tensors(x=x, widths=widths, heights=heights, derivatives=derivatives)
    bound = _check_bound(bound, x)
    if not isinstance(reverse, bool):
        raise TypeError(f"gencore: reverse must be a bool, got {type(reverse).__name__}")
    if transforms_active("gencore.ops.rq_spline", x, widths, heights, derivatives):
        return _RQSpline.apply(x, widths, heights, derivatives, bound, reverse)
    return _op(x, widths, heights, derivatives, bound=bound, reverse=reverse)


def _check_bound(bound, x: torch.Tensor):
    bound = check_scalar(bound, "bound")
    if torch.compiler.is_compiling():
        _check_bound_fake(bound)
        return bound
    value = as_finite_float(bound, "bound", "a finite number > 0")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"gencore: bound must be a finite number > 0, got {bound}")
    check_representable(2 * value, "the interval's width 2 * bound", x)  # the knots span 2 * bound
    return value


# ----------------------------------------------------------------- fake kernels -----------
def _check_bound_fake(bound):
    torch._check_value(bound > 0, lambda: "gencore: bound must be a finite number > 0")
    torch._check_value(bound < math.inf, lambda: "gencore: bound must be a finite number > 0")


def _check_inputs_fake(x, widths, heights, derivatives, bound):
    # Mirrors check_inputs in csrc/spline/spline.h for tracing and the meta device.
    torch._check_value(x.dim() >= 1, lambda: f"gencore: x must have a batch dimension, got {tuple(x.shape)}")
    torch._check_type(x.dtype.is_floating_point, lambda: f"gencore: x must be floating-point, got {x.dtype}")
    torch._check_value(widths.dim() == x.dim() + 1,
                       lambda: f"gencore: widths must have shape x.shape + (K,), got {tuple(widths.shape)}")
    k = widths.shape[-1]
    torch._check_value(1 <= k <= RQ_MAX_BINS, lambda: f"gencore: the number of bins K must be in [1, {RQ_MAX_BINS}]")
    for name, t, last in (("widths", widths, k), ("heights", heights, k), ("derivatives", derivatives, k - 1)):
        torch._check_value(t.shape == (*x.shape, last),
                           lambda: f"gencore: {name} must have shape x.shape + ({last},), got {tuple(t.shape)}")
        torch._check_value(t.device == x.device,
                           lambda: f"gencore: x and {name} must be on the same device: got {x.device} and {t.device}")
        torch._check_type(t.dtype == x.dtype,
                          lambda: f"gencore: x and {name} must have the same dtype: got {x.dtype} and {t.dtype}")
    _check_bound_fake(bound)


@torch.library.register_fake("gencore::rq_spline")
def _(x, widths, heights, derivatives, *, bound=3.0, reverse=False):
    _check_inputs_fake(x, widths, heights, derivatives, bound)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:1])


@torch.library.register_fake("gencore::rq_spline_backward")
def _(grad_y, grad_logdet, x, widths, heights, derivatives, *, bound, reverse):
    _check_inputs_fake(x, widths, heights, derivatives, bound)
    torch._check_value(grad_y.shape == x.shape, lambda: "gencore: grad_y must have the shape of x")
    torch._check_value(grad_logdet.shape == x.shape[:1], lambda: "gencore: grad_logdet must have shape (B,)")
    for name, t in (("grad_y", grad_y), ("grad_logdet", grad_logdet)):
        torch._check_value(t.device == x.device,
                           lambda: f"gencore: x and {name} must be on the same device: got {x.device} and {t.device}")
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, widths, heights, derivatives))


# ----------------------------------------------------------------- autograd ---------------
def _save(ctx, x, widths, heights, derivatives, bound, reverse):
    ctx.bound, ctx.reverse = bound, reverse
    ctx.save_for_backward(x, widths, heights, derivatives)


def _setup(ctx, inputs, keyword_only_inputs, output):
    _save(ctx, *inputs, keyword_only_inputs.get("bound", 3.0), keyword_only_inputs.get("reverse", False))


def _function_setup(ctx, inputs, output):  # the torch.func path: bound and reverse are positional
    _save(ctx, *inputs)


@first_order("gencore.ops.rq_spline")
def _backward(ctx, grad_y, grad_logdet):
    x, widths, heights, derivatives = ctx.saved_tensors
    if grad_y is None and grad_logdet is None:
        return None, None, None, None, None, None
    grad_y = torch.zeros_like(x) if grad_y is None else grad_y
    grad_logdet = x.new_zeros(x.shape[:1]) if grad_logdet is None else grad_logdet
    grads = _op_backward(grad_y, grad_logdet, x, widths, heights, derivatives, bound=ctx.bound, reverse=ctx.reverse)
    grads = tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))
    return (*grads, None, None)


def _op_autograd(ctx, grad_y, grad_logdet):
    # The registered op has four positional inputs (bound and reverse are keyword-only).
    return _backward(ctx, grad_y, grad_logdet)[:4]


torch.library.register_autograd("gencore::rq_spline", _op_autograd, setup_context=_setup)


def _forward(x, widths, heights, derivatives, bound, reverse):
    with torch._C._AutoDispatchBelowAutograd():
        return _op(x, widths, heights, derivatives, bound=bound, reverse=reverse)


_RQSpline = type("_RQSpline", (torch.autograd.Function,), {
    "generate_vmap_rule": True,
    "forward": staticmethod(_forward),
    "setup_context": staticmethod(_function_setup),
    "backward": staticmethod(_backward),
})
