"""Property-based tests (hypothesis) of every op against its pure-PyTorch reference
(gencore.reference): random shapes with 0 and 1 sizes, non-contiguous strides, float32
and float64, hyper-parameters across their range (clamp 0 or 0.01..100, temperatures and
scales 0.01..100), outputs and every gradient. The example budget is fixed and the
search derandomized, so the suite is fast and the same on every run."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gencore import ops, reference

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
DTYPES = st.sampled_from([torch.float32, torch.float64])
HYPER = st.floats(0.01, 100.0)


def _tensor(draw, shape, dtype, scale=1.0, strided=False):
    """A tensor of ``shape``, non-contiguous when ``strided`` (a slice of a wider one)."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if strided and len(shape) >= 1:
        wide = torch.randn(*shape[:-1], 2 * shape[-1] + 1, generator=g, dtype=torch.float64)
        t = wide[..., 1::2]
    else:
        t = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (scale * t).to(dtype)


def _tol(dtype, scale=1.0):
    return dict(rtol=1e-9, atol=1e-9 * scale) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4 * scale)


def _compare(fn, ref, inputs, dtype, scale=1.0, seed=0):
    """Outputs of fn and ref (in float64 on the same inputs), then the gradients of a random
    projection of the outputs with respect to every input."""
    xs = [t.detach().clone().requires_grad_() for t in inputs]
    x64 = [t.detach().double().requires_grad_() for t in inputs]
    got, want = fn(*xs), ref(*x64)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    g = torch.Generator().manual_seed(seed)
    vs = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in want]
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        torch.testing.assert_close(a.double(), b.detach(), **_tol(dtype, scale))
    if not any(w.requires_grad for w in want):
        return
    ga = torch.autograd.grad(got, xs, [v.to(dtype) for v in vs], allow_unused=True)
    gb = torch.autograd.grad([w for w in want], x64, vs, allow_unused=True)
    for i, (a, b) in enumerate(zip(ga, gb)):
        b = torch.zeros_like(x64[i]) if b is None else b
        a = torch.zeros_like(xs[i]) if a is None else a
        torch.testing.assert_close(a.double(), b, **_tol(dtype, scale), msg=lambda m: f"grad {i}: {m}")


@st.composite
def coupling_case(draw):
    dtype = draw(DTYPES)
    shape = (draw(st.integers(0, 4)), *draw(st.lists(st.integers(0, 5), min_size=0, max_size=2)))
    strided = draw(st.booleans())
    x, ls, t = (_tensor(draw, shape, dtype, strided=strided) for _ in range(3))
    clamp = draw(st.one_of(st.just(0.0), HYPER))
    if clamp == 0.0:
        ls = ls.clamp(-3, 3)  # unclamped log-scales: keep exp(s) in range
    return dtype, x, ls, t, clamp, draw(st.booleans())


@SETTINGS
@given(coupling_case())
def test_affine_coupling_matches_reference(case):
    dtype, x, ls, t, clamp, reverse = case
    _compare(lambda *a: ops.affine_coupling(*a, clamp=clamp, reverse=reverse),
             lambda *a: reference.affine_coupling(*a, clamp=clamp, reverse=reverse), (x, ls, t), dtype,
             scale=max(1.0, math.exp(min(clamp, 3.0))))


@st.composite
def masked_case(draw):
    dtype = draw(DTYPES)
    b, c = draw(st.integers(0, 4)), draw(st.integers(2, 7))
    rest = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    mask, swap = draw(st.sampled_from(["half", "alternate"])), draw(st.booleans())
    n_b = reference.transformed_count(c, mask, swap)
    strided = draw(st.booleans())
    x = _tensor(draw, (b, c, *rest), dtype, strided=strided)
    p = _tensor(draw, (b, 2 * n_b, *rest), dtype, strided=strided)
    clamp = draw(st.one_of(st.just(0.0), HYPER))
    if clamp == 0.0:
        p = p.clamp(-3, 3)
    return dtype, x, p, mask, swap, clamp, draw(st.booleans())


@SETTINGS
@given(masked_case())
def test_masked_affine_coupling_matches_reference(case):
    dtype, x, p, mask, swap, clamp, reverse = case
    kw = dict(mask=mask, swap=swap, clamp=clamp, reverse=reverse)
    _compare(lambda *a: ops.masked_affine_coupling(*a, **kw), lambda *a: reference.masked_affine_coupling(*a, **kw),
             (x, p), dtype, scale=max(1.0, math.exp(min(clamp, 3.0))))


