"""The tiled sigmoid (SigLIP) loss against its materialized reference: the loss and all four
gradients, odd and rectangular shapes, every positive offset, SigLIP's initialisation and
scale 100 / bias -10, gradcheck, opcheck, compile, torch.func, thread-count independence,
memory that does not grow with N^2, and bad inputs."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gencore.reference as R
from gencore.ops import sigmoid_contrastive_loss, sigmoid_contrastive_pairs

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=2e-4)}


def _feats(n, m, d, dtype, device="cpu", seed=0, normalize=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(m, d, generator=g, dtype=torch.float64)
    b[: min(n, m)] += 1.5 * a[: min(n, m)]  # correlated pairs on the diagonal
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (a.to(dtype=dtype, device=device).requires_grad_(), b.to(dtype=dtype, device=device).requires_grad_())


def _hyper(scale, bias, dtype, device="cpu"):
    return (torch.tensor(scale, dtype=dtype, device=device, requires_grad=True),
            torch.tensor(bias, dtype=dtype, device=device, requires_grad=True))


def _close(x, y, dtype):
    # Relative to the overall size: entries that cancel to ~0 make elementwise rtol meaningless.
    x, y = x.double(), y.double()
    scale = max(1.0, y.abs().max().item())
    torch.testing.assert_close(x, y, atol=TOL[dtype]["atol"] * scale, rtol=TOL[dtype]["rtol"])


def _compare(inputs, dtype, offset=None):
    a, b, s, bias = inputs
    if offset is None:
        out = sigmoid_contrastive_loss(a, b, s, bias)
        offset = 0
    else:
        out = sigmoid_contrastive_pairs(a, b, s, bias, positive_offset=offset)
    expected = R.sigmoid_contrastive_loss(a, b, s, bias, positive_offset=offset)
    _close(out, expected, dtype)
    for got, want in zip(torch.autograd.grad(out, inputs), torch.autograd.grad(expected, inputs)):
        _close(got, want, dtype)
    return out


# (n, d): one row, no multiple of 4/16/64, one feature, several 512-row CPU tiles.
SHAPES = [(1, 3), (3, 5), (97, 1), (97, 17), (1100, 33), (513, 7)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d", SHAPES)
def test_matches_reference(device, dtype, n, d):
    a, b = _feats(n, n, d, dtype, device)
    _compare((a, b, *_hyper(1.7, -2.0, dtype, device)), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,offset", [(5, 9, 0), (5, 9, 4), (9, 5, -3), (600, 77, 77), (600, 77, -600),
                                        (77, 600, 520), (530, 530, 1)])
def test_rectangular_pairs_match_reference(device, dtype, n, m, offset):
    a, b = _feats(n, m, 6, dtype, device, seed=1)
    _compare((a, b, *_hyper(2.0, -1.0, dtype, device)), dtype, offset=offset)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (100.0, -10.0), (100.0, 10.0)])
def test_siglip_initialisation_and_large_logits_stay_finite_and_accurate(scale, bias):
    # Unit features at scale 100: logits in [-110, 90]. A naive log(sigmoid(.)) or
    # sigmoid(L) - 1 underflows / cancels there; softplus and -sigmoid(-L) do not.
    a, b = _feats(300, 300, 16, torch.float32, seed=2, normalize=True)
    s, bb = _hyper(scale, bias, torch.float32)
    out = sigmoid_contrastive_loss(a, b, s, bb)
    grads = torch.autograd.grad(out, (a, b, s, bb))
    assert torch.isfinite(out) and all(torch.isfinite(g).all() for g in grads)
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    s64, bb64 = _hyper(scale, bias, torch.float64)
    ref = R.sigmoid_contrastive_loss(a64, b64, s64, bb64)
    assert out.item() == pytest.approx(ref.item(), rel=2e-5)
    for got, want in zip(grads, torch.autograd.grad(ref, (a64, b64, s64, bb64))):
        _close(got, want, torch.float32)


def test_a_confident_positive_keeps_its_tiny_loss():
    # One aligned pair at scale 100, bias -10: L = 90 and the loss is softplus(-90) = 8.2e-40
    # in float64, not softplus(90) - 90 = 0 by cancellation.
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss = sigmoid_contrastive_loss(a, a, 100.0, -10.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-90.0)), rel=1e-12)
    assert loss.item() == pytest.approx(R.sigmoid_contrastive_loss(a, a, 100.0, -10.0).item(), rel=1e-12)


def test_float_hyper_parameters_equal_tensor_ones():
    a, b = _feats(20, 20, 4, torch.float32, seed=3)
    x = sigmoid_contrastive_loss(a, b, 3.0, -2.5)
    y = sigmoid_contrastive_loss(a, b, torch.tensor(3.0), torch.tensor(-2.5))
    assert x.item() == y.item()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 40), d=st.integers(1, 9), data=st.data(),
       scale=st.floats(0.01, 50.0), bias=st.floats(-20.0, 20.0))
def test_property_any_shape_offset_scale_and_bias(n, m, d, data, scale, bias):
    offset = data.draw(st.integers(-n, m))
    a, b = _feats(n, m, d, torch.float64, seed=n * 41 + m)
    _compare((a, b, *_hyper(scale, bias, torch.float64)), torch.float64, offset=offset)


def test_the_loss_is_a_sum_of_row_blocks():
    # What the distributed loss relies on: splitting the text side into chunks, each with
    # its own offset, adds up to the whole.
    a, b = _feats(12, 12, 5, torch.float64, seed=4)
    whole = sigmoid_contrastive_loss(a, b, 2.0, -1.0)
    parts = sum(sigmoid_contrastive_pairs(a, b[j:j + 4], 2.0, -1.0, positive_offset=-j) for j in (0, 4, 8))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-12)


def test_gradcheck_float64():
    a, b = _feats(7, 7, 5, torch.float64, seed=5)
    s, bias = _hyper(1.3, -0.8, torch.float64)
    assert torch.autograd.gradcheck(sigmoid_contrastive_loss, (a, b, s, bias))
    q, k = _feats(6, 11, 3, torch.float64, seed=6)
    assert torch.autograd.gradcheck(lambda x, y, t, c: sigmoid_contrastive_pairs(x, y, t, c, positive_offset=4),
                                    (q, k, s, bias))


def test_gradcheck_across_tiles_float64():
    a, b = _feats(530, 530, 2, torch.float64, seed=7)
    s, bias = _hyper(0.9, -3.0, torch.float64)
    assert torch.autograd.gradcheck(sigmoid_contrastive_loss, (a, b, s, bias), fast_mode=True)


def test_opcheck(device):
    a, b = _feats(9, 13, 4, torch.float32, device, seed=8)
    s, bias = _hyper(2.0, -1.0, torch.float32, device)
    torch.library.opcheck(torch.ops.gencore.sigmoid_contrastive_loss, (a, b, s, bias, 2))
    torch.library.opcheck(torch.ops.gencore.sigmoid_contrastive_loss, (a, b, s, bias), {"positive_offset": -9})


def test_opcheck_loss_with_grads(device):
    a, b = _feats(9, 13, 4, torch.float32, device, seed=8)
    s, bias = _hyper(2.0, -1.0, torch.float32, device)
    args = [t.detach() for t in (a, b, s, bias)]  # the op returns gradients; it has none itself
    torch.library.opcheck(torch.ops.gencore.sigmoid_contrastive_loss_with_grads, (*args, 2))
    torch.library.opcheck(torch.ops.gencore.sigmoid_contrastive_loss_with_grads, tuple(args),
                          {"positive_offset": -9})


@pytest.mark.parametrize("n,m,offset", [(1, 1, 0), (37, 37, 0), (20, 45, 3), (45, 20, -45)])
def test_loss_with_grads_is_the_loss_and_its_backward_at_one(device, n, m, offset):
    """The training path's op gives exactly the forward's loss and the backward's gradients
    at grad_loss = 1 (on CPU the same tiles in the same order: bit for bit)."""
    a, b = _feats(n, m, 16, torch.float32, device, seed=n + m)
    s, bias = _hyper(10.0, -10.0, torch.float32, device)
    args = [t.detach() for t in (a, b, s, bias)]
    fused = torch.ops.gencore.sigmoid_contrastive_loss_with_grads(*args, offset)
    loss = torch.ops.gencore.sigmoid_contrastive_loss(*args, offset)
    grads = torch.ops.gencore.sigmoid_contrastive_loss_backward(torch.ones((), device=device), *args, offset)
    for got, want in zip(fused, (loss, *grads)):
        assert got.dtype == want.dtype and got.shape == want.shape
        if device.type == "cpu":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_training_path_scales_its_gradients_by_grad_loss():
    """With a gradient wanted the wrapper runs the loss-with-gradients op and its backward
    multiplies them by grad_loss: any grad_loss, and inputs that need no gradient get none."""
    a, b = _feats(30, 30, 8, torch.float64, seed=3)
    s, bias = _hyper(5.0, -3.0, torch.float64)
    loss = sigmoid_contrastive_loss(a, b, s, bias)
    assert loss.grad_fn is not None and "SigmoidLossWithGrads" in type(loss.grad_fn).__name__
    g = torch.autograd.grad(loss * -2.5, (a, b, s, bias))
    ref = R.sigmoid_contrastive_loss(a, b, s, bias)
    want = torch.autograd.grad(ref * -2.5, (a, b, s, bias))
    for x, y in zip(g, want):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-10)
    frozen = b.detach()
    (ga,) = torch.autograd.grad(sigmoid_contrastive_loss(a, frozen, 5.0, -3.0), (a,))
    torch.testing.assert_close(ga, torch.autograd.grad(R.sigmoid_contrastive_loss(a, frozen, 5.0, -3.0), (a,))[0])
    with torch.no_grad():  # no gradient wanted: the plain forward, nothing kept
        assert sigmoid_contrastive_loss(a, b, s, bias).grad_fn is None


def test_torch_compile_fullgraph():
    a, b = _feats(50, 50, 8, torch.float32, seed=9)
    s, bias = _hyper(3.0, -2.0, torch.float32)
    compiled = torch.compile(sigmoid_contrastive_loss, fullgraph=True, backend="aot_eager")
    out, ref = compiled(a, b, s, bias), sigmoid_contrastive_loss(a, b, s, bias)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    for x, y in zip(torch.autograd.grad(out, (a, b, s, bias)), torch.autograd.grad(ref, (a, b, s, bias))):
        torch.testing.assert_close(x, y)


def test_torch_func_grad_and_refusals():
    a, b = _feats(10, 10, 3, torch.float64, seed=10)
    a, b = a.detach(), b.detach()
    s, bias = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    got = torch.func.grad(lambda x: sigmoid_contrastive_loss(x, b, s, bias))(a)
    want = torch.func.grad(lambda x: R.sigmoid_contrastive_loss(x, b, s, bias))(a)
    torch.testing.assert_close(got, want)
    with pytest.raises(RuntimeError, match="forward-mode"):
        torch.func.jvp(lambda x: sigmoid_contrastive_loss(x, b, s, bias), (a,), (torch.ones_like(a),))
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.func.grad(torch.func.grad(lambda t: sigmoid_contrastive_loss(a, b, t, bias)))(s)
    x = a.clone().requires_grad_()
    (g,) = torch.autograd.grad(sigmoid_contrastive_loss(x, b, s, bias), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative"):
        g.sum().backward()


def test_result_independent_of_thread_count():
    a, b = _feats(1200, 1200, 24, torch.float32, seed=11)
    s, bias = _hyper(5.0, -4.0, torch.float32)
    n_threads = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            loss = sigmoid_contrastive_loss(a, b, s, bias)
            results.append((loss.detach(), *torch.autograd.grad(loss, (a, b, s, bias))))
    finally:
        torch.set_num_threads(n_threads)
    for x, y in zip(*results):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch, gencore
    n, d = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(n, d), dim=1).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(n, d), dim=1).requires_grad_()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = gencore.ops.sigmoid_contrastive_loss(a, b, 10.0, -10.0)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mib": (peak - base) / 1024, "loss": loss.item(),
                      "finite": bool(torch.isfinite(a.grad).all())}))
""")


