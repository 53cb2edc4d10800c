"""gencore.ops.masked_affine_coupling: the split, the transform and the merge of a coupling
in one op, against gencore.reference.masked_affine_coupling (slices, affine_coupling, stack)."""

import itertools

import pytest
import torch

from gencore import ops, reference

MASKS = ["half", "alternate"]
# Vectors (even, odd, the smallest C = 2 and 3, long rows split into pieces) and images.
SHAPES = [(5, 8), (3, 7), (1, 2), (4, 3), (2, 2501), (2, 4, 3, 3), (3, 5, 2, 4), (2, 3, 1, 1)]


def n_transformed(c: int, mask: str, swap: bool) -> int:
    if mask == "half":
        return c // 2 if swap else c - c // 2
    return (c + 1) // 2 if swap else c // 2


def make(shape, mask, swap, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
    nb = n_transformed(shape[1], mask, swap)
    p = torch.randn((shape[0], 2 * nb, *shape[2:]), generator=g, dtype=torch.float64) * 1.5
    return x.to(device, dtype), p.to(device, dtype)


def _both(fn, x, p, gy, gl, **kw):
    inp = [v.detach().clone().requires_grad_() for v in (x, p)]
    y, ld = fn(*inp, **kw)
    return (y, ld, *torch.autograd.grad((y, ld), inp, (gy, gl)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask,swap", list(itertools.product(MASKS, [False, True])))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("clamp", [2.0, 0.0])
def test_matches_reference_float64(device, shape, mask, swap, reverse, clamp):
    x, p = make(shape, mask, swap, device=device)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    gl = torch.randn(shape[0], generator=g, dtype=torch.float64).to(device)
    kw = dict(mask=mask, swap=swap, clamp=clamp, reverse=reverse)
    got = _both(ops.masked_affine_coupling, x, p, gy, gl, **kw)
    want = _both(reference.masked_affine_coupling, x, p, gy, gl, **kw)
    assert got[0].shape == x.shape and got[0].is_contiguous() and got[1].shape == (shape[0],)
    for name, a, b in zip(("y", "logdet", "grad_x", "grad_params"), got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.parametrize("mask,swap", list(itertools.product(MASKS, [False, True])))
def test_float32_matches_reference(device, mask, swap):
    x, p = make((64, 65), mask, swap, dtype=torch.float32, device=device)
    y, ld = ops.masked_affine_coupling(x, p, mask=mask, swap=swap)
    y_ref, ld_ref = reference.masked_affine_coupling(x.double(), p.double(), mask=mask, swap=swap)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(ld.double(), ld_ref, atol=1e-4, rtol=1e-5)


def test_identity_part_is_copied_exactly(device):
    x, p = make((4, 9), "alternate", False, dtype=torch.float32, device=device)
    y, _ = ops.masked_affine_coupling(x, p, mask="alternate")
    assert torch.equal(y[:, 0::2], x[:, 0::2])
    assert not torch.equal(y[:, 1::2], x[:, 1::2])


@pytest.mark.parametrize("mask", MASKS)
def test_inverse_recovers_input(device, mask):
    x, p = make((16, 2, 5, 5), mask, True, dtype=torch.float32, device=device)
    y, ld = ops.masked_affine_coupling(x, p, mask=mask, swap=True)
    x2, ld2 = ops.masked_affine_coupling(y, p, mask=mask, swap=True, reverse=True)
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld2, -ld, atol=0, rtol=0)


def test_non_contiguous_inputs_and_gradients(device):
    x, p = make((6, 2 * 11), "half", False, device=device)
    xs = x[:, ::2]  # (6, 11) stride-2 view
    ps = make((6, 24), "half", False, device=device)[0][:, 1:13]  # row stride 24
    gy = torch.randn(6, 22, dtype=torch.float64, device=device)[:, ::2]
    gl = torch.tensor(0.5, dtype=torch.float64, device=device).expand(6)  # stride 0
    got = _both(ops.masked_affine_coupling, xs, ps, gy, gl, mask="half")
    want = _both(reference.masked_affine_coupling, xs, ps, gy, gl, mask="half")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("mask,swap", list(itertools.product(MASKS, [False, True])))
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_float64(device, mask, swap, reverse):
    for shape in ((3, 5), (2, 3, 2, 2)):
        x, p = (v.requires_grad_() for v in make(shape, mask, swap, device=device, seed=4))
        assert torch.autograd.gradcheck(
            lambda a, b: ops.masked_affine_coupling(a, b, mask=mask, swap=swap, clamp=1.5, reverse=reverse),
            (x, p))


@pytest.mark.parametrize("mask,swap", list(itertools.product(MASKS, [False, True])))
def test_opcheck(device, mask, swap):
    x, p = (v.requires_grad_() for v in make((3, 7), mask, swap, dtype=torch.float32, device=device))
    kw = {"mask": mask, "swap": swap, "clamp": 1.0, "reverse": False}
    torch.library.opcheck(torch.ops.gencore.masked_affine_coupling.default, (x, p), kw)
    gy, gl = torch.randn(3, 7, device=device), torch.randn(3, device=device)
    torch.library.opcheck(torch.ops.gencore.masked_affine_coupling_backward.default,
                          (gy, gl, x.detach(), p.detach()), kw)


def test_compile_fullgraph_matches_eager():
    x, p = (v.requires_grad_() for v in make((4, 6), "alternate", False, dtype=torch.float32))

    def f(a, b):
        y, ld = ops.masked_affine_coupling(a, b, mask="alternate")
        return y.square().sum() + ld.sum()

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x, p)
    want = f(x, p)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, (x, p)), torch.autograd.grad(want, (x, p)))


