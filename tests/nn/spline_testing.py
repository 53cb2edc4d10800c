"""Checks shared by the spline layers' tests (SplineCoupling, AutoregressiveSpline)."""

import math

import torch

from gencore import reference as R


def randomize(m, scale=0.3, seed=0):
    """Add seeded noise of ``scale`` to every parameter (the zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def assert_parameters_scaled_and_offset(params, raw, bins, scale):
    """``params`` = the layer's (widths, heights, derivatives) for the conditioner output
    ``raw`` (..., 3K - 1): widths and heights times ``scale``, derivatives offset to the identity."""
    w, h, d = params
    torch.testing.assert_close(w, raw[..., :bins] * scale)
    torch.testing.assert_close(h, raw[..., bins:2 * bins] * scale)
    torch.testing.assert_close(d, raw[..., 2 * bins:] + math.log(math.expm1(1 - R.RQ_MIN_DERIVATIVE)))
