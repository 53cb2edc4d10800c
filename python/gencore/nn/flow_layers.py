"""Invertible layers for flows besides the affine coupling. Each maps
``forward(x, context=None) -> (y, logdet)`` and ``inverse(y, context=None) -> (x, logdet)``,
``logdet: (B,)`` in nats, for inputs ``(B, D)`` or ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ActNorm", "AdditiveCoupling", "DiagonalScale", "Reverse"]


def _spatial(x: torch.Tensor) -> int:
    """Number of positions sharing one per-channel parameter: H*W for images, 1 for vectors."""
    return x[0, 0].numel()


def _param_shape(x: torch.Tensor) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x - b) * exp(-log_s)`` with data-dependent initialisation (Glow).

    The first forward pass in training mode sets ``b`` and ``log_s`` to the batch's
    per-channel mean and log standard deviation, so the output starts standardized.

    Args:
        features_or_channels: ``D`` (vectors) or ``C`` (images); statistics are per entry of dim 1.
    """

    def __init__(self, features_or_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(features_or_channels))
        self.log_scale = nn.Parameter(torch.zeros(features_or_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        self.bias.copy_(x.mean(dims))
        self.log_scale.copy_(torch.log(x.std(dims) + self.eps))
        self.initialized.fill_(True)

    def forward(self, x, context=None):
        if self.training and not bool(self.initialized):
            self._initialize(x)
        shape = _param_shape(x)
        y = (x - self.bias.view(shape)) * torch.exp(-self.log_scale).view(shape)
        logdet = (-self.log_scale.sum() * _spatial(x)).expand(x.shape[0])
        return y, logdet

    def inverse(self, y, context=None):
        shape = _param_shape(y)
        x = y * torch.exp(self.log_scale).view(shape) + self.bias.view(shape)
        return x, (self.log_scale.sum() * _spatial(y)).expand(y.shape[0])


class DiagonalScale(nn.Module):
    """NICE's final layer ``y = x * exp(s)`` with a learned ``s`` per entry of dim 1."""

    def __init__(self, features_or_channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features_or_channels))

    def forward(self, x, context=None):
        shape = _param_shape(x)
        return x * torch.exp(self.log_scale).view(shape), (self.log_scale.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, y, context=None):
        shape = _param_shape(y)
        return y * torch.exp(-self.log_scale).view(shape), (-self.log_scale.sum() * _spatial(y)).expand(y.shape[0])


class Reverse(nn.Module):
    """Reverses the order of dim 1 (a fixed permutation, log-determinant 0)."""

    def forward(self, x, context=None):
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, y, context=None):
        return y.flip(1), y.new_zeros(y.shape[0])


class AdditiveCoupling(nn.Module):
    """NICE's additive coupling ``y_b = x_b + t(x_a)``, ``y_a = x_a`` (volume preserving).

    Split along dim 1 like :class:`gencore.nn.AffineCoupling` with ``mask="half"`` or
    ``"alternate"``; the conditioner maps ``x_a`` (and the context) to ``t`` of ``x_b``'s shape.
    """

    def __init__(self, features_or_channels: int, conditioner: nn.Module, *, mask: str = "alternate",
                 swap: bool = False) -> None:
        super().__init__()
        if mask not in ("half", "alternate"):
            raise ValueError(f"AdditiveCoupling: mask must be 'half' or 'alternate', got {mask!r}")
        n = features_or_channels
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"AdditiveCoupling: needs at least 2 features/channels, got {n!r}")
        parts = (slice(0, n // 2), slice(n // 2, n)) if mask == "half" else (slice(0, n, 2), slice(1, n, 2))
        self._id, self._tr = (parts[1], parts[0]) if swap else parts
        self.features = n
        self.conditioner = conditioner

    def _shift(self, x_a, context):
        return self.conditioner(x_a) if context is None else self.conditioner(x_a, context)

    def _couple(self, x, context, sign):
        if x.dim() < 2 or x.shape[1] != self.features:
            raise ValueError(f"AdditiveCoupling: expected {self.features} features in dim 1, got shape {tuple(x.shape)}")
        x_a, x_b = x[:, self._id], x[:, self._tr]
        t = self._shift(x_a, context)
        if t.shape != x_b.shape:
            raise ValueError(f"AdditiveCoupling: conditioner returned {tuple(t.shape)}, expected {tuple(x_b.shape)}")
        y = torch.empty_like(x)
        y[:, self._id] = x_a
        y[:, self._tr] = x_b + sign * t
        return y, x.new_zeros(x.shape[0])

    def forward(self, x, context=None):
        return self._couple(x, context, 1.0)

    def inverse(self, y, context=None):
        return self._couple(y, context, -1.0)
