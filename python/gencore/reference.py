"""Pure-PyTorch references of every gencore op.

These are the executable definitions the fused kernels are tested against, and the
eager / ``torch.compile`` baselines of the benchmarks. They are written the way a
user would write them in plain PyTorch, with no fusion tricks, and for that reason check
none of their arguments: a bad input fails inside PyTorch as the plain code would. The ops
of :mod:`gencore.ops`, which compute the same values, check and name every argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["affine_coupling", "masked_affine_coupling", "reparameterize", "clip_loss", "nt_xent_loss", "contrastive_cross_entropy",
           "sigmoid_contrastive_loss", "nearest_code", "rq_spline"]


def _per_example_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first, shape ``(B,)``; also for an empty batch
    (``reshape(B, -1)`` is ambiguous when ``B == 0``)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(1)


def affine_coupling(
    x: torch.Tensor,
    log_scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    clamp: float = 2.0,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`gencore.ops.affine_coupling`.

    Args:
        x, log_scale, shift: ``(B, ...)``, same shape.
        clamp: soft clamp ``s = clamp * tanh(log_scale / clamp)``; ``0`` disables it.
        reverse: apply the inverse map.

    Returns:
        ``y`` of ``x``'s shape and ``logdet`` of shape ``(B,)`` in nats.
    """
    s = clamp * torch.tanh(log_scale / clamp) if clamp > 0 else log_scale
    if reverse:
        y = (x - shift) * torch.exp(-s)
        logdet = -_per_example_sum(s)
    else:
        y = x * torch.exp(s) + shift
        logdet = _per_example_sum(s)
    return y, logdet


def mask_parts(channels: int, mask: str, swap: bool) -> tuple[slice, slice]:
    """``(identity, transformed)`` channel slices of a ``"half"`` or ``"alternate"`` mask."""
    if mask == "half":
        cut = channels // 2
        parts = (slice(0, cut), slice(cut, channels))
    elif mask == "alternate":
        parts = (slice(0, channels, 2), slice(1, channels, 2))
    else:
        raise ValueError(f"mask must be 'half' or 'alternate', got {mask!r}")
    return (parts[1], parts[0]) if swap else parts


def transformed_count(channels: int, mask: str, swap: bool) -> int:
    """``n_b``: how many of ``channels`` a ``"half"`` / ``"alternate"`` mask transforms
    (the length of :func:`mask_parts`' second slice, as arithmetic: it works on symbolic sizes)."""
    if mask == "half":
        return channels // 2 if swap else channels - channels // 2
    return (channels + 1) // 2 if swap else channels // 2


