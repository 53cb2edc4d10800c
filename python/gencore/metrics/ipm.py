"""Integral probability metrics between two samples: MMD, exact 1-D Wasserstein, sliced
Wasserstein. ``sup_{f in F} E_P f - E_Q f`` over a function class F: the unit ball of a
kernel's RKHS (MMD) or the 1-Lipschitz functions (Wasserstein-1), the distances a GAN's
discriminator estimates.
"""

from __future__ import annotations

import math
import numbers

import torch

from gencore.metrics._checks import as_tensor, check_finite, check_generator, check_int, check_samples

__all__ = ["mmd", "median_bandwidth", "wasserstein_1d", "sliced_wasserstein"]


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median of the pairwise Euclidean distances within the pooled sample (zeros excluded).

    The distances are computed in float64 from the differences (not through the
    ``|a|^2 + |b|^2 - 2 a.b`` expansion, which cancels to 0 for close points), so data at any
    scale gets its own bandwidth (returned in the data's dtype; :func:`mmd` refuses one whose
    square under- or overflows); a pooled sample of identical points has no spread and gets
    bandwidth 1."""
    x = check_samples(as_tensor(x, "x"), "x")
    y = check_samples(as_tensor(y, "y"), "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
    z = torch.cat([x, y.to(x.device, torch.promote_types(x.dtype, y.dtype))])
    z64 = z.double()
    d = torch.cdist(z64, z64, compute_mode="donot_use_mm_for_euclid_dist")
    off = d[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
    off = off[off > 0]
    if off.numel() == 0:
        return torch.ones((), dtype=z.dtype, device=z.device)
    return off.median().to(z.dtype)


def _kernel(a, b, kernel, h):
    r2 = torch.cdist(a, b).pow(2)
    if kernel == "rbf":
        return torch.exp(-r2 / (2 * h * h))
    return torch.rsqrt(1 + r2 / (h * h))


def mmd(x, y, kernel: str = "rbf", bandwidth="median", unbiased: bool = True) -> torch.Tensor:
    """Squared maximum mean discrepancy ``MMD^2(P, Q)`` between samples ``x ~ P``, ``y ~ Q``.

        MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)

    Kernels, with bandwidth ``h`` and ``r = |a - b|``:
    ``"rbf"``: ``exp(-r^2 / (2 h^2))``; ``"imq"`` (inverse multiquadric): ``(1 + r^2/h^2)^(-1/2)``.

    Args:
        x: ``(N, D)`` samples (a 1-D tensor is ``N`` scalars).
        y: ``(M, D)`` samples.
        kernel: ``"rbf"`` or ``"imq"``.
        bandwidth: ``"median"`` (median pairwise distance of the pooled sample) or a
            positive float, with ``bandwidth**2`` representable in the samples' dtype
            (float32: about 1.1e-19 to 1.3e19; float64: 1.5e-154 to 9.5e153).
        unbiased: the U-statistic (drops the ``i = j`` terms; can be slightly negative when
            ``P = Q``; needs ``N, M >= 2``) or the biased V-statistic (always >= 0).

    Returns:
        A 0-d tensor: MMD^2 (squared units of nothing: kernel values are unitless).
    """
    if kernel not in ("rbf", "imq"):
        raise ValueError(f"kernel must be 'rbf' or 'imq', got {kernel!r}")
    need = 2 if unbiased else 1
    x = check_samples(as_tensor(x, "x"), "x", need)
    y = check_samples(as_tensor(y, "y"), "y", need)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension: {x.shape[1]} vs {y.shape[1]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    finfo = torch.finfo(dtype)
    # The kernels divide by h^2 (rbf: 2 h^2): it must neither underflow nor overflow in the
    # samples' dtype, or every kernel value is 0/0, 0 or 1 (MMD^2 NaN or 0, whatever the data).
    h_min, h_max = math.sqrt(finfo.tiny), math.sqrt(finfo.max / 2)
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be 'median' or a positive float, got {bandwidth!r}")
        h = median_bandwidth(x, y)
        if not h_min <= h.item() <= h_max:
            raise ValueError(f"the median bandwidth {h.item():.3g} of the samples is outside "
                             f"[{h_min:.2g}, {h_max:.2g}], where bandwidth**2 is representable in {dtype}; "
                             "rescale the data or pass a bandwidth")
    else:
        is_scalar_tensor = (isinstance(bandwidth, torch.Tensor) and bandwidth.numel() == 1
                            and bandwidth.dtype != torch.bool and not bandwidth.dtype.is_complex)
        if isinstance(bandwidth, bool) or not (isinstance(bandwidth, numbers.Real) or is_scalar_tensor):
            raise TypeError(f"bandwidth must be 'median' or a positive float, got {type(bandwidth).__name__} "
                            f"{bandwidth!r}")
        b = float(bandwidth)
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
        if b < h_min:
            raise ValueError(f"bandwidth={b!r} is too small for {dtype} samples: bandwidth**2 underflows to 0 "
                             f"(below the smallest normal number {finfo.tiny:.3g}); it must be >= {h_min:.3g}")
        if b > h_max:
            raise ValueError(f"bandwidth={b!r} is too large for {dtype} samples: 2 * bandwidth**2 overflows to inf; "
                             f"it must be <= {h_max:.3g}")
        h = torch.as_tensor(b, dtype=dtype)
    kxx, kyy, kxy = _kernel(x, x, kernel, h), _kernel(y, y, kernel, h), _kernel(x, y, kernel, h)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return sxx + syy - 2 * kxy.mean()


def _w1_sorted(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """W1 along dim 0 for pooled columns: values (n+m, P) sorted with their weights.

    ``weights`` carry +w for points of x and -w for points of y, so their running sum is
    F_x - F_y just after each point; W1 is the integral of its absolute value.
    """
    order = values.argsort(dim=0)
    v = values.gather(0, order)
    w = weights.gather(0, order)
    diff_cdf = w.cumsum(0)[:-1]
    gaps = v[1:] - v[:-1]
    return (diff_cdf.abs() * gaps).sum(0)


def _normalized_weights(w, n, name, like):
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    w = as_tensor(w, name).to(like.dtype).to(like.device)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    check_finite(w, name)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name} must be non-negative with a positive sum")
    return w / w.sum()


def wasserstein_1d(x, y, x_weights=None, y_weights=None) -> torch.Tensor:
    """Exact Wasserstein-1 distance between two 1-D (weighted) empirical distributions.

        W1(P, Q) = integral |F_P(t) - F_Q(t)| dt

    Args:
        x: ``(N,)`` values; y: ``(M,)`` values (sizes may differ).
        x_weights, y_weights: optional non-negative weights ``(N,)``, ``(M,)`` (normalised here).

    Returns:
        A 0-d tensor in the units of x.
    """
    x, y = as_tensor(x, "x"), as_tensor(y, "y")
    for t, n in ((x, "x"), (y, "y")):
        if t.dim() != 1:
            raise ValueError(f"{n} must be a 1-D tensor of values, got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{n} is empty")
        check_finite(t, n)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    wx = _normalized_weights(x_weights, len(x), "x_weights", x)
    wy = _normalized_weights(y_weights, len(y), "y_weights", x)
    values = torch.cat([x, y])[:, None]
    weights = torch.cat([wx, -wy])[:, None]
    return _w1_sorted(values, weights)[0]


def sliced_wasserstein(x, y, n_projections: int = 128, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced Wasserstein-1 distance: the mean of the exact W1 between the projections of
    the two samples on ``n_projections`` random unit directions (uniform on the sphere).

    Args:
        x: ``(N, D)``; y: ``(M, D)``.
        n_projections: number of directions (>= 1).
        generator: torch generator for the directions (reproducible results).

    Returns:
        A 0-d tensor in the units of x.
    """
    check_int(n_projections, "n_projections")
    if n_projections < 1:
        raise ValueError(f"n_projections must be a positive int, got {n_projections!r}")
    x = check_samples(as_tensor(x, "x"), "x")
    y = check_samples(as_tensor(y, "y"), "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension: {x.shape[1]} vs {y.shape[1]}")
    check_generator(generator)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=dtype,
                        device="cpu" if generator is None else generator.device).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    values = torch.cat([x @ theta, y @ theta])
    w = torch.cat([torch.full((len(x),), 1.0 / len(x), dtype=dtype),
                   torch.full((len(y),), -1.0 / len(y), dtype=dtype)]).to(x.device)
    weights = w[:, None].expand_as(values)
    return _w1_sorted(values, weights).mean()
