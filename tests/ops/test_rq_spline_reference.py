"""gencore.reference.rq_spline: the materialized rational-quadratic spline (Durkan et al.
2019) that the fused op of the spline-flow work will be tested against. Checked here against
a scalar per-element evaluation, its knots and knot derivatives, the autograd Jacobian
(float64), its own inverse at random and extreme parameters, and gradcheck."""

import math

import pytest
import torch

from gencore.reference import RQ_MIN_DERIVATIVE, rq_spline, rq_spline_knots

#: the unnormalized derivative whose softplus (plus the minimum) is exactly 1
IDENTITY_DERIVATIVE = math.log(math.expm1(1 - RQ_MIN_DERIVATIVE))


def params(b, d, k, scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, d, n, generator=g, dtype=dtype) for n in (k, k, k - 1))


def scalar_spline(x: float, xk, yk, dk) -> tuple[float, float]:
    """One element, by a linear scan of the bins: (y, dy/dx)."""
    if not xk[0] <= x <= xk[-1]:
        return x, 1.0
    k = next(i for i in range(len(xk) - 1) if x <= xk[i + 1])
    w, h = xk[k + 1] - xk[k], yk[k + 1] - yk[k]
    s, t = h / w, (x - xk[k]) / w
    den = s + (dk[k + 1] + dk[k] - 2 * s) * t * (1 - t)
    y = yk[k] + h * (s * t * t + dk[k] * t * (1 - t)) / den
    dydx = s * s * (dk[k + 1] * t * t + 2 * s * t * (1 - t) + dk[k] * (1 - t) ** 2) / den ** 2
    return y, dydx


def test_matches_a_scalar_evaluation_inside_and_in_the_tails():
    w, h, d = params(4, 3, 5)
    x = torch.linspace(-4, 4, 12, dtype=torch.float64).reshape(4, 3)
    y, logdet = rq_spline(x, w, h, d, bound=3.0)
    xk, yk, dk = rq_spline_knots(w, h, d, 3.0)
    expect_ld = torch.zeros(4, dtype=torch.float64)
    for i in range(4):
        for j in range(3):
            ys, dydx = scalar_spline(x[i, j].item(), xk[i, j].tolist(), yk[i, j].tolist(), dk[i, j].tolist())
            assert y[i, j].item() == pytest.approx(ys, abs=1e-12)
            expect_ld[i] += math.log(dydx)
    assert torch.allclose(logdet, expect_ld, atol=1e-12)


def test_zero_parameters_with_unit_derivatives_are_the_identity():
    w, h = torch.zeros(2, 5, 8), torch.zeros(2, 5, 8)
    d = torch.full((2, 5, 7), IDENTITY_DERIVATIVE)
    x = torch.linspace(-3.5, 3.5, 10).reshape(2, 5)
    y, logdet = rq_spline(x, w, h, d)
    assert torch.allclose(y, x, atol=1e-6) and torch.allclose(logdet, torch.zeros(2), atol=1e-5)


def test_knots_map_to_knots_with_their_derivatives():
    w, h, d = params(3, 2, 6, scale=2.0)
    xk, yk, dk = rq_spline_knots(w, h, d, 2.5)
    assert (xk[..., 0] == -2.5).all() and (xk[..., -1] == 2.5).all() and (yk[..., -1] == 2.5).all()
    assert (xk.diff(dim=-1) > 0).all() and (yk.diff(dim=-1) > 0).all()
    assert (dk[..., 0] == 1).all() and (dk[..., -1] == 1).all() and (dk >= RQ_MIN_DERIVATIVE).all()
    for j in range(7):
        x = xk[..., j].clone().requires_grad_()
        y, _ = rq_spline(x, w, h, d, bound=2.5)
        assert torch.allclose(y, yk[..., j], atol=1e-12)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.allclose(grad, dk[..., j], rtol=1e-9), j


