"""gencore.metrics integral probability metrics against brute force and scipy."""

import numpy as np
import pytest
import scipy.stats
import torch

from gencore import metrics as M


def brute_mmd2(x, y, k, unbiased):
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if (i != j or not unbiased))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if (i != j or not unbiased))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    dx = n * (n - 1) if unbiased else n * n
    dy = m * (m - 1) if unbiased else m * m
    return sxx / dx + syy / dy - 2 * sxy / (n * m)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_brute_force(kernel, unbiased):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.7
    h = 1.3
    if kernel == "rbf":
        def k(a, b): return torch.exp(-((a - b) ** 2).sum() / (2 * h * h)).item()
    else:
        def k(a, b): return (1 + ((a - b) ** 2).sum() / (h * h)).rsqrt().item()
    got = M.mmd(x, y, kernel=kernel, bandwidth=h, unbiased=unbiased).item()
    assert got == pytest.approx(brute_mmd2(x, y, k, unbiased), rel=1e-10)


def test_mmd_median_bandwidth_and_separation():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 2, generator=g)
    same = torch.randn(300, 2, generator=g)
    shifted = torch.randn(300, 2, generator=g) + 1.0
    from scipy.spatial.distance import pdist
    want = np.median(pdist(torch.cat([x, same]).double().numpy()))
    # torch.median of an even count takes the lower middle value; pdist's median averages.
    assert M.median_bandwidth(x, same).item() == pytest.approx(want, rel=1e-4)
    m_same = M.mmd(x, same).item()
    m_shift = M.mmd(x, shifted).item()
    assert abs(m_same) < 0.01 and m_shift > 0.1
    assert M.mmd(x, shifted, unbiased=False).item() >= 0


@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_1d_matches_scipy(weighted):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=57), rng.normal(1.0, 2.0, size=31)
    wx = rng.random(57) if weighted else None
    wy = rng.random(31) if weighted else None
    want = scipy.stats.wasserstein_distance(x, y, wx, wy)
    got = M.wasserstein_1d(torch.tensor(x), torch.tensor(y),
                           None if wx is None else torch.tensor(wx), None if wy is None else torch.tensor(wy))
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_wasserstein_1d_shift_and_ties():
    x = torch.tensor([0.0, 0.0, 1.0, 3.0])
    assert M.wasserstein_1d(x, x + 2.5).item() == pytest.approx(2.5)
    assert M.wasserstein_1d(x, x).item() == 0


