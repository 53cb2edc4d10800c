"""gencore.nn.SplineCoupling: identity at initialisation, invertibility, the log-determinant
as the Jacobian's, the parameters it hands the op (views of the conditioner's output, the
sqrt(hidden) scaling and the identity offset), context, and bad inputs."""

import pytest
import torch

from gencore import reference as R
from gencore.nn import MLP, SplineCoupling
from spline_testing import assert_parameters_scaled_and_offset, randomize


def layer(d=5, bins=6, mask="alternate", swap=False, hidden=(16,), context=0, zero=True, scale_by=None):
    n_a = len(range(d)[1::2] if swap else range(d)[0::2]) if mask == "alternate" else \
        (d - d // 2 if swap else d // 2)
    cond = MLP(n_a + context, (d - n_a) * (3 * bins - 1), hidden, zero_init=zero)
    return SplineCoupling(d, cond, bins=bins, mask=mask, swap=swap, scale_by=scale_by)




def test_zero_initialised_conditioner_is_the_identity():
    m = layer()
    x = 2 * torch.randn(64, 5, generator=torch.Generator().manual_seed(2))
    y, ld = m(x)
    torch.testing.assert_close(y, x, atol=2e-5, rtol=0)
    torch.testing.assert_close(ld, torch.zeros(64), atol=2e-5, rtol=0)


@pytest.mark.parametrize("mask,swap", [("alternate", False), ("alternate", True), ("half", False), ("half", True)])
def test_inverts_and_logdets_cancel(mask, swap):
    m = randomize(layer(d=7, mask=mask, swap=swap)).double()
    x = 2 * torch.randn(128, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, ld = m(x)
    assert (y - x).abs().max() > 0.05
    x2, ld2 = m.inverse(y)
    torch.testing.assert_close(x2, x, atol=1e-8, rtol=0)  # (flat spline pieces: eps / slope)
    torch.testing.assert_close(ld2, -ld, atol=1e-8, rtol=0)
    # the identity part passes through untouched
    ident = R.mask_parts(7, mask, swap)[0]
    assert torch.equal(y[:, ident], x[:, ident])


def test_logdet_is_the_jacobians():
    m = randomize(layer(d=4, bins=5)).double()
    x = 1.5 * torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, ld = m(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0], x[i])
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-10)


def test_parameters_are_views_scaled_and_offset():
    m = randomize(layer(d=4, bins=3, scale_by=16))
    x_a = torch.randn(2, 2)
    assert_parameters_scaled_and_offset(m.spline_parameters(x_a), m.conditioner(x_a).view(2, 2, 8), 3, 1 / 4)


def test_gradients_reach_the_conditioner():
    m = randomize(layer())
    x = torch.randn(32, 5, requires_grad=True)
    y, ld = m(x)
    (y.pow(2).sum() - ld.sum()).backward()
    assert x.grad is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_context_changes_the_map():
    m = randomize(layer(context=3)).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 5, dtype=torch.float64, generator=g)
    c1, c2 = (torch.randn(8, 3, dtype=torch.float64, generator=g) for _ in range(2))
    assert not torch.allclose(m(x, c1)[0], m(x, c2)[0])
    torch.testing.assert_close(m.inverse(m(x, c1)[0], c1)[0], x, atol=1e-8, rtol=0)


def test_bad_arguments_and_inputs():
    cond = MLP(2, 2 * 17)
    with pytest.raises(ValueError, match="features must be an int >= 2"):
        SplineCoupling(1, cond)
    with pytest.raises(TypeError, match="bins must be an int"):
        SplineCoupling(4, cond, bins=2.0)
    with pytest.raises(ValueError, match="bins must be at most 999"):
        SplineCoupling(4, cond, bins=1000)
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        SplineCoupling(4, cond, bound=-1.0)
    with pytest.raises(ValueError, match="mask must be 'half' or 'alternate'"):
        SplineCoupling(4, cond, mask="checkerboard")
    with pytest.raises(TypeError, match="conditioner must be an nn.Module"):
        SplineCoupling(4, lambda v: v)
    m = SplineCoupling(4, cond, bins=6)
    with pytest.raises(ValueError, match=r"input must be \(B, 4\)"):
        m(torch.randn(3, 5))
    with pytest.raises(ValueError, match="empty batch"):
        m(torch.randn(0, 4))
    wrong = SplineCoupling(4, MLP(2, 10), bins=6)
    with pytest.raises(ValueError, match=r"conditioner must return \(3, 34\)"):
        wrong(torch.randn(3, 4))
