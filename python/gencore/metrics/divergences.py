"""Divergences between distributions (the lecture's digression 2): TV, KL, f-divergences,
and the closed-form KL between Gaussians. All results are in nats (natural log).

Discrete distributions are probability vectors along the last dimension; leading
dimensions broadcast, so a batch of pairs is one call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from gencore.metrics._checks import as_tensor, broadcast_pair, check_nonempty, check_probabilities

__all__ = ["total_variation", "kl_divergence", "f_divergence", "gaussian_kl", "F_DIVERGENCES"]


def _pq(p, q):
    p, q = as_tensor(p, "p"), as_tensor(q, "q")
    check_probabilities(p, "p")
    check_probabilities(q, "q")
    return broadcast_pair(p, q)


def total_variation(p, q) -> torch.Tensor:
    """Total variation distance ``TV(P, Q) = 1/2 * sum_k |p_k - q_k|``, in ``[0, 1]``.

    Args:
        p, q: probability vectors ``(..., K)`` (non-negative, summing to 1).

    Returns:
        ``(...)``: the largest difference ``|P(A) - Q(A)|`` over events ``A``.
    """
    p, q = _pq(p, q)
    return 0.5 * (p - q).abs().sum(-1)


def _kl(p, q):
    # xlogy(0, .) = 0 handles p = 0; xlogy(p > 0, 0) = -inf makes KL = +inf where q = 0 < p.
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def kl_divergence(p, q) -> torch.Tensor:
    """Kullback-Leibler divergence ``KL(P || Q) = sum_k p_k log(p_k / q_k)`` in nats.

    Terms with ``p_k = 0`` are 0; a term with ``q_k = 0 < p_k`` makes the result ``+inf``.

    Args:
        p, q: probability vectors ``(..., K)``.

    Returns:
        ``(...)``, non-negative.
    """
    p, q = _pq(p, q)
    return _kl(p, q)


def _hellinger(p, q):
    return 0.5 * (p.sqrt() - q.sqrt()).pow(2).sum(-1)


def _js(p, q):
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _chi2(p, q):
    d = (p - q).pow(2)
    safe_q = torch.where(q > 0, q, torch.ones_like(q))
    terms = torch.where(q > 0, d / safe_q, torch.where(p > 0, math.inf, 0.0))
    return terms.sum(-1)


F_DIVERGENCES: dict[str, tuple[str, Callable]] = {
    "kl": ("f(t) = t log t: KL(P || Q)", _kl),
    "reverse_kl": ("f(t) = -log t: KL(Q || P)", lambda p, q: _kl(q, p)),
    "tv": ("f(t) = |t - 1| / 2: total variation", lambda p, q: 0.5 * (p - q).abs().sum(-1)),
    "hellinger": ("f(t) = (sqrt(t) - 1)^2 / 2: squared Hellinger distance, in [0, 1]", _hellinger),
    "js": ("f(t) = (t log t - (1 + t) log((1 + t) / 2)) / 2: Jensen-Shannon, in [0, ln 2]", _js),
    "chi2": ("f(t) = (t - 1)^2: Pearson chi-squared", _chi2),
}


def f_divergence(p, q, f: str | Callable = "kl", *, f_slope_at_infinity: float = math.inf) -> torch.Tensor:
    """f-divergence ``D_f(P || Q) = sum_k q_k f(p_k / q_k)`` for convex ``f`` with ``f(1) = 0``.

    Args:
        p, q: probability vectors ``(..., K)``.
        f: one of ``"kl"``, ``"reverse_kl"``, ``"tv"``, ``"hellinger"``, ``"js"``, ``"chi2"``
            (see ``F_DIVERGENCES`` for each generator; computed in closed forms that handle
            zeros), or a callable ``f(t)`` acting elementwise on a tensor.
        f_slope_at_infinity: for a callable ``f``, ``lim_{t -> inf} f(t) / t``: the weight of
            outcomes with ``q_k = 0 < p_k`` (each contributes ``p_k`` times it). The default
            ``inf`` is right for every ``f`` that grows faster than linearly.

    Returns:
        ``(...)`` in nats.
    """
    p, q = _pq(p, q)
    if isinstance(f, str):
        if f not in F_DIVERGENCES:
            raise ValueError(f"f must be one of {sorted(F_DIVERGENCES)} or a callable, got {f!r}")
        return F_DIVERGENCES[f][1](p, q)
    if not callable(f):
        raise TypeError(f"f must be a name or a callable, got {type(f).__name__}")
    pos = q > 0
    t = torch.where(pos, p / torch.where(pos, q, torch.ones_like(q)), torch.ones_like(p))
    values = f(t)
    if not isinstance(values, torch.Tensor) or values.shape != t.shape:
        raise ValueError("f must map a tensor of ratios to a tensor of the same shape")
    terms = torch.where(pos, q * values, torch.zeros_like(values))
    only_p = (~pos) & (p > 0)
    if only_p.any():
        terms = terms + torch.where(only_p, p * f_slope_at_infinity, torch.zeros_like(p))
    return terms.sum(-1)


_COV_FORMS = ("auto", "variances", "full")


def _broadcasts(a: tuple, b: tuple) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def _is_spd(cov: torch.Tensor) -> bool:
    return bool((torch.linalg.cholesky_ex(cov)[1] == 0).all())


def _asymmetry(cov: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``max |S - S^T| / max |S|`` per matrix, and the tolerance for ``cov``'s dtype: the
    square root of its machine epsilon, far above rounding and far below a real asymmetry."""
    finfo = torch.finfo(cov.dtype)
    asym = (cov - cov.transpose(-1, -2)).abs().amax((-2, -1))
    scale = cov.abs().amax((-2, -1)).clamp_min(finfo.tiny)
    return asym / scale, finfo.eps ** 0.5


