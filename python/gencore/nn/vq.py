"""Vector quantization as a layer: the bottleneck of VQ-VAE (van den Oord et al., 2017).

:class:`VectorQuantizer` replaces each vector of its input by the nearest of ``num_codes``
learned codes (:func:`gencore.ops.nearest_code`: tiled, no ``(N, K)`` distance matrix),
passes the gradient straight through to the input, and learns the codebook either by
gradient (the codebook loss) or by exponential moving averages of the vectors each code
receives (k-means in the limit; the sums are index-add sums, never a one-hot product).
Codes that stop receiving vectors are restarted from recent inputs, and the usage of the
codebook is reported as a perplexity. Under ``torch.distributed`` the EMA statistics, the
usage and the restarts are made identical on every rank, so every rank keeps the same
codebook.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gencore import distributed as gdist
from gencore import ops
from gencore._arguments import check_size

__all__ = ["VectorQuantizer", "VQOutput"]


class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns.

    Attributes:
        quantized: the input's shape ``(B, D, ...)``: each vector replaced by its code
            (cosine: the unit code), with the straight-through gradient to the input.
        indices: ``(B, ...)`` int64, the code of each vector.
        loss: 0-d, ``beta * commitment`` (+ the codebook loss without EMA): mean squared
            errors per element, to add to the model's loss.
        perplexity: 0-d, ``exp(entropy)`` of the codes' frequencies in this batch (in
            training under torch.distributed: the global batch): how many codes are in
            effective use, between 1 and ``num_codes``.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor


def _check_number(value, name, low, high=math.inf, *, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"VectorQuantizer: {name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with a straight-through gradient.

    For each vector ``x`` (the input's dim 1 at every other position): ``k = argmin_j
    |x - c_j|^2``, output ``x + sg(c_k - x)`` (the value ``c_k``; the gradient of the
    output goes to ``x`` unchanged). The loss is ``beta |x - sg(c_k)|^2`` (commitment)
    plus, without EMA, ``|sg(x) - c_k|^2`` (codebook), both means over elements.

    With ``ema_decay`` the codebook is a buffer updated in training after each forward:
    ``N_j <- d N_j + (1 - d) n_j`` and ``m_j <- d m_j + (1 - d) s_j`` with ``n_j`` the
    number and ``s_j`` the sum of the vectors assigned to code ``j`` (``index_add``), and
    ``c_j = m_j / N~_j`` with Laplace smoothing ``N~_j = (N_j + eps) / (N + K eps) N``.

    With ``restart_dead_codes``, a code whose moving-average usage (vectors per batch,
    decay ``usage_decay``) falls below ``dead_threshold`` is moved onto a randomly chosen
    vector of the current batch (torch's default generator; rank 0's batch, broadcast,
    under torch.distributed), with its usage set to the threshold: a restarted code that
    wins nothing in the next batch is restarted again.

    Args:
        num_codes: ``K``, the codebook size.
        dim: ``D``, the size of each vector (the input's dim 1).
        beta: weight of the commitment loss (0.25 in the paper).
        ema_decay: ``d`` in ``[0, 1)`` for EMA codebook updates, or ``None`` to learn the
            codebook by gradient (then it is a Parameter).
        cosine: compare directions: inputs and codes are scaled to unit length and the
            output is the unit code.
        restart_dead_codes: restart unused codes (see above).
        dead_threshold: usage (vectors per batch, moving average) below which a code is dead.
        usage_decay: decay of that moving average.
        eps: Laplace smoothing of the EMA counts.

    Shapes: ``x: (B, D, *spatial)`` -> :class:`VQOutput`. float32 or float64 (CPU), also
    float16/bfloat16 on CUDA; the codebook is kept in the module's dtype.
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25, ema_decay: float | None = 0.99,
                 cosine: bool = False, restart_dead_codes: bool = True, dead_threshold: float = 1.0,
                 usage_decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_codes = check_size(num_codes, "VectorQuantizer: num_codes")
        self.dim = check_size(dim, "VectorQuantizer: dim")
        self.beta = _check_number(beta, "beta", 0.0)
        self.ema_decay = None if ema_decay is None else _check_number(ema_decay, "ema_decay", 0.0, 1.0,
                                                                        high_open=True)
        for name, flag in (("cosine", cosine), ("restart_dead_codes", restart_dead_codes)):
            if not isinstance(flag, bool):
                raise TypeError(f"VectorQuantizer: {name} must be a bool, got {type(flag).__name__}")
        self.cosine, self.restart_dead_codes = cosine, restart_dead_codes
        self.dead_threshold = _check_number(dead_threshold, "dead_threshold", 0.0)
        self.usage_decay = _check_number(usage_decay, "usage_decay", 0.0, 1.0, high_open=True)
        self.eps = _check_number(eps, "eps", 0.0, low_open=True)
        init = torch.randn(num_codes, dim)
        if cosine:
            init = F.normalize(init, dim=1)
        if self.ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        self.register_buffer("usage", torch.ones(num_codes))

    # ---------------------------------------------------------------- forward -------------
    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"VectorQuantizer: x must be a tensor, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: x must have shape (B, {self.dim}, ...) with the code "
                             f"dimension on dim 1, got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"VectorQuantizer: x must be floating-point, got {x.dtype}")
        if x.dtype != self.codebook.dtype or x.device != self.codebook.device:
            raise ValueError(f"VectorQuantizer: x ({x.dtype}, {x.device}) must have the codebook's dtype and "
                             f"device ({self.codebook.dtype}, {self.codebook.device}): move the module with "
                             ".to(...)")
        if x.numel() == 0:
            raise ValueError(f"VectorQuantizer: x must not be empty, got shape {tuple(x.shape)}")
        return x.movedim(1, -1).reshape(-1, self.dim)

    def forward(self, x: torch.Tensor) -> VQOutput:
        flat = self._flatten(x)
        indices, sq = ops.nearest_code(flat, self.codebook.detach(), cosine=self.cosine)
        if not bool(torch.isfinite(sq).all()):
            bad = int((~torch.isfinite(sq)).sum())
            raise ValueError(f"VectorQuantizer: {bad} of the {len(sq)} input vectors have NaN or infinite "
                             "entries (or lie so far out that their distance overflows)")
        target = F.normalize(flat, dim=1) if self.cosine else flat
        # Without EMA the codebook is a Parameter that a restart below changes in place:
        # the graph reads a copy, so its saved tensors are the values this forward used.
        codes = self.codebook if self.ema_decay is not None else self.codebook.clone()
        codes = F.normalize(codes, dim=1) if self.cosine else codes
        q = codes.index_select(0, indices)
        loss = self.beta * F.mse_loss(target, q.detach())
        if self.ema_decay is None:
            loss = loss + F.mse_loss(q, target.detach())
        counts = torch.bincount(indices, minlength=self.num_codes).to(flat.dtype)
        if self.training:
            with torch.no_grad():
                self._update(target.detach(), indices, counts, gdist.is_distributed())
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())
        out = target + (q - target).detach()
        shape = (x.shape[0], *x.shape[2:])
        quantized = out.reshape(*shape, self.dim).movedim(-1, 1)
        return VQOutput(quantized, indices.reshape(shape), loss, perplexity)

    # ---------------------------------------------------------------- training updates ----
    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor, distributed: bool):
        """EMA statistics and dead-code restarts; ``counts`` becomes the global counts."""
        if distributed:
            dist.all_reduce(counts)
        if self.ema_decay is not None:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, vectors)
            if distributed:
                dist.all_reduce(sums)
            d = self.ema_decay
            self.ema_count.mul_(d).add_(counts, alpha=1 - d)
            self.ema_sum.mul_(d).add_(sums, alpha=1 - d)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
            if self.cosine:
                self.codebook.copy_(F.normalize(self.codebook, dim=1))
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.restart_dead_codes:
            self._restart(vectors, counts, distributed)

    def _restart(self, vectors: torch.Tensor, counts: torch.Tensor, distributed: bool) -> None:
        dead = (self.usage < self.dead_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:  # the same on every rank: usage is built from global counts
            return
        picks = torch.randint(0, vectors.shape[0], (dead.numel(),), device=vectors.device)
        new = vectors.index_select(0, picks)
        if distributed:
            dist.broadcast(new, src=0)
        self.codebook.index_copy_(0, dead, new.to(self.codebook.dtype))
        # A restarted code starts at the threshold: if it wins no vector in the next batch
        # (the encoder moved on) it is restarted again, on a newer vector, at once.
        self.usage.index_fill_(0, dead, self.dead_threshold)
        if self.ema_decay is not None:
            # the new code starts as a cluster of that weight at its vector
            self.ema_count.index_fill_(0, dead, self.dead_threshold)
            self.ema_sum.index_copy_(0, dead, new.to(self.ema_sum.dtype) * self.dead_threshold)

    def extra_repr(self) -> str:
        ema = "None (gradient)" if self.ema_decay is None else f"{self.ema_decay:g}"
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta:g}, ema_decay={ema}, "
                f"cosine={self.cosine}, restart_dead_codes={self.restart_dead_codes}")
