"""gencore.metrics likelihood units and multi-objective tools."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from gencore import metrics as M


def test_cross_entropy_is_entropy_plus_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4, 6, generator=g, dtype=torch.float64)
    q = torch.rand(4, 6, generator=g, dtype=torch.float64)
    p, q = p / p.sum(1, keepdim=True), q / q.sum(1, keepdim=True)
    h = torch.tensor([scipy.stats.entropy(a) for a in p.numpy()])
    torch.testing.assert_close(M.cross_entropy(p, q), h + M.kl_divergence(p, q))


def test_bits_per_dim_units():
    # The uniform density on [0, 1)^D has NLL 0: log2(levels) bits/dim.
    assert M.bits_per_dim(0.0, 64, levels=17) == pytest.approx(math.log2(17))
    assert M.bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    t = M.bits_per_dim(torch.tensor([0.0, 10.0]), 5, levels=256)
    torch.testing.assert_close(t, (torch.tensor([0.0, 10.0]) + 5 * math.log(256)) / (5 * math.log(2)))
    # Consistency with a discrete model: a categorical over 17 levels with probabilities pk
    # has entropy H bits; the dequantized piecewise-constant density has NLL H ln2 - ln 17.
    pk = torch.rand(17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pk /= pk.sum()
    h_bits = -(pk * pk.log2()).sum().item()
    nll_density = h_bits * math.log(2) - math.log(17)
    assert M.bits_per_dim(nll_density, 1, levels=17) == pytest.approx(h_bits)


def test_nll_and_perplexity():
    lp = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert M.negative_log_likelihood(lp).item() == pytest.approx(-lp.mean().item())
    # A uniform model over V tokens has perplexity V.
    assert M.perplexity(torch.full((7,), -math.log(50.0))).item() == pytest.approx(50.0)
    batch = torch.tensor([[-1.0, -2.0, -9.0], [-3.0, -9.0, -9.0]])
    want = math.exp((1 + 2 + 3) / 3)
    assert M.perplexity(batch, lengths=torch.tensor([2, 1])).item() == pytest.approx(want)


def test_bits_per_dim_rejects_bools():
    with pytest.raises(TypeError, match="dims must be an int, got bool"):
        M.bits_per_dim(1.0, True)
    with pytest.raises(TypeError, match="levels must be an int, got bool"):
        M.bits_per_dim(1.0, 4, levels=True)
    with pytest.raises(TypeError, match="nll_nats must be a float or a tensor"):
        M.bits_per_dim(True, 4)


def test_likelihood_bad_inputs():
    with pytest.raises(ValueError, match="dims must be a positive int"):
        M.bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="levels must be an int >= 2"):
        M.bits_per_dim(1.0, 4, levels=1)
    with pytest.raises(ValueError, match="NaN"):
        M.bits_per_dim(float("nan"), 4)
    with pytest.raises(ValueError, match="log_probs is empty"):
        M.negative_log_likelihood(torch.empty(0))
    with pytest.raises(ValueError, match="log-probabilities"):
        M.perplexity(torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match="lengths must lie"):
        M.perplexity(torch.zeros(2, 3) - 1, lengths=torch.tensor([4, 1]))


def brute_front(p):
    keep = []
    for i, a in enumerate(p):
        keep.append(not any(np.all(b <= a) and np.any(b < a) for j, b in enumerate(p) if j != i))
    return np.array(keep)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(2)
    for m in (2, 3):
        pts = rng.random((60, m)).round(1)  # rounding makes ties and duplicates
        np.testing.assert_array_equal(M.pareto_front(torch.tensor(pts)).numpy(), brute_front(pts))
    pts = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5], [1.0, 3.0]])
    assert M.pareto_front(pts).tolist() == [True, True, True, False, True]


def test_scalarize_and_sweep_trace_the_front():
    # L1 = (x - 1)^2, L2 = (x + 1)^2: the minimiser of L1 + lam L2 is x = (1 - lam) / (1 + lam).
    def objectives(lam):
        x = (1 - lam) / (1 + lam)
        return (x - 1) ** 2, (x + 1) ** 2

    res = M.sweep(objectives, [0.0, 0.25, 1.0, 4.0])
    assert res["front"].all()  # every scalarized optimum is Pareto-optimal
    assert res["points"].shape == (4, 2)
    torch.testing.assert_close(M.scalarize(res["points"], torch.tensor([1.0, 1.0])),
                               res["points"].sum(1))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        M.scalarize(res["points"], torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights must have shape"):
        M.scalarize(res["points"], torch.tensor([1.0, 1.0, 1.0]))


def test_plot_pareto_front(tmp_path):
    pts = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5]])
    path = M.plot_pareto_front(pts, tmp_path / "front.png", annotations=["a", "b", "c", "d"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_pareto_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        M.pareto_front(torch.empty(0, 2))
    with pytest.raises(ValueError, match="NaN"):
        M.pareto_front(torch.tensor([[float("nan"), 1.0]]))
