"""Rational-quadratic spline flow layers (neural spline flows): the coupling form (split,
conditioner, fused spline op, merge) and the autoregressive form (a MADE conditioner, the
fused op on every element)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from gencore._arguments import check_int, check_size, int_in
from gencore.nn.layers import MADE
from gencore.ops.spline import RQ_MAX_BINS, rq_spline
from gencore.reference import RQ_MIN_DERIVATIVE, mask_parts, transformed_count

__all__ = ["SplineCoupling", "AutoregressiveSpline"]

#: the unnormalized derivative whose ``1e-3 + softplus`` is exactly 1: added to the
#: conditioner's derivative outputs, so a zero-initialised conditioner gives the identity
IDENTITY_DERIVATIVE = math.log(math.expm1(1 - RQ_MIN_DERIVATIVE))


def _check_layer(owner: str, features, min_features: int, bins, bound, conditioner, scale_by):
    """The layer's arguments checked, as plain Python ``(features, bins, bound, scale_by)``
    (numpy scalars are taken)."""
    features = check_size(features, f"{owner}: features", min_features)
    bins = check_int(bins, f"{owner}: bins", 1)
    if bins > RQ_MAX_BINS:
        raise ValueError(f"{owner}: bins must be at most {RQ_MAX_BINS}, got {bins}")
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
        raise TypeError(f"{owner}: bound must be a number, got {type(bound).__name__}")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"{owner}: bound must be a finite number > 0, got {bound!r}")
    if not isinstance(conditioner, nn.Module):
        raise TypeError(f"{owner}: conditioner must be an nn.Module, got {type(conditioner).__name__}")
    if scale_by is not None and int_in(scale_by, 0) is None:
        raise ValueError(f"{owner}: scale_by must be None or an int >= 0, got {scale_by!r}")
    return features, bins, float(bound), None if scale_by is None else int(scale_by)


def _split_parameters(h: torch.Tensor, k: int, scale: float):
    """``(B, n, 3K - 1)`` conditioner output -> views ``(widths, heights, derivatives)``,
    widths and heights scaled, derivatives offset to the identity."""
    w, ht, d = h[..., :k], h[..., k:2 * k], h[..., 2 * k:]
    if scale != 1.0:
        w, ht = w * scale, ht * scale
    return w, ht, d + IDENTITY_DERIVATIVE


def _check_input(owner: str, x, features: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != features:
        raise ValueError(f"{owner}: input must be (B, {features}), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{owner}: empty batch (B = 0)")


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
        features, bins, bound, scale_by = _check_layer("SplineCoupling", features, 2, bins, bound, conditioner,
                                                       scale_by)
        if mask not in ("half", "alternate"):
            raise ValueError(f"SplineCoupling: mask must be 'half' or 'alternate', got {mask!r}")
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
        return _split_parameters(h.view(x_a.shape[0], self._n_b, p), k, self._scale)

    def _transform(self, x, context, reverse):
        _check_input("SplineCoupling", x, self.features)
        x_a = x[:, self._id]
        if self.mask == "alternate":
            x_a = x_a.contiguous()
        w, h, d = self.spline_parameters(x_a, context)
        y_b, logdet = rq_spline(x[:, self._tr], w, h, d, bound=self.bound, reverse=reverse)
        y = torch.empty_like(x)
        y[:, self._id] = x_a
        y[:, self._tr] = y_b
        return y, logdet


class AutoregressiveSpline(nn.Module):
    """Autoregressive rational-quadratic spline layer (the masked autoregressive form of
    Durkan et al. 2019): every element ``x_j`` gets its own monotonic spline whose ``3K - 1``
    parameters come from a :class:`gencore.nn.MADE` over the elements before it in the
    MADE's ``order`` (and the context), through the fused :func:`gencore.ops.rq_spline`.

    ``forward`` (data to latent, the density direction) is one MADE pass and one spline pass
    over all ``D`` elements. ``inverse`` (sampling) is sequential: ``D`` rounds of "MADE on
    the current guess, inverse spline of every element", each fixing the next element in the
    order (after round ``s`` the first ``s`` elements are exact, whatever the rest holds), so
    the last round's output and log-determinant are the exact inverse's, and autograd through
    the rounds gives its exact derivatives (the MADE's Jacobian is strictly triangular in the
    order, so the not-yet-exact elements never reach an exact one). The parameters are
    scaled and offset as :class:`SplineCoupling`'s (zero MADE output: the identity).

    Args:
        features: ``D >= 1``.
        conditioner: a :class:`gencore.nn.MADE` with ``features`` inputs and
            ``out_per_feature = 3K - 1``.
        bins: ``K``, ``1 <= K <= 999``.
        bound: the spline acts on ``[-bound, bound]``, the identity outside.
        scale_by: divide the widths and heights by ``sqrt(scale_by)`` (``None``/0: no scaling).

    Shapes:
        ``forward(x) -> (z, logdet)``, ``inverse(z) -> (x, logdet)``: ``(B, D)`` and ``(B,)``
        in nats.

    Example::

        >>> from gencore.nn import MADE
        >>> layer = AutoregressiveSpline(3, MADE(3, 3 * 8 - 1, hidden=(32,), zero_init=True), bins=8)
        >>> z, logdet = layer(torch.randn(16, 3))      # identity at initialisation
        >>> x, inv_logdet = layer.inverse(z)           # 3 sequential rounds
    """

    def __init__(self, features: int, conditioner: MADE, *, bins: int = 8, bound: float = 3.0,
                 scale_by: int | None = None) -> None:
        super().__init__()
        features, bins, bound, scale_by = _check_layer("AutoregressiveSpline", features, 1, bins, bound,
                                                       conditioner, scale_by)
        if not isinstance(conditioner, MADE):
            raise TypeError(f"AutoregressiveSpline: conditioner must be a gencore.nn.MADE (its masks make the "
                            f"layer invertible), got {type(conditioner).__name__}")
        if conditioner.features != features or conditioner.out_per_feature != 3 * bins - 1:
            raise ValueError(f"AutoregressiveSpline: conditioner must be a MADE of {features} features with "
                             f"out_per_feature = 3 * {bins} - 1 = {3 * bins - 1}, got MADE({conditioner.features}, "
                             f"{conditioner.out_per_feature})")
        self.features, self.bins, self.bound = features, bins, float(bound)
        self.conditioner = conditioner
        self._scale = 1.0 / math.sqrt(scale_by) if scale_by else 1.0

    def extra_repr(self) -> str:
        return f"{self.features}, bins={self.bins}, bound={self.bound}"

    def spline_parameters(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """``(widths, heights, derivatives)`` for ``x``: ``(B, D, K)``, ``(B, D, K)``,
        ``(B, D, K - 1)``, element ``j``'s from the elements before it in the order."""
        h = self.conditioner(x, context)
        return _split_parameters(h.view(x.shape[0], self.features, 3 * self.bins - 1), self.bins, self._scale)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, D)`` -> ``(z, logdet)``, ``logdet: (B,)`` in nats: one pass."""
        _check_input("AutoregressiveSpline", x, self.features)
        w, h, d = self.spline_parameters(x, context)
        return rq_spline(x, w, h, d, bound=self.bound)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``z: (B, D)`` -> ``(x, logdet)`` with ``logdet`` of the inverse map: ``D`` rounds."""
        _check_input("AutoregressiveSpline", z, self.features)
        x, logdet = z, None
        for _ in range(self.features):
            w, h, d = self.spline_parameters(x, context)
            x, logdet = rq_spline(z, w, h, d, bound=self.bound, reverse=True)
        return x, logdet
