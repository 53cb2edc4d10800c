"""gencore.metrics divergences against scipy, torch.distributions and the lecture's closed forms."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.special import ndtr

from gencore import metrics as M


def rand_probs(*shape, seed=0, zeros=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(*shape, generator=g, dtype=torch.float64)
    if zeros:
        p[..., ::3] = 0
    return p / p.sum(-1, keepdim=True)


def test_kl_matches_scipy_entropy():
    p, q = rand_probs(6, 11, seed=1), rand_probs(6, 11, seed=2)
    got = M.kl_divergence(p, q)
    want = [scipy.stats.entropy(a, b) for a, b in zip(p.numpy(), q.numpy())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_kl_zeros_and_infinity():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert M.kl_divergence(p, q).item() == pytest.approx(math.log(2), rel=1e-6)
    assert M.kl_divergence(q, p).item() == math.inf
    np.testing.assert_allclose(M.kl_divergence(p, q).item(), scipy.stats.entropy(p.numpy(), q.numpy()), rtol=1e-6)


def test_properties_symmetry_bounds_and_zero_for_equal():
    p, q = rand_probs(20, 7, seed=3, zeros=True), rand_probs(20, 7, seed=4)
    tv = M.total_variation(p, q)
    torch.testing.assert_close(tv, M.total_variation(q, p))
    assert ((tv >= 0) & (tv <= 1)).all()
    for name in M.F_DIVERGENCES:
        d = M.f_divergence(p, q, name)
        assert (d >= -1e-12).all(), name
        torch.testing.assert_close(M.f_divergence(p, p, name), torch.zeros(20, dtype=torch.float64),
                                   atol=1e-12, rtol=0)
    assert (M.f_divergence(p, q, "hellinger") <= 1).all()
    assert (M.f_divergence(p, q, "js") <= math.log(2) + 1e-12).all()
    # Disjoint supports: TV = 1, JS = ln 2, KL = inf.
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert M.total_variation(a, b).item() == 1
    assert M.f_divergence(a, b, "js").item() == pytest.approx(math.log(2))
    assert M.kl_divergence(a, b).item() == math.inf


def test_named_f_divergences_match_their_generators():
    p, q = rand_probs(5, 9, seed=5), rand_probs(5, 9, seed=6)  # q > 0 everywhere
    gens = {
        "kl": lambda t: t * torch.log(t),
        "reverse_kl": lambda t: -torch.log(t),
        "tv": lambda t: (t - 1).abs() / 2,
        "hellinger": lambda t: (t.sqrt() - 1) ** 2 / 2,
        "js": lambda t: (t * torch.log(t) - (1 + t) * torch.log((1 + t) / 2)) / 2,
        "chi2": lambda t: (t - 1) ** 2,
    }
    for name, f in gens.items():
        torch.testing.assert_close(M.f_divergence(p, q, name), M.f_divergence(p, q, f), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(M.f_divergence(p, q, "reverse_kl"), M.kl_divergence(q, p))
    # JS against scipy's distance (its square is the divergence, in nats with base e).
    from scipy.spatial.distance import jensenshannon
    want = [jensenshannon(a, b) ** 2 for a, b in zip(p.numpy(), q.numpy())]
    np.testing.assert_allclose(M.f_divergence(p, q, "js").numpy(), want, rtol=1e-9)


def test_callable_with_q_zero_uses_slope_at_infinity():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])
    tv_like = M.f_divergence(p, q, lambda t: (t - 1).abs() / 2, f_slope_at_infinity=0.5)
    assert tv_like.item() == pytest.approx(M.total_variation(p, q).item())
    assert M.f_divergence(p, q, lambda t: t * torch.log(t)).item() == math.inf


def test_lecture_closed_forms_for_unit_gaussians():
    """N(0, 1) vs N(eps, 1): KL = eps^2 / 2 and TV = 2 Phi(eps / 2) - 1 (discretised densities)."""
    grid = torch.linspace(-12, 13, 200001, dtype=torch.float64)
    for eps in (0.1, 0.5, 2.0):
        p = torch.exp(-grid ** 2 / 2)
        q = torch.exp(-(grid - eps) ** 2 / 2)
        p, q = p / p.sum(), q / q.sum()
        assert M.kl_divergence(p, q).item() == pytest.approx(eps ** 2 / 2, rel=1e-6)
        assert M.total_variation(p, q).item() == pytest.approx(2 * ndtr(eps / 2) - 1, rel=1e-4)
        kl_closed = M.gaussian_kl(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([eps]), torch.tensor([1.0]))
        assert kl_closed.item() == pytest.approx(eps ** 2 / 2, rel=1e-6)


def random_spd(d, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, d, d, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64)


def test_gaussian_kl_full_matches_torch_distributions():
    d = 5
    g = torch.Generator().manual_seed(7)
    mu0, mu1 = torch.randn(4, d, generator=g, dtype=torch.float64), torch.randn(4, d, generator=g, dtype=torch.float64)
    s0, s1 = random_spd(d, (4,), seed=8), random_spd(d, (4,), seed=9)
    want = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu0, covariance_matrix=s0),
        torch.distributions.MultivariateNormal(mu1, covariance_matrix=s1))
    torch.testing.assert_close(M.gaussian_kl(mu0, s0, mu1, s1), want, rtol=1e-10, atol=1e-10)


def test_gaussian_kl_diagonal_and_mixed():
    g = torch.Generator().manual_seed(10)
    mu0, mu1 = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    v0, v1 = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1, torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1
    want = torch.distributions.kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(mu0, v0.sqrt()), 1),
        torch.distributions.Independent(torch.distributions.Normal(mu1, v1.sqrt()), 1))
    torch.testing.assert_close(M.gaussian_kl(mu0, v0, mu1, v1), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.gaussian_kl(mu0, v0, mu1, torch.diag_embed(v1)), want, rtol=1e-10, atol=1e-10)
    assert M.gaussian_kl(mu0, v0, mu0, v0).abs().max() < 1e-12


@pytest.mark.parametrize("b", [3, 4, 1])
def test_gaussian_kl_one_shared_covariance_for_a_batch_of_means(b):
    """(B, D) means with one (D, D) covariance: with B == D (or B == 1) the shape also fits
    per-example variances, which it used to be read as (issue #15: 0.347 instead of 0.545)."""
    d = 4
    g = torch.Generator().manual_seed(11)
    mu0, mu1 = torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(b, d, generator=g, dtype=torch.float64)
    s0, s1 = random_spd(d, seed=12), random_spd(d, seed=13)
    mvn = torch.distributions.MultivariateNormal
    want = torch.distributions.kl_divergence(mvn(mu0, covariance_matrix=s0), mvn(mu1, covariance_matrix=s1))
    torch.testing.assert_close(M.gaussian_kl(mu0, s0, mu1, s1, cov0_form="full", cov1_form="full"), want,
                               rtol=1e-10, atol=1e-10)
    if b in (d, 1):
        with pytest.warns(UserWarning, match="read as a covariance matrix"):
            got = M.gaussian_kl(mu0, s0, mu1, s1)
    else:
        got = M.gaussian_kl(mu0, s0, mu1, s1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # Per-example variances of the same shape stay variances (they are not symmetric).
    v0 = torch.rand(d, d, generator=g, dtype=torch.float64) + 0.1
    v1 = torch.rand(d, d, generator=g, dtype=torch.float64) + 0.1
    mu0, mu1 = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    normal = torch.distributions.Normal
    want_diag = torch.distributions.kl_divergence(torch.distributions.Independent(normal(mu0, v0.sqrt()), 1),
                                                  torch.distributions.Independent(normal(mu1, v1.sqrt()), 1))
    torch.testing.assert_close(M.gaussian_kl(mu0, v0, mu1, v1), want_diag, rtol=1e-12, atol=1e-12)
    sym = v0 + v0.T  # symmetric variances: say which form they are
    want_sym = torch.distributions.kl_divergence(torch.distributions.Independent(normal(mu0, sym.sqrt()), 1),
                                                 torch.distributions.Independent(normal(mu1, v1.sqrt()), 1))
    got_sym = M.gaussian_kl(mu0, sym, mu1, v1, cov0_form="variances")
    torch.testing.assert_close(got_sym, want_sym, rtol=1e-12, atol=1e-12)


class TestBadInputs:
    def test_unnormalised(self):
        with pytest.raises(ValueError, match="p is not normalised"):
            M.kl_divergence(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5]))

    def test_negative(self):
        with pytest.raises(ValueError, match="q has negative entries"):
            M.total_variation(torch.tensor([0.5, 0.5]), torch.tensor([1.5, -0.5]))

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same number of outcomes"):
            M.total_variation(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))
        with pytest.raises(ValueError, match="incompatible shapes"):
            M.total_variation(rand_probs(3, 4), rand_probs(2, 4))

    def test_empty(self):
        with pytest.raises(ValueError, match="p is empty"):
            M.kl_divergence(torch.empty(0), torch.empty(0))

    def test_nan(self):
        with pytest.raises(ValueError, match="NaN"):
            M.total_variation(torch.tensor([float("nan"), 1.0]), torch.tensor([0.5, 0.5]))

    def test_unknown_f(self):
        with pytest.raises(ValueError, match="f must be one of"):
            M.f_divergence(rand_probs(3), rand_probs(3), "renyi")

    def test_gaussian_non_symmetric_covariance(self):
        """Cholesky reads only the lower triangle: a non-symmetric matrix used to pass."""
        s = torch.tensor([[2.0, 0.0], [0.9, 1.0]])
        with pytest.raises(ValueError, match="cov0 is not symmetric"):
            M.gaussian_kl(torch.zeros(2), s, torch.zeros(2), torch.eye(2))
        with pytest.raises(ValueError, match="cov1 is not symmetric"):
            M.gaussian_kl(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(3, 2), s, cov1_form="full")
        rounding = torch.tensor([[2.0, 0.5], [0.5 + 1e-7, 1.0]])  # float32 rounding: accepted
        assert torch.isfinite(M.gaussian_kl(torch.zeros(2), rounding, torch.zeros(2), torch.eye(2)))

    def test_gaussian_bad_form(self):
        with pytest.raises(ValueError, match="cov0_form must be one of"):
            M.gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2), cov0_form="diag")
        with pytest.raises(ValueError, match=r"cov1 must be variances \(\.\.\., 2\).*cov1_form='variances'"):
            M.gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3), cov1_form="variances")
        with pytest.raises(ValueError, match=r"cov0 must be a covariance matrix"):
            M.gaussian_kl(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2), cov0_form="full")

    def test_gaussian_not_spd(self):
        bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
        with pytest.raises(ValueError, match="cov1 is not symmetric positive definite"):
            M.gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(2), bad)
        with pytest.raises(ValueError, match="variances must be > 0"):
            M.gaussian_kl(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2), torch.ones(2))
        with pytest.raises(ValueError, match="cov0 must be variances"):
            M.gaussian_kl(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.ones(2))
