"""gencore.nn.AffineCoupling: invertibility, exact log-determinant, masks, compile, errors."""

import pytest
import torch
from torch import nn

from gencore.nn import MLP, AffineCoupling
from gencore.ops import affine_coupling


class ConvConditioner(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H, W), randomly initialised (non-identity)."""

    def __init__(self, c_in, c_out, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.Tanh(),
                                 nn.Conv2d(hidden, c_out, 3, padding=1))

    def forward(self, x, context=None):
        return self.net(x)


def split_sizes(n, mask, swap):
    """(identity part, transformed part) sizes along dim 1, as the layer splits them."""
    if mask in ("half", "channel"):
        a, b = n // 2, n - n // 2
    elif mask == "alternate":
        a, b = (n + 1) // 2, n // 2
    else:
        return n, n
    return (b, a) if swap else (a, b)


def vector_layer(d, mask, swap, dtype=torch.float32):
    n_a, n_b = split_sizes(d, mask, swap)
    return AffineCoupling(d, MLP(n_a, 2 * n_b, hidden=(32,), activation=nn.Tanh), mask=mask,
                          clamp=2.0, swap=swap).to(dtype)


def image_layer(c, mask, swap, dtype=torch.float32):
    c_a, c_b = split_sizes(c, mask, swap)
    return AffineCoupling(c, ConvConditioner(c_a, 2 * c_b), mask=mask, clamp=2.0,
                          swap=swap).to(dtype)


def stack_forward(layers, x):
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for layer in layers:
        x, ld = layer(x)
        total = total + ld
    return x, total


def stack_inverse(layers, y):
    total = torch.zeros(y.shape[0], dtype=y.dtype)
    for layer in reversed(layers):
        y, ld = layer.inverse(y)
        total = total + ld
    return y, total


def perturb(module, scale=0.5):
    """Random non-zero weights so that no layer is close to the identity."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def shrink_last(layer, factor=0.5):
    """Default (random) init with the conditioner's last layer scaled down.

    The stack is far from the identity (points move by several units), but its dynamic
    range stays moderate: in float32 the round-trip error of any invertible map grows
    with the range of the values it produces, whatever the kernel.
    """
    last = [m for m in layer.conditioner.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return layer


@pytest.mark.parametrize("mask", ["half", "alternate"])
@pytest.mark.parametrize("seed", [0, 1])
def test_16_layer_vector_stack_inverts(mask, seed):
    torch.manual_seed(seed)
    d = 11
    layers = nn.ModuleList(shrink_last(vector_layer(d, mask, swap=i % 2 == 1)) for i in range(16))
    x = torch.randn(256, d)
    y, ld = stack_forward(layers, x)
    assert (y - x).abs().max() > 2.0 and ld.abs().mean() > 0.5  # the stack is not trivial
    x2, ld_inv = stack_inverse(layers, y)
    assert (x2 - x).abs().max().item() <= 1e-5
    torch.testing.assert_close(ld_inv, -ld, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mask", ["checkerboard", "channel", "half", "alternate"])
def test_16_layer_image_stack_inverts(mask):
    torch.manual_seed(0)
    layers = nn.ModuleList(shrink_last(image_layer(3, mask, swap=i % 2 == 1)) for i in range(16))
    x = torch.randn(4, 3, 6, 5)
    y, ld = stack_forward(layers, x)
    assert (y - x).abs().max() > 1.0 and ld.abs().mean() > 0.5
    x2, ld_inv = stack_inverse(layers, y)
    assert (x2 - x).abs().max().item() <= 1e-5
    torch.testing.assert_close(ld_inv, -ld, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mask", ["half", "alternate"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("shape", [(5, 8), (5, 7), (3, 6, 2, 3), (3, 5, 2, 3)])
def test_parts_land_where_the_mask_says(mask, swap, shape):
    """y keeps the identity part in place and puts the op's output on the other part,
    for even and odd sizes (the merge takes a different path for each)."""
    torch.manual_seed(6)
    n = shape[1]
    layer = (vector_layer(n, mask, swap) if len(shape) == 2 else image_layer(n, mask, swap))
    layer = perturb(layer, 0.3)
    x = torch.randn(shape)
    idx = torch.arange(n)
    if mask == "half":
        ident, trans = idx[: n // 2], idx[n // 2:]
    else:
        ident, trans = idx[0::2], idx[1::2]
    if swap:
        ident, trans = trans, ident
    log_scale, shift = layer._conditioner(x[:, ident], None, len(trans)).chunk(2, dim=1)
    y_b, ld_b = affine_coupling(x[:, trans], log_scale, shift, clamp=layer.clamp)
    y, ld = layer(x)
    assert torch.equal(y[:, ident], x[:, ident])
    torch.testing.assert_close(y[:, trans], y_b, atol=0, rtol=0)
    # The masked op sums s per channel run (images, alternate mask): rounding, not exact.
    torch.testing.assert_close(ld, ld_b, atol=1e-5, rtol=1e-6)


def exact_logdet(layer, x):
    """log|det J| of the layer at each example, from the full Jacobian (float64)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: layer(v.view_as(xi))[0].reshape(-1),
                                                 xi.reshape(-1))
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


@pytest.mark.parametrize("mask,swap", [("half", False), ("half", True), ("alternate", False),
                                       ("alternate", True)])
def test_logdet_equals_slogdet_of_jacobian_vector(mask, swap):
    torch.manual_seed(2)
    layer = perturb(vector_layer(7, mask, swap, torch.float64))
    x = torch.randn(5, 7, dtype=torch.float64)
    _, ld = layer(x)
    torch.testing.assert_close(ld, exact_logdet(layer, x), atol=1e-10, rtol=1e-10)
    _, ld_inv = layer.inverse(x)
    torch.testing.assert_close(ld_inv, exact_logdet(lambda v: layer.inverse(v), x), atol=1e-10,
                               rtol=1e-10)


@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_logdet_equals_slogdet_of_jacobian_image(mask):
    torch.manual_seed(3)
    layer = perturb(image_layer(2, mask, swap=False, dtype=torch.float64), 0.2)
    x = torch.randn(3, 2, 3, 4, dtype=torch.float64)
    _, ld = layer(x)
    assert ld.abs().min() > 1e-3
    torch.testing.assert_close(ld, exact_logdet(layer, x), atol=1e-10, rtol=1e-10)


def test_checkerboard_leaves_masked_pixels_unchanged():
    torch.manual_seed(4)
    layer = perturb(image_layer(2, "checkerboard", swap=False), 0.3)
    x = torch.randn(2, 2, 4, 4)
    y, _ = layer(x)
    keep = ((torch.arange(4)[:, None] + torch.arange(4)) % 2 == 0)
    assert torch.equal(y[..., keep], x[..., keep])
    assert (y[..., ~keep] - x[..., ~keep]).abs().min() > 0


def test_gradcheck_through_layer():
    torch.manual_seed(5)
    layer = perturb(vector_layer(5, "half", False, torch.float64))
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: layer(v), (x,))
    assert torch.autograd.gradcheck(lambda v: layer.inverse(v), (x,))


def test_context_is_passed_to_conditioner():
    torch.manual_seed(6)
    layer = AffineCoupling(4, MLP(2 + 3, 4, hidden=(16,)), mask="half")
    x = torch.randn(8, 4)
    c1, c2 = torch.randn(8, 3), torch.randn(8, 3)
    y1, _ = layer(x, c1)
    y2, _ = layer(x, c2)
    assert not torch.allclose(y1, y2)
    x1, _ = layer.inverse(y1, c1)
    torch.testing.assert_close(x1, x, atol=1e-5, rtol=1e-5)


def test_zero_init_conditioner_is_identity():
    layer = AffineCoupling(6, MLP(3, 6, zero_init=True), mask="half")
    x = torch.randn(4, 6)
    y, ld = layer(x)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(4))


def test_torch_compile_fullgraph():
    torch.manual_seed(7)

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(
                perturb(vector_layer(6, "alternate", swap=i % 2 == 1), 0.2) for i in range(3))

        def forward(self, x):
            total = x.new_zeros(x.shape[0])
            for layer in self.layers:
                x, ld = layer(x)
                total = total + ld
            return x, total

    model = Flow()
    x = torch.randn(16, 6, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_c, ld_c = compiled(x)
    y_e, ld_e = model(x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(ld_c, ld_e)
    g_c = torch.autograd.grad((y_c.sum() + ld_c.sum()), x)[0]
    g_e = torch.autograd.grad((y_e.sum() + ld_e.sum()), x)[0]
    torch.testing.assert_close(g_c, g_e)


def test_torch_compile_inductor():
    torch.manual_seed(8)
    layer = perturb(vector_layer(6, "half", False), 0.2)
    x = torch.randn(16, 6)
    compiled = torch.compile(layer, fullgraph=True)
    y_c, ld_c = compiled(x)
    y_e, ld_e = layer(x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(ld_c, ld_e)


class TestBadInputs:
    def test_bad_mask(self):
        with pytest.raises(ValueError, match="mask must be one of"):
            AffineCoupling(4, MLP(2, 4), mask="diagonal")

    @pytest.mark.parametrize("clamp", [float("nan"), -1.0, float("inf")])
    def test_bad_clamp(self, clamp):
        with pytest.raises(ValueError, match="clamp must be a finite number >= 0"):
            AffineCoupling(4, MLP(2, 4), clamp=clamp)

    def test_bad_features(self):
        with pytest.raises(ValueError, match="features_or_channels"):
            AffineCoupling(0, MLP(2, 4))
        with pytest.raises(ValueError, match="at least 2"):
            AffineCoupling(1, MLP(1, 2))

    def test_bools_are_not_numbers(self):
        with pytest.raises(TypeError, match="features_or_channels must be an int, got bool"):
            AffineCoupling(True, MLP(1, 2))
        with pytest.raises(TypeError, match="clamp must be a number, got bool"):
            AffineCoupling(4, MLP(2, 4), clamp=True)
        with pytest.raises(TypeError, match="in_features must be an int, got bool"):
            MLP(True, 4)

    def test_conditioner_not_a_module(self):
        with pytest.raises(TypeError, match="conditioner must be an nn.Module"):
            AffineCoupling(4, lambda x: x)

    def test_wrong_feature_count(self):
        layer = AffineCoupling(4, MLP(2, 4))
        with pytest.raises(ValueError, match="input has 5 features/channels in dim 1, expected 4"):
            layer(torch.randn(3, 5))

    def test_wrong_rank(self):
        layer = AffineCoupling(4, MLP(2, 4))
        with pytest.raises(ValueError, match="input must be"):
            layer(torch.randn(3, 4, 2))
        img = AffineCoupling(2, ConvConditioner(2, 4), mask="checkerboard")
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            img(torch.randn(3, 2))

    def test_empty_batch(self):
        layer = AffineCoupling(4, MLP(2, 4))
        with pytest.raises(ValueError, match="empty batch"):
            layer(torch.randn(0, 4))

    def test_conditioner_output_shape(self):
        layer = AffineCoupling(4, MLP(2, 3))
        with pytest.raises(ValueError, match="conditioner must return"):
            layer(torch.randn(3, 4))

    def test_integer_input(self):
        layer = AffineCoupling(4, MLP(2, 4))
        with pytest.raises((TypeError, RuntimeError)):
            layer(torch.ones(3, 4, dtype=torch.int64))


class PairConditioner(nn.Module):
    """Returns ``(log_scale, shift)`` as two tensors instead of one stacked tensor."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, context=None):
        return tuple(self.inner(x).chunk(2, dim=1))


@pytest.mark.parametrize("mask", ["half", "alternate", "checkerboard"])
def test_pair_conditioner_equals_stacked(mask):
    torch.manual_seed(8)
    if mask == "checkerboard":
        stacked = perturb(image_layer(3, mask, False, torch.float64), 0.3)
        x = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    else:
        stacked = perturb(vector_layer(7, mask, True, torch.float64), 0.3)
        x = torch.randn(5, 7, dtype=torch.float64)
    pair = AffineCoupling(stacked.features, PairConditioner(stacked.conditioner), mask=mask,
                          clamp=stacked.clamp, swap=stacked.swap)
    for a, b in zip(stacked(x), pair(x)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("mask,shape", [("alternate", (6, 8)), ("alternate", (6, 7)), ("half", (6, 7)),
                                        ("channel", (3, 5, 2, 2))])
def test_pure_pytorch_twin_matches(mask, shape):
    """The benchmarks' eager baseline (gencore.reference's ops swapped in) computes the same
    outputs and gradients as the fused layer."""
    from gencore import reference

    torch.manual_seed(9)
    make = vector_layer if len(shape) == 2 else image_layer
    fused = perturb(make(shape[1], mask, True, torch.float64), 0.3)
    twin = make(shape[1], mask, True, torch.float64)
    twin.load_state_dict(fused.state_dict())
    twin.coupling_fn = reference.affine_coupling
    twin.masked_coupling_fn = reference.masked_affine_coupling
    x = torch.randn(shape, dtype=torch.float64)
    outs = []
    for layer in (fused, twin):
        xi = x.clone().requires_grad_()
        y, ld = layer(xi)
        grads = torch.autograd.grad((y * y).sum() + ld.sum(), [xi, *layer.parameters()])
        outs.append((y, ld, *grads))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
