"""gencore.nn.MADE and gencore.nn.AutoregressiveSpline: the autoregressive property (exact
dependence pattern of the Jacobian), identity at initialisation, the D-round inverse (exact
values, log-determinant and derivatives), the log-determinant as the Jacobian's, context,
and bad arguments and inputs."""

import pytest
import torch
from torch import nn

from gencore.nn import MADE, MLP, AutoregressiveSpline, MaskedLinear
from spline_testing import assert_parameters_scaled_and_offset, randomize

ORDERS = ["forward", "reverse", [3, 1, 5, 2, 4]]




def layer(d=5, bins=6, order="forward", hidden=(24, 24), context=0, zero=True, scale_by=None, seed=0):
    with torch.random.fork_rng():  # the same initial weights whatever ran before
        torch.manual_seed(seed)
        made = MADE(d, 3 * bins - 1, hidden, context_features=context, order=order, zero_init=zero)
    return AutoregressiveSpline(d, made, bins=bins, scale_by=scale_by)


def dependence(f, x, d, p):
    """(D, D) bool: output group j depends on input i (Jacobian of the first example)."""
    jac = torch.autograd.functional.jacobian(lambda v: f(v[None]).view(d, p), x)  # (D, P, D)
    return jac.abs().sum(1) > 0


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("context", [0, 3])
def test_made_dependence_is_exactly_the_order(order, context):
    # tanh (no dead units) and random weights: every allowed path carries a derivative.
    m = randomize(MADE(5, 4, (16, 16), context_features=context, order=order, activation=nn.Tanh)).double()
    c = torch.randn(1, context, dtype=torch.float64) if context else None
    deg = m.degrees
    for seed in range(3):
        x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        dep = dependence(lambda v: m(v, c), x, 5, 4)
        assert torch.equal(dep, deg[None, :] < deg[:, None]), (dep, deg)
    if context:  # the context reaches every output group, the first in the order too
        jac = torch.autograd.functional.jacobian(lambda u: m(torch.randn(1, 5, dtype=torch.float64), u), c)
        assert (jac.view(5, 4, context).abs().sum((1, 2)) > 0).all()


def test_made_narrow_hidden_layers_never_break_the_order():
    # 2 hidden units for 6 inputs: degrees 1 and 2 only; dependence is a subset of the order's.
    with pytest.warns(UserWarning, match="the inputs after position 3 in the order see only the first 2"):
        m = randomize(MADE(6, 3, (2, 2), order=[2, 6, 1, 5, 3, 4], activation=nn.Tanh)).double()
    dep = dependence(m, torch.randn(6, dtype=torch.float64), 6, 3)
    allowed = m.degrees[None, :] < m.degrees[:, None]
    assert not (dep & ~allowed).any() and dep.any()


def test_made_masks_are_structure_not_state():
    m = randomize(MADE(4, 2, (8,)))
    names = dict(m.named_buffers())
    assert "degrees" in names and sum(k.endswith("mask") for k in names) == 2
    assert all(v.dtype == torch.bool for k, v in names.items() if k.endswith("mask"))
    m(torch.randn(5, 4)).pow(2).sum().backward()
    for lin in (mod for mod in m.modules() if isinstance(mod, MaskedLinear)):
        assert (lin.weight.grad[~lin.mask] == 0).all() and (lin.weight.grad[lin.mask] != 0).any()
    state = m.state_dict()  # weights and biases only: a checkpoint cannot carry a mask
    assert not any(k.endswith("mask") or k == "degrees" for k in state)
    m2 = MADE(4, 2, (8,))
    m2.load_state_dict(state)
    x = torch.randn(3, 4)
    assert torch.equal(m(x), m2(x))
    md = m.double()  # the masks stay boolean, the weights convert
    assert md.net[0].weight.dtype == torch.float64 and md.net[0].mask.dtype == torch.bool
    mask = torch.ones(2, 3, dtype=torch.bool)
    lin = MaskedLinear(3, 2, mask)
    mask.fill_(False)  # the layer holds its own copy
    assert lin.mask.all()