def masked_affine_coupling(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    mask: str = "alternate",
    swap: bool = False,
    clamp: float = 2.0,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`gencore.ops.masked_affine_coupling`: slice, transform, merge.

    The merge is one ``cat`` (half) or ``stack`` (alternate, even C): writing both parts
    into an empty output would cost two copies forward and, through autograd's
    CopySlices, a clone of the whole gradient per part backward.
    """
    ident, trans = mask_parts(x.shape[1], mask, swap)
    x_a, x_b = x[:, ident], x[:, trans]
    log_scale, shift = params.chunk(2, dim=1)
    y_b, logdet = affine_coupling(x_b, log_scale, shift, clamp=clamp, reverse=reverse)
    first, second = (y_b, x_a) if swap else (x_a, y_b)
    if mask == "half":
        return torch.cat((first, second), dim=1), logdet
    if first.shape[1] == second.shape[1]:  # alternate, even C: interleave the halves
        return torch.stack((first, second), dim=2).flatten(1, 2), logdet
    y = torch.empty_like(x)
    y[:, ident] = x_a
    y[:, trans] = y_b
    return y, logdet


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
    prior_mu: torch.Tensor | None = None,
    prior_logvar: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`gencore.ops.reparameterize`: ``randn_like`` noise (or the given
    ``eps``), the sample, and the closed-form KL to the prior per example, in nats: to
    N(0, I), or to ``N(prior_mu, exp(prior_logvar))`` (a missing one of the two is 0).

    Args:
        mu, logvar: ``(B, ...)``.
        n_samples: None, or ``k`` samples in a new leading dimension.
        eps: the standard normals to use, of ``z``'s shape (tests pass gencore's).
        prior_mu, prior_logvar: ``(B, ...)`` or None.

    Returns:
        ``z`` of shape ``mu.shape`` or ``(k, *mu.shape)``, ``kl`` of shape ``(B,)``.
    """
    shape = mu.shape if n_samples is None else (n_samples, *mu.shape)
    if eps is None:
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    if prior_mu is None and prior_logvar is None:
        kl = 0.5 * _per_example_sum(mu.pow(2) + logvar.exp() - 1 - logvar)
    else:
        pm = torch.zeros_like(mu) if prior_mu is None else prior_mu
        plv = torch.zeros_like(mu) if prior_logvar is None else prior_logvar
        kl = 0.5 * _per_example_sum((logvar - plv).exp() + (mu - pm).pow(2) * (-plv).exp() - 1 - (logvar - plv))
    return z, kl


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """Reference of :func:`gencore.ops.clip_loss`, materializing the ``(N, N)`` logits.

    ``logits = logit_scale * image_features @ text_features.T``; the loss is the mean of the
    row and column cross-entropies with the positives on the diagonal, in nats.
    """
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def sigmoid_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, logit_bias, *,
                             positive_offset: int = 0) -> torch.Tensor:
    """Reference of :func:`gencore.ops.sigmoid_contrastive_loss` (SigLIP) and of
    :func:`gencore.ops.sigmoid_contrastive_pairs`, materializing the ``(n, m)`` logits.

    ``logits = logit_scale * image_features @ text_features.T + logit_bias``; labels ``z = +1``
    on the pairs ``(i, i + positive_offset)``, ``-1`` elsewhere;
    ``loss = -sum(logsigmoid(z * logits)) / n``, in nats per image.
    """
    logits = logit_scale * image_features @ text_features.T + logit_bias
    n, m = logits.shape
    rows = torch.arange(n, device=logits.device)
    cols = rows + positive_offset
    keep = (cols >= 0) & (cols < m)
    z = -torch.ones_like(logits)
    z[rows[keep], cols[keep]] = 1
    return -F.logsigmoid(z * logits).sum() / n


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature=0.5) -> torch.Tensor:
    """Reference of :func:`gencore.ops.nt_xent_loss` (SimCLR), materializing ``(2N, 2N)``.

    ``z = normalize(cat(z1, z2))``, logits ``z @ z.T / temperature`` with the diagonal
    removed; the positive of row ``i`` is its other view; mean over the ``2N`` rows, in nats.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, labels)


def contrastive_cross_entropy(query: torch.Tensor, keys: torch.Tensor, scale, positive: torch.Tensor,
                              exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of :func:`gencore.ops.contrastive_cross_entropy`, materializing ``(n, m)``.

    ``loss[i] = logsumexp_{j != exclude[i]}(scale * q_i . k_j) - scale * q_i . k_{positive[i]}``
    (``exclude[i] = -1``: nothing excluded), shape ``(n,)``, in nats.
    """
    logits = scale * query @ keys.T
    if exclude is not None:
        cols = torch.arange(keys.shape[0], device=keys.device)
        logits = logits.masked_fill(cols[None, :] == exclude[:, None], float("-inf"))
    return torch.logsumexp(logits, 1) - logits.gather(1, positive[:, None]).squeeze(1)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, cosine: bool = False):
    """Reference of :func:`gencore.ops.nearest_code`, materializing the ``(N, K)`` distances.

    ``|x_i|^2 + |c_j|^2 - 2 x_i . c_j``, its ``argmin`` over ``j`` (the first on ties) and
    the exact ``|x_i - c_idx|^2``; ``cosine``: both sides ``F.normalize``d first. (Unlike
    the op, ``argmin`` treats a NaN distance as the minimum.)
    """
    if cosine:
        x, codebook = F.normalize(x, dim=1), F.normalize(codebook, dim=1)
    dist = x.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * x @ codebook.T
    indices = dist.argmin(1)
    return indices, (x - codebook[indices]).pow(2).sum(1)


#: Durkan et al. (2019)'s constants of the rational-quadratic spline: the smallest bin width
#: and height (as fractions of the interval ``[-bound, bound]``) and the smallest derivative.
RQ_MIN_BIN_WIDTH = 1e-3
RQ_MIN_BIN_HEIGHT = 1e-3
RQ_MIN_DERIVATIVE = 1e-3


