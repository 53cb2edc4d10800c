"""Hierarchical VAE: several stochastic layers, inferred top-down against a learned prior.

The lecture's second fix for the blurry VAE: instead of one ``z ~ N(0, I)``, a chain of
latent layers ``z_L -> ... -> z_1 -> x`` in which every layer but the top has a *learned*
prior ``p(z_l | z_{l+1}) = N(prior_mu, diag e^prior_logvar)``:

    p(x, z) = p(x | z_1) p(z_1 | z_2) ... p(z_{L-1} | z_L) p(z_L),   p(z_L) = N(0, I).

Inference is top-down, as in LVAE and NVAE: a deterministic bottom-up pass reads ``x`` once;
the posterior of the top layer comes from it alone; every lower layer's posterior is
computed *relative to its prior* (NVAE's residual form),

    q(z_l | x, z_{>l}) = N(prior_mu + dmu, e^{prior_logvar + dlogvar}),

with ``(dmu, dlogvar)`` from the bottom-up features and the top-down state. A layer the data
does not need then sits at ``dmu = dlogvar = 0`` (its KL is exactly 0), which is what
posterior collapse looks like here: :meth:`HierarchicalVAE.kl_per_layer` and
:meth:`HierarchicalVAE.active_units` report it per layer.

Every layer's sample and its ``KL(q || p)`` come from one call of the fused
:func:`gencore.ops.reparameterize` with ``prior_mu`` / ``prior_logvar``: the KL of two
Gaussians in closed form, in the pass that draws ``z``, with gradients to both.

Numerics (what makes hierarchical VAEs NaN in practice): every log-variance is soft-clamped
to ``[-LOGVAR_BOUND, LOGVAR_BOUND]`` with ``b * tanh(v / b)`` (smooth, gradient ~1 in the
useful range), and the MLPs use batch normalisation by default (``batch_norm=True``), which
on the digits also trains to a better likelihood (bench/results/hvae-quality.md).

Units: nats per example; ``x`` is the dequantized digits ``(level + u) / levels`` in [0, 1]
and the decoder a categorical over the levels, as :class:`gencore.models.VAE`'s, so the
numbers compare with the VAE's, the flows' and probabilistic PCA's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gencore._arguments import _plain, check_size, check_widths, plain_config
from gencore.models._common import (categorical_log_px, categorical_mean, config_features, event_shape, flat_batch,
                                    in_eval, require_int, require_nonneg_real)
from gencore.ops import reparameterize

__all__ = ["HierarchicalVAE"]

_LOG_2PI = math.log(2 * math.pi)
#: The most stochastic layers a model (or a checkpoint's config) may ask for.
MAX_LAYERS = 64
#: Log-variances are soft-clamped to +-LOGVAR_BOUND (standard deviations e^-4 .. e^4).
LOGVAR_BOUND = 8.0


def _soft_clamp(v: torch.Tensor, bound: float = LOGVAR_BOUND) -> torch.Tensor:
    return bound * torch.tanh(v / bound)


def _mlp(sizes: Sequence[int], batch_norm: bool) -> nn.Sequential:
    """``sizes[0] -> ... -> sizes[-1]``: Linear (BatchNorm) ReLU between, a plain Linear last."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if batch_norm else []), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def _gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, e^logvar)`` summed over the last dimension (nats)."""
    return (-0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI)).sum(-1)