def test_made_builds_on_the_meta_device():
    with torch.device("meta"):
        m = MADE(5, 3, (8,), order=[3, 1, 5, 2, 4], context_features=2)
    assert m.net[0].weight.is_meta and m.net[0].mask.is_meta
    assert m(torch.empty(4, 5, device="meta"), torch.empty(4, 2, device="meta")).shape == (4, 15)


def test_made_bad_arguments():
    with pytest.raises(ValueError, match="features must be an int >= 1"):
        MADE(0, 3)
    with pytest.raises(TypeError, match="out_per_feature must be an int"):
        MADE(3, 2.0)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MADE(3, 2, ())
    with pytest.raises(ValueError, match=r"hidden\[1\] must be an int >= 1"):
        MADE(3, 2, (4, 0))
    for bad in ("sideways", [1, 2, 2], [0, 1, 2], [1, 2], [1.0, 2.0, 3.0], [True, 2, 3], 3, ["a", "b", "c"]):
        with pytest.raises(ValueError, match="order must be"):
            MADE(3, 2, order=bad)
    with pytest.raises(ValueError, match="mask must be a tensor of shape"):
        MaskedLinear(3, 2, torch.ones(3, 2))
    m = MADE(3, 2, (8,), context_features=2)
    with pytest.raises(ValueError, match=r"x must be \(B, 3\)"):
        m(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"context must be \(B, 2\)"):
        m(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"context must be \(B, 2\)"):
        m(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="context_features=0"):
        MADE(3, 2, (8,))(torch.randn(4, 3), torch.randn(4, 2))


def test_zero_initialised_made_is_the_identity():
    m = layer()
    x = 2 * torch.randn(64, 5, generator=torch.Generator().manual_seed(2))
    z, ld = m(x)
    torch.testing.assert_close(z, x, atol=2e-5, rtol=0)
    torch.testing.assert_close(ld, torch.zeros(64), atol=2e-5, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_is_exact_and_logdets_cancel(order, seed):
    m = randomize(layer(order=order, seed=seed), seed=seed).double()
    x = 2 * torch.randn(128, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z, ld = m(x)
    assert (z - x).abs().max() > 0.05
    x2, ld2 = m.inverse(z)
    # Backward error at rounding level; forward error bounded by the map's conditioning
    # (weights of scale 0.3 make slopes near 1e-3 and amplify one element's rounding through
    # the next ones' splines: up to 9e-8 over 120 random layers).
    torch.testing.assert_close(m(x2)[0], z, atol=1e-12, rtol=0)
    torch.testing.assert_close(x2, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(ld2, -ld, atol=1e-6, rtol=0)


def test_inverse_in_float32_and_at_one_feature():
    # Moderate weights: a round trip is as exact as one spline's. (With weights of scale 0.3
    # some elements have slopes of 3e-4 and the rounding of one element's inverse, amplified
    # by the next elements' flat splines, reaches 1 in float32 and 4e-7 in float64: the
    # conditioning of that map, not of the rounds.)
    m = randomize(layer(d=7, bins=8, order="reverse"), scale=0.15)
    x = 2.5 * torch.randn(512, 7, generator=torch.Generator().manual_seed(5))
    z, ld = m(x)
    assert (z - x).abs().max() > 0.5
    x2, ld2 = m.inverse(z)
    assert (x2 - x).abs().max().item() <= 2e-5
    assert (ld2 + ld).abs().max().item() <= 5e-5
    one = randomize(layer(d=1, bins=4, hidden=(8,)))  # one element: a learned unconditional spline
    x = torch.randn(16, 1)
    z, ld = one(x)
    assert (z - x).abs().max() > 0.01
    torch.testing.assert_close(one.inverse(z)[0], x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
def test_logdet_is_the_jacobians_and_the_jacobian_is_triangular_in_the_order(order):
    m = randomize(layer(order=order, bins=5)).double()
    deg = m.conditioner.degrees
    x = 1.5 * torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, ld = m(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0], x[i])
        assert ld[i].item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-10)
        assert (jac[deg[None, :] > deg[:, None]] == 0).all()  # z_j never sees x_i later in the order


def test_derivatives_through_the_rounds_are_the_inverse_maps():
    # Autograd through the D rounds: the Jacobian of inverse(z) is the inverse of the forward
    # Jacobian at x = inverse(z), and the inverse's log-determinant's gradient is exact too.
    m = randomize(layer(order=[3, 1, 5, 2, 4], bins=4)).double()
    z = 1.5 * torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    j_inv = torch.autograd.functional.jacobian(lambda v: m.inverse(v[None])[0][0], z)
    x = m.inverse(z[None])[0][0]
    j_fwd = torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0], x)
    torch.testing.assert_close(j_inv, torch.linalg.inv(j_fwd), atol=1e-9, rtol=1e-9)
    g_inv = torch.autograd.functional.jacobian(lambda v: m.inverse(v[None])[1][0], z)
    g_fwd = torch.autograd.functional.jacobian(lambda v: m(v[None])[1][0], x)  # d logdet / dx
    torch.testing.assert_close(g_inv, -(g_fwd @ torch.linalg.inv(j_fwd)), atol=1e-9, rtol=1e-9)


