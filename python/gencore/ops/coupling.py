"""Affine coupling: ``y = x * exp(s) + shift`` with the log-determinant fused in.

The op wrappers, their fake (meta) kernels and their autograd formulas live here; the
schemas are in ``csrc/registration.cpp`` and the kernels in ``csrc/coupling/``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from gencore import _C
from gencore.ops._autograd import first_order, transforms_active
from gencore.ops._errors import as_finite_float, check_representable, check_scalar, check_tensors, typed
from gencore.reference import transformed_count

__all__ = ["affine_coupling", "masked_affine_coupling"]

_op = typed(torch.ops.gencore.affine_coupling.default)
_op_backward = torch.ops.gencore.affine_coupling_backward.default
_masked_op = typed(torch.ops.gencore.masked_affine_coupling.default)
_masked_op_backward = torch.ops.gencore.masked_affine_coupling_backward.default


def affine_coupling(
    x: torch.Tensor,
    log_scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    clamp: float = 2.0,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise affine transform with a soft-clamped log-scale and its log-determinant.

    With ``s = clamp * tanh(log_scale / clamp)`` (or ``s = log_scale`` when ``clamp == 0``):

    * forward:  ``y = x * exp(s) + shift``,       ``logdet = s.flatten(1).sum(1)``
    * reverse:  ``y = (x - shift) * exp(-s)``,    ``logdet = -s.flatten(1).sum(1)``

    so ``affine_coupling(*affine_coupling(x, ls, t), ls, t, reverse=True)`` returns ``x``
    and the two log-determinants cancel. One pass over memory forward and one backward;
    ``s`` and ``exp(s)`` are recomputed in backward instead of being stored.

    Args:
        x: ``(B, ...)`` input, float32/float64 on CPU; float32/float64/float16/bfloat16
            on CUDA (float32 math for the half types).
        log_scale: ``(B, ...)``, the unconstrained log-scale (shape and dtype of ``x``).
        shift: ``(B, ...)``, the translation (shape and dtype of ``x``).
        clamp: finite, ``>= 0``; bounds ``|s| < clamp`` to keep training stable.
        reverse: apply the inverse transform.

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape and dtype, ``logdet`` of shape ``(B,)``,
        the log-absolute-determinant of the Jacobian ``dy/dx`` in nats.

    Raises:
        ValueError: shapes or devices differ, ``x`` has no batch dimension, or ``clamp``
            is negative or not finite.
        TypeError: a non-floating or unsupported dtype, or dtypes differ.
    """
    check_tensors(x=x, log_scale=log_scale, shift=shift)
    clamp, reverse = _check_clamp(clamp, x), bool(reverse)
    if torch.compiler.is_compiling():
        return _op(x, log_scale, shift, clamp=clamp, reverse=reverse)
    if transforms_active("gencore.ops.affine_coupling", x, log_scale, shift):
        return _AffineCouplingFunc.apply(x, log_scale, shift, clamp, reverse)
    if CXX_AUTOGRAD:
        return _op(x, log_scale, shift, clamp=clamp, reverse=reverse)
    if torch.is_grad_enabled() and (x.requires_grad or log_scale.requires_grad or shift.requires_grad):
        return _AffineCoupling.apply(x, log_scale, shift, clamp, reverse)
    with _below_autograd():
        return _op(x, log_scale, shift, clamp=clamp, reverse=reverse)


def _check_clamp(clamp, x: torch.Tensor) -> float:
    clamp = check_scalar(clamp, "clamp")
    if torch.compiler.is_compiling():  # clamp may be symbolic (dynamic=True)
        _check_clamp_fake(clamp)
        return clamp
    what = "a finite number >= 0 (0 disables the soft clamp)"
    value = as_finite_float(clamp, "clamp", what)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"gencore: clamp must be {what}, got {clamp}")
    check_representable(value, "clamp", x)
    return value


