"""Pure-PyTorch references of every gencore op.

These are the executable definitions the fused kernels are tested against, and the
eager / ``torch.compile`` baselines of the benchmarks. They are written the way a
user would write them in plain PyTorch, with no fusion tricks.
"""

from __future__ import annotations

import torch

__all__ = ["affine_coupling"]


def affine_coupling(
    x: torch.Tensor,
    log_scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    clamp: float = 2.0,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`gencore.ops.affine_coupling`.

    Args:
        x, log_scale, shift: ``(B, ...)``, same shape.
        clamp: soft clamp ``s = clamp * tanh(log_scale / clamp)``; ``0`` disables it.
        reverse: apply the inverse map.

    Returns:
        ``y`` of ``x``'s shape and ``logdet`` of shape ``(B,)`` in nats.
    """
    s = clamp * torch.tanh(log_scale / clamp) if clamp > 0 else log_scale
    if reverse:
        y = (x - shift) * torch.exp(-s)
        logdet = -s.reshape(s.shape[0], -1).sum(1)
    else:
        y = x * torch.exp(s) + shift
        logdet = s.reshape(s.shape[0], -1).sum(1)
    return y, logdet
