"""Multi-objective trade-offs (the lecture's digression 1): non-dominated points, weighted
scalarization ``L1 + lambda * L2``, a sweep over the weights, and a plot of the front.
All objectives are minimised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from gencore.metrics._checks import as_tensor, check_finite

__all__ = ["pareto_front", "scalarize", "sweep", "plot_pareto_front"]


def pareto_front(points) -> torch.Tensor:
    """Mask of the non-dominated points (minimisation).

    Point ``a`` dominates ``b`` when ``a <= b`` in every objective and ``a < b`` in at
    least one. Equal points do not dominate each other: both stay on the front.

    Args:
        points: ``(N, M)`` objective values.

    Returns:
        ``(N,)`` bool, True for points on the Pareto front.
    """
    p = as_tensor(points, "points")
    if p.dim() != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"points must be a non-empty (N, M) tensor, got shape {tuple(p.shape)}")
    if torch.isnan(p).any():
        raise ValueError("points contains NaN")
    le = (p[:, None, :] <= p[None, :, :]).all(-1)  # le[j, i]: p_j <= p_i everywhere
    lt = (p[:, None, :] < p[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return ~dominated


def scalarize(losses, weights) -> torch.Tensor:
    """Weighted sum of objectives ``sum_m w_m L_m``, e.g. ``L1 + lambda * L2`` for ``(1, lambda)``.

    Every minimiser of a scalarization with positive weights lies on the Pareto front;
    sweeping the weights traces its convex part.

    Args:
        losses: ``(..., M)`` objective values.
        weights: ``(M,)`` non-negative, finite.

    Returns:
        ``(...)``.
    """
    l_ = as_tensor(losses, "losses")
    w = as_tensor(weights, "weights").to(l_.dtype)
    if w.dim() != 1 or l_.dim() < 1 or l_.shape[-1] != w.shape[0]:
        raise ValueError(
            f"weights must have shape (M,) with M = losses.shape[-1]: got {tuple(w.shape)} "
            f"and losses {tuple(l_.shape)}"
        )
    check_finite(w, "weights")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    return (l_ * w).sum(-1)


def sweep(objectives: Callable[[float], Sequence[float]], lambdas: Iterable[float]) -> dict:
    """Evaluate a trade-off at several weights and keep the non-dominated results.

    Args:
        objectives: ``lambda -> (L1, L2, ...)``: trains or solves at weight ``lambda`` (e.g.
            minimises ``L1 + lambda * L2``) and returns the objective values it reached.
        lambdas: the weights to try.

    Returns:
        ``{"lambdas": (K,), "points": (K, M), "front": (K,) bool}``.
    """
    lams = [float(v) for v in lambdas]
    if not lams:
        raise ValueError("lambdas is empty")
    pts = torch.tensor([list(map(float, objectives(v))) for v in lams], dtype=torch.float64)
    return {"lambdas": torch.tensor(lams, dtype=torch.float64), "points": pts,
            "front": pareto_front(pts)}


def plot_pareto_front(points, path, *, front=None, labels=("L1", "L2"), annotations=None,
                      title="Pareto front") -> Path:
    """Scatter of two objectives with the non-dominated points joined, saved as PNG.

    Args:
        points: ``(N, 2)``.
        path: output file (PNG).
        front: ``(N,)`` mask (computed when None).
        labels: axis labels.
        annotations: optional text per point (e.g. the lambda that produced it).
    """
    from gencore.plotting import pyplot, save_figure

    plt = pyplot()
    p = as_tensor(points, "points").double().cpu()
    if p.dim() != 2 or p.shape[1] != 2:
        raise ValueError(f"plot_pareto_front needs (N, 2) points, got {tuple(p.shape)}")
    mask = pareto_front(p) if front is None else torch.as_tensor(front, dtype=torch.bool)
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    ax.scatter(p[~mask, 0], p[~mask, 1], c="0.6", label="dominated")
    fp = p[mask][p[mask][:, 0].argsort()]
    ax.plot(fp[:, 0], fp[:, 1], "o-", c="C3", label="non-dominated")
    if annotations is not None:
        for (a, b), text in zip(p.tolist(), annotations):
            ax.annotate(str(text), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
