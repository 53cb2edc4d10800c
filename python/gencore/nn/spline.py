"""Rational-quadratic spline coupling layer (neural spline flows): split, conditioner, fused
spline op, merge."""

from __future__ import annotations

import math

import torch
from torch import nn

from gencore.ops.spline import RQ_MAX_BINS, rq_spline
from gencore.reference import RQ_MIN_DERIVATIVE, mask_parts, transformed_count

__all__ = ["SplineCoupling"]

#: the unnormalized derivative whose ``1e-3 + softplus`` is exactly 1: added to the
#: conditioner's derivative outputs, so a zero-initialised conditioner gives the identity
IDENTITY_DERIVATIVE = math.log(math.expm1(1 - RQ_MIN_DERIVATIVE))


class SplineCoupling(nn.Module):
    """Coupling layer with a monotonic rational-quadratic spline per transformed element
    (Durkan et al. 2019, "Neural Spline Flows"), over :func:`gencore.ops.rq_spline`.

    The input ``(B, D)`` is split by ``mask`` into an identity part ``x_a`` and a transformed
    part ``x_b``; the conditioner sees ``x_a`` (and the optional context) and returns, for
    each of the ``n_b`` transformed elements, ``3K - 1`` numbers: ``K`` unnormalized bin
    widths, ``K`` heights and ``K - 1`` interior derivatives. Then ``y_a = x_a`` and
    ``y_b = spline(x_b)`` on ``[-bound, bound]``, the identity outside. As in nflows, the
    widths and heights are divided by ``sqrt(hidden)`` of the conditioner's last hidden layer
    when given (``scale_by``), and the derivatives are offset so that a zero output is the
    identity map: a zero-initialised conditioner starts the layer as the identity.

    Masks: ``"half"`` (first ``D // 2`` entries are ``x_a``) and ``"alternate"`` (the even
    ones); ``swap=True`` exchanges the parts (alternate it between stacked layers).

    Conditioner contract: ``conditioner(x_a)`` or ``conditioner(x_a, context)`` with ``x_a``
    of shape ``(B, n_a)`` returns ``(B, n_b * (3K - 1))``, element ``j``'s parameters at
    ``[j * (3K - 1), (j + 1) * (3K - 1))`` (widths, heights, derivatives); they are read in
    place by the op (no copies of the three slices).

    Args:
        features: ``D >= 2``.
        conditioner: an ``nn.Module`` following the contract.
        bins: ``K``, spline bins per element, ``1 <= K <= 999``.
        bound: the spline acts on ``[-bound, bound]`` (finite, > 0).
        mask: ``"half"`` or ``"alternate"``.
        swap: transform the other part.
        scale_by: divide the widths and heights by ``sqrt(scale_by)`` (nflows' convention for
            a conditioner of that hidden width; ``None`` or 0: no scaling).

    Shapes:
        ``forward(x) -> (y, logdet)``, ``inverse(y) -> (x, logdet)``: ``(B, D)`` and ``(B,)``
        in nats.

    Example::

        >>> from gencore.nn import MLP
        >>> layer = SplineCoupling(4, MLP(2, 2 * (3 * 8 - 1), hidden=(32,), zero_init=True), bins=8)
        >>> y, logdet = layer(torch.randn(16, 4))     # identity at initialisation
        >>> x, inv_logdet = layer.inverse(y)
    """

    def __init__(self, features: int, conditioner: nn.Module, *, bins: int = 8, bound: float = 3.0,
                 mask: str = "alternate", swap: bool = False, scale_by: int | None = None) -> None:
        super().__init__()
        for name, v, low in (("features", features, 2), ("bins", bins, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"SplineCoupling: {name} must be an int, got {type(v).__name__} {v!r}")
            if v < low:
                raise ValueError(f"SplineCoupling: {name} must be an int >= {low}, got {v!r}")
        if bins > RQ_MAX_BINS:
            raise ValueError(f"SplineCoupling: bins must be at most {RQ_MAX_BINS}, got {bins}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"SplineCoupling: bound must be a number, got {type(bound).__name__}")
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"SplineCoupling: bound must be a finite number > 0, got {bound!r}")
        if mask not in ("half", "alternate"):
            raise ValueError(f"SplineCoupling: mask must be 'half' or 'alternate', got {mask!r}")
        if not isinstance(conditioner, nn.Module):
            raise TypeError(f"SplineCoupling: conditioner must be an nn.Module, got {type(conditioner).__name__}")
        if scale_by is not None and (isinstance(scale_by, bool) or not isinstance(scale_by, int) or scale_by < 0):
            raise ValueError(f"SplineCoupling: scale_by must be None or an int >= 0, got {scale_by!r}")
        self.features, self.bins, self.bound = features, bins, float(bound)
        self.mask, self.swap = mask, bool(swap)
        self.conditioner = conditioner
        self._id, self._tr = mask_parts(features, mask, self.swap)
        self._n_b = transformed_count(features, mask, self.swap)
        self._scale = 1.0 / math.sqrt(scale_by) if scale_by else 1.0

    @property
    def params_per_element(self) -> int:
        return 3 * self.bins - 1

    def extra_repr(self) -> str:
        return f"{self.features}, bins={self.bins}, bound={self.bound}, mask={self.mask!r}, swap={self.swap}"

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, D)`` -> ``(y, logdet)``, ``logdet: (B,)`` in nats."""
        return self._transform(x, context, reverse=False)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y: (B, D)`` -> ``(x, logdet)`` with ``logdet`` of the inverse map."""
        return self._transform(y, context, reverse=True)

    def spline_parameters(self, x_a: torch.Tensor, context: torch.Tensor | None = None):
        """The ``(widths, heights, derivatives)`` the conditioner gives for ``x_a``, each
        ``(B, n_b, K)`` / ``(B, n_b, K - 1)`` (views of its output, scaled and offset)."""
        h = self.conditioner(x_a) if context is None else self.conditioner(x_a, context)
        p, k = self.params_per_element, self.bins
        want = (x_a.shape[0], self._n_b * p)
        if not isinstance(h, torch.Tensor) or tuple(h.shape) != want:
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"SplineCoupling: conditioner must return {want} ({self._n_b} elements x "
                             f"(3 * {k} - 1) spline parameters), got {got}")
        h = h.view(x_a.shape[0], self._n_b, p)
        w, ht, d = h[..., :k], h[..., k:2 * k], h[..., 2 * k:]
        if self._scale != 1.0:
            w, ht = w * self._scale, ht * self._scale
        return w, ht, d + IDENTITY_DERIVATIVE

    def _transform(self, x, context, reverse):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SplineCoupling: expected a tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"SplineCoupling: input must be (B, {self.features}), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("SplineCoupling: empty batch (B = 0)")
        x_a = x[:, self._id]
        if self.mask == "alternate":
            x_a = x_a.contiguous()
        w, h, d = self.spline_parameters(x_a, context)
        y_b, logdet = rq_spline(x[:, self._tr], w, h, d, bound=self.bound, reverse=reverse)
        y = torch.empty_like(x)
        y[:, self._id] = x_a
        y[:, self._tr] = y_b
        return y, logdet
