"""The tiled contrastive ops against their materialized references: outputs and every
gradient, odd shapes, extreme temperatures and scales, gradcheck, opcheck, compile,
memory that does not grow with N^2, and bad inputs."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import gencore.reference as R
from gencore.ops import clip_loss, contrastive_cross_entropy, nt_xent_loss

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=2e-4)}


def _feats(n, d, dtype, device, seed=0, normalize=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)  # correlated pairs
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (a.to(dtype=dtype, device=device).requires_grad_(), b.to(dtype=dtype, device=device).requires_grad_())


def _close(x, y, dtype):
    # Gradients are compared relative to their overall size: elementwise rtol alone is
    # meaningless for entries that cancel to ~0.
    x, y = x.double(), y.double()
    scale = max(1.0, y.abs().max().item())
    torch.testing.assert_close(x, y, atol=TOL[dtype]["atol"] * scale, rtol=TOL[dtype]["rtol"])


def _compare(fn, ref, inputs, dtype, weights=None):
    out = fn(*inputs)
    expected = ref(*inputs)
    _close(out, expected, dtype)
    w = weights if weights is not None else torch.ones_like(out)
    diff = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    g = torch.autograd.grad((out * w).sum(), diff)
    gr = torch.autograd.grad((expected * w).sum(), diff)
    for a, b in zip(g, gr):
        _close(a, b, dtype)
    return out


SHAPES = [(1, 3), (3, 5), (97, 1), (97, 17), (1100, 33), (513, 7)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d", SHAPES)
def test_clip_loss_matches_reference(device, dtype, n, d):
    a, b = _feats(n, d, dtype, device)
    scale = torch.tensor(2.5, dtype=dtype, device=device, requires_grad=True)
    _compare(clip_loss, R.clip_loss, (a, b, scale), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d", SHAPES)
def test_nt_xent_matches_reference(device, dtype, n, d):
    z1, z2 = _feats(n, d, dtype, device, seed=1)
    t = torch.tensor(0.3, dtype=dtype, device=device, requires_grad=True)
    _compare(lambda x, y, tt: nt_xent_loss(x, y, temperature=tt),
             lambda x, y, tt: R.nt_xent_loss(x, y, temperature=tt), (z1, z2, t), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d", [(1, 1, 4), (5, 9, 3), (97, 1030, 17), (600, 77, 8)])
def test_contrastive_rows_matches_reference(device, dtype, n, m, d):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(n, d, generator=g, dtype=dtype).to(device).requires_grad_()
    k = torch.randn(m, d, generator=g, dtype=dtype).to(device).requires_grad_()
    scale = torch.tensor(1.7, dtype=dtype, device=device, requires_grad=True)
    pos = torch.randint(0, m, (n,), generator=g).to(device)
    exclude = torch.where(torch.arange(n) % 3 == 0, -1, (pos.cpu() + 1) % m).to(device)
    if m == 1:
        exclude = torch.full((n,), -1, device=device)
    w = torch.randn(n, generator=g, dtype=dtype).to(device)  # per-row upstream gradients
    _compare(lambda *x: contrastive_cross_entropy(*x, exclude), lambda *x: R.contrastive_cross_entropy(*x, exclude),
             (q, k, scale, pos), dtype, weights=w)


def test_float_hyper_parameters_equal_tensor_ones():
    a, b = _feats(40, 6, torch.float64, "cpu")
    assert clip_loss(a, b, 3.0).item() == clip_loss(a, b, torch.tensor(3.0, dtype=torch.float64)).item()
    assert nt_xent_loss(a, b, temperature=0.2).item() == pytest.approx(
        R.nt_xent_loss(a, b, temperature=0.2).item(), rel=1e-12)


@pytest.mark.parametrize("temperature", [0.01, 10.0])
def test_nt_xent_extreme_temperatures(device, temperature):
    z1, z2 = _feats(300, 16, torch.float32, device, seed=3)
    ref64 = R.nt_xent_loss(z1.detach().double(), z2.detach().double(), temperature=temperature)
    loss = nt_xent_loss(z1, z2, temperature=temperature)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref64.item(), rel=1e-5, abs=1e-5)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_clip_scale_100_nearly_orthogonal_features(device):
    # Logits up to 100 in one entry per row and ~0 elsewhere: exp(100) overflows float32,
    # a fixed shift by the largest possible logit (100) underflows the rest; the online
    # log-sum-exp must do neither.
    n, d = 256, 512
    eye = torch.eye(n, d)
    noise = 1e-3 * torch.randn(n, d, generator=torch.Generator().manual_seed(4))
    a = F.normalize(eye + noise, dim=1).to(device).requires_grad_()
    b = F.normalize(torch.roll(eye, 1, 0) + noise, dim=1).to(device).requires_grad_()  # positives orthogonal
    scale = torch.tensor(100.0, device=device, requires_grad=True)
    loss = clip_loss(a, b, scale)
    ref64 = R.clip_loss(a.detach().double(), b.detach().double(), 100.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref64.item(), rel=1e-5)
    assert loss.item() > 90  # the positive is ~100 nats below the best negative
    loss.backward()
    for t in (a.grad, b.grad, scale.grad):
        assert torch.isfinite(t).all()
    # ... and the easy direction: positives aligned give a loss near 0, not NaN.
    # (A cross-entropy computed as lse - logit may round a few ulps of the logit (100)
    # below 0: -2.3e-5 on an H200.)
    easy = clip_loss(a.detach(), a.detach(), 100.0)
    assert torch.isfinite(easy) and -8 * torch.finfo(torch.float32).eps * 100 <= easy.item() < 1e-3


def test_gradcheck_float64():
    a, b = _feats(7, 5, torch.float64, "cpu", seed=5)
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_loss, (a, b, scale))
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, tt: nt_xent_loss(x, y, temperature=tt), (a, b, t))
    k = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0, 3, 5, 2, 10, 1, 7])
    ex = torch.tensor([-1, 4, 6, -1, 0, 2, 8])
    assert torch.autograd.gradcheck(lambda q, kk, s: contrastive_cross_entropy(q, kk, s, pos, ex), (a, k, scale))


def test_gradcheck_across_tiles_float64():
    # More rows than one tile (512): the online merge and the tile loop in backward.
    a, b = _feats(530, 2, torch.float64, "cpu", seed=6)
    scale = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_loss, (a, b, scale), fast_mode=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, tt: nt_xent_loss(x, y, temperature=tt), (a, b, t), fast_mode=True)


def test_opcheck(device):
    a, b = _feats(9, 4, torch.float32, device, seed=7)
    s = torch.tensor(2.0, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.gencore.clip_loss, (a, b, s))
    torch.library.opcheck(torch.ops.gencore.nt_xent_loss, (a, b, torch.tensor(0.5, device=device, requires_grad=True)))
    k = torch.randn(13, 4, device=device, requires_grad=True)
    pos = torch.arange(9, device=device)
    ex = torch.full((9,), -1, device=device)
    torch.library.opcheck(torch.ops.gencore.contrastive_rows, (a, k, s, pos, ex))


def test_torch_compile_fullgraph():
    a, b = _feats(50, 8, torch.float32, "cpu", seed=8)
    s = torch.tensor(3.0, requires_grad=True)

    def both(x, y, scale):
        return clip_loss(x, y, scale) + nt_xent_loss(x, y, temperature=0.5)

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    out = compiled(a, b, s)
    ref = both(a, b, s)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    g = torch.autograd.grad(out, (a, b, s))
    gr = torch.autograd.grad(ref, (a, b, s))
    for x, y in zip(g, gr):
        torch.testing.assert_close(x, y)


def test_result_independent_of_thread_count():
    a, b = _feats(1200, 24, torch.float32, "cpu", seed=9)
    s = torch.tensor(5.0, requires_grad=True)
    n_threads = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            loss = clip_loss(a, b, s) + nt_xent_loss(a, b, temperature=0.1)
            results.append((loss.detach(), *torch.autograd.grad(loss, (a, b, s))))
    finally:
        torch.set_num_threads(n_threads)
    for x, y in zip(*results):
        # BLAS may split its dot products differently per thread count; the tiling and
        # reductions of gencore itself are fixed, so differences stay at rounding level.
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch, gencore
    n, d, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(n, d), dim=1).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(n, d), dim=1).requires_grad_()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if which == "clip":
        loss = gencore.ops.clip_loss(a, b, 20.0)
    else:
        loss = gencore.ops.nt_xent_loss(a, b, temperature=0.2)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mib": (peak - base) / 1024, "loss": loss.item(),
                      "finite": bool(torch.isfinite(a.grad).all())}))
""")


