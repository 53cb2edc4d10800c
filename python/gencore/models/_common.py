"""Small helpers shared by the model classes."""

from __future__ import annotations

import numbers


def event_shape(features, owner: str) -> tuple[int, ...]:
    """``features`` as an event shape: an int ``D`` -> ``(D,)``, or an image shape ``(C, H, W)``.

    Raises:
        ValueError: naming ``owner`` (the model) when it is neither.
    """
    if isinstance(features, int) and not isinstance(features, bool):
        if features < 1:
            raise ValueError(f"{owner}: features must be >= 1, got {features!r}")
        return (features,)
    try:
        shape = tuple(features)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise ValueError(f"{owner}: features must be an int D >= 1 or an image shape (C, H, W), got {features!r}")
    return shape


def require_int(v, name: str, owner: str) -> int:
    """Type check of an integer hyperparameter: ``TypeError`` for a ``bool`` (``True`` is
    not a count) or a non-integer; the caller checks the range."""
    from gencore.metrics._checks import check_int  # the one integer validator

    return check_int(v, f"{owner}: {name}")


def require_real(v, name: str, owner: str) -> float:
    """Type check of a real hyperparameter: ``TypeError`` for a ``bool`` or a non-number."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)
