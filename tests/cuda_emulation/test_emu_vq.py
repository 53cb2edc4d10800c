"""The CUDA nearest-code search (csrc/vq/vq_cuda.cu), run by the SIMT emulator, against the
CPU path and the exact float64 distances: every dtype, the code tiles on one block row or
split over gridDim.y (sm132 with few rows), exact ties, NaNs, codes of very different norms."""

import pytest
import torch

from simt_testing import DTYPES, LOW, cpu_dtype

COVERS = ("nearest_code",)

# (N, K, D): one row and one code, sizes that are no multiple of 4/16/64, several 64-row
# blocks, many code tiles for few rows (split over gridDim.y), D = 0, D past two slices.
SHAPES = [(1, 1, 1), (3, 5, 2), (70, 130, 17), (200, 65, 0), (5, 1000, 9), (130, 70, 40)]


def data(n, k, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    # codes of norms from 0.1 to 10: the |c|^2 term decides as much as the dot product
    c = torch.randn(k, d, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, k, dtype=torch.float64)[:, None]
    return x.to(dtype), c.to(dtype)


def exact(x, c, dtype, cosine=False):
    """(N, K) float64 squared distances between the rows the search sees: the inputs, or
    with ``cosine`` their unit rows (normalized in the accumulation dtype, rounded to
    ``dtype``)."""
    if cosine:
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        x, c = (torch.nn.functional.normalize(t.to(acc), dim=1).to(dtype) for t in (x, c))
    x, c = x.double(), c.double()
    return (x[:, None, :] - c[None, :, :]).pow(2).sum(-1)


def check(emu_out, cpu_out, x, c, dtype, cosine=False):
    sq, idx = emu_out
    csq, cidx = cpu_out
    assert idx.dtype == torch.int64 and sq.dtype == dtype and idx.shape == sq.shape == (x.shape[0],)
    if x.shape[0] == 0:
        return
    d = exact(x, c, dtype, cosine)
    best = d.min(1).values
    top2 = d.topk(min(2, d.shape[1]), dim=1, largest=False).values
    gap = top2[:, -1] - top2[:, 0]
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    tol = 64 * eps * (1 + d.abs().max(1).values)
    # the chosen code is a nearest one up to the accumulation dtype's rounding ...
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    assert (chosen <= best + tol).all()
    # ... the same as the CPU path's wherever the nearest is unambiguous ...
    clear = gap > tol
    assert torch.equal(idx[clear], cidx[clear])
    # ... and its distance the CPU path's (the same exact formula in the same dtype)
    torch.testing.assert_close(sq.float() if dtype in LOW else sq, csq.to(sq.dtype).float() if dtype in LOW else csq,
                               rtol=1e-2 if dtype in LOW else 1e-5, atol=1e-3 if dtype in LOW else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cosine", [False, True], ids=["euclidean", "cosine"])
def test_nearest_code(emu, sm_count, shape, dtype, cosine):
    n, k, d = shape
    x, c = data(n, k, d, dtype, seed=n + k + d)
    out = emu.call("nearest_code", x, c, cosine=cosine)
    cd = cpu_dtype(dtype)
    if cosine and dtype in LOW:
        # the CUDA search sees unit rows rounded to `dtype`: give the CPU path the same
        ref = torch.ops.gencore.nearest_code(*(torch.nn.functional.normalize(t.float(), dim=1).to(dtype).float()
                                               for t in (x, c)))
    else:
        ref = torch.ops.gencore.nearest_code(x.to(cd), c.to(cd), cosine=cosine)
    if dtype in LOW:  # the CPU path's distance rounded as the CUDA one is
        ref = (ref[0].to(dtype), ref[1])
    check(out, ref, x, c, dtype, cosine)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda t: str(t).removeprefix("torch."))
def test_exact_ties_go_to_the_lowest_index(emu, sm_count, dtype):
    # 300 codes = 50 distinct ones, each repeated 6 times across different tiles and
    # splits: every row must get the first copy.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(50, 12, generator=g).to(dtype)
    c = base.repeat(6, 1)
    x = torch.randn(97, 12, generator=g).to(dtype)
    sq, idx = emu.call("nearest_code", x, c)
    assert (idx < 50).all()
    assert torch.equal(idx, torch.ops.gencore.nearest_code(x, c)[1])
    # all codes equal: index 0 everywhere
    _, idx0 = emu.call("nearest_code", x, base[:1].repeat(200, 1))
    assert (idx0 == 0).all()


def test_nan(emu, sm_count):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(80, 5, generator=g)
    c = torch.randn(150, 5, generator=g)
    x[3, 2] = float("nan")
    c[7, 0] = float("nan")  # a NaN code never wins
    sq, idx = emu.call("nearest_code", x, c)
    csq, cidx = torch.ops.gencore.nearest_code(x, c)
    assert idx[3] == 0 and torch.isnan(sq[3])
    assert torch.equal(idx, cidx) and (idx != 7).all()
    keep = torch.arange(80) != 3
    torch.testing.assert_close(sq[keep], csq[keep])


def test_empty_batch(emu):
    c = torch.randn(4, 3)
    sq, idx = emu.ops.nearest_code(torch.empty(0, 3), c)  # nothing to launch
    assert sq.shape == idx.shape == (0,)
