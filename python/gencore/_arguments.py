"""Checks of the constructor arguments of :mod:`gencore.nn` and :mod:`gencore.models`.

Every check raises ``TypeError`` (wrong kind) or ``ValueError`` (right kind, wrong value)
with a message that starts with the name the caller passes, which is the public argument
(``"VAE: hidden"``, ``"CLIP: text_feature_dim"``): a constructor fails at its own entry,
naming its own argument, instead of inside ``torch.empty`` or a submodule. The bounds keep
a constructor from hanging or from asking torch for an impossible size:

- a size (a layer width, a feature or code count, a vocabulary) is at most
  :data:`MAX_SIZE`, so that the products torch forms from two of them fit its int64 sizes;
- a layer count (couplings, transformer layers, list lengths) is at most :data:`MAX_DEPTH`:
  the modules are built one by one in Python, so ``10**30`` layers would never finish.

:func:`gencore.models.build` bounds the configs it reads from files more tightly
(``MAX_CONFIG_INT``, and a parameter count).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

#: The largest size (width, feature count, number of codes, ...) a constructor takes.
MAX_SIZE = 2**31 - 1
#: The most layers (and layer-list entries) a constructor builds.
MAX_DEPTH = 512


def check_int(v, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer argument (``bool`` is rejected: ``True`` is not a count), as an ``int``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if (low is not None and v < low) or (high is not None and v > high):
        rng = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise ValueError(f"{name} must be an int {rng}, got {v!r}")
    return v


def int_in(v, low: int | None = None, high: int | None = None) -> int | None:
    """The ``int`` an integer argument holds (a numpy or Python int, not a ``bool``) when it
    lies in ``[low, high]``, else ``None``: for the checks that word their own message."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        return None
    v = int(v)
    return None if (low is not None and v < low) or (high is not None and v > high) else v


def check_bool(v, name: str) -> bool:
    """A flag (``TypeError`` for anything but a ``bool``: the string ``"no"`` is truthy)."""
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    return v


def _at_most(v: int, high: int, name: str, what: str) -> int:
    if v > high:
        raise ValueError(f"{name} must be an int <= {high} ({what}), got {v!r}")
    return v


def check_size(v, name: str, low: int = 1) -> int:
    """A size: an int in ``[low, MAX_SIZE]`` (the message names the bound it breaks)."""
    return _at_most(check_int(v, name, low), MAX_SIZE, name, "gencore's bound on a size")


def check_depth(v, name: str, low: int = 1) -> int:
    """A layer count: an int in ``[low, MAX_DEPTH]`` (the message names the bound it breaks)."""
    return _at_most(check_int(v, name, low), MAX_DEPTH, name, "gencore's bound on a layer count")


def _plain(v):
    """A numpy array or a tensor as plain Python values (``tolist``): a list, or a number
    for a 0-d one; anything else as it is."""
    return v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v


def check_shape(features, name: str, *, min_size: int = 1, image_only: bool = False,
                any_rank: bool = False) -> tuple[int, ...]:
    """An event shape: an int ``D >= min_size`` -> ``(D,)`` (unless ``image_only``), or a
    sequence of sizes, ``(C, H, W)`` (of any length >= 1 where ``any_rank``), with at most
    :data:`MAX_SIZE` values in all."""
    features = _plain(features)
    what = ("an image shape (C, H, W)" if image_only else
            "an int D or a shape of ints" if any_rank else
            f"an int D >= {min_size} or an image shape (C, H, W)")
    if isinstance(features, numbers.Integral) and not image_only:
        return (check_size(features, name, min_size),)  # a bool: "must be an int, got bool"
    if isinstance(features, (str, bytes, numbers.Number)) or not isinstance(features, Sequence):
        raise TypeError(f"{name} must be {what}, got {type(features).__name__} {features!r}")
    if not features or not (any_rank or len(features) == 3):
        raise ValueError(f"{name} must be {what}, got {features!r}")
    shape = tuple(check_size(v, f"{name}[{i}]") for i, v in enumerate(features))
    if math.prod(shape) > MAX_SIZE:
        raise ValueError(f"{name} {shape} has {math.prod(shape)} values, more than gencore's bound on a "
                         f"size ({MAX_SIZE})")
    return shape


