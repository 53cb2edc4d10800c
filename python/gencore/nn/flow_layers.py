"""Invertible layers for flows besides the affine coupling. Each maps
``forward(x, context=None) -> (y, logdet)`` and ``inverse(y, context=None) -> (x, logdet)``,
``logdet: (B,)`` in nats, for inputs ``(B, D)`` or ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn

from gencore._arguments import check_number, check_size

__all__ = ["ActNorm", "AdditiveCoupling", "DiagonalScale", "Reverse", "Squeeze", "FactorOut",
           "InvertibleLinear", "ConvConditioner", "squeeze2x2", "unsqueeze2x2"]


def _spatial(x: torch.Tensor) -> int:
    """Number of positions sharing one per-channel parameter: H*W for images, 1 for vectors."""
    return x[0, 0].numel()


def _param_shape(x: torch.Tensor) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x - b) * exp(-log_s)`` with data-dependent initialisation (Glow).

    The first forward pass in training mode sets ``b`` and ``log_s`` to the batch's
    per-channel mean and log standard deviation, so the output starts standardized.

    Edge cases of that initialisation:

    - a batch with a single value per channel (one example of a vector, or a ``(1, C, 1, 1)``
      image) has no spread to measure: ``b`` is set to that value (the mean) and the scale
      is left at 1 (``log_s = 0``), instead of the NaN an unbiased standard deviation of one
      value would give;
    - a batch with a NaN or infinite value raises ``ValueError`` and leaves the layer
      uninitialised (its statistics would make every later output NaN).

    Args:
        features_or_channels: ``D`` (vectors) or ``C`` (images); statistics are per entry of dim 1.
    """

    def __init__(self, features_or_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        features_or_channels = check_size(features_or_channels, "ActNorm: features_or_channels")
        eps = check_number(eps, "ActNorm: eps", 0.0)
        self.bias = nn.Parameter(torch.zeros(features_or_channels))
        self.log_scale = nn.Parameter(torch.zeros(features_or_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps

    @property
    def needs_data_init(self) -> bool:
        """True until the first training forward has set the statistics from its batch: the
        hook through which :func:`gencore.train.fit` runs data-dependent initialisation on the
        global batch under data-parallel training."""
        return not bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.bias.shape[0]:
            raise ValueError(f"ActNorm: expected {self.bias.shape[0]} features/channels in dim 1, "
                             f"got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError("ActNorm: the data-dependent initialisation needs a non-empty batch")
        if not torch.isfinite(x).all():
            raise ValueError("ActNorm: the data-dependent initialisation got a batch with NaN or infinite "
                             "values; its mean and standard deviation would make every output NaN")
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        if x.numel() // x.shape[1] < 2:
            # One value per channel: no spread to measure; keep the unit scale.
            log_scale = torch.zeros_like(mean)
        else:
            log_scale = torch.log(x.std(dims) + self.eps)
        if not (torch.isfinite(mean).all() and torch.isfinite(log_scale).all()):
            raise ValueError(f"ActNorm: the data-dependent initialisation overflowed in {x.dtype} (the batch's "
                             "mean or standard deviation is not finite); rescale the data")
        self.bias.copy_(mean)
        self.log_scale.copy_(log_scale)
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
        features_or_channels = check_size(features_or_channels, "DiagonalScale: features_or_channels")
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
        n = check_size(features_or_channels, "AdditiveCoupling: features_or_channels", 2)
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


def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 patch becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze2x2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze2x2`."""
    b, c4, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c4 // 4, 2 * h, 2 * w)


def _run(transforms, x, context, inverse: bool):
    logdet = x.new_zeros(x.shape[0])
    for t in (reversed(transforms) if inverse else transforms):
        x, ld = t.inverse(x, context) if inverse else t(x, context)
        logdet = logdet + ld
    return x, logdet


class Squeeze(nn.Module):
    """Runs ``transforms`` on the squeezed image ``(B, 4C, H/2, W/2)`` and unsqueezes the result,
    so the layer keeps the shape of its input (the unsqueeze is a fixed permutation: the
    standard normal base, invariant to permutations, sees the same latent)."""

    def __init__(self, transforms) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def _check(self, x):
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"Squeeze needs (B, C, H, W) with even H and W, got {tuple(x.shape)}")

    def forward(self, x, context=None):
        self._check(x)
        y, ld = _run(self.transforms, squeeze2x2(x), context, inverse=False)
        return unsqueeze2x2(y), ld

    def inverse(self, y, context=None):
        self._check(y)
        x, ld = _run(self.transforms, squeeze2x2(y), context, inverse=True)
        return unsqueeze2x2(x), ld


class FactorOut(nn.Module):
    """Multi-scale architecture: the first half of the channels leaves the flow here (it is
    already a latent, modelled by the base N(0, I)); ``transforms`` act on the second half."""

    def __init__(self, transforms) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def _split(self, x):
        k = x.shape[1] // 2
        return x[:, :k], x[:, k:]

    def forward(self, x, context=None):
        out, keep = self._split(x)
        y, ld = _run(self.transforms, keep, context, inverse=False)
        return torch.cat([out, y], 1), ld

    def inverse(self, y, context=None):
        out, keep = self._split(y)
        x, ld = _run(self.transforms, keep, context, inverse=True)
        return torch.cat([out, x], 1), ld


class InvertibleLinear(nn.Module):
    """Glow's invertible 1x1 convolution in LU form, ``W = P L (U + diag(sign * exp(log_s)))``.

    Mixes dim 1 of ``(B, C, H, W)`` images (a 1x1 convolution) or ``(B, D)`` vectors (a
    linear map). ``log|det W| = sum(log_s)`` per position costs O(C); P and the signs are
    fixed buffers. Initialised at a random rotation (from torch's global RNG).
    """

    def __init__(self, features_or_channels: int) -> None:
        super().__init__()
        c = check_size(features_or_channels, "InvertibleLinear: features_or_channels")
        w = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.lower = nn.Parameter(lower.float() * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(s.abs()).float())

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.perm.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def _mix(self, x, w):
        if x.dim() == 2:
            return x @ w.T
        return torch.einsum("ij,bjhw->bihw", w, x)

    def forward(self, x, context=None):
        return self._mix(x, self.weight()), (self.log_s.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, y, context=None):
        return self._mix(y, torch.linalg.inv(self.weight())), (-self.log_s.sum() * _spatial(y)).expand(y.shape[0])


class ConvConditioner(nn.Module):
    """``conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3`` (last layer zero-initialised), for
    image couplings: ``(B, c_in, H, W) -> (B, c_out, H, W)``. A context vector ``(B, K)``
    is appended as ``K`` constant channels."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, context_features: int = 0) -> None:
        super().__init__()
        in_channels = check_size(in_channels, "ConvConditioner: in_channels")
        out_channels = check_size(out_channels, "ConvConditioner: out_channels")
        hidden = check_size(hidden, "ConvConditioner: hidden")
        context_features = check_size(context_features, "ConvConditioner: context_features", 0)
        self.context_features = context_features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + context_features, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x, context=None):
        if context is not None:
            x = torch.cat([x, context[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        return self.net(x)
