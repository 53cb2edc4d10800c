"""Affine coupling: ``y = x * exp(s) + shift`` with the log-determinant fused in.

The op and its fake (meta) kernels live here; the schema is in ``csrc/registration.cpp``,
the kernels in ``csrc/coupling/``, and the autograd formula in
``csrc/coupling/coupling_autograd.cpp`` (in C++: a Python autograd function around every
call cost more than the kernels at the batch sizes flows train with).
"""

from __future__ import annotations

import math

import torch

__all__ = ["affine_coupling"]

_op = torch.ops.gencore.affine_coupling
_op_backward = torch.ops.gencore.affine_coupling_backward


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
    if not isinstance(clamp, (int, float)) or isinstance(clamp, bool):
        raise TypeError(f"gencore: clamp must be a float, got {type(clamp).__name__}")
    if not math.isfinite(clamp) or clamp < 0:
        raise ValueError(
            f"gencore: clamp must be a finite number >= 0 (0 disables the soft clamp), got {clamp}"
        )
    return _op(x, log_scale, shift, clamp=float(clamp), reverse=bool(reverse))


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
    torch._check_value(
        math.isfinite(clamp) and clamp >= 0,
        lambda: f"gencore: clamp must be a finite number >= 0, got {clamp}",
    )


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

    def new():
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    return new(), new()