def test_empty_batch_gives_empty_outputs(device):
    x = torch.empty(0, 6, device=device)
    y, ld = ops.masked_affine_coupling(x, torch.empty(0, 6, device=device))
    assert y.shape == (0, 6) and ld.shape == (0,)


def test_result_independent_of_thread_count():
    x, p = make((64, 1001), "alternate", False, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.masked_affine_coupling(x, p)
        torch.set_num_threads(2)
        two = ops.masked_affine_coupling(x, p)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


class TestBadInputs:
    def test_unknown_mask(self):
        x = torch.randn(2, 4)
        with pytest.raises(ValueError, match="mask must be 'half' or 'alternate'"):
            ops.masked_affine_coupling(x, x, mask="checkerboard")
        with pytest.raises(ValueError, match="mask must be 'half' or 'alternate'"):
            torch.ops.gencore.masked_affine_coupling(x, x, mask="diagonal")

    def test_params_shape(self):
        x = torch.randn(2, 5)  # alternate: 2 transformed features -> params (2, 4)
        with pytest.raises(ValueError, match=r"params must have shape \[2, 4\]"):
            ops.masked_affine_coupling(x, torch.randn(2, 5))
        with pytest.raises(ValueError, match="params must have shape"):
            ops.masked_affine_coupling(x, torch.randn(3, 4))

    def test_one_feature(self):
        x = torch.randn(2, 1)
        with pytest.raises(ValueError, match="at least 2 channels"):
            ops.masked_affine_coupling(x, torch.randn(2, 0))

    def test_one_dimensional_input(self):
        with pytest.raises(ValueError, match="at least 2 dimension"):
            ops.masked_affine_coupling(torch.randn(6), torch.randn(6))

    def test_dtypes(self):
        x = torch.randn(2, 4)
        with pytest.raises(TypeError, match="same dtype"):
            ops.masked_affine_coupling(x, x.double())
        with pytest.raises(TypeError, match="floating-point"):
            ops.masked_affine_coupling(x.long(), x.long())
        with pytest.raises(TypeError, match="float32 or float64"):
            ops.masked_affine_coupling(x.half(), x.half())

    def test_devices(self):
        x = torch.randn(2, 4)
        with pytest.raises((ValueError, RuntimeError), match="device"):
            ops.masked_affine_coupling(x, torch.empty(2, 4, device="meta"))

    @pytest.mark.parametrize("clamp", [float("nan"), -1.0, float("inf")])
    def test_bad_clamp(self, clamp):
        x = torch.randn(2, 4)
        with pytest.raises(ValueError, match="clamp must be a finite number >= 0"):
            ops.masked_affine_coupling(x, x, clamp=clamp)
        if clamp == clamp:  # the C++ check, for callers bypassing the wrapper
            with pytest.raises(ValueError, match="clamp must be a finite number >= 0"):
                torch.ops.gencore.masked_affine_coupling(x, x, mask="half", clamp=clamp)

    def test_backward_bad_grads(self):
        x = torch.randn(2, 4)
        op = torch.ops.gencore.masked_affine_coupling_backward
        with pytest.raises(ValueError, match="grad_logdet must have shape"):
            op(x, torch.randn(3), x, x, mask="half", swap=False, clamp=2.0, reverse=False)
        with pytest.raises(ValueError, match="grad_y must have the shape of x"):
            op(torch.randn(2, 5), torch.randn(2), x, x, mask="half", swap=False, clamp=2.0, reverse=False)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(3, 7), (64, 64), (2, 2501), (5, 4, 3, 3), (9, 3, 8, 8)])
@pytest.mark.parametrize("mask,swap", list(itertools.product(MASKS, [False, True])))
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_matches_cpu(shape, mask, swap, reverse):
    x, p = make(shape, mask, swap, dtype=torch.float32, seed=11)
    gy, gl = torch.randn(shape), torch.randn(shape[0])
    kw = dict(mask=mask, swap=swap, reverse=reverse)
    cpu = _both(ops.masked_affine_coupling, x, p, gy, gl, **kw)
    gpu = _both(ops.masked_affine_coupling, x.cuda(), p.cuda(), gy.cuda(), gl.cuda(), **kw)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_at_most_twice_torch(dtype):
    """Error against a float64 reference at most 2x that of the reference run in ``dtype``."""
    for shape, mask in (((64, 64), "alternate"), ((8, 4, 8, 8), "half")):
        x, p = make(shape, mask, False, dtype=torch.float32, device="cuda", seed=7)
        gy, gl = torch.randn(shape, device="cuda"), torch.randn(shape[0], device="cuda")
        want = _both(reference.masked_affine_coupling, x.double(), p.double(), gy.double(), gl.double(), mask=mask)
        low = [v.to(dtype) for v in (x, p, gy, gl)]
        got = _both(ops.masked_affine_coupling, *low, mask=mask)
        base = _both(reference.masked_affine_coupling, *low, mask=mask)
        for i, w in enumerate(want):
            err_g = (got[i].double() - w).abs().max().item()
            err_t = (base[i].double() - w).abs().max().item()
            assert err_g <= 2 * err_t + 1e-6, (shape, i, err_g, err_t)
