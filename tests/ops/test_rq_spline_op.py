"""gencore.ops.rq_spline against its materialized reference (gencore.reference.rq_spline):
values and log-determinants in both directions, gradients (gradcheck, the reference's
autograd, the Jacobian), round trips at random and extreme parameters, knots and bounds,
tails, views read in place, K = 1, empty inputs, opcheck, compile, torch.func,
thread-count independence, bad inputs and CUDA against CPU."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gencore.reference as R
from gencore.ops import rq_spline

IDENTITY_DERIVATIVE = math.log(math.expm1(1 - R.RQ_MIN_DERIVATIVE))


def params(shape, k, scale=1.0, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple((scale * torch.randn(*shape, n, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)
                 for n in (k, k, k - 1))


def inputs(shape, bound, dtype=torch.float64, device="cpu", seed=1, spread=1.2):
    """Uniform on [-spread bound, spread bound]: some elements in the tails."""
    g = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(*shape, generator=g, dtype=torch.float64) - 1) * spread * bound
    return x.to(dtype=dtype, device=device)


def slope(x, w, h, d, bound):
    """dy/dx of the forward map at x (float64, by the reference's autograd)."""
    x = x.detach().double().requires_grad_()
    y, _ = R.rq_spline(x, w.double(), h.double(), d.double(), bound=bound)
    (g,) = torch.autograd.grad(y.sum(), x)
    return g


SHAPES = [((1,), 1), ((5,), 3), ((7, 4), 8), ((3, 2, 5), 5), ((2, 3, 4, 2), 16), ((64, 33), 8)]


# ----------------------------------------------------------------- values -----------------
@pytest.mark.parametrize("shape,k", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference_float64(device, shape, k, reverse):
    w, h, d = params(shape, k, scale=1.5, device=device)
    x = inputs(shape, 2.0, device=device)
    y, ld = rq_spline(x, w, h, d, bound=2.0, reverse=reverse)
    yr, ldr = R.rq_spline(x, w, h, d, bound=2.0, reverse=reverse)
    assert y.shape == x.shape and ld.shape == x.shape[:1] and y.is_contiguous()
    torch.testing.assert_close(y, yr, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ld, ldr, atol=1e-11, rtol=1e-11)


def assert_error_like_the_reference(got, ref_t, ref, dtype):
    """The FlashAttention rule, made robust to the worst-conditioned element: against the
    float64 ``ref``, the op's mean and 99th-percentile errors are at most twice those of
    ``ref_t`` (the reference in low precision), its largest at most 8 times (a spline's
    steepest or flattest piece amplifies a one-ulp difference in a knot; on an H200 the
    single worst of 8192 float32 elements was 2.3x (forward) and 3.8x (inverse) the
    reference's), each plus a few ulps of the output's size."""
    slack = 4 * torch.finfo(dtype).eps * ref.abs().max().item()
    err, ref_err = (got.double() - ref).abs().flatten(), (ref_t.double() - ref).abs().flatten()
    for stat, factor in ((lambda e: e.mean(), 2), (lambda e: e.quantile(0.99), 2), (lambda e: e.max(), 8)):
        assert stat(err).item() <= factor * stat(ref_err).item() + slack, (stat(err).item(), stat(ref_err).item())


@pytest.mark.parametrize("reverse", [False, True])
def test_float32_error_at_most_twice_the_reference(device, reverse):
    w, h, d = params((512, 16), 8, scale=2.0, dtype=torch.float32, device=device)
    x = inputs((512, 16), 3.0, dtype=torch.float32, device=device)
    y, ld = rq_spline(x, w, h, d, reverse=reverse)
    y64, ld64 = R.rq_spline(x.double(), w.double(), h.double(), d.double(), reverse=reverse)
    y32, ld32 = R.rq_spline(x, w, h, d, reverse=reverse)
    assert_error_like_the_reference(y, y32, y64, torch.float32)
    assert_error_like_the_reference(ld, ld32, ld64, torch.float32)


def test_tails_are_the_identity_and_nan_passes_through():
    w, h, d = params((4, 3), 6, scale=3.0)
    x = torch.tensor([[-5.0, 3.0001, 1e30], [-1e30, math.inf, -math.inf], [math.nan, 0.0, 2.0],
                      [-3.0, 3.0, -2.9999]], dtype=torch.float64)
    y, ld = rq_spline(x, w, h, d)
    tails = x.abs() > 3
    assert torch.equal(y[tails], x[tails]) and math.isnan(y[2, 0])
    assert torch.isfinite(ld[[0, 1, 3]]).all() and ld[0] == 0 and ld[1] == 0
    # +-bound map to +-bound exactly, with derivative 1 (the end knots)
    assert y[3, 0] == -3.0 and y[3, 1] == 3.0


def test_zero_parameters_with_unit_derivatives_are_the_identity(device):
    w = torch.zeros(3, 4, 8, device=device)
    d = torch.full((3, 4, 7), IDENTITY_DERIVATIVE, device=device)
    x = inputs((3, 4), 3.0, dtype=torch.float32, device=device)
    y, ld = rq_spline(x, w, w, d)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld, torch.zeros(3, device=device), atol=1e-5, rtol=0)


def test_one_bin_is_the_identity():
    x = inputs((6, 5), 3.0)
    y, ld = rq_spline(x, torch.randn(6, 5, 1, dtype=torch.float64), torch.randn(6, 5, 1, dtype=torch.float64),
                      torch.empty(6, 5, 0, dtype=torch.float64))
    torch.testing.assert_close(y, x, atol=1e-14, rtol=0)
    assert ld.abs().max() < 1e-14


def test_knots_map_to_knots_with_their_derivatives():
    w, h, d = params((3, 2), 6, scale=2.0)
    xk, yk, dk = R.rq_spline_knots(w, h, d, 2.5)
    for j in range(7):
        x = xk[..., j].clone().requires_grad_()
        y, _ = rq_spline(x, w, h, d, bound=2.5)
        torch.testing.assert_close(y, yk[..., j], atol=1e-12, rtol=0)
        (grad,) = torch.autograd.grad(y.sum(), x)
        torch.testing.assert_close(grad, dk[..., j], rtol=1e-9, atol=0)
        back, _ = rq_spline(yk[..., j], w, h, d, bound=2.5, reverse=True)
        torch.testing.assert_close(back, xk[..., j], atol=1e-12, rtol=0)


def test_parameter_views_are_read_in_place_with_the_same_result():
    # A conditioner's output sliced into widths / heights / derivatives: strided rows.
    g = torch.Generator().manual_seed(3)
    k = 5
    out = torch.randn(6, 4, 3 * k - 1 + 2, generator=g, dtype=torch.float64)
    w, h, d = out[..., :k], out[..., k:2 * k], out[..., 2 * k:3 * k - 1]
    x = inputs((6, 4), 3.0)
    for args in ((w, h, d), (w.contiguous(), h.contiguous(), d.contiguous())):
        y, ld = rq_spline(x, *args)
        yr, ldr = R.rq_spline(x, w, h, d)
        torch.testing.assert_close(y, yr, atol=1e-12, rtol=0)
        torch.testing.assert_close(ld, ldr, atol=1e-12, rtol=0)
    # non-flattening views (a transposed parameter tensor) go through a copy
    wt = torch.randn(4, 6, k, dtype=torch.float64).transpose(0, 1)
    y, _ = rq_spline(x, wt, h, d)
    torch.testing.assert_close(y, R.rq_spline(x, wt, h, d)[0], atol=1e-12, rtol=0)
    xt = torch.randn(4, 6, dtype=torch.float64).T  # a non-contiguous x
    y, _ = rq_spline(xt, w, h, d)
    torch.testing.assert_close(y, R.rq_spline(xt, w, h, d)[0], atol=1e-12, rtol=0)


def test_empty_inputs(device):
    for shape in ((0, 3), (4, 0), (0,)):
        x = torch.empty(shape, device=device)
        w, h, d = (torch.empty(*shape, n, device=device) for n in (4, 4, 3))
        y, ld = rq_spline(x, w, h, d)
        assert y.shape == x.shape and ld.shape == (shape[0],) and (ld == 0).all()
        xr = x.clone().requires_grad_()
        wr = w.clone().requires_grad_()
        y, ld = rq_spline(xr, wr, h, d)
        (y.sum() + ld.sum()).backward()
        assert xr.grad.shape == x.shape and wr.grad.shape == w.shape


# ----------------------------------------------------------------- round trips ------------
def _extreme_params(b, dim, k, seed=0):
    """Near-zero bins (one logit far above the rest), large and tiny derivatives, mixed."""
    g = torch.Generator().manual_seed(seed)
    w = 3 * torch.randn(b, dim, k, generator=g)
    h = 3 * torch.randn(b, dim, k, generator=g)
    d = 3 * torch.randn(b, dim, k - 1, generator=g)
    w[0::4, :, 0] = 40.0   # every other bin at the minimum width
    h[1::4, :, -1] = 40.0  # ... and height
    d[2::4] = 25.0         # derivatives ~25 at every interior knot
    d[3::4] = -25.0        # derivatives at the minimum 1e-3
    return w, h, d


@pytest.mark.parametrize("extreme", [False, True])
def test_round_trip_float32(device, extreme):
    # |x - inverse(forward(x))| is bounded by 1e-5 where the spline is not flatter than
    # slope 1, and by 1e-5 / slope where it is (one rounding step of y spans eps / slope
    # of x: no inverse in float32 does better there). Inputs include the knots and +-bound.
    b, dim, k, bound = 256, 8, 8, 3.0
    w, h, d = _extreme_params(b, dim, k) if extreme else params((b, dim), k, scale=2.0, dtype=torch.float32)
    x = inputs((b, dim), bound, dtype=torch.float32, spread=1.0)
    xk, _, _ = R.rq_spline_knots(w.double(), h.double(), d.double(), bound)
    x[:, 0] = xk[:, 0, 3].float()  # interior knots
    x[:, 1], x[:, 2] = -bound, bound
    w, h, d, x = (t.to(device) for t in (w, h, d, x))
    y, ld = rq_spline(x, w, h, d, bound=bound)
    back, ld_back = rq_spline(y, w, h, d, bound=bound, reverse=True)
    assert torch.isfinite(back).all() and torch.isfinite(ld_back).all()
    s = slope(x.cpu(), w.cpu(), h.cpu(), d.cpu(), bound)
    err = (back.cpu().double() - x.cpu().double()).abs()
    assert (err * s.clamp(max=1.0)).max() <= 1e-5, (err * s.clamp(max=1)).max()
    # (the round trip of y, for the steep parts: |forward(inverse(y)) - y| <= 1e-5 * max(1, slope))
    y2, _ = rq_spline(back, w, h, d, bound=bound)
    yerr = (y2.cpu().double() - y.cpu().double()).abs()
    assert (yerr / s.clamp(min=1.0)).max() <= 1e-5


def test_round_trip_float64_extreme():
    w, h, d = (t.double() for t in _extreme_params(64, 6, 10, seed=4))
    x = inputs((64, 6), 3.0, spread=1.0)
    y, ld = rq_spline(x, w, h, d)
    back, ld_back = rq_spline(y, w, h, d, reverse=True)
    s = slope(x, w, h, d, 3.0)
    assert ((back - x).abs() * s.clamp(max=1.0)).max() <= 1e-12
    torch.testing.assert_close(ld_back, -ld, atol=1e-8, rtol=0)


def test_inverse_is_accurate_where_the_textbook_root_cancels():
    # A large derivative at the top knot and an output near the top of the bin: the root
    # 2c / (-b - sqrt(disc)) alone cancels there (b < 0); the op switches to the other form.
    w = torch.zeros(1, 1, 2)
    h = torch.zeros(1, 1, 2)
    d = torch.full((1, 1, 1), 12.0)  # d_1 = 12 at the middle knot
    x = torch.linspace(-0.5, -1e-4, 50).reshape(50, 1)  # approaching the middle knot (0)
    ww, hh, dd = (t.expand(50, 1, t.shape[-1]).contiguous() for t in (w, h, d))
    y, _ = rq_spline(x, ww, hh, dd)
    back, _ = rq_spline(y, ww, hh, dd, reverse=True)
    back64, _ = R.rq_spline(y.double(), ww.double(), hh.double(), dd.double(), reverse=True)
    err, ref_err = (back.double() - back64).abs().max(), (R.rq_spline(y, ww, hh, dd, reverse=True)[0].double()
                                                          - back64).abs().max()
    assert err <= 4e-7 and err <= ref_err, (err, ref_err)


# ----------------------------------------------------------------- gradients --------------
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_float64(reverse):
    w, h, d = (t.requires_grad_() for t in params((3, 4), 5, scale=1.5, seed=7))
    x = inputs((3, 4), 1.5, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: rq_spline(*a, bound=1.5, reverse=reverse), (x, w, h, d))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_equal_the_reference_autograd(device, reverse):
    w, h, d = (t.requires_grad_() for t in params((32, 6), 7, scale=2.0, device=device, seed=2))
    x = inputs((32, 6), 2.0, device=device).requires_grad_()
    gy, gl = torch.randn_like(x), torch.randn(32, dtype=x.dtype, device=device)
    y, ld = rq_spline(x, w, h, d, bound=2.0, reverse=reverse)
    yr, ldr = R.rq_spline(x, w, h, d, bound=2.0, reverse=reverse)
    got = torch.autograd.grad((y * gy).sum() + (ld * gl).sum(), (x, w, h, d))
    want = torch.autograd.grad((yr * gy).sum() + (ldr * gl).sum(), (x, w, h, d))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("reverse", [False, True])
def test_logdet_is_the_log_of_the_autograd_jacobian(reverse):
    w, h, d = params((5, 4), 8, scale=1.5, seed=5)
    x = inputs((5, 4), 1.5, seed=6)
    _, ld = rq_spline(x, w, h, d, bound=1.5, reverse=reverse)
    jac = torch.autograd.functional.jacobian(lambda v: rq_spline(v, w, h, d, bound=1.5, reverse=reverse)[0], x)
    diag = torch.stack([jac[i, :, i, :].diagonal() for i in range(5)])
    assert jac.abs().sum() == diag.abs().sum()  # elementwise
    torch.testing.assert_close(ld, diag.log().sum(1), atol=1e-12, rtol=0)


def test_only_the_needed_gradients():
    w, h, d = params((4, 3), 5)
    x = inputs((4, 3), 3.0).requires_grad_()
    y, ld = rq_spline(x, w, h, d)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert gx.shape == x.shape
    wr = w.clone().requires_grad_()
    _, ld = rq_spline(x.detach(), wr, h, d)
    (gw,) = torch.autograd.grad(ld.sum(), wr)
    assert gw.shape == w.shape and torch.isfinite(gw).all()


def test_second_derivative_is_refused():
    w, h, d = params((4, 3), 5)
    x = inputs((4, 3), 3.0).requires_grad_()
    y, _ = rq_spline(x, w, h, d)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative of gencore.ops.rq_spline"):
        torch.autograd.grad(g.sum(), x)


def test_torch_func_grad_and_refused_jvp():
    w, h, d = params((4, 3), 5)
    x = inputs((4, 3), 3.0)
    f = lambda v: rq_spline(v, w, h, d)[1].sum()  # noqa: E731
    g = torch.func.grad(f)(x)
    xr = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(rq_spline(xr, w, h, d)[1].sum(), xr)
    torch.testing.assert_close(g, want)
    with pytest.raises(RuntimeError, match="no forward-mode derivative"):
        torch.func.jvp(f, (x,), (torch.ones_like(x),))
    batched = torch.func.vmap(lambda v: rq_spline(v, w, h, d)[0])(x.expand(2, 4, 3))
    torch.testing.assert_close(batched[1], rq_spline(x, w, h, d)[0])


# ----------------------------------------------------------------- op checks --------------
def test_opcheck(device):
    w, h, d = params((4, 3), 5, device=device)
    x = inputs((4, 3), 3.0, device=device).requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.gencore.rq_spline.default, (x, w, h, d))
    torch.library.opcheck(torch.ops.gencore.rq_spline.default, (x, w, h, d), {"bound": 2.0, "reverse": True})