def test_inverse_runs_the_made_once_per_element():
    m = randomize(layer(d=6))
    calls = []
    m.conditioner.register_forward_hook(lambda *a: calls.append(1))
    m(torch.randn(4, 6))
    assert len(calls) == 1
    m.inverse(torch.randn(4, 6))
    assert len(calls) == 1 + 6


def test_parameters_are_views_scaled_and_offset():
    m = randomize(layer(d=3, bins=3, scale_by=16))
    x = torch.randn(2, 3)
    assert_parameters_scaled_and_offset(m.spline_parameters(x), m.conditioner(x).view(2, 3, 8), 3, 1 / 4)


def test_gradients_reach_the_made_and_context_changes_the_map():
    m = randomize(layer(context=3)).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 5, dtype=torch.float64, generator=g, requires_grad=True)
    c1, c2 = (torch.randn(8, 3, dtype=torch.float64, generator=g) for _ in range(2))
    z, ld = m(x, c1)
    (z.pow(2).sum() - ld.sum()).backward()
    assert x.grad is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    x = x.detach()
    assert not torch.allclose(m(x, c1)[0], m(x, c2)[0])
    torch.testing.assert_close(m.inverse(m(x, c1)[0], c1)[0], x, atol=1e-8, rtol=0)


def test_bad_arguments_and_inputs():
    made = MADE(4, 17)
    with pytest.raises(TypeError, match="conditioner must be a gencore.nn.MADE"):
        AutoregressiveSpline(4, MLP(4, 4 * 17), bins=6)
    with pytest.raises(ValueError, match="out_per_feature = 3 \\* 5 - 1 = 14"):
        AutoregressiveSpline(4, made, bins=5)
    with pytest.raises(ValueError, match="MADE of 3 features"):
        AutoregressiveSpline(3, made, bins=6)
    with pytest.raises(ValueError, match="bins must be at most 999"):
        AutoregressiveSpline(4, made, bins=1000)
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        AutoregressiveSpline(4, made, bins=6, bound=float("inf"))
    with pytest.raises(ValueError, match="scale_by must be None or an int"):
        AutoregressiveSpline(4, made, bins=6, scale_by=-2)
    m = AutoregressiveSpline(4, made, bins=6)
    for f in (m, m.inverse):
        with pytest.raises(ValueError, match=r"input must be \(B, 4\)"):
            f(torch.randn(3, 5))
        with pytest.raises(ValueError, match="empty batch"):
            f(torch.randn(0, 4))
        with pytest.raises(TypeError, match="expected a tensor"):
            f([[0.0] * 4])


def test_the_flow_refuses_a_non_bool_form_and_a_made_without_hidden_layers():
    from gencore.models import NeuralSplineFlow

    with pytest.raises(TypeError, match="autoregressive must be a bool"):
        NeuralSplineFlow(4, autoregressive=1)
    with pytest.raises(ValueError, match="needs at least one hidden layer"):
        NeuralSplineFlow(4, hidden=(), autoregressive=True)
    flow = NeuralSplineFlow(4, n_couplings=2, hidden=(8,), bins=3)  # the coupling form's config has no key
    assert "autoregressive" not in flow.config
