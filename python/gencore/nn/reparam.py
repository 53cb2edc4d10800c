"""``Reparameterize``: the VAE's randomized encoder output as a module over the fused op."""

from __future__ import annotations

import torch
from torch import nn

from gencore.ops import reparameterize

__all__ = ["Reparameterize"]


class Reparameterize(nn.Module):
    """Samples ``z = mu + exp(logvar / 2) * eps`` with the KL to N(0, I) fused in.

    A thin module over :func:`gencore.ops.reparameterize` (Philox noise drawn in the
    kernel, regenerated in backward). In eval mode with ``deterministic_eval=True`` it
    returns ``mu`` itself (and the same KL), the usual choice for reconstructions.

    Shapes: ``mu, logvar: (B, ...)`` -> ``z: (B, ...)`` or ``(k, B, ...)`` with
    ``n_samples=k``; ``kl: (B,)`` in nats; ``log_q: (B,)`` or ``(k, B)`` in nats.
    """

    def __init__(self, deterministic_eval: bool = False) -> None:
        super().__init__()
        self.deterministic_eval = bool(deterministic_eval)

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, *, n_samples: int | None = None,
                generator: torch.Generator | None = None, return_log_q: bool = False):
        if self.deterministic_eval and not self.training:
            if return_log_q:
                raise ValueError("Reparameterize: log_q is undefined for the deterministic eval output")
            _, kl = reparameterize(mu, logvar, generator=generator)
            z = mu if n_samples is None else mu.expand(n_samples, *mu.shape)
            return z, kl
        return reparameterize(mu, logvar, n_samples=n_samples, generator=generator, return_log_q=return_log_q)

    def extra_repr(self) -> str:
        return f"deterministic_eval={self.deterministic_eval}"