def masked_affine_coupling(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    mask: str = "alternate",
    swap: bool = False,
    clamp: float = 2.0,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole affine coupling after its conditioner: split, transform and merge in one pass.

    ``x`` is split along dim 1 into an identity part ``x_a`` and a transformed part ``x_b``
    by ``mask``; ``params`` is the conditioner's output for ``x_a``: the log-scales and
    shifts of ``x_b`` stacked on dim 1. Then ``y[:, a] = x_a`` and
    ``(y[:, b], logdet) = affine_coupling(x_b, log_scale, shift, clamp=clamp, reverse=reverse)``:
    the same numbers as slicing, :func:`affine_coupling` and merging, without the slices,
    the chunk and the merge as separate tensors (forward or backward).

    Masks over the ``C = x.shape[1]`` channels (features for vectors):

    * ``"half"``: ``x_a`` = the first ``C // 2`` channels, ``x_b`` the rest.
    * ``"alternate"``: ``x_a`` = the even channels ``0, 2, ...``, ``x_b`` the odd ones.

    ``swap=True`` exchanges ``x_a`` and ``x_b``; ``n_b`` is the number of transformed channels.

    Args:
        x: ``(B, C, ...)`` with ``C >= 2``: vectors ``(B, D)`` or images ``(B, C, H, W)``.
            float32/float64 on CPU; also float16/bfloat16 on CUDA (float32 math).
        params: ``(B, 2 * n_b, ...)`` (x's trailing dims): ``log_scale = params[:, :n_b]``,
            ``shift = params[:, n_b:]``; same dtype and device as ``x``.
        mask: ``"half"`` or ``"alternate"``.
        swap: transform the other part.
        clamp: soft clamp of the log-scale, as :func:`affine_coupling`.
        reverse: apply the inverse transform (``x_b = (y_b - shift) * exp(-s)``).

    Returns:
        ``(y, logdet)``: ``y`` of ``x``'s shape (contiguous), ``logdet`` of shape ``(B,)``
        in nats (``+sum s`` forward, ``-sum s`` reverse).

    Raises:
        ValueError: unknown mask, ``C < 2``, ``params`` of the wrong shape, devices differ,
            or ``clamp`` negative or not finite.
        TypeError: non-floating or unsupported dtype, or dtypes differ.

    Example::

        >>> x = torch.randn(8, 6)                        # identity: features 0, 2, 4
        >>> params = torch.randn(8, 6)                   # log_scale, shift of features 1, 3, 5
        >>> y, logdet = masked_affine_coupling(x, params)
        >>> x2, ld = masked_affine_coupling(y, params, reverse=True)   # x2 == x, ld == -logdet
    """
    check_tensors(x=x, params=params)
    clamp, swap, reverse = _check_clamp(clamp, x), bool(swap), bool(reverse)
    if torch.compiler.is_compiling():
        return _masked_op(x, params, mask=mask, swap=swap, clamp=clamp, reverse=reverse)
    if transforms_active("gencore.ops.masked_affine_coupling", x, params):
        return _MaskedCouplingFunc.apply(x, params, mask, swap, clamp, reverse)
    if CXX_AUTOGRAD:
        return _masked_op(x, params, mask=mask, swap=swap, clamp=clamp, reverse=reverse)
    if torch.is_grad_enabled() and (x.requires_grad or params.requires_grad):
        return _MaskedCoupling.apply(x, params, mask, swap, clamp, reverse)
    with _below_autograd():
        return _masked_op(x, params, mask=mask, swap=swap, clamp=clamp, reverse=reverse)


def _check_inputs_fake(x, log_scale, shift, clamp):
    # Mirrors check_affine_coupling_inputs in csrc/coupling/coupling.h for tracing.
    torch._check_value(x.dim() >= 1, lambda: f"gencore: x must have a batch dimension, got {x.shape}")
    torch._check_type(x.dtype.is_floating_point, lambda: f"gencore: x must be floating, got {x.dtype}")
    for name, t in (("log_scale", log_scale), ("shift", shift)):
        torch._check_value(
            t.shape == x.shape,
            lambda: f"gencore: {name} must have the shape of x: got {tuple(t.shape)} and {tuple(x.shape)}",
        )
        torch._check_value(
            t.device == x.device,
            lambda: f"gencore: x and {name} must be on the same device: got {x.device} and {t.device}",
        )
        torch._check_type(
            t.dtype == x.dtype,
            lambda: f"gencore: x and {name} must have the same dtype: got {x.dtype} and {t.dtype}",
        )
    _check_clamp_fake(clamp)


def _check_clamp_fake(clamp):
    # Two comparisons instead of math.isfinite, which a symbolic float (torch.compile with
    # dynamic=True) does not support; NaN fails the first.
    torch._check_value(clamp >= 0, lambda: "gencore: clamp must be a finite number >= 0")
    torch._check_value(clamp < math.inf, lambda: "gencore: clamp must be a finite number >= 0")


def _check_grad_devices_fake(x, grad_y, grad_logdet):
    # A meta tensor beside real ones makes the dispatcher pick the fake kernels: without
    # the device checks the call would "succeed" with uninitialised outputs.
    for name, t in (("grad_y", grad_y), ("grad_logdet", grad_logdet)):
        torch._check_value(t.device == x.device,
                           lambda: f"gencore: x and {name} must be on the same device: got {x.device} and {t.device}")


@torch.library.register_fake("gencore::affine_coupling")
def _(x, log_scale, shift, *, clamp=2.0, reverse=False):
    _check_inputs_fake(x, log_scale, shift, clamp)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:1])


@torch.library.register_fake("gencore::affine_coupling_backward")
def _(grad_y, grad_logdet, x, log_scale, shift, *, clamp, reverse):
    _check_inputs_fake(x, log_scale, shift, clamp)
    torch._check_value(grad_y.shape == x.shape, lambda: "gencore: grad_y must have the shape of x")
    torch._check_value(
        grad_logdet.shape == x.shape[:1], lambda: "gencore: grad_logdet must have shape (B,)"
    )
    _check_grad_devices_fake(x, grad_y, grad_logdet)

    def new():
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    return new(), new()


def _masked_layout_fake(x, params, mask, swap, clamp):
    """n_b of the masked op, with the checks of prepare_masked in csrc/coupling/coupling.h."""
    torch._check_value(mask in ("half", "alternate"), lambda: f"gencore: mask must be 'half' or 'alternate', got {mask!r}")
    torch._check_value(x.dim() >= 2, lambda: f"gencore: x must have at least 2 dimension(s), got {tuple(x.shape)}")
    torch._check_type(x.dtype.is_floating_point, lambda: f"gencore: x must be floating, got {x.dtype}")
    torch._check_type(params.dtype == x.dtype, lambda: f"gencore: x and params must have the same dtype: got {x.dtype} and {params.dtype}")
    torch._check_value(params.device == x.device, lambda: "gencore: x and params must be on the same device")
    c = x.shape[1]
    torch._check_value(c >= 2, lambda: f"gencore: x must have at least 2 channels/features in dim 1, got {tuple(x.shape)}")
    n_b = transformed_count(c, mask, swap)
    want = (x.shape[0], 2 * n_b, *x.shape[2:])
    torch._check_value(tuple(params.shape) == want, lambda: f"gencore: params must have shape {want}, got {tuple(params.shape)}")
    _check_clamp_fake(clamp)


@torch.library.register_fake("gencore::masked_affine_coupling")
def _(x, params, *, mask, swap=False, clamp=2.0, reverse=False):
    _masked_layout_fake(x, params, mask, swap, clamp)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:1])


@torch.library.register_fake("gencore::masked_affine_coupling_backward")
def _(grad_y, grad_logdet, x, params, *, mask, swap, clamp, reverse):
    _masked_layout_fake(x, params, mask, swap, clamp)
    torch._check_value(grad_y.shape == x.shape, lambda: "gencore: grad_y must have the shape of x")
    torch._check_value(grad_logdet.shape == x.shape[:1], lambda: "gencore: grad_logdet must have shape (B,)")
    _check_grad_devices_fake(x, grad_y, grad_logdet)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(params, memory_format=torch.contiguous_format))


# ---- autograd: inputs are saved, s and exp(s) are recomputed in the backward kernel ----
#
# A flow runs these ops once per coupling, at batch sizes where the per-call cost of the
# autograd layer matters as much as the kernels. Measured on the 2-core CPU VM, a 64x64
# masked coupling (forward; forward + backward; median of 5 x 2000 calls):
#   C++ autograd (before the stable-ABI port)              18 us; 119 us
#   torch.library.register_autograd, called through the op  80 us; 224 us
#   the autograd.Function below, kernels below autograd     38 us; 180 us
# Hence three layers, one formula:
# - torch.library.register_autograd makes the ops differentiable for every caller
#   (torch.ops.gencore.*, opcheck, torch.compile, which traces it);
# - in eager mode the public wrappers take an autograd.Function that calls the kernels
#   below the autograd key (and that torch.func can transform);
# - every backward is first-order only (ops/_autograd.py): a second derivative raises
#   instead of being silently zero;
# - under the exact torch the package was built against, the version-locked C++ autograd
#   of csrc/coupling/coupling_autograd.cpp (gencore/_C_autograd.so) replaces both, and
#   the wrappers call the op directly (except under torch.func, which cannot see through
#   a C++ autograd function). GENCORE_CXX_AUTOGRAD=0 turns it off.
# tests/ops/test_coupling_op.py checks that the paths give the same values and gradients.


def _load_cxx_autograd() -> bool:
    lib = Path(__file__).resolve().parents[1] / "_C_autograd.so"
    if os.environ.get("GENCORE_CXX_AUTOGRAD", "1") == "0" or not lib.exists():
        return False
    if torch.__version__.split("+")[0] != _C.built_with_torch:
        return False  # libtorch's C++ ABI is promised for one release only
    try:
        torch.ops.load_library(str(lib))
    except OSError as e:  # e.g. a local torch build of the same version number
        warnings.warn(f"gencore: the C++ autograd fast path did not load ({e}); using the "
                      "Python autograd of the coupling ops", RuntimeWarning, stacklevel=2)
        return False
    return True


CXX_AUTOGRAD = _load_cxx_autograd()
_below_autograd = torch._C._AutoDispatchBelowAutograd


# Two Function classes per op, one formula: the eager path takes the ctx-style forward,
# which costs less per call (measured on the 2-core VM, a 64x64 masked coupling forward +
# backward, medians of 12 x 500 calls: 182 us against 235 us for the setup_context style);
# torch.func can only transform the setup_context style (the *Func classes).
def _save_coupling(ctx, inputs):
    x, log_scale, shift, clamp, reverse = inputs
    ctx.save_for_backward(x, log_scale, shift)
    ctx.clamp, ctx.reverse = clamp, reverse


def _save_masked(ctx, inputs):
    x, params, mask, swap, clamp, reverse = inputs
    ctx.save_for_backward(x, params)
    ctx.mask, ctx.swap, ctx.clamp, ctx.reverse = mask, swap, clamp, reverse


class _AffineCoupling(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, log_scale, shift, clamp, reverse):
        with _below_autograd():
            y, logdet = _op(x, log_scale, shift, clamp=clamp, reverse=reverse)
        _save_coupling(ctx, (x, log_scale, shift, clamp, reverse))
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        return (*_coupling_backward(ctx, grad_y, grad_logdet), None, None)


class _AffineCouplingFunc(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, log_scale, shift, clamp, reverse):
        with _below_autograd():
            return _op(x, log_scale, shift, clamp=clamp, reverse=reverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_coupling(ctx, inputs)

    backward = staticmethod(_AffineCoupling.backward)


class _MaskedCoupling(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, mask, swap, clamp, reverse):
        with _below_autograd():
            y, logdet = _masked_op(x, params, mask=mask, swap=swap, clamp=clamp, reverse=reverse)
        _save_masked(ctx, (x, params, mask, swap, clamp, reverse))
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        return (*_masked_backward(ctx, grad_y, grad_logdet), None, None, None, None)


class _MaskedCouplingFunc(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, params, mask, swap, clamp, reverse):
        with _below_autograd():
            return _masked_op(x, params, mask=mask, swap=swap, clamp=clamp, reverse=reverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_masked(ctx, inputs)

    backward = staticmethod(_MaskedCoupling.backward)


def _coupling_setup_context(ctx, inputs, keyword_only_inputs, output):
    ctx.clamp = keyword_only_inputs.get("clamp", 2.0)
    ctx.reverse = keyword_only_inputs.get("reverse", False)
    ctx.save_for_backward(*inputs)


@first_order("gencore.ops.affine_coupling")
def _coupling_backward(ctx, grad_y, grad_logdet):
    x, log_scale, shift = ctx.saved_tensors
    if grad_y is None:
        grad_y = torch.zeros_like(x)
    if grad_logdet is None:
        grad_logdet = x.new_zeros(x.shape[:1])
    with _below_autograd():
        grad_x, grad_log_scale = _op_backward(grad_y, grad_logdet, x, log_scale, shift,
                                              clamp=ctx.clamp, reverse=ctx.reverse)
    # dy/dshift is the identity (forward) or -exp(-s) (reverse): no kernel output needed.
    grad_shift = -grad_x if ctx.reverse else grad_y
    return grad_x, grad_log_scale, grad_shift


if not CXX_AUTOGRAD:
    torch.library.register_autograd("gencore::affine_coupling", _coupling_backward,
                                    setup_context=_coupling_setup_context)


def _masked_setup_context(ctx, inputs, keyword_only_inputs, output):
    ctx.mask = keyword_only_inputs["mask"]
    ctx.swap = keyword_only_inputs.get("swap", False)
    ctx.clamp = keyword_only_inputs.get("clamp", 2.0)
    ctx.reverse = keyword_only_inputs.get("reverse", False)
    ctx.save_for_backward(*inputs)


@first_order("gencore.ops.masked_affine_coupling")
def _masked_backward(ctx, grad_y, grad_logdet):
    x, params = ctx.saved_tensors
    if grad_y is None:
        grad_y = torch.zeros_like(x)
    if grad_logdet is None:
        grad_logdet = x.new_zeros(x.shape[:1])
    with _below_autograd():
        return _masked_op_backward(grad_y, grad_logdet, x, params, mask=ctx.mask, swap=ctx.swap,
                                   clamp=ctx.clamp, reverse=ctx.reverse)


if not CXX_AUTOGRAD:
    torch.library.register_autograd("gencore::masked_affine_coupling", _masked_backward,
                                    setup_context=_masked_setup_context)