def _clamp_keep_grad(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``t`` clamped to ``[lo, hi]`` in value, with the identity's gradient: the clamps of
    the spline only absorb rounding (or select the tails, where the result is masked), and
    the gradient of ``clamp`` at its bounds differs between torch releases."""
    return t + (t.clamp(lo, hi) - t).detach()


def rq_spline_knots(widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, bound: float):
    """The knots of the monotonic rational-quadratic spline from its unnormalized parameters.

    ``widths, heights: (..., K)`` -> bin widths ``min_w + (1 - K min_w) softmax(widths)`` (and
    heights alike) scaled to ``[-bound, bound]``; ``derivatives: (..., K - 1)`` -> interior knot
    derivatives ``min_d + softplus(derivatives)``, the two boundary derivatives fixed at 1 so
    that the spline joins its identity tails with a continuous derivative.

    Returns ``(xk, yk, dk)``, each ``(..., K + 1)``: the knots' inputs, outputs and derivatives
    (``xk[..., 0] = yk[..., 0] = -bound`` and ``xk[..., K] = yk[..., K] = bound`` exactly).
    """
    k = widths.shape[-1]

    def cumulative(u: torch.Tensor, minimum: float) -> torch.Tensor:
        p = minimum + (1 - minimum * k) * torch.softmax(u, dim=-1)
        c = F.pad(torch.cumsum(p, dim=-1), (1, 0))
        c = 2 * bound * c - bound
        return torch.cat([torch.full_like(c[..., :1], -bound), c[..., 1:-1], torch.full_like(c[..., :1], bound)], -1)

    one = derivatives.new_ones((*derivatives.shape[:-1], 1))  # (also for K = 1: no interior knot)
    dk = torch.cat([one, RQ_MIN_DERIVATIVE + F.softplus(derivatives), one], dim=-1)
    return cumulative(widths, RQ_MIN_BIN_WIDTH), cumulative(heights, RQ_MIN_BIN_HEIGHT), dk


def rq_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, *,
              bound: float = 3.0, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of the rational-quadratic spline transform (Durkan et al. 2019, "Neural Spline
    Flows"), elementwise, with identity tails outside ``[-bound, bound]``.

    In bin ``k`` (knots ``x_k, y_k``, width ``w``, height ``h``, slope ``s = h / w``, knot
    derivatives ``d_k, d_{k+1}``), with ``t = (x - x_k) / w`` in ``[0, 1]``:

        y = y_k + h (s t^2 + d_k t (1 - t)) / (s + (d_{k+1} + d_k - 2 s) t (1 - t))
        dy/dx = s^2 (d_{k+1} t^2 + 2 s t (1 - t) + d_k (1 - t)^2) / (s + (d_{k+1} + d_k - 2 s) t (1 - t))^2

    The inverse solves the quadratic ``a t^2 + b t + c = 0`` (``a = h (s - d_k) + (y - y_k) g``,
    ``b = h d_k - (y - y_k) g``, ``c = -s (y - y_k)``, ``g = d_{k+1} + d_k - 2 s``) by the root
    ``t = 2c / (-b - sqrt(b^2 - 4ac))``, which has no cancellation (``b^2 - 4ac >= 0`` for a
    monotonic spline; rounding below 0 is clamped to 0). This is the materialized form:
    it builds several ``(..., K)`` temporaries, as the peer libraries do. It is the
    definition the fused op :func:`gencore.ops.rq_spline` is tested against.

    Precision: the round trip is as good as the spline's conditioning allows. Where the
    spline is nearly flat (slope dy/dx down to 1e-7 with extreme parameters), one rounding
    step of ``y`` spans ``eps / slope`` in ``x``, so no inverse in the same precision
    recovers ``x`` better; ``|x - inverse(forward(x))| * dy/dx`` stays below 1e-12 (float64)
    and 1e-4 (float32) in tests/ops/test_rq_spline_reference.py.

    Args:
        x: ``(B, ...)`` inputs (outputs of the forward map when ``reverse``).
        widths, heights: ``(B, ..., K)`` unnormalized bin widths and heights (softmax).
        derivatives: ``(B, ..., K - 1)`` unnormalized interior derivatives (softplus).
        bound: the spline acts on ``[-bound, bound]``; identity (log-det 0) outside.
        reverse: the inverse map.

    Returns:
        ``y`` of ``x``'s shape and ``logdet = sum log|dy/dx|`` over every dimension but the
        first, ``(B,)``, in nats (of the inverse map when ``reverse``).
    """
    xk, yk, dk = rq_spline_knots(widths, heights, derivatives, bound)
    inside = (x >= -bound) & (x <= bound)
    xc = _clamp_keep_grad(x, -bound, bound)
    knots = yk if reverse else xk
    # the bin of each element: the last knot at or below it (the top knot belongs to the last bin)
    idx = (torch.searchsorted(knots[..., 1:-1].contiguous(), xc[..., None].contiguous(), right=True))

    def pick(t: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return t.gather(-1, idx + offset).squeeze(-1)

    x0, w = pick(xk), pick(xk, 1) - pick(xk)
    y0, h = pick(yk), pick(yk, 1) - pick(yk)
    d0, d1 = pick(dk), pick(dk, 1)
    s = h / w
    g = d1 + d0 - 2 * s
    if reverse:
        dy = xc - y0
        a = h * (s - d0) + dy * g
        b = h * d0 - dy * g
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp(min=0)
        t = _clamp_keep_grad(2 * c / (-b - torch.sqrt(disc)), 0, 1)
        out = x0 + t * w
    else:
        t = _clamp_keep_grad((xc - x0) / w, 0, 1)
        out = y0 + h * (s * t * t + d0 * t * (1 - t)) / (s + g * t * (1 - t))
    tt = t * (1 - t)
    log_deriv = (2 * torch.log(s) + torch.log(d1 * t * t + 2 * s * tt + d0 * (1 - t) ** 2)
                 - 2 * torch.log(s + g * tt))
    if reverse:
        log_deriv = -log_deriv
    y = torch.where(inside, out, x)
    return y, _per_example_sum(torch.where(inside, log_deriv, torch.zeros_like(log_deriv)))
