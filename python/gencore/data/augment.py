"""Random augmentations of 8x8 digits for contrastive learning (SimCLR's two views).

Every function works on a batch, with torch ops only (any device, float32 / float64), and
draws its randomness from an explicit ``torch.Generator``: one seed gives the same views,
different seeds give different views, and the global RNG is never touched.

Inputs are digits in the units of ``gencore.data.load_dataset("digits")``: values in
``[0, 1)`` (the dequantized levels ``(level + u) / 17``), either flat ``(B, 64)`` or images
``(B, 1, 8, 8)``; every function returns the shape it was given, with values clamped back
into ``[0, 1)``.

The transformations are the ones that keep a handwritten digit the same digit at this size:
integer shifts (zero-pad and crop back, :func:`random_shift`), small rotations, rescalings and
sub-pixel translations (one bilinear resampling, :func:`random_affine`), per-image intensity
scaling (:func:`intensity_jitter`), pixel noise (:func:`add_noise`) and an erased square
(:func:`random_erase`). No flips: a mirrored 2 or 7 is not a 2 or 7.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from gencore._arguments import int_in

__all__ = ["random_shift", "random_affine", "intensity_jitter", "add_noise", "random_erase", "augment_digits",
           "digit_views", "DEFAULT_AUGMENT"]

# What digit_views uses unless told otherwise: rotations up to 15 degrees, scale 0.9-1.1,
# sub-pixel translations up to 0.5 px, integer shifts up to 1 px, intensity x0.75-1.25, noise
# std 0.05 (with these SimCLR reaches a 99.8% held-out linear probe on digits:
# bench/results/contrastive-quality.md).
DEFAULT_AUGMENT = {"max_shift": 1, "max_rotation": 15.0, "scale": (0.9, 1.1), "max_translate": 0.5,
                   "intensity": (0.75, 1.25), "noise_std": 0.05, "erase_size": 0, "erase_prob": 0.0}


def digit_images(x: torch.Tensor, owner: str = "augment", name: str = "x") -> torch.Tensor:
    """Checks a batch of 8x8 digits, ``x: (B, 64)`` or ``(B, 1, 8, 8)`` floating and
    non-empty, and returns it as ``(B, 1, 8, 8)``; errors start with ``owner``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{owner}: {name} must be floating point, got {x.dtype}")
    if not ((x.dim() == 2 and x.shape[1] == 64) or (x.dim() == 4 and tuple(x.shape[1:]) == (1, 8, 8))):
        raise ValueError(f"{owner}: {name} must have shape (B, 64) or (B, 1, 8, 8), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} is an empty batch")
    return x.reshape(-1, 1, 8, 8)