@st.composite
def reparam_case(draw):
    dtype = draw(DTYPES)
    shape = (draw(st.integers(0, 4)), *draw(st.lists(st.integers(0, 6), min_size=0, max_size=2)))
    strided = draw(st.booleans())
    mu = _tensor(draw, shape, dtype, strided=strided)
    lv = _tensor(draw, shape, dtype, scale=draw(st.floats(0.0, 3.0)), strided=strided)
    k = draw(st.one_of(st.none(), st.integers(1, 3)))
    # A learned prior (its log-variance up to 3 from the posterior's) or N(0, I).
    prior = None
    if draw(st.booleans()):
        prior = (_tensor(draw, shape, dtype, strided=strided),
                 _tensor(draw, shape, dtype, scale=draw(st.floats(0.0, 3.0)), strided=strided))
    return dtype, mu, lv, k, draw(st.integers(0, 2**62)), prior


@SETTINGS
@given(reparam_case())
def test_reparameterize_matches_reference(case):
    dtype, mu, lv, k, seed, prior = case
    # The kernel's normals (mu = 0, logvar = 0) from the same stream are the reference's eps.
    zero = torch.zeros_like(mu)
    eps = ops.reparameterize(zero, zero, n_samples=k, generator=torch.Generator().manual_seed(seed))[0]
    eps = eps.double()
    if prior is None:
        def fn(m, v):
            return ops.reparameterize(m, v, n_samples=k, generator=torch.Generator().manual_seed(seed))

        _compare(fn, lambda m, v: reference.reparameterize(m, v, n_samples=k, eps=eps), (mu, lv), dtype,
                 scale=10.0)
        return

    def fn_prior(m, v, pm, pv):
        return ops.reparameterize(m, v, prior_mu=pm, prior_logvar=pv, n_samples=k,
                                  generator=torch.Generator().manual_seed(seed))

    _compare(fn_prior, lambda m, v, pm, pv: reference.reparameterize(m, v, n_samples=k, eps=eps, prior_mu=pm,
                                                                     prior_logvar=pv),
             (mu, lv, *prior), dtype, scale=10.0 * math.exp(3.0))


def _features(draw, n, d, dtype, normalize):
    strided = draw(st.booleans())
    a = _tensor(draw, (n, d), dtype, strided=strided)
    if normalize and d > 0:
        a = F.normalize(a.double(), dim=1).to(dtype)
    return a


@st.composite
def pair_case(draw, max_n, min_d, normalize):
    """(dtype, a, b, hyper-parameter) for the paired losses; ``normalize``: None for
    unit-norm features in float32 and either in float64."""
    dtype = draw(DTYPES)
    n, d = draw(st.integers(1, max_n)), draw(st.integers(min_d, 9))
    if normalize is None:
        normalize = dtype == torch.float32 or draw(st.booleans())
    a, b = (_features(draw, n, d, dtype, normalize) for _ in range(2))
    return dtype, a, b, torch.tensor(draw(HYPER), dtype=dtype)


@SETTINGS
@given(pair_case(40, 0, None))
def test_clip_loss_matches_reference(case):
    dtype, a, b, s = case
    _compare(ops.clip_loss, reference.clip_loss, (a, b, s), dtype, scale=float(s) + 1)


@SETTINGS
@given(pair_case(30, 1, False))
def test_nt_xent_loss_matches_reference(case):
    dtype, a, b, t = case
    _compare(lambda x, y, tt: ops.nt_xent_loss(x, y, temperature=tt),
             lambda x, y, tt: reference.nt_xent_loss(x, y, temperature=tt), (a, b, t), dtype,
             scale=1 / float(t) + 1)


@st.composite
def rows_case(draw):
    dtype = draw(DTYPES)
    n, m, d = draw(st.integers(0, 20)), draw(st.integers(2, 25)), draw(st.integers(0, 8))
    q, k = _features(draw, n, d, dtype, True), _features(draw, m, d, dtype, True)
    positive = torch.tensor(draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n)), dtype=torch.int64)
    exclude = [draw(st.sampled_from([-1] + [j for j in range(m) if j != p])) for p in positive.tolist()]
    return dtype, q, k, torch.tensor(draw(HYPER), dtype=dtype), positive, torch.tensor(exclude, dtype=torch.int64)


@SETTINGS
@given(rows_case())
def test_contrastive_cross_entropy_matches_reference(case):
    dtype, q, k, s, positive, exclude = case
    if q.shape[0] == 0:  # a loss over no rows is refused, not NaN
        with pytest.raises(ValueError, match="must not be empty"):
            ops.contrastive_cross_entropy(q, k, s, positive, exclude)
        return
    _compare(lambda a, b, c: ops.contrastive_cross_entropy(a, b, c, positive, exclude),
             lambda a, b, c: reference.contrastive_cross_entropy(a, b, c, positive, exclude), (q, k, s), dtype,
             scale=float(s) + 1)