def _is_symmetric(cov: torch.Tensor) -> bool:
    rel, tol = _asymmetry(cov)
    return bool((rel <= tol).all())


def _check_symmetric(cov: torch.Tensor, name: str) -> None:
    """Symmetric up to the rounding of ``cov``'s dtype (Cholesky would read only the lower triangle)."""
    rel, tol = _asymmetry(cov)
    if (rel > tol).any():
        worst = rel.max().item()
        raise ValueError(f"{name} is not symmetric (max |S - S^T| / max |S| = {worst:.3g}, tolerance {tol:.2g} "
                         f"for {cov.dtype}): a covariance matrix must be symmetric")


def _gaussian_cov_form(mu: torch.Tensor, cov: torch.Tensor, name: str, form: str) -> bool:
    """Which form ``cov`` has: returns True for variances ``(..., D)``, False for a full
    covariance ``(..., D, D)``; checks the shape (and, for a full covariance, the symmetry)."""
    if not isinstance(form, str):
        raise TypeError(f"{name}_form must be one of {', '.join(map(repr, _COV_FORMS))}, got {type(form).__name__}")
    if form not in _COV_FORMS:
        raise ValueError(f"{name}_form must be one of {', '.join(map(repr, _COV_FORMS))}, got {form!r}")
    d = mu.shape[-1]
    batch = mu.shape[:-1]
    as_vars = cov.shape[-1] == d and _broadcasts(tuple(cov.shape[:-1]), tuple(batch))
    as_full = cov.dim() >= 2 and tuple(cov.shape[-2:]) == (d, d) and _broadcasts(tuple(cov.shape[:-2]), tuple(batch))
    expected = (f"variances (..., {d}) or a covariance matrix (..., {d}, {d}) whose leading dimensions "
                f"broadcast with those of the mean of shape {tuple(mu.shape)}")
    if form == "variances":
        if not as_vars:
            raise ValueError(f"{name} must be variances (..., {d}) broadcasting with the mean of shape "
                             f"{tuple(mu.shape)} ({name}_form='variances'); got {tuple(cov.shape)}")
        diagonal = True
    elif form == "full":
        if not as_full:
            raise ValueError(f"{name} must be a covariance matrix (..., {d}, {d}) whose leading dimensions broadcast "
                             f"with the mean of shape {tuple(mu.shape)} ({name}_form='full'); got {tuple(cov.shape)}")
        diagonal = False
    elif as_vars and as_full:
        if cov.dim() == mu.dim() + 1:
            diagonal = False  # (..., D, D) one dimension more than the mean: the documented full form
        elif _is_symmetric(cov) and _is_spd(cov):
            # A shared covariance with as many means as dimensions (B == D): per-example
            # variances are symmetric positive definite only by coincidence.
            diagonal = False
            warnings.warn(f"gaussian_kl: {name} of shape {tuple(cov.shape)} with means of shape {tuple(mu.shape)} "
                          f"could be per-example variances or a covariance matrix; read as a covariance matrix "
                          f"(it is symmetric positive definite). Pass {name}_form='full' or "
                          f"{name}_form='variances' to say which", stacklevel=3)
        else:
            diagonal = True
    elif as_vars or as_full:
        diagonal = as_vars
    else:
        raise ValueError(f"{name} must be {expected}; got {tuple(cov.shape)}")
    if diagonal:
        if not (cov > 0).all():
            raise ValueError(f"{name}: diagonal variances must be > 0")
    else:
        _check_symmetric(cov, name)
    return diagonal


