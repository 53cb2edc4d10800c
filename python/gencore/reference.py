"""Pure-PyTorch references of every gencore op.

These are the executable definitions the fused kernels are tested against, and the
eager / ``torch.compile`` baselines of the benchmarks. They are written the way a
user would write them in plain PyTorch, with no fusion tricks.
"""

from __future__ import annotations

import torch

__all__ = ["affine_coupling", "reparameterize"]


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


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`gencore.ops.reparameterize`: ``randn_like`` noise (or the given
    ``eps``), the sample, and the closed-form KL to N(0, I) per example, in nats.

    Args:
        mu, logvar: ``(B, ...)``.
        n_samples: None, or ``k`` samples in a new leading dimension.
        eps: the standard normals to use, of ``z``'s shape (tests pass gencore's).

    Returns:
        ``z`` of shape ``mu.shape`` or ``(k, *mu.shape)``, ``kl`` of shape ``(B,)``.
    """
    shape = mu.shape if n_samples is None else (n_samples, *mu.shape)
    if eps is None:
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).reshape(mu.shape[0], -1).sum(1)
    return z, kl
