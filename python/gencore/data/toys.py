"""2-D toy distributions, generated with torch from a generator (no files).

Exact densities: ``8gaussians`` (a mixture of 8 isotropic Gaussians, radius 2*sqrt(2),
std 1/(2*sqrt(2)), as in the FFJORD toys) and ``checkerboard`` (uniform on the 8 dark
squares of side 2 of a 4x4 board on [-4, 4]^2: density 1/32). ``moons``, ``rings`` and
``2spirals`` are curves blurred with Gaussian noise; they have no closed-form density.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["TOYS", "sample_toy", "toy_log_prob", "toy_entropy"]

TOYS = ("8gaussians", "checkerboard", "moons", "rings", "2spirals")
EXACT = ("8gaussians", "checkerboard")

_R8 = 2 * math.sqrt(2)          # radius of the 8 centres
_S8 = 1 / (2 * math.sqrt(2))    # component standard deviation


def _centers8(dtype=torch.float64):
    a = torch.arange(8, dtype=dtype) * (math.pi / 4)
    return torch.stack([a.cos(), a.sin()], 1) * _R8


def _check(name):
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; available: {', '.join(TOYS)}")


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 2)`` float64 samples of the toy ``name``."""
    from gencore.metrics._checks import check_int

    _check(name)
    check_int(n, "sample_toy: n", 0)
    g = generator
    kw = {"generator": g, "dtype": torch.float64}
    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=g)
        return _centers8()[k] + _S8 * torch.randn(n, 2, **kw)
    if name == "checkerboard":
        x1 = torch.rand(n, **kw) * 4 - 2
        x2 = torch.rand(n, **kw) - torch.randint(0, 2, (n,), generator=g).double() * 2
        x2 = x2 + torch.floor(x1) % 2
        return torch.stack([x1, x2], 1) * 2
    if name == "moons":
        t = torch.rand(n, **kw) * math.pi
        upper = torch.rand(n, **kw) < 0.5
        x = torch.where(upper, t.cos(), 1 - t.cos())
        y = torch.where(upper, t.sin(), 0.5 - t.sin())
        pts = torch.stack([x - 0.5, y - 0.25], 1) * 2
        return pts + 0.1 * torch.randn(n, 2, **kw)
    if name == "rings":
        radius = torch.randint(1, 5, (n,), generator=g).double() * 0.9
        a = torch.rand(n, **kw) * 2 * math.pi
        return torch.stack([a.cos(), a.sin()], 1) * radius[:, None] + 0.08 * torch.randn(n, 2, **kw)
    # 2spirals
    t = torch.sqrt(torch.rand(n, **kw)) * 3 * math.pi
    sign = torch.where(torch.rand(n, **kw) < 0.5, -1.0, 1.0).double()
    pts = torch.stack([-t.cos() * t, t.sin() * t], 1) * sign[:, None] / 3
    return pts + 0.1 * torch.randn(n, 2, **kw)


def toy_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(x)`` in nats for ``x: (N, 2)``; ``-inf`` outside the support.

    Raises:
        ValueError: the toy has no closed-form density (moons, rings, 2spirals), or ``x``
            is not ``(N, 2)``.
    """
    _check(name)
    if name not in EXACT:
        raise ValueError(f"toy {name!r} has no exact density; exact: {', '.join(EXACT)}")
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be (N, 2), got shape {tuple(x.shape)}")
    xd = x.double()
    if name == "8gaussians":
        d2 = ((xd[:, None, :] - _centers8()[None]) ** 2).sum(-1)
        comp = -d2 / (2 * _S8 ** 2) - math.log(2 * math.pi * _S8 ** 2)
        return (torch.logsumexp(comp, 1) - math.log(8)).to(x.dtype)
    u = xd / 2  # the generator's unscaled coordinates: x1 in [-2, 2), cell parity test
    inside = (u.abs() <= 2).all(1)
    on_dark = ((torch.floor(u[:, 0]) + torch.floor(u[:, 1])) % 2 == 0)
    lp = torch.full((len(x),), -math.inf, dtype=torch.float64)
    lp[inside & on_dark] = -math.log(32.0)
    return lp.to(x.dtype)


@functools.lru_cache(maxsize=None)
def toy_entropy(name: str) -> float:
    """Differential entropy ``-E log p(x)`` in nats of a toy with an exact density:
    ``ln 32`` for checkerboard; for 8gaussians a quadrature of ``-p log p`` on a fine grid
    over [-6, 6]^2 (the mass outside is below 1e-12), accurate to about 1e-6."""
    _check(name)
    if name == "checkerboard":
        return math.log(32.0)
    if name not in EXACT:
        raise ValueError(f"toy {name!r} has no exact density; exact: {', '.join(EXACT)}")
    g = torch.linspace(-6, 6, 1601, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    lp = toy_log_prob(name, torch.stack([gx.flatten(), gy.flatten()], 1))
    return -(lp.exp() * lp).sum().item() * (g[1] - g[0]).item() ** 2
