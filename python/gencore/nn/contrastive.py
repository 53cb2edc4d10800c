"""``NTXentLoss``, ``CLIPLoss`` and ``SigLIPLoss``: contrastive losses as modules over the fused
ops, exact across ranks with ``distributed=True``.

Distributed semantics (``W`` ranks, rank ``r`` holding ``n_r`` of the ``N = sum_r n_r`` pairs):
the features of all ranks are gathered with :func:`gencore.distributed.all_gather_with_grad`
and rank ``r`` computes the cross-entropy of its *own* rows only (queries) against all gathered
rows (keys) with :func:`gencore.ops.contrastive_cross_entropy`, so no rank builds more than an
``(n_r, N)`` problem and the fused op never stores even that. Rank ``r`` returns

    loss_r = W * (sum of its rows' cross-entropies) / (number of rows of the global loss)

(``= sum / (2 n)`` for equal batches ``n``), hence:

- the mean of ``loss_r`` over ranks is the single-process loss on the global batch;
- because the gather's backward sums over ranks, the gradient each rank receives for its own
  features is ``W`` times the gradient of the global loss with respect to those rows, and the
  gradient of the temperature / logit scale on rank ``r`` is ``d loss_r``; so under
  ``DistributedDataParallel``, which *averages* parameter gradients over ranks, every parameter
  gradient (encoder, temperature, logit scale) equals the single-process gradient exactly.
  (Dividing by ``W`` inside the loss, or gathering without a summing backward, are the two
  usual ways to get this wrong by a factor of ``W``.)

``SigLIPLoss`` gathers only the text features: its loss is a sum over pairs with no
normalizer, so rank ``r``'s share is its own images against every text,
:func:`gencore.ops.sigmoid_contrastive_pairs` with the positives at offset ``sum_{s<r} n_s``,
scaled the same way (``W / N`` times the sum over its ``n_r x N`` pairs).

Without an initialized process group (or with one rank, or inside
:func:`gencore.distributed.local_only`) ``distributed=True`` falls back to the single-process
op: the global batch then *is* the local batch, so the loss is still exact, and a model built
for distributed training can be evaluated in one process.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from gencore import distributed as gdist
from gencore import ops
from gencore.metrics._checks import check_bool

__all__ = ["NTXentLoss", "CLIPLoss", "SigLIPLoss"]


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], who: str) -> None:
    for t, name in zip((a, b), names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{who}: {name} must have shape (N, D), got {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{who}: {name} must be floating point, got {t.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{who}: {names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have "
                         "the same shape (N, D)")
    if a.shape[0] == 0:
        raise ValueError(f"{who}: the batch is empty (N = 0)")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"{who}: {names[0]} ({a.dtype}, {a.device}) and {names[1]} ({b.dtype}, {b.device}) "
                         "must share dtype and device")


# The modules' scales and biases are float32 parameters (or compared with one): a value
# beyond float32's range would be inf there.
_F32_MAX = torch.finfo(torch.float32).max


def _as_float(value) -> float:
    """``value`` as a float, inf for an int beyond any float, NaN for a non-number or bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _positive_finite(value, name: str, who: str) -> float:
    v = _as_float(value)
    if not (math.isfinite(v) and 0 < v <= _F32_MAX):
        raise ValueError(f"{who}: {name} must be a positive finite number (float32: at most {_F32_MAX:.4g}), "
                         f"got {value!r}")
    return v


def _finite(value, name: str, who: str) -> float:
    v = _as_float(value)
    if not (math.isfinite(v) and abs(v) <= _F32_MAX):
        raise ValueError(f"{who}: {name} must be a finite number (float32: at most {_F32_MAX:.4g} in size), "
                         f"got {value!r}")
    return v


def _check_initial_scale(init_logit_scale: float, max_logit_scale: float, who: str) -> None:
    if init_logit_scale > math.log(max_logit_scale):  # (exp of it could overflow a float: not printed)
        raise ValueError(f"{who}: exp(init_logit_scale) exceeds max_logit_scale = {max_logit_scale:.4g} (its "
                         f"gradient would be zero): init_logit_scale = {init_logit_scale:.4g} > "
                         f"ln(max_logit_scale) = {math.log(max_logit_scale):.4g}")