def test_logdet_is_the_log_of_the_autograd_jacobian():
    w, h, d = params(5, 4, 8, scale=1.5)
    x = (4 * torch.rand(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 2).requires_grad_()
    y, logdet = rq_spline(x, w, h, d, bound=1.5)  # some inputs in the tails
    jac = torch.autograd.functional.jacobian(lambda v: rq_spline(v, w, h, d, bound=1.5)[0], x.detach())
    diag = torch.stack([jac[i, :, i, :].diagonal() for i in range(5)])
    off = jac.abs().sum() - diag.abs().sum()
    assert off == 0  # elementwise
    assert torch.allclose(logdet, diag.log().sum(1), atol=1e-12)


def _extreme_case(scale, dtype):
    """64 x 6 elements, 10 bins. scale 8: softmax bins down to the minimum width and height
    (1e-3 of the interval) and derivatives from 1e-3 to e^8; the first 11 rows put an input at
    every knot of one element's spline, incl. -bound and +bound; the rest are uniform on
    [-3.5, 3.5], tails included."""
    w, h, d = params(64, 6, 10, scale=scale, dtype=dtype, seed=int(scale * 10))
    xk, _, _ = rq_spline_knots(w, h, d, 3.0)
    x = 7 * torch.rand(64, 6, dtype=dtype, generator=torch.Generator().manual_seed(2)) - 3.5
    x[:11] = xk[0, :, :].T
    w[:11], h[:11], d[:11] = w[:1], h[:1], d[:1]
    return x, w, h, d


# (dtype, bound on |x - inverse(forward(x))| * dy/dx, bound on |x - inverse(forward(x))| and
# on |logdet + inverse logdet| at scale 0.5). Measured: float64 6e-14 / 2e-15 / 2e-14,
# float32 3.7e-5 / 2.4e-6 / 2.9e-6.
TOLERANCES = [(torch.float64, 1e-12, 1e-12), (torch.float32, 1e-4, 1e-5)]


@pytest.mark.parametrize("dtype, out_tol, x_tol", TOLERANCES)
@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_round_trip_is_as_good_as_the_splines_conditioning(scale, dtype, out_tol, x_tol):
    """The inverse undoes the forward up to the spline's conditioning: the error in x, times
    the local slope dy/dx, is a rounding error of y. Where the spline is nearly flat (slopes
    down to 1e-7 at scale 8) no inverse in the same precision can recover x better: one
    rounding step of y spans 1e-7 / slope in x (float32 at scale 8: errors in x up to 0.7).
    At moderate parameters (scale 0.5: slopes >= 0.04) x and the log-determinant come back
    to x_tol; in float64 the log-determinants cancel to 1e-8 at every scale."""
    x, w, h, d = _extreme_case(scale, dtype)
    y, ld = rq_spline(x, w, h, d)
    back, ld_inv = rq_spline(y, w, h, d, reverse=True)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all() and torch.isfinite(back).all()
    x64 = x.double().requires_grad_()
    (slope,) = torch.autograd.grad(rq_spline(x64, w.double(), h.double(), d.double())[0].sum(), x64)
    err = (back.double() - x.double()).abs()
    assert (err * slope).max() <= out_tol
    if scale == 0.5:
        assert err.max() <= x_tol and (ld + ld_inv).abs().max() <= x_tol
    if dtype == torch.float64:
        assert (ld + ld_inv).abs().max() <= 1e-8


def test_monotonic():
    w, h, d = params(1, 1, 12, scale=4.0)
    x = torch.linspace(-3, 3, 20001, dtype=torch.float64)
    y, _ = rq_spline(x[:, None], w.expand(len(x), 1, 12), h.expand(len(x), 1, 12), d.expand(len(x), 1, 11))
    assert (y.squeeze(1).diff() > 0).all()


def test_gradcheck_float64():
    w, h, d = params(3, 2, 4)
    x = torch.tensor([[-3.5, -0.7], [0.2, 1.9], [2.4, 3.2]], dtype=torch.float64)
    for reverse in (False, True):
        inputs = [t.clone().requires_grad_() for t in (x, w, h, d)]
        assert torch.autograd.gradcheck(lambda *a: rq_spline(*a, reverse=reverse), inputs)
