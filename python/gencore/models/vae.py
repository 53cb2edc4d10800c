"""Variational auto-encoder: a randomized encoder, the reparameterization trick and the ELBO.

The lecture's VAE: an encoder ``q(z | x) = N(mu(x), diag exp(logvar(x)))``, a decoder
``p(x | z)`` and the prior ``p(z) = N(0, I)``, trained by maximising the evidence lower bound

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x),

whose KL term is closed-form and fused with the sampling in :func:`gencore.ops.reparameterize`.
With a weight ``beta`` on the KL, the loss ``distortion + beta * rate`` is the lecture's
``L1 + lambda * L2`` (``rate`` = KL in nats, ``distortion`` = -E_q log p(x|z) in nats).

Units: every log-likelihood is in nats per example, and refers to the density of ``x`` as
given. For the ``"categorical"`` decoder (the 17 levels of the digits), ``x`` is the
dequantized data ``(level + u) / levels`` in [0, 1): its density is ``levels^D`` times the
probability of the levels, so the numbers are comparable with flows, probabilistic PCA and
mixtures fitted to the same dequantized data (``gencore.metrics.bits_per_dim`` converts).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gencore._arguments import check_shape, check_size, check_widths, plain_config
from gencore.models._common import (batch_starts, categorical_log_px, categorical_mean, check_context, check_like_model,
                                    flat_batch, require_int, require_nonneg_real, require_real)
from gencore.nn import MLP, Reparameterize

__all__ = ["VAE", "LIKELIHOODS"]

LIKELIHOODS = ("gaussian", "gaussian_learned", "bernoulli", "categorical")
_LOG_2PI = math.log(2 * math.pi)


class VAE(nn.Module):
    """Gaussian-encoder VAE for vectors ``(B, features)`` (images are flattened).

    Args:
        features: data size ``D`` (an int, or an event shape such as ``[1, 8, 8]``: inputs
            of that shape are flattened and outputs are returned in it).
        latent_dim: size ``r`` of ``z``.
        hidden: hidden layer sizes of the encoder MLP (the decoder mirrors them).
        likelihood: the decoder ``p(x | z)``:
            ``"gaussian"``: N(mean(z), sigma^2 I) with a fixed ``sigma``;
            ``"gaussian_learned"``: N(mean(z), diag sigma(z)^2), per-pixel learned scales;
            ``"bernoulli"``: Bernoulli(sigmoid(logits(z))) per pixel, for data in [0, 1]
            (binary cross-entropy; a proper likelihood only for binary data);
            ``"categorical"``: a categorical over ``levels`` values per pixel, for data
            dequantized as ``(level + u) / levels``.
            The inputs of the ``"bernoulli"`` and ``"categorical"`` decoders must lie in
            ``[0, 1]`` (``ValueError`` otherwise, e.g. for raw levels; for ``"categorical"``
            a value of exactly 1, which float rounding of ``(levels - 1 + u) / levels`` can
            produce, is read as the top level); NaN or infinite inputs raise ``ValueError``
            for every likelihood.
        sigma: the fixed standard deviation of ``"gaussian"``.
        levels: number of levels of ``"categorical"`` (17 for the digits).
        context_features: size of a conditioning vector fed to encoder and decoder
            (0: unconditional): class one-hots, or the first half of a digit.
        beta: default KL weight of :meth:`loss`.
    """

    def __init__(self, features, latent_dim: int = 16, hidden: Sequence[int] = (256, 256), *,
                 likelihood: str = "categorical", sigma: float = 0.1, levels: int = 17,
                 context_features: int = 0, beta: float = 1.0) -> None:
        super().__init__()
        shape = list(check_shape(features, "VAE: features", any_rank=True))
        latent_dim = check_size(latent_dim, "VAE: latent_dim")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"VAE: likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        require_real(sigma, "sigma", "VAE")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"VAE: sigma must be a positive finite number, got {sigma!r}")
        levels = check_size(levels, "VAE: levels", 2)
        context_features = check_size(context_features, "VAE: context_features", 0)
        _check_beta(beta)
        hidden = check_widths(hidden, "VAE: hidden", allow_empty=True)
        self.event_shape = tuple(shape)
        self.features = math.prod(shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.sigma = float(sigma)
        self.levels = levels
        self.context_features = context_features
        self.beta = float(beta)
        per_pixel = {"gaussian": 1, "gaussian_learned": 2, "bernoulli": 1, "categorical": levels}[likelihood]
        self.encoder = MLP(self.features + context_features, 2 * latent_dim, hidden)
        self.decoder = MLP(latent_dim + context_features, self.features * per_pixel, hidden[::-1])
        self.reparameterize = Reparameterize()
        self.config = plain_config({
            "features": shape[0] if isinstance(features, numbers.Integral) else shape, "latent_dim": latent_dim,
            "hidden": hidden, "likelihood": likelihood, "sigma": self.sigma, "levels": levels,
            "context_features": context_features, "beta": self.beta})

    # ---- input handling ----------------------------------------------------------------

    def _flat(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        xf = flat_batch(x, self.event_shape, "VAE", name, module=self.encoder)
        if self.likelihood in ("categorical", "bernoulli") and ((x < 0) | (x > 1)).any():
            hint = (f"dequantized data (level + u) / levels, levels = {self.levels}; raw levels must be "
                    "dequantized first (gencore.data.dequantize)" if self.likelihood == "categorical"
                    else "probabilities or binary pixels")
            raise ValueError(f"VAE: likelihood={self.likelihood!r} needs {name} in [0, 1] ({hint}); "
                             f"got values in [{x.min().item():.6g}, {x.max().item():.6g}]")
        return xf

    def _context(self, context: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.context_features:
            if context is None:
                raise ValueError(f"VAE: this model is conditional: pass context of shape (B, {self.context_features})")
            check_context(context, n, self.context_features, "VAE")
            return context
        if context is not None:
            raise ValueError("VAE: this model is unconditional; context must be None")
        return None

    # ---- encoder, decoder, likelihood -------------------------------------------------

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, D)`` -> ``(mu, logvar)``, each ``(B, r)``: the parameters of ``q(z | x)``."""
        xf = self._flat(x)
        h = self.encoder(xf, self._context(context, xf.shape[0]))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``z: (..., r)`` -> the decoder's parameters ``(..., D, k)``: k = 1 (mean or
        logits), 2 (mean, log-sigma) or ``levels`` (logits)."""
        if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point:
            raise TypeError(f"VAE: z must be a floating-point tensor, got "
                            f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
        if z.dim() == 0 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"VAE: z must have shape (..., {self.latent_dim}) (the latent size), got {tuple(z.shape)}")
        check_like_model(z, self.decoder, "VAE", "z")
        lead = z.shape[:-1]
        zf = z.reshape(-1, self.latent_dim)
        if self.context_features:
            c = self._context(context, lead[-1] if lead else 1)
            c = c.expand(*lead, self.context_features).reshape(-1, self.context_features)
        else:
            c = self._context(context, zf.shape[0])
        out = self.decoder(zf, c)
        return out.reshape(*lead, self.features, -1)

    def _log_px(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over pixels; ``x: (B, D)``, ``params: (..., B, D, k)`` -> ``(..., B)``."""
        if self.likelihood == "gaussian":
            r = (x - params[..., 0]) / self.sigma
            return (-0.5 * r.pow(2) - math.log(self.sigma) - 0.5 * _LOG_2PI).sum(-1)
        if self.likelihood == "gaussian_learned":
            mean, log_sigma = params[..., 0], params[..., 1].clamp(-7.0, 5.0)
            r = (x - mean) * torch.exp(-log_sigma)
            return (-0.5 * r.pow(2) - log_sigma - 0.5 * _LOG_2PI).sum(-1)
        if self.likelihood == "bernoulli":
            logits = params[..., 0]
            return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        # categorical over the levels of the dequantized x, plus the dequantization volume
        return categorical_log_px(x, params, self.levels).sum(-1)

    def _mean(self, params: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """The decoder's mean (or a sample with ``sample=True``) in data space, ``(..., D)``."""
        if self.likelihood in ("gaussian", "gaussian_learned"):
            mean = params[..., 0]
            if not sample:
                return mean
            std = self.sigma if self.likelihood == "gaussian" else params[..., 1].clamp(-7.0, 5.0).exp()
            return mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        if self.likelihood == "bernoulli":
            p = torch.sigmoid(params[..., 0])
            if not sample:
                return p
            return torch.bernoulli(p, generator=generator)
        return categorical_mean(params, self.levels, sample, generator)

    def _shape_out(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], *self.event_shape)

    # ---- objectives -------------------------------------------------------------------

    def rate_distortion(self, x: torch.Tensor, context: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example ``(rate, distortion)`` in nats, each ``(B,)``: ``rate = KL(q(z|x) || p(z))``
        (closed form), ``distortion = -log p(x | z)`` at one reparameterized sample ``z``."""
        xf = self._flat(x)
        mu, logvar = self.encode(xf, context)
        z, kl = self.reparameterize(mu, logvar, generator=generator)
        return kl, -self._log_px(xf, self.decode(z, context))

    def elbo(self, x: torch.Tensor, context: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The evidence lower bound per example, ``(B,)`` in nats (one-sample estimate)."""
        rate, distortion = self.rate_distortion(x, context, generator)
        return -(distortion + rate)

    def loss(self, batch, beta: float | None = None) -> torch.Tensor:
        """Mean of ``distortion + beta * rate`` over the batch (``x`` or ``(x, context)``), in
        nats per example; with ``beta = 1`` the negative ELBO."""
        if isinstance(batch, (tuple, list)):
            if len(batch) not in (1, 2):
                raise TypeError(f"VAE.loss: batch must be x or (x, context), got a {type(batch).__name__} of "
                                f"{len(batch)} items")
            x, context = batch[0], batch[1] if len(batch) == 2 else None
        else:
            x, context = batch, None
        beta = self.beta if beta is None else _check_beta(beta)
        rate, distortion = self.rate_distortion(x, context)
        return (distortion + beta * rate).mean()

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, n_samples: int = 1000, context: torch.Tensor | None = None,
                       *, generator: torch.Generator | None = None, batch_size: int = 16) -> torch.Tensor:
        """Importance-weighted estimate of ``log p(x)`` per example (``(B,)``, nats):

            log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

        a lower bound in expectation that tightens to ``log p(x)`` as K grows (K = 1 is the
        ELBO). ``log q`` comes from the fused op's ``eps`` (accurate for small variances).
        Examples are processed ``batch_size`` at a time (K decodes each).
        """
        if require_int(n_samples, "n_samples", "VAE.log_likelihood") < 1:
            raise ValueError(f"VAE.log_likelihood: n_samples must be a positive int, got {n_samples!r}")
        xf = self._flat(x)
        ctx = self._context(context, xf.shape[0])
        out = []
        for i in batch_starts(xf, batch_size, "VAE.log_likelihood"):
            xb = xf[i:i + batch_size]
            cb = ctx[i:i + batch_size] if ctx is not None else None
            mu, logvar = self.encode(xb, cb)
            z, _, log_q = self.reparameterize(mu, logvar, n_samples=n_samples, generator=generator,
                                              return_log_q=True)
            log_pz = (-0.5 * z.pow(2) - 0.5 * _LOG_2PI).sum(-1)
            log_px = self._log_px(xb, self.decode(z, cb))
            log_w = log_px + log_pz - log_q  # (K, b)
            out.append(torch.logsumexp(log_w, dim=0) - math.log(n_samples))
        return torch.cat(out)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None, n_samples: int = 1000) -> torch.Tensor:
        """Alias of :meth:`log_likelihood` (nats per example), for code written for flows."""
        return self.log_likelihood(x, n_samples, context)

    # ---- generation -------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None,
               *, mean: bool = True) -> torch.Tensor:
        """``n`` samples ``(n, *event_shape)``: ``z ~ N(0, I)`` decoded to the decoder's mean
        (``mean=True``, the usual picture) or to a draw from ``p(x | z)``."""
        if require_int(n, "n", "VAE.sample") < 1:
            raise ValueError(f"VAE.sample: n must be a positive int, got {n!r}")
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self._shape_out(self._mean(self.decode(z, context), sample=not mean, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the encoder mean: ``x -> E[x | z = mu(x)]``, shape of ``x``."""
        mu, _ = self.encode(x, context)
        return self._mean(self.decode(mu, context)).reshape(x.shape)

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8,
                    context: torch.Tensor | None = None) -> torch.Tensor:
        """Decodes ``steps`` points on the line between the encodings (means) of two examples
        ``x_a, x_b: (D,)`` or ``(1, D)``; returns ``(steps, *event_shape)``."""
        if require_int(steps, "steps", "VAE.interpolate") < 2:
            raise ValueError(f"VAE.interpolate: steps must be an int >= 2, got {steps!r}")
        for name, v in (("x_a", x_a), ("x_b", x_b)):
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"VAE.interpolate: {name} must be a tensor (one example), got {type(v).__name__}")
            if v.numel() != self.features:
                raise ValueError(f"VAE.interpolate: {name} must be one example of {self.features} values, "
                                 f"got shape {tuple(v.shape)}")
        xs = torch.stack([x_a.reshape(-1), x_b.reshape(-1)])
        mu, _ = self.encode(xs, None if context is None else context.reshape(1, -1).expand(2, -1))
        t = torch.linspace(0, 1, steps, dtype=mu.dtype, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        c = None if context is None else context.reshape(1, -1).expand(steps, -1)
        return self._shape_out(self._mean(self.decode(z, c)))


def _check_beta(beta) -> float:
    return require_nonneg_real(beta, "beta", "VAE")