def test_sliced_wasserstein():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    sw = M.sliced_wasserstein(x, x + shift, n_projections=4000, generator=torch.Generator().manual_seed(4))
    # A translation by t: every projection moves by |t . theta|; E|theta_1| = 1/2 in 3-D.
    assert sw.item() == pytest.approx(2.0 * 0.5, rel=0.03)
    assert M.sliced_wasserstein(x, x, generator=torch.Generator().manual_seed(5)).item() == pytest.approx(0, abs=1e-12)
    a = M.sliced_wasserstein(x, x + shift, 16, generator=torch.Generator().manual_seed(6))
    b = M.sliced_wasserstein(x, x + shift, 16, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item()
    # Each projection is an exact 1-D W1: check one against scipy.
    theta = torch.tensor([[0.6], [0.8], [0.0]], dtype=torch.float64)
    y = torch.randn(250, 3, generator=g, dtype=torch.float64)
    want = scipy.stats.wasserstein_distance((x @ theta)[:, 0].numpy(), (y @ theta)[:, 0].numpy())
    assert M.wasserstein_1d((x @ theta)[:, 0], (y @ theta)[:, 0]).item() == pytest.approx(want, rel=1e-10)


class TestBadInputs:
    def test_dimension_mismatch(self):
        with pytest.raises(ValueError, match="same dimension"):
            M.mmd(torch.randn(5, 2), torch.randn(5, 3))
        with pytest.raises(ValueError, match="same dimension"):
            M.sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 3))

    def test_empty_and_too_small(self):
        with pytest.raises(ValueError, match="x is empty"):
            M.wasserstein_1d(torch.empty(0), torch.randn(3))
        with pytest.raises(ValueError, match="at least 2 sample"):
            M.mmd(torch.randn(1, 2), torch.randn(4, 2))

    def test_bad_bandwidth_and_kernel(self):
        with pytest.raises(ValueError, match="bandwidth must be a positive"):
            M.mmd(torch.randn(5, 2), torch.randn(5, 2), bandwidth=float("nan"))
        with pytest.raises(ValueError, match="kernel must be"):
            M.mmd(torch.randn(5, 2), torch.randn(5, 2), kernel="laplace")

    def test_bandwidth_whose_square_underflows_or_overflows(self):
        x, y = torch.randn(5, 2), torch.randn(5, 2)
        with pytest.raises(ValueError, match=r"bandwidth=1e-300 is too small for torch.float32 samples: "
                                             r"bandwidth\*\*2 underflows to 0.*>= 1.08e-19"):
            M.mmd(x, y, bandwidth=1e-300)
        with pytest.raises(ValueError, match="too small for torch.float64"):
            M.mmd(x.double(), y.double(), bandwidth=1e-160)
        assert torch.isfinite(M.mmd(x.double(), y.double(), bandwidth=1e-150))  # representable in float64
        with pytest.raises(ValueError, match=r"too large.*overflows"):
            M.mmd(x, y, bandwidth=1e20)
        with pytest.raises(ValueError, match="median bandwidth"):
            M.mmd(x.double() * 1e-160, y.double() * 1e-160)
        h = M.median_bandwidth(x, y)  # a 0-d tensor is a bandwidth too
        assert M.mmd(x, y, bandwidth=h).item() == pytest.approx(M.mmd(x, y).item())

    def test_bools_are_not_numbers(self):
        x, y = torch.randn(5, 2), torch.randn(5, 2)
        with pytest.raises(TypeError, match="bandwidth must be 'median' or a positive float, got bool"):
            M.mmd(x, y, bandwidth=True)
        with pytest.raises(TypeError, match="n_projections must be an int, got bool"):
            M.sliced_wasserstein(x, y, n_projections=True)
        with pytest.raises(TypeError, match="n_projections must be an int"):
            M.sliced_wasserstein(x, y, n_projections=4.0)

    def test_nan_samples_and_bad_weights(self):
        with pytest.raises(ValueError, match="NaN"):
            M.mmd(torch.tensor([[float("nan")], [1.0]]), torch.randn(3, 1))
        with pytest.raises(ValueError, match="x_weights must be non-negative"):
            M.wasserstein_1d(torch.randn(3), torch.randn(3), x_weights=torch.tensor([1.0, -1.0, 1.0]))
        with pytest.raises(ValueError, match="must be a 1-D"):
            M.wasserstein_1d(torch.randn(3, 2), torch.randn(3))


def test_median_bandwidth_follows_the_data_at_any_scale():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 3, generator=g), torch.randn(60, 3, generator=g)
    h = M.median_bandwidth(x, y)
    # Close points: the |a|^2 + |b|^2 - 2ab expansion cancels to 0 in float32; the bandwidth
    # must scale with the data instead of falling back to 1.
    assert M.median_bandwidth(x * 1e-4 + 5, y * 1e-4 + 5).item() == pytest.approx(h.item() * 1e-4, rel=2e-2)
    # Tiny data: its squares underflow in float32; the bandwidth is still the data's (not 1), and
    # mmd refuses it rather than using a wrong one.
    assert M.median_bandwidth(x * 1e-20, y * 1e-20).item() == pytest.approx(h.item() * 1e-20, rel=1e-5)
    with pytest.raises(ValueError, match="median bandwidth"):
        M.mmd(x * 1e-20, y * 1e-20)
    assert M.median_bandwidth(x[:1], x[:1]).item() == 1.0  # no spread: bandwidth 1
