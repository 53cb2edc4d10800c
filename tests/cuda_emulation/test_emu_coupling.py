"""The CUDA coupling kernels (csrc/coupling/coupling_cuda.cu), run by the SIMT emulator,
against the CPU kernels: affine_coupling and masked_affine_coupling, forward and backward."""

import pytest
import torch

from simt_testing import DTYPES, LOW, assert_matches, cpu_dtype
from gencore.reference import transformed_count

COVERS = ("affine_coupling", "affine_coupling_backward", "masked_affine_coupling",
          "masked_affine_coupling_backward")

# Rows of one element, lengths that are no multiple of 4/16/32/64, rows of several warp
# segments (a segment is 32 lanes x 4 iterations x the vector width), images.
SHAPES = [(1, 1), (3, 7), (2, 33), (5, 130), (2, 600), (3, 4099), (2, 3, 5, 5), (4, 8, 4, 4)]


def inputs(shape, dtype, seed, layout="contiguous"):
    g = torch.Generator().manual_seed(seed)

    def one():
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if layout == "strided":  # a row stride larger than the row
            t = torch.cat([t.flatten(1), torch.zeros(shape[0], 3, dtype=torch.float64)], 1)[:, : t[0].numel()]
            t = t.view(shape) if len(shape) == 2 else t.reshape(shape)
        elif layout == "misaligned":  # rows start one element after an aligned address
            base = torch.randn(shape[0] * t[0].numel() + 1, generator=g, dtype=torch.float64)
            t = base[1:].view(shape)
        return t.to(dtype)

    return one(), one(), one()


def cpu_of(t, dtype):
    """The CPU path's input: the same (rounded) values, in its dtype."""
    return t.to(cpu_dtype(dtype))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("clamp", [2.0, 0.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_affine_coupling(emu, shape, dtype, clamp, reverse):
    x, ls, t = inputs(shape, dtype, seed=sum(shape))
    y, ld = emu.call("affine_coupling", x, ls, t, clamp=clamp, reverse=reverse)
    y0, ld0 = torch.ops.gencore.affine_coupling(*(cpu_of(v, dtype) for v in (x, ls, t)), clamp=clamp,
                                                reverse=reverse)
    assert y.dtype == dtype and ld.dtype == dtype
    assert_matches(y, y0, dtype, "y")
    assert_matches(ld, ld0, dtype, "logdet")

    g = torch.Generator().manual_seed(1)
    gy = torch.randn(shape, generator=g).to(dtype)
    gl = torch.randn(shape[0], generator=g).to(dtype)
    gx, gls = emu.call("affine_coupling_backward", gy, gl, x, ls, t, clamp=clamp, reverse=reverse)
    gx0, gls0 = torch.ops.gencore.affine_coupling_backward(
        *(cpu_of(v, dtype) for v in (gy, gl, x, ls, t)), clamp=clamp, reverse=reverse)
    assert_matches(gx, gx0, dtype, "grad_x")
    assert_matches(gls, gls0, dtype, "grad_log_scale")


@pytest.mark.parametrize("layout", ["strided", "misaligned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(4, 130), (3, 64), (2, 1030)], ids=str)
def test_affine_coupling_views(emu, shape, dtype, layout):
    """Inputs read in place with a row stride, or starting off the vector alignment (the
    launcher then picks a narrower vector)."""
    x, ls, t = inputs(shape, dtype, seed=3, layout=layout)
    gy = torch.randn(shape).to(dtype)
    gl = torch.randn(shape[0]).to(dtype).expand(shape[0])  # also a stride-0 gradient
    y, ld = emu.call("affine_coupling", x, ls, t, clamp=2.0, reverse=False)
    y0, ld0 = torch.ops.gencore.affine_coupling(*(cpu_of(v, dtype) for v in (x, ls, t)), clamp=2.0,
                                                reverse=False)
    assert_matches(y, y0, dtype, "y")
    assert_matches(ld, ld0, dtype, "logdet")
    gx, gls = emu.call("affine_coupling_backward", gy, torch.ones(()).to(dtype).expand(shape[0]), x, ls, t,
                       clamp=2.0, reverse=False)
    gx0, gls0 = torch.ops.gencore.affine_coupling_backward(
        cpu_of(gy, dtype), torch.ones(()).to(cpu_dtype(dtype)).expand(shape[0]),
        *(cpu_of(v, dtype) for v in (x, ls, t)), clamp=2.0, reverse=False)
    assert_matches(gx, gx0, dtype, "grad_x")
    assert_matches(gls, gls0, dtype, "grad_log_scale")
    del gl


MASKED_SHAPES = [(1, 2), (3, 3), (2, 7), (2, 5, 3, 3), (3, 4, 8, 8), (2, 2501), (2, 6, 17)]


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask", ["alternate", "half"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", MASKED_SHAPES, ids=str)
def test_masked_affine_coupling(emu, shape, dtype, mask, reverse, swap):
    g = torch.Generator().manual_seed(sum(shape) + swap)
    n_b = transformed_count(shape[1], mask, swap)
    x = torch.randn(shape, generator=g).to(dtype)
    params = torch.randn((shape[0], 2 * n_b, *shape[2:]), generator=g).to(dtype)
    kw = dict(mask=mask, swap=swap, clamp=2.0, reverse=reverse)
    y, ld = emu.call("masked_affine_coupling", x, params, **kw)
    y0, ld0 = torch.ops.gencore.masked_affine_coupling(cpu_of(x, dtype), cpu_of(params, dtype), **kw)
    assert_matches(y, y0, dtype, "y")
    assert_matches(ld, ld0, dtype, "logdet")

    gy = torch.randn(shape, generator=g).to(dtype)
    gl = torch.randn(shape[0], generator=g).to(dtype)
    gx, gp = emu.call("masked_affine_coupling_backward", gy, gl, x, params, **kw)
    gx0, gp0 = torch.ops.gencore.masked_affine_coupling_backward(
        *(cpu_of(v, dtype) for v in (gy, gl, x, params)), **kw)
    assert_matches(gx, gx0, dtype, "grad_x")
    assert_matches(gp, gp0, dtype, "grad_params")


def test_empty_batch_launches_nothing(emu):
    """An empty batch returns empty outputs without a launch (a zero-block grid is an
    invalid launch configuration on a GPU)."""
    x = torch.empty(0, 5)
    before = emu.launches()
    y, ld = emu.ops.affine_coupling(x, x, x, clamp=2.0, reverse=False)
    assert y.shape == (0, 5) and ld.shape == (0,)
    assert emu.launches() == before


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_inputs_stay_low_precision(emu, dtype):
    x, ls, t = inputs((3, 40), dtype, seed=5)
    y, ld = emu.call("affine_coupling", x, ls, t, clamp=2.0, reverse=False)
    assert y.dtype == dtype and ld.dtype == dtype and torch.isfinite(y.float()).all()
