"""The CUDA rational-quadratic spline (csrc/spline/spline_cuda.cu), run by the SIMT emulator,
against the CPU path: every dtype, both directions, rows of one warp segment and of many
(the per-segment log-determinant sums added by the second kernel), tails, K = 1, strided
parameter views, and the backward's input and parameter gradients."""

import pytest
import torch

from simt_testing import DTYPES, LOW, cpu_dtype

COVERS = ("rq_spline", "rq_spline_backward")

# (x shape, K): one element, a row shorter than one warp, one longer than a 128-element
# segment (several partial sums), 4-D, one bin.
SHAPES = [((1,), 3), ((3, 7), 8), ((2, 300), 5), ((2, 3, 2, 5), 16), ((4, 9), 1)]


def data(shape, k, dtype, seed, bound=2.0):
    g = torch.Generator().manual_seed(seed)
    w, h, d = (2 * torch.randn(*shape, n, generator=g, dtype=torch.float64) for n in (k, k, k - 1))
    x = (2 * torch.rand(*shape, generator=g, dtype=torch.float64) - 1) * 1.2 * bound  # some in the tails
    return tuple(t.to(dtype) for t in (x, w, h, d))


def tol(dtype):
    return {"rtol": 2e-2, "atol": 2e-2} if dtype in LOW else \
        ({"rtol": 1e-11, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4})


def close(got, want, dtype):
    torch.testing.assert_close(got.double(), want.double(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("shape,k", SHAPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rq_spline(emu, shape, k, dtype, reverse):
    x, w, h, d = data(shape, k, dtype, seed=sum(shape) + k)
    y, ld = emu.call("rq_spline", x, w, h, d, bound=2.0, reverse=reverse)
    cd = cpu_dtype(dtype)
    yc, ldc = torch.ops.gencore.rq_spline(*(t.to(cd) for t in (x, w, h, d)), bound=2.0, reverse=reverse)
    assert y.dtype == dtype and y.shape == x.shape and ld.shape == x.shape[:1]
    close(y, yc, dtype)
    # the log-determinant sums up to 600 terms: compare relative to its number of terms
    close(ld / max(1, x[0].numel()), ldc / max(1, x[0].numel()), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("shape,k", SHAPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rq_spline_backward(emu, shape, k, dtype, reverse):
    x, w, h, d = data(shape, k, dtype, seed=7 * sum(shape) + k)
    g = torch.Generator().manual_seed(k)
    gy = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    gl = torch.randn(x.shape[0], generator=g, dtype=torch.float64).to(dtype)
    got = emu.call("rq_spline_backward", gy, gl, x, w, h, d, bound=2.0, reverse=reverse)
    cd = cpu_dtype(dtype)
    want = torch.ops.gencore.rq_spline_backward(*(t.to(cd) for t in (gy, gl, x, w, h, d)), bound=2.0,
                                                reverse=reverse)
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        # Gradients through steep spline pieces reach 1e2 and amplify the rounding of the
        # softmaxes (recomputed per element here, by one shared shift on the CPU): compared
        # relative to the largest gradient.
        scale = 1 + (b.abs().max().item() if b.numel() else 0.0)
        if dtype in LOW:
            torch.testing.assert_close(a.double(), b.double(), rtol=5e-2, atol=5e-2 * scale)
        elif dtype == torch.float32:
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-4 * scale)
        else:
            close(a, b, dtype)


def test_strided_parameters_and_a_scalar_logdet_gradient(emu):
    # Parameters sliced from one conditioner output (rows 14 apart, read in place), and
    # grad_logdet an expanded scalar (stride 0).
    k = 5
    g = torch.Generator().manual_seed(11)
    out = torch.randn(6, 40, 3 * k - 1, generator=g)
    w, h, d = out[..., :k], out[..., k:2 * k], out[..., 2 * k:]
    x = 2.5 * torch.randn(6, 40, generator=g)
    y, ld = emu.call("rq_spline", x, w, h, d, bound=3.0, reverse=False)
    yc, ldc = torch.ops.gencore.rq_spline(x, w, h, d, bound=3.0, reverse=False)
    close(y, yc, torch.float32)
    close(ld, ldc, torch.float32)
    gy, gl = torch.randn(6, 40, generator=g), torch.tensor(0.7).expand(6)
    for a, b in zip(emu.call("rq_spline_backward", gy, gl, x, w, h, d, bound=3.0, reverse=True),
                    torch.ops.gencore.rq_spline_backward(gy, gl, x, w, h, d, bound=3.0, reverse=True)):
        close(a, b, torch.float32)


def test_nan_and_infinite_inputs_pass_through(emu):
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.5]])
    w, h, d = (torch.zeros(1, 4, n) for n in (4, 4, 3))
    y, ld = emu.call("rq_spline", x, w, h, d, bound=3.0, reverse=False)
    assert torch.isnan(y[0, 0]) and y[0, 1] == float("inf") and y[0, 2] == -float("inf") and torch.isfinite(ld).all()
