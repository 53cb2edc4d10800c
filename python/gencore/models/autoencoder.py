"""Deterministic auto-encoders: an encoder ``E: R^D -> R^r`` and a decoder ``D: R^r -> R^D``
with ``r`` much smaller than ``D``, trained to minimise the reconstruction error
``||x - D(E(x))||^2``.

With no activation the model is linear and its optimum is PCA's subspace
(:class:`gencore.models.PCA` is the closed-form solution); non-linear encoders and decoders
can reconstruct better than any linear map of the same latent size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gencore._arguments import check_choice, check_size, check_widths, plain_config
from gencore.models._common import check_like_model, config_features, event_shape
from gencore.nn import MLP

__all__ = ["Autoencoder"]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh,
               "leaky_relu": nn.LeakyReLU, "none": nn.Identity}
KINDS = ("mlp", "conv")


def _event_shape(features) -> tuple[int, ...]:
    return event_shape(features, "Autoencoder")


def _conv_encoder(shape, widths, latent_dim, act) -> nn.Sequential:
    c, h, w = shape
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), act()]
        c, h, w = width, h // 2, w // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, latent_dim))


def _conv_decoder(shape, widths, latent_dim, act) -> nn.Sequential:
    c, h, w = shape
    s = 2 ** len(widths)
    layers: list[nn.Module] = [nn.Linear(latent_dim, widths[-1] * (h // s) * (w // s)), act(),
                               nn.Unflatten(1, (widths[-1], h // s, w // s))]
    outs = [*reversed(widths[:-1]), c]
    for i, (cin, cout) in enumerate(zip(reversed(widths), outs)):
        layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
        if i < len(widths) - 1:
            layers.append(act())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Auto-encoder for vectors ``(B, D)`` (MLP) or images ``(B, C, H, W)`` (MLP or small CNN).

    ``kind="mlp"``: encoder ``MLP(D -> hidden... -> r)``, decoder ``MLP(r -> reversed(hidden)... -> D)``
    (images are flattened and reshaped back). ``kind="conv"``: per entry of ``hidden`` a 3x3
    stride-2 convolution (halving H and W), then a linear map to ``r``; the decoder mirrors it
    with a linear map and 4x4 stride-2 transposed convolutions. Both decoders end linearly
    (no output activation), so ``activation="none"`` gives a linear auto-encoder, whose optimum
    is PCA.

    Args:
        features: ``D``, or the image shape ``(C, H, W)`` (``kind="conv"`` needs an image
            shape with H and W divisible by ``2 ** len(hidden)``).
        latent_dim: ``r``, the size of the code ``E(x): (B, r)``.
        hidden: hidden layer sizes (mlp) or channel widths (conv); ``()`` for mlp gives a
            single linear encoder and decoder.
        kind: ``"mlp"`` or ``"conv"``.
        activation: one of ``"relu"``, ``"gelu"``, ``"silu"``, ``"elu"``, ``"tanh"``,
            ``"leaky_relu"``, ``"none"`` (or None: linear).

    Units: :meth:`reconstruction_error` is the squared error summed over all ``D`` values of
    an example (squared units of ``x``), and :meth:`loss` its mean over the batch: the same
    unit as :meth:`gencore.models.PCA.reconstruction_error`.
    """

    def __init__(self, features, latent_dim: int, hidden: Sequence[int] = (256, 128), *, kind: str = "mlp",
                 activation: str | None = "relu") -> None:
        super().__init__()
        shape = _event_shape(features)
        latent_dim = check_size(latent_dim, "Autoencoder: latent_dim")
        hidden = tuple(check_widths(hidden, "Autoencoder: hidden", allow_empty=True))
        check_choice(kind, KINDS, "Autoencoder: kind")
        act_name = "none" if activation is None else activation
        if not isinstance(act_name, str) or act_name not in ACTIVATIONS:
            raise (ValueError if isinstance(act_name, str) else TypeError)(
                f"Autoencoder: activation must be one of {sorted(ACTIVATIONS)} or None, got {activation!r}")
        act = ACTIVATIONS[act_name]
        d = math.prod(shape)
        if kind == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), MLP(d, latent_dim, hidden, activation=act))
            self.decoder = nn.Sequential(MLP(latent_dim, d, tuple(reversed(hidden)), activation=act),
                                         nn.Unflatten(1, shape))
        else:
            if len(shape) != 3:
                raise ValueError(f"Autoencoder: kind='conv' needs an image shape (C, H, W), got features={features!r}")
            if not hidden:
                raise ValueError("Autoencoder: kind='conv' needs at least one channel width in hidden")
            s = 2 ** len(hidden)
            if shape[1] % s or shape[2] % s:
                raise ValueError(f"Autoencoder: kind='conv' with {len(hidden)} stride-2 stages needs H and W "
                                 f"divisible by {s}, got {shape}")
            self.encoder = _conv_encoder(shape, hidden, latent_dim, act)
            self.decoder = _conv_decoder(shape, hidden, latent_dim, act)
        self.event_shape = shape
        self.latent_dim = latent_dim
        self.config = plain_config({"features": config_features(shape), "latent_dim": latent_dim,
                                    "hidden": list(hidden), "kind": kind, "activation": act_name})

    def _check(self, t: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Autoencoder: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != shape:
            raise ValueError(f"Autoencoder: {name} must have shape (B, {', '.join(map(str, shape))}), "
                             f"got {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError(f"Autoencoder: {name} is an empty batch")
        if not t.dtype.is_floating_point:
            raise TypeError(f"Autoencoder: {name} must be floating point, got {t.dtype}")
        check_like_model(t, self, "Autoencoder", name)
        if not torch.isfinite(t).all():
            raise ValueError(f"Autoencoder: {name} contains NaN or infinite values")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``: ``x: (B, *features) -> z: (B, r)``."""
        self._check(x, self.event_shape, "x")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``D(z)``: ``z: (B, r) -> (B, *features)``."""
        self._check(z, (self.latent_dim,), "z")
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``D(E(x))``, the shape of ``x``."""
        self._check(x, self.event_shape, "x")
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`reconstruct`."""
        return self.reconstruct(x)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """``||x - D(E(x))||^2`` per example, summed over all non-batch dims: ``(B,)``."""
        return (self.reconstruct(x) - x).square().flatten(1).sum(1)

    def loss(self, batch) -> torch.Tensor:
        """Mean over the batch of :meth:`reconstruction_error` (``batch``: ``x`` or ``(x, y)``)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.reconstruction_error(x).mean()
