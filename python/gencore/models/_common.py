"""Small helpers shared by the model classes."""

from __future__ import annotations

import math

import torch
from torch import nn

from gencore._arguments import check_bool, check_int, check_real, check_shape


def event_shape(features, owner: str, min_size: int = 1) -> tuple[int, ...]:
    """``features`` as an event shape: an int ``D >= min_size`` -> ``(D,)``, or an image
    shape ``(C, H, W)``; sizes bounded as :func:`gencore._arguments.check_shape` bounds them.

    Raises:
        TypeError, ValueError: naming ``owner`` (the model) and ``features``.
    """
    return check_shape(features, f"{owner}: features", min_size=min_size)


def config_features(shape: tuple[int, ...]):
    """The ``features`` a config stores for an event shape, in plain ints (JSON): ``D`` for
    vectors, ``[C, H, W]`` for images (what :func:`event_shape` reads back)."""
    return shape[0] if len(shape) == 1 else list(shape)


def require_int(v, name: str, owner: str) -> int:
    """Type check of an integer hyperparameter: ``TypeError`` for a ``bool`` (``True`` is
    not a count) or a non-integer; the caller checks the range."""
    return check_int(v, f"{owner}: {name}")


def require_bool(v, name: str, owner: str) -> bool:
    """A flag: ``TypeError`` for anything but a ``bool`` (the string ``"no"`` is truthy)."""
    return check_bool(v, f"{owner}: {name}")


def require_real(v, name: str, owner: str) -> float:
    """Type check of a real hyperparameter: ``TypeError`` for a ``bool`` or a non-number."""
    return check_real(v, f"{owner}: {name}")


def require_nonneg_real(v, name: str, owner: str) -> float:
    """A finite real number >= 0 (a weight such as ``beta``): ``TypeError`` for a ``bool`` or
    a non-number, ``ValueError`` otherwise."""
    v = require_real(v, name, owner)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {v!r}")
    return v


def batch_starts(x, batch_size, owner: str) -> range:
    """The first rows of ``x``'s batches of ``batch_size`` rows for a batched evaluation,
    after checking that ``batch_size`` is a positive int and ``x`` a non-empty batch
    (``torch.cat`` of no batches would fail with a message that names neither)."""
    if require_int(batch_size, "batch_size", owner) < 1:
        raise ValueError(f"{owner}: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: x must be a tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{owner}: x is an empty batch (shape {tuple(x.shape)})")
    return range(0, x.shape[0], batch_size)


def in_eval(module: nn.Module, fn):
    """``fn()`` with ``module`` in eval mode (batch norm with running statistics, no codebook
    updates), its mode restored afterwards."""
    was = module.training
    module.eval()
    try:
        return fn()
    finally:
        module.train(was)


def check_like_model(x: torch.Tensor, model: nn.Module | None, owner: str, name: str = "x") -> None:
    """A floating input ``x`` on the meta device (no values to check or compute with), or of
    another dtype or device than ``model``'s parameters (None: only the meta device is
    refused): a ``ValueError`` naming both, instead of an error from inside
    (``Tensor.item() cannot be called on meta tensors``, ``mat1 and mat2 must have the same
    dtype``)."""
    if x.device.type == "meta":
        raise ValueError(f"{owner}: {name} is on the meta device, which holds no values; pass real data")
    p = next(model.parameters(), None) if model is not None else None
    if p is not None and x.dtype.is_floating_point and (x.dtype != p.dtype or x.device != p.device):
        raise ValueError(f"{owner}: {name} is {x.dtype} on {x.device}, the model is {p.dtype} on {p.device} "
                         "(convert one of them: model.to(...) or x.to(...))")


def check_context(context, n: int, features: int, owner: str) -> None:
    """A conditional model's ``context``: a floating tensor ``(n, features)`` with finite
    values (``TypeError`` / ``ValueError`` naming ``owner``)."""
    if not isinstance(context, torch.Tensor) or not context.dtype.is_floating_point:
        raise TypeError(f"{owner}: context must be a floating-point tensor of shape ({n}, {features}), got "
                        f"{context.dtype if isinstance(context, torch.Tensor) else type(context).__name__}")
    if tuple(context.shape) != (n, features):
        raise ValueError(f"{owner}: context must have shape ({n}, {features}), got {tuple(context.shape)}")
    if context.device.type != "meta" and not torch.isfinite(context).all():
        raise ValueError(f"{owner}: context contains NaN or infinite values")


def flat_batch(x, event_shape: tuple[int, ...], owner: str, name: str = "x", module: nn.Module | None = None):
    """A batch of examples ``(B, *event_shape)`` (or already flat ``(B, D)``) as ``(B, D)``,
    after the checks every model's entry point makes: a floating-point tensor, the shape, a
    non-empty batch, real data of ``module``'s dtype and device (:func:`check_like_model`),
    finite values (``TypeError`` / ``ValueError`` naming ``owner`` and ``name``)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    features = math.prod(event_shape)
    if tuple(x.shape[1:]) != tuple(event_shape) and not (x.dim() == 2 and x.shape[1] == features):
        raise ValueError(f"{owner}: {name} must have shape (B, {', '.join(map(str, event_shape))}), "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} is an empty batch")
    check_like_model(x, module, owner, name)
    if not torch.isfinite(x).all():
        raise ValueError(f"{owner}: {name} contains NaN or infinite values")
    return x.reshape(x.shape[0], features)


def categorical_log_px(x, logits, levels: int):
    """Per-pixel ``log p(x)`` of dequantized data under a categorical over ``levels`` values.

    ``x`` holds ``(level + u) / levels`` in [0, 1] (a value of exactly 1 is the top level);
    ``logits: (..., *x.shape, levels)`` may have extra leading (sample) dimensions. Returns
    ``(..., *x.shape)`` in nats, including the dequantization volume ``log levels`` per pixel,
    so sums over pixels are densities of the dequantized ``x`` (comparable with flows).
    """
    level = (x * levels).floor().clamp(0, levels - 1).long()
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, level.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return picked + math.log(levels)


def categorical_mean(logits, levels: int, sample: bool = False, generator=None):
    """Data-space value of a categorical over ``levels`` level centres ``(k + 1/2) / levels``:
    its mean (``sample=False``), or a draw (on the CPU, so a CPU ``generator`` serves every
    device). ``logits: (..., levels)`` -> ``(...)``."""
    probs = torch.softmax(logits, dim=-1)
    centers = (torch.arange(levels, dtype=logits.dtype, device=logits.device) + 0.5) / levels
    if not sample:
        return (probs * centers).sum(-1)
    idx = torch.multinomial(probs.reshape(-1, levels).cpu(), 1, generator=generator)
    return centers[idx.to(logits.device).reshape(probs.shape[:-1])]
