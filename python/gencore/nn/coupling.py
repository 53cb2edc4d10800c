"""Affine coupling layer: split, conditioner, fused affine op, merge."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from gencore._arguments import check_size
from gencore.ops.coupling import affine_coupling, masked_affine_coupling
from gencore.reference import mask_parts, transformed_count

__all__ = ["AffineCoupling"]

_MASKS = ("half", "alternate", "checkerboard", "channel")


class AffineCoupling(nn.Module):
    """RealNVP affine coupling layer over :func:`gencore.ops.affine_coupling`.

    The input is split by ``mask`` into an identity part ``x_a`` and a transformed part
    ``x_b``. The conditioner sees only ``x_a`` (and the optional context), so the map is
    invertible whatever the conditioner is, and its Jacobian is triangular:

    * forward:  ``y_a = x_a``, ``y_b = x_b * exp(s) + t``, ``(log_scale, t) = conditioner(x_a)``
    * inverse:  ``x_b = (y_b - t) * exp(-s)``, with ``s = clamp * tanh(log_scale / clamp)``.

    Masks (the split is along dim 1, the feature or channel dimension):

    * ``"half"``: first ``n // 2`` entries are ``x_a``. Inputs ``(B, D)`` or ``(B, C, H, W)``.
    * ``"alternate"``: even indices are ``x_a``. Inputs ``(B, D)`` or ``(B, C, H, W)``.
    * ``"channel"``: ``"half"`` over the channels of ``(B, C, H, W)`` images.
    * ``"checkerboard"``: pixels with ``(h + w)`` even are ``x_a``, for ``(B, C, H, W)``.

    ``swap=True`` exchanges the roles of the two parts; alternate it between stacked
    layers so every dimension gets transformed.

    Conditioner contract: called as ``conditioner(x_a)`` or ``conditioner(x_a, context)``.
    For ``half``/``alternate``/``channel`` it receives ``x_a`` of shape ``(B, n_a, ...)``
    and returns ``(B, 2 * n_b, ...)`` (split into ``log_scale``, ``shift`` along dim 1) or
    a ``(log_scale, shift)`` pair of shape ``(B, n_b, ...)``. For ``checkerboard`` it
    receives the masked image ``x * mask`` of shape ``(B, C, H, W)`` and returns
    ``(B, 2C, H, W)`` or a pair of ``(B, C, H, W)``; the masked pixels are left unchanged.

    Args:
        features_or_channels: ``D`` for vectors, ``C`` for images.
        conditioner: any ``nn.Module`` following the contract above.
        mask: one of ``"half"``, ``"alternate"``, ``"checkerboard"``, ``"channel"``.
        clamp: soft clamp of the log-scale, ``>= 0`` (``0``: none).
        swap: transform the other part.

    Shapes:
        ``forward(x) -> (y, logdet)``, ``inverse(y) -> (x, logdet)``: ``x, y`` of shape
        ``(B, D)`` or ``(B, C, H, W)``, ``logdet`` of shape ``(B,)`` in nats.

    Example::

        >>> layer = AffineCoupling(6, MLP(3, 6, hidden=(32,)), mask="half")
        >>> y, logdet = layer(torch.randn(8, 6))
        >>> x, inv_logdet = layer.inverse(y)      # x == input, inv_logdet == -logdet
    """

    # The fused ops; a pure-PyTorch baseline swaps in gencore.reference's. The masked op
    # does the split, the transform and the merge ("half", "alternate", "channel") in one
    # pass; the elementwise one serves the checkerboard mask.
    coupling_fn = staticmethod(affine_coupling)
    masked_coupling_fn = staticmethod(masked_affine_coupling)

    def __init__(
        self,
        features_or_channels: int,
        conditioner: nn.Module,
        *,
        mask: str = "half",
        clamp: float = 2.0,
        swap: bool = False,
    ) -> None:
        super().__init__()
        if mask not in _MASKS:
            raise ValueError(f"AffineCoupling: mask must be one of {_MASKS}, got {mask!r}")
        n = check_size(features_or_channels, "AffineCoupling: features_or_channels")
        if mask in ("half", "alternate", "channel") and n < 2:
            raise ValueError(f"AffineCoupling: mask={mask!r} needs at least 2 features/channels, got {n}")
        if isinstance(clamp, bool):
            raise TypeError(f"AffineCoupling: clamp must be a number, got bool {clamp!r}")
        if not isinstance(clamp, numbers.Real) or not clamp >= 0 or clamp == float("inf"):
            raise ValueError(f"AffineCoupling: clamp must be a finite number >= 0, got {clamp!r}")
        if not isinstance(conditioner, nn.Module):
            raise TypeError(f"AffineCoupling: conditioner must be an nn.Module, got {type(conditioner).__name__}")
        self.features = n
        self.conditioner = conditioner
        self.mask = mask
        self.clamp = float(clamp)
        self.swap = bool(swap)
        # The op's mask name; the identity part (what the conditioner sees) as a slice.
        self._op_mask = "alternate" if mask == "alternate" else "half"
        if mask != "checkerboard":
            self._id = mask_parts(n, self._op_mask, self.swap)[0]
            self._n_b = transformed_count(n, self._op_mask, self.swap)

    def extra_repr(self) -> str:
        return f"{self.features}, mask={self.mask!r}, clamp={self.clamp}, swap={self.swap}"

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, D)`` or ``(B, C, H, W)`` -> ``(y, logdet)``, ``logdet: (B,)`` in nats."""
        return self._apply_coupling(x, context, reverse=False)

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y: (B, D)`` or ``(B, C, H, W)`` -> ``(x, logdet)`` with ``logdet`` of the inverse map."""
        return self._apply_coupling(y, context, reverse=True)

    def rebuild_and_backward(self, y, context, grad_y, grad_logdet, params):
        """One step of :class:`gencore.models.Flow`'s ``memory_efficient`` backward.

        Given this layer's output ``y`` and the gradients of its outputs, rebuild the input
        ``x`` and return ``(x, dL/dx, [dL/dp for p in params])``. The identity part of
        ``y`` is the conditioner's input, so the conditioner runs once (with autograd):
        its output serves both the reconstruction and the backward, where the generic
        path (inverse, then forward again) runs it twice. ``None`` for the checkerboard
        mask: the caller falls back to the generic path.
        """
        if self.mask == "checkerboard":
            return None
        kw = dict(mask=self._op_mask, swap=self.swap, clamp=self.clamp)
        with torch.enable_grad():
            x_a = y[:, self._id].detach().requires_grad_()
            h = self._conditioner(x_a, context, self._n_b)
            with torch.no_grad():
                x = self.masked_coupling_fn(y, h, reverse=True, **kw)[0]
            x_in, h_in = x.requires_grad_(), h.detach().requires_grad_()
            out = self.masked_coupling_fn(x_in, h_in, **kw)
            grad_x, grad_h = torch.autograd.grad(out, (x_in, h_in), (grad_y, grad_logdet))
            g = torch.autograd.grad(h, [x_a, *params], grad_h, allow_unused=True)
        if g[0] is not None:  # None: a conditioner that ignores x_a (e.g. context only)
            with torch.no_grad():
                grad_x[:, self._id] += g[0]
        return x.detach(), grad_x, list(g[1:])

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"AffineCoupling: expected a tensor, got {type(x).__name__}")
        image = self.mask in ("checkerboard", "channel")
        if (image and x.dim() != 4) or (not image and x.dim() not in (2, 4)):
            want = "(B, C, H, W)" if image else "(B, D) or (B, C, H, W)"
            raise ValueError(f"AffineCoupling(mask={self.mask!r}): input must be {want}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.features:
            raise ValueError(
                f"AffineCoupling: input has {x.shape[1]} features/channels in dim 1, expected {self.features}"
            )
        if x.shape[0] == 0:
            raise ValueError("AffineCoupling: empty batch (B = 0)")

    def _conditioner(self, x_a: torch.Tensor, context: torch.Tensor | None, n_out: int) -> torch.Tensor:
        """The conditioner's output as one ``(B, 2 * n_out, ...)`` tensor (log_scale, shift)."""
        h = self.conditioner(x_a) if context is None else self.conditioner(x_a, context)
        if isinstance(h, (tuple, list)):
            h = torch.cat(tuple(h), dim=1)
        want = (x_a.shape[0], 2 * n_out, *x_a.shape[2:])
        if tuple(h.shape) != want:
            raise ValueError(
                f"AffineCoupling: conditioner must return {want} (log_scale and shift stacked "
                f"on dim 1) or a (log_scale, shift) pair of {(want[0], n_out, *want[2:])}, "
                f"got {tuple(h.shape)}"
            )
        return h

    def _apply_coupling(self, x, context, reverse):
        self._check_input(x)
        if self.mask == "checkerboard":
            h, w = x.shape[-2:]
            parity = (torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)) % 2
            keep = (parity == (1 if self.swap else 0)).to(x.dtype)  # 1 on the identity pixels
            log_scale, shift = self._conditioner(x * keep, context, self.features).chunk(2, dim=1)
            free = 1.0 - keep
            # Identity pixels get s = 0 and shift = 0: y = x there, and no log-det.
            return self.coupling_fn(
                x, log_scale * free, shift * free, clamp=self.clamp, reverse=reverse
            )
        x_a = x[:, self._id]
        if self.mask == "alternate":
            # One gather: a stride-2 x_a costs a first Linear a copy forward and another
            # for its weight gradient.
            x_a = x_a.contiguous()
        params = self._conditioner(x_a, context, self._n_b)
        return self.masked_coupling_fn(x, params, mask=self._op_mask, swap=self.swap,
                                       clamp=self.clamp, reverse=reverse)