def check_widths(v, name: str, *, allow_int: bool = True, allow_empty: bool = False) -> list[int]:
    """Hidden-layer widths: a list, tuple, 1-D array or tensor of sizes (one int for one
    layer where ``allow_int``), at most :data:`MAX_DEPTH` of them, at least one unless
    ``allow_empty``."""
    v = _plain(v)
    if allow_int and isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = [v]
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        kinds = "a list of layer widths (ints)" + (" or one int" if allow_int else "")
        raise TypeError(f"{name} must be {kinds}, got {type(v).__name__} {v!r}")
    if len(v) > MAX_DEPTH:
        raise ValueError(f"{name} has {len(v)} layers, more than {MAX_DEPTH}")
    if not v and not allow_empty:
        raise ValueError(f"{name} must hold at least one hidden layer width, got {v!r}")
    return [check_size(w, f"{name}[{i}]") for i, w in enumerate(v)]


def plain_config(v):
    """A model's config in plain Python values, for JSON and :func:`gencore.models.build`:
    numpy and 0-d tensor integers become ``int``, reals ``float``, numpy bools ``bool``,
    arrays and tensors lists, recursively (a constructor takes ``np.int64(8)`` couplings;
    its checkpoint must still be JSON)."""
    v = _plain(v)
    if isinstance(v, dict):
        return {k: plain_config(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):  # a tuple stays one; a namedtuple, torch.Size... a list
        return (tuple if type(v) is tuple else list)(plain_config(x) for x in v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def check_choice(v, choices, name: str) -> str:
    """One of the strings ``choices`` (``TypeError`` for a non-string, which a ``dict``
    lookup would report as "unhashable")."""
    listed = ", ".join(str(c) for c in choices)
    if not isinstance(v, str):
        raise TypeError(f"{name} must be one of {listed}, got {type(v).__name__} {v!r}")
    if v not in choices:
        raise ValueError(f"{name} must be one of {listed}, got {v!r}")
    return v


def check_real(v, name: str) -> float:
    """A real-number argument (type only); ``bool`` is rejected: ``True`` is not a rate or a size."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


def check_number(v, name: str, low: float | None = None, *, strict: bool = False) -> float:
    """A finite real argument ``>= low`` (``> low`` with ``strict``); ``bool`` is rejected."""
    v = check_real(v, name)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if low is not None and (v <= low if strict else v < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {v!r}")
    return v


def check_factory(v, name: str):
    """A module factory such as ``nn.ReLU`` or ``functools.partial(nn.LeakyReLU, 0.2)``: a
    callable (not a module instance, which would be shared by every layer). It is not called
    here: a factory that draws random numbers would shift a seeded initialisation."""
    if not callable(v) or isinstance(v, nn.Module):
        raise TypeError(f"{name} must be a module class or factory such as nn.ReLU (called with no "
                        f"arguments for each layer), got {type(v).__name__} {v!r}")
    return v


def check_generator(generator, name: str = "generator") -> None:
    """``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__} {generator!r}")


def check_device(device, name: str = "device") -> torch.device:
    """A ``torch.device`` from a device or its name (``"cpu"``, ``"cuda:0"``), or an error
    that names the argument."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(f"{name} must be a torch.device or a device name such as 'cpu', got "
                        f"{type(device).__name__} {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{name} {device!r} is not a device: {e}") from None


def to_tensor(v, name: str, what: str = "a tensor or array-like") -> torch.Tensor:
    """``torch.as_tensor(v)``: a ``TypeError`` naming ``name`` for what is not array-like
    (``None``, an object: torch's "Could not infer dtype"), a ``ValueError`` for a meta
    tensor (a shape without values)."""
    try:
        t = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be {what}, got {type(v).__name__}") from None
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without values)")
    return t