def _gather_pairs(a: torch.Tensor, b: torch.Tensor):
    """Gather ``a`` and ``b`` of every rank in one collective -> ``(A, B, sizes)``."""
    both, sizes = gdist.all_gather_with_grad(torch.cat([a, b], 1), return_sizes=True)
    d = a.shape[1]
    return both[:, :d], both[:, d:], sizes


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent loss of two views, in nats (mean over the ``2N`` rows).

    ``z = normalize(cat(z1, z2))``, logits ``z @ z.T / temperature``, self-similarity excluded,
    the positive of each row its other view. Single process: :func:`gencore.ops.nt_xent_loss`
    (tiled; the ``2N x 2N`` matrix is never stored).

    Args:
        temperature: positive finite; the initial value when ``learnable``.
        distributed: negatives from every rank (module docstring: loss and gradients exact).
        learnable: learn the temperature, as the parameter ``log_temperature``
            (``temperature = exp(log_temperature)``); under DDP its gradient is averaged
            over ranks like every parameter's, which is exact (module docstring).

    Shapes: ``z1, z2: (N, D)`` (the two views of the same N items, row i with row i) -> ``()``.
    With ``distributed=True`` every rank must call it (ranks may hold different N).
    """

    def __init__(self, temperature: float = 0.5, distributed: bool = False, learnable: bool = False) -> None:
        super().__init__()
        t = _positive_finite(temperature, "temperature", "NTXentLoss")
        self.distributed = check_bool(distributed, "NTXentLoss: distributed")
        self.learnable = check_bool(learnable, "NTXentLoss: learnable")
        if self.learnable:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(t)))
        else:
            self._temperature = t

    @property
    def temperature(self):
        """The temperature in use: a float, or a differentiable 0-d tensor when learnable."""
        return self.log_temperature.exp() if self.learnable else self._temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        _check_pair(z1, z2, ("z1", "z2"), "NTXentLoss")
        if not (self.distributed and gdist.is_distributed()):
            return ops.nt_xent_loss(z1, z2, temperature=self.temperature)
        n = z1.shape[0]
        q = F.normalize(torch.cat([z1, z2]), dim=1)  # this rank's 2n query rows, view 1 then view 2
        # Keys in rank order, each rank's block [view 1; view 2]: a permutation of the
        # single-process order cat(all z1, all z2), which leaves every row's loss unchanged.
        keys, sizes = gdist.all_gather_with_grad(q, return_sizes=True)
        w, r = len(sizes), gdist.rank()
        base = sum(sizes[:r])
        local = torch.arange(2 * n, device=q.device)
        exclude = base + local
        positive = base + torch.cat([local[n:], local[:n]])
        rows = ops.contrastive_cross_entropy(q, keys, 1.0 / self.temperature, positive, exclude)
        return rows.sum() * (w / keys.shape[0])

    def extra_repr(self) -> str:
        t = f"{self.temperature.item():.4g}" if self.learnable else f"{self.temperature:.4g}"
        return f"temperature={t}, distributed={self.distributed}, learnable={self.learnable}"


class CLIPLoss(nn.Module):
    """CLIP's symmetric contrastive loss with a learnable logit scale, in nats.

    ``logits = s * image_features @ text_features.T`` with ``s = min(exp(log_logit_scale),
    max_logit_scale)`` (CLIP's convention: the scale is learned in log space and clamped at 100,
    beyond which its gradient is zero); ``loss = (CE(logits, arange N) + CE(logits.T, arange N)) / 2``.
    Features are used as given: normalize them first, as CLIP does. Single process:
    :func:`gencore.ops.clip_loss` (tiled; the ``N x N`` matrix is never stored).

    Args:
        distributed: negatives from every rank (module docstring: loss and gradients exact).
        init_logit_scale: initial ``log_logit_scale`` (log space): ``ln(1 / 0.07)``, CLIP's.
        max_logit_scale: the clamp on ``s`` (linear space), positive finite, at least
            ``exp(init_logit_scale)``.

    Shapes: ``image_features, text_features: (N, D)``, row i paired with row i -> ``()``.
    With ``distributed=True`` every rank must call it (ranks may hold different N).
    """

    def __init__(self, distributed: bool = False, init_logit_scale: float = math.log(1 / 0.07),
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        init_logit_scale = _finite(init_logit_scale, "init_logit_scale", "CLIPLoss")
        self.max_logit_scale = _positive_finite(max_logit_scale, "max_logit_scale", "CLIPLoss")
        _check_initial_scale(init_logit_scale, self.max_logit_scale, "CLIPLoss")
        self.distributed = check_bool(distributed, "CLIPLoss: distributed")
        self.log_logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale in use, ``min(exp(log_logit_scale), max_logit_scale)``: a differentiable 0-d tensor."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        _check_pair(image_features, text_features, ("image_features", "text_features"), "CLIPLoss")
        scale = self.logit_scale
        if not (self.distributed and gdist.is_distributed()):
            return ops.clip_loss(image_features, text_features, scale)
        a, b = image_features, text_features
        all_a, all_b, sizes = _gather_pairs(a, b)
        w, r = len(sizes), gdist.rank()
        positive = sum(sizes[:r]) + torch.arange(a.shape[0], device=a.device)
        rows_a = ops.contrastive_cross_entropy(a, all_b, scale, positive)  # image -> every text
        rows_b = ops.contrastive_cross_entropy(b, all_a, scale, positive)  # text -> every image
        return (rows_a.sum() + rows_b.sum()) * (w / (2 * all_a.shape[0]))

    def extra_repr(self) -> str:
        return (f"distributed={self.distributed}, logit_scale={self.logit_scale.item():.4g}, "
                f"max_logit_scale={self.max_logit_scale:.4g}")


class SigLIPLoss(nn.Module):
    """SigLIP's sigmoid loss with a learnable logit scale and bias, in nats per image.

    ``L = t * image_features @ text_features.T + b`` with ``t = min(exp(log_logit_scale),
    max_logit_scale)``; every (image, text) pair is its own binary problem, positive on the
    diagonal: ``loss = -(1/N) sum_ij log sigmoid(z_ij L_ij)``, ``z_ii = 1``, ``z_ij = -1``
    (Zhai et al. 2023). The initialisation is the paper's: ``t = 10`` (``log_logit_scale =
    ln 10``) and ``b = -10``, which starts the loss near its value for the N^2 - N negatives
    instead of letting them swamp the N positives. Features are used as given: normalize
    them first. Single process: :func:`gencore.ops.sigmoid_contrastive_loss` (tiled; the
    ``N x N`` matrix is never stored).

    Distributed (``distributed=True``): the text features of every rank are all-gathered
    (:func:`gencore.distributed.all_gather_with_grad`, whose backward sums over ranks) and
    rank ``r`` scores its own images against all of them; loss and every gradient equal
    one process on the global batch (module docstring). An all-gather rather than the
    paper's ring exchange of text chunks: the gathered features are ``N x D`` numbers, small
    beside the activations that produced them, the gather with a summing backward is the one
    the CLIP and NT-Xent losses already use (and test), and one collective replaces
    ``W - 1`` dependent point-to-point steps. A ring would keep only ``2 N / W`` text rows
    per rank; at ``D = 512`` float32 the whole gathered batch is 2 MiB per 1024 pairs.

    Args:
        distributed: negatives from every rank.
        init_logit_scale: initial ``log_logit_scale`` (log space): ``ln 10``.
        init_logit_bias: initial ``logit_bias``: ``-10``.
        max_logit_scale: the clamp on ``t`` (linear space), positive finite, at least
            ``exp(init_logit_scale)``.

    Shapes: ``image_features, text_features: (N, D)``, row i paired with row i -> ``()``.
    With ``distributed=True`` every rank must call it (ranks may hold different N).
    """

    def __init__(self, distributed: bool = False, init_logit_scale: float = math.log(10.0),
                 init_logit_bias: float = -10.0, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        init_logit_scale = _finite(init_logit_scale, "init_logit_scale", "SigLIPLoss")
        init_logit_bias = _finite(init_logit_bias, "init_logit_bias", "SigLIPLoss")
        self.max_logit_scale = _positive_finite(max_logit_scale, "max_logit_scale", "SigLIPLoss")
        _check_initial_scale(init_logit_scale, self.max_logit_scale, "SigLIPLoss")
        self.distributed = check_bool(distributed, "SigLIPLoss: distributed")
        self.log_logit_scale = nn.Parameter(torch.tensor(init_logit_scale))
        self.logit_bias = nn.Parameter(torch.tensor(init_logit_bias))

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale in use, ``min(exp(log_logit_scale), max_logit_scale)``: a differentiable 0-d tensor."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        _check_pair(image_features, text_features, ("image_features", "text_features"), "SigLIPLoss")
        scale, bias = self.logit_scale, self.logit_bias
        if not (self.distributed and gdist.is_distributed()):
            return ops.sigmoid_contrastive_loss(image_features, text_features, scale, bias)
        all_text, sizes = gdist.all_gather_with_grad(text_features, return_sizes=True)
        w, r = len(sizes), gdist.rank()
        n = image_features.shape[0]
        # (1/n) * the sum over this rank's n x N pairs; positives at (i, base + i).
        part = ops.sigmoid_contrastive_pairs(image_features, all_text, scale, bias, positive_offset=sum(sizes[:r]))
        return part * (w * n / all_text.shape[0])

    def extra_repr(self) -> str:
        return (f"distributed={self.distributed}, logit_scale={self.logit_scale.item():.4g}, "
                f"logit_bias={self.logit_bias.item():.4g}, max_logit_scale={self.max_logit_scale:.4g}")
