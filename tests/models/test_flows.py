"""Flow models (NICE, RealNVP, Glow, NeuralSplineFlow): invertibility, exact likelihood, sampling, conditioning, errors."""

import math

import pytest
import torch

from gencore.models import NICE, Glow, NeuralSplineFlow, RealNVP
from gencore.nn import ActNorm, InvertibleLinear
from gencore.nn.flow_layers import squeeze2x2, unsqueeze2x2


def randomize(flow, scale=0.1, seed=0):
    """Non-identity parameters everywhere (the zero-initialised last layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    for m in flow.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return flow


FLOWS = {
    "realnvp": lambda d, **kw: RealNVP(d, n_couplings=6, hidden=(32,), **kw),
    "nice": lambda d, **kw: NICE(d, n_couplings=4, hidden=(32,), **kw),
    "glow": lambda d, **kw: Glow(d, steps=4, hidden=(32,), **kw),
    "nsf": lambda d, **kw: NeuralSplineFlow(d, n_couplings=4, hidden=(32,), bins=6, **kw),
    "nsf-ar": lambda d, **kw: NeuralSplineFlow(d, n_couplings=3, hidden=(32,), bins=6, autoregressive=True, **kw),
}

IMAGE_FLOWS = {
    "realnvp": lambda shape, **kw: RealNVP(shape, n_couplings=2, hidden=16, **kw),
    "glow": lambda shape, **kw: Glow(shape, steps=2, n_levels=2, hidden=16, **kw),
}


@pytest.mark.parametrize("name", FLOWS)
def test_whole_flow_inverts(name):
    flow = randomize(FLOWS[name](10)).eval()
    x = torch.randn(128, 10)
    z, ld = flow(x)
    assert (z - x).abs().max() > 0.1
    x2, ld_inv = flow.inverse(z)
    assert (x2 - x).abs().max().item() <= 1e-4
    torch.testing.assert_close(ld_inv, -ld, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", FLOWS)
def test_log_prob_is_change_of_variables(name):
    flow = randomize(FLOWS[name](4)).double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    lp = flow.log_prob(x)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        z = flow(x[i:i + 1])[0][0]
        want = (-0.5 * z.pow(2).sum() - 2 * math.log(2 * math.pi)
                + torch.linalg.slogdet(jac).logabsdet)
        assert lp[i].item() == pytest.approx(want.item(), abs=1e-10)


@pytest.mark.parametrize("name", IMAGE_FLOWS)
def test_image_flow_inverts(name):
    torch.manual_seed(0)
    flow = randomize(IMAGE_FLOWS[name]((1, 8, 8)), 0.05).eval()
    x = torch.rand(16, 1, 8, 8)
    z, ld = flow(x)
    assert z.shape == x.shape and (z - x).abs().max() > 0.1
    x2, ld_inv = flow.inverse(z)
    assert (x2 - x).abs().max().item() <= 1e-4
    torch.testing.assert_close(ld_inv, -ld, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", IMAGE_FLOWS)
def test_image_log_prob_is_change_of_variables(name):
    torch.manual_seed(1)
    flow = randomize(IMAGE_FLOWS[name]((1, 4, 4)), 0.05).double().eval()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    lp = flow.log_prob(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 1, 4, 4))[0].reshape(-1),
                                                 x[i].reshape(-1))
        z = flow(x[i:i + 1])[0].reshape(-1)
        want = -0.5 * z.pow(2).sum() - 8 * math.log(2 * math.pi) + torch.linalg.slogdet(jac).logabsdet
        assert lp[i].item() == pytest.approx(want.item(), abs=1e-9)


def test_squeeze_round_trip_and_invertible_linear_logdet():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    s = squeeze2x2(x)
    assert s.shape == (2, 12, 2, 3) and torch.equal(unsqueeze2x2(s), x)
    assert torch.equal(s[0, :4, 0, 0], torch.tensor([0.0, 1.0, 6.0, 7.0]))  # one 2x2 patch
    torch.manual_seed(2)
    lin = InvertibleLinear(5).double()
    with torch.no_grad():
        lin.log_s.add_(0.3)
        lin.upper.add_(0.2)
    img = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    _, ld = lin(img)
    assert ld[0].item() == pytest.approx(9 * torch.linalg.slogdet(lin.weight()).logabsdet.item(), abs=1e-10)
    torch.testing.assert_close(lin.inverse(lin(img)[0])[0], img)


def test_glow_rejects_indivisible_images():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*n_levels"):
        Glow((1, 6, 6), n_levels=2)


def test_log_prob_integrates_to_one_in_2d():
    flow = randomize(RealNVP(2, n_couplings=4, hidden=(16,))).double().eval()
    g = torch.linspace(-15, 15, 1201, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp()
    assert (p.sum() * (g[1] - g[0]) ** 2).item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", FLOWS)
def test_sample_shapes_and_determinism(name):
    flow = randomize(FLOWS[name](5)).eval()
    a = flow.sample(7, generator=torch.Generator().manual_seed(3))
    b = flow.sample(7, generator=torch.Generator().manual_seed(3))
    c = flow.sample(7, generator=torch.Generator().manual_seed(4))
    assert a.shape == (7, 5) and torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad
    r = flow.rsample(3)
    assert r.requires_grad and r.shape == (3, 5)


def test_actnorm_data_dependent_init_standardizes():
    flow = RealNVP(3, n_couplings=2)
    x = torch.randn(500, 3) * torch.tensor([5.0, 0.1, 2.0]) + torch.tensor([1.0, -3.0, 10.0])
    z, _ = flow(x)  # training mode: ActNorm initialises from this batch
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", FLOWS)
def test_actnorm_init_on_one_example_keeps_unit_scale(name):
    """One example has no spread: the shift is the example, the scale stays 1 (not NaN)."""
    torch.manual_seed(0)
    flow = FLOWS[name](4)
    x = torch.randn(1, 4) * 3 + 2
    flow(x)  # training mode: data-dependent initialisation from one example
    norm = next(m for m in flow.modules() if isinstance(m, ActNorm))
    torch.testing.assert_close(norm.bias.detach(), x[0])
    torch.testing.assert_close(norm.log_scale.detach(), torch.zeros(4))
    lp = flow.eval().log_prob(torch.randn(16, 4))
    assert torch.isfinite(lp).all()
    layer = ActNorm(2)
    layer(torch.full((1, 2, 1, 1), 5.0))  # one value per channel of an image batch
    assert layer.log_scale.abs().max().item() == 0 and layer.bias.tolist() == [5.0, 5.0]


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_actnorm_init_rejects_non_finite_data(bad):
    flow = RealNVP(3, n_couplings=2, hidden=(8,))
    x = torch.randn(8, 3)
    x[2] = bad  # a whole row
    with pytest.raises(ValueError, match="NaN or infinite"):
        flow(x)
    norm = flow.transforms[0]
    assert not bool(norm.initialized)  # left uninitialised: a clean batch initialises it next
    flow(torch.randn(8, 3))
    assert bool(norm.initialized) and torch.isfinite(norm.log_scale).all()
    with pytest.raises(ValueError, match="overflowed"):
        ActNorm(1)(torch.tensor([[3e38], [-3e38]]))


def test_conditional_flow_uses_context():
    flow = randomize(RealNVP(4, n_couplings=4, hidden=(16,), context_features=3)).eval()
    x = torch.randn(8, 4)
    c1, c2 = torch.randn(8, 3), torch.randn(8, 3)
    assert not torch.allclose(flow.log_prob(x, c1), flow.log_prob(x, c2))
    z, _ = flow(x, c1)
    torch.testing.assert_close(flow.inverse(z, c1)[0], x, atol=1e-5, rtol=1e-5)
    s = flow.sample(8, context=c1)
    assert s.shape == (8, 4)
    assert flow.loss((x, c1)).item() == pytest.approx(-flow.log_prob(x, c1).mean().item())


def test_training_reduces_nll_on_8gaussians():
    from gencore.data import load_dataset, toy_entropy
    from gencore.train import fit

    torch.manual_seed(0)
    x, _ = load_dataset("8gaussians", "train", n=4000)
    xt, _ = load_dataset("8gaussians", "test", n=2000)
    flow = RealNVP(2, n_couplings=6, hidden=(64, 64))
    flow(x[:512])  # ActNorm initialisation
    with torch.no_grad():
        nll0 = -flow.log_prob(xt).mean().item()
    fit(flow, x, steps=400, batch_size=256, lr=2e-3, progress=False)
    with torch.no_grad():
        nll = -flow.log_prob(xt).mean().item()
    # A standardized Gaussian scores about 4.0 nats; the data's entropy is 2.83.
    assert nll < nll0 - 0.5 and nll < toy_entropy("8gaussians") + 0.6


class TestBadInputs:
    def test_wrong_feature_size(self):
        with pytest.raises(ValueError, match=r"x must have shape \(B, 4\)"):
            RealNVP(4).log_prob(torch.randn(3, 5))

    def test_nan_data(self):
        with pytest.raises(ValueError, match="x contains NaN"):
            RealNVP(4).log_prob(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))

    def test_empty_batch(self):
        with pytest.raises(ValueError, match="empty batch"):
            RealNVP(4).log_prob(torch.randn(0, 4))

    def test_context_errors(self):
        with pytest.raises(ValueError, match="this flow is conditional"):
            RealNVP(4, context_features=2).log_prob(torch.randn(3, 4))
        with pytest.raises(ValueError, match="context must have shape"):
            RealNVP(4, context_features=2).log_prob(torch.randn(3, 4), torch.randn(3, 5))
        with pytest.raises(ValueError, match="unconditional"):
            RealNVP(4).log_prob(torch.randn(3, 4), torch.randn(3, 2))

    def test_bools_are_not_ints(self):
        with pytest.raises(TypeError, match="n_couplings must be an int, got bool"):
            NICE(4, n_couplings=True)
        with pytest.raises(TypeError, match="features must be an int, got bool"):
            RealNVP(True)
        with pytest.raises(TypeError, match="n must be an int, got bool"):
            RealNVP(4).sample(True)
        with pytest.raises(TypeError, match=r"hidden\[0\] must be an int, got bool"):
            NICE(4, hidden=(True,))

    def test_bad_hyperparameters(self):
        with pytest.raises(ValueError, match="features must be an int >= 2"):
            RealNVP(1)
        with pytest.raises(ValueError, match="n_couplings must be an int >= 1"):
            NICE(4, n_couplings=0)
        with pytest.raises(ValueError, match="n must be a positive int"):
            RealNVP(4).sample(0)


@pytest.mark.parametrize("kind", ["vector", "image", "glow-vector", "conditional", "nice", "spline-autoregressive"])
def test_memory_efficient_gradients_match(kind):
    """Couplings take their own path (one conditioner pass, rebuild_and_backward); the
    checkerboard couplings, ActNorm, 1x1 convolutions, squeezes and the autoregressive
    splines (rebuilt by their D-round inverse) the generic one."""
    torch.manual_seed(4)
    context = None
    if kind == "conditional":
        make, x = (lambda me: RealNVP(5, n_couplings=3, hidden=(16,), context_features=3, memory_efficient=me)), \
            torch.randn(16, 5)
        context = torch.randn(16, 3, dtype=torch.float64)
    elif kind == "vector":
        make, x = (lambda me: RealNVP(6, n_couplings=6, hidden=(32,), memory_efficient=me)), torch.randn(32, 6)
    elif kind == "nice":  # additive couplings: a constant log-determinant (issue #15, item 7)
        make, x = (lambda me: NICE(6, n_couplings=4, hidden=(32,), memory_efficient=me)), torch.randn(32, 6)
    elif kind == "spline-autoregressive":
        make, x = (lambda me: NeuralSplineFlow(5, n_couplings=3, hidden=(16,), bins=4, context_features=2,
                                               autoregressive=True, memory_efficient=me)), torch.randn(16, 5)
        context = torch.randn(16, 2, dtype=torch.float64)
    elif kind == "image":
        make, x = (lambda me: RealNVP((1, 8, 8), n_couplings=2, hidden=16, memory_efficient=me)), torch.rand(8, 1, 8, 8)
    else:
        make, x = (lambda me: Glow(6, steps=3, hidden=(32,), memory_efficient=me)), torch.randn(32, 6)
    ref = randomize(make(False), 0.05)
    eff = make(True)
    eff.load_state_dict(ref.state_dict())
    x = x.double()
    ref.double(), eff.double()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    l1, l2 = (ref.loss(x1), eff.loss(x2)) if context is None else (ref.loss((x1, context)), eff.loss((x2, context)))
    torch.testing.assert_close(l1, l2)
    l1.backward()
    l2.backward()
    for (n, p1), p2 in zip(ref.named_parameters(), eff.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-7, atol=1e-9, msg=n)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-7, atol=1e-9)


def test_memory_efficient_peak_memory_is_flat_in_depth():
    from gencore.benchmarks.harness import peak_memory

    x = torch.randn(512, 32)

    def peak(depth, me):
        torch.manual_seed(0)
        flow = RealNVP(32, n_couplings=depth, hidden=(64,), memory_efficient=me)
        flow(x[:64])  # ActNorm initialisation outside the measurement
        return peak_memory(lambda: flow.loss(x).backward(), torch.device("cpu"))

    eff4, eff32 = peak(4, True), peak(32, True)
    ord4, ord32 = peak(4, False), peak(32, False)
    assert ord32 > 4 * ord4           # the ordinary path keeps every layer's activations
    assert eff32 < 1.3 * eff4 + 0.1  # the memory-efficient path does not


def test_memory_efficient_with_a_context_only_conditioner():
    """A conditioner may ignore its input (here: a function of the context alone)."""
    from torch import nn

    from gencore.models import Flow
    from gencore.nn import AffineCoupling

    class ContextOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 4)

        def forward(self, x_a, context):
            return self.net(context)

    torch.manual_seed(2)
    x, c = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    grads = []
    for me in (False, True):
        torch.manual_seed(3)
        flow = Flow([AffineCoupling(4, ContextOnly(), mask="alternate")], (4,), context_features=3,
                    memory_efficient=me).double()
        xi = x.clone().requires_grad_()
        flow.loss((xi, c)).backward()
        grads.append((xi.grad, *(p.grad for p in flow.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
