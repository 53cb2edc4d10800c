"""gencore.ops.affine_coupling: reference agreement, gradients, registration, bad inputs."""

import math

import pytest
import torch

import gencore

from gencore import ops, reference

# dtype -> (atol, rtol) against the reference computed in float64 and cast.
TOL = {
    torch.float32: (2e-6, 2e-6),
    torch.float64: (1e-12, 1e-12),
}

SHAPES = [(1, 1), (1, 37), (5, 1), (3, 37), (2, 3, 5, 7), (4, 4099), (1, 70001), (9,)]


def make(shape, dtype=torch.float32, device="cpu", seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)
            for _ in range(3)]


def ref64(x, ls, t, **kw):
    y, ld = reference.affine_coupling(x.double(), ls.double(), t.double(), **kw)
    return y, ld


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("clamp", [2.0, 0.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(device, shape, reverse, clamp, dtype):
    x, ls, t = make(shape, dtype, device)
    y, ld = ops.affine_coupling(x, ls, t, clamp=clamp, reverse=reverse)
    y_ref, ld_ref = ref64(x, ls, t, clamp=clamp, reverse=reverse)
    atol, rtol = TOL[dtype]
    assert y.dtype == dtype and ld.dtype == dtype and ld.shape == (shape[0],)
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    # logdet is a sum of n terms: allow the float32 rounding of a length-n sum.
    n = math.prod(shape[1:])
    torch.testing.assert_close(ld.double(), ld_ref, atol=atol * max(1, n) ** 0.5 * 4, rtol=rtol)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_reference(device, reverse):
    shape = (6, 333)
    x, ls, t = make(shape, torch.float64, device, seed=3)
    gy = torch.randn(shape, dtype=torch.float64, device=device)
    gl = torch.randn(shape[0], dtype=torch.float64, device=device)
    grads = []
    for fn in (ops.affine_coupling, reference.affine_coupling):
        inp = [v.clone().requires_grad_() for v in (x, ls, t)]
        y, ld = fn(*inp, clamp=1.5, reverse=reverse)
        grads.append(torch.autograd.grad((y, ld), inp, (gy, gl)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_non_contiguous_inputs(device):
    base = make((8, 2 * 37), torch.float32, device)
    x, ls, t = (v[:, ::2] for v in base)  # stride 2 views
    assert not x.is_contiguous()
    y, ld = ops.affine_coupling(x, ls, t)
    y_ref, ld_ref = ref64(x, ls, t)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(ld.double(), ld_ref, atol=1e-4, rtol=1e-5)
    xt = make((5, 6), torch.float32, device)[0].t()  # transposed
    y, _ = ops.affine_coupling(xt, xt, xt)
    torch.testing.assert_close(y.double(), ref64(xt, xt, xt)[0], atol=2e-6, rtol=2e-6)


def _views(device):
    """Strided views as models produce them: a chunk of a conditioner output (row stride
    2N), a stride-2 slice, a channel slice of an image, a row broadcast (row stride 0)."""
    g = torch.Generator().manual_seed(7)
    h = torch.randn(6, 2 * 37, generator=g, dtype=torch.float64).to(device)
    wide = torch.randn(6, 3 * 37, generator=g, dtype=torch.float64).to(device)
    img = torch.randn(6, 5, 3, 4, generator=g, dtype=torch.float64).to(device)
    row = torch.randn(1, 37, generator=g, dtype=torch.float64).to(device)
    ls, t = h.chunk(2, dim=1)
    return [
        (wide[:, 37:74], ls, t),
        (wide[:, ::3], ls, row.expand(6, 37)),
        (img[:, 2:], img[:, :3], img[:, 1:4]),
    ]


@pytest.mark.parametrize("reverse", [False, True])
def test_strided_views_match_reference(device, reverse):
    for x, ls, t in _views(device):
        inp = [v.detach().clone().requires_grad_() for v in (x, ls, t)]
        gy = torch.randn(x.shape[0], 2 * x[0].numel(), dtype=x.dtype, device=device)
        gy = gy[:, ::2].reshape(x.shape)  # a strided output gradient
        gl = torch.tensor(0.7, dtype=x.dtype, device=device).expand(x.shape[0])  # stride 0
        y, ld = ops.affine_coupling(x, ls, t, clamp=1.5, reverse=reverse)
        y_ref, ld_ref = reference.affine_coupling(*inp, clamp=1.5, reverse=reverse)
        assert y.is_contiguous()
        torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(ld, ld_ref, atol=1e-12, rtol=1e-12)
        views = [v.detach().requires_grad_() for v in (x, ls, t)]
        got = torch.autograd.grad(ops.affine_coupling(*views, clamp=1.5, reverse=reverse), views,
                                  (gy, gl))
        want = torch.autograd.grad((y_ref, ld_ref), inp, (gy, gl))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_cpu_reads_strided_views_without_copies():
    x, ls, t = (v.detach().requires_grad_() for v in _views("cpu")[1])
    with torch.profiler.profile() as prof:
        y, ld = ops.affine_coupling(x, ls, t)
        torch.autograd.grad(y.sum() + ld.sum(), (x, ls, t))
    copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert copies == []


@pytest.mark.parametrize("clamp", [2.0, 0.0])
def test_inverse_recovers_input(device, clamp):
    x, ls, t = make((16, 129), torch.float32, device)
    y, ld = ops.affine_coupling(x, ls, t, clamp=clamp)
    x2, ld2 = ops.affine_coupling(y, ls, t, clamp=clamp, reverse=True)
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld2, -ld, atol=0, rtol=0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("clamp", [2.0, 0.0])
def test_gradcheck_float64(device, reverse, clamp):
    x, ls, t = (v.requires_grad_() for v in make((3, 7), torch.float64, device, seed=5))
    assert torch.autograd.gradcheck(
        lambda a, b, c: ops.affine_coupling(a, b, c, clamp=clamp, reverse=reverse), (x, ls, t)
    )


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_4d_float64(device, reverse):
    x, ls, t = (v.requires_grad_() for v in make((2, 2, 3, 3), torch.float64, device, seed=6))
    assert torch.autograd.gradcheck(
        lambda a, b, c: ops.affine_coupling(a, b, c, reverse=reverse), (x, ls, t)
    )


def test_only_logdet_or_only_y_used(device):
    x, ls, t = (v.requires_grad_() for v in make((4, 9), torch.float64, device))
    _, ld = ops.affine_coupling(x, ls, t)
    g = torch.autograd.grad(ld.sum(), (x, ls, t), allow_unused=True)
    s_grad = 1 - torch.tanh(ls / 2) ** 2  # d(sum s)/d log_scale
    torch.testing.assert_close(g[0], torch.zeros_like(x))
    torch.testing.assert_close(g[1], s_grad.detach())
    y, _ = ops.affine_coupling(x, ls, t)
    gx, = torch.autograd.grad(y.sum(), (x,))
    torch.testing.assert_close(gx, torch.exp(2 * torch.tanh(ls / 2)).detach())


@pytest.mark.parametrize("reverse", [False, True])
def test_opcheck(device, reverse):
    x, ls, t = (v.requires_grad_() for v in make((3, 11), torch.float32, device))
    torch.library.opcheck(
        torch.ops.gencore.affine_coupling.default, (x, ls, t), {"clamp": 1.0, "reverse": reverse}
    )
    gy, gl = torch.randn(3, 11, device=device), torch.randn(3, device=device)
    torch.library.opcheck(
        torch.ops.gencore.affine_coupling_backward.default,
        (gy, gl, x.detach(), ls.detach(), t.detach()), {"clamp": 1.0, "reverse": reverse},
    )


def test_extreme_values_stay_finite(device):
    x = torch.tensor([[1.0, -1.0, 0.0, 3.0]], device=device)
    ls = torch.tensor([[1e4, -1e4, 80.0, -80.0]], device=device)
    t = torch.zeros_like(x)
    y, ld = ops.affine_coupling(x, ls, t, clamp=2.0)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    torch.testing.assert_close(y, x * torch.exp(torch.tensor([2.0, -2.0, 2.0, -2.0], device=device)))
    # Without the clamp, exp overflows exactly as torch.exp does.
    y0, _ = ops.affine_coupling(x, ls, t, clamp=0.0)
    assert y0[0, 0] == math.inf and y0[0, 1] == 0


def test_nan_propagates(device):
    x, ls, t = make((2, 5), torch.float32, device)
    ls[0, 2] = float("nan")
    y, ld = ops.affine_coupling(x, ls, t)
    assert torch.isnan(y[0, 2]) and torch.isnan(ld[0])
    assert torch.isfinite(y[1]).all() and torch.isfinite(ld[1])


def test_empty_batch_gives_empty_outputs(device):
    x = torch.empty(0, 5, device=device)
    y, ld = ops.affine_coupling(x, x, x)
    assert y.shape == (0, 5) and ld.shape == (0,)


def test_zero_size_feature_dim_gives_zero_logdet(device):
    x = torch.empty(3, 0, device=device)
    y, ld = ops.affine_coupling(x, x, x)
    assert y.shape == (3, 0)
    torch.testing.assert_close(ld, torch.zeros(3, device=device))


def test_result_independent_of_thread_count():
    x, ls, t = make((3, 50000), torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, ld1 = ops.affine_coupling(x, ls, t)
        torch.set_num_threads(2)
        y2, ld2 = ops.affine_coupling(x, ls, t)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(y1, y2) and torch.equal(ld1, ld2)


class TestBadInputs:
    def test_shape_mismatch(self):
        x = torch.randn(3, 4)
        with pytest.raises(ValueError, match="log_scale must have the shape of x"):
            ops.affine_coupling(x, torch.randn(3, 5), x)
        with pytest.raises(ValueError, match="shift must have the shape of x"):
            ops.affine_coupling(x, x, torch.randn(4, 4))

    def test_integer_dtype(self):
        x = torch.ones(2, 3, dtype=torch.int64)
        with pytest.raises(TypeError, match="x must be a floating-point tensor"):
            ops.affine_coupling(x, x, x)

    def test_mixed_dtypes(self):
        x = torch.randn(2, 3)
        with pytest.raises(TypeError, match="same dtype"):
            ops.affine_coupling(x, x.double(), x)

    def test_half_on_cpu(self):
        x = torch.randn(2, 3, dtype=torch.float16)
        with pytest.raises(TypeError, match="float32 or float64"):
            ops.affine_coupling(x, x, x)

    def test_mixed_devices(self):
        x = torch.randn(2, 3)
        meta = torch.empty(2, 3, device="meta")
        with pytest.raises((ValueError, RuntimeError), match="device"):
            ops.affine_coupling(x, meta, x)

    @pytest.mark.parametrize("clamp", [float("nan"), -1.0, float("inf")])
    def test_bad_clamp(self, clamp):
        x = torch.randn(2, 3)
        with pytest.raises(ValueError, match="clamp must be a finite number >= 0"):
            ops.affine_coupling(x, x, x, clamp=clamp)

    @pytest.mark.parametrize("clamp", [float("nan"), -1.0])
    def test_bad_clamp_direct_op_call(self, clamp):
        # The C++ check guards callers that bypass the Python wrapper.
        x = torch.randn(2, 3)
        with pytest.raises(ValueError, match="clamp must be a finite number >= 0"):
            torch.ops.gencore.affine_coupling(x, x, x, clamp=clamp)

    def test_clamp_wrong_type(self):
        x = torch.randn(2, 3)
        with pytest.raises(TypeError, match="clamp must be a float"):
            ops.affine_coupling(x, x, x, clamp="2")

    def test_scalar_input(self):
        x = torch.tensor(1.0)
        with pytest.raises(ValueError, match="at least 1 dimension"):
            ops.affine_coupling(x, x, x)

    def test_backward_bad_grad_logdet(self):
        x = torch.randn(2, 3)
        with pytest.raises(ValueError, match="grad_logdet must have shape"):
            torch.ops.gencore.affine_coupling_backward(
                x, torch.randn(3), x, x, x, clamp=2.0, reverse=False
            )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_low_precision_error_at_most_twice_torch(dtype, reverse):
    """flash-attention's rule: error vs a float64 reference at most 2x the reference's own."""
    for shape in [(64, 1000), (3, 37), (2, 3, 5, 7)]:
        x, ls, t = make(shape, torch.float32, "cuda", seed=7)
        gy = torch.randn(shape, device="cuda")
        gl = torch.randn(shape[0], device="cuda")
        exact = [v.double().requires_grad_() for v in (x, ls, t)]
        y64, ld64 = reference.affine_coupling(*exact, reverse=reverse)
        g64 = torch.autograd.grad((y64, ld64), exact, (gy.double(), gl.double()))
        outs = {}
        for name, fn in (("gencore", ops.affine_coupling), ("torch", reference.affine_coupling)):
            low = [v.to(dtype).requires_grad_() for v in (x, ls, t)]
            y, ld = fn(*low, reverse=reverse)
            g = torch.autograd.grad((y, ld), low, (gy.to(dtype), gl.to(dtype)))
            outs[name] = (y, ld, *g)
        for i, want in enumerate((y64, ld64, *g64)):
            err_g = (outs["gencore"][i].double() - want).abs().max().item()
            err_t = (outs["torch"][i].double() - want).abs().max().item()
            assert err_g <= 2 * err_t + 1e-6, (shape, i, err_g, err_t)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 1), (3, 37), (5, 4099), (2, 3, 5, 7), (65, 256)])
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_matches_cpu(shape, reverse):
    x, ls, t = make(shape, torch.float32, "cpu", seed=11)
    y_c, ld_c = ops.affine_coupling(x, ls, t, reverse=reverse)
    y_g, ld_g = ops.affine_coupling(x.cuda(), ls.cuda(), t.cuda(), reverse=reverse)
    torch.testing.assert_close(y_g.cpu(), y_c, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(ld_g.cpu(), ld_c, atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_misaligned_view():
    base = torch.randn(4, 130, device="cuda")
    x = base[:, 1:129]  # rows start off a 16-byte boundary
    y, ld = ops.affine_coupling(x, x, x)
    y_ref, ld_ref = ref64(x, x, x)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(ld.double(), ld_ref, atol=1e-4, rtol=1e-5)


# The three autograd layers of python/gencore/ops/coupling.py: the version-locked C++
# autograd (when the running torch is the build's), the eager autograd.Function, and the
# registered torch.library formula. Each process sees one of the first two; both must give
# the values and gradients of the reference.
_PATHS_SCRIPT = r"""
import json, sys, torch, gencore
from gencore import ops, reference
torch.manual_seed(0)
out = {"cxx": gencore.ops.coupling.CXX_AUTOGRAD}
x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
p = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
ls, t = p[:, :4].detach().requires_grad_(), p[:, 4:].detach().requires_grad_()
gy, gl = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
for name, fn, ref, args in [
    ("masked", ops.masked_affine_coupling, reference.masked_affine_coupling, (x, p)),
    ("affine", ops.affine_coupling, reference.affine_coupling, (x[:, :4], ls, t)),
]:
    for reverse in (False, True):
        got = fn(*args, reverse=reverse)
        want = ref(*args, reverse=reverse)
        leaves = [x, p] if name == "masked" else [x, ls, t]
        g1 = torch.autograd.grad(got, leaves, (gy[:, :got[0].shape[1]], gl))
        g2 = torch.autograd.grad(want, leaves, (gy[:, :want[0].shape[1]], gl))
        err = max(float((a - b).abs().max()) for a, b in zip([*got, *g1], [*want, *g2]))
        out[f"{name}-{reverse}"] = err
# A second derivative: every path refuses it with gencore's message, through the public
# op and through torch.ops.gencore (C++ autograd, or the registered formula).
calls = {
    "masked": lambda: ops.masked_affine_coupling(x, p),
    "affine": lambda: ops.affine_coupling(x[:, :4], ls, t, reverse=True),
    "masked-op": lambda: torch.ops.gencore.masked_affine_coupling(x, p, mask="half"),
    "affine-op": lambda: torch.ops.gencore.affine_coupling(x[:, :4], ls, t),
}
for name, call in calls.items():
    y, ld = call()
    (gx,) = torch.autograd.grad(y.pow(2).sum() + ld.sum(), x, create_graph=True)
    try:
        gx.sum().backward()
        out[f"second-{name}"] = "ran"
    except RuntimeError as e:
        out[f"second-{name}"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize("cxx", ["1", "0"])
def test_autograd_paths_agree_with_the_reference(cxx):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "GENCORE_CXX_AUTOGRAD": cxx}
    out = subprocess.run([sys.executable, "-c", _PATHS_SCRIPT], env=env, check=True,
                         capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if cxx == "0":
        assert res["cxx"] is False
    for key, err in res.items():
        if key.startswith("second-"):
            op = "masked_affine_coupling" if key.startswith("second-masked") else "affine_coupling"
            assert f"the second derivative of gencore.ops.{op} is not implemented" in err, (key, err)
        elif key != "cxx":
            assert err < 1e-12, (key, err)



def test_compile_dynamic_with_a_symbolic_clamp():
    # With dynamic=True, torch.compile passes a float argument as a symbolic float: the
    # clamp check must not call math.isfinite on it (it failed to trace before).
    @torch.compile(dynamic=True, fullgraph=True, backend="aot_eager")
    def f(x, ls, t, p, clamp):
        y, ld = ops.affine_coupling(x, ls, t, clamp=clamp)
        y2, ld2 = ops.masked_affine_coupling(x, p, clamp=clamp)
        return y + y2, ld + ld2

    g = torch.Generator().manual_seed(0)
    x, ls, t, p = (torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    for clamp in (1.5, 2.5):
        y, ld = f(x, ls, t, p, clamp)
        want = [a + b for a, b in zip(reference.affine_coupling(x, ls, t, clamp=clamp),
                                      reference.masked_affine_coupling(x, p, clamp=clamp))]
        torch.testing.assert_close(y, want[0])
        torch.testing.assert_close(ld, want[1])
        got_g = torch.autograd.grad(y.sum() + ld.sum(), (x, ls, t, p))
        want_g = torch.autograd.grad(want[0].sum() + want[1].sum(), (x, ls, t, p))
        for a, b in zip(got_g, want_g):
            torch.testing.assert_close(a, b)