@pytest.mark.parametrize("which", ["clip", "nt_xent"])
def test_memory_does_not_grow_with_n_squared(which):
    # N = 16384: one float32 N x N matrix is 1 GiB (NT-Xent's 2N x 2N: 4 GiB); the tiled
    # forward + backward must stay within a small, N-linear amount of extra memory.
    n, d = 16384, 4
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(d), which], capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["finite"] and math.isfinite(r["loss"])
    assert r["extra_mib"] < 64, r


# ----------------------------------------------------------------- bad inputs -------------
def test_bad_inputs_clip():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        clip_loss(a, torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match="feature dimension"):
        clip_loss(a, torch.randn(4, 2), 1.0)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        clip_loss(torch.randn(4), torch.randn(4), 1.0)
    with pytest.raises(ValueError, match="empty"):
        clip_loss(torch.randn(0, 3), torch.randn(0, 3), 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="logit_scale"):
            clip_loss(a, b, bad)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(a, b, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(a, b, torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="dtype"):
        clip_loss(a, b.double(), 1.0)
    with pytest.raises(TypeError, match="floating"):
        clip_loss(a.long(), b.long(), 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        clip_loss(a.half(), b.half(), 1.0)


def test_bad_inputs_nt_xent():
    z = torch.randn(4, 3)
    for bad in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            nt_xent_loss(z, z, temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        nt_xent_loss(z, z, temperature="0.5")
    with pytest.raises(ValueError, match="same number of rows"):
        nt_xent_loss(z, torch.randn(3, 3))
    with pytest.raises(ValueError, match="feature dimension"):
        nt_xent_loss(z, torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        nt_xent_loss(torch.randn(4, 3, 1), torch.randn(4, 3, 1))


def test_bad_inputs_rows():
    q, k = torch.randn(3, 2), torch.randn(5, 2)
    with pytest.raises(ValueError, match="positive must index"):
        contrastive_cross_entropy(q, k, 1.0, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="positive"):
        contrastive_cross_entropy(q, k, 1.0, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="int64"):
        contrastive_cross_entropy(q, k, 1.0, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="excluded"):
        contrastive_cross_entropy(q, k, 1.0, torch.tensor([0, 1, 2]), torch.tensor([0, -1, -1]))
    with pytest.raises(ValueError, match="exclude"):
        contrastive_cross_entropy(q, k, 1.0, torch.tensor([0, 1, 2]), torch.tensor([-2, -1, -1]))


def test_meta_hyper_parameters_and_indices_are_refused():
    # A meta tensor beside CPU features used to reach the fake kernels and return
    # uninitialised memory as the loss; now every entry point names the tensor.
    import gencore.nn as gnn

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    meta = torch.tensor(2.0, device="meta")
    idx = torch.tensor([0, 1, 2, 3])
    calls = {
        "logit_scale": [lambda: clip_loss(a, b, meta), lambda: torch.ops.gencore.clip_loss(a, b, meta)],
        "temperature": [lambda: nt_xent_loss(a, b, temperature=meta),
                        lambda: torch.ops.gencore.nt_xent_loss(a, b, meta),
                        lambda: gnn.NTXentLoss(learnable=True).to("meta")(a, b)],
        "scale": [lambda: contrastive_cross_entropy(a, b, meta, idx)],
        "positive": [lambda: contrastive_cross_entropy(a, b, 1.0, idx.to("meta"))],
        "exclude": [lambda: torch.ops.gencore.contrastive_rows(a, b, torch.tensor(1.0), idx, idx.to("meta"))],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=f"{name} must be on the features' device \\(cpu\\), got meta"):
                fn()
    module = gnn.CLIPLoss().to("meta")
    with pytest.raises(ValueError, match="logit_scale must be on the features' device"):
        module(a, b)


@pytest.mark.parametrize("dtype,tiny", [(torch.float32, 1e-40), (torch.float64, 1e-310)])
def test_temperature_whose_reciprocal_overflows_is_refused(dtype, tiny):
    # A denormal temperature passes "> 0" but 1 / 1e-40 is inf in float32: the loss was NaN.
    z1, z2 = torch.randn(4, 8, dtype=dtype), torch.randn(4, 8, dtype=dtype)
    for t in (tiny, torch.tensor(tiny, dtype=dtype)):
        with pytest.raises(ValueError, match="temperature must be >= .*reciprocal must be finite"):
            nt_xent_loss(z1, z2, temperature=t)
    if dtype == torch.float32:  # a float64 temperature that becomes 0 in float32 math
        with pytest.raises(ValueError, match="reciprocal must be finite in Float"):
            nt_xent_loss(z1, z2, temperature=torch.tensor(1e-300, dtype=torch.float64))


@pytest.mark.parametrize("dtype,temperatures", [(torch.float64, (1e-300, 1e-50, 1e-20, 1e-8)),
                                                (torch.float32, (1e-20, 1e-8, 1e-4))])
def test_extreme_scales_stay_finite_and_accurate(dtype, temperatures):
    # Logits of 1e20 and more: a fused multiply-add of scale * R - max used to leave the
    # row maximum's own exponent off by its rounding error (thousands), and the loss came
    # out -inf or NaN (csrc/contrastive/contrastive_cpu.cpp, tile_product).
    z1, z2 = _feats(6, 8, dtype, "cpu", seed=3)
    # float32: the loss is a difference of logits 1000x larger than itself, so float32
    # rounding of the logits alone costs ~1e-5 relative.
    rel = 1e-9 if dtype == torch.float64 else 1e-4
    for t in temperatures:
        got = nt_xent_loss(z1, z2, temperature=t).double()
        want = R.nt_xent_loss(z1.double(), z2.double(), temperature=t)
        assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=rel), t
        got = clip_loss(z1, z2, 1 / t).double()
        want = R.clip_loss(z1.double(), z2.double(), 1 / t)
        assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=rel), t


# ----------------------------------------------------------------- CUDA -------------------
@pytest.mark.cuda
@pytest.mark.parametrize("n,d", [(1, 8), (97, 33), (1100, 64), (2049, 128)])
def test_cuda_matches_cpu(n, d, contrastive_path):
    a, b = _feats(n, d, torch.float32, "cpu", seed=10)
    s = torch.tensor(10.0, requires_grad=True)
    ac, bc = a.detach().cuda().requires_grad_(), b.detach().cuda().requires_grad_()
    sc = s.detach().cuda().requires_grad_()
    for fn in (clip_loss, lambda x, y, t: nt_xent_loss(x, y, temperature=1 / t)):
        out, outc = fn(a, b, s), fn(ac, bc, sc)
        # The loss is a difference of log-sum-exps and logits as large as |s a.b| (2000 at
        # D = 128): float32 resolves it to a few ulps of that, not to 1e-5 (seen on an H200:
        # CPU -1.2e-4, CUDA 0.0 where float64 says 0). Both sides within 8 ulps of the
        # largest logit of the float64 value.
        ref = fn(a.detach().double(), b.detach().double(), s.detach().double())
        ulp = torch.finfo(torch.float32).eps * (s * a @ b.T).abs().max().item()
        for got in (out, outc.cpu()):
            assert abs(got.item() - ref.item()) <= 8 * ulp, (got.item(), ref.item(), ulp)
        g = torch.autograd.grad(out, (a, b, s))
        gc = torch.autograd.grad(outc, (ac, bc, sc))
        for x, y in zip(gc, g):
            torch.testing.assert_close(x.cpu(), y, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_at_most_twice_torch(dtype, contrastive_path):
    # The FlashAttention rule: error against a float32 reference at most twice that of
    # the materialized reference computed in the same low precision.
    n, d = 1000, 64
    a, b = _feats(n, d, torch.float32, "cuda", seed=11, normalize=True)
    for fn, ref in ((lambda x, y: clip_loss(x, y, 30.0), lambda x, y: R.clip_loss(x, y, 30.0)),
                    (lambda x, y: nt_xent_loss(x, y, temperature=0.1),
                     lambda x, y: R.nt_xent_loss(x, y, temperature=0.1))):
        x32, y32 = a.detach().requires_grad_(), b.detach().requires_grad_()
        exact = ref(x32, y32)
        gx32 = torch.autograd.grad(exact, (x32, y32))
        xl, yl = a.detach().to(dtype).requires_grad_(), b.detach().to(dtype).requires_grad_()
        mine, theirs = fn(xl, yl), ref(xl, yl)
        gm = torch.autograd.grad(mine, (xl, yl))
        xl2, yl2 = a.detach().to(dtype).requires_grad_(), b.detach().to(dtype).requires_grad_()
        gt = torch.autograd.grad(ref(xl2, yl2), (xl2, yl2))
        assert (mine.float() - exact).abs() <= 2 * (theirs.float() - exact).abs() + 1e-3
        for m_, t_, e_ in zip(gm, gt, gx32):
            assert (m_.float() - e_).abs().max() <= 2 * (t_.float() - e_).abs().max() + 1e-6


@pytest.mark.cuda
def test_cuda_device_mismatch():
    a = torch.randn(4, 3, device="cuda")
    with pytest.raises(ValueError, match="device"):
        clip_loss(a, torch.randn(4, 3), 1.0)
    with pytest.raises(ValueError, match="device"):
        clip_loss(a, a, torch.tensor(1.0))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_tensor_core_path_matches_simt_path(monkeypatch, dtype):
    # GENCORE_CONTRASTIVE_SIMT=1 forces the SIMT tile products: the two paths of the same
    # kernels must agree to float32-accumulation rounding of the same low-precision inputs.
    a, b = _feats(333, 72, torch.float32, "cuda", seed=12, normalize=True)
    x, y = a.detach().to(dtype), b.detach().to(dtype)

    def run():
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        loss = clip_loss(xx, yy, 20.0) + nt_xent_loss(xx, yy, temperature=0.2)
        return (loss.float(), *(g.float() for g in torch.autograd.grad(loss, (xx, yy))))

    mma = run()
    monkeypatch.setenv("GENCORE_CONTRASTIVE_SIMT", "1")
    simt = run()
    for m_, s_ in zip(mma, simt):
        torch.testing.assert_close(m_, s_, atol=2e-2, rtol=2e-2)


@pytest.mark.cuda
def test_cuda_few_query_rows_many_keys(contrastive_path):
    # Few row blocks and many keys: the kernels split the key tiles over the grid.
    g = torch.Generator().manual_seed(13)
    q = torch.randn(70, 40, generator=g, dtype=torch.float64)
    k = torch.randn(5000, 40, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 5000, (70,), generator=g)
    ex = torch.where(torch.arange(70) % 2 == 0, -1, (pos + 7) % 5000)
    w = torch.randn(70, generator=g, dtype=torch.float64)
    out = []
    for dev in ("cpu", "cuda"):
        qq, kk = q.to(dev).requires_grad_(), k.to(dev).requires_grad_()
        s = torch.tensor(0.8, dtype=torch.float64, device=dev, requires_grad=True)
        loss = contrastive_cross_entropy(qq, kk, s, pos.to(dev), ex.to(dev))
        out.append((loss.detach().cpu(), *(t.cpu() for t in torch.autograd.grad((loss * w.to(dev)).sum(), (qq, kk, s)))))
    for c, d in zip(*out):
        torch.testing.assert_close(d, c, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("temperature", [0.01, 0.05, 0.07])
def test_nt_xent_temperature_gradient_at_low_temperature(temperature):
    """dL/dT against autograd of the materialized float64 loss. The masked self-similarity
    once entered the gradient sum and was subtracted afterwards: its weight is huge (the
    log-sum-exp excludes it), so the difference cancelled (+127.7 instead of -4227.5 at
    T = 0.01, NaN in float32)."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 32, generator=g, dtype=torch.float64), torch.randn(64, 32, generator=g, dtype=torch.float64)
    t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    (dt,) = torch.autograd.grad(nt_xent_loss(z1, z2, temperature=t), t)
    t_ref = t.detach().clone().requires_grad_()
    (dt_ref,) = torch.autograd.grad(R.nt_xent_loss(z1, z2, temperature=t_ref), t_ref)
    assert dt.item() == pytest.approx(dt_ref.item(), rel=1e-10)
    # float32, where the cancellation overflowed to inf - inf
    z = torch.randn(4, 512, generator=g)
    t32 = torch.tensor(temperature, requires_grad=True)
    (dt32,) = torch.autograd.grad(nt_xent_loss(z, z.flip(0), temperature=t32), t32)
    t64 = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    (dt64,) = torch.autograd.grad(R.nt_xent_loss(z.double(), z.flip(0).double(), temperature=t64), t64)
    assert torch.isfinite(dt32) and dt32.item() == pytest.approx(dt64.item(), rel=1e-4)