def test_memory_does_not_grow_with_n_squared():
    # N = 16384: one float32 N x N matrix is 1 GiB; forward + backward stay far below.
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, "16384", "4"], capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["finite"] and math.isfinite(r["loss"])
    assert r["extra_mib"] < 64, r


# ----------------------------------------------------------------- bad inputs -------------
def test_bad_inputs():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        sigmoid_contrastive_loss(a, torch.randn(5, 3), 1.0, 0.0)
    with pytest.raises(ValueError, match="feature dimension"):
        sigmoid_contrastive_loss(a, torch.randn(4, 2), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        sigmoid_contrastive_loss(torch.randn(4), torch.randn(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        sigmoid_contrastive_loss(torch.randn(0, 3), torch.randn(0, 3), 1.0, 0.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="logit_scale"):
            sigmoid_contrastive_loss(a, b, bad, 0.0)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="logit_bias must be finite"):
            sigmoid_contrastive_loss(a, b, 1.0, bad)
        with pytest.raises(ValueError, match="logit_bias must be finite"):
            sigmoid_contrastive_loss(a, b, 1.0, torch.tensor(bad))
    with pytest.raises(ValueError, match="logit_bias"):
        sigmoid_contrastive_loss(a, b, 1.0, torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="logit_bias"):
        sigmoid_contrastive_loss(a, b, 1.0, "0")
    with pytest.raises(TypeError, match="logit_bias"):
        sigmoid_contrastive_loss(a, b, 1.0, torch.tensor(1))
    with pytest.raises(TypeError, match="dtype"):
        sigmoid_contrastive_loss(a, b.double(), 1.0, 0.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        sigmoid_contrastive_loss(a.half(), b.half(), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"positive_offset must be in \[-n, m\] = \[-4, 4\]"):
        sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=2**62)
    with pytest.raises(TypeError, match="positive_offset"):
        sigmoid_contrastive_pairs(a, b, 1.0, 0.0, positive_offset=1.0)


def test_meta_and_foreign_device_hyper_parameters_are_refused():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    meta = torch.tensor(2.0, device="meta")
    for call, name in ((lambda: sigmoid_contrastive_loss(a, b, meta, 0.0), "logit_scale"),
                       (lambda: sigmoid_contrastive_loss(a, b, 1.0, meta), "logit_bias"),
                       (lambda: torch.ops.gencore.sigmoid_contrastive_loss(a, b, torch.tensor(1.0), meta), "logit_bias")):
        with pytest.raises(ValueError, match=f"{name} must be on the features' device \\(cpu\\), got meta"):
            call()
    # All-meta inputs get the fake kernel: shapes only, no garbage values read.
    out = sigmoid_contrastive_loss(a.to("meta"), b.to("meta"), meta, meta)
    assert out.device.type == "meta" and out.shape == ()


def test_nan_features_give_a_nan_loss_not_a_silent_number():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    a[1, 2] = float("nan")
    assert torch.isnan(sigmoid_contrastive_loss(a, b, 1.0, 0.0))


# ----------------------------------------------------------------- CUDA -------------------
@pytest.mark.cuda
@pytest.mark.parametrize("n,m,d,offset", [(1, 1, 8, 0), (97, 97, 33, 0), (1100, 1100, 64, 0), (2049, 2049, 128, 0),
                                          (300, 70, 16, 70), (70, 300, 16, -5)])
def test_cuda_matches_cpu(n, m, d, offset, contrastive_path):
    a, b = _feats(n, m, d, torch.float32, seed=12, normalize=True)
    s, bias = _hyper(10.0, -10.0, torch.float32)
    cuda = [t.detach().cuda().requires_grad_() for t in (a, b, s, bias)]
    out = sigmoid_contrastive_pairs(a, b, s, bias, positive_offset=offset)
    outc = sigmoid_contrastive_pairs(*cuda, positive_offset=offset)
    torch.testing.assert_close(outc.cpu(), out, atol=1e-5, rtol=1e-5)
    for x, y in zip(torch.autograd.grad(outc, cuda), torch.autograd.grad(out, (a, b, s, bias))):
        torch.testing.assert_close(x.cpu(), y, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_at_most_twice_torch(dtype, contrastive_path):
    a, b = _feats(1000, 1000, 64, torch.float32, "cuda", seed=13, normalize=True)
    ref = lambda x, y: R.sigmoid_contrastive_loss(x, y, 10.0, -10.0)  # noqa: E731
    x32, y32 = a.detach().requires_grad_(), b.detach().requires_grad_()
    exact = ref(x32, y32)
    gx32 = torch.autograd.grad(exact, (x32, y32))
    xl, yl = a.detach().to(dtype).requires_grad_(), b.detach().to(dtype).requires_grad_()
    mine = sigmoid_contrastive_loss(xl, yl, 10.0, -10.0)
    gm = torch.autograd.grad(mine, (xl, yl))
    xl2, yl2 = a.detach().to(dtype).requires_grad_(), b.detach().to(dtype).requires_grad_()
    theirs = ref(xl2, yl2)
    gt = torch.autograd.grad(theirs, (xl2, yl2))
    assert (mine.float() - exact).abs() <= 2 * (theirs.float() - exact).abs() + 1e-3
    for m_, t_, e_ in zip(gm, gt, gx32):
        assert (m_.float() - e_).abs().max() <= 2 * (t_.float() - e_).abs().max() + 1e-6