def _cholesky(cov: torch.Tensor, name: str) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(cov)
    if (info != 0).any():
        raise ValueError(f"{name} is not symmetric positive definite")
    return L


def gaussian_kl(mu0, cov0, mu1, cov1, *, cov0_form: str = "auto", cov1_form: str = "auto") -> torch.Tensor:
    """``KL(N(mu0, cov0) || N(mu1, cov1))`` in nats, in closed form.

        KL = 1/2 [ tr(S1^-1 S0) + (mu1 - mu0)^T S1^-1 (mu1 - mu0) - D + ln det S1 - ln det S0 ]

    Args:
        mu0, mu1: means ``(..., D)``.
        cov0, cov1: each either variances ``(..., D)`` (a diagonal covariance) or a full
            covariance ``(..., D, D)`` (symmetric up to rounding, positive definite;
            Cholesky-based). Leading dimensions broadcast with the means': one ``(D, D)``
            matrix serves a batch of means ``(B, D)``.
        cov0_form, cov1_form: ``"variances"``, ``"full"`` or ``"auto"`` (the default): the
            form the shape allows. A ``(D, D)`` tensor with means ``(B, D)`` and ``B == D``
            (or ``B == 1``) fits both; ``"auto"`` then reads it as a covariance matrix when it
            is symmetric (up to rounding) and positive definite (with a warning naming the reading),
            otherwise as per-example variances. Pass the form to make the reading explicit.

    Returns:
        ``(...)``: the broadcast batch shape.

    Raises:
        ValueError: a shape that fits neither form, non-positive variances, a covariance
            matrix that is not symmetric or not positive definite, NaN or infinite values.
    """
    mu0, mu1 = as_tensor(mu0, "mu0"), as_tensor(mu1, "mu1")
    cov0, cov1 = as_tensor(cov0, "cov0"), as_tensor(cov1, "cov1")
    for t, n in ((mu0, "mu0"), (mu1, "mu1"), (cov0, "cov0"), (cov1, "cov1")):
        check_nonempty(t, n)
        if not torch.isfinite(t).all():
            raise ValueError(f"{n} contains NaN or infinite values")
    if mu0.shape[-1] != mu1.shape[-1]:
        raise ValueError(f"mu0 and mu1 must have the same dimension D: {mu0.shape[-1]} vs {mu1.shape[-1]}")
    if not _broadcasts(tuple(mu0.shape), tuple(mu1.shape)):
        raise ValueError(f"mu0 and mu1 have incompatible shapes {tuple(mu0.shape)} and {tuple(mu1.shape)}")
    diag0 = _gaussian_cov_form(mu0, cov0, "cov0", cov0_form)
    diag1 = _gaussian_cov_form(mu1, cov1, "cov1", cov1_form)
    dtype = torch.promote_types(torch.promote_types(mu0.dtype, mu1.dtype),
                                torch.promote_types(cov0.dtype, cov1.dtype))
    mu0, mu1, cov0, cov1 = (t.to(dtype) for t in (mu0, mu1, cov0, cov1))
    d = mu0.shape[-1]
    diff = mu1 - mu0
    if diag0 and diag1:
        return 0.5 * ((cov0 / cov1).sum(-1) + (diff.pow(2) / cov1).sum(-1) - d
                      + cov1.log().sum(-1) - cov0.log().sum(-1))
    full0 = torch.diag_embed(cov0) if diag0 else cov0
    full1 = torch.diag_embed(cov1) if diag1 else cov1
    L0 = _cholesky(full0, "cov0")
    L1 = _cholesky(full1, "cov1")
    batch = torch.broadcast_shapes(diff.shape[:-1], L0.shape[:-2], L1.shape[:-2])
    L0, L1 = L0.expand(*batch, d, d), L1.expand(*batch, d, d)
    # tr(S1^-1 S0) = ||L1^-1 L0||_F^2 ; Mahalanobis term = ||L1^-1 diff||^2.
    a = torch.linalg.solve_triangular(L1, L0, upper=False)
    diff_b = diff.expand(*batch, d)
    b = torch.linalg.solve_triangular(L1, diff_b.unsqueeze(-1), upper=False).squeeze(-1)
    logdet1 = 2 * torch.diagonal(L1, dim1=-2, dim2=-1).log().sum(-1)
    logdet0 = 2 * torch.diagonal(L0, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (a.pow(2).sum((-2, -1)) + b.pow(2).sum(-1) - d + logdet1 - logdet0)
