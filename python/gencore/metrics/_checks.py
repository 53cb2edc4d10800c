"""Argument validation shared by the metrics: errors name the argument and the problem."""

from __future__ import annotations


import torch

from gencore._arguments import (  # noqa: F401  (the one validator of each, re-exported)
    check_bool,
    check_device,
    check_generator,
    check_int,
    check_number,
    check_real,
    to_tensor,
)


def as_tensor(v, name: str, dtype=None) -> torch.Tensor:
    t = to_tensor(v, name)
    if not (t.dtype.is_floating_point or t.dtype in (torch.int64, torch.int32, torch.bool)):
        raise TypeError(f"{name} must be a real-valued tensor, got dtype {t.dtype}")
    if not t.dtype.is_floating_point:
        t = t.to(torch.get_default_dtype())
    return t if dtype is None else t.to(dtype)


def check_nonempty(t: torch.Tensor, name: str, min_dim: int = 1) -> None:
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")


def check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_probabilities(p: torch.Tensor, name: str, atol: float | None = None) -> None:
    """Non-negative, finite, and summing to 1 along the last dimension."""
    check_nonempty(p, name)
    if torch.isnan(p).any() or torch.isinf(p).any():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (p < 0).any():
        raise ValueError(f"{name} has negative entries: not a probability vector")
    tol = atol if atol is not None else (1e-4 if p.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9)
    s = p.sum(-1)
    if ((s - 1).abs() > tol * max(1, p.shape[-1]) ** 0.5).any():
        worst = s.flatten()[(s - 1).abs().flatten().argmax()].item()
        raise ValueError(
            f"{name} is not normalised: its entries must sum to 1 along the last dimension "
            f"(found a sum of {worst:.6g})"
        )


def broadcast_pair(p: torch.Tensor, q: torch.Tensor, names=("p", "q")):
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of outcomes (last dimension): "
            f"{p.shape[-1]} vs {q.shape[-1]}"
        )
    try:
        shape = torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError as e:
        raise ValueError(
            f"{names[0]} and {names[1]} have incompatible shapes {tuple(p.shape)} and {tuple(q.shape)}"
        ) from e
    dtype = torch.promote_types(p.dtype, q.dtype)
    return p.to(dtype).expand(shape), q.to(dtype).expand(shape)


def check_samples(x: torch.Tensor, name: str, min_rows: int = 1) -> torch.Tensor:
    """(N, D) samples; a 1-D input is read as N one-dimensional samples."""
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N, D) samples, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} sample(s), got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero features (shape {tuple(x.shape)})")
    check_finite(x, name)
    return x