class HierarchicalVAE(nn.Module):
    """A VAE with ``L = len(latent_dims)`` stochastic layers, top-down inference and a
    categorical decoder, for vectors ``(B, features)`` or images (flattened).

    Args:
        features: data size ``D`` (an int, or an image shape ``(C, H, W)``: inputs of that
            shape are flattened and outputs are returned in it).
        latent_dims: sizes of ``z_1`` (next to the data) ... ``z_L`` (the top), ``L >= 1``;
            e.g. ``(16, 8)``. ``L = 1`` is a single-layer VAE with this class's networks.
        hidden: widths of the bottom-up encoder's hidden layers; the decoder mirrors them;
            the top-down prior and posterior networks have one hidden layer of
            ``hidden[-1]``.
        levels: levels of the categorical decoder (17 for the digits).
        batch_norm: batch normalisation in the hidden layers (train mode: batch
            statistics; eval mode: running averages). :meth:`log_likelihood`,
            :meth:`active_units`, :meth:`sample` and :meth:`reconstruct` always run in eval
            mode; :meth:`elbo`, :meth:`terms` and :meth:`loss` in the model's mode.
        free_bits: if > 0, the training loss charges each layer at least ``free_bits``
            nats of KL (its batch mean), a guard against posterior collapse (Kingma et al.
            2016); the ELBO and the likelihood are never changed by it.
        beta: weight of the KL in :meth:`loss` (1: the negative ELBO).

    Shapes: ``x: (B, D)`` or ``(B, *event_shape)``; ``z_l: (B, latent_dims[l])``; every
    per-example quantity is ``(B,)`` in nats.
    """

    def __init__(self, features, latent_dims: Sequence[int] = (16, 8), hidden: Sequence[int] = (256, 256), *,
                 levels: int = 17, batch_norm: bool = True, free_bits: float = 0.0, beta: float = 1.0) -> None:
        super().__init__()
        owner = "HierarchicalVAE"
        shape = event_shape(features, owner)
        latent_dims = _plain(latent_dims)  # an array or tensor of sizes: a list
        if isinstance(latent_dims, str) or not isinstance(latent_dims, Sequence):
            raise TypeError(f"{owner}: latent_dims must be a sequence of ints (z_1 first), got {latent_dims!r}")
        if not latent_dims:
            raise ValueError(f"{owner}: latent_dims must be one or more positive ints, got {latent_dims!r}")
        latent_dims = [check_size(r, f"{owner}: latent_dims[{i}]") for i, r in enumerate(latent_dims)]
        if len(latent_dims) > MAX_LAYERS:
            raise ValueError(f"{owner}: at most {MAX_LAYERS} stochastic layers, got {len(latent_dims)}")
        hidden = check_widths(hidden, f"{owner}: hidden", allow_int=False)
        levels = check_size(levels, f"{owner}: levels", 2)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"{owner}: batch_norm must be a bool, got {batch_norm!r}")
        free_bits = require_nonneg_real(free_bits, "free_bits", owner)
        beta = require_nonneg_real(beta, "beta", owner)
        self.event_shape = shape
        self.batch_norm = batch_norm
        self.features = math.prod(shape)
        self.latent_dims = tuple(latent_dims)
        self.levels = levels
        self.free_bits = free_bits
        self.beta = beta
        width = hidden[-1]
        # bottom-up: x -> h (deterministic features read by every layer's posterior)
        self.encoder = nn.Sequential(_mlp([self.features, *hidden], batch_norm), nn.ReLU())
        top = latent_dims[-1]
        self.top_posterior = nn.Linear(width, 2 * top)
        # top-down, for l = L-1 .. 1 (index l-1): z_{l+1} -> state -> prior; [h, state] -> residual posterior
        self.td_state = nn.ModuleList(_mlp([latent_dims[l + 1], width, width], batch_norm)
                                      for l in range(len(latent_dims) - 1))
        self.td_prior = nn.ModuleList(nn.Linear(width, 2 * latent_dims[l]) for l in range(len(latent_dims) - 1))
        self.td_posterior = nn.ModuleList(_mlp([2 * width, width, 2 * latent_dims[l]], batch_norm)
                                          for l in range(len(latent_dims) - 1))
        for head in self.td_posterior:  # start each residual posterior at its prior
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.decoder = _mlp([latent_dims[0], *hidden[::-1], self.features * levels], batch_norm)
        self.config = plain_config({"features": config_features(shape),
                                    "latent_dims": list(latent_dims), "hidden": hidden, "levels": levels,
                                    "batch_norm": batch_norm, "free_bits": free_bits, "beta": beta})

    @property
    def n_layers(self) -> int:
        return len(self.latent_dims)

    # ---- input handling ----------------------------------------------------------------

    def _flat(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        owner = type(self).__name__
        xf = flat_batch(x, self.event_shape, owner, name, module=self)
        if ((xf < 0) | (xf > 1)).any():
            raise ValueError(f"{owner}: {name} must be dequantized data (level + u) / levels in [0, 1], levels = "
                             f"{self.levels} (gencore.data.dequantize); got values in "
                             f"[{xf.min().item():.6g}, {xf.max().item():.6g}]")
        return xf

    # ---- the two passes -----------------------------------------------------------------

    def _prior_step(self, l: int, z_above: torch.Tensor):
        """Layer ``l`` (0-based, below the top): ``z_{l+1} -> (state, prior_mu, prior_logvar,
        the prior's log-variance before the clamp)``."""
        state = torch.relu(self.td_state[l](z_above))
        pm, raw = self.td_prior[l](state).chunk(2, dim=-1)
        return state, pm, _soft_clamp(raw), raw

    def _posterior_step(self, l: int, h: torch.Tensor, state: torch.Tensor, pm: torch.Tensor, raw: torch.Tensor):
        """The residual posterior: clamped after the sum, so that ``dmu = dlogvar = 0`` is the
        prior itself (KL exactly 0)."""
        dmu, dlv = self.td_posterior[l](torch.cat([h, state], dim=-1)).chunk(2, dim=-1)
        return pm + dmu, _soft_clamp(raw + dlv)

    def _infer(self, xf: torch.Tensor, *, n_samples: int | None = None, generator=None, mean: bool = False):
        """Top-down inference. Returns ``z_1`` and, per layer from the top, ``(kl, log_q,
        log_p)``: ``kl`` (rows,) of the fused op; with ``n_samples`` (IWAE) ``log_q`` and
        ``log_p`` of the samples, rows = ``n_samples * B`` (sample-major). ``mean=True``
        follows the posterior means (no sampling; for reconstructions and active units)
        and also returns, per layer (``z_1`` first), the posterior mean minus the prior
        mean (the top layer's prior mean is 0)."""
        if self.training and self.batch_norm and xf.shape[0] < 2:
            raise ValueError(f"{type(self).__name__}: a batch of {xf.shape[0]} row(s) in training mode; batch "
                             f"normalisation (batch_norm=True) needs at least 2 rows for its statistics: pass a "
                             f"larger batch, or call .eval() first")
        h = self.encoder(xf)
        mu, logvar = self.top_posterior(h).chunk(2, dim=-1)
        logvar = _soft_clamp(logvar)
        terms, means = [], [mu]
        iw = n_samples is not None
        if mean:
            z = mu
            terms.append((reparameterize(mu, logvar, generator=generator)[1], None, None))
        elif iw:
            z, kl, log_q = reparameterize(mu, logvar, n_samples=n_samples, generator=generator, return_log_q=True)
            z = z.reshape(-1, z.shape[-1])
            log_p = (-0.5 * (z.pow(2) + _LOG_2PI)).sum(-1)
            terms.append((kl, log_q.reshape(-1), log_p))
            h = h.repeat(n_samples, 1)
        else:
            z, kl = reparameterize(mu, logvar, generator=generator)
            terms.append((kl, None, None))
        for l in reversed(range(self.n_layers - 1)):
            state, pm, plv, raw = self._prior_step(l, z)
            mu, logvar = self._posterior_step(l, h, state, pm, raw)
            if mean:
                kl = reparameterize(mu, logvar, prior_mu=pm, prior_logvar=plv, generator=generator)[1]
                z = mu
                means.append(mu - pm)
                terms.append((kl, None, None))
            elif iw:
                z, kl, log_q = reparameterize(mu, logvar, prior_mu=pm, prior_logvar=plv, generator=generator,
                                              return_log_q=True)
                terms.append((kl, log_q, _gaussian_log_density(z, pm, plv)))
            else:
                z, kl = reparameterize(mu, logvar, prior_mu=pm, prior_logvar=plv, generator=generator)
                terms.append((kl, None, None))
        return (z, terms, means[::-1]) if mean else (z, terms)

    def _logits(self, z1: torch.Tensor) -> torch.Tensor:
        return self.decoder(z1).reshape(*z1.shape[:-1], self.features, self.levels)

    def _log_px(self, xf: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return categorical_log_px(xf, logits, self.levels).sum(-1)

    def _shape_out(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], *self.event_shape)

    # ---- objectives ---------------------------------------------------------------------

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One-sample terms of the ELBO, in nats: ``kl`` ``(B, L)`` (column ``l`` is
        ``KL(q(z_{l+1} | x, z_{>l+1}) || p(z_{l+1} | z_{>l+1}))``, ``z_1`` first),
        ``rate`` ``(B,)`` (their sum), ``distortion`` ``(B,)`` (``-log p(x | z_1)``)."""
        xf = self._flat(x)
        z1, terms = self._infer(xf, generator=generator)
        kl = torch.stack([t[0] for t in terms[::-1]], dim=1)
        return {"kl": kl, "rate": kl.sum(1), "distortion": -self._log_px(xf, self._logits(z1))}

    def rate_distortion(self, x: torch.Tensor, context: None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example ``(rate, distortion)`` in nats, each ``(B,)`` (as :meth:`gencore.models.VAE.rate_distortion`;
        ``rate`` sums the layers' KLs). ``context`` must be None (unconditional model)."""
        _no_context(context)
        t = self.terms(x, generator)
        return t["rate"], t["distortion"]

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The evidence lower bound per example, ``(B,)`` in nats (one-sample estimate)."""
        rate, distortion = self.rate_distortion(x, generator=generator)
        return -(distortion + rate)

    def loss(self, batch, beta: float | None = None) -> torch.Tensor:
        """Mean over the batch of ``distortion + beta * sum_l max(KL_l, free_bits)`` in nats
        (the per-layer floor on the batch mean of each KL; without free bits and with
        ``beta = 1``, the negative ELBO)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        beta = self.beta if beta is None else require_nonneg_real(beta, "beta", "HierarchicalVAE.loss")
        t = self.terms(x)
        kl = t["kl"].mean(0)
        if self.free_bits > 0:
            kl = kl.clamp(min=self.free_bits)
        return t["distortion"].mean() + beta * kl.sum()

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, n_samples: int = 1000, context: None = None, *,
                       generator: torch.Generator | None = None, batch_size: int = 16) -> torch.Tensor:
        """Importance-weighted estimate of ``log p(x)`` per example (``(B,)``, nats), with
        ``K = n_samples`` joint samples of all layers from the top-down posterior:

            log (1/K) sum_k p(x | z_1^k) prod_l p(z_l^k | z_{l+1}^k) / q(z_l^k | x, z_{l+1}^k).

        A lower bound in expectation that tightens to ``log p(x)`` as K grows. ``log q`` of
        each layer comes from the fused op's ``eps``. Runs in eval mode (batch normalisation
        with its running statistics; the model's mode is restored after); ``batch_size``
        examples are processed at a time (``K`` decodes each)."""
        if require_int(n_samples, "n_samples", "HierarchicalVAE.log_likelihood") < 1:
            raise ValueError(f"HierarchicalVAE.log_likelihood: n_samples must be a positive int, got {n_samples!r}")
        if require_int(batch_size, "batch_size", "HierarchicalVAE.log_likelihood") < 1:
            raise ValueError(f"HierarchicalVAE.log_likelihood: batch_size must be a positive int, got {batch_size!r}")
        _no_context(context)
        xf = self._flat(x)
        return in_eval(self, lambda: self._iw(xf, n_samples, generator, batch_size))

    def _iw(self, xf: torch.Tensor, n_samples: int, generator, batch_size: int) -> torch.Tensor:
        out = []
        for i in range(0, xf.shape[0], batch_size):
            xb = xf[i:i + batch_size]
            z1, terms = self._infer(xb, n_samples=n_samples, generator=generator)
            log_w = self._log_px(xb.repeat(n_samples, 1), self._logits(z1))
            for _, log_q, log_p in terms:
                log_w = log_w + log_p - log_q
            out.append(torch.logsumexp(log_w.reshape(n_samples, -1), dim=0) - math.log(n_samples))
        return torch.cat(out)

    def log_prob(self, x: torch.Tensor, n_samples: int = 1000) -> torch.Tensor:
        """Alias of :meth:`log_likelihood` (nats per example)."""
        return self.log_likelihood(x, n_samples)

    # ---- diagnostics: what each layer carries -------------------------------------------

    @torch.no_grad()
    def kl_per_layer(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``KL(q || p)`` of each layer, ``(B, L)`` in nats, ``z_1`` first (one sample of the
        layers above each). A column near 0 is a collapsed layer."""
        return self.terms(x, generator)["kl"]

    @torch.no_grad()
    def active_units(self, x: torch.Tensor, threshold: float = 0.01) -> list[int]:
        """Active units per layer (``z_1`` first): coordinates whose posterior mean, minus
        the prior's, varies across the examples ``x``: ``Var_x (E_q[z_l] - E_p[z_l | z_{l+1}])
        > threshold`` (Burda et al. 2016's count, measured against the learned prior so that a
        layer that only copies its prior counts 0), following the posterior means top-down.
        Needs at least 2 examples."""
        xf = self._flat(x)
        if xf.shape[0] < 2:
            raise ValueError("HierarchicalVAE.active_units: needs at least 2 examples")
        _, _, means = in_eval(self, lambda: self._infer(xf, mean=True))
        return [int((m.var(0) > threshold).sum()) for m in means]

    # ---- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, context: None = None, *,
               mean: bool = True) -> torch.Tensor:
        """``n`` samples ``(n, *event_shape)``: ``z_L ~ N(0, I)``, then each ``z_l`` from its
        learned prior, decoded to the decoder's mean (``mean=True``) or a draw of ``p(x | z_1)``."""
        if require_int(n, "n", "HierarchicalVAE.sample") < 1:
            raise ValueError(f"HierarchicalVAE.sample: n must be a positive int, got {n!r}")
        _no_context(context)
        p = next(self.parameters())

        def normal(shape):
            return torch.randn(shape, generator=generator, dtype=p.dtype, device="cpu").to(p.device)

        def top_down():
            z = normal((n, self.latent_dims[-1]))
            for l in reversed(range(self.n_layers - 1)):
                _, pm, plv, _ = self._prior_step(l, z)
                z = pm + torch.exp(0.5 * plv) * normal(pm.shape)
            return self._logits(z)

        logits = in_eval(self, top_down)
        return self._shape_out(categorical_mean(logits, self.levels, not mean, generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, context: None = None) -> torch.Tensor:
        """Decoder mean at the posterior means (top-down): ``x -> E[x | z_1 = mu_1(x)]``, shape of ``x``."""
        _no_context(context)
        logits = in_eval(self, lambda: self._logits(self._infer(self._flat(x), mean=True)[0]))
        return categorical_mean(logits, self.levels).reshape(x.shape)


def _no_context(context) -> None:
    if context is not None:
        raise ValueError("HierarchicalVAE: the model is unconditional; context must be None")