def test_torch_compile_fullgraph():
    w, h, d = (t.float().requires_grad_() for t in params((8, 4), 6))
    x = inputs((8, 4), 3.0, dtype=torch.float32).requires_grad_()

    def nll(x, w, h, d):
        z, ld = rq_spline(x, w, h, d)
        return (0.5 * z.pow(2).sum(1) - ld).mean()

    compiled = torch.compile(nll, fullgraph=True, backend="aot_eager")
    out, ref = compiled(x, w, h, d), nll(x, w, h, d)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(out, (x, w))
    g2 = torch.autograd.grad(ref, (x, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_result_independent_of_thread_count():
    w, h, d = params((3, 9000), 8, dtype=torch.float32)  # rows longer than one CPU chunk
    x = inputs((3, 9000), 3.0, dtype=torch.float32)
    n = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xr = x.clone().requires_grad_()
            y, ld = rq_spline(xr, w, h, d)
            (g,) = torch.autograd.grad(ld.sum(), xr)
            outs.append((y, ld, g))
    finally:
        torch.set_num_threads(n)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_meta_tensors_give_shapes():
    m = torch.device("meta")
    y, ld = rq_spline(torch.empty(5, 3, device=m), torch.empty(5, 3, 4, device=m), torch.empty(5, 3, 4, device=m),
                      torch.empty(5, 3, 3, device=m))
    assert y.shape == (5, 3) and ld.shape == (5,) and y.device.type == "meta"


# ----------------------------------------------------------------- property ---------------
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(b=st.integers(1, 6), dim=st.integers(1, 5), k=st.integers(1, 12), bound=st.floats(0.5, 8.0),
       scale=st.floats(0.0, 6.0), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_property_matches_reference_and_inverts(b, dim, k, bound, scale, reverse, seed):
    w, h, d = params((b, dim), k, scale=scale, seed=seed)
    x = inputs((b, dim), bound, seed=seed + 1)
    y, ld = rq_spline(x, w, h, d, bound=bound, reverse=reverse)
    yr, ldr = R.rq_spline(x, w, h, d, bound=bound, reverse=reverse)
    torch.testing.assert_close(y, yr, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ld, ldr, atol=1e-9, rtol=1e-9)
    back, ld_back = rq_spline(y, w, h, d, bound=bound, reverse=not reverse)
    torch.testing.assert_close(ld_back, -ld, atol=1e-8, rtol=0)
    assert ((back - x).abs() <= 1e-9 * (1 + x.abs()) / torch.clamp(slope(x, w, h, d, bound), max=1.0)).all() \
        if not reverse else torch.isfinite(back).all()


# ----------------------------------------------------------------- bad inputs -------------
def test_bad_inputs():
    x = torch.randn(4, 3)
    w, h, d = torch.randn(4, 3, 5), torch.randn(4, 3, 5), torch.randn(4, 3, 4)
    with pytest.raises(ValueError, match=r"heights must have shape x.shape \+ \(5,\) = \[4, 3, 5\], got \[4, 3, 6\]"):
        rq_spline(x, w, torch.randn(4, 3, 6), d)
    with pytest.raises(ValueError, match=r"derivatives must have shape x.shape \+ \(4,\)"):
        rq_spline(x, w, h, torch.randn(4, 3, 5))
    with pytest.raises(ValueError, match=r"widths must have shape x.shape \+ \(K,\)"):
        rq_spline(x, torch.randn(4, 5), h, d)
    with pytest.raises(ValueError, match=r"widths must have shape"):
        rq_spline(x, torch.randn(4, 2, 5), h, d)
    with pytest.raises(ValueError, match=r"K = widths.shape\[-1\] must be in \[1, 999\]"):
        rq_spline(x, torch.randn(4, 3, 0), torch.randn(4, 3, 0), torch.randn(4, 3, 0))
    with pytest.raises(ValueError, match=r"must be in \[1, 999\]"):
        rq_spline(torch.randn(1), torch.randn(1, 1000), torch.randn(1, 1000), torch.randn(1, 999))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        rq_spline(torch.tensor(0.5), torch.randn(5), torch.randn(5), torch.randn(4))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="bound must be a finite number > 0"):
            rq_spline(x, w, h, d, bound=bad)
    with pytest.raises(TypeError, match="bound must be a float"):
        rq_spline(x, w, h, d, bound=True)
    with pytest.raises(TypeError, match="reverse must be a bool"):
        rq_spline(x, w, h, d, reverse=1)
    with pytest.raises(TypeError, match="same dtype"):
        rq_spline(x, w.double(), h, d)
    with pytest.raises(TypeError, match="floating"):
        rq_spline(x.long(), w.long(), h.long(), d.long())
    with pytest.raises(TypeError, match="float32 or float64"):
        rq_spline(x.half(), w.half(), h.half(), d.half())
    with pytest.raises(TypeError, match="x must be a tensor"):
        rq_spline([1.0], w, h, d)
    with pytest.raises(ValueError, match="same device"):
        rq_spline(x, w.to("meta"), h, d)
    with pytest.raises(ValueError, match="same device"):
        rq_spline(x.to("meta"), w, h, d)


def test_nan_parameters_give_nan_not_a_crash():
    w, h, d = params((4, 3), 5)
    w[0, 0, 2] = math.nan
    d[1, 1, 0] = math.nan
    x = torch.zeros(4, 3, dtype=torch.float64)
    y, ld = rq_spline(x, w, h, d)
    assert math.isnan(y[0, 0]) and torch.isfinite(y[2:]).all() and torch.isfinite(ld[2:]).all()


# ----------------------------------------------------------------- CUDA -------------------
@pytest.mark.cuda
@pytest.mark.parametrize("shape,k", [((1,), 1), ((97, 33), 8), ((3, 4100), 16), ((2, 3, 5, 7), 5), ((4096, 64), 8)])
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_matches_cpu(shape, k, reverse):
    w, h, d = params(shape, k, scale=2.0)
    x = inputs(shape, 3.0)
    xr = x.clone().requires_grad_()
    args = [t.clone().requires_grad_() for t in (w, h, d)]
    y, ld = rq_spline(xr, *args, reverse=reverse)
    xc = x.cuda().requires_grad_()
    argc = [t.cuda().requires_grad_() for t in (w, h, d)]
    yc, ldc = rq_spline(xc, *argc, reverse=reverse)
    # float64 on both, but CUDA's exp and log and its fused multiply-adds round differently
    # from the CPU's: on an H200, y differed by up to 3.5e-12 (1 element in 262144).
    torch.testing.assert_close(yc.cpu(), y, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ldc.cpu(), ld, atol=1e-9, rtol=1e-9)
    gy = torch.randn_like(x)
    g = torch.autograd.grad((y * gy).sum() + ld.sum(), (xr, *args))
    gc = torch.autograd.grad((yc * gy.cuda()).sum() + ldc.sum(), (xc, *argc))
    for a, b in zip(gc, g):
        # K = 1 has no interior derivatives: an empty gradient, which has no max.
        top = b.abs().max().item() if b.numel() else 0.0
        torch.testing.assert_close(a.cpu(), b, atol=1e-8 * (1 + top), rtol=1e-8)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_like_the_reference(dtype):
    w, h, d = params((512, 16), 8, scale=2.0, dtype=dtype, device="cuda")
    x = inputs((512, 16), 3.0, dtype=dtype, device="cuda")
    y, ld = rq_spline(x, w, h, d)
    y64, ld64 = R.rq_spline(x.double(), w.double(), h.double(), d.double())
    # The materialized reference run in bfloat16 gives NaN (its cumulative sums collapse
    # knots: seen on an H200): the half types are held to the float32 reference on the
    # same rounded inputs, rounded to the dtype once, the best a float32 computation can do.
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    yt, ldt = R.rq_spline(*(t.to(ref_dtype) for t in (x, w, h, d)))
    assert_error_like_the_reference(y, yt.to(dtype), y64, dtype)
    assert_error_like_the_reference(ld, ldt.to(dtype), ld64, dtype)


def test_no_temporary_of_the_parameters_size():
    # The op allocates its outputs and nothing of size (B, D, K): forward, y and logdet
    # (the reference: about 10 tensors of the parameters' size); forward+backward, also the
    # four gradients, which are as large as the inputs.
    from gencore.benchmarks.harness import peak_memory

    b, dim, k = 256, 64, 16
    w, h, d = (t.float().requires_grad_() for t in params((b, dim), k))
    x = inputs((b, dim), 3.0, dtype=torch.float32).requires_grad_()
    mib = 2.0 ** -20
    x_bytes, param_bytes = x.numel() * 4, sum(t.numel() * 4 for t in (w, h, d))
    fwd = peak_memory(lambda: rq_spline(x, w, h, d), torch.device("cpu"))
    assert fwd <= (x_bytes + 4 * b + 4096) * mib, fwd
    ref_fwd = peak_memory(lambda: R.rq_spline(x, w, h, d), torch.device("cpu"))
    assert ref_fwd > param_bytes * mib  # (the reference's temporaries, for scale)

    def full():
        y, ld = rq_spline(x, w, h, d)
        return torch.autograd.grad(y.sum() + ld.sum(), (x, w, h, d))

    both = peak_memory(full, torch.device("cpu"))
    assert both <= (2 * x_bytes + param_bytes + 8 * b + 65536) * mib, both