@st.composite
def sigmoid_case(draw):
    dtype = draw(DTYPES)
    n, m, d = draw(st.integers(1, 25)), draw(st.integers(1, 25)), draw(st.integers(0, 8))
    q, k = _features(draw, n, d, dtype, True), _features(draw, m, d, dtype, True)
    bias = torch.tensor(draw(st.floats(-20.0, 20.0)), dtype=dtype)
    return dtype, q, k, torch.tensor(draw(HYPER), dtype=dtype), bias, draw(st.integers(-n, m))


@SETTINGS
@given(sigmoid_case())
def test_sigmoid_contrastive_pairs_matches_reference(case):
    dtype, q, k, s, bias, offset = case
    _compare(lambda a, b, c, e: ops.sigmoid_contrastive_pairs(a, b, c, e, positive_offset=offset),
             lambda a, b, c, e: reference.sigmoid_contrastive_loss(a, b, c, e, positive_offset=offset),
             (q, k, s, bias), dtype, scale=float(s) + abs(float(bias)) + 1)


def _amax(t):
    return t.abs().max().item() if t.numel() else 0.0


@st.composite
def vq_case(draw):
    dtype = draw(DTYPES)
    n, k, d = draw(st.integers(0, 30)), draw(st.integers(1, 40)), draw(st.integers(0, 8))
    x = _tensor(draw, (n, d), dtype, strided=draw(st.booleans()))
    c = _tensor(draw, (k, d), dtype, scale=draw(st.floats(0.01, 100.0)), strided=draw(st.booleans()))
    if k > 1 and draw(st.booleans()):  # exact duplicates: ties to the lowest index
        c = torch.cat([c, c[: k // 2]])
    return x.requires_grad_(), c.requires_grad_(), draw(st.booleans())


@SETTINGS
@given(vq_case())
def test_nearest_code_is_a_nearest_code(case):
    x, c, cosine = case
    idx, sq = ops.nearest_code(x, c, cosine=cosine)
    assert idx.shape == sq.shape == (x.shape[0],)
    if x.shape[0] == 0:
        return
    xs, cs = (F.normalize(t.detach().double(), dim=1) if cosine else t.detach().double() for t in (x, c))
    dist = torch.cdist(xs, cs).pow(2) if xs.shape[1] else torch.zeros(len(xs), len(cs), dtype=torch.float64)
    eps = torch.finfo(x.dtype).eps
    tol = 64 * eps * (1 + dist.max(1).values)
    best = dist.min(1).values
    assert (dist.gather(1, idx[:, None]).squeeze(1) <= best + tol).all()
    # ties: no code before the chosen one is strictly nearer by more than rounding, and
    # an exact duplicate of an earlier code is never chosen
    first_at_min = (dist <= (best + tol)[:, None]).float().argmax(1)
    assert (idx >= first_at_min).all()
    dup = [j for j in range(len(cs)) if any(torch.equal(cs[j], cs[i]) for i in range(j))]
    assert not set(idx.tolist()) & set(dup)
    exact = (xs - cs[idx]).pow(2).sum(1)
    torch.testing.assert_close(sq.double(), exact, **_tol(x.dtype, scale=1 + _amax(exact)))
    if not cosine:  # the gradient: 2 (x - c_idx) to x, its negative summed into the chosen codes
        w = torch.randn(len(sq), dtype=torch.float64).to(x.dtype)
        gx, gc = torch.autograd.grad((sq * w).sum(), (x, c))
        want_x = 2 * w[:, None].double() * (x.detach().double() - c.detach().double()[idx])
        want_c = torch.zeros_like(c, dtype=torch.float64).index_add(0, idx, -want_x)
        torch.testing.assert_close(gx.double(), want_x, **_tol(x.dtype, scale=1 + _amax(want_x)))
        torch.testing.assert_close(gc.double(), want_c, **_tol(x.dtype, scale=1 + _amax(want_c)))


@st.composite
def spline_case(draw):
    dtype = draw(DTYPES)
    shape = (draw(st.integers(0, 4)), *draw(st.lists(st.integers(0, 4), min_size=0, max_size=2)))
    k = draw(st.integers(1, 10))
    strided = draw(st.booleans())
    bound = draw(st.floats(0.5, 5.0))
    scale = draw(st.floats(0.0, 2.0))
    x = _tensor(draw, shape, dtype, scale=bound, strided=strided)  # some elements in the tails
    w, h, d = (_tensor(draw, (*shape, n), dtype, scale=scale, strided=strided) for n in (k, k, k - 1))
    return dtype, x, w, h, d, bound, draw(st.booleans())


@SETTINGS
@given(spline_case())
def test_rq_spline_matches_reference(case):
    dtype, x, w, h, d, bound, reverse = case
    # Gradients through steep pieces of a spline (slopes up to ~50 at these parameters)
    # scale float32's rounding: compared relative to 50.
    _compare(lambda *a: ops.rq_spline(*a, bound=bound, reverse=reverse),
             lambda *a: reference.rq_spline(*a, bound=bound, reverse=reverse), (x, w, h, d), dtype, scale=50.0)