def _images(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
    """``x: (B, 64)`` or ``(B, 1, 8, 8)`` -> ``((B, 1, 8, 8), original shape)``."""
    return digit_images(x, "augment", name), x.shape


def _check_generator(generator, x: torch.Tensor) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"augment: generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"augment: generator is on {generator.device}, x on {x.device}")


def _uniform(n: int, lo: float, hi: float, generator, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)
    return lo + (hi - lo) * u


def _below_one(x: torch.Tensor) -> torch.Tensor:
    """Clamp into ``[0, 1)``: the largest value is the float just below 1."""
    top = torch.nextafter(torch.ones((), dtype=x.dtype, device=x.device), torch.zeros((), dtype=x.dtype,
                                                                                        device=x.device))
    return x.clamp(min=0.0).minimum(top)


def _range(value, name: str, *, low: float | None = None) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"augment: {name} must be a pair (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi) or (low is not None and lo < low):
        raise ValueError(f"augment: {name} must be finite with low <= high{'' if low is None else f', low >= {low}'}, "
                         f"got {value!r}")
    return lo, hi


def _nonneg(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"augment: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each digit by a random integer offset in ``[-max_shift, max_shift]`` pixels per
    axis: zero-pad by ``max_shift`` and crop an 8x8 window back (a random crop).

    Args:
        x: ``(B, 64)`` or ``(B, 1, 8, 8)`` in ``[0, 1)``.
        generator: source of the offsets.
        max_shift: largest shift in pixels, an int in ``0..7``.
    """
    img, shape = _images(x)
    _check_generator(generator, x)
    if (shift := int_in(max_shift, 0, 7)) is None:
        raise ValueError(f"random_shift: max_shift must be an int in 0..7, got {max_shift!r}")
    max_shift = shift
    if max_shift == 0:
        return x.clone()
    b, p = img.shape[0], max_shift
    padded = F.pad(img[:, 0], (p, p, p, p))  # (B, 8 + 2p, 8 + 2p)
    off = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=x.device)
    ar = torch.arange(8, device=x.device)
    rows = (off[0][:, None] + ar)[:, :, None]  # (B, 8, 1)
    cols = (off[1][:, None] + ar)[:, None, :]  # (B, 1, 8)
    out = padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    return out.reshape(shape)


def random_affine(x: torch.Tensor, generator: torch.Generator, *, max_rotation: float = 15.0,
                  scale: tuple[float, float] = (0.9, 1.1), max_translate: float = 0.5) -> torch.Tensor:
    """A random rotation (uniform in ``+-max_rotation`` degrees), isotropic scaling (uniform in
    ``scale``) and translation (uniform in ``+-max_translate`` pixels per axis) about the image
    centre, applied in one bilinear resampling with zeros outside the image.

    Args:
        x: ``(B, 64)`` or ``(B, 1, 8, 8)`` in ``[0, 1)``.
        generator: source of the parameters.
        max_rotation: degrees, >= 0.
        scale: ``(low, high)`` of the zoom factor (> 1 enlarges the digit), low > 0.
        max_translate: pixels, >= 0.
    """
    img, shape = _images(x)
    _check_generator(generator, x)
    rot = _nonneg(max_rotation, "max_rotation")
    s_lo, s_hi = _range(scale, "scale", low=1e-3)
    shift = _nonneg(max_translate, "max_translate")
    b = img.shape[0]
    angle = _uniform(b, -rot, rot, generator, img) * (math.pi / 180)
    zoom = _uniform(b, s_lo, s_hi, generator, img)
    # affine_grid maps output to input coordinates in [-1, 1] (2 / 8 per pixel with
    # align_corners=False): the inverse of "rotate by angle, zoom by s, move by t".
    t = _uniform(2 * b, -shift, shift, generator, img).reshape(2, b) * (2 / 8)
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos, sin, -t[0]], 1), torch.stack([-sin, cos, -t[1]], 1)], 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _below_one(out).reshape(shape)


def intensity_jitter(x: torch.Tensor, generator: torch.Generator,
                     intensity: tuple[float, float] = (0.75, 1.25)) -> torch.Tensor:
    """Multiply each digit by a factor uniform in ``intensity`` (pen pressure), clamped to
    ``[0, 1)``. ``x``: ``(B, 64)`` or ``(B, 1, 8, 8)``."""
    img, shape = _images(x)
    _check_generator(generator, x)
    lo, hi = _range(intensity, "intensity", low=0.0)
    f = _uniform(img.shape[0], lo, hi, generator, img)
    return _below_one(img * f[:, None, None, None]).reshape(shape)


def add_noise(x: torch.Tensor, generator: torch.Generator, std: float = 0.05) -> torch.Tensor:
    """Add Gaussian pixel noise of standard deviation ``std`` (units of ``x``), clamped to
    ``[0, 1)``. ``x``: ``(B, 64)`` or ``(B, 1, 8, 8)``."""
    img, shape = _images(x)
    _check_generator(generator, x)
    std = _nonneg(std, "std")
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    return _below_one(img + std * noise).reshape(shape)


def random_erase(x: torch.Tensor, generator: torch.Generator, size: int = 3, prob: float = 0.5) -> torch.Tensor:
    """With probability ``prob`` per digit, zero a ``size x size`` square at a random position
    (cutout). ``x``: ``(B, 64)`` or ``(B, 1, 8, 8)``; ``size`` in ``0..8``."""
    img, shape = _images(x)
    _check_generator(generator, x)
    if (side := int_in(size, 0, 8)) is None:
        raise ValueError(f"random_erase: size must be an int in 0..8, got {size!r}")
    size = side
    prob = _nonneg(prob, "prob")
    if prob > 1:
        raise ValueError(f"random_erase: prob must be in [0, 1], got {prob!r}")
    b = img.shape[0]
    corner = torch.randint(0, 9 - size, (2, b), generator=generator, device=x.device)
    apply = torch.rand(b, generator=generator, device=x.device) < prob
    ar = torch.arange(8, device=x.device)
    inside_r = (ar[None] >= corner[0][:, None]) & (ar[None] < corner[0][:, None] + size)  # (B, 8)
    inside_c = (ar[None] >= corner[1][:, None]) & (ar[None] < corner[1][:, None] + size)
    mask = inside_r[:, :, None] & inside_c[:, None, :] & apply[:, None, None]
    return img.masked_fill(mask[:, None], 0.0).reshape(shape)


def augment_digits(x: torch.Tensor, generator: torch.Generator, *, max_shift: int = 1, max_rotation: float = 15.0,
                   scale: tuple[float, float] = (0.9, 1.1), max_translate: float = 0.5,
                   intensity: tuple[float, float] = (0.75, 1.25), noise_std: float = 0.05, erase_size: int = 0,
                   erase_prob: float = 0.0) -> torch.Tensor:
    """One random view of each digit: shift, affine, intensity, erase, noise (in that order;
    each skipped when its strength is 0). ``x``: ``(B, 64)`` or ``(B, 1, 8, 8)`` in ``[0, 1)``;
    returns the same shape, values in ``[0, 1)``."""
    _images(x)
    _check_generator(generator, x)
    v = random_shift(x, generator, max_shift) if max_shift else x
    if max_rotation or max_translate or tuple(scale) != (1.0, 1.0):
        v = random_affine(v, generator, max_rotation=max_rotation, scale=scale, max_translate=max_translate)
    if tuple(intensity) != (1.0, 1.0):
        v = intensity_jitter(v, generator, intensity)
    if erase_size and erase_prob:
        v = random_erase(v, generator, erase_size, erase_prob)
    if noise_std:
        v = add_noise(v, generator, noise_std)
    return _below_one(v)


def digit_views(x: torch.Tensor, generator: torch.Generator, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views ``(view1, view2)`` of each digit (SimCLR's positive pair),
    each from :func:`augment_digits` with ``options`` (defaults: :data:`DEFAULT_AUGMENT`).

    Args:
        x: ``(B, 64)`` or ``(B, 1, 8, 8)`` in ``[0, 1)``.
        generator: a ``torch.Generator`` on ``x``'s device; a fixed seed reproduces the views.

    Returns:
        two tensors of the shape of ``x``, values in ``[0, 1)``.
    """
    unknown = set(options) - set(DEFAULT_AUGMENT)
    if unknown:
        raise ValueError(f"digit_views: unknown option(s) {sorted(unknown)}; available: {sorted(DEFAULT_AUGMENT)}")
    opts = {**DEFAULT_AUGMENT, **options}
    return augment_digits(x, generator, **opts), augment_digits(x, generator, **opts)
