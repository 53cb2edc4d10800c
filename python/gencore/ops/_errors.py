"""Python exception types for errors raised by the compiled ops.

The C++ ops (csrc/common/stable_api.h) throw ``std::invalid_argument`` for a bad argument,
which reaches Python as ``ValueError``. C++ has no standard exception that Python
raises as ``TypeError``: a dtype error carries the tag ``[TypeError] `` in front of its
message, and :func:`typed` re-raises it as ``TypeError`` without the tag.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

_TAG = "[TypeError] "


def typed(op):
    """``op`` (a ``torch.ops.gencore`` op) with its tagged dtype errors raised as TypeError."""

    @functools.wraps(op)
    def call(*args, **kwargs):
        try:
            return op(*args, **kwargs)
        except ValueError as e:
            message = str(e)
            if message.startswith(_TAG):
                raise TypeError(message[len(_TAG):]) from None
            raise

    return call


def check_tensors(**tensors) -> None:
    """``TypeError`` naming the first argument that is not a tensor (``None``, a float, an
    array...), before the op's schema rejects it with a message that does not name it."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gencore: {name} must be a tensor, got {type(t).__name__}")


def check_scalar(value, name: str, what: str = "a float"):
    """A Python number argument of an op (``TypeError`` naming ``name`` otherwise; ``bool``
    is refused). A numpy scalar (``np.float32(2.0)``, ``np.int64(3)``) is taken as the
    Python ``float`` it holds, so that the op's schema gets a ``float``; a symbolic float
    under torch.compile is returned as it is."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, torch.SymFloat)):
        raise TypeError(f"gencore: {name} must be {what}, got {type(value).__name__}")
    return value if isinstance(value, (int, float, torch.SymFloat)) else float(value)


def as_finite_float(value, name: str, what: str) -> float:
    """A Python number as a float; an int too large for one (``10**400``) is refused as not
    finite (``what`` says what ``name`` must be) instead of an ``OverflowError``."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"gencore: {name} must be {what}, got an int of {value.bit_length()} bits") from None


def compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype the kernels compute in for ``like``'s dtype: float64 for float64, float32
    for everything else (float32 and, on CUDA, float16 / bfloat16)."""
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def check_representable(value: float, name: str, like: torch.Tensor) -> None:
    """``ValueError`` when the finite float ``value`` overflows the dtype the kernels compute
    ``like`` in (``1e39`` is a finite float but inf in float32), where it would turn the
    results into inf / NaN."""
    dtype = compute_dtype(like)
    big = torch.finfo(dtype).max
    if abs(value) > big:
        raise ValueError(f"gencore: {name} = {value} is not finite in {str(dtype).removeprefix('torch.')}, the "
                         f"dtype the kernels use for {like.dtype} inputs (largest value {big:.6g})")
